#![no_main]
// Invariants: see hop_protocols::invariants::mysql_packet.
libfuzzer_sys::fuzz_target!(|data: &[u8]| hop_protocols::invariants::mysql_packet(data));
