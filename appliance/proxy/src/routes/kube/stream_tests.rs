use std::sync::Mutex as StdMutex;
use std::time::{Duration, UNIX_EPOCH};

use hop_auth::AuthSettings;
use hop_auth::audit::{AuditEvent, AuditSink};
use hop_protocols::kube::stream::spdy::SpdyEncoder;
use hop_protocols::kube::stream::websocket::encode_frame;
use hop_rbac::moderation::SessionJoinRequirement;
use hop_storage::recording::{
    AsciicastOptions, OwnedEvent, Recording, RecordingStore, export_asciicast,
};
use hop_storage::{Clock, ManualClock, MemoryBackend, ResourceStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;

const SESSION: &str = "0123abcd-0000-4000-8000-00000000c0de";
const KEY: [u8; 4] = [1, 2, 3, 4];

#[derive(Debug, Default)]
struct Recorded(StdMutex<Vec<AuditEvent>>);

impl AuditSink for Recorded {
    fn emit(&self, event: AuditEvent) {
        self.0.lock().unwrap().push(event);
    }
}

impl Recorded {
    fn named(&self, name: &str) -> Vec<serde_json::Value> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .filter(|e| e["event"] == name)
            .collect()
    }
}

struct Fixture {
    auth: Arc<AuthServer>,
    audit: Arc<Recorded>,
    store: Arc<RecordingStore>,
    _dir: tempfile::TempDir,
}

fn fixture(recording: &str) -> Fixture {
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let c: Arc<dyn Clock> = Arc::new(clock);
    let audit = Arc::new(Recorded::default());
    let settings = AuthSettings {
        cluster_name: Some("unit.test".into()),
        second_factor: "otp".into(),
        max_failed_attempts: 5,
        lockout: Duration::from_secs(1800),
        attempts_per_ip_per_minute: 1000,
        invite_ttl: Duration::from_secs(3600),
        web_addr: "proxy:3080".into(),
        session_recording: recording.into(),
        proxy_public_names: Vec::new(),
        webauthn: Default::default(),
    };
    let auth = AuthServer::open(
        ResourceStore::new(Arc::new(MemoryBackend::new(c.clone()))),
        c,
        settings,
        audit.clone(),
        Arc::new(hop_metrics::Metrics::default()),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RecordingStore::open_dir(&dir.path().join("rec")).unwrap());
    Fixture {
        auth: Arc::new(auth),
        audit,
        store,
        _dir: dir,
    }
}

fn context(
    f: &Fixture,
    path_and_query: &str,
) -> (StreamContext, tokio::sync::watch::Sender<Option<String>>) {
    let request = hop_protocols::kube::request::parse("POST", path_and_query).unwrap();
    let (tx, rx) = tokio::sync::watch::channel(None);
    let ctx = StreamContext {
        auth: f.auth.clone(),
        recordings: Some(f.store.clone()),
        user: "alice".into(),
        cluster: "dev".into(),
        request,
        impersonated: KubeImpersonation {
            user: "alice-dev".into(),
            groups: vec!["developers".into()],
        },
        remote: "127.0.0.1:5555".parse().unwrap(),
        session_id: SESSION.into(),
        query: path_and_query.split_once('?').map_or("", |(_, q)| q).into(),
        end: rx,
        idle: IDLE,
        moderation: None,
    };
    (ctx, tx)
}

/// Starts a relay between two in-memory pipes; answers the client's and the agent's far ends.
fn start(
    protocol: StreamProtocol,
    ctx: StreamContext,
) -> (DuplexStream, DuplexStream, tokio::task::JoinHandle<()>) {
    let (client, client_far) = tokio::io::duplex(1 << 20);
    let (agent, agent_far) = tokio::io::duplex(1 << 20);
    let task = tokio::spawn(relay(client, agent, protocol, ctx));
    (client_far, agent_far, task)
}

async fn read_exactly(s: &mut DuplexStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .expect("bytes in time")
        .unwrap();
    buf
}

async fn read_to_end(s: &mut DuplexStream) -> Vec<u8> {
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("the far side closed in time")
        .unwrap();
    buf
}

