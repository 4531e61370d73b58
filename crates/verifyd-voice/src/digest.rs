//! Digest parameters on the wire (RFC 2617 §3.2.1–3.2.2, RFC 7616 §3.3–3.4).
//!
//! rsipstack answers a `401`/`407` itself (the UA gives it the trunk credentials): it
//! re-sends the INVITE with the same Call-ID and From tag, the next CSeq and a new branch,
//! and computes the digest `response` correctly. But it writes the parameters of its
//! `Authorization`/`Proxy-Authorization` as `qop="auth"`, where the RFCs want the bare
//! token (`message-qop = "qop" EQUAL qop-value`; only the challenge's `qop-options` is a
//! quoted list). Strict servers and SBCs reject such credentials.
//!
//! [`DigestWire`] is the endpoint's [`MessageInspector`], the hook rsipstack offers to
//! every message just before it goes on the wire (retransmissions included) and just after
//! a response arrives:
//!
//! * In each request we send, every `Digest` `Authorization`/`Proxy-Authorization` is
//!   written again with the RFC's quoting: `algorithm`, `qop`, `nc` (and `userhash`) as
//!   tokens, every other parameter (`username`, `realm`, `nonce`, `uri`, `response`,
//!   `cnonce`, `opaque`) as a quoted string. The values are unchanged, so the response
//!   stays valid: the digest covers the qop *value*, not its quoting.
//! * In a received `401`/`407` whose `Digest` challenge offers a list of qops that
//!   includes `auth` (`qop="auth,auth-int"`, RFC 2617 §3.2.1), the list is narrowed to
//!   `auth`, the one we answer with: rsipstack reads `qop` as a single value and fails
//!   the call on a list.
//!
//! A header that does not parse as `Digest` parameters is left exactly as it is. Nothing
//! here sees the password: it stays in rsipstack's credential.

use rsipstack::sip::{Header, SipMessage, StatusCode};
use rsipstack::transaction::endpoint::MessageInspector;
use rsipstack::transport::SipAddr;

/// Rewrites digest headers with RFC quoting; see the module documentation.
pub(crate) struct DigestWire;

impl MessageInspector for DigestWire {
    fn before_send(&self, msg: SipMessage, _dest: Option<&SipAddr>) -> SipMessage {
        let SipMessage::Request(mut request) = msg else {
            return msg;
        };
        for header in request.headers.iter_mut() {
            match header {
                Header::Authorization(h) => {
                    if let Some(value) = credentials(h.value()) {
                        *h = value.into();
                    }
                }
                Header::ProxyAuthorization(h) => {
                    if let Some(value) = credentials(h.value()) {
                        *h = value.into();
                    }
                }
                _ => {}
            }
        }
        SipMessage::Request(request)
    }

    fn after_received(&self, msg: SipMessage, _from: Option<&SipAddr>) -> SipMessage {
        let SipMessage::Response(mut response) = msg else {
            return msg;
        };
        if !matches!(
            response.status_code,
            StatusCode::Unauthorized | StatusCode::ProxyAuthenticationRequired
        ) {
            return SipMessage::Response(response);
        }
        for header in response.headers.iter_mut() {
            match header {
                Header::WwwAuthenticate(h) => {
                    if let Some(value) = challenge(h.value()) {
                        *h = value.into();
                    }
                }
                Header::ProxyAuthenticate(h) => {
                    if let Some(value) = challenge(h.value()) {
                        *h = value.into();
                    }
                }
                _ => {}
            }
        }
        SipMessage::Response(response)
    }
}

/// Parameters that are tokens in credentials (RFC 7616 §3.4: `algorithm`, `message-qop`,
/// `nonce-count`, `userhash`); every other one is a quoted string.
const CREDENTIAL_TOKENS: [&str; 4] = ["algorithm", "qop", "nc", "userhash"];

/// Parameters that are tokens in a challenge (RFC 7616 §3.3: `algorithm`, `stale`,
/// `charset`, `userhash`); `qop` there is a quoted list.
const CHALLENGE_TOKENS: [&str; 4] = ["algorithm", "stale", "charset", "userhash"];

