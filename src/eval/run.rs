//! Running a BEIR evaluation: build (or reuse) an index from `corpus.jsonl` through the real
//! ingest pipeline, then run every judged query through the real retriever under a real ACL scope.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use docent_connector_api::{Acl, Change, DocKey, Principal, SourceDocument};

use super::{CorpusDoc, Qrels, Query};
use crate::acl::{AclScope, authorize};
use crate::chunk::ChunkerConfig;
use crate::embed::{Embedder, EmbedderConfig, EmbeddingConfig, Pooling, TextProfile};
use crate::identity::{IdentitySpec, IdentityStore, token_hash};
use crate::index::{Index, IndexError, SearchFilter};
use crate::ingest::{IngestStats, Pipeline, PipelineConfig, SkipLog};
use crate::retrieve::{Mode, RetrieveError, Retriever};

/// Connector id under which evaluation documents are indexed.
pub const EVAL_SOURCE: &str = "eval";

/// How the benches load a model Docent knows by name (`all-MiniLM-L6-v2`,
/// `multilingual-e5-small`): its files under `repo/models/NAME` (scripts/setup-models.sh
/// [--multilingual]), its prefixes, 256 tokens per input; `None` for an unknown name.
pub fn known_embedding(repo: &Path, name: &str, threads: usize) -> Option<EmbeddingConfig> {
    let known = crate::embed::known_model(name)?;
    Some(EmbeddingConfig {
        model: EmbedderConfig {
            model_id: known.model_id.into(),
            model_dir: repo.join("models").join(known.name),
            onnxruntime_lib: repo.join("models/onnxruntime/libonnxruntime.so.1.31.1"),
            max_length: 256,
            batch_size: 32,
            threads,
        },
        text: TextProfile {
            query_prefix: known.query_prefix.into(),
            passage_prefix: known.passage_prefix.into(),
            pooling: Pooling::Mean,
        },
        expect_vocab: Some(known.vocab_size),
    })
}

/// BEIR documents as source documents readable by everyone (the eval identity included).
pub fn source_documents(corpus: &[CorpusDoc]) -> Vec<SourceDocument> {
    corpus
        .iter()
        .map(|d| SourceDocument {
            key: DocKey::new(EVAL_SOURCE, &d.id),
            uri: format!("{EVAL_SOURCE}:{}", d.id),
            title: Some(d.title.clone()).filter(|t| !t.is_empty()),
            mime: Some("text/plain".into()),
            name_hint: format!("{}.txt", d.id),
            content: d.text.clone().into_bytes(),
            version: "1".into(),
            modified_at: None,
            attributes: BTreeMap::new(),
            acl: Acl::new([Principal::Everyone], []),
            job: None,
            reparse: false,
        })
        .collect()
}

#[derive(Debug, Clone)]
pub struct IngestReport {
    pub documents: usize,
    pub chunks: u64,
    pub failed: u64,
    pub elapsed: Duration,
}

/// Ingests `docs` through the pipeline into `index` in batches, then commits.
/// `progress` is told how many more documents were written after each batch.
pub fn ingest(
    index: &Arc<Index>,
    embedder: &Arc<dyn Embedder>,
    chunking: ChunkerConfig,
    docs: &[SourceDocument],
    progress: &dyn Fn(u64),
) -> Result<IngestReport, IndexError> {
    let stats = Arc::new(IngestStats::default());
    let pipeline = Pipeline::new(
        index.clone(),
        embedder.clone(),
        PipelineConfig {
            chunking,
            commit_interval: Duration::from_secs(1),
            max_batch: 64,
            limits: Default::default(),
            retry: Default::default(),
        },
        stats.clone(),
        Arc::new(SkipLog::default()),
    );
    let t = Instant::now();
    for batch in docs.chunks(64) {
        pipeline.process(
            batch
                .iter()
                .cloned()
                .map(|d| Change::Upsert(Box::new(d)))
                .collect(),
        )?;
        progress(batch.len() as u64);
    }
    index.commit(BTreeMap::new())?;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    Ok(IngestReport {
        documents: docs.len(),
        chunks: load(&stats.chunks_embedded) + load(&stats.chunks_reused),
        failed: load(&stats.documents_failed),
        elapsed: t.elapsed(),
    })
}

/// The scope evaluation queries run under: a real identity through the real authorization step.
pub fn eval_scope() -> AclScope {
    let token = "docent-eval";
    let store = IdentityStore::new(
        vec![IdentitySpec {
            id: "eval".into(),
            aliases: vec![],
            groups: vec![],
            token_sha256: Some(hex::encode(token_hash(token))),
            ..Default::default()
        }],
        vec![],
    );
    authorize(
        &store
            .authenticate_token(token)
            .expect("the eval identity has this token"),
    )
    .expect("the eval identity may query")
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Metrics {
    pub ndcg_at_10: f64,
    pub recall_at_10: f64,
    pub recall_at_100: f64,
    pub mrr_at_10: f64,
    pub queries: usize,
}

/// Mean metrics over the judged queries (queries without judgments are skipped, as trec_eval).
pub fn evaluate(
    retriever: &Retriever,
    scope: &AclScope,
    queries: &[Query],
    qrels: &Qrels,
    mode: Mode,
    progress: &dyn Fn(u64),
) -> Result<Metrics, RetrieveError> {
    let mut m = Metrics {
        ndcg_at_10: 0.0,
        recall_at_10: 0.0,
        recall_at_100: 0.0,
        mrr_at_10: 0.0,
        queries: 0,
    };
    let prefix = format!("{EVAL_SOURCE}:");
    for q in queries {
        progress(1);
        let Some(rels) = qrels.get(&q.id) else {
            continue;
        };
        let hits = retriever.search(scope, &q.text, mode, &SearchFilter::default(), 100)?;
        let ranked = super::dedup_docs(hits.into_iter().map(|h| {
            h.chunk
                .doc_key
                .strip_prefix(&prefix)
                .unwrap_or(&h.chunk.doc_key)
                .to_string()
        }));
        m.ndcg_at_10 += super::ndcg_at_k(&ranked, rels, 10);
        m.recall_at_10 += super::recall_at_k(&ranked, rels, 10);
        m.recall_at_100 += super::recall_at_k(&ranked, rels, 100);
        m.mrr_at_10 += super::mrr_at_k(&ranked, rels, 10);
        m.queries += 1;
    }
    if m.queries > 0 {
        let n = m.queries as f64;
        m.ndcg_at_10 /= n;
        m.recall_at_10 /= n;
        m.recall_at_100 /= n;
        m.mrr_at_10 /= n;
    }
    Ok(m)
}

/// Opens the index at `dir`, ingesting the corpus first when it holds no documents yet.
pub fn open_or_build(
    dir: &Path,
    embedder: &Arc<dyn Embedder>,
    chunking: ChunkerConfig,
    corpus: &[CorpusDoc],
    progress: &dyn Fn(u64),
) -> Result<(Arc<Index>, Option<IngestReport>), IndexError> {
    let index = Arc::new(Index::open_with(
        dir,
        &crate::index::ModelSignature::of(embedder.as_ref()),
    )?);
    if index.document_count() > 0 {
        return Ok((index, None));
    }
    let report = ingest(
        &index,
        embedder,
        chunking,
        &source_documents(corpus),
        progress,
    )?;
    Ok((index, Some(report)))
}
