//! The conformance suite every [`Store`] backend must pass, unchanged.
//!
//! A backend's tests instantiate it with [`conformance_tests!`](crate::conformance_tests),
//! which generates one `#[tokio::test]` per story, each on a fresh store from the backend's
//! own `async fn() -> Arc<dyn Store>`.

#![allow(
    clippy::unwrap_used,
    reason = "a test suite: a failed unwrap is a failed conformance check"
)]

use std::sync::Arc;

use rand::SeedableRng;
use rand::rngs::StdRng;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use verifyd_core::{
    CodeHasher, CodeType, Method, Money, NewVerification, PhoneNumber, Reason, Source, Status,
    Verification, VerificationId,
};

use crate::{
    Application, Block, CounterOp, DeliveryAttempt, EventKind, EventState, Guard, GuardOutcome,
    GuardedWrite, LimitedCounter, MinAuth, NewJob, OutboxEvent, RecentStarts, Refusal, Store,
    StoreError, StoreResult,
};

/// Plain counter bumps, inserts with a job and updates, as the stories use them: each is one
/// [`Store::guarded_write`].
#[async_trait::async_trait]
trait GuardedWrites {
    async fn bump_counters(&self, ops: &[CounterOp], now: OffsetDateTime) -> StoreResult<Vec<i64>>;
    async fn insert_verification_with_job(
        &self,
        v: &Verification,
        payload: &[u8],
        lease_until: OffsetDateTime,
    ) -> StoreResult<(Vec<Verification>, i64)>;
    async fn update_verification(
        &self,
        v: &mut Verification,
        events: &[EventKind],
    ) -> StoreResult<()>;
}

#[async_trait::async_trait]
impl<S: Store + ?Sized> GuardedWrites for S {
    async fn bump_counters(&self, ops: &[CounterOp], now: OffsetDateTime) -> StoreResult<Vec<i64>> {
        let guard = Guard {
            recent: None,
            counters: ops
                .iter()
                .map(|op| LimitedCounter {
                    op: op.clone(),
                    max: None,
                })
                .collect(),
        };
        match self
            .guarded_write(&guard, GuardedWrite::Nothing, now)
            .await?
        {
            GuardOutcome::Passed { sums, .. } => Ok(sums),
            GuardOutcome::Refused(r) => panic!("an unlimited guard refused: {r:?}"),
        }
    }

    async fn update_verification(
        &self,
        v: &mut Verification,
        events: &[EventKind],
    ) -> StoreResult<()> {
        let write = GuardedWrite::Update {
            verification: v,
            events,
        };
        match self
            .guarded_write(&Guard::default(), write, v.created_at)
            .await?
        {
            GuardOutcome::Passed { .. } => {
                v.version += 1;
                Ok(())
            }
            GuardOutcome::Refused(r) => panic!("an empty guard refused: {r:?}"),
        }
    }

    async fn insert_verification_with_job(
        &self,
        v: &Verification,
        payload: &[u8],
        lease_until: OffsetDateTime,
    ) -> StoreResult<(Vec<Verification>, i64)> {
        let write = GuardedWrite::Insert {
            verification: v,
            events: &[],
            job: Some(NewJob {
                payload,
                lease_until,
            }),
        };
        match self
            .guarded_write(&Guard::default(), write, v.created_at)
            .await?
        {
            GuardOutcome::Passed {
                superseded,
                job_id: Some(job_id),
                ..
            } => Ok((superseded, job_id)),
            other => panic!("an unguarded insert with a job gave {other:?}"),
        }
    }
}

/// The instant every story starts at.
pub const T0: OffsetDateTime = datetime!(2026-11-26 10:00:00.123456 UTC);

/// Generates one test per story for a backend: `conformance_tests!(crate::fresh_store);`
#[macro_export]
macro_rules! conformance_tests {
    ($make:path) => {
        $crate::conformance_tests!(@each $make,
            applications_round_trip,
            server_key_is_created_once,
            verification_round_trips_every_field,
            a_reference_is_unique_per_application,
            a_new_start_supersedes_the_pending_one,
            concurrent_starts_leave_exactly_one_pending,
            stale_updates_are_rejected,
            concurrent_correct_reports_succeed_exactly_once,
            identity_lookup_prefers_the_pending_verification,
            applications_cannot_see_each_other,
            expire_due_fails_only_due_pending_verifications,
            events_are_queued_only_for_applications_with_a_callback,
            every_final_transition_queues_a_result_event_in_the_same_transaction,
            claims_lease_events_and_are_fair_between_applications,
            concurrent_claims_never_hand_out_an_event_twice,
            events_retry_die_and_can_be_redelivered,
            counters_sum_over_a_sliding_window,
            concurrent_counter_bumps_are_atomic,
            a_token_bucket_allows_a_burst_then_the_rate,
            blocks_expire_and_can_be_lifted,
            purge_keeps_what_is_inside_the_retention,
            a_job_is_queued_with_the_start_and_leased_to_its_sender,
            a_refused_start_queues_no_job,
            concurrent_job_claims_never_hand_out_a_job_twice,
            attempts_are_recorded_and_found_by_message_id,
            counter_sums_read_without_counting,
            a_guarded_start_passes_or_changes_nothing,
            concurrent_guarded_starts_stop_exactly_at_the_limit,
            a_guarded_update_checks_the_budget_and_the_version,
            a_numbers_recent_starts_limit_its_next_start,
            concurrent_starts_to_one_number_stop_at_its_limit
        );
    };
    (@each $make:path, $($story:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $story() {
                let store = $make().await;
                $crate::conformance::$story(store).await;
            }
        )+
    };
}

fn hasher() -> CodeHasher {
    CodeHasher::new([7; 32])
}

fn app(key: &str) -> Application {
    Application {
        key: key.into(),
        name: format!("{key} name"),
        secret: "YXBwU2VjcmV0".into(),
        callback_url: None,
        min_auth: MinAuth::Basic,
        allow_private_callbacks: false,
        callback_fail_open: false,
        created_at: T0,
    }
}

/// An application with a callback URL (so events are queued for it).
fn app_with_callback(key: &str) -> Application {
    Application {
        callback_url: Some(format!("https://example.com/{key}/callback")),
        ..app(key)
    }
}

