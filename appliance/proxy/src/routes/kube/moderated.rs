//! Moderated `kubectl exec` and `attach`: the session of a user whose roles carry a
//! `require_session_join` for `k8s` sessions starts only once the required moderators have
//! joined (`hop join SESSION --mode moderator`), through the proxy that relays it.
//!
//! This module owns that session's start: the proxy answers the client's WebSocket upgrade
//! itself (the channel protocols `v5`/`v4.channel.k8s.io`; a client that offers only SPDY is
//! refused, saying so), registers the session among those this proxy relays
//! ([`super::party`]) and writes its tracker (kind `kube`, hosted by this proxy: the join route
//! finds it there), tells the owner on the session's terminal what it waits for, and sends the
//! exec to the API server only once the requirements are met: nothing of the session runs in the
//! pod before, whether it is interactive or not, and what the owner typed meanwhile is held
//! (at most [`MAX_HELD`] bytes: more ends the session) and delivered at the start. From then on the stream relay
//! ([`super::stream`], with its [`Moderation`]) shares the output with the joiners, pauses or
//! ends the session when they leave, and records who came and went.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use base64::Engine as _;
use hop_api::trackers::TRACKER_KEEPALIVE;
use hop_auth::AuthServer;
use hop_auth::trackers::{SessionKind, TrackerState, TrackerUpdate};
use hop_protocols::kube::stream::websocket::encode_frame;
use hop_protocols::kube::stream::{WsFrameDecoder, WsMessage};
use hop_rbac::moderation::SessionJoinRequirement;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, watch};

use super::conn::Conn;
use super::decide::Allowed;
use super::forward::{Record, send_within};
use super::party::{Hosted, KubeLive, terminated_by};
use super::stream::{self, Moderation, StreamContext, StreamProtocol, notice_frame, notice_text};
use super::{StreamSlot, pool, status};
use crate::tunnels::KubeRoute;

/// The channel protocols a moderated session is held on, the client's choice among them first.
const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];
/// What the owner may type before the start; past it their input waits unread.
pub const MAX_HELD: usize = 64 << 10;
/// How long a notice may wait for the owner's connection.
const NOTICE_LIMIT: Duration = Duration::from_secs(1);
/// The WebSocket handshake's fixed suffix (RFC 6455 §1.3).
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// What the kube route hands over for a moderated exec or attach.
pub struct Start {
    pub conn: Arc<Conn>,
    pub cluster: KubeRoute,
    /// The request as the agent is to get it (headers prepared, origin-form path).
    pub parts: axum::http::request::Parts,
    pub client: hyper::upgrade::OnUpgrade,
    pub query: String,
    pub record: Record,
    pub allowed: Allowed,
    pub slot: Option<StreamSlot>,
    /// The owner's requirements for `k8s` sessions (not empty).
    pub reqs: Vec<SessionJoinRequirement>,
}

/// Why a moderated session cannot be held.
#[derive(Debug, thiserror::Error)]
enum Unheld {
    #[error(
        "your roles require moderated Kubernetes sessions (require_session_join), which Hop holds on kubectl's WebSocket exec protocol only (v5.channel.k8s.io or v4.channel.k8s.io, kubectl 1.30 or later); this client asked for {0}"
    )]
    Protocol(String),
}

/// Answers the client's upgrade for a moderated session and starts holding it (see the module
/// docs); a refusal is a Kubernetes `Status`.
pub fn begin(s: Start) -> Response<Body> {
    let route = s.conn.route.clone();
    let Some(slot) = s.slot else {
        s.record
            .audit(&route.auth, StatusCode::BAD_GATEWAY.as_u16());
        return status::agent_unreachable(&s.cluster.name, "the stream could not be registered");
    };
    let (key, protocol) = match websocket_offer(&s.parts.headers) {
        Ok(o) => o,
        Err(e) => {
            s.record.audit(&route.auth, StatusCode::FORBIDDEN.as_u16());
            return status::forbidden(&e.to_string());
        }
    };
    let sid = s.conn.session_id.clone();
    let hosted = match route.parties.host(&sid, s.conn.user()) {
        Ok(h) => h,
        Err(e) => {
            s.record.audit(&route.auth, StatusCode::CONFLICT.as_u16());
            return status::status(StatusCode::CONFLICT, &e.to_string());
        }
    };
    let mut parts = s.parts;
    parts.headers.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(protocol),
    );
    s.record
        .audit(&route.auth, StatusCode::SWITCHING_PROTOCOLS.as_u16());
    let channel = if stream::Params::parse(&s.query).tty {
        1
    } else {
        2
    };
    let held = Held {
        conn: s.conn,
        cluster: s.cluster,
        parts,
        query: s.query,
        allowed: s.allowed,
        slot,
        reqs: s.reqs,
        hosted,
        channel,
    };
    tokio::spawn(run(held, s.client));
    switching(&key, protocol)
}

