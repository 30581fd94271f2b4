//! The audit vocabulary every part of Hop speaks: the event kinds and their stable codes, and the
//! shape of one event (`event`, `code`, `time`, `id`, `cluster`, `user`, `addr.remote`,
//! `success`/`error`, plus the kind's own fields).
//!
//! Agents build events with it and Auth reads them back ([`AuditEvent::from_agent_json`] keeps
//! only what an agent may say). Where events go is Auth's business (its `AuditSink`); this module
//! never stores or sends anything. Secrets never enter events.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// The kinds of event the Auth service emits, each with its stable code per outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    UserLogin,
    UserSignup,
    UserCreate,
    UserUpdate,
    UserDelete,
    UserLocked,
    UserUnlocked,
    ResourceCreate,
    ResourceDelete,
    JoinTokenCreate,
    AgentJoin,
    AppSessionStart,
    AppSessionEnd,
    /// One HTTP request of an application session (method, path, status, bytes, duration).
    AppSessionRequest,
    SessionStart,
    SessionEnd,
    Exec,
    Sftp,
    PortForward,
    AgentForward,
    SshAuth,
    DbSessionStart,
    DbSessionEnd,
    DbQuery,
    SessionUpload,
    SessionRecording,
    SessionJoin,
    /// A joiner left a live session (`hop join`, the web terminal): who, the mode, how long.
    SessionLeave,
    LockCreated,
    AccessRefused,
    SessionTerminated,
    UserLogout,
    UserPasswordChange,
    MfaAdd,
    MfaDelete,
    /// A user read a session recording (`hop play`, `hop recordings export`, the web player).
    SessionRecordingAccess,
    /// One Kubernetes API request through the proxy (verb, resource, namespace, name, status,
    /// impersonated user and groups); a refused request is the same kind with `success: false`.
    KubeRequest,
    /// A `kubectl exec`/`attach` session (its start, and its end with the exit status when known).
    KubeExec,
    /// A `kubectl port-forward` session (its start with the ports, and its end).
    KubePortForward,
    /// A bot added (`hop admin bots add`).
    BotCreate,
    /// A bot removed (`hop admin bots rm`).
    BotDelete,
    /// A bot's join with its one-time token (refused: `success: false`).
    BotJoin,
    /// A bot's renewal (refused, or a copied identity detected: `success: false`).
    BotRenew,
    /// A bot's recovery limit changed (`hop admin bots update`).
    BotUpdate,
    /// A CA rotation changed phase (who, which CA, from and to, the keys' fingerprints).
    CaRotate,
    /// The cluster state was exported for a backup (who, the revision, how many items;
    /// refused: `success: false`).
    ClusterBackup,
    ClusterRestore,
    /// X.509 SVIDs issued to a bot (refused: `success: false`).
    SpiffeSvidIssue,
    /// An access request made (`hop request create`; refused: `success: false`).
    AccessRequestCreate,
    /// A review of an access request (refused: `success: false`).
    AccessRequestReview,
    /// An access request's state changed (approved, denied by its thresholds) or it was
    /// assumed or dropped by its requester.
    AccessRequestUpdate,
    /// A per-session MFA assertion and the target it was made for (node and login; refused:
    /// `success: false`).
    MfaSession,
}

