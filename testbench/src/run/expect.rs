//! Judging the expectations and assembling the report.
//!
//! Definitions (the reference spells them out for users):
//! - a *failed processor* is one failed at any time in the run; every other
//!   processor is a *survivor*;
//! - a connection belongs to the processor that served it (accepted it, or
//!   adopted it after a hand-off), as the servers recorded it.

use snet_fabric::time::Instant;

use super::Runner;
use super::ledger::{Conn, End};
use super::report::{
    AdapterReport, Bytes, Connections, ExpectationReport, Latency, PlaneReport, ProcessorReport,
    Report,
};
use crate::scenario::model::{Expectation, Stack};

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn histogram(sorted: &[u64]) -> Vec<(f64, u64)> {
    let mut out = Vec::new();
    if sorted.is_empty() {
        return out;
    }
    // Buckets of a quarter decade from 1 µs.
    let mut bound = 1000.0f64;
    let mut i = 0;
    while i < sorted.len() {
        let mut n = 0;
        while i < sorted.len() && (sorted[i] as f64) <= bound {
            n += 1;
            i += 1;
        }
        out.push((bound / 1000.0, n));
        bound *= 10f64.powf(0.25);
    }
    out
}

pub(super) fn build_report(r: &Runner<'_>, seed: u64, wall_s: f64, notes: Vec<String>) -> Report {
    let s = r.s;
    let l = r.ledger.borrow();
    let end = r.rig.now();
    let elapsed = end.saturating_since(r.t0);
    let failed: Vec<usize> = r.fails.iter().map(|f| f.processor).collect();
    let survivor = |c: &Conn| c.owner.is_some_and(|o| !failed.contains(&(o as usize)));
    let mut conns = Connections::default();
    let mut bytes = Bytes::default();
    for c in &l.conns {
        conns.opened += 1;
        if c.established.is_some() {
            conns.established += 1;
        }
        match c.end {
            Some((End::Completed, _)) => conns.completed += 1,
            Some((End::Reset, _)) => conns.reset += 1,
            Some((End::Failed, _)) => conns.failed += 1,
            None => conns.open_at_end += 1,
        }
        bytes.sent += c.bytes_sent;
        bytes.received += c.bytes_received;
        bytes.lost += c.corrupt + c.owed;
    }
    bytes.lost += l.server_corrupt;
    let mut lat = l.latencies_ns.clone();
    lat.sort_unstable();
    let latency = Latency {
        count: lat.len() as u64,
        mean: if lat.is_empty() {
            0.0
        } else {
            lat.iter().map(|&x| x as f64).sum::<f64>() / lat.len() as f64 / 1000.0
        },
        p50: percentile(&lat, 50.0),
        p90: percentile(&lat, 90.0),
        p99: percentile(&lat, 99.0),
        p999: percentile(&lat, 99.9),
        max: lat.last().map_or(0.0, |&x| x as f64 / 1000.0),
    };
    let secs = elapsed.as_secs_f64().max(1e-12);
    let hosts = &r.rig.hosts;
    let processors: Vec<ProcessorReport> = (0..hosts.processors.len())
        .map(|p| {
            let f = l.servers.get(p).copied().unwrap_or_default();
            let busy = snet_fabric::time::Duration::from_ps(
                hosts.cpus[p].busy().as_ps().saturating_sub(r.busy0[p]),
            );
            ProcessorReport {
                processor: p as u32,
                up: hosts.up[p],
                failed_at_ns: r
                    .fails
                    .iter()
                    .rev()
                    .find(|x| x.processor == p)
                    .map(|x| x.at.saturating_since(r.t0).as_ns()),
                taken: f.taken,
                accepted: f.accepted,
                handed: f.handed,
                requests: f.requests,
                bytes_in: f.bytes_in,
                bytes_out: f.bytes_out,
                cpu_busy_ns: busy.as_ns(),
                cpu_busy_pct: (busy.as_ps() as f64 / elapsed.as_ps().max(1) as f64 * 100.0)
                    .min(100.0),
                hops: hosts.hops(p),
            }
        })
        .collect();
    let adapters: Vec<AdapterReport> = r
        .rig
        .cluster
        .nics
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let c = n.counters();
            AdapterReport {
                name: s
                    .adapters
                    .get(i)
                    .map_or_else(|| format!("lan{i}"), |a| a.name.clone()),
                up: r.adapters_up.get(i).copied().unwrap_or(true),
                rx_frames: c.rx_frames,
                rx_delivered: c.rx_delivered,
                rx_dropped: c.rx_fcs_errors
                    + c.rx_runts
                    + c.rx_oversize
                    + c.rx_filtered
                    + c.rx_overflow
                    + c.rx_firmware_drops
                    + c.rx_processor_down
                    + c.rx_no_queue
                    + c.rx_no_buffer
                    + c.rx_backlog_full
                    + c.rx_truncated
                    + c.rx_dma_errors,
                tx_frames: c.tx_frames,
                rx_bytes: c.rx_bytes,
                tx_bytes: c.tx_bytes,
            }
        })
        .collect();
    let fc = r.rig.cluster.fabric.counters();
    let planes: Vec<PlaneReport> = s
        .fabric
        .planes
        .iter()
        .map(|&p| {
            let fp = p.to_fabric();
            PlaneReport {
                plane: p.to_string(),
                packets: fc.plane_total(fp, |c| c.packets),
                bytes: fc.plane_total(fp, |c| c.bytes),
                corrupted: fc.plane_total(fp, |c| c.corrupted),
                dropped_down: fc.plane_total(fp, |c| c.dropped_down),
            }
        })
        .collect();
    let avt_violations: u64 = fc
        .endpoints
        .iter()
        .map(|e| e.2.nacks.iter().sum::<u64>())
        .sum();
    let transactions = l.requests.max(1) as f64;
    let hops: u64 = processors.iter().map(|p| p.hops).sum();
    let busy_ns: u64 = processors.iter().map(|p| p.cpu_busy_ns).sum();
    let mut errors: Vec<String> = l.errors.clone();
    errors.extend(r.errors.iter().cloned());
    let mut report = Report {
        format: 1,
        scenario: s.name.clone(),
        seed,
        passed: false,
        trace_hash: format!("{:016x}", r.rig.cluster.engine.trace_hash()),
        virtual_time_ns: elapsed.as_ns(),
        wall_time_s: wall_s,
        real_time_factor: if wall_s > 0.0 { secs / wall_s } else { 0.0 },
        stack: match s.stack {
            Stack::Parallel => "parallel".into(),
            Stack::Conventional { processor } => {
                format!("conventional (TCP/IP in processor {processor})")
            }
        },
        processors,
        adapters,
        planes,
        connections: conns,
        bytes,
        requests: l.requests,
        datagrams_sent: l.datagrams_sent,
        datagrams_answered: l.datagrams_answered,
        throughput_bit_s: (bytes.sent + bytes.received) as f64 * 8.0 / secs,
        hops_per_transaction: hops as f64 / transactions,
        cpu_us_per_transaction: busy_ns as f64 / 1000.0 / transactions,
        latency_us: latency,
        latency_histogram: histogram(&lat),
        avt_violations,
        lan: {
            let lan = &r.rig.cluster.lan;
            let mut t = super::report::LanReport::default();
            for i in 0..lan.stations() {
                if let Some(c) = lan.counters(snet_nic_model::StationId(i as u32)) {
                    t.frames += c.tx_frames;
                    t.overflow += c.dropped_overflow;
                    t.loss += c.dropped_loss;
                    t.corrupted += c.corrupted;
                }
            }
            t
        },
        faults: r.applied.clone(),
        expectations: Vec::new(),
        errors,
        notes,
        timeline: r.timeline.clone(),
        detail: None,
    };
    let mut verdicts = Vec::new();
    for e in &s.expect {
        verdicts.push(judge(e, r, &l.conns, &survivor, &lat, &report));
    }
    report.passed = verdicts.iter().all(|v| v.passed) && report.errors.is_empty();
    report.expectations = verdicts;
    report
}

