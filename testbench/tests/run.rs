//! The scenario runtime end to end: every example passes its expectations,
//! runs are deterministic, each server model runs on both stacks, and a
//! failed expectation says which, with the numbers.

use std::path::{Path, PathBuf};

use snet_testbench::run::report::Report;
use snet_testbench::run::{RunError, RunOptions, run};
use snet_testbench::scenario::Scenario;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn run_file(path: &Path, seed: Option<u64>) -> Report {
    let s = Scenario::load(path).unwrap_or_else(|e| panic!("{e}"));
    run(
        &s,
        RunOptions {
            seed,
            base_dir: path.parent().map(PathBuf::from),
            ..RunOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn run_text(yaml: &str) -> Report {
    let s = Scenario::from_yaml_str(yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}"));
    run(&s, RunOptions::default()).unwrap()
}

fn expectation<'a>(
    r: &'a Report,
    name: &str,
) -> &'a snet_testbench::run::report::ExpectationReport {
    r.expectations
        .iter()
        .find(|e| e.name.starts_with(name))
        .unwrap_or_else(|| panic!("no expectation {name} in {:?}", r.expectations))
}

#[test]
fn the_quickstart_passes_and_reports_what_happened() {
    let r = run_file(&examples().join("quickstart.yaml"), None);
    assert!(r.passed, "{}", r.table());
    assert_eq!(r.virtual_time_ns, 100_000_000);
    assert_eq!(r.processors.len(), 4);
    assert!(!r.processors[2].up);
    assert_eq!(r.processors[2].failed_at_ns, Some(40_000_000));
    // Every processor served connections, the survivors more than the
    // processor that died at 40 ms.
    for p in [0, 1, 3] {
        assert!(
            r.processors[p].accepted > r.processors[2].accepted,
            "{}",
            r.table()
        );
    }
    assert!(r.connections.completed > 1000, "{}", r.table());
    assert!(
        r.connections.reset > 0,
        "the failed processor's clients are reset"
    );
    // Only attempts caught in their handshake with processor 2 may fail.
    assert!(r.connections.failed < 10, "{}", r.table());
    assert!(r.requests > 4 * r.connections.completed / 2);
    assert_eq!(r.faults.len(), 1);
    assert_eq!(r.faults[0].outcome, "applied");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.timeline.at_ns.len(), 100);
    assert_eq!(r.timeline.accepted.len(), 4);
    // The JSON has the documented top-level fields.
    let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    for f in [
        "scenario",
        "seed",
        "passed",
        "trace_hash",
        "virtual_time_ns",
        "wall_time_s",
        "real_time_factor",
        "processors",
        "connections",
        "bytes",
        "faults",
        "expectations",
    ] {
        assert!(v.get(f).is_some(), "no field {f}");
    }
}

#[test]
fn the_same_file_and_seed_give_the_same_trace_hash() {
    let path = examples().join("quickstart.yaml");
    let a = run_file(&path, None);
    let b = run_file(&path, None);
    assert_eq!(a.trace_hash, b.trace_hash);
    let strip = |r: &Report| {
        let mut v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        v["wall_time_s"] = 0.into();
        v["real_time_factor"] = 0.into();
        v
    };
    assert_eq!(
        strip(&a),
        strip(&b),
        "every figure is the same, not only the hash"
    );
    // With random arrivals, another seed is another run.
    let open_loop = |seed: u64| {
        let s = Scenario::from_yaml_str(
            &format!(
                "name: poisson\nseed: {seed}\nduration: 10ms\napps:\n  - {{ model: echo, port: 7 }}\nclients:\n  - {{ count: 8, target: \"198.18.0.10:7\", rate: 20k/s }}\n"
            ),
            "poisson.yaml",
        )
        .unwrap();
        run(&s, RunOptions::default()).unwrap()
    };
    let (x, y, z) = (open_loop(1), open_loop(1), open_loop(99));
    assert_eq!(x.trace_hash, y.trace_hash);
    assert_eq!(z.seed, 99);
    assert_ne!(
        x.trace_hash, z.trace_hash,
        "another seed, other arrival times"
    );
    assert!(x.requests > 100 && z.requests > 100, "{}", x.table());
}

