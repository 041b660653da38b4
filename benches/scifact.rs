//! SciFact benchmark driver (not a test; prints a table).
//!
//! 1. Ingestion: the SciFact corpus through the real pipeline (parse → chunk → embed → index)
//!    versus raw fastembed on exactly the same chunk inputs; pipeline overhead in percent.
//! 2. Retrieval quality on the train queries: nDCG@10 and recall@100 for BM25, dense, hybrid.
//! 3. Over gRPC against a real daemon serving that index: Search (hybrid, BM25) and Ask p50/p99
//!    and throughput at 1, 8 and 32 concurrent clients (non-OK statuses counted), next to the
//!    query-embedding time alone; peak RSS.
//!
//! Usage: cargo bench --bench scifact -- [--docs N] [--queries N] [--data DIR] [--index DIR]
//!        [--embed-cache FILE] [--quality-only] [--milvus lite|URI] [--model NAME] [--calls hybrid,bm25,ask]
//!        [--rounds N] [--pause-ms N] [--no-sentence-check | --sentence-check K,T] [--connections N]
//!        [retrieval flags, see `retrieval` below]
//! `--calls`: the gRPC calls measured (default all three); `--rounds N`: each query N times per
//! run (a longer load, for a profiler); `--pause-ms N`: the in-process timings idle N ms before
//! each search (caches as cold as between sporadic questions).
//! `--milvus`: measure on the Milvus backend (a Milvus Lite started here, or the server at URI,
//! collection `scifact_bench`), filled once from the embedded index (same chunks and vectors).
//! Needs scripts/setup-models.sh and ../shared/data/scifact.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use docent::chunk::ChunkerConfig;
use docent::config::Config;
use docent::embed::{Embedder, FastEmbedder};
use docent::eval::{self, run};
use docent::identity::token_hash;
use docent::index::milvus::{MilvusBackend, MilvusConfig};
use docent::index::{Backend, Export, Index, IndexSnapshot, SearchFilter};
use docent::ingest::embedding_input;
use docent::retrieve::{Fusion, Mode, RetrievalConfig, Retriever, ScoreNorm};
use docent_connector_api::SourceDocument;
use docent_proto::v1 as pb;

const TOKEN: &str = "bench-token";

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.to_string())
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Key figures gathered along the way, printed together as one table at the end.
static SUMMARY: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

fn note(what: impl Into<String>, value: impl Into<String>) {
    SUMMARY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((what.into(), value.into()));
}

