//! `backend = "milvus"` (issue 14, part 3): the [`Backend`] seam over a Milvus collection
//! (`docent-milvus`), for deployments past one machine: Docent query nodes hold no index state
//! and can run as many replicas; one ingest node runs the connectors and writes.
//!
//! How the seam's contract maps onto an engine without transactions:
//! - **Writes are buffered until `commit`**, so nothing is visible before it (as with tantivy).
//!   A commit deletes deleted documents and the chunks a shorter new version no longer has,
//!   upserts every buffered chunk by chunk id (`<doc key>#<ordinal>`: idempotent, a replaced
//!   document is overwritten in place), and only then writes the checkpoints: a checkpoint is
//!   never stored before the data it covers is acknowledged. A crash in between replays from
//!   the older checkpoint, which the idempotent upserts make harmless. The writer stores each
//!   commit's plan before applying it ([`commit_log`]), and its next start applies a cut-off
//!   commit again whole. Unlike tantivy, a commit is not atomic for readers: a query running
//!   during one can see part of it.
//! - **Both legs carry the scope and the filters** as one Milvus filter expression
//!   (`docent_milvus::expr`, one escaper; an empty scope sends no request). Hybrid fusion, the
//!   second stage and the answerers are Docent's, over the rows both searches return whole, so
//!   the ranking is computed the same way as on the embedded backend.
//! - **The document table** (versions, ACLs, chunk counts: what connectors and sync consult) is
//!   read from the collection (the first chunk of every document carries its entry in `meta`)
//!   on first use and kept current by this process's commits; a process that never writes
//!   (a query node) reloads it when it is older than [`TABLE_TTL`]. The guardrails' ACL recheck
//!   ([`Backend::doc_entry`]) always asks Milvus, so every replica checks against the same,
//!   current ACL.
//! - **Term statistics**: Milvus keeps its BM25 statistics to itself, so [`IndexSnapshot::idf`]
//!   is uniform here (1.0): the second stage and the extractive answerer weigh query terms
//!   equally. BM25 runs on the chunk text with the engine's analyzer (no title or heading
//!   field, no stemming on Lite), so BM25 scores differ from tantivy's; see docs/milvus.md.
//!
//! Must never: write a checkpoint before the rows it covers; paste a value into an expression
//! outside `docent_milvus::expr::quote`; answer an ACL recheck from a stale copy.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use docent_connector_api::{Acl, DocKey, IndexedDoc, IndexedState, Principal};
use docent_milvus::{ChunkCollection, ChunkRow, ConnectOptions, MilvusClient, MilvusError};
use serde_json::{Value, json};

use super::{
    Analyzer, AttrFilter, Backend, ChunkAddr, CommitPayload, DocEntry, DocumentRecord, IndexError,
    IndexSnapshot, IndexStats, ModelSignature, Scored, SearchFilter, StoredChunk, schema,
};
use crate::acl::AclScope;

mod commit_log;
use commit_log::CommitPlan;

/// How long a query node (a process that never commits) trusts its copy of the document table.
pub const TABLE_TTL: Duration = Duration::from_secs(60);
/// The collection's meta entry a `docent reindex` keeps while it builds the collection: the
/// daemon refuses a collection that has it.
pub const REINDEX_MARKER: &str = "reindex-incomplete";
/// Rows per page when the document table is read.
const PAGE: usize = 4096;
/// Rows per page when a collection is exported (small in tests, so they cross pages).
#[cfg(not(test))]
const EXPORT_PAGE: usize = PAGE;
#[cfg(test)]
const EXPORT_PAGE: usize = 7;

/// Where the collection lives and how to reach it (`[index.milvus]`).
#[derive(Clone)]
pub struct MilvusConfig {
    /// `http://host:port` (h2c, as Milvus Lite) or `https://host:port` (needs `ca_file`).
    pub uri: String,
    /// The chunk collection; `<collection>_state` holds checkpoints and the model record.
    pub collection: String,
    /// `user:password` or an API key; from the environment or a file, never the config.
    pub token: Option<String>,
    pub database: String,
    pub ca_file: Option<PathBuf>,
    pub server_name: Option<String>,
    pub timeout: Duration,
}

impl std::fmt::Debug for MilvusConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MilvusConfig")
            .field("uri", &self.uri)
            .field("collection", &self.collection)
            .field("token", &self.token.as_ref().map(|_| "(redacted)"))
            .field("database", &self.database)
            .field("ca_file", &self.ca_file)
            .field("server_name", &self.server_name)
            .field("timeout", &self.timeout)
            .finish()
    }
}

struct Written {
    entry: DocEntry,
    rows: Vec<ChunkRow>,
}

#[derive(Default)]
struct Table {
    docs: HashMap<String, DocEntry>,
    loaded: Option<Instant>,
    /// While a load reads the collection: what commits of this process changed meanwhile,
    /// which the rows it read may predate (`None` for a delete). Applied over the load's
    /// result (session 34's review: a load that began before a commit and ended after it put
    /// back the committed documents' old entries, for good, since a writer never reloads).
    committed_during_load: Option<HashMap<String, Option<DocEntry>>>,
}

impl Table {
    /// A committed document (`None`: deleted).
    fn install(&mut self, key: String, entry: Option<DocEntry>) {
        if let Some(since) = self.committed_during_load.as_mut() {
            since.insert(key.clone(), entry.clone());
        }
        match entry {
            Some(e) => {
                self.docs.insert(key, e);
            }
            None => {
                self.docs.remove(&key);
            }
        }
    }
}

/// Who opens a collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opening {
    /// The ingest node (or a single node): it records the model on a new collection.
    Writer,
    /// A query node: it only reads.
    Query,
    /// `docent reindex`, building a new collection.
    Reindex,
}

/// The index on a Milvus collection.
pub struct MilvusBackend {
    /// Its own runtime: the seam is synchronous and may be called from any thread, inside the
    /// daemon's runtime or not.
    rt: OwnRuntime,
    coll: ChunkCollection,
    model: ModelSignature,
    where_: String,
    /// An empty tantivy index with Docent's analyzers, for `analyze` (answer extraction and the
    /// second stage tokenize the same way as on the embedded backend).
    analysis: tantivy::Index,
    /// Buffered writes by document key (`None`: a delete), until commit.
    pending: Mutex<BTreeMap<String, Option<Written>>>,
    table: RwLock<Table>,
    /// One load of the table at a time (callers meanwhile wait for it, and use it).
    loading: Mutex<()>,
    /// This process has committed: its table is current without reloading.
    writer: std::sync::atomic::AtomicBool,
    checkpoints: RwLock<BTreeMap<String, Value>>,
    last_commit: std::sync::atomic::AtomicI64,
    /// Each commit stores its plan before applying it ([`commit_log`]): the ingest node's.
    /// (`docent reindex` does not: its target is not served until it finishes, its repair
    /// removes what a cut-off commit tore and the run reads those documents again, and a plan
    /// would double what it writes.)
    log_commits: bool,
    /// The id of the pending writes' commit ([`CommitPlan::id`]), until it succeeds or they are
    /// rolled back.
    commit_id: Mutex<Option<String>>,
    /// A finished commit's plan could not be cleared: the next commit clears it.
    plan_left: std::sync::atomic::AtomicBool,
    /// The size a commit's plan may have before the commit goes in parts
    /// ([`CommitPlan::split`]; tests set less).
    plan_target: std::sync::atomic::AtomicUsize,
    /// The groups of documents the pending writes' commit went in, when it went in parts and
    /// failed ([`CommitPlan::split`]'s `earlier`), until it succeeds or they are rolled back.
    part_groups: Mutex<Vec<Vec<String>>>,
    /// The ingest node's hold on the collection ([`Lease`]); `None` on a query node and for
    /// `docent reindex`.
    lease: Option<Lease>,
    /// Failure injection for tests: the commit's part of this place is cut off once its
    /// intents are recorded.
    #[cfg(test)]
    cut_off_in_part: Mutex<Option<usize>>,
    /// Failure injection for tests: reading the document table fails.
    #[cfg(test)]
    unreadable_table: std::sync::atomic::AtomicBool,
    /// For tests: runs once a load has read the collection, before it is installed.
    #[cfg(test)]
    after_reading_table: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Drop for MilvusBackend {
    fn drop(&mut self) {
        // A clean stop gives the collection up at once (a node started next need not wait
        // for the heartbeat to stop).
        if let Some(lease) = self.lease.take() {
            match lease.lost() {
                true => lease.beating.abort(),
                false => lease.release(self.rt.handle(), &self.coll),
            }
        }
    }
}

fn run<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    f: impl Future<Output = Result<T, MilvusError>> + Send + 'static,
) -> Result<T, IndexError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(f.await);
    });
    Ok(rx.recv().map_err(|_| {
        IndexError::Milvus(Box::new(MilvusError::Protocol {
            method: "(runtime)",
            reason: "the request task ended without an answer".into(),
        }))
    })??)
}

/// The runtime Milvus requests run on, and a client connected on it.
/// The Milvus client's own runtime, wound down without blocking when dropped: dropping a
/// runtime blocks, which panics inside another runtime (a backend or export dropped, or an open
/// that failed, in async code: found by a review).
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl std::ops::Deref for OwnRuntime {
    type Target = tokio::runtime::Runtime;

    fn deref(&self) -> &Self::Target {
        // Taken only by `drop`.
        self.0.as_ref().expect("the runtime is held until dropped")
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

fn connect(config: &MilvusConfig) -> Result<(OwnRuntime, MilvusClient), IndexError> {
    let rt = OwnRuntime(Some(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("docent-milvus")
            .enable_all()
            .build()
            .map_err(|source| IndexError::Io {
                path: PathBuf::from(&config.uri),
                source,
            })?,
    ));
    let uri = config.uri.clone();
    let options = ConnectOptions {
        token: config.token.clone(),
        db_name: config.database.clone(),
        ca_file: config.ca_file.clone(),
        server_name: config.server_name.clone(),
        timeout: config.timeout,
    };
    let client = run(&rt, async move {
        MilvusClient::connect_with(&uri, options).await
    })?;
    Ok((rt, client))
}

/// The size of plan past which a commit goes in parts: a few round trips of state rows each,
/// and a repair reads one back whole.
const PLAN_TARGET: usize = 16 << 20;

/// A name for one commit, unlike any other's: its start time and a count in this process.
fn commit_id() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{nanos:x}-{:x}-{n}", std::process::id())
}

/// The meta row that names the node writing the collection, with its heartbeat ([`Lease`]).
const WRITER_LEASE: &str = "writer";

/// How often the writing node's heartbeat is written.
const LEASE_BEAT: Duration = Duration::from_secs(10);

/// How many beats a node starting as the writer waits for another node's heartbeat to move
/// before it takes the collection over.
const LEASE_TAKEOVER_BEATS: u32 = 3;

/// What [`WRITER_LEASE`] holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct LeaseRow {
    node: String,
    beat: u64,
}

impl LeaseRow {
    fn parse(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

/// This process, as a writer of collections: its host, its process id and its start.
fn this_node() -> String {
    static NODE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NODE.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        format!("{host}/{}", commit_id())
    })
    .clone()
}

/// One ingest node writes a collection (a review: nothing stopped two, as two replicas of a
/// default config with `role = "all"` would be, and a commit of one carrying an older crawl
/// could put back the wider ACL of a document the other had just narrowed). The writer keeps
/// a heartbeat in [`WRITER_LEASE`]; a node starting as the writer where another's heartbeat
/// still moves is refused, and one whose row another node took over writes nothing more
/// ([`IndexError::TakenOver`]): the row is checked again before every commit. A crashed
/// writer's row stops moving, and the next writer takes over after
/// [`LEASE_TAKEOVER_BEATS`] beats; a clean stop removes it.
struct Lease {
    node: String,
    lost: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The heartbeat; stopped before a clean stop removes the row (a beat in flight would
    /// write it again).
    beating: tokio::task::JoinHandle<()>,
}

/// A lease taken by an open that has not finished: released if the open fails.
struct Held {
    lease: Option<Lease>,
    rt: tokio::runtime::Handle,
    coll: ChunkCollection,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.release(&self.rt, &self.coll);
        }
    }
}

/// Whose a lease row is, as this node reads it: `None` when there is none; a row that does not
/// parse (a later release's format) is someone else's (a review: it read as free, and as this
/// node's own).
fn row_owner(bytes: Option<&[u8]>) -> Option<String> {
    bytes.map(|b| LeaseRow::parse(b).map_or_else(|| UNREADABLE_OWNER.to_string(), |r| r.node))
}

/// Who an unreadable lease row is taken to name.
const UNREADABLE_OWNER: &str = "(a writer row this release cannot read)";

