//! The storage seam of verifyd.
//!
//! The server talks to storage only through [`Store`]; each backend (SQLite today,
//! PostgreSQL next) is its own crate and keeps its SQL, migrations and row types private.
//! Every backend must pass the same [`conformance`] suite (feature `conformance`), which
//! pins the semantics that matter for correctness: one PENDING verification per number and
//! method, unique references per application, optimistic concurrency on updates, and
//! application isolation.
//!
//! Methods are named by intention (`insert_verification`, `expire_due`), not CRUD.

#[cfg(feature = "conformance")]
pub mod conformance;

use async_trait::async_trait;
use time::OffsetDateTime;
use verifyd_core::{Method, Verification, VerificationId};

/// Which authentication schemes an application accepts at minimum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MinAuth {
    /// Only application-signed requests.
    Signed,
    /// Signed and Basic (the default).
    #[default]
    Basic,
    /// Signed, Basic and Public (key only; requires a callback URL).
    Public,
}

impl MinAuth {
    /// The config/database value.
    pub fn as_str(self) -> &'static str {
        match self {
            MinAuth::Signed => "signed",
            MinAuth::Basic => "basic",
            MinAuth::Public => "public",
        }
    }

    /// Parses the config/database value.
    pub fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_lowercase().as_str() {
            "signed" => Some(MinAuth::Signed),
            "basic" => Some(MinAuth::Basic),
            "public" => Some(MinAuth::Public),
            _ => None,
        }
    }
}

/// A tenant: its credentials and callback settings.
#[derive(Clone, PartialEq, Eq)]
pub struct Application {
    /// The application key (public identifier, used in `Authorization`).
    pub key: String,
    /// A human name.
    pub name: String,
    /// The secret, canonical base64 (it is the HMAC key once decoded).
    pub secret: String,
    /// Where callbacks go.
    pub callback_url: Option<String>,
    /// Weakest accepted auth scheme.
    pub min_auth: MinAuth,
    /// Whether the callback URL may resolve to private, loopback or link-local addresses
    /// (refused by default to prevent server-side request forgery).
    pub allow_private_callbacks: bool,
    /// When the Verification Request Event cannot be answered (timeout, error, garbage):
    /// `true` proceeds as if allowed, `false` (the default) denies.
    pub callback_fail_open: bool,
    /// When it was created.
    pub created_at: OffsetDateTime,
}

impl std::fmt::Debug for Application {
    /// Redacts the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("key", &self.key)
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .field("callback_url", &self.callback_url)
            .field("min_auth", &self.min_auth)
            .field("allow_private_callbacks", &self.allow_private_callbacks)
            .field("callback_fail_open", &self.callback_fail_open)
            .finish()
    }
}

/// What an outbox event announces. The event body is built when it is delivered, from the
/// verification (whose final state never changes) and this kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// `VerificationResultEvent`: the verification reached a final state.
    Result,
    /// `VerificationSmsDeliveredEvent`: a delivery receipt arrived.
    SmsDelivered {
        /// `Successful` (true) or `Failed`.
        successful: bool,
    },
}

impl EventKind {
    /// The stored form (`result`, `sms_delivered:ok`, `sms_delivered:failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Result => "result",
            EventKind::SmsDelivered { successful: true } => "sms_delivered:ok",
            EventKind::SmsDelivered { successful: false } => "sms_delivered:failed",
        }
    }

    /// Parses the stored form.
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "result" => EventKind::Result,
            "sms_delivered:ok" => EventKind::SmsDelivered { successful: true },
            "sms_delivered:failed" => EventKind::SmsDelivered { successful: false },
            _ => return None,
        })
    }
}

/// Where an outbox event is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventState {
    /// Waiting for (re)delivery.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Given up after the retry window; kept for the operator to inspect and redeliver.
    Dead,
}

