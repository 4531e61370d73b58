//! Building and running the server: store, keys, applications, router, background sweeper.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use verifyd_api::ErrorCode;
use verifyd_channels::{Channel, DevInbox};
use verifyd_core::{Clock, CodeHasher};
use verifyd_store::{Application, Store};
use verifyd_store_postgres::{PgOptions, PgStore};
use verifyd_store_sqlite::{SqliteOptions, SqliteStore, path_from_url};

use crate::callbacks::{self, Callbacks};
use crate::config::Settings;
use crate::delivery::{Dispatcher, Route, Sealer};
use crate::error::{ApiError, error_response};
use crate::routes::{admin, device, ops, verifications};
use crate::state::{AppCache, AppState, Inner};

/// The system clock: the only place verifyd reads wall time.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(
        clippy::disallowed_methods,
        reason = "the one place verifyd reads wall time"
    )]
    fn now(&self) -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc()
    }
}

/// Reads `clock` (a helper so callers need not import the trait).
pub fn clock_now(clock: &dyn Clock) -> time::OffsetDateTime {
    clock.now()
}

/// Opens the store named by `database_url`: `sqlite://PATH` or `postgres://…`. Migrations
/// run when `migrate` is true (`verifyd migrate` and, unless disabled, `serve`).
///
/// # Errors
/// Unknown scheme, or the database cannot be opened (or migrated).
pub async fn open_store(settings: &Settings, migrate: bool) -> anyhow::Result<Arc<dyn Store>> {
    let url = settings.database_url.trim();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = PgStore::connect(
            url,
            PgOptions {
                max_connections: settings.pg_max_connections,
                migrate,
                ..PgOptions::default()
            },
        )
        .await?;
        if !migrate {
            let version = store.schema_version().await?;
            if version.applied.unwrap_or(0) < version.latest {
                bail!(
                    "database_url: the PostgreSQL schema is at version {:?}, this build needs {}; run `verifyd migrate`",
                    version.applied,
                    version.latest
                );
            }
        }
        return Ok(Arc::new(store));
    }
    if !url.starts_with("sqlite:") && url.contains("://") {
        bail!("database_url = {url:?}: expected sqlite://PATH or postgres://USER@HOST/DB");
    }
    // SQLite has one writer (this process) and migrates on open.
    let store = SqliteStore::open(
        path_from_url(url),
        SqliteOptions {
            synchronous: settings.sqlite_synchronous,
        },
    )?;
    Ok(Arc::new(store))
}

/// A generated application secret: 16 random bytes, canonical base64.
pub fn new_secret(rng: &mut dyn RngCore) -> String {
    let mut bytes = [0u8; 16];
    rng.fill_bytes(&mut bytes);
    STANDARD.encode(bytes)
}

/// A new application with a random key and secret.
pub fn new_application(
    name: &str,
    rng: &mut dyn RngCore,
    now: time::OffsetDateTime,
) -> Application {
    let mut key = [0u8; 16];
    rng.fill_bytes(&mut key);
    Application {
        key: uuid::Builder::from_random_bytes(key)
            .into_uuid()
            .to_string(),
        name: name.to_string(),
        secret: new_secret(rng),
        callback_url: None,
        min_auth: verifyd_store::MinAuth::default(),
        allow_private_callbacks: false,
        callback_fail_open: false,
        created_at: now,
    }
}

/// Everything injectable when building an [`App`].
pub struct Parts {
    /// Validated settings.
    pub settings: Settings,
    /// The store.
    pub store: Arc<dyn Store>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The CSPRNG (tests pass a seeded one).
    pub rng: Box<dyn RngCore + Send>,
    /// Channels built by the caller (tests inject scripted ones), in addition to the
    /// configured ones; routes refer to them by name.
    pub channels: Vec<Arc<dyn Channel>>,
}

/// A built server, ready to serve.
#[derive(Clone)]
pub struct App {
    state: AppState,
}

