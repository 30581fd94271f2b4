//! Filtering Kubernetes listings the user may see only part of. This module owns what is cut out
//! of a `list` or `watch` response before kubectl sees it: the items of a JSON `List`
//! (`items[]`), the rows of a `Table` (`rows[].object.metadata`, which the API server includes
//! by default, `includeObject=Metadata`), and the events of a watch stream (newline-delimited
//! JSON, each filtered as it arrives, Table events row by row). It decides nothing itself: a
//! [`Visibility`] (the role check) says which item may be shown.
//!
//! Fails closed: anything it cannot read (protobuf, YAML, a body that is not JSON, a Table row
//! without metadata, an item without a name, a listing over [`MAX_FILTER_BODY`] bytes) is a
//! [`FilterError`], never passed through. A `Status` (the API server's error answer) passes as
//! it is: it lists nothing. The listings held at once (and the unfinished events of filtered
//! watches) share one process-wide [`ListingBudget`] ([`LISTING_BUDGET`] bytes): a listing that
//! would take more is refused ([`FilterError::OverBudget`], answered 503 with `Retry-After`), a
//! watch ended with that error; never passed through.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use serde_json::Value;

/// The most bytes of a listing (or of one watch event) held to filter it.
pub const MAX_FILTER_BODY: usize = 64 << 20;

/// The most bytes all listings held to be filtered may take together, in this process.
pub const LISTING_BUDGET: usize = 256 << 20;

/// The bytes the listings being filtered may hold together (a semaphore of bytes, shared by
/// every connection of the route). A listing takes its bytes as they arrive and gives them
/// back when it is answered or dropped.
#[derive(Clone)]
pub struct ListingBudget {
    bytes: Arc<Semaphore>,
    total: usize,
}

impl ListingBudget {
    /// A budget of `total` bytes (at most `u32::MAX`, the most a permit can take at once).
    #[must_use]
    pub fn new(total: usize) -> Self {
        let total = total.min(u32::MAX as usize);
        Self {
            bytes: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// The bytes not held now.
    #[must_use]
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }

    /// Holds `n` bytes of the budget until the permit is dropped (tests: a budget in use).
    #[cfg(test)]
    pub(crate) fn hold(&self, n: usize) -> OwnedSemaphorePermit {
        let mut held = None;
        self.take(&mut held, n).expect("the budget has the bytes");
        held.expect("more than no bytes")
    }

    /// Takes `n` more bytes into `held`, or refuses at once when the budget has not enough.
    fn take(&self, held: &mut Option<OwnedSemaphorePermit>, n: usize) -> Result<(), FilterError> {
        if n == 0 {
            return Ok(());
        }
        let over = || FilterError::OverBudget { budget: self.total };
        let n = u32::try_from(n).map_err(|_| over())?;
        let permit = self
            .bytes
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| over())?;
        match held {
            Some(h) => h.merge(permit),
            None => *held = Some(permit),
        }
        Ok(())
    }
}

impl Default for ListingBudget {
    fn default() -> Self {
        Self::new(LISTING_BUDGET)
    }
}

/// One item of a listing, as the role check sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeItemRef {
    /// `None` for a cluster-scoped item.
    pub namespace: Option<String>,
    pub name: String,
}

/// Whether an item may be shown.
pub type Visibility = Arc<dyn Fn(&KubeItemRef) -> bool + Send + Sync>;

/// Why a listing cannot be filtered (so it must be refused, never passed through).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("the response has no content type, so its items cannot be filtered")]
    NoContentType,
    #[error(
        "the response is {0:?}, which cannot be filtered (only JSON can; ask for application/json)"
    )]
    ContentType(String),
    #[error("the listing is over {limit} bytes, the most that is held to filter it", limit = MAX_FILTER_BODY)]
    TooLarge,
    /// The listings being filtered in this proxy hold the whole budget now: try again.
    #[error(
        "the proxy is filtering too many listings at once (over {budget} bytes held together); try again shortly, or list a narrower set (a namespace, a label selector, --chunk-size)"
    )]
    OverBudget { budget: usize },
    #[error(
        "the listing is gzip-compressed; a listing to filter must be asked for without Accept-Encoding"
    )]
    Compressed,
    #[error("the listing is not valid JSON: {0}")]
    NotJson(String),
    #[error("the response is neither a List, a Table nor a Status (kind {0:?})")]
    NotAList(String),
    #[error("a Table row carries no object metadata (do not ask for includeObject=None)")]
    RowWithoutMetadata,
    #[error("a listed item has no metadata.name")]
    ItemWithoutName,
    #[error("a watch event of type {0:?} cannot be filtered")]
    WatchEvent(String),
    #[error("the watch stream ended inside an event")]
    TruncatedEvent,
    #[error("reading the response: {0}")]
    Body(String),
}

