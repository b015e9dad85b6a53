//! A processor's side of its adapters: its queue pairs, and the routing of
//! the interrupts and DMA completions the cluster hands to it.
//!
//! Processor memory is laid out from a base upwards: each queue pair, and
//! each region [`Processor::reserve`]d for something else (the message
//! system's arena, see [`crate::ipc`]), takes the next page-aligned range.

use snet_fabric::EndpointId;
use snet_fabric::avt::InterruptEntry;
use snet_fabric::engine::Traced;
use snet_fabric::memory::ProcAddr;
use snet_fabric::network::DmaCompletion;
use snet_nic_model::Cluster;

use crate::queue::{HostError, PAGE, QueuePair, QueueSetup};

/// One processor's queue pairs.
#[derive(Debug)]
pub struct Processor {
    endpoint: EndpointId,
    queues: Vec<QueuePair>,
    next_base: u64,
    /// Interrupt entries that belonged to no queue pair.
    pub stray_interrupts: u64,
}

impl Processor {
    /// A processor with no queue pairs; they are laid out from `base` upwards.
    pub fn new(endpoint: EndpointId, base: ProcAddr) -> Self {
        Processor {
            endpoint,
            queues: Vec::new(),
            next_base: base.0.div_ceil(PAGE) * PAGE,
            stray_interrupts: 0,
        }
    }

    /// The processor's endpoint.
    pub fn endpoint(&self) -> EndpointId {
        self.endpoint
    }

    /// Creates a queue pair with adapter `nic`, placed after the previous
    /// ones (`setup.base` is ignored). Returns its index.
    pub fn add_queue<H: Traced>(
        &mut self,
        cluster: &mut Cluster<H>,
        nic: usize,
        mut setup: QueueSetup,
    ) -> Result<usize, HostError> {
        setup.base = ProcAddr(self.next_base.div_ceil(PAGE) * PAGE);
        let qp = QueuePair::create(cluster, self.endpoint, nic, setup)?;
        self.next_base = setup.base.0 + setup.footprint();
        self.queues.push(qp);
        Ok(self.queues.len() - 1)
    }

    /// Takes `len` bytes (rounded up to whole pages) of the processor's
    /// memory, page-aligned, after the queue pairs created so far; queue
    /// pairs added later go after it. Returns where the region starts. The
    /// processor does nothing with the region (a rig hands it, for example,
    /// to [`crate::ipc::Ipc`] as the processor's arena); whether it fits the
    /// memory is checked by whoever uses it.
    pub fn reserve(&mut self, len: u64) -> ProcAddr {
        let at = self.next_base.div_ceil(PAGE) * PAGE;
        self.next_base = at.saturating_add(len.div_ceil(PAGE) * PAGE);
        ProcAddr(at)
    }

    /// The queue pairs.
    pub fn queues(&self) -> &[QueuePair] {
        &self.queues
    }

    /// The queue pairs, mutable (index `i` is the queue pair with adapter
    /// `i` when one was created per adapter in order).
    pub fn queues_mut(&mut self) -> &mut [QueuePair] {
        &mut self.queues
    }

    /// One queue pair.
    pub fn queue_mut(&mut self, i: usize) -> Option<&mut QueuePair> {
        self.queues.get_mut(i)
    }

    /// Takes every pending interrupt entry of the processor and hands each
    /// to the queue pair whose window it hit; entries of no queue pair are
    /// counted in [`Processor::stray_interrupts`].
    pub fn on_interrupt<H: Traced>(&mut self, cluster: &mut Cluster<H>) -> Result<(), HostError> {
        self.on_interrupt_with(cluster, |_, _| false)
    }

    /// Like [`Processor::on_interrupt`], but an entry that belongs to no
    /// queue pair is first offered to `other` (for example
    /// [`crate::ipc::Ipc::on_interrupt`]), which returns true if it was its
    /// own; only entries nobody claims are counted as stray.
    pub fn on_interrupt_with<H: Traced>(
        &mut self,
        cluster: &mut Cluster<H>,
        mut other: impl FnMut(&mut Cluster<H>, &InterruptEntry) -> bool,
    ) -> Result<(), HostError> {
        while let Ok(Some(entry)) = cluster.fabric.pop_interrupt(self.endpoint) {
            match self.queues.iter_mut().find(|q| q.owns_interrupt(entry.key)) {
                Some(q) => q.on_interrupt(cluster, &entry)?,
                None => {
                    if !other(cluster, &entry) {
                        self.stray_interrupts += 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// Hands a finished DMA transfer of this processor to its queue pair.
    pub fn on_dma_done<H: Traced>(
        &mut self,
        cluster: &mut Cluster<H>,
        done: &DmaCompletion,
    ) -> Result<(), HostError> {
        for q in &mut self.queues {
            if q.on_dma_done(cluster, done)? {
                break;
            }
        }
        Ok(())
    }
}
