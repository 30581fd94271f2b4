//! Role checkers compiled once per snapshot: what [`crate::Snapshot::admit`] hands out.
//!
//! Compiling a user's roles (validating them, expanding trait templates, building label and
//! regex matchers) cost more than the rest of a decision, and every session of one user with
//! the same roles and traits compiles the same thing. A snapshot keeps what it compiled, keyed
//! by the role names (in the certificate's order) and the traits; the roles themselves are the
//! snapshot's, which never change, so an entry is right for the snapshot's whole life. A new
//! snapshot starts empty unless it holds exactly the roles of the one before
//! ([`crate::Snapshot::keep_checkers_of`]). A compilation that fails is not kept (it fails again each time). The
//! table holds at most [`MAX`] checkers and is emptied when full.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::Mutex;

use hop_rbac::AccessChecker;

/// Checkers kept at most per snapshot.
pub(crate) const MAX: usize = 1024;

type Traits = BTreeMap<String, Vec<String>>;

struct Compiled {
    roles: Vec<String>,
    traits: Traits,
    checker: AccessChecker,
}

/// The checkers one snapshot compiled, by a hash of their key (entries compare the whole key;
/// the hash is keyed per table, so traits cannot be chosen to pile entries into one bucket).
#[derive(Default)]
pub(crate) struct Checkers {
    hasher: RandomState,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    buckets: HashMap<u64, Vec<Compiled>>,
    len: usize,
}

impl std::fmt::Debug for Checkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkers")
            .field("kept", &self.len())
            .finish()
    }
}

impl Checkers {
    /// The checker for `roles` with `traits`: kept, or made by `compile` (and kept when it
    /// succeeds).
    pub(crate) fn get_or_compile<E>(
        &self,
        roles: &[String],
        traits: &Traits,
        compile: impl FnOnce() -> Result<AccessChecker, E>,
    ) -> Result<AccessChecker, E> {
        let key = self.hasher.hash_one((roles, traits));
        if let Some(found) = self.lock().buckets.get(&key).and_then(|bucket| {
            bucket
                .iter()
                .find(|c| c.roles == roles && &c.traits == traits)
                .map(|c| c.checker.clone())
        }) {
            return Ok(found);
        }
        // Compiled outside the lock: two sessions may compile the same set at once; both
        // results are equal and the second is kept.
        let checker = compile()?;
        let mut table = self.lock();
        if table.len >= MAX {
            *table = Table::default();
        }
        let bucket = table.buckets.entry(key).or_default();
        let before = bucket.len();
        bucket.retain(|c| !(c.roles == roles && &c.traits == traits));
        bucket.push(Compiled {
            roles: roles.to_vec(),
            traits: traits.clone(),
            checker: checker.clone(),
        });
        let added = bucket.len() - before;
        table.len += added;
        Ok(checker)
    }

    /// How many checkers are kept.
    pub(crate) fn len(&self) -> usize {
        self.lock().len
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn traits(login: &str) -> Traits {
        BTreeMap::from([("logins".to_string(), vec![login.to_string()])])
    }

    #[test]
    fn a_role_set_compiles_once_per_key_and_failures_are_not_kept() {
        let kept = Checkers::default();
        let compiled = Cell::new(0);
        let compile = || -> Result<AccessChecker, ()> {
            compiled.set(compiled.get() + 1);
            Ok(AccessChecker::default())
        };
        let access = vec!["access".to_string()];
        for _ in 0..3 {
            kept.get_or_compile(&access, &traits("alice"), compile)
                .unwrap();
        }
        assert_eq!((compiled.get(), kept.len()), (1, 1));
        // Other traits, other roles or the same roles in another order: other keys.
        kept.get_or_compile(&access, &traits("bob"), compile)
            .unwrap();
        let two = vec!["access".to_string(), "auditor".to_string()];
        let swapped = vec!["auditor".to_string(), "access".to_string()];
        kept.get_or_compile(&two, &traits("alice"), compile)
            .unwrap();
        kept.get_or_compile(&swapped, &traits("alice"), compile)
            .unwrap();
        assert_eq!((compiled.get(), kept.len()), (4, 4));
        // A compilation that fails is asked again next time, and never kept.
        let failed = Cell::new(0);
        for _ in 0..2 {
            let r = kept.get_or_compile(&access, &traits("eve"), || {
                failed.set(failed.get() + 1);
                Err::<AccessChecker, _>("bad regex")
            });
            assert_eq!(r.err(), Some("bad regex"));
        }
        assert_eq!((failed.get(), kept.len()), (2, 4));
    }

    #[test]
    fn a_full_table_is_emptied_before_it_grows_past_its_bound() {
        let kept = Checkers::default();
        let roles = vec!["access".to_string()];
        for i in 0..=MAX {
            kept.get_or_compile(&roles, &traits(&format!("u{i}")), || {
                Ok::<_, ()>(AccessChecker::default())
            })
            .unwrap();
            assert!(kept.len() <= MAX);
        }
        assert_eq!(kept.len(), 1);
    }
}
