//! The adapter's register interface, as processors see it over the fabric.
//!
//! For every processor it serves, the adapter opens two windows in its own
//! AVT, usable by that processor only:
//!
//! - the **CSR window** ([`CSR_LEN`] bytes, read/write, with the interrupt
//!   bit, so each write wakes the adapter): per-queue doorbells, the command
//!   register and the mailbox doorbell;
//! - the **staging window** ([`STAGING_LEN`] bytes, read/write, no
//!   interrupt): where the processor puts a command block or a control
//!   message *before* ringing the matching doorbell (the processor waits
//!   for the staging write's acknowledgement first, so the adapter never
//!   sees a half-written block).
//!
//! The processor learns the fabric addresses of both windows at boot
//! ([`AdapterWindows`]), as an OS learns a device's register base.
//!
//! ## CSR window layout
//! | offset | register | written by the processor |
//! |---|---|---|
//! | `16·q + 0` | RX tail of queue `q` | new RX descriptors up to (not including) this index |
//! | `16·q + 4` | TX tail of queue `q` | new TX descriptors |
//! | `16·q + 8` | CQ head of queue `q` | completions consumed up to this index |
//! | `16·q + 12` | reserved | |
//! | [`COMMAND`] | [`CommandDoorbell`] | run the command for queue `q`, staged at staging offset [`config_offset`]`(q)` |
//! | [`MAILBOX`] | [`MailboxDoorbell`] | apply the control message staged at [`MAILBOX_BODY`] |
//!
//! Replies ([`CommandStatus`]) go to an address the processor names in each
//! command or mailbox doorbell; it lies in a window with the interrupt bit,
//! so the reply wakes the processor.
//!
//! Each queue has its own configuration slot, so commands for different
//! queues may overlap. The mailbox body is one per processor: a processor
//! has at most one control message in flight per adapter (it waits for the
//! reply before staging the next). The adapter keeps room for
//! `2 × MAX_QUEUES` replies in flight per processor; a processor that has
//! more outstanding may receive a later reply in place of an earlier one
//! (only its own).

/// Offset of queue `q`'s configuration slot in the staging window.
pub const fn config_offset(q: u16) -> u32 {
    q as u32 * CONFIG_SLOT
}

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use snet_fabric::FabricAddr;

/// Queues a processor may have on one adapter.
pub const MAX_QUEUES: u16 = 64;
/// Bytes of the CSR window.
pub const CSR_LEN: u32 = 4096;
/// Offset of the command doorbell.
pub const COMMAND: u32 = 0x400;
/// Offset of the mailbox doorbell.
pub const MAILBOX: u32 = 0x410;
/// Bytes of the staging window.
pub const STAGING_LEN: u32 = 16384;
/// Bytes of each queue's configuration slot in the staging window.
pub const CONFIG_SLOT: u32 = 128;
/// Offset of the mailbox body in the staging window (after one
/// configuration slot per queue).
pub const MAILBOX_BODY: u32 = CONFIG_SLOT * MAX_QUEUES as u32;
/// Largest control message the mailbox takes.
pub const MAILBOX_MAX: u32 = STAGING_LEN - MAILBOX_BODY;

/// Which register a CSR-window offset names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Register {
    /// RX tail doorbell of a queue.
    RxTail(u16),
    /// TX tail doorbell of a queue.
    TxTail(u16),
    /// CQ head doorbell of a queue.
    CqHead(u16),
    /// The command doorbell.
    Command,
    /// The mailbox doorbell.
    Mailbox,
}

impl Register {
    /// The register at `offset`, or `None` for reserved space.
    pub fn at(offset: u32) -> Option<Register> {
        if offset < 16 * MAX_QUEUES as u32 {
            let q = (offset / 16) as u16;
            return match offset % 16 {
                0 => Some(Register::RxTail(q)),
                4 => Some(Register::TxTail(q)),
                8 => Some(Register::CqHead(q)),
                _ => None,
            };
        }
        match offset {
            COMMAND => Some(Register::Command),
            MAILBOX => Some(Register::Mailbox),
            _ => None,
        }
    }

    /// Offset of the register in the CSR window.
    pub fn offset(self) -> u32 {
        match self {
            Register::RxTail(q) => 16 * q as u32,
            Register::TxTail(q) => 16 * q as u32 + 4,
            Register::CqHead(q) => 16 * q as u32 + 8,
            Register::Command => COMMAND,
            Register::Mailbox => MAILBOX,
        }
    }

    /// Bytes of the register.
    pub fn len(self) -> u32 {
        match self {
            Register::RxTail(_) | Register::TxTail(_) | Register::CqHead(_) => 4,
            Register::Command => size_of::<CommandDoorbell>() as u32,
            Register::Mailbox => size_of::<MailboxDoorbell>() as u32,
        }
    }

    /// Always false: a register has a length (for clippy's `len` rule).
    pub fn is_empty(self) -> bool {
        false
    }
}

coded_enum! {
    /// Commands a processor can give.
    pub enum CommandCode: u16 {
        /// Create queue pair `queue` from the staged [`QueueConfig`].
        CreateQueue = 1 => "create_queue",
        /// Destroy queue pair `queue` (frames in flight for it are dropped).
        DestroyQueue = 2 => "destroy_queue",
        /// Change the interrupt coalescing of `queue` (the `coalesce_*` fields
        /// of the [`QueueConfig`] staged in the queue's slot).
        SetCoalescing = 3 => "set_coalescing",
    }
}

