//! The `node` resource: an agentless SSH node (`sub_kind: openssh`), a host running stock
//! OpenSSH that trusts the cluster's user CA and presents a host certificate from its host CA.
//! Sessions to it go through the proxy, which terminates and records them.
//!
//! This module owns [`NodeResource`] and its `validate()`. (Nodes running the agent are not
//! resources: they announce themselves over their tunnel.)

use serde::{Deserialize, Serialize};

use crate::resource::{Kind, Metadata};
use crate::validation::{FieldPath, Problem, ValidationError, check_kind, check_version, invalid};

/// Versions accepted for nodes.
pub const NODE_VERSIONS: &[&str] = &["v2"];

/// The only sub-kind a stored node may have.
pub const SUB_KIND_OPENSSH: &str = "openssh";

/// `kind: node`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeResource {
    /// Always `node`.
    pub kind: String,
    /// Always `openssh`.
    pub sub_kind: String,
    /// `v2`.
    pub version: String,
    /// `name` is how users name the node (`root@web1`); `labels` are what `node_labels` match.
    pub metadata: Metadata,
    pub spec: NodeSpec,
}

/// `spec` of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// `host:port` of its sshd, as the proxy reaches it.
    pub addr: String,
}

impl Kind for NodeResource {
    const KIND: &'static str = "node";

    fn name(&self) -> &str {
        &self.metadata.name
    }

    fn metadata(&self) -> &Metadata {
        &self.metadata
    }
}

impl NodeResource {
    /// An OpenSSH node named `name` at `addr`.
    #[must_use]
    pub fn openssh(
        name: &str,
        addr: &str,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Self {
        Self {
            kind: Self::KIND.into(),
            sub_kind: SUB_KIND_OPENSSH.into(),
            version: "v2".into(),
            metadata: Metadata {
                labels,
                ..Metadata::named(name)
            },
            spec: NodeSpec { addr: addr.into() },
        }
    }

    /// Checks kind, sub-kind, version, metadata and the address.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_kind(&self.kind, Self::KIND)?;
        check_version(&self.version, NODE_VERSIONS)?;
        if self.sub_kind != SUB_KIND_OPENSSH {
            return Err(invalid(
                &FieldPath::new("sub_kind"),
                Problem::Invalid(format!(
                    "{:?}: only {SUB_KIND_OPENSSH:?} nodes are stored (agent nodes announce themselves)",
                    self.sub_kind
                )),
            ));
        }
        self.metadata.validate()?;
        let ok = match self.spec.addr.rsplit_once(':') {
            Some((host, port)) => {
                !host.is_empty()
                    && !host.chars().any(char::is_whitespace)
                    && port.parse::<u16>().is_ok_and(|p| p > 0)
            }
            None => false,
        };
        if !ok {
            return Err(invalid(
                &FieldPath::new("spec.addr"),
                Problem::Invalid(format!(
                    "{:?} is not host:port (e.g. 10.0.0.5:22)",
                    self.spec.addr
                )),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::{Resource, parse_resources};

    #[test]
    fn openssh_nodes_parse_and_bad_ones_are_named() {
        let ok = "kind: node\nsub_kind: openssh\nversion: v2\nmetadata:\n  name: web1\n  labels: {env: prod}\nspec:\n  addr: 10.0.0.5:22\n";
        match &parse_resources(ok, "n.yaml").unwrap()[0] {
            Resource::Node(n) => assert_eq!(n.spec.addr, "10.0.0.5:22"),
            other => panic!("{other:?}"),
        }
        for (bad, needle) in [
            (ok.replace("openssh", "agent"), "sub_kind"),
            (ok.replace("10.0.0.5:22", "10.0.0.5"), "spec.addr"),
            (ok.replace("v2", "v9"), "version"),
            (ok.replace("addr", "adr"), "adr"),
        ] {
            let e = parse_resources(&bad, "n.yaml").unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }
}
