//! Connection limits shared by the workers: a total, a per-source-IP budget, and a smaller budget
//! of connections per source that have not authenticated yet.
//!
//! Admission is a few atomic operations, no lock: the total is one counter, and each per-source
//! budget lives in a fixed table of counters indexed by a hash of the source (65,536 slots; two
//! sources that share a slot share a budget, which errs on the side of refusing). A
//! [`ConnectionGuard`] gives everything back when the connection ends, wherever that happens.
//!
//! The pre-authentication budget ([`PreAuthBudget`]) counts a connection from accept until it
//! authenticates: a verified TLS client certificate, SSH authentication at the jump host. It
//! counts an IPv6 source per /64 (one host usually holds a whole /64), and is the lower of
//! `max_preauth_connections_per_ip` and `max_preauth_connections_percent` of `max_connections`,
//! so that one address holding idle, unauthenticated connections cannot take the port from
//! everyone else. Once an agent has authenticated, its connection's per-IP count moves to its
//! host id ([`ConnectionGuard::count_as_host`]): thousands of agents behind one address (a NAT,
//! a load test) are each counted on their own.
//!
//! [`HandshakeSlots`] caps the TLS handshakes in progress on the workers and the control plane
//! together (`max_concurrent_handshakes`).

use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use arc_swap::ArcSwapOption;

use super::route::RejectReason;

const SLOTS: usize = 1 << 16;

/// A fixed table of counters indexed by a keyed hash: per-source budgets without a lock.
struct SlotTable {
    counts: Box<[AtomicU32]>,
    hasher: std::collections::hash_map::RandomState,
}

impl SlotTable {
    fn new() -> Self {
        Self {
            counts: (0..SLOTS).map(|_| AtomicU32::new(0)).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    fn slot<K: Hash>(&self, key: K) -> usize {
        (self.hasher.hash_one(key) as usize) & (SLOTS - 1)
    }

    /// Takes one place in `slot` unless it already holds `max`.
    fn try_take(&self, slot: usize, max: u32) -> bool {
        let Some(c) = self.counts.get(slot) else {
            return false;
        };
        if c.fetch_add(1, Ordering::AcqRel) >= max {
            c.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    fn give_back(&self, slot: usize) {
        if let Some(c) = self.counts.get(slot) {
            c.fetch_sub(1, Ordering::AcqRel);
        }
    }

    #[cfg(test)]
    fn held(&self, slot: usize) -> u32 {
        self.counts
            .get(slot)
            .map(|c| c.load(Ordering::Relaxed))
            .unwrap_or(0)
    }
}

/// What a per-source budget is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source<'a> {
    Ip(IpAddr),
    /// An IPv6 /64 (the address's upper 64 bits).
    Net64(u64),
    /// An authenticated agent, by host id.
    Host(&'a str),
}

/// The source a pre-authentication connection is counted against: an IPv4 address (IPv4-mapped
/// IPv6 included), or an IPv6 /64.
fn pre_auth_source(ip: IpAddr) -> Source<'static> {
    match ip {
        IpAddr::V4(v4) => Source::Ip(IpAddr::V4(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Source::Ip(IpAddr::V4(v4)),
            None => Source::Net64((u128::from(v6) >> 64) as u64),
        },
    }
}

/// Connections per source that have not authenticated yet.
pub struct PreAuthBudget {
    max_per_source: u32,
    table: SlotTable,
}

impl std::fmt::Debug for PreAuthBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreAuthBudget")
            .field("max_per_source", &self.max_per_source)
            .finish_non_exhaustive()
    }
}

impl PreAuthBudget {
    pub fn new(max_per_source: u32) -> Self {
        Self {
            max_per_source,
            table: SlotTable::new(),
        }
    }

    /// The budget of one source: the lower of `per_ip` and `percent` % of `max_connections`,
    /// at least 1.
    pub fn per_source_limit(per_ip: u32, percent: f64, max_connections: usize) -> u32 {
        let share = (max_connections as f64 * percent / 100.0).floor();
        let share = if share >= f64::from(u32::MAX) {
            u32::MAX
        } else if share >= 1.0 {
            share as u32
        } else {
            1
        };
        per_ip.min(share).max(1)
    }

    /// A place for a new connection from `ip`, or [`RejectReason::OverPreAuthLimit`].
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<PreAuthSlot, RejectReason> {
        let slot = self.table.slot(pre_auth_source(ip));
        if !self.table.try_take(slot, self.max_per_source) {
            return Err(RejectReason::OverPreAuthLimit);
        }
        Ok(PreAuthSlot {
            budget: self.clone(),
            slot,
        })
    }

    #[cfg(test)]
    fn held(&self, ip: IpAddr) -> u32 {
        self.table.held(self.table.slot(pre_auth_source(ip)))
    }
}

/// One unauthenticated connection's place in the [`PreAuthBudget`], given back when dropped.
#[derive(Debug)]
pub struct PreAuthSlot {
    budget: Arc<PreAuthBudget>,
    slot: usize,
}

impl PreAuthSlot {
    /// Counts against `ip` instead (a trusted PROXY header's client); left as it was when `ip`
    /// is over its budget.
    fn reassign(&mut self, ip: IpAddr) -> Result<(), RejectReason> {
        let slot = self.budget.table.slot(pre_auth_source(ip));
        if slot == self.slot {
            return Ok(());
        }
        if !self.budget.table.try_take(slot, self.budget.max_per_source) {
            return Err(RejectReason::OverPreAuthLimit);
        }
        self.budget.table.give_back(self.slot);
        self.slot = slot;
        Ok(())
    }
}

/// A connection's place in the pre-authentication budget while its requests authenticate one
/// by one (cookies): shared by the connection's requests, released by the first admitted one.
#[derive(Debug, Clone, Default)]
pub struct PreAuthHold(Arc<ArcSwapOption<PreAuthSlot>>);

impl PreAuthHold {
    /// A hold of `slot`.
    pub fn of(slot: PreAuthSlot) -> Self {
        Self(Arc::new(ArcSwapOption::from_pointee(slot)))
    }

    /// A request was admitted: the connection leaves the budget of unauthenticated ones.
    pub fn release(&self) {
        drop(self.0.swap(None));
    }
}

impl Drop for PreAuthSlot {
    fn drop(&mut self) {
        self.budget.table.give_back(self.slot);
    }
}

pub struct ConnectionLimits {
    max_total: usize,
    max_per_ip: u32,
    total: AtomicUsize,
    per_ip: SlotTable,
    pre_auth: Arc<PreAuthBudget>,
}

impl std::fmt::Debug for ConnectionLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionLimits")
            .field("total", &self.total.load(Ordering::Relaxed))
            .field("pre_auth", &self.pre_auth)
            .finish_non_exhaustive()
    }
}

