//! The self-contained HTML report: one page with no scripts and no external
//! resources. The plots are inline SVG drawn here. Every text taken from the
//! report is escaped, every number written into the SVG is finite, and the
//! same report always gives the same bytes.

use std::fmt::Write;

use super::report::{FaultReport, Report, fmt_ns};

/// Up to this many processors the per-processor plots draw one line each;
/// above, the min–max band, the mean, and the failed processors.
const MAX_LINES: usize = 16;
/// Failed processors drawn on their own over the band.
const MAX_HIGHLIGHT: usize = 8;
/// Errors listed on the page.
const MAX_ERRORS: usize = 50;
/// Tables with more rows than this start folded.
const FOLD_ROWS: usize = 32;
/// Longest fault label drawn on a plot, in characters.
const MAX_LABEL: usize = 40;

/// Line colours (no red: red marks faults).
const PALETTE: [&str; 16] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
    "#17becf", "#393b79", "#637939", "#8c6d31", "#7b4173", "#6b6ecf", "#b5cf6b", "#e7ba52",
];

// Plot geometry, in SVG user units.
const W: f64 = 960.0;
const H: f64 = 280.0;
const LEFT: f64 = 70.0;
/// Right edge of the time plots; the legend sits beyond it.
const RIGHT: f64 = 780.0;
/// Top of a plot area without marker labels above it.
const TOP: f64 = 20.0;
/// Height of one row of marker labels above a plot area.
const LABEL_ROW: f64 = 13.0;
/// Rows of fault labels at most; further faults reuse them.
const MAX_LABEL_ROWS: usize = 4;
const BOTTOM: f64 = 236.0;
const LEGEND_X: f64 = 796.0;
const LEGEND_ROW: f64 = 13.0;

