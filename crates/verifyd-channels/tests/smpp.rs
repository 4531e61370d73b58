//! The SMPP channel against a real SMSC: node-smpp 0.5.1's server (`e2e/smsc/smsc.js`) over
//! loopback. Each test starts its own SMSC process on a free port, drives the channel, and
//! asserts on what the SMSC logged (one JSON line per PDU) as well as on what `send` returned.
//!
//! Needs node and `npm ci --prefix e2e/smsc`; a missing `node_modules` fails the tests rather
//! than skipping them.
#![allow(clippy::unwrap_used, reason = "tests")]
#![allow(clippy::expect_used, reason = "tests")]

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use verifyd_channels::smpp::{MessageIdFormat, Sender, SmppChannel, SmppConfig, SmppStatus};
use verifyd_channels::{
    Channel, Delivery, OutboundMessage, Payload, Receipt, ReceiptStatus, SendError,
};
use verifyd_core::{Method, PhoneNumber};
use verifyd_testkit::Smsc;

/// A test channel configuration with fast reconnects and short timeouts.
fn config(url: &str) -> SmppConfig {
    let mut config = SmppConfig::new(
        "smpp:test",
        url,
        "verifyd",
        "secret",
        Sender::Alphanumeric("Verify".into()),
    );
    config.reconnect_min = Duration::from_millis(50);
    config.reconnect_max = Duration::from_millis(400);
    config.response_timeout = Duration::from_secs(2);
    config.throttle_backoff = Duration::from_millis(20);
    config
}

