//! The conventional stack, for comparison: one processor runs the only
//! TCP/IP instance, and applications on every processor reach it through
//! inter-processor messages — the "conventional TCP/IP" of the white
//! paper, where each socket call and each data transfer is a hop.
//!
//! Applications use the same [`SocketApi`] as on the parallel library. On
//! each processor a [`Proxy`] implements it: it keeps the state an
//! application can ask for without a message (received data, accepted
//! connections, send credit) and turns every call that changes something
//! into a message to the [`StackServer`] on the stack processor, which
//! runs the calls on its own [`Sockets`] and pushes events back (new
//! connections, data, end of stream, resets).
//!
//! Flow control: a proxy may send as many bytes as the server's socket
//! send buffer holds (`tcp_tx_buffer`); the server returns credit as the
//! bytes enter its TCP/IP instance. The server pushes received data while
//! the proxy has room (`tcp_rx_buffer`); the proxy returns credit when the
//! application has read half of it. Messages carry at most
//! `max_payload` bytes of data.
//!
//! Applications on the stack processor itself also talk to the server
//! through a proxy; their messages do not cross the fabric but still cost
//! a message each (the white paper's interprocess hop).

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

use snet_fabric::time::Instant;
use snet_firmware::FiveTuple;
use snet_firmware::control::RejectReason;
use snet_firmware::tuple::{addr16, ip_of};

use crate::socket::{
    ListenMode, SocketApi, SocketConfig, SocketError, SocketId, SocketState, Sockets, TUPLE_LEN,
    Ticket, decode_tuple, encode_tuple,
};

// Calls (proxy → server).
const LISTEN: u8 = 1;
const CONNECT: u8 = 2;
const SEND: u8 = 3;
const SHUTDOWN: u8 = 4;
const CLOSE: u8 = 5;
const CREDIT: u8 = 6;
const UDP_BIND: u8 = 7;
const SEND_TO: u8 = 8;
const ADOPT: u8 = 9;
// Events (server → proxy).
const STATUS: u8 = 101;
const ACCEPTED: u8 = 102;
const DATA: u8 = 103;
const EOF: u8 = 104;
const RESET: u8 = 105;
const DATAGRAM: u8 = 106;
const TICKET: u8 = 107;
const SENT: u8 = 108;
const ESTABLISHED: u8 = 109;

/// Proxy socket ids the server assigns (accepted connections) have this bit.
const SERVER_ASSIGNED: u32 = 1 << 31;

/// A STATUS event: code 0 for success, else the error's code and its
/// details (so the application sees the same error as on the parallel
/// library).
fn status_message(id: u32, r: &Result<(), SocketError>) -> Vec<u8> {
    let w = Writer::new(STATUS, id);
    match r {
        Ok(()) => w.u8(0),
        Err(SocketError::AddressInUse(port)) => w.u8(1).u16(*port),
        Err(SocketError::ConnectionReset) => w.u8(2),
        Err(SocketError::Unaddressable(a)) => w.u8(3).addr(*a),
        Err(SocketError::NoEphemeralPort { first, last }) => w.u8(4).u16(*first).u16(*last),
        Err(SocketError::InvalidTicket(_)) => w.u8(5),
        Err(SocketError::Refused(reason)) => w.u8(6).u8(reason.index() as u8),
        Err(_) => w.u8(7),
    }
    .0
}

/// The error of a failed STATUS event (`None` for success or garbage).
fn read_status(r: &mut Reader<'_>) -> Option<Result<(), SocketError>> {
    Some(Err(match r.u8()? {
        0 => return Some(Ok(())),
        1 => SocketError::AddressInUse(r.u16()?),
        2 => SocketError::ConnectionReset,
        3 => SocketError::Unaddressable(r.addr()?),
        4 => SocketError::NoEphemeralPort {
            first: r.u16()?,
            last: r.u16()?,
        },
        5 => SocketError::InvalidTicket("refused by the stack processor"),
        6 => SocketError::Refused(*RejectReason::ALL.get(usize::from(r.u8()?))?),
        _ => SocketError::Message("the stack processor failed the call".into()),
    }))
}

struct Writer(Vec<u8>);

