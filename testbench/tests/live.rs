//! A live session's data path without a TAP device: an emulated client
//! outside the engine (its own TCP/IP instance) exchanges frames with the
//! session's outside station, fetches from the `http` model of
//! examples/live-http.yaml, sees the processors answer in turn, and keeps
//! every byte of its downloads from survivors when a processor fails.

use std::path::Path;

use std::net::SocketAddr;

use smoltcp::wire::Ipv4Address;
use snet_fabric::time::Duration;
use snet_host_lib::client::ClientHost;
use snet_nic_model::StationId;
use snet_testbench::run::RunOptions;
use snet_testbench::run::http::{Fetch, ResponseReader};
use snet_testbench::run::live::{Command, LiveSession};
use snet_testbench::scenario::{FaultTarget, Scenario};

/// The cluster's HTTP server in examples/live-http.yaml.
const CLUSTER: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, 10)),
    80,
);

fn scenario() -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/live-http.yaml");
    Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// The session and a client host outside it, at 198.18.0.1.
struct Outside<'a> {
    live: LiveSession<'a>,
    host: ClientHost,
    next_port: u16,
}

impl<'a> Outside<'a> {
    fn new(s: &'a Scenario) -> Self {
        let live = LiveSession::start(s, RunOptions::default()).unwrap();
        let host = ClientHost::new(
            // The host is not on the engine's LAN: the session's outside
            // station carries its frames.
            StationId(u32::MAX),
            [0x02, 0, 0, 0xfe, 0, 0x01],
            Some((Ipv4Address::new(198, 18, 0, 1), 15)),
            None,
            7,
            live.now(),
        );
        Outside {
            live,
            host,
            next_port: 40000,
        }
    }

    /// Runs the session and the client for `d` of virtual time, in steps of
    /// 10 µs, moving frames both ways, and moves every fetch forward.
    fn run(&mut self, d: Duration, fetches: &mut [Fetch]) {
        let end = self.live.now() + d;
        let mut frames = Vec::new();
        while self.live.now() < end {
            let t = (self.live.now() + Duration::from_us(10)).min(end);
            self.live.advance(t);
            self.live.take_frames(&mut frames);
            for mut f in frames.drain(..) {
                snet_nic_model::mac::append_fcs(&mut f);
                self.host.deliver(f);
            }
            self.host.poll_stack(self.live.now());
            for f in fetches.iter_mut() {
                f.pump(&mut self.host);
            }
            self.host.poll_stack(self.live.now());
            let sent: Vec<Vec<u8>> = self.host.take_sent().collect();
            for f in sent {
                assert!(self.live.receive(&f));
            }
        }
    }

    /// Opens a connection to the cluster's port 80 and queues `GET path`.
    fn get(&mut self, path: &str) -> Fetch {
        self.next_port += 1;
        Fetch::start(&mut self.host, CLUSTER, path, self.next_port).unwrap()
    }

    /// Fetches `path` alone; the answer.
    fn fetch(&mut self, path: &str) -> ResponseReader {
        let mut f = [self.get(path)];
        let deadline = self.live.now() + Duration::from_ms(500);
        while !f[0].answer.done() && self.live.now() < deadline {
            self.run(Duration::from_us(200), &mut f);
        }
        assert!(f[0].answer.done(), "GET {path}: {:?}", f[0].answer);
        f[0].answer.clone()
    }
}

#[test]
fn an_outside_client_gets_every_processor_in_turn_and_checked_bytes() {
    let s = scenario();
    let mut o = Outside::new(&s);
    let mut seen = Vec::new();
    for _ in 0..5 {
        let r = o.fetch("/");
        assert_eq!(r.status, Some(200));
        assert_eq!(r.length, Some(1024));
        assert_eq!(r.mismatches, 0);
        seen.push(r.processor.expect("X-Snet-Processor"));
    }
    let mut distinct = seen[..4].to_vec();
    distinct.sort_unstable();
    assert_eq!(distinct, [0, 1, 2, 3], "round robin: {seen:?}");
    assert_eq!(seen[4], seen[0], "strict turn: {seen:?}");
    let r = o.fetch("/bytes/100000");
    assert_eq!((r.received, r.mismatches), (100_000, 0));
    let bad = o.fetch("/bytes/lots");
    assert_eq!(bad.status, Some(400));
    // The adapter by its number: down, the cluster is unreachable; back,
    // it answers again.
    let done = o.live.command(&"fail adapter 0".parse().unwrap()).unwrap();
    assert!(done.starts_with("fail adapter lan0"), "{done}");
    let mut lost = [o.get("/")];
    o.run(Duration::from_ms(20), &mut lost);
    assert_eq!(lost[0].answer.status, None);
    let done = o
        .live
        .command(&"restore adapter 0".parse().unwrap())
        .unwrap();
    assert!(done.starts_with("restore adapter lan0"), "{done}");
    assert_eq!(o.fetch("/").status, Some(200));
    let out = o.live.outside();
    assert!(out.frames_in > 20 && out.frames_out > 20, "{out:?}");
    let status = o.live.status();
    assert!(status.contains("requests"), "{status}");
    let report = o.live.finish(1.0, Vec::new()).unwrap();
    assert!(report.passed, "{}", report.table());
    assert_eq!(report.faults.len(), 2, "{}", report.table());
    assert!(report.requests >= 7, "{}", report.table());
}

