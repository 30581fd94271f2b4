//! The proxy's public listener: the one port, TLS termination, and the web and Auth API routes.
//!
//! Until the thread-per-core multiplexer lands, this is a tokio listener that terminates TLS with
//! rustls and serves HTTP/1.1 and HTTP/2 (the web API and the gRPC Auth API share it, routed by
//! path) behind connection limits and a handshake deadline. `tls` owns the certificate and the
//! rustls configuration; `listener` owns accepting and serving connections.

pub mod apps;
pub mod cert;
pub mod db_cancel;
pub mod dial;
pub mod forward;
pub mod join;
pub mod jump;
pub mod listener;
pub mod mysql;
pub mod postgres;
pub mod presence;
pub mod ssh;
pub mod ssh_host;
pub mod tls;
pub mod tunnels;
pub mod web;
