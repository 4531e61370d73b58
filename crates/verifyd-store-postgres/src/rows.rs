//! Mapping between PostgreSQL rows and domain types. Private to this crate.
//!
//! Column types (see `migrations/`): ids are `uuid`, hashes and keys `bytea`, instants
//! `timestamptz` (microseconds, like the SQLite store), unsigned 32-bit counters `bigint`.
//! Decoding is strict: a value the domain cannot hold (an unknown status, a negative
//! counter) is an error, never a silent default.

use anyhow::{Context, anyhow};
use time::OffsetDateTime;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;
use verifyd_core::{
    CallInfo, CallResult, CodeHash, CodeType, Method, Money, PhoneNumber, Reason, Source, Status,
    Verification, VerificationId,
};
use verifyd_store::{Application, Block, EventKind, EventState, MinAuth, OutboxEvent};

/// Application columns, in [`app_from_row`] order.
pub const APP_COLUMNS: &str = "key, name, secret, callback_url, min_auth, created_at, \
    allow_private_callbacks, callback_fail_open";

/// Event columns, in [`event_from_row`] order.
pub const EVENT_COLUMNS: &str = "id, app, verification_id, kind, state, attempts, created_at, \
    retry_from, next_attempt_at, last_error";

/// Block columns, in [`block_from_row`] order.
pub const BLOCK_COLUMNS: &str = "key, until_at, reason, created_at";

/// Column order shared by every SELECT and the INSERT (28 columns).
pub const VERIFICATION_COLUMNS: &str = "id, app, method, endpoint, country_code, region, status, \
    reason, reference, custom, secret_hash, code_type, attempts, max_attempts, created_at, \
    expires_at, finished_at, source, price_currency, price_amount, has_call, call_result, \
    call_complete, billable_duration, termination_currency, termination_amount, locale, version";

/// A verification as column values, borrowed from the domain value, ready to bind.
pub struct VerificationParams<'a> {
    id: Uuid,
    app: &'a str,
    method: &'static str,
    endpoint: &'a str,
    country_code: i32,
    region: Option<&'a str>,
    status: &'static str,
    reason: Option<&'static str>,
    reference: Option<&'a str>,
    custom: Option<&'a str>,
    secret_hash: &'a [u8],
    code_type: Option<&'static str>,
    attempts: i64,
    max_attempts: i64,
    created_at: OffsetDateTime,
    expires_at: OffsetDateTime,
    finished_at: Option<OffsetDateTime>,
    source: Option<&'static str>,
    price_currency: Option<&'a str>,
    price_amount: Option<f64>,
    has_call: bool,
    call_result: Option<&'static str>,
    call_complete: bool,
    billable_duration: i64,
    termination_currency: Option<&'a str>,
    termination_amount: Option<f64>,
    locale: Option<&'a str>,
    version: i64,
}

impl<'a> VerificationParams<'a> {
    /// Borrows the column values of `v`.
    ///
    /// # Errors
    /// If the version does not fit a `bigint` (it never gets near).
    pub fn new(v: &'a Verification) -> anyhow::Result<Self> {
        let call = v.call.as_ref();
        let termination = call.and_then(|c| c.termination_price.as_ref());
        Ok(Self {
            id: v.id.0,
            app: &v.app,
            method: v.method.as_str(),
            endpoint: v.identity.as_str(),
            country_code: i32::from(v.identity.country_code()),
            region: v.identity.region(),
            status: v.status.as_str(),
            reason: v.reason.map(Reason::as_str),
            reference: v.reference.as_deref(),
            custom: v.custom.as_deref(),
            secret_hash: &v.secret_hash.0,
            code_type: v.code_type.map(CodeType::as_str),
            attempts: i64::from(v.attempts),
            max_attempts: i64::from(v.max_attempts),
            created_at: v.created_at,
            expires_at: v.expires_at,
            finished_at: v.finished_at,
            source: v.source.map(Source::as_str),
            price_currency: v.price.as_ref().map(|p| p.currency.as_str()),
            price_amount: v.price.as_ref().map(|p| p.amount),
            has_call: call.is_some(),
            call_result: call.and_then(|c| c.result).map(CallResult::as_str),
            call_complete: call.is_some_and(|c| c.complete),
            billable_duration: i64::from(call.map_or(0, |c| c.billable_duration)),
            termination_currency: termination.map(|p| p.currency.as_str()),
            termination_amount: termination.map(|p| p.amount),
            locale: v.locale.as_deref(),
            version: version_param(v.version)?,
        })
    }

    /// All 28 values, in [`VERIFICATION_COLUMNS`] order (for the INSERT).
    pub fn all(&self) -> [&(dyn ToSql + Sync); 28] {
        [
            &self.id,
            &self.app,
            &self.method,
            &self.endpoint,
            &self.country_code,
            &self.region,
            &self.status,
            &self.reason,
            &self.reference,
            &self.custom,
            &self.secret_hash,
            &self.code_type,
            &self.attempts,
            &self.max_attempts,
            &self.created_at,
            &self.expires_at,
            &self.finished_at,
            &self.source,
            &self.price_currency,
            &self.price_amount,
            &self.has_call,
            &self.call_result,
            &self.call_complete,
            &self.billable_duration,
            &self.termination_currency,
            &self.termination_amount,
            &self.locale,
            &self.version,
        ]
    }

    /// The values of [`CAS_UPDATE`](crate::CAS_UPDATE): the fields that change after a
    /// verification starts, then the id and the expected version.
    pub fn cas(&self) -> [&(dyn ToSql + Sync); 13] {
        [
            &self.status,
            &self.reason,
            &self.attempts,
            &self.finished_at,
            &self.source,
            &self.has_call,
            &self.call_result,
            &self.call_complete,
            &self.billable_duration,
            &self.termination_currency,
            &self.termination_amount,
            &self.id,
            &self.version,
        ]
    }
}

