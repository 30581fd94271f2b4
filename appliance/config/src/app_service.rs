//! The `app_service` section: the TCP applications an `app` agent publishes, as the operator
//! writes them, and the rule that each be a valid [`AppSpec`].

use serde::Deserialize;

use crate::FieldError;
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
    /// `tcp://host:port`
    pub uri: String,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

impl AppConfig {
    /// What the agent serves for this entry.
    pub fn spec(&self) -> AppSpec {
        AppSpec {
            name: self.name.clone(),
            uri: self.uri.clone(),
            labels: self.labels.clone().into_iter().collect(),
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
