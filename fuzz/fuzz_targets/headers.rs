//! `cargo +nightly fuzz run headers`: [`fuzzing::headers`] on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::headers(data));
