//! The headers of a kube request: what the client asked to impersonate, and what the agent
//! sees.
//!
//! From the client: `Impersonate-User` (at most one) and `Impersonate-Group` (any number) are
//! read as requests (kubectl `--as`/`--as-group`), decided by the role elsewhere;
//! `Impersonate-Uid` and any `Impersonate-Extra-*` are refused outright. Toward the agent:
//! hop-by-hop headers go (an upgrade keeps its `Connection: Upgrade` and `Upgrade`), every
//! `Authorization`, `Proxy-Authorization`, `Impersonate-*` and `Hop-*` header goes, in any
//! spelling a server could read as one of them (`Impersonate_User`), and exactly one
//! `impersonate-user` plus the allowed `impersonate-group`s are set; an HTTP/2 request gets the
//! `Host` HTTP/1.1 needs from its `:authority`. Pure functions over header maps.

use axum::http::header::{self, HeaderName};
use axum::http::{HeaderMap, HeaderValue};
use hop_api::dial::kube::{IMPERSONATE_GROUP, IMPERSONATE_USER};

use crate::routes::app_http::headers::strip_hop_by_hop;

/// What a client asked to impersonate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requested {
    pub user: Option<String>,
    pub groups: Vec<String>,
}

/// Why a client's impersonation headers are refused (the words reach kubectl).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImpersonationError {
    #[error("the request names more than one Impersonate-User")]
    SeveralUsers,
    #[error("header {0} is not allowed: Hop impersonates only users and groups")]
    NotAllowed(String),
    #[error("header {0} is not valid text")]
    NotText(&'static str),
}

/// A header name as a server that reads `_` as `-` and ignores case would read it.
fn spelled(name: &HeaderName) -> String {
    name.as_str().replace('_', "-")
}

/// The impersonation a client's headers ask for.
pub fn requested(h: &HeaderMap) -> Result<Requested, ImpersonationError> {
    let mut out = Requested::default();
    for (name, value) in h {
        let n = spelled(name);
        if !n.starts_with("impersonate-") {
            continue;
        }
        let text = || {
            value
                .to_str()
                .map(str::to_string)
                .map_err(|_| ImpersonationError::NotText(header_title(&n)))
        };
        match n.as_str() {
            IMPERSONATE_USER if out.user.is_some() => {
                return Err(ImpersonationError::SeveralUsers);
            }
            IMPERSONATE_USER => out.user = Some(text()?),
            IMPERSONATE_GROUP => out.groups.push(text()?),
            _ => return Err(ImpersonationError::NotAllowed(name.as_str().to_string())),
        }
    }
    Ok(out)
}

fn header_title(n: &str) -> &'static str {
    if n == IMPERSONATE_USER {
        "Impersonate-User"
    } else {
        "Impersonate-Group"
    }
}

/// Whether a client's header never reaches the agent: credentials, impersonation, Hop's own,
/// and what the API server's audit log would take from the client as fact (the source address
/// in `X-Forwarded-For`/`X-Real-Ip`, the `Audit-ID`).
fn is_stripped(name: &HeaderName) -> bool {
    let n = spelled(name);
    n == "authorization"
        || n == "proxy-authorization"
        || n == "x-real-ip"
        || n == "audit-id"
        || n.starts_with("x-forwarded-")
        || n.starts_with("impersonate-")
        || n.starts_with("hop-")
}

/// Prepares a client's request headers for the agent (see the module docs): `user` and
/// `groups` are what the role allowed; `authority` is where an HTTP/2 request was sent (its
/// `:authority`); `upgrade` keeps an upgrade's `Connection`/`Upgrade`.
pub fn to_agent(
    h: &mut HeaderMap,
    user: &str,
    groups: &[String],
    authority: Option<&str>,
    upgrade: bool,
) -> Result<(), ImpersonationError> {
    let upgrade_to = upgrade.then(|| h.get(header::UPGRADE).cloned()).flatten();
    strip_hop_by_hop(h);
    let stripped: Vec<HeaderName> = h.keys().filter(|k| is_stripped(k)).cloned().collect();
    for n in stripped {
        h.remove(n);
    }
    let value =
        |v: &str, what| HeaderValue::from_str(v).map_err(|_| ImpersonationError::NotText(what));
    h.insert(IMPERSONATE_USER, value(user, "Impersonate-User")?);
    for g in groups {
        h.append(IMPERSONATE_GROUP, value(g, "Impersonate-Group")?);
    }
    if !h.contains_key(header::HOST)
        && let Some(v) = authority.and_then(|a| HeaderValue::from_str(a).ok())
    {
        h.insert(header::HOST, v);
    }
    if let Some(u) = upgrade_to {
        // An upgrade is sent with no body: its own framing headers would promise one.
        h.remove(header::CONTENT_LENGTH);
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, u);
    }
    Ok(())
}

