//! Delivery receipts: reading a `deliver_sm` whose `esm_class` says "MC delivery receipt", and
//! normalising message ids so a receipt matches the id `send` returned.
//!
//! # Message ids
//! SMSCs disagree on how they print a message id. Normalisation (`normalise_id`) is the same
//! pure function at send time and at receipt time, so the two strings compare equal:
//! - surrounding whitespace is trimmed and ASCII letters are lower-cased (`"A1B2 "` → `"a1b2"`);
//! - an id made only of decimal digits loses its leading zeros (`"0000012345"` → `"12345"`,
//!   `"000"` → `"0"`), so zero-padded receipt ids compare numerically;
//! - with [`MessageIdFormat::HexInResponse`] (SMSCs that answer `submit_sm_resp` and the
//!   `receipted_message_id` TLV in hex but print the receipt text's `id:` in decimal), the hex
//!   ids are converted to their decimal value (`"1A2B"` → `"6699"`), so both sides end up
//!   decimal. An id that does not parse in the expected base falls back to the rule above.
//!
//! Which base an id is in cannot be guessed from the id alone (`"1234"` is valid in both), so
//! the hex/decimal mismatch is a per-SMSC setting rather than a heuristic.

use rusmpp::pdus::DeliverSm;
use rusmpp::tlvs::TlvValue;
use rusmpp::values::MessageState;

use super::encoding::decode_lossy;
use crate::ReceiptStatus;

/// How an SMSC prints message ids; see the module docs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MessageIdFormat {
    /// The same string everywhere (modulo case, whitespace and leading zeros).
    #[default]
    Verbatim,
    /// `submit_sm_resp` and the `receipted_message_id` TLV carry hex; the receipt text's
    /// `id:` field carries the same number in decimal.
    HexInResponse,
}

/// Where an id came from, which decides its base under [`MessageIdFormat::HexInResponse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdSource {
    /// `submit_sm_resp.message_id` or the `receipted_message_id` TLV.
    Response,
    /// The `id:` field of the receipt text.
    ReceiptText,
}

/// Normalises a message id; see the module docs.
pub(crate) fn normalise_id(raw: &str, format: MessageIdFormat, source: IdSource) -> String {
    let trimmed = raw.trim();
    if format == MessageIdFormat::HexInResponse && source == IdSource::Response {
        let hex = trimmed
            .strip_prefix("0x")
            .or_else(|| trimmed.strip_prefix("0X"))
            .unwrap_or(trimmed);
        if let Ok(value) = u128::from_str_radix(hex, 16) {
            return value.to_string();
        }
    }
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        let stripped = trimmed.trim_start_matches('0');
        return if stripped.is_empty() {
            "0".to_owned()
        } else {
            stripped.to_owned()
        };
    }
    trimmed.to_ascii_lowercase()
}

/// What a receipt says, before it is turned into a [`crate::Receipt`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedReceipt {
    /// The normalised id of the message it reports on.
    pub(crate) message_id: String,
    /// `None` for intermediate states (`ACCEPTD`, `ENROUTE`, …) that are not reported.
    pub(crate) status: Option<ReceiptStatus>,
    /// `stat:UNDELIV err:001`; never the text or a number.
    pub(crate) detail: String,
}

/// Why a receipt could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ReceiptError {
    /// Neither the text nor the TLVs carry a message id.
    #[error("receipt without a message id")]
    NoId,
    /// Neither the text nor the TLVs carry a state.
    #[error("receipt without a state")]
    NoState,
}

/// The value of `key:` in a receipt text (`id:abc sub:001 … stat:DELIVRD err:000 text:…`),
/// case-insensitive on the key, up to the next space.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let lower = text.to_ascii_lowercase();
    let needle = format!("{key}:");
    let mut from = 0;
    while let Some(pos) = lower[from..].find(&needle) {
        let start = from + pos;
        // The key must start the text or follow a space ("done date:" must not match "date:").
        if start == 0 || lower.as_bytes()[start - 1] == b' ' {
            let value = &text[start + needle.len()..];
            let end = value.find(' ').unwrap_or(value.len());
            return Some(&value[..end]);
        }
        from = start + needle.len();
    }
    None
}

/// Maps a receipt `stat:` word; `None` for intermediate or unknown words.
fn status_from_stat(stat: &str) -> Option<ReceiptStatus> {
    match stat.to_ascii_uppercase().as_str() {
        "DELIVRD" | "DELIVERED" => Some(ReceiptStatus::Delivered),
        "UNDELIV" | "UNDELIVERABLE" | "EXPIRED" | "REJECTD" | "REJECTED" | "DELETED"
        | "UNKNOWN" | "SKIPPED" => Some(ReceiptStatus::Failed),
        // ACCEPTD, ENROUTE, SCHEDULED and anything unexpected: not final, not reported.
        _ => None,
    }
}

/// Maps the `message_state` TLV; `None` for intermediate states.
fn status_from_state(state: MessageState) -> Option<ReceiptStatus> {
    match state {
        MessageState::Delivered => Some(ReceiptStatus::Delivered),
        MessageState::Expired
        | MessageState::Deleted
        | MessageState::Undeliverable
        | MessageState::Unknown
        | MessageState::Rejected
        | MessageState::Skipped => Some(ReceiptStatus::Failed),
        MessageState::Scheduled
        | MessageState::Enroute
        | MessageState::Accepted
        | MessageState::Other(_) => None,
    }
}

