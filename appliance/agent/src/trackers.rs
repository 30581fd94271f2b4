//! The trackers of the sessions an agent hosts, from the agent's side.
//!
//! This module owns the calls that keep a session's tracker on Auth (`UpdateSessionTracker`):
//! created before the session's first event is queued (so that Auth, which accepts an agent's
//! session events only for sessions the agent hosts, finds it), renewed every
//! [`TRACKER_KEEPALIVE`] while the session runs, and marked terminated when it ends (Auth keeps an
//! ended tracker a few minutes, for the session's last events still on their way). Auth being
//! away never blocks a session: a failed write is logged, and the renewals retry (each one
//! carries the whole tracker, so a renewal creates what a failed first write left missing).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use crate::node::audit::ChannelMaker;
use hop_api::proto::UpdateSessionTrackerRequest;
use hop_api::proto::auth_public_client::AuthPublicClient;
use hop_api::trackers::TRACKER_KEEPALIVE;

/// The longest a tracker write may take before the session goes on without it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a session's tracker says about it.
#[derive(Debug, Clone)]
pub struct TrackedSpec {
    pub session_id: String,
    /// `ssh` or `db`.
    pub kind: &'static str,
    pub user: String,
    pub login: String,
    /// The database service, for db sessions.
    pub target: String,
}

/// An agent's link to Auth for its trackers (one cached client, reopened after a failure).
pub struct AgentTrackers {
    connect: ChannelMaker,
    client: Mutex<Option<AuthPublicClient<tonic::transport::Channel>>>,
}

impl std::fmt::Debug for AgentTrackers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentTrackers").finish_non_exhaustive()
    }
}

/// Why a tracker write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum TrackerWriteError {
    #[error("cannot reach Auth: {0}")]
    Unreachable(String),
    #[error("Auth refused the tracker: {0}")]
    Refused(String),
    #[error("Auth did not answer within {} s", WRITE_TIMEOUT.as_secs())]
    TimedOut,
}

impl AgentTrackers {
    pub fn new(connect: ChannelMaker) -> Arc<Self> {
        Arc::new(Self {
            connect,
            client: Mutex::new(None),
        })
    }

    /// Creates the session's tracker (waiting, at most [`WRITE_TIMEOUT`]) and keeps it alive
    /// until the returned handle ends it.
    pub async fn open(self: &Arc<Self>, spec: TrackedSpec) -> TrackedSession {
        if let Err(e) = self.write(&spec, "active").await {
            tracing::warn!(session_id = %spec.session_id, error = %e, "session tracker not created; retrying with the renewals");
        }
        let keepalive = tokio::spawn(keep_alive(self.clone(), spec.clone()));
        TrackedSession {
            trackers: self.clone(),
            spec,
            keepalive: Some(keepalive),
        }
    }

    async fn write(&self, spec: &TrackedSpec, state: &str) -> Result<(), TrackerWriteError> {
        let req = UpdateSessionTrackerRequest {
            session_id: spec.session_id.clone(),
            kind: spec.kind.into(),
            state: state.into(),
            user: spec.user.clone(),
            login: spec.login.clone(),
            target: spec.target.clone(),
            participants: vec![spec.user.clone()],
        };
        tokio::time::timeout(WRITE_TIMEOUT, self.send(req))
            .await
            .map_err(|_| TrackerWriteError::TimedOut)?
    }

    async fn send(&self, req: UpdateSessionTrackerRequest) -> Result<(), TrackerWriteError> {
        let mut client = self.client().await?;
        match client.update_session_tracker(req).await {
            Ok(_) => Ok(()),
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::InvalidArgument | tonic::Code::PermissionDenied
                ) =>
            {
                Err(TrackerWriteError::Refused(s.message().to_string()))
            }
            Err(s) => {
                *self.client.lock().await = None;
                Err(TrackerWriteError::Unreachable(s.message().to_string()))
            }
        }
    }

    /// The cached client (calls share its channel), opened if there is none.
    async fn client(
        &self,
    ) -> Result<AuthPublicClient<tonic::transport::Channel>, TrackerWriteError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let ch = (self.connect)()
            .await
            .map_err(|e| TrackerWriteError::Unreachable(hop_net::connect::error_chain(&e)))?;
        Ok(slot.insert(AuthPublicClient::new(ch)).clone())
    }
}

/// Renews the tracker every [`TRACKER_KEEPALIVE`] until aborted or refused.
async fn keep_alive(trackers: Arc<AgentTrackers>, spec: TrackedSpec) {
    loop {
        tokio::time::sleep(TRACKER_KEEPALIVE).await;
        match trackers.write(&spec, "active").await {
            Ok(()) => {}
            Err(e @ TrackerWriteError::Refused(_)) => {
                tracing::warn!(session_id = %spec.session_id, error = %e, "session tracker refused; no longer renewed");
                return;
            }
            Err(e) => {
                tracing::warn!(session_id = %spec.session_id, error = %e, "session tracker not renewed; retrying");
            }
        }
    }
}

/// A running session's tracker; [`TrackedSession::end`] marks it terminated. Dropped without
/// `end`, it is ended in the background.
#[derive(Debug)]
pub struct TrackedSession {
    trackers: Arc<AgentTrackers>,
    spec: TrackedSpec,
    keepalive: Option<tokio::task::JoinHandle<()>>,
}

impl TrackedSession {
    /// Stops the renewals and marks the tracker terminated (waiting, at most a few seconds).
    pub async fn end(mut self) {
        if let Some(k) = self.keepalive.take() {
            k.abort();
        }
        if let Err(e) = self.trackers.write(&self.spec, "terminated").await {
            tracing::warn!(session_id = %self.spec.session_id, error = %e, "session tracker not ended; it lapses with its lease");
        }
    }
}

impl Drop for TrackedSession {
    fn drop(&mut self) {
        let Some(k) = self.keepalive.take() else {
            return;
        };
        k.abort();
        let (trackers, spec) = (self.trackers.clone(), self.spec.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = trackers.write(&spec, "terminated").await;
            });
        }
    }
}
