//! A cluster whose processors run TCP/IP and applications: the
//! [`rig`](crate::rig) cluster with, on every processor, a CPU
//! ([`Cpu`]), the message system's state ([`Ipc`]), its applications
//! ([`Application`]) and — on the parallel library — its own TCP/IP
//! instance ([`Sockets`]); on the conventional stack one processor runs the
//! only instance and the others reach it by messages
//! ([`crate::conventional`]). [`ClientHost`]s sit on the LAN. One
//! [`HostModel`] drives it all.
//!
//! ## How a processor runs
//! Everything a processor does is a *poll*: take the adapter's completions
//! and interrupts, run the TCP/IP instance, update the socket table, run
//! every application, run the instance again for what they sent, then
//! send the control messages and system messages that piled up. A poll
//! happens on an interrupt, on a message, or at the time the instance or
//! an application asked for — but never while the CPU is busy with earlier
//! work: the poll waits until [`Cpu::free_at`].
//!
//! ## Several adapters, one address
//! With more than one adapter, every processor has a queue pair with each.
//! All adapters hold the same firmware tables (every control message goes
//! to every adapter that is up), each processor reads frames from all its
//! queue pairs, and it sends through the *active* adapter's only: the
//! lowest-numbered adapter up when the previous active one failed (adapter
//! 0 at first). The cluster's MAC is adapter 0's ([`RigConfig::names`], by default [`adapter_mac`]`(0)`).
//!
//! [`NetRig::fail_adapter`] fails an adapter's fabric endpoint (which
//! silences its LAN port). If it was the active one, the next adapter up
//! takes the address over: its MAC starts accepting the cluster's MAC, it
//! sends a gratuitous ARP and an unsolicited neighbour advertisement from
//! the cluster's MAC (so the LAN switch learns the address at its port),
//! and the processors send through it from their next poll. Established
//! connections carry on: the firmware of the new active adapter already
//! holds their filters, and TCP resends what was lost with the failed one.
//! [`NetRig::restore_adapter`] brings an adapter back as a standby.
//!
//! [`NetRig::fail_processor`] and [`NetRig::restore_processor`] take a
//! processor away and bring it back with a fresh host side.

use std::net::IpAddr;

use smoltcp::wire::{Ipv4Address, Ipv6Address};
use snet_fabric::EndpointId;
use snet_fabric::engine::ComponentId;
use snet_fabric::memory::ProcAddr;
use snet_fabric::network::{DmaCompletion, FaultTarget};
use snet_fabric::time::{Duration, Instant};
use snet_firmware::ProcessorId;
use snet_firmware::control::{ControlMessage, Envelope, RejectReason};
use snet_nic_model::mac::{LinkSpeed, MacAddr};
use snet_nic_model::ring::TxFlags;
use snet_nic_model::{Cluster, HostModel, StationId};

use crate::app::{AppContext, Application, Mailbox, Reply, STACK_TAG, SYSTEM_TAG};
use crate::client::ClientHost;
use crate::conventional::{Proxy, StackServer};
use crate::cpu::{Cpu, CpuCosts};
use crate::ipc::{Ipc, IpcConfig, MessageKind};
use crate::processor::Processor;
use crate::queue::{ControlOutcome, QueueState};
use crate::rig::{NoEvent, Rig, RigConfig, adapter_mac};
use crate::socket::{SocketApi, SocketConfig, Sockets, SystemMessage, ephemeral_range};
use crate::stack::{ClusterAddress, ProcessorStack, QueueRole, takeover_announcements};

/// The cluster's IPv4 address in the examples and tests.
pub const CLUSTER_IPV4: Ipv4Address = Ipv4Address::new(198, 18, 0, 10);
/// The cluster's IPv6 address in the examples and tests.
pub const CLUSTER_IPV6: Ipv6Address = Ipv6Address::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);

/// The multicast groups an adapter serving `ipv6` must accept: all nodes,
/// and the solicited-node group of the address (for neighbour discovery).
pub fn ipv6_groups(ipv6: Ipv6Address) -> [MacAddr; 2] {
    let o = ipv6.octets();
    [
        MacAddr([0x33, 0x33, 0, 0, 0, 1]),
        MacAddr([0x33, 0x33, 0xff, o[13], o[14], o[15]]),
    ]
}

/// Where TCP/IP runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StackMode {
    /// A TCP/IP instance in every processor (the parallel library).
    #[default]
    Parallel,
    /// One instance, in processor `at`; applications elsewhere reach it by
    /// inter-processor messages.
    Conventional {
        /// The processor running TCP/IP.
        at: usize,
    },
}

/// What to build.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// The cluster.
    pub rig: RigConfig,
    /// Client hosts on the LAN.
    pub clients: usize,
    /// Where TCP/IP runs.
    pub stack: StackMode,
    /// Socket settings (the ephemeral range and adapter count are filled
    /// in per processor).
    pub sockets: SocketConfig,
    /// CPU costs.
    pub cpu: CpuCosts,
    /// The message system.
    pub ipc: IpcConfig,
    /// How often each processor reports its capacity (its idle CPU, in
    /// thousandths) to the adapters, for the capacity-weighted policy
    /// (`None`: never).
    pub capacity_reports: Option<Duration>,
    /// The cluster's IPv4 address (`None`: IPv6 only).
    pub ipv4: Option<Ipv4Address>,
    /// The cluster's IPv6 address (`None`: IPv4 only).
    pub ipv6: Option<Ipv6Address>,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            rig: RigConfig::default(),
            clients: 1,
            stack: StackMode::Parallel,
            sockets: SocketConfig::default(),
            cpu: CpuCosts::free(),
            ipc: IpcConfig::default(),
            capacity_reports: None,
            ipv4: Some(CLUSTER_IPV4),
            ipv6: Some(CLUSTER_IPV6),
        }
    }
}

/// What a client host does, polled with it: opens connections, sends
/// requests, reads responses (through [`ClientHost::sockets`]).
pub trait ClientBehaviour {
    /// Runs the behaviour at `now`; returns when it next wants to run.
    fn poll(&mut self, host: &mut ClientHost, now: Instant) -> Option<Instant>;
}

struct AppSlot {
    app: Box<dyn Application>,
    mailbox: Mailbox,
    wake: Option<Instant>,
}

