//! Filter trees: a YAML tree and the equivalent Rust filter give the same
//! verdicts; the built-in filter as a tree (Rust and YAML) agrees with the
//! firmware's hard-coded path; YAML errors name the line and the field.

mod common;

use common::*;
use proptest::prelude::*;
use snet_firmware::control::{ControlMessage, Envelope};
use snet_firmware::filter::{Field, Filter, FilterTree, NodeSpec, Stages, Test, TreeError};
use snet_firmware::kit::PacketBuilder;
use snet_firmware::tuple::addr16;
use snet_firmware::wire::{ParsedFrame, tcp_flags};
use snet_firmware::{DropReason, Firmware, Instant, ProcessorId, QueueId, Verdict};

const LAB_YAML: &str = include_str!("../examples/lab-8080.yaml");
const BUILTIN_YAML: &str = include_str!("../examples/builtin.yaml");

/// The tutorial's filter written in Rust.
struct Lab8080;

impl Filter for Lab8080 {
    fn classify(&self, frame: &ParsedFrame, stages: &mut Stages<'_>) -> Verdict {
        let lab = u128::from_be_bytes(addr16("198.18.5.0".parse().unwrap()));
        let from_lab = frame
            .ip
            .is_some_and(|ip| u128::from_be_bytes(ip.src) >> 8 == lab >> 8);
        let to_8080 = frame
            .ip
            .and_then(|ip| ip.transport)
            .is_some_and(|t| t.dst_port == 8080);
        if to_8080 && from_lab {
            stages.deliver(ProcessorId(3), QueueId(0))
        } else {
            stages.host_controlled(frame)
        }
    }
}

fn firmware(filter: Option<Box<dyn Filter + Send>>) -> Firmware {
    let mut fw = Firmware::new(shared_config()).unwrap();
    for (p, port) in [(1u16, 8080u16), (1, 23), (2, 23)] {
        fw.apply(
            &Envelope::new(
                ProcessorId(p),
                ControlMessage::RegisterListener(tcp_key(port)),
            )
            .to_bytes(),
            Instant::ZERO,
        )
        .unwrap();
    }
    if let Some(f) = filter {
        fw.set_filter(f);
    }
    fw
}

fn frame() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let addr = prop_oneof![Just("198.18.5"), Just("198.18.6"), Just("198.19.5")];
    let port = prop_oneof![Just(8080u16), Just(23), Just(80), 1u16..65535];
    let flags = prop_oneof![
        Just(tcp_flags::SYN),
        Just(tcp_flags::ACK),
        Just(tcp_flags::ACK | tcp_flags::PSH),
        Just(tcp_flags::RST)
    ];
    (addr, 1u8..255, 1024u16..1100, port, flags, 0u8..6).prop_map(
        |(net, host, sport, dport, flags, kind)| {
            let src = format!("{net}.{host}:{sport}").parse().unwrap();
            let dst = format!("{CLUSTER}:{dport}").parse().unwrap();
            match kind {
                0 => vec![
                    PacketBuilder::udp(src, dst)
                        .payload(&[1; 20])
                        .build()
                        .unwrap(),
                ],
                1 => vec![
                    PacketBuilder::arp_request(
                        format!("{net}.{host}").parse().unwrap(),
                        CLUSTER.parse().unwrap(),
                    )
                    .build()
                    .unwrap(),
                ],
                2 => PacketBuilder::udp(src, dst)
                    .payload(&[2; 200])
                    .ident(u32::from(host))
                    .build_fragments(64)
                    .unwrap(),
                3 => vec![
                    PacketBuilder::icmp_echo(src.ip(), dst.ip())
                        .build()
                        .unwrap(),
                ],
                _ => vec![PacketBuilder::tcp(src, dst).flags(flags).build().unwrap()],
            }
        },
    )
}

fn frames() -> impl Strategy<Value = Vec<Vec<u8>>> {
    // A fragmented datagram yields several frames, kept in order.
    proptest::collection::vec(frame(), 1..40).prop_map(|v| v.into_iter().flatten().collect())
}

fn run(fw: &mut Firmware, frames: &[Vec<u8>]) -> Vec<Verdict> {
    frames
        .iter()
        .enumerate()
        .map(|(i, f)| fw.classify(f, Instant::from_millis(i as u64)))
        .collect()
}

proptest! {
    #[test]
    fn yaml_tree_and_rust_filter_agree(frames in frames()) {
        let mut yaml = firmware(Some(Box::new(FilterTree::from_yaml(LAB_YAML).unwrap())));
        let mut rust = firmware(Some(Box::new(Lab8080)));
        prop_assert_eq!(run(&mut yaml, &frames), run(&mut rust, &frames));
        prop_assert_eq!(yaml.counters(), rust.counters());
    }

    #[test]
    fn builtin_tree_yaml_and_hard_coded_agree(frames in frames()) {
        let mut hard = firmware(None);
        let mut tree = firmware(Some(Box::new(FilterTree::builtin())));
        let mut yaml = firmware(Some(Box::new(FilterTree::from_yaml(BUILTIN_YAML).unwrap())));
        let expect = run(&mut hard, &frames);
        prop_assert_eq!(&run(&mut tree, &frames), &expect);
        prop_assert_eq!(&run(&mut yaml, &frames), &expect);
        prop_assert_eq!(hard.counters(), yaml.counters());
    }
}

