//! Authentication of API requests: Application Signed Request, Basic and Public, checked
//! against the application's minimum auth level.
//!
//! Signed requests are verified over the exact received body bytes and the Content-Type
//! header as received (empty if absent), with the request path first raw, then
//! percent-decoded (Java signs the decoded path, .NET the encoded one; node and Python sign
//! the original string). Signatures and Basic secrets are compared in constant time.

use std::sync::Arc;

use axum::http::{HeaderMap, Method, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use percent_encoding::percent_decode_str;
use subtle_compare::ct_eq;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use verifyd_api::ErrorCode;
use verifyd_api::signing::{self, SignedRequest};
use verifyd_store::MinAuth;

use crate::error::ApiError;
use crate::state::{AppState, KnownApp};

/// Which scheme authenticated the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    /// `Application key:signature`.
    Signed,
    /// `Basic base64(key:secret)`.
    Basic,
    /// `Application key` (device-side; no secret).
    Public,
}

/// An authenticated caller.
pub struct Caller {
    /// Its application.
    pub app: Arc<KnownApp>,
    /// How it authenticated.
    pub kind: AuthKind,
}

enum Presented<'a> {
    Signed { key: &'a str, signature: &'a str },
    Public { key: &'a str },
    Basic { key: String, secret: String },
}

fn parse_authorization(value: &str) -> Result<Presented<'_>, ApiError> {
    let bad = || {
        ApiError::new(
            ErrorCode::InvalidAuthorizationHeader,
            "Invalid authorization header",
        )
    };
    let (scheme, rest) = value.trim().split_once(' ').ok_or_else(bad)?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("application") {
        if rest.is_empty() {
            return Err(bad());
        }
        return Ok(match rest.split_once(':') {
            Some((key, signature)) if !key.is_empty() && !signature.is_empty() => {
                Presented::Signed { key, signature }
            }
            Some(_) => return Err(bad()),
            None => Presented::Public { key: rest },
        });
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = STANDARD.decode(rest).map_err(|_| bad())?;
        let text = String::from_utf8(decoded).map_err(|_| bad())?;
        let (key, secret) = text.split_once(':').ok_or_else(bad)?;
        return Ok(Presented::Basic {
            key: key.to_string(),
            secret: secret.to_string(),
        });
    }
    Err(bad())
}

/// Authenticates one request.
///
/// # Errors
/// `40104` no header, `40100` malformed header, `40107` unknown application or a scheme
/// below its minimum, `40101` missing/stale `x-timestamp`, `40102` bad signature or
/// secret, `40303` public auth for an application without a callback URL.
pub async fn authenticate(
    state: &AppState,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Caller, ApiError> {
    let header_value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::new(ErrorCode::AuthorizationRequired, "Authorization required"))?
        .to_str()
        .map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidAuthorizationHeader,
                "Invalid authorization header",
            )
        })?;
    let presented = parse_authorization(header_value)?;
    let key = match &presented {
        Presented::Signed { key, .. } | Presented::Public { key } => *key,
        Presented::Basic { key, .. } => key.as_str(),
    };
    let now = state.now();
    let app = state
        .0
        .apps
        .get(state.0.store.as_ref(), key, now)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidAuthorization, "Invalid authorization"))?;
    let weaker_than_allowed = |kind: &str| {
        ApiError::new(
            ErrorCode::InvalidAuthorization,
            format!("Invalid authorization: this application does not accept {kind} authorization"),
        )
    };
    match presented {
        Presented::Signed { signature, .. } => {
            check_timestamp(state, headers, now)?;
            let timestamp = headers
                .get("x-timestamp")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let mut request = SignedRequest {
                verb: method.as_str(),
                body,
                content_type,
                timestamp,
                resource: path,
            };
            let mut ok = signing::verify(&app.key_bytes, &request.string_to_sign(), signature);
            if !ok {
                let decoded = percent_decode_str(path).decode_utf8_lossy();
                if decoded != path {
                    request.resource = &decoded;
                    ok = signing::verify(&app.key_bytes, &request.string_to_sign(), signature);
                }
            }
            if !ok {
                return Err(ApiError::new(
                    ErrorCode::InvalidSignature,
                    "Invalid signature",
                ));
            }
            Ok(Caller {
                app,
                kind: AuthKind::Signed,
            })
        }
        Presented::Basic { secret, .. } => {
            if app.app.min_auth == MinAuth::Signed {
                return Err(weaker_than_allowed("Basic"));
            }
            if !ct_eq(secret.as_bytes(), app.app.secret.as_bytes()) {
                return Err(ApiError::new(
                    ErrorCode::InvalidSignature,
                    "Invalid credentials",
                ));
            }
            Ok(Caller {
                app,
                kind: AuthKind::Basic,
            })
        }
        Presented::Public { .. } => {
            if app.app.min_auth != MinAuth::Public {
                return Err(weaker_than_allowed("public"));
            }
            // Public auth is only safe when the backend approves every start through the
            // Verification Request Event, so it needs a callback URL.
            if app.app.callback_url.is_none() {
                return Err(ApiError::new(
                    ErrorCode::CallbackRequired,
                    "Callback URL must be set when using public authorization method.",
                ));
            }
            Ok(Caller {
                app,
                kind: AuthKind::Public,
            })
        }
    }
}

fn check_timestamp(
    state: &AppState,
    headers: &HeaderMap,
    now: OffsetDateTime,
) -> Result<(), ApiError> {
    let raw = headers
        .get("x-timestamp")
        .ok_or_else(|| ApiError::new(ErrorCode::TimestampRequired, "X-Timestamp required"))?
        .to_str()
        .map_err(|_| ApiError::new(ErrorCode::TimestampRequired, "X-Timestamp is not ISO-8601"))?;
    let sent = OffsetDateTime::parse(raw.trim(), &Rfc3339)
        .map_err(|_| ApiError::new(ErrorCode::TimestampRequired, "X-Timestamp is not ISO-8601"))?;
    let skew = state.0.settings.timestamp_skew;
    if (now - sent).abs() > skew {
        return Err(ApiError::new(
            ErrorCode::TimestampRequired,
            format!(
                "X-Timestamp is more than {} seconds away from server time",
                skew.whole_seconds()
            ),
        ));
    }
    Ok(())
}

/// Constant-time byte comparison (length is not secret).
mod subtle_compare {
    pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        a.len() == b.len() && bool::from(a.ct_eq(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_schemes() {
        assert!(matches!(
            parse_authorization("Application k:sig=").unwrap(),
            Presented::Signed {
                key: "k",
                signature: "sig="
            }
        ));
        assert!(matches!(
            parse_authorization("application k").unwrap(),
            Presented::Public { key: "k" }
        ));
        let basic = format!("Basic {}", STANDARD.encode("k:s3cret"));
        assert!(matches!(
            parse_authorization(&basic).unwrap(),
            Presented::Basic { key, secret } if key == "k" && secret == "s3cret"
        ));
        for bad in [
            "",
            "Application",
            "Application :x",
            "Application k:",
            "Bearer x",
            "Basic !!",
        ] {
            assert!(parse_authorization(bad).is_err(), "{bad}");
        }
    }
}
