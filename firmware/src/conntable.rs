//! The connection table: exact 5-tuple → owning processor, for a configured
//! number of connections, never growing past it.
//!
//! Layout (chosen for ≤ 64 bytes per connection and fast random lookups):
//! - `entries`: a dense array of 46-byte records (both addresses, both ports,
//!   protocol, state, owner, and what a reset without an inbound frame needs:
//!   a link-addressing id and the client's last acknowledgement number),
//!   allocated once at the configured capacity;
//! - `slots`: an open-addressing index of `u64` words, a power of two at least
//!   8/7 of the capacity, each word holding the upper 32 bits of the key's hash
//!   (a tag) and the record's position + 1 (0 = empty). Linear probing from the
//!   hash's lower bits; deletion shifts later slots back (no tombstones), so
//!   probe sequences stay short however long the table lives;
//! - `links`: the distinct link addressings (client MAC, adapter MAC, VLAN
//!   tag) of the connections' inbound frames, each stored once with a
//!   reference count and named by a 16-bit id in the records. Clients behind
//!   a router share its MAC, so the set stays small whatever the number of
//!   connections; past 65535 distinct ones, a connection with a new one
//!   remembers nothing.
//!
//! A lookup reads one slot word, compares the tag, then reads one record. The
//! batched lookup ([`ConnectionTable::lookup_batch`]) hashes a whole batch,
//! reads all its slot words, then all its records, so the cache misses of
//! different keys overlap instead of queuing one behind the other.
//!
//! ## Remembered for resets
//! For each connection the table keeps what the adapter needs to reset the
//! client without an inbound frame to answer ([`ResetInfo`]): the link
//! addressing of the connection's last inbound segment with ACK set, and that
//! segment's acknowledgement number (the client's RCV.NXT when nothing is in
//! flight towards it). The firmware updates it on the delivery path: a
//! compare (and, when the acknowledgement moved, a store) in the record the
//! lookup already read, and a compare against the small, cached link table,
//! which changes only when a connection's addressing does. A table dump
//! carries none of it: a restored entry remembers nothing until its next
//! segment with ACK set.

use std::collections::HashMap;

use crate::tuple::{Addr16, FiveTuple};
use crate::verdict::ProcessorId;
use crate::wire::ParsedFrame;

/// State of a connection entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntryState {
    /// Created by a SYN for a listener port; waits for its owner to confirm.
    Provisional,
    /// Registered or confirmed by its owning processor.
    Established,
    /// Its processor failed; segments for it are answered with RST.
    Orphaned,
}

impl EntryState {
    const fn code(self) -> u8 {
        match self {
            EntryState::Provisional => 1,
            EntryState::Established => 2,
            EntryState::Orphaned => 3,
        }
    }

    const fn from_code(c: u8) -> Self {
        match c & !SYN_INFO {
            1 => EntryState::Provisional,
            3 => EntryState::Orphaned,
            _ => EntryState::Established,
        }
    }
}

/// One connection as the table reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionEntry {
    /// The key.
    pub tuple: FiveTuple,
    /// The owning processor.
    pub owner: ProcessorId,
    /// Its state.
    pub state: EntryState,
}

/// The link-layer addressing of a connection's inbound frames, which a frame
/// the adapter sends to the client on its own must mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkAddrs {
    /// The client's MAC (the source of the inbound frame; for a client
    /// behind a router, the router's).
    pub client_mac: [u8; 6],
    /// The adapter MAC the client sent to (the inbound frame's destination).
    pub adapter_mac: [u8; 6],
    /// The inbound frame's VLAN tag control information, if it was tagged.
    pub vlan_tci: Option<u16>,
}

impl LinkAddrs {
    /// The addressing of `frame`, if both its MACs are unicast (a frame to a
    /// group address teaches nothing about where the client is).
    #[inline]
    pub fn of(frame: &ParsedFrame) -> Option<Self> {
        if (frame.src_mac[0] | frame.dst_mac[0]) & 1 != 0 {
            return None;
        }
        Some(LinkAddrs {
            client_mac: frame.src_mac,
            adapter_mac: frame.dst_mac,
            vlan_tci: frame.vlan_tci,
        })
    }
}

