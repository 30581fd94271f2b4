//! Deciding a live session again after its certificate expired, when the expiry does not end
//! it (`Presented::outliving_expiry`): a lock placed later still refuses it, as does the
//! user's deletion, while the expiry alone refuses nothing.

use std::time::Duration;

use hop_admission::{Refusal, Route};
use hop_rbac::LockTarget;
use hop_storage::Clock;

use super::admission::Presented;
use super::server_tests::{Fixture, PASSWORD, fixture};
use hop_api::totp;

fn presented(c: &super::server::LoginCertificates) -> Presented<'_> {
    Presented {
        identity: &c.identity,
        issued_at: c.issued_at,
        expires: c.expires,
        login: None,
        target: None,
    }
}

fn admit(f: &Fixture, p: &Presented<'_>) -> Result<(), Refusal> {
    f.auth.admit(p, Route::AdminApi).map(|_| ())
}

#[test]
fn a_lock_after_the_expiry_still_ends_a_session_that_outlives_its_certificate() {
    let f = fixture("otp");
    let secret = f.user("alice", &["access"]);
    f.clock.advance(Duration::from_secs(30));
    let code = totp::code_at(&secret, f.clock.now());
    let certs = f.login("alice", PASSWORD, &code).unwrap();
    f.clock
        .advance(certs.expires.duration_since(f.clock.now()).unwrap() + Duration::from_secs(5));

    // Expired: as presented, the expiry is the refusal; outliving it, nothing refuses.
    let p = presented(&certs);
    assert!(matches!(admit(&f, &p), Err(Refusal::Expired { .. })));
    let live = p.outliving_expiry(f.clock.now());
    assert!(admit(&f, &live).is_ok());

    // A lock placed now: the expiry no longer hides it.
    f.auth
        .create_lock(
            LockTarget {
                user: Some("alice".into()),
                ..LockTarget::default()
            },
            "gone rogue",
            None,
            "admin",
        )
        .unwrap();
    let live = presented(&certs).outliving_expiry(f.clock.now());
    assert!(
        matches!(admit(&f, &live), Err(Refusal::Locked { .. })),
        "{:?}",
        admit(&f, &live)
    );
}
