//! Security keys (WebAuthn) in the web UI: the challenge a login answers with a key
//! (`POST /web/api/login/webauthn`, before any session: it checks the request's origin itself,
//! as the login does; Auth rate limits it per address), and the account page's keys: list,
//! the options for `navigator.credentials.create`, a challenge proving a key is at hand, add,
//! remove. Adding or removing needs the account password and a fresh proof from one of the
//! user's devices (a one-time code or a key's assertion), which Auth checks; every account call
//! passes [`WebRoom::guard`] and acts only on the session's own user. The login itself is
//! `POST /web/api/login` with a `webauthn` assertion in place of the one-time code. A passkey
//! logs in without a password: `POST /web/api/login/passkey` (a challenge bound to no user),
//! then `.../passkey/finish` with the assertion and the user handle the authenticator gave.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hop_admission::{Refusal, Route};
use hop_api::timestamps::rfc3339;
use hop_auth::server::{
    ChallengePurpose, LoginClient, LoginRequest, PasskeyAssertion, SecondFactor, WebauthnAssertion,
    WebauthnRegistration,
};
use serde::{Deserialize, Serialize};

use super::WebRoom;
use super::admin::{EditorError, Form, blocking, form, ok, plain_name};
use super::guard::{Renew, WebRequest, cross_origin};

/// The security-key routes, merged into the web API router.
pub(crate) fn routes() -> Router<Arc<WebRoom>> {
    Router::new()
        .route("/web/api/login/webauthn", post(login_challenge))
        .route("/web/api/login/passkey", post(passkey_challenge))
        .route("/web/api/login/passkey/finish", post(passkey_login))
        .route("/web/api/account/webauthn", get(list).post(add))
        .route("/web/api/account/webauthn/register", post(register_options))
        .route("/web/api/account/webauthn/challenge", post(proof_challenge))
        .route("/web/api/account/webauthn/{id}/remove", post(remove))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginChallengeForm {
    user: String,
}

/// `POST /web/api/login/webauthn`: the options for `navigator.credentials.get` at login.
async fn login_challenge(
    State(room): State<Arc<WebRoom>>,
    req: WebRequest,
    body: Form<LoginChallengeForm>,
) -> Result<Response, EditorError> {
    if let Some(refused) = refuse_cross_site(&room, &req) {
        return Ok(refused);
    }
    let form = form(body)?;
    let remote = req.remote;
    let options = blocking(&room, move |a| {
        a.begin_webauthn_assertion(form.user.trim(), ChallengePurpose::Login, Some(remote))
    })
    .await?;
    Ok(ok(options))
}

/// The cross-site refusal of a request made before any session, or `None`.
fn refuse_cross_site(room: &WebRoom, req: &WebRequest) -> Option<Response> {
    let reason = cross_origin(&req.headers, req.authority.as_deref())?;
    let refusal = Refusal::CrossSite { reason };
    room.auth
        .audit_unverified_refusal(Route::Web, &refusal, Some(req.remote));
    let body = serde_json::json!({ "error": refusal.to_string(), "code": refusal.code() });
    Some((StatusCode::FORBIDDEN, axum::Json(body)).into_response())
}

/// `POST /web/api/login/passkey`: the options for `navigator.credentials.get` of a passkey.
async fn passkey_challenge(
    State(room): State<Arc<WebRoom>>,
    req: WebRequest,
) -> Result<Response, EditorError> {
    if let Some(refused) = refuse_cross_site(&room, &req) {
        return Ok(refused);
    }
    let remote = req.remote;
    Ok(ok(blocking(&room, move |a| {
        a.begin_passwordless(Some(remote))
    })
    .await?))
}

/// `POST /web/api/login/passkey/finish`: a passkey's assertion for a web session.
async fn passkey_login(
    State(room): State<Arc<WebRoom>>,
    req: WebRequest,
    body: Form<PasskeyAssertion>,
) -> Result<Response, EditorError> {
    if let Some(refused) = refuse_cross_site(&room, &req) {
        return Ok(refused);
    }
    let passkey = form(body)?;
    let Ok((ssh, tls)) = super::api::login_keys() else {
        return Err(EditorError::Auth(hop_auth::AuthError::Internal(
            "cannot generate keys".into(),
        )));
    };
    let (ssh_public, tls_public) = (ssh.public_openssh.clone(), tls.public_spki_der.clone());
    let remote = req.remote;
    let issued = blocking(&room, move |a| {
        a.login_passwordless(
            &LoginRequest {
                username: "",
                password: "",
                totp_code: "",
                ssh_public_key: &ssh_public,
                tls_public_key_der: &tls_public,
                ttl: None,
                remote: Some(remote),
                client: LoginClient::Web,
            },
            &passkey,
        )
    })
    .await;
    match issued {
        Ok(certs) => Ok(super::api::start_session(&room, certs, ssh, tls)),
        Err(EditorError::Auth(e)) => Ok(super::api::login_refused(&e)),
        Err(other) => Err(other),
    }
}

#[derive(Serialize)]
struct KeyView {
    id: String,
    name: String,
    added: String,
    last_used: Option<String>,
    aaguid: String,
}

/// `GET /web/api/account/webauthn`: the user's security keys, and whether the cluster takes
/// them.
async fn list(State(room): State<Arc<WebRoom>>, req: WebRequest) -> Result<Response, EditorError> {
    let c = room.guard(&req, Renew::Yes)?;
    let user = c.session.cert.identity.username.clone();
    let keys = blocking(&room, move |a| a.webauthn_devices(&user)).await?;
    let keys: Vec<KeyView> = keys
        .into_iter()
        .map(|d| KeyView {
            id: d.id,
            name: d.name,
            added: rfc3339(d.added),
            last_used: d.last_used.map(rfc3339),
            aaguid: d.aaguid,
        })
        .collect();
    let enabled = matches!(room.auth.second_factor(), "on" | "optional" | "webauthn");
    Ok(ok(serde_json::json!({ "keys": keys, "enabled": enabled })))
}

/// `POST /web/api/account/webauthn/register`: the options for `navigator.credentials.create`.
async fn register_options(
    State(room): State<Arc<WebRoom>>,
    req: WebRequest,
) -> Result<Response, EditorError> {
    let c = room.guard(&req, Renew::Yes)?;
    let user = c.session.cert.identity.username.clone();
    Ok(ok(blocking(&room, move |a| {
        a.begin_webauthn_registration(&user)
    })
    .await?))
}

/// `POST /web/api/account/webauthn/challenge`: the options for `navigator.credentials.get`
/// proving a key is at hand for an account change.
async fn proof_challenge(
    State(room): State<Arc<WebRoom>>,
    req: WebRequest,
) -> Result<Response, EditorError> {
    let c = room.guard(&req, Renew::Yes)?;
    let (user, remote) = (c.session.cert.identity.username.clone(), c.remote);
    Ok(ok(blocking(&room, move |a| {
        a.begin_webauthn_assertion(&user, ChallengePurpose::Manage, Some(remote))
    })
    .await?))
}

/// The password and proof an account change carries.
#[derive(Deserialize)]
struct Reauth {
    password: String,
    /// A code from a one-time-code device the user has (empty: none).
    #[serde(default)]
    existing_code: String,
    /// Or an assertion of one of the user's keys (answering `.../challenge`).
    #[serde(default)]
    proof: Option<WebauthnAssertion>,
}

impl Reauth {
    fn second_factor(&self) -> SecondFactor<'_> {
        match &self.proof {
            Some(a) => SecondFactor::Webauthn(a),
            None => SecondFactor::Otp(self.existing_code.trim()),
        }
    }
}

