//! SVIDs on the Auth service (in-memory backend, simulated time): a bot gets SVIDs for the paths
//! its roles allow, with a lifetime within its certificate; a path outside them, a malformed
//! path, a replaced (older generation) certificate and a locked bot are refused, and both
//! outcomes are audited.

use std::time::{Duration, SystemTime};

use super::admission::Presented;
use super::server::{AuthError, BotKeys, BotRenewal, LoginCertificates, SvidAsk};
use super::server_tests::{Fixture, fixture};

const SVC_ROLE: &str = "kind: role\nversion: v7\nmetadata:\n  name: svc\nspec:\n  allow:\n    spiffe:\n      - path: /svc/*\n";

fn keys(f: &Fixture) -> BotKeys<'_> {
    BotKeys {
        ssh_public_key: &f.ssh_pub,
        tls_public_key_der: &f.tls_spki,
        ttl: Some(Duration::from_secs(600)),
    }
}

/// A bot `sv` with the role `svc`, joined.
fn joined(f: &Fixture) -> LoginCertificates {
    f.auth
        .create_resources(SVC_ROLE, "svc.yaml", false, "test", &|_, _| Ok(()))
        .unwrap();
    let bot = f
        .auth
        .create_bot("sv", &["svc".into()], &[], Duration::from_secs(600), 1, "t")
        .unwrap();
    f.clock.advance(Duration::from_secs(1));
    f.auth.bot_join(&bot.token, keys(f), None, None).unwrap()
}

fn presented(c: &LoginCertificates) -> Presented<'_> {
    Presented {
        identity: &c.identity,
        issued_at: c.issued_at,
        expires: c.expires,
        login: None,
        target: None,
    }
}

fn ask<'a>(f: &'a Fixture, path: &'a str) -> SvidAsk<'a> {
    SvidAsk {
        path,
        public_key_der: &f.tls_spki,
        ttl: None,
    }
}

fn issue(f: &Fixture, c: &LoginCertificates, paths: &[&str]) -> Result<Vec<SystemTime>, AuthError> {
    let asks: Vec<_> = paths.iter().map(|p| ask(f, p)).collect();
    let batch = f.auth.bot_issue_svids(&presented(c), &asks, None)?;
    assert!(batch.bundle_pem.contains("BEGIN CERTIFICATE"));
    Ok(batch.svids.iter().map(|s| s.expires).collect())
}

fn audited(f: &Fixture, success: bool) -> usize {
    f.events()
        .iter()
        .filter(|e| {
            e["event"] == "spiffe.svid.issue" && e["success"] == success && e["user"] == "bot-sv"
        })
        .count()
}

#[test]
fn allowed_paths_are_issued_within_the_bot_certificate() {
    let f = fixture("off");
    let c = joined(&f);
    let expires = issue(&f, &c, &["/svc/a", "/svc/b/c"]).unwrap();
    assert_eq!(expires.len(), 2);
    assert!(expires.iter().all(|e| *e <= c.expires), "{expires:?}");
    assert_eq!(audited(&f, true), 2);
}

#[test]
fn refused_paths_and_stale_or_locked_bots_get_nothing() {
    let f = fixture("off");
    let c1 = joined(&f);
    let e = issue(&f, &c1, &["/svc/a", "/db/x"]).unwrap_err();
    assert!(
        matches!(&e, AuthError::Denied(m) if m.contains("/db/x")),
        "{e}"
    );
    let e = issue(&f, &c1, &["svc/a"]).unwrap_err();
    assert!(matches!(e, AuthError::BadRequest(_)), "{e}");
    assert!(issue(&f, &c1, &[]).is_err());
    f.clock.advance(Duration::from_secs(5));
    let c2 = f
        .auth
        .bot_renew(&BotRenewal {
            presented: &presented(&c1),
            request_id: "request-0001",
            keys: keys(&f),
            remote: None,
        })
        .unwrap();
    let e = issue(&f, &c1, &["/svc/a"]).unwrap_err();
    assert!(
        matches!(&e, AuthError::Denied(m) if m.contains("generation")),
        "{e}"
    );
    assert!(issue(&f, &c2, &["/svc/a"]).is_ok());
    f.auth.lock_user("bot-sv", None, "test", "test").unwrap();
    f.clock.advance(Duration::from_secs(1));
    assert!(issue(&f, &c2, &["/svc/a"]).is_err());
    assert!(audited(&f, false) >= 4);
}
