//! The `hop.storage` subsection, in the shape of Teleport's `teleport.storage`: where the cluster
//! state is kept (`type: dir`, the default, redb in the data dir; or `type: postgresql` with a
//! `conn_string`), and where the audit events and the session recordings are kept, as URIs
//! (`audit_events_uri`, `audit_sessions_uri`), with the rules those URIs must keep. It owns which
//! stores this build accepts and the words that refuse the others; it never opens a store (the
//! conn string is checked by hop-storage's parser, which reads no file).

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use crate::FieldError;

/// The dotted names of the two fields, as errors show them.
const EVENTS_FIELD: &str = "hop.storage.audit_events_uri";
const CONN_FIELD: &str = "hop.storage.conn_string";
const SESSIONS_FIELD: &str = "hop.storage.audit_sessions_uri";
/// What this build accepts, as the errors say it.
const SUPPORTED: &str = "supported now: file:///ABSOLUTE/DIR, postgresql://USER@HOST/DB?… for \
    audit events, s3://BUCKET/PREFIX?region=…&endpoint=… for recordings, or leave it unset for \
    the data dir";

/// Where the cluster's records are kept.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Where the cluster state (resources, users, CAs) is kept: `dir` (redb in the data dir) or
    /// `postgresql` (the database `conn_string` names, shareable by several appliances).
    #[serde(rename = "type")]
    pub kind: StateStoreKind,
    /// The PostgreSQL URL, for `type: postgresql`:
    /// `postgresql://USER@HOST:5432/DATABASE?sslmode=verify-full&sslrootcert=…&sslcert=…&sslkey=…`.
    pub conn_string: Option<String>,
    /// Where audit events are kept: one URI, or a list of them (Teleport's form, whose first is
    /// the one searched; only one store is supported for now). Unset: `<data_dir>/audit.db`.
    pub audit_events_uri: Option<UriList>,
    /// Where uploaded session recordings are kept. Unset: `<data_dir>/recordings`.
    pub audit_sessions_uri: Option<String>,
}

/// `hop.storage.type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateStoreKind {
    /// redb in the data dir (`hop.db`), one appliance.
    #[default]
    Dir,
    /// PostgreSQL, one database for every appliance of the cluster.
    Postgresql,
}

/// Where the cluster state is kept, as `hop start` opens it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateStore {
    /// `<data_dir>/hop.db` (redb).
    DataDir,
    /// The PostgreSQL database this conn string names.
    Postgres {
        /// The conn string, as written.
        conn_string: String,
    },
}

/// One URI, or a list of them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum UriList {
    One(String),
    Many(Vec<String>),
}

/// Where a store keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// In the data dir, where it has always been (no URI set).
    DataDir,
    /// In this directory on the local file system (`file:///DIR`).
    Dir(PathBuf),
    /// In the PostgreSQL database this URL names (audit events only), shared by every
    /// appliance that names it.
    Postgres {
        /// The URL, as written (checked like `hop.storage.conn_string`).
        conn_string: String,
    },
    /// In the S3 bucket (and prefix) this URI names (session recordings only), shared by every
    /// appliance that names it.
    S3(hop_storage::recording::S3Location),
}

/// Why a storage URI was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreUriError {
    #[error("{scheme}:// is not a supported store; {SUPPORTED}")]
    Unsupported { scheme: String },
    #[error("{reason}")]
    Postgres { reason: String },
    #[error("{0}")]
    S3(#[from] hop_storage::recording::S3UriError),
    #[error("{text:?} is not a URI; write file://{text} for a directory, or {SUPPORTED}")]
    BarePath { text: String },
    #[error("{text:?} is not a URI; {SUPPORTED}")]
    NotUri { text: String },
    #[error(
        "{text:?}: a file:// URI needs an absolute path and no host (file:///var/lib/hop/audit)"
    )]
    NotAbsolute { text: String },
    #[error("{text:?}: {what} are not supported in a file:// URI")]
    Unreadable { text: String, what: &'static str },
    #[error("must not be empty; {SUPPORTED}")]
    Empty,
    #[error("several audit stores ({count}) are not supported yet; give one URI")]
    Several { count: usize },
}

/// Which of the two stores a URI is for: they accept different schemes later on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    Events,
    Sessions,
}

