//! The binary's logs when stderr is not a terminal (a pipe here, a file in the lab, a
//! container runtime's log collector): plain text, no ANSI colour escapes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn logs_to_a_pipe_carry_no_colour_escapes() {
    let dir = tempfile::tempdir().unwrap();
    // A kubeconfig pointing at a closed port: the controller starts, logs, and keeps
    // failing to reach the API server (more log lines, some of them warnings).
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'http://127.0.0.1:1'}}]\n\
         users: [{name: u, user: {}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n\
         current-context: x\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrolb"))
        .args([
            "controller",
            "--metrics-addr",
            "127.0.0.1:0",
            "--kubeconfig",
        ])
        .arg(&kubeconfig)
        .env_remove("NO_COLOR")
        .env("FERROLB_LOG_LEVEL", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let t0 = Instant::now();
    let mut lines = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        let done = line.contains("WARN");
        lines.push(line);
        if done || t0.elapsed() > Duration::from_secs(20) || lines.len() > 200 {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = lines.join("\n");
    assert!(text.contains(" INFO "), "no log lines:\n{text}");
    assert!(text.contains("WARN"), "no warning within 20 s:\n{text}");
    assert!(
        !text.contains('\u{1b}'),
        "ANSI escapes in piped logs:\n{text:?}"
    );
}