/// The processors' and clients' side of a [`NetRig`].
pub struct NetHosts {
    /// One per processor.
    pub processors: Vec<Processor>,
    /// Each processor's sockets on its own TCP/IP instance (parallel
    /// library; on the conventional stack only the stack processor has
    /// one). `None` once the processor failed.
    pub sockets: Vec<Option<Sockets>>,
    /// Each processor's CPU.
    pub cpus: Vec<Cpu>,
    /// The message system.
    pub ipc: Ipc,
    /// Whether each processor is up.
    pub up: Vec<bool>,
    mode: StackMode,
    /// Conventional stack: each processor's proxy to the stack processor.
    proxies: Vec<Proxy>,
    /// Conventional stack: the stack processor's server.
    server: Option<StackServer>,
    apps: Vec<Vec<AppSlot>>,
    components: Vec<ComponentId>,
    adapters: usize,
    /// The client hosts.
    pub clients: Vec<ClientHost>,
    /// What each client host does besides running its stack.
    behaviours: Vec<Option<Box<dyn ClientBehaviour>>>,
    client_components: Vec<ComponentId>,
    /// Errors met on the host side (a test asserts this stays empty).
    pub errors: Vec<String>,
    /// Answers to control messages sent outside the socket library
    /// (processor, adapter, sequence, outcome).
    other_outcomes: Vec<(usize, usize, u32, crate::ControlOutcome)>,
    /// Conventional stack: (from, to) pairs with a batch of stack messages
    /// awaiting its reply.
    stack_inflight: std::collections::BTreeSet<(usize, usize)>,
    /// Capacity reports: the interval, and per processor when the last
    /// one went and the CPU's busy time then.
    capacity_every: Option<Duration>,
    capacity_last: Vec<(Instant, Duration)>,
    /// Conventional stack: calls and events each processor sent.
    stack_messages: Vec<u64>,
    /// Conventional stack: requests that carried them across the fabric.
    stack_batches: Vec<u64>,
    /// Whether each adapter is up.
    adapter_up: Vec<bool>,
    /// The adapter every processor sends through (`None`: every adapter is
    /// down).
    active: Option<usize>,
    /// Processors being restored: their queue pairs take interrupts and
    /// transfers, but they are not polled yet.
    booting: Vec<bool>,
    /// The cluster's addresses.
    address: ClusterAddress,
    /// Transfers to an adapter that failed meanwhile which ended in error:
    /// expected, so not counted in [`NetHosts::errors`].
    pub abandoned_transfers: u64,
    /// Times an adapter took the cluster's MAC over from a failed one.
    pub takeovers: u64,
    /// LAN stations that stand for the world outside the engine (see
    /// [`NetRig::attach_external_station`]).
    external: Vec<StationId>,
    /// Frames the LAN delivered to an external station, waiting to leave
    /// the engine (FCS included).
    external_frames: Vec<(StationId, Vec<u8>)>,
}

impl std::fmt::Debug for NetHosts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetHosts")
            .field("processors", &self.processors.len())
            .field("mode", &self.mode)
            .field("clients", &self.clients.len())
            .field("errors", &self.errors)
            .finish()
    }
}

impl NetHosts {
    fn processor_index(&self, ep: EndpointId) -> Option<usize> {
        self.processors.iter().position(|p| p.endpoint() == ep)
    }

    /// Processor `p`'s TCP/IP instance, if it runs one and is up.
    pub fn stack_mut(&mut self, p: usize) -> Option<&mut ProcessorStack> {
        self.sockets.get_mut(p)?.as_mut().map(|s| &mut s.stack)
    }

    /// Processor `p`'s TCP/IP instance, if it runs one and is up.
    pub fn stack(&self, p: usize) -> Option<&ProcessorStack> {
        self.sockets.get(p)?.as_ref().map(|s| &s.stack)
    }

    /// Where TCP/IP runs.
    pub fn mode(&self) -> StackMode {
        self.mode
    }

    /// Applications on processor `p`.
    pub fn apps(&self, p: usize) -> impl Iterator<Item = &dyn Application> {
        self.apps
            .get(p)
            .into_iter()
            .flatten()
            .map(|s| s.app.as_ref())
    }

    /// Messages (hops) processor `p` sent to other processes: its
    /// applications' and library's inter-processor requests, and on the
    /// conventional stack every socket call or event exchanged with the
    /// TCP/IP process — each counted once, whether it crossed the fabric
    /// (several travel in one request) or stayed in the processor.
    pub fn hops(&self, p: usize) -> u64 {
        self.ipc
            .counters(p)
            .requests_sent
            .saturating_sub(self.stack_batches[p])
            + self.stack_messages[p]
    }

    /// The adapter every processor sends through: the lowest-numbered
    /// adapter that was up when the previous active one failed (`None`
    /// while every adapter is down).
    pub fn active_adapter(&self) -> Option<usize> {
        self.active
    }

    /// Whether adapter `a` is up.
    pub fn adapter_up(&self, a: usize) -> bool {
        self.adapter_up.get(a).copied().unwrap_or(false)
    }

    /// How a processor's stack uses its queue pair with each adapter now.
    fn roles(&self) -> Vec<QueueRole> {
        (0..self.adapters)
            .map(|a| {
                if !self.adapter_up[a] {
                    QueueRole::Idle
                } else if self.active == Some(a) {
                    QueueRole::Active
                } else {
                    QueueRole::Standby
                }
            })
            .collect()
    }

    /// Whether a control message of an up processor waits to be sent to,
    /// or answered by, an adapter that is up.
    fn control_pending(&self) -> bool {
        (0..self.processors.len()).any(|i| {
            (self.up[i] || self.booting[i])
                && (self.sockets[i]
                    .as_ref()
                    .is_some_and(|s| s.control_pending())
                    || self.processors[i]
                        .queues()
                        .iter()
                        .any(|q| self.adapter_up(q.nic()) && q.control_pending()))
        })
    }

    /// Polls processor `i` now (or when its CPU is free) and schedules its
    /// next poll.
    pub fn poll_processor(&mut self, cluster: &mut Cluster<NoEvent>, i: usize) {
        if !self.up.get(i).copied().unwrap_or(false) {
            return;
        }
        let now = cluster.now();
        if let Some(at) = self.cpus[i].free_at(now) {
            cluster.wake_host(self.components[i], at);
            return;
        }
        self.take_messages(cluster, i);
        let mut next = self.run_stack(cluster, i);
        let before = self.calls(i);
        next = earliest(next, self.run_apps(cluster, i));
        let after = self.calls(i);
        if after != before {
            // What the applications queued goes out now.
            next = earliest(next, self.run_stack(cluster, i));
        }
        next = earliest(next, self.report_capacity(cluster.now(), i));
        self.flush(cluster, i);
        if let Some(at) = self.cpus[i].free_at(cluster.now()) {
            next = Some(next.map_or(at, |n| n.max(at)));
        }
        if let Some(at) = next {
            cluster.wake_host(self.components[i], at.max(cluster.now()));
        }
    }

    /// Sends processor `i`'s capacity report if one is due; returns when
    /// the next is.
    fn report_capacity(&mut self, now: Instant, i: usize) -> Option<Instant> {
        let every = self.capacity_every?;
        let (last, busy_then) = self.capacity_last[i];
        let due = last + every;
        if now < due {
            return Some(due);
        }
        let busy = self.cpus[i].busy();
        let span = now.saturating_since(last).as_ps().max(1);
        let used = busy.as_ps().saturating_sub(busy_then.as_ps()).min(span);
        let idle = 1000 - (used as u128 * 1000 / span as u128) as u32;
        if let Some(s) = self.sockets[i].as_mut() {
            // A saturated processor still gets a trickle (weight 1), so it
            // is never starved of new connections entirely.
            s.report_capacity(idle.max(1));
        }
        self.capacity_last[i] = (now, busy);
        Some(now + every)
    }

