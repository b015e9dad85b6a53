//! # snet-testbench: scenarios, workloads, faults and reports
//!
//! - [`scenario`]: the YAML scenario format — the cluster (fabric, processors,
//!   adapters, stack, firmware), the applications and client populations, the
//!   fault schedule and the expectations — with a loader that reports every
//!   problem with its file, line, column and field path.
//!
//! - [`run`]: the runtime — builds the cluster from a scenario, runs the
//!   server models ([`run::models`]) and client populations
//!   ([`run::clients`]), applies the faults, judges the expectations and
//!   writes the report ([`run::report`]).
//!
//! - [`spof`]: the single-point-of-failure sweep — the scenario once per
//!   component of its topology, with that component failed.
//!
//! - [`trace`]: the timeline of one connection across client, adapter,
//!   fabric and processor, from the run's captures.
//!
//! - [`parallel`]: whole runs on several threads, results in input order.

pub mod parallel;
pub mod run;
pub mod scenario;
pub mod spof;
pub mod trace;
