//! Extractors whose rejections are Sinch errors.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use verifyd_api::ErrorCode;

use crate::auth::{Caller, authenticate};
use crate::error::ApiError;
use crate::state::AppState;

/// Largest accepted request body.
pub const MAX_BODY: usize = 64 * 1024;

/// An authenticated request: the caller, the exact body bytes (they were signed) and the
/// headers.
pub struct Authed {
    /// Who is calling.
    pub caller: Caller,
    /// The raw body.
    pub body: Bytes,
    /// Request headers.
    pub headers: HeaderMap,
}

impl Authed {
    /// Refuses public (device) authentication: status lookups would let anyone holding the
    /// embedded application key read other people's verifications.
    ///
    /// # Errors
    /// `40107` for public auth.
    pub fn require_backend(&self) -> Result<(), ApiError> {
        if self.caller.kind == crate::auth::AuthKind::Public {
            return Err(ApiError::new(
                ErrorCode::InvalidAuthorization,
                "Invalid authorization: status queries need signed or Basic authorization",
            ));
        }
        Ok(())
    }

    /// Parses the body as JSON into `T`.
    ///
    /// # Errors
    /// `40002` for an empty body, `40001` for malformed JSON or wrong types.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::new(
                ErrorCode::MissingParameter,
                "Request body is missing.",
            ));
        }
        serde_json::from_slice(&self.body).map_err(|e| {
            ApiError::invalid(format!(
                "Request body is not valid JSON for this operation: {e}"
            ))
        })
    }
}

impl FromRequest<AppState> for Authed {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let too_large = || {
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("Request body is larger than {} KiB.", MAX_BODY / 1024),
            )
        };
        if let Some(len) = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            && len > MAX_BODY as u64
        {
            return Err(too_large());
        }
        let body = axum::body::to_bytes(body, MAX_BODY).await.map_err(|e| {
            let is_limit = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if is_limit {
                too_large()
            } else {
                ApiError::invalid("Failed to read the request body.")
            }
        })?;
        let caller = authenticate(
            state,
            &parts.method,
            parts.uri.path(),
            &parts.headers,
            &body,
        )
        .await?;
        rate_limit(state, &caller, &parts).await?;
        Ok(Self {
            caller,
            body,
            headers: parts.headers,
        })
    }
}

/// The per-application and per-client-IP request-rate limits (token buckets in the store,
/// so they hold across nodes). Off unless configured.
async fn rate_limit(state: &AppState, caller: &Caller, parts: &Parts) -> Result<(), ApiError> {
    let key = caller.app.app.key.as_str();
    let fraud = state.fraud(key);
    // The client's own bucket first, so one noisy client cannot drain the application's.
    let mut checks = Vec::new();
    if let Some((rate, burst)) = fraud.ip_rate {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let forwarded = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok());
        let ip = crate::fraud::client_ip(peer, forwarded, &state.0.settings.trusted_proxies);
        checks.push(("ip_rate", format!("rl:ip:{key}:{ip}"), rate, burst));
    }
    if let Some((rate, burst)) = fraud.app_rate {
        checks.push(("app_rate", format!("rl:app:{key}"), rate, burst));
    }
    for (limit, bucket, rate, burst) in checks {
        if let Some(wait) = state
            .0
            .store
            .take_token(&bucket, rate, burst, state.now())
            .await?
        {
            crate::fraud::hit(limit, "refuse");
            crate::metrics::rate_limited(limit);
            tracing::info!(rule = limit, app = %key, "request refused: rate limit");
            let mut e = ApiError::new(
                ErrorCode::RequestCapacityExceeded,
                "Request capacity exceeded",
            );
            e.retry_after = Some(wait.as_seconds_f64().ceil().max(1.0) as u64);
            return Err(e);
        }
    }
    Ok(())
}

/// `Path<T>` whose rejection is a Sinch error.
pub struct SinchPath<T>(pub T);

impl<T, S> FromRequestParts<S> for SinchPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| SinchPath(v))
            .map_err(|e| ApiError::invalid(format!("Invalid path parameter: {e}")))
    }
}
