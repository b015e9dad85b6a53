//! The loader never panics, and every error it reports has a line, whatever
//! it is fed: random documents built from the schema's own field names and
//! values, mutations of a full example, and random bytes.

use proptest::prelude::*;
use snet_testbench::scenario::{Scenario, ScenarioError};

const KEYS: &[&str] = &[
    "name",
    "description",
    "seed",
    "duration",
    "fabric",
    "processors",
    "adapters",
    "stack",
    "firmware",
    "apps",
    "clients",
    "faults",
    "expect",
    "generation",
    "planes",
    "shape",
    "routers",
    "leaves",
    "spines",
    "links",
    "router_ports",
    "link",
    "bandwidth",
    "latency",
    "path_formation",
    "buffer_slots",
    "turnaround",
    "transaction_timeout",
    "max_attempts",
    "crc_error_rate",
    "trains",
    "count",
    "nodes",
    "memory",
    "cpu",
    "per_segment",
    "per_byte",
    "per_message",
    "per_socket_call",
    "per_app_unit",
    "ip",
    "mac",
    "fabric_ports",
    "link_speed",
    "mtu",
    "role",
    "rx_ring",
    "tx_ring",
    "rx_refill",
    "coalesce",
    "time",
    "kind",
    "processor",
    "distribution",
    "filter",
    "connections",
    "master",
    "protocol",
    "ports",
    "policy",
    "model",
    "port",
    "workers",
    "work",
    "response",
    "backend",
    "target",
    "request",
    "requests_per_connection",
    "rate",
    "arrival",
    "think",
    "start",
    "stop",
    "at",
    "after",
    "fail",
    "restore",
    "set",
    "lan_loss",
    "fabric_crc_error_rate",
    "reset_within",
    "even_distribution",
    "tolerance",
    "throughput_at_least",
    "percentile",
    "at_most",
    "latency_p99_at_most",
    "expr",
    "id",
    "from",
    "to",
    "bogus",
];

const VALUES: &[&str] = &[
    "0",
    "1",
    "2",
    "4",
    "9",
    "-1",
    "4096",
    "5000",
    "65536",
    "99999999999999999999",
    "1.5",
    "1e-6",
    "250ns",
    "10us",
    "1.5ms",
    "2s",
    "120ms",
    "0.5ps",
    "64B",
    "1KiB",
    "64MiB",
    "9000",
    "9217",
    "125MB/s",
    "1Gbit/s",
    "10Gbit/s",
    "5000/s",
    "5k/s",
    "0/s",
    "0.1%",
    "150%",
    "x",
    "y",
    "[x, y]",
    "[x]",
    "z",
    "processor 2",
    "processor 9",
    "link 3",
    "link 99",
    "router x0",
    "router y7",
    "plane y",
    "adapter lan0",
    "adapter lan9",
    "processor running monolithic",
    "processor running nobody",
    "198.18.0.10",
    "198.18.0.11",
    "\"2001:db8::10\"",
    "0.0.0.0",
    "\"198.18.0.10:23\"",
    "\"[2001:db8::10]:23\"",
    "\"198.18.0.99:80\"",
    "\"02:00:00:00:00:10\"",
    "\"01:00:00:00:00:00\"",
    "true",
    "false",
    "null",
    "~",
    "all",
    "\"0-3\"",
    "\"3-0\"",
    "[0, 1]",
    "[0, 9]",
    "round-robin",
    "maglev",
    "exclusive",
    "monolithic",
    "listener",
    "distributor",
    "hybrid",
    "broker",
    "echo",
    "sink",
    "servernet1",
    "servernet2",
    "servernet3",
    "star",
    "tree",
    "explicit",
    "single_router",
    "conventional",
    "parallel",
    "tcp",
    "udp",
    "poisson",
    "constant",
    "\"connections:5\"",
    "\"requests:0\"",
    "primary",
    "backup",
    "no_data_lost_on_survivors",
    "even_distribution",
    "\"report.x == 1 && a.b < 2\"",
    "\"a ==\"",
    "lan0",
    "lan1",
    "x0",
    "x1",
    "y0",
    "\"\"",
    "{}",
    "[]",
    "'quoted'",
    "&anchor 3",
    "*anchor",
    "!tag 3",
    "|\n  block",
    ">-",
    "{ at: 10ms, fail: processor 1 }",
    "{ at: 20ms, restore: processor 1 }",
    "{ model: monolithic, port: 23 }",
    "{ count: 3, target: \"198.18.0.10:23\" }",
    "{ name: lan0, ip: 198.18.0.10 }",
    "{ kind: conventional, processor: 1 }",
    "{ from: x0, to: processor 0 }",
    "{ id: x0 }",
    "{ reset_within: 5ms }",
];

