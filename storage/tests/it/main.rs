//! Integration tests for hop-storage: one binary, one module per concern. Some tests re-execute
//! this binary to run a child test in another process (lock probes, crash injection); see
//! [`support::self_test_command`].

mod compat;
mod crash;
mod lock;
mod resources;
mod schema;
mod semantics;
mod support;