/// The `stat:` word for a `message_state`, for the detail string.
fn stat_word(state: MessageState) -> String {
    match state {
        MessageState::Scheduled => "SCHEDULED".to_owned(),
        MessageState::Enroute => "ENROUTE".to_owned(),
        MessageState::Delivered => "DELIVRD".to_owned(),
        MessageState::Expired => "EXPIRED".to_owned(),
        MessageState::Deleted => "DELETED".to_owned(),
        MessageState::Undeliverable => "UNDELIV".to_owned(),
        MessageState::Accepted => "ACCEPTD".to_owned(),
        MessageState::Unknown => "UNKNOWN".to_owned(),
        MessageState::Rejected => "REJECTD".to_owned(),
        MessageState::Skipped => "SKIPPED".to_owned(),
        MessageState::Other(n) => format!("STATE{n}"),
    }
}

/// Keeps only a short, printable, code-free token for the detail string.
fn sanitize(token: &str) -> String {
    token
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect()
}

/// Reads a delivery receipt. The TLVs win over the text when both are present (they are
/// machine-readable by definition); either alone is enough.
pub(crate) fn parse(
    deliver_sm: &DeliverSm,
    format: MessageIdFormat,
) -> Result<ParsedReceipt, ReceiptError> {
    let text = decode_lossy(
        u8::from(deliver_sm.data_coding),
        deliver_sm.short_message().as_ref(),
    );
    let mut tlv_id = None;
    let mut tlv_state = None;
    for tlv in deliver_sm.tlvs() {
        match tlv.value() {
            Some(TlvValue::ReceiptedMessageId(id)) => tlv_id = Some(id.as_str().to_owned()),
            Some(TlvValue::MessageState(state)) => tlv_state = Some(*state),
            _ => {}
        }
    }

    let message_id = match (&tlv_id, field(&text, "id")) {
        (Some(id), _) if !id.trim().is_empty() => normalise_id(id, format, IdSource::Response),
        (_, Some(id)) if !id.trim().is_empty() => normalise_id(id, format, IdSource::ReceiptText),
        _ => return Err(ReceiptError::NoId),
    };

    let text_stat = field(&text, "stat");
    let err = field(&text, "err").map(sanitize);
    let (status, stat) = match (tlv_state, text_stat) {
        (Some(state), _) => (status_from_state(state), stat_word(state)),
        (None, Some(stat)) => (status_from_stat(stat), sanitize(stat).to_ascii_uppercase()),
        (None, None) => return Err(ReceiptError::NoState),
    };
    let detail = match err {
        Some(err) => format!("stat:{stat} err:{err}"),
        None => format!("stat:{stat}"),
    };
    Ok(ParsedReceipt {
        message_id,
        status,
        detail,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use std::str::FromStr;

    use rusmpp::tlvs::MessageDeliveryRequestTlvValue;
    use rusmpp::types::{COctetString, OctetString};

    use super::*;

    fn receipt(text: &str, tlvs: Vec<MessageDeliveryRequestTlvValue>) -> DeliverSm {
        DeliverSm::builder()
            .short_message(OctetString::from_str(text).unwrap())
            .tlvs(tlvs)
            .build()
    }

    #[test]
    fn ids_are_trimmed_lowercased_and_decimal_ids_lose_leading_zeros() {
        let f = MessageIdFormat::Verbatim;
        assert_eq!(normalise_id(" AbC-12 ", f, IdSource::Response), "abc-12");
        assert_eq!(
            normalise_id("0000012345", f, IdSource::ReceiptText),
            "12345"
        );
        assert_eq!(normalise_id("000", f, IdSource::Response), "0");
        assert_eq!(normalise_id("1A2B", f, IdSource::Response), "1a2b");
    }

    #[test]
    fn hex_response_ids_match_decimal_receipt_ids() {
        let f = MessageIdFormat::HexInResponse;
        assert_eq!(normalise_id("1A2B", f, IdSource::Response), "6699");
        assert_eq!(normalise_id("0000006699", f, IdSource::ReceiptText), "6699");
        // Not hex after all: falls back to the verbatim rule.
        assert_eq!(normalise_id("msg-7", f, IdSource::Response), "msg-7");
    }

    #[test]
    fn text_receipts_are_parsed() {
        let r = parse(
            &receipt(
                "id:MSG7 sub:001 dlvrd:000 submit date:2611261200 done date:2611261201 stat:UNDELIV err:001 text:Your code is 1234",
                vec![],
            ),
            MessageIdFormat::Verbatim,
        )
        .unwrap();
        assert_eq!(r.message_id, "msg7");
        assert_eq!(r.status, Some(ReceiptStatus::Failed));
        assert_eq!(r.detail, "stat:UNDELIV err:001");

        let r = parse(
            &receipt("id:7 stat:ACCEPTD err:000", vec![]),
            MessageIdFormat::Verbatim,
        )
        .unwrap();
        assert_eq!(r.status, None);
    }

    #[test]
    fn tlvs_win_over_the_text() {
        let r = parse(
            &receipt(
                "id:0000006699 stat:UNDELIV err:000",
                vec![
                    MessageDeliveryRequestTlvValue::ReceiptedMessageId(
                        COctetString::from_str("1A2B").unwrap(),
                    ),
                    MessageDeliveryRequestTlvValue::MessageState(MessageState::Delivered),
                ],
            ),
            MessageIdFormat::HexInResponse,
        )
        .unwrap();
        assert_eq!(r.message_id, "6699");
        assert_eq!(r.status, Some(ReceiptStatus::Delivered));
        assert_eq!(r.detail, "stat:DELIVRD err:000");
    }

    #[test]
    fn receipts_without_id_or_state_are_rejected() {
        assert_eq!(
            parse(&receipt("stat:DELIVRD", vec![]), MessageIdFormat::Verbatim),
            Err(ReceiptError::NoId)
        );
        assert_eq!(
            parse(&receipt("id:1 err:000", vec![]), MessageIdFormat::Verbatim),
            Err(ReceiptError::NoState)
        );
    }
}
