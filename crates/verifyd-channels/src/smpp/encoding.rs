//! Turning a text into `short_message` payloads: GSM 03.38 7-bit when every character is in
//! the default alphabet (or its extension table), UCS-2 otherwise, split into concatenated
//! parts with an 8-bit-reference UDH when it does not fit one SMS.
//!
//! Why not `rusmpp::extra`: its multipart builder uses one size limit for both a single
//! message and a part, so with GSM 7-bit (sent unpacked, one septet per octet) it cannot get
//! both "160 septets in one SMS" and "153 septets per part" right, and its UCS-2 encoder
//! rejects characters outside the Basic Multilingual Plane (emoji). This module sends those
//! as UTF-16 surrogate pairs, which is what handsets and SMSCs do in practice, and never splits
//! a pair (nor a GSM escape sequence) across two parts.

/// `data_coding` for the SMSC default alphabet (GSM 03.38 7-bit, sent unpacked).
pub(crate) const DATA_CODING_GSM7: u8 = 0x00;
/// `data_coding` for UCS-2 (UTF-16BE on the wire).
pub(crate) const DATA_CODING_UCS2: u8 = 0x08;

/// Septets in one GSM 7-bit SMS.
const GSM7_SINGLE: usize = 160;
/// Septets per part when a 6-octet concatenation UDH takes its 7 septets.
const GSM7_PART: usize = 153;
/// UTF-16 code units in one UCS-2 SMS (140 octets).
const UCS2_SINGLE: usize = 70;
/// UTF-16 code units per part (134 octets after the 6-octet UDH).
const UCS2_PART: usize = 67;
/// A concatenated message has at most 255 parts (the count is one octet).
const MAX_PARTS: usize = 255;

/// The GSM 03.38 default alphabet, indexed by septet value.
const GSM7_BASIC: [char; 128] = [
    '@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å', //
    'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', '\u{1b}', 'Æ', 'æ', 'ß', 'É', //
    ' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/', //
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?', //
    '¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', //
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§', //
    '¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', //
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à', //
];

/// The escape septet that introduces an extension-table character.
const GSM7_ESCAPE: u8 = 0x1b;

/// The GSM 03.38 extension table: character and the septet that follows the escape.
const GSM7_EXTENSION: [(char, u8); 10] = [
    ('\u{0c}', 0x0a),
    ('^', 0x14),
    ('{', 0x28),
    ('}', 0x29),
    ('\\', 0x2f),
    ('[', 0x3c),
    ('~', 0x3d),
    (']', 0x3e),
    ('|', 0x40),
    ('€', 0x65),
];

/// One `submit_sm`'s worth of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Part {
    /// [`DATA_CODING_GSM7`] or [`DATA_CODING_UCS2`].
    pub(crate) data_coding: u8,
    /// Whether `short_message` starts with a UDH (set `esm_class` UDHI, 0x40).
    pub(crate) udhi: bool,
    /// The `short_message` octets, UDH included.
    pub(crate) short_message: Vec<u8>,
}

/// Why a text cannot be sent as SMS.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EncodeError {
    /// The text is empty.
    #[error("the text is empty")]
    Empty,
    /// The text needs more than 255 parts.
    #[error("the text needs {0} parts, more than the 255 a concatenated SMS can have")]
    TooLong(usize),
}

/// The septets of `c`: one for the default alphabet, two (escape + code) for the extension
/// table, `None` when GSM 7-bit cannot carry it.
fn gsm7_septets(c: char) -> Option<([u8; 2], usize)> {
    if c != '\u{1b}'
        && let Some(index) = GSM7_BASIC.iter().position(|&g| g == c)
    {
        let septet = u8::try_from(index).ok()?;
        return Some(([septet, 0], 1));
    }
    GSM7_EXTENSION
        .iter()
        .find(|(g, _)| *g == c)
        .map(|&(_, code)| ([GSM7_ESCAPE, code], 2))
}

