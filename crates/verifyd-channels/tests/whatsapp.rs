//! The WhatsApp Cloud API channel against two kinds of peer:
//!
//! - a **Prism contract mock** generated from Meta's own OpenAPI document
//!   (`shared/specs/whatsapp-business-messaging-api_v23.0.yaml`, beside the repository).
//!   Prism validates each request against the `sendMessage` operation and answers 422 on a
//!   bad shape, so a 200 with a `wamid` proves the shape is accepted. Prism comes from
//!   `e2e/prism` (`npm ci --prefix e2e/prism`).
//! - an **axum mock** in this file that records the request and answers like the Graph API,
//!   for the exact body and the error mappings.
//!
//! The webhook functions are pure and tested on realistic payloads, with signatures computed
//! independently (`openssl dgst -sha256 -hmac`).
#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
#![allow(clippy::expect_used, reason = "tests fail loudly on unexpected errors")]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use axum::http::Method;
use common::{Mock, Reply};
use serde_json::{Value, json};
use time::OffsetDateTime;
use verifyd_channels::whatsapp::{
    WhatsappChannel, WhatsappConfig, parse_statuses, template_language, verify_signature,
    verify_subscription,
};
use verifyd_channels::{Channel, OutboundMessage, Payload, ReceiptStatus, SendError};
use verifyd_core::{Method as VerifyMethod, PhoneNumber};
use verifyd_testkit::{Prism, shared_spec};

const TOKEN: &str = "EAAtestToken123";
const PHONE_NUMBER_ID: &str = "106540352242922";
/// The `wamid` in the spec's example answer for `sendMessage`.
const SPEC_EXAMPLE_WAMID: &str = "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJCOTY3NDc0NDFDRUI3NTA0Q0UA";

// ---- helpers ------------------------------------------------------------------------------

fn text(code: &str, locale: &str) -> OutboundMessage {
    OutboundMessage {
        verification_id: "ver_1".into(),
        app: "app".into(),
        method: VerifyMethod::Whatsapp,
        to: PhoneNumber::parse("+46700000001").unwrap(),
        payload: Payload::Text {
            body: format!("{code} is your verification code."),
            code: code.into(),
            locale: locale.into(),
        },
        sender: None,
        created_at: OffsetDateTime::UNIX_EPOCH,
    }
}

fn config(base_url: &str) -> WhatsappConfig {
    let mut c = WhatsappConfig::new("whatsapp", PHONE_NUMBER_ID, TOKEN, "verification_code");
    c.base_url = base_url.to_string();
    c.languages = vec!["en_US".into(), "sv".into()];
    c.timeout = Duration::from_secs(5);
    c
}

fn graph_error(code: i64, kind: &str, message: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "code": code,
                     "error_subcode": 2494010, "fbtrace_id": "AbCdEfGhIjK"}})
}

async fn send_against(reply: Reply) -> Result<verifyd_channels::Delivery, SendError> {
    let mock = Mock::start(reply).await;
    let channel = WhatsappChannel::new(config(&mock.base_url)).unwrap();
    channel.send(&text("123456", "en-US")).await
}

// ---- Prism --------------------------------------------------------------------------------

/// Meta's spec: `$VERIFYD_WHATSAPP_SPEC`, else `shared/specs/…` beside the repository.
fn spec_path() -> PathBuf {
    shared_spec(
        "VERIFYD_WHATSAPP_SPEC",
        "whatsapp-business-messaging-api_v23.0.yaml",
    )
}

/// The button `index` pattern in Meta's spec. As a regex it is a one-character class
/// (`2`–`6`, `,`, space, `1`, `4`), so it rejects `"0"`, the index of the one copy-code
/// button every authentication template has (Meta's send example uses `"0"`).
const BROKEN_INDEX_PATTERN: &str = "pattern: ^[2-6, 11-14]$";

/// A temporary spec file, removed (with its directory) on drop.
struct TempSpec(PathBuf);

