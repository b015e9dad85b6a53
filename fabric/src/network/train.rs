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
use crate::ids::{EndpointId, FabricAddr, Plane};
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

#[derive(Debug, Clone)]
struct ChanTiming {
    ch: ChannelId,
    bandwidth: Bandwidth,
    latency: Duration,
    header_time: Duration,
    /// When the channel finishes what it was sending when the train started.
    busy_until: Instant,
    /// When each credit is available, earliest first (free ones at time zero).
    credit_ready: Vec<Instant>,
}

/// Per-channel state of the recurrence.
#[derive(Debug, Clone)]
struct ChanState {
    last_end: Instant,
    /// Credit-return times of the last C packets (ring indexed by packet % C).
    credits: Vec<Instant>,
    packets: u64,
    bytes: u64,
    busy_ps: u64,
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
    ep: usize,
    target_ep: usize,
    requester: EndpointId,
    target: EndpointId,
    transfer: TransferId,
    plane: Plane,
    fwd: Vec<ChanTiming>,
    rev: Vec<ChanTiming>,
    channels: Vec<ChannelId>,
    routers: Vec<usize>,
    start: Instant,
    /// First packet index of the transfer carried by the train.
    first_packet: u64,
    /// Number of packets carried.
    packets: u64,
    end: Instant,
}

impl Train {
    pub(super) fn channels(&self) -> &[ChannelId] {
        &self.channels
    }
    pub(super) fn routers(&self) -> &[usize] {
        &self.routers
    }
    pub(super) fn involves(&self, e: EndpointId) -> bool {
        self.requester == e || self.target == e
    }
}

/// Result of evaluating the recurrence over a prefix of a train.
struct Evaluation {
    fwd: Vec<ChanState>,
    rev: Vec<ChanState>,
    times: Vec<PacketTimes>,
}

struct Params {
    path_formation: Duration,
    turnaround: Duration,
    credits: usize,
    window: usize,
    max_payload: u64,
    len: u64,
    is_write: bool,
}

fn traverse(
    chans: &[ChanTiming],
    st: &mut [ChanState],
    j: usize,
    ready: Instant,
    size: u64,
    p: &Params,
) -> Instant {
    let c = p.credits;
    let mut request = ready;
    let mut tail_here = ready;
    for i in 0..chans.len() {
        let ch = &chans[i];
        let credit = st[i].credits[j % c];
        let grant = request.max(st[i].last_end).max(credit);
        let end = (grant + ch.bandwidth.serialization(size)).max(tail_here);
        st[i].last_end = end;
        st[i].packets += 1;
        st[i].bytes += size;
        st[i].busy_ps += (end - grant).as_ps();
        if i > 0 {
            // The tail leaves node i's input buffer: credit back to channel i-1's sender.
            st[i - 1].credits[j % c] = end + chans[i - 1].latency;
        }
        request = grant + ch.latency + ch.header_time + p.path_formation;
        tail_here = end + ch.latency;
    }
    // The endpoint consumes the packet when its tail arrives.
    let last = chans.len() - 1;
    st[last].credits[j % c] = tail_here + chans[last].latency;
    tail_here
}

fn evaluate(train: &Train, p: &Params, stop_before: Option<Instant>) -> Evaluation {
    let init = |chans: &[ChanTiming]| -> Vec<ChanState> {
        chans
            .iter()
            .map(|c| ChanState {
                last_end: c.busy_until,
                credits: c.credit_ready.clone(),
                packets: 0,
                bytes: 0,
                busy_ps: 0,
            })
            .collect()
    };
    let mut ev = Evaluation {
        fwd: init(&train.fwd),
        rev: init(&train.rev),
        times: Vec::new(),
    };
    for j in 0..train.packets as usize {
        let inject = if j < p.window {
            train.start
        } else {
            ev.times[j - p.window].response
        };
        if stop_before.is_some_and(|b| inject >= b) {
            break;
        }
        let idx = train.first_packet + j as u64;
        let off = idx * p.max_payload;
        let n = p.len.saturating_sub(off).min(p.max_payload) as usize;
        let (req_size, resp_size) = if p.is_write {
            (wire_len(n), wire_len(0))
        } else {
            (wire_len(0), wire_len(n))
        };
        let deliver = traverse(&train.fwd, &mut ev.fwd, j, inject, req_size as u64, p);
        let response = traverse(
            &train.rev,
            &mut ev.rev,
            j,
            deliver + p.turnaround,
            resp_size as u64,
            p,
        );
        ev.times.push(PacketTimes {
            inject,
            deliver,
            response,
        });
    }
    ev
}

impl Fabric {
    fn train_params(&self, ep: usize, id: TransferId) -> Option<Params> {
        let t = self.endpoints[ep].dma.transfers.get(&id)?;
        Some(Params {
            path_formation: self.config.path_formation,
            turnaround: self.config.turnaround,
            credits: self.config.buffer_slots as usize,
            window: self.config.max_outstanding as usize,
            max_payload: self.config.limits.max_payload as u64,
            len: t.req.len,
            is_write: t.req.op.is_write(),
        })
    }

