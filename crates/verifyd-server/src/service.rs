//! The verification use cases, between HTTP and the domain: validate a request into domain
//! values, apply the domain rule, persist, deliver, answer in wire shapes.

use time::format_description::FormatItem;
use time::macros::format_description;
use time::{Duration, OffsetDateTime};
use verifyd_api::ErrorCode;
use verifyd_api::model::RequestEventResponse;
use verifyd_api::model::{
    FlashCallStartInfo, Identity, Link, Price, ReportRequest, ReportResponse, SeamlessStartInfo,
    SmsStartInfo, StartRequest, StartResponse, StatusPrice, StatusResponse, WhatsappStartInfo,
};
use verifyd_channels::Payload;
use verifyd_core::locale::{CODE_PLACEHOLDER, render};
use verifyd_core::phone::PhoneError;
use verifyd_core::policy::{FLASHCALL_TIMEOUT_RANGE, parse_expiry};
use verifyd_core::{
    CallInfo, CallResult, CodeType, Method, Money, NewVerification, PhoneNumber, Reason,
    ReportOutcome, Source, Status, Verification, VerificationId,
};
use verifyd_store::{
    DeliveryJob, EventKind, Guard, GuardOutcome, GuardedWrite, NewJob, Refusal, StoreError,
};

use crate::auth::{AuthKind, Caller};
use crate::callbacks::{self, Decision, RequestContext};
use crate::config::{SeamlessKind, SeamlessProvider};
use crate::error::ApiError;
use crate::fraud::{self, StartGuard, StartRefused, TestOutcome};
use crate::state::AppState;

/// Longest accepted `custom` (characters).
const MAX_CUSTOM: usize = 4096;
/// Longest accepted `reference` (characters).
const MAX_REFERENCE: usize = 256;
/// Longest accepted per-request SMS template.
const MAX_TEMPLATE: usize = 640;
/// Retries of a read-apply-write loop that lost an optimistic-concurrency race.
const CAS_RETRIES: usize = 8;

/// A started verification and what to answer.
pub struct Started {
    /// The start answer.
    pub response: StartResponse,
    /// The negotiated `Content-Language`, for text methods.
    pub content_language: Option<String>,
}

/// Everything method-specific decided before the verification exists.
struct Plan {
    secret: String,
    code_type: Option<CodeType>,
    ttl: Duration,
    locale: Option<String>,
    /// Rendered body / script, with the secret inside (never logged).
    payload: Payload,
    sms_template: Option<String>,
    flash: Option<(String, u32, u32)>,
    seamless_uri: Option<String>,
    /// WhatsApp: the same code as an SMS, for the fallback when the recipient has no
    /// WhatsApp.
    sms_fallback: Option<Payload>,
}

fn phone_error(e: PhoneError) -> ApiError {
    match e {
        PhoneError::MissingPlus => ApiError::new(ErrorCode::MissingPlus, e.to_string()),
        PhoneError::Empty => ApiError::missing("Endpoint"),
        PhoneError::Invalid { .. } => ApiError::invalid(e.to_string()),
    }
}

fn parse_code_type(value: Option<&str>) -> Result<CodeType, ApiError> {
    match value {
        None => Ok(CodeType::Numeric),
        Some(v) => CodeType::parse(v).ok_or_else(|| {
            ApiError::invalid(format!(
                "codeType {v:?} is invalid: expected Numeric, Alpha or Alphanumeric."
            ))
        }),
    }
}

fn flash_timeout(value: Option<i64>, name: &str, default: u32) -> Result<u32, ApiError> {
    match value {
        // .NET sends 0 when the caller set options without this field.
        None | Some(0) => Ok(default),
        Some(v) => u32::try_from(v)
            .ok()
            .filter(|v| FLASHCALL_TIMEOUT_RANGE.contains(v))
            .ok_or_else(|| ApiError::invalid(format!("{name} must be between 5 and 120 seconds."))),
    }
}

fn valid_locale(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 35
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Validates a code chosen by the backend in its request-event answer.
fn custom_code(code: &str) -> Result<String, ApiError> {
    let code = code.trim();
    if code.is_empty() || code.len() > 32 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ApiError::invalid(
            "a custom code must be 1 to 32 letters or digits.",
        ));
    }
    Ok(code.to_string())
}

/// Digits separated by spaces, for a spoken script.
fn spoken(code: &str) -> String {
    code.chars().map(String::from).collect::<Vec<_>>().join(" ")
}

fn links(state: &AppState, id: &str) -> Vec<Link> {
    let href = format!(
        "{}/verification/v1/verifications/id/{id}",
        state.0.settings.public_url
    );
    vec![
        Link {
            rel: "status".into(),
            href: href.clone(),
            method: "GET".into(),
        },
        Link {
            rel: "report".into(),
            href,
            method: "PUT".into(),
        },
    ]
}

