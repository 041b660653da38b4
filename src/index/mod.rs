//! The hybrid index: one tantivy index per data directory. A chunk is a tantivy document holding
//! its text (BM25), its embedding (a bytes fast field, searched by brute force over tantivy's own
//! segments), its document's ACL (raw `acl_allow` / `acl_deny` terms) and attributes.
//!
//! Invariants:
//! - one tantivy commit covers chunks, vectors, ACLs and connector checkpoints (the commit
//!   payload), so a crash never separates data from the checkpoint that covers it;
//! - a document's chunks are replaced by delete-then-add inside one commit, so a document is
//!   never present twice nor half-replaced;
//! - every search takes an [`AclScope`] and applies it inside the query, before top-k;
//! - the model id, dimension and text profile (prefixes, pooling) are recorded at creation;
//!   opening with another model fails, and [`Export`] is how an index is re-embedded instead.

pub mod ann;
pub mod backend;
pub mod dense;
mod doclist;
use doclist::DocListQuery;
pub mod milvus;
pub(crate) mod schema;
pub(crate) mod scope;
pub mod signs;
pub mod simd;
pub(crate) mod stats;
#[cfg(test)]
pub mod suite;

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use docent_connector_api::{Acl, DocKey, IndexedDoc, IndexedState, Principal};
use serde::{Deserialize, Serialize};
use tantivy::collector::DocSetCollector;
use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, ConstScoreQuery, EnableScoring, Occur, Query, RangeQuery,
    RegexQuery, TermQuery, TermSetQuery,
};
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::{
    DocAddress, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term,
};

use crate::acl::AclScope;
use crate::embed::{Embedder, Pooling, TextProfile};
pub use backend::{Backend, ChunkAddr, IndexSnapshot};
pub use dense::VectorCache;
pub use schema::Fields;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index at {path}: {source}")]
    Tantivy {
        path: PathBuf,
        source: tantivy::TantivyError,
    },
    #[error(
        "index at {path} was built with {found} but the config uses {want}: its vectors cannot be searched with this model; re-embed it into a new directory with `docent reindex --config NEW.toml --from {path}` (NEW.toml: this config with index.data_dir set to the new directory; connectors resume from their checkpoints), stop the daemon, run the same command with --catch-up, then start with NEW.toml (README: Changing the model of an existing index); or configure the model the index was built with"
    )]
    ModelMismatch {
        path: PathBuf,
        // Boxed: the error travels in every index `Result`.
        found: Box<ModelSignature>,
        want: Box<ModelSignature>,
    },
    /// The directory held an index and its `meta.json` is gone: creating a new index there
    /// would serve nothing, crawl everything again, and leave the old segments to tantivy's
    /// garbage collection.
    #[error(
        "index at {path}: {found} is there but meta.json is missing, so this directory held an index that cannot be opened: restore the directory (or its meta.json) from a backup, or move it away to build a new index"
    )]
    MetaMissing { path: PathBuf, found: String },
    /// A `docent reindex` is building this index, or was interrupted ([`INCOMPLETE_MARKER`]).
    #[error(
        "index at {path} is not complete: a docent reindex is building it or was interrupted; wait for it, or run it again (it resumes), or remove it"
    )]
    Incomplete { path: PathBuf },
    /// A `docent reindex` built this index, and its catch-up has not run ([`CATCH_UP_MARKER`]).
    #[error(
        "index at {path} was re-embedded and not caught up: stop the daemon serving the old index, then run docent reindex --catch-up (what the old index committed since it was read would be missing)"
    )]
    CatchUpPending { path: PathBuf },
    /// `docent reindex --catch-up` copied this index into another one, which is to be served
    /// from now on ([`SUPERSEDED_MARKER`]).
    #[error(
        "index at {path} was caught up into {by} by docent reindex --catch-up: serve that one (set [index] data_dir to it). To serve this one again instead (undoing the switch), remove {path}/{SUPERSEDED_MARKER}: what it commits then will be missing from {by}"
    )]
    Superseded { path: PathBuf, by: String },
    /// [`IndexError::ModelMismatch`] on a Milvus collection.
    #[error(
        "collection {path} was built with {found} but the config uses {want}: its vectors cannot be searched with this model; build a collection for the new model with docent reindex (see the README's Embedding models), or configure the model the collection was built with"
    )]
    CollectionModelMismatch {
        path: PathBuf,
        found: Box<ModelSignature>,
        want: Box<ModelSignature>,
    },
    #[error("index at {path}: corrupt commit payload: {message}")]
    Payload { path: PathBuf, message: String },
    #[error("index: {0}")]
    Op(#[from] tantivy::TantivyError),
    #[error("index: cannot create {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("index on Milvus: {0}")]
    Milvus(Box<docent_milvus::MilvusError>),
    /// Another node writes this Milvus collection (its heartbeat moves).
    #[error(
        "collection {path} is written by another node ({node}), whose heartbeat still moves: one ingest node writes a collection; start the others with role = \"query\", or stop that node first"
    )]
    AnotherWriter { path: PathBuf, node: String },
    /// Another node took over writing this Milvus collection (this node's heartbeat stopped
    /// for longer than the takeover wait, or both started at once): this one writes nothing
    /// more; restarted beside the other, it is refused ([`IndexError::AnotherWriter`]).
    #[error(
        "collection {path}: another node took over writing it, so this node commits nothing more: one ingest node writes a collection; start the others with role = \"query\""
    )]
    TakenOver { path: PathBuf },
    /// A commit failed and the writes since the last commit were rolled back (retrying it
    /// cannot succeed): the pipeline takes it as a failed batch.
    #[error("index at {path}: commit failed, uncommitted writes rolled back: {source}")]
    CommitRolledBack {
        path: PathBuf,
        source: tantivy::TantivyError,
    },
    /// A write or commit failed and the writer could not be reset to the last commit: nothing
    /// more is written or committed (a retried commit on such a writer could commit deletes
    /// without the documents added since). The pipeline stops, and with it the daemon; a
    /// restart opens the index at its last commit, whose checkpoints connectors resume from.
    #[error(
        "index at {path}: the writer could not be reset after a failed write ({reason}); nothing more is written until a restart from the last commit"
    )]
    WriterLost { path: PathBuf, reason: String },
}

impl IndexError {
    /// Whether the writes since the last commit were dropped (see
    /// [`IndexError::CommitRolledBack`]).
    pub fn rolled_back(&self) -> bool {
        matches!(self, Self::CommitRolledBack { .. })
    }

    /// Whether the index can take no more writes until a restart (see
    /// [`IndexError::WriterLost`]): retrying cannot help.
    pub fn writer_lost(&self) -> bool {
        matches!(self, Self::WriterLost { .. } | Self::TakenOver { .. })
    }
}

impl From<docent_milvus::MilvusError> for IndexError {
    fn from(e: docent_milvus::MilvusError) -> Self {
        Self::Milvus(Box::new(e))
    }
}

/// What decides the vectors: an index only opens with the same model, dimension and profile,
/// and the same model files where both sides know them ([`ModelSignature::serves`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSignature {
    pub model_id: String,
    pub dim: usize,
    pub text: TextProfile,
    /// A digest of the model's files (`model.onnx`, `tokenizer.json`), when known: files
    /// replaced in place under the same `model_id` and dimension are another model (a review:
    /// their vectors were searched with the old ones). `None` for an index written before it
    /// was recorded, and for embedders without files.
    pub weights: Option<String>,
}

impl ModelSignature {
    /// A model used without prefixes, with mean pooling.
    pub fn plain(model_id: &str, dim: usize) -> Self {
        Self {
            model_id: model_id.to_string(),
            dim,
            text: TextProfile::default(),
            weights: None,
        }
    }

    pub fn of(embedder: &dyn Embedder) -> Self {
        Self {
            model_id: embedder.model_id().to_string(),
            dim: embedder.dim(),
            text: embedder.text_profile(),
            weights: embedder.weights().map(str::to_string),
        }
    }

    /// Whether vectors made by `found` may be searched and extended with this model: the
    /// same model id, dimension and profile, and the same files unless either side does not
    /// know them (an index from before they were recorded takes this model's at its next
    /// commit).
    pub fn serves(&self, found: &ModelSignature) -> bool {
        (&self.model_id, self.dim, &self.text) == (&found.model_id, found.dim, &found.text)
            && match (&self.weights, &found.weights) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

impl std::fmt::Display for ModelSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "model {} ({} dims, {})",
            self.model_id, self.dim, self.text
        )?;
        match &self.weights {
            Some(w) => write!(f, " with files {}", w.chars().take(12).collect::<String>()),
            None => Ok(()),
        }
    }
}

/// What each commit records besides the data.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CommitPayload {
    pub model_id: String,
    pub dim: usize,
    /// The text profile of the model. Absent in indexes written before profiles were recorded,
    /// which were all built without prefixes and with mean pooling: the defaults.
    #[serde(default)]
    pub query_prefix: String,
    #[serde(default)]
    pub passage_prefix: String,
    #[serde(default)]
    pub pooling: Pooling,
    /// [`ModelSignature::weights`]; absent in indexes written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<String>,
    /// Connector id → its checkpoint, committed with the data it covers.
    #[serde(default)]
    pub checkpoints: BTreeMap<String, serde_json::Value>,
    /// Unix seconds.
    #[serde(default)]
    pub committed_at: i64,
}

impl CommitPayload {
    pub fn signature(&self) -> ModelSignature {
        ModelSignature {
            model_id: self.model_id.clone(),
            dim: self.dim,
            text: TextProfile {
                query_prefix: self.query_prefix.clone(),
                passage_prefix: self.passage_prefix.clone(),
                pooling: self.pooling,
            },
            weights: self.weights.clone(),
        }
    }
}

/// One chunk, ready to write.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkRecord {
    pub ord: u32,
    pub span: std::ops::Range<usize>,
    /// 1-based page where the format has pages.
    pub page: Option<u32>,
    pub heading_path: Vec<String>,
    pub text: String,
    /// Hash of what was embedded, to reuse vectors across re-ingests.
    pub hash: String,
    pub vector: Vec<f32>,
}

/// One document with all its chunks.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentRecord {
    pub key: DocKey,
    pub uri: String,
    pub title: String,
    pub version: String,
    pub modified_at: Option<i64>,
    pub attributes: BTreeMap<String, String>,
    pub acl: Acl,
    pub content_hash: String,
    pub chunks: Vec<ChunkRecord>,
}

/// Creates `dir` (and missing parents) readable by the daemon's account alone, and narrows it
/// to that when it exists wider: an index (or a store) holds every document's text whatever
/// its ACL, and tantivy writes its files with the process's umask, usually readable by every
/// local account. A directory the daemon cannot narrow (another owner's) is left as it is,
/// with a warning.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    let dot = Path::new(".");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // A directory made now is durable only once its parent's entry is (session 43's review: a
    // power loss could drop a new index directory, and the pushes acknowledged into it).
    for made in missing {
        let parent = made
            .parent()
            .map(|p| if p.as_os_str().is_empty() { dot } else { p });
        if let Some(parent) = parent
            && let Err(e) = std::fs::File::open(parent).and_then(|f| f.sync_all())
        {
            tracing::warn!(dir = %parent.display(), error = %e, "cannot sync the directory holding a new one: a power loss may drop it");
        }
    }
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0
        && let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
    {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot make this directory private to the daemon's account: other local accounts may read what it holds");
    }
    Ok(())
}

/// The longest key, chunk id or ACL entry a document may carry, bytes. tantivy leaves out of
/// its term dictionary, silently, any term over 65,530 bytes: a document key that long could
/// never be deleted by its key (old chunks under an old ACL would outlive every update), and a
/// deny entry that long would not be enforced inside the query. Refused per document instead,
/// with margin for the chunk number after the key.
pub const MAX_TERM_BYTES: usize = 60_000;

/// Whether every term the document's rows are found and filtered by fits the term dictionary.
fn check_terms(doc: &DocumentRecord) -> Result<(), String> {
    let key = doc.key.to_string().len();
    if key > MAX_TERM_BYTES {
        return Err(format!(
            "its key is {key} bytes; the index holds keys of at most {MAX_TERM_BYTES}"
        ));
    }
    let longest = doc
        .acl
        .allow
        .iter()
        .chain(&doc.acl.stored_deny())
        .map(|p| p.token().len())
        .max()
        .unwrap_or(0);
    if longest > MAX_TERM_BYTES {
        return Err(format!(
            "an ACL entry is {longest} bytes; the index holds entries of at most {MAX_TERM_BYTES}"
        ));
    }
    Ok(())
}

/// Per-document state kept in memory (rebuilt from the index at open).
#[derive(Debug, Clone)]
pub struct DocEntry {
    pub version: String,
    pub acl: Acl,
    pub acl_fingerprint: String,
    pub content_hash: String,
    pub chunks: u32,
}

/// A chunk as stored, for results and citations.
#[derive(Debug, Clone)]
pub struct StoredChunk {
    pub chunk_id: String,
    pub doc_key: String,
    pub source: String,
    pub title: String,
    pub uri: String,
    pub text: String,
    pub span: std::ops::Range<usize>,
    pub heading_path: Vec<String>,
    pub page: Option<u32>,
    pub acl: Acl,
    pub attributes: BTreeMap<String, String>,
}

/// Narrowing filters; they are ANDed with the ACL scope and can only remove results.
#[derive(Debug, Clone, Default)]
pub struct SearchFilter {
    pub sources: Vec<String>,
    pub uri_prefix: Option<String>,
    pub attributes: Option<AttrFilter>,
}

/// A condition on document attributes. Evaluated inside both retrieval legs (before top-k);
/// [`AttrFilter::matches`] is the reference semantics the index must agree with.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrFilter {
    Equals {
        key: String,
        value: String,
    },
    In {
        key: String,
        values: Vec<String>,
    },
    /// Inclusive bounds. Numeric when the value and every given bound parse as numbers, else by
    /// string order (ISO dates compare correctly).
    Range {
        key: String,
        gte: Option<String>,
        lte: Option<String>,
    },
    Prefix {
        key: String,
        prefix: String,
    },
    And(Vec<AttrFilter>),
    Or(Vec<AttrFilter>),
    Not(Box<AttrFilter>),
}

