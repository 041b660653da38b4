//! The dense leg at scale: the filtered HNSW of `src/index/ann.rs` against the exact int8 scan,
//! on real all-MiniLM-L6-v2 vectors, with scopes admitting 100%, 10% and 1% of the chunks.
//!
//! Data: the passage vectors of an embedding cache (`target/tune/embed.cache`, written by
//! `scripts/train-ranker.sh` / `docent eval`: SciFact and the handbook chunks, ~23k real
//! vectors), then, past that, synthetic vectors `normalise(a + 0.5 (b − c))` for random real
//! vectors a, b, c: a perturbation drawn from the real vectors' own covariance, so the synthetic
//! points lie where real chunks lie (not in the isotropic noise that makes random vectors
//! unrealistically hard). Queries: real SciFact train questions embedded by the real model.
//! Scopes: a doc is admitted when a hash of its id falls under the percentage (uncorrelated
//! with content), or with `--correlated` the share of docs nearest one topic. Truth: the exact f32 top 10 of the admitted docs. Every method rescores its
//! int8 candidates (the best 40) in f32, as the dense leg does. Three methods: the int8 scan of
//! every admitted doc, the sign-code pass (`src/index/signs.rs`: the 2,048 admitted docs
//! nearest by Hamming distance, then the int8 scan of those), and the graph. The last columns
//! say which of them the dense leg takes for the scope (`dense::follows_a_subject` from the
//! scope's "link share" between 20% and 40%), with its p50 and recall.
//!
//! Not a test: run it with
//!
//!     cargo bench --bench ann -- [--sizes 10000,100000,1000000] [--ef 64,128 (default: the dense leg's beam for each scope)] [--queries 200]
//!         [--m 16] [--efc 128] [--threads 2] [--vectors FILE] [--scopes 100,10,1] [--no-graph]
//!         [--correlated] [--seeds 512] [--seed-count 8]
//!         [--out-of-domain]
//!
//! The cache must hold SciFact's chunks (`cargo bench --bench ranker` embeds them into it): the
//! bench stops when the questions' mean best cosine among the real vectors shows they are not
//! (questions asked of another corpus have no near neighbour; `--out-of-domain` measures that
//! case on purpose).
//!
//! `--correlated` draws each scope as the docs nearest one topic instead of at random: the
//! graph's hard case, where the docs around the query are all refused. The graph starts, as
//! the dense leg's does, from its own entry point plus the best `--seed-count` of a sample of
//! `--seeds` admitted docs (0: no seeds). "HNSW short" counts the queries where the graph
//! returned fewer candidates than its beam (the dense leg then scans instead).

use std::path::PathBuf;
use std::time::Instant;

use docent::embed::{Embedder, EmbedderConfig, FastEmbedder};
use docent::index::ann::{Hnsw, Params, View};
use docent::index::dense::quantize;
use docent::index::signs;
use docent::index::simd::{advise_huge_pages, dot_q, prefetch};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn list(name: &str, default: &[usize]) -> Vec<usize> {
    arg(name).map_or_else(
        || default.to_vec(),
        |s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
    )
}

/// The least mean best cosine between the questions and the real vectors for the questions to
/// count as asked of those vectors' corpus (SciFact questions: ~0.65 over SciFact's chunks,
/// ~0.26 over the handbook's alone).
const MIN_IN_DOMAIN: f64 = 0.45;

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
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

/// Every passage vector of an embedding cache (`docent-embed-cache v1 <model> <dim>` +
/// records of a 16-byte key and the vector), less the records in `left_out` (by key).
fn cached_vectors(
    path: &std::path::Path,
    left_out: &std::collections::HashSet<[u8; 16]>,
) -> anyhow::Result<(usize, Vec<Vec<f32>>)> {
    let bytes = std::fs::read(path)?;
    let nl = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| anyhow::anyhow!("no header"))?;
    let header = String::from_utf8_lossy(&bytes[..nl]).to_string();
    let dim: usize = header
        .split(' ')
        .nth(3)
        .and_then(|d| d.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("bad header {header}"))?;
    let vs = bytes[nl + 1..]
        .chunks_exact(16 + 4 * dim)
        .filter(|r| !left_out.contains(&<[u8; 16]>::try_from(&r[..16]).expect("16 bytes")))
        .map(|r| {
            r[16..]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        })
        .collect();
    Ok((dim, vs))
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The best 40 int8 candidates rescored in f32, top 10 kept (what the dense leg does).
fn rescore(q: &[f32], vs: &[Vec<f32>], mut cands: Vec<(f32, u32)>) -> Vec<u32> {
    cands.sort_by(|a, b| b.0.total_cmp(&a.0));
    cands.truncate(40);
    let mut exact: Vec<(f32, u32)> = cands
        .into_iter()
        .map(|(_, d)| (dot(q, &vs[d as usize]), d))
        .collect();
    exact.sort_by(|a, b| b.0.total_cmp(&a.0));
    exact.into_iter().take(10).map(|x| x.1).collect()
}