#[test]
fn every_example_passes_its_expectations() {
    let mut files = Vec::new();
    let mut dirs = vec![examples()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml")
                // The large cluster runs in release builds (CI runs
                // examples/large/ci.yaml with snet run); the sweep
                // examples run 2s each, which tests/spof.rs covers (and
                // CI sweeps them whole).
                && !p.to_string_lossy().contains("large")
                && !p.to_string_lossy().contains("spof")
            {
                files.push(p);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 19, "{files:?}");
    for f in files {
        let r = run_file(&f, None);
        assert!(r.passed, "{}:\n{}", f.display(), r.table());
    }
}

#[test]
fn the_conventional_stack_costs_about_twice_the_cpu_per_transaction() {
    for model in ["monolithic", "listener", "distributor", "hybrid", "broker"] {
        let dir = examples().join("hop-cost");
        let p = run_file(&dir.join(format!("{model}-parallel.yaml")), None);
        let c = run_file(&dir.join(format!("{model}-conventional.yaml")), None);
        assert!(p.passed && c.passed, "{model}");
        let ratio = c.cpu_us_per_transaction / p.cpu_us_per_transaction;
        assert!(
            (1.5..3.0).contains(&ratio),
            "{model}: CPU per transaction {:.1} µs parallel, {:.1} µs conventional",
            p.cpu_us_per_transaction,
            c.cpu_us_per_transaction
        );
        assert!(
            c.hops_per_transaction > p.hops_per_transaction + 2.0,
            "{model}: every socket call is a hop on the conventional stack"
        );
    }
}

#[test]
fn a_failed_expectation_says_which_with_the_numbers() {
    let r = run_text(
        r#"
name: too-much
duration: 20ms
apps:
  - { model: echo, port: 7 }
clients:
  - { count: 8, target: "198.18.0.10:7", request: 100B, think: 1ms }
expect:
  - throughput_at_least: 10Gbit/s
  - latency_p99_at_most: 1us
  - survivors_take_new_connections
  - expr: "connections.completed == 0"
  - no_data_lost_on_survivors
"#,
    );
    assert!(!r.passed);
    let t = expectation(&r, "throughput_at_least");
    assert!(!t.passed && t.detail.contains("Mbit/s"), "{t:?}");
    let l = expectation(&r, "latency p99");
    assert!(!l.passed && l.value > 1.0, "{l:?}");
    let s = expectation(&r, "survivors_take_new_connections");
    assert!(
        !s.passed && s.detail.contains("no processor failed"),
        "{s:?}"
    );
    let e = expectation(&r, "expr");
    assert!(
        !e.passed && e.detail.contains("connections.completed = "),
        "{e:?}"
    );
    assert!(expectation(&r, "no_data_lost").passed);
    assert!(r.table().contains("✗ throughput_at_least"));
    // Echo: every request's 100 bytes came back (at most one request per
    // client was still on its way at the end).
    assert!(r.requests > 100);
    assert!(r.bytes.received >= r.requests * 100, "{}", r.table());
    assert!(r.bytes.received < (r.requests + 8) * 100, "{}", r.table());
    assert_eq!(r.bytes.lost, 0);
}

#[test]
fn udp_requests_are_answered_round_robin() {
    let r = run_text(
        r#"
name: udp
duration: 20ms
apps:
  - { model: echo, port: 53, protocol: udp }
clients:
  - { count: 8, target: "198.18.0.10:53", protocol: udp, request: 200B, think: 200us }
expect:
  - expr: "datagrams_answered >= 100"
"#,
    );
    assert!(r.passed, "{}", r.table());
    assert!(r.datagrams_answered * 100 >= r.datagrams_sent * 95);
    for p in &r.processors {
        assert!(
            p.requests > 0,
            "datagrams reach every processor: {}",
            r.table()
        );
    }
}

#[test]
fn ipv6_clients_reach_the_cluster() {
    let r = run_text(
        r#"
name: v6
duration: 20ms
adapters:
  - { name: lan0, ip: [198.18.0.10, "2001:db8::10"] }
apps:
  - { model: monolithic, port: 80 }
clients:
  - { count: 8, target: "[2001:db8::10]:80", request: 64B, response: 1KiB, requests_per_connection: 2 }
expect:
  - no_data_lost_on_survivors
  - all_survivor_connections_complete
  - even_distribution
"#,
    );
    assert!(r.passed, "{}", r.table());
    assert!(r.connections.completed > 50);
}

/// Why the loader or the runtime refuses `yaml` (panics if it runs).
fn refusal(yaml: &str) -> String {
    match Scenario::from_yaml_str(yaml, "refused.yaml") {
        Err(e) => e.to_string(),
        Ok(s) => match run(&s, RunOptions::default()) {
            Err(RunError::Invalid(m)) => m,
            other => panic!("ran: {:?}", other.map(|r| r.passed)),
        },
    }
}

#[test]
fn a_scenario_the_cluster_cannot_be_built_from_is_refused() {
    // Either the loader or the runtime refuses it, naming both adapters.
    let msg = refusal(
        r#"
name: two-ips
adapters:
  - { name: lan0, ip: 198.18.0.10 }
  - { name: lan1, ip: 198.18.0.11 }
"#,
    );
    assert!(msg.contains("lan1"), "{msg}");
}

#[test]
fn a_broker_back_end_whose_ports_run_past_65535_is_refused() {
    let msg = refusal(
        r#"
name: high-ports
apps:
  - { name: brk, model: broker, port: 9000, processors: [0], backend: srv }
  - { name: srv, model: monolithic, port: 65535, processors: [1, 2] }
clients:
  - { count: 1, target: "198.18.0.10:9000" }
"#,
    );
    assert!(msg.contains("65535"), "{msg}");
}

#[test]
fn an_http_app_listens_beside_the_built_in_clients_of_another_app() {
    let r = run_text(
        "name: mixed\nduration: 10ms\napps:\n  - { model: monolithic, port: 23 }\n  - { model: http, port: 80 }\nclients:\n  - { count: 8, target: \"198.18.0.10:23\" }\nexpect: [all_survivor_connections_complete]\n",
    );
    assert!(r.passed, "{}", r.table());
    assert!(r.requests > 0, "{}", r.table());
    assert!(
        !r.notes.iter().any(|n| n.contains("listening sockets")),
        "both apps listen on every processor: {:?}",
        r.notes
    );
}