fn in_range(v: &str, gte: Option<&str>, lte: Option<&str>) -> bool {
    let num = |s: &str| s.trim().parse::<f64>().ok().filter(|x| x.is_finite());
    if let Some(x) = num(v)
        && gte.is_none_or(|b| num(b).is_some())
        && lte.is_none_or(|b| num(b).is_some())
    {
        return gte.is_none_or(|b| x >= num(b).unwrap_or(f64::NEG_INFINITY))
            && lte.is_none_or(|b| x <= num(b).unwrap_or(f64::INFINITY));
    }
    gte.is_none_or(|b| v >= b) && lte.is_none_or(|b| v <= b)
}

impl AttrFilter {
    pub fn matches(&self, attrs: &BTreeMap<String, String>) -> bool {
        match self {
            Self::Equals { key, value } => attrs.get(key) == Some(value),
            Self::In { key, values } => attrs.get(key).is_some_and(|v| values.contains(v)),
            Self::Range { key, gte, lte } => attrs
                .get(key)
                .is_some_and(|v| in_range(v, gte.as_deref(), lte.as_deref())),
            Self::Prefix { key, prefix } => attrs.get(key).is_some_and(|v| v.starts_with(prefix)),
            Self::And(fs) => fs.iter().all(|f| f.matches(attrs)),
            Self::Or(fs) => fs.iter().any(|f| f.matches(attrs)),
            Self::Not(f) => !f.matches(attrs),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct IndexStats {
    pub documents: u64,
    pub chunks: u64,
    pub segments: u64,
    pub model_id: String,
    pub dim: usize,
    pub disk_bytes: u64,
    pub last_commit: i64,
}

/// Bytes of stored chunks compressed together. Every chunk a query returns or reranks is read
/// by decompressing its whole block, so blocks are kept small (tantivy's default is 16 KiB):
/// a chunk is ~1–2 KB, and the compression lost is a few percent of the store.
pub const STORE_BLOCK_BYTES: usize = 4096;

/// [`IndexSnapshot::bm25_passages`] ranks at least this many matching chunks per document.
const PASSAGES_SCANNED_PER_DOCUMENT: usize = 64;

pub struct Index {
    path: PathBuf,
    index: tantivy::Index,
    fields: Fields,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    /// The committed document table (what searches see).
    docs: RwLock<HashMap<String, DocEntry>>,
    /// Written since the last commit, by key: the newest entry, or `None` for a delete. Applied
    /// to `docs` by the commit, dropped by a rollback.
    pending: Mutex<HashMap<String, Option<DocEntry>>>,
    payload: RwLock<CommitPayload>,
    vectors: Arc<VectorCache>,
    /// The docs each recent scope admits, per segment ([`scope`]).
    scopes: scope::ScopeCache,
    /// BM25 statistics of recent collections ([`stats::StatisticsCache`]).
    statistics: stats::StatisticsCache,
    /// Why the writer is lost, once a rollback failed ([`IndexError::WriterLost`]).
    lost: Mutex<Option<String>>,
    /// Failure injection for tests: the next commit, then the next rollback, fail.
    #[cfg(test)]
    pub(crate) fail_commit_and_rollback: std::sync::atomic::AtomicBool,
    /// Failure injection for tests: syncing the directory after the next commit fails.
    #[cfg(test)]
    pub(crate) fail_dir_sync: std::sync::atomic::AtomicBool,
    /// For tests: deny entries are stored as an older release stored them, without their
    /// folded forms ([`Index::fold_old_deny_entries`]).
    #[cfg(test)]
    pub(crate) store_unfolded_deny: std::sync::atomic::AtomicBool,
}

impl Index {
    /// [`Index::open_with`] for a model used without prefixes (test embedders, evaluation).
    pub fn open(dir: &Path, model_id: &str, dim: usize) -> Result<Self, IndexError> {
        Self::open_with(dir, &ModelSignature::plain(model_id, dim))
    }

    /// Opens the index in `dir`, creating it if absent, and checks it was built with this model
    /// and text profile. Refuses a directory a `docent reindex` is building, or left
    /// unfinished ([`INCOMPLETE_MARKER`]).
    pub fn open_with(dir: &Path, model: &ModelSignature) -> Result<Self, IndexError> {
        if dir.join(INCOMPLETE_MARKER).exists() {
            return Err(IndexError::Incomplete {
                path: dir.to_path_buf(),
            });
        }
        if dir.join(CATCH_UP_MARKER).exists() {
            return Err(IndexError::CatchUpPending {
                path: dir.to_path_buf(),
            });
        }
        // Present at all, readable or not (a review: one the daemon could not read was no
        // marker).
        let superseded = dir.join(SUPERSEDED_MARKER);
        match std::fs::symlink_metadata(&superseded) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            _ => {
                return Err(IndexError::Superseded {
                    path: dir.to_path_buf(),
                    by: std::fs::read_to_string(&superseded)
                        .ok()
                        .map(|by| by.trim().to_string())
                        .filter(|by| !by.is_empty())
                        .unwrap_or_else(|| "another index (the marker cannot be read)".into()),
                });
            }
        }
        Self::open_incomplete(dir, model)
    }

    /// [`Index::open_with`] for the catch-up of a re-embedded index (its catch-up marker
    /// present; an unfinished one is still refused).
    pub(crate) fn open_caught_up_later(
        dir: &Path,
        model: &ModelSignature,
    ) -> Result<Self, IndexError> {
        if dir.join(INCOMPLETE_MARKER).exists() {
            return Err(IndexError::Incomplete {
                path: dir.to_path_buf(),
            });
        }
        Self::open_incomplete(dir, model)
    }

    /// [`Index::open_with`] for the `docent reindex` that builds it (its marker present).
    pub(crate) fn open_incomplete(dir: &Path, model: &ModelSignature) -> Result<Self, IndexError> {
        let dim = model.dim;
        let tan = |source| IndexError::Tantivy {
            path: dir.to_path_buf(),
            source,
        };
        private_dir(dir).map_err(|source| IndexError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let schema = schema::build();
        let exists = dir.join("meta.json").exists();
        if !exists {
            no_index_left_behind(dir)?;
        }
        let mut index = if exists {
            tantivy::Index::open_in_dir(dir).map_err(tan)?
        } else {
            tantivy::Index::create_in_dir(dir, schema.clone()).map_err(tan)?
        };
        // Segments written from now on (an older index keeps its blocks until they merge).
        index.settings_mut().docstore_blocksize = STORE_BLOCK_BYTES;
        if exists && !schema::accepted().contains(&index.schema()) {
            return Err(IndexError::Payload {
                path: dir.to_path_buf(),
                message: "the index was written by another version of the schema; remove the directory and let Docent rebuild it".into(),
            });
        }
        schema::register_tokenizers(&index);
        let fields = Fields::resolve(&index.schema()).map_err(|m| IndexError::Payload {
            path: dir.to_path_buf(),
            message: format!("incompatible schema: {m}"),
        })?;
        if fields.doc_text.is_none() {
            tracing::warn!(
                path = %dir.display(),
                "this index was created before whole-document BM25: BM25 ranks documents by their best chunk; rebuild it to get it (`docent reindex` into a new directory with the same model copies the vectors, no embedding)"
            );
        }
        let metas = index.load_metas().map_err(tan)?;
        let payload: Option<CommitPayload> = match metas.payload.as_deref() {
            Some(p) => Some(serde_json::from_str(p).map_err(|e| IndexError::Payload {
                path: dir.to_path_buf(),
                message: e.to_string(),
            })?),
            None => None,
        };
        if let Some(p) = &payload
            && !model.serves(&p.signature())
        {
            return Err(IndexError::ModelMismatch {
                path: dir.to_path_buf(),
                found: Box::new(p.signature()),
                want: Box::new(model.clone()),
            });
        }
        // An index from before the files were recorded takes this model's, committed at once
        // (a review: kept only from the next commit, an idle index opened again with other
        // files took those).
        let adopted = payload
            .as_ref()
            .is_some_and(|p| p.weights.is_none() && model.weights.is_some());
        let payload = payload.map(|mut p| {
            if p.weights.is_none() {
                p.weights.clone_from(&model.weights);
            }
            p
        });
        let writer: IndexWriter = index.writer_with_num_threads(1, 64 << 20).map_err(tan)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(tan)?;
        let this = Self {
            path: dir.to_path_buf(),
            fields,
            reader,
            writer: Mutex::new(writer),
            docs: RwLock::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            payload: RwLock::new(payload.clone().unwrap_or_else(|| CommitPayload {
                model_id: model.model_id.clone(),
                dim,
                query_prefix: model.text.query_prefix.clone(),
                passage_prefix: model.text.passage_prefix.clone(),
                pooling: model.text.pooling,
                weights: model.weights.clone(),
                ..Default::default()
            })),
            vectors: Arc::new(VectorCache::new(dim)),
            scopes: scope::ScopeCache::default(),
            statistics: stats::StatisticsCache::default(),
            lost: Mutex::new(None),
            #[cfg(test)]
            fail_commit_and_rollback: false.into(),
            #[cfg(test)]
            store_unfolded_deny: false.into(),
            #[cfg(test)]
            fail_dir_sync: false.into(),
            index,
        };
        if payload.is_none() || adopted {
            // Record the model at creation (or its files, adopted), so a later open with
            // another model is refused.
            this.commit(BTreeMap::new())?;
        }
        this.load_doc_table()?;
        Ok(this)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn dim(&self) -> usize {
        self.read_payload().dim
    }

    fn read_payload(&self) -> std::sync::RwLockReadGuard<'_, CommitPayload> {
        self.payload.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The last committed checkpoint of every connector.
    pub fn checkpoints(&self) -> BTreeMap<String, serde_json::Value> {
        self.read_payload().checkpoints.clone()
    }

    fn load_doc_table(&self) -> Result<(), IndexError> {
        let searcher = self.reader.searcher();
        let f = &self.fields;
        let q = TermQuery::new(
            Term::from_field_u64(f.chunk_ord, 0),
            IndexRecordOption::Basic,
        );
        let addrs = searcher.search(&q, &DocSetCollector)?;
        let mut table = HashMap::with_capacity(addrs.len());
        for addr in addrs {
            let doc: TantivyDocument = searcher.doc(addr)?;
            let key = get_str(&doc, f.doc_key);
            let acl = read_acl(&doc, f);
            let deny = doc.get_all(f.acl_deny).filter_map(|v| v.as_str());
            table.insert(
                key,
                DocEntry {
                    version: get_str(&doc, f.version),
                    acl_fingerprint: read_back_fingerprint(&acl, deny),
                    acl,
                    content_hash: get_str(&doc, f.content_hash),
                    chunks: doc
                        .get_first(f.doc_chunks)
                        .and_then(|v| v.as_u64())
                        .unwrap_or(0) as u32,
                },
            );
        }
        *self.docs.write().unwrap_or_else(|e| e.into_inner()) = table;
        Ok(())
    }

    /// The committed entry of a document: what searches and ACL checks see.
    pub fn doc_entry(&self, key: &str) -> Option<DocEntry> {
        self.docs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// The newest entry of a document, counting writes not committed yet: what the next commit
    /// will hold. Deciding "unchanged" or "nothing to delete" must look here, or a change that
    /// follows an uncommitted one is lost.
    pub fn latest_entry(&self, key: &str) -> Option<DocEntry> {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = pending.get(key) {
            return p.clone();
        }
        // Still holding `pending`, so a commit cannot move the entry between the two tables.
        self.doc_entry(key)
    }

    pub fn document_count(&self) -> usize {
        self.docs.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Documents per connector id.
    pub fn documents_by_source(&self) -> HashMap<String, u64> {
        let mut out = HashMap::new();
        for k in self.docs.read().unwrap_or_else(|e| e.into_inner()).keys() {
            if let Some(dk) = DocKey::parse(k) {
                *out.entry(dk.connector).or_insert(0) += 1;
            }
        }
        out
    }

    /// Replaces all chunks of a document (visible after the next commit).
    pub fn upsert(&self, doc: DocumentRecord) -> Result<(), IndexError> {
        self.check_writer()?;
        let f = &self.fields;
        let key = doc.key.to_string();
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        // One batch: the old rows' delete and every chunk, so the chunks land in one segment
        // (`doc_ids` names a document by segment and key; chunks added one call at a time could
        // be split by a segment flush between them, and the document be fused twice).
        let mut ops = Vec::with_capacity(doc.chunks.len() + 1);
        ops.push(tantivy::indexer::UserOperation::Delete(
            Term::from_field_text(f.doc_key, &key),
        ));
        let attrs = serde_json::to_string(&doc.attributes).unwrap_or_else(|_| "{}".into());
        let n = doc.chunks.len() as u64;
        let deny = doc.acl.stored_deny();
        #[cfg(test)]
        let deny = match self
            .store_unfolded_deny
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            true => doc.acl.deny.clone(),
            false => deny,
        };
        for c in &doc.chunks {
            let mut d = TantivyDocument::default();
            d.add_text(f.chunk_id, format!("{key}#{}", c.ord));
            d.add_text(f.doc_key, &key);
            d.add_text(f.source, &doc.key.connector);
            d.add_text(f.uri, &doc.uri);
            d.add_text(f.title, &doc.title);
            d.add_text(f.heading, join_headings(&c.heading_path));
            d.add_text(f.text, &c.text);
            for p in &doc.acl.allow {
                d.add_text(f.acl_allow, p.token());
            }
            for p in &deny {
                d.add_text(f.acl_deny, p.token());
            }
            d.add_u64(f.chunk_ord, c.ord as u64);
            d.add_u64(f.doc_chunks, n);
            d.add_u64(f.span_start, c.span.start as u64);
            d.add_u64(f.span_end, c.span.end as u64);
            d.add_text(f.version, &doc.version);
            d.add_text(f.content_hash, &doc.content_hash);
            d.add_text(f.chunk_hash, &c.hash);
            d.add_i64(f.modified, doc.modified_at.unwrap_or(0));
            d.add_text(f.attributes, &attrs);
            d.add_bytes(f.vector, &dense::encode(&c.vector));
            if let (Some(field), Some(page)) = (f.page, c.page) {
                d.add_u64(field, page as u64);
            }
            if let Some(field) = f.attr {
                for (k, v) in &doc.attributes {
                    d.add_text(field, format!("{k}{}{v}", schema::ATTR_SEP));
                }
            }
            // On the first chunk's row, so the documents are counted by `chunk_ord` 0.
            if let (Some(field), 0) = (f.doc_text, c.ord) {
                d.add_text(field, whole_text(&doc));
            }
            ops.push(tantivy::indexer::UserOperation::Add(d));
        }
        writer.run(ops)?;
        drop(writer);
        let entry = DocEntry {
            version: doc.version,
            acl_fingerprint: doc.acl.fingerprint(),
            acl: doc.acl,
            content_hash: doc.content_hash,
            chunks: n as u32,
        };
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, Some(entry));
        Ok(())
    }

    /// Removes a document (visible after the next commit), also one written but not committed.
    pub fn delete(&self, key: &DocKey) {
        let key = key.to_string();
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        writer.delete_term(Term::from_field_text(self.fields.doc_key, &key));
        drop(writer);
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, None);
    }

    /// Commits everything written so far together with `checkpoints` (merged into the previous
    /// ones), then makes it visible to searches.
    /// Writes again, from their own rows, the documents whose deny entries were stored by an
    /// older release without their folded forms ([`Acl::stored_deny`]), and commits; returns
    /// how many. The index's deny filter misses such an entry for a caller spelt otherwise
    /// (`user:Bob` for `bob`): the recheck after retrieval drops the document, but it took a
    /// place in the top-k (fewer results) and counted in the caller's BM25 statistics. A
    /// crawled source writes it again at its next sync ([`stored_fingerprint`]); a push source
    /// never did (a review). Call before serving. A document whose rows cannot be read back
    /// whole (a chunk without its vector) is left as it is, to its source.
    pub fn fold_old_deny_entries(&self) -> Result<usize, IndexError> {
        let old: Vec<String> = self
            .docs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, e)| e.acl_fingerprint == UNFOLDED_DENY)
            .map(|(k, _)| k.clone())
            .collect();
        if old.is_empty() {
            return Ok(0);
        }
        let export = Export::open(&self.path)?;
        let dim = self.dim();
        let mut n = 0;
        for key in &old {
            let Some(doc) = export.document_with_vectors(key)? else {
                continue;
            };
            if doc.chunks.iter().any(|c| c.vector.len() != dim) {
                continue;
            }
            // Written with the entries' folded forms (`upsert` stores `stored_deny`).
            self.upsert(doc)?;
            n += 1;
        }
        if n > 0 {
            self.commit(BTreeMap::new())?;
            tracing::info!(
                documents = n,
                "rewrote documents whose deny entries an older release stored without their folded forms"
            );
        }
        Ok(n)
    }

    pub fn commit(
        &self,
        checkpoints: BTreeMap<String, serde_json::Value>,
    ) -> Result<(), IndexError> {
        let mut payload = self.read_payload().clone();
        payload.checkpoints.extend(checkpoints);
        payload.committed_at = unix_now();
        let json = serde_json::to_string(&payload).map_err(|e| IndexError::Payload {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        self.check_writer()?;
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let committed = (|| {
            #[cfg(test)]
            if self
                .fail_commit_and_rollback
                .load(std::sync::atomic::Ordering::SeqCst)
            {
                return Err(tantivy::TantivyError::InternalError(
                    "a commit failure injected by a test".into(),
                ));
            }
            let mut prepared = writer.prepare_commit()?;
            prepared.set_payload(&json);
            prepared.commit()
        })();
        if let Err(source) = committed {
            // A commit that failed (a full disk, an I/O error while a segment was written)
            // leaves tantivy's writer without its indexing thread: retried, it would commit
            // the deletes and drop every added document from then on. A new writer starts
            // from the last commit instead, and what was written since is gone.
            self.reset_writer(&mut writer)?;
            drop(writer);
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            return Err(IndexError::CommitRolledBack {
                path: self.path.clone(),
                source,
            });
        }
        // tantivy renames the new `meta.json` into place without syncing the directory: until
        // the file system writes that rename out, a power loss brings back the previous commit
        // (an ACL a source narrowed, a document it deleted), though this one was acknowledged
        // (a push with `wait_for_commit`; a review). Durable before anything is published; if
        // it cannot be made so, no write is acknowledged any more until a restart reads the
        // index from disk.
        #[cfg(test)]
        let injected = self
            .fail_dir_sync
            .swap(false, std::sync::atomic::Ordering::SeqCst);
        #[cfg(not(test))]
        let injected = false;
        let synced = match injected {
            true => Err(std::io::Error::other(
                "a directory sync failure injected by a test",
            )),
            false => std::fs::File::open(&self.path).and_then(|d| d.sync_all()),
        };
        if let Err(e) = synced {
            let reason = format!(
                "the index directory could not be synced after a commit ({e}): what it committed \
                 may not survive a power loss"
            );
            tracing::error!(index = %self.path.display(), error = %crate::guardrail::pii::for_log(&reason), "no more writes until a restart");
            *self.lost.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.clone());
            drop(writer);
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            return Err(IndexError::WriterLost {
                path: self.path.clone(),
                reason,
            });
        }
        drop(writer);
        {
            // Both locks at once (pending, then docs, as everywhere), so no reader sees a write
            // in neither table.
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let mut docs = self.docs.write().unwrap_or_else(|e| e.into_inner());
            for (k, op) in pending.drain() {
                match op {
                    Some(e) => {
                        docs.insert(k, e);
                    }
                    None => {
                        docs.remove(&k);
                    }
                }
            }
        }
        let reloaded = self.reader.reload();
        self.vectors.retain(&self.reader.searcher());
        // The checkpoints last: whoever sees a checkpoint committed finds the data it covers
        // searchable (a reader that waited for a connector's checkpoint saw its documents
        // counted and none of their chunks).
        *self.payload.write().unwrap_or_else(|e| e.into_inner()) = payload;
        reloaded?;
        Ok(())
    }

    /// Closes the index, waiting for the writer's merges to finish (a process that exits
    /// right after its last commit would otherwise leave a merge's files half-written).
    pub fn close(self) -> Result<(), IndexError> {
        let writer = self.writer.into_inner().unwrap_or_else(|e| e.into_inner());
        writer.wait_merging_threads()?;
        Ok(())
    }

    /// Refuses writes once the writer is lost ([`IndexError::WriterLost`]).
    fn check_writer(&self) -> Result<(), IndexError> {
        match &*self.lost.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(reason) => Err(IndexError::WriterLost {
                path: self.path.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Resets `writer` to the last commit; if that fails, the writer is lost for good.
    fn reset_writer(&self, writer: &mut IndexWriter) -> Result<(), IndexError> {
        #[cfg(test)]
        let injected = self
            .fail_commit_and_rollback
            .swap(false, std::sync::atomic::Ordering::SeqCst);
        #[cfg(not(test))]
        let injected = false;
        let reset = if injected {
            Err(tantivy::TantivyError::InternalError(
                "a rollback failure injected by a test".into(),
            ))
        } else {
            writer.rollback().map(|_| {
                // Files the failed commit wrote (a delete file under an opstamp the writer
                // reuses) would make a later commit fail on them (session 43's review).
                if let Err(e) = writer.garbage_collect_files().wait() {
                    tracing::warn!(index = %self.path.display(), error = %e, "files of the failed commit could not be removed");
                }
            })
        };
        reset.map_err(|e| {
            let reason = e.to_string();
            tracing::error!(index = %self.path.display(), error = %crate::guardrail::pii::for_log(&reason), "the index writer could not be reset to the last commit: no more writes until a restart");
            *self.lost.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.clone());
            IndexError::WriterLost {
                path: self.path.clone(),
                reason,
            }
        })
    }

    /// Drops uncommitted writes (after a failed batch).
    pub fn rollback(&self) -> Result<(), IndexError> {
        self.check_writer()?;
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.reset_writer(&mut writer)?;
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        Ok(())
    }

    /// Vectors of a document's committed chunks by chunk hash, so unchanged chunks of an edited
    /// document are not embedded again.
    pub fn chunk_vectors(&self, key: &DocKey) -> Result<HashMap<String, Vec<f32>>, IndexError> {
        let searcher = self.reader.searcher();
        let q = TermQuery::new(
            Term::from_field_text(self.fields.doc_key, &key.to_string()),
            IndexRecordOption::Basic,
        );
        let mut out = HashMap::new();
        for addr in searcher.search(&q, &DocSetCollector)? {
            let doc: TantivyDocument = searcher.doc(addr)?;
            let seg = &searcher.segment_readers()[addr.segment_ord as usize];
            if let Some(v) = self.vectors.get(seg)?.vector(addr.doc_id) {
                out.insert(get_str(&doc, self.fields.chunk_hash), v.to_vec());
            }
        }
        Ok(out)
    }

    /// The dense leg's graphs: (built, still building), among the segments searched so far.
    pub fn dense_graphs(&self) -> (usize, usize) {
        self.vectors.graphs()
    }

    pub fn snapshot(&self) -> Snapshot<'_> {
        Snapshot {
            index: self,
            searcher: self.reader.searcher(),
            vectors: Mutex::default(),
        }
    }

    pub fn stats(&self) -> IndexStats {
        let searcher = self.reader.searcher();
        let p = self.read_payload().clone();
        IndexStats {
            documents: self.document_count() as u64,
            chunks: searcher.num_docs(),
            segments: searcher.segment_readers().len() as u64,
            model_id: p.model_id,
            dim: p.dim,
            disk_bytes: dir_size(&self.path),
            last_commit: p.committed_at,
        }
    }
}

/// A read-only view of an index's last commit, for re-embedding it with another model: every
/// document with its chunks (vectors left out), and the commit's payload (model, checkpoints).
/// It takes no writer lock, so the daemon may keep serving the index meanwhile; what it reads
/// is one commit, whose checkpoints cover exactly its data.
pub struct Export {
    fields: Fields,
    searcher: Searcher,
    payload: CommitPayload,
    keys: Vec<String>,
}

/// A file a `docent reindex` keeps in the index it builds until its commit is durable: the
/// daemon, an export and a catch-up refuse such a directory.
pub const INCOMPLETE_MARKER: &str = "docent-reindex-incomplete";

/// Written by a daemon that opened the index: `docent reindex --catch-up` refuses an index a
/// daemon has served (it would roll back what that daemon committed since the switch: documents
/// deleted come back, ACLs narrowed widen again; found by a review).
pub const SERVED_MARKER: &str = "docent-served";

/// Left by a finished `docent reindex` until `docent reindex --catch-up` has applied what the old
/// index committed since it was read: a daemon refuses the index meanwhile, which would serve
/// documents deleted or narrowed since (found by a review).
pub const CATCH_UP_MARKER: &str = "docent-reindex-catch-up-pending";

/// Written into the old index by `docent reindex --catch-up`, holding the new index's path: a
/// daemon refuses the old index from then on (session 43's review: a daemon started on it again
/// after the catch-up committed deletes and narrowed ACLs the new index never saw, and the
/// switch served what they removed). Removing it undoes the switch on purpose.
pub const SUPERSEDED_MARKER: &str = "docent-superseded";

/// Refuses a directory without `meta.json` that holds what an index leaves: its segments, or
/// the marker of a daemon that served it. An empty directory (a first start) is fine, and so is
/// one holding only tantivy's `.managed.json`, which it writes before the first `meta.json` (a
/// first start cut off between the two; a review).
fn no_index_left_behind(dir: &Path) -> Result<(), IndexError> {
    let io = |source| IndexError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let segment = |name: &str| {
        name.split_once('.')
            .is_some_and(|(id, _)| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let name = entry.map_err(io)?.file_name();
        let name = name.to_string_lossy();
        if name == SERVED_MARKER || segment(&name) {
            return Err(IndexError::MetaMissing {
                path: dir.to_path_buf(),
                found: name.into_owned(),
            });
        }
    }
    Ok(())
}

impl Export {
    pub fn open(dir: &Path) -> Result<Self, IndexError> {
        if dir.join(INCOMPLETE_MARKER).exists() {
            return Err(IndexError::Incomplete {
                path: dir.to_path_buf(),
            });
        }
        Self::open_incomplete(dir)
    }

    /// [`Export::open`] of an index a `docent reindex` was building (its marker present), for
    /// the next run to resume from what it committed.
    pub(crate) fn open_incomplete(dir: &Path) -> Result<Self, IndexError> {
        Self::read(dir)?.map_err(|nothing| IndexError::Payload {
            path: dir.to_path_buf(),
            message: nothing.into(),
        })
    }

    /// What an interrupted `docent reindex` left in `dir` for the next run: its last commit,
    /// or `None` where it committed nothing the next run could use (no index, an index without
    /// a commit, or one of another schema version). An index that is there and cannot be read
    /// (an I/O error, a damaged file) is an error: the next run must not take it for nothing
    /// and clear what may be hours of embedding (found by a review).
    pub(crate) fn open_interrupted(dir: &Path) -> Result<Option<Self>, IndexError> {
        Ok(Self::read(dir)?.ok())
    }

    /// The index in `dir`, or why there is nothing to read.
    fn read(dir: &Path) -> Result<Result<Self, &'static str>, IndexError> {
        let tan = |source| IndexError::Tantivy {
            path: dir.to_path_buf(),
            source,
        };
        let bad = |message: String| IndexError::Payload {
            path: dir.to_path_buf(),
            message,
        };
        if !dir.join("meta.json").exists() {
            return Ok(Err("no index here (meta.json is missing)"));
        }
        let index = tantivy::Index::open_in_dir(dir).map_err(tan)?;
        if !schema::accepted().contains(&index.schema()) {
            return Ok(Err("written by another version of the schema"));
        }
        schema::register_tokenizers(&index);
        let fields = Fields::resolve(&index.schema()).map_err(bad)?;
        // The payload and the reader of one commit: a commit landing in between (a daemon
        // serving the index) is seen by the second reading of the metas, and read again.
        let (metas, searcher) = loop {
            let before = index.load_metas().map_err(tan)?;
            let reader: IndexReader = index
                .reader_builder()
                .reload_policy(ReloadPolicy::Manual)
                .try_into()
                .map_err(tan)?;
            if index.load_metas().map_err(tan)?.opstamp == before.opstamp {
                break (before, reader.searcher());
            }
        };
        let payload: CommitPayload = match metas.payload {
            Some(p) => serde_json::from_str(&p).map_err(|e| bad(e.to_string()))?,
            None => return Ok(Err("no commit payload (no model recorded)")),
        };
        let firsts = searcher.search(
            &TermQuery::new(
                Term::from_field_u64(fields.chunk_ord, 0),
                IndexRecordOption::Basic,
            ),
            &DocSetCollector,
        )?;
        let mut keys = Vec::with_capacity(firsts.len());
        for addr in firsts {
            let doc: TantivyDocument = searcher.doc(addr)?;
            keys.push(get_str(&doc, fields.doc_key));
        }
        keys.sort();
        keys.dedup();
        Ok(Ok(Self {
            fields,
            searcher,
            payload,
            keys,
        }))
    }

    /// The commit's payload: the model it was built with and the connectors' checkpoints.
    pub fn payload(&self) -> &CommitPayload {
        &self.payload
    }

    pub fn chunk_count(&self) -> u64 {
        self.searcher.num_docs()
    }

    /// Keys of all documents, sorted.
    pub fn document_keys(&self) -> &[String] {
        &self.keys
    }

    /// A document as it was written, its chunks in order and without vectors (`vector` empty);
    /// `None` when it is gone, or cannot be read back whole (a key or attributes that do not
    /// parse).
    pub fn document(&self, key: &str) -> Result<Option<DocumentRecord>, IndexError> {
        self.read_document(key, false)
    }

    /// [`Self::document`] with each chunk's stored vector (empty where a chunk has none), for
    /// rebuilding an index with the same model without embedding again.
    pub fn document_with_vectors(&self, key: &str) -> Result<Option<DocumentRecord>, IndexError> {
        self.read_document(key, true)
    }

    fn read_document(
        &self,
        key: &str,
        with_vectors: bool,
    ) -> Result<Option<DocumentRecord>, IndexError> {
        let f = &self.fields;
        let Some(doc_key) = DocKey::parse(key) else {
            return Ok(None);
        };
        let q = TermQuery::new(
            Term::from_field_text(f.doc_key, key),
            IndexRecordOption::Basic,
        );
        let mut docs = Vec::new();
        for addr in self.searcher.search(&q, &DocSetCollector)? {
            let doc: TantivyDocument = self.searcher.doc(addr)?;
            let vector = if with_vectors {
                self.stored_vector(addr)?
            } else {
                Vec::new()
            };
            docs.push((doc, vector));
        }
        docs.sort_by_key(|(d, _)| get_u64(d, f.chunk_ord));
        let (docs, mut vectors): (Vec<TantivyDocument>, Vec<Vec<f32>>) = docs.into_iter().unzip();
        let Some(first) = docs.first() else {
            return Ok(None);
        };
        // Absent in indexes written before attributes were stored: none. Present but not
        // readable: the document is not read back at all (a copy without its attributes would
        // lose what filters and citations show).
        let attributes = match get_str(first, f.attributes) {
            a if a.is_empty() => BTreeMap::new(),
            a => match serde_json::from_str(&a) {
                Ok(a) => a,
                Err(_) => return Ok(None),
            },
        };
        let modified = first
            .get_first(f.modified)
            .and_then(|v| v.as_i64())
            .filter(|&m| m != 0);
        let chunks = docs
            .iter()
            .map(|d| {
                let heading = get_str(d, f.heading);
                ChunkRecord {
                    ord: get_u64(d, f.chunk_ord) as u32,
                    span: get_u64(d, f.span_start) as usize..get_u64(d, f.span_end) as usize,
                    page: f.page.map(|p| get_u64(d, p) as u32).filter(|&p| p > 0),
                    heading_path: split_headings(&heading),
                    text: get_str(d, f.text),
                    hash: get_str(d, f.chunk_hash),
                    vector: Vec::new(),
                }
            })
            .zip(vectors.iter_mut())
            .map(|(mut c, v)| {
                c.vector = std::mem::take(v);
                c
            })
            .collect();
        Ok(Some(DocumentRecord {
            key: doc_key,
            uri: get_str(first, f.uri),
            title: get_str(first, f.title),
            version: get_str(first, f.version),
            modified_at: modified,
            attributes,
            acl: read_acl(first, f),
            content_hash: get_str(first, f.content_hash),
            chunks,
        }))
    }
}

impl Export {
    /// The vector stored with the chunk at `addr` (empty if none).
    fn stored_vector(&self, addr: DocAddress) -> Result<Vec<f32>, IndexError> {
        let seg = self.searcher.segment_reader(addr.segment_ord);
        let Some(col) = seg.fast_fields().bytes("vector")? else {
            return Ok(Vec::new());
        };
        let mut buf = Vec::new();
        if let Some(ord) = col.term_ords(addr.doc_id).next() {
            col.ord_to_bytes(ord, &mut buf)
                .map_err(|e| IndexError::Op(e.into()))?;
        }
        Ok(dense::decode(&buf).collect())
    }
}

/// A BM25 text field analyzer for analyzing many texts (see
/// [`IndexSnapshot::matching_analyzer`]).
#[derive(Clone)]
pub struct Analyzer(schema::MatchingAnalyzer);

impl Analyzer {
    /// Hands the tokens of `text` that are one of the terms looked for to `sink`, each with its
    /// token position and byte offset ([`schema::MatchingAnalyzer`]).
    pub fn analyze_into(&mut self, text: &str, sink: &mut dyn FnMut(usize, usize, &str)) {
        self.0.analyze_into(text, sink)
    }
}

/// A consistent view for one query: both legs and the chunk loads use the same searcher.
pub struct Snapshot<'a> {
    index: &'a Index,
    searcher: Searcher,
    /// Segment ordinal → its vectors, once read: held for this snapshot's life, so that a
    /// segment a later commit retires is decoded once for it, not at every read (session 43's
    /// review: the second stage reads vectors hit by hit, each a whole decode of a retired
    /// segment).
    vectors: Mutex<HashMap<u32, Arc<dense::SegmentVectors>>>,
}

/// Address of a chunk within a snapshot, with its score in one leg.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub addr: ChunkAddr,
    pub score: f32,
}

/// A BM25 text query's clauses, and the terms whose statistics score it.
type TextQuery = (Vec<(Occur, Box<dyn Query>)>, Vec<Term>);

/// tantivy's top docs as the backend-neutral hits.
fn scored(top: Vec<(f32, DocAddress)>) -> Vec<Scored> {
    top.into_iter()
        .map(|(score, addr)| Scored {
            addr: chunk_addr(addr),
            score,
        })
        .collect()
}

/// tantivy's address of a chunk as the backend-neutral one, and back.
fn chunk_addr(a: DocAddress) -> ChunkAddr {
    ChunkAddr(((a.segment_ord as u64) << 32) | a.doc_id as u64)
}

fn doc_address(a: ChunkAddr) -> DocAddress {
    DocAddress::new((a.0 >> 32) as u32, a.0 as u32)
}

impl Snapshot<'_> {
    /// The vectors of segment `ord` of this snapshot (see [`Snapshot::vectors`]).
    fn segment_vectors(&self, ord: u32) -> Result<Arc<dense::SegmentVectors>, IndexError> {
        if let Some(v) = self
            .vectors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ord)
        {
            return Ok(v.clone());
        }
        let v = self
            .index
            .vectors
            .get(&self.searcher.segment_readers()[ord as usize])?;
        Ok(self
            .vectors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(ord)
            .or_insert(v)
            .clone())
    }

    /// The chunk leg's text query: each query term in the title, headings and text, weighted by
    /// `boosts` (title and heading matches relative to the text) and by its count in the query;
    /// and its terms.
    fn chunk_text_query(&self, query: &str, boosts: (f32, f32)) -> TextQuery {
        let f = &self.index.fields;
        let mut should: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let mut terms = Vec::new();
        let tokens = schema::analyze_counted(&self.index.index, query);
        for (field, boost) in [(f.title, boosts.0), (f.heading, boosts.1), (f.text, 1.0)] {
            if boost <= 0.0 {
                continue;
            }
            for (token, count) in &tokens {
                let term = Term::from_field_text(field, token);
                terms.push(term.clone());
                let q = TermQuery::new(term, IndexRecordOption::WithFreqs);
                should.push((
                    Occur::Should,
                    Box::new(BoostQuery::new(Box::new(q), boost * count)),
                ));
            }
        }
        (should, terms)
    }

    /// The top `depth` chunks of `clauses` in scope, scored with the scope's chunk statistics
    /// `stats`, those of `terms` kept across queries ([`stats::StatisticsCache`]).
    fn chunk_leg(
        &self,
        scope: &AclScope,
        filter: &SearchFilter,
        stats: &stats::ScopedStatistics<'_>,
        (clauses, terms): TextQuery,
        depth: usize,
    ) -> Result<Vec<Scored>, IndexError> {
        if clauses.is_empty() || depth == 0 {
            return Ok(Vec::new());
        }
        let kept = self.index.statistics.kept(stats, &terms)?;
        let scoring = EnableScoring::enabled_from_statistics_provider(&kept, &self.searcher);
        let top = self.top_in_scope(scope, filter, clauses, scoring, depth)?;
        Ok(scored(top))
    }

    /// The top `depth` of the text query `should` (a union) among the docs `scope` and `filter`
    /// admit ([`scope::top_k`]): ranked exactly as with the scope's own clauses intersected in.
    fn top_in_scope(
        &self,
        scope: &AclScope,
        filter: &SearchFilter,
        should: Vec<(Occur, Box<dyn Query>)>,
        scoring: EnableScoring<'_>,
        depth: usize,
    ) -> Result<Vec<(f32, DocAddress)>, IndexError> {
        let admitted = self.admitted(scope, filter)?;
        let text = BooleanQuery::new(should);
        // Built only for a segment where the scope is selective (most queries need none).
        let within = || {
            BooleanQuery::new(vec![
                (
                    Occur::Must,
                    Box::new(scope::AdmittedQuery::new(&self.searcher, &admitted)),
                ),
                (Occur::Must, Box::new(text.clone())),
            ])
            .weight(scoring)
        };
        Ok(scope::top_k(
            &self.searcher,
            &*text.weight(scoring)?,
            &within,
            &admitted,
            depth,
        )?)
    }

    /// The docs `scope` and `filter` admit in each segment, from the cache where it has them.
    fn admitted(
        &self,
        scope: &AclScope,
        filter: &SearchFilter,
    ) -> Result<Vec<Arc<scope::Admitted>>, IndexError> {
        let key = scope::scope_key(scope, filter);
        Ok(self.index.scopes.admitted(&self.searcher, &key, &|| {
            BooleanQuery::new(self.scope_clauses(scope, filter))
                .weight(EnableScoring::disabled_from_searcher(&self.searcher))
        })?)
    }

    /// The ACL scope and filters as query clauses (the scope is mandatory by signature).
    /// Everything this reads must also be in [`scope::scope_key`]: the cache reuses a bitset
    /// for any scope and filter with its key.
    fn scope_clauses(
        &self,
        scope: &AclScope,
        filter: &SearchFilter,
    ) -> Vec<(Occur, Box<dyn Query>)> {
        let f = &self.index.fields;
        // A union of term queries, not a TermSetQuery: principal sets are small, and a
        // TermSetQuery builds an FST per query.
        let any_of = |field, principals: &mut dyn Iterator<Item = &str>| -> Box<dyn Query> {
            Box::new(BooleanQuery::new(
                principals
                    .map(|p| {
                        let q: Box<dyn Query> = Box::new(TermQuery::new(
                            Term::from_field_text(field, p),
                            IndexRecordOption::Basic,
                        ));
                        (Occur::Should, q)
                    })
                    .collect(),
            ))
        };
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![
            (
                Occur::Must,
                Box::new(ConstScoreQuery::new(
                    any_of(f.acl_allow, &mut scope.principals()),
                    0.0,
                )),
            ),
            (
                Occur::MustNot,
                if scope.strict_deny() {
                    // Any deny entry at all (an audience may include whoever it names).
                    // `(?s)`: a token holding a line break is a deny entry too.
                    Box::new(
                        RegexQuery::from_pattern("(?s).+", f.acl_deny)
                            .expect("a constant, valid pattern"),
                    )
                } else {
                    // The deny field holds every entry's folded form too
                    // ([`Acl::stored_deny`]): the caller's folded forms find it.
                    any_of(f.acl_deny, &mut scope.deny_principals())
                },
            ),
        ];
        if !filter.sources.is_empty() {
            let terms = filter
                .sources
                .iter()
                .map(|s| Term::from_field_text(f.source, s));
            clauses.push((
                Occur::Must,
                Box::new(ConstScoreQuery::new(
                    Box::new(TermSetQuery::new(terms)),
                    0.0,
                )),
            ));
        }
        if let Some(a) = &filter.attributes {
            clauses.push((
                Occur::Must,
                Box::new(ConstScoreQuery::new(self.attr_query(a), 0.0)),
            ));
        }
        if let Some(prefix) = filter.uri_prefix.as_deref().filter(|p| !p.is_empty()) {
            let lo = Term::from_field_text(f.uri, prefix);
            let hi = Term::from_field_text(f.uri, &format!("{prefix}{}", char::MAX));
            clauses.push((
                Occur::Must,
                Box::new(ConstScoreQuery::new(
                    Box::new(RangeQuery::new(Bound::Included(lo), Bound::Excluded(hi))),
                    0.0,
                )),
            ));
        }
        clauses
    }

    /// The query for an attribute filter. Without the `attr` field (an older index) nothing
    /// matches: a filter never widens.
    fn attr_query(&self, a: &AttrFilter) -> Box<dyn Query> {
        let Some(field) = self.index.fields.attr else {
            return Box::new(BooleanQuery::new(Vec::new()));
        };
        let term =
            |k: &str, v: &str| Term::from_field_text(field, &format!("{k}{}{v}", schema::ATTR_SEP));
        let union = |terms: Vec<Term>| -> Box<dyn Query> { Box::new(TermSetQuery::new(terms)) };
        match a {
            AttrFilter::Equals { key, value } => {
                Box::new(TermQuery::new(term(key, value), IndexRecordOption::Basic))
            }
            AttrFilter::In { key, values } => union(values.iter().map(|v| term(key, v)).collect()),
            AttrFilter::Prefix { key, prefix } => {
                let lo = term(key, prefix);
                let hi = term(key, &format!("{prefix}{}", char::MAX));
                Box::new(RangeQuery::new(Bound::Included(lo), Bound::Excluded(hi)))
            }
            AttrFilter::Range { key, gte, lte } => {
                // The key's distinct values, from the term dictionaries, filtered with the
                // reference semantics (numeric or string order): exact for both.
                let mut terms = Vec::new();
                let prefix = format!("{key}{}", schema::ATTR_SEP);
                for seg in self.searcher.segment_readers() {
                    let Ok(inv) = seg.inverted_index(field) else {
                        continue;
                    };
                    let Ok(mut stream) = inv
                        .terms()
                        .range()
                        .ge(prefix.as_bytes())
                        .lt(format!("{key}{}", char::from_u32(0x20).unwrap_or(' ')).as_bytes())
                        .into_stream()
                    else {
                        continue;
                    };
                    while stream.advance() {
                        if let Ok(t) = std::str::from_utf8(stream.key())
                            && let Some(v) = t.strip_prefix(&prefix)
                            && in_range(v, gte.as_deref(), lte.as_deref())
                        {
                            terms.push(term(key, v));
                        }
                    }
                }
                terms.sort();
                terms.dedup();
                union(terms)
            }
            AttrFilter::And(fs) if fs.is_empty() => Box::new(AllQuery),
            AttrFilter::And(fs) => Box::new(BooleanQuery::new(
                fs.iter()
                    .map(|f| (Occur::Must, self.attr_query(f)))
                    .collect(),
            )),
            AttrFilter::Or(fs) => Box::new(BooleanQuery::new(
                fs.iter()
                    .map(|f| (Occur::Should, self.attr_query(f)))
                    .collect(),
            )),
            AttrFilter::Not(f) => Box::new(BooleanQuery::new(vec![
                (Occur::Must, Box::new(AllQuery) as Box<dyn Query>),
                (Occur::MustNot, self.attr_query(f)),
            ])),
        }
    }
}

