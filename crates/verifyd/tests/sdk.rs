//! The official Sinch SDKs against the real `verifyd` binary: npm `@sinch/verification@1.4.0`
//! and PyPI `sinch==1.1.4`, through every method they support. The scripts live in `e2e/`;
//! `.ci/run` installs their dependencies (`npm ci`, a venv with pip).

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a failed unwrap is a failed test"
)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{KEY, SECRET, Server, free_port, write_config};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run_script(program: &str, script: &str, cwd: PathBuf, url: &str) {
    let out = Command::new(program)
        .arg(script)
        .current_dir(&cwd)
        .env("VERIFYD_URL", url)
        .env("VERIFYD_KEY", KEY)
        .env("VERIFYD_SECRET", SECRET)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program}: {e} (see README: install the e2e peers)")
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}

#[test]
fn node_sdk_1_4_0_runs_every_method_against_verifyd() {
    let node_dir = repo().join("e2e/node");
    assert!(
        node_dir.join("node_modules/@sinch/verification").exists(),
        "npm peers missing: run `npm ci --prefix e2e/node` (done by .ci/run)"
    );
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port);
    let server = Server::spawn(
        dir.path(),
        &["--config", config.to_str().unwrap()],
        &[],
        port,
    );
    run_script("node", "sdk-e2e.mjs", node_dir, &server.url);
}

#[test]
fn python_sdk_1_1_4_runs_every_method_against_verifyd() {
    let py_dir = repo().join("e2e/python");
    let python = py_dir.join(".venv/bin/python");
    assert!(
        python.exists(),
        "Python peer missing: run `python3 -m venv e2e/python/.venv && e2e/python/.venv/bin/pip install -r e2e/python/requirements.txt` (done by .ci/run)"
    );
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port);
    let server = Server::spawn(
        dir.path(),
        &["--config", config.to_str().unwrap()],
        &[],
        port,
    );
    run_script(python.to_str().unwrap(), "sdk_e2e.py", py_dir, &server.url);
}
