//! The relay of an upgraded Kubernetes stream (`kubectl exec`, `attach`, `port-forward`) between
//! the client's connection and the agent's, once the API server has answered 101. This module
//! owns following both directions with the sans-IO decoders of
//! [`hop_protocols::kube::stream`] (the bytes themselves pass unchanged), recording exec and
//! attach sessions ([`super::record`]), the `kube.exec` / `kube.portforward` session events
//! (a `phase` field says `start` or `end`), and ending the session: when both sides are done,
//! when a decoder cannot follow a direction (fail closed: both sides are closed), or at once
//! when [`StreamContext::end`] says so (a lock, a revoked certificate, a role that no longer
//! allows it), or when no byte has passed either way for [`StreamContext::idle`] ([`IDLE`]).

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

use super::record::{KubeRecorder, RecordingTarget, exit_status};

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
}

/// What the upgrade request's query says about the session.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Params {
    command: Vec<String>,
    container: Option<String>,
    tty: bool,
    stdin: bool,
    ports: Vec<u16>,
}

impl Params {
    fn parse(query: &str) -> Self {
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
    /// [`StreamContext::end`] said so.
    Terminated(String),
    /// No byte passed either way for this long.
    Idle(Duration),
    /// The recording the cluster requires could not start.
    NotRecorded(String),
}

/// Relays an upgraded exec/attach/port-forward stream until it ends (see the module docs).
pub async fn relay<C, A>(client: C, agent: A, protocol: StreamProtocol, ctx: StreamContext)
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
    A: AsyncRead + AsyncWrite + Unpin + Send,
{
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
        Ok(recorder) => {
            let session = Mutex::new(Session {
                client: Decoder::new(protocol, port_forward, true, &params.ports),
                server: Decoder::new(protocol, port_forward, false, &params.ports),
                recorder,
                error_stream: Vec::new(),
                bytes_in: 0,
                bytes_out: 0,
                last_byte: clock::tokio_now(),
            });
            let mut end = ctx.end.clone();
            let ending = tokio::select! {
                ending = pump_both(client, agent, &session) => ending,
                reason = ended(&mut end) => Ending::Terminated(reason),
                () = idled(&session, ctx.idle) => Ending::Idle(ctx.idle),
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

/// Copies both ways, each through its decoder, until both are done or one cannot be followed.
async fn pump_both<C, A>(client: C, agent: A, session: &Mutex<Session>) -> Ending
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
    A: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (client_r, client_w) = tokio::io::split(client);
    let (agent_r, agent_w) = tokio::io::split(agent);
    let up = pump(client_r, agent_w, session, true);
    let down = pump(agent_r, client_w, session, false);
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
) -> Result<(), Ending>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
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
    }
    let _ = to.shutdown().await;
    Ok(())
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
