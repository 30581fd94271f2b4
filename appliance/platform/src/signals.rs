//! The process-wide shutdown signal: a `watch` channel that flips to `true` once.

#![forbid(unsafe_code)]

use tokio::sync::watch;

/// Resolves once shutdown has been asked for (or the sender is gone).
pub async fn until_shutdown(rx: &mut watch::Receiver<bool>) {
    // The borrow guard is dropped here, before the caller's next await.
    let _ = rx.wait_for(|s| *s).await;
}

/// Watches SIGTERM and SIGINT for the rest of the process's life: the first one runs `on_first`
/// and flips `stop` (a graceful shutdown), a second one runs `on_second` and exits the process
/// at once with status 130. Call from inside a tokio runtime.
pub fn watch_signals(
    stop: watch::Sender<bool>,
    on_first: fn(),
    on_second: fn(),
) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            seen += 1;
            if seen == 1 {
                on_first();
                let _ = stop.send(true);
            } else {
                on_second();
                std::process::exit(130);
            }
        }
    });
    Ok(())
}