impl Writer {
    fn new(op: u8, id: u32) -> Self {
        let mut v = Vec::with_capacity(16);
        v.push(op);
        v.extend_from_slice(&id.to_le_bytes());
        Writer(v)
    }
    fn u8(mut self, x: u8) -> Self {
        self.0.push(x);
        self
    }
    fn u16(mut self, x: u16) -> Self {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    fn u32(mut self, x: u32) -> Self {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    fn addr(mut self, a: SocketAddr) -> Self {
        self.0.extend_from_slice(&addr16(a.ip()));
        self.u16(a.port())
    }
    fn tuple(mut self, t: &FiveTuple) -> Self {
        encode_tuple(t, &mut self.0);
        self
    }
    fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
}

/// A reader over untrusted bytes: every read is checked.
pub(crate) struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        Reader(b)
    }
    /// How many messages a batch holds.
    pub(crate) fn count(mut self) -> usize {
        let mut n = 0;
        while self.frame().is_some() {
            n += 1;
        }
        n
    }
    /// The next length-prefixed message of a batch.
    pub(crate) fn frame(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (h, t) = self.0.split_at_checked(n)?;
        self.0 = t;
        Some(h)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn addr(&mut self) -> Option<SocketAddr> {
        let a: [u8; 16] = self.take(16)?.try_into().ok()?;
        Some(SocketAddr::new(ip_of(&a), self.u16()?))
    }
    fn tuple(&mut self) -> Option<FiveTuple> {
        decode_tuple(self.take(TUPLE_LEN)?)
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProxyKind {
    Tcp,
    Listener,
    Udp,
}

#[derive(Debug)]
struct ProxySocket {
    kind: ProxyKind,
    state: SocketState,
    port: Option<u16>,
    error: Option<SocketError>,
    peer: Option<SocketAddr>,
    rx: VecDeque<u8>,
    /// Bytes read since credit was last returned.
    consumed: usize,
    eof: bool,
    tx_credit: usize,
    accepted: VecDeque<u32>,
    tickets: VecDeque<Ticket>,
    datagrams: VecDeque<(SocketAddr, Vec<u8>)>,
}

impl ProxySocket {
    fn new(kind: ProxyKind, state: SocketState, tx_credit: usize) -> Self {
        ProxySocket {
            kind,
            state,
            port: None,
            error: None,
            peer: None,
            rx: VecDeque::new(),
            consumed: 0,
            eof: false,
            tx_credit,
            accepted: VecDeque::new(),
            tickets: VecDeque::new(),
            datagrams: VecDeque::new(),
        }
    }
}

/// A processor's side of the conventional stack: the socket API as
/// messages to the stack processor.
#[derive(Debug)]
pub struct Proxy {
    processor: usize,
    stack: usize,
    config: SocketConfig,
    max_payload: usize,
    sockets: BTreeMap<u32, ProxySocket>,
    next_id: u32,
    outgoing: VecDeque<(usize, Vec<u8>)>,
    calls: u64,
    stack_down: bool,
}

impl Proxy {
    /// The proxy of processor `processor` to the stack on `stack`; data
    /// messages carry at most `max_payload` bytes.
    pub fn new(processor: usize, stack: usize, config: SocketConfig, max_payload: usize) -> Self {
        Proxy {
            processor,
            stack,
            config,
            max_payload: max_payload.max(64),
            sockets: BTreeMap::new(),
            next_id: 1,
            outgoing: VecDeque::new(),
            calls: 0,
            stack_down: false,
        }
    }

    /// Socket calls made.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// The socket calls, at virtual time `now`.
    pub fn api(&mut self, now: Instant) -> ProxyApi<'_> {
        ProxyApi { proxy: self, now }
    }

    /// Messages to send: (processor, bytes).
    pub fn take_outgoing(&mut self) -> Vec<(usize, Vec<u8>)> {
        self.outgoing.drain(..).collect()
    }

    /// A message that could not be sent yet goes out on the next flush.
    pub fn requeue(&mut self, to: usize, bytes: Vec<u8>) {
        self.outgoing.push_back((to, bytes));
    }

    fn call(&mut self, bytes: Vec<u8>) {
        self.outgoing.push_back((self.stack, bytes));
    }

    /// The stack processor failed: every socket is reset.
    pub fn stack_failed(&mut self) {
        self.stack_down = true;
        for s in self.sockets.values_mut() {
            s.state = SocketState::Reset;
            s.error = Some(SocketError::ProcessorDown(self.stack));
        }
        self.outgoing.clear();
    }

    /// The stack processor runs again, with a new TCP/IP instance: the
    /// sockets the proxy had on the old one are gone (calls on them fail
    /// with [`SocketError::InvalidSocket`]), and new calls go to the new
    /// instance.
    pub fn stack_restored(&mut self) {
        self.stack_down = false;
        self.sockets.clear();
        self.outgoing.clear();
    }

    /// An event from the stack server (untrusted bytes: a malformed one is
    /// ignored).
    pub fn event(&mut self, bytes: &[u8]) {
        let mut r = Reader(bytes);
        let (Some(op), Some(id)) = (r.u8(), r.u32()) else {
            return;
        };
        let tx = self.config.tcp_tx_buffer;
        if op == ACCEPTED {
            let (Some(new), Some(peer)) = (r.u32(), r.addr()) else {
                return;
            };
            if let Some(l) = self.sockets.get_mut(&id) {
                l.accepted.push_back(new);
                let mut s = ProxySocket::new(ProxyKind::Tcp, SocketState::Established, tx);
                s.peer = Some(peer);
                self.sockets.insert(new, s);
            }
            return;
        }
        let Some(s) = self.sockets.get_mut(&id) else {
            return;
        };
        match op {
            STATUS => match read_status(&mut r) {
                // A status never moves a socket backwards.
                Some(Ok(())) if s.state == SocketState::Registering => {
                    s.state = match s.kind {
                        ProxyKind::Listener | ProxyKind::Udp => SocketState::Listening,
                        ProxyKind::Tcp => SocketState::Connecting,
                    };
                }
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    s.state = SocketState::Failed;
                    s.error = Some(e);
                }
                None => {}
            },
            ESTABLISHED => s.state = SocketState::Established,
            DATA => s.rx.extend(r.rest()),
            EOF => {
                s.eof = true;
                if s.state == SocketState::Established {
                    s.state = SocketState::PeerClosed;
                }
            }
            RESET => {
                s.state = SocketState::Reset;
                s.error = Some(SocketError::ConnectionReset);
            }
            DATAGRAM => {
                let Some(from) = r.addr() else { return };
                s.datagrams.push_back((from, r.rest().to_vec()));
            }
            TICKET => {
                let Some(tuple) = r.tuple() else { return };
                s.tickets.push_back(Ticket {
                    tuple,
                    owner: self.stack,
                });
            }
            SENT => {
                let Some(n) = r.u32() else { return };
                s.tx_credit = (s.tx_credit + n as usize).min(tx);
            }
            _ => {}
        }
    }
}

/// [`SocketApi`] on the conventional stack.
#[derive(Debug)]
pub struct ProxyApi<'a> {
    proxy: &'a mut Proxy,
    now: Instant,
}

