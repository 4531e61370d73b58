//! The HTTP SMS channel against in-process axum mocks of Sinch, Twilio and Vonage.
//!
//! Each mock records the request (method, path, headers, body) and answers the way the
//! provider does, so the tests pin the exact request shape from each provider's API
//! reference and the mapping of every kind of answer onto `SendError`. The webhook parsers
//! are pure and tested on realistic payloads; the Twilio signature is checked against the
//! published vectors of Twilio's own helper libraries.
#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
#![allow(clippy::expect_used, reason = "tests fail loudly on unexpected errors")]

mod common;

use std::time::Duration;

use axum::http::Method;
use common::{Mock, Reply};
use serde_json::{Value, json};
use time::OffsetDateTime;
use verifyd_channels::http_sms::{
    HttpSmsChannel, HttpSmsConfig, Provider, SinchConfig, TwilioConfig, TwilioSender, VonageConfig,
    sinch, twilio, vonage,
};
use verifyd_channels::{Channel, Delivery, OutboundMessage, Payload, ReceiptStatus, SendError};
use verifyd_core::{Method as VerifyMethod, PhoneNumber};

const SINCH_TOKEN: &str = "sinch-api-token-0123456789";
const TWILIO_SID: &str = "AC0123456789abcdef0123456789abcdef";
const TWILIO_TOKEN: &str = "twilio-auth-token-secret";
const VONAGE_SECRET: &str = "vonage-api-secret";

// ---- helpers ------------------------------------------------------------------------------

fn sms(body: &str) -> OutboundMessage {
    OutboundMessage {
        verification_id: "ver_1".into(),
        app: "app".into(),
        method: VerifyMethod::Sms,
        to: PhoneNumber::parse("+46700000001").unwrap(),
        payload: Payload::Text {
            body: body.into(),
            code: "481516".into(),
            locale: "en-US".into(),
        },
        sender: None,
        created_at: OffsetDateTime::UNIX_EPOCH,
    }
}

fn sinch_provider(base_url: &str) -> Provider {
    let mut c = SinchConfig::new("plan0123456789", SINCH_TOKEN, "+46700000099");
    c.base_url = format!("{base_url}/");
    c.callback_url = Some("https://verifyd.example.com/webhooks/sinch/dlr".into());
    Provider::Sinch(c)
}

fn twilio_provider(base_url: &str, sender: TwilioSender) -> Provider {
    let mut c = TwilioConfig::new(TWILIO_SID, TWILIO_TOKEN, sender);
    c.base_url = base_url.to_string();
    c.status_callback = Some("https://verifyd.example.com/webhooks/twilio/status".into());
    Provider::Twilio(c)
}

fn vonage_provider(base_url: &str) -> Provider {
    let mut c = VonageConfig::new("abcd1234", VONAGE_SECRET, "Verifyd");
    c.base_url = base_url.to_string();
    c.callback = Some("https://verifyd.example.com/webhooks/vonage/dlr".into());
    Provider::Vonage(c)
}

fn channel(provider: Provider) -> HttpSmsChannel {
    let mut config = HttpSmsConfig::new("sms:test", provider);
    config.timeout = Duration::from_secs(5);
    HttpSmsChannel::new(config).unwrap()
}

/// Sends one text through a fresh mock answering `reply`, built by `provider(base_url)`.
async fn send_with(
    provider: impl Fn(&str) -> Provider,
    reply: Reply,
) -> (Result<Delivery, SendError>, Mock) {
    let mock = Mock::start(reply).await;
    let result = channel(provider(&mock.base_url))
        .send(&sms("Your code is 481516"))
        .await;
    (result, mock)
}

fn assert_retryable(result: Result<Delivery, SendError>, after: Option<u64>) {
    match result {
        Err(SendError::Retryable { retry_after, .. }) => {
            assert_eq!(retry_after, after.map(Duration::from_secs));
        }
        other => panic!("expected retryable, got {other:?}"),
    }
}

fn assert_permanent(result: Result<Delivery, SendError>) -> String {
    match result {
        Err(SendError::Permanent { reason }) => reason,
        other => panic!("expected permanent, got {other:?}"),
    }
}

