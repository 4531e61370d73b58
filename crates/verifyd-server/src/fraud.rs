//! Abuse and fraud rules, evaluated before anything is sent and explainable one by one:
//! request-rate limits, per-number start limits and wrong-code budgets, destination rules
//! (country, number type, block and allow lists), SMS-pumping detection and spend caps, and
//! per-application test numbers.
//!
//! All shared state (counters, token buckets, blocks, and the verifications the per-number
//! start limits count) lives in the store, so the rules hold across nodes sharing one
//! database. Every decision is logged with the rule name and
//! the masked number, and counted in `verifyd_rule_hits_total{rule,action}`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use anyhow::bail;
use serde::Deserialize;
use time::{Duration, OffsetDateTime};
use verifyd_api::ErrorCode;
use verifyd_core::phone::LineType;
use verifyd_core::{Method, PhoneNumber, Reason};
use verifyd_store::{Block, CounterOp, Guard, LimitedCounter, RecentStarts, Refusal, Store};

use crate::error::ApiError;

/// `[fraud]` as written; every field optional so `[applications.fraud]` can override any.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FraudConfig {
    /// Milliseconds between starts to one number.
    pub min_start_interval_ms: Option<u64>,
    /// Starts per number per hour.
    pub starts_per_number_hour: Option<u32>,
    /// Starts per number per day.
    pub starts_per_number_day: Option<u32>,
    /// Wrong codes per number per day.
    pub wrong_codes_per_number_day: Option<u32>,
    /// Requests per second per application.
    pub app_requests_per_second: Option<f64>,
    /// Burst per application.
    pub app_burst: Option<f64>,
    /// Requests per second per client IP.
    pub ip_requests_per_second: Option<f64>,
    /// Burst per client IP.
    pub ip_burst: Option<f64>,
    /// Allowed destination regions (empty = all).
    pub allowed_countries: Option<Vec<String>>,
    /// Blocked destination regions.
    pub blocked_countries: Option<Vec<String>>,
    /// Per-method destination rules.
    pub methods: Option<BTreeMap<String, MethodGeoConfig>>,
    /// Refuse premium-rate numbers.
    pub block_premium_rate: Option<bool>,
    /// Refuse shared-cost numbers.
    pub block_shared_cost: Option<bool>,
    /// Refuse fixed-line numbers for SMS.
    pub block_fixed_line_sms: Option<bool>,
    /// Refuse VoIP numbers.
    pub block_voip: Option<bool>,
    /// Blocked numbers and prefixes.
    pub blocklist: Option<Vec<String>>,
    /// Allowed numbers and prefixes (bypass fraud rules).
    pub allowlist: Option<Vec<String>>,
    /// Spend cap per day.
    pub daily_spend_cap: Option<f64>,
    /// SMS-pumping defence.
    pub pumping: Option<PumpingConfig>,
}

/// `[fraud.methods.<method>]`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MethodGeoConfig {
    /// Allowed regions for this method (empty = all).
    #[serde(default)]
    pub allowed_countries: Vec<String>,
    /// Blocked regions for this method.
    #[serde(default)]
    pub blocked_countries: Vec<String>,
}

/// `[fraud.pumping]`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PumpingConfig {
    /// On/off.
    pub enabled: Option<bool>,
    /// Monitor only.
    pub shadow: Option<bool>,
    /// National digits after the country code that make a prefix.
    pub prefix_digits: Option<usize>,
    /// Velocity window.
    pub window_minutes: Option<u32>,
    /// Starts in the window before anything triggers.
    pub min_starts: Option<u32>,
    /// Conversion below which the prefix is suspicious.
    pub max_conversion: Option<f64>,
    /// Velocity over baseline that is suspicious.
    pub velocity_factor: Option<f64>,
    /// History length of the baseline.
    pub baseline_days: Option<u32>,
    /// How long a block lasts.
    pub cooldown_minutes: Option<u32>,
}

/// `[[applications.test_numbers]]`.
#[derive(Debug, Clone, Deserialize)]
pub struct TestNumberConfig {
    /// The number.
    pub number: String,
    /// Its fixed code (for flashcall: the CLI).
    pub code: String,
    /// What happens.
    #[serde(default = "default_outcome")]
    pub outcome: String,
}

fn default_outcome() -> String {
    "delivered".into()
}