fn authed<T>(mut r: tonic::Request<T>) -> tonic::Request<T> {
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {TOKEN}").parse().expect("ascii token"),
    );
    r
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() -> anyhow::Result<()> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let data = arg("--data")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("../shared/data/scifact"));
    let max_docs: usize = arg("--docs")
        .and_then(|s| s.parse().ok())
        .unwrap_or(usize::MAX);
    let max_queries: usize = arg("--queries")
        .and_then(|s| s.parse().ok())
        .unwrap_or(usize::MAX);
    let chunking = ChunkerConfig {
        max_tokens: arg("--max-tokens")
            .and_then(|s| s.parse().ok())
            .unwrap_or(200),
        overlap_tokens: 32,
    };
    let flag = |name: &str, default: f32| arg(name).and_then(|s| s.parse().ok()).unwrap_or(default);
    let d = RetrievalConfig::default();
    let retrieval = RetrievalConfig {
        // The config defaults unless overridden: --alpha A (convex) or --rrf (reciprocal rank).
        fusion: match (arg("--alpha"), std::env::args().any(|a| a == "--rrf")) {
            (_, true) => Fusion::Rrf,
            (Some(a), false) => Fusion::Convex { alpha: a.parse()? },
            (None, false) => d.fusion,
        },
        rrf_k: flag("--rrf-k", d.rrf_k),
        candidates: flag("--candidates", d.candidates as f32) as usize,
        title_boost: flag("--title-boost", d.title_boost),
        heading_boost: flag("--heading-boost", d.heading_boost),
        norm: match arg("--norm").as_deref() {
            Some("std") => ScoreNorm::Std,
            Some("minmax") => ScoreNorm::MinMax,
            Some(other) => anyhow::bail!("--norm: minmax or std, got {other}"),
            None => d.norm,
        },
        dense_feedback: flag("--dense-feedback", d.dense_feedback),
        dense_feedback_chunks: flag("--dense-feedback-chunks", d.dense_feedback_chunks as f32)
            as usize,
        // `--no-rerank`: the fused order (no second ranking stage).
        rerank: !std::env::args().any(|a| a == "--no-rerank"),
        rerank_depth: flag("--rerank-depth", d.rerank_depth as f32) as usize,
        // `--chunk-bm25`: BM25 ranks documents by their best chunk (no whole-document leg).
        document_bm25: !std::env::args().any(|a| a == "--chunk-bm25"),
    };
    println!("retrieval: {retrieval:?}");

    // `--model NAME`: a model Docent knows by name (default all-MiniLM-L6-v2), from models/NAME
    // (scripts/setup-models.sh [--multilingual]), with its prefixes.
    let model_name = arg("--model").unwrap_or_else(|| "all-MiniLM-L6-v2".into());
    // `--threads 1`: one query session of one thread (the embedder before session 8).
    let threads = arg("--threads").and_then(|s| s.parse().ok()).unwrap_or(2);
    let embedding = run::known_embedding(&repo, &model_name, threads)
        .ok_or_else(|| anyhow::anyhow!("unknown model {model_name:?}"))?;
    let ecfg = embedding.model.clone();
    let mut embedder: Arc<dyn Embedder> = Arc::new(FastEmbedder::load(embedding)?);
    // `--zero-vectors`: every vector is zero (BM25 experiments without embedding; the dense and
    // hybrid rows are then meaningless).
    if std::env::args().any(|a| a == "--zero-vectors") {
        embedder = Arc::new(ZeroEmbedder(embedder));
    }
    // `--embed-cache FILE` reuses passage and query vectors across runs (analyzer or fusion
    // tuning rebuilds the index without re-embedding; ingestion timings are then meaningless).
    if let Some(path) = arg("--embed-cache") {
        let cached = eval::cache::CachedEmbedder::open(embedder, std::path::Path::new(&path))?;
        println!("embedding cache {path}: {} vectors", cached.len());
        embedder = Arc::new(cached);
    }
    let corpus: Vec<_> = eval::load_corpus(&data.join("corpus.jsonl"))?
        .into_iter()
        .take(max_docs)
        .collect();
    let queries = eval::load_queries(&data.join("queries.jsonl"))?;
    let qrels = eval::load_qrels(&data.join("qrels/train.tsv"))?;
    let queries: Vec<_> = queries
        .into_iter()
        .filter(|q| qrels.contains_key(&q.id))
        .take(max_queries)
        .collect();
    println!(
        "corpus: {} docs, {} judged train queries",
        corpus.len(),
        queries.len()
    );

    let docs = run::source_documents(&corpus);

    // `--index DIR` keeps the index for later runs (retrieval tuning without re-embedding).
    let dir = tempfile::tempdir()?;
    let index_dir = arg("--index")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.path().join("index"));
    if index_dir.join("meta.json").exists() {
        println!(
            "reusing the index at {} (ingestion not measured)",
            index_dir.display()
        );
    } else {
        ingest(&docs, &embedder, chunking, &index_dir)?;
    }
    let milvus = arg("--milvus").map(|m| MilvusConfig {
        uri: if m == "lite" {
            docent_milvus::lite::shared_server(dir.path()).to_string()
        } else {
            m
        },
        collection: "scifact_bench".into(),
        token: Some("root:Milvus".into()),
        database: String::new(),
        ca_file: None,
        server_name: None,
        timeout: Duration::from_secs(600),
    });
    let in_process;
    {
        let embedded = Arc::new(Index::open_with(
            &index_dir,
            &docent::index::ModelSignature::of(embedder.as_ref()),
        )?);
        if let Some(path) = arg("--dump-legs") {
            return dump_legs(&embedded, &embedder, &queries, &retrieval, &path);
        }
        if std::env::args().any(|a| a == "--sweep") {
            let index = embedded;
            let boosts: Vec<(f32, f32)> = [0.15, 0.3, 0.5]
                .iter()
                .map(|&t| (t, retrieval.heading_boost))
                .collect();
            return sweep(&index, &embedder, &queries, &qrels, &boosts);
        }
        let index: Arc<dyn Backend> = match &milvus {
            None => embedded,
            Some(m) => Arc::new(fill_milvus(m, &embedded, &index_dir, &embedder)?),
        };
        // Retrieval quality, through the same code as `docent eval beir`, under a real scope.
        let scope = run::eval_scope();
        let retriever = Retriever::new(index.clone(), embedder.clone(), retrieval);
        println!(
            "\n## Retrieval quality (SciFact train, {} queries)",
            queries.len()
        );
        println!("| mode | nDCG@10 | recall@10 | recall@100 | MRR@10 |");
        println!("|---|---|---|---|---|");
        for (name, mode) in [
            ("BM25", Mode::Bm25),
            ("dense", Mode::Dense),
            ("hybrid", Mode::Hybrid),
        ] {
            let m = run::evaluate(&retriever, &scope, &queries, &qrels, mode, &|_| {})?;
            note(format!("nDCG@10 {name}"), format!("{:.4}", m.ndcg_at_10));
            println!(
                "| {name} | {:.4} | {:.4} | {:.4} | {:.4} |",
                m.ndcg_at_10, m.recall_at_10, m.recall_at_100, m.mrr_at_10
            );
        }
        // `--pause-ms N`: the in-process loops idle N ms before each search, as a daemon between
        // sporadic questions does; the caches are then as cold as in production (with the real
        // embedder the query embedding evicts them too). Default: back to back.
        let pause_for = arg("--pause-ms")
            .and_then(|s| s.parse::<f64>().ok())
            .map(|ms| Duration::from_secs_f64(ms / 1000.0));
        let pause = || {
            if let Some(d) = pause_for {
                std::thread::sleep(d);
            }
        };
        // In-process latency of the same search, without gRPC.
        let mut t_embed = Vec::new();
        let mut t_search = Vec::new();
        for q in &queries {
            let t = Instant::now();
            embedder.embed_query(&q.text)?;
            t_embed.push(t.elapsed());
            pause();
            let t = Instant::now();
            retriever.search(&scope, &q.text, Mode::Hybrid, &SearchFilter::default(), 10)?;
            t_search.push(t.elapsed());
        }
        in_process = (
            percentile(&mut t_embed, 0.5),
            percentile(&mut t_search, 0.5),
        );
        // Stage breakdown of the non-embedding part.
        let (mut t_bm25, mut t_docs, mut t_dense, mut t_load) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for q in &queries {
            let v = embedder.embed_query(&q.text)?;
            pause();
            let snap = index.snapshot();
            let t = Instant::now();
            let b = snap.bm25(
                &scope,
                &SearchFilter::default(),
                &q.text,
                100,
                (retrieval.title_boost, retrieval.heading_boost),
            )?;
            t_bm25.push(t.elapsed());
            let t = Instant::now();
            snap.bm25_documents(&scope, &SearchFilter::default(), &q.text, 100)?;
            t_docs.push(t.elapsed());
            let t = Instant::now();
            let d = snap.dense(&scope, &SearchFilter::default(), &v, 100)?;
            t_dense.push(t.elapsed());
            let t = Instant::now();
            for s in b.iter().chain(&d).take(10) {
                snap.chunk(s.addr)?;
            }
            t_load.push(t.elapsed());
        }
        println!(
            "\nstages p50 (ms): bm25 chunk leg {:.3}, bm25 document leg {:.3}, dense leg {:.3}, load 10 chunks {:.3}",
            ms(percentile(&mut t_bm25, 0.5)),
            ms(percentile(&mut t_docs, 0.5)),
            ms(percentile(&mut t_dense, 0.5)),
            ms(percentile(&mut t_load, 0.5))
        );
    }

    if std::env::args().any(|a| a == "--quality-only") {
        println!(
            "in-process hybrid search p50 {:.2} ms (query embedding {:.2} ms{})",
            ms(in_process.1),
            ms(in_process.0),
            if arg("--embed-cache").is_some() {
                ", from the cache: the search alone"
            } else {
                ""
            }
        );
        return Ok(());
    }
    // Latency over gRPC against the real daemon on that index.
    let mut embed_times: Vec<Duration> = queries
        .iter()
        .map(|q| {
            let t = Instant::now();
            embedder.embed_query(&q.text).map(|_| t.elapsed())
        })
        .collect::<Result<_, _>>()?;
    let backend = match &milvus {
        None => String::new(),
        Some(m) => format!(
            "backend = \"milvus\"\n[index.milvus]\nuri = {:?}\ncollection = {:?}\ntoken = \"root:Milvus\"\n",
            m.uri, m.collection
        ),
    };
    // `--no-sentence-check`: Ask without the answer's sentence check (its cost, compared);
    // `--sentence-check K,T`: the check over the best K sentences at threshold T.
    let answer = if std::env::args().any(|a| a == "--no-sentence-check") {
        "[answer]\nmin_sentence_similarity = -1\n".to_string()
    } else if let Some(kt) = arg("--sentence-check") {
        let (k, t) = kt
            .split_once(',')
            .ok_or_else(|| anyhow::anyhow!("--sentence-check K,T"))?;
        format!("[answer]\ncheck_sentences = {k}\nmin_sentence_similarity = {t}\n")
    } else {
        String::new()
    };
    let config = Config::parse(
        &format!(
            "version = 1\n[server]\nlisten = \"127.0.0.1:0\"\n# One identity drives up to 32 concurrent clients.\nmax_concurrent_per_caller = 64\n[embedding]\nmodel = {:?}\nmodel_dir = {:?}\nonnxruntime_lib = {:?}\n[[identities]]\nid = \"bench\"\ntoken_sha256 = \"{}\"\n[index]\ndata_dir = {:?}\n{backend}{answer}",
            model_name,
            ecfg.model_dir,
            ecfg.onnxruntime_lib,
            hex::encode(token_hash(TOKEN)),
            if milvus.is_some() { dir.path().join("state") } else { index_dir.clone() },
        ),
        &repo,
    )
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let daemon = docent::server::start(config, embedder.clone(), listener).await?;
        // `--connections N`: the clients spread over N HTTP/2 connections (default one, shared),
        // as separate callers' programs would be.
        let connections: usize = arg("--connections").and_then(|s| s.parse().ok()).unwrap_or(1).max(1);
        let mut channels = Vec::new();
        for _ in 0..connections {
            let ch = tonic::transport::Channel::from_shared(format!("http://{}", daemon.local_addr()))?
                .connect()
                .await?;
            channels.push(pb::assistant_client::AssistantClient::new(ch));
        }
        let queries: Arc<Vec<String>> = Arc::new(queries.iter().map(|q| q.text.clone()).collect());
        println!(
            "\n## Over gRPC ({} queries per run; {connections} HTTP/2 connection(s) shared by the clients)",
            queries.len()
        );
        println!(
            "query embedding alone, in-process: p50 {:.2} ms, p99 {:.2} ms; in-process hybrid search p50 {:.2} ms (embedding {:.2} ms)",
            ms(percentile(&mut embed_times.clone(), 0.5)),
            ms(percentile(&mut embed_times, 0.99)),
            ms(in_process.1),
            ms(in_process.0)
        );
        note(
            "query embedding alone p50 (in-process)",
            format!("{:.2} ms", ms(percentile(&mut embed_times.clone(), 0.5))),
        );
        println!("| call | clients | p50 ms | p99 ms | queries/s | CPU µs/query | non-OK |");
        println!("|---|---|---|---|---|---|---|");
        let mut bm25_qps: Vec<(usize, f64)> = Vec::new();
        // `--calls bm25,hybrid,ask` picks the calls measured (default: all three), `--rounds N`
        // asks every query N times per run (a longer load, for a profiler).
        let calls = arg("--calls").unwrap_or_else(|| "hybrid,bm25,ask".into());
        let rounds: usize = arg("--rounds").and_then(|s| s.parse().ok()).unwrap_or(1).max(1);
        let queries: Arc<Vec<String>> = Arc::new(
            (0..rounds).flat_map(|_| queries.iter().cloned()).collect(),
        );
        for call in [Call::SearchHybrid, Call::SearchBm25, Call::Ask]
            .into_iter()
            .filter(|c| calls.split(',').any(|n| n.trim() == c.flag()))
        {
            for clients in [1usize, 8, 32] {
                let r = load(&channels, &queries, call, clients).await;
                if matches!(call, Call::SearchBm25) {
                    bm25_qps.push((clients, r.qps));
                }
                note(
                    format!("{} @ {clients} client(s): p50 / p99 ms, queries/s, CPU µs/query, non-OK", call.name()),
                    format!(
                        "{:.2} / {:.2}, {:.0}, {:.0}, {}",
                        ms(r.p50),
                        ms(r.p99),
                        r.qps,
                        r.cpu_per_query.as_secs_f64() * 1e6,
                        r.errors
                    ),
                );
                println!(
                    "| {} | {clients} | {:.2} | {:.2} | {:.0} | {:.0} | {} |",
                    call.name(),
                    ms(r.p50),
                    ms(r.p99),
                    r.qps,
                    r.cpu_per_query.as_secs_f64() * 1e6,
                    r.errors
                );
                if let Some((a, n, count)) = r.by_status {
                    let p = |d: Duration, any: bool| match any {
                        true => format!("{:.2} ms", ms(d)),
                        false => "none".to_string(),
                    };
                    println!(
                        "|   answered {count} of {}: p50 {}; not answered (not found or blocked): p50 {} | | | | | | |",
                        queries.len(),
                        p(a, count > 0),
                        p(n, count < queries.len())
                    );
                }
            }
        }
        if let Some(base) = arg("--bm25s-qps").and_then(|s| s.parse::<f64>().ok()) {
            println!("\n## BM25: Docent Search over gRPC vs bm25s (PyPI, one query per call, in-process)");
            println!("bm25s: {base:.0} queries/s");
            note("bm25s queries/s (in-process)", format!("{base:.0}"));
            for (clients, qps) in &bm25_qps {
                note(format!("Docent BM25 Search / bm25s @ {clients} client(s)"), format!("{:.2}x", qps / base));
                println!("Docent BM25 Search, {clients} client(s): {qps:.0} queries/s = {:.2}x bm25s", qps / base);
            }
        }
        daemon.shutdown().await?;
        anyhow::Ok(())
    })?;
    note(
        "peak RSS while serving (model loaded)",
        format!("{:.0} MB", peak_rss_mb()),
    );
    println!("\n## Summary");
    println!("| figure | value |");
    println!("|---|---|");
    for (k, v) in SUMMARY.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        println!("| {k} | {v} |");
    }
    Ok(())
}

