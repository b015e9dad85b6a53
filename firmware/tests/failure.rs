//! Processor failure: purge, fast reset, survivors untouched, master failover,
//! rejoining only by re-registering.

mod common;

use core::time::Duration;

use common::*;
use snet_firmware::conntable::EntryState;
use snet_firmware::control::{ControlError, ControlMessage, RejectReason};
use snet_firmware::kit::invariants;
use snet_firmware::tuple::ip_of;
use snet_firmware::wire::{ParseOptions, parse_frame, tcp_flags};
use snet_firmware::{Config, DropReason, ProcessorId, Verdict};

/// P1, P2, P3 share port 23; six connections, two each, all confirmed.
fn six_connections() -> snet_firmware::kit::Harness {
    let mut h = listening(shared_config(), 23, &[1, 2, 3]);
    for n in 0..6u16 {
        let owner = [1, 2, 3][usize::from(n % 3)];
        h.expect_delivered_to(&syn(n, 23), owner).unwrap();
        h.control(owner, ControlMessage::AddConnection(tuple(n, 23)))
            .unwrap();
    }
    h
}

#[test]
fn processor_down_resets_its_connections_and_leaves_the_others() {
    let mut h = six_connections();
    h.control(1, ControlMessage::ProcessorDown(ProcessorId(2)))
        .unwrap();
    assert_eq!(h.firmware().counters().connections_orphaned, 2);
    // Clients 1 and 4 belonged to P2: their next segment is answered with a RST.
    for n in [1u16, 4] {
        let v = h.expect_no_delivery(&ack(n, 23)).unwrap();
        let Verdict::Reply { frame } = v else {
            panic!("expected a reset, got {v}")
        };
        let p = parse_frame(&frame, &ParseOptions::default()).unwrap();
        let t = p.tcp().unwrap();
        assert_eq!(t.flags, tcp_flags::RST);
        assert_eq!(
            t.seq, 5000,
            "RST takes the segment's acknowledgement number"
        );
        assert_eq!(p.tuple().unwrap().local_port, client(n).port());
    }
    // A second segment gets another RST but is not counted as a new reset connection.
    assert!(matches!(h.send(&ack(1, 23)), Verdict::Reply { .. }));
    assert_eq!(h.firmware().counters().connections_reset, 2);
    assert_eq!(h.firmware().counters().resets_sent, 3);
    // The client's own RST is not answered.
    assert_eq!(
        h.send(&tcp(4, 23, tcp_flags::RST)),
        Verdict::Drop(DropReason::ResetForOrphan)
    );
    // Survivors' connections are untouched.
    for n in [0u16, 3] {
        h.expect_delivered_to(&ack(n, 23), 1).unwrap();
    }
    for n in [2u16, 5] {
        h.expect_delivered_to(&ack(n, 23), 3).unwrap();
    }
    // New connections go only to the survivors, in turn.
    for (n, p) in [(10u16, 1), (11, 3), (12, 1), (13, 3)] {
        h.expect_delivered_to(&syn(n, 23), p).unwrap();
    }
}

#[test]
fn a_processor_down_message_queues_a_reset_for_each_client_that_acknowledged() {
    let mut h = six_connections();
    // Clients 1 and 4 (P2) and 0 (P1) have acknowledged something; client 7
    // of P2 connected but never did.
    for n in [0u16, 1, 4] {
        h.send(&ack(n, 23));
    }
    h.expect_delivered_to(&syn(6, 23), 1).unwrap();
    h.expect_delivered_to(&syn(7, 23), 2).unwrap();
    h.control(2, ControlMessage::AddConnection(tuple(7, 23)))
        .unwrap();
    h.control(1, ControlMessage::ProcessorDown(ProcessorId(2)))
        .unwrap();
    let frames = h.firmware().take_frames();
    assert_eq!(frames.len(), 2, "clients 1 and 4, not 7");
    let mut ports = Vec::new();
    for f in &frames {
        let p = invariants::check_reset(f).unwrap();
        let t = p.tcp().unwrap();
        assert_eq!((t.flags, t.seq), (tcp_flags::RST, 5000));
        let ip = p.ip.unwrap();
        assert_eq!(ip_of(&ip.src), server(23).ip());
        let client_port = ip.transport.unwrap().dst_port;
        let n = client_port - 40000;
        assert_eq!(ip_of(&ip.dst), client(n).ip());
        ports.push(client_port);
    }
    ports.sort_unstable();
    assert_eq!(ports, [client(1).port(), client(4).port()]);
    let c = h.firmware().counters().clone();
    assert_eq!(
        (
            c.proactive_resets,
            c.connections_reset,
            c.connections_orphaned
        ),
        (2, 2, 3)
    );
    // Client 7 learns on its next segment, as before.
    assert!(matches!(h.send(&ack(7, 23)), Verdict::Reply { .. }));
    assert_eq!(h.firmware().counters().connections_reset, 3);
    assert!(!h.firmware().has_frames());
}

