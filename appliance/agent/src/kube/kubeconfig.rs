//! How a kube agent reaches one API server: the kubeconfig's context, cluster and user read from
//! the file's text ([`parse`], sans-IO), or the in-cluster service account ([`in_cluster`]),
//! into an [`ApiServerSpec`] that says where each piece of TLS material and the token come from
//! (inline, or a file relative to the kubeconfig). Reading those files happens at the edge, in
//! [`super::upstream`]. Supported: cluster `server` (https only), `certificate-authority(-data)`,
//! `insecure-skip-tls-verify`, `tls-server-name`; user `client-certificate(-data)` and
//! `client-key(-data)`, `token`, `tokenFile`. `exec` and `auth-provider` users, basic auth and
//! `proxy-url` are refused by name rather than ignored. Every error names the file, the context
//! and the field.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;
use serde::de::IgnoredAny;

/// Where the service account of a pod is mounted.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Bytes given inline (`*-data`, decoded) or in a file (made absolute against the kubeconfig's
/// directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Material {
    Inline(Vec<u8>),
    File(PathBuf),
}

/// The bearer token: inline, or a file read again as it rotates (service account tokens do).
#[derive(Clone, PartialEq, Eq)]
pub enum TokenSource {
    Inline(String),
    File(PathBuf),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Inline(_) => f.write_str("Inline(<redacted>)"),
            Self::File(p) => f.debug_tuple("File").field(p).finish(),
        }
    }
}

/// What the agent presents to the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    ClientCert { cert: Material, key: Material },
    Token(TokenSource),
}

/// An API server as a kubeconfig context (or the service account) describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiServerSpec {
    /// Where it came from, for error messages: `kubeconfig /p, context "c"` or `in-cluster
    /// service account`.
    pub origin: String,
    /// `https://host[:port][/prefix]`.
    pub server: http::Uri,
    pub ca: Option<Material>,
    pub insecure_skip_tls_verify: bool,
    pub tls_server_name: Option<String>,
    pub credentials: Credentials,
}

/// Why a kubeconfig (or the in-cluster account) cannot reach an API server: `origin` names the
/// file and context, `problem` the field.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {problem}")]
pub struct KubeconfigError {
    pub origin: String,
    pub problem: Box<Problem>,
}

impl KubeconfigError {
    pub fn new(origin: String, problem: Problem) -> Self {
        Self {
            origin,
            problem: Box::new(problem),
        }
    }
}

/// What is wrong, naming the field.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a kubeconfig: {0}")]
    Yaml(String),
    #[error("no context given (context=) and no current-context set")]
    NoContext,
    #[error("contexts: no context named {0:?}")]
    UnknownContext(String),
    #[error("contexts[{context:?}].context.{field}: names {name:?}, which {list} does not hold")]
    Dangling {
        context: String,
        field: &'static str,
        name: String,
        list: &'static str,
    },
    #[error("{field}: {message}")]
    Field { field: String, message: String },
    #[error(
        "{field}: {what} is not supported by Hop's kube agent; give the agent a client certificate or a token"
    )]
    Unsupported { field: String, what: &'static str },
    #[error("{0}")]
    NotInCluster(String),
    #[error(
        "client-certificate/client-key: not usable with TLS (an X.509 v3 certificate and its key are needed): {0}"
    )]
    ClientCert(String),
    #[error("TLS to the API server: {0}")]
    Tls(#[from] hop_net::trust::TrustError),
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawConfig {
    clusters: Vec<Named<RawCluster>>,
    users: Vec<Named<RawUser>>,
    contexts: Vec<Named<RawContext>>,
    #[serde(rename = "current-context")]
    current_context: Option<String>,
}

/// `{name, cluster|user|context: {...}}`: the inner key differs, so take all three.
#[derive(Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "user", alias = "context")]
    item: Option<T>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawContext {
    cluster: Option<String>,
    user: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "kebab-case")]
struct RawCluster {
    server: Option<String>,
    certificate_authority: Option<String>,
    certificate_authority_data: Option<String>,
    insecure_skip_tls_verify: Option<bool>,
    tls_server_name: Option<String>,
    proxy_url: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "kebab-case")]
