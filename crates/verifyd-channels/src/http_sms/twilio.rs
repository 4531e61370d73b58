//! Twilio Programmable Messaging.
//!
//! Request (twilio.com/docs/messaging/api/message-resource):
//! `POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json`, HTTP Basic
//! `AccountSid:AuthToken`, form-encoded `To`, `From` (or `MessagingServiceSid`), `Body`,
//! `StatusCallback`?. The answer is `201` with the message; its `sid` is the message id.
//!
//! Errors come as `{"code": 21211, "message": "…", "more_info": "…", "status": 400}`.
//! Beyond the shared status mapping, code 20429 (too many requests) is retryable, and
//! 21610 (recipient unsubscribed with STOP), 21612 (not reachable by SMS) and 21614 (not a
//! mobile number) are [`SendError::Unreachable`]: SMS cannot reach that recipient through
//! any route, another channel may.
//!
//! Status callbacks are form posts signed with `X-Twilio-Signature`:
//! base64(HMAC-SHA1(AuthToken, full URL + every POST parameter sorted by name, each as
//! name then value)); see [`signature`] and [`verify_signature`].

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha1::Sha1;
use subtle::ConstantTimeEq;

use super::{BuildError, base_url, execute, form_pairs, form_value, non_empty, path_segment};
use crate::{Delivery, Receipt, ReceiptStatus, SendError};

/// Twilio's REST API.
pub const DEFAULT_BASE_URL: &str = "https://api.twilio.com";

/// The header carrying a webhook's signature.
pub const SIGNATURE_HEADER: &str = "X-Twilio-Signature";

const LABEL: &str = "twilio";

/// Error codes meaning SMS cannot reach the recipient at all.
const UNREACHABLE_CODES: [(i64, &str); 3] = [
    (21610, "recipient has unsubscribed"),
    (21612, "recipient not reachable by SMS"),
    (21614, "recipient is not a mobile number"),
];

/// Who a Twilio text is sent from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TwilioSender {
    /// `From`: a Twilio number in E.164 or an alphanumeric sender id.
    From(String),
    /// `MessagingServiceSid` (`MG…`): Twilio picks the number from the service's pool.
    MessagingService(String),
}

/// Twilio settings.
#[derive(Clone)]
pub struct TwilioConfig {
    /// API base, default `https://api.twilio.com`; tests point it at a mock.
    pub base_url: String,
    /// The account SID (`AC…`): path segment and Basic-auth user.
    pub account_sid: String,
    /// The account's auth token: Basic-auth password and the webhook signing key. Secret:
    /// redacted in `Debug`.
    pub auth_token: String,
    /// Default sender. A message's own [`crate::OutboundMessage::sender`] is sent as `From`.
    pub sender: TwilioSender,
    /// `StatusCallback`: where Twilio posts status changes; `None` sends none.
    pub status_callback: Option<String>,
}

impl TwilioConfig {
    /// Settings against Twilio's API, without a status callback.
    pub fn new(
        account_sid: impl Into<String>,
        auth_token: impl Into<String>,
        sender: TwilioSender,
    ) -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.to_string(),
            account_sid: account_sid.into(),
            auth_token: auth_token.into(),
            sender,
            status_callback: None,
        }
    }

    pub(super) fn validate(&mut self) -> Result<(), BuildError> {
        base_url("twilio.base_url", &mut self.base_url)?;
        path_segment("twilio.account_sid", &self.account_sid)?;
        non_empty("twilio.auth_token", &self.auth_token)?;
        match &self.sender {
            TwilioSender::From(s) => non_empty("twilio.sender.from", s),
            TwilioSender::MessagingService(s) => {
                non_empty("twilio.sender.messaging_service_sid", s)
            }
        }
    }
}

impl std::fmt::Debug for TwilioConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioConfig")
            .field("base_url", &self.base_url)
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"<redacted>")
            .field("sender", &self.sender)
            .field("status_callback", &self.status_callback)
            .finish()
    }
}

#[derive(Deserialize)]
struct Message {
    sid: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: Option<i64>,
}

pub(super) async fn send(
    client: &reqwest::Client,
    config: &TwilioConfig,
    to: &str,
    sender: Option<&str>,
    body: &str,
) -> Result<Delivery, SendError> {
    let url = format!(
        "{}/2010-04-01/Accounts/{}/Messages.json",
        config.base_url, config.account_sid
    );
    let from = match (sender, &config.sender) {
        (Some(s), _) => ("From", s),
        (None, TwilioSender::From(s)) => ("From", s.as_str()),
        (None, TwilioSender::MessagingService(s)) => ("MessagingServiceSid", s.as_str()),
    };
    let mut form = vec![("To", to), from, ("Body", body)];
    if let Some(callback) = &config.status_callback {
        form.push(("StatusCallback", callback));
    }
    let answer = execute(
        LABEL,
        client
            .post(url)
            .basic_auth(&config.account_sid, Some(&config.auth_token))
            .form(&form),
    )
    .await?;
    if answer.status.is_success() {
        return match serde_json::from_slice::<Message>(&answer.body) {
            Ok(m) => Ok(Delivery {
                message_id: Some(m.sid),
                ..Delivery::default()
            }),
            Err(_) => Ok(Delivery::default()),
        };
    }
    let code = serde_json::from_slice::<ErrorBody>(&answer.body)
        .ok()
        .and_then(|e| e.code);
    let status = answer.status.as_u16();
    if let Some((code, what)) = code.and_then(|c| UNREACHABLE_CODES.iter().find(|u| u.0 == c)) {
        return Err(SendError::Unreachable {
            reason: format!("{LABEL}: HTTP {status}, error {code} ({what})"),
        });
    }
    let detail = code.map(|c| format!("error {c}")).unwrap_or_default();
    if code == Some(20429) {
        return Err(SendError::Retryable {
            reason: format!("{LABEL}: HTTP {status}, {detail} (too many requests)"),
            retry_after: answer.retry_after,
        });
    }
    Err(super::status_error(
        LABEL,
        answer.status,
        answer.retry_after,
        &detail,
    ))
}

