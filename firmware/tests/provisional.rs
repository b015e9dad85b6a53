//! Provisional SYN entries: retransmissions and the handshake's ACK reach the
//! same processor; unconfirmed entries expire; confirmed ones stay; the table
//! never grows past its configured size.

mod common;

use core::time::Duration;

use common::*;
use snet_firmware::conntable::EntryState;
use snet_firmware::control::{ControlError, ControlMessage, RejectReason};
use snet_firmware::{Config, DropReason, Instant, ProcessorId, Verdict};

#[test]
fn retransmitted_syn_and_ack_reach_the_same_processor() {
    let mut h = listening(shared_config(), 23, &[1, 2, 3]);
    h.expect_delivered_to(&syn(0, 23), 1).unwrap();
    h.expect_delivered_to(&syn(1, 23), 2).unwrap();
    // Client 0 retransmits its SYN: it must not take P3's turn.
    h.advance(Duration::from_secs(1));
    h.expect_delivered_to(&syn(0, 23), 1).unwrap();
    h.expect_delivered_to(&ack(0, 23), 1).unwrap();
    h.expect_delivered_to(&ack(1, 23), 2).unwrap();
    // The next new connection gets P3, the turn it was due.
    h.expect_delivered_to(&syn(2, 23), 3).unwrap();
    assert_eq!(h.firmware().counters().provisional_created, 3);
}

#[test]
fn unconfirmed_entries_expire_and_confirmed_ones_stay() {
    let cfg = Config {
        syn_timeout: Duration::from_millis(500),
        ..shared_config()
    };
    let mut h = listening(cfg, 23, &[1, 2]);
    h.expect_delivered_to(&syn(0, 23), 1).unwrap();
    h.expect_delivered_to(&syn(1, 23), 2).unwrap();
    // P2 accepts its connection; P1 never does.
    h.control(2, ControlMessage::AddConnection(tuple(1, 23)))
        .unwrap();
    assert_eq!(h.firmware().counters().provisional_confirmed, 1);
    assert_eq!(h.firmware().poll_at(), Some(Instant::from_millis(500)));
    h.advance(Duration::from_millis(499));
    assert_eq!(h.firmware().provisional_count(), 1);
    h.advance(Duration::from_millis(1));
    assert_eq!(h.firmware().provisional_count(), 0);
    assert_eq!(h.firmware().counters().provisional_expired, 1);
    assert!(h.firmware().connection(&tuple(0, 23)).is_none());
    assert_eq!(
        h.firmware().connection(&tuple(1, 23)).unwrap().state,
        EntryState::Established
    );
    // Client 0's ACK now matches nothing: the master gets it.
    h.expect_master(&ack(0, 23)).unwrap();
    h.expect_delivered_to(&ack(1, 23), 2).unwrap();
}

#[test]
fn expiry_also_happens_when_a_frame_brings_the_time() {
    let cfg = Config {
        syn_timeout: Duration::from_millis(100),
        ..shared_config()
    };
    let mut fw = snet_firmware::Firmware::new(cfg).unwrap();
    let reg = snet_firmware::control::Envelope::new(
        ProcessorId(1),
        ControlMessage::RegisterListener(tcp_key(23)),
    );
    fw.apply(&reg.to_bytes(), Instant::ZERO).unwrap();
    assert_eq!(
        fw.classify(&syn(0, 23), Instant::ZERO),
        Verdict::deliver(1, 0)
    );
    // No poll in between: classify at a later time expires first.
    assert!(matches!(
        fw.classify(&ack(0, 23), Instant::from_millis(100)),
        Verdict::Master { .. }
    ));
    // Time going backwards is treated as the latest time seen.
    fw.classify(&syn(5, 23), Instant::from_millis(50));
    assert_eq!(fw.now(), Instant::from_millis(100));
}

#[test]
fn syn_beyond_capacity_is_dropped_and_counted() {
    let cfg = Config {
        provisional_capacity: 3,
        connection_capacity: 2,
        ..shared_config()
    };
    let mut h = listening(cfg, 23, &[1, 2]);
    for n in 0..3 {
        h.send(&syn(n, 23));
    }
    assert_eq!(
        h.send(&syn(3, 23)),
        Verdict::Drop(DropReason::ConnectionTableFull)
    );
    assert_eq!(h.firmware().counters().syn_dropped_table_full, 1);
    assert_eq!(
        h.firmware()
            .counters()
            .dropped(DropReason::ConnectionTableFull),
        1
    );
    // Established capacity: two confirmations fit, the third does not.
    h.control(1, ControlMessage::AddConnection(tuple(0, 23)))
        .unwrap();
    h.control(2, ControlMessage::AddConnection(tuple(1, 23)))
        .unwrap();
    let third = h.control(1, ControlMessage::AddConnection(tuple(2, 23)));
    assert!(matches!(
        third,
        Err(ControlError::Rejected {
            reason: RejectReason::TableFull,
            ..
        })
    ));
    // Outbound registrations obey the same limit.
    let out = h.control(3, ControlMessage::AddConnection(tuple(9, 4000)));
    assert!(matches!(
        out,
        Err(ControlError::Rejected {
            reason: RejectReason::TableFull,
            ..
        })
    ));
    assert_eq!(h.firmware().established_count(), 2);
    assert_eq!(h.firmware().connections().len(), 3);
}

