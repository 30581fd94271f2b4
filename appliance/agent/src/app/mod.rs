//! The application service of an app agent: the applications it publishes (`--app`,
//! `app_service.apps`), each reached by name through a Dial. The uri's scheme says how: a
//! `tcp://` app gets its bytes relayed ([`tcp`]); an `http://`/`https://` app gets the proxy's
//! HTTP/1.1 requests forwarded ([`http`]) with the identity and rewrites applied ([`rewrite`],
//! [`jwt_claims`]) through a pooled client ([`upstream`]). Who may reach an application was
//! decided by the proxy before the Dial arrived; the proxy audits the session.

mod http;
mod jwt_claims;
mod rewrite;
mod tcp;
#[cfg(test)]
mod tests;
mod upstream;

use std::collections::HashMap;
use std::sync::Arc;

use hop_config::services::AppSpec;
use hop_net::tunnel::Prefixed;
use hop_protocols::tunnel::Dial;

use crate::dial::{DataStream, answer};

/// The deadline for a request head on a data connection, shared with the kube service.
pub(crate) use http::HEAD_TIMEOUT;

/// An application as the agent serves it.
enum App {
    Tcp(AppSpec),
    Web(Arc<http::WebApp>),
    /// A web app whose upstream could not be set up: every Dial is refused with this.
    Broken(String),
}

/// The agent's applications, by name, with each web app's upstream client (built once, so
/// that every session shares its connection pool).
#[derive(Default)]
pub(crate) struct Apps {
    by_name: HashMap<String, App>,
}

impl Apps {
    pub(crate) fn new(specs: &[AppSpec]) -> Self {
        let by_name = specs
            .iter()
            .map(|s| {
                let app = if s.is_web() {
                    match http::WebApp::new(s) {
                        Ok(w) => App::Web(Arc::new(w)),
                        Err(e) => App::Broken(e.to_string()),
                    }
                } else {
                    App::Tcp(s.clone())
                };
                (s.name.clone(), app)
            })
            .collect();
        Self { by_name }
    }
}

/// Is `dial` for a TCP application, whose session takes its keys out of rustls ([`tcp`])?
pub(crate) fn may_leave_rustls(apps: &Apps, dial: &Dial) -> bool {
    matches!(apps.by_name.get(&dial.target), Some(App::Tcp(_)))
}

/// Serves a Dial for the application named by its target.
pub(crate) async fn serve(apps: &Apps, mut framed: DataStream, dial: Dial) {
    match apps.by_name.get(&dial.target) {
        Some(App::Tcp(spec)) => tcp::serve(spec, framed, dial).await,
        Some(App::Web(app)) => {
            if !answer(&mut framed, dial.session_id, None).await {
                return;
            }
            tracing::debug!(app = %dial.target, client = %dial.client_addr, "web session started");
            let (tunnel, pending) = framed.into_inner();
            // Boxed: a TCP session's task need not be as large as an HTTP connection's.
            Box::pin(http::serve(app.clone(), Prefixed::new(tunnel, pending))).await;
        }
        Some(App::Broken(why)) => {
            answer(&mut framed, dial.session_id, Some(why.clone())).await;
        }
        None => {
            let refused = format!("this agent does not serve {:?}", dial.target);
            answer(&mut framed, dial.session_id, Some(refused)).await;
        }
    }
}
