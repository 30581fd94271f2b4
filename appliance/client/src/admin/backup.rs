//! `hop admin backup` and `hop admin restore`: the cluster state out to a file and back into a
//! new store. This module owns where the bytes go (a new 0600 file, or standard output when it
//! is not a terminal), where the passphrase comes from (a file, `HOP_BACKUP_PASSPHRASE`, the
//! terminal), sealing on this side (the passphrase never travels to the server), and opening a
//! store offline (the redb in a data dir, or the PostgreSQL database of a config's
//! `hop.storage`). The format and the crypto are `hop_storage::backup`'s; what a backup holds
//! is the Auth service's decision (online) or the same `cluster_state` rule (offline). It never
//! prints a passphrase or a stored value.

use std::io::{IsTerminal, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, anyhow, bail};
use tonic::transport::Channel;
use zeroize::Zeroizing;

use crate::cli::{AdminArgs, AdminCommand, BackupArgs, PassphraseArgs, RestoreArgs};
use hop_api::proto::ExportBackupRequest;
use hop_api::proto::auth_admin_client::AuthAdminClient;
use hop_config::{Config, DEFAULT_DATA_DIR, STATE_FILE, StateStore};
use hop_net::connect::status_error;
use hop_storage::backup::{self, BackupError, KdfParams, Sealing};
use hop_storage::{Backend, PgBackend, PgOptions, RedbBackend, SystemClock};

/// The environment variable a passphrase may come from.
pub const PASSPHRASE_ENV: &str = "HOP_BACKUP_PASSPHRASE";

/// Whether this admin command works without the admin API (restore, offline backup).
pub(super) fn is_offline(args: &AdminArgs) -> bool {
    match &args.command {
        AdminCommand::Restore(_) => true,
        AdminCommand::Backup(b) => b.offline,
        _ => false,
    }
}

/// Runs an offline command (see [`is_offline`]).
pub(super) async fn run_offline(args: AdminArgs) -> anyhow::Result<()> {
    match args.command {
        AdminCommand::Restore(r) => restore(r, args.data_dir).await,
        AdminCommand::Backup(b) => {
            let sink = Sink::open(b.out.as_deref())?;
            let passphrase = passphrase(&b.passphrase, true)?;
            let (store, target) = open_store(b.config.as_deref(), args.data_dir, false).await?;
            let snapshot = tokio::task::spawn_blocking(move || store.snapshot())
                .await?
                .with_context(|| format!("cannot read the cluster state from {target}"))?;
            let snapshot = backup::cluster_state(snapshot);
            let file = seal(
                &snapshot,
                hop_platform::clock::wall(),
                passphrase.as_ref().map(|p| p.as_str()),
            )?;
            sink.write(&file)?;
            report(&snapshot, passphrase.is_some(), &target);
            Ok(())
        }
        _ => bail!("this admin command needs the admin API"),
    }
}

