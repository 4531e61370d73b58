//! Mapping between SQLite rows and domain types. Private to this crate.

use rusqlite::Row;
use rusqlite::types::Value;
use time::OffsetDateTime;
use uuid::Uuid;
use verifyd_core::{
    CallInfo, CallResult, CodeHash, CodeType, Method, Money, PhoneNumber, Reason, Source, Status,
    Verification, VerificationId,
};
use verifyd_store::{Application, EventKind, EventState, MinAuth, OutboxEvent};

/// Application columns, in [`app_from_row`] order.
pub const APP_COLUMNS: &str = "key, name, secret, callback_url, min_auth, created_at, \
    allow_private_callbacks, callback_fail_open";

/// Event columns, in [`event_from_row`] order.
pub const EVENT_COLUMNS: &str = "id, app, verification_id, kind, state, attempts, created_at, \
    retry_from, next_attempt_at, last_error";

/// Column order shared by every SELECT and the INSERT (28 columns).
pub const VERIFICATION_COLUMNS: &str = "id, app, method, endpoint, country_code, region, status, \
    reason, reference, custom, secret_hash, code_type, attempts, max_attempts, created_at, \
    expires_at, finished_at, source, price_currency, price_amount, has_call, call_result, \
    call_complete, billable_duration, termination_currency, termination_amount, locale, version";

/// Unix microseconds (the precision stored).
pub fn micros(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000) as i64
}

pub fn from_micros(us: i64) -> rusqlite::Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Integer, Box::new(e))
    })
}

fn bad(col: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        col,
        rusqlite::types::Type::Text,
        format!("unexpected {what}").into(),
    )
}

/// The 28 values of a verification, in [`VERIFICATION_COLUMNS`] order.
pub fn verification_params(v: &Verification) -> Vec<Value> {
    let opt_text = |s: Option<&str>| s.map_or(Value::Null, |s| Value::Text(s.to_string()));
    let call = v.call.as_ref();
    vec![
        Value::Blob(v.id.as_bytes().to_vec()),
        Value::Text(v.app.clone()),
        Value::Text(v.method.as_str().into()),
        Value::Text(v.identity.as_str().into()),
        Value::Integer(i64::from(v.identity.country_code())),
        opt_text(v.identity.region()),
        Value::Text(v.status.as_str().into()),
        opt_text(v.reason.map(Reason::as_str)),
        opt_text(v.reference.as_deref()),
        opt_text(v.custom.as_deref()),
        Value::Blob(v.secret_hash.0.to_vec()),
        opt_text(v.code_type.map(CodeType::as_str)),
        Value::Integer(i64::from(v.attempts)),
        Value::Integer(i64::from(v.max_attempts)),
        Value::Integer(micros(v.created_at)),
        Value::Integer(micros(v.expires_at)),
        v.finished_at
            .map_or(Value::Null, |t| Value::Integer(micros(t))),
        opt_text(v.source.map(Source::as_str)),
        opt_text(v.price.as_ref().map(|p| p.currency.as_str())),
        v.price
            .as_ref()
            .map_or(Value::Null, |p| Value::Real(p.amount)),
        Value::Integer(i64::from(call.is_some())),
        opt_text(call.and_then(|c| c.result).map(CallResult::as_str)),
        Value::Integer(i64::from(call.is_some_and(|c| c.complete))),
        Value::Integer(i64::from(call.map_or(0, |c| c.billable_duration))),
        opt_text(
            call.and_then(|c| c.termination_price.as_ref())
                .map(|p| p.currency.as_str()),
        ),
        call.and_then(|c| c.termination_price.as_ref())
            .map_or(Value::Null, |p| Value::Real(p.amount)),
        opt_text(v.locale.as_deref()),
        Value::Integer(v.version as i64),
    ]
}

fn money(currency: Option<String>, amount: Option<f64>) -> Option<Money> {
    Some(Money {
        currency: currency?,
        amount: amount?,
    })
}

/// Reads a verification from a row selected with [`VERIFICATION_COLUMNS`].
pub fn verification_from_row(row: &Row<'_>) -> rusqlite::Result<Verification> {
    let id: Vec<u8> = row.get(0)?;
    let id = Uuid::from_slice(&id).map_err(|_| bad(0, "id"))?;
    let method: String = row.get(2)?;
    let status: String = row.get(6)?;
    let reason: Option<String> = row.get(7)?;
    let hash: Vec<u8> = row.get(10)?;
    let code_type: Option<String> = row.get(11)?;
    let finished: Option<i64> = row.get(16)?;
    let source: Option<String> = row.get(17)?;
    let has_call: bool = row.get(20)?;
    let call_result: Option<String> = row.get(21)?;
    let call = if has_call {
        Some(CallInfo {
            result: call_result.as_deref().and_then(CallResult::parse),
            complete: row.get(22)?,
            billable_duration: row.get(23)?,
            termination_price: money(row.get(24)?, row.get(25)?),
        })
    } else {
        None
    };
    Ok(Verification {
        id: VerificationId(id),
        app: row.get(1)?,
        method: Method::parse(&method).ok_or_else(|| bad(2, "method"))?,
        identity: PhoneNumber::from_parts(row.get(3)?, row.get(4)?, row.get(5)?),
        status: Status::parse(&status).ok_or_else(|| bad(6, "status"))?,
        reason: reason.as_deref().and_then(Reason::parse),
        reference: row.get(8)?,
        custom: row.get(9)?,
        secret_hash: CodeHash(hash.try_into().map_err(|_| bad(10, "hash"))?),
        code_type: code_type.as_deref().and_then(CodeType::parse),
        attempts: row.get(12)?,
        max_attempts: row.get(13)?,
        created_at: from_micros(row.get(14)?)?,
        expires_at: from_micros(row.get(15)?)?,
        finished_at: finished.map(from_micros).transpose()?,
        source: source.as_deref().and_then(Source::parse),
        price: money(row.get(18)?, row.get(19)?),
        call,
        locale: row.get(26)?,
        version: row.get::<_, i64>(27)? as u64,
    })
}

/// Reads an application row selected with [`APP_COLUMNS`].
pub fn app_from_row(row: &Row<'_>) -> rusqlite::Result<Application> {
    let min_auth: String = row.get(4)?;
    Ok(Application {
        key: row.get(0)?,
        name: row.get(1)?,
        secret: row.get(2)?,
        callback_url: row.get(3)?,
        min_auth: MinAuth::parse(&min_auth).ok_or_else(|| bad(4, "min_auth"))?,
        created_at: from_micros(row.get(5)?)?,
        allow_private_callbacks: row.get(6)?,
        callback_fail_open: row.get(7)?,
    })
}

/// Reads an event row selected with [`EVENT_COLUMNS`].
pub fn event_from_row(row: &Row<'_>) -> rusqlite::Result<OutboxEvent> {
    let vid: Vec<u8> = row.get(2)?;
    let kind: String = row.get(3)?;
    let state: String = row.get(4)?;
    Ok(OutboxEvent {
        id: row.get(0)?,
        app: row.get(1)?,
        verification_id: VerificationId(Uuid::from_slice(&vid).map_err(|_| bad(2, "id"))?),
        kind: EventKind::parse(&kind).ok_or_else(|| bad(3, "event kind"))?,
        state: EventState::parse(&state).ok_or_else(|| bad(4, "event state"))?,
        attempts: row.get(5)?,
        created_at: from_micros(row.get(6)?)?,
        retry_from: from_micros(row.get(7)?)?,
        next_attempt_at: from_micros(row.get(8)?)?,
        last_error: row.get(9)?,
    })
}
