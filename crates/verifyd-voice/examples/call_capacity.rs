//! How many concurrent calls one `SipChannel` holds: N simultaneous flash calls and N
//! simultaneous callouts against SIPp on loopback, at increasing N, then the per-trunk
//! limits (`max_concurrent_calls`, `calls_per_second`) at a high N.
//!
//! ```sh
//! cargo run --release -p verifyd-voice --example call_capacity            # 50,100,200,500
//! cargo run --release -p verifyd-voice --example call_capacity -- 50,100  # other levels
//! ```
//!
//! Needs `sipp` (Debian `sip-tester`); the callouts use the Allison digit prompts when
//! `asterisk-core-sounds-en-wav` is installed, espeak-ng otherwise. A measurement, not a
//! test: it prints markdown tables and asserts nothing about time.
//!
//! - **Flash calls**: SIPp (`e2e/sip/uas_hold_flash.xml`) answers 100 and holds every call
//!   for [`HOLD_MS`] before ringing, so all N are in progress at once; then 180, our
//!   CANCEL, 200, 487, ACK. Latencies are read from SIPp's message trace: `send()` to the
//!   INVITE arriving, and SIPp's 180 to our CANCEL arriving.
//! - **Callouts**: SIPp (`uas_hold_answer.xml`) rings, answers after [`HOLD_MS`] and points
//!   the media at this process's RTP receiver (one thread, its own socket), which
//!   timestamps every packet; the jitter is the spread of the gaps between a stream's
//!   packets around 20 ms.
//! - CPU is the process's user+system time over the phase (minus the RTP receiver
//!   thread's own), RSS the peak `VmRSS` during the phase minus the one before it.

#![allow(clippy::unwrap_used, reason = "a benchmark fails loudly")]
#![allow(clippy::expect_used, reason = "a benchmark fails loudly")]
#![allow(clippy::print_stdout, reason = "a benchmark prints its tables")]

use std::collections::HashMap;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use verifyd_channels::{Channel, OutboundMessage, Payload};
use verifyd_core::{Method, PhoneNumber};
use verifyd_testkit::free_udp_port;
use verifyd_voice::{SipChannel, SipTrunkConfig};

/// How long SIPp holds each call before ringing (flash) or answering (callout).
const HOLD_MS: u64 = 3000;
const PROMPTS: &str = "/usr/share/asterisk/sounds/en_US_f_Allison";

fn e2e() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../e2e/sip")
}

fn epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// User+system CPU of this process, from `/proc/self/stat` (clock ticks of 10 ms).
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// CPU time of the calling thread (ns resolution).
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    Duration::from_nanos(stat.split_whitespace().next().unwrap().parse().unwrap())
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap()
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let idx = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[idx]
}

fn message(n: usize, payload: Payload, method: Method) -> OutboundMessage {
    OutboundMessage {
        verification_id: format!("bench-{n}"),
        app: "bench".into(),
        method,
        to: PhoneNumber::parse(&format!("+4670{:07}", n)).unwrap(),
        payload,
        sender: None,
        created_at: OffsetDateTime::UNIX_EPOCH,
    }
}

/// One message of SIPp's `-trace_msg` file: when, what (`INVITE`, `180`, …), Call-ID.
struct Traced {
    at: f64,
    kind: String,
    call_id: String,
}

