//! `snet run`: run a scenario and report.

use std::path::PathBuf;

use snet_testbench::run::{RunError, RunOptions, html, run as run_scenario};

/// Arguments of `snet run`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Example:

  $ snet run examples/quickstart.yaml --json report.json --html report.html --pcap captures/
  scenario quickstart  seed 1  stack parallel  virtual 100.000ms  wall 0.84s  rtf 0.119
  ...
   cpu   up    taken   served  handed  requests     bytes in    bytes out  busy%     hops  hops/txn
     0  yes       50       50       0       812        51968       831488   21.4        0      0.00
  ...
  expectations:
    ✓ no_data_lost_on_survivors: 0 bytes lost or corrupted on 0 connections of surviving processors
    ✓ even_distribution (tolerance 0.1): connections per front-end processor [(0, 50), (1, 50), (2, 50), (3, 50)], …
  PASSED

The same file and seed always give the same trace_hash.

Exit codes: 0 every expectation held, 1 an expectation failed (or an
application met an error), 2 the file is invalid or cannot be run.")]
pub struct RunArgs {
    /// The scenario file (YAML; see docs/scenario-reference.md).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Use this seed instead of the file's.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Write the report as JSON (fields: docs/report-reference.md).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML report with plots.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Write packet captures into this directory: one per adapter's LAN
    /// port (Ethernet) and fabric.pcap (fabric packets).
    #[arg(long, value_name = "DIR")]
    pub pcap: Option<PathBuf>,
    /// No progress bar and no table; only the verdict line.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Runs the scenario; prints the table; writes the reports.
pub fn run(args: &RunArgs) -> u8 {
    let Some(scenario) = crate::load_scenario(&args.file) else {
        return crate::EXIT_USAGE;
    };
    let mut bar = crate::progress::Bar::new(!args.quiet);
    let progress: Box<dyn FnMut(_, _)> = Box::new(
        move |done: snet_fabric::time::Duration, total: snet_fabric::time::Duration| {
            let frac = done.as_ps() as f64 / total.as_ps().max(1) as f64;
            bar.update(
                frac,
                &format!(
                    "{:.3} of {:.3} virtual s",
                    done.as_secs_f64(),
                    total.as_secs_f64()
                ),
            );
            if frac >= 1.0 {
                bar.finish();
            }
        },
    );
    let options = RunOptions {
        seed: args.seed,
        pcap: args.pcap.clone(),
        base_dir: args.file.parent().map(PathBuf::from),
        progress: Some(progress),
        ..RunOptions::default()
    };
    log::info!("running {} ({})", args.file.display(), scenario.summary());
    let report = match run_scenario(&scenario, options) {
        Ok(r) => r,
        Err(RunError::Invalid(e)) => {
            eprintln!("{}: cannot run: {e}", args.file.display());
            return crate::EXIT_USAGE;
        }
        Err(RunError::Io(e)) => {
            eprintln!("{}: {e}", args.file.display());
            return crate::EXIT_USAGE;
        }
    };
    if args.quiet {
        println!(
            "{}: {} (seed {}, trace_hash {})",
            scenario.name,
            if report.passed { "PASSED" } else { "FAILED" },
            report.seed,
            report.trace_hash
        );
    } else {
        print!("{}", report.table());
        println!(
            "reproduce: snet run {} --seed {}",
            args.file.display(),
            report.seed
        );
    }
    if let Some(path) = &args.json
        && let Err(e) = std::fs::write(path, json_with_memory(&report))
    {
        eprintln!("--json {}: {e}", path.display());
        return crate::EXIT_USAGE;
    }
    if let Some(path) = &args.html
        && let Err(e) = std::fs::write(path, html::render(&report))
    {
        eprintln!("--html {}: {e}", path.display());
        return crate::EXIT_USAGE;
    }
    if report.passed {
        crate::EXIT_OK
    } else {
        crate::EXIT_CHECK_FAILED
    }
}

/// The report's JSON plus `peak_rss_mib`: this process's peak resident
/// memory (like the wall time, a property of the machine and the run, not
/// of the model).
fn json_with_memory(report: &snet_testbench::run::report::Report) -> String {
    let mut v: serde_json::Value = match serde_json::from_str(&report.to_json()) {
        Ok(v) => v,
        Err(_) => return report.to_json(),
    };
    if let Some(kib) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse::<f64>().ok())
        })
    {
        v["peak_rss_mib"] = serde_json::json!(kib / 1024.0);
    }
    serde_json::to_string_pretty(&v).unwrap_or_else(|_| report.to_json())
}
