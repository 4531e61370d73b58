//! SMS through a provider's HTTP API: Sinch SMS REST, Twilio Messages or Vonage SMS.
//!
//! One [`HttpSmsChannel`] talks to one provider, picked by [`Provider`]. Each provider's
//! module holds its configuration, the exact request it sends, how its answers map onto
//! [`SendError`], and pure parsers for its delivery-report webhooks (no I/O, so the server
//! mounts them on its own routes).
//!
//! Error mapping shared by all three (each module adds its provider's own codes):
//! - transport failures (connect, timeout, a body cut short) and HTTP 408/429/5xx are
//!   [`SendError::Retryable`], with `Retry-After` (delay-seconds) as the hint;
//! - any other non-2xx is [`SendError::Permanent`].
//!
//! Secrets (tokens, API secrets) are redacted in every `Debug`, and no request or response
//! body is ever logged or copied into an error: bodies carry codes and phone numbers.
//!
//! # Layout
//! - this module: the channel, [`BuildError`], and the HTTP plumbing shared with
//!   [`crate::whatsapp`].
//! - [`sinch`], [`twilio`], [`vonage`]: one provider each.

pub mod sinch;
pub mod twilio;
pub mod vonage;

use std::time::Duration;

use async_trait::async_trait;
use hmac::Hmac;
use hmac::digest::KeyInit;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use sha1::{Digest, Sha1};
use sha2::Sha256;

use crate::{Channel, Delivery, OutboundMessage, Payload, SendError};

pub use sinch::SinchConfig;
pub use twilio::{TwilioConfig, TwilioSender};
pub use vonage::VonageConfig;

/// The default whole-request timeout of the HTTP channels.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The `User-Agent` of every provider request. `name/x.y.z` also satisfies the pattern
/// Meta's OpenAPI document puts on that header.
pub(crate) const USER_AGENT: &str = concat!("verifyd/", env!("CARGO_PKG_VERSION"));

/// Why a channel could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A configuration value is missing or malformed.
    #[error("invalid channel configuration: {field} {reason}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The HTTP client could not be created (TLS initialisation).
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
}

/// Which provider an [`HttpSmsChannel`] sends through, with that provider's settings.
#[derive(Debug, Clone)]
pub enum Provider {
    /// Sinch SMS REST API (`POST /xms/v1/{service_plan_id}/batches`).
    Sinch(SinchConfig),
    /// Twilio Programmable Messaging (`POST /2010-04-01/Accounts/{sid}/Messages.json`).
    Twilio(TwilioConfig),
    /// Vonage (Nexmo) SMS API (`POST /sms/json`).
    Vonage(VonageConfig),
}

impl Provider {
    /// `sinch`, `twilio` or `vonage`: the label used in error reasons.
    pub fn label(&self) -> &'static str {
        match self {
            Provider::Sinch(_) => "sinch",
            Provider::Twilio(_) => "twilio",
            Provider::Vonage(_) => "vonage",
        }
    }
}

/// Settings of one HTTP SMS channel.
#[derive(Debug, Clone)]
pub struct HttpSmsConfig {
    /// The channel's name for logs, metrics and receipt matching (`sms:twilio`).
    pub name: String,
    /// The provider and its credentials.
    pub provider: Provider,
    /// Whole-request timeout (connect, send, read the answer). Default 10 s.
    pub timeout: Duration,
}