/// `POST /verification/v1/verifications`.
pub async fn start(
    state: &AppState,
    caller: &Caller,
    mut req: StartRequest,
    accept_language: Option<&str>,
) -> Result<Started, ApiError> {
    let known = &caller.app;
    let app = known.app.key.as_str();
    if caller.kind == AuthKind::Public {
        // A device chooses the number and method, nothing else: options are for signed
        // backend requests only (OAS), and the backend decides through the request event.
        req.sms_options = None;
        req.flash_call_options = None;
        req.callout_options = None;
        req.whatsapp_options = None;
        req.expiry = None;
        req.template = None;
        req.code_type = None;
    }
    let identity = req
        .identity
        .as_ref()
        .ok_or_else(|| ApiError::missing("Identity"))?;
    if let Some(kind) = &identity.kind
        && !kind.eq_ignore_ascii_case("number")
    {
        return Err(ApiError::invalid(format!(
            "Identity type {kind:?} is not supported: only \"number\"."
        )));
    }
    let endpoint = identity
        .endpoint
        .as_deref()
        .ok_or_else(|| ApiError::missing("Endpoint"))?;
    let number = PhoneNumber::parse(endpoint).map_err(phone_error)?;
    let method_name = req
        .method
        .as_deref()
        .ok_or_else(|| ApiError::missing("Method"))?;
    let method = Method::parse(method_name).ok_or_else(|| {
        ApiError::invalid(format!(
            "Verification method {method_name:?} is not supported."
        ))
    })?;
    if let Some(reference) = &req.reference
        && (reference.is_empty()
            || reference.chars().count() > MAX_REFERENCE
            || reference.chars().any(char::is_control))
    {
        return Err(ApiError::invalid(format!(
            "reference must be 1 to {MAX_REFERENCE} characters without control characters."
        )));
    }
    if req
        .custom
        .as_ref()
        .is_some_and(|c| c.chars().count() > MAX_CUSTOM)
    {
        return Err(ApiError::invalid(format!(
            "custom must be at most {MAX_CUSTOM} characters."
        )));
    }

    if method == Method::Seamless && seamless_provider(state, &number).is_none() {
        return Err(seamless_unavailable());
    }
    if !state.0.dispatcher.has_route(method, &number) {
        return Err(ApiError::new(
            ErrorCode::NoRoute,
            "No route to destination.",
        ));
    }
    let policy = state.policy(app).clone();
    let started_at = state.now();
    let id = state.with_rng(|rng| VerificationId::time_ordered(started_at, rng));
    // Validates every option before anything leaves the server.
    let mut plan = plan(state, method, &req, accept_language, &policy, id, None)?;
    let mut price = state
        .0
        .settings
        .prices
        .verification_price(method, number.region());
    let fraud = state.fraud(app);
    let test = fraud.test_numbers.get(number.as_str()).cloned();
    let mut denial = None;
    // The rate checks and counts run in the start's own write (one commit), unless a
    // request event comes first.
    let mut guard = StartGuard::default();
    if let Some(t) = &test {
        // A test number: fixed code, scripted outcome, free, never sent, no rules.
        price.amount = 0.0;
        tracing::info!(app = %app, number = %number.masked(), outcome = ?t.outcome, "test number");
        if t.outcome == TestOutcome::Denied {
            denial = Some(Reason::Fraud);
        }
    } else {
        match check_rules(state, app, method, &number, price.amount).await? {
            Ok(g) => guard = g,
            Err(reason) => denial = Some(reason),
        }
    }
    if denial.is_none() && known.app.callback_url.is_some() {
        // The backend is asked only about starts that pass the rate checks. The number's
        // start limits are checked again with the insert, which is what records the start.
        let g = guard.take_counted();
        let outcome = state
            .0
            .store
            .guarded_write(&g.guard, GuardedWrite::Nothing, state.now())
            .await?;
        if let GuardOutcome::Refused(refusal) = outcome {
            denial = Some(start_refused(state, app, &number, &g, refusal)?);
        }
    }
    if denial.is_none() && known.app.callback_url.is_some() {
        let ctx = RequestContext {
            id,
            method,
            endpoint: number.as_str(),
            price: &price,
            reference: req.reference.as_deref(),
            custom: req.custom.as_deref(),
            accept_language,
        };
        let decision = callbacks::request_event(state, known, &ctx).await;
        let invalid = |why: String| {
            tracing::warn!(verification.id = %id, app = %app, %why, fail_open = known.app.callback_fail_open, "invalid answer to the request event");
            (!known.app.callback_fail_open).then_some(Reason::InvalidCallback)
        };
        denial = match decision {
            Decision::Allow(answer) => {
                match self::plan(
                    state,
                    method,
                    &req,
                    accept_language,
                    &policy,
                    id,
                    Some(&answer),
                ) {
                    Ok(overridden) => {
                        plan = overridden;
                        None
                    }
                    Err(e) => invalid(format!("unusable override: {}", e.message)),
                }
            }
            Decision::Deny => Some(Reason::DeniedByCallback),
            Decision::Invalid(why) => invalid(why),
        };
    }
    if let Some(t) = &test {
        plan.secret.clone_from(&t.code);
        if t.outcome == TestOutcome::Expired {
            plan.ttl = Duration::ZERO;
        }
        if let Some(flash) = &mut plan.flash {
            let digits: String = t.code.chars().filter(char::is_ascii_digit).collect();
            flash.0 = format!("^\\+?{digits}$");
        }
    }
    let now = state.now();
    let mut verification = Verification::start(
        NewVerification {
            id,
            app: app.to_string(),
            method,
            identity: number.clone(),
            reference: req.reference.clone(),
            custom: req.custom.clone(),
            secret: plan.secret.clone(),
            code_type: plan.code_type,
            ttl: plan.ttl,
            max_attempts: policy.max_attempts,
            price: Some(price),
            locale: plan.locale.clone(),
        },
        &state.0.hasher,
        now,
    );
    if let Some(reason) = denial {
        return Err(record_denial(state, &mut verification, reason).await?);
    }
    // The message to deliver is queued (sealed) in the same transaction as the verification
    // and its rate checks, so an answered start is always delivered or its failure recorded.
    let (superseded, job) = match &test {
        None => {
            let (sealed, message) = crate::delivery::seal(
                state,
                &verification,
                &plan.payload,
                plan.sms_fallback.as_ref(),
            )?;
            let lease_until = now + state.0.dispatcher.settings().lease;
            let outcome = state
                .0
                .store
                .guarded_write(
                    &guard.guard,
                    GuardedWrite::Insert {
                        verification: &verification,
                        events: &[],
                        job: Some(NewJob {
                            payload: &sealed,
                            lease_until,
                        }),
                    },
                    now,
                )
                .await?;
            let (superseded, job_id) = match outcome {
                GuardOutcome::Passed {
                    superseded,
                    job_id: Some(job_id),
                    ..
                } => (superseded, job_id),
                GuardOutcome::Passed { job_id: None, .. } => {
                    return Err(ApiError::internal(anyhow::anyhow!(
                        "the store queued no delivery job"
                    )));
                }
                GuardOutcome::Refused(refusal) => {
                    let reason = start_refused(state, app, &number, &guard, refusal)?;
                    return Err(record_denial(state, &mut verification, reason).await?);
                }
            };
            let job = DeliveryJob {
                id: job_id,
                verification_id: verification.id,
                app: app.to_string(),
                payload: sealed,
                route_index: 0,
                attempts: 1,
                next_attempt_at: lease_until,
                created_at: now,
            };
            (superseded, Some((job, message)))
        }
        Some(_) => (
            state
                .0
                .store
                .insert_verification(&verification, &[])
                .await?,
            None,
        ),
    };
    if !superseded.is_empty() {
        state.0.callbacks.notify.notify_one();
    }
    for old in &superseded {
        crate::metrics::finished(old);
        tracing::info!(verification.id = %old.id, superseded_by = %id, "verification aborted by a newer start");
    }
    crate::metrics::started(&verification);
    tracing::info!(
        verification.id = %id,
        app = %app,
        method = %method,
        number = %number.masked(),
        country = number.region().unwrap_or("-"),
        "verification started"
    );

    match (&test, job) {
        (Some(t), _) => script_test_number(state, &mut verification, t.outcome).await?,
        (None, Some((job, message))) => {
            // Hand the message to the channel now, in the background; answer once it is
            // handed over or after `inline_wait` (the job is safe in the store either way).
            let (handed_over, handed) = tokio::sync::oneshot::channel();
            // Boxed: the dispatch future is large, and a task copies its future in and out
            // of the task cell by value (those copies were close to half of the server
            // threads' memcpy samples in a start profile).
            tokio::spawn(Box::pin({
                let state = state.clone();
                let verification = verification.clone();
                async move {
                    crate::delivery::dispatch_started(
                        &state,
                        job,
                        verification,
                        message,
                        handed_over,
                    )
                    .await;
                }
            }));
            let wait = state.0.dispatcher.settings().inline_wait;
            // Err (the job ended without handing over) answers just as well.
            let _ = tokio::time::timeout(wait, handed).await;
        }
        (None, None) => {}
    }

    let id_text = id.to_string();
    let response = StartResponse {
        id: id_text.clone(),
        method: method.as_str().into(),
        sms: (method == Method::Sms).then(|| SmsStartInfo {
            template: plan.sms_template.clone().unwrap_or_default(),
            interception_timeout: plan.ttl.whole_seconds().clamp(0, i64::from(u32::MAX)) as u32,
            code_type: plan.code_type.unwrap_or_default().as_str().into(),
        }),
        flash_call: plan
            .flash
            .as_ref()
            .map(|(filter, interception, report)| FlashCallStartInfo {
                cli_filter: filter.clone(),
                interception_timeout: *interception,
                report_timeout: *report,
                deny_call_after: policy.flashcall_deny_call_after,
                call_id: id_text.clone(),
            }),
        seamless: plan
            .seamless_uri
            .map(|target_uri| SeamlessStartInfo { target_uri }),
        whatsapp: (method == Method::Whatsapp).then(|| WhatsappStartInfo {
            code_type: plan.code_type.unwrap_or_default().as_str().into(),
        }),
        links: links(state, &id_text),
    };
    let content_language = matches!(method, Method::Sms | Method::Whatsapp | Method::Callout)
        .then_some(plan.locale)
        .flatten();
    Ok(Started {
        response,
        content_language,
    })
}

