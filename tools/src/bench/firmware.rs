//! Firmware figures: classification of real frames against a table of
//! 1,000,000 established connections and 1,000 listener groups.
//!
//! - `firmware.classify_mpps_1m_conns`: frames per second (in millions)
//!   through `Firmware::classify_batch` — parse Ethernet/IP/TCP, look the
//!   5-tuple up, produce the verdict — one frame per connection, the frames in
//!   a random order (75% IPv4, 25% IPv6, 54/74-byte ACK segments).
//! - `firmware.classify_vs_std_hashmap`: that rate against lookups of the same
//!   5-tuples, in the same order, in a `std::collections::HashMap<FiveTuple,
//!   u16>` (SipHash) holding the same 1,000,000 keys, in the same run.
//! - `firmware.classify_single_vs_std_hashmap`: the same frames one at a
//!   time through `Firmware::classify` (no batching), against the same
//!   `HashMap` lookups.
//!
//! Every verdict is checked against the owner its connection was registered
//! with; a frame delivered anywhere else is logged as an error.
//! - `firmware.bytes_per_connection`: connection-table memory (index and
//!   records, as allocated for the configured capacity) per established
//!   connection.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use snet_firmware::control::{ControlMessage, Envelope};
use snet_firmware::kit::PacketBuilder;
use snet_firmware::listener::ListenerKey;
use snet_firmware::tuple::PROTO_TCP;
use snet_firmware::wire::tcp_flags;
use snet_firmware::{Config, Firmware, FiveTuple, Instant, Policy, ProcessorId, Verdict};

use super::{Budget, Figure, best_rate};

/// Established connections in the table.
const CONNECTIONS: usize = 1_000_000;
/// Listener groups registered.
const GROUPS: u16 = 1_000;
/// Processors in the cluster.
const PROCESSORS: u16 = 16;
/// Bytes between frames in the frame buffer.
const STRIDE: usize = 80;
/// Frames per measured call.
const CHUNK: usize = 65_536;

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Client `i`'s socket: IPv4 in 198.18.0.0/15 or IPv6 in 2001:db8::/32.
fn client(i: usize) -> SocketAddr {
    let port = 1024 + (i % 60_000) as u16;
    let host = (i / 60_000) as u32;
    if i % 4 == 3 {
        SocketAddr::new(
            IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0xdb8,
                0,
                0,
                0,
                0,
                (host >> 16) as u16,
                host as u16,
            )),
            port,
        )
    } else {
        let [_, _, b, c] = host.to_be_bytes();
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 19, b, c)), port)
    }
}

fn server(i: usize) -> SocketAddr {
    let port = 10_000 + (i % usize::from(GROUPS)) as u16;
    if i % 4 == 3 {
        SocketAddr::new(
            IpAddr::V6("2001:db8:ffff::10".parse().unwrap_or(Ipv6Addr::LOCALHOST)),
            port,
        )
    } else {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 10)), port)
    }
}

struct Setup {
    fw: Firmware,
    frames: Vec<u8>,
    lens: Vec<u8>,
    keys: Vec<FiveTuple>,
    /// The registered owner of each frame's connection, in frame order.
    owners: Vec<u16>,
    map: HashMap<FiveTuple, u16>,
}

/// Whether `v` delivers the frame to processor `owner`.
fn delivered_to(v: &Verdict, owner: u16) -> bool {
    matches!(v, Verdict::Deliver { processor, .. } if processor.0 == owner)
}

/// Verdicts that do not deliver the frame to its connection's owner
/// (`owners[i]` is the owner for `verdicts[i]`).
fn misdelivered(verdicts: &[Verdict], owners: &[u16]) -> u64 {
    verdicts
        .iter()
        .zip(owners)
        .filter(|(v, o)| !delivered_to(v, **o))
        .count() as u64
}

