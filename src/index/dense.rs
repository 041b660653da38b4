//! Dense retrieval over tantivy segments: each segment's vectors are decoded once from the
//! `vector` bytes fast field into a flat array (segments are immutable, so the cache is keyed by
//! segment id and never stale), and the leg scores the documents the caller's scope admits (a
//! bitset per segment from the scope cache, [`super::scope`]). Deleted documents are never
//! admitted.
//!
//! Three paths, chosen per segment and query (measured in `benches/ann.rs`; RESULTS.md, sessions
//! 7, 25 and 26):
//! - the exact scan: the admitted docs' int8 copies (huge pages, each doc prefetched a few docs
//!   ahead, AVX2 when the CPU has it); the head of the list (the best `4 × min(k, 16)`) is
//!   rescored in f32, deeper ranks keep their int8 scores (see [`DenseCollector`]). Always used for
//!   small segments and small scopes: no recall loss under any ACL.
//! - the filtered HNSW ([`super::ann`]): a segment of at least [`ANN_MIN_VECTORS`] vectors gets a
//!   graph, built in the background when the segment is loaded (one build at a time, through
//!   one queue that skips segments merged away before their turn; until the graph is ready the
//!   scan serves, or for a large scope the sign-code pass below). A scope admitting at least
//!   [`ANN_MIN_ADMITTED`] docs and [`ANN_MIN_FRACTION`] of the segment is searched through the
//!   graph with the scope applied during the search (an admitted-docs bitset) and a beam that
//!   grows with the scope's share ([`graph_beam`]), and the candidates are rescored exactly like
//!   the scan's. The search starts from the graph's entry point and from a few admitted docs
//!   near the query (the best of a sample of the scope): a scope that follows a subject may
//!   admit nothing around the query, and a search begun there finds few or none of its docs.
//!   A search that still runs out of admitted docs before its beam fills hands the segment to
//!   the paths below. A scope of at most [`SUBJECT_MAX_FRACTION`] of the segment that follows
//!   a subject (its sampled docs' links lead to admitted docs far more often than its share
//!   would: [`follows_a_subject`], a property of the scope, not of the question) goes to the
//!   sign-code pass instead: there the filtered search found 0.86–0.95 of the top 10 at
//!   20–35% of 10⁶ vectors, the pass ≥ 0.99. Below that fraction the graph's recall falls, most for a scope that
//!   follows a subject (0.91–0.92 at 13–20% of 10⁶ vectors, against 0.985 for a scope drawn at
//!   random; with the fixed beam of 64 before session 26, 0.92–0.96 at 5–12% and 0.54 at 1%).
//! - the sign-code pass ([`super::signs`]): in a segment of at least [`ANN_MIN_VECTORS`]
//!   vectors, a scope admitting at least [`SIGN_MIN_ADMITTED`] docs that the graph does not
//!   search (under [`ANN_MIN_FRACTION`], the graph not built yet, a scope that follows a
//!   subject, or a graph search that ran out of admitted docs: slower there, 4–8 ms from 50%
//!   up at 10⁶) is first narrowed to the
//!   docs nearest the query by Hamming distance between one-bit-per-dimension codes (at least
//!   [`SIGN_KEEP`]), and only those are scanned as above: recall@10 ≥ 0.987, 0.36–2.0 ms from
//!   2% to 20% of 10⁶ vectors (the distances of 32k docs or more on two threads), where the
//!   full scan took 0.64–12 ms and the graph's recall was 0.77–0.96 (0.91–0.92 for a scope
//!   that follows a subject). Smaller scopes and segments are scanned whole: exact.
//!
//! The graph is derived from the immutable segment, so it always matches the committed
//! documents, crash or not: it is rebuilt when a segment is loaded (open, or a merge's new
//! segment), never persisted. Tests lower the thresholds with
//! [`VectorCache::with_ann_thresholds`].

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, OnceLock, Weak, mpsc};

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::index::SegmentId;
use tantivy::{DocAddress, DocId, Score, Searcher, SegmentOrdinal, SegmentReader};

