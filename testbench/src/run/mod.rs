//! Running a scenario: build the cluster, start the applications and
//! client populations, apply the faults on time, judge the expectations,
//! and report.
//!
//! ```no_run
//! use snet_testbench::scenario::Scenario;
//! use snet_testbench::run::{run, RunOptions};
//! let s = Scenario::load("examples/quickstart.yaml").unwrap();
//! let report = run(&s, RunOptions::default()).unwrap();
//! println!("{}", report.table());
//! ```

pub mod build;
pub mod clients;
mod expect;
pub mod html;
pub mod http;
pub mod ledger;
pub mod live;
pub mod models;
pub mod report;
pub mod wire;

use std::path::PathBuf;

use snet_fabric::network::FaultTarget as FabricFault;
use snet_fabric::time::{Duration, Instant};
use snet_host_lib::net::NetRig;

use crate::scenario::layout::Layout;
use crate::scenario::model::{Action, FaultTarget, Scenario, TriggerEvent, When};
use ledger::{Ledger, Shared};
use report::{FaultReport, Report, Timeline};

/// How to run.
#[derive(Default)]
pub struct RunOptions {
    /// Replaces the scenario's seed.
    pub seed: Option<u64>,
    /// Directory for packet captures (`<adapter>.pcap`, `fabric.pcap`).
    /// The fabric capture needs every packet, so it turns the fabric's
    /// transaction-level bursts off: the run is timed packet by packet and
    /// can differ in detail (and trace hash) from a run without it.
    pub pcap: Option<PathBuf>,
    /// With `pcap`: capture the adapters' LAN ports only, not the fabric
    /// (the run is then the same as without captures).
    pub pcap_lan_only: bool,
    /// Directory the scenario's relative paths (the filter file) start from.
    pub base_dir: Option<PathBuf>,
    /// Called now and then with (virtual time done, virtual time total).
    pub progress: Option<Box<dyn FnMut(Duration, Duration)>>,
    /// Your own servers: the scenario's app of this name runs your
    /// application instead of its model, on the same processors (its port,
    /// clients and faults stay as written). See `examples/custom_app.rs`.
    pub apps: Vec<(String, CustomApp)>,
    /// Your own clients: the client hosts of the population of this name
    /// run your behaviour instead of the built-in one.
    pub clients: Vec<(String, CustomClient)>,
    /// Keep every connection's record in [`Report::detail`].
    pub keep_connections: bool,
}

/// Makes a user's application for processor `p`; it can record into the
/// run's ledger like the built-in models do.
pub type CustomApp = Box<dyn Fn(&Shared, usize) -> Box<dyn snet_host_lib::app::Application>>;

/// Makes a user's client behaviour for client host `h` of its population
/// (hosts carry [`build::members_per_host`] clients each).
pub type CustomClient = Box<dyn Fn(&Shared, usize) -> Box<dyn snet_host_lib::net::ClientBehaviour>>;

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("seed", &self.seed)
            .field("pcap", &self.pcap)
            .field("pcap_lan_only", &self.pcap_lan_only)
            .field("base_dir", &self.base_dir)
            .field("apps", &self.apps.iter().map(|a| &a.0).collect::<Vec<_>>())
            .field(
                "clients",
                &self.clients.iter().map(|c| &c.0).collect::<Vec<_>>(),
            )
            .field("keep_connections", &self.keep_connections)
            .finish()
    }
}

/// Why a run could not happen.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The scenario cannot be built as written (exit code 2).
    #[error("{0}")]
    Invalid(String),
    /// A capture file could not be written.
    #[error("{0}")]
    Io(String),
}

/// Longest the servers get to start listening before the clients start.
const SETUP_LIMIT: Duration = Duration::from_ms(10);

/// Samples taken for the plots.
const SAMPLES: u64 = 100;

struct Fail {
    processor: usize,
    at: Instant,
    restored: Option<Instant>,
}