/// The Milvus backend, filled from the embedded index at `index_dir` when its collection is
/// empty (the same chunks and vectors, so the two backends are compared on the same data).
fn fill_milvus(
    m: &MilvusConfig,
    embedded: &Index,
    index_dir: &std::path::Path,
    embedder: &Arc<dyn Embedder>,
) -> anyhow::Result<MilvusBackend> {
    let backend = MilvusBackend::open(m, &docent::index::ModelSignature::of(embedder.as_ref()))?;
    if backend.document_count() > 0 {
        println!(
            "reusing {} documents in milvus {}",
            backend.document_count(),
            backend.location()
        );
        return Ok(backend);
    }
    let export = Export::open(index_dir)?;
    let keys = export.document_keys().to_vec();
    let t = Instant::now();
    for (i, key) in keys.iter().enumerate() {
        if let Some(mut doc) = export.document(key)? {
            let vectors = embedded.chunk_vectors(&doc.key)?;
            for c in &mut doc.chunks {
                c.vector = vectors.get(&c.hash).cloned().unwrap_or_default();
            }
            backend.upsert(doc)?;
        }
        if (i + 1) % 500 == 0 || i + 1 == keys.len() {
            backend.commit(Default::default())?;
            eprint!("\rmilvus: {}/{} documents", i + 1, keys.len());
        }
    }
    eprintln!();
    note(
        "Milvus fill (documents/s, upsert + commit)",
        format!("{:.0}", keys.len() as f64 / t.elapsed().as_secs_f64()),
    );
    Ok(backend)
}

