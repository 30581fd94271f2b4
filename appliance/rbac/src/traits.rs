//! Trait templates: `{{internal.logins}}`, `{{external.email}}`, `{{email.local(external.email)}}`,
//! `{{regexp.replace(external.groups, "^dev-(.*)$", "$1")}}`, optionally with literal text around
//! the braces (`ssh-{{internal.logins}}`).
//!
//! This module owns parsing a role string into a template and expanding it against a user's
//! traits. A string without `{{` is a literal. Parsing rejects unknown namespaces and functions;
//! expansion never fails: a missing trait, a value that is not an email address or that the
//! regex does not match expands to nothing.

use std::collections::BTreeMap;

use crate::labels::regex_reason;

/// A user's traits: name → values (`logins`, `db_users`, `email`, `groups`, …).
pub type Traits = BTreeMap<String, Vec<String>>;

/// Why a template was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// `{{foo.bar}}` with `foo` other than `internal`/`external`.
    #[error("unknown namespace {0:?}, expected internal or external")]
    UnknownNamespace(String),
    /// `{{strings.upper(…)}}` and other functions we do not implement.
    #[error("unknown function {0:?}, expected email.local or regexp.replace")]
    UnknownFunction(String),
    /// Any other syntax problem.
    #[error("{0}")]
    Syntax(String),
    /// The regex argument of `regexp.replace` does not compile.
    #[error("invalid regex {pattern:?}: {reason}")]
    Regex {
        /// The regex as written.
        pattern: String,
        /// One-line reason.
        reason: String,
    },
}

/// `internal.logins` / `external["http://claims/x"]`. Both namespaces read the user's traits
/// (as Teleport does for local users); the namespace is only validated.
#[derive(Debug, Clone)]
pub(crate) struct Variable {
    pub(crate) name: String,
}

/// The expression inside the braces.
#[derive(Debug, Clone)]
pub(crate) enum Expr {
    Var(Variable),
    EmailLocal(Variable),
    RegexpReplace {
        var: Variable,
        re: regex::Regex,
        replacement: String,
    },
}

/// A parsed role string.
#[derive(Debug, Clone)]
pub(crate) enum Template {
    /// No braces: used as is.
    Literal(String),
    /// `prefix{{expr}}suffix`
    Expr {
        prefix: String,
        expr: Expr,
        suffix: String,
    },
}

/// Parses `s`; a string without `{{` is a literal.
pub(crate) fn parse(s: &str) -> Result<Template, TemplateError> {
    let Some(open) = s.find("{{") else {
        if s.contains("}}") {
            return Err(TemplateError::Syntax("\"}}\" without \"{{\"".into()));
        }
        return Ok(Template::Literal(s.to_owned()));
    };
    let after_open = &s[open + 2..];
    let Some(close) = after_open.find("}}") else {
        return Err(TemplateError::Syntax(
            "\"{{\" without closing \"}}\"".into(),
        ));
    };
    let inner = &after_open[..close];
    let suffix = &after_open[close + 2..];
    if suffix.contains("{{") || suffix.contains("}}") {
        return Err(TemplateError::Syntax(
            "at most one {{...}} expression per value".into(),
        ));
    }
    let mut p = ExprParser { src: inner, pos: 0 };
    let expr = p.expr()?;
    p.skip_ws();
    if p.pos != p.src.len() {
        return Err(TemplateError::Syntax(format!(
            "unexpected {:?} after expression",
            &p.src[p.pos..]
        )));
    }
    Ok(Template::Expr {
        prefix: s[..open].to_owned(),
        expr,
        suffix: suffix.to_owned(),
    })
}

/// Checks that `s` is a valid literal or template.
pub fn validate_template(s: &str) -> Result<(), TemplateError> {
    parse(s).map(|_| ())
}

/// True if `s` contains a `{{...}}` expression.
#[must_use]
pub fn is_template(s: &str) -> bool {
    s.contains("{{")
}

/// Expands `s` against `traits`. Invalid templates expand to nothing (validation rejects them
/// earlier; this keeps evaluation total and fail-closed).
#[must_use]
pub fn expand(s: &str, traits: &Traits) -> Vec<String> {
    parse(s).map_or_else(|_| Vec::new(), |t| t.expand(traits))
}

