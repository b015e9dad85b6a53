//! The timeline of one connection across client, LAN, adapter, fabric and
//! processor (`snet trace`).
//!
//! The scenario runs with captures of every adapter's LAN port (and, when
//! asked, of the fabric), and with every connection's record kept. Without
//! the fabric the run is exactly the one `snet run` makes (same trace
//! hash); the fabric capture needs every packet, so it turns the fabric's
//! transaction-level bursts off and the run is the one `snet run --pcap`
//! makes, which can differ in detail. For the chosen connection the
//! timeline has:
//! - the client's view from the run's record: when it started connecting,
//!   when the handshake completed, which processor served it, how it ended;
//! - every frame of its 4-tuple on an adapter's port (both directions),
//!   with TCP flags, sequence and acknowledgement numbers and length;
//! - with the fabric, for each frame the packet that carried it between the adapter
//!   and a processor's memory: the DMA write of an inbound frame into the
//!   processor's posted buffer, the read response that brought an outbound
//!   frame from the processor's buffer to the adapter. A frame is matched
//!   to the packet whose payload starts with the frame's first bytes, the
//!   nearest in time on the right side of the frame (inbound: after it,
//!   outbound: before it); a frame the firmware dropped or answered itself
//!   has no packet;
//! - the scenario's faults.
//!
//! All times are scenario time (0 = every listener registered).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::Serialize;
use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket,
};
use snet_fabric::packet::Packet;
use snet_firmware::kit::pcap::parse_pcap_any;
use snet_nic_model::capture::FABRIC_PSEUDO_LEN;

use crate::run::ledger::{Conn, End};
use crate::run::report::{Report, RunDetail};
use crate::run::{RunOptions, run};
use crate::scenario::model::Scenario;

/// Frame bytes compared to find the fabric packet that carried a frame.
const MATCH_BYTES: usize = 64;

/// Frames of a connection still counted after its end (its last ACK, a
/// FIN repeated).
const END_MARGIN_NS: u64 = 200_000_000;

/// Adapters' fabric endpoint IDs start here (processors are below).
const ADAPTER_IDS: u32 = 0x1000;

/// Which connection to follow.
#[derive(Debug, Clone, Default)]
pub enum Pick {
    /// The first connection of a processor that failed which was reset (or
    /// else the first of a failed processor, or else the first of all).
    #[default]
    Auto,
    /// Connection number N (the order clients opened them, from 0).
    Number(u32),
    /// The connection from this client address and port.
    Client(SocketAddr),
}

/// One line of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Scenario time, ns (negative never: the clients start at 0 or later).
    pub at_ns: u64,
    /// Where: `client`, `lan0 port`, `fabric x`, `processor 2`, `fault`.
    pub place: String,
    /// What happened.
    pub what: String,
}

/// The timeline of one connection.
#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    /// The scenario's name.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// The run's trace hash (the same as `snet run` of the file and seed).
    pub trace_hash: String,
    /// The connection's number.
    pub connection: u32,
    /// Connections the run opened.
    pub connections: u32,
    /// The client's address.
    pub client: String,
    /// The address it connected to.
    pub server: String,
    /// The processor that served it, if any did.
    pub processor: Option<u32>,
    /// Frames of the connection on the adapters' ports.
    pub frames: u64,
    /// Of them, frames matched to a fabric packet (with the fabric
    /// captured).
    pub frames_on_fabric: Option<u64>,
    /// The events, in time order.
    pub events: Vec<Event>,
}

