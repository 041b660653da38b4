//! The filtered HNSW of `src/index/ann.rs` against the exact int8 scan the dense leg runs today,
//! on synthetic clustered vectors (384 dimensions, normalised; 20 clusters with noise, queries
//! drawn from the same clusters — not real MiniLM vectors, which would need 10⁶ embeddings), at
//! several sizes and with filters admitting
//! 100%, 10% and 1% of the vectors (a scope: every 10th / 100th doc). Reported per case: build
//! time and graph memory; exact-scan p50; HNSW p50/p99 and recall@10 (the HNSW candidates
//! rescored exactly, as the dense leg rescores its candidates) against the exact f32 top 10.
//! Not a test: run it with
//!
//!     cargo bench --bench ann -- [--sizes 10000,100000] [--ef 64,128] [--queries 200]

use std::time::Instant;

use docent::index::ann::{Hnsw, Params, View, clustered_vectors};
use docent::index::dense::quantize;

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

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let dim = 384;
    let sizes = list("--sizes", &[10_000, 100_000]);
    let efs = list("--ef", &[64, 128]);
    let nq = list("--queries", &[200])[0];
    println!(
        "| vectors | filter | build | graph MiB | exact scan p50 | ef | HNSW p50 | HNSW p99 | recall@10 |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &sizes {
        // Queries from the same clusters as the data (not indexed): a query unrelated to every
        // cluster has no meaningful nearest neighbours.
        let mut vs = clustered_vectors(n + nq, dim, 7);
        let queries = vs.split_off(n);
        let mut values = Vec::with_capacity(n * dim);
        let mut scale = Vec::with_capacity(n);
        for v in &vs {
            let q = quantize(v);
            values.extend_from_slice(q.values());
            scale.push(q.scale());
        }
        let view = View {
            dim,
            values: &values,
            scale: &scale,
        };
        let t = Instant::now();
        let g = Hnsw::build(view, Params::default());
        let build = t.elapsed().as_secs_f64();
        for (label, every) in [("100%", 1u32), ("10%", 10), ("1%", 100)] {
            let allowed = |d: u32| d.is_multiple_of(every);
            // Exact: the int8 scan over the admitted docs, then f32 top 10 (ground truth).
            let mut scan_ms = Vec::new();
            let mut truth = Vec::new();
            for q in &queries {
                let qq = quantize(q);
                let t = Instant::now();
                let mut best: Vec<(i32, u32)> = (0..n as u32)
                    .filter(|d| allowed(*d))
                    .map(|d| {
                        let v = &values[d as usize * dim..(d as usize + 1) * dim];
                        (
                            v.iter()
                                .zip(qq.values())
                                .map(|(a, b)| *a as i32 * *b as i32)
                                .sum(),
                            d,
                        )
                    })
                    .collect();
                let nth = 40.min(best.len() - 1);
                best.select_nth_unstable_by(nth, |a, b| b.0.cmp(&a.0));
                scan_ms.push(t.elapsed().as_secs_f64() * 1e3);
                let mut exact: Vec<(f32, u32)> = (0..n as u32)
                    .filter(|d| allowed(*d))
                    .map(|d| (dot(q, &vs[d as usize]), d))
                    .collect();
                exact.sort_by(|a, b| b.0.total_cmp(&a.0));
                truth.push(exact.into_iter().take(10).map(|x| x.1).collect::<Vec<_>>());
            }
            scan_ms.sort_by(f64::total_cmp);
            for &ef in &efs {
                let mut ms = Vec::new();
                let mut recall = 0.0;
                for (q, want) in queries.iter().zip(&truth) {
                    let qq = quantize(q);
                    let t = Instant::now();
                    let mut got: Vec<(f32, u32)> = g
                        .search(view, qq.values(), qq.scale(), ef, &allowed)
                        .into_iter()
                        .map(|(_, d)| (dot(q, &vs[d as usize]), d))
                        .collect();
                    got.sort_by(|a, b| b.0.total_cmp(&a.0));
                    got.truncate(10);
                    ms.push(t.elapsed().as_secs_f64() * 1e3);
                    recall += want
                        .iter()
                        .filter(|d| got.iter().any(|g| g.1 == **d))
                        .count() as f64
                        / want.len() as f64;
                }
                ms.sort_by(f64::total_cmp);
                println!(
                    "| {n} | {label} | {build:.1} s | {:.1} | {:.2} ms | {ef} | {:.3} ms | {:.3} ms | {:.3} |",
                    g.memory_bytes() as f64 / (1 << 20) as f64,
                    pct(&scan_ms, 0.5),
                    pct(&ms, 0.5),
                    pct(&ms, 0.99),
                    recall / queries.len() as f64,
                );
            }
        }
    }
}
