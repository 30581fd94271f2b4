//! What Auth believes of the audit events an agent sends (`EmitEvents` with JSON,
//! `EmitEventsPacked` with the compact form of `hop_api::audit_wire`; both arrive here and keep
//! the same rules, checked by the same code).
//!
//! This module owns the rules an agent's event must keep to be written: (a) its kind is one the
//! agent's role produces ([`kinds_of`]); (b) a session it names is one the agent hosts, by that
//! session's tracker (`auth::trackers`), and kinds that always belong to a session name one;
//! (c) its time is within [`MAX_SKEW`] of Auth's clock. A session's opening event
//! (`session.start`, `db.session.start`) for a session nobody tracks creates the tracker for its
//! sender: the agent could not reach Auth when the session started (its events waited in its
//! spool), and an agent can only ever claim sessions nobody else holds. An event that breaks a rule is refused
//! alone: the others of its batch are written, and the agent is told which were refused and why
//! (it drops them; resending cannot help). Refusals are counted by reason
//! (`hop_auth_agent_events_refused_total{reason}`) and logged.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hop_api::audit_wire::{BatchError, EventError};
use hop_ca::HostRole;

use super::audit::{AuditEvent, EventKind};
use super::error::AuthError;
use super::server::AuthServer;
use super::trackers::{SessionKind, TrackerError, TrackerHost, TrackerState, TrackerUpdate};

/// How far an event's time may be from Auth's clock, either way.
pub const MAX_SKEW: Duration = Duration::from_secs(5 * 60);

/// Whether events of a kind name a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionField {
    /// Always: the kind exists only within a session.
    Required,
    /// Except when it reports a failure that happened outside any session (a command refused
    /// before it started, a connection ended by a lock).
    UnlessFailed,
    /// It may name none (authentication, forwarding on the connection).
    Optional,
}

const NODE_KINDS: &[(EventKind, SessionField)] = &[
    (EventKind::SessionStart, SessionField::Required),
    (EventKind::SessionEnd, SessionField::UnlessFailed),
    (EventKind::Exec, SessionField::UnlessFailed),
    (EventKind::Sftp, SessionField::Required),
    (EventKind::SessionRecording, SessionField::Required),
    (EventKind::PortForward, SessionField::Optional),
    (EventKind::AgentForward, SessionField::Optional),
    (EventKind::SshAuth, SessionField::Optional),
];

const DB_KINDS: &[(EventKind, SessionField)] = &[
    (EventKind::DbSessionStart, SessionField::Required),
    (EventKind::DbSessionEnd, SessionField::Required),
    (EventKind::DbQuery, SessionField::Required),
];

/// The kinds an agent of `role` produces. App agents produce none (the proxy writes the events
/// of application sessions itself); other roles run no agent that sends events.
pub fn kinds_of(role: HostRole) -> &'static [(EventKind, SessionField)] {
    match role {
        HostRole::Node => NODE_KINDS,
        HostRole::Db => DB_KINDS,
        _ => &[],
    }
}

/// Why one event of an agent was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventRefusal {
    #[error("malformed event: {0}")]
    Malformed(String),
    #[error("a {role} agent does not produce {kind:?} events")]
    ForeignKind { role: HostRole, kind: String },
    #[error("{kind} events must name the session they belong to (session_id)")]
    MissingSession { kind: &'static str },
    #[error("session {session_id} is not one this agent hosts (no tracker of it names this host)")]
    ForeignSession { session_id: String },
    #[error(
        "the event's time is {skew_secs} s {direction} Auth's clock (at most {} s either way)",
        MAX_SKEW.as_secs()
    )]
    TimeSkew {
        skew_secs: u64,
        direction: &'static str,
    },
}

impl EventRefusal {
    /// The metric label and log field for the refusal.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::ForeignKind { .. } => "kind",
            Self::MissingSession { .. } | Self::ForeignSession { .. } => "session",
            Self::TimeSkew { .. } => "time",
        }
    }
}

/// One refused event of a batch: its position, its id when it had one, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedEvent {
    pub index: usize,
    pub id: String,
    pub refusal: EventRefusal,
}

/// Who sent a batch, as their certificate proves.
#[derive(Debug, Clone, Copy)]
pub struct EventSource<'a> {
    pub host_id: &'a str,
    pub role: HostRole,
}