/// Decides code, lifetime, locale and message for a start, from the request and (after the
/// request event) the backend's overrides.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site; each input is distinct"
)]
fn plan(
    state: &AppState,
    method: Method,
    req: &StartRequest,
    accept_language: Option<&str>,
    policy: &verifyd_core::Policy,
    id: VerificationId,
    overrides: Option<&RequestEventResponse>,
) -> Result<Plan, ApiError> {
    let settings = &state.0.settings;
    let mut plan = Plan {
        secret: String::new(),
        code_type: None,
        ttl: policy.expiry,
        locale: None,
        payload: Payload::Seamless {
            target_uri: String::new(),
        },
        sms_template: None,
        flash: None,
        seamless_uri: None,
        sms_fallback: None,
    };
    match method {
        Method::Sms => {
            let opts = req.sms_options.clone().unwrap_or_default();
            let ov = overrides.and_then(|o| o.sms.clone()).unwrap_or_default();
            let code_type = parse_code_type(
                ov.code_type
                    .as_deref()
                    .or(opts.code_type.as_deref())
                    .or(req.code_type.as_deref()),
            )?;
            if let Some(expiry) = ov
                .expiry
                .as_deref()
                .or(opts.expiry.as_deref())
                .or(req.expiry.as_deref())
            {
                plan.ttl = parse_expiry(expiry).ok_or_else(|| {
                    ApiError::invalid(format!(
                        "expiry {expiry:?} is invalid: expected HH:MM:SS between 00:00:01 and 24:00:00."
                    ))
                })?;
            }
            let override_language = ov.accept_language.as_ref().map(|l| l.join(", "));
            let language = override_language
                .as_deref()
                .or(accept_language)
                .or(opts.locale.as_deref());
            let (locale, mut template) = settings.sms_templates.negotiate(language);
            if let Some(custom) = opts.template.as_deref().or(req.template.as_deref()) {
                if !custom.contains(CODE_PLACEHOLDER) || custom.chars().count() > MAX_TEMPLATE {
                    return Err(ApiError::invalid(format!(
                        "template must contain {CODE_PLACEHOLDER} and be at most {MAX_TEMPLATE} characters."
                    )));
                }
                template = custom.to_string();
            }
            let code = match ov.code {
                Some(custom) => custom_code(&custom)?,
                None => state.with_rng(|rng| code_type.generate(policy.code_length, rng)),
            };
            plan.payload = Payload::Text {
                body: render(&template, &code),
                code: code.clone(),
                locale: locale.clone(),
            };
            plan.secret = code;
            plan.code_type = Some(code_type);
            plan.locale = Some(locale);
            plan.sms_template = Some(template);
        }
        Method::Whatsapp => {
            let opts = req.whatsapp_options.clone().unwrap_or_default();
            let ov = overrides
                .and_then(|o| o.whatsapp.clone())
                .unwrap_or_default();
            let code_type = parse_code_type(ov.code_type.as_deref().or(opts.code_type.as_deref()))?;
            let override_language = ov.accept_language.as_ref().map(|l| l.join(", "));
            let (locale, template) = settings
                .whatsapp_templates
                .negotiate(override_language.as_deref().or(accept_language));
            let code = state.with_rng(|rng| code_type.generate(policy.code_length, rng));
            plan.payload = Payload::Text {
                body: render(&template, &code),
                code: code.clone(),
                locale: locale.clone(),
            };
            let (sms_locale, sms_template) = settings.sms_templates.negotiate(Some(&locale));
            plan.sms_fallback = Some(Payload::Text {
                body: render(&sms_template, &code),
                code: code.clone(),
                locale: sms_locale,
            });
            plan.secret = code;
            plan.code_type = Some(code_type);
            plan.locale = Some(locale);
        }
        Method::Callout => {
            let ov = overrides
                .and_then(|o| o.callout.clone())
                .unwrap_or_default();
            let requested = ov
                .speech
                .as_ref()
                .and_then(|s| s.locale.clone())
                .or(ov.locale.clone())
                .or_else(|| {
                    req.callout_options
                        .as_ref()
                        .and_then(|o| o.speech.as_ref())
                        .and_then(|s| s.locale.clone())
                })
                .filter(|l| !l.is_empty());
            if let Some(l) = &requested
                && !valid_locale(l)
            {
                return Err(ApiError::invalid(format!(
                    "speech locale {l:?} is invalid."
                )));
            }
            let (template_locale, template) = settings
                .callout_templates
                .negotiate(requested.as_deref().or(Some("en-US")));
            let locale = requested.unwrap_or(template_locale);
            let code = match ov.code {
                Some(custom) => {
                    let code = custom_code(&custom)?;
                    if !CodeType::Numeric.accepts(&code) {
                        return Err(ApiError::invalid("a callout code must be digits."));
                    }
                    code
                }
                None => state.with_rng(|rng| CodeType::Numeric.generate(policy.code_length, rng)),
            };
            let once = render(&template, &spoken(&code));
            plan.payload = Payload::Callout {
                code: code.clone(),
                locale: locale.clone(),
                script: format!("{once} {once}"),
            };
            plan.secret = code;
            plan.code_type = Some(CodeType::Numeric);
            plan.locale = Some(locale);
        }
        Method::Flashcall => {
            let opts = req.flash_call_options.clone().unwrap_or_default();
            let ov = overrides
                .and_then(|o| o.flash_call.clone())
                .unwrap_or_default();
            let dial = flash_timeout(
                ov.dial_timeout.or(opts.dial_timeout),
                "dialTimeout",
                policy.flashcall_dial_timeout,
            )?;
            let interception = flash_timeout(
                ov.interception_timeout.or(opts.interception_timeout),
                "interceptionTimeout",
                policy.flashcall_interception_timeout,
            )?;
            let report = policy.flashcall_report_timeout.max(interception);
            let (cli, filter) = match ov.cli {
                Some(cli) => {
                    // The backend may pick the CLI, but only from ranges the operator owns.
                    let cli = verifyd_core::CodeHasher::normalize(&cli, true);
                    let range = settings
                        .cli_ranges
                        .iter()
                        .find(|r| r.contains(&cli))
                        .ok_or_else(|| {
                            ApiError::invalid(
                                "flashCall.cli is not in a CLI range this server owns.",
                            )
                        })?;
                    (cli, range.cli_filter())
                }
                None => state.with_rng(|rng| {
                    let ranges = &settings.cli_ranges;
                    let range = &ranges[rng.next_u32() as usize % ranges.len()];
                    (range.draw(rng), range.cli_filter())
                }),
            };
            plan.payload = Payload::FlashCall {
                cli: cli.clone(),
                dial_timeout: dial,
            };
            plan.secret = cli;
            plan.ttl = Duration::seconds(i64::from(report));
            plan.flash = Some((filter, interception, report));
        }
        Method::Seamless => {
            let token = state.with_rng(|rng| {
                let mut bytes = [0u8; 24];
                rng.fill_bytes(&mut bytes);
                bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
            });
            let uri = format!(
                "{}/verification/v1/seamless/{id}?token={token}",
                settings.public_url
            );
            plan.payload = Payload::Seamless {
                target_uri: uri.clone(),
            };
            plan.secret = token;
            plan.seamless_uri = Some(uri);
        }
    }
    Ok(plan)
}

