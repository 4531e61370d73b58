//! HTTP tests of verifyd over a real socket: the server runs on 127.0.0.1:0 with a real
//! SQLite file, a manual clock and a seeded RNG; requests are signed exactly as the SDKs
//! sign them.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a failed unwrap is a failed test"
)]

mod auth;
mod callbacks;
mod camara;
mod channels;
mod delivery;
mod errors;
mod fraud;
mod helpers;
mod receiver;
mod report;
mod seamless;
mod sip;
mod smpp;
mod start;
mod status;
