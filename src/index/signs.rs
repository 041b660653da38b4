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

use super::simd::Within;

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

/// Admitted docs from which a pass sets its cut: every (admitted / `CUT_SAMPLE`)-th one.
pub const CUT_SAMPLE: usize = 4_096;

/// How many times `keep` the sampled cut aims to let through: the cut is the sample's
/// distance at that share, and a share of 4,096 sampled docs varies by ~15% at the scopes the
/// pass serves, so fewer than `keep` pass it only in a ~5σ draw (then the pass is taken again
/// with no cut).
const CUT_MARGIN: usize = 2;

/// Docs from which a pass is taken on two threads: a pass over fewer is shorter than waking
/// a helper is worth.
pub const SPLIT_MIN_DOCS: usize = 32_768;

/// One half (0 or 1) of a pass: appends `(doc, distance)` of its docs within the cut,
/// ascending by doc.
type Half = dyn Fn(usize, u32, &mut Vec<(u32, u32)>) + Send + Sync;

/// The docs set in `bits` (doc `d` is bit `d % 64` of word `d / 64`; each must have a code,
/// `codes[d * words..]`) whose codes are nearest `q`: at least `keep` of them (with every doc
/// tied at the cut), ascending. All of them when there are no more than `keep`.
///
/// One pass over the admitted codes keeps only the docs within a cut set from a sample of
/// them, so it writes a few thousand docs instead of a distance per admitted doc (the former
/// list of distances and its histogram scaled with the scope, RESULTS.md session 28). The cut
/// only bounds what the pass keeps: the result is the same whatever the sample. A long pass
/// is taken on two threads: this one takes the first half, a helper of `pool` the second;
/// whichever reaches the second half first takes it, and the helper's job owns what it reads,
/// so a pool whose helpers are all busy never holds the caller.
pub fn nearest<C>(
    pool: Option<&rayon::ThreadPool>,
    codes: &Arc<C>,
    words: usize,
    q: &[u64],
    bits: Arc<Vec<u64>>,
    keep: usize,
) -> Vec<u32>
where
    C: AsRef<[u64]> + Send + Sync + 'static,
{
    let (count, sample, pass) = scattered(codes, words, q, bits, keep);
    nearest_by(pool, words, count, keep, sample, pass)
}

/// For [`nearest`]: the number of docs set in `bits`, a sample of their distances when there
/// are more than `keep`, and the pass over their codes.
fn scattered<C>(
    codes: &Arc<C>,
    words: usize,
    q: &[u64],
    bits: Arc<Vec<u64>>,
    keep: usize,
) -> (usize, Vec<u32>, Arc<Half>)
where
    C: AsRef<[u64]> + Send + Sync + 'static,
{
    let count: usize = bits.iter().map(|w| w.count_ones() as usize).sum();
    let sample = if count > keep {
        let held = (**codes).as_ref().len() / words.max(1);
        let mut docs = super::dense::every_nth(&bits, (count / CUT_SAMPLE).max(1));
        docs.retain(|&d| (d as usize) < held);
        let mut sample = Vec::new();
        super::simd::hamming_many((**codes).as_ref(), words, q, &docs, &mut sample);
        sample
    } else {
        Vec::new()
    };
    // The halves split the admitted docs, not the words: a scope whose docs lie together
    // (ingested folder by folder) would leave one half empty.
    let mut before = 0;
    let half = bits
        .iter()
        .position(|w| {
            before += w.count_ones() as usize;
            before > count / 2
        })
        .unwrap_or(bits.len());
    let (codes, q) = (codes.clone(), q.to_vec());
    let pass: Arc<Half> = Arc::new(move |part: usize, cut: u32, out: &mut Vec<(u32, u32)>| {
        let (bits, first) = match part {
            0 => (&bits[..half], 0),
            _ => (&bits[half..], half),
        };
        let codes = (*codes).as_ref();
        super::simd::hamming_under(
            Within {
                codes,
                words,
                q: &q,
                cut,
            },
            bits,
            first,
            out,
        );
    });
    (count, sample, pass)
}

