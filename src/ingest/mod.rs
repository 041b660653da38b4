//! Ingestion: connectors' changes → parse → chunk → embed → index, with commits that carry the
//! connectors' checkpoints.
//!
//! Changes arrive on one bounded channel (backpressure reaches the connectors). The pipeline
//! gathers what is ready into a batch, does the CPU work off the async runtime, embeds all new
//! chunks of the batch together, writes, and commits on a timer (`commit_interval_ms`) or on a
//! checkpoint. Invariants:
//! - a failure on one document (parse error, oversize, binary) is recorded with its id and
//!   reason and never stops the pipeline;
//! - a document that becomes unindexable (skipped, unparseable) is removed, so stale text or a
//!   stale ACL never outlives the change that invalidated it;
//! - unchanged content is never re-embedded: vectors are reused by chunk hash;
//! - changes apply in arrival order against the newest state (uncommitted writes included): a
//!   delete of a key whose upsert is not committed yet wins over that upsert.
//!
//! Must never: log document text above debug.

mod budget;
pub mod push;
pub mod reembed;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use budget::QueueBytes;
use docent_connector_api::{Change, DocKey, SourceDocument};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::chunk::{self, ChunkerConfig};
use crate::embed::Embedder;
use crate::index::{Backend, ChunkRecord, DocumentRecord, IndexError};
use crate::parse;

/// Counters since start, for admins and tests.
#[derive(Debug, Default)]
pub struct IngestStats {
    pub documents_indexed: AtomicU64,
    pub documents_deleted: AtomicU64,
    pub documents_failed: AtomicU64,
    pub chunks_embedded: AtomicU64,
    pub chunks_reused: AtomicU64,
    pub commits: AtomicU64,
    /// Commits the backend refused (each retried).
    pub commit_failures: AtomicU64,
    /// Connector id → (indexed, failed) since start.
    per_connector: Mutex<HashMap<String, (u64, u64)>>,
}

impl IngestStats {
    fn count(&self, connector: &str, indexed: u64, failed: u64) {
        let mut m = self.per_connector.lock().unwrap_or_else(|e| e.into_inner());
        let e = m.entry(connector.to_string()).or_default();
        e.0 += indexed;
        e.1 += failed;
    }

    /// (indexed, failed) since start for one connector.
    pub fn connector(&self, connector: &str) -> (u64, u64) {
        let m = self.per_connector.lock().unwrap_or_else(|e| e.into_inner());
        m.get(connector).copied().unwrap_or_default()
    }
}

/// Skipped and failed documents per connector: a total and the most recent ones.
#[derive(Debug, Default)]
pub struct SkipLog {
    inner: Mutex<HashMap<String, ConnectorSkips>>,
    /// Connectors' status handles, to attribute pipeline-side failures to their sync jobs.
    jobs: Mutex<HashMap<String, docent_connector_api::StatusHandle>>,
    /// Per connector, what to tell when the pipeline fails to index a document it sent.
    failure_hooks: Mutex<HashMap<String, FailureHook>>,
    /// Versions the pipeline gave up on for reasons not their own (see
    /// [`docent_connector_api::IndexedState::gave_up`]), at most [`GAVE_UP_KEEP`].
    gave_up: Mutex<HashMap<DocKey, GaveUp>>,
    /// Rollbacks of accepted writes (see [`docent_connector_api::IndexedState::rollbacks`]).
    rollbacks: AtomicU64,
    /// Connectors that reconcile after rollbacks (their `SentLog`s asked), with the rollback
    /// count the last reconciliation that ended had started under.
    reconciling: Mutex<HashMap<String, Option<u64>>>,
    /// Connectors that owed a reconciliation when the daemon last stopped ([`OWED_KEY`]).
    owed_at_start: Mutex<BTreeSet<String>>,
    /// Connectors whose reconciliation notice the pipeline did not count (see
    /// [`docent_connector_api::IndexedState::reconcile_again`]).
    reconcile_again: Mutex<BTreeSet<String>>,
    /// What to tell at each rollback (sources that remember what they accepted: push).
    rollback_hooks: Mutex<Vec<RollbackHook>>,
}

/// Called at each rollback of accepted writes with what it lost ([`LostChange`],
/// [`SkipLog::on_rollback`]).
#[derive(Clone)]
pub struct RollbackHook(pub Arc<RollbackFn>);

/// What a [`RollbackHook`] calls.
pub type RollbackFn = dyn Fn(&[LostChange]) + Send + Sync;

/// A change a rollback lost: its key, and its version and ACL fingerprint (`None` for a
/// delete).
pub type LostChange = (DocKey, Option<(String, String)>);

impl std::fmt::Debug for RollbackHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RollbackHook")
    }
}

/// When the pipeline takes changes again after its `n`th rollback in a row (`n` ≥ 1).
fn rollback_pause(n: u32) -> tokio::time::Instant {
    tokio::time::Instant::now() + rollback_wait(n)
}

/// The wait after the `n`th rollback in a row: 1 s, doubling, at most 30 s.
fn rollback_wait(n: u32) -> std::time::Duration {
    let secs = 1u64 << n.saturating_sub(1).min(5);
    std::time::Duration::from_secs(secs.min(30))
}

/// The checkpoint entry (beside the connectors' own, committed with them) that lists the
/// connectors owing a reconciliation after a rollback: a checkpoint already on its way when
/// writes were rolled back is committed past what was lost, and a restart before the
/// connector's reconciliation would otherwise forget that it owes one. Connector ids hold no
/// `:`, so no connector's entry is named so.
pub const OWED_KEY: &str = "docent:reconciliations-owed";

const GAVE_UP_KEEP: usize = 10_000;

/// A version the pipeline gave up on: how often in a row, and from when its connector is told
/// (so that it sends it again).
#[derive(Debug)]
struct GaveUp {
    version: String,
    times: u32,
    told_from: Instant,
}

/// How long after giving up on the same version for the `times`-th time in a row its connector
/// is told: at once the first time (its next scan sends it again), then 10 minutes, doubling up
/// to 8 hours. A model or parser outage would otherwise have every scan send, and the pipeline
/// parse, every such document again (every 5 minutes for a file share).
fn gave_up_wait(times: u32) -> Duration {
    const FIRST: Duration = Duration::from_secs(600);
    const MAX: Duration = Duration::from_secs(8 * 3600);
    match times {
        0 | 1 => Duration::ZERO,
        n => FIRST.saturating_mul(1 << (n - 2).min(16)).min(MAX),
    }
}

/// Called with (native id, version, ACL fingerprint, whether the previous version stays, whether
/// a retry is pending) of a document the pipeline failed to index.
pub type FailureFn = dyn Fn(&str, &str, &str, bool, bool) + Send + Sync;

/// A connector's [`FailureFn`].
#[derive(Clone)]
pub struct FailureHook(pub Arc<FailureFn>);

impl std::fmt::Debug for FailureHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FailureHook")
    }
}

#[derive(Debug, Default)]
struct ConnectorSkips {
    total: u64,
    /// (native id, reason), most recent first.
    recent: VecDeque<(String, String)>,
}

const SKIP_LOG_KEEP: usize = 200;

impl SkipLog {
    pub fn record(&self, key: &DocKey, reason: &str) {
        tracing::info!(
            connector = %key.connector,
            id = %crate::guardrail::pii::for_log(&key.native_id),
            reason = %crate::guardrail::pii::for_log(reason),
            "document skipped"
        );
        self.note(key, reason, 1);
    }

    /// `key`'s reason becomes its most recent entry; the total grows by `counted`.
    fn note(&self, key: &DocKey, reason: &str, counted: u64) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let s = m.entry(key.connector.clone()).or_default();
        s.total += counted;
        s.recent.retain(|(id, _)| id != &key.native_id);
        s.recent
            .push_front((key.native_id.clone(), reason.to_string()));
        s.recent.truncate(SKIP_LOG_KEEP);
    }

    /// Attributes later failures of `connector`'s documents to its sync jobs.
    pub fn register(&self, connector: &str, status: docent_connector_api::StatusHandle) {
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(connector.to_string(), status);
    }

    /// Tells `hook` about each document of `connector` the pipeline fails to index.
    pub fn on_failed_upsert(&self, connector: &str, hook: FailureHook) {
        self.failure_hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(connector.to_string(), hook);
    }

    /// Version `version` of `key` was sent but not indexed, its previous version kept or
    /// removed: its connector's hook hears of it.
    fn failed(&self, key: &DocKey, version: &str, acl: &str, kept_previous: bool, retrying: bool) {
        let hook = self
            .failure_hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key.connector)
            .cloned();
        if let Some(hook) = hook {
            (hook.0)(&key.native_id, version, acl, kept_previous, retrying);
        }
    }

    /// A document the connector sent (and counted as added or modified) that the pipeline
    /// could not index: recorded, and moved to `failed` in the job that sent it. Its
    /// connector's hook hears of it, also while a retry is pending (see below).
    #[allow(clippy::too_many_arguments)]
    pub fn record_failed_upsert(
        &self,
        key: &DocKey,
        version: &str,
        acl: &str,
        reason: &str,
        job: Option<u64>,
        was_indexed: bool,
        kept_previous: bool,
        retrying: bool,
    ) {
        self.record(key, reason);
        // Told while a retry is pending too: a push source's waiting call answers RETRY_LATER
        // at once (a review: it was answered committed while the retry waited in memory); what
        // the source accepted is forgotten only once no retry follows. A crawler registers no
        // hook: its sent log and the pipeline's `gave_up` cover it.
        self.failed(key, version, acl, kept_previous, retrying);
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(status), Some(job)) = (jobs.get(&key.connector), job) {
            status.update_job(job, |j| {
                let c = &mut j.counts;
                if was_indexed {
                    c.modified = c.modified.saturating_sub(1);
                } else {
                    c.added = c.added.saturating_sub(1);
                }
                c.failed += 1;
                if j.failures.len() < docent_connector_api::jobs::JOB_FAILURES {
                    j.failures.push(docent_connector_api::jobs::JobFailure {
                        id: key.native_id.clone(),
                        reason: reason.to_string(),
                    });
                }
            });
        }
    }

    /// A retry of a recorded failure failed too: its reason is updated, the document counted
    /// once; the hook hears of it when no further retry follows.
    fn record_failed_retry(
        &self,
        key: &DocKey,
        version: &str,
        acl: &str,
        reason: &str,
        kept_previous: bool,
        retrying: bool,
    ) {
        tracing::info!(
            connector = %key.connector,
            id = %crate::guardrail::pii::for_log(&key.native_id),
            reason = %crate::guardrail::pii::for_log(reason),
            "document failed again"
        );
        self.note(key, reason, 0);
        self.failed(key, version, acl, kept_previous, retrying);
    }

    /// A retried version was indexed: its failure leaves the skip log, and the job that sent
    /// it counts it as added or modified again.
    fn recovered(&self, key: &DocKey, first: FirstFailure) {
        {
            let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = m.get_mut(&key.connector) {
                let before = s.recent.len();
                s.recent.retain(|(id, _)| id != &key.native_id);
                if s.recent.len() < before {
                    s.total = s.total.saturating_sub(1);
                }
            }
        }
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(status), Some(job)) = (jobs.get(&key.connector), first.job) {
            status.update_job(job, |j| {
                let c = &mut j.counts;
                c.failed = c.failed.saturating_sub(1);
                if first.was_indexed {
                    c.modified += 1;
                } else {
                    c.added += 1;
                }
                j.failures.retain(|f| f.id != key.native_id);
            });
        }
    }

    /// Version `version` of `key` failed for a reason not its own and will not be tried again
    /// by the pipeline: its connector is to send it again at its next scan.
    fn give_up(&self, key: &DocKey, version: &str) {
        let mut m = self.gave_up.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= GAVE_UP_KEEP && !m.contains_key(key) {
            // Bounded: forgetting one only means waiting for a change or a full sync, as before.
            if let Some(k) = m.keys().next().cloned() {
                m.remove(&k);
            }
        }
        let times = match m.get(key) {
            Some(g) if g.version == version => g.times.saturating_add(1),
            _ => 1,
        };
        m.insert(
            key.clone(),
            GaveUp {
                version: version.to_string(),
                times,
                told_from: Instant::now() + gave_up_wait(times),
            },
        );
    }

    /// The pipeline discarded writes it had accepted (a rollback): connectors forget what they
    /// sent and take the index's word again.
    fn rolled_back(&self, lost: &[LostChange]) {
        self.rollbacks.fetch_add(1, Ordering::SeqCst);
        let hooks = self
            .rollback_hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for hook in hooks {
            (hook.0)(lost);
        }
    }

    /// Tells `hook` of every rollback of accepted writes.
    pub fn on_rollback(&self, hook: RollbackHook) {
        self.rollback_hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(hook);
    }

    fn lock_reconciling(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<u64>>> {
        self.reconciling.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A reconciliation of `connector` that started at rollback count `at` ended, and what it
    /// sent is written ([`Change::Reconciled`]): the next commit no longer records it as owed.
    fn reconciled(&self, connector: &str, at: u64) {
        let mut m = self.lock_reconciling();
        let last = m.entry(connector.to_string()).or_insert(None);
        *last = Some(last.map_or(at, |l| l.max(at)));
    }

    /// The version of `key` the pipeline gave up on, if any and once its connector is to be
    /// told ([`gave_up_wait`]).
    pub fn gave_up_on(&self, key: &DocKey) -> Option<String> {
        self.gave_up
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .filter(|g| Instant::now() >= g.told_from)
            .map(|g| g.version.clone())
    }

    /// (total, most recent first)
    pub fn get(&self, connector: &str) -> (u64, Vec<(String, String)>) {
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        m.get(connector)
            .map(|s| (s.total, s.recent.iter().cloned().collect()))
            .unwrap_or_default()
    }
}

/// Waits until `index` knows every document it holds (a remote backend reads its document
/// table first; the embedded one always does), so that a connector started meanwhile does not
/// take every indexed document for new and read, parse and embed it all again (session 36's
/// note: an unreadable Milvus document table at start did that for every connector). Tries
/// again after 250 ms, then twice as long each time up to 30 s, with the connector's status
/// saying why it waits. False when `shutdown` comes first. Past [`MAX_INDEX_WAIT`] it gives
/// up waiting, says so in the log, and lets the connector start (as before: everything is sent
/// again) rather than hold it for good.
pub async fn until_index_known(
    index: Arc<dyn Backend>,
    status: &docent_connector_api::StatusHandle,
    shutdown: &tokio_util::sync::CancellationToken,
) -> bool {
    let started = Instant::now();
    let mut wait = Duration::from_millis(250);
    loop {
        if index.knows_every_document() {
            status.clear(docent_connector_api::Alarm::Outage);
            return true;
        }
        if started.elapsed() >= MAX_INDEX_WAIT {
            tracing::error!(
                waited_secs = started.elapsed().as_secs(),
                "the index still cannot tell what it holds: a connector starts anyway, and \
                 sends every document it finds again"
            );
            status.clear(docent_connector_api::Alarm::Outage);
            return true;
        }
        // An attempt to read the table (the entry asked for matters not).
        let i = index.clone();
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::task::spawn_blocking(move || i.latest_entry("")) => {}
        }
        if index.knows_every_document() {
            continue;
        }
        status.set_phase("starting");
        status.raise(
            docent_connector_api::Alarm::Outage,
            "the index cannot tell what it holds yet (its document table cannot be read): \
             the connector waits for it rather than send every document again"
                .to_string(),
        );
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}

/// How long [`until_index_known`] holds a connector at most.
pub const MAX_INDEX_WAIT: Duration = Duration::from_secs(15 * 60);

/// What connectors see of the index: its state, and the versions the pipeline gave up on.
pub struct IndexedView {
    pub index: Arc<dyn docent_connector_api::IndexedState>,
    pub skips: Arc<SkipLog>,
}

impl docent_connector_api::IndexedState for IndexedView {
    fn get(&self, key: &DocKey) -> Option<docent_connector_api::IndexedDoc> {
        self.index.get(key)
    }

    fn native_ids(&self, connector: &str) -> Vec<String> {
        self.index.native_ids(connector)
    }

    fn gave_up(&self, key: &DocKey) -> Option<String> {
        let version = self.skips.gave_up_on(key)?;
        // Indexed after all (sent again, or retried): nothing is given up.
        (self.index.get(key).map(|d| d.version) != Some(version.clone())).then_some(version)
    }

    fn rollbacks(&self) -> u64 {
        self.skips.rollbacks.load(Ordering::SeqCst)
    }

    fn reconcile_again(&self, connector: &str) -> bool {
        self.skips
            .reconcile_again
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(connector)
    }

    fn reconciliation_owed(&self, connector: &str) -> bool {
        self.skips
            .lock_reconciling()
            .entry(connector.to_string())
            .or_insert(None);
        self.skips
            .owed_at_start
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(connector)
    }
}

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub chunking: ChunkerConfig,
    pub commit_interval: Duration,
    /// Changes gathered into one batch at most.
    pub max_batch: usize,
    /// Parse limits per connector id; connectors not listed get the defaults.
    pub limits: HashMap<String, parse::ParseLimits>,
    /// When a document whose parse failed for a reason not its own is tried again.
    pub retry: RetryPolicy,
}

