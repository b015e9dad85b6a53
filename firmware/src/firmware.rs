//! The firmware instance an adapter runs: classification, control messages,
//! failure handling and expiry, all driven by the caller's time.

use std::collections::{HashMap, VecDeque};

use crate::config::{Config, ConfigError};
use crate::conntable::{BATCH, ConnectionEntry, ConnectionTable, EntryState, LinkAddrs, ResetInfo};
use crate::control::{ControlError, ControlMessage, Envelope, RejectReason, TableSnapshot};
use crate::filter::Filter;
use crate::fragment::{FragmentKey, FragmentTracker};
use crate::listener::{ListenerGroup, ListenerTable};
use crate::time::Instant;
use crate::tuple::{FiveTuple, PROTO_TCP, PROTO_UDP};
use crate::verdict::{Counters, DropReason, ProcessorId, QueueId, Verdict};
use crate::wire::reset::{build_reset, build_reset_to, build_reset_to_syn};
use crate::wire::{ETHERTYPE_ARP, ParsedFrame, parse_frame, tcp_flags};

/// Deadline of an entry with one (provisional or orphaned), and whether an
/// orphan has been reset once already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Timed {
    deadline: Instant,
    reset_sent: bool,
}

/// Everything the stages of a filter read and change.
#[derive(Debug)]
pub(crate) struct State {
    config: Config,
    listeners: ListenerTable,
    conns: ConnectionTable,
    /// Established + orphaned entries (replicated; bounded by connection_capacity).
    established: usize,
    /// Provisional entries (local; bounded by provisional_capacity).
    provisional: usize,
    timed: HashMap<FiveTuple, Timed>,
    provisional_queue: VecDeque<(Instant, FiveTuple)>,
    orphan_queue: VecDeque<(Instant, FiveTuple)>,
    fragments: FragmentTracker,
    live: Vec<bool>,
    capacity: Vec<Option<u32>>,
    master: Option<ProcessorId>,
    counters: Counters,
    now: Instant,
    generation: u64,
    /// Frames the firmware sends on its own, until the adapter takes them.
    outbox: Vec<Vec<u8>>,
}

/// The built-in stages a filter can hand a frame to; given to
/// [`Filter::classify`]. Each stage either decides (`Some`) or passes (`None`).
pub struct Stages<'a> {
    st: &'a mut State,
    /// The frame being classified; what is cached below is about it.
    frame: &'a ParsedFrame,
    /// Its 5-tuple and table hash, computed once.
    key: Key,
    /// The table generation at which its tuple was found to have no entry.
    miss_at: Option<u64>,
}

/// The 5-tuple and hash of the frame being classified, once computed.
#[derive(Debug, Clone, Copy)]
enum Key {
    Unknown,
    Known(Option<(FiveTuple, u64)>),
}

impl<'a> Stages<'a> {
    fn new(st: &'a mut State, frame: &'a ParsedFrame, key: Key, miss_at: Option<u64>) -> Self {
        Stages {
            st,
            frame,
            key,
            miss_at,
        }
    }
}

impl Stages<'_> {
    /// The tuple of `frame` and its hash: computed once for the frame being
    /// classified (a filter may hand a stage some other frame).
    #[inline]
    fn key(&mut self, frame: &ParsedFrame) -> Option<(FiveTuple, u64)> {
        let own = core::ptr::eq(frame, self.frame);
        if let (true, Key::Known(k)) = (own, self.key) {
            return k;
        }
        let k = frame.tuple().map(|t| (t, self.st.conns.hash(&t)));
        if own {
            self.key = Key::Known(k);
        }
        k
    }

    /// The entry of `t` (hash `h`) and its record position, unless the
    /// frame being classified is already known to have none.
    #[inline]
    fn lookup(
        &mut self,
        frame: &ParsedFrame,
        t: &FiveTuple,
        h: u64,
    ) -> Option<(usize, ProcessorId, EntryState)> {
        let own = core::ptr::eq(frame, self.frame);
        if own && self.miss_at == Some(self.st.generation) {
            return None;
        }
        let found = self.st.conns.lookup_index(t, h);
        if own && found.is_none() {
            self.miss_at = Some(self.st.generation);
        }
        found
    }

    /// Later fragments: the decision recorded for their first fragment.
    pub fn fragments(&mut self, frame: &ParsedFrame) -> Option<Verdict> {
        let ip = frame.ip.as_ref()?;
        if ip.fragment?.offset_bytes == 0 {
            return None;
        }
        let key = FragmentKey::of(ip)?;
        match self.st.fragments.lookup(&key) {
            Some((p, q)) if self.st.is_live(p) => {
                self.st.counters.fragments_followed += 1;
                Some(Verdict::Deliver {
                    processor: p,
                    queue: q,
                })
            }
            _ => {
                self.st.counters.fragments_to_master += 1;
                None
            }
        }
    }

    /// The exact 5-tuple table: the owner of an established or provisional
    /// connection; a RST for a connection whose processor failed.
    pub fn connections(&mut self, frame: &ParsedFrame) -> Option<Verdict> {
        let (t, h) = self.key(frame)?;
        let (idx, owner, state) = self.lookup(frame, &t, h)?;
        Some(self.st.on_hit(frame, &t, h, idx, owner, state))
    }

    /// Listener groups: a TCP connection request (SYN without ACK) or a UDP
    /// datagram for a listened port goes to the member the port's policy
    /// picks; a TCP request also creates a provisional connection entry.
    /// A tuple that already has an entry goes to its owner, as the
    /// connections stage would send it (a tree may run this stage without
    /// that one before it); its entry is never replaced.
    pub fn listeners(&mut self, frame: &ParsedFrame) -> Option<Verdict> {
        let ip = frame.ip.as_ref()?;
        let tr = ip.transport.as_ref()?;
        // Other TCP segments pass before any lookup.
        let is_request = match (ip.protocol, &tr.tcp) {
            (PROTO_TCP, Some(tcp)) if tcp.is_connection_request() => true,
            (PROTO_UDP, None) => false,
            _ => return None,
        };
        let (t, h) = self.key(frame)?;
        let known_miss =
            core::ptr::eq(frame, self.frame) && self.miss_at == Some(self.st.generation);
        let st = &mut *self.st;
        let group: &mut ListenerGroup =
            st.listeners.lookup_mut(ip.protocol, &ip.dst, tr.dst_port)?;
        let existing = if known_miss {
            None
        } else {
            st.conns.lookup_index(&t, h)
        };
        if let Some((idx, owner, state)) = existing {
            return Some(st.on_hit(frame, &t, h, idx, owner, state));
        }
        if is_request && st.provisional >= st.config.provisional_capacity {
            st.counters.syn_dropped_table_full += 1;
            return Some(Verdict::Drop(DropReason::ConnectionTableFull));
        }
        let p = group.pick(&t, &st.capacity, st.config.hash_seed)?;
        if is_request {
            let Ok((idx, _)) = st.conns.upsert_hashed(&t, h, p, EntryState::Provisional) else {
                st.counters.syn_dropped_table_full += 1;
                return Some(Verdict::Drop(DropReason::ConnectionTableFull));
            };
            st.generation += 1;
            st.provisional += 1;
            st.counters.provisional_created += 1;
            // Remembered so the attempt can be reset if `p` fails before
            // it confirms: the SYN's addressing and its sequence number + 1.
            if let (Some(tcp), Some(link)) = (frame.tcp(), LinkAddrs::of(frame)) {
                st.conns.observe_syn(idx, &link, tcp.seq.wrapping_add(1));
            }
            let deadline = st.now.saturating_add(st.config.syn_timeout);
            st.timed.insert(
                t,
                Timed {
                    deadline,
                    reset_sent: false,
                },
            );
            st.provisional_queue.push_back((deadline, t));
        }
        Some(Verdict::Deliver {
            processor: p,
            queue: st.queue_for(h),
        })
    }

    /// The master processor (or a drop if no processor is live).
    pub fn master(&self) -> Verdict {
        match self.st.master {
            Some(p) => Verdict::Master { processor: p },
            None => Verdict::Drop(DropReason::NoLiveProcessor),
        }
    }

    /// Delivery to a fixed processor chosen by a filter: to the master instead
    /// if that processor is unknown or not live; the queue is taken modulo the
    /// configured queues per processor.
    pub fn deliver(&self, processor: ProcessorId, queue: QueueId) -> Verdict {
        if self.st.is_live(processor) {
            Verdict::Deliver {
                processor,
                queue: QueueId(queue.0 % self.st.config.queues_per_processor),
            }
        } else {
            self.master()
        }
    }

    /// The whole host-controlled filter: fragments, then connections, then
    /// listeners, else the master.
    pub fn host_controlled(&mut self, frame: &ParsedFrame) -> Verdict {
        if let Some(v) = self.fragments(frame) {
            return v;
        }
        if let Some(v) = self.connections(frame) {
            return v;
        }
        if let Some(v) = self.listeners(frame) {
            return v;
        }
        self.master()
    }

    /// Whether `p` is a live processor.
    pub fn is_live(&self, p: ProcessorId) -> bool {
        self.st.is_live(p)
    }
}

