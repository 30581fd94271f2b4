//! How resources are kept in the backend: each kind implements `hop_storage::StoredResource`
//! under its own Teleport kind name, so the typed store and `hop admin get KIND` agree.

use hop_storage::StoredResource;

use crate::resource::Kind;
use crate::{
    AuthPreference, ClusterName, DatabaseResource, LockResource, NodeResource, ProvisionToken,
    Role, User,
};

macro_rules! stored {
    ($($t:ty),* $(,)?) => {$(
        impl StoredResource for $t {
            const KIND: &'static str = <$t as Kind>::KIND;
            fn name(&self) -> &str {
                <$t as Kind>::name(self)
            }
        }
    )*};
}

stored!(
    Role,
    User,
    ProvisionToken,
    ClusterName,
    AuthPreference,
    DatabaseResource,
    NodeResource,
    LockResource,
    crate::oidc::OidcConnector,
    crate::github::GithubConnector,
    crate::saml::SamlConnector
);
