//! # snet-testbench: scenarios, workloads, faults and reports
//!
//! Will hold the YAML scenario loader (topologies, processors, adapters,
//! applications, client populations, fault schedules, expectations), the five
//! server models of the NonStop white paper, and the terminal and JSON
//! reports. Nothing is implemented yet; it drives every other crate.
