//! The server models of the white paper as applications on emulated
//! processors. Every model speaks the testbench protocol
//! ([`super::wire`]) and runs unchanged on the parallel library and on the
//! conventional stack (it only sees [`SocketApi`] through its context).
//!
//! | model | front end | back end | hops per request (parallel library) |
//! |---|---|---|---|
//! | monolithic, echo, sink | a copy on every listed processor shares the port round robin and serves | — | 0 |
//! | listener | listens in hand-off mode, `accept_nw1`, passes the ticket to a worker (round robin) | adopts with `accept_nw2`, serves the connection | 1 per connection |
//! | distributor | accepts and does all socket I/O; forwards each request to a back end (round robin) | does the work, answers by message | 1 per request |
//! | hybrid | as listener, but picks the least-loaded server (load reported in each hand-off reply) | as listener | 1 per connection |
//! | broker | answers a query with the port of a server of the `backend` app (round robin) | the backend app, each instance on its own port (`port + k`) | 0 (two connections) |

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

use snet_fabric::time::{Duration, Instant};
use snet_host_lib::app::{AppContext, Application};
use snet_host_lib::ipc::{IpcError, MessageKind, RequestId};
use snet_host_lib::socket::{ListenMode, SocketApi, SocketError, SocketId, Ticket};

use super::ledger::Shared;
use super::wire::{self, Header, Kind, Outbox, Read, RequestReader};

/// Backlog of every listening socket: connection attempts a processor
/// takes between two polls of its server (each held by a listening socket
/// with its buffers, so a large cluster keeps this modest).
pub const BACKLOG: usize = 64;
/// Largest UDP answer (a datagram fits one frame).
pub const MAX_DATAGRAM: usize = 1400;

/// One TCP connection a server serves.
#[derive(Debug)]
struct Session {
    sock: SocketId,
    reader: RequestReader,
    outbox: Outbox,
    eof: bool,
}

impl Session {
    fn new(sock: SocketId) -> Self {
        Session {
            sock,
            reader: RequestReader::default(),
            outbox: Outbox::default(),
            eof: false,
        }
    }
}

/// How a session's complete requests are answered.
enum Answer<'a> {
    /// Here, after `work`.
    Serve(Duration),
    /// Broker: name the next server.
    Broker(&'a mut Broker),
}

/// A broker's servers and its turn.
#[derive(Debug, Clone)]
pub struct Broker {
    /// (port, processor) of every server it can name.
    pub servers: Vec<(u16, u32)>,
    next: usize,
}

impl Broker {
    /// A broker naming `servers` in turn.
    pub fn new(servers: Vec<(u16, u32)>) -> Self {
        Broker { servers, next: 0 }
    }
}

/// Outcome of serving one session for one poll.
enum Served {
    Open,
    Done,
}

/// What one step of a server session's byte pump found.
pub(super) enum Pumped {
    /// The connection is over (an error, or the session finished).
    Done,
    /// Nothing to do until the socket has room or data.
    Wait,
    /// The client closed its side.
    Eof,
    /// This many bytes arrived in the buffer.
    Data(usize),
}

/// One step of a server session: sends what `outbox` holds (counted as
/// bytes out of processor `cx.processor()`); when it is empty and the
/// session is not `finished`, reads into `buf` (counted as bytes in).
pub(super) fn pump(
    cx: &mut AppContext<'_>,
    sock: SocketId,
    outbox: &mut Outbox,
    finished: bool,
    buf: &mut [u8],
    ledger: &Shared,
) -> Pumped {
    let p = cx.processor();
    match outbox.drain(|b| match cx.sockets().send(sock, b) {
        Ok(n) => Ok(n),
        Err(SocketError::WouldBlock) => Ok(0),
        Err(e) => Err(e),
    }) {
        Ok(n) => ledger.borrow_mut().server(p).bytes_out += n,
        Err(_) => return Pumped::Done,
    }
    if !outbox.is_empty() {
        // Full send buffer: read on only when the client drains it.
        return Pumped::Wait;
    }
    if finished {
        return Pumped::Done;
    }
    match cx.sockets().recv(sock, buf) {
        Ok(0) => Pumped::Eof,
        Ok(n) => {
            ledger.borrow_mut().server(p).bytes_in += n as u64;
            Pumped::Data(n)
        }
        Err(SocketError::WouldBlock) => Pumped::Wait,
        Err(_) => Pumped::Done,
    }
}