#[test]
fn outbound_connections_registered_before_the_syn_leaves() {
    let mut h = listening(shared_config(), 23, &[1]);
    // P5 opens a connection to a client's port 443; the answer arrives as a SYN-ACK.
    let t = snet_firmware::FiveTuple::tcp(client(7).ip(), 443, server(33000).ip(), 33000);
    h.control(5, ControlMessage::AddConnection(t)).unwrap();
    let synack = snet_firmware::kit::PacketBuilder::tcp(
        std::net::SocketAddr::new(client(7).ip(), 443),
        server(33000),
    )
    .flags(snet_firmware::wire::tcp_flags::SYN | snet_firmware::wire::tcp_flags::ACK)
    .build()
    .unwrap();
    h.expect_delivered_to(&synack, 5).unwrap();
    // Another processor cannot take it over by registering it too.
    let dup = h.control(6, ControlMessage::AddConnection(t));
    assert!(matches!(
        dup,
        Err(ControlError::Rejected {
            reason: RejectReason::ConnectionExists,
            ..
        })
    ));
}

#[test]
fn move_connection_hands_off_to_another_processor() {
    let mut h = listening(shared_config(), 23, &[1]);
    h.expect_delivered_to(&syn(0, 23), 1).unwrap();
    h.control(1, ControlMessage::AddConnection(tuple(0, 23)))
        .unwrap();
    // accept_nw2 in processor 4: P1 moves the connection there.
    h.control(
        1,
        ControlMessage::MoveConnection {
            tuple: tuple(0, 23),
            to: ProcessorId(4),
        },
    )
    .unwrap();
    h.expect_delivered_to(&ack(0, 23), 4).unwrap();
    // P1 no longer owns it and cannot move it again; P4 can remove it.
    let again = h.control(
        1,
        ControlMessage::MoveConnection {
            tuple: tuple(0, 23),
            to: ProcessorId(1),
        },
    );
    assert!(matches!(
        again,
        Err(ControlError::Rejected {
            reason: RejectReason::Unauthorised,
            ..
        })
    ));
    let steal = h.control(2, ControlMessage::RemoveConnection(tuple(0, 23)));
    assert!(matches!(
        steal,
        Err(ControlError::Rejected {
            reason: RejectReason::Unauthorised,
            ..
        })
    ));
    h.control(4, ControlMessage::RemoveConnection(tuple(0, 23)))
        .unwrap();
    h.expect_master(&ack(0, 23)).unwrap();
}

/// A tree with a `listeners` node but no `connections` node before it: a
/// retransmitted SYN must reach the processor its first copy reached and must
/// not create a second provisional entry; a SYN for an established tuple goes
/// to its owner and leaves the entry alone.
#[test]
fn listeners_without_connections_never_replace_an_entry() {
    use snet_firmware::filter::{FilterTree, NodeSpec};
    let cfg = Config {
        syn_timeout: Duration::from_millis(500),
        ..shared_config()
    };
    let tree =
        FilterTree::compile("listeners-only", &NodeSpec::listeners(NodeSpec::Master)).unwrap();
    let mut h = listening(cfg, 23, &[1, 2, 3]).with_filter(Box::new(tree));
    // P3 owns an established connection from client 9.
    h.control(3, ControlMessage::AddConnection(tuple(9, 23)))
        .unwrap();
    h.expect_delivered_to(&syn(0, 23), 1).unwrap();
    for _ in 0..10 {
        h.expect_delivered_to(&syn(0, 23), 1).unwrap();
        assert_eq!(h.firmware().provisional_count(), 1);
    }
    assert_eq!(h.firmware().counters().provisional_created, 1);
    // A SYN on the established tuple goes to its owner; nothing changes.
    for _ in 0..3 {
        h.expect_delivered_to(&syn(9, 23), 3).unwrap();
    }
    let established = h.firmware().connection(&tuple(9, 23)).unwrap();
    assert_eq!(established.owner, ProcessorId(3));
    assert_eq!(established.state, EntryState::Established);
    assert_eq!(h.firmware().provisional_count(), 1);
    assert_eq!(h.firmware().established_count(), 1);
    // The single provisional entry expires; the count returns to zero.
    h.advance(Duration::from_millis(500));
    assert_eq!(h.firmware().provisional_count(), 0);
    assert_eq!(h.firmware().connections().len(), 1);
    assert_eq!(h.firmware().counters().provisional_expired, 1);
    assert_eq!(h.firmware().connection(&tuple(9, 23)).unwrap(), established);
    // New connections still get their turn (P2 was next after P1).
    h.expect_delivered_to(&syn(1, 23), 2).unwrap();
}
