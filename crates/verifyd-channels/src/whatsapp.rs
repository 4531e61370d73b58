//! WhatsApp through Meta's Cloud API, with an authentication (OTP) template.
//!
//! # Sending
//! `POST {base}/{version}/{phone_number_id}/messages`, `Authorization: Bearer {token}`:
//!
//! ```json
//! {"messaging_product": "whatsapp", "recipient_type": "individual", "to": "46700000001",
//!  "type": "template",
//!  "template": {"name": "verification_code",
//!               "language": {"policy": "deterministic", "code": "sv"},
//!               "components": [
//!                 {"type": "body", "parameters": [{"type": "text", "text": "123456"}]},
//!                 {"type": "button", "sub_type": "url", "index": "0",
//!                  "parameters": [{"type": "text", "text": "123456"}]}]}}
//! ```
//!
//! The code goes in twice, body and copy-code button (an `otp` button becomes a `url` button
//! once the template is approved), and is at most 15 characters. `language.policy` is
//! required by Meta's OpenAPI document (`LanguageObject`); `deterministic` is its only value.
//! The answer's `messages[0].id` (`wamid.…`) is the message id that status webhooks carry.
//!
//! # Error mapping
//! Graph errors are `{"error": {"message", "type", "code", "error_subcode", "is_transient",
//! "fbtrace_id"}}`. By `code` first, then by HTTP status:
//! - [`SendError::Unreachable`]: 131026 (message undeliverable: no WhatsApp account, an old
//!   client, terms not accepted), 1026 (receiver incapable), 131030 (recipient not on the
//!   test number's allow-list). SMS may still reach the number.
//! - [`SendError::Retryable`]: rate limits 4, 80007, 130429, 131048, 131056; transient 1, 2,
//!   131000, 131016, 133004; any error with `is_transient: true`; HTTP 408/429/5xx; timeouts
//!   and connection failures. `Retry-After` (seconds) is passed on.
//! - [`SendError::Permanent`]: everything else, e.g. 190 (access token invalid or expired),
//!   10/200 (permission), 100/131008/131009 (bad parameter), 132000–132016 (template
//!   missing, paused, disabled or its parameters wrong), and any other 4xx.
//!
//! # Webhooks
//! Pure functions the server mounts: [`verify_subscription`] (the `hub.challenge`
//! handshake), [`verify_signature`] (`X-Hub-Signature-256` over the raw body) and
//! [`parse_statuses`] (`statuses[]` into [`Receipt`]s).

use std::time::Duration;

use async_trait::async_trait;
use hmac::Mac;
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::http_sms::{
    BuildError, DEFAULT_TIMEOUT, base_url, build_client, execute, hex_decode, hmac_sha256,
    is_retryable_status, non_empty, path_segment,
};
use crate::{Channel, Delivery, OutboundMessage, Payload, Receipt, ReceiptStatus, SendError};

/// Meta's Graph API host.
pub const DEFAULT_BASE_URL: &str = "https://graph.facebook.com";
/// The pinned Graph API version.
pub const DEFAULT_API_VERSION: &str = "v23.0";
/// The template language used when nothing better matches.
pub const DEFAULT_LANGUAGE: &str = "en_US";
/// Meta's limit on an authentication template's code.
pub const MAX_CODE_LEN: usize = 15;
/// The header carrying a webhook's signature.
pub const SIGNATURE_HEADER: &str = "X-Hub-Signature-256";

const LABEL: &str = "whatsapp";

/// Codes meaning WhatsApp cannot reach this recipient.
const UNREACHABLE: [(i64, &str); 3] = [
    (131026, "message undeliverable"),
    (1026, "receiver incapable"),
    (131030, "recipient not in allowed list"),
];