/// Moves a session forward: sends what is queued, reads what arrived,
/// answers complete requests. Counts into the ledger for processor `p`.
fn serve(
    cx: &mut AppContext<'_>,
    s: &mut Session,
    answer: &mut Answer<'_>,
    ledger: &Shared,
    name: &str,
) -> Served {
    let p = cx.processor();
    let mut buf = [0u8; 8192];
    let mut reads = Vec::new();
    loop {
        let n = match pump(cx, s.sock, &mut s.outbox, s.eof, &mut buf, ledger) {
            Pumped::Done => return Served::Done,
            Pumped::Wait => return Served::Open,
            Pumped::Eof => {
                s.eof = true;
                continue;
            }
            Pumped::Data(n) => n,
        };
        s.reader.feed(&buf[..n], &mut reads);
        let corrupt = std::mem::take(&mut s.reader.corrupt);
        for r in reads.drain(..) {
            match r {
                Read::Complete(h) => match (h.kind, &mut *answer) {
                    (Kind::Request, Answer::Serve(work)) => {
                        cx.spend(*work);
                        s.outbox.pattern(h.conn, u64::from(h.response));
                        ledger.borrow_mut().server(p).requests += 1;
                    }
                    (Kind::Query, Answer::Broker(b)) if !b.servers.is_empty() => {
                        let (port, proc_) = b.servers[b.next % b.servers.len()];
                        b.next += 1;
                        let mut a = port.to_be_bytes().to_vec();
                        a.extend_from_slice(&(proc_ as u16).to_be_bytes());
                        s.outbox.bytes(a);
                        ledger.borrow_mut().server(p).requests += 1;
                    }
                    _ => {
                        ledger.borrow_mut().errors.push(format!(
                            "{name} on processor {p}: a {:?} it does not serve",
                            h.kind
                        ));
                        return Served::Done;
                    }
                },
                Read::Garbage => {
                    ledger.borrow_mut().errors.push(format!(
                        "{name} on processor {p}: bytes that are no request header"
                    ));
                    return Served::Done;
                }
            }
        }
        if corrupt > 0 {
            ledger.borrow_mut().server_corrupt += corrupt;
        }
    }
}

fn serve_all(
    cx: &mut AppContext<'_>,
    sessions: &mut Vec<Session>,
    answer: &mut Answer<'_>,
    ledger: &Shared,
    name: &str,
) {
    let mut i = 0;
    while i < sessions.len() {
        match serve(cx, &mut sessions[i], answer, ledger, name) {
            Served::Open => i += 1,
            Served::Done => {
                let s = sessions.swap_remove(i);
                let _ = cx.sockets().close(s.sock);
            }
        }
    }
}

fn peer(cx: &mut AppContext<'_>, s: SocketId) -> Option<SocketAddr> {
    cx.sockets().peer(s).ok().flatten()
}

/// Accepts every connection waiting on listener `l`, records each in the
/// ledger as taken and served by this processor, and hands it to `take`.
pub(super) fn accept_all(
    cx: &mut AppContext<'_>,
    l: SocketId,
    ledger: &Shared,
    name: &str,
    mut take: impl FnMut(SocketId),
) {
    let p = cx.processor();
    loop {
        match cx.sockets().accept(l) {
            Ok(s) => {
                let a = peer(cx, s);
                let mut l = ledger.borrow_mut();
                l.served_by(a, p);
                l.server(p).taken += 1;
                drop(l);
                take(s);
            }
            Err(SocketError::WouldBlock) => break,
            Err(e) => {
                ledger
                    .borrow_mut()
                    .errors
                    .push(format!("{name} on processor {p}: accept: {e}"));
                break;
            }
        }
    }
}

/// The listening socket's progress.
#[derive(Debug, Default)]
pub(super) struct Listening {
    socket: Option<SocketId>,
    failed: bool,
    up: bool,
}

/// Opens the listening socket once (a refusal is recorded in the ledger);
/// counts it in the ledger when it listens.
pub(super) fn ensure_listener(
    cx: &mut AppContext<'_>,
    listening: &mut Listening,
    port: u16,
    mode: ListenMode,
    ledger: &Shared,
    name: &str,
) -> Option<SocketId> {
    let l = ensure_socket(
        cx,
        &mut listening.socket,
        &mut listening.failed,
        port,
        mode,
        ledger,
        name,
    )?;
    if !listening.up
        && cx
            .sockets()
            .state(l)
            .is_ok_and(|s| s == snet_host_lib::socket::SocketState::Listening)
    {
        listening.up = true;
        ledger.borrow_mut().listening += 1;
    }
    Some(l)
}

