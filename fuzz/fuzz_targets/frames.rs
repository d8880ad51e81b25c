//! `cargo +nightly fuzz run frames`: [`fuzzing::frames`] on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::frames(data));