impl EventState {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            EventState::Pending => "pending",
            EventState::Delivered => "delivered",
            EventState::Dead => "dead",
        }
    }

    /// Parses the stored form.
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "pending" => EventState::Pending,
            "delivered" => EventState::Delivered,
            "dead" => EventState::Dead,
            _ => return None,
        })
    }
}

/// A callback event in the transactional outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    /// Outbox id.
    pub id: i64,
    /// The application whose callback URL receives it.
    pub app: String,
    /// The verification it is about.
    pub verification_id: VerificationId,
    /// What it announces.
    pub kind: EventKind,
    /// Where it is.
    pub state: EventState,
    /// Delivery attempts started so far.
    pub attempts: u32,
    /// When it was queued.
    pub created_at: OffsetDateTime,
    /// Start of the current retry window (reset by a manual redelivery); the worker gives up
    /// once the window exceeds the configured age.
    pub retry_from: OffsetDateTime,
    /// When it may be attempted next (also the lease end of a claimed event).
    pub next_attempt_at: OffsetDateTime,
    /// What went wrong last.
    pub last_error: Option<String>,
}

/// One counter update: add `amount` (0 to only read) to the bucket of `key` containing the
/// current time, and read the sum of the buckets inside the `window` ending now.
///
/// Buckets are aligned to multiples of `bucket` since the Unix epoch, so the window is
/// "sliding" with a granularity of one bucket (e.g. a day in 24 one-hour buckets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterOp {
    /// The counter (`starts:app:+4670…`).
    pub key: String,
    /// What to add.
    pub amount: i64,
    /// How far back the sum reaches.
    pub window: time::Duration,
    /// Bucket width (the window's granularity).
    pub bucket: time::Duration,
}

/// A counter bump with an optional ceiling: the guarded write is refused when the windowed
/// sum after the bump exceeds `max`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitedCounter {
    /// The bump (amount 0 only checks).
    pub op: CounterOp,
    /// The most the sum may reach; `None`: only counted.
    pub max: Option<i64>,
}

/// Checks and counts that a write depends on, run in the write's own transaction: first
/// the number's recent starts, then each counter in order. The first that refuses rolls
/// everything back (nothing is counted, nothing is written).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guard {
    /// Limits on a number's recent starts, checked first.
    pub recent: Option<RecentStarts>,
    /// Counters, bumped and checked in order.
    pub counters: Vec<LimitedCounter>,
}

/// Limits on how often one number is started, counted from the verifications the store
/// already holds for it (every method, every status but DENIED: a denied start never
/// reached the number) rather than from counter rows, so a start writes nothing per number
/// besides its own verification. The write it guards is counted too: an insert of a
/// verification for this number is one more start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentStarts {
    /// The application.
    pub app: String,
    /// The number (E.164).
    pub endpoint: String,
    /// The previous start must be at least this long ago (zero: no minimum). A refusal is
    /// [`Refusal::Gate`].
    pub min_interval: time::Duration,
    /// `(window, max)`: at most `max` starts, this one included, in the last `window`. A
    /// refusal is [`Refusal::Recent`] with the index into this list.
    pub limits: Vec<(time::Duration, i64)>,
}

impl RecentStarts {
    /// The longest time back the check looks.
    #[must_use]
    pub fn horizon(&self) -> time::Duration {
        self.limits
            .iter()
            .map(|(window, _)| *window)
            .fold(self.min_interval, time::Duration::max)
    }

    /// Checks a start at `now` against the creation times of the number's verifications
    /// younger than [`Self::horizon`].
    #[must_use]
    pub fn check(&self, created: &[OffsetDateTime], now: OffsetDateTime) -> Option<Refusal> {
        if self.min_interval > time::Duration::ZERO
            && let Some(last) = created.iter().max()
            && *last > now - self.min_interval
        {
            return Some(Refusal::Gate {
                wait: *last + self.min_interval - now,
            });
        }
        self.limits
            .iter()
            .enumerate()
            .find_map(|(index, (window, max))| {
                let count = created.iter().filter(|at| **at > now - *window).count() as i64 + 1;
                (count > *max).then_some(Refusal::Recent { index, count })
            })
    }
}

