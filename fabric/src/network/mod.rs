//! The timed fabric model.
//!
//! # Packet-level timing
//! Each link is two *channels* (one per direction). A packet crosses a
//! channel in three steps:
//! 1. **Grant.** A packet waiting for an output channel (FIFO per output, in
//!    arrival order) is granted when the channel is free *and* the input
//!    buffer at the far end has a free slot (a credit).
//! 2. **Cut-through.** The head reaches the next router after the link's
//!    propagation latency plus the time to serialize the 8-byte header; the
//!    router chooses the output port from the header (routing table on the
//!    destination ID) and requests it after the path-formation delay
//!    (~300 ns). The tail leaves a channel at
//!    `max(grant + size/bandwidth, time the tail arrived)`.
//! 3. **Credit return.** When the tail leaves a router's input buffer, the
//!    credit travels back to the upstream sender (one propagation latency).
//!    An endpoint consumes a packet when its tail arrives.
//!
//! Flow control is credit-based with packet-sized buffer slots
//! (`FabricConfig::buffer_slots`, default 2): it never drops a packet for
//! lack of room, it keeps the model deterministic (no stop/go thresholds to
//! tune), and the credit loop is what limits a long link's throughput, as
//! on real hardware. Two packets wanting one output contend: the second
//! waits in FIFO order. Deadlock: routing is shortest-path with
//! lowest-port tie-breaking; in topologies with cycles a cyclic buffer
//! dependency is possible in principle, and the transaction timeout
//! turns it into a retry on the other plane.
//!
//! # Transaction-level bursts
//! A DMA transfer whose path (both directions) is idle when it starts and
//! that nothing else touches is computed as a *train*: the exact per-packet
//! recurrence of the packet-level rules above is evaluated in a loop
//! (no events, no packet bytes), each channel is reserved until its last
//! use, and one event completes the transfer. The timing is the same as the
//! packet-level model's (see the equivalence tests). If other traffic asks
//! for a reserved channel, or a fault hits the path, or the target's AVT
//! changes, the train is *split*: packets already injected keep their
//! computed times on every channel they still have to cross (they stay
//! ahead of the newcomer there, even where packet-level arbitration would
//! let the newcomer pass first), and the rest of the transfer continues
//! packet by packet. A train of another requester may likewise follow a
//! single-packet train whose packet has left, on the state such a split
//! would leave (see `Train::single_packet_sent`). Within a train, data becomes
//! visible in the target's memory at the train's end (or split) instead of
//! packet by packet. The deviation from pure packet level that this costs
//! under contention is measured by a test (see docs/ARCHITECTURE.md).

mod dma;
mod train;

use std::collections::VecDeque;

use rand_core::RngCore;

pub use dma::{DmaCompletion, DmaError, DmaOp, DmaRequest, TransferId, TransferMap};

use crate::avt::{Access, Avt, AvtEntry, AvtError, InterruptEntry, InterruptQueue, Op};
use crate::engine::{ComponentId, Engine, Fired, Scheduler, SimRng, Traced};
use crate::ids::{EndpointId, NackReason, Plane, WindowKey};
use crate::memory::{MemoryError, ProcAddr, ProcessorMemory};
use crate::packet::{Packet, PacketKind, PacketLimits, PacketRepr};
use crate::time::{Duration, Instant};
use crate::topology::{NodeRef, PortRef, RouterId, Topology};

use dma::DmaEngine;
pub use train::TrainId;
use train::TrainTable;

/// Settings of the fabric model. Every field has a sensible default.
#[derive(Debug, Clone)]
pub struct FabricConfig {
    /// Packet size limits (the generation's maximum payload).
    pub limits: PacketLimits,
    /// Router path-formation latency (from header arrival to output request).
    pub path_formation: Duration,
    /// Packet-sized slots in every input buffer (credits per channel), ≥ 1.
    pub buffer_slots: u8,
    /// Time a target takes from a request's tail arriving to its response
    /// leaving (AVT check and memory access).
    pub turnaround: Duration,
    /// How long a requester waits for a response before retrying.
    pub transaction_timeout: Duration,
    /// Outstanding transactions per requester (at most 16: the 4-bit TID).
    pub max_outstanding: u8,
    /// Attempts per packet (alternating planes after a timeout) before the
    /// transfer fails.
    pub max_attempts: u8,
    /// Probability that one packet is corrupted while crossing one channel.
    pub crc_error_rate: f64,
    /// Allow transaction-level bursts (trains) for uncontended transfers.
    pub trains: bool,
    /// Memory size of every endpoint, in bytes (lazily touched).
    pub memory_size: u64,
    /// AVT slots per endpoint.
    pub avt_capacity: u32,
    /// Interrupt queue entries per endpoint.
    pub interrupt_queue: usize,
}

impl Default for FabricConfig {
    fn default() -> Self {
        FabricConfig {
            limits: PacketLimits::from(crate::packet::Generation::ServerNet2),
            path_formation: Duration::from_ns(300),
            buffer_slots: 2,
            turnaround: Duration::from_ns(100),
            transaction_timeout: Duration::from_us(200),
            max_outstanding: 16,
            max_attempts: 4,
            crc_error_rate: 0.0,
            trains: true,
            memory_size: 64 << 20,
            avt_capacity: 4096,
            interrupt_queue: 1024,
        }
    }
}

/// Why the fabric refused a call.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FabricError {
    /// The endpoint is not in the topology.
    #[error("{0} is not an endpoint of this fabric")]
    UnknownEndpoint(EndpointId),
    /// The link index is not in the topology.
    #[error("link {0} does not exist (the fabric has {1} links)")]
    UnknownLink(usize, usize),
    /// The router is not in the topology.
    #[error("{0} does not exist")]
    UnknownRouter(RouterId),
    /// The plane is not one of the fabric's.
    #[error("plane {0} is not part of this fabric")]
    UnknownPlane(Plane),
    /// A configuration value out of range.
    #[error("invalid fabric configuration: {0}")]
    Config(String),
    /// Memory could not be mapped.
    #[error("memory: {0}")]
    Memory(String),
    /// An AVT operation failed.
    #[error("AVT: {0}")]
    Avt(#[from] AvtError),
}

impl From<MemoryError> for FabricError {
    fn from(e: MemoryError) -> Self {
        FabricError::Memory(e.to_string())
    }
}

/// A component that can be failed and restored.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultTarget {
    /// A processor or adapter: it stops answering and its transfers end.
    Endpoint(EndpointId),
    /// One full-duplex link.
    Link(usize),
    /// One router and every link attached to it.
    Router(RouterId),
    /// A whole plane: its routers and links.
    Plane(Plane),
}

impl std::fmt::Display for FaultTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FaultTarget::Endpoint(e) => write!(f, "endpoint {e}"),
            FaultTarget::Link(l) => write!(f, "link {l}"),
            FaultTarget::Router(r) => write!(f, "{r}"),
            FaultTarget::Plane(p) => write!(f, "plane {p}"),
        }
    }
}

/// Index of a channel (one direction of a link): `2 * link + direction`.
pub type ChannelId = u32;
type PacketSlot = u32;

