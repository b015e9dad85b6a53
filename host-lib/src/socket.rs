//! The socket API of an emulated processor, and its implementation on the
//! parallel library (a TCP/IP instance in every processor).
//!
//! Applications see one [`SocketApi`], non-blocking and poll-driven, with
//! typed errors; the same application runs on the parallel library
//! ([`Sockets`], here) and on the conventional stack
//! ([`crate::conventional`]), where every call is a message to the one
//! processor that runs TCP/IP.
//!
//! ## What the library tells the adapters' firmware
//! Every firmware change is a control message to **every** adapter serving
//! the cluster IP (so a backup adapter holds the same filters); an operation
//! completes when every adapter has answered, and fails with the first
//! refusal. An adapter that is down is skipped, and one that fails before
//! answering is no longer waited for (see [`Sockets::control_skipped`] and
//! [`Sockets::adapter_down`]): it is brought back in step when restored.
//! - `listen` registers the listener ([`ControlMessage::RegisterListener`]);
//!   the socket reports [`SocketState::Registering`] until the adapters
//!   agree, and a refused registration (the port is owned exclusively by
//!   another processor) makes `accept` fail with
//!   [`SocketError::AddressInUse`].
//! - A connection attempt reaches a listening processor as a provisional
//!   entry. The listener keeps one TCP/IP socket listening and opens more
//!   as attempts arrive, up to its backlog ([`crate::stack::ListenGate`]).
//!   When its handshake completes, the library confirms it
//!   ([`ControlMessage::AddConnection`]) and queues it for `accept` — the
//!   accept queue of a kernel; `accept` hands out connections whose filter
//!   is confirmed or being confirmed.
//! - `connect` picks a local port from the processor's own ephemeral range
//!   (processors never share one, so no two choose the same 4-tuple) and
//!   registers the 5-tuple before its SYN leaves.
//! - `close` removes the filter once the connection is gone: after the
//!   last ACK for a passive close, after TIME-WAIT (smoltcp's 10 s) for an
//!   active one — so a FIN the peer sends again during TIME-WAIT still
//!   reaches the processor that can answer it. A reset connection's filter
//!   goes at once.
//!
//! ## Connection hand-off (accept_nw1 / accept_nw2)
//! The hand-off happens at SYN time, before the processor that listens has
//! answered, so no TCP state needs to move — only the adapter's filter and
//! the frames queued so far:
//! 1. A listener opened with [`ListenMode::HandOff`] does not let its TCP/IP
//!    instance see connection attempts: the library holds each SYN (and any
//!    frame of the same 5-tuple after it) and confirms the connection's
//!    filter with the adapters (owner: this processor).
//! 2. `accept_nw1` returns a [`Ticket`] — the 5-tuple and the owning
//!    processor — which the application passes on, typically in an
//!    inter-processor message.
//! 3. `accept_nw2(ticket)`, on any processor, asks the owner's library
//!    (a system message over the fabric) to give the connection up. The
//!    owner moves the adapter's filter ([`ControlMessage::MoveConnection`])
//!    and, once every adapter agreed, answers with the frames it held. From
//!    then on the owner drops (and counts as strays) any frame of the
//!    connection that still reaches it; the adapter sends none.
//! 4. The adopter feeds the held frames to its own instance, in order,
//!    through a listening socket made for the connection; it answers the SYN
//!    and the client sees one ordinary connection.
//!
//! Until the adopter's instance has the frames, the client's SYN
//! retransmissions are held too (on the owner before the move, on the
//! adopter after), never answered with a reset.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};

use smoltcp::iface::SocketHandle;
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::{IpAddress, IpEndpoint, IpListenEndpoint};
use snet_fabric::time::Instant;
use snet_firmware::control::{ControlMessage, RejectReason};
use snet_firmware::listener::ListenerKey;
use snet_firmware::tuple::{Addr16, PROTO_TCP, PROTO_UDP, ip_of};
use snet_firmware::{FiveTuple, ProcessorId};

use crate::queue::ControlOutcome;
use crate::stack::{GatePort, ProcessorStack};

/// A socket of one processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SocketId(pub u32);

impl std::fmt::Display for SocketId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "socket {}", self.0)
    }
}

/// Why a socket call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SocketError {
    /// Nothing to do now; call again after the next poll.
    #[error("the operation would block")]
    WouldBlock,
    /// No such socket on this processor.
    #[error("{0} does not exist")]
    InvalidSocket(SocketId),
    /// The call does not apply to this kind of socket or its state.
    #[error("{socket}: {what}")]
    InvalidState {
        /// The socket.
        socket: SocketId,
        /// What is wrong.
        what: &'static str,
    },
    /// The port is in use on this processor, or owned exclusively by
    /// another processor of the cluster.
    #[error("port {0} is in use")]
    AddressInUse(u16),
    /// The peer reset the connection (or its processor failed).
    #[error("connection reset")]
    ConnectionReset,
    /// The socket is not connected.
    #[error("not connected")]
    NotConnected,
    /// This processor's ephemeral range is exhausted.
    #[error("no ephemeral port left in {first}..={last}")]
    NoEphemeralPort {
        /// First port of the range.
        first: u16,
        /// Last port of the range.
        last: u16,
    },
    /// The address is not one the cluster can reach or serve.
    #[error("address {0} cannot be used")]
    Unaddressable(SocketAddr),
    /// An adapter's firmware refused the operation.
    #[error("the adapter refused: {0}")]
    Refused(RejectReason),
    /// The adapter could not be reached.
    #[error("the adapter did not answer: {0}")]
    AdapterUnavailable(String),
    /// A hand-off ticket was malformed or is no longer valid.
    #[error("invalid hand-off ticket: {0}")]
    InvalidTicket(&'static str),
    /// The processor that runs the operation failed.
    #[error("processor {0} is down")]
    ProcessorDown(usize),
    /// The message system refused the call.
    #[error("inter-processor message: {0}")]
    Message(String),
}

/// What a socket is doing, as an application sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketState {
    /// Created, not yet listening or connecting.
    Unbound,
    /// Waiting for the adapters to agree (listen, connect, hand-off).
    Registering,
    /// Accepting connections.
    Listening,
    /// The handshake runs.
    Connecting,
    /// Data flows both ways.
    Established,
    /// The peer closed its side: what is queued can still be read.
    PeerClosed,
    /// This side closed (or shut down) its sending half.
    Closing,
    /// Gone; nothing more will happen.
    Closed,
    /// Reset by the peer or by a failure.
    Reset,
    /// The operation that set it up failed (see the next call's error).
    Failed,
}

/// How a listener treats connection attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListenMode {
    /// It serves them: [`SocketApi::accept`].
    #[default]
    Serve,
    /// It hands them to other processes: [`SocketApi::accept_nw1`].
    HandOff,
}

/// The information of a connection taken with `accept_nw1`, to be adopted
/// with `accept_nw2` (it travels between processes as bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// The connection.
    pub tuple: FiveTuple,
    /// The processor that holds it.
    pub owner: usize,
}

/// Bytes of an encoded ticket.
pub const TICKET_LEN: usize = 4 + TUPLE_LEN;
const TICKET_MAGIC: [u8; 2] = *b"TK";
pub(crate) const TUPLE_LEN: usize = 1 + 16 + 2 + 16 + 2;

pub(crate) fn encode_tuple(t: &FiveTuple, out: &mut Vec<u8>) {
    out.push(t.protocol);
    out.extend_from_slice(&t.remote_addr);
    out.extend_from_slice(&t.remote_port.to_le_bytes());
    out.extend_from_slice(&t.local_addr);
    out.extend_from_slice(&t.local_port.to_le_bytes());
}

