//! The verification aggregate and its state machine.
//!
//! ```text
//!            start ──► PENDING ──correct report──────────► SUCCESSFUL
//!                        │ ├──wrong report × max_attempts─► FAIL (Invalid code / Invalid CLI)
//!                        │ ├──report or sweep after expiry► FAIL (Expired)
//!                        │ ├──newer start, same number────► ABORTED
//!                        │ ├──refused before sending──────► DENIED (reason)
//!                        │ └──channel failure─────────────► ERROR (reason)
//! ```
//! A final state never changes again; every transition is a method here, and every method
//! takes `now`.

use std::fmt;

use rand::Rng;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::code::{CodeHash, CodeHasher, CodeType};
use crate::method::{CallResult, Method, Reason, Source, Status};
use crate::phone::PhoneNumber;
use crate::price::Money;

/// A verification id: a random (v4) UUID, rendered hyphenated as Sinch does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VerificationId(pub Uuid);

impl VerificationId {
    /// A new id from `rng` (122 random bits, so ids are not guessable).
    pub fn random<R: Rng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; 16];
        rng.fill(&mut bytes);
        Self(uuid::Builder::from_random_bytes(bytes).into_uuid())
    }

    /// A new time-ordered id (UUIDv7: the creation time in milliseconds, then 74 random
    /// bits from `rng`). Ids still cannot be guessed, and storage indexes keyed by id grow at
    /// one end instead of splitting pages all over the tree.
    pub fn time_ordered<R: Rng + ?Sized>(now: OffsetDateTime, rng: &mut R) -> Self {
        let mut random = [0u8; 10];
        rng.fill(&mut random);
        let millis = u64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        Self(uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid())
    }

    /// Parses the hyphenated (or simple) form.
    pub fn parse(value: &str) -> Option<Self> {
        Uuid::try_parse(value.trim()).ok().map(Self)
    }

    /// The bytes bound into code hashes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl fmt::Display for VerificationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// What happened on the phone line (flashcall and callout only).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CallInfo {
    /// The outcome, once known.
    pub result: Option<CallResult>,
    /// Whether the call has ended.
    pub complete: bool,
    /// Billable seconds (answered time).
    pub billable_duration: u32,
    /// What the termination cost.
    pub termination_price: Option<Money>,
}

/// Everything needed to start a verification. `secret` is the plain code, CLI or seamless
/// token: it is hashed by [`Verification::start`] and dropped.
#[derive(Debug, Clone)]
pub struct NewVerification {
    /// The id drawn for it.
    pub id: VerificationId,
    /// The owning application (its key).
    pub app: String,
    /// The method.
    pub method: Method,
    /// The number under verification.
    pub identity: PhoneNumber,
    /// Caller's reference, unique per application.
    pub reference: Option<String>,
    /// Caller's opaque data, echoed into events.
    pub custom: Option<String>,
    /// The plain secret that a correct report must carry.
    pub secret: String,
    /// The code alphabet, for code methods.
    pub code_type: Option<CodeType>,
    /// How long the verification can be completed.
    pub ttl: Duration,
    /// Wrong reports allowed.
    pub max_attempts: u32,
    /// The verification price (fixed at start, shown once final).
    pub price: Option<Money>,
    /// The locale of the message or speech.
    pub locale: Option<String>,
}

/// A verification and all it remembers.
#[derive(Debug, Clone, PartialEq)]
pub struct Verification {
    /// Its id.
    pub id: VerificationId,
    /// The owning application (its key); no other application can see it.
    pub app: String,
    /// The method.
    pub method: Method,
    /// The number under verification.
    pub identity: PhoneNumber,
    /// Current status.
    pub status: Status,
    /// Why it has that status.
    pub reason: Option<Reason>,
    /// Caller's reference.
    pub reference: Option<String>,
    /// Caller's opaque data.
    pub custom: Option<String>,
    /// Keyed hash of the expected code, CLI or token.
    pub secret_hash: CodeHash,
    /// Code alphabet, for code methods.
    pub code_type: Option<CodeType>,
    /// Wrong reports so far.
    pub attempts: u32,
    /// Wrong reports allowed.
    pub max_attempts: u32,
    /// When it started.
    pub created_at: OffsetDateTime,
    /// When it stops accepting reports.
    pub expires_at: OffsetDateTime,
    /// When it reached its final state.
    pub finished_at: Option<OffsetDateTime>,
    /// How the successful code was obtained.
    pub source: Option<Source>,
    /// Verification price.
    pub price: Option<Money>,
    /// Call outcome, for call methods.
    pub call: Option<CallInfo>,
    /// Locale of the message or speech.
    pub locale: Option<String>,
    /// Optimistic-concurrency version, bumped by the store on every write.
    pub version: u64,
}

