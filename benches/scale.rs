//! Hybrid Search at scale: the whole query path (both scoped legs, fusion, the second stage) on
//! an embedded index of 10⁴, 10⁵ or 10⁶ chunks, with scopes admitting 100%, 10% and 1% of them.
//!
//! Data: the SciFact chunks of a kept index (`target/tune/index`, from `cargo bench --bench
//! scifact -- --index target/tune/index`): their text and real all-MiniLM-L6-v2 vectors, then,
//! past them, chunk `i` = the text of a random real chunk followed by 20 words of another, with
//! the synthetic vector `normalise(a + 0.5 (b − c))` of `benches/ann.rs`. One chunk per document;
//! documents in groups `all`, `ten` (10%) and `one` (1%) by a hash of their number. Queries: real
//! SciFact train questions, their vectors from the embedding cache (the model is loaded for the
//! ones missing), so the figures exclude query embedding (reported apart). Built indexes are kept
//! under `--dir` (default `target/tune/scale`); graphs are waited for before measuring.
//!
//!     cargo bench --bench scale -- [--sizes 10000,100000,1000000] [--queries 200]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use docent::acl::{AclScope, authorize};
use docent::embed::{Embedder, EmbedderConfig, FastEmbedder};
use docent::eval::{self, cache::CachedEmbedder};
use docent::identity::{IdentitySpec, IdentityStore, token_hash};
use docent::index::{Backend, ChunkRecord, DocumentRecord, Export, Index, SearchFilter};
use docent::retrieve::{Mode, RetrievalConfig, Retriever};
use docent_connector_api::{Acl, DocKey, Principal};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn normalised(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

struct Base {
    title: String,
    text: String,
    vector: Vec<f32>,
}

/// The real chunks of the kept SciFact index.
fn base(dir: &std::path::Path) -> anyhow::Result<Vec<Base>> {
    let export = Export::open(dir)?;
    let index = Index::open_with(dir, &export.payload().signature())?;
    let mut out = Vec::new();
    for key in export.document_keys() {
        let Some(doc) = export.document(key)? else {
            continue;
        };
        let vectors = index.chunk_vectors(&doc.key)?;
        for c in doc.chunks {
            if let Some(v) = vectors.get(&c.hash) {
                out.push(Base {
                    title: doc.title.clone(),
                    text: c.text,
                    vector: v.clone(),
                });
            }
        }
    }
    Ok(out)
}

fn groups(i: u64) -> Vec<Principal> {
    let mut g = vec!["group:all".parse().expect("principal")];
    if mix(i ^ 0xA).is_multiple_of(10) {
        g.push("group:ten".parse().expect("principal"));
    }
    if mix(i ^ 0xB).is_multiple_of(100) {
        g.push("group:one".parse().expect("principal"));
    }
    g
}

fn build(dir: &std::path::Path, base: &[Base], n: usize) -> anyhow::Result<()> {
    let index = Index::open(dir, "sentence-transformers/all-MiniLM-L6-v2", 384)?;
    let t = Instant::now();
    for i in 0..n as u64 {
        let (title, text, vector) = if (i as usize) < base.len() {
            let b = &base[i as usize];
            (b.title.clone(), b.text.clone(), b.vector.clone())
        } else {
            let pick = |salt: u64| &base[(mix(i ^ salt) % base.len() as u64) as usize];
            let (a, b, c) = (pick(1), pick(2), pick(3));
            let extra: Vec<&str> = b.text.split_whitespace().take(20).collect();
            let v = a
                .vector
                .iter()
                .zip(&b.vector)
                .zip(&c.vector)
                .map(|((a, b), c)| a + 0.5 * (b - c))
                .collect();
            (
                a.title.clone(),
                format!("{} {}", a.text, extra.join(" ")),
                normalised(v),
            )
        };
        index.upsert(DocumentRecord {
            key: DocKey::new("scale", format!("d{i}")),
            uri: format!("file:///scale/d{i}"),
            title,
            version: "1".into(),
            modified_at: None,
            attributes: Default::default(),
            acl: Acl::new(groups(i), []),
            content_hash: format!("{i}"),
            chunks: vec![ChunkRecord {
                ord: 0,
                span: 0..text.len(),
                page: None,
                heading_path: Vec::new(),
                hash: format!("{i}"),
                text,
                vector,
            }],
        })?;
        if (i + 1) % 50_000 == 0 || i + 1 == n as u64 {
            index.commit(Default::default())?;
            eprint!("\r{n}: {} chunks written", i + 1);
        }
    }
    eprintln!();
    println!(
        "{n}: index built in {:.0} s ({} segments)",
        t.elapsed().as_secs_f64(),
        Backend::stats(&index).segments
    );
    Ok(())
}

fn scope(group: &str) -> AclScope {
    let token = format!("tok-{group}");
    let store = IdentityStore::new(
        vec![IdentitySpec {
            id: format!("user-{group}"),
            groups: vec![group.to_string()],
            token_sha256: Some(hex::encode(token_hash(&token))),
            ..Default::default()
        }],
        vec![],
    );
    authorize(&store.authenticate_token(&token).expect("token")).expect("scope")
}

fn main() -> anyhow::Result<()> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let sizes: Vec<usize> = arg("--sizes")
        .unwrap_or_else(|| "10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let nq: usize = arg("--queries").and_then(|s| s.parse().ok()).unwrap_or(200);
    let root = arg("--dir").map_or_else(|| repo.join("target/tune/scale"), PathBuf::from);
    let source = arg("--from").map_or_else(|| repo.join("target/tune/index"), PathBuf::from);
    let cache =
        arg("--embed-cache").map_or_else(|| repo.join("target/tune/embed.cache"), PathBuf::from);

    let ecfg = EmbedderConfig {
        model_id: "sentence-transformers/all-MiniLM-L6-v2".into(),
        model_dir: repo.join("models/all-MiniLM-L6-v2"),
        onnxruntime_lib: repo.join("models/onnxruntime/libonnxruntime.so.1.31.1"),
        max_length: 256,
        batch_size: 32,
        threads: 2,
    };
    let model: Arc<dyn Embedder> = Arc::new(FastEmbedder::load(&ecfg)?);
    let embedder: Arc<dyn Embedder> = Arc::new(CachedEmbedder::open(model.clone(), &cache)?);
    let data = repo.join("../shared/data/scifact");
    let qrels = eval::load_qrels(&data.join("qrels/train.tsv"))?;
    let queries: Vec<String> = eval::load_queries(&data.join("queries.jsonl"))?
        .into_iter()
        .filter(|q| qrels.contains_key(&q.id))
        .take(nq)
        .map(|q| q.text)
        .collect();
    let vectors: Vec<Vec<f32>> = queries
        .iter()
        .map(|q| embedder.embed_query(q))
        .collect::<Result<_, _>>()?;
    let mut t_embed: Vec<Duration> = queries
        .iter()
        .map(|q| {
            let t = Instant::now();
            model.embed_query(q).map(|_| t.elapsed())
        })
        .collect::<Result<_, _>>()?;
    t_embed.sort();
    println!(
        "query embedding alone: p50 {:.2} ms ({} queries)",
        pct(&t_embed, 0.5),
        queries.len()
    );

    let mut real: Option<Vec<Base>> = None;
    println!(
        "\n| chunks | scope | hybrid p50 ms | hybrid p99 ms | BM25 p50 ms | dense p50 ms | RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|");
    for &n in &sizes {
        let dir = root.join(n.to_string());
        if !dir.join("meta.json").exists() {
            if real.is_none() {
                real = Some(base(&source)?);
            }
            build(&dir, real.as_deref().unwrap_or_default(), n)?;
        }
        let index = Arc::new(Index::open(&dir, embedder.model_id(), embedder.dim())?);
        let retriever = Retriever::new(index.clone(), embedder.clone(), RetrievalConfig::default());
        // Load every segment, then wait for their graphs.
        let everyone = scope("all");
        retriever.search_embedded(
            &everyone,
            &queries[0],
            Some(vectors[0].clone()),
            Mode::Dense,
            &SearchFilter::default(),
            10,
        )?;
        let t = Instant::now();
        while index.dense_graphs().1 > 0 {
            std::thread::sleep(Duration::from_millis(500));
        }
        let (graphs, _) = index.dense_graphs();
        if graphs > 0 {
            println!(
                "{n}: {graphs} graphs ready after {:.0} s more",
                t.elapsed().as_secs_f64()
            );
        }
        for (name, group) in [("100%", "all"), ("10%", "ten"), ("1%", "one")] {
            let s = scope(group);
            let time = |mode: Mode| -> anyhow::Result<Vec<Duration>> {
                let mut out = Vec::new();
                for (q, v) in queries.iter().zip(&vectors) {
                    let t = Instant::now();
                    retriever.search_embedded(
                        &s,
                        q,
                        Some(v.clone()),
                        mode,
                        &SearchFilter::default(),
                        10,
                    )?;
                    out.push(t.elapsed());
                }
                out.sort();
                Ok(out)
            };
            let hybrid = time(Mode::Hybrid)?;
            let bm25 = time(Mode::Bm25)?;
            let dense = time(Mode::Dense)?;
            println!(
                "| {n} | {name} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} |",
                pct(&hybrid, 0.5),
                pct(&hybrid, 0.99),
                pct(&bm25, 0.5),
                pct(&dense, 0.5),
                rss_mib()
            );
        }
    }
    Ok(())
}