impl IndexSnapshot for Snapshot<'_> {
    /// BM25 over title, headings and text, restricted to the scope before top-k.
    fn bm25(
        &self,
        scope: &AclScope,
        filter: &SearchFilter,
        query: &str,
        depth: usize,
        boosts: (f32, f32),
    ) -> Result<Vec<Scored>, IndexError> {
        let text = self.chunk_text_query(query, boosts);
        if text.0.is_empty() || depth == 0 {
            return Ok(Vec::new());
        }
        let collection = self.admitted(scope, &SearchFilter::default())?;
        let stats = stats::ScopedStatistics::new(&self.searcher, &collection);
        self.chunk_leg(scope, filter, &stats, text, depth)
    }

    /// The chunk leg's query, with a clause that admits only the chunks of `documents`: the
    /// scores are the chunk leg's (the clause adds 0, and the statistics are the scope's),
    /// and the walk is over a few documents' chunks instead of every chunk that matches.
    fn bm25_passages(
        &self,
        scope: &AclScope,
        filter: &SearchFilter,
        query: &str,
        documents: &[Scored],
        depth: usize,
        boosts: (f32, f32),
    ) -> Result<Vec<Scored>, IndexError> {
        let (text, terms) = self.chunk_text_query(query, boosts);
        if text.is_empty() || documents.is_empty() {
            return Ok(Vec::new());
        }
        // Each document's chunks: the docs around its address with its key. A document's chunks
        // are written in one batch by the index's one indexing thread (`upsert`), so they are
        // consecutive docs of one segment, and merges keep their order; the key is compared by
        // its ordinal in the segment's column, never read as text (session 50: reading ten keys
        // as text was 6 % of a BM25 Search's CPU under load).
        let readers = self.searcher.segment_readers();
        let mut lists: HashMap<u32, (Option<tantivy::columnar::StrColumn>, Vec<tantivy::DocId>)> =
            HashMap::new();
        for d in documents {
            let addr = doc_address(d.addr);
            let reader = &readers[addr.segment_ord as usize];
            let (col, list) = match lists.entry(addr.segment_ord) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert((reader.fast_fields().str("doc_key")?, Vec::new()))
                }
            };
            let key_of = |doc: tantivy::DocId| col.as_ref().and_then(|c| c.term_ords(doc).next());
            let Some(key) = key_of(addr.doc_id) else {
                // No key to restrict by: the whole chunk leg.
                return self.bm25(scope, filter, query, depth, boosts);
            };
            let mut first = addr.doc_id;
            while first > 0 && key_of(first - 1) == Some(key) {
                first -= 1;
            }
            let mut end = addr.doc_id + 1;
            while end < reader.max_doc() && key_of(end) == Some(key) {
                end += 1;
            }
            list.extend(first..end);
        }
        let listed = DocListQuery::new(
            lists
                .into_iter()
                .map(|(seg, (_, list))| (readers[seg as usize].segment_id(), list)),
        );
        let collection = self.admitted(scope, &SearchFilter::default())?;
        let stats = stats::ScopedStatistics::new(&self.searcher, &collection);
        let within: Box<dyn Query> = Box::new(listed);
        let should = vec![
            (
                Occur::Must,
                Box::new(BooleanQuery::new(text)) as Box<dyn Query>,
            ),
            (Occur::Must, within),
        ];
        // Deep enough for every document's best chunk but where one holds very many.
        let depth = depth.max(documents.len() * PASSAGES_SCANNED_PER_DOCUMENT);
        self.chunk_leg(scope, filter, &stats, (should, terms), depth)
    }

    /// BM25 on `doc_text`, which only each document's first chunk carries: statistics count
    /// documents, not chunks ([`DocumentStatistics`]).
    fn bm25_documents(
        &self,
        scope: &AclScope,
        filter: &SearchFilter,
        query: &str,
        depth: usize,
    ) -> Result<Option<Vec<Scored>>, IndexError> {
        let Some(field) = self.index.fields.doc_text else {
            return Ok(None);
        };
        let tokens = schema::analyze_counted(&self.index.index, query);
        if tokens.is_empty() || depth == 0 {
            return Ok(Some(Vec::new()));
        }
        // The collection is the documents: their first chunks, which alone carry `doc_text`.
        let collection = self.admitted(scope, &SearchFilter::default())?;
        let stats = stats::ScopedStatistics::new(&self.searcher, &collection)
            .counting(Term::from_field_u64(self.index.fields.chunk_ord, 0));
        let mut terms = Vec::with_capacity(tokens.len());
        let should: Vec<(Occur, Box<dyn Query>)> = tokens
            .into_iter()
            .map(|(token, count)| {
                let term = Term::from_field_text(field, &token);
                terms.push(term.clone());
                let q: Box<dyn Query> =
                    Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs));
                let q: Box<dyn Query> = match count > 1.0 {
                    true => Box::new(BoostQuery::new(q, count)),
                    false => q,
                };
                (Occur::Should, q)
            })
            .collect();
        let kept = self.index.statistics.kept(&stats, &terms)?;
        let scoring = EnableScoring::enabled_from_statistics_provider(&kept, &self.searcher);
        let top = self.top_in_scope(scope, filter, should, scoring, depth)?;
        Ok(Some(scored(top)))
    }

    /// Exact nearest neighbours by cosine over the chunks in scope (brute force per segment).
    fn dense(
        &self,
        scope: &AclScope,
        filter: &SearchFilter,
        query: &[f32],
        depth: usize,
    ) -> Result<Vec<Scored>, IndexError> {
        if depth == 0 || query.len() != self.index.dim() {
            return Ok(Vec::new());
        }
        let total = self
            .searcher
            .segment_readers()
            .iter()
            .map(|s| s.max_doc() as usize)
            .sum();
        let admitted = self.admitted(scope, filter)?;
        // Held by the snapshot for the reads after the leg (see [`Snapshot::vectors`]): the
        // segments the leg searches, those with an admitted doc.
        for (ord, a) in admitted.iter().enumerate() {
            if a.count() > 0 {
                self.segment_vectors(ord as u32)?;
            }
        }
        let collector =
            dense::DenseCollector::new(self.index.vectors.clone(), query.to_vec(), depth)
                .with_total_docs(total);
        let top = collector.search_admitted(&self.searcher, &admitted)?;
        Ok(scored(top))
    }

    /// A document identity for each scored chunk, valid within this snapshot: the segment and
    /// the `doc_key` term ordinal from the fast field (no dictionary or stored-document reads).
    /// A document's chunks always share a segment: they are written in one batch, and merges
    /// move them together.
    fn doc_ids(&self, hits: &[Scored]) -> Result<Vec<u64>, IndexError> {
        let mut columns: HashMap<u32, Option<tantivy::columnar::StrColumn>> = HashMap::new();
        let mut out = Vec::with_capacity(hits.len());
        for h in hits {
            let addr = doc_address(h.addr);
            let seg = addr.segment_ord;
            let col = match columns.entry(seg) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(
                    self.searcher.segment_readers()[seg as usize]
                        .fast_fields()
                        .str("doc_key")?,
                ),
            };
            // Without a doc_key value, a chunk stands for itself.
            let ord = col
                .as_ref()
                .and_then(|c| c.term_ords(addr.doc_id).next())
                .unwrap_or((1 << 39) | addr.doc_id as u64);
            out.push(((seg as u64) << 40) | ord);
        }
        Ok(out)
    }

    /// The stored chunk at `addr`.
    fn chunk(&self, addr: ChunkAddr) -> Result<StoredChunk, IndexError> {
        let f = &self.index.fields;
        let mut row: StoredRow = self.searcher.doc(doc_address(addr))?;
        Ok(StoredChunk {
            chunk_id: row.take_str(f.chunk_id),
            doc_key: row.take_str(f.doc_key),
            source: row.take_str(f.source),
            title: row.take_str(f.title),
            uri: row.take_str(f.uri),
            text: row.take_str(f.text),
            span: row.u64(f.span_start) as usize..row.u64(f.span_end) as usize,
            heading_path: split_headings(&row.take_str(f.heading)),
            page: f.page.map(|p| row.u64(p) as u32).filter(|&p| p > 0),
            acl: stored_acl(row.strs(f.acl_allow), row.strs(f.acl_deny)),
            attributes: serde_json::from_str(&row.take_str(f.attributes)).unwrap_or_default(),
        })
    }

    /// The chunk's embedding, for answer-time relevance checks.
    fn vector(&self, addr: ChunkAddr) -> Result<Option<Vec<f32>>, IndexError> {
        let addr = doc_address(addr);
        Ok(self
            .segment_vectors(addr.segment_ord)?
            .vector(addr.doc_id)
            .map(<[f32]>::to_vec))
    }

    /// Inverse document frequencies of query tokens in the text field, over the scope.
    fn idf(&self, scope: &AclScope, tokens: &[String]) -> Result<Vec<f32>, IndexError> {
        let collection = self.admitted(scope, &SearchFilter::default())?;
        let stats = stats::ScopedStatistics::new(&self.searcher, &collection);
        let field = self.index.fields.text;
        let terms: Vec<Term> = tokens
            .iter()
            .map(|t| Term::from_field_text(field, t))
            .collect();
        Ok(self.index.statistics.kept(&stats, &terms)?.idfs())
    }

    /// Analyzes text the way the BM25 text field does.
    fn analyze(&self, text: &str) -> Vec<String> {
        schema::analyze(&self.index.index, text)
    }

    fn matching_analyzer(&self, terms: &[&str]) -> Analyzer {
        Analyzer(schema::MatchingAnalyzer::new(terms.iter().copied()))
    }
}

