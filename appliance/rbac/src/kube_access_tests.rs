use super::*;

#[test]
fn empty_checker_denies() {
    let c = AccessChecker::default();
    assert!(
        c.kube_impersonation(&BTreeMap::new(), "alice", None, &[])
            .is_err()
    );
}
