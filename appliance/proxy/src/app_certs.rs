//! Certificates for web applications at `NAME.P` when `*.P` cannot name them.
//!
//! A wildcard needs two labels after `*` (webpki, OpenSSL and browsers refuse `*.localhost`), so
//! when the proxy's public host `P` is a single label — the quick start's `localhost` — the
//! proxy's `*.P` names no application. This module owns that case ([`name_rule`] says when it
//! applies) for a certificate Hop issues: [`AppCertResolver`] answers a ClientHello whose SNI is
//! `NAME.P`, for an application announced now as an HTTP one, with a leaf certificate from the
//! host CA naming exactly `NAME.P`; every other SNI gets the proxy's own certificate.
//!
//! Leaves are kept in a bounded cache ([`CACHE_CAPACITY`] names, the least recently used
//! dropped first) that lives in the rustls configuration, so a renewal of the proxy's
//! certificate (which builds a new configuration) starts with none and issues them again as
//! they are asked for. Issuance is budgeted ([`ISSUE_BURST`], then [`ISSUE_PER_SECOND`]): only
//! announced names qualify, and past the budget a ClientHello gets the proxy's certificate, so a
//! stranger cycling through names cannot make the proxy sign in a loop. The resolver runs inside
//! the handshake, on the thread that terminates it; it signs there (a fresh P-256 key and one
//! signature, well under a millisecond), never while holding the cache's lock.
//!
//! The Kubernetes endpoint `kube.P` is one more such name ([`WithKube`]): kubectl checks the
//! proxy's certificate against `tls-server-name: kube.P`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The most application names whose certificates are kept.
pub const CACHE_CAPACITY: usize = 1024;
/// Certificates that may be issued at once, before the steady rate applies.
pub const ISSUE_BURST: u32 = 32;
/// Certificates issued per second once the burst is spent.
pub const ISSUE_PER_SECOND: u32 = 4;

/// How the proxy's certificate names the applications under `P`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// `P` has two labels or more: the proxy's certificate carries `*.P`.
    Wildcard,
    /// `P` is one label (`localhost`): each announced application gets its own certificate.
    PerApp,
    /// `P` is an IP address: no application has a name under it.
    NoNames,
}

/// The rule for public host `p` (lowercase, no port, no brackets).
pub fn name_rule(p: &str) -> NameRule {
    let p = p.trim_end_matches('.');
    if p.is_empty() || p.parse::<IpAddr>().is_ok() {
        NameRule::NoNames
    } else if p.contains('.') {
        NameRule::Wildcard
    } else {
        NameRule::PerApp
    }
}

/// The applications announced now.
pub trait AnnouncedApps: Send + Sync {
    /// `NAME` when `server_name` is `NAME.P` and `NAME` is announced now as an HTTP application.
    fn announced_http_app(&self, server_name: &str) -> Option<String>;
}

/// The names under `P` that get a certificate of their own: the announced web applications
/// (`apps`), and the kube endpoint `kube.P` (`kube_name`), which kubectl verifies with
/// `tls-server-name: kube.P` whether or not a kube agent is connected yet.
pub struct WithKube {
    pub apps: Arc<dyn AnnouncedApps>,
    /// `kube.P`.
    pub kube_name: String,
}

impl AnnouncedApps for WithKube {
    fn announced_http_app(&self, server_name: &str) -> Option<String> {
        if server_name.eq_ignore_ascii_case(&self.kube_name) {
            return Some(hop_auth::kube_access::KUBE_LABEL.to_string());
        }
        self.apps.announced_http_app(server_name)
    }
}

/// Why an application's certificate could not be made (the ClientHello then gets the proxy's).
#[derive(Debug, thiserror::Error)]
pub enum LeafError {
    #[error("cannot issue the certificate of {name}: {cause}")]
    Issue {
        name: String,
        cause: Box<hop_auth::AuthError>,
    },
    #[error("the certificate issued for {name} is unusable: {cause}")]
    Unusable {
        name: String,
        cause: Box<crate::tls::ProxyTlsError>,
    },
}

