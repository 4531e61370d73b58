//! Delivery: routes, sealed delivery jobs, dispatch with failover, the job worker, and
//! delivery receipts.
//!
//! A start writes its verification and a **delivery job** in one transaction (the job holds
//! the message, code included, sealed with ChaCha20-Poly1305 under a server key, and is
//! erased once finished). The node that answered the start dispatches it at once; if that
//! node dies first, any node's worker picks the job up when its lease ends. A retry re-sends
//! the same sealed message, so a user never receives two different codes for one
//! verification.
//!
//! Routes are tried in order of preference for the message's method and destination: a
//! permanent submit error or a timeout moves to the next route, a retryable error retries
//! the same route with back-off (then moves on), and a WhatsApp route that cannot reach the
//! recipient falls back to the SMS routes when `whatsapp_fallback_to_sms` is on. A send
//! whose outcome is unknown (handed over, no answer) is never repeated. Every attempt is
//! recorded on the verification.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use serde::{Deserialize, Serialize};
use time::Duration;
use tokio::task::JoinSet;
use verifyd_channels::{Channel, OutboundMessage, Payload, Receipt, ReceiptStatus, SendError};
use verifyd_core::{CallInfo, CallResult, Method, PhoneNumber, Reason, Status, Verification};
use verifyd_store::{DeliveryAttempt, DeliveryJob, EventKind};

use crate::error::ApiError;
use crate::state::AppState;

/// A route: which messages it carries, over which channel, with which sender identity.
pub struct Route {
    /// Its name (recorded on attempts).
    pub name: String,
    /// Methods it carries (empty: all).
    pub methods: Vec<Method>,
    /// E.164 prefixes it serves (empty: all).
    pub prefixes: Vec<String>,
    /// ISO regions it serves (empty: all).
    pub countries: Vec<String>,
    /// The channel.
    pub channel: Arc<dyn Channel>,
    /// Sender identity for this route.
    pub sender: Option<String>,
}

impl Route {
    fn matches(&self, method: Method, number: &PhoneNumber) -> bool {
        (self.methods.is_empty() || self.methods.contains(&method))
            && (self.prefixes.is_empty()
                || self
                    .prefixes
                    .iter()
                    .any(|p| number.as_str().starts_with(p.as_str())))
            && (self.countries.is_empty()
                || number
                    .region()
                    .is_some_and(|r| self.countries.iter().any(|c| c == r)))
    }
}

/// Delivery settings.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// Timeout of one send on one route.
    pub timeout: StdDuration,
    /// Retryable failures on one route before failing over.
    pub max_retries: u32,
    /// Back-off base for retryable failures.
    pub retry_base: Duration,
    /// Lease of a job being dispatched.
    pub lease: Duration,
    /// How long a start waits for its inline dispatch before answering.
    pub inline_wait: StdDuration,
    /// WhatsApp → SMS when the recipient has no WhatsApp.
    pub whatsapp_fallback_to_sms: bool,
    /// Run the job worker.
    pub worker: bool,
    /// Worker poll period.
    pub poll_interval: StdDuration,
}

/// The message of a job, as sealed.
#[derive(Serialize, Deserialize)]
struct Sealed {
    method: String,
    to: String,
    payload: SealedPayload,
    /// The SMS version of a WhatsApp message, for the fallback.
    sms_fallback: Option<SealedPayload>,
}

#[derive(Serialize, Deserialize, Clone)]
enum SealedPayload {
    Text {
        body: String,
        code: String,
        locale: String,
    },
    FlashCall {
        cli: String,
        dial_timeout: u32,
    },
    Callout {
        code: String,
        locale: String,
        script: String,
    },
    Seamless {
        target_uri: String,
    },
}

impl From<&Payload> for SealedPayload {
    fn from(p: &Payload) -> Self {
        match p.clone() {
            Payload::Text { body, code, locale } => Self::Text { body, code, locale },
            Payload::FlashCall { cli, dial_timeout } => Self::FlashCall { cli, dial_timeout },
            Payload::Callout {
                code,
                locale,
                script,
            } => Self::Callout {
                code,
                locale,
                script,
            },
            Payload::Seamless { target_uri } => Self::Seamless { target_uri },
        }
    }
}

impl From<SealedPayload> for Payload {
    fn from(p: SealedPayload) -> Self {
        match p {
            SealedPayload::Text { body, code, locale } => Self::Text { body, code, locale },
            SealedPayload::FlashCall { cli, dial_timeout } => Self::FlashCall { cli, dial_timeout },
            SealedPayload::Callout {
                code,
                locale,
                script,
            } => Self::Callout {
                code,
                locale,
                script,
            },
            SealedPayload::Seamless { target_uri } => Self::Seamless { target_uri },
        }
    }
}

