//! Small helpers over `ciborium` values: reading one CBOR item off the front of a byte slice,
//! and typed lookups in CBOR maps keyed by integers or text.

use ciborium::value::{Integer, Value};

/// At most this many bytes of CBOR are read for one item (a COSE key, an attestation object).
pub(crate) const MAX_ITEM: usize = 64 * 1024;

/// Decodes one CBOR item from the front of `bytes`; returns it and the bytes after it.
pub(crate) fn take_item(bytes: &[u8]) -> Result<(Value, &[u8]), String> {
    if bytes.len() > MAX_ITEM * 4 {
        return Err(format!(
            "{} bytes is more than any authenticator sends",
            bytes.len()
        ));
    }
    let mut rest = bytes;
    let value: Value = ciborium::de::from_reader_with_recursion_limit(&mut rest, 16)
        .map_err(|e| format!("not CBOR: {e}"))?;
    Ok((value, rest))
}

/// Decodes exactly one CBOR item spanning all of `bytes`.
pub(crate) fn whole_item(bytes: &[u8]) -> Result<Value, String> {
    let (v, rest) = take_item(bytes)?;
    if !rest.is_empty() {
        return Err(format!("{} bytes after the CBOR item", rest.len()));
    }
    Ok(v)
}

/// The entries of a CBOR map.
pub(crate) fn map(v: &Value) -> Result<&[(Value, Value)], String> {
    match v {
        Value::Map(entries) => Ok(entries),
        _ => Err("expected a CBOR map".into()),
    }
}

/// The value under integer key `key`; a key present twice is refused.
pub(crate) fn by_int(entries: &[(Value, Value)], key: i64) -> Result<Option<&Value>, String> {
    let want = Integer::from(key);
    unique(
        entries,
        |k| matches!(k, Value::Integer(i) if *i == want),
        &key.to_string(),
    )
}

/// The value under text key `key`; a key present twice is refused.
pub(crate) fn by_text<'a>(
    entries: &'a [(Value, Value)],
    key: &str,
) -> Result<Option<&'a Value>, String> {
    unique(entries, |k| matches!(k, Value::Text(t) if t == key), key)
}

fn unique<'a>(
    entries: &'a [(Value, Value)],
    is_key: impl Fn(&Value) -> bool,
    name: &str,
) -> Result<Option<&'a Value>, String> {
    let mut found = entries.iter().filter(|(k, _)| is_key(k)).map(|(_, v)| v);
    let first = found.next();
    if found.next().is_some() {
        return Err(format!("key {name} appears twice"));
    }
    Ok(first)
}

pub(crate) fn as_int(v: &Value, what: &str) -> Result<i64, String> {
    match v {
        Value::Integer(i) => {
            i64::try_from(i128::from(*i)).map_err(|_| format!("{what} is out of range"))
        }
        _ => Err(format!("{what} is not an integer")),
    }
}

pub(crate) fn as_bytes<'a>(v: &'a Value, what: &str) -> Result<&'a [u8], String> {
    match v {
        Value::Bytes(b) => Ok(b),
        _ => Err(format!("{what} is not a byte string")),
    }
}

pub(crate) fn as_text<'a>(v: &'a Value, what: &str) -> Result<&'a str, String> {
    match v {
        Value::Text(t) => Ok(t),
        _ => Err(format!("{what} is not a text string")),
    }
}
