//! The recording of a `kubectl exec`/`attach` session, in the SSH recording format so that
//! `hop play ID` and the web player play it. This module owns turning the session's decoded
//! streams into recording events (stdout and stderr as output, stdin as typed input, resize
//! JSON as terminal sizes, the exit status at the end) and shipping the chunks to the recording
//! store off the async runtime, as the proxy's agentless-SSH recorder does.
//!
//! Like the node's recorder: an exec starts with an `{"type":"exec","command":…}` event; a chunk
//! open for [`STALE`] is written out at the next event; the relay is never blocked: chunks go
//! through a bounded queue to a blocking task, and when the queue is full a chunk is dropped
//! and the next event is `{"type":"recording.gap","dropped_bytes":N}` (the session goes on).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hop_platform::clock;
use hop_storage::recording::{
    KIND_SSH, RecordingBackend, RecordingMeta, RecordingWriter, is_valid_session_id,
};
use serde::Deserialize;

/// The chunks a session may have waiting for the store.
const QUEUE: usize = 1024;
/// How long a chunk stays open before it is written out.
const STALE: Duration = Duration::from_secs(2);

/// What a recording is of.
#[derive(Debug, Clone)]
pub struct RecordingTarget {
    pub session_id: String,
    /// The Hop cluster's name.
    pub hop_cluster: String,
    /// The Hop user.
    pub user: String,
    /// The Kubernetes user the session ran as (the impersonated one).
    pub kube_user: String,
    /// The kube cluster's name.
    pub kube_cluster: String,
    /// `namespace/pod` (and `/container` when named).
    pub pod: String,
    /// Whether the session has a terminal (`tty=true`).
    pub tty: bool,
    /// The command of an exec (`None` for attach).
    pub command: Option<String>,
}

/// Why a session cannot be recorded.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("session id {0:?} is not a valid recording id")]
    SessionId(String),
    #[error("recording header: {0}")]
    Header(String),
}

/// Records one exec/attach session into the store.
pub struct KubeRecorder {
    writer: RecordingWriter,
    tx: std::sync::mpsc::SyncSender<Option<Vec<u8>>>,
    uploader: tokio::task::JoinHandle<()>,
    started: Instant,
    /// Bytes of chunks dropped since the last gap event.
    dropped: usize,
}

/// A resize message of the exec protocols.
#[derive(Deserialize)]
struct Resize {
    #[serde(rename = "Width")]
    width: u16,
    #[serde(rename = "Height")]
    height: u16,
}

impl KubeRecorder {
    /// Starts the recording of `target` into `store` (on a blocking task of the runtime).
    pub fn start(
        store: Arc<dyn RecordingBackend>,
        target: &RecordingTarget,
    ) -> Result<Self, RecordError> {
        if !is_valid_session_id(&target.session_id) {
            return Err(RecordError::SessionId(target.session_id.clone()));
        }
        let meta = RecordingMeta {
            session_id: target.session_id.clone(),
            kind: KIND_SSH.into(),
            cluster: target.hop_cluster.clone(),
            user: target.user.clone(),
            login: target.kube_user.clone(),
            server_id: target.kube_cluster.clone(),
            server_name: target.pod.clone(),
            start_unix_us: clock::wall()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(0),
            cols: 80,
            rows: 24,
            term: if target.tty { "xterm" } else { "dumb" }.into(),
        };
        let writer = RecordingWriter::new(meta).map_err(|e| RecordError::Header(e.to_string()))?;
        let header = writer.header_bytes().to_vec();
        let (tx, rx) = std::sync::mpsc::sync_channel::<Option<Vec<u8>>>(QUEUE);
        let id = target.session_id.clone();
        let uploader = tokio::task::spawn_blocking(move || upload(&*store, &id, &header, &rx));
        let mut recorder = Self {
            writer,
            tx,
            uploader,
            started: clock::now(),
            dropped: 0,
        };
        if let Some(command) = &target.command {
            let event = serde_json::json!({"type": "exec", "command": command});
            recorder.event(&event);
        }
        Ok(recorder)
    }

    fn event(&mut self, event: &serde_json::Value) {
        match self.writer.push_event(self.at(), event) {
            Ok(c) => self.send(c),
            Err(e) => tracing::warn!(error = %e, "a kube recording event was not written"),
        }
    }

