//! The Auth service on an in-memory backend with simulated time: lockout and its expiry, replayed
//! codes, TTL capping by roles, audit events for every outcome, and all-or-nothing imports.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use hop_storage::{AuditLog, Clock, ManualClock, MemoryBackend, ResourceStore};

use super::audit::AuditLogSink;
use super::server::{AuthError, AuthServer, AuthSettings, LoginRequest};
use super::totp;
use crate::metrics::Metrics;

const PASSWORD: &str = "correct horse battery staple";

struct Fixture {
    auth: AuthServer,
    clock: ManualClock,
    log: Arc<AuditLog>,
    _dir: tempfile::TempDir,
    ssh_pub: String,
    tls_spki: Vec<u8>,
}

fn fixture(second_factor: &str) -> Fixture {
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let c: Arc<dyn Clock> = Arc::new(clock.clone());
    let backend = Arc::new(MemoryBackend::new(c.clone()));
    let metrics = Arc::new(Metrics::default());
    let settings = AuthSettings {
        cluster_name: Some("unit.test".into()),
        second_factor: second_factor.into(),
        max_failed_attempts: 5,
        lockout: Duration::from_secs(1800),
        attempts_per_ip_per_minute: 1000,
        invite_ttl: Duration::from_secs(3600),
        web_addr: "proxy.unit.test:3080".into(),
        session_recording: "node".into(),
    };
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(
        AuditLog::open(&dir.path().join("audit.db"), c.clone(), Default::default()).unwrap(),
    );
    let audit = Arc::new(AuditLogSink::new(log.clone(), metrics.clone()));
    let auth = AuthServer::open(
        ResourceStore::new(backend.clone()),
        c,
        settings,
        audit,
        metrics,
    )
    .unwrap();
    let mut rng = rand::rng();
    let ssh = hop_ca::generate_ssh_keypair(&mut rng).unwrap();
    let tls = hop_ca::generate_x509_keypair(&mut rng).unwrap();
    Fixture {
        auth,
        clock,
        log,
        _dir: dir,
        ssh_pub: ssh.public_openssh.clone(),
        tls_spki: tls.public_spki_der.clone(),
    }
}

impl Fixture {
    /// Creates `name` and completes the sign-up; returns the TOTP secret.
    fn user(&self, name: &str, roles: &[&str]) -> Vec<u8> {
        let mut traits = BTreeMap::new();
        traits.insert("logins".to_string(), vec![name.to_string()]);
        let roles: Vec<String> = roles.iter().map(|s| s.to_string()).collect();
        let invite = self.auth.create_user(name, &roles, traits, "test").unwrap();
        let secret = vec![42u8; 20];
        let code = totp::code_at(&secret, self.clock.now());
        self.auth
            .complete_signup(
                &invite.token,
                PASSWORD,
                &totp::encode_secret(&secret),
                &code,
                None,
            )
            .unwrap();
        secret
    }

    fn login(
        &self,
        name: &str,
        password: &str,
        code: &str,
    ) -> Result<super::server::LoginCertificates, AuthError> {
        self.auth.login(&LoginRequest {
            username: name,
            password,
            totp_code: code,
            ssh_public_key: &self.ssh_pub,
            tls_public_key_der: &self.tls_spki,
            ttl: None,
            remote: Some("192.0.2.7:5555".parse().unwrap()),
        })
    }

    fn events(&self) -> Vec<serde_json::Value> {
        let q = hop_storage::SearchQuery {
            order: hop_storage::Order::OldestFirst,
            limit: 10_000,
            ..Default::default()
        };
        let page = self.log.search(&q).unwrap();
        page.events
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .collect()
    }
}

#[test]
fn login_issues_certificates_and_codes_work_once() {
    let f = fixture("otp");
    let secret = f.user("alice", &["access"]);
    // The sign-up used the current step: the same code again is a replay.
    let code = totp::code_at(&secret, f.clock.now());
    assert!(matches!(
        f.login("alice", PASSWORD, &code),
        Err(AuthError::InvalidCredentials)
    ));
    f.clock.advance(Duration::from_secs(30));
    let code = totp::code_at(&secret, f.clock.now());
    let certs = f.login("alice", PASSWORD, &code).unwrap();
    assert_eq!(certs.logins, vec!["alice".to_string()]);
    assert_eq!(certs.roles, vec!["access".to_string()]);
    assert_eq!(certs.expires, f.clock.now() + Duration::from_secs(8 * 3600));
    let (id, _) = hop_ca::verify_user_ssh(
        &certs.ssh_certificate,
        &[f.auth.authorities().user.public()],
        f.clock.now(),
    )
    .unwrap();
    assert_eq!(id.username, "alice");
    assert!(
        matches!(
            f.login("alice", PASSWORD, &code),
            Err(AuthError::InvalidCredentials)
        ),
        "replayed code accepted"
    );

    let events = f.events();
    let kinds: Vec<(&str, bool)> = events
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap(),
                e["success"].as_bool().unwrap(),
            )
        })
        .collect();
    assert!(kinds.contains(&("user.create", true)));
    assert!(kinds.contains(&("user.signup", true)));
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == ("user.login", false))
            .count(),
        2
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == ("user.login", true)).count(),
        1
    );
    let ok = events
        .iter()
        .find(|e| e["event"] == "user.login" && e["success"] == true)
        .unwrap();
    assert_eq!(ok["code"], "H1000I");
    assert_eq!(ok["addr.remote"], "192.0.2.7:5555");
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains(PASSWORD), "a password reached the audit log");
}