// ---- Sinch ----------------------------------------------------------------------------------

/// A batch as Sinch answers `POST /batches` (201).
fn sinch_batch() -> Value {
    json!({
        "id": "01FC66621XXXXX119Z8PMV1QPQ",
        "to": ["+46700000001"],
        "from": "+46700000099",
        "canceled": false,
        "body": "Your code is 481516",
        "type": "mt_text",
        "created_at": "2026-11-26T08:00:00.000Z",
        "modified_at": "2026-11-26T08:00:00.000Z",
        "delivery_report": "per_recipient",
        "callback_url": "https://verifyd.example.com/webhooks/sinch/dlr",
        "expire_at": "2026-11-29T08:00:00.000Z",
        "flash_message": false
    })
}

#[tokio::test]
async fn sinch_posts_a_json_batch_with_bearer_auth_and_returns_the_batch_id() {
    let (result, mock) = send_with(sinch_provider, Reply::json(201, sinch_batch())).await;

    assert_eq!(
        result.unwrap().message_id.as_deref(),
        Some("01FC66621XXXXX119Z8PMV1QPQ")
    );
    let req = mock.only();
    assert_eq!(req.method, Method::POST);
    assert_eq!(req.uri.path(), "/xms/v1/plan0123456789/batches");
    assert_eq!(
        req.headers["authorization"],
        format!("Bearer {SINCH_TOKEN}")
    );
    assert_eq!(req.headers["content-type"], "application/json");
    assert_eq!(
        req.json(),
        json!({
            "from": "+46700000099",
            "to": ["+46700000001"],
            "body": "Your code is 481516",
            "delivery_report": "per_recipient",
            "callback_url": "https://verifyd.example.com/webhooks/sinch/dlr"
        })
    );
}

#[tokio::test]
async fn sinch_uses_the_routes_sender_and_omits_an_unset_callback() {
    let mock = Mock::start(Reply::json(201, sinch_batch())).await;
    let Provider::Sinch(mut c) = sinch_provider(&mock.base_url) else {
        unreachable!()
    };
    c.callback_url = None;
    let mut message = sms("Your code is 481516");
    message.sender = Some("Verifyd".into());
    channel(Provider::Sinch(c)).send(&message).await.unwrap();
    let body = mock.only().json();
    assert_eq!(body["from"], "Verifyd");
    assert!(body.get("callback_url").is_none(), "{body}");
}

#[tokio::test]
async fn sinch_errors_map_by_status() {
    let (r, _) = send_with(
        sinch_provider,
        Reply::json(
            400,
            json!({"code": "syntax_invalid_parameter_format",
                   "text": "Parameter 'to' has invalid format: +46700000001"}),
        ),
    )
    .await;
    let reason = assert_permanent(r);
    assert!(
        reason.contains("syntax_invalid_parameter_format"),
        "{reason}"
    );
    assert!(
        !reason.contains("+4670"),
        "the text is not echoed: {reason}"
    );

    let (r, _) = send_with(
        sinch_provider,
        Reply::json(401, json!({"code": "unauthorized", "text": "Unauthorized"})),
    )
    .await;
    assert_permanent(r);

    let (r, _) = send_with(
        sinch_provider,
        Reply::json(
            429,
            json!({"code": "too_many_requests", "text": "Too many requests"}),
        )
        .with_header("retry-after", "12"),
    )
    .await;
    assert_retryable(r, Some(12));

    let (r, _) = send_with(sinch_provider, Reply::json(503, Value::Null)).await;
    assert_retryable(r, None);
}

