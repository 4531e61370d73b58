//! The SQLite backend of verifyd.
//!
//! SQLite has one writer at a time, so this store embraces it: a single writer thread owns
//! the only write connection and **group-commits** — it takes every write that queued up
//! while the previous transaction was committing, runs them one after the other, and commits
//! them with one `COMMIT` (one fsync). Every write checks what can refuse it before it
//! changes anything, so a refused write leaves nothing to undo; a write that fails after
//! changing rows rolls its whole batch back and every caller in it is told.
//! Each caller is answered only after that commit, so an answered write is durable. Reads
//! run on a small pool of read-only connections; WAL mode lets them proceed during writes.
//!
//! # Layout
//! - [`SqliteStore`]: opening, migrations, the writer loop and the reader pool.
//! - `rows`: mapping between rows and domain types (private).

mod rows;

use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use anyhow::Context;
use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use time::OffsetDateTime;
use tokio::sync::oneshot;
use verifyd_core::{Method, Status, Verification, VerificationId};
use verifyd_store::{
    Application, Block, CounterOp, DeliveryAttempt, DeliveryJob, EventKind, EventState, Guard,
    GuardOutcome, GuardedWrite, OutboxEvent, RecentStarts, Refusal, Store, StoreError, StoreResult,
};

use crate::rows::{
    APP_COLUMNS, EVENT_COLUMNS, VERIFICATION_COLUMNS, app_from_row, event_from_row, from_micros,
    micros, verification_from_row, verification_params,
};

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_callbacks.sql"),
    include_str!("../migrations/0003_limits.sql"),
    include_str!("../migrations/0004_delivery.sql"),
    include_str!("../migrations/0005_fewer_pages.sql"),
    include_str!("../migrations/0006_number_first.sql"),
];

/// Most writes folded into one transaction.
const MAX_BATCH: usize = 512;

/// How durable a commit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// fsync the WAL on every commit: survives power loss (the default).
    #[default]
    Full,
    /// fsync only at checkpoints: survives a crash of verifyd (`kill -9`), not of the OS.
    Normal,
}

/// Options for [`SqliteStore::open`].
#[derive(Debug, Clone, Default)]
pub struct SqliteOptions {
    /// Commit durability.
    pub synchronous: Synchronous,
}

type Finish = Box<dyn FnOnce(bool) + Send>;
/// A write: runs on the writer connection inside the batch's transaction, returns whether it
/// succeeded (if not, it must not have changed anything) and how to answer once the commit is
/// known.
type WriteJob = Box<dyn FnOnce(&Connection) -> (bool, Finish) + Send>;

/// The SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    /// Dropping the last sender ends the writer thread.
    writer: std_mpsc::Sender<WriteJob>,
    readers: Arc<ReaderPool>,
    counter_sweep: Arc<CounterSweep>,
}

/// The counters have no expiry index (migration 5: it cost every start a page), so the
/// purge walks them in key order, a slice at a time, going on where it stopped. Each purge
/// walks at least twice as many rows as were written since the one before, so expired rows
/// cannot pile up faster than they are found.
#[derive(Default)]
struct CounterSweep {
    /// The last key the walk reached; empty to start from the beginning.
    cursor: Mutex<String>,
    /// Counter rows written (inserted or updated) since the last purge.
    written: std::sync::atomic::AtomicU64,
}

/// Rows walked per purge at least, and per statement.
const SWEEP_MIN: u64 = 20_000;
const SWEEP_SLICE: i64 = 5_000;

