//! Starting verifications: every method's answer shape and the SDK tolerances.

use regex::Regex;
use reqwest::Method;
use serde_json::{Value, json};
use time::Duration;

use crate::helpers::{TestApp, assert_error};

#[tokio::test]
async fn sms_start_answers_the_sinch_shape_in_the_requested_language() {
    let app = TestApp::spawn().await;
    let body = json!({"identity": {"type": "number", "endpoint": "+46700000001"}, "method": "sms",
        "reference": "r-1", "custom": "c", "smsOptions": {"codeType": "Numeric", "expiry": "00:05:00"}});
    let bytes = serde_json::to_vec(&body).unwrap();
    let r = app
        .http
        .post(format!("{}/verification/v1/verifications", app.url))
        .header("accept-language", "sv-SE, en;q=0.5")
        .header("content-type", "application/json")
        .header(
            "x-timestamp",
            app.now()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap(),
        )
        .header(
            "authorization",
            verifyd_api::signing::SignedRequest {
                verb: "POST",
                body: &bytes,
                content_type: "application/json",
                timestamp: &app
                    .now()
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap(),
                resource: "/verification/v1/verifications",
            }
            .authorization(
                "Application",
                crate::helpers::KEY,
                &verifyd_api::signing::decode_secret(crate::helpers::SECRET).unwrap(),
            ),
        )
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(r.headers()["content-language"], "sv-SE");
    let v: Value = r.json().await.unwrap();
    let id = v["id"].as_str().unwrap();
    assert_eq!(v["method"], "sms");
    assert_eq!(v["sms"]["template"], "Din verifieringskod är {{CODE}}.");
    assert_eq!(v["sms"]["interceptionTimeout"], 300);
    assert_eq!(v["sms"]["codeType"], "Numeric");
    let href = format!("{}/verification/v1/verifications/id/{id}", app.url);
    assert_eq!(
        v["_links"],
        json!([{"rel": "status", "href": href, "method": "GET"},
               {"rel": "report", "href": href, "method": "PUT"}])
    );
    let inbox = app.inbox("+46700000001").await;
    let msg = &inbox["messages"][0];
    let code = msg["code"].as_str().unwrap();
    assert_eq!(code.len(), 6);
    assert!(code.bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(msg["body"], format!("Din verifieringskod är {code}."));
    assert_eq!(msg["verificationId"], id);
}

#[tokio::test]
async fn flashcall_cli_filter_matches_the_drawn_cli_and_no_other_range() {
    let app = TestApp::spawn_with(
        "[flashcall]\ncli_ranges = [{ prefix = \"+4670001\", digits = 5 }, { prefix = \"+4670002\", digits = 5 }]",
    )
    .await;
    for i in 0..10 {
        let number = format!("+4670100000{i}");
        let v = app
            .start(
                json!({"identity": {"type": "number", "endpoint": number}, "method": "flashCall",
                "flashCallOptions": {"dialTimeout": 10, "interceptionTimeout": 30}}),
            )
            .await;
        assert_eq!(v.status(), 200);
        let v: Value = v.json().await.unwrap();
        assert_eq!(v["method"], "flashcall");
        let fc = &v["flashCall"];
        assert_eq!(fc["interceptionTimeout"], 30);
        assert_eq!(fc["reportTimeout"], 120);
        assert_eq!(fc["denyCallAfter"], 0);
        let cli = app.inbox_code(&number).await;
        let filter = Regex::new(fc["cliFilter"].as_str().unwrap()).unwrap();
        assert!(filter.is_match(&cli), "{cli} vs {filter}");
        assert!(filter.is_match(cli.trim_start_matches('+')));
        let other = if cli.starts_with("+4670001") {
            "+4670002"
        } else {
            "+4670001"
        };
        assert!(!filter.is_match(&format!("{other}{}", &cli[8..])));
        assert!(!filter.is_match(&format!("{cli}0")));
    }
}

#[tokio::test]
async fn callout_speaks_the_code_twice_and_has_no_method_object() {
    let app = TestApp::spawn().await;
    let r = app
        .start(
            json!({"identity": {"type": "number", "endpoint": "+46700000002"}, "method": "callout",
            "calloutOptions": {"speech": {}}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-language"], "en-US");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["method"], "callout");
    assert!(v.get("callout").is_none() && v.get("sms").is_none());
    let inbox = app.inbox("+46700000002").await;
    let code = inbox["messages"][0]["code"].as_str().unwrap();
    let spoken: Vec<String> = code.chars().map(String::from).collect();
    let script = inbox["messages"][0]["body"].as_str().unwrap();
    assert_eq!(script.matches(&spoken.join(" ")).count(), 2, "{script}");
}

#[tokio::test]
async fn seamless_target_uri_completes_the_verification_only_with_its_token() {
    let app = TestApp::spawn().await;
    let v = app.start_ok("seamless", "+46700000003").await;
    let uri = v["seamless"]["targetUri"].as_str().unwrap();
    assert!(uri.starts_with(&app.url));
    let forged = uri.rsplit_once('=').unwrap().0.to_string() + "=00";
    assert_error(app.http.get(&forged).send().await.unwrap(), 404, 40400).await;
    assert_eq!(
        app.status_id(v["id"].as_str().unwrap()).await["status"],
        "PENDING"
    );
    let r = app.http.get(uri).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let status = app.status_id(v["id"].as_str().unwrap()).await;
    assert_eq!(status["status"], "SUCCESSFUL");
    assert_eq!(status["method"], "seamless");
}

#[tokio::test]
async fn whatsapp_alpha_codes_use_letters() {
    let app = TestApp::spawn().await;
    let r = app
        .start(
            json!({"identity": {"type": "number", "endpoint": "+46700000004"}, "method": "whatsapp",
            "whatsappOptions": {"codeType": "Alpha"}}),
        )
        .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["whatsapp"]["codeType"], "Alpha");
    let code = app.inbox_code("+46700000004").await;
    assert!(code.bytes().all(|b| b.is_ascii_uppercase()), "{code}");
}

#[tokio::test]
async fn python_top_level_expiry_and_template_are_honoured() {
    let app = TestApp::spawn().await;
    // The exact body shape Python sinch 1.1.4 sends: spaced JSON, expiry leaked to top level.
    let body = br#"{"identity": {"type": "number", "endpoint": "+46700000005"}, "reference": "py-ref", "expiry": "00:01:00", "template": "Code: {{CODE}}", "method": "sms", "smsOptions": {"codeType": "Alphanumeric"}}"#;
    let r = app
        .signed_raw(
            Method::POST,
            "/verification/v1/verifications",
            body,
            crate::helpers::KEY,
            crate::helpers::SECRET,
            "application/json; charset=UTF-8",
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["sms"]["template"], "Code: {{CODE}}");
    assert_eq!(v["sms"]["interceptionTimeout"], 60);
    assert_eq!(v["sms"]["codeType"], "Alphanumeric");
    app.advance(Duration::seconds(61));
    let s = app.status_id(v["id"].as_str().unwrap()).await;
    assert_eq!(
        (s["status"].as_str(), s["reason"].as_str()),
        (Some("FAIL"), Some("Expired"))
    );
}

#[tokio::test]
async fn dotnet_zero_dial_timeout_and_unknown_keys_are_accepted() {
    let app = TestApp::spawn().await;
    let r = app
        .start(json!({"identity": {"type": "number", "endpoint": "+46700000006"}, "method": "flashcall",
            "flashCallOptions": {"dialTimeout": 0, "my key": "my value"}, "fooKey": {"x": 1}}))
        .await;
    assert_eq!(r.status(), 200);
    let r = app
        .start(json!({"identity": {"type": "number", "endpoint": "+46700000007"}, "method": "flashcall",
            "flashCallOptions": {"dialTimeout": 500}}))
        .await;
    assert_error(r, 400, 40001).await;
}

#[tokio::test]
async fn code_length_follows_the_application_policy() {
    let app = TestApp::spawn_with("[verification]\ncode_length = 9").await;
    app.start_ok("sms", "+46700000008").await;
    assert_eq!(app.inbox_code("+46700000008").await.len(), 9);
}

#[tokio::test]
async fn a_new_start_aborts_the_pending_verification_for_that_number() {
    let app = TestApp::spawn().await;
    let first = app.start_ok("sms", "+46700000009").await;
    let old_code = app.inbox_code("+46700000009").await;
    app.advance(Duration::seconds(1));
    let second = app.start_ok("sms", "+46700000009").await;
    let s = app.status_id(first["id"].as_str().unwrap()).await;
    assert_eq!(s["status"], "ABORTED");
    let r = app
        .report_id(
            first["id"].as_str().unwrap(),
            json!({"method": "sms", "sms": {"code": old_code}}),
        )
        .await;
    let r: Value = r.json().await.unwrap();
    assert_eq!(
        r["status"], "ABORTED",
        "the old code cannot complete a superseded verification"
    );
    assert_eq!(
        app.status_id(second["id"].as_str().unwrap()).await["status"],
        "PENDING"
    );
}

#[tokio::test]
async fn references_are_unique_and_custom_is_bounded() {
    let app = TestApp::spawn().await;
    let start = |number: &str, reference: &str, custom: String| {
        json!({"identity": {"type": "number", "endpoint": number}, "method": "sms",
            "reference": reference, "custom": custom})
    };
    assert_eq!(
        app.start(start("+46700000010", "dup", "x".repeat(4096)))
            .await
            .status(),
        200
    );
    assert_error(
        app.start(start("+46700000011", "dup", String::new())).await,
        409,
        40900,
    )
    .await;
    assert_error(
        app.start(start("+46700000012", "r2", "x".repeat(4097)))
            .await,
        400,
        40001,
    )
    .await;
}