pub(crate) fn decode_tuple(b: &[u8]) -> Option<FiveTuple> {
    if b.len() < TUPLE_LEN {
        return None;
    }
    let addr = |o: usize| -> Addr16 { b[o..o + 16].try_into().unwrap_or([0; 16]) };
    let port = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let protocol = b[0];
    if protocol != PROTO_TCP && protocol != PROTO_UDP {
        return None;
    }
    Some(FiveTuple {
        protocol,
        remote_addr: addr(1),
        remote_port: port(17),
        local_addr: addr(19),
        local_port: port(35),
    })
}

impl Ticket {
    /// The ticket as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(TICKET_LEN);
        v.extend_from_slice(&TICKET_MAGIC);
        v.extend_from_slice(&(self.owner as u16).to_le_bytes());
        encode_tuple(&self.tuple, &mut v);
        v
    }

    /// A ticket from bytes (untrusted: every field is checked).
    pub fn from_bytes(b: &[u8]) -> Result<Ticket, SocketError> {
        if b.len() != TICKET_LEN {
            return Err(SocketError::InvalidTicket("wrong length"));
        }
        if b[..2] != TICKET_MAGIC {
            return Err(SocketError::InvalidTicket("not a ticket"));
        }
        let owner = usize::from(u16::from_le_bytes([b[2], b[3]]));
        let tuple = decode_tuple(&b[4..]).ok_or(SocketError::InvalidTicket("bad 5-tuple"))?;
        if tuple.protocol != PROTO_TCP {
            return Err(SocketError::InvalidTicket("not a TCP connection"));
        }
        Ok(Ticket { tuple, owner })
    }
}

/// The socket calls of an application on an emulated processor. All are
/// non-blocking: a call that cannot complete now returns
/// [`SocketError::WouldBlock`]; the application is polled again when
/// something happened on its processor.
pub trait SocketApi {
    /// The processor this API runs on.
    fn processor(&self) -> usize;
    /// The current virtual time.
    fn now(&self) -> Instant;
    /// A new, unbound TCP socket.
    fn tcp_socket(&mut self) -> Result<SocketId, SocketError>;
    /// Binds a socket to a local port.
    fn bind(&mut self, s: SocketId, port: u16) -> Result<(), SocketError>;
    /// Listens on a bound socket (registers with every adapter).
    fn listen(&mut self, s: SocketId, backlog: usize, mode: ListenMode) -> Result<(), SocketError>;
    /// Takes a connection from a listener.
    fn accept(&mut self, listener: SocketId) -> Result<SocketId, SocketError>;
    /// Takes a connection's information from a hand-off listener without
    /// serving it.
    fn accept_nw1(&mut self, listener: SocketId) -> Result<Ticket, SocketError>;
    /// Adopts a connection taken with `accept_nw1` (on any processor).
    fn accept_nw2(&mut self, ticket: &Ticket) -> Result<SocketId, SocketError>;
    /// Connects a socket (an unbound one gets an ephemeral port).
    fn connect(&mut self, s: SocketId, remote: SocketAddr) -> Result<(), SocketError>;
    /// Queues data to send; returns how much was taken.
    fn send(&mut self, s: SocketId, data: &[u8]) -> Result<usize, SocketError>;
    /// Reads received data; `Ok(0)` once the peer closed and all was read.
    fn recv(&mut self, s: SocketId, buf: &mut [u8]) -> Result<usize, SocketError>;
    /// Closes the sending half (FIN after the queued data).
    fn shutdown(&mut self, s: SocketId) -> Result<(), SocketError>;
    /// Closes the socket; the connection finishes in the background.
    fn close(&mut self, s: SocketId) -> Result<(), SocketError>;
    /// A UDP socket bound to `port` (registered with every adapter).
    fn udp_bind(&mut self, port: u16) -> Result<SocketId, SocketError>;
    /// Sends one datagram.
    fn send_to(&mut self, s: SocketId, data: &[u8], to: SocketAddr) -> Result<usize, SocketError>;
    /// Receives one datagram.
    fn recv_from(
        &mut self,
        s: SocketId,
        buf: &mut [u8],
    ) -> Result<(usize, SocketAddr), SocketError>;
    /// The socket's state.
    fn state(&self, s: SocketId) -> Result<SocketState, SocketError>;
    /// The connected peer.
    fn peer(&self, s: SocketId) -> Result<Option<SocketAddr>, SocketError>;

    /// socket + bind + listen.
    fn tcp_listen(
        &mut self,
        port: u16,
        backlog: usize,
        mode: ListenMode,
    ) -> Result<SocketId, SocketError> {
        let s = self.tcp_socket()?;
        if let Err(e) = self
            .bind(s, port)
            .and_then(|_| self.listen(s, backlog, mode))
        {
            let _ = self.close(s);
            return Err(e);
        }
        Ok(s)
    }

    /// socket + connect from an ephemeral port.
    fn tcp_connect(&mut self, remote: SocketAddr) -> Result<SocketId, SocketError> {
        let s = self.tcp_socket()?;
        if let Err(e) = self.connect(s, remote) {
            let _ = self.close(s);
            return Err(e);
        }
        Ok(s)
    }
}

/// Settings of a processor's sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketConfig {
    /// Receive buffer of a TCP socket, bytes.
    pub tcp_rx_buffer: usize,
    /// Send buffer of a TCP socket, bytes.
    pub tcp_tx_buffer: usize,
    /// Datagrams a UDP socket buffers each way.
    pub udp_packets: usize,
    /// Payload bytes a UDP socket buffers each way.
    pub udp_buffer: usize,
    /// This processor's ephemeral ports (first, last).
    pub ephemeral: (u16, u16),
    /// Adapters serving the cluster IP (each gets every control message).
    pub adapters: usize,
    /// Largest backlog a listener may ask for.
    pub max_backlog: usize,
    /// Send small segments at once instead of holding them while data is
    /// unacknowledged (Nagle's algorithm off, like `TCP_NODELAY`).
    pub nodelay: bool,
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            tcp_rx_buffer: 64 * 1024,
            tcp_tx_buffer: 64 * 1024,
            udp_packets: 64,
            udp_buffer: 64 * 1024,
            ephemeral: EPHEMERAL,
            adapters: 1,
            max_backlog: 1024,
            nodelay: false,
        }
    }
}

/// The cluster's ephemeral port range, split between processors.
pub const EPHEMERAL: (u16, u16) = (49152, 65535);

/// Processor `p`'s share of the ephemeral range among `n` processors:
/// disjoint, equal slices (the last takes the remainder).
pub fn ephemeral_range(p: usize, n: usize) -> (u16, u16) {
    let (first, last) = (u32::from(EPHEMERAL.0), u32::from(EPHEMERAL.1));
    let n = n.max(1) as u32;
    let span = (last - first + 1) / n;
    let lo = first + span * p as u32;
    let hi = if p as u32 + 1 == n {
        last
    } else {
        lo + span - 1
    };
    (lo as u16, hi as u16)
}

/// Counters of a processor's sockets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketCounters {
    /// Connections handed out by `accept`.
    pub accepted: u64,
    /// Connections this processor opened with `connect`.
    pub connected: u64,
    /// Connections that ended with an orderly close.
    pub closed: u64,
    /// Connections that ended with a reset.
    pub reset: u64,
    /// Control messages sent (one per adapter).
    pub control_sent: u64,
    /// Control messages an adapter refused.
    pub control_refused: u64,
    /// Connections taken with `accept_nw1`.
    pub handed_off: u64,
    /// Connections adopted with `accept_nw2`.
    pub adopted: u64,
    /// System messages that could not be carried because their processor
    /// was down.
    pub system_undeliverable: u64,
    /// Socket calls made.
    pub calls: u64,
    /// Bytes applications sent.
    pub bytes_sent: u64,
    /// Bytes applications received.
    pub bytes_received: u64,
}

