//! `cargo +nightly fuzz run omb`: [`fuzzing::omb`] on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::omb(data));
