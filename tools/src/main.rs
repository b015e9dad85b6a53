//! `snet`: the command line of the snet emulator.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod compare;
mod filter;
mod live;
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

/// Loads a scenario file, or says on standard error why it cannot (the
/// caller exits with [`EXIT_USAGE`]).
pub fn load_scenario(path: &std::path::Path) -> Option<snet_testbench::scenario::Scenario> {
    snet_testbench::scenario::Scenario::load(path)
        .map_err(|e| eprintln!("{e}"))
        .ok()
}

/// snet: an emulator of a ServerNet-style system-area fabric and the smart LAN
/// adapter of a single-IP cluster.
#[derive(Parser, Debug)]
#[command(
    name = "snet",
    version,
    about,
    long_about = None,
    after_help = "\
Examples:

  $ snet run examples/quickstart.yaml --html report.html --pcap captures/
  $ snet spof examples/spof/dual.yaml
  $ snet trace examples/quickstart.yaml --fabric
  $ sudo snet live examples/live-http.yaml --tap snet0 --tap-address 198.18.0.1/15

Every command has --help with an example. Exit codes: 0 ok, 1 an
expectation or check failed, 2 invalid input or usage. Logging goes to
standard error and is quiet by default: RUST_LOG=info (or debug) says more."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Shells `snet completions` writes for.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Measure the model's speed against baselines run in the same process.
    Bench(bench::BenchArgs),
    /// Run several scenarios and put hops and CPU per transaction side by side.
    Compare(compare::CompareArgs),
    /// Test-run an adapter filter on frames: verdict and ns/frame for each.
    Filter(filter::FilterArgs),
    /// Run a scenario's cluster in real time against real clients on a TAP device.
    Live(live::LiveArgs),
    /// Run a scenario: the cluster, its clients and faults; judge its expectations.
    Run(run::RunArgs),
    /// Fail every component alone, one run each: which ones break the service?
    Spof(spof::SpofArgs),
    /// Follow one connection across client, adapter, fabric and processor.
    Trace(trace::TraceArgs),
    /// Print a shell completion script: bash, zsh or fish.
    #[command(after_help = "\
Examples:

  $ snet completions bash > ~/.local/share/bash-completion/completions/snet
  $ snet completions zsh > ~/.zfunc/_snet        # with fpath+=(~/.zfunc) in ~/.zshrc
  $ snet completions fish > ~/.config/fish/completions/snet.fish")]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Check scenario files: every problem with its file, line and field.
    Validate(validate::ValidateArgs),
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Bench(args) => bench::run(&args),
        Command::Compare(args) => compare::run(&args),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let shell = match shell {
                Shell::Bash => clap_complete::Shell::Bash,
                Shell::Zsh => clap_complete::Shell::Zsh,
                Shell::Fish => clap_complete::Shell::Fish,
            };
            clap_complete::generate(shell, &mut cmd, "snet", &mut std::io::stdout());
            EXIT_OK
        }
        Command::Filter(args) => filter::run(&args),
        Command::Live(args) => live::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Spof(args) => spof::run(&args),
        Command::Trace(args) => trace::run(&args),
        Command::Validate(args) => validate::run(&args),
    };
    ExitCode::from(code)
}
