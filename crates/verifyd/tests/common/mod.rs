//! Running the real `verifyd` binary as a child process.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "harness for a real child process: it polls wall time while the binary starts"
)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use verifyd_api::signing::{SignedRequest, decode_secret};

pub use verifyd_testkit::free_tcp_port as free_port;

pub const KEY: &str = "appKey";
pub const SECRET: &str = "YXBwU2VjcmV0";

/// Writes a config for `port` and `db` with the SDK e2e application.
pub fn write_config(dir: &Path, port: u16) -> std::path::PathBuf {
    let path = dir.join("verifyd.toml");
    std::fs::write(
        &path,
        format!(
            r#"
listen = "127.0.0.1:{port}"
database_url = "sqlite://{}"
[[applications]]
name = "e2e"
key = "{KEY}"
secret = "{SECRET}"
"#,
            dir.join("verifyd.db").display()
        ),
    )
    .unwrap();
    path
}

/// A running `verifyd serve`.
pub struct Server {
    pub child: Child,
    pub url: String,
    /// Lines the server printed on stdout before it became healthy.
    pub stdout: Vec<String>,
}

impl Server {
    /// Spawns `verifyd serve` in `cwd` with `args` and `env`, and waits for `/healthz`.
    pub fn spawn(cwd: &Path, args: &[&str], env: &[(&str, String)], port: u16) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_verifyd"));
        cmd.current_dir(cwd)
            .arg("serve")
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn verifyd");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = reqwest::blocking_get(&format!("{url}/healthz"))
                && r
            {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("verifyd exited early: {status}");
            }
            assert!(Instant::now() < deadline, "verifyd did not become healthy");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut stdout = Vec::new();
        if let Some(out) = child.stdout.take() {
            // The server prints its start-up banner (if any) before listening.
            let reader = BufReader::new(out);
            let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let sink = lines.clone();
            std::thread::spawn(move || {
                for line in reader.lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
            std::thread::sleep(Duration::from_millis(100));
            stdout = lines.lock().unwrap().clone();
        }
        Self { child, url, stdout }
    }

    /// `kill -9`.
    pub fn kill_hard(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Minimal blocking GET returning whether it answered 200.
mod reqwest {
    pub fn blocking_get(url: &str) -> Result<bool, ()> {
        let rest = url.strip_prefix("http://").ok_or(())?;
        let (host, path) = rest.split_once('/').ok_or(())?;
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(host).map_err(|_| ())?;
        write!(
            s,
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .map_err(|_| ())?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).map_err(|_| ())?;
        Ok(buf.starts_with("HTTP/1.1 200"))
    }
}

/// A signed request with the system clock (the binary uses the system clock).
pub async fn signed(
    http: &::reqwest::Client,
    base: &str,
    method: ::reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
    key: &str,
    secret: &str,
) -> ::reqwest::Response {
    let body = body
        .map(|b| serde_json::to_vec(&b).unwrap())
        .unwrap_or_default();
    let ts = OffsetDateTime::now_utc().format(&Rfc3339).unwrap();
    let auth = SignedRequest {
        verb: method.as_str(),
        body: &body,
        content_type: "application/json",
        timestamp: &ts,
        resource: path,
    }
    .authorization("Application", key, &decode_secret(secret).unwrap());
    http.request(method, format!("{base}{path}"))
        .header("authorization", auth)
        .header("x-timestamp", ts)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Now, as an x-timestamp value.
pub fn now_rfc3339() -> String {
    OffsetDateTime::now_utc().format(&Rfc3339).unwrap()
}

/// The callback receiver (`e2e/node/callback-receiver.mjs`): it checks every callback's
/// signature with the official Sinch validator, answers request events as scripted through
/// `/__control`, and records the events.
pub struct NodeReceiver {
    child: Child,
    /// Its base URL.
    pub base: String,
}

impl NodeReceiver {
    /// Starts it on a free port.
    pub fn start() -> Self {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../e2e/node");
        assert!(
            dir.join("node_modules/@sinch/verification").exists(),
            "npm peers missing: run `npm ci --prefix e2e/node` (done by scripts/test.sh)"
        );
        let mut child = Command::new("node")
            .arg("callback-receiver.mjs")
            .current_dir(&dir)
            .env("RECEIVER_PORT", "0")
            .env("RECEIVER_KEY", KEY)
            .env("RECEIVER_SECRET", SECRET)
            .env("RECEIVER_EXIT_ON_STDIN_EOF", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("node");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("listening ")
            .expect("listening line")
            .to_string();
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// The URL to configure as an application's callback URL.
    pub fn callback_url(&self) -> String {
        format!("{}/webhooks/verification", self.base)
    }

    /// Posts `body` to `/__control/{path}` (`script`: answers for request events).
    pub async fn control(&self, http: &::reqwest::Client, path: &str, body: serde_json::Value) {
        let r = http
            .post(format!("{}/__control/{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    /// The events received so far, once there are at least `min` (or after 30 s).
    pub async fn events(&self, http: &::reqwest::Client, min: usize) -> Vec<serde_json::Value> {
        let r: serde_json::Value = http
            .get(format!(
                "{}/__control/events?min={min}&timeoutMs=30000",
                self.base
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["events"].as_array().unwrap().clone()
    }
}

impl Drop for NodeReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
