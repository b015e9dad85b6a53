//! A scenario's cluster serving the world outside the engine: the engine
//! of [`super::run`], built the same way, with one more LAN station — the
//! *outside station* — whose frames leave the engine (to a TAP device in
//! `snet live`, to a test's own client here and there) and whose frames
//! from outside enter the LAN at the current virtual time.
//!
//! The session knows nothing of the wall clock: its driver decides how far
//! to advance virtual time ([`LiveSession::advance`]) and when frames from
//! outside arrive ([`LiveSession::receive`]). Commands fail and restore
//! parts while it runs ([`Command`]); [`LiveSession::finish`] gives the
//! report of [`super::run`].
//!
//! ```
//! use snet_testbench::run::RunOptions;
//! use snet_testbench::run::live::{Command, LiveSession};
//! use snet_testbench::scenario::Scenario;
//!
//! let s = Scenario::from_yaml_str(
//!     "name: web\napps: [{ model: http, port: 80 }]\n",
//!     "web.yaml",
//! )
//! .unwrap();
//! let mut live = LiveSession::start(&s, RunOptions::default()).unwrap();
//! let later = live.now() + snet_fabric::time::Duration::from_ms(1);
//! live.advance(later);
//! let fail: Command = "fail processor 1".parse().unwrap();
//! live.command(&fail).unwrap();
//! assert!(live.status().contains("NO"));
//! let report = live.finish(0.001, Vec::new()).unwrap();
//! assert_eq!(report.faults.len(), 1);
//! ```

use std::str::FromStr;

use snet_fabric::time::{Duration, Instant};
use snet_nic_model::StationId;
use snet_nic_model::mac::{LinkSpeed, MacAddr};

use super::report::{Report, fmt_ns};
use super::{RunError, RunOptions, Runner, Started, finish_captures};
use crate::scenario::model::{Action, FaultTarget, Scenario};

/// The address the outside station attaches with (the switch learns the
/// outside's own source addresses as its frames arrive).
pub const OUTSIDE_MAC: MacAddr = MacAddr([0x02, 0, 0, 0xfe, 0, 0]);

/// Time between samples for the plots: a live session has no end known in
/// advance.
pub const SAMPLE_EVERY: Duration = Duration::from_ms(1000);

/// What a live session can be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `fail TARGET`: a fault target as in a scenario's faults
    /// (`processor 2`, `adapter lan0` or `adapter 0`, `link 3`, `router x0`,
    /// `plane y`, `processor running http`).
    Fail(FaultTarget),
    /// `restore TARGET`.
    Restore(FaultTarget),
    /// `status`: per-processor connections and requests.
    Status,
    /// `help`: the commands.
    Help,
    /// `quit` (or `exit`): end the session.
    Quit,
}

/// The commands, one per line, for `help`.
pub const HELP: &str = "\
commands:
  fail TARGET      fail a part now: processor N, adapter NAME (or its number N),
                   link N, router x0, plane x|y, processor running APP
  restore TARGET   restore it
  status           per-processor connections and requests, adapters, faults
  help             this list
  quit             end the session and print the report (also: exit, Ctrl-C)";

impl FromStr for Command {
    type Err = String;

    fn from_str(line: &str) -> Result<Self, String> {
        let t = line.trim();
        let (word, rest) = t.split_once(char::is_whitespace).unwrap_or((t, ""));
        let rest = rest.trim();
        let bare = |c: Command| {
            if rest.is_empty() {
                Ok(c)
            } else {
                Err(format!("`{word}` takes nothing after it (found `{rest}`)"))
            }
        };
        let target = |verb: &str| -> Result<FaultTarget, String> {
            if rest.is_empty() {
                return Err(format!(
                    "`{verb}` needs a target: {verb} processor N, {verb} adapter N, …"
                ));
            }
            rest.parse::<FaultTarget>()
        };
        match word {
            "fail" => target("fail").map(Command::Fail),
            "restore" => target("restore").map(Command::Restore),
            "status" => bare(Command::Status),
            "help" | "?" => bare(Command::Help),
            "quit" | "exit" => bare(Command::Quit),
            "" => Err("an empty command: type help for the commands".into()),
            w => Err(format!(
                "unknown command `{w}`: the commands are fail TARGET, restore TARGET, status, help and quit"
            )),
        }
    }
}

/// Figures of the outside station.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutsideCounters {
    /// Frames that came in from outside.
    pub frames_in: u64,
    /// Their bytes (without FCS).
    pub bytes_in: u64,
    /// Frames from outside the LAN did not take (the station's link down).
    pub refused_in: u64,
    /// Frames that went out.
    pub frames_out: u64,
    /// Their bytes (without FCS).
    pub bytes_out: u64,
    /// Frames for outside the LAN corrupted on the way (left out).
    pub corrupted_out: u64,
}

