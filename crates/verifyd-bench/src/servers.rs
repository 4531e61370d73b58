//! The two servers under load: verifyd itself (in-process, durable SQLite in a temp dir, dev
//! inbox channel) and the *ceiling*, a plain axum handler that parses a JSON body and
//! answers a start-sized JSON without auth or storage.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use axum::Json;
use axum::Router;
use axum::routing::{get, post};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use verifyd_channels::DevInbox;
use verifyd_server::{App, Config, Parts, SystemClock};
use verifyd_store_sqlite::{SqliteOptions, SqliteStore, Synchronous};

/// The application the load generator signs as.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// Application key.
    pub key: String,
    /// Application secret, base64 as configured.
    pub secret: String,
}

/// Both servers, running on the runtime that [`start`] was awaited on.
pub struct Servers {
    /// Where each verifyd node listens.
    pub verifyd: Vec<SocketAddr>,
    /// Which store the nodes share (for the report).
    pub store_label: String,
    /// Where the ceiling listens.
    pub ceiling: SocketAddr,
    /// Each node's dev inbox: the codes to report.
    pub inboxes: Vec<Arc<DevInbox>>,
    /// The declared application.
    pub credentials: Credentials,
    /// Tell the nodes to stop; taken by [`Servers::stop`].
    shutdown: Vec<oneshot::Sender<()>>,
    /// The nodes' serve tasks.
    verifyd_tasks: Vec<JoinHandle<anyhow::Result<()>>>,
    /// The ceiling's serve task (aborted on stop).
    ceiling_task: JoinHandle<()>,
    /// The database directory (SQLite); removed when dropped.
    _dir: tempfile::TempDir,
}

/// Creates a fresh PostgreSQL database for the run; returns its URL.
async fn fresh_postgres(admin_url: &str) -> anyhow::Result<String> {
    let (client, conn) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls)
        .await
        .context("Failed to connect to PostgreSQL")?;
    tokio::spawn(conn);
    let name = format!("verifyd_bench_{}", uuid::Uuid::new_v4().simple());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .context("Failed to create the benchmark database")?;
    let base = admin_url
        .rsplit_once('/')
        .map_or(admin_url, |(base, _)| base);
    Ok(format!("{base}/{name}"))
}