fn played(store: &RecordingStore) -> Vec<OwnedEvent> {
    let bytes = store.read(SESSION).unwrap();
    let recording = Recording::parse(&bytes).unwrap();
    recording.check().unwrap();
    // What `hop play` and the web player read: the asciicast export of the same bytes.
    let mut cast = Vec::new();
    export_asciicast(&recording, &AsciicastOptions::default(), &mut cast).unwrap();
    assert!(String::from_utf8_lossy(&cast).contains("alice-dev@default/web-1"));
    recording
        .events()
        .map(|e| e.unwrap().event.to_owned_event())
        .collect()
}

const EXEC: &str = "/api/v1/namespaces/default/pods/web-1/exec?command=sh&command=-i&stdin=true&stdout=true&tty=true";

#[tokio::test]
async fn a_websocket_exec_is_relayed_recorded_and_audited() {
    let f = fixture("proxy");
    let (ctx, _end) = context(&f, EXEC);
    let (mut client, mut agent, task) = start(StreamProtocol::WebSocket, ctx);

    let up = [
        encode_frame(true, 2, b"\x04{\"Width\":100,\"Height\":30}", Some(KEY)),
        encode_frame(true, 2, b"\x00echo hi\n", Some(KEY)),
    ]
    .concat();
    client.write_all(&up).await.unwrap();
    assert_eq!(
        read_exactly(&mut agent, up.len()).await,
        up,
        "byte for byte"
    );

    let status = br#"{"metadata":{},"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;
    let down = [
        encode_frame(true, 2, b"\x01hi\r\n", None),
        encode_frame(true, 2, &[&[3u8][..], status].concat(), None),
        encode_frame(true, 8, &[0x03, 0xe8], None),
    ]
    .concat();
    agent.write_all(&down).await.unwrap();
    drop(agent);
    assert_eq!(read_to_end(&mut client).await, down);
    drop(client);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();

    let events = f.audit.named("kube.exec");
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["phase"], "start");
    assert_eq!(events[0]["command"], "sh -i");
    assert_eq!(events[0]["pod"], "web-1");
    assert_eq!(events[0]["namespace"], "default");
    assert_eq!(events[0]["kube_user"], "alice-dev");
    assert_eq!(events[1]["phase"], "end");
    assert_eq!(events[1]["exit_status"], 3);
    assert_eq!(events[1]["success"], true);
    assert_eq!(events[1]["code"], "H7001I");

    assert_eq!(
        played(&f.store),
        vec![
            OwnedEvent::Json(r#"{"command":"sh -i","type":"exec"}"#.into()),
            OwnedEvent::Resize {
                cols: 100,
                rows: 30
            },
            OwnedEvent::Input(b"echo hi\n".to_vec()),
            OwnedEvent::Output(b"hi\r\n".to_vec()),
            OwnedEvent::End {
                exit_status: Some(3)
            },
        ]
    );
}

