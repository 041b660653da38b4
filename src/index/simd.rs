//! The int8 dot products of the dense leg and the HNSW graph, with an AVX2 path chosen at run
//! time (the release target is baseline x86-64, SSE2 only, so that the binary runs anywhere).
//!
//! The one module of the crate allowed `unsafe`: calling a `#[target_feature]` function only
//! after `is_x86_feature_detected!` said the CPU has the feature, and the AVX2 kernels' unaligned
//! loads, each within bounds its loop checks. The kernels widen the stored int8 values to 16 bits
//! and multiply with `vpmaddwd` (16 products, pairwise added into eight 32-bit lanes): LLVM
//! compiles the portable loop to 32-bit multiplies (`vpmulld`), which ran the SciFact scan at
//! half the speed. Integer sums are exact in any order, so every path computes the same sum
//! (tested).
#![allow(unsafe_code)]

/// `query · v`, the query's int8-range values held as i16, the stored vector as i8.
#[inline]
pub fn dot_q(query: &[i16], v: &[i8]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above); the function only reads its
        // slices through safe indexing.
        return unsafe { dot_q_avx2(query, v) };
    }
    dot_q_portable(query, v)
}

/// `query · v` for each of the consecutive stored vectors in `vectors` (`out.len()` of them,
/// each `query.len()` long) into `out`: one call per run of docs, so the kernel stays inlined.
pub fn dot_q_many(query: &[i16], vectors: &[i8], out: &mut [i32]) {
    let dim = query.len();
    assert_eq!(
        vectors.len(),
        dim * out.len(),
        "vectors must hold out.len() vectors"
    );
    if dim == 0 {
        out.fill(0);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { dot_q_many_avx2(query, vectors, out) };
    }
    for (o, v) in out.iter_mut().zip(vectors.chunks_exact(dim)) {
        *o = dot_q_portable(query, v);
    }
}

/// `a · b` for two stored vectors.
#[inline]
pub fn dot_ii(a: &[i8], b: &[i8]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: as in `dot_q`.
        return unsafe { dot_ii_avx2(a, b) };
    }
    dot_ii_portable(a, b)
}

/// The Hamming distance between two sign codes. POPCNT when the CPU has it (the baseline
/// target counts bits in software, several times slower).
#[inline]
pub fn hamming(a: &[u64], b: &[u64]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("popcnt") {
        // SAFETY: the CPU supports POPCNT (checked just above); safe indexing only.
        return unsafe { hamming_popcnt(a, b) };
    }
    hamming_portable(a, b)
}

#[inline(always)]
fn hamming_portable(a: &[u64], b: &[u64]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
fn hamming_popcnt(a: &[u64], b: &[u64]) -> u32 {
    hamming_portable(a, b)
}

/// What a pass over sign codes compares: the docs' codes (`words` u64 each, doc `d`'s at
/// `codes[d * words..]`, or the codes of a list in its order), the query's code `q`, and the
/// largest distance kept.
#[derive(Clone, Copy)]
pub struct Within<'a> {
    pub codes: &'a [u64],
    pub words: usize,
    pub q: &'a [u64],
    pub cut: u32,
}

/// Appends `(doc, distance)` to `out` for each doc set in `bits` whose code is within the cut,
/// ascending by doc. Bit `i` of `bits[w]` is doc `(first + w) * 64 + i`; a doc past the codes
/// is skipped. One pass, no list of the admitted docs or of their distances: the codes are
/// read in ascending order, prefetched ahead, and the loop is unrolled for the usual 384
/// dimensions (6 words). POPCNT when the CPU has it.
pub fn hamming_under(w: Within<'_>, bits: &[u64], first: usize, out: &mut Vec<(u32, u32)>) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("popcnt") {
        // SAFETY: the CPU supports POPCNT (checked just above); safe indexing only.
        return unsafe { hamming_under_popcnt(w, bits, first, out) };
    }
    hamming_under_portable(w, bits, first, out)
}

