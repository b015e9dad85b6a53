//! The inter-processor message system: request/reply messages between
//! processes on different processors (the NonStop message system that
//! Pathsend and the file system ride on), carried by DMA writes through AVT
//! windows. Processors share no memory: a message is written by its sender
//! into a ring in the receiver's memory, and an interrupt tells the receiver.
//!
//! One [`Ipc`] holds the message state of every processor (the host model is
//! single-threaded). Each processor hands it an *arena* of its memory
//! ([`crate::Processor::reserve`]); the rings and staging buffers are carved
//! from it.
//!
//! # Connections and rings
//! A connection is directed: a *client* sends requests, a *server* answers
//! them. It is opened lazily by the first [`Ipc::send_request`] between the
//! two (or explicitly with [`Ipc::open`]); the reverse direction is another
//! connection. A connection (client `a`, server `b`) owns, with
//! `S = slots` and `Z = slot_size` from [`IpcConfig`]:
//!
//! | where | what | window |
//! |---|---|---|
//! | `b`'s arena | request ring, inline part: `S × I` bytes | granted to `a`, WRITE + INTERRUPT |
//! | `b`'s arena | request ring, bulk part: `S × (Z − I)` bytes | granted to `a`, WRITE |
//! | `b`'s arena | reply staging: `S × Z` bytes | none (`b`'s own) |
//! | `a`'s arena | reply ring, inline part: `S × I` bytes | granted to `b`, WRITE + INTERRUPT |
//! | `a`'s arena | reply ring, bulk part: `S × (Z − I)` bytes | granted to `b`, WRITE |
//! | `a`'s arena | request staging: `S × Z` bytes | none (`a`'s own) |
//!
//! `I` (the *inline* size) is the fabric's largest packet payload (512 bytes
//! on ServerNet II), rounded down to 8, capped at `Z`. Each region is
//! page-aligned; with the defaults (8 slots of 16 KiB) and ServerNet II
//! packets a connection takes 256 KiB of each of the two arenas. A sender
//! writes a message into its staging slot first (DMA reads the sender's own
//! memory) and the fabric copies it from there.
//!
//! # One message, one interrupt
//! The fabric raises one interrupt entry *per packet* that lands in an
//! interrupt window, and packets of one transfer may land out of order (a
//! timed-out packet is retried on the other plane) or twice (a lost ack). A
//! multi-packet write into an interrupt window therefore cannot tell its
//! receiver when the whole message is there. So a message of `32 + len`
//! bytes is sent as:
//! - **one write** of header + payload into the inline slot when it fits one
//!   packet (`32 + len ≤ I`): data and interrupt land together;
//! - otherwise **two writes**: the payload beyond the first `I − 32` bytes
//!   into the bulk slot (no interrupt), and, once that transfer completed
//!   (every packet acknowledged, so every byte landed), the header with the
//!   first `I − 32` payload bytes into the inline slot, as one packet.
//!
//! Either way the receiver sees exactly one interrupt per message, at a slot
//! start, after every byte landed. (This deviates from "one DMA write per
//! message" for messages longer than one packet: they pay one more
//! request/ack round trip on the fabric.)
//!
//! # Slots and flow control
//! Slot `k` of the reply ring answers request slot `k`. A client has at most
//! `slots` requests outstanding per server ([`IpcError::WouldBlock`]
//! beyond); a slot is free again once its reply arrived *and* the request's
//! last write was acknowledged (so the old request's transfers are over).
//! There is no separate credit protocol. The server
//! copies a request out of its slot when the interrupt arrives (into the
//! [`Message`]), so the slot may be rewritten as soon as the reply is sent.
//! A reply is sent from the server's staging slot `k`; should the previous
//! reply from that slot still be in flight, the new one waits for it.
//!
//! # Header (32 bytes, little-endian, [`MessageHeader`])
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 2 | magic [`MAGIC`] |
//! | 2 | 1 | kind: 1 request, 2 reply |
//! | 3 | 1 | flags (must be 0) |
//! | 4 | 2 | slot (must be the slot written) |
//! | 6 | 2 | reserved (must be 0) |
//! | 8 | 4 | payload length (≤ `slot_size − 32`) |
//! | 12 | 4 | sequence number (per connection, from 1) |
//! | 16 | 8 | tag (the client's; a reply carries its request's) |
//! | 24 | 8 | reserved (must be 0) |
//!
//! # Untrusted slots
//! A receiver treats ring memory and interrupt entries as untrusted. An
//! entry is accepted only if its requester is the ring's peer, its offset is
//! a slot start, its length is exactly the inline write the header
//! announces, and the header's magic, kind, slot, flags, reserved fields and
//! length are right; anything else is counted in
//! [`IpcCounters::malformed`] and dropped. A well-formed message that does
//! not fit the state — a request whose sequence number is not newer than the
//! last one in its slot (a duplicate), a reply for a slot with no
//! outstanding request of that sequence number and tag — is counted in
//! [`IpcCounters::stale`] and dropped. Nothing here panics on what a peer
//! wrote.
//!
//! # Failures
//! - A request whose transfer fails completes at once with a reply carrying
//!   [`IpcError::PeerDown`] (the target endpoint is down) or
//!   [`IpcError::Undeliverable`]; its slot is freed. A reply whose transfer
//!   fails is counted in [`IpcCounters::failed`] (the client is not told:
//!   it learns of a dead server from [`Ipc::processor_failed`]).
//! - [`Ipc::processor_failed`] is the message system's processor-down
//!   notice: the processor's state vanishes, every request outstanding to it
//!   completes at once with a [`IpcError::PeerDown`] reply, the requests it
//!   had made are forgotten (also those queued, not yet taken, at servers),
//!   every window of its connections is closed (so its stale keys stop
//!   working), and sends to or from it fail.
//! - [`Ipc::processor_restored`] lets connections to the processor open
//!   again, with fresh windows and sequence numbers. Memory is reused: the
//!   restored processor's arena starts empty again, and a survivor reuses
//!   the regions it had for that peer, so fail/restore cycles do not leak.
//!
//! # What is simplified
//! No timeouts (a client whose server never answers waits until the
//! server's processor is declared failed), no message priorities, no
//! cancel, no process names (endpoints are processor indices), and no CPU
//! cost (the host model charges it). One fabric-level hazard is not
//! defended against: the fabric retries a timed-out packet without
//! recalling the original, so an original stuck in a congested queue can
//! land after its transfer completed. Its duplicate interrupt is harmless
//! (dropped as stale), and a late *data* packet usually is too: the next
//! message to that slot starts on the fabric's first plane, behind the late
//! packet on the same path, and overwrites it. Only a packet that had
//! already failed over to the other plane and got stuck there could land
//! after the next message's data; a per-message checksum would catch that.
//!
//! # Driving it
//! The host model routes to [`Ipc`] what the cluster hands it:
//! `interrupt` → `Processor::on_interrupt_with(cluster, |c, e| ipc.on_interrupt(c, p, e))`,
//! `dma_done` → [`Ipc::on_dma_done`] first (it returns false for transfers
//! that are not its own); then it takes the processor's messages with
//! [`Ipc::take`]. After [`Ipc::processor_failed`] (and after an
//! `on_dma_done` that returned true) messages may have been queued without
//! an interrupt: check [`Ipc::has_messages`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use snet_fabric::avt::{Access, InterruptEntry};
use snet_fabric::engine::{Lift, Traced};
use snet_fabric::memory::ProcAddr;
use snet_fabric::network::{DmaCompletion, DmaError, DmaRequest, FabricError, TransferId};
use snet_fabric::time::Instant;
use snet_fabric::{EndpointId, FabricAddr, WindowKey};
use snet_nic_model::Cluster;
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::queue::PAGE;

