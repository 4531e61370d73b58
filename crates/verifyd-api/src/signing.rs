//! The Sinch application-signing scheme, used for incoming API requests and outgoing
//! callbacks alike:
//!
//! ```text
//! Content-MD5  = Base64(MD5(body))                      ("" when the body is empty)
//! StringToSign = VERB \n Content-MD5 \n Content-Type \n "x-timestamp:" TS \n Resource
//! Signature    = Base64(HMAC-SHA256(Base64Decode(secret), StringToSign))
//! ```

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The secret is not canonical base64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("application secret is not valid base64")]
pub struct InvalidSecret;

/// Decodes an application secret (standard base64 with padding, as Java, .NET and Python
/// require).
///
/// # Errors
/// [`InvalidSecret`] if it is not valid base64 or decodes to nothing.
pub fn decode_secret(secret_b64: &str) -> Result<Vec<u8>, InvalidSecret> {
    match STANDARD.decode(secret_b64.trim()) {
        Ok(key) if !key.is_empty() => Ok(key),
        _ => Err(InvalidSecret),
    }
}

/// `Base64(MD5(body))`, or the empty string for an empty body.
pub fn content_md5(body: &[u8]) -> String {
    if body.is_empty() {
        return String::new();
    }
    STANDARD.encode(Md5::digest(body))
}

/// The string to sign.
pub fn string_to_sign(
    verb: &str,
    content_md5: &str,
    content_type: &str,
    timestamp: &str,
    resource: &str,
) -> String {
    format!("{verb}\n{content_md5}\n{content_type}\nx-timestamp:{timestamp}\n{resource}")
}

/// The keyed MAC of a string to sign, before base64.
fn mac(key: &[u8], string_to_sign: &str) -> [u8; 32] {
    // `Hmac::new_from_slice` accepts every key length; use the infallible path for keys up
    // to one block and hash longer keys first, exactly as RFC 2104 prescribes.
    let mut block = [0u8; 64];
    if key.len() <= 64 {
        block[..key.len()].copy_from_slice(key);
    } else {
        block[..32].copy_from_slice(&Sha256::digest(key));
    }
    let mut m = <Hmac<Sha256> as KeyInit>::new(&block.into());
    m.update(string_to_sign.as_bytes());
    m.finalize().into_bytes().into()
}

/// `Base64(HMAC-SHA256(key, string_to_sign))`, with the key already base64-decoded.
pub fn signature(key: &[u8], string_to_sign: &str) -> String {
    STANDARD.encode(mac(key, string_to_sign))
}

/// Whether `presented` (base64) is the signature of `string_to_sign` under `key`, compared
/// in constant time over the decoded bytes.
pub fn verify(key: &[u8], string_to_sign: &str, presented: &str) -> bool {
    let Ok(presented) = STANDARD.decode(presented.trim()) else {
        return false;
    };
    let expected = mac(key, string_to_sign);
    presented.len() == expected.len() && bool::from(presented.ct_eq(&expected))
}

/// Everything needed to sign one request or callback.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    /// Upper-case HTTP method.
    pub verb: &'a str,
    /// The exact body bytes.
    pub body: &'a [u8],
    /// The Content-Type header value as sent ("" if none).
    pub content_type: &'a str,
    /// The `x-timestamp` header value as sent.
    pub timestamp: &'a str,
    /// The path (no scheme, host or query).
    pub resource: &'a str,
}

impl SignedRequest<'_> {
    /// The string to sign for this request.
    pub fn string_to_sign(&self) -> String {
        string_to_sign(
            self.verb,
            &content_md5(self.body),
            self.content_type,
            self.timestamp,
            self.resource,
        )
    }

    /// Signs with the decoded key.
    pub fn sign(&self, key: &[u8]) -> String {
        signature(key, &self.string_to_sign())
    }

    /// The `Authorization` header value: `{scheme} {app_key}:{signature}`. Callbacks use the
    /// lower-case scheme `application` (the .NET validator requires it); API clients use
    /// `Application`.
    pub fn authorization(&self, scheme: &str, app_key: &str, key: &[u8]) -> String {
        format!("{scheme} {app_key}:{}", self.sign(key))
    }
}

#[cfg(test)]
mod tests {
    //! The signing vectors A–E of the wire contract (section 2.2).
    use super::*;

    const KEY_A: &str = "669E367E-6BBA-48AB-AF15-266871C28135";
    const SECRET_A: &str = "BeIukql3pTKJ8RGL5zo0DA==";
    const SECRET_C: &str = "bXkta2V5LXNlY3JldA==";

    fn sign(secret: &str, req: SignedRequest<'_>) -> String {
        req.sign(&decode_secret(secret).unwrap())
    }

    #[test]
    fn vector_a_dotnet_spaced_body() {
        let body =
            br#"{"identity": {"type": "number", "endpoint": "+46700000000"}, "method": "sms"}"#;
        assert_eq!(content_md5(body), "c5jl2EZiU6BpQ2QiBOJ/gQ==");
        let req = SignedRequest {
            verb: "POST",
            body,
            content_type: "application/json",
            timestamp: "2014-06-04T13:41:58Z",
            resource: "/verification/v1/verifications",
        };
        assert_eq!(
            sign(SECRET_A, req),
            "h6rXrFayOoggyHW4ymnLlfSDkZZPg6j98lHzvOXVjvw="
        );
        assert!(verify(
            &decode_secret(SECRET_A).unwrap(),
            &req.string_to_sign(),
            "h6rXrFayOoggyHW4ymnLlfSDkZZPg6j98lHzvOXVjvw="
        ));
    }