/// Runs the start rules for a number that is not a test number that need no write: the
/// destination rules (unless allow-listed) and the SMS-pumping check. Returns the DENIED
/// reason to record, or the guard (per-number limits, pumping counts, spend cap) for the
/// start's write.
async fn check_rules(
    state: &AppState,
    app: &str,
    method: Method,
    number: &PhoneNumber,
    amount: f64,
) -> Result<Result<StartGuard, Reason>, ApiError> {
    let fraud = state.fraud(app);
    if fraud.allow_listed(number) {
        fraud::hit("allowlist", "bypass");
        tracing::info!(rule = "allowlist", app = %app, number = %number.masked(), "allow-listed number bypasses the fraud rules");
    } else {
        if let Err((rule, reason)) = fraud.destination(number, method) {
            fraud::hit(rule, "deny");
            tracing::info!(rule, app = %app, number = %number.masked(), country = number.region().unwrap_or("-"), %reason, "start refused");
            return Ok(Err(reason));
        }
        let store = state.0.store.as_ref();
        if let Err(rule) = fraud.pumping(store, app, number, state.now()).await? {
            fraud::hit(rule, "deny");
            tracing::warn!(rule, app = %app, number = %number.masked(), "start refused: destination prefix blocked for SMS pumping");
            return Ok(Err(Reason::Fraud));
        }
    }
    Ok(Ok(fraud.start_guard(app, number, amount)))
}