/// Bytes of a message header.
pub const HEADER_LEN: usize = 32;
/// The header's magic number (the bytes `I`, `P` in memory).
pub const MAGIC: u16 = 0x5049;
/// Largest slot size.
pub const MAX_SLOT_SIZE: u32 = 1 << 20;

/// A message header as it lies in a slot (see the module docs).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
pub struct MessageHeader {
    /// [`MAGIC`].
    pub magic: U16,
    /// [`WireKind`] code.
    pub kind: u8,
    /// Must be zero.
    pub flags: u8,
    /// The slot the message was written to.
    pub slot: U16,
    /// Must be zero.
    pub reserved0: U16,
    /// Payload bytes after the header.
    pub len: U32,
    /// Sequence number within the connection.
    pub seq: U32,
    /// The client's tag.
    pub tag: U64,
    /// Must be zero.
    pub reserved1: U64,
}

const _: () = assert!(size_of::<MessageHeader>() == HEADER_LEN);

/// What a header announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WireKind {
    /// A request (code 1).
    Request = 1,
    /// A reply (code 2).
    Reply = 2,
}

/// Why header bytes are not a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Fewer than [`HEADER_LEN`] bytes.
    #[error("a header needs {HEADER_LEN} bytes, got {0}")]
    Truncated(usize),
    /// Not [`MAGIC`].
    #[error("magic {0:#06x} is not {MAGIC:#06x}")]
    BadMagic(u16),
    /// Neither request nor reply.
    #[error("kind {0} is neither 1 (request) nor 2 (reply)")]
    BadKind(u8),
    /// Flags or a reserved field not zero.
    #[error("flags and reserved fields must be zero")]
    Reserved,
}

/// The fields of a header, parsed and checked for format (not yet against
/// the ring it was found in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderRepr {
    /// Request or reply.
    pub kind: WireKind,
    /// Slot.
    pub slot: u16,
    /// Payload length.
    pub len: u32,
    /// Sequence number.
    pub seq: u32,
    /// Tag.
    pub tag: u64,
}

impl HeaderRepr {
    /// Parses the first [`HEADER_LEN`] bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<HeaderRepr, HeaderError> {
        let h = bytes
            .get(..HEADER_LEN)
            .and_then(|b| MessageHeader::read_from_bytes(b).ok())
            .ok_or(HeaderError::Truncated(bytes.len()))?;
        if h.magic.get() != MAGIC {
            return Err(HeaderError::BadMagic(h.magic.get()));
        }
        let kind = match h.kind {
            1 => WireKind::Request,
            2 => WireKind::Reply,
            k => return Err(HeaderError::BadKind(k)),
        };
        if h.flags != 0 || h.reserved0.get() != 0 || h.reserved1.get() != 0 {
            return Err(HeaderError::Reserved);
        }
        Ok(HeaderRepr {
            kind,
            slot: h.slot.get(),
            len: h.len.get(),
            seq: h.seq.get(),
            tag: h.tag.get(),
        })
    }

    /// The header as it lies in memory.
    pub fn emit(&self) -> MessageHeader {
        MessageHeader {
            magic: MAGIC.into(),
            kind: self.kind as u8,
            flags: 0,
            slot: self.slot.into(),
            reserved0: 0.into(),
            len: self.len.into(),
            seq: self.seq.into(),
            tag: self.tag.into(),
            reserved1: 0.into(),
        }
    }
}

/// How the message system is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpcConfig {
    /// Slots per ring: the most requests a client can have outstanding to
    /// one server (1..=65535).
    pub slots: u16,
    /// Bytes per slot, header included (33..=[`MAX_SLOT_SIZE`]); a payload
    /// holds at most `slot_size − 32` bytes.
    pub slot_size: u32,
}

impl Default for IpcConfig {
    fn default() -> Self {
        IpcConfig {
            slots: 8,
            slot_size: 16 << 10,
        }
    }
}

impl IpcConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), IpcError> {
        if self.slots == 0 {
            return Err(IpcError::Config("slots must be at least 1".into()));
        }
        let min = HEADER_LEN as u32 + 1;
        if !(min..=MAX_SLOT_SIZE).contains(&self.slot_size) {
            return Err(IpcError::Config(format!(
                "slot_size {} must be in {min}..={MAX_SLOT_SIZE}",
                self.slot_size
            )));
        }
        let ring = self.slots as u64 * self.slot_size as u64;
        if ring > u32::MAX as u64 {
            return Err(IpcError::Config(format!(
                "a ring of {} slots × {} bytes ({ring} bytes) must fit a 4 GiB window",
                self.slots, self.slot_size
            )));
        }
        Ok(())
    }

    /// The largest payload of a message.
    pub fn max_payload(&self) -> usize {
        self.slot_size as usize - HEADER_LEN
    }
}