/// The scripted outcome of a test number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestOutcome {
    /// PENDING, "delivered", completes with the fixed code.
    Delivered,
    /// ERROR / SMS delivery failure (calls: network error).
    Undeliverable,
    /// Already expired: FAIL / Expired.
    Expired,
    /// DENIED / Fraud.
    Denied,
    /// A call nobody answers: ERROR, callResult NO_ANSWER.
    NoAnswer,
}

/// A configured test number.
#[derive(Debug, Clone)]
pub struct TestNumber {
    /// Fixed code or CLI.
    pub code: String,
    /// Scripted outcome.
    pub outcome: TestOutcome,
}

/// The validated rules of one application.
#[derive(Debug, Clone)]
pub struct FraudPolicy {
    min_start_interval: Duration,
    /// Starts per number per hour (0: no limit).
    pub(crate) starts_per_hour: u32,
    /// Starts per number per day (0: no limit).
    pub(crate) starts_per_day: u32,
    wrong_codes_per_day: u32,
    /// (rate, burst) per application, if on.
    pub app_rate: Option<(f64, f64)>,
    /// (rate, burst) per client IP, if on.
    pub ip_rate: Option<(f64, f64)>,
    allowed_countries: Vec<String>,
    blocked_countries: Vec<String>,
    methods: HashMap<Method, MethodGeoConfig>,
    block_premium_rate: bool,
    block_shared_cost: bool,
    block_fixed_line_sms: bool,
    block_voip: bool,
    blocklist: Vec<String>,
    allowlist: Vec<String>,
    daily_spend_cap: f64,
    pumping: Option<Pumping>,
    /// Test numbers by E.164.
    pub test_numbers: HashMap<String, TestNumber>,
}

#[derive(Debug, Clone)]
struct Pumping {
    shadow: bool,
    prefix_digits: usize,
    window: Duration,
    min_starts: u32,
    max_conversion: f64,
    velocity_factor: f64,
    baseline: Duration,
    cooldown: Duration,
}

fn codes(list: &[String], label: &str) -> anyhow::Result<Vec<String>> {
    list.iter()
        .map(|c| {
            let c = c.trim().to_ascii_uppercase();
            if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
                bail!("{label}: {c:?} is not an ISO 3166 alpha-2 country code");
            }
            Ok(c)
        })
        .collect()
}

fn prefixes(list: &[String], label: &str) -> anyhow::Result<Vec<String>> {
    list.iter()
        .map(|p| {
            let digits: String = p.chars().filter(char::is_ascii_digit).collect();
            if !p.trim().starts_with('+') || digits.is_empty() {
                bail!("{label}: {p:?} must be an E.164 number or prefix like +4670");
            }
            Ok(format!("+{digits}"))
        })
        .collect()
}

impl FraudConfig {
    /// This config with `over`'s set fields on top.
    pub fn merged(&self, over: &FraudConfig) -> FraudConfig {
        macro_rules! pick {
            ($($f:ident),*) => { FraudConfig { $($f: over.$f.clone().or_else(|| self.$f.clone()),)* pumping: None } };
        }
        let mut m = pick!(
            min_start_interval_ms,
            starts_per_number_hour,
            starts_per_number_day,
            wrong_codes_per_number_day,
            app_requests_per_second,
            app_burst,
            ip_requests_per_second,
            ip_burst,
            allowed_countries,
            blocked_countries,
            methods,
            block_premium_rate,
            block_shared_cost,
            block_fixed_line_sms,
            block_voip,
            blocklist,
            allowlist,
            daily_spend_cap
        );
        let base = self.pumping.clone().unwrap_or_default();
        let top = over.pumping.clone().unwrap_or_default();
        m.pumping = Some(PumpingConfig {
            enabled: top.enabled.or(base.enabled),
            shadow: top.shadow.or(base.shadow),
            prefix_digits: top.prefix_digits.or(base.prefix_digits),
            window_minutes: top.window_minutes.or(base.window_minutes),
            min_starts: top.min_starts.or(base.min_starts),
            max_conversion: top.max_conversion.or(base.max_conversion),
            velocity_factor: top.velocity_factor.or(base.velocity_factor),
            baseline_days: top.baseline_days.or(base.baseline_days),
            cooldown_minutes: top.cooldown_minutes.or(base.cooldown_minutes),
        });
        m
    }

