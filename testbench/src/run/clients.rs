//! Client populations: emulated client hosts on the LAN, each carrying
//! some members of a population. A member opens a connection, sends
//! requests of the testbench protocol ([`super::wire`]), checks every
//! response byte, and records what happened in the ledger.
//!
//! - Closed loop (no `rate`): the next request leaves `think` after the
//!   previous response. The members' first requests are spread evenly over
//!   one think time (all at `start` when `think` is 0), so a large
//!   population does not open every connection in the same microsecond.
//! - Open loop (`rate`): requests arrive by a seeded Poisson or constant
//!   process, the population's rate split evenly over its members; a
//!   request that arrives while the member waits for an answer queues, and
//!   its latency counts from its arrival.
//! - After `requests_per_connection` answers the member closes and opens a
//!   new connection for the next request.
//! - Broker targets: each connection to a server is preceded by a query
//!   connection to the broker, which names the server's port.
//! - UDP: one datagram per request and one per answer; an answer missing
//!   after [`UDP_TIMEOUT`] counts as lost.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use smoltcp::iface::SocketHandle;
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::{IpAddress, IpEndpoint};
use snet_fabric::time::{Duration, Instant};
use snet_host_lib::client::ClientHost;
use snet_host_lib::net::ClientBehaviour;

use super::ledger::{End, Shared};
use super::models::MAX_DATAGRAM;
use super::wire::{self, HEADER_LEN, Header, Kind};

/// How long a UDP client waits for an answer.
pub const UDP_TIMEOUT: Duration = Duration::from_ms(50);
/// After a failed connection attempt, a closed-loop member waits this long.
const RETRY: Duration = Duration::from_ms(1);

/// What every member of a population does.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Population index.
    pub population: u16,
    /// Where it connects.
    pub target: SocketAddr,
    /// UDP instead of TCP.
    pub udp: bool,
    /// The target is a broker.
    pub broker: bool,
    /// Bytes per request, header included (at least [`HEADER_LEN`]).
    pub request: u32,
    /// Bytes per response.
    pub response: u32,
    /// Requests per connection (≥ 1).
    pub per_connection: u32,
    /// Mean gap between one member's requests, and whether gaps are
    /// exponential (`None`: closed loop).
    pub gap: Option<(Duration, bool)>,
    /// Pause after a response (closed loop).
    pub think: Duration,
    /// When members start.
    pub start: Instant,
    /// When they stop sending new requests.
    pub stop: Instant,
    /// Socket buffer bytes per direction.
    pub buffer: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Idle,
    Sending,
    Awaiting,
    Closing,
}

#[derive(Debug)]
struct Active {
    handle: SocketHandle,
    id: u32,
    local: SocketAddr,
    phase: Phase,
    /// This connection is a broker query.
    query: bool,
    done: u32,
    /// Request bytes of the current request left to write.
    to_send: u64,
    /// Request payload offset across the connection.
    sent_payload: u64,
    /// Response bytes of the current request still to read.
    owed: u64,
    /// Response offset across the connection.
    received: u64,
    started: Instant,
    answer: Vec<u8>,
}

#[derive(Debug)]
struct Member {
    rng: u64,
    due: VecDeque<Instant>,
    next_arrival: Instant,
    wait_until: Instant,
    conn: Option<Active>,
    /// Broker: the server port named by the last query.
    named: Option<u16>,
    /// UDP: the socket, and the outstanding datagram (id, sent at, arrival).
    udp: Option<SocketHandle>,
    datagram: Option<(u32, Instant, Instant)>,
}

/// One client host's members, all of one population.
pub struct HostDriver {
    plan: Plan,
    members: Vec<Member>,
    ledger: Shared,
    next_port: u16,
    next_datagram: u32,
    /// Bytes to and from the sockets, reused by every poll (a fresh
    /// zeroed array per poll cost more than the rest of the client).
    scratch: Vec<u8>,
}

