//! One client connection on the kube route and each request on it: who sends it (only a user
//! certificate routed to a kube cluster; anything else gets 401 naming `hop kube login`), the
//! decision (admission, remembered per view; then the request's own), and where it goes.
//!
//! A connection remembers the admission it took last with the view it took it on: a
//! keep-alive request on the same view costs a pointer comparison, not an RBAC evaluation.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use axum::body::Body;
use axum::http::{Request, Response};
use hop_admission::{Refusal, Route};
use hop_auth::admission::Presented;
use hop_auth::caller::Caller;
use hyper::body::Incoming;
use tokio::sync::watch;

use super::decide::{self, Admission, Denial, RequestDenial};
use super::{KubeProxy, View, status};
use crate::admission::UserCert;

/// The admission a connection took last, and the view it took it on (compared by address).
struct Decided {
    view: Arc<View>,
    admission: Arc<Admission>,
}

/// One client connection on the kube route.
pub struct Conn {
    pub(super) route: Arc<KubeProxy>,
    /// The certificate, when it is routed to a kube cluster.
    pub(super) cert: Option<UserCert>,
    /// Who presented something else (for the 401's audit event).
    other: Caller,
    pub(super) remote: SocketAddr,
    /// Hex id of this connection, shared by its Dials and audit events.
    pub(super) session_id: String,
    live: Option<u64>,
    end: watch::Receiver<Option<String>>,
    decided: ArcSwapOption<Decided>,
}

/// The certificate as admission takes it.
pub fn presented(cert: &UserCert) -> Presented<'_> {
    Presented {
        identity: &cert.identity,
        issued_at: cert.issued_at,
        expires: cert.expires,
        login: None,
        target: None,
    }
}

/// The certificate of a live connection or stream as admission takes it when deciding it
/// again: a per-session MFA certificate's minute was for starting it, so its expiry is moved
/// past `now` and the other checks (locks, deletion, roles) still run; any other certificate
/// as it is (its expiry ends what it opened).
pub fn presented_live(cert: &UserCert, now: std::time::SystemTime) -> Presented<'_> {
    let p = presented(cert);
    if cert.identity.session_mfa.is_some() {
        p.outliving_expiry(now)
    } else {
        p
    }
}

/// Completes once `end` says the connection must end; never when nobody can say so (a
/// connection without a kube certificate, which is refused request by request).
pub async fn ended(end: &mut watch::Receiver<Option<String>>) {
    if end.wait_for(Option::is_some).await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl Conn {
    /// A connection from `caller`; a certificate counts only when it names a kube cluster.
    pub fn new(route: Arc<KubeProxy>, caller: Caller, remote: SocketAddr) -> Arc<Self> {
        let kube_bound = matches!(&caller, Caller::User { identity, .. } if identity.route_to_kube_cluster.is_some());
        let (cert, other) = if kube_bound {
            (
                UserCert::of(caller),
                Caller::Anonymous {
                    remote: Some(remote),
                },
            )
        } else {
            (None, caller)
        };
        let (live, end) = match &cert {
            Some(c) => {
                let (id, rx) = route.watch_live(c);
                (Some(id), rx)
            }
            None => (None, watch::channel(None).1),
        };
        let mut session_id = [0u8; 16];
        rand::fill(&mut session_id[..]);
        Arc::new(Self {
            route,
            cert,
            other,
            remote,
            session_id: hex::encode(session_id),
            live,
            end,
            decided: ArcSwapOption::empty(),
        })
    }

    /// A receiver told when the connection must end, and why.
    pub fn end_signal(&self) -> watch::Receiver<Option<String>> {
        self.end.clone()
    }

    /// The Hop user of the connection's certificate (empty without one).
    pub fn user(&self) -> &str {
        self.cert
            .as_ref()
            .map_or("", |c| c.identity.username.as_str())
    }

    /// Answers one request.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let Some(cert) = &self.cert else {
            return self.unauthenticated();
        };
        if let Some(why) = self.end.borrow().clone() {
            return status::forbidden(&why);
        }
        let cluster = cert
            .identity
            .route_to_kube_cluster
            .clone()
            .unwrap_or_default();
        let admission = match self.admitted(cert, &cluster) {
            Ok(a) => a,
            Err(Denial::Refused(r)) => {
                self.audit_refusal(&r);
                // An expired certificate is a 401: kubectl then asks its credential plugin
                // (`hop kube credentials`) for a fresh one and tries again.
                if matches!(r, Refusal::Expired { .. }) {
                    return status::unauthorized(&format!(
                        "{r}; `hop kube credentials` renews it (run `hop login` first if your login expired too)"
                    ));
                }
                return status::forbidden(&r.to_string());
            }
            Err(Denial::UnknownCluster) => {
                self.audit_refusal(&Refusal::Unavailable {
                    reason: format!(
                        "no connected kube agent serves Kubernetes cluster {cluster:?}"
                    ),
                });
                return status::unknown_cluster(&cluster);
            }
        };
        let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let allowed = match decide::request(
            &admission,
            &cert.identity.username,
            req.method().as_str(),
            pq,
            req.headers(),
        ) {
            Ok(a) => a,
            Err(RequestDenial::Unreadable(why)) => return status::bad_request(&why),
            Err(RequestDenial::Forbidden(why)) => {
                self.audit_refusal(&Refusal::Denied {
                    name: cert.identity.username.clone(),
                    reason: format!("{} {}: {why}", req.method(), req.uri().path()),
                });
                return status::forbidden(&why);
            }
        };
        super::forward::forward(self, admission, allowed, req).await
    }

    /// The admission for `cert` on the current view, remembered for the next request.
    fn admitted(&self, cert: &UserCert, cluster: &str) -> Result<Arc<Admission>, Denial> {
        let view = self.route.view_full();
        if let Some(d) = self.decided.load_full()
            && Arc::ptr_eq(&d.view, &view)
        {
            return Ok(d.admission.clone());
        }
        let admission = Arc::new(decide::admit(
            &self.route.auth,
            &view,
            &presented(cert),
            cluster,
        )?);
        self.decided.store(Some(Arc::new(Decided {
            view,
            admission: admission.clone(),
        })));
        Ok(admission)
    }

    /// The 401 for a connection without a kube certificate, audited (rate-limited).
    fn unauthenticated(&self) -> Response<Body> {
        let what = match &self.other {
            Caller::User { .. } => "a user certificate not routed to a Kubernetes cluster",
            Caller::Host { .. } => "an agent's host certificate",
            Caller::LocalAdmin | Caller::Anonymous { .. } => "a connection without a certificate",
        };
        let refusal = Refusal::WrongCertificate {
            what,
            route: Route::Kube.name(),
        };
        let auth = &self.route.auth;
        match &self.other {
            Caller::User { .. } | Caller::Host { .. } => {
                auth.audit_refusal(
                    Route::Kube,
                    &self.other.actor(),
                    &refusal,
                    Some(self.remote),
                );
            }
            Caller::LocalAdmin | Caller::Anonymous { .. } => {
                auth.audit_unverified_refusal(Route::Kube, &refusal, Some(self.remote));
            }
        }
        status::unauthorized(
            "this endpoint needs a Kubernetes certificate from Hop: run `hop kube login CLUSTER` (after `hop login`) and use the context it writes",
        )
    }

    /// Audits a refusal of this connection's user (rate-limited per identity).
    fn audit_refusal(&self, refusal: &Refusal) {
        self.route
            .auth
            .audit_refusal(Route::Kube, self.user(), refusal, Some(self.remote));
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(id) = self.live {
            self.route.forget_live(id);
        }
    }
}