impl EventKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::UserLogin => "user.login",
            Self::UserSignup => "user.signup",
            Self::UserCreate => "user.create",
            Self::UserUpdate => "user.update",
            Self::UserDelete => "user.delete",
            Self::UserLocked => "user.locked",
            Self::UserUnlocked => "user.unlocked",
            Self::ResourceCreate => "resource.create",
            Self::ResourceDelete => "resource.delete",
            Self::JoinTokenCreate => "join_token.create",
            Self::AgentJoin => "agent.join",
            Self::AppSessionStart => "app.session.start",
            Self::AppSessionEnd => "app.session.end",
            Self::AppSessionRequest => "app.session.request",
            Self::SessionStart => "session.start",
            Self::SessionEnd => "session.end",
            Self::Exec => "exec",
            Self::Sftp => "sftp",
            Self::PortForward => "port.forward",
            Self::AgentForward => "agent.forward",
            Self::SshAuth => "ssh.auth",
            Self::DbSessionStart => "db.session.start",
            Self::DbSessionEnd => "db.session.end",
            Self::DbQuery => "db.query",
            Self::SessionUpload => "session.upload",
            Self::SessionRecording => "session.recording",
            Self::SessionJoin => "session.join",
            Self::SessionLeave => "session.leave",
            Self::LockCreated => "lock.created",
            Self::AccessRefused => "access.refused",
            Self::SessionTerminated => "session.terminated",
            Self::UserLogout => "user.logout",
            Self::UserPasswordChange => "user.password_change",
            Self::MfaAdd => "mfa.add",
            Self::MfaDelete => "mfa.delete",
            Self::SessionRecordingAccess => "session.recording.access",
            Self::KubeRequest => "kube.request",
            Self::KubeExec => "kube.exec",
            Self::KubePortForward => "kube.portforward",
            Self::BotCreate => "bot.create",
            Self::BotDelete => "bot.delete",
            Self::BotJoin => "bot.join",
            Self::BotRenew => "bot.renew",
            Self::BotUpdate => "bot.update",
            Self::CaRotate => "ca.rotate",
            Self::ClusterBackup => "cluster.backup",
            Self::ClusterRestore => "cluster.restore",
            Self::AccessRequestCreate => "access_request.create",
            Self::AccessRequestReview => "access_request.review",
            Self::AccessRequestUpdate => "access_request.update",
            Self::MfaSession => "mfa.session",
            Self::SpiffeSvidIssue => "spiffe.svid.issue",
        }
    }

    /// Stable short code: `H` + number + `I` (success) or `W` (failure).
    pub fn code(self, success: bool) -> String {
        let n = match self {
            Self::UserLogin => 1000,
            Self::UserSignup => 1001,
            Self::UserCreate => 1002,
            Self::UserUpdate => 1003,
            Self::UserDelete => 1004,
            Self::UserLocked => 1005,
            Self::UserUnlocked => 1006,
            Self::ResourceCreate => 2000,
            Self::ResourceDelete => 2001,
            Self::JoinTokenCreate => 3000,
            Self::AgentJoin => 3001,
            Self::AppSessionStart => 4000,
            Self::AppSessionEnd => 4001,
            Self::AppSessionRequest => 4002,
            Self::SessionStart => 5000,
            Self::SessionEnd => 5001,
            Self::Exec => 5002,
            Self::Sftp => 5003,
            Self::PortForward => 5004,
            Self::AgentForward => 5005,
            Self::SshAuth => 5006,
            Self::DbSessionStart => 6000,
            Self::DbSessionEnd => 6001,
            Self::DbQuery => 6002,
            Self::SessionUpload => 5007,
            Self::SessionRecording => 5008,
            Self::SessionJoin => 5009,
            Self::SessionLeave => 5011,
            Self::LockCreated => 1007,
            Self::AccessRefused => 1008,
            Self::SessionTerminated => 1009,
            Self::UserLogout => 1010,
            Self::UserPasswordChange => 1011,
            Self::MfaAdd => 1012,
            Self::MfaDelete => 1013,
            Self::SessionRecordingAccess => 5010,
            Self::KubeRequest => 7000,
            Self::KubeExec => 7001,
            Self::KubePortForward => 7002,
            Self::BotCreate => 8000,
            Self::BotDelete => 8001,
            Self::BotJoin => 8002,
            Self::BotRenew => 8003,
            Self::BotUpdate => 8004,
            Self::CaRotate => 9000,
            Self::ClusterBackup => 9100,
            Self::ClusterRestore => 9101,
            Self::SpiffeSvidIssue => 8010,
            Self::AccessRequestCreate => 8100,
            Self::AccessRequestReview => 8101,
            Self::AccessRequestUpdate => 8102,
            Self::MfaSession => 1014,
        };
        format!("H{n}{}", if success { 'I' } else { 'W' })
    }
}

