//! The backup file: a consistent [`Snapshot`] of a cluster's state (resources, users and their
//! secrets, certificate authorities with their private keys) in a versioned, self-describing
//! format, optionally sealed with a passphrase. This module owns the file format, its sans-IO
//! parser, the key derivation (argon2id) and the AEAD (AES-256-GCM), and which keys are cluster
//! state worth restoring ([`is_cluster_state`]). It must never read a file, a clock or an RNG
//! (the caller passes the time, the salt and the nonce), and never hand back items from a file
//! whose integrity it has not checked.
//!
//! Layout (version 1): a text header any operator can read with `head`, then a binary body.
//!
//! ```text
//! HOP-BACKUP 1\n
//! created: 2026-12-07T02:00:00Z\n
//! revision: 1234\n
//! items: 56\n
//! cipher: none | argon2id-aes-256-gcm\n
//! kdf: m=65536,t=3,p=1\n          (sealed only)
//! salt: <32 hex>\n                (sealed only)
//! nonce: <24 hex>\n               (sealed only)
//! key-check: <32 hex>\n           (sealed only)
//! body: <bytes>\n
//! note: <what is and is not in the file>\n
//! \n
//! <body>
//! ```
//!
//! The body is the payload followed by its SHA-256 over header and payload (plain), or the
//! payload sealed with AES-256-GCM under the argon2id key, the header being the associated data
//! (sealed): either way a changed header or body is detected. `key-check` (a hash of the derived
//! key) tells a wrong passphrase apart from a damaged file. The payload is `HOPSNAP1`, then for
//! each item: u32 key length, key, u32 value length, value, u64 revision, u64 lease end in ns
//! since the Unix epoch (0: none); all integers big-endian.

use std::time::SystemTime;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::backend::{Item, Snapshot};
use crate::codec;

/// The first line of every backup file (then the version).
pub const MAGIC: &str = "HOP-BACKUP";
/// The format version this build writes and the only one it reads.
pub const VERSION: u32 = 1;
/// What the header says about the file's contents, for whoever finds it.
pub const NOTE: &str = "Hop cluster state: resources, users and their password hashes and \
    second factors, join tokens, certificate authorities WITH THEIR PRIVATE KEYS. Audit events and \
    session recordings are NOT included (back them up separately). Keep this file secret.";
/// The longest header accepted, in bytes.
pub const MAX_HEADER: usize = 4096;
/// Keys that are not restored cluster state: soft state the appliances rebuild on their own
/// (proxy presence summaries, live session trackers) and the index of session recordings,
/// whose files are not in a backup (an index without them would list recordings that cannot
/// be played).
pub const EXCLUDED_PREFIXES: &[&str] = &[
    RESTORE_MARKER_KEY,
    "/presence/",
    "/resources/session_tracker/",
    crate::recording::RECORDINGS_INDEX_PREFIX,
];

const PAYLOAD_MAGIC: &[u8; 8] = b"HOPSNAP1";
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const KEY_LEN: usize = 32;
const CHECK_LEN: usize = 16;
const DIGEST_LEN: usize = 32;
const TAG_LEN: usize = 16;
const CIPHER_NONE: &str = "none";
const CIPHER_SEALED: &str = "argon2id-aes-256-gcm";

/// Where `hop admin restore` leaves the JSON of a [`RestoreMarker`] for the Auth service that
/// next starts on the store: it puts the restore on the record (`cluster.restore`) and removes
/// the marker.
pub const RESTORE_MARKER_KEY: &str = "/backup/restored";

/// What a restore wrote, as its marker says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RestoreMarker {
    /// When the backup was taken (its header's `created`).
    pub backup_created: String,
    /// The revision of the backup's snapshot.
    pub revision: u64,
    /// How many items were restored.
    pub items: u64,
    /// When the restore ran (RFC 3339).
    pub restored_at: String,
    /// Whether the file was sealed with a passphrase.
    pub sealed: bool,
    /// SHA-256 of the backup file, hex.
    pub file_sha256: String,
}

impl RestoreMarker {
    /// The marker of restoring `file` (whose decoded header is `header`) at `now`.
    pub fn new(header: &Header, file: &[u8], sealed: bool, now: std::time::SystemTime) -> Self {
        use sha2::Digest as _;
        let restored_at = time::OffsetDateTime::from(now)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        Self {
            backup_created: header.created.clone(),
            revision: header.revision,
            items: header.items,
            restored_at,
            sealed,
            file_sha256: hex::encode(sha2::Sha256::digest(file)),
        }
    }
}

