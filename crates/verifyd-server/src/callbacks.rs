//! Callbacks to the customer backend: the synchronous Verification Request Event, and the
//! asynchronous result and SMS-delivered events delivered from the store's outbox.
//!
//! Every callback is signed with the application's key and secret using the Sinch callback
//! scheme (`x-timestamp`, MD5 of the exact body bytes sent, the callback URL's path) and sent
//! with `Authorization: application {key}:{signature}` — lower-case scheme, as the .NET
//! validator requires. Bodies are compact JSON, so validators that re-serialise a parsed body
//! compute the same MD5.
//!
//! Callback URLs may not reach loopback, private or link-local addresses unless allowed
//! (server-side request forgery): the HTTP clients resolve names through a guarded resolver
//! that drops disallowed addresses, and literal IPs are checked before sending.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use rand::Rng;
use reqwest::dns::{Name, Resolve, Resolving};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use time::format_description::well_known::{Rfc2822, Rfc3339};
use time::{Duration, OffsetDateTime};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use verifyd_api::model::{
    Identity, Price, RequestEvent, RequestEventResponse, ResultEvent, SmsDeliveredEvent,
};
use verifyd_api::signing::SignedRequest;
use verifyd_core::locale::parse_accept_language;
use verifyd_core::{Method, Money, Verification, VerificationId};
use verifyd_store::{EventKind, OutboxEvent};

use crate::config::CallbackSettings;
use crate::state::{AppState, KnownApp};

/// Which destinations a callback may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AddrPolicy {
    loopback: bool,
    private: bool,
}

impl AddrPolicy {
    fn allows(self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        if ip.is_loopback() {
            return self.loopback || self.private;
        }
        if ip.is_unspecified() || ip.is_multicast() {
            return false;
        }
        let internal = match ip {
            IpAddr::V4(v4) => {
                let [a, b, ..] = v4.octets();
                v4.is_private()
                    || v4.is_link_local()
                    || v4.is_broadcast()
                    || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64.0.0/10
                    || a == 0
            }
            IpAddr::V6(v6) => {
                let first = v6.segments()[0];
                (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                    || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
            }
        };
        !internal || self.private
    }
}

/// A DNS resolver that only returns addresses the policy allows.
struct GuardedResolver(AddrPolicy);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| policy.allows(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!(
                    "callback host {host} resolves only to addresses this application may not call (loopback/private/link-local)"
                )
                .into());
            }
            let iter: Box<dyn Iterator<Item = SocketAddr> + Send> = Box::new(addrs.into_iter());
            Ok(iter)
        })
    }
}

/// Why a callback could not be made or was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    /// The URL is unusable or points where it may not.
    #[error("callback URL refused: {0}")]
    Refused(String),
    /// Network failure or timeout.
    #[error("callback request failed: {0}")]
    Transport(String),
    /// The receiver answered non-2xx.
    #[error("callback answered HTTP {status}")]
    Status {
        /// The status.
        status: u16,
        /// Its Retry-After, if any.
        retry_after: Option<StdDuration>,
    },
}

/// The callback machinery of a server.
pub struct Callbacks {
    strict: reqwest::Client,
    loopback: reqwest::Client,
    any: reqwest::Client,
    /// Wakes the delivery worker when new events were queued.
    pub notify: Notify,
    settings: CallbackSettings,
}

fn client(policy: AddrPolicy) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver(policy)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("verifyd/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(StdDuration::from_secs(30))
        .build()?)
}

impl Callbacks {
    /// Builds the HTTP clients.
    ///
    /// # Errors
    /// If the TLS backend cannot initialise.
    pub fn new(settings: CallbackSettings) -> anyhow::Result<Self> {
        Ok(Self {
            strict: client(AddrPolicy {
                loopback: false,
                private: false,
            })?,
            loopback: client(AddrPolicy {
                loopback: true,
                private: false,
            })?,
            any: client(AddrPolicy {
                loopback: true,
                private: true,
            })?,
            notify: Notify::new(),
            settings,
        })
    }

    /// The settings.
    pub fn settings(&self) -> &CallbackSettings {
        &self.settings
    }

    fn policy_for(&self, app: &KnownApp) -> AddrPolicy {
        AddrPolicy {
            loopback: self.settings.allow_loopback,
            private: app.app.allow_private_callbacks,
        }
    }

