//! `snet spof`: the single-point-of-failure sweep (see
//! `snet_testbench::spof`).

use std::path::PathBuf;
use std::sync::Mutex;

use snet_testbench::scenario::units::Duration;
use snet_testbench::spof::{Outcome, SweepOptions, sweep};

/// Arguments of `snet spof`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Example: one adapter and one plane, so both are single points of failure

  $ snet spof examples/spof/single.yaml
  spof sweep of spof-single: 12 components, each failed alone at 500ms of 2s (seed 1)
  baseline (no failure): passed

    component     SPOF    reset failed    lost B  what
    processor 0   no          2      0         0
    …
    adapter lan0  YES         0      0         0  no_stalled_connections 750.000ms (8 open connections …)
    plane x       YES         0      0         0  no_stalled_connections 750.000ms (…)
    …
  8 single points of failure: adapter lan0, plane x, router x0, link 0, link 1, link 2, link 3, link 4

  $ snet spof examples/spof/dual.yaml --json spof.json
  …
  no single point of failure

Every processor, adapter, plane, router and link is failed alone at --at
(default: a quarter of the duration) in its own run of the scenario, on
every core.
The scenario's own faults are left out unless --keep-faults. A component
is a single point of failure when its run breaks an expectation that held
in the baseline run with no failure (see docs/spof.md).

Exit codes: 0 no single point of failure, 1 at least one (or the baseline
run fails), 2 the file is invalid or cannot be run.")]
pub struct SpofArgs {
    /// The scenario file (YAML; see docs/scenario-reference.md).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// When each component fails, virtual time: 20ms, 1.5s (default: a
    /// quarter of the scenario's duration).
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Sweep only these kinds of component: processor, adapter, plane,
    /// router, link (comma-separated).
    #[arg(long, value_name = "KINDS", value_delimiter = ',')]
    pub only: Vec<String>,
    /// Keep the scenario's own faults in every run.
    #[arg(long)]
    pub keep_faults: bool,
    /// Use this seed instead of the file's.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Threads (default: the machine's cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Also write the sweep as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Runs the sweep and prints the table.
pub fn run(args: &SpofArgs) -> u8 {
    let Some(scenario) = crate::load_scenario(&args.file) else {
        return crate::EXIT_USAGE;
    };
    let at = match args.at.as_deref().map(str::parse::<Duration>).transpose() {
        Ok(at) => at,
        Err(e) => {
            eprintln!("--at: {e}");
            return crate::EXIT_USAGE;
        }
    };
    if args.jobs == Some(0) {
        eprintln!("--jobs: give at least 1");
        return crate::EXIT_USAGE;
    }
    let options = SweepOptions {
        at,
        keep_faults: args.keep_faults,
        seed: args.seed,
        jobs: args.jobs,
        base_dir: args.file.parent().map(PathBuf::from),
        only: args.only.clone(),
    };
    let bar = Mutex::new(crate::progress::Bar::new(!args.quiet));
    let progress = |done: usize, total: usize, r: &Outcome| {
        let name = r
            .component
            .as_ref()
            .map_or("baseline".to_string(), |c| c.name.clone());
        log::info!("{name}: {}", if r.passed { "passed" } else { "FAILED" });
        if let Ok(mut b) = bar.lock() {
            b.update(
                done as f64 / total as f64,
                &format!("{done}/{total} runs, last: {name}"),
            );
        }
    };
    let result = sweep(&scenario, &options, &progress);
    if let Ok(mut b) = bar.lock() {
        b.finish();
    }
    let sweep = match result {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: cannot sweep: {e}", args.file.display());
            return crate::EXIT_USAGE;
        }
    };
    print!("{}", sweep.table());
    if let Some(path) = &args.json
        && let Err(e) = std::fs::write(path, sweep.to_json())
    {
        eprintln!("--json {}: {e}", path.display());
        return crate::EXIT_USAGE;
    }
    if !sweep.baseline.passed {
        eprintln!(
            "the scenario fails with no component failed: fix it first (snet run {})",
            args.file.display()
        );
        return crate::EXIT_CHECK_FAILED;
    }
    if let Some(r) = sweep.runs.iter().find(|r| r.error.is_some()) {
        eprintln!(
            "a sweep run could not happen: {}",
            r.error.as_deref().unwrap_or_default()
        );
        return crate::EXIT_USAGE;
    }
    if sweep.passed() {
        crate::EXIT_OK
    } else {
        crate::EXIT_CHECK_FAILED
    }
}
