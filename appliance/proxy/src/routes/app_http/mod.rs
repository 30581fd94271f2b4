//! Web applications at `https://NAME.P` (P: the proxy's public host): the HTTP route a TLS
//! connection takes when its SNI names an application under P.
//!
//! This room owns the route's whole request path: which application a connection and each
//! request are for ([`PublicHost`]; a request whose `Host`/`:authority` names another
//! application gets 421), who the request is from (the browser's application session cookie,
//! or a certificate naming the application, [`conn`]), the browser flow into an application
//! session ([`flow`]: state cookie, the web UI's launch, the one-time code's callback), the
//! per-request decision from the admission snapshot ([`AppHttp::decide`]: the identity still
//! exists, is not locked or voided, and a role still grants the application's labels as
//! announced), the headers the upstream sees ([`headers`]: the JWT, `X-Forwarded-*`, never a
//! client's `Hop-Jwt-Assertion` or Hop's cookies), the agent's HTTP/1.1 connections
//! ([`pool`]), streaming the bodies and auditing each request ([`body`]), WebSockets
//! ([`websocket`]: same-origin only, spliced), and the pages that explain a refusal
//! ([`pages`]).
//!
//! It never signs per request (the JWT is the session's), never asks the backend per request
//! (the snapshot and the table of announced applications are refreshed in the background by
//! [`AppHttp::run`], which also ends the sessions admission now refuses), and never logs a
//! cookie, a code or a JWT.

pub mod body;
pub mod conn;
pub mod flow;
pub mod headers;
pub mod pages;
pub mod pool;
pub mod websocket;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hop_admission::{Refusal, Route, Snapshot};
use hop_auth::AuthServer;
use hop_auth::admission::Presented;
use hop_auth::apps::AppSession;
use hop_auth::audit::EventKind;
use tokio::sync::watch;

use crate::admission::UserCert;
use crate::dataplane::limits::PreAuthHold;
use crate::routes::http_conn::HttpDeadlines;
use crate::tunnels::{AgentStream, AppRoute, TunnelRegistry};

/// How often the snapshot and the announced applications are taken again, and live sessions
/// decided again: a revocation reaches a live request or WebSocket within about this plus the
/// snapshot's rebuild.
pub const REFRESH: Duration = Duration::from_millis(500);

/// The proxy's public host and port, as browsers reach it (`P` of `NAME.P`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicHost {
    /// Lowercase host name.
    host: String,
    /// The port browsers use, when not 443.
    port: Option<u16>,
}

impl PublicHost {
    /// From the proxy's web address (`host[:port]`, as `proxy_service.public_addr` or the
    /// quick start gives it).
    pub fn parse(web_addr: &str) -> Self {
        let (host, port) = match web_addr.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') => match p.parse::<u16>() {
                Ok(p) => (h, Some(p)),
                Err(_) => (web_addr, None),
            },
            _ => (web_addr, None),
        };
        Self {
            host: host.trim_matches(['[', ']']).to_ascii_lowercase(),
            port: port.filter(|p| *p != 443),
        }
    }

    /// The public host (`P`).
    pub fn host(&self) -> &str {
        &self.host
    }

    fn port_suffix(&self) -> String {
        self.port.map(|p| format!(":{p}")).unwrap_or_default()
    }

    /// The application a TLS server name (or an authority without its port) names: `NAME` of
    /// `NAME.P`, a single DNS label.
    pub fn app_of(&self, server_name: &str) -> Option<String> {
        let name = server_name.to_ascii_lowercase();
        let label = name.strip_suffix(&self.host)?.strip_suffix('.')?;
        self.is_app_label(label).then(|| label.to_string())
    }

    /// Whether `name` can be an application's label under P (so its origin is
    /// `https://NAME.P`): one lowercase DNS label.
    pub fn is_app_label(&self, name: &str) -> bool {
        !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
    }

    /// The application a request's authority (`Host` or `:authority`, port allowed) names.
    pub fn app_of_authority(&self, authority: &str) -> Option<String> {
        let host = match authority.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|c| c.is_ascii_digit()) => h,
            _ => authority,
        };
        self.app_of(host)
    }

    /// `https://NAME.P[:port]`.
    pub fn app_origin(&self, app: &str) -> String {
        format!("https://{app}.{}{}", self.host, self.port_suffix())
    }

    /// The web UI's launch page for `app`, carrying the browser's `state`.
    pub fn launch_url(&self, app: &str, state: &str) -> String {
        format!(
            "https://{}{}/web/launch/{app}?state={state}",
            self.host,
            self.port_suffix()
        )
    }
}