impl State {
    fn is_live(&self, p: ProcessorId) -> bool {
        self.live.get(usize::from(p.0)).copied().unwrap_or(false)
    }

    #[inline]
    fn queue_for(&self, h: u64) -> QueueId {
        let n = u64::from(self.config.queues_per_processor);
        QueueId(if n <= 1 { 0 } else { ((h >> 40) % n) as u16 })
    }

    /// Remembers what `frame`, a segment of the connection whose record is
    /// at `idx`, tells for a later reset: only a TCP segment with ACK set
    /// (and no RST) between unicast MACs teaches anything.
    #[inline]
    fn observe(&mut self, idx: usize, frame: &ParsedFrame) {
        if let Some(tcp) = frame.tcp() {
            if tcp.flags & (tcp_flags::ACK | tcp_flags::RST) == tcp_flags::ACK {
                if let Some(link) = LinkAddrs::of(frame) {
                    self.conns.observe(idx, &link, tcp.ack);
                }
            }
        }
    }

    /// [`State::observe`] for each (record, frame) of `seen`, frames indexed
    /// in `parsed`.
    fn observe_all(&mut self, seen: &[(usize, usize)], parsed: &[Result<ParsedFrame, DropReason>]) {
        for &(idx, i) in seen {
            if let Ok(p) = &parsed[i] {
                self.observe(idx, p);
            }
        }
    }

    /// The verdict for `frame`, whose tuple `t` (hash `h`) has an entry at
    /// record `idx` with `owner` and `state`.
    fn on_hit(
        &mut self,
        frame: &ParsedFrame,
        t: &FiveTuple,
        h: u64,
        idx: usize,
        owner: ProcessorId,
        state: EntryState,
    ) -> Verdict {
        match state {
            EntryState::Established | EntryState::Provisional => {
                self.observe(idx, frame);
                Verdict::Deliver {
                    processor: owner,
                    queue: self.queue_for(h),
                }
            }
            EntryState::Orphaned => match build_reset(frame) {
                Some(rst) => {
                    self.counters.resets_sent += 1;
                    if let Some(timed) = self.timed.get_mut(t) {
                        if !timed.reset_sent {
                            timed.reset_sent = true;
                            self.counters.connections_reset += 1;
                        }
                    }
                    Verdict::Reply { frame: rst }
                }
                None => Verdict::Drop(DropReason::ResetForOrphan),
            },
        }
    }

    /// Moves time forward (never back) and expires what is due.
    fn advance(&mut self, now: Instant) {
        if now > self.now {
            self.now = now;
        }
        let now = self.now;
        let n = self.expire_due(EntryState::Provisional, now);
        self.provisional -= n;
        self.counters.provisional_expired += n as u64;
        let n = self.expire_due(EntryState::Orphaned, now);
        self.established -= n;
        self.counters.orphans_expired += n as u64;
        self.fragments.expire(now);
    }

    /// Pops the entries of the expiry queue of `state` (provisional or
    /// orphaned) due at `now`, removing those still in that state with that
    /// deadline (a later change of state or deadline leaves a stale queue
    /// entry, which is dropped). Returns how many were removed.
    fn expire_due(&mut self, state: EntryState, now: Instant) -> usize {
        let queue = match state {
            EntryState::Provisional => &mut self.provisional_queue,
            EntryState::Orphaned | EntryState::Established => &mut self.orphan_queue,
        };
        let mut removed = 0;
        while let Some(&(deadline, t)) = queue.front() {
            if deadline > now {
                break;
            }
            queue.pop_front();
            if self.timed.get(&t).is_some_and(|x| x.deadline == deadline)
                && self.conns.get(&t).is_some_and(|e| e.state == state)
            {
                self.conns.remove(&t);
                self.timed.remove(&t);
                self.generation += 1;
                removed += 1;
            }
        }
        removed
    }

    /// Starts the linger time of orphan `t`; `reset_sent` if its client was
    /// already sent a RST.
    fn orphan(&mut self, t: FiveTuple, reset_sent: bool) {
        let deadline = self.now.saturating_add(self.config.orphan_linger);
        self.timed.insert(
            t,
            Timed {
                deadline,
                reset_sent,
            },
        );
        self.orphan_queue.push_back((deadline, t));
    }

