//! Web application access: what lets a browser reach `https://NAME.PROXY` as a user.
//!
//! This room owns the launch codes ([`codes`]: one-time, 60 s, bound to user, application and
//! the browser's state), the application sessions they are exchanged for ([`sessions`]: a random
//! 32-byte secret in the browser's cookie, kept here only as its SHA-256, with an expiry no later
//! than the login behind it and at most [`SESSION_CAP`]), and the identity assertion each
//! session carries to the application ([`claims`]: an ES256 JWT signed once per session with the
//! jwt CA). [`AuthServer::launch_app`] is where Auth decides a launch: admission and the roles'
//! `app_labels` for the application as announced.
//!
//! Sessions live in memory only (as web sessions do): a proxy restart ends them, and the browser
//! goes through the launch again. Each request's admission (lock, deletion, role change, labels)
//! is the route's, from the admission snapshot with the session's identity; this room never reads
//! a clock (callers pass `now`) and never logs a secret.

pub mod claims;
pub mod codes;
pub mod sessions;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hop_admission::{Refusal, Route};
use hop_ca::Identity;

use crate::admission::Presented;
use crate::inventory::AppRoute;
use crate::server::AuthServer;

pub use codes::LaunchCodes;
pub use sessions::{AppSession, AppSessions, NewAppSession, SessionLookup};

/// The longest an application session lives, whatever the login behind it allows.
pub const SESSION_CAP: Duration = Duration::from_secs(8 * 3600);

/// Who launches which application, with what login: what a launch code stands for.
#[derive(Debug, Clone)]
pub struct AppGrant {
    /// The identity of the login (web session or certificate) that launched.
    pub identity: Arc<Identity>,
    /// When that login's certificate was issued: lock and role-change stamps void sessions
    /// derived from a certificate issued before them.
    pub issued_at: SystemTime,
    /// When that login's certificate expires: no session derived from it outlives it.
    pub expires: SystemTime,
    /// The application's name.
    pub app: String,
    /// The application's announced uri (the JWT's audience).
    pub app_uri: String,
}

impl AppGrant {
    /// The grant as admission sees it, for its application (a per-session MFA mark must name
    /// it).
    pub fn presented(&self) -> Presented<'_> {
        Presented {
            identity: &self.identity,
            issued_at: self.issued_at,
            expires: self.expires,
            login: None,
            target: Some(hop_admission::SessionTarget::App { app: &self.app }),
        }
    }
}

/// Why a launch or its code exchange failed. The words reach the user's browser.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppFlowError {
    /// Admission or the roles refused the launch.
    #[error("{0}")]
    Refused(#[from] Refusal),
    /// The code is not one this proxy issued, was used already, or is older than its minute.
    #[error("the launch code is unknown, already used or expired; open the application again")]
    UnknownCode,
    /// The code was issued for another application, or for another browser's state.
    #[error(
        "the launch code was issued for another application or browser; open the application again"
    )]
    Mismatch,
    /// The login behind the launch expired.
    #[error("the login behind this launch has expired; log in again")]
    LoginExpired,
    /// Too many launches are pending.
    #[error("too many application launches are pending; try again in a minute")]
    Busy,
    /// The jwt CA cannot sign.
    #[error("application sessions cannot be signed: {0}")]
    Signing(String),
}

/// Everything web application access keeps: pending launch codes, live sessions, the JWT signer.
#[derive(Debug)]
pub struct AppAccess {
    pub codes: LaunchCodes,
    pub sessions: AppSessions,
    /// Replaced when the jwt CA's signing key changes (a rotation step).
    signer: std::sync::RwLock<Result<Arc<hop_ca::jwt::JwtSigner>, String>>,
    cluster: String,
}

impl AppAccess {
    /// Web application access for `cluster`, signing with its jwt CA.
    pub fn new(cluster: &str, jwt_ca: &hop_ca::CertAuthority) -> Self {
        Self {
            codes: LaunchCodes::default(),
            sessions: AppSessions::default(),
            signer: std::sync::RwLock::new(Self::signer_of(jwt_ca)),
            cluster: cluster.to_string(),
        }
    }

