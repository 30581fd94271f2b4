//! Parser throughput on the real captures in `testdata/`.
//!
//! The classifier and the ClientHello parser are measured on every capture
//! (bytes/s and messages/s); the other parsers briefly, one message each.
//! The database scanners (PostgreSQL frontend, MySQL commands) are measured
//! on synthetic relay streams cut into 16 KiB chunks, in bytes/s and
//! messages/s.
//! Run: `cargo bench -p hop-protocols --bench parsers`.

// reason: a benchmark that cannot set up or run should stop at once, and its helpers are not
// #[test] functions that clippy's allow-unwrap-in-tests would cover.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hop_protocols::{http1, mysql, postgres, proxy_protocol, sniff, ssh, tls, tunnel};

const TLS_OPENSSL: &[u8] = include_bytes!("../testdata/tls_openssl_client_hello.bin");
const TLS_CURL: &[u8] = include_bytes!("../testdata/tls_curl_client_hello.bin");
const SSH: &[u8] = include_bytes!("../testdata/ssh_banner_kexinit.bin");
const PG_SSL: &[u8] = include_bytes!("../testdata/postgres_ssl_request.bin");
const PG_STARTUP: &[u8] = include_bytes!("../testdata/postgres_startup.bin");
const HTTP_GET: &[u8] = include_bytes!("../testdata/http_curl_get.bin");
const HTTP_WS: &[u8] = include_bytes!("../testdata/http_curl_websocket_upgrade.bin");
const PROXY_V1: &[u8] = include_bytes!("../testdata/proxy_v1_curl.bin");
const PROXY_V2: &[u8] = include_bytes!("../testdata/proxy_v2_haproxy.bin");
const TUNNEL: &[u8] = include_bytes!("../testdata/tunnel_frames.bin");

const CAPTURES: &[(&str, &[u8])] = &[
    ("tls_openssl", TLS_OPENSSL),
    ("tls_curl", TLS_CURL),
    ("ssh", SSH),
    ("pg_ssl", PG_SSL),
    ("pg_startup", PG_STARTUP),
    ("http_get", HTTP_GET),
    ("proxy_v1", PROXY_V1),
    ("proxy_v2", PROXY_V2),
];