/// Parses a Twilio status callback (the form body).
///
/// Matches by `MessageSid` (older callbacks: `SmsSid`). `MessageStatus` `delivered` (and
/// `read`, for channels that report it) is delivered; `undelivered`, `failed` and
/// `canceled` are failed, with `detail` `status:undelivered error:30003`. Intermediate
/// states (`queued`, `sending`, `sent`, `accepted`, …) and bodies without a sid give
/// `None`. Check [`verify_signature`] first.
pub fn parse_status_callback(channel_name: &str, raw_form_body: &[u8]) -> Option<Receipt> {
    let pairs = form_pairs(raw_form_body);
    let sid = form_value(&pairs, "MessageSid").or_else(|| form_value(&pairs, "SmsSid"))?;
    let state = form_value(&pairs, "MessageStatus").or_else(|| form_value(&pairs, "SmsStatus"))?;
    let status = match state {
        "delivered" | "read" => ReceiptStatus::Delivered,
        "undelivered" | "failed" | "canceled" => ReceiptStatus::Failed,
        _ => return None,
    };
    let detail = match form_value(&pairs, "ErrorCode").filter(|c| !c.is_empty()) {
        Some(code) => format!("status:{state} error:{code}"),
        None => format!("status:{state}"),
    };
    Some(Receipt {
        channel: channel_name.to_string(),
        message_id: sid.to_string(),
        status,
        detail: Some(detail),
    })
}

/// The `X-Twilio-Signature` Twilio would send for a form post of `params` to `url`:
/// base64(HMAC-SHA1(auth_token, url + each parameter as name then value, sorted by name)).
///
/// A name sent several times contributes each distinct value once, in sorted order, as
/// Twilio's own helper libraries do.
pub fn signature(auth_token: &str, url: &str, params: &[(&str, &str)]) -> String {
    BASE64.encode(mac(auth_token, url, params).finalize().into_bytes())
}

fn mac(auth_token: &str, url: &str, params: &[(&str, &str)]) -> Hmac<Sha1> {
    let mut sorted = params.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut mac = super::hmac_sha1(auth_token.as_bytes());
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac
}

/// Checks a status callback's `X-Twilio-Signature` in constant time.
///
/// `url` is the full URL Twilio was given (the configured `StatusCallback`, query string
/// included), not one rebuilt from the request behind a proxy; `raw_form_body` is the body
/// as received. Like Twilio's helper libraries, the URL is also tried with its port removed
/// and with the scheme's default port added, since which of those Twilio signs depends on
/// how the URL was written. An empty token or header never verifies.
pub fn verify_signature(
    auth_token: &str,
    url: &str,
    raw_form_body: &[u8],
    header_value: &str,
) -> bool {
    let Ok(expected) = BASE64.decode(header_value.trim()) else {
        return false;
    };
    if auth_token.is_empty() || expected.is_empty() {
        return false;
    }
    let pairs = form_pairs(raw_form_body);
    let params: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut ok = false;
    for candidate in url_variants(url) {
        let computed = mac(auth_token, &candidate, &params).finalize().into_bytes();
        ok |= bool::from(computed.as_slice().ct_eq(&expected));
    }
    ok
}

/// `url` as given, without its port, and with the scheme's default port.
fn url_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_string()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return out;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => "443",
        "http" => "80",
        _ => return out,
    };
    let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(split);
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), authority),
    };
    // A port follows the last ':' unless that ':' sits inside an IPv6 literal.
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') && p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        _ => (hostport, None),
    };
    match port {
        Some(_) => out.push(format!("{scheme}://{userinfo}{host}{tail}")),
        None => out.push(format!("{scheme}://{userinfo}{host}:{default_port}{tail}")),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_variants_add_or_remove_the_port() {
        assert_eq!(
            url_variants("https://example.com/cb?a=1"),
            [
                "https://example.com/cb?a=1",
                "https://example.com:443/cb?a=1"
            ]
        );
        assert_eq!(
            url_variants("http://u:p@example.com:8080/cb"),
            [
                "http://u:p@example.com:8080/cb",
                "http://u:p@example.com/cb"
            ]
        );
        assert_eq!(
            url_variants("https://[::1]/cb"),
            ["https://[::1]/cb", "https://[::1]:443/cb"]
        );
    }
}
