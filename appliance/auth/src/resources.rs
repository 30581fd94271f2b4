//! The Auth service's use of the resource types of `hop-rbac`: how they are created, stored and
//! shown.
//!
//! This module owns the glue between resource documents and the backend: the cluster name and
//! authentication preference at bootstrap, user lock state, join tokens, and the generic
//! write/delete of `hop admin create -f` / `rm` (which never writes a token: tokens are made by
//! `auth::join_tokens` so that their secret is only ever stored hashed). It holds no policy: the
//! server decides.

use std::collections::BTreeMap;
use std::time::SystemTime;

use hop_ca::CaPublic;
use hop_rbac::{AuthPreference, ClusterName, ProvisionToken, Resource, Role, User};
use hop_storage::{ResourceStore, StorageError};

use super::error::AuthError;
use super::records::PUBLIC_KINDS;

const CLUSTER_NAME: &str = "cluster-name";
const AUTH_PREFERENCE: &str = "cluster-auth-preference";

pub fn odt(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(t)
}

pub fn from_odt(t: time::OffsetDateTime) -> SystemTime {
    SystemTime::from(t)
}

/// The stored cluster name, created from the config (or the host name) on first start. A config
/// that names a different cluster than the data dir holds is an operator error.
pub fn ensure_cluster_name(
    store: &ResourceStore,
    configured: Option<&str>,
) -> Result<String, AuthError> {
    if let Some(v) = store.get::<ClusterName>(CLUSTER_NAME)? {
        let stored = v.value.spec.cluster_name.clone();
        if let Some(c) = configured
            && c != stored
        {
            return Err(AuthError::BadRequest(format!(
                "auth_service.cluster_name is {c:?} but this data directory belongs to cluster {stored:?}; the name is fixed at first start"
            )));
        }
        return Ok(stored);
    }
    let name = match configured {
        Some(c) => c.to_string(),
        None => default_cluster_name(),
    };
    let doc = format!(
        "kind: cluster_name\nversion: v2\nmetadata:\n  name: {CLUSTER_NAME}\nspec:\n  cluster_name: \"{name}\"\n  cluster_id: \"{}\"\n",
        uuid::Uuid::new_v4()
    );
    match parse_one(&doc)? {
        Resource::ClusterName(c) => {
            store.create(&c)?;
        }
        _ => {
            return Err(AuthError::Internal(
                "cluster_name document parsed as another kind".into(),
            ));
        }
    }
    tracing::info!(cluster = %name, "created cluster");
    Ok(name)
}

fn default_cluster_name() -> String {
    let host: String = hop_platform::host::host_name()
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .collect();
    if host.is_empty() { "hop".into() } else { host }
}

fn parse_one(doc: &str) -> Result<Resource, AuthError> {
    hop_rbac::parse_resources(doc, "<generated>")
        .map_err(AuthError::GeneratedDocument)?
        .into_iter()
        .next()
        .ok_or_else(|| AuthError::Internal("empty generated document".into()))
}

/// The configuration file is authoritative for the authentication preference.
pub fn apply_auth_preference(store: &ResourceStore, second_factor: &str) -> Result<(), AuthError> {
    let doc = format!(
        "kind: cluster_auth_preference\nversion: v2\nmetadata:\n  name: {AUTH_PREFERENCE}\nspec:\n  type: local\n  second_factor: {second_factor}\n"
    );
    match parse_one(&doc)? {
        Resource::ClusterAuthPreference(p) => {
            store.upsert::<AuthPreference>(&p)?;
            Ok(())
        }
        _ => Err(AuthError::Internal(
            "auth preference document parsed as another kind".into(),
        )),
    }
}

