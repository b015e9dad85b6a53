//! The queue-pair layouts that live in processor memory: descriptors,
//! completion entries and interrupt messages.
//!
//! Every structure is `#[repr(C)]`, little-endian on the wire (zerocopy's
//! `little_endian` integer types, so the layout is the same on any host),
//! and has no padding. The adapter reads descriptors with fabric read
//! requests and writes completions with write requests; it treats every
//! byte it reads as untrusted.
//!
//! ## Rings
//! A ring has `size` slots, a power of two in [`MIN_RING`]`..=`[`MAX_RING`].
//! The processor produces RX and TX descriptors and tells the adapter the new
//! *tail* index through a doorbell (an index in `0..size`); the adapter keeps
//! the *head*. The ring is empty when `head == tail` and full when
//! `(tail + 1) % size == head` (one slot stays empty).
//!
//! The completion ring is written by the adapter. Each entry carries a
//! *phase* bit ([`CompletionFlags::PHASE`]) that is 1 on the first pass over
//! the ring, 0 on the second, and so on (the ring memory starts zeroed), so
//! the processor recognises new entries without reading an index. The
//! processor reports how far it has consumed with the CQ doorbell, and the
//! adapter never overwrites an entry that was not consumed.
//!
//! ## Buffers
//! Descriptors carry *offsets* into the queue's buffer area (the UMEM of
//! AF_XDP), never pointers: the adapter adds the offset to the fabric address
//! of the buffer window, after checking `offset + len` against its length.

use bitflags::bitflags;
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Smallest ring.
pub const MIN_RING: u32 = 4;
/// Largest ring.
pub const MAX_RING: u32 = 32768;

/// Size of a [`Descriptor`] in bytes.
pub const DESCRIPTOR_LEN: usize = 16;
/// Size of a [`Completion`] in bytes.
pub const COMPLETION_LEN: usize = 16;
/// Size of an [`InterruptMessage`] in bytes.
pub const INTERRUPT_LEN: usize = 8;

/// An RX or TX descriptor: one buffer in the queue's buffer area.
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
pub struct Descriptor {
    /// Offset of the buffer in the queue's buffer area.
    pub offset: U32,
    /// RX: capacity of the buffer; TX: length of the frame in it.
    pub len: U32,
    /// Returned unchanged in the completion (the processor's own tag).
    pub cookie: U32,
    /// TX: [`TxFlags`]; RX: must be zero.
    pub flags: U32,
}

impl Descriptor {
    /// A descriptor with these fields.
    pub fn new(offset: u32, len: u32, cookie: u32, flags: u32) -> Self {
        Descriptor {
            offset: offset.into(),
            len: len.into(),
            cookie: cookie.into(),
            flags: flags.into(),
        }
    }
}

bitflags! {
    /// Offloads asked for by a TX descriptor.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct TxFlags: u32 {
        /// Fill in the IPv4 header checksum.
        const CSUM_IP = 1 << 0;
        /// Fill in the TCP or UDP checksum (IPv4 or IPv6).
        const CSUM_L4 = 1 << 1;
    }
}

bitflags! {
    /// Offload capabilities of an adapter and results reported on receive.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Offloads: u32 {
        /// IPv4 header checksum on send, checked on receive.
        const CSUM_IP = 1 << 0;
        /// TCP/UDP checksum on send, checked on receive.
        const CSUM_L4 = 1 << 1;
    }
}

/// What a completion entry reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CompletionKind {
    /// A received frame is in the buffer of `cookie`.
    Rx = 1,
    /// The frame of the TX descriptor `cookie` has been read; its buffer is free.
    Tx = 2,
}

coded_enum! {
    /// Outcome of one descriptor.
    pub enum CompletionStatus: u8 {
        /// Done.
        Ok = 0 => "ok",
        /// The descriptor's buffer lies outside the buffer area.
        OutsideBuffers = 1 => "outside_buffers",
        /// The length is zero, too small for a frame, or larger than allowed.
        BadLength = 2 => "bad_length",
        /// Reserved flag bits were set.
        BadFlags = 3 => "bad_flags",
        /// The fabric refused or lost the transfer (NACK, no path).
        DmaFailed = 4 => "dma_failed",
        /// RX: the frame did not fit the posted buffer (it was dropped).
        Truncated = 5 => "truncated",
    }
}

