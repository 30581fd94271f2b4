//! Proxy peering: a session for an agent whose tunnel another proxy of the cluster holds.
//!
//! Behind a load balancer a user lands on any proxy, and an agent keeps tunnels to only some of
//! them. This module owns the hop between two proxies (ALPN `hop-peer` on the one port): the
//! proxy the user reached ([`dial`]) connects to the proxy that holds the agent's tunnel
//! ([`serve`]), asks it for a Dial on one of that agent's pooled data connections
//! (`Frame::PeerDial`), gets the agent's `DialResult`, and both relay the session's bytes (each
//! on its own fast path when it can). It also owns this proxy's peering certificate
//! ([`PeerIdentity`]).
//!
//! What a peer may do, and what it may not:
//! - Both sides present peering certificates from the cluster's host CA, role `proxy`, named by
//!   the proxy id; the dialing side checks that the answering one is the proxy it meant, the
//!   answering side admits the dialing one as it admits agents (not locked, certificate valid)
//!   and only if its presence summary is live in the shared backend. No join token makes a proxy
//!   certificate (`Join` refuses the role).
//! - A peer names an agent and a Dial, never a user: the proxy the user reached decided the
//!   session (admission, RBAC, audit) as for an agent tunnelled to it, and the agent decides
//!   again as it always does (an SSH node authenticates the user's certificate itself). The
//!   answering proxy admits no user on a peer's word and opens nothing but the Dial.
//! - Only agents tunnelled to the answering proxy are reached: a PeerDial is never passed on.
//! - A PostgreSQL CancelRequest that names no session of the proxy that received it is passed
//!   to the others (`Frame::PeerCancel`, no answer); each looks up only its own sessions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use hop_auth::AuthServer;
use hop_auth::caller::Caller;
use hop_ca::HostRole;
use hop_net::tunnel::{ALPN_PEER, FrameIoError, FramedStream};
use hop_protocols::tunnel::{Dial, DialResult, Frame, GoAway, PeerCancel, PeerDial};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio::sync::watch;

use crate::listener::IdentifyPeer;
use crate::proxy_tls::ProxyTls;
use crate::relay::RelayHandle;
use crate::relay::bounded::RecordReads;
use crate::tunnels::remote::Peer;
use crate::tunnels::{AgentStream, TunnelRegistry};

/// Lifetime of a peering certificate.
const CERT_TTL: Duration = Duration::from_secs(3600);
/// The most lifetime a certificate may have left to be taken as a peering certificate (its own
/// lifetime and a minute of clock skew): the proxy's other certificates (30 days, under the same
/// role and id) are not peering credentials.
const PEERING_CERT_MAX_LEFT: Duration = Duration::from_secs(3600 + 60);

/// Whether a certificate valid until `expires` can be a peering certificate now.
fn peering_lifetime(expires: SystemTime, now: SystemTime) -> bool {
    expires
        .duration_since(now)
        .is_ok_and(|left| left <= PEERING_CERT_MAX_LEFT)
}

/// A peering certificate is issued again this often (and after each change of the CAs).
const REISSUE_EVERY: Duration = Duration::from_secs(20 * 60);
/// How long connecting to a peer (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the dialing side waits for the agent's answer through the peer: the peer's wait for
/// a pooled connection and the agent's own answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(25);
/// How long a peer has to send its PeerDial.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a peer connection failed; the words may reach the user.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("this proxy has no peering certificate (Auth could not issue one)")]
    NoCertificate,
    #[error("cannot reach proxy {proxy} at {addr}: {source}")]
    Connect {
        proxy: String,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("proxy {proxy} at {addr} did not answer in time")]
    Timeout { proxy: String, addr: String },
    #[error("proxy {proxy}: {source}")]
    Frame {
        proxy: String,
        #[source]
        source: FrameIoError,
    },
    #[error("proxy {proxy} answered something other than this session's DialResult")]
    NoDialResult { proxy: String },
    #[error("proxy id {0:?} cannot name a TLS server")]
    BadProxyId(String),
    #[error("the peering TLS configuration: {0}")]
    Tls(#[source] rustls::Error),
}

/// A Dial through a peer did not open a session.
#[derive(Debug, thiserror::Error)]
pub enum PeerDialError {
    /// The peer or the agent refused, in its words.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Failed(#[from] PeerError),
}

struct Issued {
    key: Arc<CertifiedKey>,
}

/// This proxy's peering certificate (host CA, role proxy, named by the proxy id), kept fresh
/// by [`PeerIdentity::keep_fresh`]; and the TLS configuration of connections to peers.
pub struct PeerIdentity {
    auth: Arc<AuthServer>,
    proxy_id: String,
    identify: IdentifyPeer,
    current: ArcSwapOption<Issued>,
}