/// Filters a response body: a List or Table is read whole (at most [`MAX_FILTER_BODY`] bytes)
/// and answered filtered; a watch stream is filtered event by event, without waiting for more.
/// The content type is checked now; a body that turns out unreadable ends the response with an
/// error instead of its bytes. (To refuse such a List with a clean answer, use
/// [`filter_list_body`] before sending the response head.)
pub fn filter_body(
    body: hyper::body::Incoming,
    content_type: Option<&str>,
    watch: bool,
    visible: Visibility,
    budget: &ListingBudget,
) -> Result<BoxBody<Bytes, std::io::Error>, FilterError> {
    filter_with(body, content_type, watch, visible, Some(budget.clone()))
}

/// [`filter_body`] for any body, outside any budget (tests, other transports).
pub fn filter_any<B>(
    body: B,
    content_type: Option<&str>,
    watch: bool,
    visible: Visibility,
) -> Result<BoxBody<Bytes, std::io::Error>, FilterError>
where
    B: Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: std::fmt::Display,
{
    filter_with(body, content_type, watch, visible, None)
}

fn filter_with<B>(
    body: B,
    content_type: Option<&str>,
    watch: bool,
    visible: Visibility,
    budget: Option<ListingBudget>,
) -> Result<BoxBody<Bytes, std::io::Error>, FilterError>
where
    B: Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: std::fmt::Display,
{
    check_content_type(content_type)?;
    if body.size_hint().lower() > MAX_FILTER_BODY as u64 && !watch {
        return Err(FilterError::TooLarge);
    }
    let how = if watch {
        let mut w = WatchFilter::new(visible);
        w.budget = budget;
        How::Watch(w)
    } else {
        How::List {
            whole: Vec::new(),
            visible,
        }
    };
    let filtered = Filtered {
        body,
        how,
        done: false,
    };
    Ok(BodyExt::boxed(filtered))
}

/// Refuses what is not JSON: protobuf, YAML, CBOR, or no content type at all.
pub fn check_content_type(content_type: Option<&str>) -> Result<(), FilterError> {
    let Some(ct) = content_type else {
        return Err(FilterError::NoContentType);
    };
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(FilterError::ContentType(ct.chars().take(80).collect()))
    }
}

/// Reads a List or Table whole (bounded by [`MAX_FILTER_BODY`] and by `budget`, which its
/// bytes are taken from as they arrive) and answers it filtered.
pub async fn filter_list_body<B>(
    mut body: B,
    visible: &Visibility,
    budget: &ListingBudget,
) -> Result<Bytes, FilterError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    if body.size_hint().lower() > MAX_FILTER_BODY as u64 {
        return Err(FilterError::TooLarge);
    }
    let mut held = None;
    let mut whole = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| FilterError::Body(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if whole.len() + data.len() > MAX_FILTER_BODY {
                return Err(FilterError::TooLarge);
            }
            budget.take(&mut held, data.len())?;
            whole.extend_from_slice(&data);
        }
    }
    // The budget is held until the filtered answer is made (it is about as large).
    let filtered = filter_list(&whole, visible).map(Bytes::from);
    drop(held);
    filtered
}

/// Filters one List or Table held whole.
pub fn filter_list(json: &[u8], visible: &Visibility) -> Result<Vec<u8>, FilterError> {
    refuse_compressed(json)?;
    let mut v: Value =
        serde_json::from_slice(json).map_err(|e| FilterError::NotJson(e.to_string()))?;
    let kind = v
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if kind == "Status" {
        return Ok(json.to_vec());
    }
    if kind == "Table" {
        filter_rows(&mut v, visible)?;
    } else if let Some(items) = v.get_mut("items").and_then(Value::as_array_mut) {
        filter_items(items, visible)?;
    } else {
        return Err(FilterError::NotAList(kind.chars().take(64).collect()));
    }
    serde_json::to_vec(&v).map_err(|e| FilterError::NotJson(e.to_string()))
}

