//! PostgreSQL frontend/backend messages and the frontend scanner, on real
//! psql and pgbench sessions against PostgreSQL 15 (`testdata/capture_db.sh`).

use hop_protocols::postgres::{
    Authentication, BackendMessage, EncryptionResponse, FrontendMessage, FrontendScanner,
    PgEncodeError, PgMessageError, ProtocolVersion, Scanned, Severity, StartupPacket, Target,
    TransactionStatus, encode_authentication_ok, encode_backend_key_data, encode_cancel_request,
    encode_error_response, encode_parameter_status, encode_ready_for_query, encode_ssl_request,
    encode_startup_message, parse_backend, parse_encryption_response, parse_frontend,
    parse_sasl_initial_response, parse_startup,
};
use hop_protocols::postgres::{CancelRequest, frontend::parse_frontend_with_limit};

use crate::support::*;

/// The capture after its StartupMessage.
fn after_startup(capture: &[u8]) -> &[u8] {
    let (StartupPacket::Startup(_), len) = parse_startup(capture).unwrap().unwrap() else {
        panic!("capture does not open with a StartupMessage")
    };
    &capture[len..]
}

/// Parse a whole stream message by message, checking every prefix of each
/// message, and that re-encoding gives back the stream.
fn frontend_stream(stream: &[u8]) -> Vec<FrontendMessage<'_>> {
    let mut out = Vec::new();
    let mut rest = stream;
    let mut reencoded = Vec::new();
    while !rest.is_empty() {
        let (msg, len) = assert_every_prefix!(rest, parse_frontend);
        msg.encode(&mut reencoded);
        // The message borrows from `rest`; re-parse for the 'stream lifetime.
        let (msg, _) = parse_frontend(rest).unwrap().unwrap();
        out.push(msg);
        rest = &rest[len..];
    }
    assert_eq!(reencoded, stream, "re-encoding differs");
    out
}

fn backend_stream(stream: &[u8]) -> Vec<BackendMessage<'_>> {
    let mut out = Vec::new();
    let mut rest = stream;
    let mut reencoded = Vec::new();
    while !rest.is_empty() {
        let (msg, len) = assert_every_prefix!(rest, parse_backend);
        msg.encode(&mut reencoded);
        let (msg, _) = parse_backend(rest).unwrap().unwrap();
        out.push(msg);
        rest = &rest[len..];
    }
    assert_eq!(reencoded, stream, "re-encoding differs");
    out
}

#[test]
fn simple_session_frontend() {
    let msgs = frontend_stream(after_startup(PG_SIMPLE_FE));
    let tags: String = msgs.iter().map(|m| char::from(m.tag())).collect();
    assert_eq!(tags, "ppQQQQdcX");
    let FrontendMessage::AuthResponse { body } = &msgs[0] else {
        panic!()
    };
    let first = parse_sasl_initial_response(body).unwrap();
    assert_eq!(first.mechanism, b"SCRAM-SHA-256");
    assert!(first.data.unwrap().starts_with(b"n,,n=,r="));
    let sql: Vec<_> = msgs.iter().filter_map(|m| m.sql()).collect();
    assert_eq!(sql[0], b"select 1 as one");
    assert_eq!(sql[1], b"select nope");
    assert_eq!(sql[3], b"COPY  t FROM STDIN ");
    assert_eq!(
        msgs[6],
        FrontendMessage::CopyData {
            data: b"1\tone\n2\t\\N\n"
        }
    );
}

