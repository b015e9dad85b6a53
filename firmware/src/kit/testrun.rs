//! Test-run: classify frames and report each verdict and the time per frame,
//! like Linux's `BPF_PROG_TEST_RUN`. This is a measuring tool, so it reads the
//! host's clock; the firmware itself never does.

use std::time::Instant as WallInstant;

use crate::firmware::Firmware;
use crate::time::Instant;
use crate::tuple::{PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, ip_of};
use crate::verdict::Verdict;
use crate::wire::{ParseOptions, parse_frame, tcp_flags};

/// The verdict of one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameResult {
    /// Position in the input (0-based).
    pub index: usize,
    /// Frame length in bytes.
    pub len: usize,
    /// One-line description of the frame.
    pub summary: String,
    /// The verdict on the first pass.
    pub verdict: Verdict,
}

/// What a test-run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct TestRunReport {
    /// Per-frame verdicts (first pass, state as it evolves frame by frame).
    pub frames: Vec<FrameResult>,
    /// Passes over the frames that were timed.
    pub repeats: u32,
    /// Mean wall-clock nanoseconds per classified frame over the timed passes.
    pub ns_per_frame: f64,
}

/// One-line description of a frame: `tcp 198.18.5.7:40000 > 198.18.0.10:80 [S]`.
pub fn describe_frame(frame: &[u8]) -> String {
    let opts = ParseOptions {
        vlan: crate::wire::VlanPolicy::Accept(Vec::new()),
        verify_ipv4_checksum: false,
        ..Default::default()
    };
    let p = match parse_frame(frame, &opts) {
        Ok(p) => p,
        Err(r) => return format!("malformed ({r})"),
    };
    let Some(ip) = p.ip else {
        return format!("ethertype 0x{:04x}", p.ethertype);
    };
    let (s, d) = (ip_of(&ip.src), ip_of(&ip.dst));
    let frag = match ip.fragment {
        Some(f) => format!(
            " frag id={} off={}{}",
            f.ident,
            f.offset_bytes,
            if f.more { "+" } else { "" }
        ),
        None => String::new(),
    };
    let vlan = p
        .vlan_id()
        .map(|v| format!(" vlan {v}"))
        .unwrap_or_default();
    match (ip.protocol, ip.transport) {
        (PROTO_TCP, Some(t)) => {
            let names = tcp_flags::letters(t.tcp.map(|t| t.flags).unwrap_or(0));
            format!(
                "tcp {s}:{} > {d}:{} [{names}]{frag}{vlan}",
                t.src_port, t.dst_port
            )
        }
        (PROTO_UDP, Some(t)) => format!("udp {s}:{} > {d}:{}{frag}{vlan}", t.src_port, t.dst_port),
        (PROTO_ICMP, _) | (PROTO_ICMPV6, _) => format!("icmp {s} > {d}{frag}{vlan}"),
        (proto, _) => format!("ip proto {proto} {s} > {d}{frag}{vlan}"),
    }
}

/// Classifies `frames` once to record verdicts, then `repeats` more times to
/// time them. All passes run at time `now`, on the same firmware, so state a
/// frame creates (a provisional entry, a round-robin turn) is seen by later
/// frames and later passes.
pub fn test_run(
    fw: &mut Firmware,
    frames: &[Vec<u8>],
    repeats: u32,
    now: Instant,
) -> TestRunReport {
    let results = frames
        .iter()
        .enumerate()
        .map(|(index, f)| FrameResult {
            index,
            len: f.len(),
            summary: describe_frame(f),
            verdict: fw.classify(f, now),
        })
        .collect();
    let mut ns_per_frame = 0.0;
    if repeats > 0 && !frames.is_empty() {
        let start = WallInstant::now();
        let mut kept = 0usize;
        for _ in 0..repeats {
            for f in frames {
                if matches!(fw.classify(f, now), Verdict::Deliver { .. }) {
                    kept += 1;
                }
            }
        }
        let ns = start.elapsed().as_nanos() as f64;
        std::hint::black_box(kept);
        ns_per_frame = ns / (f64::from(repeats) * frames.len() as f64);
    }
    TestRunReport {
        frames: results,
        repeats,
        ns_per_frame,
    }
}
