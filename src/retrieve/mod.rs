//! Retrieval: BM25 and dense legs over one index snapshot, each restricted to the caller's
//! [`AclScope`] inside the query (before top-k), fused by reciprocal rank fusion.
//!
//! Never post-filter a top-k list: filtering after ranking leaks through counts and starves
//! results. Every function here takes the scope; there is no unscoped entry point.

#[cfg(test)]
mod acl_props;
mod fusion;
pub mod rerank;

use std::sync::Arc;

use crate::index::ChunkAddr;
pub use fusion::{Leg, ScoreNorm, convex, rrf};

use crate::acl::AclScope;
use crate::embed::{EmbedError, Embedder};
use crate::index::{Backend, IndexError, IndexSnapshot, Scored, SearchFilter, StoredChunk};
use rerank::{Passage, QueryTerms, RankerModel, Signals};

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
    /// The second ranking stage ([`rerank`]) over the first `rerank_depth` fused documents
    /// (hybrid mode). Off: hits keep the fused order and carry no relevance.
    pub rerank: bool,
    pub rerank_depth: usize,
    /// BM25 ranks documents by whole-document statistics ([`IndexSnapshot::bm25_documents`])
    /// where the index has them; chunk-level BM25 still picks each document's passages. Off, or
    /// on an index without them: a document ranks by its best chunk.
    pub document_bm25: bool,
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
            rerank: true,
            rerank_depth: 20,
            document_bm25: true,
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

    /// The index could not be reached (a shared backend down or restarting): the caller may
    /// retry; nothing is wrong with the request or this daemon.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Index(IndexError::Milvus(e)) if e.is_unavailable())
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
    /// Calibrated probability that the passage answers the query, from the second ranking
    /// stage (hybrid mode, the first `rerank_depth` documents); `None` where it did not run.
    pub relevance: Option<f32>,
}

/// How many hits a search returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub hits: usize,
    /// Passages per document (1: the document's best passage only). More than one is served
    /// from the second stage's candidates (hybrid mode with it on); otherwise one.
    pub per_document: usize,
}

impl From<usize> for Limit {
    fn from(hits: usize) -> Self {
        Self {
            hits,
            per_document: 1,
        }
    }
}

/// Passages of one document the second stage considers (its best chunks in each leg).
const RERANK_CHUNKS_PER_DOC: usize = 2;

/// BM25-only search with the document leg: chunk-leg hits asked per document returned (so most
/// returned documents find their best chunk there), and at least this many.
const CHUNKS_PER_DOCUMENT_HIT: usize = 5;
const MIN_CHUNK_DEPTH: usize = 50;

pub struct Retriever {
    index: Arc<dyn Backend>,
    embedder: Arc<dyn Embedder>,
    cfg: RetrievalConfig,
    /// The second stage's model: the one shipped for the embedder's model
    /// ([`RankerModel::for_model`]); `None` (no second stage) for a model Docent ships none for.
    ranker: Option<Arc<RankerModel>>,
    /// Second stages running now: one shares its candidates with a helper only when it runs
    /// alone (under load the helpers are busy with other searches' legs, and waiting for one
    /// to start would cost more than it saves).
    staging: std::sync::atomic::AtomicUsize,
}

/// Counts a running second stage while it lives.
struct Staging<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Staging<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Retriever {
    pub fn new(index: Arc<dyn Backend>, embedder: Arc<dyn Embedder>, cfg: RetrievalConfig) -> Self {
        Self {
            index,
            ranker: RankerModel::for_model(embedder.model_id()).map(|m| Arc::new(m.clone())),
            embedder,
            cfg,
            staging: Default::default(),
        }
    }

    /// Uses another second-stage model than the shipped one (training, evaluation, tests).
    pub fn with_ranker(mut self, model: RankerModel) -> Self {
        self.ranker = Some(Arc::new(model));
        self
    }

    /// The second stage's model, if the embedding model has one (see [`RankerModel::for_model`]).
    pub fn ranker(&self) -> Option<&RankerModel> {
        self.ranker.as_deref()
    }

    pub fn index(&self) -> &Arc<dyn Backend> {
        &self.index
    }

    /// Blocking: embeds the query (unless BM25-only) and searches. Returns at most `limit` hits.
    pub fn search(
        &self,
        scope: &AclScope,
        query: &str,
        mode: Mode,
        filter: &SearchFilter,
        limit: impl Into<Limit>,
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
        limit: impl Into<Limit>,
    ) -> Result<Vec<Hit>, RetrieveError> {
        self.search_until(scope, query, qvec, mode, filter, limit, &|| false)
    }

