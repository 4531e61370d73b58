//! Serde models of every body in the Sinch Verification API v1.
//!
//! Request models are lenient: every field is optional (the server reports a missing field
//! as `40002` itself, with a clear message), unknown keys are ignored, and the SDK spellings
//! `flashCall`/`flashcall` are both accepted. Response models are strict and emit only the
//! canonical shapes (lower-case `method`, camel-case `flashCall` key).

use serde::{Deserialize, Deserializer, Serialize};

/// `{"type":"number","endpoint":"+46..."}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    /// Always `number`.
    #[serde(rename = "type")]
    pub kind: String,
    /// E.164 number.
    pub endpoint: String,
}

impl Identity {
    /// A number identity.
    pub fn number(endpoint: impl Into<String>) -> Self {
        Self {
            kind: "number".into(),
            endpoint: endpoint.into(),
        }
    }
}

/// An identity in a request: both fields optional so their absence gets a clear error.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct IdentityIn {
    /// Should be `number`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// The number.
    pub endpoint: Option<String>,
}

/// `{"currencyId":"EUR","amount":0.0453}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Price {
    /// ISO 4217.
    #[serde(rename = "currencyId")]
    pub currency_id: String,
    /// Amount.
    pub amount: f64,
}

/// Accepts a string or a number (a Java v1.0 callback answered `"code": 4567`).
fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Sn {
        S(String),
        N(serde_json::Number),
    }
    Ok(Option::<Sn>::deserialize(d)?.map(|v| match v {
        Sn::S(s) => s,
        Sn::N(n) => n.to_string(),
    }))
}

// ---------------------------------------------------------------------------------------
// Start

/// `POST /verification/v1/verifications`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StartRequest {
    /// The number.
    pub identity: Option<IdentityIn>,
    /// `sms`, `flashcall` (`flashCall`), `callout`, `seamless`, `whatsapp`.
    pub method: Option<String>,
    /// Unique per application.
    pub reference: Option<String>,
    /// Echoed into events (≤ 4096 chars).
    pub custom: Option<String>,
    /// SMS options.
    #[serde(rename = "smsOptions")]
    pub sms_options: Option<SmsOptions>,
    /// Flash-call options.
    #[serde(rename = "flashCallOptions", alias = "flashcallOptions")]
    pub flash_call_options: Option<FlashCallOptions>,
    /// Callout options.
    #[serde(rename = "calloutOptions")]
    pub callout_options: Option<CalloutOptions>,
    /// WhatsApp options.
    #[serde(rename = "whatsappOptions", alias = "whatsAppOptions")]
    pub whatsapp_options: Option<WhatsappOptions>,
    /// Python 1.x leaks `expiry` to the top level (wire doc §1.2).
    pub expiry: Option<String>,
    /// Python 1.x leaks `template` to the top level.
    pub template: Option<String>,
    /// Tolerated at top level for the same reason.
    #[serde(rename = "codeType")]
    pub code_type: Option<String>,
}

/// `smsOptions`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SmsOptions {
    /// `Numeric` | `Alpha` | `Alphanumeric`.
    #[serde(rename = "codeType")]
    pub code_type: Option<String>,
    /// `HH:MM:SS`.
    pub expiry: Option<String>,
    /// A template containing `{{CODE}}`.
    pub template: Option<String>,
    /// Not sent by current SDKs (node moves it to `Accept-Language`), tolerated.
    pub locale: Option<String>,
}

/// `flashCallOptions`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FlashCallOptions {
    /// Seconds to ring (5..=120; `0` from .NET means unset).
    #[serde(rename = "dialTimeout")]
    pub dial_timeout: Option<i64>,
    /// Seconds the handset waits (5..=120).
    #[serde(rename = "interceptionTimeout")]
    pub interception_timeout: Option<i64>,
}

/// `calloutOptions`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CalloutOptions {
    /// `.NET` always sends `{"speech":{}}`.
    pub speech: Option<Speech>,
}

/// `{"locale":"en-US"}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Speech {
    /// Speech locale.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
}

/// `whatsappOptions`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WhatsappOptions {
    /// `Numeric` | `Alpha` | `Alphanumeric`.
    #[serde(rename = "codeType")]
    pub code_type: Option<String>,
}

