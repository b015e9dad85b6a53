//! Listener groups: the manual's round-robin example, exclusive ownership,
//! one listener per processor per port, UDP distribution.

mod common;

use common::*;
use snet_firmware::control::{ControlError, ControlMessage, RejectReason};
use snet_firmware::kit::PacketBuilder;
use snet_firmware::listener::ListenerKey;
use snet_firmware::tuple::{PROTO_UDP, addr16};
use snet_firmware::{Config, Policy, ProcessorId, Verdict};

fn rejected(r: Result<(), ControlError>) -> RejectReason {
    match r {
        Err(ControlError::Rejected { reason, .. }) => reason,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn round_robin_follows_the_manuals_five_steps() {
    // Listening processes in processors 1, 2 and 3 share port 23.
    let mut h = listening(shared_config(), 23, &[1, 2, 3]);
    // Connection requests 1..5 go to the 1st, 2nd, 3rd, 1st, 2nd processor.
    for (n, p) in [1, 2, 3, 1, 2].into_iter().enumerate() {
        h.expect_delivered_to(&syn(n as u16, 23), p).unwrap();
    }
    // Each created a provisional entry owned by that processor.
    assert_eq!(
        h.firmware().connection(&tuple(3, 23)).unwrap().owner,
        ProcessorId(1)
    );
    assert_eq!(h.firmware().counters().provisional_created, 5);
}

#[test]
fn without_round_robin_the_first_registrant_owns_the_port() {
    let mut h = listening(Config::default(), 80, &[2]);
    assert_eq!(
        rejected(h.control(1, ControlMessage::RegisterListener(tcp_key(80)))),
        RejectReason::PortOwnedExclusively
    );
    for n in 0..5 {
        h.expect_delivered_to(&syn(n, 80), 2).unwrap();
    }
    assert_eq!(
        h.firmware()
            .counters()
            .rejected(RejectReason::PortOwnedExclusively),
        1
    );
    // After the owner leaves, another processor may take the port.
    h.control(2, ControlMessage::UnregisterListener(tcp_key(80)))
        .unwrap();
    h.control(1, ControlMessage::RegisterListener(tcp_key(80)))
        .unwrap();
    h.expect_delivered_to(&syn(9, 80), 1).unwrap();
}

#[test]
fn one_listener_per_processor_per_port() {
    let mut h = listening(shared_config(), 1500, &[1, 2]);
    assert_eq!(
        rejected(h.control(1, ControlMessage::RegisterListener(tcp_key(1500)))),
        RejectReason::AlreadyListening
    );
    assert_eq!(
        rejected(h.control(3, ControlMessage::UnregisterListener(tcp_key(1500)))),
        RejectReason::NoSuchListener
    );
    let g = h.firmware().listeners().get(&tcp_key(1500)).unwrap();
    assert_eq!(g.members(), &[ProcessorId(1), ProcessorId(2)]);
}

#[test]
fn a_port_nobody_listens_on_goes_to_the_master() {
    let mut h = listening(shared_config(), 23, &[1]);
    h.expect(
        &syn(0, 24),
        &Verdict::Master {
            processor: ProcessorId(0),
        },
    )
    .unwrap();
    // A non-SYN segment without a connection is unmatched too.
    h.expect_master(&ack(0, 23)).unwrap();
}

#[test]
fn specific_address_group_wins_over_any_address() {
    let mut h = listening(shared_config(), 23, &[1]);
    let key = ListenerKey {
        protocol: 6,
        addr: Some(addr16(CLUSTER.parse().unwrap())),
        port: 23,
    };
    h.control(4, ControlMessage::RegisterListener(key)).unwrap();
    h.expect_delivered_to(&syn(0, 23), 4).unwrap();
    let other = PacketBuilder::tcp(client(1), "198.18.0.11:23".parse().unwrap())
        .flags(2)
        .build()
        .unwrap();
    h.expect_delivered_to(&other, 1).unwrap();
}

#[test]
fn udp_is_exclusive_or_round_robin_per_datagram() {
    let cfg = Config::default().share_ports(PROTO_UDP, 5000, 5000, Policy::RoundRobin);
    let mut h = snet_firmware::kit::Harness::new(cfg).unwrap();
    let udp_key = |port| ListenerKey {
        protocol: PROTO_UDP,
        addr: None,
        port,
    };
    for p in [1, 2, 3] {
        h.control(p, ControlMessage::RegisterListener(udp_key(5000)))
            .unwrap();
    }
    h.control(2, ControlMessage::RegisterListener(udp_key(53)))
        .unwrap();
    assert_eq!(
        rejected(h.control(3, ControlMessage::RegisterListener(udp_key(53)))),
        RejectReason::PortOwnedExclusively
    );
    let dgram = |port| {
        PacketBuilder::udp(client(0), server(port))
            .payload(b"q")
            .build()
            .unwrap()
    };
    // The same client's datagrams spread in turn: UDP has no connection.
    for p in [1, 2, 3, 1, 2, 3] {
        h.expect_delivered_to(&dgram(5000), p).unwrap();
    }
    for _ in 0..3 {
        h.expect_delivered_to(&dgram(53), 2).unwrap();
    }
    assert_eq!(
        h.firmware().provisional_count(),
        0,
        "UDP creates no connection entries"
    );
}
