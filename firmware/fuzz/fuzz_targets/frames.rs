//! Frames: any bytes, classified by a firmware with listeners and
//! connections, must keep the firmware's invariants (see
//! `snet_firmware::kit::invariants::check_frame`). The input is split into
//! frames at 0xff bytes so sequences are explored too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snet_firmware::control::{ControlMessage, Envelope};
use snet_firmware::kit::invariants::check_frame;
use snet_firmware::listener::ListenerKey;
use snet_firmware::wire::VlanPolicy;
use snet_firmware::{Config, Firmware, Instant, Policy, ProcessorId};

fuzz_target!(|data: &[u8]| {
    let mut config = Config {
        provisional_capacity: 8,
        ..Config::default()
    }
    .share_ports(6, 23, 23, Policy::RoundRobin);
    if data.first().is_some_and(|b| b & 1 == 1) {
        config.parse.vlan = VlanPolicy::Accept(Vec::new());
    }
    let Ok(mut fw) = Firmware::new(config) else {
        return;
    };
    for p in [1u16, 2, 3] {
        let m = Envelope::new(
            ProcessorId(p),
            ControlMessage::RegisterListener(ListenerKey {
                protocol: 6,
                addr: None,
                port: 23,
            }),
        );
        let _ = fw.apply(&m.to_bytes(), Instant::ZERO);
    }
    let mut ms = 0u64;
    for frame in data.split(|b| *b == 0xff).filter(|f| !f.is_empty()) {
        ms += 100;
        if let Err(e) = check_frame(&mut fw, frame, Instant::from_millis(ms)) {
            panic!("invariant broken: {e}");
        }
    }
});
