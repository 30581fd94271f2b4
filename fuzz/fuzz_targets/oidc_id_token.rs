#![no_main]
// Invariants: see hop_api::jose::fuzz_parse.
libfuzzer_sys::fuzz_target!(|data: &[u8]| hop_api::jose::fuzz_parse(data));
