//! The single-point-of-failure sweep on the two examples: one adapter and
//! one plane are single points of failure; with everything doubled there
//! is none. (CI sweeps every component of both with the release build;
//! here, for time, the adapters and planes.)

use std::path::Path;

use snet_testbench::scenario::Scenario;
use snet_testbench::spof::{Sweep, SweepOptions, sweep};

fn sweep_of(file: &str, only: &[&str]) -> Sweep {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/spof")
        .join(file);
    let mut s = Scenario::load(&path).expect("the example loads");
    // Shorter than the examples' 2s, for a debug build: the failure at
    // 200ms leaves a second for TCP to recover (the stall bound is 500ms).
    s.duration = "1200ms".parse().unwrap();
    let o = SweepOptions {
        only: only.iter().map(|k| k.to_string()).collect(),
        at: Some("200ms".parse().unwrap()),
        ..SweepOptions::default()
    };
    sweep(&s, &o, &|_, _, _| {}).expect("the sweep runs")
}

#[test]
fn one_adapter_and_one_plane_are_single_points_of_failure() {
    let w = sweep_of("single.yaml", &["adapter", "plane"]);
    assert!(w.baseline.passed, "{}", w.table());
    assert_eq!(
        w.single_points_of_failure,
        ["adapter lan0", "plane x"],
        "{}",
        w.table()
    );
    for r in &w.runs {
        assert!(
            r.broken
                .iter()
                .any(|b| b.expectation.starts_with("no_stalled_connections")),
            "clients hang after {:?}: {}",
            r.component,
            w.table()
        );
    }
    assert!(!w.passed());
    let json: serde_json::Value = serde_json::from_str(&w.to_json()).unwrap();
    assert_eq!(json["single_points_of_failure"][1], "plane x");
    assert_eq!(json["runs"][0]["component"]["kind"], "adapter");
}

#[test]
fn dual_everything_has_no_single_point_of_failure() {
    let w = sweep_of("dual.yaml", &["adapter", "plane"]);
    assert!(w.passed(), "{}", w.table());
    assert_eq!(w.runs.len(), 4);
    // The failures did happen: traffic moved to the survivors.
    assert!(w.runs.iter().all(|r| r.error.is_none() && r.passed));
    assert!(w.table().contains("no single point of failure"));
}
