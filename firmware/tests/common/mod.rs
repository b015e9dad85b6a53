//! Helpers shared by the integration tests.
#![allow(dead_code)]

use snet_firmware::control::ControlMessage;
use snet_firmware::kit::{Harness, PacketBuilder};
use snet_firmware::listener::ListenerKey;
use snet_firmware::tuple::{FiveTuple, PROTO_TCP};
use snet_firmware::wire::tcp_flags;
use snet_firmware::{Config, Policy};

/// The cluster IP used in tests.
pub const CLUSTER: &str = "198.18.0.10";

/// Client `n`'s socket address (198.18.5.x / 198.18.6.x, port 40000 + n).
pub fn client(n: u16) -> std::net::SocketAddr {
    format!("198.18.{}.{}:{}", 5 + n / 250, n % 250 + 1, 40000 + n)
        .parse()
        .unwrap()
}

/// The cluster's socket on `port`.
pub fn server(port: u16) -> std::net::SocketAddr {
    format!("{CLUSTER}:{port}").parse().unwrap()
}

/// A TCP segment from client `n` to `port` with `flags`.
pub fn tcp(n: u16, port: u16, flags: u8) -> Vec<u8> {
    PacketBuilder::tcp(client(n), server(port))
        .flags(flags)
        .seq(1000)
        .ack_number(5000)
        .build()
        .unwrap()
}

/// A SYN from client `n`.
pub fn syn(n: u16, port: u16) -> Vec<u8> {
    tcp(n, port, tcp_flags::SYN)
}

/// An ACK from client `n`.
pub fn ack(n: u16, port: u16) -> Vec<u8> {
    tcp(n, port, tcp_flags::ACK)
}

/// The tuple of client `n`'s connection to `port`.
pub fn tuple(n: u16, port: u16) -> FiveTuple {
    FiveTuple::tcp(client(n).ip(), client(n).port(), server(port).ip(), port)
}

/// A TCP listener key, any address.
pub fn tcp_key(port: u16) -> ListenerKey {
    ListenerKey {
        protocol: PROTO_TCP,
        addr: None,
        port,
    }
}

/// A config with round robin on TCP 23 and 1000..=1999.
pub fn shared_config() -> Config {
    Config {
        processor_count: 8,
        ..Config::default()
    }
    .share_ports(PROTO_TCP, 23, 23, Policy::RoundRobin)
    .share_ports(PROTO_TCP, 1000, 1999, Policy::RoundRobin)
}

/// A harness where processors `ps` listen on TCP `port`.
pub fn listening(config: Config, port: u16, ps: &[u16]) -> Harness {
    let mut h = Harness::new(config).unwrap();
    for p in ps {
        h.control(*p, ControlMessage::RegisterListener(tcp_key(port)))
            .unwrap();
    }
    h
}