/// Turns a refusal of a start's guard into the error to answer (rate limits) or the DENIED
/// reason to record (spend cap).
fn start_refused(
    state: &AppState,
    app: &str,
    number: &PhoneNumber,
    guard: &StartGuard,
    refusal: Refusal,
) -> Result<Reason, ApiError> {
    let fraud = state.fraud(app);
    match guard.refused(refusal, fraud.starts_per_hour, fraud.starts_per_day) {
        StartRefused::Error(rule, error) => {
            fraud::hit(rule, "refuse");
            crate::metrics::rate_limited(rule);
            tracing::info!(rule, app = %app, number = %number.masked(), "start refused");
            Err(error)
        }
        StartRefused::Deny(rule, reason) => {
            fraud::hit(rule, "deny");
            tracing::warn!(rule, app = %app, number = %number.masked(), %reason, "start refused");
            Ok(reason)
        }
    }
}

/// Records a start denied for `reason` (DENIED, with its result event) and returns the
/// error that answers it.
async fn record_denial(
    state: &AppState,
    verification: &mut Verification,
    reason: Reason,
) -> Result<ApiError, ApiError> {
    let now = verification.created_at;
    verification.deny(reason, now);
    state
        .0
        .store
        .insert_verification(verification, &[EventKind::Result])
        .await?;
    state.0.callbacks.notify.notify_one();
    crate::metrics::finished(verification);
    tracing::info!(verification.id = %verification.id, app = %verification.app, method = %verification.method, number = %verification.identity.masked(), reason = %reason, "verification denied at start");
    Ok(match reason {
        Reason::DeniedByCallback => {
            ApiError::new(ErrorCode::Forbidden, "Verification denied by callback.")
        }
        Reason::NotEnoughCredit => ApiError::new(ErrorCode::NotEnoughCredit, "Not enough credit"),
        Reason::Blocked => ApiError::new(ErrorCode::Forbidden, "Identity is blacklisted."),
        Reason::DestinationDenied => ApiError::new(ErrorCode::Forbidden, "Destination denied."),
        _ => ApiError::new(
            ErrorCode::Forbidden,
            format!("Verification denied: {reason}."),
        ),
    })
}

/// Plays a test number's scripted outcome instead of delivering anything.
async fn script_test_number(
    state: &AppState,
    verification: &mut Verification,
    outcome: TestOutcome,
) -> Result<(), ApiError> {
    let method = verification.method;
    let call = |result: CallResult| CallInfo {
        result: Some(result),
        complete: true,
        billable_duration: 0,
        termination_price: None,
    };
    match outcome {
        TestOutcome::Delivered | TestOutcome::Expired | TestOutcome::Denied => {
            if method.is_call() {
                let result = if method == Method::Flashcall {
                    CallResult::Cancel
                } else {
                    CallResult::Answered
                };
                update_verification_with(state, verification, &[], |v, _| {
                    v.record_call(call(result));
                    true
                })
                .await?;
            }
        }
        TestOutcome::Undeliverable | TestOutcome::NoAnswer => {
            let (reason, events): (Reason, &[EventKind]) = if method == Method::Sms {
                (
                    Reason::SmsDeliveryFailure,
                    &[
                        EventKind::SmsDelivered { successful: false },
                        EventKind::Result,
                    ],
                )
            } else {
                (
                    Reason::NetworkErrorOrNumberUnreachable,
                    &[EventKind::Result],
                )
            };
            let result = if outcome == TestOutcome::NoAnswer {
                CallResult::NoAnswer
            } else {
                CallResult::Failed
            };
            update_verification_with(state, verification, events, |v, now| {
                if v.method.is_call() {
                    v.record_call(call(result));
                }
                v.fail_delivery(reason, now)
            })
            .await?;
            crate::metrics::finished(verification);
        }
    }
    Ok(())
}

/// Applies `change` and writes back, re-reading and re-applying if another writer won the
/// race. `change` returns whether it changed anything.
pub(crate) async fn update_verification_with(
    state: &AppState,
    verification: &mut Verification,
    events: &[EventKind],
    mut change: impl FnMut(&mut Verification, OffsetDateTime) -> bool,
) -> Result<(), ApiError> {
    update_guarded(state, verification, |v, now| {
        change(v, now).then(|| (Guard::default(), events))
    })
    .await
    .map(|_| ())
}

/// Like [`update_verification_with`], for changes that may or may not finish the verification: `change`
/// returns (changed, finished), and a result event is queued with the write that finishes it.
async fn update_with_events(
    state: &AppState,
    verification: &mut Verification,
    mut change: impl FnMut(&mut Verification, OffsetDateTime) -> (bool, bool),
) -> Result<(), ApiError> {
    update_guarded(state, verification, |v, now| {
        let (changed, finished) = change(v, now);
        changed.then(|| (Guard::default(), result_event(finished)))
    })
    .await
    .map(|_| ())
}

/// The events of a write: the result event when it finishes the verification.
fn result_event(finished: bool) -> &'static [EventKind] {
    if finished { &[EventKind::Result] } else { &[] }
}