/// Whether a request asks to switch protocols (exec, attach, port-forward: SPDY or WebSocket).
pub fn is_upgrade(h: &HeaderMap) -> bool {
    let connection_upgrade = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    connection_upgrade && h.contains_key(header::UPGRADE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn a_clients_as_and_as_group_are_read_as_requests() {
        let h = map(&[
            ("Impersonate-User", "system:admin"),
            ("Impersonate-Group", "system:masters"),
            ("impersonate-group", "devs"),
            ("accept", "application/json"),
        ]);
        assert_eq!(
            requested(&h).unwrap(),
            Requested {
                user: Some("system:admin".into()),
                groups: vec!["system:masters".into(), "devs".into()],
            }
        );
        assert_eq!(requested(&HeaderMap::new()).unwrap(), Requested::default());
    }

    #[test]
    fn uid_extra_and_a_second_user_are_refused() {
        for (k, v) in [
            ("Impersonate-Uid", "1234"),
            ("Impersonate-Extra-Scopes", "view"),
            ("Impersonate_Extra_scopes", "view"),
        ] {
            let err = requested(&map(&[(k, v)])).unwrap_err();
            assert!(
                matches!(err, ImpersonationError::NotAllowed(_)),
                "{k}: {err}"
            );
        }
        let two = map(&[("Impersonate-User", "a"), ("Impersonate-User", "b")]);
        assert_eq!(requested(&two), Err(ImpersonationError::SeveralUsers));
        // A lookalike spelling counts as the header it would be read as.
        let sneaky = map(&[
            ("Impersonate-User", "a"),
            ("Impersonate_User", "system:admin"),
        ]);
        assert_eq!(requested(&sneaky), Err(ImpersonationError::SeveralUsers));
    }

    #[test]
    fn the_agent_sees_only_the_allowed_identity_and_no_credentials() {
        let mut h = map(&[
            ("Authorization", "Bearer stolen"),
            ("Proxy-Authorization", "Basic x"),
            ("Impersonate-User", "system:admin"),
            ("Impersonate-Group", "system:masters"),
            ("Impersonate_Group", "system:masters"),
            ("Impersonate-Extra-Foo", "bar"),
            ("Hop-Jwt-Assertion", "forged"),
            ("Connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("X-Forwarded-For", "10.9.9.9"),
            ("X-Forwarded-Host", "evil"),
            ("X-Real-Ip", "10.9.9.9"),
            ("Audit-Id", "forged-audit-id"),
            ("accept", "application/json;as=Table;v=v1;g=meta.k8s.io"),
        ]);
        to_agent(
            &mut h,
            "dev-alice",
            &["viewers".into(), "devs".into()],
            Some("kube.localhost:3080"),
            false,
        )
        .unwrap();
        let users: Vec<_> = h.get_all(IMPERSONATE_USER).iter().collect();
        assert_eq!(users, vec!["dev-alice"]);
        let groups: Vec<_> = h.get_all(IMPERSONATE_GROUP).iter().collect();
        assert_eq!(groups, vec!["viewers", "devs"]);
        for gone in [
            "authorization",
            "proxy-authorization",
            "impersonate-extra-foo",
            "impersonate_group",
            "hop-jwt-assertion",
            "connection",
            "x-secret",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-real-ip",
            "audit-id",
        ] {
            assert!(!h.contains_key(gone), "{gone} reached the agent: {h:?}");
        }
        assert_eq!(h[header::HOST], "kube.localhost:3080");
        assert_eq!(
            h[header::ACCEPT],
            "application/json;as=Table;v=v1;g=meta.k8s.io"
        );
    }

    #[test]
    fn an_upgrade_keeps_its_protocol() {
        let mut h = map(&[
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
            ("Host", "kube.localhost"),
            ("Content-Length", "5"),
        ]);
        assert!(is_upgrade(&h));
        to_agent(&mut h, "u", &[], None, true).unwrap();
        assert_eq!(h[header::UPGRADE], "SPDY/3.1");
        assert_eq!(h[header::CONNECTION], "Upgrade");
        assert_eq!(h["x-stream-protocol-version"], "v4.channel.k8s.io");
        assert_eq!(h[header::HOST], "kube.localhost");
        assert!(
            !h.contains_key(header::CONTENT_LENGTH),
            "an upgrade has no body"
        );
        assert!(!h.contains_key(IMPERSONATE_GROUP));
        assert!(!is_upgrade(&map(&[("Upgrade", "websocket")])));
    }
}
