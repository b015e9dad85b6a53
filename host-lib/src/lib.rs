//! # snet-host-lib: the per-processor library
//!
//! What runs in each emulated processor, below its TCP/IP instance: the
//! processor's memory (the fabric endpoint's `memmap2` mapping), a pool of
//! fixed-size DMA buffers, and the queue pairs it shares with an adapter —
//! with zero-copy sends and receives: the application writes a frame into a
//! pool chunk and posts it; a received frame is lent in place.
//!
//! - [`mapper`]: the [`mapper::DmaMapper`] abstraction that makes exactly the
//!   rings and buffers of a processor reachable by its adapter, with an
//!   emulated backend (AVT windows on the fabric) and a VFIO backend (cargo
//!   feature `vfio`) with its IOVA allocator.
//! - [`queue`]: [`QueuePair`] — layout, buffer pool, rings, doorbells,
//!   completions, the mailbox to the adapter's firmware.
//! - [`processor`]: [`Processor`] — a processor's queue pairs, and the
//!   routing of its interrupts and DMA completions to them.
//! - [`stack`]: the TCP/IP instance of each processor (smoltcp over its
//!   queue pairs — it reads from every adapter and sends through the active
//!   one —, zero-copy tokens, neighbour learning from delivered frames).
//! - [`client`]: an emulated client host on the LAN with its own TCP/IP.
//! - [`net`]: the rig with a TCP/IP instance on every processor and client
//!   hosts, driven by one host model.
//! - [`rig`]: a small ready-made cluster (processors, adapters, a LAN
//!   client) for tests, examples and benchmarks.

pub mod app;
pub mod client;
pub mod conventional;
pub mod cpu;
pub mod ipc;
pub mod mapper;
pub mod net;
pub mod processor;
pub mod queue;
pub mod rig;
pub mod socket;
pub mod stack;

pub use processor::Processor;
pub use queue::{
    ControlOutcome, HostCounters, HostError, QueuePair, QueueSetup, QueueState, RxBuf, SendError,
    TxBuffer,
};