/// A fresh PENDING SMS verification with secret `123456`.
pub fn sms(app: &str, number: &str, seed: u64) -> Verification {
    let mut rng = StdRng::seed_from_u64(seed);
    Verification::start(
        NewVerification {
            id: VerificationId::random(&mut rng),
            app: app.into(),
            method: Method::Sms,
            identity: PhoneNumber::parse(number).expect("valid test number"),
            reference: None,
            custom: None,
            secret: "123456".into(),
            code_type: Some(CodeType::Numeric),
            ttl: Duration::minutes(10),
            max_attempts: 3,
            price: Some(Money {
                currency: "EUR".into(),
                amount: 0.0453,
            }),
            locale: Some("en-US".into()),
        },
        &hasher(),
        T0,
    )
}

/// Applications can be inserted, upserted, read and listed; duplicate keys conflict.
pub async fn applications_round_trip(store: Arc<dyn Store>) {
    let a = app("k1");
    store.insert_application(&a).await.unwrap();
    assert_eq!(store.application("k1").await.unwrap(), Some(a.clone()));
    assert!(matches!(
        store.insert_application(&a).await,
        Err(StoreError::Conflict {
            constraint: "application"
        })
    ));
    let mut changed = a.clone();
    changed.callback_url = Some("https://example.com/cb".into());
    changed.min_auth = MinAuth::Public;
    changed.allow_private_callbacks = true;
    changed.callback_fail_open = true;
    store.upsert_application(&changed).await.unwrap();
    assert_eq!(store.application("k1").await.unwrap(), Some(changed));
    store.upsert_application(&app("k2")).await.unwrap();
    let keys: Vec<String> = store
        .list_applications()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.key)
        .collect();
    assert_eq!(keys.len(), 2);
    assert!(keys.contains(&"k2".to_string()));
    assert_eq!(store.application("nope").await.unwrap(), None);
}

/// The first `server_key` call stores its fresh key; later calls return that one.
pub async fn server_key_is_created_once(store: Arc<dyn Store>) {
    let first = store.server_key("code", [1; 32]).await.unwrap();
    assert_eq!(first, [1; 32]);
    let again = store.server_key("code", [2; 32]).await.unwrap();
    assert_eq!(again, [1; 32]);
    let other = store.server_key("other", [3; 32]).await.unwrap();
    assert_eq!(other, [3; 32]);
}

/// Every field written comes back, including call info and timestamps to the microsecond.
pub async fn verification_round_trips_every_field(store: Arc<dyn Store>) {
    let mut v = sms("app", "+46700000001", 1);
    v.reference = Some("ref ü/1".into());
    v.custom = Some("c".repeat(4096));
    store.insert_verification(&v, &[]).await.unwrap();
    assert_eq!(
        store.verification("app", v.id).await.unwrap(),
        Some(v.clone())
    );

    let mut call = sms("app", "+46700000002", 2);
    call.method = Method::Callout;
    call.call = Some(verifyd_core::CallInfo {
        result: Some(verifyd_core::CallResult::Answered),
        complete: true,
        billable_duration: 17,
        termination_price: Some(Money {
            currency: "EUR".into(),
            amount: 0.01,
        }),
    });
    store.insert_verification(&call, &[]).await.unwrap();
    let mut back = store.verification("app", call.id).await.unwrap().unwrap();
    assert_eq!(back, call);

    let answer = back.report(
        "123456",
        Source::Intercepted,
        &hasher(),
        T0 + Duration::seconds(3),
    );
    assert_eq!(answer.status, Status::Successful);
    store.update_verification(&mut back, &[]).await.unwrap();
    assert_eq!(back.version, 1);
    assert_eq!(
        store.verification("app", call.id).await.unwrap(),
        Some(back)
    );
    assert_eq!(
        store
            .verification_by_reference("app", "ref ü/1")
            .await
            .unwrap()
            .map(|v| v.id),
        Some(v.id)
    );
    assert_eq!(
        store.verification_by_id(v.id).await.unwrap().map(|v| v.id),
        Some(v.id)
    );
}

/// A reference can be used once per application; another application may reuse it.
pub async fn a_reference_is_unique_per_application(store: Arc<dyn Store>) {
    let mut a = sms("app", "+46700000003", 3);
    a.reference = Some("r1".into());
    store.insert_verification(&a, &[]).await.unwrap();
    let mut b = sms("app", "+46700000004", 4);
    b.reference = Some("r1".into());
    assert!(matches!(
        store.insert_verification(&b, &[]).await,
        Err(StoreError::Conflict {
            constraint: "reference"
        })
    ));
    assert_eq!(store.verification("app", b.id).await.unwrap(), None);
    let mut c = sms("other", "+46700000004", 5);
    c.reference = Some("r1".into());
    store.insert_verification(&c, &[]).await.unwrap();
}

/// Starting again for the same number and method aborts the pending one.
pub async fn a_new_start_supersedes_the_pending_one(store: Arc<dyn Store>) {
    let first = sms("app", "+46700000005", 6);
    assert!(
        store
            .insert_verification(&first, &[])
            .await
            .unwrap()
            .is_empty()
    );
    let second = sms("app", "+46700000005", 7);
    let aborted = store.insert_verification(&second, &[]).await.unwrap();
    assert_eq!(aborted.len(), 1);
    assert_eq!(aborted[0].id, first.id);
    assert_eq!(aborted[0].status, Status::Aborted);
    let stored_first = store.verification("app", first.id).await.unwrap().unwrap();
    assert_eq!(stored_first.status, Status::Aborted);
    assert!(stored_first.finished_at.is_some());
    // A different method for the same number is independent.
    let mut flash = sms("app", "+46700000005", 8);
    flash.method = Method::Flashcall;
    assert!(
        store
            .insert_verification(&flash, &[])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .verification("app", second.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        Status::Pending
    );
}

/// Racing starts for one number end with exactly one PENDING verification.
pub async fn concurrent_starts_leave_exactly_one_pending(store: Arc<dyn Store>) {
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let v = sms("app", "+46700000006", 100 + i);
                store.insert_verification(&v, &[]).await.map(|_| v.id)
            })
        })
        .collect();
    let mut ids = Vec::new();
    for h in handles {
        ids.push(h.await.unwrap().unwrap());
    }
    let mut pending = 0;
    for id in ids {
        if store.verification("app", id).await.unwrap().unwrap().status == Status::Pending {
            pending += 1;
        }
    }
    assert_eq!(pending, 1);
}

