//! `cargo fuzz run grant`: see `fuzz/src/targets.rs` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| plenary_fuzz::targets::grant(data));