impl ConnectionLimits {
    /// `max_pre_auth`: the pre-authentication budget of one source
    /// ([`PreAuthBudget::per_source_limit`]).
    pub fn new(max_total: usize, max_per_ip: u32, max_pre_auth: u32) -> Self {
        Self {
            max_total,
            max_per_ip,
            total: AtomicUsize::new(0),
            per_ip: SlotTable::new(),
            pre_auth: Arc::new(PreAuthBudget::new(max_pre_auth)),
        }
    }

    /// Admits a connection from `ip`, or says which limit refused it. The connection starts
    /// unauthenticated: it holds a place in the pre-authentication budget too.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionGuard, RejectReason> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(RejectReason::OverConnectionLimit);
        }
        // From here the guard gives back whatever it holds if a later budget refuses.
        let mut guard = ConnectionGuard {
            limits: self.clone(),
            slot: None,
            pre_auth: None,
        };
        let slot = self.per_ip.slot(Source::Ip(ip));
        if !self.per_ip.try_take(slot, self.max_per_ip) {
            return Err(RejectReason::OverPerIpLimit);
        }
        guard.slot = Some(slot);
        guard.pre_auth = Some(self.pre_auth.admit(ip)?);
        Ok(guard)
    }

    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

/// Holds a connection's place in the limits until dropped: the total, its source's (or, for an
/// authenticated agent, its host id's) count, and until it authenticates, its place in the
/// pre-authentication budget.
#[derive(Debug)]
pub struct ConnectionGuard {
    limits: Arc<ConnectionLimits>,
    /// `None` only while [`ConnectionLimits::admit`] is still deciding.
    slot: Option<usize>,
    pre_auth: Option<PreAuthSlot>,
}

impl ConnectionGuard {
    /// Counts the connection against `ip` instead of the address it was admitted for: the real
    /// client a trusted PROXY header names, so that a load balancer's connections are not all
    /// charged to the load balancer. Refused when `ip` is over a budget; the connection is then
    /// to be closed (what the guard holds stays consistent either way).
    pub fn reassign(&mut self, ip: IpAddr) -> Result<(), RejectReason> {
        self.move_slot(Source::Ip(ip), RejectReason::OverPerIpLimit)?;
        match &mut self.pre_auth {
            Some(p) => p.reassign(ip),
            None => Ok(()),
        }
    }

    /// The connection has authenticated: it leaves the pre-authentication budget.
    pub fn authenticated(&mut self) {
        self.pre_auth = None;
    }

