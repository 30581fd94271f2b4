//! Database access decisions at Auth: route certificates for users (`hop db login`), client
//! certificates from the db CA for database agents (how an agent logs in to a database as the
//! database user, with no password), and server certificates for operators
//! (`hop admin auth sign --format db`).
//!
//! Who may call each one is checked by the gRPC layer (user, db agent, admin); what the
//! certificate may say is decided here.

use std::time::{Duration, SystemTime};

use hop_ca::{Identity, RouteToDatabase};

use super::error::AuthError;
use super::server::AuthServer;

/// Lifetime of the client certificates an agent presents to a database. Agents cache them and
/// ask again at two thirds of this.
pub const DB_USER_CERT_TTL: Duration = Duration::from_secs(60 * 60);
/// Default lifetime of a database server certificate.
pub const DB_SERVER_CERT_DEFAULT_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// Longest lifetime of a database server certificate; longer requests are clamped to it.
pub const DB_SERVER_CERT_MAX_TTL: Duration = Duration::from_secs(5 * 365 * 24 * 3600);

/// A database or database-user name as PostgreSQL and MySQL take it in a startup message: not
/// empty, at most 63 bytes (PostgreSQL's NAMEDATALEN - 1), no NUL or control characters.
pub fn validate_db_identifier(what: &str, v: &str) -> Result<(), AuthError> {
    if v.is_empty() || v.len() > 63 || v.chars().any(|c| c.is_control()) {
        return Err(AuthError::BadRequest(format!(
            "{what} {v:?}: expected 1 to 63 bytes without control characters"
        )));
    }
    Ok(())
}

/// A certificate issued for one database.
#[derive(Debug, Clone)]
pub struct DatabaseRoute {
    pub certificate_pem: String,
    pub expires: SystemTime,
    pub trusted_cas_pem: String,
}

impl AuthServer {
    /// Issues `caller` a user certificate routed to database `service`, as `db_user` on
    /// `db_name` (the defaults `hop db connect` uses; the proxy checks what the client actually
    /// asks for). It is refused for a locked user, and never outlives `caller_expires`.
    pub fn issue_database_route(
        &self,
        caller: &Identity,
        caller_expires: SystemTime,
        route: RouteToDatabase,
        tls_public_key_der: &[u8],
    ) -> Result<DatabaseRoute, AuthError> {
        let now = self.now();
        if caller.route_to_kube_cluster.is_some() {
            return Err(AuthError::Denied(
                "a certificate bound to a Kubernetes cluster cannot be used to get a database certificate; use your login certificate".into(),
            ));
        }
        if let Some(until) = self.user_locked_until(&caller.username)? {
            return Err(AuthError::Locked {
                user: caller.username.clone(),
                until: hop_api::timestamps::rfc3339(until),
            });
        }
        if route.service.is_empty() {
            return Err(AuthError::BadRequest(
                "name the database (`hop db ls` lists them)".into(),
            ));
        }
        validate_db_identifier("database user", &route.username)?;
        validate_db_identifier("database name", &route.database)?;
        // As long as the login it comes from, within what the caller's roles allow now.
        let ceiling = self
            .checker_for(&caller.roles, &caller.traits)?
            .max_session_ttl();
        let ttl = hop_ca::derived_ttl(now, caller_expires, ceiling).ok_or_else(|| {
            AuthError::Denied("your certificate has expired; run `hop login`".into())
        })?;
        let mut identity = caller.clone();
        identity.route_to_database = Some(route);
        let pem = self
            .authorities()
            .user
            .issue_user_x509(tls_public_key_der, &identity, now, ttl, &mut rand::rng())
            .map_err(|source| AuthError::UnusableKey {
                field: "tls_public_key",
                source,
            })?;
        self.metrics().certificates_issued.inc();
        Ok(DatabaseRoute {
            certificate_pem: pem,
            expires: now + ttl,
            trusted_cas_pem: self.client_cas_pem(),
        })
    }

    /// A client certificate from the db CA for `db_user`, valid [`DB_USER_CERT_TTL`], for a
    /// database agent to log in with.
    pub fn sign_database_user(
        &self,
        db_user: &str,
        tls_public_key_der: &[u8],
    ) -> Result<(String, SystemTime), AuthError> {
        validate_db_identifier("database user", db_user)?;
        let now = self.now();
        let pem = self
            .authorities()
            .db
            .issue_db_client_x509(
                tls_public_key_der,
                db_user,
                now,
                DB_USER_CERT_TTL,
                &mut rand::rng(),
            )
            .map_err(|source| AuthError::UnusableKey {
                field: "tls_public_key",
                source,
            })?;
        self.metrics().certificates_issued.inc();
        Ok((pem, now + DB_USER_CERT_TTL))
    }

    /// A server certificate from the db CA for `names` (host names or addresses of the database
    /// server), with the db CA certificate the server trusts client certificates from.
    pub fn sign_database_server(
        &self,
        names: &[String],
        ttl: Option<Duration>,
        tls_public_key_der: &[u8],
    ) -> Result<(String, String, SystemTime), AuthError> {
        if names.is_empty() {
            return Err(AuthError::BadRequest(
                "name the database host (--host), for example --host db.example.com".into(),
            ));
        }
        // A longer request is clamped, not refused; the answer carries the real expiry.
        let ttl = ttl
            .unwrap_or(DB_SERVER_CERT_DEFAULT_TTL)
            .min(DB_SERVER_CERT_MAX_TTL);
        let now = self.now();
        let pem = self
            .authorities()
            .db
            .issue_db_server_x509(tls_public_key_der, names, now, ttl, &mut rand::rng())
            .map_err(|e| AuthError::BadRequest(e.to_string()))?;
        self.metrics().certificates_issued.inc();
        let ca = hop_ca::export_pem(&self.public_authorities(hop_ca::CaKind::Db));
        Ok((pem, ca, now + ttl))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_identifiers() {
        assert!(validate_db_identifier("user", "alice").is_ok());
        assert!(validate_db_identifier("user", "Alice").is_ok());
        assert!(validate_db_identifier("user", "").is_err());
        assert!(validate_db_identifier("user", "a\0b").is_err());
        assert!(validate_db_identifier("user", &"x".repeat(64)).is_err());
    }
}
