//! Connection limits shared by the workers: a total, and a per-source-IP budget.
//!
//! Admission is two atomic operations, no lock: the total is one counter, and the per-IP budget
//! lives in a fixed table of counters indexed by a hash of the address (65,536 slots; two
//! addresses that share a slot share a budget, which errs on the side of refusing). A
//! [`ConnectionGuard`] gives both back when the connection ends, wherever that happens.
//! [`HandshakeSlots`] caps the TLS handshakes in progress on the workers and the control plane
//! together (`max_concurrent_handshakes`).

use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use super::route::RejectReason;

const SLOTS: usize = 1 << 16;

pub struct ConnectionLimits {
    max_total: usize,
    max_per_ip: u32,
    total: AtomicUsize,
    per_ip: Box<[AtomicU32]>,
    hasher: std::collections::hash_map::RandomState,
}

impl std::fmt::Debug for ConnectionLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionLimits")
            .field("total", &self.total.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl ConnectionLimits {
    pub fn new(max_total: usize, max_per_ip: u32) -> Self {
        Self {
            max_total,
            max_per_ip,
            total: AtomicUsize::new(0),
            per_ip: (0..SLOTS).map(|_| AtomicU32::new(0)).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    fn slot(&self, ip: IpAddr) -> usize {
        let mut h = self.hasher.build_hasher();
        ip.hash(&mut h);
        (std::hash::Hasher::finish(&h) as usize) & (SLOTS - 1)
    }

    /// Admits a connection from `ip`, or says which limit refused it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionGuard, RejectReason> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(RejectReason::OverConnectionLimit);
        }
        let slot = self.slot(ip);
        let Some(c) = self.per_ip.get(slot) else {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(RejectReason::OverPerIpLimit);
        };
        if c.fetch_add(1, Ordering::AcqRel) >= self.max_per_ip {
            c.fetch_sub(1, Ordering::AcqRel);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(RejectReason::OverPerIpLimit);
        }
        Ok(ConnectionGuard {
            limits: self.clone(),
            slot,
        })
    }

    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

/// Holds a connection's place in the limits until dropped.
#[derive(Debug)]
pub struct ConnectionGuard {
    limits: Arc<ConnectionLimits>,
    slot: usize,
}

impl ConnectionGuard {
    /// Counts the connection against `ip` instead of the address it was admitted for: the real
    /// client a trusted PROXY header names, so that a load balancer's connections are not all
    /// charged to the load balancer. Refused (and left as it was) when `ip` is over its budget.
    pub fn reassign(&mut self, ip: IpAddr) -> Result<(), RejectReason> {
        let slot = self.limits.slot(ip);
        if slot == self.slot {
            return Ok(());
        }
        let Some(c) = self.limits.per_ip.get(slot) else {
            return Err(RejectReason::OverPerIpLimit);
        };
        if c.fetch_add(1, Ordering::AcqRel) >= self.limits.max_per_ip {
            c.fetch_sub(1, Ordering::AcqRel);
            return Err(RejectReason::OverPerIpLimit);
        }
        if let Some(old) = self.limits.per_ip.get(self.slot) {
            old.fetch_sub(1, Ordering::AcqRel);
        }
        self.slot = slot;
        Ok(())
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if let Some(c) = self.limits.per_ip.get(self.slot) {
            c.fetch_sub(1, Ordering::AcqRel);
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
        let l = Arc::new(ConnectionLimits::new(3, 2));
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
        let l = Arc::new(ConnectionLimits::new(100, 2));
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
}
