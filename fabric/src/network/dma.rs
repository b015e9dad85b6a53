//! The DMA (block transfer) engine of every endpoint: splits a transfer into
//! packets of at most the generation's payload, keeps up to
//! `max_outstanding` transactions in flight (one per 4-bit TID), reassembles
//! read responses into local memory, retries a timed-out packet on the
//! other plane, and reports one [`DmaCompletion`] per transfer.

use std::collections::VecDeque;

use super::{Fabric, FabricEvent, note};
use crate::engine::Scheduler;
use crate::ids::{EndpointId, FabricAddr, NackReason, Plane};
use crate::memory::ProcAddr;
use crate::packet::{PacketKind, PacketRepr};
use crate::time::Instant;

/// Names one DMA transfer: the requester's endpoint index in the top 16
/// bits, and below them the requester's own count of the transfers it
/// started (from 1, 48 bits: 2.8·10¹⁴ transfers per requester). So one
/// requester's IDs are consecutive, in the order its transfers started.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransferId(pub u64);

impl TransferId {
    const SEQ_BITS: u32 = 48;

    /// Transfer `seq` of the requester with endpoint index `requester`.
    pub fn new(requester: u16, seq: u64) -> Self {
        TransferId(u64::from(requester) << Self::SEQ_BITS | (seq & ((1 << Self::SEQ_BITS) - 1)))
    }

    /// The requester's endpoint index.
    pub fn requester_index(self) -> u16 {
        (self.0 >> Self::SEQ_BITS) as u16
    }
}

/// What a transfer does.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum DmaOp {
    /// Copy `len` bytes from the requester's memory at `local` to the
    /// target's window at `remote` (write requests).
    Write {
        /// Source in the requester's memory.
        local: ProcAddr,
        /// Destination window address in the target.
        remote: FabricAddr,
    },
    /// Copy `len` bytes from the target's window at `remote` into the
    /// requester's memory at `local` (read requests).
    Read {
        /// Destination in the requester's memory.
        local: ProcAddr,
        /// Source window address in the target.
        remote: FabricAddr,
    },
}

impl DmaOp {
    /// (local, remote) addresses.
    pub fn addresses(&self) -> (ProcAddr, FabricAddr) {
        match *self {
            DmaOp::Write { local, remote } | DmaOp::Read { local, remote } => (local, remote),
        }
    }

    /// True for writes.
    pub fn is_write(&self) -> bool {
        matches!(self, DmaOp::Write { .. })
    }
}

/// A transfer to start.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct DmaRequest {
    /// The endpoint whose memory is reached through its AVT.
    pub target: EndpointId,
    /// Read or write, with addresses.
    pub op: DmaOp,
    /// Bytes to move (any length; 0 sends one empty request that still
    /// goes through AVT validation).
    pub len: u64,
    /// Plane to start on (the fabric's first plane if `None`).
    pub plane: Option<Plane>,
}

impl DmaRequest {
    /// A write of `len` bytes from `local` (requester) to `remote` (target window),
    /// starting on the fabric's first plane.
    pub fn write(target: EndpointId, local: ProcAddr, remote: FabricAddr, len: u64) -> Self {
        DmaRequest {
            target,
            op: DmaOp::Write { local, remote },
            len,
            plane: None,
        }
    }

    /// A read of `len` bytes from `remote` (target window) into `local` (requester),
    /// starting on the fabric's first plane.
    pub fn read(target: EndpointId, local: ProcAddr, remote: FabricAddr, len: u64) -> Self {
        DmaRequest {
            target,
            op: DmaOp::Read { local, remote },
            len,
            plane: None,
        }
    }

    /// The same request, starting on `plane`.
    pub fn on_plane(self, plane: Plane) -> Self {
        DmaRequest {
            plane: Some(plane),
            ..self
        }
    }
}

/// The fabric address of byte `offset` of a transfer whose window address is
/// `remote`. Transfers are checked at start to stay inside the window's
/// 32-bit offset space, so the sum cannot wrap.
pub(super) fn packet_addr(remote: FabricAddr, offset: u64) -> FabricAddr {
    FabricAddr::new(remote.key(), remote.offset().wrapping_add(offset as u32))
}

