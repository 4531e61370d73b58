//! The load generator: pre-signed requests, a closed loop (N workers, one keep-alive
//! HTTP/1.1 connection each, next request as soon as the previous answer is read, run in
//! short slices so verifyd and the ceiling can take turns) and an open loop (a fixed arrival rate, one task per request, latency from the moment the
//! request is handed to the client).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use verifyd_api::signing::{SignedRequest, decode_secret};

use crate::stats::Phase;

/// The HTTP client type used everywhere.
type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// The `x-timestamp` header.
static X_TIMESTAMP: HeaderName = HeaderName::from_static("x-timestamp");

/// One fully built request: signing happened before the timed phase; sending only clones
/// the parts (reference-counted `Bytes`, a four-entry header map).
#[derive(Debug, Clone)]
pub struct Prepared {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl Prepared {
    /// A fresh `hyper` request for these parts.
    fn request(&self) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// Signs requests as one application (Application Signed Request, `application/json`).
pub struct Signer {
    key: String,
    secret: Vec<u8>,
}

impl Signer {
    /// A signer for `key` with the base64 `secret` as configured.
    ///
    /// # Errors
    /// If the secret is not base64.
    pub fn new(key: &str, secret_b64: &str) -> anyhow::Result<Self> {
        Ok(Self {
            key: key.to_string(),
            secret: decode_secret(secret_b64).context("bench secret is not base64")?,
        })
    }

