//! `cargo +nightly fuzz run gateway`: [`fuzzing::gateway`] on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::gateway(data));