impl Trace {
    /// As JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The readable timeline.
    pub fn text(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "connection {} of {} in {} (seed {}, trace_hash {}): {} → {}, {}",
            self.connection,
            self.connections,
            self.scenario,
            self.seed,
            self.trace_hash,
            self.client,
            self.server,
            match self.processor {
                Some(p) => format!("served by processor {p}"),
                None => "no processor served it".to_string(),
            }
        );
        let _ = match self.frames_on_fabric {
            Some(n) => writeln!(
                o,
                "{} frames on the adapters' ports, {n} of them matched to the fabric packet that carried them (the fabric timed packet by packet, as with snet run --pcap)\n",
                self.frames
            ),
            None => writeln!(
                o,
                "{} frames on the adapters' ports (add --fabric for the fabric packets that carried them)\n",
                self.frames
            ),
        };
        let w = self
            .events
            .iter()
            .map(|e| e.place.chars().count())
            .max()
            .unwrap_or(6)
            .max(6);
        let _ = writeln!(o, "{:>14}  {:<w$}  what", "time", "where");
        for e in &self.events {
            let _ = writeln!(
                o,
                "{:>14}  {:<w$}  {}",
                crate::run::report::fmt_ns(e.at_ns),
                e.place,
                e.what
            );
        }
        o
    }
}

/// A TCP segment's fields, from a captured Ethernet frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    len: usize,
}

fn flags_of(t: &TcpPacket<&[u8]>) -> String {
    let mut v = Vec::new();
    for (on, name) in [
        (t.syn(), "SYN"),
        (t.fin(), "FIN"),
        (t.rst(), "RST"),
        (t.psh(), "PSH"),
        (t.ack(), "ACK"),
    ] {
        if on {
            v.push(name);
        }
    }
    v.join("|")
}

/// The TCP segment in an Ethernet frame, if it holds one, the flags as
/// text, and the frame's length without the padding a short frame gets on
/// the wire.
fn segment(frame: &[u8]) -> Option<(Segment, String, usize)> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let (src, dst, l4, unpadded): (IpAddr, IpAddr, &[u8], usize) = match eth.ethertype() {
        EthernetProtocol::Ipv4 => {
            let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
            if ip.next_header() != IpProtocol::Tcp {
                return None;
            }
            let hl = usize::from(ip.header_len());
            let total = usize::from(ip.total_len()).min(eth.payload().len());
            (
                IpAddr::V4(ip.src_addr()),
                IpAddr::V4(ip.dst_addr()),
                eth.payload().get(hl..total)?,
                14 + total,
            )
        }
        EthernetProtocol::Ipv6 => {
            let ip = Ipv6Packet::new_checked(eth.payload()).ok()?;
            if ip.next_header() != IpProtocol::Tcp {
                return None;
            }
            let end = (40 + usize::from(ip.payload_len())).min(eth.payload().len());
            (
                IpAddr::V6(ip.src_addr()),
                IpAddr::V6(ip.dst_addr()),
                eth.payload().get(40..end)?,
                14 + end,
            )
        }
        _ => return None,
    };
    let t = TcpPacket::new_checked(l4).ok()?;
    let len = l4.len().saturating_sub(usize::from(t.header_len()));
    Some((
        Segment {
            src: SocketAddr::new(src, t.src_port()),
            dst: SocketAddr::new(dst, t.dst_port()),
            seq: t.seq_number().0 as u32,
            ack: t.ack_number().0 as u32,
            len,
        },
        flags_of(&t),
        unpadded,
    ))
}

/// A fabric packet of the capture.
struct FabricRecord {
    at: u64,
    plane: u8,
    src: u32,
    dst: u32,
    address: u64,
    response: bool,
    /// Payload bytes.
    len: usize,
    /// The first [`MATCH_BYTES`] of them.
    head: Vec<u8>,
    used: bool,
}

fn endpoint_name(id: u32, adapters: &[String]) -> String {
    if id >= ADAPTER_IDS {
        adapters
            .get((id - ADAPTER_IDS) as usize)
            .cloned()
            .unwrap_or_else(|| format!("endpoint {id:#x}"))
    } else if id >= 1 {
        format!("processor {}", id - 1)
    } else {
        format!("endpoint {id}")
    }
}