/// Issues a certificate naming exactly its argument (`NAME.P`).
pub type IssueLeaf = dyn Fn(&str) -> Result<CertifiedKey, LeafError> + Send + Sync;

/// The proxy's certificate, or an announced application's own.
pub struct AppCertResolver {
    proxy: Arc<CertifiedKey>,
    apps: Arc<dyn AnnouncedApps>,
    issue: Box<IssueLeaf>,
    leaves: Mutex<Leaves>,
}

struct Leaves {
    cache: LeafCache<Arc<CertifiedKey>>,
    budget: IssueBudget,
}

impl fmt::Debug for AppCertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppCertResolver").finish_non_exhaustive()
    }
}

impl AppCertResolver {
    /// Answers with `proxy` unless the name is an application in `apps`, whose certificate
    /// `issue` makes.
    pub fn new(
        proxy: Arc<CertifiedKey>,
        apps: Arc<dyn AnnouncedApps>,
        issue: Box<IssueLeaf>,
    ) -> Self {
        Self {
            proxy,
            apps,
            issue,
            leaves: Mutex::new(Leaves {
                cache: LeafCache::new(CACHE_CAPACITY),
                budget: IssueBudget::new(ISSUE_BURST, ISSUE_PER_SECOND),
            }),
        }
    }

    /// The certificate for a ClientHello naming `server_name`, at `now`.
    pub fn certificate_for(&self, server_name: Option<&str>, now: Instant) -> Arc<CertifiedKey> {
        let Some(sni) = server_name else {
            return self.proxy.clone();
        };
        if self.apps.announced_http_app(sni).is_none() {
            return self.proxy.clone();
        }
        let name = sni.to_ascii_lowercase();
        {
            let mut leaves = self.leaves.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(leaf) = leaves.cache.get(&name) {
                return leaf;
            }
            if !leaves.budget.take(now) {
                tracing::debug!(server_name = %name, "application certificate issuance over budget; serving the proxy's");
                return self.proxy.clone();
            }
        }
        match (self.issue)(&name) {
            Ok(leaf) => {
                tracing::info!(server_name = %name, "issued the certificate of a name under the public host (a web application or kube.P)");
                let leaf = Arc::new(leaf);
                let mut leaves = self.leaves.lock().unwrap_or_else(PoisonError::into_inner);
                leaves.cache.insert(name, leaf.clone());
                leaf
            }
            Err(e) => {
                tracing::warn!(error = %e, "serving the proxy's certificate instead");
                self.proxy.clone()
            }
        }
    }

    /// How many application certificates are kept.
    pub fn cached(&self) -> usize {
        self.leaves
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .cache
            .len()
    }
}

impl ResolvesServerCert for AppCertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.certificate_for(hello.server_name(), hop_platform::clock::now()))
    }
}

/// A map bounded to `capacity` entries that drops the least recently used first.
struct LeafCache<V> {
    capacity: usize,
    tick: u64,
    entries: HashMap<String, (V, u64)>,
    /// Entries by last use, oldest first.
    by_use: BTreeMap<u64, String>,
}

impl<V: Clone> LeafCache<V> {
    fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            tick: 0,
            entries: HashMap::new(),
            by_use: BTreeMap::new(),
        }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// The value for `name`, now the most recently used.
    fn get(&mut self, name: &str) -> Option<V> {
        let tick = self.next_tick();
        let (value, used) = self.entries.get_mut(name)?;
        self.by_use.remove(used);
        *used = tick;
        self.by_use.insert(tick, name.to_string());
        Some(value.clone())
    }

    /// Keeps `value` for `name`, dropping the least recently used entries past the capacity.
    fn insert(&mut self, name: String, value: V) {
        if let Some((_, used)) = self.entries.remove(&name) {
            self.by_use.remove(&used);
        }
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.by_use.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        let tick = self.next_tick();
        self.by_use.insert(tick, name.clone());
        self.entries.insert(name, (value, tick));
    }
}

/// A token bucket: `burst` tokens, refilled at `per_second`.
struct IssueBudget {
    burst: f64,
    per_second: f64,
    tokens: f64,
    updated: Option<Instant>,
}