/// Whether an announced application is an HTTP one (contract: the uri's scheme).
pub fn is_http_app(uri: &str) -> bool {
    let lower = uri.get(..8).unwrap_or(uri).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// What a request is decided on: the admission snapshot (or why there is none) and the
/// announced applications, taken together every [`REFRESH`].
pub struct View {
    pub snapshot: Result<Arc<Snapshot>, Refusal>,
    pub apps: HashMap<String, AppRoute>,
}

/// Why a request is refused once its identity is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// Admission or the roles' `app_labels` refused.
    Refused(Refusal),
    /// No connected agent announces the application.
    UnknownApp,
    /// The application is announced with a `tcp://` uri.
    NotHttp,
}

/// The application HTTP route's shared state.
pub struct AppHttp {
    pub(crate) auth: Arc<AuthServer>,
    pub(crate) agents: pool::Agents,
    pub(crate) public: PublicHost,
    pub(crate) pools: pool::AgentPools,
    pub(crate) deadlines: HttpDeadlines,
    view: ArcSwap<View>,
    /// The snapshot every live session was last decided on (held, so that its address is not
    /// reused), and when: only the background sweep reads and writes it.
    decided_on: std::sync::Mutex<Option<(Option<Arc<Snapshot>>, std::time::Instant)>>,
}

impl AppHttp {
    /// The route for applications under the public host of `web_addr`.
    pub fn new(
        auth: Arc<AuthServer>,
        registry: Arc<TunnelRegistry>,
        web_addr: &str,
        deadlines: HttpDeadlines,
    ) -> Arc<Self> {
        Self::with_agents(auth, pool::Agents::Tunnels(registry), web_addr, deadlines)
    }

    /// The route, reaching applications through `agents`.
    pub(crate) fn with_agents(
        auth: Arc<AuthServer>,
        agents: pool::Agents,
        web_addr: &str,
        deadlines: HttpDeadlines,
    ) -> Arc<Self> {
        let route = Arc::new(Self {
            public: PublicHost::parse(web_addr),
            view: ArcSwap::from_pointee(View {
                snapshot: Err(Refusal::Unavailable {
                    reason: "not loaded yet".into(),
                }),
                apps: HashMap::new(),
            }),
            pools: pool::AgentPools::default(),
            decided_on: std::sync::Mutex::new(None),
            deadlines,
            auth,
            agents,
        });
        route.refresh();
        route
    }

    /// The application `server_name` (a ClientHello's SNI) names, if it is one of ours.
    pub fn app_of_sni(&self, server_name: Option<&str>) -> Option<String> {
        self.public.app_of(server_name?)
    }

    /// The current view.
    pub fn view(&self) -> arc_swap::Guard<Arc<View>> {
        self.view.load()
    }

    /// Takes the snapshot and the announced applications again, then ends the sessions
    /// admission now refuses (and the expired ones), auditing their end.
    pub fn refresh(&self) {
        let snapshot = self
            .auth
            .admission_snapshot()
            .map_err(|e| self.auth.unavailable(e));
        let apps = self
            .agents
            .apps()
            .into_iter()
            .map(|a| (a.name.clone(), a))
            .collect();
        self.view.store(Arc::new(View { snapshot, apps }));
        self.sweep();
    }

    /// Ends expired sessions, and those admission refuses when the snapshot changed since it
    /// last decided them all (or [`crate::admission::REDECIDE_AT_LEAST`] passed): an unchanged
    /// snapshot gives the same answers, so a quiet cluster costs no RBAC work here.
    fn sweep(&self) {
        let view = self.view();
        let now = self.auth.now();
        let snapshot = view.snapshot.as_ref().ok().cloned();
        let redecide = {
            let mut last = self
                .decided_on
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let fresh = last.as_ref().is_some_and(|(held, at)| {
                same_snapshot(held.as_ref(), snapshot.as_ref())
                    && hop_platform::clock::since(*at) < crate::admission::REDECIDE_AT_LEAST
            });
            if !fresh {
                *last = Some((snapshot, hop_platform::clock::now()));
            }
            !fresh
        };
        let gone = self.auth.apps().sessions.sweep(now, |s| {
            if !redecide {
                return None;
            }
            match self.decide(&view, &s.presented(), s.app()) {
                Err(Denial::Refused(r)) => Some(r),
                _ => None,
            }
        });
        for (session, why) in gone {
            audit_end(&self.auth, &session, &why);
        }
    }