#[tokio::test]
async fn a_spdy_exec_is_recorded_from_the_streams_the_client_opened() {
    let f = fixture("proxy");
    let (ctx, _end) = context(&f, EXEC);
    let (mut client, mut agent, task) = start(StreamProtocol::Spdy, ctx);

    let mut enc = SpdyEncoder::new();
    let mut up = Vec::new();
    for (id, t) in [(1, "error"), (3, "stdin"), (5, "stdout")] {
        up.extend(enc.syn_stream(id, &[("streamtype", t)]));
    }
    up.extend(SpdyEncoder::data(3, b"exit 0\n", false));
    client.write_all(&up).await.unwrap();
    assert_eq!(read_exactly(&mut agent, up.len()).await, up);

    let mut server = SpdyEncoder::new();
    let mut down = server.syn_reply(5, &[]);
    down.extend(SpdyEncoder::data(5, b"bye\r\n", true));
    down.extend(SpdyEncoder::data(1, br#"{"status":"Success"}"#, true));
    agent.write_all(&down).await.unwrap();
    drop(agent);
    assert_eq!(read_to_end(&mut client).await, down);
    drop(client);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();

    let events = played(&f.store);
    assert_eq!(
        events,
        vec![
            OwnedEvent::Json(r#"{"command":"sh -i","type":"exec"}"#.into()),
            OwnedEvent::Input(b"exit 0\n".to_vec()),
            OwnedEvent::Output(b"bye\r\n".to_vec()),
            OwnedEvent::End {
                exit_status: Some(0)
            },
        ]
    );
    assert_eq!(f.audit.named("kube.exec")[1]["exit_status"], 0);
}

#[tokio::test]
async fn bytes_a_decoder_cannot_follow_end_the_session_on_both_sides() {
    let f = fixture("proxy");
    let (ctx, _end) = context(&f, EXEC);
    let (mut client, mut agent, task) = start(StreamProtocol::WebSocket, ctx);
    // A client frame must be masked: this one is not.
    client
        .write_all(&encode_frame(true, 2, b"\x00rm -rf /\n", None))
        .await
        .unwrap();
    // Neither side gets the bytes; both are closed.
    assert!(read_to_end(&mut agent).await.is_empty());
    assert!(read_to_end(&mut client).await.is_empty());
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    let end = &f.audit.named("kube.exec")[1];
    assert_eq!(end["success"], false);
    assert_eq!(end["ended_by"], "undecodable");
    let error = end["error"].as_str().unwrap();
    assert!(
        error.contains("client") && error.contains("not masked"),
        "{error}"
    );
}

#[tokio::test]
async fn the_end_signal_closes_both_sides_at_once() {
    let f = fixture("proxy");
    let (ctx, end) = context(&f, EXEC);
    let (mut client, mut agent, task) = start(StreamProtocol::WebSocket, ctx);
    let hello = encode_frame(true, 2, b"\x01$ ", None);
    agent.write_all(&hello).await.unwrap();
    assert_eq!(read_exactly(&mut client, hello.len()).await, hello);

    end.send(Some("user alice was locked".into())).unwrap();
    let started = clock::now();
    assert!(read_to_end(&mut client).await.is_empty());
    assert!(read_to_end(&mut agent).await.is_empty());
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .unwrap()
        .unwrap();
    assert!(clock::since(started) < Duration::from_secs(1));
    let end = &f.audit.named("kube.exec")[1];
    assert_eq!(end["ended_by"], "terminated");
    assert_eq!(end["reason"], "user alice was locked");
    // The recording was closed too, and plays.
    assert_eq!(played(&f.store)[1], OwnedEvent::Output(b"$ ".to_vec()));
}

/// Bytes either way keep a stream; none for the idle deadline end it on both sides, audited
/// as `ended_by: idle`.
#[tokio::test]
async fn a_stream_without_bytes_for_the_idle_deadline_ends() {
    let f = fixture("off");
    let (mut ctx, _end) = context(&f, EXEC);
    ctx.idle = Duration::from_millis(400);
    let (mut client, mut agent, task) = start(StreamProtocol::WebSocket, ctx);
    let hello = encode_frame(true, 2, b"\x01$ ", None);
    let stdin = encode_frame(true, 2, b"\x00l", Some([1, 2, 3, 4]));
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        if i % 2 == 0 {
            agent.write_all(&hello).await.unwrap();
            assert_eq!(read_exactly(&mut client, hello.len()).await, hello);
        } else {
            client.write_all(&stdin).await.unwrap();
            assert_eq!(read_exactly(&mut agent, stdin.len()).await, stdin);
        }
    }
    assert!(!task.is_finished(), "a stream with bytes flowing ended");
    let quiet = clock::now();
    assert!(read_to_end(&mut client).await.is_empty());
    assert!(read_to_end(&mut agent).await.is_empty());
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .unwrap()
        .unwrap();
    let waited = clock::since(quiet);
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    let end = &f.audit.named("kube.exec")[1];
    assert_eq!(end["ended_by"], "idle", "{end}");
}

#[tokio::test]
async fn a_port_forward_is_audited_with_its_ports_and_not_recorded() {
    let f = fixture("proxy");
    let (ctx, _end) = context(
        &f,
        "/api/v1/namespaces/default/pods/web-1/portforward?ports=8080",
    );
    let (mut client, mut agent, task) = start(StreamProtocol::WebSocket, ctx);
    let up = encode_frame(true, 2, b"\x00GET / HTTP/1.0\r\n\r\n", Some(KEY));
    client.write_all(&up).await.unwrap();
    assert_eq!(read_exactly(&mut agent, up.len()).await, up);
    let down = [
        encode_frame(true, 2, &[0, 0x90, 0x1f], None),
        encode_frame(true, 2, b"\x00HTTP/1.0 200 OK\r\n\r\n", None),
    ]
    .concat();
    agent.write_all(&down).await.unwrap();
    drop(agent);
    assert_eq!(read_to_end(&mut client).await, down);
    drop(client);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    let events = f.audit.named("kube.portforward");
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["ports"], serde_json::json!([8080]));
    assert_eq!(events[1]["bytes_in"], up.len() as u64);
    assert!(
        f.store.read(SESSION).is_err(),
        "port-forward is not recorded"
    );
}

#[tokio::test]
async fn a_required_recording_that_cannot_start_refuses_the_session() {
    let f = fixture("proxy-sync");
    let (mut ctx, _end) = context(&f, EXEC);
    ctx.recordings = None;
    let (mut client, mut agent, task) = start(StreamProtocol::WebSocket, ctx);
    assert!(read_to_end(&mut client).await.is_empty());
    assert!(read_to_end(&mut agent).await.is_empty());
    task.await.unwrap();
    let end = &f.audit.named("kube.exec")[1];
    assert_eq!(end["success"], false);
    assert_eq!(end["ended_by"], "refused");
}

#[test]
fn the_protocol_comes_from_the_101() {
    let of = |pairs: &[(&'static str, &'static str)]| {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.insert(*n, v.parse().unwrap());
        }
        StreamProtocol::of_response(&h)
    };
    assert_eq!(of(&[("upgrade", "SPDY/3.1")]), Some(StreamProtocol::Spdy));
    let ws = |p: &'static str| of(&[("upgrade", "websocket"), ("sec-websocket-protocol", p)]);
    assert_eq!(ws("v5.channel.k8s.io"), Some(StreamProtocol::WebSocket));
    assert_eq!(ws("v4.channel.k8s.io"), Some(StreamProtocol::WebSocket));
    assert_eq!(ws("portforward.k8s.io"), Some(StreamProtocol::WebSocket));
    assert_eq!(
        ws("SPDY/3.1+portforward.k8s.io"),
        Some(StreamProtocol::WebSocketSpdy)
    );
    assert_eq!(ws("v4.base64.channel.k8s.io"), None);
    assert_eq!(of(&[("upgrade", "h2c")]), None);
    assert_eq!(
        of(&[("upgrade", "websocket")]),
        None,
        "no protocol negotiated"
    );
    assert_eq!(of(&[]), None);
}

