//! Session recordings in an S3-compatible bucket (`audit_sessions_uri: s3://BUCKET/PREFIX`), so
//! that every appliance of a cluster plays every recording. This module owns [`S3Location`] (the
//! URI and the rules it must keep) and [`S3RecordingStore`], a [`RecordingBackend`] that stages
//! uploads in a local directory (the resumable upload protocol of [`RecordingStore`], unchanged)
//! and, on completion, puts the finished recording whole at `PREFIX/<session id>.hrec` before its
//! entry goes into the shared recordings index. The order is what keeps the contract: a
//! recording is listed only once its object is in the bucket, and a crash between the two is
//! healed at the next open (staged, completed recordings are put again) or by the sender's retry.
//!
//! The client is Apache Arrow's `object_store` (its AWS backend, rustls with aws-lc-rs), driven
//! by this store's own small runtime: callers are synchronous (blocking tasks), as for the
//! PostgreSQL backend. Credentials come from the environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, web identity or instance metadata), never from
//! the URI.

use std::fmt;
use std::future::Future;
use std::io::Read;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};

use super::error::RecordingStoreError;
use super::index::RecordingIndex;
use super::is_valid_session_id;
use super::seam::RecordingBackend;
use super::store::{RecordingIndexEntry, RecordingStore, RetentionReport, UploadStatus};
use crate::audit_store::StoreDescription;
use crate::backend::Backend;
use crate::postgres::pool::block_on;

/// Recordings at least this long go up in parts of this size (S3's smallest part is 5 MiB).
const PART: usize = 8 * 1024 * 1024;
/// Bytes fetched per request when a recording is streamed.
const READ_BLOCK: u64 = 1024 * 1024;
/// How long one request may take, and how long to keep retrying one that failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_RETRIES: usize = 3;

/// The `AWS_*` variables the client takes: credentials and where they come from, and the region.
/// Others (an endpoint, skipping signatures, another metadata endpoint) would send recordings
/// somewhere the URI does not say, or unsigned: the URI alone says where they go.
const ENV_KEYS: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
];

/// Why an `s3://` URI was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum S3UriError {
    #[error("{uri:?} is not an s3:// URI")]
    NotS3 { uri: String },
    #[error("{uri:?} names no bucket: write s3://BUCKET/PREFIX")]
    NoBucket { uri: String },
    #[error(
        "{bucket:?} is not an S3 bucket name (3 to 63 lower-case letters, digits, dots and dashes)"
    )]
    BadBucket { bucket: String },
    #[error(
        "{uri:?} carries credentials: the S3 client reads them from the environment \
         (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...), never from the URI"
    )]
    Credentials { uri: String },
    #[error(
        "the prefix {prefix:?} must be path segments of letters, digits and -_.=, with no `..`"
    )]
    BadPrefix { prefix: String },
    #[error("the query parameter {name:?} is not supported (region, endpoint)")]
    UnknownParameter { name: String },
    #[error("the query parameter {name:?} is given twice")]
    RepeatedParameter { name: String },
    #[error(
        "endpoint {endpoint:?} must be an http:// or https:// URL with no path, query or credentials"
    )]
    BadEndpoint { endpoint: String },
    #[error("region {region:?} is not a region name (letters, digits and dashes)")]
    BadRegion { region: String },
}

/// Where recordings are kept in S3, as `s3://BUCKET/PREFIX?region=R&endpoint=URL` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// The bucket.
    pub bucket: String,
    /// The key prefix (no leading or trailing slash; empty for the bucket's root).
    pub prefix: String,
    /// The region, if the URI names one (else the environment's, else us-east-1).
    pub region: Option<String>,
    /// An S3-compatible endpoint other than AWS's (path-style requests; `http://` allowed).
    pub endpoint: Option<String>,
}

impl S3Location {
    /// Parses and checks `uri`.
    pub fn parse(uri: &str) -> Result<Self, S3UriError> {
        let rest = uri
            .strip_prefix("s3://")
            .ok_or_else(|| S3UriError::NotS3 { uri: uri.into() })?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if path.contains(['@', '#']) {
            return Err(S3UriError::Credentials { uri: uri.into() });
        }
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        if bucket.is_empty() {
            return Err(S3UriError::NoBucket { uri: uri.into() });
        }
        check_bucket(bucket)?;
        let prefix = prefix.trim_matches('/');
        check_prefix(prefix)?;
        let mut location = Self {
            bucket: bucket.into(),
            prefix: prefix.into(),
            region: None,
            endpoint: None,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            location.set_parameter(pair)?;
        }
        Ok(location)
    }