/// Rebuilds one event of `source` from its JSON, if its kind is one the role produces.
pub fn parse(
    source: EventSource<'_>,
    json: &str,
    cluster: &str,
    now: SystemTime,
) -> Result<(AuditEvent, SessionField), EventRefusal> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| EventRefusal::Malformed(e.to_string()))?;
    let name = value
        .get("event")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    let field = session_field(source, name)?;
    let ev = AuditEvent::from_agent_json(json, cluster, source.host_id, now)
        .map_err(|e| EventRefusal::Malformed(e.to_string()))?;
    Ok((ev, field))
}

/// Rebuilds one event of `source` decoded from a packed batch, by the same rules as [`parse`]:
/// a malformed event is refused as such, an unknown kind as foreign.
pub fn parse_packed(
    source: EventSource<'_>,
    decoded: Result<AuditEvent, EventError>,
    cluster: &str,
) -> Result<(AuditEvent, SessionField), EventRefusal> {
    let ev = decoded.map_err(|e| match e {
        EventError::UnknownKind { name } => EventRefusal::ForeignKind {
            role: source.role,
            kind: name,
        },
        e => EventRefusal::Malformed(e.to_string()),
    })?;
    let field = session_field(source, ev.event)?;
    Ok((ev.claimed_by_agent(cluster, source.host_id), field))
}

/// Whether the kind `name` is one `source`'s role produces, and if so whether it names a session.
fn session_field(source: EventSource<'_>, name: &str) -> Result<SessionField, EventRefusal> {
    kinds_of(source.role)
        .iter()
        .find(|(k, _)| k.name() == name)
        .map(|(_, f)| *f)
        .ok_or_else(|| EventRefusal::ForeignKind {
            role: source.role,
            kind: name.chars().take(64).collect(),
        })
}

/// Checks an event's time against `now`.
pub fn check_time(ev: &AuditEvent, now: SystemTime) -> Result<(), EventRefusal> {
    let at = UNIX_EPOCH + Duration::from_micros(ev.time);
    let (skew, direction) = match at.duration_since(now) {
        Ok(ahead) => (ahead, "ahead of"),
        Err(e) => (e.duration(), "behind"),
    };
    if skew <= MAX_SKEW {
        Ok(())
    } else {
        Err(EventRefusal::TimeSkew {
            skew_secs: skew.as_secs(),
            direction,
        })
    }
}

/// Checks the session an event names (if any) against `host_of`, which answers the host id
/// of a session's tracker.
pub fn check_session(
    source: EventSource<'_>,
    ev: &AuditEvent,
    field: SessionField,
    host_of: &mut dyn FnMut(&str) -> Option<String>,
) -> Result<(), EventRefusal> {
    let Some(session_id) = session_of(ev) else {
        return match field {
            SessionField::Optional => Ok(()),
            SessionField::UnlessFailed if !ev.success => Ok(()),
            _ => Err(EventRefusal::MissingSession { kind: ev.event }),
        };
    };
    if host_of(session_id).as_deref() == Some(source.host_id) {
        Ok(())
    } else {
        Err(EventRefusal::ForeignSession {
            session_id: session_id.chars().take(64).collect(),
        })
    }
}

/// The id an event claims, for telling the agent which one was refused.
fn claimed_id(json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_owned))
        .map(|id| id.chars().take(64).collect())
        .unwrap_or_default()
}

/// The session an event names, if any.
fn session_of(ev: &AuditEvent) -> Option<&str> {
    ev.fields
        .get("session_id")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
}

/// The session an event opens, if it is a session's first event (`session.start`,
/// `db.session.start`) and names one.
fn opened_session(ev: &AuditEvent) -> Option<&str> {
    let opening =
        ev.event == EventKind::SessionStart.name() || ev.event == EventKind::DbSessionStart.name();
    session_of(ev).filter(|_| opening)
}

/// The tracker an opening event stands for, when its agent could not write one first (Auth
/// was away when the session started, and the event waited in the agent's spool).
fn adopted(source: EventSource<'_>, ev: &AuditEvent, session_id: &str) -> Option<TrackerUpdate> {
    let text = |k: &str| {
        ev.fields
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .chars()
            .take(256)
            .collect::<String>()
    };
    let kind = SessionKind::hosted_by(source.role)?;
    let (login, target) = match kind {
        SessionKind::Db => (text("db_user"), text("db_service")),
        _ => (text("login"), String::new()),
    };
    Some(TrackerUpdate {
        session_id: session_id.to_string(),
        kind,
        user: ev.user.chars().take(256).collect(),
        login,
        target,
        participants: Vec::new(),
        state: TrackerState::Active,
    })
}