fn ensure_socket(
    cx: &mut AppContext<'_>,
    listener: &mut Option<SocketId>,
    failed: &mut bool,
    port: u16,
    mode: ListenMode,
    ledger: &Shared,
    name: &str,
) -> Option<SocketId> {
    if listener.is_none() && !*failed {
        match cx.sockets().tcp_listen(port, BACKLOG, mode) {
            Ok(l) => *listener = Some(l),
            Err(e) => {
                *failed = true;
                let p = cx.processor();
                ledger
                    .borrow_mut()
                    .errors
                    .push(format!("{name} on processor {p}: listen on {port}: {e}"));
            }
        }
    }
    *listener
}

/// A server: a copy of a monolithic server (or echo, sink), a listener or
/// hybrid model's worker (it adopts handed connections), a broker, or a
/// broker's back-end server.
pub struct Server {
    name: String,
    port: Option<u16>,
    service: Option<u32>,
    work: Duration,
    broker: Option<Broker>,
    listening: Listening,
    sessions: Vec<Session>,
    ledger: Shared,
}

impl Server {
    /// A server listening on `port` (if any), adopting connections sent to
    /// `service` (if any), spending `work` per request.
    pub fn new(
        name: &str,
        port: Option<u16>,
        service: Option<u32>,
        work: Duration,
        ledger: Shared,
    ) -> Self {
        Server {
            name: name.to_string(),
            port,
            service,
            work,
            broker: None,
            listening: Listening::default(),
            sessions: Vec::new(),
            ledger,
        }
    }

    /// Makes it a broker naming these servers.
    pub fn broker(mut self, b: Broker) -> Self {
        self.broker = Some(b);
        self
    }
}

impl Application for Server {
    fn name(&self) -> &str {
        &self.name
    }

    fn service(&self) -> Option<u32> {
        self.service
    }

    fn poll(&mut self, cx: &mut AppContext<'_>) -> Option<Instant> {
        let p = cx.processor();
        if let Some(port) = self.port
            && let Some(l) = ensure_listener(
                cx,
                &mut self.listening,
                port,
                ListenMode::Serve,
                &self.ledger,
                &self.name,
            )
        {
            accept_all(cx, l, &self.ledger, &self.name, |s| {
                self.sessions.push(Session::new(s))
            });
        }
        // Hand-offs from a listener or hybrid distributor.
        while let Some(m) = cx.take_request() {
            let MessageKind::Request(r) = &m.kind else {
                continue;
            };
            let answer = match Ticket::from_bytes(&m.payload).and_then(|t| {
                let s = cx.sockets().accept_nw2(&t)?;
                Ok(s)
            }) {
                Ok(s) => {
                    let a = peer(cx, s);
                    self.ledger.borrow_mut().served_by(a, p);
                    self.sessions.push(Session::new(s));
                    (self.sessions.len() as u32).to_be_bytes().to_vec()
                }
                Err(e) => {
                    self.ledger
                        .borrow_mut()
                        .errors
                        .push(format!("{} on processor {p}: accept_nw2: {e}", self.name));
                    Vec::new()
                }
            };
            let _ = cx.reply(r, &answer);
        }
        let mut answer = match self.broker.as_mut() {
            Some(b) => Answer::Broker(b),
            None => Answer::Serve(self.work),
        };
        serve_all(
            cx,
            &mut self.sessions,
            &mut answer,
            &self.ledger,
            &self.name,
        );
        None
    }
}

/// How a hand-off front end picks a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// In turn (the listener model).
    RoundRobin,
    /// The one with the fewest open connections by its last report, ties
    /// in turn (the hybrid model's load balancing).
    LeastLoaded,
}

/// The listener and hybrid models' front end: takes connections with
/// `accept_nw1` and hands them to workers.
pub struct Handoff {
    name: String,
    port: u16,
    service: u32,
    workers: Vec<usize>,
    pick: Pick,
    loads: Vec<u32>,
    dead: Vec<bool>,
    next: usize,
    listening: Listening,
    waiting: VecDeque<Ticket>,
    pending: BTreeMap<RequestId, (Ticket, usize)>,
    ledger: Shared,
}