/// A message between the libraries of two processors (the hand-off
/// protocol), carried by the inter-processor message system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemMessage {
    /// "Give me this connection" (adopter → owner).
    Adopt(FiveTuple),
    /// The owner's answer: the frames it held, or why not.
    Adopted {
        /// The connection.
        tuple: FiveTuple,
        /// Frames held so far (SYN first), or the refusal.
        frames: Result<Vec<Vec<u8>>, SocketError>,
    },
}

const SYS_ADOPT: u8 = 1;
const SYS_ADOPTED: u8 = 2;

impl SystemMessage {
    /// Encodes the message.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        match self {
            SystemMessage::Adopt(t) => {
                v.push(SYS_ADOPT);
                encode_tuple(t, &mut v);
            }
            SystemMessage::Adopted { tuple, frames } => {
                v.push(SYS_ADOPTED);
                encode_tuple(tuple, &mut v);
                match frames {
                    Ok(fs) => {
                        v.push(0);
                        v.extend_from_slice(&(fs.len() as u32).to_le_bytes());
                        for f in fs {
                            v.extend_from_slice(&(f.len() as u32).to_le_bytes());
                            v.extend_from_slice(f);
                        }
                    }
                    Err(_) => v.push(1),
                }
            }
        }
        v
    }

    /// Decodes a message (untrusted bytes: every length is checked).
    pub fn from_bytes(b: &[u8]) -> Option<SystemMessage> {
        let (&kind, rest) = b.split_first()?;
        let tuple = decode_tuple(rest)?;
        let rest = &rest[TUPLE_LEN..];
        match kind {
            SYS_ADOPT if rest.is_empty() => Some(SystemMessage::Adopt(tuple)),
            SYS_ADOPTED => {
                let (&status, mut rest) = rest.split_first()?;
                if status != 0 {
                    return rest.is_empty().then_some(SystemMessage::Adopted {
                        tuple,
                        frames: Err(SocketError::InvalidTicket("the owner refused")),
                    });
                }
                let read_u32 = |r: &mut &[u8]| -> Option<usize> {
                    let (h, t) = r.split_at_checked(4)?;
                    *r = t;
                    Some(u32::from_le_bytes(h.try_into().ok()?) as usize)
                };
                let n = read_u32(&mut rest)?;
                let mut frames = Vec::new();
                for _ in 0..n {
                    let len = read_u32(&mut rest)?;
                    let (f, t) = rest.split_at_checked(len)?;
                    frames.push(f.to_vec());
                    rest = t;
                }
                rest.is_empty().then_some(SystemMessage::Adopted {
                    tuple,
                    frames: Ok(frames),
                })
            }
            _ => None,
        }
    }
}

#[derive(Debug)]
enum Kind {
    Tcp(Tcp),
    Listener(Listener),
    Udp(Udp),
}

#[derive(Debug)]
struct Tcp {
    port: Option<u16>,
    handle: Option<SocketHandle>,
    phase: TcpPhase,
    tuple: Option<FiveTuple>,
    /// The adapters hold (or are getting) a filter for it.
    registered: bool,
    remote: Option<SocketAddr>,
    eof: bool,
    reset: bool,
    /// The application closed it; the library frees it when TCP is done.
    released: bool,
}

impl Tcp {
    /// A connection socket in `phase`, with nothing else known yet.
    fn new(phase: TcpPhase) -> Self {
        Tcp {
            port: None,
            handle: None,
            phase,
            tuple: None,
            registered: false,
            remote: None,
            eof: false,
            reset: false,
            released: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TcpPhase {
    Fresh,
    Registering,
    Open,
    /// Waiting for the owner's frames (accept_nw2).
    Adopting,
    Failed(SocketError),
}

#[derive(Debug)]
struct Listener {
    port: u16,
    mode: ListenMode,
    backlog: usize,
    /// smoltcp sockets listening on the port.
    waiting: Vec<SocketHandle>,
    /// Established connections for `accept`.
    ready: VecDeque<(SocketHandle, FiveTuple)>,
    /// Held connections for `accept_nw1`.
    held: VecDeque<FiveTuple>,
    phase: ListenPhase,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ListenPhase {
    Registering,
    Listening,
    Failed(SocketError),
}

#[derive(Debug)]
struct Udp {
    port: u16,
    handle: SocketHandle,
    phase: ListenPhase,
}

#[derive(Debug, Clone)]
enum OpKind {
    Listen(SocketId),
    Connect(SocketId),
    /// A confirmation, removal or unregistration nobody waits for.
    Background,
    /// A held connection's confirmation (hand-off listener).
    Hold(FiveTuple),
    /// Moving a connection to an adopter, who waits for the answer.
    Move {
        tuple: FiveTuple,
        to: usize,
    },
}

#[derive(Debug)]
struct Op {
    kind: OpKind,
    answers: usize,
    refused: Option<RejectReason>,
}

/// A message for another processor's library, to be carried by the
/// inter-processor message system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemOut {
    /// The destination processor.
    pub to: usize,
    /// The message.
    pub message: SystemMessage,
}

/// The sockets of one processor on the parallel library: its TCP/IP
/// instance, the socket table, and the bookkeeping of what the adapters
/// were told.
pub struct Sockets {
    /// The processor's TCP/IP instance.
    pub stack: ProcessorStack,
    processor: usize,
    config: SocketConfig,
    local_v4: Option<IpAddr>,
    local_v6: Option<IpAddr>,
    table: BTreeMap<SocketId, Kind>,
    next_id: u32,
    /// Local (protocol, port) pairs in use.
    ports: BTreeSet<(u8, u16)>,
    next_ephemeral: u16,
    /// Control messages to send, with their operation.
    control_out: Vec<(u64, ControlMessage)>,
    /// Messages sent and not yet answered, by (adapter, sequence).
    sent: BTreeMap<(usize, u32), u64>,
    ops: BTreeMap<u64, Op>,
    next_op: u64,
    /// System messages to send.
    system_out: Vec<SystemOut>,
    /// Hand-offs: held connections not yet given away, by tuple.
    holding: BTreeSet<FiveTuple>,
    /// Connections being adopted here, by tuple.
    adopting: BTreeMap<FiveTuple, SocketId>,
    /// Closed TCP sockets kept for the next connection, with their buffers:
    /// allocating (and zeroing) two fresh buffers per connection was a tenth
    /// of a busy server's time. `listen` and `connect` reset every piece of
    /// connection state; what is configured is set again when one is taken.
    spare_tcp: Vec<tcp::Socket<'static>>,
    counters: SocketCounters,
}

/// Closed TCP sockets each processor keeps for reuse, at most.
const SPARE_TCP_SOCKETS: usize = 4;

/// Sockets a listener keeps listening after a connection attempt found none
/// (a burst of SYNs is likely to go on), within its backlog.
const LISTEN_AHEAD_AFTER_BURST: usize = 8;

impl std::fmt::Debug for Sockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sockets")
            .field("processor", &self.processor)
            .field("sockets", &self.table.len())
            .field("counters", &self.counters)
            .finish()
    }
}

/// A smoltcp TCP socket with the configured buffers.
fn new_tcp_socket(config: &SocketConfig) -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; config.tcp_rx_buffer]),
        tcp::SocketBuffer::new(vec![0; config.tcp_tx_buffer]),
    );
    s.set_nagle_enabled(!config.nodelay);
    s
}

fn reject_error(r: RejectReason, port: u16) -> SocketError {
    match r {
        RejectReason::PortOwnedExclusively | RejectReason::AlreadyListening => {
            SocketError::AddressInUse(port)
        }
        other => SocketError::Refused(other),
    }
}

fn endpoint(a: SocketAddr) -> IpEndpoint {
    IpEndpoint::new(IpAddress::from(a.ip()), a.port())
}

fn socket_addr(e: IpEndpoint) -> SocketAddr {
    SocketAddr::new(IpAddr::from(e.addr), e.port)
}

