//! Launch codes (single use, bound to state and application, a minute long), sessions (secret
//! only hashed, expiry capped by the login, ended sessions gone) and the JWT they carry.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use p256::ecdsa::signature::Verifier as _;

use super::*;

fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn grant(app: &str, expires_in: Duration) -> AppGrant {
    let mut traits = BTreeMap::new();
    traits.insert("team".to_string(), vec!["blue".to_string()]);
    AppGrant {
        identity: Arc::new(hop_ca::Identity {
            username: "alice".into(),
            roles: vec!["app-user".into()],
            logins: vec!["alice".into(), "ubuntu".into()],
            traits,
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
        issued_at: t0() - Duration::from_secs(60),
        expires: t0() + expires_in,
        app: app.into(),
        app_uri: "http://127.0.0.1:3000".into(),
    }
}

fn access() -> (AppAccess, hop_ca::CertAuthority) {
    let ca = hop_ca::CertAuthority::generate(
        hop_ca::CaKind::Jwt,
        "unit.test",
        UNIX_EPOCH,
        &mut rand::rng(),
    )
    .unwrap();
    (AppAccess::new("unit.test", &ca), ca)
}

const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn a_code_is_redeemed_once_by_the_state_it_was_issued_for() {
    let (apps, _) = access();
    let code = apps
        .codes
        .issue(grant("grafana", HOUR), "s1", t0())
        .unwrap();
    let s = apps.redeem(&code, "grafana", "s1", t0()).unwrap();
    assert_eq!(s.session.user(), "alice");
    assert_eq!(s.session.app(), "grafana");
    // Used: never again.
    assert_eq!(
        apps.redeem(&code, "grafana", "s1", t0()).err(),
        Some(AppFlowError::UnknownCode)
    );
}

#[test]
fn a_code_with_another_state_or_application_is_burnt() {
    let (apps, _) = access();
    let code = apps
        .codes
        .issue(grant("grafana", HOUR), "s1", t0())
        .unwrap();
    assert_eq!(
        apps.redeem(&code, "grafana", "s2", t0()).err(),
        Some(AppFlowError::Mismatch)
    );
    // A wrong try spends the code: the right state cannot use it afterwards.
    assert_eq!(
        apps.redeem(&code, "grafana", "s1", t0()).err(),
        Some(AppFlowError::UnknownCode)
    );
    let code = apps
        .codes
        .issue(grant("grafana", HOUR), "s1", t0())
        .unwrap();
    assert_eq!(
        apps.redeem(&code, "kibana", "s1", t0()).err(),
        Some(AppFlowError::Mismatch)
    );
    assert!(apps.codes.issue(grant("grafana", HOUR), "", t0()).is_err());
    assert_eq!(
        apps.redeem("not-a-code", "grafana", "s1", t0()).err(),
        Some(AppFlowError::UnknownCode)
    );
}

#[test]
fn a_code_lasts_a_minute() {
    let (apps, _) = access();
    let code = apps.codes.issue(grant("grafana", HOUR), "s", t0()).unwrap();
    let late = t0() + codes::CODE_TTL;
    assert_eq!(
        apps.redeem(&code, "grafana", "s", late).err(),
        Some(AppFlowError::UnknownCode)
    );
    let code = apps.codes.issue(grant("grafana", HOUR), "s", t0()).unwrap();
    assert!(
        apps.redeem(&code, "grafana", "s", late - Duration::from_secs(1))
            .is_ok()
    );
}

#[test]
fn a_session_ends_with_its_login_and_never_after_the_cap() {
    let (apps, _) = access();
    let short = apps.start(grant("grafana", HOUR), t0()).unwrap();
    assert_eq!(short.session.expires, t0() + HOUR);
    let long = apps.start(grant("grafana", 30 * HOUR), t0()).unwrap();
    assert_eq!(long.session.expires, t0() + SESSION_CAP);
    // A login already expired starts nothing.
    let mut old = grant("grafana", HOUR);
    old.expires = t0();
    assert_eq!(
        apps.start(old, t0()).err(),
        Some(AppFlowError::LoginExpired)
    );
}

#[test]
fn sessions_are_found_by_their_secret_until_they_expire() {
    let (apps, _) = access();
    let new = apps.start(grant("grafana", HOUR), t0()).unwrap();
    assert!(new.session.matches(&new.secret));
    assert!(!new.session.matches("other"));
    assert!(matches!(
        apps.sessions.lookup(&new.secret, t0()),
        SessionLookup::Live(s) if Arc::ptr_eq(&s, &new.session)
    ));
    assert!(matches!(
        apps.sessions.lookup("nope", t0()),
        SessionLookup::Unknown
    ));
    match apps.sessions.lookup(&new.secret, t0() + HOUR) {
        SessionLookup::Expired(s) => assert!(s.end()),
        other => panic!("{other:?}"),
    }
    assert!(new.session.is_ended());
    assert!(matches!(
        apps.sessions.lookup(&new.secret, t0()),
        SessionLookup::Unknown
    ));
}

#[test]
fn the_sweep_ends_voided_and_expired_sessions_once() {
    let (apps, _) = access();
    let a = apps.start(grant("grafana", HOUR), t0()).unwrap();
    let b = apps.start(grant("kibana", 2 * HOUR), t0()).unwrap();
    let voided = |s: &AppSession| (s.app() == "kibana").then(locked);
    let gone = apps.sweep_for_test(t0(), voided);
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].0.app(), "kibana");
    assert!(b.session.is_ended());
    assert!(!a.session.is_ended());
    let gone = apps.sweep_for_test(t0() + HOUR, |_| None);
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].1, "expired");
    assert!(apps.sweep_for_test(t0() + HOUR, |_| None).is_empty());
    assert!(apps.sessions.is_empty());
}

