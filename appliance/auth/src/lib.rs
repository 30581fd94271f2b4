//! The Auth service: CAs, users, roles, tokens, login, audit sink, recordings service, the
//! admission snapshot, and the gRPC API that exposes them.
//!
//! `server` holds the decisions, `grpc` maps them onto the wire, and the smaller modules own one
//! mechanism each (passwords, TOTP, rate limits, audit events, stored records, join tokens, the
//! names in host certificates, session trackers, the rules for agents' events, the inventory of
//! connected agents).
//!
//! It never imports the proxy, the data plane, agents or the client: the proxy reports connected
//! agents through [`inventory::Inventory`], and everyone speaks to Auth through `hop-api`.

#![forbid(unsafe_code)]

pub mod access_requests;
#[cfg(test)]
mod access_requests_tests;
pub mod admission;
#[cfg(test)]
mod admission_live_tests;
#[cfg(test)]
mod admission_outage_tests;
pub mod agent_events;
pub mod app_access;
pub mod apps;
pub mod audit;
pub mod bots;
#[cfg(test)]
mod bots_tests;
pub mod caller;
pub mod databases;
pub mod error;
pub mod grpc;
mod grpc_access_requests;
mod grpc_app;
mod grpc_bots;
mod grpc_db;
mod grpc_kube;
mod grpc_mfa;
mod grpc_rotation;
mod grpc_sso;
pub mod host_names;
pub mod inventory;
pub mod join_tokens;
pub mod kube_access;
pub mod listings;
pub mod openssh;
pub mod password;
pub mod ratelimit;
pub mod recording_access;
pub mod recordings;
pub mod records;
pub mod refusal_limit;
pub mod resources;
pub mod rotation;
#[cfg(test)]
mod rotation_tests;
pub mod routed_certs;
pub mod server;
#[cfg(test)]
mod server_tests;
#[cfg(test)]
mod spiffe_tests;
pub mod sso;
pub mod trackers;
#[cfg(test)]
mod webauthn_tests;

pub use error::AuthError;
pub use server::{AuthServer, AuthSettings};