/// Whether `key` is cluster state a backup carries (see [`EXCLUDED_PREFIXES`]).
pub fn is_cluster_state(key: &str) -> bool {
    !EXCLUDED_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// The snapshot without what a backup leaves out.
pub fn cluster_state(mut snapshot: Snapshot) -> Snapshot {
    snapshot.items.retain(|item| is_cluster_state(&item.key));
    snapshot
}

/// Why a backup could not be written or read. Each variant says whose fault it is in its
/// message: the file (damaged, not a backup), the operator (passphrase) or hop.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BackupError {
    /// The bytes do not start like a Hop backup.
    #[error("not a Hop backup file (it does not start with {MAGIC:?})")]
    NotABackup,
    /// A backup written by a newer hop, in a format this build cannot read.
    #[error(
        "backup format version {found} is not supported (this hop reads version {VERSION}); use the hop that wrote it or a newer one"
    )]
    UnsupportedVersion {
        /// The version in the file.
        found: String,
    },
    /// The file ends early: it was cut off while being written or copied.
    #[error("the backup file is truncated: it ends inside {what}")]
    Truncated {
        /// The part it ends in.
        what: &'static str,
    },
    /// A header line is not in the expected shape.
    #[error("the backup header is malformed: {detail}")]
    MalformedHeader {
        /// Which field, and what is wrong with it.
        detail: String,
    },
    /// The body does not match its header or digest: the file was altered or damaged.
    #[error("the backup file is corrupt: {detail}")]
    Corrupt {
        /// What did not match.
        detail: String,
    },
    /// The file is sealed and no passphrase was given.
    #[error(
        "the backup is encrypted: give its passphrase (--passphrase-file FILE, or HOP_BACKUP_PASSPHRASE)"
    )]
    PassphraseRequired,
    /// The passphrase does not derive the key the file was sealed with.
    #[error("wrong passphrase: it does not open this backup")]
    WrongPassphrase,
    /// An empty passphrase was given to seal a backup.
    #[error("the backup passphrase is empty")]
    EmptyPassphrase,
    /// The key derivation's parameters are unusable (out of the accepted bounds).
    #[error("backup key derivation: {detail}")]
    Kdf {
        /// What is wrong.
        detail: String,
    },
}

/// argon2id's cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory, in KiB.
    pub m_cost: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane: about a second's work per guess on a server core.
    fn default() -> Self {
        Self {
            m_cost: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
        }
    }
}

impl KdfParams {
    /// The most a file may ask of the reader: 1 GiB, 16 passes, 16 lanes (a hostile file must
    /// not make restore allocate without bound).
    fn check(self) -> Result<Self, BackupError> {
        let bad = |detail: String| Err(BackupError::Kdf { detail });
        if !(1..=16).contains(&self.p_cost) || !(1..=16).contains(&self.t_cost) {
            return bad(format!(
                "t={} p={}: passes and lanes must be within 1..=16",
                self.t_cost, self.p_cost
            ));
        }
        if self.m_cost < 8 * self.p_cost || self.m_cost > 1024 * 1024 {
            return bad(format!(
                "m={} KiB: memory must be within {}..=1048576 KiB",
                self.m_cost,
                8 * self.p_cost
            ));
        }
        Ok(self)
    }

    fn derive(
        self,
        passphrase: &[u8],
        salt: &[u8],
    ) -> Result<Zeroizing<[u8; KEY_LEN]>, BackupError> {
        let params = argon2::Params::new(self.m_cost, self.t_cost, self.p_cost, Some(KEY_LEN))
            .map_err(|e| BackupError::Kdf {
                detail: e.to_string(),
            })?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        argon
            .hash_password_into(passphrase, salt, key.as_mut())
            .map_err(|e| BackupError::Kdf {
                detail: e.to_string(),
            })?;
        Ok(key)
    }
}

