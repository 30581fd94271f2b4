//! The user's kubeconfig: the cluster, user and context entries `hop kube login` adds and
//! `hop kube logout` removes, and nothing else of the file.
//!
//! [`add`] and [`remove`] edit a parsed document (no IO); [`edit_file`] reads the file kubectl
//! reads (`$KUBECONFIG`'s first path, else `~/.kube/config`), applies one edit under kubectl's
//! own lock file (`FILE.lock`), and writes it back atomically with mode 0600. Every entry and key
//! Hop does not own is kept, in its order.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;

use super::lock::FileLock;
use super::node::Node;
use hop_net::files::write_private;

/// The exec credential API version kubectl 1.20 and 1.32 both speak.
pub const EXEC_API_VERSION: &str = "client.authentication.k8s.io/v1beta1";

#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("{path} is not a kubeconfig Hop can edit: {why}")]
    Malformed { path: String, why: String },
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: String,
        #[source]
        source: hop_net::files::FileError,
    },
    #[error("the kubeconfig is being edited by another program")]
    Locked(#[from] super::lock::LockError),
    #[error("neither KUBECONFIG nor HOME is set: cannot find the kubeconfig")]
    NoHome,
}

/// What one `hop kube login` writes: a cluster, a user and a context, all named `name`.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub name: String,
    /// `https://PROXY_HOST:PORT`
    pub server: String,
    /// `kube.PROXY_HOST`
    pub tls_server_name: String,
    pub ca_pem: String,
    /// The absolute path of the running `hop`.
    pub command: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// The file kubectl reads first: `$KUBECONFIG`'s first path, else `~/.kube/config`.
pub fn default_path() -> Result<PathBuf, KubeconfigError> {
    path_from(std::env::var_os("KUBECONFIG"), std::env::var_os("HOME"))
}

fn path_from(
    kubeconfig: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Result<PathBuf, KubeconfigError> {
    if let Some(first) =
        kubeconfig.and_then(|v| std::env::split_paths(&v).find(|p| !p.as_os_str().is_empty()))
    {
        return Ok(first);
    }
    let home = home
        .filter(|h| !h.is_empty())
        .ok_or(KubeconfigError::NoHome)?;
    Ok(PathBuf::from(home).join(".kube").join("config"))
}

/// An empty kubeconfig, as kubectl writes one.
fn empty() -> Node {
    Node::map([
        ("apiVersion", Node::str("v1")),
        ("kind", Node::str("Config")),
        ("clusters", Node::Seq(vec![])),
        ("contexts", Node::Seq(vec![])),
        ("users", Node::Seq(vec![])),
        ("current-context", Node::str("")),
        ("preferences", Node::Map(vec![])),
    ])
}

/// Parses a kubeconfig's text (an empty file is an empty kubeconfig).
pub fn parse(text: &str, path: &str) -> Result<Node, KubeconfigError> {
    let malformed = |why: String| KubeconfigError::Malformed {
        path: path.to_string(),
        why,
    };
    if text.trim().is_empty() {
        return Ok(empty());
    }
    let doc: Node = serde_saphyr::from_str(text).map_err(|e| malformed(e.to_string()))?;
    match doc {
        Node::Map(_) => Ok(doc),
        Node::Null => Ok(empty()),
        _ => Err(malformed("the document is not a map".into())),
    }
}

/// The document as YAML.
pub fn render(doc: &Node) -> Result<String, String> {
    serde_saphyr::to_string(doc).map_err(|e| format!("cannot write it back as YAML: {e}"))
}

/// The list under `key`, made a list when missing or null; `None` when it is something else.
fn list<'a>(doc: &'a mut Node, key: &str) -> Option<&'a mut Vec<Node>> {
    let v = doc.entry(key, Node::Seq(vec![]))?;
    if *v == Node::Null {
        *v = Node::Seq(vec![]);
    }
    match v {
        Node::Seq(items) => Some(items),
        _ => None,
    }
}

/// Puts `item` in the list `key` in place of the one with its name, else at the end.
fn upsert(doc: &mut Node, key: &str, name: &str, item: Node) -> Result<(), String> {
    let items = list(doc, key).ok_or_else(|| format!("`{key}` is not a list"))?;
    match items
        .iter_mut()
        .find(|i| i.get("name").and_then(Node::as_str) == Some(name))
    {
        Some(old) => *old = item,
        None => items.push(item),
    }
    Ok(())
}

fn cluster_item(e: &Entry) -> Node {
    cluster_node(&e.name, &e.server, &e.tls_server_name, &e.ca_pem)
}

fn cluster_node(name: &str, server: &str, tls_server_name: &str, ca_pem: &str) -> Node {
    let ca = b64(ca_pem);
    Node::map([
        ("name", Node::str(name)),
        (
            "cluster",
            Node::map([
                ("server", Node::str(server)),
                ("tls-server-name", Node::str(tls_server_name)),
                ("certificate-authority-data", Node::Str(ca)),
            ]),
        ),
    ])
}

fn b64(pem: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(pem.as_bytes())
}

