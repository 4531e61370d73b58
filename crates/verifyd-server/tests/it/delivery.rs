//! Delivery through routes: failover on permanent errors and timeouts, retries of the same
//! message, WhatsApp → SMS fallback, a node dying between answer and send, delivery reports.
//! The channels here are scripted doubles behind the real `Channel` trait (the real SMPP,
//! WhatsApp and HTTP channels are tested against their peers in `verifyd-channels`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use reqwest::Method;
use serde_json::{Value, json};
use time::Duration;
use verifyd_channels::{
    Channel, Delivery, OutboundMessage, Payload, Receipt, ReceiptStatus, SendError,
};

use crate::helpers::{TestApp, assert_error, outcome};
use crate::receiver::Receiver;

#[derive(Clone)]
enum Act {
    Ok,
    Permanent,
    Retryable(Option<u64>),
    Unreachable,
    Hang,
}

struct Scripted {
    name: String,
    script: Mutex<VecDeque<Act>>,
    sent: Mutex<Vec<(String, Option<String>, String)>>, // (to, sender, code)
    next_id: Mutex<u32>,
}

impl Scripted {
    fn new(name: &str, script: impl IntoIterator<Item = Act>) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            script: Mutex::new(script.into_iter().collect()),
            sent: Mutex::default(),
            next_id: Mutex::new(0),
        })
    }
    fn codes(&self) -> Vec<String> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.2.clone())
            .collect()
    }
}

#[async_trait]
impl Channel for Scripted {
    fn name(&self) -> &str {
        &self.name
    }
    async fn send(&self, m: &OutboundMessage) -> Result<Delivery, SendError> {
        let act = self.script.lock().unwrap().pop_front().unwrap_or(Act::Ok);
        let code = match &m.payload {
            Payload::Text { code, .. } | Payload::Callout { code, .. } => code.clone(),
            Payload::FlashCall { cli, .. } => cli.clone(),
            Payload::Seamless { target_uri } => target_uri.clone(),
        };
        match act {
            Act::Ok => {
                self.sent
                    .lock()
                    .unwrap()
                    .push((m.to.as_str().into(), m.sender.clone(), code));
                let mut id = self.next_id.lock().unwrap();
                *id += 1;
                Ok(Delivery {
                    message_id: Some(format!("{}-{id}", self.name)),
                    call: None,
                    delivered: false,
                })
            }
            Act::Permanent => Err(SendError::Permanent {
                reason: "ESME_RINVDSTADR".into(),
            }),
            Act::Retryable(after) => Err(SendError::Retryable {
                reason: "ESME_RTHROTTLED".into(),
                retry_after: after.map(StdDuration::from_secs),
            }),
            Act::Unreachable => Err(SendError::Unreachable {
                reason: "not on WhatsApp".into(),
            }),
            Act::Hang => {
                std::future::pending::<()>().await;
                unreachable!()
            }
        }
    }
}

const ROUTES: &str = r#"
admin_token = "adm"
[delivery]
timeout_ms = 300
[[routes]]
name = "first"
methods = ["sms"]
channel = "a"
sender = "VerifydA"
[[routes]]
name = "second"
methods = ["sms"]
channel = "b"
sender = "+46700000000"
"#;

async fn attempts(app: &TestApp, id: &str) -> Vec<(String, String)> {
    app.attempts(id)
        .await
        .iter()
        .map(|a| (a["route"].as_str().unwrap().to_string(), outcome(a)))
        .collect()
}

async fn attempts_at_least(app: &TestApp, id: &str, n: usize) -> Vec<(String, String)> {
    app.attempts_at_least(id, n)
        .await
        .iter()
        .map(|a| (a["route"].as_str().unwrap().to_string(), outcome(a)))
        .collect()
}