/// Codes worth retrying later.
const RETRYABLE: [(i64, &str); 10] = [
    (1, "unknown API error"),
    (2, "service temporarily unavailable"),
    (4, "application request limit reached"),
    (80007, "account rate limit reached"),
    (130429, "throughput rate limit reached"),
    (131000, "something went wrong"),
    (131016, "service unavailable"),
    (131048, "spam rate limit reached"),
    (131056, "pair rate limit reached"),
    (133004, "server temporarily unavailable"),
];

/// Known codes that will not succeed on retry, named in the reason.
const PERMANENT: [(i64, &str); 19] = [
    (0, "authentication failed"),
    (10, "permission denied"),
    (100, "invalid parameter"),
    (190, "access token invalid or expired"),
    (200, "permission denied"),
    (368, "temporarily blocked for policy violations"),
    (131008, "required parameter missing"),
    (131009, "parameter value not valid"),
    (131021, "recipient is the sender"),
    (131031, "business account locked"),
    (131042, "business eligibility payment issue"),
    (131045, "phone number not registered"),
    (132000, "template parameter count mismatch"),
    (132001, "template does not exist in this language"),
    (132005, "translated text too long"),
    (132007, "template format policy violated"),
    (132012, "template parameter format mismatch"),
    (132015, "template paused"),
    (132016, "template disabled"),
];

/// WhatsApp channel settings.
#[derive(Clone)]
pub struct WhatsappConfig {
    /// The channel's name for logs, metrics and receipt matching (`whatsapp`).
    pub name: String,
    /// Graph API base, default `https://graph.facebook.com`; tests point it at a mock.
    pub base_url: String,
    /// Graph API version, default `v23.0`.
    pub api_version: String,
    /// The business phone number's id (not the number).
    pub phone_number_id: String,
    /// A system-user access token with `whatsapp_business_messaging`. Secret: redacted in
    /// `Debug`.
    pub access_token: String,
    /// The approved authentication template's name.
    pub template_name: String,
    /// The template language used when the message's locale matches none of
    /// [`languages`](Self::languages). Default `en_US`.
    pub language: String,
    /// The languages the template is approved in, as WhatsApp codes (`en_US`, `sv`,
    /// `pt_BR`). A message's locale picks among these (see [`template_language`]); empty
    /// means the template exists in [`language`](Self::language) only.
    pub languages: Vec<String>,
    /// Whole-request timeout. Default 10 s.
    pub timeout: Duration,
}

impl WhatsappConfig {
    /// Settings with the defaults: Meta's host, `v23.0`, `en_US` only, 10 s.
    pub fn new(
        name: impl Into<String>,
        phone_number_id: impl Into<String>,
        access_token: impl Into<String>,
        template_name: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            base_url: DEFAULT_BASE_URL.to_string(),
            api_version: DEFAULT_API_VERSION.to_string(),
            phone_number_id: phone_number_id.into(),
            access_token: access_token.into(),
            template_name: template_name.into(),
            language: DEFAULT_LANGUAGE.to_string(),
            languages: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl std::fmt::Debug for WhatsappConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhatsappConfig")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("api_version", &self.api_version)
            .field("phone_number_id", &self.phone_number_id)
            .field("access_token", &"<redacted>")
            .field("template_name", &self.template_name)
            .field("language", &self.language)
            .field("languages", &self.languages)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Sends verification codes with a WhatsApp authentication template.
#[derive(Debug)]
pub struct WhatsappChannel {
    config: WhatsappConfig,
    url: String,
    client: reqwest::Client,
}

impl WhatsappChannel {
    /// Builds the channel and its HTTP client (rustls, no redirects).
    ///
    /// # Errors
    /// [`BuildError::InvalidConfig`] for an empty name, token, template or language, a
    /// version or phone number id that is not a plain path segment, or a base URL that is
    /// not `http(s)://…`; [`BuildError::Client`] if the HTTP client cannot be built.
    pub fn new(mut config: WhatsappConfig) -> Result<Self, BuildError> {
        non_empty("whatsapp.name", &config.name)?;
        base_url("whatsapp.base_url", &mut config.base_url)?;
        path_segment("whatsapp.api_version", &config.api_version)?;
        path_segment("whatsapp.phone_number_id", &config.phone_number_id)?;
        non_empty("whatsapp.access_token", &config.access_token)?;
        non_empty("whatsapp.template_name", &config.template_name)?;
        non_empty("whatsapp.language", &config.language)?;
        let url = format!(
            "{}/{}/{}/messages",
            config.base_url, config.api_version, config.phone_number_id
        );
        let client = build_client(config.timeout)?;
        Ok(Self {
            config,
            url,
            client,
        })
    }

    /// The settings (the token redacted in `Debug`).
    pub fn config(&self) -> &WhatsappConfig {
        &self.config
    }

    /// The request body for `code` to `to` (E.164) in template language `language`.
    fn body(&self, to: &str, code: &str, language: &str) -> Value {
        let parameter = json!([{ "type": "text", "text": code }]);
        json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to.trim_start_matches('+'),
            "type": "template",
            "template": {
                "name": self.config.template_name,
                "language": { "policy": "deterministic", "code": language },
                "components": [
                    { "type": "body", "parameters": parameter },
                    { "type": "button", "sub_type": "url", "index": "0", "parameters": parameter },
                ],
            },
        })
    }
}