impl HttpSmsConfig {
    /// A configuration with the default timeout.
    pub fn new(name: impl Into<String>, provider: Provider) -> Self {
        Self {
            name: name.into(),
            provider,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// An SMS channel backed by a provider's HTTP API.
#[derive(Debug)]
pub struct HttpSmsChannel {
    name: String,
    provider: Provider,
    client: reqwest::Client,
}

impl HttpSmsChannel {
    /// Builds the channel and its HTTP client (rustls, no redirects).
    ///
    /// # Errors
    /// [`BuildError::InvalidConfig`] for an empty name, credential or sender, or a base URL
    /// that is not `http(s)://…`; [`BuildError::Client`] if the HTTP client cannot be built.
    pub fn new(config: HttpSmsConfig) -> Result<Self, BuildError> {
        non_empty("name", &config.name)?;
        let mut provider = config.provider;
        match &mut provider {
            Provider::Sinch(c) => c.validate()?,
            Provider::Twilio(c) => c.validate()?,
            Provider::Vonage(c) => c.validate()?,
        }
        Ok(Self {
            name: config.name,
            provider,
            client: build_client(config.timeout)?,
        })
    }

    /// The provider and its settings.
    pub fn provider(&self) -> &Provider {
        &self.provider
    }
}

#[async_trait]
impl Channel for HttpSmsChannel {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, message: &OutboundMessage) -> Result<Delivery, SendError> {
        let Payload::Text { body, .. } = &message.payload else {
            return Err(SendError::Permanent {
                reason: format!("{}: only text payloads go by SMS", self.provider.label()),
            });
        };
        let sender = message.sender.as_deref();
        let to = message.to.as_str();
        match &self.provider {
            Provider::Sinch(c) => sinch::send(&self.client, c, to, sender, body).await,
            Provider::Twilio(c) => twilio::send(&self.client, c, to, sender, body).await,
            Provider::Vonage(c) => vonage::send(&self.client, c, to, sender, body).await,
        }
    }
}

// ---- plumbing shared with the WhatsApp channel -------------------------------------------

/// An HTTP client for provider APIs: rustls, a whole-request timeout, no redirects (a
/// redirected POST would be re-sent somewhere we did not configure).
pub(crate) fn build_client(timeout: Duration) -> Result<reqwest::Client, BuildError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(USER_AGENT)
        .build()
        .map_err(BuildError::Client)
}

/// Fails on an empty (or all-blank) required value.
pub(crate) fn non_empty(field: &'static str, value: &str) -> Result<(), BuildError> {
    if value.trim().is_empty() {
        return Err(BuildError::InvalidConfig {
            field,
            reason: "must not be empty",
        });
    }
    Ok(())
}

/// Checks a base URL and strips its trailing slashes.
pub(crate) fn base_url(field: &'static str, value: &mut String) -> Result<(), BuildError> {
    if !(value.starts_with("http://") || value.starts_with("https://")) {
        return Err(BuildError::InvalidConfig {
            field,
            reason: "must start with http:// or https://",
        });
    }
    while value.ends_with('/') {
        value.pop();
    }
    Ok(())
}

/// Fails unless `value` is a non-empty run of ASCII letters, digits, `-`, `_` and `.`: what
/// may be pasted into a URL path without escaping (ids such as a service plan or account).
pub(crate) fn path_segment(field: &'static str, value: &str) -> Result<(), BuildError> {
    non_empty(field, value)?;
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(BuildError::InvalidConfig {
            field,
            reason: "may only hold letters, digits, '-', '_' and '.'",
        });
    }
    Ok(())
}

/// A provider's answer, read in full.
pub(crate) struct Answer {
    /// The HTTP status.
    pub(crate) status: StatusCode,
    /// `Retry-After`, if it held delay-seconds.
    pub(crate) retry_after: Option<Duration>,
    /// The whole body (provider answers are small).
    pub(crate) body: Vec<u8>,
}

/// Sends `request` and reads the whole answer. Transport failures are retryable.
pub(crate) async fn execute(
    label: &str,
    request: reqwest::RequestBuilder,
) -> Result<Answer, SendError> {
    let response = request
        .send()
        .await
        .map_err(|e| transport_error(label, &e))?;
    let status = response.status();
    let retry_after = retry_after(response.headers());
    let body = response
        .bytes()
        .await
        .map_err(|e| transport_error(label, &e))?;
    Ok(Answer {
        status,
        retry_after,
        body: body.to_vec(),
    })
}

/// `Retry-After` as delay-seconds. An HTTP-date is ignored: turning it into a delay needs a
/// clock, which these channels do not read. The caller then uses its own back-off.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    value.parse::<u64>().ok().map(Duration::from_secs)
}

/// A failure before a complete answer arrived. The request may or may not have reached the
/// provider; a retry risks a duplicate text, which beats a lost code.
pub(crate) fn transport_error(label: &str, error: &reqwest::Error) -> SendError {
    let what = if error.is_timeout() {
        "request timed out"
    } else if error.is_connect() {
        "connection failed"
    } else if error.is_body() || error.is_decode() {
        "reading the answer failed"
    } else {
        "request failed"
    };
    SendError::Retryable {
        reason: format!("{label}: {what}"),
        retry_after: None,
    }
}

