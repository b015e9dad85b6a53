//! Access validation and translation (AVT): the DMA windows of one endpoint.
//!
//! Every endpoint that owns memory keeps an [`Avt`]. Each entry lets exactly
//! one requesting endpoint reach one window of the owner's memory, with a set
//! of permissions ([`Access`]). Requests arrive carrying a [`FabricAddr`]: a
//! [`WindowKey`] (slot index + generation, like an RDMA rkey) and a byte
//! offset inside the window. [`Avt::validate`] checks such a request and
//! translates it to a local [`ProcAddr`], or names the [`NackReason`] that the
//! target sends back. Fabric requests are untrusted input: validation never
//! panics and uses checked arithmetic, and nothing outside a registered window
//! is ever reachable.
//!
//! A window registered with [`Access::INTERRUPT`] also raises an interrupt when
//! a write lands in it; the owner records those in an [`InterruptQueue`].
//!
//! # Keys and generations
//!
//! A slot's generation (12 bits, see [`WINDOW_GENERATION_BITS`]) is bumped on
//! every registration, so a key handed out before the slot was unregistered and
//! registered again is refused with [`NackReason::StaleKey`]. The generation
//! wraps modulo 4096: a fresh slot's first registration gets generation 1, its
//! 4095th gets 4095, its 4096th gets 0, its 4097th gets 1 again. A key kept
//! across exactly a multiple of 4096 re-registrations of the same slot
//! therefore becomes valid again (the same limitation as the 8-bit key of RDMA
//! memory windows); the requester check still applies to it.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;

use bitflags::bitflags;

use crate::ids::{
    EndpointId, FabricAddr, NackReason, WINDOW_GENERATION_BITS, WINDOW_INDEX_BITS, WindowKey,
};
use crate::memory::ProcAddr;
use crate::time::Instant;

/// Largest number of slots an [`Avt`] can have: the 20-bit key index space.
pub const MAX_AVT_CAPACITY: u32 = 1 << WINDOW_INDEX_BITS;

/// Mask of the generation bits of a [`WindowKey`].
const GENERATION_MASK: u16 = (1 << WINDOW_GENERATION_BITS) - 1;

/// Number of counter slots for NACK reasons (codes are 1..=7; 0 is unused).
const NACK_SLOTS: usize = 8;

bitflags! {
    /// What a window's requester may do.
    #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
    pub struct Access: u8 {
        /// The requester may read the window.
        const READ = 1;
        /// The requester may write the window.
        const WRITE = 2;
        /// A write that lands in the window appends an entry to the owner's
        /// interrupt queue (only meaningful together with `WRITE`).
        const INTERRUPT = 4;
    }
}

/// One registered window.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct AvtEntry {
    /// The key that names this window (current generation of its slot).
    pub key: WindowKey,
    /// The only endpoint allowed to use the window.
    pub requester: EndpointId,
    /// Where the window starts in the owner's memory.
    pub local: ProcAddr,
    /// Window length in bytes (at least 1).
    pub len: u32,
    /// What the requester may do.
    pub access: Access,
}

/// The kind of request being validated.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// The requester reads from the window.
    Read,
    /// The requester writes into the window.
    Write,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Read => "read",
            Op::Write => "write",
        })
    }
}

/// A validated request, translated to the owner's memory.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Translation {
    /// Local address of the first byte of the request.
    pub local: ProcAddr,
    /// The request is a write into an [`Access::INTERRUPT`] window: the owner
    /// should queue an interrupt once the data has landed.
    pub interrupt: bool,
}

/// Why a window could not be registered or unregistered.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AvtError {
    /// Every slot holds a window.
    #[error("AVT is full: all {capacity} slots hold a window")]
    Full {
        /// The table's capacity.
        capacity: u32,
    },
    /// The window would run past the end of the owner's memory.
    #[error("window of {len} bytes at {local} runs past the end of memory ({memory_len} bytes)")]
    WindowOutsideMemory {
        /// Requested start.
        local: ProcAddr,
        /// Requested length.
        len: u32,
        /// Size of the owner's memory.
        memory_len: u64,
    },
    /// A window must have at least one byte.
    #[error("window length must be at least 1 byte, got 0")]
    ZeroLength,
    /// The requested access grants neither read nor write.
    #[error("window access must include READ or WRITE (INTERRUPT alone grants nothing)")]
    NoAccess,
    /// No window is registered at the key's slot.
    #[error("no window is registered under {0}")]
    UnknownKey(WindowKey),
    /// The key's slot holds a window of another generation.
    #[error("{key} is stale: its slot now holds generation {current_generation}")]
    StaleKey {
        /// The key that was presented.
        key: WindowKey,
        /// The slot's current generation.
        current_generation: u16,
    },
    /// The requested capacity exceeds the 20-bit index space.
    #[error("AVT capacity {capacity} exceeds the maximum of {max} slots (20-bit window index)")]
    CapacityTooLarge {
        /// Requested capacity.
        capacity: u32,
        /// [`MAX_AVT_CAPACITY`].
        max: u32,
    },
}

/// Outcome counters of [`Avt::validate`].
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct AvtCounters {
    validated: u64,
    nacks: [u64; NACK_SLOTS],
}

impl AvtCounters {
    /// Requests that passed validation.
    pub fn validated(&self) -> u64 {
        self.validated
    }