/// `hop admin backup` through the admin API: the server exports, this side checks and seals.
pub(super) async fn online(
    c: &mut AuthAdminClient<Channel>,
    args: BackupArgs,
) -> anyhow::Result<()> {
    // Refuse a terminal and ask for the passphrase before the server does any work.
    let sink = Sink::open(args.out.as_deref())?;
    let passphrase = passphrase(&args.passphrase, true)?;
    let mut stream = c
        .export_backup(ExportBackupRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    let mut plain = Zeroizing::new(Vec::new());
    while let Some(chunk) = stream.message().await.map_err(status_error)? {
        plain.extend_from_slice(&chunk.data);
    }
    let exported = backup::decode(&plain, None)
        .map_err(|e| anyhow!("the cluster's export does not check out: {e}"))?;
    let created = time::OffsetDateTime::parse(
        &exported.header.created,
        &time::format_description::well_known::Rfc3339,
    )
    .map(SystemTime::from)
    .unwrap_or_else(|_| hop_platform::clock::wall());
    let file = match passphrase.as_ref().map(|p| p.as_str()) {
        None => plain,
        Some(p) => Zeroizing::new(seal(&exported.snapshot, created, Some(p))?),
    };
    sink.write(&file)?;
    report(&exported.snapshot, passphrase.is_some(), "the cluster");
    Ok(())
}

fn report(snapshot: &hop_storage::Snapshot, sealed: bool, from: &str) {
    eprintln!(
        "Backed up {} items at revision {} from {from}. Audit events and session recordings are \
         not included.",
        snapshot.items.len(),
        snapshot.revision
    );
    if !sealed {
        eprintln!(
            "WARNING: the backup is not encrypted and holds the certificate authorities' private \
             keys; keep it like a key, or seal it with --passphrase-file FILE, {PASSPHRASE_ENV} \
             or --encrypt."
        );
    }
}

fn seal(
    snapshot: &hop_storage::Snapshot,
    created: SystemTime,
    passphrase: Option<&str>,
) -> anyhow::Result<Vec<u8>> {
    let sealing = passphrase.map(|p| {
        let (mut salt, mut nonce) = ([0u8; 16], [0u8; 12]);
        rand::fill(&mut salt);
        rand::fill(&mut nonce);
        Sealing {
            passphrase: p.as_bytes(),
            salt,
            nonce,
            kdf: KdfParams::default(),
        }
    });
    Ok(backup::encode(snapshot, created, sealing)?)
}

/// Where a backup is written.
enum Sink {
    /// A new file, 0600 from its creation.
    File(PathBuf),
    /// Standard output, which is not a terminal.
    Stdout,
}

impl Sink {
    fn open(out: Option<&Path>) -> anyhow::Result<Self> {
        match out {
            Some(p) if p != Path::new("-") => {
                if p.exists() {
                    bail!(
                        "-o {}: the file exists; a backup is never written over a file (remove \
                         it or choose another name)",
                        p.display()
                    );
                }
                Ok(Self::File(p.to_owned()))
            }
            _ if std::io::stdout().is_terminal() => bail!(
                "refusing to write a backup (it holds the CA private keys) to a terminal: \
                 redirect it (`hop admin backup > FILE`) or use -o FILE"
            ),
            _ => Ok(Self::Stdout),
        }
    }

    fn write(&self, data: &[u8]) -> anyhow::Result<()> {
        match self {
            Self::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(data)?;
                out.flush()?;
            }
            Self::File(path) => {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .with_context(|| format!("-o {}: cannot create the file", path.display()))?;
                let written = f.write_all(data).and_then(|()| f.sync_all());
                if let Err(e) = written {
                    let _ = std::fs::remove_file(path);
                    return Err(e).with_context(|| format!("-o {}: cannot write", path.display()));
                }
            }
        }
        Ok(())
    }
}

/// The passphrase from `--passphrase-file`, then `HOP_BACKUP_PASSPHRASE`, then (with
/// `--encrypt`) the terminal, asked twice when `confirm`; `None` when none is given.
fn passphrase(args: &PassphraseArgs, confirm: bool) -> anyhow::Result<Option<Zeroizing<String>>> {
    if let Some(path) = &args.passphrase_file {
        let text =
            Zeroizing::new(std::fs::read_to_string(path).with_context(|| {
                format!("--passphrase-file {}: cannot read it", path.display())
            })?);
        let line = text.lines().next().unwrap_or_default();
        if line.is_empty() {
            bail!(
                "--passphrase-file {}: the first line (the passphrase) is empty",
                path.display()
            );
        }
        return Ok(Some(Zeroizing::new(line.to_owned())));
    }
    if let Ok(p) = std::env::var(PASSPHRASE_ENV)
        && !p.is_empty()
    {
        return Ok(Some(Zeroizing::new(p)));
    }
    if !args.encrypt {
        return Ok(None);
    }
    prompt(confirm).map(Some)
}

fn prompt(confirm: bool) -> anyhow::Result<Zeroizing<String>> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "the backup passphrase: standard input is not a terminal; use --passphrase-file FILE \
             or {PASSPHRASE_ENV}"
        );
    }
    let first = Zeroizing::new(
        rpassword::prompt_password("Backup passphrase: ")
            .context("cannot read from the terminal")?,
    );
    if first.is_empty() {
        bail!("the backup passphrase is empty");
    }
    if confirm {
        let again = Zeroizing::new(
            rpassword::prompt_password("Backup passphrase (again): ")
                .context("cannot read from the terminal")?,
        );
        if *again != *first {
            bail!("the two passphrases differ");
        }
    }
    Ok(first)
}

