//! `cargo +nightly fuzz run hlog`: [`fuzzing::hlog`] on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::hlog(data));