/// The one read-modify-write loop: applies `change` and writes it back with the guard and
/// the events it asks for, re-reading and re-applying if another writer won the race.
/// `change` returns `None` when it changed nothing. A refusal of the guard is returned
/// (nothing was written then).
async fn update_guarded<'e>(
    state: &AppState,
    verification: &mut Verification,
    mut change: impl FnMut(&mut Verification, OffsetDateTime) -> Option<(Guard, &'e [EventKind])>,
) -> Result<Option<Refusal>, ApiError> {
    for _ in 0..CAS_RETRIES {
        let now = state.now();
        let Some((guard, events)) = change(verification, now) else {
            return Ok(None);
        };
        let write = GuardedWrite::Update {
            verification,
            events,
        };
        match state.0.store.guarded_write(&guard, write, now).await {
            Ok(GuardOutcome::Passed { .. }) => {
                verification.version += 1;
                if !events.is_empty() {
                    state.0.callbacks.notify.notify_one();
                }
                return Ok(None);
            }
            Ok(GuardOutcome::Refused(refusal)) => return Ok(Some(refusal)),
            Err(StoreError::Conflict {
                constraint: "version",
            }) => {
                *verification = reload(state, verification).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(busy())
}

async fn reload(state: &AppState, v: &Verification) -> Result<Verification, ApiError> {
    state
        .0
        .store
        .verification(&v.app, v.id)
        .await?
        .ok_or_else(ApiError::not_found)
}

fn busy() -> ApiError {
    ApiError::new(
        ErrorCode::Unavailable,
        "Service is temporarily unavailable, please try again later.",
    )
}

/// Which verification a report or status targets.
pub enum Target<'a> {
    /// By id.
    Id(&'a str),
    /// By number (the report body or the path says which method).
    Identity(&'a str, Option<Method>),
    /// By reference.
    Reference(&'a str),
}

/// Loads the target verification of `app`.
async fn load(state: &AppState, app: &str, target: &Target<'_>) -> Result<Verification, ApiError> {
    let store = &state.0.store;
    let found = match target {
        Target::Id(id) => match VerificationId::parse(id) {
            Some(id) => store.verification(app, id).await?,
            None => None,
        },
        Target::Identity(endpoint, method) => {
            let method = method.ok_or_else(|| ApiError::missing("Method"))?;
            let number = normalize_endpoint(endpoint);
            store.verification_by_identity(app, method, &number).await?
        }
        Target::Reference(reference) => store.verification_by_reference(app, reference).await?,
    };
    found.ok_or_else(ApiError::not_found)
}

/// A number from a path: E.164 if it parses, else as given (status lookups must not
/// over-validate; an unknown number simply finds nothing).
fn normalize_endpoint(raw: &str) -> String {
    PhoneNumber::parse(raw).map_or_else(|_| raw.trim().to_string(), |n| n.as_str().to_string())
}

/// `PUT .../verifications/id/{id}` and `.../number/{endpoint}`.
pub async fn report(
    state: &AppState,
    app: &str,
    target: Target<'_>,
    req: ReportRequest,
) -> Result<ReportResponse, ApiError> {
    let body_method = match req.method.as_deref() {
        Some(m) => Some(Method::parse(m).ok_or_else(|| {
            ApiError::invalid(format!("Verification method {m:?} is not supported."))
        })?),
        None => None,
    };
    let target = match target {
        Target::Identity(endpoint, _) => Target::Identity(
            endpoint,
            Some(body_method.ok_or_else(|| ApiError::missing("Method"))?),
        ),
        other => other,
    };
    let mut verification = load(state, app, &target).await?;
    let method = verification.method;
    if let Some(m) = body_method
        && m != method
    {
        return Err(ApiError::invalid(format!(
            "Method {m} does not match the verification's method {method}."
        )));
    }
    let candidate = match method {
        Method::Sms => req.sms.and_then(|s| s.code).or(req.code),
        Method::Whatsapp => req.whatsapp.and_then(|s| s.code).or(req.code),
        Method::Callout => req.callout.and_then(|s| s.code).or(req.code),
        Method::Flashcall => req.flash_call.and_then(|f| f.cli).or(req.code),
        Method::Seamless => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "Seamless verifications are completed by the device opening targetUri, not by a report.",
            ));
        }
    };
    let candidate = candidate.filter(|c| !c.trim().is_empty()).ok_or_else(|| {
        ApiError::missing(match method {
            Method::Flashcall => "flashCall.cli",
            Method::Sms => "sms.code",
            Method::Whatsapp => "whatsapp.code",
            _ => "callout.code",
        })
    })?;
    if candidate.len() > 64 {
        return Err(ApiError::invalid("The reported code is too long."));
    }
    let source = req
        .source
        .as_deref()
        .and_then(Source::parse)
        .unwrap_or(Source::Manual);

    // The wrong-code budget of the number, across its verifications, is checked and spent
    // in the same write as the report's outcome: a wrong guess counts against it, and once
    // it is used up even a right code is refused until it refills.
    let fraud = state.fraud(app);
    let budgeted = !fraud
        .test_numbers
        .contains_key(verification.identity.as_str());
    let hasher = state.0.hasher.clone();
    let mut answer = None;
    let refused = update_guarded(state, &mut verification, |v, now| {
        let live = v.is_live(now);
        let a = v.report(&candidate, source, &hasher, now);
        answer = Some(a);
        if !a.outcome.changed() {
            return None;
        }
        let guessed_wrong = matches!(
            a.outcome,
            ReportOutcome::WrongCode { .. } | ReportOutcome::AttemptsExhausted
        );
        let guard = if live && budgeted {
            fraud.report_guard(
                app,
                &v.identity,
                guessed_wrong,
                a.outcome == ReportOutcome::Verified,
            )
        } else {
            Guard::default()
        };
        Some((guard, result_event(a.outcome.finished())))
    })
    .await?;
    if refused.is_some() {
        fraud::hit("wrong_code_budget", "refuse");
        crate::metrics::rate_limited("wrong_code_budget");
        tracing::info!(rule = "wrong_code_budget", app = %app, number = %verification.identity.masked(), "report refused");
        return Err(fraud::wrong_code_budget_exhausted());
    }
    let Some(answer) = answer else {
        return Err(ApiError::internal(anyhow::anyhow!(
            "report produced no answer"
        )));
    };
    let finished = answer.outcome.finished();
    if finished {
        crate::metrics::finished(&verification);
    }
    tracing::info!(
        verification.id = %verification.id,
        method = %method,
        outcome = ?answer.outcome,
        "verification reported"
    );
    Ok(ReportResponse {
        id: verification.id.to_string(),
        method: method.as_str().into(),
        status: answer.status.as_str().into(),
        reason: answer.reason.map(|r| r.as_str().into()),
        reference: verification.reference.clone(),
        source: (answer.status == Status::Successful)
            .then_some(verification.source)
            .flatten()
            .map(|s| s.as_str().into()),
        call_complete: method
            .is_call()
            .then(|| verification.call.as_ref().is_some_and(|c| c.complete)),
    })
}

const TIMESTAMP: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:7]");

fn price(m: &Money) -> Price {
    Price {
        currency_id: m.currency.clone(),
        amount: m.amount,
    }
}

/// The three GET endpoints.
pub async fn status(
    state: &AppState,
    app: &str,
    target: Target<'_>,
) -> Result<StatusResponse, ApiError> {
    let v = load(state, app, &target).await?;
    Ok(status_view(state, &v))
}

/// A verification in the status shape, as seen now.
pub fn status_view(state: &AppState, v: &Verification) -> StatusResponse {
    let (status, reason) = v.view_at(state.now());
    let utc = v.timestamp().to_offset(time::UtcOffset::UTC);
    let call = v.call.as_ref();
    let prices = &state.0.settings.prices;
    StatusResponse {
        id: v.id.to_string(),
        method: v.method.as_str().into(),
        status: status.as_str().into(),
        reason: reason.map(|r| r.as_str().into()),
        reference: v.reference.clone(),
        identity: Identity::number(v.identity.as_str()),
        country_id: v.identity.region().map(str::to_string),
        verification_timestamp: utc.format(TIMESTAMP).unwrap_or_default(),
        price: (status != Status::Pending)
            .then_some(v.price.as_ref())
            .flatten()
            .map(|p| StatusPrice {
                verification_price: price(p),
                termination_price: v.method.is_call().then(|| {
                    price(
                        &call
                            .and_then(|c| c.termination_price.clone())
                            .unwrap_or_else(|| {
                                prices.termination_price(call.map_or(0, |c| c.billable_duration))
                            }),
                    )
                }),
                billable_duration: v
                    .method
                    .is_call()
                    .then(|| call.map_or(0, |c| c.billable_duration)),
            }),
        source: v.source.map(|s| s.as_str().into()),
        call_complete: v.method.is_call().then(|| call.is_some_and(|c| c.complete)),
        call_result: call.and_then(|c| c.result).map(|r| r.as_str().into()),
    }
}

/// What the device gets for opening a seamless `targetUri`.
pub enum SeamlessOpened {
    /// The verification's status (dev and header enrichment complete it at once).
    Done(Box<StatusResponse>),
    /// Redirect the device here: the operator's authorization endpoint (CAMARA).
    Redirect(String),
}

/// The device side of a seamless verification: opening `targetUri` with the right token
/// completes it (dev mode, header enrichment) or starts the operator's flow (CAMARA).
pub async fn complete_seamless(
    state: &AppState,
    id: &str,
    token: &str,
    peer: std::net::IpAddr,
    headers: &axum::http::HeaderMap,
) -> Result<SeamlessOpened, ApiError> {
    let id = VerificationId::parse(id).ok_or_else(ApiError::not_found)?;
    let mut v = seamless_verification(state, id).await?;
    // The token is unguessable (192 bits); a wrong one learns nothing and changes nothing.
    if !v.secret_matches(token, &state.0.hasher) {
        return Err(ApiError::not_found());
    }
    let provider = seamless_provider(state, &v.identity).ok_or_else(seamless_unavailable)?;
    // Whether the network asserts this very number (header enrichment), or nothing is
    // asserted (dev mode: holding the token is enough).
    let matched = match &provider.kind {
        SeamlessKind::Dev => true,
        SeamlessKind::HeaderEnrichment { header, proxies } => {
            let asserted = headers.get(header.as_str()).and_then(|h| h.to_str().ok());
            let trusted = proxies.iter().any(|net| net.contains(&peer));
            match (asserted, trusted) {
                (Some(msisdn), true) => {
                    let digits =
                        |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
                    digits(msisdn) == digits(v.identity.as_str())
                }
                (asserted, _) => {
                    if asserted.is_some() {
                        tracing::warn!(verification.id = %v.id, %peer, "MSISDN header from an untrusted address ignored");
                    }
                    return Err(ApiError::new(
                        ErrorCode::Forbidden,
                        "Seamless verification needs the mobile operator's network: open the link over mobile data.",
                    ));
                }
            }
        }
        SeamlessKind::Camara(camara) => {
            // A final (or expired) verification starts no new flow; the device sees why.
            if !v.is_live(state.now()) {
                return Ok(SeamlessOpened::Done(Box::new(status_view(state, &v))));
            }
            let secrets = camara_secrets(state, &v)?;
            let url = camara
                .authorization_url(&secrets, &camara_redirect_uri(state), &v.identity)
                .await
                .map_err(|e| camara_error(&v, e))?;
            tracing::info!(verification.id = %v.id, number = %v.identity.masked(), "seamless verification sent to the operator");
            return Ok(SeamlessOpened::Redirect(url));
        }
    };
    let hasher = state.0.hasher.clone();
    update_with_events(state, &mut v, |v, now| {
        if matched {
            let outcome = v.report(token, Source::Intercepted, &hasher, now).outcome;
            (outcome.changed(), outcome.finished())
        } else {
            let failed = v.fail_now(now);
            (failed, failed)
        }
    })
    .await?;
    crate::metrics::finished(&v);
    tracing::info!(verification.id = %v.id, status = %v.status, number = %v.identity.masked(), "seamless verification completed");
    Ok(SeamlessOpened::Done(Box::new(status_view(state, &v))))
}

/// What the operator's redirect brings back to `/verification/v1/seamless/callback`.
pub struct SeamlessCallback {
    /// Our `state`: `{verification id}.{MAC}`.
    pub state: Option<String>,
    /// The authorization code (on success).
    pub code: Option<String>,
    /// The OAuth error (on failure), e.g. `login_required`.
    pub error: Option<String>,
    /// The issuer that answered (RFC 9207), when the operator sends it.
    pub iss: Option<String>,
}

/// The end of the CAMARA flow: the operator redirected the device back. Exchanges the code,
/// asks the operator's Number Verification API about the number and records the verdict.
///
/// - `devicePhoneNumberVerified: true` → SUCCESSFUL; `false` → FAIL.
/// - The operator could not authenticate the device by its network (`login_required` and
///   the like, or `USER_NOT_AUTHENTICATED_BY_MOBILE_NETWORK` from `/verify`) → FAIL /
///   "Network error or number unreachable", so the client can fall back.
/// - The operator unreachable or failing → 50300; the verification stays PENDING and the
///   device can open `targetUri` again until it expires.
/// - A `state` that is forged, or names a verification that is no longer pending → an
///   error, nothing changes and the operator is not called.
pub async fn seamless_callback(
    state: &AppState,
    callback: SeamlessCallback,
) -> Result<StatusResponse, ApiError> {
    let flow_state = callback.state.ok_or_else(|| ApiError::missing("state"))?;
    let id = crate::camara::state_verification_id(&flow_state)
        .and_then(VerificationId::parse)
        .ok_or_else(ApiError::not_found)?;
    let mut v = seamless_verification(state, id).await?;
    let secrets = camara_secrets(state, &v)?;
    if !secrets.state_matches(&flow_state) {
        tracing::warn!(verification.id = %v.id, "seamless callback with a forged state refused");
        return Err(ApiError::not_found());
    }
    let Some(SeamlessKind::Camara(camara)) = seamless_provider(state, &v.identity).map(|p| &p.kind)
    else {
        return Err(seamless_unavailable());
    };
    // RFC 9207: an answer naming another issuer is a mix-up, not this operator's.
    if callback
        .iss
        .as_deref()
        .is_some_and(|iss| !camara.is_issuer(iss))
    {
        tracing::warn!(verification.id = %v.id, "seamless callback from another issuer refused");
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "The authorization response comes from another issuer.",
        ));
    }
    // Single use: once final, no callback reaches the operator again.
    if !v.is_live(state.now()) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "The verification is no longer pending.",
        ));
    }
    let verdict = match (callback.error, callback.code) {
        (Some(error), _) if crate::camara::is_network_refusal(&error) => {
            tracing::info!(verification.id = %v.id, error = ?error, "the operator did not authenticate the device by its network");
            None
        }
        (Some(error), _) => {
            // The query is the device's to write: logged escaped (Debug), never trusted.
            tracing::warn!(verification.id = %v.id, error = ?error, "the operator's authorization endpoint refused the request");
            return Err(operator_unavailable());
        }
        (None, None) => return Err(ApiError::missing("code")),
        (None, Some(code)) => {
            match camara
                .verify(
                    &code,
                    &secrets,
                    &camara_redirect_uri(state),
                    &v.identity,
                    &v.id.to_string(),
                    state.now(),
                )
                .await
            {
                Ok(matched) => Some(matched),
                Err(crate::camara::CamaraError::NotAuthenticatedByNetwork) => {
                    tracing::info!(verification.id = %v.id, "the operator's API says the device was not authenticated by its network");
                    None
                }
                Err(e) => return Err(camara_error(&v, e)),
            }
        }
    };
    update_with_events(state, &mut v, |v, now| {
        let changed = match verdict {
            Some(true) => v.succeed_now(Source::Intercepted, now),
            Some(false) => v.fail_now(now),
            None => v.fail_with(Reason::NetworkErrorOrNumberUnreachable, now),
        };
        (changed, changed)
    })
    .await?;
    crate::metrics::finished(&v);
    tracing::info!(verification.id = %v.id, status = %v.status, number = %v.identity.masked(), "seamless verification completed by the operator");
    Ok(status_view(state, &v))
}

