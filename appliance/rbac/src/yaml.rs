//! A located YAML tree and a serde `Deserializer` over it.
//!
//! This module owns turning operator text into [`Node`]s (every node knows its line) through
//! serde-saphyr with a strict budget, and deserializing typed resources from those nodes so that
//! every error carries the line and field path where it happened. It must never panic or
//! recurse without bound on hostile input: depth, node count, aliases and scalar bytes are capped
//! by the budget before a tree is built.

use std::borrow::Cow;
use std::fmt;

use serde::de::value::StrDeserializer;
use serde::de::{self, DeserializeSeed, Expected, IntoDeserializer, Unexpected, Visitor};
use serde::{Deserialize, Deserializer};
use serde_saphyr::{Location, MessageFormatter, Spanned};

use crate::validation::{FieldPath, Segment};

/// One YAML node with its position.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// 1-based line where the node is used (0 if unknown).
    pub(crate) line: u64,
    /// Where the node is defined (differs from `line` for aliases); used to recover the source
    /// text of plain scalars.
    defined: Location,
    pub(crate) value: Value,
}

/// The node's content. Scalars keep serde-saphyr's resolution (YAML 1.2 core schema with strict
/// booleans); string targets read plain scalars back from the source text.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = Spanned::<Value>::deserialize(deserializer)?;
        Ok(Self {
            line: s.referenced.line(),
            defined: s.defined,
            value: s.value,
        })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ValueVisitor;

        impl<'de> Visitor<'de> for ValueVisitor {
            type Value = Value;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML value")
            }

            fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
                Ok(Value::Bool(v))
            }

            fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
                Ok(Value::Int(v.into()))
            }

            fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
                Ok(Value::Int(v.into()))
            }

            fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
                Ok(Value::Int(v))
            }

            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
                i128::try_from(v)
                    .map(Value::Int)
                    .map_err(|_| E::custom("integer too large"))
            }

            fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
                Ok(Value::Float(v))
            }

            fn visit_str<E>(self, v: &str) -> Result<Value, E> {
                Ok(Value::Str(v.to_owned()))
            }

            fn visit_string<E>(self, v: String) -> Result<Value, E> {
                Ok(Value::Str(v))
            }

            fn visit_unit<E>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }

            fn visit_none<E>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }

            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
                Value::deserialize(d)
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
                let mut items = Vec::new();
                while let Some(n) = seq.next_element::<Node>()? {
                    items.push(n);
                }
                Ok(Value::Seq(items))
            }

            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(k) = map.next_key::<Node>()? {
                    let v = map.next_value::<Node>()?;
                    entries.push((k, v));
                }
                Ok(Value::Map(entries))
            }
        }

        deserializer.deserialize_any(ValueVisitor)
    }
}

impl Node {
    /// The value under `key` of a mapping node.
    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(&k.value, Value::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// A string scalar's content.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The line of the deepest node along `path` (a key's own line for mapping entries), or of
    /// the closest ancestor that exists.
    pub(crate) fn locate(&self, path: &FieldPath) -> u64 {
        let mut node = self;
        let mut line = self.line;
        for seg in path.segments() {
            match (seg, &node.value) {
                (Segment::Key(k), Value::Map(entries)) => {
                    let Some((key, value)) = entries
                        .iter()
                        .find(|(key, _)| key_text(key, "").as_deref() == Some(k.as_str()))
                    else {
                        break;
                    };
                    line = key.line;
                    node = value;
                }
                (Segment::Index(i), Value::Seq(items)) => {
                    let Some(item) = items.get(*i) else { break };
                    line = item.line;
                    node = item;
                }
                _ => break,
            }
        }
        line
    }

    /// `Unexpected` for error messages.
    fn unexpected(&self) -> Unexpected<'_> {
        match &self.value {
            Value::Null => Unexpected::Other("null"),
            Value::Bool(b) => Unexpected::Bool(*b),
            Value::Int(i) => match i64::try_from(*i) {
                Ok(v) => Unexpected::Signed(v),
                Err(_) => Unexpected::Other("integer"),
            },
            Value::Float(f) => Unexpected::Float(*f),
            Value::Str(s) => Unexpected::Str(s),
            Value::Seq(_) => Unexpected::Seq,
            Value::Map(_) => Unexpected::Map,
        }
    }
}

/// A scalar's text as a string target sees it: the string itself, or the source spelling of a
/// plain `true`/`42`/`1.10` (falling back to its canonical form). `None` for null and
/// collections.
fn key_text<'a>(node: &'a Node, input: &'a str) -> Option<Cow<'a, str>> {
    let source = || {
        let span = node.defined.span();
        let start = usize::try_from(span.byte_offset()?).ok()?;
        let len = usize::try_from(span.byte_len()?).ok()?;
        input.get(start..start.checked_add(len)?)
    };
    match &node.value {
        Value::Str(s) => Some(Cow::Borrowed(s)),
        Value::Bool(b) => Some(source().map_or_else(|| Cow::Owned(b.to_string()), Cow::Borrowed)),
        Value::Int(i) => Some(source().map_or_else(|| Cow::Owned(i.to_string()), Cow::Borrowed)),
        Value::Float(f) => Some(source().map_or_else(|| Cow::Owned(f.to_string()), Cow::Borrowed)),
        Value::Null | Value::Seq(_) | Value::Map(_) => None,
    }
}