impl Lease {
    fn lost(&self) -> bool {
        self.lost.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Takes the collection for `node` (waiting to see whether another node's heartbeat
    /// moves), then beats on `rt` every `beat`.
    fn acquire(
        rt: &tokio::runtime::Runtime,
        coll: &ChunkCollection,
        node: String,
        beat: Duration,
        timeout: Duration,
        where_: &str,
    ) -> Result<Self, IndexError> {
        let read = |rt: &tokio::runtime::Runtime| {
            let c = coll.clone();
            run(rt, async move { c.get_meta(WRITER_LEASE).await })
        };
        let mine = node.clone();
        let theirs =
            move |row: &Option<Vec<u8>>| row_owner(row.as_deref()).filter(|owner| *owner != mine);
        let found = read(rt)?;
        if let Some(other) = theirs(&found) {
            tracing::info!(
                collection = %where_,
                node = %other,
                "milvus: another node's writer heartbeat is on the collection; waiting to see \
                 whether it still beats"
            );
            // Beats, and one request's time: a writer alive but held up by one slow request
            // is not taken for gone (a review).
            std::thread::sleep(beat * LEASE_TAKEOVER_BEATS + timeout);
            let now = read(rt)?;
            if let Some(still) = theirs(&now).filter(|_| now != found) {
                return Err(IndexError::AnotherWriter {
                    path: PathBuf::from(where_),
                    node: still,
                });
            }
            tracing::warn!(collection = %where_, node = %other, "milvus: the previous writer's heartbeat stopped; taking the collection over");
        }
        let write = |row: &LeaseRow| serde_json::to_vec(row).unwrap_or_default();
        let first = write(&LeaseRow {
            node: node.clone(),
            beat: 0,
        });
        let c = coll.clone();
        let wrote = Instant::now();
        run(rt, async move { c.put_meta(WRITER_LEASE, &first).await })?;
        let lost = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, me, gone, at) = (coll.clone(), node.clone(), lost.clone(), where_.to_string());
        let beating = rt.spawn(async move {
            let mut n = 0u64;
            let taken = |row: Option<Vec<u8>>| row_owner(row.as_deref()).is_some_and(|o| o != me);
            loop {
                tokio::time::sleep(beat).await;
                if gone.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                match c.get_meta(WRITER_LEASE).await {
                    Ok(row) if taken(row.clone()) => break,
                    Ok(_) => {}
                    // Missed beats are what a takeover waits for: a node cut off from Milvus
                    // for that long finds the row taken when it is back.
                    Err(e) => {
                        tracing::warn!(collection = %at, error = %crate::guardrail::pii::for_log(&e.to_string()), "milvus: the writer heartbeat could not be read");
                        continue;
                    }
                }
                n += 1;
                let row = write(&LeaseRow {
                    node: me.clone(),
                    beat: n,
                });
                if let Err(e) = c.put_meta(WRITER_LEASE, &row).await {
                    tracing::warn!(collection = %at, error = %crate::guardrail::pii::for_log(&e.to_string()), "milvus: the writer heartbeat could not be written");
                    continue;
                }
                // Read back: a read of this beat that came before another node's takeover
                // wrote over it (a review); the row then names this node again, and the
                // other finds its own gone at its next beat. Both cannot hold on.
                if let Ok(row) = c.get_meta(WRITER_LEASE).await
                    && (taken(row) || gone.load(std::sync::atomic::Ordering::SeqCst))
                {
                    break;
                }
            }
            gone.store(true, std::sync::atomic::Ordering::SeqCst);
            tracing::error!(collection = %at, "milvus: another node took over writing the collection: this node commits nothing more (run one ingest node; the others with role = \"query\")");
        });
        let lease = Self {
            node,
            lost,
            beating,
        };
        // Two nodes starting at once both find the row empty and both write it: the later
        // write stands. Each reads it back after a few of its own round trips (the other's
        // read and write fall in that time), before it repairs or commits anything, and the
        // one it does not name gives way (a review).
        let wait = (wrote.elapsed() * 4)
            .max(Duration::from_millis(100))
            .min(beat);
        std::thread::sleep(wait);
        match read(rt) {
            Ok(now) => match theirs(&now) {
                Some(other) => {
                    lease.beating.abort();
                    Err(IndexError::AnotherWriter {
                        path: PathBuf::from(where_),
                        node: other,
                    })
                }
                None => Ok(lease),
            },
            Err(e) => {
                // Its row is not left to hold the next start back.
                lease.release(rt.handle(), coll);
                Err(e)
            }
        }
    }

    /// Before a commit: whether the row still names this node (read now, not only at the
    /// last beat); when not, the heartbeat stops too.
    fn check(
        &self,
        rt: &tokio::runtime::Runtime,
        coll: &ChunkCollection,
        where_: &str,
    ) -> Result<(), IndexError> {
        if !self.lost() {
            let c = coll.clone();
            let row = run(rt, async move { c.get_meta(WRITER_LEASE).await })?;
            if row_owner(row.as_deref()).is_some_and(|o| o != self.node) {
                self.lost.store(true, std::sync::atomic::Ordering::SeqCst);
                self.beating.abort();
            }
        }
        match self.lost() {
            true => Err(IndexError::TakenOver {
                path: PathBuf::from(where_),
            }),
            false => Ok(()),
        }
    }

    /// Stops the heartbeat (waiting for a beat in flight), then removes the row if it still
    /// names this node: a clean stop, or an open that failed after taking the collection.
    /// At most a moment is spent on it.
    fn release(self, rt: &tokio::runtime::Handle, coll: &ChunkCollection) {
        let (c, node, beating) = (coll.clone(), self.node, self.beating);
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            beating.abort();
            let _ = beating.await;
            if let Ok(Some(row)) = c.get_meta(WRITER_LEASE).await
                && LeaseRow::parse(&row).is_some_and(|r| r.node == node)
            {
                let _ = c.delete_meta(WRITER_LEASE).await;
            }
            let _ = tx.send(());
        });
        let _ = rx.recv_timeout(Duration::from_secs(2));
    }
}

/// A read-only view of a collection, for re-embedding it with another model into a new one:
/// its model record and checkpoints, and every document with its chunks. It writes no data, so
/// query nodes may keep serving it; opened for a re-embedding it holds the writer lease, so
/// its ingest node must be stopped first ([`Self::open_for_reindex`]).
pub struct MilvusExport {
    rt: OwnRuntime,
    coll: ChunkCollection,
    /// The collection's writer lease, when opened to be re-embedded
    /// ([`Self::open_for_reindex`]): no ingest node writes it meanwhile.
    lease: Option<Lease>,
    payload: CommitPayload,
    keys: Vec<String>,
    chunks: u64,
    /// What each document was when this was opened ([`Self::changed_since_open`]).
    state: [u8; 32],
    /// `uri/collection`, for errors.
    where_: PathBuf,
}

/// A digest of the documents as their first rows state them (key, version, ACL), in scan order.
fn documents_digest(
    rt: &tokio::runtime::Runtime,
    coll: &ChunkCollection,
    mut each: impl FnMut(&ChunkRow),
) -> Result<[u8; 32], IndexError> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    each_first_row(rt, coll, &mut |row| {
        let e = entry_of(row);
        for part in [&row.doc_key, &e.version, &e.acl_fingerprint] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        each(row);
    })?;
    Ok(h.finalize().into())
}

impl Drop for MilvusExport {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.release(self.rt.handle(), &self.coll);
        }
    }
}

impl MilvusExport {
    /// Whether the collection changed since this was opened: a document written, deleted or
    /// given another ACL, or a commit in flight. A re-embedding that read it meanwhile may miss
    /// such a change (its ingest node was running), and must not finish (found by a review).
    pub fn changed_since_open(&self) -> Result<bool, IndexError> {
        // An ingest node took the lease over (this one's beats were missed): it may have
        // written.
        if self.lease.as_ref().is_some_and(Lease::lost) {
            return Ok(true);
        }
        let c = self.coll.clone();
        let intents = run(&self.rt, async move { c.intents().await })?;
        // (A stored plan alone is no change: its commit writes nothing before its intents,
        // and one left by a finished commit would block every re-embedding: a review.)
        Ok(!intents.is_empty() || documents_digest(&self.rt, &self.coll, |_| {})? != self.state)
    }

    pub fn open(config: &MilvusConfig) -> Result<Self, IndexError> {
        Self::open_holding(config, None)
    }

    /// [`Self::open`], holding the collection's writer lease until dropped, as an ingest node
    /// does: refused ([`IndexError::AnotherWriter`]) while its ingest node runs, and no ingest
    /// node starts on it until the re-embedding is done (a review: nothing checked that the
    /// ingest node was stopped until the whole copy had been read).
    pub fn open_for_reindex(config: &MilvusConfig) -> Result<Self, IndexError> {
        Self::open_holding(config, Some((this_node(), LEASE_BEAT)))
    }

    /// `lease`: the node taking the writer lease and its beat (tests: other nodes).
    fn open_holding(
        config: &MilvusConfig,
        lease: Option<(String, Duration)>,
    ) -> Result<Self, IndexError> {
        let (rt, client) = connect(config)?;
        let where_ = PathBuf::from(format!("{}/{}", config.uri, config.collection));
        let bad = |message: &str| IndexError::Payload {
            path: where_.clone(),
            message: message.to_string(),
        };
        let name = config.collection.clone();
        let coll = run(&rt, async move { client.existing_collection(&name).await })?
            .ok_or_else(|| bad("no such collection"))?;
        // The lease before anything is read (the checkpoints are then the last node's last).
        // Not taken again where this process's own writer holds it (tests run both in one
        // process): giving it back at the end would remove that writer's row.
        let lease = match lease {
            Some((node, beat)) => {
                let c = coll.clone();
                let row = run(&rt, async move { c.get_meta(WRITER_LEASE).await })?;
                (row_owner(row.as_deref()).as_deref() != Some(node.as_str()))
                    .then_some((node, beat))
            }
            None => None,
        };
        let mut held = Held {
            lease: match lease {
                Some((node, beat)) => Some(Lease::acquire(
                    &rt,
                    &coll,
                    node,
                    beat,
                    config.timeout,
                    &where_.to_string_lossy(),
                )?),
                None => None,
            },
            rt: rt.handle().clone(),
            coll: coll.clone(),
        };
        let c = coll.clone();
        let (marker, record, stored, intents) = run(&rt, async move {
            Ok((
                c.get_meta(REINDEX_MARKER).await?,
                c.get_meta("model").await?,
                c.checkpoints().await?,
                c.intents().await?,
            ))
        })?;
        if marker.is_some() {
            return Err(IndexError::Incomplete { path: where_ });
        }
        // Its documents may be half written, and the record that would have the ingest node
        // remove them whole would not come along.
        if !intents.is_empty() {
            return Err(bad(
                "its ingest node was stopped in the middle of a commit: start it once (it repairs the commit at start), stop it, and run docent reindex again",
            ));
        }
        let record = record.ok_or_else(|| bad("no model record (nothing was ever written)"))?;
        let mut payload: CommitPayload =
            serde_json::from_slice(&record).map_err(|e| bad(&format!("model record: {e}")))?;
        for (source, bytes) in stored {
            let v: Value = serde_json::from_slice(&bytes)
                .map_err(|e| bad(&format!("checkpoint of {source}: {e}")))?;
            payload.checkpoints.insert(source, v);
        }
        let (mut keys, mut chunks) = (Vec::new(), 0u64);
        let state = documents_digest(&rt, &coll, |row| {
            keys.push(row.doc_key.clone());
            chunks += u64::from(entry_of(row).chunks);
        })?;
        keys.sort();
        keys.dedup();
        Ok(Self {
            lease: held.lease.take(),
            rt,
            coll,
            payload,
            keys,
            chunks,
            state,
            where_,
        })
    }

    /// The model record (which model wrote the vectors) and the connectors' checkpoints.
    pub fn payload(&self) -> &CommitPayload {
        &self.payload
    }

    pub fn chunk_count(&self) -> u64 {
        self.chunks
    }

    /// Keys of all documents, sorted.
    pub fn document_keys(&self) -> &[String] {
        &self.keys
    }

    /// Documents as they were written (in the order of `keys`), their chunks in order, with
    /// their vectors or without (`vector` empty); `None` for one that is gone (or whose key is
    /// no document key). One scan of the collection per call (the chunk id is the only indexed
    /// scalar): pass many keys at once.
    pub fn documents(
        &self,
        keys: &[String],
        vectors: bool,
    ) -> Result<Vec<(String, Option<DocumentRecord>)>, IndexError> {
        let mut quoted = Vec::with_capacity(keys.len());
        for k in keys {
            quoted.push(docent_milvus::expr::quote("doc key", k).map_err(MilvusError::from)?);
        }
        let mut by_key: HashMap<String, Vec<ChunkRow>> = HashMap::new();
        if !quoted.is_empty() {
            let cond = format!("doc_key in [{}]", quoted.join(", "));
            let mut after: Option<String> = None;
            loop {
                let (c, cond, a) = (self.coll.clone(), cond.clone(), after.clone());
                let page = run(&self.rt, async move {
                    c.query_rows(&cond, a.as_deref(), EXPORT_PAGE, vectors)
                        .await
                })?;
                // Only an empty page ends it (see `each_document`).
                let Some(last) = page.last() else { break };
                after = next_after(&after, last)?;
                for row in page {
                    by_key.entry(row.doc_key.clone()).or_default().push(row);
                }
            }
        }
        Ok(keys
            .iter()
            .map(|k| {
                let doc = by_key
                    .remove(k)
                    .and_then(|rows| document_of(k, rows, vectors));
                (k.clone(), doc)
            })
            .collect())
    }
}

impl MilvusExport {
    /// Every document, in one scan of the collection by chunk id (its primary key): each is
    /// handed to `each` once its rows `0..n` are all in (`n` as its first chunk says), agreeing
    /// on the version. Returns how many documents were not handed over: rows missing (a commit
    /// cut off, or deleted during the scan), versions that disagree, a key that is no document
    /// key, or a document listed at open that the scan did not meet. Opened for a re-embedding,
    /// the scan stops ([`IndexError::TakenOver`]) at the first page after an ingest node took
    /// the writer lease over: what it reads from then on may change under it, and the run
    /// could not finish anyway ([`Self::changed_since_open`]).
    pub fn each_document(
        &self,
        vectors: bool,
        each: &mut dyn FnMut(DocumentRecord) -> Result<(), IndexError>,
    ) -> Result<u64, IndexError> {
        // Rows of one document are adjacent in chunk id order (`<key>#<ordinal>`) unless
        // another key begins with this key and '#': a few documents open at once. A document's
        // first chunk (`<key>#0`) is its smallest chunk id, so it comes before the others.
        let mut open: HashMap<String, Vec<ChunkRow>> = HashMap::new();
        let mut done: std::collections::HashSet<String> = Default::default();
        let mut bad = 0u64;
        let mut after: Option<String> = None;
        loop {
            if self.lease.as_ref().is_some_and(Lease::lost) {
                return Err(IndexError::TakenOver {
                    path: self.where_.clone(),
                });
            }
            let (c, a) = (self.coll.clone(), after.clone());
            let page = run(&self.rt, async move {
                c.query_rows("", a.as_deref(), EXPORT_PAGE, vectors).await
            })?;
            // Only an empty page ends the scan: Milvus may return a short page before the end
            // (it stops merging segments at the first one that runs out).
            let Some(last) = page.last() else { break };
            after = next_after(&after, last)?;
            for row in page {
                if done.contains(&row.doc_key) {
                    // Past the document's `n` chunks (a tail a shorter version left): not its.
                    continue;
                }
                let key = row.doc_key.clone();
                let rows = open.entry(key.clone()).or_default();
                rows.push(row);
                match complete(rows) {
                    Complete::No => {}
                    Complete::Yes => {
                        let rows = open.remove(&key).unwrap_or_default();
                        done.insert(key.clone());
                        match document_of(&key, rows, vectors) {
                            Some(doc) => each(doc)?,
                            None => bad += 1,
                        }
                    }
                    Complete::Inconsistent => {
                        open.remove(&key);
                        done.insert(key);
                        bad += 1;
                    }
                }
            }
        }
        let unmet = self
            .keys
            .iter()
            .filter(|k| !done.contains(*k) && !open.contains_key(*k))
            .count() as u64;
        Ok(open.len() as u64 + bad + unmet)
    }
}

/// Whether a document's rows read so far make it whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Complete {
    No,
    /// Its rows `0..n` are in, `n` as its first chunk says.
    Yes,
    /// Its rows `0..n` are in but disagree on the version or the count (rows of two versions).
    Inconsistent,
}

fn complete(rows: &[ChunkRow]) -> Complete {
    let Some(first) = rows.iter().find(|r| r.ordinal == 0) else {
        return Complete::No;
    };
    let n = first.meta["n"].as_u64().unwrap_or(0) as i64;
    if n == 0 {
        return Complete::Inconsistent;
    }
    let ours: Vec<&ChunkRow> = rows.iter().filter(|r| r.ordinal < n).collect();
    let mut ordinals: Vec<i64> = ours.iter().map(|r| r.ordinal).collect();
    ordinals.sort_unstable();
    ordinals.dedup();
    if ordinals.len() as i64 != n {
        return Complete::No;
    }
    let agree = ours
        .iter()
        .all(|r| r.meta["n"] == first.meta["n"] && r.meta["v"] == first.meta["v"]);
    match agree {
        true => Complete::Yes,
        false => Complete::Inconsistent,
    }
}

