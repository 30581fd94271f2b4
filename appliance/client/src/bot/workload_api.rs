//! The `spiffe-workload-api` service of `hop bot start`: the SPIFFE Workload API's
//! `FetchX509SVID` on a Unix socket. A caller must send the `workload.spiffe.io: true` header and
//! is attested by its peer credentials (`SO_PEERCRED`: uid, gid, pid) against each SVID's rules;
//! a process no rule matches gets `PermissionDenied` and nothing else. The SVIDs are asked of
//! Auth by the bot (one key per path, made once per process) after each join or renewal and
//! pushed again to every open stream. The socket is open to every local user on purpose: the
//! rules, not file modes, decide. Keys are never logged.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status};

use super::identity::BotIdentity;
use super::workload_config::{Peer, ServedSvid, WorkloadApi};
use hop_api::proto::bots_client::BotsClient;
use hop_api::proto::{IssueSvidsRequest, SvidRequest};
use hop_api::spiffe_workload::spiffe_workload_api_server::{
    SpiffeWorkloadApi, SpiffeWorkloadApiServer,
};
use hop_api::spiffe_workload::{X509svid, X509svidRequest, X509svidResponse};
use hop_net::connect::{status_error, tls_channel};

/// The header every Workload API call must carry.
const SECURITY_HEADER: &str = "workload.spiffe.io";

/// The SVIDs issued last, by path.
pub type Issued = Arc<BTreeMap<String, X509svid>>;

/// The bot's Workload API services and the SVIDs they serve.
pub struct Workloads {
    services: Vec<WorkloadApi>,
    keys: BTreeMap<String, hop_ca::X509KeyPair>,
    issued: watch::Sender<Issued>,
}

impl Workloads {
    pub fn new(services: Vec<WorkloadApi>) -> Self {
        Self {
            services,
            keys: BTreeMap::new(),
            issued: watch::channel(Issued::default()).0,
        }
    }

    /// Starts one server per service (the socket replaced if a stale one is there).
    pub fn serve(&self) -> anyhow::Result<()> {
        for api in &self.services {
            let listener = bind(&api.socket)?;
            let served = Served {
                svids: api.svids.clone(),
                issued: self.issued.subscribe(),
            };
            let socket = api.socket.clone();
            tokio::spawn(async move {
                let r = tonic::transport::Server::builder()
                    .add_service(SpiffeWorkloadApiServer::new(served))
                    .serve_with_incoming(UnixListenerStream::new(listener))
                    .await;
                if let Err(e) = r {
                    tracing::error!(socket = %socket.display(), error = %e, "Workload API stopped");
                }
            });
            tracing::info!(socket = %api.socket.display(), "serving the SPIFFE Workload API");
        }
        Ok(())
    }

    /// Asks Auth for every path's SVID with the bot's identity `id` and pushes them to the
    /// streams; on failure the last SVIDs stay.
    pub async fn refresh(&mut self, id: &BotIdentity) -> anyhow::Result<()> {
        let paths: Vec<String> = self
            .services
            .iter()
            .flat_map(|s| s.svids.iter().map(|v| v.path.clone()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if paths.is_empty() {
            return Ok(());
        }
        let mut asks = Vec::with_capacity(paths.len());
        for path in &paths {
            if !self.keys.contains_key(path) {
                let key =
                    hop_ca::generate_x509_keypair(&mut rand::rng()).map_err(|e| anyhow!("{e}"))?;
                self.keys.insert(path.clone(), key);
            }
            let key = self.keys.get(path).ok_or_else(|| anyhow!("no key"))?;
            asks.push(SvidRequest {
                path: path.clone(),
                public_key: key.public_spki_der.clone(),
                ttl_seconds: 0,
            });
        }
        let channel = tls_channel(
            &id.login.profile.proxy,
            &id.login.trust,
            Some(&id.login.cert),
        )
        .await?;
        let resp = BotsClient::new(channel)
            .issue_svids(IssueSvidsRequest { svids: asks })
            .await
            .map_err(status_error)
            .context("asking for the Workload API's SVIDs")?
            .into_inner();
        let bundle = pem_certs(&resp.bundle_pem)?;
        let mut issued = BTreeMap::new();
        for svid in resp.svids {
            let key = self
                .keys
                .get(&svid.path)
                .ok_or_else(|| anyhow!("Auth answered an SVID for {} not asked", svid.path))?;
            let key_der = PrivatePkcs8KeyDer::from_pem_slice(key.private_pkcs8_pem.as_bytes())
                .map_err(|e| anyhow!("SVID key: {e}"))?;
            issued.insert(
                svid.path.clone(),
                X509svid {
                    spiffe_id: svid.spiffe_id,
                    x509_svid: pem_certs(&svid.certificate_pem)?,
                    x509_svid_key: key_der.secret_pkcs8_der().to_vec(),
                    bundle: bundle.clone(),
                    hint: String::new(),
                },
            );
        }
        self.issued.send_replace(Arc::new(issued));
        Ok(())
    }
}

/// The DER certificates of `pem`, one after another.
fn pem_certs(pem: &str) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        out.extend_from_slice(&c.map_err(|e| anyhow!("certificate PEM: {e}"))?);
    }
    if out.is_empty() {
        bail!("no certificate in Auth's answer");
    }
    Ok(out)
}

