//! The proxy's routes: what a connection becomes once [`crate::listener`] knows what it is. Each
//! module owns one protocol's session start (identity, admission, audit) and hands the bytes to
//! the relay; none of them is imported by the data plane or the relay.
//!
//! [`http_conn`] serves the web UI and the Auth API (HTTP/1.1 and HTTP/2), [`web`] the web
//! routes, [`apps`] TCP applications, [`app_http`] web applications at `NAME.P`, [`kube`] Kubernetes at `kube.P`, [`ssh`],
//! [`jump`], [`forward`] and [`ssh_host`] SSH (node agents, `ssh -J`, agentless OpenSSH
//! nodes), [`postgres`], [`mysql`] and [`db_cancel`] databases, [`join`] `hop join`; [`dial`]
//! opens the agent leg they share.

pub mod app_http;
pub mod apps;
pub mod db_cancel;
pub mod dial;
pub mod forward;
pub mod http_conn;
pub mod join;
pub mod jump;
pub mod kube;
pub mod mysql;
pub mod postgres;
pub mod ssh;
pub mod ssh_host;
pub mod web;
