//! The admin API's generic resource operations (`hop admin create`, `get`, `rm`, `status`) and
//! the role checks behind every admin call. It decides which documents may be written, read or
//! deleted and that all of a batch is acceptable before any is written; it never shows a stored
//! secret (a token's hash) and never writes what the Auth service owns (CAs, the cluster name).

use std::collections::BTreeMap;

use hop_ca::{CaKind, Identity};
use hop_rbac::{AccessChecker, Resource, Role};

use super::accounts::validate_username;
use super::{AuthServer, resources};
use crate::audit::EventKind;
use crate::error::AuthError;
use crate::records::{PUBLIC_KINDS, UserSecrets};

impl AuthServer {
    /// The roles of a user (missing roles are skipped: deny by default) and the checker for them,
    /// from the admission snapshot (current while the backend answers; the one kept while it
    /// cannot be reached, as admission decides).
    pub fn checker_for(
        &self,
        role_names: &[String],
        traits: &BTreeMap<String, Vec<String>>,
    ) -> Result<AccessChecker, AuthError> {
        let snap = self.admission_snapshot()?;
        let mut roles = Vec::with_capacity(role_names.len());
        for name in role_names {
            match snap.role(name) {
                Some(r) => roles.push(r.clone()),
                None => {
                    tracing::warn!(role = %name, "user refers to a role that does not exist; ignoring it")
                }
            }
        }
        AccessChecker::new(&roles, traits).map_err(AuthError::RoleEvaluation)
    }

    /// Parses and validates every document first; writes only if all are acceptable.
    pub fn create_resources(
        &self,
        yaml: &str,
        source: &str,
        force: bool,
        actor: &str,
        authorize: &dyn Fn(&str, &str) -> Result<(), AuthError>,
    ) -> Result<CreatedResources, AuthError> {
        let parsed = hop_rbac::parse_resources_with_warnings(yaml, source)
            .map_err(|e| AuthError::BadRequest(e.to_string()))?;
        let warnings: Vec<String> = parsed.warnings.iter().map(|w| w.to_string()).collect();
        let docs = parsed.resources;
        if docs.is_empty() {
            return Err(AuthError::BadRequest(format!(
                "{source}: no resources found"
            )));
        }
        for doc in &docs {
            let (kind, name) = (doc.kind(), doc.name());
            match doc {
                Resource::CertAuthority(_) => {
                    return Err(AuthError::BadRequest(format!(
                        "{source}: cert_authority/{name}: certificate authorities are created by the Auth service and cannot be imported"
                    )));
                }
                Resource::ClusterName(_) => {
                    return Err(AuthError::BadRequest(format!(
                        "{source}: cluster_name/{name}: the cluster name is fixed at first start"
                    )));
                }
                Resource::Token(_) => {
                    return Err(AuthError::BadRequest(format!(
                        "{source}: token: join tokens are made with `hop admin tokens add`, which shows the secret once and stores only its hash"
                    )));
                }
                Resource::User(u) => {
                    validate_username(name)?;
                    if name.starts_with(crate::bots::BOT_USER_PREFIX) {
                        return Err(AuthError::BadRequest(format!(
                            "{source}: user/{name}: names starting with {:?} are bots'; bots are made with `hop admin bots add`",
                            crate::bots::BOT_USER_PREFIX
                        )));
                    }
                    let (roles, traits) = resources::user_roles_and_traits(u);
                    super::accounts::reserved_trait_keys(&traits).map_err(|e| match e {
                        AuthError::BadRequest(m) => {
                            AuthError::BadRequest(format!("{source}: user/{name}: {m}"))
                        }
                        other => other,
                    })?;
                    for r in roles {
                        let defined_here = docs
                            .iter()
                            .any(|d| matches!(d, Resource::Role(x) if x.metadata.name == r));
                        if !defined_here && self.store.get::<Role>(&r)?.is_none() {
                            return Err(AuthError::BadRequest(format!(
                                "{source}: user/{name}: role {r:?} does not exist"
                            )));
                        }
                    }
                }
                _ => {}
            }
            authorize(kind, "create")?;
            let exists = self.store.get_raw(kind, name)?.is_some();
            if exists && !force {
                return Err(AuthError::AlreadyExists(format!(
                    "{kind}/{name} (use --force to overwrite)"
                )));
            }
            if exists {
                authorize(kind, "update")?;
            }
        }
        let mut written = Vec::new();
        for doc in &docs {
            if let Resource::Lock(lock) = doc {
                let mut lock = lock.clone();
                if lock.spec.created_by.is_empty() {
                    lock.spec.created_by = actor.to_string();
                }
                lock.spec.created.get_or_insert_with(|| self.now().into());
                self.store.upsert(&lock)?;
                self.after_lock_written(&lock, actor)?;
                written.push(format!("lock/{}", lock.metadata.name));
                continue;
            }
            resources::write(&self.store, doc, self.now())?;
            let id = format!("{}/{}", doc.kind(), doc.name());
            self.audit.emit_durable(
                self.event(EventKind::ResourceCreate, actor)
                    .field("resource", id.clone()),
            );
            written.push(id);
        }
        self.note_access_write();
        Ok(CreatedResources { written, warnings })
    }