/// Parses SIPp's message trace (run with `TZ=UTC`).
fn parse_trace(trace: &str) -> Vec<Traced> {
    let mut out = Vec::new();
    for block in trace
        .split("----------------------------------------------- ")
        .skip(1)
    {
        let mut lines = block.lines();
        let stamp = lines.next().unwrap_or_default().trim();
        let Ok(t) = time::PrimitiveDateTime::parse(
            stamp,
            time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond]"
            ),
        ) else {
            continue;
        };
        let t = t.assume_utc();
        let at = t.unix_timestamp() as f64 + f64::from(t.nanosecond()) / 1e9;
        let text: Vec<&str> = lines
            .skip_while(|l| !l.trim().is_empty())
            .skip_while(|l| l.trim().is_empty())
            .collect();
        let first = text.first().copied().unwrap_or_default();
        let kind = match first.strip_prefix("SIP/2.0 ") {
            Some(status) => status.split_whitespace().next().unwrap_or_default(),
            None => first.split_whitespace().next().unwrap_or_default(),
        };
        let call_id = text
            .iter()
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim().eq_ignore_ascii_case("Call-ID").then(|| v.trim())
            })
            .unwrap_or_default();
        if !kind.is_empty() {
            out.push(Traced {
                at,
                kind: kind.to_string(),
                call_id: call_id.to_string(),
            });
        }
    }
    out
}

/// SIPp as the far end for `calls` calls of `scenario`, each held `HOLD_MS` before it
/// rings.
struct Sipp(verifyd_testkit::Sipp);

impl Sipp {
    /// `extra` arguments go last (`-d 1000` overrides the hold).
    async fn start(scenario: &str, calls: usize, extra: &[String]) -> Self {
        let (calls, hold) = (calls.to_string(), HOLD_MS.to_string());
        let mut args = vec!["-m", &calls, "-l", "100000", "-d", &hold];
        args.extend(["-timeout", "30s", "-max_recv_loops", "10000"]);
        args.extend(extra.iter().map(String::as_str));
        let dir = tempfile::tempdir().unwrap();
        Sipp(verifyd_testkit::Sipp::start(&e2e().join(scenario), free_udp_port(), &args, dir).await)
    }

    fn port(&self) -> u16 {
        self.0.port
    }

    /// Whether every call succeeded (false too when SIPp did not finish in 120 s), and
    /// the messages it traced.
    async fn finish(self) -> (bool, Vec<Traced>) {
        let traces = self
            .0
            .finish_within(Duration::from_secs(120))
            .await
            .unwrap_or_else(|traces| traces);
        (traces.success, parse_trace(&traces.messages))
    }
}

fn trunk(port: u16, max_calls: usize, cps: Option<u32>) -> SipTrunkConfig {
    let mut config =
        SipTrunkConfig::new("sip:bench", format!("127.0.0.1:{port}"), "verify.example");
    config.bind = "127.0.0.1:0".parse().unwrap();
    config.max_concurrent_calls = max_calls;
    config.calls_per_second = cps;
    config.prompts_dir = Path::new(PROMPTS)
        .join("digits/0.wav")
        .is_file()
        .then(|| PROMPTS.into());
    config.leading_silence = Duration::from_millis(500);
    config.repeats = 1;
    config.dial_timeout = Duration::from_secs(30);
    config
}

/// Peak RSS while `run` runs, sampled every 50 ms.
async fn with_peak_rss<F: std::future::Future>(run: F) -> (F::Output, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut peak = rss_kib();
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(rss_kib());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            peak
        })
    };
    let out = run.await;
    stop.store(true, Ordering::Relaxed);
    (out, sampler.await.unwrap())
}

struct Phase {
    ok: usize,
    errors: HashMap<String, usize>,
    sipp_ok: bool,
    wall: Duration,
    cpu: Duration,
    rss_delta_kib: u64,
    trace: Vec<Traced>,
    /// Call-ID → when `send()` was called (Unix seconds).
    sent_at: HashMap<String, f64>,
}