    /// Refreshes every [`REFRESH`] until shutdown.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(REFRESH) => {}
                _ = hop_platform::signals::until_shutdown(&mut shutdown) => return,
            }
            self.refresh();
        }
    }

    /// Decides whether `presented` may use application `app` now, on `view`.
    pub fn decide<'v>(
        &self,
        view: &'v View,
        presented: &Presented<'_>,
        app: &str,
    ) -> Result<&'v AppRoute, Denial> {
        let snapshot = view
            .snapshot
            .as_ref()
            .map_err(|r| Denial::Refused(r.clone()))?;
        // The session's target is this application (a per-session MFA mark must name it).
        let presented = Presented {
            target: Some(hop_admission::SessionTarget::App { app }),
            ..*presented
        };
        let admitted = self
            .auth
            .admit_on_kept(snapshot, &presented, Route::App)
            .map_err(Denial::Refused)?;
        let route = view.apps.get(app).ok_or(Denial::UnknownApp)?;
        if !is_http_app(&route.uri) {
            return Err(Denial::NotHttp);
        }
        admitted
            .checker()
            .check_app(&route.labels)
            .map_err(|denied| {
                Denial::Refused(Refusal::Denied {
                    name: presented.identity.username.clone(),
                    reason: denied.to_string(),
                })
            })?;
        Ok(route)
    }

    /// Serves one TLS connection whose SNI named `app`; `cert` is the client certificate's
    /// holder when it presented a user certificate. `client` is the client's address and, while
    /// the connection has not authenticated, its place in the pre-authentication budget: given
    /// back at the first admitted request, so that browsers behind one address (an office's
    /// NAT) are limited by their sessions, not by the budget meant for strangers.
    pub async fn serve(
        self: Arc<Self>,
        tls: AgentStream,
        app: String,
        cert: Option<UserCert>,
        client: (SocketAddr, PreAuthHold),
        shutdown: watch::Receiver<bool>,
    ) {
        self.serve_io(tls, app, cert, client, shutdown).await;
    }

    /// [`Self::serve`] on any stream (tests serve plain TCP).
    pub async fn serve_io<IO>(
        self: Arc<Self>,
        io: IO,
        app: String,
        cert: Option<UserCert>,
        client: (SocketAddr, PreAuthHold),
        shutdown: watch::Receiver<bool>,
    ) where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let conn = conn::Conn::new(self.clone(), app, cert, client);
        let deadlines = Some(self.deadlines);
        let service = tower::service_fn(move |req| {
            let conn = conn.clone();
            async move { Ok::<_, std::convert::Infallible>(conn.handle(req).await) }
        });
        crate::routes::http_conn::serve_service(io, service, deadlines, shutdown).await;
    }
}

impl crate::app_certs::AnnouncedApps for AppHttp {
    fn announced_http_app(&self, server_name: &str) -> Option<String> {
        let app = self.public.app_of(server_name)?;
        let view = self.view();
        let route = view.apps.get(&app)?;
        is_http_app(&route.uri).then_some(app)
    }
}

/// The proxy's own router (web UI, APIs) with every request whose authority names an
/// application under `public` answered 421.
///
/// Browsers reuse an HTTP/2 connection for any name its certificate covers at the same
/// address: a connection opened for P (the web UI) carries `NAME.P`'s requests too once the
/// user opens an application. Served here they would get the web UI under the application's
/// origin instead of the application; 421 makes the browser open a connection of their own,
/// whose SNI takes them to the application route.
pub fn misdirected_away(public: PublicHost, router: axum::Router) -> axum::Router {
    router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let misdirected =
                conn::authority_of(&req).filter(|a| public.app_of_authority(a).is_some());
            async move {
                match misdirected {
                    Some(authority) => {
                        axum::response::IntoResponse::into_response(pages::misdirected(&authority))
                    }
                    None => next.run(req).await,
                }
            }
        },
    ))
}

/// Whether two views' snapshots are the same one (no snapshot counts as a change).
fn same_snapshot(a: Option<&Arc<Snapshot>>, b: Option<&Arc<Snapshot>>) -> bool {
    matches!((a, b), (Some(a), Some(b)) if Arc::ptr_eq(a, b))
}

/// Audits the start of an application session.
pub(crate) fn audit_start(auth: &AuthServer, session: &AppSession, remote: SocketAddr) {
    auth.emit(
        auth.event(EventKind::AppSessionStart, session.user())
            .remote(Some(remote))
            .field("app", session.app().to_string())
            .field("session_id", session.id.clone()),
    );
}

/// Audits the end of an application session, with why it ended.
pub(crate) fn audit_end(auth: &AuthServer, session: &AppSession, why: &str) {
    auth.emit(
        auth.event(EventKind::AppSessionEnd, session.user())
            .field("app", session.app().to_string())
            .field("session_id", session.id.clone())
            .field("reason", why.to_string()),
    );
}
