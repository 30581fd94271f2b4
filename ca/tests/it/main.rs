//! Integration tests of hop-ca: issue/verify round trips, refusals, and interop with the real
//! OpenSSH and OpenSSL tools.

// reason: a failed unwrap in a test helper fails the test, as it should; clippy's
// allow-unwrap-in-tests covers only #[test] functions and #[cfg(test)] modules, not helpers.
#![allow(clippy::unwrap_used)]

mod interop;
mod ssh;
mod support;
mod x509;