/// What the table remembers of a connection to reset its client without an
/// inbound frame to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResetInfo {
    /// The addressing of the connection's last inbound segment with ACK set
    /// (or of its SYN, see `syn`).
    pub link: LinkAddrs,
    /// That segment's acknowledgement number: the client's RCV.NXT when the
    /// server had nothing in flight, so a RST with this sequence number is
    /// exactly in the client's window. When `syn` is set: the client's
    /// initial sequence number + 1, which an RST|ACK must acknowledge to end
    /// an attempt still in SYN-SENT.
    pub ack: u32,
    /// Remembered from the connection's SYN: no segment with ACK set has
    /// been seen since.
    pub syn: bool,
}

/// Bit of a record's state byte: what it remembers came from the SYN.
const SYN_INFO: u8 = 0x80;

/// The stored record: 46 bytes, no padding (2-byte alignment; the
/// acknowledgement number is kept as bytes so it adds none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
struct Record {
    remote_addr: Addr16,
    local_addr: Addr16,
    remote_port: u16,
    local_port: u16,
    protocol: u8,
    state: u8,
    owner: u16,
    /// Id in the link table of the last observed addressing; 0 = nothing
    /// remembered (no inbound segment with ACK set seen yet).
    link: u16,
    /// The last observed acknowledgement number, native byte order
    /// (meaningful when `link` is not 0).
    ack: [u8; 4],
}

const _: () = assert!(core::mem::size_of::<Record>() == 46);

impl Record {
    fn new(t: &FiveTuple, owner: ProcessorId, state: EntryState) -> Self {
        Record {
            remote_addr: t.remote_addr,
            local_addr: t.local_addr,
            remote_port: t.remote_port,
            local_port: t.local_port,
            protocol: t.protocol,
            state: state.code(),
            owner: owner.0,
            link: 0,
            ack: [0; 4],
        }
    }

    #[inline(always)]
    fn matches(&self, t: &FiveTuple) -> bool {
        self.remote_port == t.remote_port
            && self.local_port == t.local_port
            && self.protocol == t.protocol
            && self.remote_addr == t.remote_addr
            && self.local_addr == t.local_addr
    }

    fn tuple(&self) -> FiveTuple {
        FiveTuple {
            protocol: self.protocol,
            remote_addr: self.remote_addr,
            remote_port: self.remote_port,
            local_addr: self.local_addr,
            local_port: self.local_port,
        }
    }

    fn entry(&self) -> ConnectionEntry {
        ConnectionEntry {
            tuple: self.tuple(),
            owner: ProcessorId(self.owner),
            state: EntryState::from_code(self.state),
        }
    }

    #[inline(always)]
    fn owner_state(&self) -> (ProcessorId, EntryState) {
        (ProcessorId(self.owner), EntryState::from_code(self.state))
    }
}

/// Most distinct link addressings the table holds at once (ids
/// `1..=MAX_LINKS`).
const MAX_LINKS: usize = u16::MAX as usize;

/// One link addressing and the records naming it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LinkSlot {
    link: LinkAddrs,
    refs: u32,
}

/// The distinct link addressings of the records, reference-counted; see the
/// module documentation.
#[derive(Debug, Clone, Default)]
struct Links {
    /// Slot `id - 1` holds link `id`; free slots have no references.
    slots: Vec<LinkSlot>,
    ids: HashMap<LinkAddrs, u16>,
    free: Vec<u16>,
}

impl Links {
    /// The addressing of `id` (not 0).
    #[inline(always)]
    fn get(&self, id: u16) -> &LinkAddrs {
        &self.slots[usize::from(id) - 1].link
    }