    /// Requests refused for `reason`.
    pub fn nacks(&self, reason: NackReason) -> u64 {
        self.nacks
            .get(usize::from(reason.code()))
            .copied()
            .unwrap_or(0)
    }

    /// Requests refused for any reason.
    pub fn total_nacks(&self) -> u64 {
        self.nacks.iter().sum()
    }

    /// Every request validated, accepted or refused.
    pub fn requests(&self) -> u64 {
        self.validated + self.total_nacks()
    }

    fn count_nack(&mut self, reason: NackReason) {
        if let Some(c) = self.nacks.get_mut(usize::from(reason.code())) {
            *c += 1;
        }
    }
}

/// One AVT slot. The generation survives unregistration so that old keys stay
/// stale when the slot is reused.
#[derive(Clone, Debug)]
struct Slot {
    generation: u16,
    entry: Option<AvtEntry>,
}

/// The access validation and translation table of one memory-owning endpoint.
///
/// Slots live in a `Vec` indexed by the key's index, so [`Avt::validate`] is
/// O(1) and allocation-free. The `Vec` grows on demand up to the capacity and
/// never shrinks (a freed slot keeps its generation).
#[derive(Clone, Debug)]
pub struct Avt {
    slots: Vec<Slot>,
    /// Empty slots below `slots.len()`, so registration takes the lowest.
    free: BTreeSet<u32>,
    capacity: u32,
    live: u32,
    counters: AvtCounters,
}

impl Avt {
    /// An empty table with room for `capacity` windows (at most
    /// [`MAX_AVT_CAPACITY`]; zero is allowed and means "exports nothing").
    pub fn new(capacity: u32) -> Result<Self, AvtError> {
        if capacity > MAX_AVT_CAPACITY {
            return Err(AvtError::CapacityTooLarge {
                capacity,
                max: MAX_AVT_CAPACITY,
            });
        }
        Ok(Self {
            slots: Vec::new(),
            free: BTreeSet::new(),
            capacity,
            live: 0,
            counters: AvtCounters::default(),
        })
    }

    /// Opens a window of `len` bytes at `local` for `requester` and returns its
    /// key. Takes the lowest free slot and bumps that slot's generation (see the
    /// module docs for the 12-bit wrap).
    ///
    /// `memory_len` is the size of the owner's memory; the window must lie
    /// inside it. Rejects `len == 0` and an `access` without READ or WRITE.
    pub fn register(
        &mut self,
        requester: EndpointId,
        local: ProcAddr,
        len: u32,
        access: Access,
        memory_len: u64,
    ) -> Result<WindowKey, AvtError> {
        if len == 0 {
            return Err(AvtError::ZeroLength);
        }
        if !access.intersects(Access::READ | Access::WRITE) {
            return Err(AvtError::NoAccess);
        }
        match local.checked_add(u64::from(len)) {
            Some(end) if end.0 <= memory_len => {}
            _ => {
                return Err(AvtError::WindowOutsideMemory {
                    local,
                    len,
                    memory_len,
                });
            }
        }
        let index = match self.free.pop_first() {
            Some(i) => i,
            None if (self.slots.len() as u64) < u64::from(self.capacity) => {
                // slots.len() < capacity <= 2^20, so it fits u32.
                let i = self.slots.len() as u32;
                self.slots.push(Slot {
                    generation: 0,
                    entry: None,
                });
                i
            }
            None => {
                return Err(AvtError::Full {
                    capacity: self.capacity,
                });
            }
        };
        let Some(slot) = self.slots.get_mut(index as usize) else {
            // Unreachable: `free` only holds indices below `slots.len()`.
            return Err(AvtError::Full {
                capacity: self.capacity,
            });
        };
        slot.generation = slot.generation.wrapping_add(1) & GENERATION_MASK;
        let key = make_key(index, slot.generation);
        slot.entry = Some(AvtEntry {
            key,
            requester,
            local,
            len,
            access,
        });
        self.live += 1;
        Ok(key)
    }

    /// Closes the window named by `key` and returns it. An unknown key (empty
    /// or nonexistent slot) or a stale one (the slot holds a newer window) is
    /// an error and changes nothing.
    pub fn unregister(&mut self, key: WindowKey) -> Result<AvtEntry, AvtError> {
        let slot = self
            .slots
            .get_mut(key.index() as usize)
            .filter(|s| s.entry.is_some())
            .ok_or(AvtError::UnknownKey(key))?;
        if slot.generation != key.generation() {
            return Err(AvtError::StaleKey {
                key,
                current_generation: slot.generation,
            });
        }
        let entry = slot.entry.take().ok_or(AvtError::UnknownKey(key))?;
        self.free.insert(key.index());
        self.live -= 1;
        Ok(entry)
    }

    /// The window named by `key`, if it is registered under that exact key
    /// (a stale key finds nothing).
    pub fn get(&self, key: WindowKey) -> Option<&AvtEntry> {
        self.slots
            .get(key.index() as usize)
            .filter(|s| s.generation == key.generation())
            .and_then(|s| s.entry.as_ref())
    }

