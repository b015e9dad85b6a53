//! Replication: every adapter serving the IP applies the same control
//! messages, so their tables agree, whatever local traffic each one saw; a
//! dump brings a new adapter to the same table.

mod common;

use core::time::Duration;

use common::*;
use proptest::prelude::*;
use snet_firmware::control::{ControlError, ControlMessage, Envelope, RejectReason};
use snet_firmware::kit::invariants;
use snet_firmware::listener::ListenerKey;
use snet_firmware::tuple::{PROTO_TCP, PROTO_UDP};
use snet_firmware::{Config, Firmware, Instant, Policy, ProcessorId};

fn config() -> Config {
    Config {
        processor_count: 6,
        connection_capacity: 24,
        provisional_capacity: 8,
        syn_timeout: Duration::from_millis(300),
        orphan_linger: Duration::from_millis(700),
        ..Config::default()
    }
    .share_ports(PROTO_TCP, 23, 23, Policy::RoundRobin)
    .share_ports(PROTO_UDP, 1500, 1500, Policy::Maglev)
    .share_ports(PROTO_TCP, 80, 80, Policy::CapacityWeighted)
}

#[derive(Debug, Clone)]
enum Step {
    Control(u16, ControlMessage),
    /// A SYN that reaches only one adapter (local, unreplicated state).
    LocalSyn(usize, u16, u16),
    Advance(u64),
}

fn key() -> impl Strategy<Value = ListenerKey> {
    prop_oneof![
        Just(ListenerKey {
            protocol: PROTO_TCP,
            addr: None,
            port: 23
        }),
        Just(ListenerKey {
            protocol: PROTO_TCP,
            addr: None,
            port: 80
        }),
        Just(ListenerKey {
            protocol: PROTO_TCP,
            addr: None,
            port: 443
        }),
        Just(ListenerKey {
            protocol: PROTO_UDP,
            addr: None,
            port: 1500
        }),
    ]
}

fn port() -> impl Strategy<Value = u16> {
    prop_oneof![Just(23u16), Just(80), Just(443)]
}