    /// A reference to `link`'s id, adding it if new; 0 if the table already
    /// holds [`MAX_LINKS`] others.
    fn acquire(&mut self, link: &LinkAddrs) -> u16 {
        if let Some(&id) = self.ids.get(link) {
            self.slots[usize::from(id) - 1].refs += 1;
            return id;
        }
        let slot = LinkSlot {
            link: *link,
            refs: 1,
        };
        let id = if let Some(id) = self.free.pop() {
            self.slots[usize::from(id) - 1] = slot;
            id
        } else if self.slots.len() < MAX_LINKS {
            self.slots.push(slot);
            self.slots.len() as u16
        } else {
            return 0;
        };
        self.ids.insert(*link, id);
        id
    }

    /// Drops one reference to `id` (0 is none).
    fn release(&mut self, id: u16) {
        if id == 0 {
            return;
        }
        let slot = &mut self.slots[usize::from(id) - 1];
        slot.refs -= 1;
        if slot.refs == 0 {
            self.ids.remove(&slot.link);
            self.free.push(id);
        }
    }

    /// Distinct addressings held.
    fn len(&self) -> usize {
        self.ids.len()
    }

    fn memory_bytes(&self) -> usize {
        self.slots.capacity() * core::mem::size_of::<LinkSlot>()
            + self.free.capacity() * core::mem::size_of::<u16>()
            + self.ids.capacity() * (core::mem::size_of::<(LinkAddrs, u16)>() + 1)
    }

    fn clear(&mut self) {
        self.slots.clear();
        self.ids.clear();
        self.free.clear();
    }
}

/// The table is at its configured capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("connection table full ({capacity} entries)")]
pub struct TableFull {
    /// The capacity.
    pub capacity: usize,
}

/// Keys hashed per step of [`ConnectionTable::lookup_batch`].
pub const BATCH: usize = 32;

/// Exact-match table from 5-tuple to owner; see the module documentation.
#[derive(Debug, Clone)]
pub struct ConnectionTable {
    slots: Vec<u64>,
    mask: usize,
    records: Vec<Record>,
    links: Links,
    capacity: usize,
    seed: u64,
}

