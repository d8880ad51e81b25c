//! `cargo +nightly fuzz run batches`: [`fuzzing::batches`] on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::batches(data));
