//! The `docent` binary as users run it: `ask --json`, `search`, `status`, `config check`.

use std::process::Command;

use crate::harness::*;

fn docent(args: &[&str], addr: &str, token: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_docent"))
        .args(args)
        .env("DOCENT_ADDR", addr)
        .env("DOCENT_TOKEN", token)
        .output()
        .expect("run docent")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_client_commands() {
    let env = Env::example();
    let d = env.start().await;
    let url = d.url();
    let out = tokio::task::spawn_blocking(move || {
        (
            docent(
                &["ask", "--json", "How do I reset my VPN password?"],
                &url,
                ALICE,
            ),
            docent(
                &["search", "--json", "--limit", "3", "parking"],
                &url,
                ALICE,
            ),
            docent(&["status"], &url, ADMIN),
            docent(&["status"], &url, ALICE),
            docent(&["ask", "anything"], &url, ""),
        )
    })
    .await
    .unwrap();

    let (ask, search, status, denied, unauth) = out;
    assert!(
        ask.status.success(),
        "{}",
        String::from_utf8_lossy(&ask.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&ask.stdout).unwrap();
    assert_eq!(v["status"], "answered");
    assert!(v["answer"].as_str().unwrap().contains("reset"));
    let c = &v["citations"][0];
    assert!(c["uri"].as_str().unwrap().ends_with("/it/vpn.md"));
    assert_eq!(c["title"], "VPN access");
    assert!(!c["snippet"].as_str().unwrap().is_empty());

    assert!(search.status.success());
    let v: serde_json::Value = serde_json::from_slice(&search.stdout).unwrap();
    let hits = v["hits"].as_array().unwrap();
    assert!(!hits.is_empty() && hits.len() <= 3);
    assert!(hits[0]["uri"].as_str().unwrap().contains("office-ghent"));

    assert!(status.status.success());
    let s = String::from_utf8_lossy(&status.stdout);
    assert!(
        s.contains("29 documents") && s.contains("connector share (fs): watching"),
        "{s}"
    );
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("admin"));
    assert!(!unauth.status.success());
    assert!(String::from_utf8_lossy(&unauth.stderr).contains("DOCENT_TOKEN"));
    d.stop().await;
}

#[test]
fn config_check_exit_codes() {
    let ok = Command::new(env!("CARGO_BIN_EXE_docent"))
        .args(["config", "check"])
        .arg(repo().join("config/docent.example.toml"))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "version = 1\nfoo = 1\n[chunking]\nmax_tokens = 1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_docent"))
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("foo: unknown key") && err.contains("chunking.max_tokens"),
        "{err}"
    );
}
