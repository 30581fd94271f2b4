#![no_main]
// Invariants: see hop_protocols::invariants::kube_ws.
libfuzzer_sys::fuzz_target!(|data: &[u8]| hop_protocols::invariants::kube_ws(data));
