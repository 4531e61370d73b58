//! Sinch SMS REST API: one batch per text, per-recipient delivery reports.
//!
//! Request (developers.sinch.com/docs/sms/api-reference/sms):
//! `POST {base}/xms/v1/{service_plan_id}/batches`, `Authorization: Bearer {api_token}`,
//! JSON `{"from", "to": ["+E164"], "body", "delivery_report": "per_recipient",
//! "callback_url"?}`. The answer is `201` with the batch; its `id` is the message id.
//!
//! Errors come as `{"code": "syntax_invalid_parameter_format", "text": "…"}`; only the
//! `code` is kept (the text can quote the request).

use serde::{Deserialize, Serialize};

use super::{BuildError, base_url, execute, non_empty, path_segment, status_error};
use crate::{Delivery, Receipt, ReceiptStatus, SendError};

/// The US region endpoint; others are `https://{eu|au|br|ca}.sms.api.sinch.com`.
pub const DEFAULT_BASE_URL: &str = "https://us.sms.api.sinch.com";

/// The `type` of the per-recipient delivery report callback.
pub const RECIPIENT_REPORT_TYPE: &str = "recipient_delivery_report_sms";

const LABEL: &str = "sinch";

/// Sinch SMS settings.
#[derive(Clone)]
pub struct SinchConfig {
    /// API base, `https://{region}.sms.api.sinch.com` (default the `us` region); tests
    /// point it at a mock.
    pub base_url: String,
    /// The service plan id (path segment).
    pub service_plan_id: String,
    /// The service plan's API token (bearer). Secret: redacted in `Debug`.
    pub api_token: String,
    /// Default sender (`from`): a number in E.164 or an alphanumeric sender id. A message's
    /// own [`crate::OutboundMessage::sender`] wins.
    pub from: String,
    /// Where Sinch posts per-recipient delivery reports; `None` uses the service plan's
    /// configured callback URL.
    pub callback_url: Option<String>,
}

impl SinchConfig {
    /// Settings for the default region, without a per-batch callback URL.
    pub fn new(
        service_plan_id: impl Into<String>,
        api_token: impl Into<String>,
        from: impl Into<String>,
    ) -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.to_string(),
            service_plan_id: service_plan_id.into(),
            api_token: api_token.into(),
            from: from.into(),
            callback_url: None,
        }
    }

    pub(super) fn validate(&mut self) -> Result<(), BuildError> {
        base_url("sinch.base_url", &mut self.base_url)?;
        path_segment("sinch.service_plan_id", &self.service_plan_id)?;
        non_empty("sinch.api_token", &self.api_token)?;
        non_empty("sinch.from", &self.from)
    }
}

impl std::fmt::Debug for SinchConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinchConfig")
            .field("base_url", &self.base_url)
            .field("service_plan_id", &self.service_plan_id)
            .field("api_token", &"<redacted>")
            .field("from", &self.from)
            .field("callback_url", &self.callback_url)
            .finish()
    }
}

#[derive(Serialize)]
struct BatchRequest<'a> {
    from: &'a str,
    to: [&'a str; 1],
    body: &'a str,
    delivery_report: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    callback_url: Option<&'a str>,
}

#[derive(Deserialize)]
struct Batch {
    id: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: Option<String>,
}

pub(super) async fn send(
    client: &reqwest::Client,
    config: &SinchConfig,
    to: &str,
    sender: Option<&str>,
    body: &str,
) -> Result<Delivery, SendError> {
    let url = format!(
        "{}/xms/v1/{}/batches",
        config.base_url, config.service_plan_id
    );
    let request = BatchRequest {
        from: sender.unwrap_or(&config.from),
        to: [to],
        body,
        delivery_report: "per_recipient",
        callback_url: config.callback_url.as_deref(),
    };
    let answer = execute(
        LABEL,
        client
            .post(url)
            .bearer_auth(&config.api_token)
            .json(&request),
    )
    .await?;
    if answer.status.is_success() {
        return match serde_json::from_slice::<Batch>(&answer.body) {
            Ok(batch) => Ok(Delivery {
                message_id: Some(batch.id),
                ..Delivery::default()
            }),
            // Accepted, but with no id to match reports against: the text is on its way.
            Err(_) => Ok(Delivery::default()),
        };
    }
    let detail = serde_json::from_slice::<ErrorBody>(&answer.body)
        .ok()
        .and_then(|e| e.code)
        .filter(|c| is_error_code(c))
        .map(|c| format!("error {c}"))
        .unwrap_or_default();
    Err(status_error(
        LABEL,
        answer.status,
        answer.retry_after,
        &detail,
    ))
}

/// Sinch error codes are `snake_case` words; anything else is not echoed.
fn is_error_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 64
        && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

/// Parses a Sinch delivery-report callback body (JSON).
///
/// Only per-recipient reports (`type: recipient_delivery_report_sms`, sent for
/// `delivery_report: per_recipient`) carry one message's outcome; they match by `batch_id`,
/// the id [`Delivery::message_id`] returned. `Delivered` is delivered; `Failed`, `Expired`,
/// `Rejected`, `Aborted`, `Cancelled` and `Deleted` are failed, with `detail`
/// `status:Failed code:402`. Intermediate states (`Queued`, `Dispatched`, `Unknown`), other
/// report types and malformed bodies give `None`.
pub fn parse_delivery_report(channel_name: &str, raw_body: &[u8]) -> Option<Receipt> {
    #[derive(Deserialize)]
    struct Report {
        #[serde(rename = "type")]
        kind: String,
        batch_id: String,
        status: String,
        code: Option<i64>,
    }
    let report: Report = serde_json::from_slice(raw_body).ok()?;
    if report.kind != RECIPIENT_REPORT_TYPE {
        return None;
    }
    let status = match report.status.as_str() {
        "Delivered" => ReceiptStatus::Delivered,
        "Failed" | "Expired" | "Rejected" | "Aborted" | "Cancelled" | "Deleted" => {
            ReceiptStatus::Failed
        }
        _ => return None,
    };
    let detail = match report.code {
        Some(code) => format!("status:{} code:{code}", report.status),
        None => format!("status:{}", report.status),
    };
    Some(Receipt {
        channel: channel_name.to_string(),
        message_id: report.batch_id,
        status,
        detail: Some(detail),
    })
}