#[inline(always)]
fn hamming_under_portable(w: Within<'_>, bits: &[u64], first: usize, out: &mut Vec<(u32, u32)>) {
    match w.words {
        6 => under_fixed::<6>(w, bits, first, out),
        _ => under_any(w, bits, first, out),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
fn hamming_under_popcnt(w: Within<'_>, bits: &[u64], first: usize, out: &mut Vec<(u32, u32)>) {
    hamming_under_portable(w, bits, first, out)
}

#[inline(always)]
fn under_fixed<const W: usize>(
    within: Within<'_>,
    bits: &[u64],
    first: usize,
    out: &mut Vec<(u32, u32)>,
) {
    let Some(q) = within.q.first_chunk::<W>() else {
        return under_any(within, bits, first, out);
    };
    let (codes, _) = within.codes.as_chunks::<W>();
    // A second cursor over the set bits, `AHEAD` docs in front, prefetches their codes: the
    // admitted docs of a scope lie scattered, and their codes' loads, not the arithmetic,
    // bound the pass (perf: two thirds of its time on the first load of each code).
    const AHEAD: usize = 16;
    let mut ahead = Ahead {
        bits,
        w: 0,
        word: bits.first().copied().unwrap_or(0),
    };
    for _ in 0..AHEAD {
        if let Some(d) = ahead.next() {
            prefetch_code(codes, first * 64 + d);
        }
    }
    for (w, &word) in bits.iter().enumerate() {
        let mut word = word;
        let base = (first + w) * 64;
        while word != 0 {
            let d = base + word.trailing_zeros() as usize;
            word &= word - 1;
            if let Some(a) = ahead.next() {
                prefetch_code(codes, first * 64 + a);
            }
            let Some(c) = codes.get(d) else { return };
            let mut h = 0;
            for j in 0..W {
                h += (c[j] ^ q[j]).count_ones();
            }
            if h <= within.cut {
                out.push((d as u32, h));
            }
        }
    }
}

/// Appends `(docs[i], distance)` to `out` for each consecutive code `i` of the codes (one per
/// doc of `docs`) within the cut. A contiguous read the hardware's stream prefetch follows;
/// unrolled for 6 words, POPCNT when the CPU has it.
pub fn hamming_listed(w: Within<'_>, docs: &[u32], out: &mut Vec<(u32, u32)>) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("popcnt") {
        // SAFETY: the CPU supports POPCNT (checked just above); safe indexing only.
        return unsafe { hamming_listed_popcnt(w, docs, out) };
    }
    hamming_listed_portable(w, docs, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
fn hamming_listed_popcnt(w: Within<'_>, docs: &[u32], out: &mut Vec<(u32, u32)>) {
    hamming_listed_portable(w, docs, out)
}

#[inline(always)]
fn hamming_listed_portable(w: Within<'_>, docs: &[u32], out: &mut Vec<(u32, u32)>) {
    if let (6, Some(q6)) = (w.words, w.q.first_chunk::<6>()) {
        let (codes, _) = w.codes.as_chunks::<6>();
        for (c, &d) in codes.iter().zip(docs) {
            let mut h = 0;
            for j in 0..6 {
                h += (c[j] ^ q6[j]).count_ones();
            }
            if h <= w.cut {
                out.push((d, h));
            }
        }
        return;
    }
    for (c, &d) in w.codes.chunks_exact(w.words.max(1)).zip(docs) {
        let h = hamming_portable(c, w.q);
        if h <= w.cut {
            out.push((d, h));
        }
    }
}

/// The set bits of a bitset, in order, as offsets from its first bit.
struct Ahead<'a> {
    bits: &'a [u64],
    w: usize,
    word: u64,
}

impl Ahead<'_> {
    #[inline(always)]
    fn next(&mut self) -> Option<usize> {
        while self.word == 0 {
            self.w += 1;
            self.word = *self.bits.get(self.w)?;
        }
        let d = self.w * 64 + self.word.trailing_zeros() as usize;
        self.word &= self.word - 1;
        Some(d)
    }
}

/// Asks the CPU to load the cache lines of code `d` (a code can straddle two lines).
#[inline(always)]
fn prefetch_code<const W: usize>(codes: &[[u64; W]], d: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(c) = codes.get(d) {
        for p in [c.as_ptr(), c[W - 1..].as_ptr()] {
            // SAFETY: a prefetch is a hint that never faults, and the pointer comes from a
            // live slice.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (codes, d);
}

/// [`hamming_under`] word by word, for any code length (tests check the unrolled loop
/// against it).
#[inline(always)]
pub(super) fn under_any(w: Within<'_>, bits: &[u64], first: usize, out: &mut Vec<(u32, u32)>) {
    for (i, &word) in bits.iter().enumerate() {
        let mut word = word;
        let base = (first + i) * 64;
        while word != 0 {
            let d = base + word.trailing_zeros() as usize;
            word &= word - 1;
            let Some(c) = w.codes.get(d * w.words..(d + 1) * w.words) else {
                return;
            };
            let h = hamming_portable(c, w.q);
            if h <= w.cut {
                out.push((d as u32, h));
            }
        }
    }
}

/// Hamming distances between sign codes (`words` u64 per code, the docs' codes at
/// `codes[d * words..]`) and `q`, for each of `docs` into `out` (cleared first), prefetching
/// codes ahead: memory latency bounds a pass over scattered docs. POPCNT when the CPU has it
/// (the baseline target counts bits in software, several times slower).
pub fn hamming_many(codes: &[u64], words: usize, q: &[u64], docs: &[u32], out: &mut Vec<u32>) {
    out.clear();
    out.reserve(docs.len());
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("popcnt") {
        // SAFETY: the CPU supports POPCNT (checked just above); the function only reads its
        // slices through safe indexing.
        return unsafe { hamming_many_popcnt(codes, words, q, docs, out) };
    }
    hamming_many_portable(codes, words, q, docs, out)
}

#[inline(always)]
fn hamming_many_portable(codes: &[u64], words: usize, q: &[u64], docs: &[u32], out: &mut Vec<u32>) {
    const AHEAD: usize = 16;
    for (i, &d) in docs.iter().enumerate() {
        if let Some(&a) = docs.get(i + AHEAD) {
            let a = a as usize * words;
            if let Some(c) = codes.get(a..a + words) {
                prefetch_words(c);
            }
        }
        let d = d as usize * words;
        let h: u32 = codes[d..d + words]
            .iter()
            .zip(q)
            .map(|(a, b)| (a ^ b).count_ones())
            .sum();
        out.push(h);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
fn hamming_many_popcnt(codes: &[u64], words: usize, q: &[u64], docs: &[u32], out: &mut Vec<u32>) {
    hamming_many_portable(codes, words, q, docs, out)
}

#[inline(always)]
fn prefetch_words(c: &[u64]) {
    // Every cache line the code touches: each 8th word, and the last (a 48-byte code can
    // straddle two lines).
    #[cfg(target_arch = "x86_64")]
    for w in c.iter().step_by(8).chain(c.last()) {
        // SAFETY: a prefetch is a hint that never faults, and the pointer comes from a live
        // slice.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                (w as *const u64).cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = c;
}

/// Asks the CPU to start loading `v` into the cache: graph searches and scans of scattered docs
/// are bound by memory latency, so each visit prefetches the next ones before scoring.
#[inline(always)]
pub fn prefetch(v: &[i8]) {
    #[cfg(target_arch = "x86_64")]
    for line in v.chunks(64) {
        // SAFETY: a prefetch is a hint that never faults, and the pointer comes from a live
        // slice.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line.as_ptr())
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// Asks the kernel to back the 2 MiB-aligned part of `buf` with transparent huge pages (THP
/// in `madvise` mode, the usual default): scans and graph walks touch vectors spread over
/// hundreds of MiB, and with 4 KiB pages every doc costs a TLB miss (the 1% scope at 10⁶
/// vectors ran at half the speed of the same number of docs at 10⁵). Call it before the pages
/// are first written. Advice only: nothing changes where THP is off.
pub fn advise_huge_pages<T>(buf: &mut [T]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = buf.as_mut_ptr() as usize;
        let end = start + std::mem::size_of_val(buf);
        let (a, b) = (start.next_multiple_of(HUGE), end / HUGE * HUGE);
        if b > a {
            // SAFETY: madvise only advises on the range, which lies inside the live allocation
            // behind `buf` (borrowed mutably, so nothing else uses it meanwhile).
            unsafe { libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = buf;
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dot_q_avx2(query: &[i16], v: &[i8]) -> i32 {
    use std::arch::x86_64::{__m256i, _mm256_loadu_si256};
    let n = query.len().min(v.len());
    let (q, b) = (&query[..n], &v[..n]);
    let (sum, done) = madd_blocks(n, |at| {
        // SAFETY: `madd_blocks` asks only for `at + 16 <= n`: 16 i16 (32 bytes) of `q` and 16
        // i8 of `b` are in bounds; both loads are unaligned loads.
        unsafe {
            (
                _mm256_loadu_si256(q[at..at + 16].as_ptr().cast::<__m256i>()),
                widen(&b[at..at + 16]),
            )
        }
    });
    sum + dot_q_portable(&q[done..], &b[done..])
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dot_q_many_avx2(query: &[i16], vectors: &[i8], out: &mut [i32]) {
    for (o, v) in out.iter_mut().zip(vectors.chunks_exact(query.len())) {
        *o = dot_q_avx2(query, v);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dot_ii_avx2(a: &[i8], b: &[i8]) -> i32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    // SAFETY: `madd_blocks` asks only for `at + 16 <= n`: 16 i8 of each slice are in bounds.
    let (sum, done) = madd_blocks(n, |at| unsafe {
        (widen(&a[at..at + 16]), widen(&b[at..at + 16]))
    });
    sum + dot_ii_portable(&a[done..], &b[done..])
}

/// The `vpmaddwd` sum over the first `n / 32 * 32` values, the 16-lane operands at each offset
/// `at` (with `at + 16 <= n`) given by `load`; returns the sum and how many values it covered
/// (the caller adds the tail). Two accumulators, so consecutive blocks do not wait on each other.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn madd_blocks(n: usize, mut load: impl FnMut(usize) -> (__m256i, __m256i)) -> (i32, usize) {
    let mut acc = [_mm256_setzero_si256(); 2];
    let mut i = 0;
    while i + 32 <= n {
        for (j, a) in acc.iter_mut().enumerate() {
            let (x, y) = load(i + 16 * j);
            *a = _mm256_add_epi32(*a, _mm256_madd_epi16(x, y));
        }
        i += 32;
    }
    (hsum(_mm256_add_epi32(acc[0], acc[1])), i)
}

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    __m128i, __m256i, _mm_add_epi32, _mm_cvtsi128_si32, _mm_shuffle_epi32, _mm256_add_epi32,
    _mm256_castsi256_si128, _mm256_cvtepi8_epi16, _mm256_extracti128_si256, _mm256_madd_epi16,
    _mm256_setzero_si256,
};

/// Sixteen i8, sign-extended to sixteen i16 lanes.
///
/// # Safety
/// `v` must hold at least 16 values (the load reads 16 bytes from its start).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn widen(v: &[i8]) -> __m256i {
    debug_assert!(v.len() >= 16);
    // SAFETY: the caller guarantees 16 readable bytes; the load is unaligned.
    _mm256_cvtepi8_epi16(unsafe {
        std::arch::x86_64::_mm_loadu_si128(v.as_ptr().cast::<__m128i>())
    })
}

/// The sum of eight i32 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn hsum(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

// Two explicit loops rather than one generic over `Into<i32>`: widening i8 → i16 → i32 by hand is
// the pattern LLVM turns into `pmaddwd` (16-bit multiplies, pairwise added into 32 bits); a
// generic version widens i8 straight to i32. A run with the generic version was slower, but this
// machine's timings vary too much today to say by how much.

/// 16 independent i32 lanes so the loop vectorizes: `pmaddwd` on the SSE2 baseline (checked in
/// the assembly). Compiled with AVX2 enabled, LLVM widens to 32 bits and uses `vpmulld` instead,
/// so the AVX2 kernels above use intrinsics and call this only for their tails.
#[inline(always)]
fn dot_q_portable(a: &[i16], b: &[i8]) -> i32 {
    let mut acc = [0i32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: i32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| *x as i32 * *y as i32)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] as i32 * y[i] as i16 as i32;
        }
    }
    acc.iter().sum::<i32>() + tail
}

#[inline(always)]
fn dot_ii_portable(a: &[i8], b: &[i8]) -> i32 {
    let mut acc = [0i32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: i32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| *x as i32 * *y as i32)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] as i16 as i32 * y[i] as i16 as i32;
        }
    }
    acc.iter().sum::<i32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_computes_the_same_sum() {
        for len in [0usize, 1, 15, 16, 17, 31, 32, 33, 48, 384, 385] {
            let a: Vec<i8> = (0..len)
                .map(|i| ((i * 37 % 255) as i32 - 127) as i8)
                .collect();
            let b: Vec<i8> = (0..len)
                .map(|i| ((i * 91 % 255) as i32 - 127) as i8)
                .collect();
            let q: Vec<i16> = a.iter().map(|x| *x as i16).collect();
            let want: i32 = a.iter().zip(&b).map(|(x, y)| *x as i32 * *y as i32).sum();
            assert_eq!(dot_ii(&a, &b), want, "len {len}");
            assert_eq!(dot_q(&q, &b), want, "len {len}");
            assert_eq!(dot_ii_portable(&a, &b), want);
            assert_eq!(dot_q_portable(&q, &b), want);
            // Three vectors in a row, the middle one `b`.
            let run: Vec<i8> = a.iter().chain(&b).chain(&a).copied().collect();
            let mut out = [i32::MIN; 3]; // every slot must be written, even for empty vectors
            dot_q_many(&q, &run, &mut out);
            let aa: i32 = a.iter().map(|x| *x as i32 * *x as i32).sum();
            assert_eq!(out, [aa, want, aa], "len {len}");
        }
        // The extremes of the range do not overflow a lane over 384 dimensions.
        let lo = vec![-127i8; 384];
        assert_eq!(dot_ii(&lo, &lo), 127 * 127 * 384);
    }
}