impl Drop for TempSpec {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Meta's spec with only that pattern replaced by `^[0-9]$` (button positions 0–9, as the
/// field's own description says), in a temporary directory.
fn spec_with_fixed_index_pattern() -> TempSpec {
    let spec = std::fs::read_to_string(spec_path()).unwrap();
    assert_eq!(
        spec.matches(BROKEN_INDEX_PATTERN).count(),
        2,
        "TemplateComponent.index and ButtonComponent.index"
    );
    let fixed = spec.replace(BROKEN_INDEX_PATTERN, "pattern: ^[0-9]$");
    let dir = std::env::temp_dir().join(format!("verifyd-prism-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("whatsapp-business-messaging-api_v23.0.fixed-index.yaml");
    std::fs::write(&path, fixed).unwrap();
    TempSpec(path)
}

/// The channel pointed at Prism. Prism compiles the operation's schemas on the first
/// request, which takes seconds on a loaded machine: a generous timeout.
fn prism_config(prism: &Prism) -> WhatsappConfig {
    let mut c = config(&prism.base_url);
    c.timeout = Duration::from_secs(60);
    c
}

/// The exact body the channel sends for `code` in `locale`, captured with the axum mock.
async fn captured_body(code: &str, locale: &str) -> Value {
    let mock = Mock::start(Reply::json(
        200,
        json!({"messaging_product": "whatsapp", "messages": [{"id": "wamid.X"}]}),
    ))
    .await;
    let channel = WhatsappChannel::new(config(&mock.base_url)).unwrap();
    channel.send(&text(code, locale)).await.unwrap();
    serde_json::from_slice(&mock.seen()[0].body).unwrap()
}

#[tokio::test]
async fn prism_accepts_the_template_send_once_the_spec_index_pattern_is_fixed() {
    let spec = spec_with_fixed_index_pattern();
    let prism = Prism::mock(&spec.0).await;
    let channel = WhatsappChannel::new(prism_config(&prism)).unwrap();

    let delivery = channel
        .send(&text("123456", "sv-SE"))
        .await
        .expect("Prism accepts the request");
    assert_eq!(delivery.message_id.as_deref(), Some(SPEC_EXAMPLE_WAMID));

    // Controls: the same Prism does validate, so the 200 above means something.
    let http = reqwest::Client::new();
    let url = format!("{}/v23.0/{PHONE_NUMBER_ID}/messages", prism.base_url);
    let mut no_recipient = captured_body("123456", "sv-SE").await;
    no_recipient.as_object_mut().unwrap().remove("to");
    let r = http
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&no_recipient)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422, "a body without `to` is rejected");
    let r = http
        .post(&url)
        .json(&captured_body("123456", "sv-SE").await)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "no bearer token is rejected");
}

#[tokio::test]
async fn prism_on_the_unmodified_spec_rejects_only_the_button_index() {
    let prism = Prism::mock(&spec_path()).await;
    let channel = WhatsappChannel::new(prism_config(&prism)).unwrap();

    // Prism answers 422, which is a 4xx like any other: permanent.
    let err = channel.send(&text("123456", "en-US")).await.unwrap_err();
    assert!(
        matches!(&err, SendError::Permanent { reason } if reason.contains("HTTP 422")),
        "{err:?}"
    );

    // Replay the exact body and read Prism's validation report: within the
    // TemplateMessage branch of `Message.oneOf` the only complaint is the button index.
    // (Every other branch fails on its own required property, which is expected.)
    let body = captured_body("123456", "en-US").await;
    let problem: Value = reqwest::Client::new()
        .post(format!(
            "{}/v23.0/{PHONE_NUMBER_ID}/messages",
            prism.base_url
        ))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let template_errors: Vec<&Value> = problem["validation"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["location"].get(1) == Some(&json!("template")))
        .collect();
    assert_eq!(template_errors.len(), 1, "{problem:#}");
    assert_eq!(
        template_errors[0]["location"],
        json!(["body", "template", "components", "1", "index"])
    );
    assert_eq!(template_errors[0]["code"], "pattern");
}

// ---- the exact request ----------------------------------------------------------------------

#[tokio::test]
async fn send_posts_the_authentication_template_with_the_code_in_body_and_button() {
    let mock = Mock::start(Reply::json(
        200,
        json!({"messaging_product": "whatsapp",
               "contacts": [{"input": "46700000001", "wa_id": "46700000001"}],
               "messages": [{"id": "wamid.HBgLNDY3MDAwMDAwMDEVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"}]}),
    ))
    .await;
    let channel = WhatsappChannel::new(config(&mock.base_url)).unwrap();

    let delivery = channel.send(&text("4F7K2Q", "sv-SE")).await.unwrap();

    assert_eq!(
        delivery.message_id.as_deref(),
        Some("wamid.HBgLNDY3MDAwMDAwMDEVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA")
    );
    assert!(!delivery.delivered);
    let seen = mock.seen();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(req.method, Method::POST);
    assert_eq!(req.uri.path(), format!("/v23.0/{PHONE_NUMBER_ID}/messages"));
    assert_eq!(req.uri.query(), None);
    assert_eq!(req.headers["authorization"], format!("Bearer {TOKEN}"));
    assert_eq!(req.headers["content-type"], "application/json");
    assert!(
        req.headers["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("verifyd/")
    );
    let body: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(
        body,
        json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": "46700000001",
            "type": "template",
            "template": {
                "name": "verification_code",
                "language": {"policy": "deterministic", "code": "sv"},
                "components": [
                    {"type": "body", "parameters": [{"type": "text", "text": "4F7K2Q"}]},
                    {"type": "button", "sub_type": "url", "index": "0",
                     "parameters": [{"type": "text", "text": "4F7K2Q"}]}
                ]
            }
        })
    );
}

