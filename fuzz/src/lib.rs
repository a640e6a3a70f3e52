//! Plenary's fuzz targets for `cargo fuzz` (nightly): `fuzz_targets/*.rs` call the
//! functions of [`targets`], which the `plenary` package's tests also include to replay the
//! stored corpus on stable Rust. See docs/fuzzing.md.

pub mod targets;
