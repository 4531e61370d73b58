//! E.164 phone numbers: parsed once at the edge, then passed around as [`PhoneNumber`].

use std::fmt;

use phonenumber::Type;
use phonenumber::metadata::Database;

/// How many compiled patterns phonenumber's regex cache keeps. Its own default is 100,
/// an LRU shared by every numbering plan: parsing numbers of every plan touches 132
/// patterns and their line types about 1,160 more, so once traffic spans more than about
/// 80 plans (or ten or so, when a rule asks for the line type) every parse compiled its
/// patterns again, 35 to 100 times slower. Measured with every plan's example numbers:
/// 281 µs per parse against 8 µs, 1.5 ms per line type against 17 µs. Room for all of
/// them costs about 115 MB more when every plan's line types are in use.
const REGEX_CACHE_CAPACITY: usize = 2048;

/// phonenumber's own metadata (the database its `parse` uses), with a regex cache that
/// holds every plan's patterns ([`REGEX_CACHE_CAPACITY`]).
fn database() -> &'static Database {
    static READY: std::sync::LazyLock<&'static Database> = std::sync::LazyLock::new(|| {
        let db: &'static Database = &phonenumber::metadata::DATABASE;
        // A poisoned lock means a pattern failed to compile in phonenumber, which panics
        // on its own; the capacity then stays as it was.
        if let Ok(mut cache) = db.cache().lock() {
            cache.set_capacity(REGEX_CACHE_CAPACITY);
        }
        db
    });
    *READY
}

/// Loads the numbering-plan metadata now (about 90 ms) rather than in the first request
/// that parses a number; servers call it before they listen.
pub fn warm_up() {
    database();
}

/// Why a string is not an acceptable E.164 number. Each variant maps to a Sinch error
/// (`40005` for the missing plus, `40001` otherwise).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    /// The number does not start with `+`.
    #[error("Phone number missing leading plus sign")]
    MissingPlus,
    /// The number is empty.
    #[error("Phone number is empty")]
    Empty,
    /// The number cannot be a phone number in its country.
    #[error("Number {number} is invalid. {detail}")]
    Invalid {
        /// The number as received (safe to echo back to the caller that sent it).
        number: String,
        /// Why, in a few words (`Too short.`).
        detail: &'static str,
    },
}

/// The kind of line a number belongs to, from the numbering-plan metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineType {
    /// A mobile number.
    Mobile,
    /// A fixed-line number.
    FixedLine,
    /// Mobile or fixed line; the plan does not tell (e.g. NANP).
    FixedLineOrMobile,
    /// Free phone.
    TollFree,
    /// Premium rate: calls and SMS earn the range holder money.
    PremiumRate,
    /// Shared cost.
    SharedCost,
    /// Voice over IP.
    Voip,
    /// Anything else (personal, pager, UAN, unknown).
    Other,
}

/// A valid, possible phone number in E.164 form (`+46700000000`).
#[derive(Debug, Clone)]
pub struct PhoneNumber {
    e164: String,
    country_code: u16,
    region: Option<String>,
    /// Known when parsed here (the metadata lookup is costly, so it is done once); numbers
    /// rebuilt from storage compute it on demand.
    line_type: Option<LineType>,
}

