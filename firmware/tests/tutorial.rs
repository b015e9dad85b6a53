//! The test written in docs/filter-tutorial.md, kept here so it runs.

use snet_firmware::filter::FilterTree;
use snet_firmware::kit::{Harness, PacketBuilder};
use snet_firmware::wire::tcp_flags;
use snet_firmware::{Config, DropReason, ProcessorId, Verdict};

const LAB_8080: &str = include_str!("../examples/lab-8080.yaml");

fn syn(client: &str) -> Vec<u8> {
    PacketBuilder::tcp(client.parse().unwrap(), "198.18.0.10:8080".parse().unwrap())
        .flags(tcp_flags::SYN)
        .build()
        .unwrap()
}

#[test]
fn lab_traffic_on_8080_goes_to_processor_3() {
    let tree = FilterTree::from_yaml(LAB_8080).unwrap();
    let mut h = Harness::new(Config::default())
        .unwrap()
        .with_filter(Box::new(tree));
    // Processor 1 runs the public service on port 8080.
    h.listen(1, 6, 8080).unwrap();

    // From the lab subnet: processor 3, whatever the listeners say.
    h.expect_delivered_to(&syn("198.18.5.7:40000"), 3).unwrap();
    h.expect_delivered_to(&syn("198.18.5.254:40001"), 3)
        .unwrap();
    // From elsewhere: the built-in filter, so the listener on processor 1.
    h.expect_delivered_to(&syn("198.18.6.7:40000"), 1).unwrap();
    // Other ports are untouched: nobody listens on 8081, so the master gets it.
    let other = PacketBuilder::tcp(
        "198.18.5.7:40000".parse().unwrap(),
        "198.18.0.10:8081".parse().unwrap(),
    )
    .flags(tcp_flags::SYN)
    .build()
    .unwrap();
    h.expect(
        &other,
        &Verdict::Master {
            processor: ProcessorId(0),
        },
    )
    .unwrap();
    // Malformed frames never reach a processor.
    assert_eq!(
        h.expect_no_delivery(&[0u8; 10]).unwrap(),
        Verdict::Drop(DropReason::TruncatedEthernet)
    );
}
