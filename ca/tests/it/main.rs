//! Integration tests of hop-ca: issue/verify round trips, refusals, and interop with the real
//! OpenSSH and OpenSSL tools.

mod interop;
mod ssh;
mod support;
mod x509;