/// Runs `n` sends at once through `channel` and measures them.
async fn run_calls(
    channel: Arc<SipChannel>,
    sipp: Sipp,
    messages: Vec<OutboundMessage>,
    extra_cpu: impl Fn() -> Duration,
) -> Phase {
    let rss_before = rss_kib();
    let cpu_before = process_cpu();
    let extra_before = extra_cpu();
    let started = Instant::now();
    let (results, peak) = with_peak_rss(async {
        let mut set = tokio::task::JoinSet::new();
        for m in messages {
            let channel = channel.clone();
            set.spawn(async move {
                let at = epoch();
                (at, channel.send(&m).await)
            });
        }
        set.join_all().await
    })
    .await;
    let wall = started.elapsed();
    let cpu = (process_cpu() - cpu_before).saturating_sub(extra_cpu() - extra_before);
    let (sipp_ok, trace) = sipp.finish().await;
    let mut phase = Phase {
        ok: 0,
        errors: HashMap::new(),
        sipp_ok,
        wall,
        cpu,
        rss_delta_kib: peak.saturating_sub(rss_before),
        trace,
        sent_at: HashMap::new(),
    };
    for (at, result) in results {
        match result {
            Ok(d) => {
                phase.ok += 1;
                if let Some(id) = d.message_id {
                    phase.sent_at.insert(id, at);
                }
            }
            Err(e) => *phase.errors.entry(format!("{e:?}")).or_default() += 1,
        }
    }
    phase
}

/// Per Call-ID, the first time SIPp saw each kind.
fn by_call(trace: &[Traced]) -> HashMap<&str, HashMap<&str, f64>> {
    let mut out: HashMap<&str, HashMap<&str, f64>> = HashMap::new();
    for m in trace {
        out.entry(m.call_id.as_str())
            .or_default()
            .entry(m.kind.as_str())
            .or_insert(m.at);
    }
    out
}

/// Most calls SIPp had between an INVITE and the call's last message at once.
fn peak_concurrency(trace: &[Traced]) -> usize {
    let mut spans: HashMap<&str, (f64, f64)> = HashMap::new();
    for m in trace {
        let e = spans.entry(m.call_id.as_str()).or_insert((m.at, m.at));
        e.0 = e.0.min(m.at);
        e.1 = e.1.max(m.at);
    }
    let mut events: Vec<(f64, i32)> = spans
        .values()
        .flat_map(|&(a, b)| [(a, 1), (b, -1)])
        .collect();
    events.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
    let (mut now, mut peak) = (0i32, 0i32);
    for (_, d) in events {
        now += d;
        peak = peak.max(now);
    }
    peak as usize
}

