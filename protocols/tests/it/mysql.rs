//! MySQL packets, handshake, commands and the command scanner, on real
//! mariadb / mariadb-admin sessions against MariaDB 10.11
//! (`testdata/capture_db.sh`).

use hop_protocols::mysql::{
    AuthSwitchRequest, ClientHandshake, Command, CommandScanner, EofPacket, ErrPacket, Handshake,
    MysqlEncodeError, MysqlError, Packet, Response, ScannedPacket, SslRequest, capabilities::*,
    decode_lenenc_bytes, decode_lenenc_int, encode_err, encode_lenenc_bytes, encode_lenenc_int,
    encode_packet, parse_packet,
};

use crate::support::*;

/// Every packet of a capture, each checked on every prefix.
fn packets(stream: &[u8]) -> Vec<Packet<'_>> {
    let mut out = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let (_, len) = assert_every_prefix!(rest, parse_packet);
        let (p, _) = parse_packet(rest).unwrap().unwrap();
        out.push(p);
        rest = &rest[len..];
    }
    out
}

#[test]
fn session_client() {
    let ps = packets(MYSQL_SESSION_CLIENT);
    assert_eq!(ps[0].seq, 1);
    let ClientHandshake::Response(r) = ClientHandshake::parse(ps[0].payload).unwrap() else {
        panic!()
    };
    assert_eq!(r.username, b"alice");
    assert_eq!(r.auth_response.len(), 20);
    assert_eq!(r.database, Some(&b"app"[..]));
    assert_eq!(r.auth_plugin_name, Some(&b"mysql_native_password"[..]));
    assert!(r.capabilities & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0);
    let attrs: Vec<_> = r.connect_attrs().collect();
    assert!(attrs.contains(&(&b"_client_name"[..], &b"libmariadb"[..])));
    assert!(attrs.contains(&(&b"program_name"[..], &b"mysql"[..])));
    let cmds: Vec<Command<'_>> = ps[1..]
        .iter()
        .map(|p| {
            assert_eq!(p.seq, 0);
            let c = Command::parse(p.payload).unwrap();
            let mut out = Vec::new();
            c.encode(&mut out);
            assert_eq!(out, p.payload);
            c
        })
        .collect();
    assert_eq!(
        cmds,
        [
            Command::Query {
                sql: b"select 1 as one, 'x' as s"
            },
            Command::Query {
                sql: b"insert into t values (1, 'one')"
            },
            Command::Query {
                sql: b"select nope"
            },
            Command::Query {
                sql: b"SELECT DATABASE()"
            },
            Command::InitDb { schema: b"app" },
            Command::Query {
                sql: b"select count(*) from t"
            },
            Command::Quit,
        ]
    );
}

#[test]
fn session_server() {
    let ps = packets(MYSQL_SESSION_SERVER);
    assert_eq!(ps[0].seq, 0);
    let hs = Handshake::parse(ps[0].payload).unwrap();
    assert!(hs.server_version.ends_with(b"MariaDB-0+deb12u1"));
    assert!(hs.capabilities & CLIENT_PROTOCOL_41 != 0);
    assert!(hs.capabilities & CLIENT_SECURE_CONNECTION != 0);
    assert_eq!(hs.auth_plugin_data_len, 21);
    assert_eq!(hs.auth_plugin_data_2.len(), 13);
    assert_eq!(hs.auth_plugin_name, Some(&b"mysql_native_password"[..]));
    assert_ne!(hs.mariadb_capabilities(), 0);
    let mut out = Vec::new();
    hs.encode(&mut out).unwrap();
    assert_eq!(out, ps[0].payload);
    // Auth OK, then the first query's result set: 2 columns, EOF, row, EOF.
    let responses: Vec<_> = ps[1..].iter().map(|p| Response::parse(p.payload)).collect();
    assert!(matches!(responses[0], Ok(Response::Ok(ok)) if ok.affected_rows == 0));
    assert_eq!(
        responses[1],
        Ok(Response::ResultSet {
            column_count: 2,
            metadata_follows: Some(1)
        })
    );
    assert!(
        responses
            .iter()
            .any(|r| matches!(r, Ok(Response::Eof(EofPacket { .. }))))
    );
    assert!(
        responses
            .iter()
            .any(|r| matches!(r, Ok(Response::Ok(ok)) if ok.affected_rows == 1))
    );
    let err = responses
        .iter()
        .find_map(|r| match r {
            Ok(Response::Err(e)) => Some(*e),
            _ => None,
        })
        .unwrap();
    assert_eq!(err.code, 1054);
    assert_eq!(err.sql_state, Some(*b"42S22"));
    assert_eq!(err.message, b"Unknown column 'nope' in 'SELECT'");
}

