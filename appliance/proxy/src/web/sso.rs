//! Single sign-on from the web UI's login page: the connectors the page lists
//! (`GET /web/api/sso/connectors`), the button's start (`GET /v1/webapi/oidc/login?connector=`,
//! `github/login` or `saml/login`: the connector's kind decides, the path only reads as Teleport's),
//! and the end of the flow (`GET /web/sso/finish`), which turns the sealed result Auth sent the
//! browser back with into a web session.
//!
//! The proxy plays the CLI's part: it makes the web session's keys and a one-time sealing key,
//! keeps them in memory under a random binding that only this browser holds (an `HttpOnly`,
//! `Secure`, `SameSite=Lax` `__Host-` cookie, 10 minutes), and asks Auth to send the result to
//! its own `/web/sso/finish`. A result that arrives without its binding, with another login's,
//! or that does not open with the binding's key, makes no session (login CSRF included). The
//! keys never leave this process; a flow that starts on one proxy must end on it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prost::Message;

use super::WebRoom;
use hop_api::sso::{RESPONSE_PARAM, SEAL_KEY_LEN, query_param, unseal};
use hop_auth::server::SsoStart;

/// The binding cookie of a browser's SSO login.
pub const SSO_COOKIE: &str = "__Host-hop_sso";
/// How long a started web SSO login waits for its result.
const PENDING_TTL: Duration = Duration::from_secs(600);
/// The most web SSO logins pending at once (the oldest make way).
const MAX_PENDING: usize = 1024;
/// Where Auth sends the browser with the sealed result.
pub const FINISH_PATH: &str = "/web/sso/finish";

/// A web SSO login waiting for its result.
struct PendingWebSso {
    request_id: String,
    seal_key: [u8; SEAL_KEY_LEN],
    ssh: hop_ca::SshKeyPair,
    tls: hop_ca::X509KeyPair,
    started: SystemTime,
}

/// The web SSO logins this proxy started, by binding.
#[derive(Default)]
pub struct PendingWebLogins(Mutex<HashMap<String, PendingWebSso>>);

impl PendingWebLogins {
    fn insert(&self, binding: String, p: PendingWebSso, now: SystemTime) {
        if let Ok(mut m) = self.0.lock() {
            m.retain(|_, v| now.duration_since(v.started).is_ok_and(|a| a < PENDING_TTL));
            if m.len() >= MAX_PENDING
                && let Some(oldest) = m
                    .iter()
                    .min_by_key(|(_, v)| v.started)
                    .map(|(k, _)| k.clone())
            {
                m.remove(&oldest);
            }
            m.insert(binding, p);
        }
    }

    fn take(&self, binding: &str, now: SystemTime) -> Option<PendingWebSso> {
        let p = self.0.lock().ok()?.remove(binding)?;
        now.duration_since(p.started)
            .is_ok_and(|a| a < PENDING_TTL)
            .then_some(p)
    }
}

fn page(status: StatusCode, detail: &str) -> Response {
    crate::routes::app_http::pages::page(status, "Single sign-on failed", detail).into_response()
}

fn redirect(to: &str, cookie: Option<HeaderValue>) -> Response {
    let mut r = (
        StatusCode::FOUND,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
    )
        .into_response();
    if let Ok(loc) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, loc);
    }
    if let Some(c) = cookie {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then(|| v.to_string())
        })
}