#[test]
fn extended_session_frontend() {
    let msgs = frontend_stream(after_startup(PG_EXTENDED_FE));
    let tags: String = msgs.iter().map(|m| char::from(m.tag())).collect();
    assert_eq!(tags, "ppPSBDESPSBDESBDESBDESX");
    let FrontendMessage::Parse(p) = &msgs[2] else {
        panic!()
    };
    assert_eq!(p.statement, b"P_0");
    assert_eq!(p.query, b"select $1::int + 1 as y, $$hello$$ as s;");
    assert_eq!(p.param_type_count(), 0);
    let FrontendMessage::Bind(b) = &msgs[4] else {
        panic!()
    };
    assert_eq!((b.portal, b.statement), (&b""[..], &b"P_0"[..]));
    assert_eq!(b.params().collect::<Vec<_>>(), [Some(&b"7"[..])]);
    assert_eq!(b.param_formats().count(), 0);
    assert_eq!(b.result_formats().collect::<Vec<_>>(), [0]);
    assert_eq!(
        msgs[5],
        FrontendMessage::Describe {
            target: Target::Portal,
            name: b""
        }
    );
    assert_eq!(
        msgs[6],
        FrontendMessage::Execute {
            portal: b"",
            max_rows: 0
        }
    );
}

#[test]
fn simple_session_backend() {
    let msgs = backend_stream(PG_SIMPLE_BE);
    let Some(BackendMessage::Authentication(sasl)) = msgs.first() else {
        panic!()
    };
    assert_eq!(
        sasl.sasl_mechanisms().collect::<Vec<_>>(),
        [&b"SCRAM-SHA-256"[..]]
    );
    assert!(matches!(
        msgs[1],
        BackendMessage::Authentication(Authentication::SaslContinue { .. })
    ));
    assert!(matches!(
        msgs[2],
        BackendMessage::Authentication(Authentication::SaslFinal { .. })
    ));
    assert_eq!(msgs[3], BackendMessage::Authentication(Authentication::Ok));
    assert!(msgs.iter().any(|m| matches!(
        m,
        BackendMessage::ParameterStatus {
            name: b"application_name",
            value: b"psql"
        }
    )));
    assert!(msgs.iter().any(|m| matches!(
        m,
        BackendMessage::BackendKeyData { secret_key, .. } if secret_key.len() == 4
    )));
    assert!(msgs.contains(&BackendMessage::ReadyForQuery(TransactionStatus::Idle)));
    assert!(
        msgs.iter()
            .any(|m| matches!(m, BackendMessage::CommandComplete { tag: b"SELECT 1" }))
    );
    assert!(
        msgs.iter()
            .any(|m| matches!(m, BackendMessage::CommandComplete { tag: b"COPY 2" }))
    );
    let err = msgs
        .iter()
        .find_map(|m| match m {
            BackendMessage::ErrorResponse(f) => Some(*f),
            _ => None,
        })
        .unwrap();
    assert_eq!(err.severity(), Some(&b"ERROR"[..]));
    assert_eq!(err.code(), Some(&b"42703"[..]));
    assert_eq!(err.message(), Some(&b"column \"nope\" does not exist"[..]));
    let notice = msgs
        .iter()
        .find_map(|m| match m {
            BackendMessage::NoticeResponse(f) => Some(*f),
            _ => None,
        })
        .unwrap();
    assert_eq!(notice.message(), Some(&b"hi"[..]));
    // RowDescription, DataRow, CopyInResponse … are handed over raw.
    assert!(
        msgs.iter()
            .any(|m| matches!(m, BackendMessage::Other { tag: b'T', .. }))
    );
}

#[test]
fn extended_session_backend() {
    let msgs = backend_stream(PG_EXTENDED_BE);
    let tags: String = msgs.iter().map(|m| char::from(m.tag())).collect();
    assert!(tags.starts_with("RRRR"), "{tags}");
    assert!(tags.contains("1Z2TDCZ"), "{tags}");
}