/// Raw fastembed on the pipeline's exact chunk inputs, then the pipeline into `index_dir`.
fn ingest(
    docs: &[SourceDocument],
    embedder: &Arc<dyn Embedder>,
    chunking: ChunkerConfig,
    index_dir: &std::path::Path,
) -> anyhow::Result<()> {
    // Raw embedder on the same chunk inputs the pipeline embeds.
    let counter = embedder.token_counter();
    let mut inputs = Vec::new();
    for d in docs {
        if let Ok(p) = docent::parse::parse(&d.content, d.mime.as_deref(), &d.name_hint) {
            let title = d.title.clone().unwrap_or_default();
            for c in docent::chunk::chunk(&p, chunking, counter.as_ref()) {
                inputs.push(embedding_input(
                    &title,
                    &c.heading_path,
                    &p.text[c.span.clone()],
                ));
            }
        }
    }
    let t = Instant::now();
    for batch in inputs.chunks(256) {
        embedder.embed_passages(batch)?;
    }
    let raw = t.elapsed();

    // The pipeline, end to end into a fresh index (the same code as `docent eval beir`).
    {
        let index = Arc::new(Index::open_with(
            index_dir,
            &docent::index::ModelSignature::of(embedder.as_ref()),
        )?);
        let report = run::ingest(&index, embedder, chunking, docs, &|_| {})?;
        let (piped, chunks) = (report.elapsed, report.chunks);
        println!(
            "\n## Ingestion ({} docs, {} chunks; raw inputs {})",
            docs.len(),
            chunks,
            inputs.len()
        );
        println!("| what | seconds | chunks/s | docs/s |");
        println!("|---|---|---|---|");
        println!(
            "| raw fastembed | {:.1} | {:.1} | |",
            raw.as_secs_f64(),
            inputs.len() as f64 / raw.as_secs_f64()
        );
        println!(
            "| pipeline (parse+chunk+embed+index+commit) | {:.1} | {:.1} | {:.1} |",
            piped.as_secs_f64(),
            chunks as f64 / piped.as_secs_f64(),
            docs.len() as f64 / piped.as_secs_f64()
        );
        let overhead = (piped.as_secs_f64() / raw.as_secs_f64() - 1.0) * 100.0;
        println!("pipeline overhead over raw embedder: {overhead:+.1}%");
        note(
            "ingestion: pipeline vs raw fastembed (chunks/s)",
            format!(
                "{:.1} vs {:.1} ({overhead:+.1}%)",
                chunks as f64 / piped.as_secs_f64(),
                inputs.len() as f64 / raw.as_secs_f64()
            ),
        );
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Call {
    SearchHybrid,
    SearchBm25,
    Ask,
}

impl Call {
    fn name(self) -> &'static str {
        match self {
            Self::SearchHybrid => "Search hybrid",
            Self::SearchBm25 => "Search BM25",
            Self::Ask => "Ask (extractive)",
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Self::SearchHybrid => "hybrid",
            Self::SearchBm25 => "bm25",
            Self::Ask => "ask",
        }
    }
}

struct LoadResult {
    p50: Duration,
    p99: Duration,
    qps: f64,
    /// CPU time of the whole process (daemon and load driver alike) per query: steadier than
    /// queries/s on a machine whose other work takes cores away at times.
    cpu_per_query: Duration,
    errors: usize,
    /// Ask only: the p50 of the calls answered and of those "not found", and how many were
    /// answered (a review: a question without evidence skips the sentence check's embedding,
    /// so the share of each decides the overall p50).
    by_status: Option<(Duration, Duration, usize)>,
}

/// `clients` concurrent callers take queries from a shared cursor until all are asked once.
/// Every non-OK status is counted, not hidden.
async fn load(
    connections: &[pb::assistant_client::AssistantClient<tonic::transport::Channel>],
    queries: &Arc<Vec<String>>,
    call: Call,
    clients: usize,
) -> LoadResult {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let cpu0 = process_cpu();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (mut client, queries, next) = (
            connections[c % connections.len()].clone(),
            queries.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let (mut times, mut errors) = (Vec::new(), 0usize);
            let (mut answered, mut not_found) = (Vec::new(), Vec::new());
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(q) = queries.get(i) else { break };
                let t = Instant::now();
                let ok = match call {
                    Call::SearchHybrid | Call::SearchBm25 => {
                        let mode = if matches!(call, Call::SearchBm25) {
                            pb::RetrievalMode::Bm25
                        } else {
                            pb::RetrievalMode::Hybrid
                        };
                        client
                            .search(authed(tonic::Request::new(pb::SearchRequest {
                                query: q.clone(),
                                limit: 10,
                                mode: mode as i32,
                                ..Default::default()
                            })))
                            .await
                            .is_ok()
                    }
                    Call::Ask => match client
                        .ask(authed(tonic::Request::new(pb::AskRequest {
                            question: q.clone(),
                            ..Default::default()
                        })))
                        .await
                    {
                        Ok(r) => {
                            let took = t.elapsed();
                            if r.into_inner().status == pb::AnswerStatus::Answered as i32 {
                                answered.push(took);
                            } else {
                                not_found.push(took);
                            }
                            true
                        }
                        Err(_) => false,
                    },
                };
                times.push(t.elapsed());
                errors += usize::from(!ok);
            }
            (times, errors, answered, not_found)
        }));
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    let (mut answered, mut not_found) = (Vec::new(), Vec::new());
    for t in tasks {
        let (times, e, a, n) = t.await.expect("load task");
        all.extend(times);
        errors += e;
        answered.extend(a);
        not_found.extend(n);
    }
    let by_status = matches!(call, Call::Ask).then(|| {
        let p50 = |v: &mut Vec<Duration>| {
            if v.is_empty() {
                Duration::ZERO
            } else {
                percentile(v, 0.5)
            }
        };
        let n = answered.len();
        (p50(&mut answered), p50(&mut not_found), n)
    });
    let elapsed = t0.elapsed();
    let cpu = process_cpu().saturating_sub(cpu0);
    LoadResult {
        p50: percentile(&mut all.clone(), 0.5),
        p99: percentile(&mut all, 0.99),
        qps: queries.len() as f64 / elapsed.as_secs_f64(),
        cpu_per_query: cpu / queries.len().max(1) as u32,
        errors,
        by_status,
    }
}