impl ConnectionTable {
    /// A table for at most `capacity` entries (at least 1), hashing with `seed`.
    pub fn with_capacity(capacity: usize, seed: u64) -> Self {
        let capacity = capacity.clamp(1, u32::MAX as usize - 1);
        let want = capacity + capacity / 7 + 1;
        let n = want.next_power_of_two().max(8);
        ConnectionTable {
            slots: vec![0; n],
            mask: n - 1,
            records: Vec::with_capacity(capacity),
            links: Links::default(),
            capacity,
            seed,
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The configured capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes the table has allocated (index, records and link addressings).
    pub fn memory_bytes(&self) -> usize {
        self.slots.capacity() * core::mem::size_of::<u64>()
            + self.records.capacity() * core::mem::size_of::<Record>()
            + self.links.memory_bytes()
    }

    /// Distinct link addressings the entries remember.
    pub fn link_count(&self) -> usize {
        self.links.len()
    }

    /// The hash the table uses for `t`.
    #[inline(always)]
    pub fn hash(&self, t: &FiveTuple) -> u64 {
        #[cfg(test)]
        tests::HASHES.with(|n| n.set(n.get() + 1));
        t.hash_with(self.seed)
    }

    #[inline(always)]
    fn home(&self, h: u64) -> usize {
        (h as usize) & self.mask
    }

    /// Slot position of `t`, or the empty slot where it would go.
    #[inline]
    fn find(&self, t: &FiveTuple, h: u64) -> Result<usize, usize> {
        let tag = h >> 32;
        let mut pos = self.home(h);
        loop {
            let s = self.slots[pos];
            if s == 0 {
                return Err(pos);
            }
            if s >> 32 == tag && self.records[(s as u32 - 1) as usize].matches(t) {
                return Ok(pos);
            }
            pos = (pos + 1) & self.mask;
        }
    }

    /// The entry for `t`.
    pub fn get(&self, t: &FiveTuple) -> Option<ConnectionEntry> {
        let pos = self.find(t, self.hash(t)).ok()?;
        Some(self.records[(self.slots[pos] as u32 - 1) as usize].entry())
    }

    /// Owner and state for `t`, with its hash already computed.
    #[inline]
    pub fn lookup_hashed(&self, t: &FiveTuple, h: u64) -> Option<(ProcessorId, EntryState)> {
        self.lookup_index(t, h).map(|(_, o, s)| (o, s))
    }

    /// [`ConnectionTable::lookup_hashed`], with the position of the record
    /// (valid until the table next changes) for [`ConnectionTable::observe`].
    #[inline]
    pub(crate) fn lookup_index(
        &self,
        t: &FiveTuple,
        h: u64,
    ) -> Option<(usize, ProcessorId, EntryState)> {
        let pos = self.find(t, h).ok()?;
        let idx = (self.slots[pos] as u32 - 1) as usize;
        let (o, s) = self.records[idx].owner_state();
        Some((idx, o, s))
    }

    /// What the entry of `t` remembers for a reset, if it has seen an
    /// inbound segment with ACK set.
    pub fn reset_info(&self, t: &FiveTuple) -> Option<ResetInfo> {
        let pos = self.find(t, self.hash(t)).ok()?;
        self.reset_info_at((self.slots[pos] as u32 - 1) as usize)
    }

    fn reset_info_at(&self, idx: usize) -> Option<ResetInfo> {
        let r = &self.records[idx];
        (r.link != 0).then(|| ResetInfo {
            link: *self.links.get(r.link),
            ack: u32::from_ne_bytes(r.ack),
            syn: r.state & SYN_INFO != 0,
        })
    }

    /// Every entry with what it remembers for a reset, in storage order.
    pub fn iter_reset_info(
        &self,
    ) -> impl Iterator<Item = (ConnectionEntry, Option<ResetInfo>)> + '_ {
        (0..self.records.len()).map(|i| (self.records[i].entry(), self.reset_info_at(i)))
    }

    /// Remembers, for the record at `idx` (from a lookup since which the
    /// table has not changed), an inbound segment with ACK set: its
    /// addressing `link` and acknowledgement number `ack`. The common case —
    /// same addressing as before — is two compares and at most one store
    /// (none when the acknowledgement did not move, so the record's cache
    /// line stays clean).
    #[inline]
    pub(crate) fn observe(&mut self, idx: usize, link: &LinkAddrs, ack: u32) {
        let r = &mut self.records[idx];
        let ack = ack.to_ne_bytes();
        if r.ack != ack {
            r.ack = ack;
        }
        if r.state & SYN_INFO != 0 {
            r.state &= !SYN_INFO;
        }
        if r.link == 0 || self.links.get(r.link) != link {
            self.relink(idx, link);
        }
    }

    /// Remembers, for the record at `idx`, the connection's SYN: its
    /// addressing and the client's initial sequence number + 1, until a
    /// segment with ACK set replaces them ([`ConnectionTable::observe`]).
    pub(crate) fn observe_syn(&mut self, idx: usize, link: &LinkAddrs, isn_plus_one: u32) {
        self.observe(idx, link, isn_plus_one);
        self.records[idx].state |= SYN_INFO;
    }

    /// The record at `idx` changes addressing (or gets its first).
    #[cold]
    #[inline(never)]
    fn relink(&mut self, idx: usize, link: &LinkAddrs) {
        let id = self.links.acquire(link);
        let r = &mut self.records[idx];
        let old = core::mem::replace(&mut r.link, id);
        self.links.release(old);
    }

    /// Looks up every key of `keys`, writing owner and state (or `None`) to
    /// `out[i]`. Same answers as [`ConnectionTable::lookup_hashed`], but the
    /// memory accesses of a batch of [`BATCH`] keys are issued together.
    pub fn lookup_batch(&self, keys: &[FiveTuple], out: &mut [Option<(ProcessorId, EntryState)>]) {
        for (kc, oc) in keys.chunks(BATCH).zip(out.chunks_mut(BATCH)) {
            let mut hashes = [0u64; BATCH];
            for (h, k) in hashes.iter_mut().zip(kc) {
                *h = self.hash(k);
            }
            let mut first = [0u64; BATCH];
            for (f, h) in first.iter_mut().zip(&hashes).take(kc.len()) {
                *f = self.slots[self.home(*h)];
            }
            for i in 0..kc.len() {
                oc[i] = self.resolve_hint(&kc[i], hashes[i], first[i]);
            }
        }
    }

    /// Finishes a lookup whose home slot word `first` was already read.
    #[inline(always)]
    pub(crate) fn resolve_hint(
        &self,
        t: &FiveTuple,
        h: u64,
        first: u64,
    ) -> Option<(ProcessorId, EntryState)> {
        self.resolve_hint_index(t, h, first).map(|(_, o, s)| (o, s))
    }

    /// [`ConnectionTable::resolve_hint`], with the position of the record.
    #[inline(always)]
    pub(crate) fn resolve_hint_index(
        &self,
        t: &FiveTuple,
        h: u64,
        first: u64,
    ) -> Option<(usize, ProcessorId, EntryState)> {
        if first == 0 {
            return None;
        }
        if first >> 32 == h >> 32 {
            let idx = (first as u32 - 1) as usize;
            let r = &self.records[idx];
            if r.matches(t) {
                let (o, s) = r.owner_state();
                return Some((idx, o, s));
            }
        }
        self.lookup_index(t, h)
    }

    /// The home slot word of hash `h` (for callers that pipeline lookups).
    #[inline(always)]
    pub(crate) fn home_word(&self, h: u64) -> u64 {
        self.slots[self.home(h)]
    }

    /// Inserts `t` or replaces its owner and state. Returns the previous entry.
    pub fn upsert(
        &mut self,
        t: &FiveTuple,
        owner: ProcessorId,
        state: EntryState,
    ) -> Result<Option<ConnectionEntry>, TableFull> {
        self.upsert_hashed(t, self.hash(t), owner, state)
            .map(|(_, old)| old)
    }

    /// [`ConnectionTable::upsert`] with the hash of `t` already computed;
    /// also returns the record's index (for [`ConnectionTable::observe`]).
    pub(crate) fn upsert_hashed(
        &mut self,
        t: &FiveTuple,
        h: u64,
        owner: ProcessorId,
        state: EntryState,
    ) -> Result<(usize, Option<ConnectionEntry>), TableFull> {
        match self.find(t, h) {
            Ok(pos) => {
                let idx = (self.slots[pos] as u32 - 1) as usize;
                let r = &mut self.records[idx];
                let old = r.entry();
                r.owner = owner.0;
                r.state = (r.state & SYN_INFO) | state.code();
                Ok((idx, Some(old)))
            }
            Err(pos) => {
                if self.records.len() >= self.capacity {
                    return Err(TableFull {
                        capacity: self.capacity,
                    });
                }
                self.records.push(Record::new(t, owner, state));
                self.slots[pos] = ((h >> 32) << 32) | self.records.len() as u64;
                Ok((self.records.len() - 1, None))
            }
        }
    }

    /// Changes the state of `t` if present; returns the entry before.
    pub fn set_state(&mut self, t: &FiveTuple, state: EntryState) -> Option<ConnectionEntry> {
        let pos = self.find(t, self.hash(t)).ok()?;
        let idx = (self.slots[pos] as u32 - 1) as usize;
        let old = self.records[idx].entry();
        let r = &mut self.records[idx];
        r.state = (r.state & SYN_INFO) | state.code();
        Some(old)
    }

    /// Removes `t`; returns its entry.
    pub fn remove(&mut self, t: &FiveTuple) -> Option<ConnectionEntry> {
        let pos = self.find(t, self.hash(t)).ok()?;
        let idx = (self.slots[pos] as u32 - 1) as usize;
        let removed = self.records[idx].entry();
        self.links.release(self.records[idx].link);
        self.delete_slot(pos);
        // Move the last record into the hole and repoint its slot.
        let last = self.records.len() - 1;
        if idx != last {
            let moved = self.records[last].tuple();
            let h = self.hash(&moved);
            if let Ok(mpos) = self.find(&moved, h) {
                self.slots[mpos] = ((h >> 32) << 32) | (idx as u64 + 1);
            }
        }
        self.records.swap_remove(idx);
        Some(removed)
    }

    /// Backward-shift deletion of slot `pos`.
    fn delete_slot(&mut self, mut hole: usize) {
        self.slots[hole] = 0;
        let mut j = hole;
        loop {
            j = (j + 1) & self.mask;
            let s = self.slots[j];
            if s == 0 {
                return;
            }
            let r = &self.records[(s as u32 - 1) as usize];
            let home = self.home(self.hash(&r.tuple()));
            // Can the entry at j move to the hole? Only if its home is not in (hole, j].
            let dist_home = j.wrapping_sub(home) & self.mask;
            let dist_hole = j.wrapping_sub(hole) & self.mask;
            if dist_home >= dist_hole {
                self.slots[hole] = s;
                self.slots[j] = 0;
                hole = j;
            }
        }
    }

    /// Every entry, in storage order (not sorted; see [`ConnectionTable::sorted`]).
    pub fn iter(&self) -> impl Iterator<Item = ConnectionEntry> + '_ {
        self.records.iter().map(Record::entry)
    }