    fn at(&self) -> Duration {
        clock::since(self.started)
    }

    /// Queues a completed chunk (and any chunk left open too long).
    fn send(&mut self, chunk: Option<Vec<u8>>) {
        let stale = self.writer.flush_stale(self.at(), STALE);
        for c in chunk.into_iter().chain(stale) {
            let len = c.len();
            if self.tx.try_send(Some(c)).is_err() {
                if self.dropped == 0 {
                    tracing::warn!(
                        "recording queue full: part of a kube session's recording was dropped"
                    );
                }
                self.dropped += len;
            }
        }
    }

    /// Before the next event: says how much was lost, if anything was.
    fn note_gap(&mut self) {
        if self.dropped > 0 {
            let event = serde_json::json!({"type": "recording.gap", "dropped_bytes": self.dropped});
            self.dropped = 0;
            self.event(&event);
        }
    }

    /// The container's stdout or stderr.
    pub fn output(&mut self, data: &[u8]) {
        self.note_gap();
        let c = self.writer.push_output(self.at(), data);
        self.send(c);
    }

    /// What the user typed (stdin).
    pub fn input(&mut self, data: &[u8]) {
        self.note_gap();
        let c = self.writer.push_input(self.at(), data);
        self.send(c);
    }

    /// A resize message (`{"Width":W,"Height":H}`); one that does not parse is ignored.
    pub fn resize(&mut self, json: &[u8]) {
        let Ok(r) = serde_json::from_slice::<Resize>(json) else {
            return;
        };
        self.note_gap();
        let c = self.writer.push_resize(self.at(), r.width, r.height);
        self.send(c);
    }

    /// Ends the recording with the exit status when known; waits (up to 5 s) until the store has
    /// it all.
    pub async fn finish(self, exit: Option<i32>) {
        let bytes = self.writer.finish(clock::since(self.started), exit);
        // The last chunk and the end mark must not be dropped: a blocking send, off the runtime.
        let tx = self.tx;
        let _ = tokio::task::spawn_blocking(move || {
            let _ = tx.send(Some(bytes));
            let _ = tx.send(None);
        })
        .await;
        if tokio::time::timeout(Duration::from_secs(5), self.uploader)
            .await
            .is_err()
        {
            tracing::warn!("a kube session's recording is still being stored");
        }
    }
}

/// Appends each chunk to the store; completes the recording at the end mark.
fn upload(
    store: &dyn RecordingBackend,
    id: &str,
    header: &[u8],
    rx: &std::sync::mpsc::Receiver<Option<Vec<u8>>>,
) {
    let mut offset = match store.begin_upload(id, header) {
        Ok(s) => s.received,
        Err(e) => {
            tracing::warn!(error = %e, "cannot store a kube session's recording");
            return;
        }
    };
    while let Ok(msg) = rx.recv() {
        let Some(chunk) = msg else {
            if let Err(e) = store.complete(id) {
                tracing::warn!(error = %e, "cannot complete a kube session's recording");
            }
            return;
        };
        match store.append(id, offset, &chunk) {
            Ok(n) => offset = n,
            Err(e) => {
                tracing::warn!(error = %e, "recording write failed; the rest is lost");
                return;
            }
        }
    }
}

/// The exit status in an exec error-stream `Status`: 0 on `Success`, the `ExitCode` cause of a
/// `NonZeroExitCode` failure, `None` when the stream says neither.
#[must_use]
pub fn exit_status(status_json: &[u8]) -> Option<i32> {
    let v: serde_json::Value = serde_json::from_slice(status_json).ok()?;
    if v.get("status").and_then(|s| s.as_str()) == Some("Success") {
        return Some(0);
    }
    v.get("details")?
        .get("causes")?
        .as_array()?
        .iter()
        .find(|c| c.get("reason").and_then(|r| r.as_str()) == Some("ExitCode"))?
        .get("message")?
        .as_str()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_read_from_the_error_stream() {
        assert_eq!(
            exit_status(br#"{"metadata":{},"status":"Success"}"#),
            Some(0)
        );
        let failed = br#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: exit status 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;
        assert_eq!(exit_status(failed), Some(3));
        assert_eq!(
            exit_status(br#"{"status":"Failure","message":"no such container"}"#),
            None
        );
        assert_eq!(exit_status(b"not json"), None);
    }
}