impl Backend for Index {
    fn dim(&self) -> usize {
        Index::dim(self)
    }

    fn snapshot(&self) -> Box<dyn IndexSnapshot + '_> {
        Box::new(Index::snapshot(self))
    }

    fn check(&self, doc: &DocumentRecord) -> Result<(), String> {
        check_terms(doc)
    }

    fn upsert(&self, doc: DocumentRecord) -> Result<(), IndexError> {
        Index::upsert(self, doc)
    }

    fn delete(&self, key: &DocKey) {
        Index::delete(self, key)
    }

    fn commit(&self, checkpoints: BTreeMap<String, serde_json::Value>) -> Result<(), IndexError> {
        Index::commit(self, checkpoints)
    }

    fn rollback(&self) -> Result<(), IndexError> {
        Index::rollback(self)
    }

    fn checkpoints(&self) -> BTreeMap<String, serde_json::Value> {
        Index::checkpoints(self)
    }

    fn checkpoint_of(&self, connector: &str) -> Option<serde_json::Value> {
        self.read_payload().checkpoints.get(connector).cloned()
    }

    fn doc_entry(&self, key: &str) -> Option<DocEntry> {
        Index::doc_entry(self, key)
    }

    fn latest_entry(&self, key: &str) -> Option<DocEntry> {
        Index::latest_entry(self, key)
    }

    fn chunk_vectors(&self, key: &DocKey) -> Result<HashMap<String, Vec<f32>>, IndexError> {
        Index::chunk_vectors(self, key)
    }

    fn document_count(&self) -> usize {
        Index::document_count(self)
    }

    fn documents_by_source(&self) -> HashMap<String, u64> {
        Index::documents_by_source(self)
    }

    fn stats(&self) -> IndexStats {
        Index::stats(self)
    }
}

