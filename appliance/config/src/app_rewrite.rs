//! An HTTP app's `rewrite` section, parsed: header lines (`"Name: value {{internal.logins}}"`)
//! with their templates — the user's traits with the role templates' rules and functions
//! (`hop_rbac::traits`), or `{{jwt}}` for the identity assertion — and the hosts whose redirects
//! are rewritten. Sans-IO: parsing and expanding are pure functions; the agent applies the
//! results to requests.

use hop_rbac::{CompiledTemplate, Traits};
use serde::Deserialize;

/// `rewrite` of an HTTP app, as the operator writes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppRewrite {
    /// `"Name: value"` lines; the value may hold one `{{…}}` template.
    pub headers: Vec<String>,
    /// Hosts (or `host:port`) whose `Location` redirects are rewritten to the public address,
    /// besides the upstream's own.
    pub redirect: Vec<String>,
}

impl AppRewrite {
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty() && self.redirect.is_empty()
    }
}

/// Why a `rewrite.headers` line or `rewrite.redirect` entry is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    #[error("header line {line:?}: expected \"Name: value\"")]
    NoColon { line: String },
    #[error("header line {line:?}: {name:?} is not a valid header name")]
    BadName { line: String, name: String },
    #[error("header line {line:?}: {name} is set by Hop and may not be rewritten")]
    Reserved { line: String, name: String },
    #[error("header line {line:?}: the value holds a control character")]
    BadValue { line: String },
    #[error("header line {line:?}: {reason}")]
    Template { line: String, reason: String },
    #[error("redirect host {host:?}: expected a host name or host:port")]
    RedirectHost { host: String },
}

/// A header value: the assertion around literal text, or literal text and at most one trait
/// expression.
#[derive(Debug, Clone)]
pub enum ValueTemplate {
    /// `prefix{{jwt}}suffix` (or `{{internal.jwt}}`).
    Jwt { prefix: String, suffix: String },
    /// `X-{{internal.logins}}`, `{{email.local(external.email)}}`, `{{regexp.replace(…)}}`,
    /// or plain text.
    Traits(CompiledTemplate),
}

/// One parsed `rewrite.headers` line.
#[derive(Debug, Clone)]
pub struct HeaderRewrite {
    /// Lower-cased header name.
    pub name: String,
    pub value: ValueTemplate,
}

/// Headers Hop sets or owns on the way to the upstream: a rewrite may not replace them.
const RESERVED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-server",
];

/// Is `name` (lower case) a header a rewrite may not set: the hop-by-hop and framing headers,
/// the forwarding headers, and Hop's own `Hop-*` namespace (`Hop-Jwt-Assertion`).
pub fn is_reserved_header(name: &str) -> bool {
    name.starts_with("hop-") || RESERVED.contains(&name)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses one `"Name: value"` line.
pub fn parse_header_line(line: &str) -> Result<HeaderRewrite, RewriteError> {
    let err_line = || line.to_string();
    let (name, value) = line
        .split_once(':')
        .ok_or_else(|| RewriteError::NoColon { line: err_line() })?;
    let name = name.trim();
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return Err(RewriteError::BadName {
            line: err_line(),
            name: name.into(),
        });
    }
    let lower = name.to_ascii_lowercase();
    if is_reserved_header(&lower) {
        return Err(RewriteError::Reserved {
            line: err_line(),
            name: name.into(),
        });
    }
    let value = value.trim_matches([' ', '\t']);
    if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(RewriteError::BadValue { line: err_line() });
    }
    let value = parse_template(value).map_err(|reason| RewriteError::Template {
        line: err_line(),
        reason,
    })?;
    Ok(HeaderRewrite { name: lower, value })
}

/// Parses a header value: `{{jwt}}` is the assertion; anything else is a trait template.
pub fn parse_template(value: &str) -> Result<ValueTemplate, String> {
    if let Some(open) = value.find("{{")
        && let Some(len) = value[open..].find("}}")
        && matches!(value[open + 2..open + len].trim(), "jwt" | "internal.jwt")
    {
        let (prefix, suffix) = (&value[..open], &value[open + len + 2..]);
        if [prefix, suffix]
            .iter()
            .any(|t| t.contains("{{") || t.contains("}}"))
        {
            return Err("at most one {{...}} expression per value".into());
        }
        return Ok(ValueTemplate::Jwt {
            prefix: prefix.into(),
            suffix: suffix.into(),
        });
    }
    CompiledTemplate::parse(value)
        .map(ValueTemplate::Traits)
        .map_err(|e| e.to_string())
}

impl ValueTemplate {
    /// The value when it is plain text.
    pub fn literal(&self) -> Option<&str> {
        match self {
            Self::Jwt { .. } => None,
            Self::Traits(t) => t.literal(),
        }
    }

    /// The header values for one request: the assertion in its text, or one per value the
    /// trait expression gives (none when the user has no such trait).
    pub fn expand(&self, jwt: &str, traits: &Traits) -> Vec<String> {
        match self {
            Self::Jwt { prefix, suffix } => vec![format!("{prefix}{jwt}{suffix}")],
            Self::Traits(t) => t.expand(traits),
        }
    }
}

/// Checks one `rewrite.redirect` entry: a host name or `host:port`, nothing more.
pub fn check_redirect_host(host: &str) -> Result<(), RewriteError> {
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(RewriteError::RedirectHost { host: host.into() })
    }
}