#[test]
fn downloads_from_survivors_complete_when_a_processor_fails() {
    let s = scenario();
    let mut o = Outside::new(&s);
    // Four downloads at once: one per processor (strict turn).
    let size = 2_000_000u64;
    let mut f: Vec<Fetch> = (0..4).map(|_| o.get(&format!("/bytes/{size}"))).collect();
    let deadline = o.live.now() + Duration::from_ms(200);
    while f.iter().any(|x| x.answer.processor.is_none()) && o.live.now() < deadline {
        o.run(Duration::from_us(50), &mut f);
    }
    let owners: Vec<u32> = f
        .iter()
        .map(|x| x.answer.processor.expect("every download started"))
        .collect();
    let mut sorted = owners.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, [0, 1, 2, 3], "{owners:?}");
    assert!(
        f.iter().all(|x| !x.answer.done()),
        "still in flight: {:?}",
        f.iter().map(|x| x.answer.received).collect::<Vec<_>>()
    );
    // Processor 2 fails in the middle of its download.
    let fail: Command = "fail processor 2".parse().unwrap();
    let done = o.live.command(&fail).unwrap();
    assert!(done.contains("fail processor 2"), "{done}");
    assert!(
        o.live
            .command(&Command::Fail(FaultTarget::Processor(2)))
            .unwrap_err()
            .contains("already down")
    );
    let deadline = o.live.now() + Duration::from_ms(2000);
    while f.iter().any(|x| !x.over()) && o.live.now() < deadline {
        o.run(Duration::from_us(500), &mut f);
    }
    for (x, &p) in f.iter().zip(&owners) {
        if p == 2 {
            assert!(
                x.broken && !x.answer.done(),
                "the failed processor's download is reset"
            );
        } else {
            assert!(x.answer.done(), "processor {p}: {:?}", x.answer);
            assert_eq!((x.answer.received, x.answer.mismatches), (size, 0));
        }
    }
    // New connections go to the survivors.
    let mut after = Vec::new();
    for _ in 0..6 {
        let r = o.fetch("/");
        assert_eq!((r.status, r.mismatches), (Some(200), 0));
        after.push(r.processor.unwrap());
    }
    after.sort_unstable();
    after.dedup();
    assert_eq!(after, [0, 1, 3]);
    // And processor 2 serves again once restored.
    o.live
        .command(&"restore processor 2".parse().unwrap())
        .unwrap();
    let later: Vec<u32> = (0..8).map(|_| o.fetch("/").processor.unwrap()).collect();
    assert!(later.contains(&2), "{later:?}");
    let report = o.live.finish(1.0, Vec::new()).unwrap();
    assert_eq!(report.faults.len(), 3, "{}", report.table());
    assert_eq!(report.faults[1].outcome, "processor 2 is already down");
}

#[test]
fn an_idle_hour_passes_at_once_and_the_cluster_still_answers() {
    let s = scenario();
    let mut o = Outside::new(&s);
    let wall = std::time::Instant::now();
    let hour = o.live.now() + Duration::from_ms(3_600_000);
    o.live.advance(hour);
    assert_eq!(o.live.now(), hour);
    assert!(
        wall.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        wall.elapsed()
    );
    let r = o.fetch("/bytes/3000");
    assert_eq!((r.status, r.received, r.mismatches), (Some(200), 3000, 0));
    let report = o.live.finish(1.0, Vec::new()).unwrap();
    assert_eq!(report.timeline.at_ns.len(), 3600, "a sample a second");
}
