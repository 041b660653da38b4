//! The index backend seam (issue 14): everything Docent's query side and ingestion need from an
//! index, as two object-safe traits, so the daemon runs on the embedded tantivy index
//! ([`super::Index`]) or on another engine without the retriever, the assistant, the guardrails
//! or the pipeline knowing which.
//!
//! - [`Backend`]: the writer side (upsert, delete, commit with connector checkpoints, rollback),
//!   the document table (what connectors and the ACL recheck consult), statistics, and
//!   [`Backend::snapshot`].
//! - [`IndexSnapshot`]: one consistent view for one query: the two retrieval legs, the stored
//!   chunks, their vectors and the term statistics the answerer and the second stage use.
//!
//! Invariants every implementation keeps (checked for each by [`super::suite`]):
//! - no unscoped query exists: both legs take an [`AclScope`], which only authorization mints,
//!   and apply it (and the filters) *inside* the search, before top-k; the dense leg returns
//!   exactly the readable ∩ matching chunks when its search is exact;
//! - a commit makes data and the checkpoints that cover it visible together, and a checkpoint
//!   is never durable before the data it covers;
//! - upserts are idempotent per chunk id; a document's chunks are replaced, never doubled;
//!   deletes are by document.

use std::collections::{BTreeMap, HashMap};

use docent_connector_api::{DocKey, IndexedState};

use super::{
    Analyzer, DocEntry, DocumentRecord, IndexError, IndexStats, Scored, SearchFilter, StoredChunk,
};
use crate::acl::AclScope;

/// Where a chunk lies within one snapshot: opaque to everything but the backend that made it
/// (for tantivy, the segment ordinal and doc id). Ordered, so ties break deterministically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkAddr(pub u64);

/// One consistent view for one query.
pub trait IndexSnapshot: Send + Sync {
    /// BM25 over title, headings and text (`boosts`: title and heading weights relative to the
    /// text), restricted to the scope and filter before top-`depth`.
    fn bm25(
        &self,
        scope: &AclScope,
        filter: &SearchFilter,
        query: &str,
        depth: usize,
        boosts: (f32, f32),
    ) -> Result<Vec<Scored>, IndexError>;

    /// BM25 over whole documents (title and full text as one field, with document-level
    /// statistics: a document split in chunks keeps its term frequencies and length),
    /// restricted to the scope and filter before top-`depth`. Each hit is addressed by its
    /// document's first chunk. `None` where the index has no document-level field (an index
    /// written before it, or a backend without it): the caller ranks documents by chunks.
    fn bm25_documents(
        &self,
        _scope: &AclScope,
        _filter: &SearchFilter,
        _query: &str,
        _depth: usize,
    ) -> Result<Option<Vec<Scored>>, IndexError> {
        Ok(None)
    }

    /// The chunk leg ([`Self::bm25`]) for a page of the document leg (`documents`, its hits):
    /// the page's best matching chunks, scored and ordered as `bm25` scores and orders them,
    /// and no chunk of another document; deep enough for each document's best one unless one
    /// document of the page holds very many chunks that outscore another's best (that
    /// document then keeps its own address, as a document the chunk leg misses does). A
    /// BM25-only search needs no more to pick each document's passage. By default the chunk
    /// leg itself, `depth` deep.
    #[allow(clippy::too_many_arguments)]
    fn bm25_passages(
        &self,
        scope: &AclScope,
        filter: &SearchFilter,
        query: &str,
        documents: &[Scored],
        depth: usize,
        boosts: (f32, f32),
    ) -> Result<Vec<Scored>, IndexError> {
        let _ = documents;
        self.bm25(scope, filter, query, depth, boosts)
    }

    /// Nearest chunks by cosine among those the scope and filter admit.
    fn dense(
        &self,
        scope: &AclScope,
        filter: &SearchFilter,
        query: &[f32],
        depth: usize,
    ) -> Result<Vec<Scored>, IndexError>;