impl ProxyApi<'_> {
    fn get(&mut self, s: SocketId) -> Result<&mut ProxySocket, SocketError> {
        self.proxy.calls += 1;
        if self.proxy.stack_down {
            return Err(SocketError::ProcessorDown(self.proxy.stack));
        }
        self.proxy
            .sockets
            .get_mut(&s.0)
            .ok_or(SocketError::InvalidSocket(s))
    }

    fn new_socket(&mut self, kind: ProxyKind, state: SocketState) -> u32 {
        let id = self.proxy.next_id;
        self.proxy.next_id = (self.proxy.next_id + 1) & !SERVER_ASSIGNED;
        let tx = self.proxy.config.tcp_tx_buffer;
        self.proxy
            .sockets
            .insert(id, ProxySocket::new(kind, state, tx));
        id
    }
}

impl SocketApi for ProxyApi<'_> {
    fn processor(&self) -> usize {
        self.proxy.processor
    }

    fn now(&self) -> Instant {
        self.now
    }

    fn tcp_socket(&mut self) -> Result<SocketId, SocketError> {
        self.proxy.calls += 1;
        if self.proxy.stack_down {
            return Err(SocketError::ProcessorDown(self.proxy.stack));
        }
        Ok(SocketId(
            self.new_socket(ProxyKind::Tcp, SocketState::Unbound),
        ))
    }

    fn bind(&mut self, s: SocketId, port: u16) -> Result<(), SocketError> {
        let sock = self.get(s)?;
        if sock.port.is_some() || sock.state != SocketState::Unbound {
            return Err(SocketError::InvalidState {
                socket: s,
                what: "already bound",
            });
        }
        if port == 0 {
            return Err(SocketError::InvalidState {
                socket: s,
                what: "port 0 cannot be bound",
            });
        }
        // The port is checked by the stack processor when the socket
        // listens or connects (the call that carries it).
        sock.port = Some(port);
        Ok(())
    }

    fn listen(&mut self, s: SocketId, backlog: usize, mode: ListenMode) -> Result<(), SocketError> {
        let sock = self.get(s)?;
        let Some(port) = sock.port else {
            return Err(SocketError::InvalidState {
                socket: s,
                what: "listen needs a bound socket",
            });
        };
        if sock.kind != ProxyKind::Tcp || sock.state != SocketState::Unbound {
            return Err(SocketError::InvalidState {
                socket: s,
                what: "already connected",
            });
        }
        sock.kind = ProxyKind::Listener;
        sock.state = SocketState::Registering;
        let m = match mode {
            ListenMode::Serve => 0,
            ListenMode::HandOff => 1,
        };
        self.proxy.call(
            Writer::new(LISTEN, s.0)
                .u16(port)
                .u16(backlog.min(u16::MAX as usize) as u16)
                .u8(m)
                .0,
        );
        Ok(())
    }

    fn accept(&mut self, listener: SocketId) -> Result<SocketId, SocketError> {
        let l = self.get(listener)?;
        if let Some(e) = &l.error {
            return Err(e.clone());
        }
        if l.kind != ProxyKind::Listener {
            return Err(SocketError::InvalidState {
                socket: listener,
                what: "not a listener",
            });
        }
        l.accepted
            .pop_front()
            .map(SocketId)
            .ok_or(SocketError::WouldBlock)
    }

    fn accept_nw1(&mut self, listener: SocketId) -> Result<Ticket, SocketError> {
        let l = self.get(listener)?;
        if let Some(e) = &l.error {
            return Err(e.clone());
        }
        l.tickets.pop_front().ok_or(SocketError::WouldBlock)
    }

    fn accept_nw2(&mut self, ticket: &Ticket) -> Result<SocketId, SocketError> {
        self.proxy.calls += 1;
        if self.proxy.stack_down {
            return Err(SocketError::ProcessorDown(self.proxy.stack));
        }
        let id = self.new_socket(ProxyKind::Tcp, SocketState::Registering);
        if let Some(s) = self.proxy.sockets.get_mut(&id) {
            s.peer = Some(SocketAddr::new(
                ip_of(&ticket.tuple.remote_addr),
                ticket.tuple.remote_port,
            ));
        }
        self.proxy
            .call(Writer::new(ADOPT, id).tuple(&ticket.tuple).0);
        Ok(SocketId(id))
    }

    fn connect(&mut self, s: SocketId, remote: SocketAddr) -> Result<(), SocketError> {
        let sock = self.get(s)?;
        if sock.kind != ProxyKind::Tcp || sock.state != SocketState::Unbound {
            return Err(SocketError::InvalidState {
                socket: s,
                what: "already connecting or connected",
            });
        }
        sock.state = SocketState::Registering;
        sock.peer = Some(remote);
        let port = sock.port.unwrap_or(0);
        self.proxy
            .call(Writer::new(CONNECT, s.0).addr(remote).u16(port).0);
        Ok(())
    }

    fn send(&mut self, s: SocketId, data: &[u8]) -> Result<usize, SocketError> {
        let max = self.proxy.max_payload - 8;
        let sock = self.get(s)?;
        if let Some(e) = &sock.error {
            return Err(e.clone());
        }
        if !matches!(
            sock.state,
            SocketState::Established | SocketState::PeerClosed
        ) {
            return Err(SocketError::WouldBlock);
        }
        let n = data.len().min(sock.tx_credit).min(max);
        if n == 0 {
            return if data.is_empty() {
                Ok(0)
            } else {
                Err(SocketError::WouldBlock)
            };
        }
        sock.tx_credit -= n;
        self.proxy.call(Writer::new(SEND, s.0).bytes(&data[..n]).0);
        Ok(n)
    }

    fn recv(&mut self, s: SocketId, buf: &mut [u8]) -> Result<usize, SocketError> {
        let window = self.proxy.config.tcp_rx_buffer;
        let sock = self.get(s)?;
        if sock.rx.is_empty() {
            if let Some(e) = &sock.error {
                return Err(e.clone());
            }
            return if sock.eof {
                Ok(0)
            } else {
                Err(SocketError::WouldBlock)
            };
        }
        let n = buf.len().min(sock.rx.len());
        for (d, b) in buf.iter_mut().zip(sock.rx.drain(..n)) {
            *d = b;
        }
        sock.consumed += n;
        if sock.consumed >= window / 2 && !sock.eof {
            let c = sock.consumed as u32;
            sock.consumed = 0;
            self.proxy.call(Writer::new(CREDIT, s.0).u32(c).0);
        }
        Ok(n)
    }

    fn shutdown(&mut self, s: SocketId) -> Result<(), SocketError> {
        let sock = self.get(s)?;
        if sock.kind != ProxyKind::Tcp {
            return Err(SocketError::NotConnected);
        }
        if sock.state == SocketState::Established {
            sock.state = SocketState::Closing;
        }
        self.proxy.call(Writer::new(SHUTDOWN, s.0).0);
        Ok(())
    }

    fn close(&mut self, s: SocketId) -> Result<(), SocketError> {
        self.get(s)?;
        self.proxy.sockets.remove(&s.0);
        self.proxy.call(Writer::new(CLOSE, s.0).0);
        Ok(())
    }

    fn udp_bind(&mut self, port: u16) -> Result<SocketId, SocketError> {
        self.proxy.calls += 1;
        if self.proxy.stack_down {
            return Err(SocketError::ProcessorDown(self.proxy.stack));
        }
        let id = self.new_socket(ProxyKind::Udp, SocketState::Registering);
        if let Some(s) = self.proxy.sockets.get_mut(&id) {
            s.port = Some(port);
        }
        self.proxy.call(Writer::new(UDP_BIND, id).u16(port).0);
        Ok(SocketId(id))
    }

    fn send_to(&mut self, s: SocketId, data: &[u8], to: SocketAddr) -> Result<usize, SocketError> {
        let max = self.proxy.max_payload - 32;
        let sock = self.get(s)?;
        if let Some(e) = &sock.error {
            return Err(e.clone());
        }
        if data.len() > max {
            return Err(SocketError::InvalidState {
                socket: s,
                what: "the datagram is larger than a message",
            });
        }
        self.proxy
            .call(Writer::new(SEND_TO, s.0).addr(to).bytes(data).0);
        Ok(data.len())
    }

    fn recv_from(
        &mut self,
        s: SocketId,
        buf: &mut [u8],
    ) -> Result<(usize, SocketAddr), SocketError> {
        let sock = self.get(s)?;
        if let Some(e) = &sock.error {
            return Err(e.clone());
        }
        let (from, d) = sock.datagrams.pop_front().ok_or(SocketError::WouldBlock)?;
        if d.len() > buf.len() {
            return Err(SocketError::InvalidState {
                socket: s,
                what: "the datagram is larger than the buffer",
            });
        }
        buf[..d.len()].copy_from_slice(&d);
        Ok((d.len(), from))
    }

    fn state(&self, s: SocketId) -> Result<SocketState, SocketError> {
        self.proxy
            .sockets
            .get(&s.0)
            .map(|x| x.state)
            .ok_or(SocketError::InvalidSocket(s))
    }

    fn peer(&self, s: SocketId) -> Result<Option<SocketAddr>, SocketError> {
        self.proxy
            .sockets
            .get(&s.0)
            .map(|x| x.peer)
            .ok_or(SocketError::InvalidSocket(s))
    }
}