/// Events of the fabric model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FabricEvent {
    /// A packet's head reaches the router at the far end of `ch`.
    HeadArrive {
        /// Packet slot.
        pkt: PacketSlot,
        /// Channel it came on.
        ch: ChannelId,
        /// Channel epoch when it was granted (a failure in between kills it).
        epoch: u32,
    },
    /// After path formation, the packet asks for output channel `ch`.
    Request {
        /// Packet slot.
        pkt: PacketSlot,
        /// Output channel.
        ch: ChannelId,
    },
    /// A packet waits for channel `ch`, and the channel's tail or the
    /// credit it waits for is through now. Channels keep their busy time
    /// and credit return times as state; this event exists only while a
    /// packet waits.
    LinkFree {
        /// Channel.
        ch: ChannelId,
    },
    /// A packet's tail reaches the endpoint at the far end of `ch`.
    TailArrive {
        /// Packet slot.
        pkt: PacketSlot,
        /// Channel.
        ch: ChannelId,
        /// Channel epoch when it was granted.
        epoch: u32,
    },
    /// A target's response is ready to leave on `plane`.
    Respond {
        /// Packet slot of the response.
        pkt: PacketSlot,
        /// Endpoint index.
        ep: u32,
        /// Plane the request came on.
        plane: Plane,
    },
    /// A requester's transaction timer: some of its attempts may have
    /// timed out (one timer per requester, see `Fabric::arm_timer`).
    Timeout {
        /// Endpoint index.
        ep: u32,
    },
    /// The response of a train packet committed at a split arrives.
    TrainAck {
        /// Endpoint index.
        ep: u32,
        /// Transaction ID.
        tid: u8,
        /// Attempt serial.
        serial: u32,
    },
    /// A train (transaction-level burst) completes.
    TrainDone {
        /// Train ID.
        train: TrainId,
    },
    /// The request of a train's write into an interrupt window arrives.
    TrainLand {
        /// Train ID.
        train: TrainId,
    },
}

impl Traced for FabricEvent {
    fn kind(&self) -> u16 {
        match self {
            FabricEvent::HeadArrive { .. } => 1,
            FabricEvent::Request { .. } => 2,
            FabricEvent::LinkFree { .. } => 3,
            FabricEvent::TailArrive { .. } => 5,
            FabricEvent::Respond { .. } => 6,
            FabricEvent::Timeout { .. } => 7,
            FabricEvent::TrainAck { .. } => 8,
            FabricEvent::TrainDone { .. } => 9,
            FabricEvent::TrainLand { .. } => 10,
        }
    }
    fn keys(&self) -> (u64, u64) {
        match *self {
            FabricEvent::HeadArrive { pkt, ch, epoch }
            | FabricEvent::TailArrive { pkt, ch, epoch } => {
                (pkt as u64, ((ch as u64) << 32) | epoch as u64)
            }
            FabricEvent::Request { pkt, ch } => (pkt as u64, ch as u64),
            FabricEvent::LinkFree { ch } => (ch as u64, 0),
            FabricEvent::Respond { pkt, ep, plane } => {
                (pkt as u64, ((ep as u64) << 8) | plane as u64)
            }
            FabricEvent::Timeout { ep } => ((ep as u64) << 8, 0),
            FabricEvent::TrainAck { ep, tid, serial } => {
                (((ep as u64) << 8) | tid as u64, serial as u64)
            }
            FabricEvent::TrainDone { train } | FabricEvent::TrainLand { train } => (train.0, 0),
        }
    }
}

/// Trace kinds for things folded in with [`Scheduler::note`].
pub(crate) mod note {
    pub const DMA_START: u16 = 0x100;
    pub const DMA_DONE: u16 = 0x101;
    pub const TRAIN_START: u16 = 0x102;
    pub const TRAIN_SPLIT: u16 = 0x103;
    pub const FAULT: u16 = 0x104;
    pub const RESTORE: u16 = 0x105;
    pub const DROP: u16 = 0x106;
    pub const CORRUPT: u16 = 0x107;
}

/// Counters of one channel (one direction of a link).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelCounters {
    /// Packets that crossed.
    pub packets: u64,
    /// Bytes that crossed (whole packets, header to CRC).
    pub bytes: u64,
    /// Virtual time spent sending, in picoseconds.
    pub busy_ps: u64,
    /// Packets that had to wait for the channel or a credit.
    pub waits: u64,
    /// Packets corrupted while crossing (seeded CRC-error injection).
    pub corrupted: u64,
    /// Packets lost because the channel failed under them or was down.
    pub dropped_down: u64,
}

/// Counters of one router.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouterCounters {
    /// Packets routed.
    pub routed: u64,
    /// Packets whose destination has no routing-table entry (a corrupted header).
    pub unroutable: u64,
    /// Packets lost because the router was down.
    pub dropped_down: u64,
}

/// Counters of one endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointCounters {
    /// Request packets received and accepted.
    pub requests_in: u64,
    /// Response packets received.
    pub responses_in: u64,
    /// Packets sent (requests and responses).
    pub packets_out: u64,
    /// Packets dropped because their CRC (or any other check) failed.
    pub crc_drops: u64,
    /// Packets that arrived here addressed to another endpoint (always 0
    /// unless a corrupted header slipped past the CRC).
    pub misdelivered: u64,
    /// Packets dropped because this endpoint was down.
    pub dropped_down: u64,
    /// Writes that raised an interrupt entry.
    pub interrupts: u64,
    /// Interrupt entries lost to a full queue.
    pub interrupt_overflows: u64,
    /// Responses that matched no outstanding transaction (late, after a retry).
    pub stale_responses: u64,
    /// DMA counters of this endpoint as a requester.
    pub dma: DmaCounters,
}

/// DMA (block transfer engine) counters of one requester.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DmaCounters {
    /// Transfers started.
    pub transfers: u64,
    /// Transfers completed successfully.
    pub completed: u64,
    /// Transfers that ended with an error.
    pub failed: u64,
    /// Request packets issued (first attempts and retries).
    pub packets: u64,
    /// Packets sent again after a timeout.
    pub retries: u64,
    /// Times a transfer moved to the other plane.
    pub plane_failovers: u64,
    /// Transactions that timed out.
    pub timeouts: u64,
    /// NACKs received, by reason code.
    pub nacks_received: [u64; 8],
    /// Transfers (or parts) run as transaction-level trains.
    pub trains: u64,
    /// Packets carried by trains.
    pub train_packets: u64,
    /// Trains split by contention, faults or AVT changes.
    pub train_splits: u64,
    /// Train packets whose timing came from the steady-state jump (a
    /// periodic schedule extended exactly) instead of one-by-one evaluation.
    pub train_jumped_packets: u64,
}

/// A snapshot of every counter of the fabric.
#[derive(Debug, Clone, PartialEq)]
pub struct FabricCounters {
    /// Per channel: (link index, direction 0 = a→b / 1 = b→a, plane, counters).
    pub channels: Vec<(usize, u8, Plane, ChannelCounters)>,
    /// Per router.
    pub routers: Vec<(RouterId, Plane, RouterCounters)>,
    /// Per endpoint, with its AVT counters (validated, NACKs by reason).
    pub endpoints: Vec<(EndpointId, EndpointCounters, AvtSummary)>,
}