    /// A document identity per hit, equal for chunks of one document within this snapshot.
    fn doc_ids(&self, hits: &[Scored]) -> Result<Vec<u64>, IndexError>;

    /// The stored chunk at `addr` (an address this snapshot returned).
    fn chunk(&self, addr: ChunkAddr) -> Result<StoredChunk, IndexError>;

    /// The chunk's embedding.
    fn vector(&self, addr: ChunkAddr) -> Result<Option<Vec<f32>>, IndexError>;

    /// Inverse document frequencies of analyzed tokens in the text field, over the documents
    /// `scope` may read (never index-wide: see `index::stats`).
    fn idf(&self, scope: &AclScope, tokens: &[String]) -> Result<Vec<f32>, IndexError>;

    /// Analyzes text the way the BM25 text field does.
    fn analyze(&self, text: &str) -> Vec<String>;

    /// An analyzer for finding `terms` (analyzed terms) in many texts: it finds them where
    /// [`Self::analyze`] would, stemming only tokens that could stem to one of them (others
    /// come out unstemmed).
    fn matching_analyzer(&self, terms: &[&str]) -> Analyzer;
}

/// An index Docent can serve from and ingest into.
pub trait Backend: IndexedState + Send + Sync {
    /// The embedding dimension the index was created with.
    fn dim(&self) -> usize;

    /// Whether searches are computed in this process: short and CPU-bound. The retriever then
    /// runs the BM25 legs on its few shared helper threads. A remote backend's legs wait on the
    /// network (up to its timeout) and get a thread of their own, so a hung server cannot hold
    /// the helpers that every search shares.
    fn in_process(&self) -> bool {
        true
    }

    /// A view of the last commit.
    fn snapshot(&self) -> Box<dyn IndexSnapshot + '_>;

    /// Whether the index's answers about documents are complete: `false` while a backend could
    /// not read its document table, when a document it does not show may still be indexed (a
    /// delete or a withdrawal must not then be skipped as "nothing to do"). Asked after
    /// [`IndexedState`]'s answer about a document, as of that answer. Default: always.
    fn knows_every_document(&self) -> bool {
        true
    }

    /// Whether `doc` can be written at all; else why not (a per-document failure: a document the
    /// backend refuses would fail every commit). Default: any.
    fn check(&self, _doc: &DocumentRecord) -> Result<(), String> {
        Ok(())
    }

    /// Writes a document's chunks, replacing its previous ones (visible after the next commit).
    fn upsert(&self, doc: DocumentRecord) -> Result<(), IndexError>;

    /// Removes a document (visible after the next commit), also one written but not committed.
    fn delete(&self, key: &DocKey);

    /// Makes everything written so far durable and visible together with `checkpoints` (merged
    /// into the previous ones).
    fn commit(&self, checkpoints: BTreeMap<String, serde_json::Value>) -> Result<(), IndexError>;

    /// Drops uncommitted writes.
    fn rollback(&self) -> Result<(), IndexError>;

    /// The committed checkpoints by source.
    fn checkpoints(&self) -> BTreeMap<String, serde_json::Value>;

    /// One source's committed checkpoint (without copying the others').
    fn checkpoint_of(&self, connector: &str) -> Option<serde_json::Value> {
        self.checkpoints().remove(connector)
    }

    /// A committed document's entry (version, ACL, chunk count): what searches see.
    fn doc_entry(&self, key: &str) -> Option<DocEntry>;

    /// The newest entry, uncommitted writes included (`None` also for a pending delete).
    fn latest_entry(&self, key: &str) -> Option<DocEntry>;

    /// Vectors of a document's committed chunks by chunk hash (reused for unchanged chunks).
    fn chunk_vectors(&self, key: &DocKey) -> Result<HashMap<String, Vec<f32>>, IndexError>;

    fn document_count(&self) -> usize;

    fn documents_by_source(&self) -> HashMap<String, u64>;

    fn stats(&self) -> IndexStats;
}
