//! # snet-testbench: scenarios, workloads, faults and reports
//!
//! - [`scenario`]: the YAML scenario format — the cluster (fabric, processors,
//!   adapters, stack, firmware), the applications and client populations, the
//!   fault schedule and the expectations — with a loader that reports every
//!   problem with its file, line, column and field path.
//!
//! To come: the five server models of the NonStop white paper, the runtime
//! that drives every other crate, and the terminal and JSON reports.

pub mod scenario;