    /// Exchanges launch code `code` for `app` from the browser holding `state`, once, and starts
    /// the session (its JWT signed now).
    pub fn redeem(
        &self,
        code: &str,
        app: &str,
        state: &str,
        now: SystemTime,
    ) -> Result<NewAppSession, AppFlowError> {
        let grant = self.codes.redeem(code, app, state, now)?;
        self.start(grant, now)
    }

    /// Starts a session for `grant` (a redeemed code, or a certificate naming the application).
    pub fn start(&self, grant: AppGrant, now: SystemTime) -> Result<NewAppSession, AppFlowError> {
        if now >= grant.expires {
            return Err(AppFlowError::LoginExpired);
        }
        let signer = self
            .signer
            .read()
            .map_err(|_| AppFlowError::Signing("signer lock poisoned".into()))?
            .clone()
            .map_err(AppFlowError::Signing)?;
        let expires = grant.expires.min(now + SESSION_CAP);
        let claims = claims::claims(&self.cluster, &grant, now, expires);
        let jwt = signer.sign(&claims);
        Ok(self.sessions.insert(grant, jwt, now, expires))
    }

    /// [`AppSessions::sweep`], for tests that drive the clock.
    #[cfg(test)]
    fn sweep_for_test(
        &self,
        now: SystemTime,
        refused: impl Fn(&AppSession) -> Option<hop_admission::Refusal>,
    ) -> Vec<(Arc<AppSession>, String)> {
        self.sessions.sweep(now, refused)
    }

    fn signer_of(jwt_ca: &hop_ca::CertAuthority) -> Result<Arc<hop_ca::jwt::JwtSigner>, String> {
        hop_ca::jwt::JwtSigner::from_authority(jwt_ca)
            .map(Arc::new)
            .map_err(|e| e.to_string())
    }

    /// Signs new sessions' assertions with `jwt_ca` from now on (a rotation step changed it);
    /// sessions already started keep the assertion they were given.
    pub fn use_jwt_ca(&self, jwt_ca: &hop_ca::CertAuthority) {
        let fresh = Self::signer_of(jwt_ca);
        match self.signer.write() {
            Ok(mut g) => *g = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
    }

    /// The JSON Web Key Set applications verify assertions with: every trusted jwt key (two
    /// during a rotation, so that assertions signed by either verify).
    pub fn jwks(&self, trusted: &[hop_ca::CaPublic]) -> serde_json::Value {
        hop_ca::jwt::jwks(trusted)
    }
}

impl AuthServer {
    /// Web application access (launch codes, sessions, JWTs).
    pub fn apps(&self) -> &AppAccess {
        &self.app_access
    }

    /// The JSON Web Key Set of the jwt CA (`/.well-known/jwks.json`).
    pub fn jwks(&self) -> serde_json::Value {
        self.app_access
            .jwks(self.authorities().trusted(hop_ca::CaKind::Jwt))
    }

    /// Decides a launch of `app` (as announced) by the holder of `grant`'s login from the
    /// browser holding `state`: admission on the application route and the roles'
    /// `app_labels`; then a one-time code bound to the user, the application and `state`. A
    /// refusal is audited (`app.session.start`, failed).
    pub fn launch_app(
        &self,
        grant: AppGrant,
        app: &AppRoute,
        state: &str,
        remote: Option<std::net::SocketAddr>,
    ) -> Result<String, AppFlowError> {
        let decided = self
            .admit(&grant.presented(), Route::App)
            .and_then(|admitted| {
                admitted
                    .checker()
                    .check_app(&app.labels)
                    .map_err(|denied| Refusal::Denied {
                        name: grant.identity.username.clone(),
                        reason: denied.to_string(),
                    })
            });
        if let Err(refusal) = decided {
            self.audit_refusal(Route::App, &grant.identity.username, &refusal, remote);
            return Err(refusal.into());
        }
        self.app_access.codes.issue(grant, state, self.now())
    }
}

#[cfg(test)]
mod tests;
