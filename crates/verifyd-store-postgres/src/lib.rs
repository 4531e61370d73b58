//! The PostgreSQL backend of verifyd, for several nodes sharing one database.
//!
//! It has exactly the semantics of the SQLite store (the shared conformance suite pins
//! them), but where SQLite gets safety from its single writer, this store gets it from
//! PostgreSQL, so that any number of verifyd processes can work on the same rows:
//!
//! - **Starts** run in one `READ COMMITTED` transaction that first takes a transaction-level
//!   advisory lock on (application, method, number), so racing starts for one number queue
//!   up instead of colliding; each then sees its predecessor's PENDING verification, aborts
//!   it (`SELECT … FOR UPDATE`, then the version check) and inserts its own. The partial
//!   unique index `verifications_one_pending` stays the final guard: a start that still trips
//!   it (or a deadlock) is retried a few times.
//! - **Updates** are optimistic: `UPDATE … WHERE id = $ AND version = $`, and no row
//!   changed means `Conflict { constraint: "version" }`. Events go in the same transaction.
//! - **Workers** claim with `FOR UPDATE SKIP LOCKED` (the expiry sweeper and the outbox), so
//!   concurrent claimers on any node never get the same row and never wait on each other.
//! - **Migrations** are versioned, embedded, and serialized by an advisory lock (`migrate`).
//!
//! # Why tokio-postgres and deadpool, not sqlx
//! sqlx cannot be in this workspace: its optional SQLite driver declares
//! `links = "sqlite3"`, and cargo enforces `links` uniqueness across optional dependencies
//! too, so it collides with rusqlite's bundled SQLite even with only sqlx's `postgres`
//! feature. tokio-postgres is also a better fit here: plain SQL strings, per-connection
//! prepared-statement caching (deadpool's `prepare_cached`), exact control over
//! transactions and SQLSTATEs, and no compile-time database access.
//!
//! Needs PostgreSQL 12 or newer (`MATERIALIZED` CTEs). TLS is not built in yet: a URL with
//! `sslmode=require` fails to connect (rather than silently connecting in the clear); the
//! default `prefer` connects without TLS.
//!
//! # Layout
//! - [`PgStore`], [`PgOptions`], [`SchemaVersion`]: connecting, the pool, the [`Store`]
//!   implementation.
//! - `migrate`: the embedded migrations and their runner (private).
//! - `rows`: mapping between rows and domain types (private).

mod migrate;
mod rows;

use std::sync::LazyLock;
use std::time::Duration as StdDuration;

use anyhow::{Context, anyhow};
use async_trait::async_trait;
use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime,
};
use time::OffsetDateTime;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};
use verifyd_core::{Method, Status, Verification, VerificationId};
use verifyd_store::{
    Application, Block, CounterOp, DeliveryAttempt, DeliveryJob, EventKind, EventState, Guard,
    GuardOutcome, GuardedWrite, OutboxEvent, RecentStarts, Refusal, Store, StoreError, StoreResult,
};

use crate::rows::{
    APP_COLUMNS, BLOCK_COLUMNS, EVENT_COLUMNS, VERIFICATION_COLUMNS, VerificationParams,
    app_from_row, block_from_row, events, verifications,
};

/// Class (first key) of every advisory lock this store takes; the second key says what is
/// locked. Two-key advisory locks never collide with single-`bigint` ones.
const LOCK_CLASS: i32 = 0x7666_7964; // "vfyd"
/// Class of the per-number locks that serialize starts (second key: `hashtext` of it).
const START_LOCK_CLASS: i32 = LOCK_CLASS + 1;

/// How often a transaction that lost a race (see [`TxError::Retry`]) is run in total.
const MAX_TRIES: u32 = 8;

/// A claim looks at this many times `limit` candidate events, so that concurrent claimers
/// that skip each other's locked rows still fill their batch.
const CLAIM_OVERFETCH: i64 = 4;

/// Options for [`PgStore::connect`].
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Most connections this node opens (default 10). Every node has its own pool, so the
    /// server's `max_connections` must cover the sum.
    pub max_connections: usize,
    /// Whether [`PgStore::connect`] applies pending migrations (default `true`).
    pub migrate: bool,
    /// How long to wait for a new connection to be established (default 10 s), unless the
    /// URL sets `connect_timeout`.
    pub connect_timeout: StdDuration,
    /// How long a store call waits for a free pooled connection before failing (default
    /// 30 s).
    pub acquire_timeout: StdDuration,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            migrate: true,
            connect_timeout: StdDuration::from_secs(10),
            acquire_timeout: StdDuration::from_secs(30),
        }
    }
}

/// What [`PgStore::schema_version`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaVersion {
    /// The highest migration applied to the database; `None` before the first.
    pub applied: Option<i32>,
    /// The newest migration embedded in this binary.
    pub latest: i32,
}

/// The PostgreSQL store: a connection pool. Cheap to clone (clones share the pool).
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
}

