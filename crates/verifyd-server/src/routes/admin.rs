//! The operator API: callback events (list, redeliver). Protected by `admin_token`
//! (`Authorization: Bearer …`); absent when no token is configured.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use serde::{Deserialize, Serialize};
use verifyd_api::ErrorCode;
use verifyd_store::{EventState, OutboxEvent};

use crate::error::ApiError;
use crate::extract::SinchPath;
use crate::state::AppState;

fn check_token(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &state.0.settings.admin_token else {
        return Err(ApiError::not_found());
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::new(ErrorCode::AuthorizationRequired, "Authorization required"))?;
    use subtle::ConstantTimeEq;
    let ok = presented.len() == expected.len()
        && bool::from(presented.as_bytes().ct_eq(expected.as_bytes()));
    if !ok {
        return Err(ApiError::new(
            ErrorCode::InvalidAuthorization,
            "Invalid authorization",
        ));
    }
    Ok(())
}

/// An event as the admin API shows it.
#[derive(Serialize)]
pub struct EventView {
    id: i64,
    app: String,
    #[serde(rename = "verificationId")]
    verification_id: String,
    kind: &'static str,
    state: &'static str,
    attempts: u32,
    #[serde(rename = "createdAt", with = "time::serde::rfc3339")]
    created_at: time::OffsetDateTime,
    #[serde(rename = "nextAttemptAt", with = "time::serde::rfc3339")]
    next_attempt_at: time::OffsetDateTime,
    #[serde(rename = "lastError")]
    last_error: Option<String>,
}

impl From<OutboxEvent> for EventView {
    fn from(e: OutboxEvent) -> Self {
        Self {
            id: e.id,
            app: e.app,
            verification_id: e.verification_id.to_string(),
            kind: e.kind.as_str(),
            state: e.state.as_str(),
            attempts: e.attempts,
            created_at: e.created_at,
            next_attempt_at: e.next_attempt_at,
            last_error: e.last_error,
        }
    }
}

/// Query of the listing.
#[derive(Deserialize)]
pub struct EventsQuery {
    state: Option<String>,
    limit: Option<usize>,
}

/// `GET /admin/v1/events?state=dead|pending|delivered&limit=N`.
pub async fn list_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<EventsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_token(&state, &headers)?;
    let filter =
        match query.state.as_deref() {
            None | Some("") | Some("all") => None,
            Some(s) => Some(EventState::parse(s).ok_or_else(|| {
                ApiError::invalid("state must be pending, delivered, dead or all.")
            })?),
        };
    let events = state
        .0
        .store
        .list_events(filter, query.limit.unwrap_or(100).min(1000))
        .await?;
    let views: Vec<EventView> = events.into_iter().map(EventView::from).collect();
    Ok(Json(serde_json::json!({ "events": views })))
}

/// `POST /admin/v1/events/{id}/redeliver`.
pub async fn redeliver_event(
    State(state): State<AppState>,
    headers: HeaderMap,
    SinchPath(id): SinchPath<i64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_token(&state, &headers)?;
    if !state.0.store.redeliver_event(id, state.now()).await? {
        return Err(ApiError::not_found());
    }
    state.0.callbacks.notify.notify_one();
    tracing::info!(
        event.id = id,
        "callback event queued for redelivery by an operator"
    );
    Ok(Json(serde_json::json!({ "id": id, "state": "pending" })))
}

/// `GET /admin/v1/fraud/blocks`: active blocks (SMS-pumping prefixes; `shadow:` entries are
/// what shadow mode would have blocked).
pub async fn list_blocks(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_token(&state, &headers)?;
    let blocks = state.0.store.list_blocks(state.now()).await?;
    let views: Vec<serde_json::Value> = blocks
        .into_iter()
        .map(|b| {
            serde_json::json!({
                "key": b.key,
                "reason": b.reason,
                "until": b.until.format(&time::format_description::well_known::Rfc3339).ok(),
                "createdAt": b.created_at.format(&time::format_description::well_known::Rfc3339).ok(),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "blocks": views })))
}

/// `DELETE /admin/v1/fraud/blocks/{key}`: lifts a block.
pub async fn remove_block(
    State(state): State<AppState>,
    headers: HeaderMap,
    SinchPath(key): SinchPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_token(&state, &headers)?;
    if !state.0.store.remove_block(&key).await? {
        return Err(ApiError::not_found());
    }
    tracing::info!(block = %key, "block lifted by an operator");
    Ok(Json(serde_json::json!({ "key": key, "removed": true })))
}

/// `GET /admin/v1/verifications/{id}/attempts`: every delivery attempt (route, channel,
/// provider message id, outcome) of a verification.
pub async fn attempts(
    State(state): State<AppState>,
    headers: HeaderMap,
    SinchPath(id): SinchPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_token(&state, &headers)?;
    let id = verifyd_core::VerificationId::parse(&id).ok_or_else(ApiError::not_found)?;
    let attempts = state.0.store.attempts(id).await?;
    let views: Vec<serde_json::Value> = attempts
        .into_iter()
        .map(|a| {
            serde_json::json!({
                "route": a.route,
                "channel": a.channel,
                "messageId": a.message_id,
                "outcome": a.outcome,
                "at": a.at.format(&time::format_description::well_known::Rfc3339).ok(),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "attempts": views })))
}

/// `GET /admin/v1/routes`: the configured channels and the routes over them, in order.
pub async fn routes(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_token(&state, &headers)?;
    let mut channels: Vec<&String> = state.0.channels.keys().collect();
    channels.sort();
    let routes: Vec<serde_json::Value> = state
        .0
        .dispatcher
        .routes()
        .iter()
        .map(|r| {
            serde_json::json!({
                "name": r.name,
                "channel": r.channel.name(),
                "methods": r.methods.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
                "prefixes": r.prefixes,
                "countries": r.countries,
                "sender": r.sender,
            })
        })
        .collect();
    Ok(Json(
        serde_json::json!({ "channels": channels, "routes": routes }),
    ))
}
