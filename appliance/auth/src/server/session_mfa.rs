//! Per-session MFA at Auth: when a role of the caller sets `require_session_mfa`, each new
//! session to one target (a node and login, a database service with its user and name, a kube
//! cluster, an application) needs a fresh WebAuthn assertion. This module owns the challenge
//! bound to the user and that one target, the check of the assertion answering it, and the
//! one-minute certificates marked for the target (`Identity::session_mfa`): an SSH and an
//! X.509 certificate for a node, an X.509 route certificate for a database, a kube cluster or
//! an application. Every try is audited (`mfa.session`) with its target. Whether a marked certificate opens a given
//! session is admission's question, not this module's.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use hop_ca::{Identity, SessionMfaTarget};
use serde_json::{Value, json};

use super::AuthServer;
use super::webauthn::{CHALLENGE_TTL, WebauthnAssertion, b64};
use crate::audit::EventKind;
use crate::error::AuthError;
use crate::records::{ChallengePurpose, UserSecrets};

/// How long a per-session MFA certificate is valid: long enough to start the session (which
/// then goes on after it).
pub const SESSION_MFA_TTL: Duration = Duration::from_secs(60);

/// A per-session MFA certificate pair for one target, valid [`SESSION_MFA_TTL`]: SSH (empty
/// unless the target is a node) and X.509, with the CAs a client verifies the proxy with.
#[derive(Debug, Clone)]
pub struct SessionMfaCertificates {
    /// The marked identity the certificates carry (what the web terminal presents for them).
    pub identity: Identity,
    /// When they were issued (their validity start without the clock-skew margin).
    pub issued_at: SystemTime,
    pub ssh_certificate: String,
    pub tls_certificate_pem: String,
    pub trusted_cas_pem: String,
    pub expires: SystemTime,
}

/// The challenge owner of a per-session MFA challenge: the user and the one target. A newline
/// is in no user name and in no target field ([`check_target_shape`]), and only a node's
/// second line holds an `@`, so no two targets (and no user's own challenges) share an owner.
fn session_scope(user: &str, target: &SessionMfaTarget) -> String {
    match target {
        SessionMfaTarget::Node { node, login } => format!("{user}\n{login}@{node}"),
        SessionMfaTarget::Database {
            db_service,
            db_user,
            db_name,
        } => format!("{user}\ndb\n{db_service}\n{db_user}\n{db_name}"),
        SessionMfaTarget::KubeCluster { kube_cluster } => format!("{user}\nkube\n{kube_cluster}"),
        SessionMfaTarget::App { app } => format!("{user}\napp\n{app}"),
    }
}

/// Every field of the target is named, without control characters (a database's user and
/// name as PostgreSQL and MySQL take them).
fn check_target_shape(target: &SessionMfaTarget) -> Result<(), AuthError> {
    let named = |what: &str, v: &str| {
        if v.is_empty() || v.chars().any(char::is_control) {
            Err(AuthError::BadRequest(format!(
                "a per-session MFA target names a {what} (without control characters)"
            )))
        } else {
            Ok(())
        }
    };
    match target {
        SessionMfaTarget::Node { node, login } => {
            named("node", node)?;
            named("login", login)
        }
        SessionMfaTarget::Database {
            db_service,
            db_user,
            db_name,
        } => {
            named("database", db_service)?;
            crate::databases::validate_db_identifier("database user", db_user)?;
            crate::databases::validate_db_identifier("database name", db_name)
        }
        SessionMfaTarget::KubeCluster { kube_cluster } => named("kube cluster", kube_cluster),
        SessionMfaTarget::App { app } => named("application", app),
    }
}

