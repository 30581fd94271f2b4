//! The sender against a stand-in Auth over gRPC: packed events, the JSON fallback for an Auth
//! older than `EmitEventsPacked`, and batching of a steady stream.

use std::sync::Mutex;

use hop_api::proto::auth_public_server::{AuthPublic, AuthPublicServer};
use hop_api::proto::*;
use tonic::{Request, Response, Status};

use super::*;

/// What the stand-in Auth received: the rpc and how many events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Packed(usize),
    Json(usize),
    /// `EmitEventsPacked` on an Auth that does not have it.
    Unimplemented,
}

#[derive(Clone, Default)]
struct StubAuth {
    /// An Auth older than `EmitEventsPacked`.
    old: bool,
    calls: Arc<Mutex<Vec<Call>>>,
    events: Arc<Mutex<Vec<AuditEvent>>>,
}

macro_rules! stub_auth {
    ($($rpc:ident($req:ident) -> $resp:ident;)*) => {
        #[tonic::async_trait]
        impl AuthPublic for StubAuth {
            $(async fn $rpc(&self, _: Request<$req>) -> Result<Response<$resp>, Status> {
                Err(Status::unimplemented(stringify!($rpc)))
            })*

            async fn emit_events(
                &self,
                req: Request<EmitEventsRequest>,
            ) -> Result<Response<EmitEventsResponse>, Status> {
                let json = req.into_inner().events_json;
                self.calls.lock().unwrap().push(Call::Json(json.len()));
                let now = clock::wall();
                self.events
                    .lock()
                    .unwrap()
                    .extend(json.iter().map(|j| AuditEvent::from_json(j, now).unwrap()));
                Ok(Response::new(EmitEventsResponse::default()))
            }

            async fn emit_events_packed(
                &self,
                req: Request<EmitEventsPackedRequest>,
            ) -> Result<Response<EmitEventsResponse>, Status> {
                if self.old {
                    self.calls.lock().unwrap().push(Call::Unimplemented);
                    return Err(Status::unimplemented("EmitEventsPacked"));
                }
                let decoded =
                    hop_api::audit_wire::decode_batch(&req.into_inner().events, clock::wall())
                        .map_err(|e| Status::invalid_argument(e.to_string()))?;
                self.calls.lock().unwrap().push(Call::Packed(decoded.len()));
                self.events
                    .lock()
                    .unwrap()
                    .extend(decoded.into_iter().map(Result::unwrap));
                Ok(Response::new(EmitEventsResponse::default()))
            }
        }
    };
}

stub_auth! {
    ping(PingRequest) -> PingResponse;
    complete_signup(CompleteSignupRequest) -> CompleteSignupResponse;
    login(LoginRequest) -> LoginResponse;
    join(JoinRequest) -> JoinResponse;
    renew_host_certificate(RenewHostCertificateRequest) -> JoinResponse;
    list_apps(ListAppsRequest) -> ListAppsResponse;
    list_nodes(ListNodesRequest) -> ListNodesResponse;
    get_node_access(NodeAccessRequest) -> NodeAccessResponse;
    update_session_tracker(UpdateSessionTrackerRequest) -> Empty;
    list_sessions(ListSessionsRequest) -> ListSessionsResponse;
    get_trust(GetTrustRequest) -> TrustResponse;
    begin_webauthn_login(BeginWebauthnLoginRequest) -> WebauthnChallenge;
    list_mfa_devices(ListMfaDevicesRequest) -> ListMfaDevicesResponse;
    begin_mfa_change(BeginMfaChangeRequest) -> MfaChangeChallenge;
    add_mfa_device(AddMfaDeviceRequest) -> MfaDevice;
    remove_mfa_device(RemoveMfaDeviceRequest) -> Empty;
    begin_session_mfa(BeginSessionMfaRequest) -> SessionMfaChallenge;
    issue_session_mfa_cert(IssueSessionMfaCertRequest) -> SessionMfaCert;
}