/// `GET /web/api/sso/connectors`: what the login page lists (anyone may ask: names only).
pub async fn connectors(State(room): State<Arc<WebRoom>>) -> Response {
    let auth = room.auth.clone();
    match tokio::task::spawn_blocking(move || auth.sso_connectors()).await {
        Ok(Ok(list)) => (
            [(header::CACHE_CONTROL, "no-store")],
            axum::Json(serde_json::json!({
                "connectors": list
                    .into_iter()
                    .map(|(name, kind, display)| serde_json::json!({"name": name, "type": kind, "display": display}))
                    .collect::<Vec<_>>()
            })),
        )
            .into_response(),
        _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Whether `authority` (`host[:port]`) is one of the proxy's public web addresses. A proxy with
/// no public address (its web address `localhost:PORT`) also answers to the loopback addresses
/// on that port.
fn is_public_authority(room: &WebRoom, authority: &str) -> bool {
    let web_addr = room.auth.web_addr();
    let origin = format!("https://{}", authority.to_ascii_lowercase());
    let listed = room
        .auth
        .webauthn_settings()
        .origins
        .iter()
        .any(|o| o.eq_ignore_ascii_case(&origin))
        || authority.eq_ignore_ascii_case(web_addr);
    let loopback = web_addr.strip_prefix("localhost:").is_some_and(|port| {
        ["127.0.0.1", "[::1]"]
            .iter()
            .any(|ip| authority == format!("{ip}:{port}"))
    });
    listed || loopback
}

/// `GET /v1/webapi/oidc/login?connector=NAME`: the login page's button.
pub async fn start(State(room): State<Arc<WebRoom>>, req: axum::extract::Request) -> Response {
    let query = req.uri().query().unwrap_or("");
    let Some(connector) = query_param(query, "connector").filter(|c| !c.is_empty()) else {
        return page(StatusCode::BAD_REQUEST, "No connector named.");
    };
    let Some(authority) = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
    else {
        return page(StatusCode::BAD_REQUEST, "The request names no host.");
    };
    // The result comes back to this host with Auth's redirect-URL check skipped (it is the
    // proxy's own page), so the host must be one of the proxy's public addresses: a forged
    // `Host` would otherwise send a victim's sealed result to the forger's site.
    if !is_public_authority(&room, &authority) {
        return page(
            StatusCode::MISDIRECTED_REQUEST,
            "This address is not one of the proxy's public addresses.",
        );
    }
    let remote = req
        .extensions()
        .get::<hop_auth::caller::Caller>()
        .and_then(hop_auth::caller::Caller::remote);
    let keys = {
        let mut rng = rand::rng();
        hop_ca::generate_ssh_keypair(&mut rng)
            .and_then(|s| hop_ca::generate_x509_keypair(&mut rng).map(|t| (s, t)))
    };
    let Ok((ssh, tls)) = keys else {
        return page(StatusCode::INTERNAL_SERVER_ERROR, "Cannot make keys.");
    };
    let mut seal_key = [0u8; SEAL_KEY_LEN];
    rand::fill(&mut seal_key[..]);
    let started = room
        .auth
        .start_sso_login(SsoStart {
            connector,
            ssh_public_key: ssh.public_openssh.clone(),
            tls_public_key_der: tls.public_spki_der.clone(),
            ttl: None,
            client_redirect_url: format!("https://{authority}{FINISH_PATH}"),
            seal_key: seal_key.to_vec(),
            remote,
            proxy_redirect: true,
        })
        .await;
    let started = match started {
        Ok(s) => s,
        Err(e) => return page(StatusCode::FORBIDDEN, &e.to_string()),
    };
    let mut b = [0u8; 32];
    rand::fill(&mut b[..]);
    let binding = hex::encode(b);
    let now = room.auth.now();
    room.sso_pending.insert(
        binding.clone(),
        PendingWebSso {
            request_id: started.request_id,
            seal_key,
            ssh,
            tls,
            started: now,
        },
        now,
    );
    let cookie = HeaderValue::from_str(&format!(
        "{SSO_COOKIE}={binding}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={}",
        PENDING_TTL.as_secs()
    ))
    .ok();
    redirect(&started.redirect_url, cookie)
}

/// `GET /web/sso/finish?response=…` (or `?error=…`): a web session from the sealed result.
pub async fn finish(State(room): State<Arc<WebRoom>>, req: axum::extract::Request) -> Response {
    let query = req.uri().query().unwrap_or("");
    let clear = HeaderValue::from_str(&format!(
        "{SSO_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0"
    ))
    .ok();
    let now = room.auth.now();
    let pending =
        cookie_value(req.headers(), SSO_COOKIE).and_then(|b| room.sso_pending.take(&b, now));
    if let Some(error) = query_param(query, "error") {
        let mut r = page(StatusCode::FORBIDDEN, &format!("{error}."));
        if let Some(c) = clear {
            r.headers_mut().append(header::SET_COOKIE, c);
        }
        return r;
    }
    let Some(p) = pending else {
        return page(
            StatusCode::FORBIDDEN,
            "This browser did not start this login (or it took longer than 10 minutes). Log in again.",
        );
    };
    let Some(sealed) = query_param(query, RESPONSE_PARAM) else {
        return page(
            StatusCode::BAD_REQUEST,
            "The redirect carries no login result.",
        );
    };
    let result = unseal(&p.seal_key, &p.request_id, &sealed)
        .ok()
        .and_then(|plain| hop_api::proto::SsoLoginResult::decode(plain.as_slice()).ok())
        .filter(|r| r.request_id == p.request_id)
        .and_then(|r| r.login);
    let Some(login) = result else {
        return page(
            StatusCode::FORBIDDEN,
            "The login result does not belong to this login.",
        );
    };
    let certs = match certificates(&room, login, now) {
        Some(c) => c,
        None => {
            return page(
                StatusCode::FORBIDDEN,
                "The login's certificate does not verify.",
            );
        }
    };
    let mut r = super::api::start_session(&room, certs, p.ssh, p.tls);
    // The page loads the session from its cookie; the JSON body is not for a navigation.
    *r.status_mut() = StatusCode::FOUND;
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/web"));
    if let Some(c) = clear {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

/// What a web session needs of a login, read back from the X.509 certificate Auth issued
/// (verified against the cluster's user CAs).
fn certificates(
    room: &WebRoom,
    login: hop_api::proto::LoginResponse,
    now: SystemTime,
) -> Option<hop_auth::server::LoginCertificates> {
    let der = hop_ca::parse_pem_certs(&login.tls_certificate_pem)
        .ok()?
        .into_iter()
        .next()?;
    let cas = room.auth.authorities();
    let (identity, expires) =
        hop_ca::verify_user_x509(&der, cas.trusted(hop_ca::CaKind::User), now).ok()?;
    let issued_at = hop_ca::x509_issued_at(&der)?;
    Some(hop_auth::server::LoginCertificates {
        ssh_certificate: login.ssh_certificate,
        tls_certificate_pem: login.tls_certificate_pem,
        known_hosts: login.known_hosts,
        trusted_cas_pem: login.trusted_cas_pem,
        trust_digest: login.trust_digest,
        username: login.username,
        roles: login.roles,
        logins: login.logins,
        expires,
        identity,
        issued_at,
    })
}
