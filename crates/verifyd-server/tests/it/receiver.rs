//! A throw-away callback receiver (the customer backend): records every request, checks its
//! Sinch signature, and answers from a script.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::Notify;
use verifyd_api::signing::{SignedRequest, decode_secret, verify};

/// One scripted answer.
#[derive(Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub retry_after: Option<u64>,
    /// When set, the answer waits until the gate is opened (or forever).
    pub gate: Option<Arc<Notify>>,
}

impl Answer {
    pub fn json(body: Value) -> Self {
        Self {
            status: 200,
            body: body.to_string(),
            retry_after: None,
            gate: None,
        }
    }
    pub fn status(status: u16) -> Self {
        Self {
            status,
            body: String::new(),
            retry_after: None,
            gate: None,
        }
    }
    pub fn raw(status: u16, body: &str) -> Self {
        Self {
            status,
            body: body.to_string(),
            retry_after: None,
            gate: None,
        }
    }
}

/// A recorded callback.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: String,
    pub json: Value,
    /// The Sinch signature verified with the application's secret.
    pub valid: bool,
}

impl Received {
    pub fn event(&self) -> &str {
        self.json["event"].as_str().unwrap_or_default()
    }
}

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    script: VecDeque<Answer>,
    /// Answer for anything not scripted (`None`: 200, and `allow` for request events).
    fallback: Option<Answer>,
}

#[derive(Clone)]
pub struct Receiver {
    inner: Arc<Mutex<Inner>>,
    arrived: Arc<Notify>,
    key: String,
    secret: String,
    pub url: String,
}

impl Receiver {
    /// Starts on 127.0.0.1:0; callbacks go to `{url}` (path `/hooks/verification`).
    pub async fn start(key: &str, secret: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let receiver = Self {
            inner: Arc::default(),
            arrived: Arc::new(Notify::new()),
            key: key.into(),
            secret: secret.into(),
            url: format!("http://{addr}/hooks/verification"),
        };
        let app = Router::new().fallback(handle).with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        receiver
    }

    /// Queues answers, used in order.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.inner.lock().unwrap().script.extend(answers);
    }

    /// Sets the answer for everything unscripted (e.g. "down": 503).
    pub fn fallback(&self, answer: Option<Answer>) {
        self.inner.lock().unwrap().fallback = answer;
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    pub fn events(&self, name: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.event() == name)
            .collect()
    }

    /// Waits (without a clock: on arrivals) until `n` requests were received.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        loop {
            let notified = self.arrived.notified();
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            tokio::time::timeout(std::time::Duration::from_secs(10), notified)
                .await
                .expect("callbacks did not arrive");
        }
    }
}

async fn handle(State(r): State<Receiver>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let text = String::from_utf8_lossy(&body).to_string();
    let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let auth = header("authorization");
    let valid = auth
        .strip_prefix(&format!("application {}:", r.key))
        .is_some_and(|sig| {
            let ts = header("x-timestamp");
            let ct = header("content-type");
            let req = SignedRequest {
                verb: "POST",
                body: &body,
                content_type: &ct,
                timestamp: &ts,
                resource: uri.path(),
            };
            verify(
                &decode_secret(&r.secret).unwrap(),
                &req.string_to_sign(),
                sig,
            )
        });
    let is_request = json["event"] == "VerificationRequestEvent";
    let answer = {
        let mut inner = r.inner.lock().unwrap();
        inner.received.push(Received {
            path: uri.path().to_string(),
            headers: headers.clone(),
            body: text,
            json,
            valid,
        });
        inner.script.pop_front().or_else(|| inner.fallback.clone())
    };
    r.arrived.notify_waiters();
    let answer = answer.unwrap_or_else(|| {
        if is_request {
            Answer::json(serde_json::json!({"action": "allow"}))
        } else {
            Answer::status(200)
        }
    });
    if let Some(gate) = &answer.gate {
        gate.notified().await;
    }
    let mut response = (StatusCode::from_u16(answer.status).unwrap(), answer.body).into_response();
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    if let Some(secs) = answer.retry_after {
        response
            .headers_mut()
            .insert("retry-after", secs.to_string().parse().unwrap());
    }
    response
}
