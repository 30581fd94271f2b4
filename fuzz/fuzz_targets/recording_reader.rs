#![no_main]
// Invariants: see hop_storage::recording::fuzz_reader.
libfuzzer_sys::fuzz_target!(|data: &[u8]| hop_storage::recording::fuzz_reader(data));
