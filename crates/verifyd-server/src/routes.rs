//! HTTP routes. Handlers are thin: extract, call [`crate::service`], answer.
//!
//! # Layout
//! - [`verifications`]: the six Sinch Verification API v1 operations.
//! - [`device`]: the seamless `targetUri`, opened by the device.
//! - [`ops`]: health, readiness and the dev inbox.
//! - [`admin`]: the operator API (callback events).

pub mod admin;
pub mod device;
pub mod ops;
pub mod verifications;