    /// Embeds a passage-side text at question time (see [`Embedder::embed_passage_until`]).
    pub fn embed_passage_until(
        &self,
        text: &str,
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Result<Vec<f32>, RetrieveError> {
        Ok(self.embedder.embed_passage_until(text, cancelled)?)
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
        limit: impl Into<Limit>,
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Result<Vec<Hit>, RetrieveError> {
        let limit: Limit = limit.into();
        self.search_inner(scope, query, qvec, mode, filter, limit, cancelled, None)
    }

    /// Hybrid search that also returns the second stage's candidates with their features
    /// (for training and evaluating the ranker; `benches/ranker.rs`).
    pub fn search_with_features(
        &self,
        scope: &AclScope,
        query: &str,
        filter: &SearchFilter,
        limit: impl Into<Limit>,
    ) -> Result<(Vec<Hit>, Vec<Scoring>), RetrieveError> {
        let mut out = Vec::new();
        let hits = self.search_inner(
            scope,
            query,
            None,
            Mode::Hybrid,
            filter,
            limit.into(),
            &|| false,
            Some(&mut out),
        )?;
        Ok((hits, out))
    }

    #[allow(clippy::too_many_arguments)]
    fn search_inner(
        &self,
        scope: &AclScope,
        query: &str,
        qvec: Option<Vec<f32>>,
        mode: Mode,
        filter: &SearchFilter,
        limit: Limit,
        cancelled: &(dyn Fn() -> bool + Sync),
        features_out: Option<&mut Vec<Scoring>>,
    ) -> Result<Vec<Hit>, RetrieveError> {
        if cancelled() {
            return Err(EmbedError::Cancelled.into());
        }
        let snap = self.index.snapshot();
        let depth = self.cfg.candidates.max(limit.hits);
        let given = if mode == Mode::Bm25 { None } else { qvec };
        // The BM25 legs, with their document keys.
        let legs = || {
            let bm25 = match mode {
                Mode::Dense => Ok((Vec::new(), None)),
                Mode::Hybrid => self.bm25_legs(&*snap, scope, filter, query, depth, depth),
                // BM25 alone ranks documents by the document leg, exact at any depth, so it asks
                // for the page it returns; the chunk leg then only picks each document's passage.
                Mode::Bm25 => {
                    self.bm25_legs(&*snap, scope, filter, query, depth, limit.hits.max(1))
                }
            };
            bm25.and_then(|(chunks, documents)| {
                let keys = snap.doc_ids(&chunks)?;
                let documents = match documents {
                    Some(d) => {
                        let k = snap.doc_ids(&d)?;
                        Some((d, k))
                    }
                    None => None,
                };
                Ok::<_, RetrieveError>((chunks, keys, documents))
            })
        };
        // The legs need no vector: they run beside while this thread embeds the query, on a
        // helper for a backend in this process, else (a remote backend, or no helpers) on a
        // thread of their own. The embedding takes far longer, so they are done when it
        // returns. (With the embedding on the second thread instead, this one slept in the join
        // and woke ~0.1 ms after the vector was ready: benches/RESULTS.md, session 17.) A panic
        // in the legs resumes here.
        let (qvec, (bm25, bm25_keys, documents)) = match (mode, given) {
            (Mode::Hybrid, None) => {
                let mut bm25 = None;
                let out = &mut bm25;
                let embed = || self.embedder.embed_query_until(query, cancelled);
                let qvec = match self
                    .index
                    .in_process()
                    .then(crate::threads::helpers)
                    .flatten()
                {
                    Some(pool) => pool.in_place_scope(|s| {
                        s.spawn(move |_| *out = Some(legs()));
                        embed()
                    }),
                    None => std::thread::scope(|s| {
                        let h = s.spawn(legs);
                        let qvec = embed();
                        *out = Some(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
                        qvec
                    }),
                }?;
                // Both paths have run the legs by now (a scope waits for its jobs).
                (Some(qvec), bm25.unwrap_or_else(legs)?)
            }
            (Mode::Dense, None) => (
                Some(self.embedder.embed_query_until(query, cancelled)?),
                (Vec::new(), Vec::new(), None),
            ),
            (_, given) => (given, legs()?),
        };
        if cancelled() {
            return Err(EmbedError::Cancelled.into());
        }
        let dense = match &qvec {
            Some(v) => snap.dense(scope, filter, v, depth)?,
            None => Vec::new(),
        };
        // What fusion ranks documents by in BM25: whole documents where the index has them,
        // each represented by its best chunk in the chunk legs; else the chunks.
        let bm25_docs = |dense: Leg<'_>| -> std::borrow::Cow<'_, [crate::index::Scored]> {
            match &documents {
                Some((d, k)) => fusion::represented(
                    Leg { hits: d, keys: k },
                    &[
                        Leg {
                            hits: &bm25,
                            keys: &bm25_keys,
                        },
                        dense,
                    ],
                )
                .into(),
                None => (&bm25[..]).into(),
            }
        };
        // The document keys of `bm25_docs`' hits, in its order.
        let doc_keys: &[u64] = match &documents {
            Some((_, k)) => k,
            None => &bm25_keys,
        };
        let hybrid = |dense: &[crate::index::Scored], keys: &[u64]| -> Vec<fusion::Fused> {
            let d = Leg { hits: dense, keys };
            let ranked = bm25_docs(d);
            let b = Leg {
                hits: &ranked,
                keys: doc_keys,
            };
            match self.cfg.fusion {
                Fusion::Rrf => rrf(&[b, d], self.cfg.rrf_k),
                Fusion::Convex { alpha } => fusion::convex(b, d, alpha, self.cfg.norm),
            }
        };
        let dense_keys = snap.doc_ids(&dense)?;
        let mut dense_used = (dense, dense_keys);
        let fused = match mode {
            // Expose only rank-based scores: on the Milvus backend raw BM25 scores depend on the
            // engine's index-wide statistics (the embedded index scopes its own).
            Mode::Bm25 => {
                let ranked = bm25_docs(Leg {
                    hits: &[],
                    keys: &[],
                });
                rrf(
                    &[Leg {
                        hits: &ranked,
                        keys: doc_keys,
                    }],
                    self.cfg.rrf_k,
                )
            }
            Mode::Dense => fusion::single(Leg {
                hits: &dense_used.0,
                keys: &dense_used.1,
            }),
            Mode::Hybrid => {
                let first = hybrid(&dense_used.0, &dense_used.1);
                let moved = match &qvec {
                    Some(q) => self.feedback_vector(&*snap, q, &first)?,
                    None => None,
                };
                match moved {
                    Some(m) if !cancelled() => {
                        let dense = snap.dense(scope, filter, &m, depth)?;
                        let keys = snap.doc_ids(&dense)?;
                        dense_used = (dense, keys);
                        hybrid(&dense_used.0, &dense_used.1)
                    }
                    _ => first,
                }
            }
        };
        // Training (`features_out`) computes the features whatever model scores them.
        let rerank = self.cfg.rerank && (self.ranker.is_some() || features_out.is_some());
        let reranked = if mode == Mode::Hybrid && rerank && !fused.is_empty() {
            let legs = [
                (&bm25[..], &bm25_keys[..]),
                (&dense_used.0[..], &dense_used.1[..]),
            ];
            self.second_stage(
                &*snap,
                scope,
                query,
                qvec.as_deref(),
                legs,
                documents.as_ref().map(|(d, k)| (&d[..], &k[..])),
                &fused,
                limit,
                features_out,
            )?
        } else {
            Vec::new()
        };
        let mut hits = reranked;
        let done: std::collections::HashSet<ChunkAddr> = hits
            .iter()
            .map(|h| h.addr)
            .collect::<std::collections::HashSet<_>>();
        let skip = if hits.is_empty() {
            0
        } else {
            self.cfg.rerank_depth.min(fused.len())
        };
        for f in fused.into_iter().skip(skip) {
            if hits.len() >= limit.hits {
                break;
            }
            if done.contains(&f.addr) {
                continue;
            }
            let chunk = snap.chunk(f.addr)?;
            // Past the second stage's documents a hit has no relevance, and no similarity
            // either: the stage judged it below the ones it ranked, and a cosine over the
            // evidence threshold must not make it evidence after all ([`answer::is_evidence`]
            // falls back to the cosine only where no second stage ran).
            let similarity = match &qvec {
                Some(q) if skip == 0 => snap.vector(f.addr)?.map(|v| crate::embed::dot(q, &v)),
                _ => None,
            };
            let (bm25_rank, dense_rank) = match mode {
                Mode::Bm25 => (f.ranks[0], None),
                Mode::Dense => (None, f.ranks[0]),
                Mode::Hybrid => (f.ranks[0], f.ranks[1]),
            };
            hits.push(Ranked {
                addr: f.addr,
                hit: Hit {
                    chunk,
                    // After the second stage's documents, which score in 0..1 by relevance.
                    score: if skip > 0 { 0.0 } else { f.score },
                    bm25_rank,
                    dense_rank,
                    similarity,
                    relevance: None,
                },
            });
        }
        hits.truncate(limit.hits);
        if mode == Mode::Dense {
            // The dense leg's scores are exact for its first ranks only (deeper ones keep their
            // int8 estimate); a dense Search's score is the cosine, so every hit reports the
            // exact one, in its order.
            for r in &mut hits {
                if let Some(s) = r.hit.similarity {
                    r.hit.score = s;
                }
            }
            hits.sort_by(|a, b| b.hit.score.total_cmp(&a.hit.score));
        }
        Ok(hits.into_iter().map(|r| r.hit).collect())
    }

    /// The chunk-level BM25 leg, and the document-level one when configured and the index has
    /// it.
    fn bm25_legs(
        &self,
        snap: &dyn IndexSnapshot,
        scope: &AclScope,
        filter: &SearchFilter,
        query: &str,
        depth: usize,
        document_depth: usize,
    ) -> Result<(Vec<crate::index::Scored>, Option<Vec<crate::index::Scored>>), RetrieveError> {
        let documents = if self.cfg.document_bm25 {
            snap.bm25_documents(scope, filter, query, document_depth)?
        } else {
            None
        };
        // With fewer documents to represent, fewer chunks: enough that each usually finds its
        // best one (one it lacks keeps its first chunk's address); without the document leg the
        // chunk leg ranks the documents and keeps the full depth.
        let chunk_depth = match &documents {
            Some(_) if document_depth < depth => {
                // Never above `depth`, which the configuration may set under the minimum.
                (document_depth * CHUNKS_PER_DOCUMENT_HIT)
                    .max(MIN_CHUNK_DEPTH)
                    .min(depth)
            }
            _ => depth,
        };
        let boosts = (self.cfg.title_boost, self.cfg.heading_boost);
        let chunks = match &documents {
            // A page of documents (BM25 alone) needs each one's passage only.
            Some(docs) if document_depth < depth => {
                snap.bm25_passages(scope, filter, query, docs, chunk_depth, boosts)?
            }
            _ => snap.bm25(scope, filter, query, chunk_depth, boosts)?,
        };
        Ok((chunks, documents))
    }

    /// The second ranking stage over the first `rerank_depth` fused documents: each document's
    /// best chunks in either leg are scored by the [`RankerModel`], documents reorder by their
    /// best chunk, and each keeps up to `limit.per_document` chunks. Only candidates the scope
    /// admitted reach here; nothing is added.
    #[allow(clippy::too_many_arguments)]
    fn second_stage(
        &self,
        snap: &dyn IndexSnapshot,
        scope: &AclScope,
        query: &str,
        qvec: Option<&[f32]>,
        legs: [(&[Scored], &[u64]); 2],
        documents: Option<(&[Scored], &[u64])>,
        fused: &[fusion::Fused],
        limit: Limit,
        features_out: Option<&mut Vec<Scoring>>,
    ) -> Result<Vec<Ranked>, RetrieveError> {
        let model = self.ranker.as_deref().unwrap_or(RankerModel::builtin());
        let depth = self.cfg.rerank_depth.min(fused.len());
        let top = &fused[..depth];
        let top_keys = snap.doc_ids(
            &top.iter()
                .map(|f| Scored {
                    addr: f.addr,
                    score: f.score,
                })
                .collect::<Vec<_>>(),
        )?;
        let doc_of: rustc_hash::FxHashMap<u64, usize> =
            top_keys.iter().enumerate().map(|(i, k)| (*k, i)).collect();
        // Per document: its representative chunk, then its chunks from each leg alternately.
        let per_doc = limit.per_document.max(RERANK_CHUNKS_PER_DOC);
        let mut by_leg: Vec<[Vec<ChunkAddr>; 2]> = vec![Default::default(); depth];
        for (li, (hits, keys)) in legs.iter().enumerate() {
            for (s, k) in hits.iter().zip(keys.iter()) {
                if let Some(&d) = doc_of.get(k)
                    && by_leg[d][li].len() < per_doc
                {
                    by_leg[d][li].push(s.addr);
                }
            }
        }
        let bm25_score: rustc_hash::FxHashMap<ChunkAddr, f32> =
            legs[0].0.iter().map(|s| (s.addr, s.score)).collect();
        // The whole-document BM25 score of each top document, where the index has it.
        let document_score: Option<Vec<Option<f32>>> = documents.map(|(hits, keys)| {
            let mut out = vec![None; depth];
            for (s, k) in hits.iter().zip(keys) {
                if let Some(&d) = doc_of.get(k) {
                    out[d].get_or_insert(s.score);
                }
            }
            out
        });
        let mut cands: Vec<(usize, ChunkAddr)> = Vec::new();
        for (d, f) in top.iter().enumerate() {
            let mut mine = vec![f.addr];
            let [b, v] = &by_leg[d];
            for i in 0..per_doc {
                for a in [b.get(i), v.get(i)].into_iter().flatten() {
                    if mine.len() < per_doc && !mine.contains(a) {
                        mine.push(*a);
                    }
                }
            }
            cands.extend(mine.into_iter().map(|a| (d, a)));
        }
        let q = {
            let analyzed = snap.analyze(query);
            let mut distinct = analyzed.clone();
            distinct.sort();
            distinct.dedup();
            let idf = snap.idf(scope, &distinct)?;
            QueryTerms::new(analyzed, |t| {
                distinct
                    .binary_search_by(|d| d.as_str().cmp(t))
                    .map_or(0.0, |i| idf[i])
            })
        };
        let signals = |d: usize, addr: ChunkAddr, cosine: Option<f32>| Signals {
            cosine: cosine.unwrap_or(0.0),
            // The document's whole-text BM25 where the index has it, else the chunk's.
            bm25: match &document_score {
                Some(scores) => scores[d],
                None => bm25_score.get(&addr).copied(),
            },
            fused: top[d].score,
            bm25_rank: top[d].ranks[0],
            dense_rank: top[d].ranks[1],
        };
        let all: Vec<Signals> = cands.iter().map(|&(d, a)| signals(d, a, None)).collect();
        let best = rerank::Best::of(&all);
        // Only query terms are looked for: the rest of the text needs no stemming.
        let analyzer = snap.matching_analyzer(&q.terms().collect::<Vec<_>>());
        // Loading and featurising the candidates is most of this stage. This thread and a
        // helper (a core is idle again once the embedding returns) take them one by one, so
        // neither waits long for the other (a thread started per search for half of them
        // began on this thread's core: benches/RESULTS.md, sessions 17 and 46).
        let next = std::sync::atomic::AtomicUsize::new(0);
        let work = |mut analyzer: crate::index::Analyzer| {
            let mut out: Vec<(usize, Loaded)> = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&(d, addr)) = cands.get(i) else {
                    return Ok::<_, RetrieveError>(out);
                };
                let chunk = snap.chunk(addr)?;
                let cosine = match qvec {
                    Some(q) => snap.vector(addr)?.map(|v| crate::embed::dot(q, &v)),
                    None => None,
                };
                let passage = Passage {
                    text: &chunk.text,
                    title: &chunk.title,
                    headings: &chunk.heading_path,
                    ordinal: rerank::ordinal(&chunk.chunk_id),
                };
                let f = rerank::features(
                    &q,
                    &[(passage, signals(d, addr, cosine))],
                    best,
                    &mut |t, sink| analyzer.analyze_into(t, sink),
                )[0];
                out.push((i, (d, addr, chunk, cosine, f)));
            }
        };
        let alone = self
            .staging
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            == 0;
        let _staging = Staging(&self.staging);
        let pool = (alone && self.index.in_process())
            .then(crate::threads::helpers)
            .flatten();
        let mut done = match pool {
            Some(pool) if cands.len() > 1 => {
                let mut other = None;
                let out = &mut other;
                let (work, helper_analyzer) = (&work, analyzer.clone());
                let mine = pool.in_place_scope(|s| {
                    s.spawn(move |_| *out = Some(work(helper_analyzer)));
                    work(analyzer)
                })?;
                // The helper's job has run by now (a scope waits for its jobs, and a panic in
                // one resumes here).
                let mut theirs = other.unwrap_or_else(|| Ok(Vec::new()))?;
                theirs.extend(mine);
                theirs
            }
            _ => work(analyzer)?,
        };
        done.sort_by_key(|(i, _)| *i);
        debug_assert_eq!(done.len(), cands.len());
        let loaded: Vec<Loaded> = done.into_iter().map(|(_, l)| l).collect();
        let features: Vec<[f32; rerank::FEATURES]> = loaded.iter().map(|l| l.4).collect();
        let scores: Vec<f32> = features.iter().map(|f| model.score(f)).collect();
        if let Some(out) = features_out {
            for ((d, _, chunk, ..), (f, s)) in loaded.iter().zip(features.iter().zip(&scores)) {
                out.push(Scoring {
                    fused_rank: *d,
                    doc_key: chunk.doc_key.clone(),
                    chunk_id: chunk.chunk_id.clone(),
                    uri: chunk.uri.clone(),
                    text: chunk.text.clone(),
                    features: *f,
                    score: *s,
                });
            }
        }
        // Documents by their best chunk's score (fused order breaks ties).
        let mut best = vec![f32::NEG_INFINITY; depth];
        for ((d, ..), s) in loaded.iter().zip(&scores) {
            best[*d] = best[*d].max(*s);
        }
        let mut order: Vec<usize> = (0..depth).collect();
        order.sort_by(|a, b| best[*b].total_cmp(&best[*a]).then(a.cmp(b)));
        let mut per: Vec<Vec<(f32, Ranked)>> = (0..depth).map(|_| Vec::new()).collect();
        for ((d, addr, chunk, cosine, _), s) in loaded.into_iter().zip(scores) {
            let relevance = model.relevance(s);
            per[d].push((
                s,
                Ranked {
                    addr,
                    hit: Hit {
                        chunk,
                        score: relevance,
                        bm25_rank: top[d].ranks[0],
                        dense_rank: top[d].ranks[1],
                        similarity: cosine,
                        relevance: Some(relevance),
                    },
                },
            ));
        }
        let mut out = Vec::new();
        for d in order {
            let mut chunks = std::mem::take(&mut per[d]);
            chunks.sort_by(|a, b| b.0.total_cmp(&a.0));
            out.extend(
                chunks
                    .into_iter()
                    .take(limit.per_document.max(1))
                    .map(|(_, r)| r),
            );
            if out.len() >= limit.hits {
                break;
            }
        }
        Ok(out)
    }

    /// Hybrid feedback: the query vector moved towards the vectors of the first fusion's top
    /// documents (their representative chunks, all within the scope and filter), for a second
    /// dense search under the same scope and filter. `None` when off or nothing to move to.
    fn feedback_vector(
        &self,
        snap: &dyn IndexSnapshot,
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

    /// Query-term weights for answer extraction: idf over the documents `scope` may read, as
    /// BM25's. Uniform if the index cannot be read (no statistics is safer than wrong ones).
    pub fn term_weights(&self, scope: &AclScope, query: &str) -> Vec<(String, f32)> {
        let snap = self.index.snapshot();
        let mut terms = snap.analyze(query);
        terms.sort();
        terms.dedup();
        let idf = snap.idf(scope, &terms).unwrap_or_else(|e| {
            tracing::warn!(error = %crate::guardrail::pii::for_log(&e.to_string()), "term statistics unavailable; weighting terms uniformly");
            vec![1.0; terms.len()]
        });
        terms.into_iter().zip(idf).collect()
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
        relevance: None,
    }
}

/// One second-stage candidate as the ranker saw it.
#[derive(Debug, Clone)]
pub struct Scoring {
    /// 0-based rank of its document after fusion.
    pub fused_rank: usize,
    pub doc_key: String,
    pub chunk_id: String,
    pub uri: String,
    pub text: String,
    pub features: [f32; rerank::FEATURES],
    /// The model's score (before calibration).
    pub score: f32,
}

/// A second-stage candidate: its document (index into the fused top), address, chunk, cosine
/// and features.
type Loaded = (
    usize,
    ChunkAddr,
    StoredChunk,
    Option<f32>,
    [f32; rerank::FEATURES],
);

/// A hit with its address in the snapshot.
struct Ranked {
    addr: ChunkAddr,
    hit: Hit,
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use docent_connector_api::{Acl, DocKey, Principal};

    use super::*;
    use crate::embed::test_embedder::BagOfWords;
    use crate::index::Index;
    use crate::index::{ChunkRecord, DocumentRecord};

    const TEXTS: &[(&str, &str)] = &[
        (
            "parking permits are issued by facilities",
            "the garage opens at seven",
        ),
        (
            "laptop refresh every four years",
            "parking for bicycles is free",
        ),
        (
            "vpn client is wireguard",
            "reset the vpn token at the help desk",
        ),
        (
            "holiday calendar for the office",
            "parking permit renewal each year",
        ),
        ("travel policy hotel limits", "salary review in march"),
        (
            "expense claims within sixty days",
            "budget owners approve claims",
        ),
    ];

    fn index(dir: &std::path::Path) -> Arc<Index> {
        let texts: Vec<Vec<&str>> = TEXTS.iter().map(|(a, b)| vec![*a, *b]).collect();
        index_of(dir, &texts)
    }

    /// Document `d{i}` with the chunks `texts[i]`, readable by everyone.
    fn index_of<S: AsRef<str>>(dir: &std::path::Path, texts: &[Vec<S>]) -> Arc<Index> {
        let embedder: Arc<dyn Embedder> = Arc::new(BagOfWords);
        let index = Arc::new(Index::open(dir, embedder.model_id(), embedder.dim()).unwrap());
        for (i, parts) in texts.iter().enumerate() {
            put(&index, i, parts);
        }
        index.commit(BTreeMap::new()).unwrap();
        index
    }

    /// Writes (or replaces) document `d{i}` with the chunks `parts` (not committed).
    fn put<S: AsRef<str>>(index: &Index, i: usize, parts: &[S]) {
        let embedder = BagOfWords;
        let chunks = parts
            .iter()
            .enumerate()
            .map(|(o, t)| ChunkRecord {
                page: None,
                ord: o as u32,
                span: 0..t.as_ref().len(),
                heading_path: vec![],
                text: t.as_ref().to_string(),
                hash: format!("{i}-{o}"),
                vector: embedder.embed_query(t.as_ref()).unwrap(),
            })
            .collect();
        index
            .upsert(DocumentRecord {
                key: DocKey::new("t", format!("d{i}")),
                uri: format!("file:///d{i}"),
                title: format!("doc {i}"),
                version: "1".into(),
                modified_at: None,
                attributes: BTreeMap::new(),
                acl: Acl::new([Principal::Everyone], []),
                content_hash: format!("{i}"),
                chunks,
            })
            .unwrap();
    }

    const WORDS: [&str; 24] = [
        "parking", "permit", "garage", "vpn", "token", "reset", "salary", "review", "budget",
        "holiday", "travel", "hotel", "calendar", "expense", "claim", "laptop", "refresh",
        "bicycle", "office", "desk", "policy", "march", "renewal", "approve",
    ];

    /// `docs` documents of `chunks` chunks, each chunk `per_chunk` of `words` in a different mix.
    fn mixed_texts(
        words: &[&str],
        docs: usize,
        chunks: usize,
        per_chunk: usize,
    ) -> Vec<Vec<String>> {
        (0..docs)
            .map(|i| {
                (0..chunks)
                    .map(|o| {
                        (0..per_chunk)
                            .map(|k| {
                                words[(i * 7 + o * 5 + k * k * 3 + i * k * (o + 1)) % words.len()]
                            })
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .collect()
            })
            .collect()
    }

    fn retriever(index: &Arc<Index>, cfg: RetrievalConfig) -> Retriever {
        Retriever::new(index.clone(), Arc::new(BagOfWords), cfg)
            .with_ranker(RankerModel::builtin().clone())
    }

    fn docs(hits: &[Hit]) -> BTreeSet<String> {
        hits.iter().map(|h| h.chunk.doc_key.clone()).collect()
    }

    #[test]
    fn bm25_ranks_the_document_holding_every_query_word_across_its_chunks_first() {
        let dir = tempfile::tempdir().unwrap();
        // d0 holds both words, in its second and third chunks; d1 and d2 hold one each in a
        // short chunk, which wins chunk by chunk.
        let index = index_of(
            dir.path(),
            &[
                vec![
                    "opening hours of the front desk",
                    "garage entry",
                    "permit office",
                ],
                vec!["permit"],
                vec!["garage"],
            ],
        );
        let scope = AclScope::for_tests("u", &["everyone"]);
        let f = SearchFilter::default();
        let search = |document_bm25| {
            let cfg = RetrievalConfig {
                document_bm25,
                ..RetrievalConfig::default()
            };
            retriever(&index, cfg)
                .search(&scope, "garage permit", Mode::Bm25, &f, 3)
                .unwrap()
        };
        let whole = search(true);
        assert_eq!(whole[0].chunk.doc_key, "t:d0");
        assert_ne!(
            whole[0].chunk.chunk_id, "t:d0#0",
            "represented by a matching chunk (chunk-level BM25's best), not the first"
        );
        assert_ne!(
            search(false)[0].chunk.doc_key,
            "t:d0",
            "chunk by chunk it does not"
        );
    }

    /// Found by a review: hits past the second stage's documents kept their cosine, and a
    /// cosine over `min_similarity` made one evidence although the stage ranked it below
    /// documents it judged irrelevant.
    #[test]
    fn hits_past_the_second_stage_are_not_evidence_by_their_cosine() {
        let dir = tempfile::tempdir().unwrap();
        let docs: Vec<Vec<String>> = ["garage permit", "garage permit office", "garage hours"]
            .iter()
            .map(|t| vec![t.to_string()])
            .collect();
        let index = index_of(dir.path(), &docs);
        let scope = AclScope::for_tests("u", &["everyone"]);
        let cfg = RetrievalConfig {
            rerank_depth: 1,
            ..RetrievalConfig::default()
        };
        let hits = retriever(&index, cfg)
            .search(
                &scope,
                "garage permit",
                Mode::Hybrid,
                &SearchFilter::default(),
                3,
            )
            .unwrap();
        assert_eq!(hits.len(), 3);
        assert!(hits[0].relevance.is_some(), "{:?}", hits[0]);
        let everything = crate::answer::AnswerConfig {
            min_relevance: 0.5,
            support_ratio: 0.5,
            other_document_ratio: 0.0,
            min_similarity: -1.0,
            max_sentences: 2,
            max_passages: 5,
            passages_per_document: 1,
            min_sentence_similarity: None,
            check_sentences: 1,
        };
        for h in &hits[1..] {
            assert_eq!((h.relevance, h.similarity), (None, None), "{h:?}");
            assert!(!crate::answer::is_evidence(h, &everything));
        }
    }

    #[test]
    fn a_dense_search_scores_every_hit_by_its_exact_cosine() {
        let dir = tempfile::tempdir().unwrap();
        // 120 one-chunk documents of varied words: far deeper than the leg's exact head.
        let words = [
            "garage", "permit", "office", "desk", "hours", "badge", "lunch",
        ];
        let docs: Vec<Vec<String>> = (0..120)
            .map(|d: usize| {
                vec![
                    (0..2 + d % 5)
                        .map(|w| words[(d * 3 + w * w + d / 7) % words.len()])
                        .collect::<Vec<_>>()
                        .join(" "),
                ]
            })
            .collect();
        let index = index_of(dir.path(), &docs);
        let scope = AclScope::for_tests("u", &["everyone"]);
        let hits = retriever(&index, RetrievalConfig::default())
            .search(
                &scope,
                "garage permit badge",
                Mode::Dense,
                &SearchFilter::default(),
                100,
            )
            .unwrap();
        assert!(hits.len() > 40, "{}", hits.len());
        for h in &hits {
            assert_eq!(Some(h.score), h.similarity, "{}", h.chunk.doc_key);
        }
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    }

    #[test]
    fn bm25_alone_ranks_the_same_documents_whatever_the_page_size() {
        let dir = tempfile::tempdir().unwrap();
        // 90 documents of one to three chunks, holding the query words in varied amounts.
        let words = ["garage", "permit", "office", "desk", "hours"];
        let docs: Vec<Vec<String>> = (0..90)
            .map(|d: usize| {
                (0..1 + d % 3)
                    .map(|c| {
                        (0..1 + (d * 7 + c * 3) % 6)
                            .map(|w| words[(d + c + w * w) % words.len()])
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .collect()
            })
            .collect();
        let index = index_of(dir.path(), &docs);
        let scope = AclScope::for_tests("u", &["everyone"]);
        let f = SearchFilter::default();
        let r = retriever(&index, RetrievalConfig::default());
        let page = |n| {
            r.search(&scope, "garage permit", Mode::Bm25, &f, n)
                .unwrap()
        };
        let (small, large) = (page(5), page(80));
        assert_eq!(small.len(), 5);
        let keys = |h: &[Hit]| {
            h.iter()
                .map(|h| h.chunk.doc_key.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(&small), keys(&large[..5]));
        // Fewer fusion candidates than the chunk leg's minimum (configurable down to 1).
        let shallow = retriever(
            &index,
            RetrievalConfig {
                candidates: 20,
                ..RetrievalConfig::default()
            },
        );
        let few = shallow
            .search(&scope, "garage permit", Mode::Bm25, &f, 5)
            .unwrap();
        assert_eq!(keys(&few), keys(&small));
        for h in &small {
            assert!(
                h.chunk.text.contains("garage") || h.chunk.text.contains("permit"),
                "{} is represented by a matching chunk",
                h.chunk.doc_key
            );
        }
    }

    #[test]
    fn second_stage_only_reorders_the_fused_documents() {
        let dir = tempfile::tempdir().unwrap();
        let index = index(dir.path());
        let on = retriever(&index, RetrievalConfig::default());
        let off = retriever(
            &index,
            RetrievalConfig {
                rerank: false,
                ..RetrievalConfig::default()
            },
        );
        let scope = crate::eval::run::eval_scope();
        let f = SearchFilter::default();
        for q in ["parking permit", "vpn token reset", "salary budget holiday"] {
            let a = on.search(&scope, q, Mode::Hybrid, &f, 100).unwrap();
            let b = off.search(&scope, q, Mode::Hybrid, &f, 100).unwrap();
            assert_eq!(docs(&a), docs(&b), "{q}");
            assert_eq!(a.len(), docs(&a).len(), "one passage per document");
            assert!(b.iter().all(|h| h.relevance.is_none()));
            for h in &a {
                let r = h.relevance.expect("the second stage scored every hit");
                assert!((0.0..=1.0).contains(&r));
                assert_eq!(h.score, r);
            }
            assert!(a.windows(2).all(|w| w[0].score >= w[1].score), "{q}");
        }
        // BM25-only and dense-only searches are not reranked.
        let bm25 = on.search(&scope, "parking", Mode::Bm25, &f, 10).unwrap();
        assert!(!bm25.is_empty() && bm25.iter().all(|h| h.relevance.is_none()));
    }

    /// A backend whose BM25 leg blocks on queries holding "stall" until the gate opens: a hung
    /// remote engine ([`Backend::in_process`] false).
    struct Stalling {
        inner: Arc<Index>,
        gate: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
        entered: Arc<std::sync::atomic::AtomicUsize>,
    }

    struct StallingSnapshot<'a> {
        inner: Box<dyn IndexSnapshot + 'a>,
        gate: &'a (std::sync::Mutex<bool>, std::sync::Condvar),
        entered: &'a std::sync::atomic::AtomicUsize,
    }

    impl IndexSnapshot for StallingSnapshot<'_> {
        fn bm25(
            &self,
            scope: &AclScope,
            filter: &SearchFilter,
            query: &str,
            depth: usize,
            boosts: (f32, f32),
        ) -> Result<Vec<crate::index::Scored>, crate::index::IndexError> {
            if query.contains("stall") {
                self.entered
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (open, cv) = self.gate;
                let mut g = open.lock().unwrap();
                while !*g {
                    g = cv.wait(g).unwrap();
                }
            }
            self.inner.bm25(scope, filter, query, depth, boosts)
        }
        fn bm25_documents(
            &self,
            scope: &AclScope,
            filter: &SearchFilter,
            query: &str,
            depth: usize,
        ) -> Result<Option<Vec<crate::index::Scored>>, IndexError> {
            self.inner.bm25_documents(scope, filter, query, depth)
        }
        fn dense(
            &self,
            scope: &AclScope,
            filter: &SearchFilter,
            query: &[f32],
            depth: usize,
        ) -> Result<Vec<crate::index::Scored>, crate::index::IndexError> {
            self.inner.dense(scope, filter, query, depth)
        }
        fn doc_ids(
            &self,
            hits: &[crate::index::Scored],
        ) -> Result<Vec<u64>, crate::index::IndexError> {
            self.inner.doc_ids(hits)
        }
        fn chunk(&self, addr: ChunkAddr) -> Result<StoredChunk, crate::index::IndexError> {
            self.inner.chunk(addr)
        }
        fn vector(&self, addr: ChunkAddr) -> Result<Option<Vec<f32>>, crate::index::IndexError> {
            self.inner.vector(addr)
        }
        fn idf(&self, scope: &AclScope, tokens: &[String]) -> Result<Vec<f32>, IndexError> {
            self.inner.idf(scope, tokens)
        }
        fn analyze(&self, text: &str) -> Vec<String> {
            self.inner.analyze(text)
        }
        fn matching_analyzer(&self, terms: &[&str]) -> crate::index::Analyzer {
            self.inner.matching_analyzer(terms)
        }
    }

    impl docent_connector_api::IndexedState for Stalling {
        fn get(&self, key: &DocKey) -> Option<docent_connector_api::IndexedDoc> {
            self.inner.get(key)
        }
        fn native_ids(&self, connector: &str) -> Vec<String> {
            self.inner.native_ids(connector)
        }
    }

    impl Backend for Stalling {
        fn dim(&self) -> usize {
            self.inner.dim()
        }
        fn in_process(&self) -> bool {
            false
        }
        fn snapshot(&self) -> Box<dyn IndexSnapshot + '_> {
            Box::new(StallingSnapshot {
                inner: Box::new(self.inner.snapshot()),
                gate: &self.gate,
                entered: &self.entered,
            })
        }
        fn upsert(&self, doc: DocumentRecord) -> Result<(), crate::index::IndexError> {
            self.inner.upsert(doc)
        }
        fn delete(&self, key: &DocKey) {
            self.inner.delete(key)
        }
        fn commit(
            &self,
            checkpoints: BTreeMap<String, serde_json::Value>,
        ) -> Result<(), crate::index::IndexError> {
            self.inner.commit(checkpoints)
        }
        fn rollback(&self) -> Result<(), crate::index::IndexError> {
            self.inner.rollback()
        }
        fn checkpoints(&self) -> BTreeMap<String, serde_json::Value> {
            self.inner.checkpoints()
        }
        fn doc_entry(&self, key: &str) -> Option<crate::index::DocEntry> {
            self.inner.doc_entry(key)
        }
        fn latest_entry(&self, key: &str) -> Option<crate::index::DocEntry> {
            self.inner.latest_entry(key)
        }
        fn chunk_vectors(
            &self,
            key: &DocKey,
        ) -> Result<std::collections::HashMap<String, Vec<f32>>, crate::index::IndexError> {
            self.inner.chunk_vectors(key)
        }
        fn document_count(&self) -> usize {
            self.inner.document_count()
        }
        fn documents_by_source(&self) -> std::collections::HashMap<String, u64> {
            self.inner.documents_by_source()
        }
        fn stats(&self) -> crate::index::IndexStats {
            self.inner.stats()
        }
    }

    #[test]
    fn a_hung_remote_backend_does_not_hold_the_searches_of_others() {
        use std::sync::atomic::Ordering;
        use std::time::Duration;
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let stalling = Arc::new(Stalling {
            inner: index(a.path()),
            gate: Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new())),
            entered: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        });
        let (gate, entered) = (stalling.gate.clone(), stalling.entered.clone());
        let open = move || {
            *gate.0.lock().unwrap() = true;
            gate.1.notify_all();
        };
        let hung = Arc::new(
            Retriever::new(stalling, Arc::new(BagOfWords), RetrievalConfig::default())
                .with_ranker(RankerModel::builtin().clone()),
        );
        let healthy = retriever(&index(b.path()), RetrievalConfig::default());
        let scope = crate::eval::run::eval_scope();
        // More hung searches than the query path has helper threads.
        let n = crate::threads::helpers().map_or(2, |h| h.current_num_threads()) + 1;
        let stalled: Vec<_> = (0..n)
            .map(|_| {
                let (r, scope) = (hung.clone(), scope.clone());
                std::thread::spawn(move || {
                    r.search(
                        &scope,
                        "stall parking",
                        Mode::Hybrid,
                        &SearchFilter::default(),
                        10,
                    )
                })
            })
            .collect();
        // Every hung search is inside the backend at once: none waits for a shared thread.
        let mut waited = 0;
        while entered.load(Ordering::SeqCst) < n && waited < 3000 {
            std::thread::sleep(Duration::from_millis(10));
            waited += 1;
        }
        let all_entered = entered.load(Ordering::SeqCst);
        // Another retriever's hybrid search still completes.
        let (tx, rx) = std::sync::mpsc::channel();
        let other = std::thread::spawn(move || {
            let hits = healthy.search(
                &scope,
                "parking permit",
                Mode::Hybrid,
                &SearchFilter::default(),
                10,
            );
            let _ = tx.send(hits.map(|h| h.len()));
        });
        let got = rx.recv_timeout(Duration::from_secs(30));
        open();
        other.join().unwrap();
        assert_eq!(all_entered, n, "every hung search reached the backend");
        let found = got.expect("a search beside hung ones completed").unwrap();
        assert!(found > 0);
        // Released, the hung searches finish normally.
        for t in stalled {
            assert!(!t.join().unwrap().unwrap().is_empty());
        }
    }

    /// The second stage shares its candidates with a helper thread in process; it ranks
    /// exactly as on one thread (a remote backend's), features, scores and order.
    #[test]
    fn the_second_stage_on_two_threads_ranks_as_on_one() {
        let texts = mixed_texts(&WORDS, 40, 3, 5);
        let dir = tempfile::tempdir().unwrap();
        let index = index_of(dir.path(), &texts);
        let cfg = RetrievalConfig {
            rerank_depth: 12,
            ..RetrievalConfig::default()
        };
        let two = retriever(&index, cfg);
        // `Stalling` is a remote backend to the retriever; its gate is open.
        let one = Retriever::new(
            Arc::new(Stalling {
                inner: index.clone(),
                gate: Arc::new((std::sync::Mutex::new(true), std::sync::Condvar::new())),
                entered: Default::default(),
            }),
            Arc::new(BagOfWords),
            cfg,
        )
        .with_ranker(RankerModel::builtin().clone());
        let scope = crate::eval::run::eval_scope();
        let f = SearchFilter::default();
        for per_document in [1, 2] {
            let limit = Limit {
                hits: 10,
                per_document,
            };
            for q in [
                "parking permit garage",
                "vpn token reset desk",
                "salary review budget march",
                "holiday travel hotel policy",
                "expense claim approve",
                "laptop refresh office",
            ] {
                let (a_hits, a) = two.search_with_features(&scope, q, &f, limit).unwrap();
                let (b_hits, b) = one.search_with_features(&scope, q, &f, limit).unwrap();
                assert!(a.len() > 2, "{q}: {} candidates", a.len());
                let key = |s: &Scoring| (s.fused_rank, s.chunk_id.clone(), s.features, s.score);
                assert_eq!(
                    a.iter().map(key).collect::<Vec<_>>(),
                    b.iter().map(key).collect::<Vec<_>>(),
                    "{q}"
                );
                let hit = |h: &Hit| (h.chunk.chunk_id.clone(), h.score, h.similarity);
                assert_eq!(
                    a_hits.iter().map(hit).collect::<Vec<_>>(),
                    b_hits.iter().map(hit).collect::<Vec<_>>(),
                    "{q}"
                );
            }
        }
    }

    /// BM25 alone asks the chunk leg only for its page's documents (session 46): their chunks
    /// come scored and ordered as the whole chunk leg has them, and no other document's. Also
    /// where documents were replaced, by more or fewer chunks, in later segments and twice in
    /// one (session 50: a document's chunks are found as the docs beside its address that
    /// carry its key).
    #[test]
    fn the_passages_of_a_page_of_documents_are_the_chunk_legs_own() {
        let texts = mixed_texts(&WORDS[..12], 30, 4, 6);
        let dir = tempfile::tempdir().unwrap();
        let index = index_of(dir.path(), &texts);
        let page_is_the_legs_own = |index: &Index| {
            let snap = index.snapshot();
            let scope = crate::eval::run::eval_scope();
            let f = SearchFilter::default();
            let boosts = (0.15, 0.3);
            for q in [
                "parking permit",
                "vpn reset budget",
                "holiday hotel",
                "salary",
            ] {
                let docs = snap.bm25_documents(&scope, &f, q, 5).unwrap().unwrap();
                assert!(!docs.is_empty(), "{q}");
                let page: BTreeSet<u64> = snap.doc_ids(&docs).unwrap().into_iter().collect();
                let all = snap.bm25(&scope, &f, q, 10_000, boosts).unwrap();
                let all_keys = snap.doc_ids(&all).unwrap();
                let want: Vec<(ChunkAddr, f32)> = all
                    .iter()
                    .zip(&all_keys)
                    .filter(|(_, k)| page.contains(k))
                    .map(|(s, _)| (s.addr, s.score))
                    .collect();
                // Fewer than the whole leg holds (else nothing was left out).
                assert!(want.len() < all.len(), "{q}");
                let got = snap.bm25_passages(&scope, &f, q, &docs, 1, boosts).unwrap();
                let got: Vec<(ChunkAddr, f32)> = got.iter().map(|s| (s.addr, s.score)).collect();
                assert_eq!(got, want, "{q}");
            }
        };
        page_is_the_legs_own(&index);
        let more = mixed_texts(&WORDS[..12], 30, 7, 5);
        for round in 0..4 {
            for i in (round..30).step_by(4) {
                // More chunks, fewer, then the document again in the same segment.
                let n = 1 + (i + round) % 7;
                put(&index, i, &more[(i + round) % 30][..n]);
                if i % 3 == 0 {
                    put(&index, i, &texts[(i + 1) % 30][..2]);
                }
            }
            index.commit(BTreeMap::new()).unwrap();
            page_is_the_legs_own(&index);
        }
        assert!(
            index.stats().segments > 1,
            "documents replaced in later segments"
        );
    }

    #[test]
    fn several_passages_per_document_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let r = retriever(&index(dir.path()), RetrievalConfig::default());
        let scope = crate::eval::run::eval_scope();
        let limit = Limit {
            hits: 100,
            per_document: 2,
        };
        let hits = r
            .search(
                &scope,
                "parking permit",
                Mode::Hybrid,
                &SearchFilter::default(),
                limit,
            )
            .unwrap();
        // d0 and d3 hold "parking" in both or one chunk: their passages come together, best first.
        let mut seen: Vec<&str> = Vec::new();
        for h in &hits {
            let k = h.chunk.doc_key.as_str();
            if seen.last() != Some(&k) {
                assert!(!seen.contains(&k), "a document's passages are contiguous");
                seen.push(k);
            }
        }
        let ids: BTreeSet<&str> = hits.iter().map(|h| h.chunk.chunk_id.as_str()).collect();
        assert_eq!(ids.len(), hits.len(), "no passage twice");
        assert!(hits.len() > seen.len(), "some document gave two passages");
        for d in &seen {
            let mine: Vec<&Hit> = hits.iter().filter(|h| h.chunk.doc_key == *d).collect();
            assert!(mine.len() <= 2);
            assert!(mine.windows(2).all(|w| w[0].score >= w[1].score));
        }
        // The limit counts passages.
        let two = r
            .search(
                &scope,
                "parking permit",
                Mode::Hybrid,
                &SearchFilter::default(),
                Limit {
                    hits: 2,
                    per_document: 2,
                },
            )
            .unwrap();
        assert_eq!(two.len(), 2);
    }
}
