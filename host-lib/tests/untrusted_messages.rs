//! Bytes that cross between processors are untrusted: the hand-off
//! protocol's system messages, tickets, and the conventional stack's calls
//! and events. Random and mutated inputs never panic, and a valid message
//! survives a round trip.

use proptest::prelude::*;
use smoltcp::wire::{Ipv4Address, Ipv6Address};
use snet_fabric::time::Instant;
use snet_firmware::FiveTuple;
use snet_host_lib::conventional::{Proxy, StackServer};
use snet_host_lib::socket::{SocketConfig, Sockets, SystemMessage, Ticket};
use snet_host_lib::stack::{ClusterAddress, ProcessorStack};

fn sockets() -> Sockets {
    let address = ClusterAddress {
        mac: [2, 0, 0, 0, 0, 0x10],
        ipv4: Some((Ipv4Address::new(198, 18, 0, 10), 15)),
        ipv6: Some((Ipv6Address::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10), 64)),
    };
    let stack = ProcessorStack::new(address, 1, 2034, Instant::ZERO);
    Sockets::new(
        stack,
        0,
        Some("198.18.0.10".parse().unwrap()),
        Some("2001:db8::10".parse().unwrap()),
        SocketConfig::default(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = SystemMessage::from_bytes(&bytes);
        let _ = Ticket::from_bytes(&bytes);
        let mut proxy = Proxy::new(1, 0, SocketConfig::default(), 1024);
        proxy.event(&bytes);
        let mut s = sockets();
        let mut server = StackServer::new(0, SocketConfig::default(), 1024);
        server.request(&mut s, 1, &bytes, Instant::ZERO);
        server.serve(&mut s, Instant::ZERO);
    }

    #[test]
    fn system_messages_round_trip_and_survive_bit_flips(
        port in any::<u16>(),
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..4),
        flip in any::<usize>(),
    ) {
        let t = FiveTuple::tcp("198.18.1.7".parse().unwrap(), port, "198.18.0.10".parse().unwrap(), 80);
        let m = SystemMessage::Adopted { tuple: t, frames: Ok(frames) };
        let b = m.to_bytes();
        prop_assert_eq!(SystemMessage::from_bytes(&b), Some(m));
        let mut bad = b.clone();
        let i = flip % bad.len();
        bad[i] ^= 0x80;
        let _ = SystemMessage::from_bytes(&bad);
        let ticket = Ticket { tuple: t, owner: 3 };
        let mut tb = ticket.to_bytes();
        prop_assert_eq!(Ticket::from_bytes(&tb), Ok(ticket));
        let j = flip % tb.len();
        tb[j] ^= 0x01;
        let _ = Ticket::from_bytes(&tb);
    }

    #[test]
    fn a_sequence_of_random_calls_never_panics_the_stack_server(
        calls in proptest::collection::vec(
            (1u8..=9, 0u32..4, proptest::collection::vec(any::<u8>(), 0..48)),
            1..40,
        ),
    ) {
        let mut s = sockets();
        let mut server = StackServer::new(0, SocketConfig::default(), 1024);
        for (op, id, rest) in calls {
            let mut b = vec![op];
            b.extend_from_slice(&id.to_le_bytes());
            b.extend_from_slice(&rest);
            server.request(&mut s, 1 + (id as usize % 3), &b, Instant::ZERO);
        }
        let _ = server.take_outgoing();
    }
}