/// The caller's certificate may beget a certificate for `target`: a login certificate (never a
/// route or marked one), holding the node's login.
fn check_caller(identity: &Identity, target: &SessionMfaTarget) -> Result<(), AuthError> {
    if identity.session_mfa.is_some() || crate::routed_certs::route_bound(identity).is_some() {
        return Err(AuthError::Denied(
            "a per-session MFA certificate derives only from a login certificate".into(),
        ));
    }
    if let SessionMfaTarget::Node { login, .. } = target
        && !identity.logins.iter().any(|l| l == login)
    {
        return Err(AuthError::Denied(format!(
            "login {login:?} is not in your certificate"
        )));
    }
    Ok(())
}

/// The identity of the one-minute certificate: the caller's, marked for `target`, routed to
/// the database or kube cluster it names, with the node's login alone.
fn marked_identity(identity: &Identity, target: &SessionMfaTarget) -> Identity {
    let mut marked = identity.clone();
    marked.mfa_verified = true;
    match target {
        SessionMfaTarget::Node { login, .. } => marked.logins = vec![login.clone()],
        SessionMfaTarget::Database {
            db_service,
            db_user,
            db_name,
        } => {
            marked.route_to_database = Some(hop_ca::RouteToDatabase {
                service: db_service.clone(),
                username: db_user.clone(),
                database: db_name.clone(),
            });
        }
        SessionMfaTarget::KubeCluster { kube_cluster } => {
            marked.route_to_kube_cluster = Some(kube_cluster.clone());
        }
        SessionMfaTarget::App { app } => marked.route_to_app = Some(app.clone()),
    }
    marked.session_mfa = Some(target.clone());
    marked
}

/// The audit fields naming `target` (a node's as SSH sessions always had them).
fn target_fields(target: &SessionMfaTarget) -> Vec<(&'static str, String)> {
    let mut fields = match target {
        SessionMfaTarget::Node { node, login } => {
            vec![("node", node.clone()), ("login", login.clone())]
        }
        SessionMfaTarget::Database {
            db_service,
            db_user,
            db_name,
        } => vec![
            ("db_service", db_service.clone()),
            ("db_user", db_user.clone()),
            ("db_name", db_name.clone()),
        ],
        SessionMfaTarget::KubeCluster { kube_cluster } => {
            vec![("kube_cluster", kube_cluster.clone())]
        }
        SessionMfaTarget::App { app } => vec![("app", app.clone())],
    };
    fields.push(("target", target.describe()));
    fields
}

impl AuthServer {
    /// Whether a session of `identity` needs a fresh assertion (a role sets
    /// `require_session_mfa`), and if so the options of a challenge bound to the user and
    /// `target` (an assertion for it is good for that target alone).
    pub fn begin_session_mfa(
        &self,
        identity: &Identity,
        target: &SessionMfaTarget,
        remote: Option<SocketAddr>,
    ) -> Result<Option<Value>, AuthError> {
        let checker = self.checker_for(&identity.roles, &identity.traits)?;
        if !checker.require_session_mfa() {
            return Ok(None);
        }
        self.require_webauthn()?;
        check_target_shape(target)?;
        self.rate_limit(remote)?;
        let user = &identity.username;
        let allow: Vec<Value> = self
            .store
            .get::<UserSecrets>(user)?
            .map(|v| v.value.webauthn_devices)
            .unwrap_or_default()
            .iter()
            .map(|d| json!({"type": "public-key", "id": d.credential_id}))
            .collect();
        if allow.is_empty() {
            return Err(AuthError::BadRequest(
                "a role requires per-session MFA and you have no security key: add one with `hop mfa add` or on the web account page".into(),
            ));
        }
        let challenge =
            self.issue_challenge(&session_scope(user, target), ChallengePurpose::SessionMfa)?;
        Ok(Some(json!({"publicKey": {
            "challenge": b64(&challenge),
            "rpId": self.settings.webauthn.rp_id,
            "timeout": CHALLENGE_TTL.as_secs() * 1000,
            "allowCredentials": allow,
            "userVerification": "discouraged",
        }})))
    }