/// How many chunks a document's rows hold when they are one whole version: a first chunk
/// that counts `n`, and rows `0..n` that agree with it on the version, content hash and ACL
/// (rows past `n` are an older, longer version's tail). `None` when they are not: a commit
/// cut off between its batches left new rows beside old ones.
fn whole(rows: &[ChunkRow]) -> Option<i64> {
    if complete(rows) != Complete::Yes {
        return None;
    }
    let first = rows.iter().find(|r| r.ordinal == 0)?;
    let n = first.meta["n"].as_i64()?;
    let acl = acl_of(first).fingerprint();
    rows.iter()
        .filter(|r| r.ordinal < n)
        .all(|r| r.meta["h"] == first.meta["h"] && acl_of(r).fingerprint() == acl)
        .then_some(n)
}

/// A document from its rows (any order), as [`rows_of`] wrote it.
fn document_of(key: &str, mut rows: Vec<ChunkRow>, vectors: bool) -> Option<DocumentRecord> {
    let doc_key = DocKey::parse(key)?;
    rows.sort_by_key(|r| r.ordinal);
    rows.dedup_by_key(|r| r.ordinal);
    let first = rows.first().filter(|r| r.ordinal == 0)?;
    // Its first chunk says how many it has: rows past them are a tail an older, longer version
    // left, not the document's.
    let n = first.meta["n"].as_u64()? as usize;
    if n == 0 {
        // A first chunk that counts none is no document (and has no first row to read).
        return None;
    }
    rows.truncate(n);
    if rows.len() != n || rows.iter().enumerate().any(|(i, r)| r.ordinal != i as i64) {
        return None;
    }
    let first = &rows[0];
    let m = &first.meta;
    Some(DocumentRecord {
        key: doc_key,
        uri: first.uri.clone(),
        title: first.title.clone(),
        version: m["v"].as_str().unwrap_or_default().to_string(),
        modified_at: m["m"].as_i64(),
        attributes: first.attributes.clone(),
        acl: acl_of(first),
        content_hash: m["h"].as_str().unwrap_or_default().to_string(),
        chunks: rows
            .iter()
            .map(|r| crate::index::ChunkRecord {
                ord: r.ordinal as u32,
                span: r.span.start.max(0) as usize..r.span.end.max(0) as usize,
                page: r.meta["p"].as_u64().map(|p| p as u32),
                heading_path: serde_json::from_value(r.meta["hp"].clone()).unwrap_or_default(),
                text: r.text.clone(),
                hash: r.meta["ch"].as_str().unwrap_or_default().to_string(),
                vector: if vectors { r.dense.clone() } else { Vec::new() },
            })
            .collect(),
    })
}

impl MilvusBackend {
    /// Connects, creates or checks the collection, and checks (or, on a new collection,
    /// records) the model that writes its vectors: another model is
    /// [`IndexError::CollectionModelMismatch`], as on the embedded backend.
    /// Refuses a collection a `docent reindex` is building, or left unfinished
    /// ([`REINDEX_MARKER`]).
    pub fn open(config: &MilvusConfig, model: &ModelSignature) -> Result<Self, IndexError> {
        Self::open_as(config, model, Opening::Writer)
    }

    /// [`Self::open`] for a query node: it never records the model, and refuses a collection
    /// that has no record yet (session 34's review: a query node and the ingest node starting
    /// on an empty collection with two models of one dimension could both record theirs, and
    /// each then run with its own).
    pub fn open_for_queries(
        config: &MilvusConfig,
        model: &ModelSignature,
    ) -> Result<Self, IndexError> {
        Self::open_as(config, model, Opening::Query)
    }

    /// [`Self::open`] for the `docent reindex` that builds the collection: a new one (marked
    /// until [`Self::finish_reindex`]), or one an interrupted run left marked.
    pub(crate) fn open_for_reindex(
        config: &MilvusConfig,
        model: &ModelSignature,
    ) -> Result<Self, IndexError> {
        Self::open_as(config, model, Opening::Reindex)
    }

    fn open_as(
        config: &MilvusConfig,
        model: &ModelSignature,
        opening: Opening,
    ) -> Result<Self, IndexError> {
        Self::open_as_node(config, model, opening, this_node(), LEASE_BEAT)
    }

    /// [`Self::open_as`] as the node `node`, beating every `beat` (tests: other nodes).
    /// A writer takes [`LEASE_TAKEOVER_BEATS`] beats and one request timeout to take a
    /// collection over from a node whose heartbeat stopped.
    fn open_as_node(
        config: &MilvusConfig,
        model: &ModelSignature,
        opening: Opening,
        node: String,
        beat: Duration,
    ) -> Result<Self, IndexError> {
        let reindex = opening == Opening::Reindex;
        let (rt, client) = connect(config)?;
        let (name, dim) = (config.collection.clone(), model.dim);
        let coll = run(
            &rt,
            async move { client.ensure_collection(&name, dim).await },
        )?;
        let where_ = format!("{}/{}", config.uri, config.collection);
        // The lease first: what a writer reads and records below (the model record, the
        // checkpoints) is then its own (a review: a node refused after writing the model
        // record, or holding checkpoints read before another's last commit). Given up again
        // if the open fails after it.
        let mut held = Held {
            lease: match opening {
                Opening::Writer => Some(Lease::acquire(
                    &rt,
                    &coll,
                    node,
                    beat,
                    config.timeout,
                    &where_,
                )?),
                Opening::Query | Opening::Reindex => None,
            },
            rt: rt.handle().clone(),
            coll: coll.clone(),
        };
        let (marked, record) = {
            let c = coll.clone();
            run(&rt, async move {
                Ok((
                    c.get_meta(REINDEX_MARKER).await?,
                    c.get_meta("model").await?,
                ))
            })?
        };
        let marked = marked.is_some();
        if marked && !reindex {
            return Err(IndexError::Incomplete {
                path: PathBuf::from(&where_),
            });
        }
        let want = CommitPayload {
            model_id: model.model_id.clone(),
            dim: model.dim,
            query_prefix: model.text.query_prefix.clone(),
            passage_prefix: model.text.passage_prefix.clone(),
            pooling: model.text.pooling,
            weights: model.weights.clone(),
            ..CommitPayload::default()
        };
        if let Some(bytes) = &record {
            let found: CommitPayload =
                serde_json::from_slice(bytes).map_err(|e| IndexError::Payload {
                    path: PathBuf::from(&where_),
                    message: format!("model record: {e}"),
                })?;
            if !model.serves(&found.signature()) {
                if marked {
                    return Err(IndexError::Payload {
                        path: PathBuf::from(&where_),
                        message: format!(
                            "an interrupted docent reindex left this collection for {}, not {model}: drop the collection (or name another) and run again",
                            found.signature()
                        ),
                    });
                }
                return Err(IndexError::CollectionModelMismatch {
                    path: PathBuf::from(&where_),
                    found: Box::new(found.signature()),
                    want: Box::new(model.clone()),
                });
            }
        }
        if reindex && !marked {
            let c = coll.clone();
            let (any, checkpoints) = run(&rt, async move {
                Ok((
                    c.query_rows("", None, 1, false).await?,
                    c.checkpoints().await?,
                ))
            })?;
            if !any.is_empty() || !checkpoints.is_empty() {
                return Err(IndexError::Payload {
                    path: PathBuf::from(&where_),
                    message: "holds documents already: docent reindex builds a new collection; name one that does not exist".into(),
                });
            }
            // Before anything is written: a daemon started on it meanwhile refuses it.
            let c = coll.clone();
            run(&rt, async move { c.put_meta(REINDEX_MARKER, b"1").await })?;
        }
        // A record from before the model's files were recorded takes this model's (the ingest
        // node writes it; a query node reads).
        let adopt = record.as_deref().is_some_and(|bytes| {
            serde_json::from_slice::<CommitPayload>(bytes)
                .is_ok_and(|found| found.weights.is_none() && want.weights.is_some())
        });
        if adopt && opening != Opening::Query {
            let c = coll.clone();
            let bytes = serde_json::to_vec(&want).unwrap_or_default();
            run(&rt, async move { c.put_meta("model", &bytes).await })?;
        }
        if record.is_none() {
            if opening == Opening::Query {
                return Err(IndexError::Payload {
                    path: PathBuf::from(&where_),
                    message: "no model record yet: start the ingest node first (it records \
                              the model a query node must match)"
                        .into(),
                });
            }
            let c = coll.clone();
            let bytes = serde_json::to_vec(&want).unwrap_or_default();
            run(&rt, async move { c.put_meta("model", &bytes).await })?;
        }
        let stored = {
            let c = coll.clone();
            run(&rt, async move { c.checkpoints().await })?
        };
        let mut checkpoints = BTreeMap::new();
        for (source, bytes) in stored {
            let v: Value = serde_json::from_slice(&bytes).map_err(|e| IndexError::Payload {
                path: PathBuf::from(&where_),
                message: format!("checkpoint of {source}: {e}"),
            })?;
            checkpoints.insert(source, v);
        }
        let analysis = tantivy::Index::create_in_ram(schema::build());
        schema::register_tokenizers(&analysis);
        Ok(Self {
            lease: held.lease.take(),
            rt,
            coll,
            model: model.clone(),
            where_,
            analysis,
            pending: Mutex::new(BTreeMap::new()),
            table: RwLock::new(Table::default()),
            loading: Mutex::new(()),
            writer: false.into(),
            checkpoints: RwLock::new(checkpoints),
            last_commit: 0.into(),
            log_commits: opening == Opening::Writer,
            commit_id: Mutex::new(None),
            plan_left: false.into(),
            plan_target: PLAN_TARGET.into(),
            part_groups: Mutex::new(Vec::new()),
            #[cfg(test)]
            cut_off_in_part: Mutex::new(None),
            #[cfg(test)]
            unreadable_table: Default::default(),
            #[cfg(test)]
            after_reading_table: Mutex::new(None),
        })
    }

