//! Distribution policies compared on the same port: round robin, capacity
//! weighted (from capacity reports) and Maglev consistent hashing.

mod common;

use common::*;
use snet_firmware::control::ControlMessage;
use snet_firmware::kit::Harness;
use snet_firmware::tuple::PROTO_TCP;
use snet_firmware::{Config, Policy, ProcessorId, Verdict};

fn spread(policy: Policy, reports: &[(u16, u32)], n: u16) -> (Harness, [u32; 4]) {
    let cfg = Config::default().share_ports(PROTO_TCP, 80, 80, policy);
    let mut h = listening(cfg, 80, &[1, 2, 3]);
    for (p, c) in reports {
        h.control(*p, ControlMessage::CapacityReport(*c)).unwrap();
    }
    let mut counts = [0u32; 4];
    for i in 0..n {
        match h.send(&syn(i, 80)) {
            Verdict::Deliver { processor, .. } => counts[usize::from(processor.0)] += 1,
            v => panic!("unexpected {v}"),
        }
    }
    (h, counts)
}

#[test]
fn round_robin_is_even() {
    let (_, c) = spread(Policy::RoundRobin, &[(1, 10), (2, 1)], 300);
    assert_eq!(c, [0, 100, 100, 100]);
}

#[test]
fn capacity_weighted_follows_reports_and_only_listeners() {
    // P0 reports a huge capacity but does not listen: it gets nothing.
    let (mut h, c) = spread(
        Policy::CapacityWeighted,
        &[(0, 1000), (1, 6), (2, 3), (3, 1)],
        500,
    );
    assert_eq!(c, [0, 300, 150, 50]);
    // P1 reports zero: it leaves the rotation.
    h.control(1, ControlMessage::CapacityReport(0)).unwrap();
    for i in 1000..1040 {
        assert_ne!(h.send(&syn(i, 80)), Verdict::deliver(1, 0));
    }
}

#[test]
fn maglev_keeps_clients_on_their_processor() {
    let (mut h, c) = spread(Policy::Maglev, &[], 600);
    assert!(c[1..].iter().all(|n| *n > 120), "{c:?}");
    // The same client tuples (after the provisional entries expire or not)
    // map to the same member: compare with a fresh table's choices.
    let (mut h2, _) = spread(Policy::Maglev, &[], 0);
    let mut moved = 0;
    h.control(1, ControlMessage::ProcessorDown(ProcessorId(3)))
        .unwrap();
    h2.control(1, ControlMessage::ProcessorDown(ProcessorId(3)))
        .unwrap();
    for i in 2000..2300 {
        let a = h.send(&syn(i, 80));
        let b = h2.send(&syn(i, 80));
        assert_eq!(a, b, "same membership, same choice");
        if a.processor() == Some(ProcessorId(3)) {
            moved += 1;
        }
    }
    assert_eq!(moved, 0);
}