/// Connectors see the newest state, uncommitted writes included, so a change that follows an
/// uncommitted one (a delete after a create, a revert after an edit) is never skipped.
impl IndexedState for Index {
    fn get(&self, key: &DocKey) -> Option<IndexedDoc> {
        self.latest_entry(&key.to_string()).map(|e| IndexedDoc {
            version: e.version,
            acl_fingerprint: e.acl_fingerprint,
        })
    }

    fn native_ids(&self, connector: &str) -> Vec<String> {
        let prefix = format!("{connector}:");
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let docs = self.docs.read().unwrap_or_else(|e| e.into_inner());
        let committed = docs.keys().filter(|k| !pending.contains_key(*k));
        let written = pending.iter().filter(|(_, e)| e.is_some()).map(|(k, _)| k);
        committed
            .chain(written)
            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }
}

/// A document's title and text for document-level BM25: the chunks' texts in order, each
/// overlap with the previous chunk (by span) counted once, so overlaps do not inflate term
/// frequencies. Spans that do not advance (a record not made by the chunker) are taken whole.
fn whole_text(doc: &DocumentRecord) -> String {
    let mut out = String::with_capacity(
        doc.title.len() + doc.chunks.iter().map(|c| c.text.len() + 1).sum::<usize>(),
    );
    out.push_str(&doc.title);
    let mut prev: Option<&std::ops::Range<usize>> = None;
    for c in &doc.chunks {
        let overlap = match prev {
            Some(p) if p.start < c.span.start && c.span.start < p.end => {
                p.end.min(c.span.end) - c.span.start
            }
            _ => 0,
        };
        let fresh = if c.span.len() == c.text.len() {
            c.text.get(overlap..).unwrap_or(&c.text)
        } else {
            &c.text[..]
        };
        out.push('\n');
        out.push_str(fresh);
        prev = Some(&c.span);
    }
    out
}

