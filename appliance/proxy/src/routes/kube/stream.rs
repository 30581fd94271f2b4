//! The relay of an upgraded Kubernetes stream (`kubectl exec`, `attach`, `port-forward`) between
//! the client's connection and the agent's, once the API server has answered 101. This module
//! owns following both directions with the sans-IO decoders of
//! [`hop_protocols::kube::stream`] (the bytes themselves pass unchanged), recording exec and
//! attach sessions ([`super::record`]), the `kube.exec` / `kube.portforward` session events
//! (a `phase` field says `start` or `end`), and ending the session: when both sides are done,
//! when a decoder cannot follow a direction (fail closed: both sides are closed), or at once
//! when [`StreamContext::end`] says so (a lock, a revoked certificate, a role that no longer
//! allows it), or when no byte has passed either way for [`StreamContext::idle`] ([`IDLE`]).
//! A moderated session ([`Moderation`], set up by `moderated.rs`, decided on by
//! `session_moderation.rs`) also shares the container's output with its joiners, tells its
//! owner (and the recording) who comes and goes between the server's WebSocket messages, holds
//! the owner's input while it is paused, and ends when its moderators leave and a requirement
//! says `on_leave: terminate`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hop_auth::AuthServer;
use hop_auth::audit::EventKind;
use hop_platform::clock;
use hop_protocols::kube::request::KubeRequest;
use hop_protocols::kube::stream::{
    SpdyDecoder, StreamChunk, StreamError, StreamKind, WsChannelDecoder,
};
use hop_rbac::KubeImpersonation;
use hop_storage::recording::RecordingBackend;
use hyper::HeaderMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::party::KubeLive;
use super::record::{KubeRecorder, RecordingTarget, exit_status};
pub use super::session_moderation::{Moderation, notice_frame, notice_text};
use super::session_moderation::{Stop, moderate};

/// How long the other direction may go on once one has ended (half-closed).
const LINGER: Duration = Duration::from_secs(10);
/// The most bytes of an exec error stream kept to read the exit status from.
const MAX_ERROR_STREAM: usize = 64 << 10;
/// One read's buffer.
const READ_BUF: usize = 32 << 10;
/// How long an upgraded stream (exec, attach, port-forward) may pass no byte either way before
/// the proxy ends it (`ended_by: idle`). The kube route has no settings of its own yet, so this
/// is the route's fixed idle deadline; an interactive shell a person is using sends bytes.
pub const IDLE: Duration = Duration::from_secs(30 * 60);

/// The transport the client and the API server agreed on in the 101.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamProtocol {
    /// WebSocket with the channel protocols (`v4`/`v5.channel.k8s.io`, `channel.k8s.io`,
    /// `portforward.k8s.io`).
    WebSocket,
    /// SPDY/3.1 (`Upgrade: SPDY/3.1`).
    Spdy,
    /// SPDY/3.1 tunnelled in WebSocket (`SPDY/3.1+portforward.k8s.io`, kubectl ≥ 1.31).
    WebSocketSpdy,
}

impl StreamProtocol {
    /// The protocol of a 101 response, from its `Upgrade` and `Sec-WebSocket-Protocol`;
    /// `None` for one this proxy cannot follow (the base64 text channels, anything unknown),
    /// which must not be relayed.
    #[must_use]
    pub fn of_response(headers: &HeaderMap) -> Option<Self> {
        let get = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        let upgrade = get("upgrade")?;
        if upgrade.eq_ignore_ascii_case("SPDY/3.1") {
            return Some(Self::Spdy);
        }
        if !upgrade.eq_ignore_ascii_case("websocket") {
            return None;
        }
        // A WebSocket without a negotiated protocol is not one of kubectl's streams.
        match get("sec-websocket-protocol")? {
            "SPDY/3.1+portforward.k8s.io" => Some(Self::WebSocketSpdy),
            "channel.k8s.io" | "v4.channel.k8s.io" | "v5.channel.k8s.io" | "portforward.k8s.io" => {
                Some(Self::WebSocket)
            }
            _ => None,
        }
    }
}

/// Who runs the stream and what it is (kproxy fills it from the admitted request).
pub struct StreamContext {
    pub auth: Arc<AuthServer>,
    pub recordings: Option<Arc<dyn RecordingBackend>>,
    /// The Hop user.
    pub user: String,
    /// The kube cluster.
    pub cluster: String,
    pub request: KubeRequest,
    pub impersonated: KubeImpersonation,
    pub remote: SocketAddr,
    /// The session id (hex or a UUID): the recording's id.
    pub session_id: String,
    /// The upgrade request's query string, undecoded (`command=sh&stdin=true&tty=true`,
    /// `ports=8080`): the command, container and ports come from it.
    pub query: String,
    /// `Some(reason)`: end the session now (locked, certificate revoked, shutting down).
    pub end: tokio::sync::watch::Receiver<Option<String>>,
    /// No byte either way for this long ends the session ([`IDLE`] on the route).
    pub idle: Duration,
    /// A moderated session's hold on the relay.
    pub moderation: Option<Moderation>,
}

