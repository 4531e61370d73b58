//! One-time codes: drawn from a CSPRNG, stored only as a keyed hash, compared in constant time.

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The alphabet of a code (`codeType` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CodeType {
    /// Digits `0-9`.
    #[default]
    Numeric,
    /// Upper-case letters `A-Z`.
    Alpha,
    /// Upper-case letters and digits.
    Alphanumeric,
}

const DIGITS: &[u8] = b"0123456789";
const LETTERS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

impl CodeType {
    /// The wire value (`Numeric`, `Alpha`, `Alphanumeric`).
    pub fn as_str(self) -> &'static str {
        match self {
            CodeType::Numeric => "Numeric",
            CodeType::Alpha => "Alpha",
            CodeType::Alphanumeric => "Alphanumeric",
        }
    }

    /// Parses the wire value, case-insensitively.
    pub fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_lowercase().as_str() {
            "numeric" => Some(CodeType::Numeric),
            "alpha" => Some(CodeType::Alpha),
            "alphanumeric" => Some(CodeType::Alphanumeric),
            _ => None,
        }
    }

    fn alphabet(self) -> &'static [u8] {
        match self {
            CodeType::Numeric => DIGITS,
            CodeType::Alpha => LETTERS,
            CodeType::Alphanumeric => ALNUM,
        }
    }

    /// Draws a code of `len` characters uniformly from this alphabet.
    ///
    /// `rng` must be a CSPRNG in production (the server passes the OS-seeded `ThreadRng`);
    /// tests pass a seeded RNG. `random_range` is unbiased (rejection sampling).
    pub fn generate<R: Rng + ?Sized>(self, len: usize, rng: &mut R) -> String {
        let alphabet = self.alphabet();
        (0..len)
            .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
            .collect()
    }

    /// Whether `code` is made only of this alphabet's characters (case-insensitive).
    pub fn accepts(self, code: &str) -> bool {
        let upper = code.to_ascii_uppercase();
        !upper.is_empty() && upper.bytes().all(|b| self.alphabet().contains(&b))
    }
}

/// The keyed hash of a code. Only this is stored; the code itself never is.
#[derive(Clone, PartialEq, Eq)]
pub struct CodeHash(pub [u8; 32]);

impl std::fmt::Debug for CodeHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CodeHash(..)")
    }
}

/// Hashes codes with HMAC-SHA256 under a server-wide secret key, bound to one verification.
///
/// Binding the verification id into the hash means a leaked hash is useless for any other
/// verification, and the server key means a stolen database alone does not allow an offline
/// search of the (small) code space.
#[derive(Clone)]
pub struct CodeHasher {
    key: [u8; 32],
}

impl std::fmt::Debug for CodeHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CodeHasher(..)")
    }
}

impl CodeHasher {
    /// A hasher with the given 32-byte secret key.
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// Normalises what a user or device reports: surrounding whitespace dropped, letters
    /// upper-cased. A flash-call CLI is reduced to `+` and its digits.
    pub fn normalize(code: &str, is_cli: bool) -> String {
        if is_cli {
            let digits: String = code.chars().filter(char::is_ascii_digit).collect();
            format!("+{digits}")
        } else {
            code.trim().to_ascii_uppercase()
        }
    }

    /// The hash of `code` for verification `verification_id`.
    pub fn hash(&self, verification_id: &[u8], code: &str) -> CodeHash {
        // HMAC zero-pads keys shorter than the 64-byte block (RFC 2104), so padding here
        // gives the same MAC as the 32-byte key and makes construction infallible.
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(&self.key);
        let mut mac = <Hmac<Sha256> as KeyInit>::new(&block.into());
        mac.update(verification_id);
        mac.update(&[0]);
        mac.update(code.as_bytes());
        CodeHash(mac.finalize().into_bytes().into())
    }

    /// Whether `candidate` hashes to `expected`, compared in constant time.
    pub fn matches(&self, verification_id: &[u8], candidate: &str, expected: &CodeHash) -> bool {
        let got = self.hash(verification_id, candidate);
        got.0.ct_eq(&expected.0).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    #[test]
    fn codes_have_the_requested_length_and_alphabet() {
        let mut rng = SmallRng::seed_from_u64(7);
        for t in [CodeType::Numeric, CodeType::Alpha, CodeType::Alphanumeric] {
            for len in 4..=10 {
                let code = t.generate(len, &mut rng);
                assert_eq!(code.len(), len);
                assert!(t.accepts(&code), "{code} for {t:?}");
            }
        }
        assert!(!CodeType::Numeric.accepts("12a4"));
        assert!(CodeType::Alpha.accepts("abcd"));
    }

    #[test]
    fn every_digit_appears_in_numeric_codes() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut seen = [false; 10];
        for _ in 0..200 {
            for b in CodeType::Numeric.generate(6, &mut rng).bytes() {
                seen[(b - b'0') as usize] = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn hash_binds_code_to_verification() {
        let h = CodeHasher::new([9; 32]);
        let a = h.hash(b"v1", "123456");
        assert!(h.matches(b"v1", "123456", &a));
        assert!(!h.matches(b"v2", "123456", &a));
        assert!(!h.matches(b"v1", "123457", &a));
        let other_key = CodeHasher::new([8; 32]);
        assert!(!other_key.matches(b"v1", "123456", &a));
    }

    #[test]
    fn cli_normalisation_keeps_only_digits() {
        assert_eq!(CodeHasher::normalize("+46 (700) 12-34", true), "+467001234");
        assert_eq!(CodeHasher::normalize("467001234", true), "+467001234");
        assert_eq!(CodeHasher::normalize(" ab12 ", false), "AB12");
    }

    proptest! {
        #[test]
        fn generated_codes_always_match_their_own_hash(seed: u64, len in 4usize..=10) {
            let mut rng = SmallRng::seed_from_u64(seed);
            let h = CodeHasher::new([3; 32]);
            let code = CodeType::Alphanumeric.generate(len, &mut rng);
            let hash = h.hash(b"id", &CodeHasher::normalize(&code, false));
            prop_assert!(h.matches(b"id", &CodeHasher::normalize(&code.to_lowercase(), false), &hash));
        }
    }
}
