//! The request headers the web UI decides on, as a browser sends them: the session cookie in
//! `Cookie`, the page's origin in `Origin` (against the `Host` it was sent to), and whether
//! `Accept-Encoding` takes gzip; and the query string of a web API request's URL.
//!
//! Pure functions over one header value each (the caller joins repeated headers by calling again
//! per value); the header functions never allocate, and answer "absent" or "no" for anything
//! malformed: an unparseable cookie list has no session, an odd `Origin` is not this origin.
//! [`query_pairs`] decodes (and so allocates at most the query's length) and refuses a malformed
//! escape or text that is not UTF-8, naming the offset.

/// The value of the cookie named `name` in a `Cookie` header value (`a=b; c=d`), if present.
/// Names match exactly (case-sensitive, as browsers send them); a pair without `=` is skipped.
#[must_use]
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim())
}

/// Whether `origin` (an `Origin` header value) is exactly `https://` followed by `host` (the
/// `Host` header or `:authority` the request was sent to): the same scheme, name and port.
#[must_use]
pub fn is_https_origin(origin: &str, host: &str) -> bool {
    !host.is_empty() && origin.strip_prefix("https://") == Some(host)
}

/// Whether an `Accept-Encoding` header value accepts gzip (`gzip` or `*`, unless `q=0`).
#[must_use]
pub fn accepts_gzip(value: &str) -> bool {
    value.split(',').any(|coding| {
        let mut parts = coding.split(';').map(str::trim);
        let name = parts.next().unwrap_or("");
        let refused = parts.any(|p| {
            p.split_once('=')
                .is_some_and(|(k, v)| k.trim().eq_ignore_ascii_case("q") && is_zero(v.trim()))
        });
        (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
    })
}

/// Why a URL query string does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the query does not decode at byte {offset}: {reason}")]
pub struct QueryError {
    /// Byte offset into the query.
    pub offset: usize,
    /// What is wrong there.
    pub reason: &'static str,
}

/// The `name=value` pairs of a URL query string (after `?`), in order: `&` separates pairs
/// (empty ones are skipped), the first `=` separates a name from its value (none: an empty
/// value), `+` is a space and `%XX` a byte; a decoded name or value must be UTF-8.
pub fn query_pairs(query: &str) -> Result<Vec<(String, String)>, QueryError> {
    let mut out = Vec::new();
    let mut start = 0;
    for pair in query.split('&') {
        if !pair.is_empty() {
            let (name, value, value_at) = match pair.split_once('=') {
                Some((n, v)) => (n, v, start + n.len() + 1),
                None => (pair, "", start + pair.len()),
            };
            out.push((unescape(name, start)?, unescape(value, value_at)?));
        }
        start += pair.len() + 1;
    }
    Ok(out)
}

/// `+` → space, `%XX` → the byte; `at` is where `s` starts in the query.
fn unescape(s: &str, at: usize) -> Result<String, QueryError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |j: usize| bytes.get(j).and_then(|c| (*c as char).to_digit(16));
                let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
                    return Err(QueryError {
                        offset: at + i,
                        reason: "`%` is not followed by two hex digits",
                    });
                };
                out.push(u8::try_from(hi * 16 + lo).unwrap_or(0));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| QueryError {
        offset: at,
        reason: "the decoded text is not UTF-8",
    })
}

