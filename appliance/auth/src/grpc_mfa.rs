//! Security keys from the CLI over gRPC: the challenge of a login with a key or a passkey
//! (`hop login`, `hop login --auth passwordless`), and the caller's own devices (`hop mfa
//! ls|add|rm`; `rm` takes a one-time-code device too, proven the same way). Every check is the web path's ([`AuthServer::begin_webauthn_assertion`],
//! [`AuthServer::add_webauthn_device`], [`AuthServer::remove_webauthn_device`]): password and a
//! fresh proof from an existing device for a change, the last device kept while the cluster
//! requires one, audit events either way. Per-session MFA (`hop ssh`, `hop db login`, `hop kube
//! login`, `hop app login`, `hop proxy app`): the
//! challenge for one target and the one-minute certificates marked for it
//! ([`AuthServer::begin_session_mfa`], [`AuthServer::issue_session_mfa`]). The methods here
//! are called from `AuthPublic`.

use std::collections::BTreeMap;
use std::time::UNIX_EPOCH;

use hop_ca::{Identity, SessionMfaTarget};
use tonic::{Request, Response, Status};

use super::caller::Caller;
use super::grpc::{AuthApi, caller};
use super::server::{
    AuthError, AuthServer, ChallengePurpose, SecondFactor, WebauthnAssertion, WebauthnRegistration,
};
use hop_api::proto::*;