/// A `_links` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    /// `status` or `report`.
    pub rel: String,
    /// Absolute URL.
    pub href: String,
    /// `GET` or `PUT`.
    pub method: String,
}

/// The start answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartResponse {
    /// Verification id.
    pub id: String,
    /// Lower-case method.
    pub method: String,
    /// SMS details.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sms: Option<SmsStartInfo>,
    /// Flash-call details (camel-case key).
    #[serde(rename = "flashCall", skip_serializing_if = "Option::is_none")]
    pub flash_call: Option<FlashCallStartInfo>,
    /// Seamless details.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seamless: Option<SeamlessStartInfo>,
    /// WhatsApp details.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub whatsapp: Option<WhatsappStartInfo>,
    /// Links to status and report.
    #[serde(rename = "_links")]
    pub links: Vec<Link>,
}

/// `sms` in the start answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmsStartInfo {
    /// The template with `{{CODE}}`.
    pub template: String,
    /// Seconds the client should wait for the SMS.
    #[serde(rename = "interceptionTimeout")]
    pub interception_timeout: u32,
    /// The code alphabet.
    #[serde(rename = "codeType")]
    pub code_type: String,
}

/// `flashCall` in the start answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlashCallStartInfo {
    /// Regex the incoming CLI matches.
    #[serde(rename = "cliFilter")]
    pub cli_filter: String,
    /// Seconds to wait for the call.
    #[serde(rename = "interceptionTimeout")]
    pub interception_timeout: u32,
    /// Seconds allowed for the report.
    #[serde(rename = "reportTimeout")]
    pub report_timeout: u32,
    /// Seconds after which the handset rejects the call.
    #[serde(rename = "denyCallAfter")]
    pub deny_call_after: u32,
    /// The call id (the verification id).
    #[serde(rename = "callId")]
    pub call_id: String,
}

/// `seamless` in the start answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeamlessStartInfo {
    /// The URI the device opens over mobile data.
    #[serde(rename = "targetUri")]
    pub target_uri: String,
}

/// `whatsapp` in the start answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WhatsappStartInfo {
    /// The code alphabet.
    #[serde(rename = "codeType")]
    pub code_type: String,
}

// ---------------------------------------------------------------------------------------
// Report

/// `PUT .../verifications/id/{id}` and `.../number/{endpoint}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ReportRequest {
    /// The method of the verification reported on.
    pub method: Option<String>,
    /// `{"code": ...}`.
    pub sms: Option<CodeReport>,
    /// `{"cli": ...}`; Java 1.0 and legacy docs use the lower-case key.
    #[serde(rename = "flashCall", alias = "flashcall")]
    pub flash_call: Option<CliReport>,
    /// `{"code": ...}`.
    pub callout: Option<CodeReport>,
    /// `{"code": ...}`.
    #[serde(alias = "whatsApp")]
    pub whatsapp: Option<CodeReport>,
    /// Java 1.0 top-level `source`.
    pub source: Option<String>,
    /// Java 1.0 top-level `code`.
    #[serde(default, deserialize_with = "string_or_number")]
    pub code: Option<String>,
}

/// A reported code.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CodeReport {
    /// The code (a JSON number is accepted too).
    #[serde(default, deserialize_with = "string_or_number")]
    pub code: Option<String>,
    /// Deprecated SMS `cli`.
    pub cli: Option<String>,
}

/// A reported flash-call CLI.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CliReport {
    /// The full E.164 caller id.
    #[serde(default, deserialize_with = "string_or_number")]
    pub cli: Option<String>,
}

/// The report answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportResponse {
    /// Verification id.
    pub id: String,
    /// Lower-case method.
    pub method: String,
    /// `SUCCESSFUL`, `FAIL`, ...
    pub status: String,
    /// Why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Caller's reference (deprecated in the OAS, expected by node e2e).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// `intercepted` | `manual` (deprecated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Flashcall and callout only.
    #[serde(rename = "callComplete", skip_serializing_if = "Option::is_none")]
    pub call_complete: Option<bool>,
}

// ---------------------------------------------------------------------------------------
// Status