#[cfg(test)]
impl PipelineConfig {
    /// Small chunks, commits only when asked, default limits and retries.
    pub(crate) fn for_tests() -> Self {
        Self {
            chunking: ChunkerConfig {
                max_tokens: 64,
                overlap_tokens: 8,
            },
            commit_interval: Duration::from_secs(3600),
            max_batch: 64,
            limits: HashMap::new(),
            retry: RetryPolicy::default(),
        }
    }
}

/// Documents whose parse failed for a reason that is not theirs (parser processes busy or
/// unable to start, parsers held up by timed-out ones; not a timeout itself) are kept, with
/// their bytes, and tried again after `first`, then after 4× as long each time, `attempts`
/// times in all; after that the version is given up on ([`IndexedView`]) and its connector
/// sends it again at its next scan. The queue is in memory, bounded by `max_bytes` of content:
/// a document over that is not retried, and nothing queued survives the daemon stopping.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub first: Duration,
    pub attempts: u32,
    pub max_bytes: usize,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            first: Duration::from_secs(30),
            attempts: 3,
            max_bytes: 64 << 20,
        }
    }
}

/// A document waiting to be tried again (see [`RetryPolicy`]).
struct Pending {
    doc: Box<SourceDocument>,
    /// Attempts so far (1 after the first failure).
    attempt: u32,
    due: Instant,
    first: FirstFailure,
}

/// What the first failure of a retried version recorded, to undo when a retry succeeds.
#[derive(Debug, Clone, Copy)]
struct FirstFailure {
    /// The sync job that sent it, where the failure was counted.
    job: Option<u64>,
    /// Whether the job counted it as modified (else added).
    was_indexed: bool,
}

#[derive(Default)]
struct RetryQueue {
    pending: HashMap<DocKey, Pending>,
    bytes: usize,
}

impl RetryQueue {
    /// Queues `doc` after its `attempt`-th failure; the delay, or `None` when it is not queued
    /// (attempts used up, or no room).
    fn schedule(
        &mut self,
        policy: &RetryPolicy,
        doc: Box<SourceDocument>,
        attempt: u32,
        first: FirstFailure,
        now: Instant,
    ) -> Option<Duration> {
        self.cancel(&doc.key);
        // Every field the document holds counts, as in the pipeline's queue (a review: only
        // the content did, so ACL changes of ten bytes of text with a thousand deny entries
        // each held gigabytes under a 64 MiB bound).
        let held = doc.held_bytes();
        if attempt > policy.attempts || self.bytes + held > policy.max_bytes {
            return None;
        }
        let delay = policy.first * 4u32.saturating_pow(attempt - 1);
        self.bytes += held;
        self.pending.insert(
            doc.key.clone(),
            Pending {
                doc,
                attempt,
                due: now + delay,
                first,
            },
        );
        Some(delay)
    }

    /// A newer change of `key` arrived: its pending retry is stale.
    fn cancel(&mut self, key: &DocKey) {
        if let Some(p) = self.pending.remove(key) {
            self.bytes -= p.doc.held_bytes();
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.due).min()
    }

    /// Removes and returns at most `limit` of the retries due at `now`, oldest first.
    fn take_due(&mut self, now: Instant, limit: usize) -> Vec<Pending> {
        let mut due: Vec<(Instant, &DocKey)> = self
            .pending
            .iter()
            .filter(|(_, p)| p.due <= now)
            .map(|(k, p)| (p.due, k))
            .collect();
        due.sort();
        let keys: Vec<DocKey> = due
            .into_iter()
            .take(limit)
            .map(|(_, k)| k.clone())
            .collect();
        let mut due: Vec<Pending> = keys.iter().filter_map(|k| self.pending.remove(k)).collect();
        self.bytes -= due.iter().map(|p| p.doc.held_bytes()).sum::<usize>();
        due.sort_by_key(|p| p.due);
        due
    }
}

/// Rolls the index back off the async runtime: tantivy joins its indexing threads and removes
/// files (session 43's review: on a slow or full disk, a runtime worker waited for it).
async fn rollback_blocking(index: &Arc<dyn Backend>) -> Result<(), IndexError> {
    let index = index.clone();
    tokio::task::spawn_blocking(move || index.rollback())
        .await
        .unwrap_or_else(|e| {
            Err(IndexError::Op(tantivy::TantivyError::InternalError(
                crate::telemetry::task_failure(&e),
            )))
        })
}

/// What a model that panicked on a batch is asked to embed, to tell a text that makes it panic
/// from a model that fails on everything.
const PROBE_TEXT: &str = "Docent checks that the model embeds this sentence.";

/// The model's vectors for `texts`, one each: `Err(None)` when it panicked (its tokenizer or
/// runtime on some text), `Err(Some(_))` when it failed or gave another number of vectors.
fn embed_guarded(
    embedder: &dyn Embedder,
    texts: &[String],
) -> Result<Vec<Vec<f32>>, Option<crate::embed::EmbedError>> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        embedder.embed_passages(texts)
    })) {
        Err(_) => Err(None),
        Ok(Err(e)) => Err(Some(e)),
        Ok(Ok(v)) if v.len() == texts.len() => Ok(v),
        Ok(Ok(v)) => Err(Some(crate::embed::EmbedError::Inference(format!(
            "the model gave {} vectors for {} texts",
            v.len(),
            texts.len()
        )))),
    }
}

/// Makes `v` a vector of numbers: values that are NaN or infinite become 0 and the rest is
/// normalised again. Whether it had to.
fn finite(v: &mut [f32]) -> bool {
    if v.iter().all(|x| x.is_finite()) {
        return false;
    }
    for x in v.iter_mut().filter(|x| !x.is_finite()) {
        *x = 0.0;
    }
    crate::embed::normalize(v);
    true
}

/// Why a document was not prepared.
struct Failure {
    key: DocKey,
    reason: String,
    /// Whether the indexed version stays (a failure that is not the document's, under an
    /// unchanged ACL) or is removed.
    keep_previous: bool,
    /// The document, when the failure was not its own and it may be tried again.
    retry: Option<Box<SourceDocument>>,
    /// The failure was not its own (a parse timeout on a busy machine) though the pipeline
    /// does not try it again: its connector sends it again, after a growing wait.
    send_again: bool,
}

pub struct Pipeline {
    index: Arc<dyn Backend>,
    embedder: Arc<dyn Embedder>,
    cfg: PipelineConfig,
    stats: Arc<IngestStats>,
    skips: Arc<SkipLog>,
    /// The daemon's shutdown: a commit retried without end stops retrying then.
    shutdown: tokio_util::sync::CancellationToken,
    /// [`SHUTDOWN_GRACE`] (shorter in tests).
    shutdown_grace: Duration,
    retries: Mutex<RetryQueue>,
    /// Failure injection for tests: this many parses fail as if the parser were unavailable.
    #[cfg(test)]
    unavailable_parses: AtomicU64,
    /// Failure injection for tests: this many parses time out as in a parser process.
    #[cfg(test)]
    timed_out_parses: AtomicU64,
    /// Failure injection for tests: this many batches fail to write.
    #[cfg(test)]
    failing_writes: AtomicU64,
    /// Connectors owing a reconciliation ([`OWED_KEY`]), with the rollback count a
    /// reconciliation must have started at or after to pay it (0: any, owed from before the
    /// start).
    owed: Mutex<BTreeMap<String, u64>>,
    /// The content bytes the connectors' changes took on their way in ([`QueueBytes`]), given
    /// back once the batch holding them is written (or failed).
    bytes: Option<Arc<QueueBytes>>,
    /// Connectors whose writes the model failed on (dropped, not retried) since their last
    /// [`Change::Reconciled`]: that notice pays nothing, since the reconciliation it ends may
    /// have sent those writes in an earlier batch.
    dropped: Mutex<std::collections::HashSet<String>>,
}

