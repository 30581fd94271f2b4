#![no_main]
// Invariants: see hop_storage::backup::fuzz_decode.
libfuzzer_sys::fuzz_target!(|data: &[u8]| hop_storage::backup::fuzz_decode(data));