/// The price object of a status answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusPrice {
    /// What the verification cost.
    #[serde(rename = "verificationPrice")]
    pub verification_price: Price,
    /// Call methods: what the call cost.
    #[serde(rename = "terminationPrice", skip_serializing_if = "Option::is_none")]
    pub termination_price: Option<Price>,
    /// Call methods: billable seconds.
    #[serde(rename = "billableDuration", skip_serializing_if = "Option::is_none")]
    pub billable_duration: Option<u32>,
}

/// The status answer (all three GET endpoints).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusResponse {
    /// Verification id.
    pub id: String,
    /// Lower-case method.
    pub method: String,
    /// Status.
    pub status: String,
    /// Why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Caller's reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The number.
    pub identity: Identity,
    /// ISO country of the number.
    #[serde(rename = "countryId", skip_serializing_if = "Option::is_none")]
    pub country_id: Option<String>,
    /// UTC without zone designator, 7 fraction digits.
    #[serde(rename = "verificationTimestamp")]
    pub verification_timestamp: String,
    /// Only once the status left PENDING.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<StatusPrice>,
    /// `intercepted` | `manual`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Call methods.
    #[serde(rename = "callComplete", skip_serializing_if = "Option::is_none")]
    pub call_complete: Option<bool>,
    /// Call methods.
    #[serde(rename = "callResult", skip_serializing_if = "Option::is_none")]
    pub call_result: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Callbacks

/// `VerificationRequestEvent`, POSTed synchronously at start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestEvent {
    /// Verification id.
    pub id: String,
    /// `VerificationRequestEvent`.
    pub event: String,
    /// Lower-case method.
    pub method: String,
    /// The number.
    pub identity: Identity,
    /// Verification price.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<Price>,
    /// Rate (Sinch mock sends zero).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<Price>,
    /// Caller's reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Caller's custom data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom: Option<String>,
    /// Requested languages (deprecated).
    #[serde(rename = "acceptLanguage", skip_serializing_if = "Option::is_none")]
    pub accept_language: Option<Vec<String>>,
}

/// The backend's answer to a request event.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RequestEventResponse {
    /// `allow` | `deny`.
    pub action: Option<String>,
    /// SMS overrides.
    pub sms: Option<SmsOverride>,
    /// Flash-call overrides.
    #[serde(rename = "flashCall", alias = "flashcall")]
    pub flash_call: Option<FlashCallOverride>,
    /// Callout overrides.
    pub callout: Option<CalloutOverride>,
    /// WhatsApp overrides.
    #[serde(alias = "whatsApp")]
    pub whatsapp: Option<WhatsappOverride>,
}

/// `sms` in a request-event answer.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SmsOverride {
    /// Custom code.
    #[serde(default, deserialize_with = "string_or_number")]
    pub code: Option<String>,
    /// Code alphabet.
    #[serde(rename = "codeType")]
    pub code_type: Option<String>,
    /// `HH:MM:SS`.
    pub expiry: Option<String>,
    /// Preferred languages.
    #[serde(rename = "acceptLanguage")]
    pub accept_language: Option<Vec<String>>,
}

/// `flashCall` in a request-event answer.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FlashCallOverride {
    /// CLI to call from (must be in an owned range).
    pub cli: Option<String>,
    /// Seconds to ring.
    #[serde(rename = "dialTimeout")]
    pub dial_timeout: Option<i64>,
    /// Seconds the handset waits.
    #[serde(rename = "interceptionTimeout")]
    pub interception_timeout: Option<i64>,
}

/// `callout` in a request-event answer.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CalloutOverride {
    /// Custom code (string or number).
    #[serde(default, deserialize_with = "string_or_number")]
    pub code: Option<String>,
    /// Speech locale.
    pub speech: Option<Speech>,
    /// Legacy `callout.locale`.
    pub locale: Option<String>,
}

/// `whatsapp` in a request-event answer.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WhatsappOverride {
    /// Code alphabet.
    #[serde(rename = "codeType")]
    pub code_type: Option<String>,
    /// Preferred languages.
    #[serde(rename = "acceptLanguage")]
    pub accept_language: Option<Vec<String>>,
}