/// Re-split a capture's handshake bytes into records of `size` bytes.
fn refragment(wire: &[u8], size: usize) -> Vec<u8> {
    let mut hs = Vec::new();
    let mut rest = wire;
    while rest.len() >= 5 {
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        hs.extend_from_slice(&rest[5..5 + len]);
        rest = &rest[5 + len..];
    }
    let mut out = Vec::new();
    for chunk in hs.chunks(size) {
        out.extend_from_slice(&[0x16, 3, 1]);
        out.extend_from_slice(&u16::try_from(chunk.len()).unwrap().to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

fn bench_sniff(c: &mut Criterion) {
    let mut g = c.benchmark_group("sniff");
    for (name, bytes) in CAPTURES {
        // The proxy peeks at most this much before it decides.
        let peek = &bytes[..bytes.len().min(sniff::MAX_SNIFF_LEN)];
        g.throughput(Throughput::Elements(1));
        g.bench_function(*name, |b| b.iter(|| sniff::sniff(black_box(peek))));
    }
    // All captures in a row: connections classified per second.
    g.throughput(Throughput::Elements(CAPTURES.len() as u64));
    g.bench_function("all_captures", |b| {
        b.iter(|| {
            for (_, bytes) in CAPTURES {
                black_box(sniff::sniff(black_box(bytes)));
            }
        })
    });
    g.finish();
}

fn bench_client_hello(c: &mut Criterion) {
    let one_byte_records = refragment(TLS_CURL, 1);
    let cases: [(&str, &[u8]); 4] = [
        ("openssl", TLS_OPENSSL),
        ("curl", TLS_CURL),
        ("curl_100_byte_records", &refragment(TLS_CURL, 100)),
        ("curl_1_byte_records", &one_byte_records),
    ];
    for (unit, throughput) in [
        ("bytes", Throughput::Bytes as fn(u64) -> Throughput),
        ("messages", |_| Throughput::Elements(1)),
    ] {
        let mut g = c.benchmark_group(format!("tls_client_hello/{unit}"));
        for (name, bytes) in cases {
            g.throughput(throughput(bytes.len() as u64));
            g.bench_function(name, |b| {
                b.iter(|| {
                    let (hello, _) = tls::parse_client_hello(black_box(bytes)).unwrap().unwrap();
                    black_box((hello.server_name().map(str::len), hello.offers_alpn(b"h2")));
                })
            });
        }
        g.finish();
    }
}

fn bench_others(c: &mut Criterion) {
    let mut g = c.benchmark_group("others");
    g.throughput(Throughput::Elements(1));
    g.bench_function("ssh_identification", |b| {
        b.iter(|| {
            ssh::parse_identification(black_box(SSH))
                .unwrap()
                .unwrap()
                .1
        })
    });
    g.bench_function("postgres_ssl_request", |b| {
        b.iter(|| {
            postgres::parse_startup(black_box(PG_SSL))
                .unwrap()
                .unwrap()
                .1
        })
    });
    g.bench_function("postgres_startup", |b| {
        b.iter(|| {
            let (p, _) = postgres::parse_startup(black_box(PG_STARTUP))
                .unwrap()
                .unwrap();
            match p {
                postgres::StartupPacket::Startup(m) => black_box(m.user().len()),
                _ => 0,
            }
        })
    });
    g.bench_function("http1_get", |b| {
        b.iter(|| {
            http1::parse_request(black_box(HTTP_GET))
                .unwrap()
                .unwrap()
                .1
        })
    });
    g.bench_function("http1_websocket_upgrade", |b| {
        b.iter(|| {
            let (req, _) = http1::parse_request(black_box(HTTP_WS)).unwrap().unwrap();
            black_box(req.upgrade().is_some())
        })
    });
    g.bench_function("proxy_v1", |b| {
        b.iter(|| {
            proxy_protocol::parse(black_box(PROXY_V1))
                .unwrap()
                .unwrap()
                .1
        })
    });
    g.bench_function("proxy_v2_crc32c", |b| {
        b.iter(|| {
            proxy_protocol::parse(black_box(PROXY_V2))
                .unwrap()
                .unwrap()
                .1
        })
    });
    g.bench_function("tunnel_decode_first_hello", |b| {
        b.iter(|| tunnel::Frame::decode(black_box(TUNNEL)).unwrap().unwrap().1)
    });
    let heartbeat = tunnel::Frame::Heartbeat { seq: 42 };
    let mut out = Vec::with_capacity(64);
    g.bench_function("tunnel_encode_heartbeat", |b| {
        b.iter(|| {
            out.clear();
            black_box(&heartbeat).encode(&mut out).unwrap();
            out.len()
        })
    });
    g.finish();
}

/// Relay buffers are read 16 KiB at a time.
const RELAY_CHUNK: usize = 16 * 1024;

/// `n` rounds of Query + Parse/Bind/Execute/Sync with `sql_len`-byte SQL;
/// returns the stream and its message count.
fn pg_stream(n: usize, sql_len: usize) -> (Vec<u8>, u64) {
    use postgres::FrontendMessage as M;
    let sql = format!("select {}", "x".repeat(sql_len.saturating_sub(7)));
    let mut stream = Vec::new();
    let mut parse = b"s1\0".to_vec();
    parse.extend_from_slice(sql.as_bytes());
    parse.extend_from_slice(&[0, 0, 1, 0, 0, 0, 23]);
    let bind = b"\0s1\0\0\0\0\x01\0\0\0\x0242\0\0".to_vec();
    let raw = |tag: u8, body: &[u8], out: &mut Vec<u8>| {
        out.push(tag);
        out.extend_from_slice(&u32::try_from(body.len() + 4).unwrap().to_be_bytes());
        out.extend_from_slice(body);
    };
    for _ in 0..n {
        M::Query {
            sql: sql.as_bytes(),
        }
        .encode(&mut stream);
        raw(b'P', &parse, &mut stream);
        raw(b'B', &bind, &mut stream);
        M::Execute {
            portal: b"",
            max_rows: 0,
        }
        .encode(&mut stream);
        M::Sync.encode(&mut stream);
    }
    (stream, 5 * n as u64)
}

fn mysql_stream(n: usize, sql_len: usize) -> (Vec<u8>, u64) {
    let sql = format!("select {}", "x".repeat(sql_len.saturating_sub(7)));
    let mut stream = Vec::new();
    let mut payload = Vec::new();
    for i in 0..n {
        for cmd in [
            mysql::Command::Query {
                sql: sql.as_bytes(),
            },
            mysql::Command::StmtPrepare {
                sql: sql.as_bytes(),
            },
            mysql::Command::StmtExecute {
                statement_id: i as u32,
                flags: 0,
                iteration_count: 1,
                params: b"\x00\x01\x08\x00\x2a\0\0\0\0\0\0\0",
            },
            mysql::Command::StmtClose {
                statement_id: i as u32,
            },
        ] {
            payload.clear();
            cmd.encode(&mut payload);
            mysql::encode_packet(0, &payload, &mut stream);
        }
    }
    (stream, 4 * n as u64)
}

fn bench_db_scanners(c: &mut Criterion) {
    let pg_small = pg_stream(2000, 40);
    let pg_large = pg_stream(50, 64 * 1024);
    let my_small = mysql_stream(2000, 40);
    let my_large = mysql_stream(50, 64 * 1024);
    for (unit, bytes_unit) in [("bytes", true), ("messages", false)] {
        let mut g = c.benchmark_group(format!("db_scanners/{unit}"));
        for (name, (stream, count), cap) in [
            ("pg_small_queries", &pg_small, postgres::DEFAULT_SCAN_CAP),
            ("pg_64k_queries", &pg_large, postgres::DEFAULT_SCAN_CAP),
            ("pg_64k_queries_cap_1k", &pg_large, 1024),
        ] {
            g.throughput(if bytes_unit {
                Throughput::Bytes(stream.len() as u64)
            } else {
                Throughput::Elements(*count)
            });
            g.bench_function(name, |b| {
                b.iter(|| {
                    let mut s =
                        postgres::FrontendScanner::new(postgres::DEFAULT_MAX_MESSAGE_LEN, cap);
                    let mut sql_bytes = 0usize;
                    for chunk in stream.chunks(RELAY_CHUNK) {
                        let mut feed = s.feed(black_box(chunk));
                        while let Some(e) = feed.next().unwrap() {
                            if let postgres::Scanned::Message(m) = e {
                                sql_bytes += m.sql().map_or(0, <[u8]>::len);
                            }
                        }
                    }
                    sql_bytes
                })
            });
        }
        for (name, (stream, count), cap) in [
            ("mysql_small_commands", &my_small, mysql::DEFAULT_SCAN_CAP),
            ("mysql_64k_commands", &my_large, mysql::DEFAULT_SCAN_CAP),
            ("mysql_64k_commands_cap_1k", &my_large, 1024),
        ] {
            g.throughput(if bytes_unit {
                Throughput::Bytes(stream.len() as u64)
            } else {
                Throughput::Elements(*count)
            });
            g.bench_function(name, |b| {
                b.iter(|| {
                    let mut s = mysql::CommandScanner::new(cap);
                    let mut sql_bytes = 0usize;
                    for chunk in stream.chunks(RELAY_CHUNK) {
                        let mut feed = s.feed(black_box(chunk));
                        while let Some(e) = feed.next().unwrap() {
                            if let mysql::ScannedPacket::Command(c) = e {
                                sql_bytes += c.sql().map_or(0, <[u8]>::len);
                            }
                        }
                    }
                    sql_bytes
                })
            });
        }
        g.finish();
    }
}

criterion_group!(
    benches,
    bench_sniff,
    bench_client_hello,
    bench_others,
    bench_db_scanners
);
criterion_main!(benches);
