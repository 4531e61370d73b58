//! Abuse and fraud rules: each rule's trigger, the error answered, the metric, and the
//! bypass (allow list, shadow mode). Time is the manual clock; nothing sleeps.

use reqwest::Method;
use serde_json::{Value, json};
use time::Duration;

use crate::helpers::{KEY, SECRET, TestApp, assert_error};

const START: &str = "/verification/v1/verifications";

fn body(method: &str, number: &str) -> Value {
    json!({"identity": {"type": "number", "endpoint": number}, "method": method})
}

fn with_reference(method: &str, number: &str, reference: &str) -> Value {
    json!({"identity": {"type": "number", "endpoint": number}, "method": method, "reference": reference})
}

async fn status_by_reference(app: &TestApp, reference: &str) -> Value {
    let r = app
        .signed(Method::GET, &format!("{START}/reference/{reference}"), None)
        .await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn metrics(app: &TestApp) -> String {
    app.http
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_new_code_needs_a_second_and_supersedes_the_old_one() {
    let app = TestApp::spawn().await;
    let first = app.start_ok("sms", "+46700002001").await;
    let r = app.start(body("sms", "+46700002001")).await;
    assert_eq!(r.headers()["retry-after"], "1");
    let e = assert_error(r, 429, 42901).await;
    assert_eq!(
        e["message"],
        "Cannot initiate verification to the same number too quickly"
    );
    app.advance(Duration::seconds(1));
    app.start_ok("sms", "+46700002001").await;
    assert_eq!(
        app.status_id(first["id"].as_str().unwrap()).await["status"],
        "ABORTED"
    );
    assert!(metrics(&app).await.contains("rule=\"min_start_interval\""));
}

#[tokio::test]
async fn at_most_ten_starts_per_number_per_hour() {
    let app = TestApp::spawn().await;
    for _ in 0..10 {
        app.start_ok("sms", "+46700002002").await;
        app.advance(Duration::seconds(2));
    }
    assert_error(app.start(body("sms", "+46700002002")).await, 429, 42901).await;
    // Another number is not affected.
    app.start_ok("sms", "+46700002003").await;
    // The hour slides in one-minute buckets.
    app.advance(Duration::minutes(61));
    app.start_ok("sms", "+46700002002").await;
}

#[tokio::test]
async fn a_brute_forcer_gets_ten_guesses_a_day_however_often_it_restarts() {
    let app = TestApp::spawn().await;
    let number = "+46700002004";
    let mut guesses = 0;
    let mut refused = 0;
    for round in 0..8 {
        let r = app.start(body("sms", number)).await;
        if r.status() != 200 {
            assert_error(r, 429, 42901).await;
            refused += 1;
            app.advance(Duration::minutes(1));
            continue;
        }
        let v: Value = r.json().await.unwrap();
        let code = app.inbox_code(number).await;
        for i in 0..3 {
            let guess = format!("{:06}", (round * 3 + i + 1) % 1_000_000);
            if guess == code {
                continue;
            }
            let r = app
                .report_id(
                    v["id"].as_str().unwrap(),
                    json!({"method": "sms", "sms": {"code": guess}}),
                )
                .await;
            if r.status() == 200 {
                guesses += 1;
            } else {
                assert_error(r, 429, 42901).await;
            }
        }
        app.advance(Duration::minutes(1));
    }
    assert_eq!(
        guesses, 10,
        "exactly the daily budget of wrong codes was compared"
    );
    assert!(refused > 0, "starts are refused once the budget is spent");
    // The owner is not locked out for ever: a day later the budget has recovered.
    app.advance(Duration::hours(25));
    let v = app.start_ok("sms", number).await;
    let code = app.inbox_code(number).await;
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
    assert!(metrics(&app).await.contains("rule=\"wrong_code_budget\""));
}

#[tokio::test]
async fn right_codes_do_not_spend_the_budget() {
    let app = TestApp::spawn().await;
    for i in 0..12 {
        let number = "+46700002005";
        let v = app.start_ok("sms", number).await;
        let code = app.inbox_code(number).await;
        let r: Value = app
            .report_id(
                v["id"].as_str().unwrap(),
                json!({"method": "sms", "sms": {"code": code}}),
            )
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(r["status"], "SUCCESSFUL", "round {i}");
        app.advance(Duration::minutes(10));
    }
}

#[tokio::test]
async fn request_rates_per_application_and_per_client_ip() {
    let app = TestApp::spawn_with(
        "[http]\ntrusted_proxies = [\"127.0.0.1/32\"]\n[fraud]\napp_requests_per_second = 1.0\napp_burst = 3.0\nip_requests_per_second = 1.0\nip_burst = 2.0\nmin_start_interval_ms = 0",
    )
    .await;
    let from = |ip: &'static str, n: &'static str| {
        let bytes = serde_json::to_vec(&body("sms", n)).unwrap();
        let ts = app
            .now()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let auth = verifyd_api::signing::SignedRequest {
            verb: "POST",
            body: &bytes,
            content_type: "application/json",
            timestamp: &ts,
            resource: START,
        }
        .authorization(
            "Application",
            KEY,
            &verifyd_api::signing::decode_secret(SECRET).unwrap(),
        );
        app.http
            .post(format!("{}{START}", app.url))
            .header("authorization", auth)
            .header("x-timestamp", ts)
            .header("content-type", "application/json")
            .header("x-forwarded-for", format!("9.9.9.9, {ip}"))
            .body(bytes)
            .send()
    };
    assert_eq!(
        from("198.51.100.1", "+46700002010").await.unwrap().status(),
        200
    );
    assert_eq!(
        from("198.51.100.1", "+46700002011").await.unwrap().status(),
        200
    );
    // Third from the same client IP: its burst of 2 is used up.
    let r = from("198.51.100.1", "+46700002012").await.unwrap();
    assert!(r.headers().contains_key("retry-after"));
    assert_error(r, 429, 42900).await;
    // Another client IP still gets through, until the application's burst of 3 is used.
    assert_eq!(
        from("198.51.100.2", "+46700002013").await.unwrap().status(),
        200
    );
    assert_error(
        from("198.51.100.3", "+46700002014").await.unwrap(),
        429,
        42900,
    )
    .await;
    app.advance(Duration::seconds(1));
    assert_eq!(
        from("198.51.100.3", "+46700002015").await.unwrap().status(),
        200
    );
    assert!(
        metrics(&app)
            .await
            .contains("verifyd_rate_limited_total{limit=\"ip_rate\"}")
    );
}

#[tokio::test]
async fn destinations_are_checked_by_real_region_number_type_and_lists() {
    let app = TestApp::spawn_with(
        "[fraud]\nallowed_countries = [\"SE\", \"GB\"]\nblocklist = [\"+4670999\"]\nallowlist = [\"+33612345678\"]\nblock_fixed_line_sms = true\n[fraud.methods.sms]\nblocked_countries = [\"GB\"]",
    )
    .await;
    let cases = [
        ("sms", "+33611111111", "r-fr", "Destination denied"), // France: not allowed
        ("sms", "+447400123456", "r-gb-sms", "Destination denied"), // GB: not for SMS
        ("sms", "+46709991234", "r-block", "Blocked"),
        (
            "callout",
            "+449098790000",
            "r-premium",
            "Destination denied",
        ), // UK premium rate
        ("sms", "+4681234567", "r-fixed", "Destination denied"), // Stockholm fixed line, SMS
    ];
    for (method, number, reference, reason) in cases {
        let r = app.start(with_reference(method, number, reference)).await;
        let e = assert_error(r, 403, 40300).await;
        assert!(!e["message"].as_str().unwrap().is_empty());
        let s = status_by_reference(&app, reference).await;
        assert_eq!(
            (s["status"].as_str(), s["reason"].as_str()),
            (Some("DENIED"), Some(reason)),
            "{reference}"
        );
        assert!(
            app.inbox(number).await["messages"]
                .as_array()
                .unwrap()
                .is_empty()
        );
    }
    // GB by voice, the fixed line by voice, and the allow-listed French number all pass.
    app.start_ok("callout", "+447400123456").await;
    app.start_ok("callout", "+4681234567").await;
    app.start_ok("sms", "+33612345678").await;
    let m = metrics(&app).await;
    for rule in ["geo", "blocklist", "number_type", "allowlist"] {
        assert!(
            m.contains(&format!("rule=\"{rule}\"")),
            "{rule} missing in metrics"
        );
    }
}

async fn pump(app: &TestApp, prefix: &str, n: usize) -> (usize, usize) {
    let (mut ok, mut denied) = (0, 0);
    for i in 0..n {
        let r = app.start(body("sms", &format!("{prefix}{i:05}"))).await;
        match r.status().as_u16() {
            200 => ok += 1,
            403 => {
                assert_error(r, 403, 40300).await;
                denied += 1;
            }
            s => panic!("unexpected {s}"),
        }
        app.advance(Duration::seconds(10));
    }
    (ok, denied)
}

#[tokio::test]
async fn a_pumping_burst_to_one_prefix_is_blocked_while_other_traffic_flows() {
    let app = TestApp::spawn_with("admin_token = \"adm\"\n[fraud.pumping]\nmin_starts = 20").await;
    // Normal traffic to Swedish mobiles converts.
    for i in 0..5 {
        let number = format!("+4673{i:07}");
        let v = app.start_ok("sms", &number).await;
        let code = app.inbox_code(&number).await;
        app.report_id(
            v["id"].as_str().unwrap(),
            json!({"method": "sms", "sms": {"code": code}}),
        )
        .await;
    }
    // A burst to a UK prefix with no completions.
    let (ok, denied) = pump(&app, "+4474001", 40).await;
    assert_eq!(ok, 19, "the 20th start trips the rule");
    assert_eq!(denied, 21);
    // Other prefixes keep flowing, the blocked one stays blocked.
    app.start_ok("sms", "+46730001234").await;
    app.start_ok("sms", "+447500123456").await;
    assert_error(app.start(body("sms", "+447400999999")).await, 403, 40300).await;
    let blocks = app.admin_get("/admin/v1/fraud/blocks").await;
    let b = &blocks["blocks"][0];
    assert_eq!(b["key"], "pump:test-app:+4474");
    assert!(
        b["reason"].as_str().unwrap().contains("conversion 0%"),
        "{b}"
    );
    assert!(metrics(&app).await.contains("rule=\"sms_pumping\""));
    // After the cooling period the prefix is open again.
    app.advance(Duration::minutes(61));
    app.start_ok("sms", "+447400888888").await;
}

#[tokio::test]
async fn shadow_mode_only_records_what_it_would_block() {
    let app = TestApp::spawn_with(
        "admin_token = \"adm\"\n[fraud.pumping]\nmin_starts = 20\nshadow = true",
    )
    .await;
    let (ok, denied) = pump(&app, "+4474002", 30).await;
    assert_eq!((ok, denied), (30, 0));
    let blocks = app.admin_get("/admin/v1/fraud/blocks").await;
    assert_eq!(blocks["blocks"][0]["key"], "shadow:pump:test-app:+4474");
    assert!(metrics(&app).await.contains("action=\"shadow\""));
}

#[tokio::test]
async fn the_daily_spend_cap_answers_not_enough_credit() {
    let app = TestApp::spawn_with("[fraud]\ndaily_spend_cap = 0.10").await;
    app.start_ok("sms", "+46700002020").await; // 0.0453
    app.start_ok("sms", "+46700002021").await; // 0.0906
    let r = app
        .start(with_reference("sms", "+46700002022", "over-cap"))
        .await;
    let e = assert_error(r, 402, 40200).await;
    assert_eq!(e["message"], "Not enough credit");
    let s = status_by_reference(&app, "over-cap").await;
    assert_eq!(s["reason"], "Not enough credit");
    app.advance(Duration::days(1));
    app.start_ok("sms", "+46700002023").await;
}

#[tokio::test]
async fn test_numbers_script_every_outcome_and_never_reach_a_channel() {
    let app = TestApp::spawn_with(
        r#"
        [[applications]]
        name = "qa"
        key = "qa-app"
        secret = "cWEtc2VjcmV0"
        [applications.fraud]
        allowed_countries = ["US"]
        [[applications.test_numbers]]
        number = "+46700009001"
        code = "111111"
        outcome = "delivered"
        [[applications.test_numbers]]
        number = "+46700009002"
        code = "222222"
        outcome = "undeliverable"
        [[applications.test_numbers]]
        number = "+46700009003"
        code = "333333"
        outcome = "expired"
        [[applications.test_numbers]]
        number = "+46700009004"
        code = "444444"
        outcome = "denied"
        [[applications.test_numbers]]
        number = "+46700009005"
        code = "555555"
        outcome = "no_answer"
        "#,
    )
    .await;
    let qa = |method: Method, path: String, body: Option<Value>| {
        let bytes = body
            .map(|b| serde_json::to_vec(&b).unwrap())
            .unwrap_or_default();
        let app = &app;
        async move {
            app.signed_raw(
                method,
                &path,
                &bytes,
                "qa-app",
                "cWEtc2VjcmV0",
                "application/json",
            )
            .await
        }
    };
    // The status of a verification this application just started.
    let status_after_start = |method: &'static str, number: &'static str| {
        let qa = &qa;
        async move {
            let v: Value = qa(Method::POST, START.into(), Some(body(method, number)))
                .await
                .json()
                .await
                .unwrap();
            let id = v["id"].as_str().unwrap().to_string();
            qa(Method::GET, format!("{START}/id/{id}"), None)
                .await
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    // delivered: fixed code works, free, nothing in the inbox (and the SE number passes the
    // application's US-only geo rule: test numbers bypass every rule).
    let v: Value = qa(
        Method::POST,
        START.into(),
        Some(body("sms", "+46700009001")),
    )
    .await
    .json()
    .await
    .unwrap();
    let id = v["id"].as_str().unwrap().to_string();
    let r: Value = qa(
        Method::PUT,
        format!("{START}/id/{id}"),
        Some(json!({"method": "sms", "sms": {"code": "111111"}})),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(r["status"], "SUCCESSFUL");
    let s: Value = qa(Method::GET, format!("{START}/id/{id}"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(s["price"]["verificationPrice"]["amount"], 0.0);
    assert!(
        app.inbox("+46700009001").await["messages"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // undeliverable
    let s = status_after_start("sms", "+46700009002").await;
    assert_eq!(
        (s["status"].as_str(), s["reason"].as_str()),
        (Some("ERROR"), Some("SMS delivery failure"))
    );
    // expired
    let s = status_after_start("sms", "+46700009003").await;
    assert_eq!(
        (s["status"].as_str(), s["reason"].as_str()),
        (Some("FAIL"), Some("Expired"))
    );
    // denied by fraud rules
    let r = qa(
        Method::POST,
        START.into(),
        Some(body("sms", "+46700009004")),
    )
    .await;
    assert_error(r, 403, 40300).await;
    // a call nobody answers
    let s = status_after_start("callout", "+46700009005").await;
    assert_eq!(
        (s["status"].as_str(), s["callResult"].as_str()),
        (Some("ERROR"), Some("NO_ANSWER"))
    );
    assert_eq!(s["reason"], "Network error or number unreachable");
    // A non-test number of this application is held to its rules.
    let r = qa(
        Method::POST,
        START.into(),
        Some(body("sms", "+46700009999")),
    )
    .await;
    assert_error(r, 403, 40300).await;
}

#[tokio::test]
async fn metrics_count_starts_and_finishes_by_method_country_and_status() {
    let app = TestApp::spawn().await;
    let v = app.start_ok("whatsapp", "+46700002030").await;
    let code = app.inbox_code("+46700002030").await;
    app.report_id(
        v["id"].as_str().unwrap(),
        json!({"method": "whatsapp", "whatsapp": {"code": code}}),
    )
    .await;
    let m = metrics(&app).await;
    assert!(
        m.contains("verifyd_verifications_started_total{method=\"whatsapp\",country=\"SE\"}"),
        "{m}"
    );
    assert!(m.contains("verifyd_verifications_finished_total{method=\"whatsapp\",country=\"SE\",status=\"SUCCESSFUL\",reason=\"\"}"), "{m}");
    assert!(m.contains("verifyd_deliveries_total{channel=\"dev-inbox\",outcome=\"sent\"}"));
}