impl Handoff {
    /// A front end on `port` handing connections to service `service` on
    /// `workers`.
    pub fn new(
        name: &str,
        port: u16,
        service: u32,
        workers: Vec<usize>,
        pick: Pick,
        ledger: Shared,
    ) -> Self {
        let n = workers.len();
        Handoff {
            name: name.to_string(),
            port,
            service,
            workers,
            pick,
            loads: vec![0; n],
            dead: vec![false; n],
            next: 0,
            listening: Listening::default(),
            waiting: VecDeque::new(),
            pending: BTreeMap::new(),
            ledger,
        }
    }

    fn choose(&mut self) -> Option<usize> {
        let n = self.workers.len();
        let live: Vec<usize> = (0..n)
            .map(|k| (self.next + k) % n)
            .filter(|&w| !self.dead[w])
            .collect();
        let w = match self.pick {
            Pick::RoundRobin => *live.first()?,
            Pick::LeastLoaded => *live.iter().min_by_key(|&&w| self.loads[w])?,
        };
        self.next = (w + 1) % n;
        Some(w)
    }
}

impl Application for Handoff {
    fn name(&self) -> &str {
        &self.name
    }

    fn poll(&mut self, cx: &mut AppContext<'_>) -> Option<Instant> {
        let p = cx.processor();
        if let Some(l) = ensure_listener(
            cx,
            &mut self.listening,
            self.port,
            ListenMode::HandOff,
            &self.ledger,
            &self.name,
        ) {
            loop {
                match cx.sockets().accept_nw1(l) {
                    Ok(t) => {
                        let mut l = self.ledger.borrow_mut();
                        l.handed(p);
                        l.server(p).taken += 1;
                        self.waiting.push_back(t);
                    }
                    Err(SocketError::WouldBlock) => break,
                    Err(e) => {
                        self.ledger
                            .borrow_mut()
                            .errors
                            .push(format!("{} on processor {p}: accept_nw1: {e}", self.name));
                        break;
                    }
                }
            }
        }
        while let Some(r) = cx.take_reply() {
            let Some((t, w)) = self.pending.remove(&r.request) else {
                continue;
            };
            match r.result {
                Ok(()) if r.payload.len() == 4 => {
                    self.loads[w] = u32::from_be_bytes([
                        r.payload[0],
                        r.payload[1],
                        r.payload[2],
                        r.payload[3],
                    ]);
                }
                // The worker could not adopt it: the connection is gone.
                Ok(()) => {}
                Err(_) => {
                    // The worker's processor failed: try another.
                    self.dead[w] = true;
                    self.waiting.push_front(t);
                }
            }
        }
        while let Some(t) = self.waiting.front().copied() {
            let Some(w) = self.choose() else {
                break;
            };
            match cx.send(self.workers[w], self.service, &t.to_bytes()) {
                Ok(id) => {
                    self.waiting.pop_front();
                    self.loads[w] += 1;
                    self.pending.insert(id, (t, w));
                }
                Err(IpcError::WouldBlock { .. }) => break,
                Err(_) => self.dead[w] = true,
            }
        }
        None
    }
}

/// One request a distributor forwarded, in its session's order.
#[derive(Debug)]
struct Forwarded {
    header: Header,
    done: bool,
}

#[derive(Debug)]
struct DSession {
    session: Session,
    key: u64,
    order: VecDeque<Forwarded>,
}

/// The distributor model's front end: serves the sockets and forwards
/// every request to a back end by message.
pub struct Distributor {
    name: String,
    port: u16,
    service: u32,
    backends: Vec<usize>,
    dead: Vec<bool>,
    next: usize,
    max_payload: usize,
    listening: Listening,
    sessions: Vec<DSession>,
    next_key: u64,
    unsent: VecDeque<(u64, usize)>,
    pending: BTreeMap<RequestId, (u64, usize, usize)>,
    ledger: Shared,
}

impl Distributor {
    /// A front end on `port` forwarding to service `service` on `backends`;
    /// a message carries at most `max_payload` bytes.
    pub fn new(
        name: &str,
        port: u16,
        service: u32,
        backends: Vec<usize>,
        max_payload: usize,
        ledger: Shared,
    ) -> Self {
        let n = backends.len();
        Distributor {
            name: name.to_string(),
            port,
            service,
            backends,
            dead: vec![false; n],
            next: 0,
            max_payload,
            listening: Listening::default(),
            sessions: Vec::new(),
            next_key: 0,
            unsent: VecDeque::new(),
            pending: BTreeMap::new(),
            ledger,
        }
    }

    fn session(&mut self, key: u64) -> Option<&mut DSession> {
        self.sessions.iter_mut().find(|s| s.key == key)
    }
}