/// What a report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportOutcome {
    /// The code was right: now SUCCESSFUL.
    Verified,
    /// The code was wrong; the verification stays PENDING.
    WrongCode {
        /// Wrong reports still allowed.
        attempts_left: u32,
    },
    /// The code was wrong and that was the last allowed attempt: now FAIL.
    AttemptsExhausted,
    /// The report came after expiry: now FAIL / Expired.
    Expired,
    /// The verification was already final; nothing changed.
    AlreadyFinal,
}

impl ReportOutcome {
    /// Whether the verification changed and must be written back.
    pub fn changed(self) -> bool {
        self != ReportOutcome::AlreadyFinal
    }

    /// Whether the verification reached a final state through this report.
    pub fn finished(self) -> bool {
        matches!(
            self,
            ReportOutcome::Verified | ReportOutcome::AttemptsExhausted | ReportOutcome::Expired
        )
    }
}

/// The answer to a report: what happened, and the status and reason to tell the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportAnswer {
    /// What the report did.
    pub outcome: ReportOutcome,
    /// Status to answer with (`FAIL` for a wrong code even while still pending).
    pub status: Status,
    /// Reason to answer with.
    pub reason: Option<Reason>,
}

impl Verification {
    /// Starts a verification: PENDING, with the secret hashed under `hasher`.
    pub fn start(new: NewVerification, hasher: &CodeHasher, now: OffsetDateTime) -> Self {
        let secret_hash = hasher.hash(
            new.id.as_bytes(),
            &CodeHasher::normalize(&new.secret, new.method == Method::Flashcall),
        );
        Self {
            id: new.id,
            app: new.app,
            method: new.method,
            identity: new.identity,
            status: Status::Pending,
            reason: None,
            reference: new.reference,
            custom: new.custom,
            secret_hash,
            code_type: new.code_type,
            attempts: 0,
            max_attempts: new.max_attempts.max(1),
            created_at: now,
            expires_at: now + new.ttl,
            finished_at: None,
            source: None,
            price: new.price,
            call: new.method.is_call().then(CallInfo::default),
            locale: new.locale,
            version: 0,
        }
    }

    /// Whether it is still PENDING and not past its expiry at `now`.
    pub fn is_live(&self, now: OffsetDateTime) -> bool {
        self.status == Status::Pending && now < self.expires_at
    }

    /// Status and reason as seen at `now`: a PENDING verification past its expiry reads as
    /// FAIL / Expired even before the sweeper has written that down.
    pub fn view_at(&self, now: OffsetDateTime) -> (Status, Option<Reason>) {
        if self.status == Status::Pending && now >= self.expires_at {
            (Status::Fail, Some(Reason::Expired))
        } else {
            (self.status, self.reason)
        }
    }

    /// The reason a wrong report is answered with.
    fn mismatch_reason(&self) -> Reason {
        if self.method == Method::Flashcall {
            Reason::InvalidCli
        } else {
            Reason::InvalidCode
        }
    }

    /// Whether `candidate` is the secret (constant-time comparison of keyed hashes).
    pub fn secret_matches(&self, candidate: &str, hasher: &CodeHasher) -> bool {
        let normalized = CodeHasher::normalize(candidate, self.method == Method::Flashcall);
        hasher.matches(self.id.as_bytes(), &normalized, &self.secret_hash)
    }

    fn finish(&mut self, status: Status, reason: Option<Reason>, now: OffsetDateTime) {
        self.status = status;
        self.reason = reason;
        self.finished_at = Some(now);
    }

