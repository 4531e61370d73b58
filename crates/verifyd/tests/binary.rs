//! The `verifyd` binary end to end: zero-config start, durability across `kill -9`, the CLI.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a failed unwrap is a failed test"
)]

mod common;

use std::process::Command;

use common::{KEY, SECRET, Server, free_port, signed, write_config};
use reqwest::Method;
use serde_json::{Value, json};
use verifyd_testkit::inbox_code;

#[tokio::test]
async fn serve_with_no_config_creates_an_application_and_prints_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // No config file at all; only the listen address is moved off 8080 via the environment.
    let env = [("VERIFYD_LISTEN", format!("127.0.0.1:{port}"))];
    let server = Server::spawn(dir.path(), &[], &env, port);
    assert!(
        dir.path().join("verifyd.db").exists(),
        "default database ./verifyd.db"
    );
    let key = line_value(&server.stdout, "key:");
    let secret = line_value(&server.stdout, "secret:");
    let http = reqwest::Client::new();
    let r = signed(
        &http,
        &server.url,
        Method::POST,
        "/verification/v1/verifications",
        Some(json!({"identity": {"type": "number", "endpoint": "+46700000501"}, "method": "sms"})),
        &key,
        &secret,
    )
    .await;
    assert_eq!(r.status(), 200);
    drop(server);
    // A second start finds the application and prints no secret.
    let again = Server::spawn(dir.path(), &[], &env, port);
    assert!(
        again.stdout.iter().all(|l| !l.contains("secret:")),
        "{:?}",
        again.stdout
    );
}

fn line_value(lines: &[String], prefix: &str) -> String {
    lines
        .iter()
        .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_string()))
        .unwrap_or_else(|| panic!("no {prefix} line in {lines:?}"))
}

