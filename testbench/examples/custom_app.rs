//! Plugging your own server and client behaviour into a scenario run.
//!
//! The scenario names an app (`cache`) and a client population (`probes`);
//! the program runs its own `Application` in place of the app's model and
//! its own `ClientBehaviour` in place of the population's built-in clients.
//! Everything else — the cluster, the other clients, faults, expectations and
//! the report — comes from the scenario.
//!
//! `cargo run -p snet-testbench --example custom_app`

use std::cell::Cell;
use std::rc::Rc;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpEndpoint};
use snet_fabric::time::{Duration, Instant};
use snet_host_lib::app::{AppContext, Application};
use snet_host_lib::client::ClientHost;
use snet_host_lib::net::ClientBehaviour;
use snet_host_lib::socket::{ListenMode, SocketApi, SocketError, SocketId};
use snet_testbench::run::ledger::Shared;
use snet_testbench::run::wire::{self, Header, Kind, Outbox, Read, RequestReader};
use snet_testbench::run::{RunOptions, run};
use snet_testbench::scenario::Scenario;

const SCENARIO: &str = r#"
name: custom
duration: 30ms
apps:
  - { name: cache, model: monolithic, port: 8000 }
clients:
  - { name: users, count: 32, target: "198.18.0.10:8000", request: 100B, response: 1KiB, requests_per_connection: 4, think: 500us }
  - { name: probes, count: 4, target: "198.18.0.10:8000" }
expect:
  - no_data_lost_on_survivors
  - all_survivor_connections_complete
"#;

/// A server that answers like the monolithic model, but only every fourth
/// request costs CPU (the others are "cache hits").
struct CacheServer {
    listener: Option<SocketId>,
    up: bool,
    conns: Vec<(SocketId, RequestReader, Outbox)>,
    served: u64,
    hits: Rc<Cell<u64>>,
    ledger: Shared,
}

impl Application for CacheServer {
    fn name(&self) -> &str {
        "cache"
    }

    fn poll(&mut self, cx: &mut AppContext<'_>) -> Option<Instant> {
        let p = cx.processor();
        if self.listener.is_none() {
            self.listener = cx.sockets().tcp_listen(8000, 32, ListenMode::Serve).ok();
        }
        let l = self.listener?;
        if !self.up
            && matches!(
                cx.sockets().state(l),
                Ok(snet_host_lib::socket::SocketState::Listening)
            )
        {
            // Tell the run this listener is up: the clients start once
            // every listener is.
            self.up = true;
            self.ledger.borrow_mut().listening += 1;
        }
        while let Ok(s) = cx.sockets().accept(l) {
            let peer = cx.sockets().peer(s).ok().flatten();
            self.ledger.borrow_mut().served_by(peer, p);
            self.conns
                .push((s, RequestReader::default(), Outbox::default()));
        }
        let mut buf = [0u8; 4096];
        let mut reads = Vec::new();
        let mut closed = Vec::new();
        for (i, (s, reader, out)) in self.conns.iter_mut().enumerate() {
            let s = *s;
            let _ = out.drain(|b| match cx.sockets().send(s, b) {
                Err(SocketError::WouldBlock) => Ok(0),
                r => r,
            });
            match cx.sockets().recv(s, &mut buf) {
                Ok(0) | Err(SocketError::ConnectionReset) => closed.push(i),
                Ok(n) => {
                    reader.feed(&buf[..n], &mut reads);
                    for r in reads.drain(..) {
                        if let Read::Complete(h) = r {
                            self.served += 1;
                            if self.served % 4 == 0 {
                                cx.spend(Duration::from_us(50));
                            } else {
                                self.hits.set(self.hits.get() + 1);
                            }
                            out.pattern(h.conn, u64::from(h.response));
                            self.ledger.borrow_mut().server(p).requests += 1;
                        }
                    }
                    let _ = out.drain(|b| match cx.sockets().send(s, b) {
                        Err(SocketError::WouldBlock) => Ok(0),
                        r => r,
                    });
                }
                Err(_) => {}
            }
        }
        for i in closed.into_iter().rev() {
            let (s, _, _) = self.conns.swap_remove(i);
            let _ = cx.sockets().close(s);
        }
        None
    }
}

/// A client host that keeps one connection and sends a small request
/// every millisecond, recording each round trip in the run's latencies.
struct Probe {
    conn: u32,
    socket: Option<SocketHandle>,
    next: Instant,
    sent_at: Option<Instant>,
    owed: u64,
    ledger: Shared,
}

impl ClientBehaviour for Probe {
    fn poll(&mut self, host: &mut ClientHost, now: Instant) -> Option<Instant> {
        let h = match self.socket {
            Some(h) => h,
            None => {
                let mut s = tcp::Socket::new(
                    tcp::SocketBuffer::new(vec![0; 4096]),
                    tcp::SocketBuffer::new(vec![0; 4096]),
                );
                s.set_nagle_enabled(false);
                let remote = IpEndpoint::new(IpAddress::v4(198, 18, 0, 10), 8000);
                s.connect(host.iface.context(), remote, 30_000 + self.conn as u16)
                    .ok()?;
                let h = host.sockets.add(s);
                self.socket = Some(h);
                h
            }
        };
        let s = host.sockets.get_mut::<tcp::Socket>(h);
        if !s.may_send() {
            return None;
        }
        if let Some(at) = self.sent_at {
            let mut buf = [0u8; 512];
            while let Ok(n) = s.recv_slice(&mut buf) {
                if n == 0 {
                    break;
                }
                self.owed -= n as u64;
            }
            if self.owed == 0 {
                let mut l = self.ledger.borrow_mut();
                l.latencies_ns.push(now.saturating_since(at).as_ns());
                l.requests += 1;
                self.sent_at = None;
            }
            return None;
        }
        if now < self.next {
            return Some(self.next);
        }
        let header = Header {
            kind: Kind::Request,
            conn: 1_000_000 + self.conn,
            length: 0,
            response: 64,
        };
        if s.send_slice(&header.encode()).ok()? == wire::HEADER_LEN {
            self.sent_at = Some(now);
            self.owed = 64;
            self.next = now + Duration::from_ms(1);
        }
        Some(self.next)
    }
}

fn main() {
    let s = Scenario::from_yaml_str(SCENARIO, "custom.yaml").unwrap_or_else(|e| panic!("{e}"));
    let hits = Rc::new(Cell::new(0));
    let h = hits.clone();
    let options = RunOptions {
        apps: vec![(
            "cache".into(),
            Box::new(move |ledger: &Shared, _p: usize| {
                Box::new(CacheServer {
                    listener: None,
                    up: false,
                    conns: Vec::new(),
                    served: 0,
                    hits: h.clone(),
                    ledger: ledger.clone(),
                }) as Box<dyn Application>
            }),
        )],
        clients: vec![(
            "probes".into(),
            Box::new(|ledger: &Shared, host: usize| {
                Box::new(Probe {
                    conn: host as u32,
                    socket: None,
                    next: Instant::ZERO,
                    sent_at: None,
                    owed: 0,
                    ledger: ledger.clone(),
                }) as Box<dyn ClientBehaviour>
            }),
        )],
        ..RunOptions::default()
    };
    let report = run(&s, options).unwrap_or_else(|e| panic!("{e}"));
    print!("{}", report.table());
    println!("cache hits: {}", hits.get());
    assert!(report.passed, "the custom run should pass its expectations");
    assert!(hits.get() > 0);
}