/// Starts `nodes` verifyd nodes (SQLite: one; PostgreSQL: a fresh database they share) and
/// the ceiling on the current tokio runtime, each on `127.0.0.1:0`.
///
/// # Errors
/// If the database cannot be created, the configuration is invalid or a port cannot be
/// bound.
pub async fn start(
    sync: Synchronous,
    db_parent: Option<&Path>,
    postgres: Option<&str>,
    nodes: usize,
) -> anyhow::Result<Servers> {
    let dir = match db_parent {
        Some(parent) => tempfile::tempdir_in(parent),
        None => tempfile::tempdir(),
    }
    .context("Failed to create the database directory")?;
    let db_path = dir.path().join("verifyd-bench.db");
    let mut rng = StdRng::from_os_rng();
    let credentials = Credentials {
        key: "bench-0000-4000-8000-000000000000".into(),
        secret: verifyd_server::app::new_secret(&mut rng),
    };
    let (database_url, store_label) = match postgres {
        Some(admin) => (
            fresh_postgres(admin).await?,
            format!("PostgreSQL, {nodes} node(s)"),
        ),
        None => (
            format!("sqlite://{}", db_path.display()),
            format!("SQLite synchronous={sync:?}"),
        ),
    };
    let mut verifyd = Vec::new();
    let mut inboxes = Vec::new();
    let mut shutdown = Vec::new();
    let mut verifyd_tasks = Vec::new();
    for _ in 0..nodes {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("Failed to bind verifyd's port")?;
        let addr = listener.local_addr()?;
        let toml = format!(
            r#"
            listen = "{addr}"
            public_url = "http://{addr}"
            database_url = "{database_url}"
            sqlite_synchronous = "{sync}"

            [verification]
            # Long enough that nothing expires during a run.
            expiry_seconds = 86400

            [fraud.pumping]
            # The start phase sends tens of thousands of unconverted starts to one prefix:
            # exactly what the SMS-pumping rule exists to stop. Off for the benchmark; the
            # per-number limits stay at their defaults (every start goes to a new number).
            enabled = false

            [dev_inbox]
            # Every code of the run must stay readable.
            capacity = 4000000

            [[applications]]
            name = "bench"
            key = "{key}"
            secret = "{secret}"
            min_auth = "signed"
            "#,
            sync = match sync {
                Synchronous::Full => "full",
                Synchronous::Normal => "normal",
            },
            key = credentials.key,
            secret = credentials.secret,
        );
        let settings = Config::from_toml(&toml)?.settings()?;
        let store: Arc<dyn verifyd_store::Store> = if postgres.is_some() {
            verifyd_server::app::open_store(&settings, true).await?
        } else {
            Arc::new(SqliteStore::open(
                &db_path,
                SqliteOptions { synchronous: sync },
            )?)
        };
        let app = App::build_with(Parts {
            settings,
            store,
            clock: Arc::new(SystemClock),
            rng: Box::new(StdRng::from_os_rng()),
            channels: Vec::new(),
        })
        .await?;
        inboxes.push(
            app.inbox()
                .context("verifyd was built without the dev inbox")?,
        );
        let (stop, stopped) = oneshot::channel::<()>();
        verifyd_tasks.push(tokio::spawn(app.serve(listener, async move {
            let _ = stopped.await;
        })));
        shutdown.push(stop);
        verifyd.push(addr);
    }

    let ceiling_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("Failed to bind the ceiling's port")?;
    let ceiling = ceiling_listener.local_addr()?;
    let router = ceiling_router(ceiling);
    let ceiling_task = tokio::spawn(async move {
        if let Err(e) = axum::serve(ceiling_listener, router).await {
            eprintln!("ceiling server failed: {e}");
        }
    });

    Ok(Servers {
        verifyd,
        store_label,
        ceiling,
        inboxes,
        credentials,
        shutdown,
        verifyd_tasks,
        ceiling_task,
        _dir: dir,
    })
}

impl Servers {
    /// Stops both servers; verifyd finishes in-flight requests first.
    ///
    /// # Errors
    /// If verifyd's serve loop failed.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.ceiling_task.abort();
        for stop in self.shutdown.drain(..) {
            let _ = stop.send(());
        }
        for task in self.verifyd_tasks.drain(..) {
            match tokio::time::timeout(std::time::Duration::from_secs(5), task).await {
                Ok(joined) => joined.context("verifyd's serve task panicked")??,
                Err(_) => eprintln!("verifyd did not stop within 5 s"),
            }
        }
        Ok(())
    }
}

/// The ceiling: same transport stack as verifyd (axum 0.8 `serve`, HTTP/1.1), a JSON body
/// parsed into a `Value`, and a response of the same size order as a start answer.
fn ceiling_router(addr: SocketAddr) -> Router {
    let counter = Arc::new(AtomicU64::new(0));
    let base: Arc<str> = format!("http://{addr}/verification/v1/verifications/id/").into();
    Router::new()
        .route(
            "/ceiling",
            post(move |Json(body): Json<Value>| {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let base = base.clone();
                async move {
                    let id = format!("{n:032x}");
                    let method = body.get("method").cloned().unwrap_or(Value::Null);
                    Json(json!({
                        "id": id,
                        "method": method,
                        "sms": {
                            "template": "Your verification code is {{CODE}}.",
                            "interceptionTimeout": 86400,
                            "codeType": "Numeric"
                        },
                        "_links": [
                            {"rel": "status", "href": format!("{base}{id}"), "method": "GET"},
                            {"rel": "report", "href": format!("{base}{id}"), "method": "PUT"}
                        ]
                    }))
                }
            }),
        )
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
}