pub fn encode(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The floats of a vector stored by [`encode`].
pub fn decode(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// One segment's vectors, `dim` floats per doc id; a doc without a vector has NaN in slot 0.
pub struct SegmentVectors {
    dim: usize,
    data: Vec<f32>,
    /// Quantized copies (int8, symmetric, per-vector scale) for the scan and the graph.
    q8: Vec<i8>,
    scale: Vec<f32>,
    /// Sign codes ([`super::signs`]), `signs::words(dim)` words per doc (zeros for a doc
    /// without a vector), or none where the segment is too small for the sign pass.
    signs: Vec<u64>,
    /// The docs that have a code (a vector), one bit each as in a scope's bitset: the sign
    /// pass reads only these.
    coded: Vec<u64>,
    /// Compact copies of the codes of scopes the sign pass served lately.
    scopes: Mutex<super::signs::Recent>,
    /// Set by a background build for large segments.
    graph: OnceLock<super::ann::Hnsw>,
}

/// Segments with at least this many vectors get an HNSW graph (a scan of 20k takes ~1.5 ms).
pub const ANN_MIN_VECTORS: usize = 20_000;
/// A scope admitting fewer of a segment's docs than this is scanned exactly even when the
/// segment has a graph (below it the scan takes under ~2 ms and is exact).
pub const ANN_MIN_ADMITTED: usize = 20_000;
/// ... or admitting less than this share of them: below it the filtered graph search's
/// recall@10 falls for a scope that follows a subject (0.91–0.92 at 13–20%), and
/// the sign-code pass, its distances on two threads, answers there within ~2 ms at 10⁶
/// vectors, recall ≥ 0.987 (above it the pass outgrows 2 ms: 2.0–2.6 ms at 25%).
pub const ANN_MIN_FRACTION: f64 = 0.2;
/// A scope admitting at most this share of a segment whose docs lie together (it follows a
/// subject: [`follows_a_subject`]) takes the sign-code pass instead of the graph where the pass
/// serves. There the filtered graph search found 0.86–0.95 of the top 10 at 20–35% of 10⁶
/// vectors, the sign pass ≥ 0.99 in 1.9–3.6 ms; above it the graph finds ≥ 0.98 again (0.981
/// at 50%) and the pass outgrows it (3–4.5 ms). `benches/RESULTS.md`, session 52.
pub const SUBJECT_MAX_FRACTION: f64 = 0.4;
/// A scope whose sampled docs' graph links lead to admitted docs this much more often than its
/// share of the segment would (a scope drawn at random: about its share) follows a subject.
pub const SUBJECT_LINK_RATIO: f64 = 2.0;
/// Admitted docs sampled for [`Hnsw::admitted_link_share`](super::ann::Hnsw::admitted_link_share)
/// (their ~2,000 links put a random scope's share within ±0.02 of its own).
pub const LINK_SAMPLE: usize = 64;

/// Whether a scope admitting `fraction` of a segment, whose docs' graph links lead to admitted
/// docs at `link_share`, is better served by the sign pass than by the graph (see
/// [`SUBJECT_MAX_FRACTION`]). A property of the scope alone, never of a question: which path a
/// question takes (and so how long it takes) cannot tell where the docs the caller may not read
/// lie around it.
pub fn follows_a_subject(link_share: f64, fraction: f64) -> bool {
    fraction <= SUBJECT_MAX_FRACTION && link_share >= SUBJECT_LINK_RATIO * fraction
}

/// A scope admitting at least this many of a segment's docs (of at least [`ANN_MIN_VECTORS`]),
/// and not searched by the graph, is first narrowed by sign codes ([`super::signs`]) to the
/// [`SIGN_KEEP`] docs (or more) nearest by Hamming distance, and only those are scored. Below
/// it the int8 scan of every admitted doc takes under ~1 ms and is exact.
pub const SIGN_MIN_ADMITTED: usize = 16_384;

/// Admitted docs from which a scope searched twice gets a compact copy of its codes
/// ([`super::signs::Compact`]) for the sign pass: a pass over fewer scattered codes takes well
/// under the latency budget (0.5 ms at 5% of 10⁶, RESULTS.md session 52).
pub const COMPACT_MIN_ADMITTED: usize = 65_536;

/// The largest share of its segment a scope may admit for the sign pass to read its compact
/// copy instead of searching the graph: up to half the segment, the copy's pass is faster than
/// the graph's search and finds as much (RESULTS.md, session 53).
pub const COMPACT_MAX_FRACTION: f64 = 0.5;
/// How many docs the sign codes keep at least (or 16 × the candidate pool, if more): recall@10
/// ≥ 0.99 from 2% to 50% of 10⁶ real-derived MiniLM vectors; a 300-deep list (hybrid
/// fusion's) keeps 4,800, recall@300 0.96–0.98 (`benches/RESULTS.md`, session 25).
const SIGN_KEEP: usize = 2_048;
/// The graph search's candidate list (its beam, "ef") for a scope admitting
/// [`ANN_MIN_FRACTION`] of the segment, and for the whole segment; in between it rises
/// linearly ([`graph_beam`]). At 10⁶ vectors this keeps recall@10 at 0.982–0.987 from 20% to
/// 100% admitted (scopes drawn at random), p50 0.6–1.6 ms; the fixed beam of 64 used before
/// found 0.91–0.96 there (`benches/RESULTS.md`, session 26).
const ANN_EF_NARROW: usize = 144;
const ANN_EF_WIDE: usize = 320;

/// How many admitted docs are sampled for the graph's entry points ([`SEEDS`] of them): in a
/// scope of 13–50% that follows a subject, at 10⁶ vectors, 512 and 2,048 find the same.
pub const SEED_SAMPLE: usize = 512;
pub const SEEDS: usize = 8;

/// The beam for a scope admitting `fraction` of a segment's docs. A narrow scope costs more
/// per candidate (refused neighbours are passed through to theirs), a wide one needs a longer
/// list for the same recall, since no refusal widens its search.
pub fn graph_beam(fraction: f64) -> usize {
    let t = ((fraction - ANN_MIN_FRACTION) / (1.0 - ANN_MIN_FRACTION)).clamp(0.0, 1.0);
    ANN_EF_NARROW + ((ANN_EF_WIDE - ANN_EF_NARROW) as f64 * t).round() as usize
}

/// The segment's sign codes, for a sign-code pass that hands half its docs to a helper.
impl AsRef<[u64]> for SegmentVectors {
    fn as_ref(&self) -> &[u64] {
        &self.signs
    }
}

impl SegmentVectors {
    fn view(&self) -> super::ann::View<'_> {
        super::ann::View {
            dim: self.dim,
            values: &self.q8,
            scale: &self.scale,
        }
    }

    /// Bytes the compact copies of scopes may hold ([`super::signs::Recent`]): four times the
    /// segment's own codes (half its int8 copy, a tenth of its f32 vectors), 192 MiB at 10⁶
    /// 384-dimension vectors: eight copies of 50% scopes, twenty of 20%.
    fn copy_budget(&self) -> usize {
        self.signs.len() * 8 * 4
    }

    /// Whether the segment's graph is built.
    pub fn has_graph(&self) -> bool {
        self.graph.get().is_some()
    }

    pub fn vector(&self, doc: DocId) -> Option<&[f32]> {
        let start = doc as usize * self.dim;
        let v = self.data.get(start..start + self.dim)?;
        (!v[0].is_nan()).then_some(v)
    }

    fn prefetch(&self, doc: DocId) {
        let d = doc as usize;
        if let Some(v) = self.q8.get(d * self.dim..(d + 1) * self.dim) {
            super::simd::prefetch(v);
        }
    }

    /// Whether the segment holds slots for the first `docs` doc ids.
    fn holds(&self, docs: usize) -> bool {
        docs <= self.scale.len() && docs * self.dim <= self.q8.len()
    }

    /// [`Self::approx`] for the 64 docs from `first` (all within [`Self::holds`]), handing each
    /// doc that has a vector to `keep`.
    fn approx_run(
        &self,
        first: DocId,
        q: &Quantized,
        raw: &mut [i32; 64],
        keep: &mut impl FnMut(DocId, f32),
    ) {
        let d = first as usize;
        super::simd::dot_q_many(&q.values, &self.q8[d * self.dim..(d + 64) * self.dim], raw);
        for (i, (&r, &s)) in raw.iter().zip(&self.scale[d..d + 64]).enumerate() {
            if s != 0.0 {
                keep(first + i as u32, r as f32 * q.scale * s);
            }
        }
    }

    fn approx(&self, doc: DocId, q: &Quantized) -> Option<f32> {
        let d = doc as usize;
        let s = *self.scale.get(d)?;
        if s == 0.0 {
            return None; // no vector
        }
        let v = &self.q8[d * self.dim..(d + 1) * self.dim];
        Some(super::simd::dot_q(&q.values, v) as f32 * q.scale * s)
    }
}

/// A vector quantized to int8 with one scale: `v ≈ values * scale`.
pub struct Quantized {
    values: Vec<i16>,
    scale: f32,
}

impl Quantized {
    pub fn values(&self) -> &[i16] {
        &self.values
    }

    pub fn scale(&self) -> f32 {
        self.scale
    }
}

pub fn quantize(v: &[f32]) -> Quantized {
    let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    if max == 0.0 || !max.is_finite() {
        return Quantized {
            values: vec![0; v.len()],
            scale: 0.0,
        };
    }
    let scale = max / 127.0;
    Quantized {
        values: v
            .iter()
            .map(|x| (x / scale).round().clamp(-127.0, 127.0) as i16)
            .collect(),
        scale,
    }
}

impl Quantized {
    /// The stored (i8) form of the values.
    pub fn to_i8(&self) -> Vec<i8> {
        self.values.iter().map(|x| *x as i8).collect()
    }
}

pub struct VectorCache {
    dim: usize,
    segments: Mutex<HashMap<SegmentId, Arc<SegmentVectors>>>,
    /// The segments of the last searcher [`Self::retain`] saw (`None` before the first): a
    /// query on an older snapshot that reaches a segment merged away since decodes it for
    /// itself, without caching it again or queueing a graph build for it (a review: it stayed
    /// cached, possibly gigabytes, and its build delayed the live segment's).
    live: Mutex<Option<std::collections::HashSet<SegmentId>>>,
    /// Retired segments some snapshot still holds: older snapshots reaching one share its
    /// decode instead of each decoding it again (session 43's review: every query in flight
    /// at a merge decoded the merged-away segments, gigabytes at 10⁶ vectors, once per read).
    retired: Mutex<HashMap<SegmentId, Weak<SegmentVectors>>>,
    /// Segments decoded by [`Self::get`] (tests).
    #[cfg(test)]
    decoded: std::sync::atomic::AtomicUsize,
    /// The graph builds' queue: one worker thread (started with the first build) takes one
    /// segment at a time and skips those retired meanwhile (merged away: nothing holds them),
    /// so a burst of merges never starts competing builds or builds for dead segments.
    builds: Mutex<Option<mpsc::Sender<Weak<SegmentVectors>>>>,
    /// [`ANN_MIN_VECTORS`], [`ANN_MIN_ADMITTED`] and [`SIGN_MIN_ADMITTED`] (lowered by
    /// tests).
    ann_min_vectors: usize,
    ann_min_admitted: usize,
    sign_min_admitted: usize,
    /// [`ANN_MIN_VECTORS`] for the sign pass and [`SIGN_KEEP`] (lowered by tests).
    sign_min_vectors: usize,
    sign_keep: usize,
    copy_min_admitted: usize,
    /// Which path searched each segment, in order (tests only).
    #[cfg(test)]
    paths: Arc<Mutex<Vec<&'static str>>>,
    /// The graph searches without entry points in the scope (tests of the fallback).
    #[cfg(test)]
    no_seeds: bool,
    /// The graph takes scopes that follow a subject too (tests of the hand-over).
    #[cfg(test)]
    never_by_subject: bool,
}

impl VectorCache {
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            segments: Mutex::new(HashMap::new()),
            live: Mutex::new(None),
            retired: Mutex::new(HashMap::new()),
            #[cfg(test)]
            decoded: Default::default(),
            builds: Mutex::new(None),
            ann_min_vectors: ANN_MIN_VECTORS,
            ann_min_admitted: ANN_MIN_ADMITTED,
            sign_min_admitted: SIGN_MIN_ADMITTED,
            sign_min_vectors: ANN_MIN_VECTORS,
            sign_keep: SIGN_KEEP,
            copy_min_admitted: COMPACT_MIN_ADMITTED,
            #[cfg(test)]
            paths: Arc::default(),
            #[cfg(test)]
            no_seeds: false,
            #[cfg(test)]
            never_by_subject: false,
        }
    }

    /// Other thresholds for the graph (tests use small segments).
    pub fn with_ann_thresholds(mut self, min_vectors: usize, min_admitted: usize) -> Self {
        self.ann_min_vectors = min_vectors;
        self.ann_min_admitted = min_admitted;
        self
    }

    /// The graph is searched from its own entry point only, never from seeds in the scope.
    #[cfg(test)]
    fn without_seeds(mut self) -> Self {
        self.no_seeds = true;
        self
    }

    /// The graph takes every scope it may, also those that follow a subject.
    #[cfg(test)]
    fn never_by_subject(mut self) -> Self {
        self.never_by_subject = true;
        self
    }

    /// Which path searched each segment so far, in order.
    #[cfg(test)]
    fn paths(&self) -> Vec<&'static str> {
        self.paths.lock().unwrap().clone()
    }

    /// Other thresholds for the sign-code pass (tests use small segments).
    pub fn with_sign_thresholds(
        mut self,
        min_vectors: usize,
        min_admitted: usize,
        keep: usize,
    ) -> Self {
        self.sign_min_vectors = min_vectors;
        self.sign_min_admitted = min_admitted;
        self.sign_keep = keep;
        self
    }

    /// Another least scope for the compact copies of scopes' codes (tests use small segments).
    #[cfg(test)]
    fn with_copy_threshold(mut self, min_admitted: usize) -> Self {
        self.copy_min_admitted = min_admitted;
        self
    }

    /// How many segments [`Self::get`] decoded so far.
    #[cfg(test)]
    pub(crate) fn decoded(&self) -> usize {
        self.decoded.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn get(&self, seg: &SegmentReader) -> tantivy::Result<Arc<SegmentVectors>> {
        let id = seg.segment_id();
        if let Some(v) = self
            .segments
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            return Ok(v.clone());
        }
        if let Some(v) = self
            .retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .and_then(Weak::upgrade)
        {
            return Ok(v);
        }
        #[cfg(test)]
        self.decoded
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Decode outside the lock; two racing loads produce identical data, and the first one
        // cached is the one kept and built (a review: the second replaced it, and the build
        // queued for the first was for vectors nothing read).
        let loaded = Arc::new(self.load(seg)?);
        // Asked under the segments' lock, which `retain` holds while it changes both: a
        // segment retired in between is not cached (a second review).
        let (kept, fresh) = {
            let mut segments = self.segments.lock().unwrap_or_else(|e| e.into_inner());
            let retired = self
                .live
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .is_some_and(|live| !live.contains(&id));
            if retired {
                self.retired
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id, Arc::downgrade(&loaded));
                return Ok(loaded);
            }
            match segments.entry(id) {
                std::collections::hash_map::Entry::Occupied(e) => (e.get().clone(), false),
                std::collections::hash_map::Entry::Vacant(e) => (e.insert(loaded).clone(), true),
            }
        };
        let vectors = kept.scale.iter().filter(|s| **s != 0.0).count();
        if fresh && vectors >= self.ann_min_vectors {
            self.queue_build(Arc::downgrade(&kept));
        }
        Ok(kept)
    }

    fn queue_build(&self, segment: Weak<SegmentVectors>) {
        let mut builds = self.builds.lock().unwrap_or_else(|e| e.into_inner());
        let segment = match builds.as_ref() {
            None => segment,
            Some(tx) => match tx.send(segment) {
                Ok(()) => return,
                // The worker is gone (it panicked): start another.
                Err(mpsc::SendError(segment)) => segment,
            },
        };
        let (tx, rx) = mpsc::channel::<Weak<SegmentVectors>>();
        let spawned = std::thread::Builder::new()
            .name("docent-ann-build".into())
            .spawn(move || {
                // Ends when the cache (the sender) is dropped.
                for segment in rx {
                    let Some(v) = segment.upgrade() else {
                        tracing::debug!("skipped the HNSW build of a retired segment");
                        continue;
                    };
                    let started = std::time::Instant::now();
                    let g = super::ann::Hnsw::build(v.view(), super::ann::Params::default());
                    tracing::info!(
                        vectors = v.scale.len(),
                        secs = started.elapsed().as_secs_f64(),
                        "built the HNSW graph of a segment"
                    );
                    let _ = v.graph.set(g);
                }
            });
        match spawned {
            Ok(_) => {
                let _ = tx.send(segment);
                *builds = Some(tx);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the HNSW builds; segments are scanned exactly")
            }
        }
    }

    fn load(&self, seg: &SegmentReader) -> tantivy::Result<SegmentVectors> {
        let max = seg.max_doc() as usize;
        let mut data = vec![0.0f32; max * self.dim];
        for d in 0..max {
            data[d * self.dim] = f32::NAN;
        }
        if let Some(col) = seg.fast_fields().bytes("vector")? {
            let mut buf = Vec::new();
            for doc in 0..max as u32 {
                if let Some(ord) = col.term_ords(doc).next() {
                    buf.clear();
                    col.ord_to_bytes(ord, &mut buf)?;
                    // A vector with a value that is not finite (written by a release before the
                    // pipeline checked them, and copied forward by re-ingestion since) is none:
                    // its NaN score sorted first for every query (session 43's review).
                    if buf.len() == self.dim * 4 {
                        let out = &mut data[doc as usize * self.dim..(doc as usize + 1) * self.dim];
                        for (o, x) in out.iter_mut().zip(decode(&buf)) {
                            *o = x;
                        }
                        if !out.iter().all(|x| x.is_finite()) {
                            out[0] = f32::NAN;
                        }
                    }
                }
            }
        }
        let mut q8 = vec![0i8; max * self.dim];
        super::simd::advise_huge_pages(&mut q8);
        let mut scale = vec![0.0f32; max];
        // Codes only where the sign pass may run (see `DenseSegmentCollector::search`).
        let words = super::signs::words(self.dim);
        let coded = max >= self.sign_min_vectors;
        let mut signs = vec![0u64; if coded { max * words } else { 0 }];
        super::simd::advise_huge_pages(&mut signs);
        let mut with_code = vec![0u64; if coded { max.div_ceil(64) } else { 0 }];
        let mut code = Vec::with_capacity(words);
        for d in 0..max {
            let v = &data[d * self.dim..(d + 1) * self.dim];
            if !v[0].is_nan() {
                let q = quantize(v);
                // A zero scale marks "no vector" (an all-zero vector scores 0 anyway).
                scale[d] = q.scale;
                q8[d * self.dim..(d + 1) * self.dim].copy_from_slice(&q.to_i8());
                if coded && q.scale != 0.0 {
                    code.clear();
                    super::signs::encode_into(v, &mut code);
                    signs[d * words..(d + 1) * words].copy_from_slice(&code);
                    with_code[d / 64] |= 1 << (d % 64);
                }
            }
        }
        Ok(SegmentVectors {
            dim: self.dim,
            data,
            q8,
            scale,
            signs,
            coded: with_code,
            scopes: Mutex::default(),
            graph: OnceLock::new(),
        })
    }

    /// (segments with a graph, segments whose graph is still being built), among the segments
    /// loaded so far: a benchmark waits for the second to reach zero.
    pub fn graphs(&self) -> (usize, usize) {
        let segments = self.segments.lock().unwrap_or_else(|e| e.into_inner());
        let large = segments
            .values()
            .filter(|v| v.scale.iter().filter(|s| **s != 0.0).count() >= self.ann_min_vectors);
        large.fold((0, 0), |(built, building), v| {
            if v.has_graph() {
                (built + 1, building)
            } else {
                (built, building + 1)
            }
        })
    }

    /// Forgets segments that no longer exist (merged or deleted).
    pub fn retain(&self, searcher: &Searcher) {
        let live: std::collections::HashSet<SegmentId> = searcher
            .segment_readers()
            .iter()
            .map(|s| s.segment_id())
            .collect();
        let mut segments = self.segments.lock().unwrap_or_else(|e| e.into_inner());
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        // Kept for the snapshots that hold them, only as long as one does.
        retired.retain(|id, v| v.strong_count() > 0 && !live.contains(id));
        segments.retain(|id, v| {
            let keep = live.contains(id);
            if !keep {
                retired.insert(*id, Arc::downgrade(v));
            }
            keep
        });
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) = Some(live);
    }
}