/// Why a message operation failed (also the result a failed request's
/// reply carries).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IpcError {
    /// A configuration value out of range.
    #[error("IPC configuration: {0}")]
    Config(String),
    /// The processor's arena has no room for a connection's regions.
    #[error(
        "IPC arena of processor {processor} is full: a connection needs {need} bytes, \
         {free} of its {arena} bytes are free"
    )]
    ArenaFull {
        /// The processor (index).
        processor: usize,
        /// Bytes one connection needs on that side.
        need: u64,
        /// Bytes left.
        free: u64,
        /// The arena's size.
        arena: u64,
    },
    /// Every slot to that peer holds an outstanding request.
    #[error("all {slots} request slots to processor {peer} are busy")]
    WouldBlock {
        /// The server.
        peer: usize,
        /// Slots per ring.
        slots: u16,
    },
    /// The payload does not fit a slot.
    #[error("a payload of {len} bytes exceeds the slot's {max}")]
    TooLarge {
        /// Bytes given.
        len: usize,
        /// The largest payload.
        max: usize,
    },
    /// The peer processor is down (or failed while the message was on its way).
    #[error("processor {0} is down")]
    PeerDown(usize),
    /// The processor trying to send is itself marked failed.
    #[error("processor {0} is marked failed and cannot send")]
    ProcessorDown(usize),
    /// A processor sent a message to itself.
    #[error("a processor cannot send a message to itself")]
    SelfSend,
    /// A processor index that is not one of the message system's.
    #[error("processor {0} is not part of the message system")]
    NoSuchProcessor(usize),
    /// A reply to a request that was already answered, or whose connection
    /// was reopened since.
    #[error("the request was already answered or its connection was reopened")]
    StaleRequest,
    /// A request's transfer failed while its target is up.
    #[error("a message to processor {to} could not be delivered: {reason}")]
    Undeliverable {
        /// The target.
        to: usize,
        /// What the fabric said.
        reason: DmaError,
    },
    /// The fabric refused to start a transfer.
    #[error("the fabric refused the transfer: {0}")]
    Dma(DmaError),
    /// A window could not be opened, or memory not written.
    #[error("fabric: {0}")]
    Fabric(#[from] FabricError),
}

/// Names one request (unique over the life of an [`Ipc`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request #{}", self.0)
    }
}

/// What a server needs to answer a request ([`Ipc::reply`]). It cannot be
/// built outside this module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRef {
    client: usize,
    server: usize,
    epoch: u64,
    slot: u16,
    seq: u32,
    tag: u64,
}

impl RequestRef {
    /// The processor that asked.
    pub fn client(&self) -> usize {
        self.client
    }
    /// The processor that answers.
    pub fn server(&self) -> usize {
        self.server
    }
    /// The client's tag.
    pub fn tag(&self) -> u64 {
        self.tag
    }
    /// The slot the request came in.
    pub fn slot(&self) -> u16 {
        self.slot
    }
    /// Its sequence number in the connection.
    pub fn seq(&self) -> u32 {
        self.seq
    }
}

/// What a message is.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageKind {
    /// A request to answer with [`Ipc::reply`].
    Request(RequestRef),
    /// The answer to one of the processor's requests.
    Reply {
        /// Which request.
        request: RequestId,
        /// `Ok` if the server answered (the payload is its answer), the
        /// failure otherwise (empty payload).
        result: Result<(), IpcError>,
    },
}

/// A message taken by its receiver.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The sending processor (for a failed request: the server it was for).
    pub from: usize,
    /// The client's tag (a reply carries its request's).
    pub tag: u64,
    /// When it was accepted.
    pub at: Instant,
    /// Request or reply.
    pub kind: MessageKind,
    /// The payload, copied out of the slot.
    pub payload: Vec<u8>,
}

impl Message {
    /// The request to answer, if this is one.
    pub fn request(&self) -> Option<&RequestRef> {
        match &self.kind {
            MessageKind::Request(r) => Some(r),
            MessageKind::Reply { .. } => None,
        }
    }
}

/// Counters of one processor's message system.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IpcCounters {
    /// Requests sent (accepted by [`Ipc::send_request`]).
    pub requests_sent: u64,
    /// Replies sent (accepted by [`Ipc::reply`]).
    pub replies_sent: u64,
    /// Requests received and queued.
    pub requests_received: u64,
    /// Replies received from servers (not counting failure replies).
    pub replies_received: u64,
    /// Payload bytes of the requests and replies sent.
    pub bytes_sent: u64,
    /// Payload bytes of the requests and replies received.
    pub bytes_received: u64,
    /// Interrupt entries or slot contents that made no sense: dropped.
    pub malformed: u64,
    /// Well-formed messages that did not fit the state (duplicates, late
    /// replies, writes into windows already closed): dropped.
    pub stale: u64,
    /// Requests completed with an error, and replies that could not be
    /// delivered.
    pub failed: u64,
}

/// Where a ring lies, for tests and tools that inspect or forge slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingInfo {
    /// The processor whose memory holds it.
    pub owner: EndpointId,
    /// The only processor allowed to write it.
    pub writer: EndpointId,
    /// The inline window (header + first payload bytes; interrupts).
    pub key: WindowKey,
    /// Where the inline part starts in the owner's memory.
    pub base: ProcAddr,
    /// Bytes per inline slot.
    pub stride: u32,
    /// Slots.
    pub slots: u16,
    /// The bulk window, its start and bytes per slot (absent when a whole
    /// message fits the inline slot).
    pub bulk: Option<(WindowKey, ProcAddr, u32)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Dir {
    Request,
    Reply,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    Client,
    Server,
}

/// Sizes derived from the configuration and the fabric's packet size.
#[derive(Debug, Clone, Copy)]
struct Layout {
    slots: u64,
    slot_size: u64,
    inline: u64,
    bulk: u64,
}

fn pages(b: u64) -> u64 {
    b.div_ceil(PAGE) * PAGE
}

impl Layout {
    fn footprint(&self) -> u64 {
        pages(self.slots * self.inline)
            + pages(self.slots * self.bulk)
            + pages(self.slots * self.slot_size)
    }
    fn region_at(&self, at: u64) -> Region {
        let ring = at;
        let bulk = ring + pages(self.slots * self.inline);
        let staging = bulk + pages(self.slots * self.bulk);
        Region {
            ring: ProcAddr(ring),
            bulk: ProcAddr(bulk),
            staging: ProcAddr(staging),
        }
    }
}

/// One side's memory of a connection: its ring (inline and bulk parts) and
/// its staging slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Region {
    ring: ProcAddr,
    bulk: ProcAddr,
    staging: ProcAddr,
}

#[derive(Debug, Clone, Copy)]
struct Arena {
    base: u64,
    len: u64,
    next: u64,
}