impl CounterSweep {
    fn wrote(&self, rows: usize) {
        self.written
            .fetch_add(rows as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Deletes expired counter rows from the next slices of the key space.
    fn purge(&self, conn: &Connection, now_us: i64) -> rusqlite::Result<()> {
        let written = self.written.swap(0, std::sync::atomic::Ordering::Relaxed);
        let budget = SWEEP_MIN.max(written.saturating_mul(2));
        let mut cursor = self.cursor.lock().unwrap_or_else(|e| e.into_inner());
        let mut walked = 0;
        while walked < budget {
            let end: Option<String> = conn
                .prepare_cached(
                    "SELECT key FROM counters WHERE key > ?1 ORDER BY key LIMIT 1 OFFSET ?2",
                )?
                .query_row(params![*cursor, SWEEP_SLICE - 1], |r| r.get(0))
                .optional()?;
            walked += SWEEP_SLICE as u64;
            match end {
                Some(end) => {
                    conn.prepare_cached(
                        "DELETE FROM counters WHERE key > ?1 AND key <= ?2 AND expires_at <= ?3",
                    )?
                    .execute(params![*cursor, end, now_us])?;
                    *cursor = end;
                }
                None => {
                    conn.prepare_cached(
                        "DELETE FROM counters WHERE key > ?1 AND expires_at <= ?2",
                    )?
                    .execute(params![*cursor, now_us])?;
                    // The end: the next purge starts again from the beginning.
                    cursor.clear();
                    break;
                }
            }
        }
        Ok(())
    }
}

struct ReaderPool {
    path: PathBuf,
    /// A std `Mutex`: held only to push or pop a connection, never across I/O or `.await`.
    idle: Mutex<Vec<Connection>>,
}

impl ReaderPool {
    fn get(&self) -> anyhow::Result<Connection> {
        if let Some(conn) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("Failed to open {} for reading", self.path.display()))?;
        // A WAL reader is only ever busy while a crashed writer's WAL is recovered; fail
        // fast then rather than hold the runtime thread.
        conn.busy_timeout(StdDuration::from_millis(250))?;
        Ok(conn)
    }

    fn put(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // Keep as many connections as requests can be reading at once: reopening one costs a
        // schema parse and fresh prepared statements.
        if idle.len() < 64 {
            idle.push(conn);
        }
    }
}

/// Turns `sqlite://PATH[?query]`, `sqlite:PATH` or a bare path into a path.
pub fn path_from_url(url: &str) -> PathBuf {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let rest = rest.split('?').next().unwrap_or(rest);
    PathBuf::from(rest)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, in WAL mode, and migrates it.
    ///
    /// # Errors
    /// If the file cannot be opened or a migration fails.
    pub fn open(path: impl AsRef<Path>, options: SqliteOptions) -> anyhow::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut conn = Connection::open(&path)
            .with_context(|| format!("Failed to open SQLite database {}", path.display()))?;
        let sync = match options.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON;"
        ))
        .context("Failed to set SQLite pragmas")?;
        conn.busy_timeout(StdDuration::from_secs(5))?;
        migrate(&mut conn)?;
        let (tx, rx) = std_mpsc::channel::<WriteJob>();
        std::thread::Builder::new()
            .name("verifyd-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .context("Failed to start the SQLite writer thread")?;
        Ok(Self {
            writer: tx,
            readers: Arc::new(ReaderPool {
                path,
                idle: Mutex::new(Vec::new()),
            }),
            counter_sweep: Arc::default(),
        })
    }

    /// Runs `f` on the writer in the next group commit; answers after the
    /// commit.
    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.write_or_refuse(move |conn| f(conn).map(|value| (value, true)))
            .await
    }

    /// Like [`Self::write`], but `f` also says whether it wrote: `false` (a guard that
    /// refused, having changed nothing) still answers its value.
    async fn write_or_refuse<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<(T, bool)> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: WriteJob = Box::new(move |conn| {
            let (result, keep) = match f(conn) {
                Ok((value, keep)) => (Ok(value), keep),
                Err(e) => (Err(e), false),
            };
            let finish: Finish = Box::new(move |committed| {
                let result = if committed || result.is_err() {
                    result
                } else {
                    Err(StoreError::Other(anyhow::anyhow!("SQLite commit failed")))
                };
                let _ = tx.send(result);
            });
            (keep, finish)
        });
        self.writer
            .send(job)
            .map_err(|_| anyhow::anyhow!("SQLite writer thread has stopped"))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("SQLite writer dropped a write"))?
    }

    /// Runs `f` on a pooled read connection, on the calling task's thread. Reads here are
    /// small indexed lookups served from the page cache, and in WAL mode a reader never
    /// waits for the writer, so handing each one to the blocking pool cost more than the
    /// read itself (it took status from 66% to 45% of the ceiling).
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> anyhow::Result<T> + Send + 'static,
    {
        let conn = self.readers.get()?;
        let result = f(&conn);
        self.readers.put(conn);
        result.map_err(StoreError::Other)
    }
}

fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let done: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)
            .with_context(|| format!("SQLite migration {} failed", i + 1))?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        tx.commit()?;
        tracing::info!(version = i + 1, "applied SQLite migration");
    }
    Ok(())
}

/// The writer thread: batch, run each job, commit once, then answer everyone.
fn writer_loop(conn: Connection, rx: std_mpsc::Receiver<WriteJob>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            tracing::error!(error = %e, "SQLite BEGIN failed");
            for job in batch {
                // Run nothing; answer failure.
                drop(job);
            }
            continue;
        }
        let mut finishers = Vec::with_capacity(batch.len());
        // Writes check before they change anything, so one that refuses or fails normally
        // changed nothing and needs no savepoint (copying every page it touches into a
        // savepoint journal was a quarter of the writer's time). One that fails after it
        // changed rows (an I/O error, say) spoils the batch: it is rolled back whole and
        // every caller is told it failed.
        let mut spoiled = false;
        for job in batch {
            let before = conn.total_changes();
            let (ok, finish) = job(&conn);
            if !ok && conn.total_changes() != before {
                tracing::error!("SQLite write failed after changing rows; rolling back its batch");
                spoiled = true;
            }
            finishers.push(finish);
        }
        if spoiled {
            if let Err(e) = conn.execute_batch("ROLLBACK") {
                tracing::error!(error = %e, "SQLite ROLLBACK failed");
            }
            for finish in finishers {
                finish(false);
            }
            continue;
        }
        let committed = match conn.execute_batch("COMMIT") {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "SQLite COMMIT failed; rolling back the batch");
                let _ = conn.execute_batch("ROLLBACK");
                false
            }
        };
        for finish in finishers {
            finish(committed);
        }
    }
}

fn other(e: rusqlite::Error) -> StoreError {
    StoreError::Other(e.into())
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

fn select_verification_sql(filter: &str) -> String {
    format!("SELECT {VERIFICATION_COLUMNS} FROM verifications WHERE {filter}")
}

static INSERT_VERIFICATION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "INSERT INTO verifications ({VERIFICATION_COLUMNS}) VALUES ({})",
        vec!["?"; 28].join(",")
    )
});

fn write_verification_row(conn: &Connection, v: &Verification) -> rusqlite::Result<()> {
    conn.prepare_cached(&INSERT_VERIFICATION)?
        .execute(rusqlite::params_from_iter(verification_params(v)))?;
    Ok(())
}