impl PhoneNumber {
    /// Parses a number that must be in international form with a leading `+`.
    ///
    /// Spaces, dashes, dots and parentheses are tolerated and removed. The number must be
    /// of a possible length for its country; it need not be assigned in the metadata (test
    /// ranges are common), but its country code must exist.
    ///
    /// # Errors
    /// [`PhoneError`] describing the first problem found.
    pub fn parse(input: &str) -> Result<Self, PhoneError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(PhoneError::Empty);
        }
        if !trimmed.starts_with('+') {
            return Err(PhoneError::MissingPlus);
        }
        let invalid = |detail| PhoneError::Invalid {
            number: trimmed.chars().take(32).collect(),
            detail,
        };
        let mut digits = String::with_capacity(16);
        for c in trimmed[1..].chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' | '.' | '(' | ')' => {}
                _ => return Err(invalid("Not a number.")),
            }
        }
        if digits.len() < 5 {
            return Err(invalid("Too short."));
        }
        if digits.len() > 15 {
            return Err(invalid("Too long."));
        }
        let db = database();
        let parsed = phonenumber::parse_with(db, None, format!("+{digits}")).map_err(|e| {
            use phonenumber::ParseError as P;
            invalid(match e {
                P::InvalidCountryCode => "Invalid country code.",
                P::TooShortNsn | P::TooShortAfterIdd => "Too short.",
                P::TooLong => "Too long.",
                _ => "Not a number.",
            })
        })?;
        let national = parsed.national().to_string();
        // The plan the number belongs to (one region lookup: `parsed.country().id()` would
        // repeat it), else the first plan of its country code.
        let plan = parsed.metadata(db);
        let region = plan
            .map(phonenumber::metadata::Metadata::id)
            .filter(|id| *id != "001" && id.parse::<phonenumber::country::Id>().is_ok())
            .map(str::to_string);
        let meta = plan.or_else(|| {
            db.by_code(&parsed.code().value())
                .and_then(|m| m.into_iter().next())
        });
        let Some(meta) = meta else {
            return Err(invalid("Invalid country code."));
        };
        let lengths = meta.descriptors().general().possible_length();
        let len = national.len() as u16;
        if let (Some(min), Some(max)) = (lengths.first(), lengths.last()) {
            if len < *min {
                return Err(invalid("Too short."));
            }
            if len > *max {
                return Err(invalid("Too long."));
            }
            if !lengths.contains(&len) {
                return Err(invalid("Invalid length."));
            }
        }
        // The line type is worked out when a rule asks (matching a number against every
        // type of its plan was half the cost of parsing it).
        let line_type = None;
        // E.164 is the country code and the national number (with its leading zeros, as
        // Italian numbers have): built directly, the formatter's regexes are not needed.
        Ok(Self {
            e164: format!("+{}{national}", parsed.code().value()),
            country_code: parsed.code().value(),
            region,
            line_type,
        })
    }

    /// Rebuilds a number that was validated before (read back from the store) without
    /// parsing it again.
    pub fn from_parts(e164: String, country_code: u16, region: Option<String>) -> Self {
        Self {
            e164,
            country_code,
            region,
            line_type: None,
        }
    }

    /// The E.164 string, with its `+`.
    pub fn as_str(&self) -> &str {
        &self.e164
    }

    /// The country calling code (`46` for Sweden).
    pub fn country_code(&self) -> u16 {
        self.country_code
    }

    /// The ISO 3166-1 alpha-2 region (`SE`), when the number belongs to one.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// The line type from the numbering plan.
    pub fn line_type(&self) -> LineType {
        if let Some(known) = self.line_type {
            return known;
        }
        match phonenumber::parse_with(database(), None, &self.e164) {
            Ok(parsed) => line_type_of(&parsed),
            Err(_) => LineType::Other,
        }
    }

    /// Whether the number is premium rate, toll free, shared cost or VoIP (the first that
    /// matches, in the numbering plan's order), testing only those types: cheaper than
    /// [`Self::line_type`], which also tells mobile from fixed line.
    pub fn special_line_type(&self) -> Option<LineType> {
        if let Some(known) = self.line_type {
            return matches!(
                known,
                LineType::PremiumRate | LineType::TollFree | LineType::SharedCost | LineType::Voip
            )
            .then_some(known);
        }
        let meta = match &self.region {
            Some(region) => database().by_id(region.as_str()),
            None => database()
                .by_code(&self.country_code)
                .and_then(|m| m.into_iter().next()),
        }?;
        let national = self
            .e164
            .get(1 + decimal_digits(self.country_code)..)
            .unwrap_or_default();
        SpecialTypes::line_type_in(meta, national)
    }

    /// The number masked for logs: country code and last two digits kept (`+46*******00`).
    pub fn masked(&self) -> String {
        mask(&self.e164)
    }
}

/// Every numbering plan, the non-geographic ones included (`Database::iter` yields only one
/// plan per region, and all of those share the region "001").
fn every_plan() -> impl Iterator<Item = &'static phonenumber::metadata::Metadata> {
    (1..1000u16).flat_map(|code| database().by_code(&code).unwrap_or_default())
}

/// Every numbering plan's example mobile number, in E.164 form (for benchmarks and tests
/// that need numbers from all over the world).
pub fn example_mobile_numbers() -> Vec<String> {
    every_plan()
        .filter_map(|meta| {
            let example = meta.descriptors().mobile()?.example()?;
            Some(format!("+{}{example}", meta.country_code()))
        })
        .collect()
}

/// How many decimal digits `n` has.
fn decimal_digits(n: u16) -> usize {
    match n {
        0..=9 => 1,
        10..=99 => 2,
        100..=999 => 3,
        1000..=9999 => 4,
        _ => 5,
    }
}

/// One numbering-plan pattern, tested as phonenumber's `Descriptor::is_match` tests it (a
/// possible length, then a match starting at the first digit), but compiled once, anchored,
/// and without the crate's regex cache: that cache is an LRU behind one global mutex that
/// hashes the pattern's source on every call, which cost more than the match itself.
struct Pattern {
    regex: Option<regex::Regex>,
    lengths: Vec<u16>,
    descriptor: &'static phonenumber::metadata::Descriptor,
}