    /// For the node that writes the collection (not a query replica, which would cut into the
    /// writer's commit in progress), before its pipeline starts: a commit cut off between its
    /// steps left a record of the documents it writes (see `commit`), and, as a rule, the
    /// plan it was applying (see [`commit_log`]). That plan is applied again whole: the
    /// commit ends as if it had not been cut off, its checkpoints included. Then each recorded
    /// document (a plan may not cover them all: an earlier commit that failed left its own)
    /// whose rows are not one whole version (see [`whole`]) goes whole, a whole one keeps its
    /// rows (less any tail past its count), and the connectors of the documents no plan
    /// covered reconcile once (they send such documents again: the commit's checkpoint may or
    /// may not have been written when it was cut off). Returns how many documents went.
    /// (Session 34's review: every recorded document went, also those the commit had finished
    /// writing, whose previous versions were committed before: a push source, which does not
    /// reconcile, lost them for good. Session 37's note: a torn one still went, its committed
    /// version with it, until commits stored their plans.)
    pub fn repair_cut_off_commit(&self) -> Result<usize, IndexError> {
        let (recorded, commits, log) = self.run(|c| {
            Box::pin(async move {
                Ok((
                    c.intents().await?,
                    c.intent_commits().await?,
                    c.commit_log().await?,
                ))
            })
        })?;
        if recorded.is_empty() {
            // A finished commit's plan (cut off just before it was cleared), or parts of one
            // never finished: whatever is left goes (one delete).
            self.run(|c| Box::pin(async move { c.clear_commit_log().await }))?;
            return Ok(0);
        }
        let unusable = |why: String| {
            // The reason may name a document (a chunk id, a key): through the log's redaction.
            tracing::warn!(
                collection = %self.where_,
                reason = %crate::guardrail::pii::for_log(&why),
                "milvus: the plan of the commit that was cut off cannot be applied: its torn \
                 documents are removed instead"
            );
            None
        };
        let plan = log.and_then(|bytes| match CommitPlan::decode(&bytes) {
            // Only with the intents of its own commit (see `CommitPlan::id`).
            Ok(plan) if commits.contains(&plan.id) => Some(plan),
            Ok(plan) => unusable(format!(
                "it is not the plan of the recorded commit ({}, not one of {commits:?})",
                plan.id
            )),
            Err(why) => unusable(why),
        });
        // Applied again over the recorded intents, which stay as they are (see
        // `CommitPlan::record`). A plan whose content Milvus refuses would otherwise keep the
        // writer from ever starting: it falls back to the removal. Any other failure (the
        // server down, not loaded, over a quota) is the server's, and fails this start: the
        // next one tries again (a review: a refusal by status fell back, and removed torn
        // documents a later start could have applied whole).
        let plan = match plan {
            Some(plan) => {
                let p = plan.clone();
                match self.run(move |c| Box::pin(async move { p.apply(&c).await })) {
                    Ok(()) => Some(plan),
                    Err(IndexError::Milvus(e))
                        if matches!(
                            *e,
                            MilvusError::InvalidRow { .. }
                                | MilvusError::Expr(_)
                                | MilvusError::Dimension { .. }
                                | MilvusError::CheckpointTooLarge { .. }
                        ) =>
                    {
                        unusable(e.to_string())
                    }
                    Err(e) => return Err(e),
                }
            }
            None => None,
        };
        let rolled_forward = plan.as_ref().map_or(0, |p| p.written.len());
        let covered: BTreeSet<&str> = plan.as_ref().map(CommitPlan::covers).unwrap_or_default();
        let mut keys = Vec::new();
        let mut trims = Vec::new();
        for k in &recorded {
            let cond = format!(
                "doc_key == {}",
                docent_milvus::expr::quote("doc key", k).map_err(MilvusError::from)?
            );
            let mut rows = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let (c, cond, a) = (self.coll.clone(), cond.clone(), after.clone());
                let page = self.run(move |_| {
                    Box::pin(async move { c.query_rows(&cond, a.as_deref(), PAGE, false).await })
                })?;
                let Some(last) = page.last() else { break };
                after = next_after(&after, last)?;
                rows.extend(page);
            }
            match whole(&rows) {
                Some(n) => trims.push((k.clone(), n)),
                None if rows.is_empty() => {}
                None => keys.push(k.clone()),
            }
        }
        let uncovered: Vec<&String> = recorded
            .iter()
            .filter(|k| !covered.contains(k.as_str()))
            .collect();
        tracing::warn!(
            collection = %self.where_,
            recorded = recorded.len(),
            applied_again = rolled_forward,
            removed = keys.len(),
            "milvus: a commit was cut off; its plan is applied again, documents left in pieces \
             are removed whole, and the connectors of documents its plan did not cover \
             reconcile once"
        );
        // The reconciliations owed are stored before the record is forgotten: a crash in
        // between repairs again, never loses them.
        let mut stored = self.checkpoints.write().unwrap_or_else(|e| e.into_inner());
        if let Some(plan) = &plan {
            stored.extend(plan.checkpoint_values());
        }
        let owed_now: BTreeSet<String> = uncovered
            .iter()
            .filter_map(|k| DocKey::parse(k))
            .map(|k| k.connector)
            .collect();
        let owed = (!owed_now.is_empty()).then(|| {
            let mut owed: BTreeSet<String> = stored
                .get(crate::ingest::OWED_KEY)
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default();
            owed.extend(owed_now);
            let v = serde_json::to_value(owed).unwrap_or_default();
            stored.insert(crate::ingest::OWED_KEY.to_string(), v.clone());
            serde_json::to_vec(&v).unwrap_or_default()
        });
        drop(stored);
        let n = keys.len();
        self.run(move |c| {
            Box::pin(async move {
                for k in &keys {
                    c.delete_document(k).await?;
                }
                for (k, n) in &trims {
                    c.delete_chunks_from(k, *n).await?;
                }
                if let Some(owed) = &owed {
                    c.put_checkpoint(crate::ingest::OWED_KEY, owed).await?;
                }
                c.clear_intents().await?;
                c.clear_commit_log().await
            })
        })?;
        // Read again on first use: the repair changed documents behind any copy.
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Table::default();
        Ok(n)
    }

    /// What committing `pending` with `checkpoints` does (see [`CommitPlan`]), against the
    /// document table as this process knows it.
    fn plan(
        &self,
        pending: &BTreeMap<String, Option<Written>>,
        checkpoints: &BTreeMap<String, Value>,
    ) -> CommitPlan {
        let before: HashMap<&String, u32> = {
            let t = self.table.read().unwrap_or_else(|e| e.into_inner());
            // Unknown only when the table could not be read: then trim to be sure.
            let unknown = if t.loaded.is_some() { 0 } else { u32::MAX };
            pending
                .keys()
                .map(|k| (k, t.docs.get(k).map_or(unknown, |e| e.chunks)))
                .collect()
        };
        // Every document's first chunk last: it carries the version and ACL the document table
        // reads, so a commit cut off between the upsert's batches leaves the old first chunk
        // (the replay writes the document again), never a new one over old chunks.
        let (firsts, rest): (Vec<ChunkRow>, Vec<ChunkRow>) = pending
            .values()
            .flatten()
            .flat_map(|w| w.rows.iter().cloned())
            .partition(|r| r.ordinal == 0);
        let rows: Vec<ChunkRow> = rest.into_iter().chain(firsts).collect();
        // (key, first ordinal to delete): all of a deleted document (whatever the table says:
        // deleting nothing is harmless, and a table that missed a write must not keep a
        // document), the tail of a shorter one.
        let trims: Vec<(String, i64)> = pending
            .iter()
            .filter_map(|(k, w)| {
                let keep = w.as_ref().map_or(0, |w| w.entry.chunks);
                (w.is_none() || before[k] > keep).then(|| (k.clone(), i64::from(keep)))
            })
            // A key no expression can carry (written before such keys were refused) cannot be
            // trimmed: said loudly, and the rest of the commit goes on rather than every later
            // commit failing on it.
            .filter(|(k, _)| match docent_milvus::expr::quote("doc key", k) {
                Ok(_) => true,
                Err(e) => {
                    // The error's text quotes the key: through the log's redaction too.
                    tracing::error!(
                        key = %crate::guardrail::pii::for_log(k),
                        error = %crate::guardrail::pii::for_log(&e.to_string()),
                        "milvus: cannot delete this document's old chunks"
                    );
                    false
                }
            })
            .collect();
        // The reconciliations owed first: a crash between two checkpoint writes may then leave
        // a connector behind its new position, owing one, never past it owing none.
        let mut encoded: Vec<(String, String)> = checkpoints
            .iter()
            .map(|(s, v)| (s.clone(), serde_json::to_string(v).unwrap_or_default()))
            .collect();
        encoded.sort_by_key(|(s, _)| s != crate::ingest::OWED_KEY);
        let written: Vec<String> = pending
            .iter()
            .filter(|(_, w)| w.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        // One id for the pending writes, however often their commit is tried (a review: a new
        // id per attempt let an attempt's plan miss the intents an earlier attempt recorded).
        let id = self
            .commit_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(commit_id)
            .clone();
        CommitPlan {
            id,
            written,
            trims,
            rows,
            checkpoints: encoded,
        }
    }

    /// Whether a test cuts off the commit's part `i`.
    #[cfg(test)]
    fn cut_off_in(&self, i: usize) -> bool {
        let mut at = self
            .cut_off_in_part
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        at.take_if(|n| *n == i).is_some()
    }

    #[cfg(not(test))]
    fn cut_off_in(&self, _: usize) -> bool {
        false
    }

    /// Stores `plan`, records its intents, applies it and forgets both: one commit (or one
    /// part of a large one). On failure the writes stay pending (the pipeline rolls back).
    /// `cut_off` (tests): it fails once its intents are recorded, as a writer cut off there.
    fn commit_part(&self, plan: CommitPlan, cut_off: bool) -> Result<(), IndexError> {
        // The plan stored first, so that a commit cut off after its record of intents is
        // applied again whole at the next open (see `commit_log`). Past the size a plan may
        // have, the last one stored is cleared instead: it must never pair with these intents.
        let log = (self.log_commits && !plan.written.is_empty()).then(|| plan.encode());
        let log = match log {
            Some(bytes) if bytes.len() > docent_milvus::COMMIT_LOG_MAX_TOTAL => {
                tracing::warn!(
                    collection = %self.where_,
                    bytes = bytes.len(),
                    documents = plan.written.len(),
                    "milvus: this document is too large to store its commit's plan first: cut \
                     off, it would be removed and its connector reconcile"
                );
                Some(None)
            }
            Some(bytes) => Some(Some(bytes)),
            None => None,
        };
        // A plan an earlier commit left (its clearing failed) goes with this one, whatever it
        // writes (a review: it held documents' text and ACLs, and could pair with later
        // intents).
        let left = self.plan_left.load(std::sync::atomic::Ordering::Acquire);
        // The documents written, recorded first and forgotten last (see `open`'s repair).
        let cleared = self.run(move |c| {
            Box::pin(async move {
                match &log {
                    Some(Some(bytes)) => c.put_commit_log(bytes).await?,
                    Some(None) => c.clear_commit_log().await?,
                    None if left => c.clear_commit_log().await?,
                    None => {}
                }
                plan.record(&c).await?;
                if cut_off {
                    return Err(MilvusError::Protocol {
                        method: "(test)",
                        reason: "cut off".into(),
                    });
                }
                plan.apply(&c).await?;
                if !plan.written.is_empty() {
                    c.clear_intents().await?;
                }
                // The commit is whole: a plan left behind pairs with no intents; the next
                // commit, or start, clears it.
                let cleared = match &log {
                    Some(Some(_)) => match c.clear_commit_log().await {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::warn!(error = %crate::guardrail::pii::for_log(&e.to_string()), "milvus: a finished commit's plan was not cleared");
                            false
                        }
                    },
                    _ => true,
                };
                Ok(cleared)
            })
        })?;
        self.plan_left
            .store(!cleared, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// `uri/collection`, for logs.
    pub fn location(&self) -> &str {
        &self.where_
    }

    /// Ends what [`Self::open_for_reindex`] began, after the last commit: the collection opens
    /// for the daemon.
    pub(crate) fn finish_reindex(&self) -> Result<(), IndexError> {
        self.run(|c| Box::pin(async move { c.delete_meta(REINDEX_MARKER).await }))
    }

    /// Keys of every document the collection holds (read from it, not this process's copy).
    pub(crate) fn document_keys(&self) -> Result<Vec<String>, IndexError> {
        let mut keys: Vec<String> = self.load_table()?.into_keys().collect();
        keys.sort();
        Ok(keys)
    }

    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(
            ChunkCollection,
        )
            -> std::pin::Pin<Box<dyn Future<Output = Result<T, MilvusError>> + Send>>,
    ) -> Result<T, IndexError> {
        let rt = &*self.rt;
        run(rt, f(self.coll.clone()))
    }

    /// Reads the document table when this process has none, or a query node's is stale.
    fn refresh_table(&self) {
        let current = || {
            let t = self.table.read().unwrap_or_else(|e| e.into_inner());
            let writer = self.writer.load(std::sync::atomic::Ordering::Acquire);
            t.loaded
                .is_some_and(|at| writer || at.elapsed() < TABLE_TTL)
        };
        if current() {
            return;
        }
        let _one = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        if current() {
            return;
        }
        self.table
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .committed_during_load = Some(HashMap::new());
        let loaded = self.load_table();
        #[cfg(test)]
        if let Some(f) = self
            .after_reading_table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            f();
        }
        let mut t = self.table.write().unwrap_or_else(|e| e.into_inner());
        let since = t.committed_during_load.take().unwrap_or_default();
        match loaded {
            Ok(mut docs) => {
                for (k, e) in since {
                    match e {
                        Some(e) => docs.insert(k, e),
                        None => docs.remove(&k),
                    };
                }
                t.docs = docs;
                t.loaded = Some(Instant::now());
            }
            // Callers see what they had (or nothing) and the next call tries again. While
            // nothing was ever read, `knows_every_document` says so: the pipeline then deletes
            // and withdraws without asking the table.
            Err(e) => {
                tracing::warn!(error = %crate::guardrail::pii::for_log(&e.to_string()), "milvus: cannot read the document table")
            }
        }
    }

    fn load_table(&self) -> Result<HashMap<String, DocEntry>, IndexError> {
        #[cfg(test)]
        if self
            .unreadable_table
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(IndexError::Payload {
                path: self.where_.clone().into(),
                message: "the document table is unreadable (test)".into(),
            });
        }
        let mut docs = HashMap::new();
        let rt = &*self.rt;
        each_first_row(rt, &self.coll, &mut |row| {
            docs.insert(row.doc_key.clone(), entry_of(row));
        })?;
        Ok(docs)
    }

    fn with_table<R>(&self, f: impl FnOnce(&HashMap<String, DocEntry>) -> R) -> R {
        self.refresh_table();
        f(&self.table.read().unwrap_or_else(|e| e.into_inner()).docs)
    }
}

/// Hands `each` the first chunk of every document (each carries its document's entry), page
/// by page (one page held at a time), without its text ([`ChunkCollection::query_entries`]:
/// the key, ACL, ordinal and `meta` only).
fn each_first_row(
    rt: &tokio::runtime::Runtime,
    coll: &ChunkCollection,
    each: &mut dyn FnMut(&ChunkRow),
) -> Result<(), IndexError> {
    let mut after: Option<String> = None;
    loop {
        let (c, a) = (coll.clone(), after.clone());
        // Keys, ACLs and `meta` only: no node needs every document's text to know its entry.
        let page = run(rt, async move {
            c.query_entries("ordinal == 0", a.as_deref(), PAGE).await
        })?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = next_after(&after, last)?;
        page.iter().for_each(&mut *each);
    }
}

/// Where the page after one ending at `last` starts: past `after`, else the server is not
/// paging (a page that does not move past the last one would loop without end).
fn next_after(after: &Option<String>, last: &ChunkRow) -> Result<Option<String>, IndexError> {
    if after
        .as_deref()
        .is_some_and(|a| last.chunk_id.as_str() <= a)
    {
        return Err(MilvusError::Protocol {
            method: "Query",
            reason: "a page of rows did not move past the previous one".into(),
        }
        .into());
    }
    Ok(Some(last.chunk_id.clone()))
}

/// A document's entry from one of its rows (every row carries it in `meta`).
fn entry_of(row: &ChunkRow) -> DocEntry {
    let acl = acl_of(row);
    let m = &row.meta;
    DocEntry {
        version: m["v"].as_str().unwrap_or_default().to_string(),
        acl_fingerprint: crate::index::read_back_fingerprint(
            &acl,
            row.deny.iter().map(String::as_str),
        ),
        acl,
        content_hash: m["h"].as_str().unwrap_or_default().to_string(),
        chunks: m["n"].as_u64().unwrap_or(0) as u32,
    }
}

fn acl_of(row: &ChunkRow) -> Acl {
    crate::index::stored_acl(
        row.allow.iter().map(String::as_str),
        row.deny.iter().map(String::as_str),
    )
}

/// Whether every row of `doc` fits the collection ([`docent_milvus::fits`]).
fn check_rows(doc: &DocumentRecord) -> Result<(), String> {
    rows_of(doc).iter().try_for_each(docent_milvus::fits)
}

fn rows_of(doc: &DocumentRecord) -> Vec<ChunkRow> {
    let key = doc.key.to_string();
    let n = doc.chunks.len();
    doc.chunks
        .iter()
        .map(|c| ChunkRow {
            chunk_id: format!("{key}#{}", c.ord),
            doc_key: key.clone(),
            source: doc.key.connector.clone(),
            uri: doc.uri.clone(),
            title: doc.title.clone(),
            heading: c.heading_path.join(" > "),
            text: c.text.clone(),
            dense: c.vector.clone(),
            allow: doc.acl.allow.iter().map(Principal::token).collect(),
            // With each entry's folded form, which the scope's folded principals find.
            deny: doc.acl.stored_deny().iter().map(Principal::token).collect(),
            attributes: doc.attributes.clone(),
            ordinal: i64::from(c.ord),
            span: c.span.start as i64..c.span.end as i64,
            meta: json!({
                "v": doc.version,
                "h": doc.content_hash,
                "n": n,
                "m": doc.modified_at,
                "ch": c.hash,
                "p": c.page,
                "hp": c.heading_path,
            }),
        })
        .collect()
}

fn scope_of(scope: &AclScope) -> docent_milvus::Scope {
    docent_milvus::Scope {
        principals: scope.principals().map(str::to_string).collect(),
        deny_principals: scope.deny_principals().map(str::to_string).collect(),
        strict_deny: scope.strict_deny(),
    }
}

fn attr_of(f: &AttrFilter) -> docent_milvus::AttrFilter {
    use docent_milvus::AttrFilter as M;
    match f {
        AttrFilter::Equals { key, value } => M::Equals {
            key: key.clone(),
            value: value.clone(),
        },
        AttrFilter::In { key, values } => M::In {
            key: key.clone(),
            values: values.clone(),
        },
        AttrFilter::Range { key, gte, lte } => M::Range {
            key: key.clone(),
            gte: gte.clone(),
            lte: lte.clone(),
        },
        AttrFilter::Prefix { key, prefix } => M::Prefix {
            key: key.clone(),
            prefix: prefix.clone(),
        },
        AttrFilter::And(fs) => M::And(fs.iter().map(attr_of).collect()),
        AttrFilter::Or(fs) => M::Or(fs.iter().map(attr_of).collect()),
        AttrFilter::Not(f) => M::Not(Box::new(attr_of(f))),
    }
}

fn filter_of(f: &SearchFilter) -> docent_milvus::Filter {
    docent_milvus::Filter {
        sources: f.sources.clone(),
        uri_prefix: f.uri_prefix.clone(),
        attributes: f.attributes.as_ref().map(attr_of),
    }
}

impl Backend for MilvusBackend {
    fn in_process(&self) -> bool {
        false
    }

    fn dim(&self) -> usize {
        self.model.dim
    }

