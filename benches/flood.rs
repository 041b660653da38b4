//! One caller floods, another behaves: the well-behaved caller's latency with and without the
//! flood, over gRPC against the real daemon (example corpus, real model). The flood is 64
//! concurrent loops of hybrid searches from one identity, half of them with a 1 ms deadline
//! (abandoned work must stop). Not a test: run it with
//!
//!     cargo bench --bench flood -- [--requests N] [--flooders N] [--per-caller N]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use docent::config::Config;
use docent::embed::{Embedder, FastEmbedder};
use docent_proto::v1 as pb;
use tonic::transport::Channel;

fn arg(name: &str) -> Option<usize> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
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

fn request(
    token: &str,
    query: &str,
    deadline: Option<Duration>,
) -> tonic::Request<pb::SearchRequest> {
    let mut r = tonic::Request::new(pb::SearchRequest {
        query: query.into(),
        limit: 5,
        ..Default::default()
    });
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    if let Some(d) = deadline {
        r.set_timeout(d);
    }
    r
}

const QUERIES: [&str; 6] = [
    "How do I request a new laptop?",
    "How many days can I work from home?",
    "What is the travel policy for trains?",
    "Who approves expenses?",
    "How do I connect to the VPN?",
    "When are the office holidays in 2027?",
];

/// Sequential searches of the well-behaved caller: (p50, p99, max) in ms, and failures.
async fn measure(ch: &Channel, n: usize) -> (f64, f64, f64, usize) {
    let mut c = pb::assistant_client::AssistantClient::new(ch.clone());
    let mut lat = Vec::with_capacity(n);
    let mut failed = 0;
    for i in 0..n {
        let t = Instant::now();
        if c.search(request("hana-dev-token", QUERIES[i % QUERIES.len()], None))
            .await
            .is_err()
        {
            failed += 1;
        }
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    (q(0.5), q(0.99), lat[lat.len() - 1], failed)
}

fn main() -> anyhow::Result<()> {
    let n = arg("--requests").unwrap_or(300);
    let flooders = arg("--flooders").unwrap_or(64);
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir()?;
    copy_dir(&repo.join("examples/corpus"), &dir.path().join("corpus"))?;
    let text = std::fs::read_to_string(repo.join("config/docent.example.toml"))?
        .replace(
            "\"../data/example\"",
            &format!("{:?}", dir.path().join("data")),
        )
        .replace(
            "[\"../examples/corpus\"]",
            &format!("[{:?}]", dir.path().join("corpus")),
        )
        .replace(
            "\"../data/audit/audit.log\"",
            &format!("{:?}", dir.path().join("audit.log")),
        )
        .replace("listen = \"127.0.0.1:7878\"", "listen = \"127.0.0.1:0\"");
    let mut config =
        Config::parse(&text, &repo.join("config")).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    config.server.metrics_listen = None;
    if let Some(n) = arg("--per-caller") {
        config.server.max_concurrent_per_caller = n;
    }
    let (global, per_caller) = (
        config.server.max_concurrent_requests,
        config.server.max_concurrent_per_caller,
    );
    let embedder: Arc<dyn Embedder> = Arc::new(FastEmbedder::load(&config.embedding)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let daemon = docent::server::start(config, embedder, listener).await?;
        let st = daemon.state().clone();
        while st.connectors.iter().any(|c| c.status.snapshot().last_full_scan_ms.is_none())
            || st.index.document_count() == 0
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let url = format!("http://{}", daemon.local_addr());
        let ch = Channel::from_shared(url.clone())?.connect().await?;
        // Warm up.
        measure(&ch, 20).await;
        let quiet = measure(&ch, n).await;

        let stop = Arc::new(AtomicBool::new(false));
        let (sent, shed, ok) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let flood_ch = Channel::from_shared(url)?.connect().await?;
        let mut tasks = Vec::new();
        for f in 0..flooders {
            let (stop, sent, shed, ok) = (stop.clone(), sent.clone(), shed.clone(), ok.clone());
            let mut c = pb::assistant_client::AssistantClient::new(flood_ch.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = f;
                while !stop.load(Ordering::Relaxed) {
                    let deadline = (i % 2 == 0).then_some(Duration::from_millis(1));
                    sent.fetch_add(1, Ordering::Relaxed);
                    match c.search(request("alice-dev-token", QUERIES[i % QUERIES.len()], deadline)).await {
                        Ok(_) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) if e.code() == tonic::Code::ResourceExhausted => {
                            shed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {}
                    }
                    i += 1;
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t = Instant::now();
        let flooded = measure(&ch, n).await;
        let secs = t.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        println!("\n## One caller floods, another behaves (example corpus, hybrid Search over gRPC)");
        println!("limits: {global} requests at once, {per_caller} per caller; {flooders} flooding loops, half with a 1 ms deadline");
        println!("| well-behaved caller | p50 ms | p99 ms | max ms | failed |\n|---|---|---|---|---|");
        println!("| alone | {:.2} | {:.2} | {:.2} | {} |", quiet.0, quiet.1, quiet.2, quiet.3);
        println!("| during the flood | {:.2} | {:.2} | {:.2} | {} |", flooded.0, flooded.1, flooded.2, flooded.3);
        println!(
            "flooder: {:.0} requests/s sent, {} answered, {} shed (RESOURCE_EXHAUSTED), the rest past their deadline",
            sent.load(Ordering::Relaxed) as f64 / secs,
            ok.load(Ordering::Relaxed),
            shed.load(Ordering::Relaxed)
        );
        daemon.shutdown().await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}
