//! Every malformed-frame class is dropped with its own reason; arbitrary bytes
//! never panic and never break the firmware's invariants; batched and
//! one-by-one classification agree.

mod common;

use std::collections::BTreeSet;

use common::*;
use proptest::prelude::*;
use snet_firmware::control::{ControlMessage, Envelope, TableSnapshot};
use snet_firmware::kit::{PacketBuilder, invariants};
use snet_firmware::wire::{ParseOptions, VlanPolicy, tcp_flags};
use snet_firmware::{Config, DropReason, Firmware, Instant, ProcessorId, Verdict};

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 0x10];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 0x01];

fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&MAC_A);
    f.extend_from_slice(&MAC_B);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in b.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// An IPv4 packet around `l4` (valid header checksum), then `edit` applied
/// before the checksum is computed.
fn ipv4(proto: u8, l4: &[u8], edit: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
    let mut h = vec![
        0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0, 198, 18, 5, 1, 198, 18, 0, 10,
    ];
    let total = (20 + l4.len()) as u16;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h.extend_from_slice(l4);
    edit(&mut h);
    let ihl = usize::from(h[0] & 0x0f) * 4;
    if ihl >= 20 && ihl <= h.len() {
        h[10..12].copy_from_slice(&[0, 0]);
        let c = checksum(&h[..ihl]);
        h[10..12].copy_from_slice(&c.to_be_bytes());
    }
    eth(0x0800, &h)
}

fn ipv6(next: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.push(next);
    h.push(64);
    h.extend_from_slice(
        &"2001:db8::7"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    h.extend_from_slice(
        &"2001:db8::10"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    h.extend_from_slice(payload);
    eth(0x86dd, &h)
}

fn tcp_header(offset_words: u8, flags: u8) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&40000u16.to_be_bytes());
    t[2..4].copy_from_slice(&80u16.to_be_bytes());
    t[12] = offset_words << 4;
    t[13] = flags;
    t
}

fn accept_vlan() -> ParseOptions {
    ParseOptions {
        vlan: VlanPolicy::Accept(vec![100]),
        ..ParseOptions::default()
    }
}