/// A template parsed once and expanded many times (an app's header rewrite, on every request).
#[derive(Debug, Clone)]
pub struct CompiledTemplate(Template);

impl CompiledTemplate {
    /// Parses `s` as [`validate_template`] does.
    pub fn parse(s: &str) -> Result<Self, TemplateError> {
        parse(s).map(Self)
    }

    /// The text, when `s` had no `{{...}}` expression.
    #[must_use]
    pub fn literal(&self) -> Option<&str> {
        match &self.0 {
            Template::Literal(s) => Some(s),
            Template::Expr { .. } => None,
        }
    }

    /// The values for `traits`, as [`expand`] gives them.
    #[must_use]
    pub fn expand(&self, traits: &Traits) -> Vec<String> {
        self.0.expand(traits)
    }
}

impl Template {
    /// Values this template produces for `traits`; never contains an empty string.
    pub(crate) fn expand(&self, traits: &Traits) -> Vec<String> {
        match self {
            Self::Literal(s) => {
                if s.is_empty() {
                    Vec::new()
                } else {
                    vec![s.clone()]
                }
            }
            Self::Expr {
                prefix,
                expr,
                suffix,
            } => expr
                .eval(traits)
                .into_iter()
                .filter(|v| !v.is_empty())
                .map(|v| format!("{prefix}{v}{suffix}"))
                .collect(),
        }
    }
}

impl Expr {
    fn eval(&self, traits: &Traits) -> Vec<String> {
        let values = |v: &Variable| traits.get(&v.name).map_or(&[][..], Vec::as_slice);
        match self {
            Self::Var(v) => values(v).to_vec(),
            Self::EmailLocal(v) => values(v).iter().filter_map(|e| email_local(e)).collect(),
            Self::RegexpReplace {
                var,
                re,
                replacement,
            } => values(var)
                .iter()
                .filter(|v| re.is_match(v))
                .map(|v| re.replace_all(v, replacement.as_str()).into_owned())
                .collect(),
        }
    }
}

/// The local part of `alice@example.com` or `Alice <alice@example.com>`.
fn email_local(addr: &str) -> Option<String> {
    let addr = addr.trim();
    let addr = match (addr.rfind('<'), addr.rfind('>')) {
        (Some(l), Some(r)) if l < r => &addr[l + 1..r],
        _ => addr,
    };
    let (local, domain) = addr.split_once('@')?;
    if local.is_empty() || domain.is_empty() || local.contains(char::is_whitespace) {
        return None;
    }
    Some(local.to_owned())
}

struct ExprParser<'a> {
    src: &'a str,
    pos: usize,
}

