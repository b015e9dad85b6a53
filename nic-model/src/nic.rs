//! The adapter: MAC, firmware, on-board buffers, queue pairs in processor
//! memory, doorbells, completions and interrupts.
//!
//! ## Receive
//! A frame whose last bit arrived passes the MAC (size limits, FCS, address
//! filter), is stored in an on-board receive buffer, and is classified by
//! the firmware, which runs one frame at a time taking
//! [`NicConfig::classify_time`] each. The verdict names a processor and
//! queue; the frame waits there for an RX descriptor (the adapter fetches
//! descriptors in batches with fabric read requests), is written into the
//! posted buffer with fabric write requests, and gets a completion entry.
//!
//! ## Completion and interrupt moderation
//! Each queue has a count threshold and a time threshold. Completion
//! entries wait in the adapter until a *signal point* — as many entries as
//! the count threshold, or the time threshold after the first unsignalled
//! one (at once when the time threshold is 0) — or until a full batch
//! ([`NicConfig::cq_batch`]) waits. At a signal point the adapter writes the
//! waiting entries (one fabric transfer per batch) and then one interrupt
//! message into the processor's interrupt window. Entries that arrive while
//! that write is in flight wait for the next signal point, unless a full
//! batch of them waits, which is written first. A processor that polls
//! its completion ring without interrupts therefore sees entries at the
//! same moments; a latency-sensitive queue sets the time threshold to 0.
//!
//! ## Send
//! A TX doorbell makes the adapter fetch descriptors, read each frame from
//! the processor's buffer into an on-board transmit buffer (fabric read
//! requests), apply the checksum offloads, write a completion (the buffer is
//! free again), and send the frame when the wire is free, appending the FCS.
//!
//! ## Untrusted rings
//! Nothing a processor writes is trusted: a doorbell index outside the ring,
//! a descriptor whose buffer leaves the buffer area, an impossible length or
//! unknown flag bits, each is counted and answered with an error completion
//! (or ignored, for doorbells), and the adapter carries on. The adapter only
//! ever reaches processor memory through the processor's AVT windows, so
//! even a bug here cannot touch memory outside them: the AVT NACKs it.

use std::collections::VecDeque;

use snet_fabric::avt::Access;
use snet_fabric::engine::{ComponentId, Scheduler, Traced};
use snet_fabric::memory::ProcAddr;
use snet_fabric::network::{DmaCompletion, DmaRequest, Fabric, FabricEvent, TransferMap};
use snet_fabric::time::{Duration, Instant};
use snet_fabric::{EndpointId, FabricAddr, Plane};
use snet_firmware::control::Envelope;
use snet_firmware::{Firmware, ProcessorId, Verdict};
use zerocopy::{FromBytes, IntoBytes};

use crate::mac::{self, FCS_LEN, MIN_FRAME, MacAddr, MacConfig};
use crate::offload;
use crate::regs::{
    self, AdapterWindows, CommandCode, CommandDoorbell, CommandStatus, MailboxDoorbell,
    QueueConfig, Register, StatusCode, StatusSource,
};
use crate::ring::{
    self, COMPLETION_LEN, Completion, CompletionFlags, CompletionKind, CompletionStatus,
    DESCRIPTOR_LEN, Descriptor, INTERRUPT_LEN, InterruptCause, InterruptMessage, Offloads, TxFlags,
};

/// Settings of one adapter.
#[derive(Debug, Clone)]
pub struct NicConfig {
    /// Name (for reports).
    pub name: String,
    /// The MAC.
    pub mac: MacConfig,
    /// The processors the adapter serves: index `i` is firmware processor `i`.
    pub processors: Vec<EndpointId>,
    /// The firmware's configuration (`processor_count` must match).
    pub firmware: snet_firmware::Config,
    /// On-board receive buffers (frames between the wire and a processor).
    pub rx_buffers: u32,
    /// On-board transmit buffers.
    pub tx_buffers: u32,
    /// Descriptors fetched per read.
    pub fetch_batch: u32,
    /// Completion entries written per write, at most.
    pub cq_batch: u32,
    /// Frames that may wait for descriptors on one queue.
    pub queue_backlog: u32,
    /// Firmware time per frame.
    pub classify_time: Duration,
    /// Queue pairs per processor, at most [`regs::MAX_QUEUES`].
    pub queues_per_processor: u16,
    /// Offloads the adapter implements.
    pub offloads: Offloads,
}

impl Default for NicConfig {
    fn default() -> Self {
        NicConfig {
            name: "lan0".into(),
            mac: MacConfig::default(),
            processors: Vec::new(),
            firmware: snet_firmware::Config::default(),
            rx_buffers: 1024,
            tx_buffers: 256,
            fetch_batch: 32,
            cq_batch: 64,
            queue_backlog: 256,
            classify_time: Duration::from_ns(100),
            queues_per_processor: 4,
            offloads: Offloads::CSUM_IP | Offloads::CSUM_L4,
        }
    }
}

/// Why an adapter could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NicError {
    /// A setting out of range.
    #[error("adapter {name}: {why}")]
    Config {
        /// Adapter name.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// The adapter's memory cannot hold its buffers and windows.
    #[error(
        "adapter {name}: needs {need} bytes of adapter memory, has {have} (raise the fabric's memory size or lower rx_buffers/tx_buffers)"
    )]
    MemoryTooSmall {
        /// Adapter name.
        name: String,
        /// Bytes needed.
        need: u64,
        /// Bytes available.
        have: u64,
    },
    /// The fabric refused a window or an endpoint.
    #[error("adapter {name}: fabric: {why}")]
    Fabric {
        /// Adapter name.
        name: String,
        /// The fabric's message.
        why: String,
    },
}

/// Events of an adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NicEvent {
    /// The coalescing timer of a queue expired.
    IrqTimer {
        /// Adapter index in the world.
        nic: u16,
        /// Firmware processor index.
        processor: u16,
        /// Queue.
        queue: u16,
        /// Queue generation that armed it.
        generation: u32,
    },
}

impl Traced for NicEvent {
    fn kind(&self) -> u16 {
        0x200
    }
    fn keys(&self) -> (u64, u64) {
        match *self {
            NicEvent::IrqTimer {
                nic,
                processor,
                queue,
                generation,
            } => (
                ((nic as u64) << 32) | ((processor as u64) << 16) | queue as u64,
                generation as u64,
            ),
        }
    }
}

/// Counters of an adapter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NicCounters {
    /// Frames whose last bit reached the port.
    pub rx_frames: u64,
    /// Their bytes (FCS included).
    pub rx_bytes: u64,
    /// Dropped: FCS mismatch.
    pub rx_fcs_errors: u64,
    /// Dropped: shorter than 64 bytes.
    pub rx_runts: u64,
    /// Dropped: longer than the MTU allows.
    pub rx_oversize: u64,
    /// Dropped: destination address not accepted.
    pub rx_filtered: u64,
    /// Dropped: no on-board receive buffer free.
    pub rx_overflow: u64,
    /// Dropped by the firmware's verdict.
    pub rx_firmware_drops: u64,
    /// Frames answered by the firmware itself (RST).
    pub rx_replies: u64,
    /// Dropped: the verdict named a processor that is down.
    pub rx_processor_down: u64,
    /// Dropped: the verdict named a queue that does not exist.
    pub rx_no_queue: u64,
    /// Dropped: no RX descriptor posted on the queue.
    pub rx_no_buffer: u64,
    /// Dropped: the queue's backlog of frames waiting for descriptors is full.
    pub rx_backlog_full: u64,
    /// Dropped: the posted buffer was smaller than the frame.
    pub rx_truncated: u64,
    /// Frames written into processor memory and completed.
    pub rx_delivered: u64,
    /// Their bytes (FCS removed).
    pub rx_delivered_bytes: u64,
    /// Frame writes the fabric failed (NACK, no path).
    pub rx_dma_errors: u64,
    /// Frames sent on the wire.
    pub tx_frames: u64,
    /// Their bytes (FCS included).
    pub tx_bytes: u64,
    /// Frame reads the fabric failed.
    pub tx_dma_errors: u64,
    /// Descriptors refused (outside the buffer area, bad length, bad flags).
    pub bad_descriptors: u64,
    /// Doorbell writes with an index outside the ring, or for no queue.
    pub bad_doorbells: u64,
    /// Writes to reserved register space.
    pub bad_register_writes: u64,
    /// Descriptor fetches or completion writes the fabric failed (the
    /// queue stops until it is re-created).
    pub queue_errors: u64,
    /// Completion entries written.
    pub completions: u64,
    /// Times a completion ring was full and entries had to wait.
    pub cq_full_stalls: u64,
    /// Interrupt messages written.
    pub interrupts: u64,
    /// Commands run (any outcome).
    pub commands: u64,
    /// Commands refused.
    pub command_errors: u64,
    /// Control messages the firmware accepted.
    pub mailbox_accepted: u64,
    /// Control messages refused (firmware reject, too long, wrong sender).
    pub mailbox_rejected: u64,
    /// Processors reported down by the fabric.
    pub processors_failed: u64,
    /// Frames the firmware queued on its own and the adapter put on its
    /// transmit queue: RSTs for the clients of a failed processor's
    /// connections (proactive resets; `rx_replies` counts the reactive ones).
    pub tx_firmware_frames: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct QKey {
    proc: u16,
    queue: u16,
    generation: u32,
}