    /// Builds and signs one request to `base` (`http://host:port`) + `path`.
    ///
    /// # Errors
    /// If a header value or the URI is malformed.
    pub fn prepare(
        &self,
        base: &str,
        method: Method,
        path: &str,
        body: Bytes,
        timestamp: &str,
    ) -> anyhow::Result<Prepared> {
        let authorization = SignedRequest {
            verb: method.as_str(),
            body: &body,
            content_type: "application/json",
            timestamp,
            resource: path,
        }
        .authorization("Application", &self.key, &self.secret);
        let mut headers = HeaderMap::with_capacity(4);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(X_TIMESTAMP.clone(), HeaderValue::from_str(timestamp)?);
        headers.insert(AUTHORIZATION, HeaderValue::from_str(&authorization)?);
        let uri: Uri = format!("{base}{path}")
            .parse()
            .with_context(|| format!("bad URI {base}{path}"))?;
        Ok(Prepared {
            method,
            uri,
            headers,
            body,
        })
    }
}

/// What makes an answer a success besides HTTP 200.
#[derive(Debug, Clone, Copy)]
pub enum Check {
    /// HTTP 200 is enough.
    Ok,
    /// HTTP 200 and the body contains these bytes.
    Contains(&'static [u8]),
}

/// A client whose pool keeps at most `max_idle` idle connections, with `TCP_NODELAY`.
fn client(max_idle: usize) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(max_idle)
        .build(connector)
}

/// Sends one request and reads the whole answer.
async fn send(client: &HttpClient, prepared: &Prepared, check: Check) -> Result<(), String> {
    let response = client
        .request(prepared.request())
        .await
        .map_err(|e| format!("transport error: {e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body error: {e}"))?
        .to_bytes();
    let shown = || String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    if status != StatusCode::OK {
        return Err(format!("HTTP {status}: {}", shown()));
    }
    if let Check::Contains(needle) = check
        && !body.windows(needle.len()).any(|w| w == needle)
    {
        return Err(format!(
            "answer lacks {:?}: {}",
            String::from_utf8_lossy(needle),
            shown()
        ));
    }
    Ok(())
}

/// Opens a connection on `client` (any answer will do; only the socket matters).
async fn warm(client: &HttpClient, uri: &Uri) {
    let request = Request::get(uri.clone()).body(Full::new(Bytes::new()));
    if let Ok(request) = request
        && let Ok(response) = client.request(request).await
    {
        let _ = response.into_body().collect().await;
    }
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// How a closed-loop slice ends.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// After this long, going round the pool as often as needed.
    Cycle(Duration),
    /// After this long or when every request of the pool was sent once, whichever is first.
    PoolOrTime(Duration),
}

/// One keep-alive HTTP/1.1 connection per worker, opened once and reused by every slice.
pub struct Workers {
    clients: Vec<HttpClient>,
}

impl Workers {
    /// Opens `n` connections (each with a `GET warm_uri`).
    ///
    /// # Errors
    /// If a warm-up task panicked.
    pub async fn open(warm_uri: &Uri, n: usize) -> anyhow::Result<Self> {
        let clients: Vec<HttpClient> = (0..n).map(|_| client(1)).collect();
        let warmers: Vec<_> = clients
            .iter()
            .map(|c| {
                let c = c.clone();
                let uri = warm_uri.clone();
                tokio::spawn(async move { warm(&c, &uri).await })
            })
            .collect();
        for w in warmers {
            w.await.context("warm-up task panicked")?;
        }
        Ok(Self { clients })
    }
}

/// A pre-signed pool and the index of its next unsent request, shared by all slices.
#[derive(Clone)]
pub struct Feed {
    pool: Arc<Vec<Prepared>>,
    next: Arc<AtomicUsize>,
}

impl Feed {
    /// A feed over `pool`, starting at its first request.
    pub fn new(pool: Vec<Prepared>) -> Self {
        Self {
            pool: Arc::new(pool),
            next: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// One worker's tally.
struct Tally {
    ok: u64,
    errors: u64,
    latencies: Vec<u32>,
    began: Instant,
    ended: Instant,
    pool_done: bool,
    first_error: Option<String>,
}

/// Runs one closed-loop slice: every worker sends its next request as soon as it has read
/// the previous answer, until `stop`.
///
/// # Errors
/// If the pool is empty or a worker task panicked.
pub async fn closed_loop(
    workers: &Workers,
    feed: &Feed,
    stop: Stop,
    check: Check,
) -> anyhow::Result<Phase> {
    anyhow::ensure!(!feed.pool.is_empty(), "empty request pool");
    let barrier = Arc::new(tokio::sync::Barrier::new(workers.clients.len()));
    let mut tasks = Vec::with_capacity(workers.clients.len());
    for client in &workers.clients {
        let client = client.clone();
        let feed = feed.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let began = Instant::now();
            let (until, cycle) = match stop {
                Stop::Cycle(d) => (began + d, true),
                Stop::PoolOrTime(d) => (began + d, false),
            };
            let mut tally = Tally {
                ok: 0,
                errors: 0,
                latencies: Vec::with_capacity(1024),
                began,
                ended: began,
                pool_done: false,
                first_error: None,
            };
            let pool = &feed.pool;
            while Instant::now() < until {
                let i = feed.next.fetch_add(1, Ordering::Relaxed);
                let prepared = if cycle {
                    &pool[i % pool.len()]
                } else if let Some(p) = pool.get(i) {
                    p
                } else {
                    tally.pool_done = true;
                    break;
                };
                let sent = Instant::now();
                let outcome = send(&client, prepared, check).await;
                tally.latencies.push(micros(sent.elapsed()));
                match outcome {
                    Ok(()) => tally.ok += 1,
                    Err(e) => {
                        tally.errors += 1;
                        tally.first_error.get_or_insert(e);
                    }
                }
            }
            tally.ended = Instant::now();
            tally
        }));
    }
    let mut phase = Phase::default();
    let mut began: Option<Instant> = None;
    let mut ended: Option<Instant> = None;
    for task in tasks {
        let t = task.await.context("load worker panicked")?;
        phase.ok += t.ok;
        phase.errors += t.errors;
        phase.latencies_us.extend(t.latencies);
        phase.pool_done |= t.pool_done;
        if phase.first_error.is_none() {
            phase.first_error = t.first_error;
        }
        began = Some(began.map_or(t.began, |b| b.min(t.began)));
        ended = Some(ended.map_or(t.ended, |e| e.max(t.ended)));
    }
    if let (Some(b), Some(e)) = (began, ended) {
        phase.elapsed = e - b;
    }
    Ok(phase)
}

/// Sends every request of `pool` once, at `rate` per second (open loop: a slow answer does
/// not delay the next request). Latency runs from handing the request to the client to
/// the last body byte; `Phase::max_lag_us` records how late the scheduler dispatched.
///
/// # Errors
/// If a request task panicked.
pub async fn open_loop(
    warm_uri: &Uri,
    pool: Arc<Vec<Prepared>>,
    rate: u32,
    check: Check,
) -> anyhow::Result<Phase> {
    anyhow::ensure!(rate > 0, "rate must be positive");
    let client = client(usize::MAX);
    // Open a few connections up front so the first requests do not pay the handshake.
    let warmers: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            let uri = warm_uri.clone();
            tokio::spawn(async move { warm(&client, &uri).await })
        })
        .collect();
    for w in warmers {
        let _ = w.await;
    }
    let period = Duration::from_secs_f64(1.0 / f64::from(rate));
    let began = Instant::now() + Duration::from_millis(5);
    let mut max_lag = Duration::ZERO;
    let mut tasks = Vec::with_capacity(pool.len());
    for i in 0..pool.len() {
        let at = began + period.mul_f64(i as f64);
        tokio::time::sleep_until(at.into()).await;
        max_lag = max_lag.max(at.elapsed());
        let client = client.clone();
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let outcome = send(&client, &pool[i], check).await;
            (micros(sent.elapsed()), outcome, Instant::now())
        }));
    }
    let mut phase = Phase {
        max_lag_us: Some(micros(max_lag)),
        ..Phase::default()
    };
    let mut ended = began;
    for task in tasks {
        let (latency, outcome, done) = task.await.context("request task panicked")?;
        phase.latencies_us.push(latency);
        ended = ended.max(done);
        match outcome {
            Ok(()) => phase.ok += 1,
            Err(e) => {
                phase.errors += 1;
                phase.first_error.get_or_insert(e);
            }
        }
    }
    phase.elapsed = ended.saturating_duration_since(began);
    Ok(phase)
}