impl Pattern {
    fn new(descriptor: &'static phonenumber::metadata::Descriptor) -> Self {
        Self {
            // The metadata's patterns are laid out with whitespace, and phonenumber reads
            // them that way too. A pattern the regex crate cannot take anchored (none in
            // today's metadata) falls back to the descriptor's own test.
            regex: regex::RegexBuilder::new(&format!(
                "^(?:{})",
                descriptor.national_number().as_str()
            ))
            .ignore_whitespace(true)
            .build()
            .ok(),
            lengths: descriptor.possible_length().to_vec(),
            descriptor,
        }
    }

    fn is_match(&self, national: &str) -> bool {
        let Some(regex) = &self.regex else {
            return self.descriptor.is_match(national);
        };
        (self.lengths.is_empty() || self.lengths.contains(&(national.len() as u16)))
            && regex.is_match(national)
    }
}

/// A plan's general pattern and its premium-rate, toll-free, shared-cost and VoIP patterns,
/// in that order.
struct SpecialTypes {
    general: Pattern,
    special: Vec<(Pattern, LineType)>,
}

impl SpecialTypes {
    /// The special line type of `national` in `meta`'s plan, whose patterns are compiled
    /// on first use.
    fn line_type_in(
        meta: &'static phonenumber::metadata::Metadata,
        national: &str,
    ) -> Option<LineType> {
        // Keyed by region and country code: the non-geographic plans (+800, +882, +979, ...)
        // all have the region "001".
        type Plans =
            std::collections::HashMap<(&'static str, u16), std::sync::OnceLock<SpecialTypes>>;
        static PLANS: std::sync::LazyLock<Plans> = std::sync::LazyLock::new(|| {
            every_plan()
                .map(|m| ((m.id(), m.country_code()), std::sync::OnceLock::new()))
                .collect()
        });
        let compile = || {
            let d = meta.descriptors();
            SpecialTypes {
                general: Pattern::new(d.general()),
                special: [
                    (d.premium_rate(), LineType::PremiumRate),
                    (d.toll_free(), LineType::TollFree),
                    (d.shared_cost(), LineType::SharedCost),
                    (d.voip(), LineType::Voip),
                ]
                .into_iter()
                .filter_map(|(desc, kind)| desc.map(|desc| (Pattern::new(desc), kind)))
                .collect(),
            }
        };
        match PLANS.get(&(meta.id(), meta.country_code())) {
            Some(cell) => cell.get_or_init(compile).line_type(national),
            // Not from phonenumber's own database (cannot happen): compiled for this call.
            None => compile().line_type(national),
        }
    }

    fn line_type(&self, national: &str) -> Option<LineType> {
        if !self.general.is_match(national) {
            return None;
        }
        self.special
            .iter()
            .find(|(pattern, _)| pattern.is_match(national))
            .map(|(_, kind)| *kind)
    }
}

fn line_type_of(parsed: &phonenumber::PhoneNumber) -> LineType {
    {
        match parsed.number_type(database()) {
            Type::Mobile => LineType::Mobile,
            Type::FixedLine => LineType::FixedLine,
            Type::FixedLineOrMobile => LineType::FixedLineOrMobile,
            Type::TollFree => LineType::TollFree,
            Type::PremiumRate => LineType::PremiumRate,
            Type::SharedCost => LineType::SharedCost,
            Type::Voip => LineType::Voip,
            _ => LineType::Other,
        }
    }
}

/// Masks any number-like string for logging: keeps the `+`, up to three leading digits and
/// the last two; everything between becomes `*`.
pub fn mask(raw: &str) -> String {
    let chars: Vec<char> = raw.chars().collect();
    let n = chars.len();
    if n <= 4 {
        return "*".repeat(n);
    }
    let head = if chars[0] == '+' { 3.min(n - 2) } else { 2 };
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| if i < head || i >= n - 2 { *c } else { '*' })
        .collect()
}

/// Equality and hashing are by the number (the cached line type does not count).
impl PartialEq for PhoneNumber {
    fn eq(&self, other: &Self) -> bool {
        self.e164 == other.e164
            && self.country_code == other.country_code
            && self.region == other.region
    }
}

impl Eq for PhoneNumber {}

impl std::hash::Hash for PhoneNumber {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.e164.hash(state);
    }
}