/// Seals and opens job payloads.
pub struct Sealer {
    cipher: ChaCha20Poly1305,
}

/// ChaCha20-Poly1305's nonce and tag lengths.
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

impl Sealer {
    /// A sealer with a 32-byte key.
    pub fn new(key: [u8; 32]) -> Self {
        Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
        }
    }

    /// `nonce || ciphertext || tag`. The nonce is drawn by the caller (under the server
    /// RNG's lock, which the encryption itself need not hold).
    fn seal(&self, plain: &[u8], nonce: [u8; NONCE_LEN]) -> anyhow::Result<Vec<u8>> {
        let mut sealed = Vec::with_capacity(NONCE_LEN + plain.len() + TAG_LEN);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(plain);
        let tag = self
            .cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), b"", &mut sealed[NONCE_LEN..])
            .map_err(|_| anyhow::anyhow!("sealing a job payload failed"))?;
        sealed.extend_from_slice(&tag);
        Ok(sealed)
    }

    fn open(&self, sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            anyhow::bail!("sealed job payload is too short");
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), body)
            .map_err(|_| anyhow::anyhow!("a job payload does not open with this server's key"))
    }
}

/// Routes, settings and the sealer.
pub struct Dispatcher {
    routes: Vec<Route>,
    settings: DeliverySettings,
    sealer: Sealer,
}

/// One step of a job's plan: a route, and whether it carries the SMS fallback.
#[derive(Clone, Copy)]
struct Step {
    route: usize,
    fallback: bool,
}

impl Dispatcher {
    /// Builds a dispatcher.
    pub fn new(routes: Vec<Route>, settings: DeliverySettings, sealer: Sealer) -> Self {
        Self {
            routes,
            settings,
            sealer,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &DeliverySettings {
        &self.settings
    }

    /// The routes, in order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The ordered routes for a message: its own method's, then (WhatsApp with fallback on)
    /// the SMS routes.
    fn plan(&self, method: Method, number: &PhoneNumber) -> Vec<Step> {
        let mut steps: Vec<Step> = self
            .routes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.matches(method, number))
            .map(|(route, _)| Step {
                route,
                fallback: false,
            })
            .collect();
        if method == Method::Whatsapp && self.settings.whatsapp_fallback_to_sms {
            steps.extend(
                self.routes
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.matches(Method::Sms, number))
                    .map(|(route, _)| Step {
                        route,
                        fallback: true,
                    }),
            );
        }
        steps
    }

    /// Whether any route carries `method` to `number` (else the start answers 42201).
    pub fn has_route(&self, method: Method, number: &PhoneNumber) -> bool {
        self.routes.iter().any(|r| r.matches(method, number))
    }
}

/// Seals a start's message (and its SMS fallback text) for the job queue.
pub fn seal(
    state: &AppState,
    v: &Verification,
    payload: &Payload,
    sms_fallback: Option<&Payload>,
) -> Result<(Vec<u8>, Unsealed), ApiError> {
    let sealed = Sealed {
        method: v.method.as_str().into(),
        to: v.identity.as_str().into(),
        payload: payload.into(),
        sms_fallback: sms_fallback.map(SealedPayload::from),
    };
    let plain = serde_json::to_vec(&sealed).map_err(ApiError::internal)?;
    let nonce = state.with_rng(|rng| {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        nonce
    });
    let bytes = state
        .0
        .dispatcher
        .sealer
        .seal(&plain, nonce)
        .map_err(ApiError::internal)?;
    Ok((bytes, Unsealed(sealed)))
}

/// A job's message as it was sealed, for the node that queued it to send without opening
/// the sealed copy again.
pub struct Unsealed(Sealed);

fn backoff(
    settings: &DeliverySettings,
    retries: u32,
    retry_after: Option<StdDuration>,
) -> Duration {
    let exp = settings.retry_base * 2f64.powi(retries.min(12) as i32);
    let capped = exp.min(Duration::minutes(5));
    let floor = retry_after
        .and_then(|d| Duration::try_from(d).ok())
        .unwrap_or(Duration::ZERO);
    capped.max(floor)
}

/// Dispatches one job from its current route; records attempts and the outcome.
pub async fn dispatch(state: &AppState, job: DeliveryJob) {
    run(state, job, None, None).await;
}

