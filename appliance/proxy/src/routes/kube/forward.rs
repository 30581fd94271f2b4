//! An allowed kube request's way to the agent and its response's way back (contract B steps
//! 5–8): the headers [`super::headers`] prepares, the request sent over HTTP/1.1 on a pooled
//! agent connection (an upgrade on one of its own), its response head awaited at most
//! [`RESPONSE_HEAD`] (then a 504), the response streamed frame by frame (watches and `logs -f`
//! are never buffered) or through the listing filter when the role hides some items, a lasting
//! answer (watch, log, upgrade) registered among the live streams and cut when the sweep says
//! so, an upgrade's two ends handed to the stream relay, and one `kube.request` audit event per
//! request once its response ends (user, cluster, verb, api_group, resource,
//! subresource, namespace, name, status, impersonated user and groups, remote; never a body, a
//! query or a header value).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::body::{Body, Bytes};
use axum::http::{Request, Response, StatusCode, Version, header};
use hop_auth::AuthServer;
use hop_auth::audit::EventKind;
use hop_platform::clock;
use hop_protocols::kube::request::KubeRequest;
use hop_rbac::{KubeImpersonation, KubeTarget};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;

use super::conn::Conn;
use super::decide::{Admission, Allowed};
use super::filter::{FilterError, KubeItemRef, Visibility};
use super::stream::{StreamContext, StreamProtocol};
use super::{KubeProxy, StreamSlot, headers, hooks, pool, status};
use crate::routes::app_http::body::origin_form;
use crate::routes::app_http::pool::AgentConn;

/// Why a user whose sessions must be moderated may not port-forward: nobody could watch it.
pub const NO_MODERATED_FORWARDING: &str = "your roles require moderated Kubernetes sessions (require_session_join): a port-forward cannot be moderated, so it is refused";

/// Why a moderated user's request to a proxy subresource or an ephemeral container is refused.
pub const NO_MODERATED_UNWATCHED: &str = "your roles require moderated Kubernetes sessions (require_session_join): proxy subresources (pods, services, nodes) and ephemeral containers (kubectl debug) run or reach workloads where no moderator can watch, so they are refused";

/// Subresources a moderated user may not use at all: what runs a command or reaches a
/// workload without an exec or attach stream a moderator could watch (a node's proxy reaches
/// the kubelet's `/run`; `kubectl debug` patches ephemeral containers).
fn unwatched(subresource: Option<&str>) -> bool {
    matches!(subresource, Some("proxy" | "ephemeralcontainers"))
}

/// What the audit event of one request says.
pub struct Record {
    pub user: String,
    pub cluster: String,
    pub request: KubeRequest,
    pub impersonated: KubeImpersonation,
    /// The path, for non-resource requests (discovery, `/version`).
    pub path: Option<String>,
    pub remote: SocketAddr,
    pub session_id: String,
    pub started: Instant,
}

/// How long the agent has to answer a request's head (status and headers) once it is sent. The
/// body is not under it: a watch's or `logs -f`'s streams for as long as it runs.
#[cfg(not(test))]
pub const RESPONSE_HEAD: Duration = Duration::from_secs(60);
/// Short under test, so that a test can wait it out.
#[cfg(test)]
pub const RESPONSE_HEAD: Duration = Duration::from_secs(1);

/// Sends `req` and waits at most [`RESPONSE_HEAD`] for the response's head; `Err` says why
/// there is none (the words go into the 502 or 504).
pub(super) async fn send_within<F>(sent: F) -> Result<Response<Incoming>, NoAnswer>
where
    F: Future<Output = Result<Response<Incoming>, hyper::Error>>,
{
    match tokio::time::timeout(RESPONSE_HEAD, sent).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(NoAnswer::Failed(e)),
        Err(_) => Err(NoAnswer::TimedOut),
    }
}

/// Why the agent gave no response head.
#[derive(Debug, thiserror::Error)]
pub(super) enum NoAnswer {
    #[error("the agent's HTTP connection failed: {0}")]
    Failed(hyper::Error),
    #[error("the agent did not answer within {} s", RESPONSE_HEAD.as_secs())]
    TimedOut,
}

/// The 502 (or 504 for a deadline) for a request the agent gave no answer to, audited.
fn no_answer(route: &KubeProxy, record: &Record, e: &NoAnswer) -> Response<Body> {
    match e {
        NoAnswer::Failed(_) => unreachable(route, record, &e.to_string()),
        NoAnswer::TimedOut => {
            tracing::debug!(kube_cluster = %record.cluster, "a Kubernetes request's answer timed out");
            record.audit(&route.auth, StatusCode::GATEWAY_TIMEOUT.as_u16());
            status::agent_timeout(&record.cluster, &e.to_string())
        }
    }
}

