//! A Kubernetes API request as the API server's authorizer sees it.
//!
//! This module owns [`parse`]: from an HTTP method and a request target (`/api/v1/namespaces/
//! default/pods?watch=1`) to a [`KubeRequest`] (verb, API group and version, resource,
//! subresource, namespace, name), following the API server's own request-info rules:
//!
//! - `/api/V/…` is the core group (`""`), `/apis/G/V/…` group `G`; shorter paths (`/api`,
//!   `/api/v1`, `/apis/apps`), and everything outside `/api` and `/apis` (`/version`,
//!   `/openapi/v2`, `/healthz`), are non-resource requests;
//! - `namespaces/NS/RESOURCE/…` scopes a resource to a namespace; `namespaces/NS` alone (with
//!   `status` or `finalize`) is the cluster-scoped Namespace object `NS` (namespace `None`);
//! - `GET` of a collection is `list`, or `watch` with `?watch=true|1` or the legacy
//!   `/watch/` prefix; `DELETE` of a collection is `deletecollection`; a collection read with
//!   `fieldSelector=metadata.name=N` names `N`, as the API server's authorizer does;
//! - `exec`, `attach` and `portforward` are `create` whatever the method (kubectl ≥ 1.30 opens
//!   them with a WebSocket `GET`, older ones with a SPDY `POST`).
//!
//! Each path segment is percent-decoded and must then be UTF-8 with no `/`, no control
//! character (NUL included), not `.` or `..`, at most [`MAX_SEGMENT_LEN`] bytes; the whole
//! target is at most [`MAX_TARGET_LEN`] bytes. Anything else is a [`KubeRequestError`] that
//! names what was wrong; nothing here panics, allocates beyond the input's size or does IO.

use crate::web_headers::{QueryError, query_pairs};

/// Longest request target (path and query) accepted, in bytes. Exec commands travel in the
/// query, so this is generous.
pub const MAX_TARGET_LEN: usize = 32 * 1024;
/// Longest path segment accepted after decoding, in bytes (a Kubernetes object name is at most
/// 253 characters).
pub const MAX_SEGMENT_LEN: usize = 253;
/// Most path segments accepted.
pub const MAX_SEGMENTS: usize = 64;
/// Longest namespace name (a DNS label).
pub const MAX_NAMESPACE_LEN: usize = 63;

/// What a request does, in the Kubernetes authorizer's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KubeVerb {
    /// Read one object (`GET`/`HEAD` with a name), or a non-resource `GET`.
    Get,
    /// Read a collection.
    List,
    /// Stream changes to a collection (or one object).
    Watch,
    /// `POST`, and every exec, attach or port-forward.
    Create,
    /// `PUT`.
    Update,
    /// `PATCH`.
    Patch,
    /// `DELETE` of one object.
    Delete,
    /// `DELETE` of a collection.
    DeleteCollection,
}

impl KubeVerb {
    /// The verb as Kubernetes RBAC and Hop roles spell it: `get`, `list`, `watch`, `create`,
    /// `update`, `patch`, `delete`, `deletecollection`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::List => "list",
            Self::Watch => "watch",
            Self::Create => "create",
            Self::Update => "update",
            Self::Patch => "patch",
            Self::Delete => "delete",
            Self::DeleteCollection => "deletecollection",
        }
    }
}

impl std::fmt::Display for KubeVerb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One API request, decided on before the API server sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeRequest {
    /// What the request does.
    pub verb: KubeVerb,
    /// `""` for the core group (`/api/v1`) and for non-resource requests.
    pub api_group: String,
    /// `v1`, `v1beta1`, …; `""` for non-resource requests.
    pub api_version: String,
    /// The plural resource (`pods`); `None` for a non-resource request (`/version`, `/api`,
    /// `/apis/…` discovery, `/openapi/…`, `/healthz`).
    pub resource: Option<String>,
    /// `exec`, `attach`, `portforward`, `log`, `status`, `scale`, `proxy`, …
    pub subresource: Option<String>,
    /// The namespace of a namespaced request; `None` for cluster-scoped ones (including the
    /// Namespace object itself) and for collections across all namespaces.
    pub namespace: Option<String>,
    /// The object's name; `None` for a collection (unless its `fieldSelector` names one).
    pub name: Option<String>,
}

impl KubeRequest {
    /// Whether the request is about an API resource (not discovery, `/version` and the like).
    #[must_use]
    pub fn is_resource(&self) -> bool {
        self.resource.is_some()
    }