bitflags! {
    /// Flags of a completion entry.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct CompletionFlags: u16 {
        /// The phase of the pass over the ring that wrote this entry.
        const PHASE = 1 << 0;
        /// RX: the frame went to this queue as the master processor's
        /// (unmatched traffic: ARP, ICMP, unknown).
        const MASTER = 1 << 1;
        /// RX: the IPv4 header checksum was checked and is correct.
        const CSUM_IP_OK = 1 << 2;
        /// RX: the TCP/UDP checksum was checked and is correct.
        const CSUM_L4_OK = 1 << 3;
    }
}

/// One completion entry.
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
pub struct Completion {
    /// The cookie of the descriptor.
    pub cookie: U32,
    /// RX: bytes of the frame written (FCS removed); TX: bytes sent.
    pub len: U32,
    /// [`CompletionKind`] code.
    pub kind: u8,
    /// [`CompletionStatus`] code.
    pub status: u8,
    /// [`CompletionFlags`].
    pub flags: U16,
    /// The descriptor's ring index (for diagnostics).
    pub index: U32,
}

impl Completion {
    /// The entry's phase bit.
    pub fn phase(&self) -> bool {
        CompletionFlags::from_bits_truncate(self.flags.get()).contains(CompletionFlags::PHASE)
    }

    /// The flags.
    pub fn flags(&self) -> CompletionFlags {
        CompletionFlags::from_bits_truncate(self.flags.get())
    }

    /// The kind, if the code is known.
    pub fn kind(&self) -> Option<CompletionKind> {
        match self.kind {
            1 => Some(CompletionKind::Rx),
            2 => Some(CompletionKind::Tx),
            _ => None,
        }
    }

    /// The status, if the code is known.
    pub fn status(&self) -> Option<CompletionStatus> {
        CompletionStatus::from_code(self.status)
    }
}

/// Why an interrupt message was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum InterruptCause {
    /// New completion entries on the queue.
    Completions = 1,
    /// A command or mailbox status was written to the admin area.
    Admin = 2,
}

/// What the adapter writes into the processor's interrupt window (a window
/// with the AVT interrupt bit, so the write wakes the processor).
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
pub struct InterruptMessage {
    /// The queue (for [`InterruptCause::Completions`]).
    pub queue: U16,
    /// [`InterruptCause`] code.
    pub cause: U16,
    /// Completions written since the previous interrupt of this queue.
    pub count: U32,
}

/// Ring geometry checks shared by the adapter and the host library.
pub fn ring_size_ok(size: u32) -> bool {
    size.is_power_of_two() && (MIN_RING..=MAX_RING).contains(&size)
}

/// Entries between `head` and `tail` on a ring of `size` (both `< size`).
pub fn ring_used(head: u32, tail: u32, size: u32) -> u32 {
    tail.wrapping_sub(head) & (size - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    #[test]
    fn layouts_have_fixed_sizes_and_little_endian_fields() {
        assert_eq!(size_of::<Descriptor>(), DESCRIPTOR_LEN);
        assert_eq!(size_of::<Completion>(), COMPLETION_LEN);
        assert_eq!(size_of::<InterruptMessage>(), INTERRUPT_LEN);
        let d = Descriptor::new(0x0102_0304, 0x10, 7, 0);
        assert_eq!(
            d.as_bytes(),
            &[4, 3, 2, 1, 0x10, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0]
        );
        let c = Completion {
            cookie: 9.into(),
            len: 60.into(),
            kind: CompletionKind::Rx as u8,
            status: 0,
            flags: CompletionFlags::PHASE.bits().into(),
            index: 3.into(),
        };
        assert_eq!(
            c.as_bytes(),
            &[9, 0, 0, 0, 60, 0, 0, 0, 1, 0, 1, 0, 3, 0, 0, 0]
        );
        let back = Completion::read_from_bytes(c.as_bytes()).unwrap();
        assert_eq!(back, c);
        assert!(back.phase());
        assert_eq!(back.kind(), Some(CompletionKind::Rx));
        assert_eq!(back.status(), Some(CompletionStatus::Ok));
    }

    #[test]
    fn ring_arithmetic() {
        assert!(ring_size_ok(4) && ring_size_ok(32768));
        assert!(!ring_size_ok(0) && !ring_size_ok(2) && !ring_size_ok(6) && !ring_size_ok(65536));
        assert_eq!(ring_used(0, 0, 8), 0);
        assert_eq!(ring_used(6, 2, 8), 4);
        assert_eq!(ring_used(2, 1, 8), 7);
    }

    #[test]
    fn status_codes_round_trip() {
        for code in 0..=5u8 {
            assert_eq!(CompletionStatus::from_code(code).unwrap() as u8, code);
        }
        assert_eq!(CompletionStatus::from_code(6), None);
    }
}
