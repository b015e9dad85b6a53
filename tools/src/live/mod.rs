//! `snet live`: a scenario's cluster paced to the wall clock, its LAN
//! joined to a Linux TAP device, so real clients (curl, nc, a browser)
//! reach the cluster address; fault commands on standard input or a Unix
//! socket while it runs.
//!
//! Threads: the TAP reader, standard input, the control socket and the
//! signal handler hand their input to the session thread over one channel
//! ([`Input`]); the session thread runs the engine
//! ([`snet_testbench::run::live::LiveSession`]) and hands the frames for
//! outside to the TAP writer over another. The engine never reads the wall
//! clock: the [`pace::Pacer`] tells the session thread how far to advance
//! virtual time, and how long to sleep when nothing is due.

mod control;
mod pace;
mod tap;

use std::path::PathBuf;
use std::time::Duration as Wall;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded, unbounded};
use snet_fabric::time::Duration;
use snet_testbench::run::live::{Command, HELP, LiveSession};
use snet_testbench::run::{RunError, RunOptions};
use snet_testbench::scenario::{Scenario, Stack};

use control::Reply;
use pace::{Clock, Pacer, WallClock};

/// Arguments of `snet live`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Example (as root; docs/live.md has the whole recipe):

  $ ip netns add snetlab
  $ ip netns exec snetlab snet live examples/live-http.yaml --tap snet0 --tap-address 198.18.0.1/15
  snet live: live-http: 4 processors, 1 adapter serving 198.18.0.10, parallel stack
    web: http on tcp port 80 in processors all
  TAP snet0 up with 198.18.0.1/15
  ready: the cluster answers on TAP snet0; type help for the commands, quit or Ctrl-C to end

  (in another terminal)
  $ ip netns exec snetlab curl -si http://198.18.0.10/ | grep X-Snet
  X-Snet-Processor: 0
  $ ip netns exec snetlab curl -s http://198.18.0.10/bytes/1000000 | tail -n 1
  000f4200 yzabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz

  (back in the first, type)
  fail processor 2
  ok: fail processor 2: applied at 21.403s
  status
  quit
  (the report, as snet run prints it)

Commands (standard input, or one per line on --control PATH):
  fail TARGET, restore TARGET   processor N, adapter NAME or N, link N,
                                router x0, plane x|y, processor running APP
  status, help, quit

The session ends with quit, Ctrl-C (SIGINT), SIGTERM, SIGHUP, or the end of
standard input (unless --control is given). The TAP device snet created
goes away when snet exits.

Exit codes: 0 every expectation held, 1 an expectation failed, an
application met an error or the TAP device failed, 2 the file is invalid,
the TAP device cannot be opened (needs root or CAP_NET_ADMIN) or another
usage error.")]
pub struct LiveArgs {
    /// The scenario file (YAML; see docs/scenario-reference.md).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The TAP device the cluster's LAN reaches: created if it does not
    /// exist (needs root or CAP_NET_ADMIN), removed at exit if snet
    /// created it.
    #[arg(long, value_name = "NAME")]
    pub tap: String,
    /// Give the TAP device this address, its MTU from the scenario's
    /// first adapter, and bring it up (with `ip`), e.g. 198.18.0.1/15.
    #[arg(long, value_name = "ADDRESS/LENGTH")]
    pub tap_address: Option<String>,
    /// Also take commands on this Unix socket (one per line, one answer
    /// per command), e.g. with `socat - UNIX-CONNECT:PATH`.
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Write packet captures into this directory, as `snet run --pcap`:
    /// one per adapter's LAN port (Ethernet) and fabric.pcap.
    #[arg(long, value_name = "DIR")]
    pub pcap: Option<PathBuf>,
    /// Use this seed instead of the file's.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Write the final report as JSON (docs/report-reference.md).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// What the session thread is handed.
#[derive(Debug)]
pub enum Input {
    /// A frame from the TAP device (Ethernet, without FCS).
    Frame(Vec<u8>),
    /// A command line and where its answer goes.
    Line {
        /// The line as typed.
        text: String,
        /// Where the answer goes.
        reply: Reply,
    },
    /// Standard input ended.
    StdinClosed,
    /// SIGINT or SIGTERM.
    Signal(i32),
    /// Reading the TAP device failed.
    TapFailed(String),
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// `quit`.
    Quit,
    /// A signal.
    Signal(i32),
    /// Standard input ended (and there is no control socket).
    StdinClosed,
    /// Every input is gone.
    Disconnected,
    /// The TAP device failed.
    TapFailed(String),
}

/// Longest stretch of virtual time run without looking at the inputs.
const MAX_SLICE: Duration = Duration::from_ms(1);
/// Longest sleep when nothing is due (inputs wake the thread earlier).
const IDLE_CAP: Wall = Wall::from_millis(50);
/// A lag beyond this is warned about (once).
const LAG_WARNING: Wall = Wall::from_millis(100);
/// Frames from the TAP device waiting for the session at most (then the
/// reader waits, and the kernel's queue drops, as with a busy adapter).
const INPUT_QUEUE: usize = 4096;

/// The session thread's loop ([`Driver::run`]): paces the session to its
/// clock, feeds it the frames and commands that come in, and sends the
/// frames for outside on.
pub struct Driver<'s, 'a, C: Clock> {
    session: &'s mut LiveSession<'a>,
    clock: C,
    pacer: Pacer,
    outside: Sender<Vec<u8>>,
    /// Whether the end of standard input ends the session.
    stdin_ends: bool,
    frames: Vec<Vec<u8>>,
}

impl<'s, 'a, C: Clock> Driver<'s, 'a, C> {
    /// A driver starting now: the session's current virtual time is the
    /// clock's now.
    pub fn new(
        session: &'s mut LiveSession<'a>,
        clock: C,
        outside: Sender<Vec<u8>>,
        stdin_ends: bool,
    ) -> Self {
        let pacer = Pacer::new(clock.now(), session.now());
        Driver {
            session,
            clock,
            pacer,
            outside,
            stdin_ends,
            frames: Vec::new(),
        }
    }