fn unix(t: std::time::SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The user a device call acts for: the caller's own certificate, never another user.
fn own_user<T>(req: &Request<T>) -> Result<String, Status> {
    match caller(req) {
        Caller::User { identity, .. } => Ok(identity.username.clone()),
        _ => Err(Status::unauthenticated(
            "managing security keys needs a login (`hop login`)",
        )),
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> Result<T, Status> {
    serde_json::from_str(s).map_err(|e| Status::invalid_argument(format!("{what}: {e}")))
}

/// A one-time code or a key's assertion, whichever the request carries.
fn proof<'a>(totp_code: &'a str, assertion: Option<&'a WebauthnAssertion>) -> SecondFactor<'a> {
    match assertion {
        Some(a) => SecondFactor::Webauthn(a),
        None => SecondFactor::Otp(totp_code),
    }
}

impl AuthApi {
    pub(super) async fn mfa_begin_login(
        &self,
        req: Request<BeginWebauthnLoginRequest>,
    ) -> Result<Response<WebauthnChallenge>, Status> {
        let remote = caller(&req).remote();
        let r = req.into_inner();
        let (options, origins) = self
            .blocking(move |a| {
                let options = if r.passwordless {
                    a.begin_passwordless(remote)?
                } else {
                    a.begin_webauthn_assertion(r.username.trim(), ChallengePurpose::Login, remote)?
                };
                Ok((options, a.webauthn_settings().origins.clone()))
            })
            .await?;
        Ok(Response::new(WebauthnChallenge {
            options_json: options.to_string(),
            origins,
        }))
    }

    pub(super) async fn mfa_list(
        &self,
        req: Request<ListMfaDevicesRequest>,
    ) -> Result<Response<ListMfaDevicesResponse>, Status> {
        let user = own_user(&req)?;
        let (keys, otp) = self
            .blocking(move |a| Ok((a.webauthn_devices(&user)?, a.otp_devices(&user)?)))
            .await?;
        let mut devices: Vec<MfaDevice> = otp
            .iter()
            .map(|d| MfaDevice {
                id: d.id.clone(),
                name: d.name.clone(),
                kind: "totp".into(),
                added_unix: d.added.map_or(0, unix),
                last_used_unix: 0,
                aaguid: String::new(),
            })
            .collect();
        devices.extend(keys.into_iter().map(|d| MfaDevice {
            id: d.id,
            name: d.name,
            kind: "webauthn".into(),
            added_unix: unix(d.added),
            last_used_unix: d.last_used.map_or(0, unix),
            aaguid: d.aaguid,
        }));
        Ok(Response::new(ListMfaDevicesResponse {
            devices,
            has_totp: !otp.is_empty(),
        }))
    }

    pub(super) async fn mfa_begin_change(
        &self,
        req: Request<BeginMfaChangeRequest>,
    ) -> Result<Response<MfaChangeChallenge>, Status> {
        let user = own_user(&req)?;
        let remote = caller(&req).remote();
        let register = req.into_inner().register;
        let out = self
            .blocking(move |a| {
                let proof = a.begin_webauthn_assertion(&user, ChallengePurpose::Manage, remote)?;
                let registration = if register {
                    a.begin_webauthn_registration(&user)?.to_string()
                } else {
                    String::new()
                };
                Ok(MfaChangeChallenge {
                    proof_options_json: proof.to_string(),
                    registration_options_json: registration,
                    origins: a.webauthn_settings().origins.clone(),
                })
            })
            .await?;
        Ok(Response::new(out))
    }

    pub(super) async fn mfa_add(
        &self,
        req: Request<AddMfaDeviceRequest>,
    ) -> Result<Response<MfaDevice>, Status> {
        let user = own_user(&req)?;
        let remote = caller(&req).remote();
        let r = req.into_inner();
        let assertion: Option<WebauthnAssertion> = match r.proof_json.trim() {
            "" => None,
            j => Some(parse_json("proof_json", j)?),
        };
        let registration: WebauthnRegistration =
            parse_json("registration_json", &r.registration_json)?;
        let view = self
            .blocking(move |a| {
                a.add_webauthn_device(
                    &user,
                    (&r.password, proof(&r.totp_code, assertion.as_ref())),
                    &r.name,
                    &registration,
                    remote,
                )
            })
            .await?;
        Ok(Response::new(MfaDevice {
            id: view.id,
            name: view.name,
            kind: "webauthn".into(),
            added_unix: unix(view.added),
            last_used_unix: 0,
            aaguid: view.aaguid,
        }))
    }

    pub(super) async fn mfa_remove(
        &self,
        req: Request<RemoveMfaDeviceRequest>,
    ) -> Result<Response<Empty>, Status> {
        let user = own_user(&req)?;
        let remote = caller(&req).remote();
        let r = req.into_inner();
        let assertion: Option<WebauthnAssertion> = match r.proof_json.trim() {
            "" => None,
            j => Some(parse_json("proof_json", j)?),
        };
        self.blocking(move |a| {
            let wanted = r.device.trim();
            let keys = a.webauthn_devices(&user)?;
            let otp = a.otp_devices(&user)?;
            let matching: Vec<(&str, bool)> = keys
                .iter()
                .filter(|d| d.id == wanted || d.name == wanted)
                .map(|d| (d.id.as_str(), true))
                .chain(
                    otp.iter()
                        .filter(|d| d.id == wanted || d.name == wanted)
                        .map(|d| (d.id.as_str(), false)),
                )
                .collect();
            let (id, is_key) = match matching.as_slice() {
                [one] => *one,
                [] => return Err(AuthError::NotFound(format!("device {wanted:?}"))),
                _ => {
                    return Err(AuthError::BadRequest(format!(
                        "several devices are named {wanted:?}: name one by its id (`hop mfa ls`)"
                    )));
                }
            };
            let proven = (r.password.as_str(), proof(&r.totp_code, assertion.as_ref()));
            if is_key {
                a.remove_webauthn_device(&user, proven, id, remote)
            } else {
                a.remove_otp_device_proven(&user, proven, id, remote)
            }
        })
        .await?;
        Ok(Response::new(Empty {}))
    }

    pub(super) async fn mfa_begin_session(
        &self,
        req: Request<BeginSessionMfaRequest>,
    ) -> Result<Response<SessionMfaChallenge>, Status> {
        let Caller::User {
            identity, remote, ..
        } = caller(&req)
        else {
            return Err(Status::unauthenticated(
                "per-session MFA needs a login (`hop login`)",
            ));
        };
        let r = req.into_inner();
        let target = session_target(r.node, r.login, r.database, r.kube_cluster, r.app);
        let labels = self.target_labels(&target)?;
        let out = self
            .blocking(move |a| {
                check_target_labels(a, &identity, &target, labels.as_ref())?;
                let options = a.begin_session_mfa(&identity, &target, Some(remote))?;
                Ok(match options {
                    Some(o) => SessionMfaChallenge {
                        required: true,
                        options_json: o.to_string(),
                        origins: a.webauthn_settings().origins.clone(),
                    },
                    None => SessionMfaChallenge::default(),
                })
            })
            .await?;
        Ok(Response::new(out))
    }

    pub(super) async fn mfa_issue_session(
        &self,
        req: Request<IssueSessionMfaCertRequest>,
    ) -> Result<Response<SessionMfaCert>, Status> {
        let Caller::User {
            identity,
            remote,
            expires,
            ..
        } = caller(&req)
        else {
            return Err(Status::unauthenticated(
                "per-session MFA needs a login (`hop login`)",
            ));
        };
        let r = req.into_inner();
        let assertion: WebauthnAssertion = parse_json("webauthn_json", &r.webauthn_json)?;
        let target = session_target(r.node, r.login, r.database, r.kube_cluster, r.app);
        let labels = self.target_labels(&target)?;
        let kube = matches!(target, SessionMfaTarget::KubeCluster { .. });
        let app = self.app_route(&target)?;
        let certs = self
            .blocking(move |a| {
                check_target_labels(a, &identity, &target, labels.as_ref())?;
                a.issue_session_mfa(
                    (&identity, expires),
                    &target,
                    &assertion,
                    (&r.ssh_public_key, &r.tls_public_key),
                    Some(remote),
                )
            })
            .await?;
        let (kube_tls_server_name, kube_proxy_addr) = if kube {
            let web_addr = self.auth.web_addr().to_string();
            (crate::kube_access::tls_server_name(&web_addr), web_addr)
        } else {
            Default::default()
        };
        Ok(Response::new(SessionMfaCert {
            ssh_certificate: certs.ssh_certificate,
            tls_certificate_pem: certs.tls_certificate_pem,
            expires_unix: unix(certs.expires),
            trusted_cas_pem: certs.trusted_cas_pem,
            kube_tls_server_name,
            kube_proxy_addr,
            app_uri: app.as_ref().map(|a| a.uri.clone()).unwrap_or_default(),
            app_public_addr: app
                .and_then(|a| crate::app_access::public_addr(&a, self.auth.web_addr()))
                .unwrap_or_default(),
        }))
    }

    /// The announced route of the application `target` names (`None` for another kind of
    /// target).
    fn app_route(
        &self,
        target: &SessionMfaTarget,
    ) -> Result<Option<crate::inventory::AppRoute>, Status> {
        let SessionMfaTarget::App { app } = target else {
            return Ok(None);
        };
        self.registry
            .as_ref()
            .and_then(|r| r.apps().into_iter().find(|a| &a.name == app))
            .map(Some)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no connected agent serves application {app:?} (`hop apps ls` lists the ones you can reach)"
                ))
            })
    }

    /// The labels of the kube cluster or application `target` names, as its connected agent
    /// announces it (`None` for another kind of target).
    fn target_labels(
        &self,
        target: &SessionMfaTarget,
    ) -> Result<Option<BTreeMap<String, String>>, Status> {
        if let SessionMfaTarget::App { .. } = target {
            return Ok(self.app_route(target)?.map(|a| a.labels));
        }
        let SessionMfaTarget::KubeCluster { kube_cluster } = target else {
            return Ok(None);
        };
        self.registry
            .as_ref()
            .and_then(|r| r.kube_clusters().into_iter().find(|c| &c.name == kube_cluster))
            .map(|c| Some(c.labels))
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no connected kube agent serves Kubernetes cluster {kube_cluster:?} (`hop kube ls` lists the ones you can reach)"
                ))
            })
    }
}

