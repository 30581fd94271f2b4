//! An ordered YAML value: what a kubeconfig is read into and written back from, so that the
//! entries and keys Hop does not own keep their order and their values (comments are lost).
//!
//! `serde_json::Value` would sort the keys; this keeps a map as the list of its pairs.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Pairs in the order the file has them.
    Map(Vec<(Node, Node)>),
}

impl Node {
    pub fn str(s: impl Into<String>) -> Self {
        Self::Str(s.into())
    }

    /// A map of string keys, in the order given.
    pub fn map<const N: usize>(pairs: [(&str, Node); N]) -> Self {
        Self::Map(pairs.into_iter().map(|(k, v)| (Self::str(k), v)).collect())
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value of string key `key` in a map.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Self::Map(pairs) => pairs
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The value of `key` in a map, inserted at the end as `default` when missing.
    pub fn entry(&mut self, key: &str, default: Node) -> Option<&mut Node> {
        let Self::Map(pairs) = self else {
            return None;
        };
        let i = match pairs.iter().position(|(k, _)| k.as_str() == Some(key)) {
            Some(i) => i,
            None => {
                pairs.push((Self::str(key), default));
                pairs.len() - 1
            }
        };
        Some(&mut pairs[i].1)
    }

    /// Sets `key` of a map (in place when present, else at the end).
    pub fn set(&mut self, key: &str, value: Node) {
        if let Some(v) = self.entry(key, Node::Null) {
            *v = value;
        }
    }
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Null => s.serialize_unit(),
            Self::Bool(b) => s.serialize_bool(*b),
            Self::Int(i) => s.serialize_i64(*i),
            Self::UInt(u) => s.serialize_u64(*u),
            Self::Float(f) => s.serialize_f64(*f),
            Self::Str(v) => s.serialize_str(v),
            Self::Seq(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for i in items {
                    seq.serialize_element(i)?;
                }
                seq.end()
            }
            Self::Map(pairs) => {
                let mut map = s.serialize_map(Some(pairs.len()))?;
                for (k, v) in pairs {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::UInt(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::str(v))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(i) = a.next_element()? {
            items.push(i);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
        let mut pairs = Vec::new();
        while let Some(kv) = a.next_entry()? {
            pairs.push(kv);
        }
        Ok(Node::Map(pairs))
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}
