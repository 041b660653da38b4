//! Filtered approximate nearest neighbours: an HNSW graph (Malkov & Yashunin) over one segment's
//! int8 vectors, searched with the caller's filter applied *during* the graph search, so a
//! restrictive ACL scope does not lose results the way post-filtering a top-k does. On level 0
//! only admitted nodes are scored and expanded, ACORN-style (Patel et al., SIGMOD 2024): a
//! node's neighbourhood is its admitted links, completed with the admitted links of its refused
//! links (two hops, round robin over them), so the admitted subgraph stays navigable.
//!
//! Measured (`benches/ann.rs`, real MiniLM vectors extended to 10⁶, RESULTS.md session 7):
//! recall@10 0.997 at 0.41 ms unfiltered, 0.957 at 1.9 ms with 10% admitted, 0.60 with 1%
//! (where the dense leg takes the sign-code pass or scans exactly instead;
//! `dense::ANN_MIN_FRACTION`). Build: batches
//! planned in parallel against the graph as it was before the batch and applied in doc order
//! with each touched neighbour list pruned once, so the graph does not depend on the thread
//! count (tested); 541 s for 10⁶ vectors on 2 cores. The graph is rebuilt when a segment is
//! loaded, never persisted (`to_bytes` serves benchmarks only).
//!
//! Written here rather than taken from a crate: the graph works directly on the int8 copies the
//! scan already holds (no second copy of 10⁶ × 384 floats), the filter is a plain closure over
//! doc ids, and the build is deterministic (seeded), which the tests rely on. `hnsw_rs` would
//! bring rayon, mmap and its own distance crate for the same algorithm; `usearch` is C++ behind
//! FFI, with filtering by callback only.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap};

use super::simd::{dot_ii, dot_q, prefetch};

/// One segment's int8 vectors as the scan holds them: `dim` values per doc, and a scale per doc
/// (0: the doc has no vector).
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub dim: usize,
    pub values: &'a [i8],
    pub scale: &'a [f32],
}

