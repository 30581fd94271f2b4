//! Agentless OpenSSH nodes at Auth: the host certificates an operator installs in a stock sshd
//! (`hop admin auth sign --format openssh`, a bot's `ssh_host` output), and the `OpensshNodes`
//! gRPC service (administrators, and roles allowed `host_cert` `create`).

use std::time::{Duration, SystemTime};

use hop_ca::CaKind;
use tonic::{Request, Response, Status};

use super::error::AuthError;
use super::grpc::{AuthApi, authorize, caller, unix};
use super::server::AuthServer;
use hop_api::proto::openssh_nodes_server::OpensshNodes;
use hop_api::proto::{SignOpensshHostRequest, SignOpensshHostResponse};

/// Default lifetime of an OpenSSH node's host certificate.
pub const OPENSSH_HOST_CERT_DEFAULT_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// Longest lifetime of an OpenSSH node's host certificate; longer requests are clamped to it.
pub const OPENSSH_HOST_CERT_MAX_TTL: Duration = Duration::from_secs(5 * 365 * 24 * 3600);

impl AuthServer {
    /// A host certificate for an OpenSSH node: principals `names` plus `NAME.CLUSTER` for each
    /// name that is not an address. Returns (certificate, the OpenSSH CA's lines for
    /// TrustedUserCAKeys, expiry).
    pub fn sign_openssh_host(
        &self,
        names: &[String],
        ssh_public_key: &str,
        ttl: Option<Duration>,
    ) -> Result<(String, String, SystemTime), AuthError> {
        let Some(first) = names.first() else {
            return Err(AuthError::BadRequest(
                "name the node (--host web1, then any other names or addresses clients use)".into(),
            ));
        };
        // A longer request is clamped, not refused; the answer carries the real expiry.
        let ttl = ttl
            .unwrap_or(OPENSSH_HOST_CERT_DEFAULT_TTL)
            .min(OPENSSH_HOST_CERT_MAX_TTL);
        let mut principals = names.to_vec();
        for n in names {
            if n.parse::<std::net::IpAddr>().is_err() {
                principals.push(format!("{n}.{}", self.cluster_name()));
            }
        }
        principals.sort();
        principals.dedup();
        let now = self.now();
        let cert = self
            .authorities()
            .host
            .issue_host_ssh(
                ssh_public_key,
                first,
                &principals,
                now,
                ttl,
                &mut rand::rng(),
            )
            .map_err(|source| AuthError::UnusableKey {
                field: "ssh_public_key",
                source,
            })?;
        self.metrics().certificates_issued.inc();
        // The node trusts the OpenSSH CA, which signs only the proxy's one-minute logins: a
        // user's own certificate (user CA) is refused there, so nobody bypasses the proxy.
        let cas = hop_ca::export_trusted_user_ca_keys(&self.public_authorities(CaKind::OpenSsh));
        self.note_host_cert(first, "openssh", "", super::grpc::unix(now + ttl));
        Ok((cert, cas, now + ttl))
    }
}

#[tonic::async_trait]
impl OpensshNodes for AuthApi {
    async fn sign_openssh_host(
        &self,
        req: Request<SignOpensshHostRequest>,
    ) -> Result<Response<SignOpensshHostResponse>, Status> {
        let c = caller(&req);
        let r = req.into_inner();
        let ttl = (r.ttl_seconds > 0).then(|| Duration::from_secs(r.ttl_seconds));
        let (cert, cas, expires) = self
            .blocking(move |a| {
                // An administrator, or a role allowed `host_cert` `create` (a bot's `ssh_host`
                // output): either may name any host, so grant it as carefully as the host CA.
                authorize(a, &c, "cert_authority", "update")
                    .or_else(|_| authorize(a, &c, "host_cert", "create"))?;
                a.sign_openssh_host(&r.names, &r.ssh_public_key, ttl)
            })
            .await?;
        Ok(Response::new(SignOpensshHostResponse {
            ssh_host_certificate: cert,
            trusted_user_ca_keys: cas,
            expires_unix: unix(expires),
        }))
    }
}
