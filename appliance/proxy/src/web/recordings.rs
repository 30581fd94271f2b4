//! The recordings page's API: the session recordings this user may see, one recording's
//! metadata, and its events page by page for the player.
//!
//! `GET /web/api/recordings` lists what the RBAC rule `session` `list` admits (all of them for
//! the auditor and editor presets, only the sessions the user took part in for the access
//! preset's `where` clause: the filter `hop recordings ls` uses, `hop_auth::recording_access`).
//! `GET /web/api/recordings/{id}` and `GET /web/api/recordings/{id}/events?from=OFFSET` need
//! `session` `read` on that recording, decided again on every request after admission (a lock,
//! a deletion or a role taken away refuses the next page). Opening a recording is audited
//! (`session.recording.access`) as `hop play` is. A page holds at most [`PAGE_BYTES`] of the
//! file (whole chunks), so no answer grows with the recording. Terminal output travels in
//! base64 (it is bytes, not text: a character may span two events); typed input is not sent.
//!
//! It never reads a recording the checker has not admitted, and never trusts an offset: the
//! bytes there must parse as whole, checksum-valid chunks.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use hop_api::audit::EventKind;
use hop_api::timestamps::rfc3339;
use hop_auth::recording_access::recording_scope;
use hop_storage::recording::{
    Event, MAX_CHUNK_BODY, MAX_META_LEN, RecordingIndexEntry, RecordingStoreError,
    is_valid_session_id, parse_chunk, parse_header,
};
use serde::Serialize;

use super::WebRoom;
use super::guard::{Renew, WebCaller, WebRefusal, WebRequest};
use super::records::{answer, query_pairs};

/// The most bytes of a recording one events page reads: one chunk of the largest size a
/// reader accepts, with its header (13 bytes) and room to spare.
pub const PAGE_BYTES: usize = MAX_CHUNK_BODY + 1024;
/// The most recordings one listing returns (newest first).
pub const MAX_LISTED: usize = 1000;
/// The longest header a recording may have (fixed part and metadata).
const HEADER_BYTES: usize = 64 + MAX_META_LEN;

/// The recordings routes.
pub(crate) fn routes() -> Router<Arc<WebRoom>> {
    Router::new()
        .route("/web/api/recordings", get(list))
        .route("/web/api/recordings/{id}", get(meta))
        .route("/web/api/recordings/{id}/events", get(events))
}

/// One recording as the list and the player show it.
#[derive(Serialize)]
struct RecordingView {
    id: String,
    user: String,
    login: String,
    server: String,
    start: String,
    end: String,
    duration_ms: u64,
    events: u64,
    size: u64,
    exit_status: Option<i32>,
}

fn view(e: &RecordingIndexEntry) -> RecordingView {
    let at = |us: u64| rfc3339(UNIX_EPOCH + Duration::from_micros(us));
    RecordingView {
        id: e.session_id.clone(),
        user: e.user.clone(),
        login: e.login.clone(),
        server: e.server_name.clone(),
        start: at(e.start_unix_us),
        end: at(e.end_unix_us),
        duration_ms: e.end_unix_us.saturating_sub(e.start_unix_us) / 1000,
        events: e.events,
        size: e.size,
        exit_status: e.exit_status,
    }
}

fn no_store(body: impl Serialize) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
}

fn internal(e: impl std::fmt::Display) -> WebRefusal {
    tracing::warn!(error = %e, "web recordings");
    answer(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "reading recordings failed".into(),
    )
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, WebRefusal> + Send + 'static,
) -> Result<T, WebRefusal> {
    tokio::task::spawn_blocking(f).await.map_err(internal)?
}

