//! Whether a lock applies to a subject: the matching rule for each target.

use std::time::SystemTime;

use hop_rbac::LockResource;

use crate::subject::{Subject, SubjectKind};

/// Whether `lock` is in force at `now` and names `subject` (its user, one of its roles, the
/// login it asks for, its host id, or its bot name).
#[must_use]
pub fn lock_applies(lock: &LockResource, subject: &Subject<'_>, now: SystemTime) -> bool {
    if lock
        .expires()
        .is_some_and(|e| time::OffsetDateTime::from(now) >= e)
    {
        return false;
    }
    let t = &lock.spec.target;
    let person = matches!(subject.kind, SubjectKind::User | SubjectKind::Bot);
    let named = |v: &Option<String>| v.as_deref() == Some(subject.name);
    (person && named(&t.user))
        || (person
            && t.bot
                .as_deref()
                .is_some_and(|b| subject.name == format!("bot-{b}")))
        || t.role
            .as_deref()
            .is_some_and(|r| subject.roles.iter().any(|x| x == r))
        || t.login.as_deref().is_some_and(|l| subject.login == Some(l))
        || (subject.kind == SubjectKind::Agent && named(&t.server_id))
}
