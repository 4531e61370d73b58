//! Test harness: spawn a server, sign requests, read the dev inbox.

use std::sync::Arc;

use base64::Engine;
use rand::SeedableRng;
use rand::rngs::StdRng;
use reqwest::{Method, Response};
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use verifyd_api::signing::{SignedRequest, decode_secret};
use verifyd_core::{Clock, ManualClock};
use verifyd_server::{App, Config, Parts};
use verifyd_store_sqlite::{SqliteOptions, SqliteStore, Synchronous};

pub const KEY: &str = "test-app";
pub const SECRET: &str = "BeIukql3pTKJ8RGL5zo0DA==";
pub const OTHER_KEY: &str = "other-app";
pub const OTHER_SECRET: &str = "YXBwU2VjcmV0";

pub struct TestApp {
    pub url: String,
    pub clock: Arc<ManualClock>,
    pub app: App,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with("").await
    }

    /// Spawns with extra TOML appended to a config that declares two applications.
    pub async fn spawn_with(extra: &str) -> Self {
        Self::spawn_with_channels(extra, Vec::new()).await
    }

    /// Spawns with scripted channels that `[[routes]]` in `extra` can name.
    pub async fn spawn_with_channels(
        extra: &str,
        channels: Vec<std::sync::Arc<dyn verifyd_channels::Channel>>,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let toml = format!(
            r#"
            public_url = "http://{addr}"
            {extra}
            [[applications]]
            name = "test"
            key = "{KEY}"
            secret = "{SECRET}"
            [[applications]]
            name = "other"
            key = "{OTHER_KEY}"
            secret = "{OTHER_SECRET}"
            "#
        );
        let mut settings = Config::from_toml(&toml).unwrap().settings().unwrap();
        // Tests drive callback delivery and delivery jobs themselves (`deliver_due_events`,
        // `run_due_jobs`) with the manual clock.
        settings.callbacks.worker = extra.contains("worker = true");
        settings.delivery.worker = false;
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(
            dir.path().join("it.db"),
            SqliteOptions {
                synchronous: Synchronous::Normal,
            },
        )
        .unwrap();
        let clock = Arc::new(ManualClock::new(datetime!(2026-11-26 12:00:00.5 UTC)));
        let app = App::build_with(Parts {
            settings,
            store: Arc::new(store),
            clock: clock.clone(),
            rng: Box::new(StdRng::seed_from_u64(7)),
            channels,
        })
        .await
        .unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let served = app.clone();
        tokio::spawn(async move {
            served
                .serve(listener, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Self {
            url: format!("http://{addr}"),
            clock,
            app,
            http: reqwest::Client::new(),
            _dir: dir,
            _shutdown: tx,
        }
    }

    /// Runs due delivery jobs until `done` holds (the inline dispatch runs in the
    /// background; this waits for it without a clock).
    pub async fn run_jobs_until(&self, done: impl Fn() -> bool) {
        for _ in 0..400 {
            if done() {
                return;
            }
            self.app.run_due_jobs().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!("delivery did not happen");
    }

    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// A signed request with the node SDK's conventions (`application/json`).
    pub async fn signed(&self, method: Method, path: &str, body: Option<&Value>) -> Response {
        let body = body
            .map(|b| serde_json::to_vec(b).unwrap())
            .unwrap_or_default();
        self.signed_raw(method, path, &body, KEY, SECRET, "application/json")
            .await
    }

    /// Full control: raw body bytes, credentials and content type; signs `path` as sent.
    pub async fn signed_raw(
        &self,
        method: Method,
        path: &str,
        body: &[u8],
        key: &str,
        secret: &str,
        content_type: &str,
    ) -> Response {
        let timestamp = self.now().format(&Rfc3339).unwrap();
        let auth = SignedRequest {
            verb: method.as_str(),
            body,
            content_type,
            timestamp: &timestamp,
            resource: path,
        }
        .authorization("Application", key, &decode_secret(secret).unwrap());
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .header("authorization", auth)
            .header("x-timestamp", timestamp)
            .body(body.to_vec());
        if !content_type.is_empty() {
            req = req.header("content-type", content_type);
        }
        req.send().await.unwrap()
    }

    pub async fn start(&self, body: Value) -> Response {
        self.signed(Method::POST, "/verification/v1/verifications", Some(&body))
            .await
    }

    /// Starts and expects 200; returns the JSON answer.
    pub async fn start_ok(&self, method: &str, number: &str) -> Value {
        let r = self
            .start(json!({"identity": {"type": "number", "endpoint": number}, "method": method}))
            .await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        r.json().await.unwrap()
    }

    pub async fn report_id(&self, id: &str, body: Value) -> Response {
        self.signed(
            Method::PUT,
            &format!("/verification/v1/verifications/id/{id}"),
            Some(&body),
        )
        .await
    }

    /// GET on the admin API with the token `adm`, as JSON.
    pub async fn admin_get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.url))
            .header("authorization", "Bearer adm")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// A verification's delivery attempts, from the admin API.
    pub async fn attempts(&self, id: &str) -> Vec<Value> {
        let v = self
            .admin_get(&format!("/admin/v1/verifications/{id}/attempts"))
            .await;
        v["attempts"].as_array().unwrap().clone()
    }

    /// The attempts once there are at least `n`: a start is answered as soon as the channel
    /// accepted the message, and its attempt is recorded right after.
    pub async fn attempts_at_least(&self, id: &str, n: usize) -> Vec<Value> {
        for _ in 0..500 {
            let got = self.attempts(id).await;
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        self.attempts(id).await
    }

    pub async fn status_id(&self, id: &str) -> Value {
        let r = self
            .signed(
                Method::GET,
                &format!("/verification/v1/verifications/id/{id}"),
                None,
            )
            .await;
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// The newest captured code for `number`.
    pub async fn inbox_code(&self, number: &str) -> String {
        verifyd_testkit::inbox_code(&self.http, &self.url, number).await
    }

    pub async fn inbox(&self, number: &str) -> Value {
        verifyd_testkit::inbox(&self.http, &self.url, number).await
    }
}

/// Asserts a Sinch error: status, code, JSON content type, message and reference present.
pub async fn assert_error(r: Response, status: u16, code: u64) -> Value {
    assert_eq!(r.status(), status);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/json"), "content-type {ct}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errorCode"], code, "{body}");
    assert!(!body["message"].as_str().unwrap().is_empty());
    assert!(!body["reference"].as_str().unwrap().is_empty());
    assert!(body.get("code").is_none() && body.get("error").is_none());
    body
}

pub fn basic(key: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:{secret}"))
    )
}

/// An attempt's outcome (`submitted`, `failed: …`).
pub fn outcome(attempt: &Value) -> String {
    attempt["outcome"].as_str().unwrap().to_string()
}
