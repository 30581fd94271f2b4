//! Properties every parser in this crate promises, as executable checks.
//!
//! This module owns the invariants that the fuzz targets (`fuzz/`) and the
//! tests assert over arbitrary input: no panic; a returned length is within
//! the input; the verdict on exactly the returned length is the same, and on
//! one byte less is "need more" (the parsers are prefix-consistent); and for
//! the tunnel, `encode(decode(bytes)) == bytes` (the encoding is canonical),
//! hence decode∘encode∘decode = decode. Each function panics with a message
//! when a property fails, and does nothing else: no IO, no state.

use crate::{http1, postgres, proxy_protocol, sniff, ssh, tls, tunnel};

/// The shared prefix properties of a `parse(buf) -> Result<Option<(T, usize)>, E>`;
/// evaluates to the parsed `Option<(T, usize)>`. (A macro because `T` borrows
/// from each input in turn.)
macro_rules! check_prefix_consistent {
    ($name:literal, $data:expr, $parse:path) => {{
        let data: &[u8] = $data;
        let result = $parse(data);
        if let Ok(Some((msg, len))) = &result {
            let len = *len;
            assert!(len >= 1, "{}: zero-length message", $name);
            assert!(
                len <= data.len(),
                "{}: length {len} > input {}",
                $name,
                data.len()
            );
            let exact = data.get(..len).unwrap_or_default();
            match $parse(exact) {
                Ok(Some((again, again_len))) => {
                    assert_eq!(&again, msg, "{}: different message on its own bytes", $name);
                    assert_eq!(
                        again_len, len,
                        "{}: different length on its own bytes",
                        $name
                    );
                }
                other => panic!("{}: {other:?} on exactly the message's bytes", $name),
            }
            let short = data.get(..len - 1).unwrap_or_default();
            let short_result = $parse(short);
            assert!(
                matches!(short_result, Ok(None)),
                "{}: one byte short gave {short_result:?}, not need-more",
                $name
            );
        }
        result.ok().flatten()
    }};
}

/// [`sniff::sniff`]: decides within [`sniff::MAX_SNIFF_LEN`] bytes, and the
/// decisive prefix alone gives the same verdict while one byte less needs more.
pub fn sniff(data: &[u8]) {
    match sniff::sniff(data) {
        sniff::Sniff::NeedMore => assert!(
            data.len() < sniff::MAX_SNIFF_LEN,
            "sniff: need-more after {} bytes",
            data.len()
        ),
        verdict @ sniff::Sniff::Detected { decided_after, .. } => {
            assert!(decided_after >= 1 && decided_after <= data.len());
            assert!(decided_after <= sniff::MAX_SNIFF_LEN);
            let exact = data.get(..decided_after).unwrap_or_default();
            assert_eq!(
                sniff::sniff(exact),
                verdict,
                "sniff: unstable on decisive prefix"
            );
            let short = data.get(..decided_after - 1).unwrap_or_default();
            assert_eq!(
                sniff::sniff(short),
                sniff::Sniff::NeedMore,
                "sniff: not minimal"
            );
        }
    }
}

/// [`tls::parse_client_hello`]: prefix properties, a valid SNI, bounded ALPN.
pub fn tls_client_hello(data: &[u8]) {
    if let Some((hello, _)) = check_prefix_consistent!("tls", data, tls::parse_client_hello) {
        if let Some(name) = hello.server_name() {
            assert!(
                tls::check_host_name(name.as_bytes()).is_ok(),
                "tls: invalid SNI {name:?}"
            );
        }
        assert!(hello.alpn_protocols().count() <= tls::MAX_ALPN_PROTOCOLS);
        assert!(hello.alpn_protocols().all(|p| !p.is_empty()));
        let owned = hello.clone().into_owned();
        assert_eq!(owned.server_name(), hello.server_name());
        assert!(owned.alpn_protocols().eq(hello.alpn_protocols()));
        assert!(owned.supported_versions().eq(hello.supported_versions()));
    }
}

/// [`ssh::parse_identification`]: prefix properties, bounded preamble.
pub fn ssh_banner(data: &[u8]) {
    if let Some((id, _)) = check_prefix_consistent!("ssh", data, ssh::parse_identification) {
        assert!(id.line.len() < ssh::MAX_LINE_LEN);
        assert!(id.preamble_lines <= ssh::MAX_PREAMBLE_LINES);
        assert!(!id.software_version.is_empty());
    }
}

/// [`postgres::parse_startup`]: prefix properties, bounded length, a user.
pub fn postgres_startup(data: &[u8]) {
    if let Some((packet, len)) = check_prefix_consistent!("postgres", data, postgres::parse_startup)
    {
        assert!(len <= postgres::MAX_STARTUP_LEN);
        if let postgres::StartupPacket::Startup(m) = packet {
            assert!(!m.user().is_empty(), "postgres: startup without user");
            let _ = m.parameters().count();
        }
    }
}

/// [`http1::parse_request`]: prefix properties, bounded head and headers.
pub fn http1_request(data: &[u8]) {
    if let Some((req, len)) = check_prefix_consistent!("http1", data, http1::parse_request) {
        assert!(len <= http1::MAX_HEAD_LEN);
        assert!(req.headers().len() <= http1::MAX_HEADERS);
        let _ = req.upgrade();
    }
}

/// [`proxy_protocol::parse`]: prefix properties, bounded header, TLVs that
/// exactly fill their block.
pub fn proxy_protocol(data: &[u8]) {
    if let Some((header, len)) = check_prefix_consistent!("proxy", data, proxy_protocol::parse) {
        match header.version {
            proxy_protocol::Version::V1 => assert!(len <= proxy_protocol::V1_MAX_LEN),
            proxy_protocol::Version::V2 => {
                assert!(len <= 16 + proxy_protocol::V2_MAX_PAYLOAD_LEN);
            }
        }
        let tlv_bytes: usize = header.tlvs().map(|t| 3 + t.value.len()).sum();
        assert!(tlv_bytes <= len);
    }
}

/// [`tunnel::Frame::decode`]: prefix properties, and re-encoding a decoded
/// frame gives back exactly the bytes it came from.
pub fn tunnel_frame(data: &[u8]) {
    if let Some((frame, len)) = check_prefix_consistent!("tunnel", data, tunnel::Frame::decode) {
        let mut out = Vec::new();
        frame
            .encode(&mut out)
            .unwrap_or_else(|e| panic!("tunnel: decoded frame does not encode: {e}"));
        assert_eq!(
            out.as_slice(),
            data.get(..len).unwrap_or_default(),
            "tunnel: not canonical"
        );
        assert_eq!(tunnel::Frame::decode(&out), Ok(Some((frame, len))));
    }
}