#[derive(Debug)]
struct Served {
    /// The processor whose proxy owns it, and its id there.
    proxy: (usize, u32),
    kind: ProxyKind,
    /// Bytes the proxy can still buffer.
    credit: usize,
    /// Bytes from the proxy not yet taken by the TCP/IP instance.
    pending: VecDeque<u8>,
    /// Bytes taken since credit was last returned.
    taken: usize,
    status_sent: bool,
    established_sent: bool,
    eof_sent: bool,
    reset_sent: bool,
    shutdown: bool,
}

/// The stack processor's side of the conventional stack: runs the proxies'
/// calls on its own sockets and pushes events back.
#[derive(Debug)]
pub struct StackServer {
    processor: usize,
    config: SocketConfig,
    max_payload: usize,
    served: BTreeMap<SocketId, Served>,
    by_proxy: BTreeMap<(usize, u32), SocketId>,
    next_assigned: u32,
    outgoing: VecDeque<(usize, Vec<u8>)>,
    /// Sockets of failed processors, closed on the next call.
    orphans: Vec<SocketId>,
}

impl StackServer {
    /// The server on processor `processor`.
    pub fn new(processor: usize, config: SocketConfig, max_payload: usize) -> Self {
        StackServer {
            processor,
            config,
            max_payload: max_payload.max(64),
            served: BTreeMap::new(),
            by_proxy: BTreeMap::new(),
            next_assigned: 1,
            outgoing: VecDeque::new(),
            orphans: Vec::new(),
        }
    }

