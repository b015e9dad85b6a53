//! Transaction-level bursts ("trains").
//!
//! An uncontended transfer is computed with the packet-level rules of
//! [`super`] evaluated as a recurrence instead of as events: for packet `j`
//! and channel `i` of its path,
//!
//! ```text
//! grant[j][i] = max(request[j][i], end[j-1][i], credit[j-C][i])
//! end[j][i]   = max(grant[j][i] + size/bandwidth_i, tail[j][i])
//! request[j][i+1] = grant[j][i] + latency_i + header_time_i + path_formation
//! tail[j][i+1]    = end[j][i] + latency_i
//! credit[j][i]    = (time the tail leaves the next node) + latency_i
//! ```
//!
//! with the requester issuing packet `j` when the response of packet
//! `j - W` arrives (W = outstanding window), and the target answering
//! `turnaround` after a request's tail arrives. This is exactly what the
//! event-driven model computes when nothing else uses the path, at a cost of
//! a few arithmetic operations per packet and hop instead of several heap
//! events and a packet buffer.

use super::dma::Outstanding;
use super::{ChannelId, Fabric, FabricEvent, note};
use crate::avt::Op;
use crate::engine::Scheduler;
use crate::ids::{EndpointId, Plane};
use crate::memory::{ProcAddr, copy_between};
use crate::packet::wire_len;
use crate::time::{Bandwidth, Duration, Instant};
use crate::topology::NodeRef;

use super::dma::TransferId;

/// Why a train is split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SplitCause {
    /// Other traffic wants a reserved channel, or the target's AVT changes.
    Contention,
    /// A component on the path failed.
    Fault,
}

/// The channels and routers between a requester and a target on one plane,
/// both ways. The topology never changes, so each is computed once
/// (`Fabric::route_between`) and trains refer to it by index.
#[derive(Debug)]
pub(super) struct Route {
    /// The forward path's channels, then the reverse path's.
    channels: Vec<ChannelId>,
    /// How many of `channels` are the forward path's.
    nfwd: usize,
    /// Routers on either path, each once.
    routers: Vec<usize>,
}

impl Route {
    pub(super) fn channels(&self) -> &[ChannelId] {
        &self.channels
    }
    pub(super) fn routers(&self) -> &[usize] {
        &self.routers
    }
}

/// Vectors of trains that ended, kept for the next ones so that starting
/// a train costs no allocation.
#[derive(Debug, Default)]
pub(super) struct TrainSpares {
    legs: Vec<(Vec<ChanTiming>, Vec<Instant>)>,
    evaluations: Vec<Evaluation>,
}

impl TrainSpares {
    /// At most this many of each are kept.
    const KEEP: usize = 64;

    fn legs(&mut self) -> (Vec<ChanTiming>, Vec<Instant>) {
        let (mut legs, mut ready) = self.legs.pop().unwrap_or_default();
        legs.clear();
        ready.clear();
        (legs, ready)
    }

    fn evaluation(&mut self) -> Evaluation {
        self.evaluations.pop().unwrap_or_default()
    }

    fn give_back(&mut self, train: Train, ev: Evaluation) {
        if self.legs.len() < Self::KEEP {
            self.legs.push((train.legs, train.credit_ready));
        }
        for ev in [Some(ev), train.full].into_iter().flatten() {
            if self.evaluations.len() < Self::KEEP {
                self.evaluations.push(ev);
            }
        }
    }
}

/// Names a train: the slot it occupies in the [`TrainTable`] and that
/// slot's generation, so an event of a train that ended (a split one's
/// `TrainDone`) never reaches the train that took its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrainId(pub u64);