impl ExprParser<'_> {
    fn rest(&self) -> &str {
        &self.src[self.pos..]
    }

    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.src.len() - trimmed.len();
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_ws();
        if self.rest().starts_with(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<(), TemplateError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(TemplateError::Syntax(format!("expected {c:?}")))
        }
    }

    fn ident(&mut self) -> Result<&str, TemplateError> {
        self.skip_ws();
        let len = self
            .rest()
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(self.rest().len());
        if len == 0 {
            return Err(TemplateError::Syntax(if self.rest().is_empty() {
                "empty expression".into()
            } else {
                format!("unexpected {:?}", self.rest())
            }));
        }
        let start = self.pos;
        self.pos += len;
        Ok(&self.src[start..self.pos])
    }

    /// A double-quoted string with `\"` and `\\` escapes.
    fn string(&mut self) -> Result<String, TemplateError> {
        self.expect('"')?;
        let mut out = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, e @ ('"' | '\\'))) => out.push(e),
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    // Other escapes (\d, \w in regexes) stay as written.
                    Some((_, e)) => {
                        out.push('\\');
                        out.push(e);
                    }
                    None => break,
                },
                c => out.push(c),
            }
        }
        Err(TemplateError::Syntax("unterminated string".into()))
    }

    /// `name` after `namespace.` or `namespace["name"]`.
    fn variable_after_namespace(&mut self, ns: &str) -> Result<Variable, TemplateError> {
        if !matches!(ns, "internal" | "external") {
            return Err(TemplateError::UnknownNamespace(ns.to_owned()));
        }
        let name = if self.eat('[') {
            let n = self.string()?;
            self.expect(']')?;
            n
        } else {
            self.expect('.')?;
            self.ident()?.to_owned()
        };
        if name.is_empty() {
            return Err(TemplateError::Syntax("empty trait name".into()));
        }
        Ok(Variable { name })
    }

    fn variable(&mut self) -> Result<Variable, TemplateError> {
        let ns = self.ident()?.to_owned();
        self.variable_after_namespace(&ns)
    }

    fn expr(&mut self) -> Result<Expr, TemplateError> {
        let first = self.ident()?.to_owned();
        self.skip_ws();
        // A function call is `ns.fn(`; look ahead for the parenthesis.
        if self.rest().starts_with('.') {
            let save = self.pos;
            self.pos += 1;
            if let Ok(second) = self.ident().map(str::to_owned) {
                self.skip_ws();
                if self.rest().starts_with('(') {
                    return self.call(&first, &second);
                }
            }
            self.pos = save;
        }
        self.variable_after_namespace(&first).map(Expr::Var)
    }

    fn call(&mut self, ns: &str, func: &str) -> Result<Expr, TemplateError> {
        self.expect('(')?;
        let expr = match (ns, func) {
            ("email", "local") => Expr::EmailLocal(self.variable()?),
            ("regexp", "replace") => {
                let var = self.variable()?;
                self.expect(',')?;
                let pattern = self.string()?;
                self.expect(',')?;
                let replacement = self.string()?;
                let re = regex::RegexBuilder::new(&pattern)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| TemplateError::Regex {
                        pattern: pattern.clone(),
                        reason: regex_reason(&e),
                    })?;
                Expr::RegexpReplace {
                    var,
                    re,
                    replacement,
                }
            }
            _ => return Err(TemplateError::UnknownFunction(format!("{ns}.{func}"))),
        };
        self.expect(')')?;
        Ok(expr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traits() -> Traits {
        [
            ("logins", vec!["alice", "ubuntu"]),
            (
                "email",
                vec!["alice@example.com", "Bob <bob@example.com>", "nope"],
            ),
            ("groups", vec!["dev-web", "ops", "dev-db"]),
            ("http://claims/x", vec!["claim"]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
        .collect()
    }

    #[test]
    fn expands_variables() {
        let t = traits();
        assert_eq!(expand("{{internal.logins}}", &t), ["alice", "ubuntu"]);
        assert_eq!(expand("{{ external.logins }}", &t), ["alice", "ubuntu"]);
        assert_eq!(
            expand("ssh-{{internal.logins}}-x", &t),
            ["ssh-alice-x", "ssh-ubuntu-x"]
        );
        assert_eq!(expand("{{external[\"http://claims/x\"]}}", &t), ["claim"]);
        assert_eq!(expand("root", &t), ["root"]);
        assert!(expand("{{internal.missing}}", &t).is_empty());
    }

    #[test]
    fn functions() {
        let t = traits();
        assert_eq!(
            expand("{{email.local(external.email)}}", &t),
            ["alice", "bob"]
        );
        assert_eq!(
            expand(
                r#"{{regexp.replace(external.groups, "^dev-(.*)$", "$1")}}"#,
                &t
            ),
            ["web", "db"]
        );
    }

    #[test]
    fn rejects() {
        assert!(matches!(
            validate_template("{{foo.bar}}"),
            Err(TemplateError::UnknownNamespace(n)) if n == "foo"
        ));
        assert!(matches!(
            validate_template("{{strings.upper(internal.logins)}}"),
            Err(TemplateError::UnknownFunction(_))
        ));
        for bad in [
            "{{internal.logins",
            "{{}}",
            "{{internal}}",
            "{{internal.logins}}{{internal.logins}}",
            "{{internal.logins extra}}",
            r#"{{regexp.replace(external.groups, "^(", "$1")}}"#,
            r#"{{regexp.replace(external.groups, "x")}}"#,
            "x}}",
        ] {
            assert!(validate_template(bad).is_err(), "{bad:?}");
        }
    }
}
