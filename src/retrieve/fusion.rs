//! Rank fusion over documents. Each leg ranks chunks; fusion collapses every leg to documents
//! first (a document ranks where its best chunk ranks), so a document whose abstract matches
//! BM25 in one chunk and the embedding in another still gets the agreement boost. The chunk
//! that represents a document is its best-ranked chunk in any leg.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use crate::index::ChunkAddr;

use crate::index::Scored;

/// One leg: chunks in rank order and the document key of each.
#[derive(Clone, Copy)]
pub struct Leg<'a> {
    pub hits: &'a [Scored],
    /// Document identity of each chunk within one snapshot (see `Snapshot::doc_ids`).
    pub keys: &'a [u64],
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fused {
    /// The chunk that represents the document.
    pub addr: ChunkAddr,
    pub score: f32,
    /// 1-based document rank in each leg (same order as the inputs); at most two legs.
    pub ranks: [Option<u32>; 2],
}

/// Per leg: (document key, chunk, chunk score, 1-based document rank), best chunk per document.
fn collapse(leg: &Leg<'_>) -> Vec<(u64, Scored, u32)> {
    let mut seen = HashSet::default();
    let mut out = Vec::new();
    for (s, k) in leg.hits.iter().zip(leg.keys) {
        if seen.insert(*k) {
            out.push((*k, *s, out.len() as u32 + 1));
        }
    }
    out
}

/// Score statistics of one leg's documents (each at its best chunk).
#[derive(Debug, Clone, Copy)]
struct LegStats {
    min: f32,
    max: f32,
    sd: f32,
}

impl LegStats {
    fn of(docs: &[(u64, Scored, u32)]) -> Self {
        let scores = || docs.iter().map(|d| d.1.score);
        let len = docs.len().max(1) as f32;
        let mean = scores().sum::<f32>() / len;
        Self {
            min: scores().fold(f32::INFINITY, f32::min),
            max: scores().fold(f32::NEG_INFINITY, f32::max),
            sd: (scores().map(|s| (s - mean) * (s - mean)).sum::<f32>() / len).sqrt(),
        }
    }
}

/// Combines legs with `weigh(leg, doc rank, chunk score, the leg's statistics)` summed per
/// document.
fn fuse(legs: &[Leg<'_>], weigh: impl Fn(usize, u32, f32, &LegStats) -> f32) -> Vec<Fused> {
    let mut by_doc: HashMap<u64, (Fused, u32)> = HashMap::default();
    for (li, leg) in legs.iter().enumerate().take(2) {
        let docs = collapse(leg);
        let stats = LegStats::of(&docs);
        for (key, s, rank) in &docs {
            let w = weigh(li, *rank, s.score, &stats);
            let e = by_doc.entry(*key).or_insert((
                Fused {
                    addr: s.addr,
                    score: 0.0,
                    ranks: [None, None],
                },
                u32::MAX,
            ));
            e.0.score += w;
            e.0.ranks[li] = Some(*rank);
            if *rank < e.1 {
                e.0.addr = s.addr;
                e.1 = *rank;
            }
        }
    }
    let mut out: Vec<Fused> = by_doc.into_values().map(|(f, _)| f).collect();
    out.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| best_rank(a).cmp(&best_rank(b)))
            .then_with(|| a.addr.cmp(&b.addr))
    });
    out
}

fn best_rank(f: &Fused) -> u32 {
    f.ranks.iter().flatten().copied().min().unwrap_or(u32::MAX)
}

/// Reciprocal rank fusion: score = Σ 1 / (k + document rank). Ties are broken by the best single
/// rank, then by address, so results are deterministic.
pub fn rrf(legs: &[Leg<'_>], k: f32) -> Vec<Fused> {
    fuse(legs, |_, rank, _, _| 1.0 / (k + rank as f32))
}

/// How [`convex`] puts each leg's document scores on one scale. Both map a leg's lowest
/// candidate to 0, so a document missing from a leg gets what the leg's last candidate gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreNorm {
    /// `(s - min) / (max - min)`: every leg spans 0..1.
    MinMax,
    /// `(s - min) / standard deviation`: a leg whose top stands out from its candidates
    /// (a confident leg) weighs more than one whose candidates all score alike.
    Std,
}