pub fn new_user(
    name: &str,
    roles: &[String],
    traits: BTreeMap<String, Vec<String>>,
    actor: &str,
    now: SystemTime,
) -> Result<User, AuthError> {
    let mut user = User::new(name, &[]);
    user.spec.roles = roles.to_vec();
    user.spec.traits = traits;
    user.spec.created_by = Some(hop_rbac::CreatedBy {
        time: odt(now),
        user: actor.to_string(),
        connector: None,
    });
    user.validate()
        .map_err(|e| AuthError::BadRequest(e.to_string()))?;
    Ok(user)
}

pub fn user_roles_and_traits(user: &User) -> (Vec<String>, BTreeMap<String, Vec<String>>) {
    (user.spec.roles.clone(), user.spec.traits.clone())
}

/// When the user is locked at `now`, until when.
pub fn locked_until(user: &User, now: SystemTime) -> Option<SystemTime> {
    let until = user.status.locked_until.map(from_odt)?;
    (user.status.locked && until > now).then_some(until)
}

pub fn failed_logins(user: &User) -> u32 {
    user.status.failed_logins
}

pub fn set_failed_logins(user: &mut User, n: u32) {
    user.status.failed_logins = n;
}

/// Locks until a moment, or (None) unlocks; either way the failure counter starts again.
pub fn set_user_lock(user: &mut User, until: Option<SystemTime>, reason: &str) {
    user.status.locked = until.is_some();
    user.status.locked_until = until.map(odt);
    user.status.lock_reason = reason.to_string();
    user.status.failed_logins = 0;
}

/// A join token named `id` whose secret hashes to `secret_hash`.
pub fn new_join_token(
    id: &str,
    roles: &[String],
    expires: SystemTime,
    uses: Option<u32>,
    secret_hash: &str,
) -> Result<ProvisionToken, AuthError> {
    if roles.is_empty() {
        return Err(AuthError::BadRequest("--type: at least one role is required (node, db, app, kube, windows_desktop, bot, discovery; or proxy alone)".into()));
    }
    let roles = roles
        .iter()
        .map(|r| r.parse::<hop_rbac::SystemRole>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| AuthError::BadRequest(format!("--type: {e}")))?;
    let mut t = ProvisionToken::new(id, &roles, odt(expires));
    t.spec.uses = uses;
    t.spec.secret_hash = Some(secret_hash.to_string());
    t.validate()
        .map_err(|e| AuthError::BadRequest(e.to_string()))?;
    Ok(t)
}

/// Writes one validated resource document, replacing what is there. `now` stamps a user the
/// document creates: certificates issued before it (to an earlier user of the same name) are
/// void.
pub fn write(store: &ResourceStore, doc: &Resource, now: SystemTime) -> Result<(), AuthError> {
    match doc {
        Resource::Role(r) => store.upsert::<Role>(r).map(drop),
        Resource::User(u) => {
            let mut u = u.clone();
            match store.get::<User>(&u.metadata.name)? {
                Some(existing) => {
                    // Keep the lock state the Auth service maintains unless the document sets
                    // one, and never move the not-before stamp back (an old export must not
                    // revive voided certificates).
                    let kept = existing.value.status.not_before;
                    if u.status == Default::default() {
                        u.status = existing.value.status;
                    }
                    u.status.not_before = u.status.not_before.max(kept);
                }
                None => u.status.not_before = Some(created_stamp(now)),
            }
            store.upsert::<User>(&u).map(drop)
        }
        Resource::Token(_) => {
            return Err(AuthError::BadRequest(
                "token resources are made with `hop admin tokens add` (the secret is shown once and stored only as a hash)".into(),
            ));
        }
        Resource::ClusterAuthPreference(p) => store.upsert::<AuthPreference>(p).map(drop),
        Resource::Database(d) => store.upsert::<hop_rbac::DatabaseResource>(d).map(drop),
        Resource::Node(n) => store.upsert::<hop_rbac::NodeResource>(n).map(drop),
        Resource::Lock(l) => store.upsert::<hop_rbac::LockResource>(l).map(drop),
        Resource::Oidc(c) => store.upsert::<hop_rbac::OidcConnector>(c).map(drop),
        Resource::Github(c) => store.upsert::<hop_rbac::GithubConnector>(c).map(drop),
        Resource::Saml(c) => store.upsert::<hop_rbac::SamlConnector>(c).map(drop),
        Resource::ClusterName(_) | Resource::CertAuthority(_) => {
            return Err(AuthError::BadRequest(format!(
                "{} resources cannot be written",
                doc.kind()
            )));
        }
    }
    .map_err(AuthError::from)
}