/// Whether a request's answer may last: a watch, a log (`logs -f`), an upgrade. Those are
/// registered among the live streams and decided again on each refresh.
fn lasts(request: &KubeRequest, upgrade: bool) -> bool {
    upgrade || request.verb.as_str() == "watch" || request.subresource.as_deref() == Some("log")
}

impl Record {
    /// Writes `kube.request` for this request, answered with `status`.
    pub fn audit(&self, auth: &AuthServer, status: u16) {
        self.audit_ended(auth, status, None);
    }

    /// [`Self::audit`] for a response the proxy cut short for `terminated` (the reason).
    pub fn audit_ended(&self, auth: &AuthServer, status: u16, terminated: Option<&str>) {
        let r = &self.request;
        let mut ev = auth
            .event(EventKind::KubeRequest, &self.user)
            .remote(Some(self.remote))
            .field("kube_cluster", self.cluster.clone())
            .field("session_id", self.session_id.clone())
            .field("verb", r.verb.as_str())
            .field("api_group", r.api_group.clone())
            .field("api_version", r.api_version.clone())
            .field("status", u64::from(status))
            .field("kubernetes_user", self.impersonated.user.clone())
            .field("kubernetes_groups", self.impersonated.groups.clone())
            .field("duration_ms", clock::since(self.started).as_millis() as u64);
        let optional = [
            ("resource", &r.resource),
            ("subresource", &r.subresource),
            ("namespace", &r.namespace),
            ("name", &r.name),
            ("path", &self.path),
        ];
        for (k, v) in optional {
            if let Some(v) = v {
                ev = ev.field(k, v.clone());
            }
        }
        if let Some(why) = terminated {
            ev = ev
                .field("ended_by", "terminated")
                .field("reason", why.to_string());
        }
        if status >= 400 {
            ev = ev.failed(EventKind::KubeRequest, format!("status {status}"));
        }
        auth.emit(ev);
    }
}

/// Forwards an allowed request to the cluster's agent and streams the answer back.
pub async fn forward(
    conn: Arc<Conn>,
    admission: Arc<Admission>,
    allowed: Allowed,
    mut req: Request<Incoming>,
) -> Response<Body> {
    // Only exec, attach and port-forward switch protocols; on any other request the upgrade
    // headers are dropped, so that its answer takes the normal path (and the listing filter).
    let upgrade = allowed.request.is_connect() && headers::is_upgrade(req.headers());
    let authority = req.uri().authority().map(|a| a.as_str().to_string());
    let record = Record {
        user: conn.user().to_string(),
        cluster: admission.cluster.name.clone(),
        path: (!allowed.request.is_resource()).then(|| req.uri().path().to_string()),
        request: allowed.request.clone(),
        impersonated: allowed.impersonation.clone(),
        remote: conn.remote,
        session_id: conn.session_id.clone(),
        started: clock::now(),
    };
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let current = Arc::new(ArcSwap::new(admission.clone()));
    let slot = match &conn.cert {
        Some(cert) if lasts(&allowed.request, upgrade) => {
            Some(conn.route.watch_stream(cert, &allowed, current.clone()))
        }
        _ => None,
    };
    let (mut parts, body) = req.into_parts();
    let imp = &allowed.impersonation;
    if let Err(e) = headers::to_agent(
        &mut parts.headers,
        &imp.user,
        &imp.groups,
        authority.as_deref(),
        upgrade,
    ) {
        return status::bad_request(&e.to_string());
    }
    if allowed.filter {
        // The filter reads JSON: a listing to filter is asked for uncompressed.
        parts.headers.remove(header::ACCEPT_ENCODING);
    }
    parts.uri = origin_form(&parts.uri);
    parts.version = Version::HTTP_11;
    let route = conn.route.clone();
    let user = record.user.clone();
    let to = pool::For {
        cluster: &admission.cluster,
        user: &user,
        session_id: &conn.session_id,
        client: conn.remote,
    };
    let reqs = admission.checker().session_join_requirements("k8s");
    if !reqs.is_empty() && unwatched(allowed.request.subresource.as_deref()) {
        record.audit(&route.auth, StatusCode::FORBIDDEN.as_u16());
        return status::forbidden(NO_MODERATED_UNWATCHED);
    }
    if let Some(client_upgrade) = client_upgrade {
        let query = parts.uri.query().unwrap_or("").to_string();
        if !reqs.is_empty() {
            if allowed.request.subresource.as_deref() == Some("portforward") {
                record.audit(&route.auth, StatusCode::FORBIDDEN.as_u16());
                return status::forbidden(NO_MODERATED_FORWARDING);
            }
            return super::moderated::begin(super::moderated::Start {
                conn: conn.clone(),
                cluster: admission.cluster.clone(),
                parts,
                client: client_upgrade,
                query,
                record,
                allowed,
                slot,
                reqs,
            });
        }
        let req = Request::from_parts(parts, Body::empty());
        let up = Upgrade {
            client: client_upgrade,
            query,
        };
        return upgraded(&conn, &to, req, up, record, allowed, slot).await;
    }
    let mut agent = match pool::take(&route.pools, &route.agents, &to).await {
        Ok(a) => a,
        Err(e) => return unreachable(&route, &record, &e.to_string()),
    };
    let sent = agent
        .send
        .send_request(Request::from_parts(parts, Body::new(body)));
    let resp = match send_within(sent).await {
        Ok(r) => r,
        Err(e) => return no_answer(&route, &record, &e),
    };
    let live = Live {
        admission: current,
        slot,
    };
    respond(route, live, &allowed, agent, resp, record).await
}

