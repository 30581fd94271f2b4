//! `POST /web/api/apps/{name}/launch`: the web UI's half of the browser flow into a web
//! application (`routes::app_http::flow`). The launch page posts the state the application's
//! host gave the browser; Auth decides the launch (admission and the roles' `app_labels` for
//! the application as announced) and issues a one-time code bound to the user, the
//! application and that state; the answer is the callback address on the application's host
//! that the page navigates to.
//!
//! Under a role's `require_session_mfa` the first post is answered with the options of a
//! challenge for that application (`{"mfa": …}`, Auth's `begin_session_mfa`); the page posts
//! again with the security key's assertion, which Auth checks (`verify_session_mfa`, audited
//! `mfa.session`), and the launch goes on with the session's identity marked for that
//! application. The application session then lives as long as the web session's certificate,
//! as an unmarked one does: the assertion is fresh for starting it (the code is issued at
//! once), and every request of the session is admitted only for that application.
//!
//! The call passes [`WebRoom::guard`] (session, CSRF token, origin, admission on the `web`
//! route) and acts only as the session's own user, with the identity of its login.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::post;
use hop_auth::apps::{AppFlowError, AppGrant};
use hop_auth::error::AuthError;
use hop_auth::server::WebauthnAssertion;
use hop_ca::SessionMfaTarget;
use serde::Deserialize;

use super::WebRoom;
use super::admin::{EditorError, Form, blocking, form, ok};
use super::guard::{Renew, WebRequest};
use crate::routes::app_http::flow::CALLBACK_PATH;
use crate::routes::app_http::{PublicHost, is_http_app};

/// The launch route, merged into the web API router.
pub(crate) fn routes() -> Router<Arc<WebRoom>> {
    Router::new().route("/web/api/apps/{name}/launch", post(launch))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LaunchForm {
    state: String,
    /// The security key's answer to the per-session MFA challenge, on the second post.
    #[serde(default)]
    webauthn: Option<WebauthnAssertion>,
}

/// Whether a state is one the application route makes (64 hex digits).
fn plausible_state(state: &str) -> bool {
    state.len() == 64 && state.bytes().all(|b| b.is_ascii_hexdigit())
}

async fn launch(
    State(room): State<Arc<WebRoom>>,
    Path(name): Path<String>,
    req: WebRequest,
    body: Form<LaunchForm>,
) -> Result<Response, EditorError> {
    let c = room.guard(&req, Renew::Yes)?;
    let form = form(body)?;
    let bad = |m: String| EditorError::Auth(AuthError::BadRequest(m));
    if !plausible_state(&form.state) {
        return Err(bad(
            "the launch state is not one the application gave; open the application's address again"
                .into(),
        ));
    }
    let Some(app) = room.inventory.apps().into_iter().find(|a| a.name == name) else {
        return Err(EditorError::Auth(AuthError::NotFound(format!(
            "application {name:?} is not available: no connected agent serves it"
        ))));
    };
    let public = PublicHost::parse(room.auth.web_addr());
    if !public.is_app_label(&app.name) {
        return Err(bad(format!(
            "application {name:?} cannot be opened in a browser: its name is not a DNS label"
        )));
    }
    if !is_http_app(&app.uri) {
        return Err(bad(format!(
            "application {name:?} is a TCP application: use `hop proxy app {name}`"
        )));
    }
    let cert = &c.session.cert;
    let target = SessionMfaTarget::App {
        app: app.name.clone(),
    };
    let identity =
        match session_mfa(&room, &cert.identity, &target, form.webauthn, c.remote).await? {
            Marked::Ask(options) => {
                let asked = serde_json::json!({ "mfa": options, "target": target.describe() });
                return Ok(ok(asked));
            }
            Marked::Identity(id) => id,
        };
    let grant = AppGrant {
        identity: Arc::new(identity),
        issued_at: cert.issued_at,
        expires: cert.expires,
        app: app.name.clone(),
        app_uri: app.uri.clone(),
    };
    let code = room
        .auth
        .launch_app(grant, &app, &form.state, Some(c.remote))
        .map_err(|e| match e {
            AppFlowError::Refused(r) => EditorError::Auth(AuthError::Denied(r.to_string())),
            AppFlowError::Busy => EditorError::Auth(AuthError::Internal(e.to_string())),
            other => bad(other.to_string()),
        })?;
    let redirect = format!(
        "{}{CALLBACK_PATH}?code={code}&state={}",
        public.app_origin(&app.name),
        form.state
    );
    Ok(ok(serde_json::json!({ "redirect": redirect })))
}

/// What per-session MFA says of a launch.
enum Marked {
    /// A challenge the page must answer first.
    Ask(serde_json::Value),
    /// The identity the application session carries: the web session's, or marked for the
    /// application after the assertion.
    Identity(hop_ca::Identity),
}

/// Without an assertion: Auth's challenge when a role requires one, else the session's own
/// identity. With one: Auth checks it (audited) and marks the identity for `target`.
async fn session_mfa(
    room: &WebRoom,
    identity: &hop_ca::Identity,
    target: &SessionMfaTarget,
    assertion: Option<WebauthnAssertion>,
    remote: std::net::SocketAddr,
) -> Result<Marked, EditorError> {
    let (id, t) = (identity.clone(), target.clone());
    match assertion {
        None => {
            let asked = blocking(room, move |a| a.begin_session_mfa(&id, &t, Some(remote))).await?;
            Ok(match asked {
                Some(options) => Marked::Ask(options),
                None => Marked::Identity(identity.clone()),
            })
        }
        Some(assertion) => {
            let marked = blocking(room, move |a| {
                a.verify_session_mfa(&id, &t, &assertion, Some(remote))
            })
            .await?;
            Ok(Marked::Identity(marked))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_states_the_route_makes_are_taken() {
        let s = crate::routes::app_http::flow::new_state();
        assert!(super::plausible_state(&s));
        assert!(!super::plausible_state("abc"));
        assert!(!super::plausible_state(&format!("{}x", &s[1..])));
    }
}
