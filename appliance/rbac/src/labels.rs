//! Label selectors: the `node_labels`, `db_labels`, `app_labels`, … maps of a role.
//!
//! This module owns the selector types as written in YAML ([`LabelValues`], [`Labels`]), the
//! pattern language (`*`, globs such as `env-*`, and `^full regex$`) and matching a compiled
//! selector against a resource's labels. Matching must stay allocation-free and linear-time
//! (the `regex` crate guarantees the latter); it never expands trait templates (see `traits`).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::validation::{FieldPath, Problem, Segment, ValidationError};

/// The value side of a label selector: one string or a list, each a pattern.
///
/// `env: prod` and `env: [prod, staging]` both parse; serialization writes a single value as a
/// plain string.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct LabelValues(pub Vec<String>);

impl LabelValues {
    /// A single pattern.
    #[must_use]
    pub fn one(v: impl Into<String>) -> Self {
        Self(vec![v.into()])
    }

    /// The patterns.
    #[must_use]
    pub fn values(&self) -> &[String] {
        &self.0
    }
}

impl<S: Into<String>> FromIterator<S> for LabelValues {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        Self(iter.into_iter().map(Into::into).collect())
    }
}

impl Serialize for LabelValues {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => serializer.serialize_str(one),
            many => many.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for LabelValues {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ValuesVisitor;

        impl<'de> Visitor<'de> for ValuesVisitor {
            type Value = LabelValues;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a label value or a list of label values")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<LabelValues, E> {
                Ok(LabelValues(vec![v.to_owned()]))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<LabelValues, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<String>()? {
                    out.push(v);
                }
                Ok(LabelValues(out))
            }
        }

        deserializer.deserialize_any(ValuesVisitor)
    }
}

/// A label selector as written in a role: key pattern → value patterns.
pub type Labels = BTreeMap<String, LabelValues>;

/// Builds a selector from `(key, value)` pairs: `labels([("*", "*")])`.
#[must_use]
pub fn labels<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Labels {
    let mut out = Labels::new();
    for (k, v) in pairs {
        out.entry(k.to_owned()).or_default().0.push(v.to_owned());
    }
    out
}

/// The wildcard.
pub(crate) const WILDCARD: &str = "*";

/// Compiled regexes are capped so that a hostile pattern cannot take unbounded memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// One compiled pattern.
#[derive(Debug, Clone)]
pub(crate) enum Pattern {
    /// `*`
    Any,
    /// No wildcard: exact, case-sensitive comparison.
    Literal(String),
    /// A glob (`env-*`) or a `^regex$`, anchored.
    Regex(regex::Regex),
}

/// The first line of a regex error that says what is wrong (the engine's message is
/// multi-line, with the pattern and a caret).
pub(crate) fn regex_reason(err: &regex::Error) -> String {
    match err {
        regex::Error::Syntax(text) => text
            .lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix("error: "))
            .unwrap_or_else(|| text.lines().last().unwrap_or("syntax error"))
            .trim()
            .to_owned(),
        regex::Error::CompiledTooBig(limit) => format!("compiled regex exceeds {limit} bytes"),
        other => other.to_string().replace('\n', " "),
    }
}

impl Pattern {
    /// Compiles a pattern; the error carries a one-line reason.
    pub(crate) fn compile(p: &str) -> Result<Self, Problem> {
        if p == WILDCARD {
            return Ok(Self::Any);
        }
        let source = if p.len() >= 2 && p.starts_with('^') && p.ends_with('$') {
            // The anchors hold for the whole pattern: `^a|b$` is "exactly a or exactly b", not
            // "starts with a, or ends with b".
            format!("^(?:{})$", &p[1..p.len() - 1])
        } else if p.contains('*') {
            let parts: Vec<String> = p.split('*').map(regex::escape).collect();
            format!("^{}$", parts.join(".*"))
        } else {
            return Ok(Self::Literal(p.to_owned()));
        };
        regex::RegexBuilder::new(&source)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map(Self::Regex)
            .map_err(|e| Problem::InvalidRegex {
                pattern: p.to_owned(),
                reason: regex_reason(&e),
            })
    }

    /// `template` with `$1`, `${name}`… replaced by the groups of this pattern's match of `s`
    /// (a literal or `*` pattern has none: `template` as is).
    pub(crate) fn expand_captures(&self, s: &str, template: &str) -> String {
        match self {
            Self::Regex(r) if template.contains('$') => r
                .captures(s)
                .map(|c| {
                    let mut out = String::new();
                    c.expand(template, &mut out);
                    out
                })
                .unwrap_or_default(),
            _ => template.to_owned(),
        }
    }

    /// Does `s` match?
    pub(crate) fn matches(&self, s: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Literal(l) => l == s,
            Self::Regex(r) => r.is_match(s),
        }
    }
}

/// A compiled selector: Teleport's `MatchLabels`.
///
/// - An empty selector matches nothing.
/// - `'*': '*'` matches everything, including a resource without labels.
/// - Otherwise every selector key must be satisfied: the resource has a label whose key matches
///   the key pattern and whose value matches one of the value patterns. A key whose values are
///   empty (e.g. a template that expanded to nothing) is never satisfied.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selector {
    match_all: bool,
    entries: Vec<(Pattern, Vec<Pattern>)>,
}

