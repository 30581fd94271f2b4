//! The per-session MFA RPCs (`BeginSessionMfa`, `IssueSessionMfaCert`) called straight over
//! gRPC with a user's saved login (its HOP_HOME's certificate and trusted CAs, read as they
//! are: an expired certificate is presented, not refused by the client), for the refusal
//! matrix. A user whose roles ask for no tap gets `required: false` from the first, and the
//! second's handler answers a malformed assertion: both show the call got past admission.

use std::path::Path;

use hop_api::proto::auth_public_client::AuthPublicClient;
use hop_api::proto::{BeginSessionMfaRequest, IssueSessionMfaCertRequest, SessionMfaDatabase};
use hop_client::profile::{Login, current_profile};
use hop_net::trust::{ClientCert, Trust};

/// Which per-session MFA RPC to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MfaRpc {
    Begin,
    Issue,
}

/// The saved login of `home`, with the certificate in `cert` and `key` when given (another
/// CA's), else the login's own.
fn login(home: &Path, forged: Option<(&Path, &Path)>) -> Result<Login, String> {
    let (profile, paths) = current_profile(home).map_err(|e| format!("{e:#}"))?;
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    let (crt, key) = match forged {
        Some((c, k)) => (c.to_path_buf(), k.to_path_buf()),
        None => (paths.tls_cert(), paths.tls_key()),
    };
    Ok(Login {
        cert: ClientCert {
            chain_pem: read(&crt)?,
            key_pem: read(&key)?,
        },
        trust: Trust::CaPem(read(&paths.cas())?),
        profile,
        paths,
    })
}

/// Calls `rpc` as the login of `home` (with another certificate when `forged` names one):
/// `Ok` when the call got past admission to the handler, else what the caller was told.
pub fn call(home: &Path, rpc: MfaRpc, forged: Option<(&Path, &Path)>) -> Result<(), String> {
    let login = login(home, forged)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let channel =
            hop_net::connect::tls_channel(&login.profile.proxy, &login.trust, Some(&login.cert))
                .await
                .map_err(|e| format!("{e:#}"))?;
        let mut client = AuthPublicClient::new(channel);
        let database = Some(SessionMfaDatabase {
            service: "pg".into(),
            db_user: "alice".into(),
            db_name: "hopdb".into(),
        });
        match rpc {
            MfaRpc::Begin => {
                let r = client
                    .begin_session_mfa(BeginSessionMfaRequest {
                        database,
                        ..Default::default()
                    })
                    .await
                    .map_err(|s| said(&s))?;
                if r.into_inner().required {
                    return Err("a tap was asked of a role that sets no require_session_mfa".into());
                }
                Ok(())
            }
            MfaRpc::Issue => {
                let s = client
                    .issue_session_mfa_cert(IssueSessionMfaCertRequest {
                        database,
                        webauthn_json: "{}".into(),
                        ..Default::default()
                    })
                    .await
                    .err()
                    .ok_or("a certificate was issued for a malformed assertion")?;
                // The handler's own answer to the malformed assertion: admission let it in.
                if s.code() == tonic::Code::InvalidArgument && s.message().contains("webauthn_json")
                {
                    Ok(())
                } else {
                    Err(said(&s))
                }
            }
        }
    })
}

/// What a refused call tells the caller: the status, its message and the causes under it (a
/// TLS alert, for a certificate the handshake turns down).
fn said(s: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", s.code(), s.message());
    let mut cause = std::error::Error::source(s);
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}