    fn calls(&self, i: usize) -> u64 {
        let local = self.sockets[i].as_ref().map_or(0, |s| s.counters().calls);
        local + self.proxies.get(i).map_or(0, |p| p.calls())
    }

    /// Runs the TCP/IP instance of processor `i`, if it has one, over its
    /// queue pairs: it reads from every adapter and sends through the
    /// active one.
    fn run_stack(&mut self, cluster: &mut Cluster<NoEvent>, i: usize) -> Option<Instant> {
        let roles = self.roles();
        let sockets = self.sockets[i].as_mut()?;
        let qps = self.processors[i].queues_mut();
        let before = sockets.stack.counters().rx_frames + sockets.stack.counters().tx_frames;
        // Again while a connection attempt waits for a listening socket
        // (`maintain` opens it).
        let r = loop {
            let r = sockets.stack.poll_queues(cluster, qps, &roles);
            let starved = sockets.stack.gate.starved.is_some();
            sockets.maintain();
            if !starved || r.is_err() {
                break r;
            }
        };
        let after = sockets.stack.counters().rx_frames + sockets.stack.counters().tx_frames;
        self.cpus[i].segments(cluster.now(), after - before);
        if let Some(server) = self.server.as_mut().filter(|s| s.processor() == i) {
            server.serve(sockets, cluster.now());
        }
        match r {
            Ok(at) => at,
            Err(e) => {
                self.errors.push(format!("P{i}: {e}"));
                None
            }
        }
    }

    fn run_apps(&mut self, cluster: &mut Cluster<NoEvent>, i: usize) -> Option<Instant> {
        let now = cluster.now();
        let processors = self.processors.len();
        let mut next = None;
        let NetHosts {
            apps,
            sockets,
            proxies,
            cpus,
            ipc,
            mode,
            ..
        } = self;
        for slot in apps[i].iter_mut() {
            let mut local;
            let mut remote;
            let api: &mut dyn SocketApi = match mode {
                StackMode::Parallel => match sockets[i].as_mut() {
                    Some(s) => {
                        local = s.api(now);
                        &mut local
                    }
                    None => continue,
                },
                StackMode::Conventional { at } if *at == i => match sockets[i].as_mut() {
                    // Applications on the stack processor still talk to
                    // the TCP/IP process through its proxy (a local hop).
                    Some(_) => {
                        remote = proxies[i].api(now);
                        &mut remote
                    }
                    None => continue,
                },
                StackMode::Conventional { .. } => {
                    remote = proxies[i].api(now);
                    &mut remote
                }
            };
            let mut cx = AppContext {
                api,
                cpu: &mut cpus[i],
                ipc,
                cluster,
                mailbox: &mut slot.mailbox,
                processors,
            };
            slot.wake = slot.app.poll(&mut cx);
            next = earliest(next, slot.wake);
        }
        next
    }

    /// Sends what processor `i`'s library queued: control messages to
    /// every adapter that is up, system and stack messages to other
    /// processors.
    fn flush(&mut self, cluster: &mut Cluster<NoEvent>, i: usize) {
        let pid = ProcessorId(i as u16);
        let live = self.adapter_up.iter().filter(|u| **u).count();
        if let Some(sockets) = self.sockets[i].as_mut() {
            for (op, message) in sockets.take_control() {
                let env = Envelope::new(pid, message);
                for q in 0..self.adapters {
                    if !self.adapter_up[q] {
                        // A down adapter is brought back in step when it
                        // returns; with none up, the operation fails.
                        if live == 0 {
                            sockets.control_failed(op);
                        } else {
                            sockets.control_skipped(op);
                        }
                        continue;
                    }
                    match self.processors[i].queue_mut(q) {
                        Some(qp) => match qp.send_control(cluster, &env) {
                            Ok(seq) => sockets.control_sent(op, q, seq),
                            Err(e) => {
                                self.errors
                                    .push(format!("P{i}: control to adapter {q}: {e}"));
                                sockets.control_failed(op);
                            }
                        },
                        None => {
                            self.errors.push(format!("P{i}: no queue to adapter {q}"));
                            sockets.control_failed(op);
                        }
                    }
                }
            }
            for out in sockets.take_system() {
                let payload = out.message.to_bytes();
                match self
                    .ipc
                    .send_request(cluster, i, out.to, SYSTEM_TAG, &payload)
                {
                    Ok(_) => self.cpus[i].messages(cluster.now(), 1),
                    Err(crate::ipc::IpcError::WouldBlock { .. }) => sockets.requeue_system(out),
                    Err(crate::ipc::IpcError::PeerDown(_)) => sockets.system_undeliverable(out),
                    Err(e) => self.errors.push(format!("P{i} → P{}: {e}", out.to)),
                }
            }
        }
        // The conventional stack's messages, both ways.
        let mut outgoing = Vec::new();
        if let Some(p) = self.proxies.get_mut(i) {
            outgoing.extend(p.take_outgoing().into_iter().map(|(to, b)| (to, b, true)));
        }
        if let Some(s) = self.server.as_mut().filter(|s| s.processor() == i) {
            outgoing.extend(s.take_outgoing().into_iter().map(|(to, b)| (to, b, false)));
        }
        // Messages to one peer travel in order: they are packed, length
        // first, into one request, and the next request to that peer waits
        // for the previous one's reply (the message system delivers
        // different slots in any order).
        let max = self.ipc.config().max_payload();
        let mut local = Vec::new();
        let mut batches: std::collections::BTreeMap<usize, (Vec<u8>, bool)> =
            std::collections::BTreeMap::new();
        let mut held = Vec::new();
        for (to, bytes, from_proxy) in outgoing {
            if to == i {
                local.push((bytes, from_proxy));
                continue;
            }
            let full = batches
                .get(&to)
                .is_some_and(|(b, _)| b.len() + 4 + bytes.len() > max);
            if self.stack_inflight.contains(&(i, to))
                || full
                || held.iter().any(|h: &(usize, Vec<u8>, bool)| h.0 == to)
            {
                held.push((to, bytes, from_proxy));
                continue;
            }
            let entry = batches
                .entry(to)
                .or_insert_with(|| (Vec::new(), from_proxy));
            entry
                .0
                .extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            entry.0.extend_from_slice(&bytes);
        }
        for (to, (batch, from_proxy)) in batches {
            match self.ipc.send_request(cluster, i, to, STACK_TAG, &batch) {
                Ok(_) => {
                    // Each call or event in the batch is a message of its
                    // own to the processes; the batch is only transport.
                    let n = crate::conventional::Reader::new(&batch).count() as u64;
                    self.cpus[i].messages(cluster.now(), n);
                    self.stack_messages[i] += n;
                    self.stack_batches[i] += 1;
                    self.stack_inflight.insert((i, to));
                }
                Err(crate::ipc::IpcError::WouldBlock { .. }) => {
                    // Put the batch back, in order, ahead of what waited.
                    let mut r = crate::conventional::Reader::new(&batch);
                    let mut again = Vec::new();
                    while let Some(m) = r.frame() {
                        again.push((to, m.to_vec(), from_proxy));
                    }
                    held.splice(0..0, again);
                }
                Err(e) => self.errors.push(format!("P{i} → P{to}: {e}")),
            }
        }
        for (to, bytes, from_proxy) in held {
            if from_proxy {
                self.proxies[i].requeue(to, bytes);
            } else if let Some(s) = self.server.as_mut() {
                s.requeue(to, bytes);
            }
        }
        // A message between a proxy and the server in the same processor
        // does not cross the fabric, but it is still a hop.
        for (bytes, from_proxy) in local {
            self.cpus[i].messages(cluster.now(), 1);
            self.stack_messages[i] += 1;
            if from_proxy {
                if let (Some(server), Some(sockets)) =
                    (self.server.as_mut(), self.sockets[i].as_mut())
                {
                    server.request(sockets, i, &bytes, cluster.now());
                }
            } else {
                self.proxies[i].event(&bytes);
            }
            cluster.wake_host(self.components[i], cluster.now());
        }
    }