    /// The stack processor.
    pub fn processor(&self) -> usize {
        self.processor
    }

    /// Messages to send: (processor, bytes).
    pub fn take_outgoing(&mut self) -> Vec<(usize, Vec<u8>)> {
        self.outgoing.drain(..).collect()
    }

    /// A message that could not be sent yet goes out on the next flush.
    pub fn requeue(&mut self, to: usize, bytes: Vec<u8>) {
        self.outgoing.push_back((to, bytes));
    }

    fn add(&mut self, sid: SocketId, proxy: (usize, u32), kind: ProxyKind) {
        self.served.insert(
            sid,
            Served {
                proxy,
                kind,
                credit: self.config.tcp_rx_buffer,
                pending: VecDeque::new(),
                taken: 0,
                status_sent: false,
                established_sent: false,
                eof_sent: false,
                reset_sent: false,
                shutdown: false,
            },
        );
        self.by_proxy.insert(proxy, sid);
    }

    fn status(&mut self, to: (usize, u32), r: Result<(), SocketError>) {
        self.outgoing.push_back((to.0, status_message(to.1, &r)));
    }

    /// Processor `p` failed: the connections its applications had are
    /// aborted.
    pub fn processor_failed(&mut self, p: usize) {
        let gone: Vec<SocketId> = self
            .served
            .iter()
            .filter(|(_, s)| s.proxy.0 == p)
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            if let Some(s) = self.served.remove(&id) {
                self.by_proxy.remove(&s.proxy);
            }
            self.orphans.push(id);
        }
        self.outgoing.retain(|(to, _)| *to != p);
    }

    /// A call from processor `from`'s proxy (untrusted bytes: a malformed
    /// call is ignored).
    pub fn request(&mut self, sockets: &mut Sockets, from: usize, bytes: &[u8], now: Instant) {
        self.close_orphans(sockets, now);
        let mut r = Reader(bytes);
        let (Some(op), Some(id)) = (r.u8(), r.u32()) else {
            return;
        };
        let key = (from, id);
        let mut api = sockets.api(now);
        match op {
            LISTEN => {
                let (Some(port), Some(backlog), Some(mode)) = (r.u16(), r.u16(), r.u8()) else {
                    return;
                };
                let mode = if mode == 1 {
                    ListenMode::HandOff
                } else {
                    ListenMode::Serve
                };
                match api.tcp_listen(port, usize::from(backlog), mode) {
                    Ok(sid) => self.add(sid, key, ProxyKind::Listener),
                    Err(e) => self.status(key, Err(e)),
                }
            }
            CONNECT => {
                let (Some(remote), Some(port)) = (r.addr(), r.u16()) else {
                    return;
                };
                let result = api.tcp_socket().and_then(|sid| {
                    if port != 0 {
                        api.bind(sid, port)?;
                    }
                    api.connect(sid, remote)?;
                    Ok(sid)
                });
                match result {
                    Ok(sid) => self.add(sid, key, ProxyKind::Tcp),
                    Err(e) => self.status(key, Err(e)),
                }
            }
            ADOPT => {
                let Some(tuple) = r.tuple() else { return };
                let ticket = Ticket {
                    tuple,
                    owner: self.processor,
                };
                match api.accept_nw2(&ticket) {
                    Ok(sid) => {
                        self.add(sid, key, ProxyKind::Tcp);
                        if let Some(s) = self.served.get_mut(&sid) {
                            s.status_sent = true;
                        }
                    }
                    Err(e) => self.status(key, Err(e)),
                }
            }
            UDP_BIND => {
                let Some(port) = r.u16() else { return };
                match api.udp_bind(port) {
                    Ok(sid) => self.add(sid, key, ProxyKind::Udp),
                    Err(e) => self.status(key, Err(e)),
                }
            }
            _ => {
                let Some(&sid) = self.by_proxy.get(&key) else {
                    return;
                };
                match op {
                    SEND => {
                        if let Some(s) = self.served.get_mut(&sid) {
                            s.pending.extend(r.rest());
                        }
                    }
                    CREDIT => {
                        if let (Some(n), Some(s)) = (r.u32(), self.served.get_mut(&sid)) {
                            s.credit = (s.credit + n as usize).min(self.config.tcp_rx_buffer);
                        }
                    }
                    SHUTDOWN => {
                        if let Some(s) = self.served.get_mut(&sid) {
                            s.shutdown = true;
                        }
                    }
                    CLOSE => {
                        // Queued data still goes out; the close follows it.
                        if let Some(s) = self.served.get_mut(&sid) {
                            s.shutdown = true;
                            s.proxy.1 = u32::MAX;
                        }
                        self.by_proxy.remove(&key);
                    }
                    SEND_TO => {
                        if let Some(to) = r.addr() {
                            let _ = api.send_to(sid, r.rest(), to);
                        }
                    }
                    _ => {}
                }
            }
        }
        self.serve(sockets, now);
    }

    fn close_orphans(&mut self, sockets: &mut Sockets, now: Instant) {
        let mut api = sockets.api(now);
        for id in self.orphans.drain(..) {
            let _ = api.close(id);
        }
    }

    /// Runs the served sockets after the TCP/IP instance ran: new
    /// connections, data both ways, ends of stream, resets.
    pub fn serve(&mut self, sockets: &mut Sockets, now: Instant) {
        self.close_orphans(sockets, now);
        let max = self.max_payload - 8;
        let mut buf = vec![0u8; max];
        let mut api = sockets.api(now);
        let mut accepted = Vec::new();
        let mut finished = Vec::new();
        for (&sid, s) in self.served.iter_mut() {
            let to = s.proxy;
            let closed_by_proxy = to.1 == u32::MAX;
            match s.kind {
                ProxyKind::Listener | ProxyKind::Udp if closed_by_proxy => finished.push(sid),
                ProxyKind::Listener | ProxyKind::Udp => {
                    if !s.status_sent {
                        match api.state(sid) {
                            Ok(SocketState::Listening) => {
                                s.status_sent = true;
                                self.outgoing
                                    .push_back((to.0, status_message(to.1, &Ok(()))));
                            }
                            Ok(SocketState::Failed) => {
                                s.status_sent = true;
                                let r = api.accept(sid).map(|_| ());
                                self.outgoing.push_back((to.0, status_message(to.1, &r)));
                            }
                            _ => {}
                        }
                        continue;
                    }
                    if s.kind == ProxyKind::Udp {
                        while let Ok((n, from)) = api.recv_from(sid, &mut buf) {
                            self.outgoing.push_back((
                                to.0,
                                Writer::new(DATAGRAM, to.1).addr(from).bytes(&buf[..n]).0,
                            ));
                        }
                        continue;
                    }
                    while let Ok(c) = api.accept(sid) {
                        accepted.push((c, to));
                    }
                    while let Ok(t) = api.accept_nw1(sid) {
                        self.outgoing
                            .push_back((to.0, Writer::new(TICKET, to.1).tuple(&t.tuple).0));
                    }
                }
                ProxyKind::Tcp => {
                    let state = api.state(sid).unwrap_or(SocketState::Closed);
                    if !s.status_sent && state != SocketState::Registering {
                        s.status_sent = true;
                        if state == SocketState::Failed {
                            let r = api.send(sid, &[]).map(|_| ());
                            self.outgoing.push_back((to.0, status_message(to.1, &r)));
                            finished.push(sid);
                            continue;
                        }
                        self.outgoing
                            .push_back((to.0, status_message(to.1, &Ok(()))));
                    }
                    if !s.established_sent
                        && matches!(state, SocketState::Established | SocketState::PeerClosed)
                    {
                        s.established_sent = true;
                        self.outgoing
                            .push_back((to.0, Writer::new(ESTABLISHED, to.1).0));
                    }
                    // Proxy → network.
                    while !s.pending.is_empty() {
                        let (a, _) = s.pending.as_slices();
                        match api.send(sid, a) {
                            Ok(n) if n > 0 => {
                                s.pending.drain(..n);
                                s.taken += n;
                            }
                            Ok(_) | Err(SocketError::WouldBlock) => break,
                            // Reset or closed: what is queued cannot go.
                            Err(_) => s.pending.clear(),
                        }
                    }
                    if s.taken > 0 && !closed_by_proxy {
                        self.outgoing
                            .push_back((to.0, Writer::new(SENT, to.1).u32(s.taken as u32).0));
                        s.taken = 0;
                    }
                    if s.shutdown && s.pending.is_empty() {
                        let _ = api.shutdown(sid);
                    }
                    // Network → proxy.
                    while s.credit > 0 && !s.eof_sent && !s.reset_sent {
                        let want = s.credit.min(max);
                        match api.recv(sid, &mut buf[..want]) {
                            Ok(0) => {
                                s.eof_sent = true;
                                if !closed_by_proxy {
                                    self.outgoing.push_back((to.0, Writer::new(EOF, to.1).0));
                                }
                            }
                            Ok(n) => {
                                s.credit -= n;
                                if !closed_by_proxy {
                                    self.outgoing.push_back((
                                        to.0,
                                        Writer::new(DATA, to.1).bytes(&buf[..n]).0,
                                    ));
                                }
                            }
                            Err(SocketError::ConnectionReset) => {
                                s.reset_sent = true;
                                if !closed_by_proxy {
                                    self.outgoing.push_back((to.0, Writer::new(RESET, to.1).0));
                                }
                            }
                            Err(_) => break,
                        }
                    }
                    if closed_by_proxy && s.pending.is_empty() {
                        finished.push(sid);
                    }
                }
            }
        }
        for sid in finished {
            let _ = api.close(sid);
            if let Some(s) = self.served.remove(&sid) {
                self.by_proxy.remove(&s.proxy);
            }
        }
        for (c, (p, listener)) in accepted {
            let id = SERVER_ASSIGNED | self.next_assigned;
            self.next_assigned = (self.next_assigned + 1) & !SERVER_ASSIGNED;
            let peer = api
                .peer(c)
                .ok()
                .flatten()
                .unwrap_or(SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0));
            self.outgoing
                .push_back((p, Writer::new(ACCEPTED, listener).u32(id).addr(peer).0));
            self.served.insert(
                c,
                Served {
                    proxy: (p, id),
                    kind: ProxyKind::Tcp,
                    credit: self.config.tcp_rx_buffer,
                    pending: VecDeque::new(),
                    taken: 0,
                    status_sent: true,
                    established_sent: true,
                    eof_sent: false,
                    reset_sent: false,
                    shutdown: false,
                },
            );
            self.by_proxy.insert((p, id), c);
        }
    }
}