/// Why a transfer failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DmaError {
    /// An endpoint ID that is not in the topology.
    #[error("{0} is not an endpoint of this fabric")]
    UnknownEndpoint(EndpointId),
    /// Requester and target are the same endpoint.
    #[error("a DMA transfer needs two different endpoints")]
    SelfTransfer,
    /// The requester is down (or went down while the transfer ran).
    #[error("the requester is down")]
    RequesterDown,
    /// The local range is outside the requester's memory.
    #[error("local range {local}+{len} is outside the requester's memory")]
    LocalOutOfBounds {
        /// Start.
        local: ProcAddr,
        /// Length.
        len: u64,
    },
    /// The remote range leaves the window's 32-bit offset space.
    #[error("remote range {remote}+{len} runs past the end of a window's 4 GiB address space")]
    RemoteRange {
        /// Start.
        remote: FabricAddr,
        /// Length.
        len: u64,
    },
    /// A plane the fabric does not have.
    #[error("plane {0} is not part of this fabric")]
    NoSuchPlane(Plane),
    /// The target refused a packet.
    #[error("target refused the packet at offset {offset}: {reason}")]
    Nacked {
        /// Why.
        reason: NackReason,
        /// Offset of the refused packet within the transfer.
        offset: u64,
    },
    /// A packet got no response after every attempt on every plane.
    #[error(
        "no response for the packet at offset {offset} after {attempts} attempts on planes {planes}"
    )]
    NoPath {
        /// Offset of the packet within the transfer.
        offset: u64,
        /// Attempts made.
        attempts: u8,
        /// Planes tried ("X", "Y" or "X+Y").
        planes: &'static str,
    },
    /// A response of the wrong kind or size.
    #[error("malformed response for the packet at offset {offset}")]
    BadResponse {
        /// Offset of the packet within the transfer.
        offset: u64,
    },
    /// The engine ran dry before the transfer completed (a model bug).
    #[error("the transfer never completed (no event left)")]
    Lost,
}

/// How a transfer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmaCompletion {
    /// The transfer.
    pub id: TransferId,
    /// Who ran it.
    pub requester: EndpointId,
    /// Whose memory it reached.
    pub target: EndpointId,
    /// Bytes requested.
    pub len: u64,
    /// When it started.
    pub started: Instant,
    /// When it ended.
    pub finished: Instant,
    /// Success or the reason for failure.
    pub result: Result<(), DmaError>,
    /// Packets sent again after timeouts.
    pub retries: u32,
    /// Times it moved to the other plane.
    pub failovers: u32,
    /// Whether (part of) it ran as a transaction-level train.
    pub used_train: bool,
}

#[derive(Debug)]
pub(super) struct Transfer {
    pub(super) id: TransferId,
    pub(super) requester: EndpointId,
    pub(super) req: DmaRequest,
    pub(super) plane: Plane,
    pub(super) started: Instant,
    pub(super) total_packets: u64,
    pub(super) next_packet: u64,
    pub(super) acked_packets: u64,
    pub(super) outstanding: u32,
    pub(super) retries: u32,
    pub(super) failovers: u32,
    pub(super) failed: bool,
    pub(super) in_train: Option<super::TrainId>,
    pub(super) used_train: bool,
}

impl Transfer {
    /// (offset, length) of packet `i`.
    pub(super) fn packet(&self, i: u64, max_payload: u64) -> (u64, u32) {
        let off = i * max_payload;
        let len = self.req.len.saturating_sub(off).min(max_payload);
        (off, len as u32)
    }
}