#[async_trait]
impl Channel for WhatsappChannel {
    fn name(&self) -> &str {
        &self.config.name
    }

    async fn send(&self, message: &OutboundMessage) -> Result<Delivery, SendError> {
        let Payload::Text { code, locale, .. } = &message.payload else {
            return Err(SendError::Permanent {
                reason: format!("{LABEL}: only text payloads go by WhatsApp"),
            });
        };
        if code.is_empty() || code.chars().count() > MAX_CODE_LEN {
            return Err(SendError::Permanent {
                reason: format!(
                    "{LABEL}: an authentication template code has 1 to {MAX_CODE_LEN} characters"
                ),
            });
        }
        let language = template_language(locale, &self.config.languages, &self.config.language);
        let body = self.body(message.to.as_str(), code, &language);
        let answer = execute(
            LABEL,
            self.client
                .post(&self.url)
                .bearer_auth(&self.config.access_token)
                .json(&body),
        )
        .await?;
        if answer.status.is_success() {
            #[derive(Deserialize)]
            struct Sent {
                messages: Vec<SentMessage>,
            }
            #[derive(Deserialize)]
            struct SentMessage {
                id: String,
            }
            // Accepted without a readable id: the message is on its way all the same.
            let id = serde_json::from_slice::<Sent>(&answer.body)
                .ok()
                .and_then(|s| s.messages.into_iter().next())
                .map(|m| m.id);
            return Ok(Delivery {
                message_id: id,
                ..Delivery::default()
            });
        }
        Err(classify(
            answer.status,
            answer.retry_after,
            graph_error(&answer.body),
        ))
    }
}

/// The fields of a Graph API error that the mapping uses.
#[derive(Debug, Default, Deserialize)]
struct GraphError {
    code: Option<i64>,
    error_subcode: Option<i64>,
    #[serde(rename = "type")]
    kind: Option<String>,
    is_transient: Option<bool>,
}

fn graph_error(body: &[u8]) -> Option<GraphError> {
    #[derive(Deserialize)]
    struct Envelope {
        error: GraphError,
    }
    serde_json::from_slice::<Envelope>(body)
        .ok()
        .map(|e| e.error)
}