/// The client's WebSocket key and the channel protocol chosen from its offer.
fn websocket_offer(h: &axum::http::HeaderMap) -> Result<(String, &'static str), Unheld> {
    let get = |name| h.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let upgrade = get(header::UPGRADE).unwrap_or_default();
    let offered = get(header::SEC_WEBSOCKET_PROTOCOL).unwrap_or_default();
    let refused = || Unheld::Protocol(format!("{upgrade} {offered}").trim().to_string());
    if !upgrade.eq_ignore_ascii_case("websocket") {
        return Err(refused());
    }
    let key = get(header::SEC_WEBSOCKET_KEY)
        .filter(|k| !k.is_empty())
        .ok_or_else(refused)?;
    let protocol = offered
        .split(',')
        .map(str::trim)
        .find_map(|p| PROTOCOLS.iter().copied().find(|known| *known == p))
        .ok_or_else(refused)?;
    Ok((key.to_string(), protocol))
}

/// `Sec-WebSocket-Accept` for `key` (RFC 6455 §4.2.2).
fn accept_value(key: &str) -> String {
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}{WS_GUID}").as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// The proxy's own 101 for the client.
fn switching(key: &str, protocol: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(protocol),
    );
    if let Ok(v) = HeaderValue::from_str(&accept_value(key)) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    r
}

/// A session held for its moderators.
struct Held {
    conn: Arc<Conn>,
    cluster: KubeRoute,
    parts: axum::http::request::Parts,
    query: String,
    allowed: Allowed,
    slot: StreamSlot,
    reqs: Vec<SessionJoinRequirement>,
    hosted: Hosted,
    /// The exec channel the owner's notices go on.
    channel: u8,
}

/// The held session, from the client's switch to its end.
async fn run(held: Held, client: hyper::upgrade::OnUpgrade) {
    let client = match client.await {
        Ok(c) => TokioIo::new(c),
        Err(e) => return tracing::debug!(error = %e, "a moderated Kubernetes upgrade failed"),
    };
    let route = held.conn.route.clone();
    let sid = held.conn.session_id.clone();
    let tracker = KubeTracker::start(
        route.auth.clone(),
        route.proxy_id().to_string(),
        TrackerUpdate {
            session_id: sid.clone(),
            kind: SessionKind::Kube,
            user: held.conn.user().to_string(),
            login: held.allowed.impersonation.user.clone(),
            target: format!(
                "{}/{}",
                held.allowed.request.namespace.as_deref().unwrap_or(""),
                held.allowed.request.name.as_deref().unwrap_or("")
            ),
            participants: Vec::new(),
            state: TrackerState::Active,
        },
    );
    let Hosted {
        live,
        mut notices,
        guard: _party,
    } = held.hosted;
    let mut owner = Owner {
        client,
        channel: held.channel,
        live: live.clone(),
    };
    let mut end = held.slot.end_signal();
    let waited = wait(&mut owner, &held.reqs, &mut notices, &mut end, &sid).await;
    let Ok((prefix, prelude)) = waited else {
        tracker.end();
        return;
    };
    let user = held.conn.user().to_string();
    let to = pool::For {
        cluster: &held.cluster,
        user: &user,
        session_id: &sid,
        client: held.conn.remote,
    };
    let upstream = open_upstream(&route.agents, &to, held.parts).await;
    let agent = match upstream {
        Ok(a) => a,
        Err(why) => {
            tracing::info!(session = %sid, error = %why, "a moderated Kubernetes session could not start");
            owner.fail(&why).await;
            tracker.end();
            return;
        }
    };
    let ctx = StreamContext {
        auth: route.auth.clone(),
        recordings: route.recordings.clone(),
        user,
        cluster: held.cluster.name.clone(),
        request: held.allowed.request,
        impersonated: held.allowed.impersonation,
        remote: held.conn.remote,
        session_id: sid,
        query: held.query,
        end,
        idle: stream::IDLE,
        moderation: Some(Moderation {
            live,
            reqs: held.reqs,
            notices,
            prelude,
            channel: held.channel,
        }),
    };
    let client = Prefixed {
        prefix: prefix.into(),
        inner: owner.client,
    };
    stream::relay(client, agent, StreamProtocol::WebSocket, ctx).await;
    tracker.end();
    drop((held.slot, held.conn));
}

/// The owner's side while the session is held.
struct Owner<C> {
    client: C,
    channel: u8,
    live: Arc<KubeLive>,
}