    fn snapshot(&self) -> Box<dyn IndexSnapshot + '_> {
        Box::new(MilvusSnapshot {
            backend: self,
            seen: Mutex::new(Seen::default()),
        })
    }

    /// As of the last attempt to read the table: callers ask `latest_entry` first, which
    /// makes one (a second here would wait on an unreachable server twice).
    fn knows_every_document(&self) -> bool {
        self.table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .loaded
            .is_some()
    }

    fn check(&self, doc: &DocumentRecord) -> Result<(), String> {
        check_rows(doc)
    }

    fn upsert(&self, doc: DocumentRecord) -> Result<(), IndexError> {
        let rows = rows_of(&doc);
        let entry = DocEntry {
            version: doc.version.clone(),
            acl_fingerprint: doc.acl.fingerprint(),
            acl: doc.acl.clone(),
            content_hash: doc.content_hash.clone(),
            chunks: doc.chunks.len() as u32,
        };
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(doc.key.to_string(), Some(Written { entry, rows }));
        Ok(())
    }

    fn delete(&self, key: &DocKey) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), None);
    }

    fn commit(&self, checkpoints: BTreeMap<String, Value>) -> Result<(), IndexError> {
        if let Some(lease) = &self.lease {
            lease.check(&self.rt, &self.coll, &self.where_)?;
        }
        // The table first (outside the pending lock): what each written document held before
        // decides whether a shorter version leaves chunks to delete.
        self.refresh_table();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let plan = self.plan(&pending, &checkpoints);
        let mut merged = self.checkpoints().clone();
        merged.extend(checkpoints);
        // A commit too large to store as one plan goes as several, by document, each a commit
        // of its own, the checkpoints with the last (`CommitPlan::split`).
        let parts = if self.log_commits {
            let mut groups = self.part_groups.lock().unwrap_or_else(|e| e.into_inner());
            let target = self.plan_target.load(std::sync::atomic::Ordering::Relaxed);
            let (parts, new) = plan.split(target, &groups);
            groups.extend(new);
            parts
        } else {
            vec![plan]
        };
        for (i, part) in parts.into_iter().enumerate() {
            let keys: Vec<String> = part
                .written
                .iter()
                .cloned()
                .chain(part.trims.iter().map(|(k, _)| k.clone()))
                .collect();
            // Before each part, not only the first: a commit in parts outlasts a beat.
            if i > 0
                && let Some(lease) = &self.lease
            {
                lease.check(&self.rt, &self.coll, &self.where_)?;
            }
            self.commit_part(part, self.cut_off_in(i))?;
            // Its documents are committed: known as such, and no longer pending (a later part
            // that fails leaves only its own and the next ones to write again).
            let mut t = self.table.write().unwrap_or_else(|e| e.into_inner());
            for k in keys {
                if let Some(w) = pending.remove(&k) {
                    t.install(k, w.map(|w| w.entry));
                }
            }
        }
        // The next pending writes are another commit.
        *self.commit_id.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.part_groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        {
            // What no part named (a deletion whose key no expression can carry).
            let mut t = self.table.write().unwrap_or_else(|e| e.into_inner());
            for (k, w) in std::mem::take(&mut *pending) {
                t.install(k, w.map(|w| w.entry));
            }
        }
        self.writer
            .store(true, std::sync::atomic::Ordering::Release);
        *self.checkpoints.write().unwrap_or_else(|e| e.into_inner()) = merged;
        self.last_commit
            .store(super::unix_now(), std::sync::atomic::Ordering::Release);
        Ok(())
    }

    fn rollback(&self) -> Result<(), IndexError> {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        *self.commit_id.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.part_groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        Ok(())
    }

    fn checkpoints(&self) -> BTreeMap<String, Value> {
        self.checkpoints
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn checkpoint_of(&self, connector: &str) -> Option<Value> {
        self.checkpoints
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(connector)
            .cloned()
    }

    /// Always from Milvus: the ACL recheck on every replica sees the current ACL. A failure
    /// reads as "no such document", so the recheck fails closed.
    fn doc_entry(&self, key: &str) -> Option<DocEntry> {
        let cond = match docent_milvus::expr::quote("doc key", key) {
            Ok(q) => format!("doc_key == {q} and ordinal == 0"),
            Err(_) => return None,
        };
        match self.run(move |c| Box::pin(async move { c.query_entries(&cond, None, 1).await })) {
            Ok(rows) => rows.first().map(entry_of),
            Err(e) => {
                tracing::warn!(error = %crate::guardrail::pii::for_log(&e.to_string()), "milvus: document entry unavailable");
                None
            }
        }
    }

    fn latest_entry(&self, key: &str) -> Option<DocEntry> {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = pending.get(key) {
            return w.as_ref().map(|w| w.entry.clone());
        }
        drop(pending);
        self.with_table(|t| t.get(key).cloned())
    }

    fn chunk_vectors(&self, key: &DocKey) -> Result<HashMap<String, Vec<f32>>, IndexError> {
        let cond = format!(
            "doc_key == {}",
            docent_milvus::expr::quote("doc key", &key.to_string()).map_err(MilvusError::from)?
        );
        let rows = self
            .run(move |c| Box::pin(async move { c.query_rows(&cond, None, 16_384, true).await }))?;
        Ok(rows
            .into_iter()
            .filter_map(|r| Some((r.meta["ch"].as_str()?.to_string(), r.dense)))
            .collect())
    }

    fn document_count(&self) -> usize {
        self.with_table(HashMap::len)
    }

    fn documents_by_source(&self) -> HashMap<String, u64> {
        self.with_table(|t| {
            let mut out = HashMap::new();
            for k in t.keys() {
                if let Some(dk) = DocKey::parse(k) {
                    *out.entry(dk.connector).or_insert(0) += 1;
                }
            }
            out
        })
    }

    fn stats(&self) -> IndexStats {
        let (documents, chunks) = self.with_table(|t| {
            (
                t.len() as u64,
                t.values().map(|e| u64::from(e.chunks)).sum::<u64>(),
            )
        });
        IndexStats {
            documents,
            chunks,
            segments: 0,
            model_id: self.model.model_id.clone(),
            dim: self.model.dim,
            disk_bytes: 0,
            last_commit: self.last_commit.load(std::sync::atomic::Ordering::Acquire),
        }
    }
}

impl IndexedState for MilvusBackend {
    fn get(&self, key: &DocKey) -> Option<IndexedDoc> {
        self.latest_entry(&key.to_string()).map(|e| IndexedDoc {
            version: e.version,
            acl_fingerprint: e.acl_fingerprint,
        })
    }

    fn native_ids(&self, connector: &str) -> Vec<String> {
        let prefix = format!("{connector}:");
        self.refresh_table();
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let t = self.table.read().unwrap_or_else(|e| e.into_inner());
        let committed = t.docs.keys().filter(|k| !pending.contains_key(*k));
        let written = pending.iter().filter(|(_, w)| w.is_some()).map(|(k, _)| k);
        committed
            .chain(written)
            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }
}

/// The rows one query's searches returned, by the addresses handed out for them. Searches of
/// one snapshot hand the same chunk the same address, so fusion sees one candidate.
#[derive(Default)]
struct Seen {
    rows: Vec<ChunkRow>,
    by_id: HashMap<String, u64>,
    docs: HashMap<String, u64>,
}

impl Seen {
    fn add(&mut self, hits: Vec<(f32, ChunkRow)>) -> Vec<Scored> {
        hits.into_iter()
            .map(|(score, row)| {
                let next = self.rows.len() as u64;
                let addr = *self.by_id.entry(row.chunk_id.clone()).or_insert(next);
                if addr == next {
                    self.rows.push(row);
                }
                Scored {
                    addr: ChunkAddr(addr),
                    score,
                }
            })
            .collect()
    }
}

struct MilvusSnapshot<'a> {
    backend: &'a MilvusBackend,
    seen: Mutex<Seen>,
}

impl MilvusSnapshot<'_> {
    /// This snapshot's addresses for a search's rows (one per chunk across both legs).
    fn addressed(&self, hits: Vec<(f32, ChunkRow)>) -> Vec<Scored> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(hits)
    }

    fn row<R>(&self, addr: ChunkAddr, f: impl FnOnce(&ChunkRow) -> R) -> Result<R, IndexError> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let row = seen
            .rows
            .get(addr.0 as usize)
            .ok_or_else(|| IndexError::Payload {
                path: PathBuf::from(&self.backend.where_),
                message: format!(
                    "chunk address {} was not handed out by this snapshot",
                    addr.0
                ),
            })?;
        Ok(f(row))
    }
}

/// The rows of a leg whose own ACL the scope permits. The server's filter admitted them all,
/// but a row written before deny entries were stored with their folded forms (`user:Bob`
/// without `user:bob`) is admitted for the caller it denies: dropped here, it takes no part in
/// fusion, normalisation or reranking (a review; the recheck dropped only the row itself). The
/// embedded index writes such rows again at open; here they wait for their source.
fn permitted(scope: &AclScope, hits: Vec<(f32, ChunkRow)>) -> Vec<(f32, ChunkRow)> {
    hits.into_iter()
        .filter(|(_, row)| scope.permits(&acl_of(row)))
        .collect()
}

impl IndexSnapshot for MilvusSnapshot<'_> {
    /// BM25 over the chunk text (the engine's analyzer; `boosts` do not apply: Milvus scores
    /// one text field), restricted to the scope and filter inside the search.
    fn bm25(
        &self,
        scope: &AclScope,
        filter: &SearchFilter,
        query: &str,
        depth: usize,
        _boosts: (f32, f32),
    ) -> Result<Vec<Scored>, IndexError> {
        if query.trim().is_empty() || depth == 0 {
            return Ok(Vec::new());
        }
        let (s, f, q) = (scope_of(scope), filter_of(filter), query.to_string());
        let hits = self.backend.run(move |c| {
            Box::pin(async move { c.bm25_search_rows(&q, &s, Some(&f), depth).await })
        })?;
        Ok(self.addressed(permitted(scope, hits)))
    }

    fn dense(
        &self,
        scope: &AclScope,
        filter: &SearchFilter,
        query: &[f32],
        depth: usize,
    ) -> Result<Vec<Scored>, IndexError> {
        if depth == 0 {
            return Ok(Vec::new());
        }
        let (s, f, q) = (scope_of(scope), filter_of(filter), query.to_vec());
        let hits = self.backend.run(move |c| {
            Box::pin(async move { c.dense_search_rows(&q, &s, Some(&f), depth).await })
        })?;
        Ok(self.addressed(permitted(scope, hits)))
    }

    fn doc_ids(&self, hits: &[Scored]) -> Result<Vec<u64>, IndexError> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let seen = &mut *seen;
        hits.iter()
            .map(|h| {
                let key = seen
                    .rows
                    .get(h.addr.0 as usize)
                    .map(|r| r.doc_key.clone())
                    .ok_or_else(|| IndexError::Payload {
                        path: PathBuf::from(&self.backend.where_),
                        message: format!("chunk address {} unknown", h.addr.0),
                    })?;
                let next = seen.docs.len() as u64;
                Ok(*seen.docs.entry(key).or_insert(next))
            })
            .collect()
    }

    fn chunk(&self, addr: ChunkAddr) -> Result<StoredChunk, IndexError> {
        self.row(addr, |r| StoredChunk {
            chunk_id: r.chunk_id.clone(),
            doc_key: r.doc_key.clone(),
            source: r.source.clone(),
            title: r.title.clone(),
            uri: r.uri.clone(),
            text: r.text.clone(),
            span: r.span.start.max(0) as usize..r.span.end.max(0) as usize,
            heading_path: r.meta["hp"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|h| Some(h.as_str()?.to_string()))
                        .collect()
                })
                .unwrap_or_default(),
            page: r.meta["p"].as_u64().map(|p| p as u32),
            acl: acl_of(r),
            attributes: r.attributes.clone(),
        })
    }

    fn vector(&self, addr: ChunkAddr) -> Result<Option<Vec<f32>>, IndexError> {
        self.row(addr, |r| (!r.dense.is_empty()).then(|| r.dense.clone()))
    }

    /// Uniform: Milvus does not expose its term statistics (see the module note).
    fn idf(&self, _scope: &AclScope, tokens: &[String]) -> Result<Vec<f32>, IndexError> {
        Ok(vec![1.0; tokens.len()])
    }

    fn analyze(&self, text: &str) -> Vec<String> {
        schema::analyze(&self.backend.analysis, text)
    }

    fn matching_analyzer(&self, terms: &[&str]) -> Analyzer {
        Analyzer(schema::MatchingAnalyzer::new(terms.iter().copied()))
    }
}

