//! The client side of `hop`: the user's commands and `hop admin`.
//!
//! `trust` decides whether a proxy is who it claims, `connect` dials the Auth API, `profile` keeps
//! the user's keys on disk, `user` and `admin` are the commands.

pub mod admin;
pub mod apps;
pub mod bench;
pub mod db;
pub mod join;
pub mod locks;
pub mod profile;
pub mod recordings;
pub mod sessions;
pub mod ssh;
pub mod user;