fn filter_items(items: &mut Vec<Value>, visible: &Visibility) -> Result<(), FilterError> {
    let mut keep = Vec::with_capacity(items.len());
    for item in items.iter() {
        keep.push(visible(&item_ref(item.get("metadata"))?));
    }
    let mut flags = keep.into_iter();
    items.retain(|_| flags.next().unwrap_or(false));
    Ok(())
}

/// Keeps the rows of a Table whose object may be shown; answers how many are left.
fn filter_rows(table: &mut Value, visible: &Visibility) -> Result<usize, FilterError> {
    let Some(rows) = table.get_mut("rows").and_then(Value::as_array_mut) else {
        // A Table with no rows (`rows` absent or null) shows nothing.
        return Ok(0);
    };
    let mut keep = Vec::with_capacity(rows.len());
    for row in rows.iter() {
        let meta = row.get("object").and_then(|o| o.get("metadata"));
        if meta.is_none() {
            return Err(FilterError::RowWithoutMetadata);
        }
        keep.push(visible(&item_ref(meta)?));
    }
    let mut flags = keep.into_iter();
    rows.retain(|_| flags.next().unwrap_or(false));
    Ok(rows.len())
}

/// The API server gzips large answers when the client accepts it: such bytes are not JSON.
fn refuse_compressed(bytes: &[u8]) -> Result<(), FilterError> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        Err(FilterError::Compressed)
    } else {
        Ok(())
    }
}

fn item_ref(metadata: Option<&Value>) -> Result<KubeItemRef, FilterError> {
    let meta = metadata.ok_or(FilterError::ItemWithoutName)?;
    let name = meta
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or(FilterError::ItemWithoutName)?;
    let namespace = meta
        .get("namespace")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    Ok(KubeItemRef {
        namespace,
        name: name.to_owned(),
    })
}

/// Filters a watch stream as its bytes arrive (sans-IO): whole events out, each on its line.
/// Each byte is scanned once: [`EventScan`] remembers where the last push stopped, and an event
/// is parsed only once it is complete.
pub struct WatchFilter {
    buf: Vec<u8>,
    scan: EventScan,
    visible: Visibility,
    /// The shared budget the held part of an event is taken from (none: unbudgeted).
    budget: Option<ListingBudget>,
    held: Option<OwnedSemaphorePermit>,
}

/// Where the scan of a watch stream's held bytes stopped, and what it was inside of there.
#[derive(Debug, Default, Clone, Copy)]
struct EventScan {
    /// Bytes of the held buffer already scanned.
    pos: usize,
    /// How many objects and arrays are open (0: between events).
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl EventScan {
    /// Scans `buf` from where it stopped; answers the end of the next whole event, if one
    /// completes. Between events only whitespace and `{` may come.
    fn next_end(&mut self, buf: &[u8]) -> Result<Option<usize>, FilterError> {
        while let Some(&b) = buf.get(self.pos) {
            self.pos += 1;
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'{' | b'[' if self.depth > 0 || b == b'{' => self.depth += 1,
                b'}' | b']' if self.depth > 0 => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        return Ok(Some(self.pos));
                    }
                }
                b'"' if self.depth > 0 => self.in_string = true,
                _ if self.depth > 0 || b.is_ascii_whitespace() => {}
                _ => {
                    return Err(FilterError::NotJson(
                        "a watch event is not a JSON object".into(),
                    ));
                }
            }
        }
        Ok(None)
    }
}

impl WatchFilter {
    #[must_use]
    pub fn new(visible: Visibility) -> Self {
        Self {
            buf: Vec::new(),
            scan: EventScan::default(),
            visible,
            budget: None,
            held: None,
        }
    }

    /// A filter whose held bytes (the part of an event not yet complete) are taken from
    /// `budget`; over it, [`Self::push`] refuses.
    #[must_use]
    pub fn with_budget(visible: Visibility, budget: ListingBudget) -> Self {
        let mut f = Self::new(visible);
        f.budget = Some(budget);
        f
    }

    /// Holds exactly as many bytes of the budget as the buffer holds now.
    fn hold_buffered(&mut self) -> Result<(), FilterError> {
        let Some(budget) = &self.budget else {
            return Ok(());
        };
        let have = self
            .held
            .as_ref()
            .map_or(0, OwnedSemaphorePermit::num_permits);
        let want = self.buf.len();
        if want > have {
            budget.take(&mut self.held, want - have)?;
        } else if let Some(held) = self.held.as_mut() {
            drop(held.split(have - want));
        }
        Ok(())
    }

