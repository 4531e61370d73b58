//! `ApiError`: the only place where outcomes meet HTTP. Every failure — bad JSON, bad auth,
//! unknown routes, panics — leaves as the Sinch body `{errorCode, message, reference}` with
//! `Content-Type: application/json` and the HTTP status given by the code's first three
//! digits. Internal errors get an opaque message; their cause is logged with the same
//! `reference` the client sees.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use verifyd_api::{ErrorBody, ErrorCode};
use verifyd_store::StoreError;

/// An error answered to an API client.
#[derive(Debug)]
pub struct ApiError {
    /// The code (and so the HTTP status).
    pub code: ErrorCode,
    /// What the client is told.
    pub message: String,
    /// For internal errors: the cause, logged, never sent.
    pub internal: Option<anyhow::Error>,
    /// Seconds for a `Retry-After` header (rate limits).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a client-facing message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            internal: None,
            retry_after: None,
        }
    }

    /// 40001 parameter validation.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ParameterValidation, message)
    }

    /// 40002 missing parameter.
    pub fn missing(what: &str) -> Self {
        Self::new(
            ErrorCode::MissingParameter,
            format!("{what} parameter is missing."),
        )
    }

    /// 40400.
    pub fn not_found() -> Self {
        Self::new(ErrorCode::NotFound, "Requested resource was not found.")
    }

    /// 50000 with a logged cause.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        Self {
            code: ErrorCode::Internal,
            message: "Internal server error.".into(),
            internal: Some(cause.into()),
            retry_after: None,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict {
                constraint: "reference",
            } => Self::new(ErrorCode::ReferenceConflict, "Reference already defined"),
            other => Self::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let reference = uuid::Uuid::new_v4().to_string();
        if let Some(cause) = &self.internal {
            tracing::error!(error.reference = %reference, error.cause_chain = ?cause, "internal error");
        } else {
            tracing::debug!(error.reference = %reference, error.code = self.code.code(), message = %self.message, "request refused");
        }
        let mut response = error_response(self.code, self.message, reference);
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// Builds the JSON error response.
pub fn error_response(code: ErrorCode, message: String, reference: String) -> Response {
    let body = ErrorBody {
        error_code: code.code(),
        message,
        reference,
    };
    let status =
        StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let mut response = (status, bytes).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}
