//! The audit page's API: `GET /web/api/audit?from=&to=&type=&user=&cursor=&limit=`, one page of
//! the audit log's events, newest first, with the cursor of the next page: the search `hop
//! admin audit search` runs through Auth's `SearchEvents`.
//!
//! It needs the RBAC rule `event` `list` (the auditor and editor presets), decided after
//! admission on every request and refused, audited, for anyone else (the access preset). It
//! never writes to the log and never widens a query: times are RFC 3339, a page holds at most
//! [`MAX_PAGE`] events.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hop_storage::{Order, SearchQuery};

use super::WebRoom;
use super::guard::{Renew, WebRefusal, WebRequest};
use super::records::{answer, query_pairs};

/// The most events one page returns.
pub const MAX_PAGE: usize = 500;
/// Events per page when the page asks for no number.
const DEFAULT_PAGE: usize = 50;

/// The audit routes.
pub(crate) fn routes() -> Router<Arc<WebRoom>> {
    Router::new().route("/web/api/audit", get(search))
}

/// What the page asks for; every field optional.
#[derive(Default)]
struct AuditQuery {
    /// RFC 3339, inclusive.
    from: Option<String>,
    /// RFC 3339, exclusive.
    to: Option<String>,
    /// One event type (`user.login`), or several separated by commas (`type=`).
    kind: Option<String>,
    user: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

fn bad(message: String) -> WebRefusal {
    answer(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn time(field: &str, value: Option<&str>) -> Result<Option<SystemTime>, WebRefusal> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let t = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
        .map_err(|e| bad(format!("{field}: not an RFC 3339 time ({e})")))?;
    Ok(Some(SystemTime::from(t)))
}

fn text(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

fn query(q: AuditQuery) -> Result<SearchQuery, WebRefusal> {
    Ok(SearchQuery {
        from: time("from", q.from.as_deref())?,
        to: time("to", q.to.as_deref())?,
        event_types: q
            .kind
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
        user: text(q.user),
        session_id: None,
        text: None,
        order: Order::NewestFirst,
        limit: q.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE),
        cursor: text(q.cursor),
    })
}

/// `GET /web/api/audit`: one page of events and the next page's cursor (`null` at the end).
async fn search(
    State(room): State<Arc<WebRoom>>,
    req: WebRequest,
    RawQuery(raw): RawQuery,
) -> Result<Response, WebRefusal> {
    let c = room.guard(&req, Renew::Yes)?;
    room.rbac(&c, c.admitted.checker().check_rule("event", "list"))?;
    let mut p = query_pairs(
        raw.as_deref(),
        &["from", "to", "type", "user", "cursor", "limit"],
    )?;
    let limit = match p.remove("limit") {
        Some(l) => Some(
            l.parse()
                .map_err(|_| bad(format!("limit: not a number: {l:?}")))?,
        ),
        None => None,
    };
    let q = AuditQuery {
        from: p.remove("from"),
        to: p.remove("to"),
        kind: p.remove("type"),
        user: p.remove("user"),
        cursor: p.remove("cursor"),
        limit,
    };
    let q = query(q)?;
    let log = room.records()?.audit.clone().ok_or_else(|| {
        answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this process keeps no audit log".into(),
        )
    })?;
    let page = tokio::task::spawn_blocking(move || log.search(&q))
        .await
        .map_err(|e| bad(e.to_string()))?
        .map_err(|e| bad(format!("the search failed: {e}")))?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(serde_json::json!({
            "events": page.events,
            "next_cursor": page.next_cursor,
        })),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_checked_and_bounded() {
        let q = query(AuditQuery {
            from: Some("2026-01-02T03:04:05Z".into()),
            kind: Some("user.login, session.start,".into()),
            user: Some(" alice ".into()),
            limit: Some(1_000_000),
            ..AuditQuery::default()
        })
        .unwrap();
        assert_eq!(q.event_types, ["user.login", "session.start"]);
        assert_eq!(q.user.as_deref(), Some("alice"));
        assert_eq!(q.limit, MAX_PAGE);
        assert!(q.from.is_some() && q.to.is_none() && q.cursor.is_none());
        let e = query(AuditQuery {
            to: Some("yesterday".into()),
            ..AuditQuery::default()
        })
        .err()
        .unwrap();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(
            e.message.starts_with("to: not an RFC 3339 time"),
            "{}",
            e.message
        );
    }
}
