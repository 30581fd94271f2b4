//! What an SSH node decides on its own: who may log in as whom, with which options.
//!
//! This module owns the node's cache of the cluster's access data (roles, the admission snapshot, the user
//! CA keys, the recording mode), refreshed from Auth every few seconds and kept on disk so that a
//! node restarted while Auth is away still decides with the last data it saw, and the decision
//! itself ([`authorize`]), a pure function of that snapshot, the presented certificate, the
//! requested login, the node's labels and the time.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use hop_ca::{CaKind, CaPublic, Identity};
use hop_rbac::Role;
use serde::{Deserialize, Serialize};

/// The access data as Auth sent it (also the on-disk cache's format).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AccessData {
    pub roles_json: String,
    pub locked_users: Vec<String>,
    pub ssh_user_ca_keys: Vec<String>,
    pub session_recording: String,
    pub cluster_name: String,
    /// The admission snapshot as Auth sent it (JSON); empty before the first answer.
    #[serde(default)]
    pub admission_json: String,
}

/// Why access data from Auth (or the cache on disk) cannot be used: Auth and this node disagree
/// (a version mismatch or a bug); the node keeps deciding with what it had.
#[derive(Debug, thiserror::Error)]
pub enum AccessDataError {
    #[error("roles from Auth: {0}")]
    Roles(#[source] serde_json::Error),
    #[error("{0}")]
    Admission(#[source] hop_admission::SnapshotError),
}

/// A parsed, ready-to-use [`AccessData`].
#[derive(Debug, Clone)]
pub struct AccessSnapshot {
    roles: HashMap<String, Role>,
    /// Every decision goes through this; `None` until Auth has answered once (nobody is let
    /// in until then).
    admission: Option<hop_admission::Snapshot>,
    user_cas: Vec<CaPublic>,
    pub recording: String,
}

impl AccessSnapshot {
    pub fn parse(data: &AccessData) -> Result<Self, AccessDataError> {
        let roles: Vec<Role> =
            serde_json::from_str(&data.roles_json).map_err(AccessDataError::Roles)?;
        Ok(Self {
            roles: roles
                .into_iter()
                .map(|r| (r.metadata.name.clone(), r))
                .collect(),
            admission: if data.admission_json.is_empty() {
                None
            } else {
                Some(
                    hop_admission::Snapshot::from_json(&data.admission_json)
                        .map_err(AccessDataError::Admission)?,
                )
            },
            user_cas: data
                .ssh_user_ca_keys
                .iter()
                .map(|k| CaPublic {
                    kind: CaKind::User,
                    cluster: data.cluster_name.clone(),
                    ssh_public: Some(k.clone()),
                    x509_cert_pem: None,
                    jwt_public_pem: None,
                    ssh_fingerprint: None,
                    x509_spki_sha256: None,
                })
                .collect(),
            recording: if data.session_recording.is_empty() {
                "node".into()
            } else {
                data.session_recording.clone()
            },
        })
    }

    /// Only the user CA keys (what a node knows before it first reaches Auth).
    pub fn with_user_cas(cluster: &str, keys: &[String]) -> Self {
        Self::parse(&AccessData {
            roles_json: "[]".into(),
            ssh_user_ca_keys: keys.to_vec(),
            cluster_name: cluster.into(),
            ..Default::default()
        })
        .unwrap_or_else(|_| unreachable_snapshot())
    }
}

fn unreachable_snapshot() -> AccessSnapshot {
    AccessSnapshot {
        roles: HashMap::new(),
        admission: None,
        user_cas: Vec::new(),
        recording: "node".into(),
    }
}

/// What an authorized connection may do.
#[derive(Debug, Clone)]
pub struct Grant {
    pub identity: Identity,
    pub login: String,
    pub cert_expires: SystemTime,
    pub permit_agent_forwarding: bool,
    pub permit_port_forwarding: bool,
    pub permit_pty: bool,
    pub idle_timeout: Option<Duration>,
    pub disconnect_expired_cert: bool,
    /// `node`, `node-sync`, `proxy`, `proxy-sync` or `off`: what `recorder.rs` does with the
    /// session (the proxy modes are recorded by the proxy when the session comes through it).
    pub recording: String,
    /// The certificate the login used, to decide again while the connection lives.
    pub cert_openssh: String,
    /// `require_session_join` of the user's roles: an interactive session waits for these
    /// participants, any other is refused (`super::moderation`).
    pub moderation: Vec<hop_rbac::moderation::SessionJoinRequirement>,
}

/// Why a connection was refused; shown to the client and written to the audit log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String, pub &'static str);

/// Decides whether the holder of `cert_openssh` may log in as `login` on node `node_name` with
/// `labels` (a per-session MFA certificate only for its own node and login):
/// the user CA's signature, then admission (cluster, locks, existence, voided certificates,
/// current roles) on the node route, then the roles' answer for this node and login.
pub fn authorize(
    snap: &AccessSnapshot,
    cert_openssh: &str,
    (node_name, login): (&str, &str),
    labels: &BTreeMap<String, String>,
    now: SystemTime,
) -> Result<Grant, Refusal> {
    let (identity, expires) = hop_ca::verify_user_ssh(cert_openssh, &snap.user_cas, now)
        .map_err(|e| Refusal(format!("certificate refused: {e}"), "bad_certificate"))?;
    let Some(admission) = &snap.admission else {
        return Err(Refusal(
            "this node has not received its access data from Auth yet; try again shortly".into(),
            "admission_unavailable",
        ));
    };
    if !identity.logins.iter().any(|l| l == login) {
        return Err(Refusal(
            format!(
                "login {login:?} is not in the certificate of user {:?} (its logins: {})",
                identity.username,
                identity.logins.join(", ")
            ),
            "access_denied",
        ));
    }
    let issued_at = hop_ca::ssh_issued_at(cert_openssh).unwrap_or(std::time::UNIX_EPOCH);
    let subject = hop_admission::Subject {
        kind: if identity.username.starts_with("bot-") {
            hop_admission::SubjectKind::Bot
        } else {
            hop_admission::SubjectKind::User
        },
        name: &identity.username,
        roles: &identity.roles,
        active_requests: &identity.active_requests,
        traits: &identity.traits,
        login: Some(login),
        issued_at,
        expires,
        cluster: &identity.cluster,
        bound_route: None,
        agent_role: "",
        target: Some(hop_admission::SessionTarget::Node {
            node: node_name,
            login,
        }),
        session_mfa: identity.session_mfa.as_ref().map(mfa_mark),
    };
    let admitted = admission
        .admit(&subject, hop_admission::Route::Node, now)
        .map_err(|r| Refusal(r.to_string(), r.code()))?;
    let checker = admitted.checker();
    checker.check_node_login(labels, login).map_err(|e| {
        Refusal(
            format!("access denied to user {:?}: {e}", identity.username),
            "access_denied",
        )
    })?;
    let recording = tighter_recording(&snap.recording, &identity, &snap.roles);
    // Nobody could moderate a forwarded connection: a moderated user forwards nothing.
    let moderation = checker.session_join_requirements("ssh");
    let unmoderated = moderation.is_empty();
    Ok(Grant {
        login: login.to_string(),
        cert_expires: expires,
        permit_agent_forwarding: identity.permit_agent_forwarding
            && checker.permit_agent_forwarding(),
        permit_port_forwarding: identity.permit_port_forwarding
            && checker.permit_port_forwarding()
            && unmoderated,
        permit_pty: identity.permit_pty,
        idle_timeout: checker.client_idle_timeout(),
        moderation,
        disconnect_expired_cert: checker.disconnect_expired_cert(),
        recording,
        cert_openssh: cert_openssh.to_string(),
        identity,
    })
}

/// The cluster's recording mode, made synchronous when one of the user's roles asks for `strict`.
fn tighter_recording(cluster: &str, identity: &Identity, roles: &HashMap<String, Role>) -> String {
    let strict = identity.roles.iter().filter_map(|n| roles.get(n)).any(|r| {
        r.spec
            .options
            .record_session
            .as_ref()
            .and_then(|rs| rs.ssh.or(rs.default))
            .is_some_and(|m| m == hop_rbac::RecordingMode::Strict)
    });
    match (cluster, strict) {
        ("node", true) => "node-sync".into(),
        ("proxy", true) => "proxy-sync".into(),
        (m, _) => m.to_string(),
    }
}

/// The node's current snapshot, refreshed in the background.
#[derive(Debug, Clone)]
pub struct AccessCache {
    current: Arc<ArcSwap<AccessSnapshot>>,
    file: PathBuf,
}

impl AccessCache {
    /// Starts from the on-disk cache when there is one, else from the user CA keys alone (which
    /// authorizes nobody until Auth answers: no roles means deny).
    pub fn load(data_dir: &Path, cluster: &str, user_ca_keys: &[String]) -> Self {
        let file = data_dir.join("agent").join("access.json");
        let snap = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| serde_json::from_str::<AccessData>(&t).ok())
            .and_then(|d| AccessSnapshot::parse(&d).ok())
            .unwrap_or_else(|| AccessSnapshot::with_user_cas(cluster, user_ca_keys));
        Self {
            current: Arc::new(ArcSwap::from_pointee(snap)),
            file,
        }
    }

    pub fn get(&self) -> Arc<AccessSnapshot> {
        self.current.load_full()
    }

    /// Installs data fresh from Auth and keeps a copy on disk.
    pub fn update(&self, data: &AccessData) -> Result<(), AccessDataError> {
        let snap = AccessSnapshot::parse(data)?;
        self.current.store(Arc::new(snap));
        if let Ok(json) = serde_json::to_vec(data)
            && let Err(e) = hop_net::files::write_private(&self.file, &json)
        {
            tracing::warn!(error = %e, "cannot keep the access cache on disk");
        }
        Ok(())
    }
}

/// The per-session MFA mark of a certificate, as admission compares it with the session.
fn mfa_mark(t: &hop_ca::SessionMfaTarget) -> hop_admission::SessionMfaMark<'_> {
    match t {
        hop_ca::SessionMfaTarget::Node { node, login } => {
            hop_admission::SessionTarget::Node { node, login }
        }
        hop_ca::SessionMfaTarget::Database {
            db_service,
            db_user,
            db_name,
        } => hop_admission::SessionTarget::Database {
            service: db_service,
            db_user,
            db_name,
        },
        hop_ca::SessionMfaTarget::KubeCluster { kube_cluster } => {
            hop_admission::SessionTarget::KubeCluster {
                cluster: kube_cluster,
            }
        }
        hop_ca::SessionMfaTarget::App { app } => hop_admission::SessionTarget::App { app },
    }
}
