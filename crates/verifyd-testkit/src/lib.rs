//! Test peers shared by verifyd's test suites (a dev-dependency only): where the repository
//! and the shared specs are, free loopback ports, Prism (the contract mock and validating
//! proxy, from `e2e/prism`), SIPp (the SIP far end, Debian's `sip-tester`) and the SMSC
//! (node-smpp's server, from `e2e/smsc`); and verifyd's own dev inbox, read over HTTP.

#![allow(
    clippy::unwrap_used,
    reason = "test harness: a failed unwrap is a failed test"
)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// A spec from `shared/specs/` beside the repository, or the file `$env` names.
///
/// # Panics
/// When the file is not there, saying where it was looked for.
pub fn shared_spec(env: &str, file: &str) -> PathBuf {
    let path = std::env::var_os(env).map_or_else(
        || repo_root().join("../shared/specs").join(file),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "the spec is not at {}; set {env}",
        path.display()
    );
    path
}

/// A loopback TCP port that was free a moment ago (bound, then released), for peers whose
/// address a config needs up front.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A loopback port that was free a moment ago for both TCP and UDP (for a peer that
/// listens on either, as SIPp does).
pub fn free_port() -> u16 {
    loop {
        let port = free_tcp_port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A loopback UDP port that was free a moment ago.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running Prism, killed on drop.
pub struct Prism {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    _child: Child,
}

impl Prism {
    /// `prism mock SPEC` on a free port: answers every operation of the spec with its
    /// examples, and refuses requests that break it.
    pub async fn mock(spec: &Path) -> Self {
        let port = free_tcp_port();
        Self::launch(&["mock".as_ref(), spec.as_os_str()], port).await
    }

    /// `prism proxy SPEC UPSTREAM --errors` on `port`: checks every request against the
    /// spec before forwarding it to `upstream`, and every answer after.
    pub async fn proxy(spec: &Path, upstream: &str, port: u16) -> Self {
        Self::launch(
            &[
                "proxy".as_ref(),
                spec.as_os_str(),
                upstream.as_ref(),
                "--errors".as_ref(),
            ],
            port,
        )
        .await
    }

    async fn launch(args: &[&std::ffi::OsStr], port: u16) -> Self {
        let bin = repo_root().join("e2e/prism/node_modules/.bin/prism");
        assert!(
            bin.exists(),
            "Prism is not installed: run `npm ci --prefix e2e/prism` (scripts/test.sh does)"
        );
        let mut child = Command::new(bin)
            .args(args)
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        // Prism compiles the spec first, which takes seconds on a loaded machine.
        let ready = tokio::time::timeout(Duration::from_secs(90), async {
            while let Ok(Some(line)) = stdout.next_line().await {
                if line.contains("Prism is listening") {
                    return true;
                }
            }
            false
        })
        .await;
        if ready != Ok(true) {
            let mut err = String::new();
            while let Ok(Ok(Some(line))) =
                tokio::time::timeout(Duration::from_millis(200), stderr.next_line()).await
            {
                err.push_str(&line);
                err.push('\n');
            }
            panic!("Prism did not start ({args:?}): {err}");
        }
        // Keep draining its log so Prism never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
        tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
        Self {
            base_url: format!("http://127.0.0.1:{port}"),
            _child: child,
        }
    }
}

/// What the dev inbox of the verifyd at `base` (`http://127.0.0.1:PORT`) holds for
/// `number`, newest first: `{"messages": [...]}`.
pub async fn inbox(http: &reqwest::Client, base: &str, number: &str) -> Value {
    http.get(format!("{base}/inbox/v1/messages"))
        .query(&[("to", number)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The code of the newest dev-inbox message to `number`.
pub async fn inbox_code(http: &reqwest::Client, base: &str, number: &str) -> String {
    inbox(http, base, number).await["messages"][0]["code"]
        .as_str()
        .expect("a code in the inbox")
        .to_string()
}

/// Whether a peer holds loopback `port`: listening on it over TCP (`tcp`), else bound to it
/// over UDP.
pub fn port_held(port: u16, tcp: bool) -> bool {
    if tcp {
        tcp_listening(port)
    } else {
        std::net::UdpSocket::bind(("127.0.0.1", port)).is_err()
    }
}

/// Whether a socket on loopback `port` is in the LISTEN state, read from /proc/net/tcp.
/// Unlike a failed bind, this is false between a peer's bind() and its listen(), when a
/// connection would still be refused.
pub fn tcp_listening(port: u16) -> bool {
    // Each row: "sl local_address rem_address st ...", address as HEXIP:HEXPORT, st 0A = LISTEN.
    let wanted = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|row| {
                let mut fields = row.split_whitespace().skip(1);
                let local = fields.next().unwrap_or_default();
                let state = fields.nth(1).unwrap_or_default();
                local.ends_with(&wanted) && state == "0A"
            })
    })
}

/// SIPp as the far end of a SIP test: it runs a scenario (one call unless `-m` says
/// otherwise) and exits, leaving its log, message and error traces in its own directory.
/// Killed on drop.
pub struct Sipp {
    child: Child,
    dir: tempfile::TempDir,
    /// Where it listens on 127.0.0.1.
    pub port: u16,
}

/// What a finished SIPp run left.
pub struct SippTraces {
    /// Whether every call of the scenario succeeded (SIPp's exit status).
    pub success: bool,
    /// `-trace_logs`: the scenario's `<log>` lines.
    pub log: String,
    /// `-trace_msg`: every message sent and received, with times (local time; SIPp runs
    /// with `TZ=UTC`).
    pub messages: String,
    /// `-trace_err`: what went wrong.
    pub errors: String,
}

impl Sipp {
    /// Runs `sipp -sf SCENARIO` on 127.0.0.1:`port` from `dir` (which the scenario may live
    /// in), with `extra` arguments last (`-m 2` overrides the one call; `-t t1` is TCP).
    /// Returns once SIPp holds its port: bound over UDP, listening over TCP.
    ///
    /// # Panics
    /// When `sipp` cannot be run.
    pub async fn start(scenario: &Path, port: u16, extra: &[&str], dir: tempfile::TempDir) -> Self {
        let child = Command::new("sipp")
            .arg("-sf")
            .arg(scenario)
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["-mp", &free_udp_port().to_string()])
            .args(["-m", "1", "-timeout", "20s", "-nostdin"])
            .arg("-trace_logs")
            .arg("-log_file")
            .arg(dir.path().join("logs.log"))
            .arg("-trace_msg")
            .arg("-message_file")
            .arg(dir.path().join("messages.log"))
            .arg("-trace_err")
            .arg("-error_file")
            .arg(dir.path().join("errors.log"))
            .args(extra)
            .current_dir(dir.path())
            .env("TZ", "UTC")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run sipp ({e}): install Debian's sip-tester (scripts/test.sh does)")
            });
        let tcp = extra
            .windows(2)
            .any(|w| w[0] == "-t" && w[1].starts_with('t'));
        let mut sipp = Self { child, dir, port };
        // Generous: on a loaded 2-core machine a dozen peers start at once.
        for _ in 0..750 {
            if port_held(port, tcp) {
                return sipp;
            }
            if let Ok(Some(status)) = sipp.child.try_wait() {
                let errors =
                    std::fs::read_to_string(sipp.dir.path().join("errors.log")).unwrap_or_default();
                panic!("SIPp exited before it held port {port} ({status}): {errors}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("SIPp did not hold port {port} within 15 s");
    }

    /// Waits (at most 25 s) for SIPp to finish its calls and reads its traces.
    ///
    /// # Panics
    /// When it does not finish in time.
    pub async fn finish(self) -> SippTraces {
        self.finish_within(Duration::from_secs(25))
            .await
            .unwrap_or_else(|traces| panic!("SIPp did not finish: {}", traces.errors))
    }

    /// Waits at most `limit` for SIPp to finish its calls and reads its traces; `Err`
    /// (with the traces so far, `success` false) when it did not finish in time.
    pub async fn finish_within(mut self, limit: Duration) -> Result<SippTraces, SippTraces> {
        let status = tokio::time::timeout(limit, self.child.wait()).await;
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        let traces = |success| SippTraces {
            success,
            log: read("logs.log"),
            messages: read("messages.log"),
            errors: read("errors.log"),
        };
        match status {
            Ok(status) => Ok(traces(status.unwrap().success())),
            Err(_) => Err(traces(false)),
        }
    }
}

/// The SMSC test peer: node-smpp 0.5.1's server (`e2e/smsc/smsc.js`) on loopback. It logs
/// one JSON line per PDU and connection event to a log in its own temporary directory, and
/// takes control commands (one JSON object a line) on stdin. Killed on drop.
pub struct Smsc {
    child: Child,
    stdin: ChildStdin,
    /// Its stdout after the `listening` line: one answer per control command.
    lines: mpsc::UnboundedReceiver<String>,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Smsc {
    /// Starts the SMSC on a free port, with extra environment (`SMSC_*` settings; an
    /// `SMSC_LOG` here overrides the log, `""` turns it off).
    ///
    /// # Panics
    /// See [`Smsc::start_on`].
    pub async fn start(env: &[(&str, &str)]) -> Self {
        Self::start_on(0, env).await
    }

    /// Starts the SMSC on `port` (0: a free one) with extra environment, and returns once it
    /// listens.
    ///
    /// # Panics
    /// When node-smpp is not installed (`npm ci --prefix e2e/smsc`), node cannot be run, or
    /// the SMSC does not say it listens within 10 s.
    pub async fn start_on(port: u16, env: &[(&str, &str)]) -> Self {
        let dir = repo_root().join("e2e/smsc");
        assert!(
            dir.join("node_modules/smpp/package.json").exists(),
            "{}/node_modules is missing: run `npm ci --prefix e2e/smsc` first (scripts/test.sh does)",
            dir.display()
        );
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("smsc.jsonl");
        let mut command = Command::new("node");
        command
            .arg(dir.join("smsc.js"))
            .env("SMSC_PORT", port.to_string())
            .env("SMSC_LOG", &log)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run node ({e}): the SMSC needs it"));
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, mut lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = tokio::time::timeout(Duration::from_secs(10), lines.recv())
            .await
            .expect("the SMSC did not start within 10 s")
            .expect("the SMSC exited before listening");
        let port = first
            .strip_prefix("listening ")
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("the SMSC's first line is not `listening <port>`: {first}"));
        Self {
            child,
            stdin,
            lines,
            port,
            log,
            _dir: tmp,
        }
    }

    /// The port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `smpp://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("smpp://127.0.0.1:{}", self.port)
    }

    /// The node process's id.
    ///
    /// # Panics
    /// When the process has already been reaped.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the SMSC process is gone")
    }

    /// Sends one control command (`{"cmd": "set", ...}`, `drop`, `unbind`, `mute`, `stats`)
    /// and returns its answer line.
    ///
    /// # Panics
    /// When no answer comes within 5 s, or the answer is not `ok ...` (`stats ...` for
    /// `stats`).
    pub async fn control(&mut self, command: &Value) -> String {
        let line = format!("{command}\n");
        self.stdin
            .write_all(line.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("the SMSC does not take control commands ({e})"));
        self.stdin.flush().await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(5), self.lines.recv())
            .await
            .unwrap_or_else(|_| panic!("the SMSC did not answer {command} within 5 s"))
            .unwrap_or_else(|| panic!("the SMSC exited before answering {command}"));
        let expected = if command["cmd"] == "stats" {
            "stats "
        } else {
            "ok "
        };
        assert!(
            answer.starts_with(expected),
            "SMSC control {command} failed: {answer}"
        );
        answer
    }

    /// Its counters: `binds`, `submits`, `accepted`, `max_in_flight`, `sessions`, `bound`.
    pub async fn stats(&mut self) -> Value {
        let answer = self.control(&serde_json::json!({"cmd": "stats"})).await;
        let stats = answer.strip_prefix("stats ").unwrap();
        serde_json::from_str(stats).unwrap_or_else(|e| panic!("SMSC stats ({e}): {stats}"))
    }

    /// Every event logged so far (`{"t": ms, "ev": ..., ...}`), oldest first. A last line
    /// still being written is left out.
    ///
    /// # Panics
    /// When a logged line is not JSON.
    pub fn events(&self) -> Vec<Value> {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        // Only whole lines: the SMSC may be halfway through writing the last one.
        let whole = log.rfind('\n').map_or("", |end| &log[..end]);
        whole
            .lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| {
                    panic!("the SMSC logged a line that is not JSON ({e}): {line}")
                })
            })
            .collect()
    }

    /// The logged events of one kind (`"ev"`): `bind_transceiver`, `submit_sm`,
    /// `deliver_sm_resp`, ...
    pub fn events_of(&self, ev: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["ev"] == ev)
            .collect()
    }

    /// Kills the SMSC and waits for it to end.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