    /// Routes the messages that reached processor `i`.
    fn take_messages(&mut self, cluster: &mut Cluster<NoEvent>, i: usize) {
        while let Some(m) = self.ipc.take(i) {
            self.cpus[i].messages(cluster.now(), 1);
            match &m.kind {
                MessageKind::Request(r) => {
                    let r = r.clone();
                    if m.tag == SYSTEM_TAG {
                        match (
                            SystemMessage::from_bytes(&m.payload),
                            self.sockets[i].as_mut(),
                        ) {
                            (Some(msg), Some(s)) => s.system_message(m.from, msg),
                            (None, _) => self
                                .errors
                                .push(format!("P{i}: a malformed system message from P{}", m.from)),
                            (_, None) => {}
                        }
                        self.ack(cluster, i, &r);
                    } else if m.tag == STACK_TAG {
                        let extra = crate::conventional::Reader::new(&m.payload)
                            .count()
                            .saturating_sub(1) as u64;
                        self.cpus[i].messages(cluster.now(), extra);
                        let mut frames = crate::conventional::Reader::new(&m.payload);
                        while let Some(one) = frames.frame() {
                            match (self.server.as_mut(), self.sockets[i].as_mut()) {
                                (Some(server), Some(sockets)) if server.processor() == i => {
                                    server.request(sockets, m.from, one, cluster.now());
                                }
                                // Only the stack processor sends a proxy events.
                                _ if matches!(self.mode, StackMode::Conventional { at } if at == m.from) => {
                                    self.proxies[i].event(one)
                                }
                                _ => {}
                            }
                        }
                        self.ack(cluster, i, &r);
                    } else {
                        let service = (m.tag & u64::from(u32::MAX)) as u32;
                        match self.apps[i]
                            .iter_mut()
                            .find(|s| s.app.service() == Some(service))
                        {
                            Some(slot) => slot.mailbox.requests.push_back(m),
                            None => {
                                // No such service: an empty reply says so.
                                self.ack(cluster, i, &r);
                            }
                        }
                    }
                }
                MessageKind::Reply { request, result } => {
                    let (request, result) = (*request, result.clone());
                    if m.tag == STACK_TAG {
                        self.stack_inflight.remove(&(i, m.from));
                        continue;
                    }
                    if m.tag & (SYSTEM_TAG | STACK_TAG) != 0 {
                        continue;
                    }
                    if let Some(slot) = self.apps[i]
                        .iter_mut()
                        .find(|s| s.mailbox.sent.contains(&request))
                    {
                        slot.mailbox.sent.retain(|r| *r != request);
                        slot.mailbox.replies.push_back(Reply {
                            request,
                            result,
                            payload: m.payload,
                        });
                    }
                }
            }
        }
    }

    fn ack(&mut self, cluster: &mut Cluster<NoEvent>, i: usize, r: &crate::ipc::RequestRef) {
        if let Err(e) = self.ipc.reply(cluster, r, &[]) {
            if !matches!(e, crate::ipc::IpcError::PeerDown(_)) {
                self.errors.push(format!("P{i}: reply: {e}"));
            }
        }
    }

    /// Polls client `c` now — its stack, then its behaviour, then its
    /// stack again for what the behaviour sent — and schedules its next poll.
    pub fn poll_client(&mut self, cluster: &mut Cluster<NoEvent>, c: usize) {
        let mut next = self.clients[c].poll(cluster);
        if let Some(b) = self.behaviours[c].as_mut() {
            let now = cluster.now();
            let wake = b.poll(&mut self.clients[c], now);
            next = earliest(self.clients[c].poll(cluster), wake);
        }
        if let Some(at) = next {
            cluster.wake_host(self.client_components[c], at.max(cluster.now()));
        }
    }