/// How long the pipeline waits at shutdown for connectors to stop sending before it closes its
/// queue (see the pipeline's loop).
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// The longest the pipeline takes changes after the daemon's shutdown, however steadily they
/// come.
pub const SHUTDOWN_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Commit attempts at shutdown before the pending writes are given up (the checkpoints were not
/// committed either: connectors send them again after the restart).
const FINAL_COMMIT_ATTEMPTS: u32 = 3;

/// A document parsed and chunked, waiting for vectors.
struct Prepared {
    record: DocumentRecord,
    /// Per chunk: the text to embed when no vector could be reused.
    to_embed: Vec<Option<String>>,
}

impl Pipeline {
    pub fn new(
        index: Arc<dyn Backend>,
        embedder: Arc<dyn Embedder>,
        cfg: PipelineConfig,
        stats: Arc<IngestStats>,
        skips: Arc<SkipLog>,
    ) -> Self {
        let owed: BTreeSet<String> = index
            .checkpoints()
            .get(OWED_KEY)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        if !owed.is_empty() {
            tracing::warn!(connectors = ?owed, "writes were rolled back before the last stop: these connectors reconcile once");
        }
        *skips
            .owed_at_start
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = owed.clone();
        Self {
            index,
            embedder,
            cfg,
            stats,
            skips,
            shutdown: tokio_util::sync::CancellationToken::new(),
            shutdown_grace: SHUTDOWN_GRACE,
            retries: Mutex::default(),
            #[cfg(test)]
            unavailable_parses: AtomicU64::new(0),
            #[cfg(test)]
            timed_out_parses: AtomicU64::new(0),
            #[cfg(test)]
            failing_writes: AtomicU64::new(0),
            owed: Mutex::new(owed.into_iter().map(|c| (c, 0)).collect()),
            bytes: None,
            dropped: Mutex::default(),
        }
    }

    /// Changes come through [`QueueBytes::sink`]s of `bytes`: the pipeline gives their bytes
    /// back once it is done with each batch.
    pub fn with_queue_bytes(mut self, bytes: Arc<QueueBytes>) -> Self {
        self.bytes = Some(bytes);
        self
    }

    /// Whether the indexed version (`previous`, as the index shows it) may stay while a new
    /// version under `acl` fails for a reason not its own: only under the same ACL (the old
    /// text may not stay readable under an old, wider one), and, when the index shows none,
    /// only if it knows there is none.
    fn stays_under(
        &self,
        previous: Option<&crate::index::DocEntry>,
        acl: &docent_connector_api::Acl,
    ) -> bool {
        match previous {
            Some(p) => p.acl_fingerprint == acl.fingerprint(),
            None => self.index.knows_every_document(),
        }
    }

    /// Whether `key` may be indexed (committed or written): the index shows it, or cannot
    /// tell ([`Backend::knows_every_document`]).
    fn may_be_indexed(&self, key: &str) -> bool {
        self.index.latest_entry(key).is_some() || !self.index.knows_every_document()
    }

    fn lock_owed(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        self.owed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes of `connectors` were rolled back: those that reconcile after rollbacks owe one
    /// that starts from now.
    fn owe_reconciliations(&self, connectors: BTreeSet<String>) {
        let at = self.skips.rollbacks.load(Ordering::SeqCst);
        let reconciling = self.skips.lock_reconciling();
        let mut owed = self.lock_owed();
        for c in connectors {
            if reconciling.contains_key(&c) {
                owed.insert(c, at);
            }
        }
    }

    /// The connectors still owing a reconciliation, as committed under [`OWED_KEY`]. Those
    /// with a document in the retry queue are listed too: that change is in no commit while
    /// the connector's checkpoints move past it, so if the daemon stops before the retry, the
    /// connector reconciles once at the next start (else an edit, say one removing text, would
    /// wait for the reconciliation schedule).
    ///
    /// So are those with writes the model failed on (dropped) since their last reconciliation
    /// ended: the checkpoints committed since move past those writes (an incremental poll never
    /// returns to the page), so a restart must reconcile them. Only connectors that reconcile
    /// are listed: a push source never does, and listing it would only warn at every start.
    fn owed_now(&self) -> serde_json::Value {
        let mut retrying: BTreeSet<String> = self
            .retries()
            .pending
            .keys()
            .map(|k| k.connector.clone())
            .collect();
        retrying.extend(
            self.dropped
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned(),
        );
        let reconciling = self.skips.lock_reconciling();
        retrying.retain(|c| reconciling.contains_key(c));
        let mut owed = self.lock_owed();
        owed.retain(|c, at| {
            reconciling
                .get(c)
                .copied()
                .flatten()
                .is_none_or(|done| done < *at)
        });
        let mut listed: BTreeSet<&String> = owed.keys().collect();
        listed.extend(&retrying);
        serde_json::json!(listed)
    }

    /// Leaves out the checkpoint of each connector that does not reconcile (a push source)
    /// while one of its documents waits in the retry queue: that change is in no commit, and
    /// the queue lives in memory. A push source's checkpoint is its commit marker, which tells
    /// a call waiting on it that its changes are committed (found by a review: a push was
    /// answered committed, then lost with the retry queue in a crash). Connectors that
    /// reconcile move on, and reconcile at the next start instead ([`Self::owed_now`]).
    fn hold_back_past_retries(&self, checkpoints: &mut BTreeMap<String, serde_json::Value>) {
        let retrying: BTreeSet<String> = self
            .retries()
            .pending
            .keys()
            .map(|k| k.connector.clone())
            .collect();
        if retrying.is_empty() {
            return;
        }
        let reconciling = self.skips.lock_reconciling();
        checkpoints.retain(|c, _| !retrying.contains(c) || reconciling.contains_key(c));
    }

    fn retries(&self) -> std::sync::MutexGuard<'_, RetryQueue> {
        self.retries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Of the changes written since the last commit, those a rollback loses: not a version the
    /// retry queue still holds (it is written later).
    fn lost(&self, uncommitted: Vec<LostChange>) -> Vec<LostChange> {
        let retries = self.retries();
        uncommitted
            .into_iter()
            .filter(|(key, state)| {
                !matches!(
                    (retries.pending.get(key), state),
                    (Some(p), Some((version, _))) if p.doc.version == *version
                )
            })
            .collect()
    }

    /// After a rollback: each document a rolled-back change took away, or gave another ACL, is
    /// withdrawn again (`changes`: key and the ACL fingerprint written, `None` for a delete or
    /// a skip; the last per key counts). The rollback brought the old version back, under its
    /// old ACL, until the connector sends the change again or the retry writes it: the old text
    /// may not be readable meanwhile by anyone the change removed. A widened ACL is withdrawn
    /// too (the fingerprint cannot tell): the document is away until it is written again.
    /// Returns whether any was.
    fn withdraw_again(&self, changes: Vec<(DocKey, Option<String>)>) -> Vec<DocKey> {
        let last: HashMap<DocKey, Option<String>> = changes.into_iter().collect();
        let mut withdrawn = Vec::new();
        for (key, written) in last {
            let entry = self.index.latest_entry(&key.to_string());
            let withdraw = match (&written, &entry) {
                (_, None) => !self.index.knows_every_document(),
                (None, Some(_)) => true,
                (Some(fp), Some(e)) => e.acl_fingerprint != *fp,
            };
            if withdraw {
                self.index.delete(&key);
                withdrawn.push(key);
            }
        }
        withdrawn
    }

    /// [`Self::withdraw_again`] of `rolled` off the async runtime (a Milvus backend may read its
    /// document table from the server). The withdrawals are uncommitted writes too: they stay
    /// in `rolled` (as deletes), so that another rollback before a commit withdraws again
    /// instead of bringing the old versions back. Returns whether any was made.
    async fn withdrawn_again(self: &Arc<Self>, rolled: &mut Vec<(DocKey, Option<String>)>) -> bool {
        let changes = std::mem::take(rolled);
        let p = self.clone();
        let again = tokio::task::spawn_blocking(move || p.withdraw_again(changes))
            .await
            .unwrap_or_default();
        let any = !again.is_empty();
        rolled.extend(again.into_iter().map(|k| (k, None)));
        any
    }

    /// After the backend dropped the uncommitted writes: withdraws again what they took away
    /// or narrowed ([`Self::withdrawn_again`]), tells the sources that remember what they
    /// accepted what was lost, and has the connectors that wrote reconcile. Returns whether a
    /// withdrawal was written.
    async fn after_rollback(
        self: &Arc<Self>,
        rolled: &mut Vec<(DocKey, Option<String>)>,
        uncommitted: &mut Vec<LostChange>,
        written: &mut BTreeSet<String>,
    ) -> bool {
        let dirty = self.withdrawn_again(rolled).await;
        self.skips
            .rolled_back(&self.lost(std::mem::take(uncommitted)));
        self.owe_reconciliations(std::mem::take(written));
        dirty
    }

    /// Stops retrying a refused commit once `shutdown` is cancelled (a few more attempts, then
    /// the pipeline ends with the error instead of holding the daemon's shutdown).
    pub fn with_shutdown(mut self, shutdown: tokio_util::sync::CancellationToken) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Runs until every sender is dropped, then commits what remains.
    pub async fn run(self, rx: mpsc::Receiver<Change>) -> Result<(), IndexError> {
        Arc::new(self).run_shared(rx).await
    }

    /// [`Self::run`] on a shared pipeline.
    async fn run_shared(self: Arc<Self>, mut rx: mpsc::Receiver<Change>) -> Result<(), IndexError> {
        /// Closes the byte budget however the pipeline ends (see [`QueueBytes::close`]).
        struct CloseBudget(Option<Arc<QueueBytes>>);
        impl Drop for CloseBudget {
            fn drop(&mut self) {
                if let Some(b) = &self.0 {
                    b.close();
                }
            }
        }
        let _close = CloseBudget(self.bytes.clone());
        let this = self;
        let mut dirty = false;
        let mut last_commit = Instant::now();
        let mut checkpoints = BTreeMap::new();
        // Connectors with writes since the last commit (a rollback discards them).
        let mut written: BTreeSet<String> = BTreeSet::new();
        // The changes written since the last commit, which a rollback loses: (key, version,
        // `None` for a delete), for the sources that remember what they accepted.
        let mut uncommitted: Vec<LostChange> = Vec::new();
        // The same with skips, and the ACL written: what a rollback must withdraw again.
        let mut rolled: Vec<(DocKey, Option<String>)> = Vec::new();
        // Rollbacks in a row, and the pause they impose: while the index refuses writes (a
        // full disk), taking more changes only embeds them to roll them back again, and each
        // rollback has connectors reconcile: the pipeline waits, doubling from 1 s to 30 s, and
        // connectors wait on the full channel. One change received meanwhile waits in `carry`.
        let mut rollbacks_in_a_row: u32 = 0;
        let mut paused_until: Option<tokio::time::Instant> = None;
        let mut carry: Option<Change> = None;
        // At shutdown, connectors stop between two files; one held in a system call (a hung
        // network mount) never does, and its sender would keep this loop, and the daemon,
        // waiting for ever (a review). Once nothing has come for the grace since the shutdown,
        // the queue takes no more: what it holds is drained and committed, and such a
        // connector's later sends fail. (Counted from the last change received, so a push
        // source still forwarding what it accepted is not cut off.)
        let mut shutdown_seen = false;
        let mut last_received = tokio::time::Instant::now();
        let mut shutdown_at = last_received;
        let mut closed = false;
        loop {
            // (The daemon's shutdown ends the pause: what remains is drained and committed.)
            if let Some(until) = paused_until.take()
                && until > tokio::time::Instant::now()
                && !this.shutdown.is_cancelled()
            {
                if carry.is_none() {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => {}
                        _ = this.shutdown.cancelled() => {}
                        msg = rx.recv() => match msg {
                            Some(c) => {
                                carry = Some(c);
                                paused_until = Some(until);
                            }
                            None => break,
                        },
                    }
                } else {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => {}
                        _ = this.shutdown.cancelled() => {}
                    }
                }
                continue;
            }
            let deadline = tokio::time::Instant::from_std(last_commit + this.cfg.commit_interval);
            let next_retry = this.retries().next_due();
            let retry_at = tokio::time::Instant::from_std(next_retry.unwrap_or(deadline.into()));
            // The grace counts time spent waiting here only: a batch that took long after the
            // shutdown is not silence (a review).
            if shutdown_seen {
                last_received = tokio::time::Instant::now();
            }
            // The longest wait holds even while changes keep coming: the biased select below
            // never reaches its timer, nor its shutdown arm, while one is always ready (a
            // review, and a second one: the shutdown was never seen then).
            if !shutdown_seen && this.shutdown.is_cancelled() {
                shutdown_seen = true;
                last_received = tokio::time::Instant::now();
                shutdown_at = last_received;
            }
            if shutdown_seen
                && !closed
                && tokio::time::Instant::now() >= shutdown_at + SHUTDOWN_LIMIT
            {
                tracing::warn!(
                    "connectors kept sending past the longest wait after the shutdown; the queue is closed and drained without them"
                );
                rx.close();
                closed = true;
            }
            let first = match carry.take() {
                Some(c) => Some(c),
                None => tokio::select! {
                    // A change ready wins over the grace's end (a slow batch is not silence).
                    biased;
                    msg = rx.recv() => match msg {
                        Some(c) => {
                            last_received = tokio::time::Instant::now();
                            Some(c)
                        }
                        None => break,
                    },
                    _ = tokio::time::sleep_until(deadline), if dirty => None,
                    _ = tokio::time::sleep_until(retry_at), if next_retry.is_some() => None,
                    _ = this.shutdown.cancelled(), if !shutdown_seen => {
                        shutdown_seen = true;
                        last_received = tokio::time::Instant::now();
                        shutdown_at = last_received;
                        None
                    },
                    // Quiet for the grace, or past the longest wait after the shutdown.
                    _ = tokio::time::sleep_until(
                        (last_received + this.shutdown_grace).min(shutdown_at + SHUTDOWN_LIMIT)
                    ), if shutdown_seen && !closed => {
                        tracing::warn!("a connector has not stopped since the shutdown; the queue is closed and drained without it");
                        rx.close();
                        closed = true;
                        None
                    },
                },
            };
            let due = this.retries().take_due(Instant::now(), this.cfg.max_batch);
            let retried = due.len();
            let mut batch = Vec::new();
            if let Some(c) = first {
                batch.push(c);
                while batch.len() < this.cfg.max_batch {
                    match rx.try_recv() {
                        Ok(c) => batch.push(c),
                        Err(_) => break,
                    }
                }
            }
            let mut checkpoint_seen = false;
            written.extend(due.iter().map(|p| p.doc.key.connector.clone()));
            let state = |d: &SourceDocument| Some((d.version.clone(), d.acl.fingerprint()));
            uncommitted.extend(due.iter().map(|p| (p.doc.key.clone(), state(&p.doc))));
            rolled.extend(
                due.iter()
                    .map(|p| (p.doc.key.clone(), Some(p.doc.acl.fingerprint()))),
            );
            rolled.extend(batch.iter().filter_map(|c| match c {
                Change::Upsert(d) => Some((d.key.clone(), Some(d.acl.fingerprint()))),
                Change::Delete(key) | Change::Skipped { key, .. } => Some((key.clone(), None)),
                Change::Checkpoint { .. } | Change::Reconciled { .. } => None,
            }));
            uncommitted.extend(batch.iter().filter_map(|c| match c {
                Change::Upsert(d) => Some((d.key.clone(), state(d))),
                Change::Delete(key) => Some((key.clone(), None)),
                Change::Skipped { .. } | Change::Checkpoint { .. } | Change::Reconciled { .. } => {
                    None
                }
            }));
            written.extend(batch.iter().map(|c| {
                match c {
                    Change::Upsert(d) => &d.key.connector,
                    Change::Delete(key) | Change::Skipped { key, .. } => &key.connector,
                    Change::Checkpoint { connector, .. } | Change::Reconciled { connector, .. } => {
                        connector
                    }
                }
                .clone()
            }));
            if !batch.is_empty() || !due.is_empty() {
                // The bytes the batch's changes took, given back once it is done with.
                let held: u64 = this
                    .bytes
                    .as_ref()
                    .map_or(0, |b| batch.iter().map(|c| u64::from(b.cost(c))).sum());
                let p = this.clone();
                let result = tokio::task::spawn_blocking(move || p.process_with(due, batch)).await;
                if let Some(b) = &this.bytes {
                    b.give_back(held);
                }
                match result {
                    Ok(Ok(cps)) => {
                        checkpoint_seen = !cps.is_empty();
                        checkpoints.extend(cps);
                        dirty = true;
                    }
                    // A failed write or a panic (a change that panics every time must not have
                    // the reconciliations it causes send it again without a pause either).
                    failed => {
                        match failed {
                            Ok(Err(e)) => {
                                tracing::error!(error = %crate::guardrail::pii::for_log(&e.to_string()), retried, "index write failed; uncommitted writes rolled back (their connectors send them again at their next sync)");
                            }
                            // The panic is logged where it happened; its message (which
                            // may quote a document) only at debug level (`telemetry`).
                            Err(e) => {
                                tracing::error!(
                                    panicked = e.is_panic(),
                                    retried,
                                    "ingest batch failed unexpectedly; uncommitted writes rolled back (their connectors send them again at their next sync)"
                                );
                            }
                            Ok(Ok(_)) => unreachable!("matched above"),
                        }
                        rollback_blocking(&this.index).await?;
                        dirty = this
                            .after_rollback(&mut rolled, &mut uncommitted, &mut written)
                            .await;
                        checkpoints.clear();
                        rollbacks_in_a_row += 1;
                        paused_until = Some(rollback_pause(rollbacks_in_a_row));
                        continue;
                    }
                }
            }
            if dirty && (checkpoint_seen || last_commit.elapsed() >= this.cfg.commit_interval) {
                match this
                    .commit_retrying(std::mem::take(&mut checkpoints), None)
                    .await
                {
                    Ok(()) => {
                        written.clear();
                        uncommitted.clear();
                        rolled.clear();
                        rollbacks_in_a_row = 0;
                    }
                    // The backend dropped the uncommitted writes: as for a failed batch.
                    Err(e) if e.rolled_back() => {
                        tracing::error!(error = %crate::guardrail::pii::for_log(&e.to_string()), "index commit failed; uncommitted writes rolled back (their connectors send them again at their next sync)");
                        dirty = this
                            .after_rollback(&mut rolled, &mut uncommitted, &mut written)
                            .await;
                        last_commit = Instant::now();
                        rollbacks_in_a_row += 1;
                        paused_until = Some(rollback_pause(rollbacks_in_a_row));
                        continue;
                    }
                    Err(e) => return Err(e),
                }
                dirty = false;
                last_commit = Instant::now();
            }
        }
        // Documents waiting for a retry are tried once more before the last commit (their
        // parsers are free now): a push client was answered ACCEPTED for them, and nothing
        // would send them again after the restart (found by a review).
        let waiting = this.retries().take_due(
            Instant::now() + std::time::Duration::from_secs(1 << 30),
            usize::MAX,
        );
        if !waiting.is_empty() {
            rolled.extend(
                waiting
                    .iter()
                    .map(|p| (p.doc.key.clone(), Some(p.doc.acl.fingerprint()))),
            );
            let p = this.clone();
            match tokio::task::spawn_blocking(move || p.process_with(waiting, Vec::new())).await {
                Ok(Ok(cps)) => {
                    checkpoints.extend(cps);
                    dirty = true;
                }
                failed => {
                    if let Ok(Err(e)) = &failed {
                        tracing::error!(error = %crate::guardrail::pii::for_log(&e.to_string()), "index write failed at shutdown; uncommitted writes rolled back");
                    } else {
                        tracing::error!(
                            "the last retries panicked at shutdown; uncommitted writes rolled back"
                        );
                    }
                    rollback_blocking(&this.index).await?;
                    dirty = this
                        .after_rollback(&mut rolled, &mut uncommitted, &mut written)
                        .await;
                    checkpoints.clear();
                }
            }
        }
        if dirty {
            match this
                .commit_retrying(checkpoints, Some(FINAL_COMMIT_ATTEMPTS))
                .await
            {
                // Neither the writes nor their checkpoints were committed: connectors send
                // them again after the restart, but pushed documents accepted without waiting
                // for their commit are lost, so the daemon exits with an error (session 43's
                // review: it exited successfully).
                Err(e) if e.rolled_back() => {
                    tracing::error!(error = %crate::guardrail::pii::for_log(&e.to_string()), "final index commit failed; uncommitted writes rolled back");
                    return Err(e);
                }
                r => r?,
            }
        }
        Ok(())
    }

    /// Commits, retrying with backoff while the backend refuses (a full disk, an unreachable
    /// Milvus): the pending writes and checkpoints wait, connectors wait on the full channel,
    /// queries go on, and nothing is lost. Before, one failed commit ended the pipeline for
    /// good. `attempts`: give up after that many (at shutdown); `None`: until it succeeds.
    async fn commit_retrying(
        self: &Arc<Self>,
        mut checkpoints: BTreeMap<String, serde_json::Value>,
        attempts: Option<u32>,
    ) -> Result<(), IndexError> {
        checkpoints.insert(OWED_KEY.to_string(), self.owed_now());
        self.hold_back_past_retries(&mut checkpoints);
        let mut backoff = std::time::Duration::from_millis(500);
        let mut attempt = 1u32;
        let mut attempts = attempts;
        loop {
            if attempts.is_none() && self.shutdown.is_cancelled() {
                attempts = Some(attempt + FINAL_COMMIT_ATTEMPTS - 1);
            }
            match self.commit(checkpoints.clone()).await {
                Ok(()) => {
                    if attempt > 1 {
                        tracing::info!(attempt, "index commit succeeded after failures");
                    }
                    return Ok(());
                }
                // A lost writer cannot commit again: the pipeline stops (and the daemon).
                Err(e)
                    if e.rolled_back()
                        || e.writer_lost()
                        || attempts.is_some_and(|n| attempt >= n) =>
                {
                    return Err(e);
                }
                Err(e) => {
                    self.stats.commit_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %crate::guardrail::pii::for_log(&e.to_string()), attempt, retry_in = ?backoff, "index commit failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.shutdown.cancelled() => {}
                    }
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(30));
                    attempt += 1;
                }
            }
        }
    }

    async fn commit(
        self: &Arc<Self>,
        checkpoints: BTreeMap<String, serde_json::Value>,
    ) -> Result<(), IndexError> {
        let p = self.clone();
        tokio::task::spawn_blocking(move || p.index.commit(checkpoints))
            .await
            .unwrap_or_else(|e| {
                Err(IndexError::Op(tantivy::TantivyError::InternalError(
                    crate::telemetry::task_failure(&e),
                )))
            })?;
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("index committed");
        Ok(())
    }

    /// Blocking: handles one batch; returns the checkpoints it contained.
    pub fn process(
        &self,
        batch: Vec<Change>,
    ) -> Result<BTreeMap<String, serde_json::Value>, IndexError> {
        self.process_with(Vec::new(), batch)
    }

    /// [`Self::process`], with retries that came due first (they are older than the batch).
    fn process_with(
        &self,
        due: Vec<Pending>,
        batch: Vec<Change>,
    ) -> Result<BTreeMap<String, serde_json::Value>, IndexError> {
        #[cfg(test)]
        if self
            .failing_writes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(IndexError::Io {
                path: "injected".into(),
                source: std::io::Error::other("a write failure injected by a test"),
            });
        }
        // A retry of a document the batch changes again is stale (the batch's change cancels
        // it below in any case; this saves the parse).
        let newer: std::collections::HashSet<&DocKey> = batch
            .iter()
            .filter_map(|c| match c {
                Change::Upsert(d) => Some(&d.key),
                Change::Delete(key) | Change::Skipped { key, .. } => Some(key),
                Change::Checkpoint { .. } | Change::Reconciled { .. } => None,
            })
            .collect();
        let due: Vec<Pending> = due
            .into_iter()
            .filter(|p| !newer.contains(&p.doc.key))
            .collect();
        let mut attempts: HashMap<DocKey, (u32, FirstFailure)> = due
            .iter()
            .map(|p| (p.doc.key.clone(), (p.attempt, p.first)))
            .collect();
        // Retried versions prepared now, written below: their first failure is undone then.
        let mut recovering: HashMap<DocKey, FirstFailure> = HashMap::new();
        let batch = due
            .into_iter()
            .map(|p| Change::Upsert(p.doc))
            .chain(batch)
            .collect::<Vec<_>>();
        let mut checkpoints = BTreeMap::new();
        // Reconciliations that end with this batch: paid once it is written.
        let mut paid: Vec<(String, u64)> = Vec::new();
        // Writes in arrival order; embeddings for the whole batch are computed first.
        enum Op {
            Write(Box<Prepared>),
            Delete(DocKey),
        }
        let mut ops = Vec::with_capacity(batch.len());
        // Keys an earlier change of this batch wrote or deleted: "unchanged" is judged against
        // the index, which does not show those yet, so a later upsert of them is always applied.
        let mut touched = std::collections::HashSet::new();
        for change in batch {
            match change {
                Change::Upsert(mut doc) => {
                    // A newer change makes a pending retry of the same document stale.
                    self.retries().cancel(&doc.key);
                    let (attempt, first) = match attempts.remove(&doc.key) {
                        Some((n, first)) => (n, Some(first)),
                        None => (0, None),
                    };
                    let job = doc.job;
                    let earlier_in_batch = !touched.insert(doc.key.clone());
                    if earlier_in_batch {
                        doc.reparse = true;
                    }
                    // A panic while preparing one document (parsers catch their own; this is
                    // for the chunker and the rest) fails that document, not the whole batch.
                    let doc_key = doc.key.clone();
                    let version = doc.version.clone();
                    let acl_fp = doc.acl.fingerprint();
                    let prepared = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        self.prepare(*doc)
                    }))
                    .unwrap_or_else(|_| {
                        tracing::error!(
                            document = %crate::guardrail::pii::for_log(&doc_key.to_string()),
                            "preparing a document panicked"
                        );
                        Err(Failure {
                            key: doc_key.clone(),
                            reason: "internal error while preparing it".into(),
                            keep_previous: false,
                            retry: None,
                            send_again: false,
                        })
                    });
                    match prepared {
                        Ok(Some(p)) => {
                            if let Some(first) = first {
                                tracing::info!(
                                    document = %crate::guardrail::pii::for_log(&p.record.key.to_string()),
                                    attempt = attempt + 1,
                                    "document parsed on a later attempt"
                                );
                                recovering.insert(p.record.key.clone(), first);
                            }
                            ops.push(Op::Write(Box::new(p)))
                        }
                        Ok(None) => {
                            if let Some(first) = first {
                                // The index holds this version already.
                                self.skips.recovered(&doc_key, first);
                            }
                        }
                        Err(Failure {
                            key,
                            mut reason,
                            keep_previous,
                            retry,
                            send_again,
                        }) => {
                            // "Previous" was judged against the index, which does not show
                            // this batch's earlier writes: one of those (under another ACL)
                            // may not stand in for this version.
                            let keep_previous = keep_previous && !earlier_in_batch;
                            let was_indexed = self.index.latest_entry(&key.to_string()).is_some();
                            let first = first.unwrap_or(FirstFailure { job, was_indexed });
                            // A timeout too (a review: it was never sent again, so the
                            // new version, or a new document, stayed out until it changed).
                            let not_its_own = send_again || retry.is_some();
                            let retrying = match retry.and_then(|doc| {
                                self.retries().schedule(
                                    &self.cfg.retry,
                                    doc,
                                    attempt + 1,
                                    first,
                                    Instant::now(),
                                )
                            }) {
                                Some(delay) => {
                                    reason.push_str(&format!(
                                        " (tried again in {})",
                                        humantime_short(delay)
                                    ));
                                    true
                                }
                                None => {
                                    if attempt > 0 {
                                        reason.push_str(&format!(
                                            " (after {} attempts; tried again when it changes or at a full sync)",
                                            attempt + 1
                                        ));
                                    }
                                    false
                                }
                            };
                            // Counters count failed attempts; the skip log and the job count
                            // the document once.
                            self.stats.documents_failed.fetch_add(1, Ordering::Relaxed);
                            self.stats.count(&key.connector, 0, 1);
                            if not_its_own && !retrying {
                                self.skips.give_up(&key, &version);
                            }
                            if attempt == 0 {
                                self.skips.record_failed_upsert(
                                    &key,
                                    &version,
                                    &acl_fp,
                                    &reason,
                                    job,
                                    was_indexed,
                                    keep_previous,
                                    retrying,
                                );
                            } else {
                                self.skips.record_failed_retry(
                                    &key,
                                    &version,
                                    &acl_fp,
                                    &reason,
                                    keep_previous,
                                    retrying,
                                );
                            }
                            // A transient failure keeps the previous version; a retry, or else
                            // the next full sync (the version differs), brings the new one.
                            if !keep_previous {
                                ops.push(Op::Delete(key));
                            }
                        }
                    }
                }
                Change::Delete(key) => {
                    self.retries().cancel(&key);
                    touched.insert(key.clone());
                    ops.push(Op::Delete(key));
                }
                Change::Skipped { key, reason } => {
                    self.retries().cancel(&key);
                    self.stats.count(&key.connector, 0, 1);
                    self.skips.record(&key, &reason);
                    touched.insert(key.clone());
                    ops.push(Op::Delete(key));
                }
                Change::Checkpoint {
                    connector,
                    checkpoint,
                } => {
                    checkpoints.insert(connector, checkpoint);
                }
                Change::Reconciled { connector, at } => paid.push((connector, at)),
            }
        }
        // Writes whose every chunk reuses a vector (an ACL-only change, a re-parse) need no model.
        let needs_model: Vec<bool> = ops
            .iter()
            .map(|op| matches!(op, Op::Write(p) if p.to_embed.iter().any(Option::is_some)))
            .collect();
        // Per op, how many of `texts` are its.
        let counts: Vec<usize> = ops
            .iter()
            .map(|op| match op {
                Op::Write(p) => p.to_embed.iter().filter(|t| t.is_some()).count(),
                Op::Delete(_) => 0,
            })
            .collect();
        // Ops whose texts the model panicked on, alone (see below).
        let mut panicked_on = std::collections::HashSet::new();
        let texts: Vec<String> = ops
            .iter_mut()
            .filter_map(|op| match op {
                Op::Write(p) => Some(p.to_embed.iter_mut().filter_map(Option::take)),
                Op::Delete(_) => None,
            })
            .flatten()
            .collect();
        let mut vectors = if texts.is_empty() {
            Vec::new()
        } else {
            // A model that answers with fewer (or more) vectors than texts failed too: a chunk
            // written without its vector could never be found by the dense leg.
            let embedded = match embed_guarded(&*self.embedder, &texts) {
                // The model (its tokenizer, its runtime) panicked: each document is embedded
                // alone, and those it panics on fail alone (session 43's review: one document
                // failed every batch it was in, and each failure rolled the batch back).
                // Any other failure there is the batch's, as before (a passing one must not
                // give a document up).
                // A model that panics on a text of its own choosing panics on anything: a
                // failure of the batch, not of its documents (else every document it met would
                // be given up).
                Err(None) if embed_guarded(&*self.embedder, &[PROBE_TEXT.to_string()]).is_err() => {
                    Err(crate::embed::EmbedError::Inference(
                        "the model failed (it panicked)".into(),
                    ))
                }
                Err(None) => {
                    let mut out = Ok(Vec::with_capacity(texts.len()));
                    let mut at = 0;
                    for (i, &n) in counts.iter().enumerate() {
                        if n == 0 {
                            continue;
                        }
                        match (&mut out, embed_guarded(&*self.embedder, &texts[at..at + n])) {
                            (Ok(out), Ok(v)) => out.extend(v),
                            (_, Err(None)) => {
                                panicked_on.insert(i);
                            }
                            (Ok(_), Err(Some(e))) => out = Err(e),
                            (Err(_), _) => {}
                        }
                        at += n;
                    }
                    out
                }
                Err(Some(e)) => Err(e),
                Ok(v) => Ok(v),
            };
            match embedded {
                Ok(v) => v,
                Err(e) => {
                    // The model failing is not a document's fault, but no half-embedded document
                    // may be written: record the failures and keep the previous versions of
                    // what needed the model; still apply the deletions and the writes that need
                    // no model (removed content and narrowed ACLs must not wait), and claim no
                    // checkpoint and no reconciliation paid (the batch was not fully applied).
                    tracing::error!(error = %crate::guardrail::pii::for_log(&e.to_string()), "embedding failed for a batch");
                    for (op, needs) in ops.into_iter().zip(needs_model) {
                        match op {
                            Op::Write(p) if needs => {
                                self.dropped
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .insert(p.record.key.connector.clone());
                                self.not_embedded(&p.record, &format!("embedding failed: {e}"));
                            }
                            Op::Write(p) => {
                                self.index.upsert(p.record)?;
                                self.stats.documents_indexed.fetch_add(1, Ordering::Relaxed);
                            }
                            Op::Delete(key) => {
                                if self.may_be_indexed(&key.to_string()) {
                                    self.index.delete(&key);
                                    self.stats.documents_deleted.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                    // A reconciliation that ends in this batch is not done: its connector
                    // reconciles again.
                    let mut dropped = self.dropped.lock().unwrap_or_else(|e| e.into_inner());
                    let mut again = self
                        .skips
                        .reconcile_again
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    for (connector, _) in paid {
                        dropped.remove(&connector);
                        again.insert(connector);
                    }
                    return Ok(BTreeMap::new());
                }
            }
        }
        .into_iter();
        let unembedded: usize = panicked_on.iter().map(|&i| counts[i]).sum();
        self.stats
            .chunks_embedded
            .fetch_add((texts.len() - unembedded) as u64, Ordering::Relaxed);
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                // Its own failure, as for a document that does not parse: recorded, tried
                // again when it changes or at a full sync.
                Op::Write(p) if panicked_on.contains(&i) => {
                    tracing::error!(
                        document = %crate::guardrail::pii::for_log(&p.record.key.to_string()),
                        "the model panicked on a document's text"
                    );
                    self.not_embedded(&p.record, "the model failed on its text (internal error)");
                }
                Op::Write(p) => {
                    let mut record = p.record;
                    let mut not_numbers = 0;
                    for c in &mut record.chunks {
                        if c.vector.is_empty() {
                            c.vector = vectors.next().unwrap_or_default();
                            not_numbers += usize::from(finite(&mut c.vector));
                        }
                    }
                    if not_numbers > 0 {
                        // The document stays searchable by its words; the dense leg ranks those
                        // chunks by what is left of their vectors (session 37's review: a NaN
                        // reached the index, and a backend that refuses it retried forever).
                        tracing::warn!(
                            connector = %record.key.connector,
                            id = %crate::guardrail::pii::for_log(&record.key.native_id),
                            chunks = not_numbers,
                            "the model gave vectors with values that are not numbers; those values were taken as 0"
                        );
                    }
                    let connector = record.key.connector.clone();
                    let first = recovering.remove(&record.key);
                    let key = first.map(|_| record.key.clone());
                    self.index.upsert(record)?;
                    self.stats.documents_indexed.fetch_add(1, Ordering::Relaxed);
                    self.stats.count(&connector, 1, 0);
                    if let (Some(key), Some(first)) = (key, first) {
                        self.skips.recovered(&key, first);
                    }
                }
                Op::Delete(key) => {
                    // The newest state, not the committed one: a delete that follows an
                    // uncommitted upsert of the same key must win over it.
                    if self.may_be_indexed(&key.to_string()) {
                        self.index.delete(&key);
                        self.stats.documents_deleted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        let mut dropped = self.dropped.lock().unwrap_or_else(|e| e.into_inner());
        for (connector, at) in paid {
            if dropped.remove(&connector) {
                tracing::info!(connector = %connector, "a reconciliation ended after the model failed on some of its writes: it stays owed, and the connector reconciles again");
                self.skips
                    .reconcile_again
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(connector);
            } else {
                self.skips.reconciled(&connector, at);
            }
        }
        Ok(checkpoints)
    }

    /// A version the model could not embed: nothing is written for it. The previous version
    /// stays, and its connector sends it again at its next scan; unless the ACL changed, since
    /// the old text may not stay readable under the old ACL (as for a parse that timed out).
    fn not_embedded(&self, record: &DocumentRecord, reason: &str) {
        self.stats.documents_failed.fetch_add(1, Ordering::Relaxed);
        self.skips.record(&record.key, reason);
        let previous = self.index.latest_entry(&record.key.to_string());
        let acl_changed = !self.stays_under(previous.as_ref(), &record.acl);
        if acl_changed {
            self.index.delete(&record.key);
            self.stats.documents_deleted.fetch_add(1, Ordering::Relaxed);
        }
        self.skips.failed(
            &record.key,
            &record.version,
            &record.acl.fingerprint(),
            !acl_changed,
            false,
        );
        self.skips.give_up(&record.key, &record.version);
    }

    /// Parses and chunks a document and finds reusable vectors. `Ok(None)`: nothing changed.
    fn prepare(&self, mut doc: SourceDocument) -> Result<Option<Prepared>, Failure> {
        let key_str = doc.key.to_string();
        // Compared with the newest state: an edit reverted before the commit is a change.
        let previous = self.index.latest_entry(&key_str);
        if let Some(prev) = &previous
            && prev.version == doc.version
            && prev.acl_fingerprint == doc.acl.fingerprint()
            && !doc.reparse
        {
            return Ok(None);
        }
        if doc.acl.is_closed() {
            return Err(Failure {
                key: doc.key,
                reason: "no principal may read this document (ACL allows nobody)".into(),
                keep_previous: false,
                retry: None,
                send_again: false,
            });
        }
        // Every entry must read back as itself (the index stores tokens, and a rebuild or the
        // ACL recheck parses them): one that would not, a deny above all, would read back as
        // no entry, and the document as readable by more.
        if let Some(p) = doc.acl.allow.iter().chain(&doc.acl.deny).find(|p| {
            p.token()
                .parse::<docent_connector_api::Principal>()
                .ok()
                .as_ref()
                != Some(*p)
        }) {
            return Err(Failure {
                key: doc.key,
                reason: format!(
                    "its ACL names {:?}, which is not a valid principal (an empty id or one \
                     with whitespace): not indexed rather than indexed under another ACL",
                    p.token()
                ),
                keep_previous: false,
                retry: None,
                send_again: false,
            });
        }
        let limits = self
            .cfg
            .limits
            .get(&doc.key.connector)
            .copied()
            .unwrap_or_default();
        let content = Arc::new(std::mem::take(&mut doc.content));
        let parsed = match self.parse(content.clone(), &doc, limits) {
            Ok(parsed) => parsed,
            Err(e) => {
                // A failure that says nothing about the document (a timeout on a busy machine,
                // busy or unavailable parsers) keeps the indexed version, unless the ACL
                // changed too: the old text may not stay readable under the old ACL. Busy or
                // unavailable parsers are tried again soon.
                let not_its_own = e.is_transient() || e.timed_out();
                let keep_previous = not_its_own && self.stays_under(previous.as_ref(), &doc.acl);
                let key = doc.key.clone();
                // A timeout is not retried here: a document that took the whole deadline once
                // most likely takes it again. One parsed in a process (killed) is sent again by
                // its connector (`SkipLog::give_up`: at its next scan, then after 10 minutes to
                // 8 hours); one parsed in process is not, since each attempt would leave one
                // more parser thread running (Rust cannot stop one), and four stop every
                // in-process parse (a review): it waits for its next change or a forced full
                // sync (`docent sync --full`; a scheduled reconciliation takes it as sent).
                let retry = e.is_transient().then(|| {
                    // An abandoned parser thread may still hold the bytes: then they are copied.
                    doc.content = Arc::try_unwrap(content).unwrap_or_else(|c| c.to_vec());
                    Box::new(doc)
                });
                return Err(Failure {
                    key,
                    reason: e.to_string(),
                    keep_previous,
                    retry,
                    send_again: matches!(e, parse::ParseError::Timeout(_)),
                });
            }
        };
        drop(content);
        let content_hash = hex::encode(&Sha256::digest(parsed.text.as_bytes())[..16]);
        let mut title = doc
            .title
            .clone()
            .filter(|t| !t.trim().is_empty())
            .unwrap_or(parsed.title.clone());
        // A connector's or a pusher's title is copied into every chunk, as the parser's is.
        crate::parse::cap_heading(&mut title);
        let counter = self.embedder.token_counter();
        let chunks = chunk::chunk(&parsed, self.cfg.chunking, counter.as_ref());
        if chunks.is_empty() {
            return Err(Failure {
                key: doc.key,
                reason: "no text extracted".into(),
                keep_previous: false,
                retry: None,
                send_again: false,
            });
        }
        // Vectors of the previous version, reusable for chunks whose embedded text is unchanged.
        let old = match &previous {
            Some(_) => self.index.chunk_vectors(&doc.key).unwrap_or_default(),
            None => HashMap::new(),
        };
        let mut records = Vec::with_capacity(chunks.len());
        let mut to_embed = Vec::with_capacity(chunks.len());
        for c in chunks {
            let text = parsed.text[c.span.clone()].to_string();
            let embed_text = embedding_input(&title, &c.heading_path, &text);
            let hash = hex::encode(&Sha256::digest(embed_text.as_bytes())[..16]);
            let vector = match old.get(&hash) {
                Some(v) => {
                    self.stats.chunks_reused.fetch_add(1, Ordering::Relaxed);
                    to_embed.push(None);
                    v.clone()
                }
                None => {
                    to_embed.push(Some(embed_text));
                    Vec::new()
                }
            };
            records.push(ChunkRecord {
                ord: c.ord,
                span: c.span,
                page: c.page,
                heading_path: c.heading_path,
                text,
                hash,
                vector,
            });
        }
        let mut attributes = doc.attributes;
        attributes.insert("source".into(), doc.key.connector.clone());
        if let Some(m) = doc.modified_at {
            attributes.insert("modified_at".into(), m.to_string());
        }
        let record = DocumentRecord {
            key: doc.key,
            uri: doc.uri,
            title,
            version: doc.version,
            modified_at: doc.modified_at,
            attributes,
            acl: doc.acl,
            content_hash,
            chunks: records,
        };
        // A document the backend cannot hold (a Milvus field limit) fails alone, before any
        // commit would fail on it again and again.
        if let Err(reason) = self.index.check(&record) {
            return Err(Failure {
                key: record.key,
                reason: format!("the index cannot hold it: {reason}"),
                keep_previous: false,
                retry: None,
                send_again: false,
            });
        }
        Ok(Some(Prepared { record, to_embed }))
    }
}

impl Pipeline {
    fn parse(
        &self,
        content: Arc<Vec<u8>>,
        doc: &SourceDocument,
        limits: parse::ParseLimits,
    ) -> Result<parse::ParsedDoc, parse::ParseError> {
        #[cfg(test)]
        if self
            .unavailable_parses
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(parse::ParseError::WorkerUnavailable("injected".into()));
        }
        #[cfg(test)]
        if self
            .timed_out_parses
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(parse::ParseError::Timeout(limits.timeout));
        }
        parse::parse_limited(content, doc.mime.clone(), doc.name_hint.clone(), limits)
    }
}

/// A delay as people write it: "30 s", "2 min", "8 min", "1 h".
fn humantime_short(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{} ms", d.as_millis()),
        1..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        _ => format!("{} h", s / 3600),
    }
}

/// What the embedding model sees for a chunk: title and headings give a passage its context.
pub fn embedding_input(title: &str, heading_path: &[String], text: &str) -> String {
    let mut s = String::with_capacity(title.len() + text.len() + 16);
    if !title.is_empty() {
        s.push_str(title);
        s.push_str(". ");
    }
    let last = heading_path.last().filter(|h| h.as_str() != title);
    if let Some(h) = last {
        s.push_str(h);
        s.push_str(". ");
    }
    s.push_str(text);
    s
}

#[cfg(test)]
mod tests {
    //! Interleaved put / delete / move / commit sequences against a model where the last change
    //! of each key wins, whatever the batching and commit points (issue 9: a delete that arrived
    //! before the commit of the upsert it cancels was lost).

    use std::collections::BTreeMap;

    use docent_connector_api::{Acl, Change, DocKey, Principal, SourceDocument};
    use proptest::prelude::*;

    use super::*;
    use crate::embed::test_embedder::BagOfWords;
    use crate::index::Index;

    /// Session 31's review: with a full disk every commit rolled back at once, and each
    /// rollback had connectors send everything again, to be embedded and rolled back again.
    /// The pipeline waits after a rollback, longer after each in a row.
    #[test]
    fn the_pause_after_rollbacks_doubles_up_to_thirty_seconds() {
        let secs: Vec<u64> = [1, 2, 3, 5, 6, 7, 40]
            .map(|n| rollback_wait(n).as_secs())
            .to_vec();
        assert_eq!(secs, [1, 2, 4, 16, 30, 30, 30]);
    }

    #[derive(Debug, Clone)]
    enum Step {
        Put(u8, u8),
        Delete(u8),
        /// Key `from` disappears and its content shows up under `to` (a rename).
        Move(u8, u8),
        /// Ends the current batch.
        Flush,
        /// Ends the batch and commits.
        Commit,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0u8..4, 0u8..3).prop_map(|(k, v)| Step::Put(k, v)),
            3 => (0u8..4).prop_map(Step::Delete),
            2 => (0u8..4, 0u8..4).prop_map(|(a, b)| Step::Move(a, b)),
            2 => Just(Step::Flush),
            1 => Just(Step::Commit),
        ]
    }

    fn doc(k: u8, v: u8) -> SourceDocument {
        SourceDocument {
            key: DocKey::new("c", format!("doc{k}.md")),
            uri: format!("push://c/doc{k}.md"),
            title: None,
            mime: Some("text/markdown".into()),
            name_hint: format!("doc{k}.md"),
            content: format!("# Note {k}\n\nRevision {v} of note {k} about kestrels.").into_bytes(),
            version: v.to_string(),
            modified_at: None,
            attributes: BTreeMap::new(),
            acl: Acl::new([Principal::Everyone], []),
            job: None,
            reparse: false,
        }
    }

    fn test_index(dir: &std::path::Path) -> Arc<Index> {
        Arc::new(Index::open(dir, BagOfWords.model_id(), BagOfWords.dim()).unwrap())
    }

    /// A pipeline into `index` with `limits` for connector `c`.
    fn pipeline_into(index: &Arc<Index>, limits: Option<crate::parse::ParseLimits>) -> Pipeline {
        pipeline_with(index, Arc::new(BagOfWords), limits)
    }

    fn pipeline_with(
        index: &Arc<Index>,
        embedder: Arc<dyn Embedder>,
        limits: Option<crate::parse::ParseLimits>,
    ) -> Pipeline {
        Pipeline::new(
            index.clone(),
            embedder,
            PipelineConfig {
                limits: limits.map(|l| ("c".to_string(), l)).into_iter().collect(),
                ..PipelineConfig::for_tests()
            },
            Arc::default(),
            Arc::default(),
        )
    }

    /// A parse that times out (a busy machine, or the document) keeps the indexed version, as
    /// long as the ACL is the one it was indexed under, and its connector sends it again; with
    /// a changed ACL it is withdrawn.
    #[test]
    fn a_timed_out_parse_keeps_the_previous_version_under_an_unchanged_acl() {
        let dir = tempfile::tempdir().unwrap();
        let index = test_index(dir.path());
        let version = |v: u8, acl: Acl| {
            let mut d = doc(0, v);
            d.acl = acl;
            d.content
                // (Under `parse::IN_PROCESS_MAX`: parsed in this process.)
                .extend("\n\nkestrels and more kestrels".repeat(30_000).bytes());
            Change::Upsert(Box::new(d))
        };
        let everyone = || Acl::new([Principal::Everyone], []);
        let indexed = || index.doc_entry("c:doc0.md").map(|e| e.version);
        let apply = |p: &Pipeline, change| {
            p.process(vec![change]).unwrap();
            index.commit(BTreeMap::new()).unwrap();
        };
        apply(&pipeline_into(&index, None), version(1, everyone()));
        assert_eq!(indexed(), Some("1".to_string()));

        // Far shorter than parsing 840 KB of Markdown takes.
        let slow = pipeline_into(
            &index,
            Some(crate::parse::ParseLimits {
                timeout: Duration::from_nanos(1),
                ..Default::default()
            }),
        );
        apply(&slow, version(2, everyone()));
        assert_eq!(
            indexed(),
            Some("1".to_string()),
            "a timeout keeps version 1"
        );
        // In process, its parser thread still runs: it is not sent again, which would leave
        // one more running each time.
        let key = DocKey::new("c", "doc0.md");
        assert_eq!(slow.skips.gave_up_on(&key), None);
        // In a parser process (killed), its connector is to send version 2 again (a review: a
        // timeout was never sent again, so the new version stayed out until the file changed).
        slow.timed_out_parses.store(1, Ordering::Relaxed);
        apply(&slow, version(2, everyone()));
        assert_eq!(indexed(), Some("1".to_string()));
        assert_eq!(slow.skips.gave_up_on(&key).as_deref(), Some("2"));
        let narrowed = Acl::new([Principal::User("hana".into())], []);
        apply(&slow, version(2, narrowed));
        assert_eq!(
            indexed(),
            None,
            "under a changed ACL, version 1 is withdrawn"
        );
    }

    /// A model that fails now and then (an ONNX Runtime error, memory): [`BagOfWords`] while
    /// `failing` is false; with `short`, one vector fewer than it was given texts.
    #[derive(Default)]
    struct Flaky {
        failing: std::sync::atomic::AtomicBool,
        /// Panics on a batch holding a text with this word ("" for every batch).
        panics_on: Option<&'static str>,
        short: bool,
        /// The first vector's first values are NaN and infinite.
        not_numbers: bool,
    }

    impl crate::embed::Embedder for Flaky {
        fn model_id(&self) -> &str {
            BagOfWords.model_id()
        }
        fn dim(&self) -> usize {
            BagOfWords.dim()
        }
        fn embed_passages(
            &self,
            texts: &[String],
        ) -> Result<Vec<Vec<f32>>, crate::embed::EmbedError> {
            if self.failing.load(Ordering::Relaxed) {
                return Err(crate::embed::EmbedError::Inference("out of memory".into()));
            }
            if let Some(w) = self.panics_on
                && texts.iter().any(|t| t.contains(w))
            {
                panic!("a tokenizer bug on {w:?}");
            }
            let mut v = BagOfWords.embed_passages(texts)?;
            if self.short {
                v.pop();
            }
            if self.not_numbers {
                v[0][0] = f32::NAN;
                v[0][1] = f32::INFINITY;
            }
            Ok(v)
        }
        fn embed_query(&self, text: &str) -> Result<Vec<f32>, crate::embed::EmbedError> {
            BagOfWords.embed_query(text)
        }
        fn token_counter(&self) -> Arc<dyn crate::chunk::TokenCounter> {
            BagOfWords.token_counter()
        }
    }

    /// Vectors missing from the model's answer fail the batch's writes as a model failure
    /// (found by a review: the chunks were written with empty vectors, out of the dense leg's
    /// reach, and nothing said so).
    #[test]
    fn a_model_that_gives_too_few_vectors_fails_the_writes() {
        let dir = tempfile::tempdir().unwrap();
        let index = test_index(dir.path());
        let short = Flaky {
            short: true,
            ..Flaky::default()
        };
        let p = pipeline_with(&index, Arc::new(short), None);
        p.process(vec![Change::Upsert(Box::new(doc(0, 1)))])
            .unwrap();
        index.commit(BTreeMap::new()).unwrap();
        assert!(index.doc_entry("c:doc0.md").is_none());
        let (failed, recent) = p.skips.get("c");
        assert_eq!(failed, 1);
        assert!(recent[0].1.contains("vectors for"), "{recent:?}");
    }

    /// Session 43's review: a model that panics on one document's text failed every batch it
    /// was in (the batch rolled back, connectors reconciled, and the batch failed again). The
    /// batch's documents are embedded one by one and that document alone fails.
    #[test]
    fn a_model_that_panics_on_one_text_fails_that_document_alone() {
        let dir = tempfile::tempdir().unwrap();
        let index = test_index(dir.path());
        let mut poisoned = doc(1, 1);
        poisoned.content = b"# Poison\n\nThis text holds zzpoison for the tokenizer.".to_vec();
        let model = Flaky {
            panics_on: Some("zzpoison"),
            ..Flaky::default()
        };
        let p = pipeline_with(&index, Arc::new(model), None);
        let checkpoints = p
            .process(vec![
                Change::Upsert(Box::new(doc(0, 1))),
                Change::Upsert(Box::new(poisoned)),
                Change::Upsert(Box::new(doc(2, 1))),
                Change::Checkpoint {
                    connector: "c".into(),
                    checkpoint: serde_json::json!({"at": 3}),
                },
            ])
            .unwrap();
        assert_eq!(
            checkpoints.len(),
            1,
            "the batch applied, its checkpoint with it"
        );
        index.commit(checkpoints).unwrap();
        assert!(index.doc_entry("c:doc1.md").is_none());
        // The others, each with its own vectors: as a model that never panics gives them.
        let plain_dir = tempfile::tempdir().unwrap();
        let plain = test_index(plain_dir.path());
        pipeline_into(&plain, None)
            .process(vec![
                Change::Upsert(Box::new(doc(0, 1))),
                Change::Upsert(Box::new(doc(2, 1))),
            ])
            .unwrap();
        plain.commit(BTreeMap::new()).unwrap();
        for k in [0, 2] {
            let key = doc(k, 1).key;
            let vectors = index.chunk_vectors(&key).unwrap();
            assert!(!vectors.is_empty());
            assert_eq!(vectors, plain.chunk_vectors(&key).unwrap(), "doc{k}");
        }
        let (failed, recent) = p.skips.get("c");
        assert_eq!(failed, 1);
        assert!(recent[0].1.contains("the model failed"), "{recent:?}");
        assert_eq!(
            p.skips.gave_up_on(&DocKey::new("c", "doc1.md")).as_deref(),
            Some("1")
        );
    }

    /// A model that panics on everything fails the batch as a model failure (the previous
    /// versions stay, the connector reconciles again), not each document as its own (they
    /// would all be given up until they change).
    #[test]
    fn a_model_that_panics_on_everything_is_a_model_failure() {
        let dir = tempfile::tempdir().unwrap();
        let index = test_index(dir.path());
        let model = Flaky {
            panics_on: Some(""),
            ..Flaky::default()
        };
        let p = pipeline_with(&index, Arc::new(model), None);
        let checkpoints = p
            .process(vec![
                Change::Upsert(Box::new(doc(0, 1))),
                Change::Checkpoint {
                    connector: "c".into(),
                    checkpoint: serde_json::json!({"at": 1}),
                },
            ])
            .unwrap();
        assert!(checkpoints.is_empty(), "no checkpoint past a model failure");
        let (_, recent) = p.skips.get("c");
        assert!(recent[0].1.contains("embedding failed"), "{recent:?}");
    }

    /// Session 37's review: a vector holding NaN or an infinity was written as it came (a
    /// backend that refuses it retried the batch forever). Those values are taken as 0 and
    /// the document is indexed.
    #[test]
    fn a_vector_that_is_not_numbers_is_made_one() {
        let dir = tempfile::tempdir().unwrap();
        let index = test_index(dir.path());
        let odd = Flaky {
            not_numbers: true,
            ..Flaky::default()
        };
        let p = pipeline_with(&index, Arc::new(odd), None);
        p.process(vec![Change::Upsert(Box::new(doc(0, 1)))])
            .unwrap();
        index.commit(BTreeMap::new()).unwrap();
        assert!(index.doc_entry("c:doc0.md").is_some());
        let vectors = index.chunk_vectors(&DocKey::new("c", "doc0.md")).unwrap();
        assert!(!vectors.is_empty());
        for v in vectors.values() {
            assert!(v.iter().all(|x| x.is_finite()), "{v:?}");
            let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-3 || norm == 0.0, "{norm}");
        }
    }

    /// A new version the model fails to embed keeps the indexed one only under the ACL it was
    /// indexed with: text edited and narrowed in one go is withdrawn (found by a review: the
    /// old text stayed readable under the old, wider ACL for as long as the model failed).
    #[test]
    fn a_version_the_model_fails_on_keeps_the_previous_one_only_under_its_acl() {
        let dir = tempfile::tempdir().unwrap();
        let index = test_index(dir.path());
        let model = Arc::new(Flaky::default());
        let p = pipeline_with(&index, model.clone(), None);
        let indexed = || index.doc_entry("c:doc0.md").map(|e| e.version);
        let apply = |d: SourceDocument| {
            p.process(vec![Change::Upsert(Box::new(d))]).unwrap();
            index.commit(BTreeMap::new()).unwrap();
        };
        apply(doc(0, 1));
        assert_eq!(indexed(), Some("1".to_string()));

        model.failing.store(true, Ordering::Relaxed);
        apply(doc(0, 2));
        assert_eq!(
            indexed(),
            Some("1".to_string()),
            "same ACL: version 1 stays"
        );
        let mut narrowed = doc(0, 2);
        narrowed.acl = Acl::new([Principal::User("hana".into())], []);
        apply(narrowed);
        assert_eq!(indexed(), None, "narrowed ACL: version 1 is withdrawn");
    }

    /// An ACL entry that would not read back as itself (a group named with a space, from a
    /// directory) fails its document, and the previous version goes: a deny lost on reading
    /// back would leave the document readable by more (found by a review of the rebuild path).
    #[test]
    fn a_document_whose_acl_would_not_read_back_is_not_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let index = test_index(dir.path());
        let p = pipeline_into(&index, None);
        let indexed = || index.doc_entry("c:doc0.md").map(|e| e.version);
        p.process(vec![Change::Upsert(Box::new(doc(0, 1)))])
            .unwrap();
        index.commit(BTreeMap::new()).unwrap();
        assert_eq!(indexed(), Some("1".to_string()));
        let mut spaced = doc(0, 2);
        spaced.acl = Acl::new(
            [Principal::Everyone],
            [Principal::Group("domain guests".into())],
        );
        p.process(vec![Change::Upsert(Box::new(spaced))]).unwrap();
        index.commit(BTreeMap::new()).unwrap();
        assert_eq!(indexed(), None, "neither version 2 nor version 1 stays");
    }

    /// A version that fails after an earlier write of the same key in its batch does not keep
    /// "the previous version": that is the earlier write, maybe under another ACL (found by a
    /// review: v2 opened to everyone, then v3 back to hana failing transiently, left v2 open).
    #[test]
    fn a_failed_version_does_not_keep_a_write_from_earlier_in_its_batch() {
        // PDFs fail transiently here: their parser process cannot start. (No other test of
        // this binary parses a PDF through `parse_limited`.)
        crate::parse::isolate::use_worker_process("/nonexistent/docent".into());
        let dir = tempfile::tempdir().unwrap();
        let index = test_index(dir.path());
        let pipeline = pipeline_into(&index, None);
        let hana = || Acl::new([Principal::User("hana".into())], []);
        let version = |v: u8, acl: Acl, pdf: bool| {
            let mut d = doc(0, v);
            d.acl = acl;
            if pdf {
                d.mime = Some("application/pdf".into());
                d.content = crate::parse::samples::pdf(&[&["Revision about kestrels"]]);
            }
            Change::Upsert(Box::new(d))
        };
        pipeline.process(vec![version(1, hana(), false)]).unwrap();
        index.commit(BTreeMap::new()).unwrap();
        // One batch: v2 for everyone is indexed, v3 back to hana alone fails transiently.
        pipeline
            .process(vec![
                version(2, Acl::new([Principal::Everyone], []), false),
                version(3, hana(), true),
            ])
            .unwrap();
        index.commit(BTreeMap::new()).unwrap();
        assert_eq!(
            index.doc_entry("c:doc0.md").map(|e| e.version),
            None,
            "v2 (everyone) must not stand in for v3 (hana)"
        );
    }

    /// The pipeline's retries, due or not.
    fn all_retries(p: &Pipeline) -> Vec<Pending> {
        p.retries()
            .take_due(Instant::now() + Duration::from_secs(1 << 30), usize::MAX)
    }

    fn indexed_version(index: &Index) -> Option<String> {
        index.latest_entry("c:doc0.md").map(|e| e.version)
    }

    /// A document whose parser could not run is kept and tried again soon, not only at its
    /// connector's next full scan; the skip log says when.
    #[test]
    fn a_document_whose_parser_could_not_run_is_tried_again() {
        let dir = tempfile::tempdir().unwrap();
        let index = test_index(dir.path());
        let pipeline = pipeline_into(&index, None);
        pipeline.unavailable_parses.store(1, Ordering::Relaxed);
        pipeline
            .process(vec![Change::Upsert(Box::new(doc(0, 1)))])
            .unwrap();
        assert_eq!(indexed_version(&index), None);
        let (_, recent) = pipeline.skips.get("c");
        assert!(recent[0].1.ends_with("(tried again in 30 s)"), "{recent:?}");
        let due = all_retries(&pipeline);
        assert_eq!(due.len(), 1);
        pipeline.process_with(due, Vec::new()).unwrap();
        assert_eq!(indexed_version(&index), Some("1".to_string()));
        assert!(all_retries(&pipeline).is_empty());
        // Indexed after all: it leaves the skip log.
        assert_eq!(pipeline.skips.get("c"), (0, Vec::new()));
    }

    /// A document waiting in the retry queue when the pipeline stops is tried once more before
    /// the last commit: a push client was told ACCEPTED, and nothing would send it again.
    #[tokio::test]
    async fn a_document_waiting_for_a_retry_is_tried_before_the_last_commit() {
        let dir = tempfile::tempdir().unwrap();
        let index = test_index(dir.path());
        let p = pipeline_into(&index, None);
        p.unavailable_parses.store(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(4);
        let mut pushed = doc(0, 1);
        pushed.key = DocKey::new("push", "doc0.md");
        tx.send(Change::Upsert(Box::new(pushed))).await.unwrap();
        drop(tx);
        p.run(rx).await.unwrap();
        assert!(index.doc_entry("push:doc0.md").is_some());
    }

    /// A document waiting in the retry queue when the daemon stops makes its connector
    /// reconcile once at the next start: its checkpoints were committed past the change
    /// (session 30's review: only rollbacks were remembered, and an edit waited for the
    /// reconciliation schedule).
    #[test]
    fn a_document_waiting_for_a_retry_makes_its_connector_reconcile_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let index = test_index(dir.path());
        let pipeline = pipeline_into(&index, None);
        use docent_connector_api::IndexedState;
        // `c` is a connector that reconciles (as every crawler does at its start).
        let before = IndexedView {
            index: index.clone(),
            skips: pipeline.skips.clone(),
        };
        assert!(!before.reconciliation_owed("c"));
        pipeline.unavailable_parses.store(1, Ordering::Relaxed);
        pipeline
            .process(vec![Change::Upsert(Box::new(doc(0, 1)))])
            .unwrap();
        let mut cps = BTreeMap::from([("c".to_string(), serde_json::json!({ "pos": 1 }))]);
        cps.insert(OWED_KEY.to_string(), pipeline.owed_now());
        index.commit(cps).unwrap();
        drop(pipeline);
        let restarted = pipeline_into(&index, None);
        let view = IndexedView {
            index: index.clone(),
            skips: restarted.skips.clone(),
        };
        assert!(view.reconciliation_owed("c"));
        assert!(!view.reconciliation_owed("other"));
    }

    /// A version the pipeline gives up on for a reason not its own is reported to connectors,
    /// whose record of having sent it then no longer counts as "unchanged" (a crawler compares
    /// with what it last sent, so it would never send it again); a document's own failure is
    /// not, and an indexed version is given up on no longer.
    #[test]
    fn connectors_see_the_versions_given_up_on() {
        use docent_connector_api::IndexedState;
        let dir = tempfile::tempdir().unwrap();
        let index = test_index(dir.path());
        let mut pipeline = pipeline_into(&index, None);
        pipeline.cfg.retry.attempts = 0;
        let view = IndexedView {
            index: index.clone(),
            skips: pipeline.skips.clone(),
        };
        let key = doc(0, 1).key;
        pipeline.unavailable_parses.store(1, Ordering::Relaxed);
        pipeline
            .process(vec![Change::Upsert(Box::new(doc(0, 1)))])
            .unwrap();
        index.commit(BTreeMap::new()).unwrap();
        assert_eq!(view.gave_up(&key), Some("1".to_string()));
        let sent = Some(docent_connector_api::IndexedDoc {
            version: "1".into(),
            acl_fingerprint: doc(0, 1).acl.fingerprint(),
        });
        assert!(!docent_connector_api::sent_stands(&view, &key, &sent));

        // Sent again, and indexed: nothing given up.
        pipeline
            .process(vec![Change::Upsert(Box::new(doc(0, 1)))])
            .unwrap();
        index.commit(BTreeMap::new()).unwrap();
        assert_eq!(view.gave_up(&key), None);
        assert!(docent_connector_api::sent_stands(&view, &key, &sent));

        // Given up on again and again (an outage): the connector is told after a growing wait,
        // not at every scan. Another version starts over.
        let other = doc(2, 1);
        pipeline.skips.give_up(&other.key, "1");
        assert_eq!(view.gave_up(&other.key), Some("1".to_string()));
        pipeline.skips.give_up(&other.key, "1");
        assert_eq!(view.gave_up(&other.key), None, "waits 10 minutes");
        pipeline.skips.give_up(&other.key, "2");
        assert_eq!(view.gave_up(&other.key), Some("2".to_string()));
        assert_eq!(gave_up_wait(3), Duration::from_secs(1200));
        assert_eq!(gave_up_wait(40), Duration::from_secs(8 * 3600));

        // A document's own failure (nothing to index) is not given up on: sent again only
        // when it changes.
        let mut empty = doc(1, 1);
        empty.content.clear();
        pipeline
            .process(vec![Change::Upsert(Box::new(empty.clone()))])
            .unwrap();
        assert_eq!(view.gave_up(&empty.key), None);
    }

    /// The connector's failure hook (a push source flags its waiting calls and forgets what it
    /// accepted) hears of a version at its first failure, while a retry is pending (a review: a
    /// push was answered committed while its retry waited in memory), and again when retries
    /// are over.
    #[test]
    fn the_failure_hook_hears_of_a_version_while_its_retry_is_pending() {
        let dir = tempfile::tempdir().unwrap();
        let index = test_index(dir.path());
        let mut pipeline = pipeline_into(&index, None);
        pipeline.cfg.retry.attempts = 1;
        let heard = Arc::new(Mutex::new(Vec::new()));
        let h = heard.clone();
        pipeline.skips.on_failed_upsert(
            "c",
            FailureHook(Arc::new(
                move |id: &str, v: &str, _acl: &str, kept: bool, retrying: bool| {
                    h.lock()
                        .unwrap()
                        .push((id.to_string(), v.to_string(), kept, retrying))
                },
            )),
        );
        pipeline.unavailable_parses.store(2, Ordering::Relaxed);
        pipeline
            .process(vec![Change::Upsert(Box::new(doc(0, 1)))])
            .unwrap();
        let heard_as = |retrying| ("doc0.md".to_string(), "1".to_string(), true, retrying);
        assert_eq!(
            *heard.lock().unwrap(),
            vec![heard_as(true)],
            "a retry is pending"
        );
        pipeline
            .process_with(all_retries(&pipeline), Vec::new())
            .unwrap();
        assert_eq!(
            *heard.lock().unwrap(),
            vec![heard_as(true), heard_as(false)]
        );
        assert!(all_retries(&pipeline).is_empty());
    }

    /// Found by a review: a connector held in a system call (a hung network mount) kept its
    /// sender, and the pipeline, and the daemon's shutdown, waiting for ever. Past the grace the
    /// queue is closed, and what it held is committed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sender_that_never_stops_does_not_hold_the_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let index = test_index(dir.path());
        let token = tokio_util::sync::CancellationToken::new();
        let mut pipeline = pipeline_into(&index, None).with_shutdown(token.clone());
        pipeline.shutdown_grace = Duration::from_millis(200);
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tx.send(Change::Upsert(Box::new(doc(0, 1)))).await.unwrap();
        let run = tokio::spawn(pipeline.run(rx));
        token.cancel();
        let ended = tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .expect("the pipeline ends with a sender still held");
        assert!(ended.unwrap().is_ok());
        assert_eq!(indexed_version(&index), Some("1".to_string()));
        assert!(tx.send(Change::Delete(doc(0, 0).key)).await.is_err());
    }

    /// A push source's checkpoint (its commit marker, which tells waiting calls their changes
    /// are committed) stays out of the commit while one of its documents waits in the retry
    /// queue, which lives in memory; a connector that reconciles moves on.
    #[test]
    fn a_connector_that_does_not_reconcile_keeps_its_checkpoint_while_a_retry_waits() {
        let dir = tempfile::tempdir().unwrap();
        let index = test_index(dir.path());
        let pipeline = Arc::new(pipeline_into(&index, None));
        docent_connector_api::IndexedState::reconciliation_owed(
            &IndexedView {
                index: index.clone(),
                skips: pipeline.skips.clone(),
            },
            "other",
        );
        let mut retried = doc(0, 1);
        retried.key = DocKey::new("other", "doc0.md");
        pipeline.unavailable_parses.store(2, Ordering::Relaxed);
        let checkpoints = pipeline
            .process(vec![
                Change::Upsert(Box::new(doc(0, 1))),
                Change::Upsert(Box::new(retried)),
                Change::Checkpoint {
                    connector: "c".into(),
                    checkpoint: serde_json::json!({"seq": 1}),
                },
                Change::Checkpoint {
                    connector: "other".into(),
                    checkpoint: serde_json::json!({"pos": 1}),
                },
            ])
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(pipeline.commit_retrying(checkpoints, Some(1)))
            .unwrap();
        assert!(!index.checkpoints().contains_key("c"), "held back");
        assert_eq!(index.checkpoints()["other"]["pos"], 1);

        // The retry indexes it: the next marker is committed with it.
        let checkpoints = pipeline
            .process_with(
                all_retries(&pipeline),
                vec![Change::Checkpoint {
                    connector: "c".into(),
                    checkpoint: serde_json::json!({"seq": 2}),
                }],
            )
            .unwrap();
        rt.block_on(pipeline.commit_retrying(checkpoints, Some(1)))
            .unwrap();
        assert_eq!(index.checkpoints()["c"]["seq"], 2);
        assert_eq!(indexed_version(&index), Some("1".to_string()));
    }

    /// A newer change of the document (an edit, a delete, a skip, even later in the same
    /// batch) makes its pending retry stale: the old version never comes back over it.
    #[test]
    fn a_newer_change_cancels_a_pending_retry() {
        let dir = tempfile::tempdir().unwrap();
        let index = test_index(dir.path());
        let pipeline = pipeline_into(&index, None);
        let newer_changes = [
            Change::Upsert(Box::new(doc(0, 2))),
            Change::Delete(doc(0, 0).key),
            Change::Skipped {
                key: doc(0, 0).key,
                reason: "too big".into(),
            },
        ];
        for newer in newer_changes {
            pipeline.unavailable_parses.store(1, Ordering::Relaxed);
            pipeline
                .process(vec![Change::Upsert(Box::new(doc(0, 1))), newer.clone()])
                .unwrap();
            assert!(
                all_retries(&pipeline).is_empty(),
                "a retry outlived {newer:?}"
            );
        }
        // Waiting in the queue, then changed in a later batch.
        pipeline.unavailable_parses.store(1, Ordering::Relaxed);
        pipeline
            .process(vec![Change::Upsert(Box::new(doc(0, 3)))])
            .unwrap();
        pipeline
            .process(vec![Change::Upsert(Box::new(doc(0, 4)))])
            .unwrap();
        assert!(all_retries(&pipeline).is_empty());
        assert_eq!(indexed_version(&index), Some("4".to_string()));
    }

    /// Retries stop after the configured number, each later than the one before; then the
    /// document waits until it changes or a full sync, and the skip log says so.
    #[test]
    fn retries_stop_after_the_configured_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let index = test_index(dir.path());
        let mut pipeline = pipeline_into(&index, None);
        pipeline.cfg.retry.attempts = 2;
        pipeline
            .unavailable_parses
            .store(u64::MAX, Ordering::Relaxed);
        pipeline
            .process(vec![Change::Upsert(Box::new(doc(0, 1)))])
            .unwrap();
        let mut delays = Vec::new();
        loop {
            let before = Instant::now();
            let due = all_retries(&pipeline);
            if due.is_empty() {
                break;
            }
            assert_eq!(due.len(), 1);
            delays.push(due[0].due.saturating_duration_since(before));
            pipeline.process_with(due, Vec::new()).unwrap();
        }
        assert_eq!(delays.len(), 2, "{delays:?}");
        assert!(delays[1] > delays[0] * 3, "{delays:?}");
        let (total, recent) = pipeline.skips.get("c");
        assert_eq!(total, 1, "one document");
        assert!(
            recent[0]
                .1
                .ends_with("(after 3 attempts; tried again when it changes or at a full sync)"),
            "{recent:?}"
        );
        assert_eq!(indexed_version(&index), None);
    }

    /// Content held for retries is bounded: past the bound a document waits for the full scan.
    #[test]
    fn the_retry_queue_holds_at_most_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let index = test_index(dir.path());
        let mut pipeline = pipeline_into(&index, None);
        pipeline.cfg.retry.max_bytes = 2 * doc(0, 1).held_bytes();
        pipeline.unavailable_parses.store(3, Ordering::Relaxed);
        pipeline
            .process(
                (0..3)
                    .map(|k| Change::Upsert(Box::new(doc(k, 1))))
                    .collect(),
            )
            .unwrap();
        // A batch takes at most `max_batch` of the due retries (here 1).
        let now = Instant::now() + Duration::from_secs(1 << 30);
        assert_eq!(pipeline.retries().take_due(now, 1).len(), 1);
        assert_eq!(all_retries(&pipeline).len(), 1);
        assert_eq!(pipeline.retries().bytes, 0);
        // A document of little text and a large ACL counts all it holds (a review).
        let mut wide = doc(7, 1);
        wide.acl.deny = (0..1024)
            .map(|i| docent_connector_api::Principal::user(format!("{i:0>250}")))
            .collect();
        assert!(wide.held_bytes() > pipeline.cfg.retry.max_bytes);
        pipeline.unavailable_parses.store(1, Ordering::Relaxed);
        pipeline
            .process(vec![Change::Upsert(Box::new(wide))])
            .unwrap();
        assert_eq!(pipeline.retries().bytes, 0, "not held: it does not fit");
    }

    /// The running pipeline wakes up for a retry that comes due, with nothing else arriving.
    #[tokio::test]
    async fn the_running_pipeline_retries_when_due() {
        let dir = tempfile::tempdir().unwrap();
        let index = test_index(dir.path());
        let mut pipeline = pipeline_into(&index, None);
        pipeline.cfg.retry.first = Duration::from_millis(20);
        pipeline.cfg.commit_interval = Duration::from_millis(20);
        pipeline.unavailable_parses.store(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(4);
        let running = tokio::spawn(pipeline.run(rx));
        tx.send(Change::Upsert(Box::new(doc(0, 1)))).await.unwrap();
        let mut waited = 0;
        while index.doc_entry("c:doc0.md").is_none() {
            assert!(waited < 3000, "the retry never ran");
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += 1;
        }
        drop(tx);
        running.await.unwrap().unwrap();
    }

    /// Waits (up to 30 s) until the injected write failure is spent.
    async fn until_failed_write(p: &Pipeline) {
        for _ in 0..3000 {
            if p.failing_writes.load(Ordering::Relaxed) == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the write did not fail");
    }

    /// Waits (up to 30 s) until the pipeline has told `view` of a rollback.
    async fn until_rolled_back(view: &IndexedView) {
        until_rolled_back_times(view, 1).await
    }

    /// Waits (up to 30 s) until the pipeline has told `view` of `n` rollbacks.
    async fn until_rolled_back_times(view: &IndexedView, n: u64) {
        use docent_connector_api::IndexedState as _;
        for _ in 0..3000 {
            if view.rollbacks() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the failed write was not told");
    }

    /// `doc0` v1 for everyone, committed; then v2 for hana alone sent to a running pipeline
    /// (its parser unavailable when `parser_down`), and once the index shows `narrowed(entry)`,
    /// a batch that fails (`rollbacks` such batches, one after the other, before any commit).
    /// Returns whether the old version was back after the first rollback, and whether the old
    /// version (for everyone) was in the index at the end.
    async fn narrowing_then_rollback(
        parser_down: bool,
        narrowed: impl Fn(Option<crate::index::DocEntry>) -> bool,
        rollbacks: u64,
    ) -> (bool, bool) {
        let dir = tempfile::tempdir().unwrap();
        let index = test_index(dir.path());
        let mut pipeline = pipeline_into(&index, None);
        pipeline.cfg.commit_interval = Duration::from_secs(3600);
        pipeline
            .process(vec![Change::Upsert(Box::new(doc(0, 1)))])
            .unwrap();
        index.commit(BTreeMap::new()).unwrap();
        let everyone = index.doc_entry("c:doc0.md").unwrap().acl_fingerprint;
        let p = Arc::new(pipeline);
        let view = IndexedView {
            index: index.clone(),
            skips: p.skips.clone(),
        };
        let (tx, rx) = mpsc::channel(4);
        let running = tokio::spawn(p.clone().run_shared(rx));
        if parser_down {
            p.unavailable_parses.store(1, Ordering::Relaxed);
        }
        let mut v2 = doc(0, 2);
        v2.acl = Acl::new([Principal::User("hana".into())], []);
        tx.send(Change::Upsert(Box::new(v2))).await.unwrap();
        for _ in 0..3000 {
            if narrowed(index.latest_entry("c:doc0.md")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(narrowed(index.latest_entry("c:doc0.md")));
        let mut back = false;
        for n in 1..=rollbacks {
            p.failing_writes.store(1, Ordering::Relaxed);
            tx.send(Change::Upsert(Box::new(doc(n as u8, 1))))
                .await
                .unwrap();
            until_rolled_back_times(&view, n).await;
            if n == 1 {
                back = index
                    .latest_entry("c:doc0.md")
                    .is_some_and(|e| e.acl_fingerprint == everyone);
            }
        }
        drop(tx);
        running.await.unwrap().unwrap();
        let old_at_end = index
            .doc_entry("c:doc0.md")
            .is_some_and(|e| e.acl_fingerprint == everyone);
        (back, old_at_end)
    }

    /// A rollback does not bring back a version that was withdrawn because its document waits
    /// for a retry under a narrower ACL: it is withdrawn again (session 30's review: the old
    /// text was readable under its old ACL until the retry).
    #[tokio::test]
    async fn a_rollback_does_not_bring_back_a_version_withdrawn_for_a_narrower_acl() {
        let (back, indexed) = narrowing_then_rollback(true, |e| e.is_none(), 1).await;
        assert!(!back, "the old version is back under its old ACL");
        assert!(!indexed);
    }

    /// A rolled-back change that narrowed a document's ACL does not leave the old version
    /// readable under the old ACL: it is withdrawn until the change is sent again.
    #[tokio::test]
    async fn a_rolled_back_narrowing_withdraws_the_old_version() {
        let (back, indexed) = narrowing_to_hana_then_rollbacks(1).await;
        assert!(!back, "the old version is back under its old ACL");
        assert!(!indexed);
    }

    /// [`narrowing_then_rollback`] of a narrowing to hana that was written (its parser up).
    async fn narrowing_to_hana_then_rollbacks(rollbacks: u64) -> (bool, bool) {
        let hana = Acl::new([Principal::User("hana".into())], []).fingerprint();
        narrowing_then_rollback(
            false,
            move |e| e.is_some_and(|e| e.acl_fingerprint == hana),
            rollbacks,
        )
        .await
    }

    /// The withdrawal a rollback makes is itself an uncommitted write: a second rollback before
    /// any commit withdraws again (found by a review: it brought back the old version under its
    /// wider ACL, for good where the source was a push client that would not send it again).
    #[tokio::test]
    async fn a_second_rollback_does_not_undo_the_first_ones_withdrawal() {
        let (_, indexed) = narrowing_to_hana_then_rollbacks(2).await;
        assert!(!indexed, "the old version is back under its old ACL");
    }

    /// A batch that fails to write is rolled back with every uncommitted write, and the
    /// connectors are told ([`IndexedState::rollbacks`]): what they sent is not taken as done.
    #[tokio::test]
    async fn connectors_are_told_of_a_rollback() {
        use docent_connector_api::IndexedState as _;
        let dir = tempfile::tempdir().unwrap();
        let index = test_index(dir.path());
        let mut pipeline = pipeline_into(&index, None);
        pipeline.cfg.commit_interval = Duration::from_millis(20);
        pipeline.failing_writes.store(1, Ordering::Relaxed);
        let view = IndexedView {
            index: index.clone(),
            skips: pipeline.skips.clone(),
        };
        assert_eq!(view.rollbacks(), 0);
        let (tx, rx) = mpsc::channel(4);
        let running = tokio::spawn(pipeline.run(rx));
        tx.send(Change::Upsert(Box::new(doc(0, 1)))).await.unwrap();
        until_rolled_back(&view).await;
        assert_eq!(view.rollbacks(), 1);
        assert!(index.doc_entry("c:doc0.md").is_none());
        // The connector sends it again; the pipeline goes on.
        tx.send(Change::Upsert(Box::new(doc(0, 1)))).await.unwrap();
        drop(tx);
        running.await.unwrap().unwrap();
        assert!(index.doc_entry("c:doc0.md").is_some());
        assert_eq!(view.rollbacks(), 1);
    }

    /// A key or ACL entry longer than the term dictionary holds fails its document alone
    /// (found by a review: tantivy leaves such terms out silently, so the document could never
    /// be deleted by its key, and such a deny entry would not be enforced in the query).
    #[test]
    fn a_key_or_acl_entry_too_long_for_the_term_dictionary_fails_its_document() {
        let dir = tempfile::tempdir().unwrap();
        let index = test_index(dir.path());
        let p = pipeline_into(&index, None);
        let mut long_key = doc(0, 1);
        long_key.key = DocKey::new("c", format!("{}.md", "k".repeat(70_000)));
        let mut long_deny = doc(2, 1);
        long_deny.acl = Acl::new([Principal::Everyone], [Principal::User("u".repeat(70_000))]);
        let cps = p
            .process(vec![
                Change::Upsert(Box::new(long_key.clone())),
                Change::Upsert(Box::new(long_deny)),
                Change::Upsert(Box::new(doc(1, 1))),
            ])
            .unwrap();
        index.commit(cps).unwrap();
        assert!(index.doc_entry("c:doc1.md").is_some());
        assert!(index.doc_entry(&long_key.key.to_string()).is_none());
        assert!(index.doc_entry("c:doc2.md").is_none());
        let (failed, recent) = p.skips.get("c");
        assert_eq!(failed, 2, "{recent:?}");
        assert!(
            recent.iter().any(|r| r.1.contains("its key is")),
            "{recent:?}"
        );
        assert!(
            recent.iter().any(|r| r.1.contains("an ACL entry is")),
            "{recent:?}"
        );
    }

    /// A document the backend cannot hold fails alone, with the reason; the rest of its batch
    /// and the checkpoint commit (found by a review: on Milvus, whose fields have length
    /// limits, a 600-byte key failed every commit from then on).
    #[test]
    fn a_document_the_backend_cannot_hold_fails_alone() {
        let index = crate::index::milvus::test_backend(BagOfWords.model_id(), BagOfWords.dim());
        let p = Pipeline::new(
            index.clone(),
            Arc::new(BagOfWords),
            PipelineConfig::for_tests(),
            Arc::default(),
            Arc::default(),
        );
        let mut long = doc(0, 1);
        long.key = DocKey::new("c", format!("{}.md", "x".repeat(600)));
        // A file named with a control character: written, it could never be deleted again
        // (deletes name it in a filter expression), and every later commit would fail.
        let mut control = doc(2, 1);
        control.key = DocKey::new("c", "a\u{1}.md");
        let cps = p
            .process(vec![
                Change::Upsert(Box::new(long)),
                Change::Upsert(Box::new(control)),
                Change::Upsert(Box::new(doc(1, 1))),
                Change::Checkpoint {
                    connector: "c".into(),
                    checkpoint: serde_json::json!({ "pos": 1 }),
                },
            ])
            .unwrap();
        index.commit(cps).unwrap();
        assert!(index.latest_entry("c:doc1.md").is_some());
        assert_eq!(index.checkpoints()["c"]["pos"], 1);
        let (failed, recent) = p.skips.get("c");
        assert_eq!(failed, 2);
        assert!(
            recent
                .iter()
                .any(|r| r.1.contains("cannot hold it: its chunk id is 607 bytes")),
            "{recent:?}"
        );
        assert!(
            recent.iter().any(|r| r.1.contains("control character")),
            "{recent:?}"
        );
        assert!(index.latest_entry("c:a\u{1}.md").is_none());
        // Deleting a document commits, whatever the table says of it.
        p.process(vec![Change::Delete(DocKey::new("c", "doc1.md"))])
            .unwrap();
        index.commit(BTreeMap::new()).unwrap();
        assert!(index.latest_entry("c:doc1.md").is_none());
    }

    /// A checkpoint already on its way when writes were rolled back is committed past what
    /// was lost; the connector's reconciliation makes up for it. A restart before that
    /// reconciliation ended must not forget it is owed (found by a review: the rollback count
    /// started again at 0, and a wiki connector went on from the checkpoint).
    #[tokio::test]
    async fn a_reconciliation_owed_after_a_rollback_outlives_a_restart() {
        use docent_connector_api::SentLog;
        let dir = tempfile::tempdir().unwrap();
        let index = test_index(dir.path());
        let start = |failing: u64| {
            let mut p = pipeline_into(&index, None);
            p.cfg.commit_interval = Duration::from_millis(20);
            p.failing_writes.store(failing, Ordering::Relaxed);
            let view = Arc::new(IndexedView {
                index: index.clone(),
                skips: p.skips.clone(),
            });
            let sent = SentLog::new("c", view.clone());
            (p, view, sent)
        };
        let checkpoint = |pos: u64| Change::Checkpoint {
            connector: "c".into(),
            checkpoint: serde_json::json!({ "pos": pos }),
        };
        let owed = || index.checkpoints()[OWED_KEY].clone();

        let (p, view, sent) = start(1);
        assert!(!sent.rolled_back_since_reconciled());
        let (tx, rx) = mpsc::channel(4);
        let running = tokio::spawn(p.run(rx));
        tx.send(Change::Upsert(Box::new(doc(0, 1)))).await.unwrap();
        until_rolled_back(&view).await;
        // The checkpoint sent after doc0, before the connector heard of the rollback.
        tx.send(checkpoint(1)).await.unwrap();
        drop(tx);
        running.await.unwrap().unwrap();
        assert!(index.doc_entry("c:doc0.md").is_none());
        assert_eq!(index.checkpoints()["c"]["pos"], 1);
        assert_eq!(owed(), serde_json::json!(["c"]));

        // Restarted: the connector reconciles once, then owes nothing.
        let (p, _view, sent) = start(0);
        assert!(sent.rolled_back_since_reconciled());
        let (tx, rx) = mpsc::channel(4);
        let running = tokio::spawn(p.run(rx));
        let at = sent.rollbacks();
        tx.send(Change::Upsert(Box::new(doc(0, 1)))).await.unwrap();
        let notice = sent.reconciled(at);
        assert!(!sent.rolled_back_since_reconciled());
        tx.send(notice).await.unwrap();
        tx.send(checkpoint(2)).await.unwrap();
        drop(tx);
        running.await.unwrap().unwrap();
        assert!(index.doc_entry("c:doc0.md").is_some());
        assert_eq!(owed(), serde_json::json!([]));
        let (_p, _view, sent) = start(0);
        assert!(!sent.rolled_back_since_reconciled());
    }

    /// Changes that came through a byte-bounded sink give their bytes back once written, also
    /// those of a batch that failed: a budget that leaked would stop ingestion for good.
    #[tokio::test]
    async fn the_pipeline_gives_back_the_bytes_of_every_batch() {
        let dir = tempfile::tempdir().unwrap();
        let index = test_index(dir.path());
        let budget = Arc::new(QueueBytes::new(1 << 20));
        let p = Arc::new(pipeline_into(&index, None).with_queue_bytes(budget.clone()));
        p.failing_writes.store(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(4);
        let sink = budget.sink(tx);
        let running = tokio::spawn(p.clone().run_shared(rx));
        sink.send(Change::Upsert(Box::new(doc(0, 1))))
            .await
            .unwrap();
        until_failed_write(&p).await;
        sink.send(Change::Upsert(Box::new(doc(1, 1))))
            .await
            .unwrap();
        drop(sink);
        running.await.unwrap().unwrap();
        assert!(index.doc_entry("c:doc1.md").is_some());
        assert_eq!(budget.available(), 1 << 20);
    }

    /// A commit that fails on a writer that cannot be reset stops the pipeline (and with it the
    /// daemon) instead of retrying on that writer, which could commit the deletes without
    /// the documents added since (found by a review: it retried for as long as it ran).
    #[tokio::test]
    async fn a_lost_writer_stops_the_pipeline_instead_of_retrying() {
        let dir = tempfile::tempdir().unwrap();
        let index = test_index(dir.path());
        index.fail_commit_and_rollback.store(true, Ordering::SeqCst);
        let p = pipeline_into(&index, None);
        let (tx, rx) = mpsc::channel(4);
        let running = tokio::spawn(p.run(rx));
        tx.send(Change::Upsert(Box::new(doc(0, 1)))).await.unwrap();
        tx.send(Change::Checkpoint {
            connector: "c".into(),
            checkpoint: serde_json::json!({ "pos": 1 }),
        })
        .await
        .unwrap();
        let e = tokio::time::timeout(Duration::from_secs(60), running)
            .await
            .expect("the pipeline stops")
            .unwrap()
            .unwrap_err();
        assert!(e.writer_lost(), "{e}");
        assert!(!index.checkpoints().contains_key("c"));
        drop(tx);
    }

    /// An index in `dir` whose last commit records that connector `c` owes a reconciliation
    /// (from before this start), and a model that fails until told otherwise.
    fn owed_by_c(dir: &std::path::Path) -> (Arc<Index>, Arc<Flaky>) {
        let index = test_index(dir);
        index
            .commit(BTreeMap::from([(
                OWED_KEY.to_string(),
                serde_json::json!(["c"]),
            )]))
            .unwrap();
        let model = Arc::new(Flaky {
            failing: true.into(),
            ..Flaky::default()
        });
        (index, model)
    }

    /// A reconciliation is paid (no longer committed as owed) only with what it sent: its
    /// notice comes after those changes, and a batch the model failed on pays nothing (found by
    /// a review: told beside the channel, the reconciliation was committed as paid while what it
    /// had sent again still waited, and a crash then lost those changes for good).
    #[tokio::test]
    async fn a_reconciliation_is_paid_only_once_what_it_sent_is_written() {
        use docent_connector_api::SentLog;
        let dir = tempfile::tempdir().unwrap();
        let (index, model) = owed_by_c(dir.path());
        let owed = || index.checkpoints()[OWED_KEY].clone();
        for (failing, owed_after) in [
            (true, serde_json::json!(["c"])),
            (false, serde_json::json!([])),
        ] {
            model.failing.store(failing, Ordering::Relaxed);
            let p = pipeline_with(&index, model.clone(), None);
            let view = Arc::new(IndexedView {
                index: index.clone(),
                skips: p.skips.clone(),
            });
            let sent = SentLog::new("c", view);
            assert!(sent.rolled_back_since_reconciled());
            let (tx, rx) = mpsc::channel(4);
            let running = tokio::spawn(p.run(rx));
            let at = sent.rollbacks();
            tx.send(Change::Upsert(Box::new(doc(0, 1)))).await.unwrap();
            tx.send(sent.reconciled(at)).await.unwrap();
            drop(tx);
            running.await.unwrap().unwrap();
            assert_eq!(index.doc_entry("c:doc0.md").is_some(), !failing);
            assert_eq!(owed(), owed_after, "model failing: {failing}");
            // Not counted: the connector is told to reconcile again.
            assert_eq!(sent.rolled_back_since_reconciled(), failing);
        }
    }

    /// A write the model failed on in an incremental sync (no reconciliation in flight) is
    /// committed as owed: the connector's later checkpoints move past it, so a restart
    /// reconciles (found by a review: a wiki edit was lost until the daily reconciliation). A
    /// source that never reconciles (push) is not listed.
    #[test]
    fn a_write_the_model_dropped_is_committed_as_owed_by_a_connector_that_reconciles() {
        use docent_connector_api::IndexedState as _;
        let dir = tempfile::tempdir().unwrap();
        let index = test_index(dir.path());
        let model = Arc::new(Flaky {
            failing: true.into(),
            ..Flaky::default()
        });
        let p = pipeline_with(&index, model.clone(), None);
        let view = IndexedView {
            index: index.clone(),
            skips: p.skips.clone(),
        };
        // `c` reconciles (it asks whether it owes one at start); `push` does not.
        assert!(!view.reconciliation_owed("c"));
        let mut pushed = doc(1, 1);
        pushed.key = DocKey::new("push", "doc1.md");
        let checkpoint = |pos| Change::Checkpoint {
            connector: "c".into(),
            checkpoint: serde_json::json!({ "pos": pos }),
        };
        let cps = p
            .process(vec![
                Change::Upsert(Box::new(doc(0, 2))),
                Change::Upsert(Box::new(pushed)),
                checkpoint(1),
            ])
            .unwrap();
        assert!(cps.is_empty());
        model.failing.store(false, Ordering::Relaxed);
        let mut cps = p.process(vec![checkpoint(2)]).unwrap();
        cps.insert(OWED_KEY.to_string(), p.owed_now());
        index.commit(cps).unwrap();
        assert_eq!(index.checkpoints()["c"]["pos"], 2);
        assert_eq!(index.checkpoints()[OWED_KEY], serde_json::json!(["c"]));
    }

    /// A reconciliation whose earlier writes the model failed on (dropped, not retried) stays
    /// owed even when its notice comes alone in a later batch that is written (found by a
    /// review: only a notice sharing the failed batch paid nothing).
    #[tokio::test]
    async fn a_reconciliation_whose_writes_the_model_dropped_stays_owed() {
        use docent_connector_api::SentLog;
        let dir = tempfile::tempdir().unwrap();
        let (index, model) = owed_by_c(dir.path());
        let p = Arc::new(pipeline_with(&index, model.clone(), None));
        let view = Arc::new(IndexedView {
            index: index.clone(),
            skips: p.skips.clone(),
        });
        let sent = SentLog::new("c", view);
        let (tx, rx) = mpsc::channel(4);
        let running = tokio::spawn(p.clone().run_shared(rx));
        let at = sent.rollbacks();
        tx.send(Change::Upsert(Box::new(doc(0, 1)))).await.unwrap();
        for _ in 0..3000 {
            if p.stats.documents_failed.load(Ordering::Relaxed) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(p.stats.documents_failed.load(Ordering::Relaxed), 1);
        model.failing.store(false, Ordering::Relaxed);
        tx.send(Change::Upsert(Box::new(doc(1, 1)))).await.unwrap();
        tx.send(sent.reconciled(at)).await.unwrap();
        drop(tx);
        running.await.unwrap().unwrap();
        assert!(index.doc_entry("c:doc1.md").is_some());
        assert_eq!(index.checkpoints()[OWED_KEY], serde_json::json!(["c"]));
        // And the connector is told to reconcile again now, not only at the next start.
        assert!(sent.rolled_back_since_reconciled());
        let notice = sent.reconciled(sent.rollbacks());
        assert!(matches!(notice, Change::Reconciled { .. }));
        assert!(!sent.rolled_back_since_reconciled());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn the_last_change_of_each_key_wins(steps in prop::collection::vec(step(), 1..40)) {
            let dir = tempfile::tempdir().unwrap();
            let embedder: Arc<dyn Embedder> = Arc::new(BagOfWords);
            let index =
                Arc::new(Index::open(dir.path(), embedder.model_id(), embedder.dim()).unwrap());
            let pipeline = Pipeline::new(
                index.clone(),
                embedder,
                PipelineConfig::for_tests(),
                Arc::default(),
                Arc::default(),
            );
            // key → version, for keys that exist.
            let mut model: BTreeMap<u8, u8> = BTreeMap::new();
            let mut batch = Vec::new();
            for s in steps {
                match s {
                    Step::Put(k, v) => {
                        model.insert(k, v);
                        batch.push(Change::Upsert(Box::new(doc(k, v))));
                    }
                    Step::Delete(k) => {
                        model.remove(&k);
                        batch.push(Change::Delete(DocKey::new("c", format!("doc{k}.md"))));
                    }
                    Step::Move(a, b) => {
                        if let Some(v) = model.remove(&a) {
                            batch.push(Change::Delete(DocKey::new("c", format!("doc{a}.md"))));
                            model.insert(b, v);
                            batch.push(Change::Upsert(Box::new(doc(b, v))));
                        }
                    }
                    Step::Flush => {
                        pipeline.process(std::mem::take(&mut batch)).unwrap();
                    }
                    Step::Commit => {
                        pipeline.process(std::mem::take(&mut batch)).unwrap();
                        index.commit(BTreeMap::new()).unwrap();
                    }
                }
            }
            pipeline.process(batch).unwrap();
            index.commit(BTreeMap::new()).unwrap();
            for k in 0..4u8 {
                let entry = index.doc_entry(&format!("c:doc{k}.md"));
                prop_assert_eq!(
                    entry.map(|e| e.version),
                    model.get(&k).map(|v| v.to_string()),
                    "key {}", k
                );
            }
            // What searches see agrees with the table: each note is one chunk, so one chunk per
            // live key (no orphaned chunks of a deleted or moved note).
            prop_assert_eq!(index.stats().chunks, model.len() as u64);
        }
    }
}
