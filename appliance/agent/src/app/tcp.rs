//! TCP applications (`tcp://host:port`): on a Dial the agent connects the application (with a
//! deadline), answers, and relays bytes between the tunnel and the application.

use std::time::Duration;

use hop_config::services::AppSpec;
use hop_net::records;
use hop_protocols::tunnel::Dial;
use tokio::net::TcpStream;

use crate::dial::{DataStream, answer};

/// How long connecting an application may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an application session could not start; the words go back in the `DialResult`.
#[derive(Debug, thiserror::Error)]
enum AppRefusal {
    #[error("cannot connect to {uri}: {source}")]
    Connect { uri: String, source: std::io::Error },
    #[error("connecting to {uri} timed out")]
    TimedOut { uri: String },
    #[error(transparent)]
    Target(#[from] hop_config::services::AppSpecError),
}

/// Serves a Dial for the TCP application `app`.
pub(crate) async fn serve(app: &AppSpec, mut framed: DataStream, dial: Dial) {
    let upstream = match connect(app).await {
        Ok(s) => s,
        Err(refused) => {
            answer(&mut framed, dial.session_id, Some(refused.to_string())).await;
            return;
        }
    };
    if !answer(&mut framed, dial.session_id, None).await {
        return;
    }
    tracing::debug!(app = %app.name, client = %dial.client_addr, "session started");
    let (tunnel, pending) = framed.into_inner();
    if let Err(e) = records::relay_with_plain(tunnel, pending, upstream).await {
        tracing::debug!(app = %app.name, error = %e, "session ended with an error");
    }
}

/// Connects the application, or says why not (in the words the user sees).
async fn connect(app: &AppSpec) -> Result<TcpStream, AppRefusal> {
    let (host, port) = app.target()?;
    let upstream = match tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(source)) => {
            let uri = app.uri.clone();
            return Err(AppRefusal::Connect { uri, source });
        }
        Err(_) => {
            let uri = app.uri.clone();
            return Err(AppRefusal::TimedOut { uri });
        }
    };
    let _ = upstream.set_nodelay(true);
    Ok(upstream)
}
