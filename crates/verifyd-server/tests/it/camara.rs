//! Seamless verification by CAMARA Number Verification, against real peers:
//!
//! - the operator's authorization server is `oidc-provider` 9.13.3 (`e2e/oidc/operator.mjs`),
//!   which authenticates a device "by the network" from its source address: 127.0.0.2 is
//!   the subscriber +46700007001, 127.0.0.5 is a subscriber whose session was not
//!   authenticated by the network, any other address is not on its network;
//! - the Number Verification API is that script's `/verify` handler, behind **Prism in proxy
//!   mode** on `../shared/specs/camara-number-verification.yaml`, so the request verifyd sends
//!   and the answer it gets are both checked against the CAMARA contract (Prism answers 422
//!   instead of forwarding a request that violates it).
//!
//! The device is an HTTP client bound to 127.0.0.2 (or .4, .5) that follows redirects, like
//! a phone's browser: `targetUri` → operator → verifyd's callback.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use verifyd_testkit::{Prism, free_tcp_port, repo_root, shared_spec};

use crate::helpers::{TestApp, assert_error};

const CLIENT_ID: &str = "verifyd-test";
/// The subscriber on 127.0.0.2.
const SUBSCRIBER: &str = "+46700007001";
/// The subscriber on 127.0.0.5, known to the operator but not authenticated by the network.
const OFF_NETWORK_SUBSCRIBER: &str = "+46700007005";

fn device(last_octet: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last_octet)))
        .timeout(Duration::from_secs(90))
        .build()
        .unwrap()
}

/// The CAMARA spec: `$VERIFYD_CAMARA_SPEC`, else `shared/specs/…` beside the repository.
fn spec_path() -> PathBuf {
    shared_spec("VERIFYD_CAMARA_SPEC", "camara-number-verification.yaml")
}