    /// Checks an assertion answering [`Self::begin_session_mfa`] for `target` and issues the
    /// one-minute certificates marked for it (from the caller's login certificate `identity`,
    /// valid until `expires`; never past it). Audited (`mfa.session` with the target) either
    /// way.
    pub fn issue_session_mfa(
        &self,
        (identity, expires): (&Identity, SystemTime),
        target: &SessionMfaTarget,
        assertion: &WebauthnAssertion,
        keys: (&str, &[u8]),
        remote: Option<SocketAddr>,
    ) -> Result<SessionMfaCertificates, AuthError> {
        let issued = self.check_and_issue_session_mfa((identity, expires), target, assertion, keys);
        let mut event = self
            .event(EventKind::MfaSession, &identity.username)
            .remote(remote)
            .field("kind", "webauthn");
        for (name, value) in target_fields(target) {
            event = event.field(name, value);
        }
        match &issued {
            Ok(c) => self
                .audit
                .emit_durable(event.field("expires", hop_api::timestamps::rfc3339(c.expires))),
            Err(e) => self
                .audit
                .emit_durable(event.failed(EventKind::MfaSession, e.to_string())),
        }
        issued
    }

    /// Checks an assertion answering [`Self::begin_session_mfa`] for `target` and returns the
    /// caller's identity marked for it, without a certificate: for a session the proxy itself
    /// keeps (an application opened in the browser), started at once. Audited (`mfa.session`
    /// with the target) either way.
    pub fn verify_session_mfa(
        &self,
        identity: &Identity,
        target: &SessionMfaTarget,
        assertion: &WebauthnAssertion,
        remote: Option<SocketAddr>,
    ) -> Result<Identity, AuthError> {
        let checked = check_target_shape(target)
            .and_then(|()| check_caller(identity, target))
            .and_then(|()| self.check_session_assertion(&identity.username, target, assertion));
        let mut event = self
            .event(EventKind::MfaSession, &identity.username)
            .remote(remote)
            .field("kind", "webauthn");
        for (name, value) in target_fields(target) {
            event = event.field(name, value);
        }
        match &checked {
            Ok(()) => self.audit.emit_durable(event),
            Err(e) => self
                .audit
                .emit_durable(event.failed(EventKind::MfaSession, e.to_string())),
        }
        checked.map(|()| marked_identity(identity, target))
    }

    /// Audits (`mfa.session`, failed) a per-session MFA try for `target` that ended before an
    /// assertion reached [`Self::issue_session_mfa`]: no challenge could be given (no key, a
    /// cluster without WebAuthn), or the browser gave no assertion (the user cancelled).
    pub fn audit_session_mfa_failure(
        &self,
        user: &str,
        target: &SessionMfaTarget,
        remote: Option<SocketAddr>,
        reason: &str,
    ) {
        let mut event = self
            .event(EventKind::MfaSession, user)
            .remote(remote)
            .field("kind", "webauthn");
        for (name, value) in target_fields(target) {
            event = event.field(name, value);
        }
        // Queued, not waited on: the proxy calls this on its async threads.
        self.audit
            .emit(event.failed(EventKind::MfaSession, reason.to_string()));
    }

    fn check_and_issue_session_mfa(
        &self,
        (identity, expires): (&Identity, SystemTime),
        target: &SessionMfaTarget,
        assertion: &WebauthnAssertion,
        keys: (&str, &[u8]),
    ) -> Result<SessionMfaCertificates, AuthError> {
        check_target_shape(target)?;
        check_caller(identity, target)?;
        self.check_session_assertion(&identity.username, target, assertion)?;
        let now = self.now();
        let ttl = hop_ca::derived_ttl(now, expires, SESSION_MFA_TTL).ok_or_else(|| {
            AuthError::Denied("your certificate has expired; run `hop login`".into())
        })?;
        self.sign_marked(&marked_identity(identity, target), keys, now, ttl)
    }

