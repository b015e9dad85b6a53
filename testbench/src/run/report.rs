//! The report of a run: what `--json` writes (the field list is in
//! docs/report-reference.md), and the terminal summary.

use serde::Serialize;

/// What a run keeps for tools that look at single connections
/// (`snet trace`).
#[derive(Debug, Clone)]
pub struct RunDetail {
    /// Engine time of scenario time 0 (captures and connection times are
    /// in engine time).
    pub t0: snet_fabric::time::Instant,
    /// Every client connection, by number.
    pub conns: Vec<super::ledger::Conn>,
}

/// One processor's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessorReport {
    /// Its number.
    pub processor: u32,
    /// Up at the end of the run.
    pub up: bool,
    /// When it failed (the last time), in ns.
    pub failed_at_ns: Option<u64>,
    /// Connections it took from the adapter as a front end (accept or accept_nw1).
    pub taken: u64,
    /// Connections it served (it owned the socket).
    pub accepted: u64,
    /// Connections it handed to another process.
    pub handed: u64,
    /// Requests it answered.
    pub requests: u64,
    /// Bytes its applications received.
    pub bytes_in: u64,
    /// Bytes its applications sent.
    pub bytes_out: u64,
    /// CPU busy time, ns.
    pub cpu_busy_ns: u64,
    /// CPU busy, percent of the run.
    pub cpu_busy_pct: f64,
    /// Inter-processor requests it sent (hops).
    pub hops: u64,
}

/// One adapter's counters.
#[derive(Debug, Clone, Serialize)]
pub struct AdapterReport {
    /// Its name.
    pub name: String,
    /// Up at the end of the run.
    pub up: bool,
    /// Frames received from the LAN.
    pub rx_frames: u64,
    /// Frames delivered into processor memory.
    pub rx_delivered: u64,
    /// Frames dropped for any reason (filter, firmware, no buffer, processor down …).
    pub rx_dropped: u64,
    /// Frames sent.
    pub tx_frames: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
}

/// One fabric plane's counters.
#[derive(Debug, Clone, Serialize)]
pub struct PlaneReport {
    /// `x` or `y`.
    pub plane: String,
    /// Packets carried over its links (each hop counts).
    pub packets: u64,
    /// Bytes carried.
    pub bytes: u64,
    /// Packets corrupted in flight.
    pub corrupted: u64,
    /// Packets dropped at a failed link or router.
    pub dropped_down: u64,
}

/// The client network's losses.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LanReport {
    /// Frames every station sent.
    pub frames: u64,
    /// Dropped at a full switch queue.
    pub overflow: u64,
    /// Dropped by the loss rate.
    pub loss: u64,
    /// Corrupted (dropped by the receiver's FCS check).
    pub corrupted: u64,
}

/// Connection counts.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Connections {
    /// Connection attempts.
    pub opened: u64,
    /// Handshakes completed.
    pub established: u64,
    /// Closed in order after their last request.
    pub completed: u64,
    /// Reset after they were established.
    pub reset: u64,
    /// Never established.
    pub failed: u64,
    /// Still open when the run ended.
    pub open_at_end: u64,
}

/// Byte counts seen by the clients.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Bytes {
    /// Request bytes written.
    pub sent: u64,
    /// Response bytes received.
    pub received: u64,
    /// Response bytes owed on reset connections, plus bytes that arrived
    /// corrupted (either side).
    pub lost: u64,
}

/// Request latency, µs.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    /// Requests measured.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

/// A fault as applied.
#[derive(Debug, Clone, Serialize)]
pub struct FaultReport {
    /// When, ns.
    pub at_ns: u64,
    /// What, as written (`fail processor 2`).
    pub action: String,
    /// `applied`, or why not.
    pub outcome: String,
}

/// An expectation's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct ExpectationReport {
    /// As written.
    pub name: String,
    /// Held.
    pub passed: bool,
    /// The measured value it was judged on.
    pub value: f64,
    /// The numbers behind it.
    pub detail: String,
}

