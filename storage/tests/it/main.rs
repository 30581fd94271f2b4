//! Integration tests for hop-storage: one binary, one module per concern. Some tests re-execute
//! this binary to run a child test in another process (lock probes, crash injection); see
//! [`support::self_test_command`].

// reason: a failed unwrap in a test helper fails the test, as it should; clippy's
// allow-unwrap-in-tests covers only #[test] functions and #[cfg(test)] modules, not helpers.
#![allow(clippy::unwrap_used)]

mod audit_crash;
mod audit_log;
mod audit_pg;
mod audit_retention;
mod audit_search;
mod audit_tamper;
mod audit_upgrade;
mod clock;
mod compat;
mod crash;
mod lock;
mod moto;
mod pg;
mod postgres;
mod recording_format;
mod recording_s3;
mod recording_store;
mod resources;
mod schema;
mod semantics;
mod snapshot;
mod support;