/// Runs the job a start just queued, for the verification it just stored (no need to read
/// it back). `handed_over` fires once a channel accepted a message whose sending needs no
/// further change to the verification; the job's completion is then written while the
/// start is answered. (Should the node die before that write, the job runs again after its
/// lease: at least once, the same sealed message.) Otherwise it fires when the job ends.
pub async fn dispatch_started(
    state: &AppState,
    job: DeliveryJob,
    verification: Verification,
    message: Unsealed,
    handed_over: tokio::sync::oneshot::Sender<()>,
) {
    run(state, job, Some((verification, message)), Some(handed_over)).await;
}

async fn run(
    state: &AppState,
    job: DeliveryJob,
    started: Option<(Verification, Unsealed)>,
    handed_over: Option<tokio::sync::oneshot::Sender<()>>,
) {
    let id = job.id;
    if let Err(e) = dispatch_inner(state, job, started, handed_over).await {
        // The lease runs out and the job is tried again.
        tracing::error!(job.id = id, error.cause_chain = ?e.internal, message = %e.message, "delivery job failed to run");
    }
}

async fn dispatch_inner(
    state: &AppState,
    job: DeliveryJob,
    started: Option<(Verification, Unsealed)>,
    mut handed_over: Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<(), ApiError> {
    let store = &state.0.store;
    let d = &state.0.dispatcher;
    let (v, unsealed) = match started {
        Some((v, Unsealed(message))) => (Some(v), Some(message)),
        None => (store.verification_by_id(job.verification_id).await?, None),
    };
    let Some(mut v) = v else {
        store.finish_job(job.id).await?;
        return Ok(());
    };
    if v.status != Status::Pending || !v.is_live(state.now()) {
        // Superseded, expired or finished meanwhile: never send a stale code.
        store.finish_job(job.id).await?;
        return Ok(());
    }
    let sealed: Sealed = match unsealed {
        Some(message) => message,
        None => serde_json::from_slice(&d.sealer.open(&job.payload).map_err(ApiError::internal)?)
            .map_err(ApiError::internal)?,
    };
    let steps = d.plan(v.method, &v.identity);
    let has_callback = state
        .0
        .apps
        .get(store.as_ref(), &v.app, state.now())
        .await?
        .is_some_and(|a| a.app.callback_url.is_some());
    let mut index = job.route_index as usize;
    let mut skip_whatsapp = false;
    let mut last_call = None;
    while let Some(step) = steps.get(index).copied() {
        if skip_whatsapp && !step.fallback {
            index += 1;
            continue;
        }
        let route = &d.routes[step.route];
        let payload = if step.fallback {
            match &sealed.sms_fallback {
                Some(p) => p.clone(),
                None => {
                    index += 1;
                    continue;
                }
            }
        } else {
            sealed.payload.clone()
        };
        let message = OutboundMessage {
            verification_id: v.id.to_string(),
            app: v.app.clone(),
            method: if step.fallback { Method::Sms } else { v.method },
            to: v.identity.clone(),
            payload: payload.into(),
            sender: route.sender.clone(),
            created_at: state.now(),
        };
        let attempt = |outcome: String, message_id: Option<String>| DeliveryAttempt {
            verification_id: v.id,
            route: route.name.clone(),
            channel: route.channel.name().to_string(),
            message_id,
            outcome,
            at: state.now(),
        };
        let sent = tokio::time::timeout(d.settings.timeout, route.channel.send(&message)).await;
        match sent {
            Ok(Ok(delivery)) => {
                crate::metrics::delivery(route.channel.name(), "sent");
                let sms_delivered =
                    delivery.delivered && message.method == Method::Sms && has_callback;
                if delivery.call.is_none()
                    && !sms_delivered
                    && let Some(tx) = handed_over.take()
                {
                    let _ = tx.send(());
                }
                // Recorded (and the job finished) in one write, before anything else: a
                // delivery report can only be matched once the message id is stored.
                store
                    .complete_job(
                        job.id,
                        &attempt("submitted".into(), delivery.message_id.clone()),
                    )
                    .await?;
                if delivery.call.is_some() || sms_delivered {
                    let events: &[EventKind] = if sms_delivered {
                        &[EventKind::SmsDelivered { successful: true }]
                    } else {
                        &[]
                    };
                    crate::service::update_verification_with(state, &mut v, events, |v, _| {
                        if let Some(call) = &delivery.call {
                            v.record_call(call.clone());
                        }
                        true
                    })
                    .await?;
                }
                tracing::debug!(verification.id = %v.id, route = %route.name, "delivered to channel");
                return Ok(());
            }
            Ok(Err(SendError::Retryable {
                reason,
                retry_after,
            })) => {
                crate::metrics::delivery(route.channel.name(), "retry");
                store
                    .record_attempt(&attempt(format!("retry: {reason}"), None))
                    .await?;
                let retries = store
                    .attempts(v.id)
                    .await?
                    .iter()
                    .filter(|a| a.route == route.name && a.outcome.starts_with("retry"))
                    .count() as u32;
                if retries <= d.settings.max_retries {
                    let next = state.now() + backoff(&d.settings, retries, retry_after);
                    tracing::info!(verification.id = %v.id, route = %route.name, %reason, retries, "delivery will be retried");
                    store.retry_job(job.id, index as u32, next).await?;
                    return Ok(());
                }
                tracing::warn!(verification.id = %v.id, route = %route.name, %reason, "route keeps failing; failing over");
                index += 1;
            }
            Ok(Err(SendError::OutcomeUnknown { reason })) => {
                // The provider may have the message: resending could deliver it twice, so
                // the attempt is recorded and the verification stays as it is (the user can
                // ask for a new code).
                crate::metrics::delivery(route.channel.name(), "unknown");
                store
                    .record_attempt(&attempt(format!("outcome unknown: {reason}"), None))
                    .await?;
                tracing::warn!(verification.id = %v.id, route = %route.name, %reason, "delivery outcome unknown; not resent");
                store.finish_job(job.id).await?;
                return Ok(());
            }
            Ok(Err(SendError::Permanent { reason })) => {
                if v.method.is_call() {
                    // Voice channels say how the call ended: busy, no answer, failed.
                    last_call = Some(if reason.starts_with("busy") {
                        CallResult::Busy
                    } else if reason.starts_with("no answer") {
                        CallResult::NoAnswer
                    } else {
                        CallResult::Failed
                    });
                }
                crate::metrics::delivery(route.channel.name(), "failed");
                store
                    .record_attempt(&attempt(format!("failed: {reason}"), None))
                    .await?;
                tracing::warn!(verification.id = %v.id, route = %route.name, %reason, "route refused the message; failing over");
                index += 1;
            }
            Ok(Err(SendError::Unreachable { reason })) => {
                crate::metrics::delivery(route.channel.name(), "unreachable");
                store
                    .record_attempt(&attempt(format!("unreachable: {reason}"), None))
                    .await?;
                tracing::info!(verification.id = %v.id, route = %route.name, %reason, "recipient unreachable on this channel");
                if v.method == Method::Whatsapp && !step.fallback {
                    skip_whatsapp = true;
                }
                index += 1;
            }
            Err(_elapsed) => {
                crate::metrics::delivery(route.channel.name(), "timeout");
                store
                    .record_attempt(&attempt(
                        format!("timeout after {} ms", d.settings.timeout.as_millis()),
                        None,
                    ))
                    .await?;
                index += 1;
            }
        }
        // Persist the failover point so a crash does not repeat a failed route.
        store
            .retry_job(job.id, index as u32, state.now() + d.settings.lease)
            .await?;
    }
    // Every route failed.
    let reason = if v.method == Method::Sms {
        Reason::SmsDeliveryFailure
    } else {
        Reason::NetworkErrorOrNumberUnreachable
    };
    tracing::warn!(verification.id = %v.id, "no route delivered the message");
    crate::service::update_verification_with(state, &mut v, &[EventKind::Result], |v, now| {
        if let Some(result) = last_call {
            v.record_call(CallInfo {
                result: Some(result),
                complete: true,
                billable_duration: 0,
                termination_price: None,
            });
        }
        v.fail_delivery(reason, now)
    })
    .await?;
    crate::metrics::finished(&v);
    store.finish_job(job.id).await?;
    Ok(())
}

/// Runs every delivery job due now and waits for them; returns how many ran.
pub async fn run_due_jobs(state: &AppState) -> anyhow::Result<usize> {
    let mut total = 0;
    loop {
        let now = state.now();
        let jobs = state
            .0
            .store
            .claim_jobs(now, now + state.0.dispatcher.settings.lease, 32)
            .await?;
        if jobs.is_empty() {
            return Ok(total);
        }
        total += jobs.len();
        let mut set = JoinSet::new();
        for job in jobs {
            let state = state.clone();
            set.spawn(async move { dispatch(&state, job).await });
        }
        while set.join_next().await.is_some() {}
    }
}

/// The job worker: picks up jobs whose lease ran out (a node died mid-dispatch) and retries.
pub async fn worker_loop(state: AppState) {
    let poll = state.0.dispatcher.settings.poll_interval;
    loop {
        if let Err(e) = run_due_jobs(&state).await {
            tracing::error!(error.cause_chain = ?e, "delivery worker failed");
        }
        tokio::time::sleep(poll).await;
    }
}

/// When a delivery report for a message not (yet) recorded is looked at again, ms apart.
const RECEIPT_RECHECK_MS: [u64; 4] = [20, 200, 1000, 4000];

/// Applies a delivery report: records it, and for SMS announces the delivery and marks a
/// failed delivery `ERROR / SMS delivery failure` while the verification is still PENDING.
pub async fn handle_receipt(state: &AppState, receipt: Receipt) -> Result<(), ApiError> {
    let store = &state.0.store;
    let Some(attempt) = store
        .attempt_by_message(&receipt.channel, &receipt.message_id)
        .await?
    else {
        // A fast provider can report before the node that sent the message has recorded
        // its id (that write follows the provider's acceptance): look again a little later.
        let state = state.clone();
        tokio::spawn(async move {
            for delay_ms in RECEIPT_RECHECK_MS {
                tokio::time::sleep(StdDuration::from_millis(delay_ms)).await;
                match state
                    .0
                    .store
                    .attempt_by_message(&receipt.channel, &receipt.message_id)
                    .await
                {
                    Ok(Some(attempt)) => {
                        if let Err(e) = apply_receipt(&state, attempt, receipt).await {
                            tracing::error!(message = %e.message, "could not apply a delivery report");
                        }
                        return;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "could not look up a delivery report's message");
                        return;
                    }
                }
            }
            tracing::info!(channel = %receipt.channel, "delivery report for an unknown message");
        });
        return Ok(());
    };
    apply_receipt(state, attempt, receipt).await
}

