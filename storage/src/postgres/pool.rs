//! Connections to PostgreSQL: opening one ([`Connector`]), a bounded pool of them ([`Pool`]) and
//! waiting for a client future on the calling thread ([`block_on`]). This module owns the rule
//! that a connection's driver always runs on the backend's own runtime while the statements are
//! awaited on the caller's thread, so that the synchronous [`crate::Backend`] can be called from
//! anywhere (a blocking task, a plain thread, even an async task) without nesting runtimes.
//!
//! The pool is small and ours rather than a crate's: checkout takes an idle connection that is
//! still open, or opens one while fewer than `pool_max_conns` exist, or waits for one to come
//! back. A connection the server closed is dropped at checkout or return and replaced on demand.

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client};

use super::tls::MakeRustls;
use crate::error::StorageError;

/// How long a checkout waits for a busy pool before it gives up.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long sent data may stay unacknowledged before the connection is dropped.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);
/// Keepalive probes: after this long idle, every interval, this many unanswered.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(20);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_RETRIES: u32 = 4;
/// Connect timeout unless the conn string sets `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `future` to completion on the current thread, parking it between polls. Client futures
/// only exchange messages with their connection's driver (on the backend's runtime), so they
/// need no reactor of their own here.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

/// Whether an I/O error (a reset, a timeout, a refused connect) is behind `err`.
fn is_io(err: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    err.to_string().contains("timeout")
}

/// Sorts a client error: a lost or refused connection is the operator's to fix (`Unreachable`);
/// anything else the server said is a `Database` failure.
pub(crate) fn map_pg(target: &str, err: tokio_postgres::Error) -> StorageError {
    let detail = match std::error::Error::source(&err) {
        Some(source) => format!("{err}: {source}"),
        None => err.to_string(),
    };
    let connection_lost = match err.as_db_error() {
        // Class 08 (connection exception), 57P0x (the server is shutting down or restarting;
        // 57P01 is also what pg_terminate_backend sends).
        Some(db) => {
            let code = db.code().code();
            code.starts_with("08") || code.starts_with("57P")
        }
        // No server error: the connection itself failed (closed, I/O, timeout) — or the
        // client could not encode or decode a value, which is no outage.
        None => err.is_closed() || is_io(&err),
    };
    let target = target.to_owned();
    if connection_lost {
        StorageError::Unreachable { target, detail }
    } else {
        StorageError::Database { target, detail }
    }
}

/// Opens connections as the conn string says, their drivers spawned on the backend's runtime.
#[derive(Clone)]
pub(crate) struct Connector {
    config: tokio_postgres::Config,
    tls: MakeRustls,
    target: String,
    runtime: tokio::runtime::Handle,
}

impl Connector {
    pub(crate) fn new(
        mut config: tokio_postgres::Config,
        tls: MakeRustls,
        target: String,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        // A server cut off by the network (no FIN, no RST) is noticed in bounded time: unsent
        // data times the socket out after TCP_USER_TIMEOUT, an idle wait for an answer after
        // the keepalive probes; the callers then see `Unreachable` instead of hanging.
        config
            .tcp_user_timeout(TCP_USER_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(KEEPALIVE_IDLE)
            .keepalives_interval(KEEPALIVE_INTERVAL)
            .keepalives_retries(KEEPALIVE_RETRIES);
        Self {
            config,
            tls,
            target,
            runtime,
        }
    }

    /// A new connection named `application_name` (as `pg_stat_activity` shows it); every
    /// notification it receives is signalled on `notifications`. Must run on the runtime.
    pub(crate) async fn connect(
        &self,
        application_name: &str,
        notifications: Option<mpsc::UnboundedSender<()>>,
    ) -> Result<Client, StorageError> {
        let mut config = self.config.clone();
        config.application_name(application_name);
        let (client, mut connection) = config
            .connect(self.tls.clone())
            .await
            .map_err(|err| map_pg(&self.target, err))?;
        let target = self.target.clone();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(|cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(_)) => {
                        if let Some(tx) = &notifications {
                            let _ = tx.send(());
                        }
                    }
                    Ok(_) => {}
                    Err(err) => {
                        tracing::debug!(%target, error = %err, "PostgreSQL connection ended");
                        break;
                    }
                }
            }
        });
        Ok(client)
    }

    /// [`Self::connect`] from a thread outside the runtime.
    fn connect_blocking(&self, application_name: &'static str) -> Result<Client, StorageError> {
        let this = self.clone();
        block_on(
            self.runtime
                .spawn(async move { this.connect(application_name, None).await }),
        )
        .map_err(|err| StorageError::Unreachable {
            target: self.target.clone(),
            detail: format!("connecting was interrupted: {err}"),
        })?
    }
}

/// A bounded set of connections shared by every operation of one backend.
pub(crate) struct Pool {
    connector: Connector,
    max: usize,
    state: Mutex<PoolState>,
    returned: Condvar,
}

struct PoolState {
    idle: Vec<Client>,
    /// Connections that exist: idle, checked out, or being opened.
    open: usize,
}

impl Pool {
    pub(crate) fn new(connector: Connector, max: usize) -> Self {
        Self {
            connector,
            max,
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
            }),
            returned: Condvar::new(),
        }
    }

    pub(crate) fn connector(&self) -> &Connector {
        &self.connector
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An open connection, for as long as the guard lives.
    pub(crate) fn get(&self) -> Result<PooledClient<'_>, StorageError> {
        let mut state = self.lock();
        loop {
            while let Some(client) = state.idle.pop() {
                if !client.is_closed() {
                    return Ok(PooledClient {
                        pool: self,
                        client: Some(client),
                    });
                }
                state.open -= 1;
            }
            if state.open < self.max {
                state.open += 1;
                drop(state);
                return match self.connector.connect_blocking("hop") {
                    Ok(client) => Ok(PooledClient {
                        pool: self,
                        client: Some(client),
                    }),
                    Err(err) => {
                        self.lock().open -= 1;
                        self.returned.notify_one();
                        Err(err)
                    }
                };
            }
            let (next, wait) = self
                .returned
                .wait_timeout(state, CHECKOUT_TIMEOUT)
                .unwrap_or_else(PoisonError::into_inner);
            state = next;
            if wait.timed_out() && state.idle.is_empty() && state.open >= self.max {
                // Busy is not unreachable: the server answers, this pool is too small for
                // the load (admission must not fall back to its kept snapshot for this).
                return Err(StorageError::Database {
                    target: self.connector.target.clone(),
                    detail: format!(
                        "all {} pooled connections stayed busy for {CHECKOUT_TIMEOUT:?} \
                         (raise pool_max_conns?)",
                        self.max
                    ),
                });
            }
        }
    }
}

/// A connection checked out of the [`Pool`]; returned when dropped (or discarded if closed).
pub(crate) struct PooledClient<'a> {
    pool: &'a Pool,
    client: Option<Client>,
}

impl std::ops::Deref for PooledClient<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("present until drop")
    }
}

impl std::ops::DerefMut for PooledClient<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("present until drop")
    }
}

impl Drop for PooledClient<'_> {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        let mut state = self.pool.lock();
        if client.is_closed() {
            state.open -= 1;
        } else {
            state.idle.push(client);
        }
        drop(state);
        self.pool.returned.notify_one();
    }
}
