//! One SSH session channel on a node: its requests in order (pty, env, agent forwarding, then
//! one of shell, exec or a subsystem; window changes and signals after), the process it starts
//! as the requested OS user, the bytes both ways, and the exit status. An interactive (PTY)
//! session's output, input and resizes are also handed to its recording ([`super::recorder`])
//! when the grant's mode says the node records, without ever waiting for it. Each session has a
//! tracker on Auth from before its first event until after its last (`agent::trackers`).
//!
//! Requests arrive on the channel itself (russh delivers them there as well as to the connection
//! handler). The handler answers them, in order and only when the client asked for an answer
//! (russh tells the channel `want_reply: true` for every request, so answering from here could
//! answer the wrong request); this task acts on them. Reading
//! the channel is what gives backpressure: while the child's input is full, the channel is not
//! read, the client's window closes, and it stops sending.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hop_rbac::moderation::OnLeave;
use russh::server::{Handle, Msg};
use russh::{Channel, ChannelId, ChannelMsg, Sig};
use tokio::io::AsyncWriteExt;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use super::access::Grant;
use super::audit::EventKind;
use super::env;
use super::recorder::{NodeRecording, RecordingRefused, SessionRecorder};
use super::users::{self, OsUser};
use super::{Arrival, NodeShared};
use crate::trackers::TrackedSpec;
use hop_platform::clock;
use hop_platform::pty::{self, Account, ChildSetup, WindowSize};

/// What the connection hands to each session channel.
#[derive(Clone)]
pub struct SessionContext {
    pub shared: Arc<NodeShared>,
    pub grant: Grant,
    pub client_addr: String,
    pub arrival: Arrival,
    pub handle: Handle,
    /// The agent socket path when agent forwarding was set up for this connection.
    pub agent_socket: Option<String>,
}

/// Where the sftp server of OpenSSH lives on common systems.
const SFTP_SERVERS: &[&str] = &[
    "/usr/lib/openssh/sftp-server",
    "/usr/libexec/openssh/sftp-server",
    "/usr/lib/ssh/sftp-server",
    "/usr/libexec/sftp-server",
    "/usr/lib/sftp-server",
];

enum Program {
    Shell,
    Exec(String),
    Sftp,
}

struct Requested {
    pty: Option<(String, WindowSize)>,
    env: Vec<(String, String)>,
    agent: bool,
}