/// `Digest` credentials written with RFC quoting, or `None` to leave the header as it is
/// (not `Digest`, not parseable, or already in that form).
pub(crate) fn credentials(value: &str) -> Option<String> {
    let (scheme, params) = parse(value)?;
    let written = write(scheme, &params, &CREDENTIAL_TOKENS)?;
    (written != value).then_some(written)
}

/// A `Digest` challenge whose qop list includes `auth`, narrowed to `qop="auth"`; `None`
/// to leave the header as it is.
pub(crate) fn challenge(value: &str) -> Option<String> {
    let (scheme, mut params) = parse(value)?;
    let (_, qop) = params
        .iter_mut()
        .find(|(name, _)| name.eq_ignore_ascii_case("qop"))?;
    let offers_auth = qop
        .split(',')
        .any(|option| option.trim().eq_ignore_ascii_case("auth"));
    if !offers_auth || qop.trim().eq_ignore_ascii_case("auth") {
        return None;
    }
    *qop = "auth".to_string();
    write(scheme, &params, &CHALLENGE_TOKENS)
}

/// `Digest` and its `name=value` parameters, values without quotes or escapes. `None` for
/// another scheme or anything that is not a well-formed list.
fn parse(value: &str) -> Option<(&str, Vec<(&str, String)>)> {
    let value = value.trim();
    let (scheme, mut rest) = value.split_once(|c: char| c.is_ascii_whitespace())?;
    if !scheme.eq_ignore_ascii_case("Digest") {
        return None;
    }
    let mut params = Vec::new();
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let (name, after) = rest.split_once('=')?;
        let name = name.trim();
        if name.is_empty() || !is_token(name) {
            return None;
        }
        let after = after.trim_start();
        let (param, tail) = match after.strip_prefix('"') {
            Some(quoted) => {
                let mut out = String::new();
                let mut chars = quoted.char_indices();
                let end = loop {
                    match chars.next()? {
                        (_, '\\') => out.push(chars.next()?.1),
                        (i, '"') => break i,
                        (_, c) => out.push(c),
                    }
                };
                (out, &quoted[end + 1..])
            }
            None => {
                let end = after.find(',').unwrap_or(after.len());
                let token = after[..end].trim();
                if token.is_empty() || !is_token(token) {
                    return None;
                }
                (token.to_string(), &after[end..])
            }
        };
        params.push((name, param));
        let tail = tail.trim_start();
        rest = match tail.strip_prefix(',') {
            Some(next) => next,
            None if tail.is_empty() => tail,
            None => return None,
        };
    }
    if params.is_empty() {
        return None;
    }
    Some((scheme, params))
}

