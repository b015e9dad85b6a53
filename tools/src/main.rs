//! `snet`: the command line of the snet emulator.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod compare;
mod filter;
mod progress;
mod run;
mod spof;
mod trace;
mod validate;

/// Exit code for success.
pub const EXIT_OK: u8 = 0;
/// Exit code when an expectation or check failed.
pub const EXIT_CHECK_FAILED: u8 = 1;
/// Exit code for invalid input or usage.
pub const EXIT_USAGE: u8 = 2;

/// snet: an emulator of a ServerNet-style system-area fabric and the smart LAN
/// adapter of a single-IP cluster.
#[derive(Parser, Debug)]
#[command(name = "snet", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Measure the model's speed against baselines run in the same process.
    Bench(bench::BenchArgs),
    /// Run several scenarios and put hops and CPU per transaction side by side.
    Compare(compare::CompareArgs),
    /// Test-run an adapter filter on frames: verdict and ns/frame for each.
    Filter(filter::FilterArgs),
    /// Run a scenario: the cluster, its clients and faults; judge its expectations.
    Run(run::RunArgs),
    /// Fail every component alone, one run each: which ones break the service?
    Spof(spof::SpofArgs),
    /// Follow one connection across client, adapter, fabric and processor.
    Trace(trace::TraceArgs),
    /// Check scenario files: every problem with its file, line and field.
    Validate(validate::ValidateArgs),
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Bench(args) => bench::run(&args),
        Command::Compare(args) => compare::run(&args),
        Command::Filter(args) => filter::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Spof(args) => spof::run(&args),
        Command::Trace(args) => trace::run(&args),
        Command::Validate(args) => validate::run(&args),
    };
    ExitCode::from(code)
}
