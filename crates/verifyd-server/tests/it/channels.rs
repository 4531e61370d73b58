//! Real HTTP channels behind routes, against local provider mocks: WhatsApp Cloud API with
//! its signed status webhook and subscription handshake, Twilio with its signed status
//! callback, and the WhatsApp → SMS fallback across two real channels.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, outcome};

/// A provider mock: records requests, answers from a fixed function.
#[derive(Clone, Default)]
struct Mock {
    seen: Arc<Mutex<Vec<(String, HeaderMap, String)>>>,
    /// (status, body) by path prefix; the first match wins.
    answers: Arc<Mutex<Vec<(String, u16, String)>>>,
}

impl Mock {
    async fn start(answers: Vec<(&str, u16, Value)>) -> (Self, String) {
        let mock = Mock::default();
        *mock.answers.lock().unwrap() = answers
            .into_iter()
            .map(|(p, s, b)| (p.to_string(), s, b.to_string()))
            .collect();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new().fallback(handle).with_state(mock.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (mock, url)
    }
    fn requests(&self) -> Vec<(String, HeaderMap, String)> {
        self.seen.lock().unwrap().clone()
    }
}

async fn handle(
    State(m): State<Mock>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let path = uri.path().to_string();
    m.seen.lock().unwrap().push((
        path.clone(),
        headers,
        String::from_utf8_lossy(&body).to_string(),
    ));
    let answer = m
        .answers
        .lock()
        .unwrap()
        .iter()
        .find(|(p, _, _)| path.starts_with(p.as_str()))
        .cloned();
    match answer {
        Some((_, status, body)) => (
            StatusCode::from_u16(status).unwrap(),
            [("content-type", "application/json")],
            body,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn whatsapp_config(base: &str) -> String {
    format!(
        r#"
admin_token = "adm"
[[channels.whatsapp]]
name = "wa"
phone_number_id = "1234567890"
access_token = "EAAtoken"
template_name = "verification_code"
base_url = "{base}"
app_secret = "wa-app-secret"
verify_token = "wa-verify"
"#
    )
}

fn twilio_config(base: &str) -> String {
    format!(
        r#"
[[channels.http_sms]]
name = "twilio"
provider = "twilio"
base_url = "{base}"
account_sid = "AC0123456789abcdef0123456789abcdef"
auth_token = "twilio-token"
from = "Verifyd"
"#
    )
}

async fn wait_for_status(app: &TestApp, id: &str, status: &str) -> Value {
    for _ in 0..200 {
        let s = app.status_id(id).await;
        if s["status"] == status {
            return s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    app.status_id(id).await
}

async fn attempts(app: &TestApp, id: &str) -> Vec<String> {
    app.attempts(id).await.iter().map(outcome).collect()
}

async fn attempts_at_least(app: &TestApp, id: &str, n: usize) -> Vec<String> {
    app.attempts_at_least(id, n)
        .await
        .iter()
        .map(outcome)
        .collect()
}

#[tokio::test]
async fn whatsapp_sends_the_template_and_its_signed_status_webhook_is_applied() {
    let (graph, base) = Mock::start(vec![(
        "/v23.0/1234567890/messages",
        200,
        json!({"messaging_product": "whatsapp", "contacts": [{"input": "46700005001", "wa_id": "46700005001"}], "messages": [{"id": "wamid.ABC"}]}),
    )])
    .await;
    let app = TestApp::spawn_with(&format!(
        "{}\n[[routes]]\nname = \"wa\"\nmethods = [\"whatsapp\"]\nchannel = \"wa\"",
        whatsapp_config(&base)
    ))
    .await;
    let v = app.start_ok("whatsapp", "+46700005001").await;
    let id = v["id"].as_str().unwrap();
    let sent = graph.requests();
    assert_eq!(sent.len(), 1);
    let (path, headers, body) = &sent[0];
    assert_eq!(path, "/v23.0/1234567890/messages");
    assert_eq!(headers["authorization"], "Bearer EAAtoken");
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["to"], "46700005001");
    assert_eq!(body["template"]["name"], "verification_code");
    let code = body["template"]["components"][0]["parameters"][0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(code.len(), 6);
    assert_eq!(attempts_at_least(&app, id, 1).await, vec!["submitted"]);

    // The subscription handshake.
    let r = app.http.get(format!("{}/webhooks/v1/whatsapp/wa?hub.mode=subscribe&hub.verify_token=wa-verify&hub.challenge=1158201444", app.url))
        .send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "1158201444");
    let r = app
        .http
        .get(format!(
            "{}/webhooks/v1/whatsapp/wa?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1",
            app.url
        ))
        .send()
        .await
        .unwrap();
    assert_error(r, 403, 40300).await;

    // A status webhook: a forged one is refused, the signed one applied.
    let status = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages",
        "value": {"messaging_product": "whatsapp", "metadata": {"phone_number_id": "1234567890"},
        "statuses": [{"id": "wamid.ABC", "status": "delivered", "timestamp": "1700000000", "recipient_id": "46700005001"}]}}]}]})
    .to_string();
    let sign = |secret: &str| {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(status.as_bytes());
        format!(
            "sha256={}",
            mac.finalize()
                .into_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        )
    };
    let post = |sig: String| {
        app.http
            .post(format!("{}/webhooks/v1/whatsapp/wa", app.url))
            .header("x-hub-signature-256", sig)
            .header("content-type", "application/json")
            .body(status.clone())
            .send()
    };
    assert_error(post(sign("wrong")).await.unwrap(), 401, 40102).await;
    assert_eq!(post(sign("wa-app-secret")).await.unwrap().status(), 200);
    for _ in 0..200 {
        if attempts(&app, id).await.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(attempts(&app, id).await, vec!["submitted", "delivered"]);
    // The code from the template completes the verification.
    let r: Value = app
        .report_id(
            id,
            json!({"method": "whatsapp", "whatsapp": {"code": code}}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "SUCCESSFUL");
}

#[tokio::test]
async fn twilio_sends_a_form_and_a_signed_undelivered_callback_fails_the_verification() {
    let (twilio, base) = Mock::start(vec![(
        "/2010-04-01/Accounts/",
        201,
        json!({"sid": "SM0123456789abcdef0123456789abcdef", "status": "queued"}),
    )])
    .await;
    let app = TestApp::spawn_with(&format!(
        "admin_token = \"adm\"\n{}\n[[routes]]\nname = \"tw\"\nmethods = [\"sms\"]\nchannel = \"twilio\"\nsender = \"MyBrand\"",
        twilio_config(&base)
    ))
    .await;
    let v = app.start_ok("sms", "+46700005002").await;
    let id = v["id"].as_str().unwrap();
    let (path, headers, body) = twilio.requests()[0].clone();
    assert_eq!(
        path,
        "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json"
    );
    let basic = base64::engine::general_purpose::STANDARD
        .encode("AC0123456789abcdef0123456789abcdef:twilio-token");
    assert_eq!(headers["authorization"], format!("Basic {basic}"));
    let form: Vec<(String, String)> = serde_urlencoded::from_str(&body).unwrap();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("To").as_deref(), Some("+46700005002"));
    assert_eq!(
        get("From").as_deref(),
        Some("MyBrand"),
        "the route's sender"
    );
    assert_eq!(
        get("StatusCallback"),
        Some(format!("{}/webhooks/v1/sms/twilio", app.url))
    );

    // Twilio's status callback, signed over the callback URL and the sorted form.
    let params = [
        ("MessageSid", "SM0123456789abcdef0123456789abcdef"),
        ("MessageStatus", "undelivered"),
        ("ErrorCode", "30003"),
    ];
    let url = format!("{}/webhooks/v1/sms/twilio", app.url);
    let mut to_sign = url.clone();
    let mut sorted = params.to_vec();
    sorted.sort();
    for (k, v) in &sorted {
        to_sign.push_str(k);
        to_sign.push_str(v);
    }
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(b"twilio-token").unwrap();
    mac.update(to_sign.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let form_body = serde_urlencoded::to_string(params).unwrap();
    let r = app
        .http
        .post(&url)
        .header("x-twilio-signature", "forged")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body.clone())
        .send()
        .await
        .unwrap();
    assert_error(r, 401, 40102).await;
    let r = app
        .http
        .post(&url)
        .header("x-twilio-signature", signature)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let s = wait_for_status(&app, id, "ERROR").await;
    assert_eq!(
        (s["status"].as_str(), s["reason"].as_str()),
        (Some("ERROR"), Some("SMS delivery failure"))
    );
}