/// A stored row's values in stored order, read straight from the store: each string is moved
/// out once instead of copied from an intermediate document (session 50: building that
/// document and copying from it was some 3 % of a BM25 Search's CPU under load).
struct StoredRow(Vec<(tantivy::schema::Field, tantivy::schema::OwnedValue)>);

impl tantivy::schema::document::DocumentDeserialize for StoredRow {
    fn deserialize<'de, D>(mut d: D) -> Result<Self, tantivy::schema::document::DeserializeError>
    where
        D: tantivy::schema::document::DocumentDeserializer<'de>,
    {
        let mut values = Vec::with_capacity(d.size_hint());
        while let Some(fv) = d.next_field()? {
            values.push(fv);
        }
        Ok(Self(values))
    }
}

impl StoredRow {
    /// The field's first string, taken out ("" when it has none).
    fn take_str(&mut self, field: tantivy::schema::Field) -> String {
        self.0
            .iter_mut()
            .find_map(|(f, v)| match v {
                tantivy::schema::OwnedValue::Str(s) if *f == field => Some(std::mem::take(s)),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// The field's first unsigned integer (0 when it has none).
    fn u64(&self, field: tantivy::schema::Field) -> u64 {
        self.0
            .iter()
            .find_map(|(f, v)| match v {
                tantivy::schema::OwnedValue::U64(n) if *f == field => Some(*n),
                _ => None,
            })
            .unwrap_or(0)
    }

    /// The field's strings, in stored order.
    fn strs(&self, field: tantivy::schema::Field) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(move |(f, v)| match v {
            tantivy::schema::OwnedValue::Str(s) if *f == field => Some(s.as_str()),
            _ => None,
        })
    }
}

fn get_str(doc: &TantivyDocument, field: tantivy::schema::Field) -> String {
    doc.get_first(field)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string()
}

fn get_u64(doc: &TantivyDocument, field: tantivy::schema::Field) -> u64 {
    doc.get_first(field).and_then(|v| v.as_u64()).unwrap_or(0)
}

fn read_acl(doc: &TantivyDocument, f: &Fields) -> Acl {
    let tokens = |field| doc.get_all(field).filter_map(|v| v.as_str());
    stored_acl(tokens(f.acl_allow), tokens(f.acl_deny))
}

/// The fingerprint [`stored_fingerprint`] gives rows whose deny entries lack their folded forms
/// (and [`read_back_fingerprint`] rows with a deny entry that does not parse): rows to write
/// again.
const UNFOLDED_DENY: &str = "deny entries without their folded forms";

/// [`stored_fingerprint`] of an ACL read back from its rows' `deny` tokens: a deny entry that
/// does not parse reads back as `everyone` (it denies everyone in a recheck), but the index's
/// filter matches its literal token, which no caller holds, so every caller's legs admitted the
/// row (its statistics, a place in the top-k) until the recheck. Such a row is written again
/// too, with `everyone` stored (a review).
pub(crate) fn read_back_fingerprint<'a>(
    acl: &Acl,
    mut deny: impl Iterator<Item = &'a str>,
) -> String {
    match deny.any(|t| t.parse::<Principal>().is_err()) {
        true => UNFOLDED_DENY.to_string(),
        false => stored_fingerprint(acl),
    }
}

/// The fingerprint of an ACL as read back from an index. Rows written before deny entries were
/// stored with their folded forms ([`Acl::stored_deny`]) lack them, so the index's deny filter
/// misses a caller spelled otherwise: such an ACL gets a fingerprint no source's equals, so
/// that the next sync sees its ACL as changed and writes the document again, with them.
pub(crate) fn stored_fingerprint(acl: &Acl) -> String {
    match acl.deny == acl.stored_deny() {
        true => acl.fingerprint(),
        false => UNFOLDED_DENY.to_string(),
    }
}

/// An ACL read back from its stored principal tokens. Ingest refuses a principal that does not
/// read back, but an index written before may hold one: an allow entry that does not parse
/// admits nobody (dropped), and a deny entry that does not parse denies everyone, so that a
/// document rebuilt from it (`docent reindex`) or checked against it never admits whom the
/// entry excluded (the connector's next sync sends its document again).
pub(crate) fn stored_acl<'a>(
    allow: impl Iterator<Item = &'a str>,
    deny: impl Iterator<Item = &'a str>,
) -> Acl {
    Acl {
        allow: allow.filter_map(|s| s.parse::<Principal>().ok()).collect(),
        deny: deny
            .map(|s| s.parse::<Principal>().unwrap_or(Principal::Everyone))
            .collect(),
    }
}

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Separates the headings of a chunk's path in the stored heading field: a character no
/// heading holds (it is taken out of them), so that a heading with " > " in it ("Income >
/// 50k") stays one heading. The field is also searched: the analyzer splits words on it.
const HEADING_SEPARATOR: char = '\u{1f}';

/// A chunk's heading path as stored.
fn join_headings(path: &[String]) -> String {
    let mut out = String::new();
    for h in path {
        // Before every heading, the first included: a path of one heading is told from one
        // stored the old way.
        out.push(HEADING_SEPARATOR);
        out.extend(
            h.chars()
                .map(|c| if c == HEADING_SEPARATOR { ' ' } else { c }),
        );
    }
    out
}

/// A stored heading path read back; paths stored before the separator changed were joined
/// with " > ".
fn split_headings(stored: &str) -> Vec<String> {
    if stored.is_empty() {
        Vec::new()
    } else if let Some(rest) = stored.strip_prefix(HEADING_SEPARATOR) {
        rest.split(HEADING_SEPARATOR).map(str::to_string).collect()
    } else {
        stored.split(" > ").map(str::to_string).collect()
    }
}

#[cfg(test)]
mod tests {