fn message() -> impl Strategy<Value = ControlMessage> {
    prop_oneof![
        3 => key().prop_map(ControlMessage::RegisterListener),
        1 => key().prop_map(ControlMessage::UnregisterListener),
        4 => (0..30u16, port()).prop_map(|(n, p)| ControlMessage::AddConnection(tuple(n, p))),
        2 => (0..30u16, port()).prop_map(|(n, p)| ControlMessage::RemoveConnection(tuple(n, p))),
        1 => (0..30u16, port(), 0..7u16).prop_map(|(n, p, to)| ControlMessage::MoveConnection { tuple: tuple(n, p), to: ProcessorId(to) }),
        1 => (0..7u16).prop_map(|p| ControlMessage::SetMaster(ProcessorId(p))),
        1 => (0..10u32).prop_map(ControlMessage::CapacityReport),
        1 => (0..7u16).prop_map(|p| ControlMessage::ProcessorDown(ProcessorId(p))),
        1 => (0..7u16).prop_map(|p| ControlMessage::ProcessorUp(ProcessorId(p))),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..7u16, message()).prop_map(|(s, m)| Step::Control(s, m)),
        3 => (0..3usize, 0..30u16, port()).prop_map(|(a, n, p)| Step::LocalSyn(a, n, p)),
        1 => (1..400u64).prop_map(Step::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn replicas_agree_after_any_control_sequence(steps in proptest::collection::vec(step(), 1..120)) {
        let mut adapters: Vec<Firmware> = (0..3).map(|_| Firmware::new(config()).unwrap()).collect();
        let mut now = Instant::ZERO;
        for (i, s) in steps.iter().enumerate() {
            match s {
                Step::Control(sender, m) => {
                    let bytes = Envelope { sender: ProcessorId(*sender), seq: i as u32, message: m.clone() }.to_bytes();
                    for a in adapters.iter_mut() {
                        invariants::check_control(a, &bytes, now).map_err(TestCaseError::fail)?;
                    }
                    let first = adapters[0].snapshot();
                    for a in &adapters[1..] {
                        prop_assert_eq!(&a.snapshot(), &first, "after step {}: {:?}", i, s);
                    }
                }
                Step::LocalSyn(a, n, p) => {
                    invariants::check_frame(&mut adapters[*a], &syn(*n, *p), now).map_err(TestCaseError::fail)?;
                }
                Step::Advance(ms) => now = now.saturating_add(Duration::from_millis(*ms)),
            }
        }
        for a in adapters.iter_mut() {
            a.poll(now);
        }
        let first = adapters[0].snapshot();
        for a in &adapters[1..] {
            prop_assert_eq!(&a.snapshot(), &first);
        }
        // A new adapter resynchronised from a dump has the same table.
        let mut fresh = Firmware::new(config()).unwrap();
        let sender = first.master.unwrap_or(ProcessorId(0));
        let dump = adapters[1].dump(sender);
        match fresh.apply(&dump, now) {
            Ok(()) => prop_assert_eq!(fresh.snapshot(), first),
            // A fresh adapter believes every processor is live; only a dump
            // from a processor it thinks dead could be refused, and none is.
            Err(e) => prop_assert!(false, "dump refused: {}", e),
        }
    }
}

#[test]
fn dump_and_restore_reproduce_the_table() {
    let mut h = listening(config(), 23, &[1, 2, 3]);
    for n in 0..6 {
        let v = h.send(&syn(n, 23));
        let owner = v.processor().unwrap();
        h.control(owner.0, ControlMessage::AddConnection(tuple(n, 23)))
            .unwrap();
    }
    h.control(4, ControlMessage::CapacityReport(7)).unwrap();
    h.control(1, ControlMessage::ProcessorDown(ProcessorId(2)))
        .unwrap();
    // One more provisional entry, which is local and not dumped.
    h.send(&syn(20, 23));
    let snap = h.firmware().snapshot();
    assert_eq!(snap.connections.len(), 6);
    assert_eq!(snap.listeners.len(), 1);
    let dump = h.firmware().dump(ProcessorId(0));
    let mut backup = Firmware::new(config()).unwrap();
    backup.apply(&dump, Instant::ZERO).unwrap();
    assert_eq!(backup.snapshot(), snap);
    assert_eq!(backup.provisional_count(), 0);
    // The backup now serves the same connections, and resets the dead processor's.
    for n in 0..6u16 {
        let v = backup.classify(&ack(n, 23), Instant::ZERO);
        let owner = snap
            .connections
            .iter()
            .find(|c| c.0 == tuple(n, 23))
            .unwrap()
            .1;
        if owner == ProcessorId(2) {
            assert!(matches!(v, snet_firmware::Verdict::Reply { .. }), "{v}");
        } else {
            assert_eq!(v.processor(), Some(owner));
        }
    }
    // A dump for a different cluster size is refused and counted.
    let mut other = Firmware::new(Config {
        processor_count: 5,
        ..config()
    })
    .unwrap();
    let r = other.apply(&dump, Instant::ZERO);
    assert!(
        matches!(
            r,
            Err(ControlError::Rejected {
                reason: RejectReason::BadDump,
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(other.counters().rejected(RejectReason::BadDump), 1);
}

#[test]
fn unauthorised_and_malformed_messages_are_counted() {
    let mut h = listening(config(), 23, &[1]);
    h.send(&syn(0, 23));
    h.control(1, ControlMessage::AddConnection(tuple(0, 23)))
        .unwrap();
    // P2 may not remove or move P1's connection; the master (P0) may.
    for m in [
        ControlMessage::RemoveConnection(tuple(0, 23)),
        ControlMessage::MoveConnection {
            tuple: tuple(0, 23),
            to: ProcessorId(2),
        },
    ] {
        let r = h.control(2, m);
        assert!(matches!(
            r,
            Err(ControlError::Rejected {
                reason: RejectReason::Unauthorised,
                ..
            })
        ));
    }
    // Only the master hands over the master role.
    let r = h.control(3, ControlMessage::SetMaster(ProcessorId(3)));
    assert!(matches!(
        r,
        Err(ControlError::Rejected {
            reason: RejectReason::Unauthorised,
            ..
        })
    ));
    h.control(0, ControlMessage::SetMaster(ProcessorId(3)))
        .unwrap();
    h.control(
        3,
        ControlMessage::MoveConnection {
            tuple: tuple(0, 23),
            to: ProcessorId(2),
        },
    )
    .unwrap();
    h.expect_delivered_to(&ack(0, 23), 2).unwrap();
    let fw = h.firmware();
    assert_eq!(fw.counters().rejected(RejectReason::Unauthorised), 3);
    assert!(fw.apply(b"SF\x07", Instant::ZERO).is_err());
    assert!(
        fw.apply(b"not a control message at all", Instant::ZERO)
            .is_err()
    );
    assert_eq!(fw.counters().rejected(RejectReason::Malformed), 2);
}

/// A dump may not hand an established connection to a processor it marks
/// down: as bytes it is malformed, as a decoded message it is a bad dump;
/// both are counted and change nothing.
#[test]
fn dump_with_established_connection_of_a_down_processor_is_refused() {
    use snet_firmware::conntable::EntryState;
    use snet_firmware::control::ControlParseError;
    let mut h = listening(config(), 23, &[1, 2, 3]);
    h.control(2, ControlMessage::AddConnection(tuple(0, 23)))
        .unwrap();
    let mut snap = h.firmware().snapshot();
    snap.live[2] = false;
    snap.listeners[0].1.retain(|p| *p != ProcessorId(2));
    assert_eq!(
        snap.connections,
        vec![(tuple(0, 23), ProcessorId(2), EntryState::Established)]
    );
    let mut target = Firmware::new(config()).unwrap();
    let before = target.snapshot();
    let bytes = Envelope::new(ProcessorId(0), ControlMessage::TableDump(snap.clone())).to_bytes();
    assert_eq!(
        target.apply(&bytes, Instant::ZERO),
        Err(ControlError::Parse(
            ControlParseError::EstablishedOwnerDown(2)
        ))
    );
    assert_eq!(target.counters().rejected(RejectReason::Malformed), 1);
    let r = target.apply_envelope(
        &Envelope::new(ProcessorId(0), ControlMessage::TableDump(snap.clone())),
        Instant::ZERO,
    );
    assert!(
        matches!(
            r,
            Err(ControlError::Rejected {
                reason: RejectReason::BadDump,
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(target.counters().rejected(RejectReason::BadDump), 1);
    assert_eq!(target.snapshot(), before);
    // The same dump with the connection orphaned is accepted.
    snap.connections[0].2 = EntryState::Orphaned;
    let bytes = Envelope::new(ProcessorId(0), ControlMessage::TableDump(snap.clone())).to_bytes();
    target.apply(&bytes, Instant::ZERO).unwrap();
    assert_eq!(target.snapshot(), snap);
}