fn verdict(name: String, passed: bool, value: f64, detail: String) -> ExpectationReport {
    ExpectationReport {
        name,
        passed,
        value,
        detail,
    }
}

fn judge(
    e: &Expectation,
    r: &Runner<'_>,
    conns: &[Conn],
    survivor: &dyn Fn(&Conn) -> bool,
    lat: &[u64],
    report: &Report,
) -> ExpectationReport {
    let any_failure = !r.fails.is_empty();
    match e {
        Expectation::NoDataLostOnSurvivors => {
            let mut lost = 0u64;
            let mut hit = 0u64;
            for c in conns.iter().filter(|c| survivor(c)) {
                let l = c.corrupt + c.owed;
                if l > 0 || matches!(c.end, Some((End::Reset, _))) {
                    hit += 1;
                    lost += l;
                }
            }
            let server = r.ledger.borrow().server_corrupt;
            lost += server;
            verdict(
                "no_data_lost_on_survivors".into(),
                hit == 0 && server == 0,
                lost as f64,
                format!(
                    "{lost} bytes lost or corrupted on {hit} connections of surviving processors ({} request bytes arrived corrupted at servers)",
                    server
                ),
            )
        }
        Expectation::AllSurvivorConnectionsComplete => {
            let bad: Vec<&Conn> = conns
                .iter()
                .filter(|c| matches!(c.end, Some((End::Reset | End::Failed, _))))
                .filter(|c| survivor(c) || (c.owner.is_none() && !any_failure))
                .collect();
            let total = conns.iter().filter(|c| survivor(c)).count();
            verdict(
                "all_survivor_connections_complete".into(),
                bad.is_empty(),
                bad.len() as f64,
                format!(
                    "{} of {total} connections to surviving processors were reset or failed",
                    bad.len()
                ),
            )
        }
        Expectation::SurvivorsTakeNewConnections => {
            let mut wrong = 0u64;
            let mut after = 0u64;
            for f in &r.fails {
                let until = f.restored.unwrap_or(Instant::MAX);
                for c in conns {
                    if c.opened > f.at && c.opened < until && c.established.is_some() {
                        after += 1;
                        if c.owner == Some(f.processor as u32) {
                            wrong += 1;
                        }
                    }
                }
            }
            let passed = !r.fails.is_empty() && wrong == 0 && after > 0;
            verdict(
                "survivors_take_new_connections".into(),
                passed,
                after as f64,
                if r.fails.is_empty() {
                    "no processor failed in the run".into()
                } else {
                    format!(
                        "{after} connections opened after a failure were established, {wrong} of them on the failed processor"
                    )
                },
            )
        }
        Expectation::NoAvtViolations => verdict(
            "no_avt_violations".into(),
            report.avt_violations == 0,
            report.avt_violations as f64,
            format!(
                "{} DMA requests refused by an AVT check",
                report.avt_violations
            ),
        ),
        Expectation::ResetWithin(bound) => {
            let bound = bound.to_fabric();
            let mut worst = 0u64;
            let mut missing = 0u64;
            let mut count = 0u64;
            for f in &r.fails {
                for c in conns.iter().filter(|c| {
                    c.owner == Some(f.processor as u32)
                        && c.established.is_some_and(|t| t <= f.at)
                        && match c.end {
                            None => true,
                            // Ended in order: every answer arrived, nothing
                            // left to reset.
                            Some((End::Completed, _)) => false,
                            Some((_, t)) => t >= f.at,
                        }
                }) {
                    count += 1;
                    match c.end {
                        Some((End::Reset | End::Failed, t)) => {
                            worst = worst.max(t.saturating_since(f.at).as_ns());
                        }
                        _ => missing += 1,
                    }
                }
            }
            let passed = missing == 0 && worst <= bound.as_ns();
            verdict(
                format!("reset_within {}", super::report::fmt_ns(bound.as_ns())),
                passed,
                worst as f64,
                format!(
                    "{count} connections of failed processors; slowest reset after {}; {missing} never reset",
                    super::report::fmt_ns(worst)
                ),
            )
        }
        Expectation::NoStalledConnections(bound) => {
            let bound = bound.to_fabric().as_ns();
            let end = r.rig.cluster.now();
            let mut stalled = 0u64;
            let mut worst = 0u64;
            let mut owners = std::collections::BTreeMap::<Option<u32>, u64>::new();
            let mut first = None;
            for (k, c) in conns.iter().enumerate().filter(|(_, c)| c.end.is_none()) {
                let Some(since) = c.waiting_since else {
                    continue;
                };
                let waited = end.saturating_since(since).as_ns();
                worst = worst.max(waited);
                if waited > bound {
                    stalled += 1;
                    first.get_or_insert(k);
                    *owners.entry(c.owner).or_default() += 1;
                }
            }
            let by_owner = owners
                .iter()
                .map(|(o, n)| match o {
                    Some(p) => format!("{n} on processor {p}"),
                    None => format!("{n} never reached a server"),
                })
                .collect::<Vec<_>>()
                .join(", ");
            verdict(
                format!("no_stalled_connections {}", super::report::fmt_ns(bound)),
                stalled == 0,
                stalled as f64,
                format!(
                    "{stalled} open connections waited longer than {} with nothing arriving{}; longest wait {}",
                    super::report::fmt_ns(bound),
                    if by_owner.is_empty() {
                        String::new()
                    } else {
                        format!(" ({by_owner})")
                    },
                    super::report::fmt_ns(worst)
                ) + &first
                    .map(|k| {
                        format!(
                        "; the first is connection {k} (snet trace --connection {k} follows it in a run of the same scenario, seed and faults)"
                    )
                    })
                    .unwrap_or_default(),
            )
        }
        Expectation::EvenDistribution { tolerance } => {
            let failed: Vec<usize> = r.fails.iter().map(|f| f.processor).collect();
            // Every processor running a front end that never failed, even
            // one that took nothing (that is the unevenness to catch).
            let fronts: std::collections::BTreeSet<usize> = r
                .instances
                .iter()
                .filter(|i| i.listens)
                .map(|i| i.processor)
                .collect();
            let counts: Vec<(u32, u64)> = report
                .processors
                .iter()
                .filter(|p| {
                    let i = p.processor as usize;
                    fronts.contains(&i) && !failed.contains(&i)
                })
                .map(|p| (p.processor, p.taken))
                .collect();
            if counts.is_empty() {
                return verdict(
                    "even_distribution".into(),
                    false,
                    0.0,
                    "no surviving processor runs a front end".into(),
                );
            }
            let mean =
                (counts.iter().map(|c| c.1 as f64).sum::<f64>() / counts.len() as f64).max(1e-9);
            let worst = counts
                .iter()
                .map(|c| ((c.1 as f64 - mean) / mean).abs())
                .fold(0.0, f64::max);
            verdict(
                format!("even_distribution (tolerance {})", tolerance.get()),
                worst <= tolerance.get() + 1e-9,
                worst,
                {
                    let shown = if counts.len() <= 16 {
                        format!("{counts:?}")
                    } else {
                        let lo = counts
                            .iter()
                            .min_by_key(|c| c.1)
                            .copied()
                            .unwrap_or_default();
                        let hi = counts
                            .iter()
                            .max_by_key(|c| c.1)
                            .copied()
                            .unwrap_or_default();
                        format!(
                            "over {} processors from {} (processor {}) to {} (processor {})",
                            counts.len(),
                            lo.1,
                            lo.0,
                            hi.1,
                            hi.0
                        )
                    };
                    format!(
                        "connections per front-end processor {shown}, mean {mean:.1}, largest deviation {:.1}%",
                        worst * 100.0
                    )
                },
            )
        }
        Expectation::ThroughputAtLeast(bw) => {
            let want = bw.bits_per_s() as f64;
            verdict(
                format!("throughput_at_least {bw}"),
                report.throughput_bit_s >= want,
                report.throughput_bit_s,
                format!(
                    "goodput {:.1} Mbit/s, at least {:.1} Mbit/s expected",
                    report.throughput_bit_s / 1e6,
                    want / 1e6
                ),
            )
        }
        Expectation::Latency {
            percentile: p,
            at_most,
        } => {
            let got = percentile(lat, *p);
            let limit = at_most.as_ns() as f64 / 1000.0;
            verdict(
                format!("latency p{p} at most {at_most}"),
                !lat.is_empty() && got <= limit,
                got,
                if lat.is_empty() {
                    "no request completed".into()
                } else {
                    format!(
                        "p{p} is {got:.1} µs over {} requests (limit {limit:.1} µs)",
                        lat.len()
                    )
                },
            )
        }
        Expectation::Expr(x) => {
            // Serialized once for every path the expression names.
            let json = serde_json::to_value(report).unwrap_or_default();
            let field = |p: &str| super::report::field_in(&json, p);
            match x.eval(field) {
                Ok(ok) => {
                    let values: Vec<String> = x
                        .paths()
                        .map(|p| {
                            format!("{p} = {}", field(p).map_or("?".into(), |v| v.to_string()))
                        })
                        .collect();
                    verdict(
                        format!("expr {}", x.text),
                        ok,
                        if ok { 1.0 } else { 0.0 },
                        values.join(", "),
                    )
                }
                Err(e) => verdict(format!("expr {}", x.text), false, 0.0, e),
            }
        }
    }
}
