//! Ingestion through the real daemon: the handbook (Markdown plus images) and the SciFact corpus
//! (one file per abstract) as two file-share connectors. Prints documents/s, chunks/s, failures,
//! peak RSS, and the time of a sync with nothing changed. Not a test: run it with
//!
//!     cargo bench --bench ingest -- [--data DIR] [--handbook DIR] [--docs N] [--queue N]
//!         [--queue-bytes N] [--big-files N --big-mb M]
//!
//! `--docs` limits SciFact to its first N abstracts; `--queue` sets `index.queue_capacity`,
//! `--queue-bytes` `index.queue_bytes`. `--big-files N` crawls N text files of `--big-mb` MB
//! each (over the 5 MB text budget: read, queued, then refused) behind one file of 0.5 MB of
//! text that the model takes a while on, instead of the two corpora: the peak RSS shows what
//! the queue holds while large files are crawled.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use docent::config::Config;
use docent::embed::{Embedder, FastEmbedder};
use docent_connector_api::jobs::{ConnectorCommand, JobState};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn main() -> anyhow::Result<()> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let data = arg("--data")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("../shared/data/scifact"));
    let handbook = arg("--handbook")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("../shared/data/handbook"));
    let limit: usize = arg("--docs")
        .and_then(|s| s.parse().ok())
        .unwrap_or(usize::MAX);
    let queue: usize = arg("--queue").and_then(|s| s.parse().ok()).unwrap_or(256);
    let queue_bytes: u64 = arg("--queue-bytes")
        .and_then(|s| s.parse().ok())
        .unwrap_or(256 << 20);
    let big_files: usize = arg("--big-files").and_then(|s| s.parse().ok()).unwrap_or(0);
    let big_mb: usize = arg("--big-mb").and_then(|s| s.parse().ok()).unwrap_or(20);

    let dir = tempfile::tempdir()?;
    let sci = dir.path().join("scifact");
    std::fs::create_dir_all(&sci)?;
    let big = dir.path().join("big");
    std::fs::create_dir_all(&big)?;
    if big_files > 0 {
        let line = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod\n";
        let body = line.repeat(big_mb * (1 << 20) / line.len());
        // First (the walk is in name order), a file the model takes a while on: the big ones
        // are read and queued behind it.
        std::fs::write(big.join("a-slow.txt"), line.repeat(8 * 1024))?;
        for i in 0..big_files {
            std::fs::write(big.join(format!("big{i:04}.txt")), &body)?;
        }
    } else {
        let corpus = docent::eval::load_corpus(&data.join("corpus.jsonl"))?;
        for d in corpus.iter().take(limit) {
            std::fs::write(
                sci.join(format!("{}.txt", d.id)),
                format!("{}\n\n{}\n", d.title, d.text),
            )?;
        }
    }
    // The big files replace both corpora.
    let (handbook, sci) = if big_files > 0 {
        (big.clone(), dir.path().join("empty"))
    } else {
        (handbook, sci)
    };
    std::fs::create_dir_all(&sci)?;
    let models = repo.join("models");
    let text = format!(
        r#"version = 1
[server]
listen = "127.0.0.1:0"
[index]
data_dir = {data:?}
queue_capacity = {queue}
queue_bytes = {queue_bytes}
[embedding]
model_dir = {model:?}
onnxruntime_lib = {ort:?}
[[connectors]]
type = "fs"
id = "handbook"
roots = [{handbook:?}]
watch = false
[[connectors.acl_rules]]
path_prefix = ""
allow = ["everyone"]
[[connectors]]
type = "fs"
id = "scifact"
roots = [{sci:?}]
watch = false
[[connectors.acl_rules]]
path_prefix = ""
allow = ["everyone"]
"#,
        data = dir.path().join("index"),
        model = models.join("all-MiniLM-L6-v2"),
        ort = models.join("onnxruntime/libonnxruntime.so.1.31.1"),
    );
    let config = Config::parse(&text, &repo).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let embedder: Arc<dyn Embedder> = Arc::new(FastEmbedder::load(&config.embedding)?);
    let rss_model = peak_rss_mb();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let t0 = Instant::now();
        let daemon = docent::server::start(config, embedder, listener).await?;
        let st = daemon.state().clone();
        // Done when every connector's first job ended and its checkpoint is committed.
        let done = |st: &docent::service::AppState| {
            let committed = st.index.checkpoints();
            st.connectors.iter().all(|c| {
                let s = c.status.snapshot();
                let cp = committed.get(&c.id).and_then(|v| v["last_full_scan_ms"].as_i64());
                s.last_full_scan_ms.is_some() && cp >= s.last_full_scan_ms
            })
        };
        while !done(&st) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let secs = t0.elapsed().as_secs_f64();
        let stats = st.index.stats();
        let failed = st.stats.documents_failed.load(std::sync::atomic::Ordering::Relaxed);
        let (_, skipped) = st.skips.get("handbook");
        println!("\n## Ingestion (handbook + SciFact{} via two fs connectors, queue {queue})",
            if limit == usize::MAX { String::new() } else { format!(" first {limit}") });
        println!("| figure | value |\n|---|---|");
        println!("| documents indexed | {} |", stats.documents);
        println!("| chunks | {} |", stats.chunks);
        println!("| documents skipped or failed (images, CODENOTIFY, ...) | {failed} + walk-level skips ({} listed for the handbook) |", skipped.len());
        if let Some((_, why)) = skipped.first() {
            println!("| a reason | {why} |");
        }
        println!("| wall time (start → all committed) | {secs:.1} s |");
        println!("| documents/s | {:.1} |", stats.documents as f64 / secs);
        println!("| chunks/s | {:.1} |", stats.chunks as f64 / secs);
        println!("| peak RSS after loading the model | {rss_model:.0} MB |");
        println!("| peak RSS during ingestion | {:.0} MB |", peak_rss_mb());

        // A sync with nothing changed: every file is checked by metadata, none is read.
        for c in &st.connectors {
            let id = c.status.reserve_job_id();
            let t = Instant::now();
            c.commands
                .send(ConnectorCommand::SyncNow {
                    job_id: id,
                    force_deletions: false,
                    full: false,
                })
                .await?;
            let job = loop {
                if let Some(j) = c.status.snapshot().jobs.iter().find(|j| j.id == id)
                    && j.state != JobState::Running
                {
                    break j.clone();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            println!(
                "| sync with nothing changed, {} | {:.0} ms ({} scanned, {} unchanged, {} read) |",
                c.id,
                t.elapsed().as_secs_f64() * 1000.0,
                job.counts.scanned,
                job.counts.unchanged,
                job.counts.added + job.counts.modified
            );
        }
        daemon.shutdown().await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}