/// How to seal a backup: the passphrase and the fresh random values only the caller can draw.
#[derive(Debug, Clone, Copy)]
pub struct Sealing<'a> {
    /// The operator's passphrase.
    pub passphrase: &'a [u8],
    /// A fresh random salt.
    pub salt: [u8; SALT_LEN],
    /// A fresh random nonce (one key, one message: the salt already makes the key unique).
    pub nonce: [u8; NONCE_LEN],
    /// argon2id's costs.
    pub kdf: KdfParams,
}

/// How a backup's body is protected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cipher {
    /// Not encrypted; a SHA-256 digest detects damage.
    None,
    /// Encrypted under a passphrase.
    Sealed {
        /// argon2id's costs.
        kdf: KdfParams,
        /// The salt.
        salt: [u8; SALT_LEN],
        /// The AES-GCM nonce.
        nonce: [u8; NONCE_LEN],
        /// The first bytes of a hash of the derived key.
        key_check: [u8; CHECK_LEN],
    },
}

/// A backup file's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// When the backup was taken (RFC 3339, as written).
    pub created: String,
    /// The revision of the snapshot.
    pub revision: u64,
    /// How many items the payload holds.
    pub items: u64,
    /// The body's protection.
    pub cipher: Cipher,
    /// The body's length in bytes.
    pub body_len: u64,
}

/// A decoded backup: its header and the snapshot it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    /// The header.
    pub header: Header,
    /// The cluster state.
    pub snapshot: Snapshot,
}

/// Writes `snapshot` (already reduced to [`cluster_state`]) as a backup file taken at
/// `created`, sealed when `sealing` is given.
pub fn encode(
    snapshot: &Snapshot,
    created: SystemTime,
    sealing: Option<Sealing<'_>>,
) -> Result<Vec<u8>, BackupError> {
    let payload = Zeroizing::new(encode_payload(&snapshot.items));
    let created = time::OffsetDateTime::from(created)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".to_owned());
    let mut header = format!(
        "{MAGIC} {VERSION}\ncreated: {created}\nrevision: {}\nitems: {}\n",
        snapshot.revision,
        snapshot.items.len()
    );
    let key = match &sealing {
        None => {
            header.push_str(&format!("cipher: {CIPHER_NONE}\n"));
            None
        }
        Some(s) => {
            if s.passphrase.is_empty() {
                return Err(BackupError::EmptyPassphrase);
            }
            let kdf = s.kdf.check()?;
            let key = kdf.derive(s.passphrase, &s.salt)?;
            header.push_str(&format!(
                "cipher: {CIPHER_SEALED}\nkdf: m={},t={},p={}\nsalt: {}\nnonce: {}\nkey-check: {}\n",
                kdf.m_cost,
                kdf.t_cost,
                kdf.p_cost,
                hex::encode(s.salt),
                hex::encode(s.nonce),
                hex::encode(key_check(&key)),
            ));
            Some((key, s.nonce))
        }
    };
    let body_len = payload.len() + if key.is_some() { TAG_LEN } else { DIGEST_LEN };
    header.push_str(&format!("body: {body_len}\nnote: {NOTE}\n\n"));
    let mut out = header.into_bytes();
    match key {
        None => {
            let digest = Sha256::new()
                .chain_update(&out)
                .chain_update(payload.as_slice())
                .finalize();
            out.extend_from_slice(&payload);
            out.extend_from_slice(&digest);
        }
        Some((key, nonce)) => {
            let sealed = aead(&key)?
                .encrypt(
                    &Nonce::from(nonce),
                    Payload {
                        msg: &payload,
                        aad: &out,
                    },
                )
                .map_err(|_| BackupError::Kdf {
                    detail: "the cipher refused the payload".to_owned(),
                })?;
            out.extend_from_slice(&sealed);
        }
    }
    Ok(out)
}