    /// The verb as Hop roles' `kubernetes_resources` name it (Teleport's): `exec` for exec and
    /// attach, `portforward` for port-forward, otherwise [`KubeVerb::as_str`].
    #[must_use]
    pub fn rbac_verb(&self) -> &'static str {
        match (self.resource.as_deref(), self.subresource.as_deref()) {
            (Some("pods"), Some("exec" | "attach")) => "exec",
            (Some("pods"), Some("portforward")) => "portforward",
            _ => self.verb.as_str(),
        }
    }

    /// Whether the request opens a stream (exec, attach, port-forward): an HTTP upgrade.
    #[must_use]
    pub fn is_connect(&self) -> bool {
        matches!(
            self.subresource.as_deref(),
            Some("exec" | "attach" | "portforward")
        ) && self.resource.as_deref() == Some("pods")
    }
}

/// Why a request target is not one Hop will forward. Always the client's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubeRequestError {
    /// A method the Kubernetes API does not take (`CONNECT`, `TRACE`, `OPTIONS`, …).
    #[error("HTTP method {0:?} is not a Kubernetes API method")]
    UnsupportedMethod(String),
    /// The target does not start with `/`.
    #[error("request target must be a path starting with `/`")]
    NotAbsolutePath,
    /// The target is over [`MAX_TARGET_LEN`].
    #[error("request target is {len} bytes, over the limit of {MAX_TARGET_LEN}")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// The path has more than [`MAX_SEGMENTS`] segments.
    #[error("request path has more than {MAX_SEGMENTS} segments")]
    TooManySegments,
    /// A path segment is refused; `index` counts from 0 after the leading `/`.
    #[error("path segment {index}: {reason}")]
    BadSegment {
        /// Which segment.
        index: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A decoded path segment is over [`MAX_SEGMENT_LEN`] bytes.
    #[error("path segment {index} is {len} bytes, over the limit of {MAX_SEGMENT_LEN}")]
    SegmentTooLong {
        /// Which segment.
        index: usize,
        /// Its decoded length.
        len: usize,
    },
    /// A segment that names something (a group, version, resource, namespace) is not spelled
    /// as that thing must be.
    #[error("{what} {value:?} is not valid: {reason}")]
    BadName {
        /// `API group`, `API version`, `resource`, `subresource` or `namespace`.
        what: &'static str,
        /// The decoded value (at most [`MAX_SEGMENT_LEN`] bytes).
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// The path is a shape the Kubernetes API does not have.
    #[error("unexpected request path: {0}")]
    BadShape(&'static str),
    /// The query string does not decode.
    #[error("{0}")]
    Query(#[from] QueryError),
    /// A query parameter Hop decides on has a value it cannot read, or appears twice.
    #[error("query parameter {name:?}: {reason}")]
    BadQuery {
        /// The parameter.
        name: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

/// The method, classified; `HEAD` reads like `GET`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    fn parse(method: &str) -> Result<Self, KubeRequestError> {
        Ok(match method {
            "GET" | "HEAD" => Self::Get,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "PATCH" => Self::Patch,
            "DELETE" => Self::Delete,
            other => {
                let shown: String = other.chars().take(16).collect();
                return Err(KubeRequestError::UnsupportedMethod(shown));
            }
        })
    }

    /// The verb of a request on one object or a non-resource path.
    fn single_verb(self) -> KubeVerb {
        match self {
            Self::Get => KubeVerb::Get,
            Self::Post => KubeVerb::Create,
            Self::Put => KubeVerb::Update,
            Self::Patch => KubeVerb::Patch,
            Self::Delete => KubeVerb::Delete,
        }
    }
}

/// Parses `method` (as sent, upper case) and `path_and_query` (the request target, still
/// percent-encoded) into what the request does. See the module documentation for the rules.
pub fn parse(method: &str, path_and_query: &str) -> Result<KubeRequest, KubeRequestError> {
    let method = Method::parse(method)?;
    if path_and_query.len() > MAX_TARGET_LEN {
        return Err(KubeRequestError::TooLong {
            len: path_and_query.len(),
        });
    }
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let segments = decode_path(path)?;
    let query = Query::parse(query)?;
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    match segs.as_slice() {
        ["api", version, rest @ ..] if !rest.is_empty() => {
            check_token("API version", version)?;
            resource_request(method, "", version, rest, &query)
        }
        ["apis", group, version, rest @ ..] if !rest.is_empty() => {
            check_token("API group", group)?;
            check_token("API version", version)?;
            resource_request(method, group, version, rest, &query)
        }
        _ => Ok(non_resource(method)),
    }
}

fn non_resource(method: Method) -> KubeRequest {
    KubeRequest {
        verb: method.single_verb(),
        api_group: String::new(),
        api_version: String::new(),
        resource: None,
        subresource: None,
        namespace: None,
        name: None,
    }
}

/// Subresources of a Namespace object: `namespaces/NS/status` is not a resource `status` in
/// namespace `NS`.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

/// The parts after `/api/V` or `/apis/G/V`.
fn resource_request(
    method: Method,
    group: &str,
    version: &str,
    rest: &[&str],
    query: &Query,
) -> Result<KubeRequest, KubeRequestError> {
    let (watch_prefix, rest) = match rest {
        ["watch"] => {
            return Err(KubeRequestError::BadShape(
                "`watch` with no resource after it",
            ));
        }
        ["watch", tail @ ..] => (true, tail),
        ["proxy", _, ..] => {
            return Err(KubeRequestError::BadShape(
                "the legacy `/proxy/` prefix is not supported (use the `proxy` subresource)",
            ));
        }
        _ => (false, rest),
    };
    if watch_prefix && method != Method::Get {
        return Err(KubeRequestError::BadShape(
            "a `/watch/` path takes GET only",
        ));
    }
    let (namespace, rest) = match rest {
        ["namespaces", ns, next, tail @ ..] if !NAMESPACE_SUBRESOURCES.contains(next) => {
            check_namespace(ns)?;
            (Some(*ns), {
                let mut v = vec![*next];
                v.extend_from_slice(tail);
                v
            })
        }
        _ => (None, rest.to_vec()),
    };
    let (resource, name, subresource) = match rest.as_slice() {
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some(*name), None),
        [resource, name, sub] => (*resource, Some(*name), Some(*sub)),
        [resource, name, "proxy", ..] => (*resource, Some(*name), Some("proxy")),
        _ => {
            return Err(KubeRequestError::BadShape(
                "segments after the subresource (only `proxy` takes a path)",
            ));
        }
    };
    check_token("resource", resource)?;
    if let Some(sub) = subresource {
        check_token("subresource", sub)?;
    }
    if let (Some(ns), "namespaces") = (name, resource) {
        check_namespace(ns)?;
    }
    let mut request = KubeRequest {
        verb: KubeVerb::Get,
        api_group: group.to_owned(),
        api_version: version.to_owned(),
        resource: Some(resource.to_owned()),
        subresource: subresource.map(str::to_owned),
        namespace: namespace.map(str::to_owned),
        name: name.map(str::to_owned),
    };
    request.verb = verb(method, watch_prefix, &request, query);
    if matches!(request.verb, KubeVerb::List | KubeVerb::Watch) && request.name.is_none() {
        request.name.clone_from(&query.selected_name);
    }
    Ok(request)
}

fn verb(method: Method, watch_prefix: bool, request: &KubeRequest, query: &Query) -> KubeVerb {
    if request.is_connect() {
        return KubeVerb::Create;
    }
    if watch_prefix {
        return KubeVerb::Watch;
    }
    let collection = request.name.is_none();
    match method {
        Method::Get if collection && query.watch => KubeVerb::Watch,
        Method::Get if collection => KubeVerb::List,
        Method::Delete if collection => KubeVerb::DeleteCollection,
        other => other.single_verb(),
    }
}

/// The query parameters the decision depends on.
#[derive(Debug, Default)]
struct Query {
    /// `watch=true|1` (see [`parse_bool`]).
    watch: bool,
    /// `fieldSelector` that requires `metadata.name` to equal one value.
    selected_name: Option<String>,
}

impl Query {
    fn parse(query: &str) -> Result<Self, KubeRequestError> {
        // Go's `URL.Query` (the API server's) drops a pair holding a raw `;`: Hop would read a
        // query the API server does not, so such a query is refused whole.
        if query.contains(';') {
            return Err(KubeRequestError::BadQuery {
                name: "query",
                reason: "a raw `;` (the API server would drop the pair; escape it as %3B)",
            });
        }
        let mut out = Self::default();
        let mut seen: Vec<&'static str> = Vec::new();
        for (name, value) in query_pairs(query)? {
            let Some(&name) = SINGLE_VALUED.iter().find(|n| **n == name) else {
                continue;
            };
            if seen.contains(&name) {
                return Err(KubeRequestError::BadQuery {
                    name,
                    reason: "given more than once",
                });
            }
            seen.push(name);
            match name {
                "fieldSelector" => out.selected_name = selected_name(&value)?,
                "container" => {}
                boolean => {
                    let value = parse_bool(&value).ok_or(KubeRequestError::BadQuery {
                        name: boolean,
                        reason: "not a boolean (true, false, 1, 0)",
                    })?;
                    if boolean == "watch" {
                        out.watch = value;
                    }
                }
            }
        }
        Ok(out)
    }
}

/// The query parameters that must appear at most once, because what Hop audits or decides on
/// and what the API server acts on could otherwise differ (Hop reading the last, the API
/// server the first). All but `fieldSelector` and `container` are booleans.
const SINGLE_VALUED: [&str; 8] = [
    "watch",
    "fieldSelector",
    "container",
    "tty",
    "stdin",
    "stdout",
    "stderr",
    "follow",
];

/// A boolean the API server and Hop read alike. The API server takes `0` and any case of
/// `false` as false and everything else as true; Hop accepts only the unambiguous spellings.
fn parse_bool(s: &str) -> Option<bool> {
    if s == "1" || s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s == "0" || s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// The name a field selector pins (`metadata.name=N` or `metadata.name==N` among its
/// comma-separated terms), as the API server's authorizer reads it.
fn selected_name(selector: &str) -> Result<Option<String>, KubeRequestError> {
    let mut found = None;
    for term in selector.split(',') {
        let term = term.trim();
        let value = term
            .strip_prefix("metadata.name==")
            .or_else(|| term.strip_prefix("metadata.name="));
        let Some(value) = value else { continue };
        if value.starts_with('=') || found.replace(value).is_some() {
            return Err(KubeRequestError::BadQuery {
                name: "fieldSelector",
                reason: "metadata.name is required more than once",
            });
        }
    }
    let Some(name) = found else { return Ok(None) };
    if name.is_empty() || name.len() > MAX_SEGMENT_LEN {
        return Err(KubeRequestError::BadQuery {
            name: "fieldSelector",
            reason: "metadata.name is empty or longer than 253 bytes",
        });
    }
    check_decoded(name).map_err(|reason| KubeRequestError::BadQuery {
        name: "fieldSelector",
        reason,
    })?;
    Ok(Some(name.to_owned()))
}

/// Splits the path into decoded segments; a single trailing `/` is ignored.
fn decode_path(path: &str) -> Result<Vec<String>, KubeRequestError> {
    let Some(path) = path.strip_prefix('/') else {
        return Err(KubeRequestError::NotAbsolutePath);
    };
    let path = path.strip_suffix('/').unwrap_or(path);
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for (index, raw) in path.split('/').enumerate() {
        if index >= MAX_SEGMENTS {
            return Err(KubeRequestError::TooManySegments);
        }
        out.push(decode_segment(index, raw)?);
    }
    Ok(out)
}

fn decode_segment(index: usize, raw: &str) -> Result<String, KubeRequestError> {
    let bad = |reason| KubeRequestError::BadSegment { index, reason };
    if raw.is_empty() {
        return Err(bad("empty (two `/` in a row)"));
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = |j: usize| bytes.get(j).and_then(|c| char::from(*c).to_digit(16));
            let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
                return Err(bad("`%` is not followed by two hex digits"));
            };
            out.push(u8::try_from(hi * 16 + lo).unwrap_or(0));
            i += 3;
        } else if b.is_ascii_graphic() && b != b'#' {
            out.push(b);
            i += 1;
        } else {
            return Err(bad("a raw byte that is not visible ASCII"));
        }
    }
    if out.len() > MAX_SEGMENT_LEN {
        return Err(KubeRequestError::SegmentTooLong {
            index,
            len: out.len(),
        });
    }
    let text = String::from_utf8(out).map_err(|_| bad("does not decode to UTF-8"))?;
    check_decoded(&text).map_err(bad)?;
    Ok(text)
}

/// What a decoded segment (or a name from the query) must not be or hold.
fn check_decoded(text: &str) -> Result<(), &'static str> {
    if text.contains('/') {
        return Err("an encoded `/` (%2F)");
    }
    if text.contains('\0') {
        return Err("a NUL byte");
    }
    if text.chars().any(char::is_control) {
        return Err("a control character");
    }
    if text == "." || text == ".." {
        return Err("`.` or `..`");
    }
    Ok(())
}

/// API groups, versions, resources and subresources: lower-case letters, digits, `-` and `.`.
fn check_token(what: &'static str, value: &str) -> Result<(), KubeRequestError> {
    let ok = value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if ok && !value.is_empty() {
        Ok(())
    } else {
        Err(KubeRequestError::BadName {
            what,
            value: value.to_owned(),
            reason: "only lower-case letters, digits, `-` and `.` may appear",
        })
    }
}

/// A namespace is a DNS label: 1–63 of `a-z0-9-`, starting and ending alphanumeric.
fn check_namespace(value: &str) -> Result<(), KubeRequestError> {
    let bad = |reason| KubeRequestError::BadName {
        what: "namespace",
        value: value.to_owned(),
        reason,
    };
    if value.is_empty() || value.len() > MAX_NAMESPACE_LEN {
        return Err(bad("must be 1 to 63 characters"));
    }
    let edge_ok = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let body_ok = value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !body_ok || !edge_ok(value.as_bytes().first()) || !edge_ok(value.as_bytes().last()) {
        return Err(bad(
            "must be lower-case letters, digits and `-`, starting and ending with a letter or digit",
        ));
    }
    Ok(())
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
