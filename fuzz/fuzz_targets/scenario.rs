//! `cargo +nightly fuzz run scenario`: [`fuzzing::scenario`] on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::scenario(data));