/// User and system CPU time this process has used, all threads (`/proc/self/stat`, in clock
/// ticks of 10 ms: a load of a few seconds reads it to a fraction of a percent).
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // After the command name's closing parenthesis: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 10)
}

/// One query's raw legs for the sweep: (document key, chunk score) in chunk rank order.
struct Legs {
    bm25: Vec<Vec<(String, f32)>>,
    /// The dense leg, then the dense leg again after each pseudo-relevance-feedback weight.
    dense: Vec<Vec<(String, f32)>>,
}

/// Documents of a chunk list, each at its best chunk's score, in rank order.
fn collapse_max(list: &[(String, f32)]) -> Vec<(String, f32)> {
    let mut seen = std::collections::HashSet::new();
    list.iter()
        .filter(|(k, _)| seen.insert(k.clone()))
        .cloned()
        .collect()
}

#[derive(Clone, Copy, Debug)]
enum Norm {
    MinMax,
    Std,
    Rrf(f32),
}

/// Fuses two chunk lists (truncated to `depth` chunks) per document.
fn fuse_docs(
    bm: &[(String, f32)],
    de: &[(String, f32)],
    alpha: f32,
    norm: Norm,
    depth: usize,
) -> Vec<String> {
    let mut acc: std::collections::HashMap<String, f32> = std::collections::HashMap::new();
    for (leg, w) in [(bm, alpha), (de, 1.0 - alpha)] {
        let docs = collapse_max(&leg[..leg.len().min(depth)]);
        if docs.is_empty() {
            continue;
        }
        let s: Vec<f32> = docs.iter().map(|d| d.1).collect();
        let max = s.iter().copied().fold(f32::MIN, f32::max);
        let min = s.iter().copied().fold(f32::MAX, f32::min);
        let mean = s.iter().sum::<f32>() / s.len() as f32;
        let sd = (s.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / s.len() as f32)
            .sqrt()
            .max(1e-6);
        for (i, (k, x)) in docs.iter().enumerate() {
            let n = match norm {
                Norm::MinMax if max > min => (x - min) / (max - min),
                Norm::MinMax => 1.0,
                Norm::Std => (x - min) / sd,
                Norm::Rrf(k) => 1.0 / (k + i as f32 + 1.0),
            };
            *acc.entry(k.clone()).or_default() += w * n;
        }
    }
    let mut v: Vec<(String, f32)> = acc.into_iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.into_iter().map(|d| d.0).collect()
}

