//! Sign codes: one bit per dimension, set where the vector's value is positive. A first pass
//! for scopes too large to scan in int8 within the latency budget and too small a share of
//! their segment for the graph's filtered search to find its neighbours (the 2–20 % band at
//! 10⁶ vectors, `benches/RESULTS.md`): the Hamming distance between two codes tracks the angle
//! between the vectors, so the docs nearest by code hold the nearest by cosine, and only those
//! are scored in int8 (then the head in f32, as on every path). 48 bytes per 384-dimension
//! vector, an eighth of the int8 copy.
//!
//! Must never: return a doc that is not among the given (admitted) docs.

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