#[test]
fn denied_and_ping() {
    let ps = packets(MYSQL_DENIED_SERVER);
    let err = ErrPacket::parse(ps[1].payload).unwrap();
    assert_eq!(
        (ps[1].seq, err.code, err.sql_state),
        (2, 1045, Some(*b"28000"))
    );
    assert!(err.message.starts_with(b"Access denied for user 'alice'"));
    let mut out = Vec::new();
    err.encode(&mut out);
    assert_eq!(out, ps[1].payload);
    packets(MYSQL_DENIED_CLIENT);

    let ps = packets(MYSQL_PING_CLIENT);
    let ClientHandshake::Response(r) = ClientHandshake::parse(ps[0].payload).unwrap() else {
        panic!()
    };
    assert_eq!(r.database, None);
    assert_eq!(Command::parse(ps[1].payload), Ok(Command::Ping));
    packets(MYSQL_PING_SERVER);
}

#[test]
fn encode_err_round_trips() {
    let mut out = Vec::new();
    encode_err(2, 1045, "28000", "Access denied by Hop policy", &mut out).unwrap();
    let (p, len) = assert_every_prefix!(&out, parse_packet);
    assert_eq!((p.seq, len), (2, out.len()));
    assert_eq!(
        ErrPacket::parse(p.payload).unwrap(),
        ErrPacket {
            code: 1045,
            sql_state: Some(*b"28000"),
            message: b"Access denied by Hop policy"
        }
    );
    assert!(matches!(
        encode_err(2, 1045, "2800", "x", &mut out),
        Err(MysqlEncodeError::InvalidSqlState { .. })
    ));
    // Pre-4.1 style (no '#').
    let e = ErrPacket::parse(b"\xff\x10\x04Too many connections").unwrap();
    assert_eq!((e.code, e.sql_state), (1040, None));
}

#[test]
fn ssl_request_and_auth_switch() {
    let ps = packets(MYSQL_SESSION_CLIENT);
    let mut ssl = ps[0].payload[..32].to_vec();
    assert!(matches!(
        ClientHandshake::parse(&ssl),
        Err(MysqlError::Invalid { .. })
    ));
    ssl[1] |= (CLIENT_SSL >> 8) as u8;
    let ClientHandshake::SslRequest(req) = ClientHandshake::parse(&ssl).unwrap() else {
        panic!()
    };
    assert!(req.capabilities & CLIENT_SSL != 0);
    let mut out = Vec::new();
    req.encode(&mut out);
    assert_eq!(out, ssl);
    let built = SslRequest {
        capabilities: CLIENT_PROTOCOL_41,
        max_packet_size: 1 << 24,
        charset: 45,
        filler: [0; 23],
    };
    out.clear();
    built.encode(&mut out);
    assert_eq!(out.len(), 32);

    let switch = b"\xfecaching_sha2_password\0scramble-20-bytes-xx\0";
    let a = AuthSwitchRequest::parse(switch).unwrap();
    assert_eq!(a.plugin_name, b"caching_sha2_password");
    out.clear();
    a.encode(&mut out).unwrap();
    assert_eq!(out, switch);
    assert!(AuthSwitchRequest::parse(b"\xfeno-nul").is_err());
}