/// `--sweep`: gathers each leg once per query (deep), then evaluates fusion variants in memory
/// and prints the best. Exploration only: the chosen settings are then measured through the
/// production path (the table without `--sweep`).
/// Eval document ids (the corpus's own, without the source prefix) of a leg's hits, each
/// document's name loaded once.
struct DocNames<'s, 'i> {
    snap: &'s docent::index::Snapshot<'i>,
    prefix: String,
    names: std::collections::HashMap<u64, String>,
}

impl<'s, 'i> DocNames<'s, 'i> {
    fn new(snap: &'s docent::index::Snapshot<'i>) -> Self {
        Self {
            snap,
            prefix: format!("{}:", run::EVAL_SOURCE),
            names: std::collections::HashMap::new(),
        }
    }

    /// `(document id, chunk score)` per hit, in the leg's order.
    fn keyed(&mut self, hits: &[docent::index::Scored]) -> anyhow::Result<Vec<(String, f32)>> {
        let ids = self.snap.doc_ids(hits)?;
        let mut out = Vec::new();
        for (h, id) in hits.iter().zip(ids) {
            let name = match self.names.entry(id) {
                std::collections::hash_map::Entry::Occupied(e) => e.get().clone(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let k = self.snap.chunk(h.addr)?.doc_key;
                    e.insert(k.strip_prefix(&self.prefix).unwrap_or(&k).to_string())
                        .clone()
                }
            };
            out.push((name, h.score));
        }
        Ok(out)
    }