#[test]
fn provisional_entries_of_a_failed_processor_are_purged() {
    let mut h = listening(shared_config(), 23, &[1, 2]);
    h.expect_delivered_to(&syn(0, 23), 1).unwrap();
    h.expect_delivered_to(&syn(1, 23), 2).unwrap();
    h.control(1, ControlMessage::ProcessorDown(ProcessorId(2)))
        .unwrap();
    assert_eq!(h.firmware().provisional_count(), 1);
    // The client retries: the SYN goes to the survivor.
    h.expect_delivered_to(&syn(1, 23), 1).unwrap();
}

#[test]
fn orphans_linger_then_go() {
    let cfg = Config {
        orphan_linger: Duration::from_secs(5),
        ..shared_config()
    };
    let mut h = listening(cfg, 23, &[1, 2]);
    h.send(&syn(0, 23));
    h.control(1, ControlMessage::AddConnection(tuple(0, 23)))
        .unwrap();
    h.control(2, ControlMessage::ProcessorDown(ProcessorId(1)))
        .unwrap();
    assert_eq!(
        h.firmware().connection(&tuple(0, 23)).unwrap().state,
        EntryState::Orphaned
    );
    h.advance(Duration::from_secs(5));
    assert!(h.firmware().connection(&tuple(0, 23)).is_none());
    assert_eq!(h.firmware().counters().orphans_expired, 1);
    assert_eq!(h.firmware().established_count(), 0);
}

#[test]
fn master_fails_over_to_the_next_live_processor() {
    let mut h = six_connections();
    assert_eq!(h.firmware().master(), Some(ProcessorId(0)));
    h.control(3, ControlMessage::ProcessorDown(ProcessorId(0)))
        .unwrap();
    assert_eq!(h.firmware().master(), Some(ProcessorId(1)));
    h.control(3, ControlMessage::ProcessorDown(ProcessorId(1)))
        .unwrap();
    assert_eq!(h.firmware().master(), Some(ProcessorId(2)));
    let arp = snet_firmware::kit::PacketBuilder::arp_request(
        "198.18.5.1".parse().unwrap(),
        CLUSTER.parse().unwrap(),
    )
    .build()
    .unwrap();
    h.expect(
        &arp,
        &Verdict::Master {
            processor: ProcessorId(2),
        },
    )
    .unwrap();
    assert_eq!(h.firmware().counters().master_failovers, 2);
    // Wraps around past the highest ID.
    let cfg = Config {
        processor_count: 3,
        initial_master: ProcessorId(2),
        ..Config::default()
    };
    let mut h = snet_firmware::kit::Harness::new(cfg).unwrap();
    h.control(0, ControlMessage::ProcessorDown(ProcessorId(2)))
        .unwrap();
    assert_eq!(h.firmware().master(), Some(ProcessorId(0)));
    h.control(1, ControlMessage::ProcessorDown(ProcessorId(0)))
        .unwrap();
    // The last live processor cannot declare itself down: nobody would be left to say so.
    let last = h.control(1, ControlMessage::ProcessorDown(ProcessorId(1)));
    assert!(matches!(
        last,
        Err(ControlError::Rejected {
            reason: RejectReason::Unauthorised,
            ..
        })
    ));
}

