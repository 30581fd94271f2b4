//! What the agent changes in a web app's requests and responses: hop-by-hop headers (RFC 9110
//! §7.6.1) dropped both ways, Hop's own cookies kept from the upstream (and the upstream kept
//! from setting them), the operator's `rewrite.headers` applied with the user's traits, the
//! upstream `Host`, and `Location` redirects to the upstream's own address (or one listed in
//! `rewrite.redirect`) sent back to the app's public address.

use hop_config::services::HeaderRewrite;
use hop_config::services::ValueTemplate;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::jwt_claims::Claims;

/// Headers that belong to one connection, never forwarded.
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// An operator's header rewrite, ready for each request.
struct Compiled {
    name: HeaderName,
    /// The value when it has no template (`None` inside: the header is only removed).
    literal: Option<Option<HeaderValue>>,
    template: ValueTemplate,
}

/// One web app's rewrites.
pub(crate) struct Rewrites {
    headers: Vec<Compiled>,
    /// `rewrite.redirect` entries, lower case: `host` or `host:port`.
    redirect: Vec<String>,
    /// The upstream's own host (lower case) and port.
    upstream: (String, u16),
}

impl Rewrites {
    /// From a validated spec's parts (`HeaderRewrite` names are valid tokens).
    pub(crate) fn new(
        headers: &[HeaderRewrite],
        redirect: &[String],
        upstream: (String, u16),
    ) -> Self {
        let headers = headers
            .iter()
            .filter_map(|h| {
                let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
                let literal = h.value.literal().map(|text| {
                    (!text.is_empty())
                        .then(|| HeaderValue::from_str(text).ok())
                        .flatten()
                });
                Some(Compiled {
                    name,
                    literal,
                    template: h.value.clone(),
                })
            })
            .collect();
        Self {
            headers,
            redirect: redirect.iter().map(|h| h.to_ascii_lowercase()).collect(),
            upstream: (upstream.0.to_ascii_lowercase(), upstream.1),
        }
    }

    /// Applies `rewrite.headers`: each named header is removed first (a client can never
    /// supply it), then set to the template's values for this user, if any (an empty value
    /// only removes it). True when a rewrite set `Host`.
    pub(crate) fn apply_headers(
        &self,
        headers: &mut HeaderMap,
        jwt: &str,
        claims: &Claims,
    ) -> bool {
        let mut host_set = false;
        self.strip_lookalikes(headers);
        for h in &self.headers {
            headers.remove(&h.name);
            match &h.literal {
                Some(Some(v)) => {
                    headers.insert(h.name.clone(), v.clone());
                    host_set |= h.name == header::HOST;
                }
                Some(None) => {}
                None => {
                    for v in h.template.expand(jwt, &claims.traits) {
                        let Ok(v) = HeaderValue::try_from(v) else {
                            continue;
                        };
                        if h.name == header::HOST {
                            host_set = true;
                            headers.insert(header::HOST, v);
                        } else {
                            headers.append(h.name.clone(), v);
                        }
                    }
                }
            }
        }
        host_set
    }