/// What the upgrade request's query says about the session.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Params {
    command: Vec<String>,
    container: Option<String>,
    pub(super) tty: bool,
    stdin: bool,
    ports: Vec<u16>,
}

impl Params {
    pub(super) fn parse(query: &str) -> Self {
        let mut p = Self::default();
        let pairs = hop_protocols::web_headers::query_pairs(query).unwrap_or_default();
        for (name, value) in pairs {
            match name.as_str() {
                "command" => p.command.push(value),
                "container" => p.container = Some(value),
                // The request parser refused repeated or unclear booleans before this.
                "tty" => p.tty = value == "1" || value.eq_ignore_ascii_case("true"),
                "stdin" => p.stdin = value == "1" || value.eq_ignore_ascii_case("true"),
                "ports" => p.ports.extend(
                    value
                        .split(',')
                        .filter_map(|s| s.trim().parse::<u16>().ok()),
                ),
                _ => {}
            }
        }
        p
    }
}

/// One direction's decoder.
enum Decoder {
    Ws(WsChannelDecoder),
    Spdy(SpdyDecoder),
}

impl Decoder {
    fn new(protocol: StreamProtocol, port_forward: bool, from_client: bool, ports: &[u16]) -> Self {
        match protocol {
            StreamProtocol::Spdy => Self::Spdy(SpdyDecoder::new(from_client)),
            StreamProtocol::WebSocketSpdy => Self::Ws(WsChannelDecoder::spdy(from_client)),
            StreamProtocol::WebSocket if port_forward => {
                Self::Ws(WsChannelDecoder::port_forward(from_client, ports.to_vec()))
            }
            StreamProtocol::WebSocket => Self::Ws(WsChannelDecoder::new(from_client)),
        }
    }

    fn feed(&mut self, bytes: &[u8]) -> Result<Vec<StreamChunk>, StreamError> {
        match self {
            Self::Ws(d) => d.feed(bytes),
            Self::Spdy(d) => d.feed(bytes),
        }
    }

    fn spdy(&mut self) -> Option<&mut SpdyDecoder> {
        match self {
            Self::Ws(d) => d.spdy_mut(),
            Self::Spdy(d) => Some(d),
        }
    }

    /// Whether a message of the proxy's own may go in after the bytes followed so far.
    fn at_boundary(&self) -> bool {
        match self {
            Self::Ws(d) => d.at_message_boundary(),
            Self::Spdy(_) => false,
        }
    }
}

/// The state both directions share: the decoders (the server's learns SPDY streams from the
/// client's), the recorder and what the session said about its end.
struct Session {
    client: Decoder,
    server: Decoder,
    recorder: Option<KubeRecorder>,
    error_stream: Vec<u8>,
    bytes_in: u64,
    bytes_out: u64,
    /// When a byte last passed either way (tokio's clock, so that tests can pause it).
    last_byte: tokio::time::Instant,
    /// A moderated session's joiners, who see its output.
    live: Option<Arc<KubeLive>>,
}