impl TrainId {
    fn new(slot: u32, generation: u32) -> Self {
        TrainId(((generation as u64) << 32) | slot as u64)
    }
    fn slot(self) -> usize {
        (self.0 & 0xFFFF_FFFF) as usize
    }
    fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

/// The running trains, in slots reused as trains end, so that starting and
/// ending one neither allocates nor moves the others.
#[derive(Debug, Default)]
pub(super) struct TrainTable {
    slots: Vec<(u32, Option<Train>)>,
    free: Vec<u32>,
    live: usize,
    /// Trains started so far: the creation order of the running ones.
    started: u64,
}

impl TrainTable {
    pub(super) fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Puts `train` in a free slot and gives it its ID and rank.
    fn insert(&mut self, mut train: Train) -> TrainId {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push((0, None));
                (self.slots.len() - 1) as u32
            }
        };
        let entry = &mut self.slots[slot as usize];
        let id = TrainId::new(slot, entry.0);
        train.id = id;
        train.order = self.started;
        entry.1 = Some(train);
        self.started += 1;
        self.live += 1;
        id
    }

    pub(super) fn get(&self, id: TrainId) -> Option<&Train> {
        match self.slots.get(id.slot()) {
            Some((g, Some(t))) if *g == id.generation() => Some(t),
            _ => None,
        }
    }

    /// Takes the train out of its slot, which stays reserved for it until
    /// [`TrainTable::give_back`].
    fn lend(&mut self, id: TrainId) -> Option<Train> {
        match self.slots.get_mut(id.slot()) {
            Some((g, t)) if *g == id.generation() => t.take(),
            _ => None,
        }
    }

    fn give_back(&mut self, id: TrainId, train: Train) {
        if let Some((g, t)) = self.slots.get_mut(id.slot())
            && *g == id.generation()
        {
            *t = Some(train);
        }
    }

    /// Takes the train out for good; its slot goes to a later train.
    fn remove(&mut self, id: TrainId) -> Option<Train> {
        let entry = self.slots.get_mut(id.slot())?;
        if entry.0 != id.generation() {
            return None;
        }
        let train = entry.1.take()?;
        entry.0 = entry.0.wrapping_add(1);
        self.free.push(id.slot() as u32);
        self.live -= 1;
        Some(train)
    }

    /// IDs of the running trains that satisfy `pred`, oldest first.
    pub(super) fn ids_where(&self, mut pred: impl FnMut(&Train) -> bool) -> Vec<TrainId> {
        let mut hits: Vec<(u64, TrainId)> = self
            .slots
            .iter()
            .filter_map(|(_, t)| t.as_ref())
            .filter(|t| pred(t))
            .map(|t| (t.order, t.id))
            .collect();
        hits.sort_unstable();
        hits.into_iter().map(|(_, id)| id).collect()
    }
}

#[derive(Debug, Clone, Copy)]
struct ChanTiming {
    ch: ChannelId,
    bandwidth: Bandwidth,
    latency: Duration,
    header_time: Duration,
    /// When the channel finishes what it was sending when the train started.
    busy_until: Instant,
    /// Serialization time of the train's three packet sizes (see [`Params::sizes`]).
    ser: [Duration; 3],
}

/// Per-channel state of the recurrence. The channel's credit-return times
/// of the last C packets live in the evaluation's flat `credits` array (C
/// entries per channel, a ring indexed by packet % C).
#[derive(Debug, Clone, Copy)]
struct ChanState {
    last_end: Instant,
    packets: u64,
    bytes: u64,
    busy_ps: u64,
    /// Busy time added by the latest packet.
    last_busy: u64,
}

/// Times of one packet of a train.
#[derive(Debug, Clone, Copy)]
struct PacketTimes {
    inject: Instant,
    deliver: Instant,
    response: Instant,
}

#[derive(Debug)]
pub(super) struct Train {
    pub(super) ep: usize,
    target_ep: usize,
    requester: EndpointId,
    target: EndpointId,
    transfer: TransferId,
    plane: Plane,
    /// Index of the train's [`Route`] in `Fabric::routes`.
    route: u32,
    /// Timing of each channel of the route, forward path first.
    legs: Vec<ChanTiming>,
    /// How many of `legs` are the forward path's.
    nfwd: usize,
    /// When each credit of each leg is available, earliest first (free
    /// ones at time zero): C entries per leg.
    credit_ready: Vec<Instant>,
    start: Instant,
    /// First packet index of the transfer carried by the train.
    first_packet: u64,
    /// Number of packets carried.
    packets: u64,
    /// The recurrence evaluated over every packet at the start.
    full: Option<Evaluation>,
    /// Transaction IDs reserved for the train's packets (one bit per TID);
    /// their number is the train's window of packets in flight.
    tids: u16,
    /// The train's ID (its slot in `Fabric::trains`).
    pub(super) id: TrainId,
    /// Its rank among the trains started (splits after a fault go oldest first).
    order: u64,
    /// Packets whose data already landed (a write into an interrupt window
    /// lands when its request arrives, with its interrupt).
    landed: u64,
}

impl Train {
    /// Whether this is a single-packet train whose packet left its
    /// requester before `now`. A split now would commit that packet as
    /// computed (see [`Fabric::split_train`]), so a train of another
    /// requester may follow it on shared channels from the state the split
    /// would leave. (Trains of several packets are split instead: their
    /// packets would hold a newcomer back for longer.)
    fn single_packet_sent(&self, now: Instant) -> bool {
        self.packets == 1
            && self
                .full
                .as_ref()
                .and_then(|ev| ev.times.first())
                .is_some_and(|p| p.inject < now)
    }

    /// The route it runs on.
    pub(super) fn route(&self) -> u32 {
        self.route
    }

    pub(super) fn involves(&self, e: EndpointId) -> bool {
        self.requester == e || self.target == e
    }
}

/// Result of evaluating the recurrence over a prefix of a train.
#[derive(Debug, Default)]
pub(super) struct Evaluation {
    /// Per leg of the train (forward path first).
    st: Vec<ChanState>,
    /// Credit-return rings, C entries per leg.
    credits: Vec<Instant>,
    times: Vec<PacketTimes>,
    /// Packets computed by the steady-state jump rather than one by one.
    jumped: u64,
}

