//! The Auth service on an in-memory backend with simulated time: lockout and its expiry, replayed
//! codes, TTL capping by roles and the 30 h ceiling, derived certificates that end with their
//! parent, audit events for every outcome, all-or-nothing imports, join tokens kept as hashes and
//! counted down, and the node names Auth certifies.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use hop_storage::{AuditLog, Clock, ManualClock, MemoryBackend, ResourceStore};

use super::audit::AuditLogSink;
use super::server::{AuthError, AuthServer, AuthSettings, LoginRequest};
use hop_api::totp;
use hop_metrics::Metrics;

pub(crate) const PASSWORD: &str = "correct horse battery staple";

pub(crate) struct Fixture {
    pub(crate) auth: AuthServer,
    pub(crate) clock: ManualClock,
    log: Arc<AuditLog>,
    _dir: tempfile::TempDir,
    pub(crate) ssh_pub: String,
    pub(crate) tls_spki: Vec<u8>,
}

pub(crate) fn fixture(second_factor: &str) -> Fixture {
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let c: Arc<dyn Clock> = Arc::new(clock.clone());
    let backend = Arc::new(MemoryBackend::new(c));
    fixture_with(backend, clock, second_factor)
}

/// An Auth service opened on `backend` (as at a restart), with TOTP second factors.
pub(crate) fn fixture_on(backend: Arc<MemoryBackend>, clock: ManualClock) -> Fixture {
    fixture_with(backend, clock, "otp")
}

/// An Auth service opened on any backend (one that can fail, say), with TOTP second factors.
pub(crate) fn fixture_over(backend: Arc<dyn hop_storage::Backend>, clock: ManualClock) -> Fixture {
    fixture_with(backend, clock, "otp")
}

fn fixture_with(
    backend: Arc<dyn hop_storage::Backend>,
    clock: ManualClock,
    second_factor: &str,
) -> Fixture {
    let c: Arc<dyn Clock> = Arc::new(clock.clone());
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
        proxy_public_names: vec!["gateway".into()],
        webauthn: super::server::WebauthnSettings {
            rp_id: "proxy.unit.test".into(),
            origins: vec!["https://proxy.unit.test:3080".into()],
        },
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
    pub(crate) fn user(&self, name: &str, roles: &[&str]) -> Vec<u8> {
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

    pub(crate) fn login(
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
            client: super::server::LoginClient::Cli,
        })
    }

    pub(crate) fn events(&self) -> Vec<serde_json::Value> {
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
            client: super::server::LoginClient::Cli,
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

/// A join as `role` asking for `name`, with fresh keys.
fn join(
    f: &Fixture,
    token: &str,
    role: &str,
    name: &str,
) -> Result<super::server::JoinedHost, AuthError> {
    let ssh = hop_ca::generate_ssh_keypair(&mut rand::rng()).unwrap();
    f.auth.join(&super::server::JoinRequest {
        token,
        role,
        host_name: name,
        tls_public_key_der: &f.tls_spki,
        ssh_public_key: if role == "node" {
            &ssh.public_openssh
        } else {
            ""
        },
        remote: None,
    })
}

fn renew(f: &Fixture, host_id: &str, name: &str) -> Result<super::server::JoinedHost, AuthError> {
    let serial = f.auth.last_host_serial(host_id).unwrap_or_default();
    f.auth.renew_host_identity(
        host_id,
        hop_ca::HostRole::Node,
        &serial,
        &super::server::JoinRequest {
            token: "",
            role: "node",
            host_name: name,
            tls_public_key_der: &f.tls_spki,
            ssh_public_key: "",
            remote: None,
        },
    )
}

fn roles(r: &[&str]) -> Vec<String> {
    r.iter().map(|s| s.to_string()).collect()
}

#[test]
fn join_token_secrets_are_stored_only_as_hashes() {
    let f = fixture("otp");
    let hour = Duration::from_secs(3600);
    let made = f
        .auth
        .create_join_token(&roles(&["node", "app"]), hour, None, None, "test")
        .unwrap();
    assert_ne!(made.id, made.secret);
    let chosen = "Vq3x9Lr7Tz2Kp8Wm4Nc6Hb1J";
    f.auth
        .create_join_token(&roles(&["db"]), hour, Some(chosen), Some(3), "test")
        .unwrap();
    // Nothing an operator reads, and nothing stored, carries a secret.
    let listed = serde_json::to_string(&f.auth.get_resources("token", None).unwrap()).unwrap();
    assert!(listed.contains(&made.id), "{listed}");
    assert!(!listed.contains("secret_hash"), "{listed}");
    let stored = f.auth.backend().range("", "\u{10ffff}", 10_000).unwrap();
    for item in &stored {
        let bytes = String::from_utf8_lossy(&item.value);
        assert!(
            !bytes.contains(&made.secret) && !bytes.contains(chosen),
            "{}",
            item.key
        );
        assert!(!item.key.contains(&made.secret) && !item.key.contains(chosen));
    }
    let events = serde_json::to_string(&f.events()).unwrap();
    assert!(!events.contains(&made.secret) && !events.contains(chosen));
    assert!(events.contains(&made.id), "{events}");
    // The same value twice is refused.
    let again = f
        .auth
        .create_join_token(&roles(&["db"]), hour, Some(chosen), None, "test")
        .unwrap_err();
    assert!(matches!(again, AuthError::AlreadyExists(_)), "{again}");
    // Token documents cannot be imported (they would carry the secret as their name).
    let doc = "kind: token\nversion: v2\nmetadata:\n  name: 3f9c1a7be2d04c6581f2a9d7e0b4c36a\n  expires: 2099-01-01T00:00:00Z\nspec:\n  roles: [node]\n";
    let err = f
        .auth
        .create_resources(doc, "t.yaml", false, "test", &|_, _| Ok(()))
        .unwrap_err();
    assert!(err.to_string().contains("hop admin tokens add"), "{err}");
}

#[test]
fn chosen_token_values_need_strength_and_proxy_tokens_stand_alone() {
    let f = fixture("otp");
    let hour = Duration::from_secs(3600);
    for weak in ["short", "aaaaaaaaaaaaaaaaaaaaaaaa", "0123456789abcdef0123"] {
        let err = f
            .auth
            .create_join_token(&roles(&["node"]), hour, Some(weak), None, "test")
            .unwrap_err();
        assert!(matches!(err, AuthError::BadRequest(_)), "{err}");
        assert!(err.to_string().starts_with("--value: "), "{err}");
        assert!(!err.to_string().contains(weak), "{err}");
    }
    let err = f
        .auth
        .create_join_token(&roles(&["node", "proxy"]), hour, None, None, "test")
        .unwrap_err();
    assert!(err.to_string().contains("proxy alone"), "{err}");
    let proxy = f
        .auth
        .create_join_token(&roles(&["proxy"]), hour, None, None, "test")
        .unwrap();
    let err = join(&f, &proxy.secret, "node", "web1").unwrap_err();
    assert!(
        err.to_string().contains("does not allow the node role"),
        "{err}"
    );
    // A proxy certificate opens proxy peering: no token makes one.
    let err = join(&f, &proxy.secret, "proxy", "").unwrap_err();
    assert!(
        err.to_string().contains("a proxy cannot join with a token"),
        "{err}"
    );
    // Nor does a renewal: proxies are certified in-process.
    let err = f
        .auth
        .renew_host_identity(
            "proxy-1",
            hop_ca::HostRole::Proxy,
            "",
            &super::server::JoinRequest {
                token: "",
                role: "proxy",
                host_name: "",
                tls_public_key_der: &f.tls_spki,
                ssh_public_key: "",
                remote: None,
            },
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("not renewed through the API"),
        "{err}"
    );
}

#[test]
fn limited_tokens_are_used_up_and_refusals_spend_nothing() {
    let f = fixture("otp");
    let t = f
        .auth
        .create_join_token(
            &roles(&["node", "app"]),
            Duration::from_secs(3600),
            None,
            Some(2),
            "test",
        )
        .unwrap();
    // A refused name spends no use.
    assert!(join(&f, &t.secret, "node", "10.0.0.1").is_err());
    assert!(join(&f, &t.secret, "node", "web1").is_ok());
    assert!(join(&f, &t.secret, "app", "").is_ok());
    let err = join(&f, &t.secret, "app", "").unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("join token {} has been used", t.id)),
        "{err}"
    );
    let doc = f.auth.get_resources("token", Some(&t.id)).unwrap();
    assert_eq!(doc[0]["spec"]["uses"], 0);
    // Wrong and expired tokens.
    let err = join(&f, "3f9c1a7be2d04c6581f2a9d7e0b4c36a", "app", "").unwrap_err();
    assert!(err.to_string().contains("not valid"), "{err}");
    let short = f
        .auth
        .create_join_token(&roles(&["app"]), Duration::from_secs(60), None, None, "t")
        .unwrap();
    f.clock.advance(Duration::from_secs(61));
    assert!(join(&f, &short.secret, "app", "").is_err());
}