impl<C: AsyncRead + AsyncWrite + Unpin> Owner<C> {
    /// Tells the owner (and the joiners) `line`; a client that does not take it within
    /// [`NOTICE_LIMIT`] misses it.
    async fn say(&mut self, line: &str) {
        let text = notice_text(line);
        self.live.publish(text.as_bytes());
        let frame = notice_frame(self.channel, &text);
        let _ = tokio::time::timeout(NOTICE_LIMIT, self.client.write_all(&frame)).await;
    }

    /// Answers the pings among `bytes` (the client's, followed by `frames`); `Err` when they
    /// are not WebSocket frames.
    async fn pong(&mut self, frames: &mut WsFrameDecoder, bytes: &[u8]) -> Result<(), String> {
        let messages = frames
            .feed(bytes)
            .map_err(|e| format!("the client's stream cannot be followed: {e}"))?;
        for m in messages {
            if let WsMessage::Ping(payload) = m {
                let pong = encode_frame(true, 0xA, &payload, None);
                let _ = tokio::time::timeout(NOTICE_LIMIT, self.client.write_all(&pong)).await;
            }
        }
        Ok(())
    }

    /// Ends a session that could not start: the reason as the exec's error `Status` (kubectl
    /// prints it), then the close.
    async fn fail(&mut self, why: &str) {
        self.say(&format!("the session cannot start: {why}")).await;
        let status = serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("the moderated session could not start: {why}"),
        });
        let mut payload = vec![3u8];
        payload.extend_from_slice(status.to_string().as_bytes());
        let mut out = encode_frame(true, 0x2, &payload, None);
        out.extend(encode_frame(true, 0x8, &1000u16.to_be_bytes(), None));
        let _ = tokio::time::timeout(NOTICE_LIMIT, async {
            let _ = self.client.write_all(&out).await;
            let _ = self.client.shutdown().await;
        })
        .await;
    }
}

/// The line the owner reads while the session waits.
pub fn waiting_line(why: &str, session_id: &str) -> String {
    format!(
        "this session is moderated; it starts once {why} joined (hop join {session_id} --mode moderator)"
    )
}

/// Holds the session until `reqs` are met: tells the owner what it waits for and who comes and
/// goes, keeps what the owner sends (more than [`MAX_HELD`] ends it) and answers its pings (client-go
/// gives up on a connection whose pings go unanswered for a minute). `Ok`: the bytes held and
/// the lines said on the way (for the recording); `Err`: the owner left or the session was
/// ended first.
async fn wait<C: AsyncRead + AsyncWrite + Unpin>(
    owner: &mut Owner<C>,
    reqs: &[SessionJoinRequirement],
    notices: &mut mpsc::Receiver<String>,
    end: &mut watch::Receiver<Option<String>>,
    sid: &str,
) -> Result<(Vec<u8>, Vec<String>), String> {
    let mut changes = owner.live.changes();
    let mut terminated = owner.live.terminated();
    let mut held = Vec::new();
    let mut prelude = Vec::new();
    let mut buf = vec![0u8; 4096];
    let mut frames = WsFrameDecoder::new(true);
    loop {
        changes.borrow_and_update();
        let Some(why) = owner.live.unmet(reqs) else {
            while let Ok(line) = notices.try_recv() {
                owner.say(&line).await;
                prelude.push(line);
            }
            let line = "the required participants are here; the session starts";
            owner.say(line).await;
            prelude.push(line.to_string());
            return Ok((held, prelude));
        };
        owner.say(&waiting_line(&why, sid)).await;
        loop {
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Err("the session's table went away".into());
                    }
                    break;
                }
                Some(line) = notices.recv() => {
                    owner.say(&line).await;
                    prelude.push(line);
                }
                reason = stream::ended(end) => return Err(reason),
                who = terminated_by(&mut terminated) => {
                    owner.say(&format!("{who} ended the session")).await;
                    return Err(format!("moderator {who} ended the session before it started"));
                }
                // Read on past the limit too, so that an owner who goes away is seen.
                read = owner.client.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return Err("the owner left before the session started".into()),
                    Ok(n) => {
                        let bytes = buf.get(..n).unwrap_or_default();
                        if held.len() + bytes.len() > MAX_HELD {
                            return Err(format!(
                                "more than {} KiB was typed before the session started; it is ended",
                                MAX_HELD >> 10
                            ));
                        }
                        held.extend_from_slice(bytes);
                        owner.pong(&mut frames, bytes).await?;
                    }
                },
            }
        }
    }
}

