#![no_main]
// Invariants: see hop_protocols::invariants::mysql_schema.
libfuzzer_sys::fuzz_target!(|data: &[u8]| hop_protocols::invariants::mysql_schema(data));