/// Splits `units` (each a group that must stay together) into chunks of at most `limit`
/// elements.
fn chunk<T: Copy>(units: &[Vec<T>], limit: usize) -> Vec<Vec<T>> {
    let mut chunks: Vec<Vec<T>> = Vec::new();
    let mut current: Vec<T> = Vec::with_capacity(limit);
    for unit in units {
        if current.len() + unit.len() > limit && !current.is_empty() {
            chunks.push(std::mem::take(&mut current));
        }
        current.extend_from_slice(unit);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// Encodes `text` into one or more parts; `reference` identifies the concatenated message
/// (it should differ between concurrent long messages to the same handset).
pub(crate) fn encode(text: &str, reference: u8) -> Result<Vec<Part>, EncodeError> {
    if text.is_empty() {
        return Err(EncodeError::Empty);
    }
    let gsm: Option<Vec<Vec<u8>>> = text
        .chars()
        .map(|c| gsm7_septets(c).map(|(s, n)| s[..n].to_vec()))
        .collect();
    let (data_coding, chunks) = match gsm {
        Some(units) => {
            let total: usize = units.iter().map(Vec::len).sum();
            let limit = if total <= GSM7_SINGLE {
                GSM7_SINGLE
            } else {
                GSM7_PART
            };
            (DATA_CODING_GSM7, chunk(&units, limit))
        }
        None => {
            let units: Vec<Vec<u16>> = text
                .chars()
                .map(|c| {
                    let mut buf = [0u16; 2];
                    c.encode_utf16(&mut buf).to_vec()
                })
                .collect();
            let total: usize = units.iter().map(Vec::len).sum();
            let limit = if total <= UCS2_SINGLE {
                UCS2_SINGLE
            } else {
                UCS2_PART
            };
            let chunks = chunk(&units, limit)
                .into_iter()
                .map(|c| c.iter().flat_map(|u| u.to_be_bytes()).collect())
                .collect();
            (DATA_CODING_UCS2, chunks)
        }
    };
    if chunks.len() == 1 {
        return Ok(chunks
            .into_iter()
            .map(|short_message| Part {
                data_coding,
                udhi: false,
                short_message,
            })
            .collect());
    }
    let total = u8::try_from(chunks.len())
        .ok()
        .filter(|_| chunks.len() <= MAX_PARTS)
        .ok_or(EncodeError::TooLong(chunks.len()))?;
    Ok(chunks
        .into_iter()
        .zip(1..=total)
        .map(|(body, seq)| {
            // UDH: length 5, IE 0x00 (concatenation, 8-bit reference), IE length 3.
            let mut short_message = vec![0x05, 0x00, 0x03, reference, total, seq];
            short_message.extend_from_slice(&body);
            Part {
                data_coding,
                udhi: true,
                short_message,
            }
        })
        .collect())
}

/// Decodes a `short_message` as the SMSC sent it: UTF-16BE for UCS-2, otherwise each octet as
/// Latin-1 (lossless for the ASCII that receipts use).
pub(crate) fn decode_lossy(data_coding: u8, bytes: &[u8]) -> String {
    if data_coding == DATA_CODING_UCS2 {
        let units: Vec<u16> = bytes
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]))
            .collect();
        String::from_utf16_lossy(&units)
    } else {
        bytes.iter().map(|&b| char::from(b)).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn gsm_decode(septets: &[u8]) -> String {
        let mut out = String::new();
        let mut escaped = false;
        for &s in septets {
            if escaped {
                out.push(
                    GSM7_EXTENSION
                        .iter()
                        .find(|(_, code)| *code == s)
                        .unwrap()
                        .0,
                );
                escaped = false;
            } else if s == GSM7_ESCAPE {
                escaped = true;
            } else {
                out.push(GSM7_BASIC[usize::from(s)]);
            }
        }
        out
    }

    #[test]
    fn short_gsm_text_is_one_unpacked_part() {
        let parts = encode("Your code is 123456 [€]", 7).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].data_coding, DATA_CODING_GSM7);
        assert!(!parts[0].udhi);
        assert_eq!(
            gsm_decode(&parts[0].short_message),
            "Your code is 123456 [€]"
        );
        // '[', '€' and ']' take two septets each.
        assert_eq!(parts[0].short_message.len(), 23 + 3);
    }

    #[test]
    fn exactly_160_septets_fit_one_sms_and_161_need_two_parts_of_at_most_153() {
        let text = "a".repeat(160);
        assert_eq!(encode(&text, 1).unwrap().len(), 1);
        let parts = encode(&"a".repeat(161), 1).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].short_message.len(), 6 + 153);
        assert_eq!(parts[1].short_message.len(), 6 + 8);
        assert_eq!(&parts[0].short_message[..6], &[5, 0, 3, 1, 2, 1]);
        assert_eq!(&parts[1].short_message[..6], &[5, 0, 3, 1, 2, 2]);
    }

    #[test]
    fn an_escape_sequence_is_never_split_across_parts() {
        // 152 plain septets, then '€' (2 septets) would straddle the 153 boundary.
        let text = format!("{}€{}", "a".repeat(152), "b".repeat(20));
        let parts = encode(&text, 9).unwrap();
        assert_eq!(parts[0].short_message.len(), 6 + 152);
        let joined: Vec<u8> = parts
            .iter()
            .flat_map(|p| p.short_message[6..].to_vec())
            .collect();
        assert_eq!(gsm_decode(&joined), text);
    }

    #[test]
    fn non_gsm_text_is_ucs2_and_splits_at_67_units_without_breaking_surrogates() {
        let parts = encode("Код: 1234", 3).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].data_coding, DATA_CODING_UCS2);
        assert_eq!(decode_lossy(8, &parts[0].short_message), "Код: 1234");

        let text = format!("{}😀{}", "ж".repeat(66), "я".repeat(10));
        let parts = encode(&text, 3).unwrap();
        assert_eq!(parts.len(), 2);
        // The emoji (two units) does not fit after 66 units, so part 1 has 66 units.
        assert_eq!(parts[0].short_message.len(), 6 + 66 * 2);
        let joined: String = parts
            .iter()
            .map(|p| decode_lossy(8, &p.short_message[6..]))
            .collect();
        assert_eq!(joined, text);
    }

    #[test]
    fn empty_and_huge_texts_are_rejected() {
        assert_eq!(encode("", 0), Err(EncodeError::Empty));
        assert_eq!(
            encode(&"a".repeat(153 * 256), 0),
            Err(EncodeError::TooLong(256))
        );
    }
}