/// An update based on a stale read is refused and changes nothing.
pub async fn stale_updates_are_rejected(store: Arc<dyn Store>) {
    let v = sms("app", "+46700000007", 9);
    store.insert_verification(&v, &[]).await.unwrap();
    let mut a = store.verification("app", v.id).await.unwrap().unwrap();
    let mut b = a.clone();
    a.report("000000", Source::Manual, &hasher(), T0);
    store.update_verification(&mut a, &[]).await.unwrap();
    b.report("123456", Source::Manual, &hasher(), T0);
    assert!(matches!(
        store.update_verification(&mut b, &[]).await,
        Err(StoreError::Conflict {
            constraint: "version"
        })
    ));
    let now = store.verification("app", v.id).await.unwrap().unwrap();
    assert_eq!(now.status, Status::Pending);
    assert_eq!(now.attempts, 1);
}

/// Many concurrent read-apply-write loops with the right code: exactly one of them makes the
/// SUCCESSFUL transition.
pub async fn concurrent_correct_reports_succeed_exactly_once(store: Arc<dyn Store>) {
    let v = sms("app", "+46700000008", 10);
    store.insert_verification(&v, &[]).await.unwrap();
    let handles: Vec<_> = (0..12)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                loop {
                    let mut cur = store.verification("app", v.id).await.unwrap().unwrap();
                    let answer = cur.report("123456", Source::Manual, &hasher(), T0);
                    if !answer.outcome.changed() {
                        return false;
                    }
                    match store.update_verification(&mut cur, &[]).await {
                        Ok(()) => return answer.outcome.finished(),
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    let mut transitions = 0;
    for h in handles {
        if h.await.unwrap() {
            transitions += 1;
        }
    }
    assert_eq!(transitions, 1);
    let done = store.verification("app", v.id).await.unwrap().unwrap();
    assert_eq!(done.status, Status::Successful);
    assert_eq!(done.version, 1);
}

/// By identity: the pending verification if any, else the newest.
pub async fn identity_lookup_prefers_the_pending_verification(store: Arc<dyn Store>) {
    let number = "+46700000009";
    assert!(
        store
            .verification_by_identity("app", Method::Sms, number)
            .await
            .unwrap()
            .is_none()
    );
    let mut old = sms("app", number, 11);
    old.created_at = T0 - Duration::minutes(1);
    store.insert_verification(&old, &[]).await.unwrap();
    let newer = sms("app", number, 12);
    store.insert_verification(&newer, &[]).await.unwrap();
    let hit = store
        .verification_by_identity("app", Method::Sms, number)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hit.id, newer.id);
    let mut done = hit;
    done.report("123456", Source::Manual, &hasher(), T0);
    store.update_verification(&mut done, &[]).await.unwrap();
    let hit = store
        .verification_by_identity("app", Method::Sms, number)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hit.id, newer.id, "the newest when none is pending");
    assert!(
        store
            .verification_by_identity("app", Method::Callout, number)
            .await
            .unwrap()
            .is_none()
    );
}

/// No lookup crosses applications.
pub async fn applications_cannot_see_each_other(store: Arc<dyn Store>) {
    let mut v = sms("a1", "+46700000010", 13);
    v.reference = Some("shared".into());
    store.insert_verification(&v, &[]).await.unwrap();
    assert!(store.verification("a2", v.id).await.unwrap().is_none());
    assert!(
        store
            .verification_by_reference("a2", "shared")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .verification_by_identity("a2", Method::Sms, "+46700000010")
            .await
            .unwrap()
            .is_none()
    );
    // Superseding in a2 does not touch a1's pending verification.
    store
        .insert_verification(&sms("a2", "+46700000010", 14), &[])
        .await
        .unwrap();
    assert_eq!(
        store
            .verification("a1", v.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        Status::Pending
    );
}

/// The sweeper fails exactly the PENDING verifications that are due.
pub async fn expire_due_fails_only_due_pending_verifications(store: Arc<dyn Store>) {
    let due = sms("app", "+46700000011", 15);
    let mut later = sms("app", "+46700000012", 16);
    later.expires_at = T0 + Duration::hours(1);
    let mut finished = sms("app", "+46700000013", 17);
    finished.report("123456", Source::Manual, &hasher(), T0);
    for v in [&due, &later, &finished] {
        store.insert_verification(v, &[]).await.unwrap();
    }
    let expired = store
        .expire_due(T0 + Duration::minutes(10), 100)
        .await
        .unwrap();
    assert_eq!(
        expired.iter().map(|v| v.id).collect::<Vec<_>>(),
        vec![due.id]
    );
    assert_eq!(expired[0].reason, Some(Reason::Expired));
    let stored = store.verification("app", due.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.reason),
        (Status::Fail, Some(Reason::Expired))
    );
    assert_eq!(stored.version, 1);
    assert_eq!(
        store
            .verification("app", later.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        Status::Pending
    );
    assert_eq!(
        store
            .verification("app", finished.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        Status::Successful
    );
    assert!(
        store
            .expire_due(T0 + Duration::minutes(10), 100)
            .await
            .unwrap()
            .is_empty()
    );
}

/// No callback URL, no events; with one, events are queued.
pub async fn events_are_queued_only_for_applications_with_a_callback(store: Arc<dyn Store>) {
    store.insert_application(&app("quiet")).await.unwrap();
    store
        .insert_application(&app_with_callback("loud"))
        .await
        .unwrap();
    let mut q = sms("quiet", "+46700000020", 20);
    q.deny(Reason::Fraud, T0);
    store
        .insert_verification(&q, &[EventKind::Result])
        .await
        .unwrap();
    let mut l = sms("loud", "+46700000020", 21);
    l.deny(Reason::Fraud, T0);
    store
        .insert_verification(&l, &[EventKind::Result])
        .await
        .unwrap();
    let events = store.list_events(None, 100).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].app, "loud");
    assert_eq!(events[0].verification_id, l.id);
    assert_eq!(events[0].kind, EventKind::Result);
    assert_eq!(events[0].state, EventState::Pending);
    assert_eq!(events[0].attempts, 0);
    assert_eq!(events[0].created_at, T0);
}

