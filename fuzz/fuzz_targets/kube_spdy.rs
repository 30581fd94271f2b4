#![no_main]
// Invariants: see hop_protocols::invariants::kube_spdy.
libfuzzer_sys::fuzz_target!(|data: &[u8]| hop_protocols::invariants::kube_spdy(data));
