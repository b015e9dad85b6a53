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
    // P1 reports zero: it leaves the rotation; P2 and P3 share in 3:1.
    h.control(1, ControlMessage::CapacityReport(0)).unwrap();
    let mut after = [0u32; 4];
    for i in 1000..1040 {
        match h.send(&syn(i, 80)) {
            Verdict::Deliver { processor, .. } if processor.0 == 2 || processor.0 == 3 => {
                after[usize::from(processor.0)] += 1
            }
            v => panic!("client {i}: {v}, expected delivery to P2 or P3"),
        }
    }
    assert_eq!(after, [0, 0, 30, 10]);
}

#[test]
fn maglev_keeps_clients_on_their_processor() {
    let (mut h, c) = spread(Policy::Maglev, &[], 600);
    assert!(c[1..].iter().all(|n| *n > 120), "{c:?}");
    // Each client's processor while P1, P2 and P3 listen.
    let clients = 2000..2300u16;
    let before: Vec<ProcessorId> = clients
        .clone()
        .map(|i| match h.send(&syn(i, 80)) {
            Verdict::Deliver { processor, .. } => processor,
            v => panic!("client {i}: {v}"),
        })
        .collect();
    let on_p3 = before.iter().filter(|p| p.0 == 3).count();
    assert!(on_p3 > 50, "only {on_p3} of 300 clients on P3");
    // Let those SYNs' provisional entries expire, so the clients' next SYNs
    // are placed by Maglev again rather than found in the connection table.
    let timeout = h.firmware().config().syn_timeout;
    h.advance(timeout);
    assert_eq!(h.firmware().provisional_count(), 0);
    h.control(1, ControlMessage::ProcessorDown(ProcessorId(3)))
        .unwrap();
    // A fresh table with the same membership makes the same choices.
    let (mut h2, _) = spread(Policy::Maglev, &[], 0);
    h2.control(1, ControlMessage::ProcessorDown(ProcessorId(3)))
        .unwrap();
    let mut moved = Vec::new();
    for (i, was) in clients.zip(before) {
        let now = match h.send(&syn(i, 80)) {
            Verdict::Deliver { processor, .. } => processor,
            v => panic!("client {i}: {v}"),
        };
        assert_eq!(
            h2.send(&syn(i, 80)).processor(),
            Some(now),
            "same membership, same choice"
        );
        if was.0 == 3 {
            assert!(now.0 == 1 || now.0 == 2, "client {i} went to {now}");
        } else if now != was {
            moved.push((i, was, now));
        }
    }
    // Maglev promises minimal disruption, not none: rebuilding the lookup
    // table for two members reassigns a few slots that P1 or P2 held (about
    // 1% here, against about half for modulo hashing). Pinned at ≤ 2%.
    let stayed = 300 - on_p3;
    assert!(
        moved.len() * 50 <= stayed,
        "{} of {stayed} clients not on P3 moved: {moved:?}",
        moved.len()
    );
}