/// A fresh private key in PEM: `ec` (P-256, PKCS#8) or `rsa` (2048 bits).
fn generate_key(dir: &Path, name: &str, kind: &str) -> PathBuf {
    let path = dir.join(name);
    let mut cmd = std::process::Command::new("openssl");
    cmd.args(["genpkey", "-out"]).arg(&path);
    match kind {
        "ec" => cmd.args(["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]),
        _ => cmd.args(["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]),
    };
    let status = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl must be installed to generate the test client keys");
    assert!(status.success(), "openssl genpkey failed");
    path
}

/// The verifyd config of a CAMARA provider.
fn provider_toml(issuer_port: u16, api_url: &str, key: &Path, timeout: u64) -> String {
    format!(
        r#"
[[seamless.providers]]
kind = "camara"
countries = ["SE"]
issuer = "http://127.0.0.1:{issuer_port}"
client_id = "{CLIENT_ID}"
private_key_file = "{}"
key_id = "verifyd-1"
api_url = "{api_url}"
timeout_seconds = {timeout}
"#,
        key.display()
    )
}

/// Spawns verifyd with its clock at the real time: the operator checks the client
/// assertion's `iat`/`exp` against its own clock.
async fn spawn_verifyd(toml: &str) -> TestApp {
    let app = TestApp::spawn_with(toml).await;
    app.clock
        .set(time::OffsetDateTime::from(std::time::SystemTime::now()));
    app
}

/// Drains a child's output into `log` (JSON lines) and sends the first `ready` event.
fn collect_json_lines(
    child: &mut Child,
    log: Arc<Mutex<Vec<Value>>>,
) -> tokio::sync::oneshot::Receiver<Value> {
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::spawn(async move {
        let mut ready_tx = Some(ready_tx);
        while let Ok(Some(line)) = stdout.next_line().await {
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if event["event"] == "ready"
                && let Some(tx) = ready_tx.take()
            {
                let _ = tx.send(event.clone());
            }
            log.lock().unwrap().push(event);
        }
    });
    ready_rx
}

/// The operator: oidc-provider plus the `/verify` handler (`e2e/oidc/operator.mjs`).
struct Operator {
    api: String,
    log: Arc<Mutex<Vec<Value>>>,
    _child: Child,
}

impl Operator {
    async fn start(port: u16, api_port: u16, client_key: &Path, redirect_uris: &[String]) -> Self {
        let dir = repo_root().join("e2e/oidc");
        assert!(
            dir.join("node_modules/oidc-provider").is_dir(),
            "oidc-provider is not installed: run `npm ci --prefix e2e/oidc` (scripts/test.sh does)"
        );
        let devices = json!({
            "127.0.0.2": {"msisdn": SUBSCRIBER, "amr": ["nba"]},
            "127.0.0.5": {"msisdn": OFF_NETWORK_SUBSCRIBER, "amr": ["pwd"]},
        });
        let mut child = Command::new("node")
            .arg("operator.mjs")
            .current_dir(&dir)
            .env("OPERATOR_PORT", port.to_string())
            .env("API_PORT", api_port.to_string())
            .env("CLIENT_ID", CLIENT_ID)
            .env("CLIENT_KEY_FILE", client_key)
            .env("CLIENT_KEY_ID", "verifyd-1")
            .env("REDIRECT_URI", redirect_uris.join(","))
            .env("DEVICES", devices.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node must be installed (scripts/test.sh installs it)");
        let log = Arc::new(Mutex::new(Vec::new()));
        let ready = collect_json_lines(&mut child, log.clone());
        let ready = tokio::time::timeout(Duration::from_secs(60), ready)
            .await
            .expect("the operator did not start within 60 s")
            .expect("the operator exited before it was ready");
        Self {
            api: ready["api"].as_str().unwrap().to_string(),
            log,
            _child: child,
        }
    }

    /// The logged events named `event`.
    fn events(&self, event: &str) -> Vec<Value> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["event"] == event)
            .cloned()
            .collect()
    }
}

fn target_uri(v: &Value) -> String {
    v["seamless"]["targetUri"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn the_operator_verifies_the_device_number_through_the_oidc_flow() {
    let keys = tempfile::tempdir().unwrap();
    let key = generate_key(keys.path(), "client-es256.pem", "ec");
    let (op_port, api_port, prism_port) = (free_tcp_port(), free_tcp_port(), free_tcp_port());
    let app = spawn_verifyd(&provider_toml(
        op_port,
        &format!("http://127.0.0.1:{prism_port}"),
        &key,
        60,
    ))
    .await;
    let callback = format!("{}/verification/v1/seamless/callback", app.url);
    let operator = Operator::start(op_port, api_port, &key, std::slice::from_ref(&callback)).await;
    let _prism = Prism::proxy(&spec_path(), &operator.api, prism_port).await;
    let phone = device(2);

    // The device opens targetUri: verifyd sends it to the operator's authorization endpoint.
    let v = app.start_ok("seamless", SUBSCRIBER).await;
    let id = v["id"].as_str().unwrap().to_string();
    let no_redirects = reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirects.get(target_uri(&v)).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let location = reqwest::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(
        location.as_str().split('?').next().unwrap(),
        format!("http://127.0.0.1:{op_port}/auth")
    );
    let query: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(query["response_type"], "code");
    assert_eq!(query["client_id"], CLIENT_ID);
    assert_eq!(query["redirect_uri"], callback);
    assert_eq!(
        query["scope"],
        "openid dpv:FraudPreventionAndDetection number-verification:verify"
    );
    assert_eq!(query["prompt"], "none");
    assert_eq!(query["code_challenge_method"], "S256");
    assert_eq!(query["login_hint"], format!("tel:{SUBSCRIBER}"));
    assert!(query["state"].starts_with(&format!("{id}.")));
    // The state carries no secret of the verification.
    assert!(!query["state"].contains(target_uri(&v).split("token=").nth(1).unwrap()));

    // Following the redirects as a browser does: operator (network authentication) →
    // callback → exchange → /verify through Prism → SUCCESSFUL.
    let r = phone.get(target_uri(&v)).send().await.unwrap();
    let callback_url = r.url().clone();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert!(callback_url.as_str().starts_with(&callback));
    let s = app.status_id(&id).await;
    assert_eq!(s["status"], "SUCCESSFUL", "{s}");
    assert_eq!(s["source"], "intercepted");

    // The operator saw a prompt=none, PKCE S256 authorization request and a token request
    // authenticated with private_key_jwt carrying the code verifier.
    let auth = &operator.events("authorization.request")[0];
    assert_eq!(auth["ip"], "127.0.0.2");
    assert_eq!(auth["prompt"], "none");
    assert_eq!(auth["code_challenge_method"], "S256");
    let grants = operator.events("grant.success");
    assert_eq!(grants.len(), 1, "{:?}", operator.log.lock().unwrap());
    assert_eq!(grants[0]["client_auth_method"], "private_key_jwt");
    assert_eq!(
        grants[0]["client_assertion_type"],
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    assert_eq!(grants[0]["code_verifier_present"], true);
    // The /verify request passed Prism's contract check (it reached the handler), with the
    // token, JSON, the plain number, and the verification id as x-correlator.
    let verify = &operator.events("verify")[0];
    assert_eq!(verify["answer"], 200);
    assert_eq!(verify["token_valid"], true);
    assert_eq!(verify["verified"], true);
    assert_eq!(verify["body_keys"], json!(["phoneNumber"]));
    assert_eq!(verify["correlator"], id);
    assert!(
        verify["content_type"]
            .as_str()
            .unwrap()
            .starts_with("application/json")
    );

    // Replaying the callback (same code and state): refused, nothing changes, and the
    // operator is not asked again.
    let r = phone.get(callback_url.clone()).send().await.unwrap();
    assert_error(r, 400, 40003).await;
    assert_eq!(app.status_id(&id).await["status"], "SUCCESSFUL");
    assert_eq!(operator.events("grant.success").len(), 1);
    assert!(operator.events("grant.error").is_empty());
    // Opening targetUri again answers the final status without a new flow.
    let r = no_redirects.get(target_uri(&v)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "SUCCESSFUL");

    // The device's line is another number: the operator answers false, FAIL.
    let other = app.start_ok("seamless", "+46700007002").await;
    let r = phone.get(target_uri(&other)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "FAIL");
    assert!(body.get("reason").is_none(), "{body}");
    assert_eq!(operator.events("verify")[1]["verified"], false);

    // A device that is not on the operator's network: prompt=none ends in login_required,
    // the verification ends so the client can fall back to SMS.
    let away = app.start_ok("seamless", "+46700007003").await;
    let r = device(4).get(target_uri(&away)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "FAIL");
    assert_eq!(body["reason"], "Network error or number unreachable");
    let refused = operator.events("authorization.error");
    assert_eq!(refused.last().unwrap()["error"], "login_required");
    assert_eq!(refused.last().unwrap()["ip"], "127.0.0.4");
    let s = app.status_id(away["id"].as_str().unwrap()).await;
    assert_eq!(s["status"], "FAIL");
    assert_eq!(s["reason"], "Network error or number unreachable");

    // A subscriber the operator knows, but not through the mobile network: /verify answers
    // 403 USER_NOT_AUTHENTICATED_BY_MOBILE_NETWORK (a contract-valid answer, through Prism)
    // and the verification ends the same way.
    let wifi = app.start_ok("seamless", OFF_NETWORK_SUBSCRIBER).await;
    let r = device(5).get(target_uri(&wifi)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "FAIL");
    assert_eq!(body["reason"], "Network error or number unreachable");
    assert_eq!(operator.events("verify").last().unwrap()["answer"], 403);

    // Forged states: a MAC that does not verify, a bare id, garbage. Sinch errors; the
    // pending verification they name is untouched and the operator is never called.
    let pending = app.start_ok("seamless", "+46700007004").await;
    let pending_id = pending["id"].as_str().unwrap();
    let grants_before =
        operator.events("grant.success").len() + operator.events("grant.error").len();
    for state in [
        format!("{pending_id}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        pending_id.to_string(),
        "garbage".to_string(),
    ] {
        let r = phone
            .get(&callback)
            .query(&[("state", state.as_str()), ("code", "stolen")])
            .send()
            .await
            .unwrap();
        assert_error(r, 404, 40400).await;
    }
    let r = phone
        .get(&callback)
        .query(&[("code", "x")])
        .send()
        .await
        .unwrap();
    assert_error(r, 400, 40002).await;
    assert_eq!(app.status_id(pending_id).await["status"], "PENDING");
    assert_eq!(
        operator.events("grant.success").len() + operator.events("grant.error").len(),
        grants_before
    );
}

#[tokio::test]
async fn the_operator_refuses_a_client_assertion_signed_with_another_key() {
    let keys = tempfile::tempdir().unwrap();
    // The operator knows verifyd by an RSA key; one verifyd signs with it (RS256), the
    // other with a P-256 key the operator has never seen.
    let registered = generate_key(keys.path(), "registered-rs256.pem", "rsa");
    let unknown = generate_key(keys.path(), "unknown-es256.pem", "ec");
    let (op_port, api_port) = (free_tcp_port(), free_tcp_port());
    let api_url = format!("http://127.0.0.1:{api_port}");
    let good = spawn_verifyd(&provider_toml(op_port, &api_url, &registered, 30)).await;
    let bad = spawn_verifyd(&provider_toml(op_port, &api_url, &unknown, 30)).await;
    let callbacks = [&good, &bad].map(|a| format!("{}/verification/v1/seamless/callback", a.url));
    let operator = Operator::start(op_port, api_port, &registered, &callbacks).await;
    let phone = device(2);

    // The wrong key: the token endpoint answers invalid_client; the device gets 50300 and
    // the verification stays PENDING (a configuration fault is not the subscriber's).
    let v = bad.start_ok("seamless", SUBSCRIBER).await;
    let r = phone.get(target_uri(&v)).send().await.unwrap();
    assert_error(r, 503, 50300).await;
    assert_eq!(
        bad.status_id(v["id"].as_str().unwrap()).await["status"],
        "PENDING"
    );
    let errors = operator.events("grant.error");
    assert_eq!(errors.len(), 1, "{:?}", operator.log.lock().unwrap());
    assert_eq!(errors[0]["error"], "invalid_client");
    assert!(operator.events("verify").is_empty());

    // The registered key (RS256) is accepted.
    let v = good.start_ok("seamless", SUBSCRIBER).await;
    let r = phone.get(target_uri(&v)).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(
        good.status_id(v["id"].as_str().unwrap()).await["status"],
        "SUCCESSFUL"
    );
    assert_eq!(
        operator.events("grant.success")[0]["client_auth_method"],
        "private_key_jwt"
    );
}

#[tokio::test]
async fn an_unreachable_operator_leaves_the_verification_pending() {
    let keys = tempfile::tempdir().unwrap();
    let key = generate_key(keys.path(), "client.pem", "ec");
    // Nothing listens on these ports.
    let closed = free_tcp_port();
    let app = spawn_verifyd(&provider_toml(
        closed,
        &format!("http://127.0.0.1:{closed}"),
        &key,
        5,
    ))
    .await;
    let v = app.start_ok("seamless", SUBSCRIBER).await;
    let r = device(2).get(target_uri(&v)).send().await.unwrap();
    let e = assert_error(r, 503, 50300).await;
    assert_eq!(
        e["message"],
        "The mobile operator could not complete the verification; try again later."
    );
    assert_eq!(
        app.status_id(v["id"].as_str().unwrap()).await["status"],
        "PENDING"
    );
    // Another destination still has no seamless provider.
    let r = app
        .start(json!({"identity": {"type": "number", "endpoint": "+33612345678"}, "method": "seamless"}))
        .await;
    assert_error(r, 403, 40300).await;
}

#[test]
fn a_camara_provider_needs_a_usable_private_key() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let settings = |toml: &str| {
        verifyd_server::Config::from_toml(toml)
            .unwrap()
            .settings()
            .map(|_| ())
            .map_err(|e| format!("{e:#}"))
    };
    let err = settings(&provider_toml(1, "http://127.0.0.1:1", &garbage, 5)).unwrap_err();
    assert!(
        err.contains("private_key_file") && err.contains("not a usable private key"),
        "{err}"
    );
    let missing = settings(&provider_toml(
        1,
        "http://127.0.0.1:1",
        &dir.path().join("none.pem"),
        5,
    ))
    .unwrap_err();
    assert!(
        missing.contains("cannot read private_key_file"),
        "{missing}"
    );
    let key = generate_key(dir.path(), "ok.pem", "ec");
    settings(&provider_toml(1, "http://127.0.0.1:1", &key, 5)).unwrap();
    let no_issuer = provider_toml(1, "http://127.0.0.1:1", &key, 5).replace("issuer = ", "# ");
    assert!(
        settings(&no_issuer)
            .unwrap_err()
            .contains("issuer is required")
    );
}
