//! CA rotation on the Auth service with simulated time: a manual rotation's keys phase by phase
//! (who signs, what is trusted, what is refused after standby), rollback, requests refused
//! without changing anything, an automatic rotation that walks its schedule, the state kept
//! across a restart, the JWKS and the proxy certificate's trust digest, and the audit trail.

use std::sync::Arc;
use std::time::Duration;

use hop_ca::{CaKind, HostRole};
use hop_storage::{Clock, ManualClock, MemoryBackend};

use super::rotation::{Mode, Phase};
use super::server::{AuthError, LoginCertificates, RotateRequest, RotateTarget};
use super::server_tests::{Fixture, PASSWORD, fixture, fixture_on};
use hop_api::totp;

fn manual(kind: CaKind, phase: Phase) -> RotateRequest {
    RotateRequest {
        target: RotateTarget::One(kind),
        mode: Mode::Manual,
        phase: Some(phase),
        grace_period: None,
    }
}

/// Logs `name` in again, a TOTP step later.
fn relogin(f: &Fixture, name: &str, secret: &[u8]) -> LoginCertificates {
    f.clock.advance(Duration::from_secs(30));
    let code = totp::code_at(secret, f.clock.now());
    f.login(name, PASSWORD, &code).unwrap()
}

fn der(pem: &str) -> Vec<u8> {
    hop_ca::parse_pem_certs(pem).unwrap().remove(0)
}

/// Whether both of `c`'s certificates verify against the user CA keys trusted now.
fn trusted_now(f: &Fixture, c: &LoginCertificates) -> bool {
    let trusted = f.auth.public_authorities(CaKind::User);
    let now = f.clock.now();
    let ssh = hop_ca::verify_user_ssh(&c.ssh_certificate, &trusted, now).is_ok();
    let tls = hop_ca::verify_user_x509(&der(&c.tls_certificate_pem), &trusted, now).is_ok();
    assert_eq!(ssh, tls, "SSH and X.509 disagree");
    ssh
}

fn signer_pin(f: &Fixture, kind: CaKind) -> String {
    f.auth
        .authorities()
        .set(kind)
        .signer()
        .x509_spki_sha256
        .clone()
        .unwrap()
}