/// A delivery job to queue with an insert, leased to the caller until `lease_until`.
#[derive(Debug, Clone, Copy)]
pub struct NewJob<'a> {
    /// The sealed message.
    pub payload: &'a [u8],
    /// Until when the caller holds it (it delivers at once; anyone may after).
    pub lease_until: OffsetDateTime,
}

/// The write a [`Guard`] protects.
#[derive(Debug, Clone, Copy)]
pub enum GuardedWrite<'a> {
    /// Nothing but the guard's own checks and counters.
    Nothing,
    /// [`Store::insert_verification`] (with a delivery job when `job` is set).
    Insert {
        /// The new verification.
        verification: &'a Verification,
        /// Events about it.
        events: &'a [EventKind],
        /// Its delivery job.
        job: Option<NewJob<'a>>,
    },
    /// Writes back a verification read earlier, if nobody changed it since (its `version`
    /// is compared; the caller bumps it once the write passed), and queues `events`.
    Update {
        /// The changed verification (with the version it was read at).
        verification: &'a Verification,
        /// Events about it.
        events: &'a [EventKind],
    },
}

/// Why a guard refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The number's previous start is too recent ([`RecentStarts::min_interval`]) for this
    /// long.
    Gate {
        /// Until it is not.
        wait: time::Duration,
    },
    /// `counters[index]` would exceed its `max`: its sum would have been `sum`.
    Limit {
        /// Which counter.
        index: usize,
        /// The sum with this bump.
        sum: i64,
    },
    /// `recent.limits[index]` would be exceeded: this would be start number `count` in its
    /// window.
    Recent {
        /// Which limit.
        index: usize,
        /// Starts in the window with this one.
        count: i64,
    },
}

/// What a guarded write did.
#[derive(Debug, Clone, PartialEq)]
pub enum GuardOutcome {
    /// Everything was written.
    Passed {
        /// Each counter's windowed sum after its bump, in order.
        sums: Vec<i64>,
        /// Insert: the verifications it superseded (ABORTED), as they are now.
        superseded: Vec<Verification>,
        /// Insert with a job: the job's id.
        job_id: Option<i64>,
    },
    /// Nothing was written.
    Refused(Refusal),
}

/// A temporary block of a key (an SMS-pumping prefix, say), visible to operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// What is blocked (`pump:app:+4470`).
    pub key: String,
    /// Until when.
    pub until: OffsetDateTime,
    /// Why, for the operator.
    pub reason: String,
    /// When it was set.
    pub created_at: OffsetDateTime,
}

/// A message waiting to be delivered: the delivery job queued with the start, in the same
/// transaction, so an answered start is always sent (or its failure recorded), and a retry
/// re-sends the same message instead of drawing a new code.
#[derive(Clone, PartialEq, Eq)]
pub struct DeliveryJob {
    /// Queue id.
    pub id: i64,
    /// The verification it delivers.
    pub verification_id: VerificationId,
    /// Its application.
    pub app: String,
    /// The message, sealed by the server (it contains the code); opaque to the store and
    /// erased once the job is finished.
    pub payload: Vec<u8>,
    /// Index of the route to use next (failover moves it on).
    pub route_index: u32,
    /// Attempts started so far.
    pub attempts: u32,
    /// When it may run (the lease end while a node works on it).
    pub next_attempt_at: OffsetDateTime,
    /// When it was queued.
    pub created_at: OffsetDateTime,
}

impl std::fmt::Debug for DeliveryJob {
    /// Leaves out the sealed payload.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryJob")
            .field("id", &self.id)
            .field("verification_id", &self.verification_id)
            .field("route_index", &self.route_index)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// One delivery attempt on a route, recorded on the verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryAttempt {
    /// The verification.
    pub verification_id: VerificationId,
    /// The route's name.
    pub route: String,
    /// The channel's name.
    pub channel: String,
    /// The provider's message id, when the submit was accepted.
    pub message_id: Option<String>,
    /// `submitted`, `delivered`, `failed: …`, `unreachable: …`, `retry: …`.
    pub outcome: String,
    /// When.
    pub at: OffsetDateTime,
}

