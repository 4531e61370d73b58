//! Status lookups: shapes, prices, timestamps, identity and reference paths, isolation.

use regex::Regex;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{OTHER_KEY, OTHER_SECRET, TestApp, assert_error};

#[tokio::test]
async fn status_shows_price_country_and_a_zoneless_timestamp_once_final() {
    let app = TestApp::spawn().await;
    let v = app.start_ok("sms", "+33612345678").await;
    let id = v["id"].as_str().unwrap();
    let pending = app.status_id(id).await;
    assert_eq!(pending["status"], "PENDING");
    assert!(pending.get("price").is_none(), "no price while pending");
    assert_eq!(
        pending["identity"],
        json!({"type": "number", "endpoint": "+33612345678"})
    );
    assert_eq!(pending["countryId"], "FR");
    let code = app.inbox_code("+33612345678").await;
    app.report_id(id, json!({"method": "sms", "sms": {"code": code}}))
        .await;
    let s = app.status_id(id).await;
    assert_eq!(s["status"], "SUCCESSFUL");
    assert_eq!(s["source"], "manual");
    assert_eq!(
        s["price"],
        json!({"verificationPrice": {"currencyId": "EUR", "amount": 0.0453}})
    );
    let ts = s["verificationTimestamp"].as_str().unwrap();
    assert!(
        Regex::new(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{7}$")
            .unwrap()
            .is_match(ts),
        "{ts}"
    );
    assert_eq!(ts, "2026-11-26T12:00:00.5000000");
    assert!(s.get("callComplete").is_none());
}

#[tokio::test]
async fn call_methods_report_call_outcome_and_termination_price() {
    let app = TestApp::spawn().await;
    let v = app.start_ok("callout", "+46700000201").await;
    let id = v["id"].as_str().unwrap();
    let code = app.inbox_code("+46700000201").await;
    let r: Value = app
        .report_id(id, json!({"method": "callout", "callout": {"code": code}}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["callComplete"], true);
    let s = app.status_id(id).await;
    assert_eq!(s["callComplete"], true);
    assert_eq!(s["callResult"], "ANSWERED");
    assert_eq!(s["price"]["verificationPrice"]["amount"], 0.1852);
    assert_eq!(
        s["price"]["terminationPrice"],
        json!({"currencyId": "EUR", "amount": 0.0})
    );
    assert_eq!(s["price"]["billableDuration"], 0);
}

#[tokio::test]
async fn status_by_identity_accepts_any_method_case_and_an_encoded_plus() {
    let app = TestApp::spawn().await;
    let v = app.start_ok("flashcall", "+46700000202").await;
    for path in [
        "/verification/v1/verifications/flashcall/number/+46700000202",
        "/verification/v1/verifications/FlashCall/number/+46700000202",
        "/verification/v1/verifications/flashcall/number/%2B46700000202",
    ] {
        let r = app.signed(Method::GET, path, None).await;
        assert_eq!(r.status(), 200, "{path}");
        let s: Value = r.json().await.unwrap();
        assert_eq!(s["id"], v["id"], "{path}");
        assert_eq!(s["method"], "flashcall");
        assert_eq!(s["callResult"], "CANCEL");
    }
    let r = app
        .signed(
            Method::GET,
            "/verification/v1/verifications/sms/number/+46700000202",
            None,
        )
        .await;
    assert_error(r, 404, 40400).await;
    let r = app
        .signed(
            Method::GET,
            "/verification/v1/verifications/fax/number/+46700000202",
            None,
        )
        .await;
    assert_error(r, 400, 40001).await;
}

#[tokio::test]
async fn status_by_reference_with_spaces_slashes_and_unicode_signed_raw_or_decoded() {
    let app = TestApp::spawn().await;
    let r = app
        .start(
            json!({"identity": {"type": "number", "endpoint": "+46700000203"}, "method": "sms",
            "reference": "my ref/ü"}),
        )
        .await;
    let v: Value = r.json().await.unwrap();
    let raw = "/verification/v1/verifications/reference/my%20ref/%C3%BC";
    // node / Python / .NET sign what they send (the encoded path) ...
    let r = app.signed(Method::GET, raw, None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["id"], v["id"]);
    // ... Java signs the decoded path but sends the encoded one.
    let timestamp = app
        .now()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let auth = verifyd_api::signing::SignedRequest {
        verb: "GET",
        body: b"",
        content_type: "",
        timestamp: &timestamp,
        resource: "/verification/v1/verifications/reference/my ref/ü",
    }
    .authorization(
        "Application",
        crate::helpers::KEY,
        &verifyd_api::signing::decode_secret(crate::helpers::SECRET).unwrap(),
    );
    let r = app
        .http
        .get(format!("{}{raw}", app.url))
        .header("authorization", auth)
        .header("x-timestamp", timestamp)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn another_application_sees_nothing() {
    let app = TestApp::spawn().await;
    let v = app.start_ok("sms", "+46700000204").await;
    let id = v["id"].as_str().unwrap();
    let code = app.inbox_code("+46700000204").await;
    for (method, path, body) in [
        (
            Method::GET,
            format!("/verification/v1/verifications/id/{id}"),
            vec![],
        ),
        (
            Method::GET,
            "/verification/v1/verifications/sms/number/+46700000204".to_string(),
            vec![],
        ),
        (
            Method::PUT,
            format!("/verification/v1/verifications/id/{id}"),
            serde_json::to_vec(&json!({"method": "sms", "sms": {"code": code}})).unwrap(),
        ),
    ] {
        let r = app
            .signed_raw(
                method,
                &path,
                &body,
                OTHER_KEY,
                OTHER_SECRET,
                "application/json",
            )
            .await;
        assert_error(r, 404, 40400).await;
    }
    assert_eq!(app.status_id(id).await["status"], "PENDING");
}
