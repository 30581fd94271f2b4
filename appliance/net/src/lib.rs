//! The connections between Hop's parts, as the dialing side makes them: dialing the proxy's one
//! port with deadlines, deciding whether to trust the certificate it presents (`trust`), the
//! client certificates agents and users present, the files identities are kept in, and the
//! framing of the agent tunnel that proxy, agents and client share (`tunnel`), and what they
//! decide about the cluster's trust while a CA rotates (`rotation`). Also the
//! connection plumbing both sides of a session use: the deadline for an SSH client to
//! authenticate (`ssh_deadline`) and reading PostgreSQL start-up packets (`pg_wire`); and the
//! byte pump of relayed sessions, which holds no buffer while a session is idle (`copy`), and
//! TLS 1.3 connections carried on without rustls once their first messages are exchanged
//! (`records`: the traffic keys, the record AEAD, reading by record, relaying to a plain socket).
//!
//! It owns mechanisms only: it never decides who may do what, and never imports Auth, the proxy,
//! agents or the client.

#![forbid(unsafe_code)]

pub mod connect;
pub mod copy;
pub mod files;
pub mod pem;
pub mod pg_wire;
pub mod records;
pub mod rotation;
pub mod ssh_deadline;
pub mod trust;
pub mod tunnel;