/// The state of a running scenario.
struct Runner<'a> {
    s: &'a Scenario,
    layout: Layout,
    rig: NetRig,
    ledger: Shared,
    instances: Vec<build::Instance>,
    /// Which of the scenario's faults happened.
    faults_done: Vec<bool>,
    applied: Vec<FaultReport>,
    fails: Vec<Fail>,
    adapters_up: Vec<bool>,
    timeline: Timeline,
    t0: Instant,
    busy0: Vec<u64>,
    last_busy: Vec<u64>,
    last_sample: Instant,
    errors: Vec<String>,
    /// Time between samples for the plots.
    step: Duration,
    /// Longest slice: event-triggered faults are checked this often.
    tick: Duration,
    next_sample: Instant,
}

/// Runs `s`; the report says whether every expectation held.
pub fn run(s: &Scenario, mut options: RunOptions) -> Result<Report, RunError> {
    let wall = std::time::Instant::now();
    let total = s.duration.to_fabric();
    let step = Duration::from_ps((total.as_ps() / SAMPLES).max(1));
    let Started {
        runner: mut r,
        seed,
        notes,
    } = Runner::start(s, &mut options, step)?;
    let end = r.t0 + total;
    let mut last_progress = std::time::Instant::now();
    while r.rig.now() < end {
        r.slice(end);
        if let Some(p) = options.progress.as_mut()
            && last_progress.elapsed().as_millis() >= 200
        {
            last_progress = std::time::Instant::now();
            p(r.rig.now().saturating_since(r.t0), total);
        }
    }
    if let Some(p) = options.progress.as_mut() {
        p(total, total);
    }
    if let Some(dir) = options.pcap.as_deref() {
        finish_captures(&mut r.rig, s, dir)?;
    }
    let wall_s = wall.elapsed().as_secs_f64();
    let detail = options.keep_connections.then(|| report::RunDetail {
        t0: r.t0,
        conns: r.ledger.borrow().conns.clone(),
    });
    let mut report = r.report(seed, wall_s, notes);
    report.detail = detail;
    Ok(report)
}

/// A runner with the cluster up, and what its start found.
struct Started<'a> {
    runner: Runner<'a>,
    seed: u64,
    notes: Vec<String>,
}

fn start_captures(
    rig: &mut NetRig,
    s: &Scenario,
    dir: &std::path::Path,
    fabric: bool,
) -> Result<(), RunError> {
    use snet_nic_model::capture::Capture;
    std::fs::create_dir_all(dir)
        .map_err(|e| RunError::Io(format!("--pcap {}: {e}", dir.display())))?;
    for (i, a) in s.adapters.iter().enumerate() {
        let path = dir.join(format!("{}.pcap", a.name));
        let c = Capture::create(&path, snet_nic_model::capture::LINKTYPE_ETHERNET)
            .map_err(|e| RunError::Io(format!("{}: {e}", path.display())))?;
        rig.cluster
            .capture_port(i, c)
            .map_err(|e| RunError::Io(e.to_string()))?;
    }
    if fabric {
        let path = dir.join("fabric.pcap");
        let c = Capture::create(&path, snet_nic_model::capture::LINKTYPE_FABRIC)
            .map_err(|e| RunError::Io(format!("{}: {e}", path.display())))?;
        rig.cluster.capture_fabric(c);
    }
    Ok(())
}

fn finish_captures(rig: &mut NetRig, s: &Scenario, dir: &std::path::Path) -> Result<(), RunError> {
    for i in 0..s.adapters.len() {
        if let Some(c) = rig.cluster.take_port_capture(i) {
            c.finish()
                .map_err(|e| RunError::Io(format!("{}: {e}", dir.display())))?;
        }
    }
    if let Some(c) = rig.cluster.take_fabric_capture() {
        c.finish()
            .map_err(|e| RunError::Io(format!("{}: {e}", dir.display())))?;
    }
    Ok(())
}

