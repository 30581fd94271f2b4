#![no_main]
// Every parser of SAML IdP bytes (responses as XML and base64, metadata, certificates, the
// hardened XML front and exclusive c14n, enveloped signatures) on arbitrary input: an error,
// never a panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| hop_saml::fuzz::parse_all(data));