    /// Removes the headers that only an underscore tells apart from one the agent sets (a
    /// rewrite's, or the assertion): a CGI-style upstream (WSGI, Rack, PHP) reads `X_User` and
    /// `X-User` as the same `HTTP_X_USER`, so a client's `X_User` would pass for the agent's.
    fn strip_lookalikes(&self, headers: &mut HeaderMap) {
        if !headers.keys().any(|k| k.as_str().contains('_')) {
            return;
        }
        let ours = |spelled: &str| {
            spelled == super::jwt_claims::ASSERTION_HEADER
                || self.headers.iter().any(|h| h.name.as_str() == spelled)
        };
        let lookalikes: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().contains('_') && ours(&k.as_str().replace('_', "-")))
            .cloned()
            .collect();
        for n in lookalikes {
            headers.remove(n);
        }
    }

    /// Is `host[:port]` one whose redirects go back to the public address?
    fn redirects_here(&self, host: &str, port: u16) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.eq_ignore_ascii_case(&self.upstream.0) && port == self.upstream.1 {
            return true;
        }
        self.redirect.iter().any(|r| match r.rsplit_once(':') {
            Some((h, p)) if !r.ends_with(']') => {
                let h = h.trim_start_matches('[').trim_end_matches(']');
                h.eq_ignore_ascii_case(host) && p.parse() == Ok(port)
            }
            _ => r
                .trim_start_matches('[')
                .trim_end_matches(']')
                .eq_ignore_ascii_case(host),
        })
    }

    /// Points a response's `Location` at the public address when it names the upstream.
    pub(crate) fn response_location(&self, headers: &mut HeaderMap, public_host: &HeaderValue) {
        let Some(loc) = headers.get(header::LOCATION).and_then(|v| v.to_str().ok()) else {
            return;
        };
        // Only a plain authority (the proxy checked it names this app, or the user's own
        // app certificate sent it): nothing that could turn the URL into another one.
        let plain = |b: u8| b.is_ascii_alphanumeric() || b".-:[]".contains(&b);
        if public_host.is_empty() || !public_host.as_bytes().iter().all(|&b| plain(b)) {
            return;
        }
        let Ok(public) = public_host.to_str() else {
            return;
        };
        let Some(new) = rewrite_location(loc, public, |h, p| self.redirects_here(h, p)) else {
            return;
        };
        if let Ok(v) = HeaderValue::try_from(new) {
            headers.insert(header::LOCATION, v);
        }
    }
}

/// `https://<public><path…>` when `location` is an absolute http(s) URL whose authority
/// `matches`; None to leave it as it is (relative, another host, not a URL).
pub(crate) fn rewrite_location(
    location: &str,
    public: &str,
    matches: impl Fn(&str, u16) -> bool,
) -> Option<String> {
    let (scheme, rest) = location.split_once("://")?;
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => {
            (&authority[..i], authority[i + 1..].parse().ok()?)
        }
        _ => (authority, default_port),
    };
    if !matches(host, port) {
        return None;
    }
    let tail = if tail.is_empty() { "/" } else { tail };
    Some(format!("https://{public}{tail}"))
}

/// Is this request a WebSocket upgrade (`Connection: upgrade` and `Upgrade: websocket`)?
pub(crate) fn is_websocket(headers: &HeaderMap) -> bool {
    let has_token = |name, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has_token(header::CONNECTION, "upgrade") && has_token(header::UPGRADE, "websocket")
}

/// Drops hop-by-hop headers and those the `Connection` header names. For a WebSocket
/// upgrade, `Connection: upgrade` and `Upgrade` stay (they are the request).
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, websocket: bool) {
    let upgrade = websocket
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for n in named.iter().chain(HOP_BY_HOP) {
        headers.remove(n);
    }
    for n in ["keep-alive", "proxy-connection"] {
        headers.remove(n);
    }
    if let Some(u) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, u);
    }
}

/// Is a cookie name one of Hop's (`hop_*`, `__Host-hop_*`, `__Secure-hop_*`)?
fn is_hop_cookie(name: &str) -> bool {
    let name = name.trim();
    let name = name
        .strip_prefix("__Host-")
        .or_else(|| name.strip_prefix("__Secure-"))
        .unwrap_or(name);
    name.len() >= 4 && name[..4].eq_ignore_ascii_case("hop_")
}

/// Removes Hop's cookies from a request's `Cookie` headers (the proxy already does; this is
/// the agent's own check, cheap when no cookie looks like Hop's).
pub(crate) fn strip_hop_cookies(headers: &mut HeaderMap) {
    let suspicious = headers.get_all(header::COOKIE).iter().any(|v| {
        v.as_bytes()
            .windows(4)
            .any(|w| w.eq_ignore_ascii_case(b"hop_"))
    });
    if !suspicious {
        return;
    }
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(';'))
        .filter(|pair| !is_hop_cookie(pair.split('=').next().unwrap_or_default()))
        .map(|pair| pair.trim().to_string())
        .filter(|pair| !pair.is_empty())
        .collect();
    headers.remove(header::COOKIE);
    if let Ok(v) = HeaderValue::try_from(kept.join("; "))
        && !kept.is_empty()
    {
        headers.insert(header::COOKIE, v);
    }
}