#[tokio::test]
async fn an_answered_start_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port);
    let config_arg = config.to_str().unwrap();
    let server = Server::spawn(dir.path(), &["--config", config_arg], &[], port);
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..20 {
        let r = signed(
            &http,
            &server.url,
            Method::POST,
            "/verification/v1/verifications",
            Some(
                json!({"identity": {"type": "number", "endpoint": format!("+467000006{i:02}")},
                "method": "sms", "reference": format!("durable-{i}")}),
            ),
            KEY,
            SECRET,
        )
        .await;
        assert_eq!(r.status(), 200);
        ids.push(
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    server.kill_hard();
    let server = Server::spawn(dir.path(), &["--config", config_arg], &[], port);
    // A fresh client: the old one's pooled connection died with the process.
    let http = reqwest::Client::new();
    for (i, id) in ids.iter().enumerate() {
        let r = signed(
            &http,
            &server.url,
            Method::GET,
            &format!("/verification/v1/verifications/id/{id}"),
            None,
            KEY,
            SECRET,
        )
        .await;
        assert_eq!(r.status(), 200, "verification {i} lost");
        let s: Value = r.json().await.unwrap();
        assert_eq!(s["status"], "PENDING");
        assert_eq!(s["reference"], format!("durable-{i}"));
    }
}

#[test]
fn config_default_prints_the_reference_which_parses() {
    let out = Command::new(env!("CARGO_BIN_EXE_verifyd"))
        .args(["config", "default"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("listen = \"127.0.0.1:8080\""));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, &text).unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_verifyd"))
        .args(["config", "check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[tokio::test]
async fn apps_create_prints_credentials_that_work() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port);
    let out = Command::new(env!("CARGO_BIN_EXE_verifyd"))
        .args([
            "apps",
            "create",
            "--name",
            "mobile",
            "--config",
            config.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let (key, secret) = (line_value(&lines, "key:"), line_value(&lines, "secret:"));
    assert_eq!(
        verifyd_api::signing::decode_secret(&secret).unwrap().len(),
        16
    );
    let list = Command::new(env!("CARGO_BIN_EXE_verifyd"))
        .args(["apps", "list", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let listing = String::from_utf8(list.stdout).unwrap();
    assert!(listing.contains(&key) && !listing.contains(&secret));
    let server = Server::spawn(
        dir.path(),
        &["--config", config.to_str().unwrap()],
        &[],
        port,
    );
    let http = reqwest::Client::new();
    let r = signed(
        &http,
        &server.url,
        Method::POST,
        "/verification/v1/verifications",
        Some(json!({"identity": {"type": "number", "endpoint": "+46700000701"}, "method": "sms"})),
        &key,
        &secret,
    )
    .await;
    assert_eq!(r.status(), 200);
}

#[test]
fn a_bad_config_fails_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[verification]\ncode_length = 42\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_verifyd"))
        .args(["serve", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("code_length"));
}

#[tokio::test]
async fn logs_carry_neither_codes_nor_secrets_nor_whole_numbers_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port);
    let log_path = dir.path().join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_verifyd"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "trace")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..200 {
        if http.get(format!("{url}/healthz")).send().await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ready, "server did not start");
    let number = "+46700000801";
    let r = signed(
        &http,
        &url,
        Method::POST,
        "/verification/v1/verifications",
        Some(json!({"identity": {"type": "number", "endpoint": number}, "method": "sms"})),
        KEY,
        SECRET,
    )
    .await;
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let code = inbox_code(&http, &url, number).await;
    let r = signed(
        &http,
        &url,
        Method::PUT,
        &format!("/verification/v1/verifications/id/{id}"),
        Some(json!({"method": "sms", "sms": {"code": code}})),
        KEY,
        SECRET,
    )
    .await;
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "SUCCESSFUL");

    // SIGTERM: graceful shutdown, exit status 0.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "{exit}");

    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(logs.contains(&id), "the verification id is logged");
    assert!(logs.contains("+46*******01"), "the number is logged masked");
    assert!(
        !logs.contains(number),
        "the whole number leaked into the logs"
    );
    assert!(
        !logs.contains(&format!("\"{code}\"")) && !logs.contains(&format!("={code}")),
        "the code leaked"
    );
    assert!(!logs.contains(SECRET), "the secret leaked");
    assert!(logs.contains("verifyd stopped"));
}

#[tokio::test]
async fn events_cli_lists_dead_events_and_redelivers_them() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // A callback URL where nothing listens: every delivery fails at once.
    let dead_port = free_port();
    let config = dir.path().join("verifyd.toml");
    std::fs::write(
        &config,
        format!(
            r#"
listen = "127.0.0.1:{port}"
database_url = "sqlite://{}"
[callbacks]
request_timeout_ms = 300
retry_base_ms = 50
retry_max_seconds = 1
max_age_seconds = 1
poll_interval_ms = 50
[[applications]]
name = "e2e"
key = "{KEY}"
secret = "{SECRET}"
callback_url = "http://127.0.0.1:{dead_port}/hook"
callback_fail_open = true
"#,
            dir.path().join("verifyd.db").display()
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let server = Server::spawn(dir.path(), &["--config", cfg], &[], port);
    let http = reqwest::Client::new();
    let r = signed(&http, &server.url, Method::POST, "/verification/v1/verifications",
        Some(json!({"identity": {"type": "number", "endpoint": "+46700000901"}, "method": "seamless"})),
        KEY, SECRET).await;
    assert_eq!(r.status(), 200, "fail-open start");
    let uri = r.json::<Value>().await.unwrap()["seamless"]["targetUri"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(http.get(&uri).send().await.unwrap().status(), 200);
    // Wait (on the real worker and clock) until the result event is dead-lettered.
    let list = || {
        let out = Command::new(env!("CARGO_BIN_EXE_verifyd"))
            .args(["events", "list", "--state", "dead", "--config", cfg])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let mut dead = String::new();
    for _ in 0..100 {
        dead = list();
        if !dead.trim().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let line = dead.lines().next().expect("a dead event");
    assert!(line.contains("\tdead\tresult\t"), "{line}");
    assert!(
        line.contains("connection failed") || line.contains("request failed"),
        "{line}"
    );
    let id = line.split('\t').next().unwrap();
    drop(server);
    let out = Command::new(env!("CARGO_BIN_EXE_verifyd"))
        .args(["events", "redeliver", id, "--config", cfg])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("{id}\tqueued")
    );
    assert!(list().trim().is_empty(), "no longer dead");
    let pending = Command::new(env!("CARGO_BIN_EXE_verifyd"))
        .args(["events", "list", "--state", "pending", "--config", cfg])
        .output()
        .unwrap();
    assert!(
        String::from_utf8(pending.stdout)
            .unwrap()
            .starts_with(&format!("{id}\tpending"))
    );
}
