//! Test peers shared by verifyd's test suites (a dev-dependency only): where the repository
//! and the shared specs are, free loopback ports, and Prism (the contract mock and
//! validating proxy, from `e2e/prism`).

#![allow(
    clippy::unwrap_used,
    reason = "test harness: a failed unwrap is a failed test"
)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

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
