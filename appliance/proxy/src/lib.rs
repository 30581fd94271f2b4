//! The proxy: everything that happens to a connection on the one port.
//!
//! Rooms: [`dataplane`] accepts, classifies and terminates TLS on thread-per-core workers;
//! [`relay`] is the fast path that relays a session's bytes (decrypting and encrypting records in
//! place); [`tunnels`] holds the agents' reverse tunnels and their data pools, and [`presence`]
//! publishes them to the shared backend; [`listener`] routes connections the data plane hands
//! over, by ALPN and client certificate, to [`routes`] (web UI and Auth API over HTTP, TCP apps,
//! SSH, databases, `hop join`); [`admission`] asks Auth's snapshot whether a session may start
//! and keeps asking while it lives; [`tls`], [`cert`], [`identify`] and [`proxy_tls`] own the
//! proxy's certificate, its rustls configuration and who a client certificate names, and
//! [`app_certs`] the certificates of web applications where `*.P` cannot name them; [`rotation`]
//! decides what a CA rotation asks of the proxy's own certificates; [`tracker_writes`] runs the
//! proxy's own session-tracker writes a few at a time.
//!
//! The data plane and the relay never import routes or Auth; the proxy imports Auth (it serves
//! Auth's API on the one port and asks it for decisions), never the other way round.

#![forbid(unsafe_code)]

pub mod admission;
pub mod app_certs;
pub mod cert;
pub mod dataplane;
pub mod identify;
pub mod listener;
pub mod peering;
pub mod presence;
pub mod proxy_tls;
pub mod relay;
pub mod rotation;
pub mod routes;
#[cfg(test)]
mod test_auth;
pub mod tls;
pub mod tracker_writes;
pub mod tunnels;
pub mod web;