/// Parses the header at the start of `buf`: `Ok(None)` if it is not complete yet, else the
/// header and its length (where the body starts). Checks only what the header itself says.
pub fn parse_header(buf: &[u8]) -> Result<Option<(Header, usize)>, BackupError> {
    let first = format!("{MAGIC} ");
    let seen = buf.len().min(first.len());
    if buf.get(..seen) != first.as_bytes().get(..seen) {
        return Err(BackupError::NotABackup);
    }
    let end = match buf.windows(2).position(|w| w == b"\n\n") {
        Some(at) => at + 2,
        None if buf.len() > MAX_HEADER => {
            return Err(BackupError::MalformedHeader {
                detail: format!("no end of header within {MAX_HEADER} bytes"),
            });
        }
        None => return Ok(None),
    };
    if end > MAX_HEADER {
        return Err(BackupError::MalformedHeader {
            detail: format!("longer than {MAX_HEADER} bytes"),
        });
    }
    let text = std::str::from_utf8(buf.get(..end - 2).unwrap_or_default()).map_err(|_| {
        BackupError::MalformedHeader {
            detail: "not UTF-8".to_owned(),
        }
    })?;
    let mut lines = text.split('\n');
    let version = lines
        .next()
        .and_then(|l| l.strip_prefix(first.as_str()))
        .unwrap_or_default();
    if version != VERSION.to_string() {
        return Err(BackupError::UnsupportedVersion {
            found: version.chars().take(20).collect(),
        });
    }
    let mut fields = Fields::default();
    for line in lines {
        let (name, value) = line
            .split_once(": ")
            .ok_or_else(|| malformed(format!("line {line:.40?} is not `name: value`")))?;
        fields.set(name, value)?;
    }
    Ok(Some((fields.finish()?, end)))
}

/// Reads a whole backup file: the header, then the body checked against its digest or opened
/// with `passphrase`. Nothing is returned from a file that fails a check.
pub fn decode(buf: &[u8], passphrase: Option<&[u8]>) -> Result<Backup, BackupError> {
    let (header, start) =
        parse_header(buf)?.ok_or(BackupError::Truncated { what: "the header" })?;
    let body = buf.get(start..).unwrap_or_default();
    let body_len = usize::try_from(header.body_len).unwrap_or(usize::MAX);
    if body.len() < body_len {
        return Err(BackupError::Truncated { what: "the body" });
    }
    if body.len() > body_len {
        return Err(corrupt(format!(
            "{} bytes follow the body the header announces",
            body.len() - body_len
        )));
    }
    let aad = buf.get(..start).unwrap_or_default();
    let payload = match &header.cipher {
        Cipher::None => {
            let split = body_len
                .checked_sub(DIGEST_LEN)
                .ok_or_else(|| corrupt("the body is shorter than its digest".to_owned()))?;
            let (payload, digest) = body.split_at(split);
            let want = Sha256::new()
                .chain_update(aad)
                .chain_update(payload)
                .finalize();
            if !constant_time_eq(&want, digest) {
                return Err(corrupt(
                    "the SHA-256 digest does not match (the file was altered or damaged)"
                        .to_owned(),
                ));
            }
            Zeroizing::new(payload.to_vec())
        }
        Cipher::Sealed {
            kdf,
            salt,
            nonce,
            key_check: check,
        } => {
            let passphrase = passphrase.ok_or(BackupError::PassphraseRequired)?;
            let key = kdf.derive(passphrase, salt)?;
            if !constant_time_eq(&key_check(&key), check) {
                return Err(BackupError::WrongPassphrase);
            }
            let opened = aead(&key)?
                .decrypt(&Nonce::from(*nonce), Payload { msg: body, aad })
                .map_err(|_| {
                    corrupt(
                        "the passphrase is right but the encrypted body does not authenticate \
                         (the file was altered or damaged)"
                            .to_owned(),
                    )
                })?;
            Zeroizing::new(opened)
        }
    };
    let items = decode_payload(&payload)?;
    if u64::try_from(items.len()).ok() != Some(header.items) {
        return Err(corrupt(format!(
            "the header announces {} items, the body holds {}",
            header.items,
            items.len()
        )));
    }
    let snapshot = Snapshot {
        revision: header.revision,
        items,
    };
    snapshot.validate().map_err(|e| corrupt(e.to_string()))?;
    Ok(Backup { header, snapshot })
}

