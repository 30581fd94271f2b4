//! Integration tests for `hop-protocols`: one module per parser, driven by
//! real captures in `protocols/testdata/` (see `testdata/README.md`).

// reason: a failed unwrap in a test helper fails the test, as it should; clippy's
// allow-unwrap-in-tests covers only #[test] functions and #[cfg(test)] modules, not helpers.
#![allow(clippy::unwrap_used)]

mod http1;
mod invariants;
mod kube_stream;
mod mysql;
mod postgres;
mod postgres_messages;
mod proxy_protocol;
mod sniff;
mod ssh;
mod support;
mod tls;
mod tls_record;
mod tunnel;