    fn check_processor(&self, p: ProcessorId) -> Result<(), RejectReason> {
        if p.0 >= self.config.processor_count {
            Err(RejectReason::UnknownProcessor)
        } else {
            Ok(())
        }
    }

    fn require_live(&self, p: ProcessorId) -> Result<(), RejectReason> {
        self.check_processor(p)?;
        if self.is_live(p) {
            Ok(())
        } else {
            Err(RejectReason::ProcessorNotLive)
        }
    }

    fn apply(&mut self, sender: ProcessorId, msg: &ControlMessage) -> Result<(), RejectReason> {
        self.check_processor(sender)?;
        match msg {
            ControlMessage::RegisterListener(key) => {
                self.require_live(sender)?;
                self.listeners.register(*key, sender, &self.config)
            }
            ControlMessage::UnregisterListener(key) => {
                self.require_live(sender)?;
                self.listeners.unregister(*key, sender, &self.config)
            }
            ControlMessage::AddConnection(t) => {
                self.require_live(sender)?;
                match self.conns.get(t) {
                    Some(e) if e.state == EntryState::Provisional => {
                        if self.established >= self.config.connection_capacity {
                            return Err(RejectReason::TableFull);
                        }
                        self.conns
                            .upsert(t, sender, EntryState::Established)
                            .map_err(|_| RejectReason::TableFull)?;
                        self.timed.remove(t);
                        self.provisional -= 1;
                        self.established += 1;
                        if e.owner == sender {
                            self.counters.provisional_confirmed += 1;
                        }
                        Ok(())
                    }
                    Some(_) => Err(RejectReason::ConnectionExists),
                    None => {
                        if self.established >= self.config.connection_capacity {
                            return Err(RejectReason::TableFull);
                        }
                        self.conns
                            .upsert(t, sender, EntryState::Established)
                            .map_err(|_| RejectReason::TableFull)?;
                        self.generation += 1;
                        self.established += 1;
                        Ok(())
                    }
                }
            }
            ControlMessage::RemoveConnection(t) => {
                let e = self.conns.get(t).ok_or(RejectReason::NoSuchConnection)?;
                if e.owner != sender && self.master != Some(sender) {
                    return Err(RejectReason::Unauthorised);
                }
                self.conns.remove(t);
                self.timed.remove(t);
                self.generation += 1;
                if e.state == EntryState::Provisional {
                    self.provisional -= 1;
                } else {
                    self.established -= 1;
                }
                Ok(())
            }
            ControlMessage::MoveConnection { tuple, to } => {
                let e = self
                    .conns
                    .get(tuple)
                    .ok_or(RejectReason::NoSuchConnection)?;
                if e.state == EntryState::Provisional {
                    return Err(RejectReason::NoSuchConnection);
                }
                let owner_may = e.owner == sender && e.state == EntryState::Established;
                if !owner_may && self.master != Some(sender) {
                    return Err(RejectReason::Unauthorised);
                }
                self.require_live(*to)?;
                self.conns
                    .upsert(tuple, *to, EntryState::Established)
                    .map_err(|_| RejectReason::TableFull)?;
                self.timed.remove(tuple);
                Ok(())
            }
            ControlMessage::SetMaster(p) => {
                if self.master != Some(sender) {
                    return Err(RejectReason::Unauthorised);
                }
                self.require_live(*p)?;
                self.master = Some(*p);
                Ok(())
            }
            ControlMessage::CapacityReport(c) => {
                self.require_live(sender)?;
                self.capacity[usize::from(sender.0)] = Some((*c).min(u32::MAX - 1));
                Ok(())
            }
            ControlMessage::ProcessorDown(p) => {
                self.check_processor(*p)?;
                self.require_live(sender)?;
                if sender == *p {
                    return Err(RejectReason::Unauthorised);
                }
                if !self.is_live(*p) {
                    return Err(RejectReason::AlreadyDown);
                }
                self.processor_down(*p);
                Ok(())
            }
            ControlMessage::ProcessorUp(p) => {
                self.check_processor(*p)?;
                if sender != *p && (self.master != Some(sender) || !self.is_live(sender)) {
                    return Err(RejectReason::Unauthorised);
                }
                if self.is_live(*p) {
                    return Err(RejectReason::AlreadyUp);
                }
                self.live[usize::from(p.0)] = true;
                if self.master.is_none() {
                    self.master = Some(*p);
                }
                Ok(())
            }
            ControlMessage::TableDump(s) => {
                self.require_live(sender)?;
                self.restore(s)
            }
        }
    }

    /// Processor `p` is down: its listeners go, its established connections
    /// become orphans, and a RST is queued for the client of each orphan
    /// whose last acknowledgement is remembered (the proactive reset; later
    /// segments of the client still get the reactive one). Its provisional
    /// entries are removed, each with a RST to its client: an RST|ACK of
    /// the SYN when the client still waits for the SYN-ACK, or the
    /// established form when its handshake ACK was seen.
    fn processor_down(&mut self, p: ProcessorId) {
        self.live[usize::from(p.0)] = false;
        self.capacity[usize::from(p.0)] = None;
        self.listeners.purge(p, &self.config);
        let mine: Vec<(ConnectionEntry, Option<ResetInfo>)> = self
            .conns
            .iter_reset_info()
            .filter(|(e, _)| e.owner == p)
            .collect();
        for (e, info) in mine {
            match e.state {
                EntryState::Established => {
                    // Confirmed before any ACK was seen: no sequence number
                    // the client would accept is known.
                    let rst = info
                        .filter(|i| !i.syn)
                        .and_then(|i| build_reset_to(&e.tuple, &i));
                    let reset_sent = rst.is_some();
                    if let Some(frame) = rst {
                        self.outbox.push(frame);
                        self.counters.proactive_resets += 1;
                        self.counters.resets_sent += 1;
                        self.counters.connections_reset += 1;
                    }
                    self.conns.set_state(&e.tuple, EntryState::Orphaned);
                    self.orphan(e.tuple, reset_sent);
                    self.counters.connections_orphaned += 1;
                }
                EntryState::Provisional => {
                    // The client still waits for the SYN-ACK: end its
                    // attempt now rather than after its SYN timeout.
                    let rst = info.and_then(|i| {
                        if i.syn {
                            build_reset_to_syn(&e.tuple, &i)
                        } else {
                            build_reset_to(&e.tuple, &i)
                        }
                    });
                    if let Some(frame) = rst {
                        self.outbox.push(frame);
                        self.counters.proactive_resets += 1;
                        self.counters.resets_sent += 1;
                    }
                    self.conns.remove(&e.tuple);
                    self.timed.remove(&e.tuple);
                    self.generation += 1;
                    self.provisional -= 1;
                }
                EntryState::Orphaned => {}
            }
        }
        if self.master == Some(p) {
            let n = self.config.processor_count;
            self.master = (1..n)
                .map(|i| ProcessorId((p.0 + i) % n))
                .find(|q| self.is_live(*q));
            self.counters.master_failovers += 1;
        }
    }