#[tokio::test]
async fn a_permanent_error_fails_over_to_the_next_route_with_its_sender() {
    let (a, b) = (Scripted::new("a", [Act::Permanent]), Scripted::new("b", []));
    let app = TestApp::spawn_with_channels(ROUTES, vec![a.clone(), b.clone()]).await;
    let v = app.start_ok("sms", "+46700004001").await;
    let sent = b.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].1.as_deref(),
        Some("+46700000000"),
        "the second route's sender"
    );
    assert!(a.sent.lock().unwrap().is_empty());
    assert_eq!(
        attempts_at_least(&app, v["id"].as_str().unwrap(), 2).await,
        vec![
            ("first".into(), "failed: ESME_RINVDSTADR".into()),
            ("second".into(), "submitted".into())
        ]
    );
    let routes = app.admin_get("/admin/v1/routes").await;
    assert_eq!(routes["routes"][0]["name"], "first");
    assert_eq!(routes["routes"][1]["sender"], "+46700000000");
    // The dev inbox is not a route here, so it does not exist.
    let r = app
        .http
        .get(format!("{}/inbox/v1/messages", app.url))
        .send()
        .await
        .unwrap();
    assert_error(r, 404, 40400).await;
}

/// A provider can report on a message before the node that sent it has recorded the
/// message id (the record follows the provider's acceptance): the report is looked at again
/// and applied once the id is there, not dropped as unknown.
#[tokio::test]
async fn a_delivery_report_ahead_of_its_submit_record_is_applied_when_the_record_lands() {
    let (a, b) = (Scripted::new("a", []), Scripted::new("b", []));
    let app = TestApp::spawn_with_channels(ROUTES, vec![a.clone(), b.clone()]).await;
    // The report for the first message channel "a" will send arrives before the message.
    app.app
        .receipts()
        .send(Receipt {
            channel: "a".into(),
            message_id: "a-1".into(),
            status: ReceiptStatus::Failed,
            detail: Some("stat:UNDELIV err:001".into()),
        })
        .unwrap();
    tokio::time::sleep(StdDuration::from_millis(60)).await;
    let v = app.start_ok("sms", "+46700004011").await;
    let id = v["id"].as_str().unwrap();
    let mut status = Value::Null;
    for _ in 0..700 {
        status = app.status_id(id).await;
        if status["status"] == "ERROR" {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
    assert_eq!(
        (status["status"].as_str(), status["reason"].as_str()),
        (Some("ERROR"), Some("SMS delivery failure"))
    );
    assert_eq!(
        attempts(&app, id).await.last().unwrap().1,
        "undelivered: stat:UNDELIV err:001"
    );
}

#[tokio::test]
async fn a_timeout_fails_over_too() {
    let (a, b) = (Scripted::new("a", [Act::Hang]), Scripted::new("b", []));
    let app = TestApp::spawn_with_channels(ROUTES, vec![a.clone(), b.clone()]).await;
    let v = app.start_ok("sms", "+46700004002").await;
    app.run_jobs_until(|| b.sent.lock().unwrap().len() == 1)
        .await;
    let got = attempts_at_least(&app, v["id"].as_str().unwrap(), 2).await;
    assert_eq!(got[0], ("first".into(), "timeout after 300 ms".into()));
    assert_eq!(got[1], ("second".into(), "submitted".into()));
}

#[tokio::test]
async fn retries_resend_the_same_code_and_honour_retry_after() {
    let (a, b) = (
        Scripted::new("a", [Act::Retryable(Some(30)), Act::Retryable(None)]),
        Scripted::new("b", []),
    );
    let app = TestApp::spawn_with_channels(ROUTES, vec![a.clone(), b.clone()]).await;
    let v = app.start_ok("sms", "+46700004003").await;
    assert!(a.sent.lock().unwrap().is_empty());
    // Retry-After 30 s: nothing happens before.
    app.advance(Duration::seconds(29));
    assert_eq!(app.app.run_due_jobs().await.unwrap(), 0);
    app.advance(Duration::seconds(1));
    assert_eq!(app.app.run_due_jobs().await.unwrap(), 1); // throttled again
    app.advance(Duration::seconds(10));
    assert_eq!(app.app.run_due_jobs().await.unwrap(), 1);
    assert_eq!(a.codes().len(), 1, "sent once, on the same route");
    assert!(b.sent.lock().unwrap().is_empty());
    // The code that finally went out completes the verification.
    let code = a.codes()[0].clone();
    let r: Value = app
        .report_id(
            v["id"].as_str().unwrap(),
            json!({"method": "sms", "sms": {"code": code}}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "SUCCESSFUL");
}

#[tokio::test]
async fn an_answered_start_is_delivered_even_if_its_node_dies_before_sending() {
    let a = Scripted::new("a", [Act::Hang]);
    let app = TestApp::spawn_with_channels(
        "[delivery]\ntimeout_ms = 100000\ninline_wait_ms = 50\nlease_seconds = 101\n[[routes]]\nname = \"only\"\nchannel = \"a\"",
        vec![a.clone()],
    )
    .await;
    // The start is answered while the send hangs (the node "died" mid-send).
    let v = app.start_ok("callout", "+46700004004").await;
    assert!(a.sent.lock().unwrap().is_empty());
    assert_eq!(
        app.app.run_due_jobs().await.unwrap(),
        0,
        "leased to the first dispatcher"
    );
    app.advance(Duration::seconds(102));
    assert_eq!(app.app.run_due_jobs().await.unwrap(), 1);
    assert_eq!(a.codes().len(), 1);
    let r: Value = app
        .report_id(
            v["id"].as_str().unwrap(),
            json!({"method": "callout", "callout": {"code": a.codes()[0]}}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "SUCCESSFUL");
    // Nothing is sent again afterwards.
    app.advance(Duration::hours(1));
    assert_eq!(app.app.run_due_jobs().await.unwrap(), 0);
}

#[tokio::test]
async fn a_superseded_verification_is_never_sent_late() {
    let a = Scripted::new("a", [Act::Hang]);
    let app = TestApp::spawn_with_channels(
        "[delivery]\ntimeout_ms = 100000\ninline_wait_ms = 20\nlease_seconds = 101\n[[routes]]\nname = \"only\"\nchannel = \"a\"",
        vec![a.clone()],
    )
    .await;
    app.start_ok("sms", "+46700004005").await;
    app.advance(Duration::seconds(2));
    app.start_ok("sms", "+46700004005").await; // the second send succeeds at once
    assert_eq!(a.codes().len(), 1);
    app.advance(Duration::minutes(2));
    app.app.run_due_jobs().await.unwrap();
    assert_eq!(
        a.codes().len(),
        1,
        "the first (aborted) verification's code never goes out"
    );
}

#[tokio::test]
async fn whatsapp_falls_back_to_sms_with_the_same_code() {
    let (wa, sms) = (
        Scripted::new("wa", [Act::Unreachable]),
        Scripted::new("sms", []),
    );
    let app = TestApp::spawn_with_channels(
        "[[routes]]\nname = \"wa\"\nmethods = [\"whatsapp\"]\nchannel = \"wa\"\n[[routes]]\nname = \"sms\"\nmethods = [\"sms\"]\nchannel = \"sms\"",
        vec![wa.clone(), sms.clone()],
    )
    .await;
    let v = app.start_ok("whatsapp", "+46700004006").await;
    let code = sms.codes()[0].clone();
    let r: Value = app
        .report_id(
            v["id"].as_str().unwrap(),
            json!({"method": "whatsapp", "whatsapp": {"code": code}}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "SUCCESSFUL");
}

#[tokio::test]
async fn when_every_route_fails_the_verification_is_an_error_and_announced() {
    let receiver = Receiver::start("cb", "Y2I=").await;
    let (a, b) = (
        Scripted::new("a", [Act::Permanent]),
        Scripted::new("b", [Act::Unreachable]),
    );
    let app = TestApp::spawn_with_channels(
        &format!("{ROUTES}\n[[applications]]\nname = \"cb\"\nkey = \"cb\"\nsecret = \"Y2I=\"\ncallback_url = \"{}\"", receiver.url),
        vec![a, b],
    )
    .await;
    let body = serde_json::to_vec(
        &json!({"identity": {"type": "number", "endpoint": "+46700004007"}, "method": "sms"}),
    )
    .unwrap();
    let v: Value = app
        .signed_raw(
            Method::POST,
            "/verification/v1/verifications",
            &body,
            "cb",
            "Y2I=",
            "application/json",
        )
        .await
        .json()
        .await
        .unwrap();
    let s: Value = app
        .signed_raw(
            Method::GET,
            &format!(
                "/verification/v1/verifications/id/{}",
                v["id"].as_str().unwrap()
            ),
            b"",
            "cb",
            "Y2I=",
            "",
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (s["status"].as_str(), s["reason"].as_str()),
        (Some("ERROR"), Some("SMS delivery failure"))
    );
    app.app.deliver_due_events().await.unwrap();
    let results = receiver.events("VerificationResultEvent");
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].json["status"], "ERROR");
}

#[tokio::test]
async fn delivery_reports_mark_failures_and_announce_deliveries() {
    let receiver = Receiver::start("cb", "Y2I=").await;
    let a = Scripted::new("a", []);
    let app = TestApp::spawn_with_channels(
        &format!("admin_token = \"adm\"\n[[routes]]\nname = \"only\"\nchannel = \"a\"\n[[applications]]\nname = \"cb\"\nkey = \"cb\"\nsecret = \"Y2I=\"\ncallback_url = \"{}\"", receiver.url),
        vec![a.clone()],
    )
    .await;
    let start = |n: &'static str| {
        let body = serde_json::to_vec(
            &json!({"identity": {"type": "number", "endpoint": n}, "method": "sms"}),
        )
        .unwrap();
        let app = &app;
        async move {
            app.signed_raw(
                Method::POST,
                "/verification/v1/verifications",
                &body,
                "cb",
                "Y2I=",
                "application/json",
            )
            .await
            .json::<Value>()
            .await
            .unwrap()
        }
    };
    let ok = start("+46700004008").await;
    let bad = start("+46700004009").await;
    let tx = app.app.receipts();
    tx.send(Receipt {
        channel: "a".into(),
        message_id: "a-1".into(),
        status: ReceiptStatus::Delivered,
        detail: None,
    })
    .unwrap();
    tx.send(Receipt {
        channel: "a".into(),
        message_id: "a-2".into(),
        status: ReceiptStatus::Failed,
        detail: Some("stat:UNDELIV err:001".into()),
    })
    .unwrap();
    tx.send(Receipt {
        channel: "a".into(),
        message_id: "unknown".into(),
        status: ReceiptStatus::Failed,
        detail: None,
    })
    .unwrap();
    let status = |v: &Value| {
        let id = v["id"].as_str().unwrap().to_string();
        let app = &app;
        async move {
            app.signed_raw(
                Method::GET,
                &format!("/verification/v1/verifications/id/{id}"),
                b"",
                "cb",
                "Y2I=",
                "",
            )
            .await
            .json::<Value>()
            .await
            .unwrap()
        }
    };
    // Receipts are applied asynchronously by the server's receipts loop.
    for _ in 0..200 {
        if status(&bad).await["status"] == "ERROR" {
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(StdDuration::from_millis(5)).await;
    }
    let s = status(&bad).await;
    assert_eq!(
        (s["status"].as_str(), s["reason"].as_str()),
        (Some("ERROR"), Some("SMS delivery failure"))
    );
    assert_eq!(status(&ok).await["status"], "PENDING");
    app.app.deliver_due_events().await.unwrap();
    let delivered = receiver.events("VerificationSmsDeliveredEvent");
    let by_id = |id: &Value| {
        delivered
            .iter()
            .find(|e| e.json["id"] == *id)
            .map(|e| e.json["smsResult"].clone())
    };
    assert_eq!(by_id(&ok["id"]), Some(json!("Successful")));
    assert_eq!(by_id(&bad["id"]), Some(json!("Failed")));
    let got = attempts(&app, bad["id"].as_str().unwrap()).await;
    assert_eq!(got.last().unwrap().1, "undelivered: stat:UNDELIV err:001");
}

#[tokio::test]
async fn no_route_for_a_destination_answers_42201() {
    let a = Scripted::new("a", []);
    let app = TestApp::spawn_with_channels(
        "[[routes]]\nname = \"se\"\ncountries = [\"SE\"]\nchannel = \"a\"",
        vec![a],
    )
    .await;
    let r = app
        .start(json!({"identity": {"type": "number", "endpoint": "+33612345678"}, "method": "sms"}))
        .await;
    let e = assert_error(r, 422, 42201).await;
    assert_eq!(e["message"], "No route to destination.");
    app.start_ok("sms", "+46700004010").await;
}
