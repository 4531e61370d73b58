//! Callbacks checked by the official validator: a customer backend in Node validates every
//! callback with `@sinch/verification@1.4.0`'s `validateAuthenticationHeader` and answers
//! allow / deny / overrides; verifyd runs as the real binary with its delivery worker, is
//! killed with events still queued, and delivers them after the restart.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a failed unwrap is a failed test"
)]

mod common;

use std::path::PathBuf;

use common::{KEY, NodeReceiver, SECRET, Server, free_port, signed};
use reqwest::Method;
use serde_json::{Value, json};
use verifyd_testkit::inbox_code;

fn config(dir: &std::path::Path, port: u16, callback_url: &str) -> PathBuf {
    let path = dir.join("verifyd.toml");
    std::fs::write(
        &path,
        format!(
            r#"
listen = "127.0.0.1:{port}"
database_url = "sqlite://{}"
[callbacks]
retry_base_ms = 100
retry_max_seconds = 1
poll_interval_ms = 100
[[applications]]
name = "backend"
key = "{KEY}"
secret = "{SECRET}"
callback_url = "{callback_url}"
"#,
            dir.join("verifyd.db").display()
        ),
    )
    .unwrap();
    path
}

async fn start(
    http: &reqwest::Client,
    base: &str,
    method: &str,
    number: &str,
) -> reqwest::Response {
    signed(http, base, Method::POST, "/verification/v1/verifications",
        Some(json!({"identity": {"type": "number", "endpoint": number}, "method": method, "custom": "from-test"})),
        KEY, SECRET).await
}

async fn report(http: &reqwest::Client, base: &str, id: &str, body: Value) -> Value {
    signed(
        http,
        base,
        Method::PUT,
        &format!("/verification/v1/verifications/id/{id}"),
        Some(body),
        KEY,
        SECRET,
    )
    .await
    .json()
    .await
    .unwrap()
}

#[tokio::test]
async fn the_official_node_validator_accepts_every_callback_and_queued_events_survive_a_restart() {
    let receiver = NodeReceiver::start();
    let http = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(dir.path(), port, &receiver.callback_url());
    let cfg_arg = cfg.to_str().unwrap().to_string();

    // Phase 1: a node without the delivery worker, so result events stay queued.
    let env = [("VERIFYD_CALLBACKS__WORKER", "false".to_string())];
    let server = Server::spawn(dir.path(), &["--config", &cfg_arg], &env, port);
    receiver
        .control(&http, "script", json!({"request": [
            {"body": {"action": "allow"}},
            {"body": {"action": "deny"}},
            {"body": {"action": "allow", "sms": {"code": "1357"}}},
            {"body": {"action": "allow", "callout": {"code": 2468, "speech": {"locale": "sv-SE"}}}},
            {"body": {"action": "allow", "whatsapp": {"codeType": "Alpha"}}},
            {"body": {"action": "allow", "flashCall": {"dialTimeout": 15}}}
        ]}))
        .await;
    let url = server.url.clone();
    // allow → SUCCESSFUL
    let a: Value = start(&http, &url, "sms", "+46700001001")
        .await
        .json()
        .await
        .unwrap();
    let code = inbox_code(&http, &url, "+46700001001").await;
    assert_eq!(
        report(
            &http,
            &url,
            a["id"].as_str().unwrap(),
            json!({"method": "sms", "sms": {"code": code}})
        )
        .await["status"],
        "SUCCESSFUL"
    );
    // deny → 403
    let denied = start(&http, &url, "sms", "+46700001002").await;
    assert_eq!(denied.status(), 403);
    assert_eq!(denied.json::<Value>().await.unwrap()["errorCode"], 40300);
    // sms.code override
    let c: Value = start(&http, &url, "sms", "+46700001003")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(inbox_code(&http, &url, "+46700001003").await, "1357");
    assert_eq!(
        report(
            &http,
            &url,
            c["id"].as_str().unwrap(),
            json!({"method": "sms", "sms": {"code": "1357"}})
        )
        .await["status"],
        "SUCCESSFUL"
    );
    // callout.code as a JSON number
    let d: Value = start(&http, &url, "callout", "+46700001004")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(inbox_code(&http, &url, "+46700001004").await, "2468");
    assert_eq!(
        report(
            &http,
            &url,
            d["id"].as_str().unwrap(),
            json!({"method": "callout", "callout": {"code": "2468"}})
        )
        .await["status"],
        "SUCCESSFUL"
    );
    // whatsapp.codeType override
    let e: Value = start(&http, &url, "whatsapp", "+46700001005")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(e["whatsapp"]["codeType"], "Alpha");
    // flashcall, then a wrong CLI three times → FAIL
    let f: Value = start(&http, &url, "flashcall", "+46700001006")
        .await
        .json()
        .await
        .unwrap();
    for _ in 0..3 {
        report(
            &http,
            &url,
            f["id"].as_str().unwrap(),
            json!({"method": "flashcall", "flashCall": {"cli": "+10000000000"}}),
        )
        .await;
    }
    let request_events = receiver.events(&http, 6).await;
    assert_eq!(
        request_events.len(),
        6,
        "only the six request events so far: the worker is off"
    );
    server.kill_hard();

    // Phase 2: the restarted node (worker on) delivers everything that was queued; the
    // receiver refuses the first two deliveries, which are retried.
    receiver
        .control(
            &http,
            "script",
            json!({"other": [{"status": 503, "headers": {"Retry-After": "0"}}, {"status": 500}]}),
        )
        .await;
    let server = Server::spawn(dir.path(), &["--config", &cfg_arg], &[], port);
    // 4 results (a, c, d, f; the denied one too → 5) + 2 SMS-delivered (a, c) + 2 refused attempts.
    let all = receiver.events(&http, 6 + 5 + 2 + 2).await;
    drop(server);
    assert!(
        all.iter().all(|e| e["valid"] == true),
        "the official validator rejected a callback: {all:#?}"
    );
    assert!(all.iter().all(|e| {
        e["headers"]["authorization"]
            .as_str()
            .unwrap()
            .starts_with("application ")
    }));
    let accepted: Vec<&Value> = all[6..].iter().skip(2).collect();
    let results: Vec<(String, String)> = all[6..]
        .iter()
        .filter(|e| e["event"] == "VerificationResultEvent")
        .map(|e| {
            (
                e["json"]["id"].as_str().unwrap().to_string(),
                e["json"]["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let id = |v: &Value| v["id"].as_str().unwrap().to_string();
    for (vid, status) in [
        (id(&a), "SUCCESSFUL"),
        (id(&c), "SUCCESSFUL"),
        (id(&d), "SUCCESSFUL"),
        (id(&f), "FAIL"),
    ] {
        assert!(
            results.contains(&(vid.clone(), status.to_string())),
            "{vid} {status} in {results:?}"
        );
    }
    assert!(results.iter().any(|(_, s)| s == "DENIED"));
    let delivered: Vec<&&Value> = accepted
        .iter()
        .filter(|e| e["event"] == "VerificationSmsDeliveredEvent")
        .collect();
    assert_eq!(delivered.len(), 2);
    assert!(
        all.iter()
            .all(|e| e["json"]["custom"] == "from-test" || e["event"] != "VerificationResultEvent")
    );
}
