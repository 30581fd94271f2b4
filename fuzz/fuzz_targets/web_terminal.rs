#![no_main]
// Invariants: see hop_protocols::invariants::web_terminal.
libfuzzer_sys::fuzz_target!(|data: &[u8]| hop_protocols::invariants::web_terminal(data));
