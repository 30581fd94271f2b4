//! Sans-IO codecs for every protocol that Hop's proxy port speaks.
//!
//! This crate owns the byte-level grammar of the first messages a peer sends on
//! Hop's single multiplexed port: the first-bytes classifier ([`sniff`]), the TLS
//! ClientHello ([`tls`]), the SSH identification line ([`ssh`]), HTTP/1.x
//! request heads ([`http1`]), the HAProxy PROXY protocol ([`proxy_protocol`])
//! and Hop's own agent↔proxy control framing ([`tunnel`]), the headers the web UI decides on
//! ([`web_headers`]: cookie, origin, accepted encodings), the web terminal's WebSocket control
//! frames ([`web_terminal`]), what a Kubernetes API request is ([`kube`]); and, for the
//! database proxy and agent, the PostgreSQL ([`postgres`]: startup packets,
//! frontend and backend messages) and MySQL ([`mysql`]: packets, handshake,
//! commands, OK/ERR/EOF) session codecs, with bounded-memory scanners that
//! read client messages in place from relay buffers for audit. It must never
//! do IO, spawn, read a clock or
//! allocate on the happy path where that can be avoided: every parser takes the
//! bytes received so far and answers "need more", "not mine / malformed" (an
//! error that says what was wrong) or "here is the message and how many bytes
//! it spans". Parsers never index or `unwrap` on peer-controlled bytes; the
//! invariants they promise are checked by [`invariants`], which the fuzz targets
//! and the tests share.
//!
//! All error variants produced while parsing describe a fault of the *peer*
//! (the bytes it sent); the caller-side errors are the encoders' own
//! ([`tunnel::EncodeError`], [`postgres::PgEncodeError`],
//! [`mysql::MysqlEncodeError`]), raised when a message built locally breaks a
//! rule of the format (a limit, a NUL inside a C string, a bad SQLSTATE).
#![forbid(unsafe_code)]

pub mod http1;
pub mod invariants;
pub mod kube;
pub mod mysql;
pub mod postgres;
pub mod proxy_protocol;
pub mod sftp;
pub mod sniff;
pub mod ssh;
pub mod tls;
pub mod tls_record;
pub mod tunnel;
pub mod web_headers;
pub mod web_terminal;

mod reader;
mod scan;
