//! The single-point-of-failure sweep: "if this component failed, would the
//! service still run?", asked of every component of a scenario's topology.
//!
//! For every processor, adapter, plane, router and link, the scenario runs
//! once with that one component failed at a set time (and never restored).
//! A component whose failure breaks an expectation that held without it is
//! a single point of failure.
//!
//! How the scenario is changed for a sweep run:
//! - its own faults are left out (unless [`SweepOptions::keep_faults`]), so
//!   that each run has exactly one failure;
//! - a scenario without expectations is judged by `no_data_lost_on_survivors`
//!   and `all_survivor_connections_complete`: no byte lost, no connection of
//!   a surviving processor reset or failed;
//! - `no_stalled_connections` is added when the scenario does not have it
//!   (bound: 1s, or half the time from the failure to the end if that is
//!   shorter): a failure that leaves clients hanging, with no reset and no
//!   answer, breaks the service as surely as one that loses bytes. Give the
//!   run enough time after the failure for TCP to send lost segments again
//!   (a retransmission timeout is hundreds of milliseconds): a second or
//!   more;
//! - `survivors_take_new_connections` is about a failed processor; it is
//!   judged only in runs that fail a processor.
//!
//! Before the sweep, a baseline run with no failure must pass: otherwise
//! every component would be blamed for what is wrong with the scenario.

use serde::Serialize;

use crate::parallel;
use crate::run::report::Report;
use crate::run::{RunOptions, run};
use crate::scenario::model::{
    Action, DEFAULT_STALL, Expectation, Fault, FaultTarget, Role, Scenario, When,
};
use crate::scenario::units::Duration;

/// How to sweep.
#[derive(Debug, Clone, Default)]
pub struct SweepOptions {
    /// When the component fails (default: a quarter of the scenario's
    /// duration).
    pub at: Option<Duration>,
    /// Keep the scenario's own faults in every run.
    pub keep_faults: bool,
    /// Replaces the scenario's seed.
    pub seed: Option<u64>,
    /// Threads (default: the machine's cores).
    pub jobs: Option<usize>,
    /// Directory the scenario's relative paths start from.
    pub base_dir: Option<std::path::PathBuf>,
    /// Sweep only components of these kinds (see [`KINDS`]); empty: all.
    pub only: Vec<String>,
}

/// The kinds of component, in sweep order.
pub const KINDS: [&str; 5] = ["processor", "adapter", "plane", "router", "link"];

/// A component of the topology the sweep fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Component {
    /// `processor`, `adapter`, `plane`, `router` or `link`.
    pub kind: &'static str,
    /// The fault target, as a scenario writes it: `link 3`.
    pub name: String,
    /// What it is, for links: `x: router x0 – processor 2`.
    pub detail: String,
    #[serde(skip)]
    target: FaultTarget,
}