/// Keeps the upstream from setting (or clearing) Hop's cookies on the app's host.
pub(crate) fn strip_hop_set_cookies(headers: &mut HeaderMap) {
    let hop = |v: &HeaderValue| {
        v.to_str().map_or(true, |s| {
            is_hop_cookie(s.split('=').next().unwrap_or_default())
        })
    };
    if !headers.get_all(header::SET_COOKIE).iter().any(hop) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| !hop(v))
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    for v in kept {
        headers.append(header::SET_COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use hop_config::app_rewrite::parse_header_line;

    use super::*;

    fn rewrites(lines: &[&str], redirect: &[&str]) -> Rewrites {
        let headers: Vec<_> = lines
            .iter()
            .map(|l| parse_header_line(l).unwrap())
            .collect();
        let redirect: Vec<String> = redirect.iter().map(|s| s.to_string()).collect();
        Rewrites::new(&headers, &redirect, ("127.0.0.1".into(), 3000))
    }

    fn all(h: &HeaderMap, n: &str) -> Vec<String> {
        h.get_all(n)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    fn claims() -> Claims {
        let mut c = Claims {
            username: "alice".into(),
            ..Claims::default()
        };
        c.traits
            .insert("logins".into(), vec!["alice".into(), "root".into()]);
        c.traits.insert("bad".into(), vec!["a\r\nX-Evil: 1".into()]);
        c
    }

    #[test]
    fn header_rewrites_replace_what_the_client_sent() {
        let r = rewrites(
            &[
                "X-Login: {{internal.logins}}",
                "X-Removed:",
                "X-Fixed: yes",
                "Authorization: Bearer {{jwt}}",
                "X-Gone: {{external.none}}",
                "X-Bad: {{external.bad}}",
            ],
            &[],
        );
        let mut h = HeaderMap::new();
        h.insert("x-login", HeaderValue::from_static("forged"));
        h.insert("x-removed", HeaderValue::from_static("forged"));
        h.insert("x-gone", HeaderValue::from_static("forged"));
        h.insert("x-bad", HeaderValue::from_static("forged"));
        let host_set = r.apply_headers(&mut h, "J.W.T", &claims());
        assert!(!host_set);
        assert_eq!(all(&h, "x-login"), ["alice", "root"]);
        assert_eq!(all(&h, "x-fixed"), ["yes"]);
        assert!(all(&h, "x-removed").is_empty());
        assert_eq!(all(&h, "authorization"), ["Bearer J.W.T"]);
        assert!(
            all(&h, "x-gone").is_empty(),
            "no trait: the client's value is gone too"
        );
        assert!(
            all(&h, "x-bad").is_empty(),
            "a value with CR LF is never sent"
        );
        let r = rewrites(&["Host: {{internal.logins}}.internal"], &[]);
        assert!(r.apply_headers(&mut h, "J", &claims()));
        assert_eq!(all(&h, "host"), ["root.internal"]);
    }

    #[test]
    fn a_client_cannot_spell_the_agents_headers_with_underscores() {
        let r = rewrites(&["X-Webauth-User: {{internal.logins}}"], &[]);
        let mut h = HeaderMap::new();
        h.insert("x_webauth_user", HeaderValue::from_static("admin"));
        h.insert("x_webauth-user", HeaderValue::from_static("admin"));
        h.insert("hop_jwt_assertion", HeaderValue::from_static("forged"));
        h.insert("x_kept", HeaderValue::from_static("k"));
        r.apply_headers(&mut h, "J", &claims());
        let mut names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["x-webauth-user", "x_kept"]);
        assert_eq!(all(&h, "x-webauth-user"), ["alice", "root"]);
    }

    #[test]
    fn locations_to_the_upstream_go_public() {
        let r = rewrites(&[], &["grafana.internal", "other:8443"]);
        let public = "grafana.proxy.test:3080";
        let rw = |l: &str| rewrite_location(l, public, |h, p| r.redirects_here(h, p));
        let p = |s: &str| Some(format!("https://{public}{s}"));
        assert_eq!(
            rw("http://127.0.0.1:3000/login?next=%2F#f"),
            p("/login?next=%2F#f")
        );
        assert_eq!(rw("http://127.0.0.1:3000"), p("/"));
        assert_eq!(rw("HTTP://127.0.0.1:3000?x"), p("?x"));
        assert_eq!(rw("https://grafana.internal/x"), p("/x"));
        assert_eq!(rw("http://GRAFANA.internal:9/x"), p("/x"));
        assert_eq!(rw("https://other:8443/"), p("/"));
        assert_eq!(rw("https://other/"), None);
        assert_eq!(rw("http://127.0.0.1:3001/"), None);
        assert_eq!(rw("http://127.0.0.1/"), None);
        assert_eq!(rw("http://evil.example/"), None);
        assert_eq!(rw("http://127.0.0.1:3000@evil/"), None);
        assert_eq!(rw("/relative"), None);
        assert_eq!(rw("ftp://127.0.0.1:3000/"), None);
        let loc = "https://grafana.internal:443/a?b#c";
        for i in 0..=loc.len() {
            let _ = rw(&loc[..i]);
        }
    }

    #[test]
    fn a_public_host_that_is_not_an_authority_leaves_locations_alone() {
        let r = rewrites(&[], &[]);
        let mut h = HeaderMap::new();
        let upstream = HeaderValue::from_static("http://127.0.0.1:3000/x");
        for public in ["evil.example/path", "a@b", ""] {
            h.insert(header::LOCATION, upstream.clone());
            r.response_location(&mut h, &HeaderValue::from_str(public).unwrap());
            assert_eq!(h[header::LOCATION], upstream, "{public}");
        }
        r.response_location(&mut h, &HeaderValue::from_static("g.proxy.test:3080"));
        assert_eq!(h[header::LOCATION], "https://g.proxy.test:3080/x");
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("s"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("gzip"));
        h.insert("upgrade", HeaderValue::from_static("h2c"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("x-kept", HeaderValue::from_static("k"));
        assert!(!is_websocket(&h));
        strip_hop_by_hop(&mut h, false);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
        let mut ws = HeaderMap::new();
        ws.insert(
            "connection",
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        ws.insert("upgrade", HeaderValue::from_static("websocket"));
        assert!(is_websocket(&ws));
        strip_hop_by_hop(&mut ws, true);
        assert_eq!(ws["connection"], "upgrade");
        assert_eq!(ws["upgrade"], "websocket");
    }

    #[test]
    fn hop_cookies_never_cross() {
        let mut h = HeaderMap::new();
        h.append(
            "cookie",
            HeaderValue::from_static("a=1; __Host-hop_app_session=s; HOP_x=2"),
        );
        h.append("cookie", HeaderValue::from_static("hop_y=3; shop_z=4"));
        strip_hop_cookies(&mut h);
        assert_eq!(
            h.get_all("cookie").iter().collect::<Vec<_>>(),
            ["a=1; shop_z=4"]
        );
        let mut only = HeaderMap::new();
        only.insert("cookie", HeaderValue::from_static("__Host-hop_app_state=x"));
        strip_hop_cookies(&mut only);
        assert!(only.get("cookie").is_none());
        let mut r = HeaderMap::new();
        r.append(
            "set-cookie",
            HeaderValue::from_static("__Host-hop_app_session=fixed; Path=/"),
        );
        r.append(
            "set-cookie",
            HeaderValue::from_static("grafana_session=g; Path=/"),
        );
        strip_hop_set_cookies(&mut r);
        assert_eq!(
            r.get_all("set-cookie").iter().collect::<Vec<_>>(),
            ["grafana_session=g; Path=/"]
        );
    }
}