/// The command doorbell (16 bytes at [`COMMAND`]).
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
pub struct CommandDoorbell {
    /// [`CommandCode`].
    pub code: U16,
    /// The queue it applies to.
    pub queue: U16,
    /// The processor's sequence number, echoed in the status.
    pub seq: U32,
    /// Where the [`CommandStatus`] goes (a fabric address in the processor).
    pub reply: U64,
}

/// The mailbox doorbell (16 bytes at [`MAILBOX`]).
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
pub struct MailboxDoorbell {
    /// Length of the staged control message.
    pub len: U32,
    /// The processor's sequence number, echoed in the status.
    pub seq: U32,
    /// Where the [`CommandStatus`] goes.
    pub reply: U64,
}

/// A queue pair's configuration, staged at [`config_offset`] of its queue in
/// the staging window.
/// Addresses are fabric addresses of windows the processor opened for the
/// adapter.
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
pub struct QueueConfig {
    /// The RX descriptor ring.
    pub rx_ring: U64,
    /// The TX descriptor ring.
    pub tx_ring: U64,
    /// The completion ring.
    pub cq_ring: U64,
    /// The buffer area (descriptor offsets are relative to it).
    pub buffers: U64,
    /// Where interrupt messages of this queue go (an interrupt window).
    pub irq: U64,
    /// Bytes of the buffer area.
    pub buffers_len: U32,
    /// RX ring slots (a power of two).
    pub rx_size: U32,
    /// TX ring slots.
    pub tx_size: U32,
    /// Completion ring slots.
    pub cq_size: U32,
    /// Raise an interrupt after this many completions (≥ 1).
    pub coalesce_count: U32,
    /// … or this long after the first unsignalled completion, in ns
    /// (0 = at once).
    pub coalesce_ns: U32,
    /// Offloads asked for ([`crate::ring::Offloads`] bits).
    pub offloads: U32,
    /// Zero.
    pub reserved: U32,
}

coded_enum! {
    /// Outcome of a command or a mailbox message.
    pub enum StatusCode: u16 {
        /// Done.
        Ok = 0 => "ok",
        /// Unknown command code.
        UnknownCommand = 1 => "unknown_command",
        /// Queue number out of range.
        BadQueue = 2 => "bad_queue",
        /// The queue exists already.
        QueueExists = 3 => "queue_exists",
        /// The queue does not exist.
        NoSuchQueue = 4 => "no_such_queue",
        /// A ring size is not a power of two in range.
        BadRingSize = 5 => "bad_ring_size",
        /// A coalescing or offload field is out of range.
        BadConfig = 6 => "bad_config",
        /// The adapter has no room for another queue.
        NoResources = 7 => "no_resources",
        /// A control message longer than [`MAILBOX_MAX`].
        TooLong = 8 => "too_long",
        /// The firmware rejected the control message (`detail` is the
        /// firmware's reject-reason index).
        Rejected = 9 => "rejected",
    }
}

/// Which doorbell a [`CommandStatus`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum StatusSource {
    /// The command doorbell.
    Command = 1,
    /// The mailbox doorbell.
    Mailbox = 2,
}

/// The adapter's answer to a command or mailbox doorbell (16 bytes).
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
pub struct CommandStatus {
    /// The doorbell's sequence number.
    pub seq: U32,
    /// [`StatusSource`].
    pub source: U16,
    /// [`StatusCode`].
    pub status: U16,
    /// More detail (the firmware's reject reason for [`StatusCode::Rejected`]).
    pub detail: U32,
    /// The command code (0 for the mailbox).
    pub code: U16,
    /// The queue of the command.
    pub queue: U16,
}

/// The fabric addresses of an adapter's windows for one processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AdapterWindows {
    /// The adapter's endpoint.
    pub adapter: snet_fabric::EndpointId,
    /// Byte 0 of the CSR window.
    pub csr: FabricAddr,
    /// Byte 0 of the staging window.
    pub staging: FabricAddr,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_map_round_trips_and_reserved_space_is_none() {
        for q in [0u16, 1, 63] {
            for r in [
                Register::RxTail(q),
                Register::TxTail(q),
                Register::CqHead(q),
            ] {
                assert_eq!(Register::at(r.offset()), Some(r));
            }
            assert_eq!(Register::at(16 * q as u32 + 12), None);
            assert_eq!(Register::at(16 * q as u32 + 2), None);
        }
        assert_eq!(Register::at(COMMAND), Some(Register::Command));
        assert_eq!(Register::at(MAILBOX), Some(Register::Mailbox));
        assert_eq!(Register::at(COMMAND + 4), None);
        assert_eq!(Register::at(CSR_LEN - 4), None);
        assert_eq!(size_of::<CommandDoorbell>(), 16);
        assert_eq!(size_of::<MailboxDoorbell>(), 16);
        assert_eq!(size_of::<CommandStatus>(), 16);
        assert_eq!(size_of::<QueueConfig>(), 72);
        const { assert!(size_of::<QueueConfig>() as u32 <= CONFIG_SLOT) };
        assert_eq!(config_offset(63) + CONFIG_SLOT, MAILBOX_BODY);
        const { assert!(MAILBOX + 16 <= CSR_LEN) };
    }

    #[test]
    fn codes_round_trip() {
        for c in 0..=9u16 {
            assert_eq!(StatusCode::from_code(c).unwrap() as u16, c);
        }
        assert_eq!(StatusCode::from_code(10), None);
        for c in 1..=3u16 {
            assert_eq!(CommandCode::from_code(c).unwrap() as u16, c);
        }
        assert_eq!(CommandCode::from_code(0), None);
    }
}