/// Convex combination of normalised document scores (a document scores as its best chunk):
/// `alpha * bm25 + (1 - alpha) * dense`; a document missing from a leg gets 0 for it.
/// Normalisation is over the scoped candidates only.
pub fn convex(bm25: Leg<'_>, dense: Leg<'_>, alpha: f32, norm: ScoreNorm) -> Vec<Fused> {
    fuse(&[bm25, dense], |leg, _, score, st| {
        let n = match norm {
            ScoreNorm::MinMax if st.max > st.min => (score - st.min) / (st.max - st.min),
            ScoreNorm::Std if st.sd > 0.0 => (score - st.min) / st.sd,
            ScoreNorm::MinMax | ScoreNorm::Std => 1.0,
        };
        if leg == 0 {
            alpha * n
        } else {
            (1.0 - alpha) * n
        }
    })
}

/// A document-level leg's hits (one per document, in rank order, each addressed by some chunk
/// of its document) re-addressed to the document's best chunk in the first of `chunk_legs`
/// that holds it, so the chunk that represents a document is one that matches; a document no
/// chunk leg holds keeps its own address. Scores and order are the document leg's.
pub fn represented(docs: Leg<'_>, chunk_legs: &[Leg<'_>]) -> Vec<Scored> {
    let mut best: HashMap<u64, ChunkAddr> = HashMap::default();
    for leg in chunk_legs {
        let mut seen = HashSet::default();
        for (s, k) in leg.hits.iter().zip(leg.keys) {
            if seen.insert(*k) {
                best.entry(*k).or_insert(s.addr);
            }
        }
    }
    docs.hits
        .iter()
        .zip(docs.keys)
        .map(|(s, k)| Scored {
            addr: best.get(k).copied().unwrap_or(s.addr),
            score: s.score,
        })
        .collect()
}

