//! `snet compare`: run several scenarios (on both cores) and put their
//! hops and CPU time per transaction side by side.

use std::path::PathBuf;

use snet_testbench::run::report::Report;
use snet_testbench::run::{RunOptions, run as run_scenario};
use snet_testbench::scenario::Scenario;

/// Arguments of `snet compare`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Example: the white paper's comparison, each server model on both stacks

  $ snet compare examples/hop-cost/*.yaml
  model          hops/txn parallel  conventional   CPU µs/txn parallel  conventional  ratio
  broker                      0.00          1.52                  61.2         121.9   1.99
  …

Scenarios whose names end in -parallel and -conventional are paired on one
row; any other scenario gets a row of its own.

Exit codes: 0 every scenario passed its expectations, 1 one did not, 2 a
file is invalid or cannot be run.")]
pub struct CompareArgs {
    /// Scenario files.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// Also write every report, as a JSON list.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Threads (default: the machine's cores).
    #[arg(long)]
    pub jobs: Option<usize>,
}

fn run_one(file: &PathBuf) -> Result<Report, String> {
    let s = Scenario::load(file).map_err(|e| e.to_string())?;
    run_scenario(
        &s,
        RunOptions {
            base_dir: file.parent().map(PathBuf::from),
            ..RunOptions::default()
        },
    )
    .map_err(|e| format!("{}: cannot run: {e}", file.display()))
}

/// Runs every file and prints the table.
pub fn run(args: &CompareArgs) -> u8 {
    let jobs = args
        .jobs
        .unwrap_or_else(snet_testbench::parallel::cores)
        .max(1);
    let results = snet_testbench::parallel::map(
        &args.files,
        jobs,
        |_, f| {
            log::info!("running {}", f.display());
            run_one(f)
        },
        |_, _| {},
    );
    let mut reports = Vec::new();
    for r in results {
        match r {
            Ok(rep) => reports.push(rep),
            Err(e) => {
                eprintln!("{e}");
                return crate::EXIT_USAGE;
            }
        }
    }
    print!("{}", table(&reports));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&reports).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("--json {}: {e}", path.display());
            return crate::EXIT_USAGE;
        }
    }
    if reports.iter().all(|r| r.passed) {
        crate::EXIT_OK
    } else {
        for r in reports.iter().filter(|r| !r.passed) {
            eprintln!("{}: FAILED (snet run it for the details)", r.scenario);
        }
        crate::EXIT_CHECK_FAILED
    }
}

/// The side-by-side table.
pub fn table(reports: &[Report]) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let mut groups: Vec<(String, Option<&Report>, Option<&Report>)> = Vec::new();
    for r in reports {
        let (key, par) = if let Some(k) = r.scenario.strip_suffix("-parallel") {
            (k.to_string(), Some(true))
        } else if let Some(k) = r.scenario.strip_suffix("-conventional") {
            (k.to_string(), Some(false))
        } else {
            (r.scenario.clone(), None)
        };
        let slot = match groups.iter().position(|g| g.0 == key && par.is_some()) {
            Some(i) => i,
            None => {
                groups.push((key, None, None));
                groups.len() - 1
            }
        };
        match par {
            Some(false) => groups[slot].2 = Some(r),
            _ => groups[slot].1 = Some(r),
        }
    }
    let _ = writeln!(
        o,
        "{:<14} {:>17} {:>13}   {:>19} {:>13} {:>6}   {:>10} {:>12}",
        "model",
        "hops/txn parallel",
        "conventional",
        "CPU µs/txn parallel",
        "conventional",
        "ratio",
        "txn parallel",
        "conventional"
    );
    let f = |r: Option<&Report>, g: fn(&Report) -> f64, prec: usize| {
        r.map_or_else(|| "-".to_string(), |r| format!("{:.*}", prec, g(r)))
    };
    for (key, p, c) in &groups {
        let ratio = match (p, c) {
            (Some(p), Some(c)) if p.cpu_us_per_transaction > 0.0 => {
                format!("{:.2}", c.cpu_us_per_transaction / p.cpu_us_per_transaction)
            }
            _ => "-".into(),
        };
        let _ = writeln!(
            o,
            "{:<14} {:>17} {:>13}   {:>19} {:>13} {:>6}   {:>10} {:>12}",
            key,
            f(*p, |r| r.hops_per_transaction, 2),
            f(*c, |r| r.hops_per_transaction, 2),
            f(*p, |r| r.cpu_us_per_transaction, 1),
            f(*c, |r| r.cpu_us_per_transaction, 1),
            ratio,
            f(*p, |r| r.requests as f64, 0),
            f(*c, |r| r.requests as f64, 0),
        );
    }
    o
}