#[derive(Debug, Clone, Copy)]
enum Purpose {
    RxFrame {
        q: QKey,
        slot: u32,
        index: u32,
        cookie: u32,
        len: u32,
        flags: CompletionFlags,
        /// Order among the queue's received frames.
        seq: u64,
    },
    RxFetch {
        q: QKey,
        first: u32,
        count: u32,
    },
    TxFetch {
        q: QKey,
        first: u32,
        count: u32,
    },
    TxRead {
        q: QKey,
        slot: u32,
        index: u32,
        cookie: u32,
        len: u32,
        flags: TxFlags,
        /// Order among the queue's frames to send.
        seq: u64,
    },
    CqWrite {
        q: QKey,
        count: u32,
        /// Ring index and phase of the first entry written.
        first: u32,
        phase: bool,
    },
    Irq {
        q: QKey,
        count: u32,
    },
    Status,
}

#[derive(Debug, Clone, Copy)]
struct RxFrame {
    slot: u32,
    len: u32,
    flags: CompletionFlags,
}

#[derive(Debug)]
struct Ring {
    base: FabricAddr,
    size: u32,
    /// Doorbell value: one past the last posted entry.
    tail: u32,
    /// Next entry to fetch.
    head: u32,
    fetching: bool,
    cache: VecDeque<(u32, Descriptor)>,
}

impl Ring {
    fn new(base: FabricAddr, size: u32) -> Self {
        Ring {
            base,
            size,
            tail: 0,
            head: 0,
            fetching: false,
            cache: VecDeque::new(),
        }
    }

    fn unfetched(&self) -> u32 {
        ring::ring_used(self.head, self.tail, self.size)
    }
}

/// Counters of one queue pair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounters {
    /// Frames delivered.
    pub rx_delivered: u64,
    /// Frames sent.
    pub tx_sent: u64,
    /// Interrupt messages written.
    pub interrupts: u64,
    /// Completion entries written.
    pub completions: u64,
    /// Descriptors refused.
    pub bad_descriptors: u64,
}

#[derive(Debug)]
struct Queue {
    generation: u32,
    buffers: FabricAddr,
    buffers_len: u32,
    irq: FabricAddr,
    offloads: Offloads,
    rx: Ring,
    tx: Ring,
    backlog: VecDeque<RxFrame>,
    cq_base: FabricAddr,
    cq_size: u32,
    cq_head: u32,
    cq_tail: u32,
    cq_phase: bool,
    cq_pending: VecDeque<Completion>,
    /// Receive completions of delivered frames are written in the order the
    /// frames were taken (ring order), whatever order their DMA writes
    /// finish in (error completions of refused descriptors and truncated
    /// frames, which move no data, go out at once): the next
    /// frame's sequence number, the next to complete, and those finished
    /// early.
    rx_seq_started: u64,
    rx_seq_completed: u64,
    /// Entry `i` holds the completion of sequence `rx_seq_completed + i`
    /// once its write finished.
    rx_reorder: VecDeque<Option<Completion>>,
    /// Frames to send leave for the wire in ring order, whatever order the
    /// reads of their bytes finish in (reads of one queue may run on both
    /// planes, or some as transaction-level trains and some packet by
    /// packet): the next read's sequence number, the next to go, and the
    /// outcomes of reads that finished early.
    tx_seq_started: u64,
    tx_seq_completed: u64,
    tx_reorder: VecDeque<Option<TxOutcome>>,
    /// Entries of the completion write in flight (given back if the adapter
    /// fails before it lands).
    cq_inflight: Vec<Completion>,
    cq_writing: bool,
    cq_stalled: bool,
    coalesce_count: u32,
    coalesce_time: Duration,
    /// Written, not yet signalled.
    irq_pending: u32,
    /// At a signal point: write what waits, then interrupt.
    signal: bool,
    irq_armed: bool,
    irq_writing: bool,
    irq_again: bool,
    tx_waiting: bool,
    broken: bool,
    counters: QueueCounters,
}

impl Queue {
    /// The outcome of the next frame in ring order, if its read finished.
    fn next_tx_ready(&mut self) -> Option<TxOutcome> {
        let o = (*self.tx_reorder.front()?)?;
        self.tx_reorder.pop_front();
        self.tx_seq_completed += 1;
        Some(o)
    }

    /// Transmit slots held by frames waiting for their turn in ring order.
    fn held_tx_slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.tx_reorder.iter().filter_map(|o| match o {
            Some(TxOutcome::Sent { slot, .. }) => Some(*slot),
            _ => None,
        })
    }
}

/// What became of one frame's read, waiting for its turn in ring order.
#[derive(Debug, Clone, Copy)]
enum TxOutcome {
    /// The frame is in transmit slot `slot`: it goes to the wire.
    Sent {
        slot: u32,
        len: u32,
        done: Completion,
    },
    /// The read failed: only its error completion goes out.
    Failed(Completion),
}

#[derive(Debug)]
struct Processor {
    endpoint: EndpointId,
    up: bool,
    windows: AdapterWindows,
    queues: Vec<Option<Queue>>,
    status_next: u32,
}

#[derive(Debug)]
enum WireFrame {
    Slot { slot: u32, len: u32 },
    Owned(Vec<u8>),
}

/// Offsets of the adapter's own memory.
#[derive(Debug, Clone, Copy)]
struct Layout {
    procs: u64,
    queues: u64,
    fetch_batch: u64,
    cq_batch: u64,
    staging: u64,
    status: u64,
    per_queue: u64,
    queue_area: u64,
    slot: u64,
    rx_slots: u64,
    tx_slots: u64,
    end: u64,
}

/// Replies in flight per processor: one command and one control message per queue.
const STATUS_SLOTS: u64 = 2 * regs::MAX_QUEUES as u64;

impl Layout {
    fn new(c: &NicConfig) -> Layout {
        let procs = c.processors.len() as u64;
        let queues = c.queues_per_processor as u64;
        let fetch = c.fetch_batch as u64 * DESCRIPTOR_LEN as u64;
        let per_queue =
            (2 * fetch + c.cq_batch as u64 * COMPLETION_LEN as u64 + 64).next_multiple_of(64);
        let staging = procs * regs::CSR_LEN as u64;
        let status = staging + procs * regs::STAGING_LEN as u64;
        let queue_area = status + procs * STATUS_SLOTS * 16;
        let slot = (c.mac.max_frame() as u64).next_multiple_of(64);
        let rx_slots = queue_area + procs * queues * per_queue;
        let tx_slots = rx_slots + c.rx_buffers as u64 * slot;
        let end = tx_slots + c.tx_buffers as u64 * slot;
        Layout {
            procs,
            queues,
            fetch_batch: c.fetch_batch as u64,
            cq_batch: c.cq_batch as u64,
            staging,
            status,
            per_queue,
            queue_area,
            slot,
            rx_slots,
            tx_slots,
            end,
        }
    }
    fn csr(&self, p: u16) -> ProcAddr {
        ProcAddr(p as u64 * regs::CSR_LEN as u64)
    }
    fn staging(&self, p: u16) -> ProcAddr {
        ProcAddr(self.staging + p as u64 * regs::STAGING_LEN as u64)
    }
    fn status(&self, p: u16, n: u32) -> ProcAddr {
        ProcAddr(self.status + (p as u64 * STATUS_SLOTS + (n as u64 % STATUS_SLOTS)) * 16)
    }
    fn queue_base(&self, p: u16, q: u16) -> u64 {
        debug_assert!((p as u64) < self.procs && (q as u64) < self.queues);
        self.queue_area + (p as u64 * self.queues + q as u64) * self.per_queue
    }
    fn rx_fetch(&self, p: u16, q: u16) -> ProcAddr {
        ProcAddr(self.queue_base(p, q))
    }
    fn tx_fetch(&self, p: u16, q: u16) -> ProcAddr {
        ProcAddr(self.queue_base(p, q) + self.fetch_batch * DESCRIPTOR_LEN as u64)
    }
    fn cq_stage(&self, p: u16, q: u16) -> ProcAddr {
        ProcAddr(self.queue_base(p, q) + 2 * self.fetch_batch * DESCRIPTOR_LEN as u64)
    }
    fn irq_stage(&self, p: u16, q: u16) -> ProcAddr {
        ProcAddr(self.cq_stage(p, q).0 + self.cq_batch * COMPLETION_LEN as u64)
    }
    fn rx_slot(&self, s: u32) -> ProcAddr {
        ProcAddr(self.rx_slots + s as u64 * self.slot)
    }
    fn tx_slot(&self, s: u32) -> ProcAddr {
        ProcAddr(self.tx_slots + s as u64 * self.slot)
    }
}

/// A scheduler an adapter can use for its own and the fabric's events.
pub trait NicScheduler: Scheduler<NicEvent> + Scheduler<FabricEvent> {}
impl<S: Scheduler<NicEvent> + Scheduler<FabricEvent>> NicScheduler for S {}

fn now_of<S: NicScheduler>(s: &S) -> Instant {
    Scheduler::<NicEvent>::now(s)
}

fn fw_time(t: Instant) -> snet_firmware::Instant {
    snet_firmware::Instant::from_nanos(t.as_ns())
}

