//! The verifyd server as a library: the Sinch Verification API v1 over axum.
//!
//! The binary (`verifyd`) only parses its command line and calls into here; tests build the
//! same [`App`] with an injected clock, RNG and store and serve it on `127.0.0.1:0`.
//!
//! # Layout
//! - [`config`]: the configuration file and its validation into `Settings`.
//! - [`app`]: building the server, the router, the expiry sweeper, serving.
//! - [`auth`]: Signed / Basic / Public authentication.
//! - [`camara`]: the CAMARA Number Verification client (OIDC flow, `/verify`).
//! - [`delivery`]: routes, sealed delivery jobs, failover, receipts.
//! - [`callbacks`]: the request event, and result / SMS-delivered events from the outbox.
//! - [`extract`]: extractors whose rejections are Sinch errors.
//! - [`fraud`]: rate limits, attempt budgets, destination rules, SMS pumping, test numbers.
//! - [`metrics`]: Prometheus metrics.
//! - [`service`]: the use cases (start, report, status, seamless completion).
//! - [`routes`]: thin HTTP handlers.
//! - [`error`]: `ApiError`, the only place outcomes meet HTTP statuses.
//! - [`telemetry`]: logging set-up.

pub mod app;
pub mod auth;
pub mod callbacks;
pub mod camara;
pub mod channels;
pub mod config;
pub mod delivery;
pub mod error;
pub mod extract;
pub mod fraud;
pub mod metrics;
pub mod routes;
pub mod service;
pub mod state;
pub mod telemetry;

pub use app::{App, Parts, SystemClock};
pub use config::{Config, Settings};