    /// POSTs a signed JSON body to the application's callback URL.
    async fn post(
        &self,
        app: &KnownApp,
        body: Vec<u8>,
        timeout: StdDuration,
        now: OffsetDateTime,
    ) -> Result<(u16, HeaderMap, bytes::Bytes), CallbackError> {
        let url_text =
            app.app.callback_url.as_deref().ok_or_else(|| {
                CallbackError::Refused("the application has no callback URL".into())
            })?;
        let url = reqwest::Url::parse(url_text)
            .map_err(|e| CallbackError::Refused(format!("not a URL: {e}")))?;
        let policy = self.policy_for(app);
        if let Some(host) = url.host_str() {
            let literal = host.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = literal.parse::<IpAddr>()
                && !policy.allows(ip)
            {
                return Err(CallbackError::Refused(format!(
                    "{ip} is a loopback/private/link-local address this application may not call"
                )));
            }
        }
        let client = match (policy.private, policy.loopback) {
            (true, _) => &self.any,
            (false, true) => &self.loopback,
            (false, false) => &self.strict,
        };
        let timestamp = now
            .to_offset(time::UtcOffset::UTC)
            .format(&Rfc3339)
            .map_err(|e| CallbackError::Transport(e.to_string()))?;
        let content_type = "application/json";
        let authorization = SignedRequest {
            verb: "POST",
            body: &body,
            content_type,
            timestamp: &timestamp,
            resource: url.path(),
        }
        .authorization("application", &app.app.key, &app.key_bytes);
        let response = client
            .post(url)
            .timeout(timeout)
            .header(CONTENT_TYPE, content_type)
            .header("x-timestamp", timestamp)
            .header(AUTHORIZATION, authorization)
            .body(body)
            .send()
            .await
            .map_err(|e| CallbackError::Transport(describe(&e)))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| CallbackError::Transport(describe(&e)))?;
        Ok((status, headers, bytes))
    }
}

/// A reqwest error with its cause chain, without the URL (which may carry a token).
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Parses `Retry-After` (delta-seconds or an HTTP date).
fn retry_after(headers: &HeaderMap, now: OffsetDateTime) -> Option<StdDuration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(StdDuration::from_secs(secs));
    }
    let at = OffsetDateTime::parse(value, &Rfc2822).ok()?;
    let wait = at - now;
    Some(if wait.is_positive() {
        wait.unsigned_abs()
    } else {
        StdDuration::ZERO
    })
}

fn price(m: &Money) -> Price {
    Price {
        currency_id: m.currency.clone(),
        amount: m.amount,
    }
}

/// What the backend decided about a start.
pub enum Decision {
    /// Proceed, with these overrides.
    Allow(Box<RequestEventResponse>),
    /// Refuse: `Denied by callback`.
    Deny,
    /// No usable answer (timeout, non-2xx, garbage): `Invalid callback`.
    Invalid(String),
}

/// What the request event says about the verification being started.
pub struct RequestContext<'a> {
    /// The id drawn for it.
    pub id: VerificationId,
    /// Method.
    pub method: Method,
    /// E.164 number.
    pub endpoint: &'a str,
    /// Its price.
    pub price: &'a Money,
    /// Caller's reference.
    pub reference: Option<&'a str>,
    /// Caller's custom.
    pub custom: Option<&'a str>,
    /// The `Accept-Language` header.
    pub accept_language: Option<&'a str>,
}

/// Sends the Verification Request Event and waits for the answer.
pub async fn request_event(state: &AppState, app: &KnownApp, ctx: &RequestContext<'_>) -> Decision {
    let callbacks = &state.0.callbacks;
    let event = RequestEvent {
        id: ctx.id.to_string(),
        event: "VerificationRequestEvent".into(),
        method: ctx.method.as_str().into(),
        identity: Identity::number(ctx.endpoint),
        price: Some(price(ctx.price)),
        rate: Some(Price {
            currency_id: ctx.price.currency.clone(),
            amount: 0.0,
        }),
        reference: ctx.reference.map(str::to_string),
        custom: ctx.custom.map(str::to_string),
        accept_language: ctx
            .accept_language
            .map(parse_accept_language)
            .filter(|tags| !tags.is_empty()),
    };
    let body = match serde_json::to_vec(&event) {
        Ok(b) => b,
        Err(e) => return Decision::Invalid(format!("could not encode the event: {e}")),
    };
    let answer = callbacks
        .post(app, body, callbacks.settings.request_timeout, state.now())
        .await;
    let (status, _, bytes) = match answer {
        Ok(a) => a,
        Err(e) => return Decision::Invalid(e.to_string()),
    };
    if !(200..300).contains(&status) {
        return Decision::Invalid(format!("the backend answered HTTP {status}"));
    }
    let parsed: RequestEventResponse = match serde_json::from_slice(&bytes) {
        Ok(p) => p,
        Err(e) => {
            return Decision::Invalid(format!("the answer is not a request-event response: {e}"));
        }
    };
    match parsed
        .action
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("allow") => Decision::Allow(Box::new(parsed)),
        Some("deny") => Decision::Deny,
        Some(other) => Decision::Invalid(format!("unknown action {other:?}")),
        None => Decision::Invalid("the answer has no action".into()),
    }
}