    fn set_parameter(&mut self, pair: &str) -> Result<(), S3UriError> {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match name {
            "region" => {
                check_region(value)?;
                &mut self.region
            }
            "endpoint" => {
                check_endpoint(value)?;
                &mut self.endpoint
            }
            _ => return Err(S3UriError::UnknownParameter { name: name.into() }),
        };
        if slot.replace(value.to_owned()).is_some() {
            return Err(S3UriError::RepeatedParameter { name: name.into() });
        }
        Ok(())
    }
}

impl fmt::Display for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)?;
        if let Some(endpoint) = &self.endpoint {
            write!(f, " at {endpoint}")?;
        }
        Ok(())
    }
}

fn check_bucket(bucket: &str) -> Result<(), S3UriError> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(S3UriError::BadBucket {
            bucket: bucket.into(),
        })
    }
}

fn check_prefix(prefix: &str) -> Result<(), S3UriError> {
    let segment_ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.=".contains(&b))
    };
    if prefix.is_empty() || prefix.split('/').all(segment_ok) {
        Ok(())
    } else {
        Err(S3UriError::BadPrefix {
            prefix: prefix.into(),
        })
    }
}

fn check_region(region: &str) -> Result<(), S3UriError> {
    if !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        Ok(())
    } else {
        Err(S3UriError::BadRegion {
            region: region.into(),
        })
    }
}

fn check_endpoint(endpoint: &str) -> Result<(), S3UriError> {
    let bad = || S3UriError::BadEndpoint {
        endpoint: endpoint.into(),
    };
    let rest = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"))
        .ok_or_else(bad)?;
    let host = rest.strip_suffix('/').unwrap_or(rest);
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    if host_ok { Ok(()) } else { Err(bad()) }
}

/// The `AWS_*` settings the client reads (credentials, region, web identity, ...): the
/// process environment's when the appliance runs, given ones in tests. Its `Debug` names the
/// variables, never their values.
#[derive(Clone, Default)]
pub struct S3Environment(Vec<(String, String)>);

impl S3Environment {
    /// The `AWS_*` variables of this process.
    pub fn from_process() -> Self {
        Self(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .filter(|(k, _)| k.starts_with("AWS_"))
                .collect(),
        )
    }

    /// These variables (those not named `AWS_*` are ignored).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .filter(|(k, _)| k.starts_with("AWS_"))
                .collect(),
        )
    }
}

impl fmt::Debug for S3Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, _)| k))
            .finish()
    }
}

/// Recordings in a bucket: see the module documentation.
pub struct S3RecordingStore {
    location: S3Location,
    client: Arc<dyn ObjectStore>,
    /// Uploads in progress, and completed ones not yet in the bucket.
    staging: RecordingStore,
    /// The shared index (in the cluster backend).
    index: RecordingIndex,
    /// Runs the client's futures; shut down in the background on drop.
    runtime: Option<tokio::runtime::Runtime>,
}

impl fmt::Debug for S3RecordingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3RecordingStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl Drop for S3RecordingStore {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl S3RecordingStore {
    /// Opens the bucket `location` names (checking that it can be listed), with uploads staged
    /// in `staging_dir` (created 0700) and the index in `index`; completed recordings found
    /// staged (a crash before they reached the bucket) are put now.
    pub fn open(
        location: S3Location,
        environment: &S3Environment,
        staging_dir: &FsPath,
        index: Arc<dyn Backend>,
    ) -> Result<Self, RecordingStoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("hop-s3")
            .enable_all()
            .build()
            .map_err(|e| store_error("start", &location.to_string(), e))?;
        let client = build_client(&location, environment)?;
        let store = Self {
            client,
            staging: RecordingStore::open_dir(staging_dir)?,
            index: RecordingIndex::new(index),
            runtime: Some(runtime),
            location,
        };
        store.check_bucket()?;
        store.publish_staged()?;
        Ok(store)
    }

    /// The object key of a recording.
    fn key(&self, session_id: &str) -> Path {
        let name = format!("{session_id}.hrec");
        if self.location.prefix.is_empty() {
            Path::from(name)
        } else {
            Path::from(format!("{}/{name}", self.location.prefix))
        }
    }

    fn handle(&self) -> tokio::runtime::Handle {
        match &self.runtime {
            Some(runtime) => runtime.handle().clone(),
            None => unreachable!("the runtime is taken only on drop"),
        }
    }

