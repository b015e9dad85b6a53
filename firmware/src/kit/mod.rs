//! The filter-development kit: a packet builder, a PTF-style harness for
//! `cargo test`, a test-run that reports verdicts and nanoseconds per frame
//! (like `BPF_PROG_TEST_RUN`), and a pcap reader for real traffic.

mod harness;
pub mod invariants;
pub mod pcap;
mod testrun;

pub use crate::wire::builder::{ADAPTER_MAC, BuildError, CLIENT_MAC, PacketBuilder};
pub use harness::{Harness, Mismatch};
pub use testrun::{FrameResult, TestRunReport, describe_frame, test_run};
