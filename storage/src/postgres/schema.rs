//! Versioned schema migrations for the PostgreSQL backend. This module owns the numbered SQL
//! migrations (`migrations/NNNN_*.sql`), the `hop_schema_version` table that records which were
//! applied, and the gate at open: missing migrations are applied in order in one transaction,
//! under an advisory lock so that appliances starting together migrate once; a database whose
//! schema is newer than this build knows is refused, and left as it was.

use tokio_postgres::Client;

use super::pool::map_pg;
use crate::error::StorageError;

/// The migrations, in order; migration `i` brings the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[include_str!("migrations/0001_init.sql")];

/// The newest schema version this build knows.
pub(crate) const VERSION: u64 = MIGRATIONS.len() as u64;

/// Serializes migrating appliances: `pg_advisory_xact_lock` key ("hopmigr" in ASCII).
const MIGRATION_LOCK: i64 = 0x0068_6f70_6d69_6772;

/// Brings the database to [`VERSION`], or refuses it if it is newer.
pub(crate) async fn migrate(client: &mut Client, target: &str) -> Result<(), StorageError> {
    let db = |err| map_pg(target, err);
    let txn = client.transaction().await.map_err(db)?;
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db)?;
    txn.batch_execute(
        "CREATE TABLE IF NOT EXISTS hop_schema_version (
             version bigint PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(db)?;
    let found: Option<i64> = txn
        .query_one("SELECT max(version) FROM hop_schema_version", &[])
        .await
        .map_err(db)?
        .get(0);
    let found = found.map_or(0, |v| u64::try_from(v).unwrap_or(0));
    if found > VERSION {
        // Dropping the transaction rolls it back: nothing was changed.
        return Err(StorageError::NewerDatabaseSchema {
            target: target.to_owned(),
            found,
            supported: VERSION,
        });
    }
    for (version, sql) in (1u64..)
        .zip(MIGRATIONS)
        .skip(usize::try_from(found).unwrap_or(0))
    {
        txn.batch_execute(sql).await.map_err(db)?;
        txn.execute(
            "INSERT INTO hop_schema_version (version) VALUES ($1)",
            &[&i64::try_from(version).unwrap_or(i64::MAX)],
        )
        .await
        .map_err(db)?;
        tracing::info!(%target, version, "storage schema migrated");
    }
    txn.commit().await.map_err(db)
}