    /// [`Self::keyed`] collapsed to each document's best chunk.
    fn docs(&mut self, hits: &[docent::index::Scored]) -> anyhow::Result<Vec<(String, f32)>> {
        let mut seen = std::collections::HashSet::new();
        Ok(self
            .keyed(hits)?
            .into_iter()
            .filter(|(k, _)| seen.insert(k.clone()))
            .collect())
    }
}

/// `--dump-legs FILE`: per query, each leg's documents (best chunk score, 300 chunks deep; the
/// whole-document BM25 leg as `bm25_documents` where the index has it) as JSON lines, to try
/// fusing legs from indexes chunked differently.
fn dump_legs(
    index: &Index,
    embedder: &Arc<dyn Embedder>,
    queries: &[eval::Query],
    cfg: &RetrievalConfig,
    path: &str,
) -> anyhow::Result<()> {
    let scope = run::eval_scope();
    let snap = index.snapshot();
    let none = SearchFilter::default();
    let mut names = DocNames::new(&snap);
    let mut out = String::new();
    for q in queries {
        let v = embedder.embed_query(&q.text)?;
        let bm25 = snap.bm25(
            &scope,
            &none,
            &q.text,
            300,
            (cfg.title_boost, cfg.heading_boost),
        )?;
        let dense = snap.dense(&scope, &none, &v, 300)?;
        let mut line = serde_json::json!({"id": q.id, "bm25": names.docs(&bm25)?, "dense": names.docs(&dense)?});
        if let Some(d) = snap.bm25_documents(&scope, &none, &q.text, 300)? {
            line["bm25_documents"] = serde_json::json!(names.docs(&d)?);
        }
        out.push_str(&line.to_string());
        out.push('\n');
    }
    std::fs::write(path, out)?;
    println!("wrote {path}");
    Ok(())
}

