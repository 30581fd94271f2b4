//! Properties every parser in this crate promises, as executable checks.
//!
//! This module owns the invariants that the fuzz targets (`fuzz/`) and the
//! tests assert over arbitrary input: no panic; a returned length is within
//! the input; the verdict on exactly the returned length is the same, and on
//! one byte less is "need more" (the parsers are prefix-consistent); and for
//! the tunnel and the database message codecs, `encode(decode(bytes)) ==
//! bytes` (the encoding is canonical), hence decode∘encode∘decode = decode;
//! and the streaming scanners report the same events however the input is
//! split, never buffering more than their cap. Each function panics with a message
//! when a property fails, and does nothing else: no IO, no state.

use crate::{http1, kube, mysql, postgres, proxy_protocol, sftp, sniff, ssh, tls, tunnel};

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

/// [`kube::request::parse`]: no panic on any method and target; a parsed request names a
/// resource exactly when it has an API version, its fields are bounded by the input's length
/// (decoding only shrinks), and parsing is deterministic.
pub fn kube_request(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (method, target) = text.split_once(' ').unwrap_or(("GET", text));
    let first = kube::request::parse(method, target);
    assert_eq!(
        first,
        kube::request::parse(method, target),
        "kube: not deterministic"
    );
    let Ok(req) = first else { return };
    assert_eq!(
        req.is_resource(),
        !req.api_version.is_empty(),
        "kube: resource without version"
    );
    let fields = [&req.api_group, &req.api_version];
    let optional = [&req.resource, &req.subresource, &req.namespace, &req.name];
    let total: usize = fields.iter().map(|f| f.len()).sum::<usize>()
        + optional
            .iter()
            .map(|f| f.as_ref().map_or(0, String::len))
            .sum::<usize>();
    assert!(
        total <= target.len(),
        "kube: decoded fields longer than the target"
    );
    for f in optional
        .iter()
        .filter_map(|f| f.as_deref())
        .chain(fields.iter().map(|f| f.as_str()))
    {
        assert!(
            !f.contains('/') && !f.contains('\0'),
            "kube: a field holds `/` or NUL"
        );
        assert!(
            f.len() <= kube::request::MAX_SEGMENT_LEN,
            "kube: field over the segment limit"
        );
    }
    if req.is_connect() {
        assert_eq!(
            req.verb,
            kube::request::KubeVerb::Create,
            "kube: stream not create"
        );
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

/// Split `data` at a position derived from its first byte (deterministic, so
/// a fuzz crash replays).
fn split_point(data: &[u8]) -> usize {
    data.first()
        .map_or(0, |&b| usize::from(b) % (data.len() + 1))
}

/// [`postgres::parse_frontend`]: prefix properties, canonical re-encoding,
/// and [`postgres::FrontendScanner`] agreeing with the parser whether the
/// input arrives whole or in two chunks, within its cap.
pub fn postgres_frontend(data: &[u8]) {
    if let Some((msg, len)) =
        check_prefix_consistent!("pg frontend", data, postgres::parse_frontend)
    {
        let mut out = Vec::new();
        msg.encode(&mut out);
        assert_eq!(
            out.as_slice(),
            data.get(..len).unwrap_or_default(),
            "pg frontend: not canonical"
        );
    }
    let whole = pg_scan(data, &[data.len()]);
    let split = pg_scan(data, &[split_point(data), data.len()]);
    assert_eq!(whole, split, "pg frontend scanner: depends on the split");
    if let Ok(Some((raw, _))) =
        postgres::split_message(data, 1 << 20, postgres::frontend::is_frontend_type)
    {
        pg_heads_agree(raw.tag, raw.body);
    }
}

/// [`postgres::parse_truncated_head`] on every prefix of a body: what it reads is what the whole
/// message says (names exact, text a prefix), or an error.
fn pg_heads_agree(tag: u8, body: &[u8]) {
    use postgres::{FrontendMessage as M, TruncatedHead as H};
    let whole = M::parse_body(tag, body).ok();
    for cut in 0..=body.len() {
        let head = body.get(..cut).unwrap_or_default();
        let (Ok(h), Some(m)) = (postgres::parse_truncated_head(tag, head), &whole) else {
            continue;
        };
        let agrees = match (h, m) {
            (H::Query { sql }, M::Query { sql: full }) => full.starts_with(sql),
            (H::Parse { statement, query }, M::Parse(p)) => {
                statement == p.statement && p.query.starts_with(query)
            }
            (H::Bind { portal, statement }, M::Bind(b)) => {
                portal == b.portal && statement == b.statement
            }
            (H::FunctionCall { function_oid }, M::FunctionCall(f)) => {
                function_oid == f.function_oid
            }
            (H::Other, _) => true,
            _ => false,
        };
        assert!(agrees, "pg truncated head: {h:?} disagrees with {m:?}");
    }
}

fn pg_scan(data: &[u8], cuts: &[usize]) -> Vec<String> {
    let mut scanner = postgres::FrontendScanner::new(1 << 20, 64);
    let mut events = Vec::new();
    let mut at = 0;
    for &cut in cuts {
        let chunk = data.get(at..cut).unwrap_or_default();
        at = cut;
        let mut feed = scanner.feed(chunk);
        loop {
            match feed.next() {
                Ok(Some(e)) => {
                    if let postgres::Scanned::Truncated { tag, head, .. } = &e {
                        assert_eq!(head.len(), 64, "pg scanner: head is not the cap");
                        let read = postgres::parse_truncated_head(*tag, head);
                        events.push(format!("{read:?}"));
                    }
                    events.push(format!("{e:?}"));
                }
                Ok(None) => break,
                Err(e) => {
                    events.push(format!("error {e:?}"));
                    return events;
                }
            }
        }
        assert!(scanner.buffered() <= 64 + postgres::HEADER_LEN);
    }
    events
}

/// [`postgres::parse_backend`]: prefix properties and canonical re-encoding.
pub fn postgres_backend(data: &[u8]) {
    if let Some((msg, len)) = check_prefix_consistent!("pg backend", data, postgres::parse_backend)
    {
        let mut out = Vec::new();
        msg.encode(&mut out);
        assert_eq!(
            out.as_slice(),
            data.get(..len).unwrap_or_default(),
            "pg backend: not canonical"
        );
        if let postgres::BackendMessage::ErrorResponse(f) = msg {
            let _ = (f.severity(), f.code(), f.message(), f.iter().count());
        }
    }
}

/// [`mysql::parse_packet`]: prefix properties; a payload that parses as a
/// command, handshake or ERR re-encodes to itself; the other payload parsers
/// do not panic; [`mysql::CommandScanner`] does not depend on the split.
pub fn mysql_packet(data: &[u8]) {
    if let Some((packet, _)) = check_prefix_consistent!("mysql", data, mysql::parse_packet) {
        let payload = packet.payload;
        let mut out = Vec::new();
        if let Ok(cmd) = mysql::Command::parse(payload) {
            cmd.encode(&mut out);
            assert_eq!(out, payload, "mysql command: not canonical");
        }
        if let Ok(hs) = mysql::Handshake::parse(payload) {
            out.clear();
            hs.encode(&mut out)
                .unwrap_or_else(|e| panic!("mysql handshake: does not encode: {e}"));
            assert_eq!(out, payload, "mysql handshake: not canonical");
        }
        if let Ok(err) = mysql::ErrPacket::parse(payload) {
            out.clear();
            err.encode(&mut out);
            assert_eq!(out, payload, "mysql ERR: not canonical");
        }
        if let Ok(mysql::ClientHandshake::Response(r)) = mysql::ClientHandshake::parse(payload) {
            let _ = r.connect_attrs().count();
        }
        let _ = mysql::Response::parse(payload);
        let _ = mysql::AuthSwitchRequest::parse(payload);
    }
    let whole = mysql_scan(data, &[data.len()]);
    let split = mysql_scan(data, &[split_point(data), data.len()]);
    assert_eq!(whole, split, "mysql scanner: depends on the split");
}

/// [`mysql::schema_switch`]: never panics, and the start of a statement (as a scanner's cap
/// leaves it) gives the whole statement's answer or "undecided", never another answer.
pub fn mysql_schema(data: &[u8]) {
    let whole = mysql::schema_switch(data, true);
    let cut = data.get(..split_point(data)).unwrap_or_default();
    let part = mysql::schema_switch(cut, false);
    assert!(
        part == whole || part == Err(mysql::SchemaSwitchError::Undecided),
        "mysql schema switch: a prefix decided {part:?}, the whole {whole:?}"
    );
}

fn mysql_scan(data: &[u8], cuts: &[usize]) -> Vec<String> {
    let mut scanner = mysql::CommandScanner::new(64);
    let mut events = Vec::new();
    let mut at = 0;
    for &cut in cuts {
        let chunk = data.get(at..cut).unwrap_or_default();
        at = cut;
        let mut feed = scanner.feed(chunk);
        loop {
            match feed.next() {
                Ok(Some(e)) => events.push(format!("{e:?}")),
                Ok(None) => break,
                Err(e) => {
                    events.push(format!("error {e:?}"));
                    return events;
                }
            }
        }
        assert!(scanner.buffered() <= 64 + mysql::PACKET_HEADER_LEN);
    }
    events
}

/// [`sftp::SftpScanner`]: never panics, and the requests it reports do not depend on how the
/// stream is split; a request it parsed has an operation name or none, consistently.
pub fn sftp_client(data: &[u8]) {
    let whole = sftp_scan(data, &[data.len()]);
    let split = sftp_scan(data, &[split_point(data), data.len()]);
    assert_eq!(whole, split, "sftp scanner: depends on the split");
    if let Some(&kind) = data.first() {
        let _ = sftp::parse_request(kind, data.get(1..).unwrap_or_default()).map(|r| r.op());
    }
}

fn sftp_scan(data: &[u8], cuts: &[usize]) -> Vec<String> {
    let mut scanner = sftp::SftpScanner::new(64);
    let mut events = Vec::new();
    let mut at = 0;
    for &cut in cuts {
        let chunk = data.get(at..cut).unwrap_or_default();
        at = cut;
        let mut feed = scanner.feed(chunk);
        loop {
            match feed.next() {
                Ok(Some(e)) => events.push(format!("{e:?}")),
                Ok(None) => break,
                Err(e) => {
                    events.push(format!("error {e}"));
                    return events;
                }
            }
        }
    }
    events
}

/// [`tls_record::reprotect`] and [`tls_record::open_records`]: on raw bytes they never panic and
/// never report more than they were given; opening records built from `data` gives back their
/// application bytes; on records built from `data` (content type, padding and payload taken from its bytes,
/// sealed with [`tls_record::ChecksumOnly`]) it gives the same output whether the input arrives
/// whole or in two pieces, and the output opens to the application bytes that went in.
pub fn tls_record(data: &[u8]) {
    use crate::tls_record::{ChecksumOnly, HEADER_LEN, RecordProtection, open_records, reprotect};

    let mut raw = data.to_vec();
    if let Ok(r) = open_records(&mut raw, &mut ChecksumOnly::new(1, 0)) {
        assert!(
            r.produced == r.payload && r.produced <= r.consumed && r.consumed <= data.len(),
            "tls_record: opened {r:?}"
        );
    }
    let mut raw = data.to_vec();
    if let Ok(r) = reprotect(
        &mut raw,
        &mut ChecksumOnly::new(1, 0),
        &mut ChecksumOnly::new(2, 0),
    ) {
        assert!(
            r.produced <= r.consumed && r.consumed <= data.len(),
            "tls_record: {r:?}"
        );
    }

    // Records from the input: [type selector, padding, len, payload…]*.
    let mut wire = Vec::new();
    let mut sent = Vec::new();
    let mut seal_a = ChecksumOnly::new(1, 0);
    let mut rest = data;
    while let [sel, pad, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (payload, after) = tail.split_at(n);
        rest = after;
        let (content_type, body): (u8, &[u8]) = match sel % 8 {
            0 => (21, &[1, 0]),
            1 => (21, &[1, 90]),
            2 => (22, payload),
            _ => (23, payload),
        };
        let inner = body.len() + 1 + usize::from(*pad % 4);
        let hdr_len = inner + 16;
        let hdr = [23, 3, 3, (hdr_len >> 8) as u8, hdr_len as u8];
        let start = wire.len();
        wire.extend_from_slice(&hdr);
        wire.extend_from_slice(body);
        wire.push(content_type);
        wire.resize(start + HEADER_LEN + hdr_len, 0);
        if seal_a
            .seal(
                &hdr,
                wire.get_mut(start + HEADER_LEN..).unwrap_or_default(),
                inner,
            )
            .is_err()
        {
            return;
        }
        if content_type == 23 {
            sent.extend_from_slice(body);
        }
    }
    let mut plain = wire.clone();
    if let Ok(r) = open_records(&mut plain, &mut ChecksumOnly::new(1, 0))
        && !r.closed
    {
        assert_eq!(
            plain.get(..r.produced),
            Some(sent.as_slice()),
            "tls_record: opening lost or changed application data"
        );
    }
    let mut whole = wire.clone();
    let one = reprotect(
        &mut whole,
        &mut ChecksumOnly::new(1, 0),
        &mut ChecksumOnly::new(2, 0),
    );
    let split = split_point(&wire);
    let (mut open, mut seal) = (ChecksumOnly::new(1, 0), ChecksumOnly::new(2, 0));
    let mut first = wire.get(..split).unwrap_or_default().to_vec();
    let two = reprotect(&mut first, &mut open, &mut seal).and_then(|a| {
        let mut second = first.get(a.consumed..).unwrap_or_default().to_vec();
        second.extend_from_slice(wire.get(split..).unwrap_or_default());
        let mut out = first.get(..a.produced).unwrap_or_default().to_vec();
        if a.closed {
            return Ok((out, a.payload));
        }
        let b = reprotect(&mut second, &mut open, &mut seal)?;
        out.extend_from_slice(second.get(..b.produced).unwrap_or_default());
        Ok((out, a.payload + b.payload))
    });
    match (one, two) {
        (Ok(r), Ok((out, payload))) => {
            assert_eq!(
                whole.get(..r.produced),
                Some(out.as_slice()),
                "tls_record: split changed the output"
            );
            assert_eq!(
                r.payload, payload,
                "tls_record: split changed the payload count"
            );
            if !r.closed {
                assert_eq!(r.payload, sent.len(), "tls_record: payload lost");
            }
        }
        (Err(a), Err(b)) => assert_eq!(a, b, "tls_record: split changed the error"),
        (a, b) => panic!("tls_record: whole {a:?} but split {b:?}"),
    }
}

/// [`web_headers`]: a cookie's value is part of the header it came from, an origin is this
/// origin only when it is exactly `https://HOST`, the whole input as a URL query decodes to at
/// most its own bytes (or an error within it), and nothing panics. The input is split at its
/// first NUL into (header, second argument).
pub fn web_headers(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (header, other) = text
        .split_once('\0')
        .unwrap_or((text, "__Host-hop_session"));
    if let Some(v) = crate::web_headers::cookie(header, other) {
        assert!(header.contains(v), "web: cookie value not from its header");
        assert!(!v.contains(';'), "web: cookie value spans a separator");
    }
    if crate::web_headers::is_https_origin(header, other) {
        assert_eq!(header.len(), "https://".len() + other.len());
    }
    let _ = crate::web_headers::accepts_gzip(header);
    match crate::web_headers::query_pairs(text) {
        Ok(pairs) => {
            assert!(
                pairs.len() <= text.matches('&').count() + 1,
                "web: more pairs than `&`"
            );
            let decoded: usize = pairs.iter().map(|(n, v)| n.len() + v.len()).sum();
            assert!(
                decoded <= text.len(),
                "web: a query decodes to more than its bytes"
            );
        }
        Err(e) => assert!(e.offset <= text.len(), "web: query error past the end"),
    }
}

/// The web terminal's control frames: a parsed command encodes to the same text (the grammar
/// is canonical); any cut of the bytes through [`crate::web_terminal::Utf8Boundary`] gives the
/// input back, each chunk cut at a sequence boundary when the input is UTF-8.
pub fn web_terminal(data: &[u8]) {
    use crate::web_terminal::{Control, MfaAnswer, Utf8Boundary};
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(c) = Control::parse(text)
    {
        assert_eq!(
            c.encode(),
            text,
            "web terminal: control frame not canonical"
        );
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(answer) = MfaAnswer::parse(text)
    {
        let again = answer.encode();
        assert_eq!(
            MfaAnswer::parse(&again),
            Ok(answer),
            "web terminal: MFA answer does not round-trip"
        );
        if let MfaAnswer::Cancelled { reason } = answer {
            assert!(!reason.chars().any(char::is_control));
        }
    }
    let cut = data
        .first()
        .map_or(0, |b| usize::from(*b) % (data.len() + 1));
    let (a, b) = data.split_at(cut);
    let mut carry = Utf8Boundary::default();
    let (first, second) = (carry.push(a), carry.push(b));
    assert!(carry.held() <= 3, "web terminal: more than a sequence held");
    let rest = carry.flush();
    if std::str::from_utf8(data).is_ok() {
        assert!(
            std::str::from_utf8(&first).is_ok(),
            "web terminal: cut inside a sequence"
        );
        assert!(rest.is_empty(), "web terminal: valid text left held");
    }
    assert_eq!(
        [first, second, rest].concat(),
        data,
        "web terminal: bytes lost or added"
    );
}

/// Kubernetes stream decoders over WebSocket: no panic on any bytes, and the same chunks (or the
/// same error) whether the bytes come whole or cut in two. The first byte picks the direction and
/// the transport (exec channels, port-forward, tunnelled SPDY).
pub fn kube_ws(data: &[u8]) {
    use crate::kube::stream::WsChannelDecoder;
    let Some((&pick, data)) = data.split_first() else {
        return;
    };
    let from_client = pick & 1 == 1;
    let make = || match (pick >> 1) % 3 {
        0 => WsChannelDecoder::new(from_client),
        1 => WsChannelDecoder::port_forward(from_client, vec![8080, 80]),
        _ => WsChannelDecoder::spdy(from_client),
    };
    let whole = make().feed(data);
    let cut = usize::from(pick) % (data.len() + 1);
    let mut d = make();
    let split = d.feed(&data[..cut]).and_then(|mut first| {
        first.extend(d.feed(&data[cut..])?);
        Ok(first)
    });
    match (&whole, &split) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "kube ws: chunks depend on the cut"),
        (Err(a), Err(b)) => assert_eq!(a, b, "kube ws: error depends on the cut"),
        _ => panic!("kube ws: whole {whole:?} but cut {split:?}"),
    }
}

/// The SPDY/3.1 decoder: no panic on any bytes, and the same chunks (or error) whether the bytes
/// come whole or cut in two. The first byte picks the direction; the server's direction is told
/// of streams 1, 3 and 5 as the client's would have opened them.
pub fn kube_spdy(data: &[u8]) {
    use crate::kube::stream::{SpdyDecoder, StreamKind};
    let Some((&pick, data)) = data.split_first() else {
        return;
    };
    let make = || {
        let mut d = SpdyDecoder::new(pick & 1 == 1);
        if pick & 1 == 0 {
            d.note_opened(1, StreamKind::Error);
            d.note_opened(3, StreamKind::Stdout);
            d.note_opened(5, StreamKind::PortData(80));
        }
        d
    };
    let whole = make().feed(data);
    let cut = usize::from(pick) % (data.len() + 1);
    let mut d = make();
    let split = d.feed(&data[..cut]).and_then(|mut first| {
        first.extend(d.feed(&data[cut..])?);
        Ok(first)
    });
    match (&whole, &split) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "kube spdy: chunks depend on the cut"),
        (Err(a), Err(b)) => assert_eq!(a, b, "kube spdy: error depends on the cut"),
        _ => panic!("kube spdy: whole {whole:?} but cut {split:?}"),
    }
}