#[test]
fn host_certificates_carry_only_names_auth_approved() {
    let f = fixture("otp");
    let t = f
        .auth
        .create_join_token(
            &roles(&["node"]),
            Duration::from_secs(3600),
            None,
            None,
            "t",
        )
        .unwrap();
    for bad in [
        "10.0.0.1",
        "*.x",
        "localhost",
        "proxy",
        "unit.test",
        "gateway",
        "a.b",
    ] {
        let err = join(&f, &t.secret, "node", bad).unwrap_err();
        assert!(
            err.to_string().contains(&format!("{bad:?}")),
            "{bad}: {err}"
        );
    }
    let web1 = join(&f, &t.secret, "node", "Web1").unwrap();
    assert_eq!(web1.host_name.as_deref(), Some("web1"));
    let cert = web1.ssh_host_certificate.unwrap();
    let cas = f.auth.public_authorities(hop_ca::CaKind::Host);
    for principal in [
        "web1".to_string(),
        "web1.unit.test".into(),
        web1.host_id.clone(),
        format!("{}.unit.test", web1.host_id),
    ] {
        assert!(
            hop_ca::verify_host_ssh(&cert, &cas, &principal, f.clock.now()).is_ok(),
            "{principal}"
        );
    }
    assert!(hop_ca::verify_host_ssh(&cert, &cas, "10.0.0.1", f.clock.now()).is_err());
    // Taken, for another host, at join and at renewal.
    let err = join(&f, &t.secret, "node", "web1").unwrap_err();
    assert!(
        err.to_string().contains("already used by another host"),
        "{err}"
    );
    let other = join(&f, &t.secret, "node", "web2").unwrap();
    let err = renew(&f, &other.host_id, "web1").unwrap_err();
    assert!(err.to_string().contains("web2"), "{err}");
    // The holder renews; a renewal under a bad name is refused like a join.
    assert_eq!(
        renew(&f, &web1.host_id, "web1")
            .unwrap()
            .host_name
            .as_deref(),
        Some("web1")
    );
    assert!(renew(&f, &web1.host_id, "10.0.0.1").is_err());
    // An OpenSSH node registered under a name holds it too.
    let node = hop_rbac::NodeResource::openssh("db1", "10.0.0.9:22", BTreeMap::new());
    f.auth
        .create_resources(
            &hop_rbac::to_yaml(&hop_rbac::Resource::Node(node)),
            "n.yaml",
            false,
            "t",
            &|_, _| Ok(()),
        )
        .unwrap();
    assert!(join(&f, &t.secret, "node", "db1").is_err());
    // A claim lapses with the certificate that made it.
    f.clock
        .advance(super::server::HOST_CERT_TTL + Duration::from_secs(1));
    let t2 = f
        .auth
        .create_join_token(
            &roles(&["node"]),
            Duration::from_secs(3600),
            None,
            None,
            "t",
        )
        .unwrap();
    assert!(join(&f, &t2.secret, "node", "web1").is_ok());
}

#[test]
fn tokens_of_older_versions_are_rehashed_at_start() {
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let c: Arc<dyn Clock> = Arc::new(clock.clone());
    let backend = Arc::new(MemoryBackend::new(c.clone()));
    let store = ResourceStore::new(backend.clone());
    let legacy = "6b3a5f0e7c9d4e21a8f70b1c";
    let t = hop_rbac::ProvisionToken::new(
        legacy,
        &[hop_rbac::SystemRole::App],
        time::macros::datetime!(2099-01-01 00:00 UTC),
    );
    store.create(&t).unwrap();
    let f = fixture_on(backend, clock);
    let stored = f.auth.backend().range("", "\u{10ffff}", 10_000).unwrap();
    assert!(
        stored
            .iter()
            .all(|i| !String::from_utf8_lossy(&i.value).contains(legacy)
                && !i.key.contains(legacy))
    );
    assert!(join(&f, legacy, "app", "").is_ok());
}