impl Sockets {
    /// The sockets of processor `processor` over its instance `stack`,
    /// whose local addresses are `ipv4` / `ipv6`.
    pub fn new(
        stack: ProcessorStack,
        processor: usize,
        ipv4: Option<IpAddr>,
        ipv6: Option<IpAddr>,
        config: SocketConfig,
    ) -> Self {
        let next_ephemeral = config.ephemeral.0;
        Sockets {
            stack,
            processor,
            config,
            local_v4: ipv4,
            local_v6: ipv6,
            table: BTreeMap::new(),
            next_id: 1,
            ports: BTreeSet::new(),
            next_ephemeral,
            control_out: Vec::new(),
            sent: BTreeMap::new(),
            ops: BTreeMap::new(),
            next_op: 1,
            system_out: Vec::new(),
            holding: BTreeSet::new(),
            adopting: BTreeMap::new(),
            spare_tcp: Vec::new(),
            counters: SocketCounters::default(),
        }
    }

    /// The counters.
    pub fn counters(&self) -> &SocketCounters {
        &self.counters
    }

    /// The processor.
    pub fn processor(&self) -> usize {
        self.processor
    }

    /// Sockets open (including those finishing in the background).
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no socket is open.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Control messages waiting to be sent to every adapter, with the
    /// operation each belongs to; report each one sent with
    /// [`Sockets::control_sent`].
    pub fn take_control(&mut self) -> Vec<(u64, ControlMessage)> {
        std::mem::take(&mut self.control_out)
    }

    /// Reports this processor's capacity to every adapter (a weight for
    /// the capacity-weighted distribution policy; 0 takes the processor
    /// out of the rotation). Nobody waits for the answer.
    pub fn report_capacity(&mut self, capacity: u32) {
        self.control(OpKind::Background, ControlMessage::CapacityReport(capacity));
    }

    /// Whether control messages wait to be sent.
    pub fn has_control(&self) -> bool {
        !self.control_out.is_empty()
    }

    /// Operation `op`'s message went to adapter `adapter` as `seq`.
    pub fn control_sent(&mut self, op: u64, adapter: usize, seq: u32) {
        self.counters.control_sent += 1;
        self.sent.insert((adapter, seq), op);
    }

    /// Operation `op`'s message could not be sent to an adapter (the host
    /// model records why); it counts as that adapter's refusal.
    pub fn control_failed(&mut self, op: u64) {
        self.answer(op, Some(RejectReason::ProcessorNotLive));
    }

    /// Operation `op`'s message was not sent to an adapter because that
    /// adapter is down: it counts as that adapter's consent (a failed
    /// adapter holds no state that could disagree; it is brought back in
    /// step with the others when it returns).
    pub fn control_skipped(&mut self, op: u64) {
        self.answer(op, None);
    }

    /// Adapter `adapter` failed: the messages it was sent and has not
    /// answered will never be answered; each counts as skipped
    /// ([`Sockets::control_skipped`]). Returns how many there were.
    pub fn adapter_down(&mut self, adapter: usize) -> usize {
        let lost: Vec<(usize, u32)> = self
            .sent
            .range((adapter, 0)..=(adapter, u32::MAX))
            .map(|(&k, _)| k)
            .collect();
        for k in &lost {
            if let Some(op) = self.sent.remove(k) {
                self.answer(op, None);
            }
        }
        lost.len()
    }

    /// Whether control messages wait to be sent or to be answered.
    pub fn control_pending(&self) -> bool {
        !self.control_out.is_empty() || !self.sent.is_empty()
    }

    /// An adapter answered message `seq`; false if it was not one of the
    /// library's.
    pub fn control_outcome(&mut self, adapter: usize, seq: u32, outcome: ControlOutcome) -> bool {
        let Some(op) = self.sent.remove(&(adapter, seq)) else {
            return false;
        };
        let refused = match outcome {
            ControlOutcome::Accepted => None,
            ControlOutcome::Rejected(r) => Some(r),
            ControlOutcome::Refused(_) => Some(RejectReason::Malformed),
        };
        if refused.is_some() {
            self.counters.control_refused += 1;
        }
        self.answer(op, refused);
        true
    }

    /// System messages waiting to be carried to other processors.
    pub fn take_system(&mut self) -> Vec<SystemOut> {
        std::mem::take(&mut self.system_out)
    }

    /// A system message the message system could not take yet (every
    /// slot to its peer busy) goes out with the next ones.
    pub fn requeue_system(&mut self, out: SystemOut) {
        self.system_out.push(out);
    }

    fn control(&mut self, kind: OpKind, message: ControlMessage) {
        let op = self.next_op;
        self.next_op += 1;
        self.ops.insert(
            op,
            Op {
                kind,
                answers: 0,
                refused: None,
            },
        );
        self.control_out.push((op, message));
    }

    fn answer(&mut self, op: u64, refused: Option<RejectReason>) {
        let Some(o) = self.ops.get_mut(&op) else {
            return;
        };
        o.answers += 1;
        if o.refused.is_none() {
            o.refused = refused;
        }
        if o.answers < self.config.adapters.max(1) {
            return;
        }
        let Some(o) = self.ops.remove(&op) else {
            return;
        };
        self.resolve(o.kind, o.refused);
    }

    fn resolve(&mut self, kind: OpKind, refused: Option<RejectReason>) {
        match kind {
            OpKind::Listen(id) => match self.table.get_mut(&id) {
                Some(Kind::Listener(l)) => {
                    l.phase = match refused {
                        None => ListenPhase::Listening,
                        Some(r) => ListenPhase::Failed(reject_error(r, l.port)),
                    };
                }
                Some(Kind::Udp(u)) => {
                    u.phase = match refused {
                        None => ListenPhase::Listening,
                        Some(r) => ListenPhase::Failed(reject_error(r, u.port)),
                    };
                }
                _ => {}
            },
            OpKind::Connect(id) => {
                let (v4, v6) = (self.local_v4, self.local_v6);
                let Some(Kind::Tcp(t)) = self.table.get_mut(&id) else {
                    return;
                };
                if let Some(r) = refused {
                    t.phase = TcpPhase::Failed(reject_error(r, t.port.unwrap_or(0)));
                    return;
                }
                let (Some(remote), Some(port)) = (t.remote, t.port) else {
                    return;
                };
                let mut s = Self::take_tcp_socket(&mut self.spare_tcp, &self.config);
                let local = if remote.is_ipv4() { v4 } else { v6 };
                let local = local.map(|a| IpListenEndpoint {
                    addr: Some(IpAddress::from(a)),
                    port,
                });
                let result = match local {
                    Some(l) => s.connect(self.stack.iface.context(), endpoint(remote), l),
                    None => Err(tcp::ConnectError::Unaddressable),
                };
                match result {
                    Ok(()) => {
                        t.handle = Some(self.stack.sockets.add(s));
                        t.phase = TcpPhase::Open;
                        self.counters.connected += 1;
                    }
                    Err(_) => t.phase = TcpPhase::Failed(SocketError::Unaddressable(remote)),
                }
            }
            OpKind::Background => {}
            OpKind::Hold(tuple) => {
                if refused.is_some() {
                    // The adapters would not keep it: let it go (the
                    // client's SYN times out or is reset).
                    self.holding.remove(&tuple);
                    self.stack.steering.diverted.remove(&tuple);
                    for (_, k) in self.table.iter_mut() {
                        if let Kind::Listener(l) = k {
                            l.held.retain(|t| *t != tuple);
                        }
                    }
                }
            }
            OpKind::Move { tuple, to } => {
                let frames = match refused {
                    None => {
                        self.stack.steering.handed.insert(tuple);
                        Ok(self
                            .stack
                            .steering
                            .diverted
                            .remove(&tuple)
                            .unwrap_or_default())
                    }
                    Some(r) => {
                        // Still ours: it can be handed again.
                        self.holding.insert(tuple);
                        Err(SocketError::Refused(r))
                    }
                };
                self.system_out.push(SystemOut {
                    to,
                    message: SystemMessage::Adopted { tuple, frames },
                });
            }
        }
    }