pub fn delete(store: &ResourceStore, kind: &str, name: &str) -> Result<bool, AuthError> {
    let r: Result<bool, StorageError> = match kind {
        "role" => store.delete::<Role>(name),
        "user" => store.delete::<User>(name),
        "token" => store.delete::<ProvisionToken>(name),
        "db" => store.delete::<hop_rbac::DatabaseResource>(name),
        "node" => store.delete::<hop_rbac::NodeResource>(name),
        "lock" => store.delete::<hop_rbac::LockResource>(name),
        "oidc" => store.delete::<hop_rbac::OidcConnector>(name),
        "github" => store.delete::<hop_rbac::GithubConnector>(name),
        "saml" => store.delete::<hop_rbac::SamlConnector>(name),
        "host_name" => store.delete::<super::records::HostNameClaim>(name),
        _ => {
            return Err(AuthError::BadRequest(format!(
                "{kind} resources cannot be deleted"
            )));
        }
    };
    Ok(r?)
}

/// Accepts the kinds and the plural/short forms an operator types (`roles`, `users`, `tokens`, `cas`).
pub fn canonical_kind(kind: &str) -> Option<&'static str> {
    let k = kind.trim().to_ascii_lowercase();
    let k = match k.as_str() {
        "roles" => "role",
        "users" => "user",
        "tokens" => "token",
        "dbs" | "database" | "databases" => "db",
        "nodes" => "node",
        "locks" => "lock",
        "oidc_connector" | "oidc_connectors" | "oidcs" => "oidc",
        "github_connector" | "github_connectors" => "github",
        "saml_connector" | "saml_connectors" => "saml",
        "host_names" | "hostname" | "hostnames" => "host_name",
        "ca" | "cas" | "cert_authorities" | "cert_authority" => "cert_authority",
        "cluster_auth_preferences" | "cap" => "cluster_auth_preference",
        other => other,
    };
    PUBLIC_KINDS.iter().copied().find(|p| *p == k)
}

/// A `cert_authority` document with the public parts only.
pub fn cert_authority_json(
    ca: &CaPublic,
    additional: Option<&CaPublic>,
    phase: &str,
) -> serde_json::Value {
    let keys = |ca: &CaPublic| {
        let mut keys = serde_json::Map::new();
        if let Some(k) = &ca.ssh_public {
            keys.insert("ssh".into(), serde_json::json!([{ "public_key": k }]));
        }
        if let Some(c) = &ca.x509_cert_pem {
            keys.insert("tls".into(), serde_json::json!([{ "cert": c }]));
        }
        if let Some(k) = &ca.jwt_public_pem {
            keys.insert("jwt".into(), serde_json::json!([{ "public_key": k }]));
        }
        keys
    };
    let mut spec = serde_json::json!({
        "type": ca.kind.to_string(),
        "cluster_name": ca.cluster,
        "active_keys": keys(ca),
        "rotation": { "phase": phase },
    });
    if let Some(other) = additional {
        spec["additional_trusted_keys"] = keys(other).into();
    }
    serde_json::json!({
        "kind": "cert_authority",
        "version": "v2",
        "metadata": { "name": ca.kind.to_string() },
        "spec": spec,
    })
}

/// The not-before stamp of a user created at `now`: its second, so that certificates of an
/// earlier user of the same name are void and the new user's own are not.
pub fn created_stamp(now: SystemTime) -> time::OffsetDateTime {
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    odt(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}
