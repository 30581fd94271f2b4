//! Kubernetes access through the proxy (kubectl at `kube.P`). Placeholder declaring kstream's
//! modules; kproxy's branch owns the real module (routing, admission, forwarding).

pub mod filter;
pub mod record;
pub mod stream;
