//! `snet validate`: check scenario files without running them. Every problem
//! is printed as `FILE:LINE:COLUMN: FIELD: what is wrong and what is allowed`.

use std::path::PathBuf;

use snet_testbench::scenario::Scenario;

/// Arguments of `snet validate`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Example: a scenario file, lab.yaml

  name: lab
  processors: { count: 4 }
  apps:
    - { model: monolithic, port: 23 }
  clients:
    - { count: 200, target: \"198.18.0.10:23\", request: 64B, rate: 5k/s }
  faults:
    - { at: 20ms, fail: processor 2 }
  expect:
    - no_data_lost_on_survivors

  $ snet validate lab.yaml
  ok: lab.yaml (4 processors, 1 adapter, 1 app, 200 clients in 1 population, 1 fault, 1 expectation; servernet2 fabric, planes x, y, single_router, 10 links; parallel stack; 100ms)

With `target: \"198.18.0.99:23\"` instead:

  $ snet validate lab.yaml
  lab.yaml:6:27: clients[0].target: adapter IP 198.18.0.99 is not served by any adapter (adapters: lan0 198.18.0.10)
  invalid: lab.yaml (1 problem)

The format is described field by field in docs/scenario-reference.md.

Exit codes: 0 every file is valid, 2 a file is invalid or cannot be read.")]
pub struct ValidateArgs {
    /// Scenario files (YAML).
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// Print only the problems, nothing for valid files.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Checks every file; prints `ok: FILE (summary)` or its problems.
pub fn run(args: &ValidateArgs) -> u8 {
    let mut invalid = 0usize;
    for file in &args.files {
        match Scenario::load(file) {
            Ok(s) => {
                if !args.quiet {
                    println!("ok: {} ({})", file.display(), s.summary());
                }
            }
            Err(e) => {
                invalid += 1;
                eprintln!("{e}");
                let n = e.issues().len();
                if n > 0 {
                    eprintln!(
                        "invalid: {} ({n} problem{})",
                        file.display(),
                        if n == 1 { "" } else { "s" }
                    );
                }
            }
        }
    }
    if invalid == 0 {
        crate::EXIT_OK
    } else {
        crate::EXIT_USAGE
    }
}
