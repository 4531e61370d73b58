//! The shared conformance suite against a fresh SQLite file per story, plus what only a
//! file-backed store can show: data survives closing and reopening.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a failed unwrap is a failed test"
)]

use std::sync::Arc;

use verifyd_store::Store;
use verifyd_store::conformance::{T0, sms};
use verifyd_store_sqlite::{SqliteOptions, SqliteStore};

async fn fresh_store() -> Arc<dyn Store> {
    // The directory must outlive the store; leak it for the test's lifetime.
    let dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
    Arc::new(SqliteStore::open(dir.path().join("t.db"), SqliteOptions::default()).unwrap())
}

verifyd_store::conformance_tests!(fresh_store);

#[tokio::test]
async fn an_answered_insert_is_on_disk_when_the_store_is_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("durable.db");
    let v = sms("app", "+46700000099", 99);
    {
        let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        store.insert_verification(&v, &[]).await.unwrap();
    }
    let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
    let back = store.verification("app", v.id).await.unwrap().unwrap();
    assert_eq!(back, v);
    assert_eq!(back.created_at, T0);
}