/// A scope's codes copied into one array, in doc order, with the docs they belong to: a pass
/// over them reads 48 contiguous bytes per admitted doc, where a pass over a scattered scope
/// loads the cache lines around each of its docs (RESULTS.md, session 53). Kept per segment
/// for the scopes searched lately ([`Recent`]).
pub struct Compact {
    /// The scope, to tell it from any other exactly.
    bits: Arc<Vec<u64>>,
    docs: Vec<u32>,
    codes: Vec<u64>,
    words: usize,
}

impl Compact {
    /// The codes (`words` per doc at `codes[d * words..]`) of the docs set in `bits`.
    pub fn new(codes: &[u64], words: usize, bits: Arc<Vec<u64>>) -> Self {
        let count: usize = bits.iter().map(|w| w.count_ones() as usize).sum();
        let mut docs = Vec::with_capacity(count);
        for (w, &word) in bits.iter().enumerate() {
            super::dense::push_docs(&mut docs, w, word);
        }
        let held = codes.len() / words.max(1);
        docs.retain(|&d| (d as usize) < held);
        let mut out = vec![0u64; docs.len() * words];
        super::simd::advise_huge_pages(&mut out);
        for (o, &d) in out.chunks_exact_mut(words.max(1)).zip(&docs) {
            let d = d as usize;
            o.copy_from_slice(&codes[d * words..(d + 1) * words]);
        }
        Self {
            bits,
            docs,
            codes: out,
            words,
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.docs.len() * 4 + self.codes.len() * 8 + self.bits.len() * 8
    }
}

/// [`nearest`] over a scope's [`Compact`] copy: the same docs.
pub fn nearest_compact(
    pool: Option<&rayon::ThreadPool>,
    scope: &Arc<Compact>,
    q: &[u64],
    keep: usize,
) -> Vec<u32> {
    let (count, words) = (scope.docs.len(), scope.words);
    let sample: Vec<u32> = if count > keep {
        let stride = (count / CUT_SAMPLE).max(1);
        scope
            .codes
            .chunks_exact(words.max(1))
            .step_by(stride)
            .map(|c| super::simd::hamming(c, q))
            .collect()
    } else {
        Vec::new()
    };
    let half = count / 2;
    let (scope, q) = (scope.clone(), q.to_vec());
    let pass: Arc<Half> = Arc::new(move |part: usize, cut: u32, out: &mut Vec<(u32, u32)>| {
        let docs = match part {
            0 => 0..half,
            _ => half..scope.docs.len(),
        };
        let codes = &scope.codes[docs.start * words..docs.end * words];
        let within = Within {
            codes,
            words,
            q: &q,
            cut,
        };
        super::simd::hamming_listed(within, &scope.docs[docs], out);
    });
    nearest_by(pool, words, count, keep, sample, pass)
}

/// The scopes of one segment searched lately by the sign pass: the [`Compact`] copies of
/// those seen at least twice among the last [`Recent::SEEN`], within a byte budget, the least
/// recently used dropped first. A scope seen once is only noted, so a stream of one-off
/// scopes copies nothing.
///
/// Whether a scope's copy is kept shows in how long a search takes. It depends on the
/// searches with that very scope, and, through the shared list and budget, on how many other
/// large scopes were searched lately and how large they are: never on which docs any scope
/// holds or on the question. The hash is keyed per process, so no caller can make their
/// scope pass for another's.
#[derive(Default)]
pub struct Recent {
    seen: std::collections::VecDeque<u64>,
    kept: Vec<(u64, Arc<Compact>)>,
}

/// What [`Recent::find`] found for a scope.
pub enum Found {
    /// Its copy.
    Copy(Arc<Compact>),
    /// No copy, but the scope was seen lately: copy it now.
    SeenBefore,
    /// Neither (the scope is noted now).
    New,
}

impl Recent {
    /// Scopes remembered as seen once.
    pub const SEEN: usize = 64;

