//! The verifyd domain: what a phone-number verification *is*, with no I/O.
//!
//! This crate owns the rules. It knows nothing about HTTP, JSON, SQL or sockets; time and
//! randomness come in as parameters (a [`Clock`] reading, an [`rand::Rng`]) so every rule —
//! expiry, attempt limits, supersession — is tested without sleeping.
//!
//! # Layout
//! - [`phone`]: E.164 numbers, parsed once at the edge, and masking for logs.
//! - [`method`]: the five verification methods and the status/reason vocabulary.
//! - [`code`]: OTP generation from a CSPRNG and keyed, constant-time code hashing.
//! - [`verification`]: the verification aggregate and its state machine.
//! - [`policy`]: per-application knobs (code length, expiry, attempts) and flash-call CLI ranges.
//! - [`price`]: money and the price table.
//! - [`locale`]: `Accept-Language` negotiation and message templates.
//! - [`clock`]: the `Clock` trait and a manual clock for tests.

pub mod clock;
pub mod code;
pub mod locale;
pub mod method;
pub mod phone;
pub mod policy;
pub mod price;
pub mod verification;

pub use clock::{Clock, ManualClock};
pub use code::{CodeHash, CodeHasher, CodeType};
pub use method::{CallResult, Method, Reason, Source, Status};
pub use phone::{PhoneError, PhoneNumber};
pub use policy::{CliRange, Policy};
pub use price::{Money, PriceTable};
pub use verification::{
    CallInfo, NewVerification, ReportAnswer, ReportOutcome, Verification, VerificationId,
};
