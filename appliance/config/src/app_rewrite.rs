//! An HTTP app's `rewrite` section, parsed: header lines (`"Name: value {{internal.logins}}"`)
//! with their trait templates, and the hosts whose redirects are rewritten. Sans-IO: parsing and
//! expanding are pure functions; the agent applies the results to requests.

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
    Template { line: String, reason: TemplateError },
    #[error("redirect host {host:?}: expected a host name or host:port")]
    RedirectHost { host: String },
}

/// Why a `{{…}}` template does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("'{{{{' without a closing '}}}}'")]
    Unclosed,
    #[error("'}}}}' without an opening '{{{{'")]
    Unopened,
    #[error("only one {{{{…}}}} template per header value")]
    Several,
    #[error(
        "unknown template {expr:?}: use {{{{internal.NAME}}}}, {{{{external.NAME}}}} or {{{{jwt}}}}"
    )]
    Unknown { expr: String },
}

/// Where a template's values come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateVar {
    /// The identity assertion itself (`{{jwt}}`, `{{internal.jwt}}`).
    Jwt,
    /// A trait of the user (`{{internal.logins}}`, `{{external.email}}`): its name.
    Trait(String),
}

/// A header value: literal text around at most one template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueTemplate {
    pub prefix: String,
    pub var: Option<TemplateVar>,
    pub suffix: String,
}

/// One parsed `rewrite.headers` line.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// Parses a header value with at most one `{{ namespace.name }}` template.
pub fn parse_template(value: &str) -> Result<ValueTemplate, TemplateError> {
    let Some(open) = value.find("{{") else {
        if value.contains("}}") {
            return Err(TemplateError::Unopened);
        }
        return Ok(ValueTemplate {
            prefix: value.into(),
            var: None,
            suffix: String::new(),
        });
    };
    let (prefix, rest) = (&value[..open], &value[open + 2..]);
    if prefix.contains("}}") {
        return Err(TemplateError::Unopened);
    }
    let close = rest.find("}}").ok_or(TemplateError::Unclosed)?;
    let (expr, suffix) = (&rest[..close], &rest[close + 2..]);
    if expr.contains("{{") {
        return Err(TemplateError::Unclosed);
    }
    if suffix.contains("{{") {
        return Err(TemplateError::Several);
    }
    if suffix.contains("}}") {
        return Err(TemplateError::Unopened);
    }
    Ok(ValueTemplate {
        prefix: prefix.into(),
        var: Some(parse_var(expr.trim())?),
        suffix: suffix.into(),
    })
}

/// `jwt`, `internal.jwt`, `internal.NAME`, `external.NAME`, `external["NAME"]`.
fn parse_var(expr: &str) -> Result<TemplateVar, TemplateError> {
    let unknown = || TemplateError::Unknown { expr: expr.into() };
    if expr == "jwt" || expr == "internal.jwt" {
        return Ok(TemplateVar::Jwt);
    }
    let (ns, name) = if let Some(rest) = expr.strip_suffix("\"]") {
        let (ns, name) = rest.split_once("[\"").ok_or_else(unknown)?;
        (ns, name)
    } else {
        expr.split_once('.').ok_or_else(unknown)?
    };
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/@".contains(&b));
    if !matches!(ns, "internal" | "external") || !name_ok {
        return Err(unknown());
    }
    Ok(TemplateVar::Trait(name.into()))
}

impl ValueTemplate {
    /// Is the value fixed text (no template)?
    pub fn is_literal(&self) -> bool {
        self.var.is_none()
    }

    /// The header values for one request: one per value of the template's trait (none when
    /// the user has no such trait), or the literal.
    pub fn expand<'a>(
        &self,
        jwt: &str,
        traits: impl FnOnce(&str) -> &'a [String],
        mut out: impl FnMut(String),
    ) {
        let join = |v: &str| {
            let mut s = String::with_capacity(self.prefix.len() + v.len() + self.suffix.len());
            s.push_str(&self.prefix);
            s.push_str(v);
            s.push_str(&self.suffix);
            s
        };
        match &self.var {
            None => out(self.prefix.clone()),
            Some(TemplateVar::Jwt) => out(join(jwt)),
            Some(TemplateVar::Trait(name)) => traits(name).iter().for_each(|v| out(join(v))),
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

/// Fuzz entry point: parsing never panics, and a parsed line's name is a lower-case token that
/// is not reserved.
pub fn fuzz_parse(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(h) = parse_header_line(s) {
        assert!(!h.name.is_empty() && h.name.bytes().all(is_tchar));
        assert!(!is_reserved_header(&h.name));
        assert_eq!(h.name, h.name.to_ascii_lowercase());
    }
    let _ = parse_template(s);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tpl(p: &str, v: Option<TemplateVar>, s: &str) -> ValueTemplate {
        ValueTemplate {
            prefix: p.into(),
            var: v,
            suffix: s.into(),
        }
    }

    #[test]
    fn header_lines_parse() {
        let h = parse_header_line("X-Login: user={{internal.logins}};").unwrap();
        assert_eq!(h.name, "x-login");
        let logins = TemplateVar::Trait("logins".into());
        assert_eq!(h.value, tpl("user=", Some(logins), ";"));
        let h = parse_header_line("X-Email:{{ external[\"email addr\"] }}");
        assert!(h.is_err(), "space in a trait name");
        let h = parse_header_line("X-Email:{{ external[\"email\"] }}").unwrap();
        assert_eq!(h.value.var, Some(TemplateVar::Trait("email".into())));
        let h = parse_header_line("Authorization: Bearer {{jwt}}").unwrap();
        assert_eq!(h.value, tpl("Bearer ", Some(TemplateVar::Jwt), ""));
        let h = parse_header_line("X-Jwt: {{internal.jwt}}").unwrap();
        assert_eq!(h.value.var, Some(TemplateVar::Jwt));
        let h = parse_header_line("Host: grafana.internal").unwrap();
        assert_eq!((h.name.as_str(), h.value.is_literal()), ("host", true));
        assert_eq!(parse_header_line("X-Empty:").unwrap().value.prefix, "");
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
        assert!(e("X-A: {{internal.logins").contains("without a closing"));
        assert!(e("X-A: internal.logins}}").contains("without an opening"));
        assert!(e("X-A: {{a}}{{b}}").contains("only one"));
        assert!(e("X-A: {{internal.logins}} }}").contains("without an opening"));
        assert!(e("X-A: {{ {{x}}").contains("without a closing"));
        assert!(e("X-A: {{email}}").contains("unknown template \"email\""));
        assert!(e("X-A: {{other.x}}").contains("unknown template"));
        assert!(e("X-A: {{internal.}}").contains("unknown template"));
        assert!(e("X-A: {{}}").contains("unknown template"));
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
    fn expand_gives_one_value_per_trait_value() {
        let t = parse_template("u-{{internal.logins}}-x").unwrap();
        let logins = vec!["alice".to_string(), "root".to_string()];
        let mut got = Vec::new();
        t.expand(
            "J",
            |n| if n == "logins" { &logins } else { &[] },
            |v| got.push(v),
        );
        assert_eq!(got, ["u-alice-x", "u-root-x"]);
        got.clear();
        t.expand("J", |_| &[], |v| got.push(v));
        assert!(got.is_empty(), "no trait, no header");
        let t = parse_template("Bearer {{jwt}}").unwrap();
        t.expand("J.W.T", |_| &[], |v| got.push(v));
        assert_eq!(got, ["Bearer J.W.T"]);
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