#[derive(Clone, Copy)]
struct Params {
    /// Wire sizes of an empty packet, a full one and the transfer's last one.
    sizes: [u64; 3],
    path_formation: Duration,
    turnaround: Duration,
    credits: usize,
    window: usize,
    max_payload: u64,
    len: u64,
    is_write: bool,
}

/// One packet `j` crosses `chans` (with their states `st` and credit rings
/// `credits`, C entries per channel), ready to leave at `ready`; returns
/// when its tail reaches the far end.
fn traverse(
    chans: &[ChanTiming],
    st: &mut [ChanState],
    credits: &mut [Instant],
    j: usize,
    ready: Instant,
    size_class: usize,
    p: &Params,
) -> Instant {
    let size = p.sizes[size_class];
    let c = p.credits;
    let slot = j % c;
    let mut request = ready;
    let mut tail_here = ready;
    let mut prev_latency = Duration::ZERO;
    for i in 0..chans.len() {
        let ch = &chans[i];
        let credit = credits[i * c + slot];
        let grant = request.max(st[i].last_end).max(credit);
        let end = (grant + ch.ser[size_class]).max(tail_here);
        let s = &mut st[i];
        s.last_end = end;
        s.packets += 1;
        s.bytes += size;
        s.last_busy = (end - grant).as_ps();
        s.busy_ps += s.last_busy;
        if i > 0 {
            // The tail leaves node i's input buffer: credit back to channel i-1's sender.
            credits[(i - 1) * c + slot] = end + prev_latency;
        }
        request = grant + ch.latency + ch.header_time + p.path_formation;
        tail_here = end + ch.latency;
        prev_latency = ch.latency;
    }
    // The endpoint consumes the packet when its tail arrives.
    if !chans.is_empty() {
        credits[(chans.len() - 1) * c + slot] = tail_here + prev_latency;
    }
    tail_here
}

/// The part of the recurrence state that the future depends on, with every
/// time expressed by age (packet j, j-1, ...), so that two consecutive
/// snapshots can be compared for a uniform shift.
#[derive(Debug, Default)]
struct Snapshot {
    times: Vec<u64>,
    busy: Vec<u64>,
}

impl Snapshot {
    fn take(&mut self, ev: &Evaluation, j: usize, p: &Params) {
        self.times.clear();
        self.busy.clear();
        let c = p.credits;
        for (st, ring) in ev.st.iter().zip(ev.credits.chunks_exact(c)) {
            self.times.push(st.last_end.as_ps());
            for age in 0..c {
                self.times.push(ring[(j + c - age) % c].as_ps());
            }
            self.busy.push(st.last_busy);
        }
        for age in 0..p.window {
            let t = &ev.times[j - age];
            self.times
                .extend([t.inject.as_ps(), t.deliver.as_ps(), t.response.as_ps()]);
        }
    }

    /// `Some(delta)` if `self` is `prev` with every time moved by one same delta
    /// and every per-packet busy increment unchanged.
    fn shift_from(&self, prev: &Snapshot) -> Option<u64> {
        let delta = self.times.first()?.checked_sub(*prev.times.first()?)?;
        let same_shift = self.times.len() == prev.times.len()
            && self
                .times
                .iter()
                .zip(&prev.times)
                .all(|(a, b)| a.checked_sub(*b) == Some(delta));
        (delta > 0 && same_shift && self.busy == prev.busy).then_some(delta)
    }
}

/// Once the state after packet `j` equals the state after packet `j - 1`
/// shifted by a constant `delta`, every further packet of the same size
/// repeats it (the recurrence only takes maxima and sums of its state and
/// constants, so it commutes with a uniform shift). Jump to packet `j + m`.
/// `classes` are the size classes of the jumped packets' requests and responses.
/// `nfwd` is the number of forward-path legs.
fn jump(
    ev: &mut Evaluation,
    (j, m): (usize, usize),
    nfwd: usize,
    delta: u64,
    p: &Params,
    classes: (usize, usize),
) {
    let d = Duration::from_ps(delta * m as u64);
    let (req_bytes, resp_bytes) = (p.sizes[classes.0], p.sizes[classes.1]);
    let c = p.credits;
    for (i, (st, ring)) in ev
        .st
        .iter_mut()
        .zip(ev.credits.chunks_exact_mut(c))
        .enumerate()
    {
        let size = if i < nfwd { req_bytes } else { resp_bytes };
        st.bytes += size * m as u64;
        st.last_end += d;
        // Packet j's entry becomes packet j + m's: the ring turns by m
        // and every time moves by d.
        ring.rotate_right(m % c);
        for t in ring.iter_mut() {
            *t += d;
        }
        st.busy_ps += st.last_busy * m as u64;
        st.packets += m as u64;
    }
    let last = ev.times[j];
    for k in 1..=m {
        let shift = Duration::from_ps(delta * k as u64);
        ev.times.push(PacketTimes {
            inject: last.inject + shift,
            deliver: last.deliver + shift,
            response: last.response + shift,
        });
    }
    ev.jumped += m as u64;
}

