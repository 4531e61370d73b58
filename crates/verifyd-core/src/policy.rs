//! Per-application policy and flash-call CLI ranges.

use rand::Rng;
use time::Duration;

/// The knobs of one application. Defaults follow the issue: 6-digit codes, 10-minute expiry,
/// 3 wrong reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Code length for SMS, WhatsApp and callout codes (4..=10).
    pub code_length: usize,
    /// How long a code stays valid unless the request says otherwise.
    pub expiry: Duration,
    /// Wrong reports allowed before the verification fails for good.
    pub max_attempts: u32,
    /// Flash call: seconds the handset should wait for the call.
    pub flashcall_interception_timeout: u32,
    /// Flash call: seconds allowed for reporting the CLI; the verification expires after it.
    pub flashcall_report_timeout: u32,
    /// Flash call: seconds after which the handset should reject the call (0: at once).
    pub flashcall_deny_call_after: u32,
    /// Flash call: seconds to let the phone ring before cancelling.
    pub flashcall_dial_timeout: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            code_length: 6,
            expiry: Duration::minutes(10),
            max_attempts: 3,
            flashcall_interception_timeout: 60,
            flashcall_report_timeout: 120,
            flashcall_deny_call_after: 0,
            flashcall_dial_timeout: 10,
        }
    }
}

/// Smallest and largest configurable code length.
pub const CODE_LENGTH_RANGE: std::ops::RangeInclusive<usize> = 4..=10;
/// Bounds of a per-request expiry: one second to one day.
pub const MAX_EXPIRY: Duration = Duration::days(1);
/// Bounds of flash-call timeouts in seconds (Sinch: 5..=120).
pub const FLASHCALL_TIMEOUT_RANGE: std::ops::RangeInclusive<u32> = 5..=120;

/// Parses an `HH:MM:SS` expiry (`00:05:00`). Hours may exceed 23 up to [`MAX_EXPIRY`].
pub fn parse_expiry(value: &str) -> Option<Duration> {
    let mut parts = value.trim().split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let field = |v: &str, max: i64| -> Option<i64> {
        if v.is_empty() || v.len() > 2 || !v.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: i64 = v.parse().ok()?;
        (n <= max).then_some(n)
    };
    let total = Duration::seconds(field(h, 24)? * 3600 + field(m, 59)? * 60 + field(s, 59)?);
    (total > Duration::ZERO && total <= MAX_EXPIRY).then_some(total)
}

/// A range of numbers the operator owns and may present as caller id: an E.164 prefix plus
/// a count of random digits (`+4670000` + 4 → `+46700001234`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliRange {
    prefix_digits: String,
    random_digits: usize,
}

impl CliRange {
    /// Builds a range; `prefix` must be `+` and digits, `random_digits` 1..=10, and the full
    /// number at most 15 digits.
    ///
    /// # Errors
    /// A message naming the problem.
    pub fn new(prefix: &str, random_digits: usize) -> Result<Self, String> {
        let digits = prefix
            .strip_prefix('+')
            .ok_or_else(|| format!("CLI prefix {prefix:?} must start with '+'"))?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "CLI prefix {prefix:?} must be '+' followed by digits"
            ));
        }
        if !(1..=10).contains(&random_digits) {
            return Err(format!(
                "CLI range {prefix}: random digits must be 1..=10, got {random_digits}"
            ));
        }
        if digits.len() + random_digits > 15 {
            return Err(format!(
                "CLI range {prefix}: numbers would exceed 15 digits"
            ));
        }
        Ok(Self {
            prefix_digits: digits.to_string(),
            random_digits,
        })
    }

    /// Draws a CLI from the range.
    pub fn draw<R: Rng + ?Sized>(&self, rng: &mut R) -> String {
        let mut cli = String::with_capacity(1 + self.prefix_digits.len() + self.random_digits);
        cli.push('+');
        cli.push_str(&self.prefix_digits);
        for _ in 0..self.random_digits {
            cli.push(char::from(b'0' + rng.random_range(0..10u8)));
        }
        cli
    }

    /// The `cliFilter` regex the handset applies to incoming calls: it matches every CLI of
    /// this range, with or without `+`, and no number of another length or prefix.
    pub fn cli_filter(&self) -> String {
        format!("^\\+?{}\\d{{{}}}$", self.prefix_digits, self.random_digits)
    }

    /// Whether `cli` (`+` and digits) belongs to this range.
    pub fn contains(&self, cli: &str) -> bool {
        cli.strip_prefix('+')
            .and_then(|d| d.strip_prefix(self.prefix_digits.as_str()))
            .is_some_and(|rest| {
                rest.len() == self.random_digits && rest.bytes().all(|b| b.is_ascii_digit())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    #[test]
    fn expiry_parses_hh_mm_ss() {
        assert_eq!(parse_expiry("00:05:00"), Some(Duration::minutes(5)));
        assert_eq!(parse_expiry("01:02:03"), Some(Duration::seconds(3723)));
        assert_eq!(parse_expiry("24:00:00"), Some(Duration::days(1)));
        for bad in [
            "", "5", "00:00:00", "00:60:00", "24:00:01", "aa:00:00", "00:05", "1:2:3:4",
        ] {
            assert_eq!(parse_expiry(bad), None, "{bad}");
        }
    }

    #[test]
    fn cli_range_rejects_bad_prefixes() {
        assert!(CliRange::new("4670000", 4).is_err());
        assert!(CliRange::new("+46a", 4).is_err());
        assert!(CliRange::new("+46", 0).is_err());
        assert!(CliRange::new("+4670000000000", 4).is_err());
    }

    proptest! {
        #[test]
        fn drawn_cli_matches_its_filter_and_only_its_range(seed: u64) {
            let mut rng = SmallRng::seed_from_u64(seed);
            let a = CliRange::new("+4670000", 4).unwrap();
            let b = CliRange::new("+4670001", 4).unwrap();
            let cli = a.draw(&mut rng);
            let filter = regex_lite_match(&a.cli_filter(), &cli);
            prop_assert!(filter);
            prop_assert!(a.contains(&cli));
            prop_assert!(!b.contains(&cli));
            prop_assert!(!regex_lite_match(&b.cli_filter(), &cli));
        }
    }

    /// A tiny matcher for the exact filter shape `^\+?DIGITS\d{N}$`, so the core crate needs
    /// no regex engine; the server tests check the same filters with the `regex` crate.
    fn regex_lite_match(filter: &str, cli: &str) -> bool {
        let inner = filter.trim_start_matches("^\\+?").trim_end_matches('$');
        let (prefix, rest) = inner.split_once("\\d{").unwrap();
        let n: usize = rest.trim_end_matches('}').parse().unwrap();
        let digits = cli.trim_start_matches('+');
        digits.len() == prefix.len() + n && digits.starts_with(prefix)
    }
}
