//! One-time launch codes: the hand-over from the web UI (where the user is logged in) to the
//! application's host (where the browser has no session yet).
//!
//! A code is 32 random bytes shown once (in the URL the page navigates to); the table keeps its
//! SHA-256 with the grant, the SHA-256 of the browser's state and the code's expiry
//! ([`CODE_TTL`]). Redeeming removes the code whatever the outcome, so a code is used at most
//! once; the state and the application must match the ones it was issued for (the state is
//! compared in constant time). The table is bounded ([`MAX_PENDING`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{AppFlowError, AppGrant};

/// How long a launch code may wait for its exchange.
pub const CODE_TTL: Duration = Duration::from_secs(60);

/// The most codes pending at once (each a few hundred bytes).
pub const MAX_PENDING: usize = 10_000;

/// The most codes one user has pending: a new one beyond them replaces that user's oldest, so
/// that one user's launches cannot fill the table for everyone.
pub const MAX_PENDING_PER_USER: usize = 16;

struct Pending {
    grant: AppGrant,
    state: [u8; 32],
    expires: SystemTime,
}

/// The pending launch codes of this process.
#[derive(Default)]
pub struct LaunchCodes {
    table: Mutex<HashMap<[u8; 32], Pending>>,
}

impl std::fmt::Debug for LaunchCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaunchCodes").finish_non_exhaustive()
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

impl LaunchCodes {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Pending>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new code for `grant`, bound to the browser's `state`, valid for [`CODE_TTL`].
    pub fn issue(
        &self,
        grant: AppGrant,
        state: &str,
        now: SystemTime,
    ) -> Result<String, AppFlowError> {
        if state.is_empty() {
            return Err(AppFlowError::Mismatch);
        }
        let mut code = [0u8; 32];
        rand::fill(&mut code[..]);
        let code = hex::encode(code);
        let mut table = self.table();
        if let Some(oldest) = oldest_over_cap(&table, &grant.identity.username) {
            table.remove(&oldest);
        }
        if table.len() >= MAX_PENDING {
            table.retain(|_, p| p.expires > now);
            if table.len() >= MAX_PENDING {
                return Err(AppFlowError::Busy);
            }
        }
        table.insert(
            digest(&code),
            Pending {
                grant,
                state: digest(state),
                expires: now + CODE_TTL,
            },
        );
        Ok(code)
    }

    /// Redeems `code` for `app` from the browser holding `state`: the grant, once.
    pub fn redeem(
        &self,
        code: &str,
        app: &str,
        state: &str,
        now: SystemTime,
    ) -> Result<AppGrant, AppFlowError> {
        let pending = self
            .table()
            .remove(&digest(code))
            .ok_or(AppFlowError::UnknownCode)?;
        if now >= pending.expires {
            return Err(AppFlowError::UnknownCode);
        }
        let state_ok: bool = pending.state.ct_eq(&digest(state)).into();
        if !state_ok || pending.grant.app != app {
            return Err(AppFlowError::Mismatch);
        }
        Ok(pending.grant)
    }

    /// How many codes are pending (expired ones included until the table is pruned).
    pub fn len(&self) -> usize {
        self.table().len()
    }

    /// Whether no code is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The key of `user`'s oldest pending code when the user already has [`MAX_PENDING_PER_USER`].
fn oldest_over_cap(table: &HashMap<[u8; 32], Pending>, user: &str) -> Option<[u8; 32]> {
    let mut theirs = table
        .iter()
        .filter(|(_, p)| p.grant.identity.username == user)
        .map(|(k, p)| (p.expires, *k));
    let first = theirs.next()?;
    let (count, oldest) = theirs.fold((1, first), |(n, old), c| (n + 1, old.min(c)));
    (count >= MAX_PENDING_PER_USER).then_some(oldest.1)
}