/// Evaluates the recurrence over `train` (up to `stop_before`), in the
/// vectors of `ev`, an evaluation no longer needed (or a fresh one).
fn evaluate(
    train: &Train,
    p: &Params,
    stop_before: Option<Instant>,
    mut ev: Evaluation,
) -> Evaluation {
    // The train may have in flight as many packets as it holds IDs.
    let p = &Params {
        window: (train.tids.count_ones() as usize).max(1),
        ..*p
    };
    ev.st.clear();
    ev.st.extend(train.legs.iter().map(|c| ChanState {
        last_end: c.busy_until,
        packets: 0,
        bytes: 0,
        busy_ps: 0,
        last_busy: 0,
    }));
    ev.credits.clear();
    ev.credits.extend_from_slice(&train.credit_ready);
    ev.times.clear();
    ev.times.reserve(train.packets as usize);
    ev.jumped = 0;
    let (nfwd, c) = (train.nfwd, p.credits);
    let (fwd, rev) = train.legs.split_at(nfwd);
    let n = train.packets as usize;
    // Train-relative index of the last full-size packet, plus one.
    let full_end = ((p.len / p.max_payload).saturating_sub(train.first_packet) as usize).min(n);
    let (mut prev, mut cur) = (Snapshot::default(), Snapshot::default());
    let warm = p.window.max(p.credits) + 1;
    let mut j = 0;
    while j < n {
        let inject = if j < p.window {
            train.start
        } else {
            ev.times[j - p.window].response
        };
        if stop_before.is_some_and(|b| inject >= b) {
            break;
        }
        let idx = train.first_packet + j as u64;
        let data = if (idx + 1) * p.max_payload <= p.len {
            1
        } else {
            2
        };
        let (req_class, resp_class) = if p.is_write { (data, 0) } else { (0, data) };
        let (fwd_st, rev_st) = ev.st.split_at_mut(nfwd);
        let (fwd_credits, rev_credits) = ev.credits.split_at_mut(nfwd * c);
        let deliver = traverse(fwd, fwd_st, fwd_credits, j, inject, req_class, p);
        let response = traverse(
            rev,
            rev_st,
            rev_credits,
            j,
            deliver + p.turnaround,
            resp_class,
            p,
        );
        ev.times.push(PacketTimes {
            inject,
            deliver,
            response,
        });
        // Steady state: jump over the remaining full-size packets. Only for
        // whole-train evaluations; a split evaluates packet by packet.
        if stop_before.is_none() && j >= warm && j + 1 < full_end {
            cur.take(&ev, j, p);
            if let Some(delta) = cur.shift_from(&prev) {
                let m = full_end - 1 - j;
                jump(&mut ev, (j, m), nfwd, delta, p, (req_class, resp_class));
                j += m + 1;
                continue;
            }
            std::mem::swap(&mut prev, &mut cur);
        }
        j += 1;
    }
    ev
}

impl Fabric {
    fn train_params(&self, ep: usize, id: TransferId) -> Option<Params> {
        let t = self.endpoints[ep].dma.transfers.get(&id)?;
        let mp = self.config.limits.max_payload as u64;
        let last = t.req.len % mp;
        let last = if last == 0 && t.req.len > 0 { mp } else { last };
        Some(Params {
            sizes: [
                wire_len(0) as u64,
                wire_len(mp as usize) as u64,
                wire_len(last as usize) as u64,
            ],
            path_formation: self.config.path_formation,
            turnaround: self.config.turnaround,
            credits: self.config.buffer_slots as usize,
            window: self.config.max_outstanding as usize,
            max_payload: self.config.limits.max_payload as u64,
            len: t.req.len,
            is_write: t.req.op.is_write(),
        })
    }

    /// The channel a hop crosses.
    fn channel_of_hop(&self, h: &crate::topology::Hop) -> ChannelId {
        let l = &self.topology.links()[h.link];
        if l.a == h.from {
            2 * h.link as u32
        } else {
            2 * h.link as u32 + 1
        }
    }

