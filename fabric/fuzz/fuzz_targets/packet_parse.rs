//! Fuzzes the fabric packet parser: arbitrary bytes must never panic, and
//! every packet that parses must emit back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snet_fabric::packet::{OVERHEAD, Packet, fuzz_check};

fuzz_target!(|data: &[u8]| {
    // The input as it is: almost always stopped by the length or CRC check.
    fuzz_check(data);
    // The same bytes with a correct CRC, so the fuzzer also explores the
    // header checks behind it.
    if data.len() >= OVERHEAD {
        let mut fixed = data.to_vec();
        Packet::new_unchecked(&mut fixed[..]).fill_crc();
        fuzz_check(&fixed);
    }
});