    /// The scope `bits` (whose hash is `hash`, [`scope_hash`]).
    pub fn find(&mut self, hash: u64, bits: &[u64]) -> Found {
        if let Some(i) = self
            .kept
            .iter()
            .position(|(h, c)| *h == hash && c.bits.as_slice() == bits)
        {
            let entry = self.kept.remove(i);
            let copy = entry.1.clone();
            self.kept.push(entry);
            return Found::Copy(copy);
        }
        if let Some(i) = self.seen.iter().position(|&h| h == hash) {
            self.seen.remove(i);
            return Found::SeenBefore;
        }
        if self.seen.len() >= Self::SEEN {
            self.seen.pop_front();
        }
        self.seen.push_back(hash);
        Found::New
    }

    /// Keeps `copy` (of the scope whose hash is `hash`), dropping the least recently used
    /// copies while all of them hold more than `budget` bytes; one larger than the budget is
    /// not kept.
    pub fn keep(&mut self, hash: u64, copy: Arc<Compact>, budget: usize) {
        if copy.bytes() > budget {
            return;
        }
        self.kept
            .retain(|(h, c)| !(*h == hash && c.bits == copy.bits));
        self.kept.push((hash, copy));
        let mut held: usize = self.kept.iter().map(|(_, c)| c.bytes()).sum();
        while held > budget {
            let (_, dropped) = self.kept.remove(0);
            held -= dropped.bytes();
        }
    }

    /// Bytes held by the kept copies.
    pub fn bytes(&self) -> usize {
        self.kept.iter().map(|(_, c)| c.bytes()).sum()
    }
}

/// A hash of a scope's bitset, to find its copy (which is then compared word by word), keyed
/// at random once per process (SipHash), so that no caller can make a scope of theirs collide
/// with another's.
pub fn scope_hash(bits: &[u64]) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static KEY: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
    let mut h = KEY.get_or_init(std::hash::RandomState::new).build_hasher();
    for chunk in bits.chunks(32) {
        let mut bytes = [0u8; 256];
        for (b, w) in bytes.chunks_exact_mut(8).zip(chunk) {
            b.copy_from_slice(&w.to_le_bytes());
        }
        h.write(&bytes[..chunk.len() * 8]);
    }
    h.finish()
}

/// The pass shared by both layouts: the cut from `sample` (the distances of every
/// (`count` / [`CUT_SAMPLE`])-th admitted doc), then `pass` over both halves, then the kept.
fn nearest_by(
    pool: Option<&rayon::ThreadPool>,
    words: usize,
    count: usize,
    keep: usize,
    sample: Vec<u32>,
    pass: Arc<Half>,
) -> Vec<u32> {
    if keep == 0 {
        return Vec::new();
    }
    if count <= keep {
        let mut all = Vec::new();
        pass(0, u32::MAX, &mut all);
        pass(1, u32::MAX, &mut all);
        return all.into_iter().map(|(d, _)| d).collect();
    }
    let cut = sampled_cut(sample, count, keep);
    nearest_within(pool, words, count, keep, cut, &pass)
}

/// The pass with its cut given: docs further than `cut` are not kept unless fewer than
/// `keep` are within it, when the pass is taken again with no cut.
fn nearest_within(
    pool: Option<&rayon::ThreadPool>,
    words: usize,
    count: usize,
    keep: usize,
    cut: u32,
    pass: &Arc<Half>,
) -> Vec<u32> {
    let mut near = within_split(pool, count, cut, pass);
    if near.len() < keep {
        near = within_split(pool, count, u32::MAX, pass);
    }
    kept(&near, words, keep)
}

/// The distance that about `CUT_MARGIN` × `keep` of the `count` admitted docs are within,
/// judged from a sample of their distances; `u32::MAX` where that is most of them.
fn sampled_cut(mut sample: Vec<u32>, count: usize, keep: usize) -> u32 {
    sample.sort_unstable();
    let rank = (sample.len() * keep * CUT_MARGIN).div_ceil(count.max(1));
    sample.get(rank).copied().unwrap_or(u32::MAX)
}