/// `GET /web/api/recordings`: the recordings this user may list, newest first.
async fn list(State(room): State<Arc<WebRoom>>, req: WebRequest) -> Result<Response, WebRefusal> {
    let c = room.guard(&req, Renew::Yes)?;
    room.rbac(&c, recording_scope(c.admitted.checker(), "list").map(drop))?;
    let store = room.records()?.recordings.clone();
    let (auth, checker) = (room.auth.clone(), c.admitted.checker().clone());
    let identity = c.session.cert.identity.clone();
    let mut visible = blocking(move || {
        let all = store.list().map_err(internal)?;
        auth.visible_recordings(&checker, &identity, "list", all)
            .map_err(internal)
    })
    .await?;
    visible.sort_by_key(|e| std::cmp::Reverse(e.start_unix_us));
    visible.truncate(MAX_LISTED);
    let views: Vec<RecordingView> = visible.iter().map(view).collect();
    Ok(no_store(serde_json::json!({ "recordings": views })))
}

/// The recording `id` once the caller may read it: who may read no recording at all is refused
/// before learning whether it exists.
async fn readable(
    room: &WebRoom,
    c: &WebCaller,
    id: &str,
) -> Result<RecordingIndexEntry, WebRefusal> {
    room.rbac(c, recording_scope(c.admitted.checker(), "read").map(drop))?;
    if !is_valid_session_id(id) {
        return Err(answer(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "not a session id".into(),
        ));
    }
    let store = room.records()?.recordings.clone();
    let lookup = id.to_owned();
    let entry = blocking(move || match store.entry(&lookup) {
        Ok(e) => Ok(e),
        Err(RecordingStoreError::NotFound { .. }) => Err(answer(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no recording {lookup}"),
        )),
        Err(e) => Err(internal(e)),
    })
    .await?;
    let (auth, checker) = (room.auth.clone(), c.admitted.checker().clone());
    let identity = c.session.cert.identity.clone();
    let decided = entry.clone();
    let answer = tokio::task::spawn_blocking(move || {
        auth.check_recording(&checker, &identity, "read", &decided)
    })
    .await
    .map_err(internal)?;
    room.rbac(c, answer)?;
    Ok(entry)
}

#[derive(Serialize)]
struct MetaView {
    #[serde(flatten)]
    recording: RecordingView,
    cols: u16,
    rows: u16,
    /// Where the first events page starts (the header's length).
    first: u64,
}

/// `GET /web/api/recordings/{id}`: the recording's metadata and terminal size. Audited.
async fn meta(
    State(room): State<Arc<WebRoom>>,
    Path(id): Path<String>,
    req: WebRequest,
) -> Result<Response, WebRefusal> {
    let c = room.guard(&req, Renew::Yes)?;
    let entry = readable(&room, &c, &id).await?;
    let store = room.records()?.recordings.clone();
    let header = blocking(move || {
        let bytes = store.read_range(&id, 0, HEADER_BYTES).map_err(internal)?;
        match parse_header(&bytes) {
            Ok(Some((h, len))) => Ok((h.meta, len as u64)),
            Ok(None) => Err(internal("the recording's header is cut short")),
            Err(e) => Err(internal(e)),
        }
    })
    .await?;
    let (meta, first) = header;
    let ev = room
        .auth
        .event(
            EventKind::SessionRecordingAccess,
            &c.session.cert.identity.username,
        )
        .field("session_id", entry.session_id.clone())
        .field("owner", entry.user.clone())
        .field("client", "web");
    room.auth.emit(ev.remote(Some(c.remote)));
    Ok(no_store(MetaView {
        recording: view(&entry),
        cols: meta.cols,
        rows: meta.rows,
        first,
    }))
}

/// One event as the player replays it: `t` milliseconds after the start; `o` output (base64),
/// `r` a resize, `e` the end.
#[derive(Serialize)]
struct EventView {
    t: f64,
    k: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    d: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cols: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rows: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_status: Option<i32>,
}

fn event_view(at: Duration, event: Event<'_>) -> Option<EventView> {
    let mut v = EventView {
        t: at.as_micros() as f64 / 1000.0,
        k: "o",
        d: None,
        cols: None,
        rows: None,
        exit_status: None,
    };
    match event {
        Event::Output(bytes) => {
            v.d = Some(base64::engine::general_purpose::STANDARD.encode(bytes));
        }
        Event::Resize { cols, rows } => {
            v.k = "r";
            (v.cols, v.rows) = (Some(cols), Some(rows));
        }
        Event::End { exit_status } => {
            v.k = "e";
            v.exit_status = exit_status;
        }
        Event::Input(_) | Event::Json(_) => return None,
    }
    Some(v)
}