    /// Every entry, sorted by tuple (a canonical order for dumps).
    pub fn sorted(&self) -> Vec<ConnectionEntry> {
        let mut v: Vec<_> = self.iter().collect();
        v.sort_unstable();
        v
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.slots.iter_mut().for_each(|s| *s = 0);
        self.records.clear();
        self.links.clear();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::tuple::{PROTO_TCP, v4_mapped};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    thread_local! {
        /// Table hashes computed by this thread.
        pub(crate) static HASHES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    fn t(n: u32) -> FiveTuple {
        FiveTuple {
            protocol: PROTO_TCP,
            remote_addr: v4_mapped([198, 18, (n >> 8) as u8, n as u8]),
            remote_port: (n % 60_000) as u16,
            local_addr: v4_mapped([198, 19, 0, 10]),
            local_port: 80,
        }
    }

    #[test]
    fn capacity_is_enforced_and_memory_is_bounded() {
        let mut tab = ConnectionTable::with_capacity(1000, 1);
        for n in 0..1000 {
            assert_eq!(
                tab.upsert(&t(n), ProcessorId(1), EntryState::Established),
                Ok(None)
            );
        }
        assert_eq!(
            tab.upsert(&t(5000), ProcessorId(1), EntryState::Established),
            Err(TableFull { capacity: 1000 })
        );
        // Replacing an existing entry needs no room.
        assert!(
            tab.upsert(&t(7), ProcessorId(2), EntryState::Established)
                .unwrap()
                .is_some()
        );
        assert_eq!(tab.get(&t(7)).unwrap().owner, ProcessorId(2));
        assert!(
            tab.memory_bytes() / tab.len() <= 64,
            "{} B/conn",
            tab.memory_bytes() / tab.len()
        );
    }

    #[test]
    fn the_record_stays_compact() {
        assert_eq!(core::mem::size_of::<Record>(), 46);
        assert_eq!(core::mem::align_of::<Record>(), 2);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Upsert(u32, u16),
        Remove(u32),
        State(u32),
        /// A segment of connection `k` from client MAC `m`, acknowledging `a`.
        Observe(u32, u8, u32),
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            20 => (0..300u32, 0..8u16).prop_map(|(k, o)| Op::Upsert(k, o)),
            20 => (0..300u32).prop_map(Op::Remove),
            20 => (0..300u32).prop_map(Op::State),
            20 => (0..300u32, 0..4u8, any::<u32>()).prop_map(|(k, m, a)| Op::Observe(k, m, a)),
            1 => Just(Op::Clear),
        ]
    }

    fn link(m: u8) -> LinkAddrs {
        LinkAddrs {
            client_mac: [2, 0, 0, 0, 0, m],
            adapter_mac: [2, 0, 0, 0, 0, 0x10],
            vlan_tci: (m == 3).then_some(7),
        }
    }

    proptest! {
        /// The table behaves like a BTreeMap model under any sequence of
        /// inserts, removals and state changes, including the batched lookup.
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec(op(), 0..600)) {
            let mut tab = ConnectionTable::with_capacity(200, 42);
            let mut model: BTreeMap<FiveTuple, (ProcessorId, EntryState)> = BTreeMap::new();
            let mut remembered: BTreeMap<FiveTuple, ResetInfo> = BTreeMap::new();
            for o in ops {
                match o {
                    Op::Upsert(k, owner) => {
                        let r = tab.upsert(&t(k), ProcessorId(owner), EntryState::Established);
                        if model.contains_key(&t(k)) || model.len() < 200 {
                            prop_assert!(r.is_ok());
                            model.insert(t(k), (ProcessorId(owner), EntryState::Established));
                        } else {
                            prop_assert!(r.is_err());
                        }
                    }
                    Op::Remove(k) => {
                        prop_assert_eq!(tab.remove(&t(k)).map(|e| e.owner), model.remove(&t(k)).map(|v| v.0));
                        remembered.remove(&t(k));
                    }
                    Op::Observe(k, m, a) => {
                        if let Some((idx, _, _)) = tab.lookup_index(&t(k), tab.hash(&t(k))) {
                            tab.observe(idx, &link(m), a);
                            remembered.insert(t(k), ResetInfo { link: link(m), ack: a, syn: false });
                        }
                    }
                    Op::Clear => {
                        tab.clear();
                        model.clear();
                        remembered.clear();
                    }
                    Op::State(k) => {
                        let got = tab.set_state(&t(k), EntryState::Orphaned).is_some();
                        if let Some(v) = model.get_mut(&t(k)) { v.1 = EntryState::Orphaned; }
                        prop_assert_eq!(got, model.contains_key(&t(k)));
                    }
                }
            }
            prop_assert_eq!(tab.len(), model.len());
            let keys: Vec<_> = (0..300).map(t).collect();
            let mut out = vec![None; keys.len()];
            tab.lookup_batch(&keys, &mut out);
            for (k, got) in keys.iter().zip(&out) {
                prop_assert_eq!(*got, model.get(k).copied());
                prop_assert_eq!(tab.lookup_hashed(k, tab.hash(k)), model.get(k).copied());
            }
            let sorted: Vec<_> = tab.sorted().into_iter().map(|e| (e.tuple, (e.owner, e.state))).collect();
            let expect: Vec<_> = model.into_iter().collect();
            prop_assert_eq!(sorted, expect);
            // What each entry remembers, and the addressings held: exactly
            // those some entry still names, each once.
            for k in &keys {
                prop_assert_eq!(tab.reset_info(k), remembered.get(k).copied());
            }
            let mut from_iter: Vec<_> = tab.iter_reset_info().filter_map(|(e, i)| Some((e.tuple, i?))).collect();
            from_iter.sort_unstable();
            prop_assert_eq!(from_iter, remembered.clone().into_iter().collect::<Vec<_>>());
            let distinct: std::collections::BTreeSet<_> = remembered.values().map(|i| i.link).collect();
            prop_assert_eq!(tab.link_count(), distinct.len());
            let refs: u32 = tab.links.slots.iter().map(|s| s.refs).sum();
            prop_assert_eq!(refs as usize, remembered.len());
        }
    }
}
