//! `/web/api/account`: every user's own account page. Changing the password needs the old
//! password and a one-time code, checked by Auth as a login checks them (rate limit, failure
//! counter, lockout; audited `user.password_change`); the user's other web sessions are kept,
//! as Teleport keeps them (an administrator's reset or lock ends them). One-time-code devices
//! are listed without their secrets; adding one shows a fresh secret once (its QR code and
//! `otpauth://` URI) and needs the account password, the device's first code and a fresh proof
//! from a device the user has (a code, or a key's assertion); removing one needs the password
//! and such a proof, and never removes the last (audited `mfa.add`, `mfa.delete`).
//!
//! Every call passes [`WebRoom::guard`] and acts only on the session's own user (the name is
//! never taken from the request). It decides nothing itself: Auth does.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use hop_api::timestamps::rfc3339;
use serde::{Deserialize, Serialize};

use super::WebRoom;
use super::admin::{EditorError, Form, blocking, form, ok, plain_name};
use super::guard::{Renew, WebRequest};

/// The account routes, merged into the web API router.
pub(crate) fn routes() -> Router<Arc<WebRoom>> {
    Router::new()
        .route("/web/api/account", get(account))
        .route("/web/api/account/password", post(change_password))
        .route("/web/api/account/devices/enroll", post(enroll))
        .route("/web/api/account/devices", post(add_device))
        .route("/web/api/account/devices/{id}/remove", post(remove_device))
}

#[derive(Serialize)]
struct DeviceView {
    id: String,
    name: String,
    added: Option<String>,
}

/// `GET /web/api/account`: the user and their one-time-code devices.
async fn account(
    State(room): State<Arc<WebRoom>>,
    req: WebRequest,
) -> Result<Response, EditorError> {
    let c = room.guard(&req, Renew::Yes)?;
    let user = c.session.cert.identity.username.clone();
    let name = user.clone();
    let devices = blocking(&room, move |a| a.otp_devices(&name)).await?;
    let devices: Vec<DeviceView> = devices
        .into_iter()
        .map(|d| DeviceView {
            id: d.id,
            name: d.name,
            added: d.added.map(rfc3339),
        })
        .collect();
    Ok(ok(serde_json::json!({
        "user": user,
        "devices": devices,
        "second_factor_required": room.auth.second_factor() != "off",
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordForm {
    old_password: String,
    otp: String,
    new_password: String,
}

/// `POST /web/api/account/password`.
async fn change_password(
    State(room): State<Arc<WebRoom>>,
    req: WebRequest,
    body: Form<PasswordForm>,
) -> Result<Response, EditorError> {
    let c = room.guard(&req, Renew::Yes)?;
    let form = form(body)?;
    let (user, remote) = (c.session.cert.identity.username.clone(), c.remote);
    blocking(&room, move |a| {
        a.change_password(
            &user,
            &form.old_password,
            form.otp.trim(),
            &form.new_password,
            Some(remote),
        )
    })
    .await?;
    Ok(ok(serde_json::json!({})))
}

/// `POST /web/api/account/devices/enroll`: a fresh secret to scan (nothing is stored until
/// the device's first code comes back with it).
async fn enroll(
    State(room): State<Arc<WebRoom>>,
    req: WebRequest,
) -> Result<Response, EditorError> {
    let c = room.guard(&req, Renew::Yes)?;
    let user = &c.session.cert.identity.username;
    Ok(ok(super::qr::enrollment(user, room.auth.cluster_name())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewDevice {
    password: String,
    /// A code from a device the user already has (empty when there is none).
    #[serde(default)]
    existing_code: String,
    /// Or a security key's assertion (answering `/web/api/account/webauthn/challenge`).
    #[serde(default)]
    proof: Option<hop_auth::server::WebauthnAssertion>,
    name: String,
    secret: String,
    code: String,
}

/// `POST /web/api/account/devices`.
async fn add_device(
    State(room): State<Arc<WebRoom>>,
    req: WebRequest,
    body: Form<NewDevice>,
) -> Result<Response, EditorError> {
    let c = room.guard(&req, Renew::Yes)?;
    let form = form(body)?;
    let (user, remote) = (c.session.cert.identity.username.clone(), c.remote);
    let device = blocking(&room, move |a| {
        let proof = match &form.proof {
            Some(assertion) => hop_auth::server::SecondFactor::Webauthn(assertion),
            None => hop_auth::server::SecondFactor::Otp(form.existing_code.trim()),
        };
        a.add_otp_device_proven(
            &user,
            (&form.password, proof),
            &form.name,
            form.secret.trim(),
            form.code.trim(),
            Some(remote),
        )
    })
    .await?;
    Ok(ok(
        serde_json::json!({ "id": device.id, "name": device.name }),
    ))
}

/// The password and a fresh proof from a device the user keeps, as a removal carries.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reauth {
    password: String,
    /// A code from a device the user has (empty when a key's assertion comes instead).
    #[serde(default)]
    existing_code: String,
    /// Or a security key's assertion (answering `/web/api/account/webauthn/challenge`).
    #[serde(default)]
    proof: Option<hop_auth::server::WebauthnAssertion>,
}

/// `POST /web/api/account/devices/{id}/remove`.
async fn remove_device(
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
        let proof = match &form.proof {
            Some(assertion) => hop_auth::server::SecondFactor::Webauthn(assertion),
            None => hop_auth::server::SecondFactor::Otp(form.existing_code.trim()),
        };
        a.remove_otp_device_proven(&user, (&form.password, proof), &id, Some(remote))
    })
    .await?;
    Ok(ok(serde_json::json!({})))
}
