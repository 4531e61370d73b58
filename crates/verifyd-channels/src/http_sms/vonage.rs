//! Vonage (Nexmo) SMS API, the legacy `sms/json` endpoint.
//!
//! Request (developer.vonage.com/messaging/sms): `POST {base}/sms/json`, form-encoded
//! `api_key`, `api_secret`, `from`, `to` (E.164 digits, no `+`), `text`, `type=unicode`
//! when the text does not fit the GSM 03.38 alphabet, `callback`?.
//!
//! The answer is HTTP 200 even for a rejected message: each part in `messages[]` has a
//! `status`, `"0"` meaning accepted (not delivered). `messages[0].message-id` is the message
//! id. A non-zero status maps: `1` (throttled) and `5` (internal error) are retryable;
//! everything else (`2` missing and `3` invalid parameters, `4` invalid credentials, `6`
//! invalid message, `7` number barred, `8` account barred, `9` quota exceeded, `15` invalid
//! sender, `29` non-whitelisted destination, …) is permanent. HTTP 429/5xx are retryable as
//! for every provider.

use serde::Deserialize;

use super::{BuildError, base_url, execute, form_pairs, form_value, non_empty, status_error};
use crate::{Delivery, Receipt, ReceiptStatus, SendError};

/// Vonage's SMS API host.
pub const DEFAULT_BASE_URL: &str = "https://rest.nexmo.com";

const LABEL: &str = "vonage";

/// Vonage SMS settings.
#[derive(Clone)]
pub struct VonageConfig {
    /// API base, default `https://rest.nexmo.com`; tests point it at a mock.
    pub base_url: String,
    /// The account's API key.
    pub api_key: String,
    /// The account's API secret. Secret: redacted in `Debug`.
    pub api_secret: String,
    /// Default sender (`from`): a number or an alphanumeric sender id. A message's own
    /// [`crate::OutboundMessage::sender`] wins.
    pub from: String,
    /// `callback`: where Vonage sends delivery receipts for these messages; `None` uses the
    /// account's default receipt URL.
    pub callback: Option<String>,
}

impl VonageConfig {
    /// Settings against Vonage's API, without a per-message callback.
    pub fn new(
        api_key: impl Into<String>,
        api_secret: impl Into<String>,
        from: impl Into<String>,
    ) -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.to_string(),
            api_key: api_key.into(),
            api_secret: api_secret.into(),
            from: from.into(),
            callback: None,
        }
    }

    pub(super) fn validate(&mut self) -> Result<(), BuildError> {
        base_url("vonage.base_url", &mut self.base_url)?;
        non_empty("vonage.api_key", &self.api_key)?;
        non_empty("vonage.api_secret", &self.api_secret)?;
        non_empty("vonage.from", &self.from)
    }
}

impl std::fmt::Debug for VonageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VonageConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key)
            .field("api_secret", &"<redacted>")
            .field("from", &self.from)
            .field("callback", &self.callback)
            .finish()
    }
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    messages: Vec<Part>,
}

#[derive(Deserialize)]
struct Part {
    status: String,
    #[serde(rename = "message-id")]
    message_id: Option<String>,
}

pub(super) async fn send(
    client: &reqwest::Client,
    config: &VonageConfig,
    to: &str,
    sender: Option<&str>,
    text: &str,
) -> Result<Delivery, SendError> {
    let url = format!("{}/sms/json", config.base_url);
    let mut form = vec![
        ("api_key", config.api_key.as_str()),
        ("api_secret", config.api_secret.as_str()),
        ("from", sender.unwrap_or(&config.from)),
        ("to", to.trim_start_matches('+')),
        ("text", text),
    ];
    if needs_unicode(text) {
        form.push(("type", "unicode"));
    }
    if let Some(callback) = &config.callback {
        form.push(("callback", callback));
    }
    let answer = execute(LABEL, client.post(url).form(&form)).await?;
    if !answer.status.is_success() {
        return Err(status_error(LABEL, answer.status, answer.retry_after, ""));
    }
    let Ok(parsed) = serde_json::from_slice::<Answer>(&answer.body) else {
        // A 2xx we cannot read: the text may well be on its way.
        return Ok(Delivery::default());
    };
    if let Some(rejected) = parsed.messages.iter().find(|p| p.status != "0") {
        return Err(status_code_error(&rejected.status, answer.retry_after));
    }
    Ok(Delivery {
        message_id: parsed
            .messages
            .into_iter()
            .next()
            .and_then(|p| p.message_id),
        ..Delivery::default()
    })
}