    /// Every registered window, in slot order.
    pub fn entries(&self) -> impl Iterator<Item = &AvtEntry> + '_ {
        self.slots.iter().filter_map(|s| s.entry.as_ref())
    }

    /// Number of registered windows.
    pub fn len(&self) -> usize {
        self.live as usize
    }

    /// `true` if no window is registered.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Maximum number of windows.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Outcome counters of [`Avt::validate`].
    pub fn counters(&self) -> &AvtCounters {
        &self.counters
    }

    /// Checks a request of `len` bytes at `addr` from `requester` and
    /// translates it to a local address. The checks, in order:
    ///
    /// 1. the key's slot is beyond the table or empty → [`NackReason::NoWindow`];
    /// 2. the key's generation is not the slot's → [`NackReason::StaleKey`];
    /// 3. the window belongs to another endpoint → [`NackReason::WrongRequester`];
    /// 4. a write without WRITE → [`NackReason::NotWritable`], a read without
    ///    READ → [`NackReason::NotReadable`];
    /// 5. `offset + len` past the window's length → [`NackReason::OutsideWindow`].
    ///
    /// A zero-length request at an offset up to the window's length passes.
    /// Every outcome is counted in [`Avt::counters`]. O(1), no allocation.
    pub fn validate(
        &mut self,
        requester: EndpointId,
        addr: FabricAddr,
        len: u32,
        op: Op,
    ) -> Result<Translation, NackReason> {
        let outcome = self.check(requester, addr, len, op);
        match outcome {
            Ok(_) => self.counters.validated += 1,
            Err(reason) => self.counters.count_nack(reason),
        }
        outcome
    }

    fn check(
        &self,
        requester: EndpointId,
        addr: FabricAddr,
        len: u32,
        op: Op,
    ) -> Result<Translation, NackReason> {
        let key = addr.key();
        let slot = self
            .slots
            .get(key.index() as usize)
            .ok_or(NackReason::NoWindow)?;
        let entry = slot.entry.as_ref().ok_or(NackReason::NoWindow)?;
        if key.generation() != slot.generation {
            return Err(NackReason::StaleKey);
        }
        if entry.requester != requester {
            return Err(NackReason::WrongRequester);
        }
        match op {
            Op::Write if !entry.access.contains(Access::WRITE) => {
                return Err(NackReason::NotWritable);
            }
            Op::Read if !entry.access.contains(Access::READ) => {
                return Err(NackReason::NotReadable);
            }
            _ => {}
        }
        let offset = u64::from(addr.offset());
        match offset.checked_add(u64::from(len)) {
            Some(end) if end <= u64::from(entry.len) => {}
            _ => return Err(NackReason::OutsideWindow),
        }
        // Cannot fail: local + entry.len was checked against the memory size
        // at registration and offset <= entry.len.
        let local = entry
            .local
            .checked_add(offset)
            .ok_or(NackReason::OutsideWindow)?;
        Ok(Translation {
            local,
            interrupt: op == Op::Write && entry.access.contains(Access::INTERRUPT),
        })
    }
}

/// Packs an index (< 2^20) and a masked generation into a key without a panic path.
fn make_key(index: u32, generation: u16) -> WindowKey {
    WindowKey::from_bits(
        (index << WINDOW_GENERATION_BITS) | u32::from(generation & GENERATION_MASK),
    )
}

/// One interrupt raised by a write into an [`Access::INTERRUPT`] window.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct InterruptEntry {
    /// When the write landed.
    pub at: Instant,
    /// Who wrote.
    pub requester: EndpointId,
    /// The window written.
    pub key: WindowKey,
    /// Offset of the write inside the window.
    pub offset: u32,
    /// Length of the write in bytes.
    pub len: u32,
}

/// A bounded FIFO of interrupts for the owner to consume. When full, new
/// entries are dropped and counted in [`InterruptQueue::overflows`]; the queue
/// never grows past its capacity.
#[derive(Clone, Debug)]
pub struct InterruptQueue {
    entries: VecDeque<InterruptEntry>,
    capacity: usize,
    accepted: u64,
    overflows: u64,
}

