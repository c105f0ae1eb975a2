#![no_main]
//! libFuzzer entry for `amphi_fuzz::image` (the body and its invariants live there).

libfuzzer_sys::fuzz_target!(|data: &[u8]| amphi_fuzz::image(data));