    /// The connection's place in the pre-authentication budget, for a route that authenticates
    /// it later, request by request (a web or application session cookie): that route releases
    /// it once a request is admitted. Empty once authenticated.
    pub fn take_pre_auth(&mut self) -> PreAuthHold {
        self.pre_auth
            .take()
            .map(PreAuthHold::of)
            .unwrap_or_default()
    }

    /// Whether the connection still counts as unauthenticated.
    #[cfg(test)]
    pub fn is_pre_auth(&self) -> bool {
        self.pre_auth.is_some()
    }

    /// The connection authenticated as agent `host_id`: it leaves the pre-authentication budget,
    /// and counts against the host id's budget (`max_connections_per_ip`) instead of its
    /// address's. Refused when the host id is over that budget.
    pub fn count_as_host(&mut self, host_id: &str) -> Result<(), RejectReason> {
        self.authenticated();
        self.move_slot(Source::Host(host_id), RejectReason::OverPerHostLimit)
    }

    fn move_slot(&mut self, to: Source<'_>, refused: RejectReason) -> Result<(), RejectReason> {
        let table = &self.limits.per_ip;
        let slot = table.slot(to);
        if self.slot == Some(slot) {
            return Ok(());
        }
        if !table.try_take(slot, self.limits.max_per_ip) {
            return Err(refused);
        }
        if let Some(old) = self.slot.replace(slot) {
            table.give_back(old);
        }
        Ok(())
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            self.limits.per_ip.give_back(slot);
        }
        self.limits.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The TLS handshakes that may run at once, shared by every worker and the control plane.
#[derive(Debug)]
pub struct HandshakeSlots {
    max: usize,
    busy: AtomicUsize,
}

impl HandshakeSlots {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            busy: AtomicUsize::new(0),
        }
    }

    /// A slot, or `None` when all are taken (the connection is then shed at once).
    pub fn try_acquire(self: &Arc<Self>) -> Option<HandshakeSlot> {
        if self.busy.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.busy.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(HandshakeSlot(self.clone()))
    }

    /// Handshakes in progress.
    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::Relaxed)
    }
}

/// One handshake's slot, given back when dropped.
#[derive(Debug)]
pub struct HandshakeSlot(Arc<HandshakeSlots>);

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