/// Fuzz entry point: parsing and expanding never panic, and a parsed line's name is a
/// lower-case token that is not reserved.
pub fn fuzz_parse(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(h) = parse_header_line(s) {
        assert!(!h.name.is_empty() && h.name.bytes().all(is_tchar));
        assert!(!is_reserved_header(&h.name));
        assert_eq!(h.name, h.name.to_ascii_lowercase());
        let traits: Traits = [(
            "logins".to_string(),
            vec!["a".to_string(), "b@c".to_string()],
        )]
        .into_iter()
        .collect();
        let _ = h.value.expand("j.w.t", &traits);
    }
    let _ = parse_template(s);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traits() -> Traits {
        let mut t = Traits::new();
        t.insert("logins".into(), vec!["alice".into(), "root".into()]);
        t.insert("email".into(), vec!["alice@example.com".into()]);
        t
    }

    fn values(line: &str) -> Vec<String> {
        parse_header_line(line)
            .unwrap()
            .value
            .expand("J.W.T", &traits())
    }

    #[test]
    fn header_lines_parse_and_expand() {
        let h = parse_header_line("X-Login: user={{internal.logins}};").unwrap();
        assert_eq!(h.name, "x-login");
        assert_eq!(h.value.literal(), None);
        assert_eq!(
            values("X-Login: user={{internal.logins}};"),
            ["user=alice;", "user=root;"]
        );
        assert_eq!(
            values("X-Email:{{ external[\"email\"] }}"),
            ["alice@example.com"]
        );
        assert_eq!(
            values("X-Local: {{email.local(external.email)}}"),
            ["alice"]
        );
        assert_eq!(
            values(r#"X-Admin: {{regexp.replace(internal.logins, "^ro(.*)$", "r$1")}}"#),
            ["rot"]
        );
        assert!(
            values("X-None: {{external.nothing}}").is_empty(),
            "no trait, no header"
        );
        assert_eq!(values("Authorization: Bearer {{jwt}}"), ["Bearer J.W.T"]);
        assert_eq!(values("X-Jwt: {{ internal.jwt }}"), ["J.W.T"]);
        let h = parse_header_line("Host: grafana.internal").unwrap();
        assert_eq!(
            (h.name.as_str(), h.value.literal()),
            ("host", Some("grafana.internal"))
        );
        assert_eq!(
            parse_header_line("X-Empty:").unwrap().value.literal(),
            Some("")
        );
    }

    #[test]
    fn header_lines_refused() {
        let e = |l: &str| parse_header_line(l).unwrap_err().to_string();
        assert!(e("X-No-Colon").contains("expected \"Name: value\""));
        assert!(e("Bad Name: x").contains("not a valid header name"));
        assert!(e(": x").contains("not a valid header name"));
        assert!(e("Hop-Jwt-Assertion: x").contains("set by Hop"));
        assert!(e("hop-anything: x").contains("set by Hop"));
        assert!(e("Transfer-Encoding: chunked").contains("set by Hop"));
        assert!(e("X-Forwarded-For: 1.2.3.4").contains("set by Hop"));
        assert!(e("X-A: a\rb").contains("control character"));
        assert!(e("X-A: {{internal.logins").contains("without closing"));
        assert!(e("X-A: internal.logins}}").contains("without"));
        assert!(e("X-A: {{internal.a}}{{internal.b}}").contains("at most one"));
        assert!(e("X-A: {{jwt}}{{jwt}}").contains("at most one"));
        assert!(e("X-A: {{jwt}} }}").contains("at most one"));
        assert!(e("X-A: {{other.x}}").contains("unknown namespace"));
        assert!(e("X-A: {{strings.upper(internal.x)}}").contains("unknown function"));
        assert!(e("X-A: {{}}").starts_with("header line \"X-A: {{}}\": "));
    }

    #[test]
    fn every_prefix_of_a_line_parses_or_errs() {
        let line = "X-Login: a {{ external[\"émail\"] }} b";
        for i in 0..=line.len() {
            fuzz_parse(&line.as_bytes()[..i]);
            if let Some(prefix) = line.get(..i) {
                let _ = parse_header_line(prefix);
            }
        }
    }

    #[test]
    fn mutated_lines_parse_or_err() {
        let seeds = [
            "X-Login: a {{ internal.logins }} b",
            "Authorization: Bearer {{jwt}}",
            r#"X-A: {{regexp.replace(external["groups"], "^dev-(.*)$", "$1")}}"#,
            "X-L: {{email.local(external.email)}}",
        ];
        let specials = [b'{', b'}', b':', b' ', b'\r', b'"', b'(', b')', b'.', 0xc3];
        for seed in seeds {
            let b = seed.as_bytes();
            for i in 0..b.len() {
                let mut cut = b.to_vec();
                cut.remove(i);
                fuzz_parse(&cut);
                for &c in &specials {
                    let mut m = b.to_vec();
                    m.insert(i, c);
                    fuzz_parse(&m);
                    m[i + 1] = c;
                    fuzz_parse(&m);
                }
            }
        }
    }

    #[test]
    fn redirect_hosts() {
        assert!(check_redirect_host("grafana.internal").is_ok());
        assert!(check_redirect_host("localhost:3000").is_ok());
        assert!(check_redirect_host("[::1]:3000").is_ok());
        for bad in ["", "http://x", "x/y", "a b"] {
            let e = check_redirect_host(bad).unwrap_err().to_string();
            assert!(e.contains("expected a host name"), "{bad}: {e}");
        }
    }
}