    /// Runs one client operation on the store's runtime and waits for it here.
    fn run<T: Send + 'static>(
        &self,
        operation: &'static str,
        key: &Path,
        future: impl Future<Output = object_store::Result<T>> + Send + 'static,
    ) -> Result<T, RecordingStoreError> {
        run_on(&self.handle(), operation, key, future)
    }

    /// Lists the prefix once, so that a wrong bucket, endpoint or credentials fail the start
    /// rather than the first recording.
    fn check_bucket(&self) -> Result<(), RecordingStoreError> {
        let client = self.client.clone();
        let prefix = Path::from(self.location.prefix.as_str());
        let at = prefix.clone();
        self.run("list", &prefix, async move {
            client.list_with_delimiter(Some(&at)).await.map(|_| ())
        })
    }

    /// Puts every completed recording still staged, then indexes it (at open, and at every
    /// retention sweep). One that fails is logged and left staged for the next try; it never
    /// keeps the others, or the appliance's start, back.
    fn publish_staged(&self) -> Result<(), RecordingStoreError> {
        for entry in self.staging.list()? {
            match self.publish(&entry) {
                Ok(()) => tracing::info!(session_id = %entry.session_id,
                    "staged session recording put in the bucket"),
                Err(e) => tracing::warn!(session_id = %entry.session_id, error = %e,
                    "a staged session recording could not be put in the bucket; will retry"),
            }
        }
        Ok(())
    }

    /// Puts the staged, completed recording of `entry` in the bucket, indexes it, and drops the
    /// staged copy.
    fn publish(&self, entry: &RecordingIndexEntry) -> Result<(), RecordingStoreError> {
        let id = &entry.session_id;
        let key = self.key(id);
        if let Some(published) = self.index.get(id)? {
            // Another appliance (or an earlier try) published this id: the same recording is
            // done, a different one is refused; the object is never replaced.
            if published != *entry || !self.same_as_published(entry)? {
                return Err(RecordingStoreError::IndexConflict {
                    session_id: id.clone(),
                });
            }
            return self.staging.remove_completed(id);
        }
        let file = self.staging.open(id)?;
        if entry.size < PART as u64 {
            let bytes = read_all(file, entry.size, &key)?;
            let client = self.client.clone();
            let at = key.clone();
            self.run("put", &key, async move {
                client.put(&at, PutPayload::from(bytes)).await.map(|_| ())
            })?;
        } else {
            self.put_in_parts(file, &key)?;
        }
        self.check_size(&key, entry.size)?;
        self.index.create(entry)?;
        self.staging.remove_completed(id)
    }

    fn put_in_parts(&self, mut file: std::fs::File, key: &Path) -> Result<(), RecordingStoreError> {
        let client = self.client.clone();
        let at = key.clone();
        let mut upload = self.run("start upload of", key, async move {
            client.put_multipart(&at).await
        })?;
        let result = (|| {
            let mut part = vec![0; PART];
            loop {
                let n = read_full(&mut file, &mut part, key)?;
                if n == 0 {
                    return Ok(());
                }
                let payload = PutPayload::from(part[..n].to_vec());
                self.run("put part of", key, upload.put_part(payload))?;
            }
        })();
        match result {
            Ok(()) => self
                .run("complete upload of", key, async move {
                    upload.complete().await.map(|_| ())
                })
                .map_err(|e| {
                    tracing::warn!(%e, "multipart upload of a session recording failed");
                    e
                }),
            Err(err) => {
                let aborted = self.run("abort upload of", key, async move { upload.abort().await });
                if let Err(e) = aborted {
                    tracing::warn!(%e, "cannot abort a failed multipart upload");
                }
                Err(err)
            }
        }
    }

    /// Whether the staged, completed copy of `entry`'s recording has the very bytes of the
    /// published object (compared block by block; only when an id is completed twice).
    fn same_as_published(&self, entry: &RecordingIndexEntry) -> Result<bool, RecordingStoreError> {
        let key = self.key(&entry.session_id);
        let mut file = self.staging.open(&entry.session_id)?;
        let mut block = vec![0; READ_BLOCK as usize];
        let mut at = 0;
        while at < entry.size {
            let n = read_full(&mut file, &mut block, &key)?;
            let end = at + n as u64;
            if n == 0 || self.get_range(&key, at..end)? != block[..n] {
                return Ok(false);
            }
            at = end;
        }
        Ok(read_full(&mut file, &mut block[..1], &key)? == 0)
    }

    /// Checks that the object holds `size` bytes.
    fn check_size(&self, key: &Path, size: u64) -> Result<(), RecordingStoreError> {
        let client = self.client.clone();
        let at = key.clone();
        let meta = self.run("head", key, async move { client.head(&at).await })?;
        if meta.size == size {
            Ok(())
        } else {
            Err(store_error(
                "check",
                key.as_ref(),
                format!("the bucket holds {} bytes, {size} were put", meta.size),
            ))
        }
    }

    /// The index entry of a recording in the bucket, if it is there.
    fn published(
        &self,
        session_id: &str,
    ) -> Result<Option<RecordingIndexEntry>, RecordingStoreError> {
        check_id(session_id)?;
        self.index.get(session_id)
    }

    fn get_range(
        &self,
        key: &Path,
        range: std::ops::Range<u64>,
    ) -> Result<Vec<u8>, RecordingStoreError> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client.clone();
        let at = key.clone();
        let bytes = self.run(
            "get",
            key,
            async move { client.get_range(&at, range).await },
        )?;
        Ok(bytes.to_vec())
    }
}

