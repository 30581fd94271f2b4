//! One client connection on the application route and each request on it: which application
//! it is for, who sends it (a session cookie, or a certificate naming the application), the
//! decision, and where the request goes (the flow's callback, a WebSocket, the upstream).
//!
//! A connection remembers the session it last found and the decision it last took with the
//! view it took it on: a keep-alive request with the same cookie on the same view costs a
//! digest and two pointer comparisons, not a table lookup or an RBAC evaluation.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwapOption;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode};
use hop_admission::Route;
use hop_auth::apps::{AppGrant, AppSession, SessionLookup};
use hop_auth::audit::EventKind;
use hyper::body::Incoming;
use sha2::{Digest, Sha256};

use super::{AppHttp, Denial, View, flow, pages};
use crate::admission::UserCert;
use crate::dataplane::limits::PreAuthHold;
use crate::tunnels::AppRoute;

/// The decision a connection took last, and what its requests carry while it holds.
pub struct Decided {
    /// The cookie's digest (zeros for a certificate's session).
    key: [u8; 32],
    pub session: Arc<AppSession>,
    /// The view it was decided on (compared by address).
    view: Arc<View>,
    pub app: AppRoute,
    /// The session's JWT as a header value, made once.
    pub jwt: HeaderValue,
}

/// One client connection on the application route.
pub struct Conn {
    pub(super) route: Arc<AppHttp>,
    /// The application the connection's SNI named.
    pub(super) app: String,
    pub(super) remote: SocketAddr,
    /// A certificate whose identity names an application (`hop apps login`).
    cert: Option<UserCert>,
    /// The certificate's session, made at its first request.
    cert_session: OnceLock<Result<(Arc<AppSession>, String), String>>,
    decided: ArcSwapOption<Decided>,
    /// The connection's place in the pre-authentication budget until a request is admitted.
    pre_auth: PreAuthHold,
}

/// Who sent a request, or what to answer instead.
enum Who {
    Session(Arc<AppSession>, [u8; 32]),
    /// No session, or an expired one: into the flow.
    NoSession,
    Answer(Response<Body>),
}

impl Conn {
    /// A connection whose SNI named `app`. A certificate counts only when it names an
    /// application (`route_to_app`); any other user certificate is ignored here. `pre_auth`
    /// holds the connection's place in the pre-authentication budget until a request is
    /// admitted.
    pub fn new(
        route: Arc<AppHttp>,
        app: String,
        cert: Option<UserCert>,
        (remote, pre_auth): (SocketAddr, PreAuthHold),
    ) -> Arc<Self> {
        let cert = cert.filter(|c| c.identity.route_to_app.is_some());
        // With a certificate the application comes from the certificate.
        let app = cert
            .as_ref()
            .and_then(|c| c.identity.route_to_app.clone())
            .unwrap_or(app);
        Arc::new(Self {
            route,
            app,
            remote,
            cert,
            cert_session: OnceLock::new(),
            decided: ArcSwapOption::empty(),
            pre_auth,
        })
    }

    /// Whether the connection's client presented a certificate naming the application.
    pub fn by_certificate(&self) -> bool {
        self.cert.is_some()
    }