    /// Resources of a kind as JSON documents (public parts only).
    pub fn get_resources(
        &self,
        kind: &str,
        name: Option<&str>,
    ) -> Result<Vec<serde_json::Value>, AuthError> {
        let kind = resources::canonical_kind(kind).ok_or_else(|| {
            AuthError::BadRequest(format!(
                "unknown kind {kind:?}; expected one of {}",
                PUBLIC_KINDS.join(", ")
            ))
        })?;
        if kind == "cert_authority" {
            let mut out = Vec::new();
            for k in CaKind::ALL {
                if name.is_none_or(|n| n == k.to_string()) {
                    let cas = self.authorities();
                    let set = cas.set(k);
                    out.push(resources::cert_authority_json(
                        set.signer(),
                        set.trusted().get(1),
                        set.rotation.phase.as_str(),
                    ));
                }
            }
            if out.is_empty() {
                return Err(AuthError::NotFound(format!(
                    "cert_authority/{}",
                    name.unwrap_or_default()
                )));
            }
            return Ok(out);
        }
        let docs = match name {
            Some(n) => match self.store.get_raw(kind, n)? {
                Some(v) => vec![v.value],
                None => return Err(AuthError::NotFound(format!("{kind}/{n}"))),
            },
            None => self
                .store
                .list_raw(kind)?
                .into_iter()
                .map(|v| v.value)
                .collect(),
        };
        Ok(docs.into_iter().map(|d| public_part(kind, d)).collect())
    }

    pub fn delete_resource(&self, kind: &str, name: &str, actor: &str) -> Result<(), AuthError> {
        let kind = resources::canonical_kind(kind).ok_or_else(|| {
            AuthError::BadRequest(format!(
                "unknown kind {kind:?}; expected one of {}",
                PUBLIC_KINDS.join(", ")
            ))
        })?;
        if matches!(
            kind,
            "cert_authority" | "cluster_name" | "cluster_auth_preference"
        ) {
            return Err(AuthError::BadRequest(format!(
                "{kind} resources cannot be deleted"
            )));
        }
        if !resources::delete(&self.store, kind, name)? {
            // `node/HOSTID` of an agent (not a registered OpenSSH node): the agent is voided by
            // a lock on its server id, so it is disconnected and can never renew.
            if kind == "node" && uuid::Uuid::parse_str(name).is_ok() {
                self.create_lock(
                    hop_rbac::LockTarget {
                        server_id: Some(name.to_string()),
                        ..Default::default()
                    },
                    &format!("agent removed by {actor}"),
                    None,
                    actor,
                )?;
                return Ok(());
            }
            return Err(AuthError::NotFound(format!("{kind}/{name}")));
        }
        self.note_access_write();
        if kind == "user" {
            self.store.delete::<UserSecrets>(name)?;
            self.audit
                .emit(self.event(EventKind::UserDelete, actor).field("name", name));
        } else {
            self.audit.emit_durable(
                self.event(EventKind::ResourceDelete, actor)
                    .field("resource", format!("{kind}/{name}")),
            );
        }
        Ok(())
    }

    /// Counts for `hop admin status`.
    pub fn counts(&self) -> Result<(u64, u64), AuthError> {
        Ok((
            self.store.list_raw("user")?.len() as u64,
            self.store.list_raw("role")?.len() as u64,
        ))
    }

    /// Whether the roles of an identity allow `verb` on `kind` in the admin API.
    pub fn authorize_rule(
        &self,
        identity: &Identity,
        kind: &str,
        verb: &str,
    ) -> Result<(), AuthError> {
        let checker = self.checker_for(&identity.roles, &identity.traits)?;
        checker.check_rule(kind, verb).map_err(|e| {
            self.metrics.admin_denied.inc();
            AuthError::Denied(e.to_string())
        })
    }
}

/// What `create_resources` wrote, and the fields it stored without acting on them.
#[derive(Debug, Clone, Default)]
pub struct CreatedResources {
    /// `kind/name` of each resource written.
    pub written: Vec<String>,
    /// One line per field stored but ignored, naming the file, line and field.
    pub warnings: Vec<String>,
}

/// What an operator may see of a stored document: a token without its secret's hash, an SSO
/// connector without its client secret or private key.
fn public_part(kind: &str, mut doc: serde_json::Value) -> serde_json::Value {
    if let Some(spec) = doc.get_mut("spec").and_then(|s| s.as_object_mut()) {
        match kind {
            "token" => {
                spec.remove("secret_hash");
            }
            "oidc" | "github" => {
                spec.remove("client_secret");
            }
            "saml" => {
                if let Some(kp) = spec
                    .get_mut("signing_key_pair")
                    .and_then(|k| k.as_object_mut())
                {
                    kp.remove("private_key");
                }
            }
            _ => {}
        }
    }
    doc
}
