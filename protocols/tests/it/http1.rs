use hop_protocols::http1::{HttpError, MAX_HEAD_LEN, MAX_HEADERS, Request, Version, parse_request};

use crate::support::*;

fn ok(bytes: &[u8]) -> (Request<'_>, usize) {
    parse_request(bytes).unwrap().unwrap()
}

fn malformed(bytes: &[u8]) {
    let e = parse_request(bytes).unwrap_err();
    assert!(
        matches!(e, HttpError::Malformed { .. }),
        "{e:?} for {bytes:?}"
    );
}

#[test]
fn curl_get_every_prefix() {
    let (req, len) = assert_every_prefix!(HTTP_GET, parse_request);
    assert_eq!(len, HTTP_GET.len());
    assert_eq!(req.method, "GET");
    assert_eq!(req.target, "/hello?x=1");
    assert_eq!(req.version, Version::Http11);
    let names: Vec<_> = req.headers().iter().map(|h| h.name).collect();
    assert_eq!(names, ["Host", "User-Agent", "Accept", "X-Test"]);
    assert!(req.host().unwrap().starts_with(b"127.0.0.1:"));
    assert_eq!(req.header("x-test"), Some(&b"1"[..]));
    assert_eq!(req.header("user-agent"), Some(&b"curl/7.88.1"[..]));
    assert_eq!(req.upgrade(), None);
}

#[test]
fn curl_websocket_upgrade_every_prefix() {
    let (req, _) = assert_every_prefix!(HTTP_WEBSOCKET, parse_request);
    assert_eq!(req.target, "/ws");
    assert!(req.connection_has("Upgrade"));
    assert_eq!(req.upgrade(), Some(&b"websocket"[..]));
}

#[test]
fn upgrade_needs_connection_token() {
    let (req, _) = ok(b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n");
    assert_eq!(req.upgrade(), None);
    let (req, _) =
        ok(b"GET / HTTP/1.1\r\nConnection: keep-alive\r\nconnection:  close ,UPGRADE \r\nUpgrade: h2c\r\n\r\n");
    assert_eq!(req.upgrade(), Some(&b"h2c"[..]));
    let (req, _) = ok(b"GET / HTTP/1.1\r\nConnection: upgrades\r\nUpgrade: h2c\r\n\r\n");
    assert_eq!(req.upgrade(), None);
}

#[test]
fn body_is_not_read() {
    let input = b"POST /x HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello";
    let (req, len) = ok(input);
    assert_eq!(len, input.len() - 5);
    assert_eq!(req.version, Version::Http10);
    assert_eq!(req.host(), None);
}

#[test]
fn lenient_line_endings_and_leading_empty_lines() {
    let input = b"\r\n\nGET * HTTP/1.1\nHost: a\n\nrest";
    let (req, len) = ok(input);
    assert_eq!(len, input.len() - 4);
    assert_eq!(req.target, "*");
    assert_eq!(req.host(), Some(&b"a"[..]));
}

#[test]
fn header_values() {
    let (req, _) = ok(b"GET / HTTP/1.1\r\nA:\r\nB: \t x y \t\r\nC: caf\xc3\xa9 \xff\r\n\r\n");
    let values: Vec<_> = req.headers().iter().map(|h| h.value).collect();
    assert_eq!(values, [&b""[..], b"x y", b"caf\xc3\xa9 \xff"]);
    malformed(b"GET / HTTP/1.1\r\nA: x\x01y\r\n\r\n");
    malformed(b"GET / HTTP/1.1\r\nA: x\x00y\r\n\r\n");
    malformed(b"GET / HTTP/1.1\r\nA: x\x7fy\r\n\r\n");
}

#[test]
fn malformed_heads() {
    malformed(b"GET  / HTTP/1.1\r\n\r\n");
    malformed(b"GET / HTTP/1.1 x\r\n\r\n");
    malformed(b"GET /\r\n\r\n");
    malformed(b"G(T / HTTP/1.1\r\n\r\n");
    malformed(b"GET /\x80 HTTP/1.1\r\n\r\n");
    malformed(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n");
    malformed(b"GET / HTTP/1.1\r\n: a\r\n\r\n");
    malformed(b"GET / HTTP/1.1\r\nNoColon\r\n\r\n");
    malformed(b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n");
    malformed(b"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n");
    malformed(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n");
    malformed(b"GET / HTTTP/1.1\r\n\r\n");
    malformed(b"GET / HTTP/1.1\r\nA\xff: b\r\n\r\n");
}

#[test]
fn versions() {
    assert_eq!(
        parse_request(b"GET / HTTP/2.0\r\n\r\n"),
        Err(HttpError::UnsupportedVersion { major: 2, minor: 0 })
    );
    assert_eq!(
        parse_request(b"GET / HTTP/0.9\r\n"),
        Err(HttpError::UnsupportedVersion { major: 0, minor: 9 })
    );
}

#[test]
fn header_count_limit() {
    let mut head = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..MAX_HEADERS {
        head.extend(format!("H{i}: v\r\n").as_bytes());
    }
    let mut ok_head = head.clone();
    ok_head.extend(b"\r\n");
    assert_eq!(ok(&ok_head).0.headers().len(), MAX_HEADERS);
    head.extend(b"One-More: v\r\n\r\n");
    assert_eq!(parse_request(&head), Err(HttpError::TooManyHeaders));
}

#[test]
fn head_size_limit() {
    let fixed = b"GET / HTTP/1.1\r\nX: \r\n\r\n".len();
    let fill = "a".repeat(MAX_HEAD_LEN - fixed);
    let head = format!("GET / HTTP/1.1\r\nX: {fill}\r\n\r\n");
    assert_eq!(head.len(), MAX_HEAD_LEN);
    assert_eq!(ok(head.as_bytes()).1, MAX_HEAD_LEN);
    let head = format!("GET / HTTP/1.1\r\nX: {fill}a\r\n\r\n");
    assert_eq!(parse_request(head.as_bytes()), Err(HttpError::HeadTooLarge));
    // Need-more until the limit, then an error.
    let endless = vec![b'a'; MAX_HEAD_LEN];
    assert_eq!(parse_request(&endless[..MAX_HEAD_LEN - 1]), Ok(None));
    assert_eq!(parse_request(&endless), Err(HttpError::HeadTooLarge));
}

#[test]
fn mutated_captures_keep_invariants() {
    let mut rng = Rng::new(4);
    for seed in [HTTP_GET, HTTP_WEBSOCKET] {
        for _ in 0..5000 {
            hop_protocols::invariants::http1_request(&rng.mutate(seed));
        }
    }
}
