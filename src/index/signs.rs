//! Sign codes: one bit per dimension, set where the vector's value is positive. A first pass
//! for scopes too large to scan in int8 within the latency budget and too small a share of
//! their segment for the graph's filtered search to find its neighbours (the 2–20 % band at
//! 10⁶ vectors, `benches/RESULTS.md`): the Hamming distance between two codes tracks the angle
//! between the vectors, so the docs nearest by code hold the nearest by cosine, and only those
//! are scored in int8 (then the head in f32, as on every path). 48 bytes per 384-dimension
//! vector, an eighth of the int8 copy.
//!
//! Must never: return a doc that is not among the given (admitted) docs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// 64-bit words per code of a `dim`-dimension vector.
pub fn words(dim: usize) -> usize {
    dim.div_ceil(64)
}

/// Appends the code of `v` (`words(v.len())` words) to `out`.
pub fn encode_into(v: &[f32], out: &mut Vec<u64>) {
    for chunk in v.chunks(64) {
        let mut w = 0u64;
        for (i, x) in chunk.iter().enumerate() {
            if *x > 0.0 {
                w |= 1 << i;
            }
        }
        out.push(w);
    }
}

/// The code of `v`.
pub fn encode(v: &[f32]) -> Vec<u64> {
    let mut out = Vec::with_capacity(words(v.len()));
    encode_into(v, &mut out);
    out
}

/// The docs of `docs` whose codes (`codes[d * words..]`) are nearest `q`: at least `keep` of
/// them (with every doc tied at the cut), in the order of `docs`. All of `docs` when there are
/// no more than `keep`. `dist` is scratch space.
pub fn nearest(
    codes: &[u64],
    words: usize,
    q: &[u64],
    docs: &[u32],
    keep: usize,
    dist: &mut Vec<u32>,
) -> Vec<u32> {
    if docs.len() <= keep {
        return docs.to_vec();
    }
    super::simd::hamming_many(codes, words, q, docs, dist);
    kept(docs, dist, words, keep)
}

/// Docs from which [`nearest_split`] takes its distances on two threads: a pass over fewer is
/// shorter than waking a helper is worth.
pub const SPLIT_MIN_DOCS: usize = 32_768;

/// [`nearest`], with the distances of a long list taken on two threads: this one takes the
/// first half, a helper of `pool` the second. Whichever reaches the second half first takes it,
/// and the helper's job owns what it reads: a pool whose helpers are all busy never holds the
/// caller, who then does both halves. Memory-bound: two threads take 0.55–0.58 of one's time at
/// 13–50% of 10⁶ codes (`benches/RESULTS.md`, session 26).
pub fn nearest_split<C>(
    pool: Option<&rayon::ThreadPool>,
    codes: &Arc<C>,
    words: usize,
    q: &[u64],
    docs: Vec<u32>,
    keep: usize,
) -> Vec<u32>
where
    C: AsRef<[u64]> + Send + Sync + 'static,
{
    let mut dist = Vec::new();
    let pool = match pool {
        Some(p) if docs.len() >= SPLIT_MIN_DOCS && docs.len() > keep => p,
        _ => return nearest((**codes).as_ref(), words, q, &docs, keep, &mut dist),
    };
    let docs = Arc::new(docs);
    let half = docs.len() / 2;
    let taken = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    pool.spawn({
        let (codes, docs, taken, q) = (codes.clone(), docs.clone(), taken.clone(), q.to_vec());
        move || {
            if !taken.swap(true, Ordering::AcqRel) {
                let mut out = Vec::new();
                super::simd::hamming_many((*codes).as_ref(), words, &q, &docs[half..], &mut out);
                let _ = tx.send(out);
            }
        }
    });
    let codes = (**codes).as_ref();
    super::simd::hamming_many(codes, words, q, &docs[..half], &mut dist);
    let second = |dist: &mut Vec<u32>| {
        let mut out = Vec::new();
        super::simd::hamming_many(codes, words, q, &docs[half..], &mut out);
        dist.extend_from_slice(&out);
    };
    if !taken.swap(true, Ordering::AcqRel) {
        second(&mut dist);
    } else {
        match rx.recv() {
            Ok(out) => dist.extend_from_slice(&out),
            // The helper took the half and did not finish it (it panicked): done here.
            Err(_) => second(&mut dist),
        }
    }
    kept(&docs, &dist, words, keep)
}