    /// A system message could not be carried: its processor is down. An
    /// adoption asked of a failed owner fails as if the owner had refused
    /// it (the socket reports the owner's failure); an answer to a failed
    /// adopter has nobody to reach.
    pub fn system_undeliverable(&mut self, out: SystemOut) {
        self.counters.system_undeliverable += 1;
        if let SystemMessage::Adopt(tuple) = out.message {
            self.system_message(
                out.to,
                SystemMessage::Adopted {
                    tuple,
                    frames: Err(SocketError::ProcessorDown(out.to)),
                },
            );
        }
    }

    /// A system message from processor `from`'s library.
    pub fn system_message(&mut self, from: usize, message: SystemMessage) {
        match message {
            SystemMessage::Adopt(tuple) => {
                // Taken out of `holding` while it moves: a second request
                // for the same connection is refused.
                if self.holding.remove(&tuple) {
                    self.control(
                        OpKind::Move { tuple, to: from },
                        ControlMessage::MoveConnection {
                            tuple,
                            to: ProcessorId(from as u16),
                        },
                    );
                } else {
                    self.system_out.push(SystemOut {
                        to: from,
                        message: SystemMessage::Adopted {
                            tuple,
                            frames: Err(SocketError::InvalidTicket("not held here")),
                        },
                    });
                }
            }
            SystemMessage::Adopted { tuple, frames } => {
                let Some(id) = self.adopting.remove(&tuple) else {
                    return;
                };
                let mine = self
                    .stack
                    .steering
                    .diverted
                    .remove(&tuple)
                    .unwrap_or_default();
                let Some(Kind::Tcp(t)) = self.table.get_mut(&id) else {
                    return;
                };
                match frames {
                    Ok(frames) => {
                        // A listening socket for this one connection; the
                        // held SYN reaches it first, in the next poll.
                        let mut s = Self::take_tcp_socket(&mut self.spare_tcp, &self.config);
                        let local = IpListenEndpoint {
                            addr: Some(IpAddress::from(ip_of(&tuple.local_addr))),
                            port: tuple.local_port,
                        };
                        if s.listen(local).is_err() {
                            t.phase = TcpPhase::Failed(SocketError::InvalidTicket("bad port"));
                            return;
                        }
                        if t.released {
                            // Closed while being adopted: refuse the peer.
                            s.abort();
                        }
                        t.handle = Some(self.stack.sockets.add(s));
                        t.phase = TcpPhase::Open;
                        t.registered = true;
                        self.counters.adopted += 1;
                        self.stack.steering.inject.extend(frames);
                        self.stack.steering.inject.extend(mine);
                    }
                    Err(e) => t.phase = TcpPhase::Failed(e),
                }
            }
        }
    }

    /// Brings the socket table up to date after the instance ran:
    /// completed handshakes go to their listener's accept queue (and are
    /// confirmed with the adapters), held connection attempts to their
    /// hand-off listener, and finished connections release their filters.
    pub fn maintain(&mut self) {
        // New held connection attempts.
        let new_held: Vec<FiveTuple> = self
            .stack
            .steering
            .diverted
            .keys()
            .filter(|t| !self.holding.contains(t) && !self.adopting.contains_key(t))
            .copied()
            .collect();
        for tuple in new_held {
            let listener = self.table.values_mut().find_map(|k| match k {
                Kind::Listener(l)
                    if l.mode == ListenMode::HandOff
                        && l.port == tuple.local_port
                        && l.phase == ListenPhase::Listening =>
                {
                    Some(l)
                }
                _ => None,
            });
            match listener {
                Some(l) if l.held.len() < l.backlog => {
                    l.held.push_back(tuple);
                    self.holding.insert(tuple);
                    self.control(OpKind::Hold(tuple), ControlMessage::AddConnection(tuple));
                }
                // A full backlog drops the attempt (the client tries again).
                _ => {
                    self.stack.steering.diverted.remove(&tuple);
                }
            }
        }

        let mut confirm = Vec::new();
        let mut remove = Vec::new();
        let mut free = Vec::new();
        let starved = self.stack.gate.starved.take();
        let mut gate = std::mem::take(&mut self.stack.gate.ports);
        gate.clear();
        for (&id, kind) in self.table.iter_mut() {
            match kind {
                Kind::Listener(l) if l.mode == ListenMode::Serve => {
                    let mut i = 0;
                    while i < l.waiting.len() {
                        let h = l.waiting[i];
                        let s = self.stack.sockets.get::<tcp::Socket>(h);
                        let done =
                            matches!(s.state(), tcp::State::Established | tcp::State::CloseWait);
                        if done {
                            let (Some(local), Some(remote)) =
                                (s.local_endpoint(), s.remote_endpoint())
                            else {
                                i += 1;
                                continue;
                            };
                            let tuple = FiveTuple::tcp(
                                IpAddr::from(remote.addr),
                                remote.port,
                                IpAddr::from(local.addr),
                                local.port,
                            );
                            l.waiting.swap_remove(i);
                            l.ready.push_back((h, tuple));
                            confirm.push(tuple);
                        } else {
                            i += 1;
                        }
                    }
                    if l.phase != ListenPhase::Listening {
                        continue;
                    }
                    // Keep one socket listening, or a few after a connection
                    // attempt found none, within the backlog (see
                    // [`crate::stack::ListenGate`]).
                    let mut listening = l
                        .waiting
                        .iter()
                        .filter(|&&h| {
                            self.stack.sockets.get::<tcp::Socket>(h).state() == tcp::State::Listen
                        })
                        .count();
                    let want = if starved == Some(l.port) {
                        LISTEN_AHEAD_AFTER_BURST
                    } else {
                        1
                    };
                    let mut opened = true;
                    while listening < want && l.waiting.len() + l.ready.len() < l.backlog {
                        let mut s = Self::take_tcp_socket(&mut self.spare_tcp, &self.config);
                        if s.listen(l.port).is_err() {
                            opened = false;
                            break;
                        }
                        l.waiting.push(self.stack.sockets.add(s));
                        listening += 1;
                    }
                    gate.push(GatePort {
                        port: l.port,
                        listening: listening as u32,
                        pass: !opened || l.waiting.len() + l.ready.len() >= l.backlog,
                    });
                }
                Kind::Tcp(t) => {
                    let Some(h) = t.handle else {
                        if t.released && !matches!(t.phase, TcpPhase::Adopting) {
                            free.push(id);
                        }
                        continue;
                    };
                    let s = self.stack.sockets.get::<tcp::Socket>(h);
                    let state = s.state();
                    if t.tuple.is_none()
                        && let (Some(local), Some(remote)) =
                            (s.local_endpoint(), s.remote_endpoint())
                    {
                        t.tuple = Some(FiveTuple::tcp(
                            IpAddr::from(remote.addr),
                            remote.port,
                            IpAddr::from(local.addr),
                            local.port,
                        ));
                        t.remote = Some(socket_addr(remote));
                    }
                    if state == tcp::State::Closed {
                        if !t.eof && !t.reset {
                            t.reset = true;
                        }
                        if t.released {
                            if t.reset {
                                self.counters.reset += 1;
                            } else {
                                self.counters.closed += 1;
                            }
                            if t.registered
                                && let Some(tuple) = t.tuple
                            {
                                remove.push(tuple);
                            }
                            let closed = self.stack.sockets.remove(h);
                            if let smoltcp::socket::Socket::Tcp(s) = closed
                                && self.spare_tcp.len() < SPARE_TCP_SOCKETS
                            {
                                self.spare_tcp.push(s);
                            }
                            t.handle = None;
                            free.push(id);
                        }
                    }
                }
                _ => {}
            }
        }
        self.stack.gate.ports = gate;
        for tuple in confirm {
            self.control(OpKind::Background, ControlMessage::AddConnection(tuple));
        }
        for tuple in remove {
            self.control(OpKind::Background, ControlMessage::RemoveConnection(tuple));
        }
        for id in free {
            if let Some(Kind::Tcp(t)) = self.table.remove(&id)
                && let Some(p) = t.port
            {
                self.ports.remove(&(PROTO_TCP, p));
            }
        }
    }