struct RawUser {
    client_certificate: Option<String>,
    client_certificate_data: Option<String>,
    client_key: Option<String>,
    client_key_data: Option<String>,
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<String>,
    exec: Option<IgnoredAny>,
    auth_provider: Option<IgnoredAny>,
    username: Option<String>,
    password: Option<String>,
}

/// The API server of `context` (or the current context) of the kubeconfig `text`, read from
/// `path` (for messages and to resolve relative file names).
pub fn parse(
    text: &str,
    path: &Path,
    context: Option<&str>,
) -> Result<ApiServerSpec, KubeconfigError> {
    let fail = |ctx: Option<&str>, problem| KubeconfigError::new(origin(path, ctx), problem);
    let raw: RawConfig = if text.trim().is_empty() {
        RawConfig::default()
    } else {
        serde_saphyr::from_str(text)
            .map_err(|e| fail(None, Problem::Yaml(first_line(&e.to_string()))))?
    };
    let name = context
        .map(str::to_string)
        .or_else(|| raw.current_context.clone().filter(|c| !c.is_empty()))
        .ok_or_else(|| fail(None, Problem::NoContext))?;
    let ctx_fail = |problem| fail(Some(&name), problem);
    let ctx = find(&raw.contexts, &name)
        .ok_or_else(|| ctx_fail(Problem::UnknownContext(name.clone())))?;
    let dangling = |field, target: &str, list| Problem::Dangling {
        context: name.clone(),
        field,
        name: target.to_string(),
        list,
    };
    let cluster_name = ctx.cluster.as_deref().unwrap_or_default();
    let cluster = find(&raw.clusters, cluster_name)
        .ok_or_else(|| ctx_fail(dangling("cluster", cluster_name, "clusters")))?;
    let user_name = ctx.user.as_deref().unwrap_or_default();
    let user = find(&raw.users, user_name)
        .ok_or_else(|| ctx_fail(dangling("user", user_name, "users")))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut spec = cluster_spec(cluster, cluster_name, base).map_err(ctx_fail)?;
    spec.credentials = credentials(user, user_name, base).map_err(ctx_fail)?;
    spec.origin = origin(path, Some(&name));
    Ok(spec)
}

/// The API server of the cluster this agent runs in, from the pod's environment
/// (`KUBERNETES_SERVICE_HOST`, `KUBERNETES_SERVICE_PORT`) and its service account in `sa_dir`.
pub fn in_cluster(
    host: Option<&str>,
    port: Option<&str>,
    sa_dir: &Path,
) -> Result<ApiServerSpec, KubeconfigError> {
    let origin = "in-cluster service account".to_string();
    let fail = |problem| KubeconfigError::new(origin.clone(), problem);
    let (Some(host), Some(port)) = (
        host.filter(|h| !h.is_empty()),
        port.filter(|p| !p.is_empty()),
    ) else {
        return Err(fail(Problem::NotInCluster(
            "not running in a Kubernetes cluster (KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are unset); give the cluster a kubeconfig=PATH".into(),
        )));
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let server = server_uri(
        &format!("https://{host}:{port}"),
        "KUBERNETES_SERVICE_HOST/PORT",
    )
    .map_err(fail)?;
    Ok(ApiServerSpec {
        origin,
        server,
        ca: Some(Material::File(sa_dir.join("ca.crt"))),
        insecure_skip_tls_verify: false,
        tls_server_name: None,
        credentials: Credentials::Token(TokenSource::File(sa_dir.join("token"))),
    })
}

fn origin(path: &Path, context: Option<&str>) -> String {
    match context {
        Some(c) => format!("kubeconfig {}, context {c:?}", path.display()),
        None => format!("kubeconfig {}", path.display()),
    }
}

fn first_line(msg: &str) -> String {
    msg.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn find<'a, T>(list: &'a [Named<T>], name: &str) -> Option<&'a T> {
    list.iter()
        .find(|n| n.name == name)
        .and_then(|n| n.item.as_ref())
}

fn field(field: String, message: impl Into<String>) -> Problem {
    Problem::Field {
        field,
        message: message.into(),
    }
}