    /// Takes the next bytes; answers the visible events they complete (possibly none).
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<u8>, FilterError> {
        if self.buf.is_empty() {
            refuse_compressed(bytes)?;
        }
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut consumed = 0;
        while let Some(end) = self.scan.next_end(&self.buf)? {
            let raw = self.buf.get(consumed..end).unwrap_or_default();
            if let Some(kept) = filter_event(raw, &self.visible)? {
                out.extend_from_slice(&kept);
                out.push(b'\n');
            }
            consumed = end;
        }
        self.buf.drain(..consumed);
        self.scan.pos -= consumed;
        if self.buf.len() > MAX_FILTER_BODY {
            return Err(FilterError::TooLarge);
        }
        self.hold_buffered()?;
        Ok(out)
    }

    /// The stream ended: an event cut short is an error.
    pub fn finish(&self) -> Result<(), FilterError> {
        if self.buf.iter().all(u8::is_ascii_whitespace) {
            Ok(())
        } else {
            Err(FilterError::TruncatedEvent)
        }
    }
}

/// One watch event: kept as it is, rewritten (a Table with rows cut), or dropped.
fn filter_event(raw: &[u8], visible: &Visibility) -> Result<Option<Vec<u8>>, FilterError> {
    let mut event: Value =
        serde_json::from_slice(raw).map_err(|e| FilterError::NotJson(e.to_string()))?;
    let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        // A bookmark carries only a resourceVersion; an error carries a Status.
        "BOOKMARK" | "ERROR" => return Ok(Some(raw.trim_ascii().to_vec())),
        "ADDED" | "MODIFIED" | "DELETED" => {}
        other => return Err(FilterError::WatchEvent(other.chars().take(32).collect())),
    }
    let Some(object) = event.get_mut("object") else {
        return Err(FilterError::ItemWithoutName);
    };
    if object.get("kind").and_then(Value::as_str) == Some("Table") {
        if filter_rows(object, visible)? == 0 {
            return Ok(None);
        }
        return serde_json::to_vec(&event)
            .map(Some)
            .map_err(|e| FilterError::NotJson(e.to_string()));
    }
    if visible(&item_ref(object.get("metadata"))?) {
        Ok(Some(raw.trim_ascii().to_vec()))
    } else {
        Ok(None)
    }
}

/// A response body filtered as it is read: a watch event by event, a listing whole at its end.
struct Filtered<B> {
    body: B,
    how: How,
    done: bool,
}

enum How {
    Watch(WatchFilter),
    List { whole: Vec<u8>, visible: Visibility },
}

impl<B> Filtered<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    /// Takes one frame of the inner body (`None`: it ended); answers what to send, if anything.
    fn step(
        &mut self,
        frame: Option<Result<Frame<Bytes>, B::Error>>,
    ) -> Result<Option<Bytes>, FilterError> {
        let data = match frame {
            Some(Err(e)) => return Err(FilterError::Body(e.to_string())),
            Some(Ok(frame)) => frame.into_data().ok(),
            None => {
                self.done = true;
                return match &mut self.how {
                    How::Watch(w) => w.finish().map(|()| None),
                    How::List { whole, visible } => {
                        filter_list(whole, visible).map(|v| Some(Bytes::from(v)))
                    }
                };
            }
        };
        let Some(data) = data else { return Ok(None) };
        match &mut self.how {
            How::Watch(w) => w.push(&data).map(|v| Some(Bytes::from(v))),
            How::List { whole, .. } => {
                if whole.len() + data.len() > MAX_FILTER_BODY {
                    return Err(FilterError::TooLarge);
                }
                whole.extend_from_slice(&data);
                Ok(None)
            }
        }
    }
}

impl<B> Body for Filtered<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        use std::task::Poll;
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            let frame = match std::pin::Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(frame) => frame,
            };
            match self.step(frame) {
                Ok(Some(out)) if !out.is_empty() => return Poll::Ready(Some(Ok(Frame::data(out)))),
                Ok(_) => {}
                Err(e) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(std::io::Error::other(e))));
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "filter_tests.rs"]
mod tests;