/// The docs whose distance (`dist[i]` for `docs[i]`) is among the `keep` smallest, ties at the
/// cut included, in the order of `docs`.
fn kept(docs: &[u32], dist: &[u32], words: usize, keep: usize) -> Vec<u32> {
    let mut hist = vec![0usize; words * 64 + 1];
    for &h in dist.iter() {
        hist[h as usize] += 1;
    }
    let mut cut = 0;
    let mut taken = 0;
    for (h, &n) in hist.iter().enumerate() {
        taken += n;
        cut = h;
        if taken >= keep {
            break;
        }
    }
    docs.iter()
        .zip(dist.iter())
        .filter(|&(_, &h)| h as usize <= cut)
        .map(|(&d, _)| d)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_hold_the_signs() {
        let v: Vec<f32> = (0..70)
            .map(|i| if i % 3 == 0 { 1.0 } else { -0.5 })
            .collect();
        let c = encode(&v);
        assert_eq!(c.len(), 2);
        for (i, x) in v.iter().enumerate() {
            assert_eq!(c[i / 64] >> (i % 64) & 1 == 1, *x > 0.0, "dimension {i}");
        }
    }

    /// A long list of docs with pseudo-random codes, every third doc admitted.
    fn long_list() -> (Vec<u64>, Vec<u32>, Vec<u64>) {
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let n = 3 * SPLIT_MIN_DOCS as u32;
        let codes: Vec<u64> = (0..2 * n).map(|_| next()).collect();
        let docs: Vec<u32> = (0..n).filter(|d| d % 3 != 1).collect();
        (codes, docs, vec![next(), next()])
    }

    #[test]
    fn the_split_pass_keeps_what_one_thread_keeps() {
        let (codes, docs, q) = long_list();
        let want = nearest(&codes, 2, &q, &docs, 500, &mut Vec::new());
        assert!(want.len() >= 500 && want.len() < docs.len() / 4);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let codes = Arc::new(codes);
        for _ in 0..20 {
            assert_eq!(
                nearest_split(Some(&pool), &codes, 2, &q, docs.clone(), 500),
                want
            );
        }
        assert_eq!(nearest_split(None, &codes, 2, &q, docs, 500), want);
    }

    #[test]
    fn a_busy_pool_does_not_hold_the_caller() {
        let (codes, docs, q) = long_list();
        let want = nearest(&codes, 2, &q, &docs, 500, &mut Vec::new());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        // The pool's one helper is held until the caller has its answer: the caller must do
        // both halves itself (a caller that waited for the helper would never return).
        let (release, held) = std::sync::mpsc::channel::<()>();
        pool.spawn(move || {
            let _ = held.recv();
        });
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(nearest_split(
                Some(&pool),
                &Arc::new(codes),
                2,
                &q,
                docs,
                500,
            ));
        });
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the caller waited for the busy helper");
        drop(release);
        assert_eq!(got, want);
    }

    #[test]
    fn the_nearest_codes_are_kept_ties_included_and_nothing_else() {
        // Doc d's code differs from the query's in d % 10 bits.
        let q = vec![0u64, 0];
        let codes: Vec<u64> = (0..200u64)
            .flat_map(|d| [(1u64 << (d % 10)) - 1, 0])
            .collect();
        let docs: Vec<u32> = (0..200).filter(|d| d % 3 != 0).collect();
        let mut dist = Vec::new();
        let got = nearest(&codes, 2, &q, &docs, 30, &mut dist);
        // The 30th nearest admitted doc is at distance 2: every admitted doc up to it is kept
        // (the whole tie at 2), none further.
        let mut d: Vec<u32> = docs.iter().map(|d| d % 10).collect();
        d.sort();
        assert_eq!(d[29], 2);
        let want: Vec<u32> = docs.iter().copied().filter(|d| d % 10 <= 2).collect();
        assert_eq!(got, want);
        assert!(got.iter().all(|d| docs.contains(d)), "only admitted docs");
        assert_eq!(
            nearest(&codes, 2, &q, &docs[..5], 30, &mut dist),
            &docs[..5]
        );
    }
}