impl AuthServer {
    /// Writes the events of `source` that keep the rules (durably, together) and returns the
    /// others. `Err` only when the audit log fails: then nothing is known to be written.
    pub fn accept_agent_events(
        &self,
        source: EventSource<'_>,
        events_json: &[String],
    ) -> Result<Vec<RefusedEvent>, AuthError> {
        let now = self.now();
        let cluster = self.cluster_name().to_string();
        let events = events_json
            .iter()
            .map(|json| parse(source, json, &cluster, now));
        self.accept_parsed(source, now, events, |i| {
            events_json
                .get(i)
                .map(|j| claimed_id(j))
                .unwrap_or_default()
        })
    }

    /// [`Self::accept_agent_events`] for a packed batch (`hop_api::audit_wire`). The outer
    /// `Err` refuses the whole batch: its framing is broken.
    pub fn accept_packed_agent_events(
        &self,
        source: EventSource<'_>,
        batch: &[u8],
    ) -> Result<Result<Vec<RefusedEvent>, BatchError>, AuthError> {
        let now = self.now();
        let cluster = self.cluster_name().to_string();
        let decoded = match hop_api::audit_wire::decode_batch(batch, now) {
            Ok(d) => d,
            Err(e) => return Ok(Err(e)),
        };
        let ids: Vec<String> = decoded
            .iter()
            .map(|d| {
                d.as_ref()
                    .map(|ev| ev.id.chars().take(64).collect())
                    .unwrap_or_default()
            })
            .collect();
        let events = decoded
            .into_iter()
            .map(|d| parse_packed(source, d, &cluster));
        self.accept_parsed(source, now, events, |i| {
            ids.get(i).cloned().unwrap_or_default()
        })
        .map(Ok)
    }

    /// The rules after parsing, whatever the form the events came in; `claimed_id(i)` is the id
    /// event `i` claimed (told back to the agent if it is refused).
    fn accept_parsed(
        &self,
        source: EventSource<'_>,
        now: SystemTime,
        events: impl ExactSizeIterator<Item = Result<(AuditEvent, SessionField), EventRefusal>>,
        claimed_id: impl Fn(usize) -> String,
    ) -> Result<Vec<RefusedEvent>, AuthError> {
        let mut hosts: HashMap<String, Option<String>> = HashMap::new();
        let mut accepted = Vec::with_capacity(events.len());
        let mut refused = Vec::new();
        for (index, parsed) in events.enumerate() {
            match self.check_agent_event(source, parsed, now, &mut hosts)? {
                Ok(ev) => accepted.push(ev),
                Err(refusal) => refused.push(RefusedEvent {
                    index,
                    id: claimed_id(index),
                    refusal,
                }),
            }
        }
        for r in &refused {
            self.metrics()
                .agent_events_refused
                .count(r.refusal.reason());
            tracing::warn!(
                host_id = source.host_id,
                role = %source.role,
                event_id = %r.id,
                reason = r.refusal.reason(),
                error = %r.refusal,
                "refused an agent's audit event"
            );
        }
        if !accepted.is_empty() {
            self.emit_agent_events(accepted)?;
        }
        Ok(refused)
    }

    /// Every rule for one event; `hosts` caches the host of each session looked up. A session's
    /// opening event for a session nobody tracks gives it a tracker naming the caller (see
    /// [`adopted`]): the agent could not reach Auth when the session started.
    fn check_agent_event(
        &self,
        source: EventSource<'_>,
        parsed: Result<(AuditEvent, SessionField), EventRefusal>,
        now: SystemTime,
        hosts: &mut HashMap<String, Option<String>>,
    ) -> Result<Result<AuditEvent, EventRefusal>, AuthError> {
        let parsed = parsed.and_then(|(ev, field)| check_time(&ev, now).map(|()| (ev, field)));
        let (ev, field) = match parsed {
            Ok(p) => p,
            Err(refusal) => return Ok(Err(refusal)),
        };
        if let Some(sid) = session_of(&ev)
            && self.lookup_host(hosts, sid)?.is_none()
            && opened_session(&ev).is_some()
        {
            self.adopt(source, &ev, sid, hosts);
        }
        let mut host_of = |sid: &str| hosts.get(sid).cloned().flatten();
        Ok(check_session(source, &ev, field, &mut host_of).map(|()| ev))
    }

