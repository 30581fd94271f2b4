//! Application certificates at Auth (`hop apps login`): a user certificate routed to one
//! application (`route_to_app`), for `hop proxy app` and for clients such as curl that present
//! it to the proxy's app route.
//!
//! This module decides what such a certificate may say: the caller is admitted on the app route
//! (the one admission path: exists, not locked, not voided, current roles), holds no route-bound
//! certificate already, and has roles that allow the application's labels; the certificate never
//! outlives the caller's own, nor the roles' `max_session_ttl`.
//! Which applications exist is the caller's to look up (the connected agents' announcements);
//! this module never reaches for the inventory itself.

use std::time::Duration;

use hop_admission::{Refusal, Route};

use super::admission::Presented;
use super::error::AuthError;
use super::inventory::AppRoute;
use super::server::AuthServer;

/// A certificate issued for one application.
pub type AppCertificate = super::routed_certs::RoutedCertificate;

/// Where HTTP application `app` is served, from the proxy's public `host:port` (`web_addr`):
/// `app.host:port`. `None` for a TCP application (served through `hop proxy app` only).
pub fn public_addr(app: &AppRoute, web_addr: &str) -> Option<String> {
    let scheme = app.uri.split_once("://").map(|(s, _)| s)?;
    if !matches!(scheme, "http" | "https") {
        return None;
    }
    let (host, port) = match web_addr.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h, Some(p)),
        _ => (web_addr, None),
    };
    let host = host.trim_matches(['[', ']']);
    Some(match port {
        Some(p) => format!("{}.{host}:{p}", app.name),
        None => format!("{}.{host}", app.name),
    })
}

impl AuthServer {
    /// Issues the holder of `caller` a user certificate routed to `app`, for `ttl` or as long
    /// as allowed. The caller goes through admission on the app route (exists, not locked, not
    /// voided, current roles) and those roles must allow the app's labels; a refusal is audited.
    /// A route-bound caller is refused: route certificates derive only from a login.
    pub fn issue_app_certificate(
        &self,
        caller: &Presented<'_>,
        app: &AppRoute,
        ttl: Option<Duration>,
        tls_public_key_der: &[u8],
    ) -> Result<AppCertificate, AuthError> {
        let id = caller.identity;
        if let Some(refused) = super::routed_certs::route_bound(id) {
            return Err(refused);
        }
        let admitted = self
            .admit(caller, Route::App)
            .and_then(|a| match a.checker().check_app(&app.labels) {
                Ok(()) => Ok(a),
                Err(denied) => Err(Refusal::Denied {
                    name: id.username.clone(),
                    reason: format!(
                        "your roles do not allow application {:?} ({denied})",
                        app.name
                    ),
                }),
            })
            .map_err(|refusal| {
                self.audit_app_refusal(&id.username, &app.name, &refusal);
                AuthError::Denied(refusal.to_string())
            })?;
        let mut identity = id.clone();
        identity.route_to_app = Some(app.name.clone());
        let ceiling = admitted.checker().max_session_ttl();
        self.issue_routed(caller, &identity, ceiling, ttl, tls_public_key_der)
    }

    /// The audit event of a refused application certificate (rate-limited per identity, as
    /// every refusal of a verified identity).
    fn audit_app_refusal(&self, user: &str, app: &str, refusal: &Refusal) {
        tracing::info!(
            user,
            app,
            reason = refusal.code(),
            "application certificate refused"
        );
        self.audit_refusal(Route::App, user, refusal, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(uri: &str) -> AppRoute {
        AppRoute {
            name: "grafana".into(),
            uri: uri.into(),
            labels: Default::default(),
            host_id: "h".into(),
        }
    }

    #[test]
    fn public_addresses_of_http_apps() {
        let http = app("http://127.0.0.1:3000");
        assert_eq!(
            public_addr(&http, "proxy.test:3080").as_deref(),
            Some("grafana.proxy.test:3080")
        );
        assert_eq!(
            public_addr(&app("https://10.0.0.1"), "proxy.test").as_deref(),
            Some("grafana.proxy.test")
        );
        assert_eq!(public_addr(&app("tcp://127.0.0.1:7000"), "p:1"), None);
        assert_eq!(public_addr(&app("garbage"), "p:1"), None);
    }
}