    /// The largest lag behind the wall clock so far.
    pub fn max_lag(&self) -> Wall {
        self.pacer.max_lag()
    }

    /// Runs until an input ends the session; virtual time is then the
    /// wall clock's (unless the model is behind).
    pub fn run(&mut self, inputs: &Receiver<Input>) -> End {
        let end = self.serve(inputs);
        self.catch_up();
        self.flush();
        end
    }

    fn serve(&mut self, inputs: &Receiver<Input>) -> End {
        loop {
            // Whatever is waiting first.
            while let Ok(input) = inputs.try_recv() {
                if let Some(end) = self.handle(input) {
                    return end;
                }
            }
            // Events due: run them, at most MAX_SLICE of virtual time at a
            // time. (With nothing due, virtual time need not move: a frame
            // or command brings it up to the clock when it comes.)
            let target = self.pacer.target(self.clock.now());
            if let Some(next) = self.session.next_event()
                && next <= target
            {
                self.session.advance(target.min(next + MAX_SLICE));
                self.flush();
                let next = self.session.next_event();
                if let Some(lag) = self.pacer.check_lag(self.clock.now(), next, LAG_WARNING) {
                    eprintln!(
                        "snet live: warning: the model runs {:.1} ms behind the wall clock; it runs as fast as it can, so time in the cluster passes slower than outside (see docs/live.md, limitations)",
                        lag.as_secs_f64() * 1e3
                    );
                }
                continue;
            }
            self.flush();
            let wait = self
                .pacer
                .wait(self.clock.now(), self.session.next_event(), IDLE_CAP);
            match inputs.recv_timeout(wait) {
                Ok(input) => {
                    if let Some(end) = self.handle(input) {
                        return end;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return End::Disconnected,
            }
        }
    }

    /// Sends the frames for outside.
    fn flush(&mut self) {
        self.session.take_frames(&mut self.frames);
        for f in self.frames.drain(..) {
            // The writer is gone only when the session is ending.
            let _ = self.outside.send(f);
        }
    }

    /// Brings virtual time up to the wall clock, unless the model is more
    /// than [`MAX_SLICE`] behind (then it stays where it is, and what comes
    /// in now happens as soon as the model can).
    fn catch_up(&mut self) {
        let target = self.pacer.target(self.clock.now());
        let late = self
            .session
            .next_event()
            .map_or(Duration::ZERO, |t| target.saturating_since(t));
        if late <= MAX_SLICE {
            self.session.advance(target);
        }
    }

    fn handle(&mut self, input: Input) -> Option<End> {
        match input {
            Input::Frame(f) => {
                // It enters at the virtual time of its arrival.
                self.catch_up();
                self.session.receive(&f);
                None
            }
            Input::Line { text, reply } => self.line(&text, reply),
            Input::StdinClosed => self.stdin_ends.then_some(End::StdinClosed),
            Input::Signal(s) => Some(End::Signal(s)),
            Input::TapFailed(e) => Some(End::TapFailed(e)),
        }
    }

    /// Carries out one command line.
    fn line(&mut self, text: &str, reply: Reply) -> Option<End> {
        let text = text.trim();
        if text.is_empty() || text.starts_with('#') {
            if let Reply::Socket(_) = reply {
                reply.send("");
            }
            return None;
        }
        let answer = match text.parse::<Command>() {
            Ok(Command::Quit) => {
                reply.send("bye: ending the session");
                return Some(End::Quit);
            }
            Ok(Command::Help) => HELP.to_string(),
            Ok(Command::Status) => {
                self.catch_up();
                let lag = self.pacer.lag(self.clock.now(), self.session.next_event());
                format!(
                    "{}model behind the wall clock: {:.1} ms now, {:.1} ms at most",
                    self.session.status(),
                    lag.as_secs_f64() * 1e3,
                    self.pacer.max_lag().as_secs_f64() * 1e3
                )
            }
            Ok(c) => {
                // The fault happens at the wall clock's time.
                self.catch_up();
                let r = self.session.command(&c);
                self.flush();
                match r {
                    Ok(done) => format!("ok: {done}"),
                    Err(e) => format!("error: {text}: {e}"),
                }
            }
            Err(e) => format!("error: {e}"),
        };
        reply.send(&answer);
        None
    }
}

/// The one-paragraph description printed at the start.
fn describe(s: &Scenario) -> String {
    let ips: Vec<String> = s
        .adapters
        .first()
        .map(|a| a.ip.iter().map(|ip| ip.to_string()).collect())
        .unwrap_or_default();
    let mut out = format!(
        "snet live: {}: {} processor{}, {} adapter{} serving {}, {} stack",
        s.name,
        s.processors.count,
        if s.processors.count == 1 { "" } else { "s" },
        s.adapters.len(),
        if s.adapters.len() == 1 { "" } else { "s" },
        ips.join(" and "),
        match s.stack {
            Stack::Parallel => "parallel",
            Stack::Conventional { .. } => "conventional",
        }
    );
    for a in &s.apps {
        out.push_str(&format!(
            "\n  {}: {} on {} port {} in processors {}",
            a.name, a.model, a.protocol, a.port, a.processors
        ));
    }
    out
}

/// Runs `snet live`; returns the exit code.
pub fn run(args: &LiveArgs) -> u8 {
    let Some(scenario) = crate::load_scenario(&args.file) else {
        return crate::EXIT_USAGE;
    };
    if let Err(e) = tap::check_name(&args.tap) {
        eprintln!("snet live: {e}");
        return crate::EXIT_USAGE;
    }
    if let Some(a) = &args.tap_address {
        match tap::parse_cidr(a) {
            Ok((net, len)) => {
                let cluster = scenario.adapters.first().map(|x| x.ip.clone());
                for ip in cluster.into_iter().flatten() {
                    if ip == net {
                        eprintln!(
                            "snet live: --tap-address {a}: {ip} is the cluster's own address; give the TAP another one, e.g. 198.18.0.1/15"
                        );
                        return crate::EXIT_USAGE;
                    }
                    if ip.is_ipv4() == net.is_ipv4() && !tap::contains(net, len, ip) {
                        eprintln!(
                            "snet live: note: the cluster address {ip} is outside {a}; clients need a route to it"
                        );
                    }
                }
            }
            Err(e) => {
                eprintln!("snet live: {e}");
                return crate::EXIT_USAGE;
            }
        }
    }
    if let Some(path) = &args.control
        && let Err(e) = control::check_path(path)
    {
        eprintln!("snet live: {e}");
        return crate::EXIT_USAGE;
    }
    let options = RunOptions {
        seed: args.seed,
        pcap: args.pcap.clone(),
        base_dir: args.file.parent().map(PathBuf::from),
        ..RunOptions::default()
    };
    let mut session = match LiveSession::start(&scenario, options) {
        Ok(s) => s,
        Err(RunError::Invalid(e)) => {
            eprintln!("{}: cannot run: {e}", args.file.display());
            return crate::EXIT_USAGE;
        }
        Err(RunError::Io(e)) => {
            eprintln!("{}: {e}", args.file.display());
            return crate::EXIT_USAGE;
        }
    };
    let device = match tap::open(&args.tap) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("snet live: {e}");
            return crate::EXIT_USAGE;
        }
    };
    println!("{}", describe(&scenario));
    for n in session.notes() {
        println!("note: {n}");
    }
    if let Some(a) = &args.tap_address {
        let mtu = scenario.adapters.first().map_or(1500, |x| x.mtu);
        if let Err(e) = tap::configure(&device.name, a, mtu) {
            eprintln!("snet live: TAP {}: {e}", device.name);
            return crate::EXIT_USAGE;
        }
        println!("TAP {} up with {}", device.name, a.trim());
    } else {
        println!(
            "TAP {} opened; give it an address and bring it up, e.g.: ip addr add 198.18.0.1/15 dev {0}; ip link set {0} up",
            device.name
        );
    }
    let (to_session, inputs) = bounded::<Input>(INPUT_QUEUE);
    let (to_tap, frames) = unbounded::<Vec<u8>>();
    let started = (|| -> Result<_, String> {
        device
            .spawn_reader(to_session.clone())
            .map_err(|e| e.to_string())?;
        let writer = device.spawn_writer(frames).map_err(|e| e.to_string())?;
        control::spawn_signals(to_session.clone(), args.control.clone())?;
        control::spawn_stdin(to_session.clone()).map_err(|e| e.to_string())?;
        let socket = match &args.control {
            Some(path) => Some(control::bind(path, to_session.clone())?),
            None => None,
        };
        Ok((writer, socket))
    })();
    let (writer, socket) = match started {
        Ok(x) => x,
        Err(e) => {
            eprintln!("snet live: {e}");
            return crate::EXIT_USAGE;
        }
    };
    drop(to_session);
    if let Some(p) = &args.control {
        println!("control socket {}", p.display());
    }
    println!(
        "ready: the cluster answers on TAP {}; type help for the commands, quit or Ctrl-C to end",
        device.name
    );
    let clock = WallClock::start();
    let mut driver = Driver::new(&mut session, clock, to_tap, args.control.is_none());
    let end = driver.run(&inputs);
    let max_lag = driver.max_lag();
    drop(driver);
    let wall_s = clock.now().as_secs_f64();
    // The writer finishes the frames it was handed.
    let write_failures = writer.join().unwrap_or(0);
    drop(socket);
    match &end {
        End::Signal(_) => eprintln!("snet live: interrupted: ending the session"),
        End::StdinClosed => eprintln!("snet live: end of standard input: ending the session"),
        End::TapFailed(e) => eprintln!("snet live: the TAP device failed: {e}"),
        End::Quit | End::Disconnected => {}
    }
    let mut notes = vec![format!(
        "live on TAP {}: the model ran at most {:.1} ms behind the wall clock",
        device.name,
        max_lag.as_secs_f64() * 1e3
    )];
    if write_failures > 0 {
        notes.push(format!(
            "{write_failures} frames could not be written to TAP {} (its link was down)",
            device.name
        ));
    }
    let report = match session.finish(wall_s, notes) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("snet live: {e}");
            return crate::EXIT_USAGE;
        }
    };
    print!("{}", report.table());
    if device.existed {
        println!(
            "TAP {} stays: it existed before snet opened it",
            device.name
        );
    } else {
        println!("TAP {} is removed as snet exits", device.name);
    }
    if let Some(path) = &args.json
        && let Err(e) = std::fs::write(path, report.to_json())
    {
        eprintln!("--json {}: {e}", path.display());
        return crate::EXIT_USAGE;
    }
    if matches!(end, End::TapFailed(_)) || !report.passed {
        crate::EXIT_CHECK_FAILED
    } else {
        crate::EXIT_OK
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};

    use snet_fabric::time::Instant;
    use snet_host_lib::client::ClientHost;
    use snet_nic_model::StationId;
    use snet_testbench::run::http::{Fetch, ResponseReader};

    use super::*;

    const CLUSTER: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(198, 18, 0, 10)), 80);

    /// A client on another thread, with its own TCP/IP instance on its own
    /// clock, where a TAP device's kernel side would be: four fetches, a
    /// bad command, the status, then quit.
    fn client(to: Sender<Input>, frames: Receiver<Vec<u8>>) -> (Vec<ResponseReader>, Vec<String>) {
        let start = std::time::Instant::now();
        let now = || Instant::from_ns(start.elapsed().as_nanos() as u64);
        let mut host = ClientHost::new(
            StationId(u32::MAX),
            [0x02, 0, 0, 0xfe, 0, 0x01],
            Some((smoltcp::wire::Ipv4Address::new(198, 18, 0, 1), 15)),
            None,
            1,
            now(),
        );
        let mut answers = Vec::new();
        for k in 0..4 {
            let mut f = Fetch::start(&mut host, CLUSTER, "/bytes/5000", 41000 + k).unwrap();
            let deadline = start.elapsed() + Wall::from_secs(20);
            while !f.over() && start.elapsed() < deadline {
                if let Ok(first) = frames.recv_timeout(Wall::from_millis(1)) {
                    for mut frame in std::iter::once(first).chain(frames.try_iter()) {
                        snet_nic_model::mac::append_fcs(&mut frame);
                        host.deliver(frame);
                    }
                }
                host.poll_stack(now());
                f.pump(&mut host);
                host.poll_stack(now());
                for frame in host.take_sent() {
                    to.send(Input::Frame(frame)).unwrap();
                }
            }
            answers.push(f.answer);
        }
        let mut replies = Vec::new();
        for line in ["fail processor nine", "fail processor 3", "status", "quit"] {
            let (tx, rx) = bounded(1);
            to.send(Input::Line {
                text: line.into(),
                reply: Reply::Socket(tx),
            })
            .unwrap();
            replies.push(rx.recv().unwrap());
        }
        (answers, replies)
    }

    #[test]
    fn the_end_of_standard_input_ends_the_session_unless_there_is_a_control_socket() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/live-http.yaml");
        let s = Scenario::load(&path).unwrap();
        let mut session = LiveSession::start(&s, RunOptions::default()).unwrap();
        for (stdin_ends, want) in [(true, End::StdinClosed), (false, End::Signal(2))] {
            let (to_session, inputs) = bounded::<Input>(8);
            let (to_tap, _frames) = unbounded::<Vec<u8>>();
            to_session.send(Input::StdinClosed).unwrap();
            to_session.send(Input::Signal(2)).unwrap();
            let mut driver = Driver::new(&mut session, WallClock::start(), to_tap, stdin_ends);
            assert_eq!(driver.run(&inputs), want);
        }
        let (to_session, inputs) = bounded::<Input>(8);
        let (to_tap, _frames) = unbounded::<Vec<u8>>();
        to_session
            .send(Input::TapFailed("Input/output error".into()))
            .unwrap();
        let mut driver = Driver::new(&mut session, WallClock::start(), to_tap, true);
        assert_eq!(
            driver.run(&inputs),
            End::TapFailed("Input/output error".into())
        );
        drop(to_session);
        let (to_tap, _frames) = unbounded::<Vec<u8>>();
        let mut driver = Driver::new(&mut session, WallClock::start(), to_tap, true);
        assert_eq!(driver.run(&inputs), End::Disconnected);
    }

    #[test]
    fn the_driver_serves_a_client_over_channels_in_real_time() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/live-http.yaml");
        let s = Scenario::load(&path).unwrap();
        let mut session = LiveSession::start(&s, RunOptions::default()).unwrap();
        let (to_session, inputs) = bounded::<Input>(INPUT_QUEUE);
        let (to_tap, frames) = unbounded::<Vec<u8>>();
        let outside = std::thread::spawn(move || client(to_session, frames));
        let clock = WallClock::start();
        let v0 = session.now();
        let mut driver = Driver::new(&mut session, clock, to_tap, true);
        let end = driver.run(&inputs);
        drop(driver);
        let wall = clock.now();
        let (answers, replies) = outside.join().unwrap();
        assert_eq!(end, End::Quit);
        let mut who: Vec<u32> = answers
            .iter()
            .map(|a| {
                assert!(a.done(), "{a:?}");
                assert_eq!((a.status, a.received, a.mismatches), (Some(200), 5000, 0));
                a.processor.unwrap()
            })
            .collect();
        who.sort_unstable();
        assert_eq!(who, [0, 1, 2, 3], "round robin");
        assert!(replies[0].starts_with("error: "), "{}", replies[0]);
        assert!(
            replies[0].contains("is not a fault target"),
            "{}",
            replies[0]
        );
        assert!(
            replies[1].starts_with("ok: fail processor 3"),
            "{}",
            replies[1]
        );
        assert!(replies[2].contains("   3   NO"), "{}", replies[2]);
        assert!(
            replies[2].contains("behind the wall clock"),
            "{}",
            replies[2]
        );
        assert!(replies[3].starts_with("bye"), "{}", replies[3]);
        // Paced: the virtual time the session ran is the wall time it
        // lasted (a restore or a lagging model aside, neither here), give
        // or take the last sleep.
        let ran = session.now().saturating_since(v0);
        let lag = wall.saturating_sub(Wall::from_nanos(ran.as_ns()));
        assert!(
            Wall::from_nanos(ran.as_ns()) <= wall + Wall::from_millis(5),
            "virtual {ran} ahead of wall {wall:?}"
        );
        assert!(lag < Wall::from_secs(2), "virtual {ran}, wall {wall:?}");
        let report = session.finish(wall.as_secs_f64(), Vec::new()).unwrap();
        assert_eq!(report.requests, 4);
        assert!(
            (0.5..=1.5).contains(&report.real_time_factor),
            "rtf {}",
            report.real_time_factor
        );
    }
}