/// Applies a delivery report about `attempt`.
async fn apply_receipt(
    state: &AppState,
    attempt: DeliveryAttempt,
    receipt: Receipt,
) -> Result<(), ApiError> {
    let store = &state.0.store;
    let Some(mut v) = store.verification_by_id(attempt.verification_id).await? else {
        return Ok(());
    };
    let delivered = receipt.status == ReceiptStatus::Delivered;
    store
        .record_attempt(&DeliveryAttempt {
            outcome: if delivered {
                "delivered".into()
            } else {
                format!(
                    "undelivered: {}",
                    receipt.detail.clone().unwrap_or_default()
                )
            },
            at: state.now(),
            ..attempt
        })
        .await?;
    crate::metrics::delivery(
        &receipt.channel,
        if delivered {
            "delivered"
        } else {
            "undelivered"
        },
    );
    if !matches!(v.method, Method::Sms | Method::Whatsapp) {
        return Ok(());
    }
    let announce = v.method == Method::Sms;
    if delivered {
        if announce {
            crate::service::update_verification_with(
                state,
                &mut v,
                &[EventKind::SmsDelivered { successful: true }],
                |_, _| true,
            )
            .await?;
        }
    } else {
        let mut events = Vec::new();
        if announce {
            events.push(EventKind::SmsDelivered { successful: false });
        }
        let pending = v.status == Status::Pending;
        if pending {
            events.push(EventKind::Result);
        }
        let reason = if v.method == Method::Sms {
            Reason::SmsDeliveryFailure
        } else {
            Reason::NetworkErrorOrNumberUnreachable
        };
        crate::service::update_verification_with(state, &mut v, &events, |v, now| {
            v.fail_delivery(reason, now) || announce
        })
        .await?;
        if pending {
            crate::metrics::finished(&v);
        }
    }
    tracing::info!(verification.id = %v.id, channel = %receipt.channel, delivered, "delivery report");
    Ok(())
}

/// Consumes the receipts channels push.
pub async fn receipts_loop(state: AppState, mut rx: tokio::sync::mpsc::UnboundedReceiver<Receipt>) {
    while let Some(receipt) = rx.recv().await {
        if let Err(e) = handle_receipt(&state, receipt).await {
            tracing::error!(message = %e.message, "could not apply a delivery report");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_payload_opens_and_keeps_the_stored_layout() {
        let sealer = Sealer::new([7; 32]);
        let nonce = [3; NONCE_LEN];
        let sealed = sealer.seal(b"the message", nonce).expect("seal");
        assert_eq!(sealer.open(&sealed).expect("open"), b"the message");
        // Jobs sealed before (nonce, then `Aead::encrypt`'s ciphertext and tag) still open.
        let before = sealer
            .cipher
            .encrypt(Nonce::from_slice(&nonce), b"the message".as_slice())
            .expect("encrypt");
        assert_eq!(sealed, [nonce.as_slice(), &before].concat());
        let mut tampered = sealed.clone();
        tampered[NONCE_LEN] ^= 1;
        assert!(sealer.open(&tampered).is_err());
        assert!(Sealer::new([8; 32]).open(&sealed).is_err());
    }
}