/// Writes the mutable fields back if the stored version is `v.version`; bumps it.
fn cas_update(conn: &Connection, v: &Verification) -> StoreResult<()> {
    let p = verification_params(v);
    let changed = conn
        .prepare_cached(
            "UPDATE verifications SET status = ?1, reason = ?2, attempts = ?3, finished_at = ?4,
                source = ?5, has_call = ?6, call_result = ?7, call_complete = ?8,
                billable_duration = ?9, termination_currency = ?10, termination_amount = ?11,
                version = version + 1
             WHERE id = ?12 AND version = ?13",
        )
        .and_then(|mut s| {
            s.execute(params![
                p[6],
                p[7],
                p[12],
                p[16],
                p[17],
                p[20],
                p[21],
                p[22],
                p[23],
                p[24],
                p[25],
                p[0],
                v.version as i64
            ])
        })
        .map_err(other)?;
    if changed == 0 {
        return Err(StoreError::Conflict {
            constraint: "version",
        });
    }
    Ok(())
}

/// Queues `kind` for `v`, only if its application has a callback URL.
fn enqueue(
    conn: &Connection,
    v: &Verification,
    kind: EventKind,
    now: OffsetDateTime,
) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO events (app, verification_id, kind, state, created_at, retry_from, next_attempt_at)
         SELECT ?1, ?2, ?3, 'pending', ?4, ?4, ?4
         WHERE EXISTS (SELECT 1 FROM applications WHERE key = ?1 AND callback_url IS NOT NULL)",
    )
    .and_then(|mut s| {
        s.execute(params![
            v.app,
            v.id.as_bytes().as_slice(),
            kind.as_str(),
            micros(now)
        ])
    })
    .map_err(other)?;
    Ok(())
}

/// Inserts `v` (superseding the pending one) and queues `events`, inside the caller's
/// transaction.
fn insert_verification_tx(
    conn: &Connection,
    v: &Verification,
    events: &[EventKind],
) -> StoreResult<Vec<Verification>> {
    if let Some(reference) = &v.reference {
        let taken: Option<i64> = conn
            .prepare_cached("SELECT 1 FROM verifications WHERE app = ?1 AND reference = ?2")
            .and_then(|mut s| s.query_row(params![v.app, reference], |r| r.get(0)))
            .optional()
            .map_err(other)?;
        if taken.is_some() {
            return Err(StoreError::Conflict {
                constraint: "reference",
            });
        }
    }
    let mut aborted = if v.status == Status::Pending {
        query_verifications(
            conn,
            &select_verification_sql(PENDING_OF_IDENTITY),
            params![v.app, v.method.as_str(), v.identity.as_str()],
        )
        .map_err(other)?
    } else {
        Vec::new()
    };
    for old in &mut aborted {
        old.abort(v.created_at);
        cas_update(conn, old)?;
        old.version += 1;
        enqueue(conn, old, EventKind::Result, v.created_at)?;
    }
    write_verification_row(conn, v).map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::Conflict {
                constraint: "reference",
            }
        } else {
            other(e)
        }
    })?;
    for kind in events {
        enqueue(conn, v, *kind, v.created_at)?;
    }
    Ok(aborted)
}

/// Writes back `v` if unchanged since read, and queues `events`, inside the caller's
/// transaction.
fn update_tx(conn: &Connection, v: &Verification, events: &[EventKind]) -> StoreResult<()> {
    cas_update(conn, v)?;
    let now = v.finished_at.unwrap_or(v.created_at);
    for kind in events {
        enqueue(conn, v, *kind, now)?;
    }
    Ok(())
}

/// A finished job is deleted (migration 5): the table holds only pending jobs, and the
/// attempts keep the history.
const DELETE_JOB: &str = "DELETE FROM delivery_jobs WHERE id = ?1";

/// Queues `v`'s delivery job, leased until `lease_until`; returns its id.
fn insert_job_tx(
    conn: &Connection,
    v: &Verification,
    payload: &[u8],
    lease_until: OffsetDateTime,
) -> StoreResult<i64> {
    conn.prepare_cached(
        "INSERT INTO delivery_jobs (verification_id, app, payload, state, attempts, next_attempt_at, created_at)
         VALUES (?1, ?2, ?3, 'pending', 1, ?4, ?5)",
    )
    .and_then(|mut s| {
        s.execute(params![
            v.id.as_bytes().as_slice(),
            v.app,
            payload,
            micros(lease_until),
            micros(v.created_at)
        ])
    })
    .map_err(other)?;
    Ok(conn.last_insert_rowid())
}

/// Bucket width and window of a counter, in microseconds.
fn counter_span(op: &CounterOp) -> (i64, i64) {
    (
        op.bucket.whole_microseconds().max(1) as i64,
        op.window.whole_microseconds().max(1) as i64,
    )
}

/// The windowed sum of a counter at `now`.
fn counter_sum(conn: &Connection, op: &CounterOp, now: OffsetDateTime) -> rusqlite::Result<i64> {
    let now_us = micros(now);
    let (width, window) = counter_span(op);
    conn.prepare_cached(
        "SELECT COALESCE(SUM(value), 0) FROM counters
         WHERE key = ?1 AND bucket + ?2 > ?3 AND bucket <= ?4",
    )
    .and_then(|mut s| {
        s.query_row(params![op.key, width, now_us - window, now_us], |r| {
            r.get(0)
        })
    })
}

/// Adds `op.amount` to the current bucket.
fn add_tx(conn: &Connection, op: &CounterOp, now: OffsetDateTime) -> StoreResult<()> {
    if op.amount != 0 {
        let (width, window) = counter_span(op);
        let bucket = micros(now).div_euclid(width) * width;
        conn.prepare_cached(
            "INSERT INTO counters (key, bucket, value, expires_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (key, bucket) DO UPDATE SET value = value + excluded.value",
        )
        .and_then(|mut s| s.execute(params![op.key, bucket, op.amount, bucket + width + window]))
        .map_err(other)?;
    }
    Ok(())
}

