//! Fixtures and helpers shared by the parser tests.

pub const TLS_OPENSSL: &[u8] = include_bytes!("../../testdata/tls_openssl_client_hello.bin");
pub const TLS_CURL: &[u8] = include_bytes!("../../testdata/tls_curl_client_hello.bin");
pub const SSH_BANNER_KEXINIT: &[u8] = include_bytes!("../../testdata/ssh_banner_kexinit.bin");
pub const PG_SSL_REQUEST: &[u8] = include_bytes!("../../testdata/postgres_ssl_request.bin");
pub const PG_STARTUP: &[u8] = include_bytes!("../../testdata/postgres_startup.bin");
pub const PG_STARTUP_AFTER_SSL: &[u8] =
    include_bytes!("../../testdata/postgres_startup_after_ssl.bin");
pub const HTTP_GET: &[u8] = include_bytes!("../../testdata/http_curl_get.bin");
pub const HTTP_WEBSOCKET: &[u8] = include_bytes!("../../testdata/http_curl_websocket_upgrade.bin");
pub const PROXY_V1_CURL: &[u8] = include_bytes!("../../testdata/proxy_v1_curl.bin");
pub const PROXY_V2_HAPROXY: &[u8] = include_bytes!("../../testdata/proxy_v2_haproxy.bin");
pub const TUNNEL_FRAMES: &[u8] = include_bytes!("../../testdata/tunnel_frames.bin");
pub const PG_SIMPLE_FE: &[u8] = include_bytes!("../../testdata/postgres_simple_frontend.bin");
pub const PG_SIMPLE_BE: &[u8] = include_bytes!("../../testdata/postgres_simple_backend.bin");
pub const PG_EXTENDED_FE: &[u8] = include_bytes!("../../testdata/postgres_extended_frontend.bin");
pub const PG_EXTENDED_BE: &[u8] = include_bytes!("../../testdata/postgres_extended_backend.bin");
pub const MYSQL_SESSION_CLIENT: &[u8] = include_bytes!("../../testdata/mysql_session_client.bin");
pub const MYSQL_SESSION_SERVER: &[u8] = include_bytes!("../../testdata/mysql_session_server.bin");
pub const MYSQL_PING_CLIENT: &[u8] = include_bytes!("../../testdata/mysql_ping_client.bin");
pub const MYSQL_PING_SERVER: &[u8] = include_bytes!("../../testdata/mysql_ping_server.bin");
pub const MYSQL_DENIED_CLIENT: &[u8] = include_bytes!("../../testdata/mysql_denied_client.bin");
pub const MYSQL_DENIED_SERVER: &[u8] = include_bytes!("../../testdata/mysql_denied_server.bin");

/// Every capture, by name.
pub const ALL: &[(&str, &[u8])] = &[
    ("tls_openssl", TLS_OPENSSL),
    ("tls_curl", TLS_CURL),
    ("ssh", SSH_BANNER_KEXINIT),
    ("pg_ssl", PG_SSL_REQUEST),
    ("pg_startup", PG_STARTUP),
    ("pg_startup_after_ssl", PG_STARTUP_AFTER_SSL),
    ("http_get", HTTP_GET),
    ("http_websocket", HTTP_WEBSOCKET),
    ("proxy_v1", PROXY_V1_CURL),
    ("proxy_v2", PROXY_V2_HAPROXY),
    ("tunnel", TUNNEL_FRAMES),
    ("pg_simple_fe", PG_SIMPLE_FE),
    ("pg_simple_be", PG_SIMPLE_BE),
    ("pg_extended_fe", PG_EXTENDED_FE),
    ("pg_extended_be", PG_EXTENDED_BE),
    ("mysql_session_client", MYSQL_SESSION_CLIENT),
    ("mysql_session_server", MYSQL_SESSION_SERVER),
    ("mysql_ping_client", MYSQL_PING_CLIENT),
    ("mysql_ping_server", MYSQL_PING_SERVER),
    ("mysql_denied_client", MYSQL_DENIED_CLIENT),
    ("mysql_denied_server", MYSQL_DENIED_SERVER),
];

/// Feed every prefix of `$bytes` to `$parse`: `Ok(None)` for each strict
/// prefix of the message, the full result from the message's end on (the
/// parsers never look past their message). Evaluates to the result on the
/// whole input. A macro because the message borrows from each prefix.
macro_rules! assert_every_prefix {
    ($bytes:expr, $parse:path) => {{
        let bytes: &[u8] = $bytes;
        let (whole, len) = $parse(bytes)
            .expect("whole capture parses")
            .expect("whole capture is complete");
        for n in 0..bytes.len() {
            let got = $parse(&bytes[..n]);
            if n < len {
                assert!(matches!(got, Ok(None)), "prefix of {n} bytes gave {got:?}");
            } else {
                let (msg, got_len) = got.expect("longer prefix parses").expect("complete");
                assert_eq!(msg, whole, "prefix of {n} bytes");
                assert_eq!(got_len, len, "prefix of {n} bytes");
            }
        }
        (whole, len)
    }};
}
pub(crate) use assert_every_prefix;

/// A small deterministic PRNG (xorshift64*) for mutation tests.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// A copy of `input` with a few random byte edits, truncations or splices.
    pub fn mutate(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = input.to_vec();
        for _ in 0..=self.below(4) {
            match self.below(4) {
                0 if !out.is_empty() => {
                    let i = self.below(out.len());
                    out[i] = self.next_u64() as u8;
                }
                1 if !out.is_empty() => {
                    let i = self.below(out.len());
                    out[i] ^= 1 << self.below(8);
                }
                2 => {
                    let n = self.below(out.len() + 1);
                    out.truncate(n);
                }
                _ => {
                    let i = self.below(out.len() + 1);
                    out.insert(i, self.next_u64() as u8);
                }
            }
        }
        out
    }
}