impl Session {
    /// Follows bytes the client sent; an error ends the session.
    fn follow_client(&mut self, bytes: &[u8]) -> Result<(), StreamError> {
        self.bytes_in += bytes.len() as u64;
        let chunks = self.client.feed(bytes)?;
        if let Some(opened) = self.client.spdy().map(SpdyDecoder::take_opened)
            && let Some(server) = self.server.spdy()
        {
            for (id, kind) in opened {
                server.note_opened(id, kind);
            }
        }
        if let Some(r) = self.recorder.as_mut() {
            for c in &chunks {
                match c.kind {
                    StreamKind::Stdin => r.input(&c.data),
                    StreamKind::Resize => r.resize(&c.data),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Follows bytes the server sent; an error ends the session.
    fn follow_server(&mut self, bytes: &[u8]) -> Result<(), StreamError> {
        self.bytes_out += bytes.len() as u64;
        for c in self.server.feed(bytes)? {
            match c.kind {
                StreamKind::Stdout | StreamKind::Stderr => {
                    if let Some(r) = self.recorder.as_mut() {
                        r.output(&c.data);
                    }
                    if let Some(l) = &self.live {
                        l.publish(&c.data);
                    }
                }
                StreamKind::Error => {
                    let room = MAX_ERROR_STREAM.saturating_sub(self.error_stream.len());
                    let take = c.data.len().min(room);
                    self.error_stream.extend_from_slice(&c.data[..take]);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The notices `lines`, framed for the client, once the server's bytes so far end at a
    /// message boundary (`None` until then); recorded and shown to joiners as they go.
    fn frame_notices(&mut self, lines: &mut Vec<String>, channel: u8) -> Option<Vec<u8>> {
        if !self.server.at_boundary() {
            return None;
        }
        let mut out = Vec::new();
        for line in lines.drain(..) {
            let text = notice_text(&line);
            if let Some(r) = self.recorder.as_mut() {
                r.output(text.as_bytes());
            }
            if let Some(l) = &self.live {
                l.publish(text.as_bytes());
            }
            out.extend(notice_frame(channel, &text));
        }
        Some(out)
    }
}

/// How a session ended.
#[derive(Debug)]
enum Ending {
    /// Both sides closed (or one did and the other lingered past [`LINGER`]).
    Closed,
    /// A direction's bytes could not be followed.
    Undecodable {
        from_client: bool,
        error: StreamError,
    },
    /// [`StreamContext::end`] said so, or a moderated session's moderators left.
    Terminated(String),
    /// A moderator ended the moderated session for everyone.
    Moderator(String),
    /// No byte passed either way for this long.
    Idle(Duration),
    /// The recording the cluster requires could not start.
    NotRecorded(String),
}

/// Relays an upgraded exec/attach/port-forward stream until it ends (see the module docs).
pub async fn relay<C, A>(client: C, agent: A, protocol: StreamProtocol, mut ctx: StreamContext)
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
    A: AsyncRead + AsyncWrite + Unpin + Send,
{
    let moderation = ctx.moderation.take();
    let params = Params::parse(&ctx.query);
    let port_forward = ctx.request.subresource.as_deref() == Some("portforward");
    let kind = if port_forward {
        EventKind::KubePortForward
    } else {
        EventKind::KubeExec
    };
    let started = clock::now();
    emit_start(&ctx, kind, &params, protocol);
    let recorder = if port_forward {
        Ok(None)
    } else {
        start_recording(&ctx, &params)
    };
    let ending = match recorder {
        Err(why) => Ending::NotRecorded(why),
        Ok(mut recorder) => {
            let (held, notices, moderated) = match moderation {
                Some(m) => {
                    if let Some(r) = recorder.as_mut() {
                        for line in &m.prelude {
                            r.output(notice_text(line).as_bytes());
                        }
                    }
                    let (tx, rx) = watch::channel(false);
                    let gate = Gate {
                        paused: Some(rx),
                        notices: Some((m.notices, m.channel)),
                    };
                    (Some(m.live.clone()), gate, Some((m.live, m.reqs, tx)))
                }
                None => (None, Gate::default(), None),
            };
            let session = Mutex::new(Session {
                client: Decoder::new(protocol, port_forward, true, &params.ports),
                server: Decoder::new(protocol, port_forward, false, &params.ports),
                recorder,
                error_stream: Vec::new(),
                bytes_in: 0,
                bytes_out: 0,
                last_byte: clock::tokio_now(),
                live: held,
            });
            let mut end = ctx.end.clone();
            let ending = tokio::select! {
                ending = pump_both(client, agent, &session, notices) => ending,
                reason = ended(&mut end) => Ending::Terminated(reason),
                () = idled(&session, ctx.idle) => Ending::Idle(ctx.idle),
                stop = moderate(moderated) => match stop {
                    Stop::Left(reason) => Ending::Terminated(reason),
                    Stop::By(moderator) => Ending::Moderator(moderator),
                },
            };
            let session = session.into_inner().unwrap_or_else(|e| e.into_inner());
            return finish(&ctx, kind, session, ending, started).await;
        }
    };
    emit_end(&ctx, kind, &ending, None, (0, 0), started);
}

/// The end of a session that ran: the recording closed, the end event.
async fn finish(
    ctx: &StreamContext,
    kind: EventKind,
    session: Session,
    ending: Ending,
    started: std::time::Instant,
) {
    let exit = exit_status(&session.error_stream);
    if let Some(r) = session.recorder {
        r.finish(exit).await;
    }
    let bytes = (session.bytes_in, session.bytes_out);
    emit_end(ctx, kind, &ending, exit, bytes, started);
}

/// Completes once no byte has passed either way for `idle`.
async fn idled(session: &Mutex<Session>, idle: Duration) {
    loop {
        let last = session.lock().unwrap_or_else(|e| e.into_inner()).last_byte;
        let deadline = last + idle;
        if clock::tokio_now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

/// Resolves with the reason once the end signal says to end; never if its sender goes away.
pub(super) async fn ended(end: &mut tokio::sync::watch::Receiver<Option<String>>) -> String {
    loop {
        if let Some(reason) = end.borrow_and_update().clone() {
            return reason;
        }
        if end.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// What holds a moderated session's directions: the owner's input waits while `paused` says
/// so; `notices` (and the exec channel they go on) are framed into the server's direction.
#[derive(Default)]
struct Gate {
    paused: Option<watch::Receiver<bool>>,
    notices: Option<(mpsc::Receiver<String>, u8)>,
}

/// Copies both ways, each through its decoder, until both are done or one cannot be followed.
async fn pump_both<C, A>(client: C, agent: A, session: &Mutex<Session>, gate: Gate) -> Ending
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
    A: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (client_r, client_w) = tokio::io::split(client);
    let (agent_r, agent_w) = tokio::io::split(agent);
    let up_gate = Gate {
        paused: gate.paused,
        notices: None,
    };
    let down_gate = Gate {
        paused: None,
        notices: gate.notices,
    };
    let up = pump(client_r, agent_w, session, true, up_gate);
    let down = pump(agent_r, client_w, session, false, down_gate);
    tokio::pin!(up, down);
    // The first direction to end decides, unless it just closed: then the other may finish.
    let (first, rest_is_up) = tokio::select! {
        r = &mut up => (r, false),
        r = &mut down => (r, true),
    };
    if let Err(ending) = first {
        return ending;
    }
    let rest = if rest_is_up {
        tokio::time::timeout(LINGER, &mut up).await
    } else {
        tokio::time::timeout(LINGER, &mut down).await
    };
    match rest {
        Ok(Err(ending)) => ending,
        Ok(Ok(())) | Err(_) => Ending::Closed,
    }
}

/// Copies one direction until its reader ends (then shuts the writer down): `Err` when its bytes
/// cannot be followed or the copy fails.
async fn pump<R, W>(
    mut from: R,
    mut to: W,
    session: &Mutex<Session>,
    from_client: bool,
    mut gate: Gate,
) -> Result<(), Ending>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; READ_BUF];
    let mut lines: Vec<String> = Vec::new();
    let channel = gate.notices.as_ref().map_or(2, |(_, c)| *c);
    loop {
        if let Some(paused) = gate.paused.as_mut() {
            // Held, not read: nothing of the owner's reaches the pod while paused.
            let _ = paused.wait_for(|p| !*p).await;
        }
        let read = tokio::select! {
            r = from.read(&mut buf) => r,
            Some(line) = next_notice(&mut gate.notices) => {
                lines.push(line);
                if !send_notices(&mut to, session, &mut lines, channel).await {
                    break;
                }
                continue;
            }
        };
        let n = match read {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(paused) = gate.paused.as_mut() {
            // Bytes read as the pause began wait with it.
            let _ = paused.wait_for(|p| !*p).await;
        }
        let bytes = &buf[..n];
        let followed = {
            let mut s = session.lock().unwrap_or_else(|e| e.into_inner());
            s.last_byte = clock::tokio_now();
            if from_client {
                s.follow_client(bytes)
            } else {
                s.follow_server(bytes)
            }
        };
        if let Err(error) = followed {
            return Err(Ending::Undecodable { from_client, error });
        }
        if to.write_all(bytes).await.is_err() {
            break;
        }
        if !lines.is_empty() && !send_notices(&mut to, session, &mut lines, channel).await {
            break;
        }
    }
    let _ = to.shutdown().await;
    Ok(())
}

/// The next notice for the owner; never for a direction that carries none.
async fn next_notice(notices: &mut Option<(mpsc::Receiver<String>, u8)>) -> Option<String> {
    match notices {
        Some((rx, _)) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Writes the waiting notices once the server's bytes end at a message boundary (they wait
/// otherwise); false when the client can no longer be written to.
async fn send_notices<W: AsyncWrite + Unpin>(
    to: &mut W,
    session: &Mutex<Session>,
    lines: &mut Vec<String>,
    channel: u8,
) -> bool {
    let framed = session
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .frame_notices(lines, channel);
    match framed {
        Some(bytes) => to.write_all(&bytes).await.is_ok(),
        None => true,
    }
}

/// Starts the recording of an exec/attach session: `Ok(None)` when the cluster records nothing,
/// `Err` when it requires a recording that cannot start.
fn start_recording(ctx: &StreamContext, params: &Params) -> Result<Option<KubeRecorder>, String> {
    let mode = ctx.auth.session_recording();
    if mode == "off" {
        return Ok(None);
    }
    let required = mode.ends_with("-sync");
    let Some(store) = ctx.recordings.clone() else {
        return if required {
            Err("this cluster requires session recordings and none can be kept here".into())
        } else {
            Ok(None)
        };
    };
    let target = RecordingTarget {
        session_id: ctx.session_id.clone(),
        hop_cluster: ctx.auth.cluster_name().to_string(),
        user: ctx.user.clone(),
        kube_user: ctx.impersonated.user.clone(),
        kube_cluster: ctx.cluster.clone(),
        pod: pod_name(&ctx.request, params),
        tty: params.tty,
        command: (ctx.request.subresource.as_deref() == Some("exec"))
            .then(|| params.command.join(" ")),
    };
    match KubeRecorder::start(store, &target) {
        Ok(r) => Ok(Some(r)),
        Err(e) if required => Err(format!("the session's recording cannot start: {e}")),
        Err(e) => {
            tracing::warn!(error = %e, "cannot record a kube session");
            Ok(None)
        }
    }
}

fn pod_name(request: &KubeRequest, params: &Params) -> String {
    let mut s = format!(
        "{}/{}",
        request.namespace.as_deref().unwrap_or(""),
        request.name.as_deref().unwrap_or("")
    );
    if let Some(c) = &params.container {
        s.push('/');
        s.push_str(c);
    }
    s
}

fn emit_start(ctx: &StreamContext, kind: EventKind, params: &Params, protocol: StreamProtocol) {
    let auth = &ctx.auth;
    let mut ev = auth
        .event(kind, &ctx.user)
        .remote(Some(ctx.remote))
        .field("phase", "start")
        .field("session_id", ctx.session_id.clone())
        .field("kube_cluster", ctx.cluster.clone())
        .field(
            "namespace",
            ctx.request.namespace.clone().unwrap_or_default(),
        )
        .field("pod", ctx.request.name.clone().unwrap_or_default())
        .field("kube_user", ctx.impersonated.user.clone())
        .field("kube_groups", ctx.impersonated.groups.clone())
        .field("protocol", format!("{protocol:?}"));
    if kind == EventKind::KubePortForward {
        let ports: Vec<u64> = params.ports.iter().map(|p| u64::from(*p)).collect();
        ev = ev.field("ports", ports);
    } else {
        ev = ev
            .field(
                "subresource",
                ctx.request.subresource.clone().unwrap_or_default(),
            )
            .field("command", params.command.join(" "))
            .field("container", params.container.clone().unwrap_or_default())
            .field("tty", params.tty)
            .field("stdin", params.stdin);
    }
    auth.emit(ev);
}

fn emit_end(
    ctx: &StreamContext,
    kind: EventKind,
    ending: &Ending,
    exit: Option<i32>,
    (bytes_in, bytes_out): (u64, u64),
    started: std::time::Instant,
) {
    let auth = &ctx.auth;
    let mut ev = auth
        .event(kind, &ctx.user)
        .remote(Some(ctx.remote))
        .field("phase", "end")
        .field("session_id", ctx.session_id.clone())
        .field("kube_cluster", ctx.cluster.clone())
        .field(
            "namespace",
            ctx.request.namespace.clone().unwrap_or_default(),
        )
        .field("pod", ctx.request.name.clone().unwrap_or_default())
        .field("bytes_in", bytes_in)
        .field("bytes_out", bytes_out)
        .field("duration_ms", clock::since(started).as_millis() as u64);
    if let Some(code) = exit {
        ev = ev.field("exit_status", i64::from(code));
    }
    ev = match ending {
        Ending::Closed => ev.field("ended_by", "closed"),
        Ending::Terminated(reason) => ev
            .field("ended_by", "terminated")
            .field("reason", reason.clone()),
        Ending::Moderator(who) => ev
            .field("ended_by", "moderator")
            .field("terminated_by", who.clone()),
        Ending::Idle(after) => ev.field("ended_by", "idle").field(
            "reason",
            format!("no bytes either way for {} s", after.as_secs()),
        ),
        Ending::Undecodable { from_client, error } => {
            let side = if *from_client { "client" } else { "server" };
            ev.failed(
                kind,
                format!("the {side}'s stream cannot be followed: {error}"),
            )
            .field("ended_by", "undecodable")
        }
        Ending::NotRecorded(why) => ev.failed(kind, why.clone()).field("ended_by", "refused"),
    };
    auth.emit(ev);
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
