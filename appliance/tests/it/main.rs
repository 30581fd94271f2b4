//! End-to-end tests of the `hop` binary: real processes on loopback, real OpenSSH and OpenSSL.

// reason: a failed unwrap in a test helper fails the test, as it should; clippy's
// allow-unwrap-in-tests covers only #[test] functions and #[cfg(test)] modules, not helpers.
#![allow(clippy::unwrap_used)]

mod access_requests;
mod admin;
mod admission;
mod agent_kube;
mod app_route;
mod apps_http;
mod apps_http_browser;
mod apps_http_cli;
mod audit;
mod audit_pg;
mod audit_spool;
mod backup_restore;
mod bench_cmd;
mod bots;
mod ca_rotation;
mod clock;
mod db;
mod deadlines;
mod fail_closed;
mod ha;
mod harness;
mod join;
mod kube;
mod kube_kubectl;
mod kube_moderated;
mod kube_refusals;
mod login_flow;
mod mfa_apps;
mod mfa_cli;
mod mfa_kube;
mod mfa_rpc;
mod moderated;
mod moto;
mod multiplexer;
mod openssh_node;
mod pg_outage;
mod proxy_cert;
mod reconnect;
mod recordings;
mod spiffe;
mod ssh;
mod sso_oidc;
mod sso_saml;
mod tunnels;
mod web;
mod web_admin;
mod web_browser;
mod web_matrix;
mod web_recordings;
mod web_session_mfa;
mod web_terminal;
mod web_webauthn;