/// A response's live decision: the admission its filter consults (the sweep keeps it
/// current) and its place among the live streams, if it may last.
struct Live {
    admission: Arc<ArcSwap<Admission>>,
    slot: Option<StreamSlot>,
}

/// The agent's answer on its way to the client: as is, or filtered when the role hides items.
async fn respond(
    route: Arc<KubeProxy>,
    live: Live,
    allowed: &Allowed,
    agent: AgentConn,
    resp: Response<Incoming>,
    record: Record,
) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    crate::routes::app_http::headers::to_client(&mut parts.headers, false);
    let status = parts.status.as_u16();
    let body = if allowed.filter && parts.status.is_success() {
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let watch = allowed.request.verb.as_str() == "watch";
        let encoded = parts
            .headers
            .get(header::CONTENT_ENCODING)
            .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
        if encoded {
            record.audit(&route.auth, StatusCode::FORBIDDEN.as_u16());
            return status::forbidden(
                "the listing came back compressed, so the items your roles hide cannot be taken out of it",
            );
        }
        let visible = visibility(&live.admission, allowed);
        let budget = &route.listing_budget;
        match hooks::filtered(body, content_type.as_deref(), watch, visible, budget).await {
            Ok(b) => {
                // The filter decides the length; the agent's no longer holds.
                parts.headers.remove(header::CONTENT_LENGTH);
                b
            }
            Err(e @ FilterError::OverBudget { .. }) => {
                tracing::warn!(kube_cluster = %record.cluster, "a filtered listing was refused: {e}");
                record.audit(&route.auth, StatusCode::SERVICE_UNAVAILABLE.as_u16());
                return status::busy(&e.to_string());
            }
            Err(e) => {
                record.audit(&route.auth, StatusCode::FORBIDDEN.as_u16());
                return status::forbidden(&e.to_string());
            }
        }
    } else {
        Body::new(body)
    };
    let cut = live.slot.as_ref().map(|slot| {
        let mut end = slot.end_signal();
        let cut: Cut = Box::pin(async move { super::stream::ended(&mut end).await });
        cut
    });
    let finished = Finished {
        inner: body,
        cut,
        _slot: live.slot,
        end: Some(End {
            route,
            agent,
            record,
            status,
        }),
    };
    Response::from_parts(parts, Body::new(finished))
}

/// Whether one item of a listing may be shown: the role's view of the listed resource with
/// the item's namespace and name.
fn visibility(admission: &Arc<ArcSwap<Admission>>, allowed: &Allowed) -> Visibility {
    let admission = admission.clone();
    let r = &allowed.request;
    let (group, resource) = (r.api_group.clone(), r.resource.clone().unwrap_or_default());
    let verb = r.verb.as_str();
    Arc::new(move |item: &KubeItemRef| {
        let target = KubeTarget {
            api_group: &group,
            resource: &resource,
            namespace: item.namespace.as_deref(),
            name: Some(&item.name),
            verb,
        };
        let admission = admission.load();
        admission
            .checker()
            .kube_item_visible(admission.labels(), &target)
    })
}

/// The client's side of an upgrade: its connection once switched, and the request's query
/// (the command, container and ports the relay audits).
struct Upgrade {
    client: hyper::upgrade::OnUpgrade,
    query: String,
}