/// Every component of the scenario's topology, in a fixed order:
/// processors, adapters, planes, routers, links.
pub fn components(s: &Scenario) -> Result<Vec<Component>, String> {
    let layout = s.layout()?;
    let mut v = Vec::new();
    let mut push = |kind, target: FaultTarget, detail: String| {
        v.push(Component {
            kind,
            name: target.to_string(),
            detail,
            target,
        });
    };
    for p in 0..s.processors.count {
        push("processor", FaultTarget::Processor(p), String::new());
    }
    for a in &s.adapters {
        push(
            "adapter",
            FaultTarget::Adapter(a.name.clone()),
            format!(
                "{}{}",
                a.ip.iter()
                    .map(|ip| ip.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                match a.role {
                    Some(Role::Primary) => ", primary",
                    Some(Role::Backup) => ", backup",
                    None => "",
                }
            ),
        );
    }
    for &p in &s.fabric.planes {
        push("plane", FaultTarget::Plane(p), String::new());
    }
    for r in &layout.routers {
        push(
            "router",
            FaultTarget::Router {
                plane: r.name.plane,
                index: r.name.index,
            },
            format!("{} ports", r.ports),
        );
    }
    for i in 0..layout.links.len() {
        push(
            "link",
            FaultTarget::Link(i as u32),
            layout.link_ends(s, i).unwrap_or_default(),
        );
    }
    Ok(v)
}

/// The stall bound the sweep judges by when the scenario sets none: the
/// default of `no_stalled_connections`, or half the time from the failure
/// to the end of the run if that is shorter.
pub fn stall_bound(s: &Scenario, at: Duration) -> Duration {
    let half_rest = Duration::from_ps(s.duration.as_ps().saturating_sub(at.as_ps()) / 2);
    DEFAULT_STALL.min(half_rest).max(Duration::from_ps(1))
}

/// The scenario of one sweep run: `failed` fails at `at`, and nothing else
/// (unless the scenario's faults are kept).
pub fn scenario_for(
    s: &Scenario,
    failed: Option<&Component>,
    at: Duration,
    keep_faults: bool,
) -> Scenario {
    let mut run = s.clone();
    if !keep_faults {
        run.faults.clear();
    }
    if run.expect.is_empty() {
        run.expect = vec![
            Expectation::NoDataLostOnSurvivors,
            Expectation::AllSurvivorConnectionsComplete,
        ];
    }
    let processor_fails = matches!(
        failed.map(|c| &c.target),
        Some(FaultTarget::Processor(_) | FaultTarget::AppSelector(_))
    ) || run.faults.iter().any(|f| {
        matches!(
            f.action,
            Action::Fail(FaultTarget::Processor(_) | FaultTarget::AppSelector(_))
        )
    });
    if !run
        .expect
        .iter()
        .any(|e| matches!(e, Expectation::NoStalledConnections(_)))
    {
        run.expect
            .push(Expectation::NoStalledConnections(stall_bound(s, at)));
    }
    if !processor_fails {
        run.expect
            .retain(|e| !matches!(e, Expectation::SurvivorsTakeNewConnections));
    }
    if let Some(c) = failed {
        run.faults.push(Fault {
            when: When::At(at),
            action: Action::Fail(c.target.clone()),
        });
    }
    run
}

/// An expectation a run broke.
#[derive(Debug, Clone, Serialize)]
pub struct Broken {
    /// The expectation as written.
    pub expectation: String,
    /// Its numbers.
    pub detail: String,
}

/// The result of one run of the sweep.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The failed component (`None` for the baseline).
    pub component: Option<Component>,
    /// Every expectation held and no application met an error.
    pub passed: bool,
    /// The expectations that did not hold.
    pub broken: Vec<Broken>,
    /// Errors the applications met.
    pub errors: Vec<String>,
    /// Connections reset or never established.
    pub connections_reset: u64,
    /// Connection attempts that never completed the handshake.
    pub connections_failed: u64,
    /// Bytes lost or corrupted.
    pub bytes_lost: u64,
    /// The run's trace hash (`snet run` of the same scenario and seed with
    /// this fault gives it again).
    pub trace_hash: String,
    /// Why the run could not happen (the scenario with this fault is
    /// invalid), if so.
    pub error: Option<String>,
    /// Wall time of the run, s.
    pub wall_time_s: f64,
}

impl Outcome {
    fn from_report(component: Option<Component>, r: &Report) -> Outcome {
        Outcome {
            component,
            passed: r.passed,
            broken: r
                .expectations
                .iter()
                .filter(|e| !e.passed)
                .map(|e| Broken {
                    expectation: e.name.clone(),
                    detail: e.detail.clone(),
                })
                .collect(),
            errors: r.errors.clone(),
            connections_reset: r.connections.reset,
            connections_failed: r.connections.failed,
            bytes_lost: r.bytes.lost,
            trace_hash: r.trace_hash.clone(),
            error: None,
            wall_time_s: r.wall_time_s,
        }
    }

    fn from_error(component: Option<Component>, e: String) -> Outcome {
        Outcome {
            component,
            passed: false,
            broken: Vec::new(),
            errors: Vec::new(),
            connections_reset: 0,
            connections_failed: 0,
            bytes_lost: 0,
            trace_hash: String::new(),
            error: Some(e),
            wall_time_s: 0.0,
        }
    }

    /// A single point of failure: the run happened and did not pass.
    pub fn is_spof(&self) -> bool {
        self.component.is_some() && self.error.is_none() && !self.passed
    }
}

/// The whole sweep.
#[derive(Debug, Clone, Serialize)]
pub struct Sweep {
    /// The scenario's name.
    pub scenario: String,
    /// The seed of every run.
    pub seed: u64,
    /// When each component failed, ns of virtual time.
    pub at_ns: u64,
    /// The scenario's duration, ns.
    pub duration_ns: u64,
    /// The scenario's own faults were kept.
    pub kept_faults: bool,
    /// The run with no failure.
    pub baseline: Outcome,
    /// One run per component, in [`components`] order (empty when the
    /// baseline failed).
    pub runs: Vec<Outcome>,
    /// Names of the single points of failure.
    pub single_points_of_failure: Vec<String>,
}

