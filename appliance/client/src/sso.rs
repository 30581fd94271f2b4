//! `hop login --auth NAME`: single sign-on through the browser.
//!
//! The client makes new keys and a one-time 32-byte key, listens on `127.0.0.1:0` for one
//! redirect, asks Auth to start the login (its public keys, the one-time key, the listener's
//! URL), opens the provider's URL in a browser (or prints it with `--browser none`), and waits
//! — at most [`SSO_WAIT`] — for the browser to arrive at the listener with the sealed result,
//! which it opens, checks against its own request and saves exactly as a password login's.
//!
//! The listener reads one request line ([`parse_request_target`], sans-IO, at most
//! [`MAX_REQUEST_HEAD`] bytes, each connection under a deadline) and answers a small text
//! page. It never prints the one-time key or the sealed result.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cli::LoginArgs;
use crate::profile::{self, Paths};
use hop_api::proto::sso_client::SsoClient;
use hop_api::proto::{CreateSsoAuthRequestRequest, SsoLoginResult};
use hop_api::sso::{RESPONSE_PARAM, SEAL_KEY_LEN, query_param, unseal};
use hop_net::connect::{status_error, tls_channel};

/// How long `hop login --auth` waits for the browser.
pub const SSO_WAIT: Duration = Duration::from_secs(180);
/// The most bytes of a request head the listener reads.
pub const MAX_REQUEST_HEAD: usize = 80 * 1024;
/// How long one connection to the listener may take to send its request line.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);
/// The listener's path.
const CALLBACK_PATH: &str = "/callback";

/// Why a request head was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestLineError {
    #[error("the request line is malformed")]
    Malformed,
    #[error("the request head is larger than {MAX_REQUEST_HEAD} bytes")]
    TooLong,
}

/// The method and target of an HTTP/1.x request line once `buf` holds the whole line:
/// `Ok(None)` = need more bytes.
pub fn parse_request_target(buf: &[u8]) -> Result<Option<(&str, &str)>, RequestLineError> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() > MAX_REQUEST_HEAD {
            return Err(RequestLineError::TooLong);
        }
        return Ok(None);
    };
    let line = std::str::from_utf8(buf.get(..end).ok_or(RequestLineError::Malformed)?)
        .map_err(|_| RequestLineError::Malformed)?;
    let mut parts = line.split(' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None)
            if !m.is_empty() && t.starts_with('/') && v.starts_with("HTTP/1.") =>
        {
            Ok(Some((m, t)))
        }
        _ => Err(RequestLineError::Malformed),
    }
}

fn page(status: &str, title: &str, text: &str) -> Vec<u8> {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head><body style=\"font-family:sans-serif;max-width:40em;margin:4em auto\"><h1>{title}</h1><p>{text}</p></body></html>\n"
    );
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\nReferrer-Policy: no-referrer\r\nContent-Security-Policy: default-src 'none'; style-src 'unsafe-inline'\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads one request's target from a connection, under [`CONNECTION_DEADLINE`].
async fn read_target(conn: &mut tokio::net::TcpStream) -> anyhow::Result<String> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            if let Some((_, target)) = parse_request_target(&buf)? {
                return Ok::<_, anyhow::Error>(target.to_string());
            }
            let n = conn.read(&mut chunk).await?;
            if n == 0 {
                bail!("the connection closed before a request line");
            }
            buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
        }
    };
    tokio::time::timeout(CONNECTION_DEADLINE, read)
        .await
        .map_err(|_| anyhow!("a connection to the login listener sent no request in time"))?
}

/// Waits for the browser's redirect and returns the sealed result.
async fn wait_for_result(
    listener: tokio::net::TcpListener,
) -> anyhow::Result<(String, tokio::net::TcpStream)> {
    let wait = async {
        loop {
            let (mut conn, _) = listener.accept().await?;
            let target = match read_target(&mut conn).await {
                Ok(t) => t,
                Err(_) => continue,
            };
            let (path, query) = target.split_once('?').unwrap_or((&target, ""));
            if path != CALLBACK_PATH {
                let _ = conn
                    .write_all(&page(
                        "404 Not Found",
                        "Not found",
                        "This is hop login's listener.",
                    ))
                    .await;
                continue;
            }
            if let Some(error) = query_param(query, "error") {
                let _ = conn
                    .write_all(&page(
                        "403 Forbidden",
                        "Login failed",
                        "The login was refused; see hop login's output.",
                    ))
                    .await;
                // Anyone may send the browser here: no control character reaches the terminal.
                let error: String = error
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(300)
                    .collect();
                bail!("SSO login refused: {error}");
            }
            match query_param(query, RESPONSE_PARAM) {
                Some(sealed) => return Ok::<_, anyhow::Error>((sealed, conn)),
                None => {
                    let _ = conn
                        .write_all(&page(
                            "400 Bad Request",
                            "Login failed",
                            "The redirect carries no login result.",
                        ))
                        .await;
                }
            }
        }
    };
    tokio::time::timeout(SSO_WAIT, wait).await.map_err(|_| {
        anyhow!(
            "no login result arrived within {}s (was the URL opened in a browser?)",
            SSO_WAIT.as_secs()
        )
    })?
}