impl View<'_> {
    fn vector(&self, d: u32) -> &[i8] {
        &self.values[d as usize * self.dim..(d as usize + 1) * self.dim]
    }

    fn sim(&self, a: u32, b: u32) -> f32 {
        dot_ii(self.vector(a), self.vector(b)) as f32
            * self.scale[a as usize]
            * self.scale[b as usize]
    }

    fn sim_query(&self, q: &[i16], q_scale: f32, d: u32) -> f32 {
        dot_q(q, self.vector(d)) as f32 * q_scale * self.scale[d as usize]
    }

    fn len(&self) -> usize {
        self.scale.len()
    }

    fn prefetch(&self, nodes: &[u32]) {
        for &d in nodes {
            prefetch(self.vector(d));
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Links per node above level 0.
    pub m: usize,
    /// Links per node on level 0 (HNSW's usual choice is `2 m`; more links keep the admitted
    /// subgraph of a restrictive filter connected, ACORN-γ's idea, at a longer build).
    pub m0: usize,
    /// Candidate list size while building.
    pub ef_construction: usize,
    pub seed: u64,
    /// Build threads (the result does not depend on it: batches are planned in parallel against
    /// the graph as it was before the batch, and applied in doc order).
    pub threads: usize,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            m: 16,
            m0: 32,
            ef_construction: 128,
            seed: 0x5eed,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// A similarity and a node, ordered by similarity (ties by node, for determinism).
#[derive(Clone, Copy, PartialEq)]
struct Cand(f32, u32);

impl Eq for Cand {}

impl Ord for Cand {
    fn cmp(&self, o: &Self) -> Ordering {
        self.0.total_cmp(&o.0).then_with(|| o.1.cmp(&self.1))
    }
}

impl PartialOrd for Cand {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// The graph. Node ids are the segment's doc ids; docs without a vector are not in it.
pub struct Hnsw {
    m: usize,
    m0: usize,
    entry: Option<u32>,
    max_level: usize,
    /// Level-0 links: `m0` slots per doc, `u32::MAX` = empty.
    links0: Vec<u32>,
    /// Links on levels 1.. of each doc (empty for docs only on level 0).
    upper: Vec<Vec<Vec<u32>>>,
}

const EMPTY: u32 = u32::MAX;

/// Graphs smaller than this are built one insertion at a time; larger ones in batches of up to
/// 1/64 of the graph so far (at most [`MAX_BATCH`]), planned in parallel.
const SEQUENTIAL_PREFIX: usize = 4096;
const MAX_BATCH: usize = 1024;
/// A filtered expansion completes its admitted links with two-hop ones up to this many.
const FILTERED_FILL: usize = 32;

/// Visited marks, reused across searches: clearing resets only the words a search touched (a
/// fresh bitset per insertion made the build quadratic).
struct Visited {
    bits: Vec<u64>,
    touched: Vec<u32>,
}

impl Visited {
    fn new(n: usize) -> Self {
        Self {
            bits: vec![0; n.div_ceil(64)],
            touched: Vec::new(),
        }
    }

    fn clear(&mut self) {
        for w in self.touched.drain(..) {
            self.bits[w as usize] = 0;
        }
    }

    /// Marks `d`; true when it was not marked before.
    fn insert(&mut self, d: u32) -> bool {
        let (w, b) = (d as usize / 64, d % 64);
        let word = &mut self.bits[w];
        if *word & (1 << b) != 0 {
            return false;
        }
        if *word == 0 {
            self.touched.push(w as u32);
        }
        *word |= 1 << b;
        true
    }
}

/// What one insertion links: per level (top first), the node's chosen neighbours.
type Plan = Vec<(usize, Vec<u32>)>;

impl Hnsw {
    /// Builds the graph over every doc of `view` that has a vector.
    pub fn build(view: View<'_>, params: Params) -> Self {
        let n = view.len();
        let m = params.m.max(2);
        let m0 = params.m0.max(m);
        let mut g = Self {
            m,
            m0,
            entry: None,
            max_level: 0,
            links0: vec![EMPTY; n * m0],
            upper: vec![Vec::new(); n],
        };
        let ml = 1.0 / (m as f64).ln();
        let mut rng = params.seed | 1;
        let mut nodes: Vec<(u32, usize)> = Vec::new();
        for d in 0..n as u32 {
            if view.scale[d as usize] == 0.0 {
                continue;
            }
            // splitmix64 → uniform (0, 1] → level.
            rng = rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let u = ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
            nodes.push((d, ((-u.ln() * ml) as usize).min(16)));
        }
        let threads = params.threads.max(1);
        let mut visited: Vec<Visited> = (0..threads).map(|_| Visited::new(n)).collect();
        let mut i = 0;
        while i < nodes.len() {
            let batch = if i < SEQUENTIAL_PREFIX {
                1
            } else {
                (i / 64).clamp(1, MAX_BATCH)
            };
            let end = (i + batch).min(nodes.len());
            g.insert_batch(&view, &nodes[i..end], params.ef_construction, &mut visited);
            i = end;
        }
        g
    }

    /// Plans every insertion of `batch` against the graph as it is (in parallel), then links
    /// them in order, pruning each touched neighbour list once (in parallel).
    fn insert_batch(
        &mut self,
        view: &View<'_>,
        batch: &[(u32, usize)],
        ef_c: usize,
        visited: &mut [Visited],
    ) {
        let plans: Vec<Plan> = if batch.len() == 1 || visited.len() == 1 {
            batch
                .iter()
                .map(|&(d, level)| self.plan(view, d, level, ef_c, &mut visited[0]))
                .collect()
        } else {
            let per = batch.len().div_ceil(visited.len());
            let this = &*self;
            std::thread::scope(|s| {
                let handles: Vec<_> = batch
                    .chunks(per)
                    .zip(visited.iter_mut())
                    .map(|(part, vis)| {
                        s.spawn(move || {
                            part.iter()
                                .map(|&(d, level)| this.plan(view, d, level, ef_c, vis))
                                .collect::<Vec<Plan>>()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().expect("HNSW build thread panicked"))
                    .collect()
            })
        };
        // New nodes' own links, and what each existing neighbour list receives.
        let mut incoming: BTreeMap<(u32, usize), Vec<u32>> = BTreeMap::new();
        for (&(d, level), plan) in batch.iter().zip(&plans) {
            self.upper[d as usize] = vec![Vec::new(); level];
            for (lev, chosen) in plan {
                self.set_links(d, *lev, chosen);
                for &nb in chosen {
                    incoming.entry((nb, *lev)).or_default().push(d);
                }
            }
        }
        let work: Vec<((u32, usize), Vec<u32>)> = incoming.into_iter().collect();
        let updated: Vec<Vec<u32>> = if work.len() < 64 || visited.len() == 1 {
            work.iter()
                .map(|(k, add)| self.merged(view, *k, add))
                .collect()
        } else {
            let per = work.len().div_ceil(visited.len());
            let this = &*self;
            std::thread::scope(|s| {
                let handles: Vec<_> = work
                    .chunks(per)
                    .map(|part| {
                        s.spawn(move || {
                            part.iter()
                                .map(|(k, add)| this.merged(view, *k, add))
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().expect("HNSW build thread panicked"))
                    .collect()
            })
        };
        for (((nb, lev), _), links) in work.iter().zip(updated) {
            self.set_links(*nb, *lev, &links);
        }
        for &(d, level) in batch {
            if self.entry.is_none() || level > self.max_level {
                self.max_level = level;
                self.entry = Some(d);
            }
        }
    }

    /// The neighbours `d` links to on each of its levels the graph already has.
    fn plan(&self, view: &View<'_>, d: u32, level: usize, ef_c: usize, vis: &mut Visited) -> Plan {
        let Some(mut ep) = self.entry else {
            return Vec::new();
        };
        let q: Vec<i16> = view.vector(d).iter().map(|x| *x as i16).collect();
        let qs = view.scale[d as usize];
        for lev in (level + 1..=self.max_level).rev() {
            ep = self.greedy(view, &q, qs, ep, lev);
        }
        let mut eps = vec![ep];
        let mut plan = Vec::new();
        for lev in (0..=level.min(self.max_level)).rev() {
            let found = self.layer(view, &q, qs, &eps, ef_c, lev, &|_| true, vis);
            let want = if lev == 0 { self.m0 / 2 } else { self.m };
            plan.push((lev, select(view, &found, want.max(self.m))));
            eps = found.iter().map(|c| c.1).collect();
        }
        plan
    }

    /// `nb`'s links on `lev` with `add` appended, pruned to the level's capacity.
    fn merged(&self, view: &View<'_>, (nb, lev): (u32, usize), add: &[u32]) -> Vec<u32> {
        let cap = if lev == 0 { self.m0 } else { self.m };
        let mut links: Vec<u32> = self.links(nb, lev).to_vec();
        links.extend_from_slice(add);
        if links.len() > cap {
            let mut cands: Vec<Cand> = links.iter().map(|&x| Cand(view.sim(nb, x), x)).collect();
            cands.sort_by(|a, b| b.cmp(a));
            links = select(view, &cands, cap);
        }
        links
    }

    fn links(&self, d: u32, level: usize) -> &[u32] {
        if level == 0 {
            let s = &self.links0[d as usize * self.m0..(d as usize + 1) * self.m0];
            let len = s.iter().position(|&x| x == EMPTY).unwrap_or(s.len());
            &s[..len]
        } else {
            &self.upper[d as usize][level - 1]
        }
    }

    fn set_links(&mut self, d: u32, level: usize, links: &[u32]) {
        if level == 0 {
            let s = &mut self.links0[d as usize * self.m0..(d as usize + 1) * self.m0];
            s.fill(EMPTY);
            s[..links.len()].copy_from_slice(links);
        } else {
            self.upper[d as usize][level - 1] = links.to_vec();
        }
    }

    fn greedy(&self, view: &View<'_>, q: &[i16], qs: f32, mut ep: u32, level: usize) -> u32 {
        let mut best = view.sim_query(q, qs, ep);
        loop {
            let mut moved = false;
            for &nb in self.links(ep, level) {
                let s = view.sim_query(q, qs, nb);
                if s > best {
                    best = s;
                    ep = nb;
                    moved = true;
                }
            }
            if !moved {
                return ep;
            }
        }
    }

    /// The `ef` best nodes `allowed` admits, found from `eps` on `level`, best first (the build
    /// admits every node). Under a filter, ACORN-style (Patel et al., SIGMOD 2024): only
    /// admitted nodes are scored and expanded; a node's neighbourhood is its admitted links,
    /// completed with the admitted links of its refused links (two hops, up to
    /// [`FILTERED_FILL`]), so the admitted subgraph stays connected when the filter refuses most
    /// nodes. Without a filter this is the plain HNSW search.
    #[allow(clippy::too_many_arguments)]
    fn layer(
        &self,
        view: &View<'_>,
        q: &[i16],
        qs: f32,
        eps: &[u32],
        ef: usize,
        level: usize,
        allowed: &dyn Fn(u32) -> bool,
        visited: &mut Visited,
    ) -> Vec<Cand> {
        visited.clear();
        let mut cands = BinaryHeap::new();
        let mut best: BinaryHeap<Reverse<Cand>> = BinaryHeap::new();
        // Refused entry points are expanded (their two-hop neighbourhoods) but never returned.
        for &ep in eps {
            if visited.insert(ep) {
                let c = Cand(view.sim_query(q, qs, ep), ep);
                cands.push(c);
                if allowed(ep) {
                    best.push(Reverse(c));
                }
            }
        }
        while best.len() > ef {
            best.pop();
        }
        let mut next: Vec<u32> = Vec::with_capacity(self.m0);
        while let Some(c) = cands.pop() {
            if best.len() >= ef && best.peek().is_some_and(|w| c.0 < w.0.0) {
                break;
            }
            next.clear();
            let links = self.links(c.1, level);
            let mut refused = 0;
            for &nb in links {
                if allowed(nb) {
                    if visited.insert(nb) {
                        next.push(nb);
                    }
                } else {
                    refused += 1;
                }
            }
            if refused > 0 && next.len() < self.m0.min(FILTERED_FILL) {
                // Round robin over the refused links, one admitted link of each per round, so
                // the list covers every direction instead of the first few links' surroundings.
                let refused: Vec<&[u32]> = links
                    .iter()
                    .filter(|&&nb| !allowed(nb))
                    .map(|&nb| self.links(nb, level))
                    .collect();
                let mut cursor = vec![0usize; refused.len()];
                let mut progress = true;
                'rounds: while progress {
                    progress = false;
                    for (two, at) in refused.iter().zip(cursor.iter_mut()) {
                        while let Some(&nb2) = two.get(*at) {
                            *at += 1;
                            if allowed(nb2) && visited.insert(nb2) {
                                next.push(nb2);
                                progress = true;
                                if next.len() >= self.m0.min(FILTERED_FILL) {
                                    break 'rounds;
                                }
                                break;
                            }
                        }
                    }
                }
            }
            view.prefetch(&next);
            for &nb in &next {
                offer(
                    &mut cands,
                    &mut best,
                    ef,
                    Cand(view.sim_query(q, qs, nb), nb),
                );
            }
        }
        best_first(best)
    }

    /// The (approximate int8 similarity, doc) pairs of up to `ef.max(k)` docs `allowed` admits,
    /// best first. The caller rescores them exactly and keeps its top k. `seeds` (admitted docs
    /// near the query, found by the caller; may be empty) are further entry points on level 0:
    /// the upper levels lead to the query's neighbourhood whatever the filter, and when the
    /// scope's docs lie elsewhere (a scope that follows a subject) the seeds start the search
    /// among them.
    pub fn search(
        &self,
        view: View<'_>,
        query: &[i16],
        query_scale: f32,
        ef: usize,
        allowed: &dyn Fn(u32) -> bool,
        seeds: &[u32],
    ) -> Vec<(f32, u32)> {
        let Some(mut ep) = self.entry else {
            return Vec::new();
        };
        for lev in (1..=self.max_level).rev() {
            ep = self.greedy(&view, query, query_scale, ep, lev);
        }
        let mut visited = Visited::new(view.len());
        let mut eps = Vec::with_capacity(seeds.len() + 1);
        eps.push(ep);
        eps.extend_from_slice(seeds);
        self.layer(
            &view,
            query,
            query_scale,
            &eps,
            ef,
            0,
            allowed,
            &mut visited,
        )
        .into_iter()
        .map(|c| (c.0, c.1))
        .collect()
    }

    /// The share of the level-0 links of `docs` that lead to docs `allowed` admits. Over a
    /// sample of a scope's docs: about the scope's share of the segment for a scope drawn at
    /// random, far more for one that follows a subject (its docs lie together). It says
    /// nothing of any one question: every question in that scope and segment gets the same.
    pub fn admitted_link_share(&self, docs: &[u32], allowed: &dyn Fn(u32) -> bool) -> f64 {
        let (mut links, mut admitted) = (0usize, 0usize);
        for &d in docs {
            for &nb in self.links(d, 0) {
                links += 1;
                admitted += usize::from(allowed(nb));
            }
        }
        if links == 0 {
            0.0
        } else {
            admitted as f64 / links as f64
        }
    }

    /// The graph as bytes (little-endian u32s: m, m0, max level, entry, node count, the level-0
    /// slots, then per node its upper levels' lengths and links), for benchmarks that reuse a
    /// graph across runs. The daemon does not persist graphs (see the module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out: Vec<u32> = vec![
            self.m as u32,
            self.m0 as u32,
            self.max_level as u32,
            self.entry.unwrap_or(EMPTY),
            self.upper.len() as u32,
        ];
        out.extend_from_slice(&self.links0);
        for levels in &self.upper {
            out.push(levels.len() as u32);
            for l in levels {
                out.push(l.len() as u32);
                out.extend_from_slice(l);
            }
        }
        out.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// The inverse of [`Self::to_bytes`]; `None` for bytes it did not write.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let words: Vec<u32> = bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let mut it = words.into_iter();
        let (m, m0, max_level, entry, n) = (
            it.next()? as usize,
            it.next()? as usize,
            it.next()? as usize,
            it.next()?,
            it.next()? as usize,
        );
        let links0: Vec<u32> = it.by_ref().take(n * m0).collect();
        if links0.len() != n * m0 {
            return None;
        }
        let mut upper = Vec::with_capacity(n);
        for _ in 0..n {
            let levels = it.next()? as usize;
            let mut ls = Vec::with_capacity(levels);
            for _ in 0..levels {
                let len = it.next()? as usize;
                let l: Vec<u32> = it.by_ref().take(len).collect();
                if l.len() != len {
                    return None;
                }
                ls.push(l);
            }
            upper.push(ls);
        }
        Some(Self {
            m,
            m0,
            entry: (entry != EMPTY).then_some(entry),
            max_level,
            links0,
            upper,
        })
    }

    /// Nodes no level-0 link points to (only reachable as an entry point): a diagnostic for
    /// benchmarks.
    pub fn unreachable_nodes(&self) -> usize {
        let n = self.upper.len();
        let mut linked = vec![false; n];
        for &l in &self.links0 {
            if l != EMPTY {
                linked[l as usize] = true;
            }
        }
        (0..n)
            .filter(|&d| !linked[d] && !self.links(d as u32, 0).is_empty())
            .count()
    }

    /// Bytes the graph holds (links only; the vectors belong to the caller).
    pub fn memory_bytes(&self) -> usize {
        self.links0.len() * 4
            + self
                .upper
                .iter()
                .map(|l| 24 + l.iter().map(|v| 24 + v.len() * 4).sum::<usize>())
                .sum::<usize>()
    }
}

/// A scored node into a search: kept (and expanded later) while it beats the `ef`-th best.
fn offer(cands: &mut BinaryHeap<Cand>, best: &mut BinaryHeap<Reverse<Cand>>, ef: usize, c: Cand) {
    if best.len() < ef || best.peek().is_some_and(|w| c.0 > w.0.0) {
        cands.push(c);
        best.push(Reverse(c));
        if best.len() > ef {
            best.pop();
        }
    }
}

fn best_first(best: BinaryHeap<Reverse<Cand>>) -> Vec<Cand> {
    let mut out: Vec<Cand> = best.into_iter().map(|r| r.0).collect();
    out.sort_by(|a, b| b.cmp(a));
    out
}

/// Malkov & Yashunin's neighbour heuristic: keep a candidate only when it is closer to the new
/// node than to every neighbour kept so far (spreads links across clusters). `cands` best first.
fn select(view: &View<'_>, cands: &[Cand], m: usize) -> Vec<u32> {
    let mut kept: Vec<u32> = Vec::with_capacity(m);
    for c in cands {
        if kept.len() >= m {
            break;
        }
        if kept.iter().all(|&k| view.sim(c.1, k) < c.0) {
            kept.push(c.1);
        }
    }
    // Fill up with the nearest skipped ones: a sparse level-0 list hurts recall more.
    for c in cands {
        if kept.len() >= m {
            break;
        }
        if !kept.contains(&c.1) {
            kept.push(c.1);
        }
    }
    kept
}

/// `n` normalised vectors in `dim` dimensions around 20 cluster centres, deterministic in
/// `seed`: test and benchmark data (`benches/ann.rs`).
pub fn clustered_vectors(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut s = seed | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0
    };
    let centres: Vec<Vec<f32>> = (0..20)
        .map(|_| (0..dim).map(|_| next()).collect())
        .collect();
    (0..n)
        .map(|i| {
            let c = &centres[i % centres.len()];
            let v: Vec<f32> = c.iter().map(|x| x + 0.6 * next()).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / norm).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::dense::quantize;

    use super::clustered_vectors as clustered;

    struct Set {
        values: Vec<i8>,
        scale: Vec<f32>,
        dim: usize,
    }

    fn quantized(vs: &[Vec<f32>]) -> Set {
        let dim = vs[0].len();
        let mut values = Vec::new();
        let mut scale = Vec::new();
        for v in vs {
            let q = quantize(v);
            values.extend_from_slice(&q_values(&q));
            scale.push(q_scale(&q));
        }
        Set { values, scale, dim }
    }

    fn q_values(q: &crate::index::dense::Quantized) -> Vec<i8> {
        q.to_i8()
    }
    fn q_scale(q: &crate::index::dense::Quantized) -> f32 {
        q.scale()
    }

    fn exact(vs: &[Vec<f32>], q: &[f32], k: usize, allowed: &dyn Fn(u32) -> bool) -> Vec<u32> {
        let mut s: Vec<(f32, u32)> = vs
            .iter()
            .enumerate()
            .filter(|(i, _)| allowed(*i as u32))
            .map(|(i, v)| (crate::embed::dot(q, v), i as u32))
            .collect();
        s.sort_by(|a, b| b.0.total_cmp(&a.0));
        s.into_iter().take(k).map(|x| x.1).collect()
    }

    /// Mean recall@10 over 50 queries with the dense leg's candidate list (128), rescored exactly.
    fn recall(vs: &[Vec<f32>], g: &Hnsw, set: &Set, allowed: &dyn Fn(u32) -> bool) -> f64 {
        // Same seed as the data: queries from the same clusters, with fresh noise.
        let queries = clustered(vs.len() + 50, set.dim, 7).split_off(vs.len());
        let view = View {
            dim: set.dim,
            values: &set.values,
            scale: &set.scale,
        };
        let mut total = 0.0;
        for q in &queries {
            let qq = quantize(q);
            let mut got: Vec<(f32, u32)> = g
                .search(view, qq.values(), qq.scale(), 128, allowed, &[])
                .into_iter()
                .map(|(_, d)| (crate::embed::dot(q, &vs[d as usize]), d))
                .collect();
            for (_, d) in &got {
                assert!(allowed(*d), "the filter is applied to every result");
            }
            got.sort_by(|a, b| b.0.total_cmp(&a.0));
            let got: Vec<u32> = got.into_iter().take(10).map(|x| x.1).collect();
            let want = exact(vs, q, 10, allowed);
            total += want.iter().filter(|d| got.contains(d)).count() as f64 / want.len() as f64;
        }
        total / queries.len() as f64
    }

    #[test]
    fn finds_the_exact_neighbours_with_and_without_a_filter() {
        let vs = clustered(3000, 48, 7);
        let set = quantized(&vs);
        let view = View {
            dim: set.dim,
            values: &set.values,
            scale: &set.scale,
        };
        let g = Hnsw::build(view, Params::default());
        let all = recall(&vs, &g, &set, &|_| true);
        assert!(all >= 0.95, "recall@10 unfiltered {all}");
        let tenth = recall(&vs, &g, &set, &|d| d % 10 == 3);
        assert!(tenth >= 0.9, "recall@10 with a 10% filter {tenth}");
        assert!(g.memory_bytes() > 3000 * 32 * 4);
    }

    #[test]
    fn a_filter_admitting_nothing_returns_nothing_and_the_build_is_deterministic() {
        let vs = clustered(500, 16, 3);
        let set = quantized(&vs);
        let view = View {
            dim: set.dim,
            values: &set.values,
            scale: &set.scale,
        };
        let (a, b) = (
            Hnsw::build(view, Params::default()),
            Hnsw::build(view, Params::default()),
        );
        assert_eq!(a.links0, b.links0);
        let q = quantize(&vs[0]);
        assert!(
            a.search(view, q.values(), q.scale(), 10, &|_| false, &[])
                .is_empty()
        );
        let top = a.search(view, q.values(), q.scale(), 10, &|_| true, &[]);
        assert_eq!(top[0].1, 0, "a stored vector finds itself first");
    }

    #[test]
    fn a_batched_parallel_build_does_not_depend_on_the_thread_count() {
        let vs = clustered(SEQUENTIAL_PREFIX + 3000, 16, 9);
        let set = quantized(&vs);
        let view = View {
            dim: set.dim,
            values: &set.values,
            scale: &set.scale,
        };
        let params = |threads| Params {
            ef_construction: 64,
            threads,
            ..Params::default()
        };
        let (one, two) = (Hnsw::build(view, params(1)), Hnsw::build(view, params(2)));
        assert_eq!(one.links0, two.links0);
        assert_eq!(one.upper, two.upper);
        assert_eq!(one.entry, two.entry);
        let back = Hnsw::from_bytes(&two.to_bytes()).expect("round trip");
        assert_eq!(
            (back.links0, back.upper, back.entry),
            (two.links0.clone(), two.upper.clone(), two.entry)
        );
        let recall = recall(&vs, &two, &set, &|_| true);
        assert!(recall >= 0.9, "recall@10 after a batched build {recall}");
    }

    #[test]
    fn docs_without_vectors_are_not_in_the_graph() {
        let vs = clustered(200, 16, 5);
        let mut set = quantized(&vs);
        for d in (0..200).step_by(2) {
            set.scale[d] = 0.0;
        }
        let view = View {
            dim: set.dim,
            values: &set.values,
            scale: &set.scale,
        };
        let g = Hnsw::build(view, Params::default());
        let q = quantize(&vs[0]);
        let hits = g.search(view, q.values(), q.scale(), 50, &|_| true, &[]);
        assert!(!hits.is_empty());
        assert!(hits.iter().all(|(_, d)| d % 2 == 1), "{hits:?}");
    }
}
