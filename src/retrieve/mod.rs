//! Retrieval: BM25 and dense legs over one index snapshot, each restricted to the caller's
//! [`AclScope`] inside the query (before top-k), fused by reciprocal rank fusion.
//!
//! Never post-filter a top-k list: filtering after ranking leaks through counts and starves
//! results. Every function here takes the scope; there is no unscoped entry point.

#[cfg(test)]
mod acl_props;
mod fusion;

use std::sync::Arc;

pub use fusion::{Leg, ScoreNorm, convex, rrf};

use crate::acl::AclScope;
use crate::embed::{EmbedError, Embedder};
use crate::index::{Index, IndexError, SearchFilter, StoredChunk};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Hybrid,
    Bm25,
    Dense,
}

/// How the two legs are combined in hybrid mode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fusion {
    /// Reciprocal rank fusion with constant `rrf_k`.
    Rrf,
    /// Convex combination of min-max normalised scores; `alpha` weighs BM25.
    Convex { alpha: f32 },
}

#[derive(Debug, Clone, Copy)]
pub struct RetrievalConfig {
    pub fusion: Fusion,
    /// RRF constant k: larger flattens the rank contribution.
    pub rrf_k: f32,
    /// Candidates taken from each leg before fusion.
    pub candidates: usize,
    /// BM25 weight of a match in the title and in the heading path, relative to the text (1.0).
    pub title_boost: f32,
    pub heading_boost: f32,
    /// How "convex" fusion puts the legs' scores on one scale.
    pub norm: ScoreNorm,
    /// Hybrid feedback (pseudo-relevance feedback for the dense leg, hybrid mode only): the
    /// query vector plus this weight times the mean vector of the first fusion's top
    /// [`Self::dense_feedback_chunks`] documents (their representative chunks, all in scope) is
    /// searched again and fused again with the same BM25 leg. 0 turns it off. Similarities
    /// reported with hits stay those of the plain query.
    pub dense_feedback: f32,
    pub dense_feedback_chunks: usize,
}

impl Default for RetrievalConfig {
    fn default() -> Self {
        Self {
            fusion: Fusion::Convex { alpha: 0.4 },
            rrf_k: 60.0,
            candidates: 300,
            title_boost: 0.15,
            heading_boost: 0.3,
            norm: ScoreNorm::Std,
            dense_feedback: 0.0,
            dense_feedback_chunks: 3,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RetrieveError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
}

impl RetrieveError {
    /// The request gave up (deadline, client gone): not a server fault.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Self::Embed(EmbedError::Cancelled))
    }
}

/// One retrieved chunk.
#[derive(Debug, Clone)]
pub struct Hit {
    pub chunk: StoredChunk,
    pub score: f32,
    /// 1-based rank in each leg, if the leg returned it.
    pub bm25_rank: Option<u32>,
    pub dense_rank: Option<u32>,
    /// Cosine similarity between the query and the chunk (when the query was embedded).
    pub similarity: Option<f32>,
}

pub struct Retriever {
    index: Arc<Index>,
    embedder: Arc<dyn Embedder>,
    cfg: RetrievalConfig,
}

impl Retriever {
    pub fn new(index: Arc<Index>, embedder: Arc<dyn Embedder>, cfg: RetrievalConfig) -> Self {
        Self {
            index,
            embedder,
            cfg,
        }
    }

    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    /// Blocking: embeds the query (unless BM25-only) and searches. Returns at most `limit` hits.
    pub fn search(
        &self,
        scope: &AclScope,
        query: &str,
        mode: Mode,
        filter: &SearchFilter,
        limit: usize,
    ) -> Result<Vec<Hit>, RetrieveError> {
        self.search_embedded(scope, query, None, mode, filter, limit)
    }

    /// Embeds a query with the query encoder (for callers that need the vector before
    /// searching, e.g. topic guardrails; pass it on to [`Self::search_embedded`]).
    pub fn embed_query(&self, query: &str) -> Result<Vec<f32>, RetrieveError> {
        Ok(self.embedder.embed_query(query)?)
    }

    /// [`Self::search`] with the query's embedding when the caller already has it.
    pub fn search_embedded(
        &self,
        scope: &AclScope,
        query: &str,
        qvec: Option<Vec<f32>>,
        mode: Mode,
        filter: &SearchFilter,
        limit: usize,
    ) -> Result<Vec<Hit>, RetrieveError> {
        self.search_until(scope, query, qvec, mode, filter, limit, &|| false)
    }