impl RecordingBackend for S3RecordingStore {
    fn describe(&self) -> StoreDescription {
        StoreDescription {
            kind: "s3",
            location: self.location.to_string(),
        }
    }

    fn begin_upload(
        &self,
        session_id: &str,
        header: &[u8],
    ) -> Result<UploadStatus, RecordingStoreError> {
        if let Some(entry) = self.published(session_id)? {
            let len = header.len() as u64;
            if len > entry.size || self.get_range(&self.key(session_id), 0..len)? != header {
                return Err(RecordingStoreError::HeaderMismatch {
                    session_id: session_id.to_owned(),
                });
            }
            return Ok(UploadStatus {
                received: entry.size,
                complete: true,
            });
        }
        let status = self.staging.begin_upload(session_id, header)?;
        if status.complete {
            // Completed here before a crash kept it from the bucket: put it now.
            let entry = self.staging.entry(session_id)?;
            self.publish(&entry)?;
        }
        Ok(status)
    }

    fn append(
        &self,
        session_id: &str,
        offset: u64,
        bytes: &[u8],
    ) -> Result<u64, RecordingStoreError> {
        if self.published(session_id)?.is_some() {
            return Err(RecordingStoreError::AlreadyComplete {
                session_id: session_id.to_owned(),
            });
        }
        self.staging.append(session_id, offset, bytes)
    }

    fn complete(&self, session_id: &str) -> Result<RecordingIndexEntry, RecordingStoreError> {
        if let Some(entry) = self.published(session_id)? {
            // A staged upload of the same id must be the recording that was published.
            return match self.staging.complete(session_id) {
                Ok(staged) if staged != entry || !self.same_as_published(&entry)? => {
                    Err(RecordingStoreError::IndexConflict {
                        session_id: session_id.to_owned(),
                    })
                }
                Ok(_) => {
                    self.staging.remove_completed(session_id)?;
                    Ok(entry)
                }
                Err(RecordingStoreError::NotFound { .. }) => Ok(entry),
                Err(e) => Err(e),
            };
        }
        let entry = self.staging.complete(session_id)?;
        self.publish(&entry)?;
        Ok(entry)
    }

    fn open_reader(&self, session_id: &str) -> Result<Box<dyn Read + Send>, RecordingStoreError> {
        let entry = self.entry(session_id)?;
        Ok(Box::new(ObjectReader {
            client: self.client.clone(),
            runtime: self.handle(),
            key: self.key(session_id),
            size: entry.size,
            pos: 0,
            block: Vec::new(),
            block_pos: 0,
        }))
    }

    fn read(&self, session_id: &str) -> Result<Vec<u8>, RecordingStoreError> {
        let entry = self.entry(session_id)?;
        self.get_range(&self.key(session_id), 0..entry.size)
    }

