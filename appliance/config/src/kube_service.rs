//! The `kubernetes_service` section and the `--kube-cluster` flag: the Kubernetes clusters a
//! `kube` agent publishes (a name, the kubeconfig that reaches the cluster's API server with the
//! agent's own credentials, the context to use, and labels), and the rules they must keep. A
//! cluster with no kubeconfig is the one the agent runs in (its service account). This module
//! only describes; the agent reads the kubeconfig.

use std::collections::BTreeMap;
use std::path::PathBuf;

use hop_protocols::tunnel::ResourceAnnouncement;
use serde::Deserialize;

use crate::FieldError;
use crate::services::{SpecFlagError, flag_labels, key_value};

/// The resource kind kube agents announce.
pub const KUBE_CLUSTER_KIND: &str = "kube_cluster";

/// Why a kube cluster spec is not one an agent can serve (the operator's configuration).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubeSpecError {
    #[error("kube cluster name {name:?}: use 1 to 64 letters, digits, '-', '_' and '.'")]
    Name { name: String },
    #[error(
        "kube cluster {name:?}: kubeconfig must not be empty (leave it out for the service account of the cluster the agent runs in)"
    )]
    EmptyKubeconfig { name: String },
    #[error("kube cluster {name:?}: context {context:?} needs a kubeconfig")]
    ContextWithoutKubeconfig { name: String, context: String },
    #[error("kube cluster {name:?}: label {key:?}: label names must not be empty")]
    Label { name: String, key: String },
    #[error("kube cluster {name:?} is listed twice")]
    Duplicate { name: String },
}

/// A Kubernetes cluster an agent publishes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeClusterSpec {
    pub name: String,
    /// The kubeconfig that reaches the API server; `None`: the in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig's context [default: its `current-context`].
    pub context: Option<String>,
    pub labels: BTreeMap<String, String>,
}

const FLAG: &str = "--kube-cluster";

impl KubeClusterSpec {
    /// Parses `name=dev,kubeconfig=/etc/hop/dev.kubeconfig,context=admin@dev,labels=env=dev;team=x`
    /// (labels may repeat; without `kubeconfig=`, the in-cluster service account).
    pub fn parse(s: &str) -> Result<Self, SpecFlagError> {
        let mut spec = KubeClusterSpec::default();
        let mut name = None;
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = key_value(FLAG, part)?;
            match k {
                "name" => name = Some(v.to_string()),
                "kubeconfig" => spec.kubeconfig = Some(PathBuf::from(v)),
                "context" => spec.context = Some(v.to_string()),
                "labels" | "label" => spec.labels.extend(flag_labels(FLAG, v)?),
                other => {
                    return Err(SpecFlagError::UnknownKey {
                        flag: FLAG,
                        key: other.into(),
                        expected: "name, kubeconfig, context, labels",
                    });
                }
            }
        }
        spec.name = name.ok_or(SpecFlagError::Missing {
            flag: FLAG,
            key: "name",
        })?;
        spec.validate()?;
        Ok(spec)
    }

    pub fn validate(&self) -> Result<(), KubeSpecError> {
        let name = || self.name.clone();
        let n = &self.name;
        let ok = (1..=64).contains(&n.len())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(KubeSpecError::Name { name: name() });
        }
        match (&self.kubeconfig, &self.context) {
            (Some(p), _) if p.as_os_str().is_empty() => {
                return Err(KubeSpecError::EmptyKubeconfig { name: name() });
            }
            (None, Some(c)) => {
                return Err(KubeSpecError::ContextWithoutKubeconfig {
                    name: name(),
                    context: c.clone(),
                });
            }
            _ => {}
        }
        if let Some(key) = self.labels.keys().find(|k| k.trim().is_empty()) {
            return Err(KubeSpecError::Label {
                name: name(),
                key: key.clone(),
            });
        }
        Ok(())
    }

    /// How the agent announces this cluster to the proxy (no target: the agent alone knows
    /// where its API server is).
    pub fn announcement(&self) -> ResourceAnnouncement {
        ResourceAnnouncement {
            kind: KUBE_CLUSTER_KIND.into(),
            name: self.name.clone(),
            labels: self
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            target: None,
        }
    }
}

/// The Kubernetes clusters a `kube` agent publishes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubeServiceConfig {
    /// Teleport's switch; the service runs when `hop.roles` includes `kube`, and this must
    /// agree when set.
    pub enabled: Option<bool>,
    pub kube_clusters: Vec<KubeClusterConfig>,
    /// Idle data connections the agent keeps parked at the proxy.
    pub tunnel_pool_size: Option<usize>,
}

/// One entry of `kubernetes_service.kube_clusters`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeClusterConfig {
    pub name: String,
    /// Path of the kubeconfig; left out: the in-cluster service account.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    #[serde(default)]
    pub context: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl KubeClusterConfig {
    pub fn spec(&self) -> KubeClusterSpec {
        KubeClusterSpec {
            name: self.name.clone(),
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            labels: self.labels.clone(),
        }
    }
}

impl From<KubeClusterSpec> for KubeClusterConfig {
    /// The entry a `--kube-cluster` flag adds.
    fn from(s: KubeClusterSpec) -> Self {
        Self {
            name: s.name,
            kubeconfig: s.kubeconfig,
            context: s.context,
            labels: s.labels,
        }
    }
}