    fn snapshot(&self) -> TableSnapshot {
        TableSnapshot {
            master: self.master,
            live: self.live.clone(),
            capacity: self.capacity.clone(),
            listeners: self
                .listeners
                .groups()
                .map(|g| (g.key(), g.members().to_vec()))
                .collect(),
            connections: self
                .conns
                .sorted()
                .into_iter()
                .filter(|e| e.state != EntryState::Provisional)
                .map(|e| (e.tuple, e.owner, e.state))
                .collect(),
        }
    }

    fn restore(&mut self, s: &TableSnapshot) -> Result<(), RejectReason> {
        if s.live.len() != usize::from(self.config.processor_count)
            || s.capacity.len() != s.live.len()
        {
            return Err(RejectReason::BadDump);
        }
        if s.connections.len() > self.config.connection_capacity {
            return Err(RejectReason::BadDump);
        }
        // What TableSnapshot::parse checks, for snapshots applied directly:
        // no provisional entries, owners are processors, and an established
        // connection's owner is live.
        for (_, owner, state) in &s.connections {
            match (s.live.get(usize::from(owner.0)), state) {
                (None, _)
                | (_, EntryState::Provisional)
                | (Some(false), EntryState::Established) => {
                    return Err(RejectReason::BadDump);
                }
                (Some(_), _) => {}
            }
        }
        let mut listeners = ListenerTable::default();
        for (key, members) in &s.listeners {
            listeners
                .restore_group(*key, members, &self.config)
                .map_err(|_| RejectReason::BadDump)?;
        }
        self.listeners = listeners;
        self.conns.clear();
        self.timed.clear();
        self.provisional_queue.clear();
        self.orphan_queue.clear();
        self.provisional = 0;
        self.established = 0;
        self.generation += 1;
        for (t, owner, state) in &s.connections {
            if self.conns.upsert(t, *owner, *state).is_ok() {
                self.established += 1;
                if *state == EntryState::Orphaned {
                    self.orphan(*t, false);
                }
            }
        }
        self.live = s.live.clone();
        self.capacity = s.capacity.clone();
        self.master = s.master;
        Ok(())
    }
}

/// The firmware of one adapter.
///
/// ```
/// use snet_firmware::{Config, Firmware, Instant, ProcessorId, Verdict};
/// use snet_firmware::control::{ControlMessage, Envelope};
/// use snet_firmware::kit::PacketBuilder;
/// use snet_firmware::listener::ListenerKey;
/// use snet_firmware::wire::tcp_flags;
///
/// let mut fw = Firmware::new(Config::default()).unwrap();
/// let listen = Envelope::new(ProcessorId(2), ControlMessage::RegisterListener(ListenerKey { protocol: 6, addr: None, port: 80 }));
/// fw.apply(&listen.to_bytes(), Instant::ZERO).unwrap();
/// let syn = PacketBuilder::tcp("198.18.5.7:40000".parse().unwrap(), "198.18.0.10:80".parse().unwrap())
///     .flags(tcp_flags::SYN)
///     .build()
///     .unwrap();
/// assert_eq!(fw.classify(&syn, Instant::ZERO), Verdict::deliver(2, 0));
/// ```
pub struct Firmware {
    filter: Option<Box<dyn Filter + Send>>,
    state: State,
}

impl core::fmt::Debug for Firmware {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Firmware")
            .field(
                "filter",
                &self.filter.as_ref().map(|f| f.name().to_string()),
            )
            .field("state", &self.state)
            .finish()
    }
}

