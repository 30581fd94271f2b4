//! What the recordings and audit pages read, and the one RBAC step their handlers share: the
//! stores (session recordings, the audit log) the process hands the room once they are open,
//! and [`WebRoom::rbac`], which turns a role checker's refusal into an audited `access.refused`
//! (route `web`) and a JSON 403.
//!
//! It owns no data and decides nothing itself: admission ran in [`WebRoom::guard`] before, and
//! the role checker answers.

use std::sync::Arc;

use axum::http::StatusCode;
use hop_admission::Route;
use hop_rbac::AccessDenied;
use hop_storage::AuditStore;
use hop_storage::recording::RecordingBackend;

use super::WebRoom;
use super::guard::{WebCaller, WebRefusal};

/// The stores behind the recordings and audit pages.
pub struct WebRecords {
    pub recordings: Arc<dyn RecordingBackend>,
    /// `None` where this process keeps no audit log.
    pub audit: Option<Arc<dyn AuditStore>>,
}

impl WebRoom {
    /// Serves the recordings and audit pages from these stores (set once, at start).
    pub fn serve_records(
        &self,
        recordings: Arc<dyn RecordingBackend>,
        audit: Option<Arc<dyn AuditStore>>,
    ) {
        let _ = self.records.set(WebRecords { recordings, audit });
    }

    /// The stores, or a 503 saying this proxy serves none.
    pub(crate) fn records(&self) -> Result<&WebRecords, WebRefusal> {
        self.records.get().ok_or_else(|| WebRefusal {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            message: "this proxy serves no recordings or audit log".into(),
        })
    }

    /// The role checker's answer for `caller`: through, or audited and refused with 403.
    pub(crate) fn rbac(
        &self,
        caller: &WebCaller,
        answer: Result<(), AccessDenied>,
    ) -> Result<(), WebRefusal> {
        caller.admitted.require(answer).map_err(|refusal| {
            let user = &caller.session.cert.identity.username;
            self.auth
                .audit_refusal(Route::Web, user, &refusal, Some(caller.remote));
            WebRefusal {
                status: StatusCode::FORBIDDEN,
                code: refusal.code(),
                message: refusal.to_string(),
            }
        })
    }
}

/// A JSON 4xx/5xx answer that is not about the session (a bad query, a missing recording).
pub(crate) fn answer(status: StatusCode, code: &'static str, message: String) -> WebRefusal {
    WebRefusal {
        status,
        code,
        message,
    }
}

/// The `name=value` pairs of a request's URL query, decoded by
/// [`hop_protocols::web_headers::query_pairs`]; a malformed query, a name not in `known` or a
/// name given twice is refused with 400.
pub(crate) fn query_pairs(
    raw: Option<&str>,
    known: &[&str],
) -> Result<std::collections::BTreeMap<String, String>, WebRefusal> {
    let bad = |m: String| answer(StatusCode::BAD_REQUEST, "bad_request", m);
    let pairs = hop_protocols::web_headers::query_pairs(raw.unwrap_or_default())
        .map_err(|e| bad(e.to_string()))?;
    let mut out = std::collections::BTreeMap::new();
    for (k, v) in pairs {
        if !known.contains(&k.as_str()) {
            return Err(bad(format!(
                "unknown parameter {k:?}, expected one of {}",
                known.join(", ")
            )));
        }
        if out.insert(k.clone(), v).is_some() {
            return Err(bad(format!("parameter {k:?} is given twice")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode_and_refuse_what_they_do_not_know() {
        let q = query_pairs(
            Some("user=al%C3%AFce&type=user.login+x&&"),
            &["user", "type"],
        )
        .unwrap();
        assert_eq!(q["user"], "alïce");
        assert_eq!(q["type"], "user.login x");
        for bad in ["x=1", "user=%zz", "user=%C3", "user=a&user=b", "user=%"] {
            let e = query_pairs(Some(bad), &["user"]).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
        }
        assert!(query_pairs(None, &[]).unwrap().is_empty());
    }
}