#[test]
fn the_query_names_the_command_container_and_ports() {
    let p = Params::parse("command=sh&command=-c&command=echo+a%26b&container=app&tty=true");
    assert_eq!(p.command, ["sh", "-c", "echo a&b"]);
    assert_eq!(p.container.as_deref(), Some("app"));
    assert!(p.tty && !p.stdin);
    assert_eq!(
        Params::parse("ports=8080,80&ports=443").ports,
        [8080, 80, 443]
    );
}

/// Real kubectl 1.32 sessions (`protocols/testdata/capture_kube.sh`).
const EXEC_WS_CLIENT: &[u8] =
    include_bytes!("../../../../../protocols/testdata/kube/exec_ws_client.bin");
const EXEC_WS_SERVER: &[u8] =
    include_bytes!("../../../../../protocols/testdata/kube/exec_ws_server.bin");
const PF_CLIENT: &[u8] =
    include_bytes!("../../../../../protocols/testdata/kube/portforward_wsspdy_client.bin");
const PF_SERVER: &[u8] =
    include_bytes!("../../../../../protocols/testdata/kube/portforward_wsspdy_server.bin");

/// Relays a captured session: the client's bytes, then the server's; both arrive unchanged.
async fn replay(protocol: StreamProtocol, ctx: StreamContext, up: &[u8], down: &[u8]) {
    let (mut client, mut agent, task) = start(protocol, ctx);
    client.write_all(up).await.unwrap();
    assert_eq!(read_exactly(&mut agent, up.len()).await, up);
    agent.write_all(down).await.unwrap();
    drop(agent);
    assert_eq!(read_to_end(&mut client).await, down);
    drop(client);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_real_kubectl_exec_is_recorded_and_plays_back() {
    let f = fixture("proxy");
    let (ctx, _end) = context(
        &f,
        "/api/v1/namespaces/default/pods/web-1/exec?command=sh&container=c&stderr=true&stdin=true&stdout=true",
    );
    replay(
        StreamProtocol::WebSocket,
        ctx,
        EXEC_WS_CLIENT,
        EXEC_WS_SERVER,
    )
    .await;
    assert_eq!(
        played(&f.store),
        vec![
            OwnedEvent::Json(r#"{"command":"sh","type":"exec"}"#.into()),
            OwnedEvent::Input(b"echo hi\n".to_vec()),
            OwnedEvent::Output(b"echo hi\r\n".to_vec()),
            OwnedEvent::End {
                exit_status: Some(0)
            },
        ]
    );
    let end = &f.audit.named("kube.exec")[1];
    assert_eq!(
        (end["ended_by"].as_str(), end["success"].as_bool()),
        (Some("closed"), Some(true))
    );
}

#[tokio::test]
async fn a_real_kubectl_port_forward_over_spdy_in_websocket_is_followed() {
    let f = fixture("proxy");
    let (ctx, _end) = context(&f, "/api/v1/namespaces/default/pods/web-1/portforward");
    replay(StreamProtocol::WebSocketSpdy, ctx, PF_CLIENT, PF_SERVER).await;
    let end = &f.audit.named("kube.portforward")[1];
    assert_eq!(end["success"], true, "{end}");
    assert_eq!(end["bytes_out"], PF_SERVER.len() as u64);
}

/// A moderated context: `on_leave` for one `moderator` of role `auditor`, with `alice`'s
/// session hosted in `parties` (alice is the owner).
fn moderated(
    f: &Fixture,
    parties: &Arc<super::super::party::KubeParties>,
    on_leave: &str,
) -> (
    StreamContext,
    tokio::sync::watch::Sender<Option<String>>,
    super::super::party::PartyGuard,
) {
    let (mut ctx, end) = context(f, EXEC);
    let hosted = parties.host(SESSION, "alice").unwrap();
    let reqs = vec![SessionJoinRequirement {
        name: "auditors".into(),
        filter: r#"contains(user.spec.roles, "auditor")"#.into(),
        kinds: vec!["k8s".into()],
        count: 1,
        modes: vec!["moderator".into()],
        on_leave: Some(on_leave.into()),
    }];
    ctx.moderation = Some(Moderation {
        live: hosted.live,
        reqs,
        notices: hosted.notices,
        prelude: vec!["bob joined as moderator".into()],
        channel: 1,
    });
    (ctx, end, hosted.guard)
}

/// Joins `bob` (an auditor) as moderator; dropping the answer makes him leave.
fn join_bob(parties: &super::super::party::KubeParties) -> DuplexStream {
    let live = parties.get(SESSION).unwrap();
    let (ours, theirs) = tokio::io::duplex(1 << 16);
    let bob = super::super::party::Joiner {
        user: "bob".into(),
        roles: vec!["auditor".into()],
        mode: "moderator".into(),
    };
    tokio::spawn(super::super::party::serve_joiner(live, bob, theirs));
    ours
}

/// Reads the client's side until its stdout carries `want`; answers all stdout read.
async fn client_reads(client: &mut DuplexStream, out: &mut String, want: &str) {
    let mut d = hop_protocols::kube::stream::WsChannelDecoder::new(false);
    let mut buf = vec![0u8; 4096];
    while !out.contains(want) {
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {want:?} in {out:?}"))
            .unwrap();
        assert!(n > 0, "the client side closed before {want:?}: {out:?}");
        for c in d.feed(&buf[..n]).unwrap() {
            out.push_str(&String::from_utf8_lossy(&c.data));
        }
    }
}

#[tokio::test]
async fn a_paused_session_holds_the_owners_input_until_the_moderator_is_back() {
    let f = fixture("proxy");
    let parties = Arc::new(super::super::party::KubeParties::default());
    let (ctx, _end, _guard) = moderated(&f, &parties, "pause");
    let mut bob = join_bob(&parties);
    while parties.get(SESSION).unwrap().participants().is_empty() {
        tokio::task::yield_now().await;
    }
    let (mut client, mut agent, task) = start(StreamProtocol::WebSocket, ctx);
    let first = encode_frame(true, 2, b"\x00first\n", Some(KEY));
    client.write_all(&first).await.unwrap();
    assert_eq!(read_exactly(&mut agent, first.len()).await, first);
    // Output reaches the moderator.
    agent
        .write_all(&encode_frame(true, 2, b"\x01out-1\r\n", None))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("out-1") {
        let n = tokio::time::timeout(Duration::from_secs(5), bob.read(&mut buf))
            .await
            .expect("the moderator sees the output")
            .unwrap();
        assert!(n > 0);
        seen.extend_from_slice(&buf[..n]);
    }

    // bob leaves: paused; what alice types waits.
    drop(bob);
    let mut out = String::new();
    client_reads(&mut client, &mut out, "the session is paused").await;
    let held = encode_frame(true, 2, b"\x00held\n", Some(KEY));
    client.write_all(&held).await.unwrap();
    let mut none = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), agent.read(&mut none))
            .await
            .is_err(),
        "input reached the pod while paused"
    );

    // bob is back: resumed, the held input goes in.
    let _bob = join_bob(&parties);
    client_reads(&mut client, &mut out, "the session resumes").await;
    assert_eq!(read_exactly(&mut agent, held.len()).await, held);
    drop((client, agent));
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .unwrap()
        .unwrap();
    let output: Vec<u8> = played(&f.store)
        .into_iter()
        .filter_map(|e| match e {
            OwnedEvent::Output(o) => Some(o),
            _ => None,
        })
        .flatten()
        .collect();
    let output = String::from_utf8_lossy(&output);
    for line in ["bob joined as moderator", "bob left", "paused", "resumes"] {
        assert!(output.contains(line), "{line:?} not recorded: {output}");
    }
}

