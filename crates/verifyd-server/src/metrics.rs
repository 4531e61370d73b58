//! Prometheus metrics through the `metrics` facade. One recorder per process (installed on
//! first use); `/metrics` renders it.
//!
//! Conversion rate is `verifyd_verifications_finished_total{status="SUCCESSFUL"}` over
//! `verifyd_verifications_started_total`, per method and country.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use verifyd_core::Verification;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's Prometheus handle (installs the recorder on first call). `None` if another
/// recorder was installed first.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok().map(|()| handle)
        })
        .as_ref()
}

fn country(v: &Verification) -> String {
    v.identity.region().unwrap_or("ZZ").to_string()
}

/// A verification started.
pub fn started(v: &Verification) {
    metrics::counter!("verifyd_verifications_started_total",
        "method" => v.method.as_str(), "country" => country(v))
    .increment(1);
}

/// A verification reached a final state.
pub fn finished(v: &Verification) {
    metrics::counter!("verifyd_verifications_finished_total",
        "method" => v.method.as_str(),
        "country" => country(v),
        "status" => v.status.as_str(),
        "reason" => v.reason.map_or("", |r| r.as_str()))
    .increment(1);
}

/// A request refused by a rate limit.
pub fn rate_limited(limit: &'static str) {
    metrics::counter!("verifyd_rate_limited_total", "limit" => limit).increment(1);
}

/// A hand-over to a delivery channel.
pub fn delivery(channel: &str, outcome: &'static str) {
    metrics::counter!("verifyd_deliveries_total", "channel" => channel.to_string(), "outcome" => outcome)
        .increment(1);
}