    #[test]
    fn vector_a_compact_body_variants() {
        let body = br#"{"identity":{"type":"number","endpoint":"+46700000000"},"method":"sms"}"#;
        assert_eq!(content_md5(body), "pKXhl9sOsUjClws1oANArA==");
        let mut req = SignedRequest {
            verb: "POST",
            body,
            content_type: "application/json",
            timestamp: "2014-06-04T13:41:58Z",
            resource: "/verification/v1/verifications",
        };
        assert_eq!(
            sign(SECRET_A, req),
            "wxT5A+6UqeWyMpRhHeyPKiihuYTt8v5swfEKzs8zjPc="
        );
        req.content_type = "application/json; charset=UTF-8";
        assert_eq!(
            sign(SECRET_A, req),
            "xvFNEIvjzYsEb0eUvZFghc/1YKJEK9lVhhmwf/+GSkw="
        );
    }

    #[test]
    fn vector_b_empty_body() {
        let req = SignedRequest {
            verb: "POST",
            body: b"",
            content_type: "application/json",
            timestamp: "2014-06-04T13:41:58Z",
            resource: "/verification/v1/verifications",
        };
        assert_eq!(
            sign(SECRET_A, req),
            "srx3SkKXw/ryFJLfwFFzZTigPxR/1+9Ae+eB3olDIjM="
        );
    }

    #[test]
    fn vector_c_node_and_java() {
        let body = br#"{"identity":{"type":"number","endpoint":"+33444555666"},"method":"sms"}"#;
        assert_eq!(content_md5(body), "RkD29EocJh6t7zr5QfKM4g==");
        let req = SignedRequest {
            verb: "POST",
            body,
            content_type: "application/json; charset=UTF-8",
            timestamp: "2023-11-22T09:10:11.999Z",
            resource: "/path/pathParamValue",
        };
        assert_eq!(
            sign(SECRET_C, req),
            "QP3OzQZVzRZAEev6DBLvJkgpiqyZPuXYsc7oyjUV0K8="
        );
    }

    #[test]
    fn vector_d_get_without_body() {
        let req = SignedRequest {
            verb: "GET",
            body: b"",
            content_type: "application/json",
            timestamp: "2023-11-22T09:10:11.999Z",
            resource: "/path/pathParamValue",
        };
        assert_eq!(
            sign(SECRET_C, req),
            "nsrLDvP6KVD/dAxb3IfAncdwjPFJVWSrseEFOcZge+A="
        );
    }

    #[test]
    fn vector_e_callback_header() {
        let body = br#"{"event":"ace","callid":"822aa4b7-05b4-4d83-87c7-1f835ee0b6f6_257","timestamp":"2014-09-24T10:59:41Z","version":1}"#;
        assert_eq!(content_md5(body), "REWF+X220L4/Gw1spXOU7g==");
        let req = SignedRequest {
            verb: "POST",
            body,
            content_type: "application/json",
            timestamp: "2014-09-24T10:59:41Z",
            resource: "/sinch/callback/ace",
        };
        let key = decode_secret(SECRET_A).unwrap();
        assert_eq!(
            req.authorization("application", KEY_A, &key),
            format!("application {KEY_A}:Tg6fMyo8mj9pYfWQ9ssbx3Tc1BNC87IEygAfLbJqZb4=")
        );
    }

    #[test]
    fn vector_e_breaks_when_any_part_changes() {
        let body = br#"{"event":"ace","callid":"822aa4b7-05b4-4d83-87c7-1f835ee0b6f6_257","timestamp":"2014-09-24T10:59:41Z","version":1}"#;
        let key = decode_secret(SECRET_A).unwrap();
        let good = "Tg6fMyo8mj9pYfWQ9ssbx3Tc1BNC87IEygAfLbJqZb4=";
        let base = SignedRequest {
            verb: "POST",
            body,
            content_type: "application/json",
            timestamp: "2014-09-24T10:59:41Z",
            resource: "/sinch/callback/ace",
        };
        assert!(verify(&key, &base.string_to_sign(), good));
        let variants = [
            SignedRequest {
                verb: "PUT",
                ..base
            },
            SignedRequest {
                body: b"{}",
                ..base
            },
            SignedRequest {
                content_type: "text/plain",
                ..base
            },
            SignedRequest {
                timestamp: "2014-09-24T10:59:42Z",
                ..base
            },
            SignedRequest {
                resource: "/sinch/callback/other",
                ..base
            },
        ];
        for v in variants {
            assert!(!verify(&key, &v.string_to_sign(), good), "{v:?}");
        }
        assert!(!verify(&key, &base.string_to_sign(), "not base64!"));
    }

    #[test]
    fn secrets_must_be_base64() {
        assert!(decode_secret("appSecret!").is_err());
        assert!(decode_secret("").is_err());
        assert_eq!(decode_secret("YXBwU2VjcmV0").unwrap(), b"appSecret");
    }
}