/// What can go wrong in a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was violated. `constraint` names it: `reference` (the reference is
    /// taken), `version` (the row changed since it was read), `application` (key exists).
    #[error("conflict on {constraint}")]
    Conflict {
        /// Which rule.
        constraint: &'static str,
    },
    /// Anything else: I/O, corruption, a closed pool.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Shorthand.
pub type StoreResult<T> = Result<T, StoreError>;

/// The storage seam.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Inserts a new application.
    ///
    /// # Errors
    /// `Conflict { constraint: "application" }` if the key exists.
    async fn insert_application(&self, app: &Application) -> StoreResult<()>;

    /// Inserts or replaces the application with this key (applications from the config file).
    async fn upsert_application(&self, app: &Application) -> StoreResult<()>;

    /// The application with this key.
    async fn application(&self, key: &str) -> StoreResult<Option<Application>>;

    /// Every application, oldest first.
    async fn list_applications(&self) -> StoreResult<Vec<Application>>;

    /// The server-wide secret named `name`; stores `fresh` first if there is none yet, so
    /// every node sharing the store uses the same key.
    async fn server_key(&self, name: &str, fresh: [u8; 32]) -> StoreResult<[u8; 32]>;

    /// Inserts a verification (normally PENDING; DENIED when refused at start) and queues
    /// `events` about it. In the same transaction, every other PENDING verification of the
    /// same application, method and number is ABORTED (supersession) with a result event;
    /// those are returned as they are after the change.
    ///
    /// Events are queued only for applications that have a callback URL.
    ///
    /// # Errors
    /// `Conflict { constraint: "reference" }` if the application already has a verification
    /// with this reference (nothing is changed then).
    async fn insert_verification(
        &self,
        v: &Verification,
        events: &[EventKind],
    ) -> StoreResult<Vec<Verification>>;

    /// Claims up to `limit` delivery jobs due at `now`, leasing them until `lease_until`
    /// (one attempt counted each).
    async fn claim_jobs(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: usize,
    ) -> StoreResult<Vec<DeliveryJob>>;

    /// Finishes a job (sent, or given up): its payload is erased.
    async fn finish_job(&self, id: i64) -> StoreResult<()>;

    /// Records the attempt that delivered a job and finishes the job, in one transaction.
    async fn complete_job(&self, id: i64, attempt: &DeliveryAttempt) -> StoreResult<()>;

    /// Reschedules a job for `next_attempt_at` on route `route_index`.
    async fn retry_job(
        &self,
        id: i64,
        route_index: u32,
        next_attempt_at: OffsetDateTime,
    ) -> StoreResult<()>;

    /// Records a delivery attempt.
    async fn record_attempt(&self, attempt: &DeliveryAttempt) -> StoreResult<()>;

    /// The accepted attempt with this channel and message id (to match a delivery report).
    async fn attempt_by_message(
        &self,
        channel: &str,
        message_id: &str,
    ) -> StoreResult<Option<DeliveryAttempt>>;

    /// Every attempt of a verification, oldest first.
    async fn attempts(&self, verification_id: VerificationId) -> StoreResult<Vec<DeliveryAttempt>>;

    /// A verification of `app` by id; another application's verification is `None`.
    async fn verification(
        &self,
        app: &str,
        id: VerificationId,
    ) -> StoreResult<Option<Verification>>;

    /// A verification by id, whatever its application (for unauthenticated device-facing
    /// endpoints that carry their own secret, like the seamless `targetUri`).
    async fn verification_by_id(&self, id: VerificationId) -> StoreResult<Option<Verification>>;

    /// A verification of `app` by its reference.
    async fn verification_by_reference(
        &self,
        app: &str,
        reference: &str,
    ) -> StoreResult<Option<Verification>>;

    /// The verification a report or status by identity applies to: the PENDING one for this
    /// application, method and number if there is one, else the newest.
    async fn verification_by_identity(
        &self,
        app: &str,
        method: Method,
        endpoint: &str,
    ) -> StoreResult<Option<Verification>>;

    /// Marks up to `limit` PENDING verifications whose expiry is at or before `now` as
    /// FAIL / Expired, queues their result events, and returns them as changed.
    async fn expire_due(&self, now: OffsetDateTime, limit: usize)
    -> StoreResult<Vec<Verification>>;

    /// Claims up to `limit` pending events due at `now`, at most `per_app` of any one
    /// application (so one slow receiver cannot take every slot). Claiming counts an attempt
    /// and leases the event until `lease_until`; if the claimer dies, the event is due again
    /// then.
    async fn claim_events(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: usize,
        per_app: usize,
    ) -> StoreResult<Vec<OutboxEvent>>;

    /// Marks an event delivered.
    async fn event_delivered(&self, id: i64, now: OffsetDateTime) -> StoreResult<()>;

    /// Reschedules a failed attempt for `next_attempt_at`, remembering `error`.
    async fn event_retry(
        &self,
        id: i64,
        next_attempt_at: OffsetDateTime,
        error: &str,
    ) -> StoreResult<()>;

    /// Gives up on an event: it stays stored as dead for the operator.
    async fn event_dead(&self, id: i64, error: &str) -> StoreResult<()>;

    /// Events in `state` (every state when `None`), oldest first, at most `limit`.
    async fn list_events(
        &self,
        state: Option<EventState>,
        limit: usize,
    ) -> StoreResult<Vec<OutboxEvent>>;

    /// Queues a dead (or delivered) event again, due at `now`, with a fresh retry window.
    /// Returns whether the event exists.
    async fn redeliver_event(&self, id: i64, now: OffsetDateTime) -> StoreResult<bool>;

    /// The windowed sums of counters, read without changing them (amounts are ignored).
    async fn counter_sums(&self, ops: &[CounterOp], now: OffsetDateTime) -> StoreResult<Vec<i64>>;

    /// Runs `guard` and, if it passes, `write`, all in one transaction: one round trip (and
    /// one commit) for a start's or a report's rate checks and its write.
    ///
    /// # Errors
    /// As the write's own method: `Conflict { constraint: "reference" }` for an insert whose
    /// reference is taken, `Conflict { constraint: "version" }` for a stale update (the guard
    /// is rolled back with it).
    async fn guarded_write(
        &self,
        guard: &Guard,
        write: GuardedWrite<'_>,
        now: OffsetDateTime,
    ) -> StoreResult<GuardOutcome>;

    /// A token bucket refilled at `rate` tokens per second up to `burst`: takes one token and
    /// returns `None`, or returns how long until one is available. Atomic across callers.
    async fn take_token(
        &self,
        key: &str,
        rate: f64,
        burst: f64,
        now: OffsetDateTime,
    ) -> StoreResult<Option<time::Duration>>;

    /// Sets (or extends) a block.
    async fn set_block(&self, block: &Block) -> StoreResult<()>;

    /// The block on `key`, if one is active at `now`.
    async fn active_block(&self, key: &str, now: OffsetDateTime) -> StoreResult<Option<Block>>;

    /// Every block active at `now`.
    async fn list_blocks(&self, now: OffsetDateTime) -> StoreResult<Vec<Block>>;

    /// Lifts a block; returns whether there was one.
    async fn remove_block(&self, key: &str) -> StoreResult<bool>;

    /// Deletes what is no longer needed at `now`: counter buckets and blocks past their
    /// windows, and verifications (with their delivered events) that ended more than
    /// `retention` ago. Returns how many verifications were purged.
    async fn purge(&self, now: OffsetDateTime, retention: time::Duration) -> StoreResult<u64>;

    /// Whether the store answers (for readiness checks).
    async fn ping(&self) -> StoreResult<()>;
}
