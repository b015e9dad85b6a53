//! Whole-scenario figures: the real-time factor of a saturated 16-processor
//! cluster, and the peak memory of the large example (run in a child
//! process, so the figure is that run's alone).

use std::path::PathBuf;

use snet_testbench::run::{RunOptions, run};
use snet_testbench::scenario::Scenario;

use super::{Budget, Figure};

/// 16 processors, two adapters (primary and backup), the monolithic model
/// on every processor, and 64 closed-loop clients asking for 64 KiB each:
/// the adapter's 1 Gbit/s port is the bottleneck.
pub const SATURATED_16CPU: &str = r#"
name: saturated-16cpu-1gbe
duration: DURATION
fabric: { shape: star, routers: 3 }
processors: { count: 16 }
adapters:
  - { name: lan0, ip: 198.18.0.10, mac: "02:00:00:00:00:10", role: primary, link_speed: 1Gbit/s }
  - { name: lan1, ip: 198.18.0.10, mac: "02:00:00:00:00:11", role: backup, link_speed: 1Gbit/s }
apps:
  - { model: monolithic, port: 80, work: 5us }
clients:
  - { count: 64, target: "198.18.0.10:80", request: 200B, response: 64KiB, requests_per_connection: 8 }
expect:
  - no_data_lost_on_survivors
  - throughput_at_least: 800Mbit/s
"#;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// The figures.
pub fn figures(budget: Budget) -> Vec<Figure> {
    let quick = budget.min_secs < 1.0;
    let mut out = Vec::new();
    let duration = if quick { "20ms" } else { "100ms" };
    let yaml = SATURATED_16CPU.replace("DURATION", duration);
    match Scenario::from_yaml_str(&yaml, "saturated-16cpu-1gbe")
        .map_err(|e| e.to_string())
        .and_then(|s| run(&s, RunOptions::default()).map_err(|e| e.to_string()))
    {
        Ok(r) => {
            if !r.passed {
                eprintln!(
                    "scenario.rtf_16cpu_1gbe: the scenario did not pass:\n{}",
                    r.table()
                );
            }
            out.push(
                Figure::plain(
                    "scenario.rtf_16cpu_1gbe",
                    r.real_time_factor,
                    "virtual s per wall s",
                )
                .with_target(1.0),
            );
            out.push(Figure::plain(
                "scenario.goodput_mbit_s_16cpu_1gbe",
                r.throughput_bit_s / 1e6,
                "Mbit/s",
            ));
        }
        Err(e) => eprintln!("scenario.rtf_16cpu_1gbe: {e}"),
    }
    // Peak memory of the large cluster, in a child process.
    let (file, name) = if quick {
        ("large/ci.yaml", "scenario.rss_mib_384cpu_10k_conns")
    } else {
        ("large/full.yaml", "scenario.rss_mib_384cpu_100k_conns")
    };
    let json = std::env::temp_dir().join(format!("snet-bench-large-{}.json", std::process::id()));
    let child = std::env::current_exe().and_then(|exe| {
        std::process::Command::new(exe)
            .arg("run")
            .arg(examples().join(file))
            .arg("--quiet")
            .arg("--json")
            .arg(&json)
            .stdout(std::process::Stdio::null())
            .status()
    });
    match child {
        Ok(_) => {
            let v: Option<serde_json::Value> = std::fs::read_to_string(&json)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
            let _ = std::fs::remove_file(&json);
            match v
                .as_ref()
                .and_then(|v| v.get("peak_rss_mib"))
                .and_then(|x| x.as_f64())
            {
                Some(mib) => {
                    let mut f = Figure::plain(name, mib, "MiB");
                    if !quick {
                        f = f.with_target(4096.0);
                    }
                    out.push(f);
                    if let Some(rtf) = v.as_ref().and_then(|v| v["real_time_factor"].as_f64()) {
                        out.push(Figure::plain(
                            &name.replace("rss_mib", "rtf"),
                            rtf,
                            "virtual s per wall s",
                        ));
                    }
                }
                None => eprintln!("{name}: the run wrote no peak memory"),
            }
        }
        Err(e) => eprintln!("{name}: cannot start the run: {e}"),
    }
    out
}
