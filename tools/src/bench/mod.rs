//! `snet bench`: performance figures, each a ratio against a baseline measured
//! in the same process and the same run (absolute times drift on shared machines).

use std::time::Instant as WallInstant;

use serde::Serialize;

mod fabric;
mod firmware;
mod nic;
mod scenario;
mod tcp;

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// Stable dotted name, e.g. `engine.vs_bare_heap`.
    pub name: String,
    /// The measured value.
    pub value: f64,
    /// Unit of `value` (`events/s`, `ratio`, `B`, …).
    pub unit: String,
    /// What the value is compared with, measured in the same run (if any).
    pub baseline: Option<f64>,
    /// `value / baseline` when a baseline exists.
    pub ratio: Option<f64>,
    /// The target the issue set for this figure, if any (a ratio or value).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<f64>,
}

impl Figure {
    /// A figure with no baseline.
    pub fn plain(name: &str, value: f64, unit: &str) -> Self {
        Figure {
            name: name.into(),
            value,
            unit: unit.into(),
            baseline: None,
            ratio: None,
            target: None,
        }
    }

    /// A figure compared with a baseline measured in the same run.
    pub fn versus(name: &str, value: f64, unit: &str, baseline: f64) -> Self {
        Figure {
            name: name.into(),
            value,
            unit: unit.into(),
            baseline: Some(baseline),
            ratio: Some(if baseline > 0.0 {
                value / baseline
            } else {
                0.0
            }),
            target: None,
        }
    }

    /// Sets the target.
    pub fn with_target(mut self, target: f64) -> Self {
        self.target = Some(target);
        self
    }
}

/// Arguments of `snet bench`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  snet bench --quick\n  snet bench --json > figures.json\n  snet bench --filter fabric"
)]
pub struct BenchArgs {
    /// Short runs (under 20 s in all), for CI.
    #[arg(long)]
    pub quick: bool,
    /// Print `{"figures":[…]}` as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Only run figures whose name contains this text.
    #[arg(long, value_name = "TEXT")]
    pub filter: Option<String>,
}

/// How long to measure each side of a comparison.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Minimum wall time per measurement, in seconds.
    pub min_secs: f64,
    /// Number of repeated measurements; the best is kept.
    pub repeats: usize,
}

impl Budget {
    fn from_args(args: &BenchArgs) -> Self {
        if args.quick {
            Budget {
                min_secs: 0.2,
                repeats: 3,
            }
        } else {
            Budget {
                min_secs: 1.0,
                repeats: 5,
            }
        }
    }
}

/// Runs `f` (which does `n` units of work per call and returns a value that
/// is kept alive) repeatedly for at least `budget.min_secs`, `budget.repeats`
/// times, and returns the best rate in units per second.
pub fn best_rate<F: FnMut() -> u64>(budget: Budget, mut f: F) -> f64 {
    let mut best = 0.0f64;
    for _ in 0..budget.repeats {
        let start = WallInstant::now();
        let mut units = 0u64;
        loop {
            units += f();
            let el = start.elapsed().as_secs_f64();
            if el >= budget.min_secs {
                best = best.max(units as f64 / el);
                break;
            }
        }
    }
    best
}

type Section = fn(Budget) -> Vec<Figure>;

fn sections() -> Vec<(&'static str, Section)> {
    vec![
        ("engine+fabric", fabric::figures),
        ("firmware", firmware::figures),
        ("nic", nic::figures),
        ("tcp", tcp::figures),
        ("scenario", scenario::figures),
    ]
}

/// Runs the benchmarks and prints the figures. Returns the exit code.
pub fn run(args: &BenchArgs) -> u8 {
    let budget = Budget::from_args(args);
    let mut figures = Vec::new();
    // A section named "engine+fabric" makes figures named engine.* and fabric.*.
    // A filter that names a section (or a prefix of its figures) runs only that
    // section; any other text runs them all and keeps the figures containing it.
    let all = sections();
    let by_prefix: Vec<_> = match &args.filter {
        Some(f) => all
            .iter()
            .copied()
            .filter(|(prefix, _)| {
                prefix
                    .split('+')
                    .any(|p| f.starts_with(p) || p.starts_with(f.as_str()))
            })
            .collect(),
        None => all.clone(),
    };
    let chosen = if by_prefix.is_empty() { all } else { by_prefix };
    for (prefix, section) in chosen {
        if !args.json {
            eprintln!("measuring {prefix}…");
        }
        figures.extend(section(budget));
    }
    if let Some(f) = &args.filter {
        figures.retain(|fig| fig.name.contains(f.as_str()));
        if figures.is_empty() {
            eprintln!(
                "snet bench: no figure name contains {f:?}; names start with {}",
                sections()
                    .iter()
                    .map(|(p, _)| p.replace('+', ".*, ") + ".*")
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            return crate::EXIT_USAGE;
        }
    }
    if args.json {
        let out = serde_json::json!({ "figures": figures });
        println!(
            "{}",
            serde_json::to_string_pretty(&out).expect("figures serialize")
        );
    } else {
        print_table(&figures);
    }
    crate::EXIT_OK
}

fn print_table(figures: &[Figure]) {
    println!(
        "{:<34} {:>16} {:<10} {:>16} {:>9} {:>8}",
        "figure", "value", "unit", "baseline", "ratio", "target"
    );
    for f in figures {
        let baseline = f
            .baseline
            .map(|b| format!("{b:.4e}"))
            .unwrap_or_else(|| "-".into());
        let ratio = f
            .ratio
            .map(|r| format!("{r:.3}"))
            .unwrap_or_else(|| "-".into());
        let target = f
            .target
            .map(|t| format!("{t}"))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<34} {:>16} {:<10} {:>16} {:>9} {:>8}",
            f.name,
            format!("{:.4e}", f.value),
            f.unit,
            baseline,
            ratio,
            target
        );
    }
}
