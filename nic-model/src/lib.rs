//! # snet-nic-model: the smart LAN adapter
//!
//! Will hold the adapter model: a fabric endpoint with X and Y ports, its
//! Ethernet MAC (address filter, FCS, MTU, link speed), per-processor queue
//! pairs whose RX, TX and completion rings live in processor memory and are
//! reached only by fabric DMA through AVT windows, doorbells and a control
//! mailbox in CSR space, interrupt coalescing, and a firmware instance
//! (`snet-firmware`) that classifies every inbound frame. Nothing is
//! implemented yet; the fabric (`snet-fabric`) and the firmware come first.
