//! YAML filter trees: any text is either a compiled tree or a typed error
//! (never a panic, never unbounded recursion).
#![no_main]

use libfuzzer_sys::fuzz_target;
use snet_firmware::filter::FilterTree;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = FilterTree::from_yaml(text);
});
