//! Three verifyd nodes on one PostgreSQL database: starts on one node, reports on another,
//! status on a third; races between nodes; and a load run during which one node is killed
//! with `kill -9`. Callbacks go to the Node receiver that checks every signature with the
//! official validator.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a failed unwrap is a failed test"
)]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{KEY, NodeReceiver, SECRET, Server, free_port, signed};
use rand::Rng;
use reqwest::Method;
use serde_json::{Value, json};
use tokio_postgres::NoTls;
use verifyd_testkit::Smsc;

const CODE: &str = "424242";

fn admin_url() -> String {
    std::env::var("VERIFYD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh database; returns its URL.
async fn fresh_database() -> String {
    let admin = admin_url();
    let (client, conn) = tokio_postgres::connect(&admin, NoTls)
        .await
        .expect("PostgreSQL on 127.0.0.1:5432 (scripts/test.sh starts it)");
    tokio::spawn(conn);
    let name = format!("verifyd_mn_{}", uuid::Uuid::new_v4().simple());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let base = admin.rsplit_once('/').unwrap().0;
    format!("{base}/{name}")
}

fn config(dir: &Path, port: u16, db: &str, callback: &str, smsc: &str) -> PathBuf {
    let path = dir.join(format!("node-{port}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"
listen = "127.0.0.1:{port}"
database_url = "{db}"
[callbacks]
delivery_timeout_ms = 2000
retry_base_ms = 100
retry_max_seconds = 1
poll_interval_ms = 100
request_timeout_ms = 10000
[delivery]
timeout_ms = 2000
lease_seconds = 3
[fraud]
min_start_interval_ms = 0
starts_per_number_hour = 0
starts_per_number_day = 0
[fraud.pumping]
enabled = false
[[channels.smpp]]
name = "smpp:primary"
url = "{smsc}"
system_id = "verifyd"
password = "secret"
source = "Verifyd"
[[routes]]
name = "smsc"
methods = ["sms"]
channel = "smpp:primary"
[[applications]]
name = "backend"
key = "{KEY}"
secret = "{SECRET}"
callback_url = "{callback}/webhooks/verification"
"#
        ),
    )
    .unwrap();
    path
}

async fn start(http: &reqwest::Client, node: &str, number: &str) -> Result<Value, String> {
    let body = json!({"identity": {"type": "number", "endpoint": number}, "method": "sms"});
    let r = signed_or_err(
        http,
        node,
        Method::POST,
        "/verification/v1/verifications",
        Some(body),
    )
    .await?;
    if r.0 != 200 {
        return Err(format!("HTTP {}: {}", r.0, r.1));
    }
    Ok(r.1)
}

async fn report(http: &reqwest::Client, node: &str, id: &str, code: &str) -> Result<Value, String> {
    let body = json!({"method": "sms", "sms": {"code": code}});
    let r = signed_or_err(
        http,
        node,
        Method::PUT,
        &format!("/verification/v1/verifications/id/{id}"),
        Some(body),
    )
    .await?;
    if r.0 != 200 {
        return Err(format!("HTTP {}: {}", r.0, r.1));
    }
    Ok(r.1)
}

async fn status(http: &reqwest::Client, node: &str, id: &str) -> Value {
    signed(
        http,
        node,
        Method::GET,
        &format!("/verification/v1/verifications/id/{id}"),
        None,
        KEY,
        SECRET,
    )
    .await
    .json()
    .await
    .unwrap()
}

/// A signed request that reports transport errors instead of panicking (nodes die here).
async fn signed_or_err(
    http: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value), String> {
    let body = body
        .map(|b| serde_json::to_vec(&b).unwrap())
        .unwrap_or_default();
    let ts = common::now_rfc3339();
    let auth = verifyd_api::signing::SignedRequest {
        verb: method.as_str(),
        body: &body,
        content_type: "application/json",
        timestamp: &ts,
        resource: path,
    }
    .authorization(
        "Application",
        KEY,
        &verifyd_api::signing::decode_secret(SECRET).unwrap(),
    );
    let r = http
        .request(method, format!("{base}{path}"))
        .header("authorization", auth)
        .header("x-timestamp", ts)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let v = r.json().await.map_err(|e| e.to_string())?;
    Ok((status, v))
}

async fn pg(db: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(db, NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_one_database_and_survive_losing_one() {
    let db = fresh_database().await;
    let receiver = NodeReceiver::start();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    // Every request event is answered with a fixed code, so any node can complete any
    // verification even after the node that sent it (and its in-memory dev inbox) is gone.
    let answers: Vec<Value> = (0..3000)
        .map(|_| json!({"body": {"action": "allow", "sms": {"code": CODE}}}))
        .collect();
    receiver
        .control(&http, "script", json!({"request": answers}))
        .await;

    let dir = tempfile::tempdir().unwrap();
    // The node-smpp SMSC every node binds to; its event log shows what reached it.
    let mut smsc = Smsc::start(&[]).await;
    let ports = [free_port(), free_port(), free_port()];
    let mut nodes = Vec::new();
    for port in ports {
        let cfg = config(dir.path(), port, &db, &receiver.base, &smsc.url());
        nodes.push(Some(Server::spawn(
            dir.path(),
            &["--config", cfg.to_str().unwrap()],
            &[],
            port,
        )));
    }
    let urls: Vec<String> = nodes
        .iter()
        .map(|n| n.as_ref().unwrap().url.clone())
        .collect();

    // Start on node 1, report on node 2, status on node 3.
    let v = start(&http, &urls[0], "+46700003001").await.unwrap();
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(
        report(&http, &urls[1], &id, CODE).await.unwrap()["status"],
        "SUCCESSFUL"
    );
    assert_eq!(status(&http, &urls[2], &id).await["status"], "SUCCESSFUL");

    // Two right reports on two nodes at once: one transition, one result event.
    let v = start(&http, &urls[2], "+46700003002").await.unwrap();
    let race_id = v["id"].as_str().unwrap().to_string();
    let (a, b) = tokio::join!(
        report(&http, &urls[0], &race_id, CODE),
        report(&http, &urls[1], &race_id, CODE)
    );
    assert_eq!(
        (a.unwrap()["status"].clone(), b.unwrap()["status"].clone()),
        (json!("SUCCESSFUL"), json!("SUCCESSFUL"))
    );

    // Wrong codes on three nodes at once: the attempt limit (3) holds.
    let v = start(&http, &urls[0], "+46700003003").await.unwrap();
    let brute_id = v["id"].as_str().unwrap().to_string();
    let guesses = futures::future::join_all((0..6).map(|i| {
        let (http, node, id) = (&http, &urls[i % 3], &brute_id);
        async move { report(http, node, id, &format!("00000{i}")).await }
    }))
    .await;
    assert!(
        guesses
            .iter()
            .all(|g| g.as_ref().unwrap()["status"] == "FAIL")
    );
    let client = pg(&db).await;
    let row = client
        .query_one(
            "SELECT attempts, status FROM verifications WHERE id = $1",
            &[&uuid::Uuid::parse_str(&brute_id).unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, String>(1)),
        (3, "FAIL".to_string())
    );

    // Two starts for one number on two nodes at once: exactly one stays PENDING.
    let (x, y) = tokio::join!(
        start(&http, &urls[0], "+46700003004"),
        start(&http, &urls[1], "+46700003004")
    );
    x.unwrap();
    y.unwrap();
    let pending: i64 = client
        .query_one("SELECT count(*) FROM verifications WHERE endpoint = '+46700003004' AND status = 'PENDING'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(pending, 1);

    // Load with a kill -9 in the middle: clients start and report on random nodes, retrying
    // on another node when theirs is gone.
    let alive = Arc::new([
        AtomicBool::new(true),
        AtomicBool::new(true),
        AtomicBool::new(true),
    ]);
    let answered: Arc<tokio::sync::Mutex<HashMap<String, bool>>> = Arc::default();
    let workers: Vec<_> = (0..6)
        .map(|w| {
            let (http, urls, alive, answered) =
                (http.clone(), urls.clone(), alive.clone(), answered.clone());
            tokio::spawn(async move {
                for i in 0..25 {
                    let number = format!("+467001{w:02}{i:04}");
                    let pick = || loop {
                        let n = rand::rng().random_range(0..3);
                        if alive[n].load(Ordering::SeqCst) {
                            return n;
                        }
                    };
                    let Ok(v) = start(&http, &urls[pick()], &number).await else {
                        continue;
                    };
                    let id = v["id"].as_str().unwrap().to_string();
                    answered.lock().await.insert(id.clone(), false);
                    for _ in 0..5 {
                        if let Ok(r) = report(&http, &urls[pick()], &id, CODE).await {
                            assert_eq!(r["status"], "SUCCESSFUL");
                            answered.lock().await.insert(id.clone(), true);
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    // Let the load run, then kill node 2 hard.
    loop {
        if answered.lock().await.len() >= 40 {
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // At the same moment the SMSC drops every bind: the surviving nodes must bind again.
    let binds_before = smsc
        .events()
        .iter()
        .filter(|e| e["ev"] == "bind_transceiver" && e["status"] == 0)
        .count();
    alive[1].store(false, Ordering::SeqCst);
    nodes[1].take().unwrap().kill_hard();
    smsc.control(&json!({"cmd": "drop"})).await;
    for w in workers {
        w.await.unwrap();
    }
    let answered = answered.lock().await.clone();
    assert!(answered.len() >= 100, "load ran: {}", answered.len());
    // Every answered start is still there; the few whose report died with node 2 complete now.
    for (id, done) in &answered {
        if !done {
            assert_eq!(
                report(&http, &urls[2], id, CODE).await.unwrap()["status"],
                "SUCCESSFUL"
            );
        }
        assert_eq!(
            status(&http, &urls[0], id).await["status"],
            "SUCCESSFUL",
            "{id}"
        );
    }
    // Every completed verification's result event arrives (at least once), signed validly.
    let expected: Vec<String> = answered
        .keys()
        .cloned()
        .chain([id.clone(), race_id.clone()])
        .collect();
    let mut results: HashMap<String, usize> = HashMap::new();
    // Events a killed node had claimed come back when their lease (5 s here) ends.
    for _ in 0..240 {
        let events = receiver.events(&http, 0).await;
        assert!(
            events.iter().all(|e| e["valid"] == true),
            "a callback failed the official validator"
        );
        results.clear();
        for e in events
            .iter()
            .filter(|e| e["event"] == "VerificationResultEvent")
        {
            *results
                .entry(e["json"]["id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        if expected.iter().all(|id| results.contains_key(id)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    for id in &expected {
        assert!(results.contains_key(id), "result event for {id} lost");
    }
    assert_eq!(results[&race_id], 1, "one transition, one result event");
    // Duplicates are possible only for deliveries in flight on the killed node.
    let duplicates: usize = results.values().map(|n| n - 1).sum();
    assert!(duplicates <= 32, "{duplicates} duplicate deliveries");

    // No delivery job is left behind: the killed node's claimed jobs come back after their
    // lease, and the retries of starts made while no bind was up end (sent, or dropped because
    // the verification was already completed with the code the request event returned).
    let mut pending: i64 = -1;
    for _ in 0..120 {
        pending = client
            .query_one(
                "SELECT count(*) FROM delivery_jobs WHERE state = 'pending'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if pending == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(pending, 0, "delivery jobs still pending");
    // The surviving nodes bound again: new starts on both reach the SMSC.
    let mut numbers = Vec::new();
    for (n, node) in [&urls[0], &urls[2]].into_iter().enumerate() {
        for i in 0..3 {
            let number = format!("+4670020{n}{i:04}");
            start(&http, node, &number).await.unwrap();
            numbers.push(number.trim_start_matches('+').to_string());
        }
    }
    let mut missing = numbers.clone();
    for _ in 0..120 {
        let events = smsc.events();
        missing.retain(|n| {
            !events.iter().any(|e| {
                e["ev"] == "submit_sm" && e["status"] == 0 && e["dst"].as_str() == Some(n.as_str())
            })
        });
        if missing.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(missing.is_empty(), "never reached the SMSC: {missing:?}");
    let events = smsc.events();
    let binds_after = events
        .iter()
        .filter(|e| e["ev"] == "bind_transceiver" && e["status"] == 0)
        .count();
    assert!(
        binds_after > binds_before,
        "no node bound again after the drop ({binds_before} binds before, {binds_after} in all)"
    );
}