#[derive(Clone, Copy, PartialEq)]
struct Hit(f32, DocAddress);

impl Eq for Hit {}

impl Ord for Hit {
    /// Reversed so the heap's top is the worst hit kept; ties broken by address for determinism.
    fn cmp(&self, other: &Self) -> Ordering {
        other.0.total_cmp(&self.0).then_with(|| {
            (self.1.segment_ord, self.1.doc_id).cmp(&(other.1.segment_ord, other.1.doc_id))
        })
    }
}

impl PartialOrd for Hit {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn push(heap: &mut BinaryHeap<Hit>, k: usize, hit: Hit) {
    if heap.len() < k {
        heap.push(hit);
    } else if let Some(worst) = heap.peek()
        && hit < *worst
    {
        heap.pop();
        heap.push(hit);
    }
}

/// Scans the int8 copies for the best [`candidate_pool`] docs, then rescores the head of that
/// list exactly in f32: the top [`EXACT_TOP`] ranks come back with exact cosines, and the
/// candidate margin makes a quantization-induced miss of a true top vector negligible. Deeper
/// ranks keep their int8 scores.
pub struct DenseCollector {
    cache: Arc<VectorCache>,
    query: Arc<Vec<f32>>,
    quantized: Arc<Quantized>,
    /// The query's sign code ([`super::signs`]).
    signs: Arc<Vec<u64>>,
    k: usize,
    /// Docs in the whole searcher (0: unknown), so a graph segment searches for its share of
    /// the depth rather than all of it (see [`Self::with_total_docs`]).
    total_docs: usize,
}

/// The margin: the best `RESCORE × n` by int8 are rescored for an exact top `n`.
const RESCORE: usize = 4;
/// The ranks of a list that are exact. A deep list (hybrid fusion asks for 300) only feeds
/// fusion, where an int8 near-tie at rank 250 does not matter. Rescoring a deep list was most
/// of a cold dense leg: its f32 vectors (1.5 KiB each at 384 dimensions) are read from memory
/// the query embedding has just evicted from the caches. SciFact: the cold leg at depth 100
/// went 0.64 → 0.43 ms without it, nDCG@10 the same to three places (benches/RESULTS.md,
/// session 17).
const EXACT_TOP: usize = 16;

/// How many int8 candidates a top-`k` keeps.
fn candidate_pool(k: usize) -> usize {
    k.max(rescored(k))
}

/// How many of them (the best by int8) are rescored in f32.
fn rescored(k: usize) -> usize {
    RESCORE * k.min(EXACT_TOP)
}

impl DenseCollector {
    pub fn new(cache: Arc<VectorCache>, query: Vec<f32>, k: usize) -> Self {
        Self {
            cache,
            quantized: Arc::new(quantize(&query)),
            signs: Arc::new(super::signs::encode(&query)),
            query: Arc::new(query),
            k,
            total_docs: 0,
        }
    }