    /// The route from requester `ep` to target `target_ep` on `plane` and
    /// back, computed the first time it is asked for. `None` if either
    /// direction has no path.
    pub(super) fn route_between(
        &mut self,
        ep: usize,
        target_ep: usize,
        plane: Plane,
    ) -> Option<u32> {
        let key = (ep as u32, target_ep as u32, plane.index() as u8);
        if let Some(&r) = self.route_index.get(&key) {
            return r;
        }
        let (from, to) = (self.endpoints[ep].id, self.endpoints[target_ep].id);
        let route = match (
            self.topology.path(plane, from, to),
            self.topology.path(plane, to, from),
        ) {
            (Some(fwd), Some(rev)) => {
                let mut routers = Vec::new();
                for h in fwd.iter().chain(&rev) {
                    if let NodeRef::Router(r) = h.to.node
                        && !routers.contains(&(r.0 as usize))
                    {
                        routers.push(r.0 as usize);
                    }
                }
                let channels = fwd
                    .iter()
                    .chain(&rev)
                    .map(|h| self.channel_of_hop(h))
                    .collect();
                self.routes.push(Route {
                    channels,
                    nfwd: fwd.len(),
                    routers,
                });
                Some((self.routes.len() - 1) as u32)
            }
            _ => None,
        };
        self.route_index.insert(key, route);
        route
    }

    /// The state of channel `ch` as a train starts: its timing, and the
    /// times its credits are available (earliest first) appended to `ready`,
    /// exactly `buffer_slots` of them.
    fn timing_of(&self, ch: ChannelId, ready: &mut Vec<Instant>) -> ChanTiming {
        let c = &self.channels[ch as usize];
        let from = ready.len();
        ready.extend(std::iter::repeat_n(Instant::ZERO, c.credits as usize));
        ready.extend(c.pending_credits.iter().copied());
        ready.resize(from + self.config.buffer_slots as usize, Instant::ZERO);
        ready[from..].sort_unstable();
        ChanTiming {
            ch,
            bandwidth: c.bandwidth,
            latency: c.latency,
            header_time: c.header_time,
            busy_until: c.busy_until,
            ser: [Duration::ZERO; 3],
        }
    }