/// (what, parse options, frame, expected reason)
fn cases() -> Vec<(&'static str, ParseOptions, Vec<u8>, DropReason)> {
    let d = ParseOptions::default;
    let v4 = |s: &str, d: &str| PacketBuilder::tcp(s.parse().unwrap(), d.parse().unwrap());
    let good = v4("198.18.5.7:40000", "198.18.0.10:80").build().unwrap();
    let tagged = |vid: u16| {
        v4("198.18.5.7:40000", "198.18.0.10:80")
            .vlan(vid)
            .build()
            .unwrap()
    };
    let mut bad_csum = good.clone();
    bad_csum[14 + 10] ^= 0xff;
    let mut qinq = tagged(100);
    qinq[12..14].copy_from_slice(&0x88a8u16.to_be_bytes());
    qinq[16..18].copy_from_slice(&0x8100u16.to_be_bytes());
    let big = PacketBuilder::tcp(
        "198.18.5.7:1".parse().unwrap(),
        "198.18.0.10:80".parse().unwrap(),
    )
    .payload(&[7; 64]);
    let dest_opts = |next: u8| {
        let mut h = vec![next, 0];
        h.extend_from_slice(&[1, 4, 0, 0, 0, 0]); // PadN
        h
    };
    let mut nine = Vec::new();
    for _ in 0..9 {
        nine.extend_from_slice(&dest_opts(60));
    }
    nine.extend_from_slice(&dest_opts(59));
    let mut order = dest_opts(0);
    order.extend_from_slice(&dest_opts(59));
    let mut udp_short_len = vec![0u8; 8];
    udp_short_len[4..6].copy_from_slice(&4u16.to_be_bytes());
    let mut udp_long_len = vec![0u8; 8];
    udp_long_len[4..6].copy_from_slice(&200u16.to_be_bytes());
    vec![
        ("10 bytes", d(), vec![0; 10], DropReason::TruncatedEthernet),
        (
            "VLAN ethertype, 2 bytes",
            accept_vlan(),
            eth(0x8100, &[0, 100]),
            DropReason::TruncatedVlanTag,
        ),
        (
            "tagged, tags rejected",
            d(),
            tagged(100),
            DropReason::VlanTagged,
        ),
        (
            "VLAN 200 not allowed",
            accept_vlan(),
            tagged(200),
            DropReason::VlanNotAllowed,
        ),
        ("QinQ", accept_vlan(), qinq, DropReason::StackedVlan),
        (
            "unicast to another MAC",
            ParseOptions {
                adapter_mac: Some([2, 0, 0, 0, 0, 0x99]),
                ..d()
            },
            good.clone(),
            DropReason::NotForAdapter,
        ),
        (
            "LLDP",
            d(),
            eth(0x88cc, &[0; 40]),
            DropReason::UnsupportedEthertype,
        ),
        (
            "ARP, 6 bytes",
            d(),
            eth(0x0806, &[0, 1, 8, 0, 6, 4]),
            DropReason::MalformedArp,
        ),
        (
            "IPv4, 10 bytes",
            d(),
            eth(0x0800, &[0x45; 10]),
            DropReason::TruncatedIpv4Header,
        ),
        (
            "IPv4 ethertype, version 6",
            d(),
            ipv4(6, &tcp_header(5, 2), |h| h[0] = 0x65),
            DropReason::BadIpVersion,
        ),
        (
            "IHL 4",
            d(),
            ipv4(6, &tcp_header(5, 2), |h| h[0] = 0x44),
            DropReason::BadIpv4HeaderLength,
        ),
        (
            "IHL 15 past the end",
            d(),
            eth(0x0800, &{
                let mut h = vec![0u8; 24];
                h[0] = 0x4f;
                h
            }),
            DropReason::BadIpv4HeaderLength,
        ),
        (
            "total length past the frame",
            d(),
            ipv4(6, &tcp_header(5, 2), |h| {
                h[2..4].copy_from_slice(&200u16.to_be_bytes())
            }),
            DropReason::BadIpv4TotalLength,
        ),
        (
            "total length below IHL",
            d(),
            ipv4(6, &tcp_header(5, 2), |h| {
                h[2..4].copy_from_slice(&19u16.to_be_bytes())
            }),
            DropReason::BadIpv4TotalLength,
        ),
        (
            "bad header checksum",
            d(),
            bad_csum,
            DropReason::BadIpv4Checksum,
        ),
        (
            "multicast source",
            d(),
            v4("224.0.0.9:1", "198.18.0.10:80").build().unwrap(),
            DropReason::BadSourceAddress,
        ),
        (
            "IPv6 multicast source",
            d(),
            PacketBuilder::udp(
                "[ff02::1]:1".parse().unwrap(),
                "[2001:db8::10]:53".parse().unwrap(),
            )
            .build()
            .unwrap(),
            DropReason::BadSourceAddress,
        ),
        (
            "IPv6, 30 bytes",
            d(),
            eth(0x86dd, &[0x60; 30]),
            DropReason::TruncatedIpv6Header,
        ),
        (
            "IPv6 ethertype, version 4",
            d(),
            eth(0x86dd, &[0x40; 40]),
            DropReason::BadIpVersion,
        ),
        (
            "IPv6 payload length past the frame",
            d(),
            {
                let mut f = ipv6(17, &[0; 8]);
                f[14 + 5] = 99;
                f
            },
            DropReason::BadIpv6PayloadLength,
        ),
        (
            "hop-by-hop cut short",
            d(),
            ipv6(0, &[6, 0, 0, 0]),
            DropReason::TruncatedIpv6ExtHeader,
        ),
        (
            "fragment header cut short",
            d(),
            ipv6(44, &[6, 0, 0, 0]),
            DropReason::TruncatedIpv6ExtHeader,
        ),
        (
            "hop-by-hop after another header",
            d(),
            ipv6(60, &order),
            DropReason::BadIpv6ExtHeaderOrder,
        ),
        (
            "ten extension headers",
            d(),
            ipv6(60, &nine),
            DropReason::TooManyIpv6ExtHeaders,
        ),
        (
            "first fragment, 8 bytes of TCP",
            d(),
            big.build_fragment(0, 8, true).unwrap(),
            DropReason::TinyFragment,
        ),
        (
            "IPv6 first fragment, 8 bytes of TCP",
            d(),
            PacketBuilder::tcp(
                "[2001:db8::7]:1".parse().unwrap(),
                "[2001:db8::10]:80".parse().unwrap(),
            )
            .payload(&[1; 64])
            .build_fragment(0, 8, true)
            .unwrap(),
            DropReason::TinyFragment,
        ),
        (
            "TCP fragment at offset 8",
            d(),
            big.build_fragment(8, 16, true).unwrap(),
            DropReason::OverlappingFragment,
        ),
        (
            "fragment ending past 64 KiB",
            d(),
            ipv4(6, &[0; 16], |h| {
                h[6..8].copy_from_slice(&0x1fffu16.to_be_bytes())
            }),
            DropReason::OverlappingFragment,
        ),
        (
            "TCP, 10 bytes",
            d(),
            ipv4(6, &[0; 10], |_| {}),
            DropReason::TruncatedTcpHeader,
        ),
        (
            "TCP data offset 4",
            d(),
            ipv4(6, &tcp_header(4, 2), |_| {}),
            DropReason::BadTcpDataOffset,
        ),
        (
            "TCP data offset past the end",
            d(),
            ipv4(6, &tcp_header(15, 2), |_| {}),
            DropReason::BadTcpDataOffset,
        ),
        (
            "SYN+FIN",
            d(),
            ipv4(6, &tcp_header(5, tcp_flags::SYN | tcp_flags::FIN), |_| {}),
            DropReason::InvalidTcpFlags,
        ),
        (
            "SYN+RST",
            d(),
            ipv4(6, &tcp_header(5, tcp_flags::SYN | tcp_flags::RST), |_| {}),
            DropReason::InvalidTcpFlags,
        ),
        (
            "UDP, 5 bytes",
            d(),
            ipv4(17, &[0; 5], |_| {}),
            DropReason::TruncatedUdpHeader,
        ),
        (
            "UDP length 4",
            d(),
            ipv4(17, &udp_short_len, |_| {}),
            DropReason::BadUdpLength,
        ),
        (
            "UDP length past the datagram",
            d(),
            ipv4(17, &udp_long_len, |_| {}),
            DropReason::BadUdpLength,
        ),
        (
            "ICMP, 2 bytes",
            d(),
            ipv4(1, &[8, 0], |_| {}),
            DropReason::TruncatedIcmp,
        ),
        (
            "ICMPv6, 2 bytes",
            d(),
            ipv6(58, &[128, 0]),
            DropReason::TruncatedIcmp,
        ),
    ]
}