/// Logs to stderr when `TEST_LOG` is set (e.g. `TEST_LOG=verifyd_channels=debug`).
fn init_logs() {
    if let Ok(filter) = std::env::var("TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}

/// Connects a channel and waits for the bind.
async fn bound_channel(config: SmppConfig) -> (SmppChannel, mpsc::UnboundedReceiver<Receipt>) {
    init_logs();
    let (tx, rx) = mpsc::unbounded_channel();
    let channel = SmppChannel::connect(config, tx).unwrap();
    assert!(
        channel.wait_bound(Duration::from_secs(5)).await,
        "no bind: {:?}",
        channel.status()
    );
    (channel, rx)
}

fn sms(to: &str, body: &str) -> OutboundMessage {
    OutboundMessage {
        verification_id: "ver_test".into(),
        app: "app".into(),
        method: Method::Sms,
        to: PhoneNumber::from_parts(to.into(), 49, Some("DE".into())),
        payload: Payload::Text {
            body: body.into(),
            code: "1234".into(),
            locale: "en".into(),
        },
        sender: None,
        created_at: OffsetDateTime::UNIX_EPOCH,
    }
}

async fn next_receipt(rx: &mut mpsc::UnboundedReceiver<Receipt>) -> Receipt {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("no receipt within 5 s")
        .unwrap()
}

fn message_id(delivery: &Delivery) -> String {
    delivery.message_id.clone().expect("a message id")
}

#[tokio::test]
async fn delivered_receipt_carries_the_message_id_send_returned() {
    let smsc = Smsc::start(&[]).await;
    let (channel, mut receipts) = bound_channel(config(&smsc.url())).await;
    assert_eq!(channel.name(), "smpp:test");
    assert_eq!(Channel::name(&channel), "smpp:test");

    let delivery = channel
        .send(&sms("+4917012345670", "Your code is 4815"))
        .await
        .unwrap();
    assert!(!delivery.delivered);
    assert_eq!(delivery.call, None);
    let id = message_id(&delivery);
    assert_eq!(id, "msg1");

    let receipt = next_receipt(&mut receipts).await;
    assert_eq!(
        receipt,
        Receipt {
            channel: "smpp:test".into(),
            message_id: id,
            status: ReceiptStatus::Delivered,
            detail: Some("stat:DELIVRD err:000".into()),
        }
    );

    // What the SMSC saw: a 3.4 transceiver bind, and the PDU fields the spec asks for.
    let binds = smsc.events_of("bind_transceiver");
    assert_eq!(binds.len(), 1);
    assert_eq!(binds[0]["interface_version"], 0x34);
    assert_eq!(binds[0]["system_id"], "verifyd");
    let submits = smsc.events_of("submit_sm");
    assert_eq!(submits.len(), 1);
    let s = &submits[0];
    assert_eq!(s["src"], "Verify");
    assert_eq!(
        (s["src_ton"].as_u64(), s["src_npi"].as_u64()),
        (Some(5), Some(0))
    );
    assert_eq!(s["dst"], "4917012345670");
    assert_eq!(
        (s["dst_ton"].as_u64(), s["dst_npi"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(s["text"], "Your code is 4815");
    assert_eq!(s["data_coding"], 0);
    assert_eq!(s["esm_class"], 0);
    assert_eq!(s["registered_delivery"], 1);
    assert_eq!(s["udh"], Value::Null);
    // The receipt was acknowledged.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let resps = smsc.events_of("deliver_sm_resp");
    assert_eq!(resps.len(), 1);
    assert_eq!(resps[0]["status"], 0);

    channel.shutdown().await;
    assert_eq!(channel.status(), SmppStatus::Stopped);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        smsc.events_of("unbind").len(),
        1,
        "a clean unbind on shutdown"
    );
    smsc.stop().await;
}

#[tokio::test]
async fn senders_get_the_right_ton_and_npi_and_routes_can_override_them() {
    let smsc = Smsc::start(&[]).await;
    let mut config = config(&smsc.url());
    config.source = Sender::Numeric("+4930123456".into());
    let (channel, _receipts) = bound_channel(config).await;
    channel
        .send(&sms("+4917012345670", "code 1"))
        .await
        .unwrap();
    let s = &smsc.events_of("submit_sm")[0];
    assert_eq!(s["src"], "4930123456");
    assert_eq!(
        (s["src_ton"].as_u64(), s["src_npi"].as_u64()),
        (Some(1), Some(1))
    );

    // A route's sender overrides the configured one.
    let mut message = sms("+4917012345670", "code 2");
    message.sender = Some("AcmeBank".into());
    channel.send(&message).await.unwrap();
    let s = &smsc.events_of("submit_sm")[1];
    assert_eq!(s["src"], "AcmeBank");
    assert_eq!(
        (s["src_ton"].as_u64(), s["src_npi"].as_u64()),
        (Some(5), Some(0))
    );
    message.sender = Some("Way too long sender".into());
    assert!(matches!(
        channel.send(&message).await,
        Err(SendError::Permanent { .. })
    ));
    smsc.stop().await;
}

#[tokio::test]
async fn undelivered_and_expired_receipts_are_failed_and_intermediate_ones_are_skipped() {
    let smsc = Smsc::start(&[]).await;
    let (channel, mut receipts) = bound_channel(config(&smsc.url())).await;

    let undeliv = message_id(&channel.send(&sms("+4917012345991", "a")).await.unwrap());
    let r = next_receipt(&mut receipts).await;
    assert_eq!(r.message_id, undeliv);
    assert_eq!(r.status, ReceiptStatus::Failed);
    assert_eq!(r.detail.as_deref(), Some("stat:UNDELIV err:001"));

    let expired = message_id(&channel.send(&sms("+4917012345996", "b")).await.unwrap());
    let r = next_receipt(&mut receipts).await;
    assert_eq!((r.message_id, r.status), (expired, ReceiptStatus::Failed));
    assert_eq!(r.detail.as_deref(), Some("stat:EXPIRED err:000"));

    // ACCEPTD first, DELIVRD 100 ms later: only the final one is reported.
    let accepted = message_id(&channel.send(&sms("+4917012345997", "c")).await.unwrap());
    let r = next_receipt(&mut receipts).await;
    assert_eq!(
        (r.message_id.as_str(), r.status),
        (accepted.as_str(), ReceiptStatus::Delivered)
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(receipts.try_recv().is_err(), "nothing else was reported");
    // Both receipts were still acknowledged.
    let acks: Vec<_> = smsc
        .events_of("deliver_sm_resp")
        .into_iter()
        .filter(|e| e["id"] == accepted.as_str())
        .collect();
    assert_eq!(acks.len(), 2);
    smsc.stop().await;
}

#[tokio::test]
async fn hex_response_ids_match_decimal_receipt_ids() {
    // submit_sm_resp says "A0001"; the receipt text (no TLVs) says "id:0000655361".
    let smsc = Smsc::start(&[("SMSC_ID_FORMAT", "hex"), ("SMSC_RECEIPT_TLVS", "0")]).await;
    let mut config = config(&smsc.url());
    config.message_ids = MessageIdFormat::HexInResponse;
    let (channel, mut receipts) = bound_channel(config).await;
    let id = message_id(&channel.send(&sms("+4917012345670", "x")).await.unwrap());
    assert_eq!(smsc.events_of("submit_sm")[0]["id"], "A0001");
    assert_eq!(id, "655361");
    let r = next_receipt(&mut receipts).await;
    assert_eq!((r.message_id, r.status), (id, ReceiptStatus::Delivered));
    smsc.stop().await;
}

#[tokio::test]
async fn throttling_answers_are_retried_until_accepted() {
    let smsc = Smsc::start(&[("SMSC_THROTTLE_N", "2")]).await;
    let (channel, _receipts) = bound_channel(config(&smsc.url())).await;

    let started = Instant::now();
    let id = message_id(&channel.send(&sms("+4917012345992", "t")).await.unwrap());
    // Pauses of 20 ms and 40 ms.
    assert!(started.elapsed() >= Duration::from_millis(60));
    let id2 = message_id(&channel.send(&sms("+4917012345994", "q")).await.unwrap());

    let submits = smsc.events_of("submit_sm");
    let statuses = |dst: &str| -> Vec<u64> {
        submits
            .iter()
            .filter(|s| s["dst"] == dst)
            .map(|s| s["status"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(statuses("4917012345992"), vec![0x58, 0x58, 0]);
    assert_eq!(statuses("4917012345994"), vec![0x14, 0x14, 0]);
    let accepted: Vec<&Value> = submits.iter().filter(|s| s["status"] == 0).collect();
    assert_eq!(accepted[0]["id"], id.as_str());
    assert_eq!(accepted[1]["id"], id2.as_str());
    smsc.stop().await;
}

#[tokio::test]
async fn persistent_throttling_ends_in_retryable_with_a_retry_after() {
    let mut smsc = Smsc::start(&[]).await;
    let (channel, _receipts) = bound_channel(config(&smsc.url())).await;
    smsc.control(&serde_json::json!({"cmd": "set", "throttle_next": 100}))
        .await;
    match channel.send(&sms("+4917012345670", "t")).await {
        Err(SendError::Retryable {
            reason,
            retry_after,
        }) => {
            assert!(reason.contains("ESME_RTHROTTLED"), "{reason}");
            // 20, 40, 80, then 160 ms.
            assert_eq!(retry_after, Some(Duration::from_millis(160)));
        }
        other => panic!("expected Retryable, got {other:?}"),
    }
    // One try and three retries, all refused.
    let submits = smsc.events_of("submit_sm");
    assert_eq!(submits.len(), 4);
    assert!(submits.iter().all(|s| s["status"] == 0x58));
    smsc.stop().await;
}

#[tokio::test]
async fn an_error_status_is_permanent_and_not_retried() {
    let smsc = Smsc::start(&[]).await;
    let (channel, _receipts) = bound_channel(config(&smsc.url())).await;
    match channel.send(&sms("+4917012345993", "p")).await {
        Err(SendError::Permanent { reason }) => {
            assert!(reason.contains("ESME_RINVDSTADR"), "{reason}");
            assert!(!reason.contains("4917012345993"), "no numbers in reasons");
        }
        other => panic!("expected Permanent, got {other:?}"),
    }
    assert_eq!(smsc.events_of("submit_sm").len(), 1);

    // Not a text: refused without touching the SMSC.
    let mut flash = sms("+4917012345670", "x");
    flash.payload = Payload::FlashCall {
        cli: "+4930123456".into(),
        dial_timeout: 10,
    };
    assert_eq!(
        channel.send(&flash).await,
        Err(SendError::Permanent {
            reason: "not an SMS channel".into()
        })
    );
    assert_eq!(smsc.events_of("submit_sm").len(), 1);
    smsc.stop().await;
}

#[tokio::test]
async fn a_dropped_connection_never_duplicates_an_accepted_message() {
    let mut smsc = Smsc::start(&[("SMSC_RECEIPTS", "0")]).await;
    let (channel, _receipts) = bound_channel(config(&smsc.url())).await;
    smsc.control(&serde_json::json!({"cmd": "set", "drop_after": 20}))
        .await;

    let channel = Arc::new(channel);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let channel = channel.clone();
        tasks.push(tokio::spawn(async move {
            let body = format!("drop test {i:03}");
            let result = channel.send(&sms("+4917012345670", &body)).await;
            (body, result)
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }

    let submits = smsc.events_of("submit_sm");
    let mut logged: HashMap<String, Vec<&Value>> = HashMap::new();
    for s in &submits {
        logged
            .entry(s["text"].as_str().unwrap().to_owned())
            .or_default()
            .push(s);
    }
    let accepted_in_log = submits.iter().filter(|s| s["status"] == 0).count();
    assert_eq!(accepted_in_log, 20, "the SMSC accepted 20 before dropping");

    let (mut ok, mut unknown, mut not_sent) = (0, 0, 0);
    for (body, result) in &results {
        let entries = logged.get(body).map(Vec::as_slice).unwrap_or_default();
        assert!(
            entries.len() <= 1,
            "{body} was submitted {} times",
            entries.len()
        );
        match result {
            Ok(delivery) => {
                ok += 1;
                assert_eq!(entries.len(), 1, "{body}: Ok but not logged once");
                assert_eq!(entries[0]["id"], message_id(delivery).as_str());
            }
            Err(SendError::OutcomeUnknown { .. }) => {
                unknown += 1;
            }
            Err(SendError::Retryable { reason, .. }) if reason.starts_with("not sent") => {
                not_sent += 1;
                assert!(
                    entries.iter().all(|e| e["status"] != 0),
                    "{body}: reported not sent but the SMSC accepted it"
                );
            }
            Err(other) => panic!("{body}: unexpected {other:?}"),
        }
    }
    assert!((1..=20).contains(&ok), "ok={ok}");
    assert_eq!(ok + unknown + not_sent, 50);
    eprintln!("drop test: {ok} ok, {unknown} outcome unknown, {not_sent} not sent");

    // The channel reconnects by itself and new messages go out exactly once.
    assert!(channel.wait_bound(Duration::from_secs(5)).await);
    for i in 0..10 {
        let body = format!("after drop {i}");
        let delivery = channel.send(&sms("+4917012345670", &body)).await.unwrap();
        let entries: Vec<_> = smsc
            .events_of("submit_sm")
            .into_iter()
            .filter(|s| s["text"] == body.as_str())
            .collect();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0]["id"], message_id(&delivery).as_str());
    }
    assert_eq!(smsc.events_of("bind_transceiver").len(), 2);
    smsc.stop().await;
}

#[tokio::test]
async fn unicode_text_goes_out_as_ucs2() {
    let smsc = Smsc::start(&[]).await;
    let (channel, _receipts) = bound_channel(config(&smsc.url())).await;
    let body = "Ваш код: 4815 ✓ 😀";
    channel.send(&sms("+4917012345670", body)).await.unwrap();
    let s = &smsc.events_of("submit_sm")[0];
    assert_eq!(s["data_coding"], 8);
    assert_eq!(s["esm_class"], 0);
    assert_eq!(s["text"], body);
    smsc.stop().await;
}

/// Checks the parts of one concatenated message in the log and returns its text.
fn concatenated(submits: &[Value], parts: u64, data_coding: u64) -> String {
    assert_eq!(submits.len() as u64, parts);
    let reference = &submits[0]["udh"]["ref"];
    let mut text = String::new();
    for (i, s) in submits.iter().enumerate() {
        assert_eq!(s["esm_class"], 0x40, "UDHI set");
        assert_eq!(s["data_coding"], data_coding);
        assert_eq!(&s["udh"]["ref"], reference);
        assert_eq!(s["udh"]["total"], parts);
        assert_eq!(s["udh"]["seq"], i as u64 + 1);
        text.push_str(s["text"].as_str().unwrap());
    }
    text
}

#[tokio::test]
async fn long_texts_go_out_as_concatenated_parts() {
    let smsc = Smsc::start(&[]).await;
    let (channel, _receipts) = bound_channel(config(&smsc.url())).await;

    // 400 GSM characters (two of them from the extension table): 153 + 153 + 96 septets.
    let body: String = format!("{{code}} {}", "Lorem ipsum 0123456789 ".repeat(20))
        .chars()
        .take(400)
        .collect();
    let delivery = channel.send(&sms("+4917012345670", &body)).await.unwrap();
    let submits = smsc.events_of("submit_sm");
    assert_eq!(concatenated(&submits, 3, 0), body);
    assert_eq!(
        submits[0]["id"],
        message_id(&delivery).as_str(),
        "the first part's id"
    );

    // 150 Cyrillic characters: 67 + 67 + 16 UCS-2 characters.
    let body = "Проверка ".repeat(17).chars().take(150).collect::<String>();
    channel.send(&sms("+4917012345670", &body)).await.unwrap();
    let submits = smsc.events_of("submit_sm");
    assert_eq!(concatenated(&submits[3..], 3, 8), body);
    assert_ne!(
        submits[0]["udh"]["ref"], submits[3]["udh"]["ref"],
        "a new reference"
    );
    smsc.stop().await;
}

#[tokio::test]
async fn never_more_than_window_submits_are_unanswered() {
    let smsc = Smsc::start(&[("SMSC_RESPONSE_DELAY_MS", "40"), ("SMSC_RECEIPTS", "0")]).await;
    let mut config = config(&smsc.url());
    config.window = 4;
    let (channel, _receipts) = bound_channel(config).await;
    let channel = Arc::new(channel);
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let channel = channel.clone();
            tokio::spawn(
                async move { channel.send(&sms("+4917012345670", &format!("w{i}"))).await },
            )
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let mut smsc = smsc;
    let stats = smsc.stats().await;
    assert_eq!(
        stats["max_in_flight"], 4,
        "the window was used fully and never exceeded"
    );
    let max_logged = smsc
        .events_of("submit_sm")
        .iter()
        .map(|s| s["in_flight"].as_u64().unwrap())
        .max();
    assert_eq!(max_logged, Some(4));
    smsc.stop().await;
}

#[tokio::test]
async fn tps_caps_the_submit_rate() {
    let smsc = Smsc::start(&[("SMSC_RECEIPTS", "0")]).await;
    let mut config = config(&smsc.url());
    config.tps = Some(20);
    let (channel, _receipts) = bound_channel(config).await;
    let channel = Arc::new(channel);
    let started = Instant::now();
    let tasks: Vec<_> = (0..21)
        .map(|i| {
            let channel = channel.clone();
            tokio::spawn(
                async move { channel.send(&sms("+4917012345670", &format!("r{i}"))).await },
            )
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    // 21 submits at 20/s: the last one starts 1 s after the first.
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(990), "{elapsed:?}");
    // Generous: the machine may be busy; the lower bound is the point.
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    smsc.stop().await;
}

#[tokio::test]
async fn a_send_during_the_first_bind_waits_for_it() {
    init_logs();
    let smsc = Smsc::start(&[("SMSC_BIND_DELAY_MS", "300")]).await;
    let (tx, _receipts) = mpsc::unbounded_channel();
    let channel = SmppChannel::connect(config(&smsc.url()), tx).unwrap();
    // The SMSC holds the bind response back: the session is still being set up.
    while smsc.events_of("bind_transceiver").is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(channel.status(), SmppStatus::Connecting);

    let delivery = channel
        .send(&sms("+4917012345670", "right after start-up"))
        .await
        .unwrap();
    let submits = smsc.events_of("submit_sm");
    assert_eq!(submits.len(), 1);
    assert_eq!(submits[0]["id"], message_id(&delivery).as_str());
    assert_eq!(smsc.events_of("bind_transceiver").len(), 1);
    smsc.stop().await;
}

#[tokio::test]
async fn the_channel_binds_once_a_down_smsc_comes_up() {
    // A port nobody listens on (yet).
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let (tx, _receipts) = mpsc::unbounded_channel();
    let channel = SmppChannel::connect(config(&format!("smpp://127.0.0.1:{port}")), tx).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_ne!(channel.status(), SmppStatus::Bound);
    match channel.send(&sms("+4917012345670", "early")).await {
        Err(SendError::Retryable { reason, .. }) => {
            assert!(reason.starts_with("not sent"), "{reason}")
        }
        other => panic!("expected Retryable, got {other:?}"),
    }

    let smsc = Smsc::start_on(port, &[]).await;
    assert!(channel.wait_bound(Duration::from_secs(5)).await);
    channel.send(&sms("+4917012345670", "late")).await.unwrap();
    let submits = smsc.events_of("submit_sm");
    assert_eq!(submits.len(), 1);
    assert_eq!(submits[0]["text"], "late");
    smsc.stop().await;
}

#[tokio::test]
async fn a_rejected_bind_makes_sends_permanent() {
    let smsc = Smsc::start(&[("SMSC_PASSWORD", "other")]).await;
    let (tx, _receipts) = mpsc::unbounded_channel();
    let channel = SmppChannel::connect(config(&smsc.url()), tx).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !matches!(channel.status(), SmppStatus::BindRejected(_)) {
        assert!(Instant::now() < deadline, "{:?}", channel.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        channel.status(),
        SmppStatus::BindRejected("ESME_RINVPASWD (0x0000000E)".into())
    );
    match channel.send(&sms("+4917012345670", "x")).await {
        Err(SendError::Permanent { reason }) => assert!(reason.contains("ESME_RINVPASWD")),
        other => panic!("expected Permanent, got {other:?}"),
    }
    assert!(smsc.events_of("submit_sm").is_empty());
    smsc.stop().await;
}

#[tokio::test]
async fn the_channel_rebinds_after_the_smsc_unbinds() {
    let mut smsc = Smsc::start(&[]).await;
    let (channel, _receipts) = bound_channel(config(&smsc.url())).await;
    smsc.control(&serde_json::json!({"cmd": "unbind"})).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while smsc.events_of("bind_transceiver").len() < 2 {
        assert!(Instant::now() < deadline, "no second bind");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(smsc.events_of("unbind_resp").len(), 1, "our unbind_resp");
    assert!(channel.wait_bound(Duration::from_secs(5)).await);
    channel.send(&sms("+4917012345670", "x")).await.unwrap();
    smsc.stop().await;
}

#[tokio::test]
async fn a_silent_smsc_gives_outcome_unknown_and_a_new_session() {
    let mut smsc = Smsc::start(&[]).await;
    let mut config = config(&smsc.url());
    config.response_timeout = Duration::from_millis(500);
    config.enquire_link_interval = Duration::from_millis(200);
    let (channel, _receipts) = bound_channel(config).await;
    // enquire_link runs on its own.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!smsc.events_of("enquire_link").is_empty());

    smsc.control(&serde_json::json!({"cmd": "mute"})).await;
    match channel.send(&sms("+4917012345670", "lost")).await {
        Err(SendError::OutcomeUnknown { reason }) => {
            assert!(reason.contains("may have accepted"), "{reason}")
        }
        other => panic!("expected OutcomeUnknown, got {other:?}"),
    }
    // The unanswered enquire_link drops the hung session; a new one is bound.
    let deadline = Instant::now() + Duration::from_secs(5);
    while smsc.events_of("bind_transceiver").len() < 2 {
        assert!(Instant::now() < deadline, "no reconnect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(channel.wait_bound(Duration::from_secs(5)).await);
    channel.send(&sms("+4917012345670", "fine")).await.unwrap();
    assert_eq!(smsc.events_of("submit_sm_ignored").len(), 1);
    assert_eq!(smsc.events_of("submit_sm").len(), 1);
    smsc.stop().await;
}

#[tokio::test]
async fn smpps_works_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    let cert = dir.path().join("cert.pem");
    let status = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=smsc.test",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        // A leaf, not a CA: webpki refuses a CA certificate as the server's own.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl must be installed");
    assert!(status.success());
    let smsc = Smsc::start(&[
        ("SMSC_TLS_KEY", key.to_str().unwrap()),
        ("SMSC_TLS_CERT", cert.to_str().unwrap()),
    ])
    .await;
    let mut config = config(&format!("smpps://127.0.0.1:{}", smsc.port()));
    config.tls_root_certs_pem = Some(std::fs::read_to_string(&cert).unwrap());
    let (channel, mut receipts) = bound_channel(config).await;
    let id = message_id(&channel.send(&sms("+4917012345670", "tls")).await.unwrap());
    assert_eq!(next_receipt(&mut receipts).await.message_id, id);
    smsc.stop().await;
}

/// Sustained submits per second on one bind with window 10, and the latency from the `send`
/// call to its `submit_sm_resp`. Run with
/// `cargo test --release -p verifyd-channels --test smpp -- --ignored --nocapture throughput`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn throughput() {
    let total: usize = std::env::var("SMPP_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let concurrency: usize = std::env::var("SMPP_BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    // No log and no receipts: measure the submit path only.
    let mut smsc = Smsc::start(&[("SMSC_RECEIPTS", "0"), ("SMSC_LOG", "")]).await;
    let node_pid = smsc.pid();
    let mut config = config(&smsc.url());
    config.window = 10;
    let (channel, _receipts) = bound_channel(config).await;
    let channel = Arc::new(channel);

    // Warm-up.
    for _ in 0..200 {
        channel
            .send(&sms("+4917012345670", "warm up"))
            .await
            .unwrap();
    }

    let cpu = |pid: u32| -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        ticks / 100.0
    };
    let node_cpu0 = cpu(node_pid);
    let own_cpu0 = cpu(std::process::id());
    let started = Instant::now();
    let per_task = total / concurrency;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let channel = channel.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_task);
                for _ in 0..per_task {
                    let t = Instant::now();
                    channel
                        .send(&sms("+4917012345670", "Your code is 123456"))
                        .await
                        .unwrap();
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(total);
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    let node_cpu = cpu(node_pid) - node_cpu0;
    let own_cpu = cpu(std::process::id()) - own_cpu0;
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p) as usize];
    let sent = latencies.len();
    println!(
        "throughput: {sent} submits in {elapsed:.2?} = {:.0} submits/s (window 10, {concurrency} concurrent senders)",
        sent as f64 / elapsed.as_secs_f64()
    );
    println!(
        "latency send->submit_sm_resp: p50 {:?} p90 {:?} p99 {:?} max {:?}",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        latencies[sent - 1]
    );
    println!(
        "cpu during the run: node SMSC {:.2} s ({:.0}% of one core), test process {:.2} s ({:.0}%)",
        node_cpu,
        100.0 * node_cpu / elapsed.as_secs_f64(),
        own_cpu,
        100.0 * own_cpu / elapsed.as_secs_f64()
    );
    let stats = smsc.stats().await;
    println!("smsc stats: {stats}");
    smsc.stop().await;
}