impl Application for Distributor {
    fn name(&self) -> &str {
        &self.name
    }

    fn poll(&mut self, cx: &mut AppContext<'_>) -> Option<Instant> {
        let p = cx.processor();
        if let Some(l) = ensure_listener(
            cx,
            &mut self.listening,
            self.port,
            ListenMode::Serve,
            &self.ledger,
            &self.name,
        ) {
            let (sessions, next_key) = (&mut self.sessions, &mut self.next_key);
            accept_all(cx, l, &self.ledger, &self.name, |s| {
                *next_key += 1;
                sessions.push(DSession {
                    session: Session::new(s),
                    key: *next_key,
                    order: VecDeque::new(),
                });
            });
        }
        // Answers from the back ends.
        while let Some(r) = cx.take_reply() {
            let Some((key, idx, b)) = self.pending.remove(&r.request) else {
                continue;
            };
            match r.result {
                Ok(()) => {
                    if let Some(s) = self.session(key)
                        && let Some(f) = s.order.get_mut(idx)
                    {
                        f.done = true;
                    }
                }
                Err(_) => {
                    self.dead[b] = true;
                    self.unsent.push_front((key, idx));
                }
            }
        }
        // Read requests; queue each for a back end.
        let mut buf = [0u8; 8192];
        let mut reads = Vec::new();
        let mut i = 0;
        while i < self.sessions.len() {
            let mut closed = false;
            {
                let ds = &mut self.sessions[i];
                let s = &mut ds.session;
                // Answers in order.
                while ds.order.front().is_some_and(|f| f.done) {
                    let f = ds.order.pop_front().expect("front exists");
                    s.outbox
                        .pattern(f.header.conn, u64::from(f.header.response));
                    // Indexes of later entries move down by one.
                    for v in self.pending.values_mut() {
                        if v.0 == ds.key {
                            v.1 -= 1;
                        }
                    }
                    for v in self.unsent.iter_mut() {
                        if v.0 == ds.key {
                            v.1 -= 1;
                        }
                    }
                }
                let sock = s.sock;
                match s.outbox.drain(|b| match cx.sockets().send(sock, b) {
                    Ok(n) => Ok(n),
                    Err(SocketError::WouldBlock) => Ok(0),
                    Err(e) => Err(e),
                }) {
                    Ok(n) => self.ledger.borrow_mut().server(p).bytes_out += n,
                    Err(_) => closed = true,
                }
                while !closed && !s.eof {
                    match cx.sockets().recv(sock, &mut buf) {
                        Ok(0) => s.eof = true,
                        Ok(n) => {
                            self.ledger.borrow_mut().server(p).bytes_in += n as u64;
                            s.reader.feed(&buf[..n], &mut reads);
                            for r in reads.drain(..) {
                                match r {
                                    Read::Complete(h) if h.kind == Kind::Request => {
                                        ds.order.push_back(Forwarded {
                                            header: h,
                                            done: false,
                                        });
                                        self.unsent.push_back((ds.key, ds.order.len() - 1));
                                    }
                                    _ => {
                                        self.ledger.borrow_mut().errors.push(format!(
                                            "{} on processor {p}: a request it does not serve",
                                            self.name
                                        ));
                                        closed = true;
                                    }
                                }
                            }
                        }
                        Err(SocketError::WouldBlock) => break,
                        Err(_) => closed = true,
                    }
                }
                if s.eof && ds.order.is_empty() && s.outbox.is_empty() {
                    closed = true;
                }
            }
            if closed {
                let ds = self.sessions.swap_remove(i);
                self.pending.retain(|_, v| v.0 != ds.key);
                self.unsent.retain(|v| v.0 != ds.key);
                let _ = cx.sockets().close(ds.session.sock);
            } else {
                i += 1;
            }
        }
        // Forward what waits.
        while let Some(&(key, idx)) = self.unsent.front() {
            let n = self.backends.len();
            let Some(b) = (0..n).map(|k| (self.next + k) % n).find(|&b| !self.dead[b]) else {
                break;
            };
            let Some(h) = self
                .session(key)
                .and_then(|s| s.order.get(idx))
                .map(|f| f.header)
            else {
                self.unsent.pop_front();
                continue;
            };
            let mut msg = h.encode().to_vec();
            let body = (h.length as usize).min(self.max_payload.saturating_sub(msg.len()));
            let start = msg.len();
            msg.resize(start + body, 0);
            wire::Pattern::request(h.conn).fill(&mut msg[start..], 0);
            match cx.send(self.backends[b], self.service, &msg) {
                Ok(id) => {
                    self.unsent.pop_front();
                    self.next = (b + 1) % n;
                    self.pending.insert(id, (key, idx, b));
                }
                Err(IpcError::WouldBlock { .. }) => break,
                Err(_) => self.dead[b] = true,
            }
        }
        None
    }
}

