//! Cluster-wide singleton resources: `cluster_name`, `cluster_auth_preference`, and the public
//! half of each `cert_authority`.
//!
//! This module owns those types and their `validate()`. A [`CertAuthorityResource`] carries
//! public keys and certificates only: it must never hold private key material (unknown fields
//! are rejected by serde, and `validate` rejects PEM private keys pasted into a public field).

use serde::{Deserialize, Serialize};

use crate::resource::{Kind, Metadata};
use crate::validation::{
    FieldPath, Problem, ValidationError, check_kind, check_name, check_version, invalid,
};

/// Versions accepted for the cluster resources.
pub const CLUSTER_VERSIONS: &[&str] = &["v2"];

/// The one name a `cluster_name` resource has.
pub const CLUSTER_NAME_RESOURCE: &str = "cluster-name";
/// The one name a `cluster_auth_preference` resource has.
pub const AUTH_PREFERENCE_RESOURCE: &str = "cluster-auth-preference";

fn check_fixed_name(metadata: &Metadata, expected: &str) -> Result<(), ValidationError> {
    metadata.validate()?;
    if metadata.name == expected {
        Ok(())
    } else {
        Err(invalid(
            &FieldPath::new("metadata.name"),
            Problem::Invalid(format!("must be {expected:?}, found {:?}", metadata.name)),
        ))
    }
}

/// `kind: cluster_name`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterName {
    /// Always `cluster_name`.
    pub kind: String,
    /// `v2`.
    pub version: String,
    /// `name: cluster-name`.
    pub metadata: Metadata,
    /// The cluster's name and id.
    pub spec: ClusterNameSpec,
}

/// `spec` of `cluster_name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterNameSpec {
    /// The cluster's DNS-like name, e.g. `hop.example.com`.
    pub cluster_name: String,
    /// A stable unique id (UUID), set at first start.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster_id: String,
}

impl Kind for ClusterName {
    const KIND: &'static str = "cluster_name";

    fn name(&self) -> &str {
        &self.metadata.name
    }

    fn metadata(&self) -> &Metadata {
        &self.metadata
    }
}

impl ClusterName {
    /// The singleton with the given name and id.
    #[must_use]
    pub fn new(cluster_name: impl Into<String>, cluster_id: impl Into<String>) -> Self {
        Self {
            kind: Self::KIND.to_owned(),
            version: CLUSTER_VERSIONS[0].to_owned(),
            metadata: Metadata::named(CLUSTER_NAME_RESOURCE),
            spec: ClusterNameSpec {
                cluster_name: cluster_name.into(),
                cluster_id: cluster_id.into(),
            },
        }
    }

    /// Kind, version, fixed name, and a DNS-label-like cluster name.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_kind(&self.kind, Self::KIND)?;
        check_version(&self.version, CLUSTER_VERSIONS)?;
        check_fixed_name(&self.metadata, CLUSTER_NAME_RESOURCE)?;
        check_cluster_name(
            &FieldPath::new("spec.cluster_name"),
            &self.spec.cluster_name,
        )
    }
}

/// Letters, digits, `-`, `.` and `_`; it ends up in certificates and SNI names.
fn check_cluster_name(field: &FieldPath, name: &str) -> Result<(), ValidationError> {
    check_name(field, name)?;
    if name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        Ok(())
    } else {
        Err(invalid(
            field,
            Problem::Invalid(format!(
                "invalid cluster name {name:?}: use letters, digits, '-', '.' and '_'"
            )),
        ))
    }
}

/// `kind: cluster_auth_preference`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthPreference {
    /// Always `cluster_auth_preference`.
    pub kind: String,
    /// `v2`.
    pub version: String,
    /// `name: cluster-auth-preference`.
    pub metadata: Metadata,
    /// Authentication settings.
    #[serde(default)]
    pub spec: AuthPreferenceSpec,
}

/// `spec` of `cluster_auth_preference`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthPreferenceSpec {
    /// Primary authentication connector type.
    #[serde(default, rename = "type")]
    pub auth_type: AuthType,
    /// Second factor policy.
    #[serde(default)]
    pub second_factor: SecondFactor,
    /// WebAuthn relying party settings; required when `second_factor` is `webauthn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webauthn: Option<Webauthn>,
    /// Whether local (password) users may log in; absent = true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_local_auth: Option<bool>,
    /// Cluster-wide: disconnect sessions when the certificate expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnect_expired_cert: Option<bool>,
    /// `best_effort` (default) or `strict`: whether proxies and agents refuse sessions once
    /// their copy of the locks is older than the admission bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locking_mode: Option<crate::role::LockingMode>,
}

/// Authentication connector type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthType {
    /// Users with passwords stored by the cluster.
    #[default]
    Local,
}

/// Teleport's `second_factor` values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecondFactor {
    /// TOTP required.
    #[default]
    Otp,
    /// WebAuthn required.
    Webauthn,
    /// Some second factor required (OTP or WebAuthn).
    On,
    /// No second factor.
    Off,
    /// Second factor used when registered.
    Optional,
}

/// `spec.webauthn`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webauthn {
    /// Relying party id, usually the proxy's domain.
    pub rp_id: String,
}

impl Kind for AuthPreference {
    const KIND: &'static str = "cluster_auth_preference";

    fn name(&self) -> &str {
        &self.metadata.name
    }

    fn metadata(&self) -> &Metadata {
        &self.metadata
    }
}