/// A fresh collection on this test binary's Milvus Lite, for tests of the layers above.
#[cfg(test)]
pub(crate) fn test_backend(model_id: &str, dim: usize) -> std::sync::Arc<dyn Backend> {
    std::sync::Arc::new(
        MilvusBackend::open(&tests::fresh("t"), &ModelSignature::plain(model_id, dim))
            .expect("open on milvus lite"),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn config(collection: String) -> MilvusConfig {
        MilvusConfig {
            uri: docent_milvus::lite::shared_server(&std::env::temp_dir()).to_string(),
            collection,
            token: Some("root:Milvus".into()),
            database: String::new(),
            ca_file: None,
            server_name: None,
            timeout: Duration::from_secs(60),
        }
    }

    pub(super) fn fresh(prefix: &str) -> MilvusConfig {
        static N: AtomicUsize = AtomicUsize::new(0);
        config(format!(
            "{prefix}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// A review: nothing stopped two nodes writing one collection (two replicas of a default
    /// config), and a commit of one could put back an ACL the other had narrowed.
    #[test]
    fn one_node_writes_a_collection_and_a_crashed_writer_is_taken_over() {
        // (The takeover waits three beats and one request timeout.)
        let cfg = MilvusConfig {
            timeout: Duration::from_secs(2),
            ..fresh("lease")
        };
        let model = ModelSignature::plain("test-bag-of-words", 8);
        let beat = Duration::from_millis(200);
        let open = |node: &str, opening| {
            MilvusBackend::open_as_node(&cfg, &model, opening, node.into(), beat)
        };
        let mut a = open("a", Opening::Writer).unwrap();
        match open("b", Opening::Writer) {
            Err(IndexError::AnotherWriter { node, .. }) => assert_eq!(node, "a"),
            other => panic!("a second writer opened: {:?}", other.err()),
        }
        // Query nodes do not write.
        assert!(open("q", Opening::Query).is_ok());
        // A crash: `a`'s heartbeat stops and its row stays (no clean release).
        a.lease = None;
        drop(a);
        let b = open("b", Opening::Writer).expect("the stopped writer is taken over");
        b.upsert(one_chunk(8, BTreeMap::new())).unwrap();
        b.commit(BTreeMap::new()).unwrap();
        // Another node took the row meanwhile (two starting at once): `b` commits no more.
        let c = b.coll.clone();
        let row = serde_json::to_vec(&LeaseRow {
            node: "c".into(),
            beat: 0,
        })
        .unwrap();
        run(&b.rt, async move { c.put_meta(WRITER_LEASE, &row).await }).unwrap();
        b.upsert(one_chunk(8, BTreeMap::new())).unwrap();
        let e = b.commit(BTreeMap::new()).unwrap_err();
        assert!(matches!(e, IndexError::TakenOver { .. }), "{e}");
        assert!(e.writer_lost());
        // A row this release cannot read (a later one's) is another node's, never free.
        assert_eq!(row_owner(None), None);
        assert_eq!(
            row_owner(Some(b"{\"v\":2}")).as_deref(),
            Some(UNREADABLE_OWNER)
        );
        assert_eq!(
            row_owner(Some(br#"{"node":"a","beat":3}"#)).as_deref(),
            Some("a")
        );
    }

    /// A review: `docent reindex` did not check that the old collection's ingest node was
    /// stopped until it had read the whole collection, and a node started meanwhile wrote
    /// what the copy may miss. It holds the collection's writer lease for its run.
    #[test]
    fn a_reindex_holds_the_old_collections_writer_lease() {
        let cfg = MilvusConfig {
            timeout: Duration::from_secs(2),
            ..fresh("reindex-lease")
        };
        let model = ModelSignature::plain("test-bag-of-words", 8);
        let beat = Duration::from_millis(200);
        let writer = |node: &str| {
            MilvusBackend::open_as_node(&cfg, &model, Opening::Writer, node.into(), beat)
        };
        let reindex = || MilvusExport::open_holding(&cfg, Some(("reindex".into(), beat)));
        let ingest = writer("ingest").unwrap();
        ingest.upsert(one_chunk(8, BTreeMap::new())).unwrap();
        ingest.commit(BTreeMap::new()).unwrap();
        match reindex() {
            Err(IndexError::AnotherWriter { node, .. }) => assert_eq!(node, "ingest"),
            other => panic!("read while its ingest node runs: {:?}", other.err()),
        }
        // A plain export (tests, checks) takes no lease.
        assert!(MilvusExport::open(&cfg).is_ok());
        // Stopped, the node lets the re-embedding in, and cannot start again until it ends.
        drop(ingest);
        let export = reindex().expect("the ingest node is stopped");
        assert_eq!(export.document_keys().len(), 1);
        match writer("ingest") {
            Err(IndexError::AnotherWriter { node, .. }) => assert_eq!(node, "reindex"),
            other => panic!(
                "an ingest node started during the re-embedding: {:?}",
                other.err()
            ),
        }
        assert!(!export.changed_since_open().unwrap());
        drop(export);
        assert!(
            writer("ingest").is_ok(),
            "the lease is given back at the end"
        );
        // Under a writer of its own process (the tests' case), the re-embedding runs under
        // that writer's lease and leaves its row in place (a review: it removed it).
        let own = writer("reindex").unwrap();
        drop(reindex().expect("under this process's own lease"));
        let c = own.coll.clone();
        let row = run(&own.rt, async move { c.get_meta(WRITER_LEASE).await }).unwrap();
        assert_eq!(row_owner(row.as_deref()).as_deref(), Some("reindex"));
    }

    /// A fresh collection (short timeout and heartbeat) with one document, committed by an
    /// ingest node that has stopped: its config, model and beat.
    fn one_document_written(prefix: &str) -> (MilvusConfig, ModelSignature, Duration) {
        let cfg = MilvusConfig {
            timeout: Duration::from_secs(2),
            ..fresh(prefix)
        };
        let model = ModelSignature::plain("test-bag-of-words", 8);
        let beat = Duration::from_millis(200);
        let ingest =
            MilvusBackend::open_as_node(&cfg, &model, Opening::Writer, "ingest".into(), beat)
                .unwrap();
        ingest.upsert(one_chunk(8, BTreeMap::new())).unwrap();
        ingest.commit(BTreeMap::new()).unwrap();
        (cfg, model, beat)
    }

    /// A review: an export owned its runtime, and dropping a runtime blocks, which panics
    /// inside another runtime. A re-embedding's export dropped in async code winds down, and
    /// gives the writer lease back.
    #[test]
    fn an_export_dropped_in_async_code_gives_its_lease_back() {
        let (cfg, model, beat) = one_document_written("export-drop");
        let writer = |node: &str| {
            MilvusBackend::open_as_node(&cfg, &model, Opening::Writer, node.into(), beat)
        };
        let export = MilvusExport::open_holding(&cfg, Some(("reindex".into(), beat))).unwrap();
        assert_eq!(export.document_keys().len(), 1);
        let outer = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        outer.block_on(async move { drop(export) });
        assert!(writer("ingest").is_ok(), "the lease is given back");
    }

    /// A re-embedding whose old collection an ingest node took over stops its scan at the next
    /// page, instead of reading the whole collection before it refuses to finish.
    #[test]
    fn an_export_whose_lease_is_taken_over_stops_its_scan() {
        let (cfg, _, beat) = one_document_written("export-taken");
        let export = MilvusExport::open_holding(&cfg, Some(("reindex".into(), beat))).unwrap();
        let mut handed = 0;
        let mut count = |_| {
            handed += 1;
            Ok(())
        };
        assert_eq!(export.each_document(false, &mut count).unwrap(), 0);
        assert_eq!(handed, 1);
        // Another node writes the lease row (a takeover); the export's heartbeat sees it.
        let row = serde_json::to_vec(&LeaseRow {
            node: "ingest".into(),
            beat: 0,
        })
        .unwrap();
        let c = export.coll.clone();
        run(
            &export.rt,
            async move { c.put_meta(WRITER_LEASE, &row).await },
        )
        .unwrap();
        let t = std::time::Instant::now();
        while !export.lease.as_ref().is_some_and(Lease::lost) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the heartbeat did not see the takeover"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut handed = 0;
        let mut count = |_| {
            handed += 1;
            Ok(())
        };
        match export.each_document(false, &mut count) {
            Err(IndexError::TakenOver { .. }) => {}
            other => panic!("scanned after a takeover: {other:?}"),
        }
        assert_eq!(handed, 0);
    }

    /// A review: every node's table of documents (and each recheck of a hit's document) read
    /// each document's first chunk whole, text included; they read its key, ACL and `meta`.
    #[test]
    fn the_document_table_and_entries_are_read_without_the_text() {
        let b = MilvusBackend::open(
            &fresh("lean"),
            &ModelSignature::plain("test-bag-of-words", 8),
        )
        .unwrap();
        let doc = one_chunk(8, BTreeMap::new());
        let key = doc.key.to_string();
        b.upsert(doc).unwrap();
        b.commit(BTreeMap::new()).unwrap();
        let mut seen = Vec::new();
        each_first_row(&b.rt, &b.coll, &mut |r| seen.push(r.clone())).unwrap();
        assert_eq!(seen.len(), 1);
        let r = &seen[0];
        assert_eq!(
            (r.text.as_str(), r.title.as_str(), r.uri.as_str()),
            ("", "", "")
        );
        assert_eq!(
            (r.doc_key.as_str(), entry_of(r).version.as_str()),
            (key.as_str(), "1")
        );
        let entry = b.doc_entry(&key).expect("its entry");
        assert!(
            entry
                .acl
                .allow
                .contains(&docent_connector_api::Principal::Everyone)
        );
        assert_eq!(entry.chunks, 1);
    }

    /// Document `c:p.md`, readable by everyone, of one chunk ("heron") with a `dim` vector.
    fn one_chunk(dim: usize, attributes: BTreeMap<String, String>) -> DocumentRecord {
        use docent_connector_api::{Acl, DocKey, Principal};
        DocumentRecord {
            key: DocKey::new("c", "p.md"),
            uri: "file:///p.md".into(),
            title: "p".into(),
            version: "1".into(),
            modified_at: None,
            attributes,
            acl: Acl::new([Principal::Everyone], []),
            content_hash: "h".into(),
            chunks: vec![crate::index::ChunkRecord {
                ord: 0,
                span: 0..5,
                page: None,
                heading_path: Vec::new(),
                text: "heron".into(),
                hash: "h0".into(),
                vector: vec![0.125; dim],
            }],
        }
    }

    /// A document of two chunks with everything a document carries (a deny entry, attributes,
    /// pages, heading paths, a modification time), vectors of the old model.
    fn full_doc(i: usize) -> DocumentRecord {
        use docent_connector_api::{Acl, DocKey, Principal};
        let key = format!("d{i:03}");
        DocumentRecord {
            key: DocKey::new("t", &key),
            uri: format!("file:///{key}.md"),
            title: format!("Page {i}"),
            version: "v1".into(),
            modified_at: Some(1_700_000_000 + i as i64),
            attributes: BTreeMap::from([("team".to_string(), format!("t{}", i % 3))]),
            acl: Acl::new([Principal::group("hr")], [Principal::user("bob")]),
            content_hash: format!("h{i}"),
            chunks: ["vacation days", "travel policy"]
                .iter()
                .enumerate()
                .map(|(o, t)| crate::index::ChunkRecord {
                    ord: o as u32,
                    span: o * 20..o * 20 + t.len(),
                    page: Some(o as u32 + 1),
                    heading_path: vec!["Policies".into(), format!("Part {o}")],
                    text: t.to_string(),
                    hash: format!("{key}-{o}"),
                    vector: vec![0.125; 64],
                })
                .collect(),
        }
    }

    /// A re-embedding does not finish over an old collection that changed while it read it (its
    /// ingest node running): a delete committed meanwhile would be missing from the new one.
    /// The next run, with the node stopped, completes it without the deleted document.
    #[test]
    fn a_re_embedding_does_not_finish_when_the_old_collection_changed_during_it() {
        use crate::embed::test_embedder::BagOfWords;
        use crate::ingest::reembed::{ReembedError, reembed_milvus_committing};
        let (from, to) = (fresh("chold"), fresh("chnew"));
        let old = MilvusBackend::open(&from, &ModelSignature::plain("old-model", 64)).unwrap();
        for i in 0..3 {
            old.upsert(full_doc(i)).unwrap();
        }
        old.commit(BTreeMap::new()).unwrap();
        let key = full_doc(0).key;
        let mut deleted = false;
        let e = reembed_milvus_committing(
            &from,
            &to,
            &BagOfWords,
            None,
            &mut |_, _| {
                if !deleted {
                    old.delete(&key);
                    old.commit(BTreeMap::new()).unwrap();
                    deleted = true;
                }
            },
            Duration::ZERO,
        );
        assert!(
            matches!(&e, Err(ReembedError::Target { message, .. }) if message.contains("changed during the run")),
            "{:?}",
            e.err()
        );
        reembed_milvus_committing(
            &from,
            &to,
            &BagOfWords,
            None,
            &mut |_, _| {},
            Duration::ZERO,
        )
        .unwrap();
        let new = MilvusBackend::open(&to, &ModelSignature::of(&BagOfWords)).unwrap();
        assert!(new.doc_entry(&key.to_string()).is_none());
        assert!(new.doc_entry(&full_doc(1).key.to_string()).is_some());
    }

    /// `docent reindex` on Milvus: a collection is re-embedded into a new one, which the daemon
    /// refuses while it is being built (or after an interrupted run); the next run completes it,
    /// without what the old collection deleted since, and everything but the vectors is carried
    /// over as stored, with the checkpoints. Before, a model switch on Milvus meant crawling
    /// every source again, and push sources had to push everything again.
    #[test]
    fn a_collection_is_re_embedded_into_a_new_one_and_an_interrupted_run_completes() {
        use crate::embed::Embedder;
        use crate::embed::test_embedder::{BagOfWords, Budgeted};
        use crate::ingest::reembed::{ReembedError, reembed_milvus_committing};
        let (from, to) = (fresh("reold"), fresh("renew"));
        let old_model = ModelSignature::plain("old-model", 64);
        let old = MilvusBackend::open(&from, &old_model).unwrap();
        for i in 0..150 {
            old.upsert(full_doc(i)).unwrap();
        }
        // Two documents whose rows interleave in chunk id order: `t:big#1#0` sorts between
        // `t:big#1` and `t:big#10`.
        let mut big = full_doc(150);
        big.key = DocKey::new("t", "big");
        big.chunks = (0..12)
            .map(|o| crate::index::ChunkRecord {
                ord: o,
                hash: format!("big-{o}"),
                text: format!("part {o}"),
                ..big.chunks[0].clone()
            })
            .collect();
        let mut inner = full_doc(151);
        inner.key = DocKey::new("t", "big#1");
        old.upsert(big).unwrap();
        old.upsert(inner).unwrap();
        old.commit(BTreeMap::from([("t".to_string(), json!({"pos": 1}))]))
            .unwrap();
        // Rows no commit of this code leaves, written straight into the collection: a chunk
        // past d020's two (a tail of an older, longer version), and a document whose first
        // chunk is missing (a commit cut off).
        let mut tail = rows_of(&full_doc(20))[1].clone();
        (tail.chunk_id, tail.ordinal) = ("t:d020#5".into(), 5);
        tail.meta["n"] = json!(6);
        let mut half = full_doc(152);
        half.key = DocKey::new("t", "half");
        let half_rows: Vec<ChunkRow> = rows_of(&half)[1..].to_vec();
        old.run(move |c| {
            Box::pin(async move {
                c.upsert(&[tail]).await?;
                c.upsert(&half_rows).await
            })
        })
        .unwrap();
        // Batches of at least 256 chunks, each committed: the second fails.
        let first = Budgeted::new(260);
        let e = reembed_milvus_committing(&from, &to, &first, None, &mut |_, _| {}, Duration::ZERO);
        assert!(matches!(e, Err(ReembedError::Embed(_))), "{:?}", e.err());
        let new_model = ModelSignature::of(&BagOfWords);
        let refused = MilvusBackend::open(&to, &new_model).err();
        assert!(
            matches!(refused, Some(IndexError::Incomplete { .. })),
            "{refused:?}"
        );
        // Meanwhile the old collection loses a document the first run wrote.
        old.delete(&DocKey::new("t", "d006"));
        old.commit(BTreeMap::new()).unwrap();

        let second = Budgeted::new(usize::MAX);
        let r =
            reembed_milvus_committing(&from, &to, &second, None, &mut |_, _| {}, Duration::ZERO)
                .unwrap();
        assert_eq!(
            (r.documents, r.chunks, r.unreadable),
            (151, 298 + 14, 1),
            "{r:?}"
        );
        assert_eq!(r.from_model, old_model);

        let (was, now) = (
            MilvusExport::open(&from).unwrap(),
            MilvusExport::open(&to).unwrap(),
        );
        assert_eq!(now.payload().signature(), new_model);
        assert_eq!(now.payload().checkpoints["t"], json!({"pos": 1}));
        assert_eq!(now.document_keys(), was.document_keys());
        assert!(!now.document_keys().contains(&"t:d006".to_string()));
        let keys = was.document_keys();
        let (now_docs, was_docs) = (
            now.documents(keys, false).unwrap(),
            was.documents(keys, false).unwrap(),
        );
        assert!(now_docs.iter().all(|(_, d)| d.is_some()));
        assert_eq!(now_docs, was_docs);
        // The new model's vectors, of the text the ingest pipeline embeds.
        let d7 = now.documents(&["t:d007".to_string()], true).unwrap()[0]
            .1
            .clone()
            .unwrap();
        let want = BagOfWords
            .embed_query(&crate::ingest::embedding_input(
                "Page 7",
                &["Policies".to_string(), "Part 1".to_string()],
                "travel policy",
            ))
            .unwrap();
        assert_eq!(d7.chunks[1].vector, want);
        assert_eq!(d7, {
            let mut d = full_doc(7);
            for c in &mut d.chunks {
                c.vector = BagOfWords
                    .embed_query(&crate::ingest::embedding_input(
                        &d.title,
                        &c.heading_path,
                        &c.text,
                    ))
                    .unwrap();
            }
            d
        });
        // The daemon opens it now; the old collection is untouched.
        let opened = MilvusBackend::open(&to, &new_model).unwrap();
        assert_eq!(opened.checkpoints()["t"]["pos"], 1);
        assert!(MilvusBackend::open(&from, &old_model).is_ok());
        // A collection that holds documents is no target, nor the collection itself.
        let again = reembed_milvus_committing(
            &from,
            &to,
            &BagOfWords,
            None,
            &mut |_, _| {},
            Duration::ZERO,
        );
        assert!(
            again.is_err(),
            "a complete collection was taken as a target"
        );
        let same = reembed_milvus_committing(
            &from,
            &from,
            &BagOfWords,
            None,
            &mut |_, _| {},
            Duration::ZERO,
        );
        assert!(matches!(same, Err(ReembedError::Target { .. })));
        // A source whose ingest node stopped in the middle of a commit is not copied: its
        // half-written documents would come along without the record that repairs them.
        old.run(|c| Box::pin(async move { c.put_intents(&["t:d001".to_string()]).await }))
            .unwrap();
        let cut = MilvusExport::open(&from).err().map(|e| e.to_string());
        assert!(
            cut.as_deref()
                .is_some_and(|e| e.contains("middle of a commit")),
            "{cut:?}"
        );
    }

    #[test]
    fn the_milvus_backend_passes_the_backend_suite() {
        let model = ModelSignature::plain("suite-model", super::super::suite::DIM);
        super::super::suite::run_all(&|| {
            Arc::new(MilvusBackend::open(&fresh("suite"), &model).expect("open on milvus lite"))
        });
    }

    /// While the document table cannot be read, a delete is still carried out (found by a
    /// review: the pipeline took "not in the table" for "not indexed" and dropped it, and the
    /// deleted page stayed searchable).
    #[test]
    fn a_delete_is_carried_out_while_the_document_table_cannot_be_read() {
        use crate::ingest::{Pipeline, PipelineConfig};
        use docent_connector_api::{Change, DocKey};
        let cfg = fresh("table");
        let model = ModelSignature::plain("test-bag-of-words", 64);
        let key = DocKey::new("c", "p.md");
        let first = MilvusBackend::open(&cfg, &model).unwrap();
        first.upsert(one_chunk(64, BTreeMap::new())).unwrap();
        first.commit(BTreeMap::new()).unwrap();
        drop(first);

        let b = Arc::new(MilvusBackend::open(&cfg, &model).unwrap());
        b.unreadable_table
            .store(true, std::sync::atomic::Ordering::Relaxed);
        *b.table.write().unwrap() = Table::default();
        assert!(!b.knows_every_document());
        let p = Pipeline::new(
            b.clone(),
            Arc::new(crate::embed::test_embedder::BagOfWords),
            PipelineConfig::for_tests(),
            Arc::default(),
            Arc::default(),
        );
        let cps = p.process(vec![Change::Delete(key.clone())]).unwrap();
        b.commit(cps).unwrap();
        let after = MilvusBackend::open(&cfg, &model).unwrap();
        assert!(after.latest_entry(&key.to_string()).is_none());
    }

    /// Session 34's review: a load of the document table that read the collection before a
    /// commit and was installed after it put back the committed documents' old entries, for
    /// good (a writer never reloads): a narrowed ACL undone later then looked unchanged and
    /// was never written. What commits change while a load runs is applied over it.
    #[test]
    fn a_commit_during_a_load_of_the_document_table_is_not_lost() {
        use docent_connector_api::{Acl, DocKey, Principal};
        let model = ModelSignature::plain("test-bag-of-words", 8);
        let b = Arc::new(MilvusBackend::open(&fresh("race"), &model).unwrap());
        let key = DocKey::new("c", "p.md").to_string();
        b.upsert(one_chunk(8, BTreeMap::new())).unwrap();
        b.commit(BTreeMap::new()).unwrap();
        // The table is read again (as after its time to live); while that load runs, after it
        // read the rows, a commit (which found the table current) narrows the ACL.
        *b.table.write().unwrap() = Table::default();
        let narrowed = Acl::new([Principal::group("hr")], []);
        let (c, acl) = (b.clone(), narrowed.clone());
        *b.after_reading_table.lock().unwrap() = Some(Box::new(move || {
            c.table.write().unwrap().loaded = Some(Instant::now());
            let mut doc = one_chunk(8, BTreeMap::new());
            doc.acl = acl;
            c.upsert(doc).unwrap();
            c.commit(BTreeMap::new()).unwrap();
        }));
        b.table.write().unwrap().loaded = None;
        let entry = b.latest_entry(&key).expect("indexed");
        assert!(
            b.after_reading_table.lock().unwrap().is_none(),
            "the hook ran"
        );
        assert_eq!(entry.acl_fingerprint, narrowed.fingerprint());
    }

    /// Session 34's review: a first chunk that counted no chunks panicked the export (it took
    /// the first of no rows), and a server whose pages did not move looped without end.
    #[test]
    fn rows_that_count_no_chunks_or_pages_that_do_not_move_are_refused() {
        let mut rows = rows_of(&one_chunk(8, BTreeMap::new()));
        rows[0].meta["n"] = 0.into();
        assert!(document_of("c:p.md", rows.clone(), false).is_none());
        rows[0].meta["n"] = 1.into();
        assert!(document_of("c:p.md", rows.clone(), false).is_some());
        let last = &rows[0];
        assert_eq!(
            next_after(&None, last).unwrap().as_deref(),
            Some(last.chunk_id.as_str())
        );
        assert!(next_after(&Some(last.chunk_id.clone()), last).is_err());
        assert!(next_after(&Some("c:a".into()), last).is_ok());
    }

    /// A document whose attributes are too large for a JSON value is refused on its own,
    /// before its commit (session 30's review: only the text fields were measured, so Milvus
    /// refused the whole commit, and the pipeline retried it without end).
    #[test]
    fn a_document_with_too_large_attributes_is_refused_on_its_own() {
        let model = ModelSignature::plain("test-bag-of-words", 8);
        let b = MilvusBackend::open(&fresh("json"), &model).unwrap();
        let doc = |attributes| one_chunk(8, attributes);
        let many: BTreeMap<String, String> = (0..20)
            .map(|i| (format!("a{i}"), "x".repeat(4000)))
            .collect();
        let e = b.check(&doc(many)).unwrap_err();
        assert!(e.contains("attributes"), "{e}");
        let few = BTreeMap::from([("a".to_string(), "x".repeat(4000))]);
        b.check(&doc(few.clone())).unwrap();
        b.upsert(doc(few)).unwrap();
        b.commit(BTreeMap::new()).unwrap();
    }

    /// Session 31's review: a commit cut off between its batches left a document's new rows
    /// (with the new version's ACL) beside its old first chunk, which the document table reads;
    /// nothing ever repaired them. The commit records the documents it writes first and
    /// forgets them last, and the writer's next start repairs those documents (trims a whole
    /// one's tail, removes a torn one) and has their connector reconcile.
    #[test]
    fn a_commit_cut_off_between_its_batches_is_repaired_at_open() {
        let cfg = fresh("intent");
        let model = ModelSignature::plain("test-bag-of-words", 8);
        let key = DocKey::new("c", "p.md").to_string();
        let first = MilvusBackend::open(&cfg, &model).unwrap();
        first.upsert(one_chunk(8, BTreeMap::new())).unwrap();
        first.commit(BTreeMap::new()).unwrap();
        // The cut-off commit: its documents recorded, the new version's second chunk (readable
        // by another group) written, then nothing.
        let mut v2 = one_chunk(8, BTreeMap::new());
        v2.version = "2".into();
        v2.acl = Acl::new([Principal::group("all")], []);
        let mut second = v2.chunks[0].clone();
        second.ord = 1;
        v2.chunks.push(second);
        let rows: Vec<ChunkRow> = rows_of(&v2)
            .into_iter()
            .filter(|r| r.ordinal != 0)
            .collect();
        let k = key.clone();
        first
            .run(move |c| {
                Box::pin(async move {
                    c.put_intents(std::slice::from_ref(&k)).await?;
                    c.upsert(&rows).await
                })
            })
            .unwrap();
        drop(first);

        let b = MilvusBackend::open(&cfg, &model).unwrap();
        // Its old version is whole (its first chunk counts one): it stays, and the new
        // version's row past it (a tail, under the new ACL) goes. (Before session 34 the whole
        // document went; a torn one still does: `a_repair_keeps_a_document_the_cut_off_commit_wrote_whole`.)
        assert_eq!(b.repair_cut_off_commit().unwrap(), 0);
        assert_eq!(
            b.latest_entry(&key).map(|e| e.version).as_deref(),
            Some("1")
        );
        let cond = format!(
            "doc_key == {}",
            docent_milvus::expr::quote("k", &key).unwrap()
        );
        let left = b
            .run(move |c| Box::pin(async move { c.query_rows(&cond, None, 10, false).await }))
            .unwrap();
        assert_eq!(
            left.iter().map(|r| r.ordinal).collect::<Vec<_>>(),
            [0],
            "{left:?}"
        );
        let owed = b.checkpoints()[crate::ingest::OWED_KEY].clone();
        assert_eq!(owed, json!(["c"]));
        drop(b);
        // Repaired once: the record is gone, and the reconciliation owed is stored.
        let again = MilvusBackend::open(&cfg, &model).unwrap();
        assert_eq!(again.repair_cut_off_commit().unwrap(), 0);
        assert_eq!(again.checkpoints()[crate::ingest::OWED_KEY], json!(["c"]));
    }

    /// A row written before deny entries were stored with their folded forms (`user:Bob`
    /// alone) is admitted by the server's filter for `bob`; the legs drop it by its own ACL (a
    /// review: it took a place in fusion and reranking, and the recheck dropped only the row).
    #[test]
    fn a_row_whose_unfolded_deny_names_the_caller_leaves_the_legs() {
        use docent_connector_api::{Acl, Principal};
        let cfg = fresh("unfolded");
        let model = ModelSignature::plain("test-bag-of-words", 8);
        let b = MilvusBackend::open(&cfg, &model).unwrap();
        let mut doc = one_chunk(8, BTreeMap::new());
        doc.acl = Acl::new([Principal::Everyone], [Principal::user("Bob")]);
        let mut rows = rows_of(&doc);
        for r in &mut rows {
            r.deny.retain(|d| d == "user:Bob");
        }
        assert_eq!(rows[0].deny, ["user:Bob"]);
        b.run(move |c| Box::pin(async move { c.upsert(&rows).await }))
            .unwrap();
        let snap = b.snapshot();
        let none = SearchFilter::default();
        let carol = AclScope::for_tests("carol", &["user:carol", "everyone"]);
        let bob = AclScope::for_tests("bob", &["user:bob", "everyone"]);
        // (The premise: the server admits it for carol, whom it does not name.)
        assert_eq!(
            snap.bm25(&carol, &none, "heron", 10, (0.0, 0.0))
                .unwrap()
                .len(),
            1
        );
        assert!(
            snap.bm25(&bob, &none, "heron", 10, (0.0, 0.0))
                .unwrap()
                .is_empty()
        );
        assert!(snap.dense(&bob, &none, &[0.125; 8], 10).unwrap().is_empty());
        assert_eq!(snap.dense(&carol, &none, &[0.125; 8], 10).unwrap().len(), 1);
    }

    /// Session 34's review: the repair removed every document the cut-off commit recorded,
    /// also one it had finished writing (a crash just before it forgot its record), whose
    /// previous version had been committed long before. A whole document stays; one whose
    /// rows disagree on their ACL (an ACL-only change cut off) goes.
    #[test]
    fn a_repair_keeps_a_document_the_cut_off_commit_wrote_whole() {
        use docent_connector_api::{Acl, DocKey, Principal};
        let cfg = fresh("whole");
        let model = ModelSignature::plain("test-bag-of-words", 8);
        let first = MilvusBackend::open(&cfg, &model).unwrap();
        let two = |name: &str, acl: Acl| {
            let mut d = one_chunk(8, BTreeMap::new());
            d.key = DocKey::new("c", name);
            d.acl = acl;
            let mut second = d.chunks[0].clone();
            second.ord = 1;
            d.chunks.push(second);
            d
        };
        let everyone = || Acl::new([Principal::Everyone], []);
        first.upsert(two("kept.md", everyone())).unwrap();
        first.upsert(two("torn.md", everyone())).unwrap();
        first.commit(BTreeMap::new()).unwrap();
        // Both recorded as written by a commit that was then cut off: "kept" was written
        // whole; "torn" got only its second chunk under a narrowed ACL.
        let narrowed = two("torn.md", Acl::new([Principal::group("hr")], []));
        let torn_rows: Vec<ChunkRow> = rows_of(&narrowed)
            .into_iter()
            .filter(|r| r.ordinal == 1)
            .collect();
        let keys = vec!["c:kept.md".to_string(), "c:torn.md".to_string()];
        first
            .run(move |c| {
                Box::pin(async move {
                    c.put_intents(&keys).await?;
                    c.upsert(&torn_rows).await
                })
            })
            .unwrap();
        drop(first);
        let b = MilvusBackend::open(&cfg, &model).unwrap();
        assert_eq!(b.repair_cut_off_commit().unwrap(), 1);
        assert!(
            b.latest_entry("c:kept.md").is_some(),
            "a whole document stays"
        );
        assert!(
            b.latest_entry("c:torn.md").is_none(),
            "a torn one goes whole"
        );
        assert_eq!(b.checkpoints()[crate::ingest::OWED_KEY], json!(["c"]));
    }

    /// Session 37's note: a torn document went whole at the repair, its committed version
    /// with it, and a push source (which never sends a document again) lost it for good. A
    /// commit now stores its plan before its record of intents, and the repair applies it
    /// again: the new version is there whole, with the commit's checkpoint, and nobody owes a
    /// reconciliation for it. A document recorded by an earlier commit that the plan does not
    /// cover is still repaired the old way.
    #[test]
    fn a_commit_cut_off_in_the_middle_is_applied_again_whole_at_open() {
        use docent_connector_api::{Acl, DocKey, Principal};
        let cfg = fresh("rollforward");
        let model = ModelSignature::plain("test-bag-of-words", 8);
        let two = |key: DocKey, version: &str, acl: Acl| {
            let mut d = one_chunk(8, BTreeMap::new());
            d.key = key;
            d.version = version.into();
            d.content_hash = format!("h{version}");
            d.acl = acl;
            let mut second = d.chunks[0].clone();
            second.ord = 1;
            second.text = format!("egret {version}");
            d.chunks.push(second);
            d
        };
        let everyone = || Acl::new([Principal::Everyone], []);
        let pushed = DocKey::new("push", "memo");
        let other = DocKey::new("c", "other.md");
        let first = MilvusBackend::open(&cfg, &model).unwrap();
        first.upsert(two(pushed.clone(), "1", everyone())).unwrap();
        first.upsert(two(other.clone(), "1", everyone())).unwrap();
        first
            .commit(BTreeMap::from([("push".to_string(), json!({"seq": 1}))]))
            .unwrap();
        assert!(
            first
                .run(|c| Box::pin(async move { c.commit_log().await }))
                .unwrap()
                .is_none(),
            "a finished commit leaves no plan"
        );
        // The cut-off commit: version 2 of the pushed document, under a narrowed ACL. Its plan
        // stored, its intents recorded (with "other", left by an earlier commit that failed),
        // its second row written, then nothing: the first row still says version 1, whose
        // second row is gone.
        first
            .upsert(two(
                pushed.clone(),
                "2",
                Acl::new([Principal::group("hr")], []),
            ))
            .unwrap();
        let plan = {
            let pending = first.pending.lock().unwrap();
            first.plan(
                &pending,
                &BTreeMap::from([("push".to_string(), json!({"seq": 2}))]),
            )
        };
        let bytes = plan.encode();
        let torn: Vec<ChunkRow> = plan
            .rows
            .iter()
            .filter(|r| r.ordinal == 1)
            .cloned()
            .collect();
        let other_torn: Vec<ChunkRow> = rows_of(&two(other.clone(), "9", everyone()))
            .into_iter()
            .filter(|r| r.ordinal == 1)
            .collect();
        let (p1, p2) = (plan.clone(), plan.clone());
        let other_key = other.to_string();
        first
            .run(move |c| {
                Box::pin(async move {
                    // The earlier commit's record, and its torn row.
                    c.put_intents_of("earlier", &[other_key]).await?;
                    c.upsert(&other_torn).await?;
                    c.put_commit_log(&bytes).await?;
                    p1.record(&c).await?;
                    c.upsert(&torn).await?;
                    // A first repair, itself cut off once it had applied the plan: the
                    // record of intents must still name "other".
                    p2.apply(&c).await
                })
            })
            .unwrap();
        drop(first);

        let b = MilvusBackend::open(&cfg, &model).unwrap();
        assert_eq!(
            b.repair_cut_off_commit().unwrap(),
            1,
            "only 'other' is torn"
        );
        let entry = b
            .latest_entry(&pushed.to_string())
            .expect("the pushed document stays");
        assert_eq!(entry.version, "2");
        assert_eq!(entry.acl, Acl::new([Principal::group("hr")], []));
        let cond = format!(
            "doc_key == {}",
            docent_milvus::expr::quote("k", &pushed.to_string()).unwrap()
        );
        let mut rows = b
            .run(move |c| Box::pin(async move { c.query_rows(&cond, None, 10, false).await }))
            .unwrap();
        rows.sort_by_key(|r| r.ordinal);
        assert_eq!(whole(&rows), Some(2), "{rows:?}");
        assert_eq!(rows[1].text, "egret 2");
        assert!(
            b.latest_entry(&other.to_string()).is_none(),
            "a torn one goes whole"
        );
        let cps = b.checkpoints();
        assert_eq!(
            cps["push"],
            json!({"seq": 2}),
            "the plan's checkpoint is stored"
        );
        assert_eq!(
            cps[crate::ingest::OWED_KEY],
            json!(["c"]),
            "only the uncovered document's connector reconciles"
        );
        let (intents, log) = b
            .run(|c| Box::pin(async move { Ok((c.intents().await?, c.commit_log().await?)) }))
            .unwrap();
        assert!(
            intents.is_empty() && log.is_none(),
            "both records are cleared"
        );
        drop(b);
        // Stored, not just this process's copy.
        let again = MilvusBackend::open(&cfg, &model).unwrap();
        assert_eq!(again.repair_cut_off_commit().unwrap(), 0);
        assert_eq!(again.checkpoints()["push"], json!({"seq": 2}));
        assert_eq!(
            again
                .latest_entry(&pushed.to_string())
                .map(|e| e.version)
                .as_deref(),
            Some("2")
        );
    }

    /// Session 38's note: a commit too large to store its plan stored none, and a crash in it
    /// removed the committed versions of the documents it tore. Such a commit now goes in
    /// parts, by document, each with its plan: the parts before the one cut off are whole,
    /// the one cut off is applied again at open, the later ones keep the old versions, and the
    /// checkpoint (with the last part) is not advanced, so the connector sends them again.
    #[test]
    fn a_large_commit_goes_in_parts_and_the_part_cut_off_is_applied_again() {
        use docent_connector_api::DocKey;
        let cfg = fresh("inparts");
        let model = ModelSignature::plain("test-bag-of-words", 8);
        let doc = |name: &str, version: &str| {
            let mut d = one_chunk(8, BTreeMap::new());
            d.key = DocKey::new("c", name);
            d.version = version.into();
            d.content_hash = format!("h{version}");
            let mut second = d.chunks[0].clone();
            second.ord = 1;
            second.text = format!("egret {version}");
            d.chunks.push(second);
            d
        };
        let names = ["a.md", "b.md", "c.md"];
        let first = MilvusBackend::open(&cfg, &model).unwrap();
        // Every document a part of its own.
        first.plan_target.store(1, Ordering::Relaxed);
        for n in names {
            first.upsert(doc(n, "1")).unwrap();
        }
        first
            .commit(BTreeMap::from([("c".to_string(), json!({"n": 1}))]))
            .unwrap();
        for n in names {
            first.upsert(doc(n, "2")).unwrap();
        }
        *first.cut_off_in_part.lock().unwrap() = Some(1);
        first
            .commit(BTreeMap::from([("c".to_string(), json!({"n": 2}))]))
            .expect_err("the second part is cut off");
        assert!(
            first.pending.lock().unwrap().contains_key("c:b.md"),
            "the part cut off stays pending"
        );
        assert!(
            !first.pending.lock().unwrap().contains_key("c:a.md"),
            "a committed part is no longer pending"
        );
        drop(first);

        let b = MilvusBackend::open(&cfg, &model).unwrap();
        assert_eq!(b.repair_cut_off_commit().unwrap(), 0, "nothing is torn");
        let version = |n: &str| b.latest_entry(&format!("c:{n}")).map(|e| e.version);
        assert_eq!(
            version("a.md").as_deref(),
            Some("2"),
            "a part before: whole"
        );
        assert_eq!(
            version("b.md").as_deref(),
            Some("2"),
            "the part cut off: applied again"
        );
        assert_eq!(
            version("c.md").as_deref(),
            Some("1"),
            "a part after: the old version"
        );
        for n in names {
            let cond = format!(
                "doc_key == {}",
                docent_milvus::expr::quote("k", &format!("c:{n}")).unwrap()
            );
            let rows = b
                .run(move |c| Box::pin(async move { c.query_rows(&cond, None, 10, false).await }))
                .unwrap();
            let mut rows = rows;
            rows.sort_by_key(|r| r.ordinal);
            assert_eq!(whole(&rows), Some(2), "{n}: {rows:?}");
        }
        let cps = b.checkpoints();
        assert_eq!(
            cps["c"],
            json!({"n": 1}),
            "the checkpoint goes with the last part"
        );
        assert!(
            !cps.contains_key(crate::ingest::OWED_KEY),
            "every recorded document was covered: {cps:?}"
        );
    }

    /// Found by a review: a plan must pair only with the intents of its own commit. Intents
    /// recorded by a commit that stored no plan (an older release's, after a downgrade) beside
    /// an old plan: the plan is not applied (it would put back an older version and older
    /// checkpoints), and the torn document is removed as before.
    #[test]
    fn a_plan_is_not_applied_with_another_commits_intents() {
        use docent_connector_api::{Acl, DocKey, Principal};
        let cfg = fresh("otherplan");
        let model = ModelSignature::plain("test-bag-of-words", 8);
        let key = DocKey::new("c", "p.md");
        let first = MilvusBackend::open(&cfg, &model).unwrap();
        let mut d = one_chunk(8, BTreeMap::new());
        let mut second = d.chunks[0].clone();
        second.ord = 1;
        d.chunks.push(second);
        first.upsert(d.clone()).unwrap();
        let old_plan = {
            let pending = first.pending.lock().unwrap();
            first.plan(&pending, &BTreeMap::from([("c".to_string(), json!(1))]))
        };
        first
            .commit(BTreeMap::from([("c".to_string(), json!(2))]))
            .unwrap();
        // The older release's commit: intents without a name, a torn row, then nothing.
        let mut v3 = d.clone();
        v3.version = "3".into();
        v3.content_hash = "h3".into();
        v3.acl = Acl::new([Principal::group("hr")], []);
        let torn: Vec<ChunkRow> = rows_of(&v3)
            .into_iter()
            .filter(|r| r.ordinal == 1)
            .collect();
        let bytes = old_plan.encode();
        first
            .run(move |c| {
                Box::pin(async move {
                    c.put_commit_log(&bytes).await?;
                    c.put_intents(&["c:p.md".to_string()]).await?;
                    c.upsert(&torn).await
                })
            })
            .unwrap();
        drop(first);
        let b = MilvusBackend::open(&cfg, &model).unwrap();
        assert_eq!(b.repair_cut_off_commit().unwrap(), 1, "torn: removed");
        assert!(b.latest_entry(&key.to_string()).is_none());
        assert_eq!(
            b.checkpoints()["c"],
            json!(2),
            "not the old plan's checkpoint"
        );
        assert_eq!(b.checkpoints()[crate::ingest::OWED_KEY], json!(["c"]));
    }

    /// A review: each attempt at a commit took a new id, so an attempt's stored plan could miss
    /// the intents an earlier attempt of the same writes had recorded. The pending writes keep
    /// one id until their commit succeeds or they are rolled back.
    #[test]
    fn the_pending_writes_keep_one_commit_id_until_committed_or_rolled_back() {
        let cfg = fresh("commitid");
        let model = ModelSignature::plain("test-bag-of-words", 8);
        let b = MilvusBackend::open(&cfg, &model).unwrap();
        let id = |b: &MilvusBackend| {
            let pending = b.pending.lock().unwrap();
            b.plan(&pending, &BTreeMap::new()).id
        };
        b.upsert(one_chunk(8, BTreeMap::new())).unwrap();
        let first = id(&b);
        assert_eq!(id(&b), first, "tried again: the same commit");
        b.rollback().unwrap();
        b.upsert(one_chunk(8, BTreeMap::new())).unwrap();
        let second = id(&b);
        assert_ne!(second, first);
        b.commit(BTreeMap::new()).unwrap();
        b.upsert(one_chunk(8, BTreeMap::new())).unwrap();
        assert_ne!(id(&b), second);
    }

    /// A plan whose commit finished (cut off before it was cleared) pairs with no later
    /// record of intents: the repair clears it, and a later commit stores its own first.
    #[test]
    fn a_finished_commits_plan_is_cleared_at_open() {
        let cfg = fresh("staleplan");
        let model = ModelSignature::plain("test-bag-of-words", 8);
        let first = MilvusBackend::open(&cfg, &model).unwrap();
        first.upsert(one_chunk(8, BTreeMap::new())).unwrap();
        let plan = {
            let pending = first.pending.lock().unwrap();
            first.plan(&pending, &BTreeMap::new())
        };
        first.commit(BTreeMap::new()).unwrap();
        let bytes = plan.encode();
        first
            .run(move |c| Box::pin(async move { c.put_commit_log(&bytes).await }))
            .unwrap();
        drop(first);
        let b = MilvusBackend::open(&cfg, &model).unwrap();
        assert_eq!(b.repair_cut_off_commit().unwrap(), 0);
        assert!(
            b.run(|c| Box::pin(async move { c.commit_log().await }))
                .unwrap()
                .is_none()
        );
        assert!(!b.checkpoints().contains_key(crate::ingest::OWED_KEY));
    }

    /// Session 36's note: with the document table unreadable at start, every document looked
    /// new to the connectors, which read, parsed and embedded everything again. A connector
    /// now waits until the table can be read, its status saying why.
    #[test]
    fn until_index_known_waits_for_the_document_table() {
        use docent_connector_api::{Alarm, StatusHandle};
        let cfg = fresh("known");
        let model = ModelSignature::plain("test-bag-of-words", 8);
        let b = Arc::new(MilvusBackend::open(&cfg, &model).unwrap());
        let unreadable = |on: bool| {
            b.unreadable_table
                .store(on, std::sync::atomic::Ordering::Relaxed);
            if on {
                *b.table.write().unwrap() = Table::default();
            }
        };
        unreadable(true);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let status = StatusHandle::default();
        let wait = |token: tokio_util::sync::CancellationToken| {
            let (index, status) = (b.clone() as Arc<dyn Backend>, status.clone());
            rt.spawn(async move { crate::ingest::until_index_known(index, &status, &token).await })
        };
        let waiting = wait(Default::default());
        std::thread::sleep(Duration::from_millis(600));
        assert!(
            !waiting.is_finished(),
            "waits while the table cannot be read"
        );
        assert!(status.raised(Alarm::Outage));
        unreadable(false);
        let known = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(20), waiting).await })
            .expect("goes on once the table can be read")
            .unwrap();
        assert!(known);
        assert!(!status.raised(Alarm::Outage));
        // A shutdown ends the wait.
        unreadable(true);
        let token = tokio_util::sync::CancellationToken::new();
        let waiting = wait(token.clone());
        std::thread::sleep(Duration::from_millis(300));
        token.cancel();
        let known = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(20), waiting).await })
            .unwrap()
            .unwrap();
        assert!(!known);
        rt.shutdown_background();
    }

    #[test]
    fn a_query_node_refuses_a_collection_without_a_model_record_and_records_none() {
        let cfg = fresh("querynode");
        let model = ModelSignature::plain("m1", 8);
        let e = MilvusBackend::open_for_queries(&cfg, &model)
            .err()
            .expect("refused before the ingest node recorded a model");
        assert!(e.to_string().contains("ingest node"), "{e}");
        // It recorded nothing: another model may still be the first.
        assert!(MilvusBackend::open(&cfg, &ModelSignature::plain("m2", 8)).is_ok());
        assert!(matches!(
            MilvusBackend::open_for_queries(&cfg, &model).err(),
            Some(IndexError::CollectionModelMismatch { .. })
        ));
        assert!(MilvusBackend::open_for_queries(&cfg, &ModelSignature::plain("m2", 8)).is_ok());
    }

    #[test]
    fn a_collection_written_with_one_model_refuses_another() {
        let cfg = fresh("model");
        drop(MilvusBackend::open(&cfg, &ModelSignature::plain("m1", 8)).unwrap());
        assert!(MilvusBackend::open(&cfg, &ModelSignature::plain("m1", 8)).is_ok());
        let err = MilvusBackend::open(&cfg, &ModelSignature::plain("m2", 8))
            .err()
            .expect("another model is refused");
        assert!(
            matches!(err, IndexError::CollectionModelMismatch { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("docent reindex"), "{err}");
    }
}