    fn read_range(
        &self,
        session_id: &str,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, RecordingStoreError> {
        let entry = self.entry(session_id)?;
        let start = offset.min(entry.size);
        let end = offset.saturating_add(len as u64).min(entry.size);
        self.get_range(&self.key(session_id), start..end)
    }

    fn entry(&self, session_id: &str) -> Result<RecordingIndexEntry, RecordingStoreError> {
        self.published(session_id)?
            .ok_or_else(|| RecordingStoreError::NotFound {
                session_id: session_id.to_owned(),
            })
    }

    fn list(&self) -> Result<Vec<RecordingIndexEntry>, RecordingStoreError> {
        self.index.list()
    }

    /// Deletes each expired recording's object, then its entry (a crash in between leaves an
    /// expired entry whose object is gone, deleted again next time), and the staged uploads
    /// abandoned before `cutoff`.
    fn delete_older_than(
        &self,
        cutoff: SystemTime,
    ) -> Result<RetentionReport, RecordingStoreError> {
        let cutoff_us = cutoff
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        self.publish_staged()?;
        let mut report = self.staging.delete_older_than(cutoff)?;
        for id in self.index.ended_before(cutoff_us)? {
            let size = self.index.get(&id)?.map_or(0, |e| e.size);
            let key = self.key(&id);
            let client = self.client.clone();
            let at = key.clone();
            self.run("delete", &key, async move {
                match client.delete(&at).await {
                    Err(object_store::Error::NotFound { .. }) => Ok(()),
                    other => other,
                }
            })?;
            self.index.delete(&id)?;
            report.recordings += 1;
            report.bytes += size;
        }
        Ok(report)
    }
}

/// A completed recording streamed from the bucket, one ranged request per block.
struct ObjectReader {
    client: Arc<dyn ObjectStore>,
    runtime: tokio::runtime::Handle,
    key: Path,
    size: u64,
    pos: u64,
    block: Vec<u8>,
    block_pos: usize,
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.block_pos == self.block.len() {
            if self.pos >= self.size {
                return Ok(0);
            }
            let end = self.pos.saturating_add(READ_BLOCK).min(self.size);
            let client = self.client.clone();
            let at = self.key.clone();
            let range = self.pos..end;
            let bytes = run_on(&self.runtime, "get", &self.key, async move {
                client.get_range(&at, range).await
            })
            .map_err(std::io::Error::other)?;
            if bytes.is_empty() {
                return Err(std::io::Error::other(format!(
                    "{} ended at {} of {} bytes",
                    self.key, self.pos, self.size
                )));
            }
            self.pos += bytes.len() as u64;
            self.block = bytes.to_vec();
            self.block_pos = 0;
        }
        let n = buf.len().min(self.block.len() - self.block_pos);
        buf[..n].copy_from_slice(&self.block[self.block_pos..self.block_pos + n]);
        self.block_pos += n;
        Ok(n)
    }
}

fn run_on<T: Send + 'static>(
    runtime: &tokio::runtime::Handle,
    operation: &'static str,
    key: &Path,
    future: impl Future<Output = object_store::Result<T>> + Send + 'static,
) -> Result<T, RecordingStoreError> {
    match block_on(runtime.spawn(future)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(store_error(operation, key.as_ref(), err)),
        Err(err) => Err(store_error(operation, key.as_ref(), err)),
    }
}

fn build_client(
    location: &S3Location,
    environment: &S3Environment,
) -> Result<Arc<dyn ObjectStore>, RecordingStoreError> {
    let mut builder = AmazonS3Builder::new();
    for (name, value) in environment
        .0
        .iter()
        .filter(|(n, _)| ENV_KEYS.contains(&n.as_str()))
    {
        if let Ok(key) = name.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
            builder = builder.with_config(key, value);
        }
    }
    builder = builder
        .with_bucket_name(&location.bucket)
        .with_client_options(
            ClientOptions::new()
                .with_timeout(REQUEST_TIMEOUT)
                .with_connect_timeout(CONNECT_TIMEOUT),
        )
        .with_retry(RetryConfig {
            max_retries: MAX_RETRIES,
            retry_timeout: RETRY_TIMEOUT,
            ..RetryConfig::default()
        });
    if let Some(region) = &location.region {
        builder = builder.with_region(region);
    }
    if let Some(endpoint) = &location.endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"))
            .with_virtual_hosted_style_request(false);
    }
    let client = builder
        .build()
        .map_err(|e| store_error("configure", &location.to_string(), e))?;
    Ok(Arc::new(client))
}

fn store_error(
    operation: &'static str,
    key: &str,
    detail: impl fmt::Display,
) -> RecordingStoreError {
    RecordingStoreError::ObjectStore {
        operation,
        key: key.to_owned(),
        detail: detail.to_string(),
    }
}

fn check_id(id: &str) -> Result<(), RecordingStoreError> {
    if is_valid_session_id(id) {
        Ok(())
    } else {
        Err(RecordingStoreError::InvalidSessionId {
            id: id.chars().take(80).collect(),
        })
    }
}

/// The whole staged file (`size` bytes).
fn read_all(
    mut file: std::fs::File,
    size: u64,
    key: &Path,
) -> Result<Vec<u8>, RecordingStoreError> {
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.read_to_end(&mut bytes)
        .map_err(|e| store_error("read the staged copy of", key.as_ref(), e))?;
    Ok(bytes)
}

/// Fills `buf` from `file` unless it ends first; returns the bytes read.
fn read_full(
    file: &mut std::fs::File,
    buf: &mut [u8],
    key: &Path,
) -> Result<usize, RecordingStoreError> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(store_error("read the staged copy of", key.as_ref(), e)),
        }
    }
    Ok(n)
}

#[cfg(test)]
#[path = "s3_tests.rs"]
mod tests;
