//! Bots on the Auth service (in-memory backend, simulated time): the one-time join, renewals
//! that advance the generation, a retried renewal answered with the same certificates, a copied
//! identity that locks the bot (audited), the TTL ceiling, and removal and locks refusing the
//! bot's certificates.

use std::time::Duration;

use hop_storage::Clock as _;

use super::admission::Presented;
use super::bots::{BotError, generation_of};
use super::server::{AuthError, BotKeys, BotRenewal, LoginCertificates, LoginRequest};
use super::server_tests::{Fixture, fixture};
use hop_admission::Route;

fn roles() -> Vec<String> {
    vec!["access".to_string()]
}

fn keys(f: &Fixture, ttl: Option<Duration>) -> BotKeys<'_> {
    BotKeys {
        ssh_public_key: &f.ssh_pub,
        tls_public_key_der: &f.tls_spki,
        ttl,
    }
}

/// A bot `ci` joined with its token.
fn joined(f: &Fixture) -> LoginCertificates {
    let bot = f
        .auth
        .create_bot(
            "ci",
            &roles(),
            &["ci".into()],
            Duration::from_secs(600),
            1,
            "test",
        )
        .unwrap();
    f.clock.advance(Duration::from_secs(1));
    f.auth
        .bot_join(&bot.token, keys(f, None), None, None)
        .unwrap()
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

fn renew(
    f: &Fixture,
    c: &LoginCertificates,
    request_id: &str,
) -> Result<LoginCertificates, AuthError> {
    f.auth.bot_renew(&BotRenewal {
        presented: &presented(c),
        request_id,
        keys: keys(f, None),
        remote: None,
    })
}

fn admitted(f: &Fixture, c: &LoginCertificates) -> bool {
    f.auth.admit(&presented(c), Route::AdminApi).is_ok()
}

#[test]
fn a_token_joins_once_and_the_bot_cannot_log_in_with_a_password() {
    let f = fixture("off");
    let bot = f
        .auth
        .create_bot(
            "ci",
            &roles(),
            &["ci".into()],
            Duration::from_secs(600),
            1,
            "test",
        )
        .unwrap();
    let c = f
        .auth
        .bot_join(&bot.token, keys(&f, None), None, None)
        .unwrap();
    assert_eq!(c.username, "bot-ci");
    assert_eq!(c.logins, vec!["ci".to_string()]);
    assert_eq!(generation_of(&c.identity), Some(1));
    let again = f
        .auth
        .bot_join(&bot.token, keys(&f, None), None, None)
        .unwrap_err();
    assert!(
        matches!(again, AuthError::Bot(BotError::InvalidToken)),
        "{again}"
    );
    let login = f.auth.login(&LoginRequest {
        username: "bot-ci",
        password: "",
        totp_code: "",
        ssh_public_key: &f.ssh_pub,
        tls_public_key_der: &f.tls_spki,
        ttl: None,
        remote: None,
        client: super::server::LoginClient::Cli,
    });
    assert!(login.is_err());
    let kinds: Vec<String> = f
        .events()
        .iter()
        .map(|e| format!("{}:{}", e["event"].as_str().unwrap(), e["success"]))
        .collect();
    assert!(kinds.contains(&"bot.create:true".to_string()), "{kinds:?}");
    assert!(kinds.contains(&"bot.join:true".to_string()), "{kinds:?}");
    assert!(kinds.contains(&"bot.join:false".to_string()), "{kinds:?}");
}

#[test]
fn an_expired_token_is_refused() {
    let f = fixture("off");
    let bot = f
        .auth
        .create_bot("ci", &roles(), &[], Duration::from_secs(60), 1, "test")
        .unwrap();
    f.clock.advance(Duration::from_secs(61));
    let e = f
        .auth
        .bot_join(&bot.token, keys(&f, None), None, None)
        .unwrap_err();
    assert!(matches!(e, AuthError::Bot(BotError::InvalidToken)), "{e}");
}

#[test]
fn renewals_advance_the_generation_in_the_state() {
    let f = fixture("off");
    let c1 = joined(&f);
    f.clock.advance(Duration::from_secs(10));
    let c2 = renew(&f, &c1, "request-0001").unwrap();
    assert_eq!(generation_of(&c2.identity), Some(2));
    f.clock.advance(Duration::from_secs(10));
    let c3 = renew(&f, &c2, "request-0002").unwrap();
    assert_eq!(generation_of(&c3.identity), Some(3));
    let bots = f.auth.list_bots().unwrap();
    assert_eq!(bots.len(), 1);
    assert_eq!((bots[0].generation, bots[0].instances), (3, 1));
    assert!(bots[0].last_renewal.is_some());
    assert!(admitted(&f, &c3));
}

#[test]
fn a_retried_renewal_gets_the_same_certificates_and_locks_nothing() {
    let f = fixture("off");
    let c1 = joined(&f);
    f.clock.advance(Duration::from_secs(10));
    // The answer is lost: the bot retries with the same request, the same key, the old cert.
    let lost = renew(&f, &c1, "request-0001").unwrap();
    f.clock.advance(Duration::from_secs(30));
    let retried = renew(&f, &c1, "request-0001").unwrap();
    assert_eq!(retried.tls_certificate_pem, lost.tls_certificate_pem);
    assert_eq!(retried.ssh_certificate, lost.ssh_certificate);
    assert_eq!(f.auth.list_bots().unwrap()[0].generation, 2);
    assert!(f.auth.user_lock_in_force("bot-ci").unwrap().is_none());
    // The recovered certificates work and renew on.
    let next = renew(&f, &retried, "request-0002").unwrap();
    assert_eq!(generation_of(&next.identity), Some(3));
    // Too late for a retry: refused, still not locked.
    f.clock.advance(Duration::from_secs(120));
    let late = renew(&f, &next, "request-0003").unwrap();
    f.clock.advance(Duration::from_secs(61));
    let e = renew(&f, &next, "request-0003").unwrap_err();
    assert!(matches!(e, AuthError::Bot(BotError::RetryTooLate)), "{e}");
    assert!(f.auth.user_lock_in_force("bot-ci").unwrap().is_none());
    assert!(admitted(&f, &late));
}

#[test]
fn an_old_generation_from_another_holder_locks_the_bot_and_is_audited() {
    let f = fixture("off");
    let c1 = joined(&f);
    f.clock.advance(Duration::from_secs(10));
    let c2 = renew(&f, &c1, "request-0001").unwrap();
    f.clock.advance(Duration::from_secs(10));
    // A copy of the data dir taken before that renewal renews on its own.
    let e = renew(&f, &c1, "copy-request-0001").unwrap_err();
    assert!(matches!(e, AuthError::Bot(BotError::Copied { .. })), "{e}");
    assert!(f.auth.user_lock_in_force("bot-ci").unwrap().is_some());
    f.clock.advance(Duration::from_secs(1));
    // Every certificate of the bot is refused now, the newest included, and it renews no more.
    assert!(!admitted(&f, &c2));
    assert!(renew(&f, &c2, "request-0002").is_err());
    let audited = f.events().iter().any(|e| {
        e["event"] == "bot.renew"
            && e["success"] == false
            && e["reason"] == "generation_mismatch"
            && e["user"] == "bot-ci"
    });
    assert!(audited, "{:#?}", f.events());
}

#[test]
fn bot_certificates_default_to_an_hour_and_never_pass_a_day() {
    let f = fixture("off");
    let c1 = joined(&f);
    let ttl = |c: &LoginCertificates| c.expires.duration_since(c.issued_at).unwrap();
    assert_eq!(ttl(&c1), Duration::from_secs(3600));
    f.clock.advance(Duration::from_secs(1));
    let long = f
        .auth
        .bot_renew(&BotRenewal {
            presented: &presented(&c1),
            request_id: "request-0001",
            keys: keys(&f, Some(Duration::from_secs(72 * 3600))),
            remote: None,
        })
        .unwrap();
    assert!(
        ttl(&long) <= Duration::from_secs(24 * 3600),
        "{:?}",
        ttl(&long)
    );
}

#[test]
fn removal_and_locks_refuse_the_bots_certificates() {
    let f = fixture("off");
    let c1 = joined(&f);
    f.clock.advance(Duration::from_secs(1));
    assert!(admitted(&f, &c1));
    f.auth.lock_user("bot-ci", None, "test", "test").unwrap();
    f.clock.advance(Duration::from_secs(1));
    assert!(!admitted(&f, &c1));
    assert!(renew(&f, &c1, "request-0001").is_err());
    f.auth.unlock_user("bot-ci", "test").unwrap();
    f.auth.delete_bot("ci", "test").unwrap();
    assert!(!admitted(&f, &c1));
    assert!(renew(&f, &c1, "request-0002").is_err());
    assert!(f.auth.list_bots().unwrap().is_empty());
    // A user that is not a bot is not removed as one.
    let e = f.auth.delete_bot("ci", "test").unwrap_err();
    assert!(matches!(e, AuthError::Bot(BotError::NotABot { .. })), "{e}");
}

#[test]
fn bot_names_are_reserved_and_a_bot_gets_no_password() {
    let f = fixture("off");
    let e = f
        .auth
        .create_user("bot-ci", &roles(), Default::default(), "test")
        .unwrap_err();
    assert!(matches!(e, AuthError::BadRequest(_)), "{e}");
    // Nor through `hop admin create -f`, which could otherwise overwrite a bot's user.
    let doc = "kind: user\nversion: v2\nmetadata:\n  name: bot-ci\nspec:\n  roles: [access]\n";
    let e = f
        .auth
        .create_resources(doc, "u.yaml", true, "test", &|_, _| Ok(()))
        .unwrap_err();
    assert!(e.to_string().contains("bots'"), "{e}");
    // Nor may an ordinary user carry Auth's own traits, such as a bot generation.
    let traits = std::collections::BTreeMap::from([(
        crate::bots::GENERATION_TRAIT.to_string(),
        vec!["9".into()],
    )]);
    let e = f
        .auth
        .create_user("mallory", &roles(), traits, "test")
        .unwrap_err();
    assert!(e.to_string().contains("Hop's own"), "{e}");
    let doc = "kind: user\nversion: v2\nmetadata:\n  name: mallory\nspec:\n  roles: [access]\n  traits:\n    hop.internal/bot-generation: ['9']\n";
    let e = f
        .auth
        .create_resources(doc, "u.yaml", true, "test", &|_, _| Ok(()))
        .unwrap_err();
    assert!(e.to_string().contains("Hop's own"), "{e}");
    joined(&f);
    let e = f.auth.reset_user("bot-ci", "test").unwrap_err();
    assert!(matches!(e, AuthError::BadRequest(_)), "{e}");
}

/// A recovery of bot `ci` signed with `bound_pem` (PKCS#8 PEM) at `at_unix`.
fn recover(
    f: &Fixture,
    bound_pem: &str,
    next: &[u8],
    at_unix: i64,
) -> Result<LoginCertificates, AuthError> {
    let fp = hop_api::bot_proof::key_fingerprint(&f.ssh_pub, &f.tls_spki);
    let msg = hop_api::bot_proof::recovery_message("ci", at_unix, &fp, next);
    let signature = hop_ca::sign_proof(bound_pem, &msg).unwrap();
    f.auth.bot_recover(&super::server::BotRecovery {
        bot: "ci",
        timestamp_unix: at_unix,
        signature: &signature,
        keys: keys(f, None),
        next_bound_key: next,
        remote: None,
    })
}

fn now_unix(f: &Fixture) -> i64 {
    let secs = f
        .clock
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    i64::try_from(secs).unwrap()
}

#[test]
fn a_bound_key_recovers_an_expired_bot_within_its_limit_and_rotates() {
    let f = fixture("off");
    let mut rng = rand::rng();
    let bound = hop_ca::generate_x509_keypair(&mut rng).unwrap();
    let bot = f
        .auth
        .create_bot("ci", &roles(), &[], Duration::from_secs(600), 1, "test")
        .unwrap();
    let c1 = f
        .auth
        .bot_join(
            &bot.token,
            keys(&f, None),
            Some(&bound.public_spki_der),
            None,
        )
        .unwrap();
    // Offline past expiry: renewal is impossible, recovery with the key works once.
    f.clock.advance(Duration::from_secs(2 * 3600));
    assert!(!admitted(&f, &c1));
    let stranger = hop_ca::generate_x509_keypair(&mut rng).unwrap();
    let e = recover(&f, &stranger.private_pkcs8_pem, &[], now_unix(&f)).unwrap_err();
    assert!(matches!(e, AuthError::Bot(BotError::BadProof)), "{e}");
    let e = recover(&f, &bound.private_pkcs8_pem, &[], now_unix(&f) - 300).unwrap_err();
    assert!(matches!(e, AuthError::Bot(BotError::StaleProof)), "{e}");
    let c2 = recover(&f, &bound.private_pkcs8_pem, &[], now_unix(&f)).unwrap();
    assert_eq!(generation_of(&c2.identity), Some(2));
    assert!(admitted(&f, &c2));
    // The limit refuses the next one (past the window in which it would be a retry of the
    // last), audited; an administrator raises it.
    f.clock.advance(Duration::from_secs(61));
    let e = recover(&f, &bound.private_pkcs8_pem, &[], now_unix(&f)).unwrap_err();
    assert!(
        matches!(
            e,
            AuthError::Bot(BotError::RecoveryLimit { used: 1, limit: 1 })
        ),
        "{e}"
    );
    let refused = f.events().iter().any(|e| {
        e["event"] == "bot.join" && e["method"] == "bound_keypair" && e["success"] == false
    });
    assert!(refused);
    f.auth.update_bot("ci", 3, "test").unwrap();
    // Rotation: the next key replaces the old one, which then proves nothing.
    let next = hop_ca::generate_x509_keypair(&mut rng).unwrap();
    let c3 = recover(
        &f,
        &bound.private_pkcs8_pem,
        &next.public_spki_der,
        now_unix(&f),
    )
    .unwrap();
    assert_eq!(generation_of(&c3.identity), Some(3));
    // A proof is used once: the same time again is refused, even with the new key.
    let e = recover(&f, &next.private_pkcs8_pem, &[], now_unix(&f)).unwrap_err();
    assert!(matches!(e, AuthError::Bot(BotError::StaleProof)), "{e}");
    f.clock.advance(Duration::from_secs(5));
    let e = recover(&f, &bound.private_pkcs8_pem, &[], now_unix(&f)).unwrap_err();
    assert!(matches!(e, AuthError::Bot(BotError::BadProof)), "{e}");
    recover(&f, &next.private_pkcs8_pem, &[], now_unix(&f)).unwrap();
    let bots = f.auth.list_bots().unwrap();
    assert_eq!((bots[0].recoveries, bots[0].recovery_limit), (3, 3));
    assert!(bots[0].bound_key);
}

#[test]
fn a_bot_without_a_bound_key_or_locked_cannot_recover_and_strangers_learn_nothing() {
    let f = fixture("off");
    joined(&f);
    let stranger = hop_ca::generate_x509_keypair(&mut rand::rng()).unwrap();
    // No bound key: the answer a wrong proof gets, not a hint that the bot has none.
    let e = recover(&f, &stranger.private_pkcs8_pem, &[], now_unix(&f)).unwrap_err();
    assert!(matches!(e, AuthError::Bot(BotError::BadProof)), "{e}");
    f.auth.lock_user("bot-ci", None, "test", "test").unwrap();
    let e = recover(&f, &stranger.private_pkcs8_pem, &[], now_unix(&f)).unwrap_err();
    assert!(
        matches!(e, AuthError::Bot(BotError::BadProof)),
        "a stranger learnt of the lock: {e}"
    );
}

/// Bot `ci` joined with a bound key (the key returned), its certificates expired since.
fn expired_bot_with_bound_key() -> (Fixture, hop_ca::X509KeyPair) {
    let f = fixture("off");
    let bound = hop_ca::generate_x509_keypair(&mut rand::rng()).unwrap();
    let bot = f
        .auth
        .create_bot("ci", &roles(), &[], Duration::from_secs(600), 1, "test")
        .unwrap();
    f.auth
        .bot_join(
            &bot.token,
            keys(&f, None),
            Some(&bound.public_spki_der),
            None,
        )
        .unwrap();
    f.clock.advance(Duration::from_secs(2 * 3600));
    (f, bound)
}

#[test]
fn a_locked_bot_with_its_bound_key_is_told_it_is_locked_and_strangers_are_not() {
    let (f, bound) = expired_bot_with_bound_key();
    let mut rng = rand::rng();
    f.auth.lock_user("bot-ci", None, "test", "test").unwrap();
    let stranger = hop_ca::generate_x509_keypair(&mut rng).unwrap();
    for _ in 0..2 {
        let e = recover(&f, &stranger.private_pkcs8_pem, &[], now_unix(&f)).unwrap_err();
        assert!(matches!(e, AuthError::Bot(BotError::BadProof)), "{e}");
    }
    // A stale proof from a stranger says nothing about the bot's last proof either.
    let e = recover(&f, &stranger.private_pkcs8_pem, &[], now_unix(&f) - 300).unwrap_err();
    assert!(matches!(e, AuthError::Bot(BotError::BadProof)), "{e}");
    let e = recover(&f, &bound.private_pkcs8_pem, &[], now_unix(&f)).unwrap_err();
    assert!(matches!(e, AuthError::Denied(_)), "{e}");
    // The refusals did not count against the limit.
    let bots = f.auth.list_bots().unwrap();
    assert_eq!(bots[0].recoveries, 0);
}

#[test]
fn a_recovery_whose_answer_was_lost_is_answered_again_without_spending_another() {
    let (f, bound) = expired_bot_with_bound_key();
    let mut rng = rand::rng();
    // The recovery rotates the bound key; its answer is lost, so the bot still holds the old
    // key and asks again (a new proof time, the same keys and next key).
    let next = hop_ca::generate_x509_keypair(&mut rng).unwrap();
    let first = recover(
        &f,
        &bound.private_pkcs8_pem,
        &next.public_spki_der,
        now_unix(&f),
    )
    .unwrap();
    f.clock.advance(Duration::from_secs(10));
    let again = recover(
        &f,
        &bound.private_pkcs8_pem,
        &next.public_spki_der,
        now_unix(&f),
    )
    .unwrap();
    assert_eq!(again.ssh_certificate, first.ssh_certificate);
    assert_eq!(again.tls_certificate_pem, first.tls_certificate_pem);
    assert_eq!(
        generation_of(&again.identity),
        generation_of(&first.identity)
    );
    let bots = f.auth.list_bots().unwrap();
    assert_eq!(bots[0].recoveries, 1, "the retry spent nothing");
    // Another next key, or a stranger, is no retry.
    let other = hop_ca::generate_x509_keypair(&mut rng).unwrap();
    let e = recover(
        &f,
        &bound.private_pkcs8_pem,
        &other.public_spki_der,
        now_unix(&f),
    )
    .unwrap_err();
    assert!(matches!(e, AuthError::Bot(BotError::BadProof)), "{e}");
    let e = recover(
        &f,
        &other.private_pkcs8_pem,
        &next.public_spki_der,
        now_unix(&f),
    )
    .unwrap_err();
    assert!(matches!(e, AuthError::Bot(BotError::BadProof)), "{e}");
    // After the retry window the old key proves nothing.
    f.clock.advance(Duration::from_secs(120));
    let e = recover(
        &f,
        &bound.private_pkcs8_pem,
        &next.public_spki_der,
        now_unix(&f),
    )
    .unwrap_err();
    assert!(matches!(e, AuthError::Bot(BotError::BadProof)), "{e}");
}
