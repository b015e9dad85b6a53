//! Loads the example YAML filter, installs it in a firmware instance, and
//! test-runs it on a few built frames, printing each verdict and the time per
//! frame. Run with `cargo run -p snet-firmware --example filter_test_run`.

use snet_firmware::control::ControlMessage;
use snet_firmware::filter::FilterTree;
use snet_firmware::kit::{PacketBuilder, test_run};
use snet_firmware::listener::ListenerKey;
use snet_firmware::wire::tcp_flags;
use snet_firmware::{Config, Firmware, Instant, ProcessorId};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tree = FilterTree::from_yaml(include_str!("lab-8080.yaml"))?;
    let mut fw = Firmware::new(Config::default())?;
    fw.set_filter(Box::new(tree));
    // Processor 1 listens on port 8080 for everybody else.
    let listen = ControlMessage::RegisterListener(ListenerKey {
        protocol: 6,
        addr: None,
        port: 8080,
    });
    fw.apply_envelope(
        &snet_firmware::control::Envelope::new(ProcessorId(1), listen),
        Instant::ZERO,
    )?;

    let syn = |client: &str| {
        PacketBuilder::tcp(client.parse().unwrap(), "198.18.0.10:8080".parse().unwrap())
            .flags(tcp_flags::SYN)
            .build()
    };
    let frames = vec![
        syn("198.18.5.7:40000")?,
        syn("198.18.6.7:40000")?,
        PacketBuilder::udp("198.18.5.7:5353".parse()?, "198.18.0.10:8080".parse()?).build()?,
        PacketBuilder::arp_request("198.18.5.7".parse()?, "198.18.0.10".parse()?).build()?,
        vec![0u8; 10],
    ];
    let report = test_run(&mut fw, &frames, 10_000, Instant::ZERO);
    for r in &report.frames {
        println!(
            "#{:<2} {:>4}B  {:<48} {}",
            r.index, r.len, r.summary, r.verdict
        );
    }
    println!(
        "{:.1} ns/frame over {} repeats",
        report.ns_per_frame, report.repeats
    );
    Ok(())
}