fn locked() -> hop_admission::Refusal {
    hop_admission::Refusal::Locked {
        target: "user \"alice\"".into(),
        message: String::new(),
    }
}

#[test]
fn a_session_admission_ended_says_why_once_and_only_until_it_would_have_expired() {
    let (apps, _) = access();
    let a = apps.start(grant("grafana", HOUR), t0()).unwrap();
    let b = apps.start(grant("kibana", HOUR), t0()).unwrap();
    assert_eq!(apps.sweep_for_test(t0(), |_| Some(locked())).len(), 2);
    match apps.sessions.lookup(&a.secret, t0()) {
        SessionLookup::Refused { user, refusal } => {
            assert_eq!(user, a.session.user());
            assert_eq!(refusal, locked());
        }
        other => panic!("{other:?}"),
    }
    // Once: the next visit goes into the flow again.
    assert!(matches!(
        apps.sessions.lookup(&a.secret, t0()),
        SessionLookup::Unknown
    ));
    // Not after the session would have ended anyway.
    assert!(matches!(
        apps.sessions.lookup(&b.secret, t0() + HOUR),
        SessionLookup::Unknown
    ));
    // Expiry is not a refusal.
    let c = apps.start(grant("grafana", HOUR), t0()).unwrap();
    assert_eq!(apps.sweep_for_test(t0() + HOUR, |_| None).len(), 1);
    assert!(matches!(
        apps.sessions.lookup(&c.secret, t0()),
        SessionLookup::Unknown
    ));
}

#[test]
fn a_removed_session_is_ended_for_connections_that_hold_it() {
    let (apps, _) = access();
    let a = apps.start(grant("grafana", HOUR), t0()).unwrap();
    assert!(apps.sessions.remove(&a.secret).is_some());
    assert!(a.session.is_ended());
    assert!(apps.sessions.remove(&a.secret).is_none());
}

#[test]
fn the_session_jwt_verifies_against_the_jwks_with_the_users_claims() {
    let (apps, ca) = access();
    let new = apps.start(grant("grafana", HOUR), t0()).unwrap();
    let jwks = apps.jwks(&[ca.public()]);
    let key = &jwks["keys"][0];
    let mut sec1 = vec![4u8];
    sec1.extend(B64.decode(key["x"].as_str().unwrap()).unwrap());
    sec1.extend(B64.decode(key["y"].as_str().unwrap()).unwrap());
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).unwrap();
    let (signed, sig) = new.session.jwt.rsplit_once('.').unwrap();
    let sig = p256::ecdsa::Signature::from_slice(&B64.decode(sig).unwrap()).unwrap();
    vk.verify(signed.as_bytes(), &sig).unwrap();
    let payload = signed.split_once('.').unwrap().1;
    let claims: serde_json::Value = serde_json::from_slice(&B64.decode(payload).unwrap()).unwrap();
    assert_eq!(claims["iss"], "unit.test");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["username"], "alice");
    assert_eq!(claims["roles"], serde_json::json!(["app-user"]));
    assert_eq!(
        claims["traits"]["logins"],
        serde_json::json!(["alice", "ubuntu"])
    );
    assert_eq!(claims["traits"]["team"], serde_json::json!(["blue"]));
    assert_eq!(claims["aud"], serde_json::json!(["http://127.0.0.1:3000"]));
    let now = t0().duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(claims["iat"], now);
    assert_eq!(claims["nbf"], now);
    assert_eq!(claims["exp"], now + 3600);
}

#[test]
fn a_user_over_the_cap_loses_the_oldest_session() {
    let (apps, _) = access();
    let first = apps.start(grant("grafana", HOUR), t0()).unwrap();
    let mut displaced = None;
    for i in 1..=sessions::MAX_PER_USER {
        let n = apps
            .start(grant("grafana", HOUR), t0() + Duration::from_secs(i as u64))
            .unwrap();
        displaced = displaced.or(n.displaced);
    }
    assert!(Arc::ptr_eq(&displaced.unwrap(), &first.session));
    assert!(first.session.is_ended());
    assert_eq!(apps.sessions.len(), sessions::MAX_PER_USER);
}

#[test]
fn one_users_launches_never_fill_the_table_for_everyone() {
    let (apps, _) = access();
    let mut mallory = grant("grafana", HOUR);
    Arc::make_mut(&mut mallory.identity).username = "mallory".into();
    let mut first = None;
    // A millisecond apart: ten seconds in all, well within the codes' minute.
    let at = |i: usize| t0() + Duration::from_millis(i as u64);
    for i in 0..codes::MAX_PENDING {
        let code = apps.codes.issue(mallory.clone(), "s1", at(i)).unwrap();
        first.get_or_insert(code);
        assert!(apps.codes.len() <= codes::MAX_PENDING_PER_USER, "after {i}");
    }
    let now = at(codes::MAX_PENDING);
    // Her oldest codes made way for her newer ones.
    assert_eq!(
        apps.codes
            .redeem(&first.unwrap(), "grafana", "s1", now)
            .err(),
        Some(AppFlowError::UnknownCode)
    );
    // Alice can still launch, within the same minute.
    let code = apps.codes.issue(grant("grafana", HOUR), "s2", now).unwrap();
    assert!(apps.redeem(&code, "grafana", "s2", now).is_ok());
}