impl EventKind {
    /// Every kind, in declaration order.
    pub const ALL: &'static [Self] = &[
        Self::UserLogin,
        Self::UserSignup,
        Self::UserCreate,
        Self::UserUpdate,
        Self::UserDelete,
        Self::UserLocked,
        Self::UserUnlocked,
        Self::ResourceCreate,
        Self::ResourceDelete,
        Self::JoinTokenCreate,
        Self::AgentJoin,
        Self::AppSessionStart,
        Self::AppSessionEnd,
        Self::AppSessionRequest,
        Self::SessionStart,
        Self::SessionEnd,
        Self::Exec,
        Self::Sftp,
        Self::PortForward,
        Self::AgentForward,
        Self::SshAuth,
        Self::DbSessionStart,
        Self::DbSessionEnd,
        Self::DbQuery,
        Self::SessionUpload,
        Self::SessionRecording,
        Self::SessionJoin,
        Self::SessionLeave,
        Self::LockCreated,
        Self::AccessRefused,
        Self::SessionTerminated,
        Self::UserLogout,
        Self::UserPasswordChange,
        Self::MfaAdd,
        Self::MfaDelete,
        Self::SessionRecordingAccess,
        Self::KubeRequest,
        Self::KubeExec,
        Self::KubePortForward,
        Self::BotCreate,
        Self::BotDelete,
        Self::BotJoin,
        Self::BotRenew,
        Self::BotUpdate,
        Self::CaRotate,
        Self::ClusterBackup,
        Self::ClusterRestore,
        Self::SpiffeSvidIssue,
        Self::AccessRequestCreate,
        Self::AccessRequestReview,
        Self::AccessRequestUpdate,
        Self::MfaSession,
    ];

    /// The kinds an agent may send to Auth (`EmitEvents`, `EmitEventsPacked`).
    pub const FROM_AGENTS: &'static [Self] = &[
        Self::SessionStart,
        Self::SessionEnd,
        Self::Exec,
        Self::Sftp,
        Self::PortForward,
        Self::AgentForward,
        Self::SshAuth,
        Self::SessionRecording,
        Self::AppSessionStart,
        Self::AppSessionEnd,
        Self::DbSessionStart,
        Self::DbSessionEnd,
        Self::DbQuery,
    ];

    /// The kind of a stable name, any kind.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.name() == name)
    }

    /// The kinds an agent may send to Auth, by name.
    pub fn from_agent(name: &str) -> Option<Self> {
        Self::FROM_AGENTS.iter().copied().find(|k| k.name() == name)
    }
}

