//! The process-wide shutdown signal: a `watch` channel that flips to `true` once.

#![forbid(unsafe_code)]

use tokio::sync::watch;

/// Resolves once shutdown has been asked for (or the sender is gone).
pub async fn until_shutdown(rx: &mut watch::Receiver<bool>) {
    // The borrow guard is dropped here, before the caller's next await.
    let _ = rx.wait_for(|s| *s).await;
}