impl std::fmt::Debug for PeerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerIdentity")
            .field("proxy_id", &self.proxy_id)
            .finish_non_exhaustive()
    }
}

impl PeerIdentity {
    /// `identify` verifies a peer's certificate against the cluster's trusted host CA keys now.
    pub fn new(auth: Arc<AuthServer>, proxy_id: String, identify: IdentifyPeer) -> Arc<Self> {
        Arc::new(Self {
            auth,
            proxy_id,
            identify,
            current: ArcSwapOption::empty(),
        })
    }

    /// The proxy id the certificate names.
    pub fn proxy_id(&self) -> &str {
        &self.proxy_id
    }

    /// Issues the certificate now.
    pub fn issue(&self) -> Result<(), String> {
        let names = [self.proxy_id.clone()];
        let (key_pem, chain_pem) = self
            .auth
            .issue_host_tls(&self.proxy_id, HostRole::Proxy, &names, CERT_TTL)
            .map_err(|e| e.to_string())?;
        let key = crate::tls::certified_key(&chain_pem, &key_pem).map_err(|e| e.to_string())?;
        self.current
            .store(Some(Arc::new(Issued { key: Arc::new(key) })));
        Ok(())
    }

    /// The certificate served to peers (ALPN `hop-peer`) and presented to them.
    pub fn certified_key(&self) -> Option<Arc<CertifiedKey>> {
        self.current.load().as_ref().map(|i| i.key.clone())
    }

