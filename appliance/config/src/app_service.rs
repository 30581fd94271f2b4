//! The `app_service` section: the applications an `app` agent publishes (TCP, and HTTP/HTTPS
//! web apps with their public address, rewrites and `insecure_skip_verify`), as the operator
//! writes them, and the rule that each be a valid [`AppSpec`].

use serde::Deserialize;

use crate::FieldError;
use crate::app_rewrite::AppRewrite;
use crate::services::AppSpec;

/// Applications an `app` agent publishes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppServiceConfig {
    pub apps: Vec<AppConfig>,
    /// Idle data connections the agent keeps parked at the proxy.
    pub tunnel_pool_size: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub name: String,
    /// `tcp://host:port`, `http://host[:port]` or `https://host[:port]`
    pub uri: String,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Where users reach a web app, instead of `NAME.<proxy address>`.
    #[serde(default)]
    pub public_addr: Option<String>,
    /// Header rewrites (`headers: ["X-User: {{internal.logins}}"]`) and redirect hosts.
    #[serde(default)]
    pub rewrite: AppRewrite,
    /// Accept any certificate from an `https://` upstream.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

impl AppConfig {
    /// What the agent serves for this entry.
    pub fn spec(&self) -> AppSpec {
        AppSpec {
            name: self.name.clone(),
            uri: self.uri.clone(),
            labels: self.labels.clone().into_iter().collect(),
            public_addr: self.public_addr.clone(),
            rewrite: self.rewrite.clone(),
            insecure_skip_verify: self.insecure_skip_verify,
        }
    }
}

impl From<AppSpec> for AppConfig {
    /// The entry an `--app` flag adds.
    fn from(spec: AppSpec) -> Self {
        Self {
            name: spec.name,
            uri: spec.uri,
            labels: spec.labels.into_iter().collect(),
            public_addr: spec.public_addr,
            rewrite: spec.rewrite,
            insecure_skip_verify: spec.insecure_skip_verify,
        }
    }
}

impl AppServiceConfig {
    /// The `app_service` section's rule: every application is one an agent can serve.
    pub(crate) fn check(&self) -> Result<(), FieldError> {
        for (i, app) in self.apps.iter().enumerate() {
            app.spec()
                .validate()
                .map_err(|e| FieldError::new("app_service.apps", format!("[{i}]: {e}")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::Config;
    use crate::services::AppScheme;

    const YAML: &str = r#"
    app_service:
      apps:
      - name: grafana
        uri: https://grafana.internal:3000
        public_addr: grafana.example.com
        insecure_skip_verify: true
        labels: {env: dev}
        rewrite:
          redirect: [localhost, "grafana.internal:3000"]
          headers:
          - "X-Webauth-User: {{internal.logins}}"
          - "Authorization: Bearer {{jwt}}"
          - "Host: grafana.internal"
      - name: echo
        uri: tcp://127.0.0.1:7000
    "#;

    #[test]
    fn a_web_app_reads_into_its_spec() {
        let cfg = Config::parse(YAML, Path::new("hop.yaml")).unwrap();
        cfg.validate(Path::new("hop.yaml")).unwrap();
        let specs: Vec<_> = cfg.app_service.apps.iter().map(|a| a.spec()).collect();
        let g = &specs[0];
        assert_eq!(g.scheme().unwrap(), AppScheme::Https);
        assert_eq!(g.target().unwrap(), ("grafana.internal".into(), 3000));
        assert_eq!(g.public_addr.as_deref(), Some("grafana.example.com"));
        assert!(g.insecure_skip_verify);
        assert_eq!(g.labels, [("env".to_string(), "dev".to_string())]);
        assert_eq!(g.rewrite.redirect, ["localhost", "grafana.internal:3000"]);
        let headers = g.header_rewrites().unwrap();
        let names: Vec<_> = headers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["x-webauth-user", "authorization", "host"]);
        let logins = [("logins".to_string(), vec!["alice".to_string()])];
        let values = headers[0].value.expand("J", &logins.into_iter().collect());
        assert_eq!(values, ["alice"]);
        assert_eq!(specs[1].scheme().unwrap(), AppScheme::Tcp);
    }

    #[test]
    fn flag_and_yaml_agree() {
        let flag = AppSpec::parse(
            "name=grafana,uri=http://127.0.0.1:3000,labels=env=dev,public_addr=g.example.com",
        )
        .unwrap();
        let cfg: AppConfig = flag.clone().into();
        assert_eq!(cfg.spec(), flag);
    }
}