/// Serves one session channel until it closes.
pub async fn run(channel: Channel<Msg>, ctx: SessionContext) {
    let id = channel.id();
    let (mut reader, writer) = channel.split();
    let writer = Arc::new(writer);
    let mut req = Requested {
        pty: None,
        env: Vec::new(),
        agent: false,
    };
    // Set-up requests until the program starts.
    let program = loop {
        let Some(msg) = reader.wait().await else {
            return;
        };
        match msg {
            ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                pix_width,
                pix_height,
                ..
            } => {
                let ok = ctx.grant.permit_pty;
                if ok {
                    req.pty = Some((term, window(col_width, row_height, pix_width, pix_height)));
                }
            }
            ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            } => match env::client_may_set(&variable_name) {
                Ok(()) => {
                    req.env.push((variable_name, variable_value));
                }
                Err(why) => {
                    if matches!(why, env::EnvRefused::ChangesLoading { .. }) {
                        let ev = ctx
                            .shared
                            .audit
                            .event(EventKind::Exec, &ctx.grant.identity.username)
                            .remote_str(&ctx.client_addr)
                            .field("login", ctx.grant.login.clone())
                            .field("env", variable_name.clone())
                            .failed(EventKind::Exec, why.to_string());
                        ctx.shared.audit.emit(ev);
                    }
                    let _ = writer
                        .make_writer_ext(Some(1))
                        .write_all(format!("hop: {why}\r\n").as_bytes())
                        .await;
                }
            },
            // The connection handler already answered this request (`agent_request`).
            ChannelMsg::AgentForward { .. } => {
                let ok = ctx.grant.permit_agent_forwarding && ctx.agent_socket.is_some();
                let ev = ctx
                    .shared
                    .audit
                    .event(EventKind::AgentForward, &ctx.grant.identity.username)
                    .remote_str(&ctx.client_addr)
                    .field("login", ctx.grant.login.clone());
                if ok {
                    req.agent = true;
                    ctx.shared.audit.emit(ev);
                } else {
                    let why = "agent forwarding is not allowed by the user's roles";
                    ctx.shared
                        .audit
                        .emit(ev.failed(EventKind::AgentForward, why));
                    let _ = writer
                        .make_writer_ext(Some(1))
                        .write_all(format!("hop: {why}\r\n").as_bytes())
                        .await;
                }
            }
            ChannelMsg::RequestShell { .. } => {
                break Program::Shell;
            }
            ChannelMsg::Exec { command, .. } => {
                break Program::Exec(String::from_utf8_lossy(&command).into_owned());
            }
            ChannelMsg::RequestSubsystem { name, .. } => {
                let ok = name == "sftp";
                if ok {
                    break Program::Sftp;
                }
            }
            ChannelMsg::RequestX11 { .. } => {}
            ChannelMsg::WindowChange {
                col_width,
                row_height,
                pix_width,
                pix_height,
            } => {
                if let Some((_, size)) = &mut req.pty {
                    *size = window(col_width, row_height, pix_width, pix_height);
                }
            }
            ChannelMsg::Eof | ChannelMsg::Close => return,
            _ => {}
        }
    };
    let started = clock::now();
    let session_id = hop_api::ids::new_session_id(clock::wall());
    // The tracker first: Auth accepts this session's events only once it knows the session.
    let tracker = ctx
        .shared
        .trackers
        .open(TrackedSpec {
            session_id: session_id.clone(),
            kind: "ssh",
            user: ctx.grant.identity.username.clone(),
            login: ctx.grant.login.clone(),
            target: String::new(),
        })
        .await;
    let outcome = start_and_serve(
        &ctx,
        id,
        reader,
        writer.clone(),
        &req,
        &program,
        &session_id,
    )
    .await;
    let mut terminated_by = None;
    let (code, bytes_in, bytes_out, error) = match outcome {
        Ok(o) => {
            terminated_by = o.terminated_by;
            (Some(o.exit_code), o.bytes_in, o.bytes_out, None)
        }
        Err(e) => {
            let _ = writer
                .make_writer_ext(Some(1))
                .write_all(format!("hop: {e}\r\n").as_bytes())
                .await;
            let _ = writer.exit_status(255).await;
            (None, 0, 0, Some(e.to_string()))
        }
    };
    let _ = writer.eof().await;
    let _ = writer.close().await;
    let shared = &ctx.shared;
    let user = &ctx.grant.identity.username;
    let mut ev = match &program {
        Program::Exec(cmd) => shared
            .audit
            .event(EventKind::Exec, user)
            .field("command", truncate(cmd, 4096)),
        Program::Shell => shared.audit.event(EventKind::SessionEnd, user),
        Program::Sftp => shared
            .audit
            .event(EventKind::Sftp, user)
            .field("subsystem", "sftp"),
    };
    ev = ev
        .remote_str(&ctx.client_addr)
        .field("login", ctx.grant.login.clone())
        .field("session_id", session_id)
        .field("interactive", req.pty.is_some())
        .field("bytes_in", bytes_in)
        .field("bytes_out", bytes_out)
        .field("duration_ms", clock::since(started).as_millis() as u64);
    if let Some(c) = code {
        ev = ev.field("exit_code", c);
    }
    if let Some(m) = terminated_by {
        ev = ev.field("ended_by", "moderator").field("terminated_by", m);
    }
    if let Some(e) = error {
        let kind = match &program {
            Program::Exec(_) => EventKind::Exec,
            Program::Shell => EventKind::SessionEnd,
            Program::Sftp => EventKind::Sftp,
        };
        ev = ev.failed(kind, e);
    }
    shared.audit.emit(ev);
    tracker.end().await;
}