/// A kube cluster's or an application's certificate only where the caller's roles allow its
/// labels (as IssueKubeCertificate and IssueAppCertificate decide); other targets are the
/// proxy's to decide at connect time.
fn check_target_labels(
    a: &AuthServer,
    identity: &Identity,
    target: &SessionMfaTarget,
    labels: Option<&BTreeMap<String, String>>,
) -> Result<(), AuthError> {
    let Some(labels) = labels else {
        return Ok(());
    };
    let checker = a.checker_for(&identity.roles, &identity.traits)?;
    match target {
        SessionMfaTarget::KubeCluster { kube_cluster } => {
            checker.check_kubernetes_cluster(labels).map_err(|denied| {
                AuthError::Denied(format!(
                    "your roles do not allow Kubernetes cluster {kube_cluster:?} ({denied})"
                ))
            })
        }
        SessionMfaTarget::App { app } => checker.check_app(labels).map_err(|denied| {
            AuthError::Denied(format!(
                "your roles do not allow application {app:?} ({denied})"
            ))
        }),
        _ => Ok(()),
    }
}

/// The target a per-session MFA request names: a database when it carries one, else a kube
/// cluster when it names one, else an application when it names one, else a node and login.
fn session_target(
    node: String,
    login: String,
    database: Option<SessionMfaDatabase>,
    kube_cluster: String,
    app: String,
) -> SessionMfaTarget {
    match database {
        Some(d) => SessionMfaTarget::Database {
            db_service: d.service,
            db_user: d.db_user,
            db_name: d.db_name,
        },
        None if !kube_cluster.is_empty() => SessionMfaTarget::KubeCluster { kube_cluster },
        None if !app.is_empty() => SessionMfaTarget::App { app },
        None => SessionMfaTarget::Node { node, login },
    }
}