/// `(doc, distance)` of the docs within `cut`, ascending by doc: both halves of `pass` on
/// this thread for fewer than [`SPLIT_MIN_DOCS`] admitted docs, else the second half handed
/// to a helper of `pool` (see [`nearest`]).
fn within_split(
    pool: Option<&rayon::ThreadPool>,
    count: usize,
    cut: u32,
    pass: &Arc<Half>,
) -> Vec<(u32, u32)> {
    let mut near = Vec::new();
    let pool = match pool {
        Some(p) if count >= SPLIT_MIN_DOCS => p,
        _ => {
            pass(0, cut, &mut near);
            pass(1, cut, &mut near);
            return near;
        }
    };
    let taken = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    pool.spawn({
        let (pass, taken) = (pass.clone(), taken.clone());
        move || {
            if !taken.swap(true, Ordering::AcqRel) {
                let mut out = Vec::new();
                pass(1, cut, &mut out);
                let _ = tx.send(out);
            }
        }
    });
    pass(0, cut, &mut near);
    if !taken.swap(true, Ordering::AcqRel) {
        pass(1, cut, &mut near);
    } else {
        match rx.recv() {
            Ok(out) => near.extend_from_slice(&out),
            // The helper took the half and did not finish it (it panicked): done here.
            Err(_) => pass(1, cut, &mut near),
        }
    }
    near
}