/// `VerificationResultEvent`, sent when a verification reaches a final state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultEvent {
    /// Verification id.
    pub id: String,
    /// `VerificationResultEvent`.
    pub event: String,
    /// Lower-case method.
    pub method: String,
    /// The number.
    pub identity: Identity,
    /// Final status.
    pub status: String,
    /// Why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Caller's reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// `intercepted` | `manual`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Caller's custom data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom: Option<String>,
}

/// `VerificationSmsDeliveredEvent`, sent when a delivery receipt arrives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmsDeliveredEvent {
    /// Verification id.
    pub id: String,
    /// `VerificationSmsDeliveredEvent`.
    pub event: String,
    /// `sms`.
    pub method: String,
    /// The number.
    pub identity: Identity,
    /// `Successful` | `Failed`.
    #[serde(rename = "smsResult")]
    pub sms_result: String,
    /// Caller's reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Caller's custom data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_start_body_with_leaked_expiry_parses() {
        let body = r#"{"identity": {"type": "number", "endpoint": "+46123456789"}, "reference": "ref-1", "expiry": "00:05:00", "method": "sms", "smsOptions": {"codeType": "Alphanumeric"}}"#;
        let r: StartRequest = serde_json::from_str(body).unwrap();
        assert_eq!(r.expiry.as_deref(), Some("00:05:00"));
        assert_eq!(
            r.sms_options.unwrap().code_type.as_deref(),
            Some("Alphanumeric")
        );
    }

    #[test]
    fn unknown_keys_are_ignored() {
        let body = r#"{"identity":{"type":"number","endpoint":"+1"},"method":"flashcall","flashCallOptions":{"dialTimeout":17,"interceptionTimeout":23,"my key":"my value"},"fooKey":1}"#;
        let r: StartRequest = serde_json::from_str(body).unwrap();
        assert_eq!(r.flash_call_options.unwrap().dial_timeout, Some(17));
    }

    #[test]
    fn dotnet_empty_speech_parses() {
        let body = r#"{"identity":{"type":"number","endpoint":"+1"},"method":"callout","calloutOptions":{"speech":{}}}"#;
        let r: StartRequest = serde_json::from_str(body).unwrap();
        assert_eq!(r.callout_options.unwrap().speech.unwrap().locale, None);
    }

    #[test]
    fn report_accepts_both_flashcall_keys_and_numeric_codes() {
        let a: ReportRequest =
            serde_json::from_str(r#"{"method":"flashcall","flashcall":{"cli":"+1"}}"#).unwrap();
        assert_eq!(a.flash_call.unwrap().cli.as_deref(), Some("+1"));
        let b: ReportRequest =
            serde_json::from_str(r#"{"method":"flashCall","flashCall":{"cli":"+2"}}"#).unwrap();
        assert_eq!(b.flash_call.unwrap().cli.as_deref(), Some("+2"));
        let c: ReportRequest =
            serde_json::from_str(r#"{"method":"callout","callout":{"code":4567}}"#).unwrap();
        assert_eq!(c.callout.unwrap().code.as_deref(), Some("4567"));
    }

    #[test]
    fn start_response_uses_camel_flash_call_key_and_lower_method() {
        let r = StartResponse {
            id: "x".into(),
            method: "flashcall".into(),
            sms: None,
            flash_call: Some(FlashCallStartInfo {
                cli_filter: "^\\+?46\\d{4}$".into(),
                interception_timeout: 60,
                report_timeout: 120,
                deny_call_after: 0,
                call_id: "x".into(),
            }),
            seamless: None,
            whatsapp: None,
            links: vec![],
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["method"], "flashcall");
        assert!(v.get("flashCall").is_some());
        assert!(v.get("sms").is_none());
    }

    #[test]
    fn request_event_answer_accepts_numeric_callout_code() {
        let r: RequestEventResponse = serde_json::from_str(
            r#"{"action":"allow","callout":{"code":4567,"speech":{"locale":"fr-FR"}}}"#,
        )
        .unwrap();
        let c = r.callout.unwrap();
        assert_eq!(c.code.as_deref(), Some("4567"));
        assert_eq!(c.speech.unwrap().locale.as_deref(), Some("fr-FR"));
    }
}