/// A kubeconfig of its own for one cluster, with the client certificate and key in it: what a
/// bot's `kubernetes` output holds (the bot writes the whole file again after each renewal, so
/// kubectl, which reads it at each run, never needs a credential plugin).
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    pub name: String,
    /// `https://PROXY_HOST:PORT`
    pub server: String,
    /// `kube.PROXY_HOST`
    pub tls_server_name: String,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// The whole document for `e`, its context current.
pub fn embedded(e: &Embedded) -> Node {
    let user = Node::map([
        ("name", Node::str(&e.name)),
        (
            "user",
            Node::map([
                ("client-certificate-data", Node::Str(b64(&e.cert_pem))),
                ("client-key-data", Node::Str(b64(&e.key_pem))),
            ]),
        ),
    ]);
    let context = Node::map([
        ("name", Node::str(&e.name)),
        (
            "context",
            Node::map([
                ("cluster", Node::str(&e.name)),
                ("user", Node::str(&e.name)),
            ]),
        ),
    ]);
    Node::map([
        ("apiVersion", Node::str("v1")),
        ("kind", Node::str("Config")),
        (
            "clusters",
            Node::Seq(vec![cluster_node(
                &e.name,
                &e.server,
                &e.tls_server_name,
                &e.ca_pem,
            )]),
        ),
        ("users", Node::Seq(vec![user])),
        ("contexts", Node::Seq(vec![context])),
        ("current-context", Node::str(&e.name)),
    ])
}

fn user_item(e: &Entry) -> Node {
    let env = e
        .env
        .iter()
        .map(|(k, v)| Node::map([("name", Node::str(k)), ("value", Node::str(v))]))
        .collect();
    let exec = Node::map([
        ("apiVersion", Node::str(EXEC_API_VERSION)),
        ("command", Node::str(&e.command)),
        (
            "args",
            Node::Seq(e.args.iter().map(Node::str).collect::<Vec<_>>()),
        ),
        ("env", Node::Seq(env)),
        ("provideClusterInfo", Node::Bool(false)),
    ]);
    Node::map([
        ("name", Node::str(&e.name)),
        ("user", Node::map([("exec", exec)])),
    ])
}

fn context_item(e: &Entry) -> Node {
    Node::map([
        ("name", Node::str(&e.name)),
        (
            "context",
            Node::map([
                ("cluster", Node::str(&e.name)),
                ("user", Node::str(&e.name)),
            ]),
        ),
    ])
}

/// Adds (or replaces) the cluster, user and context named `e.name` and makes the context current.
pub fn add(doc: &mut Node, e: &Entry) -> Result<(), String> {
    upsert(doc, "clusters", &e.name, cluster_item(e))?;
    upsert(doc, "users", &e.name, user_item(e))?;
    upsert(doc, "contexts", &e.name, context_item(e))?;
    doc.set("current-context", Node::str(&e.name));
    Ok(())
}

/// Removes the cluster, user and context named `name` (and the current context when it is that
/// one); whether anything was there.
pub fn remove(doc: &mut Node, name: &str) -> bool {
    let mut removed = false;
    for key in ["clusters", "users", "contexts"] {
        if let Some(items) = list(doc, key) {
            let before = items.len();
            items.retain(|i| i.get("name").and_then(Node::as_str) != Some(name));
            removed |= items.len() != before;
        }
    }
    if doc.get("current-context").and_then(Node::as_str) == Some(name) {
        doc.set("current-context", Node::str(""));
        removed = true;
    }
    removed
}

/// The current context's name, if one is set.
pub fn current_context(doc: &Node) -> Option<&str> {
    doc.get("current-context")
        .and_then(Node::as_str)
        .filter(|c| !c.is_empty())
}

/// Reads the kubeconfig at `path` (missing: empty), applies `edit`, writes it back atomically
/// with mode 0600 (through a symbolic link to its target). Returns what `edit` returned.
pub fn edit_file<T>(
    path: &Path,
    edit: impl FnOnce(&mut Node) -> Result<T, String>,
) -> Result<T, KubeconfigError> {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let shown = path.display().to_string();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| KubeconfigError::Read {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let _lock = FileLock::take(&path, Duration::from_secs(5))?;
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(KubeconfigError::Read {
                path: shown,
                source,
            });
        }
    };
    let mut doc = parse(&text, &shown)?;
    let malformed = |why| KubeconfigError::Malformed {
        path: shown.clone(),
        why,
    };
    let out = edit(&mut doc).map_err(malformed)?;
    let text = render(&doc).map_err(malformed)?;
    write_private(&path, text.as_bytes()).map_err(|source| KubeconfigError::Write {
        path: shown,
        source,
    })?;
    Ok(out)
}

/// Reads the kubeconfig at `path` without changing it (missing: empty).
pub fn read_file(path: &Path) -> Result<Node, KubeconfigError> {
    let shown = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(t) => parse(&t, &shown),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(empty()),
        Err(source) => Err(KubeconfigError::Read {
            path: shown,
            source,
        }),
    }
}

#[cfg(test)]
mod tests;
