#![no_main]
// Invariants: see hop_protocols::invariants::tunnel_frame.
libfuzzer_sys::fuzz_target!(|data: &[u8]| hop_protocols::invariants::tunnel_frame(data));
