//! Audit events written by an agent, on their way to Auth.
//!
//! This module owns the agent's outgoing event queue: events are built with the same
//! [`AuditEvent`] type Auth uses, queued without blocking the session that produced them,
//! batched, and sent with `EmitEvents`; a batch is dropped from memory only once Auth has made
//! it durable, and a failed send is retried with backoff (event ids make a resend idempotent).
//! The queue is bounded: an overflow is counted and logged, never silent. Spooling to disk while
//! Auth is away for long is not done yet; events queued in memory are lost if the agent stops
//! before Auth comes back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::agent::backoff::Backoff;
pub use crate::auth::audit::{AuditEvent, EventKind};
use crate::auth::proto::EmitEventsRequest;
use crate::auth::proto::auth_public_client::AuthPublicClient;

/// Most events waiting in memory.
const QUEUE: usize = 10_000;
/// Most events per `EmitEvents` call.
const BATCH: usize = 200;

/// Where an agent's code sends events.
#[derive(Debug, Clone)]
pub struct AgentAudit {
    tx: mpsc::Sender<AuditEvent>,
    dropped: Arc<AtomicU64>,
    cluster: String,
    server: String,
}

/// Opens gRPC channels to Auth through the proxy with the agent's current identity.
pub type ChannelMaker = Arc<
    dyn Fn() -> futures_util::future::BoxFuture<'static, anyhow::Result<tonic::transport::Channel>>
        + Send
        + Sync,
>;

impl AgentAudit {
    /// Starts the sender task.
    pub fn start(cluster: String, server: String, connect: ChannelMaker) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(send_loop(rx, connect));
        Self {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
            cluster,
            server,
        }
    }

    /// A new event of `kind` by `user`, stamped now, naming this server.
    pub fn event(&self, kind: EventKind, user: &str) -> AuditEvent {
        AuditEvent::new(kind, &self.cluster, user, std::time::SystemTime::now())
            .field("server", self.server.clone())
    }

    /// Queues an event without waiting.
    pub fn emit(&self, ev: AuditEvent) {
        if let Err(e) = self.tx.try_send(ev) {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            let ev = match e {
                mpsc::error::TrySendError::Full(ev) | mpsc::error::TrySendError::Closed(ev) => ev,
            };
            tracing::error!(
                event = ev.event,
                dropped_total = n,
                "audit queue full: event dropped"
            );
        }
    }
}

async fn send_loop(mut rx: mpsc::Receiver<AuditEvent>, connect: ChannelMaker) {
    let mut pending: Vec<String> = Vec::new();
    let mut backoff = Backoff::default();
    let mut client: Option<AuthPublicClient<tonic::transport::Channel>> = None;
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some(ev) => pending.push(to_json(&ev)),
                None => return,
            }
        }
        // Gather what else is already queued, up to a batch.
        while pending.len() < BATCH {
            match rx.try_recv() {
                Ok(ev) => pending.push(to_json(&ev)),
                Err(_) => break,
            }
        }
        let c = match &mut client {
            Some(c) => c,
            None => match connect().await {
                Ok(ch) => client.insert(AuthPublicClient::new(ch)),
                Err(e) => {
                    let d = backoff.next_delay(rand::random::<f64>());
                    tracing::warn!(error = %format!("{e:#}"), queued = pending.len(), "cannot reach Auth to send audit events; retrying");
                    tokio::time::sleep(d.min(Duration::from_secs(30))).await;
                    continue;
                }
            },
        };
        let batch: Vec<String> = pending.iter().take(BATCH).cloned().collect();
        let n = batch.len();
        match c
            .emit_events(EmitEventsRequest { events_json: batch })
            .await
        {
            Ok(_) => {
                pending.drain(..n);
                backoff.reset();
            }
            Err(status) if status.code() == tonic::Code::InvalidArgument => {
                tracing::error!(error = %status.message(), "Auth refused audit events; dropping the batch");
                pending.drain(..n);
            }
            Err(status) => {
                client = None;
                let d = backoff.next_delay(rand::random::<f64>());
                tracing::warn!(error = %status.message(), queued = pending.len(), "sending audit events failed; retrying");
                tokio::time::sleep(d.min(Duration::from_secs(30))).await;
            }
        }
    }
}

fn to_json(ev: &AuditEvent) -> String {
    serde_json::to_string(ev).unwrap_or_else(|_| "{}".into())
}