#[test]
fn locales_map_onto_the_template_languages() {
    let langs: Vec<String> = ["en_US", "sv", "pt_BR", "zh_TW"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let pick = |locale: &str| template_language(locale, &langs, "en_US");
    assert_eq!(pick("en-US"), "en_US");
    assert_eq!(pick("sv-SE"), "sv");
    assert_eq!(pick("sv"), "sv");
    assert_eq!(pick("en-GB"), "en_US", "same language, other region");
    assert_eq!(pick("pt-PT"), "pt_BR");
    assert_eq!(pick("zh_tw"), "zh_TW", "case and separator do not matter");
    assert_eq!(pick("de-DE"), "en_US", "no translation: the default");
    assert_eq!(pick(""), "en_US");
    // Without a list the template exists in the default language only.
    assert_eq!(template_language("sv-SE", &[], "en_US"), "en_US");
    assert_eq!(template_language("sv-SE", &[], "sv"), "sv");
}

// ---- error mapping --------------------------------------------------------------------------

#[tokio::test]
async fn a_recipient_without_whatsapp_is_unreachable() {
    let err = send_against(Reply::json(
        400,
        graph_error(131026, "OAuthException", "(#131026) Message undeliverable"),
    ))
    .await
    .unwrap_err();
    let SendError::Unreachable { reason } = err else {
        panic!("{err:?}")
    };
    assert!(reason.contains("131026"), "{reason}");
}

#[tokio::test]
async fn http_429_is_retryable_after_the_providers_delay() {
    let mut reply = Reply::json(
        429,
        graph_error(130429, "OAuthException", "(#130429) Rate limit hit"),
    );
    reply.headers = vec![("retry-after", "7")];
    let err = send_against(reply).await.unwrap_err();
    assert!(
        matches!(err, SendError::Retryable { retry_after: Some(d), .. } if d == Duration::from_secs(7)),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_rate_limit_code_is_retryable_even_on_http_400() {
    let err = send_against(Reply::json(
        400,
        graph_error(131056, "OAuthException", "(#131056) Pair rate limit hit"),
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            SendError::Retryable {
                retry_after: None,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_bad_token_is_permanent() {
    let err = send_against(Reply::json(
        401,
        graph_error(
            190,
            "OAuthException",
            "Error validating access token: Session has expired",
        ),
    ))
    .await
    .unwrap_err();
    let SendError::Permanent { reason } = err else {
        panic!("{err:?}")
    };
    assert!(reason.contains("HTTP 401, error 190"), "{reason}");
    assert!(
        !reason.contains("Session"),
        "free text is not echoed: {reason}"
    );
}

#[tokio::test]
async fn a_missing_template_translation_is_permanent() {
    let err = send_against(Reply::json(
        404,
        graph_error(
            132001,
            "OAuthException",
            "(#132001) Template name does not exist in the translation",
        ),
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, SendError::Permanent { .. }), "{err:?}");
}

#[tokio::test]
async fn server_errors_are_retryable() {
    let err = send_against(Reply::json(
        503,
        json!({"error": {"message": "Service temporarily unavailable", "code": 2}}),
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, SendError::Retryable { .. }), "{err:?}");
    // A 5xx that is not even JSON.
    let mut reply = Reply::json(502, Value::Null);
    reply.body = Value::String("<html>Bad Gateway</html>".into());
    let err = send_against(reply).await.unwrap_err();
    assert!(matches!(err, SendError::Retryable { .. }), "{err:?}");
}

#[tokio::test]
async fn a_timeout_is_retryable() {
    let mut reply = Reply::json(200, json!({"messages": [{"id": "wamid.late"}]}));
    reply.delay = Duration::from_secs(3);
    let mock = Mock::start(reply).await;
    let mut c = config(&mock.base_url);
    c.timeout = Duration::from_millis(300);
    let channel = WhatsappChannel::new(c).unwrap();
    let err = channel.send(&text("123456", "en-US")).await.unwrap_err();
    assert!(
        matches!(&err, SendError::Retryable { reason, .. } if reason.contains("timed out")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_refused_connection_is_retryable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let channel = WhatsappChannel::new(config(&format!("http://127.0.0.1:{port}"))).unwrap();
    let err = channel.send(&text("123456", "en-US")).await.unwrap_err();
    assert!(matches!(err, SendError::Retryable { .. }), "{err:?}");
}

#[tokio::test]
async fn only_short_text_codes_are_sent() {
    let mock = Mock::start(Reply::json(200, json!({"messages": [{"id": "wamid.X"}]}))).await;
    let channel = WhatsappChannel::new(config(&mock.base_url)).unwrap();
    let err = channel
        .send(&text("1234567890123456", "en-US"))
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Permanent { .. }), "{err:?}");
    let mut call = text("123456", "en-US");
    call.payload = Payload::FlashCall {
        cli: "+46700000123".into(),
        dial_timeout: 10,
    };
    let err = channel.send(&call).await.unwrap_err();
    assert!(matches!(err, SendError::Permanent { .. }), "{err:?}");
    assert!(mock.seen().is_empty(), "nothing was sent");
}

#[test]
fn debug_never_shows_the_access_token() {
    let channel = WhatsappChannel::new(config("http://127.0.0.1:9")).unwrap();
    let shown = format!("{channel:?} {:?}", channel.config());
    assert!(!shown.contains(TOKEN), "{shown}");
    assert!(shown.contains("<redacted>"));
}

#[test]
fn bad_configuration_is_refused() {
    let mut c = config("ftp://example.com");
    assert!(WhatsappChannel::new(c.clone()).is_err());
    c.base_url = "https://graph.facebook.com/".into();
    c.phone_number_id = "1065/../me".into();
    assert!(WhatsappChannel::new(c.clone()).is_err());
    c.phone_number_id = PHONE_NUMBER_ID.into();
    c.access_token = String::new();
    assert!(WhatsappChannel::new(c).is_err());
}

// ---- webhooks -------------------------------------------------------------------------------

const APP_SECRET: &str = "app-secret-for-tests";

/// A delivered status as Meta posts it (webhooks reference, `messages` field, status).
const DELIVERED: &str = r#"{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},"statuses":[{"id":"wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJCOTY3NDc0NDFDRUI3NTA0Q0UA","status":"delivered","timestamp":"1749416383","recipient_id":"46700000001","pricing":{"billable":true,"pricing_model":"PMP","category":"authentication"}}]}}]}]}"#;

/// `openssl dgst -sha256 -hmac app-secret-for-tests` over exactly [`DELIVERED`].
const DELIVERED_SIGNATURE: &str =
    "sha256=228678a95c66ec491efaffa830556428269b8a9f3d30134b6dfd2998f53710f9";

#[test]
fn a_signed_status_payload_verifies_and_parses() {
    assert!(verify_signature(
        APP_SECRET,
        DELIVERED.as_bytes(),
        DELIVERED_SIGNATURE
    ));
    // Hex case is the sender's choice.
    assert!(verify_signature(
        APP_SECRET,
        DELIVERED.as_bytes(),
        &DELIVERED_SIGNATURE
            .to_uppercase()
            .replace("SHA256=", "sha256=")
    ));
    let receipts = parse_statuses("whatsapp", DELIVERED.as_bytes());
    assert_eq!(receipts.len(), 1);
    assert_eq!(receipts[0].channel, "whatsapp");
    assert_eq!(receipts[0].message_id, SPEC_EXAMPLE_WAMID);
    assert_eq!(receipts[0].status, ReceiptStatus::Delivered);
    assert_eq!(receipts[0].detail, None);
}

#[test]
fn a_tampered_body_or_wrong_secret_fails_verification() {
    let tampered = DELIVERED.replace("delivered", "failed");
    assert!(!verify_signature(
        APP_SECRET,
        tampered.as_bytes(),
        DELIVERED_SIGNATURE
    ));
    // Re-serialising changes the bytes even when the JSON means the same.
    let reserialised =
        serde_json::to_string_pretty(&serde_json::from_str::<Value>(DELIVERED).unwrap()).unwrap();
    assert!(!verify_signature(
        APP_SECRET,
        reserialised.as_bytes(),
        DELIVERED_SIGNATURE
    ));
    assert!(!verify_signature(
        "another-secret",
        DELIVERED.as_bytes(),
        DELIVERED_SIGNATURE
    ));
    assert!(!verify_signature(
        "",
        DELIVERED.as_bytes(),
        DELIVERED_SIGNATURE
    ));
    let hex = DELIVERED_SIGNATURE.trim_start_matches("sha256=");
    for header in [
        hex.to_string(),
        format!("sha1={hex}"),
        "sha256=".to_string(),
        format!("sha256={}", &hex[..62]),
        format!("sha256={hex}00"),
        "sha256=zz".to_string(),
        String::new(),
    ] {
        assert!(
            !verify_signature(APP_SECRET, DELIVERED.as_bytes(), &header),
            "{header}"
        );
    }
}

#[test]
fn the_subscription_handshake_echoes_the_challenge_only_for_our_token() {
    let ok = verify_subscription(
        Some("subscribe"),
        Some("our-verify-token"),
        Some("1158201444"),
        "our-verify-token",
    );
    assert_eq!(ok.as_deref(), Some("1158201444"));
    for (mode, token, challenge) in [
        (Some("subscribe"), Some("wrong"), Some("1158201444")),
        (Some("unsubscribe"), Some("our-verify-token"), Some("1")),
        (None, Some("our-verify-token"), Some("1")),
        (Some("subscribe"), None, Some("1")),
        (Some("subscribe"), Some("our-verify-token"), None),
    ] {
        assert_eq!(
            verify_subscription(mode, token, challenge, "our-verify-token"),
            None,
            "{mode:?} {token:?} {challenge:?}"
        );
    }
    assert_eq!(
        verify_subscription(Some("subscribe"), Some(""), Some("1"), ""),
        None,
        "an unset token never verifies"
    );
}

#[test]
fn statuses_map_to_receipts_and_sent_is_skipped() {
    let body = json!({
        "object": "whatsapp_business_account",
        "entry": [
            {"id": "102290129340398", "changes": [
                {"field": "messages", "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
                    "statuses": [
                        {"id": "wamid.A", "status": "sent", "timestamp": "1749416380", "recipient_id": "46700000001",
                         "conversation": {"id": "c1", "origin": {"type": "authentication"}}},
                        {"id": "wamid.A", "status": "read", "timestamp": "1749416390", "recipient_id": "46700000001"},
                        {"id": "wamid.B", "status": "failed", "timestamp": "1749416391", "recipient_id": "46700000002",
                         "errors": [{"code": 131026, "title": "Message undeliverable",
                                     "message": "Message undeliverable",
                                     "error_data": {"details": "Message Undeliverable."},
                                     "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"}]},
                        {"status": "delivered", "timestamp": "1", "recipient_id": "4"},
                        {"id": "wamid.C", "status": "deleted", "timestamp": "1", "recipient_id": "4"}
                    ]}}
            ]},
            {"id": "102290129340398", "changes": [
                {"field": "messages", "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
                    "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234"}],
                    "messages": [{"from": "16505551234", "id": "wamid.in", "timestamp": "1749416383",
                                  "type": "text", "text": {"body": "hi"}}]}},
                {"field": "messages", "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
                    "statuses": [{"id": "wamid.D", "status": "delivered", "timestamp": "1749416399",
                                  "recipient_id": "46700000003"}]}}
            ]}
        ]
    });
    let receipts = parse_statuses("wa", body.to_string().as_bytes());
    let got: Vec<_> = receipts
        .iter()
        .map(|r| {
            (
                r.channel.as_str(),
                r.message_id.as_str(),
                r.status,
                r.detail.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("wa", "wamid.A", ReceiptStatus::Delivered, None),
            (
                "wa",
                "wamid.B",
                ReceiptStatus::Failed,
                Some("Message undeliverable (131026)")
            ),
            ("wa", "wamid.D", ReceiptStatus::Delivered, None),
        ]
    );
}

#[test]
fn bodies_that_are_not_status_notifications_give_no_receipts() {
    for body in [
        &b""[..],
        b"not json",
        b"[]",
        b"{}",
        br#"{"entry": "x"}"#,
        br#"{"entry": [{"changes": [{"value": {"statuses": "x"}}]}]}"#,
    ] {
        assert!(parse_statuses("wa", body).is_empty());
    }
}