    /// The behaviour of client `c`, if it has one.
    pub fn behaviour(&self, c: usize) -> Option<&dyn ClientBehaviour> {
        self.behaviours.get(c)?.as_deref()
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

impl HostModel<NoEvent> for NetHosts {
    fn event(&mut self, _: &mut Cluster<NoEvent>, _: ComponentId, _: NoEvent) {}

    fn wake(&mut self, cluster: &mut Cluster<NoEvent>, component: ComponentId) {
        if let Some(i) = self.components.iter().position(|&c| c == component) {
            self.poll_processor(cluster, i);
        } else if let Some(c) = self.client_components.iter().position(|&c| c == component) {
            self.poll_client(cluster, c);
        }
    }

    fn interrupt(&mut self, cluster: &mut Cluster<NoEvent>, processor: EndpointId) {
        let Some(i) = self.processor_index(processor) else {
            return;
        };
        if !self.up[i] && !self.booting[i] {
            return;
        }
        let ipc = &mut self.ipc;
        let r = self.processors[i].on_interrupt_with(cluster, |cluster, entry| {
            ipc.on_interrupt(cluster, i, entry)
        });
        if let Err(e) = r {
            self.errors.push(format!("P{i}: {e}"));
        }
        for q in 0..self.processors[i].queues().len() {
            let qp = self.processors[i].queue_mut(q).expect("index in range");
            for (seq, outcome) in qp.take_outcomes() {
                let mine = self.sockets[i]
                    .as_mut()
                    .is_some_and(|s| s.control_outcome(q, seq, outcome));
                if !mine {
                    self.other_outcomes.push((i, q, seq, outcome));
                }
            }
        }
        self.poll_processor(cluster, i);
    }

    fn dma_done(&mut self, cluster: &mut Cluster<NoEvent>, done: DmaCompletion) {
        if self.ipc.on_dma_done(cluster, &done) {
            // A failed request completes with a reply: serve it.
            if let Some(i) = self.processor_index(done.requester)
                && self.ipc.has_messages(i)
            {
                cluster.wake_host(self.components[i], cluster.now());
            }
            return;
        }
        if let Some(i) = self.processor_index(done.requester) {
            if !self.up[i] && !self.booting[i] {
                return;
            }
            for q in 0..self.processors[i].queues().len() {
                let qp = self.processors[i].queue_mut(q).expect("index in range");
                let nic = qp.nic();
                match qp.on_dma_done(cluster, &done) {
                    Ok(false) => continue,
                    Ok(true) => {}
                    // A doorbell or mailbox write to an adapter that failed
                    // meanwhile: expected.
                    Err(_) if !self.adapter_up(nic) => self.abandoned_transfers += 1,
                    Err(e) => self.errors.push(format!("P{i}: {e}")),
                }
                break;
            }
        }
    }

    fn lan_frame(&mut self, cluster: &mut Cluster<NoEvent>, station: StationId, frame: Vec<u8>) {
        if let Some(c) = self.clients.iter().position(|h| h.station == station) {
            self.clients[c].deliver(frame);
            self.poll_client(cluster, c);
        } else if self.external.contains(&station) {
            self.external_frames.push((station, frame));
        }
    }
}

/// A cluster of processors running TCP/IP and applications, one or more
/// adapters, and client hosts.
#[derive(Debug)]
pub struct NetRig {
    /// The world.
    pub cluster: Cluster<NoEvent>,
    /// Processors, stacks, applications and clients.
    pub hosts: NetHosts,
    /// Processor endpoints.
    pub processors: Vec<EndpointId>,
    /// What was built (for rebuilding a restored processor's side).
    config: NetConfig,
    /// Times each processor was restored (its new TCP/IP instance's seed
    /// differs from the old one's).
    restarts: Vec<u64>,
}

/// A processor's sockets on a new TCP/IP instance: the cluster's addresses,
/// the processor's own ephemeral range, a seed from the rig's seed, the
/// processor and how often it was restored.
fn new_sockets(
    config: &NetConfig,
    address: ClusterAddress,
    p: usize,
    n: usize,
    mtu: usize,
    restarts: u64,
    now: Instant,
) -> Sockets {
    let seed = config
        .rig
        .seed
        .wrapping_mul(1000)
        .wrapping_add(p as u64)
        .wrapping_add(restarts.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let stack = ProcessorStack::new(address, seed, mtu, now);
    let mut sc = config.sockets.clone();
    sc.adapters = usize::from(config.rig.adapters);
    sc.ephemeral = ephemeral_range(p, n);
    Sockets::new(
        stack,
        p,
        config.ipv4.map(IpAddr::V4),
        config.ipv6.map(IpAddr::V6),
        sc,
    )
}

impl NetRig {
    /// Builds the rig with `clients` client hosts (client `c` at
    /// 198.18.1.`c+1` and 2001:db8::1:`c+1`) on the parallel library, with
    /// no CPU costs.
    pub fn new(config: RigConfig, clients: usize) -> Result<NetRig, String> {
        NetRig::build(NetConfig {
            rig: config,
            clients,
            ..NetConfig::default()
        })
    }

    /// Builds the rig from a full configuration.
    pub fn build(config: NetConfig) -> Result<NetRig, String> {
        let mut rig_config = config.rig.clone();
        if config.ipv4.is_none() && config.ipv6.is_none() {
            return Err("the cluster needs an IPv4 or an IPv6 address".into());
        }
        if let Some(v6) = config.ipv6 {
            rig_config.nic.mac.multicast.extend(ipv6_groups(v6));
        }
        let seed = rig_config.seed;
        let memory = rig_config.fabric.memory_size;
        let queue_chunk = rig_config.queue.chunk as usize;
        let adapters = usize::from(rig_config.adapters);
        let rig = Rig::new(rig_config)?;
        let Rig {
            mut cluster,
            hosts,
            processors,
            ..
        } = rig;
        let now = cluster.now();
        let n = hosts.processors.len();
        if let StackMode::Conventional { at } = config.stack
            && at >= n
        {
            return Err(format!(
                "the conventional stack runs on processor {at}, but there are {n}"
            ));
        }
        let address = ClusterAddress {
            mac: config.rig.names.first().map_or(adapter_mac(0), |n| n.1).0,
            ipv4: config.ipv4.map(|a| (a, 15)),
            ipv6: config.ipv6.map(|a| (a, 64)),
        };
        let mut procs = hosts.processors;
        let mut arenas = Vec::new();
        for p in procs.iter_mut() {
            let at = p.reserve(0);
            let len = memory.checked_sub(at.0).filter(|l| *l > 0).ok_or_else(|| {
                format!(
                    "{}: no memory left for messages after the queue pairs",
                    p.endpoint()
                )
            })?;
            arenas.push((p.endpoint(), at, len));
        }
        let ipc = Ipc::new(config.ipc, arenas).map_err(|e| e.to_string())?;
        let mut sockets = Vec::new();
        let mut components = Vec::new();
        for (i, p) in procs.iter().enumerate() {
            let runs_stack = match config.stack {
                StackMode::Parallel => true,
                StackMode::Conventional { at } => at == i,
            };
            if runs_stack {
                let mtu = p
                    .queues()
                    .first()
                    .map_or(queue_chunk, |q| q.setup().chunk as usize);
                sockets.push(Some(new_sockets(&config, address, i, n, mtu, 0, now)));
            } else {
                sockets.push(None);
            }
            components.push(cluster.host_component());
        }
        let max_payload = config.ipc.max_payload();
        let (proxies, server) = match config.stack {
            StackMode::Parallel => (Vec::new(), None),
            StackMode::Conventional { at } => (
                (0..n)
                    .map(|i| Proxy::new(i, at, config.sockets.clone(), max_payload))
                    .collect(),
                Some(StackServer::new(at, config.sockets.clone(), max_payload)),
            ),
        };
        let mut hosts = NetHosts {
            processors: procs,
            sockets,
            cpus: vec![Cpu::new(config.cpu); n],
            ipc,
            up: vec![true; n],
            mode: config.stack,
            proxies,
            server,
            apps: (0..n).map(|_| Vec::new()).collect(),
            components,
            adapters,
            clients: Vec::new(),
            behaviours: Vec::new(),
            client_components: Vec::new(),
            errors: Vec::new(),
            other_outcomes: Vec::new(),
            stack_inflight: std::collections::BTreeSet::new(),
            capacity_every: config.capacity_reports,
            capacity_last: vec![(now, Duration::ZERO); n],
            stack_messages: vec![0; n],
            stack_batches: vec![0; n],
            adapter_up: vec![true; adapters],
            active: (adapters > 0).then_some(0),
            booting: vec![false; n],
            address,
            abandoned_transfers: 0,
            takeovers: 0,
            external: Vec::new(),
            external_frames: Vec::new(),
        };
        for c in 0..config.clients {
            let (hi, lo) = ((c / 250) as u8, (c % 250) as u8 + 1);
            let mac = [0x02, 0, 0, 1, hi, lo];
            let station = cluster.lan.attach(MacAddr(mac), LinkSpeed::GBIT_1);
            hosts.clients.push(ClientHost::new(
                station,
                mac,
                Some((Ipv4Address::new(198, 18, 1 + hi, lo), 15)),
                Some((
                    Ipv6Address::new(0x2001, 0xdb8, 0, 0, 0, 0, 1 + u16::from(hi), u16::from(lo)),
                    64,
                )),
                seed.wrapping_mul(7919).wrapping_add(c as u64),
                now,
            ));
            hosts.client_components.push(cluster.host_component());
            hosts.behaviours.push(None);
        }
        Ok(NetRig {
            cluster,
            hosts,
            processors,
            config,
            restarts: vec![0; n],
        })
    }

    /// Starts `app` on processor `p`; it is first polled now.
    pub fn spawn(&mut self, p: usize, app: Box<dyn Application>) -> Result<(), String> {
        let n = self.hosts.apps.len();
        let slots = self
            .hosts
            .apps
            .get_mut(p)
            .ok_or_else(|| format!("no processor {p} (there are {n})"))?;
        slots.push(AppSlot {
            app,
            mailbox: Mailbox::default(),
            wake: None,
        });
        let at = self.cluster.now();
        self.cluster.wake_host(self.hosts.components[p], at);
        Ok(())
    }

    /// Gives client host `c` a behaviour; it is first polled now.
    pub fn attach_client(
        &mut self,
        c: usize,
        behaviour: Box<dyn ClientBehaviour>,
    ) -> Result<(), String> {
        let n = self.hosts.clients.len();
        let slot = self
            .hosts
            .behaviours
            .get_mut(c)
            .ok_or_else(|| format!("no client {c} (there are {n})"))?;
        *slot = Some(behaviour);
        let at = self.cluster.now();
        self.cluster.wake_host(self.hosts.client_components[c], at);
        Ok(())
    }

    /// Attaches a LAN station that stands for the world outside the engine
    /// (a TAP device, a test harness) at `speed`. Frames the LAN delivers
    /// to it wait in [`NetRig::take_external_frames`]; frames from outside
    /// enter the LAN with [`NetRig::external_transmit`]. `mac` is the
    /// address it attaches with; the switch also learns every source
    /// address the station sends from, so the outside may use its own.
    pub fn attach_external_station(&mut self, mac: MacAddr, speed: LinkSpeed) -> StationId {
        let station = self.cluster.lan.attach(mac, speed);
        self.hosts.external.push(station);
        station
    }

    /// External station `station` sends `frame` (an Ethernet frame without
    /// FCS) now: it is padded to the 60-byte minimum and given its FCS.
    /// Returns when its last bit leaves the station, or `None` if
    /// `station` is not an external station (or its link is down).
    pub fn external_transmit(&mut self, station: StationId, frame: &[u8]) -> Option<Instant> {
        if !self.hosts.external.contains(&station) {
            return None;
        }
        let mut f = Vec::with_capacity(frame.len().max(60) + snet_nic_model::mac::FCS_LEN);
        f.extend_from_slice(frame);
        snet_nic_model::mac::pad_to_minimum(&mut f);
        snet_nic_model::mac::append_fcs(&mut f);
        self.cluster.lan_transmit(station, f)
    }

    /// Moves the frames delivered to external stations since the last call
    /// into `out`, in delivery order, each without its FCS. A frame whose
    /// FCS does not check (the LAN corrupted it) is left out and counted
    /// in the return value.
    pub fn take_external_frames(&mut self, out: &mut Vec<(StationId, Vec<u8>)>) -> u64 {
        let mut bad = 0;
        for (station, mut frame) in self.hosts.external_frames.drain(..) {
            match snet_nic_model::mac::check_fcs(&frame) {
                Some(body) => {
                    let len = body.len();
                    frame.truncate(len);
                    out.push((station, frame));
                }
                None => bad += 1,
            }
        }
        bad
    }

    /// Sends a control message from processor `p` (index) to the active
    /// adapter (adapter 0 until it fails), outside the socket library, and
    /// waits (up to 1 ms of virtual time) for the answer.
    pub fn control(
        &mut self,
        p: usize,
        message: snet_firmware::control::ControlMessage,
    ) -> crate::ControlOutcome {
        let env = snet_firmware::control::Envelope::new(ProcessorId(p as u16), message);
        let q = self.hosts.active.unwrap_or(0);
        let Some(qp) = self.hosts.processors[p].queue_mut(q) else {
            return crate::ControlOutcome::Refused(snet_nic_model::regs::StatusCode::NoResources);
        };
        let seq = match qp.send_control(&mut self.cluster, &env) {
            Ok(s) => s,
            Err(e) => {
                self.hosts.errors.push(e.to_string());
                return crate::ControlOutcome::Refused(
                    snet_nic_model::regs::StatusCode::NoResources,
                );
            }
        };
        let deadline = self.cluster.now() + Duration::from_ms(1);
        while self.cluster.now() < deadline {
            if let Some(k) = self
                .hosts
                .other_outcomes
                .iter()
                .position(|o| (o.0, o.1, o.2) == (p, q, seq))
            {
                return self.hosts.other_outcomes.remove(k).3;
            }
            if !self.cluster.step(deadline, &mut self.hosts) {
                break;
            }
        }
        crate::ControlOutcome::Refused(snet_nic_model::regs::StatusCode::NoResources)
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.cluster.now() + d;
        self.cluster.run_until(until, &mut self.hosts);
    }

    /// Polls every processor and client now (after a test changed sockets
    /// from outside).
    pub fn kick(&mut self) {
        for i in 0..self.hosts.processors.len() {
            self.hosts.poll_processor(&mut self.cluster, i);
        }
        for c in 0..self.hosts.clients.len() {
            self.hosts.poll_client(&mut self.cluster, c);
        }
    }

    /// Fails processor `p` (index) now: its instance and applications
    /// vanish with it, the adapters are told, and the message system tells
    /// the survivors.
    pub fn fail_processor(&mut self, p: usize) {
        self.hosts.up[p] = false;
        self.hosts.sockets[p] = None;
        self.hosts.apps[p].clear();
        let ep = self.processors[p];
        if let Err(e) = self
            .cluster
            .fail(snet_fabric::network::FaultTarget::Endpoint(ep))
        {
            self.hosts.errors.push(e.to_string());
        }
        for q in self.hosts.ipc.processor_failed(&mut self.cluster, p) {
            let at = self.cluster.now();
            self.cluster.wake_host(self.hosts.components[q], at);
        }
        if let Some(server) = self.hosts.server.as_mut() {
            server.processor_failed(p);
        }
        if let StackMode::Conventional { at } = self.hosts.mode
            && at == p
        {
            let now = self.cluster.now();
            for (i, proxy) in self.hosts.proxies.iter_mut().enumerate() {
                proxy.stack_failed();
                self.cluster.wake_host(self.hosts.components[i], now);
            }
        }
    }

    /// Restores processor `p` (index) after [`NetRig::fail_processor`]:
    /// its fabric endpoint comes back (the adapters are told it is up), its
    /// host side is rebuilt — queue pairs created anew with every adapter
    /// (the old ones' AVT windows closed), a new TCP/IP instance with the
    /// processor's own ephemeral range, a fresh CPU, and the message system
    /// open to it again — the rig runs until its queue pairs are ready and
    /// every adapter's firmware has it live again (a `ProcessorUp` from it),
    /// and it is polled from then on.
    ///
    /// Applications are not respawned: the caller starts them again with
    /// [`NetRig::spawn`] (they then listen and register anew). Connections
    /// the processor had before it failed are gone.
    ///
    /// On the conventional stack, a restored non-stack processor gets a
    /// fresh proxy; a restored stack processor gets a fresh stack server,
    /// and every processor's proxy reconnects to it (the sockets the proxies
    /// had on the old instance are gone; new calls go to the new one).
    ///
    /// Fails if `p` is not a failed processor, if an adapter is down (the
    /// queue pairs are rebuilt with every adapter: restore it first), or if
    /// the queue pairs or the adapters do not answer within 10 ms of virtual
    /// time.
    pub fn restore_processor(&mut self, p: usize) -> Result<(), String> {
        let n = self.hosts.processors.len();
        if p >= n {
            return Err(format!("no processor {p} (there are {n})"));
        }
        if self.hosts.up[p] {
            return Err(format!("processor {p} is up"));
        }
        if let Some(a) = self.hosts.adapter_up.iter().position(|u| !u) {
            return Err(format!(
                "adapter {a} is down: restore it before processor {p} (a processor's queue pairs are rebuilt with every adapter)"
            ));
        }
        let ep = self.processors[p];
        for qp in self.hosts.processors[p].queues() {
            qp.close_windows(&mut self.cluster);
        }
        self.cluster
            .restore(FaultTarget::Endpoint(ep))
            .map_err(|e| e.to_string())?;
        self.hosts.processors[p] = Processor::new(ep, ProcAddr(0));
        self.hosts.other_outcomes.retain(|o| o.0 != p);
        self.hosts.booting[p] = true;
        let booted = self.boot(p);
        self.hosts.booting[p] = false;
        if let Err(e) = booted {
            // Down again, as before the call (the adapters drop what was
            // set up): a later call starts over.
            if let Err(f) = self.cluster.fail(FaultTarget::Endpoint(ep)) {
                self.hosts.errors.push(f.to_string());
            }
            return Err(e);
        }
        let now = self.cluster.now();
        self.hosts.cpus[p] = Cpu::new(self.config.cpu);
        self.hosts.ipc.processor_restored(p);
        self.restarts[p] += 1;
        let mtu = self.config.rig.queue.chunk as usize;
        let mode = self.hosts.mode;
        let runs_stack = match mode {
            StackMode::Parallel => true,
            StackMode::Conventional { at } => at == p,
        };
        if runs_stack {
            self.hosts.sockets[p] = Some(new_sockets(
                &self.config,
                self.hosts.address,
                p,
                n,
                mtu,
                self.restarts[p],
                now,
            ));
        }
        self.hosts
            .stack_inflight
            .retain(|&(from, to)| from != p && to != p);
        if let StackMode::Conventional { at } = mode {
            let max_payload = self.config.ipc.max_payload();
            if at == p {
                self.hosts.server = Some(StackServer::new(
                    at,
                    self.config.sockets.clone(),
                    max_payload,
                ));
                for proxy in self.hosts.proxies.iter_mut() {
                    proxy.stack_restored();
                }
            }
            self.hosts.proxies[p] = Proxy::new(p, at, self.config.sockets.clone(), max_payload);
        }
        self.hosts.up[p] = true;
        self.wake_all();
        Ok(())
    }

    /// Creates processor `p`'s queue pairs with every adapter and runs the
    /// rig until they are ready and every adapter accepted its
    /// `ProcessorUp`.
    fn boot(&mut self, p: usize) -> Result<(), String> {
        for a in 0..self.hosts.adapters {
            self.hosts.processors[p]
                .add_queue(&mut self.cluster, a, self.config.rig.queue)
                .map_err(|e| format!("P{p}: queue pair with adapter {a}: {e}"))?;
        }
        let deadline = self.cluster.now() + Duration::from_ms(10);
        let ready = |h: &NetHosts| {
            h.processors[p]
                .queues()
                .iter()
                .all(|q| q.state() == QueueState::Ready)
        };
        while !ready(&self.hosts) {
            if self.cluster.now() >= deadline || !self.cluster.step(deadline, &mut self.hosts) {
                return Err(format!(
                    "P{p}: queue pairs not ready after 10 ms: {:?}",
                    self.hosts.processors[p]
                        .queues()
                        .iter()
                        .map(|q| q.state())
                        .collect::<Vec<_>>()
                ));
            }
        }
        let pid = ProcessorId(p as u16);
        let env = Envelope::new(pid, ControlMessage::ProcessorUp(pid));
        let mut waiting = Vec::new();
        for a in 0..self.hosts.adapters {
            let qp = self.hosts.processors[p]
                .queue_mut(a)
                .expect("one queue pair per adapter");
            let seq = qp
                .send_control(&mut self.cluster, &env)
                .map_err(|e| format!("P{p}: processor_up to adapter {a}: {e}"))?;
            waiting.push((a, seq));
        }
        while !waiting.is_empty() {
            let outcomes = &mut self.hosts.other_outcomes;
            let mut refused = None;
            waiting.retain(|&(a, seq)| {
                match outcomes.iter().position(|o| (o.0, o.1, o.2) == (p, a, seq)) {
                    Some(k) => {
                        match outcomes.remove(k).3 {
                            ControlOutcome::Accepted
                            | ControlOutcome::Rejected(RejectReason::AlreadyUp) => {}
                            other => refused = Some((a, other)),
                        }
                        false
                    }
                    None => true,
                }
            });
            if let Some((a, o)) = refused {
                return Err(format!("P{p}: adapter {a} refused processor_up: {o:?}"));
            }
            if waiting.is_empty() {
                break;
            }
            if self.cluster.now() >= deadline || !self.cluster.step(deadline, &mut self.hosts) {
                return Err(format!(
                    "P{p}: adapters {:?} did not answer processor_up within 10 ms",
                    waiting.iter().map(|w| w.0).collect::<Vec<_>>()
                ));
            }
        }
        Ok(())
    }

    /// Fails adapter `a` now: its fabric endpoint goes down, which silences
    /// its LAN port. Control messages it was sent and had not answered are
    /// no longer waited for, and it gets none until restored. If it was the
    /// active adapter, the lowest-numbered adapter still up takes the
    /// cluster's address over: its MAC starts accepting the cluster's MAC,
    /// a processor (the firmware's master, or else the lowest-numbered one
    /// up) sends a gratuitous ARP and an unsolicited neighbour advertisement
    /// from it through that adapter (the LAN switch learns the MAC at its
    /// port, so clients' next frames reach it), and every processor sends
    /// through it from its next poll. Its firmware already holds every
    /// listener and connection filter (they were registered with every
    /// adapter), so established connections survive; what was in flight
    /// through the failed adapter is resent by TCP. A connection still in
    /// its handshake does not: the new active adapter never saw its SYN
    /// (provisional entries are each adapter's own), so the client's last
    /// ACK reaches the master processor, which resets it.
    ///
    /// `Err` if `a` is no adapter or already down, or if the announcement
    /// could not be posted (the takeover itself has happened then; the LAN
    /// learns the address at the first frame a processor sends).
    pub fn fail_adapter(&mut self, a: usize) -> Result<(), String> {
        let n = self.hosts.adapters;
        if a >= n {
            return Err(format!("no adapter {a} (there are {n})"));
        }
        if !self.hosts.adapter_up[a] {
            return Err(format!("adapter {a} is already down"));
        }
        let ep = self.cluster.nics[a].endpoint();
        self.cluster
            .fail(FaultTarget::Endpoint(ep))
            .map_err(|e| e.to_string())?;
        self.hosts.adapter_up[a] = false;
        for i in 0..self.hosts.processors.len() {
            if let Some(qp) = self.hosts.processors[i].queue_mut(a) {
                qp.adapter_failed();
            }
            if let Some(s) = self.hosts.sockets[i].as_mut() {
                s.adapter_down(a);
            }
        }
        let mut taken = Ok(());
        if self.hosts.active == Some(a) {
            self.hosts.active = self.hosts.adapter_up.iter().position(|u| *u);
            if let Some(b) = self.hosts.active {
                taken = self.take_over(b);
            }
        }
        self.wake_all();
        taken
    }

    /// Restores adapter `a` after [`NetRig::fail_adapter`]. It comes back
    /// as a standby: the active adapter stays active (no fail-back, which
    /// would disturb the connections a second time), and `a` becomes active
    /// again only if the active one fails (or at once, if no adapter was
    /// up).
    ///
    /// Its fabric endpoint is restored first with its LAN port held down,
    /// and the rig runs (at most 10 ms of virtual time) until the adapter
    /// has dealt with the frames its processors had posted before it failed
    /// (they are stale: they go nowhere, so the LAN keeps the cluster's MAC
    /// at the active adapter's port) and until no control message is on its
    /// way to the adapters that stayed up. Then, at one instant, its
    /// firmware is brought in step with the active adapter's (a table dump,
    /// see [`Cluster::resync_nic`]: it holds exactly what they applied), it
    /// is counted up again (it gets every control message from now on, and
    /// the processors read its queue pairs), its MAC accepts the cluster's
    /// MAC too, and its port comes up.
    pub fn restore_adapter(&mut self, a: usize) -> Result<(), String> {
        let n = self.hosts.adapters;
        if a >= n {
            return Err(format!("no adapter {a} (there are {n})"));
        }
        if self.hosts.adapter_up[a] {
            return Err(format!("adapter {a} is up"));
        }
        let ep = self.cluster.nics[a].endpoint();
        self.cluster
            .restore(FaultTarget::Endpoint(ep))
            .map_err(|e| e.to_string())?;
        let station = match self.cluster.port(a) {
            Some(snet_nic_model::PortAttachment::Lan(st)) => Some(st),
            _ => None,
        };
        if let Some(st) = station {
            self.cluster.lan.set_up(st, false);
        }
        let deadline = self.cluster.now() + Duration::from_ms(10);
        while self.cluster.nics[a].tx_pending() || self.hosts.control_pending() {
            if self.cluster.now() >= deadline || !self.cluster.step(deadline, &mut self.hosts) {
                if let Some(st) = station {
                    self.cluster.lan.set_up(st, true);
                }
                return Err(format!(
                    "adapter {a}: stale frames or control messages still on their way after 10 ms"
                ));
            }
        }
        let joined = self.join(a);
        if let Some(st) = station {
            self.cluster.lan.set_up(st, true);
        }
        joined?;
        self.wake_all();
        Ok(())
    }

    /// Restored adapter `a` joins the others (see
    /// [`NetRig::restore_adapter`]).
    fn join(&mut self, a: usize) -> Result<(), String> {
        if let Some(from) = self.hosts.active {
            self.cluster
                .resync_nic(a, from)
                .map_err(|e| e.to_string())?;
        }
        self.cluster.nics[a]
            .accept_unicast(MacAddr(self.hosts.address.mac))
            .map_err(|e| e.to_string())?;
        self.hosts.adapter_up[a] = true;
        if self.hosts.active.is_none() {
            self.hosts.active = Some(a);
            self.take_over(a)?;
        }
        Ok(())
    }

    /// Adapter `b` takes the cluster's MAC over: accepts it, and announces
    /// it on the LAN from its port.
    fn take_over(&mut self, b: usize) -> Result<(), String> {
        let mac = MacAddr(self.hosts.address.mac);
        self.cluster.nics[b]
            .accept_unicast(mac)
            .map_err(|e| e.to_string())?;
        self.hosts.takeovers += 1;
        let master = self.cluster.nics[b]
            .firmware()
            .master()
            .map(|m| usize::from(m.0))
            .filter(|&m| self.hosts.up.get(m).copied().unwrap_or(false));
        let Some(sender) = master.or_else(|| self.hosts.up.iter().position(|u| *u)) else {
            // No processor to send it: the LAN learns the address at the
            // first frame a processor sends through the adapter.
            return Ok(());
        };
        for frame in takeover_announcements(&self.hosts.address) {
            let qp = self.hosts.processors[sender]
                .queue_mut(b)
                .ok_or_else(|| format!("P{sender} has no queue pair with adapter {b}"))?;
            let buf = qp.tx_buffer().ok_or_else(|| {
                format!("P{sender}: no free buffer for the takeover announcement")
            })?;
            qp.buffer_mut(&mut self.cluster.fabric, &buf)[..frame.len()].copy_from_slice(&frame);
            if let Err(e) = qp.send(&mut self.cluster, buf, frame.len() as u32, TxFlags::empty()) {
                let why = e.to_string();
                qp.release(e.into_buffer());
                return Err(format!("P{sender}: takeover announcement: {why}"));
            }
        }
        Ok(())
    }

    /// Polls every processor that is up (now, or when its CPU is free).
    fn wake_all(&mut self) {
        let now = self.cluster.now();
        for i in 0..self.hosts.processors.len() {
            if self.hosts.up[i] {
                self.cluster.wake_host(self.hosts.components[i], now);
            }
        }
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.cluster.now()
    }
}