#[derive(Debug)]
struct ProcState {
    endpoint: EndpointId,
    arena: Arena,
    up: bool,
    inbox: VecDeque<Message>,
    counters: IpcCounters,
    /// Regions allocated for connections, by (peer, this processor's side),
    /// reused when the connection opens again.
    regions: BTreeMap<(usize, Side), Region>,
}

#[derive(Debug, Clone, Copy)]
enum OutSlot {
    Free,
    Busy {
        id: RequestId,
        seq: u32,
        tag: u64,
        written: bool,
        replied: bool,
    },
}

#[derive(Debug)]
struct Outgoing {
    seq: u32,
    tag: u64,
    payload: Vec<u8>,
}

#[derive(Debug, Default)]
struct ServeSlot {
    /// Sequence number of the last request accepted in this slot.
    last_seq: u32,
    /// The request taken and not yet answered.
    pending: Option<u32>,
    /// A reply from this staging slot is in flight.
    sending: bool,
    /// Replies waiting for the one in flight.
    deferred: VecDeque<Outgoing>,
}

#[derive(Debug, Clone, Copy)]
struct Keys {
    inline: WindowKey,
    bulk: Option<WindowKey>,
}

#[derive(Debug)]
struct Connection {
    epoch: u64,
    client_region: Region,
    server_region: Region,
    /// Windows of the request ring (in the server's memory).
    request_keys: Keys,
    /// Windows of the reply ring (in the client's memory).
    reply_keys: Keys,
    next_seq: u32,
    out: Vec<OutSlot>,
    serve: Vec<ServeSlot>,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// The bulk part is on its way; then the inline part of `inline_len`
    /// bytes goes.
    Bulk { inline_len: u64 },
    /// The inline part (header) is on its way.
    Inline,
}

#[derive(Debug, Clone, Copy)]
struct Transfer {
    conn: (usize, usize),
    epoch: u64,
    dir: Dir,
    slot: u16,
    phase: Phase,
}

/// What the window key of an interrupt entry names.
#[derive(Debug, Clone, Copy)]
struct KeyUse {
    conn: (usize, usize),
    dir: Dir,
    bulk: bool,
}

/// The message system of every processor. See the module docs.
#[derive(Debug)]
pub struct Ipc {
    config: IpcConfig,
    layout: Option<Layout>,
    procs: Vec<ProcState>,
    by_endpoint: BTreeMap<EndpointId, usize>,
    /// Open connections by (client, server).
    conns: BTreeMap<(usize, usize), Connection>,
    /// Windows of open connections by (owner, key).
    keys: BTreeMap<(usize, WindowKey), KeyUse>,
    /// Windows of closed connections by (owner, key): late entries are stale.
    retired: BTreeSet<(usize, WindowKey)>,
    transfers: BTreeMap<TransferId, Transfer>,
    next_request: u64,
    next_epoch: u64,
}

