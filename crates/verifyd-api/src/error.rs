//! The Sinch error body `{errorCode, message, reference}` and the code table.
//!
//! `errorCode` is a five-digit number whose first three digits are the HTTP status. The body
//! never carries `code`, `text` or `error` keys (the Java SDK would pick the wrong parser).

use serde::{Deserialize, Serialize};

/// The error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Five digits; the first three are the HTTP status.
    #[serde(rename = "errorCode")]
    pub error_code: u32,
    /// Human-readable message (Python 1.x requires it).
    pub message: String,
    /// A unique id for this error, also logged, so support can correlate.
    pub reference: String,
}

/// Every error code verifyd answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 40001: a parameter failed validation (bad number, bad option, malformed JSON).
    ParameterValidation,
    /// 40002: a required parameter is missing.
    MissingParameter,
    /// 40003: the request cannot be applied (e.g. report on a seamless verification).
    InvalidRequest,
    /// 40005: the number lacks its leading plus.
    MissingPlus,
    /// 40100: the Authorization header is missing a part or malformed.
    InvalidAuthorizationHeader,
    /// 40101: `x-timestamp` is missing, malformed or outside the allowed skew.
    TimestampRequired,
    /// 40102: the signature (or Basic secret) does not match.
    InvalidSignature,
    /// 40104: no Authorization header.
    AuthorizationRequired,
    /// 40107: unknown application, or an auth scheme the application does not allow.
    InvalidAuthorization,
    /// 40200: spend cap reached.
    NotEnoughCredit,
    /// 40300: refused (blocked identity, destination not served).
    Forbidden,
    /// 40303: public auth without a callback URL.
    CallbackRequired,
    /// 40400: no such resource (or another application's).
    NotFound,
    /// 40500: the path exists but not for this HTTP method.
    MethodNotAllowed,
    /// 40900: the reference is already used by another verification.
    ReferenceConflict,
    /// 41300: body over the size limit.
    PayloadTooLarge,
    /// 41500: an unsupported content type.
    UnsupportedMediaType,
    /// 42201: no route to the destination.
    NoRoute,
    /// 42900: request rate limit.
    RequestCapacityExceeded,
    /// 42901: same number too quickly.
    TooQuickly,
    /// 50000: internal error (details only in the log).
    Internal,
    /// 50300: temporarily unavailable.
    Unavailable,
}

impl ErrorCode {
    /// The five-digit code.
    pub fn code(self) -> u32 {
        match self {
            ErrorCode::ParameterValidation => 40001,
            ErrorCode::MissingParameter => 40002,
            ErrorCode::InvalidRequest => 40003,
            ErrorCode::MissingPlus => 40005,
            ErrorCode::InvalidAuthorizationHeader => 40100,
            ErrorCode::TimestampRequired => 40101,
            ErrorCode::InvalidSignature => 40102,
            ErrorCode::AuthorizationRequired => 40104,
            ErrorCode::InvalidAuthorization => 40107,
            ErrorCode::NotEnoughCredit => 40200,
            ErrorCode::Forbidden => 40300,
            ErrorCode::CallbackRequired => 40303,
            ErrorCode::NotFound => 40400,
            ErrorCode::MethodNotAllowed => 40500,
            ErrorCode::ReferenceConflict => 40900,
            ErrorCode::PayloadTooLarge => 41300,
            ErrorCode::UnsupportedMediaType => 41500,
            ErrorCode::NoRoute => 42201,
            ErrorCode::RequestCapacityExceeded => 42900,
            ErrorCode::TooQuickly => 42901,
            ErrorCode::Internal => 50000,
            ErrorCode::Unavailable => 50300,
        }
    }

    /// The HTTP status: the first three digits of the code.
    pub fn http_status(self) -> u16 {
        (self.code() / 100) as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_status_is_the_first_three_digits() {
        assert_eq!(ErrorCode::MissingPlus.http_status(), 400);
        assert_eq!(ErrorCode::CallbackRequired.http_status(), 403);
        assert_eq!(ErrorCode::TooQuickly.http_status(), 429);
        assert_eq!(ErrorCode::Unavailable.http_status(), 503);
    }

    #[test]
    fn body_serialises_with_sinch_keys_only() {
        let b = ErrorBody {
            error_code: 40400,
            message: "Requested resource was not found.".into(),
            reference: "r".into(),
        };
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            r#"{"errorCode":40400,"message":"Requested resource was not found.","reference":"r"}"#
        );
    }
}