#[test]
fn a_restarted_processor_rejoins_only_as_it_re_registers() {
    let mut h = six_connections();
    h.control(1, ControlMessage::ProcessorDown(ProcessorId(3)))
        .unwrap();
    let dup = h.control(1, ControlMessage::ProcessorDown(ProcessorId(3)));
    assert!(matches!(
        dup,
        Err(ControlError::Rejected {
            reason: RejectReason::AlreadyDown,
            ..
        })
    ));
    // Only the processor itself or the master may say it is up.
    let forged = h.control(2, ControlMessage::ProcessorUp(ProcessorId(3)));
    assert!(matches!(
        forged,
        Err(ControlError::Rejected {
            reason: RejectReason::Unauthorised,
            ..
        })
    ));
    h.control(3, ControlMessage::ProcessorUp(ProcessorId(3)))
        .unwrap();
    // Up, but not listening: turns alternate between P1 and P2.
    for (n, p) in [(20u16, 1), (21, 2), (22, 1)] {
        h.expect_delivered_to(&syn(n, 23), p).unwrap();
    }
    h.control(3, ControlMessage::RegisterListener(tcp_key(23)))
        .unwrap();
    for (n, p) in [(23u16, 2), (24, 3), (25, 1)] {
        h.expect_delivered_to(&syn(n, 23), p).unwrap();
    }
}

#[test]
fn a_down_processor_cannot_send_requests() {
    let mut h = six_connections();
    h.control(1, ControlMessage::ProcessorDown(ProcessorId(3)))
        .unwrap();
    for msg in [
        ControlMessage::RegisterListener(tcp_key(23)),
        ControlMessage::AddConnection(tuple(40, 23)),
        ControlMessage::CapacityReport(5),
    ] {
        let r = h.control(3, msg);
        assert!(
            matches!(
                r,
                Err(ControlError::Rejected {
                    reason: RejectReason::ProcessorNotLive,
                    ..
                })
            ),
            "{r:?}"
        );
    }
    let unknown = h.control(99, ControlMessage::CapacityReport(5));
    assert!(matches!(
        unknown,
        Err(ControlError::Rejected {
            reason: RejectReason::UnknownProcessor,
            ..
        })
    ));
}

/// A tuple that goes provisional → established → orphaned → gone → provisional
/// again leaves stale entries in both expiry queues; each queue expires only
/// entries still in its state with its deadline.
#[test]
fn stale_expiry_entries_expire_nothing() {
    let cfg = Config {
        syn_timeout: Duration::from_millis(500),
        orphan_linger: Duration::from_millis(300),
        ..shared_config()
    };
    let mut h = listening(cfg, 23, &[1, 2]);
    h.expect_delivered_to(&syn(0, 23), 1).unwrap(); // provisional, due at 500
    h.advance(Duration::from_millis(100));
    h.control(1, ControlMessage::AddConnection(tuple(0, 23)))
        .unwrap();
    h.control(2, ControlMessage::ProcessorDown(ProcessorId(1)))
        .unwrap(); // orphaned, due at 400
    h.advance(Duration::from_millis(300));
    let fw = h.firmware();
    assert!(fw.connection(&tuple(0, 23)).is_none());
    assert_eq!(fw.counters().orphans_expired, 1);
    assert_eq!(fw.counters().provisional_expired, 0);
    assert_eq!((fw.established_count(), fw.provisional_count()), (0, 0));
    // The client retries at 450: a new provisional entry, due at 950.
    h.advance(Duration::from_millis(50));
    h.expect_delivered_to(&syn(0, 23), 2).unwrap();
    // The first SYN's queue entry (500) finds a different deadline.
    h.advance(Duration::from_millis(50));
    assert_eq!(h.firmware().provisional_count(), 1);
    assert_eq!(h.firmware().counters().provisional_expired, 0);
    h.advance(Duration::from_millis(450));
    let fw = h.firmware();
    assert!(fw.connection(&tuple(0, 23)).is_none());
    assert_eq!(fw.counters().provisional_expired, 1);
    assert_eq!(fw.counters().orphans_expired, 1);
    assert_eq!((fw.established_count(), fw.provisional_count()), (0, 0));
    assert_eq!(fw.poll_at(), None);
}