    /// Starts transfer `id` of requester `ep` as a train if its path is idle
    /// and nothing in it needs packet-level treatment. Returns whether it did.
    pub(super) fn try_start_train<S: Scheduler<FabricEvent>>(
        &mut self,
        sched: &mut S,
        ep: usize,
        id: TransferId,
    ) -> bool {
        if !self.config.trains
            || self.force_packet_level
            || self.capture.is_some()
            || self.config.crc_error_rate > 0.0
        {
            return false;
        }
        let now = sched.now();
        let Some(t) = self.endpoints[ep].dma.transfers.get(&id) else {
            return false;
        };
        let remaining = t.total_packets - t.next_packet;
        // Transaction IDs neither outstanding nor held by another train.
        let dma = &self.endpoints[ep].dma;
        let window = (self.config.max_outstanding as usize).min(16);
        let mut tids = 0u16;
        for i in 0..window {
            if tids.count_ones() as u64 >= remaining {
                break;
            }
            if dma.slots[i].is_none() && dma.reserved & (1 << i) == 0 {
                tids |= 1 << i;
            }
        }
        if remaining == 0 || t.failed || t.in_train.is_some() || tids == 0 {
            return false;
        }
        let (requester, target, plane, op, first_packet) =
            (t.requester, t.req.target, t.plane, t.req.op, t.next_packet);
        let Some(target_ep) = self.topology.endpoint_index(target) else {
            return false;
        };
        if !self.endpoints[ep].up || !self.endpoints[target_ep].up {
            return false;
        }
        // The whole remaining range must validate in one window, without an
        // interrupt (interrupts are raised per packet).
        let (_, remote) = op.addresses();
        let mp = self.config.limits.max_payload as u64;
        let first_off = first_packet * mp;
        let rest = t.req.len - first_off.min(t.req.len);
        let Some(entry) = self.endpoints[target_ep].avt.get(remote.key()) else {
            return false;
        };
        let need = if op.is_write() {
            crate::avt::Access::WRITE
        } else {
            crate::avt::Access::READ
        };
        // A write into an interrupt window raises its interrupt when the
        // request arrives: a train does that for a single packet with one
        // extra event.
        let interrupt = entry.access.contains(crate::avt::Access::INTERRUPT);
        if entry.requester != requester
            || !entry.access.contains(need)
            || (interrupt && (remaining != 1 || !op.is_write()))
            || remote.offset() as u64 + first_off + rest > entry.len as u64
        {
            return false;
        }
        let Some(route_id) = self.route_between(ep, target_ep, plane) else {
            return false;
        };
        let route = &self.routes[route_id as usize];
        let params = self.train_params(ep, id).expect("transfer exists");
        if route.routers.iter().any(|&r| !self.routers[r].up) {
            return false;
        }
        // Nothing may be waiting for these channels; a channel still sending
        // the tail of earlier traffic, or with credits on their way back, is
        // fine: the recurrence starts from that exact state.
        let slots = self.config.buffer_slots as usize;
        let free = route.channels.iter().all(|&ch| {
            let c = &self.channels[ch as usize];
            c.up && c.queue.is_empty()
                && match c.train {
                    None => c.credits as usize + c.pending_credits.len() == slots,
                    // A train of the same requester, or another's single
                    // packet already on its way: this one follows it.
                    Some(other) => self.trains.get(other).is_some_and(|o| {
                        o.ep == ep || (self.chain_across_requesters && o.single_packet_sent(now))
                    }),
                }
        });
        if !free {
            return false;
        }
        let nfwd = route.nfwd;
        let nlegs = route.channels.len();
        let (mut legs, mut credit_ready) = self.train_spares.legs();
        for i in 0..nlegs {
            let ch = self.routes[route_id as usize].channels[i];
            let mut c = self.timing_of(ch, &mut credit_ready);
            c.ser = params.sizes.map(|size| c.bandwidth.serialization(size));
            legs.push(c);
        }
        // On a channel an earlier train of this requester still holds, the
        // recurrence starts from that train's final state there: its packets
        // go first, as they would in the channel's FIFO.
        for (i, c) in legs.iter_mut().enumerate() {
            let Some(other) = self.channels[c.ch as usize].train else {
                continue;
            };
            let Some(o) = self.trains.get(other) else {
                continue;
            };
            let Some(oev) = o.full.as_ref() else { continue };
            let Some(k) = o.legs.iter().position(|t| t.ch == c.ch) else {
                continue;
            };
            c.busy_until = oev.st[k].last_end;
            let ready = &mut credit_ready[i * slots..(i + 1) * slots];
            ready.copy_from_slice(&oev.credits[k * slots..(k + 1) * slots]);
            ready.sort_unstable();
        }
        let mut train = Train {
            ep,
            target_ep,
            requester,
            target,
            transfer: id,
            plane,
            route: route_id,
            legs,
            nfwd,
            credit_ready,
            start: now,
            first_packet,
            packets: remaining,
            full: None,
            tids,
            id: TrainId(0), // given by the table
            order: 0,
            landed: 0,
        };
        let ev = evaluate(&train, &params, None, self.train_spares.evaluation());
        let end = ev.times.last().map(|p| p.response).unwrap_or(now);
        self.endpoints[ep].counters.dma.train_jumped_packets += ev.jumped;
        train.full = Some(ev);
        // A write into an interrupt window lands when its request arrives.
        let land_at = interrupt.then(|| {
            train
                .full
                .as_ref()
                .and_then(|ev| ev.times.first())
                .map_or(end, |p| p.deliver)
        });
        let tids = train.tids;
        let train_id = self.trains.insert(train);
        for &ch in &self.routes[route_id as usize].channels {
            self.channels[ch as usize].train = Some(train_id);
        }
        self.endpoints[ep].dma.reserved |= tids;
        let t = self.endpoints[ep]
            .dma
            .transfers
            .get_mut(&id)
            .expect("present");
        t.in_train = Some(train_id);
        t.used_train = true;
        t.next_packet = t.total_packets;
        self.endpoints[ep].counters.dma.trains += 1;
        let comp = self.component_of_endpoint(ep);
        sched.note(comp, note::TRAIN_START, (id.0, remaining));
        if let Some(at) = land_at {
            sched.schedule(at, comp, FabricEvent::TrainLand { train: train_id });
        }
        sched.schedule(end, comp, FabricEvent::TrainDone { train: train_id });
        true
    }

    /// Applies the effect of packets `0..k` of a train: data, AVT checks,
    /// counters; and hands the channels back to packet-level operation.
    /// Lands the data of the train's packets after those already landed,
    /// as long as `landed` holds: AVT validation (counted), the copy, and the
    /// interrupt of a write into an interrupt window. Returns how many landed.
    fn land<S: Scheduler<FabricEvent>>(
        &mut self,
        sched: &mut S,
        train: &Train,
        ev: &Evaluation,
        landed: impl Fn(&PacketTimes) -> bool,
    ) -> u64 {
        let now = sched.now();
        let Some(params) = self.train_params(train.ep, train.transfer) else {
            return 0;
        };
        let (local, remote) = {
            let t = &self.endpoints[train.ep].dma.transfers[&train.transfer];
            t.req.op.addresses()
        };
        let op = if params.is_write { Op::Write } else { Op::Read };
        // Packets land in order, so the landed ones are a prefix. Each is
        // validated (the AVT counts it) and the prefix is copied at once.
        let skip = train.landed as usize;
        let mut landed_packets = 0u64;
        let mut start_local = None;
        let mut bytes = 0u64;
        let mut interrupts = Vec::new();
        for (j, times) in ev.times.iter().enumerate().skip(skip) {
            if !landed(times) {
                break;
            }
            let off = (train.first_packet + j as u64) * params.max_payload;
            let n = params.len.saturating_sub(off).min(params.max_payload);
            let addr = super::dma::packet_addr(remote, off);
            let target = &mut self.endpoints[train.target_ep];
            let Ok(tr) = target.avt.validate(train.requester, addr, n as u32, op) else {
                break;
            };
            if tr.interrupt {
                interrupts.push(crate::avt::InterruptEntry {
                    at: now,
                    requester: train.requester,
                    key: addr.key(),
                    offset: addr.offset(),
                    len: n as u32,
                });
            }
            start_local.get_or_insert(tr.local);
            landed_packets += 1;
            bytes += n;
        }
        if let Some(remote_local) = start_local {
            let off = (train.first_packet + skip as u64) * params.max_payload;
            let (req, tgt) = super::pair(&mut self.endpoints, train.ep, train.target_ep);
            let local = ProcAddr(local.0 + off);
            let copied = if params.is_write {
                copy_between(&req.memory, local, &mut tgt.memory, remote_local, bytes)
            } else {
                copy_between(&tgt.memory, remote_local, &mut req.memory, local, bytes)
            };
            debug_assert!(copied.is_ok(), "train ranges are checked at start");
        }
        for entry in interrupts {
            let tgt = &mut self.endpoints[train.target_ep];
            tgt.counters.interrupts += 1;
            // A full queue counts the overflow itself.
            tgt.interrupts.push(entry);
            self.signals.push(tgt.id);
        }
        landed_packets
    }