    fn timing_of(&self, hops: &[crate::topology::Hop]) -> Vec<ChanTiming> {
        hops.iter()
            .map(|h| {
                let l = &self.topology.links()[h.link];
                let ch = if l.a == h.from {
                    2 * h.link as u32
                } else {
                    2 * h.link as u32 + 1
                };
                let c = &self.channels[ch as usize];
                let mut credit_ready = vec![Instant::ZERO; c.credits as usize];
                let mut pending = c.pending_credits.clone();
                pending.sort();
                credit_ready.extend(pending);
                ChanTiming {
                    ch,
                    bandwidth: c.bandwidth,
                    latency: c.latency,
                    header_time: c.header_time,
                    busy_until: c.busy_until,
                    credit_ready,
                }
            })
            .collect()
    }

    /// Starts transfer `id` of requester `ep` as a train if its path is idle
    /// and nothing in it needs packet-level treatment. Returns whether it did.
    pub(super) fn try_start_train<S: Scheduler<FabricEvent>>(
        &mut self,
        sched: &mut S,
        ep: usize,
        id: TransferId,
    ) -> bool {
        if !self.config.trains || self.force_packet_level || self.config.crc_error_rate > 0.0 {
            return false;
        }
        let now = sched.now();
        let Some(t) = self.endpoints[ep].dma.transfers.get(&id) else {
            return false;
        };
        let remaining = t.total_packets - t.next_packet;
        if remaining < 2
            || t.failed
            || t.in_train.is_some()
            || !self.endpoints[ep].dma.all_slots_free()
        {
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
        if entry.requester != requester
            || !entry.access.contains(need)
            || entry.access.contains(crate::avt::Access::INTERRUPT)
            || remote.offset() as u64 + first_off + rest > entry.len as u64
        {
            return false;
        }
        let (Some(fwd_hops), Some(rev_hops)) = (
            self.topology.path(plane, requester, target),
            self.topology.path(plane, target, requester),
        ) else {
            return false;
        };
        let fwd = self.timing_of(&fwd_hops);
        let rev = self.timing_of(&rev_hops);
        let mut routers = Vec::new();
        for h in fwd_hops.iter().chain(&rev_hops) {
            if let NodeRef::Router(r) = h.to.node
                && !routers.contains(&(r.0 as usize))
            {
                routers.push(r.0 as usize);
            }
        }
        if routers.iter().any(|&r| !self.routers[r].up) {
            return false;
        }
        let channels: Vec<ChannelId> = fwd.iter().chain(&rev).map(|c| c.ch).collect();
        // Nothing may be waiting for these channels; a channel still sending
        // the tail of earlier traffic, or with credits on their way back, is
        // fine: the recurrence starts from that exact state.
        let slots = self.config.buffer_slots as usize;
        let free = channels.iter().all(|&ch| {
            let c = &self.channels[ch as usize];
            c.up && c.train.is_none()
                && c.queue.is_empty()
                && c.credits as usize + c.pending_credits.len() == slots
        });
        if !free {
            return false;
        }
        let train_id = self.next_train;
        self.next_train = self.next_train.wrapping_add(1);
        let mut train = Train {
            ep,
            target_ep,
            requester,
            target,
            transfer: id,
            plane,
            fwd,
            rev,
            channels,
            routers,
            start: now,
            first_packet,
            packets: remaining,
            end: now,
        };
        let params = self.train_params(ep, id).expect("transfer exists");
        let ev = evaluate(&train, &params, None);
        train.end = ev.times.last().map(|p| p.response).unwrap_or(now);
        for &ch in &train.channels {
            self.channels[ch as usize].train = Some(train_id);
        }
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
        sched.schedule(train.end, comp, FabricEvent::TrainDone { train: train_id });
        self.trains.insert(train_id, train);
        true
    }

    /// Applies the effect of packets `0..k` of a train: data, AVT checks,
    /// counters; and hands the channels back to packet-level operation.
    fn settle_train<S: Scheduler<FabricEvent>>(
        &mut self,
        sched: &mut S,
        train: &Train,
        ev: &Evaluation,
        landed: impl Fn(&PacketTimes) -> bool,
    ) -> u64 {
        let now = sched.now();
        let params = self.train_params(train.ep, train.transfer);
        let Some(params) = params else { return 0 };
        let (local, remote) = {
            let t = &self.endpoints[train.ep].dma.transfers[&train.transfer];
            t.req.op.addresses()
        };
        let op = if params.is_write { Op::Write } else { Op::Read };
        let mut landed_packets = 0;
        for (j, times) in ev.times.iter().enumerate() {
            if !landed(times) {
                continue;
            }
            landed_packets += 1;
            let idx = train.first_packet + j as u64;
            let off = idx * params.max_payload;
            let n = params.len.saturating_sub(off).min(params.max_payload);
            let addr = FabricAddr::new(remote.key(), remote.offset() + off as u32);
            let tr =
                self.endpoints[train.target_ep]
                    .avt
                    .validate(train.requester, addr, n as u32, op);
            let Ok(tr) = tr else { continue };
            let (req, tgt) = super::pair(&mut self.endpoints, train.ep, train.target_ep);
            let copied = if params.is_write {
                copy_between(
                    &req.memory,
                    ProcAddr(local.0 + off),
                    &mut tgt.memory,
                    tr.local,
                    n,
                )
            } else {
                copy_between(
                    &tgt.memory,
                    tr.local,
                    &mut req.memory,
                    ProcAddr(local.0 + off),
                    n,
                )
            };
            debug_assert!(copied.is_ok(), "train ranges are checked at start");
        }
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
        for c in &train.fwd {
            if let Some(r) = self.channel_router(c.ch) {
                self.routers[r].counters.routed += sent;
            }
        }
        for c in &train.rev {
            if let Some(r) = self.channel_router(c.ch) {
                self.routers[r].counters.routed += landed_packets;
            }
        }
        let slots = self.config.buffer_slots;
        for (timing, st) in train
            .fwd
            .iter()
            .zip(&ev.fwd)
            .chain(train.rev.iter().zip(&ev.rev))
        {
            let ch = timing.ch;
            let comp = self.component_of_channel(ch);
            let c = &mut self.channels[ch as usize];
            c.train = None;
            c.counters.packets += st.packets;
            c.counters.bytes += st.bytes;
            c.counters.busy_ps += st.busy_ps;
            c.busy_until = c.busy_until.max(st.last_end);
            let pending: Vec<Instant> = st.credits.iter().copied().filter(|&t| t > now).collect();
            c.credits = slots.saturating_sub(pending.len() as u8);
            c.pending_credits.clear();
            for t in pending {
                self.schedule_credit(sched, ch, t);
            }
            let c = &mut self.channels[ch as usize];
            if c.busy_until > now {
                let at = c.busy_until;
                sched.schedule(at, comp, FabricEvent::LinkFree { ch });
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
    pub(super) fn finish_train<S: Scheduler<FabricEvent>>(&mut self, sched: &mut S, id: u32) {
        let Some(train) = self.trains.remove(&id) else {
            return;
        };
        let Some(params) = self.train_params(train.ep, train.transfer) else {
            return;
        };
        let ev = evaluate(&train, &params, None);
        self.settle_train(sched, &train, &ev, |_| true);
        let ep = train.ep;
        if let Some(t) = self.endpoints[ep].dma.transfers.get_mut(&train.transfer) {
            t.in_train = None;
            t.acked_packets += train.packets;
        }
        self.complete(sched, ep, train.transfer, Ok(()));
        let chans = train.channels.clone();
        for ch in chans {
            self.try_grant(sched, ch);
        }
        self.pump(sched, ep);
    }

    /// Splits train `id` now: packets already injected keep their computed
    /// times; the rest of the transfer continues packet by packet. For a
    /// fault, packets whose response had not arrived are lost and will time
    /// out (and be retried) like packet-level ones.
    pub(super) fn split_train<S: Scheduler<FabricEvent>>(
        &mut self,
        sched: &mut S,
        id: u32,
        cause: SplitCause,
    ) {
        let Some(train) = self.trains.remove(&id) else {
            return;
        };
        let now = sched.now();
        let Some(params) = self.train_params(train.ep, train.transfer) else {
            return;
        };
        let ev = evaluate(&train, &params, Some(now));
        let committed = ev.times.len() as u64;
        let ep = train.ep;
        self.endpoints[ep].counters.dma.train_splits += 1;
        sched.note(
            self.component_of_endpoint(ep),
            note::TRAIN_SPLIT,
            (train.transfer.0, committed),
        );
        let landed: Box<dyn Fn(&PacketTimes) -> bool> = match cause {
            SplitCause::Contention => Box::new(|_| true),
            SplitCause::Fault if params.is_write => {
                Box::new(move |p: &PacketTimes| p.deliver <= now)
            }
            SplitCause::Fault => Box::new(move |p: &PacketTimes| p.response <= now),
        };
        self.settle_train(sched, &train, &ev, landed);
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
        for (tid, (idx, p)) in pending.into_iter().enumerate() {
            let serial = self.endpoints[ep].dma.next_serial();
            let (offset, len) = {
                let t = &self.endpoints[ep].dma.transfers[&transfer];
                t.packet(idx, params.max_payload)
            };
            let ghost = cause == SplitCause::Contention;
            self.endpoints[ep].dma.slots[tid] = Some(Outstanding {
                transfer,
                offset,
                len,
                plane,
                attempts: 1,
                planes_tried: 1 << plane.index(),
                serial,
                ghost,
            });
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
                let at = (p.inject + timeout).max(now);
                sched.schedule(
                    at,
                    comp,
                    FabricEvent::Timeout {
                        ep: ep as u32,
                        tid,
                        serial,
                    },
                );
            }
        }
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
        let ids: Vec<u32> = self
            .trains
            .iter()
            .filter_map(|(&i, t)| (t.target == owner).then_some(i))
            .collect();
        for id in ids {
            self.split_train(sched, id, SplitCause::Contention);
        }
    }
}
