//! The names Auth puts in host certificates, and who holds them.
//!
//! This module owns the node name rule and the cluster-wide claims that keep names unique. A host
//! certificate names its host by the host id Auth generated (a UUID), `HOSTID.CLUSTER`, and, for
//! an agent that asks for one, a node name and `NAME.CLUSTER`. A node name is one DNS label
//! (letters, digits and inner hyphens, at most 63), not an IP address, not all digits, not shaped
//! like a host id, and not reserved: `proxy`, `localhost`, the cluster's name and the proxy's
//! public names. It must also be free: a name is claimed by one host until that host's
//! certificate lapses (renewals extend the claim) or an administrator removes the claim
//! (`hop admin rm host_name/NAME`); an OpenSSH node registered under the name also holds it. The
//! rule is checked at join and again at every renewal; a name that breaks it gets no certificate.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use hop_storage::StorageError;

use super::error::AuthError;
use super::records::HostNameClaim;
use super::server::AuthServer;

/// The longest DNS label.
const MAX_LABEL_LEN: usize = 63;
/// How many times a claim retries its compare-and-swap against concurrent claims.
const CAS_ATTEMPTS: usize = 16;
/// Names no node may take whatever the cluster: the proxy's role name and the loopback name.
const ALWAYS_RESERVED: &[&str] = &["proxy", "localhost"];

/// Why a node name is refused. Each message names the name and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeNameError {
    #[error("node name {name:?} is an IP address; a node name is a single DNS label such as web1")]
    IpAddress { name: String },
    #[error(
        "node name {name:?} is all digits, which resolvers may read as an address; use a DNS label with a letter, such as web1"
    )]
    AllDigits { name: String },
    #[error("node name {name:?} contains '*'; wildcards are never certified")]
    Wildcard { name: String },
    #[error(
        "node name {name:?} contains a dot; a node name is a single DNS label (Auth adds .CLUSTER itself)"
    )]
    Dotted { name: String },
    #[error(
        "node name {name:?} is not a DNS label: use letters, digits and '-' (not first or last), at most {MAX_LABEL_LEN} characters"
    )]
    NotALabel { name: String },
    #[error("node name {name:?} has the shape of a host id; host ids are Auth's to give")]
    HostIdShape { name: String },
    #[error("node name {name:?} is reserved ({why}); choose another --nodename")]
    Reserved { name: String, why: &'static str },
    #[error(
        "node name {name:?} is already used by another host in this cluster; choose another --nodename (an administrator can release it with `hop admin rm host_name/{name}`)"
    )]
    Taken { name: String },
    #[error(
        "this host joined as {held:?} and cannot renew as {asked:?}; a new name needs a new join"
    )]
    Renamed { held: String, asked: String },
}

impl From<NodeNameError> for AuthError {
    fn from(e: NodeNameError) -> Self {
        match e {
            NodeNameError::Taken { .. } | NodeNameError::Renamed { .. } => {
                AuthError::Denied(e.to_string())
            }
            other => AuthError::BadRequest(other.to_string()),
        }
    }
}

/// The names no node may take in this cluster besides [`ALWAYS_RESERVED`].
#[derive(Debug, Clone, Default)]
pub struct ReservedNames {
    /// The cluster's name.
    pub cluster: String,
    /// The hosts of the proxy's public addresses.
    pub proxy_public: Vec<String>,
}

/// Checks `name` against the node name rule (not whether it is free).
pub fn check_node_name(name: &str, reserved: &ReservedNames) -> Result<(), NodeNameError> {
    let owned = || name.to_string();
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<IpAddr>().is_ok() {
        return Err(NodeNameError::IpAddress { name: owned() });
    }
    if name.contains('*') {
        return Err(NodeNameError::Wildcard { name: owned() });
    }
    if name.contains('.') {
        return Err(NodeNameError::Dotted { name: owned() });
    }
    if !is_dns_label(name) {
        return Err(NodeNameError::NotALabel { name: owned() });
    }
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NodeNameError::AllDigits { name: owned() });
    }
    if uuid::Uuid::parse_str(name).is_ok() {
        return Err(NodeNameError::HostIdShape { name: owned() });
    }
    if let Some(why) = reserved_because(name, reserved) {
        return Err(NodeNameError::Reserved { name: owned(), why });
    }
    Ok(())
}

fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_LABEL_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn reserved_because(name: &str, reserved: &ReservedNames) -> Option<&'static str> {
    let is = |other: &str| other.eq_ignore_ascii_case(name);
    if ALWAYS_RESERVED.iter().any(|r| is(r)) {
        return Some("it names the proxy or the local host");
    }
    if is(&reserved.cluster) {
        return Some("it is the cluster's name");
    }
    if reserved.proxy_public.iter().any(|p| is(p)) {
        return Some("it is a public name of the proxy");
    }
    None
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl AuthServer {
    /// The node name to certify for `host_id`: `asked` when it keeps the rule and is free (or
    /// already this host's), claimed until `until`. An empty `asked` certifies no name.
    pub(super) fn claim_node_name(
        &self,
        host_id: &str,
        asked: &str,
        until: SystemTime,
    ) -> Result<Option<String>, AuthError> {
        if asked.is_empty() {
            return Ok(None);
        }
        check_node_name(asked, &self.reserved_names())?;
        let name = asked.to_ascii_lowercase();
        self.refuse_rename(host_id, &name)?;
        if self.store().get::<hop_rbac::NodeResource>(asked)?.is_some()
            || self.store().get::<hop_rbac::NodeResource>(&name)?.is_some()
        {
            return Err(NodeNameError::Taken { name }.into());
        }
        self.write_claim(host_id, &name, until)?;
        Ok(Some(name))
    }

    /// A host that holds a live claim keeps that name: renewing under another is refused.
    fn refuse_rename(&self, host_id: &str, name: &str) -> Result<(), AuthError> {
        let now = unix(self.now());
        let held = self
            .store()
            .list::<HostNameClaim>()?
            .into_iter()
            .map(|v| v.value)
            .find(|c| c.host_id == host_id && c.expires_unix > now && c.name != name);
        match held {
            Some(c) => Err(NodeNameError::Renamed {
                held: c.name,
                asked: name.to_string(),
            }
            .into()),
            None => Ok(()),
        }
    }

    /// Creates or extends the claim on `name` with a compare-and-swap, unless another host
    /// holds a claim that has not lapsed.
    fn write_claim(&self, host_id: &str, name: &str, until: SystemTime) -> Result<(), AuthError> {
        let claim = HostNameClaim {
            name: name.to_string(),
            host_id: host_id.to_string(),
            expires_unix: unix(until),
        };
        let now = unix(self.now());
        for _ in 0..CAS_ATTEMPTS {
            let written = match self.store().get::<HostNameClaim>(name)? {
                None => self.store().create(&claim),
                Some(v) if v.value.host_id == host_id || v.value.expires_unix <= now => {
                    self.store().update(&claim, v.revision)
                }
                Some(_) => {
                    return Err(NodeNameError::Taken {
                        name: name.to_string(),
                    }
                    .into());
                }
            };
            match written {
                Ok(_) => return Ok(()),
                Err(
                    StorageError::AlreadyExists { .. }
                    | StorageError::Conflict { .. }
                    | StorageError::NotFound { .. },
                ) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AuthError::Contended {
            subject: format!("node name {name:?}"),
            contenders: "claims",
        })
    }

    /// Gives up a claim this host just made (a join that failed after claiming).
    pub(super) fn release_node_name(&self, host_id: &str, name: &str) {
        let mine = matches!(
            self.store().get::<HostNameClaim>(name),
            Ok(Some(v)) if v.value.host_id == host_id
        );
        if mine && let Err(e) = self.store().delete::<HostNameClaim>(name) {
            tracing::warn!(error = %e, name, "cannot release a node name claim");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reserved() -> ReservedNames {
        ReservedNames {
            cluster: "hop".into(),
            proxy_public: vec!["gateway".into(), "hop.example.com".into()],
        }
    }

    #[test]
    fn the_node_name_rule() {
        type Want = Option<fn(&NodeNameError) -> bool>;
        let cases: &[(&str, Want)] = &[
            ("web1", None),
            ("Web-1", None),
            ("a", None),
            ("db-primary-eu-west-2", None),
            (
                "10.0.0.1",
                Some(|e| matches!(e, NodeNameError::IpAddress { .. })),
            ),
            (
                "::1",
                Some(|e| matches!(e, NodeNameError::IpAddress { .. })),
            ),
            (
                "[fe80::1]",
                Some(|e| matches!(e, NodeNameError::IpAddress { .. })),
            ),
            (
                "2130706433",
                Some(|e| matches!(e, NodeNameError::AllDigits { .. })),
            ),
            ("*", Some(|e| matches!(e, NodeNameError::Wildcard { .. }))),
            ("*.x", Some(|e| matches!(e, NodeNameError::Wildcard { .. }))),
            (
                "web*",
                Some(|e| matches!(e, NodeNameError::Wildcard { .. })),
            ),
            (
                "web1.example.com",
                Some(|e| matches!(e, NodeNameError::Dotted { .. })),
            ),
            (
                "hop.example.com",
                Some(|e| matches!(e, NodeNameError::Dotted { .. })),
            ),
            ("web1.", Some(|e| matches!(e, NodeNameError::Dotted { .. }))),
            ("", Some(|e| matches!(e, NodeNameError::NotALabel { .. }))),
            (
                "-web",
                Some(|e| matches!(e, NodeNameError::NotALabel { .. })),
            ),
            (
                "web-",
                Some(|e| matches!(e, NodeNameError::NotALabel { .. })),
            ),
            (
                "web_1",
                Some(|e| matches!(e, NodeNameError::NotALabel { .. })),
            ),
            (
                "web 1",
                Some(|e| matches!(e, NodeNameError::NotALabel { .. })),
            ),
            (
                "wéb",
                Some(|e| matches!(e, NodeNameError::NotALabel { .. })),
            ),
            (
                "0e1a34cb-c48c-414a-a541-c2556bd54576",
                Some(|e| matches!(e, NodeNameError::HostIdShape { .. })),
            ),
            (
                "proxy",
                Some(|e| matches!(e, NodeNameError::Reserved { .. })),
            ),
            (
                "PROXY",
                Some(|e| matches!(e, NodeNameError::Reserved { .. })),
            ),
            (
                "localhost",
                Some(|e| matches!(e, NodeNameError::Reserved { .. })),
            ),
            ("hop", Some(|e| matches!(e, NodeNameError::Reserved { .. }))),
            (
                "gateway",
                Some(|e| matches!(e, NodeNameError::Reserved { .. })),
            ),
        ];
        for (name, want) in cases {
            let got = check_node_name(name, &reserved());
            match (want, &got) {
                (None, Ok(())) => {}
                (Some(is), Err(e)) if is(e) => {
                    assert!(e.to_string().contains(&format!("{name:?}")), "{e}");
                }
                _ => panic!("{name:?}: got {got:?}"),
            }
        }
        let long = "a".repeat(MAX_LABEL_LEN);
        assert!(check_node_name(&long, &reserved()).is_ok());
        assert!(matches!(
            check_node_name(&format!("{long}a"), &reserved()),
            Err(NodeNameError::NotALabel { .. })
        ));
    }
}