/// One adapter.
#[derive(Debug)]
pub struct Nic {
    config: NicConfig,
    index: u16,
    endpoint: EndpointId,
    component: ComponentId,
    firmware: Firmware,
    layout: Layout,
    procs: Vec<Processor>,
    /// Firmware index of each processor endpoint (doorbells are looked up
    /// by requester on every write).
    index_of: std::collections::BTreeMap<EndpointId, u16>,
    rx_free: Vec<u32>,
    tx_free: Vec<u32>,
    classified: VecDeque<(Instant, RxFrame, Verdict)>,
    firmware_free: Instant,
    wire: VecDeque<WireFrame>,
    wire_free: Instant,
    tx_waiting: VecDeque<(u16, u16)>,
    transfers: TransferMap<Purpose>,
    outbox: Vec<Vec<u8>>,
    next_generation: u32,
    next_plane: usize,
    planes: Vec<Plane>,
    up: bool,
    counters: NicCounters,
}

impl Nic {
    /// Builds adapter number `index` on fabric endpoint `endpoint`: checks
    /// the settings, lays out the adapter's memory and opens the CSR and
    /// staging windows of every processor. Wake-ups carry `component`.
    pub fn new<S: Scheduler<FabricEvent>>(
        config: NicConfig,
        index: u16,
        endpoint: EndpointId,
        component: ComponentId,
        fabric: &mut Fabric,
        sched: &mut S,
    ) -> Result<Nic, NicError> {
        let bad = |why: String| NicError::Config {
            name: config.name.clone(),
            why,
        };
        config.mac.validate().map_err(bad)?;
        if config.processors.is_empty() {
            return Err(bad("an adapter needs at least one processor".into()));
        }
        if config.firmware.processor_count as usize != config.processors.len() {
            return Err(bad(format!(
                "the firmware is configured for {} processors but the adapter serves {}",
                config.firmware.processor_count,
                config.processors.len()
            )));
        }
        if config.queues_per_processor == 0 || config.queues_per_processor > regs::MAX_QUEUES {
            return Err(bad(format!(
                "queues_per_processor {} must be in 1..={}",
                config.queues_per_processor,
                regs::MAX_QUEUES
            )));
        }
        if config.firmware.queues_per_processor > config.queues_per_processor {
            return Err(bad(format!(
                "the firmware spreads connections over {} queues per processor but the adapter has {}",
                config.firmware.queues_per_processor, config.queues_per_processor
            )));
        }
        for (name, v, lo, hi) in [
            ("rx_buffers", config.rx_buffers, 1, 1 << 20),
            ("tx_buffers", config.tx_buffers, 1, 1 << 20),
            ("fetch_batch", config.fetch_batch, 1, 256),
            ("cq_batch", config.cq_batch, 1, 256),
            ("queue_backlog", config.queue_backlog, 1, 1 << 20),
        ] {
            if !(lo..=hi).contains(&v) {
                return Err(bad(format!("{name} {v} must be in {lo}..={hi}")));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for &p in &config.processors {
            if p == endpoint {
                return Err(bad(format!("{p} is the adapter itself, not a processor")));
            }
            if !seen.insert(p) {
                return Err(bad(format!("{p} is listed twice among the processors")));
            }
        }
        let firmware = Firmware::new(config.firmware.clone()).map_err(|e| bad(e.to_string()))?;
        let layout = Layout::new(&config);
        let fab = |e: snet_fabric::network::FabricError| NicError::Fabric {
            name: config.name.clone(),
            why: e.to_string(),
        };
        let have = fabric.memory(endpoint).map_err(fab)?.len();
        if layout.end > have {
            return Err(NicError::MemoryTooSmall {
                name: config.name.clone(),
                need: layout.end,
                have,
            });
        }
        let mut procs = Vec::with_capacity(config.processors.len());
        for (i, &p) in config.processors.iter().enumerate() {
            let i = i as u16;
            let csr = fabric
                .avt_register(
                    sched,
                    endpoint,
                    p,
                    layout.csr(i),
                    regs::CSR_LEN,
                    Access::READ | Access::WRITE | Access::INTERRUPT,
                )
                .map_err(fab)?;
            let staging = fabric
                .avt_register(
                    sched,
                    endpoint,
                    p,
                    layout.staging(i),
                    regs::STAGING_LEN,
                    Access::READ | Access::WRITE,
                )
                .map_err(fab)?;
            procs.push(Processor {
                endpoint: p,
                up: true,
                windows: AdapterWindows {
                    adapter: endpoint,
                    csr: FabricAddr::new(csr, 0),
                    staging: FabricAddr::new(staging, 0),
                },
                queues: (0..config.queues_per_processor).map(|_| None).collect(),
                status_next: 0,
            });
        }
        let planes = fabric.topology().planes().to_vec();
        let index_of = config
            .processors
            .iter()
            .enumerate()
            .map(|(i, &p)| (p, i as u16))
            .collect();
        Ok(Nic {
            rx_free: (0..config.rx_buffers).rev().collect(),
            tx_free: (0..config.tx_buffers).rev().collect(),
            config,
            index,
            endpoint,
            component,
            firmware,
            layout,
            procs,
            index_of,
            classified: VecDeque::new(),
            firmware_free: Instant::ZERO,
            wire: VecDeque::new(),
            wire_free: Instant::ZERO,
            tx_waiting: VecDeque::new(),
            transfers: TransferMap::default(),
            outbox: Vec::new(),
            next_generation: 1,
            next_plane: 0,
            planes,
            up: true,
            counters: NicCounters::default(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &NicConfig {
        &self.config
    }

    /// The adapter's fabric endpoint.
    pub fn endpoint(&self) -> EndpointId {
        self.endpoint
    }

    /// The engine component of the adapter's wake-ups.
    pub fn component(&self) -> ComponentId {
        self.component
    }

    /// The MAC address.
    pub fn mac(&self) -> MacAddr {
        self.config.mac.address
    }

    /// Makes the MAC also accept frames for the unicast address `a`, from
    /// now on (an adapter taking over a failed adapter's address). Returns
    /// whether it was new; a group address is refused.
    pub fn accept_unicast(&mut self, a: MacAddr) -> Result<bool, NicError> {
        self.config
            .mac
            .accept_unicast(a)
            .map_err(|why| NicError::Config {
                name: self.config.name.clone(),
                why,
            })
    }

    /// Stops accepting the extra unicast address `a` (the adapter's own
    /// address stays). Returns whether it was accepted before.
    pub fn forget_unicast(&mut self, a: MacAddr) -> bool {
        self.config.mac.forget_unicast(a)
    }

    /// Replaces the firmware's replicated state with `snapshot` (a table
    /// dump, as an adapter being resynchronised from another gets), at
    /// virtual time `now`. The dump is applied as a control message from
    /// the lowest-numbered processor this firmware holds live (the firmware
    /// takes a dump only from a live sender); `Err` names the firmware's
    /// refusal (a malformed dump, or no live processor to send it).
    pub fn apply_table_dump(
        &mut self,
        snapshot: snet_firmware::control::TableSnapshot,
        now: Instant,
    ) -> Result<(), snet_firmware::control::RejectReason> {
        let count = self.firmware.config().processor_count;
        let sender = (0..count)
            .map(ProcessorId)
            .find(|&p| self.firmware.is_live(p))
            .ok_or(snet_firmware::control::RejectReason::ProcessorNotLive)?;
        let env = Envelope::new(
            sender,
            snet_firmware::control::ControlMessage::TableDump(snapshot),
        );
        self.firmware
            .apply_envelope(&env, fw_time(now))
            .map_err(|e| e.reason())
    }

    /// The counters.
    pub fn counters(&self) -> &NicCounters {
        &self.counters
    }

    /// The firmware (tables, counters).
    pub fn firmware(&self) -> &Firmware {
        &self.firmware
    }

    /// The firmware, for installing a custom filter.
    pub fn firmware_mut(&mut self) -> &mut Firmware {
        &mut self.firmware
    }

    /// Firmware index of a processor endpoint.
    pub fn processor_index(&self, p: EndpointId) -> Option<u16> {
        self.index_of.get(&p).copied()
    }

    /// The windows processor `p` uses to reach the adapter.
    pub fn windows_for(&self, p: EndpointId) -> Option<AdapterWindows> {
        let i = self.processor_index(p)?;
        Some(self.procs[i as usize].windows)
    }

    /// Counters of one queue pair, if it exists.
    pub fn queue_counters(&self, p: EndpointId, queue: u16) -> Option<QueueCounters> {
        let i = self.processor_index(p)?;
        self.procs[i as usize]
            .queues
            .get(queue as usize)?
            .as_ref()
            .map(|q| q.counters)
    }

    /// Whether a queue pair exists and works.
    pub fn queue_ok(&self, p: EndpointId, queue: u16) -> bool {
        self.processor_index(p)
            .and_then(|i| self.procs[i as usize].queues.get(queue as usize))
            .and_then(|q| q.as_ref())
            .is_some_and(|q| !q.broken)
    }

    /// Whether the adapter is up.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Whether the adapter still has frames to send: TX descriptors posted
    /// and not yet fetched or handled, frames being read from processor
    /// memory, or frames waiting for the wire. (A restored adapter sends
    /// what its processors had posted before it failed.)
    pub fn tx_pending(&self) -> bool {
        !self.wire.is_empty()
            || self
                .transfers
                .values()
                .any(|p| matches!(p, Purpose::TxFetch { .. } | Purpose::TxRead { .. }))
            || self
                .procs
                .iter()
                .filter(|p| p.up)
                .flat_map(|p| p.queues.iter().flatten())
                .any(|q| !q.broken && (q.tx.unfetched() > 0 || !q.tx.cache.is_empty()))
    }

    /// Frames the adapter put on the wire since the last call (FCS included).
    pub fn take_outbox(&mut self, out: &mut Vec<Vec<u8>>) {
        out.append(&mut self.outbox);
    }

    /// True when the adapter has frames for the wire.
    pub fn has_outbox(&self) -> bool {
        !self.outbox.is_empty()
    }

    fn wake<S: NicScheduler>(&self, sched: &mut S, at: Instant) {
        Scheduler::<NicEvent>::wake_at(sched, self.component, at);
    }

    // ----- receive -----

    /// A frame (FCS included) whose last bit reached the port now.
    pub fn receive<S: NicScheduler>(&mut self, sched: &mut S, fabric: &mut Fabric, frame: &[u8]) {
        let now = now_of(sched);
        if !self.up {
            return;
        }
        self.counters.rx_frames += 1;
        self.counters.rx_bytes += frame.len() as u64;
        if frame.len() < MIN_FRAME {
            self.counters.rx_runts += 1;
            return;
        }
        if frame.len() > self.config.mac.max_frame() {
            self.counters.rx_oversize += 1;
            return;
        }
        let Some(body) = mac::check_fcs(frame) else {
            self.counters.rx_fcs_errors += 1;
            return;
        };
        let dst = MacAddr::destination(body).unwrap_or(MacAddr::BROADCAST);
        if !self.config.mac.accepts(dst) {
            self.counters.rx_filtered += 1;
            return;
        }
        let Some(slot) = self.rx_free.pop() else {
            self.counters.rx_overflow += 1;
            return;
        };
        let addr = self.layout.rx_slot(slot);
        // The MAC stores the frame in on-board memory (the layout keeps
        // every slot inside the adapter's memory).
        if fabric
            .memory_mut(self.endpoint)
            .and_then(|m| m.write(addr, body).map_err(Into::into))
            .is_err()
        {
            self.rx_free.push(slot);
            self.counters.rx_overflow += 1;
            return;
        }
        let verdict = self.firmware.classify(body, fw_time(now));
        let flags = CompletionFlags::empty();
        let ready = self.firmware_free.max(now) + self.config.classify_time;
        self.firmware_free = ready;
        let f = RxFrame {
            slot,
            len: body.len() as u32,
            flags,
        };
        if ready <= now && self.classified.is_empty() {
            self.dispatch(sched, fabric, f, verdict);
        } else {
            if self.classified.is_empty() {
                self.wake(sched, ready);
            }
            self.classified.push_back((ready, f, verdict));
        }
        if let Some(t) = self.firmware.poll_at() {
            self.wake(sched, Instant::from_ns(t.as_nanos()));
        }
    }

    fn dispatch<S: NicScheduler>(
        &mut self,
        sched: &mut S,
        fabric: &mut Fabric,
        mut f: RxFrame,
        verdict: Verdict,
    ) {
        let (p, q) = match verdict {
            Verdict::Deliver { processor, queue } => (processor.0, queue.0),
            Verdict::Master { processor } => {
                f.flags |= CompletionFlags::MASTER;
                (processor.0, 0)
            }
            Verdict::Drop(_) => {
                self.counters.rx_firmware_drops += 1;
                self.rx_free.push(f.slot);
                return;
            }
            Verdict::Reply { frame } => {
                self.counters.rx_replies += 1;
                self.rx_free.push(f.slot);
                self.wire.push_back(WireFrame::Owned(frame));
                self.pump_wire(sched, fabric);
                return;
            }
        };
        let Some(proc_) = self.procs.get_mut(p as usize).filter(|x| x.up) else {
            self.counters.rx_processor_down += 1;
            self.rx_free.push(f.slot);
            return;
        };
        let Some(queue) = proc_
            .queues
            .get_mut(q as usize)
            .and_then(|x| x.as_mut())
            .filter(|x| !x.broken)
        else {
            self.counters.rx_no_queue += 1;
            self.rx_free.push(f.slot);
            return;
        };
        if queue.backlog.len() >= self.config.queue_backlog as usize {
            self.counters.rx_backlog_full += 1;
            self.rx_free.push(f.slot);
            return;
        }
        queue.backlog.push_back(f);
        let key = QKey {
            proc: p,
            queue: q,
            generation: queue.generation,
        };
        self.service_rx(sched, fabric, key);
    }

    fn queue_mut(&mut self, k: QKey) -> Option<&mut Queue> {
        self.procs
            .get_mut(k.proc as usize)
            .filter(|p| p.up)?
            .queues
            .get_mut(k.queue as usize)?
            .as_mut()
            .filter(|q| q.generation == k.generation && !q.broken)
    }

    fn pick_plane(&mut self) -> Option<Plane> {
        if self.planes.len() < 2 {
            return None;
        }
        self.next_plane = (self.next_plane + 1) % self.planes.len();
        Some(self.planes[self.next_plane])
    }

    fn start<S: NicScheduler>(
        &mut self,
        sched: &mut S,
        fabric: &mut Fabric,
        mut req: DmaRequest,
        purpose: Purpose,
    ) -> bool {
        if let Some(p) = self.pick_plane() {
            req = req.on_plane(p);
        }
        match fabric.start_dma(sched, self.endpoint, req) {
            Ok(id) => {
                // One fabric numbers its transfers in the order they start.
                let added = self.transfers.insert(id, purpose);
                debug_assert!(added.is_ok(), "transfer IDs grow");
                added.is_ok()
            }
            Err(e) => {
                log::debug!("adapter {}: DMA refused at start: {e}", self.config.name);
                false
            }
        }
    }

    fn service_rx<S: NicScheduler>(&mut self, sched: &mut S, fabric: &mut Fabric, k: QKey) {
        if !self.up {
            return; // a failed adapter does nothing until restored
        }
        let endpoint = self.procs[k.proc as usize].endpoint;
        loop {
            let Some(q) = self.queue_mut(k) else { return };
            let Some(&frame) = q.backlog.front() else {
                break;
            };
            let Some((index, d)) = q.rx.cache.pop_front() else {
                if q.rx.unfetched() == 0 && !q.rx.fetching {
                    // Nothing posted: every waiting frame is lost.
                    let lost: Vec<RxFrame> = q.backlog.drain(..).collect();
                    self.counters.rx_no_buffer += lost.len() as u64;
                    self.rx_free.extend(lost.iter().map(|f| f.slot));
                    return;
                }
                break;
            };
            let (off, cap, cookie) = (d.offset.get(), d.len.get(), d.cookie.get());
            let status = if d.flags.get() != 0 {
                Some(CompletionStatus::BadFlags)
            } else if cap == 0 || cap > u16::MAX as u32 {
                Some(CompletionStatus::BadLength)
            } else if (off as u64 + cap as u64) > q.buffers_len as u64 {
                Some(CompletionStatus::OutsideBuffers)
            } else if frame.len > cap {
                Some(CompletionStatus::Truncated)
            } else {
                None
            };
            if let Some(st) = status {
                if st == CompletionStatus::Truncated {
                    q.backlog.pop_front();
                    self.counters.rx_truncated += 1;
                    self.rx_free.push(frame.slot);
                } else {
                    q.counters.bad_descriptors += 1;
                    self.counters.bad_descriptors += 1;
                }
                let q = self.queue_mut(k).expect("queue checked above");
                q.cq_pending.push_back(completion(
                    CompletionKind::Rx,
                    st,
                    cookie,
                    0,
                    index,
                    CompletionFlags::empty(),
                ));
                continue;
            }
            q.backlog.pop_front();
            let remote = FabricAddr::new(q.buffers.key(), q.buffers.offset().wrapping_add(off));
            // Check the checksums only the queue asked for, and only those
            // the adapter implements.
            let mut flags = frame.flags;
            let checks = q.offloads & self.config.offloads;
            if !checks.is_empty() {
                let slot = self.layout.rx_slot(frame.slot);
                if let Ok(bytes) = fabric
                    .memory(self.endpoint)
                    .and_then(|m| m.slice(slot, frame.len as u64).map_err(Into::into))
                {
                    flags |= offload::check(bytes, checks);
                }
            }
            let req = DmaRequest::write(
                endpoint,
                self.layout.rx_slot(frame.slot),
                remote,
                frame.len as u64,
            );
            let Some(q) = self.queue_mut(k) else { return };
            let seq = q.rx_seq_started;
            q.rx_seq_started += 1;
            let purpose = Purpose::RxFrame {
                q: k,
                slot: frame.slot,
                index,
                cookie,
                len: frame.len,
                flags,
                seq,
            };
            if !self.start(sched, fabric, req, purpose) {
                if let Some(q) = self.queue_mut(k) {
                    // Nothing will complete this sequence number.
                    q.rx_seq_started -= 1;
                }
                self.counters.rx_dma_errors += 1;
                self.rx_free.push(frame.slot);
                self.fail_descriptor(
                    k,
                    CompletionKind::Rx,
                    CompletionStatus::DmaFailed,
                    cookie,
                    index,
                );
            }
        }
        self.fetch(sched, fabric, k, true);
        self.completions_added(sched, fabric, k);
    }

    /// Fetches descriptors of the RX (`rx`) or TX ring when the cache runs low.
    fn fetch<S: NicScheduler>(&mut self, sched: &mut S, fabric: &mut Fabric, k: QKey, rx: bool) {
        if !self.up {
            return; // a failed adapter does nothing until restored
        }
        let batch = self.config.fetch_batch;
        let endpoint = self.procs[k.proc as usize].endpoint;
        let local = if rx {
            self.layout.rx_fetch(k.proc, k.queue)
        } else {
            self.layout.tx_fetch(k.proc, k.queue)
        };
        let Some(q) = self.queue_mut(k) else { return };
        let r = if rx { &mut q.rx } else { &mut q.tx };
        if r.fetching || r.cache.len() as u32 >= batch.div_ceil(2) || r.unfetched() == 0 {
            return;
        }
        let first = r.head;
        let count = r.unfetched().min(batch).min(r.size - first);
        let remote = FabricAddr::new(
            r.base.key(),
            r.base.offset().wrapping_add(first * DESCRIPTOR_LEN as u32),
        );
        r.fetching = true;
        r.head = (first + count) % r.size;
        let req = DmaRequest::read(
            endpoint,
            local,
            remote,
            count as u64 * DESCRIPTOR_LEN as u64,
        );
        let purpose = if rx {
            Purpose::RxFetch { q: k, first, count }
        } else {
            Purpose::TxFetch { q: k, first, count }
        };
        if !self.start(sched, fabric, req, purpose) {
            self.queue_failed(k);
        }
    }

    fn queue_failed(&mut self, k: QKey) {
        if let Some(q) = self.queue_mut(k) {
            q.broken = true;
            let lost: Vec<RxFrame> = q.backlog.drain(..).collect();
            self.counters.queue_errors += 1;
            self.counters.rx_no_buffer += lost.len() as u64;
            self.rx_free.extend(lost.iter().map(|f| f.slot));
            // Counted in queue_errors; expected when a processor or a path
            // to it fails, so not a warning.
            log::info!(
                "adapter {}: queue {} of processor {} stopped after a failed ring access",
                self.config.name,
                k.queue,
                k.proc
            );
        }
    }

    fn cq_flush<S: NicScheduler>(&mut self, sched: &mut S, fabric: &mut Fabric, k: QKey) {
        let batch = self.config.cq_batch;
        let endpoint = self.procs[k.proc as usize].endpoint;
        let stage = self.layout.cq_stage(k.proc, k.queue);
        if !self.up {
            return;
        }
        let Some(q) = self.queue_mut(k) else { return };
        if q.cq_writing || q.cq_pending.is_empty() {
            return;
        }
        let free = q.cq_size - 1 - ring::ring_used(q.cq_head, q.cq_tail, q.cq_size);
        let n = (q.cq_pending.len() as u32)
            .min(batch)
            .min(free)
            .min(q.cq_size - q.cq_tail);
        if n == 0 {
            let first_stall = !q.cq_stalled;
            q.cq_stalled = true;
            let unsignalled = q.irq_pending > 0;
            if first_stall {
                self.counters.cq_full_stalls += 1;
            }
            // The ring is full: the processor must hear about what was
            // written, or it never consumes and frees the ring.
            if unsignalled {
                self.irq_send(sched, fabric, k);
            }
            return;
        }
        q.cq_stalled = false;
        let first = q.cq_tail;
        let phase = q.cq_phase;
        let mut bytes = Vec::with_capacity(n as usize * COMPLETION_LEN);
        q.cq_inflight.clear();
        for _ in 0..n {
            let c = q.cq_pending.pop_front().expect("n ≤ pending");
            q.cq_inflight.push(c);
            let mut w = c;
            let mut f = CompletionFlags::from_bits_truncate(w.flags.get());
            f.set(CompletionFlags::PHASE, phase);
            w.flags = f.bits().into();
            bytes.extend_from_slice(w.as_bytes());
        }
        q.cq_tail = (first + n) % q.cq_size;
        if q.cq_tail == 0 {
            q.cq_phase = !q.cq_phase;
        }
        q.cq_writing = true;
        let remote = FabricAddr::new(
            q.cq_base.key(),
            q.cq_base
                .offset()
                .wrapping_add(first * COMPLETION_LEN as u32),
        );
        if fabric
            .memory_mut(self.endpoint)
            .map(|m| m.write(stage, &bytes).is_ok())
            .unwrap_or(false)
        {
            let req = DmaRequest::write(endpoint, stage, remote, bytes.len() as u64);
            let purpose = Purpose::CqWrite {
                q: k,
                count: n,
                first,
                phase,
            };
            if self.start(sched, fabric, req, purpose) {
                return;
            }
        }
        self.queue_failed(k);
    }

    /// Completion entries were queued: decide whether this is a signal
    /// point (count threshold, or no time threshold at all) or arm the
    /// queue's timer. Entries are written at signal points, or whenever a
    /// full batch waits (completion moderation follows interrupt moderation).
    fn completions_added<S: NicScheduler>(&mut self, sched: &mut S, fabric: &mut Fabric, k: QKey) {
        let now = now_of(sched);
        let nic = self.index;
        let Some(q) = self.queue_mut(k) else { return };
        if q.cq_pending.is_empty() {
            return;
        }
        let waiting = q.cq_pending.len() as u32 + q.irq_pending;
        if q.coalesce_time == Duration::ZERO || waiting >= q.coalesce_count {
            q.signal = true;
        } else if !q.irq_armed {
            q.irq_armed = true;
            let at = now + q.coalesce_time;
            Scheduler::<NicEvent>::schedule(
                sched,
                at,
                self.component,
                NicEvent::IrqTimer {
                    nic,
                    processor: k.proc,
                    queue: k.queue,
                    generation: k.generation,
                },
            );
        }
        self.cq_progress(sched, fabric, k);
    }

    /// Writes waiting completion entries if the queue is at a signal point
    /// or a full batch waits; at a signal point with nothing left to write,
    /// sends the interrupt.
    fn cq_progress<S: NicScheduler>(&mut self, sched: &mut S, fabric: &mut Fabric, k: QKey) {
        let batch = self.config.cq_batch;
        let Some(q) = self.queue_mut(k) else { return };
        if q.cq_writing {
            return; // the write's completion continues
        }
        if !q.cq_pending.is_empty() && (q.signal || q.cq_pending.len() as u32 >= batch) {
            self.cq_flush(sched, fabric, k);
        } else if q.signal {
            self.irq_send(sched, fabric, k);
        }
    }

    fn irq_send<S: NicScheduler>(&mut self, sched: &mut S, fabric: &mut Fabric, k: QKey) {
        let endpoint = self.procs[k.proc as usize].endpoint;
        let stage = self.layout.irq_stage(k.proc, k.queue);
        if !self.up {
            return;
        }
        let Some(q) = self.queue_mut(k) else { return };
        q.signal = false;
        if q.irq_pending == 0 {
            return;
        }
        if q.irq_writing {
            q.irq_again = true;
            return;
        }
        let count = q.irq_pending;
        let msg = InterruptMessage {
            queue: k.queue.into(),
            cause: (InterruptCause::Completions as u16).into(),
            count: count.into(),
        };
        q.irq_pending = 0;
        q.irq_writing = true;
        q.counters.interrupts += 1;
        let irq = q.irq;
        self.counters.interrupts += 1;
        let ok = fabric
            .memory_mut(self.endpoint)
            .map(|m| m.write(stage, msg.as_bytes()).is_ok())
            .unwrap_or(false);
        if !ok
            || !self.start(
                sched,
                fabric,
                DmaRequest::write(endpoint, stage, irq, INTERRUPT_LEN as u64),
                Purpose::Irq { q: k, count },
            )
        {
            self.queue_failed(k);
        }
    }

    // ----- transmit -----

    fn service_tx<S: NicScheduler>(&mut self, sched: &mut S, fabric: &mut Fabric, k: QKey) {
        if !self.up {
            return; // a failed adapter does nothing until restored
        }
        let endpoint = self.procs[k.proc as usize].endpoint;
        let max_len = (self.config.mac.max_frame() - FCS_LEN) as u32;
        let offloads = self.config.offloads;
        loop {
            if self.tx_free.is_empty() {
                if let Some(q) = self.queue_mut(k) {
                    if !q.tx_waiting && (!q.tx.cache.is_empty() || q.tx.unfetched() > 0) {
                        q.tx_waiting = true;
                        self.tx_waiting.push_back((k.proc, k.queue));
                    }
                }
                break;
            }
            let Some(q) = self.queue_mut(k) else { return };
            let Some((index, d)) = q.tx.cache.pop_front() else {
                break;
            };
            let (off, len, cookie) = (d.offset.get(), d.len.get(), d.cookie.get());
            let flags = TxFlags::from_bits(d.flags.get());
            let status = match flags {
                None => Some(CompletionStatus::BadFlags),
                Some(f)
                    if !(offloads & q.offloads)
                        .contains(Offloads::from_bits_truncate(f.bits())) =>
                {
                    Some(CompletionStatus::BadFlags)
                }
                _ if len < mac::ETH_HEADER as u32 || len > max_len => {
                    Some(CompletionStatus::BadLength)
                }
                _ if off as u64 + len as u64 > q.buffers_len as u64 => {
                    Some(CompletionStatus::OutsideBuffers)
                }
                _ => None,
            };
            if let Some(st) = status {
                q.counters.bad_descriptors += 1;
                q.cq_pending.push_back(completion(
                    CompletionKind::Tx,
                    st,
                    cookie,
                    0,
                    index,
                    CompletionFlags::empty(),
                ));
                self.counters.bad_descriptors += 1;
                continue;
            }
            let remote = FabricAddr::new(q.buffers.key(), q.buffers.offset().wrapping_add(off));
            let seq = q.tx_seq_started;
            q.tx_seq_started += 1;
            let slot = self.tx_free.pop().expect("checked non-empty");
            let req = DmaRequest::read(endpoint, self.layout.tx_slot(slot), remote, len as u64);
            let purpose = Purpose::TxRead {
                q: k,
                slot,
                index,
                cookie,
                len,
                flags: flags.unwrap_or_default(),
                seq,
            };
            if !self.start(sched, fabric, req, purpose) {
                if let Some(q) = self.queue_mut(k) {
                    // Nothing will complete this sequence number.
                    q.tx_seq_started -= 1;
                }
                self.tx_free.push(slot);
                self.counters.tx_dma_errors += 1;
                self.fail_descriptor(
                    k,
                    CompletionKind::Tx,
                    CompletionStatus::DmaFailed,
                    cookie,
                    index,
                );
            }
        }
        self.fetch(sched, fabric, k, false);
        self.completions_added(sched, fabric, k);
    }

    fn pump_wire<S: NicScheduler>(&mut self, sched: &mut S, fabric: &mut Fabric) {
        if !self.up {
            return; // a failed adapter does nothing until restored
        }
        let now = now_of(sched);
        let mut freed = false;
        while self.wire_free <= now {
            let Some(w) = self.wire.pop_front() else {
                break;
            };
            let mut frame = match w {
                WireFrame::Owned(f) => f,
                WireFrame::Slot { slot, len } => {
                    let mut v = vec![0u8; len as usize];
                    let _ = fabric
                        .memory(self.endpoint)
                        .map(|m| m.read(self.layout.tx_slot(slot), &mut v));
                    self.tx_free.push(slot);
                    freed = true;
                    v
                }
            };
            mac::pad_to_minimum(&mut frame);
            mac::append_fcs(&mut frame);
            self.wire_free = now + self.config.mac.speed.frame_time(frame.len());
            self.counters.tx_frames += 1;
            self.counters.tx_bytes += frame.len() as u64;
            self.outbox.push(frame);
        }
        if !self.wire.is_empty() {
            self.wake(sched, self.wire_free);
        }
        if freed {
            while !self.tx_free.is_empty() {
                let Some((p, q)) = self.tx_waiting.pop_front() else {
                    break;
                };
                let Some(queue) = self.procs[p as usize].queues[q as usize].as_mut() else {
                    continue;
                };
                queue.tx_waiting = false;
                let k = QKey {
                    proc: p,
                    queue: q,
                    generation: queue.generation,
                };
                self.service_tx(sched, fabric, k);
            }
        }
    }

    // ----- completions of the adapter's own transfers -----

    /// A DMA transfer the adapter started has ended.
    pub fn on_dma_done<S: NicScheduler>(
        &mut self,
        sched: &mut S,
        fabric: &mut Fabric,
        done: &DmaCompletion,
    ) {
        let Some(purpose) = self.transfers.remove(&done.id) else {
            return;
        };
        let ok = done.result.is_ok();
        // The adapter itself failed with the transfer in flight.
        let aborted = done.result == Err(snet_fabric::network::DmaError::RequesterDown);
        match purpose {
            Purpose::RxFrame {
                q: k,
                slot,
                index,
                cookie,
                len,
                flags,
                seq,
            } => {
                self.rx_free.push(slot);
                let status = if ok {
                    self.counters.rx_delivered += 1;
                    self.counters.rx_delivered_bytes += len as u64;
                    CompletionStatus::Ok
                } else {
                    self.counters.rx_dma_errors += 1;
                    CompletionStatus::DmaFailed
                };
                if let Some(q) = self.queue_mut(k) {
                    if ok {
                        q.counters.rx_delivered += 1;
                    }
                    let at = (seq - q.rx_seq_completed) as usize;
                    if q.rx_reorder.len() <= at {
                        q.rx_reorder.resize(at + 1, None);
                    }
                    q.rx_reorder[at] = Some(completion(
                        CompletionKind::Rx,
                        status,
                        cookie,
                        if ok { len } else { 0 },
                        index,
                        flags,
                    ));
                    while let Some(Some(c)) = q.rx_reorder.front() {
                        q.cq_pending.push_back(*c);
                        q.rx_reorder.pop_front();
                        q.rx_seq_completed += 1;
                    }
                    self.completions_added(sched, fabric, k);
                }
            }
            Purpose::RxFetch { q: k, first, .. } | Purpose::TxFetch { q: k, first, .. }
                if aborted =>
            {
                // The adapter failed: fetch these descriptors again once restored.
                let rx = matches!(purpose, Purpose::RxFetch { .. });
                if let Some(q) = self.queue_mut(k) {
                    let r = if rx { &mut q.rx } else { &mut q.tx };
                    r.head = first;
                    r.fetching = false;
                }
            }
            Purpose::RxFetch { q: k, first, count } | Purpose::TxFetch { q: k, first, count } => {
                let rx = matches!(purpose, Purpose::RxFetch { .. });
                if !ok {
                    self.queue_failed(k);
                    return;
                }
                let local = if rx {
                    self.layout.rx_fetch(k.proc, k.queue)
                } else {
                    self.layout.tx_fetch(k.proc, k.queue)
                };
                let mut raw = vec![0u8; count as usize * DESCRIPTOR_LEN];
                let read = fabric
                    .memory(self.endpoint)
                    .map(|m| m.read(local, &mut raw).is_ok());
                let Some(q) = self.queue_mut(k) else { return };
                let r = if rx { &mut q.rx } else { &mut q.tx };
                r.fetching = false;
                if read != Ok(true) {
                    return;
                }
                for (i, chunk) in raw.chunks_exact(DESCRIPTOR_LEN).enumerate() {
                    if let Ok(d) = Descriptor::read_from_bytes(chunk) {
                        r.cache.push_back(((first + i as u32) % r.size, d));
                    }
                }
                if rx {
                    self.service_rx(sched, fabric, k);
                } else {
                    self.service_tx(sched, fabric, k);
                }
            }
            Purpose::TxRead {
                q: k,
                slot,
                index,
                cookie,
                len,
                flags,
                seq,
            } => {
                let alive = self.queue_mut(k).is_some();
                let outcome = if !ok || !alive {
                    self.tx_free.push(slot);
                    if !ok {
                        self.counters.tx_dma_errors += 1;
                    }
                    TxOutcome::Failed(completion(
                        CompletionKind::Tx,
                        CompletionStatus::DmaFailed,
                        cookie,
                        0,
                        index,
                        CompletionFlags::empty(),
                    ))
                } else {
                    if !flags.is_empty() {
                        if let Ok(m) = fabric.memory_mut(self.endpoint) {
                            if let Ok(bytes) = m.slice_mut(self.layout.tx_slot(slot), len as u64) {
                                offload::fill(bytes, flags);
                            }
                        }
                    }
                    TxOutcome::Sent {
                        slot,
                        len,
                        done: completion(
                            CompletionKind::Tx,
                            CompletionStatus::Ok,
                            cookie,
                            len,
                            index,
                            CompletionFlags::empty(),
                        ),
                    }
                };
                if let Some(q) = self.queue_mut(k) {
                    let at = (seq - q.tx_seq_completed) as usize;
                    if q.tx_reorder.len() <= at {
                        q.tx_reorder.resize(at + 1, None);
                    }
                    q.tx_reorder[at] = Some(outcome);
                    // Release every frame whose turn has come.
                    while let Some(o) = self.queue_mut(k).and_then(Queue::next_tx_ready) {
                        let q = self.queue_mut(k).expect("just read");
                        match o {
                            TxOutcome::Sent { slot, len, done } => {
                                q.counters.tx_sent += 1;
                                q.cq_pending.push_back(done);
                                self.wire.push_back(WireFrame::Slot { slot, len });
                            }
                            TxOutcome::Failed(c) => q.cq_pending.push_back(c),
                        }
                    }
                } else if let TxOutcome::Sent { slot, .. } = outcome {
                    self.tx_free.push(slot);
                }
                self.pump_wire(sched, fabric);
                self.completions_added(sched, fabric, k);
                if ok && alive {
                    self.service_tx(sched, fabric, k);
                }
            }
            Purpose::CqWrite {
                q: k, first, phase, ..
            } if aborted => {
                // Write these entries again once restored.
                if let Some(q) = self.queue_mut(k) {
                    q.cq_writing = false;
                    q.cq_tail = first;
                    q.cq_phase = phase;
                    for c in q.cq_inflight.drain(..).rev() {
                        q.cq_pending.push_front(c);
                    }
                }
            }
            Purpose::CqWrite { q: k, count, .. } => {
                let batch = self.config.cq_batch;
                if !ok {
                    self.queue_failed(k);
                    return;
                }
                self.counters.completions += count as u64;
                let Some(q) = self.queue_mut(k) else { return };
                q.cq_writing = false;
                q.cq_inflight.clear();
                q.counters.completions += count as u64;
                q.irq_pending += count;
                if q.cq_pending.len() as u32 >= batch {
                    // A full batch waits: write it first.
                    self.cq_flush(sched, fabric, k);
                    return;
                }
                if q.signal {
                    // The signal point's entries are in the ring: interrupt
                    // now. Entries that came during the write belong to the
                    // next moderation period (count or time threshold).
                    self.irq_send(sched, fabric, k);
                    self.completions_added(sched, fabric, k);
                }
            }
            Purpose::Irq { q: k, count } => {
                let Some(q) = self.queue_mut(k) else { return };
                q.irq_writing = false;
                if aborted {
                    // Signal these completions again once restored.
                    q.irq_pending += count;
                    return;
                }
                if std::mem::take(&mut q.irq_again) {
                    self.irq_send(sched, fabric, k);
                }
            }
            Purpose::Status => {}
        }
    }

    /// Handles one of the adapter's events.
    pub fn on_event<S: NicScheduler>(&mut self, sched: &mut S, fabric: &mut Fabric, ev: NicEvent) {
        if !self.up {
            return; // a failed adapter does nothing until restored
        }
        match ev {
            NicEvent::IrqTimer {
                processor,
                queue,
                generation,
                ..
            } => {
                let k = QKey {
                    proc: processor,
                    queue,
                    generation,
                };
                if let Some(q) = self.queue_mut(k) {
                    q.irq_armed = false;
                    q.signal = true;
                    self.cq_progress(sched, fabric, k);
                }
            }
        }
    }

    /// The adapter's wake-up: frames whose classification is done, the wire,
    /// firmware timers.
    pub fn poll<S: NicScheduler>(&mut self, sched: &mut S, fabric: &mut Fabric) {
        if !self.up {
            return; // a failed adapter does nothing until restored
        }
        let now = now_of(sched);
        while let Some(&(ready, _, _)) = self.classified.front() {
            if ready > now {
                self.wake(sched, ready);
                break;
            }
            let (_, f, v) = self.classified.pop_front().expect("front exists");
            self.dispatch(sched, fabric, f, v);
        }
        self.queue_firmware_frames();
        self.pump_wire(sched, fabric);
        if self
            .firmware
            .poll_at()
            .is_some_and(|t| t.as_nanos() <= now.as_ns())
        {
            self.firmware.poll(fw_time(now));
        }
        if let Some(t) = self.firmware.poll_at() {
            self.wake(sched, Instant::from_ns(t.as_nanos()).max(now));
        }
    }

    // ----- doorbells, commands, mailbox -----

    /// Handles the writes processors made into the CSR windows (the fabric
    /// signalled an interrupt on the adapter's endpoint).
    pub fn on_interrupts<S: NicScheduler>(&mut self, sched: &mut S, fabric: &mut Fabric) {
        while let Ok(Some(entry)) = fabric.pop_interrupt(self.endpoint) {
            let Some(p) = self.processor_index(entry.requester) else {
                self.counters.bad_register_writes += 1;
                continue;
            };
            if !self.up || !self.procs[p as usize].up {
                continue;
            }
            if entry.key != self.procs[p as usize].windows.csr.key() {
                self.counters.bad_register_writes += 1;
                continue;
            }
            let end = entry.offset as u64 + entry.len as u64;
            let mut off = entry.offset as u64;
            let mut any = false;
            while off < end {
                match Register::at(off as u32) {
                    Some(r) if off + r.len() as u64 <= end => {
                        any = true;
                        self.register_written(sched, fabric, p, r);
                        off += r.len() as u64;
                    }
                    _ => off += 4 - off % 4,
                }
            }
            if !any {
                self.counters.bad_register_writes += 1;
            }
        }
    }

    fn read_csr<T: FromBytes>(&self, fabric: &Fabric, p: u16, offset: u32) -> Option<T> {
        let m = fabric.memory(self.endpoint).ok()?;
        let bytes = m
            .slice(
                ProcAddr(self.layout.csr(p).0 + offset as u64),
                size_of::<T>() as u64,
            )
            .ok()?;
        T::read_from_bytes(bytes).ok()
    }

    fn register_written<S: NicScheduler>(
        &mut self,
        sched: &mut S,
        fabric: &mut Fabric,
        p: u16,
        r: Register,
    ) {
        match r {
            Register::RxTail(q) | Register::TxTail(q) | Register::CqHead(q) => {
                let Some(v) = self.read_csr::<zerocopy::little_endian::U32>(fabric, p, r.offset())
                else {
                    return;
                };
                let v = v.get();
                let Some(queue) = self.procs[p as usize]
                    .queues
                    .get_mut(q as usize)
                    .and_then(|x| x.as_mut())
                else {
                    self.counters.bad_doorbells += 1;
                    return;
                };
                let k = QKey {
                    proc: p,
                    queue: q,
                    generation: queue.generation,
                };
                match r {
                    Register::RxTail(_) if v < queue.rx.size => {
                        queue.rx.tail = v;
                        self.fetch(sched, fabric, k, true);
                    }
                    Register::TxTail(_) if v < queue.tx.size => {
                        queue.tx.tail = v;
                        self.fetch(sched, fabric, k, false);
                    }
                    Register::CqHead(_) if v < queue.cq_size => {
                        queue.cq_head = v;
                        self.cq_progress(sched, fabric, k);
                    }
                    _ => self.counters.bad_doorbells += 1,
                }
            }
            Register::Command => {
                let Some(db) = self.read_csr::<CommandDoorbell>(fabric, p, regs::COMMAND) else {
                    return;
                };
                self.counters.commands += 1;
                let (status, detail) = self.command(sched, fabric, p, &db);
                if status != StatusCode::Ok {
                    self.counters.command_errors += 1;
                }
                let st = CommandStatus {
                    seq: db.seq,
                    source: (StatusSource::Command as u16).into(),
                    status: (status as u16).into(),
                    detail: detail.into(),
                    code: db.code,
                    queue: db.queue,
                };
                self.reply(sched, fabric, p, FabricAddr(db.reply.get()), st);
            }
            Register::Mailbox => {
                let Some(db) = self.read_csr::<MailboxDoorbell>(fabric, p, regs::MAILBOX) else {
                    return;
                };
                let (status, detail) = self.mailbox(sched, fabric, p, db.len.get());
                if status == StatusCode::Ok {
                    self.counters.mailbox_accepted += 1;
                } else {
                    self.counters.mailbox_rejected += 1;
                }
                let st = CommandStatus {
                    seq: db.seq,
                    source: (StatusSource::Mailbox as u16).into(),
                    status: (status as u16).into(),
                    detail: detail.into(),
                    code: 0.into(),
                    queue: 0.into(),
                };
                self.reply(sched, fabric, p, FabricAddr(db.reply.get()), st);
            }
        }
    }

    fn reply<S: NicScheduler>(
        &mut self,
        sched: &mut S,
        fabric: &mut Fabric,
        p: u16,
        to: FabricAddr,
        st: CommandStatus,
    ) {
        let n = self.procs[p as usize].status_next;
        self.procs[p as usize].status_next = n.wrapping_add(1);
        let stage = self.layout.status(p, n);
        let endpoint = self.procs[p as usize].endpoint;
        if fabric
            .memory_mut(self.endpoint)
            .map(|m| m.write(stage, st.as_bytes()).is_ok())
            .unwrap_or(false)
        {
            self.start(
                sched,
                fabric,
                DmaRequest::write(endpoint, stage, to, 16),
                Purpose::Status,
            );
        }
    }

    fn command<S: NicScheduler>(
        &mut self,
        sched: &mut S,
        fabric: &mut Fabric,
        p: u16,
        db: &CommandDoorbell,
    ) -> (StatusCode, u32) {
        let Some(code) = CommandCode::from_code(db.code.get()) else {
            return (StatusCode::UnknownCommand, db.code.get() as u32);
        };
        let qn = db.queue.get();
        if qn >= self.config.queues_per_processor {
            return (
                StatusCode::BadQueue,
                self.config.queues_per_processor as u32,
            );
        }
        let cfg = {
            let Ok(m) = fabric.memory(self.endpoint) else {
                return (StatusCode::NoResources, 0);
            };
            let at = ProcAddr(self.layout.staging(p).0 + regs::config_offset(qn) as u64);
            match m.slice(at, size_of::<QueueConfig>() as u64) {
                Ok(b) => QueueConfig::read_from_bytes(b).unwrap_or_default(),
                Err(_) => return (StatusCode::NoResources, 0),
            }
        };
        let slot = &mut self.procs[p as usize].queues[qn as usize];
        match code {
            CommandCode::CreateQueue => {
                if slot.is_some() {
                    return (StatusCode::QueueExists, 0);
                }
                for s in [cfg.rx_size.get(), cfg.tx_size.get(), cfg.cq_size.get()] {
                    if !ring::ring_size_ok(s) {
                        return (StatusCode::BadRingSize, s);
                    }
                }
                if cfg.coalesce_count.get() == 0 || cfg.reserved.get() != 0 {
                    return (StatusCode::BadConfig, 0);
                }
                // Every region must fit its window's 32-bit offset space, so
                // no offset the adapter adds later can wrap.
                let fits = |base: u64, len: u64| (base as u32 as u64) + len <= 1 << 32;
                let regions = [
                    (cfg.buffers.get(), cfg.buffers_len.get() as u64),
                    (
                        cfg.rx_ring.get(),
                        cfg.rx_size.get() as u64 * DESCRIPTOR_LEN as u64,
                    ),
                    (
                        cfg.tx_ring.get(),
                        cfg.tx_size.get() as u64 * DESCRIPTOR_LEN as u64,
                    ),
                    (
                        cfg.cq_ring.get(),
                        cfg.cq_size.get() as u64 * COMPLETION_LEN as u64,
                    ),
                    (cfg.irq.get(), INTERRUPT_LEN as u64),
                ];
                if let Some(i) = regions.iter().position(|&(b, l)| !fits(b, l)) {
                    return (StatusCode::BadConfig, 100 + i as u32);
                }
                let Some(offloads) = Offloads::from_bits(cfg.offloads.get()) else {
                    return (StatusCode::BadConfig, cfg.offloads.get());
                };
                let generation = self.next_generation;
                self.next_generation = self.next_generation.wrapping_add(1).max(1);
                *slot = Some(Queue {
                    generation,
                    buffers: FabricAddr(cfg.buffers.get()),
                    buffers_len: cfg.buffers_len.get(),
                    irq: FabricAddr(cfg.irq.get()),
                    offloads,
                    rx: Ring::new(FabricAddr(cfg.rx_ring.get()), cfg.rx_size.get()),
                    tx: Ring::new(FabricAddr(cfg.tx_ring.get()), cfg.tx_size.get()),
                    backlog: VecDeque::new(),
                    cq_base: FabricAddr(cfg.cq_ring.get()),
                    cq_size: cfg.cq_size.get(),
                    cq_head: 0,
                    cq_tail: 0,
                    cq_phase: true,
                    cq_pending: VecDeque::new(),
                    rx_seq_started: 0,
                    rx_seq_completed: 0,
                    rx_reorder: VecDeque::new(),
                    tx_seq_started: 0,
                    tx_seq_completed: 0,
                    tx_reorder: VecDeque::new(),
                    cq_inflight: Vec::new(),
                    cq_writing: false,
                    cq_stalled: false,
                    coalesce_count: cfg.coalesce_count.get(),
                    coalesce_time: Duration::from_ns(cfg.coalesce_ns.get() as u64),
                    irq_pending: 0,
                    signal: false,
                    irq_armed: false,
                    irq_writing: false,
                    irq_again: false,
                    tx_waiting: false,
                    broken: false,
                    counters: QueueCounters::default(),
                });
                (StatusCode::Ok, generation)
            }
            CommandCode::DestroyQueue => match slot.take() {
                Some(q) => {
                    self.counters.rx_no_buffer += q.backlog.len() as u64;
                    self.rx_free.extend(q.backlog.iter().map(|f| f.slot));
                    self.tx_free.extend(q.held_tx_slots());
                    (StatusCode::Ok, 0)
                }
                None => (StatusCode::NoSuchQueue, 0),
            },
            CommandCode::SetCoalescing => match slot.as_mut() {
                Some(q) if cfg.coalesce_count.get() > 0 => {
                    q.coalesce_count = cfg.coalesce_count.get();
                    q.coalesce_time = Duration::from_ns(cfg.coalesce_ns.get() as u64);
                    let k = QKey {
                        proc: p,
                        queue: qn,
                        generation: q.generation,
                    };
                    if q.irq_pending + q.cq_pending.len() as u32 >= q.coalesce_count {
                        q.signal = true;
                        self.cq_progress(sched, fabric, k);
                    }
                    (StatusCode::Ok, 0)
                }
                Some(_) => (StatusCode::BadConfig, 0),
                None => (StatusCode::NoSuchQueue, 0),
            },
        }
    }

    fn mailbox<S: NicScheduler>(
        &mut self,
        sched: &mut S,
        fabric: &mut Fabric,
        p: u16,
        len: u32,
    ) -> (StatusCode, u32) {
        if len > regs::MAILBOX_MAX {
            return (StatusCode::TooLong, regs::MAILBOX_MAX);
        }
        let now = now_of(sched);
        let bytes = match fabric.memory(self.endpoint).and_then(|m| {
            m.slice(
                ProcAddr(self.layout.staging(p).0 + regs::MAILBOX_BODY as u64),
                len as u64,
            )
            .map(<[u8]>::to_vec)
            .map_err(Into::into)
        }) {
            Ok(b) => b,
            Err(_) => return (StatusCode::TooLong, regs::MAILBOX_MAX),
        };
        let reject =
            |r: snet_firmware::control::RejectReason| (StatusCode::Rejected, r.index() as u32);
        let env = match Envelope::parse(&bytes) {
            Ok(e) => e,
            Err(e) => {
                let ce = snet_firmware::control::ControlError::Parse(e);
                return reject(ce.reason());
            }
        };
        // A processor speaks only for itself.
        if env.sender != ProcessorId(p) {
            return reject(snet_firmware::control::RejectReason::Unauthorised);
        }
        let r = self.firmware.apply_envelope(&env, fw_time(now));
        if self.queue_firmware_frames() {
            self.wake(sched, now);
        }
        if let Some(t) = self.firmware.poll_at() {
            self.wake(sched, Instant::from_ns(t.as_nanos()).max(now));
        }
        let _ = fabric;
        match r {
            Ok(()) => (StatusCode::Ok, 0),
            Err(e) => reject(e.reason()),
        }
    }

    /// Queues an error completion for a descriptor (the buffer goes back to
    /// the processor), if the queue still exists.
    fn fail_descriptor(
        &mut self,
        k: QKey,
        kind: CompletionKind,
        status: CompletionStatus,
        cookie: u32,
        index: u32,
    ) {
        if let Some(q) = self.queue_mut(k) {
            let c = completion(kind, status, cookie, 0, index, CompletionFlags::empty());
            q.cq_pending.push_back(c);
        }
    }

    // ----- failures -----

    /// The fabric reported processor endpoint `p` down: the adapter stops
    /// DMA to it, drops its queues and frames, and tells the firmware (its
    /// connections are then answered with RST), then sends the RSTs the
    /// firmware queued for the clients of those connections. Transfers to
    /// other processors are untouched.
    pub fn processor_down<S: NicScheduler>(&mut self, sched: &mut S, p: EndpointId) {
        let now = now_of(sched);
        let Some(i) = self.processor_index(p) else {
            return;
        };
        let proc_ = &mut self.procs[i as usize];
        if !proc_.up {
            return;
        }
        proc_.up = false;
        self.counters.processors_failed += 1;
        for q in proc_.queues.iter_mut() {
            if let Some(q) = q.take() {
                self.counters.rx_processor_down += q.backlog.len() as u64;
                self.rx_free.extend(q.backlog.iter().map(|f| f.slot));
                self.tx_free.extend(q.held_tx_slots());
            }
        }
        self.tx_waiting.retain(|&(pp, _)| pp != i);
        self.firmware.processor_failed(ProcessorId(i), fw_time(now));
        if self.queue_firmware_frames() {
            self.wake(sched, now);
        }
    }

    /// Moves the frames the firmware queued on its own (the RSTs of a
    /// processor failure) to the port's transmit queue, where they go out
    /// like the firmware's replies (padded, with FCS) at the next wake-up.
    /// Returns whether there were any.
    fn queue_firmware_frames(&mut self) -> bool {
        if !self.firmware.has_frames() {
            return false;
        }
        let frames = self.firmware.take_frames();
        self.counters.tx_firmware_frames += frames.len() as u64;
        self.wire.extend(frames.into_iter().map(WireFrame::Owned));
        true
    }

    /// Processor endpoint `p` runs again (its queues must be created anew;
    /// the processor re-registers with the firmware itself).
    pub fn processor_up(&mut self, p: EndpointId) {
        if let Some(i) = self.processor_index(p) {
            self.procs[i as usize].up = true;
        }
    }

    /// Fails the whole adapter: its port goes silent and it does nothing;
    /// its queues stay configured. The fabric ends its transfers in flight;
    /// descriptor fetches, completion writes and interrupts among them are
    /// done again after [`Nic::restore`].
    pub fn fail(&mut self) {
        self.up = false;
    }

    /// Restores a failed adapter: it re-reads every doorbell, fetches
    /// descriptors, writes waiting completions, raises due interrupts and
    /// sends what waits for the wire. Frames that were in its buffers when
    /// it failed are lost (their descriptors complete with `dma_failed`).
    pub fn restore<S: NicScheduler>(&mut self, sched: &mut S, fabric: &mut Fabric) {
        if self.up {
            return;
        }
        self.up = true;
        let mut keys = Vec::new();
        for (p, proc_) in self.procs.iter_mut().enumerate() {
            if !proc_.up {
                continue;
            }
            for (qn, q) in proc_.queues.iter_mut().enumerate() {
                if let Some(q) = q.as_mut().filter(|q| !q.broken) {
                    q.irq_armed = false;
                    q.irq_writing = false;
                    keys.push(QKey {
                        proc: p as u16,
                        queue: qn as u16,
                        generation: q.generation,
                    });
                }
            }
        }
        for k in keys {
            for r in [
                Register::RxTail(k.queue),
                Register::TxTail(k.queue),
                Register::CqHead(k.queue),
            ] {
                self.register_written(sched, fabric, k.proc, r);
            }
            self.service_rx(sched, fabric, k);
            self.service_tx(sched, fabric, k);
            if let Some(q) = self.queue_mut(k) {
                if q.irq_pending > 0 {
                    q.signal = true;
                }
            }
            self.completions_added(sched, fabric, k);
            self.cq_progress(sched, fabric, k);
        }
        let now = now_of(sched);
        self.wake(sched, now);
    }
}

fn completion(
    kind: CompletionKind,
    status: CompletionStatus,
    cookie: u32,
    len: u32,
    index: u32,
    flags: CompletionFlags,
) -> Completion {
    Completion {
        cookie: cookie.into(),
        len: len.into(),
        kind: kind as u8,
        status: status as u8,
        flags: flags.bits().into(),
        index: index.into(),
    }
}