fn sweep(
    index: &Index,
    embedder: &Arc<dyn Embedder>,
    queries: &[eval::Query],
    qrels: &eval::Qrels,
    boosts: &[(f32, f32)],
) -> anyhow::Result<()> {
    let scope = run::eval_scope();
    let snap = index.snapshot();
    let mut names = DocNames::new(&snap);
    let mut keyed = |hits: &[docent::index::Scored]| names.keyed(hits);
    let depth = 300;
    let prf = [0.3f32, 0.6];
    let hf = [0.3f32, 0.6, 1.0];
    let mut all = Vec::new();
    let none = SearchFilter::default();
    for q in queries {
        let v = embedder.embed_query(&q.text)?;
        let mut bm25 = Vec::new();
        for b in boosts {
            bm25.push(keyed(&snap.bm25(&scope, &none, &q.text, depth, *b)?)?);
        }
        let first = snap.dense(&scope, &none, &v, depth)?;
        let mut dense = vec![keyed(&first)?];
        // Rocchio on the top 3 chunks: q' = q + beta * mean(top chunks).
        let mut centroid = vec![0.0f32; v.len()];
        for s in first.iter().take(3) {
            if let Some(c) = snap.vector(s.addr)? {
                for (a, b) in centroid.iter_mut().zip(c) {
                    *a += b / 3.0;
                }
            }
        }
        for beta in prf {
            let q2: Vec<f32> = v.iter().zip(&centroid).map(|(a, c)| a + beta * c).collect();
            let norm = q2.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
            let q2: Vec<f32> = q2.iter().map(|x| x / norm).collect();
            dense.push(keyed(&snap.dense(&scope, &none, &q2, depth)?)?);
        }
        // Hybrid feedback: the same Rocchio step on the fused top 3 documents' best chunks
        // (title boost of the second boost setting, min-max convex 0.5 over 100 chunks).
        let bm_hits = snap.bm25(&scope, &none, &q.text, 100, boosts[1.min(boosts.len() - 1)])?;
        let first100 = &first[..first.len().min(100)];
        let (kb, kd) = (snap.doc_ids(&bm_hits)?, snap.doc_ids(first100)?);
        let fused = docent::retrieve::convex(
            docent::retrieve::Leg {
                hits: &bm_hits,
                keys: &kb,
            },
            docent::retrieve::Leg {
                hits: first100,
                keys: &kd,
            },
            0.5,
            ScoreNorm::MinMax,
        );
        let mut centroid = vec![0.0f32; v.len()];
        for f in fused.iter().take(3) {
            if let Some(c) = snap.vector(f.addr)? {
                for (a, b) in centroid.iter_mut().zip(c) {
                    *a += b / 3.0;
                }
            }
        }
        for beta in hf {
            let q2: Vec<f32> = v.iter().zip(&centroid).map(|(a, c)| a + beta * c).collect();
            let norm = q2.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
            let q2: Vec<f32> = q2.iter().map(|x| x / norm).collect();
            dense.push(keyed(&snap.dense(&scope, &none, &q2, depth)?)?);
        }
        all.push(Legs { bm25, dense });
    }
    let score = |rank: &dyn Fn(&Legs) -> Vec<String>| -> (f64, f64) {
        let (mut n, mut r) = (0.0, 0.0);
        for (q, l) in queries.iter().zip(&all) {
            let ranked = rank(l);
            n += eval::ndcg_at_k(&ranked, &qrels[&q.id], 10);
            r += eval::recall_at_k(&ranked, &qrels[&q.id], 100);
        }
        (n / queries.len() as f64, r / queries.len() as f64)
    };
    println!("\n## Sweep (single legs)\n| variant | nDCG@10 | recall@100 |\n|---|---|---|");
    let row = |name: &str, (n, r): (f64, f64)| println!("| {name} | {n:.4} | {r:.4} |");
    for (bi, b) in boosts.iter().enumerate() {
        row(
            &format!("BM25 title {} heading {}", b.0, b.1),
            score(&|l| collapse_max(&l.bm25[bi]).into_iter().map(|d| d.0).collect()),
        );
    }
    let dense_names: Vec<String> = std::iter::once("dense".to_string())
        .chain(prf.iter().map(|b| format!("dense PRF {b}")))
        .chain(hf.iter().map(|b| format!("dense HF {b}")))
        .collect();
    for (di, name) in dense_names.iter().enumerate() {
        row(
            name,
            score(&|l| {
                collapse_max(&l.dense[di])
                    .into_iter()
                    .map(|d| d.0)
                    .collect()
            }),
        );
    }
    let mut rows = Vec::new();
    for (bi, b) in boosts.iter().enumerate() {
        for (di, dname) in dense_names.iter().enumerate() {
            for depth in [100, 300] {
                let mut variants: Vec<(String, f32, Norm)> = Vec::new();
                for norm in [Norm::MinMax, Norm::Std] {
                    for alpha in [0.3, 0.4, 0.5, 0.6] {
                        variants.push((format!("{norm:?} alpha {alpha}"), alpha, norm));
                    }
                }
                for k in [10.0, 60.0] {
                    variants.push((format!("rrf k {k}"), 0.5, Norm::Rrf(k)));
                }
                for (vname, alpha, norm) in variants {
                    let m = score(&|l| fuse_docs(&l.bm25[bi], &l.dense[di], alpha, norm, depth));
                    rows.push((format!("title {} {dname} depth {depth} {vname}", b.0), m));
                }
            }
        }
    }
    rows.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
    println!(
        "\n## Sweep (hybrid, best 40 of {})\n| variant | nDCG@10 | recall@100 |\n|---|---|---|",
        rows.len()
    );
    for (name, m) in rows.iter().take(40) {
        row(name, *m);
    }
    println!("\n## Sweep (hybrid, title 0.15 rows)");
    for (name, m) in rows
        .iter()
        .filter(|r| r.0.starts_with("title 0.15 dense depth 100"))
    {
        row(name, *m);
    }
    Ok(())
}

/// The model's identity and token counting, with zero vectors (see `--zero-vectors`).
struct ZeroEmbedder(Arc<dyn Embedder>);

impl Embedder for ZeroEmbedder {
    fn model_id(&self) -> &str {
        self.0.model_id()
    }
    fn dim(&self) -> usize {
        self.0.dim()
    }
    fn embed_passages(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, docent::embed::EmbedError> {
        Ok(vec![vec![0.0; self.dim()]; texts.len()])
    }
    fn embed_query(&self, _: &str) -> Result<Vec<f32>, docent::embed::EmbedError> {
        Ok(vec![0.0; self.dim()])
    }
    fn token_counter(&self) -> Arc<dyn docent::chunk::TokenCounter> {
        self.0.token_counter()
    }
}
