//! The ids Hop mints for sessions and audit events, and the id Auth keeps for an event an agent
//! sends. This module owns their shape: UUIDs of version 7, whose first 48 bits are the time
//! in milliseconds, so that ids minted one after another sort one after another. The audit
//! log indexes session ids and agent-supplied event ids in B-trees: time-ordered ids land at
//! the end of the tree, where a random id would rewrite a page anywhere in it (measured in
//! `docs/benchmarks.md`: about 19 KB of index written per event with random agent ids on an
//! aged log, against a few hundred bytes).
//!
//! It must never read the clock (callers pass the time) nor let one agent's ids meet
//! another's.

use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A new random id whose time part is `now`.
pub fn time_ordered(now: SystemTime) -> Uuid {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, since.as_secs(), since.subsec_nanos());
    Uuid::new_v7(ts)
}

/// A new session id (its text form is the one users see: `hop join ID`, `hop play ID`).
pub fn new_session_id(now: SystemTime) -> String {
    time_ordered(now).to_string()
}

/// The id Auth stores for the event with id `claimed` that agent `host_id` sent, timed at
/// `time_us`: a version-7 UUID with the event's time, its other bits taken from
/// SHA-256(host id, claimed id). The same event sent again (an agent's spool after a
/// reconnect) gets the same id, so the log stores it once; two agents can never claim each
/// other's ids; and however an agent picks its ids, they sort by the event's time.
pub fn agent_event_id(host_id: &str, claimed: &str, time_us: u64) -> String {
    let mut h = Sha256::new();
    h.update((host_id.len() as u64).to_le_bytes());
    h.update(host_id.as_bytes());
    h.update(claimed.as_bytes());
    let digest = h.finalize();
    let mut rest = [0u8; 10];
    rest.copy_from_slice(&digest[..10]);
    uuid::Builder::from_unix_timestamp_millis(time_us / 1000, &rest)
        .into_uuid()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn ids_minted_later_sort_later_and_never_repeat() {
        let a = time_ordered(at(1_700_000_000_000));
        let b = time_ordered(at(1_700_000_000_001));
        let c = time_ordered(at(1_700_000_000_001));
        assert!(a.to_string() < b.to_string());
        assert_ne!(b, c);
        assert_eq!(b.get_version_num(), 7);
        assert_eq!(new_session_id(at(5)).len(), 36);
    }

    #[test]
    fn an_agents_event_id_is_stable_per_agent_and_sorts_by_the_events_time() {
        let t = 1_700_000_000_123_456;
        let id = agent_event_id("host-a", "ev-1", t);
        assert_eq!(id, agent_event_id("host-a", "ev-1", t));
        assert_ne!(id, agent_event_id("host-b", "ev-1", t));
        assert_ne!(id, agent_event_id("host-a", "ev-2", t));
        // Host and claimed id are not simply concatenated: ("ab", "c") is not ("a", "bc").
        assert_ne!(agent_event_id("ab", "c", t), agent_event_id("a", "bc", t));
        let later = agent_event_id("host-a", "zzz", t + 1000);
        let earlier = agent_event_id("host-a", "000", t - 1000);
        assert!(earlier < id && id < later, "{earlier} {id} {later}");
        let parsed = Uuid::parse_str(&id).unwrap();
        assert_eq!(parsed.get_version_num(), 7);
        let (secs, _) = parsed.get_timestamp().unwrap().to_unix();
        assert_eq!(secs, t / 1_000_000);
    }
}