fn open_browser(url: &str) -> bool {
    std::process::Command::new("xdg-open")
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok()
}

/// `hop login --auth NAME`.
pub async fn sso_login(args: &LoginArgs, connector: &str) -> anyhow::Result<()> {
    if args.password_stdin || args.otp.is_some() {
        bail!(
            "--auth {connector}: the provider checks your password; drop --password-stdin and --otp"
        );
    }
    let home = profile::hop_home()?;
    let hint_user = args
        .user
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_default();
    let saved =
        std::fs::read_to_string(Paths::new(home.clone(), &args.trust.proxy, &hint_user).cas()).ok();
    let trust = crate::user::trust_for(&args.trust, saved)?;
    let channel = tls_channel(&args.trust.proxy, &trust, None).await?;
    let ttl = match &args.ttl {
        Some(t) => hop_config::parse_duration(t)
            .map_err(|e| anyhow!("--ttl: {e}"))?
            .as_secs(),
        None => 0,
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("listening on 127.0.0.1 for the login's redirect")?;
    let port = listener.local_addr()?.port();
    let mut seal_key = [0u8; SEAL_KEY_LEN];
    rand::fill(&mut seal_key[..]);
    let mut rng = rand::rng();
    let ssh = hop_ca::generate_ssh_keypair(&mut rng).map_err(|e| anyhow!("{e}"))?;
    let tls = hop_ca::generate_x509_keypair(&mut rng).map_err(|e| anyhow!("{e}"))?;
    let started = SsoClient::new(channel)
        .create_sso_auth_request(CreateSsoAuthRequestRequest {
            connector: connector.to_string(),
            ssh_public_key: ssh.public_openssh.clone(),
            tls_public_key: tls.public_spki_der.clone(),
            ttl_seconds: ttl,
            client_redirect_url: format!(
                "{}{CALLBACK_PATH}",
                args.callback.as_deref().map_or_else(
                    || format!("http://127.0.0.1:{port}"),
                    |c| c.trim_end_matches('/').to_string()
                )
            ),
            seal_key: seal_key.to_vec(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let url = started.redirect_url;
    let opened = args.browser != "none" && open_browser(&url);
    if opened {
        println!("If the browser does not open, visit this URL to log in:\n  {url}");
    } else {
        println!("Open this URL in a browser to log in:\n  {url}");
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let (sealed, mut conn) = wait_for_result(listener).await?;
    let opened = unseal(&seal_key, &started.request_id, &sealed)
        .map_err(|e| anyhow!("{e}"))
        .and_then(|plain| {
            SsoLoginResult::decode(plain.as_slice())
                .map_err(|_| anyhow!("the login result is malformed"))
        })
        .and_then(|r| {
            if r.request_id != started.request_id {
                bail!("the login result is another login's");
            }
            Ok(r)
        });
    let result = match opened {
        Ok(r) => {
            let _ = conn
                .write_all(&page(
                    "200 OK",
                    "Logged in",
                    "You are logged in to Hop. You may close this tab.",
                ))
                .await;
            r
        }
        Err(e) => {
            let _ = conn
                .write_all(&page(
                    "400 Bad Request",
                    "Login failed",
                    "The login result could not be opened; see hop login's output.",
                ))
                .await;
            return Err(e);
        }
    };
    let _ = conn.shutdown().await;
    let login = result
        .login
        .ok_or_else(|| anyhow!("the login result holds no certificates"))?;
    crate::user::save_login(&home, &args.trust, &login.username, (&ssh, &tls), &login)?;
    crate::user::print_login(&login, &args.trust.proxy);
    let traits: std::collections::BTreeMap<String, Vec<String>> =
        serde_json::from_str(&result.traits_json).unwrap_or_default();
    if !traits.is_empty() {
        let text: Vec<String> = traits
            .iter()
            .map(|(k, v)| format!("{k}={}", v.join(",")))
            .collect();
        println!("  Traits:  {}", text.join(" "));
    }
    println!("  Via:     SSO connector {connector}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_parse_whole_or_wait_for_more() {
        let req = b"GET /callback?response=abc HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(
            parse_request_target(req).unwrap(),
            Some(("GET", "/callback?response=abc"))
        );
        let line_end = req.windows(2).position(|w| w == b"\r\n").unwrap();
        for i in 0..line_end + 1 {
            assert_eq!(parse_request_target(&req[..i]), Ok(None), "prefix {i}");
        }
        for bad in [
            &b"GET\r\n"[..],
            b"GET /x\r\n",
            b"GET x HTTP/1.1\r\n",
            b"GET /x HTTP/2 extra\r\n",
            b"GET /x SMTP\r\n",
            b"\xff /x HTTP/1.1\r\n",
        ] {
            assert!(parse_request_target(bad).is_err());
        }
        assert_eq!(
            parse_request_target(&vec![b'a'; MAX_REQUEST_HEAD + 1]),
            Err(RequestLineError::TooLong)
        );
    }
}