impl<'a> Runner<'a> {
    /// Builds the cluster of `s`, starts the applications, waits until
    /// every listening socket is up (at most [`SETUP_LIMIT`]; scenario time
    /// 0 is then), attaches the client populations and applies the faults
    /// due at time 0. Samples for the plots are taken every `step`.
    fn start(
        s: &'a Scenario,
        options: &mut RunOptions,
        step: Duration,
    ) -> Result<Started<'a>, RunError> {
        let seed = options.seed.unwrap_or(s.seed);
        let layout = s.layout().map_err(RunError::Invalid)?;
        let (config, mut notes) = build::net_config(s, seed, &layout).map_err(RunError::Invalid)?;
        let max_payload = config.ipc.max_payload();
        let mut rig = NetRig::build(config).map_err(|e| {
            if e.contains("adapter memory") {
                RunError::Invalid(format!(
                    "{e}; in a scenario, processors.memory sets the memory of every fabric endpoint, adapters included"
                ))
            } else {
                RunError::Invalid(e)
            }
        })?;
        if let Some(tree) =
            build::filter_tree(s, options.base_dir.as_deref()).map_err(RunError::Invalid)?
        {
            for nic in rig.cluster.nics.iter_mut() {
                nic.firmware_mut().set_filter(Box::new(tree.clone()));
            }
        }
        if let Some(dir) = &options.pcap {
            start_captures(&mut rig, s, dir, !options.pcap_lan_only)?;
        }
        let n = s.processors.count as usize;
        let ledger = Ledger::new(n);
        let (mut instances, more) = build::instances(s, max_payload).map_err(RunError::Invalid)?;
        notes.extend(more);
        for (name, make) in std::mem::take(&mut options.apps) {
            let app = s
                .apps
                .iter()
                .enumerate()
                .find(|(_, a)| build::app_name(a) == name)
                .ok_or_else(|| RunError::Invalid(format!("no app named {name} in the scenario")))?;
            let make = std::rc::Rc::new(make);
            instances.retain(|i| i.app != app.0);
            for p in app.1.processors.resolve(s.processors.count) {
                let m = make.clone();
                let p = p as usize;
                instances.push(build::Instance {
                    processor: p,
                    listens: true,
                    app: app.0,
                    make: Box::new(move |l| m(l, p)),
                });
            }
        }
        for i in &instances {
            rig.spawn(i.processor, (i.make)(&ledger))
                .map_err(RunError::Invalid)?;
        }
        // The servers start first: scenario time 0 is when every listening
        // socket is up (at most SETUP_LIMIT after the cluster came up).
        let expected = instances.iter().filter(|i| i.listens).count() as u64;
        let setup_end = rig.now() + SETUP_LIMIT;
        while ledger.borrow().listening < expected && rig.now() < setup_end {
            let until = (rig.now() + Duration::from_us(20)).min(setup_end);
            rig.cluster.run_until(until, &mut rig.hosts);
        }
        let up = ledger.borrow().listening;
        if up < expected {
            notes.push(format!(
                "only {up} of {expected} listening sockets were up {} after start; the clients started anyway",
                report::fmt_ns(SETUP_LIMIT.as_ns())
            ));
        }
        let t0 = rig.now();
        build::attach_clients(s, seed, &mut rig, &ledger, t0).map_err(RunError::Invalid)?;
        for (name, make) in std::mem::take(&mut options.clients) {
            let hosts = build::population_hosts(s, &name)
                .ok_or_else(|| RunError::Invalid(format!("no client population named {name}")))?;
            for (k, h) in hosts.enumerate() {
                rig.attach_client(h, make(&ledger, k))
                    .map_err(RunError::Invalid)?;
            }
        }
        let busy0: Vec<u64> = rig.hosts.cpus.iter().map(|c| c.busy().as_ps()).collect();
        let mut runner = Runner {
            s,
            layout,
            rig,
            ledger,
            instances,
            faults_done: vec![false; s.faults.len()],
            applied: Vec::new(),
            fails: Vec::new(),
            adapters_up: vec![true; s.adapters.len()],
            timeline: Timeline {
                accepted: vec![Vec::new(); n],
                cpu_pct: vec![Vec::new(); n],
                ..Timeline::default()
            },
            t0,
            last_busy: busy0.clone(),
            busy0,
            last_sample: t0,
            errors: Vec::new(),
            step,
            // Event-triggered faults are checked this often.
            tick: Duration::from_ps(step.as_ps().min(Duration::from_us(100).as_ps())),
            next_sample: t0 + step,
        };
        runner.apply_faults();
        Ok(Started {
            runner,
            seed,
            notes,
        })
    }

    /// Runs one slice, ending no later than `limit`: up to the next check
    /// of the event-triggered faults, the next sample or the next timed
    /// fault; then applies the faults due and takes the sample due.
    fn slice(&mut self, limit: Instant) {
        let now = self.rig.now();
        let mut until = (now + self.tick).min(self.next_sample).min(limit);
        if let Some(t) = self.next_timed_fault()
            && t > now
        {
            until = until.min(t);
        }
        self.rig.cluster.run_until(until, &mut self.rig.hosts);
        self.apply_faults();
        if self.rig.now() >= self.next_sample {
            self.sample();
            self.next_sample += self.step;
        }
    }

    /// Moves the clock over a quiet stretch before `limit` in one step:
    /// when nothing is queued in the engine for more than a slice, and no
    /// sample or timed fault falls due, the clock goes to just before the
    /// first of them. Nothing runs in such a stretch, so no fault waiting
    /// for an event count can fall due in it either. (A live session, idle
    /// for an hour, would otherwise take its slices one by one.)
    fn skip_quiet(&mut self, limit: Instant) {
        let now = self.rig.now();
        let mut to = self
            .rig
            .cluster
            .engine
            .peek_time()
            .unwrap_or(Instant::MAX)
            .min(limit)
            .min(self.next_sample);
        if let Some(t) = self.next_timed_fault()
            && t > now
        {
            to = to.min(t);
        }
        if to > now + self.tick {
            // Nothing is queued before `to`: this only sets the clock.
            let quiet_end = Instant::from_ps(to.as_ps() - 1);
            self.rig.cluster.run_until(quiet_end, &mut self.rig.hosts);
        }
    }

    fn next_timed_fault(&self) -> Option<Instant> {
        self.s
            .faults
            .iter()
            .zip(&self.faults_done)
            .filter(|(_, done)| !**done)
            .filter_map(|(f, _)| match f.when {
                When::At(t) => Some(self.t0 + t.to_fabric()),
                When::After(_) => None,
            })
            .min()
    }

    fn apply_faults(&mut self) {
        let now = self.rig.now();
        for i in 0..self.s.faults.len() {
            if self.faults_done[i] {
                continue;
            }
            let due = match self.s.faults[i].when {
                When::At(t) => self.t0 + t.to_fabric() <= now,
                When::After(t) => {
                    let l = self.ledger.borrow();
                    let count = match t.event {
                        TriggerEvent::Connections => l.accepted,
                        TriggerEvent::Requests => l.requests,
                    };
                    count >= t.count
                }
            };
            if due {
                self.faults_done[i] = true;
                let action = self.s.faults[i].action.clone();
                let _ = self.record(&action, now);
            }
        }
    }

    /// Applies `action` now and records it, with its outcome, for the
    /// report as happening at `now`.
    fn record(&mut self, action: &Action, now: Instant) -> Result<(), String> {
        let outcome = self.apply(action);
        let text = match action {
            Action::Fail(t) => format!("fail {t}"),
            Action::Restore(t) => format!("restore {t}"),
            Action::Set(s) => {
                let mut parts = Vec::new();
                if let Some(p) = s.lan_loss {
                    parts.push(format!("lan_loss {}", p.get()));
                }
                if let Some(p) = s.fabric_crc_error_rate {
                    parts.push(format!("fabric_crc_error_rate {}", p.get()));
                }
                format!("set {}", parts.join(", "))
            }
        };
        self.applied.push(FaultReport {
            at_ns: now.saturating_since(self.t0).as_ns(),
            action: text,
            outcome: match &outcome {
                Ok(()) => "applied".into(),
                Err(e) => e.clone(),
            },
        });
        outcome
    }

    fn processor_of(&self, t: &FaultTarget) -> Option<usize> {
        match t {
            FaultTarget::Processor(p) => Some(*p as usize),
            FaultTarget::AppSelector(a) => self.s.processor_running(a).map(|p| p as usize),
            _ => None,
        }
    }

    fn apply(&mut self, action: &Action) -> Result<(), String> {
        let now = self.rig.now();
        match action {
            Action::Fail(t) | Action::Restore(t) => {
                let fail = matches!(action, Action::Fail(_));
                if let Some(p) = self.processor_of(t) {
                    if p >= self.rig.hosts.processors.len() {
                        return Err(format!("there is no processor {p}"));
                    }
                    if fail {
                        if !self.rig.hosts.up[p] {
                            return Err(format!("processor {p} is already down"));
                        }
                        self.rig.fail_processor(p);
                        self.fails.push(Fail {
                            processor: p,
                            at: now,
                            restored: None,
                        });
                    } else {
                        if self.rig.hosts.up[p] {
                            return Err(format!("processor {p} is up"));
                        }
                        self.rig.restore_processor(p)?;
                        for i in self.instances.iter().filter(|i| i.processor == p) {
                            self.rig.spawn(p, (i.make)(&self.ledger))?;
                        }
                        if let Some(f) = self.fails.iter_mut().rev().find(|f| f.processor == p) {
                            f.restored = Some(self.rig.now());
                        }
                    }
                    return Ok(());
                }
                let target = match t {
                    FaultTarget::Link(l) => {
                        if *l as usize >= self.layout.links.len() {
                            return Err(format!("there is no link {l}"));
                        }
                        FabricFault::Link(*l as usize)
                    }
                    FaultTarget::Router { plane, index } => {
                        let i = self
                            .layout
                            .routers
                            .iter()
                            .position(|r| r.name.plane == *plane && r.name.index == *index)
                            .ok_or_else(|| format!("there is no router {plane}{index}"))?;
                        FabricFault::Router(snet_fabric::topology::RouterId(i as u32))
                    }
                    FaultTarget::Plane(p) => FabricFault::Plane(p.to_fabric()),
                    FaultTarget::Adapter(name) => {
                        let a = self
                            .s
                            .adapters
                            .iter()
                            .position(|x| x.name == *name)
                            .ok_or_else(|| format!("there is no adapter {name}"))?;
                        if fail {
                            self.rig.fail_adapter(a)?;
                        } else {
                            self.rig.restore_adapter(a)?;
                        }
                        self.adapters_up[a] = !fail;
                        return Ok(());
                    }
                    FaultTarget::Processor(_) | FaultTarget::AppSelector(_) => {
                        return Err(format!("no processor runs {t}"));
                    }
                };
                let r = if fail {
                    self.rig.cluster.fail(target)
                } else {
                    self.rig.cluster.restore(target)
                };
                r.map_err(|e| e.to_string())
            }
            Action::Set(set) => {
                if let Some(p) = set.lan_loss {
                    self.rig.cluster.lan.set_loss_rate(p.get())?;
                }
                if let Some(p) = set.fabric_crc_error_rate {
                    self.rig.cluster.fabric.set_crc_error_rate(p.get())?;
                }
                Ok(())
            }
        }
    }

    fn sample(&mut self) {
        let now = self.rig.now();
        let span = now.saturating_since(self.last_sample).as_ps().max(1);
        self.last_sample = now;
        self.timeline
            .at_ns
            .push(now.saturating_since(self.t0).as_ns());
        let l = self.ledger.borrow();
        self.timeline.requests.push(l.requests);
        for p in 0..self.timeline.accepted.len() {
            self.timeline.accepted[p].push(l.servers.get(p).map_or(0, |s| s.accepted));
            let busy = self.rig.hosts.cpus[p].busy().as_ps();
            let d = busy.saturating_sub(self.last_busy[p]);
            self.last_busy[p] = busy;
            self.timeline.cpu_pct[p].push((d as f64 / span as f64 * 100.0).min(100.0));
        }
    }

    fn report(mut self, seed: u64, wall_s: f64, notes: Vec<String>) -> Report {
        self.errors.extend(self.rig.hosts.errors.iter().cloned());
        expect::build_report(&self, seed, wall_s, notes)
    }
}