/// A scenario's cluster running against the outside world.
pub struct LiveSession<'a> {
    r: Runner<'a>,
    seed: u64,
    notes: Vec<String>,
    pcap: Option<std::path::PathBuf>,
    station: StationId,
    counters: OutsideCounters,
    scratch: Vec<(StationId, Vec<u8>)>,
}

impl std::fmt::Debug for LiveSession<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSession")
            .field("scenario", &self.r.s.name)
            .field("now", &self.r.rig.now())
            .field("station", &self.station)
            .field("counters", &self.counters)
            .finish()
    }
}

impl<'a> LiveSession<'a> {
    /// Builds the cluster of `s` exactly as [`super::run`] does (the
    /// applications listening, the client populations attached, the
    /// faults of the file scheduled from now) and attaches the outside
    /// station to its LAN at the first adapter's link speed.
    /// `options.progress` is not used.
    pub fn start(s: &'a Scenario, mut options: RunOptions) -> Result<Self, RunError> {
        let Started {
            runner: mut r,
            seed,
            notes,
        } = Runner::start(s, &mut options, SAMPLE_EVERY)?;
        let speed = s.adapters.first().map_or(LinkSpeed::GBIT_1, |a| {
            LinkSpeed::from_bits_per_s(a.link_speed.bits_per_s())
        });
        let station = r.rig.attach_external_station(OUTSIDE_MAC, speed);
        Ok(LiveSession {
            r,
            seed,
            notes,
            pcap: options.pcap,
            station,
            counters: OutsideCounters::default(),
            scratch: Vec::new(),
        })
    }

    /// The scenario.
    pub fn scenario(&self) -> &Scenario {
        self.r.s
    }