    /// Found by a review: the index (every document's text) was readable by every local
    /// account under the usual umask.
    #[test]
    fn the_index_directory_is_private_to_the_daemons_account() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let base = tempfile::tempdir().unwrap();
        let new = base.path().join("new/index");
        super::Index::open(&new, "m", 4).unwrap();
        assert_eq!(mode(&new), 0o700);
        // One made earlier, wider, is narrowed.
        let old = base.path().join("old");
        std::fs::create_dir(&old).unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
        super::Index::open(&old, "m", 4).unwrap();
        assert_eq!(mode(&old), 0o700);
    }

    /// Rows written before deny entries were stored folded read back as changed, so that a
    /// sync writes them again (with the folded forms the deny filter needs).
    #[test]
    fn an_acl_stored_without_folded_deny_entries_reads_back_as_changed() {
        let source = Acl::new([Principal::Everyone], [Principal::user("Bob")]);
        let old_rows = stored_acl(["everyone"].into_iter(), ["user:Bob"].into_iter());
        assert_ne!(stored_fingerprint(&old_rows), source.fingerprint());
        let new_rows = stored_acl(
            ["everyone"].into_iter(),
            ["user:Bob", "user:bob"].into_iter(),
        );
        assert_eq!(stored_fingerprint(&new_rows), source.fingerprint());
        let lower = stored_acl(["everyone"].into_iter(), ["user:bob"].into_iter());
        assert_eq!(stored_fingerprint(&lower), lower.fingerprint());
    }

    /// A stored deny entry that does not read back as a principal (written before ingest
    /// refused such entries) denies everyone; an allow entry that does not admits nobody.
    #[test]
    fn a_stored_deny_that_does_not_parse_denies_everyone() {
        let acl = stored_acl(
            ["group:staff", "group:day shift"].into_iter(),
            ["group:night shift"].into_iter(),
        );
        assert_eq!(
            acl.allow,
            std::collections::BTreeSet::from([Principal::group("staff")])
        );
        assert!(acl.deny.contains(&Principal::Everyone), "{acl:?}");
        let staff = AclScope::for_tests("u", &["everyone", "group:staff"]);
        assert!(!staff.permits(&acl));
    }

    /// A heading with " > " in it stays one heading; a path stored the old way (joined with
    /// " > ") still reads back.
    #[test]
    fn heading_paths_read_back_as_written() {
        for path in [
            vec![],
            vec!["Income > 50k".to_string()],
            vec![
                "Pay".to_string(),
                "Income > 50k".to_string(),
                "Tax".to_string(),
            ],
        ] {
            assert_eq!(split_headings(&join_headings(&path)), path);
        }
        assert_eq!(
            split_headings(&join_headings(&["a\u{1f}b".to_string()])),
            ["a b"]
        );
        assert_eq!(split_headings("Pay > Tax"), ["Pay", "Tax"]);
    }
    use super::*;

    #[test]
    fn the_embedded_backend_passes_the_backend_suite() {
        let dirs = Mutex::new(Vec::new());
        let open = || -> Arc<dyn Backend> {
            let dir = tempfile::tempdir().unwrap();
            let index = Index::open(dir.path(), "suite-model", suite::DIM).unwrap();
            dirs.lock().unwrap().push(dir);
            Arc::new(index)
        };
        suite::run_all(&open);
    }

    fn record(key: &str, text: &str, acl: Acl) -> DocumentRecord {
        DocumentRecord {
            key: DocKey::new("t", key),
            uri: format!("file:///{key}"),
            title: key.into(),
            version: "v1".into(),
            modified_at: Some(1),
            attributes: BTreeMap::new(),
            acl,
            content_hash: "h".into(),
            chunks: vec![ChunkRecord {
                ord: 0,
                span: 0..text.len(),
                page: None,
                heading_path: vec!["H".into()],
                text: text.into(),
                hash: format!("{key}-0"),
                vector: vec![1.0, 0.0, 0.0, 0.0],
            }],
        }
    }

    /// A document whose chunks are given as consecutive pieces of `parts`, overlapping by
    /// `overlap` bytes with the previous piece.
    fn split_record(key: &str, parts: &[&str], overlap: usize, acl: Acl) -> DocumentRecord {
        let full: String = parts.concat();
        let mut chunks = Vec::new();
        let mut start = 0;
        for (ord, p) in parts.iter().enumerate() {
            let from = start - if ord > 0 { overlap } else { 0 };
            let span = from..start + p.len();
            chunks.push(ChunkRecord {
                ord: ord as u32,
                text: full[span.clone()].to_string(),
                span,
                page: None,
                heading_path: Vec::new(),
                hash: format!("{key}-{ord}"),
                vector: vec![1.0, 0.0, 0.0, 0.0],
            });
            start += p.len();
        }
        DocumentRecord {
            chunks,
            ..record(key, "", acl)
        }
    }

    #[test]
    fn the_whole_text_counts_each_overlap_once() {
        let doc = split_record(
            "d",
            &["alpha beta ", "gamma delta ", "epsilon"],
            5,
            Acl::new([Principal::Everyone], []),
        );
        assert_eq!(doc.chunks[1].text, "beta gamma delta ");
        assert_eq!(whole_text(&doc), "d\nalpha beta \ngamma delta \nepsilon");
        // Spans that do not advance are not overlaps: every text counts.
        let mut same = doc.clone();
        for c in &mut same.chunks {
            c.span = 0..c.text.len();
        }
        assert_eq!(
            whole_text(&same),
            "d\nalpha beta \nbeta gamma delta \nelta epsilon"
        );
    }

    #[test]
    fn document_bm25_counts_terms_across_chunks_once_per_document() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(dir.path(), "m", 4).unwrap();
        let all = || Acl::new([Principal::Everyone], []);
        // The query's two words lie in different chunks of one document; another document
        // holds one of them in a short chunk (which wins chunk by chunk).
        idx.upsert(split_record(
            "split",
            &["parking garage level two ", "permit office opening hours"],
            0,
            all(),
        ))
        .unwrap();
        idx.upsert(record("short", "parking", all())).unwrap();
        idx.upsert(record("extra", "permit request form for visitors", all()))
            .unwrap();
        // Outside bob's scope: neither returned nor counted in his statistics.
        idx.upsert(record(
            "other",
            "permit",
            Acl::new([Principal::user("eve")], []),
        ))
        .unwrap();
        idx.commit(BTreeMap::new()).unwrap();
        let snap = idx.snapshot();
        let scope = AclScope::for_tests("bob", &["everyone", "user:bob"]);
        let filter = SearchFilter::default();
        let docs = snap
            .bm25_documents(&scope, &filter, "parking permit", 10)
            .unwrap()
            .expect("a new index has the document field");
        let got: Vec<String> = docs
            .iter()
            .map(|h| snap.chunk(h.addr).unwrap().chunk_id)
            .collect();
        assert_eq!(
            got,
            ["t:split#0", "t:short#0", "t:extra#0"],
            "whole documents, each at its first chunk, only readable ones"
        );
        let chunks = snap
            .bm25(&scope, &filter, "parking permit", 10, (0.0, 0.0))
            .unwrap();
        assert_eq!(
            snap.chunk(chunks[0].addr).unwrap().chunk_id,
            "t:short#0",
            "chunk by chunk, the short one ranks first"
        );
    }

    /// Found by a review: tantivy does not sync the directory after it renames the new
    /// `meta.json` into place, so an acknowledged commit could be lost to a power loss. Docent
    /// syncs it before publishing anything; when it cannot, the commit is not published and no
    /// write is taken any more (a restart reads the index from disk).
    #[test]
    fn a_commit_is_published_only_once_its_directory_is_synced() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(dir.path(), "m", 4).unwrap();
        let everyone = || Acl::new([Principal::Everyone], []);
        idx.upsert(record("a", "parking", everyone())).unwrap();
        idx.commit(BTreeMap::new()).unwrap();
        assert!(idx.doc_entry("t:a").is_some());

        idx.upsert(record("b", "permit", everyone())).unwrap();
        idx.fail_dir_sync
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let e = idx
            .commit(BTreeMap::from([("t".to_string(), serde_json::json!(2))]))
            .unwrap_err();
        assert!(matches!(e, IndexError::WriterLost { .. }), "{e:?}");
        assert!(idx.doc_entry("t:b").is_none(), "not published");
        assert!(!idx.checkpoints().contains_key("t"), "nor its checkpoint");
        assert!(matches!(
            idx.upsert(record("c", "x", everyone())),
            Err(IndexError::WriterLost { .. })
        ));
    }

    /// Found by a review: a directory that held an index and lost its `meta.json` was opened
    /// as a new, empty index (everything crawled again, the old segments left to tantivy's
    /// garbage collection). It is refused and left as it is; an empty directory is a first
    /// start.
    #[test]
    fn a_directory_that_lost_its_meta_json_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let at = dir.path().join("index");
        let idx = Index::open(&at, "m", 4).unwrap();
        idx.upsert(record("a", "parking", Acl::new([Principal::Everyone], [])))
            .unwrap();
        idx.commit(BTreeMap::new()).unwrap();
        drop(idx);
        let names = || -> std::collections::BTreeSet<_> {
            std::fs::read_dir(&at)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        };
        std::fs::remove_file(at.join("meta.json")).unwrap();
        let held = names();
        assert!(held.len() > 3, "{held:?}");
        let err = Index::open(&at, "m", 4).err().expect("refused");
        assert!(matches!(err, IndexError::MetaMissing { .. }), "{err}");
        assert_eq!(names(), held);
        // Only the served marker left: refused too.
        let marked = dir.path().join("served");
        std::fs::create_dir(&marked).unwrap();
        std::fs::write(marked.join(SERVED_MARKER), "").unwrap();
        assert!(matches!(
            Index::open(&marked, "m", 4),
            Err(IndexError::MetaMissing { .. })
        ));
        // An empty directory is a new index, and so is one a first start left with tantivy's
        // `.managed.json` alone.
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert_eq!(Index::open(&empty, "m", 4).unwrap().document_count(), 0);
        let cut = dir.path().join("cut");
        std::fs::create_dir(&cut).unwrap();
        std::fs::write(cut.join(".managed.json"), "[\"meta.json\"]").unwrap();
        assert_eq!(Index::open(&cut, "m", 4).unwrap().document_count(), 0);
    }

    /// Found by a review: a deny entry stored in a form that does not parse (an older release's)
    /// denies everyone in the recheck, but the index's filter matched its literal token and
    /// admitted every caller. Such a row is written again at open, denying everyone in both.
    #[test]
    fn a_deny_entry_that_does_not_parse_is_written_again_denying_everyone() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(dir.path(), "m", 4).unwrap();
        idx.store_unfolded_deny
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let odd = Acl::new([Principal::Everyone], [Principal::group("night shift")]);
        idx.upsert(record("rota", "parking rota", odd)).unwrap();
        idx.commit(BTreeMap::new()).unwrap();
        drop(idx);
        let idx = Index::open(dir.path(), "m", 4).unwrap();
        let bob = AclScope::for_tests("bob", &["everyone", "user:bob"]);
        let found = |idx: &Index| {
            idx.snapshot()
                .bm25(&bob, &SearchFilter::default(), "parking", 10, (0.0, 0.0))
                .unwrap()
                .len()
        };
        assert_eq!(found(&idx), 1, "the premise: the filter admits it");
        assert_eq!(idx.fold_old_deny_entries().unwrap(), 1);
        assert_eq!(found(&idx), 0);
        let entry = idx.doc_entry("t:rota").unwrap();
        assert_eq!(entry.acl.deny, [Principal::Everyone].into_iter().collect());
        assert_ne!(entry.acl_fingerprint, UNFOLDED_DENY);
    }

    /// Session 43's review: the scope cache's key held the principals and not the deny
    /// principals, which a withdrawn alias no longer derives from them: a scope denied by it
    /// reused the bitset of the same principals without it, and read what the deny excludes.
    #[test]
    fn a_deny_only_principal_gets_its_own_cached_scope() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(dir.path(), "m", 4).unwrap();
        let oncall = Acl::new(
            [Principal::Everyone],
            [Principal::user("oncall@corp.example")],
        );
        idx.upsert(record("rota", "parking rota", oncall)).unwrap();
        idx.commit(BTreeMap::new()).unwrap();
        let found = |scope: &AclScope| {
            idx.snapshot()
                .bm25(scope, &SearchFilter::default(), "parking", 10, (0.0, 0.0))
                .unwrap()
                .len()
        };
        let ops = AclScope::for_tests("ops", &["everyone", "user:ops"]);
        assert_eq!(found(&ops), 1, "cached for these principals");
        let withdrawn = AclScope::for_tests_deny_only(
            "ops",
            &["everyone", "user:ops"],
            &["user:oncall@corp.example"],
        );
        assert_eq!(found(&withdrawn), 0);
        assert_eq!(found(&ops), 1);
    }

    /// Session 43's review: a snapshot taken before a commit that retired a segment decoded
    /// that segment's vectors whole at every read (the second stage reads them hit by hit).
    /// The snapshot holds them once read.
    #[test]
    fn a_snapshot_decodes_a_segment_retired_since_once() {
        let everyone = || Acl::new([Principal::Everyone], []);
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(dir.path(), "m", 4).unwrap();
        idx.upsert(record("a", "parking", everyone())).unwrap();
        idx.commit(BTreeMap::new()).unwrap();
        let snap = idx.snapshot();
        let bob = AclScope::for_tests("bob", &["everyone", "user:bob"]);
        let hit = snap
            .bm25(&bob, &SearchFilter::default(), "parking", 10, (0.0, 0.0))
            .unwrap()[0]
            .addr;
        // Its only document replaced: the snapshot's segment is retired.
        idx.upsert(record("a", "parking garage", everyone()))
            .unwrap();
        idx.commit(BTreeMap::new()).unwrap();
        let old = snap.searcher.segment_readers()[0].segment_id();
        assert!(
            !idx.reader
                .searcher()
                .segment_readers()
                .iter()
                .any(|s| s.segment_id() == old),
            "the premise: the segment is retired"
        );
        let before = idx.vectors.decoded();
        let first = snap.vector(hit).unwrap();
        assert!(first.is_some());
        for _ in 0..5 {
            assert_eq!(snap.vector(hit).unwrap(), first);
        }
        assert_eq!(idx.vectors.decoded() - before, 1);
    }

    /// Found by a review: rows an older release wrote without the folded forms of their deny
    /// entries let the index's deny filter admit a caller spelt otherwise (the recheck dropped
    /// the document later, after it took a place in the top-k), and a push source never wrote
    /// them again. They are written again from their own rows, vectors included.
    #[test]
    fn deny_entries_stored_without_their_folded_forms_are_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(dir.path(), "m", 4).unwrap();
        idx.store_unfolded_deny
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let acl = Acl::new([Principal::Everyone], [Principal::user("Bob")]);
        idx.upsert(record("memo", "parking permit", acl.clone()))
            .unwrap();
        idx.upsert(record(
            "open",
            "parking rules",
            Acl::new([Principal::Everyone], []),
        ))
        .unwrap();
        idx.commit(BTreeMap::from([(
            "t".to_string(),
            serde_json::json!({"n": 7}),
        )]))
        .unwrap();
        // Opened again, as after the upgrade.
        drop(idx);
        let idx = Index::open(dir.path(), "m", 4).unwrap();
        let bob = AclScope::for_tests("bob", &["everyone", "user:bob"]);
        let found = |idx: &Index| -> Vec<String> {
            let snap = idx.snapshot();
            snap.bm25(&bob, &SearchFilter::default(), "parking", 10, (0.0, 0.0))
                .unwrap()
                .iter()
                .map(|h| snap.chunk(h.addr).unwrap().chunk_id)
                .collect()
        };
        assert!(
            found(&idx).contains(&"t:memo#0".to_string()),
            "the premise: the index's filter misses the old row"
        );

        assert_eq!(idx.fold_old_deny_entries().unwrap(), 1);
        assert_eq!(found(&idx), ["t:open#0"]);
        let entry = idx.doc_entry("t:memo").unwrap();
        assert_eq!(
            entry.acl_fingerprint,
            acl.fingerprint(),
            "as its source gave it"
        );
        assert_eq!(entry.version, "v1");
        let kept = Export::open(dir.path())
            .unwrap()
            .document_with_vectors("t:memo")
            .unwrap()
            .unwrap();
        assert_eq!(
            kept.chunks[0].vector,
            [1.0, 0.0, 0.0, 0.0],
            "its vector too"
        );
        assert_eq!(
            idx.checkpoints()["t"],
            serde_json::json!({"n": 7}),
            "the checkpoints stay"
        );
        assert_eq!(idx.fold_old_deny_entries().unwrap(), 0, "once");
    }

    #[test]
    fn an_index_without_the_document_field_opens_and_ranks_by_chunks() {
        let dir = tempfile::tempdir().unwrap();
        drop(tantivy::Index::create_in_dir(dir.path(), schema::build_with(true, false)).unwrap());
        let idx = Index::open(dir.path(), "m", 4).unwrap();
        idx.upsert(record(
            "a",
            "parking permit",
            Acl::new([Principal::Everyone], []),
        ))
        .unwrap();
        idx.commit(BTreeMap::new()).unwrap();
        let snap = idx.snapshot();
        let scope = AclScope::for_tests("bob", &["everyone", "user:bob"]);
        let filter = SearchFilter::default();
        assert!(
            snap.bm25_documents(&scope, &filter, "parking", 10)
                .unwrap()
                .is_none()
        );
        assert_eq!(
            snap.bm25(&scope, &filter, "parking", 10, (0.0, 0.0))
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn refuses_another_model_and_keeps_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        {
            let idx = Index::open(dir.path(), "model-a", 4).unwrap();
            idx.upsert(record(
                "a",
                "alpha text",
                Acl::new([Principal::Everyone], []),
            ))
            .unwrap();
            idx.commit(BTreeMap::from([(
                "t".to_string(),
                serde_json::json!({"pos": 7}),
            )]))
            .unwrap();
        }
        let err = Index::open(dir.path(), "model-b", 4)
            .err()
            .expect("must refuse");
        assert!(matches!(err, IndexError::ModelMismatch { .. }), "{err}");
        assert!(err.to_string().contains("model-a") && err.to_string().contains("model-b"));
        assert!(matches!(
            Index::open(dir.path(), "model-a", 8),
            Err(IndexError::ModelMismatch { .. })
        ));
        let idx = Index::open(dir.path(), "model-a", 4).unwrap();
        assert_eq!(idx.checkpoints()["t"]["pos"], 7);
        assert_eq!(idx.document_count(), 1);
        assert_eq!(idx.doc_entry("t:a").unwrap().version, "v1");
    }

    /// Session 42's review: model files replaced in place under the same id and dimension
    /// were searched with the old vectors. An index from before the files were recorded takes
    /// the files it is next opened with.
    #[test]
    fn other_model_files_under_the_same_id_are_another_model() {
        let dir = tempfile::tempdir().unwrap();
        let with = |w: Option<&str>| ModelSignature {
            weights: w.map(str::to_string),
            ..ModelSignature::plain("m", 4)
        };
        // Written before the files were recorded; opened with files, and closed without a
        // commit of its own: the files were recorded at the open.
        drop(Index::open_with(dir.path(), &with(None)).unwrap());
        drop(Index::open_with(dir.path(), &with(Some("aaaa"))).unwrap());
        let err = Index::open_with(dir.path(), &with(Some("bbbb")))
            .err()
            .expect("other files must be refused");
        assert!(matches!(err, IndexError::ModelMismatch { .. }), "{err}");
        assert!(err.to_string().contains("with files aaaa"), "{err}");
        // The same files, or an embedder that knows none (a test's), open it.
        drop(Index::open_with(dir.path(), &with(Some("aaaa"))).unwrap());
        drop(Index::open_with(dir.path(), &with(None)).unwrap());
        assert!(with(Some("aaaa")).serves(&with(None)));
        assert!(!with(Some("aaaa")).serves(&with(Some("bbbb"))));
    }

    #[test]
    fn a_different_prefix_is_another_model_and_the_error_says_how_to_reembed() {
        let dir = tempfile::tempdir().unwrap();
        let plain = ModelSignature::plain("m", 4);
        drop(Index::open_with(dir.path(), &plain).unwrap());
        let prefixed = ModelSignature {
            text: TextProfile {
                query_prefix: "query: ".into(),
                passage_prefix: "passage: ".into(),
                pooling: Pooling::Mean,
            },
            ..plain.clone()
        };
        let err = Index::open_with(dir.path(), &prefixed)
            .err()
            .expect("must refuse");
        let msg = err.to_string();
        assert!(msg.contains("query prefix \"query: \""), "{msg}");
        assert!(
            msg.contains("docent reindex --config NEW.toml --from"),
            "{msg}"
        );
        let cls = ModelSignature {
            text: TextProfile {
                pooling: Pooling::Cls,
                ..Default::default()
            },
            ..plain.clone()
        };
        assert!(Index::open_with(dir.path(), &cls).is_err());
        // `open` is the plain profile, and an index written before profiles were recorded (no
        // prefix keys in its payload) reads as plain too.
        Index::open(dir.path(), "m", 4).unwrap();
        let old: CommitPayload =
            serde_json::from_str(r#"{"model_id": "m", "dim": 4, "checkpoints": {}}"#).unwrap();
        assert_eq!(old.signature(), plain);
    }

    #[test]
    fn export_reads_back_every_document_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut two = record("b", "first part", Acl::new([Principal::group("hr")], []));
        two.chunks.push(ChunkRecord {
            ord: 1,
            span: 11..22,
            page: Some(3),
            heading_path: vec!["H".into(), "Sub".into()],
            text: "second part".into(),
            hash: "b-1".into(),
            vector: vec![0.0, 1.0, 0.0, 0.0],
        });
        two.attributes.insert("file_type".into(), "md".into());
        {
            let idx = Index::open(dir.path(), "m", 4).unwrap();
            idx.upsert(record("a", "alpha", Acl::new([Principal::Everyone], [])))
                .unwrap();
            idx.upsert(two.clone()).unwrap();
            idx.commit(BTreeMap::from([("t".to_string(), serde_json::json!(5))]))
                .unwrap();
            // Not committed: not exported.
            idx.upsert(record("c", "gamma", Acl::new([Principal::Everyone], [])))
                .unwrap();
            // The export takes no writer lock: it reads while the index is open for writing.
            let ex = Export::open(dir.path()).unwrap();
            assert_eq!(ex.document_keys(), ["t:a", "t:b"]);
            assert_eq!(ex.chunk_count(), 3);
            assert_eq!(ex.payload().checkpoints["t"], 5);
            assert_eq!(ex.payload().signature(), ModelSignature::plain("m", 4));
            let got = ex.document("t:b").unwrap().unwrap();
            assert_eq!(got.key, two.key);
            assert_eq!(
                (&got.uri, &got.title, &got.version, got.modified_at),
                (&two.uri, &two.title, &two.version, two.modified_at)
            );
            assert_eq!(got.attributes, two.attributes);
            assert_eq!(got.acl, two.acl);
            assert_eq!(got.content_hash, two.content_hash);
            assert_eq!(got.chunks.len(), 2);
            for (g, w) in got.chunks.iter().zip(&two.chunks) {
                assert_eq!(
                    (g.ord, &g.span, g.page, &g.heading_path, &g.text, &g.hash),
                    (w.ord, &w.span, w.page, &w.heading_path, &w.text, &w.hash)
                );
                assert!(g.vector.is_empty());
            }
            assert!(ex.document("t:zzz").unwrap().is_none());
        }
        assert!(Export::open(&dir.path().join("none")).is_err());
    }

    #[test]
    fn an_audience_scope_excludes_documents_with_any_deny_inside_both_legs() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(dir.path(), "m", 4).unwrap();
        idx.upsert(record(
            "open",
            "quarterly plan",
            Acl::new([Principal::group("hr")], []),
        ))
        .unwrap();
        idx.upsert(record(
            "denied",
            "quarterly plan",
            Acl::new([Principal::group("hr")], [Principal::user("bob")]),
        ))
        .unwrap();
        // A deny token with a line break is a deny entry too (`.` in a pattern stops at one).
        idx.upsert(record(
            "denied-nl",
            "quarterly plan",
            Acl::new([Principal::group("hr")], [Principal::user("bob\nsmith")]),
        ))
        .unwrap();
        idx.commit(BTreeMap::new()).unwrap();
        let snap = idx.snapshot();
        let filter = SearchFilter::default();
        let keys = |hits: Vec<Scored>| -> Vec<String> {
            let mut k: Vec<String> = hits
                .iter()
                .map(|h| snap.chunk(h.addr).unwrap().doc_key)
                .collect();
            k.sort();
            k
        };
        let person = AclScope::for_tests("alice", &["everyone", "group:hr", "user:alice"]);
        let channel = AclScope::for_tests_audience("group:hr", &["everyone", "group:hr"]);
        for (scope, want) in [
            (&person, vec!["t:denied", "t:denied-nl", "t:open"]),
            (&channel, vec!["t:open"]),
        ] {
            let bm25 = snap
                .bm25(scope, &filter, "quarterly", 10, (1.0, 1.0))
                .unwrap();
            assert_eq!(keys(bm25), want, "bm25 for {}", scope.user());
            let dense = snap
                .dense(scope, &filter, &[1.0, 0.0, 0.0, 0.0], 10)
                .unwrap();
            assert_eq!(keys(dense), want, "dense for {}", scope.user());
        }
    }

    /// A commit that fails (here: the file size limit, as a full disk would) rolls back, and
    /// what is written afterwards is committed (found by a review: tantivy's writer lost its
    /// indexing thread in the failed commit, and a retried commit kept the deletes and dropped
    /// every document added from then on). Runs in a child process, whose limits it changes.
    #[test]
    #[allow(unsafe_code)]
    fn a_failed_commit_rolls_back_and_later_writes_are_committed() {
        const NAME: &str =
            "index::tests::a_failed_commit_rolls_back_and_later_writes_are_committed";
        if std::env::var_os("DOCENT_TEST_FSIZE_CHILD").is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", NAME, "--test-threads=1"])
                .env("DOCENT_TEST_FSIZE_CHILD", "1")
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains("1 passed"),
                "{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        }
        let file_size_limit = |bytes: libc::rlim_t| {
            let l = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: libc::RLIM_INFINITY,
            };
            // SAFETY: setrlimit reads the struct; SIG_IGN for SIGXFSZ turns an oversized
            // write into an EFBIG error instead of killing the process.
            unsafe {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &l), 0);
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(dir.path(), "m", 4).unwrap();
        let everyone = || Acl::new([Principal::Everyone], []);
        idx.upsert(record("a", "alpha kestrel", everyone()))
            .unwrap();
        idx.commit(BTreeMap::new()).unwrap();

        file_size_limit(64 << 10);
        idx.upsert(record("a", "alpha kestrel, revised", everyone()))
            .unwrap();
        // Words that neither compress nor repeat: the segment outgrows the limit.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let bulky: String = (0..100_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                format!("bulky{x:x} ")
            })
            .collect();
        idx.upsert(record("b", &bulky, everyone())).unwrap();
        let e = idx.commit(BTreeMap::new()).unwrap_err();
        assert!(e.rolled_back(), "{e}");
        file_size_limit(libc::RLIM_INFINITY);
        assert!(idx.latest_entry("t:b").is_none());

        idx.upsert(record("c", "gamma heron", everyone())).unwrap();
        idx.commit(BTreeMap::new()).unwrap();
        let snap = idx.snapshot();
        let scope = AclScope::for_tests("u", &["everyone"]);
        let found = |q: &str| {
            snap.bm25(&scope, &SearchFilter::default(), q, 10, (1.0, 1.0))
                .unwrap()
                .len()
        };
        assert_eq!(found("heron"), 1, "written after the failed commit");
        assert_eq!(found("kestrel"), 1, "the last committed version of a stays");
        assert_eq!(found("revised"), 0, "a's rolled-back version is gone");
        assert_eq!(found("bulky"), 0);
    }

    /// Found by a review: each repeat of a query word was its own term query (three in the
    /// chunk leg, one in the document leg), reading the same postings again. A repeated word
    /// is now one query weighted by its count: the same scores, one read.
    #[test]
    fn a_repeated_query_word_scores_as_its_repeats_with_one_query() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(dir.path(), "m", 4).unwrap();
        // One query per distinct word, weighted by its count (the scores below would be the
        // same with one query per repeat: this is what the change is).
        let counted = schema::analyze_counted(&idx.index, &"parking ".repeat(800));
        assert_eq!(counted.len(), 1, "{counted:?}");
        assert_eq!(counted[0].1, 800.0);
        let mixed = schema::analyze_counted(&idx.index, "parking permit parking");
        assert_eq!(
            mixed.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
            [2.0, 1.0]
        );
        let everyone = || Acl::new([Principal::Everyone], []);
        idx.upsert(record("a", "parking permit rules for staff", everyone()))
            .unwrap();
        idx.upsert(record("b", "parking near the north garage", everyone()))
            .unwrap();
        idx.upsert(record("c", "permit office hours", everyone()))
            .unwrap();
        idx.commit(BTreeMap::new()).unwrap();
        let snap = idx.snapshot();
        let scope = AclScope::for_tests("u", &["everyone"]);
        let f = SearchFilter::default();
        let once = snap
            .bm25(&scope, &f, "parking permit", 10, (1.0, 1.0))
            .unwrap();
        let repeated = snap
            .bm25(&scope, &f, &"parking ".repeat(800), 10, (1.0, 1.0))
            .unwrap();
        let single = snap.bm25(&scope, &f, "parking", 10, (1.0, 1.0)).unwrap();
        assert_eq!(repeated.len(), single.len());
        for (r, s) in repeated.iter().zip(&single) {
            assert_eq!(r.addr, s.addr);
            assert!(
                (r.score - 800.0 * s.score).abs() <= 1e-3 * r.score,
                "{r:?} {s:?}"
            );
        }
        // Twice one word: that word counts twice, as two queries of it did.
        let twice = snap
            .bm25(&scope, &f, "parking permit parking", 10, (1.0, 1.0))
            .unwrap();
        let b = |hits: &[Scored]| {
            hits.iter()
                .find(|h| h.addr == single[1].addr)
                .map(|h| h.score)
        };
        let (b_once, b_twice) = (b(&once).unwrap(), b(&twice).unwrap());
        assert!((b_twice - 2.0 * b_once).abs() <= 1e-4, "{b_once} {b_twice}");
        let docs = snap
            .bm25_documents(&scope, &f, &"permit ".repeat(3), 10)
            .unwrap()
            .unwrap();
        let one = snap
            .bm25_documents(&scope, &f, "permit", 10)
            .unwrap()
            .unwrap();
        assert_eq!(docs.len(), one.len());
        assert!((docs[0].score - 3.0 * one[0].score).abs() <= 1e-4);
    }

    /// A failed commit whose rollback fails too leaves a writer that must not be used again
    /// (found by a review: the pipeline retried the commit on it).
    #[test]
    fn a_writer_that_cannot_be_reset_takes_no_more_writes_and_the_last_commit_stays() {
        let dir = tempfile::tempdir().unwrap();
        let everyone = || Acl::new([Principal::Everyone], []);
        let cp = |n: u64| BTreeMap::from([("c".to_string(), serde_json::json!(n))]);
        {
            let idx = Index::open(dir.path(), "m", 4).unwrap();
            idx.upsert(record("a", "alpha", everyone())).unwrap();
            idx.commit(cp(1)).unwrap();
            idx.fail_commit_and_rollback
                .store(true, std::sync::atomic::Ordering::SeqCst);
            idx.upsert(record("b", "beta", everyone())).unwrap();
            let e = idx.commit(cp(2)).unwrap_err();
            assert!(e.writer_lost() && !e.rolled_back(), "{e}");
            // Nothing more is taken, though the injected failure is spent.
            let e = idx.upsert(record("c", "gamma", everyone())).unwrap_err();
            assert!(e.writer_lost(), "{e}");
            assert!(idx.commit(cp(3)).unwrap_err().writer_lost());
            assert!(idx.rollback().unwrap_err().writer_lost());
            assert_eq!(idx.checkpoints()["c"], 1);
        }
        let idx = Index::open(dir.path(), "m", 4).unwrap();
        assert!(idx.doc_entry("t:a").is_some());
        assert!(idx.doc_entry("t:b").is_none());
        assert_eq!(idx.checkpoints()["c"], 1);
        idx.upsert(record("c", "gamma", everyone())).unwrap();
        idx.commit(cp(3)).unwrap();
        assert!(idx.doc_entry("t:c").is_some());
    }

    #[test]
    fn uncommitted_writes_are_invisible_and_rollback_drops_them() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(dir.path(), "m", 4).unwrap();
        idx.upsert(record("a", "alpha", Acl::new([Principal::Everyone], [])))
            .unwrap();
        assert_eq!(idx.document_count(), 0);
        idx.rollback().unwrap();
        idx.commit(BTreeMap::new()).unwrap();
        assert_eq!(idx.document_count(), 0);
        assert_eq!(idx.stats().chunks, 0);
        // Replacing a document never leaves two versions.
        idx.upsert(record("a", "alpha", Acl::new([Principal::Everyone], [])))
            .unwrap();
        idx.commit(BTreeMap::new()).unwrap();
        idx.upsert(record(
            "a",
            "alpha two",
            Acl::new([Principal::Everyone], []),
        ))
        .unwrap();
        idx.commit(BTreeMap::new()).unwrap();
        assert_eq!(idx.stats().chunks, 1);
        idx.delete(&DocKey::new("t", "a"));
        idx.commit(BTreeMap::new()).unwrap();
        assert_eq!(idx.stats().chunks, 0);
        assert!(idx.doc_entry("t:a").is_none());
    }
}
