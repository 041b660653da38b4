//! Dense retrieval over tantivy segments: each segment's vectors are decoded once from the
//! `vector` bytes fast field into a flat array (segments are immutable, so the cache is keyed by
//! segment id and never stale), and a collector scores exactly the documents the scope query
//! matches. Deleted documents never reach the collector.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::index::SegmentId;
use tantivy::{DocAddress, DocId, Score, Searcher, SegmentOrdinal, SegmentReader};

pub fn encode(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// One segment's vectors, `dim` floats per doc id; a doc without a vector has NaN in slot 0.
pub struct SegmentVectors {
    dim: usize,
    data: Vec<f32>,
    /// Quantized copies (int8 range, symmetric, per-vector scale) for the scan, held as i16 so
    /// the baseline x86-64 target (SSE2) multiplies them with `pmaddwd`.
    q8: Vec<i16>,
    scale: Vec<f32>,
}

impl SegmentVectors {
    pub fn vector(&self, doc: DocId) -> Option<&[f32]> {
        let start = doc as usize * self.dim;
        let v = self.data.get(start..start + self.dim)?;
        (!v[0].is_nan()).then_some(v)
    }

    fn approx(&self, doc: DocId, q: &Quantized) -> Option<f32> {
        let d = doc as usize;
        let s = *self.scale.get(d)?;
        if s == 0.0 {
            return None; // no vector
        }
        let v = &self.q8[d * self.dim..(d + 1) * self.dim];
        Some(dot_i8(&q.values, v) as f32 * q.scale * s)
    }
}

/// A vector quantized to int8 with one scale: `v ≈ values * scale`.
pub struct Quantized {
    values: Vec<i16>,
    scale: f32,
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

/// Integer dot product of int8-range values; 16 independent lanes so it vectorizes.
fn dot_i8(a: &[i16], b: &[i16]) -> i32 {
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
            acc[i] += x[i] as i32 * y[i] as i32;
        }
    }
    acc.iter().sum::<i32>() + tail
}

pub struct VectorCache {
    dim: usize,
    segments: Mutex<HashMap<SegmentId, Arc<SegmentVectors>>>,
}

impl VectorCache {
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            segments: Mutex::new(HashMap::new()),
        }
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
        // Decode outside the lock; two racing loads produce identical data.
        let loaded = Arc::new(self.load(seg)?);
        self.segments
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, loaded.clone());
        Ok(loaded)
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
                    if buf.len() == self.dim * 4 {
                        let out = &mut data[doc as usize * self.dim..(doc as usize + 1) * self.dim];
                        for (o, b) in out.iter_mut().zip(buf.chunks_exact(4)) {
                            *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                        }
                    }
                }
            }
        }
        let mut q8 = vec![0i16; max * self.dim];
        let mut scale = vec![0.0f32; max];
        for d in 0..max {
            let v = &data[d * self.dim..(d + 1) * self.dim];
            if !v[0].is_nan() {
                let q = quantize(v);
                // A zero scale marks "no vector" (an all-zero vector scores 0 anyway).
                scale[d] = q.scale;
                q8[d * self.dim..(d + 1) * self.dim].copy_from_slice(&q.values);
            }
        }
        Ok(SegmentVectors {
            dim: self.dim,
            data,
            q8,
            scale,
        })
    }

    /// Forgets segments that no longer exist (merged or deleted).
    pub fn retain(&self, searcher: &Searcher) {
        let live: Vec<SegmentId> = searcher
            .segment_readers()
            .iter()
            .map(|s| s.segment_id())
            .collect();
        self.segments
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|id, _| live.contains(id));
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

/// Scans the int8 copies for `RESCORE * k` candidates, then rescores those exactly in f32: the
/// returned scores are exact cosines, and the candidate margin makes a quantization-induced miss
/// of a true top-k vector negligible.
pub struct DenseCollector {
    cache: Arc<VectorCache>,
    query: Arc<Vec<f32>>,
    quantized: Arc<Quantized>,
    k: usize,
}

const RESCORE: usize = 4;

impl DenseCollector {
    pub fn new(cache: Arc<VectorCache>, query: Vec<f32>, k: usize) -> Self {
        Self {
            cache,
            quantized: Arc::new(quantize(&query)),
            query: Arc::new(query),
            k,
        }
    }
}

pub struct DenseSegmentCollector {
    seg: SegmentOrdinal,
    vectors: Arc<SegmentVectors>,
    query: Arc<Vec<f32>>,
    quantized: Arc<Quantized>,
    k: usize,
    heap: BinaryHeap<Hit>,
}

impl Collector for DenseCollector {
    type Fruit = Vec<(f32, DocAddress)>;
    type Child = DenseSegmentCollector;

    fn for_segment(
        &self,
        seg: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<Self::Child> {
        Ok(DenseSegmentCollector {
            seg,
            vectors: self.cache.get(reader)?,
            query: self.query.clone(),
            quantized: self.quantized.clone(),
            k: self.k,
            heap: BinaryHeap::with_capacity(self.k * RESCORE + 1),
        })
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

impl SegmentCollector for DenseSegmentCollector {
    type Fruit = Vec<(f32, DocAddress)>;

    fn collect(&mut self, doc: DocId, _score: Score) {
        if let Some(s) = self.vectors.approx(doc, &self.quantized) {
            push(
                &mut self.heap,
                self.k * RESCORE,
                Hit(s, DocAddress::new(self.seg, doc)),
            );
        }
    }

    fn harvest(self) -> Self::Fruit {
        let mut exact = BinaryHeap::with_capacity(self.k + 1);
        for h in self.heap {
            if let Some(v) = self.vectors.vector(h.1.doc_id) {
                push(
                    &mut exact,
                    self.k,
                    Hit(crate::embed::dot(&self.query, v), h.1),
                );
            }
        }
        exact.into_iter().map(|h| (h.0, h.1)).collect()
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
        let approx = dot_i8(&qa.values, &qb.values) as f32 * qa.scale * qb.scale;
        let exact = crate::embed::dot(&a, &b);
        assert!(
            (approx - exact).abs() < 0.02 * exact.abs().max(1.0),
            "{approx} vs {exact}"
        );
        assert_eq!(dot_i8(&[1, -2, 3], &[4, 5, -6]), 4 - 10 - 18);
        assert_eq!(quantize(&[0.0, 0.0]).scale, 0.0);
    }
}