/// Reasons that need state rather than a malformed frame; each has its own test.
const STATEFUL: [DropReason; 4] = [
    DropReason::ConnectionTableFull,
    DropReason::ResetForOrphan,
    DropReason::NoLiveProcessor,
    DropReason::Filtered,
];

#[test]
fn every_malformed_class_is_dropped_with_its_reason() {
    let mut covered = BTreeSet::new();
    for (what, opts, frame, reason) in cases() {
        let mut fw = Firmware::new(Config {
            parse: opts,
            ..Config::default()
        })
        .unwrap();
        let v = fw.classify(&frame, Instant::ZERO);
        assert_eq!(v, Verdict::Drop(reason), "{what}");
        assert_eq!(fw.counters().dropped(reason), 1, "{what}");
        covered.insert(reason);
    }
    let all: BTreeSet<_> = DropReason::ALL
        .iter()
        .copied()
        .filter(|r| !STATEFUL.contains(r))
        .collect();
    assert_eq!(covered, all, "a drop reason has no malformed-frame case");
}

#[test]
fn well_formed_relatives_of_the_cases_pass() {
    // Guards against the cases above passing for the wrong reason.
    let mut fw = Firmware::new(Config {
        parse: accept_vlan(),
        ..Config::default()
    })
    .unwrap();
    let ok = [
        ipv4(6, &tcp_header(5, 2), |_| {}),
        ipv4(
            17,
            &{
                let mut u = vec![0u8; 8];
                u[4..6].copy_from_slice(&8u16.to_be_bytes());
                u
            },
            |_| {},
        ),
        ipv4(1, &[8, 0, 0, 0], |_| {}),
        ipv6(60, &{
            let mut h = vec![17, 0, 1, 4, 0, 0, 0, 0];
            h.extend_from_slice(&[0, 1, 0, 2, 0, 8, 0, 0]);
            h
        }),
        ipv6(58, &[128, 0, 0, 0]),
        PacketBuilder::tcp(
            "198.18.5.7:40000".parse().unwrap(),
            "198.18.0.10:80".parse().unwrap(),
        )
        .vlan(100)
        .build()
        .unwrap(),
    ];
    for f in ok {
        assert!(
            matches!(fw.classify(&f, Instant::ZERO), Verdict::Master { .. }),
            "{f:02x?}"
        );
    }
}

