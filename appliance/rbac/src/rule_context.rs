//! Evaluating a parsed `where` clause against what a rule's caller knows of the request: the
//! user (name, roles, traits), and for session recordings and session trackers the session
//! (its participants, its user, its login); a resource's labels where the caller has them.
//!
//! This module owns what each field means and the fail-closed rule: a field the context does not
//! provide (no session for this kind, a name Hop does not know), a function Hop does not know, or
//! arguments of the wrong shape make the clause *undecidable*. [`crate::AccessChecker`] then lets
//! an allow rule grant nothing and a deny rule deny. It must never guess a missing value.

use std::collections::BTreeMap;

use crate::predicate::{Call, Predicate, Value};

/// The user a rule is evaluated for.
#[derive(Debug, Clone, Copy)]
pub struct UserFacts<'a> {
    /// `user.metadata.name`.
    pub name: &'a str,
    /// `user.spec.roles`.
    pub roles: &'a [String],
    /// `user.spec.traits["k"]`, `internal["k"]`, `external["k"]`, `internal.k`, `external.k`.
    pub traits: &'a BTreeMap<String, Vec<String>>,
}

/// The session a rule about `session` (recordings) or `session_tracker` is evaluated for.
#[derive(Debug, Clone, Copy)]
pub struct SessionFacts<'a> {
    /// `session.participants`: everyone who took part, its owner included.
    pub participants: &'a [String],
    /// `session.user`: who started it.
    pub user: &'a str,
    /// `session.login`: the login it ran as.
    pub login: &'a str,
}

/// What one rule check knows. Every part is optional: a missing part makes the fields it
/// provides undecidable.
#[derive(Debug, Clone, Copy, Default)]
pub struct RuleContext<'a> {
    /// The caller.
    pub user: Option<UserFacts<'a>>,
    /// The session the request is about.
    pub session: Option<SessionFacts<'a>>,
    /// `resource.metadata.labels["k"]`: the labels of the resource the request is about.
    pub labels: Option<&'a BTreeMap<String, String>>,
}

/// Why a clause cannot be decided in a context (the rule then fails closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Undecidable {
    /// A field this context does not provide, or that Hop does not know.
    #[error("field {0} is not known here")]
    UnknownField(String),
    /// A function Hop does not evaluate.
    #[error("function {0}() is not supported")]
    UnknownFunction(String),
    /// A function called with the wrong number or kind of arguments.
    #[error("{0}() takes {1}")]
    BadArguments(String, &'static str),
}

/// A value during evaluation: one string or a list of strings.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Val {
    One(String),
    Many(Vec<String>),
    Bool(bool),
}

impl Val {
    fn items(&self) -> Option<Vec<&str>> {
        match self {
            Self::One(s) => Some(vec![s.as_str()]),
            Self::Many(v) => Some(v.iter().map(String::as_str).collect()),
            Self::Bool(_) => None,
        }
    }
}

/// Does `predicate` hold in `ctx`?
pub fn evaluate(predicate: &Predicate, ctx: &RuleContext<'_>) -> Result<bool, Undecidable> {
    match predicate {
        // Both sides are decided: an undecidable side is never skipped by short-circuiting.
        Predicate::Or(a, b) => {
            let (a, b) = (evaluate(a, ctx)?, evaluate(b, ctx)?);
            Ok(a || b)
        }
        Predicate::And(a, b) => {
            let (a, b) = (evaluate(a, ctx)?, evaluate(b, ctx)?);
            Ok(a && b)
        }
        Predicate::Not(a) => Ok(!evaluate(a, ctx)?),
        Predicate::Literal(b) => Ok(*b),
        Predicate::Call(call) => match call_value(call, ctx)? {
            Val::Bool(b) => Ok(b),
            _ => Err(Undecidable::BadArguments(
                call.name.clone(),
                "is not a condition",
            )),
        },
    }
}

