//! The dev inbox: the embedded default channel. Nothing leaves the process; every message is
//! kept in a bounded in-memory ring so developers and tests can read the code back over
//! HTTP. Codes live only in memory here, never on disk.

use std::collections::VecDeque;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::Serialize;
use time::OffsetDateTime;
use verifyd_core::{CallInfo, CallResult};

use crate::{Channel, Delivery, OutboundMessage, Payload, SendError};

/// One captured message, in the shape `GET /inbox/v1/messages` answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InboxMessage {
    /// Inbox-local id.
    pub id: String,
    /// The verification.
    #[serde(rename = "verificationId")]
    pub verification_id: String,
    /// `sms`, `flashcall`, ...
    pub method: String,
    /// Recipient, E.164.
    pub to: String,
    /// Sender id or caller id.
    pub from: Option<String>,
    /// Text, call script or targetUri.
    pub body: String,
    /// The OTP (for flashcall the full CLI); `null` for seamless.
    pub code: Option<String>,
    /// When it was captured (RFC 3339).
    #[serde(rename = "createdAt", with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The owning application (not serialised: the inbox is shared in dev mode).
    #[serde(skip)]
    pub app: String,
}

/// The dev inbox.
#[derive(Debug)]
pub struct DevInbox {
    /// Sender id shown as `from` for texts and callouts.
    sender: String,
    capacity: usize,
    /// A std `Mutex`: pushes and scans are short and never cross an `.await`.
    messages: Mutex<(u64, VecDeque<InboxMessage>)>,
}

impl DevInbox {
    /// An inbox keeping the newest `capacity` messages.
    pub fn new(sender: impl Into<String>, capacity: usize) -> Self {
        Self {
            sender: sender.into(),
            capacity: capacity.max(1),
            messages: Mutex::new((0, VecDeque::new())),
        }
    }

    /// Messages to `to` (all when `None`), newest first, at most `limit`.
    pub fn messages(&self, to: Option<&str>, limit: usize) -> Vec<InboxMessage> {
        let guard = self.messages.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .1
            .iter()
            .rev()
            .filter(|m| to.is_none_or(|t| m.to == t))
            .take(limit)
            .cloned()
            .collect()
    }

    fn push(&self, mut message: InboxMessage) {
        let mut guard = self.messages.lock().unwrap_or_else(|e| e.into_inner());
        guard.0 += 1;
        message.id = format!("msg-{}", guard.0);
        if guard.1.len() == self.capacity {
            guard.1.pop_front();
        }
        guard.1.push_back(message);
    }
}

#[async_trait]
impl Channel for DevInbox {
    fn name(&self) -> &str {
        "dev-inbox"
    }

    async fn send(&self, m: &OutboundMessage) -> Result<Delivery, SendError> {
        let (from, body, code, call) = match &m.payload {
            Payload::Text { body, code, .. } => (
                Some(self.sender.clone()),
                body.clone(),
                Some(code.clone()),
                None,
            ),
            Payload::FlashCall { cli, .. } => (
                Some(cli.clone()),
                format!("Missed call from {cli}"),
                Some(cli.clone()),
                // A flash call that rang and was cancelled by us: the normal outcome.
                Some(CallInfo {
                    result: Some(CallResult::Cancel),
                    complete: true,
                    billable_duration: 0,
                    termination_price: None,
                }),
            ),
            Payload::Callout { code, script, .. } => (
                Some(self.sender.clone()),
                script.clone(),
                Some(code.clone()),
                Some(CallInfo {
                    result: Some(CallResult::Answered),
                    complete: true,
                    billable_duration: 0,
                    termination_price: None,
                }),
            ),
            Payload::Seamless { target_uri } => (None, target_uri.clone(), None, None),
        };
        self.push(InboxMessage {
            id: String::new(),
            verification_id: m.verification_id.clone(),
            method: m.method.as_str().to_string(),
            to: m.to.as_str().to_string(),
            from,
            body,
            code,
            created_at: m.created_at,
            app: m.app.clone(),
        });
        Ok(Delivery {
            message_id: None,
            call,
            delivered: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use verifyd_core::{Method, PhoneNumber};

    fn text(to: &str, code: &str) -> OutboundMessage {
        OutboundMessage {
            verification_id: format!("v-{code}"),
            app: "app".into(),
            method: Method::Sms,
            to: PhoneNumber::parse(to).unwrap(),
            payload: Payload::Text {
                body: format!("Your code is {code}"),
                code: code.into(),
                locale: "en-US".into(),
            },
            sender: None,
            created_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[tokio::test]
    async fn messages_are_listed_newest_first_per_recipient() {
        let inbox = DevInbox::new("verifyd", 10);
        inbox.send(&text("+46700000001", "1111")).await.unwrap();
        inbox.send(&text("+46700000002", "2222")).await.unwrap();
        inbox.send(&text("+46700000001", "3333")).await.unwrap();
        let codes: Vec<_> = inbox
            .messages(Some("+46700000001"), 10)
            .into_iter()
            .map(|m| m.code.unwrap())
            .collect();
        assert_eq!(codes, ["3333", "1111"]);
        assert_eq!(inbox.messages(None, 10).len(), 3);
    }

    #[tokio::test]
    async fn the_ring_keeps_only_the_newest() {
        let inbox = DevInbox::new("verifyd", 2);
        for c in ["1", "2", "3"] {
            inbox.send(&text("+46700000001", c)).await.unwrap();
        }
        let codes: Vec<_> = inbox
            .messages(None, 10)
            .into_iter()
            .map(|m| m.code.unwrap())
            .collect();
        assert_eq!(codes, ["3", "2"]);
    }

    #[test]
    fn payload_debug_hides_the_code() {
        let p = Payload::Text {
            body: "Your code is 123456".into(),
            code: "123456".into(),
            locale: "en-US".into(),
        };
        assert!(!format!("{p:?}").contains("123456"));
    }
}
