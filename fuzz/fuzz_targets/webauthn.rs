#![no_main]
// Every parser of authenticator bytes (client data, authenticator data, attestation objects,
// COSE keys) on arbitrary input: an error, never a panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| hop_webauthn::fuzz::parse_all(data));