impl Outstanding {
    /// The first attempt of a packet, on `plane`.
    pub(super) fn first(
        transfer: TransferId,
        (offset, len): (u64, u32),
        plane: Plane,
        serial: u32,
        ghost: bool,
    ) -> Self {
        Outstanding {
            transfer,
            offset,
            len,
            plane,
            attempts: 1,
            planes_tried: 1 << plane.index(),
            serial,
            ghost,
            deadline: Instant::MAX,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Outstanding {
    pub(super) transfer: TransferId,
    pub(super) offset: u64,
    pub(super) len: u32,
    pub(super) plane: Plane,
    pub(super) attempts: u8,
    pub(super) planes_tried: u8,
    pub(super) serial: u32,
    /// A train packet committed at a split: its response is already timed.
    pub(super) ghost: bool,
    /// When the attempt times out (unused for a ghost).
    pub(super) deadline: Instant,
}

/// Values by [`TransferId`], for the transfers of one requester. Its IDs are
/// consecutive, so the map is a deque indexed by the distance from the
/// oldest ID held: a lookup is a subtraction, and a removal leaves a hole
/// that is dropped once it reaches the front (transfers mostly end in the
/// order they started). Nothing is moved, searched or hashed.
#[derive(Debug, Clone)]
pub struct TransferMap<V> {
    /// The ID of `entries[0]`.
    base: u64,
    entries: VecDeque<Option<V>>,
    live: usize,
}

impl<V> Default for TransferMap<V> {
    fn default() -> Self {
        TransferMap {
            base: 0,
            entries: VecDeque::new(),
            live: 0,
        }
    }
}

impl<V> TransferMap<V> {
    /// The widest run of IDs [`TransferMap::insert`] skips over (IDs the
    /// requester used for transfers the map does not hold).
    pub const MAX_SKIP: u64 = 1024;

    /// Whether no value is held.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Values held.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Adds `id`'s value. `id` must be newer than every ID held, of the
    /// same requester, and at most [`TransferMap::MAX_SKIP`] IDs past the
    /// newest; otherwise the value is refused and handed back.
    pub fn insert(&mut self, id: TransferId, value: V) -> Result<(), V> {
        if self.entries.is_empty() {
            self.base = id.0;
        } else {
            let Some(next) = self.base.checked_add(self.entries.len() as u64) else {
                return Err(value);
            };
            if id.0 < next
                || id.0 - next > Self::MAX_SKIP
                || id.requester_index() != TransferId(self.base).requester_index()
            {
                return Err(value);
            }
            for _ in next..id.0 {
                self.entries.push_back(None);
            }
        }
        self.entries.push_back(Some(value));
        self.live += 1;
        Ok(())
    }

    fn position(&self, id: TransferId) -> Option<usize> {
        let d = id.0.wrapping_sub(self.base);
        (d < self.entries.len() as u64).then_some(d as usize)
    }

    /// `id`'s value.
    pub fn get(&self, id: &TransferId) -> Option<&V> {
        self.entries[self.position(*id)?].as_ref()
    }

    /// `id`'s value, to change.
    pub fn get_mut(&mut self, id: &TransferId) -> Option<&mut V> {
        let i = self.position(*id)?;
        self.entries[i].as_mut()
    }

    /// Takes `id`'s value out.
    pub fn remove(&mut self, id: &TransferId) -> Option<V> {
        let i = self.position(*id)?;
        let v = self.entries[i].take()?;
        self.live -= 1;
        while self.entries.front().is_some_and(Option::is_none) {
            self.entries.pop_front();
            // Meaningful only while entries remain (an empty map takes
            // the next ID as its base), so past the last ID it may wrap.
            self.base = self.base.wrapping_add(1);
        }
        Some(v)
    }

    /// The values, oldest transfer first.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().flatten()
    }

    /// Every value, oldest transfer first, leaving the map empty.
    pub fn drain(&mut self) -> impl Iterator<Item = V> {
        self.live = 0;
        std::mem::take(&mut self.entries).into_iter().flatten()
    }
}

impl<V> std::ops::Index<&TransferId> for TransferMap<V> {
    type Output = V;

    fn index(&self, id: &TransferId) -> &V {
        self.get(id).expect("a transfer held in the map")
    }
}

#[derive(Debug)]
pub(super) struct DmaEngine {
    pub(super) slots: [Option<Outstanding>; 16],
    /// Transaction IDs held by this requester's trains (one bit per TID):
    /// a split hands them to the train's packets still in flight.
    pub(super) reserved: u16,
    serial: u32,
    /// Transfers started (the sequence part of the next [`TransferId`]).
    transfers_started: u64,
    /// When this requester's one transaction timer fires, if it is armed:
    /// the earliest deadline of its attempts, or earlier (see
    /// [`Fabric::arm_timer`]).
    pub(super) timer: Option<Instant>,
    pub(super) transfers: TransferMap<Transfer>,
    pub(super) queue: VecDeque<TransferId>,
}

impl DmaEngine {
    pub(super) fn new() -> Self {
        DmaEngine {
            slots: [None; 16],
            reserved: 0,
            serial: 0,
            transfers_started: 0,
            timer: None,
            transfers: TransferMap::default(),
            queue: VecDeque::new(),
        }
    }

    /// The ID of requester `ep`'s next transfer.
    pub(super) fn next_id(&mut self, ep: usize) -> TransferId {
        self.transfers_started += 1;
        TransferId::new(ep as u16, self.transfers_started)
    }

    pub(super) fn next_serial(&mut self) -> u32 {
        self.serial = self.serial.wrapping_add(1);
        self.serial
    }

    pub(super) fn is_idle(&self) -> bool {
        self.transfers.is_empty() && self.slots.iter().all(Option::is_none)
    }

    pub(super) fn add(
        &mut self,
        id: TransferId,
        requester: EndpointId,
        req: DmaRequest,
        plane: Plane,
        now: Instant,
        total_packets: u64,
    ) {
        let added = self.transfers.insert(
            id,
            Transfer {
                id,
                requester,
                req,
                plane,
                started: now,
                total_packets,
                next_packet: 0,
                acked_packets: 0,
                outstanding: 0,
                retries: 0,
                failovers: 0,
                failed: false,
                in_train: None,
                used_train: false,
            },
        );
        // The fabric numbers transfers in the order they start.
        debug_assert!(added.is_ok(), "transfer IDs grow");
        if added.is_ok() {
            self.queue.push_back(id);
        }
    }

    /// Ends every transfer (the requester went down). Returns their completions
    /// (with `finished` to be filled in by the caller).
    pub(super) fn abort_all(&mut self) -> Vec<DmaCompletion> {
        self.slots = [None; 16];
        self.queue.clear();
        let mut out = Vec::new();
        for t in self.transfers.drain() {
            if !t.failed {
                out.push(DmaCompletion {
                    id: t.id,
                    requester: t.requester,
                    target: t.req.target,
                    len: t.req.len,
                    started: t.started,
                    finished: t.started,
                    result: Err(DmaError::RequesterDown),
                    retries: t.retries,
                    failovers: t.failovers,
                    used_train: t.used_train,
                });
            }
        }
        out
    }
}

fn planes_name(mask: u8) -> &'static str {
    match mask {
        1 => "X",
        2 => "Y",
        _ => "X+Y",
    }
}

impl Fabric {
    fn max_payload(&self) -> u64 {
        self.config.limits.max_payload as u64
    }