/// A single leg collapsed to documents, keeping the leg's score.
pub fn single(leg: Leg<'_>) -> Vec<Fused> {
    collapse(&leg)
        .into_iter()
        .map(|(_, s, rank)| Fused {
            addr: s.addr,
            score: s.score,
            ranks: [Some(rank), None],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(doc: u32, score: f32) -> Scored {
        Scored {
            addr: ChunkAddr(doc as u64),
            score,
        }
    }

    /// Chunk n belongs to document n / 10.
    fn keys(hits: &[Scored]) -> Vec<u64> {
        hits.iter().map(|h| h.addr.0 / 10).collect()
    }

    fn rrf2(a: &[Scored], b: &[Scored]) -> Vec<Fused> {
        let (ka, kb) = (keys(a), keys(b));
        rrf(
            &[Leg { hits: a, keys: &ka }, Leg { hits: b, keys: &kb }],
            60.0,
        )
    }

    #[test]
    fn agreement_beats_single_leg() {
        let a = [s(10, 0.0), s(20, 0.0), s(30, 0.0)];
        let b = [s(30, 0.0), s(40, 0.0), s(10, 0.0)];
        let f = rrf2(&a, &b);
        let order: Vec<u32> = f.iter().map(|x| x.addr.0 as u32).collect();
        assert_eq!(order, [10, 30, 20, 40]);
        assert_eq!(f[0].ranks, [Some(1), Some(3)]);
        assert_eq!(f[3].ranks, [None, Some(2)]);
        assert!((f[0].score - (1.0 / 61.0 + 1.0 / 63.0)).abs() < 1e-6);
    }

    #[test]
    fn documents_fuse_across_their_chunks() {
        // Document d1 is first in BM25 through chunk 11 and first in dense through chunk 12.
        let a = [s(11, 0.0), s(20, 0.0), s(12, 0.0)];
        let b = [s(12, 0.0), s(20, 0.0)];
        let f = rrf2(&a, &b);
        assert_eq!(f.len(), 2, "one result per document");
        assert_eq!(f[0].ranks, [Some(1), Some(1)]);
        assert_eq!(
            f[0].addr.0 as u32, 11,
            "best-ranked chunk represents the document"
        );
        assert_eq!(f[1].ranks, [Some(2), Some(2)]);
        let ka = keys(&a);
        let single = single(Leg {
            hits: &a,
            keys: &ka,
        });
        assert_eq!(
            single.iter().map(|x| x.addr.0 as u32).collect::<Vec<_>>(),
            [11, 20]
        );
    }

    #[test]
    fn convex_weights_normalised_scores() {
        let bm25 = [s(10, 10.0), s(20, 5.0), s(30, 0.0)];
        let dense = [s(30, 0.9), s(10, 0.5)];
        let (kb, kd) = (keys(&bm25), keys(&dense));
        let legs = (
            Leg {
                hits: &bm25,
                keys: &kb,
            },
            Leg {
                hits: &dense,
                keys: &kd,
            },
        );
        let f = convex(legs.0, legs.1, 0.5, ScoreNorm::MinMax);
        let got: Vec<(u32, f32)> = f.iter().map(|x| (x.addr.0 as u32, x.score)).collect();
        assert_eq!(got, [(10, 0.5), (30, 0.5), (20, 0.25)]);
        assert_eq!(f[0].ranks, [Some(1), Some(2)]);
        let only_bm25 = convex(legs.0, legs.1, 1.0, ScoreNorm::MinMax);
        assert_eq!(
            only_bm25
                .iter()
                .take(3)
                .map(|x| x.addr.0 as u32)
                .collect::<Vec<_>>(),
            [10, 20, 30]
        );
    }

    #[test]
    fn a_document_leg_is_represented_by_its_best_matching_chunk() {
        // Documents 1, 2, 3 ranked by whole-document scores, each addressed by its first chunk.
        let docs = [s(10, 9.0), s(20, 8.0), s(30, 7.0)];
        let bm25 = [s(12, 5.0), s(11, 4.0)];
        let dense = [s(23, 0.9), s(14, 0.8)];
        let (kd, kb, kv) = (keys(&docs), keys(&bm25), keys(&dense));
        let leg = |hits, keys| Leg { hits, keys };
        let got = represented(leg(&docs, &kd), &[leg(&bm25, &kb), leg(&dense, &kv)]);
        let addrs: Vec<u64> = got.iter().map(|h| h.addr.0).collect();
        assert_eq!(
            addrs,
            [12, 23, 30],
            "BM25's best chunk, else dense's, else its own"
        );
        let scores: Vec<f32> = got.iter().map(|h| h.score).collect();
        assert_eq!(
            scores,
            [9.0, 8.0, 7.0],
            "the document leg's scores and order"
        );
    }

    proptest! {
        #[test]
        fn fused_is_the_union_of_documents(
            a in prop::collection::hash_set(0u32..60, 0..20),
            b in prop::collection::hash_set(0u32..60, 0..20),
        ) {
            let la: Vec<Scored> = a.iter().map(|&d| s(d, 0.0)).collect();
            let lb: Vec<Scored> = b.iter().map(|&d| s(d, 0.0)).collect();
            let f = rrf2(&la, &lb);
            let got: std::collections::BTreeSet<u32> = f.iter().map(|x| x.addr.0 as u32 / 10).collect();
            let want: std::collections::BTreeSet<u32> = a.union(&b).map(|d| d / 10).collect();
            prop_assert_eq!(f.len(), want.len());
            prop_assert_eq!(got, want);
            for w in f.windows(2) {
                prop_assert!(w[0].score >= w[1].score);
            }
        }
    }
}
