//! The client side of `hop`: the user's commands and `hop admin`, and their command line.
//!
//! `cli` parses, `profile` keeps the user's keys on disk, `trust` keeps a login's saved CAs in
//! step with the cluster's while a CA rotates, `user` and `admin` and the rest are the
//! commands. Dialing the proxy and deciding whether to trust it are `hop-net`'s; what is said to
//! Auth is `hop-api`'s. This crate never imports Auth's internals, the proxy or agents.

#![forbid(unsafe_code)]

pub mod admin;
pub mod apps;
pub mod bench;
pub mod bot;
pub mod cli;
pub mod db;
pub mod join;
pub mod kube;
pub mod locks;
pub mod mfa;
pub mod profile;
pub mod recordings;
pub mod requests;
pub mod sessions;
pub mod ssh;
pub mod sso;
pub mod trust;
pub mod user;
