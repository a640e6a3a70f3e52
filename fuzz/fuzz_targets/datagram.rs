//! `cargo fuzz run datagram`: see `fuzz/src/targets.rs` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| plenary_fuzz::targets::datagram(data));
