//! The Sinch Verification API v1 operations.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use verifyd_api::model::{ReportRequest, ReportResponse, StartRequest, StatusResponse};
use verifyd_core::Method;

use crate::error::ApiError;
use crate::extract::{Authed, SinchPath};
use crate::service::{self, Target};
use crate::state::AppState;

/// `POST /verification/v1/verifications`.
pub async fn start_verification(
    State(state): State<AppState>,
    req: Authed,
) -> Result<Response, ApiError> {
    let body: StartRequest = req.json()?;
    let accept_language = req
        .headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let started = service::start(&state, &req.caller, body, accept_language.as_deref()).await?;
    let mut response = Json(started.response).into_response();
    if let Some(lang) = started
        .content_language
        .and_then(|l| HeaderValue::from_str(&l).ok())
    {
        response
            .headers_mut()
            .insert(header::CONTENT_LANGUAGE, lang);
    }
    Ok(response)
}

/// `PUT /verification/v1/verifications/id/{id}`.
pub async fn report_by_id(
    State(state): State<AppState>,
    SinchPath(id): SinchPath<String>,
    req: Authed,
) -> Result<Json<ReportResponse>, ApiError> {
    let body: ReportRequest = req.json()?;
    let app = &req.caller.app.app.key;
    Ok(Json(
        service::report(&state, app, Target::Id(&id), body).await?,
    ))
}

/// `PUT /verification/v1/verifications/number/{endpoint}`.
pub async fn report_by_identity(
    State(state): State<AppState>,
    SinchPath(endpoint): SinchPath<String>,
    req: Authed,
) -> Result<Json<ReportResponse>, ApiError> {
    let body: ReportRequest = req.json()?;
    let app = &req.caller.app.app.key;
    let target = Target::Identity(&endpoint, None);
    Ok(Json(service::report(&state, app, target, body).await?))
}

/// `GET /verification/v1/verifications/id/{id}`.
pub async fn status_by_id(
    State(state): State<AppState>,
    SinchPath(id): SinchPath<String>,
    req: Authed,
) -> Result<Json<StatusResponse>, ApiError> {
    req.require_backend()?;
    let app = &req.caller.app.app.key;
    Ok(Json(service::status(&state, app, Target::Id(&id)).await?))
}

/// `GET /verification/v1/verifications/{method}/number/{endpoint}` (method
/// case-insensitive; `phonecall` means callout).
pub async fn status_by_identity(
    State(state): State<AppState>,
    SinchPath((method, endpoint)): SinchPath<(String, String)>,
    req: Authed,
) -> Result<Json<StatusResponse>, ApiError> {
    req.require_backend()?;
    let method = Method::parse(&method).ok_or_else(|| {
        ApiError::invalid(format!("Verification method {method:?} is not supported."))
    })?;
    let app = &req.caller.app.app.key;
    let target = Target::Identity(&endpoint, Some(method));
    Ok(Json(service::status(&state, app, target).await?))
}

/// `GET /verification/v1/verifications/reference/{reference}`; the reference may contain
/// `/` (node and Python send it unencoded).
pub async fn status_by_reference(
    State(state): State<AppState>,
    SinchPath(reference): SinchPath<String>,
    req: Authed,
) -> Result<Json<StatusResponse>, ApiError> {
    req.require_backend()?;
    let app = &req.caller.app.app.key;
    Ok(Json(
        service::status(&state, app, Target::Reference(&reference)).await?,
    ))
}