impl Sweep {
    /// The baseline passed and no component is a single point of failure,
    /// and every run happened.
    pub fn passed(&self) -> bool {
        self.baseline.passed
            && self.single_points_of_failure.is_empty()
            && self.runs.iter().all(|r| r.error.is_none())
    }

    /// As JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The terminal table.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "spof sweep of {}: {} components, each failed alone at {} of {} (seed {}{})",
            self.scenario,
            self.runs.len(),
            Duration::from_ns(self.at_ns),
            Duration::from_ns(self.duration_ns),
            self.seed,
            if self.kept_faults {
                ", with the scenario's own faults"
            } else {
                ""
            }
        );
        let _ = writeln!(
            o,
            "baseline (no failure): {}",
            if self.baseline.passed {
                "passed".to_string()
            } else {
                format!("FAILED: {}", why(&self.baseline))
            }
        );
        if self.runs.is_empty() {
            return o;
        }
        let name_w = self
            .runs
            .iter()
            .filter_map(|r| r.component.as_ref())
            .map(|c| c.name.chars().count())
            .max()
            .unwrap_or(9)
            .max(9);
        let _ = writeln!(
            o,
            "\n  {:<name_w$}  {:<6}  {:>5} {:>6} {:>9}  what",
            "component", "SPOF", "reset", "failed", "lost B"
        );
        for r in &self.runs {
            let Some(c) = &r.component else { continue };
            let verdict = if r.error.is_some() {
                "error"
            } else if r.is_spof() {
                "YES"
            } else {
                "no"
            };
            let what = if r.error.is_some() || r.is_spof() {
                why(r)
            } else {
                c.detail.clone()
            };
            let _ = writeln!(
                o,
                "  {:<name_w$}  {:<6}  {:>5} {:>6} {:>9}  {}",
                c.name, verdict, r.connections_reset, r.connections_failed, r.bytes_lost, what
            );
        }
        let _ = writeln!(o);
        if self.single_points_of_failure.is_empty() {
            let _ = writeln!(o, "no single point of failure");
        } else {
            let _ = writeln!(
                o,
                "{} single point{} of failure: {}",
                self.single_points_of_failure.len(),
                if self.single_points_of_failure.len() == 1 {
                    ""
                } else {
                    "s"
                },
                self.single_points_of_failure.join(", ")
            );
        }
        o
    }
}

/// Why a run did not pass, in one line.
fn why(r: &Outcome) -> String {
    if let Some(e) = &r.error {
        return format!("cannot run: {e}");
    }
    let mut parts: Vec<String> = r
        .broken
        .iter()
        .map(|b| format!("{} ({})", b.expectation, b.detail))
        .collect();
    if let Some(e) = r.errors.first() {
        parts.push(format!(
            "{} application error{}, first: {e}",
            r.errors.len(),
            if r.errors.len() == 1 { "" } else { "s" }
        ));
    }
    parts.join("; ")
}

/// What the sweep is told as it goes: (runs done, runs in all, the run
/// just finished).
pub type Progress<'a> = &'a (dyn Fn(usize, usize, &Outcome) + Sync);

fn run_one(s: &Scenario, component: Option<&Component>, at: Duration, o: &SweepOptions) -> Outcome {
    let scenario = scenario_for(s, component, at, o.keep_faults);
    let options = RunOptions {
        seed: o.seed,
        base_dir: o.base_dir.clone(),
        ..RunOptions::default()
    };
    match run(&scenario, options) {
        Ok(r) => Outcome::from_report(component.cloned(), &r),
        Err(e) => Outcome::from_error(component.cloned(), e.to_string()),
    }
}

