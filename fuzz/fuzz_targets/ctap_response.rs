#![no_main]
// The client's CTAP2 answer parsers (makeCredential, getAssertion, getInfo, the clientPIN
// answers: retries, key agreement key, encrypted token; CTAPHID_INIT) and the CTAPHID
// reassembler on arbitrary bytes, as a security key (or something posing as one) may send
// them: an error, never a panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| hop_webauthn::fuzz::parse_ctap(data));
