//! # snet-fabric: the ServerNet-style system-area fabric
//!
//! The interconnect of an snet cluster and the deterministic engine that
//! drives every model in snet:
//!
//! - [`time`]: virtual time ([`time::Instant`], [`time::Duration`], picoseconds) and link speeds.
//! - [`engine`]: the discrete-event scheduler ordered by (time, sequence), the one
//!   seeded RNG with per-component streams, and the running `trace_hash`.
//! - [`packet`]: the packet format (8-byte header, address, payload, CRC) as
//!   zero-copy views and `Repr`s.
//! - [`memory`]: processor memories (`memmap2` regions) with bounds-checked access.
//! - [`avt`]: access validation and translation (DMA windows) and interrupt queues.
//! - [`topology`]: endpoints, routers, links on the X and Y planes, routing tables.
//! - [`network`]: the timed model: wormhole/cut-through routers, links with
//!   credits, transactions, the DMA (block transfer) engine, faults and counters.
//!
//! Everything in the model is polled with the current virtual time; nothing reads
//! the wall clock. See `docs/ARCHITECTURE.md` at the repository root.

pub mod avt;
pub mod engine;
pub mod ids;
pub mod memory;
pub mod network;
pub mod packet;
pub mod time;
pub mod topology;

pub use ids::{EndpointId, FabricAddr, NackReason, Plane, WindowKey};

/// The README's code runs as a doctest, so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
