//! Shared state of a running server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use rand::RngCore;
use time::{Duration, OffsetDateTime};
use verifyd_channels::DevInbox;
use verifyd_core::{Clock, CodeHasher, Policy};
use verifyd_store::{Application, Store};

use crate::config::Settings;

/// How long an application read from the store is trusted before it is read again, so a
/// change (new secret, callback URL) reaches every node within this window.
const APP_CACHE_TTL: Duration = Duration::seconds(10);

/// Cheap to clone; everything lives behind one `Arc`.
#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    pub settings: Settings,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub hasher: CodeHasher,
    /// Derives the CAMARA flow's `state`, `nonce` and PKCE verifier (server key
    /// `seamless-oidc`, the same on every node sharing the store). Loaded only when a
    /// CAMARA provider is configured.
    pub oidc_key: Option<[u8; 32]>,
    /// The CSPRNG for codes, ids, CLIs and tokens. A std `Mutex`: each use is a few
    /// microseconds of drawing and never crosses an `.await`.
    pub rng: Mutex<Box<dyn RngCore + Send>>,
    /// Routes, sealing and delivery settings.
    pub dispatcher: crate::delivery::Dispatcher,
    /// Present only in dev-inbox mode; `GET /inbox/v1/messages` is routed only then.
    pub inbox: Option<Arc<DevInbox>>,
    pub apps: AppCache,
    /// Callback clients, settings and the worker's wake-up.
    pub callbacks: crate::callbacks::Callbacks,
    /// Every configured channel by name (the dev inbox included).
    pub channels: HashMap<String, Arc<dyn verifyd_channels::Channel>>,
    /// Delivery reports from channels, taken by `serve` to run the receipts loop.
    pub receipts: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<verifyd_channels::Receipt>>>,
    /// Where channels and webhooks push delivery reports.
    pub receipts_tx: verifyd_channels::ReceiptSender,
}

impl AppState {
    pub(crate) fn now(&self) -> OffsetDateTime {
        self.0.clock.now()
    }

    /// Runs `f` with the server's RNG.
    pub(crate) fn with_rng<T>(&self, f: impl FnOnce(&mut dyn RngCore) -> T) -> T {
        let mut rng = self.0.rng.lock().unwrap_or_else(|e| e.into_inner());
        f(rng.as_mut())
    }

    /// The fraud rules of an application.
    pub(crate) fn fraud(&self, app_key: &str) -> &crate::fraud::FraudPolicy {
        self.0
            .settings
            .app_fraud
            .get(app_key)
            .unwrap_or(&self.0.settings.default_fraud)
    }

    /// The policy for an application.
    pub(crate) fn policy(&self, app_key: &str) -> &Policy {
        self.0
            .settings
            .app_policies
            .get(app_key)
            .unwrap_or(&self.0.settings.default_policy)
    }
}

/// An application with its decoded signing key.
pub struct KnownApp {
    /// The stored application.
    pub app: Application,
    /// `Base64Decode(secret)`: the HMAC key.
    pub key_bytes: Vec<u8>,
    fetched_at: OffsetDateTime,
}

/// A small read-through cache of applications.
#[derive(Default)]
pub(crate) struct AppCache {
    /// A std `RwLock`: lookups are map reads; the store is consulted outside the lock.
    entries: RwLock<HashMap<String, Arc<KnownApp>>>,
}

impl AppCache {
    pub async fn get(
        &self,
        store: &dyn Store,
        key: &str,
        now: OffsetDateTime,
    ) -> Result<Option<Arc<KnownApp>>, verifyd_store::StoreError> {
        if let Some(hit) = self
            .entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .filter(|a| now - a.fetched_at < APP_CACHE_TTL)
        {
            return Ok(Some(hit.clone()));
        }
        let Some(app) = store.application(key).await? else {
            return Ok(None);
        };
        // A secret that does not decode can never verify a signature; treat as unknown.
        let Ok(key_bytes) = verifyd_api::signing::decode_secret(&app.secret) else {
            tracing::warn!(app = %app.key, "application secret is not valid base64");
            return Ok(None);
        };
        let known = Arc::new(KnownApp {
            app,
            key_bytes,
            fetched_at: now,
        });
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), known.clone());
        Ok(Some(known))
    }
}
