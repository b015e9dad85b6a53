//! # snet-host-lib: the per-processor library
//!
//! Will hold what runs in each emulated processor: the mapping of its
//! processor memory, a DMA buffer pool of fixed-size chunks, the queue pairs it
//! shares with the adapter, and a TCP/IP instance per processor sharing the
//! cluster's single IP (sockets, connection hand-off, inter-processor
//! messages). Nothing is implemented yet; it builds on `snet-fabric`,
//! `snet-nic-model` and `snet-firmware`.
