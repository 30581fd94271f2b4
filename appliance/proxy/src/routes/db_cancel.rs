//! Routing PostgreSQL CancelRequests to the session they are for.
//!
//! A client cancels a query by opening a new connection with the process id and secret key the
//! server gave it at start-up. The proxy gives each session its own random id and key in place of
//! the database's, and keeps, while the session lives, which agent and which database key they
//! stand for. This module owns that table: registering a session (the returned guard removes it
//! when the session ends) and finding a session by id with a constant-time key comparison. The
//! database's own key never reaches the client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use subtle::ConstantTimeEq;

use hop_api::dial::db::DbDial;

/// Where a cancel goes: the agent, and the Dial (with the database's key) to send it.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    pub host_id: String,
    pub dial: DbDial,
}

#[derive(Debug)]
struct Entry {
    key: Vec<u8>,
    target: CancelTarget,
}

/// Live sessions' cancel keys.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    sessions: Mutex<HashMap<u32, Entry>>,
}

/// Removes a session's key when dropped.
#[derive(Debug)]
pub struct CancelGuard {
    registry: Arc<CancelRegistry>,
    process_id: u32,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Ok(mut m) = self.registry.sessions.lock() {
            m.remove(&self.process_id);
        }
    }
}

impl CancelRegistry {
    /// Registers a session whose database key is `key_len` bytes long; returns the process id and
    /// key to give the client instead, and the guard that keeps them valid.
    pub fn register(
        self: &Arc<Self>,
        target: CancelTarget,
        key_len: usize,
    ) -> (u32, Vec<u8>, CancelGuard) {
        let mut key = vec![0u8; key_len.clamp(4, 256)];
        rand::fill(&mut key[..]);
        let mut m = self
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Positive like a real backend's pid, and unique among live sessions.
        let process_id = loop {
            let id = rand::random::<u32>() & 0x7fff_ffff;
            if id != 0 && !m.contains_key(&id) {
                break id;
            }
        };
        m.insert(
            process_id,
            Entry {
                key: key.clone(),
                target,
            },
        );
        (
            process_id,
            key,
            CancelGuard {
                registry: self.clone(),
                process_id,
            },
        )
    }

    /// The session `process_id` names, if `key` is its key.
    pub fn find(&self, process_id: u32, key: &[u8]) -> Option<CancelTarget> {
        let m = self.sessions.lock().ok()?;
        let e = m.get(&process_id)?;
        (e.key.len() == key.len() && bool::from(e.key.as_slice().ct_eq(key)))
            .then(|| e.target.clone())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.sessions.lock().map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> CancelTarget {
        CancelTarget {
            host_id: "h".into(),
            dial: DbDial {
                service: "pg".into(),
                user: "alice".into(),
                db_user: "alice".into(),
                db_name: "postgres".into(),
                session_id: "00".into(),
                client_addr: "127.0.0.1:1".into(),
                cancel: None,
                mysql: None,
                db_names: None,
            },
        }
    }

    #[test]
    fn keys_are_found_only_with_the_right_secret_and_only_while_the_session_lives() {
        let r = Arc::new(CancelRegistry::default());
        let (pid, key, guard) = r.register(target(), 4);
        assert_eq!(key.len(), 4);
        assert!(pid > 0 && pid <= 0x7fff_ffff);
        assert!(r.find(pid, &key).is_some());
        let mut wrong = key.clone();
        wrong[0] ^= 1;
        assert!(r.find(pid, &wrong).is_none());
        assert!(r.find(pid, &key[..3]).is_none());
        assert!(r.find(pid.wrapping_add(1), &key).is_none());
        drop(guard);
        assert!(r.find(pid, &key).is_none());
        assert_eq!(r.len(), 0);
    }
}
