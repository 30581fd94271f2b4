//! Admission: the one decision every session and API call goes through, on every route.
//!
//! A route that has verified a certificate describes who presented it ([`Subject`]) and
//! asks a [`Snapshot`] of the cluster's access data whether that subject may start now on
//! that [`Route`]. The answer is typed: an [`Admitted`] carrying the role checker built from
//! the roles the identity holds *now* (for the route's own RBAC question), or a [`Refusal`]
//! naming the reason with a stable code for the audit log. The order is fixed: certificate
//! still valid → same cluster → the snapshot is fresh enough → the identity still exists → no
//! lock applies → the certificate is not voided → the access requests it names are
//! approved and unexpired → roles → session options this release cannot
//! honour.
//!
//! The crate is pure: no IO, no clock (the caller passes `now`), no storage. Auth builds the
//! snapshot's [`SnapshotData`]; proxies and agents keep the latest one they were sent and
//! decide from it without a round trip. Live sessions ask again whenever a new snapshot
//! arrives ([`Snapshot::admit`] is cheap), so a lock, a deletion or a role removal ends them.
#![forbid(unsafe_code)]

mod checkers;
mod decision;
mod locks;
mod snapshot;
mod subject;

pub use decision::{Admitted, Refusal};
pub use locks::lock_applies;
pub use snapshot::{
    IdentityStamp, RequestStamp, STALE_AFTER, Snapshot, SnapshotData, SnapshotError,
};
pub use subject::{Route, SessionMfaMark, SessionTarget, Subject, SubjectKind};