/// Samples over the run, for the plots.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timeline {
    /// Sample times, ns.
    pub at_ns: Vec<u64>,
    /// Per processor, connections served so far at each sample.
    pub accepted: Vec<Vec<u64>>,
    /// Per processor, CPU busy percent over the interval before each sample.
    pub cpu_pct: Vec<Vec<f64>>,
    /// Requests answered so far at each sample.
    pub requests: Vec<u64>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Report format version.
    pub format: u32,
    /// Scenario name.
    pub scenario: String,
    /// The seed used.
    pub seed: u64,
    /// Every expectation held (and the run met no error).
    pub passed: bool,
    /// Hash of the event trace: same scenario and seed, same hash.
    pub trace_hash: String,
    /// Virtual time run, ns.
    pub virtual_time_ns: u64,
    /// Wall-clock time of the run, s.
    pub wall_time_s: f64,
    /// Virtual time over wall time.
    pub real_time_factor: f64,
    /// `parallel` or `conventional (TCP/IP in processor N)`.
    pub stack: String,
    /// Per processor.
    pub processors: Vec<ProcessorReport>,
    /// Per adapter.
    pub adapters: Vec<AdapterReport>,
    /// Per plane.
    pub planes: Vec<PlaneReport>,
    /// Connection counts.
    pub connections: Connections,
    /// Byte counts.
    pub bytes: Bytes,
    /// Requests answered (TCP and UDP).
    pub requests: u64,
    /// UDP datagrams sent by clients.
    pub datagrams_sent: u64,
    /// UDP datagrams answered.
    pub datagrams_answered: u64,
    /// Goodput, bit/s: request and response bytes over the run.
    pub throughput_bit_s: f64,
    /// Inter-processor requests per answered request.
    pub hops_per_transaction: f64,
    /// CPU time (all processors) per answered request, µs.
    pub cpu_us_per_transaction: f64,
    /// Request latency.
    pub latency_us: Latency,
    /// Latency histogram: (upper bound µs, count), log-spaced buckets.
    pub latency_histogram: Vec<(f64, u64)>,
    /// LAN frames lost on the client network: dropped at a full switch
    /// queue (`overflow`), by the configured loss rate (`loss`), or
    /// corrupted in flight.
    pub lan: LanReport,
    /// DMA requests refused by an AVT check.
    pub avt_violations: u64,
    /// Faults applied.
    pub faults: Vec<FaultReport>,
    /// Expectations.
    pub expectations: Vec<ExpectationReport>,
    /// Errors met by applications or the host side.
    pub errors: Vec<String>,
    /// Notes on how the scenario was run.
    pub notes: Vec<String>,
    /// Samples over time.
    pub timeline: Timeline,
    /// Every connection and the engine time of scenario time 0, when
    /// [`super::RunOptions::keep_connections`] asked for them (not in the
    /// JSON).
    #[serde(skip)]
    pub detail: Option<RunDetail>,
}

impl Report {
    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// A field by dotted path (`connections.reset`, `processors[2].accepted`,
    /// `latency_us.p99`), as a number.
    /// The leading `report.` is optional and `processors[2]` is the same
    /// as `processors.2`.
    pub fn field(&self, path: &str) -> Option<f64> {
        field_in(&serde_json::to_value(self).ok()?, path)
    }

