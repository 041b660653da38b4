//! The `docent` binary as users run it: `ask --json`, `search`, `status`, `config check`.

use std::process::Command;

use crate::harness::*;

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

    // A token read from a file (session 40's note: only the command line or the environment
    // could carry one); its trailing newline is not part of it; an empty file is an error.
    let dir = tempfile::tempdir().unwrap();
    let (good, empty) = (
        dir.path().join("admin.token"),
        dir.path().join("empty.token"),
    );
    std::fs::write(&good, format!("{ADMIN}\n")).unwrap();
    std::fs::write(&empty, "\n").unwrap();
    let url = d.url();
    let with_file = move |file: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_docent"))
            .args(["status", "--token-file"])
            .arg(file)
            .env("DOCENT_ADDR", &url)
            .env_remove("DOCENT_TOKEN")
            .output()
            .unwrap()
    };
    let (ok, none) = tokio::task::spawn_blocking(move || (with_file(&good), with_file(&empty)))
        .await
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("29 documents"));
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("holds no token"));
    d.stop().await;
}

/// A session 45 walkthrough: `docent ask … | head -1` ended with "a thread panicked (a bug:
/// please report it)" when `head` closed the pipe. A command that only prints ends by SIGPIPE,
/// quietly, with the status a tool killed by SIGPIPE has (141).
#[test]
fn a_printing_command_ends_quietly_when_its_reader_goes() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_docent"))
        .args(["hash-token", "a-token"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(141), "{:?}", out.status);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    assert!(
        !String::from_utf8_lossy(&ok.stderr).contains("warning"),
        "the example names only groups it defines: {}",
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
    // A group named nowhere else: a warning, and the file is still valid.
    let example = std::fs::read_to_string(repo().join("config/docent.example.toml")).unwrap();
    let typo = example.replacen(
        "exempt = [\"group:people-leads\"]",
        "exempt = [\"group:people-lead\"]",
        1,
    );
    assert_ne!(typo, example);
    let typo_file = repo()
        .join("config")
        .join(format!("typo-{}.toml", std::process::id()));
    std::fs::write(&typo_file, typo).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_docent"))
        .args(["config", "check"])
        .arg(&typo_file)
        .output()
        .unwrap();
    std::fs::remove_file(&typo_file).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: guardrails.blocked_phrases[0].exempt[0]: group \"people-lead\""),
        "{err}"
    );
}

/// `docent serve` as a process: SIGHUP reloads identities; `docent admin` and `ask --as` work
/// against it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reloads_identities_on_sighup() {
    let env = Env::example();
    let hr_key = format!(
        "share:{}",
        env.corpus().join("hr/compensation-bands-2027.md").display()
    );
    let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let run = |a: String| {
        move |args: Vec<String>, token: &'static str| {
            let a = a.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    docent(&args, &a, token)
                })
                .await
                .unwrap()
            }
        }
    };
    // A port found free can be taken before the daemon binds it (the suite starts many
    // servers): the daemon then exits, and starts again on another port.
    let mut started = None;
    for _ in 0..3 {
        let port = free_port();
        let text = env
            .config_text()
            .replace(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"127.0.0.1:{port}\""),
            )
            .replace("metrics_listen = \"127.0.0.1:9464\"", "")
            .replace(
                "\"../models/",
                &format!("\"{}/", repo().join("models").display()),
            );
        let cfg = env.dir.path().join("docent.toml");
        std::fs::write(&cfg, &text).unwrap();
        let mut server = Command::new(env!("CARGO_BIN_EXE_docent"))
            .args(["serve", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let addr = format!("http://127.0.0.1:{port}");
        let mut ready = false;
        for _ in 0..600 {
            if server.try_wait().unwrap().is_some() {
                break;
            }
            // The document table is complete once the crawl is committed.
            let out = run(addr.clone())(args(&["admin", "can-read", "hana", &hr_key]), ADMIN).await;
            if out.status.success() {
                ready = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        if ready {
            started = Some((server, addr, text));
            break;
        }
        let _ = server.kill();
        let _ = server.wait();
    }
    let (mut server, addr, text) = started.expect("daemon did not come up");
    let cfg = env.dir.path().join("docent.toml");
    let run = run(addr.clone());

    let who = run(
        args(&["admin", "whois", "--json", "FERNHILL\\alice"]),
        ADMIN,
    )
    .await;
    let v: serde_json::Value = serde_json::from_slice(&who.stdout).unwrap();
    assert_eq!(v["id"], "alice");
    assert_eq!(v["groups"], serde_json::json!(["engineering", "staff"]));
    let no = run(args(&["admin", "can-read", "alice", &hr_key]), ADMIN).await;
    assert_eq!(no.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&no.stdout).contains("no allow entry matches"));

    let obo = run(
        args(&[
            "ask",
            "--json",
            "--as",
            "hana",
            "What is the salary band for a senior software engineer?",
        ]),
        "slack-bridge-dev-key",
    )
    .await;
    assert!(
        obo.status.success(),
        "{}",
        String::from_utf8_lossy(&obo.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&obo.stdout).unwrap();
    assert_eq!(v["status"], "answered");
    assert!(v["guardrails"].is_array());
    let denied = run(args(&["ask", "--as", "hana", "salary band"]), ALICE).await;
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("act"),
        "{denied:?}"
    );

    // Alice joins hr in the config; SIGHUP applies it without a restart.
    std::fs::write(
        &cfg,
        text.replace(
            "groups = [\"engineering\"]",
            "groups = [\"engineering\", \"hr\"]",
        ),
    )
    .unwrap();
    let pid = server.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut reloaded = false;
    for _ in 0..100 {
        if run(args(&["admin", "can-read", "alice", &hr_key]), ADMIN)
            .await
            .status
            .success()
        {
            reloaded = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(reloaded, "SIGHUP did not reload identities");
    assert!(
        server.try_wait().unwrap().is_none(),
        "SIGHUP must not stop the daemon"
    );
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(server.wait().unwrap().success());
}

/// Session 35's note: the CLI had no overall deadline, so a daemon (or a proxy in front of it)
/// that accepted a call and never answered held the command forever (HTTP/2 keepalive pings
/// are answered by the connection, not the call). `--timeout` ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_is_never_answered_ends_at_the_timeout() {
    // Speaks HTTP/2 far enough to take calls (its settings and ping answers), never answers one.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(tcp);
                let never = hyper::service::service_fn(|_req| async {
                    std::future::pending::<
                        Result<
                            hyper::Response<http_body_util::Empty<bytes::Bytes>>,
                            std::convert::Infallible,
                        >,
                    >()
                    .await
                });
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(io, never)
                        .await;
            });
        }
    });
    let started = std::time::Instant::now();
    let out = docent_async(&["status", "--timeout", "2"], &addr, ADMIN).await;
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        stderr.contains("timeout") || stderr.contains("timed out") || stderr.contains("deadline"),
        "{stderr}"
    );
    // Well before the 20 s + 10 s keepalive would have ended it.
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}
