//! What Hop's parts say to each other, and nothing else: the Auth API's protos and the gRPC
//! types generated from them, the Dial targets the proxy sends agents, the audit vocabulary, the
//! password rules and TOTP algorithm both client and Auth apply, and the few constants the parts
//! must agree on. Whoever speaks to Auth imports this crate, never Auth's internals.
//!
//! It must never hold a decision (that is Auth's or the admission crate's) or do I/O.

#![forbid(unsafe_code)]

pub mod audit;
pub mod audit_wire;
pub mod bot_proof;
pub mod dial;
pub mod ids;
pub mod jose;
pub mod password;
pub mod sso;
pub mod timestamps;
pub mod totp;

/// Code generated from `proto/hop/auth/v1/auth.proto` and `recordings.proto`.
pub mod proto {
    #![allow(clippy::all, missing_docs, unreachable_pub)]
    tonic::include_proto!("hop.auth.v1");
}

/// The SPIFFE Workload API (`proto/spiffe/workload.proto`; its package is empty by the spec).
pub mod spiffe_workload {
    #![allow(clippy::all, missing_docs, unreachable_pub)]
    tonic::include_proto!("_");
}

/// File name of the admin socket inside the data dir: `hop start` listens there, `hop admin`
/// on the same host dials it.
pub const ADMIN_SOCKET: &str = "auth.sock";

/// Session trackers: how often a session's host renews its tracker, and how long an active
/// tracker lives after its last write (Auth's side of the same contract).
pub mod trackers {
    use std::time::Duration;

    /// How long an active tracker lives after its last write.
    pub const TRACKER_LEASE: Duration = Duration::from_secs(30);
    /// How often a session's host renews its tracker.
    pub const TRACKER_KEEPALIVE: Duration = Duration::from_secs(10);
}