    /// The terminal summary.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "scenario {}  seed {}  stack {}  virtual {}  wall {:.2}s  rtf {:.3}",
            self.scenario,
            self.seed,
            self.stack,
            fmt_ns(self.virtual_time_ns),
            self.wall_time_s,
            self.real_time_factor
        );
        let _ = writeln!(o, "trace_hash {}", self.trace_hash);
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "{:>4} {:>4} {:>8} {:>8} {:>7} {:>9} {:>12} {:>12} {:>6} {:>8} {:>9}",
            "cpu",
            "up",
            "taken",
            "served",
            "handed",
            "requests",
            "bytes in",
            "bytes out",
            "busy%",
            "hops",
            "hops/txn"
        );
        for p in &self.processors {
            let hpt = if p.requests > 0 {
                p.hops as f64 / p.requests as f64
            } else {
                0.0
            };
            let _ = writeln!(
                o,
                "{:>4} {:>4} {:>8} {:>8} {:>7} {:>9} {:>12} {:>12} {:>6.1} {:>8} {:>9.2}",
                p.processor,
                if p.up { "yes" } else { "NO" },
                p.taken,
                p.accepted,
                p.handed,
                p.requests,
                p.bytes_in,
                p.bytes_out,
                p.cpu_busy_pct,
                p.hops,
                hpt
            );
        }
        let _ = writeln!(o);
        for a in &self.adapters {
            let _ = writeln!(
                o,
                "adapter {:<8} {:<4} rx {} frames ({} delivered, {} dropped)  tx {} frames",
                a.name,
                if a.up { "up" } else { "DOWN" },
                a.rx_frames,
                a.rx_delivered,
                a.rx_dropped,
                a.tx_frames
            );
        }
        for p in &self.planes {
            let _ = writeln!(
                o,
                "plane {}  {} packets, {} bytes, {} corrupted, {} dropped at failed parts",
                p.plane, p.packets, p.bytes, p.corrupted, p.dropped_down
            );
        }
        let _ = writeln!(
            o,
            "LAN: {} frames, {} dropped at full switch queues, {} lost, {} corrupted",
            self.lan.frames, self.lan.overflow, self.lan.loss, self.lan.corrupted
        );
        let c = &self.connections;
        let _ = writeln!(
            o,
            "connections: {} opened, {} established, {} completed, {} reset, {} failed, {} open at end",
            c.opened, c.established, c.completed, c.reset, c.failed, c.open_at_end
        );
        let _ = writeln!(
            o,
            "requests: {}  bytes sent {} received {} lost {}  goodput {:.1} Mbit/s",
            self.requests,
            self.bytes.sent,
            self.bytes.received,
            self.bytes.lost,
            self.throughput_bit_s / 1e6
        );
        let l = &self.latency_us;
        let _ = writeln!(
            o,
            "latency µs: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
            l.p50, l.p90, l.p99, l.p999, l.max
        );
        let _ = writeln!(
            o,
            "per transaction: {:.2} hops, {:.1} µs CPU",
            self.hops_per_transaction, self.cpu_us_per_transaction
        );
        if !self.faults.is_empty() {
            let _ = writeln!(o, "\nfaults:");
            for f in &self.faults {
                let _ = writeln!(
                    o,
                    "  {:>10}  {}  ({})",
                    fmt_ns(f.at_ns),
                    f.action,
                    f.outcome
                );
            }
        }
        for n in &self.notes {
            let _ = writeln!(o, "note: {n}");
        }
        if !self.errors.is_empty() {
            let _ = writeln!(o, "\nerrors ({}):", self.errors.len());
            for e in self.errors.iter().take(10) {
                let _ = writeln!(o, "  {e}");
            }
        }
        let _ = writeln!(o, "\nexpectations:");
        if self.expectations.is_empty() {
            let _ = writeln!(o, "  (none)");
        }
        for e in &self.expectations {
            let _ = writeln!(
                o,
                "  {} {}: {}",
                if e.passed { "✓" } else { "✗" },
                e.name,
                e.detail
            );
        }
        let _ = writeln!(o, "\n{}", if self.passed { "PASSED" } else { "FAILED" });
        o
    }
}

/// A field of a report already turned into JSON, by the paths
/// [`Report::field`] takes (to look up many without serializing each time).
pub fn field_in(v: &serde_json::Value, path: &str) -> Option<f64> {
    let p = path.strip_prefix("report.").unwrap_or(path);
    lookup(v, &p.replace('[', ".").replace(']', ""))
}

fn lookup(v: &serde_json::Value, path: &str) -> Option<f64> {
    let mut cur = v;
    for part in path.split('.') {
        cur = match cur {
            serde_json::Value::Object(m) => m.get(part)?,
            serde_json::Value::Array(a) => a.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    match cur {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    }
}

/// A time in ns, written with a unit a person reads.
pub fn fmt_ns(ns: u64) -> String {
    if ns >= 1_000_000_000 {
        format!("{:.3}s", ns as f64 / 1e9)
    } else if ns >= 1_000_000 {
        format!("{:.3}ms", ns as f64 / 1e6)
    } else if ns >= 1_000 {
        format!("{:.1}us", ns as f64 / 1e3)
    } else {
        format!("{ns}ns")
    }
}