    /// Validates into a policy (`label` names the table in errors).
    ///
    /// # Errors
    /// The offending key.
    pub fn policy(&self, tests: &[TestNumberConfig], label: &str) -> anyhow::Result<FraudPolicy> {
        let rate = |rps: Option<f64>,
                    burst: Option<f64>,
                    name: &str|
         -> anyhow::Result<Option<(f64, f64)>> {
            let rps = rps.unwrap_or(0.0);
            if !rps.is_finite() || rps < 0.0 {
                bail!("{label}.{name}_requests_per_second must be >= 0");
            }
            Ok((rps > 0.0).then(|| (rps, burst.unwrap_or(rps).max(1.0))))
        };
        let mut methods = HashMap::new();
        for (name, geo) in self.methods.clone().unwrap_or_default() {
            let method = Method::parse(&name)
                .ok_or_else(|| anyhow::anyhow!("{label}.methods: unknown method {name:?}"))?;
            methods.insert(
                method,
                MethodGeoConfig {
                    allowed_countries: codes(&geo.allowed_countries, label)?,
                    blocked_countries: codes(&geo.blocked_countries, label)?,
                },
            );
        }
        let p = self.pumping.clone().unwrap_or_default();
        let pumping = p.enabled.unwrap_or(true).then(|| Pumping {
            shadow: p.shadow.unwrap_or(false),
            prefix_digits: p.prefix_digits.unwrap_or(2).min(6),
            window: Duration::minutes(i64::from(p.window_minutes.unwrap_or(60).max(1))),
            min_starts: p.min_starts.unwrap_or(30).max(1),
            max_conversion: p.max_conversion.unwrap_or(0.1),
            velocity_factor: p.velocity_factor.unwrap_or(5.0),
            baseline: Duration::days(i64::from(p.baseline_days.unwrap_or(7).max(1))),
            cooldown: Duration::minutes(i64::from(p.cooldown_minutes.unwrap_or(60).max(1))),
        });
        let mut test_numbers = HashMap::new();
        for t in tests {
            let number = PhoneNumber::parse(&t.number)
                .map_err(|e| anyhow::anyhow!("{label} test number {:?}: {e}", t.number))?;
            let outcome = match t.outcome.as_str() {
                "delivered" => TestOutcome::Delivered,
                "undeliverable" => TestOutcome::Undeliverable,
                "expired" => TestOutcome::Expired,
                "denied" => TestOutcome::Denied,
                "no_answer" => TestOutcome::NoAnswer,
                other => bail!(
                    "{label} test number {}: outcome {other:?} (expected delivered, undeliverable, expired, denied or no_answer)",
                    t.number
                ),
            };
            if t.code.trim().is_empty() {
                bail!("{label} test number {}: code is empty", t.number);
            }
            test_numbers.insert(
                number.as_str().to_string(),
                TestNumber {
                    code: t.code.trim().to_string(),
                    outcome,
                },
            );
        }
        let cap = self.daily_spend_cap.unwrap_or(0.0);
        if !cap.is_finite() || cap < 0.0 {
            bail!("{label}.daily_spend_cap must be >= 0");
        }
        Ok(FraudPolicy {
            min_start_interval: Duration::milliseconds(
                i64::try_from(self.min_start_interval_ms.unwrap_or(1000)).unwrap_or(i64::MAX),
            ),
            starts_per_hour: self.starts_per_number_hour.unwrap_or(10),
            starts_per_day: self.starts_per_number_day.unwrap_or(30),
            wrong_codes_per_day: self.wrong_codes_per_number_day.unwrap_or(10),
            app_rate: rate(self.app_requests_per_second, self.app_burst, "app")?,
            ip_rate: rate(self.ip_requests_per_second, self.ip_burst, "ip")?,
            allowed_countries: codes(&self.allowed_countries.clone().unwrap_or_default(), label)?,
            blocked_countries: codes(&self.blocked_countries.clone().unwrap_or_default(), label)?,
            methods,
            block_premium_rate: self.block_premium_rate.unwrap_or(true),
            block_shared_cost: self.block_shared_cost.unwrap_or(true),
            block_fixed_line_sms: self.block_fixed_line_sms.unwrap_or(false),
            block_voip: self.block_voip.unwrap_or(false),
            blocklist: prefixes(&self.blocklist.clone().unwrap_or_default(), label)?,
            allowlist: prefixes(&self.allowlist.clone().unwrap_or_default(), label)?,
            daily_spend_cap: cap,
            pumping,
            test_numbers,
        })
    }
}

