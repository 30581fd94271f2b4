//! The proxy's routes: what happens to a connection on the one port once the data plane
//! (`crate::dataplane`) has classified it and, for TLS, terminated it on a worker.
//!
//! `tls` and `cert` own the proxy's certificate and rustls configuration; `server_tls` drives a
//! terminated TLS connection on the control plane; `listener` routes handed-over connections by
//! ALPN and client certificate (web UI and Auth API over HTTP/1.1 and HTTP/2, agents' tunnels,
//! TCP apps, SSH, databases, `hop join`); the other modules are those routes.

pub mod admission;
pub mod apps;
pub mod cert;
pub mod db_cancel;
pub mod dial;
pub mod forward;
pub mod http_conn;
pub mod identify;
pub mod join;
pub mod jump;
pub mod listener;
pub mod mysql;
pub mod postgres;
pub mod presence;
pub mod server_tls;
pub mod ssh;
pub mod ssh_host;
pub mod tls;
pub mod tunnels;
pub mod web;