fn cluster_spec(c: &RawCluster, name: &str, base: &Path) -> Result<ApiServerSpec, Problem> {
    let at = |f: &str| format!("clusters[{name:?}].cluster.{f}");
    if c.proxy_url.is_some() {
        return Err(field(
            at("proxy-url"),
            "is not supported; the agent must reach the API server directly",
        ));
    }
    let server = c
        .server
        .as_deref()
        .ok_or_else(|| field(at("server"), "is missing"))?;
    let server = server_uri(server, &at("server"))?;
    let ca = material(
        c.certificate_authority_data.as_deref(),
        c.certificate_authority.as_deref(),
        base,
        &at("certificate-authority-data"),
    )?;
    let insecure = c.insecure_skip_tls_verify.unwrap_or(false);
    if insecure && ca.is_some() {
        return Err(field(
            at("insecure-skip-tls-verify"),
            "set together with a certificate authority; choose one",
        ));
    }
    let tls_server_name = c.tls_server_name.clone().filter(|n| !n.is_empty());
    Ok(ApiServerSpec {
        origin: String::new(),
        server,
        ca,
        insecure_skip_tls_verify: insecure,
        tls_server_name,
        credentials: Credentials::Token(TokenSource::Inline(String::new())),
    })
}

fn server_uri(text: &str, field_name: &str) -> Result<http::Uri, Problem> {
    let uri: http::Uri = text.parse().map_err(|e| {
        field(
            field_name.to_string(),
            format!("{text:?} is not a URL: {e}"),
        )
    })?;
    if uri.scheme_str() != Some("https") || uri.host().is_none_or(str::is_empty) {
        return Err(field(
            field_name.to_string(),
            format!("{text:?} must be https://host[:port]"),
        ));
    }
    if uri.query().is_some() || uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(field(
            field_name.to_string(),
            format!("{text:?} must have no user or query"),
        ));
    }
    Ok(uri)
}

/// `*-data` (base64) wins over the file, as in kubectl.
fn material(
    data: Option<&str>,
    file: Option<&str>,
    base: &Path,
    data_field: &str,
) -> Result<Option<Material>, Problem> {
    if let Some(d) = data.filter(|d| !d.is_empty()) {
        let clean: String = d.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(clean)
            .map_err(|e| field(data_field.to_string(), format!("not base64: {e}")))?;
        return Ok(Some(Material::Inline(bytes)));
    }
    Ok(file
        .filter(|f| !f.is_empty())
        .map(|f| Material::File(base.join(f))))
}

fn credentials(u: &RawUser, name: &str, base: &Path) -> Result<Credentials, Problem> {
    let at = |f: &str| format!("users[{name:?}].user.{f}");
    if u.exec.is_some() {
        return Err(Problem::Unsupported {
            field: at("exec"),
            what: "an exec credential plugin",
        });
    }
    if u.auth_provider.is_some() {
        return Err(Problem::Unsupported {
            field: at("auth-provider"),
            what: "an auth provider",
        });
    }
    if u.username.is_some() || u.password.is_some() {
        return Err(Problem::Unsupported {
            field: at("username"),
            what: "basic authentication",
        });
    }
    let cert = material(
        u.client_certificate_data.as_deref(),
        u.client_certificate.as_deref(),
        base,
        &at("client-certificate-data"),
    )?;
    let key = material(
        u.client_key_data.as_deref(),
        u.client_key.as_deref(),
        base,
        &at("client-key-data"),
    )?;
    match (cert, key) {
        (Some(cert), Some(key)) => return Ok(Credentials::ClientCert { cert, key }),
        (Some(_), None) => {
            return Err(field(
                at("client-key"),
                "is missing (client-certificate is set)",
            ));
        }
        (None, Some(_)) => {
            return Err(field(
                at("client-certificate"),
                "is missing (client-key is set)",
            ));
        }
        (None, None) => {}
    }
    if let Some(t) = u.token.as_deref().filter(|t| !t.is_empty()) {
        return Ok(Credentials::Token(TokenSource::Inline(t.to_string())));
    }
    if let Some(f) = u.token_file.as_deref().filter(|f| !f.is_empty()) {
        return Ok(Credentials::Token(TokenSource::File(base.join(f))));
    }
    Err(field(
        at("client-certificate"),
        "the user has no credentials: set client-certificate and client-key, token or tokenFile",
    ))
}
