//! Kubernetes certificates (`IssueKubeCertificate`) and listings (`ListKubeClusters`): issued
//! through admission for a user whose only role allows the cluster's labels, routed to the
//! cluster, capped by the login and the role's max_session_ttl; refused (and audited) for a role
//! without the labels, a locked or deleted user, a route-bound caller, an unknown cluster and an
//! anonymous caller; a kube-bound certificate gets no application or database certificate; the
//! listing shows only allowed clusters, with the users and groups the role maps to.

use std::sync::Arc;

use hop_api::proto::app_access_server::AppAccess;
use hop_api::proto::kube_access_server::KubeAccess;
use hop_api::proto::{AppCertificateRequest, KubeCertificateRequest, ListKubeClustersRequest};

use super::*;
use crate::admission::Presented;
use crate::caller::Caller;
use crate::inventory::{AgentInfo, AppRoute, DbRoute, Inventory, KubeRoute, NodeRoute};

type Who = (
    hop_ca::Identity,
    std::time::SystemTime,
    std::time::SystemTime,
);

const KUBE_ROLE: &str = "kind: role\nversion: v7\nmetadata:\n  name: kube-dev\nspec:\n  options:\n    max_session_ttl: 2h\n  allow:\n    kubernetes_labels:\n      env: dev\n    kubernetes_users: ['dev-{{internal.logins}}']\n    kubernetes_groups: [viewers]\n    app_labels:\n      env: dev\n";

fn cluster(name: &str, env: &str) -> KubeRoute {
    KubeRoute {
        name: name.into(),
        labels: [("env".to_string(), env.to_string())].into(),
        host_id: "kube-agent-1".into(),
    }
}

fn kube_user(f: &Fixture, name: &str) -> Who {
    f.auth
        .create_resources(KUBE_ROLE, "kube.yaml", false, "test", &|_, _| Ok(()))
        .ok();
    let secret = f.user(name, &["kube-dev"]);
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

fn presented(who: &Who) -> Presented<'_> {
    Presented {
        identity: &who.0,
        issued_at: who.1,
        expires: who.2,
        login: None,
        target: None,
    }
}

fn issue(
    f: &Fixture,
    who: &Who,
    c: &KubeRoute,
    ttl: Option<Duration>,
) -> Result<crate::kube_access::KubeCertificate, AuthError> {
    f.auth
        .issue_kube_certificate(&presented(who), c, ttl, &f.tls_spki)
}

