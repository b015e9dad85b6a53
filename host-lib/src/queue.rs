//! A processor's queue pair with one adapter: its rings, its buffer pool,
//! and the zero-copy send and receive API.
//!
//! ## Layout in processor memory
//! [`QueuePair::create`] carves page-aligned regions from the processor's
//! memory (starting at the [`QueueSetup::base`] it is given):
//!
//! | region | size | adapter access |
//! |---|---|---|
//! | RX ring | `rx_ring × 16` | read |
//! | TX ring | `tx_ring × 16` | read |
//! | completion ring | `cq_ring × 16` | write |
//! | interrupt slot | one page | write + interrupt |
//! | admin slot (command and mailbox replies) | one page | write + interrupt |
//! | buffer pool | `buffers × chunk` | read + write |
//! | doorbell and mailbox staging | 1 page + the mailbox size | none (the processor's own) |
//!
//! Each region the adapter may reach gets one window through a
//! [`DmaMapper`]; nothing else of the processor's memory is reachable.
//!
//! ## Buffer ownership
//! Every chunk of the pool is, at any moment, in exactly one place: free,
//! posted to the adapter (RX or TX), received and lent to the application
//! ([`RxBuf`]), or taken by the application for sending ([`TxBuffer`]).
//! Nothing of the payload is ever copied by the host: the adapter writes
//! frames into posted chunks and reads frames from them.

use std::collections::VecDeque;

use snet_fabric::avt::Access;
use snet_fabric::engine::{Lift, Traced};
use snet_fabric::memory::ProcAddr;
use snet_fabric::network::{DmaCompletion, DmaRequest, TransferId};
use snet_fabric::{EndpointId, FabricAddr};
use snet_firmware::control::{Envelope, RejectReason};
use snet_nic_model::Cluster;
use snet_nic_model::regs::{
    self, AdapterWindows, CommandCode, CommandDoorbell, CommandStatus, MailboxDoorbell,
    QueueConfig, Register, StatusCode, StatusSource,
};
use snet_nic_model::ring::{
    self, COMPLETION_LEN, Completion, CompletionFlags, CompletionKind, CompletionStatus,
    DESCRIPTOR_LEN, Descriptor, Offloads, TxFlags,
};
use zerocopy::{FromBytes, IntoBytes};

use crate::mapper::{DeviceAddr, DmaMapper, FabricMapper, HostRegion, MapError};

/// Bytes of a page: regions are page-aligned.
pub const PAGE: u64 = 4096;

/// Bytes of the processor-side copy of a control message before it goes
/// to the adapter's mailbox.
const MAILBOX_STAGING: u64 = regs::MAILBOX_MAX as u64;

/// How to lay out a queue pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSetup {
    /// The queue number on the adapter.
    pub queue: u16,
    /// Where the queue pair's regions start in processor memory (page-aligned).
    pub base: ProcAddr,
    /// Chunks in the buffer pool.
    pub buffers: u32,
    /// Bytes per chunk (≥ the largest frame, a multiple of 64).
    pub chunk: u32,
    /// RX ring slots (a power of two).
    pub rx_ring: u32,
    /// TX ring slots.
    pub tx_ring: u32,
    /// Completion ring slots (at least `rx_ring + tx_ring`, so completions
    /// never wait for room).
    pub cq_ring: u32,
    /// Returned RX chunks are reposted, with one RX doorbell, once this many
    /// wait (at most a quarter of the ring), or at once when fewer than
    /// half the ring's slots are posted. 1 reposts at every poll.
    pub rx_refill_batch: u32,
    /// Interrupt after this many completions …
    pub coalesce_count: u32,
    /// … or this many ns after the first unsignalled one.
    pub coalesce_ns: u32,
    /// Checksum offloads asked for.
    pub offloads: Offloads,
}

impl Default for QueueSetup {
    fn default() -> Self {
        QueueSetup {
            queue: 0,
            base: ProcAddr(0),
            buffers: 1024,
            chunk: 2048,
            rx_ring: 512,
            tx_ring: 256,
            cq_ring: 1024,
            rx_refill_batch: 32,
            coalesce_count: 32,
            coalesce_ns: 10_000,
            offloads: Offloads::CSUM_IP | Offloads::CSUM_L4,
        }
    }
}

impl QueueSetup {
    /// Bytes of processor memory the queue pair uses from `base`.
    pub fn footprint(&self) -> u64 {
        Regions::new(self).end - self.base.0
    }
}

/// Why a queue pair could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A setting out of range.
    #[error("queue setup: {0}")]
    Setup(String),
    /// A window could not be opened.
    #[error("mapping {what}: {source}")]
    Map {
        /// Which region.
        what: &'static str,
        /// Why.
        source: MapError,
    },
    /// The processor's memory could not be written.
    #[error("processor memory: {0}")]
    Memory(String),
    /// The adapter is not serving this processor.
    #[error("adapter {nic} does not serve {processor}")]
    NotServed {
        /// Adapter index.
        nic: usize,
        /// The processor.
        processor: EndpointId,
    },
    /// The fabric refused a transfer at once.
    #[error("fabric: {0}")]
    Dma(String),
}