    /// Answers one request.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        if req.method() == axum::http::Method::CONNECT {
            return pages::page(
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed",
                "an application route does not tunnel CONNECT requests",
            );
        }
        let Some(authority) = authority_of(&req) else {
            return pages::bad_request("the request names no host (Host or :authority)");
        };
        if self.cert.is_some() && !self.cert_may_name(&authority) {
            return pages::page(
                StatusCode::MISDIRECTED_REQUEST,
                "Misdirected request",
                &format!(
                    "An application certificate's request must name the application's address ({}) or a loopback address, not {authority}.",
                    self.route.public.app_origin(&self.app)
                ),
            );
        }
        if self.cert.is_none() {
            // A browser shares one connection across names under the wildcard certificate:
            // a request for another application must go to its own connection.
            if self.route.public.app_of_authority(&authority).as_deref() != Some(&self.app) {
                return pages::misdirected(&authority);
            }
            if req.uri().path() == flow::CALLBACK_PATH {
                return flow::callback(&self, &req).await;
            }
        }
        let (session, key) = match self.who(&req) {
            Who::Session(s, key) => (s, key),
            Who::NoSession => return flow::start(&self, &req),
            Who::Answer(r) => return r,
        };
        let decided = match self.admitted(&session, key) {
            Ok(d) => d,
            Err(denial) => return self.refuse(&session, &denial),
        };
        // Authenticated: the connection leaves the budget of unauthenticated ones.
        self.pre_auth.release();
        if super::websocket::is_upgrade(&req) {
            return super::websocket::forward(self, decided, req, authority).await;
        }
        super::body::forward(self, decided, req, authority).await
    }

    /// Whether a certificate's request may name `authority`: the application's own address
    /// under P (any port), or a loopback address (`hop proxy app`'s local listener). Any other
    /// name would be a page of another site reaching that local listener through DNS
    /// rebinding (and reading the answers), or a `Host` the upstream builds its links from
    /// (password reset mails) forged.
    fn cert_may_name(&self, authority: &str) -> bool {
        if self.route.public.app_of_authority(authority).as_deref() == Some(&self.app) {
            return true;
        }
        let Ok(parsed) = authority.parse::<axum::http::uri::Authority>() else {
            return false;
        };
        let host = parsed.host().trim_start_matches('[').trim_end_matches(']');
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// The session a request comes with.
    fn who(&self, req: &Request<Incoming>) -> Who {
        if let Some(cert) = &self.cert {
            return match self.cert_session(cert) {
                Ok(s) => Who::Session(s, [0; 32]),
                Err(e) => Who::Answer(pages::forbidden(&self.app, &e)),
            };
        }
        let Some(secret) = flow::cookie(req.headers(), flow::SESSION_COOKIE) else {
            return Who::NoSession;
        };
        let key: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let now = self.route.auth.now();
        if let Some(d) = self.decided.load().as_ref()
            && d.key == key
            && !d.session.is_ended()
            && now < d.session.expires
        {
            return Who::Session(d.session.clone(), key);
        }
        match self.route.auth.apps().sessions.lookup(secret, now) {
            SessionLookup::Live(s) if s.app() == self.app => Who::Session(s, key),
            SessionLookup::Live(_) | SessionLookup::Unknown => Who::NoSession,
            SessionLookup::Refused { user, refusal } => {
                // Said once, with the cookie cleared: the next visit starts the flow again,
                // which the web login and the launch refuse on their own while it holds.
                let auth = &self.route.auth;
                auth.audit_refusal(Route::App, &user, &refusal, Some(self.remote));
                let mut page = pages::forbidden(&self.app, &refusal.to_string());
                page.headers_mut().append(
                    axum::http::header::SET_COOKIE,
                    flow::clear_cookie(flow::SESSION_COOKIE),
                );
                Who::Answer(page)
            }
            SessionLookup::Expired(s) => {
                if s.end() {
                    super::audit_end(&self.route.auth, &s, "expired");
                }
                Who::NoSession
            }
        }
    }

    /// The session of this connection's certificate, started (and audited) at its first
    /// request.
    fn cert_session(&self, cert: &UserCert) -> Result<Arc<AppSession>, String> {
        let started = self.cert_session.get_or_init(|| {
            let grant = AppGrant {
                identity: Arc::new(cert.identity.clone()),
                issued_at: cert.issued_at,
                expires: cert.expires,
                app: self.app.clone(),
                app_uri: self.app_uri(),
            };
            let auth = &self.route.auth;
            match auth.apps().start(grant, auth.now()) {
                Ok(new) => {
                    super::audit_start(auth, &new.session, self.remote);
                    Ok((new.session, new.secret))
                }
                Err(e) => Err(e.to_string()),
            }
        });
        match started {
            Ok((s, _)) if !s.is_ended() && self.route.auth.now() < s.expires => Ok(s.clone()),
            Ok(_) => Err(
                "the application certificate's session has ended; run `hop apps login` again"
                    .into(),
            ),
            Err(e) => Err(e.clone()),
        }
    }

    fn app_uri(&self) -> String {
        self.route
            .view()
            .apps
            .get(&self.app)
            .map(|a| a.uri.clone())
            .unwrap_or_default()
    }

    /// The decision for `session` on the current view, remembered for the next request.
    fn admitted(&self, session: &Arc<AppSession>, key: [u8; 32]) -> Result<Arc<Decided>, Denial> {
        let view = self.route.view.load_full();
        if let Some(d) = self.decided.load_full()
            && Arc::ptr_eq(&d.view, &view)
            && Arc::ptr_eq(&d.session, session)
        {
            return Ok(d);
        }
        let app = self
            .route
            .decide(&view, &session.presented(), &self.app)?
            .clone();
        let jwt = HeaderValue::from_str(&session.jwt).map_err(|_| {
            Denial::Refused(hop_admission::Refusal::Unavailable {
                reason: "the session's assertion is not a header value".into(),
            })
        })?;
        let decided = Arc::new(Decided {
            key,
            session: session.clone(),
            view,
            app,
            jwt,
        });
        self.decided.store(Some(decided.clone()));
        Ok(decided)
    }

    /// The page for a refused request, and its audit event.
    fn refuse(&self, session: &AppSession, denial: &Denial) -> Response<Body> {
        let auth = &self.route.auth;
        match denial {
            Denial::Refused(r) => {
                auth.audit_refusal(Route::App, session.user(), r, Some(self.remote));
                pages::forbidden(&self.app, &r.to_string())
            }
            Denial::UnknownApp | Denial::NotHttp => {
                let why = match denial {
                    Denial::NotHttp => format!(
                        "application {:?} is a TCP application: use `hop proxy app {}`",
                        self.app, self.app
                    ),
                    _ => format!(
                        "application {:?} is not available: no connected agent serves it",
                        self.app
                    ),
                };
                self.audit_failed(session.user(), &why);
                pages::page(StatusCode::NOT_FOUND, "Application not found", &why)
            }
        }
    }

    /// Audits a request the route could not serve (`access.refused`, route `app`).
    pub(super) fn audit_failed(&self, user: &str, why: &str) {
        let auth = &self.route.auth;
        auth.emit(
            auth.event(EventKind::AccessRefused, user)
                .remote(Some(self.remote))
                .field("route", Route::App.name())
                .field("app", self.app.clone())
                .failed(EventKind::AccessRefused, why.to_string()),
        );
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // A certificate's session lives as long as its connection.
        if let Some(Ok((session, secret))) = self.cert_session.get()
            && self.route.auth.apps().sessions.remove(secret).is_some()
        {
            super::audit_end(&self.route.auth, session, "connection closed");
        }
    }
}

/// The authority a request was sent to: `:authority` (HTTP/2, or an absolute URI) or `Host`.
pub fn authority_of<B>(req: &Request<B>) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str().to_ascii_lowercase());
    }
    req.headers()
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty())
        .map(str::to_ascii_lowercase)
}
