//! How verifyd reaches a phone.
//!
//! Every way of delivering a verification — SMS, WhatsApp, a flash call, a spoken callout, a
//! seamless data session — sits behind one [`Channel`] trait. The server builds an
//! [`OutboundMessage`] and hands it over; the channel answers with what it learned
//! synchronously ([`Delivery`]) or a typed [`SendError`] the caller can branch on.
//!
//! # Layout
//! - this module: the trait and message types.
//! - [`inbox`]: the dev inbox, which captures every message instead of sending it.
//! - [`pacer`]: the send-rate cap shared by the SMPP channel and the SIP channel.

pub mod http_sms;
pub mod inbox;
pub mod pacer;
pub mod smpp;
pub mod whatsapp;

use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;
use verifyd_core::{CallInfo, Method, PhoneNumber};

pub use inbox::{DevInbox, InboxMessage};

/// What to deliver.
#[derive(Clone)]
pub enum Payload {
    /// A text with a code (SMS, WhatsApp).
    Text {
        /// The rendered message.
        body: String,
        /// The code inside it.
        code: String,
        /// The locale it was rendered in.
        locale: String,
    },
    /// A missed call from `cli`.
    FlashCall {
        /// The caller id to present (the code).
        cli: String,
        /// Seconds to ring before cancelling.
        dial_timeout: u32,
    },
    /// A call that speaks `code`.
    Callout {
        /// The code to speak.
        code: String,
        /// Speech locale.
        locale: String,
        /// The spoken script, as text.
        script: String,
    },
    /// A seamless verification: the device must open `target_uri` over mobile data.
    Seamless {
        /// The URI.
        target_uri: String,
    },
}

impl std::fmt::Debug for Payload {
    /// Never prints the code.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Payload::Text { locale, .. } => write!(f, "Text {{ locale: {locale}, .. }}"),
            Payload::FlashCall { dial_timeout, .. } => {
                write!(f, "FlashCall {{ dial_timeout: {dial_timeout}, .. }}")
            }
            Payload::Callout { locale, .. } => write!(f, "Callout {{ locale: {locale}, .. }}"),
            Payload::Seamless { .. } => f.write_str("Seamless { .. }"),
        }
    }
}

/// One message for one verification.
#[derive(Debug, Clone)]
pub struct OutboundMessage {
    /// The verification it belongs to.
    pub verification_id: String,
    /// The owning application.
    pub app: String,
    /// The method.
    pub method: Method,
    /// The recipient.
    pub to: PhoneNumber,
    /// What to deliver.
    pub payload: Payload,
    /// The sender identity chosen by the route (alphanumeric sender id, or an E.164 number
    /// where the destination requires one); `None`: the channel's own default.
    pub sender: Option<String>,
    /// When it was handed to the channel.
    pub created_at: OffsetDateTime,
}

/// What a channel knows right after sending.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delivery {
    /// The provider's message id, to match delivery receipts.
    pub message_id: Option<String>,
    /// For calls: how the call went, if already known.
    pub call: Option<CallInfo>,
    /// Whether the message is already known to be delivered (the dev inbox knows at once).
    pub delivered: bool,
}

/// What a delivery report (SMPP `deliver_sm` receipt, provider webhook, WhatsApp status)
/// says about a message the channel sent earlier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptStatus {
    /// Reached the handset (`DELIVRD`, `delivered`, WhatsApp `delivered`/`read`).
    Delivered,
    /// Will not arrive (`UNDELIV`, `EXPIRED`, `REJECTD`, `DELETED`, `failed`, …).
    Failed,
}

/// A delivery report, matched to a verification by the channel name and message id that
/// [`Delivery::message_id`] returned at send time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The channel's name ([`Channel::name`]).
    pub channel: String,
    /// The provider's message id, normalised the same way as at send time.
    pub message_id: String,
    /// Delivered or failed.
    pub status: ReceiptStatus,
    /// Provider detail for logs (`stat:UNDELIV err:001`), never a code or a number.
    pub detail: Option<String>,
}

/// Where channels push the delivery reports they receive; the server consumes them.
pub type ReceiptSender = tokio::sync::mpsc::UnboundedSender<Receipt>;

/// Why a send failed, typed so the caller decides retry versus give up without parsing text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SendError {
    /// Worth retrying, after `retry_after` if the provider said so.
    #[error("retryable send failure: {reason}")]
    Retryable {
        /// What happened (no codes, no numbers).
        reason: String,
        /// Provider's back-off hint.
        retry_after: Option<Duration>,
    },
    /// Will not work on retry through this route (rejected submit, bad credentials): the
    /// next route may be tried.
    #[error("permanent send failure: {reason}")]
    Permanent {
        /// What happened (no codes, no numbers).
        reason: String,
    },
    /// The message was handed over but no answer came (a timeout, a dropped connection): the
    /// provider may or may not have accepted it. Resending risks a duplicate; the caller
    /// decides (verifyd does not resend, so a user never gets the same SMS twice).
    #[error("outcome unknown: {reason}")]
    OutcomeUnknown {
        /// What happened.
        reason: String,
    },
    /// This channel cannot reach this recipient at all (e.g. the number has no WhatsApp
    /// account): a different channel may (WhatsApp → SMS fallback).
    #[error("recipient unreachable on this channel: {reason}")]
    Unreachable {
        /// What happened.
        reason: String,
    },
}

/// A way to deliver verifications.
#[async_trait]
pub trait Channel: Send + Sync + 'static {
    /// A short name for logs and metrics (`dev-inbox`, `smpp:primary`).
    fn name(&self) -> &str;

    /// Delivers `message`.
    ///
    /// # Errors
    /// [`SendError`] when the message could not be handed over.
    async fn send(&self, message: &OutboundMessage) -> Result<Delivery, SendError>;
}
