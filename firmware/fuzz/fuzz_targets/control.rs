//! Control messages: any bytes must be rejected with a reason or applied, and
//! an applied message must re-encode to the same bytes; the firmware's
//! invariants hold after each (see `snet_firmware::kit::invariants::check_control`).
//! Inputs are split at 0xfe bytes into a sequence of messages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snet_firmware::kit::invariants::check_control;
use snet_firmware::{Config, Firmware, Instant, Policy};

fuzz_target!(|data: &[u8]| {
    let config = Config {
        connection_capacity: 16,
        ..Config::default()
    }
    .share_ports(6, 23, 23, Policy::Maglev);
    let Ok(mut fw) = Firmware::new(config) else {
        return;
    };
    for msg in data.split(|b| *b == 0xfe) {
        if let Err(e) = check_control(&mut fw, msg, Instant::ZERO) {
            panic!("invariant broken: {e}");
        }
    }
});