    /// The searcher holds `n` docs: a segment with a graph then asks its graph for about twice
    /// its share of the depth (plus a margin), not the whole depth. With a deep leg (fusion asks
    /// for 300) over many segments this is most of the dense leg's time; the top of the list is
    /// unaffected (the beam never falls under the scope's [`graph_beam`]), only the deep tail
    /// of the segments' lists is approximate — as it already is on the graph path. Scanned
    /// segments stay exact.
    pub fn with_total_docs(mut self, n: usize) -> Self {
        self.total_docs = n;
        self
    }
}

pub struct DenseSegmentCollector {
    seg: SegmentOrdinal,
    min_admitted: usize,
    sign_min_admitted: usize,
    sign_keep: usize,
    copy_min_admitted: usize,
    signs: Arc<Vec<u64>>,
    #[cfg(test)]
    paths: Arc<Mutex<Vec<&'static str>>>,
    #[cfg(test)]
    no_seeds: bool,
    #[cfg(test)]
    never_by_subject: bool,
    vectors: Arc<SegmentVectors>,
    query: Arc<Vec<f32>>,
    quantized: Arc<Quantized>,
    k: usize,
    /// The depth asked of this segment's graph (its share of `k`, see `with_total_docs`).
    graph_k: usize,
    /// The docs the scope admits (a bitset) and their count; scored at harvest, by the graph
    /// or by a scan that prefetches the docs ahead of the one it scores.
    admitted: Vec<u64>,
    count: usize,
}

impl Collector for DenseCollector {
    type Fruit = Vec<(f32, DocAddress)>;
    type Child = DenseSegmentCollector;

    fn for_segment(
        &self,
        seg: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<Self::Child> {
        self.segment(
            seg,
            reader,
            vec![0u64; (reader.max_doc() as usize).div_ceil(64)],
        )
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Self::Fruit>) -> tantivy::Result<Self::Fruit> {
        let mut heap = BinaryHeap::with_capacity(self.k + 1);
        for (s, a) in fruits.into_iter().flatten() {
            push(&mut heap, self.k, Hit(s, a));
        }
        let mut v: Vec<Hit> = heap.into_vec();
        v.sort();
        Ok(v.into_iter().map(|h| (h.0, h.1)).collect())
    }
}

impl DenseCollector {
    /// The segment's collector, with `admitted` as its bitset so far.
    fn segment(
        &self,
        seg: SegmentOrdinal,
        reader: &SegmentReader,
        admitted: Vec<u64>,
    ) -> tantivy::Result<DenseSegmentCollector> {
        Ok(DenseSegmentCollector {
            seg,
            min_admitted: self.cache.ann_min_admitted,
            sign_min_admitted: self.cache.sign_min_admitted,
            sign_keep: self.cache.sign_keep,
            copy_min_admitted: self.cache.copy_min_admitted,
            #[cfg(test)]
            paths: self.cache.paths.clone(),
            #[cfg(test)]
            no_seeds: self.cache.no_seeds,
            #[cfg(test)]
            never_by_subject: self.cache.never_by_subject,
            signs: self.signs.clone(),
            vectors: self.cache.get(reader)?,
            query: self.query.clone(),
            quantized: self.quantized.clone(),
            k: self.k,
            graph_k: if self.total_docs == 0 {
                self.k
            } else {
                let share = reader.max_doc() as f64 / self.total_docs as f64;
                self.k
                    .min((2.0 * self.k as f64 * share).ceil() as usize + 16)
            },
            admitted,
            count: 0,
        })
    }

    /// The nearest admitted docs, with each segment's admitted docs given as a bitset (the
    /// scope cache's, [`super::scope`]) instead of collected from a scope query.
    pub fn search_admitted(
        &self,
        searcher: &Searcher,
        admitted: &[Arc<super::scope::Admitted>],
    ) -> tantivy::Result<Vec<(f32, DocAddress)>> {
        let mut fruits = Vec::with_capacity(admitted.len());
        for (ord, reader) in searcher.segment_readers().iter().enumerate() {
            let bits = &admitted[ord];
            if bits.count() == 0 {
                continue;
            }
            let seg = self.segment(ord as SegmentOrdinal, reader, Vec::new())?;
            fruits.push(seg.search(bits.words(), bits.count()));
        }
        self.merge_fruits(fruits)
    }
}

impl SegmentCollector for DenseSegmentCollector {
    type Fruit = Vec<(f32, DocAddress)>;

    fn collect(&mut self, doc: DocId, _score: Score) {
        self.admitted[doc as usize / 64] |= 1 << (doc % 64);
        self.count += 1;
    }

    fn harvest(self) -> Self::Fruit {
        self.search(&self.admitted, self.count)
    }
}

impl DenseSegmentCollector {
    /// The segment's nearest docs among `bits` (`count` of them admitted).
    fn search(&self, bits: &[u64], count: usize) -> Vec<(f32, DocAddress)> {
        let pool = candidate_pool(self.k);
        let fraction = count as f64 / self.vectors.scale.len().max(1) as f64;
        let allowed = |d: u32| bits[d as usize / 64] & (1 << (d % 64)) != 0;
        let copy = self.scope_copy(bits, count, fraction, pool);
        let graph = self
            .vectors
            .graph
            .get()
            .filter(|_| copy.is_none())
            .filter(|_| count >= self.min_admitted && fraction >= ANN_MIN_FRACTION)
            .filter(|g| !self.subject_scope(g, bits, &allowed, count, fraction, pool));
        let by_graph = match graph {
            Some(graph) => {
                // The beam is this segment's depth (at least the scope's `graph_beam`): the
                // graph's candidates are rescored exactly anyway, and a beam of 4 × depth made a
                // 300-deep leg (hybrid fusion's default) cost 12 ms at 10⁵ chunks. Top-10 recall
                // only rises with the beam, so it stays at least the measured figure.
                let ef = graph_beam(fraction).max(self.graph_k);
                let found = graph.search(
                    self.vectors.view(),
                    self.quantized.values(),
                    self.quantized.scale(),
                    ef,
                    &allowed,
                    &self.seeds(bits, count),
                );
                // Fewer than the beam: the admitted docs the search could reach ran out before
                // the beam filled, so the scope's nearest may lie beyond them. The segment is
                // searched by a path that reads every admitted doc instead.
                if found.len() >= ef.min(count) {
                    self.took("graph");
                    let mut heap = BinaryHeap::with_capacity(pool + 1);
                    for (s, d) in found {
                        push(&mut heap, pool, Hit(s, DocAddress::new(self.seg, d)));
                    }
                    Some(heap.into_vec())
                } else {
                    self.took("graph gave up");
                    None
                }
            }
            _ => None,
        };
        let candidates: Vec<Hit> = match (by_graph, copy) {
            (Some(candidates), _) => candidates,
            (_, Some(copy)) => {
                let keep = self.kept_by_signs(pool);
                let helpers = crate::threads::helpers();
                let near = super::signs::nearest_compact(helpers, &copy, &self.signs, keep);
                self.score(&near, &[], pool)
            }
            // Only where the codes narrow the scope to half or less (a deep list keeps so
            // many that scanning them all is as fast), in a segment that has codes (one of
            // `sign_min_vectors` or more).
            _ if self.signs_serve(count, pool) => {
                self.took("signs");
                self.sign_scan(bits, pool)
            }
            _ => {
                self.took("scan");
                self.scan(bits, pool)
            }
        };
        // The head of the list by int8, rescored exactly; the rest keeps its int8 scores.
        let mut candidates = candidates;
        let head = rescored(self.k).min(candidates.len());
        if head > 0 && head < candidates.len() {
            candidates.select_nth_unstable(head - 1);
        }
        let mut out = BinaryHeap::with_capacity(self.k + 1);
        for (i, h) in candidates.into_iter().enumerate() {
            let hit = if i < head {
                match self.vectors.vector(h.1.doc_id) {
                    Some(v) => Hit(crate::embed::dot(&self.query, v), h.1),
                    None => continue,
                }
            } else {
                h
            };
            push(&mut out, self.k, hit);
        }
        out.into_iter().map(|h| (h.0, h.1)).collect()
    }

    /// Entry points for the graph among the admitted docs: the best [`SEEDS`] by int8 of every
    /// (`count` / [`SEED_SAMPLE`])-th admitted doc. The graph's upper levels lead to the
    /// query's neighbourhood whatever the scope; a scope that follows a subject (a
    /// department's documents) may admit nothing there, and a search that starts among refused
    /// docs finds few or no admitted ones (RESULTS.md, session 26).
    fn seeds(&self, bits: &[u64], count: usize) -> Vec<u32> {
        #[cfg(test)]
        if self.no_seeds {
            return Vec::new();
        }
        let sample = every_nth(bits, count.div_ceil(SEED_SAMPLE).max(1));
        self.score(&sample, &[], SEEDS)
            .into_iter()
            .map(|h| h.1.doc_id)
            .collect()
    }

    /// Whether the scope, a small enough share of the segment for the sign pass to serve it,
    /// follows a subject in `graph` ([`follows_a_subject`]): the sign pass then finds more of
    /// the top 10. Costs a walk over the scope's bitset and ~2k link tests.
    fn subject_scope(
        &self,
        graph: &super::ann::Hnsw,
        bits: &[u64],
        allowed: &dyn Fn(u32) -> bool,
        count: usize,
        fraction: f64,
        pool: usize,
    ) -> bool {
        #[cfg(test)]
        if self.never_by_subject {
            return false;
        }
        let subject = fraction <= SUBJECT_MAX_FRACTION
            && self.signs_serve(count, pool)
            && follows_a_subject(
                graph.admitted_link_share(
                    &every_nth(bits, count.div_ceil(LINK_SAMPLE).max(1)),
                    allowed,
                ),
                fraction,
            );
        if subject {
            self.took("subject");
        }
        subject
    }