impl fmt::Display for PhoneNumber {
    /// Displays the *masked* form, so a number never reaches a log line by accident.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Numbers of every plan, and their line types, fit in phonenumber's regex cache: it
    /// grows past phonenumber's own capacity of 100 and, with room left, evicts nothing,
    /// so no pattern is compiled twice.
    #[test]
    fn every_plans_patterns_stay_compiled() {
        let examples: Vec<String> = every_plan()
            .flat_map(|meta| {
                let d = meta.descriptors();
                [d.mobile(), d.fixed_line()]
                    .into_iter()
                    .flatten()
                    .filter_map(|d| d.example())
                    .map(move |e| format!("+{}{e}", meta.country_code()))
            })
            .collect();
        let mut parsed = 0;
        for number in &examples {
            if let Ok(n) = PhoneNumber::parse(number) {
                let _ = n.line_type();
                parsed += 1;
            }
        }
        let kept = database().cache().lock().map(|c| c.len()).unwrap_or(0);
        assert!(parsed > 400, "{parsed}");
        assert!(kept > 100, "{kept} patterns cached");
        assert!(kept < REGEX_CACHE_CAPACITY, "{kept} patterns cached");
    }

    #[test]
    fn parses_a_swedish_mobile_number_with_region() {
        let n = PhoneNumber::parse("+46700000000").unwrap();
        assert_eq!(n.as_str(), "+46700000000");
        assert_eq!(n.region(), Some("SE"));
        assert_eq!(n.country_code(), 46);
    }

    /// The shortcut agrees with the full type on the example numbers of every plan. Where
    /// the national number starts with a significant 0 (Niger, Tonga, Macau...),
    /// phonenumber 0.3's own `number_type` drops the 0 and answers "other"; there the
    /// shortcut must give the example's own type.
    #[test]
    fn special_line_type_agrees_with_the_full_line_type() {
        let mut checked = 0;
        let mut special = 0;
        let mut non_geographic = 0;
        for meta in every_plan() {
            non_geographic += usize::from(meta.id() == "001");
            let d = meta.descriptors();
            let examples = [
                (d.mobile(), None),
                (d.fixed_line(), None),
                (d.premium_rate(), Some(LineType::PremiumRate)),
                (d.toll_free(), Some(LineType::TollFree)),
                (d.shared_cost(), Some(LineType::SharedCost)),
                (d.voip(), Some(LineType::Voip)),
                (d.personal_number(), None),
            ];
            for (desc, own) in examples {
                let Some(example) = desc.and_then(|d| d.example()) else {
                    continue;
                };
                let Ok(n) = PhoneNumber::parse(&format!("+{}{example}", meta.country_code()))
                else {
                    continue;
                };
                let expected = if example.starts_with('0') {
                    own
                } else {
                    let full = n.line_type();
                    matches!(
                        full,
                        LineType::PremiumRate
                            | LineType::TollFree
                            | LineType::SharedCost
                            | LineType::Voip
                    )
                    .then_some(full)
                };
                assert_eq!(n.special_line_type(), expected, "{}", n.as_str());
                checked += 1;
                special += usize::from(expected.is_some());
            }
        }
        assert!(checked > 1000 && special > 300, "{checked} / {special}");
        // The plans without a region (+800, +882, +979, ...) are told apart.
        assert!(non_geographic > 5, "{non_geographic}");
    }

    #[test]
    fn tolerates_formatting_characters() {
        let n = PhoneNumber::parse(" +33 6 12-34-56-78 ").unwrap();
        assert_eq!(n.as_str(), "+33612345678");
        assert_eq!(n.region(), Some("FR"));
    }

    #[test]
    fn rejects_a_number_without_plus() {
        assert_eq!(
            PhoneNumber::parse("46700000000"),
            Err(PhoneError::MissingPlus)
        );
    }

    #[test]
    fn rejects_too_short_numbers_like_sinch() {
        let err = PhoneNumber::parse("+4813").unwrap_err();
        assert_eq!(err.to_string(), "Number +4813 is invalid. Too short.");
    }

    #[test]
    fn rejects_letters_and_unknown_country_codes() {
        assert!(PhoneNumber::parse("+46abc").is_err());
        assert!(PhoneNumber::parse("+999123456789").is_err());
        assert!(PhoneNumber::parse("+4670000000000000000").is_err());
    }

    #[test]
    fn italian_numbers_keep_their_leading_zero() {
        let n = PhoneNumber::parse("+39 06 1234 5678").unwrap();
        assert_eq!(n.as_str(), "+390612345678");
    }

    #[test]
    fn nanp_numbers_get_their_region() {
        let n = PhoneNumber::parse("+12015550123").unwrap();
        assert_eq!(n.region(), Some("US"));
    }

    #[test]
    fn masking_hides_the_middle() {
        assert_eq!(mask("+46700000012"), "+46*******12");
        assert_eq!(
            format!("{}", PhoneNumber::parse("+46700000012").unwrap()),
            "+46*******12"
        );
        assert_eq!(mask("123"), "***");
    }
}