/// A listening socket at `path`, every local user allowed to connect (the rules decide).
fn bind(path: &std::path::Path) -> anyhow::Result<tokio::net::UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => bail!("{} exists and is not a socket", path.display()),
        Err(_) => {}
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("listening on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))?;
    Ok(listener)
}

/// One socket's server.
struct Served {
    svids: Vec<ServedSvid>,
    issued: watch::Receiver<Issued>,
}

/// The response for the SVIDs `served` (path, hint) among `issued`; `None` while none is issued.
fn response(issued: &Issued, served: &[(String, String)]) -> Option<X509svidResponse> {
    let svids: Vec<X509svid> = served
        .iter()
        .filter_map(|(path, hint)| {
            issued.get(path).map(|s| X509svid {
                hint: hint.clone(),
                ..s.clone()
            })
        })
        .collect();
    (!svids.is_empty()).then(|| X509svidResponse {
        svids,
        ..Default::default()
    })
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for Served {
    type FetchX509SVIDStream = ReceiverStream<Result<X509svidResponse, Status>>;

    async fn fetch_x509svid(
        &self,
        req: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let header = req
            .metadata()
            .get(SECURITY_HEADER)
            .and_then(|v| v.to_str().ok());
        if header != Some("true") {
            return Err(Status::invalid_argument(
                "the security header workload.spiffe.io: true is missing",
            ));
        }
        let peer = req
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|i| i.peer_cred)
            .map(|c| Peer {
                uid: c.uid(),
                gid: c.gid(),
                pid: c.pid(),
            })
            .ok_or_else(|| Status::permission_denied("the caller's credentials are unknown"))?;
        let served: Vec<(String, String)> = self
            .svids
            .iter()
            .filter(|s| s.serves(&peer))
            .map(|s| (s.path.clone(), s.hint.clone()))
            .collect();
        if served.is_empty() {
            tracing::warn!(uid = peer.uid, gid = peer.gid, pid = ?peer.pid, "Workload API: no rule matches the caller");
            return Err(Status::permission_denied(
                "no SVID is configured for this process",
            ));
        }
        let (tx, rx) = mpsc::channel(4);
        let mut issued = self.issued.clone();
        tokio::spawn(async move {
            loop {
                let next = response(&issued.borrow_and_update(), &served);
                if let Some(r) = next
                    && tx.send(Ok(r)).await.is_err()
                {
                    return;
                }
                tokio::select! {
                    changed = issued.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bot::workload_config::{Rule, UnixRule};

    fn served() -> Served {
        Served {
            svids: vec![ServedSvid {
                path: "/svc/a".into(),
                hint: "a".into(),
                rules: vec![Rule {
                    unix: UnixRule {
                        uid: Some(0),
                        ..UnixRule::default()
                    },
                }],
            }],
            issued: watch::channel(Issued::default()).1,
        }
    }

    #[tokio::test]
    async fn the_security_header_is_required_and_an_unknown_peer_gets_nothing() {
        let s = served();
        let e = s
            .fetch_x509svid(Request::new(X509svidRequest {}))
            .await
            .err()
            .unwrap();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        let mut req = Request::new(X509svidRequest {});
        req.metadata_mut()
            .insert(SECURITY_HEADER, "true".parse().unwrap());
        let e = s.fetch_x509svid(req).await.err().unwrap();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    }

    #[test]
    fn responses_carry_only_the_served_svids_with_their_hints() {
        let svid = |id: &str| X509svid {
            spiffe_id: id.into(),
            ..X509svid::default()
        };
        let issued: Issued = Arc::new(BTreeMap::from([
            ("/svc/a".to_string(), svid("spiffe://c/svc/a")),
            ("/svc/b".to_string(), svid("spiffe://c/svc/b")),
        ]));
        let r = response(&issued, &[("/svc/a".into(), "web".into())]).unwrap();
        assert_eq!(r.svids.len(), 1);
        assert_eq!(
            (r.svids[0].spiffe_id.as_str(), r.svids[0].hint.as_str()),
            ("spiffe://c/svc/a", "web")
        );
        assert!(response(&issued, &[("/svc/z".into(), String::new())]).is_none());
        assert!(response(&Issued::default(), &[("/svc/a".into(), String::new())]).is_none());
    }
}