/// Runs the baseline, then every component's run on `jobs` threads.
/// An error is returned only when the sweep cannot start (the topology
/// cannot be laid out, or the failure time is not inside the run).
pub fn sweep(s: &Scenario, o: &SweepOptions, progress: Progress<'_>) -> Result<Sweep, String> {
    let at = o.at.unwrap_or(Duration::from_ps(s.duration.as_ps() / 4));
    if at >= s.duration {
        return Err(format!(
            "the failure time {at} is not before the end of the run ({})",
            s.duration
        ));
    }
    if let Some(k) = o.only.iter().find(|k| !KINDS.contains(&k.as_str())) {
        return Err(format!(
            "`{k}` is not a kind of component: the kinds are {}",
            KINDS.join(", ")
        ));
    }
    let parts: Vec<Component> = components(s)?
        .into_iter()
        .filter(|c| o.only.is_empty() || o.only.iter().any(|k| k == c.kind))
        .collect();
    let total = parts.len() + 1;
    let baseline = run_one(s, None, at, o);
    progress(1, total, &baseline);
    let seed = o.seed.unwrap_or(s.seed);
    let mut sweep = Sweep {
        scenario: s.name.clone(),
        seed,
        at_ns: at.as_ns(),
        duration_ns: s.duration.as_ns(),
        kept_faults: o.keep_faults,
        baseline,
        runs: Vec::new(),
        single_points_of_failure: Vec::new(),
    };
    if let Some(e) = &sweep.baseline.error {
        return Err(e.clone());
    }
    if !sweep.baseline.passed {
        return Ok(sweep);
    }
    let done = std::sync::atomic::AtomicUsize::new(1);
    let jobs = o.jobs.unwrap_or_else(parallel::cores);
    sweep.runs = parallel::map(
        &parts,
        jobs,
        |_, c| run_one(s, Some(c), at, o),
        |_, r| {
            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            progress(n, total, r);
        },
    );
    sweep.single_points_of_failure = sweep
        .runs
        .iter()
        .filter(|r| r.is_spof())
        .filter_map(|r| r.component.as_ref().map(|c| c.name.clone()))
        .collect();
    Ok(sweep)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(text: &str) -> Scenario {
        Scenario::from_yaml_str(text, "t.yaml").expect("valid")
    }

    #[test]
    fn components_cover_the_topology_in_order() {
        let s = scenario(
            "name: t\nprocessors: { count: 2 }\nadapters:\n  - { name: lan0, ip: 198.18.0.10 }\n",
        );
        let names: Vec<String> = components(&s)
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect();
        // One router per plane; 2 processors and 1 adapter on each plane.
        assert_eq!(
            names,
            [
                "processor 0",
                "processor 1",
                "adapter lan0",
                "plane x",
                "plane y",
                "router x0",
                "router y0",
                "link 0",
                "link 1",
                "link 2",
                "link 3",
                "link 4",
                "link 5"
            ]
        );
        let c = components(&s).unwrap();
        assert_eq!(c[7].detail, "x: router x0 – processor 0");
        assert_eq!(c[12].detail, "y: router y0 – adapter lan0");
    }

    #[test]
    fn a_run_has_exactly_one_failure_and_fitting_expectations() {
        let s = scenario(
            "name: t\nduration: 10ms\nprocessors: { count: 2 }\nfaults:\n  - { at: 5ms, fail: processor 1 }\nexpect:\n  - survivors_take_new_connections\n  - no_avt_violations\n",
        );
        let parts = components(&s).unwrap();
        let link = parts.iter().find(|c| c.kind == "link").unwrap();
        let r = scenario_for(&s, Some(link), Duration::from_ms(7), false);
        assert_eq!(r.faults.len(), 1);
        assert_eq!(r.faults[0].action, Action::Fail(FaultTarget::Link(0)));
        assert_eq!(r.faults[0].when, When::At(Duration::from_ms(7)));
        assert_eq!(
            r.expect,
            vec![
                Expectation::NoAvtViolations,
                Expectation::NoStalledConnections(Duration::from_ps(1_500_000_000))
            ],
            "half of the 3ms from the failure to the end"
        );
        let p = &parts[1];
        let r = scenario_for(&s, Some(p), Duration::from_ms(7), false);
        assert_eq!(r.expect.len(), 3, "a processor run keeps it");
        let kept = scenario_for(&s, Some(link), Duration::from_ms(7), true);
        assert_eq!(kept.faults.len(), 2);
        assert_eq!(kept.expect.len(), 3, "the kept fault fails a processor");
        let bare = scenario("name: t\nduration: 5s\n");
        let r = scenario_for(&bare, None, Duration::from_ms(7), false);
        assert_eq!(
            r.expect,
            vec![
                Expectation::NoDataLostOnSurvivors,
                Expectation::AllSurvivorConnectionsComplete,
                Expectation::NoStalledConnections(DEFAULT_STALL)
            ]
        );
        assert!(r.faults.is_empty());
    }

    #[test]
    fn a_failure_time_after_the_run_is_refused() {
        let s = scenario("name: t\nduration: 10ms\n");
        let o = SweepOptions {
            at: Some(Duration::from_ms(10)),
            ..SweepOptions::default()
        };
        let e = sweep(&s, &o, &|_, _, _| {}).unwrap_err();
        assert!(e.contains("not before the end"), "{e}");
        let o = SweepOptions {
            only: vec!["adapter".into(), "switch".into()],
            ..SweepOptions::default()
        };
        let e = sweep(&s, &o, &|_, _, _| {}).unwrap_err();
        assert!(e.contains("`switch` is not a kind"), "{e}");
    }
}
