//! The Slack bridge under load: how fast a signed event is acknowledged while answers are being
//! produced (Slack wants an answer within 3 s and retries otherwise; the goal is p99 < 100 ms),
//! and how many events per second the bridge turns into posted answers with the extractive
//! answerer. Not a test:
//!
//!     cargo bench --bench slack_bridge -- [--events N] [--senders C] [--rate EVENTS_PER_S]
//!
//! A real daemon (example corpus, real model) in this process, the bridge in this process, and a
//! minimal stand-in for Slack's Web API (`{"ok": true}` to every call) — no Slack server can run
//! here. Each event is a mention of one of six questions in a channel whose audience is
//! `group:staff`; `--senders` clients post them on a schedule of `--rate` events/s (0: as fast
//! as they are acknowledged).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use docent::config::Config;
use docent::embed::{Embedder, FastEmbedder};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dst = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dst)?;
        } else {
            std::fs::copy(e.path(), dst)?;
        }
    }
    Ok(())
}

const QUESTIONS: [&str; 6] = [
    "How do I connect to the VPN?",
    "How many days can I work from home?",
    "Who approves expenses?",
    "When are the office holidays in 2027?",
    "How do I request a new laptop?",
    "How does code review work?",
];

/// Answers every Web API call with `{"ok": true}` and counts `chat.postMessage`.
async fn slack_stub(posts: Arc<AtomicU64>) -> String {
    use http_body_util::{BodyExt, Full};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let posts = posts.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let posts = posts.clone();
                        async move {
                            if req.uri().path().ends_with("chat.postMessage") {
                                posts.fetch_add(1, Ordering::SeqCst);
                            }
                            let _ = req.into_body().collect().await;
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(bytes::Bytes::from_static(
                                        br#"{"ok":true,"ts":"1.1"}"#,
                                    )))
                                    .unwrap(),
                            )
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    url
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() -> anyhow::Result<()> {
    let events: usize = arg("--events").map_or(Ok(300), |s| s.parse())?;
    let senders: usize = arg("--senders").map_or(Ok(8), |s| s.parse())?;
    // Events are sent on a schedule (events/s, 0 = as fast as acknowledged), so acknowledgements
    // overlap the whole time answers are being produced, not only its start.
    let rate: f64 = arg("--rate").map_or(Ok(40.0), |s| s.parse())?;
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir()?;
    copy_dir(&repo.join("examples/corpus"), &dir.path().join("corpus"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let text = std::fs::read_to_string(repo.join("config/docent.example.toml"))?
            .replace("\"../data/example\"", &format!("{:?}", dir.path().join("data")))
            .replace("[\"../examples/corpus\"]", &format!("[{:?}]", dir.path().join("corpus")))
            .replace("\"../data/audit/audit.log\"", &format!("{:?}", dir.path().join("audit.log")))
            .replace("listen = \"127.0.0.1:7878\"", "listen = \"127.0.0.1:0\"")
            .replace("aliases = [\"hana@fernhill.example\"]", "aliases = [\"hana@fernhill.example\", \"U0HANA\"]");
        let mut config =
            Config::parse(&text, &repo.join("config")).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        config.server.metrics_listen = None;
        let embedder: Arc<dyn Embedder> = Arc::new(FastEmbedder::load(&config.embedding)?);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let daemon = docent::server::start(config, embedder, listener).await?;
        let st = daemon.state().clone();
        while st.connectors.iter().any(|c| c.status.snapshot().last_full_scan_ms.is_none())
            || st.index.document_count() == 0
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let posts = Arc::new(AtomicU64::new(0));
        let api = slack_stub(posts.clone()).await;
        let secret = "bench-secret";
        let bridge_text = format!(
            "version = 1\nlisten = \"127.0.0.1:0\"\n[slack]\nbot_token = \"xoxb-bench\"\nsigning_secret = \"{secret}\"\napi_url = \"{api}\"\n[docent]\naddr = \"http://{}\"\napi_key = \"slack-bridge-dev-key\"\n[channels]\naudiences = {{ C0STAFF = \"group:staff\" }}\n[limits]\nmax_concurrent_answers = 8\n",
            daemon.local_addr()
        );
        let cfg = docent_slack::Config::parse(&bridge_text, &repo, &|_| None)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let bl = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let bridge = docent_slack::start(cfg, bl, None).await?;
        let url = format!("http://{}/slack/events", bridge.local_addr());
        let http = reqwest::Client::new();
        let send = |i: usize| {
            let body = serde_json::json!({"type": "event_callback", "event_id": format!("Ev{i}"),
                "event": {"type": "app_mention", "user": "U0HANA", "channel": "C0STAFF",
                    "ts": format!("1700000000.{i:06}"),
                    "text": format!("<@U0BOT> {}", QUESTIONS[i % QUESTIONS.len()])}})
            .to_string();
            let ts = docent_slack::http::now_unix().to_string();
            let sig = docent_slack::verify::sign(secret, &ts, body.as_bytes());
            http.post(&url)
                .header("content-type", "application/json")
                .header("x-slack-request-timestamp", ts)
                .header("x-slack-signature", sig)
                .body(body)
        };
        // Warm-up: one answer end to end (user mapping cached, connections open).
        send(usize::MAX / 2).send().await?;
        bridge.idle().await;
        let before = posts.load(Ordering::SeqCst);
        let start = Instant::now();
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..senders {
            let next = next.clone();
            let send = &send;
            tasks.push(async move {
                let mut acks = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                    if i >= events {
                        return acks;
                    }
                    if rate > 0.0 {
                        let at = start + Duration::from_secs_f64(i as f64 / rate);
                        tokio::time::sleep_until(at.into()).await;
                    }
                    let t = Instant::now();
                    let r = send(i).send().await.expect("bridge reachable");
                    assert_eq!(r.status(), 200);
                    acks.push(t.elapsed().as_secs_f64() * 1000.0);
                }
            });
        }
        let mut acks: Vec<f64> = futures::future::join_all(tasks).await.concat();
        let acked = start.elapsed();
        bridge.idle().await;
        let done = start.elapsed();
        let answered = posts.load(Ordering::SeqCst) - before;
        let errors = bridge.metrics().get("docent_slack_errors_total", &[]);
        println!("slack bridge: {events} mention events from {senders} senders at {rate} events/s offered, extractive answers, group:staff audience");
        println!(
            "  ack latency ms: p50 {:.2}  p99 {:.2}  max {:.2}  (all {} events acknowledged in {:.2} s, while answers were being produced)",
            pct(&mut acks, 0.5),
            pct(&mut acks, 0.99),
            pct(&mut acks, 1.0),
            events,
            acked.as_secs_f64()
        );
        println!(
            "  answered: {answered} posts in {:.2} s = {:.1} events/s sustained; error messages: {errors}",
            done.as_secs_f64(),
            events as f64 / done.as_secs_f64()
        );
        bridge.shutdown().await;
        daemon.shutdown().await?;
        Ok(())
    })
}
