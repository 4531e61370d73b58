//! Versioned schema migrations, embedded in the binary.
//!
//! `verifyd_migrations` records which versions ran, with a SHA-256 of their SQL so an edited
//! migration is caught instead of silently diverging. All pending migrations run in **one
//! transaction** that first takes a transaction-level advisory lock: when several nodes start
//! at once, one migrates and the others wait, then find nothing left to do. A node that dies
//! mid-migration leaves nothing behind (PostgreSQL DDL is transactional) and releases the
//! lock with its connection.

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

/// One migration: `migrations/NNNN_name.sql`.
struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
}

/// Every migration, in order. Never edit one that shipped: add the next.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "callbacks",
        sql: include_str!("../migrations/0002_callbacks.sql"),
    },
    Migration {
        version: 3,
        name: "limits",
        sql: include_str!("../migrations/0003_limits.sql"),
    },
    Migration {
        version: 4,
        name: "delivery",
        sql: include_str!("../migrations/0004_delivery.sql"),
    },
];

/// The advisory lock (class, id) serializing migrations across nodes. The two-key form
/// lives in its own lock space, apart from any single-`bigint` advisory lock.
const MIGRATION_LOCK: (i32, i32) = (crate::LOCK_CLASS, 0);

/// The newest schema version this binary knows.
pub(crate) fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

fn checksum(sql: &str) -> Vec<u8> {
    Sha256::digest(sql.as_bytes()).to_vec()
}

/// Applies every migration not applied yet; see the module docs.
pub(crate) async fn run(client: &mut tokio_postgres::Client) -> anyhow::Result<()> {
    let tx = client
        .transaction()
        .await
        .context("Failed to begin the migration transaction")?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1::int4, $2::int4)",
        &[&MIGRATION_LOCK.0, &MIGRATION_LOCK.1],
    )
    .await
    .context("Failed to take the migration lock")?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS verifyd_migrations (
            version    integer PRIMARY KEY,
            name       text NOT NULL,
            checksum   bytea NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await
    .context("Failed to create verifyd_migrations")?;
    let applied = tx
        .query(
            "SELECT version, name, checksum FROM verifyd_migrations ORDER BY version",
            &[],
        )
        .await
        .context("Failed to read verifyd_migrations")?;
    let mut done = Vec::with_capacity(applied.len());
    for row in &applied {
        let version: i32 = row.try_get(0)?;
        let name: String = row.try_get(1)?;
        let sum: Vec<u8> = row.try_get(2)?;
        match MIGRATIONS.iter().find(|m| m.version == version) {
            Some(m) if checksum(m.sql) != sum => bail!(
                "PostgreSQL migration {version} ({name}) differs from the one that was applied; \
                 migrations must never change once shipped"
            ),
            Some(_) => {}
            None => tracing::warn!(
                version,
                name,
                "the database has a migration this verifyd does not know (a newer node migrated it)"
            ),
        }
        done.push(version);
    }
    for m in MIGRATIONS.iter().filter(|m| !done.contains(&m.version)) {
        tx.batch_execute(m.sql)
            .await
            .with_context(|| format!("PostgreSQL migration {} ({}) failed", m.version, m.name))?;
        tx.execute(
            "INSERT INTO verifyd_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &checksum(m.sql)],
        )
        .await
        .context("Failed to record a migration")?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "applied PostgreSQL migration"
        );
    }
    tx.commit()
        .await
        .context("Failed to commit the migrations")?;
    Ok(())
}

/// The highest applied version, `None` before the first migration.
pub(crate) async fn version(client: &tokio_postgres::Client) -> anyhow::Result<Option<i32>> {
    let exists: bool = client
        .query_one("SELECT to_regclass('verifyd_migrations') IS NOT NULL", &[])
        .await?
        .try_get(0)?;
    if !exists {
        return Ok(None);
    }
    Ok(client
        .query_one("SELECT max(version) FROM verifyd_migrations", &[])
        .await?
        .try_get(0)?)
}