// ---------------------------------------------------------------- trackers and agents' events

mod trackers_and_agent_events {
    use super::*;
    use crate::agent_events::{EventRefusal, EventSource};
    use crate::trackers::{
        ENDED_RETENTION, SessionKind, TrackerError, TrackerHost, TrackerState, TrackerUpdate,
    };
    use hop_api::trackers::TRACKER_LEASE;
    use hop_ca::HostRole;

    const NODE_A: TrackerHost<'static> = TrackerHost {
        host_id: "host-a",
        role: HostRole::Node,
    };
    const NODE_B: TrackerHost<'static> = TrackerHost {
        host_id: "host-b",
        role: HostRole::Node,
    };

    fn ssh(id: &str, state: TrackerState) -> TrackerUpdate {
        TrackerUpdate {
            session_id: id.into(),
            kind: SessionKind::Ssh,
            user: "alice".into(),
            login: "root".into(),
            target: String::new(),
            participants: Vec::new(),
            state,
        }
    }

    fn micros(f: &Fixture) -> u64 {
        f.auth.now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
    }

    fn event(f: &Fixture, kind: &str, session: Option<&str>, offset_secs: i64) -> String {
        let at = micros(f).saturating_add_signed(offset_secs * 1_000_000);
        let mut v = serde_json::json!({
            "event": kind, "id": format!("{kind}-{offset_secs}-{}", session.unwrap_or("none")),
            "time": at, "user": "alice", "server_id": "host-zzz",
        });
        if let Some(s) = session {
            v["session_id"] = s.into();
        }
        v.to_string()
    }

    fn node(host_id: &str) -> EventSource<'_> {
        EventSource {
            host_id,
            role: HostRole::Node,
        }
    }

    #[test]
    fn a_tracker_lives_while_renewed_and_stays_a_while_once_ended() {
        let f = fixture("otp");
        f.auth
            .update_tracker(NODE_A, &ssh("s1", TrackerState::Active))
            .unwrap();
        let t = f.auth.tracker("s1").unwrap().unwrap().value;
        assert_eq!((t.host_id.as_str(), t.user.as_str()), ("host-a", "alice"));
        assert_eq!(t.state, TrackerState::Active);
        // Renewed within the lease, it stays; left alone, it lapses.
        f.clock.advance(TRACKER_LEASE - Duration::from_secs(5));
        f.auth
            .update_tracker(NODE_A, &ssh("s1", TrackerState::Active))
            .unwrap();
        f.clock.advance(TRACKER_LEASE - Duration::from_secs(5));
        assert!(f.auth.tracker("s1").unwrap().is_some());
        f.clock.advance(Duration::from_secs(6));
        assert!(f.auth.tracker("s1").unwrap().is_none(), "lapsed");
        // Ended: listed as terminated for the retention, then gone.
        f.auth
            .update_tracker(NODE_A, &ssh("s2", TrackerState::Active))
            .unwrap();
        f.auth
            .update_tracker(NODE_A, &ssh("s2", TrackerState::Terminated))
            .unwrap();
        f.clock.advance(ENDED_RETENTION - Duration::from_secs(1));
        let t = f.auth.tracker("s2").unwrap().unwrap().value;
        assert_eq!(t.state, TrackerState::Terminated);
        assert!(matches!(
            f.auth
                .update_tracker(NODE_A, &ssh("s2", TrackerState::Active)),
            Err(TrackerError::Ended { .. })
        ));
        f.clock.advance(Duration::from_secs(2));
        assert!(f.auth.trackers().unwrap().is_empty());
    }

    #[test]
    fn only_the_hosting_agent_writes_a_tracker_and_only_of_its_kind() {
        let f = fixture("otp");
        f.auth
            .update_tracker(NODE_A, &ssh("s1", TrackerState::Active))
            .unwrap();
        assert!(matches!(
            f.auth
                .update_tracker(NODE_B, &ssh("s1", TrackerState::Terminated)),
            Err(TrackerError::ForeignSession { .. })
        ));
        for role in [HostRole::Db, HostRole::App, HostRole::Proxy] {
            let host = TrackerHost {
                host_id: "host-x",
                role,
            };
            assert!(matches!(
                f.auth
                    .update_tracker(host, &ssh("s9", TrackerState::Active)),
                Err(TrackerError::WrongKind { .. })
            ));
        }
        assert_eq!(
            f.auth.tracker("s1").unwrap().unwrap().value.host_id,
            "host-a"
        );
    }

    #[test]
    fn agents_events_are_refused_one_by_one_and_the_rest_written() {
        let f = fixture("otp");
        f.auth
            .update_tracker(NODE_A, &ssh("sa", TrackerState::Active))
            .unwrap();
        f.auth
            .update_tracker(NODE_B, &ssh("sb", TrackerState::Active))
            .unwrap();
        let batch = vec![
            event(&f, "session.start", Some("sa"), 0),
            event(&f, "db.query", Some("sa"), 0),
            event(&f, "exec", Some("sb"), 0),
            event(&f, "exec", Some("never-tracked"), 0),
            event(&f, "session.end", Some("sa"), 3600),
            event(&f, "session.end", Some("sa"), -3600),
            event(&f, "ssh.auth", None, 0),
            "{not json".to_string(),
            event(&f, "session.end", Some("sa"), -60),
        ];
        let refused = f.auth.accept_agent_events(node("host-a"), &batch).unwrap();
        let got: Vec<(usize, &str)> = refused
            .iter()
            .map(|r| (r.index, r.refusal.reason()))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, "kind"),
                (2, "session"),
                (3, "session"),
                (4, "time"),
                (5, "time"),
                (7, "malformed")
            ]
        );
        assert_eq!(refused[0].id, "db.query-0-sa");
        assert!(matches!(
            refused[3].refusal,
            EventRefusal::TimeSkew {
                direction: "ahead of",
                ..
            }
        ));
        let written: Vec<_> = f
            .events()
            .into_iter()
            .filter(|e| e["server_id"] == "host-a")
            .collect();
        let mut kinds: Vec<&str> = written
            .iter()
            .map(|e| e["event"].as_str().unwrap())
            .collect();
        kinds.sort_unstable();
        assert_eq!(kinds, vec!["session.end", "session.start", "ssh.auth"]);
        let m = f.auth.metrics();
        assert_eq!(m.agent_events_refused.get("kind"), 1);
        assert_eq!(m.agent_events_refused.get("session"), 2);
        assert_eq!(m.agent_events_refused.get("time"), 2);
        assert_eq!(m.agent_events_refused.get("malformed"), 1);
        assert!(
            m.render()
                .contains("hop_auth_agent_events_refused_total{reason=\"session\"} 2")
        );
    }

    /// `batch` (JSON events) in the packed form agents send with `EmitEventsPacked`.
    fn packed(batch: &[String]) -> Vec<u8> {
        let events: Vec<_> = batch
            .iter()
            .map(|j| hop_api::audit::AuditEvent::from_json(j, UNIX_EPOCH).unwrap())
            .collect();
        hop_api::audit_wire::encode_batch(&events).unwrap()
    }

    #[test]
    fn packed_events_are_refused_exactly_as_json_ones() {
        let f = fixture("otp");
        f.auth
            .update_tracker(NODE_A, &ssh("sa", TrackerState::Active))
            .unwrap();
        f.auth
            .update_tracker(NODE_B, &ssh("sb", TrackerState::Active))
            .unwrap();
        let batch = vec![
            event(&f, "session.start", Some("sa"), 0),
            event(&f, "db.query", Some("sa"), 0),
            event(&f, "exec", Some("sb"), 0),
            event(&f, "exec", Some("never-tracked"), 0),
            event(&f, "session.end", Some("sa"), 3600),
            event(&f, "session.end", Some("sa"), -3600),
            event(&f, "ssh.auth", None, 0),
        ];
        let from_packed = f
            .auth
            .accept_packed_agent_events(node("host-a"), &packed(&batch))
            .unwrap()
            .unwrap();
        let got: Vec<(usize, &str)> = from_packed
            .iter()
            .map(|r| (r.index, r.refusal.reason()))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, "kind"),
                (2, "session"),
                (3, "session"),
                (4, "time"),
                (5, "time")
            ]
        );
        let written: Vec<_> = f
            .events()
            .into_iter()
            .filter(|e| e["server_id"] == "host-a")
            .collect();
        assert_eq!(written.len(), 2);
        assert!(
            written
                .iter()
                .all(|e| e["cluster"] == f.auth.cluster_name())
        );
        let from_json = f.auth.accept_agent_events(node("host-a"), &batch).unwrap();
        assert_eq!(from_packed, from_json);
        let m = f.auth.metrics();
        assert_eq!(m.agent_events_refused.get("kind"), 2);
        assert_eq!(m.agent_events_refused.get("session"), 4);
        assert_eq!(m.agent_events_refused.get("time"), 4);
        // A well-framed event with a bad field is refused alone; broken framing refuses all.
        let bad_field = [hop_api::audit_wire::VERSION, 1, 1, 0x7e];
        let r = f
            .auth
            .accept_packed_agent_events(node("host-a"), &bad_field)
            .unwrap()
            .unwrap();
        assert_eq!((r[0].index, r[0].refusal.reason()), (0, "malformed"));
        let broken = [hop_api::audit_wire::VERSION, 2, 1, 0x7e];
        assert!(
            f.auth
                .accept_packed_agent_events(node("host-a"), &broken)
                .unwrap()
                .is_err()
        );
    }

    #[test]
    fn an_ended_sessions_late_events_are_accepted_while_its_tracker_stays() {
        let f = fixture("otp");
        f.auth
            .update_tracker(NODE_A, &ssh("sa", TrackerState::Active))
            .unwrap();
        f.auth
            .update_tracker(NODE_A, &ssh("sa", TrackerState::Terminated))
            .unwrap();
        f.clock.advance(Duration::from_secs(60));
        let late = vec![event(&f, "session.end", Some("sa"), -50)];
        assert!(
            f.auth
                .accept_agent_events(node("host-a"), &late)
                .unwrap()
                .is_empty()
        );
        let stolen = vec![event(&f, "session.end", Some("sa"), 0)];
        assert_eq!(
            f.auth.accept_agent_events(node("host-b"), &stolen).unwrap()[0]
                .refusal
                .reason(),
            "session"
        );
    }

    #[test]
    fn an_opening_event_adopts_an_untracked_session_for_its_sender_only() {
        let f = fixture("otp");
        f.auth
            .update_tracker(NODE_B, &ssh("sb", TrackerState::Active))
            .unwrap();
        // Auth was away when the session started: its events arrive before any tracker.
        let batch = vec![
            event(&f, "exec", Some("s-late"), -30),
            event(&f, "session.start", Some("s-late"), -20),
            event(&f, "exec", Some("s-late"), -10),
            event(&f, "session.start", Some("sb"), 0),
        ];
        let refused = f.auth.accept_agent_events(node("host-a"), &batch).unwrap();
        let got: Vec<_> = refused
            .iter()
            .map(|r| (r.index, r.refusal.reason()))
            .collect();
        assert_eq!(got, vec![(0, "session"), (3, "session")]);
        let t = f.auth.tracker("s-late").unwrap().unwrap().value;
        assert_eq!((t.host_id.as_str(), t.user.as_str()), ("host-a", "alice"));
        assert_eq!(
            f.auth.tracker("sb").unwrap().unwrap().value.host_id,
            "host-b"
        );
        // The host renews and ends it as usual once it reaches Auth.
        f.auth
            .update_tracker(NODE_A, &ssh("s-late", TrackerState::Terminated))
            .unwrap();
        // Kinds that do not open a session adopt nothing.
        let later = vec![event(&f, "session.end", Some("s-other"), 0)];
        assert_eq!(
            f.auth
                .accept_agent_events(node("host-a"), &later)
                .unwrap()
                .len(),
            1
        );
        assert!(f.auth.tracker("s-other").unwrap().is_none());
    }

    #[test]
    fn a_db_agent_sends_db_events_for_its_sessions_only() {
        let f = fixture("otp");
        let db = TrackerHost {
            host_id: "host-d",
            role: HostRole::Db,
        };
        let update = TrackerUpdate {
            kind: SessionKind::Db,
            target: "pg".into(),
            ..ssh("d1", TrackerState::Active)
        };
        f.auth.update_tracker(db, &update).unwrap();
        let source = EventSource {
            host_id: "host-d",
            role: HostRole::Db,
        };
        let batch = vec![
            event(&f, "db.query", Some("d1"), 0),
            event(&f, "session.start", Some("d1"), 0),
            event(&f, "db.query", None, 0),
        ];
        let refused = f.auth.accept_agent_events(source, &batch).unwrap();
        let got: Vec<_> = refused
            .iter()
            .map(|r| (r.index, r.refusal.reason()))
            .collect();
        assert_eq!(got, vec![(1, "kind"), (2, "session")]);
    }

    #[test]
    fn users_see_their_own_sessions_and_auditors_all() {
        let f = fixture("otp");
        f.auth
            .update_tracker(NODE_A, &ssh("s1", TrackerState::Active))
            .unwrap();
        let bob = TrackerUpdate {
            user: "bob".into(),
            ..ssh("s2", TrackerState::Active)
        };
        f.auth.update_tracker(NODE_A, &bob).unwrap();
        f.auth.add_participant("s2", "carol").unwrap();
        let id = |name: &str, roles: &[&str]| hop_ca::Identity {
            username: name.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            ..Default::default()
        };
        f.user("alice", &["access"]);
        f.user("carol", &["access"]);
        f.user("dora", &["auditor"]);
        let ids = |v: Vec<crate::trackers::SessionTracker>| {
            v.into_iter().map(|t| t.session_id).collect::<Vec<_>>()
        };
        assert_eq!(
            ids(f.auth.trackers_for(&id("alice", &["access"])).unwrap()),
            ["s1"]
        );
        assert_eq!(
            ids(f.auth.trackers_for(&id("carol", &["access"])).unwrap()),
            ["s2"]
        );
        let mut all = ids(f.auth.trackers_for(&id("dora", &["auditor"])).unwrap());
        all.sort();
        assert_eq!(all, ["s1", "s2"]);
    }

    #[test]
    fn a_where_clause_admits_trackers_one_by_one_and_one_that_does_not_parse_is_refused() {
        let f = fixture("otp");
        f.auth
            .update_tracker(NODE_A, &ssh("s1", TrackerState::Active))
            .unwrap();
        let ops = TrackerUpdate {
            user: "bob".into(),
            login: "ops".into(),
            ..ssh("s2", TrackerState::Active)
        };
        f.auth.update_tracker(NODE_A, &ops).unwrap();
        let role = "kind: role\nversion: v7\nmetadata:\n  name: ops-watch\nspec:\n  allow:\n    rules:\n    - resources: [session]\n      verbs: [list]\n      where: equals(session.login, \"ops\") && !equals(session.user, user.metadata.name)\n";
        f.auth
            .create_resources(role, "ops.yaml", false, "test", &|_, _| Ok(()))
            .unwrap();
        f.user("erin", &["ops-watch"]);
        let erin = hop_ca::Identity {
            username: "erin".into(),
            roles: vec!["ops-watch".into()],
            ..Default::default()
        };
        let seen: Vec<_> = f
            .auth
            .trackers_for(&erin)
            .unwrap()
            .into_iter()
            .map(|t| t.session_id)
            .collect();
        assert_eq!(seen, ["s2"]);
        let bad = role.replace("&& !", "&& &&").replace("ops-watch", "bad");
        let err = f
            .auth
            .create_resources(&bad, "bad.yaml", false, "test", &|_, _| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("spec.allow.rules[0].where") && err.contains("expected"),
            "{err}"
        );
    }

    #[test]
    fn unauthenticated_refusals_are_rate_limited_and_summarized() {
        let f = fixture("otp");
        let refusal = hop_admission::Refusal::WrongCertificate {
            what: "a connection without a certificate",
            route: "tunnel",
        };
        for _ in 0..150 {
            f.auth
                .audit_unverified_refusal(hop_admission::Route::Tunnel, &refusal, None);
        }
        f.clock.advance(crate::refusal_limit::SUMMARY_INTERVAL);
        f.auth
            .audit_unverified_refusal(hop_admission::Route::Tunnel, &refusal, None);
        // The log writes in order: once this is durable, the events queued before it are.
        f.log
            .append(hop_storage::AuditEvent::new("test.flush", "T0".to_string()))
            .unwrap();
        let refused: Vec<_> = f
            .events()
            .into_iter()
            .filter(|e| e["event"] == "access.refused")
            .collect();
        let summaries: Vec<u64> = refused
            .iter()
            .filter(|e| e["reason"] == "rate_limited")
            .map(|e| e["unwritten"].as_u64().unwrap())
            .collect();
        assert_eq!(summaries, vec![1, 49]);
        assert_eq!(refused.len() - summaries.len(), 101);
        assert_eq!(f.auth.metrics().audit_refusals_dropped.get(), 50);
    }
}

