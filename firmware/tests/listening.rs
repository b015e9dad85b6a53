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

/// An IPv6 fragment: Ethernet + IPv6 header (next header 44) + Fragment header
/// (next header 60, destination options) + `rest`.
fn ipv6_fragment(ident: u32, offset: u16, more: bool, rest: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 0x10, 2, 0, 0, 0, 0, 0x01, 0x86, 0xdd];
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&((8 + rest.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[44, 64]);
    f.extend_from_slice(&addr16("2001:db8::7".parse().unwrap()));
    f.extend_from_slice(&addr16("2001:db8::10".parse().unwrap()));
    f.extend_from_slice(&[60, 0]);
    f.extend_from_slice(&(offset | u16::from(more)).to_be_bytes());
    f.extend_from_slice(&ident.to_be_bytes());
    f.extend_from_slice(rest);
    f
}

#[test]
fn ipv6_later_fragment_follows_its_first_past_destination_options() {
    let cfg = Config::default().share_ports(PROTO_UDP, 5000, 5000, Policy::RoundRobin);
    let mut h = snet_firmware::kit::Harness::new(cfg).unwrap();
    for p in [1, 2, 3] {
        h.control(
            p,
            ControlMessage::RegisterListener(ListenerKey {
                protocol: PROTO_UDP,
                addr: None,
                port: 5000,
            }),
        )
        .unwrap();
    }
    // First fragment: destination options (next header UDP, PadN), then the
    // UDP header and 16 bytes of data; 32 bytes after the Fragment header.
    let mut first = vec![17, 0, 1, 4, 0, 0, 0, 0];
    first.extend_from_slice(&40000u16.to_be_bytes());
    first.extend_from_slice(&5000u16.to_be_bytes());
    first.extend_from_slice(&40u16.to_be_bytes());
    first.extend_from_slice(&[0, 0]);
    first.extend_from_slice(&[0x5a; 16]);
    let first = ipv6_fragment(0x1234_5678, 0, true, &first);
    let later = ipv6_fragment(0x1234_5678, 32, false, &[0x5a; 8]);
    h.expect_delivered_to(&first, 1).unwrap();
    h.expect_delivered_to(&later, 1).unwrap();
    assert_eq!(h.firmware().counters().fragments_followed, 1);
    // Another packet of the same client goes to the next member, all of it.
    let first2 = {
        let mut b = vec![17, 0, 1, 4, 0, 0, 0, 0];
        b.extend_from_slice(&40000u16.to_be_bytes());
        b.extend_from_slice(&5000u16.to_be_bytes());
        b.extend_from_slice(&40u16.to_be_bytes());
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&[0x5a; 16]);
        ipv6_fragment(0x1234_5679, 0, true, &b)
    };
    h.expect_delivered_to(&first2, 2).unwrap();
    h.expect_delivered_to(&ipv6_fragment(0x1234_5679, 32, false, &[0x5a; 8]), 2)
        .unwrap();
    h.expect_delivered_to(&later, 1).unwrap();
}