    /// Embeds a query unless the request gave up first (see [`Embedder::embed_query_until`]).
    pub fn embed_query_until(
        &self,
        query: &str,
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Result<Vec<f32>, RetrieveError> {
        Ok(self.embedder.embed_query_until(query, cancelled)?)
    }

    /// [`Self::search_embedded`] for a request that may give up: `cancelled` is asked before
    /// each costly step (embedding, the dense leg), so abandoned requests stop using the CPU.
    #[allow(clippy::too_many_arguments)]
    pub fn search_until(
        &self,
        scope: &AclScope,
        query: &str,
        qvec: Option<Vec<f32>>,
        mode: Mode,
        filter: &SearchFilter,
        limit: usize,
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Result<Vec<Hit>, RetrieveError> {
        if cancelled() {
            return Err(EmbedError::Cancelled.into());
        }
        let snap = self.index.snapshot();
        let depth = self.cfg.candidates.max(limit);
        let given = if mode == Mode::Bm25 { None } else { qvec };
        // The BM25 leg needs no vector: run it while the query is being embedded.
        let (qvec, bm25) = std::thread::scope(|s| {
            let embedding = match (mode, &given) {
                (Mode::Bm25, _) | (_, Some(_)) => None,
                (Mode::Hybrid | Mode::Dense, None) => {
                    Some(s.spawn(|| self.embedder.embed_query_until(query, cancelled)))
                }
            };
            let bm25 = match mode {
                Mode::Dense => Ok(Vec::new()),
                _ => snap.bm25(
                    scope,
                    filter,
                    query,
                    depth,
                    (self.cfg.title_boost, self.cfg.heading_boost),
                ),
            };
            let qvec = match embedding {
                Some(h) => Some(
                    h.join()
                        .map_err(|_| EmbedError::Inference("embedding thread panicked".into()))?,
                ),
                None => None,
            };
            Ok::<_, RetrieveError>((qvec.transpose()?, bm25?))
        })?;
        let qvec = qvec.or(given);
        if cancelled() {
            return Err(EmbedError::Cancelled.into());
        }
        let dense = match &qvec {
            Some(v) => snap.dense(scope, filter, v, depth)?,
            None => Vec::new(),
        };
        let bm25_keys = snap.doc_ids(&bm25)?;
        let hybrid = |dense: &[crate::index::Scored]| -> Result<Vec<fusion::Fused>, RetrieveError> {
            let keys = snap.doc_ids(dense)?;
            let (b, d) = (
                Leg {
                    hits: &bm25,
                    keys: &bm25_keys,
                },
                Leg {
                    hits: dense,
                    keys: &keys,
                },
            );
            Ok(match self.cfg.fusion {
                Fusion::Rrf => rrf(&[b, d], self.cfg.rrf_k),
                Fusion::Convex { alpha } => fusion::convex(b, d, alpha, self.cfg.norm),
            })
        };
        let fused = match mode {
            // Raw BM25 scores depend on corpus-wide term statistics, including documents the
            // caller cannot read; expose only rank-based scores.
            Mode::Bm25 => rrf(
                &[Leg {
                    hits: &bm25,
                    keys: &bm25_keys,
                }],
                self.cfg.rrf_k,
            ),
            Mode::Dense => fusion::single(Leg {
                hits: &dense,
                keys: &snap.doc_ids(&dense)?,
            }),
            Mode::Hybrid => {
                let first = hybrid(&dense)?;
                let moved = match &qvec {
                    Some(q) => self.feedback_vector(&snap, q, &first)?,
                    None => None,
                };
                match moved {
                    Some(m) if !cancelled() => hybrid(&snap.dense(scope, filter, &m, depth)?)?,
                    _ => first,
                }
            }
        };
        let mut hits = Vec::with_capacity(limit.min(fused.len()));
        for f in fused.into_iter().take(limit) {
            let chunk = snap.chunk(f.addr)?;
            let similarity = match &qvec {
                Some(q) => snap.vector(f.addr)?.map(|v| crate::embed::dot(q, &v)),
                None => None,
            };
            let (bm25_rank, dense_rank) = match mode {
                Mode::Bm25 => (f.ranks[0], None),
                Mode::Dense => (None, f.ranks[0]),
                Mode::Hybrid => (f.ranks[0], f.ranks[1]),
            };
            hits.push(Hit {
                chunk,
                score: f.score,
                bm25_rank,
                dense_rank,
                similarity,
            });
        }
        Ok(hits)
    }

    /// Hybrid feedback: the query vector moved towards the vectors of the first fusion's top
    /// documents (their representative chunks, all within the scope and filter), for a second
    /// dense search under the same scope and filter. `None` when off or nothing to move to.
    fn feedback_vector(
        &self,
        snap: &crate::index::Snapshot<'_>,
        qvec: &[f32],
        fused: &[fusion::Fused],
    ) -> Result<Option<Vec<f32>>, RetrieveError> {
        let (beta, n) = (self.cfg.dense_feedback, self.cfg.dense_feedback_chunks);
        let top = fused.len().min(n);
        if beta <= 0.0 || top == 0 {
            return Ok(None);
        }
        let mut moved = qvec.to_vec();
        for f in &fused[..top] {
            if let Some(v) = snap.vector(f.addr)? {
                for (m, x) in moved.iter_mut().zip(&v) {
                    *m += beta * x / top as f32;
                }
            }
        }
        let norm = moved.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            moved.iter_mut().for_each(|x| *x /= norm);
        }
        Ok(Some(moved))
    }

    /// Query-term weights for answer extraction, from the same snapshot statistics as BM25.
    pub fn term_weights(&self, query: &str) -> Vec<(String, f32)> {
        let snap = self.index.snapshot();
        let mut terms = snap.analyze(query);
        terms.sort();
        terms.dedup();
        terms
            .into_iter()
            .map(|t| {
                let w = snap.idf(&t);
                (t, w)
            })
            .collect()
    }

    pub fn analyze(&self, text: &str) -> Vec<String> {
        self.index.snapshot().analyze(text)
    }
}

/// A hit on chunk `<id>#0` of document `<id>` (source "s"), for unit tests of later stages.
#[cfg(test)]
pub fn test_hit(id: &str, text: &str, sim: f32) -> Hit {
    Hit {
        chunk: StoredChunk {
            chunk_id: format!("{id}#0"),
            doc_key: id.into(),
            source: "s".into(),
            title: id.into(),
            uri: format!("file:///{id}"),
            text: text.into(),
            span: 0..text.len(),
            heading_path: vec![],
            page: None,
            acl: Default::default(),
            attributes: Default::default(),
        },
        score: 1.0,
        bm25_rank: Some(1),
        dense_rank: Some(1),
        similarity: Some(sim),
    }
}
