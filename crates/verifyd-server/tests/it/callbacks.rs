//! Callbacks: the request event (allow, deny, overrides, failures, public auth) and the
//! result / SMS-delivered events from the outbox (signing, retries, dead letters, admin API).

use std::sync::Arc;

use reqwest::Method;
use serde_json::{Value, json};
use time::Duration;
use tokio::sync::Notify;

use crate::helpers::{TestApp, assert_error};
use crate::receiver::{Answer, Receiver};

const CB_KEY: &str = "cb-app";
const CB_SECRET: &str = "Y2Itc2VjcmV0";
const START: &str = "/verification/v1/verifications";

/// A server whose application `cb-app` calls back to a fresh receiver.
async fn spawn(app_fields: &str, config: &str) -> (TestApp, Receiver) {
    let receiver = Receiver::start(CB_KEY, CB_SECRET).await;
    let app = TestApp::spawn_with(&format!(
        "admin_token = \"admin-secret\"\n{config}\n[[applications]]\nname = \"cb\"\nkey = \"{CB_KEY}\"\nsecret = \"{CB_SECRET}\"\ncallback_url = \"{}\"\n{app_fields}",
        receiver.url
    ))
    .await;
    (app, receiver)
}

async fn start(app: &TestApp, body: Value) -> reqwest::Response {
    let bytes = serde_json::to_vec(&body).unwrap();
    app.signed_raw(
        Method::POST,
        START,
        &bytes,
        CB_KEY,
        CB_SECRET,
        "application/json",
    )
    .await
}

async fn start_with_language(app: &TestApp, body: Value, lang: &str) -> reqwest::Response {
    let bytes = serde_json::to_vec(&body).unwrap();
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
        CB_KEY,
        &verifyd_api::signing::decode_secret(CB_SECRET).unwrap(),
    );
    app.http
        .post(format!("{}{START}", app.url))
        .header("authorization", auth)
        .header("x-timestamp", ts)
        .header("content-type", "application/json")
        .header("accept-language", lang)
        .body(bytes)
        .send()
        .await
        .unwrap()
}

