//! Operational endpoints: health and the dev inbox.

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use verifyd_channels::InboxMessage;

use crate::error::ApiError;
use crate::state::AppState;

/// `GET /healthz`: liveness — the process serves HTTP.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`: readiness — the store answers (a node that lost its database reports 503
/// so a load balancer takes it out of rotation).
pub async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    state.0.store.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check: store unreachable");
        ApiError::new(
            verifyd_api::ErrorCode::Unavailable,
            "Service is temporarily unavailable, please try again later.",
        )
    })?;
    Ok(Json(serde_json::json!({ "status": "ready" })))
}

/// Query of the inbox listing.
#[derive(Deserialize)]
pub struct InboxQuery {
    to: Option<String>,
    limit: Option<usize>,
}

/// The inbox listing.
#[derive(Serialize)]
pub struct InboxListing {
    messages: Vec<InboxMessage>,
}

/// `GET /inbox/v1/messages?to=+46...`: captured messages, newest first (dev mode only).
pub async fn inbox(
    State(state): State<AppState>,
    Query(query): Query<InboxQuery>,
) -> Result<Json<InboxListing>, ApiError> {
    let inbox = state.0.inbox.as_ref().ok_or_else(ApiError::not_found)?;
    let to = query.to.map(|t| t.trim().replace(' ', "+"));
    let to = to.map(|t| {
        if t.starts_with('+') {
            t
        } else {
            format!("+{t}")
        }
    });
    Ok(Json(InboxListing {
        messages: inbox.messages(to.as_deref(), query.limit.unwrap_or(100).min(1000)),
    }))
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics() -> axum::response::Response {
    use axum::response::IntoResponse;
    let body = crate::metrics::handle()
        .map(|h| h.render())
        .unwrap_or_default();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
        .into_response()
}