    /// The host of `sid`'s tracker, looked up once per batch. A storage failure fails the whole
    /// call (the agent sends the batch again later), so that no event is refused for it.
    fn lookup_host(
        &self,
        hosts: &mut HashMap<String, Option<String>>,
        sid: &str,
    ) -> Result<Option<String>, AuthError> {
        if let Some(h) = hosts.get(sid) {
            return Ok(h.clone());
        }
        let host = match self.tracker(sid) {
            Ok(t) => t.map(|v| v.value.host_id),
            Err(TrackerError::BadSessionId(_)) => None,
            Err(e) => return Err(e.into()),
        };
        hosts.insert(sid.to_string(), host.clone());
        Ok(host)
    }

    /// Gives an untracked session opened by `ev` a tracker naming its sender.
    fn adopt(
        &self,
        source: EventSource<'_>,
        ev: &AuditEvent,
        sid: &str,
        hosts: &mut HashMap<String, Option<String>>,
    ) {
        let Some(update) = adopted(source, ev, sid) else {
            return;
        };
        let host = TrackerHost {
            host_id: source.host_id,
            role: source.role,
        };
        match self.adopt_tracker(host, &update) {
            Ok(t) => {
                hosts.insert(sid.to_string(), Some(t.host_id));
            }
            Err(e) => {
                tracing::warn!(session_id = sid, error = %e, "no tracker adopted for an agent's session");
                hosts.remove(sid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: EventSource<'static> = EventSource {
        host_id: "host-a",
        role: HostRole::Node,
    };
    const DB: EventSource<'static> = EventSource {
        host_id: "host-d",
        role: HostRole::Db,
    };
    const APP: EventSource<'static> = EventSource {
        host_id: "host-p",
        role: HostRole::App,
    };

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn micros(t: SystemTime) -> u64 {
        t.duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
    }

    fn event(kind: &str, session: Option<&str>, at: SystemTime) -> String {
        let mut v =
            serde_json::json!({"event": kind, "id": "ev-1", "time": micros(at), "user": "alice"});
        if let Some(s) = session {
            v["session_id"] = s.into();
        }
        v.to_string()
    }

    /// Sessions: `s-a` is hosted by host-a, `s-d` by host-d, `s-b` by host-b.
    fn hosts(sid: &str) -> Option<String> {
        match sid {
            "s-a" => Some("host-a".into()),
            "s-d" => Some("host-d".into()),
            "s-b" => Some("host-b".into()),
            _ => None,
        }
    }

    /// Every rule, for one event (what `check_agent_event` does, less the adoption).
    fn check(
        source: EventSource<'_>,
        json: &str,
        cluster: &str,
        now: SystemTime,
        host_of: &mut dyn FnMut(&str) -> Option<String>,
    ) -> Result<AuditEvent, EventRefusal> {
        let (ev, field) = parse(source, json, cluster, now)?;
        check_time(&ev, now)?;
        check_session(source, &ev, field, host_of)?;
        Ok(ev)
    }

    fn run(source: EventSource<'_>, json: &str) -> Result<AuditEvent, EventRefusal> {
        check(source, json, "c", now(), &mut hosts)
    }

    #[test]
    fn each_role_sends_only_its_own_kinds() {
        assert!(run(NODE, &event("session.start", Some("s-a"), now())).is_ok());
        assert!(run(DB, &event("db.query", Some("s-d"), now())).is_ok());
        for (src, kind) in [
            (NODE, "db.query"),
            (NODE, "app.session.start"),
            (NODE, "user.login"),
            (NODE, "session.join"),
            (DB, "session.start"),
            (DB, "exec"),
            (APP, "app.session.start"),
            (APP, "session.start"),
        ] {
            let r = run(src, &event(kind, Some("s-a"), now()));
            assert!(
                matches!(r, Err(EventRefusal::ForeignKind { .. })),
                "{} {kind}: {r:?}",
                src.role
            );
        }
    }

    #[test]
    fn a_session_the_agent_does_not_host_is_refused() {
        for sid in ["s-b", "s-d", "unknown"] {
            let r = run(NODE, &event("exec", Some(sid), now()));
            assert!(
                matches!(r, Err(EventRefusal::ForeignSession { .. })),
                "{sid}: {r:?}"
            );
            assert_eq!(r.unwrap_err().reason(), "session");
        }
        let r = run(DB, &event("db.session.end", Some("s-a"), now()));
        assert!(matches!(r, Err(EventRefusal::ForeignSession { .. })));
    }

    #[test]
    fn kinds_without_a_session_are_allowed_only_where_they_have_none() {
        assert!(run(NODE, &event("ssh.auth", None, now())).is_ok());
        assert!(run(NODE, &event("port.forward", None, now())).is_ok());
        for kind in ["session.start", "sftp", "session.recording"] {
            let r = run(NODE, &event(kind, None, now()));
            assert!(
                matches!(r, Err(EventRefusal::MissingSession { .. })),
                "{kind}"
            );
        }
        assert!(matches!(
            run(DB, &event("db.query", None, now())),
            Err(EventRefusal::MissingSession { .. })
        ));
        // A successful command must belong to a session; a refusal before one started need not.
        assert!(run(NODE, &event("exec", None, now())).is_err());
        let mut failed: serde_json::Value =
            serde_json::from_str(&event("exec", None, now())).unwrap();
        failed["success"] = false.into();
        failed["error"] = "LD_PRELOAD may not be set".into();
        assert!(run(NODE, &failed.to_string()).is_ok());
    }

    #[test]
    fn times_far_from_auths_clock_are_refused_both_ways() {
        let ok = [
            now(),
            now() - MAX_SKEW,
            now() + MAX_SKEW,
            now() - Duration::from_secs(60),
        ];
        for at in ok {
            assert!(run(NODE, &event("session.start", Some("s-a"), at)).is_ok());
        }
        let hour = Duration::from_secs(3600);
        for (at, direction) in [(now() - hour, "behind"), (now() + hour, "ahead of")] {
            let r = run(NODE, &event("session.start", Some("s-a"), at));
            assert_eq!(
                r.unwrap_err(),
                EventRefusal::TimeSkew {
                    skew_secs: 3600,
                    direction
                }
            );
        }
        let r = run(
            NODE,
            &event("ssh.auth", None, now() + MAX_SKEW + Duration::from_secs(1)),
        );
        assert_eq!(r.unwrap_err().reason(), "time");
    }

    #[test]
    fn malformed_events_are_refused_not_fatal() {
        for bad in ["not json", "[1,2]", "{\"event\": 5}"] {
            assert!(run(NODE, bad).is_err(), "{bad}");
        }
        assert_eq!(claimed_id("not json"), "");
        assert_eq!(claimed_id(&event("exec", None, now())), "ev-1");
    }

    /// `json` sent packed: encoded by an agent, decoded by Auth.
    fn via_wire(json: &str) -> Result<AuditEvent, EventError> {
        let ev = AuditEvent::from_json(json, now()).unwrap();
        let bytes = hop_api::audit_wire::encode_batch(&[ev]).unwrap();
        hop_api::audit_wire::decode_batch(&bytes, now())
            .unwrap()
            .remove(0)
    }

    #[test]
    fn packed_events_keep_the_same_rules_as_json_ones() {
        let hour = Duration::from_secs(3600);
        let mut with_server: serde_json::Value =
            serde_json::from_str(&event("session.start", Some("s-a"), now())).unwrap();
        with_server["server_id"] = "host-b".into();
        let cases = [
            (NODE, event("session.start", Some("s-a"), now())),
            (NODE, with_server.to_string()),
            (NODE, event("db.query", Some("s-a"), now())),
            (NODE, event("exec", Some("s-b"), now())),
            (NODE, event("sftp", None, now())),
            (NODE, event("session.start", Some("s-a"), now() - hour)),
            (DB, event("db.query", Some("s-d"), now())),
            (DB, event("db.query", Some("s-d"), now() + hour)),
            (APP, event("app.session.start", None, now())),
        ];
        let json_value =
            |r: Result<AuditEvent, EventRefusal>| r.map(|ev| serde_json::to_value(ev).unwrap());
        for (src, json) in cases {
            let packed = parse_packed(src, via_wire(&json), "c").and_then(|(ev, field)| {
                check_time(&ev, now())?;
                check_session(src, &ev, field, &mut hosts)?;
                Ok(ev)
            });
            assert_eq!(json_value(packed), json_value(run(src, &json)), "{json}");
        }
        let unknown = EventError::UnknownKind {
            name: "no.such".into(),
        };
        assert!(matches!(
            parse_packed(NODE, Err(unknown), "c"),
            Err(EventRefusal::ForeignKind { .. })
        ));
        let r = parse_packed(NODE, Err(EventError::MissingKind), "c");
        assert_eq!(r.unwrap_err().reason(), "malformed");
    }

    #[test]
    fn the_server_id_is_the_callers_whatever_the_event_says() {
        let mut v: serde_json::Value =
            serde_json::from_str(&event("session.start", Some("s-a"), now())).unwrap();
        v["server_id"] = "host-b".into();
        let ev = run(NODE, &v.to_string()).unwrap();
        assert_eq!(ev.fields["server_id"], "host-a");
    }
}