fn main() -> anyhow::Result<()> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let sizes = list("--sizes", &[10_000, 100_000]);
    let efs = list("--ef", &[0]);
    let seed_samples = list("--seeds", &[docent::index::dense::SEED_SAMPLE]);
    let seed_count = list("--seed-count", &[docent::index::dense::SEEDS])[0];
    let nq = list("--queries", &[200])[0];
    let defaults = Params::default();
    let params = Params {
        m: list("--m", &[defaults.m])[0],
        m0: list("--m0", &[defaults.m0])[0],
        ef_construction: list("--efc", &[defaults.ef_construction])[0],
        threads: list("--threads", &[defaults.threads])[0],
        ..defaults
    };
    let cache =
        arg("--vectors").map_or_else(|| repo.join("target/tune/embed.cache"), PathBuf::from);
    // The cache also holds the vectors of the questions it embedded (SciFact's, the QA
    // sets'), keyed apart: left out, so that no query finds its own copy among the vectors
    // (a review: recall was measured with each query's exact copy in the corpus).
    let data = repo.join("../shared/data/scifact");
    let mut questions: Vec<String> = docent::eval::load_queries(&data.join("queries.jsonl"))?
        .into_iter()
        .map(|q| q.text)
        .collect();
    for set in std::fs::read_dir(repo.join("benches/qa"))? {
        let path = set?.path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            for line in std::fs::read_to_string(&path)?.lines() {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
                    && let Some(q) = v["question"].as_str()
                {
                    questions.push(q.to_string());
                }
            }
        }
    }
    let left_out: std::collections::HashSet<[u8; 16]> = questions
        .iter()
        .map(|q| {
            use sha2::Digest;
            let d = sha2::Sha256::digest(format!("\0query\0{q}").as_bytes());
            <[u8; 16]>::try_from(&d[..16]).expect("16 bytes")
        })
        .collect();
    let (dim, mut real) = cached_vectors(&cache, &left_out)?;
    // A fixed shuffle, so a size below the real count is a sample of every corpus.
    let mut order: Vec<usize> = (0..real.len()).collect();
    order.sort_by_key(|i| mix(*i as u64));
    real = order.into_iter().map(|i| real[i].clone()).collect();
    eprintln!(
        "{} real {dim}-dimension vectors from {}",
        real.len(),
        cache.display()
    );

    let embedder = FastEmbedder::load(&EmbedderConfig {
        model_id: "sentence-transformers/all-MiniLM-L6-v2".into(),
        model_dir: repo.join("models/all-MiniLM-L6-v2"),
        onnxruntime_lib: repo.join("models/onnxruntime/libonnxruntime.so.1.31.1"),
        max_length: 256,
        batch_size: 32,
        threads: 2,
    })?;
    let queries: Vec<Vec<f32>> = docent::eval::load_queries(&data.join("queries.jsonl"))?
        .into_iter()
        .take(nq)
        .map(|q| embedder.embed_query(&q.text))
        .collect::<Result<_, _>>()?;
    drop(embedder);
    eprintln!("{} real query vectors", queries.len());
    // The questions must have their corpus among the real vectors: SciFact questions over a
    // cache holding only the handbook's chunks have no near neighbour anywhere (best cosine
    // ~0.26 against ~0.65 with SciFact's chunks), every candidate is about as far as the
    // next, and recall measures only questions the corpus knows nothing of. Session 43's
    // figures were taken so
    // (benches/RESULTS.md, session 52). `--out-of-domain` measures that case on purpose.
    let best_real: f64 = queries
        .iter()
        .map(|q| f64::from(real.iter().map(|v| dot(q, v)).fold(f32::MIN, f32::max)))
        .sum::<f64>()
        / queries.len().max(1) as f64;
    println!(
        "queries' best cosine among the {} real vectors: mean {best_real:.3}",
        real.len()
    );
    let out_of_domain = std::env::args().any(|a| a == "--out-of-domain");
    anyhow::ensure!(
        out_of_domain || best_real >= MIN_IN_DOMAIN,
        "the real vectors in {} do not hold the questions' corpus (mean best cosine \
         {best_real:.3} < {MIN_IN_DOMAIN}): run `cargo bench --bench ranker` first, which embeds \
         SciFact into that cache, or pass --out-of-domain to measure questions without near \
         neighbours",
        cache.display()
    );

    println!(
        "params: m {} m0 {} ef_construction {} threads {}\n",
        params.m, params.m0, params.ef_construction, params.threads
    );
    let with_graph = !std::env::args().any(|a| a == "--no-graph");
    println!(
        "| vectors | scope | admitted | build | graph MiB | RSS MiB | scan p50 | scan recall | signs p50 | signs recall | signs p50, seen before | its recall | ef | seed sample | HNSW p50 | HNSW p99 | HNSW recall@10 | HNSW short | link share | dense leg takes | its p50 | its recall@10 |"
    );
    println!(
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let synth_seed = 0x5_1c7u64;
    for &n in &sizes {
        let mut vs: Vec<Vec<f32>> = real.iter().take(n).cloned().collect();
        let r = real.len() as u64;
        let mut i = 0u64;
        while vs.len() < n {
            let (a, b, c) = (
                mix(synth_seed ^ (3 * i)) % r,
                mix(synth_seed ^ (3 * i + 1)) % r,
                mix(synth_seed ^ (3 * i + 2)) % r,
            );
            let (a, b, c) = (&real[a as usize], &real[b as usize], &real[c as usize]);
            vs.push(normalised(
                (0..dim).map(|j| a[j] + 0.5 * (b[j] - c[j])).collect(),
            ));
            i += 1;
        }
        let mut values: Vec<i8> = vec![0; n * dim];
        advise_huge_pages(&mut values);
        let mut scale = Vec::with_capacity(n);
        for (v, out) in vs.iter().zip(values.chunks_exact_mut(dim)) {
            let q = quantize(v);
            out.copy_from_slice(&q.to_i8());
            scale.push(q.scale());
        }
        let view = View {
            dim,
            values: &values,
            scale: &scale,
        };
        let words = signs::words(dim);
        // As the dense leg keeps them: on huge pages where the kernel allows.
        let mut codes = vec![0u64; n * words];
        advise_huge_pages(&mut codes);
        for (v, c) in vs.iter().zip(codes.chunks_exact_mut(words)) {
            c.copy_from_slice(&signs::encode(v));
        }
        let codes = std::sync::Arc::new(codes);
        // `--graph-cache DIR`: reuse a graph built earlier with the same data and parameters
        // (its build time is then the one recorded with it).
        let cached = arg("--graph-cache").map(|d| {
            PathBuf::from(d).join(format!(
                "ann-{n}-m{}-m0-{}-efc{}.graph",
                params.m, params.m0, params.ef_construction
            ))
        });
        let built = with_graph.then(|| {
            match cached
                .as_ref()
                .and_then(|p| {
                    Some((
                        std::fs::read(p).ok()?,
                        std::fs::read_to_string(p.with_extension("secs")).ok()?,
                    ))
                })
                .and_then(|(b, secs)| {
                    Some((Hnsw::from_bytes(&b)?, secs.trim().parse::<f64>().ok()?))
                }) {
                Some(hit) => hit,
                None => {
                    let t = Instant::now();
                    let g = Hnsw::build(view, params);
                    let build = t.elapsed().as_secs_f64();
                    if let Some(p) = &cached {
                        std::fs::create_dir_all(p.parent().expect("a directory"))
                            .expect("graph cache directory");
                        std::fs::write(p, g.to_bytes()).expect("graph cache");
                        std::fs::write(p.with_extension("secs"), build.to_string())
                            .expect("graph cache");
                    }
                    (g, build)
                }
            }
        });
        let graph_mib = built
            .as_ref()
            .map_or(0.0, |(g, _)| g.memory_bytes() as f64 / (1 << 20) as f64);
        let build = built.as_ref().map_or(0.0, |(_, b)| *b);
        if let Some((g, _)) = &built {
            eprintln!(
                "{n}: {} nodes without an incoming level-0 link",
                g.unreachable_nodes()
            );
        }
        // Exact f32 similarities of every query to every doc, once.
        let sims: Vec<Vec<f32>> = queries
            .iter()
            .map(|q| vs.iter().map(|v| dot(q, v)).collect())
            .collect();
        let scopes = list("--scopes", &[100, 10, 1]);
        // `--correlated`: a scope holds the docs nearest one topic (a real vector), as a
        // department's documents share a subject, instead of docs drawn at random.
        let topic: Option<Vec<f32>> = std::env::args()
            .any(|a| a == "--correlated")
            .then(|| vs.iter().map(|v| dot(&real[real.len() / 2], v)).collect());
        for percent in scopes.iter().map(|p| *p as u64) {
            let label = format!(
                "{percent}%{}",
                if topic.is_some() { " (topic)" } else { "" }
            );
            let admit: Vec<bool> = match &topic {
                None => (0..n as u64)
                    .map(|d| mix(d ^ 0xAC1) % 100 < percent)
                    .collect(),
                Some(sim) => {
                    let mut sorted = sim.clone();
                    sorted.sort_by(|a, b| b.total_cmp(a));
                    let cut = sorted[(n * percent as usize / 100).clamp(1, n) - 1];
                    sim.iter().map(|&x| x >= cut).collect()
                }
            };
            let allowed = |d: u32| admit[d as usize];
            let admitted: Vec<u32> = (0..n as u32).filter(|d| allowed(*d)).collect();
            let mut scope_bits = vec![0u64; n.div_ceil(64)];
            for &d in &admitted {
                scope_bits[d as usize / 64] |= 1 << (d % 64);
            }
            // Per query: the 10th best admitted similarity. A returned doc counts as a true
            // neighbour when its exact similarity reaches it (ties between equal vectors, such
            // as duplicated pages, count either way).
            let truth: Vec<(usize, f32)> = sims
                .iter()
                .map(|s| {
                    let mut t: Vec<f32> = admitted.iter().map(|&d| s[d as usize]).collect();
                    t.sort_by(|a, b| b.total_cmp(a));
                    t.truncate(10);
                    (t.len(), t.last().copied().unwrap_or(f32::INFINITY))
                })
                .collect();
            let recall_of = |qi: usize, got: &[u32], want: &(usize, f32)| {
                got.iter()
                    .filter(|&&d| sims[qi][d as usize] >= want.1 - 1e-6)
                    .count()
                    .min(want.0) as f64
                    / want.0.max(1) as f64
            };
            // The best 40 of `docs` by the int8 approximation (the dense leg's kernel).
            let int8_top = |qq: &docent::index::dense::Quantized, docs: &[u32]| {
                let mut heap: std::collections::BinaryHeap<std::cmp::Reverse<(i32, u32)>> =
                    std::collections::BinaryHeap::with_capacity(41);
                for (i, &d) in docs.iter().enumerate() {
                    if let Some(&ahead) = docs.get(i + 8) {
                        prefetch(&values[ahead as usize * dim..(ahead as usize + 1) * dim]);
                    }
                    let v = &values[d as usize * dim..(d as usize + 1) * dim];
                    let s = (dot_q(qq.values(), v) as f32 * scale[d as usize] * 1e6) as i32;
                    if heap.len() < 40 {
                        heap.push(std::cmp::Reverse((s, d)));
                    } else if heap.peek().is_some_and(|w| s > w.0.0) {
                        heap.pop();
                        heap.push(std::cmp::Reverse((s, d)));
                    }
                }
                heap.into_iter()
                    .map(|r| (r.0.0 as f32, r.0.1))
                    .collect::<Vec<_>>()
            };
            // The exact path: the int8 scan of the admitted docs.
            let mut scan_ms = Vec::new();
            let mut scan_recall = 0.0;
            let mut scan_each: Vec<(f64, f64)> = Vec::new();
            for (qi, (q, want)) in queries.iter().zip(&truth).enumerate() {
                let qq = quantize(q);
                let t = Instant::now();
                let got = rescore(q, &vs, int8_top(&qq, &admitted));
                scan_ms.push(t.elapsed().as_secs_f64() * 1e3);
                let r = recall_of(qi, &got, want);
                scan_recall += r;
                scan_each.push((*scan_ms.last().expect("pushed"), r));
            }
            scan_ms.sort_by(f64::total_cmp);
            // The sign-code pass, then the int8 scan of what it keeps (a top 10 keeps 2,048).
            let mut sign_ms = Vec::new();
            let mut sign_recall = 0.0;
            // Per query (time, recall), for the leg's choice between the paths below.
            let mut sign_each: Vec<(f64, f64)> = Vec::new();
            for (qi, (q, want)) in queries.iter().zip(&truth).enumerate() {
                let qq = quantize(q);
                let qs = signs::encode(q);
                // The dense leg masks the scope's bitset afresh for each search (not timed here).
                let bits = std::sync::Arc::new(scope_bits.clone());
                let t = Instant::now();
                let near =
                    signs::nearest(docent::threads::helpers(), &codes, words, &qs, bits, 2048);
                let got = rescore(q, &vs, int8_top(&qq, &near));
                sign_ms.push(t.elapsed().as_secs_f64() * 1e3);
                let r = recall_of(qi, &got, want);
                sign_recall += r;
                sign_each.push((*sign_ms.last().expect("pushed"), r));
            }
            sign_ms.sort_by(f64::total_cmp);
            // The same pass over the scope's compact copy, which the dense leg reads once it
            // has searched the scope before (`dense::COMPACT_MIN_ADMITTED` docs or more).
            let copy = std::sync::Arc::new(signs::Compact::new(
                &codes,
                words,
                std::sync::Arc::new(scope_bits.clone()),
            ));
            let mut copy_ms = Vec::new();
            let mut copy_recall = 0.0;
            let mut copy_each: Vec<(f64, f64)> = Vec::new();
            for (qi, (q, want)) in queries.iter().zip(&truth).enumerate() {
                let qq = quantize(q);
                let qs = signs::encode(q);
                // Timed as the leg finds the copy: the scope's hash, then the bitsets compared.
                let bits = scope_bits.clone();
                let t = Instant::now();
                std::hint::black_box(signs::scope_hash(&bits));
                assert!(std::hint::black_box(&bits) == &scope_bits);
                let near = signs::nearest_compact(docent::threads::helpers(), &copy, &qs, 2048);
                let got = rescore(q, &vs, int8_top(&qq, &near));
                copy_ms.push(t.elapsed().as_secs_f64() * 1e3);
                let r = recall_of(qi, &got, want);
                copy_recall += r;
                copy_each.push((*copy_ms.last().expect("pushed"), r));
            }
            copy_ms.sort_by(f64::total_cmp);
            // From a scope's second search on, the dense leg reads its copy (the graph is not
            // asked).
            let copied = admitted.len() >= docent::index::dense::COMPACT_MIN_ADMITTED
                && admitted.len() as f64 / n as f64 <= docent::index::dense::COMPACT_MAX_FRACTION;
            // The columns from the memory to the sign codes' recall, alike on every row.
            let scanned = format!(
                "{:.0} | {:.3} ms | {:.3} | {:.3} ms | {:.3} | {:.3} ms | {:.3}",
                rss_mib(),
                pct(&scan_ms, 0.5),
                scan_recall / queries.len() as f64,
                pct(&sign_ms, 0.5),
                sign_recall / queries.len() as f64,
                pct(&copy_ms, 0.5),
                copy_recall / queries.len() as f64,
            );
            let Some((g, _)) = &built else {
                println!(
                    "| {n} | {label} | {} | – | – | {scanned} | – | – | – | – | – | – |",
                    admitted.len(),
                );
                continue;
            };
            for (&ef, &sample) in efs
                .iter()
                .flat_map(|ef| seed_samples.iter().map(move |s| (ef, s)))
            {
                let ef = match ef {
                    0 => docent::index::dense::graph_beam(admitted.len() as f64 / n as f64),
                    ef => ef,
                };
                // `--seeds N`: every (admitted / N)-th admitted doc scored in int8, its best
                // eight given to the graph as further entry points.
                let stride = admitted.len().div_ceil(sample.max(1)).max(1);
                let mut ms = Vec::new();
                let mut recall = 0.0;
                let mut short = 0;
                // What the dense leg takes: the sign pass for a scope that follows a subject
                // (`dense::follows_a_subject`, from the share of its sampled docs' links that
                // stay in it), else the graph; time with the share's own cost.
                let fraction = admitted.len() as f64 / n as f64;
                let t = Instant::now();
                let link_share = if (docent::index::dense::ANN_MIN_FRACTION
                    ..=docent::index::dense::SUBJECT_MAX_FRACTION)
                    .contains(&fraction)
                {
                    let sample: Vec<u32> = admitted
                        .iter()
                        .step_by(
                            admitted
                                .len()
                                .div_ceil(docent::index::dense::LINK_SAMPLE)
                                .max(1),
                        )
                        .copied()
                        .collect();
                    g.admitted_link_share(&sample, &allowed)
                } else {
                    f64::NAN
                };
                let share_ms = t.elapsed().as_secs_f64() * 1e3;
                let subject = docent::index::dense::follows_a_subject(link_share, fraction);
                // Under the graph's share the leg never asks: the sign pass, or the scan for
                // a small scope.
                let below = fraction < docent::index::dense::ANN_MIN_FRACTION;
                let (takes, other) =
                    if below && admitted.len() < docent::index::dense::SIGN_MIN_ADMITTED {
                        ("scan", Some(&scan_each))
                    } else if copied {
                        ("signs (copy)", Some(&copy_each))
                    } else if below || subject {
                        ("signs", Some(&sign_each))
                    } else {
                        ("graph", None)
                    };
                let mut leg_ms = Vec::new();
                let mut leg_recall = 0.0;
                for (qi, (q, want)) in queries.iter().zip(&truth).enumerate() {
                    let qq = quantize(q);
                    if let Some(each) = other {
                        let share_ms = if below || copied { 0.0 } else { share_ms };
                        leg_ms.push(share_ms + each[qi].0);
                        leg_recall += each[qi].1;
                    }
                    let t = Instant::now();
                    let seeds: Vec<u32> = if sample == 0 {
                        Vec::new()
                    } else {
                        let picked: Vec<u32> = admitted.iter().step_by(stride).copied().collect();
                        let mut top = int8_top(&qq, &picked);
                        top.sort_by(|a, b| b.0.total_cmp(&a.0));
                        top.into_iter().take(seed_count).map(|x| x.1).collect()
                    };
                    let cands = g.search(view, qq.values(), qq.scale(), ef, &allowed, &seeds);
                    short += usize::from(cands.len() < ef.min(admitted.len()));
                    let got = rescore(q, &vs, cands);
                    ms.push(t.elapsed().as_secs_f64() * 1e3);
                    let r = recall_of(qi, &got, want);
                    if other.is_none() {
                        leg_ms.push(share_ms + ms.last().expect("pushed"));
                        leg_recall += r;
                    }
                    if r < 1.0 && std::env::var_os("ANN_DEBUG").is_some() {
                        let missed: Vec<u32> = (0..n as u32)
                            .filter(|&d| {
                                allowed(d)
                                    && sims[qi][d as usize] >= want.1 - 1e-6
                                    && !got.contains(&d)
                            })
                            .collect();
                        eprintln!(
                            "query {qi}: recall {r:.2}, missed {missed:?} (real < {})",
                            real.len()
                        );
                    }
                    recall += r;
                }
                ms.sort_by(f64::total_cmp);
                leg_ms.sort_by(f64::total_cmp);
                println!(
                    "| {n} | {label} | {} | {build:.1} s | {graph_mib:.1} | {scanned} | {ef} | {sample} | {:.3} ms | {:.3} ms | {:.3} | {short} | {link_share:.3} | {} | {:.3} ms | {:.3} |",
                    admitted.len(),
                    pct(&ms, 0.5),
                    pct(&ms, 0.99),
                    recall / queries.len() as f64,
                    takes,
                    pct(&leg_ms, 0.5),
                    leg_recall / queries.len() as f64,
                );
            }
        }
    }
    Ok(())
}