/// Scan `stream` fed in `chunks`, recording events as text.
fn scan(scanner: &mut FrontendScanner, chunks: &[&[u8]]) -> Vec<String> {
    let mut events = Vec::new();
    for chunk in chunks {
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

#[test]
fn scanner_matches_parser_at_every_split() {
    for capture in [PG_SIMPLE_FE, PG_EXTENDED_FE] {
        let stream = after_startup(capture);
        let expected: Vec<String> = frontend_stream(stream)
            .into_iter()
            .map(|m| match m {
                FrontendMessage::CopyData { data } => format!(
                    "{:?}",
                    Scanned::CopyData {
                        len: 5 + data.len()
                    }
                ),
                m => format!("{:?}", Scanned::Message(m)),
            })
            .collect();
        for cap in [1 << 20, 16, 0] {
            let reference = scan(&mut FrontendScanner::new(1 << 30, cap), &[stream]);
            if cap == 1 << 20 {
                assert_eq!(reference, expected);
            }
            for at in 0..=stream.len() {
                let (a, b) = stream.split_at(at);
                let mut s = FrontendScanner::new(1 << 30, cap);
                assert_eq!(scan(&mut s, &[a, b]), reference, "cap {cap}, split at {at}");
                assert!(s.is_between_messages());
            }
            let bytes: Vec<&[u8]> = stream.chunks(1).collect();
            let mut s = FrontendScanner::new(1 << 30, cap);
            assert_eq!(scan(&mut s, &bytes), reference, "cap {cap}, 1-byte chunks");
        }
    }
}

#[test]
fn scanner_truncates_long_queries_and_skips_copy_data_unbuffered() {
    let cap = 1024;
    let mut stream = Vec::new();
    let query = format!("select '{}'", "x".repeat(100_000));
    FrontendMessage::Query {
        sql: query.as_bytes(),
    }
    .encode(&mut stream);
    let copy = vec![7u8; 5_000_000];
    FrontendMessage::CopyData { data: &copy }.encode(&mut stream);
    FrontendMessage::Sync.encode(&mut stream);
    for chunk_size in [1, 100, 4096, 65536, stream.len()] {
        let mut s = FrontendScanner::new(1 << 30, cap);
        let mut events = Vec::new();
        for chunk in stream.chunks(chunk_size) {
            let mut feed = s.feed(chunk);
            while let Some(e) = feed.next().unwrap() {
                match e {
                    Scanned::Truncated { tag, len, head } => {
                        assert_eq!((tag, len), (b'Q', 5 + query.len() + 1));
                        assert_eq!(head, &query.as_bytes()[..cap]);
                        events.push("Q");
                    }
                    Scanned::CopyData { len } => {
                        assert_eq!(len, 5 + copy.len());
                        events.push("d");
                    }
                    Scanned::Message(FrontendMessage::Sync) => events.push("S"),
                    other => panic!("{other:?}"),
                }
            }
            assert!(s.buffered() <= cap + 5, "buffered {}", s.buffered());
        }
        assert_eq!(events, ["Q", "d", "S"], "chunks of {chunk_size}");
    }
}

#[test]
fn scanner_errors_are_final() {
    let mut s = FrontendScanner::default();
    let mut stream = Vec::new();
    FrontendMessage::Flush.encode(&mut stream);
    stream.extend_from_slice(b"Z\0\0\0\x04");
    let mut feed = s.feed(&stream);
    assert_eq!(
        feed.next().unwrap(),
        Some(Scanned::Message(FrontendMessage::Flush))
    );
    assert_eq!(feed.next(), Err(PgMessageError::UnknownType { tag: b'Z' }));
    assert_eq!(
        s.feed(b"S\0\0\0\x04").next(),
        Err(PgMessageError::UnknownType { tag: b'Z' })
    );
    // A body that breaks its grammar is final too.
    let mut s = FrontendScanner::default();
    assert!(matches!(
        s.feed(b"S\0\0\0\x05x").next(),
        Err(PgMessageError::TrailingBytes {
            tag: b'S',
            extra: 1
        })
    ));
    // The length limit applies before any body arrives.
    let mut s = FrontendScanner::new(100, 10);
    assert_eq!(
        s.feed(b"Q\0\0\0\x65").next(),
        Err(PgMessageError::Oversized {
            tag: b'Q',
            len: 101,
            max: 100
        })
    );
}

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&u32::try_from(body.len() + 4).unwrap().to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn fe_err(bytes: &[u8]) -> PgMessageError {
    parse_frontend(bytes).unwrap_err()
}

#[test]
fn hand_built_messages_round_trip() {
    let mut bind = b"portal\0stmt\0".to_vec();
    bind.extend([0, 2, 0, 0, 0, 1]); // formats: text, binary
    bind.extend([0, 3]); // three params
    bind.extend([0, 0, 0, 2, b'h', b'i']);
    bind.extend([0xff, 0xff, 0xff, 0xff]); // NULL
    bind.extend([0, 0, 0, 0]); // empty
    bind.extend([0, 1, 0, 1]); // results: binary
    let mut call = 1234u32.to_be_bytes().to_vec();
    call.extend([0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0, 1]);
    let mut parse = b"s1\0select $1, $2\0".to_vec();
    parse.extend([0, 2, 0, 0, 0, 23, 0, 0, 0, 25]);
    let cases = [
        msg(b'B', &bind),
        msg(b'F', &call),
        msg(b'P', &parse),
        msg(b'C', b"Sname\0"),
        msg(b'D', b"Sname\0"),
        msg(b'H', b""),
        msg(b'f', b"no more\0"),
        msg(b'p', b"secret\0"),
        msg(b'E', b"p\0\0\0\0\x0a"),
    ];
    for bytes in &cases {
        let (m, len) = assert_every_prefix!(bytes, parse_frontend);
        assert_eq!(len, bytes.len());
        let mut out = Vec::new();
        m.encode(&mut out);
        assert_eq!(&out, bytes);
    }
    let (FrontendMessage::Bind(b), _) = parse_frontend(&cases[0]).unwrap().unwrap() else {
        panic!()
    };
    assert_eq!(b.param_formats().collect::<Vec<_>>(), [0, 1]);
    assert_eq!(
        b.params().collect::<Vec<_>>(),
        [Some(&b"hi"[..]), None, Some(&b""[..])]
    );
    assert_eq!(b.param_count(), 3);
    let (FrontendMessage::FunctionCall(c), _) = parse_frontend(&cases[1]).unwrap().unwrap() else {
        panic!()
    };
    assert_eq!((c.function_oid, c.result_format), (1234, 1));
    assert_eq!(c.args().collect::<Vec<_>>(), [None]);
    let (FrontendMessage::Parse(p), _) = parse_frontend(&cases[2]).unwrap().unwrap() else {
        panic!()
    };
    assert_eq!(p.param_types().collect::<Vec<_>>(), [23, 25]);
    let (FrontendMessage::Close { target, name }, _) = parse_frontend(&cases[3]).unwrap().unwrap()
    else {
        panic!()
    };
    assert_eq!((target, name), (Target::Statement, &b"name"[..]));
    let (FrontendMessage::AuthResponse { body }, _) = parse_frontend(&cases[7]).unwrap().unwrap()
    else {
        panic!()
    };
    assert_eq!(
        hop_protocols::postgres::parse_password(body).unwrap(),
        b"secret"
    );
}

#[test]
fn malformed_frontend_messages() {
    assert_eq!(fe_err(b"Z"), PgMessageError::UnknownType { tag: b'Z' });
    assert_eq!(fe_err(b"\0"), PgMessageError::UnknownType { tag: 0 });
    assert_eq!(
        fe_err(b"Q\0\0\0\x03"),
        PgMessageError::TooShort { tag: b'Q', len: 3 }
    );
    assert_eq!(
        fe_err(b"Q\x40\0\0\x01"),
        PgMessageError::Oversized {
            tag: b'Q',
            len: 0x4000_0001,
            max: 1 << 30
        }
    );
    assert_eq!(
        parse_frontend_with_limit(b"Q\0\0\0\x09", 8).unwrap_err(),
        PgMessageError::Oversized {
            tag: b'Q',
            len: 9,
            max: 8
        }
    );
    assert!(matches!(
        fe_err(&msg(b'Q', b"no nul")),
        PgMessageError::Truncated { tag: b'Q', .. }
    ));
    assert_eq!(
        fe_err(&msg(b'Q', b"a\0b")),
        PgMessageError::TrailingBytes {
            tag: b'Q',
            extra: 1
        }
    );
    assert_eq!(
        fe_err(&msg(b'X', b"x")),
        PgMessageError::TrailingBytes {
            tag: b'X',
            extra: 1
        }
    );
    assert!(matches!(
        fe_err(&msg(b'D', b"Xname\0")),
        PgMessageError::Invalid { tag: b'D', .. }
    ));
    // A parameter length of -2.
    assert!(matches!(
        fe_err(&msg(b'B', b"\0\0\0\0\0\x01\xff\xff\xff\xfe\0\0")),
        PgMessageError::Invalid { tag: b'B', .. }
    ));
    // A parameter longer than the message.
    assert!(matches!(
        fe_err(&msg(b'B', b"\0\0\0\0\0\x01\0\0\0\x09ab\0\0")),
        PgMessageError::Truncated { tag: b'B', .. }
    ));
    // A negative count.
    assert!(matches!(
        fe_err(&msg(b'P', b"\0q\0\xff\xff")),
        PgMessageError::Invalid { tag: b'P', .. }
    ));
    assert!(matches!(
        fe_err(&msg(b'P', b"\0q\0\0\x02\0\0\0\x17")),
        PgMessageError::Truncated { tag: b'P', .. }
    ));
    assert!(parse_sasl_initial_response(b"SCRAM\0\0\0\0\x05abc").is_err());
    assert_eq!(
        parse_sasl_initial_response(b"SCRAM\0\xff\xff\xff\xff")
            .unwrap()
            .data,
        None
    );
}

#[test]
fn malformed_backend_messages() {
    let be_err = |b: &[u8]| parse_backend(b).unwrap_err();
    assert_eq!(be_err(b"Q"), PgMessageError::UnknownType { tag: b'Q' });
    assert!(matches!(
        be_err(&msg(b'Z', b"X")),
        PgMessageError::Invalid { tag: b'Z', .. }
    ));
    assert!(matches!(
        be_err(&msg(b'K', b"\0\0\0\x01abc")),
        PgMessageError::Invalid { tag: b'K', .. }
    ));
    assert!(matches!(
        be_err(&msg(b'K', &[1; 4 + 257])),
        PgMessageError::Invalid { tag: b'K', .. }
    ));
    assert!(matches!(
        be_err(&msg(b'R', b"\0\0\0\x05ab")),
        PgMessageError::Invalid { tag: b'R', .. }
    ));
    assert!(matches!(
        be_err(&msg(b'R', b"\0\0\0\x0aSCRAM\0")),
        PgMessageError::Invalid { tag: b'R', .. }
    ));
    assert!(matches!(
        be_err(&msg(b'E', b"SERROR\0")),
        PgMessageError::Invalid { tag: b'E', .. }
    ));
    assert!(matches!(
        be_err(&msg(b'E', b"SERROR")),
        PgMessageError::Invalid { tag: b'E', .. }
    ));
    assert_eq!(
        be_err(&msg(b'R', b"\0\0\0\0\0")),
        PgMessageError::TrailingBytes {
            tag: b'R',
            extra: 1
        }
    );
    let md5 = msg(b'R', b"\0\0\0\x05salt");
    let (m, _) = parse_backend(&md5).unwrap().unwrap();
    assert_eq!(
        m,
        BackendMessage::Authentication(Authentication::Md5Password { salt: *b"salt" })
    );
}

#[test]
fn encoders() {
    let mut out = Vec::new();
    encode_error_response(
        Severity::Fatal,
        "28000",
        "access to database \"app\" denied",
        &mut out,
    )
    .unwrap();
    let (BackendMessage::ErrorResponse(f), len) = parse_backend(&out).unwrap().unwrap() else {
        panic!()
    };
    assert_eq!(len, out.len());
    assert_eq!(f.severity(), Some(&b"FATAL"[..]));
    assert_eq!(f.get(b'S'), Some(&b"FATAL"[..]));
    assert_eq!(f.code(), Some(&b"28000"[..]));
    assert_eq!(f.message(), Some(&b"access to database \"app\" denied"[..]));
    assert!(matches!(
        encode_error_response(Severity::Error, "2800", "x", &mut out),
        Err(PgEncodeError::InvalidSqlState { .. })
    ));
    assert!(matches!(
        encode_error_response(Severity::Error, "28000", "a\0b", &mut out),
        Err(PgEncodeError::InteriorNul { .. })
    ));

    let mut out = Vec::new();
    encode_authentication_ok(&mut out);
    assert_eq!(out, b"R\0\0\0\x08\0\0\0\0");
    out.clear();
    encode_ready_for_query(TransactionStatus::InTransaction, &mut out);
    assert_eq!(out, b"Z\0\0\0\x05T");
    out.clear();
    encode_backend_key_data(42, &[1, 2, 3, 4], &mut out).unwrap();
    assert_eq!(out, b"K\0\0\0\x0c\0\0\0\x2a\x01\x02\x03\x04");
    assert_eq!(
        encode_backend_key_data(42, &[1; 3], &mut out),
        Err(PgEncodeError::SecretKeyLength { len: 3 })
    );
    out.clear();
    encode_parameter_status("server_version", "15.0", &mut out).unwrap();
    assert_eq!(
        parse_backend(&out).unwrap().unwrap().0,
        BackendMessage::ParameterStatus {
            name: b"server_version",
            value: b"15.0"
        }
    );
    assert_eq!(
        encode_parameter_status("", "x", &mut out),
        Err(PgEncodeError::EmptyName)
    );

    let mut out = Vec::new();
    EncryptionResponse::Refused.encode(&mut out);
    EncryptionResponse::SslAccepted.encode(&mut out);
    assert_eq!(out, b"NS");
    assert_eq!(
        parse_encryption_response(b"S").unwrap(),
        Some((EncryptionResponse::SslAccepted, 1))
    );
    assert_eq!(parse_encryption_response(b"").unwrap(), None);
    assert!(parse_encryption_response(b"E").is_err());
}

#[test]
fn startup_encoders_match_captures() {
    let mut out = Vec::new();
    encode_startup_message(
        ProtocolVersion { major: 3, minor: 0 },
        &[
            ("user", "alice"),
            ("database", "app"),
            ("application_name", "psql"),
        ],
        &mut out,
    )
    .unwrap();
    assert_eq!(out, PG_STARTUP);
    let (StartupPacket::Startup(m), _) = parse_startup(PG_STARTUP).unwrap().unwrap() else {
        panic!()
    };
    out.clear();
    m.encode(&mut out);
    assert_eq!(out, PG_STARTUP);
    out.clear();
    encode_ssl_request(&mut out);
    assert_eq!(out, PG_SSL_REQUEST);
    assert_eq!(
        encode_startup_message(ProtocolVersion { major: 3, minor: 0 }, &[], &mut out),
        Err(PgEncodeError::MissingUser)
    );
    assert!(matches!(
        encode_startup_message(
            ProtocolVersion { major: 3, minor: 0 },
            &[("user", "a\0b")],
            &mut out
        ),
        Err(PgEncodeError::InteriorNul { .. })
    ));

    let cancel = CancelRequest {
        process_id: 7,
        secret_key: &[9; 32],
    };
    let mut out = Vec::new();
    encode_cancel_request(&cancel, &mut out).unwrap();
    assert_eq!(
        parse_startup(&out).unwrap().unwrap(),
        (StartupPacket::Cancel(cancel), 44)
    );
    assert_eq!(
        encode_cancel_request(
            &CancelRequest {
                process_id: 7,
                secret_key: &[1; 2]
            },
            &mut out
        ),
        Err(PgEncodeError::SecretKeyLength { len: 2 })
    );
}

#[test]
fn mutated_captures_keep_invariants() {
    let mut rng = Rng::new(5);
    for seed in [
        after_startup(PG_SIMPLE_FE),
        after_startup(PG_EXTENDED_FE),
        PG_SIMPLE_BE,
        PG_EXTENDED_BE,
    ] {
        for _ in 0..2000 {
            let m = rng.mutate(seed);
            hop_protocols::invariants::postgres_frontend(&m);
            hop_protocols::invariants::postgres_backend(&m);
        }
    }
}