fn errors_text(errors: &HashMap<String, usize>) -> String {
    if errors.is_empty() {
        return "none".into();
    }
    errors
        .iter()
        .map(|(e, n)| format!("{n}× {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

async fn flash_level(n: usize) -> String {
    let sipp = Sipp::start("uas_hold_flash.xml", n, &[]).await;
    let channel = Arc::new(
        SipChannel::start(trunk(sipp.port(), n, None))
            .await
            .unwrap(),
    );
    let messages = (0..n)
        .map(|i| {
            message(
                i,
                Payload::FlashCall {
                    cli: "+4930123456789".into(),
                    dial_timeout: 20,
                },
                Method::Flashcall,
            )
        })
        .collect();
    let phase = run_calls(channel, sipp, messages, || Duration::ZERO).await;
    let calls = by_call(&phase.trace);
    let mut setup = Vec::new();
    let mut cancel = Vec::new();
    for (id, kinds) in &calls {
        if let (Some(sent), Some(invite)) = (phase.sent_at.get(*id), kinds.get("INVITE")) {
            setup.push((invite - sent) * 1000.0);
        }
        if let (Some(ringing), Some(c)) = (kinds.get("180"), kinds.get("CANCEL")) {
            cancel.push((c - ringing) * 1000.0);
        }
    }
    let peak = peak_concurrency(&phase.trace);
    if !phase.errors.is_empty() || !phase.sipp_ok {
        eprintln!(
            "flash N={n}: errors {}, SIPp ok {}",
            errors_text(&phase.errors),
            phase.sipp_ok
        );
    }
    let cpu_ms = phase.cpu.as_secs_f64() * 1000.0;
    format!(
        "| flash | {n} | {}/{n} | {peak} | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} s | {:.0} ms ({:.2} ms/call) | {:.0} KiB ({:.1} KiB/call) |",
        phase.ok,
        percentile(&mut setup.clone(), 0.5),
        percentile(&mut setup, 0.99),
        percentile(&mut cancel.clone(), 0.5),
        percentile(&mut cancel, 0.99),
        phase.wall.as_secs_f64(),
        cpu_ms,
        cpu_ms / n as f64,
        phase.rss_delta_kib,
        phase.rss_delta_kib as f64 / n as f64,
    )
}

/// Arrival times per SSRC, from a receiver thread.
struct RtpSink {
    port: u16,
    stop: Arc<AtomicBool>,
    cpu_ns: Arc<std::sync::atomic::AtomicU64>,
    handle: std::thread::JoinHandle<HashMap<u32, Vec<Instant>>>,
}

impl RtpSink {
    fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let port = socket.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let cpu_ns = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let handle = {
            let stop = stop.clone();
            let cpu_ns = cpu_ns.clone();
            std::thread::spawn(move || {
                let start_cpu = thread_cpu();
                let mut streams: HashMap<u32, Vec<Instant>> = HashMap::new();
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(len) = socket.recv(&mut buf) {
                        let now = Instant::now();
                        if len >= 12 {
                            let ssrc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
                            streams.entry(ssrc).or_default().push(now);
                        }
                    }
                    let used = thread_cpu() - start_cpu;
                    cpu_ns.store(used.as_nanos() as u64, Ordering::Relaxed);
                }
                streams
            })
        };
        RtpSink {
            port,
            stop,
            cpu_ns,
            handle,
        }
    }
}

async fn callout_level(n: usize) -> String {
    let sink = RtpSink::start();
    let sipp = Sipp::start(
        "uas_hold_answer.xml",
        n,
        &["-key".into(), "rtp_sink".into(), sink.port.to_string()],
    )
    .await;
    let channel = Arc::new(
        SipChannel::start(trunk(sipp.port(), n, None))
            .await
            .unwrap(),
    );
    let messages = (0..n)
        .map(|i| {
            message(
                i,
                Payload::Callout {
                    code: "42".into(),
                    locale: "en-US".into(),
                    script: String::new(),
                },
                Method::Callout,
            )
        })
        .collect();
    let cpu_ns = sink.cpu_ns.clone();
    let phase = run_calls(channel, sipp, messages, move || {
        Duration::from_nanos(cpu_ns.load(Ordering::Relaxed))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    sink.stop.store(true, Ordering::Relaxed);
    let streams = sink.handle.join().unwrap();

    let mut deviation = Vec::new();
    let mut max_gap: f64 = 0.0;
    let mut packets = Vec::new();
    for arrivals in streams.values() {
        packets.push(arrivals.len() as f64);
        for pair in arrivals.windows(2) {
            let gap = (pair[1] - pair[0]).as_secs_f64() * 1000.0;
            max_gap = max_gap.max(gap);
            deviation.push((gap - 20.0).abs());
        }
    }
    let calls = by_call(&phase.trace);
    let mut setup = Vec::new();
    for (id, kinds) in &calls {
        if let (Some(sent), Some(invite)) = (phase.sent_at.get(*id), kinds.get("INVITE")) {
            setup.push((invite - sent) * 1000.0);
        }
    }
    let peak = peak_concurrency(&phase.trace);
    if !phase.errors.is_empty() || !phase.sipp_ok {
        eprintln!(
            "callout N={n}: errors {}, SIPp ok {}",
            errors_text(&phase.errors),
            phase.sipp_ok
        );
    }
    let cpu_ms = phase.cpu.as_secs_f64() * 1000.0;
    let stream_secs = percentile(&mut packets.clone(), 0.5) * 0.02;
    format!(
        "| callout | {n} | {}/{n} | {peak} | {:.1} / {:.1} | {} streams, {:.1} s each (p50) | {:.2} / {:.2} / {:.1} | {:.1} s | {:.0} ms ({:.1} ms/call, {:.2}% of a core per call) | {:.0} KiB ({:.1} KiB/call) |",
        phase.ok,
        percentile(&mut setup.clone(), 0.5),
        percentile(&mut setup, 0.99),
        streams.len(),
        stream_secs,
        percentile(&mut deviation.clone(), 0.5),
        percentile(&mut deviation, 0.99),
        max_gap,
        phase.wall.as_secs_f64(),
        cpu_ms,
        cpu_ms / n as f64,
        // CPU per call over the time its stream ran.
        cpu_ms / n as f64 / (stream_secs * 1000.0) * 100.0,
        phase.rss_delta_kib,
        phase.rss_delta_kib as f64 / n as f64,
    )
}

/// `n` flash calls through `max_calls` slots at `cps`: the limits hold at high N.
async fn limits(n: usize, max_calls: usize, cps: u32) -> String {
    let sipp = Sipp::start("uas_hold_flash.xml", n, &["-d".into(), "1000".into()]).await;
    let channel = Arc::new(
        SipChannel::start(trunk(sipp.port(), max_calls, Some(cps)))
            .await
            .unwrap(),
    );
    let messages = (0..n)
        .map(|i| {
            message(
                i,
                Payload::FlashCall {
                    cli: "+4930123456789".into(),
                    dial_timeout: 20,
                },
                Method::Flashcall,
            )
        })
        .collect();
    let phase = run_calls(channel, sipp, messages, || Duration::ZERO).await;
    let mut invites: Vec<f64> = phase
        .trace
        .iter()
        .filter(|m| m.kind == "INVITE")
        .map(|m| m.at)
        .collect();
    invites.sort_by(f64::total_cmp);
    let mut gaps: Vec<f64> = invites.windows(2).map(|w| (w[1] - w[0]) * 1000.0).collect();
    let rate = (invites.len().saturating_sub(1)) as f64
        / (invites.last().unwrap_or(&0.0) - invites.first().unwrap_or(&0.0)).max(1e-9);
    let peak = peak_concurrency(&phase.trace);
    format!(
        "| {n} | {max_calls} | {cps} | {}/{n} | {peak} | {:.1} / {:.1} ms | {rate:.1}/s | {:.1} s | {} |",
        phase.ok,
        percentile(&mut gaps.clone(), 0.0),
        percentile(&mut gaps, 0.5),
        phase.wall.as_secs_f64(),
        errors_text(&phase.errors),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let levels: Vec<usize> = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "50,100,200,500".into())
        .split(',')
        .map(|s| s.trim().parse().expect("levels: comma-separated numbers"))
        .collect();
    let baseline = rss_kib();
    eprintln!("baseline RSS {baseline} KiB; hold {HOLD_MS} ms");

    println!("### Flash calls held at once (SIPp holds each {HOLD_MS} ms before 180)\n");
    println!(
        "| kind | N | set up | peak at SIPp | send→INVITE p50 / p99 ms | 180→CANCEL p50 / p99 ms | wall | CPU | peak RSS growth |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for &n in &levels {
        let row = flash_level(n).await;
        println!("{row}");
    }

    println!("\n### Callouts streaming at once (answered after {HOLD_MS} ms)\n");
    println!(
        "| kind | N | completed | peak at SIPp | send→INVITE p50 / p99 ms | RTP | \\|gap−20 ms\\| p50 / p99 / max gap ms | wall | CPU | peak RSS growth |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for &n in &levels {
        let row = callout_level(n).await;
        println!("{row}");
    }

    let n = levels.iter().copied().max().unwrap_or(200);
    println!("\n### Per-trunk limits at N = {n} (SIPp holds 1 s before 180)\n");
    println!(
        "| N | max_concurrent_calls | calls_per_second | set up | peak at SIPp | INVITE gap min / p50 | INVITE rate | wall | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    println!("{}", limits(n, 50, 100).await);
}
