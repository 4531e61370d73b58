//! Building the configured delivery channels (`[[channels.*]]`) and the webhooks their
//! providers call with delivery reports. The dev inbox is always there.

use std::sync::Arc;

use anyhow::{Context, bail};
use axum::body::Bytes;
use axum::extract::{Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use verifyd_channels::http_sms::{self, HttpSmsChannel, HttpSmsConfig, Provider};
use verifyd_channels::smpp::{Sender, SmppChannel, SmppConfig};
use verifyd_channels::whatsapp::{self, WhatsappChannel, WhatsappConfig};
use verifyd_channels::{Channel, Receipt, ReceiptSender};
use verifyd_voice::{SipChannel, SipTransport, SipTrunkConfig};

use crate::config::{HttpSmsChannelConfig, Settings};
use crate::error::ApiError;
use crate::extract::SinchPath;
use crate::state::AppState;

fn required(value: &Option<String>, channel: &str, field: &str) -> anyhow::Result<String> {
    value
        .clone()
        .filter(|v| !v.trim().is_empty())
        .with_context(|| format!("[[channels.http_sms]] {channel:?}: {field} is required"))
}

fn http_provider(c: &HttpSmsChannelConfig, callback: String) -> anyhow::Result<Provider> {
    let name = &c.name;
    Ok(match c.provider.as_str() {
        "sinch" => {
            let mut p = http_sms::sinch::SinchConfig::new(
                required(&c.service_plan_id, name, "service_plan_id")?,
                required(&c.api_token, name, "api_token")?,
                required(&c.from, name, "from")?,
            );
            if let Some(base) = &c.base_url {
                p.base_url.clone_from(base);
            }
            p.callback_url = Some(callback);
            Provider::Sinch(p)
        }
        "twilio" => {
            let sender = match (&c.messaging_service_sid, &c.from) {
                (Some(sid), _) => http_sms::twilio::TwilioSender::MessagingService(sid.clone()),
                (None, Some(from)) => http_sms::twilio::TwilioSender::From(from.clone()),
                (None, None) => bail!(
                    "[[channels.http_sms]] {name:?}: from or messaging_service_sid is required"
                ),
            };
            let mut p = http_sms::twilio::TwilioConfig::new(
                required(&c.account_sid, name, "account_sid")?,
                required(&c.auth_token, name, "auth_token")?,
                sender,
            );
            if let Some(base) = &c.base_url {
                p.base_url.clone_from(base);
            }
            p.status_callback = Some(callback);
            Provider::Twilio(p)
        }
        "vonage" => {
            let mut p = http_sms::vonage::VonageConfig::new(
                required(&c.api_key, name, "api_key")?,
                required(&c.api_secret, name, "api_secret")?,
                required(&c.from, name, "from")?,
            );
            if let Some(base) = &c.base_url {
                p.base_url.clone_from(base);
            }
            p.callback = Some(callback);
            Provider::Vonage(p)
        }
        other => bail!(
            "[[channels.http_sms]] {name:?}: provider {other:?} (expected sinch, twilio or vonage)"
        ),
    })
}

/// Builds every configured channel; they push delivery reports to `receipts`.
///
/// # Errors
/// If a channel's configuration is unusable.
pub async fn build(
    settings: &Settings,
    receipts: ReceiptSender,
) -> anyhow::Result<Vec<Arc<dyn Channel>>> {
    let mut built: Vec<Arc<dyn Channel>> = Vec::new();
    for c in &settings.channels.whatsapp {
        let mut config = WhatsappConfig::new(
            &c.name,
            &c.phone_number_id,
            &c.access_token,
            &c.template_name,
        );
        if let Some(base) = &c.base_url {
            config.base_url.clone_from(base);
        }
        if let Some(v) = &c.api_version {
            config.api_version.clone_from(v);
        }
        if let Some(l) = &c.language {
            config.language.clone_from(l);
        }
        config.languages.clone_from(&c.languages);
        let channel = WhatsappChannel::new(config)
            .map_err(|e| anyhow::anyhow!("[[channels.whatsapp]] {:?}: {e}", c.name))?;
        built.push(Arc::new(channel));
    }
    for c in &settings.channels.http_sms {
        let callback = format!("{}/webhooks/v1/sms/{}", settings.public_url, c.name);
        let channel = HttpSmsChannel::new(HttpSmsConfig::new(&c.name, http_provider(c, callback)?))
            .map_err(|e| anyhow::anyhow!("[[channels.http_sms]] {:?}: {e}", c.name))?;
        built.push(Arc::new(channel));
    }
    for c in &settings.channels.sip {
        let label = format!("[[channels.sip]] {:?}", c.name);
        let mut config = SipTrunkConfig::new(&c.name, &c.proxy, &c.from_domain);
        config.transport = match c.transport.as_deref() {
            None | Some("udp") => SipTransport::Udp,
            Some("tcp") => SipTransport::Tcp,
            Some("tls") => SipTransport::Tls,
            Some(other) => bail!("{label}: transport {other:?} (expected udp, tcp or tls)"),
        };
        config.tls_ca_file = c.tls_ca_file.as_ref().map(Into::into);
        config.tls_server_name.clone_from(&c.tls_server_name);
        config.tls_client_cert = c.tls_client_cert.as_ref().map(Into::into);
        config.tls_client_key = c.tls_client_key.as_ref().map(Into::into);
        if let Some(bind) = &c.bind {
            config.bind = bind
                .parse()
                .with_context(|| format!("{label}: bind {bind:?}"))?;
        }
        config.auth_user.clone_from(&c.auth_user);
        config.auth_password.clone_from(&c.auth_password);
        if let Some(n) = c.max_concurrent_calls {
            config.max_concurrent_calls = n.max(1);
        }
        if c.calls_per_second.is_some() {
            config.calls_per_second = c.calls_per_second;
        }
        if let Some(p) = c.privacy {
            config.privacy = p;
        }
        if let Some(ip) = &c.media_ip {
            config.media_ip = ip
                .parse()
                .with_context(|| format!("{label}: media_ip {ip:?}"))?;
        }
        if let Some(dir) = &c.prompts_dir {
            config.prompts_dir = Some(dir.into());
        }
        config.callout_cli.clone_from(&c.callout_cli);
        let channel = SipChannel::start(config)
            .await
            .map_err(|e| anyhow::anyhow!("{label}: {e}"))?;
        built.push(Arc::new(channel));
    }
    for c in &settings.channels.smpp {
        let mut config = SmppConfig::new(
            &c.name,
            &c.url,
            &c.system_id,
            &c.password,
            Sender::parse(&c.source),
        );
        config.system_type.clone_from(&c.system_type);
        if let Some(w) = c.window {
            config.window = w.max(1);
        }
        config.tps = c.tps;
        let channel = SmppChannel::connect(config, receipts.clone())
            .map_err(|e| anyhow::anyhow!("[[channels.smpp]] {:?}: {e}", c.name))?;
        built.push(Arc::new(channel));
    }
    Ok(built)
}

fn push(state: &AppState, receipts: Vec<Receipt>) {
    for r in receipts {
        // The loop lives as long as the server; a closed channel only means shutdown.
        let _ = state.0.receipts_tx.send(r);
    }
}

/// Query of the WhatsApp subscription handshake.
#[derive(serde::Deserialize)]
pub struct Handshake {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

/// `GET /webhooks/v1/whatsapp/{channel}`: Meta's subscription handshake.
pub async fn whatsapp_handshake(
    State(state): State<AppState>,
    SinchPath(name): SinchPath<String>,
    Query(q): Query<Handshake>,
) -> Result<Response, ApiError> {
    let channel = state
        .0
        .settings
        .channels
        .whatsapp
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(ApiError::not_found)?;
    match whatsapp::verify_subscription(
        q.mode.as_deref(),
        q.verify_token.as_deref(),
        q.challenge.as_deref(),
        &channel.verify_token,
    ) {
        Some(challenge) => Ok((StatusCode::OK, challenge).into_response()),
        None => Err(ApiError::new(
            verifyd_api::ErrorCode::Forbidden,
            "Verify token mismatch.",
        )),
    }
}

/// `POST /webhooks/v1/whatsapp/{channel}`: status notifications, signed with the app secret.
pub async fn whatsapp_statuses(
    State(state): State<AppState>,
    SinchPath(name): SinchPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let channel = state
        .0
        .settings
        .channels
        .whatsapp
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(ApiError::not_found)?;
    let signature = headers
        .get(whatsapp::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !whatsapp::verify_signature(&channel.app_secret, &body, signature) {
        tracing::warn!(channel = %name, "WhatsApp webhook with a bad signature refused");
        return Err(ApiError::new(
            verifyd_api::ErrorCode::InvalidSignature,
            "Invalid signature",
        ));
    }
    push(&state, whatsapp::parse_statuses(&name, &body));
    Ok(StatusCode::OK)
}

/// `POST` (or `GET`, Vonage) `/webhooks/v1/sms/{channel}`: an HTTP provider's delivery report.
pub async fn sms_report(
    State(state): State<AppState>,
    SinchPath(name): SinchPath<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let channel = state
        .0
        .settings
        .channels
        .http_sms
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(ApiError::not_found)?;
    let receipt = match channel.provider.as_str() {
        "sinch" => http_sms::sinch::parse_delivery_report(&name, &body),
        "twilio" => {
            let url = format!("{}/webhooks/v1/sms/{name}", state.0.settings.public_url);
            let signature = headers
                .get("x-twilio-signature")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let token = channel.auth_token.clone().unwrap_or_default();
            if !http_sms::twilio::verify_signature(&token, &url, &body, signature) {
                tracing::warn!(channel = %name, "Twilio status callback with a bad signature refused");
                return Err(ApiError::new(
                    verifyd_api::ErrorCode::InvalidSignature,
                    "Invalid signature",
                ));
            }
            http_sms::twilio::parse_status_callback(&name, &body)
        }
        _ => {
            let raw = if body.is_empty() {
                Bytes::from(query.unwrap_or_default())
            } else {
                body
            };
            http_sms::vonage::parse_delivery_receipt(&name, &raw)
        }
    };
    push(&state, receipt.into_iter().collect());
    Ok(StatusCode::OK)
}
