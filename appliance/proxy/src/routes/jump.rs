//! The proxy as an SSH jump host on the one port: `ssh -J PROXY:3080 root@node1.CLUSTER`.
//!
//! The data plane sees `SSH-` as the first bytes and hands the connection here. This module owns
//! that SSH server: the proxy's host key and a host certificate from the cluster's host CA
//! (principals: the proxy's names; renewed before it expires, and when a CA rotation step moves
//! servers to the key that signs now, `crate::rotation::signer_stale`), user authentication by
//! user certificate only (signed by a key the user CA trusts now, this cluster's, user not
//! locked), and the one thing a
//! jump host does: `direct-tcpip` channels to a node, resolved like `hop ssh` resolves it, checked
//! against the roles (some certificate login must be allowed on the node), then carried over a
//! pooled tunnel connection to the node's agent. The inner SSH session stays end to end between
//! the client and the node, which authenticates the user again. Shells, exec and forwarding to
//! anything but a node are refused. A client must finish the banner, key exchange and
//! authentication within `proxy_service.ssh_auth_timeout`; until it authenticates, its connection
//! counts against its address's pre-authentication budget.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use hop_admission::{Refusal, Route};
use russh::keys::Certificate;
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelOpenFailure};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::dial::dial_agent;
use super::ssh::{SshCertRefusal, resolve, verify_user_cert};
use super::ssh_host::{CertifiedConfig, SshIdentityError};
use crate::admission::{Live, LiveWatch, UserCert, admit, dup_stream};
use crate::dataplane::limits::ConnectionGuard;
use crate::tunnels::TunnelRegistry;
use hop_auth::AuthServer;
use hop_auth::audit::EventKind;
use hop_net::ssh_deadline::{AuthDeadline, AuthDone};

/// Lifetime of the jump host's SSH host certificate; it is renewed at half of it.
const HOST_CERT_TTL: Duration = Duration::from_secs(24 * 3600);
/// How soon a failed renewal is tried again.
const RENEW_RETRY: Duration = Duration::from_secs(60);

/// The jump host: its current SSH configuration and what sessions need.
pub struct JumpHost {
    config: ArcSwap<russh::server::Config>,
    /// Fingerprint of the host CA key that signed the current host certificate.
    signer: Mutex<Option<String>>,
    names: Vec<String>,
    registry: Arc<TunnelRegistry>,
    auth: Arc<AuthServer>,
    /// Banner, key exchange and authentication must be done within this.
    auth_timeout: Duration,
}

impl std::fmt::Debug for JumpHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JumpHost")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

fn server_config(auth: &AuthServer, names: &[String]) -> Result<CertifiedConfig, SshIdentityError> {
    // A jump connection that carries nothing for an hour is closed.
    super::ssh_host::certified_server_config(
        auth,
        "proxy",
        names,
        HOST_CERT_TTL,
        Some(Duration::from_secs(3600)),
    )
}

impl JumpHost {
    /// A jump host answering to `names` (and `CLUSTER` names of the proxy).
    pub fn new(
        auth: Arc<AuthServer>,
        registry: Arc<TunnelRegistry>,
        mut names: Vec<String>,
        auth_timeout: Duration,
    ) -> Result<Arc<Self>, SshIdentityError> {
        names.push(format!("proxy.{}", auth.cluster_name()));
        names.sort();
        names.dedup();
        let certified = server_config(&auth, &names)?;
        Ok(Arc::new(Self {
            config: ArcSwap::from_pointee(certified.config),
            signer: Mutex::new(certified.signer),
            names,
            registry,
            auth,
            auth_timeout,
        }))
    }

    /// Renews the host certificate at half its life, and after a CA rotation step that moves
    /// servers to the key that signs now, until shutdown.
    pub async fn keep_fresh(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut changes = Some(self.auth.watch_authorities());
        let renewal = tokio::time::sleep(HOST_CERT_TTL / 2);
        tokio::pin!(renewal);
        loop {
            let reason = tokio::select! {
                _ = &mut renewal => "half of its life is over",
                _ = crate::rotation::authorities_changed(&mut changes) => {
                    if !self.signer_stale() {
                        continue;
                    }
                    "a CA rotation step moves servers to the key that signs now"
                }
                _ = hop_platform::signals::until_shutdown(&mut shutdown) => return,
            };
            let next = match self.renew() {
                Ok(()) => {
                    tracing::info!(reason, "jump host certificate renewed");
                    HOST_CERT_TTL / 2
                }
                Err(e) => {
                    tracing::error!(reason, error = %hop_net::connect::error_chain(&e), "cannot renew the jump host certificate");
                    RENEW_RETRY
                }
            };
            renewal
                .as_mut()
                .reset(hop_platform::clock::tokio_now() + next);
        }
    }