/// Counts a rule decision.
pub fn hit(rule: &'static str, action: &'static str) {
    metrics::counter!("verifyd_rule_hits_total", "rule" => rule, "action" => action).increment(1);
}

fn matches_prefix(list: &[String], number: &str) -> bool {
    list.iter().any(|p| number.starts_with(p.as_str()))
}

/// The SMS-pumping prefix of a number: country code + `digits` national digits.
pub fn pumping_prefix(number: &PhoneNumber, digits: usize) -> String {
    let cc_len = number.country_code().to_string().len();
    number.as_str().chars().take(1 + cc_len + digits).collect()
}

fn too_quickly(message: String, wait: Duration) -> ApiError {
    let mut e = ApiError::new(ErrorCode::TooQuickly, message);
    e.retry_after = Some(wait.whole_seconds().max(1) as u64);
    e
}

impl FraudPolicy {
    /// Whether the number bypasses the fraud rules.
    pub fn allow_listed(&self, number: &PhoneNumber) -> bool {
        matches_prefix(&self.allowlist, number.as_str())
    }

    /// The destination rules (block list, countries, number types): pure, no store.
    pub fn destination(
        &self,
        number: &PhoneNumber,
        method: Method,
    ) -> Result<(), (&'static str, Reason)> {
        if matches_prefix(&self.blocklist, number.as_str()) {
            return Err(("blocklist", Reason::Blocked));
        }
        let region = number.region().unwrap_or("");
        let method_geo = self.methods.get(&method);
        let allowed = |list: &[String]| list.is_empty() || list.iter().any(|c| c == region);
        let blocked = |list: &[String]| list.iter().any(|c| c == region);
        if !allowed(&self.allowed_countries)
            || blocked(&self.blocked_countries)
            || method_geo
                .is_some_and(|g| !allowed(&g.allowed_countries) || blocked(&g.blocked_countries))
        {
            return Err(("geo", Reason::DestinationDenied));
        }
        let special = if self.block_premium_rate || self.block_shared_cost || self.block_voip {
            number.special_line_type()
        } else {
            None
        };
        let refused = match special {
            Some(LineType::PremiumRate) => self.block_premium_rate,
            Some(LineType::SharedCost) => self.block_shared_cost,
            Some(LineType::Voip) => self.block_voip,
            Some(_) => false,
            None => {
                self.block_fixed_line_sms
                    && matches!(method, Method::Sms | Method::Whatsapp)
                    && number.line_type() == LineType::FixedLine
            }
        };
        if refused {
            return Err(("number_type", Reason::DestinationDenied));
        }
        Ok(())
    }

    /// The checks a start must pass, as one [`Guard`] for the start's own write: the
    /// minimum interval between starts to the number and its starts per hour and per day
    /// (counted from its verifications), the number's wrong-code budget, and (unless the
    /// number is allow-listed) the SMS-pumping counts and the spend cap. A refusal changes
    /// nothing, so a refused start is not counted.
    pub fn start_guard(&self, app: &str, number: &PhoneNumber, amount: f64) -> StartGuard {
        let n = number.as_str();
        let mut g = StartGuard::default();
        // The number's start limits are counted from its verifications (no counter rows:
        // each would be one more page written per start).
        let mut recent = RecentStarts {
            app: app.to_string(),
            endpoint: n.to_string(),
            min_interval: self.min_start_interval.max(Duration::ZERO),
            limits: Vec::new(),
        };
        for (limit, window, max) in [
            (
                StartLimit::PerHour,
                Duration::hours(1),
                self.starts_per_hour,
            ),
            (StartLimit::PerDay, Duration::days(1), self.starts_per_day),
        ] {
            if max > 0 {
                recent.limits.push((window, i64::from(max)));
                g.recent_limits.push(limit);
            }
        }
        if recent.min_interval > Duration::ZERO || !recent.limits.is_empty() {
            g.guard.recent = Some(recent);
        }
        if self.wrong_codes_per_day > 0 {
            g.push(
                StartLimit::WrongCodes,
                wrong_codes_op(app, n, 0),
                Some(i64::from(self.wrong_codes_per_day) - 1),
            );
        }
        if self.allow_listed(number) {
            return g;
        }
        if let Some(p) = &self.pumping {
            let [starts, _, base] = pumping_ops(app, &pumping_prefix(number, p.prefix_digits), p);
            g.push(StartLimit::Counted, starts, None);
            g.push(StartLimit::Counted, base, None);
        }
        if self.daily_spend_cap > 0.0 && amount > 0.0 {
            // Micro-units of the currency, summed in a UTC-day bucket.
            g.push(
                StartLimit::Spend,
                spend_op(app, (amount * 1e6).round() as i64),
                Some((self.daily_spend_cap * 1e6).round() as i64),
            );
        }
        g
    }

