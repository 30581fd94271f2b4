//! Per-session MFA for a web terminal's shell: when a role of the user sets
//! `require_session_mfa`, the shell opens only with a fresh WebAuthn assertion, made in the
//! browser for that one node and login.
//!
//! Over the terminal's own socket, before the node is reached: Auth gives a challenge bound to
//! the user and the target (`begin_session_mfa`, the same store and checks as `hop ssh`), the
//! page is sent `{"type":"mfa","target":…,"options":…}` and answers with one text frame
//! ([`MfaAnswer`]: the assertion, or why it has none), and Auth checks the assertion and issues
//! the one-minute SSH and X.509 certificates marked for that node and login
//! (`issue_session_mfa`) for keys made here, which live only as long as this terminal. Every
//! try is audited `mfa.session` with its target: Auth's own event for an assertion, this
//! module's for a challenge Auth would not give (no security key) or an answer the page did not
//! give (cancelled, timed out, a malformed frame). A refusal ends the terminal with the reason.
//!
//! It decides no access: Auth checks the assertion, admission the marked certificate.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use hop_auth::server::WebauthnAssertion;
use hop_ca::SessionMfaTarget;
use hop_protocols::web_terminal::{Control, MfaAnswer};

use super::bridge::Ending;
use super::node::NodeLogin;
use crate::admission::UserCert;
use crate::web::WebRoom;
use crate::web::guard::WebCaller;
use crate::web::sessions::SessionCredentials;

/// How long the page has to answer the prompt (a person finding and touching their key).
pub const TAP_DEADLINE: Duration = Duration::from_secs(120);

/// The certificate a shell as `login` on `node` opens with: the web session's when no role
/// requires per-session MFA, else one marked for that node and login after the page's
/// assertion.
pub(super) async fn login_for(
    room: &Arc<WebRoom>,
    caller: &WebCaller,
    (login, node): (&str, &str),
    ws: &mut WebSocket,
) -> Result<NodeLogin, Ending> {
    let found = &caller.session;
    let target = SessionMfaTarget::Node {
        node: node.to_string(),
        login: login.to_string(),
    };
    let Some(options) = challenge(room, caller, &target).await? else {
        return Ok(NodeLogin::of(found));
    };
    let prompt = serde_json::json!({
        "type": "mfa",
        "target": target.describe(),
        "options": options,
    });
    if ws
        .send(Message::Text(prompt.to_string().into()))
        .await
        .is_err()
    {
        return Err(Ending::new("closed", "the page went away"));
    }
    let answered = tokio::time::timeout(TAP_DEADLINE, answer(ws)).await;
    let assertion = match answered {
        Ok(Ok(a)) => a,
        Ok(Err(words)) => return Err(failed(room, caller, &target, "mfa_cancelled", &words)),
        Err(_) => {
            let words = format!(
                "no security key answered within {} s",
                TAP_DEADLINE.as_secs()
            );
            return Err(failed(room, caller, &target, "mfa_cancelled", &words));
        }
    };
    issue(room, caller, target, assertion).await
}

/// Auth's challenge for `target`, or `None` when no role requires one; a challenge Auth will
/// not give (no security key, a cluster without WebAuthn) is audited and ends the terminal.
async fn challenge(
    room: &Arc<WebRoom>,
    caller: &WebCaller,
    target: &SessionMfaTarget,
) -> Result<Option<serde_json::Value>, Ending> {
    let auth = room.auth.clone();
    let identity = caller.session.cert.identity.clone();
    let (t, remote) = (target.clone(), caller.remote);
    let asked =
        tokio::task::spawn_blocking(move || auth.begin_session_mfa(&identity, &t, Some(remote)))
            .await
            .map_err(|e| Ending::new("internal", format!("internal error: {e}")))?;
    asked.map_err(|e| failed(room, caller, target, "mfa_refused", &e.to_string()))
}

/// Reads the page's answer: the first text frame that is not a resize (keys typed meanwhile
/// are dropped); the words of an error say why there is no assertion.
async fn answer(ws: &mut WebSocket) -> Result<WebauthnAssertion, String> {
    loop {
        let text = match ws.recv().await {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_)) | Err(_)) | None => {
                return Err("the page closed the terminal before the security key answered".into());
            }
            Some(Ok(_)) => continue,
        };
        if Control::parse(text.as_str()).is_ok() {
            continue;
        }
        return match MfaAnswer::parse(text.as_str()).map_err(|e| e.to_string())? {
            MfaAnswer::Assertion {
                credential_id,
                client_data_json,
                authenticator_data,
                signature,
            } => Ok(WebauthnAssertion {
                credential_id: credential_id.into(),
                client_data_json: client_data_json.into(),
                authenticator_data: authenticator_data.into(),
                signature: signature.into(),
            }),
            MfaAnswer::Cancelled { reason: "" } => Err("the browser gave no assertion".into()),
            MfaAnswer::Cancelled { reason } => {
                Err(format!("the browser gave no assertion: {reason}"))
            }
        };
    }
}

/// Auth checks `assertion` and issues the marked certificates for new keys (audited there).
async fn issue(
    room: &Arc<WebRoom>,
    caller: &WebCaller,
    target: SessionMfaTarget,
    assertion: WebauthnAssertion,
) -> Result<NodeLogin, Ending> {
    let (ssh, tls) = crate::web::api::login_keys()
        .map_err(|e| Ending::new("internal", format!("internal error: keys: {e}")))?;
    let auth = room.auth.clone();
    let cert = caller.session.cert.clone();
    let remote = caller.remote;
    let keys = (ssh.public_openssh.clone(), tls.public_spki_der.clone());
    let issued = tokio::task::spawn_blocking(move || {
        auth.issue_session_mfa(
            (&cert.identity, cert.expires),
            &target,
            &assertion,
            (keys.0.as_str(), keys.1.as_slice()),
            Some(remote),
        )
    })
    .await
    .map_err(|e| Ending::new("internal", format!("internal error: {e}")))?
    .map_err(|e| Ending::new("mfa_refused", format!("per-session MFA: {e}")))?;
    Ok(NodeLogin {
        cert: Arc::new(UserCert {
            identity: issued.identity,
            issued_at: issued.issued_at,
            expires: issued.expires,
        }),
        credentials: Arc::new(SessionCredentials {
            ssh,
            ssh_certificate: issued.ssh_certificate,
            tls,
            tls_certificate_pem: issued.tls_certificate_pem,
        }),
    })
}

/// Audits a try that ended before Auth saw an assertion; the terminal's ending.
fn failed(
    room: &WebRoom,
    caller: &WebCaller,
    target: &SessionMfaTarget,
    code: &'static str,
    words: &str,
) -> Ending {
    let user = &caller.session.cert.identity.username;
    room.auth
        .audit_session_mfa_failure(user, target, Some(caller.remote), words);
    Ending::new(code, format!("per-session MFA: {words}"))
}