#[test]
fn sinch_per_recipient_reports_parse() {
    let delivered = br#"{"at":"2026-11-26T08:00:05.371Z","batch_id":"01FC66621XXXXX119Z8PMV1QPQ","client_reference":"","code":0,"operator_status_at":"2026-11-26T08:00:04.000Z","recipient":"+46700000001","status":"Delivered","type":"recipient_delivery_report_sms"}"#;
    let r = sinch::parse_delivery_report("sms:sinch", delivered).unwrap();
    assert_eq!(r.channel, "sms:sinch");
    assert_eq!(r.message_id, "01FC66621XXXXX119Z8PMV1QPQ");
    assert_eq!(r.status, ReceiptStatus::Delivered);
    assert_eq!(r.detail.as_deref(), Some("status:Delivered code:0"));

    let failed = br#"{"at":"2026-11-26T08:00:05.371Z","batch_id":"01FC66621XXXXX119Z8PMV1QPQ","code":402,"recipient":"+46700000001","status":"Failed","type":"recipient_delivery_report_sms"}"#;
    let r = sinch::parse_delivery_report("sms:sinch", failed).unwrap();
    assert_eq!(r.status, ReceiptStatus::Failed);
    assert_eq!(r.detail.as_deref(), Some("status:Failed code:402"));

    for status in ["Expired", "Rejected", "Aborted", "Cancelled", "Deleted"] {
        let body = json!({"type": "recipient_delivery_report_sms", "batch_id": "B",
                          "recipient": "+46700000001", "code": 400, "status": status});
        let r = sinch::parse_delivery_report("s", body.to_string().as_bytes()).unwrap();
        assert_eq!(r.status, ReceiptStatus::Failed, "{status}");
    }
    for status in ["Queued", "Dispatched", "Unknown"] {
        let body = json!({"type": "recipient_delivery_report_sms", "batch_id": "B",
                          "recipient": "+46700000001", "code": 401, "status": status});
        assert_eq!(
            sinch::parse_delivery_report("s", body.to_string().as_bytes()),
            None,
            "{status}"
        );
    }
    // A batch summary report and garbage carry no per-message outcome.
    let summary = br#"{"type":"delivery_report_sms","batch_id":"B","total_message_count":1,"statuses":[{"code":0,"status":"Delivered","count":1}]}"#;
    assert_eq!(sinch::parse_delivery_report("s", summary), None);
    assert_eq!(sinch::parse_delivery_report("s", b"nope"), None);
}

// ---- Twilio ---------------------------------------------------------------------------------

/// A message as Twilio answers `POST /Messages.json` (201).
fn twilio_message() -> Value {
    json!({
        "account_sid": TWILIO_SID,
        "api_version": "2010-04-01",
        "body": "Your code is 481516",
        "date_created": "Thu, 26 Nov 2026 08:00:00 +0000",
        "direction": "outbound-api",
        "error_code": null,
        "error_message": null,
        "from": "+46700000099",
        "messaging_service_sid": null,
        "num_segments": "1",
        "sid": "SM1f0e8ae6ade43cb3c0ce4525424e404f",
        "status": "queued",
        "to": "+46700000001",
        "uri": "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages/SM1f0e8ae6ade43cb3c0ce4525424e404f.json"
    })
}

fn twilio_error(status: u16, code: i64, message: &str) -> Reply {
    Reply::json(
        status,
        json!({"code": code, "message": message,
               "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": status}),
    )
}

fn twilio_from(base_url: &str) -> Provider {
    twilio_provider(base_url, TwilioSender::From("+46700000099".into()))
}