/// Sends the held exec to the cluster now that it may start: the agent's upgraded connection,
/// or why there is none (in words for the owner).
async fn open_upstream(
    agents: &pool::Agents,
    to: &pool::For<'_>,
    parts: axum::http::request::Parts,
) -> Result<TokioIo<hyper::upgrade::Upgraded>, String> {
    let protocol = parts.headers.get(header::SEC_WEBSOCKET_PROTOCOL).cloned();
    let mut send = pool::dial(agents, to).await.map_err(|e| e.to_string())?;
    let req = Request::from_parts(parts, Body::empty());
    let mut resp = send_within(send.send_request(req))
        .await
        .map_err(|e| e.to_string())?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(format!("the API server answered {}", resp.status()));
    }
    let agreed = resp.headers().get(header::SEC_WEBSOCKET_PROTOCOL);
    if StreamProtocol::of_response(resp.headers()) != Some(StreamProtocol::WebSocket)
        || agreed != protocol.as_ref()
    {
        return Err("the API server switched to another stream protocol than the client's".into());
    }
    hyper::upgrade::on(&mut resp)
        .await
        .map(TokioIo::new)
        .map_err(|e| format!("the API server's upgrade failed: {e}"))
}

/// The owner's connection with the bytes held before the start read first.
struct Prefixed<C> {
    prefix: std::collections::VecDeque<u8>,
    inner: C,
}

impl<C: AsyncRead + Unpin> AsyncRead for Prefixed<C> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = self.prefix.len().min(buf.remaining());
        let bytes: Vec<u8> = self.prefix.drain(..n).collect();
        buf.put_slice(&bytes);
        Poll::Ready(Ok(()))
    }
}

impl<C: AsyncWrite + Unpin> AsyncWrite for Prefixed<C> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A moderated session's tracker, written by this proxy at once and renewed every
/// [`TRACKER_KEEPALIVE`] while the session is held or runs; marked terminated at its end.
struct KubeTracker {
    auth: Arc<AuthServer>,
    proxy_id: String,
    update: TrackerUpdate,
    keepalive: tokio::task::JoinHandle<()>,
}

impl KubeTracker {
    fn start(auth: Arc<AuthServer>, proxy_id: String, update: TrackerUpdate) -> Self {
        let keepalive = {
            let (auth, proxy_id, update) = (auth.clone(), proxy_id.clone(), update.clone());
            tokio::spawn(async move {
                loop {
                    write_tracker(&auth, &proxy_id, &update).await;
                    tokio::time::sleep(TRACKER_KEEPALIVE).await;
                }
            })
        };
        Self {
            auth,
            proxy_id,
            update,
            keepalive,
        }
    }

    /// Stops the renewals and marks the tracker terminated (in the background).
    fn end(self) {
        self.keepalive.abort();
        let mut update = self.update;
        update.state = TrackerState::Terminated;
        let (auth, proxy_id) = (self.auth, self.proxy_id);
        tokio::spawn(async move { write_tracker(&auth, &proxy_id, &update).await });
    }
}

async fn write_tracker(auth: &Arc<AuthServer>, proxy_id: &str, update: &TrackerUpdate) {
    let (auth, proxy_id, update) = (auth.clone(), proxy_id.to_string(), update.clone());
    let written = crate::tracker_writes::MODERATED
        .write(move || auth.update_kube_tracker(&proxy_id, &update));
    if let Some(Err(e)) = written.await {
        tracing::warn!(error = %e, "Kubernetes session tracker not written");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_value_is_rfc_6455s() {
        // The example of RFC 6455 §1.3.
        assert_eq!(
            accept_value("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn only_the_websocket_channel_protocols_are_held() {
        let mut h = axum::http::HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::SEC_WEBSOCKET_KEY, HeaderValue::from_static("a2V5"));
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("v4.channel.k8s.io, v5.channel.k8s.io"),
        );
        assert_eq!(
            websocket_offer(&h).unwrap(),
            ("a2V5".to_string(), "v4.channel.k8s.io"),
            "the client's order decides"
        );
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("channel.k8s.io"),
        );
        assert!(websocket_offer(&h).is_err(), "the base64 or old protocols");
        h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        let e = websocket_offer(&h).unwrap_err().to_string();
        assert!(e.contains("WebSocket exec protocol only"), "{e}");
    }

    #[tokio::test]
    async fn bytes_held_before_the_start_are_read_first() {
        let (mut ours, theirs) = tokio::io::duplex(64);
        ours.write_all(b" world").await.unwrap();
        drop(ours);
        let mut p = Prefixed {
            prefix: b"hello".to_vec().into(),
            inner: theirs,
        };
        let mut got = String::new();
        p.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "hello world");
    }
}