#[test]
fn no_live_processor_drops_everything() {
    let mut fw = Firmware::new(Config::default()).unwrap();
    let nobody = TableSnapshot {
        master: None,
        live: vec![false; 4],
        capacity: vec![None; 4],
        ..TableSnapshot::default()
    };
    fw.apply(
        &Envelope::new(ProcessorId(0), ControlMessage::TableDump(nobody)).to_bytes(),
        Instant::ZERO,
    )
    .unwrap();
    assert_eq!(
        fw.classify(&syn(0, 80), Instant::ZERO),
        Verdict::Drop(DropReason::NoLiveProcessor)
    );
    // A processor coming back becomes master.
    fw.apply(
        &Envelope::new(ProcessorId(2), ControlMessage::ProcessorUp(ProcessorId(2))).to_bytes(),
        Instant::ZERO,
    )
    .unwrap();
    assert_eq!(fw.master(), Some(ProcessorId(2)));
}

fn test_frames() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = cases().into_iter().map(|c| c.2).collect();
    for n in 0..8 {
        v.push(syn(n, 23));
        v.push(ack(n, 23));
        v.push(tcp(n, 80, tcp_flags::SYN));
    }
    v.push(
        PacketBuilder::udp(client(1), server(5000))
            .payload(&[1; 300])
            .build()
            .unwrap(),
    );
    v.extend(
        PacketBuilder::udp(client(2), server(23))
            .payload(&[1; 300])
            .ident(9)
            .build_fragments(96)
            .unwrap(),
    );
    v
}

fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let frames = test_frames();
    (
        0..frames.len(),
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        any::<usize>(),
    )
        .prop_map(move |(i, edits, cut)| {
            let mut f = frames[i].clone();
            for (at, b) in edits {
                if !f.is_empty() {
                    let n = f.len();
                    f[at % n] = b;
                }
            }
            let keep = if f.is_empty() { 0 } else { cut % (f.len() + 1) };
            if keep < f.len() && cut % 3 == 0 {
                f.truncate(keep);
            }
            f
        })
}

fn fresh(config: Config) -> Firmware {
    let mut fw = Firmware::new(config).unwrap();
    for p in [1u16, 2, 3] {
        let m = Envelope::new(
            ProcessorId(p),
            ControlMessage::RegisterListener(tcp_key(23)),
        );
        fw.apply(&m.to_bytes(), Instant::ZERO).unwrap();
    }
    fw
}