    /// Issues the certificate at once, then every [`REISSUE_EVERY`] and after each change of
    /// the cluster's CAs (a rotation step), until shutdown.
    pub async fn keep_fresh(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut cas = self.auth.watch_authorities();
        loop {
            let me = self.clone();
            match tokio::task::spawn_blocking(move || me.issue()).await {
                Ok(Ok(())) => tracing::debug!("peering certificate issued"),
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot issue the peering certificate"),
                Err(e) => tracing::warn!(error = %e, "peering certificate task failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(REISSUE_EVERY) => {}
                changed = cas.changed() => if changed.is_err() { return },
                _ = hop_platform::signals::until_shutdown(&mut shutdown) => return,
            }
        }
    }

    /// A client configuration for a connection to proxy `expected`.
    fn client_config(&self, expected: &str) -> Result<Arc<rustls::ClientConfig>, PeerError> {
        let key = self.certified_key().ok_or(PeerError::NoCertificate)?;
        let provider = hop_net::pem::provider();
        let verifier = PeerVerifier {
            expected: expected.to_string(),
            identify: self.identify.clone(),
            auth: self.auth.clone(),
            provider: provider.clone(),
        };
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(PeerError::Tls)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(Arc::new(OwnCertificate(key)));
        cfg.alpn_protocols = vec![ALPN_PEER.to_vec()];
        // Each session is its own connection, relayed on the fast path with its keys.
        cfg.resumption = Resumption::disabled();
        cfg.enable_secret_extraction = true;
        Ok(Arc::new(cfg))
    }
}

/// Presents this proxy's peering certificate.
#[derive(Debug)]
struct OwnCertificate(Arc<CertifiedKey>);

impl ResolvesClientCert for OwnCertificate {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Accepts only the peering certificate of proxy `expected`: a host certificate of a key the
/// host CA trusts now, of role proxy, for that proxy id. Names are not what is checked: an
/// agent's certificate may carry any name Auth allowed it, never the proxy role.
struct PeerVerifier {
    expected: String,
    identify: IdentifyPeer,
    auth: Arc<AuthServer>,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for PeerVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerVerifier")
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        match (self.identify)(end_entity.as_ref(), unspecified) {
            Some(Caller::Host {
                host_id,
                role,
                expires,
                ..
            }) if role == HostRole::Proxy
                && host_id == self.expected
                && peering_lifetime(expires, self.auth.now()) =>
            {
                Ok(ServerCertVerified::assertion())
            }
            _ => Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The configuration allows TLS 1.3 only.
        Err(rustls::Error::General(
            "TLS 1.2 is not used between proxies".into(),
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Serves the peering certificate to connections that ask for ALPN `hop-peer`, and the
/// proxy's own (or a web application's) to everyone else.
#[derive(Debug)]
pub struct PeerCertResolver {
    pub peer: Arc<PeerIdentity>,
    pub inner: Arc<dyn rustls::server::ResolvesServerCert>,
}

impl rustls::server::ResolvesServerCert for PeerCertResolver {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // Only a connection that offers nothing but `hop-peer` (as peers do) gets it.
        let wants_peer = hello.alpn().is_some_and(|a| {
            let offered: Vec<&[u8]> = a.collect();
            offered == [ALPN_PEER]
        });
        if wants_peer {
            return self.peer.certified_key();
        }
        self.inner.resolve(hello)
    }
}

/// Asks `peer` to send `dial` to agent `agent_id` over one of its pooled data connections;
/// the connection to the peer, past the agent's acceptance, carries the session.
pub async fn dial(
    identity: &PeerIdentity,
    peer: &Peer,
    agent_id: &str,
    dial: Dial,
) -> Result<FramedStream<AgentStream>, PeerDialError> {
    let mut framed = connect(identity, peer).await?;
    let failed = |source| PeerError::Frame {
        proxy: peer.proxy_id.clone(),
        source,
    };
    let session_id = dial.session_id;
    let request = Frame::PeerDial(PeerDial {
        agent_id: agent_id.to_string(),
        dial,
    });
    framed.write_frame(&request).await.map_err(failed)?;
    match framed.read_frame(ANSWER_TIMEOUT).await.map_err(failed)? {
        Frame::DialResult(r) if r.session_id != session_id => Err(PeerError::NoDialResult {
            proxy: peer.proxy_id.clone(),
        }
        .into()),
        Frame::DialResult(r) if r.ok => {
            identity.auth.metrics().peer_sessions_sent.inc();
            Ok(framed)
        }
        Frame::DialResult(r) => Err(PeerDialError::Refused(
            r.error.unwrap_or_else(|| "the agent refused".into()),
        )),
        _ => Err(PeerError::NoDialResult {
            proxy: peer.proxy_id.clone(),
        }
        .into()),
    }
}

async fn connect(
    identity: &PeerIdentity,
    peer: &Peer,
) -> Result<FramedStream<AgentStream>, PeerError> {
    let cfg = identity.client_config(&peer.proxy_id)?;
    let name = ServerName::try_from(peer.proxy_id.clone())
        .map_err(|_| PeerError::BadProxyId(peer.proxy_id.clone()))?;
    let connect_err = |source| PeerError::Connect {
        proxy: peer.proxy_id.clone(),
        addr: peer.addr.clone(),
        source,
    };
    let opened = tokio::time::timeout(CONNECT_TIMEOUT, async {
        let tcp = tokio::net::TcpStream::connect(&peer.addr)
            .await
            .map_err(connect_err)?;
        let _ = tcp.set_nodelay(true);
        ProxyTls::connect(RecordReads::new(tcp, true), cfg, name)
            .await
            .map_err(connect_err)
    })
    .await
    .map_err(|_| PeerError::Timeout {
        proxy: peer.proxy_id.clone(),
        addr: peer.addr.clone(),
    })??;
    Ok(FramedStream::new(opened))
}

/// A peer proxy on a `hop-peer` connection, as its certificate names it.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub proxy_id: String,
    pub expires: SystemTime,
    pub remote: SocketAddr,
}

/// Serves one peer connection: admits the peer, reads its PeerDial, takes a pooled data
/// connection of the agent (only one tunnelled here), forwards the Dial, passes the agent's
/// answer back and relays the session.
pub async fn serve(
    tls: AgentStream,
    peer: Inbound,
    db: &crate::routes::postgres::DbRoutes,
    fast_path: Option<(&RelayHandle, usize)>,
) {
    let (registry, auth) = (&db.registry, &*db.auth);
    let Inbound {
        proxy_id, remote, ..
    } = &peer;
    if let Err(refusal) = crate::admission::admit_agent(
        auth,
        proxy_id,
        peer.expires,
        hop_admission::Route::ProxyPeer,
        *remote,
    ) {
        tracing::warn!(%proxy_id, %remote, %refusal, "peer proxy refused");
        return;
    }
    if let Some(why) = not_a_peer_handshake(&tls, peer.expires, auth.now()) {
        tracing::warn!(%proxy_id, %remote, "peer connection refused: {why}");
        auth.audit_refusal(
            hop_admission::Route::ProxyPeer,
            &format!("host {proxy_id}"),
            &hop_admission::Refusal::WrongCertificate {
                what: why,
                route: hop_admission::Route::ProxyPeer.name(),
            },
            Some(*remote),
        );
        return;
    }
    if !registry.is_peer(proxy_id) {
        tracing::warn!(%proxy_id, %remote, "peer connection refused: no live proxy of the cluster goes by that id");
        auth.audit_refusal(
            hop_admission::Route::ProxyPeer,
            &format!("host {proxy_id}"),
            &hop_admission::Refusal::WrongCertificate {
                what: "a proxy certificate of no live proxy",
                route: hop_admission::Route::ProxyPeer.name(),
            },
            Some(*remote),
        );
        return;
    }
    let mut client = FramedStream::new(tls);
    let request = match client.read_frame(REQUEST_TIMEOUT).await {
        Ok(Frame::PeerDial(p)) => p,
        Ok(Frame::PeerCancel(c)) => {
            // Never passed on again: only this proxy's sessions are looked up.
            crate::routes::postgres::cancel_here(db, c.process_id, &c.key, *remote).await;
            return;
        }
        Ok(other) => {
            tracing::warn!(%proxy_id, frame = other.frame_type(), "peer did not send a PeerDial");
            return;
        }
        Err(e) => {
            tracing::debug!(%proxy_id, error = %e, "peer request failed");
            return;
        }
    };
    let PeerDial { agent_id, dial } = request;
    let session_id = dial.session_id;
    let Some(agent) = dial_here(registry, &agent_id, dial, proxy_id, &mut client).await else {
        return;
    };
    let answer = Frame::DialResult(DialResult {
        session_id,
        ok: true,
        error: None,
    });
    if client.write_frame(&answer).await.is_err() {
        return;
    }
    auth.metrics().peer_sessions_taken.inc();
    let (agent, hold) = agent;
    let outcome =
        crate::relay::run_session(fast_path, client, agent, None, *remote, auth.metrics()).await;
    drop(hold);
    match outcome {
        Ok((up, down)) => {
            tracing::debug!(%proxy_id, %agent_id, up, down, "peered session ended")
        }
        Err(e) => tracing::debug!(%proxy_id, %agent_id, error = %e, "peered session failed"),
    }
}

/// Why a `hop-peer` connection is not what peers make, if it is not: a full TLS 1.3 handshake
/// with a peering certificate (an hour's lifetime, not the proxy's 30-day ones).
fn not_a_peer_handshake(
    tls: &AgentStream,
    expires: SystemTime,
    now: SystemTime,
) -> Option<&'static str> {
    let conn = tls.get_ref().1;
    if conn.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
        return Some("a peer connection that is not TLS 1.3");
    }
    if conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
        return Some("a resumed peer connection (peers make full handshakes)");
    }
    if !peering_lifetime(expires, now) {
        return Some("a proxy certificate that is not a peering certificate");
    }
    None
}

/// The agent's leg of a peer's Dial, from this proxy's own pool; a refusal is answered to the
/// peer and `None` returned.
async fn dial_here(
    registry: &TunnelRegistry,
    agent_id: &str,
    dial: Dial,
    peer: &str,
    client: &mut FramedStream<AgentStream>,
) -> Option<(
    FramedStream<AgentStream>,
    crate::dataplane::limits::ConnectionGuard,
)> {
    let refuse = |why: String| {
        Frame::DialResult(DialResult {
            session_id: dial.session_id,
            ok: false,
            error: Some(why),
        })
    };
    if !registry.has_control(agent_id) {
        let why = format!(
            "agent {agent_id} has no tunnel to proxy {}",
            registry.proxy_id()
        );
        tracing::debug!(%peer, "{why}");
        let _ = client.write_frame(&refuse(why)).await;
        return None;
    }
    let what = format!("agent {agent_id}");
    match crate::routes::dial::dial_local(registry, agent_id, &what, &dial).await {
        Ok(opened) => Some(opened),
        Err(e) => {
            let _ = client.write_frame(&refuse(e.to_string())).await;
            None
        }
    }
}

/// Passes a PostgreSQL cancel key that named no session here to every other proxy that takes
/// peer connections (at most one has it), in the background; nothing is answered.
pub fn forward_cancel(registry: &TunnelRegistry, process_id: u32, key: &[u8]) {
    let Some(identity) = registry.peering() else {
        return;
    };
    for peer in registry.reachable_peers() {
        let (identity, key) = (identity.clone(), key.to_vec());
        tokio::spawn(async move {
            let sent = async {
                let mut framed = connect(&identity, &peer).await?;
                let frame = Frame::PeerCancel(PeerCancel { process_id, key });
                framed
                    .write_frame(&frame)
                    .await
                    .map_err(|source| PeerError::Frame {
                        proxy: peer.proxy_id.clone(),
                        source,
                    })?;
                let (mut tls, _) = framed.into_inner();
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
                Ok::<(), PeerError>(())
            };
            if let Err(e) = sent.await {
                tracing::debug!(proxy = %peer.proxy_id, error = %e, "a cancel could not be passed on");
            }
        });
    }
}

/// Sends away a data connection of an agent without a control connection here (its pool
/// belongs with its tunnel): a GoAway that asks it to dial again at once.
pub async fn send_data_away(tls: AgentStream, host_id: String, remote: SocketAddr) {
    let mut framed = FramedStream::new(tls);
    let goaway = Frame::GoAway(GoAway {
        reason: "this agent has no tunnel to this proxy".into(),
        reconnect_after_ms: 0,
    });
    if let Err(e) = framed.write_frame(&goaway).await {
        tracing::debug!(%host_id, %remote, error = %e, "data connection sent away");
    }
    let (mut tls, _) = framed.into_inner();
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
}