/// AVT counters of one endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AvtSummary {
    /// Requests that passed validation.
    pub validated: u64,
    /// Requests refused, by reason code.
    pub nacks: [u64; 8],
}

impl FabricCounters {
    /// Sum of a channel counter over one plane.
    pub fn plane_total(&self, plane: Plane, f: impl Fn(&ChannelCounters) -> u64) -> u64 {
        self.channels
            .iter()
            .filter(|c| c.2 == plane)
            .map(|c| f(&c.3))
            .sum()
    }

    /// Sum of a DMA counter over all endpoints.
    pub fn dma_total(&self, f: impl Fn(&DmaCounters) -> u64) -> u64 {
        self.endpoints.iter().map(|e| f(&e.1.dma)).sum()
    }

    /// Sum of an endpoint counter over all endpoints.
    pub fn endpoint_total(&self, f: impl Fn(&EndpointCounters) -> u64) -> u64 {
        self.endpoints.iter().map(|e| f(&e.1)).sum()
    }

    /// Counters of one endpoint.
    pub fn endpoint(&self, id: EndpointId) -> Option<(&EndpointCounters, &AvtSummary)> {
        self.endpoints
            .iter()
            .find(|e| e.0 == id)
            .map(|e| (&e.1, &e.2))
    }
}

#[derive(Debug)]
struct Channel {
    plane: Plane,
    to: PortRef,
    bandwidth: crate::time::Bandwidth,
    latency: Duration,
    header_time: Duration,
    up: bool,
    epoch: u32,
    busy_until: Instant,
    /// Credits known to be back. Credits in flight are in `pending_credits`
    /// and count as back once their time has come ([`Channel::reclaim`]).
    credits: u8,
    /// Times at which credits now in flight come back (at most `buffer_slots`).
    pending_credits: Vec<Instant>,
    queue: VecDeque<PacketSlot>,
    /// The time of the one pending [`FabricEvent::LinkFree`] wake-up, armed
    /// only while a queued packet waits for the channel or a credit.
    wake: Option<Instant>,
    /// The train holding this channel, if any.
    train: Option<TrainId>,
    counters: ChannelCounters,
}

impl Channel {
    /// Counts the credits whose return time has come as back.
    #[inline]
    fn reclaim(&mut self, now: Instant) {
        if self.pending_credits.is_empty() {
            return;
        }
        let before = self.pending_credits.len();
        self.pending_credits.retain(|&t| t > now);
        self.credits += (before - self.pending_credits.len()) as u8;
    }
}

#[derive(Debug)]
struct InFlight {
    bytes: Vec<u8>,
    plane: Plane,
    /// When the whole packet is present at its current node.
    tail_here: Instant,
    /// The input buffer slot it occupies (the channel it arrived on), if at a router.
    holds_slot: Option<ChannelId>,
    /// Whether it had to wait at its current output.
    waited: bool,
}

#[derive(Debug)]
struct Router {
    plane: Plane,
    up: bool,
    counters: RouterCounters,
}

#[derive(Debug)]
struct Endpoint {
    id: EndpointId,
    up: bool,
    memory: ProcessorMemory,
    avt: Avt,
    interrupts: InterruptQueue,
    out: [Option<ChannelId>; 2],
    dma: DmaEngine,
    counters: EndpointCounters,
}

/// The fabric: topology, per-component state, counters and the DMA engines.
/// Drive it with [`Fabric::handle`] from an [`Engine`] (or use [`FabricSim`]).
#[derive(Debug)]
pub struct Fabric {
    topology: Topology,
    config: FabricConfig,
    channels: Vec<Channel>,
    routers: Vec<Router>,
    endpoints: Vec<Endpoint>,
    /// Output channel of each router port.
    router_out: Vec<Vec<Option<ChannelId>>>,
    packets: Vec<Option<InFlight>>,
    free_packets: Vec<PacketSlot>,
    buffers: BufferPool,
    /// Routes trains use, computed on first use (see `route_between`), and
    /// their index by (requester, target, plane).
    routes: Vec<train::Route>,
    route_index: std::collections::HashMap<(u32, u32, u8), Option<u32>>,
    train_spares: train::TrainSpares,
    rng: SimRng,
    completions: Vec<DmaCompletion>,
    trains: TrainTable,
    force_packet_level: bool,
    /// Whether a train may follow another requester's single-packet train
    /// whose packet has left (off only to check the rule against splitting).
    chain_across_requesters: bool,
    /// Endpoints that received an interrupt since the last `take_signals`.
    signals: Vec<EndpointId>,
    /// Packets delivered to endpoints, when capturing.
    capture: Option<Vec<CapturedPacket>>,
}

/// One fabric packet as it reached an endpoint (see [`Fabric::set_capture`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedPacket {
    /// When its tail arrived.
    pub at: Instant,
    /// The plane it crossed.
    pub plane: Plane,
    /// The whole packet: header, address, payload, CRC.
    pub bytes: Vec<u8>,
}

/// RNG stream used by the fabric for CRC-error injection.
pub const RNG_STREAM_FABRIC: u64 = 0xFAB;

impl Fabric {
    /// Builds the fabric state for a checked topology. Every endpoint gets
    /// `config.memory_size` bytes of anonymous, lazily touched memory.
    pub fn new(topology: Topology, config: FabricConfig, rng: SimRng) -> Result<Self, FabricError> {
        if config.buffer_slots == 0 {
            return Err(FabricError::Config(
                "buffer_slots must be at least 1".into(),
            ));
        }
        if config.max_outstanding == 0 || config.max_outstanding > 16 {
            return Err(FabricError::Config(format!(
                "max_outstanding must be 1..=16 (a 4-bit transaction ID), got {}",
                config.max_outstanding
            )));
        }
        if config.max_attempts == 0 {
            return Err(FabricError::Config(
                "max_attempts must be at least 1".into(),
            ));
        }
        if !(0.0..=1.0).contains(&config.crc_error_rate) {
            return Err(FabricError::Config(format!(
                "crc_error_rate must be a probability in [0, 1], got {}",
                config.crc_error_rate
            )));
        }
        let mut channels = Vec::with_capacity(topology.links().len() * 2);
        for l in topology.links() {
            for (_from, to) in [(l.a, l.b), (l.b, l.a)] {
                channels.push(Channel {
                    plane: l.plane,
                    to,
                    bandwidth: l.params.bandwidth,
                    latency: l.params.latency,
                    header_time: l
                        .params
                        .bandwidth
                        .serialization(crate::packet::HEADER_LEN as u64),
                    up: true,
                    epoch: 0,
                    busy_until: Instant::ZERO,
                    credits: config.buffer_slots,
                    pending_credits: Vec::new(),
                    queue: VecDeque::new(),
                    wake: None,
                    train: None,
                    counters: ChannelCounters::default(),
                });
            }
        }
        let out_of = |port: PortRef| -> Option<ChannelId> {
            let (link, _) = topology.attached(port)?;
            let l = &topology.links()[link];
            Some(if l.a == port {
                2 * link as u32
            } else {
                2 * link as u32 + 1
            })
        };
        let router_out = topology
            .routers()
            .iter()
            .map(|r| {
                (0..r.ports)
                    .map(|p| out_of(PortRef::router(r.id, p)))
                    .collect()
            })
            .collect();
        let routers = topology
            .routers()
            .iter()
            .map(|r| Router {
                plane: r.plane,
                up: true,
                counters: RouterCounters::default(),
            })
            .collect();
        let mut endpoints = Vec::new();
        for e in topology.endpoints() {
            endpoints.push(Endpoint {
                id: e.id,
                up: true,
                memory: ProcessorMemory::anonymous(config.memory_size)?,
                avt: Avt::new(config.avt_capacity)?,
                interrupts: InterruptQueue::new(config.interrupt_queue),
                out: [
                    out_of(PortRef::endpoint(e.id, Plane::X)),
                    out_of(PortRef::endpoint(e.id, Plane::Y)),
                ],
                dma: DmaEngine::new(),
                counters: EndpointCounters::default(),
            });
        }
        Ok(Fabric {
            topology,
            config,
            channels,
            routers,
            endpoints,
            router_out,
            packets: Vec::new(),
            free_packets: Vec::new(),
            buffers: BufferPool::default(),
            routes: Vec::new(),
            route_index: std::collections::HashMap::new(),
            train_spares: train::TrainSpares::default(),
            rng,
            completions: Vec::new(),
            trains: TrainTable::default(),
            force_packet_level: false,
            chain_across_requesters: true,
            signals: Vec::new(),
            capture: None,
        })
    }

