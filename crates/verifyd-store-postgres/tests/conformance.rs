//! The shared conformance suite against a fresh PostgreSQL database per story, plus what
//! only a shared server can show: migrations are idempotent and safe when nodes start
//! together, and several nodes (separate pools) working on one database stay consistent.
//!
//! Needs PostgreSQL: `VERIFYD_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`, a URL, not a `key=value` string) must name
//! a role that may create databases. These tests **fail**, never skip, when it is
//! unreachable. Each test creates `verifyd_t_<unix seconds>_<random>`; databases older than
//! 15 minutes are dropped by the next run (a test cannot drop its own: the store outlives it).

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a failed unwrap is a failed test"
)]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration as StdDuration, SystemTime, UNIX_EPOCH};

use time::Duration;
use tokio_postgres::NoTls;
use verifyd_core::{Method, Reason, Status};
use verifyd_store::conformance::{T0, sms};
use verifyd_store::{Application, EventKind, MinAuth, Store};
use verifyd_store_postgres::{PgOptions, PgStore};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const PREFIX: &str = "verifyd_t_";
/// Leftover test databases older than this (seconds) are dropped; a run takes seconds.
const STALE_SECS: u64 = 900;

fn admin_url() -> String {
    std::env::var("VERIFYD_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.into())
}

/// `url` with its database replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let host_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[host_start..].find('/') {
        Some(i) => &base[..host_start + i],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{db}?{query}"),
        None => format!("{base}/{db}"),
    }
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn admin() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&admin_url(), NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is unreachable at VERIFYD_TEST_POSTGRES_URL (default {DEFAULT_URL}): \
                 {:#}. Start it; these tests do not skip.",
                anyhow::Error::from(e)
            )
        });
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Drops test databases that earlier runs left behind (once per test process).
async fn sweep_stale_databases(admin: &tokio_postgres::Client) {
    static SWEPT: AtomicBool = AtomicBool::new(false);
    if SWEPT.swap(true, Ordering::SeqCst) {
        return;
    }
    let rows = admin
        .query(
            "SELECT datname FROM pg_database WHERE starts_with(datname, $1)",
            &[&PREFIX],
        )
        .await
        .unwrap();
    let cutoff = unix_secs().saturating_sub(STALE_SECS);
    for row in rows {
        let name: String = row.get(0);
        let created = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        if created.is_some_and(|created| created < cutoff) {
            // Best effort: one still in use stays for a later run.
            let _ = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\""))
                .await;
        }
    }
}

/// Creates an empty database and returns its URL.
async fn create_database() -> String {
    let admin = admin().await;
    sweep_stale_databases(&admin).await;
    let name = format!("{PREFIX}{}_{}", unix_secs(), uuid::Uuid::new_v4().simple());
    admin
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap();
    with_database(&admin_url(), &name)
}

fn options(migrate: bool) -> PgOptions {
    PgOptions {
        max_connections: 8,
        migrate,
        ..PgOptions::default()
    }
}

async fn fresh_store() -> Arc<dyn Store> {
    let url = create_database().await;
    Arc::new(PgStore::connect(&url, options(true)).await.unwrap())
}

verifyd_store::conformance_tests!(fresh_store);

/// Two stores on one fresh database: two verifyd nodes.
async fn two_nodes() -> (Arc<dyn Store>, Arc<dyn Store>) {
    let url = create_database().await;
    let a = PgStore::connect(&url, options(true)).await.unwrap();
    let b = PgStore::connect(&url, options(false)).await.unwrap();
    (Arc::new(a), Arc::new(b))
}

fn app_with_callback(key: &str) -> Application {
    Application {
        key: key.into(),
        name: key.into(),
        secret: "YXBwU2VjcmV0".into(),
        callback_url: Some("https://example.com/callback".into()),
        min_auth: MinAuth::Basic,
        allow_private_callbacks: false,
        callback_fail_open: false,
        created_at: T0,
    }
}