    /// Whether the sign pass serves a scope of `count` docs for a list of `pool` candidates:
    /// the segment has codes, the scope is large enough, and the codes keep at most half of it.
    fn signs_serve(&self, count: usize, pool: usize) -> bool {
        count >= self.sign_min_admitted
            && count >= self.kept_by_signs(pool).saturating_mul(2)
            && !self.vectors.signs.is_empty()
    }

    /// How many docs the sign codes keep for a list of `pool` candidates.
    fn kept_by_signs(&self, pool: usize) -> usize {
        self.sign_keep.max(pool.saturating_mul(16))
    }

    /// Notes which path searched the segment (tests check that each test takes its path).
    fn took(&self, _path: &'static str) {
        #[cfg(test)]
        self.paths
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(_path);
    }

    /// The scope's bitset without the docs that have no code (no vector: the int8 pass would
    /// skip them anyway, so they take no kept place in the sign pass).
    fn coded(&self, bits: &[u64]) -> Vec<u64> {
        let coded = &self.vectors.coded;
        bits.iter().zip(coded).map(|(a, c)| a & c).collect()
    }

    /// The compact copy of the scope's codes ([`super::signs::Compact`]) where the sign pass
    /// is to read it: a scope of [`COMPACT_MIN_ADMITTED`] docs or more, and at most
    /// [`COMPACT_MAX_FRACTION`] of the segment, that the sign pass serves and that was
    /// searched lately. The scope's second search copies it; its first takes the path it would
    /// take without copies (the graph, or the sign pass over the scattered codes). Which
    /// depends on the searches made lately (this scope's, and how many other large scopes
    /// share the copies' budget: [`super::signs::Recent`]), never on the question or on which
    /// docs lie outside the scope.
    fn scope_copy(
        &self,
        bits: &[u64],
        count: usize,
        fraction: f64,
        pool: usize,
    ) -> Option<Arc<super::signs::Compact>> {
        if count < self.copy_min_admitted
            || fraction > COMPACT_MAX_FRACTION
            || !self.signs_serve(count, pool)
        {
            return None;
        }
        let admitted = self.coded(bits);
        let hash = super::signs::scope_hash(&admitted);
        let scopes = || {
            self.vectors
                .scopes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
        };
        let found = scopes().find(hash, &admitted);
        match found {
            super::signs::Found::Copy(copy) => {
                self.took("copy");
                Some(copy)
            }
            super::signs::Found::SeenBefore => {
                let words = super::signs::words(self.vectors.dim);
                let copy = Arc::new(super::signs::Compact::new(
                    &self.vectors.signs,
                    words,
                    Arc::new(admitted),
                ));
                scopes().keep(hash, copy.clone(), self.vectors.copy_budget());
                self.took("copied");
                Some(copy)
            }
            super::signs::Found::New => None,
        }
    }

    /// [`Self::scan`] of only the admitted docs nearest the query by sign code (at least
    /// [`SIGN_KEEP`], or 16 × `pool`): those hold the nearest by cosine (recall in the
    /// constant's note), for a fraction of the memory traffic.
    fn sign_scan(&self, bits: &[u64], pool: usize) -> Vec<Hit> {
        let near = super::signs::nearest(
            crate::threads::helpers(),
            &self.vectors,
            super::signs::words(self.vectors.dim),
            &self.signs,
            Arc::new(self.coded(bits)),
            self.kept_by_signs(pool),
        );
        self.score(&near, &[], pool)
    }

    /// The best `pool` admitted docs of `bits` by their int8 approximation, in no order.
    fn scan(&self, bits: &[u64], pool: usize) -> Vec<Hit> {
        let mut docs = Vec::new();
        let mut runs = Vec::new();
        for (w, word) in bits.iter().enumerate() {
            let word = *word;
            if word == u64::MAX && self.vectors.holds(w * 64 + 64) {
                runs.push(w as u32 * 64);
                continue;
            }
            push_docs(&mut docs, w, word);
        }
        self.score(&docs, &runs, pool)
    }

    /// The best `pool` of `docs` (ascending) and of the 64 consecutive docs from each of `runs`
    /// by their int8 approximation, in no order.
    fn score(&self, docs: &[u32], runs: &[u32], pool: usize) -> Vec<Hit> {
        // Docs in ascending order, each prefetched `AHEAD` docs before it is scored: scattered
        // docs are bound by memory latency, not arithmetic. Words of 64 admitted docs are
        // consecutive vectors: scored as one run.
        const AHEAD: usize = 8;
        // The best `pool` by the heap's order (better is smaller) in linear time, as tantivy's
        // top-n collector does: a buffer of twice the pool, cut back to the pool's best
        // whenever it fills; the worst kept then bars what follows.
        let fill = 2 * pool.max(32);
        let mut scored: Vec<Hit> = Vec::with_capacity(fill.min(docs.len() + 64 * runs.len()));
        let mut bar: Option<Hit> = None;
        let mut keep = |d: u32, s: f32| {
            let hit = Hit(s, DocAddress::new(self.seg, d));
            if bar.is_some_and(|b| hit >= b) {
                return;
            }
            scored.push(hit);
            if scored.len() >= fill {
                best(&mut scored, pool);
                bar = scored.iter().max().copied();
            }
        };
        let mut raw = [0i32; 64];
        for &first in runs {
            self.vectors
                .approx_run(first, &self.quantized, &mut raw, &mut keep);
        }
        for (i, &d) in docs.iter().enumerate() {
            if let Some(&ahead) = docs.get(i + AHEAD) {
                self.vectors.prefetch(ahead);
            }
            if let Some(s) = self.vectors.approx(d, &self.quantized) {
                keep(d, s);
            }
        }
        best(&mut scored, pool);
        scored
    }
}

/// Appends the docs of bitset word `w` (`word`'s set bits) to `docs`, in ascending order.
pub(super) fn push_docs(docs: &mut Vec<u32>, w: usize, word: u64) {
    push_docs_where(docs, w, word, |_| true);
}

/// [`push_docs`], only the docs `keep` takes.
#[inline(always)]
fn push_docs_where(docs: &mut Vec<u32>, w: usize, mut word: u64, keep: impl Fn(u32) -> bool) {
    while word != 0 {
        let d = w as u32 * 64 + word.trailing_zeros();
        if keep(d) {
            docs.push(d);
        }
        word &= word - 1;
    }
}

/// Every `stride`-th set bit of `bits` (the first, the `stride + 1`-th, …), ascending.
pub(super) fn every_nth(bits: &[u64], stride: usize) -> Vec<u32> {
    let mut out = Vec::new();
    let (mut rank, mut next) = (0, 0);
    for (w, &word) in bits.iter().enumerate() {
        let ones = word.count_ones() as usize;
        while next < rank + ones {
            let mut rest = word;
            for _ in rank..next {
                rest &= rest - 1;
            }
            out.push(w as u32 * 64 + rest.trailing_zeros());
            next += stride;
        }
        rank += ones;
    }
    out
}

/// Cuts `hits` back to its best `pool` (in no order).
fn best(hits: &mut Vec<Hit>, pool: usize) {
    if hits.len() > pool {
        if pool > 0 {
            hits.select_nth_unstable(pool - 1);
        }
        hits.truncate(pool);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_dot_tracks_f32_dot() {
        let a: Vec<f32> = (0..384)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 20.0)
            .collect();
        let b: Vec<f32> = (0..384)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 15.0)
            .collect();
        let (qa, qb) = (quantize(&a), quantize(&b));
        let approx =
            super::super::simd::dot_q(&qa.values, &qb.to_i8()) as f32 * qa.scale * qb.scale;
        let exact = crate::embed::dot(&a, &b);
        assert!(
            (approx - exact).abs() < 0.02 * exact.abs().max(1.0),
            "{approx} vs {exact}"
        );
        assert_eq!(
            super::super::simd::dot_q(&[1, -2, 3], &[4, 5, -6]),
            4 - 10 - 18
        );
        assert_eq!(quantize(&[0.0, 0.0]).scale, 0.0);
    }
}

#[cfg(test)]
mod graph_tests {
    use super::*;
    use tantivy::query::{BooleanQuery, TermQuery};
    use tantivy::schema::{FAST, IndexRecordOption, STRING, Schema};
    use tantivy::{Term, doc};

    /// One segment of `n` clustered vectors; doc `d` carries the term `g<d % 10>`.
    fn segment(n: usize, dim: usize) -> tantivy::Index {
        let mut sb = Schema::builder();
        let vector = sb.add_bytes_field("vector", FAST);
        let group = sb.add_text_field("group", STRING);
        let parity = sb.add_text_field("parity", STRING);
        let band = sb.add_text_field("band", STRING);
        let index = tantivy::Index::create_in_ram(sb.build());
        let vs = super::super::ann::clustered_vectors(n, dim, 11);
        let mut w = index.writer_with_num_threads(1, 50_000_000).unwrap();
        for (d, v) in vs.iter().enumerate() {
            w.add_document(doc!(
                vector => encode(v),
                group => format!("g{}", d % 10),
                parity => if d % 2 == 0 { "even" } else { "odd" },
                // A fifth of every cluster: a scope that follows no subject.
                band => format!("b{}", d / 20 % 5),
            ))
            .unwrap();
        }
        w.commit().unwrap();
        index
    }