proptest! {
    /// The proptest twin of the `frames` fuzz target.
    #[test]
    fn arbitrary_frames_keep_the_invariants(
        frames in proptest::collection::vec(prop_oneof![mutated(), proptest::collection::vec(any::<u8>(), 0..128)], 1..40),
        vlan in any::<bool>(),
    ) {
        let parse = if vlan { accept_vlan() } else { ParseOptions::default() };
        let mut fw = fresh(Config { parse, provisional_capacity: 4, ..shared_config() });
        for (i, f) in frames.iter().enumerate() {
            invariants::check_frame(&mut fw, f, Instant::from_millis(i as u64 * 300)).map_err(TestCaseError::fail)?;
        }
    }

    /// The same with a tree that has a `listeners` node and no `connections`
    /// node before it, and an established connection in the table: repeated
    /// SYNs must neither replace entries nor leak provisional counts.
    #[test]
    fn listeners_without_connections_keep_the_invariants(
        frames in proptest::collection::vec(prop_oneof![mutated(), (0u16..4).prop_map(|n| syn(n, 23))], 1..40),
    ) {
        use snet_firmware::filter::{FilterTree, NodeSpec};
        let mut fw = fresh(Config { provisional_capacity: 4, ..shared_config() });
        let tree = FilterTree::compile("listeners-only", &NodeSpec::listeners(NodeSpec::Master))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        fw.set_filter(Box::new(tree));
        let add = Envelope::new(ProcessorId(5), ControlMessage::AddConnection(tuple(1, 23)));
        fw.apply(&add.to_bytes(), Instant::ZERO).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (i, f) in frames.iter().enumerate() {
            invariants::check_frame(&mut fw, f, Instant::from_millis(i as u64 * 300)).map_err(TestCaseError::fail)?;
            let e = fw.connection(&tuple(1, 23));
            prop_assert_eq!(e.map(|e| (e.owner, e.state)), Some((ProcessorId(5), snet_firmware::conntable::EntryState::Established)));
        }
        fw.poll(Instant::from_millis(3_600_000));
        prop_assert_eq!(fw.provisional_count(), 0);
        prop_assert_eq!(fw.connections().len(), 1);
    }

    /// Batched classification gives the same verdicts and counters, and
    /// remembers the same for resets: a processor failure then queues the
    /// same RSTs.
    #[test]
    fn batch_equals_one_by_one(frames in proptest::collection::vec(mutated(), 1..70)) {
        let cfg = Config { provisional_capacity: 6, ..shared_config() };
        let (mut a, mut b) = (fresh(cfg.clone()), fresh(cfg));
        // Clients 4..8 have established connections to P1 and P2.
        for fw in [&mut a, &mut b] {
            for n in 4..8u16 {
                let m = Envelope::new(ProcessorId(1 + n % 2), ControlMessage::AddConnection(tuple(n, 23)));
                fw.apply(&m.to_bytes(), Instant::ZERO).map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
        }
        let refs: Vec<&[u8]> = frames.iter().map(|f| f.as_slice()).collect();
        let mut batch = Vec::new();
        b.classify_batch(&refs, Instant::ZERO, &mut batch);
        let single: Vec<Verdict> = frames.iter().map(|f| a.classify(f, Instant::ZERO)).collect();
        prop_assert_eq!(batch, single);
        prop_assert_eq!(a.counters(), b.counters());
        prop_assert_eq!(a.snapshot(), b.snapshot());
        let remembered = |fw: &Firmware| {
            let mut v: Vec<_> = fw.connections().iter_reset_info().collect();
            v.sort_unstable();
            v
        };
        prop_assert_eq!(remembered(&a), remembered(&b));
        let mut resets = Vec::new();
        for fw in [&mut a, &mut b] {
            fw.processor_failed(ProcessorId(1), Instant::ZERO);
            let mut frames = fw.take_frames();
            for f in &frames {
                invariants::check_reset(f).map_err(TestCaseError::fail)?;
            }
            frames.sort_unstable();
            resets.push(frames);
        }
        prop_assert_eq!(&resets[0], &resets[1]);
        prop_assert_eq!(a.counters(), b.counters());
    }

    /// The proptest twin of the `control` fuzz target.
    #[test]
    fn arbitrary_control_bytes_keep_the_invariants(
        msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 1..20),
        heads in proptest::collection::vec((1u8..=10, 0u16..5), 20),
    ) {
        let mut fw = fresh(shared_config());
        for (i, body) in msgs.iter().enumerate() {
            // Half the messages get a valid header so the body parsers are reached.
            let mut bytes = body.clone();
            if i % 2 == 0 {
                let (kind, sender) = heads[i % heads.len()];
                let mut h = vec![b'S', b'F', 1, kind];
                h.extend_from_slice(&sender.to_be_bytes());
                h.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
                h.extend_from_slice(&(body.len() as u32).to_be_bytes());
                h.extend_from_slice(body);
                bytes = h;
            }
            invariants::check_control(&mut fw, &bytes, Instant::ZERO).map_err(TestCaseError::fail)?;
        }
    }
}
