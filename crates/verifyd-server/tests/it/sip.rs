//! Flash calls through verifyd over a SIP trunk, with SIPp as the carrier and handset
//! (`e2e/sip/*.xml`): the CLI the handset sees is the one the report carries; a busy
//! handset ends the verification ERROR with callResult BUSY.

use std::path::Path;

use serde_json::{Value, json};

use verifyd_testkit::free_udp_port;

use crate::helpers::TestApp;

struct Sipp(verifyd_testkit::Sipp);

impl Sipp {
    async fn start(scenario: &str) -> Self {
        let e2e = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../e2e/sip");
        Sipp(
            verifyd_testkit::Sipp::start(
                &e2e.join(scenario),
                free_udp_port(),
                &[],
                tempfile::tempdir().unwrap(),
            )
            .await,
        )
    }

    /// The scenario's log lines, once SIPp has finished.
    async fn logs(self) -> String {
        self.0.finish().await.log
    }
}

async fn app_for(sipp: &Sipp) -> TestApp {
    TestApp::spawn_with(&format!(
        r#"
[flashcall]
cli_ranges = [{{ prefix = "+4930123", digits = 6 }}]
[[channels.sip]]
name = "sip:carrier"
proxy = "127.0.0.1:{}"
from_domain = "verify.example.com"
bind = "127.0.0.1:{}"
media_ip = "127.0.0.1"
calls_per_second = 50
[[routes]]
name = "voice"
methods = ["flashcall", "callout"]
channel = "sip:carrier"
"#,
        sipp.0.port,
        free_udp_port()
    ))
    .await
}

#[tokio::test]
async fn a_flash_call_presents_the_cli_the_report_must_carry() {
    let sipp = Sipp::start("uas_flash.xml").await;
    let app = app_for(&sipp).await;
    let v = app.start_ok("flashcall", "+46700008001").await;
    let id = v["id"].as_str().unwrap().to_string();
    let logs = sipp.logs().await;
    // SIPp's log line: `INVITE from_user=+49… pai_user=+49… call_id=…`.
    let cli = logs
        .split("from_user=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("SIPp logged no INVITE: {logs}"))
        .to_string();
    assert!(cli.starts_with("+4930123") && cli.len() == 14, "{cli}");
    assert!(
        logs.contains(&format!("pai_user={cli} ")),
        "P-Asserted-Identity carries the CLI"
    );
    assert!(logs.contains("CANCEL received"), "the call was cancelled");
    let filter = regex::Regex::new(v["flashCall"]["cliFilter"].as_str().unwrap()).unwrap();
    assert!(filter.is_match(&cli));
    let r: Value = app
        .report_id(
            &id,
            json!({"method": "flashcall", "flashCall": {"cli": cli}}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "SUCCESSFUL");
    let s = app.status_id(&id).await;
    assert_eq!(
        (s["callComplete"].as_bool(), s["callResult"].as_str()),
        (Some(true), Some("CANCEL"))
    );
}

#[tokio::test]
async fn a_busy_handset_ends_the_verification_with_call_result_busy() {
    let sipp = Sipp::start("uas_busy.xml").await;
    let app = app_for(&sipp).await;
    let v = app.start_ok("flashcall", "+46700008002").await;
    let id = v["id"].as_str().unwrap().to_string();
    let _ = sipp.logs().await;
    let mut s = Value::Null;
    for _ in 0..200 {
        s = app.status_id(&id).await;
        if s["status"] == "ERROR" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        (s["status"].as_str(), s["reason"].as_str()),
        (Some("ERROR"), Some("Network error or number unreachable"))
    );
    assert_eq!(s["callResult"], "BUSY");
}
