#![no_main]
// Invariants: see hop_protocols::invariants::sftp_client.
libfuzzer_sys::fuzz_target!(|data: &[u8]| hop_protocols::invariants::sftp_client(data));