/// Why a send was refused; the buffer comes back to try again.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The TX ring is full (the adapter has not read earlier frames yet).
    #[error("the TX ring is full")]
    RingFull(TxBuffer),
    /// Length zero or longer than the chunk.
    #[error("length {len} is not in 14..={max}")]
    BadLength {
        /// The buffer.
        buf: TxBuffer,
        /// The length asked for.
        len: u32,
        /// The chunk size.
        max: u32,
    },
    /// The queue pair is not ready (still being created, or failed).
    #[error("the queue pair is not ready")]
    NotReady(TxBuffer),
}

impl SendError {
    /// The buffer the refused send carried.
    pub fn into_buffer(self) -> TxBuffer {
        match self {
            SendError::RingFull(b)
            | SendError::NotReady(b)
            | SendError::BadLength { buf: b, .. } => b,
        }
    }
}

/// State of a queue pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueState {
    /// The create command is on its way.
    Creating,
    /// The adapter accepted the queue.
    Ready,
    /// The adapter refused it.
    Refused(StatusCode),
}

/// The outcome of a control message sent through the mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlOutcome {
    /// The firmware applied it.
    Accepted,
    /// The firmware refused it.
    Rejected(RejectReason),
    /// The adapter refused it before the firmware (too long).
    Refused(StatusCode),
}

/// A chunk the application took for sending. Write the frame into
/// [`QueuePair::buffer_mut`], then [`QueuePair::send`] it, or give it back
/// with [`QueuePair::release`].
#[must_use = "a TxBuffer must be sent or released, or its chunk is lost"]
#[derive(Debug, PartialEq, Eq)]
pub struct TxBuffer {
    chunk: u32,
}

impl TxBuffer {
    /// The chunk's index in the pool.
    pub fn chunk(&self) -> u32 {
        self.chunk
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Free,
    PostedRx,
    PostedTx,
    Received,
    Lent,
    Taking,
}

/// Counters of a queue pair, host side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostCounters {
    /// Frames received.
    pub rx_frames: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Frames sent (TX completions with status ok).
    pub tx_frames: u64,
    /// Completions with an error status, by descriptor.
    pub completion_errors: u64,
    /// Completions that made no sense (unknown cookie or kind): ignored.
    pub bad_completions: u64,
    /// Interrupt messages taken.
    pub interrupts: u64,
    /// Doorbell writes.
    pub doorbells: u64,
    /// Bytes of payload the host copied (only [`QueuePair::copy_out`] and
    /// [`QueuePair::copy_in`] do; the zero-copy path never does).
    pub payload_copy_bytes: u64,
}

#[derive(Debug, Clone, Copy)]
struct Regions {
    rx_ring: u64,
    tx_ring: u64,
    cq_ring: u64,
    irq: u64,
    admin: u64,
    buffers: u64,
    staging: u64,
    end: u64,
}

impl Regions {
    fn new(s: &QueueSetup) -> Regions {
        let pages = |b: u64| b.div_ceil(PAGE) * PAGE;
        let rx_ring = s.base.0;
        let tx_ring = rx_ring + pages(s.rx_ring as u64 * DESCRIPTOR_LEN as u64);
        let cq_ring = tx_ring + pages(s.tx_ring as u64 * DESCRIPTOR_LEN as u64);
        let irq = cq_ring + pages(s.cq_ring as u64 * COMPLETION_LEN as u64);
        let admin = irq + PAGE;
        let buffers = admin + PAGE;
        let staging = buffers + pages(s.buffers as u64 * s.chunk as u64);
        let end = staging + PAGE + MAILBOX_STAGING;
        Regions {
            rx_ring,
            tx_ring,
            cq_ring,
            irq,
            admin,
            buffers,
            staging,
            end,
        }
    }
    // Staging page 0: doorbell values (one 16-byte slot per register).
    fn doorbell(&self, r: Register) -> ProcAddr {
        let slot = match r {
            Register::RxTail(_) => 0,
            Register::TxTail(_) => 1,
            Register::CqHead(_) => 2,
            Register::Command => 3,
            Register::Mailbox => 4,
        };
        ProcAddr(self.staging + slot * 16)
    }
    // Staging page 0 at 256: the queue configuration.
    fn config(&self) -> ProcAddr {
        ProcAddr(self.staging + 256)
    }
    // From staging page 1: the mailbox message.
    fn mailbox(&self) -> ProcAddr {
        ProcAddr(self.staging + PAGE)
    }
}

#[derive(Debug, Clone, Copy)]
enum Pending {
    /// The queue configuration reached the adapter's staging window.
    ConfigStaged,
    /// A control message reached the adapter's staging window.
    MailboxStaged { seq: u32, len: u32 },
    /// A doorbell write.
    Doorbell,
}

/// Addresses of the adapter-reachable regions, as the adapter sees them.
#[derive(Debug, Clone, Copy)]
struct Windows {
    rx_ring: FabricAddr,
    tx_ring: FabricAddr,
    cq_ring: FabricAddr,
    irq: FabricAddr,
    admin: FabricAddr,
    buffers: FabricAddr,
}

/// One queue pair of a processor with one adapter.
#[derive(Debug)]
pub struct QueuePair {
    setup: QueueSetup,
    processor: EndpointId,
    nic: usize,
    adapter: AdapterWindows,
    regions: Regions,
    windows: Windows,
    state: QueueState,
    chunks: Vec<Chunk>,
    free: Vec<u32>,
    to_post: Vec<u32>,
    received: VecDeque<(u32, u32, CompletionFlags)>,
    rx_tail: u32,
    rx_posted: u32,
    tx_tail: u32,
    tx_posted: u32,
    tx_dirty: bool,
    cq_head: u32,
    /// Completions taken since the head was last written to the adapter.
    cq_unreported: u32,
    cq_phase: bool,
    seq: u32,
    pending: Vec<(TransferId, Pending)>,
    outcomes: VecDeque<(u32, ControlOutcome)>,
    mailbox_queue: VecDeque<(u32, Vec<u8>)>,
    mailbox_busy: bool,
    irq_key: snet_fabric::WindowKey,
    admin_key: snet_fabric::WindowKey,
    counters: HostCounters,
}