#[test]
fn five_failures_lock_for_the_configured_time_then_the_lock_lapses() {
    let f = fixture("otp");
    let secret = f.user("bob", &["access"]);
    for _ in 0..5 {
        f.clock.advance(Duration::from_secs(30));
        let code = totp::code_at(&secret, f.clock.now());
        assert!(matches!(
            f.login("bob", "wrong password!", &code),
            Err(AuthError::InvalidCredentials)
        ));
    }
    f.clock.advance(Duration::from_secs(30));
    let code = totp::code_at(&secret, f.clock.now());
    // Locked: the right password gets the same answer as a wrong one; the audit log says why.
    assert!(matches!(
        f.login("bob", PASSWORD, &code),
        Err(AuthError::InvalidCredentials)
    ));
    assert!(f.events().iter().any(|e| e["event"] == "user.locked"));
    assert!(f.events().iter().any(|e| {
        e["event"] == "user.login"
            && e["error"]
                .as_str()
                .is_some_and(|x| x.contains("locked until"))
    }));
    f.clock.advance(Duration::from_secs(1800));
    let code = totp::code_at(&secret, f.clock.now());
    f.login("bob", PASSWORD, &code).unwrap();
}

#[test]
fn unknown_users_and_second_factor_off() {
    let f = fixture("off");
    assert!(matches!(
        f.login("nobody", PASSWORD, ""),
        Err(AuthError::InvalidCredentials)
    ));
    let mut traits = BTreeMap::new();
    traits.insert("logins".to_string(), vec!["carol".to_string()]);
    let invite = f
        .auth
        .create_user("carol", &["access".into()], traits, "test")
        .unwrap();
    f.auth
        .complete_signup(&invite.token, PASSWORD, "", "", None)
        .unwrap();
    // The invite is single use.
    assert!(matches!(
        f.auth
            .complete_signup(&invite.token, PASSWORD, "", "", None),
        Err(AuthError::InviteNotFound)
    ));
    f.login("carol", PASSWORD, "").unwrap();
}

#[test]
fn role_max_session_ttl_caps_certificates() {
    let f = fixture("otp");
    let role = "kind: role\nversion: v7\nmetadata:\n  name: short\nspec:\n  options:\n    max_session_ttl: 1h\n  allow:\n    logins: ['{{internal.logins}}']\n    node_labels: {'*': '*'}\n";
    f.auth
        .create_resources(role, "short.yaml", false, "test", &|_, _| Ok(()))
        .unwrap();
    let secret = f.user("dave", &["access", "short"]);
    f.clock.advance(Duration::from_secs(30));
    let code = totp::code_at(&secret, f.clock.now());
    let certs = f.login("dave", PASSWORD, &code).unwrap();
    assert_eq!(certs.expires, f.clock.now() + Duration::from_secs(3600));
}

#[test]
fn imports_are_all_or_nothing_and_cas_are_not_importable() {
    let f = fixture("otp");
    let docs = "kind: role\nversion: v7\nmetadata:\n  name: ok\nspec: {}\n---\nkind: role\nversion: v7\nmetadata:\n  name: bad\nspec:\n  allow:\n    node_labels:\n      env: '^(x$'\n";
    let err = f
        .auth
        .create_resources(docs, "two.yaml", false, "test", &|_, _| Ok(()))
        .unwrap_err();
    assert!(err.to_string().contains("two.yaml"), "{err}");
    assert!(
        f.auth.get_resources("role", Some("ok")).is_err(),
        "first document was written"
    );
    let denied = f.auth.create_resources(
        "kind: role\nversion: v7\nmetadata:\n  name: ok\nspec: {}\n",
        "one.yaml",
        false,
        "test",
        &|_, _| Err(AuthError::Denied("no".into())),
    );
    assert!(matches!(denied, Err(AuthError::Denied(_))));
    let user_with_missing_role =
        "kind: user\nversion: v2\nmetadata:\n  name: eve\nspec:\n  roles: [ghost]\n";
    let err = f
        .auth
        .create_resources(user_with_missing_role, "u.yaml", false, "t", &|_, _| Ok(()))
        .unwrap_err();
    assert!(err.to_string().contains("ghost"), "{err}");
}