    /// Applies a report of `candidate` at `now`.
    ///
    /// A report on a final verification changes nothing. Its answer repeats the final state,
    /// except that a SUCCESSFUL verification answers FAIL / Invalid code to a *wrong* code, so
    /// a replayed or guessed report can never read as a success.
    pub fn report(
        &mut self,
        candidate: &str,
        source: Source,
        hasher: &CodeHasher,
        now: OffsetDateTime,
    ) -> ReportAnswer {
        if self.status.is_final() {
            let (status, reason) =
                if self.status == Status::Successful && !self.secret_matches(candidate, hasher) {
                    (Status::Fail, Some(self.mismatch_reason()))
                } else {
                    (self.status, self.reason)
                };
            return ReportAnswer {
                outcome: ReportOutcome::AlreadyFinal,
                status,
                reason,
            };
        }
        if now >= self.expires_at {
            self.finish(Status::Fail, Some(Reason::Expired), now);
            return self.answer(ReportOutcome::Expired);
        }
        if self.secret_matches(candidate, hasher) {
            self.source = Some(source);
            self.finish(Status::Successful, None, now);
            return self.answer(ReportOutcome::Verified);
        }
        self.attempts += 1;
        let reason = self.mismatch_reason();
        if self.attempts >= self.max_attempts {
            self.finish(Status::Fail, Some(reason), now);
            return self.answer(ReportOutcome::AttemptsExhausted);
        }
        ReportAnswer {
            outcome: ReportOutcome::WrongCode {
                attempts_left: self.max_attempts - self.attempts,
            },
            status: Status::Fail,
            reason: Some(reason),
        }
    }

    fn answer(&self, outcome: ReportOutcome) -> ReportAnswer {
        ReportAnswer {
            outcome,
            status: self.status,
            reason: self.reason,
        }
    }

    /// Marks a PENDING verification FAIL / Expired if it is past its expiry. Returns whether
    /// it changed.
    pub fn expire_if_due(&mut self, now: OffsetDateTime) -> bool {
        if self.status == Status::Pending && now >= self.expires_at {
            self.finish(Status::Fail, Some(Reason::Expired), now);
            true
        } else {
            false
        }
    }

    /// Supersedes a PENDING verification (a newer one was started): ABORTED.
    pub fn abort(&mut self, now: OffsetDateTime) -> bool {
        self.end_pending(Status::Aborted, None, now)
    }

    /// Refuses a PENDING verification before anything was sent: DENIED with `reason`.
    pub fn deny(&mut self, reason: Reason, now: OffsetDateTime) -> bool {
        self.end_pending(Status::Denied, Some(reason), now)
    }

    /// Ends a live PENDING verification as FAIL without a code comparison (a data
    /// verification whose network-asserted number differs from the one under verification).
    /// Returns whether it changed.
    pub fn fail_now(&mut self, now: OffsetDateTime) -> bool {
        if !self.is_live(now) {
            return false;
        }
        self.finish(Status::Fail, None, now);
        true
    }

    /// Ends a live PENDING verification as FAIL with `reason`, without a code comparison (a
    /// data verification the mobile network refused to authenticate). Returns whether it
    /// changed.
    pub fn fail_with(&mut self, reason: Reason, now: OffsetDateTime) -> bool {
        if !self.is_live(now) {
            return false;
        }
        self.finish(Status::Fail, Some(reason), now);
        true
    }

    /// Ends a live PENDING verification as SUCCESSFUL without a code comparison: the mobile
    /// operator asserted that the device's number is the one under verification (a data
    /// verification completed on a channel that never sees the secret). Returns whether it
    /// changed.
    pub fn succeed_now(&mut self, source: Source, now: OffsetDateTime) -> bool {
        if !self.is_live(now) {
            return false;
        }
        self.source = Some(source);
        self.finish(Status::Successful, None, now);
        true
    }

    /// Records a channel failure on a PENDING verification: ERROR with `reason`.
    pub fn fail_delivery(&mut self, reason: Reason, now: OffsetDateTime) -> bool {
        self.end_pending(Status::Error, Some(reason), now)
    }

    fn end_pending(&mut self, status: Status, reason: Option<Reason>, now: OffsetDateTime) -> bool {
        if self.status != Status::Pending {
            return false;
        }
        self.finish(status, reason, now);
        true
    }