    /// A new host key and certificate from the key that signs now.
    fn renew(&self) -> Result<(), SshIdentityError> {
        let certified = server_config(&self.auth, &self.names)?;
        self.config.store(Arc::new(certified.config));
        *self.signer.lock().unwrap_or_else(|p| p.into_inner()) = certified.signer;
        Ok(())
    }

    /// Whether the host CA's phase asks servers to present a certificate of the key that signs
    /// now and the current certificate is of another key.
    fn signer_stale(&self) -> bool {
        let cas = self.auth.authorities();
        let host = cas.set(hop_ca::CaKind::Host);
        let ours = self
            .signer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        crate::rotation::signer_stale(
            host.rotation.phase,
            ours.as_deref(),
            host.signer().ssh_fingerprint.as_deref(),
        )
    }

    /// Serves one SSH connection the data plane handed over; `guard` is its place in the
    /// connection limits, released when the session ends (its pre-authentication place as soon
    /// as the client authenticates).
    pub async fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        remote: SocketAddr,
        guard: ConnectionGuard,
    ) {
        let (deadline, auth_done) = AuthDeadline::new(self.auth_timeout);
        let handler = JumpHandler {
            jump: self.clone(),
            remote,
            cert: None,
            auth_done,
            guard,
        };
        let stream = deadline.guard(stream);
        match russh::server::run_stream(self.config.load_full(), stream, handler).await {
            Ok(running) => {
                if let Err(e) = running.await {
                    tracing::debug!(%remote, error = %e, "jump connection ended with an error");
                }
            }
            Err(e) => tracing::debug!(%remote, error = %e, "jump host SSH handshake failed"),
        }
    }
}

