//! Integration tests for `hop-protocols`: one module per parser, driven by
//! real captures in `protocols/testdata/` (see `testdata/README.md`).

mod http1;
mod invariants;
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
