//! The wire contract of the Sinch Verification REST API v1, as verifyd speaks it.
//!
//! Everything here is data and pure functions: serde models of every request, response,
//! error and callback body, the error-code table, and the Sinch application-signing scheme.
//! The server and any Rust client share these types. Shapes follow
//! `shared/reference/sinch-verification-wire.md`; where an SDK sends something odd, the
//! request models accept it (unknown keys ignored, `flashCall`/`flashcall` aliases, Python
//! 1.x top-level `expiry`/`template`).
//!
//! # Layout
//! - [`model`]: requests, responses, callback events.
//! - [`error`]: the Sinch error body and the code table.
//! - [`signing`]: Content-MD5, string-to-sign and HMAC-SHA256 signatures.

pub mod error;
pub mod model;
pub mod signing;

pub use error::{ErrorBody, ErrorCode};