/// Bytes of [`HostDriver::scratch`]: a TCP chunk, or the largest datagram.
const SCRATCH: usize = 9216;

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn gap(rng: &mut u64, mean: Duration, poisson: bool) -> Duration {
    if !poisson {
        return mean;
    }
    // Exponential: -ln(U) * mean, U in (0, 1].
    let u = ((splitmix(rng) >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let ps = -u.ln() * mean.as_ps() as f64;
    Duration::from_ps(ps.min(u64::MAX as f64 / 2.0) as u64)
}

impl HostDriver {
    /// A driver for members following `plan`; `members` lists (seed,
    /// offset) per member: a closed-loop member starts `offset` after the
    /// plan's start.
    pub fn new(plan: Plan, members: &[(u64, Duration)], ledger: Shared) -> Self {
        let members = members
            .iter()
            .map(|&(seed, offset)| {
                let mut rng = seed;
                let p = &plan;
                // Spread open-loop members' first arrivals over one gap.
                let first = match p.gap {
                    Some((mean, poisson)) => p.start + gap(&mut rng, mean, poisson),
                    None => p.start + offset,
                };
                Member {
                    rng,
                    due: VecDeque::new(),
                    next_arrival: first,
                    wait_until: first,
                    conn: None,
                    named: None,
                    udp: None,
                    datagram: None,
                }
            })
            .collect();
        HostDriver {
            plan,
            members,
            ledger,
            next_port: 20_000,
            next_datagram: 0,
            scratch: vec![0; SCRATCH],
        }
    }

    fn port(&mut self, host: &ClientHost) -> u16 {
        loop {
            self.next_port = if self.next_port >= 60_000 {
                20_000
            } else {
                self.next_port + 1
            };
            let p = self.next_port;
            let used = host.sockets.iter().any(|(_, s)| match s {
                smoltcp::socket::Socket::Tcp(t) => t.local_endpoint().is_some_and(|e| e.port == p),
                smoltcp::socket::Socket::Udp(u) => u.endpoint().port == p,
                _ => false,
            });
            if !used {
                return p;
            }
        }
    }
}

fn local_ip(host: &ClientHost, target: IpAddr) -> Option<IpAddr> {
    host.iface
        .ip_addrs()
        .iter()
        .map(|c| IpAddr::from(c.address()))
        .find(|a| a.is_ipv4() == target.is_ipv4())
}

impl ClientBehaviour for HostDriver {
    fn poll(&mut self, host: &mut ClientHost, now: Instant) -> Option<Instant> {
        let mut wake: Option<Instant> = None;
        let mut soon = |t: Instant| {
            wake = Some(wake.map_or(t, |w: Instant| w.min(t)));
        };
        for m in 0..self.members.len() {
            let plan = self.plan;
            // Arrivals (open loop).
            if let Some((mean, poisson)) = plan.gap {
                let mem = &mut self.members[m];
                while mem.next_arrival <= now && mem.next_arrival < plan.stop {
                    mem.due.push_back(mem.next_arrival);
                    mem.next_arrival += gap(&mut mem.rng, mean, poisson);
                }
                if mem.next_arrival < plan.stop {
                    soon(mem.next_arrival);
                }
            }
            if plan.udp {
                if let Some(t) = self.poll_udp(host, m, &plan, now) {
                    soon(t);
                }
            } else if let Some(t) = self.poll_tcp(host, m, &plan, now) {
                soon(t);
            }
        }
        wake
    }
}

impl HostDriver {
    /// Whether member `m` has a request ready at `now`, and its arrival.
    fn ready(&self, m: usize, plan: &Plan, now: Instant) -> Option<Instant> {
        let mem = &self.members[m];
        if plan.gap.is_some() {
            mem.due.front().copied()
        } else if now >= mem.wait_until && now >= plan.start && now < plan.stop {
            Some(now)
        } else {
            None
        }
    }

    fn poll_tcp(
        &mut self,
        host: &mut ClientHost,
        m: usize,
        plan: &Plan,
        now: Instant,
    ) -> Option<Instant> {
        if self.members[m].conn.is_none() {
            let mem = &self.members[m];
            let wants = (plan.gap.is_some() && !mem.due.is_empty())
                || (plan.gap.is_none() && now < plan.stop);
            if !wants {
                return None;
            }
            if plan.gap.is_none() && now < mem.wait_until.max(plan.start) {
                return Some(mem.wait_until.max(plan.start));
            }
            let query = plan.broker && mem.named.is_none();
            let target = match (plan.broker, mem.named) {
                (true, Some(port)) => SocketAddr::new(plan.target.ip(), port),
                _ => plan.target,
            };
            self.open(host, m, plan, target, query, now);
        }
        let buf = &mut self.scratch[..8192];
        let mem = &mut self.members[m];
        let a = mem.conn.as_mut()?;
        let sock = host.sockets.get_mut::<tcp::Socket>(a.handle);
        let state = sock.state();
        let mut ledger = self.ledger.borrow_mut();
        let mut end = None;
        loop {
            match a.phase {
                Phase::Connecting => match state {
                    tcp::State::Established => {
                        if let Some(c) = ledger.conns.get_mut(a.id as usize) {
                            c.established = Some(now);
                            c.waiting_since = None;
                        }
                        a.phase = Phase::Idle;
                        continue;
                    }
                    tcp::State::Closed => end = Some(End::Failed),
                    _ => {}
                },
                Phase::Idle => {
                    if state == tcp::State::Closed {
                        end = Some(End::Reset);
                    } else if a.query && a.done == 1
                        || !a.query && a.done >= plan.per_connection
                        || (plan.gap.is_none() && now >= plan.stop)
                    {
                        sock.close();
                        a.phase = Phase::Closing;
                        if let Some(c) = ledger.conns.get_mut(a.id as usize) {
                            c.waiting_since = Some(now);
                        }
                        continue;
                    } else {
                        let arrival = if plan.gap.is_some() {
                            mem.due.front().copied()
                        } else if now >= mem.wait_until && now < plan.stop {
                            Some(now)
                        } else {
                            None
                        };
                        let Some(arrival) = arrival else { break };
                        if plan.gap.is_some() {
                            mem.due.pop_front();
                        }
                        a.started = arrival;
                        a.to_send = if a.query {
                            HEADER_LEN as u64
                        } else {
                            u64::from(plan.request)
                        };
                        a.owed = if a.query { 4 } else { u64::from(plan.response) };
                        a.answer.clear();
                        a.phase = Phase::Sending;
                        if let Some(c) = ledger.conns.get_mut(a.id as usize) {
                            c.waiting_since = Some(now);
                        }
                        continue;
                    }
                }
                Phase::Sending => {
                    if state == tcp::State::Closed {
                        end = Some(End::Reset);
                        break;
                    }
                    let total = if a.query {
                        HEADER_LEN as u64
                    } else {
                        u64::from(plan.request)
                    };
                    while a.to_send > 0 && sock.can_send() {
                        let written = total - a.to_send;
                        let chunk = a.to_send.min(buf.len() as u64) as usize;
                        let b = &mut *buf;
                        let mut n_hdr = 0;
                        if written < HEADER_LEN as u64 {
                            let h = Header {
                                kind: if a.query { Kind::Query } else { Kind::Request },
                                conn: a.id,
                                length: (total - HEADER_LEN as u64) as u32,
                                response: a.owed as u32,
                            }
                            .encode();
                            n_hdr = (HEADER_LEN - written as usize).min(chunk);
                            b[..n_hdr]
                                .copy_from_slice(&h[written as usize..written as usize + n_hdr]);
                        }
                        let id = a.id;
                        let off = a.sent_payload;
                        wire::Pattern::request(id).fill(&mut b[n_hdr..chunk], off);
                        let n = sock.send_slice(&b[..chunk]).unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        a.to_send -= n as u64;
                        a.sent_payload += n.saturating_sub(n_hdr) as u64;
                        if let Some(c) = ledger.conns.get_mut(a.id as usize) {
                            c.bytes_sent += n as u64;
                            c.waiting_since = Some(now);
                        }
                    }
                    if a.to_send == 0 {
                        a.phase = Phase::Awaiting;
                        continue;
                    }
                    break;
                }
                Phase::Awaiting => {
                    while a.owed > 0 && sock.can_recv() {
                        let want = (a.owed as usize).min(buf.len());
                        let n = sock.recv_slice(&mut buf[..want]).unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        let c = ledger.conns.get_mut(a.id as usize);
                        if a.query {
                            a.answer.extend_from_slice(&buf[..n]);
                        } else {
                            let id = a.id;
                            let bad = wire::Pattern::response(id).mismatches(&buf[..n], a.received);
                            if let Some(c) = c {
                                c.bytes_received += n as u64;
                                c.corrupt += bad;
                                c.waiting_since = Some(now);
                            }
                            a.received += n as u64;
                        }
                        a.owed -= n as u64;
                    }
                    if a.owed == 0 {
                        a.done += 1;
                        let lat = now.saturating_since(a.started).as_ns();
                        ledger.latencies_ns.push(lat);
                        ledger.requests += 1;
                        if let Some(c) = ledger.conns.get_mut(a.id as usize) {
                            c.requests += 1;
                            c.waiting_since = None;
                        }
                        if a.query && a.answer.len() >= 2 {
                            mem.named = Some(u16::from_be_bytes([a.answer[0], a.answer[1]]));
                        }
                        mem.wait_until = now + plan.think;
                        a.phase = Phase::Idle;
                        continue;
                    }
                    if state == tcp::State::Closed || !sock.may_recv() {
                        end = Some(End::Reset);
                    }
                    break;
                }
                Phase::Closing => {
                    while sock.can_recv() {
                        if sock.recv_slice(buf).unwrap_or(0) == 0 {
                            break;
                        }
                    }
                    if matches!(state, tcp::State::TimeWait | tcp::State::Closed) {
                        end = Some(End::Completed);
                    }
                }
            }
            break;
        }
        let mut next = None;
        if let Some(e) = end {
            let a = mem.conn.take().expect("active");
            if e == End::Reset
                && let Some(c) = ledger.conns.get_mut(a.id as usize)
            {
                c.owed = a.owed + a.to_send;
            }
            ledger.close(a.id, a.local, e, now);
            host.sockets.remove(a.handle);
            if a.query && e == End::Completed {
                // Go to the named server now.
                next = Some(now);
            } else {
                mem.named = None;
                if e != End::Completed {
                    mem.wait_until = now + RETRY;
                }
                next = Some(mem.wait_until.max(now));
            }
        } else if let Some(a) = mem.conn.as_ref()
            && a.phase == Phase::Idle
            && plan.gap.is_none()
        {
            next = Some(mem.wait_until.min(plan.stop).max(now));
        }
        next
    }

    fn open(
        &mut self,
        host: &mut ClientHost,
        m: usize,
        plan: &Plan,
        target: SocketAddr,
        query: bool,
        now: Instant,
    ) {
        let Some(ip) = local_ip(host, target.ip()) else {
            self.ledger.borrow_mut().errors.push(format!(
                "client population {}: the client host has no address of {}'s family",
                plan.population, target
            ));
            self.members[m].wait_until = plan.stop;
            return;
        };
        let port = self.port(host);
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; plan.buffer]),
            tcp::SocketBuffer::new(vec![0; plan.buffer]),
        );
        s.set_nagle_enabled(false);
        let local = SocketAddr::new(ip, port);
        let remote = IpEndpoint::new(IpAddress::from(target.ip()), target.port());
        if let Err(e) = s.connect(host.iface.context(), remote, port) {
            self.ledger.borrow_mut().errors.push(format!(
                "client population {}: connect: {e}",
                plan.population
            ));
            self.members[m].wait_until = now + RETRY;
            return;
        }
        let handle = host.sockets.add(s);
        let id = self
            .ledger
            .borrow_mut()
            .open(plan.population, local, target, now);
        self.members[m].conn = Some(Active {
            handle,
            id,
            local,
            phase: Phase::Connecting,
            query,
            done: 0,
            to_send: 0,
            sent_payload: 0,
            owed: 0,
            received: 0,
            started: now,
            answer: Vec::new(),
        });
    }

    fn poll_udp(
        &mut self,
        host: &mut ClientHost,
        m: usize,
        plan: &Plan,
        now: Instant,
    ) -> Option<Instant> {
        if self.members[m].udp.is_none() {
            let port = self.port(host);
            let mut s = udp::Socket::new(
                udp::PacketBuffer::new(
                    vec![udp::PacketMetadata::EMPTY; 4],
                    vec![0; 4 * MAX_DATAGRAM],
                ),
                udp::PacketBuffer::new(
                    vec![udp::PacketMetadata::EMPTY; 4],
                    vec![0; 4 * MAX_DATAGRAM],
                ),
            );
            if s.bind(port).is_err() {
                return None;
            }
            self.members[m].udp = Some(host.sockets.add(s));
        }
        let handle = self.members[m].udp?;
        let buf = &mut self.scratch[..];
        let mut ledger = self.ledger.borrow_mut();
        let sock = host.sockets.get_mut::<udp::Socket>(handle);
        while let Ok((n, _)) = sock.recv_slice(buf) {
            let mem = &mut self.members[m];
            if let (Some(h), Some((id, _, arrival))) = (Header::decode(&buf[..n]), mem.datagram)
                && h.conn == id
            {
                let bad = wire::Pattern::response(id).mismatches(&buf[HEADER_LEN..n], 0);
                ledger.datagrams_answered += 1;
                ledger.requests += 1;
                ledger
                    .latencies_ns
                    .push(now.saturating_since(arrival).as_ns());
                if bad > 0 {
                    ledger.errors.push(format!(
                        "datagram answer {id}: {bad} bytes differ from the pattern"
                    ));
                }
                mem.datagram = None;
                mem.wait_until = now + plan.think;
            }
        }
        if let Some((_, sent, _)) = self.members[m].datagram {
            if now < sent + UDP_TIMEOUT {
                return Some(sent + UDP_TIMEOUT);
            }
            // Lost.
            self.members[m].datagram = None;
        }
        drop(ledger);
        let Some(arrival) = self.ready(m, plan, now) else {
            // Closed loop: the next request after the think time.
            let at = self.members[m].wait_until.max(plan.start);
            return (plan.gap.is_none() && at < plan.stop).then_some(at.max(now));
        };
        if plan.gap.is_some() {
            self.members[m].due.pop_front();
        }
        let id = self.next_datagram;
        self.next_datagram = self.next_datagram.wrapping_add(1);
        let id = id ^ (u32::from(plan.population) << 24);
        let len = (plan.request as usize).clamp(HEADER_LEN, MAX_DATAGRAM);
        let mut d = vec![0u8; len];
        d[..HEADER_LEN].copy_from_slice(
            &Header {
                kind: Kind::Request,
                conn: id,
                length: (len - HEADER_LEN) as u32,
                response: plan.response.min((MAX_DATAGRAM - HEADER_LEN) as u32),
            }
            .encode(),
        );
        wire::Pattern::request(id).fill(&mut d[HEADER_LEN..], 0);
        let remote = IpEndpoint::new(IpAddress::from(plan.target.ip()), plan.target.port());
        let sock = host.sockets.get_mut::<udp::Socket>(handle);
        if sock.send_slice(&d, remote).is_ok() {
            self.ledger.borrow_mut().datagrams_sent += 1;
            self.members[m].datagram = Some((id, now, arrival));
            Some(now + UDP_TIMEOUT)
        } else {
            Some(now + RETRY)
        }
    }
}
