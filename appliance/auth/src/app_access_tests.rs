//! Application certificates (`IssueAppCertificate`): issued through admission for a user whose
//! only role allows the app's labels, routed to the app, capped by the login and the role's
//! max_session_ttl; refused (and audited) for a role without the labels, a locked or deleted
//! user, a route-bound caller, an unknown app and an anonymous caller.

use std::sync::Arc;

use hop_api::proto::AppCertificateRequest;
use hop_api::proto::app_access_server::AppAccess;

use super::*;
use crate::admission::Presented;
use crate::caller::Caller;
use crate::inventory::{AgentInfo, AppRoute, DbRoute, Inventory, KubeRoute, NodeRoute};

/// A login: its identity, when it was issued, when it expires.
type Who = (
    hop_ca::Identity,
    std::time::SystemTime,
    std::time::SystemTime,
);

const APP_ROLE: &str = "kind: role\nversion: v7\nmetadata:\n  name: app-dev\nspec:\n  options:\n    max_session_ttl: 2h\n  allow:\n    app_labels:\n      env: dev\n";

fn grafana(env: &str) -> AppRoute {
    AppRoute {
        name: "grafana".into(),
        uri: "http://127.0.0.1:3000".into(),
        labels: [("env".to_string(), env.to_string())].into(),
        host_id: "agent-1".into(),
    }
}

/// A logged-in user `name` holding only the app role: (identity, issued_at, expires).
fn app_user(f: &Fixture, name: &str) -> Who {
    f.auth
        .create_resources(APP_ROLE, "app.yaml", false, "test", &|_, _| Ok(()))
        .ok();
    let secret = f.user(name, &["app-dev"]);
    f.clock.advance(Duration::from_secs(30));
    let code = totp::code_at(&secret, f.clock.now());
    let login = f.login(name, PASSWORD, &code).unwrap();
    let der = hop_ca::parse_pem_certs(&login.tls_certificate_pem)
        .unwrap()
        .remove(0);
    let cas = f.auth.public_authorities(hop_ca::CaKind::User);
    let (identity, expires) = hop_ca::verify_user_x509(&der, &cas, f.clock.now()).unwrap();
    (identity, f.clock.now(), expires)
}

fn issue(
    f: &Fixture,
    who: &Who,
    app: &AppRoute,
    ttl: Option<Duration>,
) -> Result<crate::app_access::AppCertificate, AuthError> {
    let presented = Presented {
        identity: &who.0,
        issued_at: who.1,
        expires: who.2,
        login: None,
        target: None,
    };
    f.auth
        .issue_app_certificate(&presented, app, ttl, &f.tls_spki)
}