#[tokio::test]
async fn a_terminating_session_ends_when_its_moderator_leaves() {
    let f = fixture("proxy");
    let parties = Arc::new(super::super::party::KubeParties::default());
    let (ctx, _end, _guard) = moderated(&f, &parties, "terminate");
    let bob = join_bob(&parties);
    while parties.get(SESSION).unwrap().participants().is_empty() {
        tokio::task::yield_now().await;
    }
    let (mut client, mut agent, task) = start(StreamProtocol::WebSocket, ctx);
    // A notice waits for the end of a message the server is in the middle of.
    let frame = encode_frame(true, 2, b"\x01whole-message\r\n", None);
    agent.write_all(&frame[..5]).await.unwrap();
    drop(bob);
    tokio::time::sleep(Duration::from_millis(100)).await;
    agent.write_all(&frame[5..]).await.unwrap();
    let mut out = String::new();
    client_reads(&mut client, &mut out, "the session ends").await;
    assert!(
        out.contains("whole-message\r\n"),
        "the notice went inside the server's message: {out:?}"
    );
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    read_to_end(&mut agent).await;
    let end = f.audit.named("kube.exec").pop().unwrap();
    assert_eq!(end["ended_by"], "terminated", "{end}");
    assert!(end["reason"].as_str().unwrap().contains("moderators left"));
}

#[tokio::test]
async fn a_moderator_ends_the_session_for_everyone() {
    let f = fixture("proxy");
    let parties = Arc::new(super::super::party::KubeParties::default());
    let (ctx, _end, _guard) = moderated(&f, &parties, "pause");
    let mut bob = join_bob(&parties);
    while parties.get(SESSION).unwrap().participants().is_empty() {
        tokio::task::yield_now().await;
    }
    let (mut client, mut agent, task) = start(StreamProtocol::WebSocket, ctx);
    bob.write_all(hop_api::dial::join::MODERATOR_TERMINATE)
        .await
        .unwrap();
    let mut out = String::new();
    client_reads(&mut client, &mut out, "bob ended the session").await;
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    read_to_end(&mut agent).await;
    let end = f.audit.named("kube.exec").pop().unwrap();
    assert_eq!(end["ended_by"], "moderator", "{end}");
    assert_eq!(end["terminated_by"], "bob", "{end}");
}