fn window(cols: u32, rows: u32, pw: u32, ph: u32) -> WindowSize {
    let c = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
    WindowSize {
        cols: c(cols),
        rows: c(rows),
        px_width: c(pw),
        px_height: c(ph),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

struct Outcome {
    exit_code: u32,
    bytes_in: u64,
    bytes_out: u64,
    /// The moderator who ended the session for everyone, if one did.
    terminated_by: Option<String>,
}

/// Why a session's program did not start or run to its end. The words reach the client (as
/// `hop: ...`) and the audit log.
#[derive(Debug, thiserror::Error)]
pub(super) enum SessionError {
    /// The login has no account here, or the passwd file is unreadable.
    #[error(transparent)]
    NoAccount(#[from] users::LookupError),
    /// The node does not run as root and the login is another user.
    #[error(
        "this node runs as uid {me} and can start sessions only as that user, not as {login:?}"
    )]
    OtherUid { me: u32, login: String },
    #[error(
        "the sftp subsystem needs OpenSSH's sftp-server on this node (package openssh-sftp-server)"
    )]
    NoSftpServer,
    /// A `node-sync` session whose recording cannot start.
    #[error("{0}. This session must be recorded (recording mode node-sync), so it is refused")]
    RecordingRequired(#[source] RecordingRefused),
    #[error("cannot start the session's program: {0}")]
    Program(#[source] std::io::Error),
    #[error("cannot start the shell: {0}")]
    Shell(#[source] std::io::Error),
    /// The child was spawned without the pipe asked for (a bug).
    #[error("no {0}")]
    NoPipe(&'static str),
    #[error("cannot open a terminal: {0}")]
    OpenTerminal(#[source] std::io::Error),
    #[error("terminal: {0}")]
    Terminal(#[source] std::io::Error),
    /// The terminal's master side or waiting for the child failed.
    #[error("{0}")]
    Io(#[source] std::io::Error),
    /// A command or sftp of a user whose sessions must be moderated.
    #[error(
        "your roles require moderated sessions (require_session_join): only an interactive shell can be moderated, so commands and file transfers are refused"
    )]
    NotModeratable,
}

/// The OS user to run as, and the account to switch to when this process runs as root
/// (`None`: the node runs as the login itself).
pub(super) fn os_user(login: &str) -> Result<(OsUser, Option<Account>), SessionError> {
    let (user, groups) = users::lookup(login)?;
    let me = pty::current_uid();
    if me == 0 {
        let account = Account {
            uid: user.uid,
            gid: user.gid,
            groups,
            home: user.home.clone(),
        };
        Ok((user, Some(account)))
    } else if user.uid == me {
        Ok((user, None))
    } else {
        Err(SessionError::OtherUid {
            me,
            login: login.to_string(),
        })
    }
}

fn build_command(
    ctx: &SessionContext,
    req: &Requested,
    program: &Program,
    user: &OsUser,
    session_id: &str,
) -> Result<std::process::Command, SessionError> {
    use std::os::unix::process::CommandExt;
    let mut cmd = match program {
        Program::Shell => {
            let mut c = std::process::Command::new(&user.shell);
            let base = user.shell.rsplit('/').next().unwrap_or("sh");
            c.arg0(format!("-{base}"));
            c
        }
        Program::Exec(command) => {
            let mut c = std::process::Command::new(&user.shell);
            c.arg("-c").arg(command);
            c
        }
        Program::Sftp => {
            let path = SFTP_SERVERS
                .iter()
                .find(|p| std::path::Path::new(p).exists())
                .ok_or(SessionError::NoSftpServer)?;
            std::process::Command::new(path)
        }
    };
    cmd.env_clear();
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("HOME".into(), user.home.clone());
    env.insert("USER".into(), user.name.clone());
    env.insert("LOGNAME".into(), user.name.clone());
    env.insert("SHELL".into(), user.shell.clone());
    env.insert("PATH".into(), env::default_path(user.uid).into());
    env.insert("HOP_USER".into(), ctx.grant.identity.username.clone());
    env.insert("HOP_SESSION_ID".into(), session_id.to_string());
    env.insert("HOP_CLUSTER".into(), ctx.shared.cluster.clone());
    let client = ctx.client_addr.rsplit_once(':');
    if let Some((ip, port)) = client {
        env.insert("SSH_CLIENT".into(), format!("{ip} {port} 0"));
        env.insert("SSH_CONNECTION".into(), format!("{ip} {port} 0.0.0.0 0"));
    }
    if let Some((term, _)) = &req.pty {
        env.insert(
            "TERM".into(),
            if term.is_empty() {
                "xterm".into()
            } else {
                term.clone()
            },
        );
    }
    if req.agent
        && let Some(sock) = &ctx.agent_socket
    {
        env.insert("SSH_AUTH_SOCK".into(), sock.clone());
    }
    for (k, v) in &req.env {
        env.insert(k.clone(), v.clone());
    }
    cmd.envs(env);
    // When the session switches account, the child changes to the home directory itself, as
    // the login (see `pty::prepare_child`); this is the directory for a node running as the
    // login already.
    let home = std::path::Path::new(&user.home);
    cmd.current_dir(if home.is_dir() {
        home
    } else {
        std::path::Path::new("/")
    });
    Ok(cmd)
}

async fn start_and_serve(
    ctx: &SessionContext,
    id: ChannelId,
    reader: russh::ChannelReadHalf,
    writer: Arc<russh::ChannelWriteHalf<Msg>>,
    req: &Requested,
    program: &Program,
    session_id: &str,
) -> Result<Outcome, SessionError> {
    let (user, account) = os_user(&ctx.grant.login)?;
    let cmd = build_command(ctx, req, program, &user, session_id)?;
    let interactive = req.pty.is_some() && !matches!(program, Program::Sftp);
    let mut start_ev = ctx
        .shared
        .audit
        .event(EventKind::SessionStart, &ctx.grant.identity.username)
        .remote_str(&ctx.client_addr)
        .field("login", ctx.grant.login.clone())
        .field("session_id", session_id.to_string())
        .field("interactive", interactive);
    // A command is on record from the moment it starts, so one that never ends leaves a line.
    start_ev = match program {
        Program::Exec(command) => start_ev.field("command", truncate(command, 4096)),
        Program::Sftp => start_ev.field("subsystem", "sftp"),
        Program::Shell => start_ev,
    };
    // Only a shell can be moderated: a command (with a terminal or not) would run unwatched
    // the moment a moderator arrives.
    let moderatable = interactive && matches!(program, Program::Shell);
    if !moderatable && !ctx.grant.moderation.is_empty() {
        return Err(SessionError::NotModeratable);
    }
    ctx.shared.audit.emit(start_ev);
    if interactive {
        let (_, size) = req.pty.clone().unwrap_or_default();
        let recorder = start_recording(ctx, req, program, session_id)?;
        let hosted = ctx.shared.parties.host(session_id);
        pty_session(
            ctx, id, reader, writer, cmd, account, size, recorder, hosted,
        )
        .await
    } else {
        let sftp = matches!(program, Program::Sftp).then(|| SftpAudit::new(ctx, session_id));
        pipe_session(ctx, id, reader, writer, cmd, account, sftp).await
    }
}

/// A recording and the moment its times count from.
type Recording = Option<(SessionRecorder, Instant)>;

/// Starts the session's recording as the grant's mode says. `Err` refuses the session: a
/// `node-sync` session whose recording cannot start.
fn start_recording(
    ctx: &SessionContext,
    req: &Requested,
    program: &Program,
    session_id: &str,
) -> Result<Recording, SessionError> {
    let strict = match NodeRecording::from_mode(&ctx.grant.recording) {
        NodeRecording::Off => return Ok(None),
        // No proxy is in the path of a direct connection: the node records it itself, as
        // strictly as the mode asks (`proxy-sync` becomes `node-sync`).
        NodeRecording::AtProxy if ctx.arrival == Arrival::Direct => {
            ctx.grant.recording.ends_with("-sync")
        }
        NodeRecording::AtProxy => {
            tracing::debug!(session_id, mode = %ctx.grant.recording, "session recorded at the proxy; the node does not record it");
            return Ok(None);
        }
        NodeRecording::Node => false,
        NodeRecording::NodeSync => true,
    };
    let (term, size) = req.pty.clone().unwrap_or_default();
    let meta = hop_storage::recording::RecordingMeta {
        session_id: session_id.to_string(),
        kind: hop_storage::recording::KIND_SSH.to_string(),
        cluster: ctx.shared.cluster.clone(),
        user: ctx.grant.identity.username.clone(),
        login: ctx.grant.login.clone(),
        server_id: ctx.shared.host_id.clone(),
        server_name: ctx.shared.nodename.clone(),
        start_unix_us: clock::wall()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0),
        cols: size.cols,
        rows: size.rows,
        term: if term.is_empty() {
            "xterm".into()
        } else {
            term
        },
    };
    let failed = {
        let (shared, user, login, remote, sid) = (
            ctx.shared.clone(),
            ctx.grant.identity.username.clone(),
            ctx.grant.login.clone(),
            ctx.client_addr.clone(),
            session_id.to_string(),
        );
        move |why: String| {
            let ev = shared
                .audit
                .event(EventKind::SessionRecording, &user)
                .remote_str(&remote)
                .field("login", login)
                .field("session_id", sid)
                .field("mode", if strict { "node-sync" } else { "node" });
            shared
                .audit
                .emit(ev.failed(EventKind::SessionRecording, why));
        }
    };
    let started = clock::now();
    let on_failure = Box::new(failed.clone());
    match ctx
        .shared
        .recordings
        .start(meta, strict, started, on_failure)
    {
        Ok(rec) => {
            if let Program::Exec(cmd) = program {
                let ev = serde_json::json!({"type": "exec", "command": truncate(cmd, 4096)});
                rec.event(Duration::ZERO, ev);
            }
            Ok(Some((rec, started)))
        }
        Err(e) if strict => {
            failed(format!("{e}; the session was refused"));
            Err(SessionError::RecordingRequired(e))
        }
        Err(e) => {
            tracing::warn!(session_id, error = %e, "session not recorded");
            failed(format!("{e}; the session went on unrecorded"));
            Ok(None)
        }
    }
}

fn exit_of(status: std::process::ExitStatus) -> (u32, Option<Sig>) {
    use std::os::unix::process::ExitStatusExt;
    if let Some(c) = status.code() {
        return (u32::try_from(c).unwrap_or(255), None);
    }
    let sig = status.signal().unwrap_or(0);
    let name = match sig {
        libc::SIGABRT => Sig::ABRT,
        libc::SIGALRM => Sig::ALRM,
        libc::SIGFPE => Sig::FPE,
        libc::SIGHUP => Sig::HUP,
        libc::SIGILL => Sig::ILL,
        libc::SIGINT => Sig::INT,
        libc::SIGKILL => Sig::KILL,
        libc::SIGPIPE => Sig::PIPE,
        libc::SIGQUIT => Sig::QUIT,
        libc::SIGSEGV => Sig::SEGV,
        libc::SIGTERM => Sig::TERM,
        libc::SIGUSR1 => Sig::USR1,
        _ => Sig::Custom(format!("SIG{sig}")),
    };
    (128 + u32::try_from(sig).unwrap_or(0), Some(name))
}

fn signal_number(s: &Sig) -> Option<i32> {
    Some(match s {
        Sig::ABRT => libc::SIGABRT,
        Sig::ALRM => libc::SIGALRM,
        Sig::FPE => libc::SIGFPE,
        Sig::HUP => libc::SIGHUP,
        Sig::ILL => libc::SIGILL,
        Sig::INT => libc::SIGINT,
        Sig::KILL => libc::SIGKILL,
        Sig::PIPE => libc::SIGPIPE,
        Sig::QUIT => libc::SIGQUIT,
        Sig::SEGV => libc::SIGSEGV,
        Sig::TERM => libc::SIGTERM,
        Sig::USR1 => libc::SIGUSR1,
        Sig::Custom(_) => return None,
    })
}

async fn report_exit(
    ctx: &SessionContext,
    id: ChannelId,
    writer: &russh::ChannelWriteHalf<Msg>,
    status: std::process::ExitStatus,
) -> u32 {
    let (code, sig) = exit_of(status);
    match sig {
        Some(sig) => {
            let _ = ctx
                .handle
                .exit_signal_request(id, sig, false, String::new(), String::new())
                .await;
        }
        None => {
            let _ = writer.exit_status(code).await;
        }
    }
    code
}

/// A session without a terminal: pipes for the three standard streams.
async fn pipe_session(
    ctx: &SessionContext,
    id: ChannelId,
    mut reader: russh::ChannelReadHalf,
    writer: Arc<russh::ChannelWriteHalf<Msg>>,
    mut cmd: std::process::Command,
    account: Option<Account>,
    mut sftp: Option<SftpAudit>,
) -> Result<Outcome, SessionError> {
    pty::prepare_child(
        &mut cmd,
        ChildSetup {
            new_session: true,
            controlling_tty: false,
            switch_to: account,
        },
    );
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .map_err(SessionError::Program)?;
    let pid = child.id().unwrap_or(0);
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take().ok_or(SessionError::NoPipe("stdout"))?;
    let mut stderr = child.stderr.take().ok_or(SessionError::NoPipe("stderr"))?;
    let out_w = writer.clone();
    let out = tokio::spawn(async move {
        let mut w = out_w.make_writer();
        tokio::io::copy(&mut stdout, &mut w).await.unwrap_or(0)
    });
    let err_w = writer.clone();
    let err = tokio::spawn(async move {
        let mut w = err_w.make_writer_ext(Some(1));
        tokio::io::copy(&mut stderr, &mut w).await.unwrap_or(0)
    });
    let mut bytes_in = 0u64;
    let status = loop {
        tokio::select! {
            st = child.wait() => break st.map_err(SessionError::Io)?,
            msg = reader.wait() => match msg {
                Some(ChannelMsg::Data { data }) => {
                    bytes_in += data.len() as u64;
                    if let Some(a) = &mut sftp {
                        a.feed(&data);
                    }
                    if let Some(s) = &mut stdin
                        && s.write_all(&data).await.is_err()
                    {
                        stdin = None;
                    }
                }
                Some(ChannelMsg::Eof) => stdin = None,
                Some(ChannelMsg::Signal { signal }) => {
                    if let Some(n) = signal_number(&signal) {
                        let _ = pty::signal_process(pid, n);
                    }
                }
                Some(ChannelMsg::Close) | None => {
                    let _ = child.start_kill();
                    break child.wait().await.map_err(SessionError::Io)?;
                }
                Some(_) => {}
            },
        }
    };
    drop(stdin);
    // The streams end when every holder of their write ends has exited.
    let bytes_out = out.await.unwrap_or(0) + err.await.unwrap_or(0);
    let exit_code = report_exit(ctx, id, &writer, status).await;
    Ok(Outcome {
        exit_code,
        bytes_in,
        bytes_out,
        terminated_by: None,
    })
}

/// Per-operation audit of an sftp session: the client's requests, read from the bytes on their
/// way to sftp-server (WRITE data is never buffered). An unreadable stream stops the auditing
/// (said once), not the session.
struct SftpAudit {
    scanner: hop_protocols::sftp::SftpScanner,
    audit: super::audit::AgentAudit,
    user: String,
    login: String,
    client_addr: String,
    session_id: String,
    working: bool,
}

impl SftpAudit {
    fn new(ctx: &SessionContext, session_id: &str) -> Self {
        Self {
            scanner: hop_protocols::sftp::SftpScanner::default(),
            audit: ctx.shared.audit.clone(),
            user: ctx.grant.identity.username.clone(),
            login: ctx.grant.login.clone(),
            client_addr: ctx.client_addr.clone(),
            session_id: session_id.to_string(),
            working: true,
        }
    }

    fn feed(&mut self, chunk: &[u8]) {
        use hop_protocols::sftp::{ScannedRequest, SftpRequest, open_flags};
        if !self.working {
            return;
        }
        let mut events = Vec::new();
        let mut feed = self.scanner.feed(chunk);
        loop {
            match feed.next() {
                Ok(None) => break,
                Ok(Some(ScannedRequest::Request(r))) => {
                    let Some(op) = r.op() else { continue };
                    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                    let (path, to, flags) = match &r {
                        SftpRequest::Open { path, pflags, .. } => {
                            let mut f = Vec::new();
                            for (bit, name) in [
                                (open_flags::READ, "read"),
                                (open_flags::WRITE, "write"),
                                (open_flags::APPEND, "append"),
                                (open_flags::CREAT, "create"),
                                (open_flags::TRUNC, "truncate"),
                                (open_flags::EXCL, "exclusive"),
                            ] {
                                if pflags & bit != 0 {
                                    f.push(name);
                                }
                            }
                            (text(path), None, Some(f.join(",")))
                        }
                        SftpRequest::Rename { from, to, .. }
                        | SftpRequest::Hardlink { from, to, .. } => {
                            (text(from), Some(text(to)), None)
                        }
                        SftpRequest::Symlink { link, target, .. } => {
                            (text(link), Some(text(target)), None)
                        }
                        SftpRequest::Remove { path, .. }
                        | SftpRequest::Mkdir { path, .. }
                        | SftpRequest::Rmdir { path, .. }
                        | SftpRequest::SetStat { path, .. }
                        | SftpRequest::OpenDir { path, .. } => (text(path), None, None),
                        SftpRequest::Init { .. } | SftpRequest::Other { .. } => continue,
                    };
                    events.push((op, path, to, flags));
                }
                Ok(Some(ScannedRequest::Skipped { .. })) => {}
                Err(e) => {
                    self.working = false;
                    events.push(("unreadable", e.to_string(), None, None));
                    break;
                }
            }
        }
        for (op, path, to, flags) in events {
            let mut ev = self
                .audit
                .event(EventKind::Sftp, &self.user)
                .remote_str(&self.client_addr)
                .field("login", self.login.clone())
                .field("session_id", self.session_id.clone())
                .field("op", op);
            if op == "unreadable" {
                ev = ev.failed(
                    EventKind::Sftp,
                    format!("sftp stream not understood, later operations are not audited: {path}"),
                );
            } else {
                ev = ev.field("path", truncate(&path, 4096));
            }
            if let Some(t) = to {
                ev = ev.field("to", truncate(&t, 4096));
            }
            if let Some(f) = flags {
                ev = ev.field("flags", f);
            }
            self.audit.emit(ev);
        }
    }
}

/// The PTY master, readable and writable without blocking the runtime.
struct Master(AsyncFd<std::fs::File>);

impl Master {
    fn new(fd: OwnedFd) -> std::io::Result<Self> {
        Ok(Self(pty::async_master(fd)?))
    }

    /// `Ok(0)` at the end (the last holder of the terminal closed it).
    async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let mut guard = self.0.readable().await?;
            match guard.try_io(|f| f.get_ref().read(buf)) {
                Ok(Ok(n)) => return Ok(n),
                // Linux answers EIO once no process holds the terminal open.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    async fn write_all(&self, mut buf: &[u8]) -> std::io::Result<()> {
        while !buf.is_empty() {
            let mut guard = self.0.writable().await?;
            match guard.try_io(|f| f.get_ref().write(buf)) {
                Ok(Ok(n)) => buf = &buf[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}

/// How long a notice may wait for the client's window: a client that stops reading does not
/// hold a moderated session's decisions back.
const NOTICE_LIMIT: Duration = Duration::from_secs(1);

/// Tells the owner (and the recording, so that playback shows who took part) `note`.
async fn show_notice(writer: &russh::ChannelWriteHalf<Msg>, recording: &Recording, note: &str) {
    let line = format!("\r\n[hop: {note}]\r\n");
    if let Some((rec, t0)) = recording {
        rec.output(clock::since(*t0), line.as_bytes());
    }
    let _ = tokio::time::timeout(
        NOTICE_LIMIT,
        writer.make_writer_ext(Some(1)).write_all(line.as_bytes()),
    )
    .await;
}

/// Holds a moderated session's start until its requirements are met, telling the owner what it
/// waits for and who comes and goes; keystrokes meanwhile are dropped. False: the owner left
/// first.
async fn wait_for_moderators(
    ctx: &SessionContext,
    reader: &mut russh::ChannelReadHalf,
    writer: &russh::ChannelWriteHalf<Msg>,
    party: (&super::party::LiveSession, &mut watch::Receiver<u64>),
    notices: &mut tokio::sync::mpsc::Receiver<String>,
    peer_input: &mut tokio::sync::mpsc::Receiver<Vec<u8>>,
    recording: &Recording,
) -> bool {
    let (live, changes) = party;
    let mut terminations = live.terminations();
    loop {
        // Seen before deciding: a departure after this is a change the session acts on.
        changes.borrow_and_update();
        let Some(why) = super::moderation::unmet(&ctx.grant, live) else {
            show_notice(
                writer,
                recording,
                "the required participants are here; the session starts",
            )
            .await;
            return true;
        };
        let line = super::moderation::waiting_line(&why);
        let _ = tokio::time::timeout(
            NOTICE_LIMIT,
            writer.make_writer_ext(Some(1)).write_all(line.as_bytes()),
        )
        .await;
        loop {
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return false;
                    }
                    break;
                }
                Some(note) = notices.recv() => show_notice(writer, recording, &note).await,
                Ok(()) = terminations.changed() => {
                    let by = terminations.borrow_and_update().clone();
                    if let Some(by) = by {
                        let line = format!("moderator {by} ended the session before it started");
                        show_notice(writer, recording, &line).await;
                        return false;
                    }
                }
                // A peer's keystrokes before the start go nowhere.
                Some(_) = peer_input.recv() => {}
                msg = reader.wait() => match msg {
                    Some(ChannelMsg::Close | ChannelMsg::Eof) | None => return false,
                    Some(_) => {}
                },
            }
        }
    }
}

/// Waits for a shell told to hang up; one that ignores it is killed after a moment.
async fn end_child(
    child: &mut tokio::process::Child,
    pid: u32,
) -> Result<std::process::ExitStatus, SessionError> {
    if let Ok(status) = tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
        return status.map_err(SessionError::Io);
    }
    let _ = pty::signal_process(pid, libc::SIGKILL);
    child.wait().await.map_err(SessionError::Io)
}

#[allow(clippy::too_many_arguments)]
async fn pty_session(
    ctx: &SessionContext,
    id: ChannelId,
    mut reader: russh::ChannelReadHalf,
    writer: Arc<russh::ChannelWriteHalf<Msg>>,
    mut cmd: std::process::Command,
    account: Option<Account>,
    size: WindowSize,
    recording: Recording,
    hosted: super::party::Hosted,
) -> Result<Outcome, SessionError> {
    let super::party::Hosted {
        live,
        input: mut peer_input,
        notices: mut party_notices,
        guard: _party,
    } = hosted;
    let moderated = !ctx.grant.moderation.is_empty();
    let mut moderation = live.changes();
    if moderated
        && !wait_for_moderators(
            ctx,
            &mut reader,
            &writer,
            (&live, &mut moderation),
            &mut party_notices,
            &mut peer_input,
            &recording,
        )
        .await
    {
        return Ok(Outcome {
            exit_code: 255,
            bytes_in: 0,
            bytes_out: 0,
            terminated_by: live.terminations().borrow().clone(),
        });
    }
    let mut paused = false;
    let mut terminated_by = None;
    let mut terminations = live.terminations();
    let pair = pty::open_pty(size).map_err(SessionError::OpenTerminal)?;
    let slave = |p: &OwnedFd| -> Result<Stdio, SessionError> {
        p.try_clone()
            .map(Stdio::from)
            .map_err(SessionError::Terminal)
    };
    cmd.stdin(slave(&pair.slave)?)
        .stdout(slave(&pair.slave)?)
        .stderr(slave(&pair.slave)?);
    pty::prepare_child(
        &mut cmd,
        ChildSetup {
            new_session: true,
            controlling_tty: true,
            switch_to: account,
        },
    );
    let mut child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .map_err(SessionError::Shell)?;
    // Only the child holds the terminal now, so its end is seen as EIO on the master.
    drop(pair.slave);
    let pid = child.id().unwrap_or(0);
    let master = Arc::new(Master::new(pair.master).map_err(SessionError::Io)?);
    let out_master = master.clone();
    let out_writer = writer.clone();
    let out_rec = recording.clone();
    let out_live = live.clone();
    let pump = tokio::spawn(async move {
        let mut w = out_writer.make_writer();
        let mut buf = vec![0u8; 16 * 1024];
        let mut total = 0u64;
        loop {
            let n = match out_master.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            total += n as u64;
            if let Some((rec, t0)) = &out_rec {
                rec.output(clock::since(*t0), &buf[..n]);
            }
            out_live.publish(&buf[..n]);
            if w.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = w.flush().await;
        total
    });
    let mut bytes_in = 0u64;
    // The role's client_idle_timeout: no keystroke for that long ends the session.
    let idle = ctx.grant.idle_timeout.filter(|d| !d.is_zero());
    let mut last_input = clock::tokio_now();
    let status = loop {
        let idle_deadline = idle.map(|d| last_input + d);
        tokio::select! {
            st = child.wait() => break st.map_err(SessionError::Io)?,
            _ = async {
                match idle_deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => {
                let _ = writer
                    .make_writer_ext(Some(1))
                    .write_all(b"\r\nhop: idle timeout reached; closing the session\r\n")
                    .await;
                let _ = pty::signal_process(pid, libc::SIGHUP);
                break child.wait().await.map_err(SessionError::Io)?;
            }
            why = async {
                match &recording {
                    Some((rec, _)) => rec.failure().await,
                    None => std::future::pending().await,
                }
            } => {
                let msg = format!(
                    "\r\nhop: the session recording failed ({why}); this session must be recorded (node-sync), so it is closed\r\n"
                );
                let _ = writer.make_writer_ext(Some(1)).write_all(msg.as_bytes()).await;
                let _ = pty::signal_process(pid, libc::SIGHUP);
                break child.wait().await.map_err(SessionError::Io)?;
            }
            Ok(()) = terminations.changed() => {
                let Some(by) = terminations.borrow_and_update().clone() else {
                    continue;
                };
                let _ = pty::signal_process(pid, libc::SIGHUP);
                show_notice(&writer, &recording, &format!("moderator {by} ended the session")).await;
                terminated_by = Some(by);
                break end_child(&mut child, pid).await?;
            }
            changed = moderation.changed(), if moderated => {
                if changed.is_err() {
                    continue;
                }
                match super::moderation::unmet(&ctx.grant, &live) {
                    Some(why) => match super::moderation::on_leave(&ctx.grant, &live) {
                        OnLeave::Terminate => {
                            let _ = pty::signal_process(pid, libc::SIGHUP);
                            let line = format!("the session ends: it needs {why}");
                            show_notice(&writer, &recording, &line).await;
                            break end_child(&mut child, pid).await?;
                        }
                        OnLeave::Pause => {
                            if !paused {
                                let line = format!("the session is paused until {why} joined; keystrokes are ignored");
                                show_notice(&writer, &recording, &line).await;
                            }
                            paused = true;
                        }
                    },
                    None if paused => {
                        paused = false;
                        show_notice(&writer, &recording, "the session resumes").await;
                    }
                    None => {}
                }
            }
            Some(data) = peer_input.recv() => {
                if paused {
                    continue;
                }
                // A peer's keystrokes (`hop join --mode peer`) count as the session's input.
                last_input = clock::tokio_now();
                if let Some((rec, t0)) = &recording {
                    rec.input(clock::since(*t0), &data);
                }
                if master.write_all(&data).await.is_err() {
                    break child.wait().await.map_err(SessionError::Io)?;
                }
            }
            Some(note) = party_notices.recv() => {
                show_notice(&writer, &recording, &note).await;
            }
            msg = reader.wait() => match msg {
                Some(ChannelMsg::Data { .. }) if paused => {}
                Some(ChannelMsg::Data { data }) => {
                    bytes_in += data.len() as u64;
                    last_input = clock::tokio_now();
                    if let Some((rec, t0)) = &recording {
                        rec.input(clock::since(*t0), &data);
                    }
                    if master.write_all(&data).await.is_err() {
                        break child.wait().await.map_err(SessionError::Io)?;
                    }
                }
                Some(ChannelMsg::WindowChange { col_width, row_height, pix_width, pix_height }) => {
                    let ws = window(col_width, row_height, pix_width, pix_height);
                    let _ = pty::set_window_size(master.0.get_ref(), ws);
                    if let Some((rec, t0)) = &recording {
                        rec.resize(clock::since(*t0), ws.cols, ws.rows);
                    }
                }
                Some(ChannelMsg::Signal { signal }) => {
                    if let Some(n) = signal_number(&signal) {
                        let _ = pty::signal_process(pid, n);
                    }
                }
                Some(ChannelMsg::Close) | None => {
                    let _ = pty::signal_process(pid, libc::SIGHUP);
                    break child.wait().await.map_err(SessionError::Io)?;
                }
                Some(_) => {}
            },
        }
    };
    // Output still in the terminal after the shell exits; a background process that keeps the
    // terminal open must not hold the session forever.
    let bytes_out = match tokio::time::timeout(Duration::from_millis(500), pump).await {
        Ok(r) => r.unwrap_or(0),
        Err(_) => 0,
    };
    let exit_code = report_exit(ctx, id, &writer, status).await;
    if let Some((rec, t0)) = recording {
        rec.finish(clock::since(t0), i32::try_from(exit_code).ok());
    }
    Ok(Outcome {
        exit_code,
        bytes_in,
        bytes_out,
        terminated_by,
    })
}