fn ca_rotate_events(f: &Fixture) -> Vec<(String, String, String)> {
    f.events()
        .iter()
        .filter(|e| e["event"] == "ca.rotate")
        .map(|e| {
            (
                e["ca_type"].as_str().unwrap().to_owned(),
                e["previous_phase"].as_str().unwrap().to_owned(),
                e["phase"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_manual_user_ca_rotation_moves_signing_then_drops_the_old_key() {
    let f = fixture("otp");
    let secret = f.user("alice", &["access"]);
    let before = relogin(&f, "alice", &secret);
    let old_pin = signer_pin(&f, CaKind::User);
    let digest0 = f.auth.trust_digest();
    let mut changes = f.auth.watch_authorities();

    f.auth
        .rotate_ca("admin", &manual(CaKind::User, Phase::Init))
        .unwrap();
    assert!(changes.has_changed().unwrap(), "watchers are told");
    changes.mark_unchanged();
    assert_eq!(f.auth.public_authorities(CaKind::User).len(), 2);
    assert_eq!(
        signer_pin(&f, CaKind::User),
        old_pin,
        "init: the old key still signs"
    );
    let digest1 = f.auth.trust_digest();
    assert_ne!(digest0, digest1, "init adds a key clients must learn");
    let in_init = relogin(&f, "alice", &secret);
    assert_eq!(
        in_init.trust_digest, digest1,
        "a login hands out the current trust"
    );
    assert!(in_init.trusted_cas_pem.matches("BEGIN CERTIFICATE").count() == 3);

    f.auth
        .rotate_ca("admin", &manual(CaKind::User, Phase::UpdateClients))
        .unwrap();
    let new_pin = signer_pin(&f, CaKind::User);
    assert_ne!(new_pin, old_pin, "update_clients: the new key signs");
    assert_eq!(
        f.auth.trust_digest(),
        digest1,
        "the trusted set is unchanged"
    );
    let after = relogin(&f, "alice", &secret);
    let trusted = f.auth.public_authorities(CaKind::User);
    assert_eq!(
        hop_ca::x509_signer_pin(
            &der(&after.tls_certificate_pem),
            &trusted,
            CaKind::User,
            f.clock.now()
        ),
        Some(new_pin.clone())
    );
    assert!(trusted_now(&f, &before) && trusted_now(&f, &after));

    f.auth
        .rotate_ca("admin", &manual(CaKind::User, Phase::UpdateServers))
        .unwrap();
    assert!(
        trusted_now(&f, &before),
        "the old key is trusted until standby"
    );
    f.auth
        .rotate_ca("admin", &manual(CaKind::User, Phase::Standby))
        .unwrap();
    assert_eq!(f.auth.public_authorities(CaKind::User).len(), 1);
    assert!(
        !trusted_now(&f, &before),
        "standby: the old key's certificates are refused"
    );
    assert!(!trusted_now(&f, &in_init));
    assert!(trusted_now(&f, &after));
    assert_ne!(f.auth.trust_digest(), digest1);

    assert_eq!(
        ca_rotate_events(&f),
        [
            ("user", "standby", "init"),
            ("user", "init", "update_clients"),
            ("user", "update_clients", "update_servers"),
            ("user", "update_servers", "standby"),
        ]
        .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()))
    );
    let event = f
        .events()
        .into_iter()
        .find(|e| e["event"] == "ca.rotate")
        .unwrap();
    assert_eq!(event["user"], "admin");
    assert_eq!(event["code"], "H9000I");
    // The host CA was never touched.
    assert_eq!(f.auth.public_authorities(CaKind::Host).len(), 1);
}

#[test]
fn rollback_restores_the_old_signer_and_standby_then_drops_the_new_key() {
    let f = fixture("otp");
    let secret = f.user("alice", &["access"]);
    let before = relogin(&f, "alice", &secret);
    let old_pin = signer_pin(&f, CaKind::User);
    for p in [Phase::Init, Phase::UpdateClients, Phase::UpdateServers] {
        f.auth.rotate_ca("admin", &manual(CaKind::User, p)).unwrap();
    }
    let during = relogin(&f, "alice", &secret);
    f.auth
        .rotate_ca("admin", &manual(CaKind::User, Phase::Rollback))
        .unwrap();
    assert_eq!(
        signer_pin(&f, CaKind::User),
        old_pin,
        "the old key signs again"
    );
    assert!(
        trusted_now(&f, &during),
        "the new key stays trusted during rollback"
    );
    f.auth
        .rotate_ca("admin", &manual(CaKind::User, Phase::Standby))
        .unwrap();
    assert!(trusted_now(&f, &before));
    assert!(
        !trusted_now(&f, &during),
        "standby after rollback drops the new key"
    );
    let status = f.auth.rotation_status();
    assert_eq!(status[0].phase, Phase::Standby);
    assert_eq!(status[0].tls_pins, vec![old_pin]);
}

#[test]
fn requests_that_cannot_apply_change_nothing() {
    let f = fixture("otp");
    f.auth
        .rotate_ca("admin", &manual(CaKind::Host, Phase::Init))
        .unwrap();
    let digest = f.auth.trust_digest();
    let events = ca_rotate_events(&f).len();
    // `all` to update_clients: host may, the others are at standby: refused as a whole.
    let all = RotateRequest {
        target: RotateTarget::All,
        ..manual(CaKind::Host, Phase::UpdateClients)
    };
    let e = f.auth.rotate_ca("admin", &all).unwrap_err();
    assert!(matches!(e, AuthError::Rotation(_)), "{e}");
    assert!(e.to_string().contains("user CA"), "{e}");
    assert_eq!(f.auth.rotation_status()[1].phase, Phase::Init);
    // Skipping a phase, rotating a rotating CA automatically, no phase for a manual rotation,
    // a phase for an automatic one, and a grace period of a second.
    for req in [
        manual(CaKind::Host, Phase::UpdateServers),
        RotateRequest {
            mode: Mode::Auto,
            phase: None,
            ..manual(CaKind::Host, Phase::Init)
        },
        RotateRequest {
            phase: None,
            ..manual(CaKind::User, Phase::Init)
        },
        RotateRequest {
            mode: Mode::Auto,
            ..manual(CaKind::User, Phase::Standby)
        },
        RotateRequest {
            grace_period: Some(Duration::from_secs(1)),
            ..manual(CaKind::User, Phase::Init)
        },
    ] {
        assert!(f.auth.rotate_ca("admin", &req).is_err(), "{req:?}");
    }
    assert_eq!(f.auth.trust_digest(), digest);
    assert_eq!(ca_rotate_events(&f).len(), events);
    assert!(RotateTarget::parse("root").is_err());
}

#[test]
fn an_automatic_rotation_walks_its_schedule_and_survives_a_restart() {
    let f = fixture("otp");
    let auto = RotateRequest {
        target: RotateTarget::All,
        mode: Mode::Auto,
        phase: None,
        grace_period: Some(Duration::from_secs(90)),
    };
    let status = f.auth.rotate_ca("admin", &auto).unwrap();
    assert!(
        status
            .iter()
            .all(|s| s.phase == Phase::Init && s.mode == Mode::Auto)
    );
    let started = f.clock.now();
    let at = |secs: u64| started + Duration::from_secs(secs);
    let phase_of = |f: &Fixture| f.auth.rotation_status()[1].phase;

    f.clock.set(at(29));
    assert!(!f.auth.advance_rotations().unwrap());
    assert_eq!(phase_of(&f), Phase::Init);
    f.clock.set(at(30));
    assert!(f.auth.advance_rotations().unwrap());
    assert_eq!(phase_of(&f), Phase::UpdateClients);
    f.clock.set(at(61));
    assert!(f.auth.advance_rotations().unwrap());
    assert_eq!(phase_of(&f), Phase::UpdateServers);
    f.clock.set(at(95));
    assert!(f.auth.advance_rotations().unwrap());
    let done = f.auth.rotation_status();
    assert!(
        done.iter()
            .all(|s| s.phase == Phase::Standby && s.next.is_none())
    );
    assert!(done.iter().all(|s| s.tls_pins.len() <= 1));
    let system: Vec<_> = f
        .events()
        .into_iter()
        .filter(|e| e["event"] == "ca.rotate" && e["user"] == "system")
        .collect();
    assert_eq!(system.len(), 3 * 6, "each CA's three scheduled steps");
}

#[test]
fn a_rotation_in_progress_is_kept_across_a_restart() {
    let clock = ManualClock::new(std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let c: Arc<dyn Clock> = Arc::new(clock.clone());
    let backend = Arc::new(MemoryBackend::new(c));
    let first = fixture_on(backend.clone(), clock.clone());
    first
        .auth
        .rotate_ca("admin", &manual(CaKind::Host, Phase::Init))
        .unwrap();
    first
        .auth
        .rotate_ca("admin", &manual(CaKind::Host, Phase::UpdateClients))
        .unwrap();
    let pins = first.auth.rotation_status()[1].tls_pins.clone();
    drop(first);
    let second = fixture_on(backend, clock);
    let host = &second.auth.rotation_status()[1];
    assert_eq!(host.phase, Phase::UpdateClients);
    assert_eq!(
        host.tls_pins, pins,
        "the same two keys, the same one signing"
    );
}

#[test]
fn jwks_and_the_proxy_certificate_follow_the_rotation() {
    let f = fixture("otp");
    assert_eq!(f.auth.jwks()["keys"].as_array().unwrap().len(), 1);
    f.auth
        .rotate_ca("admin", &manual(CaKind::Jwt, Phase::Init))
        .unwrap();
    assert_eq!(f.auth.jwks()["keys"].as_array().unwrap().len(), 2);

    let proxy_digest = |f: &Fixture| {
        let (_key, chain) = f
            .auth
            .issue_host_tls(
                "proxy-1",
                HostRole::Proxy,
                &["proxy.unit.test".into()],
                Duration::from_secs(60),
            )
            .unwrap();
        hop_ca::trust_digest_x509(&der(&chain)).unwrap()
    };
    assert_eq!(proxy_digest(&f), Some(f.auth.trust_digest()));
    f.auth
        .rotate_ca("admin", &manual(CaKind::Host, Phase::Init))
        .unwrap();
    assert_eq!(
        proxy_digest(&f),
        Some(f.auth.trust_digest()),
        "the new digest"
    );
    // Agents' certificates carry none.
    let (_key, chain) = f
        .auth
        .issue_host_tls("node-1", HostRole::Node, &[], Duration::from_secs(60))
        .unwrap();
    assert_eq!(hop_ca::trust_digest_x509(&der(&chain)).unwrap(), None);
}

#[test]
fn the_proxy_keeps_the_old_key_until_update_servers_and_its_pin_follows() {
    let f = fixture("otp");
    let old = f.auth.ca_pin();
    let proxy_signer = |f: &Fixture| {
        let (_key, chain) = f
            .auth
            .issue_host_tls("proxy-1", HostRole::Proxy, &[], Duration::from_secs(60))
            .unwrap();
        let trusted = f.auth.public_authorities(CaKind::Host);
        hop_ca::x509_signer_pin(&der(&chain), &trusted, CaKind::Host, f.clock.now()).unwrap()
    };
    for (phase, on_old) in [
        (Phase::Init, true),
        (Phase::UpdateClients, true),
        (Phase::UpdateServers, false),
        (Phase::Rollback, true),
        (Phase::Standby, true),
    ] {
        f.auth
            .rotate_ca("admin", &manual(CaKind::Host, phase))
            .unwrap();
        assert_eq!(proxy_signer(&f) == old, on_old, "{phase}");
        assert_eq!(
            f.auth.ca_pin(),
            proxy_signer(&f),
            "{phase}: the pin is the proxy's key"
        );
    }
    // Agents' certificates come from the signing key: the new one in update_clients.
    f.auth
        .rotate_ca("admin", &manual(CaKind::Host, Phase::Init))
        .unwrap();
    f.auth
        .rotate_ca("admin", &manual(CaKind::Host, Phase::UpdateClients))
        .unwrap();
    let (_key, chain) = f
        .auth
        .issue_host_tls("node-1", HostRole::Node, &[], Duration::from_secs(60))
        .unwrap();
    let trusted = f.auth.public_authorities(CaKind::Host);
    assert_ne!(
        hop_ca::x509_signer_pin(&der(&chain), &trusted, CaKind::Host, f.clock.now()).unwrap(),
        old
    );
}

#[test]
fn the_status_names_hosts_still_on_an_old_key() {
    let f = fixture("otp");
    let ssh = hop_ca::generate_ssh_keypair(&mut rand::rng()).unwrap();
    f.auth
        .sign_openssh_host(&["web1".into()], &ssh.public_openssh, None)
        .unwrap();
    let stale = |f: &Fixture, kind: usize| f.auth.rotation_status()[kind].stale.clone();
    let (host, openssh) = (1, 4);
    assert!(stale(&f, host).is_empty() && stale(&f, openssh).is_empty());
    // init of the OpenSSH CA: web1's TrustedUserCAKeys lacks the new key.
    f.auth
        .rotate_ca("admin", &manual(CaKind::OpenSsh, Phase::Init))
        .unwrap();
    assert_eq!(stale(&f, openssh).len(), 1, "{:?}", stale(&f, openssh));
    assert!(stale(&f, openssh)[0].starts_with("web1 (agentless"));
    // Signed again: it trusts both.
    f.auth
        .sign_openssh_host(&["web1".into()], &ssh.public_openssh, None)
        .unwrap();
    assert!(stale(&f, openssh).is_empty());
    // The host CA's signer moves: web1's host certificate is from the old key until signed again.
    f.auth
        .rotate_ca("admin", &manual(CaKind::Host, Phase::Init))
        .unwrap();
    assert!(stale(&f, host).is_empty());
    f.auth
        .rotate_ca("admin", &manual(CaKind::Host, Phase::UpdateClients))
        .unwrap();
    assert_eq!(stale(&f, host).len(), 1, "{:?}", stale(&f, host));
    f.auth
        .sign_openssh_host(&["web1".into()], &ssh.public_openssh, None)
        .unwrap();
    assert!(stale(&f, host).is_empty());
}

#[test]
fn during_a_host_rotation_only_certificates_auth_issued_renew() {
    let f = fixture("otp");
    let renew = |f: &Fixture, host: &str, serial: &str| {
        f.auth.renew_host_identity(
            host,
            HostRole::Node,
            serial,
            &super::server::JoinRequest {
                token: "",
                role: "node",
                host_name: "",
                tls_public_key_der: &f.tls_spki,
                ssh_public_key: "",
                remote: None,
            },
        )
    };
    // Outside a rotation the certificate's own checks suffice (agents joined before the ledger).
    renew(&f, "host-a", "").unwrap();
    let issued = f.auth.last_host_serial("host-a").unwrap();
    f.auth
        .rotate_ca("admin", &manual(CaKind::Host, Phase::Init))
        .unwrap();
    // A certificate minted with the (leaked) old key for a host id Auth never certified, or
    // with a serial Auth did not issue, is not moved onto the new key.
    let e = renew(&f, "host-forged", "0badc0de").unwrap_err();
    assert!(matches!(e, AuthError::Denied(_)), "{e}");
    let e = renew(&f, "host-a", "0badc0de").unwrap_err();
    assert!(e.to_string().contains("join the agent again"), "{e}");
    // The real agent renews; a retry with the certificate before (a lost answer) does too.
    renew(&f, "host-a", &issued).unwrap();
    renew(&f, "host-a", &issued).unwrap();
    let latest = f.auth.last_host_serial("host-a").unwrap();
    assert_ne!(latest, issued);
    renew(&f, "host-a", &latest).unwrap();
}
