//! Typed configuration resources (roles, users, clusters, …) kept as JSON on any [`Backend`].
//! This module owns the key layout `/resources/<kind>/<name>`, the naming rules for kinds and
//! names, and the mapping of backend outcomes onto resource-level errors. It must never
//! interpret a resource's contents beyond (de)serializing it.

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::{Backend, Item, PutOptions, prefix_end};
use crate::error::StorageError;

/// The longest kind or name accepted, in bytes (a DNS name's limit).
pub const MAX_NAME_LEN: usize = 253;

const RESOURCES_PREFIX: &str = "/resources/";

/// A resource type that can be kept in a [`ResourceStore`].
pub trait StoredResource: Serialize + DeserializeOwned {
    /// The kind segment of its keys, e.g. `"role"`.
    const KIND: &'static str;
    /// Its unique name within the kind.
    fn name(&self) -> &str;
}

/// A value together with the revision it was read at (for a later [`ResourceStore::update`]).
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    /// The resource.
    pub value: T,
    /// The backend revision of its last write.
    pub revision: u64,
}

/// Typed, validated access to resources stored in a [`Backend`].
#[derive(Debug, Clone)]
pub struct ResourceStore {
    backend: Arc<dyn Backend>,
}

impl ResourceStore {
    /// A store over `backend`.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self { backend }
    }

    /// The backend underneath, for watches and non-resource keys.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The resource of type `T` called `name`, if it exists.
    pub fn get<T: StoredResource>(&self, name: &str) -> Result<Option<Versioned<T>>, StorageError> {
        let key = resource_key(T::KIND, name)?;
        self.backend.get(&key)?.map(decode).transpose()
    }

    /// Every resource of type `T`, sorted by name.
    pub fn list<T: StoredResource>(&self) -> Result<Vec<Versioned<T>>, StorageError> {
        self.list_items(T::KIND)?.into_iter().map(decode).collect()
    }

    /// Stores a new resource; [`StorageError::AlreadyExists`] if the name is taken.
    pub fn create<T: StoredResource>(&self, v: &T) -> Result<u64, StorageError> {
        let (key, json) = encode(v)?;
        self.backend.create(&key, &json, PutOptions::default())
    }

    /// Stores the resource whether or not it exists.
    pub fn upsert<T: StoredResource>(&self, v: &T) -> Result<u64, StorageError> {
        let (key, json) = encode(v)?;
        self.backend.put(&key, &json, PutOptions::default())
    }

    /// Writes the resource under a TTL lease (from `expires` on it reads as absent, and a purge
    /// removes it, unless written again before), only if it is still at `expected_revision`
    /// (`None`: only if absent); else [`StorageError::Conflict`].
    pub fn swap_leased<T: StoredResource>(
        &self,
        v: &T,
        expected_revision: Option<u64>,
        expires: std::time::SystemTime,
    ) -> Result<u64, StorageError> {
        let (key, json) = encode(v)?;
        let opts = PutOptions {
            expires: Some(expires),
        };
        self.backend
            .compare_and_swap(&key, expected_revision, &json, opts)
    }

    /// Replaces the resource only if it is still at `expected_revision`:
    /// [`StorageError::Conflict`] if it changed since, [`StorageError::NotFound`] if it is gone.
    pub fn update<T: StoredResource>(
        &self,
        v: &T,
        expected_revision: u64,
    ) -> Result<u64, StorageError> {
        let (key, json) = encode(v)?;
        match self.backend.compare_and_swap(
            &key,
            Some(expected_revision),
            &json,
            PutOptions::default(),
        ) {
            Err(StorageError::Conflict { key }) if self.backend.get(&key)?.is_none() => {
                Err(StorageError::NotFound { key })
            }
            other => other,
        }
    }

    /// Deletes the resource; `false` if it did not exist.
    pub fn delete<T: StoredResource>(&self, name: &str) -> Result<bool, StorageError> {
        self.backend.delete(&resource_key(T::KIND, name)?)
    }

    /// [`Self::get`] for a kind named at run time, as untyped JSON.
    pub fn get_raw(
        &self,
        kind: &str,
        name: &str,
    ) -> Result<Option<Versioned<serde_json::Value>>, StorageError> {
        let key = resource_key(kind, name)?;
        self.backend.get(&key)?.map(decode).transpose()
    }

    /// [`Self::list`] for a kind named at run time, as untyped JSON.
    pub fn list_raw(&self, kind: &str) -> Result<Vec<Versioned<serde_json::Value>>, StorageError> {
        self.list_items(kind)?.into_iter().map(decode).collect()
    }

    fn list_items(&self, kind: &str) -> Result<Vec<Item>, StorageError> {
        validate("kind", kind)?;
        let prefix = format!("{RESOURCES_PREFIX}{kind}/");
        self.backend.range(&prefix, &prefix_end(&prefix), 0)
    }
}

/// The backend key of a resource, after checking both segments.
fn resource_key(kind: &str, name: &str) -> Result<String, StorageError> {
    validate("kind", kind)?;
    validate("name", name)?;
    Ok(format!("{RESOURCES_PREFIX}{kind}/{name}"))
}

fn validate(what: &'static str, value: &str) -> Result<(), StorageError> {
    let reason = if value.is_empty() {
        "must not be empty"
    } else if value.contains('/') {
        "must not contain '/'"
    } else if value.len() > MAX_NAME_LEN {
        "must be at most 253 bytes"
    } else {
        return Ok(());
    };
    Err(StorageError::InvalidName {
        what,
        value: value.to_owned(),
        reason,
    })
}

fn encode<T: StoredResource>(v: &T) -> Result<(String, Vec<u8>), StorageError> {
    let key = resource_key(T::KIND, v.name())?;
    match serde_json::to_vec(v) {
        Ok(json) => Ok((key, json)),
        Err(source) => Err(StorageError::Encode { key, source }),
    }
}

fn decode<T: DeserializeOwned>(item: Item) -> Result<Versioned<T>, StorageError> {
    match serde_json::from_slice(&item.value) {
        Ok(value) => Ok(Versioned {
            value,
            revision: item.revision,
        }),
        Err(source) => Err(StorageError::Decode {
            key: item.key,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rules() {
        assert_eq!(
            resource_key("role", "admin").unwrap(),
            "/resources/role/admin"
        );
        assert!(resource_key("role", &"a".repeat(MAX_NAME_LEN)).is_ok());
        for (kind, name, what) in [
            ("role", "", "name"),
            ("role", "a/b", "name"),
            ("", "x", "kind"),
            ("ro/le", "x", "kind"),
            ("role", &*"a".repeat(MAX_NAME_LEN + 1), "name"),
        ] {
            match resource_key(kind, name) {
                Err(StorageError::InvalidName { what: got, .. }) => assert_eq!(got, what),
                other => panic!("{kind:?}/{name:?}: {other:?}"),
            }
        }
    }
}
