//! Whether a lock applies to a subject: the matching rule for each target.

use std::time::SystemTime;

use hop_rbac::LockResource;

use crate::subject::{Subject, SubjectKind};

/// Whether `lock` is in force at `now` and names `subject` (its user, one of its roles, the
/// login it asks for, its host id, its bot name, or an access request its certificate names).
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
    let names_person = named(&t.user)
        || t.bot
            .as_deref()
            .is_some_and(|b| subject.name == format!("bot-{b}"));
    let names_role = t
        .role
        .as_deref()
        .is_some_and(|r| subject.roles.iter().any(|x| x == r));
    let names_login = t.login.is_some() && t.login.as_deref() == subject.login;
    let names_request = t
        .access_request
        .as_deref()
        .is_some_and(|id| subject.active_requests.iter().any(|x| x == id));
    let names_agent = subject.kind == SubjectKind::Agent && named(&t.server_id);
    (person && names_person) || names_role || names_login || names_request || names_agent
}
