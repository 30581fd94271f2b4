//! Shared fixtures: a fixed clock, a seeded RNG, a generated set of CAs and a sample identity.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hop_ca::{CaKind, CaPublic, CertAuthority, Identity, RouteToDatabase};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// 2025-01-01T00:00:00Z.
pub const NOW_SECS: u64 = 1_735_689_600;

pub fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW_SECS)
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

pub struct Cas {
    pub user: CertAuthority,
    pub host: CertAuthority,
    pub db: CertAuthority,
    pub jwt: CertAuthority,
}

impl Cas {
    pub fn generate(cluster: &str, seed: u64) -> Cas {
        let mut rng = rng(seed);
        let mut one = |kind| CertAuthority::generate(kind, cluster, now(), &mut rng).unwrap();
        Cas {
            user: one(CaKind::User),
            host: one(CaKind::Host),
            db: one(CaKind::Db),
            jwt: one(CaKind::Jwt),
        }
    }

    pub fn public(&self) -> Vec<CaPublic> {
        [&self.user, &self.host, &self.db, &self.jwt]
            .into_iter()
            .map(CertAuthority::public)
            .collect()
    }
}

pub fn alice() -> Identity {
    Identity {
        username: "alice@example.com".into(),
        roles: vec!["access".into(), "editor".into()],
        logins: vec!["alice".into(), "root".into()],
        traits: BTreeMap::from([
            ("logins".to_owned(), vec!["alice".to_owned()]),
            (
                "groups".to_owned(),
                vec!["dev".to_owned(), "ops".to_owned()],
            ),
        ]),
        cluster: "hop.example.com".into(),
        route_to_cluster: "leaf.example.com".into(),
        permit_agent_forwarding: true,
        permit_port_forwarding: false,
        permit_pty: true,
        route_to_database: Some(RouteToDatabase {
            service: "pg-main".into(),
            username: "alice".into(),
            database: "orders".into(),
        }),
        route_to_app: Some("grafana".into()),
        route_to_kube_cluster: None,
        mfa_verified: true,
        active_requests: vec!["1dee4210-ce4a-4d61-888b-6a0039a29a30".into()],
        session_mfa: None,
    }
}

pub const HOUR: Duration = Duration::from_secs(3600);