/// The CAMARA flow values of a verification.
fn camara_secrets(
    state: &AppState,
    v: &Verification,
) -> Result<crate::camara::FlowSecrets, ApiError> {
    let key = state.0.oidc_key.as_ref().ok_or_else(|| {
        ApiError::internal(anyhow::anyhow!(
            "no seamless OIDC key: no CAMARA provider is configured"
        ))
    })?;
    Ok(crate::camara::FlowSecrets::derive(key, v))
}

/// Where the operator sends the device back.
fn camara_redirect_uri(state: &AppState) -> String {
    format!(
        "{}/verification/v1/seamless/callback",
        state.0.settings.public_url
    )
}

/// A CAMARA failure that decided nothing, as answered to the device (the cause is logged,
/// never sent).
fn camara_error(v: &Verification, e: crate::camara::CamaraError) -> ApiError {
    use crate::camara::CamaraError;
    match e {
        CamaraError::CodeRejected(error) => {
            tracing::warn!(verification.id = %v.id, %error, "the operator refused the authorization code");
            ApiError::new(
                ErrorCode::InvalidRequest,
                "The authorization code was refused by the operator; open targetUri again.",
            )
        }
        CamaraError::NotAuthenticatedByNetwork | CamaraError::Operator(_) => {
            tracing::warn!(verification.id = %v.id, error.cause_chain = ?anyhow::Error::from(e), "the CAMARA operator failed");
            operator_unavailable()
        }
    }
}

fn operator_unavailable() -> ApiError {
    ApiError::new(
        ErrorCode::Unavailable,
        "The mobile operator could not complete the verification; try again later.",
    )
}

/// The seamless verification with this id (of any application: the device holds no
/// credentials, its token or flow state proves it).
async fn seamless_verification(
    state: &AppState,
    id: VerificationId,
) -> Result<Verification, ApiError> {
    state
        .0
        .store
        .verification_by_id(id)
        .await?
        .filter(|v| v.method == Method::Seamless)
        .ok_or_else(ApiError::not_found)
}

/// The seamless provider that serves a number, if any.
pub(crate) fn seamless_provider<'a>(
    state: &'a AppState,
    number: &PhoneNumber,
) -> Option<&'a SeamlessProvider> {
    state.0.settings.seamless.iter().find(|p| {
        p.countries.is_empty()
            || number
                .region()
                .is_some_and(|r| p.countries.iter().any(|c| c == r))
    })
}

fn seamless_unavailable() -> ApiError {
    ApiError::new(
        ErrorCode::Forbidden,
        "Seamless verification not available for given destination.",
    )
}