/// The creation times of a number's verifications for an app since a time, all methods:
/// one descent of the identity index, which leads with the number (migration 6).
const RECENT_STARTS: &str = "SELECT created_at FROM verifications
     WHERE endpoint = ?2 AND app = ?1 AND created_at > ?3 AND status <> 'DENIED'";

/// The pending verifications a start to the same app, method and number supersedes.
const PENDING_OF_IDENTITY: &str =
    "app = ?1 AND method = ?2 AND endpoint = ?3 AND status = 'PENDING'";

/// When the number's verifications of the last [`RecentStarts::horizon`] were created
/// (every method), found through the identity index; only the rows it finds are read
/// from the table, for their status.
fn recent_starts(
    conn: &Connection,
    recent: &RecentStarts,
    now: OffsetDateTime,
) -> StoreResult<Vec<OffsetDateTime>> {
    let mut stmt = conn.prepare_cached(RECENT_STARTS).map_err(other)?;
    let rows = stmt
        .query_map(
            params![recent.app, recent.endpoint, micros(now - recent.horizon())],
            |r| from_micros(r.get::<_, i64>(0)?),
        )
        .map_err(other)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(other)
}

/// A [`GuardedWrite`] the writer thread can own.
enum OwnedWrite {
    Nothing,
    Insert {
        v: Verification,
        events: Vec<EventKind>,
        job: Option<(Vec<u8>, OffsetDateTime)>,
    },
    Update {
        v: Verification,
        events: Vec<EventKind>,
    },
}

impl From<GuardedWrite<'_>> for OwnedWrite {
    fn from(w: GuardedWrite<'_>) -> Self {
        match w {
            GuardedWrite::Nothing => OwnedWrite::Nothing,
            GuardedWrite::Insert {
                verification,
                events,
                job,
            } => OwnedWrite::Insert {
                v: verification.clone(),
                events: events.to_vec(),
                job: job.map(|j| (j.payload.to_vec(), j.lease_until)),
            },
            GuardedWrite::Update {
                verification,
                events,
            } => OwnedWrite::Update {
                v: verification.clone(),
                events: events.to_vec(),
            },
        }
    }
}

fn insert_attempt(conn: &Connection, a: &DeliveryAttempt) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO delivery_attempts (verification_id, route, channel, message_id, outcome, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut s| {
        s.execute(params![
            a.verification_id.as_bytes().as_slice(),
            a.route,
            a.channel,
            a.message_id,
            a.outcome,
            micros(a.at)
        ])
    })
    .map_err(other)?;
    Ok(())
}

fn job_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<DeliveryJob> {
    let vid: Vec<u8> = row.get(1)?;
    Ok(DeliveryJob {
        id: row.get(0)?,
        verification_id: VerificationId(uuid::Uuid::from_slice(&vid).map_err(|_| {
            rusqlite::Error::InvalidColumnType(1, "id".into(), rusqlite::types::Type::Blob)
        })?),
        app: row.get(2)?,
        payload: row.get::<_, Option<Vec<u8>>>(3)?.unwrap_or_default(),
        route_index: row.get(4)?,
        attempts: row.get(5)?,
        next_attempt_at: rows::from_micros(row.get(6)?)?,
        created_at: rows::from_micros(row.get(7)?)?,
    })
}

fn attempt_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<DeliveryAttempt> {
    let vid: Vec<u8> = row.get(0)?;
    Ok(DeliveryAttempt {
        verification_id: VerificationId(uuid::Uuid::from_slice(&vid).map_err(|_| {
            rusqlite::Error::InvalidColumnType(0, "id".into(), rusqlite::types::Type::Blob)
        })?),
        route: row.get(1)?,
        channel: row.get(2)?,
        message_id: row.get(3)?,
        outcome: row.get(4)?,
        at: rows::from_micros(row.get(5)?)?,
    })
}

fn block_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Block> {
    Ok(Block {
        key: row.get(0)?,
        until: rows::from_micros(row.get(1)?)?,
        reason: row.get(2)?,
        created_at: rows::from_micros(row.get(3)?)?,
    })
}