/// The invariants the `backup_file` fuzz target checks on arbitrary bytes: the header parser and
/// the decoder never panic; a parsed header ends within the input and within [`MAX_HEADER`]; a
/// file that decodes holds a valid snapshot, no strict prefix of it decodes, and it decodes to
/// the same snapshot after it is written again. (Files asking for costly key derivation are
/// skipped, not to spend the fuzzer's time in argon2.)
#[doc(hidden)]
pub fn fuzz_decode(data: &[u8]) {
    let header = match parse_header(data) {
        Ok(Some((header, end))) => {
            assert!(end <= data.len() && end <= MAX_HEADER);
            header
        }
        Ok(None) | Err(_) => {
            assert!(decode(data, Some(b"fuzz")).is_err());
            return;
        }
    };
    if let Cipher::Sealed { kdf, .. } = header.cipher
        && (kdf.m_cost > 1024 || kdf.t_cost > 2 || kdf.p_cost > 1)
    {
        return;
    }
    let Ok(backup) = decode(data, Some(b"fuzz")) else {
        return;
    };
    backup
        .snapshot
        .validate()
        .expect("a decoded snapshot is valid");
    if data.len() <= 4096 {
        for len in 0..data.len() {
            assert!(decode(data.get(..len).unwrap_or_default(), Some(b"fuzz")).is_err());
        }
    }
    let again = encode(&backup.snapshot, SystemTime::UNIX_EPOCH, None).expect("re-encodes");
    let decoded = decode(&again, None).expect("a re-encoded backup decodes");
    assert_eq!(decoded.snapshot, backup.snapshot);
}

fn malformed(detail: String) -> BackupError {
    BackupError::MalformedHeader { detail }
}

fn corrupt(detail: String) -> BackupError {
    BackupError::Corrupt { detail }
}

fn aead(key: &[u8; KEY_LEN]) -> Result<Aes256Gcm, BackupError> {
    Aes256Gcm::new_from_slice(key).map_err(|_| BackupError::Kdf {
        detail: "derived key has the wrong length".to_owned(),
    })
}

fn key_check(key: &[u8; KEY_LEN]) -> [u8; CHECK_LEN] {
    let digest = Sha256::new()
        .chain_update(b"hop-backup key-check v1\0")
        .chain_update(key)
        .finalize();
    let mut out = [0u8; CHECK_LEN];
    out.copy_from_slice(digest.get(..CHECK_LEN).unwrap_or(&[0u8; CHECK_LEN]));
    out
}

/// Equal lengths and bytes, in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The header fields, as they are read.
#[derive(Default)]
struct Fields {
    created: Option<String>,
    revision: Option<u64>,
    items: Option<u64>,
    cipher: Option<String>,
    kdf: Option<KdfParams>,
    salt: Option<[u8; SALT_LEN]>,
    nonce: Option<[u8; NONCE_LEN]>,
    key_check: Option<[u8; CHECK_LEN]>,
    body: Option<u64>,
    note: bool,
}

impl Fields {
    fn set(&mut self, name: &str, value: &str) -> Result<(), BackupError> {
        let number = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| malformed(format!("{name}: {v:.30?} is not a number")))
        };
        let dup = |taken: bool| {
            if taken {
                Err(malformed(format!("{name} appears twice")))
            } else {
                Ok(())
            }
        };
        match name {
            "created" => {
                dup(self.created.is_some())?;
                self.created = Some(value.to_owned());
            }
            "revision" => {
                dup(self.revision.is_some())?;
                self.revision = Some(number(value)?);
            }
            "items" => {
                dup(self.items.is_some())?;
                self.items = Some(number(value)?);
            }
            "cipher" => {
                dup(self.cipher.is_some())?;
                self.cipher = Some(value.to_owned());
            }
            "kdf" => {
                dup(self.kdf.is_some())?;
                self.kdf = Some(parse_kdf(value)?);
            }
            "salt" => {
                dup(self.salt.is_some())?;
                self.salt = Some(hex_array(name, value)?);
            }
            "nonce" => {
                dup(self.nonce.is_some())?;
                self.nonce = Some(hex_array(name, value)?);
            }
            "key-check" => {
                dup(self.key_check.is_some())?;
                self.key_check = Some(hex_array(name, value)?);
            }
            "body" => {
                dup(self.body.is_some())?;
                self.body = Some(number(value)?);
            }
            "note" => self.note = true,
            // Fields a later version 1 writer adds are informative only.
            _ => {}
        }
        Ok(())
    }

    fn finish(self) -> Result<Header, BackupError> {
        let missing = |field: &str| malformed(format!("the {field} field is missing"));
        let cipher = match self.cipher.as_deref() {
            Some(CIPHER_NONE) => Cipher::None,
            Some(CIPHER_SEALED) => Cipher::Sealed {
                kdf: self.kdf.ok_or_else(|| missing("kdf"))?.check()?,
                salt: self.salt.ok_or_else(|| missing("salt"))?,
                nonce: self.nonce.ok_or_else(|| missing("nonce"))?,
                key_check: self.key_check.ok_or_else(|| missing("key-check"))?,
            },
            Some(other) => {
                return Err(malformed(format!(
                    "cipher {other:.40?} is not supported (expected {CIPHER_NONE} or {CIPHER_SEALED})"
                )));
            }
            None => return Err(missing("cipher")),
        };
        if !self.note {
            return Err(missing("note"));
        }
        Ok(Header {
            created: self.created.ok_or_else(|| missing("created"))?,
            revision: self.revision.ok_or_else(|| missing("revision"))?,
            items: self.items.ok_or_else(|| missing("items"))?,
            cipher,
            body_len: self.body.ok_or_else(|| missing("body"))?,
        })
    }
}