    /// Session 43's review: a stored vector with a non-finite value (NaN past its first slot,
    /// or an infinity) was loaded as it was, and its NaN score sorted first for every query.
    /// Such a vector counts as none.
    #[test]
    fn a_stored_vector_that_is_not_finite_counts_as_none() {
        let mut sb = Schema::builder();
        let vector = sb.add_bytes_field("vector", FAST);
        let index = tantivy::Index::create_in_ram(sb.build());
        let mut w = index.writer_with_num_threads(1, 50_000_000).unwrap();
        for v in [
            [0.6f32, 0.8, 0.0, 0.0],
            [1.0, f32::NAN, 0.0, 0.0],
            [0.0, 1.0, f32::INFINITY, 0.0],
            [0.0, 0.0, 1.0, 0.0],
        ] {
            w.add_document(doc!(vector => encode(&v))).unwrap();
        }
        w.commit().unwrap();
        let searcher = index.reader().unwrap().searcher();
        let cache = Arc::new(VectorCache::new(4));
        let seg = cache.get(&searcher.segment_readers()[0]).unwrap();
        assert!(seg.vector(0).is_some() && seg.vector(3).is_some());
        assert!(seg.vector(1).is_none() && seg.vector(2).is_none());
        let top = searcher
            .search(
                &tantivy::query::AllQuery,
                &DenseCollector::new(cache.clone(), vec![1.0, 0.0, 0.0, 0.0], 4),
            )
            .unwrap();
        let docs: Vec<u32> = top.iter().map(|(_, a)| a.doc_id).collect();
        assert_eq!(docs, [0, 3]);
        assert!(top.iter().all(|(s, _)| s.is_finite()));
    }

    /// The docs of any of `groups`.
    fn in_groups(searcher: &Searcher, groups: &[&str]) -> BooleanQuery {
        let field = searcher.schema().get_field("group").unwrap();
        BooleanQuery::new(
            groups
                .iter()
                .map(|g| {
                    let q: Box<dyn tantivy::query::Query> = Box::new(TermQuery::new(
                        Term::from_field_text(field, g),
                        IndexRecordOption::Basic,
                    ));
                    (tantivy::query::Occur::Should, q)
                })
                .collect(),
        )
    }

    /// The top 10 for `q` among the docs of `groups`.
    fn top(
        searcher: &Searcher,
        cache: &Arc<VectorCache>,
        q: &[f32],
        groups: &[&str],
    ) -> Vec<DocId> {
        top_of(searcher, cache, q, &in_groups(searcher, groups))
    }

    /// The top 10 for `q` among the docs `scope` matches.
    fn top_of(
        searcher: &Searcher,
        cache: &Arc<VectorCache>,
        q: &[f32],
        scope: &dyn tantivy::query::Query,
    ) -> Vec<DocId> {
        searcher
            .search(scope, &DenseCollector::new(cache.clone(), q.to_vec(), 10))
            .unwrap()
            .into_iter()
            .map(|(_, a)| a.doc_id)
            .collect()
    }

