//! Joining a live SSH session through the proxy (`hop join SESSION --mode observer|peer`, ALPN
//! `hop-join`).
//!
//! This module owns the decision and the routing: the session is found from its `session.start`
//! event in the audit log (who owns it, which node agent hosts it), the joiner must be its owner
//! or hold a role whose `join_sessions` allows the owner's roles in that mode, the attempt is
//! audited (`session.join`), and the stream is carried to the node, which attaches it to the
//! session's terminal (`node/party.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hop_admission::Route;

use hop_protocols::tunnel::Frame;
use serde::Deserialize;

use super::admission::{Live, LiveWatch, UserCert, admit, both_legs};
use super::dial::{accept, dial_agent, refuse};
use super::tunnels::{AgentStream, TunnelRegistry};
use crate::auth::AuthServer;
use crate::auth::audit::EventKind;
use crate::node::party::JoinDial;
use crate::tunnel::{FramedStream, relay};

/// What `hop join` asks for (the Dial's target, as JSON).
#[derive(Debug, Deserialize)]
pub struct JoinRequest {
    pub session_id: String,
    pub mode: String,
}

/// The owner and host of a session, from its `session.start` event.
struct SessionInfo {
    owner: String,
    host_id: String,
    server: String,
}

fn find_session(log: &hop_storage::AuditLog, id: &str) -> Result<SessionInfo, String> {
    let q = hop_storage::SearchQuery {
        event_types: vec!["session.start".into()],
        session_id: Some(id.to_string()),
        limit: 1,
        ..Default::default()
    };
    let page = log
        .search(&q)
        .map_err(|e| format!("cannot search the audit log: {e}"))?;
    let ev = page.events.into_iter().next().ok_or_else(|| {
        format!(
            "no session {id} is known (`hop admin audit search --type session.start` lists them)"
        )
    })?;
    let v = serde_json::to_value(&ev).map_err(|e| e.to_string())?;
    let text = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_string()
    };
    if v.get("recorded_at").and_then(|x| x.as_str()) == Some("proxy") {
        return Err(format!(
            "session {id} is terminated at the proxy (an agentless node, or proxy recording mode); joining those is not supported yet"
        ));
    }
    let info = SessionInfo {
        owner: text("user"),
        host_id: text("server_id"),
        server: text("server"),
    };
    if info.host_id.is_empty() {
        return Err(format!("session {id} has no node recorded"));
    }
    Ok(info)
}

/// Serves one `hop-join` connection.
pub async fn serve(
    stream: AgentStream,
    cert: UserCert,
    remote: SocketAddr,
    registry: Arc<TunnelRegistry>,
    auth: Arc<AuthServer>,
    log: Option<Arc<hop_storage::AuditLog>>,
) {
    let identity = &cert.identity;
    let mut client = FramedStream::new(stream);
    let dial = match client.read_frame(Duration::from_secs(10)).await {
        Ok(Frame::Dial(d)) => d,
        Ok(_) | Err(_) => return,
    };
    let sid = dial.session_id;
    let admitted = match admit(&auth, &cert, None, Route::Join, remote) {
        Ok(a) => a,
        Err(refusal) => return refuse(&mut client, sid, refusal.to_string()).await,
    };
    let req: JoinRequest = match serde_json::from_str(&dial.target) {
        Ok(r) => r,
        Err(e) => return refuse(&mut client, sid, format!("malformed join request: {e}")).await,
    };
    if !hop_rbac::role::JOIN_MODES.contains(&req.mode.as_str()) {
        let e = format!("unknown mode {:?}: observer or peer", req.mode);
        return refuse(&mut client, sid, e).await;
    }
    let Some(log) = log else {
        return refuse(
            &mut client,
            sid,
            "this proxy keeps no audit log to find sessions in".into(),
        )
        .await;
    };
    let decided = {
        let (auth, id, req_id, mode) = (
            auth.clone(),
            identity.clone(),
            req.session_id.clone(),
            req.mode.clone(),
        );
        tokio::task::spawn_blocking(
            move || -> Result<SessionInfo, (Option<SessionInfo>, String)> {
                let info = find_session(&log, &req_id).map_err(|e| (None, e))?;
                if info.owner == id.username {
                    return Ok(info);
                }
                let owner_roles = auth
                    .user_roles(&info.owner)
                    .map_err(|e| (None, e.to_string()))?;
                match admitted
                    .checker()
                    .check_join_session(&owner_roles, "ssh", &mode)
                {
                    Ok(()) => Ok(info),
                    Err(d) => Err((Some(info), format!("joining session {req_id} denied: {d}"))),
                }
            },
        )
        .await
    };
    let event = |info: Option<&SessionInfo>, err: Option<&str>| {
        let mut ev = auth
            .event(EventKind::SessionJoin, &identity.username)
            .remote(Some(remote))
            .field("session_id", req.session_id.clone())
            .field("mode", req.mode.clone());
        if let Some(i) = info {
            ev = ev
                .field("server", i.server.clone())
                .field("owner", i.owner.clone());
        }
        if let Some(e) = err {
            ev = ev.failed(EventKind::SessionJoin, e);
        }
        auth.emit(ev);
    };
    let info = match decided {
        Ok(Ok(i)) => i,
        Ok(Err((info, e))) => {
            event(info.as_ref(), Some(&e));
            return refuse(&mut client, sid, e).await;
        }
        Err(e) => return refuse(&mut client, sid, format!("internal error: {e}")).await,
    };
    let target = JoinDial {
        session_id: req.session_id.clone(),
        mode: req.mode.clone(),
        user: identity.username.clone(),
    }
    .to_target();
    let what = format!("session {}", req.session_id);
    let (agent, _agent_hold) =
        match dial_agent(&registry, &info.host_id, &what, sid, &target, remote).await {
            Ok(a) => a,
            Err(e) => {
                event(Some(&info), Some(&e));
                return refuse(&mut client, sid, e).await;
            }
        };
    event(Some(&info), None);
    if !accept(&mut client, sid).await {
        return;
    }
    let _watch = LiveWatch::start(
        auth.clone(),
        Live {
            sockets: both_legs(client.get_ref(), agent.get_ref()),
            login: None,
            route: Route::Join,
            remote,
            session_id: req.session_id.clone(),
            disconnect_expired_cert: false,
            cert: cert.clone(),
        },
    );
    let (c, c_pending) = client.into_inner();
    let (a, a_pending) = agent.into_inner();
    if let Err(e) = relay(c, c_pending, a, a_pending).await {
        tracing::debug!(session = %req.session_id, error = %e, "join stream ended with an error");
    }
}