#[test]
fn refusals_of_one_identity_are_rate_limited_in_the_audit_log() {
    let f = fixture("otp");
    let refusal = hop_admission::Refusal::Deleted {
        kind: "user",
        name: "gone".into(),
    };
    for _ in 0..200 {
        f.auth
            .audit_refusal(hop_admission::Route::AdminApi, "gone", &refusal, None);
    }
    let written = |f: &Fixture| {
        f.events()
            .iter()
            .filter(|e| e["event"] == "access.refused" && e["user"] == "gone")
            .count()
    };
    // Queued events reach the log a moment later.
    let deadline = hop_platform::clock::now() + Duration::from_secs(5);
    while written(&f) < 20 && hop_platform::clock::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    let first = written(&f);
    assert!(first <= 21, "{first} refusals written for one identity");
    assert!(first >= 20, "the burst was not written: {first}");
    // Another identity has its own budget.
    f.auth
        .audit_refusal(hop_admission::Route::AdminApi, "other", &refusal, None);
    let deadline = hop_platform::clock::now() + Duration::from_secs(5);
    while !f
        .events()
        .iter()
        .any(|e| e["event"] == "access.refused" && e["user"] == "other")
    {
        assert!(
            hop_platform::clock::now() < deadline,
            "the other identity's refusal is missing"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_agent_cannot_open_trackers_without_bound() {
    use crate::trackers::{NEW_TRACKERS_BURST, TrackerError};
    let f = fixture("otp");
    let host = crate::trackers::TrackerHost {
        host_id: "flooding-host",
        role: hop_ca::HostRole::Node,
    };
    let mut refused = 0;
    for i in 0..(NEW_TRACKERS_BURST as usize + 50) {
        let update = crate::trackers::TrackerUpdate {
            session_id: format!("s{i}"),
            kind: crate::trackers::SessionKind::Ssh,
            user: "alice".into(),
            login: "root".into(),
            target: String::new(),
            participants: Vec::new(),
            state: crate::trackers::TrackerState::Active,
        };
        if let Err(TrackerError::TooMany { .. }) = f.auth.adopt_tracker(host, &update) {
            refused += 1;
        }
    }
    assert!(refused >= 49, "only {refused} of the flood were refused");
}

#[test]
fn a_password_change_needs_the_old_password_and_a_code_and_is_audited() {
    let f = fixture("otp");
    let secret = f.user("carol", &["access"]);
    let new = "another horse battery staple";
    f.clock.advance(Duration::from_secs(30));
    let code = totp::code_at(&secret, f.clock.now());
    // A wrong old password: refused like a login (counted), nothing changed.
    assert!(matches!(
        f.auth.change_password("carol", "wrong", &code, new, None),
        Err(AuthError::InvalidCredentials)
    ));
    f.clock.advance(Duration::from_secs(30));
    let code = totp::code_at(&secret, f.clock.now());
    // A new password under the policy: refused before anything is checked.
    assert!(matches!(
        f.auth
            .change_password("carol", PASSWORD, &code, "short", None),
        Err(AuthError::BadRequest(_))
    ));
    f.auth
        .change_password("carol", PASSWORD, &code, new, None)
        .unwrap();
    // The code was used; the old password no longer logs in, the new one does.
    f.clock.advance(Duration::from_secs(30));
    let code = totp::code_at(&secret, f.clock.now());
    assert!(f.login("carol", PASSWORD, &code).is_err());
    f.clock.advance(Duration::from_secs(30));
    let code = totp::code_at(&secret, f.clock.now());
    f.login("carol", new, &code).unwrap();
    let changes: Vec<bool> = f
        .events()
        .iter()
        .filter(|e| e["event"] == "user.password_change")
        .map(|e| e["success"].as_bool().unwrap())
        .collect();
    assert_eq!(changes, vec![false, false, true]);
    let text = serde_json::to_string(&f.events()).unwrap();
    assert!(!text.contains(new), "a password reached the audit log");
}

#[test]
fn devices_are_added_with_their_first_code_and_the_last_is_never_removed() {
    let f = fixture("otp");
    let first = f.user("dan", &["access"]);
    let phone = vec![7u8; 20];
    let phone_b32 = totp::encode_secret(&phone);
    // A step after the one the user's creation used.
    f.clock.advance(Duration::from_secs(30));
    let code = totp::code_at(&phone, f.clock.now());
    let has = |f: &Fixture| totp::code_at(&first, f.clock.now());
    // The password is needed, a code from the device the user has, and the new device's own.
    assert!(matches!(
        f.auth
            .add_otp_device("dan", ("wrong", &has(&f)), "phone", &phone_b32, &code, None),
        Err(AuthError::InvalidCredentials)
    ));
    // A phished password without a code of the user's own device enrolls nothing.
    assert!(
        f.auth
            .add_otp_device("dan", (PASSWORD, ""), "phone", &phone_b32, &code, None)
            .is_err()
    );
    assert!(matches!(
        f.auth.add_otp_device(
            "dan",
            (PASSWORD, &has(&f)),
            "phone",
            &phone_b32,
            "000000",
            None
        ),
        Err(AuthError::BadRequest(_))
    ));
    // A mistyped new code used up nothing: the same code of the user's device still serves.
    let added = f
        .auth
        .add_otp_device(
            "dan",
            (PASSWORD, &has(&f)),
            "phone",
            &phone_b32,
            &code,
            None,
        )
        .unwrap();
    let listed = f.auth.otp_devices("dan").unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1].name, "phone");
    // Either device logs in.
    f.clock.advance(Duration::from_secs(30));
    f.login("dan", PASSWORD, &totp::code_at(&phone, f.clock.now()))
        .unwrap();
    f.clock.advance(Duration::from_secs(30));
    f.login("dan", PASSWORD, &totp::code_at(&first, f.clock.now()))
        .unwrap();
    // The sign-up device goes; the last one stays.
    f.auth
        .remove_otp_device("dan", PASSWORD, "signup", None)
        .unwrap();
    assert!(matches!(
        f.auth.remove_otp_device("dan", PASSWORD, &added.id, None),
        Err(AuthError::BadRequest(_))
    ));
    assert!(matches!(
        f.auth.remove_otp_device("dan", PASSWORD, "nope", None),
        Err(AuthError::NotFound(_))
    ));
    f.clock.advance(Duration::from_secs(30));
    assert!(
        f.login("dan", PASSWORD, &totp::code_at(&first, f.clock.now()))
            .is_err()
    );
    let kinds: Vec<String> = f
        .events()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect();
    assert!(kinds.contains(&"mfa.add".to_string()));
    assert!(kinds.contains(&"mfa.delete".to_string()));
    let text = serde_json::to_string(&f.events()).unwrap();
    assert!(
        !text.contains(&phone_b32),
        "a device secret reached the audit log"
    );
}

#[test]
fn a_pending_invitation_is_shown_without_being_used() {
    let f = fixture("otp");
    let invite = f
        .auth
        .create_user("erin", &roles(&["access"]), BTreeMap::new(), "test")
        .unwrap();
    let seen = f.auth.pending_invite(&invite.token, None).unwrap();
    assert_eq!(seen.user, "erin");
    assert!(!seen.reset);
    assert!(f.auth.pending_invite(&invite.token, None).is_ok());
    assert!(matches!(
        f.auth.pending_invite("0123", None),
        Err(AuthError::InviteNotFound)
    ));
    f.clock.advance(Duration::from_secs(3601));
    assert!(matches!(
        f.auth.pending_invite(&invite.token, None),
        Err(AuthError::InviteExpired { .. })
    ));
}

#[test]
fn a_newer_invitation_voids_the_earlier_ones() {
    let f = fixture("otp");
    let first = f
        .auth
        .create_user("fay", &roles(&["access"]), BTreeMap::new(), "test")
        .unwrap();
    // The first link went astray; the administrator resets and the user signs up with the new one.
    let second = f.auth.reset_user("fay", "test").unwrap();
    assert!(matches!(
        f.auth.pending_invite(&first.token, None),
        Err(AuthError::InviteNotFound)
    ));
    let secret = vec![9u8; 20];
    let b32 = totp::encode_secret(&secret);
    let code = totp::code_at(&secret, f.clock.now());
    f.auth
        .complete_signup(&second.token, PASSWORD, &b32, &code, None)
        .unwrap();
    // Whoever holds the first link cannot take the account over afterwards.
    f.clock.advance(Duration::from_secs(30));
    let code = totp::code_at(&secret, f.clock.now());
    assert!(matches!(
        f.auth
            .complete_signup(&first.token, "attacker's own password", &b32, &code, None),
        Err(AuthError::InviteNotFound)
    ));
    f.login("fay", PASSWORD, &code).unwrap();
}

#[test]
fn wrong_account_passwords_count_towards_the_lockout_and_are_audited() {
    let f = fixture("otp");
    let first = f.user("gus", &["access"]);
    let phone = vec![7u8; 20];
    let phone_b32 = totp::encode_secret(&phone);
    // A stolen web session guesses the password through the device calls.
    for i in 0..5 {
        let code = totp::code_at(&phone, f.clock.now());
        let guess = format!("guess number {i}");
        let r = if i % 2 == 0 {
            f.auth
                .add_otp_device(
                    "gus",
                    (&guess, &totp::code_at(&first, f.clock.now())),
                    "mine",
                    &phone_b32,
                    &code,
                    None,
                )
                .map(drop)
        } else {
            f.auth.remove_otp_device("gus", &guess, "signup", None)
        };
        assert!(matches!(r, Err(AuthError::InvalidCredentials)), "{r:?}");
    }
    // Locked as after five failed logins: even the right password is refused now.
    let code = totp::code_at(&phone, f.clock.now());
    assert!(matches!(
        f.auth.add_otp_device(
            "gus",
            (PASSWORD, &totp::code_at(&first, f.clock.now())),
            "mine",
            &phone_b32,
            &code,
            None
        ),
        Err(AuthError::InvalidCredentials)
    ));
    f.clock.advance(Duration::from_secs(30));
    assert!(
        f.login("gus", PASSWORD, &totp::code_at(&first, f.clock.now()))
            .is_err()
    );
    let failed: Vec<String> = f
        .events()
        .iter()
        .filter(|e| e["success"] == false)
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect();
    assert!(f.events().iter().any(|e| e["event"] == "user.locked"));
    assert!(failed.iter().filter(|k| *k == "mfa.add").count() >= 3);
    assert!(failed.iter().filter(|k| *k == "mfa.delete").count() >= 2);
}

#[test]
fn a_time_to_live_past_the_end_of_time_is_a_bad_request_not_a_panic() {
    let f = fixture("otp");
    assert!(matches!(
        f.auth
            .create_join_token(&roles(&["node"]), Duration::MAX, None, None, "test"),
        Err(AuthError::BadRequest(_))
    ));
    for secs in [u64::MAX, i64::MAX as u64, 1 << 40] {
        let target = hop_rbac::LockTarget {
            user: Some("bob".into()),
            ..Default::default()
        };
        assert!(matches!(
            f.auth
                .create_lock(target, "", Some(Duration::from_secs(secs)), "test"),
            Err(AuthError::BadRequest(_))
        ));
        assert!(matches!(
            f.auth.expiry_after(Duration::from_secs(secs)),
            Err(AuthError::BadRequest(_))
        ));
    }
    // A century is fine.
    assert!(
        f.auth
            .expiry_after(Duration::from_secs(100 * 365 * 86_400))
            .is_ok()
    );
}

/// A launch is decided by admission and the roles' `app_labels`; a refusal is audited and
/// issues no code.
#[test]
fn an_app_launch_needs_the_apps_labels_and_an_unlocked_user() {
    use crate::apps::{AppFlowError, AppGrant};
    use crate::inventory::AppRoute;
    let f = fixture("otp");
    f.user("alice", &["access"]);
    f.user("auditee", &["auditor"]);
    let now = f.clock.now();
    let grant = |user: &str, role: &str| AppGrant {
        identity: Arc::new(hop_ca::Identity {
            username: user.into(),
            roles: vec![role.into()],
            logins: vec![],
            traits: BTreeMap::new(),
            cluster: "unit.test".into(),
            route_to_cluster: "unit.test".into(),
            permit_agent_forwarding: false,
            permit_port_forwarding: false,
            permit_pty: false,
            route_to_database: None,
            route_to_app: None,
            route_to_kube_cluster: None,
            mfa_verified: false,
            active_requests: Vec::new(),
            session_mfa: None,
        }),
        issued_at: now,
        expires: now + Duration::from_secs(3600),
        app: "grafana".into(),
        app_uri: "http://127.0.0.1:3000".into(),
    };
    let app = AppRoute {
        name: "grafana".into(),
        uri: "http://127.0.0.1:3000".into(),
        labels: BTreeMap::from([("env".to_string(), "dev".to_string())]),
        host_id: "h1".into(),
    };
    f.clock.advance(Duration::from_secs(1));
    let code = f
        .auth
        .launch_app(grant("alice", "access"), &app, "state", None)
        .unwrap();
    let session = f
        .auth
        .apps()
        .redeem(&code, "grafana", "state", f.clock.now())
        .unwrap();
    assert_eq!(session.session.user(), "alice");
    // The auditor role grants no application.
    let denied = f
        .auth
        .launch_app(grant("auditee", "auditor"), &app, "state", None);
    assert!(
        matches!(denied, Err(AppFlowError::Refused(ref r)) if r.code() == "access_denied"),
        "{denied:?}"
    );
    // A locked user launches nothing.
    f.auth.lock_user("alice", None, "gone", "admin").unwrap();
    f.clock.advance(Duration::from_secs(1));
    let locked = f
        .auth
        .launch_app(grant("alice", "access"), &app, "state", None);
    assert!(
        matches!(locked, Err(AppFlowError::Refused(_))),
        "{locked:?}"
    );
    // The label refusal is in the audit log (the emit path is asynchronous: the lock's may
    // still be queued).
    assert!(
        f.events().iter().any(|e| e["event"] == "access.refused"
            && e["route"] == "app"
            && e["user"] == "auditee")
    );
}

#[path = "app_access_tests.rs"]
mod app_access_tests;

#[path = "kube_access_tests.rs"]
mod kube_access_tests;

#[test]
fn a_data_dir_without_a_spiffe_ca_gets_one_at_start_and_keeps_the_others() {
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let c: Arc<dyn Clock> = Arc::new(clock.clone());
    let backend = Arc::new(MemoryBackend::new(c));
    let first = fixture_on(backend.clone(), clock.clone());
    let user_ca = first.auth.authorities().user.public();
    let spiffe = first.auth.authorities().spiffe.public();
    assert!(spiffe.x509_cert_pem.is_some());
    // A data dir of a release before the spiffe CA: its record is not there.
    let store = ResourceStore::new(backend.clone());
    assert!(store.delete::<crate::records::CaKeys>("spiffe").unwrap());
    drop(first);
    let f = fixture_on(backend, clock);
    let created = f.auth.authorities().spiffe.public();
    assert!(created.x509_cert_pem.is_some());
    assert_ne!(created.x509_spki_sha256, spiffe.x509_spki_sha256);
    assert_eq!(f.auth.authorities().user.public(), user_ca);
    assert!(
        store
            .get::<crate::records::CaKeys>("spiffe")
            .unwrap()
            .is_some()
    );
}

#[test]
fn ended_access_requests_are_purged_an_hour_after_they_end() {
    use crate::access_requests::{AccessRequest, RequestState};
    let f = fixture("otp");
    let now = f.auth.now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let request = |id: &str, expires_unix: u64, state: RequestState| AccessRequest {
        id: id.into(),
        user: "alice".into(),
        roles: vec!["db".into()],
        reason: String::new(),
        state,
        created_unix: now - 7200,
        expires_unix,
        thresholds: Vec::new(),
        suggested_reviewers: Vec::new(),
        reviews: Vec::new(),
    };
    for r in [
        request("long-ended", now - 3601, RequestState::Approved),
        request("denied-long-ago", now - 5000, RequestState::Denied),
        request("just-ended", now - 10, RequestState::Approved),
        request("live", now + 600, RequestState::Pending),
    ] {
        f.auth.store().create(&r).unwrap();
    }
    assert_eq!(f.auth.purge_ended_access_requests().unwrap(), 2);
    let mut left: Vec<String> = f
        .auth
        .store()
        .list::<AccessRequest>()
        .unwrap()
        .into_iter()
        .map(|v| v.value.id)
        .collect();
    left.sort();
    assert_eq!(left, ["just-ended", "live"]);
    f.clock.advance(Duration::from_secs(3600));
    assert_eq!(f.auth.purge_ended_access_requests().unwrap(), 1);
}

/// A SAML login completed from a response simplesamlphp signed (at its capture time): the
/// request it answers is taken once, the assertion ID is remembered (the same response again is
/// a replay), and a response to a request Hop never sent is refused.
#[tokio::test]
async fn saml_responses_answer_one_request_once() {
    use crate::sso::SsoError;
    use crate::sso::pending::{PendingSsoLogin, state_hash};
    const RESPONSE: &str =
        include_str!("../../../saml/tests/fixtures/simplesamlphp-assertion-signed.xml");
    const OTHER: &str =
        include_str!("../../../saml/tests/fixtures/simplesamlphp-response-signed.xml");
    const CERT: &str = include_str!("../../../saml/tests/fixtures/simplesamlphp-idp.crt");
    const ACS: &str = "http://127.0.0.1:3080/v1/webapi/saml/acs/saml-test";
    let Fixture {
        auth,
        clock,
        log: _log,
        _dir,
        ssh_pub,
        tls_spki,
    } = fixture("off");
    let auth = Arc::new(auth);
    let at = RESPONSE.find("IssueInstant=\"").unwrap() + "IssueInstant=\"".len();
    clock.set(hop_saml::parse_instant(&RESPONSE[at..at + 20]).unwrap() + Duration::from_secs(5));
    let connector = format!(
        "kind: saml\nversion: v2\nmetadata: {{name: saml-test}}\nspec:\n  issuer: http://127.0.0.1:7081/saml2/idp/metadata.php\n  sso: http://127.0.0.1:7081/saml2/idp/SSOService.php\n  cert: {:?}\n  acs: {ACS}\n  attributes_to_roles:\n  - {{name: groups, value: devs, roles: [access]}}\n",
        CERT
    );
    let hop_rbac::Resource::Saml(c) = hop_rbac::parse_resources(&connector, "c.yaml")
        .unwrap()
        .remove(0)
    else {
        panic!("not a saml connector")
    };
    auth.store().upsert(&c).unwrap();
    let now = auth.now();
    let pending = |id: &str| PendingSsoLogin {
        state_hash: state_hash(id),
        request_id: "req-1".into(),
        connector_kind: "saml".into(),
        connector: "saml-test".into(),
        nonce: String::new(),
        pkce_verifier: String::new(),
        redirect_url: ACS.into(),
        client_redirect_url: "http://127.0.0.1:9/callback".into(),
        ssh_public_key: ssh_pub.clone(),
        tls_public_key: hex::encode(&tls_spki),
        ttl_secs: 0,
        seal_key: hex::encode([7u8; 32]),
        created_unix: 0,
        web: false,
    };
    auth.store()
        .swap_leased(&pending("_req0001"), None, now + Duration::from_secs(600))
        .unwrap();
    let post = |xml: &str| super::server::SamlPost {
        connector: "saml-test".into(),
        saml_response: data_encoding::BASE64.encode(xml.as_bytes()),
        remote: None,
    };
    let url = auth.complete_saml_login(post(RESPONSE)).await.unwrap();
    assert!(
        url.starts_with("http://127.0.0.1:9/callback?response="),
        "{url}"
    );
    let user = auth
        .store()
        .get::<hop_rbac::User>("alice@example.test")
        .unwrap()
        .unwrap();
    assert_eq!(user.value.spec.roles, ["access"]);
    assert_eq!(user.value.spec.traits["groups"], ["devs", "staff"]);
    // The same response again: the assertion was seen.
    let again = auth.complete_saml_login(post(RESPONSE)).await.unwrap_err();
    assert!(
        matches!(again.error, AuthError::Sso(SsoError::SamlReplay)),
        "{:?}",
        again.error
    );
    // A request Hop never sent (or one already answered).
    let unknown = auth.complete_saml_login(post(OTHER)).await.unwrap_err();
    assert!(
        matches!(unknown.error, AuthError::Sso(SsoError::UnknownSamlRequest)),
        "{:?}",
        unknown.error
    );
    // Past the assertion's NotOnOrAfter (+ skew): expired, whatever else.
    clock.advance(Duration::from_secs(3600));
    let late = auth.complete_saml_login(post(RESPONSE)).await.unwrap_err();
    assert!(
        matches!(
            late.error,
            AuthError::Sso(SsoError::Saml(hop_saml::SamlError::Expired(_)))
        ),
        "{:?}",
        late.error
    );
    // Another connector's name in the ACS URL.
    let mut other = post(RESPONSE);
    other.connector = "nope".into();
    let e = auth.complete_saml_login(other).await.unwrap_err();
    assert!(matches!(
        e.error,
        AuthError::Sso(SsoError::UnknownConnector(_))
    ));
}
