//! Endpoints the end user's device opens directly (no application credentials; each carries
//! its own unguessable token).

use axum::Json;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Query, Request, State};
use serde::Deserialize;
use verifyd_api::model::StatusResponse;

use crate::error::ApiError;
use crate::extract::SinchPath;
use crate::service;
use crate::state::AppState;

/// Query of the seamless `targetUri`.
#[derive(Deserialize)]
pub struct SeamlessQuery {
    token: Option<String>,
}

/// `GET /verification/v1/seamless/{id}?token=...`: in dev mode, opening the `targetUri`
/// completes the verification (a real carrier check replaces this later).
pub async fn seamless(
    State(state): State<AppState>,
    SinchPath(id): SinchPath<String>,
    Query(query): Query<SeamlessQuery>,
    request: Request,
) -> Result<Json<StatusResponse>, ApiError> {
    let token = query.token.ok_or_else(ApiError::not_found)?;
    // The TCP peer, never X-Forwarded-For: header enrichment trusts only the operator's
    // proxy connecting directly.
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    Ok(Json(
        service::complete_seamless(&state, &id, &token, peer, request.headers()).await?,
    ))
}
