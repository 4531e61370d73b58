//! Endpoints the end user's device opens directly (no application credentials; each carries
//! its own unguessable token).

use axum::Json;
use std::net::{IpAddr, SocketAddr};

use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use verifyd_api::model::StatusResponse;

use crate::error::ApiError;
use crate::extract::SinchPath;
use crate::service::{self, SeamlessCallback, SeamlessOpened};
use crate::state::AppState;

/// Query of the seamless `targetUri`.
#[derive(Deserialize)]
pub struct SeamlessQuery {
    token: Option<String>,
}

/// `GET /verification/v1/seamless/{id}?token=...`: the device opens the `targetUri`. Dev
/// mode and header enrichment answer the status at once; a CAMARA provider answers 302 to
/// the mobile operator's authorization endpoint.
pub async fn seamless(
    State(state): State<AppState>,
    SinchPath(id): SinchPath<String>,
    Query(query): Query<SeamlessQuery>,
    request: Request,
) -> Result<Response, ApiError> {
    let token = query.token.ok_or_else(ApiError::not_found)?;
    // The TCP peer, never X-Forwarded-For: header enrichment trusts only the operator's
    // proxy connecting directly.
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    Ok(
        match service::complete_seamless(&state, &id, &token, peer, request.headers()).await? {
            SeamlessOpened::Done(status) => Json(*status).into_response(),
            SeamlessOpened::Redirect(url) => {
                let mut response = StatusCode::FOUND.into_response();
                let location = HeaderValue::from_str(&url).map_err(ApiError::internal)?;
                response.headers_mut().insert(header::LOCATION, location);
                response
                    .headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                response
            }
        },
    )
}

/// Query of the CAMARA callback: the operator's authorization response (RFC 6749 §4.1.2).
#[derive(Deserialize)]
pub struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    iss: Option<String>,
}

/// `GET /verification/v1/seamless/callback?code=...&state=...`: the mobile operator sends
/// the device back here; the answer is the verification's status.
pub async fn seamless_callback(
    State(state): State<AppState>,
    query: Result<Query<CallbackQuery>, QueryRejection>,
) -> Result<Json<StatusResponse>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    Ok(Json(
        service::seamless_callback(
            &state,
            SeamlessCallback {
                state: query.state,
                code: query.code,
                error: query.error,
                iss: query.iss,
            },
        )
        .await?,
    ))
}