/// The notAfter of an X.509 user certificate, as a verifier reads it.
fn not_after(f: &Fixture, pem: &str) -> std::time::SystemTime {
    let der = hop_ca::parse_pem_certs(pem).unwrap().remove(0);
    let cas = f.auth.public_authorities(hop_ca::CaKind::User);
    hop_ca::verify_user_x509(&der, &cas, f.clock.now())
        .unwrap()
        .1
}

#[test]
fn a_role_without_max_session_ttl_caps_certificates_at_30_hours() {
    let f = fixture("otp");
    let role = "kind: role\nversion: v7\nmetadata:\n  name: nolimit\nspec:\n  allow:\n    logins: ['{{internal.logins}}']\n    node_labels: {'*': '*'}\n";
    f.auth
        .create_resources(role, "nolimit.yaml", false, "test", &|_, _| Ok(()))
        .unwrap();
    let secret = f.user("erin", &["nolimit"]);
    f.clock.advance(Duration::from_secs(30));
    let code = totp::code_at(&secret, f.clock.now());
    // Ten years asked for: clamped, not refused.
    let certs = f
        .auth
        .login(&LoginRequest {
            username: "erin",
            password: PASSWORD,
            totp_code: &code,
            ssh_public_key: &f.ssh_pub,
            tls_public_key_der: &f.tls_spki,
            ttl: Some(Duration::from_secs(87_600 * 3600)),
            remote: None,
        })
        .unwrap();
    let ceiling = f.clock.now() + hop_rbac::DEFAULT_MAX_SESSION_TTL;
    assert_eq!(certs.expires, ceiling);
    assert_eq!(not_after(&f, &certs.tls_certificate_pem), ceiling);
    let ssh = hop_ca::verify_user_ssh(
        &certs.ssh_certificate,
        &f.auth.public_authorities(hop_ca::CaKind::User),
        f.clock.now(),
    );
    assert!(ssh.is_ok(), "{ssh:?}");
}

#[test]
fn database_route_certificates_never_outlive_the_login() {
    let f = fixture("otp");
    let secret = f.user("frank", &["access"]);
    f.clock.advance(Duration::from_secs(30));
    let code = totp::code_at(&secret, f.clock.now());
    let login = f.login("frank", PASSWORD, &code).unwrap();
    let der = hop_ca::parse_pem_certs(&login.tls_certificate_pem)
        .unwrap()
        .remove(0);
    let cas = f.auth.public_authorities(hop_ca::CaKind::User);
    let (identity, parent_expires) = hop_ca::verify_user_x509(&der, &cas, f.clock.now()).unwrap();
    let route = || hop_ca::RouteToDatabase {
        service: "pg".into(),
        username: "frank".into(),
        database: "app".into(),
    };
    // Later in the session: the route ends with the login, not a full TTL from now.
    f.clock.advance(Duration::from_secs(3 * 3600));
    let r = f
        .auth
        .issue_database_route(&identity, parent_expires, route(), &f.tls_spki)
        .unwrap();
    assert_eq!(r.expires, parent_expires);
    assert!(not_after(&f, &r.certificate_pem) <= parent_expires);
    // A parent that claims to live longer than the roles allow is cut to the ceiling.
    let r = f
        .auth
        .issue_database_route(
            &identity,
            f.clock.now() + Duration::from_secs(100 * 3600),
            route(),
            &f.tls_spki,
        )
        .unwrap();
    assert_eq!(
        r.expires,
        f.clock.now() + hop_rbac::builtin::PRESET_MAX_SESSION_TTL.as_std()
    );
    // Nothing is derived from an expired login.
    f.clock.set(parent_expires);
    let err = f
        .auth
        .issue_database_route(&identity, parent_expires, route(), &f.tls_spki)
        .unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
}

#[test]
fn admin_signed_certificates_are_clamped_not_refused() {
    let f = fixture("otp");
    let ssh = hop_ca::generate_ssh_keypair(&mut rand::rng()).unwrap();
    let century = Duration::from_secs(100 * 365 * 24 * 3600);
    let (_, _, expires) = f
        .auth
        .sign_openssh_host(&["web1".into()], &ssh.public_openssh, Some(century))
        .unwrap();
    assert_eq!(
        expires,
        f.clock.now() + super::openssh::OPENSSH_HOST_CERT_MAX_TTL
    );
    let (_, _, expires) = f
        .auth
        .sign_database_server(&["db.example.com".into()], Some(century), &f.tls_spki)
        .unwrap();
    assert_eq!(
        expires,
        f.clock.now() + super::databases::DB_SERVER_CERT_MAX_TTL
    );
}
