//! A table dump's record counts are checked against its length before the
//! parser reserves memory for the records. A short body claiming billions of
//! records is refused with a typed error; a parser that reserved first would
//! abort the process here (tens of GiB asked of the allocator).

use snet_firmware::control::{ControlParseError, TableSnapshot, WireConnection};

/// Header, live bitmap and capacities for four live processors.
fn head(listeners: u32, connections: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&0u16.to_be_bytes());
    b.extend_from_slice(&4u16.to_be_bytes());
    b.extend_from_slice(&listeners.to_be_bytes());
    b.extend_from_slice(&connections.to_be_bytes());
    b.push(0x0f);
    b.extend_from_slice(&[0xff; 16]);
    b
}

#[test]
fn counts_that_only_fit_one_at_a_time_are_refused_before_allocating() {
    // 64 KiB of records: enough for either count alone, not for both.
    let rest = 64 * 1024;
    let connection = core::mem::size_of::<WireConnection>();
    let mut body = head((rest / 28) as u32, (rest / connection) as u32);
    body.resize(body.len() + rest, 0);
    let r = TableSnapshot::parse(&body);
    assert_eq!(
        r,
        Err(ControlParseError::BadDump("record counts exceed the body"))
    );
}

#[test]
fn huge_counts_in_a_short_body_are_refused_before_allocating() {
    let mut body = head(u32::MAX, u32::MAX);
    body.extend_from_slice(&[0; 64]);
    let r = TableSnapshot::parse(&body);
    assert!(matches!(r, Err(ControlParseError::BadDump(_))), "{r:?}");
}

#[test]
fn a_huge_member_count_is_refused_before_allocating() {
    let mut body = head(1, 0);
    // TCP, any address, port 80; 65535 members announced, one present.
    body.extend_from_slice(&[6, 0, 0, 80, 0, 0, 0, 0]);
    body.extend_from_slice(&[0; 16]);
    body.extend_from_slice(&u16::MAX.to_be_bytes());
    body.extend_from_slice(&1u16.to_be_bytes());
    let r = TableSnapshot::parse(&body);
    assert_eq!(r, Err(ControlParseError::BadDump("truncated member list")));
}

#[test]
fn a_member_listed_twice_is_refused_and_others_pass() {
    let group = |members: &[u16]| {
        let mut body = head(1, 0);
        body.extend_from_slice(&[6, 0, 0, 80, 0, 0, 0, 0]);
        body.extend_from_slice(&[0; 16]);
        body.extend_from_slice(&(members.len() as u16).to_be_bytes());
        for m in members {
            body.extend_from_slice(&m.to_be_bytes());
        }
        TableSnapshot::parse(&body)
    };
    assert_eq!(
        group(&[1, 3, 1]),
        Err(ControlParseError::BadDump(
            "processor listed twice in a group"
        ))
    );
    assert_eq!(group(&[3, 0, 2, 1]).unwrap().listeners[0].1.len(), 4);
}