#[test]
fn commands_round_trip() {
    let cases: [(&[u8], Command<'_>); 9] = [
        (b"\x16select ?", Command::StmtPrepare { sql: b"select ?" }),
        (
            b"\x17\x01\0\0\0\0\x01\0\0\0\x00\x01\x08\x00\x07\0\0\0\0\0\0\0",
            Command::StmtExecute {
                statement_id: 1,
                flags: 0,
                iteration_count: 1,
                params: b"\x00\x01\x08\x00\x07\0\0\0\0\0\0\0",
            },
        ),
        (
            b"\x17\x02\0\0\0\0\x01\0\0\0",
            Command::StmtExecute {
                statement_id: 2,
                flags: 0,
                iteration_count: 1,
                params: b"",
            },
        ),
        (b"\x19\x01\0\0\0", Command::StmtClose { statement_id: 1 }),
        (b"\x1a\x01\0\0\0", Command::StmtReset { statement_id: 1 }),
        (
            b"\x11bob\0\x14aaaaaaaaaaaaaaaaaaaaapp\0",
            Command::ChangeUser {
                user: b"bob",
                rest: b"\x14aaaaaaaaaaaaaaaaaaaaapp\0",
            },
        ),
        (
            b"\x04t\0%",
            Command::FieldList {
                table: b"t",
                wildcard: b"%",
            },
        ),
        (b"\x1f", Command::ResetConnection),
        (
            b"\x1b\x00\x00",
            Command::Other {
                code: 0x1b,
                body: b"\0\0",
            },
        ),
    ];
    for (bytes, want) in cases {
        assert_eq!(Command::parse(bytes), Ok(want));
        let mut out = Vec::new();
        want.encode(&mut out);
        assert_eq!(out, bytes);
    }
    assert!(matches!(
        Command::parse(b""),
        Err(MysqlError::Truncated { .. })
    ));
    assert!(matches!(
        Command::parse(b"\x19\x01\0\0"),
        Err(MysqlError::Truncated { .. })
    ));
    assert!(matches!(
        Command::parse(b"\x01x"),
        Err(MysqlError::TrailingBytes { extra: 1, .. })
    ));
    assert!(matches!(
        Command::parse(b"\x11no-nul"),
        Err(MysqlError::Truncated { .. })
    ));
}

#[test]
fn handshake_errors() {
    let ps = packets(MYSQL_SESSION_SERVER);
    let mut hs = ps[0].payload.to_vec();
    hs[0] = 9;
    assert_eq!(
        Handshake::parse(&hs),
        Err(MysqlError::UnsupportedProtocolVersion { version: 9 })
    );
    let good = ps[0].payload;
    for n in 0..good.len() {
        assert!(Handshake::parse(&good[..n]).is_err(), "prefix {n}");
    }
    let mut long = good.to_vec();
    long.push(0);
    assert!(matches!(
        Handshake::parse(&long),
        Err(MysqlError::TrailingBytes { .. })
    ));
}

#[test]
fn lenenc_and_framing() {
    for v in [
        0u64,
        250,
        251,
        0xffff,
        0x1_0000,
        0xff_ffff,
        0x100_0000,
        u64::MAX,
    ] {
        let mut out = Vec::new();
        encode_lenenc_int(v, &mut out);
        assert_eq!(decode_lenenc_int(&out), Ok((v, out.len())));
        assert!(decode_lenenc_int(&out[..out.len() - 1]).is_err());
    }
    assert!(matches!(
        decode_lenenc_int(b"\xfb"),
        Err(MysqlError::Invalid { .. })
    ));
    assert!(matches!(
        decode_lenenc_int(b"\xff"),
        Err(MysqlError::Invalid { .. })
    ));
    let mut out = Vec::new();
    encode_lenenc_bytes(b"hello", &mut out);
    assert_eq!(decode_lenenc_bytes(&out), Ok((&b"hello"[..], 6)));
    assert!(decode_lenenc_bytes(b"\x06hello").is_err());

    // A payload of exactly 0xFFFFFF bytes is followed by an empty packet.
    let big = vec![b'x'; 0xff_ffff];
    let mut out = Vec::new();
    assert_eq!(encode_packet(0, &big, &mut out), 2);
    let (p, len) = parse_packet(&out).unwrap().unwrap();
    assert!(p.is_continued());
    let (p2, len2) = parse_packet(&out[len..]).unwrap().unwrap();
    assert_eq!((p2.seq, p2.payload.len(), len + len2), (1, 0, out.len()));
}

fn scan(scanner: &mut CommandScanner, chunks: &[&[u8]]) -> Vec<String> {
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
    for capture in [MYSQL_SESSION_CLIENT, MYSQL_PING_CLIENT] {
        let expected: Vec<String> = packets(capture)
            .into_iter()
            .map(|p| match p.seq {
                0 => format!(
                    "{:?}",
                    ScannedPacket::Command(Command::parse(p.payload).unwrap())
                ),
                seq => format!(
                    "{:?}",
                    ScannedPacket::Packet {
                        seq,
                        payload: p.payload
                    }
                ),
            })
            .collect();
        for cap in [1 << 20, 8, 0] {
            let reference = scan(&mut CommandScanner::new(cap), &[capture]);
            if cap == 1 << 20 {
                assert_eq!(reference, expected);
            }
            for at in 0..=capture.len() {
                let (a, b) = capture.split_at(at);
                let mut s = CommandScanner::new(cap);
                assert_eq!(scan(&mut s, &[a, b]), reference, "cap {cap}, split {at}");
                assert!(s.is_between_packets());
            }
            let bytes: Vec<&[u8]> = capture.chunks(1).collect();
            assert_eq!(scan(&mut CommandScanner::new(cap), &bytes), reference);
        }
    }
}

#[test]
fn scanner_bounds_memory_on_huge_payloads() {
    let cap = 4096;
    let mut sql = b"select '".to_vec();
    sql.resize(0xff_ffff + 100, b'y');
    let mut payload = vec![0x03];
    payload.extend_from_slice(&sql);
    let mut stream = Vec::new();
    encode_packet(0, &payload, &mut stream);
    encode_packet(0, b"\x0e", &mut stream);
    for chunk_size in [1000, 65536, stream.len()] {
        let mut s = CommandScanner::new(cap);
        let mut events = Vec::new();
        for chunk in stream.chunks(chunk_size) {
            let mut feed = s.feed(chunk);
            while let Some(e) = feed.next().unwrap() {
                events.push(match e {
                    ScannedPacket::Truncated { seq, len, head } => {
                        assert_eq!((seq, len), (0, 0xff_ffff));
                        assert_eq!(head, &payload[..cap]);
                        "truncated"
                    }
                    ScannedPacket::Continuation { seq, len } => {
                        assert_eq!((seq, len), (1, payload.len() - 0xff_ffff));
                        "continuation"
                    }
                    ScannedPacket::Command(Command::Ping) => "ping",
                    other => panic!("{other:?}"),
                });
            }
            assert!(s.buffered() <= cap + 4);
        }
        assert_eq!(events, ["truncated", "continuation", "ping"]);
    }
}

#[test]
fn scanner_errors_are_final() {
    let mut s = CommandScanner::default();
    let mut stream = Vec::new();
    encode_packet(0, b"\x19\x01", &mut stream);
    assert!(matches!(
        s.feed(&stream).next(),
        Err(MysqlError::Truncated { .. })
    ));
    assert!(s.feed(b"\x01\0\0\0\x0e").next().is_err());
}

#[test]
fn mutated_captures_keep_invariants() {
    let mut rng = Rng::new(7);
    for seed in [
        MYSQL_SESSION_CLIENT,
        MYSQL_SESSION_SERVER,
        MYSQL_PING_CLIENT,
    ] {
        for _ in 0..2000 {
            hop_protocols::invariants::mysql_packet(&rng.mutate(seed));
        }
    }
}

#[test]
fn mutated_statements_keep_the_schema_guard_invariants() {
    let mut rng = Rng::new(11);
    for seed in [
        &b"USE other"[..],
        b"/*!50000 USE `o``ther` */;",
        b"/*M!100100 use other*/",
        b"PREPARE s FROM 'US' \"E other\"",
        b"EXECUTE IMMEDIATE 'EXECUTE IMMEDIATE ''USE x'''",
        b"-- c\n# d\n/* e */ SELECT 'USE x'",
    ] {
        for _ in 0..2000 {
            hop_protocols::invariants::mysql_schema(&rng.mutate(seed));
        }
    }
}