/// Supersession, a report, a delivery receipt and expiry each queue their event with the
/// state change; a write that loses its race queues nothing.
pub async fn every_final_transition_queues_a_result_event_in_the_same_transaction(
    store: Arc<dyn Store>,
) {
    store
        .insert_application(&app_with_callback("cb"))
        .await
        .unwrap();
    let first = sms("cb", "+46700000021", 22);
    store.insert_verification(&first, &[]).await.unwrap();
    let second = sms("cb", "+46700000021", 23);
    store.insert_verification(&second, &[]).await.unwrap();
    let kinds = |events: Vec<OutboxEvent>| -> Vec<(VerificationId, EventKind)> {
        events
            .into_iter()
            .map(|e| (e.verification_id, e.kind))
            .collect()
    };
    assert_eq!(
        kinds(store.list_events(None, 100).await.unwrap()),
        vec![(first.id, EventKind::Result)],
        "the aborted verification's result"
    );

    let mut a = store.verification("cb", second.id).await.unwrap().unwrap();
    let mut stale = a.clone();
    a.report("123456", Source::Manual, &hasher(), T0);
    store
        .update_verification(
            &mut a,
            &[
                EventKind::SmsDelivered { successful: true },
                EventKind::Result,
            ],
        )
        .await
        .unwrap();
    stale.report("000000", Source::Manual, &hasher(), T0);
    assert!(
        store
            .update_verification(&mut stale, &[EventKind::Result])
            .await
            .is_err()
    );

    let third = sms("cb", "+46700000022", 24);
    store.insert_verification(&third, &[]).await.unwrap();
    store
        .expire_due(T0 + Duration::minutes(10), 10)
        .await
        .unwrap();

    assert_eq!(
        kinds(store.list_events(None, 100).await.unwrap()),
        vec![
            (first.id, EventKind::Result),
            (second.id, EventKind::SmsDelivered { successful: true }),
            (second.id, EventKind::Result),
            (third.id, EventKind::Result),
        ]
    );
}

async fn queue_results(store: &Arc<dyn Store>, app_key: &str, n: u64, seed: u64) {
    for i in 0..n {
        let mut v = sms(app_key, &format!("+4670000{:04}", seed + i), seed + i);
        v.deny(Reason::Fraud, T0);
        store
            .insert_verification(&v, &[EventKind::Result])
            .await
            .unwrap();
    }
}

