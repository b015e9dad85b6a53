//! The scenario loader: the example files load, and every kind of bad input
//! is reported with its file, line, field path and what is allowed.

use std::net::IpAddr;

use snet_testbench::scenario::{
    Action, AppModel, DEFAULT_STALL, Distribution, Expectation, FaultTarget, Generation, Issue,
    IssueKind, Plane, Policy, Protocol, Scenario, ScenarioError, Selection, Shape, Stack, When,
    Work, units,
};

fn data(name: &str) -> String {
    format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn issues(yaml: &str) -> Vec<Issue> {
    match Scenario::from_yaml_str(yaml, "scenario.yaml") {
        Ok(_) => panic!("expected errors for:\n{yaml}"),
        Err(e) => {
            assert!(!e.issues().is_empty(), "{e}");
            e.issues().to_vec()
        }
    }
}

/// Asserts that an issue exists at `line` for `path` with `text` in its message.
#[track_caller]
fn expect_issue(yaml: &str, line: usize, path: &str, kind: IssueKind, text: &str) -> Issue {
    let all = issues(yaml);
    let found = all
        .iter()
        .find(|i| i.path == path && i.message.contains(text))
        .unwrap_or_else(|| {
            panic!(
                "no issue for {path} containing {text:?}; got:\n{}",
                list(&all)
            )
        });
    assert_eq!(found.line, line, "line of {found}");
    assert_eq!(found.kind, kind, "kind of {found}");
    assert_eq!(found.file, "scenario.yaml");
    let shown = found.to_string();
    assert!(
        shown.starts_with(&format!("scenario.yaml:{line}:")),
        "{shown}"
    );
    if !path.is_empty() {
        assert!(shown.contains(&format!(" {path}: ")), "{shown}");
    }
    found.clone()
}

fn list(all: &[Issue]) -> String {
    all.iter()
        .map(|i| format!("  {i} [{:?}]\n", i.kind))
        .collect()
}

/// A valid base to which tests add one bad line.
const BASE: &str = "\
name: t
processors: { count: 4 }
apps:
  - { model: monolithic, port: 23 }
clients:
  - { count: 10, target: \"198.18.0.10:23\" }
";

// ---- files that load ---------------------------------------------------------

#[test]
fn a_ten_line_file_loads_with_defaults() {
    let s = Scenario::load(data("minimal.yaml")).unwrap();
    assert_eq!(s.name, "minimal-telnet");
    assert_eq!(s.seed, 7);
    assert_eq!(s.duration, units::Duration::from_ms(100));
    assert_eq!(s.fabric.generation, Generation::ServerNet2);
    assert_eq!(s.fabric.planes, [Plane::X, Plane::Y]);
    assert_eq!(s.fabric.shape(), Shape::SingleRouter);
    assert_eq!(s.fabric.router_ports(), 12);
    assert_eq!(s.fabric.link_bandwidth().bytes_per_s(), 125_000_000);
    assert_eq!(s.fabric.path_formation, units::Duration::from_ns(300));
    assert_eq!(s.processors.count, 4);
    assert_eq!(s.processors.memory.bytes(), 64 << 20);
    assert_eq!(s.adapters.len(), 1);
    let lan0 = &s.adapters[0];
    assert_eq!(lan0.name, "lan0");
    assert_eq!(lan0.ip, [IpAddr::from([198, 18, 0, 10])]);
    assert_eq!(lan0.mac.to_string(), "02:00:00:00:00:10");
    assert_eq!(lan0.fabric_ports, [Plane::X, Plane::Y]);
    assert_eq!(lan0.mtu, 1500);
    assert_eq!(lan0.link_speed.bits_per_s(), 1_000_000_000);
    assert_eq!(s.stack, Stack::Parallel);
    assert_eq!(
        s.firmware.distribution,
        Distribution::All(Policy::RoundRobin)
    );
    assert_eq!(s.apps[0].name, "monolithic-23");
    assert_eq!(s.apps[0].processors, Selection::All);
    assert_eq!(s.clients[0].name, "clients0");
    assert_eq!(s.clients[0].rate.unwrap().millihertz(), 5_000_000);
    assert_eq!(s.clients[0].response.unwrap().bytes(), 1024);
    assert_eq!(s.expect, [Expectation::NoDataLostOnSurvivors]);
    // 2 planes × (4 processors + 1 adapter) attachment links.
    assert_eq!(s.layout().unwrap().links.len(), 10);
    let text = std::fs::read_to_string(data("minimal.yaml")).unwrap();
    let lines = text.lines().filter(|l| !l.starts_with('#')).count();
    assert!(lines <= 10, "{lines} lines");
}

#[test]
fn the_full_example_loads() {
    let s = Scenario::load(data("failover.yaml")).unwrap();
    assert_eq!(s.fabric.shape(), Shape::Star);
    assert_eq!(s.adapters[0].ip.len(), 2);
    assert_eq!(s.adapters[1].fabric_ports, [Plane::X, Plane::Y]);
    assert_eq!(
        s.firmware.distribution.policy_for(Protocol::Tcp, 8042),
        Some(Policy::CapacityWeighted)
    );
    assert_eq!(s.firmware.distribution.policy_for(Protocol::Tcp, 24), None);
    assert_eq!(s.apps[1].model, AppModel::Hybrid);
    assert_eq!(s.apps[1].work, Work::Time(units::Duration::from_us(40)));
    assert_eq!(s.apps[0].processors.resolve(8), (0..8).collect::<Vec<_>>());
    assert_eq!(s.clients[1].target.port(), 8080);
    assert!(s.clients[1].target.is_ipv6());
    assert_eq!(s.faults.len(), 5);
    assert_eq!(s.faults[0].when, When::At(units::Duration::from_ms(20)));
    assert_eq!(s.faults[0].action, Action::Fail(FaultTarget::Processor(2)));
    assert!(matches!(s.faults[4].when, When::After(_)));
    assert_eq!(
        s.faults[4].action,
        Action::Fail(FaultTarget::AppSelector("hybrid".into()))
    );
    assert_eq!(s.processor_running("hybrid"), Some(0));
    assert_eq!(s.processor_running("echo"), Some(6));
    assert!(matches!(
        s.expect[4],
        Expectation::Latency { percentile, .. } if percentile == 99.0
    ));
    let Expectation::Expr(e) = &s.expect[7] else {
        panic!("{:?}", s.expect[7])
    };
    assert_eq!(e.all.len(), 2);
    // Star of 2 routers per plane: 1 router link + 10 endpoints, per plane.
    let layout = s.layout().unwrap();
    assert_eq!(layout.links.len(), 22);
    assert_eq!(layout.routers_on(Plane::Y), 2);
}

#[test]
fn the_explicit_fabric_example_loads() {
    let s = Scenario::load(data("explicit-fabric.yaml")).unwrap();
    assert_eq!(s.fabric.shape(), Shape::Explicit);
    assert_eq!(s.stack, Stack::Conventional { processor: 0 });
    assert_eq!(s.firmware.distribution, Distribution::Exclusive);
    assert!(s.firmware.filter.as_ref().unwrap().is_file());
    let l = s.layout().unwrap();
    assert_eq!(l.links.len(), 12);
    assert_eq!(l.links[0].bandwidth.bytes_per_s(), 250_000_000);
    assert_eq!(l.router(Plane::X, 1).unwrap().ports, 6);
    assert_eq!(l.router(Plane::X, 0).unwrap().ports, 32);
}

// ---- the error message -------------------------------------------------------

#[test]
fn an_error_reads_file_line_column_path_message() {
    let yaml = BASE.replace("198.18.0.10:23", "198.18.0.99:23");
    let all = issues(&yaml);
    assert_eq!(
        all[0].to_string(),
        "scenario.yaml:6:26: clients[0].target: adapter IP 198.18.0.99 is not served by any adapter (adapters: lan0 198.18.0.10)"
    );
    let e = Scenario::from_yaml_str(&yaml, "scenario.yaml").unwrap_err();
    assert_eq!(e.file(), "scenario.yaml");
    assert_eq!(e.to_string(), all[0].to_string());
}

#[test]
fn all_errors_of_a_file_are_reported_sorted_by_line() {
    let e = Scenario::load(data("invalid.yaml")).unwrap_err();
    let lines: Vec<(usize, &str)> = e
        .issues()
        .iter()
        .map(|i| (i.line, i.path.as_str()))
        .collect();
    assert_eq!(
        lines,
        [
            (6, "adapters[0].mtu"),
            (10, "clients[0].target"),
            (12, "faults[0].fail"),
            (13, "faults[1].at"),
            (13, "faults[1].restore"),
        ],
        "{e}"
    );
    assert!(e.to_string().lines().count() == 5);
    assert!(e.to_string().contains("invalid.yaml:6:"));
}

#[test]
fn shape_errors_are_collected_one_per_item_and_section() {
    let yaml = "\
name: t
seed: -3
processors: { count: 4, speed: 3 }
apps:
  - { model: monolithic, port: 23 }
  - { model: fancy, port: 24 }
clients:
  - { count: 10, target: \"198.18.0.10:23\", rate: 5 }
  - { count: 10, target: \"198.18.0.10:23\" }
  - { count: ten, target: \"198.18.0.10:23\" }
extra: 1
";
    let all = issues(yaml);
    let got: Vec<(usize, &str, IssueKind)> = all
        .iter()
        .map(|i| (i.line, i.path.as_str(), i.kind))
        .collect();
    assert_eq!(
        got,
        [
            (2, "seed", IssueKind::WrongType),
            (3, "processors.speed", IssueKind::UnknownField),
            (6, "apps[1].model", IssueKind::InvalidValue),
            (8, "clients[0].rate", IssueKind::InvalidValue),
            (10, "clients[2].count", IssueKind::WrongType),
            (11, "extra", IssueKind::UnknownField),
        ],
        "{}",
        list(&all)
    );
}

// ---- one test per kind of bad input ------------------------------------------

#[test]
fn yaml_syntax_error() {
    let i = expect_issue(
        "name: t\nprocessors: { count: 4\napps: []\n",
        3,
        "",
        IssueKind::Syntax,
        "while parsing a flow mapping",
    );
    assert!(i.column.is_some());
    expect_issue(
        "name: t\n  bad indent: 1\n",
        2,
        "",
        IssueKind::Syntax,
        "mapping values",
    );
    expect_issue(
        "name: t\n---\nname: u\n",
        2,
        "",
        IssueKind::Syntax,
        "one YAML document",
    );
}

#[test]
fn not_utf8() {
    let e = Scenario::from_yaml_slice(b"name: t\nseed: \xff\n", "scenario.yaml").unwrap_err();
    let i = &e.issues()[0];
    assert_eq!((i.line, i.column, i.kind), (2, Some(7), IssueKind::Syntax));
    assert!(i.message.contains("UTF-8"));
}

#[test]
fn empty_file_and_wrong_root() {
    expect_issue("", 1, "", IssueKind::MissingField, "the file is empty");
    expect_issue(
        "# only a comment\n",
        1,
        "",
        IssueKind::MissingField,
        "the file is empty",
    );
    expect_issue("- a\n- b\n", 1, "", IssueKind::WrongType, "not a list");
    expect_issue(
        "seed: 3\n",
        1,
        "name",
        IssueKind::MissingField,
        "needs a name",
    );
}

#[test]
fn unknown_fields() {
    expect_issue(
        &format!("{BASE}fabric:\n  link: {{ bandwdth: 125MB/s }}\n"),
        8,
        "fabric.link.bandwdth",
        IssueKind::UnknownField,
        "expected `bandwidth` or `latency`",
    );
    expect_issue(
        &format!("{BASE}procesors: {{ count: 2 }}\n"),
        7,
        "procesors",
        IssueKind::UnknownField,
        "expected one of `name`",
    );
    expect_issue(
        &BASE.replace("count: 10,", "count: 10, colour: red,"),
        6,
        "clients[0].colour",
        IssueKind::UnknownField,
        "unknown field `colour`",
    );
}

#[test]
fn missing_required_fields() {
    expect_issue(
        &format!("{BASE}adapters:\n  - name: lan0\n    mac: \"02:00:00:00:00:10\"\n"),
        8,
        "adapters[0].ip",
        IssueKind::MissingField,
        "missing field `ip`",
    );
    expect_issue(
        &format!("{BASE}faults:\n  - {{ fail: processor 1 }}\n"),
        8,
        "faults[0]",
        IssueKind::InvalidValue,
        "a fault needs a time",
    );
}

#[test]
fn wrong_types() {
    expect_issue(
        &BASE.replace("{ count: 4 }", "{ count: [4] }"),
        2,
        "processors.count",
        IssueKind::WrongType,
        "invalid type: sequence",
    );
    expect_issue(
        &format!("{BASE}adapters: lan0\n"),
        7,
        "adapters",
        IssueKind::WrongType,
        "expected a list",
    );
}

#[test]
fn bad_units() {
    expect_issue(
        &format!("{BASE}duration: 10 parsecs\n"),
        7,
        "duration",
        IssueKind::InvalidValue,
        "unknown unit `parsecs`; write a number and a unit: ps, ns, us",
    );
    expect_issue(
        &format!("{BASE}processors: {{ count: 4, memory: 64 }}\n")
            .replace("processors: { count: 4 }\n", ""),
        6,
        "processors.memory",
        IssueKind::InvalidValue,
        "the unit is missing",
    );
    expect_issue(
        &BASE.replace("count: 10,", "count: 10, request: -64B,"),
        6,
        "clients[0].request",
        IssueKind::InvalidValue,
        "cannot be negative",
    );
    expect_issue(
        &format!("{BASE}fabric: {{ crc_error_rate: 150% }}\n"),
        7,
        "fabric.crc_error_rate",
        IssueKind::InvalidValue,
        "more than 1",
    );
}

#[test]
fn out_of_range_values() {
    expect_issue(
        &BASE.replace("count: 4", "count: 5000"),
        2,
        "processors.count",
        IssueKind::OutOfRange,
        "1 to 4096 processors",
    );
    expect_issue(
        &format!("{BASE}adapters:\n  - name: lan0\n    ip: 198.18.0.10\n    mtu: 9217\n"),
        10,
        "adapters[0].mtu",
        IssueKind::OutOfRange,
        "mtu is 68 to 9216",
    );
    expect_issue(
        &BASE.replace("port: 23 }", "port: 70000 }"),
        4,
        "apps[0].port",
        IssueKind::OutOfRange,
        "expected u16",
    );
    expect_issue(
        &format!("{BASE}processors: {{ count: 64, nodes: 2 }}\n")
            .replace("processors: { count: 4 }\n", ""),
        6,
        "processors.nodes",
        IssueKind::OutOfRange,
        "at most 16 processors",
    );
}

#[test]
fn ring_size_not_a_power_of_two() {
    expect_issue(
        &format!("{BASE}adapters:\n  - {{ name: lan0, ip: 198.18.0.10, rx_ring: 1000 }}\n"),
        8,
        "adapters[0].rx_ring",
        IssueKind::OutOfRange,
        "power of two",
    );
}

#[test]
fn rx_refill_of_zero() {
    expect_issue(
        &format!("{BASE}adapters:\n  - {{ name: lan0, ip: 198.18.0.10, rx_refill: 0 }}\n"),
        8,
        "adapters[0].rx_refill",
        IssueKind::OutOfRange,
        "at least 1",
    );
}

#[test]
fn reference_to_a_processor_that_does_not_exist() {
    expect_issue(
        &BASE.replace("port: 23 }", "port: 23, processors: [0, 9] }"),
        4,
        "apps[0].processors",
        IssueKind::UnknownReference,
        "processor 9 does not exist: processors are 0 to 3",
    );
    expect_issue(
        &format!("{BASE}firmware: {{ master: 4 }}\n"),
        7,
        "firmware.master",
        IssueKind::UnknownReference,
        "processor 4 does not exist",
    );
}

#[test]
fn reference_to_an_unknown_adapter() {
    expect_issue(
        &format!("{BASE}faults:\n  - at: 10ms\n    fail: adapter lan9\n"),
        9,
        "faults[0].fail",
        IssueKind::UnknownReference,
        "adapter lan9 does not exist (adapters: lan0)",
    );
}

#[test]
fn client_target_not_served() {
    expect_issue(
        &BASE.replace("198.18.0.10:23", "198.18.0.99:23"),
        6,
        "clients[0].target",
        IssueKind::UnknownReference,
        "adapter IP 198.18.0.99 is not served by any adapter (adapters: lan0 198.18.0.10)",
    );
    expect_issue(
        &BASE.replace("198.18.0.10:23", "198.18.0.10:80"),
        6,
        "clients[0].target",
        IssueKind::UnknownReference,
        "no app listens on tcp port 80 (apps listen on: tcp 23)",
    );
    expect_issue(
        &BASE.replace("198.18.0.10:23\" }", "198.18.0.10:23\", protocol: udp }"),
        6,
        "clients[0].target",
        IssueKind::UnknownReference,
        "no app listens on udp port 23",
    );
}

#[test]
fn unknown_router_link_plane_and_app_in_faults() {
    let yaml = format!(
        "{BASE}faults:\n  - {{ at: 1ms, fail: router x1 }}\n  - {{ at: 1ms, fail: link 10 }}\n  - {{ at: 1ms, fail: processor running broker }}\n  - {{ at: 1ms, fail: link 9 }}\n"
    );
    expect_issue(
        &yaml,
        8,
        "faults[0].fail",
        IssueKind::UnknownReference,
        "router x1 does not exist: plane x has 1 router (x0 to x0)",
    );
    expect_issue(
        &yaml,
        9,
        "faults[1].fail",
        IssueKind::UnknownReference,
        "link 10 does not exist: the fabric has 10 links, 0 to 9",
    );
    expect_issue(
        &yaml,
        10,
        "faults[2].fail",
        IssueKind::UnknownReference,
        "no app is named broker or has model broker",
    );
    assert_eq!(issues(&yaml).len(), 3);
    expect_issue(
        &format!("{BASE}fabric: {{ planes: [x] }}\nfaults:\n  - {{ at: 1ms, fail: plane y }}\n"),
        9,
        "faults[0].fail",
        IssueKind::UnknownReference,
        "the fabric has no plane y (planes: x)",
    );
    expect_issue(
        &format!("{BASE}faults:\n  - {{ at: 1ms, fail: processor two }}\n"),
        8,
        "faults[0].fail",
        IssueKind::InvalidValue,
        "write processor N, link N, router x0",
    );
}

#[test]
fn conventional_stack_needs_two_processors() {
    expect_issue(
        &format!("{BASE}stack: conventional\n").replace("count: 4", "count: 1"),
        7,
        "stack",
        IssueKind::Conflict,
        "needs at least 2 processors, but processors.count is 1 (apps: monolithic)",
    );
    expect_issue(
        &format!("{BASE}stack: {{ kind: conventional, processor: 4 }}\n"),
        7,
        "stack.processor",
        IssueKind::UnknownReference,
        "processor 4 does not exist",
    );
}

#[test]
fn duplicate_adapter_names_ips_and_macs() {
    let yaml = format!(
        "{BASE}adapters:\n  - {{ name: lan0, ip: 198.18.0.10, mac: \"02:00:00:00:00:10\" }}\n  - {{ name: lan0, ip: 198.18.0.10, mac: \"02:00:00:00:00:10\" }}\n"
    );
    expect_issue(
        &yaml,
        9,
        "adapters[1].name",
        IssueKind::Duplicate,
        "also used by adapters[0]",
    );
    expect_issue(
        &yaml,
        9,
        "adapters[1].mac",
        IssueKind::Duplicate,
        "also used by adapter lan0",
    );
    expect_issue(
        &yaml,
        9,
        "adapters[1].ip[0]",
        IssueKind::Duplicate,
        "198.18.0.10 is served by lan0 and lan0: adapters sharing an address need `role: primary`",
    );
    // Primary and backup may share the address.
    let ok = format!(
        "{BASE}adapters:\n  - {{ name: lan0, ip: 198.18.0.10, role: primary }}\n  - {{ name: lan1, ip: 198.18.0.10, role: backup }}\n"
    );
    let s = Scenario::from_yaml_str(&ok, "scenario.yaml").unwrap();
    assert_eq!(s.adapters[1].mac.to_string(), "02:00:00:00:00:11");
    expect_issue(
        &format!("{BASE}adapters:\n  - {{ name: lan0, ip: 198.18.0.10, role: backup }}\n"),
        8,
        "adapters[0].role",
        IssueKind::Conflict,
        "no other adapter serves",
    );
}

#[test]
fn duplicate_keys() {
    expect_issue(
        "name: t\nfabric:\n  planes: [x]\n  generation: servernet1\n  planes: [y]\n",
        5,
        "fabric.planes",
        IssueKind::Duplicate,
        "duplicate entry with key \"planes\"",
    );
}

#[test]
fn fault_after_the_end_of_the_run() {
    expect_issue(
        &format!("{BASE}duration: 50ms\nfaults:\n  - {{ at: 60ms, fail: processor 1 }}\n"),
        9,
        "faults[0].at",
        IssueKind::OutOfRange,
        "at 60ms is not before the end of the run (duration 50ms)",
    );
}

#[test]
fn restore_before_its_fail() {
    let yaml = format!(
        "{BASE}faults:\n  - {{ at: 10ms, restore: processor 2 }}\n  - {{ at: 20ms, fail: processor 2 }}\n"
    );
    expect_issue(
        &yaml,
        8,
        "faults[0].restore",
        IssueKind::Conflict,
        "comes before its fail: processor 2 is not failed then; faults[1] fails it later, at 20ms",
    );
    expect_issue(
        &format!(
            "{BASE}faults:\n  - {{ at: 10ms, fail: processor 2 }}\n  - {{ at: 20ms, fail: processor running monolithic }}\n  - {{ at: 30ms, fail: processor 0 }}\n"
        ),
        10,
        "faults[2].fail",
        IssueKind::Conflict,
        "processor 0 is already failed at 30ms (by faults[1])",
    );
}

#[test]
fn contradictory_fault_fields() {
    expect_issue(
        &format!("{BASE}faults:\n  - {{ at: 1ms, after: \"connections:5\", fail: processor 1 }}\n"),
        8,
        "faults[0]",
        IssueKind::InvalidValue,
        "give `at` or `after`, not both",
    );
    expect_issue(
        &format!("{BASE}faults:\n  - {{ at: 1ms, fail: processor 1, restore: processor 1 }}\n"),
        8,
        "faults[0]",
        IssueKind::InvalidValue,
        "only one of `fail`, `restore` and `set`",
    );
}

#[test]
fn port_conflicts() {
    expect_issue(
        &BASE.replace(
            "port: 23 }\n",
            "port: 23 }\n  - { model: echo, port: 23, processors: [1] }\n",
        ),
        5,
        "apps[1].port",
        IssueKind::Conflict,
        "one listener per processor per port",
    );
    expect_issue(
        &format!("{BASE}firmware: {{ distribution: exclusive }}\n"),
        4,
        "apps[0].processors",
        IssueKind::Conflict,
        "the port is exclusive",
    );
    expect_issue(
        &format!(
            "{BASE}firmware:\n  distribution:\n    - {{ ports: \"1-100\" }}\n    - {{ ports: \"23-24\", policy: maglev }}\n"
        ),
        10,
        "firmware.distribution[1].ports",
        IssueKind::Conflict,
        "tcp ports 23-24 overlap 1-100",
    );
}

#[test]
fn missing_filter_file() {
    expect_issue(
        &format!("{BASE}firmware: {{ filter: no-such-filter.yaml }}\n"),
        7,
        "firmware.filter",
        IssueKind::MissingFile,
        "no-such-filter.yaml does not exist",
    );
}

#[test]
fn bad_expectations() {
    expect_issue(
        &format!("{BASE}expect:\n  - expr: \"report.x = 1\"\n"),
        8,
        "expect[0].expr",
        IssueKind::InvalidValue,
        "at character 10: expected a comparison",
    );
    expect_issue(
        &format!("{BASE}expect:\n  - no_data_lost\n"),
        8,
        "expect[0]",
        IssueKind::InvalidValue,
        "unknown expectation `no_data_lost`",
    );
    expect_issue(
        &format!("{BASE}expect:\n  - {{ reset_within: 5ms, latency_p99_at_most: 2ms }}\n"),
        8,
        "expect[0]",
        IssueKind::InvalidValue,
        "exactly one key",
    );
    expect_issue(
        &format!("{BASE}expect:\n  - no_stalled_connections: 0s\n"),
        8,
        "expect[0].no_stalled_connections",
        IssueKind::OutOfRange,
        "must be more than 0s",
    );
}

#[test]
fn no_stalled_connections_bare_or_with_a_bound() {
    let s = Scenario::from_yaml_str(
        &format!("{BASE}expect:\n  - no_stalled_connections\n  - no_stalled_connections: 250ms\n"),
        "t.yaml",
    )
    .unwrap();
    assert_eq!(
        s.expect,
        [
            Expectation::NoStalledConnections(DEFAULT_STALL),
            Expectation::NoStalledConnections("250ms".parse().unwrap())
        ]
    );
}

#[test]
fn explicit_fabric_errors() {
    let yaml = format!(
        "{BASE}fabric:\n  planes: [x]\n  routers:\n    - {{ id: x0 }}\n    - {{ id: x2 }}\n  links:\n    - {{ from: x0, to: y0 }}\n"
    );
    expect_issue(
        &yaml,
        9,
        "fabric.routers",
        IssueKind::Conflict,
        "router x1 is missing",
    );
    let yaml = format!(
        "{BASE}fabric:\n  planes: [x]\n  routers: [{{ id: x0 }}]\n  links:\n    - {{ from: x0, to: y0 }}\n    - {{ from: x0, to: processor 7 }}\n    - {{ from: processor 1, to: processor 2 }}\n"
    );
    expect_issue(
        &yaml,
        11,
        "fabric.links[0].to",
        IssueKind::UnknownReference,
        "router y0 is not in fabric.routers",
    );
    expect_issue(
        &yaml,
        12,
        "fabric.links[1].to",
        IssueKind::UnknownReference,
        "processor 7 does not exist",
    );
    expect_issue(
        &yaml,
        13,
        "fabric.links[2]",
        IssueKind::Conflict,
        "one end of a link must be a router",
    );
    let yaml = format!(
        "{BASE}fabric:\n  planes: [x]\n  routers: [{{ id: x0 }}, {{ id: x1 }}]\n  links:\n    - {{ from: x0, to: processor 0 }}\n    - {{ from: x0, to: processor 1 }}\n    - {{ from: x1, to: processor 2 }}\n    - {{ from: x1, to: processor 3 }}\n    - {{ from: x1, to: adapter lan0 }}\n"
    );
    expect_issue(
        &yaml,
        10,
        "fabric.links",
        IssueKind::Conflict,
        "processor 2 cannot reach processor 0 on plane x",
    );
}

#[test]
fn generated_fabric_that_does_not_fit() {
    let six = BASE.replace("count: 4", "count: 6");
    expect_issue(
        &format!("{six}fabric: {{ generation: servernet1 }}\n"),
        7,
        "fabric.shape",
        IssueKind::Conflict,
        "7 endpoints (6 processors, 1 adapter) do not fit on plane x",
    );
    // A star of 2 servernet1 routers holds them.
    Scenario::from_yaml_str(
        &format!("{six}fabric: {{ generation: servernet1, routers: 2 }}\n"),
        "scenario.yaml",
    )
    .unwrap();
    expect_issue(
        &format!("{BASE}fabric: {{ shape: single_router, leaves: 3 }}\n"),
        7,
        "fabric.leaves",
        IssueKind::Conflict,
        "leaves applies to shape: tree",
    );
}

#[test]
fn load_reports_a_missing_file() {
    let e = Scenario::load(data("no-such-file.yaml")).unwrap_err();
    assert!(matches!(e, ScenarioError::Read { .. }));
    assert!(e.to_string().contains("no-such-file.yaml: cannot read"));
}

#[test]
fn block_and_flow_styles_give_the_same_answer() {
    let block = "\
name: t
processors:
  count: 4
apps:
  - model: monolithic
    port: 23
clients:
  - count: 10
    target: \"198.18.0.10:23\"
  - count: 3
    target: 198.18.0.77:23
";
    expect_issue(
        block,
        11,
        "clients[1].target",
        IssueKind::UnknownReference,
        "198.18.0.77",
    );
    let flow = "name: t\nprocessors: {count: 4}\napps: [{model: monolithic, port: 23}]\nclients: [\n  {count: 10, target: \"198.18.0.10:23\"},\n  {count: 3,\n   target: 198.18.0.77:23}]\n";
    expect_issue(
        flow,
        7,
        "clients[1].target",
        IssueKind::UnknownReference,
        "198.18.0.77",
    );
}

#[test]
fn the_http_model_serves_real_clients_only() {
    let web = "\
name: web
apps:
  - { name: web, model: http, port: 80, response: 4KiB }
";
    let s = Scenario::from_yaml_str(web, "scenario.yaml").unwrap();
    assert_eq!(s.apps[0].model, AppModel::Http);
    expect_issue(
        &format!("{web}clients:\n  - {{ count: 4, target: \"198.18.0.10:80\" }}\n"),
        5,
        "clients[0].target",
        IssueKind::Conflict,
        "served by the http app web, which speaks HTTP to real clients",
    );
    expect_issue(
        &web.replace("response: 4KiB", "protocol: udp"),
        3,
        "apps[0].protocol",
        IssueKind::Conflict,
        "an http app speaks HTTP over TCP",
    );
    expect_issue(
        &web.replace("response: 4KiB", "workers: [1]"),
        3,
        "apps[0].workers",
        IssueKind::Conflict,
        "http apps have none",
    );
    expect_issue(
        &format!("{web}  - {{ model: broker, port: 90, backend: web }}\n"),
        4,
        "apps[1].backend",
        IssueKind::Conflict,
        "the backend web is an http app",
    );
    expect_issue(
        &format!("{web}firmware: {{ distribution: exclusive }}\n"),
        3,
        "apps[0].processors",
        IssueKind::Conflict,
        "the port is exclusive",
    );
}
