//! The user's local state: profiles, keys and certificates under `~/.hop` (or `$HOP_HOME`).
//!
//! Layout (directories 0700, files 0600):
//! ```text
//! $HOP_HOME/current                          name of the current profile (the proxy address)
//! $HOP_HOME/profiles/<proxy>.json            proxy, user, cluster, how the proxy is trusted
//! $HOP_HOME/keys/<proxy>/<user>              SSH private key (OpenSSH format)
//! $HOP_HOME/keys/<proxy>/<user>.pub          SSH public key
//! $HOP_HOME/keys/<proxy>/<user>-cert.pub     SSH certificate (next to the key, so `ssh -i` finds it)
//! $HOP_HOME/keys/<proxy>/<user>-tls.key      X.509 private key (PKCS#8 PEM)
//! $HOP_HOME/keys/<proxy>/<user>-tls.crt      X.509 certificate
//! $HOP_HOME/keys/<proxy>/cas.pem             the cluster's user and host CA certificates
//! $HOP_HOME/keys/<proxy>/known_hosts         @cert-authority *.CLUSTER lines for the host CA keys
//! $HOP_HOME/keys/<proxy>/trust_digest        names the CA keys cas.pem and known_hosts hold
//! ```
//! This module owns those paths and writes files atomically with their final permissions.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use serde::{Deserialize, Serialize};

use hop_net::trust::{ClientCert, Trust};
use hop_platform::clock;

/// One login to one proxy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Profile {
    pub proxy: String,
    pub user: String,
    pub cluster: String,
    /// The CA pin used at login, if any.
    #[serde(default)]
    pub ca_pin: Option<String>,
    /// Logged in with --insecure.
    #[serde(default)]
    pub insecure: bool,
}

/// The home `hop --identity FILE` chose for this process, if it did.
static IDENTITY_HOME: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// The name of the identity file a bot's `identity` output writes beside its `$HOP_HOME` layout.
pub const IDENTITY_FILE: &str = "identity";

/// What an identity file says: the login it stands for, whose files lie beside it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentityFile {
    pub version: u32,
    pub proxy: String,
    pub user: String,
    pub cluster: String,
}

/// `hop --identity FILE`: this process uses the login the identity file (a bot's `identity`
/// output) stands for instead of `$HOP_HOME`'s current one.
pub fn use_identity_file(file: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("--identity: reading {}", file.display()))?;
    let id: IdentityFile = serde_json::from_str(&text)
        .with_context(|| format!("--identity: {} is not a Hop identity file", file.display()))?;
    let home = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let (current, _) = current_profile(&home)?;
    if current.proxy != id.proxy || current.user != id.user {
        anyhow::bail!(
            "--identity: {} names {}@{}, but the files beside it are {}@{}",
            file.display(),
            id.user,
            id.proxy,
            current.user,
            current.proxy
        );
    }
    IDENTITY_HOME
        .set(home)
        .map_err(|_| anyhow!("--identity given twice"))
}