impl Default for AuthPreference {
    /// Local users with OTP, as Teleport defaults.
    fn default() -> Self {
        Self {
            kind: Self::KIND.to_owned(),
            version: CLUSTER_VERSIONS[0].to_owned(),
            metadata: Metadata::named(AUTH_PREFERENCE_RESOURCE),
            spec: AuthPreferenceSpec::default(),
        }
    }
}

impl AuthPreference {
    /// Kind, version, fixed name, and WebAuthn settings when WebAuthn is required.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_kind(&self.kind, Self::KIND)?;
        check_version(&self.version, CLUSTER_VERSIONS)?;
        check_fixed_name(&self.metadata, AUTH_PREFERENCE_RESOURCE)?;
        match &self.spec.webauthn {
            Some(w) if w.rp_id.trim().is_empty() => Err(invalid(
                &FieldPath::new("spec.webauthn.rp_id"),
                Problem::Empty,
            )),
            None if self.spec.second_factor == SecondFactor::Webauthn => Err(invalid(
                &FieldPath::new("spec.webauthn"),
                Problem::Invalid("is required when second_factor is webauthn".into()),
            )),
            _ => Ok(()),
        }
    }
}

/// `kind: cert_authority` — public parts only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertAuthorityResource {
    /// Always `cert_authority`.
    pub kind: String,
    /// `v2`.
    pub version: String,
    /// Named after the cluster.
    pub metadata: Metadata,
    /// Type, cluster and public keys.
    pub spec: CertAuthoritySpec,
}

/// `spec` of a CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertAuthoritySpec {
    /// Which CA.
    #[serde(rename = "type")]
    pub ca_type: CertAuthType,
    /// The cluster that owns it.
    pub cluster_name: String,
    /// Keys currently used to sign.
    #[serde(default)]
    pub active_keys: CaKeySet,
    /// Keys trusted in addition (during rotation).
    #[serde(default, skip_serializing_if = "CaKeySet::is_empty")]
    pub additional_trusted_keys: CaKeySet,
}

/// The cluster CAs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertAuthType {
    /// Signs user certificates.
    User,
    /// Signs host certificates.
    Host,
    /// Trusted by databases.
    Db,
    /// Signs app JWTs.
    Jwt,
}

/// Public keys of a CA, by use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaKeySet {
    /// SSH public keys (authorized_keys format).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh: Vec<SshPublicKey>,
    /// X.509 certificates (PEM).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<TlsCertificate>,
    /// JWT verification keys (PEM).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jwt: Vec<JwtPublicKey>,
}

impl CaKeySet {
    fn is_empty(&self) -> bool {
        self.ssh.is_empty() && self.tls.is_empty() && self.jwt.is_empty()
    }

    fn validate(&self, field: &FieldPath) -> Result<(), ValidationError> {
        let entries = self
            .ssh
            .iter()
            .enumerate()
            .map(|(i, k)| (field.key("ssh").index(i).key("public_key"), &k.public_key))
            .chain(
                self.tls
                    .iter()
                    .enumerate()
                    .map(|(i, k)| (field.key("tls").index(i).key("cert"), &k.cert)),
            )
            .chain(
                self.jwt
                    .iter()
                    .enumerate()
                    .map(|(i, k)| (field.key("jwt").index(i).key("public_key"), &k.public_key)),
            );
        for (path, value) in entries {
            if value.trim().is_empty() {
                return Err(invalid(&path, Problem::Empty));
            }
            if value.contains("PRIVATE KEY") {
                return Err(invalid(
                    &path,
                    Problem::Invalid(
                        "contains a private key; only public parts belong here".into(),
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// `{public_key: "ssh-ed25519 AAAA…"}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshPublicKey {
    /// authorized_keys line.
    pub public_key: String,
}

/// `{cert: "-----BEGIN CERTIFICATE-----…"}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsCertificate {
    /// PEM certificate.
    pub cert: String,
}

/// `{public_key: "-----BEGIN PUBLIC KEY-----…"}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtPublicKey {
    /// PEM public key.
    pub public_key: String,
}

impl Kind for CertAuthorityResource {
    const KIND: &'static str = "cert_authority";

    fn name(&self) -> &str {
        &self.metadata.name
    }

    fn metadata(&self) -> &Metadata {
        &self.metadata
    }
}

impl CertAuthorityResource {
    /// An empty CA of `ca_type` for `cluster_name`, named after the cluster.
    #[must_use]
    pub fn new(ca_type: CertAuthType, cluster_name: impl Into<String>) -> Self {
        let cluster_name = cluster_name.into();
        Self {
            kind: Self::KIND.to_owned(),
            version: CLUSTER_VERSIONS[0].to_owned(),
            metadata: Metadata::named(cluster_name.clone()),
            spec: CertAuthoritySpec {
                ca_type,
                cluster_name,
                active_keys: CaKeySet::default(),
                additional_trusted_keys: CaKeySet::default(),
            },
        }
    }

    /// Kind, version, names, and that every key is a non-empty public value.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_kind(&self.kind, Self::KIND)?;
        check_version(&self.version, CLUSTER_VERSIONS)?;
        self.metadata.validate()?;
        check_cluster_name(
            &FieldPath::new("spec.cluster_name"),
            &self.spec.cluster_name,
        )?;
        self.spec
            .active_keys
            .validate(&FieldPath::new("spec.active_keys"))?;
        self.spec
            .additional_trusted_keys
            .validate(&FieldPath::new("spec.additional_trusted_keys"))
    }
}