impl std::fmt::Debug for PgStore {
    /// Shows the pool's state, never the connection settings (they may hold a password).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PgStore")
            .field("max_connections", &status.max_size)
            .field("open", &status.size)
            .field("idle", &status.available)
            .finish()
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user:pass@host:port/db?…` or a
    /// `key=value` connection string), checks that it answers, and migrates it if
    /// `options.migrate`.
    ///
    /// # Errors
    /// If the URL is invalid, the server cannot be reached or refuses the credentials, or a
    /// migration fails.
    pub async fn connect(url: &str, options: PgOptions) -> anyhow::Result<Self> {
        // The URL is not echoed in errors: it may carry a password.
        let mut config: tokio_postgres::Config =
            url.parse().context("Invalid PostgreSQL connection URL")?;
        if config.get_application_name().is_none() {
            config.application_name("verifyd");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.connect_timeout);
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.max_connections.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.acquire_timeout))
            .create_timeout(Some(options.connect_timeout))
            .build()
            .context("Failed to build the PostgreSQL pool")?;
        let store = Self { pool };
        store
            .ping()
            .await
            .map_err(anyhow::Error::from)
            .context("Failed to connect to PostgreSQL")?;
        if options.migrate {
            store.migrate().await?;
        }
        Ok(store)
    }

    /// Applies the embedded migrations that have not run yet. Safe to call on every start
    /// and from several nodes at once: an advisory lock lets one node migrate while the
    /// others wait, and all pending migrations commit together or not at all.
    ///
    /// # Errors
    /// If a migration fails, or one that was applied differs from the embedded one.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let mut client = self
            .client()
            .await
            .map_err(anyhow::Error::from)
            .context("Failed to connect to PostgreSQL for migrations")?;
        migrate::run(&mut client).await
    }

    /// Which schema version the database has and which this binary expects, for readiness
    /// checks and operators.
    ///
    /// # Errors
    /// If the database cannot be read.
    pub async fn schema_version(&self) -> anyhow::Result<SchemaVersion> {
        let client = self.client().await.map_err(anyhow::Error::from)?;
        Ok(SchemaVersion {
            applied: migrate::version(&client).await?,
            latest: migrate::latest(),
        })
    }

    async fn client(&self) -> StoreResult<Object> {
        self.pool.get().await.map_err(|e| {
            StoreError::Other(anyhow!(e).context("Failed to get a PostgreSQL connection"))
        })
    }

    /// One attempt at [`Store::insert_verification`].
    async fn try_insert_verification(
        &self,
        v: &Verification,
        p: &VerificationParams<'_>,
        events: &[EventKind],
    ) -> Result<Vec<Verification>, TxError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let (aborted, _) = insert_tx(&tx, v, p, events, None).await?;
        tx.commit().await?;
        Ok(aborted)
    }

    /// One attempt at [`Store::guarded_write`].
    async fn try_guarded_write(
        &self,
        guard: &Guard,
        write: &GuardedWrite<'_>,
        params: Option<&VerificationParams<'_>>,
        now: OffsetDateTime,
    ) -> Result<GuardOutcome, TxError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // A refusal returns before the commit: dropping the transaction rolls it back.
        if let Some(recent) = &guard.recent
            && let Some(refusal) = recent.check(&recent_starts(&tx, recent, now).await?, now)
        {
            return Ok(GuardOutcome::Refused(refusal));
        }
        let mut sums = Vec::with_capacity(guard.counters.len());
        for (index, c) in guard.counters.iter().enumerate() {
            let sum = bump_tx(&tx, &c.op, now).await?;
            if c.max.is_some_and(|max| sum > max) {
                return Ok(GuardOutcome::Refused(Refusal::Limit { index, sum }));
            }
            sums.push(sum);
        }
        let (superseded, job_id) = match (write, params) {
            (
                GuardedWrite::Insert {
                    verification,
                    events,
                    job,
                },
                Some(p),
            ) => {
                insert_tx(
                    &tx,
                    verification,
                    p,
                    events,
                    job.map(|j| (j.payload, j.lease_until)),
                )
                .await?
            }
            (
                GuardedWrite::Update {
                    verification,
                    events,
                },
                _,
            ) => {
                update_tx(&tx, verification, events).await?;
                (Vec::new(), None)
            }
            _ => (Vec::new(), None),
        };
        tx.commit().await?;
        Ok(GuardOutcome::Passed {
            sums,
            superseded,
            job_id,
        })
    }
}

/// When the number's verifications of the last [`RecentStarts::horizon`] were created
/// (every method, from the identity index). Takes a per-number lock first, so starts for
/// one number from any node queue here and each counts the one before it.
async fn recent_starts(
    tx: &deadpool_postgres::Transaction<'_>,
    recent: &RecentStarts,
    now: OffsetDateTime,
) -> Result<Vec<OffsetDateTime>, TxError> {
    let key = format!("{}\n*\n{}", recent.app, recent.endpoint);
    exec(
        tx,
        "SELECT pg_advisory_xact_lock($1::int4, hashtext($2::text))",
        &[&START_LOCK_CLASS, &key],
    )
    .await?;
    let methods: Vec<&str> = Method::ALL.iter().map(|m| m.as_str()).collect();
    let rows = query(
        tx,
        "SELECT created_at FROM verifications
         WHERE app = $1 AND method = ANY($2) AND endpoint = $3 AND created_at > $4
           AND status <> 'DENIED'",
        &[
            &recent.app,
            &methods,
            &recent.endpoint,
            &(now - recent.horizon()),
        ],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<Vec<OffsetDateTime>, _>>()?)
}

/// Inserts `v` (superseding the pending one), its events and its job, in `tx`.
async fn insert_tx(
    tx: &deadpool_postgres::Transaction<'_>,
    v: &Verification,
    p: &VerificationParams<'_>,
    events: &[EventKind],
    job: Option<(&[u8], OffsetDateTime)>,
) -> Result<(Vec<Verification>, Option<i64>), TxError> {
    {
        let pending = v.status == Status::Pending;
        if pending {
            // Starts for one number queue here, so each sees the one before it committed.
            let key = format!("{}\n{}\n{}", v.app, v.method.as_str(), v.identity.as_str());
            exec(
                tx,
                "SELECT pg_advisory_xact_lock($1::int4, hashtext($2::text))",
                &[&START_LOCK_CLASS, &key],
            )
            .await?;
        }
        if let Some(reference) = &v.reference {
            let taken = query(
                tx,
                "SELECT 1 FROM verifications WHERE app = $1 AND reference = $2",
                &[&v.app, reference],
            )
            .await?;
            if !taken.is_empty() {
                return Err(TxError::Fail(StoreError::Conflict {
                    constraint: "reference",
                }));
            }
        }
        let mut aborted = if pending {
            verifications(
                &query(
                    tx,
                    &SELECT_PENDING_FOR_UPDATE,
                    &[&v.app, &v.method.as_str(), &v.identity.as_str()],
                )
                .await?,
            )?
        } else {
            Vec::new()
        };
        for old in &mut aborted {
            old.abort(v.created_at);
            cas_update(tx, old).await?;
            old.version += 1;
            enqueue(tx, old, EventKind::Result, v.created_at).await?;
        }
        exec(tx, &INSERT_VERIFICATION, &p.all()).await?;
        for kind in events {
            enqueue(tx, v, *kind, v.created_at).await?;
        }
        let job_id = match job {
            Some((payload, lease_until)) => Some(
                query_one(
                    tx,
                    "INSERT INTO delivery_jobs (verification_id, app, payload, state, attempts, next_attempt_at, created_at)
                     VALUES ($1, $2, $3, 'pending', 1, $4, $5) RETURNING id",
                    &[&v.id.0, &v.app, &payload, &lease_until, &v.created_at],
                )
                .await?
                .try_get::<_, i64>(0)?,
            ),
            None => None,
        };
        Ok((aborted, job_id))
    }
}

/// Adds `op.amount` to the current bucket (inside the caller's transaction); returns the
/// windowed sum after it.
async fn bump_tx<C: GenericClient>(
    c: &C,
    op: &CounterOp,
    now: OffsetDateTime,
) -> Result<i64, TxError> {
    if op.amount != 0 {
        let now_us = micros(now);
        let width = duration_micros(op.bucket).max(1);
        let window = duration_micros(op.window).max(1);
        let bucket = now_us.div_euclid(width) * width;
        let expires_at = bucket.saturating_add(width).saturating_add(window);
        exec(
            c,
            "INSERT INTO counters (key, bucket, value, expires_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (key, bucket) DO UPDATE SET value = counters.value + excluded.value",
            &[&op.key, &bucket, &op.amount, &expires_at],
        )
        .await?;
    }
    Ok(counter_sum(c, op, now).await?)
}

/// The windowed sum of a counter at `now`.
async fn counter_sum<C: GenericClient>(
    c: &C,
    op: &CounterOp,
    now: OffsetDateTime,
) -> Result<i64, tokio_postgres::Error> {
    let now_us = micros(now);
    let width = duration_micros(op.bucket).max(1);
    let window = duration_micros(op.window).max(1);
    let since = now_us.saturating_sub(window);
    query_one(
        c,
        "SELECT COALESCE(SUM(value), 0)::bigint FROM counters
         WHERE key = $1 AND bucket + $2 > $3 AND bucket <= $4",
        &[&op.key, &width, &since, &now_us],
    )
    .await?
    .try_get(0)
}

/// Why one run of a transaction failed.
enum TxError {
    /// It lost a race that running it again resolves: the one-PENDING unique index, a
    /// deadlock or a serialization failure.
    Retry(tokio_postgres::Error),
    /// Final.
    Fail(StoreError),
}

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> Self {
        TxError::Fail(e)
    }
}

impl From<anyhow::Error> for TxError {
    fn from(e: anyhow::Error) -> Self {
        TxError::Fail(StoreError::Other(e))
    }
}

impl From<tokio_postgres::Error> for TxError {
    fn from(e: tokio_postgres::Error) -> Self {
        let retry = e.code().is_some_and(|code| {
            *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE
        }) || violated_constraint(&e) == Some("verifications_one_pending");
        if retry {
            TxError::Retry(e)
        } else {
            TxError::Fail(other(e))
        }
    }
}

/// Runs `attempt` until it succeeds, fails for good, or lost its race [`MAX_TRIES`] times;
/// backs off a little between tries.
async fn retrying<T, F, Fut>(what: &'static str, mut attempt: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, TxError>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(TxError::Fail(e)) => return Err(e),
            Err(TxError::Retry(e)) if tries < MAX_TRIES => {
                tracing::debug!(what, tries, error = %e, "transaction lost a race; retrying");
                tokio::time::sleep(StdDuration::from_millis(u64::from(tries) * 5)).await;
            }
            Err(TxError::Retry(e)) => {
                return Err(StoreError::Other(
                    anyhow!(e).context(format!("{what} lost a race {MAX_TRIES} times in a row")),
                ));
            }
        }
    }
}

/// The unique constraint (index) a unique violation names.
fn violated_constraint(e: &tokio_postgres::Error) -> Option<&str> {
    let db = e.as_db_error()?;
    if *db.code() == SqlState::UNIQUE_VIOLATION {
        db.constraint()
    } else {
        None
    }
}

/// Maps a database error: the unique violations callers branch on become
/// [`StoreError::Conflict`], everything else [`StoreError::Other`].
fn other(e: tokio_postgres::Error) -> StoreError {
    match violated_constraint(&e) {
        Some("applications_pkey") => StoreError::Conflict {
            constraint: "application",
        },
        Some("verifications_reference") => StoreError::Conflict {
            constraint: "reference",
        },
        _ => StoreError::Other(anyhow!(e)),
    }
}

/// Unix microseconds (the precision stored).
fn attempt_row(r: &tokio_postgres::Row) -> anyhow::Result<DeliveryAttempt> {
    Ok(DeliveryAttempt {
        verification_id: VerificationId(r.try_get(0)?),
        route: r.try_get(1)?,
        channel: r.try_get(2)?,
        message_id: r.try_get(3)?,
        outcome: r.try_get(4)?,
        at: r.try_get(5)?,
    })
}

fn micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

/// Whole microseconds of `d`, saturating.
fn duration_micros(d: time::Duration) -> i64 {
    let us = d.whole_microseconds();
    i64::try_from(us).unwrap_or(if us < 0 { i64::MIN } else { i64::MAX })
}

/// Clamps a count to a `LIMIT`.
fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

async fn exec<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, tokio_postgres::Error> {
    let stmt = c.prepare_cached(sql).await?;
    c.execute(&stmt, params).await
}

async fn query<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, tokio_postgres::Error> {
    let stmt = c.prepare_cached(sql).await?;
    c.query(&stmt, params).await
}

async fn query_opt<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>, tokio_postgres::Error> {
    let stmt = c.prepare_cached(sql).await?;
    c.query_opt(&stmt, params).await
}

async fn query_one<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Row, tokio_postgres::Error> {
    let stmt = c.prepare_cached(sql).await?;
    c.query_one(&stmt, params).await
}

fn select_verification_sql(filter: &str) -> String {
    format!("SELECT {VERIFICATION_COLUMNS} FROM verifications WHERE {filter}")
}

static INSERT_VERIFICATION: LazyLock<String> = LazyLock::new(|| {
    let params: Vec<String> = (1..=28).map(|i| format!("${i}")).collect();
    format!(
        "INSERT INTO verifications ({VERIFICATION_COLUMNS}) VALUES ({})",
        params.join(", ")
    )
});

static SELECT_PENDING_FOR_UPDATE: LazyLock<String> = LazyLock::new(|| {
    select_verification_sql(
        "app = $1 AND method = $2 AND endpoint = $3 AND status = 'PENDING' FOR UPDATE",
    )
});

/// Writes back the fields that change after a start, if the stored version is the one read;
/// bumps it. Parameters: [`VerificationParams::cas`].
const CAS_UPDATE: &str = "UPDATE verifications SET status = $1, reason = $2, attempts = $3,
        finished_at = $4, source = $5, has_call = $6, call_result = $7, call_complete = $8,
        billable_duration = $9, termination_currency = $10, termination_amount = $11,
        version = version + 1
     WHERE id = $12 AND version = $13";

/// Runs [`CAS_UPDATE`] for `v`; no row changed is `Conflict { constraint: "version" }`.
/// Writes back `v` if unchanged since read and queues `events`, in the caller's transaction.
async fn update_tx<C: GenericClient>(
    c: &C,
    v: &Verification,
    events: &[EventKind],
) -> Result<(), TxError> {
    cas_update(c, v).await?;
    let at = v.finished_at.unwrap_or(v.created_at);
    for kind in events {
        enqueue(c, v, *kind, at).await?;
    }
    Ok(())
}

async fn cas_update<C: GenericClient>(c: &C, v: &Verification) -> Result<(), TxError> {
    let p = VerificationParams::new(v)?;
    if exec(c, CAS_UPDATE, &p.cas()).await? == 0 {
        return Err(TxError::Fail(StoreError::Conflict {
            constraint: "version",
        }));
    }
    Ok(())
}

/// Queues `kind` for `v`, only if its application has a callback URL.
async fn enqueue<C: GenericClient>(
    c: &C,
    v: &Verification,
    kind: EventKind,
    now: OffsetDateTime,
) -> Result<(), tokio_postgres::Error> {
    exec(
        c,
        "INSERT INTO events (app, verification_id, kind, state, created_at, retry_from, next_attempt_at)
         SELECT $1::text, $2::uuid, $3::text, 'pending', $4::timestamptz, $4::timestamptz, $4::timestamptz
         WHERE EXISTS (SELECT 1 FROM applications WHERE key = $1::text AND callback_url IS NOT NULL)",
        &[&v.app, &v.id.0, &kind.as_str(), &now],
    )
    .await?;
    Ok(())
}

static UPSERT_APPLICATION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO applications ({APP_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (key) DO UPDATE SET name = excluded.name, secret = excluded.secret,
            callback_url = excluded.callback_url, min_auth = excluded.min_auth,
            allow_private_callbacks = excluded.allow_private_callbacks,
            callback_fail_open = excluded.callback_fail_open"
    )
});

static CLAIM_EVENTS: LazyLock<String> = LazyLock::new(|| {
    // `ranked`/`candidates`: the SQLite claim (due, at most $2 per application, oldest first),
    // over-fetched. `locked`: of those, the first $3 nobody else holds, locked (rows another
    // claimer took and committed meanwhile fail the re-checked `next_attempt_at`).
    format!(
        "WITH ranked AS (
            SELECT id, next_attempt_at,
                   row_number() OVER (PARTITION BY app ORDER BY next_attempt_at, id) AS n
            FROM events WHERE state = 'pending' AND next_attempt_at <= $1
         ), candidates AS (
            SELECT id FROM ranked WHERE n <= $2 ORDER BY next_attempt_at, id LIMIT $4
         ), locked AS MATERIALIZED (
            SELECT e.id, e.next_attempt_at FROM events e
            WHERE e.id IN (SELECT id FROM candidates)
              AND e.state = 'pending' AND e.next_attempt_at <= $1
            ORDER BY e.next_attempt_at, e.id
            LIMIT $3
            FOR UPDATE SKIP LOCKED
         ), claimed AS (
            UPDATE events e SET attempts = e.attempts + 1, next_attempt_at = $5
            FROM locked WHERE e.id = locked.id
            RETURNING {columns}, locked.next_attempt_at AS due_at
         )
         SELECT {EVENT_COLUMNS} FROM claimed ORDER BY due_at, id",
        columns = EVENT_COLUMNS
            .split(", ")
            .map(|c| format!("e.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
});

#[async_trait]
impl Store for PgStore {
    async fn insert_application(&self, app: &Application) -> StoreResult<()> {
        let client = self.client().await?;
        exec(
            &client,
            &format!(
                "INSERT INTO applications ({APP_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            ),
            &[
                &app.key,
                &app.name,
                &app.secret,
                &app.callback_url,
                &app.min_auth.as_str(),
                &app.created_at,
                &app.allow_private_callbacks,
                &app.callback_fail_open,
            ],
        )
        .await
        .map_err(other)?;
        Ok(())
    }

    async fn upsert_application(&self, app: &Application) -> StoreResult<()> {
        let client = self.client().await?;
        exec(
            &client,
            &UPSERT_APPLICATION,
            &[
                &app.key,
                &app.name,
                &app.secret,
                &app.callback_url,
                &app.min_auth.as_str(),
                &app.created_at,
                &app.allow_private_callbacks,
                &app.callback_fail_open,
            ],
        )
        .await
        .map_err(other)?;
        Ok(())
    }

    async fn application(&self, key: &str) -> StoreResult<Option<Application>> {
        let client = self.client().await?;
        let row = query_opt(
            &client,
            &format!("SELECT {APP_COLUMNS} FROM applications WHERE key = $1"),
            &[&key],
        )
        .await
        .map_err(other)?;
        Ok(row.as_ref().map(app_from_row).transpose()?)
    }

    async fn list_applications(&self) -> StoreResult<Vec<Application>> {
        let client = self.client().await?;
        let rows = query(
            &client,
            &format!("SELECT {APP_COLUMNS} FROM applications ORDER BY created_at, key"),
            &[],
        )
        .await
        .map_err(other)?;
        Ok(rows
            .iter()
            .map(app_from_row)
            .collect::<anyhow::Result<_>>()?)
    }

    async fn server_key(&self, name: &str, fresh: [u8; 32]) -> StoreResult<[u8; 32]> {
        let client = self.client().await?;
        // Two statements: the SELECT takes a new snapshot, so it sees a key that a racing
        // node committed while our INSERT waited on it.
        exec(
            &client,
            "INSERT INTO server_keys (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&name, &fresh.as_slice()],
        )
        .await
        .map_err(other)?;
        let value: Vec<u8> = query_one(
            &client,
            "SELECT value FROM server_keys WHERE name = $1",
            &[&name],
        )
        .await
        .map_err(other)?
        .try_get(0)
        .map_err(other)?;
        value
            .try_into()
            .map_err(|_| StoreError::Other(anyhow!("server key {name} is not 32 bytes")))
    }

    async fn insert_verification(
        &self,
        v: &Verification,
        events: &[EventKind],
    ) -> StoreResult<Vec<Verification>> {
        let p = VerificationParams::new(v)?;
        retrying("insert_verification", || {
            self.try_insert_verification(v, &p, events)
        })
        .await
    }

    async fn claim_jobs(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: usize,
    ) -> StoreResult<Vec<DeliveryJob>> {
        let client = self.client().await?;
        let rows = query(
            &client,
            "UPDATE delivery_jobs SET attempts = attempts + 1, next_attempt_at = $3
             WHERE id IN (
                SELECT id FROM delivery_jobs WHERE state = 'pending' AND next_attempt_at <= $1
                ORDER BY next_attempt_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)
             RETURNING id, verification_id, app, payload, route_index, attempts, next_attempt_at, created_at",
            &[&now, &self::limit(limit), &lease_until],
        )
        .await
        .map_err(other)?;
        let mut jobs = rows
            .iter()
            .map(|r| -> anyhow::Result<DeliveryJob> {
                Ok(DeliveryJob {
                    id: r.try_get(0)?,
                    verification_id: VerificationId(r.try_get(1)?),
                    app: r.try_get(2)?,
                    payload: r.try_get::<_, Option<Vec<u8>>>(3)?.unwrap_or_default(),
                    route_index: u32::try_from(r.try_get::<_, i64>(4)?)?,
                    attempts: u32::try_from(r.try_get::<_, i64>(5)?)?,
                    next_attempt_at: r.try_get(6)?,
                    created_at: r.try_get(7)?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        jobs.sort_by_key(|j| (j.created_at, j.id));
        Ok(jobs)
    }

    async fn finish_job(&self, id: i64) -> StoreResult<()> {
        let client = self.client().await?;
        exec(
            &client,
            "UPDATE delivery_jobs SET state = 'done', payload = NULL WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(other)?;
        Ok(())
    }

    async fn complete_job(&self, id: i64, a: &DeliveryAttempt) -> StoreResult<()> {
        retrying("complete_job", || async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            exec(
                &tx,
                "INSERT INTO delivery_attempts (verification_id, route, channel, message_id, outcome, at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[&a.verification_id.0, &a.route, &a.channel, &a.message_id, &a.outcome, &a.at],
            )
            .await?;
            exec(
                &tx,
                "UPDATE delivery_jobs SET state = 'done', payload = NULL WHERE id = $1",
                &[&id],
            )
            .await?;
            tx.commit().await?;
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
        let client = self.client().await?;
        exec(
            &client,
            "UPDATE delivery_jobs SET route_index = $2, next_attempt_at = $3 WHERE id = $1 AND state = 'pending'",
            &[&id, &i64::from(route_index), &next_attempt_at],
        )
        .await
        .map_err(other)?;
        Ok(())
    }

    async fn record_attempt(&self, a: &DeliveryAttempt) -> StoreResult<()> {
        let client = self.client().await?;
        exec(
            &client,
            "INSERT INTO delivery_attempts (verification_id, route, channel, message_id, outcome, at)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[&a.verification_id.0, &a.route, &a.channel, &a.message_id, &a.outcome, &a.at],
        )
        .await
        .map_err(other)?;
        Ok(())
    }

    async fn attempt_by_message(
        &self,
        channel: &str,
        message_id: &str,
    ) -> StoreResult<Option<DeliveryAttempt>> {
        let client = self.client().await?;
        let rows = query(
            &client,
            "SELECT verification_id, route, channel, message_id, outcome, at FROM delivery_attempts
             WHERE channel = $1 AND message_id = $2 ORDER BY id DESC LIMIT 1",
            &[&channel, &message_id],
        )
        .await
        .map_err(other)?;
        Ok(rows
            .iter()
            .map(attempt_row)
            .collect::<anyhow::Result<Vec<_>>>()?
            .pop())
    }

    async fn attempts(&self, verification_id: VerificationId) -> StoreResult<Vec<DeliveryAttempt>> {
        let client = self.client().await?;
        let rows = query(
            &client,
            "SELECT verification_id, route, channel, message_id, outcome, at FROM delivery_attempts
             WHERE verification_id = $1 ORDER BY id",
            &[&verification_id.0],
        )
        .await
        .map_err(other)?;
        Ok(rows
            .iter()
            .map(attempt_row)
            .collect::<anyhow::Result<Vec<_>>>()?)
    }

    async fn verification(
        &self,
        app: &str,
        id: VerificationId,
    ) -> StoreResult<Option<Verification>> {
        let client = self.client().await?;
        let rows = query(
            &client,
            &select_verification_sql("id = $1 AND app = $2"),
            &[&id.0, &app],
        )
        .await
        .map_err(other)?;
        Ok(verifications(&rows)?.pop())
    }

    async fn verification_by_id(&self, id: VerificationId) -> StoreResult<Option<Verification>> {
        let client = self.client().await?;
        let rows = query(&client, &select_verification_sql("id = $1"), &[&id.0])
            .await
            .map_err(other)?;
        Ok(verifications(&rows)?.pop())
    }

    async fn verification_by_reference(
        &self,
        app: &str,
        reference: &str,
    ) -> StoreResult<Option<Verification>> {
        let client = self.client().await?;
        let rows = query(
            &client,
            &select_verification_sql("app = $1 AND reference = $2"),
            &[&app, &reference],
        )
        .await
        .map_err(other)?;
        Ok(verifications(&rows)?.pop())
    }

    async fn verification_by_identity(
        &self,
        app: &str,
        method: Method,
        endpoint: &str,
    ) -> StoreResult<Option<Verification>> {
        let client = self.client().await?;
        let rows = query(
            &client,
            &select_verification_sql(
                "app = $1 AND method = $2 AND endpoint = $3
                 ORDER BY status = 'PENDING' DESC, created_at DESC, id DESC LIMIT 1",
            ),
            &[&app, &method.as_str(), &endpoint],
        )
        .await
        .map_err(other)?;
        Ok(verifications(&rows)?.pop())
    }

    async fn expire_due(
        &self,
        now: OffsetDateTime,
        limit: usize,
    ) -> StoreResult<Vec<Verification>> {
        retrying("expire_due", || async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            // SKIP LOCKED: sweepers on other nodes take other rows; a row someone is
            // updating right now is left for the next sweep.
            let mut due = verifications(
                &query(
                    &tx,
                    &select_verification_sql(
                        "status = 'PENDING' AND expires_at <= $1 ORDER BY expires_at LIMIT $2
                         FOR UPDATE SKIP LOCKED",
                    ),
                    &[&now, &self::limit(limit)],
                )
                .await?,
            )?;
            for v in &mut due {
                if v.expire_if_due(now) {
                    cas_update(&tx, v).await?;
                    v.version += 1;
                    enqueue(&tx, v, EventKind::Result, now).await?;
                }
            }
            tx.commit().await?;
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
        let client = self.client().await?;
        let wanted = self::limit(limit);
        let rows = query(
            &client,
            &CLAIM_EVENTS,
            &[
                &now,
                &self::limit(per_app),
                &wanted,
                &wanted.saturating_mul(CLAIM_OVERFETCH),
                &lease_until,
            ],
        )
        .await
        .map_err(other)?;
        Ok(events(&rows)?)
    }

    async fn event_delivered(&self, id: i64, now: OffsetDateTime) -> StoreResult<()> {
        let client = self.client().await?;
        exec(
            &client,
            "UPDATE events SET state = 'delivered', delivered_at = $2, last_error = NULL WHERE id = $1",
            &[&id, &now],
        )
        .await
        .map_err(other)?;
        Ok(())
    }

    async fn event_retry(
        &self,
        id: i64,
        next_attempt_at: OffsetDateTime,
        error: &str,
    ) -> StoreResult<()> {
        let client = self.client().await?;
        exec(
            &client,
            "UPDATE events SET state = 'pending', next_attempt_at = $2, last_error = $3 WHERE id = $1",
            &[&id, &next_attempt_at, &error],
        )
        .await
        .map_err(other)?;
        Ok(())
    }

    async fn event_dead(&self, id: i64, error: &str) -> StoreResult<()> {
        let client = self.client().await?;
        exec(
            &client,
            "UPDATE events SET state = 'dead', last_error = $2 WHERE id = $1",
            &[&id, &error],
        )
        .await
        .map_err(other)?;
        Ok(())
    }

    async fn list_events(
        &self,
        state: Option<EventState>,
        limit: usize,
    ) -> StoreResult<Vec<OutboxEvent>> {
        let client = self.client().await?;
        let rows = query(
            &client,
            &format!(
                "SELECT {EVENT_COLUMNS} FROM events
                 WHERE ($1::text IS NULL OR state = $1::text) ORDER BY id LIMIT $2"
            ),
            &[&state.map(EventState::as_str), &self::limit(limit)],
        )
        .await
        .map_err(other)?;
        Ok(events(&rows)?)
    }

    async fn redeliver_event(&self, id: i64, now: OffsetDateTime) -> StoreResult<bool> {
        let client = self.client().await?;
        let n = exec(
            &client,
            "UPDATE events SET state = 'pending', next_attempt_at = $2, retry_from = $2,
                delivered_at = NULL WHERE id = $1",
            &[&id, &now],
        )
        .await
        .map_err(other)?;
        Ok(n == 1)
    }

    async fn counter_sums(&self, ops: &[CounterOp], now: OffsetDateTime) -> StoreResult<Vec<i64>> {
        let client = self.client().await?;
        let mut sums = Vec::with_capacity(ops.len());
        for op in ops {
            sums.push(counter_sum(&client, op, now).await.map_err(other)?);
        }
        Ok(sums)
    }

    async fn guarded_write(
        &self,
        guard: &Guard,
        write: GuardedWrite<'_>,
        now: OffsetDateTime,
    ) -> StoreResult<GuardOutcome> {
        let params = match &write {
            GuardedWrite::Insert { verification, .. } => {
                Some(VerificationParams::new(verification)?)
            }
            _ => None,
        };
        retrying("guarded_write", || {
            self.try_guarded_write(guard, &write, params.as_ref(), now)
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
        retrying("take_token", || async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            // A new bucket starts full; then the row lock serializes every taker.
            exec(
                &tx,
                "INSERT INTO token_buckets (key, tokens, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (key) DO NOTHING",
                &[&key, &burst, &now],
            )
            .await?;
            let row = query_one(
                &tx,
                "SELECT tokens, updated_at FROM token_buckets WHERE key = $1 FOR UPDATE",
                &[&key],
            )
            .await?;
            let tokens: f64 = row.try_get(0)?;
            let at: OffsetDateTime = row.try_get(1)?;
            let elapsed = (micros(now) - micros(at)).max(0) as f64 / 1e6;
            let tokens = (tokens + elapsed * rate).min(burst);
            let (left, wait) = if tokens >= 1.0 {
                (tokens - 1.0, None)
            } else {
                let secs = if rate > 0.0 {
                    (1.0 - tokens) / rate
                } else {
                    3600.0
                };
                (tokens, Some(time::Duration::seconds_f64(secs)))
            };
            exec(
                &tx,
                "UPDATE token_buckets SET tokens = $2, updated_at = $3 WHERE key = $1",
                &[&key, &left, &now],
            )
            .await?;
            tx.commit().await?;
            Ok(wait)
        })
        .await
    }

    async fn set_block(&self, block: &Block) -> StoreResult<()> {
        let client = self.client().await?;
        exec(
            &client,
            "INSERT INTO blocks (key, until_at, reason, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (key) DO UPDATE SET until_at = GREATEST(blocks.until_at, excluded.until_at),
                reason = excluded.reason",
            &[&block.key, &block.until, &block.reason, &block.created_at],
        )
        .await
        .map_err(other)?;
        Ok(())
    }

    async fn active_block(&self, key: &str, now: OffsetDateTime) -> StoreResult<Option<Block>> {
        let client = self.client().await?;
        let row = query_opt(
            &client,
            &format!("SELECT {BLOCK_COLUMNS} FROM blocks WHERE key = $1 AND until_at > $2"),
            &[&key, &now],
        )
        .await
        .map_err(other)?;
        Ok(row.as_ref().map(block_from_row).transpose()?)
    }

    async fn list_blocks(&self, now: OffsetDateTime) -> StoreResult<Vec<Block>> {
        let client = self.client().await?;
        let rows = query(
            &client,
            &format!("SELECT {BLOCK_COLUMNS} FROM blocks WHERE until_at > $1 ORDER BY key"),
            &[&now],
        )
        .await
        .map_err(other)?;
        Ok(rows
            .iter()
            .map(block_from_row)
            .collect::<anyhow::Result<_>>()?)
    }

    async fn remove_block(&self, key: &str) -> StoreResult<bool> {
        let client = self.client().await?;
        let n = exec(&client, "DELETE FROM blocks WHERE key = $1", &[&key])
            .await
            .map_err(other)?;
        Ok(n == 1)
    }

    async fn purge(&self, now: OffsetDateTime, retention: time::Duration) -> StoreResult<u64> {
        retrying("purge", || async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let now_us = micros(now);
            let day = time::Duration::days(1);
            let cutoff = now - retention;
            exec(&tx, "DELETE FROM counters WHERE expires_at <= $1", &[&now_us]).await?;
            exec(&tx, "DELETE FROM blocks WHERE until_at <= $1", &[&now]).await?;
            // Nothing writes gates any more; this empties what older versions left.
            exec(&tx, "DELETE FROM gates WHERE last_at <= $1", &[&(now - day)]).await?;
            exec(
                &tx,
                "DELETE FROM token_buckets WHERE updated_at <= $1",
                &[&(now - day)],
            )
            .await?;
            exec(
                &tx,
                "DELETE FROM events WHERE state <> 'pending' AND verification_id IN
                    (SELECT id FROM verifications WHERE finished_at IS NOT NULL AND finished_at < $1)",
                &[&cutoff],
            )
            .await?;
            for table in ["delivery_attempts", "delivery_jobs"] {
                exec(
                    &tx,
                    &format!(
                        "DELETE FROM {table} WHERE verification_id IN
                            (SELECT id FROM verifications WHERE finished_at IS NOT NULL AND finished_at < $1)"
                    ),
                    &[&cutoff],
                )
                .await?;
            }
            let purged = exec(
                &tx,
                "DELETE FROM verifications WHERE finished_at IS NOT NULL AND finished_at < $1
                 AND NOT EXISTS (SELECT 1 FROM events e WHERE e.verification_id = verifications.id)",
                &[&cutoff],
            )
            .await?;
            tx.commit().await?;
            Ok(purged)
        })
        .await
    }

    async fn ping(&self) -> StoreResult<()> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await.map_err(other)?;
        Ok(())
    }
}