/// The distributor model's back end: does the work of each forwarded
/// request and answers with the response (as much as a message holds).
pub struct Backend {
    name: String,
    service: u32,
    work: Duration,
    max_payload: usize,
    ledger: Shared,
}

impl Backend {
    /// A back end for service `service`.
    pub fn new(
        name: &str,
        service: u32,
        work: Duration,
        max_payload: usize,
        ledger: Shared,
    ) -> Self {
        Backend {
            name: name.to_string(),
            service,
            work,
            max_payload,
            ledger,
        }
    }
}

impl Application for Backend {
    fn name(&self) -> &str {
        &self.name
    }

    fn service(&self) -> Option<u32> {
        Some(self.service)
    }

    fn poll(&mut self, cx: &mut AppContext<'_>) -> Option<Instant> {
        let p = cx.processor();
        while let Some(m) = cx.take_request() {
            let MessageKind::Request(r) = &m.kind else {
                continue;
            };
            let answer = match Header::decode(&m.payload) {
                Some(h) => {
                    cx.spend(self.work);
                    self.ledger.borrow_mut().server(p).requests += 1;
                    let mut a = vec![0u8; (h.response as usize).min(self.max_payload)];
                    wire::Pattern::response(h.conn).fill(&mut a, 0);
                    a
                }
                None => {
                    self.ledger.borrow_mut().errors.push(format!(
                        "{} on processor {p}: a message that is no request",
                        self.name
                    ));
                    Vec::new()
                }
            };
            let _ = cx.reply(r, &answer);
        }
        None
    }
}

/// A UDP server (monolithic, echo, sink over UDP): answers each datagram
/// request with one datagram of `response` bytes (at most
/// [`MAX_DATAGRAM`]).
pub struct DatagramServer {
    name: String,
    port: u16,
    work: Duration,
    sock: Option<SocketId>,
    failed: bool,
    ledger: Shared,
}

impl DatagramServer {
    /// A server bound to UDP `port`.
    pub fn new(name: &str, port: u16, work: Duration, ledger: Shared) -> Self {
        DatagramServer {
            name: name.to_string(),
            port,
            work,
            sock: None,
            failed: false,
            ledger,
        }
    }
}

impl Application for DatagramServer {
    fn name(&self) -> &str {
        &self.name
    }

    fn poll(&mut self, cx: &mut AppContext<'_>) -> Option<Instant> {
        let p = cx.processor();
        if self.sock.is_none() && !self.failed {
            match cx.sockets().udp_bind(self.port) {
                Ok(s) => {
                    self.sock = Some(s);
                    self.ledger.borrow_mut().listening += 1;
                }
                Err(e) => {
                    self.failed = true;
                    self.ledger.borrow_mut().errors.push(format!(
                        "{} on processor {p}: bind {}: {e}",
                        self.name, self.port
                    ));
                }
            }
        }
        let s = self.sock?;
        let mut buf = [0u8; 9216];
        loop {
            match cx.sockets().recv_from(s, &mut buf) {
                Ok((n, from)) => {
                    self.ledger.borrow_mut().server(p).bytes_in += n as u64;
                    let Some(h) = Header::decode(&buf[..n]) else {
                        self.ledger.borrow_mut().errors.push(format!(
                            "{} on processor {p}: a datagram that is no request",
                            self.name
                        ));
                        continue;
                    };
                    cx.spend(self.work);
                    let mut a = h.encode().to_vec();
                    let body = (h.response as usize).min(MAX_DATAGRAM - a.len());
                    let start = a.len();
                    a.resize(start + body, 0);
                    wire::Pattern::response(h.conn).fill(&mut a[start..], 0);
                    let mut l = self.ledger.borrow_mut();
                    l.server(p).requests += 1;
                    if cx.sockets().send_to(s, &a, from).is_ok() {
                        l.server(p).bytes_out += a.len() as u64;
                    }
                }
                Err(SocketError::WouldBlock) => break,
                Err(_) => break,
            }
        }
        None
    }
}