impl Firmware {
    /// A firmware instance: all processors live, no listeners, no connections,
    /// the built-in filter.
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        config.validate()?;
        let n = usize::from(config.processor_count);
        let state = State {
            listeners: ListenerTable::default(),
            conns: ConnectionTable::with_capacity(
                config.connection_capacity + config.provisional_capacity,
                config.hash_seed,
            ),
            established: 0,
            provisional: 0,
            timed: HashMap::new(),
            provisional_queue: VecDeque::new(),
            orphan_queue: VecDeque::new(),
            fragments: FragmentTracker::new(config.fragment_capacity, config.fragment_timeout),
            live: vec![true; n],
            capacity: vec![None; n],
            master: Some(config.initial_master),
            counters: Counters::default(),
            now: Instant::ZERO,
            generation: 0,
            outbox: Vec::new(),
            config,
        };
        Ok(Firmware {
            filter: None,
            state,
        })
    }

    /// Replaces the built-in filter with `filter` (a [`crate::filter::FilterTree`]
    /// or any [`Filter`]).
    pub fn set_filter(&mut self, filter: Box<dyn Filter + Send>) {
        self.filter = Some(filter);
    }

    /// Returns to the built-in filter.
    pub fn clear_filter(&mut self) {
        self.filter = None;
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.state.config
    }

    /// Counters so far.
    pub fn counters(&self) -> &Counters {
        &self.state.counters
    }

    /// The master processor.
    pub fn master(&self) -> Option<ProcessorId> {
        self.state.master
    }

    /// Whether `p` is live.
    pub fn is_live(&self, p: ProcessorId) -> bool {
        self.state.is_live(p)
    }

    /// The listener groups.
    pub fn listeners(&self) -> &ListenerTable {
        &self.state.listeners
    }

    /// The connection table.
    pub fn connections(&self) -> &ConnectionTable {
        &self.state.conns
    }

    /// The entry for `t`.
    pub fn connection(&self, t: &FiveTuple) -> Option<ConnectionEntry> {
        self.state.conns.get(t)
    }

    /// Established plus orphaned connections (the replicated count).
    pub fn established_count(&self) -> usize {
        self.state.established
    }

    /// Provisional entries.
    pub fn provisional_count(&self) -> usize {
        self.state.provisional
    }

    /// The latest time seen.
    pub fn now(&self) -> Instant {
        self.state.now
    }

    /// Takes the frames the firmware queued to send on its own, oldest
    /// first, leaving none queued. They are complete Ethernet frames without
    /// FCS, checksums filled in, for the adapter to transmit out of its LAN
    /// port: today the proactive RSTs queued when a processor goes down
    /// ([`ControlMessage::ProcessorDown`], [`Firmware::processor_failed`]),
    /// one per established connection of that processor whose client's last
    /// acknowledgement is remembered. Frames stay queued until taken, so
    /// the adapter takes them after every call that can queue some.
    pub fn take_frames(&mut self) -> Vec<Vec<u8>> {
        core::mem::take(&mut self.state.outbox)
    }

    /// Whether frames wait for [`Firmware::take_frames`].
    pub fn has_frames(&self) -> bool {
        !self.state.outbox.is_empty()
    }

    /// Expires provisional entries, orphans and fragment records due at `now`.
    pub fn poll(&mut self, now: Instant) {
        self.state.advance(now);
    }

    /// When [`Firmware::poll`] next has something to do.
    pub fn poll_at(&self) -> Option<Instant> {
        [
            self.state.provisional_queue.front().map(|e| e.0),
            self.state.orphan_queue.front().map(|e| e.0),
            self.state.fragments.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Classifies one Ethernet frame (without FCS) arriving at `now`.
    pub fn classify(&mut self, frame: &[u8], now: Instant) -> Verdict {
        self.state.advance(now);
        let v = match parse_frame(frame, &self.state.config.parse) {
            Ok(p) => self.decide(&p),
            Err(r) => Verdict::Drop(r),
        };
        self.state.counters.count(&v);
        v
    }

    /// Classifies an already parsed frame arriving at `now`.
    pub fn classify_parsed(&mut self, frame: &ParsedFrame, now: Instant) -> Verdict {
        self.state.advance(now);
        let v = self.decide(frame);
        self.state.counters.count(&v);
        v
    }

    fn decide(&mut self, p: &ParsedFrame) -> Verdict {
        self.decide_with(p, Key::Unknown, None)
    }

    /// [`Firmware::decide`] with what is already known of the frame: its
    /// tuple and hash, and the generation at which the table had no entry.
    fn decide_with(&mut self, p: &ParsedFrame, key: Key, miss_at: Option<u64>) -> Verdict {
        let mut stages = Stages::new(&mut self.state, p, key, miss_at);
        let v = match &self.filter {
            None => builtin(p, &mut stages),
            Some(f) => f.classify(p, &mut stages),
        };
        if let (true, Verdict::Deliver { processor, queue }, Some(ip)) =
            (p.is_first_fragment(), &v, &p.ip)
        {
            if let Some(key) = FragmentKey::of(ip) {
                let now = self.state.now;
                if self.state.fragments.record(key, *processor, *queue, now) {
                    self.state.counters.fragments_tracked += 1;
                }
            }
        }
        v
    }

    /// Classifies a batch of frames arriving at `now`, writing one verdict per
    /// frame to `out` (cleared first). Same verdicts and counters as calling
    /// [`Firmware::classify`] on each in order; with the built-in filter, the
    /// connection-table lookups of up to [`BATCH`](crate::conntable::BATCH) frames are pipelined.
    pub fn classify_batch(&mut self, frames: &[&[u8]], now: Instant, out: &mut Vec<Verdict>) {
        out.clear();
        self.state.advance(now);
        if self.filter.is_some() {
            for f in frames {
                out.push(self.classify(f, now));
            }
            return;
        }
        for chunk in frames.chunks(BATCH) {
            let mut parsed = [Err(DropReason::TruncatedEthernet); BATCH];
            let mut keys: [Option<(FiveTuple, u64)>; BATCH] = [None; BATCH];
            for (i, f) in chunk.iter().enumerate() {
                parsed[i] = parse_frame(f, &self.state.config.parse);
                if let Ok(p) = &parsed[i] {
                    if p.ethertype != ETHERTYPE_ARP && p.ip.is_some_and(|ip| ip.fragment.is_none())
                    {
                        if let Some(t) = p.tuple() {
                            keys[i] = Some((t, self.state.conns.hash(&t)));
                        }
                    }
                }
            }
            let mut first = [0u64; BATCH];
            for i in 0..chunk.len() {
                if let Some((_, h)) = &keys[i] {
                    first[i] = self.state.conns.home_word(*h);
                }
            }
            let generation = self.state.generation;
            // What the connection hits of the fast path teach for resets
            // (record, frame) is applied after the chunk's lookups, so their
            // cache misses keep overlapping, or before anything else could
            // change the table.
            let mut seen = [(0usize, 0usize); BATCH];
            let mut n_seen = 0;
            for i in 0..chunk.len() {
                let v = match (&parsed[i], &keys[i]) {
                    (Err(r), _) => Verdict::Drop(*r),
                    (Ok(p), Some((t, h))) if self.state.generation == generation => {
                        let key = Key::Known(Some((*t, *h)));
                        match self.state.conns.resolve_hint_index(t, *h, first[i]) {
                            Some((
                                idx,
                                owner,
                                EntryState::Established | EntryState::Provisional,
                            )) => {
                                seen[n_seen] = (idx, i);
                                n_seen += 1;
                                Verdict::Deliver {
                                    processor: owner,
                                    queue: self.state.queue_for(*h),
                                }
                            }
                            hit => {
                                self.state.observe_all(&seen[..n_seen], &parsed);
                                n_seen = 0;
                                let miss_at = hit.is_none().then_some(generation);
                                self.decide_with(p, key, miss_at)
                            }
                        }
                    }
                    (Ok(p), key) => {
                        self.state.observe_all(&seen[..n_seen], &parsed);
                        n_seen = 0;
                        match key {
                            Some((t, h)) => self.decide_with(p, Key::Known(Some((*t, *h))), None),
                            None => self.decide(p),
                        }
                    }
                };
                self.state.counters.count(&v);
                out.push(v);
            }
            self.state.observe_all(&seen[..n_seen], &parsed);
        }
    }

    /// Applies one encoded control message received at `now`.
    pub fn apply(&mut self, bytes: &[u8], now: Instant) -> Result<(), ControlError> {
        match Envelope::parse(bytes) {
            Ok(env) => self.apply_envelope(&env, now),
            Err(e) => {
                let e = ControlError::Parse(e);
                self.state.counters.control_rejected[e.reason().index()] += 1;
                Err(e)
            }
        }
    }

    /// Applies one decoded control message received at `now`.
    pub fn apply_envelope(&mut self, env: &Envelope, now: Instant) -> Result<(), ControlError> {
        self.state.advance(now);
        match self.state.apply(env.sender, &env.message) {
            Ok(()) => {
                self.state.counters.control_accepted += 1;
                Ok(())
            }
            Err(reason) => {
                self.state.counters.control_rejected[reason.index()] += 1;
                Err(ControlError::Rejected {
                    sender: env.sender,
                    reason,
                })
            }
        }
    }

    /// The adapter itself learnt at `now` that processor `p` failed (the
    /// fabric reported its endpoint down), with no host message: the same
    /// handling as an accepted `ProcessorDown` (its filters go, its
    /// connections are answered with RST, RSTs for their clients are queued
    /// for [`Firmware::take_frames`], the master role moves on).
    /// Returns false, changing nothing, when `p` is not a processor of the
    /// configuration or is already down.
    pub fn processor_failed(&mut self, p: ProcessorId, now: Instant) -> bool {
        self.state.advance(now);
        if p.0 >= self.state.config.processor_count || !self.state.is_live(p) {
            return false;
        }
        self.state.processor_down(p);
        true
    }

    /// The replicated state (canonical: equal states give equal snapshots).
    pub fn snapshot(&self) -> TableSnapshot {
        self.state.snapshot()
    }

    /// The replicated state as a table-dump control message from `sender`,
    /// ready to send to an adapter being resynchronised.
    pub fn dump(&self, sender: ProcessorId) -> Vec<u8> {
        Envelope::new(sender, ControlMessage::TableDump(self.snapshot())).to_bytes()
    }
}

/// The built-in filter, hard-coded: ARP to the master, IP through the
/// host-controlled stages. Equivalent to [`crate::filter::FilterTree::builtin`]
/// (a test checks it), written out so the common path walks no tree.
fn builtin(p: &ParsedFrame, stages: &mut Stages<'_>) -> Verdict {
    if p.ip.is_none() {
        return stages.master();
    }
    stages.host_controlled(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntable::tests::HASHES;
    use crate::filter::{FilterTree, NodeSpec};
    use crate::kit::PacketBuilder;
    use crate::listener::ListenerKey;
    use crate::listener::tests::LOOKUPS;
    use crate::wire::tcp_flags;

    fn firmware(filter: Option<NodeSpec>) -> Firmware {
        let mut fw = Firmware::new(Config::default().share_ports(
            PROTO_TCP,
            80,
            80,
            crate::Policy::RoundRobin,
        ))
        .unwrap();
        for p in [1, 2] {
            let key = ListenerKey {
                protocol: PROTO_TCP,
                addr: None,
                port: 80,
            };
            fw.apply_envelope(
                &Envelope::new(ProcessorId(p), ControlMessage::RegisterListener(key)),
                Instant::ZERO,
            )
            .unwrap();
        }
        if let Some(spec) = filter {
            fw.set_filter(Box::new(FilterTree::compile("t", &spec).unwrap()));
        }
        fw
    }

    fn segment(client: u16, flags: u8) -> Vec<u8> {
        PacketBuilder::tcp(
            format!("198.18.5.7:{client}").parse().unwrap(),
            "198.18.0.10:80".parse().unwrap(),
        )
        .flags(flags)
        .build()
        .unwrap()
    }

    /// Runs `f`, returning its result and the table hashes and listener
    /// lookups it made.
    fn counting<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
        let (h, l) = (HASHES.with(|n| n.get()), LOOKUPS.with(|n| n.get()));
        let r = f();
        (
            r,
            HASHES.with(|n| n.get()) - h,
            LOOKUPS.with(|n| n.get()) - l,
        )
    }

    #[test]
    fn a_segment_that_is_no_connection_request_skips_the_listeners() {
        let mut fw = firmware(None);
        let ack = segment(40000, tcp_flags::ACK);
        let (v, _, lookups) = counting(|| fw.classify(&ack, Instant::ZERO));
        assert!(matches!(v, Verdict::Master { .. }), "{v}");
        assert_eq!(lookups, 0);
        let syn = segment(40000, tcp_flags::SYN);
        let (v, _, lookups) = counting(|| fw.classify(&syn, Instant::ZERO));
        assert_eq!(v, Verdict::deliver(1, 0));
        assert_eq!(lookups, 1);
    }

    /// Parses a proactive RST with smoltcp's own views (independently of
    /// the firmware's parser) and checks it against the connection it
    /// resets: MACs and VLAN tag mirrored, addresses and ports from the
    /// cluster to the client, RST alone with `seq`, valid checksums.
    fn check_proactive_reset(frame: &[u8], t: &FiveTuple, link: &LinkAddrs, seq: u32) {
        use smoltcp::wire::{
            EthernetAddress, EthernetFrame, IpAddress, Ipv4Packet, Ipv6Packet, TcpPacket,
        };
        let eth = EthernetFrame::new_checked(frame).unwrap();
        assert_eq!(eth.dst_addr(), EthernetAddress(link.client_mac));
        assert_eq!(eth.src_addr(), EthernetAddress(link.adapter_mac));
        let mut l3 = eth.payload();
        let mut ethertype = u16::from(eth.ethertype());
        match link.vlan_tci {
            Some(tci) => {
                assert_eq!(ethertype, 0x8100);
                assert_eq!(u16::from_be_bytes([l3[0], l3[1]]), tci);
                ethertype = u16::from_be_bytes([l3[2], l3[3]]);
                l3 = &l3[4..];
            }
            None => assert_ne!(ethertype, 0x8100),
        }
        let (src, dst) = (
            IpAddress::from(crate::tuple::ip_of(&t.local_addr)),
            IpAddress::from(crate::tuple::ip_of(&t.remote_addr)),
        );
        let l4 = if t.is_ipv4() {
            assert_eq!(ethertype, 0x0800);
            let ip = Ipv4Packet::new_checked(l3).unwrap();
            assert!(ip.verify_checksum(), "IPv4 header checksum");
            assert_eq!(
                (
                    IpAddress::from(ip.src_addr()),
                    IpAddress::from(ip.dst_addr())
                ),
                (src, dst)
            );
            assert_eq!(u8::from(ip.next_header()), PROTO_TCP);
            &l3[usize::from(ip.header_len())..usize::from(ip.total_len())]
        } else {
            assert_eq!(ethertype, 0x86dd);
            let ip = Ipv6Packet::new_checked(l3).unwrap();
            assert_eq!(
                (
                    IpAddress::from(ip.src_addr()),
                    IpAddress::from(ip.dst_addr())
                ),
                (src, dst)
            );
            assert_eq!(u8::from(ip.next_header()), PROTO_TCP);
            &l3[40..40 + usize::from(ip.payload_len())]
        };
        let tcp = TcpPacket::new_checked(l4).unwrap();
        assert!(tcp.verify_checksum(&src, &dst), "TCP checksum");
        assert_eq!(
            (tcp.src_port(), tcp.dst_port()),
            (t.local_port, t.remote_port)
        );
        assert!(tcp.rst() && !tcp.ack() && !tcp.syn() && !tcp.fin());
        assert_eq!(tcp.seq_number().0 as u32, seq);
        assert_eq!(tcp.payload().len(), 0);
        // The firmware's own checks agree.
        crate::kit::invariants::check_reset(frame).unwrap();
    }

    #[test]
    fn a_failed_processor_s_clients_are_reset_without_a_segment_to_answer() {
        let mut fw = Firmware::new(Config {
            parse: crate::wire::ParseOptions {
                vlan: crate::wire::VlanPolicy::Accept(Vec::new()),
                ..Default::default()
            },
            ..Config::default()
        })
        .unwrap();
        let t0 = Instant::ZERO;
        let add = |fw: &mut Firmware, p: u16, t: FiveTuple| {
            fw.apply_envelope(
                &Envelope::new(ProcessorId(p), ControlMessage::AddConnection(t)),
                t0,
            )
            .unwrap();
        };
        let key = |c: &str, s: &str| {
            let (c, s): (std::net::SocketAddr, std::net::SocketAddr) =
                (c.parse().unwrap(), s.parse().unwrap());
            FiveTuple::tcp(c.ip(), c.port(), s.ip(), s.port())
        };
        let seg = |c: &str, s: &str, flags: u8, ack: u32| {
            PacketBuilder::tcp(c.parse().unwrap(), s.parse().unwrap())
                .flags(flags)
                .seq(77)
                .ack_number(ack)
        };
        let (v4c, v4s) = ("198.18.5.7:40000", "198.18.0.10:80");
        let (v6c, v6s) = ("[2001:db8::7]:40001", "[2001:db8::10]:443");
        let (tagged_c, quiet_c, no_ack_c, other_c) = (
            "198.18.5.8:40002",
            "198.18.5.9:40003",
            "198.18.5.10:40004",
            "198.18.5.11:40005",
        );
        let router = [0x02, 0, 0, 0, 0, 0x42];
        let adapter = [0x02, 0, 0, 0, 0, 0x10];
        for c in [v4c, tagged_c, quiet_c, no_ack_c] {
            add(&mut fw, 1, key(c, v4s));
        }
        add(&mut fw, 1, key(v6c, v6s));
        add(&mut fw, 2, key(other_c, v4s));

        // IPv4: the last segment with ACK set counts, one at a time.
        for ack in [0x1234_5678, 0x1234_5700] {
            let f = seg(v4c, v4s, tcp_flags::ACK | tcp_flags::PSH, ack)
                .macs(router, adapter)
                .payload(b"request")
                .build()
                .unwrap();
            assert_eq!(fw.classify(&f, t0), Verdict::deliver(1, 0));
        }
        // IPv6, through the batched path, ack numbers wrapping.
        let f = seg(v6c, v6s, tcp_flags::ACK, u32::MAX - 3).build().unwrap();
        let mut out = Vec::new();
        fw.classify_batch(&[&f], t0, &mut out);
        assert_eq!(out, vec![Verdict::deliver(1, 0)]);
        // A VLAN-tagged client.
        let f = seg(tagged_c, v4s, tcp_flags::ACK, 9)
            .vlan(7)
            .build()
            .unwrap();
        assert_eq!(fw.classify(&f, t0), Verdict::deliver(1, 0));
        // Neither a segment without ACK nor the client's own RST teaches anything.
        let f = seg(no_ack_c, v4s, tcp_flags::PSH, 5).build().unwrap();
        assert_eq!(fw.classify(&f, t0), Verdict::deliver(1, 0));
        let f = seg(no_ack_c, v4s, tcp_flags::RST | tcp_flags::ACK, 5)
            .build()
            .unwrap();
        assert_eq!(fw.classify(&f, t0), Verdict::deliver(1, 0));
        // The other processor's client.
        let f = seg(other_c, v4s, tcp_flags::ACK, 11).build().unwrap();
        assert_eq!(fw.classify(&f, t0), Verdict::deliver(2, 0));
        assert!(!fw.has_frames());

        let v4_link = LinkAddrs {
            client_mac: router,
            adapter_mac: adapter,
            vlan_tci: None,
        };
        let default_link = LinkAddrs {
            client_mac: crate::wire::builder::CLIENT_MAC,
            adapter_mac: crate::wire::builder::ADAPTER_MAC,
            vlan_tci: None,
        };
        let tagged_link = LinkAddrs {
            vlan_tci: Some(7),
            ..default_link
        };
        assert_eq!(
            fw.connections().reset_info(&key(v4c, v4s)),
            Some(crate::conntable::ResetInfo {
                link: v4_link,
                ack: 0x1234_5700,
                syn: false
            })
        );
        assert_eq!(fw.connections().reset_info(&key(quiet_c, v4s)), None);
        assert_eq!(fw.connections().reset_info(&key(no_ack_c, v4s)), None);
        assert_eq!(fw.connections().link_count(), 3);

        assert!(fw.processor_failed(ProcessorId(1), t0));
        let frames = fw.take_frames();
        assert_eq!(frames.len(), 3, "one RST per remembered connection");
        assert!(fw.take_frames().is_empty() && !fw.has_frames());
        let expect = [
            (key(v4c, v4s), v4_link, 0x1234_5700),
            (key(v6c, v6s), default_link, u32::MAX - 3),
            (key(tagged_c, v4s), tagged_link, 9),
        ];
        for (t, link, seq) in &expect {
            let n = frames
                .iter()
                .filter(|f| {
                    let p = parse_frame(f, &fw.config().parse).unwrap();
                    p.tuple().map(|r| (r.remote_port, r.local_port))
                        == Some((t.local_port, t.remote_port))
                })
                .inspect(|f| check_proactive_reset(f, t, link, *seq))
                .count();
            assert_eq!(n, 1, "{}", t.describe());
        }
        let c = fw.counters();
        assert_eq!(
            (
                c.proactive_resets,
                c.resets_sent,
                c.connections_reset,
                c.connections_orphaned
            ),
            (3, 3, 3, 5)
        );
        // Every one is orphaned as before: a later segment still gets the
        // reactive RST — the very frame sent proactively, when the client
        // acknowledges the same — without counting the connection twice.
        for (t, _, _) in &expect {
            assert_eq!(fw.connection(t).unwrap().state, EntryState::Orphaned);
        }
        let again = seg(v4c, v4s, tcp_flags::ACK, 0x1234_5700)
            .macs(router, adapter)
            .build()
            .unwrap();
        let reactive = fw.classify(&again, t0);
        let proactive = frames
            .iter()
            .find(|f| f.len() == 54 && f[0..6] == router)
            .unwrap();
        assert_eq!(
            reactive,
            Verdict::Reply {
                frame: proactive.clone()
            }
        );
        let f = seg(quiet_c, v4s, tcp_flags::ACK, 3).build().unwrap();
        assert!(matches!(fw.classify(&f, t0), Verdict::Reply { .. }));
        let c = fw.counters();
        assert_eq!((c.resets_sent, c.connections_reset), (5, 4));
        // The survivor's connection is untouched; a second failure report
        // changes nothing and queues nothing.
        assert_eq!(
            fw.connection(&key(other_c, v4s)).unwrap().state,
            EntryState::Established
        );
        assert!(!fw.processor_failed(ProcessorId(1), t0));
        assert!(!fw.has_frames());
    }

    #[test]
    fn link_addressings_are_shared_and_forgotten_with_their_connections() {
        let mut fw = firmware(None);
        // Client ports 40000.. from one MAC, then one of them moves.
        for client in 40000..40004u16 {
            let t = segment(client, tcp_flags::SYN);
            assert!(matches!(
                fw.classify(&t, Instant::ZERO),
                Verdict::Deliver { .. }
            ));
            assert!(matches!(
                fw.classify(&segment(client, tcp_flags::ACK), Instant::ZERO),
                Verdict::Deliver { .. }
            ));
        }
        assert_eq!(fw.connections().link_count(), 1);
        let moved = PacketBuilder::tcp(
            "198.18.5.7:40003".parse().unwrap(),
            "198.18.0.10:80".parse().unwrap(),
        )
        .macs([0x02, 0, 0, 0, 0, 0x77], crate::wire::builder::ADAPTER_MAC)
        .ack_number(1)
        .build()
        .unwrap();
        fw.classify(&moved, Instant::ZERO);
        assert_eq!(fw.connections().link_count(), 2);
        let t = moved_tuple(40003);
        assert_eq!(
            fw.connections().reset_info(&t).unwrap().link.client_mac,
            [0x02, 0, 0, 0, 0, 0x77]
        );
        // Removing the connection drops the addressing only it used.
        fw.apply_envelope(
            &Envelope::new(ProcessorId(0), ControlMessage::RemoveConnection(t)),
            Instant::ZERO,
        )
        .unwrap();
        assert_eq!(fw.connections().link_count(), 1);
        // Provisional entries of a failed processor go, and so do their
        // addressings. Each saw its handshake ACK, so its client gets the
        // established form of the reset: RST alone, at the ACK's number.
        fw.processor_failed(ProcessorId(1), Instant::ZERO);
        fw.processor_failed(ProcessorId(2), Instant::ZERO);
        assert!(fw.connections().is_empty());
        assert_eq!(fw.connections().link_count(), 0);
        let frames = fw.take_frames();
        assert_eq!(frames.len(), 3);
        for f in &frames {
            let tcp = *crate::kit::invariants::check_reset(f)
                .unwrap()
                .tcp()
                .unwrap();
            assert_eq!((tcp.flags, tcp.seq), (tcp_flags::RST, 0));
        }
    }

    #[test]
    fn a_connection_attempt_to_a_failed_processor_is_reset() {
        let mut fw = firmware(None);
        let syn = |client: u16, isn: u32| {
            PacketBuilder::tcp(
                format!("198.18.5.7:{client}").parse().unwrap(),
                "198.18.0.10:80".parse().unwrap(),
            )
            .flags(tcp_flags::SYN)
            .seq(isn)
            .build()
            .unwrap()
        };
        // Round robin: 41000 to processor 1, 41001 to processor 2, 41002
        // to processor 1.
        let mut owners = Vec::new();
        for (client, isn) in [(41000, 0xffff_ffff), (41001, 7), (41002, 1000)] {
            match fw.classify(&syn(client, isn), Instant::ZERO) {
                Verdict::Deliver { processor, .. } => owners.push(processor.0),
                v => panic!("{v:?}"),
            }
        }
        assert_eq!(owners, [1, 2, 1]);
        let info = fw.connections().reset_info(&moved_tuple(41000)).unwrap();
        assert!(info.syn);
        assert_eq!(info.ack, 0, "ISN + 1 wraps");
        // Processor 1 confirms 41002 before any ACK: no sequence number the
        // client would accept is known, so that one gets no proactive reset.
        fw.apply_envelope(
            &Envelope::new(
                ProcessorId(1),
                ControlMessage::AddConnection(moved_tuple(41002)),
            ),
            Instant::ZERO,
        )
        .unwrap();
        assert!(
            fw.connections()
                .reset_info(&moved_tuple(41002))
                .unwrap()
                .syn
        );
        assert!(fw.processor_failed(ProcessorId(1), Instant::ZERO));
        let frames = fw.take_frames();
        assert_eq!(frames.len(), 1, "only the attempt still waiting");
        let p = crate::kit::invariants::check_reset(&frames[0]).unwrap();
        let tcp = *p.tcp().unwrap();
        assert_eq!(tcp.flags, tcp_flags::RST | tcp_flags::ACK);
        assert_eq!(tcp.ack, 0, "acknowledges the SYN");
        assert_eq!(
            p.ip.as_ref().unwrap().transport.as_ref().unwrap().dst_port,
            41000
        );
        assert_eq!(fw.counters().proactive_resets, 1);
        // Processor 2's attempt is untouched and keeps its memory.
        assert!(
            fw.connections()
                .reset_info(&moved_tuple(41001))
                .unwrap()
                .syn
        );
        assert!(!fw.has_frames());
    }

    fn moved_tuple(client: u16) -> FiveTuple {
        FiveTuple::tcp(
            "198.18.5.7".parse().unwrap(),
            client,
            "198.18.0.10".parse().unwrap(),
            80,
        )
    }

    #[test]
    fn the_tuple_is_hashed_once_per_frame() {
        let trees = [
            None,
            Some(FilterTree::builtin_spec()),
            Some(NodeSpec::listeners(NodeSpec::Master)),
        ];
        for tree in trees {
            let mut fw = firmware(tree.clone());
            for (n, client) in [40000u16, 40001].into_iter().enumerate() {
                let syn = segment(client, tcp_flags::SYN);
                let (v, hashes, _) = counting(|| fw.classify(&syn, Instant::ZERO));
                assert_eq!(v.processor(), Some(ProcessorId(n as u16 + 1)), "{tree:?}");
                assert_eq!(hashes, 1, "new connection, {tree:?}");
                // The retransmission finds the provisional entry.
                let (v2, hashes, _) = counting(|| fw.classify(&syn, Instant::ZERO));
                assert_eq!(v2, v);
                assert_eq!(hashes, 1, "retransmission, {tree:?}");
            }
            // The same through the batch path.
            let frames = [
                segment(40002, tcp_flags::SYN),
                segment(40002, tcp_flags::SYN),
            ];
            let refs: Vec<&[u8]> = frames.iter().map(|f| f.as_slice()).collect();
            let mut out = Vec::new();
            let (_, hashes, _) = counting(|| fw.classify_batch(&refs, Instant::ZERO, &mut out));
            assert_eq!(
                out,
                vec![Verdict::deliver(1, 0), Verdict::deliver(1, 0)],
                "{tree:?}"
            );
            assert_eq!(hashes, 2, "batch, {tree:?}");
        }
    }
}
