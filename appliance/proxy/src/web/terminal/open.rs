//! How many web terminals each user has open on this proxy, and the cap on them.
//!
//! Each terminal holds a WebSocket, a task, an SSH connection through the node's tunnel and a
//! shell on the node; without a cap, one cookie could open them until the per-address
//! connection limit (thousands) and load the node with shells. A user has at most
//! [`MAX_PER_USER`] terminals and joins open at once, as they have at most as many web sessions;
//! the next one is refused before the upgrade. A slot is held by a [`Slot`] and freed when the
//! terminal ends.
//!
//! It counts only; it decides no access.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// The most web terminals (shells and joins) one user has open on this proxy at once.
pub const MAX_PER_USER: usize = 32;

/// The open terminals per user.
#[derive(Default)]
pub struct OpenTerminals {
    by_user: Arc<Mutex<HashMap<String, usize>>>,
}

/// One open terminal's place in the count; freed when dropped.
pub struct Slot {
    by_user: Arc<Mutex<HashMap<String, usize>>>,
    user: String,
}

fn lock(m: &Mutex<HashMap<String, usize>>) -> MutexGuard<'_, HashMap<String, usize>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl OpenTerminals {
    /// A slot for one more terminal of `user`, or `None` when they have [`MAX_PER_USER`] open.
    pub fn take(&self, user: &str) -> Option<Slot> {
        let mut by_user = lock(&self.by_user);
        let open = by_user.entry(user.to_string()).or_insert(0);
        if *open >= MAX_PER_USER {
            return None;
        }
        *open += 1;
        Some(Slot {
            by_user: self.by_user.clone(),
            user: user.to_string(),
        })
    }

    /// How many terminals `user` has open.
    pub fn open(&self, user: &str) -> usize {
        lock(&self.by_user).get(user).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut by_user = lock(&self.by_user);
        if let Some(open) = by_user.get_mut(&self.user) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                by_user.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_has_at_most_max_per_user_terminals_and_an_ended_one_frees_its_slot() {
        let open = OpenTerminals::default();
        let mut slots: Vec<Slot> = (0..MAX_PER_USER)
            .map(|_| open.take("alice").expect("under the cap"))
            .collect();
        assert!(open.take("alice").is_none(), "one over the cap");
        assert_eq!(open.open("alice"), MAX_PER_USER);
        let bob = open.take("bob").expect("another user has their own count");
        drop(slots.pop());
        let again = open
            .take("alice")
            .expect("an ended terminal frees its slot");
        assert!(open.take("alice").is_none());
        drop((slots, again, bob));
        assert_eq!(open.open("alice"), 0);
        assert_eq!(open.open("bob"), 0);
        assert!(lock(&open.by_user).is_empty(), "no entry is left behind");
    }
}