/// The body of an outbox event, built from the verification it is about.
fn event_body(event: &OutboxEvent, v: &Verification) -> serde_json::Result<Vec<u8>> {
    match event.kind {
        EventKind::Result => serde_json::to_vec(&ResultEvent {
            id: v.id.to_string(),
            event: "VerificationResultEvent".into(),
            method: v.method.as_str().into(),
            identity: Identity::number(v.identity.as_str()),
            status: v.status.as_str().into(),
            reason: v.reason.map(|r| r.as_str().into()),
            reference: v.reference.clone(),
            source: v.source.map(|s| s.as_str().into()),
            custom: v.custom.clone(),
        }),
        EventKind::SmsDelivered { successful } => serde_json::to_vec(&SmsDeliveredEvent {
            id: v.id.to_string(),
            event: "VerificationSmsDeliveredEvent".into(),
            method: v.method.as_str().into(),
            identity: Identity::number(v.identity.as_str()),
            sms_result: if successful { "Successful" } else { "Failed" }.into(),
            reference: v.reference.clone(),
            custom: v.custom.clone(),
        }),
    }
}

/// The delay before attempt `attempts + 1`: exponential from the base, capped, with "equal
/// jitter" (a random 50–100 % of it), and never earlier than the receiver's `Retry-After`.
pub fn backoff(
    settings: &CallbackSettings,
    attempts: u32,
    retry_after: Option<StdDuration>,
    jitter: f64,
) -> Duration {
    let exp = 2f64.powi(attempts.saturating_sub(1).min(30) as i32);
    let raw = (settings.retry_base.as_seconds_f64() * exp).min(settings.retry_max.as_seconds_f64());
    let jittered = raw * (0.5 + 0.5 * jitter.clamp(0.0, 1.0));
    let floor = retry_after
        .map(|d| d.as_secs_f64().min(settings.retry_max.as_seconds_f64()))
        .unwrap_or(0.0);
    Duration::seconds_f64(jittered.max(floor))
}

/// Attempts one outbox event and records the outcome.
async fn deliver(state: &AppState, event: OutboxEvent) {
    let store = &state.0.store;
    let settings = state.0.callbacks.settings.clone();
    let outcome: Result<(), (String, Option<StdDuration>, bool)> = async {
        let app = state
            .0
            .apps
            .get(store.as_ref(), &event.app, state.now())
            .await
            .map_err(|e| (format!("store: {e}"), None, false))?
            .ok_or_else(|| ("the application no longer exists".to_string(), None, true))?;
        let v = store
            .verification_by_id(event.verification_id)
            .await
            .map_err(|e| (format!("store: {e}"), None, false))?
            .ok_or_else(|| ("the verification no longer exists".to_string(), None, true))?;
        let body = event_body(&event, &v).map_err(|e| (e.to_string(), None, true))?;
        match state
            .0
            .callbacks
            .post(&app, body, settings.delivery_timeout, state.now())
            .await
        {
            Ok((status, _, _)) if (200..300).contains(&status) => Ok(()),
            Ok((status, headers, _)) => Err((
                format!("HTTP {status}"),
                retry_after(&headers, state.now()),
                false,
            )),
            Err(e @ CallbackError::Refused(_)) => Err((e.to_string(), None, false)),
            Err(e) => Err((e.to_string(), None, false)),
        }
    }
    .await;
    let now = state.now();
    let recorded = match outcome {
        Ok(()) => {
            tracing::info!(event.id = event.id, verification.id = %event.verification_id, kind = event.kind.as_str(), attempts = event.attempts, "callback delivered");
            store.event_delivered(event.id, now).await
        }
        Err((error, retry, permanent)) => {
            if permanent || now - event.retry_from >= settings.max_age {
                tracing::warn!(event.id = event.id, verification.id = %event.verification_id, attempts = event.attempts, %error, "callback dead-lettered");
                store.event_dead(event.id, &error).await
            } else {
                let jitter = state.with_rng(|rng| rng.random::<f64>());
                let next = now + backoff(&settings, event.attempts, retry, jitter);
                tracing::info!(event.id = event.id, verification.id = %event.verification_id, attempts = event.attempts, %error, next_attempt_at = %next, "callback failed; will retry");
                store.event_retry(event.id, next, &error).await
            }
        }
    };
    if let Err(e) = recorded {
        // The lease runs out and the event is attempted again: at least once, never lost.
        tracing::error!(event.id = event.id, error = %e, "could not record a callback outcome");
    }
}