impl KubeServiceConfig {
    /// The section's rules: every cluster is one an agent can serve, named once; `enabled`
    /// agrees with the roles; a process that runs `kube` has a cluster to serve.
    pub(crate) fn check(&self, runs_kube: bool) -> Result<(), FieldError> {
        const FIELD: &str = "kubernetes_service.kube_clusters";
        let mut seen = std::collections::BTreeSet::new();
        for (i, c) in self.kube_clusters.iter().enumerate() {
            let spec = c.spec();
            spec.validate()
                .map_err(|e| FieldError::new(FIELD, format!("[{i}]: {e}")))?;
            if !seen.insert(spec.name.to_ascii_lowercase()) {
                let e = KubeSpecError::Duplicate { name: spec.name };
                return Err(FieldError::new(FIELD, format!("[{i}]: {e}")));
            }
        }
        match self.enabled {
            Some(true) if !runs_kube => {
                return Err(FieldError::new(
                    "kubernetes_service.enabled",
                    "the kube service runs when hop.roles includes kube (hop start --roles kube)",
                ));
            }
            Some(false) if runs_kube => {
                return Err(FieldError::new(
                    "kubernetes_service.enabled",
                    "false, but hop.roles includes kube",
                ));
            }
            _ => {}
        }
        if runs_kube && self.kube_clusters.is_empty() {
            return Err(FieldError::new(
                FIELD,
                "a kube agent needs clusters: kubernetes_service.kube_clusters (or --kube-cluster name=…,kubeconfig=PATH)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::Config;

    fn flag(s: &str) -> Result<KubeClusterSpec, String> {
        KubeClusterSpec::parse(s).map_err(|e| e.to_string())
    }

    #[test]
    fn the_flag_reads_every_key() {
        let s = flag("name=dev,kubeconfig=/etc/k/dev.yaml,context=admin@dev,labels=env=dev;team=x")
            .unwrap();
        assert_eq!(s.name, "dev");
        assert_eq!(s.kubeconfig.as_deref(), Some(Path::new("/etc/k/dev.yaml")));
        assert_eq!(s.context.as_deref(), Some("admin@dev"));
        assert_eq!(s.labels.len(), 2);
        assert_eq!(s.labels["team"], "x");
        let a = s.announcement();
        assert_eq!((a.kind.as_str(), a.target), ("kube_cluster", None));
        assert_eq!(a.labels[0], ("env".into(), "dev".into()));
        let in_cluster = flag("name=here").unwrap();
        assert_eq!(in_cluster.kubeconfig, None);
    }

    #[test]
    fn bad_flags_name_the_problem() {
        let e = |s: &str| flag(s).unwrap_err();
        assert!(e("kubeconfig=/x").contains("--kube-cluster: name= is required"));
        assert!(e("name=a b,kubeconfig=/x").contains("kube cluster name"));
        assert!(e("name=,kubeconfig=/x").contains("kube cluster name"));
        assert!(e("name=a,kubeconfig=").contains("must not be empty"));
        assert!(e("name=a,context=c").contains("needs a kubeconfig"));
        assert!(e("name=a,server=x").contains("unknown key \"server\""));
        assert!(e("name=a,labels=env").contains("label \"env\" is not key=value"));
        assert!(e("name=a,nokv").contains("expected key=value"));
        let full = "name=dev,kubeconfig=/k,context=c,labels=env=dev;a=b";
        for i in 0..=full.len() {
            let _ = KubeClusterSpec::parse(&full[..i]);
        }
    }

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("hop.yaml")).map_err(|e| e.to_string())
    }

    const AGENT: &str = "hop:\n  roles: [kube]\n  proxy_server: p:3080\n";

    #[test]
    fn yaml_and_flag_agree() {
        let cfg = parse(&format!(
            "{AGENT}kubernetes_service:\n  enabled: true\n  kube_clusters:\n  - name: dev\n    kubeconfig: /k\n    context: c\n    labels: {{env: dev}}\n  - name: here\n"
        ))
        .unwrap();
        let specs: Vec<_> = cfg
            .kubernetes_service
            .kube_clusters
            .iter()
            .map(KubeClusterConfig::spec)
            .collect();
        assert_eq!(
            specs[0],
            flag("name=dev,kubeconfig=/k,context=c,labels=env=dev").unwrap()
        );
        assert_eq!(specs[1].kubeconfig, None);
        let back: KubeClusterConfig = specs[0].clone().into();
        assert_eq!(back.spec(), specs[0]);
    }

    #[test]
    fn yaml_refusals_name_the_field() {
        let e = parse(&format!(
            "{AGENT}kubernetes_service:\n  kube_clusters: []\n"
        ))
        .unwrap_err();
        assert!(
            e.contains("kubernetes_service.kube_clusters: a kube agent needs"),
            "{e}"
        );
        let e = parse(&format!(
            "{AGENT}kubernetes_service:\n  kube_clusters:\n  - name: a\n  - name: A\n"
        ))
        .unwrap_err();
        assert!(
            e.contains("kubernetes_service.kube_clusters: [1]: kube cluster \"A\" is listed twice"),
            "{e}"
        );
        let e = parse("kubernetes_service:\n  kube_clusters:\n  - name: 'x y'\n").unwrap_err();
        assert!(
            e.contains("kubernetes_service.kube_clusters: [0]: kube cluster name"),
            "{e}"
        );
        let e = parse("kubernetes_service:\n  enabled: true\n").unwrap_err();
        assert!(e.contains("kubernetes_service.enabled"), "{e}");
        let e = parse(&format!(
            "{AGENT}kubernetes_service:\n  enabled: false\n  kube_clusters: [{{name: a}}]\n"
        ))
        .unwrap_err();
        assert!(e.contains("kubernetes_service.enabled: false"), "{e}");
        let e = parse("kubernetes_service:\n  kube_clusters:\n  - name: a\n    server: x\n")
            .unwrap_err();
        assert!(e.contains("server"), "{e}");
    }
}