impl Ipc {
    /// A message system for `processors`: each one's endpoint and the arena
    /// (start, length) of its memory the message system may use. Processor
    /// `i` of the message system is `processors[i]`.
    pub fn new(
        config: IpcConfig,
        processors: Vec<(EndpointId, ProcAddr, u64)>,
    ) -> Result<Ipc, IpcError> {
        config.validate()?;
        let mut by_endpoint = BTreeMap::new();
        let mut procs = Vec::with_capacity(processors.len());
        for (i, (endpoint, base, len)) in processors.into_iter().enumerate() {
            if by_endpoint.insert(endpoint, i).is_some() {
                return Err(IpcError::Config(format!(
                    "{endpoint} is given twice (processor {i})"
                )));
            }
            if base.0.checked_add(len).is_none() {
                return Err(IpcError::Config(format!(
                    "the arena of processor {i} ({base}+{len:#x}) overflows"
                )));
            }
            procs.push(ProcState {
                endpoint,
                arena: Arena {
                    base: base.0,
                    len,
                    next: base.0,
                },
                up: true,
                inbox: VecDeque::new(),
                counters: IpcCounters::default(),
                regions: BTreeMap::new(),
            });
        }
        Ok(Ipc {
            config,
            layout: None,
            procs,
            by_endpoint,
            conns: BTreeMap::new(),
            keys: BTreeMap::new(),
            retired: BTreeSet::new(),
            transfers: BTreeMap::new(),
            next_request: 1,
            next_epoch: 1,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &IpcConfig {
        &self.config
    }

    /// Number of processors.
    pub fn processors(&self) -> usize {
        self.procs.len()
    }

    /// The index of the processor on endpoint `ep`.
    pub fn index_of(&self, ep: EndpointId) -> Option<usize> {
        self.by_endpoint.get(&ep).copied()
    }

    /// The endpoint of processor `p`.
    pub fn endpoint(&self, p: usize) -> Option<EndpointId> {
        self.procs.get(p).map(|s| s.endpoint)
    }

    /// Whether processor `p` is up (not marked failed).
    pub fn is_up(&self, p: usize) -> bool {
        self.procs.get(p).is_some_and(|s| s.up)
    }

    /// Bytes of processor `p`'s arena in use.
    pub fn arena_used(&self, p: usize) -> u64 {
        self.procs.get(p).map_or(0, |s| s.arena.next - s.arena.base)
    }

    /// Whether a connection (client `a`, server `b`) is open.
    pub fn is_open(&self, a: usize, b: usize) -> bool {
        self.conns.contains_key(&(a, b))
    }

    /// The counters of processor `p` (zero for an unknown index).
    pub fn counters(&self, p: usize) -> IpcCounters {
        self.procs.get(p).map(|s| s.counters).unwrap_or_default()
    }

    /// Whether processor `p` has messages to take.
    pub fn has_messages(&self, p: usize) -> bool {
        self.procs.get(p).is_some_and(|s| !s.inbox.is_empty())
    }

    /// Takes processor `p`'s oldest message.
    pub fn take(&mut self, p: usize) -> Option<Message> {
        self.procs.get_mut(p)?.inbox.pop_front()
    }

    /// Request slots processor `p` holds towards `peer`: a slot is held from
    /// the send until the reply arrived and the request's last write was
    /// acknowledged (so at most `slots`).
    pub fn outstanding(&self, p: usize, peer: usize) -> usize {
        self.conns.get(&(p, peer)).map_or(0, |c| {
            c.out
                .iter()
                .filter(|s| matches!(s, OutSlot::Busy { .. }))
                .count()
        })
    }

    /// Where the request ring of connection (client `a`, server `b`) lies.
    pub fn request_ring(&self, a: usize, b: usize) -> Option<RingInfo> {
        self.ring_info(a, b, Dir::Request)
    }

    /// Where the reply ring of connection (client `a`, server `b`) lies.
    pub fn reply_ring(&self, a: usize, b: usize) -> Option<RingInfo> {
        self.ring_info(a, b, Dir::Reply)
    }

    fn ring_info(&self, a: usize, b: usize, dir: Dir) -> Option<RingInfo> {
        let c = self.conns.get(&(a, b))?;
        let l = self.layout?;
        let (owner, writer, region, keys) = match dir {
            Dir::Request => (b, a, c.server_region, c.request_keys),
            Dir::Reply => (a, b, c.client_region, c.reply_keys),
        };
        Some(RingInfo {
            owner: self.procs[owner].endpoint,
            writer: self.procs[writer].endpoint,
            key: keys.inline,
            base: region.ring,
            stride: l.inline as u32,
            slots: self.config.slots,
            bulk: keys.bulk.map(|k| (k, region.bulk, l.bulk as u32)),
        })
    }

    fn check_pair(&self, from: usize, to: usize) -> Result<(), IpcError> {
        for p in [from, to] {
            if p >= self.procs.len() {
                return Err(IpcError::NoSuchProcessor(p));
            }
        }
        if from == to {
            return Err(IpcError::SelfSend);
        }
        if !self.procs[from].up {
            return Err(IpcError::ProcessorDown(from));
        }
        if !self.procs[to].up {
            return Err(IpcError::PeerDown(to));
        }
        Ok(())
    }

    fn layout<H: Traced>(&mut self, cluster: &Cluster<H>) -> Result<Layout, IpcError> {
        if let Some(l) = self.layout {
            return Ok(l);
        }
        let mp = cluster.fabric.config().limits.max_payload as u64;
        let slot_size = self.config.slot_size as u64;
        let inline = (mp & !7).min(slot_size);
        if inline < HEADER_LEN as u64 {
            return Err(IpcError::Config(format!(
                "the fabric's packets carry at most {mp} bytes; a message header needs {HEADER_LEN}"
            )));
        }
        let l = Layout {
            slots: self.config.slots as u64,
            slot_size,
            inline,
            bulk: slot_size - inline,
        };
        self.layout = Some(l);
        Ok(l)
    }

    fn region(&mut self, p: usize, peer: usize, side: Side, l: Layout) -> Result<Region, IpcError> {
        let s = &mut self.procs[p];
        if let Some(r) = s.regions.get(&(peer, side)) {
            return Ok(*r);
        }
        let need = l.footprint();
        let end = s.arena.base + s.arena.len;
        let at = s.arena.next.div_ceil(PAGE) * PAGE;
        match at.checked_add(need).filter(|&e| e <= end) {
            Some(e) => {
                s.arena.next = e;
                let r = l.region_at(at);
                s.regions.insert((peer, side), r);
                Ok(r)
            }
            None => Err(IpcError::ArenaFull {
                processor: p,
                need,
                free: end.saturating_sub(at),
                arena: s.arena.len,
            }),
        }
    }

    /// Opens the connection (client `a`, server `b`) if it is not open: the
    /// request ring in `b`'s arena for `a`, the reply ring in `a`'s arena
    /// for `b`, their windows, and the staging slots.
    pub fn open<H: Traced>(
        &mut self,
        cluster: &mut Cluster<H>,
        a: usize,
        b: usize,
    ) -> Result<(), IpcError> {
        self.check_pair(a, b)?;
        if self.conns.contains_key(&(a, b)) {
            return Ok(());
        }
        let l = self.layout(cluster)?;
        let client_region = self.region(a, b, Side::Client, l)?;
        let server_region = self.region(b, a, Side::Server, l)?;
        let (ea, eb) = (self.procs[a].endpoint, self.procs[b].endpoint);
        // Clean rings: nothing of an earlier connection or of the memory's
        // previous life is mistaken for a message.
        for (ep, r) in [(ea, client_region), (eb, server_region)] {
            cluster
                .fabric
                .memory_mut(ep)?
                .fill(r.ring, r.staging.0 - r.ring.0, 0)
                .map_err(FabricError::from)?;
        }
        let mut opened: Vec<(EndpointId, WindowKey)> = Vec::new();
        let result = register_ring(cluster, l, eb, ea, server_region, &mut opened).and_then(
            |request_keys| {
                register_ring(cluster, l, ea, eb, client_region, &mut opened)
                    .map(|reply_keys| (request_keys, reply_keys))
            },
        );
        let (request_keys, reply_keys) = match result {
            Ok(k) => k,
            Err(e) => {
                for (owner, key) in opened {
                    let mut lift = Lift::new(&mut cluster.engine);
                    let _ = cluster.fabric.avt_unregister(&mut lift, owner, key);
                }
                return Err(e.into());
            }
        };
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        for (owner, keys, dir) in [(b, request_keys, Dir::Request), (a, reply_keys, Dir::Reply)] {
            // A slot's 12-bit generation wraps: a key can come back.
            self.retired.remove(&(owner, keys.inline));
            if let Some(k) = keys.bulk {
                self.retired.remove(&(owner, k));
            }
            self.keys.insert(
                (owner, keys.inline),
                KeyUse {
                    conn: (a, b),
                    dir,
                    bulk: false,
                },
            );
            if let Some(k) = keys.bulk {
                self.keys.insert(
                    (owner, k),
                    KeyUse {
                        conn: (a, b),
                        dir,
                        bulk: true,
                    },
                );
            }
        }
        let slots = self.config.slots as usize;
        self.conns.insert(
            (a, b),
            Connection {
                epoch,
                client_region,
                server_region,
                request_keys,
                reply_keys,
                next_seq: 1,
                out: vec![OutSlot::Free; slots],
                serve: (0..slots).map(|_| ServeSlot::default()).collect(),
            },
        );
        Ok(())
    }

    /// Sends a request of `payload` from processor `from` to processor `to`
    /// (opening the connection if needed). The reply arrives later as a
    /// [`MessageKind::Reply`] message for `from` carrying the returned id
    /// and `tag`.
    pub fn send_request<H: Traced>(
        &mut self,
        cluster: &mut Cluster<H>,
        from: usize,
        to: usize,
        tag: u64,
        payload: &[u8],
    ) -> Result<RequestId, IpcError> {
        self.check_pair(from, to)?;
        let max = self.config.max_payload();
        if payload.len() > max {
            return Err(IpcError::TooLarge {
                len: payload.len(),
                max,
            });
        }
        self.open(cluster, from, to)?;
        let slots = self.config.slots;
        let conn = self.conns.get_mut(&(from, to)).expect("just opened");
        let Some(slot) = conn.out.iter().position(|s| matches!(s, OutSlot::Free)) else {
            return Err(IpcError::WouldBlock { peer: to, slots });
        };
        let seq = conn.next_seq;
        conn.next_seq = conn.next_seq.wrapping_add(1).max(1);
        let header = HeaderRepr {
            kind: WireKind::Request,
            slot: slot as u16,
            len: payload.len() as u32,
            seq,
            tag,
        };
        self.transmit(cluster, (from, to), Dir::Request, header, payload)?;
        let id = RequestId(self.next_request);
        self.next_request += 1;
        let conn = self.conns.get_mut(&(from, to)).expect("open");
        conn.out[slot] = OutSlot::Busy {
            id,
            seq,
            tag,
            written: false,
            replied: false,
        };
        let c = &mut self.procs[from].counters;
        c.requests_sent += 1;
        c.bytes_sent += payload.len() as u64;
        Ok(id)
    }

    /// Answers a request with `payload`. Each request is answered once.
    pub fn reply<H: Traced>(
        &mut self,
        cluster: &mut Cluster<H>,
        request: &RequestRef,
        payload: &[u8],
    ) -> Result<(), IpcError> {
        let (a, b) = (request.client, request.server);
        if a >= self.procs.len() || b >= self.procs.len() {
            return Err(IpcError::StaleRequest);
        }
        if !self.procs[b].up {
            return Err(IpcError::ProcessorDown(b));
        }
        if !self.procs[a].up {
            return Err(IpcError::PeerDown(a));
        }
        let max = self.config.max_payload();
        if payload.len() > max {
            return Err(IpcError::TooLarge {
                len: payload.len(),
                max,
            });
        }
        let Some(conn) = self
            .conns
            .get_mut(&(a, b))
            .filter(|c| c.epoch == request.epoch)
        else {
            return Err(IpcError::StaleRequest);
        };
        let Some(serve) = conn.serve.get_mut(request.slot as usize) else {
            return Err(IpcError::StaleRequest);
        };
        if serve.pending != Some(request.seq) {
            return Err(IpcError::StaleRequest);
        }
        if serve.sending {
            serve.pending = None;
            serve.deferred.push_back(Outgoing {
                seq: request.seq,
                tag: request.tag,
                payload: payload.to_vec(),
            });
        } else {
            let header = HeaderRepr {
                kind: WireKind::Reply,
                slot: request.slot,
                len: payload.len() as u32,
                seq: request.seq,
                tag: request.tag,
            };
            // If the transfer cannot start, the request stays answerable.
            self.transmit(cluster, (a, b), Dir::Reply, header, payload)?;
            let s = &mut self.conns.get_mut(&(a, b)).expect("open").serve[request.slot as usize];
            s.pending = None;
            s.sending = true;
        }
        let c = &mut self.procs[b].counters;
        c.replies_sent += 1;
        c.bytes_sent += payload.len() as u64;
        Ok(())
    }

    /// Writes a message into the writer's staging slot and starts its first
    /// transfer (see the module docs: bulk part first if it has one).
    fn transmit<H: Traced>(
        &mut self,
        cluster: &mut Cluster<H>,
        conn_key: (usize, usize),
        dir: Dir,
        header: HeaderRepr,
        payload: &[u8],
    ) -> Result<(), IpcError> {
        let l = self.layout.expect("a connection is open");
        let conn = &self.conns[&conn_key];
        let (writer, target, staging_region, keys) = match dir {
            Dir::Request => (
                conn_key.0,
                conn_key.1,
                conn.client_region,
                conn.request_keys,
            ),
            Dir::Reply => (conn_key.1, conn_key.0, conn.server_region, conn.reply_keys),
        };
        let epoch = conn.epoch;
        let (wep, tep) = (self.procs[writer].endpoint, self.procs[target].endpoint);
        let slot = header.slot as u64;
        let staging = ProcAddr(staging_region.staging.0 + slot * l.slot_size);
        {
            let m = cluster.fabric.memory_mut(wep)?;
            m.write(staging, header.emit().as_bytes())
                .and_then(|()| m.write(ProcAddr(staging.0 + HEADER_LEN as u64), payload))
                .map_err(FabricError::from)?;
        }
        let total = (HEADER_LEN + payload.len()) as u64;
        let inline_len = total.min(l.inline);
        let (local, remote, len, phase) = match keys.bulk {
            Some(bulk) if total > l.inline => (
                ProcAddr(staging.0 + l.inline),
                FabricAddr::new(bulk, (slot * l.bulk) as u32),
                total - l.inline,
                Phase::Bulk { inline_len },
            ),
            _ => (
                staging,
                FabricAddr::new(keys.inline, (slot * l.inline) as u32),
                inline_len,
                Phase::Inline,
            ),
        };
        let mut lift = Lift::new(&mut cluster.engine);
        let id = cluster
            .fabric
            .start_dma(&mut lift, wep, DmaRequest::write(tep, local, remote, len))
            .map_err(IpcError::Dma)?;
        self.transfers.insert(
            id,
            Transfer {
                conn: conn_key,
                epoch,
                dir,
                slot: header.slot,
                phase,
            },
        );
        Ok(())
    }

    /// An interrupt entry of processor `p`: returns true if it hit one of
    /// the message system's windows (a message is then queued for `p` if the
    /// entry and the slot hold a valid one; see the module docs for the
    /// checks).
    pub fn on_interrupt<H: Traced>(
        &mut self,
        cluster: &mut Cluster<H>,
        p: usize,
        entry: &InterruptEntry,
    ) -> bool {
        let Some(&usage) = self.keys.get(&(p, entry.key)) else {
            if self.retired.contains(&(p, entry.key)) {
                self.procs[p].counters.stale += 1;
                return true;
            }
            return false;
        };
        match self.accept(cluster, p, usage, entry) {
            Ok(Some(m)) => self.procs[p].inbox.push_back(m),
            Ok(None) => self.procs[p].counters.stale += 1,
            Err(()) => self.procs[p].counters.malformed += 1,
        }
        true
    }

    /// Checks an entry and its slot: `Err` malformed, `Ok(None)` stale,
    /// `Ok(Some)` the message.
    fn accept<H: Traced>(
        &mut self,
        cluster: &Cluster<H>,
        p: usize,
        usage: KeyUse,
        entry: &InterruptEntry,
    ) -> Result<Option<Message>, ()> {
        let l = self.layout.ok_or(())?;
        let (a, b) = usage.conn;
        let writer = match usage.dir {
            Dir::Request => a,
            Dir::Reply => b,
        };
        if usage.bulk || entry.requester != self.procs[writer].endpoint {
            return Err(());
        }
        let offset = entry.offset as u64;
        if offset % l.inline != 0 || offset / l.inline >= l.slots {
            return Err(());
        }
        let slot = offset / l.inline;
        let entry_len = entry.len as u64;
        if entry_len < HEADER_LEN as u64 || entry_len > l.inline {
            return Err(());
        }
        let conn = self.conns.get(&usage.conn).ok_or(())?;
        let region = match usage.dir {
            Dir::Request => conn.server_region,
            Dir::Reply => conn.client_region,
        };
        let mem = cluster
            .fabric
            .memory(self.procs[p].endpoint)
            .map_err(|_| ())?;
        let at = ProcAddr(region.ring.0 + slot * l.inline);
        let h = mem
            .slice(at, HEADER_LEN as u64)
            .ok()
            .and_then(|b| HeaderRepr::parse(b).ok())
            .ok_or(())?;
        let want_kind = match usage.dir {
            Dir::Request => WireKind::Request,
            Dir::Reply => WireKind::Reply,
        };
        let len = h.len as u64;
        if h.kind != want_kind
            || h.slot as u64 != slot
            || len > l.slot_size - HEADER_LEN as u64
            || entry_len != (HEADER_LEN as u64 + len).min(l.inline)
        {
            return Err(());
        }
        // Well-formed: now does it fit the state?
        let epoch = conn.epoch;
        let fresh = match usage.dir {
            Dir::Request => {
                let last = conn.serve[slot as usize].last_seq;
                (h.seq.wrapping_sub(last) as i32) > 0
            }
            Dir::Reply => matches!(
                conn.out[slot as usize],
                OutSlot::Busy { seq, tag, replied: false, .. } if seq == h.seq && tag == h.tag
            ),
        };
        if !fresh {
            return Ok(None);
        }
        let head = len.min(l.inline - HEADER_LEN as u64);
        let mut payload = mem
            .slice(ProcAddr(at.0 + HEADER_LEN as u64), head)
            .map_err(|_| ())?
            .to_vec();
        if len > head {
            let bulk = ProcAddr(region.bulk.0 + slot * l.bulk);
            payload.extend_from_slice(mem.slice(bulk, len - head).map_err(|_| ())?);
        }
        let now = cluster.now();
        let conn = self.conns.get_mut(&usage.conn).expect("checked");
        let counters = &mut self.procs[p].counters;
        counters.bytes_received += len;
        let message = match usage.dir {
            Dir::Request => {
                let s = &mut conn.serve[slot as usize];
                s.last_seq = h.seq;
                s.pending = Some(h.seq);
                counters.requests_received += 1;
                Message {
                    from: a,
                    tag: h.tag,
                    at: now,
                    kind: MessageKind::Request(RequestRef {
                        client: a,
                        server: b,
                        epoch,
                        slot: slot as u16,
                        seq: h.seq,
                        tag: h.tag,
                    }),
                    payload,
                }
            }
            Dir::Reply => {
                let OutSlot::Busy {
                    id, written, tag, ..
                } = conn.out[slot as usize]
                else {
                    unreachable!("checked above")
                };
                conn.out[slot as usize] = if written {
                    OutSlot::Free
                } else {
                    OutSlot::Busy {
                        id,
                        seq: h.seq,
                        tag,
                        written,
                        replied: true,
                    }
                };
                counters.replies_received += 1;
                Message {
                    from: b,
                    tag,
                    at: now,
                    kind: MessageKind::Reply {
                        request: id,
                        result: Ok(()),
                    },
                    payload,
                }
            }
        };
        Ok(Some(message))
    }

    /// A DMA transfer ended: returns true if it was one of the message
    /// system's. A request that failed completes with an error reply queued
    /// for its client (check [`Ipc::has_messages`]).
    pub fn on_dma_done<H: Traced>(
        &mut self,
        cluster: &mut Cluster<H>,
        done: &DmaCompletion,
    ) -> bool {
        let Some(t) = self.transfers.remove(&done.id) else {
            return false;
        };
        if self.conns.get(&t.conn).is_none_or(|c| c.epoch != t.epoch) {
            // The connection closed since (a processor failed): nothing to do.
            return true;
        }
        let mut result = done.result.clone();
        if let (Ok(()), Phase::Bulk { inline_len }) = (&result, t.phase) {
            match self.send_inline(cluster, t, inline_len) {
                Ok(()) => return true,
                Err(e) => result = Err(e),
            }
        }
        let (a, b) = t.conn;
        let slot = t.slot as usize;
        match (t.dir, result) {
            (Dir::Request, Ok(())) => {
                let conn = self.conns.get_mut(&t.conn).expect("checked");
                if let OutSlot::Busy {
                    replied, written, ..
                } = &mut conn.out[slot]
                {
                    *written = true;
                    if *replied {
                        conn.out[slot] = OutSlot::Free;
                    }
                }
            }
            (Dir::Request, Err(reason)) => {
                let peer_down = !self.procs[b].up
                    || !cluster
                        .fabric
                        .endpoint_up(self.procs[b].endpoint)
                        .unwrap_or(false);
                let conn = self.conns.get_mut(&t.conn).expect("checked");
                if let OutSlot::Busy {
                    id, tag, replied, ..
                } = conn.out[slot]
                {
                    conn.out[slot] = OutSlot::Free;
                    if !replied {
                        let error = if peer_down {
                            IpcError::PeerDown(b)
                        } else {
                            IpcError::Undeliverable { to: b, reason }
                        };
                        let now = cluster.now();
                        let client = &mut self.procs[a];
                        client.counters.failed += 1;
                        client.inbox.push_back(Message {
                            from: b,
                            tag,
                            at: now,
                            kind: MessageKind::Reply {
                                request: id,
                                result: Err(error),
                            },
                            payload: Vec::new(),
                        });
                    }
                }
            }
            (Dir::Reply, result) => {
                if result.is_err() {
                    self.procs[b].counters.failed += 1;
                }
                self.next_reply(cluster, t.conn, t.slot);
            }
        }
        true
    }

    fn send_inline<H: Traced>(
        &mut self,
        cluster: &mut Cluster<H>,
        t: Transfer,
        inline_len: u64,
    ) -> Result<(), DmaError> {
        let l = self.layout.expect("a connection is open");
        let conn = &self.conns[&t.conn];
        let (writer, target, region, keys) = match t.dir {
            Dir::Request => (t.conn.0, t.conn.1, conn.client_region, conn.request_keys),
            Dir::Reply => (t.conn.1, t.conn.0, conn.server_region, conn.reply_keys),
        };
        let slot = t.slot as u64;
        let local = ProcAddr(region.staging.0 + slot * l.slot_size);
        let remote = FabricAddr::new(keys.inline, (slot * l.inline) as u32);
        let (wep, tep) = (self.procs[writer].endpoint, self.procs[target].endpoint);
        let mut lift = Lift::new(&mut cluster.engine);
        let id = cluster.fabric.start_dma(
            &mut lift,
            wep,
            DmaRequest::write(tep, local, remote, inline_len),
        )?;
        self.transfers.insert(
            id,
            Transfer {
                phase: Phase::Inline,
                ..t
            },
        );
        Ok(())
    }

    /// The reply from staging slot `slot` is done: sends the next deferred
    /// one, if any.
    fn next_reply<H: Traced>(&mut self, cluster: &mut Cluster<H>, key: (usize, usize), slot: u16) {
        loop {
            let Some(conn) = self.conns.get_mut(&key) else {
                return;
            };
            let s = &mut conn.serve[slot as usize];
            s.sending = false;
            let Some(next) = s.deferred.pop_front() else {
                return;
            };
            let header = HeaderRepr {
                kind: WireKind::Reply,
                slot,
                len: next.payload.len() as u32,
                seq: next.seq,
                tag: next.tag,
            };
            match self.transmit(cluster, key, Dir::Reply, header, &next.payload) {
                Ok(()) => {
                    self.conns.get_mut(&key).expect("open").serve[slot as usize].sending = true;
                    return;
                }
                Err(_) => self.procs[key.1].counters.failed += 1,
            }
        }
    }

    /// Processor `p` failed (the message system's processor-down notice):
    /// its state vanishes, every request outstanding to it completes now
    /// with a [`IpcError::PeerDown`] reply, the requests it made are
    /// forgotten, the windows of its connections close, and sends to it
    /// fail until [`Ipc::processor_restored`]. Returns the processors that
    /// got messages (in index order), for the host model to serve.
    pub fn processor_failed<H: Traced>(
        &mut self,
        cluster: &mut Cluster<H>,
        p: usize,
    ) -> Vec<usize> {
        let Some(state) = self.procs.get_mut(p) else {
            return Vec::new();
        };
        if !state.up {
            return Vec::new();
        }
        state.up = false;
        state.inbox.clear();
        let now = cluster.now();
        let affected: Vec<(usize, usize)> = self
            .conns
            .keys()
            .filter(|&&(a, b)| a == p || b == p)
            .copied()
            .collect();
        let mut told = BTreeSet::new();
        for key in affected {
            let Some(conn) = self.conns.remove(&key) else {
                continue;
            };
            let (a, b) = key;
            for (owner, keys) in [(b, conn.request_keys), (a, conn.reply_keys)] {
                let ep = self.procs[owner].endpoint;
                for k in [Some(keys.inline), keys.bulk].into_iter().flatten() {
                    self.keys.remove(&(owner, k));
                    self.retired.insert((owner, k));
                    let mut lift = Lift::new(&mut cluster.engine);
                    let _ = cluster.fabric.avt_unregister(&mut lift, ep, k);
                }
            }
            if b == p {
                for slot in &conn.out {
                    if let OutSlot::Busy {
                        id,
                        tag,
                        replied: false,
                        ..
                    } = *slot
                    {
                        let client = &mut self.procs[a];
                        client.counters.failed += 1;
                        client.inbox.push_back(Message {
                            from: p,
                            tag,
                            at: now,
                            kind: MessageKind::Reply {
                                request: id,
                                result: Err(IpcError::PeerDown(p)),
                            },
                            payload: Vec::new(),
                        });
                        told.insert(a);
                    }
                }
            } else {
                self.procs[b]
                    .inbox
                    .retain(|m| !matches!(&m.kind, MessageKind::Request(r) if r.client == p));
            }
        }
        // The failed processor's own transfers were aborted with it (the
        // host model of a failed processor hands their completions nowhere);
        // the survivors' transfers to it end later and are ignored then.
        self.transfers.retain(|_, t| {
            let writer = match t.dir {
                Dir::Request => t.conn.0,
                Dir::Reply => t.conn.1,
            };
            writer != p
        });
        told.into_iter().collect()
    }

    /// Processor `p` is back (its fabric endpoint must be restored too):
    /// connections to and from it open again on the next send, with fresh
    /// windows and sequence numbers; its arena starts empty again.
    pub fn processor_restored(&mut self, p: usize) {
        let Some(s) = self.procs.get_mut(p) else {
            return;
        };
        if s.up {
            return;
        }
        s.up = true;
        s.inbox.clear();
        s.regions.clear();
        s.arena.next = s.arena.base;
    }
}

/// Opens the two windows of one ring (in `owner`'s memory, for `writer`),
/// noting each key in `opened` so a failure can close them again.
fn register_ring<H: Traced>(
    cluster: &mut Cluster<H>,
    l: Layout,
    owner: EndpointId,
    writer: EndpointId,
    r: Region,
    opened: &mut Vec<(EndpointId, WindowKey)>,
) -> Result<Keys, FabricError> {
    let mut lift = Lift::new(&mut cluster.engine);
    let inline = cluster.fabric.avt_register(
        &mut lift,
        owner,
        writer,
        r.ring,
        (l.slots * l.inline) as u32,
        Access::WRITE | Access::INTERRUPT,
    )?;
    opened.push((owner, inline));
    let bulk = if l.bulk > 0 {
        let k = cluster.fabric.avt_register(
            &mut lift,
            owner,
            writer,
            r.bulk,
            (l.slots * l.bulk) as u32,
            Access::WRITE,
        )?;
        opened.push((owner, k));
        Some(k)
    } else {
        None
    };
    Ok(Keys { inline, bulk })
}