/// The docs of `near` (`(doc, distance)`) whose distance is among the `keep` smallest, ties
/// at the cut included, in the order of `near`.
fn kept(near: &[(u32, u32)], words: usize, keep: usize) -> Vec<u32> {
    let mut hist = vec![0usize; words * 64 + 1];
    for &(_, h) in near {
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
    near.iter()
        .filter(|&&(_, h)| h as usize <= cut)
        .map(|&(d, _)| d)
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

    /// The bitset of `docs`.
    fn bitset(docs: &[u32], n: usize) -> Arc<Vec<u64>> {
        let mut bits = vec![0u64; n.div_ceil(64)];
        for &d in docs {
            bits[d as usize / 64] |= 1 << (d % 64);
        }
        Arc::new(bits)
    }

    /// What [`nearest`] must return: the admitted docs within the `keep`-th smallest distance.
    fn by_definition(
        codes: &[u64],
        words: usize,
        q: &[u64],
        docs: &[u32],
        keep: usize,
    ) -> Vec<u32> {
        let dist = |d: u32| {
            let d = d as usize;
            super::super::simd::hamming(&codes[d * words..(d + 1) * words], q)
        };
        let mut all: Vec<u32> = docs.iter().map(|&d| dist(d)).collect();
        all.sort_unstable();
        let Some(&cut) = all.get(keep.saturating_sub(1)) else {
            return docs.to_vec();
        };
        docs.iter().copied().filter(|&d| dist(d) <= cut).collect()
    }

    /// Pseudo-random 128-bit codes for `3 * SPLIT_MIN_DOCS` docs, every third doc refused, and
    /// a query.
    fn long_list() -> (Arc<Vec<u64>>, Vec<u32>, Vec<u64>, usize) {
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
        (Arc::new(codes), docs, vec![next(), next()], n as usize)
    }

    #[test]
    fn the_pass_keeps_the_nearest_codes_on_one_thread_or_two() {
        let (codes, docs, q, n) = long_list();
        let want = by_definition(&codes, 2, &q, &docs, 500);
        assert!(want.len() >= 500 && want.len() < docs.len() / 4);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for _ in 0..20 {
            assert_eq!(
                nearest(Some(&pool), &codes, 2, &q, bitset(&docs, n), 500),
                want
            );
        }
        assert_eq!(nearest(None, &codes, 2, &q, bitset(&docs, n), 500), want);
    }

    #[test]
    fn a_cut_that_lets_too_few_through_is_taken_again_without_it() {
        let (codes, docs, q, n) = long_list();
        let want = by_definition(&codes, 2, &q, &docs, 500);
        for cut in [0, 40, 45, 200] {
            let (count, _, pass) = scattered(&codes, 2, &q, bitset(&docs, n), 500);
            let mut within = Vec::new();
            pass(0, cut, &mut within);
            pass(1, cut, &mut within);
            // The first three let fewer than 500 through: the pass is taken again.
            assert_eq!(within.len() < 500, cut < 200, "cut {cut}: {}", within.len());
            let got = nearest_within(None, 2, count, 500, cut, &pass);
            assert_eq!(got, want, "cut {cut}");
        }
    }

    #[test]
    fn the_sampled_cut_lets_through_more_than_kept_and_far_fewer_than_all() {
        let (codes, docs, q, n) = long_list();
        let bits = bitset(&docs, n);
        let (count, sample, _) = scattered(&codes, 2, &q, bits.clone(), 500);
        assert!(sample.len() >= CUT_SAMPLE && sample.len() <= CUT_SAMPLE * 2);
        let cut = sampled_cut(sample, count, 500);
        let mut within = Vec::new();
        let w = Within {
            codes: &codes,
            words: 2,
            q: &q,
            cut,
        };
        super::super::simd::hamming_under(w, &bits, 0, &mut within);
        assert!(
            within.len() >= 500 && within.len() <= 500 * CUT_MARGIN * 2,
            "{} within the cut {cut}",
            within.len()
        );
    }

    #[test]
    fn the_compact_copy_keeps_what_the_scattered_codes_keep() {
        let (codes, docs, q, n) = long_list();
        let bits = bitset(&docs, n);
        let copy = Arc::new(Compact::new(&codes, 2, bits.clone()));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let want = by_definition(&codes, 2, &q, &docs, 500);
        assert_eq!(nearest_compact(Some(&pool), &copy, &q, 500), want);
        assert_eq!(nearest_compact(None, &copy, &q, 500), want);
        // A scope no larger than what is kept: all of it.
        let few = Arc::new(Compact::new(&codes, 2, bitset(&docs[..300], n)));
        assert_eq!(nearest_compact(None, &few, &q, 500), &docs[..300]);
        // 384-dimension codes (six words, the unrolled loop), and a scope that runs past the
        // docs with codes (those are left out of the copy).
        let q6: Vec<u64> = q.iter().chain(&q).chain(&q).copied().collect();
        let held: Vec<u32> = docs
            .iter()
            .copied()
            .filter(|&d| (d as usize) < n / 3)
            .collect();
        let want = by_definition(&codes, 6, &q6, &held, 500);
        let six = Arc::new(Compact::new(&codes, 6, bitset(&docs, n)));
        assert_eq!(six.docs, held);
        assert_eq!(nearest_compact(Some(&pool), &six, &q6, 500), want);
        assert_eq!(
            nearest(Some(&pool), &codes, 6, &q6, bitset(&held, n), 500),
            want
        );
    }

    /// A copy of `docs` (of 1,000) with their 2-word codes.
    fn copy_of(docs: &[u32]) -> Arc<Compact> {
        let codes: Vec<u64> = (0..2000).collect();
        Arc::new(Compact::new(&codes, 2, bitset(docs, 1000)))
    }

    #[test]
    fn a_scope_is_copied_on_its_second_search_and_found_by_its_bits() {
        let mut recent = Recent::default();
        let a = bitset(&[1, 5, 9], 1000);
        let hash = scope_hash(&a);
        assert!(matches!(recent.find(hash, &a), Found::New));
        assert!(matches!(recent.find(hash, &a), Found::SeenBefore));
        recent.keep(hash, copy_of(&[1, 5, 9]), 1 << 20);
        let Found::Copy(copy) = recent.find(hash, &a) else {
            panic!("the kept copy was not found");
        };
        assert_eq!(copy.docs, [1, 5, 9]);
        assert_eq!(copy.codes, [2, 3, 10, 11, 18, 19]);
    }

    #[test]
    fn another_scope_with_the_same_hash_never_gets_the_copy() {
        let mut recent = Recent::default();
        let (a, b) = (bitset(&[1, 5, 9], 1000), bitset(&[1, 5, 10], 1000));
        // The same hash given for both, as a collision would.
        recent.keep(7, copy_of(&[1, 5, 9]), 1 << 20);
        assert!(matches!(recent.find(7, &a), Found::Copy(_)));
        assert!(matches!(recent.find(7, &b), Found::New));
    }

    #[test]
    fn copies_past_the_budget_drop_the_least_recently_used() {
        let mut recent = Recent::default();
        let scopes: Vec<Vec<u32>> = (0..4).map(|i| (i * 100..i * 100 + 50).collect()).collect();
        let one = copy_of(&scopes[0]).bytes();
        for (i, docs) in scopes.iter().take(3).enumerate() {
            recent.keep(i as u64, copy_of(docs), 3 * one);
        }
        // Scope 0 searched again: scope 1 is now the least recently used.
        assert!(matches!(
            recent.find(0, &bitset(&scopes[0], 1000)),
            Found::Copy(_)
        ));
        recent.keep(3, copy_of(&scopes[3]), 3 * one);
        assert_eq!(recent.bytes(), 3 * one);
        for (i, kept) in [(0, true), (1, false), (2, true), (3, true)] {
            let found = recent.find(i, &bitset(&scopes[i as usize], 1000));
            assert_eq!(matches!(found, Found::Copy(_)), kept, "scope {i}");
        }
        // A copy larger than the whole budget is not kept.
        let mut small = Recent::default();
        small.keep(9, copy_of(&scopes[0]), one - 1);
        assert_eq!(small.bytes(), 0);
    }

    #[test]
    fn a_stream_of_new_scopes_forgets_the_oldest_seen() {
        let mut recent = Recent::default();
        let bits = bitset(&[3], 1000);
        assert!(matches!(recent.find(0, &bits), Found::New));
        for h in 1..=Recent::SEEN as u64 {
            assert!(matches!(recent.find(h, &bits), Found::New));
        }
        assert!(matches!(recent.find(0, &bits), Found::New));
        assert!(matches!(recent.find(0, &bits), Found::SeenBefore));
    }

    #[test]
    fn a_busy_pool_does_not_hold_the_caller() {
        let (codes, docs, q, n) = long_list();
        let want = by_definition(&codes, 2, &q, &docs, 500);
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
            let _ = tx.send(nearest(Some(&pool), &codes, 2, &q, bitset(&docs, n), 500));
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
        let codes: Arc<Vec<u64>> = Arc::new(
            (0..200u64)
                .flat_map(|d| [(1u64 << (d % 10)) - 1, 0])
                .collect(),
        );
        let docs: Vec<u32> = (0..200).filter(|d| d % 3 != 0).collect();
        let got = nearest(None, &codes, 2, &q, bitset(&docs, 200), 30);
        // The 30th nearest admitted doc is at distance 2: every admitted doc up to it is kept
        // (the whole tie at 2), none further.
        let mut d: Vec<u32> = docs.iter().map(|d| d % 10).collect();
        d.sort();
        assert_eq!(d[29], 2);
        let want: Vec<u32> = docs.iter().copied().filter(|d| d % 10 <= 2).collect();
        assert_eq!(got, want);
        assert_eq!(
            nearest(None, &codes, 2, &q, bitset(&docs[..5], 200), 30),
            &docs[..5]
        );
    }

    #[test]
    fn the_unrolled_pass_finds_what_the_general_one_finds() {
        // 384-dimension codes (six words, the unrolled loop) against the word-by-word loop.
        let (codes, docs, q, n) = long_list();
        let q6: Vec<u64> = q.iter().chain(&q).chain(&q).copied().collect();
        let bits = bitset(&docs, n);
        // From word 7 on, as the second half of a split pass reads them, and past the docs
        // with codes (a third of them).
        let (bits, first) = (&bits[7..], 7);
        let (mut six, mut any) = (Vec::new(), Vec::new());
        let w = Within {
            codes: &codes,
            words: 6,
            q: &q6,
            cut: 190,
        };
        super::super::simd::hamming_under(w, bits, first, &mut six);
        super::super::simd::under_any(w, bits, first, &mut any);
        assert!(
            six.len() > 100 && six.len() < docs.len() / 6,
            "{}",
            six.len()
        );
        assert_eq!(six, any);
        assert!(six[0].0 >= 7 * 64 && six.iter().all(|&(d, _)| (d as usize) < n / 3));
    }
}