    /// A closed TCP socket with the configured buffers and options: a spare
    /// one if there is one, otherwise a new one.
    fn take_tcp_socket(
        spare: &mut Vec<tcp::Socket<'static>>,
        config: &SocketConfig,
    ) -> tcp::Socket<'static> {
        match spare.pop() {
            Some(mut s) => {
                debug_assert_eq!(s.state(), tcp::State::Closed);
                // A fresh congestion controller, and the configured options.
                s.set_congestion_control(s.congestion_control());
                s.set_nagle_enabled(!config.nodelay);
                s
            }
            None => new_tcp_socket(config),
        }
    }

    fn id(&mut self) -> SocketId {
        let id = SocketId(self.next_id);
        self.next_id += 1;
        id
    }

    fn ephemeral(&mut self, protocol: u8) -> Result<u16, SocketError> {
        let (first, last) = self.config.ephemeral;
        let span = u32::from(last - first) + 1;
        for _ in 0..span {
            let p = self.next_ephemeral;
            self.next_ephemeral = if p >= last { first } else { p + 1 };
            if !self.ports.contains(&(protocol, p)) {
                return Ok(p);
            }
        }
        Err(SocketError::NoEphemeralPort { first, last })
    }

    fn listener_key(protocol: u8, port: u16) -> ListenerKey {
        ListenerKey {
            protocol,
            addr: None,
            port,
        }
    }
}

impl Sockets {
    /// The socket calls, at virtual time `now`.
    pub fn api(&mut self, now: Instant) -> LocalApi<'_> {
        LocalApi { sockets: self, now }
    }
}

/// [`SocketApi`] on the parallel library: calls go straight to the
/// processor's own TCP/IP instance.
#[derive(Debug)]
pub struct LocalApi<'a> {
    sockets: &'a mut Sockets,
    now: Instant,
}

