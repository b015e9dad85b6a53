//! # snet-firmware: the adapter's replicated TCP filter (sans-IO)
//!
//! Will hold the firmware every adapter runs: frame classification through a
//! filter tree, listener groups with round-robin distribution, the connection
//! table, the host-to-firmware control protocol, and the filter-development kit.