    /// Notes from the start (a listening socket that did not come up, a
    /// placement the stack forced).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.r.rig.now()
    }

    /// Virtual time since the servers came up (scenario time).
    pub fn elapsed(&self) -> Duration {
        self.r.rig.now().saturating_since(self.r.t0)
    }

    /// When the engine has its next event (`None`: nothing queued).
    pub fn next_event(&self) -> Option<Instant> {
        self.r.rig.cluster.engine.peek_time()
    }

    /// Runs the cluster up to `until` (nothing if it is not later than
    /// now), applying the scenario's faults as they fall due. Quiet
    /// stretches cost nothing, however long.
    pub fn advance(&mut self, until: Instant) {
        while self.r.rig.now() < until {
            self.r.skip_quiet(until);
            if self.r.rig.now() < until {
                self.r.slice(until);
            }
        }
    }

    /// A frame from outside (Ethernet, without FCS) enters the LAN now
    /// from the outside station. False if the LAN did not take it.
    pub fn receive(&mut self, frame: &[u8]) -> bool {
        match self.r.rig.external_transmit(self.station, frame) {
            Some(_) => {
                self.counters.frames_in += 1;
                self.counters.bytes_in += frame.len() as u64;
                true
            }
            None => {
                self.counters.refused_in += 1;
                false
            }
        }
    }

    /// Appends the frames the LAN delivered to the outside station since
    /// the last call (Ethernet, without FCS) to `out`, in order.
    pub fn take_frames(&mut self, out: &mut Vec<Vec<u8>>) {
        let bad = self.r.rig.take_external_frames(&mut self.scratch);
        self.counters.corrupted_out += bad;
        for (_, f) in self.scratch.drain(..) {
            self.counters.frames_out += 1;
            self.counters.bytes_out += f.len() as u64;
            out.push(f);
        }
    }

    /// The outside station's figures.
    pub fn outside(&self) -> OutsideCounters {
        self.counters
    }

    /// Carries out a fail or restore command now; it is listed with the
    /// faults of the report, with its outcome. `Ok` says what was done;
    /// `Err` why it could not be (the session carries on). An adapter may
    /// be named by its number (`adapter 0`) as well as by its name.
    /// Other commands are the driver's: they return `Err`.
    pub fn command(&mut self, c: &Command) -> Result<String, String> {
        let (action, what) = match c {
            Command::Fail(t) => {
                let t = self.resolve(t);
                let what = format!("fail {t}");
                (Action::Fail(t), what)
            }
            Command::Restore(t) => {
                let t = self.resolve(t);
                let what = format!("restore {t}");
                (Action::Restore(t), what)
            }
            other => return Err(format!("{other:?} is not a fault command")),
        };
        let now = self.r.rig.now();
        self.r.record(&action, now)?;
        Ok(format!(
            "{what}: applied at {}",
            fmt_ns(now.saturating_since(self.r.t0).as_ns())
        ))
    }

    /// `adapter N` names the adapter numbered N when no adapter has the
    /// name N.
    fn resolve(&self, t: &FaultTarget) -> FaultTarget {
        if let FaultTarget::Adapter(name) = t {
            let adapters = &self.r.s.adapters;
            if !adapters.iter().any(|a| a.name == *name)
                && let Some(a) = name.parse::<usize>().ok().and_then(|i| adapters.get(i))
            {
                return FaultTarget::Adapter(a.name.clone());
            }
        }
        t.clone()
    }

    /// Per processor: whether it is up, the connections it took and
    /// served, the requests it answered and its bytes; then the adapters,
    /// the outside station and the faults so far.
    pub fn status(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let l = self.r.ledger.borrow();
        let _ = writeln!(o, "virtual time {}", fmt_ns(self.elapsed().as_ns()));
        let _ = writeln!(
            o,
            "{:>4} {:>4} {:>8} {:>8} {:>9} {:>12} {:>12}",
            "cpu", "up", "taken", "served", "requests", "bytes in", "bytes out"
        );
        for (p, up) in self.r.rig.hosts.up.iter().enumerate() {
            let f = l.servers.get(p).copied().unwrap_or_default();
            let _ = writeln!(
                o,
                "{:>4} {:>4} {:>8} {:>8} {:>9} {:>12} {:>12}",
                p,
                if *up { "yes" } else { "NO" },
                f.taken,
                f.accepted,
                f.requests,
                f.bytes_in,
                f.bytes_out
            );
        }
        for (i, n) in self.r.rig.cluster.nics.iter().enumerate() {
            let c = n.counters();
            let _ = writeln!(
                o,
                "adapter {:<8} {:<4} rx {} frames ({} delivered)  tx {} frames",
                self.r.s.adapters.get(i).map_or("?", |a| a.name.as_str()),
                if self.r.adapters_up.get(i).copied().unwrap_or(true) {
                    "up"
                } else {
                    "DOWN"
                },
                c.rx_frames,
                c.rx_delivered,
                c.tx_frames
            );
        }
        let c = self.counters;
        let _ = writeln!(
            o,
            "outside: {} frames in ({} bytes), {} frames out ({} bytes)",
            c.frames_in, c.bytes_in, c.frames_out, c.bytes_out
        );
        for f in &self.r.applied {
            let _ = writeln!(
                o,
                "fault at {}: {} ({})",
                fmt_ns(f.at_ns),
                f.action,
                f.outcome
            );
        }
        if !l.errors.is_empty() {
            let _ = writeln!(o, "application errors: {}", l.errors.len());
        }
        o
    }

    /// Ends the session: closes the captures and judges the scenario's
    /// expectations like [`super::run`]; `wall_s` is the wall time the
    /// session lasted (for the real-time factor), `notes` go into the
    /// report after the session's own.
    pub fn finish(mut self, wall_s: f64, notes: Vec<String>) -> Result<Report, RunError> {
        if let Some(dir) = self.pcap.as_deref() {
            finish_captures(&mut self.r.rig, self.r.s, dir)?;
        }
        let c = self.counters;
        let mut all = self.notes;
        all.push(format!(
            "outside station: {} frames in ({} bytes), {} frames out ({} bytes); the connections of clients outside the cluster count per processor (taken, served), not in the connection and latency lines",
            c.frames_in, c.bytes_in, c.frames_out, c.bytes_out
        ));
        if c.refused_in + c.corrupted_out > 0 {
            all.push(format!(
                "outside station: {} frames from outside refused (link down), {} frames for outside corrupted on the LAN",
                c.refused_in, c.corrupted_out
            ));
        }
        all.extend(notes);
        Ok(self.r.report(self.seed, wall_s, all))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_with_scenario_fault_targets() {
        let ok = |t: &str| t.parse::<Command>().unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_eq!(
            ok("fail processor 2"),
            Command::Fail(FaultTarget::Processor(2))
        );
        assert_eq!(
            ok("  restore   processor 2 "),
            Command::Restore(FaultTarget::Processor(2))
        );
        assert_eq!(
            ok("fail adapter 0"),
            Command::Fail(FaultTarget::Adapter("0".into()))
        );
        assert_eq!(
            ok("fail adapter lan1"),
            Command::Fail(FaultTarget::Adapter("lan1".into()))
        );
        assert_eq!(ok("fail link 3"), Command::Fail(FaultTarget::Link(3)));
        assert_eq!(
            ok("fail processor running http"),
            Command::Fail(FaultTarget::AppSelector("http".into()))
        );
        assert_eq!(ok("status"), Command::Status);
        assert_eq!(ok("help"), Command::Help);
        assert_eq!(ok("quit"), Command::Quit);
        assert_eq!(ok("exit"), Command::Quit);
    }

    #[test]
    fn bad_commands_say_what_is_allowed() {
        let err = |t: &str| t.parse::<Command>().unwrap_err();
        assert!(err("explode").contains("unknown command `explode`"));
        assert!(err("fail").contains("needs a target"));
        assert!(err("fail processor").contains("is not a fault target"));
        assert!(err("fail processor two").contains("is not a fault target"));
        assert!(err("fail cpu 2").contains("write processor N"));
        assert!(err("status now").contains("takes nothing after it"));
        assert!(err("").contains("empty"));
        assert!(err("fail processor -1").contains("is not a fault target"));
    }
}
