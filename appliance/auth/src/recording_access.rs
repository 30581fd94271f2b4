//! Who may list and read which session recording: the RBAC rule `session` (`list`, `read`),
//! evaluated per recording when a role grants it only with a `where` clause (Teleport's `access`
//! preset: `contains(session.participants, user.metadata.name)`). One decision for `hop
//! recordings ls`, `hop play` and the web UI's recordings page and player.
//!
//! A recording's participants are its owner plus everyone its session tracker names (while the
//! tracker is kept). This module owns that context and the filter; it never reads recording
//! bytes and never admits the caller (admission has, before).

use hop_ca::Identity;
use hop_rbac::{AccessChecker, AccessDenied, RuleContext, SessionFacts, UserFacts};
use hop_storage::recording::RecordingIndexEntry;

use crate::AuthServer;

/// What a user may see of the recordings for one verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordingScope {
    /// Every recording (a rule without `where`, no deny rule in the way).
    All,
    /// Only those a `where` clause admits, decided one by one.
    Filtered,
}

/// The scope of `verb` (`list`, `read`) on recordings, or why the user may see none at all.
pub fn recording_scope(
    checker: &AccessChecker,
    verb: &str,
) -> Result<RecordingScope, AccessDenied> {
    match checker.check_rule("session", verb) {
        Ok(()) => Ok(RecordingScope::All),
        Err(_) if checker.allows_some("session", verb) => Ok(RecordingScope::Filtered),
        Err(e) => Err(e),
    }
}

/// May `identity` (whose roles `checker` holds) `verb` the recording `entry`, whose session had
/// `participants`?
pub fn may_access(
    checker: &AccessChecker,
    identity: &Identity,
    verb: &str,
    entry: &RecordingIndexEntry,
    participants: &[String],
) -> Result<(), AccessDenied> {
    let ctx = RuleContext {
        user: Some(UserFacts {
            name: &identity.username,
            roles: &identity.roles,
            traits: &identity.traits,
        }),
        session: Some(SessionFacts {
            participants,
            user: &entry.user,
            login: &entry.login,
        }),
        labels: None,
    };
    checker.check_rule_in("session", verb, &ctx)
}

impl AuthServer {
    /// Everyone who took part in `entry`'s session: its owner, then those its tracker names.
    pub fn recording_participants(&self, entry: &RecordingIndexEntry) -> Vec<String> {
        let mut out = vec![entry.user.clone()];
        if let Ok(Some(t)) = self.tracker(&entry.session_id) {
            for p in t.value.participants {
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
        out
    }

    /// The recordings of `entries` that `identity` may `verb` (after [`recording_scope`]).
    pub fn visible_recordings(
        &self,
        checker: &AccessChecker,
        identity: &Identity,
        verb: &str,
        entries: Vec<RecordingIndexEntry>,
    ) -> Result<Vec<RecordingIndexEntry>, AccessDenied> {
        if recording_scope(checker, verb)? == RecordingScope::All {
            return Ok(entries);
        }
        Ok(entries
            .into_iter()
            .filter(|e| {
                let participants = self.recording_participants(e);
                may_access(checker, identity, verb, e, &participants).is_ok()
            })
            .collect())
    }

    /// May `identity` `verb` the recording `entry`?
    pub fn check_recording(
        &self,
        checker: &AccessChecker,
        identity: &Identity,
        verb: &str,
        entry: &RecordingIndexEntry,
    ) -> Result<(), AccessDenied> {
        let participants = self.recording_participants(entry);
        may_access(checker, identity, verb, entry, &participants)
    }
}