/// `scheme name=value, …` with the parameters named in `tokens` bare and the others
/// quoted. `None` if a token parameter's value is not a token.
fn write(scheme: &str, params: &[(&str, String)], tokens: &[&str]) -> Option<String> {
    let mut out = String::from(scheme);
    for (i, (name, value)) in params.iter().enumerate() {
        out.push_str(if i == 0 { " " } else { ", " });
        out.push_str(name);
        out.push('=');
        if tokens.iter().any(|t| t.eq_ignore_ascii_case(name)) {
            if !is_token(value) {
                return None;
            }
            out.push_str(value);
        } else {
            out.push('"');
            for c in value.chars() {
                if matches!(c, '"' | '\\') {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
    }
    Some(out)
}

/// RFC 3261 §25.1 `token`.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    '-' | '.' | '!' | '%' | '*' | '_' | '+' | '`' | '\'' | '~'
                )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSIPSTACK: &str = r#"Digest username="verifyd-trunk", realm="carrier.example", nonce="awgJr2sI/ljDsy9e", uri="sip:+46700000001@carrier.example", response="29d98fa4d105adaf959f47892bbd2492", algorithm=MD5, qop="auth", nc=00000001, cnonce="j4RXXwTP", opaque="0paque""#;

    #[test]
    fn qop_in_credentials_becomes_a_bare_token_and_the_rest_stays() {
        assert_eq!(
            credentials(RSIPSTACK).unwrap(),
            r#"Digest username="verifyd-trunk", realm="carrier.example", nonce="awgJr2sI/ljDsy9e", uri="sip:+46700000001@carrier.example", response="29d98fa4d105adaf959f47892bbd2492", algorithm=MD5, qop=auth, nc=00000001, cnonce="j4RXXwTP", opaque="0paque""#
        );
    }

    #[test]
    fn credentials_already_in_rfc_form_are_left_alone() {
        let rfc = credentials(RSIPSTACK).unwrap();
        assert_eq!(credentials(&rfc), None);
        // Without qop (RFC 2069 style) rsipstack's form is already right.
        let no_qop = r#"Digest username="u", realm="r", nonce="n", uri="sip:a@b", response="0123", algorithm=MD5"#;
        assert_eq!(credentials(no_qop), None);
    }

    #[test]
    fn quoting_is_normalised_both_ways_and_escapes_survive() {
        assert_eq!(
            credentials(r#"digest username=alice, realm="a \"b\" \\ c", nc="00000001", qop=auth"#)
                .unwrap(),
            r#"digest username="alice", realm="a \"b\" \\ c", nc=00000001, qop=auth"#
        );
    }

    #[test]
    fn other_schemes_and_malformed_values_are_left_alone() {
        assert_eq!(credentials(r#"Basic dXNlcjpwdw=="#), None);
        assert_eq!(credentials(r#"Digest username="unterminated"#), None);
        assert_eq!(credentials(r#"Digest username="a"b", realm="r""#), None);
        assert_eq!(credentials(r#"Digest username"#), None);
        assert_eq!(credentials("Digest "), None);
        // A token parameter whose value cannot be a token is not unquoted.
        assert_eq!(credentials(r#"Digest qop="auth, auth-int""#), None);
    }

    #[test]
    fn a_challenge_offering_auth_among_others_is_narrowed_to_auth() {
        assert_eq!(
            challenge(
                r#"Digest realm="r", nonce="n", qop="auth,auth-int", algorithm=MD5, stale=FALSE"#
            )
            .unwrap(),
            r#"Digest realm="r", nonce="n", qop="auth", algorithm=MD5, stale=FALSE"#
        );
        assert_eq!(
            challenge(r#"Digest realm="r", nonce="n", qop="auth-int, auth""#).unwrap(),
            r#"Digest realm="r", nonce="n", qop="auth""#
        );
    }

    #[test]
    fn other_challenges_are_left_alone() {
        assert_eq!(
            challenge(r#"Digest realm="r", nonce="n", qop="auth""#),
            None
        );
        assert_eq!(challenge(r#"Digest realm="r", nonce="n""#), None);
        assert_eq!(
            challenge(r#"Digest realm="r", nonce="n", qop="auth-int""#),
            None
        );
    }

    #[test]
    fn the_inspector_rewrites_sent_credentials_and_received_challenges() {
        let request = format!(
            "INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\n\
             From: <sip:c@d>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 2 INVITE\r\n\
             Proxy-Authorization: {RSIPSTACK}\r\nContent-Length: 0\r\n\r\n"
        );
        let sent = DigestWire.before_send(SipMessage::try_from(request.as_str()).unwrap(), None);
        let sent = sent.to_string();
        assert!(sent.contains(", qop=auth, nc=00000001, "), "{sent}");
        assert!(!sent.contains("qop=\"auth\""), "{sent}");

        let response = "SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\n\
             From: <sip:c@d>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\
             WWW-Authenticate: Digest realm=\"r\", nonce=\"n\", qop=\"auth,auth-int\"\r\n\
             Content-Length: 0\r\n\r\n";
        let received = DigestWire.after_received(SipMessage::try_from(response).unwrap(), None);
        let received = received.to_string();
        assert!(
            received
                .contains("WWW-Authenticate: Digest realm=\"r\", nonce=\"n\", qop=\"auth\"\r\n"),
            "{received}"
        );
    }
}