impl Selector {
    /// Compiles `labels`, naming `field` (and the offending key) on error.
    pub(crate) fn compile(field: &FieldPath, labels: &Labels) -> Result<Self, ValidationError> {
        let mut entries = Vec::with_capacity(labels.len());
        let mut match_all = false;
        for (key, values) in labels {
            let at = |problem| {
                ValidationError::new(field.clone(), problem).at_entry(Segment::Key(key.clone()))
            };
            if key.is_empty() {
                return Err(at(Problem::Invalid("empty label key".into())));
            }
            let key_pattern = Pattern::compile(key).map_err(at)?;
            let mut value_patterns = Vec::with_capacity(values.0.len());
            for v in &values.0 {
                value_patterns.push(Pattern::compile(v).map_err(at)?);
            }
            if matches!(key_pattern, Pattern::Any)
                && value_patterns.iter().any(|p| matches!(p, Pattern::Any))
            {
                match_all = true;
            }
            entries.push((key_pattern, value_patterns));
        }
        Ok(Self { match_all, entries })
    }

    /// A selector that matches nothing, not even `'*': '*'` targets.
    pub(crate) fn never() -> Self {
        Self {
            match_all: false,
            entries: vec![(Pattern::Any, Vec::new())],
        }
    }

    /// Does the selector match a resource with `target` labels?
    pub(crate) fn matches(&self, target: &BTreeMap<String, String>) -> bool {
        if self.match_all {
            return true;
        }
        if self.entries.is_empty() {
            return false;
        }
        self.entries.iter().all(|(key, values)| match key {
            Pattern::Literal(k) => target
                .get(k)
                .is_some_and(|v| values.iter().any(|p| p.matches(v))),
            _ => target
                .iter()
                .any(|(k, v)| key.matches(k) && values.iter().any(|p| p.matches(v))),
        })
    }
}

/// Checks that every key and value of `labels` compiles (templated entries are checked by the
/// caller, after expansion).
pub(crate) fn validate_selector(field: &FieldPath, labels: &Labels) -> Result<(), ValidationError> {
    Selector::compile(field, labels).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn sel(pairs: &[(&str, &str)]) -> Selector {
        Selector::compile(&FieldPath::root(), &labels(pairs.iter().copied())).unwrap()
    }

    #[test]
    fn wildcard_matches_everything() {
        let s = sel(&[("*", "*")]);
        assert!(s.matches(&target(&[])));
        assert!(s.matches(&target(&[("env", "prod")])));
    }

    #[test]
    fn empty_selector_matches_nothing() {
        assert!(!sel(&[]).matches(&target(&[])));
        assert!(!sel(&[]).matches(&target(&[("env", "prod")])));
    }

    #[test]
    fn all_keys_must_match() {
        let s = sel(&[("env", "prod"), ("team", "db")]);
        assert!(s.matches(&target(&[("env", "prod"), ("team", "db"), ("x", "y")])));
        assert!(!s.matches(&target(&[("env", "prod")])));
        assert!(!s.matches(&target(&[("env", "Prod"), ("team", "db")])));
    }

    #[test]
    fn globs_and_regexes() {
        let s = sel(&[("env", "stag*")]);
        assert!(s.matches(&target(&[("env", "staging")])));
        assert!(!s.matches(&target(&[("env", "prestaging")])));
        let s = sel(&[("env", "^(dev|test)-[0-9]+$")]);
        assert!(s.matches(&target(&[("env", "dev-12")])));
        assert!(!s.matches(&target(&[("env", "dev-x")])));
        // The anchors hold for every alternative: `^a|b$` is exactly a or exactly b.
        let s = sel(&[("env", "^dev|prod$")]);
        for (value, want) in [
            ("dev", true),
            ("prod", true),
            ("devil", false),
            ("preprod", false),
        ] {
            assert_eq!(s.matches(&target(&[("env", value)])), want, "{value}");
        }
        // Regex metacharacters in a glob are literal.
        let s = sel(&[("host", "a.b*")]);
        assert!(s.matches(&target(&[("host", "a.bc")])));
        assert!(!s.matches(&target(&[("host", "axbc")])));
        // Glob key.
        let s = sel(&[("team-*", "db")]);
        assert!(s.matches(&target(&[("team-a", "db")])));
        assert!(!s.matches(&target(&[("team-a", "web")])));
        // Wildcard key with a specific value: any label with that value.
        let s = sel(&[("*", "prod")]);
        assert!(s.matches(&target(&[("x", "prod")])));
        assert!(!s.matches(&target(&[("x", "dev")])));
    }

    #[test]
    fn list_values_any_of() {
        let s = sel(&[("env", "prod"), ("env", "staging")]);
        assert!(s.matches(&target(&[("env", "staging")])));
        assert!(!s.matches(&target(&[("env", "dev")])));
    }

    #[test]
    fn empty_values_never_match() {
        let mut l = Labels::new();
        l.insert("env".into(), LabelValues(vec![]));
        let s = Selector::compile(&FieldPath::root(), &l).unwrap();
        assert!(!s.matches(&target(&[("env", "prod")])));
    }

    #[test]
    fn bad_regex_is_one_line() {
        let err = Selector::compile(
            &FieldPath::new("spec.allow.node_labels"),
            &labels([("env", "^(env$")]),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.allow.node_labels: invalid regex \"^(env$\": unclosed group"
        );
    }
}