    /// The topology.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The configuration.
    pub fn config(&self) -> &FabricConfig {
        &self.config
    }

    /// Changes the probability that a packet is corrupted crossing one
    /// link (a fault, from now on); refuses a value outside [0, 1].
    pub fn set_crc_error_rate(&mut self, p: f64) -> Result<(), String> {
        if !(0.0..=1.0).contains(&p) {
            return Err(format!(
                "crc_error_rate must be a probability in [0, 1], got {p}"
            ));
        }
        self.config.crc_error_rate = p;
        Ok(())
    }

    /// Turns the transaction-level fast path off (for equivalence tests and
    /// packet captures) or back on (if the configuration allows it).
    pub fn set_packet_level(&mut self, on: bool) {
        self.force_packet_level = on;
    }

    /// Lets a train follow another requester's train (the default) or not,
    /// in which case the newcomer runs packet by packet and splits it.
    #[cfg(test)]
    pub(crate) fn set_chain_across_requesters(&mut self, on: bool) {
        self.chain_across_requesters = on;
    }

    /// Starts or stops recording every packet delivered to an endpoint
    /// (requests and responses, after the CRC check). Capturing needs packet
    /// bytes, so it also turns trains off while on.
    pub fn set_capture(&mut self, on: bool) {
        self.capture = on.then(Vec::new);
    }