async fn cb_get(app: &TestApp, path: &str) -> Value {
    let r = app
        .signed_raw(Method::GET, path, b"", CB_KEY, CB_SECRET, "")
        .await;
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

async fn cb_report(app: &TestApp, id: &str, body: Value) -> Value {
    let bytes = serde_json::to_vec(&body).unwrap();
    let r = app
        .signed_raw(
            Method::PUT,
            &format!("{START}/id/{id}"),
            &bytes,
            CB_KEY,
            CB_SECRET,
            "application/json",
        )
        .await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn sms(number: &str) -> Value {
    json!({"identity": {"type": "number", "endpoint": number}, "method": "sms"})
}

#[tokio::test]
async fn the_request_event_carries_the_sinch_fields_signed_and_allow_proceeds() {
    let (app, rx) = spawn("", "").await;
    let body = json!({"identity": {"type": "number", "endpoint": "+46700000901"}, "method": "sms",
        "reference": "ref-901", "custom": "my custom"});
    let r = start_with_language(&app, body, "sv-SE, en;q=0.5").await;
    assert_eq!(r.status(), 200);
    let started: Value = r.json().await.unwrap();
    let got = rx.events("VerificationRequestEvent");
    assert_eq!(got.len(), 1);
    let e = &got[0];
    assert!(e.valid, "signature must verify");
    assert!(
        e.headers["authorization"]
            .to_str()
            .unwrap()
            .starts_with("application cb-app:")
    );
    assert_eq!(e.headers["content-type"], "application/json");
    assert_eq!(e.path, "/hooks/verification");
    assert!(!e.body.contains(": "), "compact JSON");
    assert_eq!(
        e.json,
        json!({"id": started["id"], "event": "VerificationRequestEvent", "method": "sms",
            "identity": {"type": "number", "endpoint": "+46700000901"},
            "price": {"currencyId": "EUR", "amount": 0.0453}, "rate": {"currencyId": "EUR", "amount": 0.0},
            "reference": "ref-901", "custom": "my custom", "acceptLanguage": ["sv-SE", "en"]})
    );
    assert_eq!(
        app.inbox("+46700000901").await["messages"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn deny_records_denied_by_callback_sends_nothing_and_emits_the_result() {
    let (app, rx) = spawn("", "").await;
    rx.script([Answer::json(json!({"action": "deny"}))]);
    let r = start(
        &app,
        json!({"identity": {"type": "number", "endpoint": "+46700000902"},
        "method": "sms", "reference": "denied-1"}),
    )
    .await;
    let body = assert_error(r, 403, 40300).await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("denied by callback")
    );
    assert!(
        app.inbox("+46700000902").await["messages"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let s = cb_get(&app, "/verification/v1/verifications/reference/denied-1").await;
    assert_eq!(
        (s["status"].as_str(), s["reason"].as_str()),
        (Some("DENIED"), Some("Denied by callback"))
    );
    assert_eq!(app.app.deliver_due_events().await.unwrap(), 1);
    let results = rx.events("VerificationResultEvent");
    assert_eq!(results.len(), 1);
    assert!(results[0].valid);
    assert_eq!(results[0].json["status"], "DENIED");
    assert_eq!(results[0].json["reason"], "Denied by callback");
    assert_eq!(results[0].json["reference"], "denied-1");
}

#[tokio::test]
async fn sms_overrides_set_code_type_expiry_and_language() {
    let (app, rx) = spawn("", "").await;
    rx.script([Answer::json(json!({"action": "allow",
        "sms": {"code": "4242", "codeType": "Numeric", "expiry": "00:00:30", "acceptLanguage": ["sv-SE"]}}))]);
    let r = start(&app, sms("+46700000903")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-language"], "sv-SE");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["sms"]["interceptionTimeout"], 30);
    let msg = &app.inbox("+46700000903").await["messages"][0];
    assert_eq!(msg["code"], "4242");
    assert_eq!(msg["body"], "Din verifieringskod är 4242.");
    app.advance(Duration::seconds(31));
    let r = cb_report(
        &app,
        v["id"].as_str().unwrap(),
        json!({"method": "sms", "sms": {"code": "4242"}}),
    )
    .await;
    assert_eq!(r["reason"], "Expired");
}

#[tokio::test]
async fn call_and_whatsapp_overrides_are_honoured() {
    let (app, rx) = spawn(
        "",
        "[flashcall]\ncli_ranges = [{ prefix = \"+4670009\", digits = 4 }]",
    )
    .await;
    rx.script([
        Answer::json(json!({"action": "allow", "flashCall": {"cli": "+46700091234", "interceptionTimeout": 40}})),
        Answer::json(json!({"action": "allow", "callout": {"code": 4567, "speech": {"locale": "sv-SE"}}})),
        Answer::json(json!({"action": "allow", "whatsapp": {"codeType": "Alpha"}})),
    ]);
    let r = start(
        &app,
        json!({"identity": {"type": "number", "endpoint": "+46700000904"}, "method": "flashcall"}),
    )
    .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["flashCall"]["interceptionTimeout"], 40);
    assert_eq!(app.inbox_code("+46700000904").await, "+46700091234");

    let r = start(
        &app,
        json!({"identity": {"type": "number", "endpoint": "+46700000905"}, "method": "callout"}),
    )
    .await;
    assert_eq!(r.headers()["content-language"], "sv-SE");
    let msg = &app.inbox("+46700000905").await["messages"][0];
    assert_eq!(msg["code"], "4567");
    assert!(
        msg["body"]
            .as_str()
            .unwrap()
            .starts_with("Din verifieringskod är 4 5 6 7.")
    );

    let r = start(
        &app,
        json!({"identity": {"type": "number", "endpoint": "+46700000906"}, "method": "whatsapp"}),
    )
    .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["whatsapp"]["codeType"], "Alpha");
    assert!(
        app.inbox_code("+46700000906")
            .await
            .bytes()
            .all(|b| b.is_ascii_uppercase())
    );
}

#[tokio::test]
async fn unusable_answers_deny_with_invalid_callback_when_failing_closed() {
    let (app, rx) = spawn("", "[callbacks]\nrequest_timeout_ms = 200").await;
    let never = Arc::new(Notify::new());
    rx.script([
        Answer {
            gate: Some(never.clone()),
            ..Answer::json(json!({"action": "allow"}))
        },
        Answer::status(500),
        Answer::raw(200, "not json"),
        Answer::json(json!({"action": "maybe"})),
        Answer::json(json!({"sms": {}})),
        Answer::json(json!({"action": "allow", "sms": {"code": "no spaces allowed"}})),
        Answer::json(json!({"action": "allow", "flashCall": {"cli": "+19999999999"}})),
    ]);
    for (i, method) in ["sms", "sms", "sms", "sms", "sms", "sms", "flashcall"]
        .iter()
        .enumerate()
    {
        let number = format!("+4670000091{i}");
        let r = start(
            &app,
            json!({"identity": {"type": "number", "endpoint": number}, "method": method,
            "reference": format!("bad-{i}")}),
        )
        .await;
        assert_error(r, 403, 40300).await;
        let s = cb_get(
            &app,
            &format!("/verification/v1/verifications/reference/bad-{i}"),
        )
        .await;
        assert_eq!(
            (s["status"].as_str(), s["reason"].as_str()),
            (Some("DENIED"), Some("Invalid callback")),
            "case {i}"
        );
        assert!(
            app.inbox(&number).await["messages"]
                .as_array()
                .unwrap()
                .is_empty()
        );
    }
    never.notify_waiters();
}

#[tokio::test]
async fn failing_open_proceeds_when_the_backend_does_not_answer() {
    let (app, rx) = spawn("callback_fail_open = true", "").await;
    rx.script([Answer::status(502)]);
    let r = start(&app, sms("+46700000920")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        app.inbox("+46700000920").await["messages"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn public_auth_goes_through_the_request_event_and_cannot_set_options_or_read_status() {
    let (app, rx) = spawn("min_auth = \"public\"", "").await;
    let body = json!({"identity": {"type": "number", "endpoint": "+46700000930"}, "method": "sms",
        "smsOptions": {"expiry": "24:00:00", "template": "Attacker text {{CODE}}"}});
    let public = |body: &Value| {
        app.http
            .post(format!("{}{START}", app.url))
            .header("authorization", format!("Application {CB_KEY}"))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(body).unwrap())
            .send()
    };
    let r = public(&body).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["sms"]["interceptionTimeout"], 600,
        "the device cannot choose the expiry"
    );
    assert_eq!(v["sms"]["template"], "Your verification code is {{CODE}}.");
    assert_eq!(rx.events("VerificationRequestEvent").len(), 1);
    rx.script([Answer::json(json!({"action": "deny"}))]);
    app.advance(Duration::seconds(1));
    assert_error(public(&body).await.unwrap(), 403, 40300).await;
    let r = app
        .http
        .get(format!(
            "{}{START}/id/{}",
            app.url,
            v["id"].as_str().unwrap()
        ))
        .header("authorization", format!("Application {CB_KEY}"))
        .send()
        .await
        .unwrap();
    assert_error(r, 401, 40107).await;

    // The same application without a callback URL (e.g. removed later) answers 40303.
    let store = app.app.store();
    let mut stored = store.application(CB_KEY).await.unwrap().unwrap();
    stored.callback_url = None;
    store.upsert_application(&stored).await.unwrap();
    app.advance(Duration::seconds(11)); // past the application cache
    assert_error(public(&body).await.unwrap(), 403, 40303).await;
}

#[tokio::test]
async fn every_final_state_and_delivery_receipt_is_announced_once_and_signed() {
    let (app, rx) = spawn("", "").await;
    // SUCCESSFUL (+ SMS delivered).
    let ok: Value = start(
        &app,
        json!({"identity": {"type": "number", "endpoint": "+46700000940"},
        "method": "sms", "reference": "r-ok", "custom": "c-ok"}),
    )
    .await
    .json()
    .await
    .unwrap();
    let code = app.inbox_code("+46700000940").await;
    cb_report(
        &app,
        ok["id"].as_str().unwrap(),
        json!({"method": "sms", "sms": {"code": code}}),
    )
    .await;
    // FAIL after three wrong codes.
    let bad: Value = start(&app, sms("+46700000941")).await.json().await.unwrap();
    for _ in 0..3 {
        cb_report(
            &app,
            bad["id"].as_str().unwrap(),
            json!({"method": "sms", "sms": {"code": "0"}}),
        )
        .await;
    }
    // ABORTED by a newer start, then FAIL / Expired by the sweeper.
    let old: Value = start(
        &app,
        json!({"identity": {"type": "number", "endpoint": "+46700000942"}, "method": "callout"}),
    )
    .await
    .json()
    .await
    .unwrap();
    app.advance(Duration::seconds(1)); // the minimum interval between starts to one number
    let newer: Value = start(
        &app,
        json!({"identity": {"type": "number", "endpoint": "+46700000942"}, "method": "callout"}),
    )
    .await
    .json()
    .await
    .unwrap();
    app.advance(Duration::minutes(11));
    app.app.sweep_once().await.unwrap();

    app.app.deliver_due_events().await.unwrap();
    assert_eq!(
        app.app.deliver_due_events().await.unwrap(),
        0,
        "nothing left"
    );
    let all = rx.received();
    assert!(all.iter().all(|r| r.valid), "every callback verifies");
    let results: Vec<(String, String, Option<String>)> = rx
        .events("VerificationResultEvent")
        .iter()
        .map(|e| {
            (
                e.json["id"].as_str().unwrap().to_string(),
                e.json["status"].as_str().unwrap().to_string(),
                e.json["reason"].as_str().map(str::to_string),
            )
        })
        .collect();
    let id = |v: &Value| v["id"].as_str().unwrap().to_string();
    for expected in [
        (id(&ok), "SUCCESSFUL".to_string(), None),
        (
            id(&bad),
            "FAIL".to_string(),
            Some("Invalid code".to_string()),
        ),
        (id(&old), "ABORTED".to_string(), None),
        (id(&newer), "FAIL".to_string(), Some("Expired".to_string())),
    ] {
        assert_eq!(
            results.iter().filter(|r| **r == expected).count(),
            1,
            "{expected:?} in {results:?}"
        );
    }
    assert_eq!(results.len(), 4);
    let success = rx
        .events("VerificationResultEvent")
        .into_iter()
        .find(|e| e.json["id"] == ok["id"])
        .unwrap();
    assert_eq!(success.json["source"], "manual");
    assert_eq!(success.json["custom"], "c-ok");
    assert_eq!(success.json["method"], "sms");
    assert_eq!(
        success.json["identity"],
        json!({"type": "number", "endpoint": "+46700000940"})
    );
    let delivered = rx.events("VerificationSmsDeliveredEvent");
    assert_eq!(delivered.len(), 2, "one per SMS sent");
    assert!(
        delivered
            .iter()
            .all(|e| e.json["smsResult"] == "Successful")
    );
}

#[tokio::test]
async fn a_down_receiver_gets_every_event_once_it_is_back_honouring_retry_after() {
    let (app, rx) = spawn("", "").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let v: Value = start(
            &app,
            json!({"identity": {"type": "number", "endpoint": format!("+4670000095{i}")},
            "method": "flashcall"}),
        )
        .await
        .json()
        .await
        .unwrap();
        ids.push(v["id"].as_str().unwrap().to_string());
        let cli = app.inbox_code(&format!("+4670000095{i}")).await;
        cb_report(
            &app,
            &ids[i],
            json!({"method": "flashcall", "flashCall": {"cli": cli}}),
        )
        .await;
    }
    // The backend goes down (after approving the starts).
    rx.fallback(Some(Answer {
        retry_after: Some(120),
        ..Answer::status(503)
    }));
    let requests_before = rx.received().len();
    assert_eq!(app.app.deliver_due_events().await.unwrap(), 3);
    assert_eq!(
        rx.received().len(),
        requests_before + 3,
        "one attempt each while down"
    );
    // Retry-After: 120 s. Nothing is due before that, whatever the back-off would say.
    app.advance(Duration::seconds(119));
    assert_eq!(app.app.deliver_due_events().await.unwrap(), 0);
    rx.fallback(None); // back up
    app.advance(Duration::seconds(2));
    assert_eq!(app.app.deliver_due_events().await.unwrap(), 3);
    app.advance(Duration::hours(1));
    assert_eq!(
        app.app.deliver_due_events().await.unwrap(),
        0,
        "delivered events are not sent again"
    );
    let accepted: Vec<String> = rx.received()[requests_before + 3..]
        .iter()
        .map(|r| r.json["id"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = accepted.clone();
    sorted.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(sorted, expected);
}

#[tokio::test]
async fn events_are_dead_lettered_after_the_max_age_and_an_operator_can_redeliver_them() {
    let (app, rx) = spawn(
        "",
        "[callbacks]\nmax_age_seconds = 60\nretry_max_seconds = 20",
    )
    .await;
    let v: Value = start(
        &app,
        json!({"identity": {"type": "number", "endpoint": "+46700000960"}, "method": "callout"}),
    )
    .await
    .json()
    .await
    .unwrap();
    rx.fallback(Some(Answer::status(500)));
    app.advance(Duration::minutes(11));
    app.app.sweep_once().await.unwrap();
    // Keep failing until the 60 s window is over.
    for _ in 0..20 {
        app.app.deliver_due_events().await.unwrap();
        app.advance(Duration::seconds(20));
    }
    let admin = |path: &str, method: Method| {
        app.http
            .request(method, format!("{}{path}", app.url))
            .header("authorization", "Bearer admin-secret")
            .send()
    };
    let listed: Value = admin("/admin/v1/events?state=dead", Method::GET)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let dead = listed["events"].as_array().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["verificationId"], v["id"]);
    assert_eq!(dead[0]["lastError"], "HTTP 500");
    let attempts = dead[0]["attempts"].as_u64().unwrap();
    assert!(attempts >= 3, "{attempts}");
    // Wrong or missing token.
    let r = app
        .http
        .get(format!("{}/admin/v1/events", app.url))
        .header("authorization", "Bearer nope")
        .send()
        .await
        .unwrap();
    assert_error(r, 401, 40107).await;
    // Redeliver once the receiver works again.
    rx.fallback(None);
    let id = dead[0]["id"].as_i64().unwrap();
    let r = admin(&format!("/admin/v1/events/{id}/redeliver"), Method::POST)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_error(
        admin("/admin/v1/events/999999/redeliver", Method::POST)
            .await
            .unwrap(),
        404,
        40400,
    )
    .await;
    assert_eq!(app.app.deliver_due_events().await.unwrap(), 1);
    let last = rx.received().pop().unwrap();
    assert_eq!(last.json["id"], v["id"]);
    assert_eq!(last.json["reason"], "Expired");
    let listed: Value = admin("/admin/v1/events?state=delivered", Method::GET)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["events"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_slow_receiver_delays_only_its_own_application() {
    let slow = Receiver::start(CB_KEY, CB_SECRET).await;
    let fast = Receiver::start("fast-app", "ZmFzdA==").await;
    let app = TestApp::spawn_with(&format!(
        "[[applications]]\nname = \"slow\"\nkey = \"{CB_KEY}\"\nsecret = \"{CB_SECRET}\"\ncallback_url = \"{}\"\n\
         [[applications]]\nname = \"fast\"\nkey = \"fast-app\"\nsecret = \"ZmFzdA==\"\ncallback_url = \"{}\"",
        slow.url, fast.url
    ))
    .await;
    let gate = Arc::new(Notify::new());
    let v: Value = start(
        &app,
        json!({"identity": {"type": "number", "endpoint": "+46700000970"}, "method": "seamless"}),
    )
    .await
    .json()
    .await
    .unwrap();
    app.http
        .get(v["seamless"]["targetUri"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let body = serde_json::to_vec(
        &json!({"identity": {"type": "number", "endpoint": "+46700000971"}, "method": "seamless"}),
    )
    .unwrap();
    let fast_v: Value = app
        .signed_raw(
            Method::POST,
            START,
            &body,
            "fast-app",
            "ZmFzdA==",
            "application/json",
        )
        .await
        .json()
        .await
        .unwrap();
    app.http
        .get(fast_v["seamless"]["targetUri"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    // The slow backend holds its result event open until the gate opens.
    slow.script([Answer {
        gate: Some(gate.clone()),
        ..Answer::status(200)
    }]);
    let delivering = tokio::spawn({
        let app = app.app.clone();
        async move { app.deliver_due_events().await.unwrap() }
    });
    let got = fast.wait_for(2).await; // request event + result event
    assert_eq!(got[1].json["event"], "VerificationResultEvent");
    assert!(
        !delivering.is_finished(),
        "the slow application's delivery is still in flight"
    );
    gate.notify_waiters();
    assert_eq!(delivering.await.unwrap(), 2);
}

#[tokio::test]
async fn callbacks_to_forbidden_addresses_are_refused_without_a_connection() {
    // A literal private address: refused before any packet is sent.
    let app = TestApp::spawn_with(&format!(
        "[[applications]]\nname = \"ssrf\"\nkey = \"{CB_KEY}\"\nsecret = \"{CB_SECRET}\"\ncallback_url = \"http://10.0.0.1/hook\""
    ))
    .await;
    let r = start(&app, json!({"identity": {"type": "number", "endpoint": "+46700000980"}, "method": "sms", "reference": "ssrf"})).await;
    assert_error(r, 403, 40300).await;
    let s = cb_get(&app, "/verification/v1/verifications/reference/ssrf").await;
    assert_eq!(s["reason"], "Invalid callback");

    // Loopback (by name and by address) is refused once loopback is not allowed ...
    let rx = Receiver::start(CB_KEY, CB_SECRET).await;
    let by_name = rx.url.replace("127.0.0.1", "localhost");
    for url in [rx.url.clone(), by_name] {
        let app = TestApp::spawn_with(&format!(
            "[callbacks]\nallow_loopback = false\n[[applications]]\nname = \"lb\"\nkey = \"{CB_KEY}\"\nsecret = \"{CB_SECRET}\"\ncallback_url = \"{url}\""
        ))
        .await;
        assert_error(start(&app, sms("+46700000981")).await, 403, 40300).await;
    }
    assert!(rx.received().is_empty(), "no request reached the receiver");
    // ... unless the application explicitly allows private destinations.
    let app = TestApp::spawn_with(&format!(
        "[callbacks]\nallow_loopback = false\n[[applications]]\nname = \"lb\"\nkey = \"{CB_KEY}\"\nsecret = \"{CB_SECRET}\"\ncallback_url = \"{}\"\nallow_private_callbacks = true",
        rx.url
    ))
    .await;
    assert_eq!(start(&app, sms("+46700000982")).await.status(), 200);
    assert_eq!(rx.received().len(), 1);
}