/// The app route's refusals in the audit log, once `n` of them are there (queued events reach
/// the log a moment later) or after 5 s.
fn refusals(f: &Fixture, n: usize) -> Vec<serde_json::Value> {
    let deadline = hop_platform::clock::now() + Duration::from_secs(5);
    loop {
        let found: Vec<_> = f
            .events()
            .into_iter()
            .filter(|e| e["event"] == "access.refused" && e["route"] == "app")
            .collect();
        if found.len() >= n || hop_platform::clock::now() >= deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_app_role_gets_a_certificate_routed_to_the_app() {
    let f = fixture("otp");
    let who = app_user(&f, "dana");
    let cert = issue(&f, &who, &grafana("dev"), None).unwrap();
    let der = hop_ca::parse_pem_certs(&cert.certificate_pem)
        .unwrap()
        .remove(0);
    let cas = f.auth.public_authorities(hop_ca::CaKind::User);
    let (id, not_after) = hop_ca::verify_user_x509(&der, &cas, f.clock.now()).unwrap();
    assert_eq!(id.route_to_app.as_deref(), Some("grafana"));
    assert_eq!(id.route_to_database, None);
    assert_eq!(id.username, "dana");
    assert_eq!(id.roles, vec!["app-dev".to_string()]);
    // The role's max_session_ttl (2 h) is the ceiling, below the login's own end.
    assert_eq!(not_after, f.clock.now() + Duration::from_secs(2 * 3600));
    assert_eq!(cert.expires, not_after);
    assert!(cert.trusted_cas_pem.contains("BEGIN CERTIFICATE"));
}

#[test]
fn the_ttl_asked_for_is_honoured_but_never_past_the_login() {
    let f = fixture("otp");
    let who = app_user(&f, "dana");
    let short = issue(&f, &who, &grafana("dev"), Some(Duration::from_secs(600))).unwrap();
    assert_eq!(short.expires, f.clock.now() + Duration::from_secs(600));
    // Late in the login: the app certificate ends with it, whatever was asked.
    f.clock.set(who.2 - Duration::from_secs(90));
    let late = issue(&f, &who, &grafana("dev"), Some(Duration::from_secs(3600))).unwrap();
    assert_eq!(late.expires, who.2);
    // Nothing derives from an expired login.
    f.clock.set(who.2 + Duration::from_secs(1));
    let err = issue(&f, &who, &grafana("dev"), None).unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
}

#[test]
fn a_role_without_the_apps_labels_is_refused_and_audited() {
    let f = fixture("otp");
    let who = app_user(&f, "dana");
    let err = issue(&f, &who, &grafana("prod"), None).unwrap_err();
    assert!(matches!(err, AuthError::Denied(_)), "{err:?}");
    assert!(err.to_string().contains("grafana"), "{err}");
    let events = refusals(&f, 1);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["user"], "dana");
    assert_eq!(events[0]["reason"], "access_denied");
}

#[test]
fn locked_and_deleted_users_get_no_app_certificate() {
    let f = fixture("otp");
    let who = app_user(&f, "dana");
    f.auth.lock_user("dana", None, "left", "test").unwrap();
    let err = issue(&f, &who, &grafana("dev"), None).unwrap_err();
    assert!(err.to_string().contains("locked"), "{err}");

    let who = app_user(&f, "erin");
    f.auth.delete_resource("user", "erin", "test").unwrap();
    let err = issue(&f, &who, &grafana("dev"), None).unwrap_err();
    assert!(err.to_string().contains("no longer exists"), "{err}");
    let reasons: Vec<_> = refusals(&f, 2)
        .iter()
        .map(|e| e["reason"].clone())
        .collect();
    assert!(reasons.contains(&"locked".into()), "{reasons:?}");
    assert!(reasons.contains(&"deleted".into()), "{reasons:?}");
}

#[test]
fn a_route_bound_certificate_cannot_get_another() {
    let f = fixture("otp");
    let mut who = app_user(&f, "dana");
    who.0.route_to_app = Some("other".into());
    let err = issue(&f, &who, &grafana("dev"), None).unwrap_err();
    assert!(err.to_string().contains("login certificate"), "{err}");
}

#[derive(Debug)]
struct OneApp;

impl Inventory for OneApp {
    fn proxy_id(&self) -> &str {
        "proxy-1"
    }
    fn list(&self) -> Vec<AgentInfo> {
        Vec::new()
    }
    fn apps(&self) -> Vec<AppRoute> {
        vec![grafana("dev")]
    }
    fn databases(&self) -> Vec<DbRoute> {
        Vec::new()
    }
    fn nodes(&self) -> Vec<NodeRoute> {
        Vec::new()
    }
    fn kube_clusters(&self) -> Vec<KubeRoute> {
        Vec::new()
    }
}

fn request(who: Option<&Who>, app: &str, spki: &[u8]) -> tonic::Request<AppCertificateRequest> {
    let mut req = tonic::Request::new(AppCertificateRequest {
        app: app.into(),
        tls_public_key: spki.to_vec(),
        ttl_seconds: 0,
    });
    let caller = match who {
        Some((identity, issued_at, expires)) => Caller::User {
            identity: Box::new(identity.clone()),
            remote: "192.0.2.7:5555".parse().unwrap(),
            expires: *expires,
            issued_at: *issued_at,
        },
        None => Caller::Anonymous { remote: None },
    };
    req.extensions_mut().insert(caller);
    req
}

#[test]
fn the_rpc_names_the_public_address_and_refuses_unknown_apps_and_strangers() {
    // Set up off the runtime: sign-up and login wait for durable audit writes.
    let f = fixture("otp");
    let who = app_user(&f, "dana");
    let spki = f.tls_spki.clone();
    let Fixture {
        auth, _dir, log, ..
    } = f;
    let api = crate::grpc::AuthApi::new(
        Arc::new(auth),
        Arc::new(hop_metrics::Metrics::default()),
        Some(Arc::new(OneApp)),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(rpc_checks(&api, &who, &spki));
    drop(log);
}

async fn rpc_checks(api: &crate::grpc::AuthApi, who: &Who, spki: &[u8]) {
    let who = Some(who);
    let ok = api
        .issue_app_certificate(request(who, "grafana", spki))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.public_addr, "grafana.proxy.unit.test:3080");
    assert_eq!(ok.uri, "http://127.0.0.1:3000");
    let missing = api
        .issue_app_certificate(request(who, "nope", spki))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert!(missing.message().contains("\"nope\""), "{missing:?}");
    let stranger = api
        .issue_app_certificate(request(None, "grafana", spki))
        .await
        .unwrap_err();
    assert_eq!(stranger.code(), tonic::Code::Unauthenticated);
    let empty = api
        .issue_app_certificate(request(who, "", spki))
        .await
        .unwrap_err();
    assert_eq!(empty.code(), tonic::Code::InvalidArgument);
}
