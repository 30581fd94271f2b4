//! Which proxies this agent holds control connections to, when several proxies serve the
//! cluster behind one address (a load balancer).
//!
//! The agent keeps `connection_count` control connections, each dialed through the same address:
//! one that lands on a proxy another already holds is closed before its hello (the proxy would
//! take it for a replacement of the first) and tried again later. Data connections are kept only
//! at proxies a control connection holds; one that lands elsewhere is dialed again. A proxy is
//! known by the host id of the certificate it presents (a host certificate of role proxy names
//! its proxy id); proxies that present another certificate (an operator's) cannot be told
//! apart, so only one control connection is kept among them.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use hop_ca::HostRole;
use tokio::sync::watch;

/// The key of proxies without a host certificate (never a proxy id: those are hex digits).
const UNKNOWN: &str = "?";

/// The proxies held now.
#[derive(Debug)]
pub(crate) struct Links {
    held: Arc<Mutex<HashSet<String>>>,
    /// How many control connections are up (those of unknown proxies included).
    up: watch::Sender<usize>,
}

impl Default for Links {
    fn default() -> Self {
        Self {
            held: Arc::default(),
            up: watch::Sender::new(0),
        }
    }
}

/// A proxy held by one control connection; given back when dropped.
#[derive(Debug)]
pub(crate) struct Claim {
    held: Arc<Mutex<HashSet<String>>>,
    proxy: Option<String>,
    up: watch::Sender<usize>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(p) = &self.proxy {
            self.held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(p);
        }
        self.up.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Claim {
    /// Whether this claim holds `proxy` (`None`: a proxy that cannot be told apart).
    pub(crate) fn is_for(&self, proxy: Option<&str>) -> bool {
        self.proxy.as_deref() == Some(proxy.unwrap_or(UNKNOWN))
    }
}

impl Links {
    /// Holds `proxy` (`None`: a proxy that cannot be told apart, all of which count as one)
    /// for one control connection; `None` when another control connection holds it already.
    pub(crate) fn claim(&self, proxy: Option<&str>) -> Option<Claim> {
        let key = proxy.unwrap_or(UNKNOWN).to_string();
        if !self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone())
        {
            return None;
        }
        self.up.send_modify(|n| *n += 1);
        Some(Claim {
            held: self.held.clone(),
            proxy: Some(key),
            up: self.up.clone(),
        })
    }

    /// Whether a control connection holds `proxy`.
    pub(crate) fn holds(&self, proxy: &str) -> bool {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(proxy)
    }

    /// Returns once `n` control connections (at least one) are up.
    pub(crate) async fn wait_for(&self, n: usize) {
        let mut rx = self.up.subscribe();
        let _ = rx.wait_for(|up| *up >= n.max(1)).await;
    }
}

/// The proxy id of the proxy a connection reached, from the host certificate it presented.
pub(crate) fn proxy_of<IO>(tls: &tokio_rustls::client::TlsStream<IO>) -> Option<String> {
    let leaf = tls.get_ref().1.peer_certificates()?.first()?;
    match hop_ca::host_claim_x509(leaf.as_ref()) {
        Ok(Some((id, HostRole::Proxy))) => Some(id),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_is_held_once_and_given_back_when_its_connection_ends() {
        let links = Links::default();
        let first = links.claim(Some("p1")).unwrap();
        assert!(first.is_for(Some("p1")) && !first.is_for(Some("p2")) && !first.is_for(None));
        assert!(links.claim(Some("p1")).is_none());
        let second = links.claim(Some("p2")).unwrap();
        assert!(links.holds("p1") && links.holds("p2"));
        assert_eq!(*links.up.borrow(), 2);
        drop(first);
        assert!(!links.holds("p1"));
        assert_eq!(*links.up.borrow(), 1);
        let again = links.claim(Some("p1"));
        assert!(again.is_some());
        drop((second, again));
        assert_eq!(*links.up.borrow(), 0);
    }

    #[test]
    fn proxies_that_cannot_be_told_apart_count_as_one() {
        let links = Links::default();
        let a = links.claim(None).unwrap();
        assert!(links.claim(None).is_none());
        let b = links.claim(Some("p1")).unwrap();
        assert_eq!(*links.up.borrow(), 2);
        drop((a, b));
        assert_eq!(*links.up.borrow(), 0);
    }
}