fn pick(detail: &RunDetail, report: &Report, p: &Pick) -> Result<u32, String> {
    let n = detail.conns.len() as u32;
    if n == 0 {
        return Err("the run opened no connection: nothing to trace".into());
    }
    match p {
        Pick::Number(k) if *k < n => Ok(*k),
        Pick::Number(k) => Err(format!(
            "connection {k} does not exist: the run opened {n} (0..={})",
            n - 1
        )),
        Pick::Client(a) => detail
            .conns
            .iter()
            .position(|c| c.local == *a)
            .map(|i| i as u32)
            .ok_or_else(|| format!("no connection came from {a}")),
        Pick::Auto => {
            let failed: Vec<u32> = report
                .processors
                .iter()
                .filter(|p| p.failed_at_ns.is_some())
                .map(|p| p.processor)
                .collect();
            let of_failed = |c: &Conn| c.owner.is_some_and(|o| failed.contains(&o));
            let k = detail
                .conns
                .iter()
                .position(|c| of_failed(c) && matches!(c.end, Some((End::Reset, _))))
                .or_else(|| detail.conns.iter().position(of_failed));
            Ok(k.unwrap_or(0) as u32)
        }
    }
}

fn client_events(c: &Conn, t0: u64) -> Vec<Event> {
    let at = |i: snet_fabric::time::Instant| i.as_ns().saturating_sub(t0);
    let mut v = vec![Event {
        at_ns: at(c.opened),
        place: "client".into(),
        what: format!("starts connecting from {} to {}", c.local, c.remote),
    }];
    if let Some(t) = c.established {
        v.push(Event {
            at_ns: at(t),
            place: "client".into(),
            what: "handshake complete".into(),
        });
    }
    if let Some((end, t)) = c.end {
        v.push(Event {
            at_ns: at(t),
            place: "client".into(),
            what: match end {
                End::Completed => format!(
                    "closed in order: {} requests answered, {} B sent, {} B received",
                    c.requests, c.bytes_sent, c.bytes_received
                ),
                End::Reset => format!(
                    "reset after {} requests answered; {} B owed",
                    c.requests, c.owed
                ),
                End::Failed => "the connection attempt failed".into(),
            },
        });
    }
    v
}

/// How to trace.
#[derive(Debug, Clone, Default)]
pub struct TraceOptions {
    /// Replaces the scenario's seed.
    pub seed: Option<u64>,
    /// Which connection.
    pub pick: Pick,
    /// Also capture the fabric and show the packet that carried each frame
    /// (the run is then timed packet by packet).
    pub fabric: bool,
    /// Where the scenario's relative paths (a filter tree) start.
    pub base_dir: Option<PathBuf>,
}