async fn applied_migrations(url: &str) -> Vec<i32> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
        .query(
            "SELECT version FROM verifyd_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_idempotent() {
    let url = create_database().await;
    let store = PgStore::connect(&url, options(false)).await.unwrap();
    let version = store.schema_version().await.unwrap();
    assert_eq!(
        version.applied, None,
        "connect without migrate leaves the database alone"
    );
    let latest = version.latest;
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.schema_version().await.unwrap().applied, Some(latest));
    // A node that migrates on connect finds nothing to do.
    PgStore::connect(&url, options(true)).await.unwrap();
    assert_eq!(
        applied_migrations(&url).await,
        (1..=latest).collect::<Vec<_>>()
    );
    store
        .insert_application(&app_with_callback("a"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_at_once_migrate_once() {
    let url = create_database().await;
    // Six nodes connect (and so migrate) at the same moment, and three more call migrate()
    // on stores that connected without migrating.
    let idle: Vec<PgStore> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(PgStore::connect(&url, options(false)).await.unwrap());
        }
        v
    };
    let mut handles = Vec::new();
    for _ in 0..6 {
        let url = url.clone();
        handles.push(tokio::spawn(async move {
            PgStore::connect(&url, options(true)).await.map(|_| ())
        }));
    }
    for store in idle {
        handles.push(tokio::spawn(async move { store.migrate().await }));
    }
    for h in handles {
        h.await.unwrap().unwrap();
    }
    let store = PgStore::connect(&url, options(false)).await.unwrap();
    let version = store.schema_version().await.unwrap();
    let latest = version.latest;
    assert_eq!(version.applied, Some(latest));
    assert_eq!(
        applied_migrations(&url).await,
        (1..=latest).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_migration_is_refused() {
    let url = create_database().await;
    let store = PgStore::connect(&url, options(true)).await.unwrap();
    let (client, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
        .execute(
            "UPDATE verifyd_migrations SET checksum = '\\x00' WHERE version = 1",
            &[],
        )
        .await
        .unwrap();
    let err = store.migrate().await.unwrap_err();
    assert!(format!("{err:#}").contains("differs"), "{err:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_servers_bad_urls_and_tls_fail_to_connect() {
    let options = PgOptions {
        connect_timeout: StdDuration::from_secs(2),
        ..options(true)
    };
    assert!(
        PgStore::connect("postgres://postgres@127.0.0.1:1/postgres", options.clone())
            .await
            .is_err()
    );
    assert!(
        PgStore::connect("not a url", options.clone())
            .await
            .is_err()
    );
    // No TLS support yet: asking for it fails instead of silently connecting in the clear.
    let url = with_database(&admin_url(), "postgres");
    let sep = if url.contains('?') { '&' } else { '?' };
    assert!(
        PgStore::connect(&format!("{url}{sep}sslmode=require"), options)
            .await
            .is_err()
    );
}

/// Starts racing on two nodes: one PENDING survives, every other one is ABORTED with
/// exactly one result event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_starts_leave_exactly_one_pending() {
    let (a, b) = two_nodes().await;
    a.insert_application(&app_with_callback("race"))
        .await
        .unwrap();
    let handles: Vec<_> = (0..24u64)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let v = sms("race", "+46700000077", 500 + i);
                store.insert_verification(&v, &[]).await.map(|_| v.id)
            })
        })
        .collect();
    let mut ids = Vec::new();
    for h in handles {
        ids.push(h.await.unwrap().unwrap());
    }
    let mut pending = 0;
    for id in &ids {
        let v = a.verification("race", *id).await.unwrap().unwrap();
        match v.status {
            Status::Pending => pending += 1,
            Status::Aborted => assert_eq!(v.version, 1),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(pending, 1);
    let events = b.list_events(None, 100).await.unwrap();
    assert_eq!(events.len(), ids.len() - 1);
    let distinct: HashSet<_> = events.iter().map(|e| e.verification_id).collect();
    assert_eq!(
        distinct.len(),
        events.len(),
        "one result event per aborted start"
    );
}

/// Claimers on two nodes: every event handed out exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_claiming_never_share_an_event() {
    let (a, b) = two_nodes().await;
    a.insert_application(&app_with_callback("q")).await.unwrap();
    for i in 0..60u64 {
        let mut v = sms("q", &format!("+4670001{i:04}"), 7000 + i);
        v.deny(Reason::Fraud, T0);
        a.insert_verification(&v, &[EventKind::Result])
            .await
            .unwrap();
    }
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut empty = 0;
                // Keep going a little after an empty batch: the other node may hold the
                // remaining rows locked for a moment.
                while empty < 3 {
                    let batch = store
                        .claim_events(T0, T0 + Duration::minutes(5), 4, 100)
                        .await
                        .unwrap();
                    if batch.is_empty() {
                        empty += 1;
                        tokio::time::sleep(StdDuration::from_millis(10)).await;
                    }
                    got.extend(batch.into_iter().map(|e| e.id));
                }
                got
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let total = all.len();
    let distinct: HashSet<_> = all.into_iter().collect();
    assert_eq!(distinct.len(), total, "an event was handed out twice");
    assert_eq!(total, 60);
}

/// Expiry sweepers on two nodes: each due verification fails once, with one event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_sweeping_expire_each_verification_once() {
    let (a, b) = two_nodes().await;
    a.insert_application(&app_with_callback("s")).await.unwrap();
    for i in 0..30u64 {
        a.insert_verification(&sms("s", &format!("+4670002{i:04}"), 8000 + i), &[])
            .await
            .unwrap();
    }
    let now = T0 + Duration::minutes(10);
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut empty = 0;
                while empty < 3 {
                    let batch = store.expire_due(now, 4).await.unwrap();
                    if batch.is_empty() {
                        empty += 1;
                        tokio::time::sleep(StdDuration::from_millis(10)).await;
                    }
                    got.extend(batch.into_iter().map(|v| (v.id, v.status, v.version)));
                }
                got
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    assert_eq!(all.len(), 30);
    assert!(all.iter().all(|(_, s, v)| *s == Status::Fail && *v == 1));
    assert_eq!(
        all.iter().map(|(id, ..)| *id).collect::<HashSet<_>>().len(),
        30
    );
    assert_eq!(b.list_events(None, 100).await.unwrap().len(), 30);
}

/// Column types hold the whole domain range: u32 counters, microsecond instants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_values_round_trip() {
    let store = fresh_store().await;
    let mut v = sms("app", "+46700000088", 88);
    v.method = Method::Callout;
    v.attempts = u32::MAX - 1;
    v.max_attempts = u32::MAX;
    v.created_at = T0 - Duration::days(365 * 60) + Duration::microseconds(1);
    v.expires_at = T0 + Duration::days(365 * 100) - Duration::microseconds(1);
    v.call = Some(verifyd_core::CallInfo {
        result: None,
        complete: false,
        billable_duration: u32::MAX,
        termination_price: None,
    });
    store.insert_verification(&v, &[]).await.unwrap();
    assert_eq!(store.verification("app", v.id).await.unwrap(), Some(v));
}