/// `hop admin restore FILE`.
async fn restore(args: RestoreArgs, data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let file = Zeroizing::new(read_backup(&args.file)?);
    let shown = args.file.display().to_string();
    let mut passphrase = passphrase(&args.passphrase, false)?;
    let decoded = match backup::decode(&file, passphrase.as_ref().map(|p| p.as_bytes())) {
        Err(BackupError::PassphraseRequired) if std::io::stdin().is_terminal() => {
            passphrase = Some(prompt(false)?);
            backup::decode(&file, passphrase.as_ref().map(|p| p.as_bytes()))
        }
        other => other,
    }
    .map_err(|e| anyhow!("{shown}: {e}"))?;
    let (store, target) = open_store(args.config.as_deref(), data_dir, true).await?;
    let mut snapshot = decoded.snapshot;
    // What a backup never carries (soft state, the recordings index, a restore marker) is not
    // restored from a file that does.
    snapshot.items.retain(|i| backup::is_cluster_state(&i.key));
    let (count, revision) = (snapshot.items.len(), snapshot.revision);
    // The next `hop start` turns the marker into a `cluster.restore` audit event; it goes in
    // with the restored items, in the same transaction (keys in order, at the snapshot's
    // revision), so no restore is ever left off the record.
    let marker = serde_json::to_vec(&backup::RestoreMarker::new(
        &decoded.header,
        &file,
        matches!(decoded.header.cipher, backup::Cipher::Sealed { .. }),
        hop_platform::clock::wall(),
    ))?;
    let at = snapshot
        .items
        .partition_point(|i| i.key.as_str() < backup::RESTORE_MARKER_KEY);
    snapshot.items.insert(
        at,
        hop_storage::Item {
            key: backup::RESTORE_MARKER_KEY.to_owned(),
            value: marker,
            revision: snapshot.revision.max(1),
            expires: None,
        },
    );
    snapshot.revision = snapshot.revision.max(1);
    tokio::task::spawn_blocking(move || store.restore(&snapshot))
        .await?
        .map_err(|e| anyhow!("{e}"))?;
    let created = &decoded.header.created;
    println!(
        "Restored {count} items at revision {revision} into {target} (backup taken {created}).\n\
         Audit events and session recordings were not in the backup. Locks, deletions and \
         password or second-factor changes made after {created} are undone: find them with \
         `hop admin audit search --since {created}` and apply them again before letting users \
         in. Then start the appliance on this store with `hop start`; agents and users keep \
         their certificates."
    );
    Ok(())
}

fn read_backup(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut data = Vec::new();
    if path == Path::new("-") {
        std::io::stdin().lock().read_to_end(&mut data)?;
    } else {
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut data))
            .with_context(|| format!("{}: cannot read the backup file", path.display()))?;
    }
    Ok(data)
}

/// A restore starts a data dir afresh: one that holds anything (another cluster's audit log,
/// recordings, an agent's identity, a state file) is refused, naming what is there.
fn refuse_used_dir(dir: &Path) -> anyhow::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    names.sort();
    names.truncate(5);
    bail!(
        "cannot restore into data directory {}: it is not empty (it holds {}); restore needs a \
         new data directory or an empty PostgreSQL database",
        dir.display(),
        names.join(", ")
    )
}

/// Opens the store a config's `hop.storage` names (or the redb in the data dir), directly.
/// `create`: a missing data dir or database file is made (for a restore); otherwise it must
/// exist.
async fn open_store(
    config: Option<&Path>,
    data_dir: Option<PathBuf>,
    create: bool,
) -> anyhow::Result<(Arc<dyn Backend>, String)> {
    let (dir, store) = match config {
        Some(path) => {
            let cfg = Config::load(path).map_err(|e| anyhow!("{e}"))?;
            let store = cfg
                .hop
                .storage
                .state_store()
                .map_err(|e| anyhow!("{}: hop.storage.conn_string: {e}", path.display()))?;
            (data_dir.unwrap_or(cfg.hop.data_dir), store)
        }
        None => (
            data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            StateStore::DataDir,
        ),
    };
    let clock = Arc::new(SystemClock);
    match store {
        StateStore::DataDir => {
            let path = dir.join(STATE_FILE);
            if create {
                refuse_used_dir(&dir)?;
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create data directory {}", dir.display()))?;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                    .with_context(|| format!("cannot set permissions of {}", dir.display()))?;
            } else if !path.exists() {
                bail!(
                    "{} does not exist: no cluster state in data directory {} (give --data-dir \
                     or --config)",
                    path.display(),
                    dir.display()
                );
            }
            let target = path.display().to_string();
            let backend = tokio::task::spawn_blocking(move || RedbBackend::open(&path, clock))
                .await?
                .map_err(|e| anyhow!("{e}"))?;
            Ok((Arc::new(backend), target))
        }
        StateStore::Postgres { conn_string } => {
            let backend = tokio::task::spawn_blocking(move || {
                PgBackend::open(&conn_string, clock, PgOptions::default())
            })
            .await?
            .map_err(|e| anyhow!("cannot open storage (hop.storage, type postgresql): {e}"))?;
            let target = format!("PostgreSQL {}", backend.target());
            Ok((Arc::new(backend), target))
        }
    }
}