    #[test]
    fn the_graph_path_keeps_the_scope_and_finds_what_the_scan_finds() {
        let index = segment(2000, 32);
        let searcher = index.reader().unwrap().searcher();
        let seg = &searcher.segment_readers()[0];
        let scan = Arc::new(VectorCache::new(32));
        let graph = Arc::new(VectorCache::new(32).with_ann_thresholds(1000, 100));
        let loaded = graph.get(seg).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !loaded.has_graph() {
            assert!(std::time::Instant::now() < deadline, "graph not built");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(
            !scan.get(seg).unwrap().has_graph(),
            "small segments are scanned"
        );
        // Groups 3 and 4: 400 of the 2000 docs, the graph's 20% (400 / 2000 is the same double
        // as the constant's 0.2).
        let recall = recall_of_exact(
            super::super::ann::clustered_vectors(30, 32, 77),
            |q| top(&searcher, &scan, q, &["g3", "g4"]),
            |q| top(&searcher, &graph, q, &["g3", "g4"]),
            |d| [3, 4].contains(&(d % 10)),
        );
        assert!(recall >= 0.95, "recall {recall}");
        took_only(&graph, "graph");
        took_only(&scan, "scan");
    }

    /// A segment of `n` clustered docs with its graph (thresholds lowered), searched through
    /// `cache`.
    fn with_graph(n: usize, cache: VectorCache) -> (tantivy::Index, Arc<VectorCache>) {
        let index = segment(n, 32);
        let cache = Arc::new(cache.with_ann_thresholds(1000, 100));
        let searcher = index.reader().unwrap().searcher();
        let loaded = cache.get(&searcher.segment_readers()[0]).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !loaded.has_graph() {
            assert!(std::time::Instant::now() < deadline, "graph not built");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        (index, cache)
    }

    /// Recall of the top 10 through `cache` against the exact scan, in groups 3 and 4. Doc d
    /// lies in cluster d % 20 and group d % 10, so the scope holds four of the twenty clusters
    /// (20% of the docs, the graph's share): around most queries every doc is refused.
    fn recall_in_four_clusters(index: &tantivy::Index, cache: &Arc<VectorCache>) -> f64 {
        let searcher = index.reader().unwrap().searcher();
        let scan = Arc::new(VectorCache::new(32));
        recall_of_exact(
            super::super::ann::clustered_vectors(100, 32, 77),
            |q| top(&searcher, &scan, q, &["g3", "g4"]),
            |q| top(&searcher, cache, q, &["g3", "g4"]),
            |d| [3, 4].contains(&(d % 10)),
        )
    }

    #[test]
    fn a_scope_that_follows_the_subjects_is_searched_from_inside_it() {
        let (index, cache) = with_graph(5000, VectorCache::new(32));
        let recall = recall_in_four_clusters(&index, &cache);
        assert!(recall >= 0.95, "recall {recall}");
        took_only(&cache, "graph");
    }

    #[test]
    fn a_graph_search_that_runs_out_of_admitted_docs_hands_over_to_the_scan() {
        let (index, cache) = with_graph(5000, VectorCache::new(32).without_seeds());
        let recall = recall_in_four_clusters(&index, &cache);
        assert!(recall >= 0.95, "recall {recall}");
        handed_over_to(&cache, "scan");
    }

    #[test]
    fn a_graph_search_that_runs_out_hands_over_to_the_sign_codes_where_they_serve() {
        // The sign pass takes scopes of 100 docs or more here, keeping at least 640 (16 × the
        // top 10's candidate pool) where that is at most half the scope: 1,600 docs of 8,000.
        let (index, cache) = with_graph(
            8000,
            VectorCache::new(32)
                .without_seeds()
                .never_by_subject()
                .with_sign_thresholds(1000, 100, 400),
        );
        let recall = recall_in_four_clusters(&index, &cache);
        assert!(recall >= 0.9, "recall {recall}");
        handed_over_to(&cache, "signs");
    }

    /// The docs of `field` = `value`.
    fn having(searcher: &Searcher, field: &str, value: &str) -> TermQuery {
        TermQuery::new(
            Term::from_field_text(searcher.schema().get_field(field).unwrap(), value),
            IndexRecordOption::Basic,
        )
    }

    /// Queries beside the corpus's own docs `docs` (their vectors, slightly moved).
    fn beside(n: usize, docs: impl Iterator<Item = usize>) -> Vec<Vec<f32>> {
        let vs = super::super::ann::clustered_vectors(n, 32, 11);
        let noise = super::super::ann::clustered_vectors(100, 32, 5);
        docs.zip(noise)
            .map(|(d, e)| {
                let v: Vec<f32> = vs[d].iter().zip(&e).map(|(x, y)| x + 0.05 * y).collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.into_iter().map(|x| x / norm).collect()
            })
            .collect()
    }

    /// A segment of 8,000 clustered docs with its graph, whose sign pass serves scopes of 100
    /// docs or more (keeping 640 at least).
    fn with_graph_and_signs() -> (tantivy::Index, Arc<VectorCache>) {
        with_graph(
            8000,
            VectorCache::new(32).with_sign_thresholds(1000, 100, 400),
        )
    }

    /// Session 52: a scope of 20% that follows subjects (clusters 3, 4, 13 and 14) takes the
    /// sign pass, where the filtered graph search found 0.86 of the top 10 at 10⁶ vectors for
    /// questions on other subjects, and it does so for every question, on its subjects or not.
    #[test]
    fn a_scope_that_follows_a_subject_takes_the_sign_pass() {
        let (index, cache) = with_graph_and_signs();
        let searcher = index.reader().unwrap().searcher();
        let scan = Arc::new(VectorCache::new(32));
        let recall = recall_of_exact(
            beside(8000, (0..8000).step_by(97).take(30)),
            |q| top(&searcher, &scan, q, &["g3", "g4"]),
            |q| top(&searcher, &cache, q, &["g3", "g4"]),
            |d| [3, 4].contains(&(d % 10)),
        );
        assert!(recall >= 0.9, "recall {recall}");
        assert_eq!(cache.paths(), ["subject", "signs"].repeat(30));
    }

    #[test]
    fn a_scope_that_follows_no_subject_keeps_the_graph() {
        let (index, cache) = with_graph_and_signs();
        let searcher = index.reader().unwrap().searcher();
        let b0 = having(&searcher, "band", "b0");
        for q in beside(8000, (0..8000).step_by(331).take(20)) {
            top_of(&searcher, &cache, &q, &b0);
        }
        took_only(&cache, "graph");
    }

    /// [`with_graph_and_signs`], with compact copies of scopes of 100 docs or more.
    fn with_copies() -> (tantivy::Index, Arc<VectorCache>) {
        with_graph(
            8000,
            VectorCache::new(32)
                .with_sign_thresholds(1000, 100, 400)
                .with_copy_threshold(100),
        )
    }

    /// Session 53: from a scope's second search on, the sign pass reads a compact copy of the
    /// scope's codes, and finds what the pass over the scattered codes found.
    #[test]
    fn a_scope_searched_again_reads_a_copy_of_its_codes_and_finds_the_same() {
        let (index, cache) = with_copies();
        let searcher = index.reader().unwrap().searcher();
        let queries = beside(8000, (0..8000).step_by(97).take(10));
        let first: Vec<Vec<DocId>> = queries
            .iter()
            .map(|q| top(&searcher, &cache, q, &["g3", "g4"]))
            .collect();
        for _ in 0..2 {
            for (q, want) in queries.iter().zip(&first) {
                assert_eq!(&top(&searcher, &cache, q, &["g3", "g4"]), want);
            }
        }
        let mut paths = vec!["subject", "signs", "copied"];
        paths.extend(["copy"; 28]);
        assert_eq!(cache.paths(), paths);
        assert!(first.iter().flatten().all(|d| [3, 4].contains(&(d % 10))));
        // Every question through the scattered codes (no copies) finds the same.
        let scattered = Arc::new(VectorCache::new(32).with_sign_thresholds(1000, 100, 400));
        for (q, want) in queries.iter().zip(&first) {
            assert_eq!(&top(&searcher, &scattered, q, &["g3", "g4"]), want);
        }
        // (Its graph may be built meanwhile: the scope follows a subject, so it is not taken.)
        let paths = scattered.paths();
        assert_eq!(
            paths.iter().filter(|p| **p == "signs").count(),
            10,
            "{paths:?}"
        );
        assert!(
            paths.iter().all(|p| ["signs", "subject"].contains(p)),
            "{paths:?}"
        );
    }

    /// A scope the graph searches the first time reads its copy from the second on, and finds
    /// what the exact scan finds.
    #[test]
    fn a_scope_searched_again_leaves_the_graph_for_its_copy() {
        let (index, cache) = with_copies();
        let searcher = index.reader().unwrap().searcher();
        let scan = Arc::new(VectorCache::new(32));
        let b0 = having(&searcher, "band", "b0");
        let queries = beside(8000, (0..8000).step_by(331).take(20));
        let recall = recall_of_exact(
            queries,
            |q| top_of(&searcher, &scan, q, &b0),
            |q| top_of(&searcher, &cache, q, &b0),
            |d| d / 20 % 5 == 0,
        );
        assert!(recall >= 0.9, "recall {recall}");
        let mut paths = vec!["graph", "copied"];
        paths.extend(["copy"; 18]);
        assert_eq!(cache.paths(), paths);
    }

    /// Scopes searched in turn each get their own copy: no search returns a doc of another
    /// scope, and each scope's later searches find what its first copied search found.
    #[test]
    fn scopes_searched_in_turn_never_read_each_others_copies() {
        let (index, cache) = with_copies();
        let searcher = index.reader().unwrap().searcher();
        // Each scope's query, and which docs it admits.
        type Scope = (Box<dyn tantivy::query::Query>, fn(DocId) -> bool);
        let scopes: Vec<Scope> = vec![
            (Box::new(in_groups(&searcher, &["g3", "g4"])), |d| {
                [3, 4].contains(&(d % 10))
            }),
            (Box::new(in_groups(&searcher, &["g3", "g5"])), |d| {
                [3, 5].contains(&(d % 10))
            }),
            (Box::new(having(&searcher, "band", "b0")), |d| {
                d / 20 % 5 == 0
            }),
            (Box::new(having(&searcher, "band", "b1")), |d| {
                d / 20 % 5 == 1
            }),
        ];
        let q = &beside(8000, [4321].into_iter())[0];
        let mut seen: Vec<Vec<Vec<DocId>>> = vec![Vec::new(); scopes.len()];
        for _ in 0..4 {
            for (i, (scope, admits)) in scopes.iter().enumerate() {
                let got = top_of(&searcher, &cache, q, scope.as_ref());
                assert_eq!(got.len(), 10);
                assert!(got.iter().all(|&d| admits(d)), "scope {i}: {got:?}");
                seen[i].push(got);
            }
        }
        for (i, rounds) in seen.iter().enumerate() {
            assert!(rounds[2..].iter().all(|r| *r == rounds[1]), "scope {i}");
        }
        let paths = cache.paths();
        assert_eq!(paths.iter().filter(|p| **p == "copied").count(), 4);
        assert_eq!(paths.iter().filter(|p| **p == "copy").count(), 8);
    }

    /// ACL property over every path of the leg at once: random scopes (some groups, perhaps
    /// one parity) searched in random order, many of them again, through a cache whose graph,
    /// sign pass and compact copies all serve (the copies' budget of this small segment holds
    /// a few, so copies are also dropped and made again): every result lies in its scope.
    #[test]
    fn random_scopes_searched_again_and_again_never_leave_their_scope() {
        let (index, cache) = with_copies();
        let searcher = index.reader().unwrap().searcher();
        let group = searcher.schema().get_field("group").unwrap();
        let parity = searcher.schema().get_field("parity").unwrap();
        let term = |f, v: &str| -> Box<dyn tantivy::query::Query> {
            Box::new(TermQuery::new(
                Term::from_field_text(f, v),
                IndexRecordOption::Basic,
            ))
        };
        let mut s = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        // Twelve scopes, each a set of groups (bit g) and a parity or none.
        let scopes: Vec<(u64, u64)> = (0..12).map(|_| (next() % 1023 + 1, next() % 3)).collect();
        let queries = beside(8000, (0..8000).step_by(53).take(40));
        for case in 0..240 {
            let (groups, par) = scopes[next() as usize % scopes.len()];
            let mut must: Vec<(tantivy::query::Occur, Box<dyn tantivy::query::Query>)> = vec![(
                tantivy::query::Occur::Must,
                Box::new(BooleanQuery::new(
                    (0..10)
                        .filter(|g| groups >> g & 1 == 1)
                        .map(|g| (tantivy::query::Occur::Should, term(group, &format!("g{g}"))))
                        .collect(),
                )),
            )];
            if par > 0 {
                let p = if par == 1 { "even" } else { "odd" };
                must.push((tantivy::query::Occur::Must, term(parity, p)));
            }
            let admits =
                |d: DocId| groups >> (d % 10) & 1 == 1 && (par == 0 || d % 2 == (par - 1) as u32);
            let q = &queries[next() as usize % queries.len()];
            let got = top_of(&searcher, &cache, q, &BooleanQuery::new(must));
            let admitted = (0..8000).filter(|&d| admits(d)).count();
            assert_eq!(got.len(), admitted.min(10), "case {case}");
            assert!(got.iter().all(|&d| admits(d)), "case {case}: {got:?}");
        }
        let paths = cache.paths();
        for path in ["copy", "copied"] {
            assert!(paths.contains(&path), "{path} never taken: {paths:?}");
        }
    }

    #[test]
    fn a_subject_needs_a_small_scope_whose_links_stay_inside_it() {
        assert!(follows_a_subject(0.4, 0.2));
        assert!(follows_a_subject(0.9, 0.2));
        assert!(!follows_a_subject(0.39, 0.2));
        assert!(!follows_a_subject(0.2, 0.2));
        assert!(follows_a_subject(0.8, SUBJECT_MAX_FRACTION));
        assert!(!follows_a_subject(1.0, 0.41));
    }

    /// Some graph search through `cache` gave up, and each that did was followed by `path`.
    fn handed_over_to(cache: &VectorCache, path: &str) {
        let paths = cache.paths();
        assert!(paths.contains(&"graph gave up"), "{paths:?}");
        for pair in paths.windows(2) {
            if pair[0] == "graph gave up" {
                assert_eq!(pair[1], path, "{paths:?}");
            }
        }
    }

    #[test]
    fn every_nth_takes_each_stride_of_admitted_docs() {
        let mut bits = vec![0u64; 4];
        let set: Vec<u32> = vec![1, 2, 5, 63, 64, 70, 130, 131, 200, 255];
        for &d in &set {
            bits[d as usize / 64] |= 1 << (d % 64);
        }
        assert_eq!(every_nth(&bits, 1), set);
        assert_eq!(every_nth(&bits, 3), vec![1, 63, 130, 255]);
        assert_eq!(every_nth(&bits, 4), vec![1, 64, 200]);
        assert_eq!(every_nth(&bits, 20), vec![1]);
        assert!(every_nth(&[0, 0], 2).is_empty());
    }

    /// The approximate top 10 of each query (every doc of it in scope, ten of them) against
    /// the exact one: the share of the exact docs it holds.
    fn recall_of_exact(
        queries: Vec<Vec<f32>>,
        exact: impl Fn(&[f32]) -> Vec<DocId>,
        approx: impl Fn(&[f32]) -> Vec<DocId>,
        in_scope: impl Fn(DocId) -> bool,
    ) -> f64 {
        let (mut same, mut total) = (0, 0);
        for q in queries {
            let (exact, approx) = (exact(&q), approx(&q));
            assert!(
                approx.iter().all(|&d| in_scope(d)),
                "{approx:?} leaves the scope"
            );
            assert_eq!(approx.len(), 10);
            same += approx.iter().filter(|d| exact.contains(d)).count();
            total += exact.len();
        }
        same as f64 / total as f64
    }

    /// Every search through `cache` took `path`.
    fn took_only(cache: &VectorCache, path: &str) {
        let paths = cache.paths();
        assert!(
            !paths.is_empty() && paths.iter().all(|p| *p == path),
            "{paths:?}"
        );
    }

    #[test]
    fn the_sign_code_pass_keeps_the_scope_and_finds_what_the_scan_finds() {
        let index = segment(4000, 64);
        let searcher = index.reader().unwrap().searcher();
        let scan = Arc::new(VectorCache::new(64));
        // Every scope of 100 docs or more goes through the codes, which keep 1000 of the 2000
        // even docs (synthetic clusters: their codes say less than real embeddings').
        let signs = Arc::new(VectorCache::new(64).with_sign_thresholds(1000, 100, 1000));
        let even = having(&searcher, "parity", "even");
        let recall = recall_of_exact(
            super::super::ann::clustered_vectors(30, 64, 77),
            |q| top_of(&searcher, &scan, q, &even),
            |q| top_of(&searcher, &signs, q, &even),
            |d| d % 2 == 0,
        );
        assert!(recall >= 0.9, "recall {recall}");
        took_only(&signs, "signs");
    }

    /// A 2000-vector segment with a scan-only cache over it, and the cache's vectors.
    fn scanned() -> (
        tantivy::Index,
        Searcher,
        Arc<VectorCache>,
        Arc<SegmentVectors>,
    ) {
        let index = segment(2000, 32);
        let searcher = index.reader().unwrap().searcher();
        let cache = Arc::new(VectorCache::new(32));
        let vectors = cache.get(&searcher.segment_readers()[0]).unwrap();
        (index, searcher, cache, vectors)
    }

    /// Hits by score, then doc: the order both the exact answer and the collector's are
    /// compared in.
    fn by_score(mut hits: Vec<(f32, DocId)>) -> Vec<(f32, DocId)> {
        hits.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        hits
    }

    #[test]
    fn the_scan_returns_the_exact_top_k_in_scope_with_exact_scores() {
        // 2000 clustered vectors, 200 in scope: far more than the 40 the scan rescores for 10.
        let (_index, searcher, cache, vectors) = scanned();
        let field = searcher.schema().get_field("group").unwrap();
        let query = TermQuery::new(Term::from_field_text(field, "g7"), IndexRecordOption::Basic);
        for q in super::super::ann::clustered_vectors(20, 32, 5) {
            let found = searcher
                .search(&query, &DenseCollector::new(cache.clone(), q.clone(), 10))
                .unwrap();
            let mut exact = by_score(
                (0..2000u32)
                    .filter(|d| d % 10 == 7)
                    .map(|d| (crate::embed::dot(&q, vectors.vector(d).unwrap()), d))
                    .collect(),
            );
            exact.truncate(10);
            let got = by_score(found.iter().map(|(s, a)| (*s, a.doc_id)).collect());
            assert_eq!(got, exact);
        }
    }

    /// A deep list (fusion asks for 300) rescores a margin for its top only: its first
    /// `EXACT_TOP` ranks are exactly the true ones, in order, with exact cosines; every deeper
    /// score is its int8 approximation, within quantization error of the cosine.
    #[test]
    fn a_deep_list_is_exact_at_its_top() {
        let (_index, searcher, cache, vectors) = scanned();
        assert_eq!(candidate_pool(300), 300);
        assert!(rescored(300) < 300 && rescored(10) == 10 * RESCORE);
        for q in super::super::ann::clustered_vectors(10, 32, 9) {
            let found = searcher
                .search(
                    &tantivy::query::AllQuery,
                    &DenseCollector::new(cache.clone(), q.clone(), 300),
                )
                .unwrap();
            assert_eq!(found.len(), 300);
            let exact = by_score(
                (0..2000u32)
                    .map(|d| (crate::embed::dot(&q, vectors.vector(d).unwrap()), d))
                    .collect(),
            );
            let got = by_score(found.iter().map(|(s, a)| (*s, a.doc_id)).collect());
            assert_eq!(got[..EXACT_TOP], exact[..EXACT_TOP]);
            let mut approximate = 0;
            for (s, d) in &got {
                let cosine = crate::embed::dot(&q, vectors.vector(*d).unwrap());
                assert!((s - cosine).abs() < 0.02, "doc {d}: {s} against {cosine}");
                approximate += usize::from(*s != cosine);
            }
            // The tail really is int8: the test would not notice a full rescoring otherwise.
            assert!(approximate > 0);
        }
    }

    /// Builds go through one queue: a segment retired before its turn is skipped, and the
    /// worker goes on with the next (the graph count reports the live one only).
    #[test]
    fn a_retired_segment_is_skipped_and_the_queue_goes_on() {
        let cache = VectorCache::new(32).with_ann_thresholds(1000, 100);
        let index = segment(2000, 32);
        let searcher = index.reader().unwrap().searcher();
        let seg = &searcher.segment_readers()[0];
        let live = Arc::new(cache.load(seg).unwrap());
        let retired = Arc::new(cache.load(seg).unwrap());
        let weak = Arc::downgrade(&retired);
        drop(retired);
        cache.queue_build(weak);
        cache.queue_build(Arc::downgrade(&live));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !live.has_graph() {
            assert!(
                std::time::Instant::now() < deadline,
                "the live segment's graph was not built"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Through `get`, only segments the cache holds count.
        let held = cache.get(seg).unwrap();
        assert_eq!(cache.graphs().0 + cache.graphs().1, 1);
        drop(held);
    }

    /// Found by a review: a query on a snapshot older than the last commit decoded a segment
    /// merged away since and cached it again, with a graph build queued for it; and two racing
    /// loads kept the second while the first was built.
    #[test]
    fn a_retired_segment_is_not_cached_again_and_racing_loads_keep_one() {
        let (old, new) = (segment(2000, 32), segment(10, 32));
        let cache = VectorCache::new(32).with_ann_thresholds(1000, 100);
        let (old_reader, new_reader) = (old.reader().unwrap(), new.reader().unwrap());
        let (old_searcher, new_searcher) = (old_reader.searcher(), new_reader.searcher());
        let seg = &old_searcher.segment_readers()[0];
        // The live searcher no longer holds the old segment.
        cache.retain(&new_searcher);
        let a = cache.get(seg).unwrap();
        // Shared while a snapshot holds it (session 43), not cached past that.
        let b = cache.get(seg).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "one decode for the queries holding it");
        let held = Arc::downgrade(&a);
        drop((a, b));
        assert!(
            held.upgrade().is_none(),
            "decoded for the queries, not cached"
        );
        assert_eq!(cache.decoded(), 1);
        drop(cache.get(seg).unwrap());
        assert_eq!(cache.decoded(), 2, "decoded again once no one holds it");
        assert_eq!(cache.graphs(), (0, 0), "no build queued");
        // A live segment is cached once, whoever loads it first.
        cache.retain(&old_searcher);
        let first = cache.get(seg).unwrap();
        assert!(Arc::ptr_eq(&first, &cache.get(seg).unwrap()));
        assert_eq!(cache.graphs().0 + cache.graphs().1, 1);
    }

    /// Deletes leave the segment (and its graph) in place; the deleted docs are walked through
    /// but never returned, since only docs the scope query yields are admitted.
    #[test]
    fn deleted_docs_never_come_back_through_the_graph() {
        let index = segment(2000, 32);
        let graph = Arc::new(VectorCache::new(32).with_ann_thresholds(1000, 100));
        let reader = index.reader().unwrap();
        let loaded = graph.get(&reader.searcher().segment_readers()[0]).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !loaded.has_graph() {
            assert!(std::time::Instant::now() < deadline, "graph not built");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let parity = index.schema().get_field("parity").unwrap();
        let mut w: tantivy::IndexWriter = index.writer_with_num_threads(1, 50_000_000).unwrap();
        w.delete_term(Term::from_field_text(parity, "odd"));
        w.commit().unwrap();
        reader.reload().unwrap();
        let searcher = reader.searcher();
        assert_eq!(
            searcher.segment_readers().len(),
            1,
            "the same segment, with deletes"
        );
        assert!(
            Arc::ptr_eq(&graph.get(&searcher.segment_readers()[0]).unwrap(), &loaded),
            "its graph is reused"
        );
        // Groups 3 to 6 (800 docs, 400 of them alive): the graph path (≥ 20% of the segment).
        let scope = in_groups(&searcher, &["g3", "g4", "g5", "g6"]);
        for q in super::super::ann::clustered_vectors(20, 32, 78) {
            let hits = searcher
                .search(&scope, &DenseCollector::new(graph.clone(), q, 10))
                .unwrap();
            assert_eq!(hits.len(), 10);
            for (_, a) in hits {
                assert!(a.doc_id % 2 == 0, "deleted doc {} returned", a.doc_id);
                assert!(
                    [3, 4, 5, 6].contains(&(a.doc_id % 10)),
                    "{} leaves the scope",
                    a.doc_id
                );
            }
        }
        took_only(&graph, "graph");
    }
}