    /// Issues packets while transaction IDs are free. Tries a train first
    /// when the requester is otherwise idle and `allow_train` is set.
    pub(super) fn pump_with<S: Scheduler<FabricEvent>>(
        &mut self,
        sched: &mut S,
        ep: usize,
        allow_train: bool,
    ) {
        let mp = self.max_payload();
        let window = self.config.max_outstanding as usize;
        loop {
            let Some(&id) = self.endpoints[ep].dma.queue.front() else {
                return;
            };
            let Some(t) = self.endpoints[ep].dma.transfers.get_mut(&id) else {
                self.endpoints[ep].dma.queue.pop_front();
                continue;
            };
            if t.failed || t.next_packet >= t.total_packets {
                self.endpoints[ep].dma.queue.pop_front();
                continue;
            }
            if t.in_train.is_some() {
                return;
            }
            if allow_train && self.try_start_train(sched, ep, id) {
                return;
            }
            let reserved = self.endpoints[ep].dma.reserved;
            let Some(tid) = self.endpoints[ep].dma.slots[..window]
                .iter()
                .enumerate()
                .position(|(i, s)| s.is_none() && reserved & (1 << i) == 0)
            else {
                return;
            };
            let serial = self.endpoints[ep].dma.next_serial();
            let t = self.endpoints[ep]
                .dma
                .transfers
                .get_mut(&id)
                .expect("present");
            let packet = t.packet(t.next_packet, mp);
            t.next_packet += 1;
            t.outstanding += 1;
            let plane = t.plane;
            self.endpoints[ep].dma.slots[tid] =
                Some(Outstanding::first(id, packet, plane, serial, false));
            self.send_slot(sched, ep, tid as u8);
        }
    }

    pub(super) fn pump<S: Scheduler<FabricEvent>>(&mut self, sched: &mut S, ep: usize) {
        self.pump_with(sched, ep, true)
    }