#[tokio::test]
async fn twilio_posts_a_form_with_basic_auth_and_returns_the_sid() {
    let (result, mock) = send_with(twilio_from, Reply::json(201, twilio_message())).await;

    assert_eq!(
        result.unwrap().message_id.as_deref(),
        Some("SM1f0e8ae6ade43cb3c0ce4525424e404f")
    );
    let req = mock.only();
    assert_eq!(req.method, Method::POST);
    assert_eq!(
        req.uri.path(),
        format!("/2010-04-01/Accounts/{TWILIO_SID}/Messages.json")
    );
    // base64("AC0123456789abcdef0123456789abcdef:twilio-auth-token-secret")
    assert_eq!(
        req.headers["authorization"],
        "Basic QUMwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZjp0d2lsaW8tYXV0aC10b2tlbi1zZWNyZXQ="
    );
    assert_eq!(
        req.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
    assert_eq!(
        req.form(),
        [
            pair("To", "+46700000001"),
            pair("From", "+46700000099"),
            pair("Body", "Your code is 481516"),
            pair(
                "StatusCallback",
                "https://verifyd.example.com/webhooks/twilio/status"
            ),
        ]
    );
    // The `+` is percent-encoded on the wire, not sent as a space.
    assert!(
        std::str::from_utf8(&req.body)
            .unwrap()
            .starts_with("To=%2B46700000001&")
    );
}

#[tokio::test]
async fn twilio_can_send_through_a_messaging_service() {
    let (result, mock) = send_with(
        |b| {
            twilio_provider(
                b,
                TwilioSender::MessagingService("MG9752274e9e519418a7406176694466fa".into()),
            )
        },
        Reply::json(201, twilio_message()),
    )
    .await;
    result.unwrap();
    let form = mock.only().form();
    assert!(form.contains(&(
        "MessagingServiceSid".into(),
        "MG9752274e9e519418a7406176694466fa".into()
    )));
    assert!(!form.iter().any(|(k, _)| k == "From"));
}

#[tokio::test]
async fn twilio_errors_map_by_code_and_status() {
    let (r, _) = send_with(
        twilio_from,
        twilio_error(
            400,
            21211,
            "The 'To' number +46700000001 is not a valid phone number.",
        ),
    )
    .await;
    let reason = assert_permanent(r);
    assert!(reason.contains("21211"), "{reason}");
    assert!(
        !reason.contains("+4670"),
        "the message is not echoed: {reason}"
    );

    let (r, _) = send_with(
        twilio_from,
        twilio_error(400, 21614, "'To' number is not a valid mobile number"),
    )
    .await;
    assert!(matches!(r, Err(SendError::Unreachable { .. })), "{r:?}");

    let (r, _) = send_with(
        twilio_from,
        twilio_error(400, 21610, "Attempt to send to unsubscribed recipient"),
    )
    .await;
    assert!(matches!(r, Err(SendError::Unreachable { .. })), "{r:?}");

    let (r, _) = send_with(twilio_from, twilio_error(401, 20003, "Authenticate")).await;
    assert_permanent(r);

    let (r, _) = send_with(
        twilio_from,
        twilio_error(429, 20429, "Too Many Requests").with_header("retry-after", "3"),
    )
    .await;
    assert_retryable(r, Some(3));

    let (r, _) = send_with(
        twilio_from,
        twilio_error(500, 20500, "Internal Server Error"),
    )
    .await;
    assert_retryable(r, None);
}

#[test]
fn twilio_status_callbacks_parse() {
    let delivered = b"ApiVersion=2010-04-01&MessageStatus=delivered&SmsSid=SM1f0e8ae6ade43cb3c0ce4525424e404f&SmsStatus=delivered&To=%2B46700000001&From=%2B46700000099&MessageSid=SM1f0e8ae6ade43cb3c0ce4525424e404f&AccountSid=AC0123456789abcdef0123456789abcdef";
    let r = twilio::parse_status_callback("sms:twilio", delivered).unwrap();
    assert_eq!(r.channel, "sms:twilio");
    assert_eq!(r.message_id, "SM1f0e8ae6ade43cb3c0ce4525424e404f");
    assert_eq!(r.status, ReceiptStatus::Delivered);
    assert_eq!(r.detail.as_deref(), Some("status:delivered"));

    let undelivered = b"ErrorCode=30003&MessageStatus=undelivered&MessageSid=SM1f0e8ae6ade43cb3c0ce4525424e404f&AccountSid=AC0123456789abcdef0123456789abcdef&To=%2B46700000001";
    let r = twilio::parse_status_callback("sms:twilio", undelivered).unwrap();
    assert_eq!(r.status, ReceiptStatus::Failed);
    assert_eq!(r.detail.as_deref(), Some("status:undelivered error:30003"));

    let failed = b"ErrorCode=30008&MessageStatus=failed&MessageSid=SMx";
    assert_eq!(
        twilio::parse_status_callback("t", failed).unwrap().status,
        ReceiptStatus::Failed
    );

    for state in ["queued", "sending", "sent", "accepted", "scheduled"] {
        let body = format!("MessageStatus={state}&MessageSid=SMx");
        assert_eq!(
            twilio::parse_status_callback("t", body.as_bytes()),
            None,
            "{state}"
        );
    }
    assert_eq!(
        twilio::parse_status_callback("t", b"MessageStatus=delivered"),
        None
    );
}

/// The vectors published with Twilio's helper libraries (twilio-php / twilio-python
/// `RequestValidator` tests): auth token `12345`.
const TW_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
const TW_PARAMS: [(&str, &str); 5] = [
    ("CallSid", "CA1234567890ABCDE"),
    ("Caller", "+14158675309"),
    ("Digits", "1234"),
    ("From", "+14158675309"),
    ("To", "+18005551212"),
];

fn form_body(params: &[(&str, &str)]) -> Vec<u8> {
    serde_urlencoded::to_string(params).unwrap().into_bytes()
}

#[test]
fn twilio_signature_matches_the_published_vectors() {
    assert_eq!(
        twilio::signature("12345", TW_URL, &TW_PARAMS),
        "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    );
    // Order of the POST parameters does not matter: they are sorted.
    let mut shuffled = TW_PARAMS;
    shuffled.reverse();
    let body = form_body(&shuffled);
    assert!(twilio::verify_signature(
        "12345",
        TW_URL,
        &body,
        "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    ));
    // A repeated name contributes each distinct value once, sorted.
    let repeated = [
        ("Sid", "CA123"),
        ("SidAccount", "AC123"),
        ("Digits", "5678"),
        ("Digits", "1234"),
        ("Digits", "1234"),
    ];
    assert_eq!(
        twilio::signature("12345", TW_URL, &repeated),
        "IK+Dwps556ElfBT0I3Rgjkr1wJU="
    );
    // Signed with the default port (:443) although the URL was written without one.
    assert!(twilio::verify_signature(
        "12345",
        TW_URL,
        &form_body(&TW_PARAMS),
        "kvajT1Ptam85bY51eRf/AJRuM3w="
    ));
    // Signed without the port although the URL carries one.
    assert!(twilio::verify_signature(
        "12345",
        "https://mycompany.com:1234/myapp.php?foo=1&bar=2",
        &form_body(&TW_PARAMS),
        "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    ));
}

#[test]
fn twilio_status_callback_signature_verifies_and_tampering_fails() {
    // Computed independently (Python hmac/hashlib over url + sorted name/value pairs).
    let url = "https://verifyd.example.com/webhooks/twilio/status?route=primary";
    let body = b"AccountSid=AC00000000000000000000000000000000&ApiVersion=2010-04-01&ErrorCode=30003&From=%2B46700000099&MessageSid=SM00000000000000000000000000000001&MessageStatus=undelivered&SmsSid=SM00000000000000000000000000000001&SmsStatus=undelivered&To=%2B46700000001";
    let header = "HE6Z31rxJZWax5m6XLCHdtszroA=";
    assert!(twilio::verify_signature(
        "twilio-auth-token",
        url,
        body,
        header
    ));

    let tampered = String::from_utf8(body.to_vec())
        .unwrap()
        .replace("undelivered", "delivered");
    assert!(!twilio::verify_signature(
        "twilio-auth-token",
        url,
        tampered.as_bytes(),
        header
    ));
    assert!(!twilio::verify_signature(
        "another-token",
        url,
        body,
        header
    ));
    assert!(!twilio::verify_signature(
        "twilio-auth-token",
        "https://verifyd.example.com/webhooks/twilio/status",
        body,
        header
    ));
    for bad in ["", "not base64!", "AAAA"] {
        assert!(!twilio::verify_signature(
            "twilio-auth-token",
            url,
            body,
            bad
        ));
    }
    assert!(!twilio::verify_signature("", url, body, header));
}

// ---- Vonage ---------------------------------------------------------------------------------

fn vonage_ok() -> Value {
    json!({"message-count": "1", "messages": [{
        "to": "46700000001", "message-id": "0C000000217B7F02", "status": "0",
        "remaining-balance": "15.53590000", "message-price": "0.03330000", "network": "24001"}]})
}

fn vonage_rejected(status: &str, text: &str) -> Reply {
    Reply::json(
        200,
        json!({"message-count": "1", "messages": [{"status": status, "error-text": text}]}),
    )
}

#[tokio::test]
async fn vonage_posts_a_form_and_returns_the_message_id() {
    let (result, mock) = send_with(vonage_provider, Reply::json(200, vonage_ok())).await;

    assert_eq!(
        result.unwrap().message_id.as_deref(),
        Some("0C000000217B7F02")
    );
    let req = mock.only();
    assert_eq!(req.method, Method::POST);
    assert_eq!(req.uri.path(), "/sms/json");
    assert!(req.headers.get("authorization").is_none());
    assert_eq!(
        req.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
    assert_eq!(
        req.form(),
        [
            pair("api_key", "abcd1234"),
            pair("api_secret", VONAGE_SECRET),
            pair("from", "Verifyd"),
            pair("to", "46700000001"),
            pair("text", "Your code is 481516"),
            pair(
                "callback",
                "https://verifyd.example.com/webhooks/vonage/dlr"
            ),
        ]
    );
}

#[tokio::test]
async fn vonage_marks_non_gsm_text_as_unicode() {
    for (text, unicode) in [
        ("Din kod är 481516", false),
        ("Ihr Code: 481516 {ok} €", false),
        ("Ваш код 481516", true),
        ("您的验证码 481516", true),
    ] {
        let mock = Mock::start(Reply::json(200, vonage_ok())).await;
        channel(vonage_provider(&mock.base_url))
            .send(&sms(text))
            .await
            .unwrap();
        let form = mock.only().form();
        assert!(form.contains(&("text".into(), text.into())));
        assert_eq!(
            form.contains(&("type".into(), "unicode".into())),
            unicode,
            "{text}"
        );
        assert_eq!(vonage::needs_unicode(text), unicode, "{text}");
    }
}

#[tokio::test]
async fn vonage_status_codes_map() {
    let (r, _) = send_with(
        vonage_provider,
        vonage_rejected("1", "Throughput Rate Exceeded"),
    )
    .await;
    assert_retryable(r, None);
    let (r, _) = send_with(vonage_provider, vonage_rejected("5", "Internal Error")).await;
    assert_retryable(r, None);
    for (status, text) in [
        ("2", "Missing to param"),
        ("3", "Invalid to param"),
        ("4", "Bad Credentials"),
        ("7", "Number barred"),
        ("9", "Partner quota exceeded"),
        ("29", "Non White-listed Destination"),
    ] {
        let (r, _) = send_with(vonage_provider, vonage_rejected(status, text)).await;
        let reason = assert_permanent(r);
        assert!(reason.contains(&format!("status {status} (")), "{reason}");
    }
}

#[tokio::test]
async fn vonage_http_errors_map_by_status() {
    let (r, _) = send_with(
        vonage_provider,
        Reply::json(429, Value::Null).with_header("retry-after", "2"),
    )
    .await;
    assert_retryable(r, Some(2));
    let (r, _) = send_with(vonage_provider, Reply::json(500, Value::Null)).await;
    assert_retryable(r, None);
    let (r, _) = send_with(vonage_provider, Reply::json(401, Value::Null)).await;
    assert_permanent(r);
}

#[test]
fn vonage_delivery_receipts_parse_from_json_form_and_query() {
    let json = br#"{"msisdn":"46700000001","to":"Verifyd","network-code":"24001","messageId":"0C000000217B7F02","price":"0.03330000","status":"delivered","scts":"2611260800","err-code":"0","api-key":"abcd1234","message-timestamp":"2026-11-26 08:00:05"}"#;
    let r = vonage::parse_delivery_receipt("sms:vonage", json).unwrap();
    assert_eq!(r.channel, "sms:vonage");
    assert_eq!(r.message_id, "0C000000217B7F02");
    assert_eq!(r.status, ReceiptStatus::Delivered);
    assert_eq!(r.detail.as_deref(), Some("status:delivered err-code:0"));

    let form = b"msisdn=46700000001&to=Verifyd&network-code=24001&messageId=0C000000217B7F02&price=0.03330000&status=failed&scts=2611260800&err-code=6&api-key=abcd1234&message-timestamp=2026-11-26+08%3A00%3A05";
    let r = vonage::parse_delivery_receipt("sms:vonage", form).unwrap();
    assert_eq!(r.status, ReceiptStatus::Failed);
    assert_eq!(r.detail.as_deref(), Some("status:failed err-code:6"));

    for state in ["expired", "rejected"] {
        let q = format!("messageId=0C000000217B7F02&status={state}&err-code=1");
        assert_eq!(
            vonage::parse_delivery_receipt("v", q.as_bytes())
                .unwrap()
                .status,
            ReceiptStatus::Failed
        );
    }
    for state in ["accepted", "buffered", "unknown"] {
        let q = format!("messageId=0C000000217B7F02&status={state}");
        assert_eq!(
            vonage::parse_delivery_receipt("v", q.as_bytes()),
            None,
            "{state}"
        );
    }
    assert_eq!(
        vonage::parse_delivery_receipt("v", b"status=delivered"),
        None
    );
    assert_eq!(vonage::parse_delivery_receipt("v", b"{not json"), None);
}

// ---- shared behaviour -----------------------------------------------------------------------

#[tokio::test]
async fn timeouts_and_refused_connections_are_retryable() {
    let mut slow = Reply::json(201, sinch_batch());
    slow.delay = Duration::from_secs(3);
    let mock = Mock::start(slow).await;
    let mut config = HttpSmsConfig::new("sms:slow", sinch_provider(&mock.base_url));
    config.timeout = Duration::from_millis(300);
    let r = HttpSmsChannel::new(config)
        .unwrap()
        .send(&sms("Your code is 481516"))
        .await;
    assert!(
        matches!(&r, Err(SendError::Retryable { reason, .. }) if reason.contains("timed out")),
        "{r:?}"
    );

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let closed = format!("http://127.0.0.1:{port}");
    for provider in [
        sinch_provider(&closed),
        twilio_from(&closed),
        vonage_provider(&closed),
    ] {
        let r = channel(provider).send(&sms("Your code is 481516")).await;
        assert_retryable(r, None);
    }
}

#[tokio::test]
async fn only_text_payloads_are_sent() {
    let mock = Mock::start(Reply::json(201, sinch_batch())).await;
    let mut message = sms("x");
    message.payload = Payload::Seamless {
        target_uri: "https://verifyd.example.com/s/1".into(),
    };
    let r = channel(sinch_provider(&mock.base_url)).send(&message).await;
    assert_permanent(r);
    assert!(mock.seen.lock().unwrap().is_empty());
}

#[test]
fn debug_never_shows_secrets() {
    for provider in [
        sinch_provider("http://127.0.0.1:9"),
        twilio_from("http://127.0.0.1:9"),
        vonage_provider("http://127.0.0.1:9"),
    ] {
        let ch = channel(provider);
        let shown = format!("{ch:?}");
        for secret in [SINCH_TOKEN, TWILIO_TOKEN, VONAGE_SECRET] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}

#[test]
fn bad_configuration_is_refused() {
    let mut c = SinchConfig::new("plan/../x", SINCH_TOKEN, "+46700000099");
    assert!(HttpSmsChannel::new(HttpSmsConfig::new("s", Provider::Sinch(c.clone()))).is_err());
    c.service_plan_id = "plan".into();
    c.base_url = "us.sms.api.sinch.com".into();
    assert!(HttpSmsChannel::new(HttpSmsConfig::new("s", Provider::Sinch(c))).is_err());
    let t = TwilioConfig::new(TWILIO_SID, "", TwilioSender::From("+46700000099".into()));
    assert!(HttpSmsChannel::new(HttpSmsConfig::new("t", Provider::Twilio(t))).is_err());
    let v = VonageConfig::new("key", VONAGE_SECRET, " ");
    assert!(HttpSmsChannel::new(HttpSmsConfig::new("v", Provider::Vonage(v))).is_err());
    let ok = VonageConfig::new("key", VONAGE_SECRET, "Verifyd");
    assert!(HttpSmsChannel::new(HttpSmsConfig::new("", Provider::Vonage(ok))).is_err());
}
