//! Bad input of every kind gets a Sinch error body, never plain text and never a 500.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{KEY, SECRET, TestApp, assert_error};

const START: &str = "/verification/v1/verifications";

async fn start_raw(app: &TestApp, body: &[u8]) -> reqwest::Response {
    app.signed_raw(Method::POST, START, body, KEY, SECRET, "application/json")
        .await
}

#[tokio::test]
async fn malformed_json_and_missing_fields() {
    let app = TestApp::spawn().await;
    assert_error(start_raw(&app, b"{not json").await, 400, 40001).await;
    assert_error(start_raw(&app, b"").await, 400, 40002).await;
    assert_error(
        start_raw(&app, br#"{"identity": "x", "method": "sms"}"#).await,
        400,
        40001,
    )
    .await;
    assert_error(start_raw(&app, br#"{"method": "sms"}"#).await, 400, 40002).await;
    assert_error(
        start_raw(
            &app,
            br#"{"identity": {"type": "number"}, "method": "sms"}"#,
        )
        .await,
        400,
        40002,
    )
    .await;
    assert_error(
        start_raw(
            &app,
            br#"{"identity": {"type": "number", "endpoint": "+46700000401"}}"#,
        )
        .await,
        400,
        40002,
    )
    .await;
    assert_error(
        start_raw(
            &app,
            br#"{"identity": {"type": "number", "endpoint": "+46700000401"}, "method": "fax"}"#,
        )
        .await,
        400,
        40001,
    )
    .await;
    assert_error(
        start_raw(
            &app,
            br#"{"identity": {"type": "email", "endpoint": "+46700000401"}, "method": "sms"}"#,
        )
        .await,
        400,
        40001,
    )
    .await;
}

#[tokio::test]
async fn numbers_must_be_e164() {
    let app = TestApp::spawn().await;
    let start = |n: &str| json!({"identity": {"type": "number", "endpoint": n}, "method": "sms"});
    let body = assert_error(app.start(start("46700000402")).await, 400, 40005).await;
    assert_eq!(body["message"], "Phone number missing leading plus sign");
    let body = assert_error(app.start(start("+4813")).await, 400, 40001).await;
    assert_eq!(body["message"], "Number +4813 is invalid. Too short.");
    assert_error(app.start(start("+46abc")).await, 400, 40001).await;
}

#[tokio::test]
async fn bad_options_are_named() {
    let app = TestApp::spawn().await;
    let sms = |opts: serde_json::Value| json!({"identity": {"type": "number", "endpoint": "+46700000403"}, "method": "sms", "smsOptions": opts});
    let b = assert_error(
        app.start(sms(json!({"codeType": "Emoji"}))).await,
        400,
        40001,
    )
    .await;
    assert!(b["message"].as_str().unwrap().contains("codeType"));
    let b = assert_error(app.start(sms(json!({"expiry": "99:00"}))).await, 400, 40001).await;
    assert!(b["message"].as_str().unwrap().contains("expiry"));
    let b = assert_error(
        app.start(sms(json!({"template": "no placeholder"}))).await,
        400,
        40001,
    )
    .await;
    assert!(b["message"].as_str().unwrap().contains("{{CODE}}"));
}

#[tokio::test]
async fn oversized_bodies_are_refused_before_parsing() {
    let app = TestApp::spawn().await;
    let big = format!(
        r#"{{"identity": {{"type": "number", "endpoint": "+46700000404"}}, "method": "sms", "custom": "{}"}}"#,
        "x".repeat(70 * 1024)
    );
    assert_error(start_raw(&app, big.as_bytes()).await, 413, 41300).await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let app = TestApp::spawn().await;
    let r = app
        .http
        .get(format!("{}/nope", app.url))
        .send()
        .await
        .unwrap();
    assert_error(r, 404, 40400).await;
    let r = app
        .http
        .delete(format!("{}{START}", app.url))
        .send()
        .await
        .unwrap();
    assert_error(r, 405, 40500).await;
}

#[tokio::test]
async fn health_answers() {
    let app = TestApp::spawn().await;
    let r = app
        .http
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .http
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["status"],
        "ready"
    );
}
