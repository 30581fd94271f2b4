//! What a user may see of the connected resources: the nodes (with the logins the roles allow on
//! each), applications and databases (with the database users and names) that `hop ls`,
//! `hop apps ls`, `hop db ls` and the web UI's resources page list. One filter for every
//! listing, so the command line and the browser never disagree about what a role shows.
//!
//! This module only filters what it is handed with the checker it is handed; it never reads the
//! inventory, the backend or a clock, and never decides whether the caller may list at all
//! (that is admission's, before).

use hop_rbac::AccessChecker;

use crate::inventory::{AppRoute, DbRoute, NodeRoute};

/// A node the user may log in to, with the logins allowed there.
#[derive(Debug, Clone)]
pub struct VisibleNode {
    pub node: NodeRoute,
    /// The certificate's logins a role allows on this node (never empty).
    pub logins: Vec<String>,
}

/// A database the user may connect to, with the database users and names allowed there.
#[derive(Debug, Clone)]
pub struct VisibleDatabase {
    pub database: DbRoute,
    pub db_users: Vec<String>,
    pub db_names: Vec<String>,
}

/// The nodes on which some login of `logins` (the certificate's) is allowed.
pub fn visible_nodes(
    checker: &AccessChecker,
    logins: &[String],
    nodes: Vec<NodeRoute>,
) -> Vec<VisibleNode> {
    nodes
        .into_iter()
        .filter_map(|node| {
            let allowed: Vec<String> = logins
                .iter()
                .filter(|l| checker.check_node_login(&node.labels, l).is_ok())
                .cloned()
                .collect();
            (!allowed.is_empty()).then_some(VisibleNode {
                node,
                logins: allowed,
            })
        })
        .collect()
}

/// The applications whose labels a role allows.
pub fn visible_apps(checker: &AccessChecker, apps: Vec<AppRoute>) -> Vec<AppRoute> {
    apps.into_iter()
        .filter(|a| checker.check_app(&a.labels).is_ok())
        .collect()
}

/// The databases a role allows, with the users and names it allows on each.
pub fn visible_databases(checker: &AccessChecker, dbs: Vec<DbRoute>) -> Vec<VisibleDatabase> {
    dbs.into_iter()
        .filter_map(|database| {
            let (db_users, db_names) = checker.database_access(&database.labels)?;
            Some(VisibleDatabase {
                database,
                db_users,
                db_names,
            })
        })
        .collect()
}