#[test]
fn the_lab_filter_does_what_it_says() {
    let mut fw = firmware(Some(Box::new(FilterTree::from_yaml(LAB_YAML).unwrap())));
    let syn = |src: &str| {
        PacketBuilder::tcp(src.parse().unwrap(), server(8080))
            .flags(tcp_flags::SYN)
            .build()
            .unwrap()
    };
    assert_eq!(
        fw.classify(&syn("198.18.5.9:40000"), Instant::ZERO),
        Verdict::deliver(3, 0)
    );
    assert_eq!(
        fw.classify(&syn("198.18.6.9:40000"), Instant::ZERO),
        Verdict::deliver(1, 0)
    );
    // Processor 3 fails: its filter leaf falls back to the master.
    fw.apply(
        &Envelope::new(
            ProcessorId(1),
            ControlMessage::ProcessorDown(ProcessorId(3)),
        )
        .to_bytes(),
        Instant::ZERO,
    )
    .unwrap();
    assert_eq!(
        fw.classify(&syn("198.18.5.9:40001"), Instant::ZERO),
        Verdict::Master {
            processor: ProcessorId(0)
        }
    );
}

#[test]
fn rust_built_tree_equals_yaml_tree() {
    let spec = NodeSpec::if_equals(
        Field::DstPort,
        8080,
        NodeSpec::if_test(
            Field::SrcAddr,
            Test::prefix("198.18.5.0/24").unwrap(),
            NodeSpec::deliver(3, 0),
            NodeSpec::HostControlled,
        ),
        NodeSpec::HostControlled,
    );
    assert_eq!(
        FilterTree::compile("lab-8080", &spec).unwrap(),
        FilterTree::from_yaml(LAB_YAML).unwrap()
    );
    assert_eq!(
        FilterTree::from_yaml(BUILTIN_YAML).unwrap(),
        FilterTree::builtin()
    );
}

#[test]
fn drop_leaves_and_case_nodes() {
    let yaml = "name: no-telnet\nroot:\n  case:\n    field: dst_port\n    arms:\n      - { value: 23, then: drop }\n      - { value: 8080, then: { deliver: { processor: 2, queue: 5 } } }\n    default: host_controlled\n";
    let tree = FilterTree::from_yaml(yaml).unwrap();
    let mut fw = firmware(Some(Box::new(tree)));
    assert_eq!(
        fw.classify(&syn(0, 23), Instant::ZERO),
        Verdict::Drop(DropReason::Filtered)
    );
    // Queue 5 of a one-queue processor is queue 0.
    assert_eq!(
        fw.classify(&syn(0, 8080), Instant::ZERO),
        Verdict::deliver(2, 0)
    );
    assert_eq!(fw.counters().dropped(DropReason::Filtered), 1);
}

fn yaml_error(text: &str) -> (usize, String) {
    match FilterTree::from_yaml(text) {
        Err(TreeError::Yaml { line, message, .. }) => (line, message),
        other => panic!("expected a YAML error, got {other:?}"),
    }
}

#[test]
fn yaml_errors_name_the_line_and_the_field() {
    let (line, msg) = yaml_error(
        "name: x\nroot:\n  if:\n    field: dst_prot\n    equals: 1\n    then: master\n    else: drop\n",
    );
    assert_eq!(line, 4, "{msg}");
    assert!(
        msg.contains("dst_prot") && msg.contains("dst_port"),
        "{msg}"
    );
    let (line, msg) = yaml_error(
        "name: x\nroot:\n  if:\n    field: dst_port\n    equals: 1\n    then: master\n    else: drop\n    colour: red\n",
    );
    assert_eq!(line, 8, "{msg}");
    assert!(msg.contains("colour"), "{msg}");
    let (_, msg) = yaml_error(
        "name: x\nroot:\n  if:\n    field: src_port\n    prefix: 198.18.5.0/24\n    then: master\n    else: drop\n",
    );
    assert!(msg.contains("src_port") && msg.contains("prefix"), "{msg}");
    let (_, msg) =
        yaml_error("name: x\nroot:\n  deliver: { processor: 3, queue: 0 }\n  master: {}\n");
    assert!(msg.contains("exactly one key"), "{msg}");
    let (line, msg) = yaml_error("name: x\nroot: mastr\n");
    assert_eq!(line, 2, "{msg}");
    assert!(msg.contains("mastr"), "{msg}");
    let (_, msg) = yaml_error(
        "name: x\nroot:\n  case:\n    field: ip_protocol\n    arms: [ { value: tcp, then: drop }, { value: 6, then: master } ]\n    default: drop\n",
    );
    assert!(msg.contains("twice"), "{msg}");
    // Deep nesting is refused, not a stack overflow.
    let deep = format!(
        "name: x\nroot: {}master{}\n",
        "{ connections: { miss: ".repeat(100),
        " } }".repeat(100)
    );
    assert!(FilterTree::from_yaml(&deep).is_err());
}
