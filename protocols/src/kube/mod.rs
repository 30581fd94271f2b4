//! Kubernetes API traffic as Hop's proxy sees it.
//!
//! This module owns the sans-IO pieces of Kubernetes access: [`request`] turns an HTTP method and
//! request target into what the API server's authorizer would see (verb, API group, resource,
//! subresource, namespace, name), so the proxy can decide on it before the API server sees it.
//! The stream decoders for exec, attach and port-forward live beside it ([`stream`]).

pub mod request;
pub mod stream;