    /// Builds and injects the request for slot `tid`, and arms its timeout.
    fn send_slot<S: Scheduler<FabricEvent>>(&mut self, sched: &mut S, ep: usize, tid: u8) {
        let Some(mut slot) = self.endpoints[ep].dma.slots[tid as usize] else {
            return;
        };
        let Some(t) = self.endpoints[ep].dma.transfers.get(&slot.transfer) else {
            return;
        };
        let (target, op) = (t.req.target, t.req.op);
        let requester = self.endpoints[ep].id;
        // Link-level failure detection: if our own port on this plane is
        // down, move to the other plane at once.
        let out_up = |f: &Fabric, p: Plane| {
            f.endpoints[ep].out[p.index()].is_some_and(|c| f.channels[c as usize].up)
        };
        if !out_up(self, slot.plane) && out_up(self, slot.plane.other()) {
            slot.plane = slot.plane.other();
            slot.planes_tried |= 1 << slot.plane.index();
            let t = self.endpoints[ep]
                .dma
                .transfers
                .get_mut(&slot.transfer)
                .expect("present");
            t.plane = slot.plane;
            t.failovers += 1;
            self.endpoints[ep].counters.dma.plane_failovers += 1;
        }
        let (local, remote) = op.addresses();
        let addr = packet_addr(remote, slot.offset);
        let local = ProcAddr(local.0 + slot.offset);
        let bytes = if op.is_write() {
            let data = self.endpoints[ep]
                .memory
                .slice(local, slot.len as u64)
                .expect("range checked at start");
            self.buffers.encode(PacketRepr::write_request(
                target, requester, tid, addr, data,
            ))
        } else {
            self.buffers.encode(PacketRepr::read_request(
                target,
                requester,
                tid,
                addr,
                slot.len as u16,
            ))
        };
        slot.serial = self.endpoints[ep].dma.next_serial();
        slot.deadline = sched.now() + self.config.transaction_timeout;
        self.endpoints[ep].dma.slots[tid as usize] = Some(slot);
        self.endpoints[ep].counters.dma.packets += 1;
        self.arm_timer(sched, ep, slot.deadline);
        self.inject(sched, ep, slot.plane, bytes);
    }

    /// A response reached requester `ep`.
    pub(super) fn on_response<S: Scheduler<FabricEvent>>(
        &mut self,
        sched: &mut S,
        ep: usize,
        resp: &PacketRepr<'_>,
    ) {
        let tid = resp.tid as usize;
        let Some(slot) = self.endpoints[ep].dma.slots.get(tid).copied().flatten() else {
            self.endpoints[ep].counters.stale_responses += 1;
            return;
        };
        let Some(t) = self.endpoints[ep].dma.transfers.get(&slot.transfer) else {
            self.endpoints[ep].counters.stale_responses += 1;
            return;
        };
        let (local, remote) = t.req.op.addresses();
        let expect_addr = packet_addr(remote, slot.offset);
        if slot.ghost || resp.src != t.req.target || resp.addr != expect_addr {
            self.endpoints[ep].counters.stale_responses += 1;
            return;
        }
        let is_write = t.req.op.is_write();
        let outcome = match resp.kind {
            PacketKind::WriteAck if is_write => Ok(()),
            PacketKind::ReadResponse if !is_write && resp.payload.len() == slot.len as usize => {
                let dst = ProcAddr(local.0 + slot.offset);
                self.endpoints[ep]
                    .memory
                    .write(dst, resp.payload)
                    .map_err(|_| DmaError::BadResponse {
                        offset: slot.offset,
                    })
            }
            PacketKind::Nack(reason) => {
                self.endpoints[ep].counters.dma.nacks_received[reason.code() as usize] += 1;
                Err(DmaError::Nacked {
                    reason,
                    offset: slot.offset,
                })
            }
            _ => Err(DmaError::BadResponse {
                offset: slot.offset,
            }),
        };
        self.endpoints[ep].dma.slots[tid] = None;
        self.packet_done(sched, ep, slot.transfer, outcome);
    }