/// Sends an upgrade on a connection of its own; once the agent switches protocols, the two
/// ends go to the stream relay.
async fn upgraded(
    conn: &Arc<Conn>,
    to: &pool::For<'_>,
    req: Request<Body>,
    up: Upgrade,
    record: Record,
    allowed: Allowed,
    slot: Option<StreamSlot>,
) -> Response<Body> {
    let Upgrade {
        client: client_upgrade,
        query,
    } = up;
    // An upgrade is always registered (it comes only with a kube certificate); without a
    // slot it could not be ended by a role change, so it is not relayed.
    let Some(slot) = slot else {
        return unreachable(&conn.route, &record, "the stream could not be registered");
    };
    let route = &conn.route;
    let mut send = match pool::dial(&route.agents, to).await {
        Ok(s) => s,
        Err(e) => return unreachable(route, &record, &e.to_string()),
    };
    let mut resp = match send_within(send.send_request(req)).await {
        Ok(r) => r,
        Err(e) => return no_answer(route, &record, &e),
    };
    let code = resp.status();
    if code != StatusCode::SWITCHING_PROTOCOLS {
        record.audit(&route.auth, code.as_u16());
        let (mut parts, body) = resp.into_parts();
        crate::routes::app_http::headers::to_client(&mut parts.headers, false);
        return Response::from_parts(parts, Body::new(body));
    }
    // A stream the relay cannot follow is never relayed: it could not be audited or recorded.
    let Some(protocol) = StreamProtocol::of_response(resp.headers()) else {
        let why = "the API server switched to a stream protocol this proxy cannot follow";
        return unreachable(route, &record, why);
    };
    record.audit(&route.auth, code.as_u16());
    let agent_upgrade = hyper::upgrade::on(&mut resp);
    let (parts, _) = resp.into_parts();
    let ctx = StreamContext {
        auth: route.auth.clone(),
        recordings: route.recordings.clone(),
        user: record.user.clone(),
        cluster: record.cluster.clone(),
        request: allowed.request,
        impersonated: allowed.impersonation,
        remote: conn.remote,
        session_id: conn.session_id.clone(),
        query,
        end: slot.end_signal(),
        idle: super::stream::IDLE,
        moderation: None,
    };
    // The relay holds the connection: its place among the live ones lasts as long.
    let held = conn.clone();
    tokio::spawn(async move {
        match tokio::try_join!(client_upgrade, agent_upgrade) {
            Ok((client, agent)) => hooks::relay(client, agent, protocol, ctx).await,
            Err(e) => tracing::debug!(error = %e, "a Kubernetes upgrade failed"),
        }
        drop((slot, held));
    });
    Response::from_parts(parts, Body::empty())
}

/// The 502 for a request the agent did not take, audited.
fn unreachable(route: &KubeProxy, record: &Record, why: &str) -> Response<Body> {
    tracing::debug!(kube_cluster = %record.cluster, error = %why, "Kubernetes request not forwarded");
    record.audit(&route.auth, StatusCode::BAD_GATEWAY.as_u16());
    status::agent_unreachable(&record.cluster, why)
}

/// What happens once a response ends.
struct End {
    route: Arc<KubeProxy>,
    agent: AgentConn,
    record: Record,
    status: u16,
}

/// Completes with the reason once a live stream must end.
type Cut = Pin<Box<dyn Future<Output = String> + Send>>;

/// Why a response was cut short (the client sees its connection fail mid-body).
#[derive(Debug, thiserror::Error)]
#[error("the Kubernetes stream was ended: {0}")]
struct Terminated(String);

/// A response body on its way to the client; when it ends the request is audited and, when it
/// ended cleanly, the agent connection goes back to the pool. A live stream's body ends at
/// once (an error frame: the client's connection fails) when its slot says so.
struct Finished {
    inner: Body,
    cut: Option<Cut>,
    _slot: Option<StreamSlot>,
    end: Option<End>,
}

impl Finished {
    fn finish(&mut self, clean: bool) {
        self.finish_with(clean, None);
    }

    fn finish_with(&mut self, clean: bool, terminated: Option<&str>) {
        let Some(end) = self.end.take() else { return };
        end.record
            .audit_ended(&end.route.auth, end.status, terminated);
        if clean {
            end.route.pools.put(end.agent);
        }
    }
}

impl HttpBody for Finished {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(cut) = self.cut.as_mut()
            && let Poll::Ready(why) = cut.as_mut().poll(cx)
        {
            self.cut = None;
            self.finish_with(false, Some(&why));
            return Poll::Ready(Some(Err(axum::Error::new(Terminated(why)))));
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.finish(true),
            Poll::Ready(Some(Err(_))) => self.finish(false),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Finished {
    fn drop(&mut self) {
        let clean = self.inner.is_end_stream();
        self.finish(clean);
    }
}