impl hop_metrics::Report for HandshakeSlots {
    fn render(&self, out: &mut String) {
        hop_metrics::gauge(
            out,
            "hop_proxy_tls_handshakes_in_progress",
            "TLS handshakes running now, on the workers and the control plane (capped by max_concurrent_handshakes).",
            &[(String::new(), self.busy() as u64)],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_slots_are_capped_and_given_back() {
        let s = Arc::new(HandshakeSlots::new(2));
        let a = s.try_acquire().unwrap();
        let _b = s.try_acquire().unwrap();
        assert!(s.try_acquire().is_none());
        assert_eq!(s.busy(), 2);
        drop(a);
        assert!(s.try_acquire().is_some());
    }

    #[test]
    fn total_and_per_ip_limits_and_release() {
        let l = Arc::new(ConnectionLimits::new(3, 2, 10));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let g1 = l.admit(a).unwrap();
        let _g2 = l.admit(a).unwrap();
        assert_eq!(l.admit(a).unwrap_err(), RejectReason::OverPerIpLimit);
        let _g3 = l.admit(b).unwrap();
        assert_eq!(l.admit(b).unwrap_err(), RejectReason::OverConnectionLimit);
        assert_eq!(l.open(), 3);
        drop(g1);
        assert_eq!(l.open(), 2);
        assert!(l.admit(a).is_ok());
    }

    #[test]
    fn a_proxied_connection_counts_against_the_real_client() {
        let l = Arc::new(ConnectionLimits::new(100, 2, 100));
        let balancer: IpAddr = "192.0.2.10".parse().unwrap();
        let (c1, c2): (IpAddr, IpAddr) = (
            "198.51.100.1".parse().unwrap(),
            "198.51.100.2".parse().unwrap(),
        );
        // Many clients behind one balancer: each moves its count to its own address.
        let mut g1 = l.admit(balancer).unwrap();
        g1.reassign(c1).unwrap();
        let mut g2 = l.admit(balancer).unwrap();
        g2.reassign(c2).unwrap();
        let mut g3 = l.admit(balancer).unwrap();
        g3.reassign(c1).unwrap();
        let _g4 = l.admit(balancer).unwrap();
        // c1 is at its budget: a third connection of c1 is refused and keeps its old count.
        let mut g5 = l.admit(balancer).unwrap();
        assert_eq!(g5.reassign(c1).unwrap_err(), RejectReason::OverPerIpLimit);
        assert_eq!(l.admit(balancer).unwrap_err(), RejectReason::OverPerIpLimit);
        drop(g5);
        drop(g1);
        let mut g6 = l.admit(balancer).unwrap();
        g6.reassign(c1).unwrap();
        assert_eq!(l.open(), 4);
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn pre_auth_budget_is_the_lower_of_the_count_and_the_share() {
        // The defaults: 64 per address, 1 % of 100,000.
        assert_eq!(PreAuthBudget::per_source_limit(64, 1.0, 100_000), 64);
        // 1 % of 2,000 is 20.
        assert_eq!(PreAuthBudget::per_source_limit(64, 1.0, 2_000), 20);
        assert_eq!(PreAuthBudget::per_source_limit(64, 0.5, 10_000), 50);
        // Never zero: a tiny max_connections still lets one connection authenticate.
        assert_eq!(PreAuthBudget::per_source_limit(64, 1.0, 10), 1);
        assert_eq!(PreAuthBudget::per_source_limit(64, 100.0, usize::MAX), 64);
    }

    #[test]
    fn ipv6_sources_are_counted_per_64() {
        let b = Arc::new(PreAuthBudget::new(2));
        let _a = b.admit(ip("2001:db8:1:2::1")).unwrap();
        let _c = b.admit(ip("2001:db8:1:2:ffff::9")).unwrap();
        // A third address of the same /64 shares its budget…
        assert_eq!(
            b.admit(ip("2001:db8:1:2:abcd::1")).unwrap_err(),
            RejectReason::OverPreAuthLimit
        );
        // …another /64 has its own.
        assert!(b.admit(ip("2001:db8:1:3::1")).is_ok());
        // IPv4 addresses are counted one by one, mapped or not.
        let _v4 = b.admit(ip("192.0.2.1")).unwrap();
        let _mapped = b.admit(ip("::ffff:192.0.2.1")).unwrap();
        assert!(b.admit(ip("192.0.2.1")).is_err());
        assert!(b.admit(ip("192.0.2.2")).is_ok());
    }

    #[test]
    fn pre_auth_places_are_given_back_on_drop_and_on_authentication() {
        let l = Arc::new(ConnectionLimits::new(100, 100, 2));
        let a = ip("198.51.100.7");
        let g1 = l.admit(a).unwrap();
        let mut g2 = l.admit(a).unwrap();
        assert!(g2.is_pre_auth());
        assert_eq!(l.admit(a).unwrap_err(), RejectReason::OverPreAuthLimit);
        // A refused connection holds nothing.
        assert_eq!(l.open(), 2);
        assert_eq!(l.pre_auth.held(a), 2);
        // Authentication frees the place but keeps the connection.
        g2.authenticated();
        assert!(!g2.is_pre_auth());
        assert_eq!(l.pre_auth.held(a), 1);
        let g3 = l.admit(a).unwrap();
        assert!(l.admit(a).is_err());
        // Dropping frees it too.
        drop(g1);
        assert_eq!(l.pre_auth.held(a), 1);
        let _g4 = l.admit(a).unwrap();
        drop(g3);
        drop(g2);
        assert_eq!(l.open(), 1);
    }

    #[test]
    fn agents_are_counted_per_host_id_once_authenticated() {
        let l = Arc::new(ConnectionLimits::new(100, 2, 2));
        let nat = ip("203.0.113.1");
        let mut agents = Vec::new();
        for host in ["h1", "h2", "h3"] {
            let mut g = l.admit(nat).unwrap();
            g.count_as_host(host).unwrap();
            assert!(!g.is_pre_auth());
            agents.push(g);
        }
        // The address itself is free again; a host id has the per-IP budget of its own.
        let _other = l.admit(nat).unwrap();
        let mut again = l.admit(nat).unwrap();
        again.count_as_host("h1").unwrap();
        let mut third = l.admit(nat).unwrap();
        assert_eq!(
            third.count_as_host("h1").unwrap_err(),
            RejectReason::OverPerHostLimit
        );
    }

    #[test]
    fn a_proxied_connection_moves_its_pre_auth_place_to_the_real_client() {
        let l = Arc::new(ConnectionLimits::new(100, 100, 1));
        let balancer = ip("192.0.2.10");
        let client = ip("198.51.100.1");
        let mut g1 = l.admit(balancer).unwrap();
        g1.reassign(client).unwrap();
        // The balancer's place is free; the client's is taken.
        let mut g2 = l.admit(balancer).unwrap();
        assert_eq!(
            g2.reassign(client).unwrap_err(),
            RejectReason::OverPreAuthLimit
        );
        drop(g2);
        g1.authenticated();
        let mut g3 = l.admit(balancer).unwrap();
        g3.reassign(client).unwrap();
    }
}