/// A deserialization error with the line and path where it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeError {
    pub(crate) message: String,
    pub(crate) line: Option<u64>,
    pub(crate) path: FieldPath,
}

impl DeError {
    fn new(message: String) -> Self {
        Self {
            message,
            line: None,
            path: FieldPath::root(),
        }
    }

    /// Records where the error happened unless a deeper node already did.
    fn at(mut self, line: u64, path: &FieldPath) -> Self {
        if self.line.is_none() {
            self.line = Some(line);
            self.path = path.clone();
        }
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

/// Beyond this many known fields, an unknown-field error suggests one instead of listing all.
const MAX_LISTED_FIELDS: usize = 12;

/// The known field nearest to `field` by edit distance, if it is plausibly a typo of it.
fn closest(field: &str, expected: &[&'static str]) -> Option<&'static str> {
    let limit = (field.chars().count() / 3).max(1);
    expected
        .iter()
        .map(|e| (edit_distance(field, e), *e))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, e)| e)
}

/// Levenshtein distance over chars (inputs are field names: short).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut row = Vec::with_capacity(b.len() + 1);
        row.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            row.push(substitute.min(prev[j + 1] + 1).min(row[j] + 1));
        }
        prev = row;
    }
    prev[b.len()]
}

fn one_of(expected: &[&str]) -> String {
    if expected.is_empty() {
        "none are expected".to_owned()
    } else if let [only] = expected {
        format!("expected {only}")
    } else {
        format!("expected one of {}", expected.join(", "))
    }
}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self::new(msg.to_string())
    }

    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        Self::new(format!("expected {exp}, found {unexp}"))
    }

    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        Self::new(format!("invalid value {unexp}, expected {exp}"))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        Self::new(format!("unknown value {variant:?}, {}", one_of(expected)))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        if expected.len() <= MAX_LISTED_FIELDS {
            return Self::new(format!("unknown field {field:?}, {}", one_of(expected)));
        }
        // Long lists (a role's conditions) would swamp the line: suggest the nearest instead.
        Self::new(match closest(field, expected) {
            Some(near) => format!("unknown field {field:?} (did you mean {near:?}?)"),
            None => format!("unknown field {field:?}"),
        })
    }

    fn missing_field(field: &'static str) -> Self {
        Self::new(format!("missing field {field:?}"))
    }

    fn duplicate_field(field: &'static str) -> Self {
        Self::new(format!("duplicate field {field:?}"))
    }
}

/// Deserializes `T` from `node`; `input` is the source the node was parsed from.
pub(crate) fn from_node<T: de::DeserializeOwned>(node: &Node, input: &str) -> Result<T, DeError> {
    let path = FieldPath::root();
    T::deserialize(NodeDe {
        node,
        input,
        path: &path,
    })
    .map_err(|e| e.at(node.line, &path))
}

struct NodeDe<'a, 'p> {
    node: &'a Node,
    input: &'a str,
    path: &'p FieldPath,
}

impl<'a> NodeDe<'a, '_> {
    fn invalid_type(&self, exp: &dyn Expected) -> DeError {
        de::Error::invalid_type(self.node.unexpected(), exp)
    }

    fn text(&self) -> Option<Cow<'a, str>> {
        key_text(self.node, self.input)
    }
}

struct SeqDe<'a, 'p> {
    items: std::slice::Iter<'a, Node>,
    index: usize,
    input: &'a str,
    path: &'p FieldPath,
}

impl<'de> de::SeqAccess<'de> for SeqDe<'de, '_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some(item) = self.items.next() else {
            return Ok(None);
        };
        let path = self.path.index(self.index);
        self.index += 1;
        seed.deserialize(NodeDe {
            node: item,
            input: self.input,
            path: &path,
        })
        .map(Some)
        .map_err(|e| e.at(item.line, &path))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapDe<'a, 'p> {
    entries: std::slice::Iter<'a, (Node, Node)>,
    current: Option<&'a (Node, Node)>,
    input: &'a str,
    path: &'p FieldPath,
}

impl<'de> de::MapAccess<'de> for MapDe<'de, '_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some(entry) = self.entries.next() else {
            return Ok(None);
        };
        self.current = Some(entry);
        let key = &entry.0;
        seed.deserialize(NodeDe {
            node: key,
            input: self.input,
            path: self.path,
        })
        .map(Some)
        .map_err(|e| e.at(key.line, self.path))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some((key, value)) = self.current.take() else {
            return Err(de::Error::custom("value requested before key"));
        };
        let name = key_text(key, self.input).map_or_else(|| "?".to_owned(), Cow::into_owned);
        let path = self.path.key(&name);
        // Errors about a collection value point at its key's line (`metadata:`), not at the
        // first nested line.
        seed.deserialize(NodeDe {
            node: value,
            input: self.input,
            path: &path,
        })
        .map_err(|e| e.at(key.line, &path))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

