//! SMS over SMPP through verifyd, against the real SMSC peer (node `smpp` 0.5.1, see
//! `e2e/smsc/smsc.js`): the code reaches the SMSC, delivery receipts reach the verification,
//! undeliverable numbers end in `SMS delivery failure`, and when the SMSC drops the
//! connection mid-traffic nothing is lost and nothing is submitted twice.

use std::collections::HashMap;

use serde_json::{Value, json};
use time::Duration;
use verifyd_testkit::Smsc;

use crate::helpers::{TestApp, outcome};

/// The SMSC's `submit_sm` events that it accepted (status 0) for `number`.
fn accepted_to(smsc: &Smsc, number: &str) -> Vec<Value> {
    let digits = number.trim_start_matches('+');
    smsc.events_of("submit_sm")
        .into_iter()
        .filter(|e| e["dst"] == digits && e["status"] == 0)
        .collect()
}

async fn spawn(smsc: &Smsc) -> TestApp {
    let app = TestApp::spawn_with(&format!(
        r#"
admin_token = "adm"
[fraud]
min_start_interval_ms = 0
[fraud.pumping]
enabled = false
[delivery]
max_retries = 10
[[channels.smpp]]
name = "smsc"
url = "{}"
system_id = "verifyd"
password = "secret"
source = "Verifyd"
[[routes]]
name = "smpp"
methods = ["sms"]
channel = "smsc"
"#,
        smsc.url()
    ))
    .await;
    // Wait until the bind is up (the channel connects in the background).
    for _ in 0..200 {
        let r: Value = app
            .http
            .get(format!("{}/readyz", app.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if r["status"] == "ready" && !smsc.events_of("bind_transceiver").is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    app
}

async fn attempts(app: &TestApp, id: &str) -> Vec<String> {
    app.attempts(id).await.iter().map(outcome).collect()
}

#[tokio::test]
async fn the_code_goes_out_over_smpp_and_receipts_come_back() {
    let smsc = Smsc::start(&[]).await;
    let app = spawn(&smsc).await;
    let v = app.start_ok("sms", "+46700006001").await;
    let id = v["id"].as_str().unwrap();
    let sent = accepted_to(&smsc, "+46700006001");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["src"], "Verifyd");
    assert_eq!(sent[0]["registered_delivery"], 1);
    let text = sent[0]["text"].as_str().unwrap();
    let code: String = text.chars().filter(char::is_ascii_digit).collect();
    assert_eq!(text, format!("Your verification code is {code}."));
    // The DELIVRD receipt arrives ~100 ms later and is recorded on the verification.
    for _ in 0..200 {
        if attempts(&app, id).await.contains(&"delivered".to_string()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(attempts(&app, id).await, vec!["submitted", "delivered"]);
    let r: Value = app
        .report_id(id, json!({"method": "sms", "sms": {"code": code}}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "SUCCESSFUL");
}

#[tokio::test]
async fn an_undeliverable_number_ends_in_sms_delivery_failure() {
    let smsc = Smsc::start(&[]).await;
    let app = spawn(&smsc).await;
    let v = app.start_ok("sms", "+46700006991").await; // the peer answers UNDELIV for …991
    let id = v["id"].as_str().unwrap();
    let mut status = Value::Null;
    for _ in 0..200 {
        status = app.status_id(id).await;
        if status["status"] == "ERROR" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        (status["status"].as_str(), status["reason"].as_str()),
        (Some("ERROR"), Some("SMS delivery failure"))
    );
    assert!(
        attempts(&app, id)
            .await
            .iter()
            .any(|a| a.starts_with("undelivered: stat:UNDELIV"))
    );
}

#[tokio::test]
async fn unicode_and_long_texts_arrive_whole() {
    let smsc = Smsc::start(&[]).await;
    let app = spawn(&smsc).await;
    let template = format!("Ваш код {{{{CODE}}}} — {}", "ü".repeat(120));
    let r = app
        .start(
            json!({"identity": {"type": "number", "endpoint": "+46700006002"}, "method": "sms",
            "smsOptions": {"template": template}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let parts = accepted_to(&smsc, "+46700006002");
    assert!(parts.len() >= 2, "{parts:?}");
    assert!(parts.iter().all(|p| p["data_coding"] == 8), "UCS-2");
    let text: String = parts.iter().map(|p| p["text"].as_str().unwrap()).collect();
    assert!(
        text.starts_with("Ваш код ") && text.ends_with(&"ü".repeat(120)),
        "{text}"
    );
}

#[tokio::test]
async fn a_dropped_connection_loses_nothing_and_duplicates_nothing() {
    let mut smsc = Smsc::start(&[]).await;
    let app = spawn(&smsc).await;
    smsc.control(&json!({"cmd": "set", "drop_after": 8})).await;
    let numbers: Vec<String> = (0..24).map(|i| format!("+467000061{i:02}")).collect();
    let mut ids = HashMap::new();
    let starts = futures_lite(numbers.iter().map(|n| {
        app.start(json!({"identity": {"type": "number", "endpoint": n}, "method": "sms"}))
    }))
    .await;
    for (n, r) in numbers.iter().zip(starts) {
        assert_eq!(r.status(), 200, "every start is answered");
        ids.insert(
            n.clone(),
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // The channel reconnects on its own (its back-off runs on real time) ...
    for _ in 0..500 {
        if smsc.events_of("bind_transceiver").len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // ... and the retries run once the manual clock passes their back-off, until every
    // message has an outcome.
    for _ in 0..100 {
        app.advance(Duration::minutes(5));
        app.app.run_due_jobs().await.unwrap();
        let mut settled = true;
        for n in &numbers {
            if accepted_to(&smsc, n).is_empty()
                && !attempts(&app, &ids[n])
                    .await
                    .iter()
                    .any(|o| o.starts_with("outcome unknown"))
            {
                settled = false;
            }
        }
        if settled {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut submitted = 0;
    for n in &numbers {
        let accepted = accepted_to(&smsc, n);
        assert!(
            accepted.len() <= 1,
            "{n} was submitted {} times",
            accepted.len()
        );
        let outcomes = attempts(&app, &ids[n]).await;
        if accepted.len() == 1 {
            submitted += 1;
            assert!(
                outcomes.iter().any(|o| o == "submitted")
                    || outcomes.iter().any(|o| o.starts_with("outcome unknown")),
                "{n}: {outcomes:?}"
            );
        } else {
            // Not at the SMSC: its fate is on record.
            if !outcomes.iter().any(|o| o.starts_with("outcome unknown")) {
                let interesting: Vec<String> = smsc
                    .events()
                    .iter()
                    .filter(|e| {
                        !matches!(
                            e["ev"].as_str(),
                            Some("submit_sm" | "deliver_sm" | "deliver_sm_resp")
                        )
                    })
                    .map(Value::to_string)
                    .collect();
                panic!(
                    "{n} lost without a record: {outcomes:?}\n{}",
                    interesting.join("\n")
                );
            }
        }
    }
    assert!(
        submitted >= 16,
        "the retried messages went out after the reconnect: {submitted}"
    );
}

/// Runs futures concurrently (a tiny join_all).
async fn futures_lite<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = futures.map(Box::pin).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await);
    }
    out
}