impl App {
    /// Builds with the system clock, an OS-seeded CSPRNG and the configured store.
    ///
    /// # Errors
    /// If the store cannot be opened.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let store = open_store(&settings, settings.migrate_on_start).await?;
        Self::build_with(Parts {
            settings,
            store,
            clock: Arc::new(SystemClock),
            rng: Box::new(StdRng::from_os_rng()),
            channels: Vec::new(),
        })
        .await
    }

    /// Builds from explicit parts. Declared applications are written to the store.
    ///
    /// # Errors
    /// If the store fails.
    pub async fn build_with(parts: Parts) -> anyhow::Result<Self> {
        crate::metrics::handle();
        // The numbering plans load now, not in the first requests (they would all wait
        // for it, about 90 ms).
        tokio::task::spawn_blocking(verifyd_core::phone::warm_up)
            .await
            .context("Failed to load the numbering plans")?;
        let Parts {
            settings,
            store,
            clock,
            mut rng,
            channels: extra_channels,
        } = parts;
        let mut fresh = [0u8; 32];
        rng.fill_bytes(&mut fresh);
        let code_key = store
            .server_key("code-hash", fresh)
            .await
            .context("Failed to load the code-hash key")?;
        for app in &settings.applications {
            store
                .upsert_application(&Application {
                    key: app.key.clone(),
                    name: app.name.clone(),
                    secret: app.secret.clone(),
                    callback_url: app.callback_url.clone(),
                    min_auth: app.min_auth,
                    allow_private_callbacks: app.allow_private_callbacks,
                    callback_fail_open: app.callback_fail_open,
                    created_at: clock.now(),
                })
                .await
                .with_context(|| format!("Failed to store application {:?}", app.name))?;
        }
        let mut seal_key = [0u8; 32];
        rng.fill_bytes(&mut seal_key);
        let seal_key = store
            .server_key("job-seal", seal_key)
            .await
            .context("Failed to load the job-sealing key")?;
        // Only a CAMARA provider needs it; drawing it only then leaves the RNG sequence of
        // every other set-up as it was.
        let oidc_key = if settings
            .seamless
            .iter()
            .any(|p| matches!(p.kind, crate::config::SeamlessKind::Camara(_)))
        {
            let mut fresh = [0u8; 32];
            rng.fill_bytes(&mut fresh);
            Some(
                store
                    .server_key("seamless-oidc", fresh)
                    .await
                    .context("Failed to load the seamless OIDC key")?,
            )
        } else {
            None
        };
        let inbox = Arc::new(DevInbox::new(
            settings.inbox_sender.clone(),
            settings.inbox_capacity,
        ));
        let (receipts_tx, receipts_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut channels: HashMap<String, Arc<dyn Channel>> = HashMap::new();
        channels.insert("dev-inbox".into(), inbox.clone());
        for channel in crate::channels::build(&settings, receipts_tx.clone())
            .await?
            .into_iter()
            .chain(extra_channels)
        {
            channels.insert(channel.name().to_string(), channel);
        }
        let routes = if settings.routes.is_empty() {
            // No routes: the dev inbox carries everything.
            vec![Route {
                name: "dev-inbox".into(),
                methods: Vec::new(),
                prefixes: Vec::new(),
                countries: Vec::new(),
                channel: inbox.clone(),
                sender: None,
            }]
        } else {
            settings
                .routes
                .iter()
                .map(|r| {
                    let channel = channels.get(&r.channel).cloned().ok_or_else(|| {
                        anyhow::anyhow!(
                            "[[routes]] {:?}: no channel named {:?} (known: {})",
                            r.name,
                            r.channel,
                            channels.keys().cloned().collect::<Vec<_>>().join(", ")
                        )
                    })?;
                    Ok(Route {
                        name: r.name.clone(),
                        methods: r.methods.clone(),
                        prefixes: r.prefixes.clone(),
                        countries: r.countries.clone(),
                        channel,
                        sender: r.sender.clone(),
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?
        };
        let inbox_routed = routes.iter().any(|r| r.channel.name() == "dev-inbox");
        let dispatcher = Dispatcher::new(routes, settings.delivery.clone(), Sealer::new(seal_key));
        let callbacks = Callbacks::new(settings.callbacks.clone())?;
        Ok(Self {
            state: AppState(Arc::new(Inner {
                settings,
                store,
                clock,
                hasher: CodeHasher::new(code_key),
                oidc_key,
                rng: Mutex::new(rng),
                dispatcher,
                // The inbox exists only while it is a route.
                inbox: inbox_routed.then_some(inbox),
                apps: AppCache::default(),
                callbacks,
                channels,
                receipts: Mutex::new(Some(receipts_rx)),
                receipts_tx,
            })),
        })
    }

    /// Runs every delivery job that is due now (tests with a manual clock call this; the
    /// worker does it continuously). Returns how many ran.
    ///
    /// # Errors
    /// If the store fails.
    pub async fn run_due_jobs(&self) -> anyhow::Result<usize> {
        crate::delivery::run_due_jobs(&self.state).await
    }

    /// Where channels and webhooks push delivery reports.
    pub fn receipts(&self) -> verifyd_channels::ReceiptSender {
        self.state.0.receipts_tx.clone()
    }

    /// If the store has no application at all, creates one and returns it (the caller
    /// prints its key and secret once).
    ///
    /// # Errors
    /// If the store fails.
    pub async fn ensure_an_application(&self) -> anyhow::Result<Option<Application>> {
        let store = &self.state.0.store;
        if !store.list_applications().await?.is_empty() {
            return Ok(None);
        }
        let app = self
            .state
            .with_rng(|rng| new_application("default", rng, self.state.now()));
        store.insert_application(&app).await?;
        Ok(Some(app))
    }

    /// The store in use.
    pub fn store(&self) -> Arc<dyn Store> {
        self.state.0.store.clone()
    }

    /// The dev inbox, when it is the channel.
    pub fn inbox(&self) -> Option<Arc<DevInbox>> {
        self.state.0.inbox.clone()
    }

    /// The settings in use.
    pub fn settings(&self) -> &Settings {
        &self.state.0.settings
    }

    /// The HTTP router.
    pub fn router(&self) -> Router {
        let mut router = Router::new()
            .route(
                "/verification/v1/verifications",
                post(verifications::start_verification),
            )
            .route(
                "/verification/v1/verifications/id/{id}",
                put(verifications::report_by_id).get(verifications::status_by_id),
            )
            .route(
                "/verification/v1/verifications/number/{endpoint}",
                put(verifications::report_by_identity),
            )
            .route(
                "/verification/v1/verifications/reference/{*reference}",
                get(verifications::status_by_reference),
            )
            .route(
                "/verification/v1/verifications/{method}/number/{endpoint}",
                get(verifications::status_by_identity),
            )
            .route(
                "/verification/v1/seamless/callback",
                get(device::seamless_callback),
            )
            .route("/verification/v1/seamless/{id}", get(device::seamless))
            .route("/healthz", get(ops::healthz))
            .route("/readyz", get(ops::readyz))
            .route("/admin/v1/events", get(admin::list_events))
            .route(
                "/admin/v1/events/{id}/redeliver",
                post(admin::redeliver_event),
            )
            .route("/admin/v1/fraud/blocks", get(admin::list_blocks))
            .route(
                "/admin/v1/fraud/blocks/{key}",
                axum::routing::delete(admin::remove_block),
            )
            .route("/metrics", get(ops::metrics))
            .route(
                "/admin/v1/verifications/{id}/attempts",
                get(admin::attempts),
            )
            .route("/admin/v1/routes", get(admin::routes))
            .route(
                "/webhooks/v1/whatsapp/{channel}",
                get(crate::channels::whatsapp_handshake).post(crate::channels::whatsapp_statuses),
            )
            .route(
                "/webhooks/v1/sms/{channel}",
                post(crate::channels::sms_report).get(crate::channels::sms_report),
            );
        if self.state.0.inbox.is_some() {
            router = router.route("/inbox/v1/messages", get(ops::inbox));
        }
        router
            .fallback(|| async { ApiError::not_found() })
            .method_not_allowed_fallback(|| async {
                ApiError::new(
                    ErrorCode::MethodNotAllowed,
                    "Method not allowed on this resource.",
                )
            })
            .layer(axum::middleware::from_fn(log_request))
            .layer(CatchPanicLayer::custom(|_panic| {
                tracing::error!("request handler panicked");
                error_response(
                    ErrorCode::Internal,
                    "Internal server error.".into(),
                    uuid::Uuid::new_v4().to_string(),
                )
            }))
            .with_state(self.state.clone())
    }

    /// Marks due PENDING verifications expired; returns how many.
    ///
    /// # Errors
    /// If the store fails.
    pub async fn sweep_once(&self) -> anyhow::Result<usize> {
        sweep(&self.state).await
    }

    /// Delivers every callback event due now and waits for the outcomes; returns how many
    /// were attempted. (The background worker does this continuously; tests with a manual
    /// clock call it directly.)
    ///
    /// # Errors
    /// If the store fails.
    pub async fn deliver_due_events(&self) -> anyhow::Result<usize> {
        callbacks::deliver_due(&self.state).await
    }

    /// Serves on `listener` until `shutdown` resolves, then finishes in-flight requests.
    ///
    /// # Errors
    /// If the listener fails.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = listener.local_addr()?;
        if self.state.0.inbox.is_some() && !addr.ip().is_loopback() {
            tracing::warn!(%addr, "the dev inbox is exposed beyond loopback: anyone who can reach this address can read every code");
        }
        let sweeper = tokio::spawn(sweeper_loop(self.state.clone()));
        let receipts = self
            .state
            .0
            .receipts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .map(|rx| tokio::spawn(crate::delivery::receipts_loop(self.state.clone(), rx)));
        let jobs = self
            .state
            .0
            .settings
            .delivery
            .worker
            .then(|| tokio::spawn(crate::delivery::worker_loop(self.state.clone())));
        let worker = self
            .state
            .0
            .settings
            .callbacks
            .worker
            .then(|| tokio::spawn(callbacks::worker_loop(self.state.clone())));
        tracing::info!(%addr, public_url = %self.state.0.settings.public_url, "verifyd listening");
        let result = axum::serve(
            listener,
            self.router()
                .into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
        .context("HTTP server failed");
        sweeper.abort();
        for task in [receipts, jobs].into_iter().flatten() {
            task.abort();
        }
        if let Some(worker) = worker {
            // In-flight deliveries are abandoned; their leases expire and they are retried.
            worker.abort();
        }
        tracing::info!("verifyd stopped");
        result
    }
}

async fn sweep(state: &AppState) -> anyhow::Result<usize> {
    let mut total = 0;
    loop {
        let expired = state.0.store.expire_due(state.now(), 500).await?;
        for v in &expired {
            crate::metrics::finished(v);
            tracing::info!(verification.id = %v.id, "verification expired");
        }
        if !expired.is_empty() {
            state.0.callbacks.notify.notify_one();
        }
        total += expired.len();
        if expired.len() < 500 {
            return Ok(total);
        }
    }
}

async fn sweeper_loop(state: AppState) {
    let mut tick = tokio::time::interval(state.0.settings.sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = sweep(&state).await {
            tracing::error!(error.cause_chain = ?e, "expiry sweep failed");
        }
        match state
            .0
            .store
            .purge(state.now(), state.0.settings.retention)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "purged verifications past retention"),
            Err(e) => tracing::error!(error.cause_chain = ?e, "purge failed"),
        }
    }
}

/// Logs each request with its route *template* (never the numbers in the path) and status.
async fn log_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "<unmatched>".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    tracing::debug!(
        http.method = %method,
        http.route = %route,
        http.status = response.status().as_u16(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "request"
    );
    response.into_response()
}