    /// The assertion answers a challenge issued to `user` for `target` (used up here), from
    /// one of the user's keys; the key's counter is stored.
    fn check_session_assertion(
        &self,
        user: &str,
        target: &SessionMfaTarget,
        assertion: &WebauthnAssertion,
    ) -> Result<(), AuthError> {
        let secrets = self.store.get::<UserSecrets>(user)?.map(|v| v.value);
        let used = self
            .check_webauthn_assertion_scoped(
                user,
                &session_scope(user, target),
                secrets.as_ref(),
                assertion,
                ChallengePurpose::SessionMfa,
            )
            .map_err(|reason| AuthError::LoginRefused { reason })?;
        let _guard = self
            .login_state
            .lock()
            .map_err(|_| AuthError::Poisoned("login state lock"))?;
        self.store_webauthn_use(user, &used)
    }

    /// Signs the marked identity: an SSH certificate for a node's session, and always the
    /// X.509 one (the proxy's, or the route certificate of a database or a kube cluster).
    fn sign_marked(
        &self,
        marked: &Identity,
        (ssh_public_key, tls_public_key_der): (&str, &[u8]),
        now: SystemTime,
        ttl: Duration,
    ) -> Result<SessionMfaCertificates, AuthError> {
        let cas = self.authorities();
        let mut rng = rand::rng();
        let ssh_certificate = match marked.session_mfa {
            Some(SessionMfaTarget::Node { .. }) => cas
                .user
                .issue_user_ssh(ssh_public_key, marked, now, ttl, &mut rng)
                .map_err(|source| AuthError::UnusableKey {
                    field: "ssh_public_key",
                    source,
                })?,
            _ => String::new(),
        };
        let tls_certificate_pem = cas
            .user
            .issue_user_x509(tls_public_key_der, marked, now, ttl, &mut rng)
            .map_err(|source| AuthError::UnusableKey {
                field: "tls_public_key",
                source,
            })?;
        self.metrics().certificates_issued.inc();
        Ok(SessionMfaCertificates {
            identity: marked.clone(),
            issued_at: now,
            ssh_certificate,
            tls_certificate_pem,
            trusted_cas_pem: self.client_cas_pem(),
            expires: now + ttl,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_of_different_targets_never_meet() {
        let node = SessionMfaTarget::Node {
            node: "pg".into(),
            login: "db".into(),
        };
        let db = SessionMfaTarget::Database {
            db_service: "pg".into(),
            db_user: "db".into(),
            db_name: "db".into(),
        };
        let kube = SessionMfaTarget::KubeCluster {
            kube_cluster: "pg".into(),
        };
        let scopes = [&node, &db, &kube].map(|t| session_scope("u", t));
        assert_eq!(scopes[0], "u\ndb@pg");
        assert_ne!(scopes[1], scopes[2]);
        assert_ne!(scopes[0], scopes[1]);
        // A field with a newline could forge another target's scope: refused.
        let forged = SessionMfaTarget::KubeCluster {
            kube_cluster: "pg\ndb".into(),
        };
        assert!(check_target_shape(&forged).is_err());
    }

    #[test]
    fn a_database_mark_routes_the_certificate_to_that_database() {
        let caller = Identity {
            username: "mona".into(),
            logins: vec!["mona".into(), "root".into()],
            ..Identity::default()
        };
        let db = SessionMfaTarget::Database {
            db_service: "pg".into(),
            db_user: "mona".into(),
            db_name: "orders".into(),
        };
        let marked = marked_identity(&caller, &db);
        let route = marked.route_to_database.clone().unwrap();
        assert_eq!(
            (
                route.service.as_str(),
                route.username.as_str(),
                route.database.as_str()
            ),
            ("pg", "mona", "orders")
        );
        assert!(marked.mfa_verified);
        assert_eq!(marked.session_mfa, Some(db.clone()));
        // A marked or routed certificate does not beget another.
        assert!(check_caller(&marked, &db).is_err());
        assert!(check_caller(&caller, &db).is_ok());
    }
}
