//! Integration tests for hop-storage: one binary, one module per concern. Some tests re-execute
//! this binary to run a child test in another process (lock probes, crash injection); see
//! [`support::self_test_command`].

mod audit_crash;
mod audit_log;
mod audit_retention;
mod audit_search;
mod audit_tamper;
mod compat;
mod crash;
mod lock;
mod recording_format;
mod recording_store;
mod resources;
mod schema;
mod semantics;
mod support;