    /// Records what happened on the phone line. Only call methods have call info.
    pub fn record_call(&mut self, call: CallInfo) {
        if self.method.is_call() {
            self.call = Some(call);
        }
    }

    /// The timestamp shown as `verificationTimestamp`: when it ended, or when it started.
    pub fn timestamp(&self) -> OffsetDateTime {
        self.finished_at.unwrap_or(self.created_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-11-26 10:00 UTC);

    fn hasher() -> CodeHasher {
        CodeHasher::new([5; 32])
    }

    #[test]
    fn time_ordered_ids_sort_by_creation_and_stay_random() {
        let mut rng = SmallRng::seed_from_u64(3);
        let ids: Vec<_> = (0..100)
            .map(|i| VerificationId::time_ordered(T0 + Duration::milliseconds(i), &mut rng))
            .collect();
        assert!(ids.windows(2).all(|w| w[0].as_bytes() < w[1].as_bytes()));
        // Same millisecond: different ids, differing in the random part.
        let a = VerificationId::time_ordered(T0, &mut rng);
        let b = VerificationId::time_ordered(T0, &mut rng);
        assert_ne!(a, b);
        assert_eq!(a.as_bytes()[..6], b.as_bytes()[..6]);
        assert_eq!(a.0.get_version_num(), 7);
        assert_eq!(VerificationId::parse(&a.to_string()), Some(a));
    }

    fn new_sms(secret: &str) -> NewVerification {
        let mut rng = SmallRng::seed_from_u64(42);
        NewVerification {
            id: VerificationId::random(&mut rng),
            app: "app".into(),
            method: Method::Sms,
            identity: PhoneNumber::parse("+46700000000").unwrap(),
            reference: None,
            custom: None,
            secret: secret.into(),
            code_type: Some(CodeType::Numeric),
            ttl: Duration::minutes(10),
            max_attempts: 3,
            price: None,
            locale: None,
        }
    }

    fn started(secret: &str) -> Verification {
        Verification::start(new_sms(secret), &hasher(), T0)
    }

    #[test]
    fn a_network_verdict_ends_only_a_live_verification() {
        let mut v = started("123456");
        assert!(v.succeed_now(Source::Intercepted, T0));
        assert_eq!(
            (v.status, v.reason, v.source),
            (Status::Successful, None, Some(Source::Intercepted))
        );
        // Final stays final.
        assert!(!v.fail_with(Reason::NetworkErrorOrNumberUnreachable, T0));
        assert_eq!(v.status, Status::Successful);

        let mut v = started("123456");
        assert!(v.fail_with(Reason::NetworkErrorOrNumberUnreachable, T0));
        assert_eq!(
            (v.status, v.reason),
            (Status::Fail, Some(Reason::NetworkErrorOrNumberUnreachable))
        );
        assert!(!v.succeed_now(Source::Intercepted, T0));

        // Past its expiry nothing is recorded.
        let mut v = started("123456");
        assert!(!v.succeed_now(Source::Intercepted, T0 + Duration::minutes(10)));
        assert_eq!(v.status, Status::Pending);
    }

    #[test]
    fn the_secret_is_never_kept_in_plain_text() {
        let v = started("123456");
        assert!(!format!("{v:?}").contains("123456"));
    }

    #[test]
    fn right_code_succeeds() {
        let mut v = started("123456");
        let a = v.report(
            "123456",
            Source::Manual,
            &hasher(),
            T0 + Duration::seconds(5),
        );
        assert_eq!(a.outcome, ReportOutcome::Verified);
        assert_eq!((v.status, v.reason), (Status::Successful, None));
        assert_eq!(v.source, Some(Source::Manual));
        assert_eq!(v.finished_at, Some(T0 + Duration::seconds(5)));
    }

    #[test]
    fn wrong_code_answers_fail_but_stays_pending_until_the_limit() {
        let mut v = started("123456");
        let h = hasher();
        let a = v.report("000000", Source::Manual, &h, T0);
        assert_eq!(a.outcome, ReportOutcome::WrongCode { attempts_left: 2 });
        assert_eq!(
            (a.status, a.reason),
            (Status::Fail, Some(Reason::InvalidCode))
        );
        assert_eq!(v.status, Status::Pending);
        v.report("000001", Source::Manual, &h, T0);
        let a = v.report("000002", Source::Manual, &h, T0);
        assert_eq!(a.outcome, ReportOutcome::AttemptsExhausted);
        assert_eq!(
            (v.status, v.reason),
            (Status::Fail, Some(Reason::InvalidCode))
        );
        // Even the right code cannot revive it.
        let a = v.report("123456", Source::Manual, &h, T0);
        assert_eq!(a.outcome, ReportOutcome::AlreadyFinal);
        assert_eq!(a.status, Status::Fail);
    }

    #[test]
    fn report_after_expiry_is_fail_expired() {
        let mut v = started("123456");
        let a = v.report(
            "123456",
            Source::Manual,
            &hasher(),
            T0 + Duration::minutes(10),
        );
        assert_eq!(a.outcome, ReportOutcome::Expired);
        assert_eq!((v.status, v.reason), (Status::Fail, Some(Reason::Expired)));
    }

    #[test]
    fn pending_past_expiry_reads_as_expired() {
        let v = started("123456");
        assert_eq!(v.view_at(T0), (Status::Pending, None));
        assert_eq!(
            v.view_at(T0 + Duration::minutes(11)),
            (Status::Fail, Some(Reason::Expired))
        );
    }

    #[test]
    fn a_wrong_code_against_a_success_never_reads_as_success() {
        let mut v = started("123456");
        let h = hasher();
        v.report("123456", Source::Manual, &h, T0);
        let a = v.report("999999", Source::Manual, &h, T0);
        assert_eq!(
            (a.status, a.reason),
            (Status::Fail, Some(Reason::InvalidCode))
        );
        assert_eq!(v.status, Status::Successful);
        let again = v.report("123456", Source::Manual, &h, T0);
        assert_eq!(again.status, Status::Successful);
    }

    #[test]
    fn flashcall_compares_the_full_cli_and_says_invalid_cli() {
        let mut n = new_sms("+46700001234");
        n.method = Method::Flashcall;
        let mut v = Verification::start(n, &hasher(), T0);
        let a = v.report("+46700001235", Source::Manual, &hasher(), T0);
        assert_eq!(a.reason, Some(Reason::InvalidCli));
        let a = v.report("46 700 001 234", Source::Intercepted, &hasher(), T0);
        assert_eq!(a.outcome, ReportOutcome::Verified);
        assert!(v.call.is_some());
    }

    #[test]
    fn alpha_codes_compare_case_insensitively() {
        let mut v = started("ABCD");
        let a = v.report("abcd", Source::Manual, &hasher(), T0);
        assert_eq!(a.outcome, ReportOutcome::Verified);
    }

    #[test]
    fn abort_deny_and_error_only_end_pending_verifications() {
        let mut v = started("1");
        assert!(v.abort(T0));
        assert_eq!(v.status, Status::Aborted);
        assert!(!v.deny(Reason::Fraud, T0));
        assert!(!v.fail_delivery(Reason::SmsDeliveryFailure, T0));
        assert_eq!(v.status, Status::Aborted);
    }

    fn any_status_changing_step() -> impl Strategy<Value = u8> {
        0u8..6
    }

    proptest! {
        /// Whatever happens, attempts never exceed the maximum, and once final, a
        /// verification's status and reason never change.
        #[test]
        fn final_states_are_final_and_attempts_bounded(
            steps in proptest::collection::vec((any_status_changing_step(), 0i64..1200), 1..40)
        ) {
            let h = hasher();
            let mut v = started("123456");
            let mut frozen: Option<(Status, Option<Reason>)> = None;
            for (step, secs) in steps {
                let now = T0 + Duration::seconds(secs);
                match step {
                    0 => { v.report("123456", Source::Manual, &h, now); }
                    1 | 2 => { v.report("654321", Source::Manual, &h, now); }
                    3 => { v.expire_if_due(now); }
                    4 => { v.abort(now); }
                    _ => { v.fail_delivery(Reason::SmsDeliveryFailure, now); }
                }
                prop_assert!(v.attempts <= v.max_attempts);
                if let Some(f) = frozen {
                    prop_assert_eq!(f, (v.status, v.reason));
                } else if v.status.is_final() {
                    frozen = Some((v.status, v.reason));
                }
            }
        }
    }
}