fn kube_refusals(f: &Fixture, n: usize) -> Vec<serde_json::Value> {
    let deadline = hop_platform::clock::now() + Duration::from_secs(5);
    loop {
        let found: Vec<_> = f
            .events()
            .into_iter()
            .filter(|e| e["event"] == "access.refused" && e["route"] == "kube")
            .collect();
        if found.len() >= n || hop_platform::clock::now() >= deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_kube_role_gets_a_certificate_routed_to_the_cluster() {
    let f = fixture("otp");
    let who = kube_user(&f, "dana");
    let cert = issue(&f, &who, &cluster("dev", "dev"), None).unwrap();
    let der = hop_ca::parse_pem_certs(&cert.certificate_pem)
        .unwrap()
        .remove(0);
    let cas = f.auth.public_authorities(hop_ca::CaKind::User);
    let (id, not_after) = hop_ca::verify_user_x509(&der, &cas, f.clock.now()).unwrap();
    assert_eq!(id.route_to_kube_cluster.as_deref(), Some("dev"));
    assert_eq!(id.route_to_app, None);
    assert_eq!(id.route_to_database, None);
    assert_eq!(id.username, "dana");
    assert_eq!(not_after, f.clock.now() + Duration::from_secs(2 * 3600));
    let short = issue(
        &f,
        &who,
        &cluster("dev", "dev"),
        Some(Duration::from_secs(60)),
    )
    .unwrap();
    assert_eq!(short.expires, f.clock.now() + Duration::from_secs(60));
    f.clock.set(who.2 + Duration::from_secs(1));
    let err = issue(&f, &who, &cluster("dev", "dev"), None).unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
}

#[test]
fn a_role_without_the_clusters_labels_is_refused_and_audited() {
    let f = fixture("otp");
    let who = kube_user(&f, "dana");
    let err = issue(&f, &who, &cluster("prod", "prod"), None).unwrap_err();
    assert!(matches!(err, AuthError::Denied(_)), "{err:?}");
    assert!(err.to_string().contains("\"prod\""), "{err}");
    let events = kube_refusals(&f, 1);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["user"], "dana");
    assert_eq!(events[0]["reason"], "access_denied");
}

#[test]
fn locked_and_deleted_users_get_no_kube_certificate() {
    let f = fixture("otp");
    let who = kube_user(&f, "dana");
    f.auth.lock_user("dana", None, "left", "test").unwrap();
    let err = issue(&f, &who, &cluster("dev", "dev"), None).unwrap_err();
    assert!(err.to_string().contains("locked"), "{err}");
    let who = kube_user(&f, "erin");
    f.auth.delete_resource("user", "erin", "test").unwrap();
    let err = issue(&f, &who, &cluster("dev", "dev"), None).unwrap_err();
    assert!(err.to_string().contains("no longer exists"), "{err}");
    let reasons: Vec<_> = kube_refusals(&f, 2)
        .iter()
        .map(|e| e["reason"].clone())
        .collect();
    assert!(reasons.contains(&"locked".into()), "{reasons:?}");
    assert!(reasons.contains(&"deleted".into()), "{reasons:?}");
}

#[test]
fn route_bound_certificates_get_no_kube_certificate_and_a_kube_one_gets_nothing_else() {
    let f = fixture("otp");
    let who = kube_user(&f, "dana");
    for bind in [
        |id: &mut hop_ca::Identity| id.route_to_app = Some("grafana".into()),
        |id: &mut hop_ca::Identity| id.route_to_kube_cluster = Some("dev".into()),
    ] {
        let mut bound = who.clone();
        bind(&mut bound.0);
        let err = issue(&f, &bound, &cluster("dev", "dev"), None).unwrap_err();
        assert!(err.to_string().contains("login certificate"), "{err}");
    }
    let mut bound = who.clone();
    bound.0.route_to_kube_cluster = Some("dev".into());
    let app = AppRoute {
        name: "grafana".into(),
        uri: "http://127.0.0.1:3000".into(),
        labels: [("env".to_string(), "dev".to_string())].into(),
        host_id: "a".into(),
    };
    let err = f
        .auth
        .issue_app_certificate(&presented(&bound), &app, None, &f.tls_spki)
        .unwrap_err();
    assert!(err.to_string().contains("login certificate"), "{err}");
    // The same caller unbound gets the application's certificate: the refusal is the binding.
    f.auth
        .issue_app_certificate(&presented(&who), &app, None, &f.tls_spki)
        .unwrap();
    let route = hop_ca::RouteToDatabase {
        service: "pg".into(),
        username: "alice".into(),
        database: "app".into(),
    };
    let err = f
        .auth
        .issue_database_route(&bound.0, bound.2, route, &f.tls_spki)
        .unwrap_err();
    assert!(err.to_string().contains("Kubernetes cluster"), "{err}");
}

#[derive(Debug)]
struct TwoClusters;

impl Inventory for TwoClusters {
    fn proxy_id(&self) -> &str {
        "proxy-1"
    }
    fn list(&self) -> Vec<AgentInfo> {
        Vec::new()
    }
    fn apps(&self) -> Vec<AppRoute> {
        Vec::new()
    }
    fn databases(&self) -> Vec<DbRoute> {
        Vec::new()
    }
    fn nodes(&self) -> Vec<NodeRoute> {
        Vec::new()
    }
    fn kube_clusters(&self) -> Vec<KubeRoute> {
        vec![cluster("dev", "dev"), cluster("prod", "prod")]
    }
}

fn with_caller<T>(who: Option<&Who>, msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
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

fn cert_request(cluster: &str, spki: &[u8]) -> KubeCertificateRequest {
    KubeCertificateRequest {
        kube_cluster: cluster.into(),
        tls_public_key: spki.to_vec(),
        ttl_seconds: 0,
    }
}

#[test]
fn the_rpcs_list_allowed_clusters_and_name_the_endpoint() {
    let f = fixture("otp");
    let who = kube_user(&f, "dana");
    let spki = f.tls_spki.clone();
    let Fixture {
        auth, _dir, log, ..
    } = f;
    let api = crate::grpc::AuthApi::new(
        Arc::new(auth),
        Arc::new(hop_metrics::Metrics::default()),
        Some(Arc::new(TwoClusters)),
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
    let listed = api
        .list_kube_clusters(with_caller(Some(who), ListKubeClustersRequest {}))
        .await
        .unwrap()
        .into_inner()
        .clusters;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].name, "dev");
    assert_eq!(listed[0].agent_id, "kube-agent-1");
    assert_eq!(listed[0].kubernetes_groups, vec!["viewers".to_string()]);
    assert!(
        listed[0]
            .kubernetes_users
            .iter()
            .all(|u| u.starts_with("dev-")),
        "{listed:?}"
    );
    let ok = api
        .issue_kube_certificate(with_caller(Some(who), cert_request("dev", spki)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.tls_server_name, "kube.proxy.unit.test");
    assert_eq!(ok.proxy_addr, "proxy.unit.test:3080");
    assert!(ok.trusted_cas_pem.contains("BEGIN CERTIFICATE"));
    let prod = api
        .issue_kube_certificate(with_caller(Some(who), cert_request("prod", spki)))
        .await
        .unwrap_err();
    assert_eq!(prod.code(), tonic::Code::PermissionDenied, "{prod:?}");
    let missing = api
        .issue_kube_certificate(with_caller(Some(who), cert_request("nope", spki)))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let stranger = api
        .issue_kube_certificate(with_caller(None, cert_request("dev", spki)))
        .await
        .unwrap_err();
    assert_eq!(stranger.code(), tonic::Code::Unauthenticated);
    let anonymous_list = api
        .list_kube_clusters(with_caller(None, ListKubeClustersRequest {}))
        .await
        .unwrap_err();
    assert_eq!(anonymous_list.code(), tonic::Code::Unauthenticated);
    // An app certificate cannot be had with the kube certificate's identity either.
    let mut bound = who.clone();
    bound.0.route_to_kube_cluster = Some("dev".into());
    let refused = api
        .issue_app_certificate(with_caller(
            Some(&bound),
            AppCertificateRequest {
                app: "grafana".into(),
                tls_public_key: spki.to_vec(),
                ttl_seconds: 0,
            },
        ))
        .await
        .unwrap_err();
    assert_ne!(refused.code(), tonic::Code::Ok);
}