impl StorageConfig {
    /// Where the cluster state is kept; the error is about `hop.storage.conn_string`.
    pub fn state_store(&self) -> Result<StateStore, String> {
        match (self.kind, &self.conn_string) {
            (StateStoreKind::Dir, None) => Ok(StateStore::DataDir),
            (StateStoreKind::Dir, Some(_)) => Err(
                "is only used with hop.storage.type: postgresql (the default type, dir, keeps \
                 the state in the data dir)"
                    .to_owned(),
            ),
            (StateStoreKind::Postgresql, None) => {
                Err("is required with hop.storage.type: postgresql, e.g. \
                 postgresql://hop@db.example.com:5432/hop?sslmode=verify-full\
                 &sslrootcert=/etc/hop/pg-ca.crt&sslcert=/etc/hop/pg.crt&sslkey=/etc/hop/pg.key"
                    .to_owned())
            }
            (StateStoreKind::Postgresql, Some(text)) => {
                hop_storage::postgres::check_conn_string(text).map_err(|e| e.to_string())?;
                Ok(StateStore::Postgres {
                    conn_string: text.trim().to_owned(),
                })
            }
        }
    }

    /// Where the audit events are kept.
    pub fn audit_events(&self) -> Result<StoreLocation, StoreUriError> {
        match &self.audit_events_uri {
            None => Ok(StoreLocation::DataDir),
            Some(UriList::One(uri)) => parse_uri(uri, Store::Events),
            Some(UriList::Many(uris)) => match uris.as_slice() {
                [] => Err(StoreUriError::Empty),
                [uri] => parse_uri(uri, Store::Events),
                more => Err(StoreUriError::Several { count: more.len() }),
            },
        }
    }

    /// Where the uploaded session recordings are kept.
    pub fn audit_sessions(&self) -> Result<StoreLocation, StoreUriError> {
        match &self.audit_sessions_uri {
            None => Ok(StoreLocation::DataDir),
            Some(uri) => parse_uri(uri, Store::Sessions),
        }
    }

    /// Both URIs must name a store this build can open.
    pub(crate) fn check(&self) -> Result<(), FieldError> {
        let refused = |field| move |e: StoreUriError| FieldError::new(field, e.to_string());
        self.state_store()
            .map_err(|message| FieldError::new(CONN_FIELD, message))?;
        self.audit_events().map_err(refused(EVENTS_FIELD))?;
        self.audit_sessions().map_err(refused(SESSIONS_FIELD))?;
        Ok(())
    }
}

fn parse_uri(text: &str, store: Store) -> Result<StoreLocation, StoreUriError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(StoreUriError::Empty);
    }
    let Some((scheme, rest)) = text.split_once("://") else {
        return Err(if text.starts_with('/') {
            StoreUriError::BarePath { text: text.into() }
        } else {
            StoreUriError::NotUri { text: text.into() }
        });
    };
    let scheme = scheme.to_ascii_lowercase();
    match (scheme.as_str(), store) {
        ("file", _) => file_dir(text, rest).map(StoreLocation::Dir),
        ("postgres" | "postgresql", Store::Events) => {
            hop_storage::postgres::check_conn_string(text).map_err(|e| {
                StoreUriError::Postgres {
                    reason: e.to_string(),
                }
            })?;
            Ok(StoreLocation::Postgres {
                conn_string: text.to_owned(),
            })
        }
        ("s3", Store::Sessions) => Ok(StoreLocation::S3(
            hop_storage::recording::S3Location::parse(text)?,
        )),
        _ if scheme.is_empty() => Err(StoreUriError::NotUri { text: text.into() }),
        _ => Err(StoreUriError::Unsupported { scheme }),
    }
}

