//! # snet-firmware: the adapter's replicated TCP filter (sans-IO)
//!
//! The LAN adapter of a single-IP cluster carries a copy of part of the TCP
//! layer and sends each inbound frame straight to the processor that owns the
//! socket (US patents 6359886 and 6370583; the NonStop TCP/IPv6 "parallel
//! library" architecture). This crate is that firmware, with no I/O of its
//! own: frames, control messages and the current time go in; verdicts and
//! frames to send come out.
//!
//! - [`wire`]: zero-copy parsing of Ethernet/VLAN/ARP/IPv4/IPv6/TCP/UDP/ICMP
//!   into a [`wire::ParsedFrame`]; each malformed case is a [`DropReason`].
//! - [`filter`]: the [`filter::Filter`] trait and filter trees (if, case,
//!   leaf, and the host-installed dynamic nodes), in Rust or YAML.
//! - [`listener`]: listener groups with exclusive ownership or round-robin
//!   sharing, and the distribution policies ([`Policy`]).
//! - [`conntable`]: the bounded exact 5-tuple table with provisional entries.
//! - [`control`]: the versioned binary host ↔ firmware protocol, its
//!   authorisation rules and the table dump.
//! - [`Firmware`]: one adapter's instance; failure handling (processor down ⇒
//!   its connections answered with RST, master failover).
//! - [`kit`]: packet builder, PTF-style harness, test-run, pcap reader.
//!
//! Time is an [`Instant`] in nanoseconds passed by the caller.

pub mod config;
pub mod conntable;
pub mod control;
pub mod filter;
mod firmware;
pub mod fragment;
pub mod kit;
pub mod listener;
pub mod time;
pub mod tuple;
pub mod verdict;
pub mod wire;

pub use config::{Config, ConfigError, Policy, SharedPortRange};
pub use firmware::Firmware;
pub use time::Instant;
pub use tuple::FiveTuple;
pub use verdict::{Counters, DropReason, ProcessorId, QueueId, Verdict};