    /// One packet of a transfer is finished (acked, or failed).
    pub(super) fn packet_done<S: Scheduler<FabricEvent>>(
        &mut self,
        sched: &mut S,
        ep: usize,
        id: TransferId,
        outcome: Result<(), DmaError>,
    ) {
        let Some(t) = self.endpoints[ep].dma.transfers.get_mut(&id) else {
            return;
        };
        t.outstanding = t.outstanding.saturating_sub(1);
        if t.failed {
            if t.outstanding == 0 {
                self.endpoints[ep].dma.transfers.remove(&id);
            }
            self.pump(sched, ep);
            return;
        }
        match outcome {
            Ok(()) => {
                t.acked_packets += 1;
                if t.acked_packets == t.total_packets {
                    self.complete(sched, ep, id, Ok(()));
                }
            }
            Err(e) => self.complete(sched, ep, id, Err(e)),
        }
        self.pump(sched, ep);
    }

    /// Records a transfer's completion. A failed transfer stays until its
    /// outstanding packets are accounted for; their slots are then freed.
    pub(super) fn complete<S: Scheduler<FabricEvent>>(
        &mut self,
        sched: &mut S,
        ep: usize,
        id: TransferId,
        result: Result<(), DmaError>,
    ) {
        let now = sched.now();
        let comp = self.component_of_endpoint(ep);
        let Some(t) = self.endpoints[ep].dma.transfers.get_mut(&id) else {
            return;
        };
        let ok = result.is_ok();
        let c = DmaCompletion {
            id,
            requester: t.requester,
            target: t.req.target,
            len: t.req.len,
            started: t.started,
            finished: now,
            result,
            retries: t.retries,
            failovers: t.failovers,
            used_train: t.used_train,
        };
        if ok || t.outstanding == 0 {
            self.endpoints[ep].dma.transfers.remove(&id);
        } else {
            t.failed = true;
        }
        if ok {
            self.endpoints[ep].counters.dma.completed += 1;
        } else {
            self.endpoints[ep].counters.dma.failed += 1;
        }
        sched.note(comp, note::DMA_DONE, (id.0, u64::from(!ok)));
        self.completions.push(c);
    }

    /// Makes sure requester `ep`'s transaction timer fires no later than
    /// `deadline`. Each requester has one timer, not one per transaction: it
    /// stays armed for the earliest deadline it knew of when armed, and a
    /// response does not disarm it. When it fires, attempts whose deadline
    /// has passed time out and it is armed again for the earliest left.
    pub(super) fn arm_timer<S: Scheduler<FabricEvent>>(
        &mut self,
        sched: &mut S,
        ep: usize,
        deadline: Instant,
    ) {
        let dma = &mut self.endpoints[ep].dma;
        if dma.timer.is_some_and(|t| t <= deadline) {
            return;
        }
        dma.timer = Some(deadline);
        let comp = self.component_of_endpoint(ep);
        sched.schedule(deadline, comp, FabricEvent::Timeout { ep: ep as u32 });
    }

    /// Requester `ep`'s transaction timer fired: every attempt whose
    /// deadline has passed times out, in transaction ID order.
    pub(super) fn on_timer<S: Scheduler<FabricEvent>>(&mut self, sched: &mut S, ep: usize) {
        let now = sched.now();
        if self.endpoints[ep].dma.timer != Some(now) {
            // Superseded by an earlier arming.
            return;
        }
        self.endpoints[ep].dma.timer = None;
        for tid in 0..16u8 {
            let expired = self.endpoints[ep].dma.slots[tid as usize]
                .is_some_and(|s| !s.ghost && s.deadline <= now);
            if expired {
                self.on_timeout(sched, ep, tid);
            }
        }
        let next = self.endpoints[ep]
            .dma
            .slots
            .iter()
            .flatten()
            .filter(|s| !s.ghost)
            .map(|s| s.deadline)
            .min();
        if let Some(next) = next {
            self.arm_timer(sched, ep, next);
        }
    }

