//! A processor's side of its adapters: its queue pairs, and the routing of
//! the interrupts and DMA completions the cluster hands to it.

use snet_fabric::EndpointId;
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
        setup.base = ProcAddr(self.next_base);
        let qp = QueuePair::create(cluster, self.endpoint, nic, setup)?;
        self.next_base += setup.footprint();
        self.queues.push(qp);
        Ok(self.queues.len() - 1)
    }

    /// The queue pairs.
    pub fn queues(&self) -> &[QueuePair] {
        &self.queues
    }

    /// One queue pair.
    pub fn queue_mut(&mut self, i: usize) -> Option<&mut QueuePair> {
        self.queues.get_mut(i)
    }

    /// Takes every pending interrupt entry of the processor and hands each
    /// to the queue pair whose window it hit.
    pub fn on_interrupt<H: Traced>(&mut self, cluster: &mut Cluster<H>) -> Result<(), HostError> {
        while let Ok(Some(entry)) = cluster.fabric.pop_interrupt(self.endpoint) {
            match self.queues.iter_mut().find(|q| q.owns_interrupt(entry.key)) {
                Some(q) => q.on_interrupt(cluster, &entry)?,
                None => self.stray_interrupts += 1,
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