#[derive(Debug, Clone)]
enum Node {
    Scalar(String),
    Map(Vec<(String, Node)>, bool),
    List(Vec<Node>, bool),
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        9 => prop::sample::select(KEYS).prop_map(str::to_string),
        1 => "[a-z_]{1,8}",
    ]
}

fn node() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        9 => prop::sample::select(VALUES).prop_map(|v| Node::Scalar(v.to_string())),
        1 => "[ -~]{0,12}".prop_map(Node::Scalar),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            (
                prop::collection::vec((key(), inner.clone()), 0..6),
                any::<bool>()
            )
                .prop_map(|(m, flow)| Node::Map(m, flow)),
            (prop::collection::vec(inner, 0..5), any::<bool>())
                .prop_map(|(l, flow)| Node::List(l, flow)),
        ]
    })
}

fn flow(n: &Node) -> String {
    match n {
        Node::Scalar(s) => s.replace('\n', " "),
        Node::Map(m, _) => format!(
            "{{ {} }}",
            m.iter()
                .map(|(k, v)| format!("{k}: {}", flow(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Node::List(l, _) => format!("[{}]", l.iter().map(flow).collect::<Vec<_>>().join(", ")),
    }
}

fn block(n: &Node, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match n {
        Node::Map(m, false) if !m.is_empty() => {
            for (k, v) in m {
                match v {
                    Node::Map(vm, false) if !vm.is_empty() => {
                        out.push_str(&format!("{pad}{k}:\n"));
                        block(v, indent + 2, out);
                    }
                    Node::List(vl, false) if !vl.is_empty() => {
                        out.push_str(&format!("{pad}{k}:\n"));
                        block(v, indent + 2, out);
                    }
                    _ => out.push_str(&format!("{pad}{k}: {}\n", flow(v))),
                }
            }
        }
        Node::List(l, false) if !l.is_empty() => {
            for v in l {
                match v {
                    Node::Map(vm, false) if !vm.is_empty() => {
                        let mut inner = String::new();
                        block(v, indent + 2, &mut inner);
                        // "- " replaces the first two spaces of the first line.
                        out.push_str(&format!("{pad}- {}", &inner[indent + 2..]));
                    }
                    _ => out.push_str(&format!("{pad}- {}\n", flow(v))),
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", flow(other))),
    }
}

/// A document whose top level is a map of mostly real section names.
fn document() -> impl Strategy<Value = String> {
    (
        prop::collection::vec((key(), node()), 0..10),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(entries, with_name, flow_top)| {
            let mut m = entries;
            if with_name {
                m.insert(0, ("name".to_string(), Node::Scalar("t".into())));
            }
            let root = Node::Map(m, flow_top);
            let mut out = String::new();
            block(&root, 0, &mut out);
            out
        })
}

fn check(result: Result<Scenario, ScenarioError>, text: &str) {
    match result {
        Ok(s) => {
            // A valid scenario's layout builds.
            s.layout().unwrap();
            let _ = s.summary();
        }
        Err(ScenarioError::Read { .. }) => panic!("no file was read"),
        Err(ScenarioError::Invalid { file, issues }) => {
            assert_eq!(file, "fuzz.yaml");
            assert!(!issues.is_empty());
            let lines = text.lines().count().max(1) + 1;
            for i in &issues {
                assert!(i.line >= 1, "{i}");
                assert!(i.line <= lines, "{i} (file has {lines} lines)\n{text}");
                assert!(i.column.is_none_or(|c| c >= 1), "{i}");
                assert!(!i.message.is_empty(), "{i}");
                assert!(i.to_string().starts_with(&format!("fuzz.yaml:{}", i.line)));
            }
            assert!(issues.windows(2).all(|w| w[0].line <= w[1].line));
        }
    }
}

fn pick(options: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    prop::sample::select(options)
}

fn opt(options: &'static [&'static str]) -> impl Strategy<Value = Option<&'static str>> {
    prop::option::of(pick(options))
}

/// Fields of `key: value` pairs, skipping absent values.
fn fields(pairs: &[(&str, Option<&str>)]) -> String {
    pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}: {v}")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A document of the right shape whose values and references are random:
/// it reaches the checks of meaning (references, ranges, the fabric layout).
fn typed_document() -> impl Strategy<Value = String> {
    let fabric = (
        pick(&["servernet1", "servernet2", "servernet3"]),
        pick(&["[x, y]", "[x]", "[y]", "[x, x]"]),
        opt(&["single_router", "star", "tree"]),
        opt(&["0", "1", "2", "3", "40"]),
        opt(&["0", "1", "3", "20"]),
        opt(&["1", "2", "12"]),
        opt(&["2", "6", "64", "65"]),
    )
        .prop_map(|(g, planes, shape, routers, leaves, spines, ports)| {
            format!(
                "fabric: {{ {} }}\n",
                fields(&[
                    ("generation", Some(g)),
                    ("planes", Some(planes)),
                    ("shape", shape),
                    ("routers", routers),
                    ("leaves", leaves),
                    ("spines", spines),
                    ("router_ports", ports),
                ])
            )
        });
    let adapter = (
        pick(&["lan0", "lan1"]),
        pick(&[
            "198.18.0.10",
            "198.18.0.11",
            "\"2001:db8::10\"",
            "[198.18.0.10, \"2001:db8::10\"]",
        ]),
        opt(&["primary", "backup"]),
        opt(&["576", "1280", "1500", "9000", "9300"]),
        opt(&["8", "100", "512"]),
        opt(&["[x]", "[y]", "[x, y]"]),
        opt(&["\"02:00:00:00:00:10\"", "\"02:00:00:00:00:11\""]),
    )
        .prop_map(|(name, ip, role, mtu, ring, ports, mac)| {
            format!(
                "  - {{ {} }}\n",
                fields(&[
                    ("name", Some(name)),
                    ("ip", Some(ip)),
                    ("role", role),
                    ("mtu", mtu),
                    ("rx_ring", ring),
                    ("fabric_ports", ports),
                    ("mac", mac),
                ])
            )
        });
    let app = (
        pick(&[
            "monolithic",
            "listener",
            "distributor",
            "hybrid",
            "broker",
            "echo",
            "sink",
        ]),
        pick(&["7", "23", "80"]),
        opt(&["tcp", "udp"]),
        opt(&["all", "[0]", "[0, 5]", "\"1-3\"", "[1, 1]"]),
        opt(&["[2]", "[0, 1]", "all"]),
        opt(&["echo-7", "monolithic-23", "nobody"]),
    )
        .prop_map(|(model, port, protocol, processors, workers, backend)| {
            format!(
                "  - {{ {} }}\n",
                fields(&[
                    ("model", Some(model)),
                    ("port", Some(port)),
                    ("protocol", protocol),
                    ("processors", processors),
                    ("workers", workers),
                    ("backend", backend),
                ])
            )
        });
    let client = (
        pick(&[
            "\"198.18.0.10:23\"",
            "\"198.18.0.11:80\"",
            "\"[2001:db8::10]:7\"",
            "\"198.18.0.99:23\"",
        ]),
        opt(&["0", "1", "10"]),
        opt(&["tcp", "udp"]),
        opt(&["0ms", "50ms", "200ms"]),
        opt(&["10ms", "90ms", "300ms"]),
        opt(&["64B", "0", "100KiB"]),
    )
        .prop_map(|(target, count, protocol, start, stop, request)| {
            format!(
                "  - {{ {} }}\n",
                fields(&[
                    ("target", Some(target)),
                    ("count", count),
                    ("protocol", protocol),
                    ("start", start),
                    ("stop", stop),
                    ("request", request),
                ])
            )
        });
    let fault = (
        pick(&[
            "at: 0ms",
            "at: 10ms",
            "at: 50ms",
            "at: 200ms",
            "after: \"connections:3\"",
        ]),
        pick(&["fail", "restore"]),
        pick(&[
            "processor 0",
            "processor 3",
            "processor 7",
            "link 0",
            "link 5",
            "link 40",
            "router x0",
            "router x2",
            "router y5",
            "plane x",
            "plane y",
            "adapter lan0",
            "adapter lan1",
            "processor running echo",
            "processor running monolithic-23",
            "processor running nobody",
        ]),
    )
        .prop_map(|(when, action, target)| format!("  - {{ {when}, {action}: {target} }}\n"));
    (
        pick(&["1", "2", "4", "8", "17", "0"]),
        fabric,
        prop::collection::vec(adapter, 0..3),
        opt(&[
            "parallel",
            "conventional",
            "{ kind: conventional, processor: 3 }",
        ]),
        opt(&[
            "round-robin",
            "exclusive",
            "[{ ports: \"1-30\" }, { ports: 23, policy: maglev }]",
        ]),
        prop::collection::vec(app, 0..4),
        prop::collection::vec(client, 0..3),
        prop::collection::vec(fault, 0..4),
    )
        .prop_map(
            |(count, fabric, adapters, stack, distribution, apps, clients, faults)| {
                let mut out = format!(
                    "name: typed\nduration: 100ms\nprocessors: {{ count: {count} }}\n{fabric}"
                );
                for (title, items) in [
                    ("adapters", adapters),
                    ("apps", apps),
                    ("clients", clients),
                    ("faults", faults),
                ] {
                    if !items.is_empty() {
                        out.push_str(&format!("{title}:\n{}", items.concat()));
                    }
                }
                if let Some(s) = stack {
                    out.push_str(&format!("stack: {s}\n"));
                }
                if let Some(d) = distribution {
                    out.push_str(&format!("firmware: {{ distribution: {d} }}\n"));
                }
                out
            },
        )
}

const EXAMPLE: &str = include_str!("data/failover.yaml");

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn random_documents_never_panic(text in document()) {
        check(Scenario::from_yaml_str(&text, "fuzz.yaml"), &text);
    }

    #[test]
    fn typed_documents_never_panic(text in typed_document()) {
        check(Scenario::from_yaml_str(&text, "fuzz.yaml"), &text);
    }

    #[test]
    fn mutated_examples_never_panic(
        edits in prop::collection::vec(
            (any::<prop::sample::Index>(), 0usize..12, prop::sample::select(VALUES)),
            1..4,
        )
    ) {
        let mut text = EXAMPLE.to_string();
        for (at, cut, value) in edits {
            let mut i = at.index(text.len() + 1);
            while !text.is_char_boundary(i) {
                i -= 1;
            }
            let mut j = (i + cut).min(text.len());
            while !text.is_char_boundary(j) {
                j -= 1;
            }
            text.replace_range(i..j, value);
        }
        check(Scenario::from_yaml_str(&text, "fuzz.yaml"), &text);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        check(Scenario::from_yaml_slice(&bytes, "fuzz.yaml"), &text);
    }

    #[test]
    fn random_text_never_panics(text in "[ -~\n\t:#{}\\[\\],&*!|>'\"-]{0,200}") {
        check(Scenario::from_yaml_str(&text, "fuzz.yaml"), &text);
    }
}