/// Serves `auth` on a local port; the agent's connections go there.
async fn serve(auth: StubAuth) -> ChannelMaker {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AuthPublicServer::new(auth))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    Arc::new(move || {
        Box::pin(async move {
            let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .map_err(|e| hop_net::connect::ConnectError::Unreachable {
                    addr: addr.to_string(),
                    cause: std::io::Error::other(e),
                })?;
            Ok(endpoint.connect_lazy())
        })
    })
}

fn audit_to(connect: ChannelMaker) -> AgentAudit {
    AgentAudit::start("c".into(), "db1".into(), connect, None).unwrap()
}

fn query(audit: &AgentAudit, i: usize) -> AuditEvent {
    audit
        .event(EventKind::DbQuery, "alice")
        .field("session_id", "s-1")
        .field(
            "statement",
            format!("SELECT abalance FROM pgbench_accounts WHERE aid = {i}"),
        )
        .field("parameters", serde_json::json!(["1", null]))
}

async fn until_delivered(auth: &StubAuth, n: usize) {
    for _ in 0..1000 {
        if auth.events.lock().unwrap().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{n} events not delivered: {:?}", auth.calls.lock().unwrap());
}

#[tokio::test]
async fn events_go_packed_to_an_auth_that_takes_them() {
    let auth = StubAuth::default();
    let audit = audit_to(serve(auth.clone()).await);
    let sent: Vec<AuditEvent> = (0..3).map(|i| query(&audit, i)).collect();
    sent.iter().for_each(|e| audit.emit(e.clone()));
    until_delivered(&auth, 3).await;
    let calls = auth.calls.lock().unwrap().clone();
    assert!(
        calls.iter().all(|c| matches!(c, Call::Packed(_))),
        "{calls:?}"
    );
    let got: Vec<serde_json::Value> = auth
        .events
        .lock()
        .unwrap()
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    let want: Vec<serde_json::Value> = sent
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    assert_eq!(got, want);
    assert_eq!(audit.dropped(), 0);
}

#[tokio::test]
async fn an_older_auth_gets_json_once_it_answers_unimplemented() {
    let auth = StubAuth {
        old: true,
        ..StubAuth::default()
    };
    let audit = audit_to(serve(auth.clone()).await);
    audit.emit(query(&audit, 0));
    until_delivered(&auth, 1).await;
    for i in 1..4 {
        audit.emit(query(&audit, i));
        until_delivered(&auth, i + 1).await;
    }
    let calls = auth.calls.lock().unwrap().clone();
    // Asked once on the connection, then JSON only.
    assert_eq!(
        calls[..2],
        [Call::Unimplemented, Call::Json(1)],
        "{calls:?}"
    );
    assert!(
        calls[2..].iter().all(|c| matches!(c, Call::Json(_))),
        "{calls:?}"
    );
    assert_eq!(audit.dropped(), 0);
}

/// A database's statements at a pgbench rate (about 20 a millisecond) go out in large batches:
/// the sender waits [`LINGER`] for a batch to fill instead of sending a call per few events.
/// However slow the machine, each call that is not a full batch took a linger.
#[tokio::test]
async fn a_steady_stream_goes_out_in_large_batches() {
    let auth = StubAuth::default();
    let audit = audit_to(serve(auth.clone()).await);
    let total = 4000;
    let started = clock::now();
    for i in 0..total {
        audit.emit(query(&audit, i));
        if i % 20 == 19 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    until_delivered(&auth, total).await;
    let elapsed = clock::since(started);
    let calls = auth.calls.lock().unwrap().clone();
    let sizes: Vec<usize> = calls
        .iter()
        .map(|c| match c {
            Call::Packed(n) => *n,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), total);
    assert!(sizes.iter().all(|n| *n <= BATCH), "{sizes:?}");
    let lingers = (elapsed.as_millis() / LINGER.as_millis()) as usize;
    assert!(
        sizes.len() <= lingers + total / BATCH + 2,
        "{} calls in {elapsed:?}: {sizes:?}",
        sizes.len()
    );
}