/// Maps a non-zero `messages[].status`.
fn status_code_error(status: &str, retry_after: Option<std::time::Duration>) -> SendError {
    let (what, retryable) = match status {
        "1" => ("throttled", true),
        "2" => ("missing parameters", false),
        "3" => ("invalid parameters", false),
        "4" => ("invalid credentials", false),
        "5" => ("internal error", true),
        "6" => ("invalid message", false),
        "7" => ("number barred", false),
        "8" => ("partner account barred", false),
        "9" => ("partner quota violation", false),
        "10" => ("too many existing binds", true),
        "11" => ("account not enabled for HTTP", false),
        "12" => ("message too long", false),
        "14" => ("invalid signature", false),
        "15" => ("invalid sender address", false),
        "22" => ("invalid network code", false),
        "23" => ("invalid callback URL", false),
        "29" => ("non-whitelisted destination", false),
        "32" => ("signature and API secret disallowed", false),
        "33" => ("number de-activated", false),
        _ => ("rejected", false),
    };
    // The status is Vonage's own small integer; anything else is not echoed.
    let shown = if status.len() <= 4 && status.bytes().all(|b| b.is_ascii_digit()) {
        status
    } else {
        "?"
    };
    let reason = format!("{LABEL}: status {shown} ({what})");
    if retryable {
        SendError::Retryable {
            reason,
            retry_after,
        }
    } else {
        SendError::Permanent { reason }
    }
}

/// Whether `text` needs `type=unicode`: true when any character is outside the GSM 03.38
/// default alphabet and its extension table.
pub fn needs_unicode(text: &str) -> bool {
    const BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
                         ¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
    const EXTENSION: &str = "\u{c}^{}\\[~]|€";
    !text
        .chars()
        .all(|c| BASIC.contains(c) || EXTENSION.contains(c))
}

/// Parses a Vonage SMS delivery receipt: a JSON body (`POST-JSON` webhooks), a form body
/// (`POST`) or the query string of a `GET` receipt.
///
/// Matches by `messageId`. `status` `delivered` is delivered; `failed`, `expired` and
/// `rejected` are failed, with `detail` `status:failed err-code:6`. `accepted`, `buffered`,
/// `unknown` and bodies without a `messageId` give `None`.
pub fn parse_delivery_receipt(channel_name: &str, raw: &[u8]) -> Option<Receipt> {
    let (message_id, state, err_code) = if raw.trim_ascii_start().starts_with(b"{") {
        let v: serde_json::Value = serde_json::from_slice(raw).ok()?;
        let field = |name: &str| match v.get(name)? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        (field("messageId")?, field("status")?, field("err-code"))
    } else {
        let pairs = form_pairs(raw);
        (
            form_value(&pairs, "messageId")?.to_string(),
            form_value(&pairs, "status")?.to_string(),
            form_value(&pairs, "err-code").map(str::to_string),
        )
    };
    let status = match state.as_str() {
        "delivered" => ReceiptStatus::Delivered,
        "failed" | "expired" | "rejected" => ReceiptStatus::Failed,
        _ => return None,
    };
    let detail = match err_code {
        Some(code) if !code.is_empty() => format!("status:{state} err-code:{code}"),
        _ => format!("status:{state}"),
    };
    Some(Receipt {
        channel: channel_name.to_string(),
        message_id,
        status,
        detail: Some(detail),
    })
}