/// `--identity`'s directory, else `$HOP_HOME`, else `~/.hop`.
pub fn hop_home() -> anyhow::Result<PathBuf> {
    if let Some(h) = IDENTITY_HOME.get() {
        return Ok(h.clone());
    }
    if let Some(h) = std::env::var_os("HOP_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(h));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| anyhow!("neither HOP_HOME nor HOME is set"))?;
    Ok(PathBuf::from(home).join(".hop"))
}

/// A file-system-safe name for a proxy address.
fn slug(proxy: &str) -> String {
    proxy
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[derive(Debug, Clone)]
pub struct Paths {
    pub home: PathBuf,
    pub proxy: String,
    pub user: String,
}

impl Paths {
    pub fn new(home: PathBuf, proxy: &str, user: &str) -> Self {
        Self {
            home,
            proxy: slug(proxy),
            user: user.to_string(),
        }
    }
    pub fn profile(&self) -> PathBuf {
        self.home
            .join("profiles")
            .join(format!("{}.json", self.proxy))
    }
    pub fn keys_dir(&self) -> PathBuf {
        self.home.join("keys").join(&self.proxy)
    }
    pub fn ssh_key(&self) -> PathBuf {
        self.keys_dir().join(&self.user)
    }
    pub fn ssh_pub(&self) -> PathBuf {
        self.keys_dir().join(format!("{}.pub", self.user))
    }
    pub fn ssh_cert(&self) -> PathBuf {
        self.keys_dir().join(format!("{}-cert.pub", self.user))
    }
    pub fn tls_key(&self) -> PathBuf {
        self.keys_dir().join(format!("{}-tls.key", self.user))
    }
    pub fn tls_cert(&self) -> PathBuf {
        self.keys_dir().join(format!("{}-tls.crt", self.user))
    }
    pub fn cas(&self) -> PathBuf {
        self.keys_dir().join("cas.pem")
    }
    pub fn known_hosts(&self) -> PathBuf {
        self.keys_dir().join("known_hosts")
    }
    /// The digest of the trusted CA keys `cas.pem` and `known_hosts` hold (see `crate::trust`).
    pub fn trust_digest(&self) -> PathBuf {
        self.keys_dir().join("trust_digest")
    }
}

use hop_net::files::{ensure_dir, write_private};

/// The names of the saved logins in `dir` (one `NAME.json` each: applications, kube
/// clusters), sorted; none when `dir` does not exist.
pub fn saved_login_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            Some(name.to_str()?.strip_suffix(".json")?.to_string())
        })
        .collect();
    names.sort();
    names
}

pub fn save_profile(home: &Path, p: &Profile) -> anyhow::Result<()> {
    let paths = Paths::new(home.to_path_buf(), &p.proxy, &p.user);
    ensure_dir(home)?;
    ensure_dir(&home.join("profiles"))?;
    write_private(
        &paths.profile(),
        serde_json::to_string_pretty(p)?.as_bytes(),
    )?;
    Ok(write_private(
        &home.join("current"),
        slug(&p.proxy).as_bytes(),
    )?)
}

/// The current profile, or a message telling the user to log in.
pub fn current_profile(home: &Path) -> anyhow::Result<(Profile, Paths)> {
    let not_logged_in = || anyhow!("not logged in: run `hop login --proxy HOST:PORT --user NAME`");
    let current = std::fs::read_to_string(home.join("current")).map_err(|_| not_logged_in())?;
    let path = home
        .join("profiles")
        .join(format!("{}.json", current.trim()));
    let text = std::fs::read_to_string(&path).map_err(|_| not_logged_in())?;
    let p: Profile = serde_json::from_str(&text)
        .with_context(|| format!("corrupt profile {}", path.display()))?;
    let paths = Paths::new(home.to_path_buf(), &p.proxy, &p.user);
    Ok((p, paths))
}

/// The current login's credentials: its profile, its client certificate for mutual TLS, and how
/// to trust the proxy (the cluster CAs saved at login, or nothing with `--insecure`).
#[derive(Debug, Clone)]
pub struct Login {
    pub profile: Profile,
    pub cert: ClientCert,
    pub trust: Trust,
    /// Where the login's files are (its saved trust among them).
    pub paths: Paths,
}

pub fn current_login() -> anyhow::Result<Login> {
    let home = hop_home()?;
    let (profile, paths) = current_profile(&home)?;
    login_of(profile, &paths)
}

/// The profile of the login to `proxy` (as `hop login --proxy` named it), current or not.
pub fn profile_for(home: &Path, proxy: &str) -> anyhow::Result<(Profile, Paths)> {
    let path = home.join("profiles").join(format!("{}.json", slug(proxy)));
    let text = std::fs::read_to_string(&path).map_err(|_| {
        anyhow!("not logged in to {proxy}: run `hop login --proxy {proxy} --user NAME`")
    })?;
    let p: Profile = serde_json::from_str(&text)
        .with_context(|| format!("corrupt profile {}", path.display()))?;
    let paths = Paths::new(home.to_path_buf(), &p.proxy, &p.user);
    Ok((p, paths))
}