/// The HTTP-status half of the mapping: 408, 429 and 5xx are retryable, anything else
/// permanent. `detail` (already free of codes and numbers) is appended to the reason.
pub(crate) fn status_error(
    label: &str,
    status: StatusCode,
    retry_after: Option<Duration>,
    detail: &str,
) -> SendError {
    let reason = if detail.is_empty() {
        format!("{label}: HTTP {}", status.as_u16())
    } else {
        format!("{label}: HTTP {}, {detail}", status.as_u16())
    };
    if is_retryable_status(status) {
        SendError::Retryable {
            reason,
            retry_after,
        }
    } else {
        SendError::Permanent { reason }
    }
}

/// 408, 429 and 5xx.
pub(crate) fn is_retryable_status(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

/// HMAC-SHA1 keyed with `key`, through the infallible constructor: keys up to one block
/// are zero-padded and longer keys hashed first, exactly as RFC 2104 prescribes.
pub(crate) fn hmac_sha1(key: &[u8]) -> Hmac<Sha1> {
    let mut block = [0u8; 64];
    if key.len() <= block.len() {
        block[..key.len()].copy_from_slice(key);
    } else {
        block[..20].copy_from_slice(&Sha1::digest(key));
    }
    <Hmac<Sha1> as KeyInit>::new(&block.into())
}

/// HMAC-SHA256 keyed with `key`, as [`hmac_sha1`] does it.
pub(crate) fn hmac_sha256(key: &[u8]) -> Hmac<Sha256> {
    let mut block = [0u8; 64];
    if key.len() <= block.len() {
        block[..key.len()].copy_from_slice(key);
    } else {
        block[..32].copy_from_slice(&Sha256::digest(key));
    }
    <Hmac<Sha256> as KeyInit>::new(&block.into())
}

/// Lowercase hex of `bytes`.
#[cfg(test)]
fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Decodes hex (either case); `None` on odd length or a non-hex digit.
pub(crate) fn hex_decode(text: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let pairs = text.as_bytes().chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return None;
    }
    pairs
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

/// Decodes an `application/x-www-form-urlencoded` body (or a query string) into pairs, in
/// order; an undecodable body yields no pairs.
pub(crate) fn form_pairs(raw: &[u8]) -> Vec<(String, String)> {
    serde_urlencoded::from_bytes(raw).unwrap_or_default()
}

/// The first value of `name` in decoded form pairs.
pub(crate) fn form_value<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_reads_delay_seconds_and_ignores_dates() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static(" 30 "));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(30)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn hmac_keys_longer_than_a_block_are_hashed_first() {
        use hmac::Mac;
        // RFC 2202 test case 6 (HMAC-SHA1, 80-byte key) and RFC 4231 test case 6
        // (HMAC-SHA256, 131-byte key).
        let mut m = hmac_sha1(&[0xaa; 80]);
        m.update(b"Test Using Larger Than Block-Size Key - Hash Key First");
        assert_eq!(
            hex_encode(&m.finalize().into_bytes()),
            "aa4ae5e15272d00e95705637ce8a3b55ed402112"
        );
        let mut m = hmac_sha256(&[0xaa; 131]);
        m.update(b"Test Using Larger Than Block-Size Key - Hash Key First");
        assert_eq!(
            hex_encode(&m.finalize().into_bytes()),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        // RFC 2202 test case 1: a short key is zero-padded.
        let mut m = hmac_sha1(&[0x0b; 20]);
        m.update(b"Hi There");
        assert_eq!(
            hex_encode(&m.finalize().into_bytes()),
            "b617318655057264e28bc0b6fb378c8ef146be00"
        );
    }

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        assert_eq!(hex_encode(&[0x00, 0xab, 0xff]), "00abff");
        assert_eq!(hex_decode("00ABff"), Some(vec![0x00, 0xab, 0xff]));
        assert_eq!(hex_decode("abc"), None);
        assert_eq!(hex_decode("zz"), None);
    }

    #[test]
    fn statuses_split_into_retryable_and_permanent() {
        for s in [408, 429, 500, 502, 503] {
            assert!(is_retryable_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [400, 401, 403, 404, 422] {
            assert!(
                !is_retryable_status(StatusCode::from_u16(s).unwrap()),
                "{s}"
            );
        }
    }
}