#[tokio::test]
async fn whatsapp_without_an_account_falls_back_to_sms_through_twilio() {
    let (_graph, wa_base) = Mock::start(vec![(
        "/v23.0/",
        400,
        json!({"error": {"message": "(#131026) Message undeliverable", "type": "OAuthException", "code": 131026, "fbtrace_id": "x"}}),
    )])
    .await;
    let (twilio, tw_base) = Mock::start(vec![(
        "/2010-04-01/",
        201,
        json!({"sid": "SM1", "status": "queued"}),
    )])
    .await;
    let app = TestApp::spawn_with(&format!(
        "{}\n{}\n[[routes]]\nname = \"wa\"\nmethods = [\"whatsapp\"]\nchannel = \"wa\"\n[[routes]]\nname = \"sms\"\nmethods = [\"sms\"]\nchannel = \"twilio\"",
        whatsapp_config(&wa_base),
        twilio_config(&tw_base)
    ))
    .await;
    let v = app.start_ok("whatsapp", "+46700005003").await;
    let id = v["id"].as_str().unwrap();
    let (_, _, body) = twilio.requests()[0].clone();
    let form: Vec<(String, String)> = serde_urlencoded::from_str(&body).unwrap();
    let text = form.iter().find(|(k, _)| k == "Body").unwrap().1.clone();
    let code: String = text.chars().filter(char::is_ascii_digit).collect();
    assert_eq!(code.len(), 6, "{text}");
    assert_eq!(
        attempts_at_least(&app, id, 2).await,
        vec![
            "unreachable: whatsapp: HTTP 400, error 131026 (message undeliverable)".to_string(),
            "submitted".to_string()
        ]
    );
    let r: Value = app
        .report_id(
            id,
            json!({"method": "whatsapp", "whatsapp": {"code": code}}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "SUCCESSFUL");
}
