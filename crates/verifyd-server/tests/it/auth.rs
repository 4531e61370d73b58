//! Authentication: every scheme, every failure code, and each SDK's signing habits.

use reqwest::Method;
use serde_json::json;
use time::Duration;

use crate::helpers::{KEY, SECRET, TestApp, assert_error, basic};

const START: &str = "/verification/v1/verifications";

fn start_body() -> Vec<u8> {
    serde_json::to_vec(
        &json!({"identity": {"type": "number", "endpoint": "+46700000301"}, "method": "sms"}),
    )
    .unwrap()
}

#[tokio::test]
async fn missing_or_garbled_authorization_is_refused() {
    let app = TestApp::spawn().await;
    let r = app
        .http
        .post(format!("{}{START}", app.url))
        .body(start_body())
        .send()
        .await
        .unwrap();
    assert_error(r, 401, 40104).await;
    for header in ["Bearer abc", "Application", "Application :sig", "Basic !!!"] {
        let r = app
            .http
            .post(format!("{}{START}", app.url))
            .header("authorization", header)
            .body(start_body())
            .send()
            .await
            .unwrap();
        assert_error(r, 401, 40100).await;
    }
}

#[tokio::test]
async fn unknown_keys_and_bad_signatures_are_refused() {
    let app = TestApp::spawn().await;
    let r = app
        .signed_raw(
            Method::POST,
            START,
            &start_body(),
            "nobody",
            SECRET,
            "application/json",
        )
        .await;
    assert_error(r, 401, 40107).await;
    let r = app
        .signed_raw(
            Method::POST,
            START,
            &start_body(),
            KEY,
            "d3Jvbmcgc2VjcmV0",
            "application/json",
        )
        .await;
    assert_error(r, 401, 40102).await;
}

#[tokio::test]
async fn a_signature_over_other_bytes_does_not_pass() {
    let app = TestApp::spawn().await;
    let timestamp = app
        .now()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let auth = verifyd_api::signing::SignedRequest {
        verb: "POST",
        body: &start_body(),
        content_type: "application/json",
        timestamp: &timestamp,
        resource: START,
    }
    .authorization(
        "Application",
        KEY,
        &verifyd_api::signing::decode_secret(SECRET).unwrap(),
    );
    let mut tampered = start_body();
    tampered.push(b' ');
    let r = app
        .http
        .post(format!("{}{START}", app.url))
        .header("authorization", auth)
        .header("x-timestamp", &timestamp)
        .header("content-type", "application/json")
        .body(tampered)
        .send()
        .await
        .unwrap();
    assert_error(r, 401, 40102).await;
}

#[tokio::test]
async fn the_timestamp_must_be_present_and_fresh() {
    let app = TestApp::spawn().await;
    let r = app
        .http
        .post(format!("{}{START}", app.url))
        .header("authorization", format!("Application {KEY}:abc="))
        .body(start_body())
        .send()
        .await
        .unwrap();
    assert_error(r, 401, 40101).await;
    // Signed 16 minutes ago (the clock moves after signing): outside the 15-minute skew.
    let ts = (app.now() - Duration::minutes(16))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let body = start_body();
    let auth = verifyd_api::signing::SignedRequest {
        verb: "POST",
        body: &body,
        content_type: "application/json",
        timestamp: &ts,
        resource: START,
    }
    .authorization(
        "Application",
        KEY,
        &verifyd_api::signing::decode_secret(SECRET).unwrap(),
    );
    let r = app
        .http
        .post(format!("{}{START}", app.url))
        .header("authorization", &auth)
        .header("x-timestamp", &ts)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_error(r, 401, 40101).await;
}

#[tokio::test]
async fn python_timestamps_and_content_types_verify() {
    let app = TestApp::spawn().await;
    // Python: isoformat() with +00:00 and microseconds; Content-Type with charset, also on GET.
    let ts = app
        .now()
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]+00:00"
        ))
        .unwrap();
    let body = br#"{"identity": {"type": "number", "endpoint": "+46700000302"}, "method": "sms"}"#;
    let ct = "application/json; charset=UTF-8";
    let auth = verifyd_api::signing::SignedRequest {
        verb: "POST",
        body,
        content_type: ct,
        timestamp: &ts,
        resource: START,
    }
    .authorization(
        "Application",
        KEY,
        &verifyd_api::signing::decode_secret(SECRET).unwrap(),
    );
    let r = app
        .http
        .post(format!("{}{START}", app.url))
        .header("authorization", auth)
        .header("x-timestamp", ts)
        .header("content-type", ct)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Java / .NET: GET without Content-Type, signed with an empty line.
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app
        .signed_raw(
            Method::GET,
            &format!("/verification/v1/verifications/id/{id}"),
            b"",
            KEY,
            SECRET,
            "",
        )
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn basic_auth_works_unless_the_application_requires_signing() {
    let app = TestApp::spawn_with("").await;
    let r = app
        .http
        .post(format!("{}{START}", app.url))
        .header("authorization", basic(KEY, SECRET))
        .header("content-type", "application/json")
        .body(start_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .http
        .post(format!("{}{START}", app.url))
        .header("authorization", basic(KEY, "d3Jvbmc="))
        .body(start_body())
        .send()
        .await
        .unwrap();
    assert_error(r, 401, 40102).await;

    let strict = TestApp::spawn_with(
        "[[applications]]\nname = \"strict\"\nkey = \"strict\"\nsecret = \"c3RyaWN0\"\nmin_auth = \"signed\"",
    )
    .await;
    let r = strict
        .http
        .post(format!("{}{START}", strict.url))
        .header("authorization", basic("strict", "c3RyaWN0"))
        .body(start_body())
        .send()
        .await
        .unwrap();
    assert_error(r, 401, 40107).await;
}

#[tokio::test]
async fn public_auth_needs_an_application_that_allows_it() {
    let app = TestApp::spawn().await;
    let r = app
        .http
        .post(format!("{}{START}", app.url))
        .header("authorization", format!("Application {KEY}"))
        .body(start_body())
        .send()
        .await
        .unwrap();
    assert_error(r, 401, 40107).await;
    assert!(
        app.inbox("+46700000301").await["messages"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_public_application_without_a_callback_url_is_a_config_error() {
    let err = verifyd_server::Config::from_toml(
        "[[applications]]\nname = \"device\"\nkey = \"device\"\nsecret = \"ZGV2aWNl\"\nmin_auth = \"public\"",
    )
    .unwrap()
    .settings()
    .unwrap_err();
    assert!(err.to_string().contains("callback_url"), "{err}");
}