impl SocketApi for LocalApi<'_> {
    fn processor(&self) -> usize {
        self.sockets.processor
    }

    fn now(&self) -> Instant {
        self.now
    }

    fn tcp_socket(&mut self) -> Result<SocketId, SocketError> {
        let me = &mut *self.sockets;
        me.counters.calls += 1;
        let id = me.id();
        me.table.insert(id, Kind::Tcp(Tcp::new(TcpPhase::Fresh)));
        Ok(id)
    }

    fn bind(&mut self, s: SocketId, port: u16) -> Result<(), SocketError> {
        let me = &mut *self.sockets;
        me.counters.calls += 1;
        if me.ports.contains(&(PROTO_TCP, port)) {
            return Err(SocketError::AddressInUse(port));
        }
        let t = tcp_in(&mut me.table, s)?;
        if t.port.is_some() || t.phase != TcpPhase::Fresh {
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
        t.port = Some(port);
        me.ports.insert((PROTO_TCP, port));
        Ok(())
    }

    fn listen(&mut self, s: SocketId, backlog: usize, mode: ListenMode) -> Result<(), SocketError> {
        let me = &mut *self.sockets;
        me.counters.calls += 1;
        let max = me.config.max_backlog;
        let t = tcp_in(&mut me.table, s)?;
        let Some(port) = t.port else {
            return Err(SocketError::InvalidState {
                socket: s,
                what: "listen needs a bound socket",
            });
        };
        if t.phase != TcpPhase::Fresh {
            return Err(SocketError::InvalidState {
                socket: s,
                what: "already connected",
            });
        }
        me.table.insert(
            s,
            Kind::Listener(Listener {
                port,
                mode,
                backlog: backlog.clamp(1, max.max(1)),
                waiting: Vec::new(),
                ready: VecDeque::new(),
                held: VecDeque::new(),
                phase: ListenPhase::Registering,
            }),
        );
        if mode == ListenMode::HandOff {
            me.stack.steering.handoff_ports.insert(port);
        }
        me.control(
            OpKind::Listen(s),
            ControlMessage::RegisterListener(Sockets::listener_key(PROTO_TCP, port)),
        );
        Ok(())
    }

    fn accept(&mut self, listener: SocketId) -> Result<SocketId, SocketError> {
        let me = &mut *self.sockets;
        me.counters.calls += 1;
        let (h, tuple) = match me.table.get_mut(&listener) {
            Some(Kind::Listener(l)) => match &l.phase {
                ListenPhase::Failed(e) => return Err(e.clone()),
                ListenPhase::Registering => return Err(SocketError::WouldBlock),
                ListenPhase::Listening if l.mode == ListenMode::HandOff => {
                    return Err(SocketError::InvalidState {
                        socket: listener,
                        what: "a hand-off listener gives connections with accept_nw1",
                    });
                }
                ListenPhase::Listening => l.ready.pop_front().ok_or(SocketError::WouldBlock)?,
            },
            Some(_) => {
                return Err(SocketError::InvalidState {
                    socket: listener,
                    what: "not a listener",
                });
            }
            None => return Err(SocketError::InvalidSocket(listener)),
        };
        let id = me.id();
        me.table.insert(
            id,
            Kind::Tcp(Tcp {
                port: None,
                handle: Some(h),
                phase: TcpPhase::Open,
                tuple: Some(tuple),
                registered: true,
                remote: Some(SocketAddr::new(
                    ip_of(&tuple.remote_addr),
                    tuple.remote_port,
                )),
                eof: false,
                reset: false,
                released: false,
            }),
        );
        me.counters.accepted += 1;
        Ok(id)
    }

    fn accept_nw1(&mut self, listener: SocketId) -> Result<Ticket, SocketError> {
        let me = &mut *self.sockets;
        me.counters.calls += 1;
        let processor = me.processor;
        let confirming: BTreeSet<FiveTuple> = me
            .ops
            .values()
            .filter_map(|o| match o.kind {
                OpKind::Hold(t) => Some(t),
                _ => None,
            })
            .collect();
        match me.table.get_mut(&listener) {
            Some(Kind::Listener(l)) => match &l.phase {
                ListenPhase::Failed(e) => Err(e.clone()),
                ListenPhase::Registering => Err(SocketError::WouldBlock),
                ListenPhase::Listening if l.mode != ListenMode::HandOff => {
                    Err(SocketError::InvalidState {
                        socket: listener,
                        what: "accept_nw1 needs a listener in hand-off mode",
                    })
                }
                ListenPhase::Listening => {
                    // Only connections whose filter the adapters confirmed.
                    let pos = l
                        .held
                        .iter()
                        .position(|t| !confirming.contains(t))
                        .ok_or(SocketError::WouldBlock)?;
                    let tuple = l.held.remove(pos).ok_or(SocketError::WouldBlock)?;
                    me.counters.handed_off += 1;
                    Ok(Ticket {
                        tuple,
                        owner: processor,
                    })
                }
            },
            Some(_) => Err(SocketError::InvalidState {
                socket: listener,
                what: "not a listener",
            }),
            None => Err(SocketError::InvalidSocket(listener)),
        }
    }

    fn accept_nw2(&mut self, ticket: &Ticket) -> Result<SocketId, SocketError> {
        let me = &mut *self.sockets;
        me.counters.calls += 1;
        if me.adopting.contains_key(&ticket.tuple) {
            return Err(SocketError::InvalidTicket("already being adopted"));
        }
        let id = me.id();
        me.table.insert(
            id,
            Kind::Tcp(Tcp {
                tuple: Some(ticket.tuple),
                remote: Some(SocketAddr::new(
                    ip_of(&ticket.tuple.remote_addr),
                    ticket.tuple.remote_port,
                )),
                ..Tcp::new(TcpPhase::Adopting)
            }),
        );
        if ticket.owner == me.processor {
            // Adopted in the processor that holds it: no move.
            if !me.holding.remove(&ticket.tuple) {
                me.table.remove(&id);
                return Err(SocketError::InvalidTicket("not held here"));
            }
            me.adopting.insert(ticket.tuple, id);
            let frames = me
                .stack
                .steering
                .diverted
                .remove(&ticket.tuple)
                .unwrap_or_default();
            me.system_message(
                me.processor,
                SystemMessage::Adopted {
                    tuple: ticket.tuple,
                    frames: Ok(frames),
                },
            );
            return Ok(id);
        }
        // Frames of the connection that reach this processor before the
        // owner's answer are held with the others.
        me.stack.steering.diverted.entry(ticket.tuple).or_default();
        me.adopting.insert(ticket.tuple, id);
        me.system_out.push(SystemOut {
            to: ticket.owner,
            message: SystemMessage::Adopt(ticket.tuple),
        });
        Ok(id)
    }

    fn connect(&mut self, s: SocketId, remote: SocketAddr) -> Result<(), SocketError> {
        let me = &mut *self.sockets;
        me.counters.calls += 1;
        let local = if remote.is_ipv4() {
            me.local_v4
        } else {
            me.local_v6
        }
        .ok_or(SocketError::Unaddressable(remote))?;
        if remote.port() == 0 || remote.ip().is_unspecified() || remote.ip().is_multicast() {
            return Err(SocketError::Unaddressable(remote));
        }
        let bound = tcp_in(&mut me.table, s)?.port;
        let t = tcp_in(&mut me.table, s)?;
        if t.phase != TcpPhase::Fresh {
            return Err(SocketError::InvalidState {
                socket: s,
                what: "already connecting or connected",
            });
        }
        let port = match bound {
            Some(p) => p,
            None => {
                let p = me.ephemeral(PROTO_TCP)?;
                me.ports.insert((PROTO_TCP, p));
                p
            }
        };
        let tuple = FiveTuple::tcp(remote.ip(), remote.port(), local, port);
        let t = tcp_in(&mut me.table, s)?;
        t.port = Some(port);
        t.phase = TcpPhase::Registering;
        t.tuple = Some(tuple);
        t.remote = Some(remote);
        t.registered = true;
        me.control(OpKind::Connect(s), ControlMessage::AddConnection(tuple));
        Ok(())
    }

    fn send(&mut self, s: SocketId, data: &[u8]) -> Result<usize, SocketError> {
        let me = &mut *self.sockets;
        me.counters.calls += 1;
        let t = tcp_in(&mut me.table, s)?;
        let h = match (&t.phase, t.handle) {
            (TcpPhase::Failed(e), _) => return Err(e.clone()),
            (TcpPhase::Open, Some(h)) => h,
            (_, _) => return Err(SocketError::WouldBlock),
        };
        let reset = t.reset;
        let sock = me.stack.sockets.get_mut::<tcp::Socket>(h);
        if reset || (sock.state() == tcp::State::Closed) {
            return Err(SocketError::ConnectionReset);
        }
        if !sock.may_send() {
            return match sock.state() {
                tcp::State::SynSent | tcp::State::SynReceived | tcp::State::Listen => {
                    Err(SocketError::WouldBlock)
                }
                _ => Err(SocketError::InvalidState {
                    socket: s,
                    what: "the sending half is closed",
                }),
            };
        }
        let n = sock
            .send_slice(data)
            .map_err(|_| SocketError::NotConnected)?;
        if n == 0 && !data.is_empty() {
            return Err(SocketError::WouldBlock);
        }
        me.counters.bytes_sent += n as u64;
        Ok(n)
    }

    fn recv(&mut self, s: SocketId, buf: &mut [u8]) -> Result<usize, SocketError> {
        let me = &mut *self.sockets;
        me.counters.calls += 1;
        let t = tcp_in(&mut me.table, s)?;
        let h = match (&t.phase, t.handle) {
            (TcpPhase::Failed(e), _) => return Err(e.clone()),
            (TcpPhase::Open, Some(h)) => h,
            (_, _) => return Err(SocketError::WouldBlock),
        };
        let sock = me.stack.sockets.get_mut::<tcp::Socket>(h);
        match sock.recv_slice(buf) {
            Ok(0) if !buf.is_empty() => {
                if sock.state() == tcp::State::Closed {
                    if t.eof {
                        Ok(0)
                    } else {
                        t.reset = true;
                        Err(SocketError::ConnectionReset)
                    }
                } else {
                    Err(SocketError::WouldBlock)
                }
            }
            Ok(n) => {
                me.counters.bytes_received += n as u64;
                Ok(n)
            }
            Err(tcp::RecvError::Finished) => {
                t.eof = true;
                Ok(0)
            }
            Err(tcp::RecvError::InvalidState) => {
                if t.eof {
                    Ok(0)
                } else if sock.state() == tcp::State::Closed {
                    t.reset = true;
                    Err(SocketError::ConnectionReset)
                } else {
                    Err(SocketError::WouldBlock)
                }
            }
        }
    }

    fn shutdown(&mut self, s: SocketId) -> Result<(), SocketError> {
        let me = &mut *self.sockets;
        me.counters.calls += 1;
        let t = tcp_in(&mut me.table, s)?;
        match t.handle {
            Some(h) => {
                me.stack.sockets.get_mut::<tcp::Socket>(h).close();
                Ok(())
            }
            None => Err(SocketError::NotConnected),
        }
    }

    fn close(&mut self, s: SocketId) -> Result<(), SocketError> {
        let me = &mut *self.sockets;
        me.counters.calls += 1;
        match me.table.get_mut(&s) {
            None => Err(SocketError::InvalidSocket(s)),
            Some(Kind::Tcp(t)) if t.released => Err(SocketError::InvalidSocket(s)),
            Some(Kind::Tcp(t)) => {
                t.released = true;
                if let Some(h) = t.handle {
                    me.stack.sockets.get_mut::<tcp::Socket>(h).close();
                } else if t.registered
                    && let Some(tuple) = t.tuple
                    && !matches!(t.phase, TcpPhase::Adopting)
                {
                    // Registered but never connected (a refused connect).
                    me.control(OpKind::Background, ControlMessage::RemoveConnection(tuple));
                }
                Ok(())
            }
            Some(Kind::Listener(_)) => {
                let Some(Kind::Listener(l)) = me.table.remove(&s) else {
                    return Ok(());
                };
                // Connections never accepted are reset. They are not freed at
                // once (the abort's RST goes out first); those in the accept
                // queue had their filter confirmed, which goes with them.
                let waiting = l.waiting.into_iter().map(|h| (h, None));
                let ready = l.ready.into_iter().map(|(h, t)| (h, Some(t)));
                for (h, tuple) in waiting.chain(ready) {
                    me.stack.sockets.get_mut::<tcp::Socket>(h).abort();
                    let id = me.id();
                    me.table.insert(
                        id,
                        Kind::Tcp(Tcp {
                            handle: Some(h),
                            tuple,
                            registered: tuple.is_some(),
                            reset: true,
                            released: true,
                            ..Tcp::new(TcpPhase::Open)
                        }),
                    );
                }
                if l.mode == ListenMode::HandOff {
                    me.stack.steering.handoff_ports.remove(&l.port);
                }
                me.ports.remove(&(PROTO_TCP, l.port));
                if l.phase == ListenPhase::Listening {
                    me.control(
                        OpKind::Background,
                        ControlMessage::UnregisterListener(Sockets::listener_key(
                            PROTO_TCP, l.port,
                        )),
                    );
                }
                Ok(())
            }
            Some(Kind::Udp(_)) => {
                let Some(Kind::Udp(u)) = me.table.remove(&s) else {
                    return Ok(());
                };
                me.stack.sockets.remove(u.handle);
                me.ports.remove(&(PROTO_UDP, u.port));
                if u.phase == ListenPhase::Listening {
                    me.control(
                        OpKind::Background,
                        ControlMessage::UnregisterListener(Sockets::listener_key(
                            PROTO_UDP, u.port,
                        )),
                    );
                }
                Ok(())
            }
        }
    }

    fn udp_bind(&mut self, port: u16) -> Result<SocketId, SocketError> {
        let me = &mut *self.sockets;
        me.counters.calls += 1;
        let port = if port == 0 {
            me.ephemeral(PROTO_UDP)?
        } else {
            port
        };
        if me.ports.contains(&(PROTO_UDP, port)) {
            return Err(SocketError::AddressInUse(port));
        }
        let meta = || vec![udp::PacketMetadata::EMPTY; me.config.udp_packets.max(1)];
        let mut sock = udp::Socket::new(
            udp::PacketBuffer::new(meta(), vec![0; me.config.udp_buffer]),
            udp::PacketBuffer::new(meta(), vec![0; me.config.udp_buffer]),
        );
        sock.bind(port)
            .map_err(|_| SocketError::AddressInUse(port))?;
        let handle = me.stack.sockets.add(sock);
        me.ports.insert((PROTO_UDP, port));
        let id = me.id();
        me.table.insert(
            id,
            Kind::Udp(Udp {
                port,
                handle,
                phase: ListenPhase::Registering,
            }),
        );
        me.control(
            OpKind::Listen(id),
            ControlMessage::RegisterListener(Sockets::listener_key(PROTO_UDP, port)),
        );
        Ok(id)
    }

    fn send_to(&mut self, s: SocketId, data: &[u8], to: SocketAddr) -> Result<usize, SocketError> {
        let me = &mut *self.sockets;
        me.counters.calls += 1;
        let h = udp_handle(me, s)?;
        let sock = me.stack.sockets.get_mut::<udp::Socket>(h);
        match sock.send_slice(data, endpoint(to)) {
            Ok(()) => {
                me.counters.bytes_sent += data.len() as u64;
                Ok(data.len())
            }
            Err(udp::SendError::BufferFull) => Err(SocketError::WouldBlock),
            Err(udp::SendError::Unaddressable) => Err(SocketError::Unaddressable(to)),
        }
    }

    fn recv_from(
        &mut self,
        s: SocketId,
        buf: &mut [u8],
    ) -> Result<(usize, SocketAddr), SocketError> {
        let me = &mut *self.sockets;
        me.counters.calls += 1;
        let h = udp_handle(me, s)?;
        let sock = me.stack.sockets.get_mut::<udp::Socket>(h);
        match sock.recv_slice(buf) {
            Ok((n, meta)) => {
                me.counters.bytes_received += n as u64;
                Ok((n, socket_addr(meta.endpoint)))
            }
            Err(udp::RecvError::Exhausted) => Err(SocketError::WouldBlock),
            Err(udp::RecvError::Truncated) => Err(SocketError::InvalidState {
                socket: s,
                what: "the datagram is larger than the buffer",
            }),
        }
    }

    fn state(&self, s: SocketId) -> Result<SocketState, SocketError> {
        let me = &*self.sockets;
        match me.table.get(&s) {
            None => Err(SocketError::InvalidSocket(s)),
            Some(Kind::Listener(l)) => Ok(listen_state(&l.phase)),
            Some(Kind::Udp(u)) => Ok(listen_state(&u.phase)),
            Some(Kind::Tcp(t)) => Ok(match (&t.phase, t.handle) {
                (TcpPhase::Failed(_), _) => SocketState::Failed,
                (TcpPhase::Fresh, _) => SocketState::Unbound,
                (TcpPhase::Registering | TcpPhase::Adopting, _) => SocketState::Registering,
                (TcpPhase::Open, None) => SocketState::Closed,
                (TcpPhase::Open, Some(h)) => {
                    let sock = me.stack.sockets.get::<tcp::Socket>(h);
                    match sock.state() {
                        tcp::State::Listen | tcp::State::SynSent | tcp::State::SynReceived => {
                            SocketState::Connecting
                        }
                        tcp::State::Established => SocketState::Established,
                        tcp::State::CloseWait => SocketState::PeerClosed,
                        tcp::State::Closed if t.reset || !t.eof => SocketState::Reset,
                        tcp::State::Closed | tcp::State::TimeWait => SocketState::Closed,
                        _ => SocketState::Closing,
                    }
                }
            }),
        }
    }

    fn peer(&self, s: SocketId) -> Result<Option<SocketAddr>, SocketError> {
        match self.sockets.table.get(&s) {
            None => Err(SocketError::InvalidSocket(s)),
            Some(Kind::Tcp(t)) => Ok(t.remote),
            Some(_) => Ok(None),
        }
    }
}