/// One audit event.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent {
    pub event: &'static str,
    pub code: String,
    /// UTC, microseconds since the Unix epoch.
    pub time: u64,
    pub id: String,
    pub cluster: String,
    pub user: String,
    #[serde(rename = "addr.remote", skip_serializing_if = "Option::is_none")]
    pub addr_remote: Option<String>,
    pub success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The kind's own fields.
    #[serde(flatten)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl AuditEvent {
    pub fn new(kind: EventKind, cluster: &str, user: &str, now: SystemTime) -> Self {
        Self {
            event: kind.name(),
            code: kind.code(true),
            time: now
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(0),
            id: crate::ids::time_ordered(now).to_string(),
            cluster: cluster.to_string(),
            user: user.to_string(),
            addr_remote: None,
            success: true,
            error: None,
            fields: serde_json::Map::new(),
        }
    }

    pub fn failed(mut self, kind: EventKind, error: impl Into<String>) -> Self {
        self.success = false;
        self.code = kind.code(false);
        self.error = Some(error.into());
        self
    }

    pub fn remote(mut self, addr: Option<SocketAddr>) -> Self {
        self.addr_remote = addr.map(|a| a.to_string());
        self
    }

    /// The client's address as text (as a session learned it).
    pub fn remote_str(mut self, addr: &str) -> Self {
        if !addr.is_empty() {
            self.addr_remote = Some(addr.to_string());
        }
        self
    }

    pub fn field(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.fields.insert(key.to_string(), value.into());
        self
    }

    /// Rebuilds an event an agent sent as JSON. The kind must be one agents may emit; the
    /// cluster is Auth's own, and `server_id` is the host id proven by the agent's certificate,
    /// whatever the JSON said.
    pub fn from_agent_json(
        json: &str,
        cluster: &str,
        host_id: &str,
        now: SystemTime,
    ) -> Result<Self, AgentEventError> {
        let ev = Self::from_json(json, now)?;
        if EventKind::from_agent(ev.event).is_none() {
            return Err(AgentEventError::ForeignKind {
                name: ev.event.to_string(),
            });
        }
        Ok(ev.claimed_by_agent(cluster, host_id))
    }

    /// Reads an event back from its JSON form (as `serde_json` writes an [`AuditEvent`]). What
    /// is missing gets a default: the time `now`, a new id, no user, success unless it names an
    /// error; the code follows from the kind and the outcome, whatever the JSON said.
    pub fn from_json(json: &str, now: SystemTime) -> Result<Self, AgentEventError> {
        let serde_json::Value::Object(mut m) =
            serde_json::from_str::<serde_json::Value>(json).map_err(AgentEventError::NotJson)?
        else {
            return Err(AgentEventError::NotAnObject);
        };
        let name = m
            .remove("event")
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let kind = EventKind::from_name(&name).ok_or(AgentEventError::ForeignKind { name })?;
        let mut ev = AuditEvent::new(kind, "", "", now);
        let text = |m: &mut serde_json::Map<String, serde_json::Value>, k: &str| {
            m.remove(k).and_then(|v| v.as_str().map(str::to_owned))
        };
        if let Some(id) = text(&mut m, "id") {
            ev.id = id;
        }
        if let Some(t) = m.remove("time").and_then(|v| v.as_u64()) {
            ev.time = t;
        }
        ev.cluster = text(&mut m, "cluster").unwrap_or_default();
        ev.user = text(&mut m, "user").unwrap_or_default();
        ev.addr_remote = text(&mut m, "addr.remote");
        ev.error = text(&mut m, "error");
        ev.success = m
            .remove("success")
            .and_then(|v| v.as_bool())
            .unwrap_or(ev.error.is_none());
        ev.code = kind.code(ev.success);
        m.remove("code");
        ev.fields = m;
        Ok(ev)
    }

    /// What Auth keeps of an event an agent claims, however it arrived: the id
    /// [`crate::ids::agent_event_id`] derives from the agent's host id, the id it claimed (1 to
    /// 64 bytes, else a new random one) and the event's time; Auth's own `cluster`; the code
    /// its kind and outcome give; and `server_id` = the host id the agent's certificate proves.
    /// Which kinds an agent may send is for the caller to check.
    pub fn claimed_by_agent(mut self, cluster: &str, host_id: &str) -> Self {
        if self.id.is_empty() || self.id.len() > 64 {
            self.id = uuid::Uuid::new_v4().to_string();
        }
        self.id = crate::ids::agent_event_id(host_id, &self.id, self.time);
        self.cluster = cluster.to_string();
        if let Some(kind) = EventKind::from_name(self.event) {
            self.code = kind.code(self.success);
        }
        self.fields.remove("code");
        self.fields.remove("cluster");
        self.fields.insert("server_id".into(), host_id.into());
        self
    }
}

/// Why an event an agent sent cannot be rebuilt (the agent's fault: a bug or a version mismatch).
#[derive(Debug, thiserror::Error)]
pub enum AgentEventError {
    #[error("event: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("event: expected a JSON object")]
    NotAnObject,
    #[error("event kind {name:?} is not one an agent may send")]
    ForeignKind { name: String },
}