/// A quality value of zero (`0`, `0.`, `0.000`).
fn is_zero(q: &str) -> bool {
    q == "0"
        || q.strip_prefix("0.")
            .is_some_and(|d| d.chars().all(|c| c == '0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &str) -> Vec<(String, String)> {
        query_pairs(q).unwrap_or_else(|e| panic!("{q:?}: {e}"))
    }

    #[test]
    fn queries_decode_as_browsers_encode_them() {
        // What URLSearchParams made of {from, type, user} in Chromium.
        let q = "from=2026-12-06T12%3A00%3A00.000Z&type=user.login&user=al%C3%AFce+b";
        assert_eq!(
            pairs(q),
            [
                ("from".into(), "2026-12-06T12:00:00.000Z".into()),
                ("type".into(), "user.login".into()),
                ("user".into(), "alïce b".into()),
            ]
        );
        assert_eq!(
            pairs("&&a&b=&=c"),
            [
                ("a".into(), String::new()),
                ("b".into(), String::new()),
                (String::new(), "c".into()),
            ]
        );
        assert!(pairs("").is_empty());
    }

    #[test]
    fn malformed_queries_name_the_offset() {
        for (q, offset) in [
            ("a=%zz", 2),
            ("user=%C3", 5),
            ("ab%", 2),
            ("x=1&y=%4", 6),
            ("%FF=1", 0),
        ] {
            assert_eq!(query_pairs(q).unwrap_err().offset, offset, "{q:?}");
        }
    }

    #[test]
    fn every_prefix_of_a_query_decodes_or_is_refused_within_it() {
        let q = "from=2026-12-06T12%3A00%3A00Z&user=al%C3%AFce&cursor=abc%2Bdef";
        for (i, _) in q.char_indices() {
            let prefix = &q[..i];
            match query_pairs(prefix) {
                Ok(p) => assert!(p.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>() <= i),
                Err(e) => assert!(e.offset <= i, "{prefix:?}: {e}"),
            }
        }
    }

    /// What Chromium 156 sent the proxy: a `Cookie` with the session among others.
    const CHROMIUM_COOKIE: &str = "theme=dark; __Host-hop_session=4f1c2b9a0e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a3928170605f4e3; lang=en";
    const TOKEN: &str = "4f1c2b9a0e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a3928170605f4e3";

    #[test]
    fn the_session_cookie_among_others() {
        assert_eq!(cookie(CHROMIUM_COOKIE, "__Host-hop_session"), Some(TOKEN));
        assert_eq!(cookie(CHROMIUM_COOKIE, "lang"), Some("en"));
        assert_eq!(cookie(CHROMIUM_COOKIE, "hop_session"), None);
        assert_eq!(cookie(CHROMIUM_COOKIE, "__host-hop_session"), None);
    }

    #[test]
    fn every_prefix_of_a_real_cookie_header_is_answered() {
        for end in 0..=CHROMIUM_COOKIE.len() {
            let prefix = &CHROMIUM_COOKIE[..end];
            let found = cookie(prefix, "__Host-hop_session");
            if let Some(v) = found {
                // Never more than what was sent, and a cut value is a prefix of the real one.
                assert!(TOKEN.starts_with(v), "{prefix:?} gave {v:?}");
            }
            if end == CHROMIUM_COOKIE.len() {
                assert_eq!(found, Some(TOKEN));
            }
        }
    }

    #[test]
    fn malformed_cookie_headers_have_no_session() {
        for bad in [
            "",
            ";",
            "=",
            ";;;",
            "__Host-hop_session",
            "x__Host-hop_session=1",
            "__Host-hop_session x=1",
        ] {
            assert_eq!(cookie(bad, "__Host-hop_session"), None, "{bad:?}");
        }
        assert_eq!(
            cookie("__Host-hop_session=", "__Host-hop_session"),
            Some("")
        );
        assert_eq!(
            cookie("a; __Host-hop_session=v=w", "__Host-hop_session"),
            Some("v=w")
        );
    }

    #[test]
    fn only_the_exact_https_origin_is_this_origin() {
        assert!(is_https_origin(
            "https://proxy.example:3080",
            "proxy.example:3080"
        ));
        for (origin, host) in [
            ("http://proxy:3080", "proxy:3080"),
            ("https://proxy:3081", "proxy:3080"),
            ("https://proxy:3080.evil", "proxy:3080"),
            ("https://evil/proxy:3080", "proxy:3080"),
            ("null", "proxy:3080"),
            ("", "proxy:3080"),
            ("https://", ""),
            ("HTTPS://proxy:3080", "proxy:3080"),
        ] {
            assert!(!is_https_origin(origin, host), "{origin:?} for {host:?}");
        }
    }

    #[test]
    fn gzip_unless_refused() {
        assert!(accepts_gzip("gzip, deflate, br, zstd"));
        assert!(accepts_gzip("br;q=1.0, gzip;q=0.8"));
        assert!(accepts_gzip("*"));
        assert!(accepts_gzip("GZIP"));
        for no in [
            "",
            "br",
            "gzip;q=0",
            "gzip; q=0.000",
            "identity",
            "gzipx",
            ",,;",
        ] {
            assert!(!accepts_gzip(no), "{no:?}");
        }
    }
}