fn query_verifications(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<Vec<Verification>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params, verification_from_row)?;
    rows.collect()
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert_application(&self, app: &Application) -> StoreResult<()> {
        let app = app.clone();
        self.write(move |conn| {
            conn.execute(
                &format!("INSERT INTO applications ({APP_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
                params![
                    app.key,
                    app.name,
                    app.secret,
                    app.callback_url,
                    app.min_auth.as_str(),
                    micros(app.created_at),
                    app.allow_private_callbacks,
                    app.callback_fail_open
                ],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict {
                        constraint: "application",
                    }
                } else {
                    other(e)
                }
            })?;
            Ok(())
        })
        .await
    }

    async fn upsert_application(&self, app: &Application) -> StoreResult<()> {
        let app = app.clone();
        self.write(move |conn| {
            conn.execute(
                &format!(
                    "INSERT INTO applications ({APP_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (key) DO UPDATE SET name = excluded.name, secret = excluded.secret,
                        callback_url = excluded.callback_url, min_auth = excluded.min_auth,
                        allow_private_callbacks = excluded.allow_private_callbacks,
                        callback_fail_open = excluded.callback_fail_open"
                ),
                params![
                    app.key,
                    app.name,
                    app.secret,
                    app.callback_url,
                    app.min_auth.as_str(),
                    micros(app.created_at),
                    app.allow_private_callbacks,
                    app.callback_fail_open
                ],
            )
            .map_err(other)?;
            Ok(())
        })
        .await
    }

    async fn application(&self, key: &str) -> StoreResult<Option<Application>> {
        let key = key.to_string();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {APP_COLUMNS} FROM applications WHERE key = ?1"
                ))?
                .query_row([key], app_from_row)
                .optional()?)
        })
        .await
    }

    async fn list_applications(&self) -> StoreResult<Vec<Application>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {APP_COLUMNS} FROM applications ORDER BY created_at, key"
            ))?;
            let rows = stmt.query_map([], app_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn server_key(&self, name: &str, fresh: [u8; 32]) -> StoreResult<[u8; 32]> {
        let name = name.to_string();
        self.write(move |conn| {
            conn.execute(
                "INSERT OR IGNORE INTO server_keys (name, value) VALUES (?1, ?2)",
                params![name, fresh.as_slice()],
            )
            .map_err(other)?;
            let value: Vec<u8> = conn
                .query_row(
                    "SELECT value FROM server_keys WHERE name = ?1",
                    [&name],
                    |r| r.get(0),
                )
                .map_err(other)?;
            value.try_into().map_err(|_| {
                StoreError::Other(anyhow::anyhow!("server key {name} is not 32 bytes"))
            })
        })
        .await
    }

    async fn insert_verification(
        &self,
        v: &Verification,
        events: &[EventKind],
    ) -> StoreResult<Vec<Verification>> {
        let v = v.clone();
        let events = events.to_vec();
        self.write(move |conn| insert_verification_tx(conn, &v, &events))
            .await
    }

    async fn claim_jobs(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: usize,
    ) -> StoreResult<Vec<DeliveryJob>> {
        self.write(move |conn| {
            let mut jobs = {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT id, verification_id, app, payload, route_index, attempts, next_attempt_at, created_at
                         FROM delivery_jobs WHERE state = 'pending' AND next_attempt_at <= ?1
                         ORDER BY next_attempt_at, id LIMIT ?2",
                    )
                    .map_err(other)?;
                let rows = stmt
                    .query_map(params![micros(now), limit as i64], job_from_row)
                    .map_err(other)?;
                rows.collect::<rusqlite::Result<Vec<_>>>().map_err(other)?
            };
            for job in &mut jobs {
                conn.prepare_cached(
                    "UPDATE delivery_jobs SET attempts = attempts + 1, next_attempt_at = ?2 WHERE id = ?1",
                )
                .and_then(|mut s| s.execute(params![job.id, micros(lease_until)]))
                .map_err(other)?;
                job.attempts += 1;
                job.next_attempt_at = lease_until;
            }
            Ok(jobs)
        })
        .await
    }

    async fn finish_job(&self, id: i64) -> StoreResult<()> {
        self.write(move |conn| {
            conn.prepare_cached(DELETE_JOB)
                .and_then(|mut s| s.execute([id]))
                .map_err(other)?;
            Ok(())
        })
        .await
    }

    async fn complete_job(&self, id: i64, attempt: &DeliveryAttempt) -> StoreResult<()> {
        let a = attempt.clone();
        self.write(move |conn| {
            insert_attempt(conn, &a)?;
            conn.prepare_cached(DELETE_JOB)
                .and_then(|mut s| s.execute([id]))
                .map_err(other)?;
            Ok(())
        })
        .await
    }

    async fn retry_job(
        &self,
        id: i64,
        route_index: u32,
        next_attempt_at: OffsetDateTime,
    ) -> StoreResult<()> {
        self.write(move |conn| {
            conn.execute(
                "UPDATE delivery_jobs SET route_index = ?2, next_attempt_at = ?3 WHERE id = ?1 AND state = 'pending'",
                params![id, route_index, micros(next_attempt_at)],
            )
            .map_err(other)?;
            Ok(())
        })
        .await
    }

    async fn record_attempt(&self, attempt: &DeliveryAttempt) -> StoreResult<()> {
        let a = attempt.clone();
        self.write(move |conn| insert_attempt(conn, &a)).await
    }

    async fn attempt_by_message(
        &self,
        channel: &str,
        message_id: &str,
    ) -> StoreResult<Option<DeliveryAttempt>> {
        let (channel, message_id) = (channel.to_string(), message_id.to_string());
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT verification_id, route, channel, message_id, outcome, at FROM delivery_attempts
                     WHERE channel = ?1 AND message_id = ?2 ORDER BY id DESC LIMIT 1",
                )?
                .query_row(params![channel, message_id], attempt_from_row)
                .optional()?)
        })
        .await
    }

    async fn attempts(&self, verification_id: VerificationId) -> StoreResult<Vec<DeliveryAttempt>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT verification_id, route, channel, message_id, outcome, at FROM delivery_attempts
                 WHERE verification_id = ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map(params![verification_id.as_bytes().as_slice()], attempt_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn verification(
        &self,
        app: &str,
        id: VerificationId,
    ) -> StoreResult<Option<Verification>> {
        let app = app.to_string();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&select_verification_sql("id = ?1 AND app = ?2"))?
                .query_row(
                    params![id.as_bytes().as_slice(), app],
                    verification_from_row,
                )
                .optional()?)
        })
        .await
    }

    async fn verification_by_id(&self, id: VerificationId) -> StoreResult<Option<Verification>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&select_verification_sql("id = ?1"))?
                .query_row(params![id.as_bytes().as_slice()], verification_from_row)
                .optional()?)
        })
        .await
    }

    async fn verification_by_reference(
        &self,
        app: &str,
        reference: &str,
    ) -> StoreResult<Option<Verification>> {
        let (app, reference) = (app.to_string(), reference.to_string());
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&select_verification_sql("app = ?1 AND reference = ?2"))?
                .query_row(params![app, reference], verification_from_row)
                .optional()?)
        })
        .await
    }

    async fn verification_by_identity(
        &self,
        app: &str,
        method: Method,
        endpoint: &str,
    ) -> StoreResult<Option<Verification>> {
        let (app, endpoint) = (app.to_string(), endpoint.to_string());
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&select_verification_sql(
                    "app = ?1 AND method = ?2 AND endpoint = ?3
                     ORDER BY status = 'PENDING' DESC, created_at DESC, id DESC LIMIT 1",
                ))?
                .query_row(
                    params![app, method.as_str(), endpoint],
                    verification_from_row,
                )
                .optional()?)
        })
        .await
    }

    async fn expire_due(
        &self,
        now: OffsetDateTime,
        limit: usize,
    ) -> StoreResult<Vec<Verification>> {
        self.write(move |conn| {
            let mut due = query_verifications(
                conn,
                &select_verification_sql(
                    "status = 'PENDING' AND expires_at <= ?1 ORDER BY expires_at LIMIT ?2",
                ),
                params![micros(now), limit as i64],
            )
            .map_err(other)?;
            for v in &mut due {
                if v.expire_if_due(now) {
                    cas_update(conn, v)?;
                    v.version += 1;
                    enqueue(conn, v, EventKind::Result, now)?;
                }
            }
            Ok(due)
        })
        .await
    }

    async fn claim_events(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: usize,
        per_app: usize,
    ) -> StoreResult<Vec<OutboxEvent>> {
        self.write(move |conn| {
            let mut events = {
                let mut stmt = conn
                    .prepare_cached(&format!(
                        "SELECT {EVENT_COLUMNS} FROM (
                            SELECT *, ROW_NUMBER() OVER (PARTITION BY app ORDER BY next_attempt_at, id) AS n
                            FROM events WHERE state = 'pending' AND next_attempt_at <= ?1
                         ) WHERE n <= ?2 ORDER BY next_attempt_at, id LIMIT ?3"
                    ))
                    .map_err(other)?;
                let rows = stmt
                    .query_map(
                        params![micros(now), per_app as i64, limit as i64],
                        event_from_row,
                    )
                    .map_err(other)?;
                rows.collect::<rusqlite::Result<Vec<_>>>().map_err(other)?
            };
            for e in &mut events {
                conn.prepare_cached(
                    "UPDATE events SET attempts = attempts + 1, next_attempt_at = ?2 WHERE id = ?1",
                )
                .and_then(|mut s| s.execute(params![e.id, micros(lease_until)]))
                .map_err(other)?;
                e.attempts += 1;
                e.next_attempt_at = lease_until;
            }
            Ok(events)
        })
        .await
    }

    async fn event_delivered(&self, id: i64, now: OffsetDateTime) -> StoreResult<()> {
        self.write(move |conn| {
            conn.execute(
                "UPDATE events SET state = 'delivered', delivered_at = ?2, last_error = NULL WHERE id = ?1",
                params![id, micros(now)],
            )
            .map_err(other)?;
            Ok(())
        })
        .await
    }

    async fn event_retry(
        &self,
        id: i64,
        next_attempt_at: OffsetDateTime,
        error: &str,
    ) -> StoreResult<()> {
        let error = error.to_string();
        self.write(move |conn| {
            conn.execute(
                "UPDATE events SET state = 'pending', next_attempt_at = ?2, last_error = ?3 WHERE id = ?1",
                params![id, micros(next_attempt_at), error],
            )
            .map_err(other)?;
            Ok(())
        })
        .await
    }

    async fn event_dead(&self, id: i64, error: &str) -> StoreResult<()> {
        let error = error.to_string();
        self.write(move |conn| {
            conn.execute(
                "UPDATE events SET state = 'dead', last_error = ?2 WHERE id = ?1",
                params![id, error],
            )
            .map_err(other)?;
            Ok(())
        })
        .await
    }

    async fn list_events(
        &self,
        state: Option<EventState>,
        limit: usize,
    ) -> StoreResult<Vec<OutboxEvent>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE (?1 IS NULL OR state = ?1) ORDER BY id LIMIT ?2"
            ))?;
            let rows = stmt.query_map(
                params![state.map(EventState::as_str), limit as i64],
                event_from_row,
            )?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn redeliver_event(&self, id: i64, now: OffsetDateTime) -> StoreResult<bool> {
        self.write(move |conn| {
            let n = conn
                .execute(
                    "UPDATE events SET state = 'pending', next_attempt_at = ?2, retry_from = ?2,
                        delivered_at = NULL WHERE id = ?1",
                    params![id, micros(now)],
                )
                .map_err(other)?;
            Ok(n == 1)
        })
        .await
    }

    async fn counter_sums(&self, ops: &[CounterOp], now: OffsetDateTime) -> StoreResult<Vec<i64>> {
        let ops = ops.to_vec();
        self.read(move |conn| {
            ops.iter()
                .map(|op| counter_sum(conn, op, now).map_err(anyhow::Error::from))
                .collect()
        })
        .await
    }

    async fn guarded_write(
        &self,
        guard: &Guard,
        write: GuardedWrite<'_>,
        now: OffsetDateTime,
    ) -> StoreResult<GuardOutcome> {
        let guard = guard.clone();
        let write = OwnedWrite::from(write);
        let sweep = Arc::clone(&self.counter_sweep);
        // Everything that can refuse or fail is checked before anything is changed, so a
        // refused or failed guarded write leaves nothing to undo.
        self.write_or_refuse(move |conn| {
            if let Some(recent) = &guard.recent
                && let Some(refusal) = recent.check(&recent_starts(conn, recent, now)?, now)
            {
                return Ok((GuardOutcome::Refused(refusal), false));
            }
            let mut sums = Vec::with_capacity(guard.counters.len());
            for (index, c) in guard.counters.iter().enumerate() {
                // Earlier bumps of the same counter in this guard count too.
                let earlier: i64 = guard.counters[..index]
                    .iter()
                    .filter(|e| e.op.key == c.op.key && counter_span(&e.op) == counter_span(&c.op))
                    .map(|e| e.op.amount)
                    .sum();
                let sum = counter_sum(conn, &c.op, now).map_err(other)? + earlier + c.op.amount;
                if c.max.is_some_and(|max| sum > max) {
                    return Ok((GuardOutcome::Refused(Refusal::Limit { index, sum }), false));
                }
                sums.push(sum);
            }
            let (superseded, job_id) = match write {
                OwnedWrite::Nothing => (Vec::new(), None),
                OwnedWrite::Insert { v, events, job } => {
                    let superseded = insert_verification_tx(conn, &v, &events)?;
                    let job_id = match job {
                        Some((payload, lease_until)) => {
                            Some(insert_job_tx(conn, &v, &payload, lease_until)?)
                        }
                        None => None,
                    };
                    (superseded, job_id)
                }
                OwnedWrite::Update { v, events } => {
                    update_tx(conn, &v, &events)?;
                    (Vec::new(), None)
                }
            };
            for c in &guard.counters {
                add_tx(conn, &c.op, now)?;
            }
            sweep.wrote(guard.counters.len());
            Ok((
                GuardOutcome::Passed {
                    sums,
                    superseded,
                    job_id,
                },
                true,
            ))
        })
        .await
    }

    async fn take_token(
        &self,
        key: &str,
        rate: f64,
        burst: f64,
        now: OffsetDateTime,
    ) -> StoreResult<Option<time::Duration>> {
        let key = key.to_string();
        self.write(move |conn| {
            let row: Option<(f64, i64)> = conn
                .prepare_cached("SELECT tokens, updated_at FROM token_buckets WHERE key = ?1")
                .and_then(|mut s| s.query_row([&key], |r| Ok((r.get(0)?, r.get(1)?))))
                .optional()
                .map_err(other)?;
            let now_us = micros(now);
            let tokens = match row {
                None => burst,
                Some((tokens, at)) => {
                    let elapsed = (now_us - at).max(0) as f64 / 1e6;
                    (tokens + elapsed * rate).min(burst)
                }
            };
            let (left, wait) = if tokens >= 1.0 {
                (tokens - 1.0, None)
            } else {
                let secs = if rate > 0.0 { (1.0 - tokens) / rate } else { 3600.0 };
                (tokens, Some(time::Duration::seconds_f64(secs)))
            };
            conn.prepare_cached(
                "INSERT INTO token_buckets (key, tokens, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET tokens = excluded.tokens, updated_at = excluded.updated_at",
            )
            .and_then(|mut s| s.execute(params![key, left, now_us]))
            .map_err(other)?;
            Ok(wait)
        })
        .await
    }

    async fn set_block(&self, block: &Block) -> StoreResult<()> {
        let b = block.clone();
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO blocks (key, until_at, reason, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (key) DO UPDATE SET until_at = MAX(until_at, excluded.until_at),
                    reason = excluded.reason",
                params![b.key, micros(b.until), b.reason, micros(b.created_at)],
            )
            .map_err(other)?;
            Ok(())
        })
        .await
    }

    async fn active_block(&self, key: &str, now: OffsetDateTime) -> StoreResult<Option<Block>> {
        let key = key.to_string();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT key, until_at, reason, created_at FROM blocks WHERE key = ?1 AND until_at > ?2",
                )?
                .query_row(params![key, micros(now)], block_from_row)
                .optional()?)
        })
        .await
    }

    async fn list_blocks(&self, now: OffsetDateTime) -> StoreResult<Vec<Block>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT key, until_at, reason, created_at FROM blocks WHERE until_at > ?1 ORDER BY key",
            )?;
            let rows = stmt.query_map([micros(now)], block_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn remove_block(&self, key: &str) -> StoreResult<bool> {
        let key = key.to_string();
        self.write(move |conn| {
            Ok(conn
                .execute("DELETE FROM blocks WHERE key = ?1", [key])
                .map_err(other)?
                == 1)
        })
        .await
    }

    async fn purge(&self, now: OffsetDateTime, retention: time::Duration) -> StoreResult<u64> {
        let sweep = Arc::clone(&self.counter_sweep);
        self.write(move |conn| {
            let now_us = micros(now);
            let day = 86_400_000_000i64;
            let cutoff = micros(now - retention);
            sweep.purge(conn, now_us).map_err(other)?;
            conn.execute("DELETE FROM blocks WHERE until_at <= ?1", [now_us]).map_err(other)?;
            conn.execute("DELETE FROM token_buckets WHERE updated_at <= ?1", [now_us - day])
                .map_err(other)?;
            conn.execute(
                "DELETE FROM events WHERE state <> 'pending' AND verification_id IN
                    (SELECT id FROM verifications WHERE finished_at IS NOT NULL AND finished_at < ?1)",
                [cutoff],
            )
            .map_err(other)?;
            for table in ["delivery_attempts", "delivery_jobs"] {
                conn.execute(
                    &format!(
                        "DELETE FROM {table} WHERE verification_id IN
                            (SELECT id FROM verifications WHERE finished_at IS NOT NULL AND finished_at < ?1)"
                    ),
                    [cutoff],
                )
                .map_err(other)?;
            }
            let purged = conn
                .execute(
                    "DELETE FROM verifications WHERE finished_at IS NOT NULL AND finished_at < ?1
                     AND NOT EXISTS (SELECT 1 FROM events e WHERE e.verification_id = verifications.id)",
                    [cutoff],
                )
                .map_err(other)?;
            Ok(purged as u64)
        })
        .await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(|conn| Ok(conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write that fails after changing rows takes its whole batch down with it: no caller
    /// in the batch is told it succeeded, nothing of the batch is committed, and the next
    /// batch works.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_failing_half_way_rolls_back_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("t.db"), SqliteOptions::default()).unwrap();
        let row = |key: &'static str| {
            move |conn: &Connection| {
                conn.execute(
                    "INSERT INTO token_buckets (key, tokens, updated_at) VALUES (?1, 1, 1)",
                    [key],
                )
                .map_err(other)
            }
        };
        // Hold the writer busy so the next three writes land in one batch.
        let (release, wait) = std_mpsc::channel::<()>();
        let s = store.clone();
        let busy = tokio::spawn(async move {
            s.write(move |_| {
                let _ = wait.recv();
                Ok(())
            })
            .await
        });
        tokio::time::sleep(StdDuration::from_millis(50)).await;
        let s = store.clone();
        let before = tokio::spawn(async move { s.write(row("before")).await });
        tokio::time::sleep(StdDuration::from_millis(20)).await;
        let s = store.clone();
        let broken = tokio::spawn(async move {
            s.write(|conn| -> StoreResult<()> {
                conn.execute(
                    "INSERT INTO token_buckets (key, tokens, updated_at) VALUES ('broken', 1, 1)",
                    [],
                )
                .map_err(other)?;
                Err(StoreError::Other(anyhow::anyhow!("failed half-way")))
            })
            .await
        });
        tokio::time::sleep(StdDuration::from_millis(20)).await;
        let s = store.clone();
        let after = tokio::spawn(async move { s.write(row("after")).await });
        tokio::time::sleep(StdDuration::from_millis(50)).await;
        release.send(()).unwrap();
        busy.await.unwrap().unwrap();
        assert!(before.await.unwrap().is_err());
        assert!(broken.await.unwrap().is_err());
        assert!(after.await.unwrap().is_err());
        let rows = store
            .read(|conn| {
                Ok(
                    conn.query_row("SELECT count(*) FROM token_buckets", [], |r| {
                        r.get::<_, i64>(0)
                    })?,
                )
            })
            .await
            .unwrap();
        assert_eq!(rows, 0);
        store.write(row("later")).await.unwrap();
        let keys = store
            .read(|conn| {
                let mut stmt = conn.prepare("SELECT key FROM token_buckets")?;
                let keys = stmt
                    .query_map([], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(keys)
            })
            .await
            .unwrap();
        assert_eq!(keys, vec!["later".to_string()]);
    }

    /// The reads a start makes by number use the identity index with the number first
    /// (migration 6), so all of a number's methods are one descent.
    #[tokio::test]
    async fn a_starts_number_lookups_descend_the_identity_index_by_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        drop(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
        let conn = Connection::open(&path).unwrap();
        let plan = |sql: &str, args: [&dyn rusqlite::ToSql; 3]| -> String {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let details: Vec<String> = stmt
                .query_map(&args[..], |r| r.get(3))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            details.join("; ")
        };
        // Every method of the number in one descent (not one per method).
        let recent = plan(RECENT_STARTS, [&"app", &"+46700000000", &0]);
        assert!(
            recent.contains("USING INDEX verifications_identity (endpoint=? AND app=?)"),
            "{recent}"
        );
        let pending = plan(
            &select_verification_sql(PENDING_OF_IDENTITY),
            [&"app", &"sms", &"+46700000000"],
        );
        assert!(
            pending
                .contains("USING INDEX verifications_identity (endpoint=? AND app=? AND method=?)"),
            "{pending}"
        );
    }

    /// The counter purge walks the keys in slices and goes on where it stopped: expired rows
    /// go, live ones stay, and a table bigger than one purge's walk is cleared by the next.
    #[tokio::test]
    async fn the_counter_purge_walks_on_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("t.db"), SqliteOptions::default()).unwrap();
        let now = time::macros::datetime!(2026-11-26 12:00 UTC);
        let now_us = micros(now);
        store
            .write(move |conn| {
                let mut insert = conn
                    .prepare("INSERT INTO counters (key, bucket, value, expires_at) VALUES (?1, 0, 1, ?2)")
                    .map_err(other)?;
                for i in 0..30_000 {
                    let expires = if i % 3 == 0 { now_us + 1 } else { now_us };
                    insert
                        .execute(params![format!("k{i:05}"), expires])
                        .map_err(other)?;
                }
                Ok(())
            })
            .await
            .unwrap();
        let rows = || async {
            store
                .read(|conn| {
                    Ok(conn
                        .query_row("SELECT count(*) FROM counters", [], |r| r.get::<_, i64>(0))?)
                })
                .await
                .unwrap()
        };
        let retention = time::Duration::days(7);
        store.purge(now, retention).await.unwrap();
        // The first 20,000 keys were walked: their 13,333 expired rows are gone.
        assert_eq!(rows().await, 30_000 - 13_333);
        store.purge(now, retention).await.unwrap();
        assert_eq!(rows().await, 10_000, "only the live rows are left");
        store
            .purge(now + time::Duration::microseconds(1), retention)
            .await
            .unwrap();
        assert_eq!(rows().await, 0, "the walk started again from the first key");
    }

    #[test]
    fn urls_become_paths() {
        assert_eq!(
            path_from_url("sqlite://verifyd.db"),
            PathBuf::from("verifyd.db")
        );
        assert_eq!(
            path_from_url("sqlite:///tmp/x.db?mode=rwc"),
            PathBuf::from("/tmp/x.db")
        );
        assert_eq!(path_from_url("sqlite:x.db"), PathBuf::from("x.db"));
        assert_eq!(path_from_url("plain.db"), PathBuf::from("plain.db"));
    }
}