impl InterruptQueue {
    /// An empty queue holding at most `capacity` entries (zero drops everything).
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            capacity,
            accepted: 0,
            overflows: 0,
        }
    }

    /// Appends `entry`; returns `false` (and counts an overflow) if the queue is full.
    pub fn push(&mut self, entry: InterruptEntry) -> bool {
        if self.entries.len() >= self.capacity {
            self.overflows += 1;
            return false;
        }
        self.entries.push_back(entry);
        self.accepted += 1;
        true
    }

    /// Removes and returns the oldest entry.
    pub fn pop(&mut self) -> Option<InterruptEntry> {
        self.entries.pop_front()
    }

    /// The oldest entry, left in place.
    pub fn peek(&self) -> Option<&InterruptEntry> {
        self.entries.front()
    }

    /// Entries waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// `true` if nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Maximum number of waiting entries.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Entries accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted
    }

    /// Entries dropped because the queue was full.
    pub fn overflows(&self) -> u64 {
        self.overflows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEM: u64 = 1 << 20;

    fn ep(n: u32) -> EndpointId {
        EndpointId::new(n).unwrap()
    }

    /// Asserts that exactly one NACK, for `reason`, was counted since `before`.
    fn assert_one_nack(avt: &Avt, before: AvtCounters, reason: NackReason) {
        let now = avt.counters();
        for r in NackReason::ALL {
            let want = before.nacks(r) + u64::from(r == reason);
            assert_eq!(now.nacks(r), want, "counter {r} after a {reason} nack");
        }
        assert_eq!(now.validated(), before.validated());
        assert_eq!(now.total_nacks(), before.total_nacks() + 1);
    }

    fn nack(
        avt: &mut Avt,
        req: EndpointId,
        addr: FabricAddr,
        len: u32,
        op: Op,
        reason: NackReason,
    ) {
        let before = *avt.counters();
        assert_eq!(
            avt.validate(req, addr, len, op),
            Err(reason),
            "{op} of {len} at {addr}"
        );
        assert_one_nack(avt, before, reason);
    }

    #[test]
    fn success_translates_offsets() {
        let mut avt = Avt::new(16).unwrap();
        let k = avt
            .register(
                ep(7),
                ProcAddr(0x4000),
                0x1000,
                Access::READ | Access::WRITE,
                MEM,
            )
            .unwrap();
        let t = avt
            .validate(ep(7), FabricAddr::new(k, 0x10), 8, Op::Write)
            .unwrap();
        assert_eq!(
            t,
            Translation {
                local: ProcAddr(0x4010),
                interrupt: false
            }
        );
        // The whole window, and the last byte.
        assert_eq!(
            avt.validate(ep(7), FabricAddr::new(k, 0), 0x1000, Op::Read)
                .unwrap()
                .local,
            ProcAddr(0x4000)
        );
        assert_eq!(
            avt.validate(ep(7), FabricAddr::new(k, 0xFFF), 1, Op::Read)
                .unwrap()
                .local,
            ProcAddr(0x4FFF)
        );
        // Zero-length at the end is allowed.
        assert_eq!(
            avt.validate(ep(7), FabricAddr::new(k, 0x1000), 0, Op::Read)
                .unwrap()
                .local,
            ProcAddr(0x5000)
        );
        assert_eq!(avt.counters().validated(), 4);
        assert_eq!(avt.counters().total_nacks(), 0);
        assert_eq!(avt.counters().requests(), 4);
    }

    #[test]
    fn outside_window_including_off_by_one() {
        let mut avt = Avt::new(4).unwrap();
        let k = avt
            .register(ep(1), ProcAddr(0), 256, Access::READ | Access::WRITE, MEM)
            .unwrap();
        nack(
            &mut avt,
            ep(1),
            FabricAddr::new(k, 0),
            257,
            Op::Read,
            NackReason::OutsideWindow,
        );
        nack(
            &mut avt,
            ep(1),
            FabricAddr::new(k, 255),
            2,
            Op::Write,
            NackReason::OutsideWindow,
        );
        nack(
            &mut avt,
            ep(1),
            FabricAddr::new(k, 256),
            1,
            Op::Read,
            NackReason::OutsideWindow,
        );
        nack(
            &mut avt,
            ep(1),
            FabricAddr::new(k, 257),
            0,
            Op::Read,
            NackReason::OutsideWindow,
        );
        // offset + len beyond u32: no overflow, just outside.
        nack(
            &mut avt,
            ep(1),
            FabricAddr::new(k, u32::MAX),
            u32::MAX,
            Op::Read,
            NackReason::OutsideWindow,
        );
        assert!(
            avt.validate(ep(1), FabricAddr::new(k, 255), 1, Op::Read)
                .is_ok()
        );
        assert_eq!(avt.counters().nacks(NackReason::OutsideWindow), 5);
    }

    #[test]
    fn no_window() {
        let mut avt = Avt::new(4).unwrap();
        let k = avt
            .register(ep(1), ProcAddr(0), 64, Access::READ, MEM)
            .unwrap();
        // Empty slot inside the table, a slot past the table, and past capacity.
        let empty_slot = WindowKey::new(3, 1).unwrap();
        nack(
            &mut avt,
            ep(1),
            FabricAddr::new(empty_slot, 0),
            1,
            Op::Read,
            NackReason::NoWindow,
        );
        let far = WindowKey::new((1 << 20) - 1, 1).unwrap();
        nack(
            &mut avt,
            ep(1),
            FabricAddr::new(far, 0),
            1,
            Op::Read,
            NackReason::NoWindow,
        );
        // After unregister the old key finds an empty slot.
        avt.unregister(k).unwrap();
        nack(
            &mut avt,
            ep(1),
            FabricAddr::new(k, 0),
            1,
            Op::Read,
            NackReason::NoWindow,
        );
        // An empty table.
        let mut none = Avt::new(0).unwrap();
        nack(
            &mut none,
            ep(1),
            FabricAddr(0),
            0,
            Op::Read,
            NackReason::NoWindow,
        );
    }

    #[test]
    fn wrong_requester() {
        let mut avt = Avt::new(4).unwrap();
        let k = avt
            .register(ep(1), ProcAddr(0), 64, Access::READ | Access::WRITE, MEM)
            .unwrap();
        nack(
            &mut avt,
            ep(2),
            FabricAddr::new(k, 0),
            1,
            Op::Read,
            NackReason::WrongRequester,
        );
        // The requester check comes before the bounds check.
        nack(
            &mut avt,
            ep(2),
            FabricAddr::new(k, 1000),
            1,
            Op::Write,
            NackReason::WrongRequester,
        );
    }

    #[test]
    fn write_to_read_only_and_read_from_write_only() {
        let mut avt = Avt::new(4).unwrap();
        let ro = avt
            .register(ep(1), ProcAddr(0), 64, Access::READ, MEM)
            .unwrap();
        let wo = avt
            .register(ep(1), ProcAddr(64), 64, Access::WRITE, MEM)
            .unwrap();
        nack(
            &mut avt,
            ep(1),
            FabricAddr::new(ro, 0),
            4,
            Op::Write,
            NackReason::NotWritable,
        );
        nack(
            &mut avt,
            ep(1),
            FabricAddr::new(wo, 0),
            4,
            Op::Read,
            NackReason::NotReadable,
        );
        // Permission is checked before bounds.
        nack(
            &mut avt,
            ep(1),
            FabricAddr::new(ro, 100),
            4,
            Op::Write,
            NackReason::NotWritable,
        );
        assert!(
            avt.validate(ep(1), FabricAddr::new(ro, 0), 4, Op::Read)
                .is_ok()
        );
        assert!(
            avt.validate(ep(1), FabricAddr::new(wo, 0), 4, Op::Write)
                .is_ok()
        );
    }

    #[test]
    fn stale_key_after_reregistration_of_the_same_slot() {
        let mut avt = Avt::new(4).unwrap();
        let old = avt
            .register(ep(1), ProcAddr(0), 64, Access::READ, MEM)
            .unwrap();
        avt.unregister(old).unwrap();
        let new = avt
            .register(ep(1), ProcAddr(128), 64, Access::READ, MEM)
            .unwrap();
        assert_eq!(new.index(), old.index(), "lowest free slot is reused");
        assert_eq!(new.generation(), old.generation() + 1, "generation bumped");
        nack(
            &mut avt,
            ep(1),
            FabricAddr::new(old, 0),
            1,
            Op::Read,
            NackReason::StaleKey,
        );
        // Staleness is checked before requester, permission and bounds.
        nack(
            &mut avt,
            ep(9),
            FabricAddr::new(old, 9999),
            1,
            Op::Write,
            NackReason::StaleKey,
        );
        assert_eq!(avt.get(old), None);
        assert_eq!(avt.get(new).unwrap().local, ProcAddr(128));
        assert_eq!(
            avt.unregister(old),
            Err(AvtError::StaleKey {
                key: old,
                current_generation: new.generation()
            })
        );
        assert_eq!(avt.len(), 1, "a failed unregister changes nothing");
    }

    #[test]
    fn each_reason_counted_exactly_once() {
        let mut avt = Avt::new(8).unwrap();
        let rw = avt
            .register(ep(1), ProcAddr(0), 16, Access::READ | Access::WRITE, MEM)
            .unwrap();
        let ro = avt
            .register(ep(1), ProcAddr(16), 16, Access::READ, MEM)
            .unwrap();
        let wo = avt
            .register(ep(1), ProcAddr(32), 16, Access::WRITE, MEM)
            .unwrap();
        let stale = avt
            .register(ep(1), ProcAddr(48), 16, Access::READ, MEM)
            .unwrap();
        avt.unregister(stale).unwrap();
        avt.register(ep(1), ProcAddr(48), 16, Access::READ, MEM)
            .unwrap();
        let cases = [
            (
                ep(1),
                FabricAddr::new(WindowKey::new(7, 1).unwrap(), 0),
                Op::Read,
                NackReason::NoWindow,
            ),
            (
                ep(2),
                FabricAddr::new(rw, 0),
                Op::Read,
                NackReason::WrongRequester,
            ),
            (
                ep(1),
                FabricAddr::new(rw, 16),
                Op::Read,
                NackReason::OutsideWindow,
            ),
            (
                ep(1),
                FabricAddr::new(ro, 0),
                Op::Write,
                NackReason::NotWritable,
            ),
            (
                ep(1),
                FabricAddr::new(wo, 0),
                Op::Read,
                NackReason::NotReadable,
            ),
            (
                ep(1),
                FabricAddr::new(stale, 0),
                Op::Read,
                NackReason::StaleKey,
            ),
        ];
        for (req, addr, op, reason) in cases {
            nack(&mut avt, req, addr, 1, op, reason);
        }
        let c = avt.counters();
        for r in NackReason::ALL {
            let want = u64::from(r != NackReason::BadRequest);
            assert_eq!(c.nacks(r), want, "{r}");
        }
        assert_eq!(c.total_nacks(), 6);
        assert_eq!(c.validated(), 0);
    }

    #[test]
    fn interrupt_flag_is_reported_for_writes_only() {
        let mut avt = Avt::new(4).unwrap();
        let irq = avt
            .register(
                ep(3),
                ProcAddr(0x100),
                32,
                Access::READ | Access::WRITE | Access::INTERRUPT,
                MEM,
            )
            .unwrap();
        let plain = avt
            .register(ep(3), ProcAddr(0x200), 32, Access::WRITE, MEM)
            .unwrap();
        assert!(
            avt.validate(ep(3), FabricAddr::new(irq, 4), 4, Op::Write)
                .unwrap()
                .interrupt
        );
        assert!(
            !avt.validate(ep(3), FabricAddr::new(irq, 4), 4, Op::Read)
                .unwrap()
                .interrupt
        );
        assert!(
            !avt.validate(ep(3), FabricAddr::new(plain, 4), 4, Op::Write)
                .unwrap()
                .interrupt
        );
    }

    #[test]
    fn registration_checks_its_arguments() {
        let mut avt = Avt::new(4).unwrap();
        let rw = Access::READ | Access::WRITE;
        assert_eq!(
            avt.register(ep(1), ProcAddr(0), 0, rw, MEM),
            Err(AvtError::ZeroLength)
        );
        assert_eq!(
            avt.register(ep(1), ProcAddr(0), 1, Access::empty(), MEM),
            Err(AvtError::NoAccess)
        );
        assert_eq!(
            avt.register(ep(1), ProcAddr(0), 1, Access::INTERRUPT, MEM),
            Err(AvtError::NoAccess)
        );
        // Last byte of memory is fine, one past is not, and overflow is an error.
        assert!(avt.register(ep(1), ProcAddr(MEM - 1), 1, rw, MEM).is_ok());
        let e = avt
            .register(ep(1), ProcAddr(MEM - 1), 2, rw, MEM)
            .unwrap_err();
        assert_eq!(
            e,
            AvtError::WindowOutsideMemory {
                local: ProcAddr(MEM - 1),
                len: 2,
                memory_len: MEM
            }
        );
        assert_eq!(
            e.to_string(),
            "window of 2 bytes at 0xfffff runs past the end of memory (1048576 bytes)"
        );
        assert!(matches!(
            avt.register(ep(1), ProcAddr(u64::MAX), 1, rw, u64::MAX),
            Err(AvtError::WindowOutsideMemory { .. })
        ));
        assert_eq!(avt.len(), 1, "failed registrations take no slot");
    }

    #[test]
    fn capacity_limits() {
        assert_eq!(
            Avt::new(MAX_AVT_CAPACITY + 1).unwrap_err(),
            AvtError::CapacityTooLarge {
                capacity: MAX_AVT_CAPACITY + 1,
                max: MAX_AVT_CAPACITY
            }
        );
        assert_eq!(Avt::new(MAX_AVT_CAPACITY).unwrap().capacity(), 1 << 20);
        let mut avt = Avt::new(3).unwrap();
        let keys: Vec<_> = (0..3)
            .map(|i| {
                avt.register(ep(1), ProcAddr(i * 8), 8, Access::READ, MEM)
                    .unwrap()
            })
            .collect();
        assert_eq!(
            keys.iter().map(|k| k.index()).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        let full = avt
            .register(ep(1), ProcAddr(0), 8, Access::READ, MEM)
            .unwrap_err();
        assert_eq!(full, AvtError::Full { capacity: 3 });
        assert_eq!(full.to_string(), "AVT is full: all 3 slots hold a window");
        // Freeing the middle slot makes it the next one taken.
        avt.unregister(keys[1]).unwrap();
        assert_eq!(
            avt.register(ep(1), ProcAddr(0), 8, Access::READ, MEM)
                .unwrap()
                .index(),
            1
        );
        assert!(
            Avt::new(0)
                .unwrap()
                .register(ep(1), ProcAddr(0), 8, Access::READ, MEM)
                .is_err()
        );
    }

    #[test]
    fn unregister_unknown_and_entries_in_slot_order() {
        let mut avt = Avt::new(8).unwrap();
        let never = WindowKey::new(5, 1).unwrap();
        assert_eq!(avt.unregister(never), Err(AvtError::UnknownKey(never)));
        let keys: Vec<_> = (0..4u64)
            .map(|i| {
                avt.register(ep(i as u32), ProcAddr(i * 8), 8, Access::READ, MEM)
                    .unwrap()
            })
            .collect();
        let removed = avt.unregister(keys[2]).unwrap();
        assert_eq!(removed.requester, ep(2));
        assert_eq!(avt.unregister(keys[2]), Err(AvtError::UnknownKey(keys[2])));
        let order: Vec<u32> = avt.entries().map(|e| e.key.index()).collect();
        assert_eq!(order, [0, 1, 3]);
        assert_eq!(avt.len(), 3);
        assert!(!avt.is_empty());
        let again = avt
            .register(ep(9), ProcAddr(0), 8, Access::READ, MEM)
            .unwrap();
        let order: Vec<(u32, u32)> = avt
            .entries()
            .map(|e| (e.key.index(), e.requester.raw()))
            .collect();
        assert_eq!(order, [(0, 0), (1, 1), (2, 9), (3, 3)]);
        assert_eq!(avt.get(again).unwrap().key, again);
    }

    #[test]
    fn generation_wraps_after_4096_registrations() {
        let mut avt = Avt::new(1).unwrap();
        let first = avt
            .register(ep(1), ProcAddr(0), 8, Access::READ, MEM)
            .unwrap();
        assert_eq!(first.generation(), 1);
        let mut last = first;
        for _ in 0..4095 {
            avt.unregister(last).unwrap();
            let k = avt
                .register(ep(1), ProcAddr(0), 8, Access::READ, MEM)
                .unwrap();
            assert_eq!(
                k.generation(),
                (last.generation() + 1) % 4096,
                "bumped by one, mod 4096"
            );
            last = k;
        }
        // 4096 registrations in all: the 4096th got generation 0.
        assert_eq!(last.generation(), 0);
        assert_eq!(
            avt.validate(ep(1), FabricAddr::new(first, 0), 1, Op::Read),
            Err(NackReason::StaleKey)
        );
        // One more and the very first key is current again (documented ABA).
        avt.unregister(last).unwrap();
        let wrapped = avt
            .register(ep(1), ProcAddr(0), 8, Access::READ, MEM)
            .unwrap();
        assert_eq!(wrapped, first);
        assert!(
            avt.validate(ep(1), FabricAddr::new(first, 0), 1, Op::Read)
                .is_ok()
        );
    }

    fn irq(n: u32) -> InterruptEntry {
        InterruptEntry {
            at: Instant::from_ns(u64::from(n)),
            requester: ep(n),
            key: WindowKey::new(n, 1).unwrap(),
            offset: n,
            len: 4,
        }
    }

    #[test]
    fn interrupt_queue_is_bounded_fifo() {
        let mut q = InterruptQueue::new(2);
        assert!(q.is_empty());
        assert!(q.push(irq(1)));
        assert!(q.push(irq(2)));
        assert!(!q.push(irq(3)), "full queue refuses");
        assert!(!q.push(irq(4)));
        assert_eq!(
            (q.len(), q.overflows(), q.accepted(), q.capacity()),
            (2, 2, 2, 2)
        );
        assert_eq!(q.peek(), Some(&irq(1)));
        assert_eq!(q.pop(), Some(irq(1)));
        assert!(q.push(irq(5)));
        assert_eq!(q.pop(), Some(irq(2)));
        assert_eq!(q.pop(), Some(irq(5)));
        assert_eq!(q.pop(), None);
        assert_eq!(q.overflows(), 2);
        let mut zero = InterruptQueue::new(0);
        assert!(!zero.push(irq(1)));
        assert_eq!((zero.len(), zero.overflows()), (0, 1));
    }

    mod model {
        //! Model-based property test: the AVT against a tiny reference model.

        use super::*;
        use proptest::prelude::*;
        use std::collections::HashMap;

        const CAP: u32 = 6;
        const MEM: u64 = 4096;

        #[derive(Clone, Debug)]
        enum KeyPick {
            /// One of the currently registered keys (per the model).
            Live(usize),
            /// One of the keys handed out so far (current or stale).
            Issued(usize),
            /// Any index near the table, any small generation.
            Raw(u32, u16),
        }

        #[derive(Clone, Debug)]
        enum Action {
            Register {
                req: u32,
                local: u64,
                len: u32,
                access: u8,
            },
            Unregister(usize),
            Validate {
                /// `None`: the requester the window at the key's slot is
                /// registered for (if any), so that many requests pass.
                req: Option<u32>,
                key: KeyPick,
                offset: u32,
                len: u32,
                write: bool,
            },
        }

        /// Offsets and lengths: often small (so many requests fit), sometimes
        /// past any window.
        fn small_or_any() -> impl Strategy<Value = u32> {
            prop_oneof![3 => 0u32..64, 2 => 0u32..720, 1 => any::<u32>()]
        }

        fn action() -> impl Strategy<Value = Action> {
            let key = prop_oneof![
                4 => any::<usize>().prop_map(KeyPick::Live),
                2 => any::<usize>().prop_map(KeyPick::Issued),
                1 => (0..CAP + 2, 0u16..4).prop_map(|(i, g)| KeyPick::Raw(i, g)),
            ];
            prop_oneof![
                2 => (0u32..3, 0u64..MEM + 64, 0u32..700, 0u8..8)
                    .prop_map(|(req, local, len, access)| Action::Register { req, local, len, access }),
                1 => any::<usize>().prop_map(Action::Unregister),
                6 => (prop_oneof![2 => Just(None), 1 => (0u32..3).prop_map(Some)], key, small_or_any(), small_or_any(), any::<bool>())
                    .prop_map(|(req, key, offset, len, write)| Action::Validate { req, key, offset, len, write }),
            ]
        }

        /// Keys of the model's live windows, in slot order.
        fn live_keys(
            slots: &HashMap<u32, (u16, Option<AvtEntry>)>,
        ) -> impl Iterator<Item = WindowKey> + '_ {
            (0..CAP).filter_map(|i| slots.get(&i).and_then(|(_, e)| e.map(|e| e.key)))
        }

        /// What the model expects for a request, in the documented check order.
        fn expected(
            slots: &HashMap<u32, (u16, Option<AvtEntry>)>,
            req: EndpointId,
            key: WindowKey,
            offset: u32,
            len: u32,
            op: Op,
        ) -> Result<AvtEntry, NackReason> {
            let Some((generation, Some(e))) = slots.get(&key.index()) else {
                return Err(NackReason::NoWindow);
            };
            if *generation != key.generation() {
                return Err(NackReason::StaleKey);
            }
            if e.requester != req {
                return Err(NackReason::WrongRequester);
            }
            if op == Op::Write && !e.access.contains(Access::WRITE) {
                return Err(NackReason::NotWritable);
            }
            if op == Op::Read && !e.access.contains(Access::READ) {
                return Err(NackReason::NotReadable);
            }
            if u64::from(offset) + u64::from(len) > u64::from(e.len) {
                return Err(NackReason::OutsideWindow);
            }
            Ok(*e)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn validate_reaches_only_registered_windows(
                actions in proptest::collection::vec(action(), 1..120)
            ) {
                let mut avt = Avt::new(CAP).unwrap();
                // index -> (current generation, live entry)
                let mut slots: HashMap<u32, (u16, Option<AvtEntry>)> = HashMap::new();
                let mut issued: Vec<WindowKey> = Vec::new();
                for a in actions {
                    match a {
                        Action::Register { req, local, len, access } => {
                            let access = Access::from_bits_truncate(access);
                            let got = avt.register(ep(req), ProcAddr(local), len, access, MEM);
                            let live = slots.values().filter(|(_, e)| e.is_some()).count() as u32;
                            if len == 0 {
                                prop_assert_eq!(got, Err(AvtError::ZeroLength));
                            } else if !access.intersects(Access::READ | Access::WRITE) {
                                prop_assert_eq!(got, Err(AvtError::NoAccess));
                            } else if local + u64::from(len) > MEM {
                                prop_assert!(
                                    matches!(got, Err(AvtError::WindowOutsideMemory { .. })),
                                    "expected WindowOutsideMemory, got {:?}", got
                                );
                            } else if live == CAP {
                                prop_assert_eq!(got, Err(AvtError::Full { capacity: CAP }));
                            } else {
                                let key = got.unwrap();
                                let lowest = (0..CAP)
                                    .find(|i| !matches!(slots.get(i), Some((_, Some(_)))))
                                    .unwrap();
                                prop_assert_eq!(key.index(), lowest);
                                let prev = slots.get(&lowest).map_or(0, |s| s.0);
                                prop_assert_eq!(key.generation(), (prev + 1) % 4096);
                                let e = AvtEntry { key, requester: ep(req), local: ProcAddr(local), len, access };
                                slots.insert(lowest, (key.generation(), Some(e)));
                                issued.push(key);
                            }
                        }
                        Action::Unregister(pick) => {
                            if issued.is_empty() {
                                continue;
                            }
                            let key = issued[pick % issued.len()];
                            let got = avt.unregister(key);
                            match slots.get_mut(&key.index()) {
                                Some((g, e @ Some(_))) if *g == key.generation() => {
                                    prop_assert_eq!(got, Ok(e.take().unwrap()));
                                }
                                Some((g, Some(_))) => {
                                    prop_assert_eq!(got, Err(AvtError::StaleKey { key, current_generation: *g }));
                                }
                                _ => prop_assert_eq!(got, Err(AvtError::UnknownKey(key))),
                            }
                        }
                        Action::Validate { req, key, offset, len, write } => {
                            let key = match key {
                                KeyPick::Live(i) if live_keys(&slots).next().is_some() => {
                                    let n = live_keys(&slots).count();
                                    live_keys(&slots).nth(i % n).unwrap()
                                }
                                KeyPick::Live(_) => WindowKey::new(0, 1).unwrap(),
                                KeyPick::Issued(i) if !issued.is_empty() => issued[i % issued.len()],
                                KeyPick::Issued(_) => WindowKey::new(0, 1).unwrap(),
                                KeyPick::Raw(i, g) => WindowKey::new(i, g).unwrap(),
                            };
                            let req = req.unwrap_or_else(|| {
                                slots
                                    .get(&key.index())
                                    .and_then(|(_, e)| e.map(|e| e.requester.raw()))
                                    .unwrap_or(0)
                            });
                            let op = if write { Op::Write } else { Op::Read };
                            let before = *avt.counters();
                            let got = avt.validate(ep(req), FabricAddr::new(key, offset), len, op);
                            let want = expected(&slots, ep(req), key, offset, len, op);
                            match (got, want) {
                                (Ok(t), Ok(e)) => {
                                    // Translation math, and the reached range lies in the window.
                                    prop_assert_eq!(t.local, ProcAddr(e.local.0 + u64::from(offset)));
                                    prop_assert!(t.local >= e.local);
                                    prop_assert!(t.local.0 + u64::from(len) <= e.local.0 + u64::from(e.len));
                                    prop_assert!(t.local.0 + u64::from(len) <= MEM);
                                    prop_assert_eq!(t.interrupt, write && e.access.contains(Access::INTERRUPT));
                                    // Independently of the model: some live entry of this
                                    // requester with this permission covers the range.
                                    let need = if write { Access::WRITE } else { Access::READ };
                                    prop_assert!(avt.entries().any(|x| x.requester == ep(req)
                                        && x.access.contains(need)
                                        && x.local <= t.local
                                        && t.local.0 + u64::from(len) <= x.local.0 + u64::from(x.len)));
                                    prop_assert_eq!(avt.counters().validated(), before.validated() + 1);
                                    prop_assert_eq!(avt.counters().total_nacks(), before.total_nacks());
                                }
                                (Err(r), Err(w)) => {
                                    prop_assert_eq!(r, w);
                                    prop_assert_eq!(avt.counters().nacks(r), before.nacks(r) + 1);
                                    prop_assert_eq!(avt.counters().total_nacks(), before.total_nacks() + 1);
                                    prop_assert_eq!(avt.counters().validated(), before.validated());
                                }
                                (got, want) => prop_assert!(false, "avt said {:?}, model said {:?}", got, want),
                            }
                        }
                    }
                    prop_assert_eq!(avt.len(), slots.values().filter(|(_, e)| e.is_some()).count());
                }
            }
        }
    }
}
