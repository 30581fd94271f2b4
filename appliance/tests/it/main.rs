//! End-to-end tests of the `hop` binary: real processes on loopback, real OpenSSH and OpenSSL.

mod admin;
mod admission;
mod audit;
mod audit_spool;
mod bench_cmd;
mod db;
mod deadlines;
mod fail_closed;
mod harness;
mod join;
mod login_flow;
mod multiplexer;
mod openssh_node;
mod proxy_cert;
mod reconnect;
mod recordings;
mod ssh;
mod tunnels;