/// The events of the whole chunks at the start of `bytes`, and how many bytes they took.
fn decode_page(bytes: &[u8]) -> Result<(Vec<EventView>, usize), String> {
    let mut out = Vec::new();
    let mut used = 0;
    while let Some(rest) = bytes.get(used..).filter(|r| !r.is_empty()) {
        match parse_chunk(rest) {
            Ok(Some((chunk, len))) => {
                out.extend(chunk.events().filter_map(|e| event_view(e.at, e.event)));
                used += len;
            }
            Ok(None) => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok((out, used))
}

/// `GET /web/api/recordings/{id}/events?from=OFFSET`: the events of the whole chunks from
/// byte `OFFSET` (the metadata's `first` for the first page), and where the next page starts.
async fn events(
    State(room): State<Arc<WebRoom>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    req: WebRequest,
) -> Result<Response, WebRefusal> {
    let c = room.guard(&req, Renew::Yes)?;
    let entry = readable(&room, &c, &id).await?;
    let from = query_pairs(raw.as_deref(), &["from"])?
        .get("from")
        .and_then(|f| f.parse::<u64>().ok())
        .ok_or_else(|| {
            answer(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "from: the byte offset to read from is missing or not a number".into(),
            )
        })?;
    if from >= entry.size {
        return Ok(no_store(
            serde_json::json!({ "events": [], "next": entry.size, "done": true }),
        ));
    }
    let store = room.records()?.recordings.clone();
    let (events, used) = blocking(move || {
        let bytes = store.read_range(&id, from, PAGE_BYTES).map_err(internal)?;
        decode_page(&bytes).map_err(|reason| {
            answer(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("no whole chunk at offset {from}: {reason}"),
            )
        })
    })
    .await?;
    if used == 0 {
        return Err(answer(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("no whole chunk at offset {from}"),
        ));
    }
    let next = from + used as u64;
    Ok(no_store(serde_json::json!({
        "events": events,
        "next": next,
        "done": next >= entry.size,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hop_storage::recording::{KIND_SSH, RecordingMeta, RecordingWriter};

    #[test]
    fn a_page_holds_whole_chunks_and_no_input() {
        let mut w = RecordingWriter::new(RecordingMeta {
            session_id: "ab".into(),
            kind: KIND_SSH.into(),
            cluster: "c".into(),
            user: "u".into(),
            login: "l".into(),
            server_id: "s".into(),
            server_name: "n".into(),
            start_unix_us: 0,
            cols: 80,
            rows: 24,
            term: "xterm".into(),
        })
        .unwrap();
        let mut body = Vec::new();
        body.extend(
            w.push_output(Duration::from_millis(5), b"hi")
                .unwrap_or_default(),
        );
        body.extend(
            w.push_input(Duration::from_millis(6), b"secret")
                .unwrap_or_default(),
        );
        body.extend(w.flush_chunk().unwrap_or_default());
        body.extend(w.finish(Duration::from_millis(9), Some(0)));
        let (events, used) = decode_page(&body).unwrap();
        assert_eq!(used, body.len());
        let kinds: Vec<_> = events.iter().map(|e| e.k).collect();
        assert_eq!(kinds, ["o", "e"]);
        assert_eq!(events[0].d.as_deref(), Some("aGk="));
        assert!((events[0].t - 5.0).abs() < f64::EPSILON);
        // Every prefix decodes to whole chunks only, never an error.
        for cut in 0..body.len() {
            let (_, used) = decode_page(&body[..cut]).unwrap();
            assert!(used <= cut);
        }
        let mut bad = body.clone();
        bad[3] ^= 0xff;
        assert!(decode_page(&bad).is_err());
    }
}