/// The directory of `file://` + `rest`: an absolute path with no host, query, fragment,
/// percent-encoding or `..`.
fn file_dir(text: &str, rest: &str) -> Result<PathBuf, StoreUriError> {
    let unreadable = |what| StoreUriError::Unreadable {
        text: text.into(),
        what,
    };
    if !rest.starts_with('/') {
        return Err(StoreUriError::NotAbsolute { text: text.into() });
    }
    if rest.contains(['?', '#']) {
        return Err(unreadable("queries and fragments"));
    }
    if rest.contains('%') {
        return Err(unreadable("percent-encoded characters"));
    }
    let path = Path::new(rest);
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(unreadable("`..` components"));
    }
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("hop.yaml")).map_err(|e| e.to_string())
    }

    fn events(value: &str) -> Result<StoreLocation, String> {
        parse(&format!(
            "hop:\n  storage:\n    audit_events_uri: {value}\n"
        ))
        .map(|c| c.hop.storage.audit_events().unwrap())
    }

    fn sessions(value: &str) -> Result<StoreLocation, String> {
        parse(&format!(
            "hop:\n  storage:\n    audit_sessions_uri: {value}\n"
        ))
        .map(|c| c.hop.storage.audit_sessions().unwrap())
    }

    /// How a test parses one field's value.
    type Parse = fn(&str) -> Result<StoreLocation, String>;

    fn dir(p: &str) -> StoreLocation {
        StoreLocation::Dir(PathBuf::from(p))
    }

    #[test]
    fn unset_means_the_data_dir() {
        let cfg = parse("hop:\n  data_dir: /srv/hop\n").unwrap();
        assert_eq!(cfg.hop.storage.audit_events(), Ok(StoreLocation::DataDir));
        assert_eq!(cfg.hop.storage.audit_sessions(), Ok(StoreLocation::DataDir));
        let cfg = parse("hop:\n  storage: {}\n").unwrap();
        assert_eq!(cfg.hop.storage.audit_events(), Ok(StoreLocation::DataDir));
    }

    #[test]
    fn file_uris_name_an_absolute_directory() {
        assert_eq!(
            events("file:///var/lib/hop/audit"),
            Ok(dir("/var/lib/hop/audit"))
        );
        assert_eq!(events("'FILE:///a'"), Ok(dir("/a")));
        assert_eq!(events("[file:///var/audit]"), Ok(dir("/var/audit")));
        assert_eq!(events("\n      - file:///var/audit"), Ok(dir("/var/audit")));
        assert_eq!(
            sessions("file:///var/lib/hop/rec/"),
            Ok(dir("/var/lib/hop/rec/"))
        );
    }

    /// Each refused form: the error names the field and says what is supported now.
    #[test]
    fn every_other_form_is_refused_by_name() {
        let cases: &[(Parse, &str, &str, &str)] = &[
            (
                events,
                "'postgresql://u@db.example.com/hop?sslmode=require'",
                EVENTS_FIELD,
                "sslmode",
            ),
            (
                sessions,
                "s3://bucket/records?insecure=true",
                SESSIONS_FIELD,
                "\"insecure\" is not supported",
            ),
            (
                sessions,
                "s3://key:secret@bucket/records",
                SESSIONS_FIELD,
                "never from the URI",
            ),
            (
                events,
                "dynamodb://events_table",
                EVENTS_FIELD,
                "dynamodb:// is not a supported store",
            ),
            (
                events,
                "s3://bucket",
                EVENTS_FIELD,
                "s3:// is not a supported store",
            ),
            (
                sessions,
                "postgres://db/hop",
                SESSIONS_FIELD,
                "postgres:// is not a supported store",
            ),
            (
                sessions,
                "gs://bucket",
                SESSIONS_FIELD,
                "gs:// is not a supported store",
            ),
            (
                events,
                "stdout://",
                EVENTS_FIELD,
                "stdout:// is not a supported store",
            ),
            (events, "audit", EVENTS_FIELD, "is not a URI"),
            (events, "./audit", EVENTS_FIELD, "is not a URI"),
            (
                sessions,
                "/var/rec",
                SESSIONS_FIELD,
                "write file:///var/rec",
            ),
            (
                events,
                "file://relative/dir",
                EVENTS_FIELD,
                "needs an absolute path",
            ),
            (events, "file://host/dir", EVENTS_FIELD, "no host"),
            (events, "file://", EVENTS_FIELD, "needs an absolute path"),
            (events, "file:///a/../b", EVENTS_FIELD, "`..`"),
            (events, "file:///a%20b", EVENTS_FIELD, "percent-encoded"),
            (sessions, "file:///a?x=1", SESSIONS_FIELD, "queries"),
            (events, "'://x'", EVENTS_FIELD, "is not a URI"),
            (events, "''", EVENTS_FIELD, "must not be empty"),
            (events, "[]", EVENTS_FIELD, "must not be empty"),
            (sessions, "''", SESSIONS_FIELD, "must not be empty"),
            (
                events,
                "[file:///a, postgres://db/hop]",
                EVENTS_FIELD,
                "several audit stores (2) are not supported yet",
            ),
        ];
        for (store, value, field, words) in cases {
            let err = store(value).unwrap_err();
            assert!(
                err.contains(&format!("hop.yaml: {field}: ")),
                "{value}: {err}"
            );
            assert!(err.contains(words), "{value}: {err}");
            assert!(!err.contains('\n'), "{value}: {err}");
        }
    }

    #[test]
    fn audit_events_may_be_in_postgresql() {
        let url =
            "postgresql://hop@db.example.com:5432/audit?sslmode=verify-full&sslrootcert=/ca.crt";
        assert_eq!(
            events(&format!("'{url}'")),
            Ok(StoreLocation::Postgres {
                conn_string: url.to_owned()
            })
        );
    }

    #[test]
    fn recordings_may_be_in_s3() {
        let uri = "s3://hop-rec/prod?region=eu-west-1&endpoint=https://minio.example.com:9000";
        let Ok(StoreLocation::S3(location)) = sessions(&format!("'{uri}'")) else {
            panic!("{uri} is not an S3 location");
        };
        assert_eq!(location.bucket, "hop-rec");
        assert_eq!(location.prefix, "prod");
        assert_eq!(location.region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            location.endpoint.as_deref(),
            Some("https://minio.example.com:9000")
        );
    }

    #[test]
    fn refusals_say_what_is_supported() {
        for value in ["mysql://db/hop", "dynamodb://t", "audit", "''"] {
            let err = events(value).unwrap_err();
            assert!(err.contains("file:///ABSOLUTE/DIR"), "{value}: {err}");
        }
    }

    #[test]
    fn the_old_audit_settings_still_parse_beside_the_uris() {
        let cfg = parse(
            "hop:\n  storage:\n    audit_events_uri: file:///x\nauth_service:\n  audit:\n    retention: 2d\n    forward: stdout\n",
        )
        .unwrap();
        assert_eq!(cfg.hop.storage.audit_events(), Ok(dir("/x")));
        assert!(cfg.auth_service.audit.retention.is_some());
    }

    #[test]
    fn the_state_store_is_redb_unless_postgresql_is_named() {
        let cfg = parse("hop:\n  data_dir: /srv/hop\n").unwrap();
        assert_eq!(cfg.hop.storage.state_store(), Ok(StateStore::DataDir));
        let cfg = parse("hop:\n  storage:\n    type: dir\n").unwrap();
        assert_eq!(cfg.hop.storage.state_store(), Ok(StateStore::DataDir));
        let url =
            "postgresql://hop@db.example.com:5432/hop?sslmode=verify-full&sslrootcert=/ca.crt";
        let cfg = parse(&format!(
            "hop:\n  storage:\n    type: postgresql\n    conn_string: \"{url}\"\n    audit_events_uri: file:///x\n"
        ))
        .unwrap();
        assert_eq!(
            cfg.hop.storage.state_store(),
            Ok(StateStore::Postgres {
                conn_string: url.to_owned()
            })
        );
    }

    #[test]
    fn a_bad_state_store_is_refused_by_field() {
        let cases = [
            ("type: postgresql", CONN_FIELD, "is required"),
            (
                "conn_string: postgresql://h@db/x",
                CONN_FIELD,
                "only used with",
            ),
            (
                "{type: postgresql, conn_string: 'mysql://x@y/z'}",
                CONN_FIELD,
                "postgresql:// URL",
            ),
            (
                "{type: postgresql, conn_string: 'postgresql://db/x'}",
                CONN_FIELD,
                "no user",
            ),
            (
                "{type: postgresql, conn_string: 'postgresql://u@db/x?sslmode=require'}",
                CONN_FIELD,
                "verify-full",
            ),
            (
                "{type: postgresql, conn_string: 'postgresql://u@db.example.com/x?sslmode=disable'}",
                CONN_FIELD,
                "clear",
            ),
        ];
        for (body, field, words) in cases {
            let text = if body.starts_with('{') {
                format!("hop:\n  storage: {body}\n")
            } else {
                format!("hop:\n  storage:\n    {body}\n")
            };
            let err = parse(&text).unwrap_err();
            assert!(
                err.contains(&format!("hop.yaml: {field}: ")),
                "{body}: {err}"
            );
            assert!(err.contains(words), "{body}: {err}");
        }
        let err = parse("hop:\n  storage:\n    type: etcd\n").unwrap_err();
        assert!(err.contains("etcd") && err.contains("postgresql"), "{err}");
    }

    #[test]
    fn a_map_where_a_uri_belongs_is_a_parse_error() {
        let err = parse("hop:\n  storage:\n    audit_events_uri: {a: b}\n").unwrap_err();
        assert!(err.contains("hop.yaml"), "{err}");
        let err = parse("hop:\n  storage:\n    audit_uri: file:///x\n").unwrap_err();
        assert!(err.contains("audit_uri"), "{err}");
    }
}