/// A version as stored.
pub fn version_param(version: u64) -> anyhow::Result<i64> {
    i64::try_from(version).map_err(|_| anyhow!("version {version} does not fit a bigint"))
}

fn unsigned(value: i64, column: &str) -> anyhow::Result<u32> {
    u32::try_from(value).map_err(|_| anyhow!("{column} {value} is not a u32"))
}

fn money(currency: Option<String>, amount: Option<f64>) -> Option<Money> {
    Some(Money {
        currency: currency?,
        amount: amount?,
    })
}

/// Reads a verification from a row selected with [`VERIFICATION_COLUMNS`].
pub fn verification_from_row(row: &Row) -> anyhow::Result<Verification> {
    let method: String = row.try_get(2)?;
    let country_code: i32 = row.try_get(4)?;
    let status: String = row.try_get(6)?;
    let reason: Option<String> = row.try_get(7)?;
    let hash: Vec<u8> = row.try_get(10)?;
    let code_type: Option<String> = row.try_get(11)?;
    let source: Option<String> = row.try_get(17)?;
    let has_call: bool = row.try_get(20)?;
    let call = if has_call {
        let call_result: Option<String> = row.try_get(21)?;
        Some(CallInfo {
            result: call_result.as_deref().and_then(CallResult::parse),
            complete: row.try_get(22)?,
            billable_duration: unsigned(row.try_get(23)?, "billable_duration")?,
            termination_price: money(row.try_get(24)?, row.try_get(25)?),
        })
    } else {
        None
    };
    let version: i64 = row.try_get(27)?;
    Ok(Verification {
        id: VerificationId(row.try_get(0)?),
        app: row.try_get(1)?,
        method: Method::parse(&method).ok_or_else(|| anyhow!("unknown method {method:?}"))?,
        identity: PhoneNumber::from_parts(
            row.try_get(3)?,
            u16::try_from(country_code)
                .map_err(|_| anyhow!("country code {country_code} is out of range"))?,
            row.try_get(5)?,
        ),
        status: Status::parse(&status).ok_or_else(|| anyhow!("unknown status {status:?}"))?,
        reason: reason.as_deref().and_then(Reason::parse),
        reference: row.try_get(8)?,
        custom: row.try_get(9)?,
        secret_hash: CodeHash(
            hash.try_into()
                .map_err(|_| anyhow!("secret hash is not 32 bytes"))?,
        ),
        code_type: code_type.as_deref().and_then(CodeType::parse),
        attempts: unsigned(row.try_get(12)?, "attempts")?,
        max_attempts: unsigned(row.try_get(13)?, "max_attempts")?,
        created_at: row.try_get(14)?,
        expires_at: row.try_get(15)?,
        finished_at: row.try_get(16)?,
        source: source.as_deref().and_then(Source::parse),
        price: money(row.try_get(18)?, row.try_get(19)?),
        call,
        locale: row.try_get(26)?,
        version: u64::try_from(version).map_err(|_| anyhow!("negative version {version}"))?,
    })
}

/// Reads every row as a verification.
pub fn verifications(rows: &[Row]) -> anyhow::Result<Vec<Verification>> {
    rows.iter()
        .map(|row| verification_from_row(row).context("Failed to read a verification row"))
        .collect()
}

/// Reads an application row selected with [`APP_COLUMNS`].
pub fn app_from_row(row: &Row) -> anyhow::Result<Application> {
    let min_auth: String = row.try_get(4)?;
    Ok(Application {
        key: row.try_get(0)?,
        name: row.try_get(1)?,
        secret: row.try_get(2)?,
        callback_url: row.try_get(3)?,
        min_auth: MinAuth::parse(&min_auth).ok_or_else(|| anyhow!("unknown min_auth"))?,
        created_at: row.try_get(5)?,
        allow_private_callbacks: row.try_get(6)?,
        callback_fail_open: row.try_get(7)?,
    })
}

/// Reads an event row selected with [`EVENT_COLUMNS`].
pub fn event_from_row(row: &Row) -> anyhow::Result<OutboxEvent> {
    let kind: String = row.try_get(3)?;
    let state: String = row.try_get(4)?;
    Ok(OutboxEvent {
        id: row.try_get(0)?,
        app: row.try_get(1)?,
        verification_id: VerificationId(row.try_get(2)?),
        kind: EventKind::parse(&kind).ok_or_else(|| anyhow!("unknown event kind {kind:?}"))?,
        state: EventState::parse(&state).ok_or_else(|| anyhow!("unknown event state {state:?}"))?,
        attempts: unsigned(row.try_get(5)?, "attempts")?,
        created_at: row.try_get(6)?,
        retry_from: row.try_get(7)?,
        next_attempt_at: row.try_get(8)?,
        last_error: row.try_get(9)?,
    })
}

/// Reads every row as an event.
pub fn events(rows: &[Row]) -> anyhow::Result<Vec<OutboxEvent>> {
    rows.iter()
        .map(|row| event_from_row(row).context("Failed to read an event row"))
        .collect()
}

/// Reads a block row selected with [`BLOCK_COLUMNS`].
pub fn block_from_row(row: &Row) -> anyhow::Result<Block> {
    Ok(Block {
        key: row.try_get(0)?,
        until: row.try_get(1)?,
        reason: row.try_get(2)?,
        created_at: row.try_get(3)?,
    })
}