/// Claims every event due now (fairly between applications) and delivers them, waiting for
/// all; returns how many were attempted. Tests drive delivery with this and a manual clock.
pub async fn deliver_due(state: &AppState) -> anyhow::Result<usize> {
    let settings = state.0.callbacks.settings.clone();
    let mut total = 0;
    loop {
        let now = state.now();
        let lease = now + lease_length(&settings);
        let batch = state
            .0
            .store
            .claim_events(now, lease, settings.concurrency, settings.per_application)
            .await?;
        if batch.is_empty() {
            return Ok(total);
        }
        total += batch.len();
        let mut set = JoinSet::new();
        for event in batch {
            let state = state.clone();
            set.spawn(async move { deliver(&state, event).await });
        }
        while set.join_next().await.is_some() {}
    }
}

/// How long a claimed event stays with its claimer: twice the attempt timeout plus a second,
/// so a live delivery always finishes first, and a dead node's events come back soon.
fn lease_length(settings: &CallbackSettings) -> Duration {
    Duration::try_from(settings.delivery_timeout).unwrap_or(Duration::seconds(5)) * 2
        + Duration::seconds(1)
}

/// The delivery worker: keeps up to `concurrency` deliveries in flight, woken by new events
/// or every `poll_interval`.
pub async fn worker_loop(state: AppState) {
    let settings = state.0.callbacks.settings.clone();
    let mut in_flight = JoinSet::new();
    loop {
        let free = settings.concurrency.saturating_sub(in_flight.len());
        if free > 0 {
            let now = state.now();
            match state
                .0
                .store
                .claim_events(
                    now,
                    now + lease_length(&settings),
                    free,
                    settings.per_application,
                )
                .await
            {
                Ok(batch) => {
                    for event in batch {
                        let state = state.clone();
                        in_flight.spawn(async move { deliver(&state, event).await });
                    }
                }
                Err(e) => {
                    tracing::error!(error.cause_chain = ?e, "claiming callback events failed")
                }
            }
        }
        tokio::select! {
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            () = state.0.callbacks.notify.notified() => {}
            () = tokio::time::sleep(settings.poll_interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> CallbackSettings {
        CallbackSettings {
            request_timeout: StdDuration::from_secs(5),
            delivery_timeout: StdDuration::from_secs(5),
            retry_base: Duration::seconds(1),
            retry_max: Duration::seconds(600),
            max_age: Duration::hours(24),
            concurrency: 4,
            per_application: 2,
            poll_interval: StdDuration::from_millis(100),
            allow_loopback: true,
            worker: true,
        }
    }

    #[test]
    fn backoff_doubles_is_capped_jittered_and_respects_retry_after() {
        let s = settings();
        assert_eq!(backoff(&s, 1, None, 1.0), Duration::seconds(1));
        assert_eq!(backoff(&s, 4, None, 1.0), Duration::seconds(8));
        assert_eq!(backoff(&s, 4, None, 0.0), Duration::seconds(4));
        assert_eq!(backoff(&s, 30, None, 1.0), Duration::seconds(600));
        assert_eq!(
            backoff(&s, 1, Some(StdDuration::from_secs(90)), 0.0),
            Duration::seconds(90)
        );
        assert_eq!(
            backoff(&s, 1, Some(StdDuration::from_secs(99_999)), 0.0),
            Duration::seconds(600)
        );
    }

    #[test]
    fn the_address_policy_blocks_internal_ranges() {
        let strict = AddrPolicy {
            loopback: false,
            private: false,
        };
        let dev = AddrPolicy {
            loopback: true,
            private: false,
        };
        let open = AddrPolicy {
            loopback: true,
            private: true,
        };
        for ip in [
            "127.0.0.1",
            "::1",
            "10.1.2.3",
            "192.168.1.1",
            "172.16.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "fc00::1",
            "fe80::1",
            "0.0.0.0",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!strict.allows(ip.parse().unwrap()), "{ip}");
            assert!(open.allows(ip.parse().unwrap()) || ip == "0.0.0.0", "{ip}");
        }
        assert!(dev.allows("127.0.0.1".parse().unwrap()));
        assert!(!dev.allows("10.0.0.1".parse().unwrap()));
        assert!(!dev.allows("169.254.169.254".parse().unwrap()));
        assert!(strict.allows("93.184.216.34".parse().unwrap()));
        assert!(strict.allows("2606:2800:220:1::1".parse().unwrap()));
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = OffsetDateTime::UNIX_EPOCH + Duration::days(20000);
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(StdDuration::from_secs(7)));
        let later = (now + Duration::seconds(30)).format(&Rfc2822).unwrap();
        h.insert(RETRY_AFTER, later.parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(StdDuration::from_secs(30)));
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h, now), None);
    }
}
