//! Admission while the backend is cut off: decisions come from the snapshot built last, so an
//! identity that exists keeps being admitted, a lock placed before the outage keeps refusing,
//! strict locking refuses everything once that snapshot is five minutes old, and whatever needs
//! the backend itself (a new login) fails as unreachable.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, UNIX_EPOCH};

use hop_admission::{Refusal, Route};
use hop_rbac::LockTarget;
use hop_storage::{Backend, Clock, CutOffBackend, ManualClock, MemoryBackend, StorageError};

use super::admission::Presented;
use super::error::AuthError;
use super::server::LoginCertificates;
use super::server_tests::{Fixture, PASSWORD, fixture_over};
use hop_api::totp;

fn cluster() -> (Fixture, Arc<CutOffBackend>) {
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let c: Arc<dyn Clock> = Arc::new(clock.clone());
    let backend = Arc::new(CutOffBackend::new(Arc::new(MemoryBackend::new(c))));
    let f = fixture_over(backend.clone() as Arc<dyn Backend>, clock);
    (f, backend)
}

fn logged_in(f: &Fixture, name: &str) -> LoginCertificates {
    let secret = f.user(name, &["access"]);
    f.clock.advance(Duration::from_secs(30));
    let code = totp::code_at(&secret, f.clock.now());
    f.login(name, PASSWORD, &code).unwrap()
}

fn admit(f: &Fixture, c: &LoginCertificates) -> Result<(), Refusal> {
    let presented = Presented {
        identity: &c.identity,
        issued_at: c.issued_at,
        expires: c.expires,
        login: None,
        target: None,
    };
    f.auth.admit(&presented, Route::AdminApi).map(|_| ())
}

fn reachable(f: &Fixture) -> bool {
    f.auth.metrics().backend_reachable.load(Ordering::Acquire)
}

#[test]
fn existing_identities_are_decided_from_the_kept_snapshot() {
    let (f, backend) = cluster();
    let alice = logged_in(&f, "alice");
    let bob = logged_in(&f, "bob");
    f.auth
        .create_lock(
            LockTarget {
                user: Some("bob".into()),
                ..LockTarget::default()
            },
            "before the outage",
            None,
            "admin",
        )
        .unwrap();
    admit(&f, &alice).unwrap();
    assert!(matches!(admit(&f, &bob), Err(Refusal::Locked { .. })));

    backend.cut_off(true);
    f.clock.advance(Duration::from_secs(3600));
    admit(&f, &alice).expect("best effort: the kept snapshot answers");
    assert!(matches!(admit(&f, &bob), Err(Refusal::Locked { .. })));
    assert!(!reachable(&f));
    let refused = f.login("alice", PASSWORD, "000000").unwrap_err();
    assert!(
        matches!(
            refused,
            AuthError::Storage(StorageError::Unreachable { .. })
        ),
        "{refused}"
    );

    backend.cut_off(false);
    admit(&f, &alice).unwrap();
    assert!(reachable(&f));
}

#[test]
fn strict_locking_refuses_once_the_kept_snapshot_is_five_minutes_old() {
    let (f, backend) = cluster();
    let alice = logged_in(&f, "alice");
    f.auth
        .create_resources(
            "kind: cluster_auth_preference\nversion: v2\nmetadata:\n  name: cluster-auth-preference\nspec:\n  locking_mode: strict\n",
            "cap.yaml",
            true,
            "test",
            &|_, _| Ok(()),
        )
        .unwrap();
    admit(&f, &alice).unwrap();

    backend.cut_off(true);
    f.clock.advance(Duration::from_secs(290));
    admit(&f, &alice).expect("within the strict bound");
    f.clock.advance(Duration::from_secs(20));
    assert!(matches!(admit(&f, &alice), Err(Refusal::Stale { .. })));
}

#[test]
fn a_lock_this_appliance_confirmed_is_never_missing_from_what_it_serves() {
    let (f, backend) = cluster();
    let alice = logged_in(&f, "alice");
    let bob = logged_in(&f, "bob");
    admit(&f, &bob).unwrap();
    // The lock is written and confirmed; the backend goes before any decision rebuilt the
    // snapshot, which does not hold it.
    f.auth
        .create_lock(
            LockTarget {
                user: Some("bob".into()),
                ..LockTarget::default()
            },
            "just now",
            None,
            "admin",
        )
        .unwrap();
    backend.cut_off(true);
    assert!(matches!(admit(&f, &bob), Err(Refusal::Unavailable { .. })));
    // Everyone is refused then (fail closed), until the backend is back.
    assert!(admit(&f, &alice).is_err());
    backend.cut_off(false);
    assert!(matches!(admit(&f, &bob), Err(Refusal::Locked { .. })));
    admit(&f, &alice).unwrap();
}
