//! Building the configured delivery channels (`[[channels.*]]`). The dev inbox is always
//! there; real channels are added here as they are configured.

use std::sync::Arc;

use verifyd_channels::{Channel, ReceiptSender};

use crate::config::Settings;

/// Builds every configured channel; they push delivery reports to `receipts`.
///
/// # Errors
/// If a channel's configuration is unusable.
pub async fn build(
    _settings: &Settings,
    _receipts: ReceiptSender,
) -> anyhow::Result<Vec<Arc<dyn Channel>>> {
    Ok(Vec::new())
}