fn call_value(call: &Call, ctx: &RuleContext<'_>) -> Result<Val, Undecidable> {
    let bad = |what| Undecidable::BadArguments(call.name.clone(), what);
    let args = call
        .args
        .iter()
        .map(|a| value(a, ctx))
        .collect::<Result<Vec<_>, _>>()?;
    let pair = || match args.as_slice() {
        [a, b] => match (a.items(), b.items()) {
            (Some(a), Some(b)) => Ok((a, b)),
            _ => Err(bad("two strings or lists")),
        },
        _ => Err(bad("two arguments")),
    };
    match call.name.as_str() {
        "contains" => {
            let (list, items) = pair()?;
            match items.as_slice() {
                [item] => Ok(Val::Bool(list.contains(item))),
                _ => Err(bad("a list and one string")),
            }
        }
        "equals" => {
            let (mut a, mut b) = pair()?;
            a.sort_unstable();
            b.sort_unstable();
            Ok(Val::Bool(a == b))
        }
        other => Err(Undecidable::UnknownFunction(other.to_owned())),
    }
}

fn value(v: &Value, ctx: &RuleContext<'_>) -> Result<Val, Undecidable> {
    match v {
        Value::Str(s) => Ok(Val::One(s.clone())),
        Value::Call(c) => call_value(c, ctx),
        Value::Field { path, key } => field(path, key.as_deref(), ctx),
    }
}

fn field(path: &[String], key: Option<&str>, ctx: &RuleContext<'_>) -> Result<Val, Undecidable> {
    let names: Vec<&str> = path.iter().map(String::as_str).collect();
    let unknown = || {
        let mut shown = names.join(".");
        if let Some(k) = key {
            shown.push_str(&format!("[{k:?}]"));
        }
        Undecidable::UnknownField(shown)
    };
    let trait_values = |name: &str| {
        let user = ctx.user.ok_or_else(unknown)?;
        Ok(Val::Many(
            user.traits.get(name).cloned().unwrap_or_default(),
        ))
    };
    match (names.as_slice(), key) {
        (["user", "metadata", "name"], None) => {
            Ok(Val::One(ctx.user.ok_or_else(unknown)?.name.into()))
        }
        (["user", "spec", "roles"], None) => {
            Ok(Val::Many(ctx.user.ok_or_else(unknown)?.roles.to_vec()))
        }
        (["user", "spec", "traits"] | ["internal"] | ["external"], Some(k)) => trait_values(k),
        (["internal" | "external", name], None) => trait_values(name),
        (["session", "participants"], None) => Ok(Val::Many(
            ctx.session.ok_or_else(unknown)?.participants.to_vec(),
        )),
        (["session", "user"], None) => Ok(Val::One(ctx.session.ok_or_else(unknown)?.user.into())),
        (["session", "login"], None) => Ok(Val::One(ctx.session.ok_or_else(unknown)?.login.into())),
        (["resource", "metadata", "labels"], Some(k)) => {
            let labels = ctx.labels.ok_or_else(unknown)?;
            Ok(Val::One(labels.get(k).cloned().ok_or_else(unknown)?))
        }
        _ => Err(unknown()),
    }
}

/// A field or function in `predicate` that no context provides, for operators' warnings.
#[must_use]
pub fn unsupported(predicate: &Predicate) -> Option<String> {
    let names = vec!["u".to_owned()];
    let traits = BTreeMap::new();
    let labels = BTreeMap::new();
    let full = RuleContext {
        user: Some(UserFacts {
            name: "u",
            roles: &names,
            traits: &traits,
        }),
        session: Some(SessionFacts {
            participants: &names,
            user: "u",
            login: "u",
        }),
        labels: Some(&labels),
    };
    match evaluate(predicate, &full) {
        // A missing label is not a missing field: it depends on the resource.
        Err(Undecidable::UnknownField(f)) if f.starts_with("resource.metadata.labels[") => None,
        Err(e) => Some(e.to_string()),
        Ok(_) => None,
    }
}

#[cfg(test)]
#[path = "rule_context_tests.rs"]
mod tests;