fn setup(connections: usize) -> Option<Setup> {
    let config = Config {
        processor_count: PROCESSORS,
        connection_capacity: connections,
        provisional_capacity: 16_384,
        ..Config::default()
    }
    .share_ports(PROTO_TCP, 10_000, 10_000 + GROUPS - 1, Policy::RoundRobin);
    let mut fw = Firmware::new(config).ok()?;
    for g in 0..GROUPS {
        for p in [g % PROCESSORS, (g + 1) % PROCESSORS] {
            let key = ListenerKey {
                protocol: PROTO_TCP,
                addr: None,
                port: 10_000 + g,
            };
            fw.apply_envelope(
                &Envelope::new(ProcessorId(p), ControlMessage::RegisterListener(key)),
                Instant::ZERO,
            )
            .ok()?;
        }
    }
    let mut order: Vec<usize> = (0..connections).collect();
    let mut rng = XorShift(0x5eed_0ff1_7e12);
    for i in (1..order.len()).rev() {
        order.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    let mut map = HashMap::with_capacity(connections);
    for i in 0..connections {
        let (c, s) = (client(i), server(i));
        let t = FiveTuple::tcp(c.ip(), c.port(), s.ip(), s.port());
        let owner = (i % usize::from(PROCESSORS)) as u16;
        fw.apply_envelope(
            &Envelope::new(ProcessorId(owner), ControlMessage::AddConnection(t)),
            Instant::ZERO,
        )
        .ok()?;
        map.insert(t, owner);
    }
    let mut frames = vec![0u8; connections * STRIDE];
    let mut lens = Vec::with_capacity(connections);
    let mut keys = Vec::with_capacity(connections);
    let mut owners = Vec::with_capacity(connections);
    for (slot, &i) in order.iter().enumerate() {
        let (c, s) = (client(i), server(i));
        let f = PacketBuilder::tcp(c, s)
            .flags(tcp_flags::ACK)
            .seq(i as u32)
            .ack_number(7)
            .build()
            .ok()?;
        frames[slot * STRIDE..slot * STRIDE + f.len()].copy_from_slice(&f);
        lens.push(f.len() as u8);
        let t = FiveTuple::tcp(c.ip(), c.port(), s.ip(), s.port());
        owners.push(*map.get(&t)?);
        keys.push(t);
    }
    Some(Setup {
        fw,
        frames,
        lens,
        keys,
        owners,
        map,
    })
}

/// The firmware section of `snet bench`.
pub fn figures(budget: Budget) -> Vec<Figure> {
    let Some(mut s) = setup(CONNECTIONS) else {
        log::error!("firmware bench: setting up the 1M-connection table failed");
        return Vec::new();
    };
    let refs: Vec<&[u8]> = s
        .lens
        .iter()
        .enumerate()
        .map(|(i, l)| &s.frames[i * STRIDE..i * STRIDE + usize::from(*l)])
        .collect();

    let mut cursor = 0usize;
    let mut out = Vec::with_capacity(CHUNK);
    let mut misclassified = 0u64;
    let batched = best_rate(budget, || {
        let end = (cursor + CHUNK).min(refs.len());
        s.fw.classify_batch(&refs[cursor..end], Instant::ZERO, &mut out);
        misclassified += misdelivered(&out, &s.owners[cursor..end]);
        let n = (end - cursor) as u64;
        cursor = if end == refs.len() { 0 } else { end };
        n
    });

    let mut cursor = 0usize;
    let single = best_rate(budget, || {
        let end = (cursor + CHUNK).min(refs.len());
        for (f, owner) in refs[cursor..end].iter().zip(&s.owners[cursor..end]) {
            if !delivered_to(&s.fw.classify(f, Instant::ZERO), *owner) {
                misclassified += 1;
            }
        }
        let n = (end - cursor) as u64;
        cursor = if end == refs.len() { 0 } else { end };
        n
    });

    let mut cursor = 0usize;
    let mut sum = 0u64;
    let hashmap = best_rate(budget, || {
        let end = (cursor + CHUNK).min(s.keys.len());
        for k in &s.keys[cursor..end] {
            sum += u64::from(s.map.get(k).copied().unwrap_or(u16::MAX));
        }
        let n = (end - cursor) as u64;
        cursor = if end == s.keys.len() { 0 } else { end };
        n
    });
    black_box(sum);
    if misclassified > 0 {
        log::error!(
            "firmware bench: {misclassified} frames were not delivered to their connection's owner"
        );
    }

    let bytes = s.fw.connections().memory_bytes() as f64 / s.fw.established_count().max(1) as f64;
    vec![
        Figure::plain("firmware.classify_mpps_1m_conns", batched / 1e6, "Mpps"),
        Figure::versus(
            "firmware.classify_vs_std_hashmap",
            batched,
            "frames/s",
            hashmap,
        )
        .with_target(2.0),
        Figure::versus(
            "firmware.classify_single_vs_std_hashmap",
            single,
            "frames/s",
            hashmap,
        ),
        Figure::plain("firmware.bytes_per_connection", bytes, "B").with_target(64.0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_are_checked_against_the_real_owner() {
        let s = setup(2_000).expect("setup");
        let mut fw = s.fw;
        let mut out = Vec::new();
        let refs: Vec<&[u8]> = s
            .lens
            .iter()
            .enumerate()
            .map(|(i, l)| &s.frames[i * STRIDE..i * STRIDE + usize::from(*l)])
            .collect();
        fw.classify_batch(&refs, Instant::ZERO, &mut out);
        assert_eq!(misdelivered(&out, &s.owners), 0);
        // Delivered, but each to the wrong processor: every one is counted.
        let wrong: Vec<u16> = s.owners.iter().map(|o| (o + 1) % PROCESSORS).collect();
        assert_eq!(misdelivered(&out, &wrong), out.len() as u64);
        assert_eq!(
            misdelivered(
                &[Verdict::Master {
                    processor: ProcessorId(0)
                }],
                &[0]
            ),
            1
        );
    }
}