    /// The request of a train's single write into an interrupt window
    /// arrives: its data lands and its interrupt is raised now.
    pub(super) fn land_train<S: Scheduler<FabricEvent>>(&mut self, sched: &mut S, id: TrainId) {
        let Some(mut train) = self.trains.lend(id) else {
            return;
        };
        let now = sched.now();
        if let Some(ev) = train.full.take() {
            train.landed += self.land(sched, &train, &ev, |p| p.deliver <= now);
            train.full = Some(ev);
        }
        self.trains.give_back(id, train);
    }

    fn settle_train<S: Scheduler<FabricEvent>>(
        &mut self,
        sched: &mut S,
        train: &Train,
        ev: &Evaluation,
        landed: impl Fn(&PacketTimes) -> bool,
    ) -> u64 {
        let now = sched.now();
        let newly = self.land(sched, train, ev, landed);
        let landed_packets = train.landed + newly;
        let sent = ev.times.len() as u64;
        {
            let (req, tgt) = super::pair(&mut self.endpoints, train.ep, train.target_ep);
            req.counters.packets_out += sent;
            req.counters.dma.packets += sent;
            req.counters.dma.train_packets += sent;
            tgt.counters.requests_in += landed_packets;
            tgt.counters.packets_out += landed_packets;
            req.counters.responses_in += landed_packets;
        }
        // Requests cross the routers of the forward path, responses those of the reverse path.
        for (i, c) in train.legs.iter().enumerate() {
            if let Some(r) = self.channel_router(c.ch) {
                self.routers[r].counters.routed +=
                    if i < train.nfwd { sent } else { landed_packets };
            }
        }
        let slots = self.config.buffer_slots;
        let c_len = slots as usize;
        for ((timing, st), ring) in train
            .legs
            .iter()
            .zip(&ev.st)
            .zip(ev.credits.chunks_exact(c_len))
        {
            let ch = timing.ch;
            let c = &mut self.channels[ch as usize];
            c.counters.packets += st.packets;
            c.counters.bytes += st.bytes;
            c.counters.busy_ps += st.busy_ps;
            if c.train != Some(train.id) {
                // A later train of the requester holds the channel; its state
                // already continues from this one's.
                continue;
            }
            c.train = None;
            c.busy_until = c.busy_until.max(st.last_end);
            c.pending_credits.clear();
            c.pending_credits
                .extend(ring.iter().copied().filter(|&t| t > now));
            c.credits = slots.saturating_sub(c.pending_credits.len() as u8);
            // Packets that queued behind the train go as soon as they may.
            if !c.queue.is_empty() {
                self.try_grant(sched, ch);
            }
        }
        landed_packets
    }

    /// The router a channel leads into, if any.
    fn channel_router(&self, ch: ChannelId) -> Option<usize> {
        match self.channels[ch as usize].to.node {
            NodeRef::Router(r) => Some(r.0 as usize),
            NodeRef::Endpoint(_) => None,
        }
    }

    /// The train's last response arrived.
    pub(super) fn finish_train<S: Scheduler<FabricEvent>>(&mut self, sched: &mut S, id: TrainId) {
        let Some(mut train) = self.trains.remove(id) else {
            return;
        };
        let Some(params) = self.train_params(train.ep, train.transfer) else {
            return;
        };
        // The whole-train evaluation made at the start still holds: nothing
        // touched the train's channels since (anything that would have split it).
        let ev = match train.full.take() {
            Some(ev) => ev,
            None => evaluate(&train, &params, None, self.train_spares.evaluation()),
        };
        self.settle_train(sched, &train, &ev, |_| true);
        let ep = train.ep;
        self.endpoints[ep].dma.reserved &= !train.tids;
        if let Some(t) = self.endpoints[ep].dma.transfers.get_mut(&train.transfer) {
            t.in_train = None;
            t.acked_packets += train.packets;
        }
        self.complete(sched, ep, train.transfer, Ok(()));
        for i in 0..train.legs.len() {
            self.try_grant(sched, train.legs[i].ch);
        }
        self.train_spares.give_back(train, ev);
        self.pump(sched, ep);
    }