    /// Attempt `tid` of requester `ep` timed out: retry it (on the other
    /// plane if there is one) or fail its transfer.
    fn on_timeout<S: Scheduler<FabricEvent>>(&mut self, sched: &mut S, ep: usize, tid: u8) {
        let Some(mut slot) = self.endpoints[ep].dma.slots[tid as usize] else {
            return;
        };
        self.endpoints[ep].counters.dma.timeouts += 1;
        let failed = self.endpoints[ep]
            .dma
            .transfers
            .get(&slot.transfer)
            .is_none_or(|t| t.failed);
        if failed {
            self.endpoints[ep].dma.slots[tid as usize] = None;
            self.packet_done(sched, ep, slot.transfer, Ok(()));
            return;
        }
        if slot.attempts >= self.config.max_attempts {
            self.endpoints[ep].dma.slots[tid as usize] = None;
            let err = DmaError::NoPath {
                offset: slot.offset,
                attempts: slot.attempts,
                planes: planes_name(slot.planes_tried),
            };
            self.packet_done(sched, ep, slot.transfer, Err(err));
            return;
        }
        // Retry, on the other plane if the fabric has one.
        slot.attempts += 1;
        self.endpoints[ep].counters.dma.retries += 1;
        let other = slot.plane.other();
        let t = self.endpoints[ep]
            .dma
            .transfers
            .get_mut(&slot.transfer)
            .expect("present");
        t.retries += 1;
        if self.topology.planes().contains(&other) {
            slot.plane = other;
            slot.planes_tried |= 1 << other.index();
            if t.plane != other {
                t.plane = other;
                t.failovers += 1;
                self.endpoints[ep].counters.dma.plane_failovers += 1;
            }
        }
        self.endpoints[ep].dma.slots[tid as usize] = Some(slot);
        self.send_slot(sched, ep, tid);
    }

    pub(super) fn on_train_ack<S: Scheduler<FabricEvent>>(
        &mut self,
        sched: &mut S,
        ep: usize,
        tid: u8,
        serial: u32,
    ) {
        let Some(slot) = self.endpoints[ep].dma.slots[tid as usize] else {
            return;
        };
        if !slot.ghost || slot.serial != serial {
            return;
        }
        self.endpoints[ep].dma.slots[tid as usize] = None;
        self.packet_done(sched, ep, slot.transfer, Ok(()));
    }
}

#[cfg(test)]
mod transfer_map_tests {
    use super::{TransferId, TransferMap};

    fn id(seq: u64) -> TransferId {
        TransferId::new(7, seq)
    }

    #[test]
    fn a_transfer_map_finds_removes_and_refuses_foreign_or_old_ids() {
        let mut m = TransferMap::default();
        for i in [3u64, 5, 8, 9] {
            assert!(m.insert(id(i), i * 10).is_ok());
        }
        assert_eq!(m.insert(id(9), 0), Err(0), "not newer");
        assert_eq!(m.insert(id(2), 0), Err(0), "older");
        assert_eq!(
            m.insert(TransferId::new(6, 10), 0),
            Err(0),
            "another requester"
        );
        assert_eq!(
            m.insert(id(11 + TransferMap::<u64>::MAX_SKIP), 0),
            Err(0),
            "too far ahead"
        );
        assert_eq!(m.len(), 4);
        assert_eq!(m.get(&id(8)), Some(&80));
        assert_eq!(m.get(&id(4)), None);
        assert_eq!(m.get(&TransferId::new(6, 8)), None);
        // A hole in the middle stays until the front reaches it.
        assert_eq!(m.remove(&id(5)), Some(50));
        assert_eq!(m.remove(&id(5)), None);
        assert_eq!(m.get(&id(5)), None);
        *m.get_mut(&id(9)).unwrap() += 1;
        assert_eq!(m.remove(&id(3)), Some(30));
        assert_eq!(m.values().copied().collect::<Vec<_>>(), vec![80, 91]);
        assert_eq!(m[&id(8)], 80);
        assert!(m.insert(id(10), 100).is_ok());
        assert_eq!(m.drain().collect::<Vec<_>>(), vec![80, 91, 100]);
        assert!(m.is_empty());
        assert_eq!(m.get(&id(8)), None);
        // Empty again: any requester's ID starts it.
        assert!(m.insert(TransferId::new(6, 1), 1).is_ok());
        assert_eq!(m[&TransferId::new(6, 1)], 1);
        // The last ID there is: nothing comes after it.
        let mut last = TransferMap::default();
        assert!(last.insert(TransferId(u64::MAX), 1).is_ok());
        assert_eq!(last.insert(TransferId(u64::MAX), 2), Err(2));
        assert_eq!(last.remove(&TransferId(u64::MAX)), Some(1));
    }

    #[test]
    fn transfer_ids_carry_their_requester() {
        let t = TransferId::new(513, 42);
        assert_eq!(t.requester_index(), 513);
        assert!(TransferId::new(513, 43) > t);
    }
}