/// The credentials of `profile`'s login, refused when its certificate has expired.
pub fn login_of(profile: Profile, paths: &Paths) -> anyhow::Result<Login> {
    let read = |p: PathBuf, what: &str| {
        std::fs::read_to_string(p).with_context(|| format!("reading {what}"))
    };
    let cert = ClientCert {
        chain_pem: read(paths.tls_cert(), "your login certificate")?,
        key_pem: read(paths.tls_key(), "your login key")?,
    };
    if let Some(expired) = expired_at(&cert.chain_pem) {
        anyhow::bail!(
            "your login for {} expired at {}; run `hop login` again",
            profile.proxy,
            hop_api::timestamps::rfc3339(expired)
        );
    }
    let trust = if profile.insecure {
        Trust::Insecure
    } else {
        Trust::CaPem(read(paths.cas(), "the cluster CAs saved at login")?)
    };
    Ok(Login {
        profile,
        cert,
        trust,
        paths: paths.clone(),
    })
}

/// When the first certificate of `chain_pem` expired, if it has.
fn expired_at(chain_pem: &str) -> Option<std::time::SystemTime> {
    let at = not_after(chain_pem)?;
    (at <= clock::wall()).then_some(at)
}

/// The end of the validity of the first certificate of `chain_pem` (`None` when it cannot be
/// read).
#[must_use]
pub fn not_after(chain_pem: &str) -> Option<std::time::SystemTime> {
    let der = hop_ca::parse_pem_certs(chain_pem)
        .ok()?
        .into_iter()
        .next()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    let not_after = u64::try_from(cert.validity().not_after.timestamp()).ok()?;
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(not_after))
}

/// Removes the current profile and its keys.
pub fn remove_current(home: &Path) -> anyhow::Result<Option<Profile>> {
    let Ok((p, paths)) = current_profile(home) else {
        return Ok(None);
    };
    for f in [
        paths.ssh_key(),
        paths.ssh_pub(),
        paths.ssh_cert(),
        paths.tls_key(),
        paths.tls_cert(),
    ] {
        let _ = std::fs::remove_file(f);
    }
    // Database certificates of this login (`hop db login`) go with it.
    let _ = std::fs::remove_dir_all(super::db::db_dir(&paths));
    // So do application certificates (`hop apps login`).
    let _ = std::fs::remove_dir_all(super::apps::apps_dir(&paths));
    // And Kubernetes logins (`hop kube login`): their kubeconfig entries, then their files.
    super::kube::forget_all(&paths);
    let _ = std::fs::remove_file(paths.profile());
    let _ = std::fs::remove_file(home.join("current"));
    Ok(Some(p))
}

/// Removes `paths`, those already gone included (a logout's saved files).
pub fn remove_files(paths: &[&std::path::Path]) -> anyhow::Result<()> {
    for p in paths {
        match std::fs::remove_file(p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("removing {}", p.display())));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn writes_private_files_and_reads_profiles_back() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("h");
        let p = Profile {
            proxy: "localhost:3080".into(),
            user: "alice".into(),
            cluster: "c".into(),
            ca_pin: None,
            insecure: false,
        };
        save_profile(&home, &p).unwrap();
        let (back, paths) = current_profile(&home).unwrap();
        assert_eq!(back.user, "alice");
        assert_eq!(
            std::fs::metadata(paths.profile()).unwrap().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(home.join("profiles")).unwrap().mode() & 0o777,
            0o700
        );
        assert!(remove_current(&home).unwrap().is_some());
        assert!(current_profile(&home).is_err());
    }
}