/// A claim takes due events, at most `per_app` per application, leases them, and the lease
/// running out makes them due again (a claimer that died).
pub async fn claims_lease_events_and_are_fair_between_applications(store: Arc<dyn Store>) {
    store
        .insert_application(&app_with_callback("busy"))
        .await
        .unwrap();
    store
        .insert_application(&app_with_callback("calm"))
        .await
        .unwrap();
    queue_results(&store, "busy", 5, 1000).await;
    queue_results(&store, "calm", 1, 2000).await;
    let lease = T0 + Duration::seconds(30);
    let first = store.claim_events(T0, lease, 10, 2).await.unwrap();
    let apps: Vec<&str> = first.iter().map(|e| e.app.as_str()).collect();
    assert_eq!(apps.iter().filter(|a| **a == "busy").count(), 2);
    assert_eq!(apps.iter().filter(|a| **a == "calm").count(), 1);
    assert!(
        first
            .iter()
            .all(|e| e.attempts == 1 && e.next_attempt_at == lease)
    );
    let second = store.claim_events(T0, lease, 10, 2).await.unwrap();
    assert_eq!(second.len(), 2);
    assert!(second.iter().all(|e| e.app == "busy"));
    let third = store.claim_events(T0, lease, 10, 10).await.unwrap();
    assert_eq!(third.len(), 1);
    assert!(
        store
            .claim_events(T0, lease, 10, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // The claimer died: at the lease end everything is due again, with a second attempt.
    let again = store
        .claim_events(lease, lease + Duration::seconds(30), 10, 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 6);
    assert!(again.iter().all(|e| e.attempts == 2));
}

/// Many claimers at once: every event is handed out exactly once.
pub async fn concurrent_claims_never_hand_out_an_event_twice(store: Arc<dyn Store>) {
    store
        .insert_application(&app_with_callback("race"))
        .await
        .unwrap();
    queue_results(&store, "race", 40, 3000).await;
    let lease = T0 + Duration::minutes(5);
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    let batch = store.claim_events(T0, lease, 3, 100).await.unwrap();
                    if batch.is_empty() {
                        return got;
                    }
                    got.extend(batch.into_iter().map(|e| e.id));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let total = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(total, 40);
    assert_eq!(all.len(), 40);
}

/// Delivered, retried, dead, listed by state, redelivered.
pub async fn events_retry_die_and_can_be_redelivered(store: Arc<dyn Store>) {
    store
        .insert_application(&app_with_callback("ops"))
        .await
        .unwrap();
    queue_results(&store, "ops", 3, 4000).await;
    let claimed = store
        .claim_events(T0, T0 + Duration::seconds(30), 10, 10)
        .await
        .unwrap();
    let (a, b, c) = (claimed[0].id, claimed[1].id, claimed[2].id);
    store.event_delivered(a, T0).await.unwrap();
    store
        .event_retry(b, T0 + Duration::seconds(4), "HTTP 503")
        .await
        .unwrap();
    store
        .event_dead(c, "gave up after 24h: HTTP 500")
        .await
        .unwrap();

    let pending = store
        .list_events(Some(EventState::Pending), 10)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, b);
    assert_eq!(pending[0].last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(pending[0].next_attempt_at, T0 + Duration::seconds(4));
    assert!(
        store
            .claim_events(T0 + Duration::seconds(3), T0 + Duration::minutes(1), 10, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .claim_events(T0 + Duration::seconds(4), T0 + Duration::minutes(1), 10, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    let dead = store.list_events(Some(EventState::Dead), 10).await.unwrap();
    assert_eq!(dead.iter().map(|e| e.id).collect::<Vec<_>>(), vec![c]);
    assert_eq!(
        store
            .list_events(Some(EventState::Delivered), 10)
            .await
            .unwrap()[0]
            .id,
        a
    );

    let later = T0 + Duration::hours(30);
    assert!(store.redeliver_event(c, later).await.unwrap());
    assert!(!store.redeliver_event(999_999, later).await.unwrap());
    let back = store
        .list_events(Some(EventState::Pending), 10)
        .await
        .unwrap();
    let revived = back.iter().find(|e| e.id == c).unwrap();
    assert_eq!(revived.retry_from, later);
    assert_eq!(revived.next_attempt_at, later);
    assert!(
        store
            .list_events(Some(EventState::Dead), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

fn op(key: &str, amount: i64, window: Duration, bucket: Duration) -> CounterOp {
    CounterOp {
        key: key.into(),
        amount,
        window,
        bucket,
    }
}

/// A day window in one-hour buckets: hits older than the window stop counting.
pub async fn counters_sum_over_a_sliding_window(store: Arc<dyn Store>) {
    let (day, hour) = (Duration::days(1), Duration::hours(1));
    let at = |h: i64| T0 + Duration::hours(h);
    assert_eq!(
        store
            .bump_counters(&[op("k", 3, day, hour)], at(0))
            .await
            .unwrap(),
        vec![3]
    );
    assert_eq!(
        store
            .bump_counters(&[op("k", 2, day, hour)], at(5))
            .await
            .unwrap(),
        vec![5]
    );
    assert_eq!(
        store
            .bump_counters(&[op("k", 0, day, hour), op("other", 1, day, hour)], at(23))
            .await
            .unwrap(),
        vec![5, 1]
    );
    // 25 hours later the first hit has left the window, the second has not.
    assert_eq!(
        store
            .bump_counters(&[op("k", 0, day, hour)], at(25))
            .await
            .unwrap(),
        vec![2]
    );
    assert_eq!(
        store
            .bump_counters(&[op("k", -1, day, hour)], at(25))
            .await
            .unwrap(),
        vec![1]
    );
    // Five hours on, the +2 left the window too; the -1 (recorded at hour 25) still counts.
    assert_eq!(
        store
            .bump_counters(&[op("k", 0, day, hour)], at(30))
            .await
            .unwrap(),
        vec![-1]
    );
}

/// Concurrent increments are never lost.
pub async fn concurrent_counter_bumps_are_atomic(store: Arc<dyn Store>) {
    let handles: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .bump_counters(
                        &[op("race", 1, Duration::hours(1), Duration::minutes(1))],
                        T0,
                    )
                    .await
                    .unwrap()[0]
            })
        })
        .collect();
    let mut seen = Vec::new();
    for h in handles {
        seen.push(h.await.unwrap());
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        (1..=20).collect::<Vec<i64>>(),
        "each bump sees a distinct total"
    );
}

/// Burst of 3 at 2 per second: three pass at once, the fourth waits half a second.
pub async fn a_token_bucket_allows_a_burst_then_the_rate(store: Arc<dyn Store>) {
    for _ in 0..3 {
        assert_eq!(store.take_token("tb", 2.0, 3.0, T0).await.unwrap(), None);
    }
    let wait = store.take_token("tb", 2.0, 3.0, T0).await.unwrap().unwrap();
    assert!((wait.as_seconds_f64() - 0.5).abs() < 1e-6, "{wait}");
    assert_eq!(
        store
            .take_token("tb", 2.0, 3.0, T0 + Duration::milliseconds(500))
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .take_token("tb", 2.0, 3.0, T0 + Duration::milliseconds(500))
            .await
            .unwrap()
            .is_some()
    );
    // Refills up to the burst only.
    let later = T0 + Duration::hours(1);
    for _ in 0..3 {
        assert_eq!(store.take_token("tb", 2.0, 3.0, later).await.unwrap(), None);
    }
    assert!(
        store
            .take_token("tb", 2.0, 3.0, later)
            .await
            .unwrap()
            .is_some()
    );
}

/// Blocks are visible until they end, can be extended and lifted.
pub async fn blocks_expire_and_can_be_lifted(store: Arc<dyn Store>) {
    let block = Block {
        key: "pump:app:+4470".into(),
        until: T0 + Duration::hours(1),
        reason: "velocity 50/h vs baseline 2/h, conversion 0%".into(),
        created_at: T0,
    };
    store.set_block(&block).await.unwrap();
    assert_eq!(
        store.active_block(&block.key, T0).await.unwrap(),
        Some(block.clone())
    );
    assert_eq!(store.list_blocks(T0).await.unwrap(), vec![block.clone()]);
    assert!(
        store
            .active_block(&block.key, T0 + Duration::hours(1))
            .await
            .unwrap()
            .is_none()
    );
    // A shorter block never shortens a longer one.
    store
        .set_block(&Block {
            until: T0 + Duration::minutes(5),
            ..block.clone()
        })
        .await
        .unwrap();
    assert!(
        store
            .active_block(&block.key, T0 + Duration::minutes(30))
            .await
            .unwrap()
            .is_some()
    );
    assert!(store.remove_block(&block.key).await.unwrap());
    assert!(!store.remove_block(&block.key).await.unwrap());
    assert!(store.active_block(&block.key, T0).await.unwrap().is_none());
}

/// Purging removes verifications that ended before the retention window (and their
/// finished events) and expired rate-limit state, and keeps everything else.
pub async fn purge_keeps_what_is_inside_the_retention(store: Arc<dyn Store>) {
    store
        .insert_application(&app_with_callback("p"))
        .await
        .unwrap();
    let mut old = sms("p", "+46700000031", 31);
    old.report("123456", Source::Manual, &hasher(), T0);
    store
        .insert_verification(&old, &[EventKind::Result])
        .await
        .unwrap();
    let claimed = store
        .claim_events(T0, T0 + Duration::seconds(30), 10, 10)
        .await
        .unwrap();
    store.event_delivered(claimed[0].id, T0).await.unwrap();
    let mut recent = sms("p", "+46700000032", 32);
    recent.report("123456", Source::Manual, &hasher(), T0 + Duration::days(6));
    store.insert_verification(&recent, &[]).await.unwrap();
    let pending = sms("p", "+46700000033", 33);
    store.insert_verification(&pending, &[]).await.unwrap();
    store
        .bump_counters(&[op("c", 1, Duration::hours(1), Duration::minutes(1))], T0)
        .await
        .unwrap();

    let now = T0 + Duration::days(8);
    assert_eq!(store.purge(now, Duration::days(7)).await.unwrap(), 1);
    assert!(store.verification("p", old.id).await.unwrap().is_none());
    assert!(store.verification("p", recent.id).await.unwrap().is_some());
    assert!(store.verification("p", pending.id).await.unwrap().is_some());
    assert!(store.list_events(None, 10).await.unwrap().is_empty());
    assert_eq!(
        store
            .bump_counters(&[op("c", 0, Duration::days(30), Duration::minutes(1))], now)
            .await
            .unwrap(),
        vec![0],
        "the expired bucket is gone"
    );
}

/// The job is written with the verification, leased to the node that answered the start;
/// when the lease ends (that node died) it is due again, with the same sealed payload.
pub async fn a_job_is_queued_with_the_start_and_leased_to_its_sender(store: Arc<dyn Store>) {
    let v = sms("app", "+46700000041", 41);
    let lease = T0 + Duration::seconds(30);
    let (aborted, job_id) = store
        .insert_verification_with_job(&v, b"sealed message", lease)
        .await
        .unwrap();
    assert!(aborted.is_empty());
    assert_eq!(
        store.verification("app", v.id).await.unwrap(),
        Some(v.clone())
    );
    assert!(
        store
            .claim_jobs(T0, T0 + Duration::minutes(1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let jobs = store
        .claim_jobs(lease, lease + Duration::seconds(30), 10)
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(
        (job.id, job.verification_id, job.app.as_str()),
        (job_id, v.id, "app")
    );
    assert_eq!(job.payload, b"sealed message");
    assert_eq!((job.route_index, job.attempts), (0, 2));
    // Fail over to the second route in five seconds.
    let later = lease + Duration::seconds(5);
    store.retry_job(job_id, 1, later).await.unwrap();
    assert!(
        store
            .claim_jobs(
                later - Duration::seconds(1),
                later + Duration::minutes(1),
                10
            )
            .await
            .unwrap()
            .is_empty()
    );
    let again = store
        .claim_jobs(later, later + Duration::seconds(30), 10)
        .await
        .unwrap();
    assert_eq!((again[0].route_index, again[0].attempts), (1, 3));
    let done = DeliveryAttempt {
        verification_id: v.id,
        route: "r".into(),
        channel: "c".into(),
        message_id: Some("m-1".into()),
        outcome: "submitted".into(),
        at: later,
    };
    store.complete_job(job_id, &done).await.unwrap();
    assert_eq!(store.attempts(v.id).await.unwrap(), vec![done.clone()]);
    assert_eq!(
        store.attempt_by_message("c", "m-1").await.unwrap(),
        Some(done)
    );
    assert!(
        store
            .claim_jobs(later + Duration::hours(1), later + Duration::hours(2), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A retry after the job finished does not revive it.
    store.retry_job(job_id, 2, later).await.unwrap();
    assert!(
        store
            .claim_jobs(later + Duration::hours(1), later + Duration::hours(2), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A start refused for its reference leaves neither a verification nor a job.
pub async fn a_refused_start_queues_no_job(store: Arc<dyn Store>) {
    let mut a = sms("app", "+46700000042", 42);
    a.reference = Some("dup-job".into());
    store
        .insert_verification_with_job(&a, b"a", T0)
        .await
        .unwrap();
    store
        .claim_jobs(T0, T0 + Duration::hours(1), 10)
        .await
        .unwrap();
    let mut b = sms("app", "+46700000043", 43);
    b.reference = Some("dup-job".into());
    assert!(matches!(
        store.insert_verification_with_job(&b, b"b", T0).await,
        Err(StoreError::Conflict {
            constraint: "reference"
        })
    ));
    assert!(store.verification("app", b.id).await.unwrap().is_none());
    assert!(
        store
            .claim_jobs(T0 + Duration::hours(2), T0 + Duration::hours(3), 10)
            .await
            .unwrap()
            .len()
            == 1
    );
}

/// Many claimers at once: every job is handed out exactly once.
pub async fn concurrent_job_claims_never_hand_out_a_job_twice(store: Arc<dyn Store>) {
    for i in 0..30 {
        let v = sms("app", &format!("+4670001{i:04}"), 500 + i);
        store
            .insert_verification_with_job(&v, b"x", T0)
            .await
            .unwrap();
    }
    let lease = T0 + Duration::minutes(5);
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    let batch = store.claim_jobs(T0, lease, 4).await.unwrap();
                    if batch.is_empty() {
                        return got;
                    }
                    got.extend(batch.into_iter().map(|j| j.id));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let total = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!((total, all.len()), (30, 30));
}

/// Attempts are kept per verification and found again by a delivery report's message id.
pub async fn attempts_are_recorded_and_found_by_message_id(store: Arc<dyn Store>) {
    let v = sms("app", "+46700000044", 44);
    store.insert_verification(&v, &[]).await.unwrap();
    let attempt =
        |route: &str, channel: &str, id: Option<&str>, outcome: &str, secs: i64| DeliveryAttempt {
            verification_id: v.id,
            route: route.into(),
            channel: channel.into(),
            message_id: id.map(str::to_string),
            outcome: outcome.into(),
            at: T0 + Duration::seconds(secs),
        };
    let first = attempt("smpp-primary", "smpp:a", None, "failed: ESME_RINVDSTADR", 1);
    let second = attempt("smpp-backup", "smpp:b", Some("msg-77"), "submitted", 2);
    store.record_attempt(&first).await.unwrap();
    store.record_attempt(&second).await.unwrap();
    assert_eq!(
        store.attempts(v.id).await.unwrap(),
        vec![first, second.clone()]
    );
    assert_eq!(
        store.attempt_by_message("smpp:b", "msg-77").await.unwrap(),
        Some(second)
    );
    assert!(
        store
            .attempt_by_message("smpp:a", "msg-77")
            .await
            .unwrap()
            .is_none()
    );
}

/// `counter_sums` sees what was bumped and changes nothing.
pub async fn counter_sums_read_without_counting(store: Arc<dyn Store>) {
    let (day, hour) = (Duration::days(1), Duration::hours(1));
    store
        .bump_counters(&[op("read", 4, day, hour)], T0)
        .await
        .unwrap();
    let read = [op("read", 100, day, hour), op("never", 7, day, hour)];
    assert_eq!(store.counter_sums(&read, T0).await.unwrap(), vec![4, 0]);
    assert_eq!(store.counter_sums(&read, T0).await.unwrap(), vec![4, 0]);
    assert_eq!(
        store
            .counter_sums(&read, T0 + Duration::hours(25))
            .await
            .unwrap(),
        vec![0, 0],
        "outside the window"
    );
}

fn limited(key: &str, amount: i64, max: Option<i64>) -> LimitedCounter {
    LimitedCounter {
        op: op(key, amount, Duration::hours(1), Duration::minutes(1)),
        max,
    }
}

fn start_guard(number: &str) -> Guard {
    Guard {
        recent: Some(RecentStarts {
            app: "app".into(),
            endpoint: number.into(),
            min_interval: Duration::seconds(1),
            limits: Vec::new(),
        }),
        counters: vec![
            limited(&format!("wrong:{number}"), 0, Some(2)),
            limited(&format!("starts:{number}"), 1, Some(2)),
        ],
    }
}

async fn guarded_insert(store: &Arc<dyn Store>, guard: &Guard, v: &Verification) -> GuardOutcome {
    store
        .guarded_write(
            guard,
            GuardedWrite::Insert {
                verification: v,
                events: &[],
                job: Some(NewJob {
                    payload: b"sealed",
                    lease_until: v.created_at + Duration::seconds(30),
                }),
            },
            v.created_at,
        )
        .await
        .unwrap()
}

/// A guarded start checks the number's last start, counts, inserts, supersedes and queues
/// its job in one go; a refused one (too soon after the last, a limit reached) leaves no
/// trace: no verification, no job, no count.
pub async fn a_guarded_start_passes_or_changes_nothing(store: Arc<dyn Store>) {
    let number = "+46700000061";
    let guard = start_guard(number);
    let first = sms("app", number, 61);
    let GuardOutcome::Passed {
        sums,
        superseded,
        job_id,
    } = guarded_insert(&store, &guard, &first).await
    else {
        panic!("the first start passes");
    };
    assert_eq!(sums, vec![0, 1]);
    assert!(superseded.is_empty());
    assert!(job_id.is_some());
    assert_eq!(
        store.verification("app", first.id).await.unwrap(),
        Some(first.clone())
    );

    // 400 ms later is too soon: nothing happens.
    let mut early = sms("app", number, 62);
    early.created_at = T0 + Duration::milliseconds(400);
    assert_eq!(
        guarded_insert(&store, &guard, &early).await,
        GuardOutcome::Refused(Refusal::Gate {
            wait: Duration::milliseconds(600)
        })
    );
    assert!(store.verification("app", early.id).await.unwrap().is_none());
    let counters = [guard.counters[1].op.clone()];
    assert_eq!(
        store
            .counter_sums(&counters, early.created_at)
            .await
            .unwrap(),
        vec![1]
    );

    // A second later it passes and supersedes the first.
    let mut second = sms("app", number, 63);
    second.created_at = T0 + Duration::seconds(1);
    let GuardOutcome::Passed { superseded, .. } = guarded_insert(&store, &guard, &second).await
    else {
        panic!("the second start passes");
    };
    assert_eq!(superseded.len(), 1);
    assert_eq!(superseded[0].id, first.id);
    assert_eq!(superseded[0].status, Status::Aborted);

    // The third start exceeds starts <= 2: refused, and it does not count as the number's
    // last start (a later start in the same second is refused by the limit, not as too
    // soon).
    let mut third = sms("app", number, 64);
    third.created_at = T0 + Duration::seconds(2);
    assert_eq!(
        guarded_insert(&store, &guard, &third).await,
        GuardOutcome::Refused(Refusal::Limit { index: 1, sum: 3 })
    );
    let mut fourth = sms("app", number, 65);
    fourth.created_at = T0 + Duration::seconds(2) + Duration::milliseconds(10);
    assert_eq!(
        guarded_insert(&store, &guard, &fourth).await,
        GuardOutcome::Refused(Refusal::Limit { index: 1, sum: 3 })
    );
    assert!(store.verification("app", third.id).await.unwrap().is_none());
    assert_eq!(
        store
            .verification_by_identity("app", Method::Sms, number)
            .await
            .unwrap()
            .map(|v| v.id),
        Some(second.id)
    );
    // One job per passed start; the refused ones queued none.
    let jobs = store
        .claim_jobs(T0 + Duration::hours(1), T0 + Duration::hours(2), 10)
        .await
        .unwrap();
    assert_eq!(jobs.len(), 2);
    // A read-only check that is already over its limit refuses too.
    let exhausted = Guard {
        recent: None,
        counters: vec![limited("spent", 3, None), limited("spent", 0, Some(2))],
    };
    assert_eq!(
        store
            .guarded_write(&exhausted, GuardedWrite::Nothing, T0)
            .await
            .unwrap(),
        GuardOutcome::Refused(Refusal::Limit { index: 1, sum: 3 })
    );
    assert_eq!(
        store
            .counter_sums(&[exhausted.counters[0].op.clone()], T0)
            .await
            .unwrap(),
        vec![0],
        "the refused guard's own earlier bump is rolled back too"
    );
}

/// Twenty guarded starts race for a limit of five: exactly five pass.
pub async fn concurrent_guarded_starts_stop_exactly_at_the_limit(store: Arc<dyn Store>) {
    let handles: Vec<_> = (0..20u64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let v = sms("app", &format!("+467000001{i:02}"), 100 + i);
                let guard = Guard {
                    recent: None,
                    counters: vec![limited("app-starts", 1, Some(5))],
                };
                let passed = matches!(
                    guarded_insert(&store, &guard, &v).await,
                    GuardOutcome::Passed { .. }
                );
                let stored = store.verification("app", v.id).await.unwrap().is_some();
                assert_eq!(passed, stored, "stored exactly when it passed");
                passed
            })
        })
        .collect();
    let mut passed = 0;
    for h in handles {
        passed += usize::from(h.await.unwrap());
    }
    assert_eq!(passed, 5);
    assert_eq!(
        store
            .counter_sums(
                &[op(
                    "app-starts",
                    0,
                    Duration::hours(1),
                    Duration::minutes(1)
                )],
                T0
            )
            .await
            .unwrap(),
        vec![5]
    );
}

fn recent(number: &str, min_interval: Duration, limits: Vec<(Duration, i64)>) -> Guard {
    Guard {
        recent: Some(RecentStarts {
            app: "app".into(),
            endpoint: number.into(),
            min_interval,
            limits,
        }),
        counters: Vec::new(),
    }
}

/// A verification of `method` to `number` created at `at`.
fn started_at(method: Method, number: &str, seed: u64, at: OffsetDateTime) -> Verification {
    let mut v = sms("app", number, seed);
    v.method = method;
    v.expires_at = at + (v.expires_at - v.created_at);
    v.created_at = at;
    v
}

/// A number's start limits count the verifications stored for it (every method, every
/// status but DENIED, inside each window) plus the one being inserted; the minimum interval waits for
/// the newest. Other numbers and other applications do not count.
pub async fn a_numbers_recent_starts_limit_its_next_start(store: Arc<dyn Store>) {
    let number = "+46700000081";
    let guard = recent(
        number,
        Duration::seconds(30),
        vec![(Duration::hours(1), 2), (Duration::days(1), 3)],
    );
    let at = |minutes: i64| T0 + Duration::minutes(minutes);
    let start = |method, seed, at| {
        let (store, guard) = (store.clone(), guard.clone());
        async move {
            let v = started_at(method, number, seed, at);
            let outcome = guarded_insert(&store, &guard, &v).await;
            let stored = store.verification("app", v.id).await.unwrap().is_some();
            assert_eq!(stored, matches!(outcome, GuardOutcome::Passed { .. }));
            outcome
        }
    };
    let passed = |outcome| matches!(outcome, GuardOutcome::Passed { .. });
    assert!(passed(start(Method::Sms, 81, at(0)).await));
    // Ten seconds later: the minimum interval refuses, saying how long to wait.
    assert_eq!(
        start(Method::Flashcall, 82, at(0) + Duration::seconds(10)).await,
        GuardOutcome::Refused(Refusal::Gate {
            wait: Duration::seconds(20)
        })
    );
    // Neighbours, another application's starts of the same number and denied starts do
    // not count.
    let mut elsewhere = started_at(Method::Sms, "+46700000082", 83, at(1));
    store.insert_verification(&elsewhere, &[]).await.unwrap();
    elsewhere = started_at(Method::Sms, number, 84, at(1));
    elsewhere.app = "other".into();
    store.insert_verification(&elsewhere, &[]).await.unwrap();
    let mut denied = started_at(Method::Callout, number, 90, at(2));
    denied.deny(Reason::Fraud, at(2));
    store.insert_verification(&denied, &[]).await.unwrap();
    // A second start by another method passes; a third in the hour is refused.
    assert!(passed(start(Method::Flashcall, 85, at(5)).await));
    assert_eq!(
        start(Method::Sms, 86, at(10)).await,
        GuardOutcome::Refused(Refusal::Recent { index: 0, count: 3 })
    );
    // An hour after the first the hour has room again, but the day is full after it.
    assert!(passed(start(Method::Sms, 87, at(61)).await));
    assert_eq!(
        start(Method::Callout, 88, at(130)).await,
        GuardOutcome::Refused(Refusal::Recent { index: 1, count: 4 })
    );
    // A day after the first, it no longer counts.
    assert!(passed(start(Method::Sms, 89, at(24 * 60 + 1)).await));
}

/// Racing starts to one number, from any connection or node, stop exactly at its limit.
pub async fn concurrent_starts_to_one_number_stop_at_its_limit(store: Arc<dyn Store>) {
    let number = "+46700000091";
    let handles: Vec<_> = (0..12u64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let method = Method::ALL[(i % 5) as usize];
                let v = started_at(
                    method,
                    number,
                    900 + i,
                    T0 + Duration::milliseconds(i as i64),
                );
                let guard = recent(number, Duration::ZERO, vec![(Duration::hours(1), 4)]);
                matches!(
                    guarded_insert(&store, &guard, &v).await,
                    GuardOutcome::Passed { .. }
                )
            })
        })
        .collect();
    let mut passed = 0;
    for h in handles {
        passed += usize::from(h.await.unwrap());
    }
    assert_eq!(passed, 4);
}

/// A guarded update counts a wrong guess with the write; a stale one changes nothing (not
/// even the count); an exhausted budget refuses the write.
pub async fn a_guarded_update_checks_the_budget_and_the_version(store: Arc<dyn Store>) {
    let v = sms("app", "+46700000071", 71);
    store.insert_verification(&v, &[]).await.unwrap();
    let budget = |max| Guard {
        recent: None,
        counters: vec![limited("wrong:+46700000071", 1, Some(max))],
    };
    let mut changed = v.clone();
    changed.report("000000", Source::Manual, &hasher(), T0);
    let outcome = store
        .guarded_write(
            &budget(2),
            GuardedWrite::Update {
                verification: &changed,
                events: &[],
            },
            T0,
        )
        .await
        .unwrap();
    assert!(matches!(outcome, GuardOutcome::Passed { ref sums, .. } if sums == &vec![1]));
    // The same stale copy again: a version conflict, and the guess is not counted.
    assert!(matches!(
        store
            .guarded_write(
                &budget(2),
                GuardedWrite::Update {
                    verification: &changed,
                    events: &[],
                },
                T0,
            )
            .await,
        Err(StoreError::Conflict {
            constraint: "version"
        })
    ));
    let stored = store.verification("app", v.id).await.unwrap().unwrap();
    assert_eq!(stored.version, v.version + 1);
    assert_eq!(
        store
            .counter_sums(&[budget(1).counters[0].op.clone()], T0)
            .await
            .unwrap(),
        vec![1]
    );
    // With a budget of 1, used: another wrong guess is refused and the verification is unchanged.
    let mut again = stored.clone();
    again.report("111111", Source::Manual, &hasher(), T0);
    assert_eq!(
        store
            .guarded_write(
                &budget(1),
                GuardedWrite::Update {
                    verification: &again,
                    events: &[],
                },
                T0,
            )
            .await
            .unwrap(),
        GuardOutcome::Refused(Refusal::Limit { index: 0, sum: 2 })
    );
    assert_eq!(store.verification("app", v.id).await.unwrap(), Some(stored));
}