    /// Splits train `id` now: packets already injected keep their computed
    /// times; the rest of the transfer continues packet by packet. For a
    /// fault, packets whose response had not arrived are lost and will time
    /// out (and be retried) like packet-level ones.
    pub(super) fn split_train<S: Scheduler<FabricEvent>>(
        &mut self,
        sched: &mut S,
        id: TrainId,
        cause: SplitCause,
    ) {
        let Some(train) = self.trains.remove(id) else {
            return;
        };
        let now = sched.now();
        let Some(params) = self.train_params(train.ep, train.transfer) else {
            return;
        };
        let ev = evaluate(&train, &params, Some(now), self.train_spares.evaluation());
        let committed = ev.times.len() as u64;
        let ep = train.ep;
        self.endpoints[ep].counters.dma.train_splits += 1;
        sched.note(
            self.component_of_endpoint(ep),
            note::TRAIN_SPLIT,
            (train.transfer.0, committed),
        );
        // A write has landed once its request arrived, a read once its response did;
        // at a contention split every injected packet still lands as computed.
        let cutoff = if cause == SplitCause::Contention {
            Instant::MAX
        } else {
            now
        };
        let is_write = params.is_write;
        self.settle_train(sched, &train, &ev, |p| {
            (if is_write { p.deliver } else { p.response }) <= cutoff
        });
        // Packets whose response is still to come hold a transaction ID.
        let mut pending = Vec::new();
        let mut done = 0u64;
        for (j, p) in ev.times.iter().enumerate() {
            if p.response <= now {
                done += 1;
            } else {
                pending.push((train.first_packet + j as u64, *p));
            }
        }
        let comp = self.component_of_endpoint(ep);
        let timeout = self.config.transaction_timeout;
        let Some(t) = self.endpoints[ep].dma.transfers.get_mut(&train.transfer) else {
            return;
        };
        t.in_train = None;
        t.acked_packets += done;
        t.next_packet = train.first_packet + committed;
        t.outstanding += pending.len() as u32;
        let more = t.next_packet < t.total_packets;
        // The issue queue dropped the transfer when the train took all its
        // packets; put it back at the front if packets are left to send.
        let queue = &mut self.endpoints[ep].dma.queue;
        if more && !queue.contains(&train.transfer) {
            queue.push_front(train.transfer);
        }
        let (plane, transfer) = (train.plane, train.transfer);
        // The train's packets in flight take the TIDs it reserved (other
        // transfers of the requester may hold the rest meanwhile).
        self.endpoints[ep].dma.reserved &= !train.tids;
        let tids = (0..16usize).filter(|&i| train.tids & (1 << i) != 0);
        debug_assert!(pending.len() <= train.tids.count_ones() as usize);
        for (tid, (idx, p)) in tids.zip(pending) {
            let serial = self.endpoints[ep].dma.next_serial();
            let packet =
                self.endpoints[ep].dma.transfers[&transfer].packet(idx, params.max_payload);
            let ghost = cause == SplitCause::Contention;
            self.endpoints[ep].dma.slots[tid] =
                Some(Outstanding::first(transfer, packet, plane, serial, ghost));
            let tid = tid as u8;
            if ghost {
                sched.schedule(
                    p.response,
                    comp,
                    FabricEvent::TrainAck {
                        ep: ep as u32,
                        tid,
                        serial,
                    },
                );
            } else {
                let deadline = (p.inject + timeout).max(now);
                if let Some(slot) = self.endpoints[ep].dma.slots[tid as usize].as_mut() {
                    slot.deadline = deadline;
                }
                self.arm_timer(sched, ep, deadline);
            }
        }
        self.train_spares.give_back(train, ev);
        let t = &self.endpoints[ep].dma.transfers[&transfer];
        if t.acked_packets == t.total_packets {
            self.complete(sched, ep, transfer, Ok(()));
        }
        // Continue packet by packet; don't start a new train from inside a split.
        self.pump_with(sched, ep, false);
    }

    /// Splits every train whose target is `owner` (its AVT is about to change).
    pub(super) fn split_trains_targeting<S: Scheduler<FabricEvent>>(
        &mut self,
        sched: &mut S,
        owner: EndpointId,
    ) {
        let ids = self.trains.ids_where(|t| t.target == owner);
        for id in ids {
            self.split_train(sched, id, SplitCause::Contention);
        }
    }
}
