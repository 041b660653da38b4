//! The int8 dot products of the dense leg and the HNSW graph, with an AVX2 path chosen at run
//! time (the release target is baseline x86-64, SSE2 only, so that the binary runs anywhere).
//!
//! The one module of the crate allowed `unsafe`: calling a `#[target_feature]` function, and
//! only after `is_x86_feature_detected!` said the CPU has the feature. The AVX2 bodies are the
//! portable loops, compiled again with AVX2 enabled (no intrinsics, no raw pointers), so both
//! paths compute the same integer sums (tested).
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
    dot_q_portable(query, v)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dot_ii_avx2(a: &[i8], b: &[i8]) -> i32 {
    dot_ii_portable(a, b)
}

// Two explicit loops rather than one generic over `Into<i32>`: widening i8 → i16 → i32 by hand is
// the pattern LLVM turns into `pmaddwd` (16-bit multiplies, pairwise added into 32 bits); a
// generic version widens i8 straight to i32. A run with the generic version was slower, but this
// machine's timings vary too much today to say by how much.

/// 16 independent i32 lanes so the loop vectorizes (`pmaddwd` on SSE2, `vpmaddwd` on AVX2).
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
        for len in [0usize, 1, 15, 16, 17, 384, 385] {
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
        }
        // The extremes of the range do not overflow a lane over 384 dimensions.
        let lo = vec![-127i8; 384];
        assert_eq!(dot_ii(&lo, &lo), 127 * 127 * 384);
    }
}