fn dma_err(e: impl std::fmt::Display) -> HostError {
    HostError::Dma(e.to_string())
}

impl QueuePair {
    /// Lays out a queue pair in `processor`'s memory, opens its windows for
    /// adapter `nic`, stages its configuration and rings the command
    /// doorbell. The queue is [`QueueState::Ready`] once the adapter's reply
    /// arrives (see [`QueuePair::on_interrupt`]).
    pub fn create<H: Traced>(
        cluster: &mut Cluster<H>,
        processor: EndpointId,
        nic: usize,
        setup: QueueSetup,
    ) -> Result<QueuePair, HostError> {
        let bad = |s: String| Err(HostError::Setup(s));
        for (name, v) in [
            ("rx_ring", setup.rx_ring),
            ("tx_ring", setup.tx_ring),
            ("cq_ring", setup.cq_ring),
        ] {
            if !ring::ring_size_ok(v) {
                return bad(format!(
                    "{name} {v} must be a power of two in {}..={}",
                    ring::MIN_RING,
                    ring::MAX_RING
                ));
            }
        }
        if setup.cq_ring < setup.rx_ring + setup.tx_ring {
            return bad(format!(
                "cq_ring {} must hold rx_ring + tx_ring = {} completions",
                setup.cq_ring,
                setup.rx_ring + setup.tx_ring
            ));
        }
        if setup.rx_refill_batch == 0 {
            return bad("rx_refill_batch must be at least 1".into());
        }
        if setup.chunk < 64 || setup.chunk % 64 != 0 || setup.chunk > 65536 {
            return bad(format!(
                "chunk {} must be a multiple of 64 in 64..=65536",
                setup.chunk
            ));
        }
        if setup.buffers == 0 {
            return bad("buffers must be at least 1".into());
        }
        if setup.queue >= regs::MAX_QUEUES {
            return bad(format!(
                "queue {} must be below {}",
                setup.queue,
                regs::MAX_QUEUES
            ));
        }
        if setup.base.0 % PAGE != 0 {
            return bad(format!("base {:#x} must be page-aligned", setup.base.0));
        }
        if setup.coalesce_count == 0 {
            return bad("coalesce_count must be at least 1".into());
        }
        let Some(adapter_nic) = cluster.nics.get(nic) else {
            return Err(HostError::NotServed { nic, processor });
        };
        let adapter = adapter_nic
            .windows_for(processor)
            .ok_or(HostError::NotServed { nic, processor })?;
        let regions = Regions::new(&setup);
        let buffers_len = setup.buffers as u64 * setup.chunk as u64;
        if buffers_len > u32::MAX as u64 {
            return bad(format!(
                "the buffer pool ({buffers_len} bytes) must fit a 4 GiB window"
            ));
        }
        let mem_len = cluster
            .fabric
            .memory(processor)
            .map_err(|e| HostError::Memory(e.to_string()))?
            .len();
        if regions.end > mem_len {
            return bad(format!(
                "the queue pair needs {:#x}..{:#x} but the processor has {mem_len:#x} bytes",
                setup.base.0, regions.end
            ));
        }
        // Start from clean rings (the completion ring's phase starts at 0).
        {
            let m = cluster
                .fabric
                .memory_mut(processor)
                .map_err(|e| HostError::Memory(e.to_string()))?;
            m.fill(
                ProcAddr(regions.rx_ring),
                regions.buffers - regions.rx_ring,
                0,
            )
            .map_err(|e| HostError::Memory(e.to_string()))?;
        }
        let device = adapter.adapter;
        let mut lift = Lift::new(&mut cluster.engine);
        let mut mapper = FabricMapper::new(&mut cluster.fabric, &mut lift, processor, device)
            .map_err(|source| HostError::Map {
                what: "the processor for the adapter",
                source,
            })?;
        let mut map = |what: &'static str, at: u64, len: u64, access: Access| {
            let region = HostRegion {
                offset: ProcAddr(at),
                len,
                host_addr: 0,
            };
            match mapper.map(region, access) {
                Ok(DeviceAddr::Fabric(a)) => Ok(a),
                Ok(other) => Err(HostError::Setup(format!(
                    "{what}: unexpected device address {other}"
                ))),
                Err(source) => Err(HostError::Map { what, source }),
            }
        };
        let windows = Windows {
            rx_ring: map(
                "the RX ring",
                regions.rx_ring,
                setup.rx_ring as u64 * 16,
                Access::READ,
            )?,
            tx_ring: map(
                "the TX ring",
                regions.tx_ring,
                setup.tx_ring as u64 * 16,
                Access::READ,
            )?,
            cq_ring: map(
                "the completion ring",
                regions.cq_ring,
                setup.cq_ring as u64 * 16,
                Access::WRITE,
            )?,
            irq: map(
                "the interrupt slot",
                regions.irq,
                PAGE,
                Access::WRITE | Access::INTERRUPT,
            )?,
            admin: map(
                "the admin slot",
                regions.admin,
                PAGE,
                Access::WRITE | Access::INTERRUPT,
            )?,
            buffers: map(
                "the buffer pool",
                regions.buffers,
                buffers_len,
                Access::READ | Access::WRITE,
            )?,
        };
        let mut qp = QueuePair {
            setup,
            processor,
            nic,
            adapter,
            regions,
            windows,
            state: QueueState::Creating,
            chunks: vec![Chunk::Free; setup.buffers as usize],
            free: (0..setup.buffers).rev().collect(),
            to_post: Vec::new(),
            received: VecDeque::new(),
            rx_tail: 0,
            rx_posted: 0,
            tx_tail: 0,
            tx_posted: 0,
            tx_dirty: false,
            cq_head: 0,
            cq_unreported: 0,
            cq_phase: true,
            seq: 0,
            pending: Vec::new(),
            outcomes: VecDeque::new(),
            mailbox_queue: VecDeque::new(),
            mailbox_busy: false,
            irq_key: windows.irq.key(),
            admin_key: windows.admin.key(),
            counters: HostCounters::default(),
        };
        let cfg = QueueConfig {
            rx_ring: windows.rx_ring.0.into(),
            tx_ring: windows.tx_ring.0.into(),
            cq_ring: windows.cq_ring.0.into(),
            buffers: windows.buffers.0.into(),
            irq: windows.irq.0.into(),
            buffers_len: (buffers_len as u32).into(),
            rx_size: setup.rx_ring.into(),
            tx_size: setup.tx_ring.into(),
            cq_size: setup.cq_ring.into(),
            coalesce_count: setup.coalesce_count.into(),
            coalesce_ns: setup.coalesce_ns.into(),
            offloads: setup.offloads.bits().into(),
            reserved: 0.into(),
        };
        qp.write_local(cluster, qp.regions.config(), cfg.as_bytes())?;
        let slot = FabricAddr::new(qp.adapter.staging.key(), regs::config_offset(setup.queue));
        let id = qp.dma(
            cluster,
            qp.regions.config(),
            slot,
            size_of::<QueueConfig>() as u64,
        )?;
        qp.pending.push((id, Pending::ConfigStaged));
        Ok(qp)
    }

    fn write_local<H: Traced>(
        &self,
        cluster: &mut Cluster<H>,
        at: ProcAddr,
        bytes: &[u8],
    ) -> Result<(), HostError> {
        cluster
            .fabric
            .memory_mut(self.processor)
            .and_then(|m| m.write(at, bytes).map_err(Into::into))
            .map_err(|e| HostError::Memory(e.to_string()))
    }

    fn dma<H: Traced>(
        &self,
        cluster: &mut Cluster<H>,
        local: ProcAddr,
        remote: FabricAddr,
        len: u64,
    ) -> Result<TransferId, HostError> {
        let mut lift = Lift::new(&mut cluster.engine);
        cluster
            .fabric
            .start_dma(
                &mut lift,
                self.processor,
                DmaRequest::write(self.adapter.adapter, local, remote, len),
            )
            .map_err(dma_err)
    }

    fn ring<H: Traced>(
        &mut self,
        cluster: &mut Cluster<H>,
        r: Register,
        bytes: &[u8],
    ) -> Result<(), HostError> {
        let local = self.regions.doorbell(r);
        self.write_local(cluster, local, bytes)?;
        let remote = FabricAddr::new(self.adapter.csr.key(), r.offset());
        let id = self.dma(cluster, local, remote, bytes.len() as u64)?;
        self.pending.push((id, Pending::Doorbell));
        self.counters.doorbells += 1;
        Ok(())
    }

    /// The processor.
    pub fn processor(&self) -> EndpointId {
        self.processor
    }

    /// The adapter's index in the cluster.
    pub fn nic(&self) -> usize {
        self.nic
    }

    /// The queue number.
    pub fn queue(&self) -> u16 {
        self.setup.queue
    }

    /// The setup.
    pub fn setup(&self) -> &QueueSetup {
        &self.setup
    }

    /// The state.
    pub fn state(&self) -> QueueState {
        self.state
    }

    /// The host-side counters.
    pub fn counters(&self) -> &HostCounters {
        &self.counters
    }

    /// Where the buffer pool starts in processor memory.
    pub fn buffers_base(&self) -> ProcAddr {
        ProcAddr(self.regions.buffers)
    }

    /// Where chunk `chunk` starts in processor memory.
    pub fn chunk_addr(&self, chunk: u32) -> ProcAddr {
        ProcAddr(self.regions.buffers + chunk as u64 * self.setup.chunk as u64)
    }

    /// Where the RX ring starts in processor memory (for tests that play a
    /// misbehaving driver).
    pub fn rx_ring_addr(&self) -> ProcAddr {
        ProcAddr(self.regions.rx_ring)
    }

    /// Where the TX ring starts in processor memory.
    pub fn tx_ring_addr(&self) -> ProcAddr {
        ProcAddr(self.regions.tx_ring)
    }

    /// Chunks free in the pool.
    pub fn free_chunks(&self) -> usize {
        self.free.len()
    }

    /// RX descriptors currently posted.
    pub fn rx_posted(&self) -> u32 {
        self.rx_posted
    }

    /// A DMA transfer of this processor ended: returns true if it was one of
    /// this queue pair's.
    pub fn on_dma_done<H: Traced>(
        &mut self,
        cluster: &mut Cluster<H>,
        done: &DmaCompletion,
    ) -> Result<bool, HostError> {
        let Some(i) = self.pending.iter().position(|(id, _)| *id == done.id) else {
            return Ok(false);
        };
        let (_, what) = self.pending.swap_remove(i);
        if let Err(e) = &done.result {
            return Err(HostError::Dma(format!(
                "a write to the adapter failed: {e}"
            )));
        }
        match what {
            Pending::ConfigStaged => {
                let db = CommandDoorbell {
                    code: (CommandCode::CreateQueue as u16).into(),
                    queue: self.setup.queue.into(),
                    seq: self.next_seq().into(),
                    reply: self.reply_addr(0).0.into(),
                };
                self.ring(cluster, Register::Command, db.as_bytes())?;
            }
            Pending::MailboxStaged { seq, len } => {
                let db = MailboxDoorbell {
                    len: len.into(),
                    seq: seq.into(),
                    reply: self.reply_addr(seq).0.into(),
                };
                self.ring(cluster, Register::Mailbox, db.as_bytes())?;
            }
            Pending::Doorbell => {}
        }
        Ok(true)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn reply_addr(&self, seq: u32) -> FabricAddr {
        FabricAddr::new(self.windows.admin.key(), (seq % (PAGE as u32 / 16)) * 16)
    }

    /// Sends an encoded control message to the adapter's firmware through
    /// the mailbox; returns its sequence number. The outcome arrives later
    /// ([`QueuePair::take_outcomes`]).
    pub fn send_control<H: Traced>(
        &mut self,
        cluster: &mut Cluster<H>,
        message: &Envelope,
    ) -> Result<u32, HostError> {
        let bytes = message.to_bytes();
        if bytes.len() as u32 > regs::MAILBOX_MAX {
            return Err(HostError::Setup(format!(
                "a control message of {} bytes exceeds the mailbox ({} bytes)",
                bytes.len(),
                regs::MAILBOX_MAX
            )));
        }
        self.send_control_bytes(cluster, &bytes)
    }

    /// Sends raw control-message bytes (for tests of the adapter's checks).
    pub fn send_control_bytes<H: Traced>(
        &mut self,
        cluster: &mut Cluster<H>,
        bytes: &[u8],
    ) -> Result<u32, HostError> {
        let seq = self.next_seq();
        self.mailbox_queue.push_back((seq, bytes.to_vec()));
        self.stage_next_control(cluster)?;
        Ok(seq)
    }

    /// Stages the next queued control message if none is in flight (the
    /// adapter has one mailbox per processor: the next message goes when the
    /// previous one is answered).
    fn stage_next_control<H: Traced>(&mut self, cluster: &mut Cluster<H>) -> Result<(), HostError> {
        if self.mailbox_busy {
            return Ok(());
        }
        let Some((seq, bytes)) = self.mailbox_queue.pop_front() else {
            return Ok(());
        };
        let len = bytes.len().min(MAILBOX_STAGING as usize);
        self.write_local(cluster, self.regions.mailbox(), &bytes[..len])?;
        let remote = FabricAddr::new(self.adapter.staging.key(), regs::MAILBOX_BODY);
        let id = self.dma(cluster, self.regions.mailbox(), remote, len as u64)?;
        self.mailbox_busy = true;
        self.pending.push((
            id,
            Pending::MailboxStaged {
                seq,
                len: bytes.len() as u32,
            },
        ));
        Ok(())
    }

    /// The adapter failed: the control messages queued for its mailbox or
    /// waiting for its answer are dropped (none will be answered), and the
    /// queue pair forgets its transfers to the adapter still under way
    /// (their failures are expected, not errors). The rings and buffers stay
    /// as they are: a restored adapter carries on with them. Returns how
    /// many control messages were dropped.
    pub fn adapter_failed(&mut self) -> usize {
        let dropped = self.mailbox_queue.len() + usize::from(self.mailbox_busy);
        self.mailbox_queue.clear();
        self.mailbox_busy = false;
        self.pending.clear();
        dropped
    }

    /// Closes the queue pair's windows in the processor's AVT (the
    /// adapter's keys to its rings and buffers stop working), for a queue
    /// pair that is given up, such as a failed processor's before it is
    /// rebuilt. Windows already closed are skipped.
    pub fn close_windows<H: Traced>(&self, cluster: &mut Cluster<H>) {
        let w = self.windows;
        for a in [w.rx_ring, w.tx_ring, w.cq_ring, w.irq, w.admin, w.buffers] {
            let mut lift = Lift::new(&mut cluster.engine);
            let _ = cluster
                .fabric
                .avt_unregister(&mut lift, self.processor, a.key());
        }
    }

    /// Whether a control message waits for the mailbox or for its answer.
    pub fn control_pending(&self) -> bool {
        self.mailbox_busy || !self.mailbox_queue.is_empty()
    }

    /// Control-message outcomes that arrived, oldest first.
    pub fn take_outcomes(&mut self) -> Vec<(u32, ControlOutcome)> {
        self.outcomes.drain(..).collect()
    }

    /// Whether an interrupt entry of this processor belongs to this queue pair.
    pub fn owns_interrupt(&self, key: snet_fabric::WindowKey) -> bool {
        key == self.irq_key || key == self.admin_key
    }

    /// Handles one interrupt entry (an admin reply or a completion
    /// interrupt) and reaps completions.
    pub fn on_interrupt<H: Traced>(
        &mut self,
        cluster: &mut Cluster<H>,
        entry: &snet_fabric::avt::InterruptEntry,
    ) -> Result<(), HostError> {
        if entry.key == self.admin_key {
            let at = ProcAddr(self.regions.admin + (entry.offset as u64 & !15));
            let st = {
                let m = cluster
                    .fabric
                    .memory(self.processor)
                    .map_err(|e| HostError::Memory(e.to_string()))?;
                m.slice(at, 16)
                    .ok()
                    .and_then(|b| CommandStatus::read_from_bytes(b).ok())
            };
            if let Some(st) = st {
                self.on_status(cluster, &st)?;
            }
        } else if entry.key == self.irq_key {
            self.counters.interrupts += 1;
            self.poll(cluster)?;
        }
        Ok(())
    }

    fn on_status<H: Traced>(
        &mut self,
        cluster: &mut Cluster<H>,
        st: &CommandStatus,
    ) -> Result<(), HostError> {
        let code = StatusCode::from_code(st.status.get());
        match st.source.get() {
            s if s == StatusSource::Command as u16 => {
                if st.code.get() == CommandCode::CreateQueue as u16
                    && self.state == QueueState::Creating
                {
                    match code {
                        // QueueExists while creating: a retried doorbell
                        // write delivered the command twice (the fabric
                        // retries a write whose acknowledgement was late),
                        // and the first copy created this very queue.
                        Some(StatusCode::Ok | StatusCode::QueueExists) => {
                            self.state = QueueState::Ready;
                            self.refill(cluster)?;
                        }
                        Some(c) => self.state = QueueState::Refused(c),
                        None => self.state = QueueState::Refused(StatusCode::UnknownCommand),
                    }
                }
            }
            s if s == StatusSource::Mailbox as u16 => {
                let outcome = match code {
                    Some(StatusCode::Ok) => ControlOutcome::Accepted,
                    Some(StatusCode::Rejected) => ControlOutcome::Rejected(
                        RejectReason::ALL
                            .get(st.detail.get() as usize)
                            .copied()
                            .unwrap_or(RejectReason::Malformed),
                    ),
                    Some(c) => ControlOutcome::Refused(c),
                    None => ControlOutcome::Refused(StatusCode::UnknownCommand),
                };
                self.outcomes.push_back((st.seq.get(), outcome));
                self.mailbox_busy = false;
                self.stage_next_control(cluster)?;
            }
            _ => self.counters.bad_completions += 1,
        }
        Ok(())
    }

    /// Posts every chunk waiting to be (re)posted to the RX ring, up to the
    /// ring's room, and rings the RX doorbell once.
    fn refill<H: Traced>(&mut self, cluster: &mut Cluster<H>) -> Result<(), HostError> {
        if self.state != QueueState::Ready {
            return Ok(());
        }
        // First chunks given back by the application, then free chunks,
        // keeping the ring as full as it goes.
        let room = self.setup.rx_ring - 1 - self.rx_posted;
        let waiting = (self.to_post.len() + self.free.len()).min(room as usize) as u32;
        if waiting == 0 {
            return Ok(());
        }
        // Repost in batches, as drivers do, so that one doorbell and one
        // descriptor fetch serve many chunks; never let the ring run low.
        let batch = self
            .setup
            .rx_refill_batch
            .min(self.setup.rx_ring / 4)
            .max(1);
        if waiting < batch && self.rx_posted >= self.setup.rx_ring / 2 {
            return Ok(());
        }
        let mut n = 0;
        let mut descs = Vec::new();
        let mut first = self.rx_tail;
        while n < room {
            let chunk = match self.to_post.pop() {
                Some(c) => c,
                None => match self.free.pop() {
                    Some(c) => c,
                    None => break,
                },
            };
            self.chunks[chunk as usize] = Chunk::PostedRx;
            descs.push(Descriptor::new(
                chunk * self.setup.chunk,
                self.setup.chunk,
                chunk,
                0,
            ));
            n += 1;
            self.rx_tail = (self.rx_tail + 1) % self.setup.rx_ring;
            if self.rx_tail == 0 || n == room {
                self.write_descriptors(cluster, self.regions.rx_ring, first, &descs)?;
                descs.clear();
                first = self.rx_tail;
            }
        }
        if !descs.is_empty() {
            self.write_descriptors(cluster, self.regions.rx_ring, first, &descs)?;
        }
        if n > 0 {
            self.rx_posted += n;
            let tail = self.rx_tail;
            self.ring(
                cluster,
                Register::RxTail(self.setup.queue),
                &tail.to_le_bytes(),
            )?;
        }
        Ok(())
    }

    fn write_descriptors<H: Traced>(
        &self,
        cluster: &mut Cluster<H>,
        ring: u64,
        first: u32,
        descs: &[Descriptor],
    ) -> Result<(), HostError> {
        self.write_local(
            cluster,
            ProcAddr(ring + first as u64 * DESCRIPTOR_LEN as u64),
            descs.as_bytes(),
        )
    }

    /// Takes the completions the adapter wrote (phase bit), makes received
    /// frames available to [`QueuePair::recv`], frees sent buffers, reposts
    /// returned RX chunks and tells the adapter how far it got.
    pub fn poll<H: Traced>(&mut self, cluster: &mut Cluster<H>) -> Result<usize, HostError> {
        let mut reaped = 0usize;
        loop {
            let at = ProcAddr(self.regions.cq_ring + self.cq_head as u64 * COMPLETION_LEN as u64);
            let c = {
                let m = cluster
                    .fabric
                    .memory(self.processor)
                    .map_err(|e| HostError::Memory(e.to_string()))?;
                match m
                    .slice(at, COMPLETION_LEN as u64)
                    .ok()
                    .and_then(|b| Completion::read_from_bytes(b).ok())
                {
                    Some(c) => c,
                    None => break,
                }
            };
            if c.phase() != self.cq_phase {
                break;
            }
            self.cq_head = (self.cq_head + 1) % self.setup.cq_ring;
            if self.cq_head == 0 {
                self.cq_phase = !self.cq_phase;
            }
            reaped += 1;
            self.take_completion(&c);
        }
        self.cq_unreported += reaped as u32;
        if self.cq_unreported > 0 && self.cq_unreported >= self.cq_report_batch() {
            self.cq_unreported = 0;
            let head = self.cq_head;
            self.ring(
                cluster,
                Register::CqHead(self.setup.queue),
                &head.to_le_bytes(),
            )?;
        }
        self.refill(cluster)?;
        self.flush(cluster)?;
        Ok(reaped)
    }

    /// How many completions are taken before the head is written back to
    /// the adapter. The completion ring has `cq_ring - rx_ring - tx_ring`
    /// slots more than descriptors can ever complete at once; an unreported
    /// stretch up to half that margin can never make the adapter wait for
    /// room. With no margin the head is written at every poll.
    fn cq_report_batch(&self) -> u32 {
        let s = &self.setup;
        let margin = s.cq_ring.saturating_sub(s.rx_ring + s.tx_ring);
        (margin / 2).min(s.cq_ring / 4).max(1)
    }

    fn take_completion(&mut self, c: &Completion) {
        let chunk = c.cookie.get();
        let state = self.chunks.get(chunk as usize).copied();
        match (c.kind(), state) {
            (Some(CompletionKind::Rx), Some(Chunk::PostedRx)) => {
                self.rx_posted -= 1;
                let len = c.len.get();
                if c.status() == Some(CompletionStatus::Ok) && len <= self.setup.chunk {
                    self.chunks[chunk as usize] = Chunk::Received;
                    self.received.push_back((chunk, len, c.flags()));
                    self.counters.rx_frames += 1;
                    self.counters.rx_bytes += len as u64;
                } else {
                    self.counters.completion_errors += 1;
                    self.chunks[chunk as usize] = Chunk::Free;
                    self.to_post.push(chunk);
                }
            }
            (Some(CompletionKind::Tx), Some(Chunk::PostedTx)) => {
                self.tx_posted -= 1;
                if c.status() == Some(CompletionStatus::Ok) {
                    self.counters.tx_frames += 1;
                } else {
                    self.counters.completion_errors += 1;
                }
                self.chunks[chunk as usize] = Chunk::Free;
                self.free.push(chunk);
            }
            _ => self.counters.bad_completions += 1,
        }
    }

    /// The next received frame, in place in processor memory. Dropping the
    /// view gives the chunk back for reposting (at the next
    /// [`QueuePair::poll`]).
    pub fn recv<'a>(&'a mut self, fabric: &'a snet_fabric::network::Fabric) -> Option<RxBuf<'a>> {
        let (chunk, len, flags) = self.received.pop_front()?;
        let at = self.chunk_addr(chunk);
        let data = fabric
            .memory(self.processor)
            .ok()?
            .slice(at, len as u64)
            .ok()?;
        self.chunks[chunk as usize] = Chunk::Lent;
        Some(RxBuf {
            data,
            flags,
            chunk,
            chunks: &mut self.chunks,
            to_post: &mut self.to_post,
        })
    }

    /// Takes the next received frame as (chunk, length, flags), lent to the
    /// caller until [`QueuePair::give_back`]: for code that needs the bytes
    /// together with a mutable view of another chunk (a stack replying while
    /// it reads).
    pub fn take_received(&mut self) -> Option<(u32, u32, CompletionFlags)> {
        let (chunk, len, flags) = self.received.pop_front()?;
        self.chunks[chunk as usize] = Chunk::Lent;
        Some((chunk, len, flags))
    }

    /// Returns a chunk taken with [`QueuePair::take_received`]; it is
    /// reposted at the next [`QueuePair::poll`]. A chunk that is not lent is
    /// ignored.
    pub fn give_back(&mut self, chunk: u32) {
        if self.chunks.get(chunk as usize) == Some(&Chunk::Lent) {
            self.chunks[chunk as usize] = Chunk::Free;
            self.to_post.push(chunk);
        }
    }

    /// The next received frame, without taking it.
    pub fn peek<'a>(&self, fabric: &'a snet_fabric::network::Fabric) -> Option<&'a [u8]> {
        let &(chunk, len, _) = self.received.front()?;
        fabric
            .memory(self.processor)
            .ok()?
            .slice(self.chunk_addr(chunk), len as u64)
            .ok()
    }

    /// Whether a frame could be posted now: the queue is ready, a chunk is
    /// free and the TX ring has room.
    pub fn can_send(&self) -> bool {
        self.state == QueueState::Ready
            && !self.free.is_empty()
            && self.tx_posted < self.setup.tx_ring - 1
    }

    /// Frames received and not yet taken.
    pub fn pending_rx(&self) -> usize {
        self.received.len()
    }

    /// Copies the next received frame out (the one path that copies payload,
    /// counted in [`HostCounters::payload_copy_bytes`]).
    pub fn copy_out(&mut self, fabric: &snet_fabric::network::Fabric) -> Option<Vec<u8>> {
        let v = self.recv(fabric)?.to_vec();
        self.counters.payload_copy_bytes += v.len() as u64;
        Some(v)
    }

    /// A free chunk for a frame to send.
    pub fn tx_buffer(&mut self) -> Option<TxBuffer> {
        let chunk = self.free.pop()?;
        self.chunks[chunk as usize] = Chunk::Taking;
        Some(TxBuffer { chunk })
    }

    /// Gives an unsent chunk back.
    pub fn release(&mut self, buf: TxBuffer) {
        self.chunks[buf.chunk as usize] = Chunk::Free;
        self.free.push(buf.chunk);
    }

    /// The chunk's bytes, writable, in processor memory.
    pub fn buffer_mut<'a>(
        &self,
        fabric: &'a mut snet_fabric::network::Fabric,
        buf: &TxBuffer,
    ) -> &'a mut [u8] {
        let at = self.chunk_addr(buf.chunk);
        fabric
            .memory_mut(self.processor)
            .and_then(|m| m.slice_mut(at, self.setup.chunk as u64).map_err(Into::into))
            .expect("chunks lie inside the processor memory checked at create")
    }

    /// Copies `frame` into a new chunk (counted as a payload copy) and sends it.
    pub fn copy_in<H: Traced>(
        &mut self,
        cluster: &mut Cluster<H>,
        frame: &[u8],
    ) -> Result<(), HostError> {
        let buf = self
            .tx_buffer()
            .ok_or_else(|| HostError::Setup("no free chunk".into()))?;
        let n = frame.len().min(self.setup.chunk as usize);
        self.buffer_mut(&mut cluster.fabric, &buf)[..n].copy_from_slice(&frame[..n]);
        self.counters.payload_copy_bytes += n as u64;
        self.send(cluster, buf, n as u32, TxFlags::empty())
            .map_err(|e| HostError::Setup(e.to_string()))
    }

    /// Posts `len` bytes of `buf` to the TX ring without ringing the
    /// doorbell (batch several, then [`QueuePair::flush`]).
    pub fn post(
        &mut self,
        buf: TxBuffer,
        len: u32,
        flags: TxFlags,
        cluster_mem: &mut snet_fabric::network::Fabric,
    ) -> Result<(), SendError> {
        if self.state != QueueState::Ready {
            return Err(SendError::NotReady(buf));
        }
        if !(14..=self.setup.chunk).contains(&len) {
            return Err(SendError::BadLength {
                buf,
                len,
                max: self.setup.chunk,
            });
        }
        if self.tx_posted >= self.setup.tx_ring - 1 {
            return Err(SendError::RingFull(buf));
        }
        let d = Descriptor::new(buf.chunk * self.setup.chunk, len, buf.chunk, flags.bits());
        let at = ProcAddr(self.regions.tx_ring + self.tx_tail as u64 * DESCRIPTOR_LEN as u64);
        if cluster_mem
            .memory_mut(self.processor)
            .and_then(|m| m.write(at, d.as_bytes()).map_err(Into::into))
            .is_err()
        {
            return Err(SendError::NotReady(buf));
        }
        self.chunks[buf.chunk as usize] = Chunk::PostedTx;
        self.tx_posted += 1;
        self.tx_tail = (self.tx_tail + 1) % self.setup.tx_ring;
        self.tx_dirty = true;
        Ok(())
    }

    /// Rings the TX doorbell if frames were posted since the last time.
    pub fn flush<H: Traced>(&mut self, cluster: &mut Cluster<H>) -> Result<(), HostError> {
        if self.tx_dirty {
            self.tx_dirty = false;
            let tail = self.tx_tail;
            self.ring(
                cluster,
                Register::TxTail(self.setup.queue),
                &tail.to_le_bytes(),
            )?;
        }
        Ok(())
    }

    /// Posts `len` bytes of `buf` and rings the TX doorbell. The chunk
    /// returns to the pool when the adapter's completion arrives.
    pub fn send<H: Traced>(
        &mut self,
        cluster: &mut Cluster<H>,
        buf: TxBuffer,
        len: u32,
        flags: TxFlags,
    ) -> Result<(), SendError> {
        self.post(buf, len, flags, &mut cluster.fabric)?;
        // A refused doorbell write leaves the frame posted; the next flush retries.
        if self.flush(cluster).is_err() {
            self.tx_dirty = true;
        }
        Ok(())
    }
}

/// A received frame, borrowed in place from processor memory.
#[derive(Debug)]
pub struct RxBuf<'a> {
    data: &'a [u8],
    flags: CompletionFlags,
    chunk: u32,
    chunks: &'a mut Vec<Chunk>,
    to_post: &'a mut Vec<u32>,
}

impl RxBuf<'_> {
    /// The completion's flags (master traffic, checksum results).
    pub fn flags(&self) -> CompletionFlags {
        self.flags
    }

    /// The chunk's index in the pool.
    pub fn chunk(&self) -> u32 {
        self.chunk
    }
}

impl std::ops::Deref for RxBuf<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.data
    }
}

impl Drop for RxBuf<'_> {
    fn drop(&mut self) {
        self.chunks[self.chunk as usize] = Chunk::Free;
        self.to_post.push(self.chunk);
    }
}
