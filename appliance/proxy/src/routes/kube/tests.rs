//! The kube route over real connections.