impl IssueBudget {
    fn new(burst: u32, per_second: u32) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            per_second: f64::from(per_second.max(1)),
            tokens: f64::from(burst.max(1)),
            updated: None,
        }
    }

    /// Takes a token at `now`, if one is left.
    fn take(&mut self, now: Instant) -> bool {
        if let Some(then) = self.updated {
            let refill = now.saturating_duration_since(then).as_secs_f64() * self.per_second;
            self.tokens = (self.tokens + refill).min(self.burst);
        }
        self.updated = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[test]
    fn single_label_hosts_need_a_certificate_per_application() {
        assert_eq!(name_rule("localhost"), NameRule::PerApp);
        assert_eq!(name_rule("proxy"), NameRule::PerApp);
        assert_eq!(name_rule("localhost."), NameRule::PerApp);
        assert_eq!(name_rule("proxy.example"), NameRule::Wildcard);
        assert_eq!(name_rule("hop.corp.example"), NameRule::Wildcard);
        assert_eq!(name_rule("127.0.0.1"), NameRule::NoNames);
        assert_eq!(name_rule("::1"), NameRule::NoNames);
        assert_eq!(name_rule(""), NameRule::NoNames);
    }

    #[test]
    fn the_cache_keeps_at_most_its_capacity_and_drops_the_least_recently_used() {
        let mut c = LeafCache::new(3);
        for (i, n) in ["a", "b", "c"].into_iter().enumerate() {
            c.insert(n.to_string(), i);
        }
        // `a` used again: `b` is now the oldest.
        assert_eq!(c.get("a"), Some(0));
        c.insert("d".into(), 3);
        assert_eq!(c.len(), 3);
        assert_eq!(c.get("b"), None);
        assert_eq!(c.get("a"), Some(0));
        assert_eq!(c.get("c"), Some(2));
        assert_eq!(c.get("d"), Some(3));
        // Replacing a name keeps one entry for it.
        c.insert("d".into(), 4);
        assert_eq!(c.len(), 3);
        assert_eq!(c.get("d"), Some(4));
        let mut big = LeafCache::new(CACHE_CAPACITY);
        for i in 0..CACHE_CAPACITY * 3 {
            big.insert(format!("app{i}"), i);
        }
        assert_eq!(big.len(), CACHE_CAPACITY);
        assert_eq!(big.by_use.len(), CACHE_CAPACITY);
        assert_eq!(big.get("app0"), None);
        let last = CACHE_CAPACITY * 3 - 1;
        assert_eq!(big.get(&format!("app{last}")), Some(last));
    }

    #[test]
    fn the_budget_allows_a_burst_then_a_steady_rate() {
        let t0 = hop_platform::clock::now();
        let mut b = IssueBudget::new(3, 2);
        assert!((0..3).all(|_| b.take(t0)));
        assert!(!b.take(t0));
        assert!(!b.take(t0 + Duration::from_millis(400)));
        assert!(b.take(t0 + Duration::from_millis(600)));
        assert!(!b.take(t0 + Duration::from_millis(600)));
        // A long pause refills to the burst, no further.
        let later = t0 + Duration::from_secs(3600);
        assert!((0..3).all(|_| b.take(later)));
        assert!(!b.take(later));
    }

    struct Announced(Vec<&'static str>);

    impl AnnouncedApps for Announced {
        fn announced_http_app(&self, server_name: &str) -> Option<String> {
            let name = server_name.to_ascii_lowercase();
            let app = name.strip_suffix(".localhost")?;
            self.0.contains(&app).then(|| app.to_string())
        }
    }

    fn certified(name: &str) -> CertifiedKey {
        let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        let key = crate::tls::certified_key(&ck.cert.pem(), &ck.signing_key.serialize_pem());
        key.unwrap()
    }

    fn resolver(apps: Vec<&'static str>) -> (AppCertResolver, Arc<AtomicUsize>) {
        let issued = Arc::new(AtomicUsize::new(0));
        let count = issued.clone();
        let r = AppCertResolver::new(
            Arc::new(certified("localhost")),
            Arc::new(Announced(apps)),
            Box::new(move |name| {
                count.fetch_add(1, Ordering::Relaxed);
                Ok(certified(name))
            }),
        );
        (r, issued)
    }

    /// The first SAN-bearing certificate's DER, to tell certificates apart.
    fn der(k: &CertifiedKey) -> Vec<u8> {
        k.cert[0].as_ref().to_vec()
    }

    #[test]
    fn announced_applications_get_their_own_certificate_once_others_the_proxys() {
        let (r, issued) = resolver(vec!["grafana"]);
        let now = hop_platform::clock::now();
        let proxy = der(&r.certificate_for(Some("localhost"), now));
        assert_eq!(der(&r.certificate_for(None, now)), proxy);
        assert_eq!(
            der(&r.certificate_for(Some("kibana.localhost"), now)),
            proxy
        );
        assert_eq!(issued.load(Ordering::Relaxed), 0);
        let leaf = der(&r.certificate_for(Some("grafana.localhost"), now));
        assert_ne!(leaf, proxy);
        assert_eq!(
            der(&r.certificate_for(Some("Grafana.LOCALHOST"), now)),
            leaf,
            "names are compared without case and cached"
        );
        assert_eq!(issued.load(Ordering::Relaxed), 1);
        assert_eq!(r.cached(), 1);
    }

    #[test]
    fn issuance_past_the_budget_serves_the_proxys_certificate_until_it_refills() {
        let names: Vec<&'static str> = (0..ISSUE_BURST + 5)
            .map(|i| &*Box::leak(format!("app{i}").into_boxed_str()))
            .collect();
        let (r, issued) = resolver(names.clone());
        let now = hop_platform::clock::now();
        let proxy = der(&r.certificate_for(None, now));
        let served: Vec<bool> = names
            .iter()
            .map(|n| der(&r.certificate_for(Some(&format!("{n}.localhost")), now)) != proxy)
            .collect();
        let own = served.iter().filter(|s| **s).count();
        assert_eq!(own, ISSUE_BURST as usize);
        assert_eq!(issued.load(Ordering::Relaxed), ISSUE_BURST as usize);
        // Cached names still get theirs; an uncached one waits for the budget.
        assert_ne!(der(&r.certificate_for(Some("app0.localhost"), now)), proxy);
        let last = format!("{}.localhost", names.last().unwrap());
        assert_eq!(der(&r.certificate_for(Some(&last), now)), proxy);
        let later = now + Duration::from_secs(1);
        assert_ne!(der(&r.certificate_for(Some(&last), later)), proxy);
    }

    #[test]
    fn a_failed_issuance_serves_the_proxys_certificate() {
        let r = AppCertResolver::new(
            Arc::new(certified("localhost")),
            Arc::new(Announced(vec!["grafana"])),
            Box::new(|name| {
                Err(LeafError::Unusable {
                    name: name.to_string(),
                    cause: Box::new(crate::tls::ProxyTlsError::Pem(hop_net::pem::PemError::Key(
                        "test".into(),
                    ))),
                })
            }),
        );
        let now = hop_platform::clock::now();
        let proxy = der(&r.certificate_for(None, now));
        assert_eq!(
            der(&r.certificate_for(Some("grafana.localhost"), now)),
            proxy
        );
        assert_eq!(r.cached(), 0);
    }
}

#[cfg(test)]
mod kube_tests {
    use super::*;

    struct NoApps;

    impl AnnouncedApps for NoApps {
        fn announced_http_app(&self, _: &str) -> Option<String> {
            None
        }
    }

    #[test]
    fn the_kube_endpoint_gets_a_certificate_with_no_application_announced() {
        let names = WithKube {
            apps: Arc::new(NoApps),
            kube_name: "kube.localhost".into(),
        };
        assert_eq!(
            names.announced_http_app("KUBE.localhost").as_deref(),
            Some("kube")
        );
        assert_eq!(names.announced_http_app("kube.other"), None);
        assert_eq!(names.announced_http_app("grafana.localhost"), None);
    }
}