/// Maps a non-2xx answer; see the module docs.
fn classify(
    status: reqwest::StatusCode,
    retry_after: Option<Duration>,
    error: Option<GraphError>,
) -> SendError {
    let error = error.unwrap_or_default();
    let lookup = |table: &[(i64, &'static str)]| {
        error
            .code
            .and_then(|c| table.iter().find(|(k, _)| *k == c).map(|(_, d)| *d))
    };
    let mut reason = format!("{LABEL}: HTTP {}", status.as_u16());
    if let Some(code) = error.code {
        reason.push_str(&format!(", error {code}"));
        if let Some(sub) = error.error_subcode {
            reason.push_str(&format!("/{sub}"));
        }
    }
    let known = lookup(&UNREACHABLE)
        .or_else(|| lookup(&RETRYABLE))
        .or_else(|| lookup(&PERMANENT));
    // Graph `type`s are identifiers such as `OAuthException`; anything else is not echoed.
    let kind = error
        .kind
        .as_deref()
        .filter(|k| k.len() <= 64 && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    match (known, kind) {
        (Some(what), _) => reason.push_str(&format!(" ({what})")),
        (None, Some(kind)) => reason.push_str(&format!(" ({kind})")),
        (None, None) => {}
    }
    if lookup(&UNREACHABLE).is_some() {
        SendError::Unreachable { reason }
    } else if lookup(&RETRYABLE).is_some()
        || (lookup(&PERMANENT).is_none()
            && (error.is_transient == Some(true) || is_retryable_status(status)))
    {
        SendError::Retryable {
            reason,
            retry_after,
        }
    } else {
        SendError::Permanent { reason }
    }
}

/// Picks the template language for a message locale (`sv-SE`, `en_us`, `pt-BR`).
///
/// Among `available` (the template's approved languages; empty means `[default]`), in
/// order: the exact language and region (`en-US` → `en_US`), the bare language (`sv-SE` →
/// `sv`), the first available code of the same language (`en-GB` → `en_US`), else
/// `default`. Comparison ignores case and `-` versus `_`; the available code is returned as
/// configured.
pub fn template_language(locale: &str, available: &[String], default: &str) -> String {
    let normalise = |s: &str| s.trim().replace('-', "_").to_ascii_lowercase();
    let language_of = |s: &str| s.split('_').next().unwrap_or_default().to_string();
    let wanted = normalise(locale);
    let wanted_language = language_of(&wanted);
    let default_only = [default.to_string()];
    let available = if available.is_empty() {
        &default_only[..]
    } else {
        available
    };
    let find = |pred: &dyn Fn(&str) -> bool| {
        available
            .iter()
            .find(|a| pred(&normalise(a)))
            .map(|a| a.trim().to_string())
    };
    if wanted.is_empty() {
        return default.to_string();
    }
    find(&|a| a == wanted)
        .or_else(|| find(&|a| a == wanted_language))
        .or_else(|| find(&|a| language_of(a) == wanted_language))
        .unwrap_or_else(|| default.to_string())
}

/// The webhook subscription handshake: `GET …?hub.mode=subscribe&hub.verify_token=…
/// &hub.challenge=…`.
///
/// Returns the challenge to answer with 200 when the mode is `subscribe` and the token
/// equals `expected_token` (compared in constant time); `None` means answer 403. An empty
/// expected token never verifies.
pub fn verify_subscription(
    mode: Option<&str>,
    verify_token: Option<&str>,
    challenge: Option<&str>,
    expected_token: &str,
) -> Option<String> {
    let token = verify_token?;
    let challenge = challenge?;
    let token_ok: bool = token.as_bytes().ct_eq(expected_token.as_bytes()).into();
    (mode == Some("subscribe") && token_ok && !expected_token.is_empty())
        .then(|| challenge.to_string())
}

/// Checks `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app_secret, raw_body)>`.
///
/// `raw_body` must be the bytes as received, never re-serialised JSON. The comparison is
/// constant-time; a missing prefix, bad hex, empty secret or wrong length never verifies.
pub fn verify_signature(app_secret: &str, raw_body: &[u8], header_value: &str) -> bool {
    let Some(hex) = header_value.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Some(presented) = hex_decode(hex) else {
        return false;
    };
    if app_secret.is_empty() {
        return false;
    }
    let mut mac = hmac_sha256(app_secret.as_bytes());
    mac.update(raw_body);
    mac.verify_slice(&presented).is_ok()
}

/// Turns a webhook notification into receipts: every `entry[].changes[].value.statuses[]`.
///
/// `delivered` and `read` are [`ReceiptStatus::Delivered`] (Meta may skip `delivered` when
/// both happen at once, and sends both otherwise: the caller deduplicates); `failed` is
/// [`ReceiptStatus::Failed`] with the first error's title and code in `detail`
/// (`Message undeliverable (131026)`); `sent` and unknown states are skipped, as are
/// statuses without an id and changes that are not statuses (inbound messages). A body that
/// is not JSON yields no receipts. Check [`verify_signature`] first.
pub fn parse_statuses(channel_name: &str, raw_body: &[u8]) -> Vec<Receipt> {
    let Ok(root) = serde_json::from_slice::<Value>(raw_body) else {
        return Vec::new();
    };
    let array = |v: &Value, key: &str| -> Vec<Value> {
        v.get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let mut receipts = Vec::new();
    for entry in array(&root, "entry") {
        for change in array(&entry, "changes") {
            let Some(value) = change.get("value") else {
                continue;
            };
            for status in array(value, "statuses") {
                if let Some(receipt) = status_receipt(channel_name, &status) {
                    receipts.push(receipt);
                }
            }
        }
    }
    receipts
}

fn status_receipt(channel_name: &str, status: &Value) -> Option<Receipt> {
    let id = status.get("id")?.as_str()?;
    let (state, detail) = match status.get("status")?.as_str()? {
        "delivered" | "read" => (ReceiptStatus::Delivered, None),
        "failed" => {
            let error = status
                .get("errors")
                .and_then(Value::as_array)
                .and_then(|e| e.first());
            let title = error
                .and_then(|e| e.get("title").or_else(|| e.get("message")))
                .and_then(Value::as_str);
            let code = error.and_then(|e| e.get("code")).and_then(Value::as_i64);
            let detail = match (title, code) {
                (Some(t), Some(c)) => format!("{t} ({c})"),
                (Some(t), None) => t.to_string(),
                (None, Some(c)) => format!("error {c}"),
                (None, None) => "failed".to_string(),
            };
            (ReceiptStatus::Failed, Some(detail))
        }
        _ => return None,
    };
    Some(Receipt {
        channel: channel_name.to_string(),
        message_id: id.to_string(),
        status: state,
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    fn err(code: i64) -> Option<GraphError> {
        Some(GraphError {
            code: Some(code),
            ..GraphError::default()
        })
    }

    #[test]
    fn codes_win_over_http_status() {
        let bad = StatusCode::BAD_REQUEST;
        assert!(matches!(
            classify(bad, None, err(131026)),
            SendError::Unreachable { .. }
        ));
        assert!(matches!(
            classify(bad, None, err(130429)),
            SendError::Retryable { .. }
        ));
        assert!(matches!(
            classify(StatusCode::INTERNAL_SERVER_ERROR, None, err(190)),
            SendError::Permanent { .. }
        ));
        assert!(matches!(
            classify(StatusCode::SERVICE_UNAVAILABLE, None, None),
            SendError::Retryable { .. }
        ));
        assert!(matches!(
            classify(bad, None, err(999_999)),
            SendError::Permanent { .. }
        ));
        let transient = GraphError {
            code: Some(999_999),
            is_transient: Some(true),
            ..GraphError::default()
        };
        assert!(matches!(
            classify(bad, None, Some(transient)),
            SendError::Retryable { .. }
        ));
    }

    #[test]
    fn reasons_name_the_code_but_echo_no_free_text() {
        let e = GraphError {
            code: Some(131026),
            error_subcode: Some(2494010),
            kind: Some("has spaces +46700000001".into()),
            is_transient: None,
        };
        let reason = classify(StatusCode::BAD_REQUEST, None, Some(e)).to_string();
        assert!(
            reason.contains("error 131026/2494010 (message undeliverable)"),
            "{reason}"
        );
        assert!(!reason.contains("+467"), "{reason}");
    }
}
