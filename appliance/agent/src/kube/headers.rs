//! What the API server sees of a request's headers: the agent's rules, sans-IO. A request must
//! carry exactly one non-empty `impersonate-user` (the proxy set it from the role); the client's
//! `authorization`, `impersonate-uid`, `impersonate-extra-*` and Hop's own `hop-*` headers never
//! pass; hop-by-hop headers are dropped except `Connection: Upgrade` and `Upgrade` on an upgrade
//! request. The agent's credentials are added by the caller.

use hop_api::dial::kube::IMPERSONATE_USER;
use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};

/// Why a request is refused before it reaches the API server (403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HeaderRefusal {
    #[error("the request names no user to impersonate (impersonate-user); Hop's proxy sets it")]
    NoUser,
    #[error("the request names several users to impersonate (impersonate-user)")]
    SeveralUsers,
    #[error("the impersonate-user header is empty or not text")]
    BadUser,
}

/// Headers that end at each hop (RFC 9110 §7.6.1), besides those `Connection` names.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

/// The one user to impersonate.
pub(crate) fn impersonated_user(headers: &HeaderMap) -> Result<&str, HeaderRefusal> {
    let mut all = headers.get_all(IMPERSONATE_USER).iter();
    let user = all.next().ok_or(HeaderRefusal::NoUser)?;
    if all.next().is_some() {
        return Err(HeaderRefusal::SeveralUsers);
    }
    match user.to_str() {
        Ok(u) if !u.trim().is_empty() => Ok(u),
        _ => Err(HeaderRefusal::BadUser),
    }
}

/// Does the request ask to switch protocols (`Connection: upgrade` and an `Upgrade`)?
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_names(headers, "upgrade")
}

fn connection_names(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes what the API server must not see: the client's credentials and identity claims,
/// Hop's headers, hop-by-hop headers (keeping an upgrade's `Connection`/`Upgrade` when
/// `upgrade`).
pub(crate) fn strip_request(headers: &mut HeaderMap, upgrade: bool) {
    let kept_upgrade = upgrade
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    strip_hop_by_hop(headers);
    headers.remove(header::AUTHORIZATION);
    let forbidden: Vec<HeaderName> = headers
        .keys()
        .filter(|n| {
            let n = n.as_str();
            n == "impersonate-uid" || n.starts_with("impersonate-extra-") || n.starts_with("hop-")
        })
        .cloned()
        .collect();
    for n in forbidden {
        headers.remove(n);
    }
    if let Some(u) = kept_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, u);
    }
}

/// Removes hop-by-hop headers and those `Connection` names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for n in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(n);
    }
    for n in ["keep-alive", "proxy-connection"] {
        headers.remove(n);
    }
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
    fn exactly_one_user_is_impersonated() {
        assert_eq!(impersonated_user(&map(&[])), Err(HeaderRefusal::NoUser));
        let two = map(&[("impersonate-user", "a"), ("Impersonate-User", "b")]);
        assert_eq!(impersonated_user(&two), Err(HeaderRefusal::SeveralUsers));
        let empty = map(&[("impersonate-user", " ")]);
        assert_eq!(impersonated_user(&empty), Err(HeaderRefusal::BadUser));
        let one = map(&[("impersonate-user", "alice"), ("impersonate-group", "dev")]);
        assert_eq!(impersonated_user(&one), Ok("alice"));
    }

    #[test]
    fn the_client_credentials_and_claims_are_stripped() {
        let mut h = map(&[
            ("authorization", "Bearer stolen"),
            ("impersonate-user", "alice"),
            ("impersonate-group", "dev"),
            ("impersonate-group", "ops"),
            ("impersonate-uid", "0"),
            ("impersonate-extra-scopes", "all"),
            ("hop-jwt-assertion", "x"),
            ("connection", "keep-alive, x-trace"),
            ("x-trace", "1"),
            ("keep-alive", "timeout=5"),
            ("accept", "application/json"),
        ]);
        strip_request(&mut h, false);
        let mut names: Vec<_> = h.keys().map(|k| k.as_str().to_string()).collect();
        names.sort();
        assert_eq!(names, ["accept", "impersonate-group", "impersonate-user"]);
        assert_eq!(h.get_all("impersonate-group").iter().count(), 2);
    }

    #[test]
    fn an_upgrade_keeps_its_connection_and_upgrade() {
        let mut h = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "SPDY/3.1"),
            ("impersonate-user", "alice"),
        ]);
        assert!(is_upgrade(&h));
        strip_request(&mut h, true);
        assert_eq!(h["connection"], "Upgrade");
        assert_eq!(h["upgrade"], "SPDY/3.1");
        let mut plain = map(&[("upgrade", "websocket")]);
        assert!(!is_upgrade(&plain));
        strip_request(&mut plain, false);
        assert!(plain.is_empty());
    }
}