    /// SMS pumping, before a start: refuses starts to a blocked prefix, and blocks the prefix
    /// when this start would make its velocity and conversion say pumping. Reads only (the
    /// start's guard counts it), so concurrent starts may overshoot the threshold by a few.
    pub async fn pumping(
        &self,
        store: &dyn Store,
        app: &str,
        number: &PhoneNumber,
        now: OffsetDateTime,
    ) -> Result<Result<(), &'static str>, ApiError> {
        let Some(p) = &self.pumping else {
            return Ok(Ok(()));
        };
        let prefix = pumping_prefix(number, p.prefix_digits);
        let block_key = format!("pump:{app}:{prefix}");
        if store.active_block(&block_key, now).await?.is_some() {
            return Ok(Err("sms_pumping_block"));
        }
        let counts = store
            .counter_sums(&pumping_ops(app, &prefix, p), now)
            .await?;
        // This start included.
        let (velocity, successes, history) = (
            counts[0] as f64 + 1.0,
            counts[1] as f64,
            counts[2] as f64 + 1.0,
        );
        // The prefix's own baseline: its average per window over the baseline period,
        // leaving out the current window.
        let windows = (p.baseline.as_seconds_f64() / p.window.as_seconds_f64() - 1.0).max(1.0);
        let baseline = ((history - velocity).max(0.0) / windows).max(1.0);
        let conversion = successes / velocity.max(1.0);
        if velocity >= f64::from(p.min_starts)
            && velocity >= p.velocity_factor * baseline
            && conversion < p.max_conversion
        {
            let reason = format!(
                "SMS pumping suspected for {prefix}: {velocity:.0} starts in {} min (baseline {baseline:.1}), conversion {:.0}%",
                p.window.whole_minutes(),
                conversion * 100.0
            );
            let key = if p.shadow {
                format!("shadow:{block_key}")
            } else {
                block_key
            };
            let already = store.active_block(&key, now).await?.is_some();
            if !already {
                store
                    .set_block(&Block {
                        key: key.clone(),
                        until: now + p.cooldown,
                        reason: reason.clone(),
                        created_at: now,
                    })
                    .await?;
                tracing::warn!(app = %app, prefix = %prefix, shadow = p.shadow, %reason, until = %(now + p.cooldown), "rule sms_pumping: prefix blocked");
                metrics::counter!("verifyd_pumping_blocks_total", "shadow" => if p.shadow { "true" } else { "false" }).increment(1);
            }
            if p.shadow {
                hit("sms_pumping", "shadow");
                return Ok(Ok(()));
            }
            return Ok(Err("sms_pumping"));
        }
        Ok(Ok(()))
    }

    /// The checks a report's write carries: the number's wrong-code budget (a wrong guess
    /// spends one, a right one needs the budget not to be exhausted) and, for a verified
    /// code, the SMS-pumping conversion count. Empty for numbers without a budget.
    pub fn report_guard(
        &self,
        app: &str,
        number: &PhoneNumber,
        guessed_wrong: bool,
        verified: bool,
    ) -> Guard {
        let mut guard = Guard::default();
        if self.wrong_codes_per_day > 0 {
            let budget = i64::from(self.wrong_codes_per_day);
            guard.counters.push(LimitedCounter {
                op: wrong_codes_op(app, number.as_str(), i64::from(guessed_wrong)),
                max: Some(if guessed_wrong { budget } else { budget - 1 }),
            });
        }
        if verified && let Some(p) = &self.pumping {
            let [_, ok, _] = pumping_ops(app, &pumping_prefix(number, p.prefix_digits), p);
            guard.counters.push(LimitedCounter {
                op: CounterOp { amount: 1, ..ok },
                max: None,
            });
        }
        guard
    }
}