/// Runs the scenario with captures and returns the timeline of one
/// connection. Captures go to a temporary directory that is removed.
pub fn trace(s: &Scenario, o: &TraceOptions) -> Result<Trace, String> {
    let dir = private_dir()?;
    let result = trace_in(s, o, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

static TMP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A new directory only this user can enter, for the captures: made with
/// mode 0700 and never one that existed before (so nobody else can have
/// put files or links in it).
fn private_dir() -> Result<PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    let mut last = String::new();
    for _ in 0..64 {
        let dir = base.join(format!(
            "snet-trace-{}-{}",
            std::process::id(),
            TMP.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) => last = format!("{}: {e}", dir.display()),
        }
    }
    Err(format!("cannot make a directory for the captures: {last}"))
}

fn trace_in(s: &Scenario, o: &TraceOptions, dir: &std::path::Path) -> Result<Trace, String> {
    let report = run(
        s,
        RunOptions {
            seed: o.seed,
            pcap: Some(dir.to_path_buf()),
            pcap_lan_only: !o.fabric,
            base_dir: o.base_dir.clone(),
            keep_connections: true,
            ..RunOptions::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let detail = report
        .detail
        .as_ref()
        .ok_or("the run kept no connection records")?;
    let k = pick(detail, &report, &o.pick)?;
    let c = &detail.conns[k as usize];
    let t0 = detail.t0.as_ns();
    let adapters: Vec<String> = s.adapters.iter().map(|a| a.name.clone()).collect();
    let mut events = client_events(c, t0);
    if let Some(p) = c.owner {
        let at = c.established.map_or(0, |t| t.as_ns().saturating_sub(t0));
        events.push(Event {
            at_ns: at,
            place: format!("processor {p}"),
            what: "serves it (its application took the connection)".into(),
        });
    }
    for f in &report.faults {
        events.push(Event {
            at_ns: f.at_ns,
            place: "fault".into(),
            what: format!("{} ({})", f.action, f.outcome),
        });
    }
    let read = |name: &str| -> Result<Vec<snet_firmware::kit::pcap::PcapRecord>, String> {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        parse_pcap_any(&bytes)
            .map(|(_, records)| records)
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    let mut fabric: Vec<FabricRecord> = if o.fabric {
        read("fabric.pcap")?
    } else {
        Vec::new()
    }
    .into_iter()
    .filter_map(|r| {
        let pkt = r.data.get(FABRIC_PSEUDO_LEN..)?;
        let p = Packet::new_checked(pkt).ok()?;
        // Frames cross between an adapter and a processor: keep only
        // those packets, and only the bytes a match compares.
        if p.src_id() < ADAPTER_IDS && p.dst_id() < ADAPTER_IDS {
            return None;
        }
        let payload = p.payload();
        Some(FabricRecord {
            at: r.ts_nanos,
            plane: r.data[1],
            src: p.src_id(),
            dst: p.dst_id(),
            address: p.address().0,
            response: p.is_response(),
            len: payload.len(),
            head: payload[..payload.len().min(MATCH_BYTES)].to_vec(),
            used: false,
        })
    })
    .collect();
    let (mut frames, mut on_fabric) = (0u64, 0u64);
    let first_ns = c.opened.as_ns();
    let last_ns = c
        .end
        .map_or(u64::MAX, |(_, t)| t.as_ns().saturating_add(END_MARGIN_NS));
    for (a, name) in adapters.iter().enumerate() {
        for r in read(&format!("{name}.pcap"))? {
            let Some((seg, flags, unpadded)) = segment(&r.data) else {
                continue;
            };
            let inbound = seg.src == c.local && seg.dst == c.remote;
            let outbound = seg.dst == c.local && seg.src == c.remote;
            // The same 4-tuple can come back later (client ports wrap):
            // only frames from the connection's start to shortly after its
            // end are its own.
            if (!inbound && !outbound) || r.ts_nanos < first_ns || r.ts_nanos > last_ns {
                continue;
            }
            frames += 1;
            let at = r.ts_nanos.saturating_sub(t0);
            let port_event = Event {
                at_ns: at,
                place: format!("{name} port"),
                what: format!(
                    "{} {flags} seq {} ack {} len {} ({} B frame)",
                    if inbound {
                        "in from the client:"
                    } else {
                        "out to the client:"
                    },
                    seg.seq,
                    seg.ack,
                    seg.len,
                    r.data.len()
                ),
            };
            let key = &r.data[..unpadded.min(r.data.len()).min(MATCH_BYTES)];
            if inbound {
                events.push(port_event.clone());
            }
            let adapter_id = ADAPTER_IDS + a as u32;
            let found = if inbound {
                fabric.iter_mut().find(|f| {
                    !f.used
                        && f.at >= r.ts_nanos
                        && f.src == adapter_id
                        && !f.response
                        && f.head.starts_with(key)
                })
            } else {
                fabric.iter_mut().rev().find(|f| {
                    !f.used
                        && f.at <= r.ts_nanos
                        && f.dst == adapter_id
                        && f.response
                        && f.head.starts_with(key)
                })
            };
            if let Some(f) = found {
                f.used = true;
                on_fabric += 1;
                events.push(Event {
                    at_ns: f.at.saturating_sub(t0),
                    place: format!("fabric {}", if f.plane == 0 { "x" } else { "y" }),
                    what: if inbound {
                        format!(
                            "{} writes it into {}'s buffer (address {:#x}, {} B in this packet)",
                            endpoint_name(f.src, &adapters),
                            endpoint_name(f.dst, &adapters),
                            f.address,
                            f.len
                        )
                    } else {
                        format!(
                            "{} reads it from {}'s buffer (read response, {} B in this packet)",
                            endpoint_name(f.dst, &adapters),
                            endpoint_name(f.src, &adapters),
                            f.len
                        )
                    },
                });
            }
            if outbound {
                events.push(port_event);
            }
        }
    }
    // Time order; at one instant, the order they were added in (a stable
    // sort): an inbound frame's port before its fabric packet, an outbound
    // frame's fabric packet before its port.
    events.sort_by_key(|e| e.at_ns);
    Ok(Trace {
        scenario: report.scenario.clone(),
        seed: report.seed,
        trace_hash: report.trace_hash.clone(),
        connection: k,
        connections: detail.conns.len() as u32,
        client: c.local.to_string(),
        server: c.remote.to_string(),
        processor: c.owner,
        frames,
        frames_on_fabric: o.fabric.then_some(on_fabric),
        events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUICK: &str = "name: t\nduration: 6ms\nprocessors: { count: 2 }\napps:\n  - { model: monolithic, port: 2323 }\nclients:\n  - { count: 2, target: \"198.18.0.10:2323\", request: 64B, response: 3000B, requests_per_connection: 20, think: 1ms }\nfaults:\n  - { at: 3ms, fail: processor 1 }\n";

    #[test]
    fn a_connection_is_followed_from_client_to_processor_and_back() {
        let s = Scenario::from_yaml_str(QUICK, "t.yaml").unwrap();
        let t = trace(
            &s,
            &TraceOptions {
                pick: Pick::Number(0),
                fabric: true,
                ..TraceOptions::default()
            },
        )
        .unwrap();
        assert_eq!(t.connection, 0);
        assert!(t.connections >= 2);
        let p = t.processor.expect("served");
        let text = t.text();
        // The handshake: SYN in, written into the serving processor's
        // memory by the adapter; SYN|ACK read from it and sent out.
        assert!(text.contains("in from the client: SYN seq"), "{text}");
        assert!(text.contains("out to the client: SYN|ACK"), "{text}");
        assert!(
            text.contains(&format!("lan0 writes it into processor {p}'s buffer")),
            "{text}"
        );
        assert!(
            text.contains(&format!("lan0 reads it from processor {p}'s buffer")),
            "{text}"
        );
        // Every frame that reached a processor or came from one crossed
        // the fabric: on processor 0, which did not fail, all of them.
        assert_eq!(p, 0);
        assert_eq!(t.frames_on_fabric, Some(t.frames), "{text}");
        assert!(t.frames >= 8, "{text}");
        // Times only go forward.
        assert!(t.events.windows(2).all(|w| w[0].at_ns <= w[1].at_ns));
        assert!(text.contains("fail processor 1 (applied)"));
    }

    #[test]
    fn auto_picks_a_connection_of_the_failed_processor() {
        let s = Scenario::from_yaml_str(QUICK, "t.yaml").unwrap();
        let t = trace(&s, &TraceOptions::default()).unwrap();
        assert_eq!(t.processor, Some(1), "{}", t.text());
        let text = t.text();
        assert!(text.contains("out to the client: RST"), "{text}");
        assert!(text.contains("client       reset after"), "{text}");
        assert_eq!(t.frames_on_fabric, None);
        assert!(!text.contains("fabric x") && !text.contains("fabric y"));
        // Without the fabric capture the run is the one snet run makes.
        let plain = crate::run::run(&s, RunOptions::default()).unwrap();
        assert_eq!(t.trace_hash, plain.trace_hash);
        let e = trace(
            &s,
            &TraceOptions {
                pick: Pick::Number(1000),
                ..TraceOptions::default()
            },
        )
        .unwrap_err();
        assert!(e.contains("connection 1000 does not exist"), "{e}");
        let e = trace(
            &s,
            &TraceOptions {
                pick: Pick::Client("198.18.9.9:1".parse().unwrap()),
                ..TraceOptions::default()
            },
        )
        .unwrap_err();
        assert!(e.contains("no connection came from 198.18.9.9:1"), "{e}");
    }
}
