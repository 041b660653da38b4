//! Rank fusion. Pure functions over ranked lists of addresses.

use std::collections::HashMap;

use tantivy::DocAddress;

use crate::index::Scored;

#[derive(Debug, Clone, PartialEq)]
pub struct Fused {
    pub addr: DocAddress,
    pub score: f32,
    /// 1-based rank in each input list (same order as the inputs); at most two legs.
    pub ranks: [Option<u32>; 2],
}

/// Reciprocal rank fusion: score = Σ 1 / (k + rank). Ties are broken by the best single rank,
/// then by address, so results are deterministic.
pub fn rrf(lists: &[&[Scored]], k: f32) -> Vec<Fused> {
    let mut by_addr: HashMap<DocAddress, Fused> = HashMap::new();
    for (leg, list) in lists.iter().enumerate().take(2) {
        for (i, s) in list.iter().enumerate() {
            let rank = i as u32 + 1;
            let e = by_addr.entry(s.addr).or_insert(Fused {
                addr: s.addr,
                score: 0.0,
                ranks: [None, None],
            });
            e.score += 1.0 / (k + rank as f32);
            e.ranks[leg] = Some(rank);
        }
    }
    let mut out: Vec<Fused> = by_addr.into_values().collect();
    sort(&mut out);
    out
}

fn best_rank(f: &Fused) -> u32 {
    f.ranks.iter().flatten().copied().min().unwrap_or(u32::MAX)
}

/// Convex combination of min-max normalised leg scores: `alpha * bm25 + (1 - alpha) * dense`; a
/// chunk missing from a leg gets 0 for it. Normalisation is over the scoped candidates only.
pub fn convex(bm25: &[Scored], dense: &[Scored], alpha: f32) -> Vec<Fused> {
    fn normalised(list: &[Scored]) -> impl Iterator<Item = (usize, &Scored, f32)> {
        let max = list
            .iter()
            .map(|s| s.score)
            .fold(f32::NEG_INFINITY, f32::max);
        let min = list.iter().map(|s| s.score).fold(f32::INFINITY, f32::min);
        let range = max - min;
        list.iter().enumerate().map(move |(i, s)| {
            (
                i,
                s,
                if range > 0.0 {
                    (s.score - min) / range
                } else {
                    1.0
                },
            )
        })
    }
    let mut by_addr: HashMap<DocAddress, Fused> = HashMap::new();
    for (leg, list, w) in [(0, bm25, alpha), (1, dense, 1.0 - alpha)] {
        for (i, s, n) in normalised(list) {
            let e = by_addr.entry(s.addr).or_insert(Fused {
                addr: s.addr,
                score: 0.0,
                ranks: [None, None],
            });
            e.score += w * n;
            e.ranks[leg] = Some(i as u32 + 1);
        }
    }
    let mut out: Vec<Fused> = by_addr.into_values().collect();
    sort(&mut out);
    out
}

fn sort(out: &mut [Fused]) {
    out.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| best_rank(a).cmp(&best_rank(b)))
            .then_with(|| {
                (a.addr.segment_ord, a.addr.doc_id).cmp(&(b.addr.segment_ord, b.addr.doc_id))
            })
    });
}

/// A single leg, as fused results (score kept from the leg).
pub fn single(list: &[Scored]) -> Vec<Fused> {
    list.iter()
        .enumerate()
        .map(|(i, s)| Fused {
            addr: s.addr,
            score: s.score,
            ranks: [Some(i as u32 + 1), None],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(doc: u32) -> Scored {
        Scored {
            addr: DocAddress::new(0, doc),
            score: 0.0,
        }
    }

    #[test]
    fn agreement_beats_single_leg() {
        let a = [s(1), s(2), s(3)];
        let b = [s(3), s(4), s(1)];
        let f = rrf(&[&a, &b], 60.0);
        let order: Vec<u32> = f.iter().map(|x| x.addr.doc_id).collect();
        assert_eq!(order, [1, 3, 2, 4]);
        assert_eq!(f[0].ranks, [Some(1), Some(3)]);
        assert_eq!(f[3].ranks, [None, Some(2)]);
        assert!((f[0].score - (1.0 / 61.0 + 1.0 / 63.0)).abs() < 1e-6);
    }

    #[test]
    fn convex_weights_normalised_scores() {
        let sc = |d: u32, score: f32| Scored {
            addr: DocAddress::new(0, d),
            score,
        };
        let bm25 = [sc(1, 10.0), sc(2, 5.0), sc(3, 0.0)];
        let dense = [sc(3, 0.9), sc(1, 0.5)];
        let f = convex(&bm25, &dense, 0.5);
        let got: Vec<(u32, f32)> = f.iter().map(|x| (x.addr.doc_id, x.score)).collect();
        assert_eq!(got, [(1, 0.5), (3, 0.5), (2, 0.25)]);
        assert_eq!(f[0].ranks, [Some(1), Some(2)]);
        // alpha = 1 is BM25 order.
        let only_bm25: Vec<u32> = convex(&bm25, &dense, 1.0)
            .iter()
            .take(3)
            .map(|x| x.addr.doc_id)
            .collect();
        assert_eq!(only_bm25, [1, 2, 3]);
    }

    proptest! {
        #[test]
        fn fused_is_the_union_without_duplicates(
            a in prop::collection::hash_set(0u32..50, 0..20),
            b in prop::collection::hash_set(0u32..50, 0..20),
        ) {
            let la: Vec<Scored> = a.iter().map(|&d| s(d)).collect();
            let lb: Vec<Scored> = b.iter().map(|&d| s(d)).collect();
            let f = rrf(&[&la, &lb], 60.0);
            let got: std::collections::BTreeSet<u32> = f.iter().map(|x| x.addr.doc_id).collect();
            let want: std::collections::BTreeSet<u32> = a.union(&b).copied().collect();
            prop_assert_eq!(f.len(), want.len());
            prop_assert_eq!(got, want);
            for w in f.windows(2) {
                prop_assert!(w[0].score >= w[1].score);
            }
        }
    }
}