#[derive(Deserialize)]
struct NewKey {
    #[serde(flatten)]
    reauth: Reauth,
    name: String,
    response: WebauthnRegistration,
}

/// `POST /web/api/account/webauthn`: registers the key that answered `.../register`.
async fn add(
    State(room): State<Arc<WebRoom>>,
    req: WebRequest,
    body: Form<NewKey>,
) -> Result<Response, EditorError> {
    let c = room.guard(&req, Renew::Yes)?;
    let form = form(body)?;
    let (user, remote) = (c.session.cert.identity.username.clone(), c.remote);
    let key = blocking(&room, move |a| {
        a.add_webauthn_device(
            &user,
            (&form.reauth.password, form.reauth.second_factor()),
            &form.name,
            &form.response,
            Some(remote),
        )
    })
    .await?;
    Ok(ok(serde_json::json!({ "id": key.id, "name": key.name })))
}

/// `POST /web/api/account/webauthn/{id}/remove`.
async fn remove(
    State(room): State<Arc<WebRoom>>,
    Path(id): Path<String>,
    req: WebRequest,
    body: Form<Reauth>,
) -> Result<Response, EditorError> {
    plain_name(&id)?;
    let c = room.guard(&req, Renew::Yes)?;
    let form = form(body)?;
    let (user, remote) = (c.session.cert.identity.username.clone(), c.remote);
    blocking(&room, move |a| {
        a.remove_webauthn_device(
            &user,
            (&form.password, form.second_factor()),
            &id,
            Some(remote),
        )
    })
    .await?;
    Ok(ok(serde_json::json!({})))
}