const CSS: &str = r#"
:root{color-scheme:light;--ok:#1b7f3b;--bad:#c62828;--muted:#5f6b7a;--line:#d8dde3}
*{box-sizing:border-box}
body{margin:0;background:#f5f6f8;color:#1d232b;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:1000px;margin:0 auto;padding:20px}
h1{font-size:22px;margin:0 0 8px;display:flex;align-items:center;gap:12px;flex-wrap:wrap;overflow-wrap:anywhere}
h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid var(--line);padding-bottom:4px}
h3{font-size:15px;margin:18px 0 2px}
p.sub{margin:0 0 6px;color:var(--muted);font-size:13px}
.badge{font-size:14px;font-weight:700;letter-spacing:.06em;color:#fff;padding:3px 10px;border-radius:4px}
.badge.pass{background:var(--ok)}
.badge.fail{background:var(--bad)}
.why{font-size:14px;font-weight:400;color:var(--muted)}
dl.facts{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:6px 16px;margin:8px 0}
dl.facts div{min-width:0}
dt{color:var(--muted);font-size:12px}
dd{margin:0;font-weight:600;overflow-wrap:anywhere}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:8px;margin:12px 0}
.card{background:#fff;border:1px solid var(--line);border-radius:6px;padding:8px 10px}
.card b{display:block;font-size:18px}
.card span{color:var(--muted);font-size:12px}
.card.bad b{color:var(--bad)}
ul.expect{list-style:none;padding:0;margin:0}
ul.expect li{background:#fff;border:1px solid var(--line);border-left:5px solid var(--ok);border-radius:4px;padding:6px 10px;margin:4px 0}
ul.expect li.fail{border-color:var(--bad);background:#fdecea}
ul.expect .mark{font-weight:700;color:var(--ok);margin-right:6px}
ul.expect li.fail .mark{color:var(--bad)}
ul.expect .detail{color:#39424e;display:block;font-size:13px;margin-left:20px;overflow-wrap:anywhere}
svg.plot{display:block;width:100%;height:auto;background:#fff;border:1px solid var(--line);border-radius:6px}
svg.plot text{font:11px system-ui,sans-serif;fill:#333}
svg .grid{stroke:#eceff2}
svg .axis{stroke:#8a939e}
svg text.lbl{font-size:12px;fill:#1d232b}
svg text.empty{font-size:14px;fill:#5f6b7a}
svg .fault line{stroke:#c62828;stroke-width:1.2;stroke-dasharray:5 4}
svg .fault text{fill:#c62828;font-weight:600}
svg .fault.na line{stroke:#888}
svg .fault.na text{fill:#666}
svg .halo{paint-order:stroke;stroke:#fff;stroke-width:3px;stroke-linejoin:round}
svg .series{fill:none;stroke-linejoin:round;stroke-linecap:round}
table{border-collapse:collapse;background:#fff;border:1px solid var(--line);margin:6px 0;font-size:13px}
th,td{padding:3px 10px;border-bottom:1px solid #eceff2;text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
th{background:#eef1f4;font-weight:600}
th.l,td.l{text-align:left}
td.w{white-space:normal;overflow-wrap:anywhere}
tr.bad td{background:#fdecea}
td.bad{color:var(--bad);font-weight:600}
tfoot td{font-weight:600;background:#f7f8fa}
.bar{display:inline-block;height:8px;background:#1f77b4;border-radius:2px;vertical-align:middle;margin-left:6px}
.wrap{overflow-x:auto}
.kvs{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
.kvs caption{text-align:left;font-weight:600;padding:2px 0}
details>summary{cursor:pointer;color:var(--muted);margin:4px 0}
ol.errors li,ul.notes li{font-size:13px;overflow-wrap:anywhere}
ol.errors li{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px}
.muted{color:var(--muted)}
code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:13px}
"#;

/// The report as one HTML page.
pub fn render(r: &Report) -> String {
    let mut o = String::with_capacity(64 * 1024);
    let _ = write!(
        o,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{} — snet report</title>\n<style>{}</style>\n</head>\n<body>\n<main>\n",
        esc(&r.scenario),
        CSS
    );
    header(&mut o, r);
    expectations(&mut o, r);
    plots(&mut o, r);
    tables(&mut o, r);
    o.push_str("</main>\n</body>\n</html>\n");
    o
}

// ---------------------------------------------------------------------------
// Header and expectations

fn header(o: &mut String, r: &Report) {
    let failed = r.expectations.iter().filter(|e| !e.passed).count();
    let mut why = if r.expectations.is_empty() {
        "no expectations".to_string()
    } else if failed == 0 {
        format!("all {} held", plural(r.expectations.len(), "expectation"))
    } else {
        format!(
            "{failed} of {} failed",
            plural(r.expectations.len(), "expectation")
        )
    };
    if !r.errors.is_empty() {
        let _ = write!(why, "; {}", plural(r.errors.len(), "error"));
    }
    let (class, verdict) = if r.passed {
        ("pass", "PASSED")
    } else {
        ("fail", "FAILED")
    };
    let _ = writeln!(
        o,
        "<header>\n<h1><span>{}</span><span class=\"badge {class}\">{verdict}</span>\
         <span class=\"why\">{}</span></h1>",
        esc(&r.scenario),
        esc(&why)
    );
    let up = r.processors.iter().filter(|p| p.up).count();
    let facts = [
        ("seed", r.seed.to_string()),
        ("stack", r.stack.clone()),
        ("virtual time", fmt_ns(r.virtual_time_ns)),
        ("wall time", format!("{} s", fmt_f(r.wall_time_s, 2))),
        (
            "real-time factor",
            format!("{}× real time", fmt_f(r.real_time_factor, 3)),
        ),
        (
            "processors",
            format!("{} ({up} up at the end)", r.processors.len()),
        ),
        ("adapters", r.adapters.len().to_string()),
    ];
    o.push_str("<dl class=\"facts\">\n");
    for (k, v) in &facts {
        let _ = writeln!(o, "<div><dt>{k}</dt><dd>{}</dd></div>", esc(v));
    }
    let _ = writeln!(
        o,
        "<div><dt>trace hash</dt><dd><code>{}</code></dd></div>\n</dl>",
        esc(&r.trace_hash)
    );

    let c = &r.connections;
    let l = &r.latency_us;
    let applied = r.faults.iter().filter(|f| f.outcome == "applied").count();
    let cards: [(String, String, bool); 7] = [
        (fmt_int(r.requests), "requests answered".into(), false),
        (fmt_bits(r.throughput_bit_s), "goodput".into(), false),
        (
            if l.count > 0 {
                fmt_us(l.p50)
            } else {
                "–".into()
            },
            "latency p50".into(),
            false,
        ),
        (
            if l.count > 0 {
                fmt_us(l.p99)
            } else {
                "–".into()
            },
            "latency p99".into(),
            false,
        ),
        (
            format!("{} / {}", fmt_int(c.established), fmt_int(c.opened)),
            format!(
                "connections established / opened; {} reset, {} failed",
                fmt_int(c.reset),
                fmt_int(c.failed)
            ),
            c.failed > 0,
        ),
        (
            format!("{applied}/{}", r.faults.len()),
            "faults applied".into(),
            applied < r.faults.len(),
        ),
        (
            fmt_int(r.errors.len() as u64),
            "errors".into(),
            !r.errors.is_empty(),
        ),
    ];
    o.push_str("<div class=\"cards\">\n");
    for (v, k, bad) in &cards {
        let _ = writeln!(
            o,
            "<div class=\"card{}\"><b>{}</b><span>{}</span></div>",
            if *bad { " bad" } else { "" },
            esc(v),
            esc(k)
        );
    }
    o.push_str("</div>\n</header>\n");
}

fn expectations(o: &mut String, r: &Report) {
    o.push_str("<section>\n<h2>Expectations</h2>\n");
    if r.expectations.is_empty() {
        o.push_str("<p class=\"muted\">None in the scenario.</p>\n");
    } else {
        o.push_str("<ul class=\"expect\">\n");
        for e in &r.expectations {
            let (class, mark) = if e.passed {
                ("pass", "✓")
            } else {
                ("fail", "✗")
            };
            let _ = writeln!(
                o,
                "<li class=\"{class}\" title=\"measured {}\"><span class=\"mark\">{mark}</span>\
                 <b>{}</b><span class=\"detail\">{}</span></li>",
                fmt_g(e.value),
                esc(&e.name),
                esc(&e.detail)
            );
        }
        o.push_str("</ul>\n");
    }
    o.push_str("</section>\n");
}

// ---------------------------------------------------------------------------
// Plots

fn plots(o: &mut String, r: &Report) {
    let ta = TimeAxis::new(r);
    let tl = &r.timeline;
    o.push_str("<section>\n<h2>Over time</h2>\n");
    if !r.faults.is_empty() {
        o.push_str("<p class=\"sub\">Dashed red lines mark the faults (grey: not applied).</p>\n");
    }

    o.push_str("<h3>Connections served per processor</h3>\n<p class=\"sub\">Cumulative: a flat line is a processor taking no new connections.</p>\n");
    let accepted: Vec<Vec<f64>> = tl
        .accepted
        .iter()
        .map(|s| s.iter().map(|&v| v as f64).collect())
        .collect();
    processor_plot(o, r, &ta, &accepted, None, "connections served");

    o.push_str("<h3>CPU busy per processor</h3>\n<p class=\"sub\">Percent of each sampling interval.</p>\n");
    processor_plot(o, r, &ta, &tl.cpu_pct, Some(100.0), "CPU busy (%)");

    o.push_str("<h3>Requests answered</h3>\n<p class=\"sub\">Rate over each sampling interval, all processors.</p>\n");
    requests_plot(o, r, &ta);
    o.push_str("</section>\n");

    o.push_str("<section>\n<h2>Latency</h2>\n<p class=\"sub\">Requests per latency bucket (log scale), with the median and the 99th percentile.</p>\n");
    latency_plot(o, r);
    o.push_str("</section>\n");
}

/// The pixel box of a plot and the data range it shows.
#[derive(Clone, Copy)]
struct Frame {
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
    x_lo: f64,
    x_hi: f64,
    y_lo: f64,
    y_hi: f64,
}

impl Frame {
    fn x(&self, v: f64) -> f64 {
        scale(v, self.x_lo, self.x_hi, self.left, self.right)
    }

    fn y(&self, v: f64) -> f64 {
        scale(v, self.y_lo, self.y_hi, self.bottom, self.top)
    }
}

/// `v` in `[d0, d1]` to `[p0, p1]`, clamped; anything not finite goes to `p0`.
fn scale(v: f64, d0: f64, d1: f64, p0: f64, p1: f64) -> f64 {
    let span = d1 - d0;
    if !(v.is_finite() && d0.is_finite() && span.is_finite() && span > 0.0) {
        return p0;
    }
    p0 + ((v - d0) / span).clamp(0.0, 1.0) * (p1 - p0)
}

/// The shared time axis of the plots over time.
struct TimeAxis {
    /// End of the axis, ns.
    hi: f64,
    /// ns per unit.
    div: f64,
    unit: &'static str,
    /// Top of the plot area, below the fault labels.
    top: f64,
}

impl TimeAxis {
    fn new(r: &Report) -> Self {
        let last = r
            .timeline
            .at_ns
            .iter()
            .chain(r.faults.iter().map(|f| &f.at_ns))
            .copied()
            .max()
            .unwrap_or(0);
        let hi = r.virtual_time_ns.max(last).max(1) as f64;
        let (div, unit) = if hi >= 2e9 {
            (1e9, "s")
        } else if hi >= 2e6 {
            (1e6, "ms")
        } else if hi >= 2e3 {
            (1e3, "µs")
        } else {
            (1.0, "ns")
        };
        TimeAxis {
            hi,
            div,
            unit,
            top: label_top(r.faults.len().min(MAX_LABEL_ROWS)),
        }
    }

    fn frame(&self, y_hi: f64) -> Frame {
        Frame {
            left: LEFT,
            right: RIGHT,
            top: self.top,
            bottom: BOTTOM,
            x_lo: 0.0,
            x_hi: self.hi,
            y_lo: 0.0,
            y_hi,
        }
    }

    fn ticks(&self) -> Vec<(f64, String)> {
        let hu = self.hi / self.div;
        let step = nice_step(hu, 8);
        ticks(0.0, hu, step)
            .into_iter()
            .map(|t| (t * self.div, fmt_tick(t, step)))
            .collect()
    }

    fn label(&self) -> String {
        format!("time ({})", self.unit)
    }
}

/// Top of a plot area with `rows` rows of marker labels above it.
fn label_top(rows: usize) -> f64 {
    TOP + LABEL_ROW * rows as f64
}

/// Baseline of marker label row `row`, above the plot area.
fn label_y(row: usize) -> f64 {
    TOP - 6.0 + LABEL_ROW * row as f64
}

/// Where a marker label at `x` goes: its anchor and its x, on the side of
/// the line where it fits.
fn label_place(f: &Frame, x: f64, label: &str) -> (&'static str, f64) {
    let w = label.chars().count() as f64 * 6.5;
    if x + 4.0 + w > f.right + 12.0 && x - 4.0 - w >= f.left - 40.0 {
        ("end", x - 4.0)
    } else {
        ("start", x + 4.0)
    }
}

/// A round step giving about `target` intervals over `span`.
fn nice_step(span: f64, target: usize) -> f64 {
    let span = if span.is_finite() && span > 0.0 {
        span
    } else {
        1.0
    };
    let raw = span / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let m = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// Multiples of `step` in `[lo, hi]`.
fn ticks(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    let mut v = Vec::new();
    if !(lo.is_finite() && hi.is_finite() && step.is_finite() && step > 0.0) {
        return v;
    }
    let mut i = (lo / step - 1e-9).ceil();
    while v.len() < 50 {
        let t = i * step;
        if t > hi + step * 1e-9 {
            break;
        }
        v.push(t);
        i += 1.0;
    }
    v
}

/// A tick value with as many decimals as its step needs.
fn fmt_tick(v: f64, step: f64) -> String {
    let d = if step >= 1.0 || !step.is_finite() || step <= 0.0 {
        0
    } else {
        (-step.log10() - 1e-6).ceil().clamp(0.0, 9.0) as usize
    };
    let v = if v.abs() < step * 1e-6 { 0.0 } else { v };
    format!("{v:.d$}")
}

/// A y axis from 0 over `max`: its end and its ticks, big values with k/M/G.
fn y_axis(max: f64, integer: bool) -> (f64, Vec<(f64, String)>) {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let mut step = nice_step(max, 5);
    if integer && step < 1.0 {
        step = 1.0;
    }
    let hi = ((max / step).ceil() * step).max(step);
    let (div, suffix) = si(hi);
    let t = ticks(0.0, hi, step)
        .into_iter()
        .map(|v| {
            let l = if v == 0.0 {
                "0".to_string()
            } else {
                format!("{}{suffix}", fmt_tick(v / div, step / div))
            };
            (v, l)
        })
        .collect();
    (hi, t)
}

fn si(x: f64) -> (f64, &'static str) {
    if x >= 1e10 {
        (1e9, "G")
    } else if x >= 1e7 {
        (1e6, "M")
    } else if x >= 1e4 {
        (1e3, "k")
    } else {
        (1.0, "")
    }
}

/// A coordinate for the SVG: always a finite number.
fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.1}")
    } else {
        "0".into()
    }
}

fn points(pts: &[(f64, f64)]) -> String {
    let mut s = String::with_capacity(pts.len() * 12);
    for (i, (x, y)) in pts.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        let _ = write!(s, "{},{}", num(*x), num(*y));
    }
    s
}

fn svg_open(o: &mut String, label: &str) {
    let _ = writeln!(
        o,
        "<div class=\"wrap\"><svg class=\"plot\" xmlns=\"http://www.w3.org/2000/svg\" \
         viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\">",
        esc(label)
    );
}

fn svg_close(o: &mut String) {
    o.push_str("</svg></div>\n");
}

fn axes(
    o: &mut String,
    f: &Frame,
    xt: &[(f64, String)],
    yt: &[(f64, String)],
    xlabel: &str,
    ylabel: &str,
) {
    for (v, l) in yt {
        let y = num(f.y(*v));
        let _ = writeln!(
            o,
            "<line class=\"grid\" x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\"/>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            num(f.left),
            num(f.right),
            num(f.left - 6.0),
            num(f.y(*v) + 4.0),
            esc(l)
        );
    }
    for (v, l) in xt {
        let x = num(f.x(*v));
        let _ = writeln!(
            o,
            "<line class=\"axis\" x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\"/>\
             <text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            num(f.bottom),
            num(f.bottom + 4.0),
            num(f.bottom + 16.0),
            esc(l)
        );
    }
    let _ = writeln!(
        o,
        "<line class=\"axis\" x1=\"{l}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\"/>\
         <line class=\"axis\" x1=\"{l}\" y1=\"{t}\" x2=\"{l}\" y2=\"{b}\"/>",
        l = num(f.left),
        r = num(f.right),
        t = num(f.top),
        b = num(f.bottom)
    );
    let _ = writeln!(
        o,
        "<text class=\"lbl\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\
         <text class=\"lbl\" transform=\"translate(16 {}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        num((f.left + f.right) / 2.0),
        num(f.bottom + 34.0),
        esc(xlabel),
        num((f.top + f.bottom) / 2.0),
        esc(ylabel)
    );
}

fn empty(o: &mut String, f: &Frame, msg: &str) {
    let _ = writeln!(
        o,
        "<text class=\"empty\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
        num((f.left + f.right) / 2.0),
        num((f.top + f.bottom) / 2.0),
        esc(msg)
    );
}

fn polyline(o: &mut String, pts: &[(f64, f64)], color: &str, width: f64, title: &str) {
    match pts {
        [] => {}
        [(x, y)] => {
            let _ = writeln!(
                o,
                "<circle cx=\"{}\" cy=\"{}\" r=\"2\" fill=\"{color}\"><title>{}</title></circle>",
                num(*x),
                num(*y),
                esc(title)
            );
        }
        _ => {
            let _ = writeln!(
                o,
                "<polyline class=\"series\" stroke=\"{color}\" stroke-width=\"{width}\" \
                 points=\"{}\"><title>{}</title></polyline>",
                points(pts),
                esc(title)
            );
        }
    }
}

enum Swatch {
    Line(&'static str),
    Dashed(&'static str),
    Band(&'static str),
}

fn legend(o: &mut String, items: &[(Swatch, String)]) {
    let mut y = TOP - 6.0;
    for (s, label) in items {
        let (x0, x1) = (num(LEGEND_X), num(LEGEND_X + 18.0));
        let yy = num(y);
        match s {
            Swatch::Line(c) => {
                let _ = write!(
                    o,
                    "<line x1=\"{x0}\" y1=\"{yy}\" x2=\"{x1}\" y2=\"{yy}\" stroke=\"{c}\" stroke-width=\"2.5\"/>"
                );
            }
            Swatch::Dashed(c) => {
                let _ = write!(
                    o,
                    "<line x1=\"{x0}\" y1=\"{yy}\" x2=\"{x1}\" y2=\"{yy}\" stroke=\"{c}\" stroke-width=\"1.5\" stroke-dasharray=\"4 3\"/>"
                );
            }
            Swatch::Band(c) => {
                let _ = write!(
                    o,
                    "<rect x=\"{x0}\" y=\"{}\" width=\"18\" height=\"10\" fill=\"{c}\" fill-opacity=\"0.25\" stroke=\"{c}\" stroke-opacity=\"0.5\"/>",
                    num(y - 5.0)
                );
            }
        }
        let _ = writeln!(
            o,
            "<text x=\"{}\" y=\"{}\">{}</text>",
            num(LEGEND_X + 24.0),
            num(y + 4.0),
            esc(&truncate(label, 22))
        );
        y += LEGEND_ROW;
    }
}

fn fault_markers(o: &mut String, f: &Frame, faults: &[FaultReport]) {
    for (i, fr) in faults.iter().enumerate() {
        let x = f.x(fr.at_ns as f64);
        let applied = fr.outcome == "applied";
        let mut label = fr.action.clone();
        if !applied {
            label.push_str(" (not applied)");
        }
        let label = truncate(&label, MAX_LABEL);
        let row = i % MAX_LABEL_ROWS;
        let (anchor, tx) = label_place(f, x, &label);
        let _ = writeln!(
            o,
            "<g class=\"fault{}\"><title>{} at {}: {}</title>\
             <line x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\"/>\
             <text class=\"halo\" x=\"{}\" y=\"{}\" text-anchor=\"{anchor}\">{}</text></g>",
            if applied { "" } else { " na" },
            esc(&fr.action),
            fmt_ns(fr.at_ns),
            esc(&fr.outcome),
            num(label_y(row) + 3.0),
            num(f.bottom),
            num(tx),
            num(label_y(row)),
            esc(&label),
            x = num(x),
        );
    }
}

fn proc_name(r: &Report, i: usize) -> String {
    let n = r
        .processors
        .get(i)
        .map_or(i as u64, |p| u64::from(p.processor));
    format!("processor {n}")
}

fn proc_failed(r: &Report, i: usize) -> bool {
    r.processors
        .get(i)
        .is_some_and(|p| !p.up || p.failed_at_ns.is_some())
}

/// One series per processor over the shared time axis: a line each, or for
/// many processors the min–max band and the mean with the failed ones on top.
fn processor_plot(
    o: &mut String,
    r: &Report,
    ta: &TimeAxis,
    series: &[Vec<f64>],
    fixed_max: Option<f64>,
    ylabel: &str,
) {
    let t = &r.timeline.at_ns;
    let integer = fixed_max.is_none();
    let data_max = series
        .iter()
        .flatten()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let (y_hi, yt) = y_axis(fixed_max.unwrap_or(data_max), integer);
    let f = ta.frame(y_hi);
    svg_open(o, ylabel);
    axes(o, &f, &ta.ticks(), &yt, &ta.label(), ylabel);
    let line = |s: &[f64]| -> Vec<(f64, f64)> {
        t.iter()
            .zip(s)
            .filter(|(_, v)| v.is_finite())
            .map(|(&x, &v)| (f.x(x as f64), f.y(v)))
            .collect()
    };
    let mut keys = Vec::new();
    if series.is_empty() {
        empty(o, &f, "no processors");
    } else if t.is_empty() {
        empty(o, &f, "no samples");
    } else if series.len() <= MAX_LINES {
        for (i, s) in series.iter().enumerate() {
            let c = PALETTE[i % PALETTE.len()];
            let name = proc_name(r, i);
            polyline(o, &line(s), c, 1.6, &name);
            let key = if proc_failed(r, i) {
                format!("{name} (failed)")
            } else {
                name
            };
            keys.push((Swatch::Line(c), key));
        }
    } else {
        let c = PALETTE[0];
        let (mut lo, mut hi, mut mean) = (Vec::new(), Vec::new(), Vec::new());
        for (j, &tj) in t.iter().enumerate() {
            let (mut mn, mut mx, mut sum, mut k) = (f64::INFINITY, f64::NEG_INFINITY, 0.0, 0u32);
            for v in series.iter().filter_map(|s| s.get(j)).copied() {
                if v.is_finite() {
                    mn = mn.min(v);
                    mx = mx.max(v);
                    sum += v;
                    k += 1;
                }
            }
            if k == 0 {
                continue;
            }
            let x = f.x(tj as f64);
            lo.push((x, f.y(mn)));
            hi.push((x, f.y(mx)));
            mean.push((x, f.y(sum / f64::from(k))));
        }
        let band: Vec<(f64, f64)> = hi.iter().chain(lo.iter().rev()).copied().collect();
        let _ = writeln!(
            o,
            "<polygon fill=\"{c}\" fill-opacity=\"0.2\" stroke=\"{c}\" stroke-opacity=\"0.45\" \
             stroke-width=\"0.8\" points=\"{}\"><title>min–max of {} processors</title></polygon>",
            points(&band),
            series.len()
        );
        polyline(o, &mean, c, 2.2, "mean");
        keys.push((Swatch::Band(c), format!("min–max of {}", series.len())));
        keys.push((Swatch::Line(c), "mean".into()));
        let failed: Vec<usize> = (0..series.len()).filter(|&i| proc_failed(r, i)).collect();
        for (k, &i) in failed.iter().take(MAX_HIGHLIGHT).enumerate() {
            let c = PALETTE[(k + 1) % PALETTE.len()];
            let name = proc_name(r, i);
            polyline(o, &line(&series[i]), c, 1.4, &name);
            keys.push((Swatch::Line(c), format!("{name} (failed)")));
        }
        if failed.len() > MAX_HIGHLIGHT {
            keys.push((
                Swatch::Line("#bbb"),
                format!("… {} more failed", failed.len() - MAX_HIGHLIGHT),
            ));
        }
    }
    fault_markers(o, &f, &r.faults);
    legend(o, &keys);
    svg_close(o);
}

/// Requests answered per second over each sampling interval, as steps.
fn requests_plot(o: &mut String, r: &Report, ta: &TimeAxis) {
    let tl = &r.timeline;
    let mut steps = Vec::new();
    let (mut pt, mut pq) = (0u64, 0u64);
    for (&t, &q) in tl.at_ns.iter().zip(&tl.requests) {
        if t <= pt {
            continue;
        }
        let rate = q.saturating_sub(pq) as f64 * 1e9 / (t - pt) as f64;
        steps.push((pt as f64, t as f64, rate));
        pt = t;
        pq = q;
    }
    let max = steps.iter().map(|s| s.2).fold(0.0, f64::max);
    let (y_hi, yt) = y_axis(max, false);
    let f = ta.frame(y_hi);
    svg_open(o, "requests answered per second");
    axes(o, &f, &ta.ticks(), &yt, &ta.label(), "requests/s");
    let mut keys = Vec::new();
    if steps.is_empty() {
        empty(o, &f, "no samples");
    } else {
        let c = PALETTE[2];
        let mut line = Vec::with_capacity(steps.len() * 2);
        for &(t0, t1, rate) in &steps {
            line.push((f.x(t0), f.y(rate)));
            line.push((f.x(t1), f.y(rate)));
        }
        let mut area = Vec::with_capacity(line.len() + 2);
        area.push((f.x(steps[0].0), f.y(0.0)));
        area.extend(line.iter().copied());
        area.push((f.x(pt as f64), f.y(0.0)));
        let _ = writeln!(
            o,
            "<polygon fill=\"{c}\" fill-opacity=\"0.15\" stroke=\"none\" points=\"{}\"/>",
            points(&area)
        );
        polyline(o, &line, c, 1.6, "requests/s per interval");
        keys.push((Swatch::Line(c), "per interval".into()));
        let mean = pq as f64 * 1e9 / pt as f64;
        let y = num(f.y(mean));
        let _ = writeln!(
            o,
            "<line x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#555\" stroke-width=\"1.2\" \
             stroke-dasharray=\"4 3\"><title>mean {}/s</title></line>",
            num(f.left),
            num(f.right),
            fmt_si(mean)
        );
        keys.push((Swatch::Dashed("#555"), format!("mean {}/s", fmt_si(mean))));
    }
    fault_markers(o, &f, &r.faults);
    legend(o, &keys);
    svg_close(o);
}

/// The latency histogram on a log axis, with p50 and p99.
fn latency_plot(o: &mut String, r: &Report) {
    // (lower bound, upper bound, count), µs, in increasing order.
    let h: Vec<(f64, u64)> = r
        .latency_histogram
        .iter()
        .copied()
        .filter(|(b, _)| b.is_finite() && *b > 0.0)
        .collect();
    let mut buckets = Vec::new();
    for (i, &(b, n)) in h.iter().enumerate() {
        let lo = if i > 0 {
            h[i - 1].0
        } else if h.len() > 1 && h[1].0 > b {
            b * b / h[1].0
        } else {
            b / 10f64.powf(0.25)
        };
        if lo > 0.0 && lo < b && buckets.last().is_none_or(|&(_, prev, _)| prev <= lo) {
            buckets.push((lo, b, n));
        }
    }
    // Empty buckets at either end only stretch the axis.
    let first = buckets.iter().position(|b| b.2 > 0).unwrap_or(0);
    let last = buckets.iter().rposition(|b| b.2 > 0).map_or(0, |i| i + 1);
    let buckets = buckets.get(first..last).unwrap_or_default();
    let total: u64 = buckets.iter().map(|b| b.2).sum();
    let (lx0, lx1) = match (buckets.first(), buckets.last()) {
        (Some(a), Some(z)) if total > 0 => (a.0.log10(), z.1.log10()),
        _ => (0.0, 3.0),
    };
    let lx1 = if lx1 > lx0 { lx1 } else { lx0 + 1.0 };
    let max = buckets.iter().map(|b| b.2).max().unwrap_or(0) as f64;
    let (y_hi, yt) = y_axis(max, true);
    let f = Frame {
        left: LEFT,
        right: W - 24.0,
        top: label_top(2),
        bottom: BOTTOM,
        x_lo: lx0,
        x_hi: lx1,
        y_lo: 0.0,
        y_hi,
    };
    // Ticks at decades, with 2 and 5 in between when the range is short.
    let eps = 1e-9;
    let decades: Vec<f64> = ticks(lx0, lx1, 1.0);
    let xt: Vec<(f64, String)> = if decades.len() >= 3 {
        decades
            .iter()
            .map(|&d| (d, fmt_us(10f64.powf(d))))
            .collect()
    } else {
        let mut v = Vec::new();
        let mut k = lx0.floor();
        while k <= lx1.ceil() && v.len() < 50 {
            for m in [1.0f64, 2.0, 5.0] {
                let t = k + m.log10();
                if t >= lx0 - eps && t <= lx1 + eps {
                    v.push((t, fmt_us(m * 10f64.powf(k))));
                }
            }
            k += 1.0;
        }
        v
    };
    svg_open(o, "latency distribution");
    axes(o, &f, &xt, &yt, "latency (log scale)", "requests");
    if total == 0 {
        empty(o, &f, "no latencies measured");
    } else {
        let c = PALETTE[0];
        for &(lo, hi, n) in buckets {
            if n == 0 {
                continue;
            }
            let x0 = f.x(lo.log10()) + 0.5;
            let x1 = (f.x(hi.log10()) - 0.5).max(x0 + 0.5);
            let y = f.y(n as f64).min(f.bottom - 1.0);
            let _ = writeln!(
                o,
                "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{c}\" fill-opacity=\"0.8\">\
                 <title>{} – {}: {} requests</title></rect>",
                num(x0),
                num(y),
                num(x1 - x0),
                num(f.bottom - y),
                fmt_us(lo),
                fmt_us(hi),
                fmt_int(n)
            );
        }
        let l = &r.latency_us;
        for (row, (name, v, color)) in [("p50", l.p50, "#1b7f3b"), ("p99", l.p99, "#c62828")]
            .into_iter()
            .enumerate()
        {
            if !(v.is_finite() && v > 0.0) {
                continue;
            }
            let x = f.x(v.log10());
            let label = format!("{name} {}", fmt_us(v));
            let (anchor, tx) = label_place(&f, x, &label);
            let _ = writeln!(
                o,
                "<g><line x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\" stroke=\"{color}\" stroke-width=\"1.5\"/>\
                 <text class=\"halo\" x=\"{}\" y=\"{}\" text-anchor=\"{anchor}\" style=\"fill:{color};font-weight:600\">{}</text></g>",
                num(label_y(row) + 3.0),
                num(f.bottom),
                num(tx),
                num(label_y(row)),
                esc(&label),
                x = num(x),
            );
        }
    }
    svg_close(o);
}

// ---------------------------------------------------------------------------
// Tables

fn tables(o: &mut String, r: &Report) {
    processors_table(o, r);

    o.push_str("<section>\n<h2>Traffic</h2>\n<div class=\"kvs\">\n");
    let c = &r.connections;
    kv(
        o,
        "Connections",
        &[
            ("opened", fmt_int(c.opened), false),
            ("established", fmt_int(c.established), false),
            ("completed", fmt_int(c.completed), false),
            ("reset", fmt_int(c.reset), false),
            ("failed", fmt_int(c.failed), c.failed > 0),
            ("open at end", fmt_int(c.open_at_end), false),
        ],
    );
    let b = &r.bytes;
    kv(
        o,
        "Requests and bytes",
        &[
            ("requests answered", fmt_int(r.requests), false),
            ("datagrams sent", fmt_int(r.datagrams_sent), false),
            ("datagrams answered", fmt_int(r.datagrams_answered), false),
            ("bytes sent", fmt_bytes(b.sent), false),
            ("bytes received", fmt_bytes(b.received), false),
            ("bytes lost", fmt_bytes(b.lost), b.lost > 0),
            ("goodput", fmt_bits(r.throughput_bit_s), false),
        ],
    );
    kv(
        o,
        "Client network",
        &[
            ("frames", fmt_int(r.lan.frames), false),
            (
                "dropped at full queues",
                fmt_int(r.lan.overflow),
                r.lan.overflow > 0,
            ),
            ("lost", fmt_int(r.lan.loss), false),
            ("corrupted", fmt_int(r.lan.corrupted), false),
        ],
    );
    let l = &r.latency_us;
    kv(
        o,
        "Latency",
        &[
            ("requests measured", fmt_int(l.count), false),
            ("mean", fmt_us(l.mean), false),
            ("p50", fmt_us(l.p50), false),
            ("p90", fmt_us(l.p90), false),
            ("p99", fmt_us(l.p99), false),
            ("p99.9", fmt_us(l.p999), false),
            ("max", fmt_us(l.max), false),
        ],
    );
    kv(
        o,
        "Cost per request",
        &[
            ("hops", fmt_f(r.hops_per_transaction, 2), false),
            (
                "CPU",
                format!("{} µs", fmt_f(r.cpu_us_per_transaction, 1)),
                false,
            ),
            (
                "AVT violations",
                fmt_int(r.avt_violations),
                r.avt_violations > 0,
            ),
        ],
    );
    o.push_str("</div>\n</section>\n");

    o.push_str("<section>\n<h2>Adapters</h2>\n");
    if r.adapters.is_empty() {
        o.push_str("<p class=\"muted\">None.</p>\n");
    } else {
        o.push_str(
            "<div class=\"wrap\"><table><thead><tr><th class=\"l\">adapter</th><th class=\"l\">state</th>\
             <th>rx frames</th><th>delivered</th><th>dropped</th><th>tx frames</th><th>rx bytes</th><th>tx bytes</th>\
             </tr></thead><tbody>\n",
        );
        for a in &r.adapters {
            let _ = writeln!(
                o,
                "<tr{}><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td{}>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td></tr>",
                if a.up { "" } else { " class=\"bad\"" },
                esc(&a.name),
                if a.up { "up" } else { "DOWN" },
                fmt_int(a.rx_frames),
                fmt_int(a.rx_delivered),
                if a.rx_dropped > 0 {
                    " class=\"bad\""
                } else {
                    ""
                },
                fmt_int(a.rx_dropped),
                fmt_int(a.tx_frames),
                fmt_bytes(a.rx_bytes),
                fmt_bytes(a.tx_bytes)
            );
        }
        o.push_str("</tbody></table></div>\n");
    }
    o.push_str("</section>\n");

    o.push_str("<section>\n<h2>Fabric planes</h2>\n");
    if r.planes.is_empty() {
        o.push_str("<p class=\"muted\">None.</p>\n");
    } else {
        o.push_str(
            "<div class=\"wrap\"><table><thead><tr><th class=\"l\">plane</th><th>packets</th><th>bytes</th>\
             <th>corrupted</th><th>dropped at failed parts</th></tr></thead><tbody>\n",
        );
        for p in &r.planes {
            let _ = writeln!(
                o,
                "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td{}>{}</td><td{}>{}</td></tr>",
                esc(&p.plane),
                fmt_int(p.packets),
                fmt_bytes(p.bytes),
                if p.corrupted > 0 {
                    " class=\"bad\""
                } else {
                    ""
                },
                fmt_int(p.corrupted),
                if p.dropped_down > 0 {
                    " class=\"bad\""
                } else {
                    ""
                },
                fmt_int(p.dropped_down)
            );
        }
        o.push_str("</tbody></table></div>\n");
    }
    o.push_str("</section>\n");

    o.push_str("<section>\n<h2>Faults</h2>\n");
    if r.faults.is_empty() {
        o.push_str("<p class=\"muted\">None.</p>\n");
    } else {
        o.push_str(
            "<div class=\"wrap\"><table><thead><tr><th>at</th><th class=\"l\">action</th>\
             <th class=\"l\">outcome</th></tr></thead><tbody>\n",
        );
        for f in &r.faults {
            let applied = f.outcome == "applied";
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td class=\"l w\">{}</td><td class=\"l w{}\">{}</td></tr>",
                fmt_ns(f.at_ns),
                esc(&f.action),
                if applied { "" } else { " bad" },
                esc(&f.outcome)
            );
        }
        o.push_str("</tbody></table></div>\n");
    }
    o.push_str("</section>\n");

    if !r.notes.is_empty() {
        o.push_str("<section>\n<h2>Notes</h2>\n<ul class=\"notes\">\n");
        for n in &r.notes {
            let _ = writeln!(o, "<li>{}</li>", esc(n));
        }
        o.push_str("</ul>\n</section>\n");
    }

    let _ = writeln!(o, "<section>\n<h2>Errors ({})</h2>", r.errors.len());
    if r.errors.is_empty() {
        o.push_str("<p class=\"muted\">None.</p>\n");
    } else {
        o.push_str("<ol class=\"errors\">\n");
        for e in r.errors.iter().take(MAX_ERRORS) {
            let _ = writeln!(o, "<li>{}</li>", esc(e));
        }
        o.push_str("</ol>\n");
        if r.errors.len() > MAX_ERRORS {
            let _ = writeln!(
                o,
                "<p class=\"muted\">… and {} more, not shown (the JSON report lists them all).</p>",
                r.errors.len() - MAX_ERRORS
            );
        }
    }
    o.push_str("</section>\n");
}

fn processors_table(o: &mut String, r: &Report) {
    let ps = &r.processors;
    o.push_str("<section>\n<h2>Processors</h2>\n");
    if ps.is_empty() {
        o.push_str("<p class=\"muted\">None.</p>\n</section>\n");
        return;
    }
    let up = ps.iter().filter(|p| p.up).count();
    let _ = writeln!(
        o,
        "<details{}><summary>{} processors, {up} up at the end</summary>",
        if ps.len() <= FOLD_ROWS { " open" } else { "" },
        ps.len()
    );
    o.push_str(
        "<div class=\"wrap\"><table><thead><tr><th>processor</th><th class=\"l\">state</th><th>taken</th>\
         <th>served</th><th>handed</th><th>requests</th><th>bytes in</th><th>bytes out</th>\
         <th class=\"l\">CPU busy</th><th>hops</th><th>hops/request</th></tr></thead><tbody>\n",
    );
    let mut sum = [0u64; 7];
    let mut cpu = 0.0;
    for p in ps {
        let state = match (p.up, p.failed_at_ns) {
            (true, None) => "up".to_string(),
            (true, Some(at)) => format!("up (failed at {})", fmt_ns(at)),
            (false, Some(at)) => format!("failed at {}", fmt_ns(at)),
            (false, None) => "down".to_string(),
        };
        let pct = if p.cpu_busy_pct.is_finite() {
            p.cpu_busy_pct.clamp(0.0, 100.0)
        } else {
            0.0
        };
        cpu += pct;
        for (s, v) in sum.iter_mut().zip([
            p.taken,
            p.accepted,
            p.handed,
            p.requests,
            p.bytes_in,
            p.bytes_out,
            p.hops,
        ]) {
            *s = s.saturating_add(v);
        }
        let _ = writeln!(
            o,
            "<tr{}><td>{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td class=\"l\">{}<span class=\"bar\" style=\"width:{}px\"></span></td>\
             <td>{}</td><td>{}</td></tr>",
            if p.up { "" } else { " class=\"bad\"" },
            p.processor,
            esc(&state),
            fmt_int(p.taken),
            fmt_int(p.accepted),
            fmt_int(p.handed),
            fmt_int(p.requests),
            fmt_bytes(p.bytes_in),
            fmt_bytes(p.bytes_out),
            format_args!("{pct:.1} %"),
            num(pct * 0.6),
            fmt_int(p.hops),
            ratio(p.hops, p.requests)
        );
    }
    let mean = cpu / ps.len() as f64;
    let _ = writeln!(
        o,
        "</tbody><tfoot><tr><td>all</td><td class=\"l\">{up}/{} up</td><td>{}</td><td>{}</td><td>{}</td>\
         <td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{mean:.1} % mean</td><td>{}</td><td>{}</td></tr></tfoot>\
         </table></div>\n</details>\n</section>",
        ps.len(),
        fmt_int(sum[0]),
        fmt_int(sum[1]),
        fmt_int(sum[2]),
        fmt_int(sum[3]),
        fmt_bytes(sum[4]),
        fmt_bytes(sum[5]),
        fmt_int(sum[6]),
        ratio(sum[6], sum[3])
    );
}

/// A small two-column table.
fn kv(o: &mut String, caption: &str, rows: &[(&str, String, bool)]) {
    let _ = writeln!(o, "<table><caption>{}</caption><tbody>", esc(caption));
    for (k, v, bad) in rows {
        let _ = writeln!(
            o,
            "<tr><td class=\"l\">{}</td><td{}>{}</td></tr>",
            esc(k),
            if *bad { " class=\"bad\"" } else { "" },
            esc(v)
        );
    }
    o.push_str("</tbody></table>\n");
}

// ---------------------------------------------------------------------------
// Text

/// Text made safe for HTML content and attribute values. Control characters
/// other than tab and newline become U+FFFD.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            '\t' | '\n' => o.push(c),
            c if c.is_control() => o.push('\u{fffd}'),
            c => o.push(c),
        }
    }
    o
}

/// At most `n` characters, with `…` when cut.
fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// An integer with thousands separated by commas.
fn fmt_int(n: u64) -> String {
    let s = n.to_string();
    let mut o = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            o.push(',');
        }
        o.push(c);
    }
    o
}

/// A float with `prec` decimals, or a dash when it is not a number.
fn fmt_f(x: f64, prec: usize) -> String {
    if x.is_finite() {
        format!("{x:.prec$}")
    } else {
        "–".into()
    }
}

/// About three significant digits, trailing zeros dropped.
fn fmt_g(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    let a = x.abs();
    let s = if a >= 100.0 || a == 0.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A count with k/M/G.
fn fmt_si(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    let a = x.abs();
    let (d, s) = if a >= 1e9 {
        (1e9, "G")
    } else if a >= 1e6 {
        (1e6, "M")
    } else if a >= 1e3 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    format!("{}{s}", fmt_g(x / d))
}

/// A duration given in µs, with a unit a person reads.
fn fmt_us(us: f64) -> String {
    if !us.is_finite() {
        return "–".into();
    }
    let a = us.abs();
    if a >= 1e6 {
        format!("{} s", fmt_g(us / 1e6))
    } else if a >= 1e3 {
        format!("{} ms", fmt_g(us / 1e3))
    } else if a >= 1.0 || a == 0.0 {
        format!("{} µs", fmt_g(us))
    } else {
        format!("{} ns", fmt_g(us * 1e3))
    }
}

fn fmt_bytes(n: u64) -> String {
    let x = n as f64;
    if n < 1000 {
        format!("{n} B")
    } else if x < 1e6 {
        format!("{} kB", fmt_g(x / 1e3))
    } else if x < 1e9 {
        format!("{} MB", fmt_g(x / 1e6))
    } else {
        format!("{} GB", fmt_g(x / 1e9))
    }
}

fn fmt_bits(bit_s: f64) -> String {
    if !bit_s.is_finite() {
        return "–".into();
    }
    if bit_s >= 1e9 {
        format!("{} Gbit/s", fmt_g(bit_s / 1e9))
    } else if bit_s >= 1e6 {
        format!("{} Mbit/s", fmt_g(bit_s / 1e6))
    } else if bit_s >= 1e3 {
        format!("{} kbit/s", fmt_g(bit_s / 1e3))
    } else {
        format!("{} bit/s", fmt_g(bit_s))
    }
}

fn ratio(a: u64, b: u64) -> String {
    if b == 0 {
        "–".into()
    } else {
        format!("{:.2}", a as f64 / b as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::super::report::{
        AdapterReport, Bytes, Connections, ExpectationReport, Latency, PlaneReport,
        ProcessorReport, Timeline,
    };
    use super::*;

    /// A report of `n` processors sampled `samples` times over 100 ms, with
    /// processor 2 failing at 40 ms.
    fn report(n: usize, samples: usize) -> Report {
        let end = 100_000_000u64;
        let at_ns: Vec<u64> = (1..=samples as u64)
            .map(|i| i * end / samples as u64)
            .collect();
        let fail_at = 40_000_000;
        let accepted = (0..n)
            .map(|p| {
                at_ns
                    .iter()
                    .map(|&t| {
                        let t = if p == 2 { t.min(fail_at) } else { t };
                        t / 1_000_000 * (p as u64 + 1)
                    })
                    .collect()
            })
            .collect();
        let cpu_pct = (0..n)
            .map(|p| {
                at_ns
                    .iter()
                    .map(|&t| {
                        if p == 2 && t > fail_at {
                            0.0
                        } else {
                            (p * 7 % 90) as f64 + 5.0
                        }
                    })
                    .collect()
            })
            .collect();
        let requests = at_ns.iter().map(|&t| t / 10_000).collect();
        Report {
            format: 1,
            scenario: "quick".into(),
            seed: 7,
            passed: false,
            trace_hash: "0123456789abcdef".into(),
            virtual_time_ns: end,
            wall_time_s: 0.5,
            real_time_factor: 0.2,
            stack: "parallel".into(),
            processors: (0..n)
                .map(|p| ProcessorReport {
                    processor: p as u32,
                    up: p != 2,
                    failed_at_ns: (p == 2).then_some(fail_at),
                    taken: 10,
                    accepted: 10 + p as u64,
                    handed: 0,
                    requests: 40,
                    bytes_in: 2560,
                    bytes_out: 40960,
                    cpu_busy_ns: 1_000_000,
                    cpu_busy_pct: 12.5,
                    hops: 3,
                })
                .collect(),
            adapters: vec![AdapterReport {
                name: "lan0".into(),
                up: true,
                rx_frames: 1000,
                rx_delivered: 990,
                rx_dropped: 10,
                tx_frames: 1200,
                rx_bytes: 123_456,
                tx_bytes: 1_234_567,
            }],
            planes: vec![PlaneReport {
                plane: "x".into(),
                packets: 5000,
                bytes: 2_000_000,
                corrupted: 0,
                dropped_down: 4,
            }],
            connections: Connections {
                opened: 100,
                established: 99,
                completed: 80,
                reset: 19,
                failed: 1,
                open_at_end: 0,
            },
            bytes: Bytes {
                sent: 25_600,
                received: 409_600,
                lost: 1024,
            },
            requests: 400,
            datagrams_sent: 0,
            datagrams_answered: 0,
            throughput_bit_s: 34_816_000.0,
            hops_per_transaction: 0.3,
            cpu_us_per_transaction: 12.0,
            latency_us: Latency {
                count: 400,
                mean: 60.0,
                p50: 50.0,
                p90: 90.0,
                p99: 300.0,
                p999: 900.0,
                max: 1000.0,
            },
            latency_histogram: (0..14)
                .map(|i| (10f64.powf(i as f64 / 4.0), (i * 37 % 50) as u64))
                .collect(),
            avt_violations: 0,
            lan: crate::run::report::LanReport::default(),
            faults: vec![FaultReport {
                at_ns: fail_at,
                action: "fail processor 2".into(),
                outcome: "applied".into(),
            }],
            expectations: vec![
                ExpectationReport {
                    name: "no_data_lost_on_survivors".into(),
                    passed: true,
                    value: 0.0,
                    detail: "0 bytes lost".into(),
                },
                ExpectationReport {
                    name: "reset_within".into(),
                    passed: false,
                    value: 7.5,
                    detail: "slowest reset 7.5ms > 5ms".into(),
                },
            ],
            errors: vec!["processor 2: connection refused".into()],
            notes: vec!["a note".into()],
            timeline: Timeline {
                at_ns,
                accepted,
                cpu_pct,
                requests,
            },
            detail: None,
        }
    }

    fn empty_report() -> Report {
        let mut r = report(0, 0);
        r.adapters.clear();
        r.planes.clear();
        r.faults.clear();
        r.expectations.clear();
        r.errors.clear();
        r.notes.clear();
        r.latency_histogram.clear();
        r.latency_us = Latency::default();
        r.virtual_time_ns = 0;
        r.wall_time_s = 0.0;
        r.real_time_factor = f64::NAN;
        r.throughput_bit_s = f64::INFINITY;
        r.hops_per_transaction = f64::NAN;
        r.cpu_us_per_transaction = f64::NAN;
        r.connections = Connections::default();
        r.bytes = Bytes::default();
        r.requests = 0;
        r
    }

    /// No `NaN` or `inf` anywhere (as a word).
    fn assert_finite(html: &str) {
        for w in html.split(|c: char| !c.is_ascii_alphanumeric()) {
            assert!(w != "NaN" && w != "inf", "non-finite number in the page");
        }
    }

    /// Opening and closing tags of the elements drawn here balance.
    fn assert_balanced(html: &str) {
        for tag in [
            "svg", "table", "tr", "td", "ul", "ol", "li", "section", "details", "g", "polyline",
            "polygon", "rect", "title", "text",
        ] {
            let open = html.matches(&format!("<{tag} ")).count()
                + html.matches(&format!("<{tag}>")).count();
            let self_closed = html
                .split(&format!("<{tag} "))
                .skip(1)
                .filter(|rest| rest.split('>').next().is_some_and(|t| t.ends_with('/')))
                .count();
            let close = html.matches(&format!("</{tag}>")).count();
            assert_eq!(open - self_closed, close, "<{tag}> does not balance");
        }
    }

    #[test]
    fn draws_the_plots_and_the_fault_markers() {
        let html = render(&report(4, 100));
        assert!(html.starts_with("<!doctype html>"));
        assert!(html.ends_with("</html>\n"));
        assert_eq!(html.matches("<svg ").count(), 4);
        // One line per processor in each of the two per-processor plots,
        // plus the requests line.
        assert_eq!(html.matches("<polyline ").count(), 9);
        assert!(html.matches("fail processor 2").count() >= 3);
        assert!(html.contains("class=\"fault\""));
        assert!(html.contains("stroke-dasharray"));
        assert!(html.contains("processor 2 (failed)"));
        assert!(html.contains(">p50 50 µs<"));
        assert!(html.contains(">p99 300 µs<"));
        assert!(html.contains("FAILED"));
        assert!(html.contains("<li class=\"fail\""));
        assert!(html.contains("✗"));
        assert!(html.contains("✓"));
        assert!(html.contains("time (ms)"));
        assert!(!html.contains("<script"));
        assert_finite(&html);
        assert_balanced(&html);
    }

    #[test]
    fn escapes_user_text() {
        let mut r = report(4, 10);
        r.scenario = "a<script>alert(1)</script>&b".into();
        r.errors.push("bad \"quote\" <b>&".into());
        r.faults[0].action = "<script>x</script>".into();
        r.expectations[0].detail = "x < y & y > z".into();
        r.adapters[0].name = "it's".into();
        let html = render(&r);
        assert!(html.contains("a&lt;script&gt;alert(1)&lt;/script&gt;&amp;b"));
        assert!(html.contains("bad &quot;quote&quot; &lt;b&gt;&amp;"));
        assert!(html.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert!(html.contains("x &lt; y &amp; y &gt; z"));
        assert!(html.contains("it&#39;s"));
        assert!(!html.contains("<script"));
        assert_balanced(&html);
    }

    #[test]
    fn renders_an_empty_report() {
        let html = render(&empty_report());
        assert_eq!(html.matches("<svg ").count(), 4);
        assert!(html.contains("no processors"));
        assert!(html.contains("no samples"));
        assert!(html.contains("no latencies measured"));
        assert_finite(&html);
        assert_balanced(&html);
        // Processors but no samples.
        let mut r = report(3, 0);
        r.latency_histogram = vec![(f64::NAN, 3), (f64::INFINITY, 1), (-1.0, 2)];
        r.latency_us.p50 = f64::NAN;
        r.timeline.cpu_pct = vec![vec![f64::NAN; 2]; 3];
        let html = render(&r);
        assert!(html.contains("no samples"));
        assert_finite(&html);
        assert_balanced(&html);
    }

    #[test]
    fn non_finite_samples_stay_out_of_the_svg() {
        let mut r = report(4, 20);
        r.timeline.cpu_pct[1][3] = f64::NAN;
        r.timeline.cpu_pct[0][4] = f64::INFINITY;
        r.latency_us.p99 = f64::INFINITY;
        r.wall_time_s = f64::NAN;
        let html = render(&r);
        assert_finite(&html);
        // A single bucket still gets a width.
        r.latency_histogram = vec![(100.0, 5)];
        assert_finite(&render(&r));
    }

    #[test]
    fn many_processors_draw_a_band() {
        let r = report(384, 100);
        let html = render(&r);
        assert!(html.contains("min–max of 384<"));
        assert!(html.contains("processor 2 (failed)"));
        // Band and mean and the failed processor, not 384 lines.
        assert_eq!(html.matches("<polyline ").count(), 2 * 2 + 1);
        assert!(html.len() < 1_000_000, "{} bytes", html.len());
        assert!(html.contains("<details><summary>384 processors"));
        assert_finite(&html);
        assert_balanced(&html);
    }

    #[test]
    fn is_deterministic() {
        let r = report(20, 50);
        assert_eq!(render(&r), render(&r));
    }

    #[test]
    fn lists_at_most_fifty_errors() {
        let mut r = report(2, 5);
        r.errors = (0..120).map(|i| format!("error {i}")).collect();
        let html = render(&r);
        assert!(html.contains("error 49<"));
        assert!(!html.contains("error 50<"));
        assert!(html.contains("… and 70 more"));
        assert!(html.contains("Errors (120)"));
    }

    #[test]
    fn formats() {
        assert_eq!(fmt_int(0), "0");
        assert_eq!(fmt_int(1234567), "1,234,567");
        assert_eq!(fmt_int(123), "123");
        assert_eq!(fmt_us(1.0), "1 µs");
        assert_eq!(fmt_us(1000.0), "1 ms");
        assert_eq!(fmt_us(0.1), "100 ns");
        assert_eq!(fmt_us(17.78), "17.8 µs");
        assert_eq!(fmt_bits(34_816_000.0), "34.8 Mbit/s");
        assert_eq!(fmt_tick(0.30000000000000004, 0.1), "0.3");
        assert_eq!(nice_step(100.0, 8), 20.0);
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(esc("a\u{0}b"), "a\u{fffd}b");
        let (hi, t) = y_axis(1234.0, true);
        assert_eq!(hi, 1500.0);
        assert_eq!(t.last().map(|x| x.1.as_str()), Some("1500"));
        let (_, t) = y_axis(0.0, true);
        assert_eq!(t.len(), 2);
        let (_, t) = y_axis(45_000.0, false);
        assert_eq!(t[1].1, "10k");
    }
}