/// The answer to a report refused by its guard.
pub fn wrong_code_budget_exhausted() -> ApiError {
    too_quickly(
        "Too many wrong codes for this number; try again later.".into(),
        Duration::hours(1),
    )
}

/// What each counter of a start's guard stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartLimit {
    /// The number's wrong-code budget (checked, not spent).
    WrongCodes,
    /// Starts to the number in the last hour.
    PerHour,
    /// Starts to the number in the last day.
    PerDay,
    /// Only counted (SMS-pumping velocity).
    Counted,
    /// The application's spend today.
    Spend,
}

/// A start's [`Guard`] and what each of its counters means.
#[derive(Debug, Clone, Default)]
pub struct StartGuard {
    /// Run with the start's write.
    pub guard: Guard,
    limits: Vec<StartLimit>,
    /// What each of `guard.recent`'s limits means.
    recent_limits: Vec<StartLimit>,
}

/// How a start is refused.
pub enum StartRefused {
    /// Answered with this error, nothing recorded (rate limits).
    Error(&'static str, ApiError),
    /// Recorded as a DENIED verification with this reason.
    Deny(&'static str, Reason),
}

impl StartGuard {
    /// Splits off the counters, to run (and count) on their own before the
    /// request event; what stays is re-checked with the insert, which is what records a
    /// start for the number's limits.
    pub fn take_counted(&mut self) -> StartGuard {
        StartGuard {
            guard: Guard {
                recent: self.guard.recent.clone(),
                counters: std::mem::take(&mut self.guard.counters),
            },
            limits: std::mem::take(&mut self.limits),
            recent_limits: self.recent_limits.clone(),
        }
    }

    fn push(&mut self, limit: StartLimit, op: CounterOp, max: Option<i64>) {
        self.guard.counters.push(LimitedCounter { op, max });
        self.limits.push(limit);
    }

    /// What a refusal of this guard answers, with the rule's name.
    pub fn refused(
        &self,
        refusal: Refusal,
        starts_per_hour: u32,
        starts_per_day: u32,
    ) -> StartRefused {
        let limit = match refusal {
            Refusal::Gate { wait } => {
                return StartRefused::Error(
                    "min_start_interval",
                    too_quickly(
                        "Cannot initiate verification to the same number too quickly".into(),
                        wait,
                    ),
                );
            }
            Refusal::Limit { index, .. } => self.limits.get(index).copied(),
            Refusal::Recent { index, .. } => self.recent_limits.get(index).copied(),
        };
        match limit {
            Some(StartLimit::WrongCodes) => {
                StartRefused::Error("wrong_code_budget", wrong_code_budget_exhausted())
            }
            Some(StartLimit::PerHour) => StartRefused::Error(
                "starts_per_number_hour",
                too_quickly(
                    format!(
                        "Cannot initiate more than {starts_per_hour} verifications to the same number per hour"
                    ),
                    Duration::minutes(1),
                ),
            ),
            Some(StartLimit::PerDay) => StartRefused::Error(
                "starts_per_number_day",
                too_quickly(
                    format!(
                        "Cannot initiate more than {starts_per_day} verifications to the same number per day"
                    ),
                    Duration::hours(1),
                ),
            ),
            Some(StartLimit::Spend) => StartRefused::Deny("spend_cap", Reason::NotEnoughCredit),
            Some(StartLimit::Counted) | None => StartRefused::Error(
                "guard",
                ApiError::internal(anyhow::anyhow!(
                    "a start guard refused an unlimited counter"
                )),
            ),
        }
    }
}

/// The SMS-pumping counters of a prefix: starts and successes in the window, starts over
/// the baseline period (amounts: this start counted, no success).
fn pumping_ops(app: &str, prefix: &str, p: &Pumping) -> [CounterOp; 3] {
    [
        CounterOp {
            key: format!("pump:starts:{app}:{prefix}"),
            amount: 1,
            window: p.window,
            bucket: Duration::minutes(1),
        },
        CounterOp {
            key: format!("pump:ok:{app}:{prefix}"),
            amount: 0,
            window: p.window,
            bucket: Duration::minutes(1),
        },
        CounterOp {
            key: format!("pump:base:{app}:{prefix}"),
            amount: 1,
            window: p.baseline,
            bucket: Duration::hours(1),
        },
    ]
}

/// Today's spend of an application (one bucket per UTC day; the tiny window sums only the
/// current day's bucket).
fn spend_op(app: &str, micros: i64) -> CounterOp {
    CounterOp {
        key: format!("spend:{app}"),
        amount: micros,
        window: Duration::microseconds(1),
        bucket: Duration::days(1),
    }
}

fn wrong_codes_op(app: &str, number: &str, amount: i64) -> CounterOp {
    CounterOp {
        key: format!("num:{app}:{number}:wrong"),
        amount,
        window: Duration::days(1),
        bucket: Duration::hours(1),
    }
}

/// The client IP: the TCP peer, or — when the peer is a trusted proxy — the right-most
/// `X-Forwarded-For` address that is not itself a trusted proxy.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let Some(header) = forwarded_for else {
        return peer;
    };
    let mut client = peer;
    for part in header.rsplit(',') {
        let Ok(ip) = part.trim().parse::<IpAddr>() else {
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(toml_like: FraudConfig) -> FraudPolicy {
        toml_like.policy(&[], "[fraud]").unwrap()
    }

    #[test]
    fn destination_rules_use_the_real_region_and_line_type() {
        let p = policy(FraudConfig {
            allowed_countries: Some(vec!["SE".into(), "GB".into()]),
            methods: Some(BTreeMap::from([(
                "sms".to_string(),
                MethodGeoConfig {
                    allowed_countries: vec![],
                    blocked_countries: vec!["GB".into()],
                },
            )])),
            blocklist: Some(vec!["+4670999".into()]),
            ..Default::default()
        });
        let se = PhoneNumber::parse("+46701234567").unwrap();
        assert!(p.destination(&se, Method::Sms).is_ok());
        let fr = PhoneNumber::parse("+33612345678").unwrap();
        assert_eq!(
            p.destination(&fr, Method::Sms),
            Err(("geo", Reason::DestinationDenied))
        );
        let gb = PhoneNumber::parse("+447400123456").unwrap();
        assert_eq!(
            p.destination(&gb, Method::Sms),
            Err(("geo", Reason::DestinationDenied))
        );
        assert!(p.destination(&gb, Method::Callout).is_ok());
        let blocked = PhoneNumber::parse("+46709991234").unwrap();
        assert_eq!(
            p.destination(&blocked, Method::Sms),
            Err(("blocklist", Reason::Blocked))
        );
        // UK premium rate (09xx) is refused by default.
        let premium = PhoneNumber::parse("+449098790000").unwrap();
        assert_eq!(premium.line_type(), LineType::PremiumRate);
        assert_eq!(
            p.destination(&premium, Method::Callout),
            Err(("number_type", Reason::DestinationDenied))
        );
    }

    #[test]
    fn prefixes_are_country_code_plus_national_digits() {
        let n = PhoneNumber::parse("+447400123456").unwrap();
        assert_eq!(pumping_prefix(&n, 2), "+4474");
        let us = PhoneNumber::parse("+12015550123").unwrap();
        assert_eq!(pumping_prefix(&us, 3), "+1201");
    }

    #[test]
    fn client_ip_trusts_only_configured_proxies() {
        let trusted: Vec<ipnet::IpNet> = vec![
            "127.0.0.0/8".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let outside: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(
            client_ip(outside, Some("1.2.3.4"), &trusted),
            outside,
            "untrusted peers cannot claim an IP"
        );
        assert_eq!(
            client_ip(proxy, Some("1.2.3.4, 10.1.1.1"), &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(proxy, Some("9.9.9.9, 1.2.3.4"), &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap(),
            "spoofed left entries are ignored"
        );
        assert_eq!(client_ip(proxy, None, &trusted), proxy);
    }

    #[test]
    fn app_overrides_merge_over_defaults() {
        let base = FraudConfig {
            starts_per_number_hour: Some(10),
            daily_spend_cap: Some(0.0),
            ..Default::default()
        };
        let over = FraudConfig {
            daily_spend_cap: Some(5.0),
            pumping: Some(PumpingConfig {
                shadow: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let m = base.merged(&over);
        assert_eq!(m.starts_per_number_hour, Some(10));
        assert_eq!(m.daily_spend_cap, Some(5.0));
        assert_eq!(m.pumping.unwrap().shadow, Some(true));
    }
}