impl<'de, 'p> NodeDe<'de, 'p> {
    fn seq(&self, items: &'de [Node]) -> SeqDe<'de, 'p> {
        SeqDe {
            items: items.iter(),
            index: 0,
            input: self.input,
            path: self.path,
        }
    }

    fn map(&self, entries: &'de [(Node, Node)]) -> MapDe<'de, 'p> {
        MapDe {
            entries: entries.iter(),
            current: None,
            input: self.input,
            path: self.path,
        }
    }
}

impl<'de> Deserializer<'de> for NodeDe<'de, '_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => {
                if let Ok(v) = i64::try_from(*i) {
                    visitor.visit_i64(v)
                } else if let Ok(v) = u64::try_from(*i) {
                    visitor.visit_u64(v)
                } else {
                    visitor.visit_i128(*i)
                }
            }
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Str(s) => visitor.visit_borrowed_str(s),
            Value::Seq(items) => visitor.visit_seq(self.seq(items)),
            Value::Map(entries) => visitor.visit_map(self.map(entries)),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Bool(b) => visitor.visit_bool(*b),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.text() {
            Some(Cow::Borrowed(s)) => visitor.visit_borrowed_str(s),
            Some(Cow::Owned(s)) => visitor.visit_string(s),
            None => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Seq(items) => visitor.visit_seq(self.seq(items)),
            // `logins:` with nothing after it reads as an empty list.
            Value::Null => visitor.visit_seq(self.seq(&[])),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Map(entries) => visitor.visit_map(self.map(entries)),
            // `labels:` with nothing after it reads as an empty map.
            Value::Null => visitor.visit_map(self.map(&[])),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        // Only unit variants (`second_factor: otp`) appear in resources.
        match self.text() {
            Some(s) => {
                let de: StrDeserializer<'_, DeError> = s.as_ref().into_deserializer();
                visitor.visit_enum(de)
            }
            None => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf unit unit_struct
    }
}

/// A YAML syntax error or budget breach, with its line when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct YamlError {
    pub(crate) line: Option<u64>,
    pub(crate) message: String,
}

/// Limits for operator-supplied resource files: generous for real files (a few hundred
/// resources), small enough that alias bombs and deep nesting fail fast.
fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: 32,
            max_documents: 4096,
            max_nodes: 500_000,
            max_events: 2_000_000,
            max_aliases: 1_000,
            max_anchors: 1_000,
            max_total_scalar_bytes: 16 << 20,
            max_merge_keys: 1_000,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: 100_000,
            max_replay_stack_depth: 16,
            max_alias_expansions_per_anchor: 1_000,
        },
        strict_booleans: true,
        reject_unsupported_tags: true,
        with_snippet: false,
    }
}

/// Parses a `---`-separated stream; empty documents are skipped.
pub(crate) fn parse_stream(text: &str) -> Result<Vec<Node>, YamlError> {
    serde_saphyr::from_multiple_with_options::<Node>(text, options()).map_err(|e| {
        let e = e.without_snippet();
        let line = e.location().map(|l| l.line()).filter(|l| *l > 0);
        // One line, whatever the input contained.
        let message = serde_saphyr::UserMessageFormatter
            .format_message(e)
            .chars()
            .flat_map(|c| {
                let escape = c.is_control() || matches!(c, '\u{2028}' | '\u{2029}');
                let (a, b) = if escape {
                    (Some(c.escape_debug()), None)
                } else {
                    (None, Some(c))
                };
                a.into_iter().flatten().chain(b)
            })
            .collect();
        YamlError { line, message }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_raw_scalars() {
        let text = "a: 1\nb:\n  c: [x, 007, true, 1.10]\n  d: 'q'\n";
        let docs = parse_stream(text).unwrap();
        assert_eq!(docs.len(), 1);
        let doc = &docs[0];
        assert_eq!(doc.locate(&FieldPath::new("b.c")), 3);
        assert_eq!(doc.locate(&FieldPath::new("b.d")), 4);
        assert_eq!(doc.locate(&FieldPath::new("b.c").index(2)), 3);
        assert_eq!(doc.locate(&FieldPath::new("b.zz")), 2);
        #[derive(serde::Deserialize)]
        struct B {
            c: Vec<String>,
        }
        let b: B = from_node(doc.get("b").unwrap(), text).unwrap();
        assert_eq!(b.c, ["x", "007", "true", "1.10"]);
    }

    #[test]
    fn typo_suggestions() {
        assert_eq!(edit_distance("node_lables", "node_labels"), 2);
        assert_eq!(edit_distance("", "ab"), 2);
        let known = &["node_labels", "db_labels", "logins"];
        assert_eq!(closest("node_lables", known), Some("node_labels"));
        assert_eq!(closest("frobnicate", known), None);
    }
}
