//! Audit events in PostgreSQL (`hop.storage.audit_events_uri: postgresql://…`), end to end: an
//! appliance whose cluster state and audit events are both in one PostgreSQL database writes its
//! logins and admin actions there; after a restart (a second writer, with chains of its own)
//! `hop admin audit search` finds both runs' events and `hop admin audit verify` checks every
//! writer's chains; a row changed in the database is named as the break. Two appliances on one
//! database search and verify each other's events.

use std::process::Command;

use crate::backup_restore::Postgres;
use crate::harness::*;

#[test]
fn an_appliance_keeps_its_audit_events_in_postgresql_across_restarts() {
    let Some(pg) = Postgres::start() else { return };
    pg.create_db("hop_audit");
    let hop_lines = format!(
        "{}    audit_events_uri: \"{}\"\n",
        pg.storage_yaml("hop_audit"),
        pg.url("hop_audit")
    );
    let mut a = Appliance::start_configured(&hop_lines, NO_SECOND_FACTOR, "");
    assert!(a.log().contains("postgresql"), "{}", a.log());
    a.ok(&["admin", "users", "add", "first", "--roles", "access"]);
    a.stop();
    a.restart();
    a.ok(&["admin", "users", "add", "second", "--roles", "access"]);
    let found = a.ok(&[
        "admin",
        "audit",
        "search",
        "--type",
        "user.create",
        "--format",
        "json",
    ]);
    assert!(
        found.contains("first") && found.contains("second"),
        "{found}"
    );
    let chains: std::collections::BTreeSet<String> = found
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|e| e["chain"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(chains.len(), 2, "one chain per writer: {chains:?}");
    let verified = a.ok(&["admin", "audit", "verify"]);
    assert!(verified.contains("intact"), "{verified}");
    let exported = a.ok(&["admin", "audit", "export"]);
    assert!(exported.lines().count() >= 2, "{exported}");

    // A row changed behind hop's back is named by verify (exit status 2).
    let psql = |sql: &str| {
        let out = Command::new("/usr/lib/postgresql/15/bin/psql")
            .arg(
                pg.url("hop_audit")
                    .replace("postgresql://postgres@/", "postgresql:///"),
            )
            .args(["-U", "postgres", "-v", "ON_ERROR_STOP=1", "-Atqc", sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    };
    psql(
        "UPDATE hop_audit_events SET canonical = convert_to(replace(convert_from(canonical, \
         'UTF8'), '\"first\"', '\"frist\"'), 'UTF8') WHERE canonical::text LIKE '%' ",
    );
    let out = a.hop(&["admin", "audit", "verify"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("BROKEN"), "{}", stdout(&out));
}

/// Two appliances on one PostgreSQL (state and audit events): each writes its own chains, and
/// search and verify from either cover both.
#[test]
fn two_appliances_search_and_verify_each_others_events() {
    let Some(pg) = Postgres::start() else { return };
    pg.create_db("hop_two");
    let hop_lines = format!(
        "{}    audit_events_uri: \"{}\"\n",
        pg.storage_yaml("hop_two"),
        pg.url("hop_two")
    );
    let a = Appliance::start_configured(&hop_lines, NO_SECOND_FACTOR, "");
    let b = Appliance::start_configured(&hop_lines, NO_SECOND_FACTOR, "");
    a.ok(&["admin", "users", "add", "from-a", "--roles", "access"]);
    b.ok(&["admin", "users", "add", "from-b", "--roles", "access"]);
    for x in [&a, &b] {
        let found = x.ok(&[
            "admin",
            "audit",
            "search",
            "--type",
            "user.create",
            "--format",
            "json",
        ]);
        assert!(
            found.contains("from-a") && found.contains("from-b"),
            "{found}"
        );
        let verified = x.ok(&["admin", "audit", "verify"]);
        assert!(verified.contains("intact"), "{verified}");
    }
}