fn tcp_in(table: &mut BTreeMap<SocketId, Kind>, s: SocketId) -> Result<&mut Tcp, SocketError> {
    match table.get_mut(&s) {
        Some(Kind::Tcp(t)) if !t.released => Ok(t),
        Some(Kind::Tcp(_)) | None => Err(SocketError::InvalidSocket(s)),
        Some(_) => Err(SocketError::InvalidState {
            socket: s,
            what: "not a TCP connection socket",
        }),
    }
}

fn listen_state(p: &ListenPhase) -> SocketState {
    match p {
        ListenPhase::Registering => SocketState::Registering,
        ListenPhase::Listening => SocketState::Listening,
        ListenPhase::Failed(_) => SocketState::Failed,
    }
}

fn udp_handle(me: &Sockets, s: SocketId) -> Result<SocketHandle, SocketError> {
    match me.table.get(&s) {
        Some(Kind::Udp(u)) => match &u.phase {
            ListenPhase::Failed(e) => Err(e.clone()),
            _ => Ok(u.handle),
        },
        Some(_) => Err(SocketError::InvalidState {
            socket: s,
            what: "not a UDP socket",
        }),
        None => Err(SocketError::InvalidSocket(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ephemeral_ranges_are_disjoint_and_cover_the_range() {
        for n in [1usize, 2, 3, 4, 16, 384] {
            let mut next = u32::from(EPHEMERAL.0);
            for p in 0..n {
                let (lo, hi) = ephemeral_range(p, n);
                assert_eq!(u32::from(lo), next, "{p} of {n}");
                assert!(hi >= lo);
                next = u32::from(hi) + 1;
            }
            assert_eq!(next, u32::from(EPHEMERAL.1) + 1);
        }
    }

    #[test]
    fn tickets_and_system_messages_round_trip_and_reject_garbage() {
        let t = FiveTuple::tcp(
            "198.18.1.1".parse().unwrap(),
            40000,
            "198.18.0.10".parse().unwrap(),
            80,
        );
        let ticket = Ticket { tuple: t, owner: 3 };
        assert_eq!(Ticket::from_bytes(&ticket.to_bytes()), Ok(ticket));
        assert!(Ticket::from_bytes(&[0; TICKET_LEN]).is_err());
        assert!(Ticket::from_bytes(&ticket.to_bytes()[1..]).is_err());
        for m in [
            SystemMessage::Adopt(t),
            SystemMessage::Adopted {
                tuple: t,
                frames: Ok(vec![vec![1, 2, 3], vec![], vec![9; 100]]),
            },
        ] {
            let b = m.to_bytes();
            assert_eq!(SystemMessage::from_bytes(&b), Some(m));
            for cut in 0..b.len() {
                assert_eq!(SystemMessage::from_bytes(&b[..cut]), None, "cut {cut}");
            }
        }
    }
}