    /// Takes the packets captured so far, in delivery order.
    pub fn take_captured(&mut self) -> Vec<CapturedPacket> {
        self.capture
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Number of engine components the fabric uses (endpoints, channels,
    /// routers): a larger world numbers its own components from here.
    pub fn component_count(&self) -> u32 {
        (self.endpoints.len() + self.channels.len() + self.routers.len()) as u32
    }

    /// Moves the endpoints that received an interrupt since the last call
    /// into `out` (in the order the interrupts were raised; an endpoint may
    /// appear more than once). Their entries are read with
    /// [`Fabric::pop_interrupt`].
    pub fn take_signals(&mut self, out: &mut Vec<EndpointId>) {
        out.append(&mut self.signals);
    }

    /// True when interrupts were raised or transfers completed since they
    /// were last taken: a world checks this after every fabric event.
    pub fn has_news(&self) -> bool {
        !self.signals.is_empty() || !self.completions.is_empty()
    }

    /// Moves the DMA completions recorded so far into `out`, in completion order.
    pub fn take_completions_into(&mut self, out: &mut Vec<DmaCompletion>) {
        out.append(&mut self.completions);
    }

    fn ep_index(&self, id: EndpointId) -> Result<usize, FabricError> {
        self.topology
            .endpoint_index(id)
            .ok_or(FabricError::UnknownEndpoint(id))
    }

    fn component_of_endpoint(&self, idx: usize) -> ComponentId {
        ComponentId(idx as u32)
    }

    fn component_of_router(&self, r: RouterId) -> ComponentId {
        ComponentId(self.endpoints.len() as u32 + self.channels.len() as u32 + r.0)
    }

    fn component_of_channel(&self, ch: ChannelId) -> ComponentId {
        ComponentId(self.endpoints.len() as u32 + ch)
    }

    /// The memory of an endpoint.
    pub fn memory(&self, id: EndpointId) -> Result<&ProcessorMemory, FabricError> {
        Ok(&self.endpoints[self.ep_index(id)?].memory)
    }

    /// The memory of an endpoint, for its owner to write (the processor's
    /// own stores; not a fabric access).
    pub fn memory_mut(&mut self, id: EndpointId) -> Result<&mut ProcessorMemory, FabricError> {
        let i = self.ep_index(id)?;
        Ok(&mut self.endpoints[i].memory)
    }

    /// Whether an endpoint is up.
    pub fn endpoint_up(&self, id: EndpointId) -> Result<bool, FabricError> {
        Ok(self.endpoints[self.ep_index(id)?].up)
    }

    /// Opens a DMA window in `owner`'s memory for `requester`. Splits any
    /// train that targets `owner` (its validation could change).
    pub fn avt_register<S: Scheduler<FabricEvent>>(
        &mut self,
        sched: &mut S,
        owner: EndpointId,
        requester: EndpointId,
        local: ProcAddr,
        len: u32,
        access: Access,
    ) -> Result<WindowKey, FabricError> {
        let i = self.ep_index(owner)?;
        self.ep_index(requester)?;
        self.split_trains_targeting(sched, owner);
        let mem_len = self.endpoints[i].memory.len();
        Ok(self.endpoints[i]
            .avt
            .register(requester, local, len, access, mem_len)?)
    }

    /// Closes a DMA window; the key goes stale.
    pub fn avt_unregister<S: Scheduler<FabricEvent>>(
        &mut self,
        sched: &mut S,
        owner: EndpointId,
        key: WindowKey,
    ) -> Result<AvtEntry, FabricError> {
        let i = self.ep_index(owner)?;
        self.split_trains_targeting(sched, owner);
        Ok(self.endpoints[i].avt.unregister(key)?)
    }

    /// The AVT of an endpoint (read-only).
    pub fn avt(&self, owner: EndpointId) -> Result<&Avt, FabricError> {
        Ok(&self.endpoints[self.ep_index(owner)?].avt)
    }

    /// Takes the oldest interrupt entry of an endpoint.
    pub fn pop_interrupt(
        &mut self,
        owner: EndpointId,
    ) -> Result<Option<InterruptEntry>, FabricError> {
        let i = self.ep_index(owner)?;
        Ok(self.endpoints[i].interrupts.pop())
    }

    /// Takes the DMA completions recorded so far, in completion order.
    pub fn take_completions(&mut self) -> Vec<DmaCompletion> {
        std::mem::take(&mut self.completions)
    }

    /// True when no packet is in flight, no train runs and no transfer is pending.
    pub fn is_idle(&self) -> bool {
        self.free_packets.len() == self.packets.len()
            && self.trains.is_empty()
            && self.endpoints.iter().all(|e| e.dma.is_idle())
    }

    /// A snapshot of every counter.
    pub fn counters(&self) -> FabricCounters {
        FabricCounters {
            channels: self
                .channels
                .iter()
                .enumerate()
                .map(|(i, c)| (i / 2, (i % 2) as u8, c.plane, c.counters))
                .collect(),
            routers: self
                .routers
                .iter()
                .enumerate()
                .map(|(i, r)| (RouterId(i as u32), r.plane, r.counters))
                .collect(),
            endpoints: self
                .endpoints
                .iter()
                .map(|e| {
                    let c = e.avt.counters();
                    let mut nacks = [0u64; 8];
                    for r in NackReason::ALL {
                        nacks[r.code() as usize] = c.nacks(r);
                    }
                    (
                        e.id,
                        e.counters,
                        AvtSummary {
                            validated: c.validated(),
                            nacks,
                        },
                    )
                })
                .collect(),
        }
    }

    // ----- packets -----

    fn alloc_packet(&mut self, p: InFlight) -> PacketSlot {
        if let Some(s) = self.free_packets.pop() {
            self.packets[s as usize] = Some(p);
            s
        } else {
            self.packets.push(Some(p));
            (self.packets.len() - 1) as PacketSlot
        }
    }

    /// Takes a packet out of its slot; the caller recycles its buffer.
    fn take_packet(&mut self, s: PacketSlot) -> Option<InFlight> {
        let p = self.packets.get_mut(s as usize)?.take();
        if p.is_some() {
            self.free_packets.push(s);
        }
        p
    }

    /// Frees a packet's slot and recycles its buffer.
    fn free_packet(&mut self, s: PacketSlot) -> Option<ChannelId> {
        let p = self.take_packet(s)?;
        self.buffers.recycle(p.bytes);
        p.holds_slot
    }

    /// Drops a packet in the network, returning the buffer slot it held.
    fn drop_packet<S: Scheduler<FabricEvent>>(&mut self, sched: &mut S, s: PacketSlot) {
        if self.packets.get(s as usize).is_some_and(Option::is_some) {
            sched.note(ComponentId(u32::MAX), note::DROP, (s as u64, 0));
            if let Some(ch) = self.free_packet(s) {
                self.return_credit(sched, ch);
            }
        }
    }

    fn return_credit<S: Scheduler<FabricEvent>>(&mut self, sched: &mut S, ch: ChannelId) {
        let at = sched.now() + self.channels[ch as usize].latency;
        self.schedule_credit(sched, ch, at);
    }

    /// A credit for `ch` leaves the far end now and reaches the sender at `at`.
    fn schedule_credit<S: Scheduler<FabricEvent>>(
        &mut self,
        sched: &mut S,
        ch: ChannelId,
        at: Instant,
    ) {
        let c = &mut self.channels[ch as usize];
        c.pending_credits.push(at);
        // Only a packet waiting for this credit needs an event.
        if !c.queue.is_empty() && c.train.is_none() {
            let at = at.max(c.busy_until);
            self.arm_wake(sched, ch, at);
        }
    }

    /// Makes sure `ch` is looked at again at `at` (or earlier).
    fn arm_wake<S: Scheduler<FabricEvent>>(&mut self, sched: &mut S, ch: ChannelId, at: Instant) {
        let c = &mut self.channels[ch as usize];
        if c.wake.is_some_and(|t| t <= at) {
            return;
        }
        c.wake = Some(at);
        let comp = self.component_of_channel(ch);
        sched.schedule(at, comp, FabricEvent::LinkFree { ch });
    }

    /// Puts an encoded packet onto an endpoint's output channel.
    fn inject<S: Scheduler<FabricEvent>>(
        &mut self,
        sched: &mut S,
        ep: usize,
        plane: Plane,
        bytes: Vec<u8>,
    ) {
        let slot = self.alloc_packet(InFlight {
            bytes,
            plane,
            tail_here: sched.now(),
            holds_slot: None,
            waited: false,
        });
        self.send_from_endpoint(sched, ep, plane, slot);
    }

    /// Sends a packet already in a slot out of an endpoint's port on `plane`.
    fn send_from_endpoint<S: Scheduler<FabricEvent>>(
        &mut self,
        sched: &mut S,
        ep: usize,
        plane: Plane,
        slot: PacketSlot,
    ) {
        self.endpoints[ep].counters.packets_out += 1;
        let Some(ch) = self.endpoints[ep].out[plane.index()] else {
            // The topology has no such plane; callers choose existing planes.
            self.free_packet(slot);
            return;
        };
        if let Some(p) = self.packets[slot as usize].as_mut() {
            p.tail_here = sched.now(); // the whole packet is in the sender's memory
        }
        self.request_output(sched, slot, ch);
    }

    fn request_output<S: Scheduler<FabricEvent>>(
        &mut self,
        sched: &mut S,
        pkt: PacketSlot,
        ch: ChannelId,
    ) {
        if let Some(t) = self.channels[ch as usize].train {
            self.split_train(sched, t, train::SplitCause::Contention);
        }
        let c = &mut self.channels[ch as usize];
        if !c.up {
            c.counters.dropped_down += 1;
            self.drop_packet(sched, pkt);
            return;
        }
        c.queue.push_back(pkt);
        self.try_grant(sched, ch);
    }

    fn try_grant<S: Scheduler<FabricEvent>>(&mut self, sched: &mut S, ch: ChannelId) {
        let now = sched.now();
        loop {
            let c = &mut self.channels[ch as usize];
            if !c.up || c.train.is_some() {
                return;
            }
            let Some(&pkt) = c.queue.front() else { return };
            c.reclaim(now);
            if c.busy_until > now || c.credits == 0 {
                // Wait for the tail now on the wire, then for the earliest
                // credit in flight. With no credit in flight, the packet that
                // holds one arms the wake-up when it leaves the buffer.
                let at = if c.credits > 0 {
                    Some(c.busy_until)
                } else {
                    c.pending_credits.iter().min().map(|&t| t.max(c.busy_until))
                };
                if let Some(p) = self.packets[pkt as usize].as_mut() {
                    p.waited = true;
                }
                if let Some(at) = at {
                    self.arm_wake(sched, ch, at);
                }
                return;
            }
            c.queue.pop_front();
            c.credits -= 1;
            let Some(p) = self.packets[pkt as usize].as_mut() else {
                continue;
            };
            let size = p.bytes.len() as u64;
            let ser = c.bandwidth.serialization(size);
            let end = (now + ser).max(p.tail_here);
            c.busy_until = end;
            c.counters.packets += 1;
            c.counters.bytes += size;
            c.counters.busy_ps += (end - now).as_ps();
            if p.waited {
                c.counters.waits += 1;
            }
            p.waited = false;
            let head_next = now + c.latency + c.header_time;
            p.tail_here = end + c.latency;
            let epoch = c.epoch;
            let latency = c.latency;
            let to = c.to;
            let released = p.holds_slot.take();
            // Seeded CRC-error injection: flip one bit somewhere in the packet.
            if self.config.crc_error_rate > 0.0 {
                let draw = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                if draw < self.config.crc_error_rate {
                    let bit = self.rng.next_u64() % (size * 8);
                    p.bytes[(bit / 8) as usize] ^= 1 << (bit % 8);
                    self.channels[ch as usize].counters.corrupted += 1;
                    sched.note(
                        self.component_of_channel(ch),
                        note::CORRUPT,
                        (pkt as u64, bit),
                    );
                }
            }
            let comp = self.component_of_channel(ch);
            if let Some(in_ch) = released {
                // The tail leaves this router's input buffer at `end`.
                let at = end + self.channels[in_ch as usize].latency;
                self.schedule_credit(sched, in_ch, at);
            }
            match to.node {
                NodeRef::Router(_) => {
                    sched.schedule(head_next, comp, FabricEvent::HeadArrive { pkt, ch, epoch })
                }
                NodeRef::Endpoint(_) => sched.schedule(
                    end + latency,
                    comp,
                    FabricEvent::TailArrive { pkt, ch, epoch },
                ),
            }
        }
    }

    /// Handles one fabric event. Call with every event the engine fires for the fabric.
    pub fn handle<S: Scheduler<FabricEvent>>(&mut self, sched: &mut S, event: FabricEvent) {
        match event {
            FabricEvent::HeadArrive { pkt, ch, epoch } => {
                self.on_head_arrive(sched, pkt, ch, epoch)
            }
            FabricEvent::Request { pkt, ch } => {
                if self.packets.get(pkt as usize).is_some_and(Option::is_some) {
                    self.request_output(sched, pkt, ch)
                }
            }
            FabricEvent::LinkFree { ch } => {
                let c = &mut self.channels[ch as usize];
                if c.wake == Some(sched.now()) {
                    c.wake = None;
                    self.try_grant(sched, ch);
                }
            }
            FabricEvent::TailArrive { pkt, ch, epoch } => {
                self.on_tail_arrive(sched, pkt, ch, epoch)
            }
            FabricEvent::Respond { pkt, ep, plane } => {
                if self.endpoints[ep as usize].up {
                    self.send_from_endpoint(sched, ep as usize, plane, pkt);
                } else {
                    self.free_packet(pkt);
                }
            }
            FabricEvent::Timeout { ep } => self.on_timer(sched, ep as usize),
            FabricEvent::TrainAck { ep, tid, serial } => {
                self.on_train_ack(sched, ep as usize, tid, serial)
            }
            FabricEvent::TrainDone { train } => self.finish_train(sched, train),
            FabricEvent::TrainLand { train } => self.land_train(sched, train),
        }
    }

    fn on_head_arrive<S: Scheduler<FabricEvent>>(
        &mut self,
        sched: &mut S,
        pkt: PacketSlot,
        ch: ChannelId,
        epoch: u32,
    ) {
        let c = &self.channels[ch as usize];
        if c.epoch != epoch {
            self.channels[ch as usize].counters.dropped_down += 1;
            self.drop_packet(sched, pkt);
            return;
        }
        let NodeRef::Router(r) = c.to.node else {
            return;
        };
        let Some(p) = self.packets.get_mut(pkt as usize).and_then(Option::as_mut) else {
            return;
        };
        p.holds_slot = Some(ch);
        if !self.routers[r.0 as usize].up {
            self.routers[r.0 as usize].counters.dropped_down += 1;
            self.drop_packet(sched, pkt);
            return;
        }
        // The router reads the destination from the header bytes as they are.
        let dst = Packet::new_unchecked(&p.bytes[..]).dst_id();
        let out = EndpointId::new(dst)
            .and_then(|d| self.topology.route(r, d))
            .and_then(|port| self.router_out[r.0 as usize][port as usize]);
        match out {
            Some(out) => {
                self.routers[r.0 as usize].counters.routed += 1;
                let at = sched.now() + self.config.path_formation;
                sched.schedule(
                    at,
                    self.component_of_router(r),
                    FabricEvent::Request { pkt, ch: out },
                );
            }
            None => {
                self.routers[r.0 as usize].counters.unroutable += 1;
                self.drop_packet(sched, pkt);
            }
        }
    }

    fn on_tail_arrive<S: Scheduler<FabricEvent>>(
        &mut self,
        sched: &mut S,
        pkt: PacketSlot,
        ch: ChannelId,
        epoch: u32,
    ) {
        let c = &self.channels[ch as usize];
        let NodeRef::Endpoint(id) = c.to.node else {
            return;
        };
        if c.epoch != epoch {
            self.channels[ch as usize].counters.dropped_down += 1;
            self.free_packet(pkt);
            return;
        }
        // The endpoint consumes the packet: its buffer slot is free again.
        self.return_credit(sched, ch);
        let Some(p) = self.take_packet(pkt) else {
            return;
        };
        self.consume(sched, id, &p);
        self.buffers.recycle(p.bytes);
    }

    /// Endpoint `id` takes in packet `p`: a request is served and answered,
    /// a response ends its transaction.
    fn consume<S: Scheduler<FabricEvent>>(&mut self, sched: &mut S, id: EndpointId, p: &InFlight) {
        let ep = self
            .topology
            .endpoint_index(id)
            .expect("channel ends at a known endpoint");
        if !self.endpoints[ep].up {
            self.endpoints[ep].counters.dropped_down += 1;
            return;
        }
        let limits = self.config.limits;
        let repr = match Packet::new_checked(&p.bytes[..])
            .map_err(|_| ())
            .and_then(|pk| PacketRepr::parse(&pk, limits).map_err(|_| ()))
        {
            Ok(r) => r,
            Err(()) => {
                self.endpoints[ep].counters.crc_drops += 1;
                return;
            }
        };
        if repr.dst != id {
            self.endpoints[ep].counters.misdelivered += 1;
            return;
        }
        let plane = p.plane;
        if let Some(cap) = self.capture.as_mut() {
            cap.push(CapturedPacket {
                at: sched.now(),
                plane,
                bytes: p.bytes.clone(),
            });
        }
        match repr.kind {
            PacketKind::ReadRequest { .. } | PacketKind::WriteRequest => {
                self.endpoints[ep].counters.requests_in += 1;
                let response = self.serve_request(sched, ep, &repr);
                let at = sched.now() + self.config.turnaround;
                let now = sched.now();
                let slot = self.alloc_packet(InFlight {
                    bytes: response,
                    plane,
                    tail_here: now,
                    holds_slot: None,
                    waited: false,
                });
                sched.schedule(
                    at,
                    self.component_of_endpoint(ep),
                    FabricEvent::Respond {
                        pkt: slot,
                        ep: ep as u32,
                        plane,
                    },
                );
            }
            PacketKind::ReadResponse | PacketKind::WriteAck | PacketKind::Nack(_) => {
                self.endpoints[ep].counters.responses_in += 1;
                self.on_response(sched, ep, &repr);
            }
        }
    }

    /// A target validates a request against its AVT, performs it and builds the response.
    fn serve_request<S: Scheduler<FabricEvent>>(
        &mut self,
        sched: &mut S,
        ep: usize,
        req: &PacketRepr<'_>,
    ) -> Vec<u8> {
        let now = sched.now();
        let e = &mut self.endpoints[ep];
        let (op, len) = match req.kind {
            PacketKind::ReadRequest { len } => (Op::Read, len as u32),
            _ => (Op::Write, req.payload.len() as u32),
        };
        // AVT registration keeps every window inside memory, so the memory
        // errors below cannot happen; they are answered as outside-window NACKs
        // rather than trusted away.
        let buffers = &mut self.buffers;
        let nack = |buffers: &mut BufferPool, reason: NackReason| {
            buffers.encode(PacketRepr::nack(
                req.src, req.dst, req.tid, req.addr, reason,
            ))
        };
        let t = match e.avt.validate(req.src, req.addr, len, op) {
            Ok(t) => t,
            Err(reason) => return nack(buffers, reason),
        };
        match op {
            Op::Read => match e.memory.slice(t.local, len as u64) {
                Ok(data) => buffers.encode(PacketRepr::read_response(
                    req.src, req.dst, req.tid, req.addr, data,
                )),
                Err(_) => nack(buffers, NackReason::OutsideWindow),
            },
            Op::Write => {
                if e.memory.write(t.local, req.payload).is_err() {
                    return nack(buffers, NackReason::OutsideWindow);
                }
                if t.interrupt {
                    e.counters.interrupts += 1;
                    let entry = InterruptEntry {
                        at: now,
                        requester: req.src,
                        key: req.addr.key(),
                        offset: req.addr.offset(),
                        len,
                    };
                    // A full queue counts the overflow itself (see `counters()`).
                    e.interrupts.push(entry);
                    self.signals.push(e.id);
                }
                buffers.encode(PacketRepr::write_ack(req.src, req.dst, req.tid, req.addr))
            }
        }
    }

    // ----- faults -----

    fn channels_of(&self, target: FaultTarget) -> Result<Vec<ChannelId>, FabricError> {
        let links = self.topology.links();
        let mut out = Vec::new();
        match target {
            FaultTarget::Endpoint(e) => {
                self.ep_index(e)?;
            }
            FaultTarget::Link(l) => {
                if l >= links.len() {
                    return Err(FabricError::UnknownLink(l, links.len()));
                }
                out.extend([2 * l as u32, 2 * l as u32 + 1]);
            }
            FaultTarget::Router(r) => {
                if r.0 as usize >= self.routers.len() {
                    return Err(FabricError::UnknownRouter(r));
                }
                for (i, l) in links.iter().enumerate() {
                    if l.a.node == NodeRef::Router(r) || l.b.node == NodeRef::Router(r) {
                        out.extend([2 * i as u32, 2 * i as u32 + 1]);
                    }
                }
            }
            FaultTarget::Plane(p) => {
                if !self.topology.planes().contains(&p) {
                    return Err(FabricError::UnknownPlane(p));
                }
                for (i, l) in links.iter().enumerate() {
                    if l.plane == p {
                        out.extend([2 * i as u32, 2 * i as u32 + 1]);
                    }
                }
            }
        }
        Ok(out)
    }

    fn routers_of(&self, target: FaultTarget) -> Vec<usize> {
        match target {
            FaultTarget::Router(r) => vec![r.0 as usize],
            FaultTarget::Plane(p) => (0..self.routers.len())
                .filter(|&i| self.routers[i].plane == p)
                .collect(),
            _ => vec![],
        }
    }

    /// Fails a component now. Packets on failed links and routers are lost;
    /// a failed endpoint stops answering and its own transfers end with
    /// [`DmaError::RequesterDown`]; trains crossing the component are split.
    pub fn fail<S: Scheduler<FabricEvent>>(
        &mut self,
        sched: &mut S,
        target: FaultTarget,
    ) -> Result<(), FabricError> {
        let chans = self.channels_of(target)?;
        let key = match target {
            FaultTarget::Endpoint(e) => e.raw() as u64,
            FaultTarget::Link(l) => l as u64,
            FaultTarget::Router(r) => r.0 as u64,
            FaultTarget::Plane(p) => p as u64,
        };
        sched.note(
            ComponentId(u32::MAX),
            note::FAULT,
            (target_kind(target), key),
        );
        // Split trains that use the component.
        let routers = self.routers_of(target);
        let routes = &self.routes;
        let affected = self.trains.ids_where(|t| {
            let route = &routes[t.route() as usize];
            route.channels().iter().any(|c| chans.contains(c))
                || route.routers().iter().any(|r| routers.contains(r))
                || matches!(target, FaultTarget::Endpoint(e) if t.involves(e))
        });
        for t in affected {
            self.split_train(sched, t, train::SplitCause::Fault);
        }
        for &ch in &chans {
            let c = &mut self.channels[ch as usize];
            c.up = false;
            c.epoch = c.epoch.wrapping_add(1);
            c.pending_credits.clear();
            c.wake = None;
            let queued: Vec<PacketSlot> = c.queue.drain(..).collect();
            c.counters.dropped_down += queued.len() as u64;
            for p in queued {
                self.drop_packet(sched, p);
            }
        }
        for r in routers {
            self.routers[r].up = false;
        }
        if let FaultTarget::Endpoint(e) = target {
            let i = self.ep_index(e)?;
            self.endpoints[i].up = false;
            let now = sched.now();
            let aborted = self.endpoints[i].dma.abort_all();
            for mut c in aborted {
                c.finished = now;
                self.endpoints[i].counters.dma.failed += 1;
                sched.note(self.component_of_endpoint(i), note::DMA_DONE, (c.id.0, 1));
                self.completions.push(c);
            }
        }
        Ok(())
    }

    /// Restores a failed component. Links come back idle with full credits.
    pub fn restore<S: Scheduler<FabricEvent>>(
        &mut self,
        sched: &mut S,
        target: FaultTarget,
    ) -> Result<(), FabricError> {
        let chans = self.channels_of(target)?;
        sched.note(
            ComponentId(u32::MAX),
            note::RESTORE,
            (target_kind(target), 0),
        );
        let now = sched.now();
        for r in self.routers_of(target) {
            self.routers[r].up = true;
        }
        for &ch in &chans {
            // A link attached to a router that is still down stays down.
            let link = &self.topology.links()[ch as usize / 2];
            let router_down = [link.a.node, link.b.node]
                .iter()
                .any(|n| matches!(n, NodeRef::Router(r) if !self.routers[r.0 as usize].up));
            if router_down {
                continue;
            }
            let c = &mut self.channels[ch as usize];
            if !c.up {
                c.up = true;
                c.epoch = c.epoch.wrapping_add(1);
                c.credits = self.config.buffer_slots;
                c.pending_credits.clear();
                c.wake = None;
                c.busy_until = now;
            }
        }
        if let FaultTarget::Endpoint(e) = target {
            let i = self.ep_index(e)?;
            self.endpoints[i].up = true;
        }
        Ok(())
    }

    // ----- DMA -----

    /// Starts a DMA transfer from `requester`. The transfer runs as the
    /// engine advances; its [`DmaCompletion`] appears in
    /// [`Fabric::take_completions`].
    pub fn start_dma<S: Scheduler<FabricEvent>>(
        &mut self,
        sched: &mut S,
        requester: EndpointId,
        req: DmaRequest,
    ) -> Result<TransferId, DmaError> {
        let ep = self
            .topology
            .endpoint_index(requester)
            .ok_or(DmaError::UnknownEndpoint(requester))?;
        self.topology
            .endpoint_index(req.target)
            .ok_or(DmaError::UnknownEndpoint(req.target))?;
        if req.target == requester {
            return Err(DmaError::SelfTransfer);
        }
        if !self.endpoints[ep].up {
            return Err(DmaError::RequesterDown);
        }
        let (local, remote) = req.op.addresses();
        self.endpoints[ep]
            .memory
            .check_range(local, req.len)
            .map_err(|_| DmaError::LocalOutOfBounds {
                local,
                len: req.len,
            })?;
        if (remote.offset() as u64)
            .checked_add(req.len)
            .is_none_or(|end| end > u32::MAX as u64 + 1)
        {
            return Err(DmaError::RemoteRange {
                remote,
                len: req.len,
            });
        }
        let plane = match req.plane {
            Some(p) if self.topology.planes().contains(&p) => p,
            Some(p) => return Err(DmaError::NoSuchPlane(p)),
            None => self.topology.planes()[0],
        };
        let id = self.endpoints[ep].dma.next_id(ep);
        let now = sched.now();
        sched.note(
            self.component_of_endpoint(ep),
            note::DMA_START,
            (id.0, req.len),
        );
        self.endpoints[ep].counters.dma.transfers += 1;
        let packets = req
            .len
            .div_ceil(self.config.limits.max_payload as u64)
            .max(1);
        self.endpoints[ep]
            .dma
            .add(id, requester, req, plane, now, packets);
        self.pump(sched, ep);
        Ok(id)
    }
}

fn target_kind(t: FaultTarget) -> u64 {
    match t {
        FaultTarget::Endpoint(_) => 1,
        FaultTarget::Link(_) => 2,
        FaultTarget::Router(_) => 3,
        FaultTarget::Plane(_) => 4,
    }
}

/// Buffers of packets that left the network, kept for the next packets so
/// that a packet in flight costs no allocation.
#[derive(Debug, Default)]
pub(crate) struct BufferPool(Vec<Vec<u8>>);

impl BufferPool {
    /// At most this many spare buffers are kept.
    const KEEP: usize = 4096;

    /// Encodes a packet the fabric itself builds into a spare buffer. Its
    /// fields are valid by construction (TIDs below 16, payloads within the
    /// generation's limit), so a failure here is a bug in the model, not bad
    /// input.
    pub(crate) fn encode(
        &mut self,
        repr: Result<PacketRepr<'_>, crate::packet::PacketError>,
    ) -> Vec<u8> {
        let emitted = repr.and_then(|r| {
            let mut buf = self.0.pop().unwrap_or_default();
            buf.clear();
            buf.resize(r.buffer_len(), 0);
            r.emit(&mut buf).map(|()| buf)
        });
        match emitted {
            Ok(v) => v,
            Err(e) => panic!("the fabric built an invalid packet: {e}"),
        }
    }

    /// Gives a buffer back.
    pub(crate) fn recycle(&mut self, buf: Vec<u8>) {
        if self.0.len() < Self::KEEP {
            self.0.push(buf);
        }
    }
}

/// Two distinct elements of a slice, mutably.
pub(crate) fn pair<T>(v: &mut [T], a: usize, b: usize) -> (&mut T, &mut T) {
    assert_ne!(a, b, "pair_mut needs two distinct indices");
    if a < b {
        let (l, r) = v.split_at_mut(b);
        (&mut l[a], &mut r[0])
    } else {
        let (l, r) = v.split_at_mut(a);
        (&mut r[0], &mut l[b])
    }
}

/// A fabric with its own engine: the simplest way to run the fabric alone
/// (tests, benchmarks, tools).
#[derive(Debug)]
pub struct FabricSim {
    /// The engine.
    pub engine: Engine<FabricEvent>,
    /// The fabric.
    pub fabric: Fabric,
}

impl FabricSim {
    /// Builds a fabric and an engine seeded with `seed`.
    pub fn new(topology: Topology, config: FabricConfig, seed: u64) -> Result<Self, FabricError> {
        let engine = Engine::new(seed);
        let rng = engine.rng_stream(RNG_STREAM_FABRIC);
        let fabric = Fabric::new(topology, config, rng)?;
        Ok(FabricSim { engine, fabric })
    }

    /// Current virtual time.
    pub fn now(&self) -> Instant {
        self.engine.now()
    }

    /// Runs events up to and including `until`.
    pub fn run_until(&mut self, until: Instant) {
        while let Some((_, fired)) = self.engine.pop_until(until) {
            if let Fired::Event(_, ev) = fired {
                self.fabric.handle(&mut self.engine, ev);
            }
        }
    }

    /// Runs until no event is left.
    pub fn run_to_idle(&mut self) {
        while let Some((_, fired)) = self.engine.pop() {
            if let Fired::Event(_, ev) = fired {
                self.fabric.handle(&mut self.engine, ev);
            }
        }
    }

    /// Starts a transfer now.
    pub fn start_dma(
        &mut self,
        requester: EndpointId,
        req: DmaRequest,
    ) -> Result<TransferId, DmaError> {
        self.fabric.start_dma(&mut self.engine, requester, req)
    }

    /// Runs one transfer to completion and returns its completion.
    pub fn dma(
        &mut self,
        requester: EndpointId,
        req: DmaRequest,
    ) -> Result<DmaCompletion, DmaError> {
        let id = self.start_dma(requester, req)?;
        loop {
            let done = self.fabric.take_completions();
            let mut found = None;
            for c in done {
                if c.id == id {
                    found = Some(c);
                } else {
                    self.fabric.completions.push(c);
                }
            }
            if let Some(c) = found {
                return Ok(c);
            }
            match self.engine.pop() {
                Some((_, Fired::Event(_, ev))) => self.fabric.handle(&mut self.engine, ev),
                Some(_) => {}
                None => return Err(DmaError::Lost),
            }
        }
    }

    /// Opens a window in `owner` for `requester`.
    pub fn register(
        &mut self,
        owner: EndpointId,
        requester: EndpointId,
        local: ProcAddr,
        len: u32,
        access: Access,
    ) -> Result<WindowKey, FabricError> {
        self.fabric
            .avt_register(&mut self.engine, owner, requester, local, len, access)
    }

    /// Fails a component now.
    pub fn fail(&mut self, target: FaultTarget) -> Result<(), FabricError> {
        self.fabric.fail(&mut self.engine, target)
    }

    /// Restores a component now.
    pub fn restore(&mut self, target: FaultTarget) -> Result<(), FabricError> {
        self.fabric.restore(&mut self.engine, target)
    }

    /// The trace hash so far.
    pub fn trace_hash(&self) -> u64 {
        self.engine.trace_hash()
    }
}

#[cfg(test)]
mod tests;