/// Why the jump host refuses a user's certificate.
#[derive(Debug, thiserror::Error)]
enum JumpRefusal {
    #[error(transparent)]
    Certificate(#[from] SshCertRefusal),
    #[error(transparent)]
    Admission(#[from] Refusal),
}

struct JumpHandler {
    jump: Arc<JumpHost>,
    remote: SocketAddr,
    cert: Option<UserCert>,
    auth_done: AuthDone,
    guard: ConnectionGuard,
}

impl JumpHandler {
    fn refused(&self, user: &str, server: &str, why: impl std::fmt::Display) {
        let auth = &self.jump.auth;
        auth.emit(
            auth.event(EventKind::SshAuth, user)
                .remote(Some(self.remote))
                .field("server", server.to_string())
                .field("via", "jump")
                .failed(EventKind::SshAuth, why.to_string()),
        );
    }

    /// Checks a user certificate: the cluster's user CA, then admission on the jump route.
    fn admit(&self, cert: &Certificate) -> Result<UserCert, JumpRefusal> {
        let auth = &self.jump.auth;
        let (text, identity, expires) = verify_user_cert(auth, cert, auth.now())?;
        let cert = UserCert {
            identity,
            issued_at: hop_ca::ssh_issued_at(&text).unwrap_or(std::time::UNIX_EPOCH),
            expires,
        };
        admit(auth, &cert, None, Route::JumpHost, self.remote)?;
        Ok(cert)
    }
}

impl russh::server::Handler for JumpHandler {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        _offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        _key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        self.refused(
            user,
            "",
            "a plain public key was offered; the jump host accepts only user certificates (run `hop login`, use `hop config`)",
        );
        Ok(Auth::reject())
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        certificate: &Certificate,
    ) -> Result<Auth, Self::Error> {
        match self.admit(certificate) {
            Ok(cert) => {
                self.cert = Some(cert);
                Ok(Auth::Accept)
            }
            Err(why) => {
                self.refused(user, "", &why);
                Ok(Auth::reject())
            }
        }
    }

    async fn auth_succeeded(&mut self, _session: &mut Session) -> Result<(), Self::Error> {
        self.auth_done.authenticated();
        self.guard.authenticated();
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // A jump host carries connections to nodes; it has no shell.
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        _port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(cert) = self.cert.clone() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let identity = cert.identity.clone();
        let jump = self.jump.clone();
        // Every channel is a new session: admission again (a lock since the login counts), and
        // before any node is looked up, so a refused user learns nothing of the nodes.
        let admitted = match admit(&jump.auth, &cert, None, Route::JumpHost, self.remote) {
            Ok(a) => a,
            Err(refusal) => {
                self.refused(&identity.username, host, refusal);
                reply
                    .reject(ChannelOpenFailure::AdministrativelyProhibited)
                    .await;
                return Ok(());
            }
        };
        // Only the nodes a role shows are resolved: a hidden node answers as a missing one.
        let mut nodes = hop_auth::inventory::all_nodes(jump.registry.as_ref(), &jump.auth);
        nodes.retain(|n| admitted.checker().may_see_node(&n.labels));
        let node = match resolve(&nodes, host, jump.auth.cluster_name()) {
            Ok(n)
                if n.openssh || matches!(jump.auth.session_recording(), "proxy" | "proxy-sync") =>
            {
                let why = format!(
                    "sessions to node {:?} are recorded by the proxy (an agentless node, or session_recording: proxy), which a jump host cannot do; connect with `hop ssh` or the ProxyCommand of `hop config`",
                    n.name
                );
                self.refused(&identity.username, &n.name, &why);
                reply
                    .reject(ChannelOpenFailure::AdministrativelyProhibited)
                    .await;
                return Ok(());
            }
            Ok(n) => n,
            Err(e) => {
                self.refused(&identity.username, host, &e);
                reply.reject(ChannelOpenFailure::ConnectFailed).await;
                return Ok(());
            }
        };
        // The node decides on the login inside SSH; here, some login of the certificate must be
        // allowed on the node's labels.
        let checker = admitted.checker();
        let allowed = identity
            .logins
            .iter()
            .any(|l| checker.check_node_login(&node.labels, l).is_ok());
        if !allowed {
            let why = format!(
                "access to node {:?} denied: no login of user {:?} is allowed there",
                node.name, identity.username
            );
            self.refused(&identity.username, &node.name, &why);
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        let sid = *hop_api::ids::time_ordered(hop_platform::clock::wall()).as_bytes();
        let what = format!("node {:?}", node.name);
        let (agent, agent_hold) = match dial_agent(
            &jump.registry,
            &node.host_id,
            &what,
            sid,
            hop_api::dial::SSH_TARGET,
            self.remote,
        )
        .await
        {
            Ok(a) => a,
            Err(e) => {
                self.refused(&identity.username, &node.name, &e);
                reply.reject(ChannelOpenFailure::ConnectFailed).await;
                return Ok(());
            }
        };
        reply.accept().await;
        let node_name = node.name.clone();
        let watch = LiveWatch::start(
            jump.auth.clone(),
            Live {
                sockets: dup_stream(agent.get_ref()).into_iter().collect(),
                stop: None,
                login: None,
                target: None,
                route: Route::JumpHost,
                remote: self.remote,
                session_id: hex::encode(sid),
                disconnect_expired_cert: checker.disconnect_expired_cert(),
                agent: Some(node.host_id.clone()),
                cert,
            },
        );
        tokio::spawn(async move {
            let _held = (watch, agent_hold);
            let (a, pending) = agent.into_inner();
            let stream = channel.into_stream();
            if let Err(e) = hop_net::tunnel::relay(stream, Vec::new(), a, pending).await {
                tracing::debug!(node = %node_name, error = %e, "jump channel ended with an error");
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use hop_auth::rotation::Phase;
    use hop_ca::CaKind;
    use hop_storage::ManualClock;

    use super::*;
    use crate::test_auth::rotate;

    fn signer_now(auth: &AuthServer) -> Option<String> {
        auth.authorities()
            .set(CaKind::Host)
            .signer()
            .ssh_fingerprint
            .clone()
    }

    #[test]
    fn the_host_certificate_moves_to_the_signing_key_in_update_servers_only() {
        let clock = Arc::new(ManualClock::new(hop_platform::clock::wall()));
        let auth = crate::test_auth::auth(clock);
        let registry = Arc::new(TunnelRegistry::new("p".into(), Duration::from_secs(30)));
        let jump = JumpHost::new(
            auth.clone(),
            registry,
            vec!["localhost".into()],
            Duration::from_secs(10),
        )
        .unwrap();
        let old = signer_now(&auth);
        assert_eq!(*jump.signer.lock().unwrap(), old);
        rotate(&auth, CaKind::Host, Phase::Init);
        assert!(!jump.signer_stale());
        rotate(&auth, CaKind::Host, Phase::UpdateClients);
        assert_ne!(signer_now(&auth), old);
        assert!(
            !jump.signer_stale(),
            "clients may not trust the new key yet"
        );
        rotate(&auth, CaKind::Host, Phase::UpdateServers);
        assert!(jump.signer_stale());
        jump.renew().unwrap();
        assert_eq!(*jump.signer.lock().unwrap(), signer_now(&auth));
        assert!(!jump.signer_stale());
        rotate(&auth, CaKind::Host, Phase::Standby);
        assert!(!jump.signer_stale());
    }
}