fn parse_kdf(value: &str) -> Result<KdfParams, BackupError> {
    let mut params = [None; 3];
    for part in value.split(',') {
        let (name, n) = part
            .split_once('=')
            .ok_or_else(|| malformed(format!("kdf: {part:.20?} is not name=value")))?;
        let slot = match name {
            "m" => 0,
            "t" => 1,
            "p" => 2,
            _ => return Err(malformed(format!("kdf: unknown parameter {name:.10?}"))),
        };
        let n = n
            .parse::<u32>()
            .map_err(|_| malformed(format!("kdf: {name}={n:.20?} is not a number")))?;
        if let Some(p) = params.get_mut(slot) {
            *p = Some(n);
        }
    }
    match params {
        [Some(m_cost), Some(t_cost), Some(p_cost)] => Ok(KdfParams {
            m_cost,
            t_cost,
            p_cost,
        }),
        _ => Err(malformed("kdf: needs m, t and p".to_owned())),
    }
}

fn hex_array<const N: usize>(name: &str, value: &str) -> Result<[u8; N], BackupError> {
    let mut out = [0u8; N];
    hex::decode_to_slice(value, &mut out)
        .map_err(|_| malformed(format!("{name}: expected {} hex digits", N * 2)))?;
    Ok(out)
}

fn encode_payload(items: &[Item]) -> Vec<u8> {
    let size: usize = items.iter().map(|i| 24 + i.key.len() + i.value.len()).sum();
    let mut out = Vec::with_capacity(PAYLOAD_MAGIC.len() + size);
    out.extend_from_slice(PAYLOAD_MAGIC);
    for item in items {
        put_bytes(&mut out, item.key.as_bytes());
        put_bytes(&mut out, &item.value);
        out.extend_from_slice(&item.revision.to_be_bytes());
        let expires = item.expires.map_or(0, codec::to_unix_nanos);
        out.extend_from_slice(&expires.to_be_bytes());
    }
    out
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Keys and values are far below 4 GiB (a resource is a JSON document).
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// A cursor over the payload: every read checks the length left.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], BackupError> {
        if self.buf.len() < n {
            return Err(corrupt(format!("the payload ends inside {what}")));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn u64(&mut self, what: &str) -> Result<u64, BackupError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_be_bytes(b))
    }

    fn bytes(&mut self, what: &str) -> Result<&'a [u8], BackupError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4, what)?);
        let len = usize::try_from(u32::from_be_bytes(b)).unwrap_or(usize::MAX);
        self.take(len, what)
    }
}

fn decode_payload(payload: &[u8]) -> Result<Vec<Item>, BackupError> {
    let mut r = Reader { buf: payload };
    if r.take(PAYLOAD_MAGIC.len(), "the payload magic")? != PAYLOAD_MAGIC {
        return Err(corrupt(
            "the payload does not start with its magic".to_owned(),
        ));
    }
    let mut items = Vec::new();
    while !r.buf.is_empty() {
        let key = r.bytes("a key")?;
        let key = std::str::from_utf8(key)
            .map_err(|_| corrupt(format!("item {} has a key that is not UTF-8", items.len())))?
            .to_owned();
        let value = r.bytes("a value")?.to_vec();
        let revision = r.u64("a revision")?;
        let expires = r.u64("a lease")?;
        items.push(Item {
            key,
            value,
            revision,
            expires: (expires != 0).then(|| codec::from_unix_nanos(expires)),
        });
    }
    Ok(items)
}

#[cfg(test)]
#[path = "backup_tests.rs"]
mod tests;
