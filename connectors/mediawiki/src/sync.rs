//! Syncs: the full reconciliation (list every page, read what changed, delete what is gone) and
//! the incremental poll (recent changes and log events since the checkpoint, each touched page
//! judged by what the wiki holds now).
//!
//! Both end with a checkpoint ([`Position`]) that records where the recent-changes and log
//! streams were read up to. A reconciliation takes those positions *before* it lists, so a
//! change made during the listing is seen again by the next poll (read twice, never lost).
//!
//! Nothing is deleted on the strength of an error: a failed request fails the whole sync (no
//! deletes, no checkpoint), and a reconciliation deletes only after a complete, non-empty
//! listing, within deletion protection.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use docent_connector_api::jobs::{self, JobRecord, JobState};
use docent_connector_api::{
    Acl, Alarm, Change, DocKey, IndexedDoc, IndexedState, SentLog, SourceDocument, StatusHandle,
};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::api::{Api, ApiError, Params, params, parse_timestamp};
use crate::config::{MediaWikiConfig, Permissions};

/// Pages per `pageids=` state query (the API's limit for ordinary accounts).
const STATE_BATCH: usize = 50;
/// State queries the sweep sends at most at one poll (see [`sweep_batch`]).
const SWEEP_QUERIES_MAX: usize = 10;

/// Indexed pages the sweep checks against the wiki at one poll, in turn: enough that a round of
/// `pages` takes no longer than the full reconciliation's interval, in whole state queries, at
/// least one and at most [`SWEEP_QUERIES_MAX`]. With the defaults (60 s polls, daily
/// reconciliations) one query per poll covers 72,000 pages a day, ten 720,000.
fn sweep_batch(pages: usize, poll: Duration, reconcile: Duration) -> usize {
    let polls = (reconcile.as_secs_f64() / poll.as_secs_f64().max(1.0)).max(1.0);
    let per_poll = (pages as f64 / polls).ceil() as usize;
    per_poll.div_ceil(STATE_BATCH).clamp(1, SWEEP_QUERIES_MAX) * STATE_BATCH
}
/// Times a sweep batch is asked before the sweep moves past it.
const SWEEP_TRIES: u32 = 3;

/// Log types whose events may change a page's existence, title, namespace or content.
/// (`suppress`: deletions by an oversighter, seen when the crawler may read that log.)
const PAGE_LOG_TYPES: &[&str] = &[
    "delete", "move", "protect", "import", "merge", "upload", "suppress",
];

/// The checkpoint: where the change streams were read up to, and when the last full
/// reconciliation ran.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Timestamp (`2024-05-01T12:00:00Z`) and id of the newest recent-changes entry acted on;
    /// empty and 0 when the wiki had none.
    pub rc_timestamp: String,
    pub rc_id: u64,
    /// The same for the log (`list=logevents`).
    pub log_timestamp: String,
    pub log_id: u64,
    /// Unix milliseconds of the last completed full reconciliation (named as every connector
    /// names it in its checkpoint, see `ConnectorState::last_full_scan_ms`).
    #[serde(rename = "last_full_scan_ms")]
    pub last_full_ms: i64,
    /// The configuration scope it was written under ([`MediaWikiConfig::scope`]).
    pub scope: String,
    /// The highest page id the polls' sweep had checked ([`Syncer::sweep`]), so that a restart
    /// goes on from there rather than from the lowest id. Carried by checkpoints sent for other
    /// reasons: a sweep alone sends none. Absent from older checkpoints.
    #[serde(default)]
    pub swept_to: u64,
    /// Pages the polls' sweep deleted since the last reconciliation, and whether that
    /// reconciliation's deletions were held back by deletion protection: carried so that a
    /// restart neither gives the sweep a fresh allowance nor forgets a hold (found by a review:
    /// each restart let the sweep delete another share of the index). Absent from older
    /// checkpoints.
    #[serde(default)]
    pub swept_deleted: u64,
    #[serde(default)]
    pub deletions_held: bool,
    /// Ids of the recent-changes and log entries acted on whose timestamps lie within
    /// [`LATE_ROW_MARGIN_SECS`] of the newest: a poll reaches back that far, and acts on an
    /// entry there it has not acted on, below the position's id or not (session 36's note: an
    /// entry whose id was taken before a later one's but that was committed after it was read
    /// was skipped for good). Absent from older checkpoints (then ids up to the position's
    /// count as acted on).
    #[serde(default)]
    pub rc_recent: Vec<u64>,
    #[serde(default)]
    pub log_recent: Vec<u64>,
}

impl Position {
    pub fn from_checkpoint(v: &Value) -> Option<Self> {
        serde_json::from_value(v.clone()).ok()
    }

    pub fn to_checkpoint(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// Why a sync stopped early.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Api(ApiError),
    #[error("the pipeline is gone")]
    SinkClosed,
    #[error("cancelled")]
    Cancelled,
}

impl From<ApiError> for SyncError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Cancelled => Self::Cancelled,
            e => Self::Api(e),
        }
    }
}

/// The most bytes of section titles a page's `sections` attribute holds.
const MAX_SECTIONS_BYTES: usize = 16 * 1024;

/// How a sync ended when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Synced {
    /// An incremental poll completed.
    Polled,
    /// A full reconciliation completed, deletes included.
    Reconciled,
    /// Deletion protection held back the deletes; everything else was done.
    DeletionsBlocked(String),
}

/// A page as a listing or a state query shows it: enough to decide whether to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageMeta {
    pub id: u64,
    pub ns: i64,
    pub title: String,
    pub revid: u64,
    /// When the page's rendering last changed (`touched`: an edit, a template or transcluded
    /// page it uses, a purge); empty when not answered.
    pub touched: String,
    pub timestamp: Option<String>,
    pub redirect: bool,
    /// In at least one configured category (meaningful only when categories are set).
    pub in_categories: bool,
}

impl PageMeta {
    /// Reads one element of a `pages` array (formatversion 2); `None` for a missing page.
    fn from_json(p: &Value) -> Option<Self> {
        if p.get("missing").is_some() || p.get("invalid").is_some() {
            return None;
        }
        let rev = p.pointer("/revisions/0");
        Some(Self {
            id: p.get("pageid")?.as_u64()?,
            ns: p.get("ns")?.as_i64()?,
            title: p.get("title")?.as_str()?.to_string(),
            revid: rev
                .and_then(|r| r.get("revid"))
                .or_else(|| p.get("lastrevid"))
                .and_then(Value::as_u64)
                .unwrap_or(0),
            touched: p
                .get("touched")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            timestamp: rev
                .and_then(|r| r.get("timestamp"))
                .and_then(Value::as_str)
                .map(str::to_string),
            redirect: p.get("redirect").and_then(Value::as_bool).unwrap_or(false),
            in_categories: p
                .get("categories")
                .and_then(Value::as_array)
                .is_some_and(|c| !c.is_empty()),
        })
    }

    /// The version a page is indexed under: its latest revision, and when its rendering last
    /// changed. An edit of a template or of a transcluded page makes no revision of the pages
    /// that use it, but changes what they show (text removed from a transcluded page must
    /// leave them too); `touched` moves then.
    fn version(&self) -> String {
        if self.touched.is_empty() {
            self.revid.to_string()
        } else {
            format!("{}@{}", self.revid, self.touched)
        }
    }
}

/// What to do about one page.
enum Action {
    Unchanged,
    Upsert(Box<SourceDocument>),
    Skip(String),
    /// The wiki failed on its side (an internal error): nothing is sent, so the indexed
    /// version stays; the next full reconciliation reads the page again.
    Failed(String),
    /// The wiki says the page does not exist (any more).
    Gone,
    /// The page moved between the listing and the read: the move's log entry (after the
    /// checkpoint) brings it back, judged then.
    Moved,
}

/// The sync machinery of one connector; shared by the run loop's jobs.
pub struct Syncer {
    pub cfg: Arc<MediaWikiConfig>,
    pub api: Api,
    pub status: StatusHandle,
    pub sink: mpsc::Sender<Change>,
    pub shutdown: CancellationToken,
    /// Where the change streams were read up to (the last checkpoint sent or received).
    pub position: Mutex<Option<Position>>,
    /// The job outcomes are counted in.
    job: AtomicU64,
    /// A full sync: read and re-parse every page, changed or not.
    full: AtomicBool,
    /// Send a checkpoint after the next sync even when nothing moved (the first one of a run
    /// confirms the position it resumed from).
    checkpoint_due: AtomicBool,
    /// What was last sent per page id, until the index shows it ([`SentLog`]): "unchanged" and
    /// "known" are judged against what was sent, not only what was committed.
    sent: SentLog,
    /// The sweep goes on after this page id (see [`Syncer::sweep`]).
    swept_to: AtomicU64,
    /// Failures in a row of the sweep's batch at `swept_to` (see [`SWEEP_TRIES`]).
    sweep_failures: std::sync::atomic::AtomicU32,
    /// Pages the sweep deleted since the last reconciliation (deletion protection counts
    /// them together), and whether it has said since then that it holds deletions back.
    swept_deleted: AtomicU64,
    /// The last reconciliation's deletions were held back (see [`Position::deletions_held`]).
    deletions_held: AtomicBool,
    sweep_held_said: AtomicBool,
}

impl Syncer {
    pub fn new(
        cfg: Arc<MediaWikiConfig>,
        api: Api,
        status: StatusHandle,
        sink: mpsc::Sender<Change>,
        indexed: Arc<dyn IndexedState>,
        shutdown: CancellationToken,
        position: Option<Position>,
    ) -> Self {
        let sent = SentLog::new(cfg.id.clone(), indexed);
        let (swept_deleted, held) = position
            .as_ref()
            .map_or((0, false), |p| (p.swept_deleted, p.deletions_held));
        if held {
            // The hold outlives a restart, and so does its alarm (before, the sweep held
            // deletions back with no alarm until the next reconciliation raised it again).
            status.raise(
                Alarm::DeletionProtection,
                format!(
                    "deletion protection: the last reconciliation held back its deletions \
                     (before a restart); nothing was deleted. If that is intended, run \
                     `docent sync {} --force-deletions`",
                    cfg.id
                ),
            );
        }
        Self {
            cfg,
            api,
            status,
            sink,
            shutdown,
            swept_to: AtomicU64::new(position.as_ref().map_or(0, |p| p.swept_to)),
            sweep_failures: std::sync::atomic::AtomicU32::new(0),
            position: Mutex::new(position),
            job: AtomicU64::new(0),
            full: AtomicBool::new(false),
            checkpoint_due: AtomicBool::new(true),
            sent,
            swept_deleted: AtomicU64::new(swept_deleted),
            deletions_held: AtomicBool::new(held),
            sweep_held_said: AtomicBool::new(false),
        }
    }

    /// `permissions = "public"` gives every page to everyone: at every pass, the wiki must
    /// let a reader who is not logged in read. Else the pages indexed for everyone are
    /// withdrawn (the wiki no longer lets everyone read them) and nothing more is sent: an
    /// error and the outage alarm, until the config names who may read.
    async fn check_public(&self) -> Result<(), SyncError> {
        if self.cfg.permissions != Permissions::Public || self.api.anonymous_may_read().await? {
            return Ok(());
        }
        for id in self.sent.known_ids() {
            self.send_delete(id).await?;
        }
        Err(SyncError::Api(ApiError::Api {
            code: "docent-private-wiki".into(),
            info: "permissions = \"public\", but the wiki does not let readers who are not \
                   logged in read it: nothing is indexed for everyone until the config says who \
                   may read (permissions = \"group\" or \"namespaces\")"
                .into(),
        }))
    }

    /// Whether the next sync must be a full reconciliation: no usable checkpoint, one written
    /// under another scope, the reconciliation interval has passed, or what was sent may have
    /// been lost in a rollback of the pipeline (polls would not come back to it).
    pub fn reconcile_due(&self) -> bool {
        if self.sent.rolled_back_since_reconciled() {
            return true;
        }
        let pos = self.position.lock().unwrap_or_else(|e| e.into_inner());
        match pos.as_ref() {
            None => true,
            Some(p) if p.scope != self.cfg.scope() => true,
            Some(p) => {
                unix_millis().saturating_sub(p.last_full_ms)
                    >= self.cfg.full_reconcile_interval.as_millis() as i64
            }
        }
    }

    /// A full reconciliation as job `job_id` (or a new one). `full`: re-read every page;
    /// `force_deletions`: delete past deletion protection (never past an empty listing).
    pub async fn reconcile(
        &self,
        job_id: Option<u64>,
        trigger: &'static str,
        force_deletions: bool,
        full: bool,
    ) -> Result<Synced, SyncError> {
        self.status.set_phase("crawling");
        let id = self
            .status
            .start_job(job_id, "reconcile", trigger, unix_millis());
        self.job.store(id, Ordering::Relaxed);
        self.full.store(full, Ordering::Relaxed);
        let rollbacks = self.sent.rollbacks();
        let r = self.reconcile_inner(force_deletions).await;
        self.full.store(false, Ordering::Relaxed);
        let now = unix_millis();
        let (outcome, mut next) = match r {
            Ok(x) => x,
            Err(e) => {
                self.finish_failed(id, &e, now);
                return Err(e);
            }
        };
        // The checkpoint names the very time the status shows, so that tools (and the test
        // harness) can tell this scan is committed: two clock reads a millisecond apart once
        // left the status ahead of every checkpoint (session 53).
        next.last_full_ms = now;
        let state = match &outcome {
            Synced::DeletionsBlocked(why) => JobState::Blocked(why.clone()),
            _ => JobState::Succeeded,
        };
        // The job and status are final before the checkpoint that ends the job is sent.
        self.status.finish_job(id, state, now);
        self.status.full_scan_done(now);
        let paid = self.sent.reconciled(rollbacks);
        self.settle(&outcome);
        self.send(paid).await?;
        self.commit(next, true).await?;
        Ok(outcome)
    }

    /// The reconciliation's work; returns its outcome and the position to commit.
    async fn reconcile_inner(
        &self,
        force_deletions: bool,
    ) -> Result<(Synced, Position), SyncError> {
        self.check_public().await?;
        // Positions first: what changes while we list is seen again by the next poll.
        let next = self.heads().await?;
        self.sweep_held_said.store(false, Ordering::Relaxed);
        let listed = self.list_all().await?;
        tracing::debug!(connector = %self.cfg.id, pages = listed.len(), "listed the wiki");
        self.apply(listed.values().cloned().collect()).await?;

        let known = self.sent.known_ids();
        let gone: Vec<String> = known
            .iter()
            .filter(|id| id.parse::<u64>().map_or(true, |n| !listed.contains_key(&n)))
            .cloned()
            .collect();
        // Pages the wiki still has outside the configured scope (a namespace or category taken
        // out of the config, often because it held what should not be searched) are withdrawn
        // whatever deletion protection says: nothing about them is in doubt.
        // The rest are deleted (under deletion protection) only where the wiki says so: a page
        // it answers as existing and in scope was missed by the listing (moved, or re-sorted in
        // its category, while the listing paged past it) and is applied; one it does not
        // answer is kept, as the polls do.
        let ids: BTreeSet<u64> = gone.iter().filter_map(|id| id.parse().ok()).collect();
        let (states, missing) = self.page_states_and_missing(&ids).await?;
        let mut withdrawn = Vec::new();
        let mut missed = Vec::new();
        let mut deleted = Vec::new();
        for id in gone {
            let Ok(n) = id.parse::<u64>() else {
                // Not a page id: nothing on the wiki can be it.
                deleted.push(id);
                continue;
            };
            match unlisted_page(states.get(&n), missing.contains(&n), |m| self.in_scope(m)) {
                Unlisted::OutOfScope => withdrawn.push(id),
                Unlisted::Missed(m) => missed.push(m.clone()),
                Unlisted::Deleted => deleted.push(id),
                Unlisted::Unanswered => tracing::warn!(
                    connector = %self.cfg.id,
                    page_id = n,
                    "the wiki's answer did not tell this page's state: kept as it is"
                ),
            }
        }
        let gone = deleted;
        for id in withdrawn {
            self.send_delete(id).await?;
        }
        self.apply(missed).await?;
        let (n, total) = (gone.len() as u64, known.len() as u64);
        let mut outcome = Synced::Reconciled;
        if n > 0 && listed.is_empty() {
            // A wiki that lists nothing is far likelier broken (a wrong namespace, a lost
            // permission) than empty: never act on it, forced or not.
            outcome = Synced::DeletionsBlocked(format!(
                "deletion protection: the wiki listed no pages in the configured scope, which would delete all {n} indexed pages; nothing was deleted"
            ));
        } else if !force_deletions
            && let Some(why) = jobs::deletion_protection(
                &self.cfg.id,
                n,
                total,
                self.cfg.deletion_protection_percent,
                self.cfg.deletion_protection_min_docs,
            )
        {
            outcome = Synced::DeletionsBlocked(why);
        } else {
            for id in gone {
                self.send_delete(id).await?;
            }
        }
        if let Synced::DeletionsBlocked(why) = &outcome {
            tracing::warn!(connector = %self.cfg.id, "{why}");
        }
        self.deletions_held.store(
            matches!(outcome, Synced::DeletionsBlocked(_)),
            Ordering::Relaxed,
        );
        // A completed reconciliation gives the sweep a new allowance (one that failed does
        // not: found by a review).
        self.swept_deleted.store(0, Ordering::Relaxed);
        Ok((outcome, next))
    }

    /// An incremental sync: the pages that recent changes and the log name since the
    /// checkpoint, each judged by its current state. It records a job only when it found
    /// something; a due reconciliation or a gap in recent changes (entries purged past the
    /// checkpoint) makes it a full reconciliation.
    pub async fn poll(&self, trigger: &'static str) -> Result<Synced, SyncError> {
        if self.reconcile_due() {
            return self.reconcile(None, trigger, false, false).await;
        }
        let Some(from) = self
            .position
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            return self.reconcile(None, trigger, false, false).await;
        };
        self.check_public().await?;
        let mut next = from.clone();
        let mut touched = BTreeSet::new();
        let gap = self.recent_changes(&from, &mut next, &mut touched).await?;
        if gap {
            tracing::warn!(connector = %self.cfg.id, rc_id = from.rc_id, "recent changes were purged past the checkpoint: reconciling");
            return self.reconcile(None, trigger, false, false).await;
        }
        self.log_events(&from, &mut next, &mut touched).await?;
        if !touched.is_empty() {
            let id = self.status.start_job(None, "watch", trigger, unix_millis());
            self.job.store(id, Ordering::Relaxed);
            match self.apply_touched(&touched).await {
                Ok(()) => self
                    .status
                    .finish_job(id, JobState::Succeeded, unix_millis()),
                Err(e) => {
                    self.finish_failed(id, &e, unix_millis());
                    return Err(e);
                }
            }
        }
        self.sweep(&touched, &next, trigger).await?;
        self.settle(&Synced::Polled);
        self.commit(next, false).await?;
        Ok(Synced::Polled)
    }

    /// Checks the next few indexed pages (in page-id order, round and round) against the wiki,
    /// so that a page whose deletion or edit never showed in recent changes or the log (a
    /// suppressed deletion, which leaves nothing the bot may read; an import; purged entries)
    /// leaves the index or is updated within a round of polls (the index's pages / 50) instead
    /// of at the next full reconciliation. Pages in `touched` were judged by this poll; a
    /// revision newer than the recent changes it read (`seen`) comes with the next poll.
    ///
    /// Deletions need positive evidence: the wiki answers the page as missing (or out of
    /// scope), never an absent answer. They are held back, for the reconciliation and its
    /// `--force-deletions` to decide, while a deletion-protection alarm stands, when every
    /// page of the batch is gone, or when they would take the sweep's deletions since the last
    /// reconciliation past deletion protection (counted against the whole index). A failed
    /// sweep is logged and ends its job as failed; the poll goes on.
    async fn sweep(
        &self,
        touched: &BTreeSet<u64>,
        seen: &Position,
        trigger: &'static str,
    ) -> Result<(), SyncError> {
        let known = self.sent.known_ids();
        let mut ids: Vec<u64> = known
            .iter()
            .filter_map(|id| id.parse().ok())
            .filter(|id| !touched.contains(id))
            .collect();
        ids.sort_unstable();
        let after = self.swept_to.load(Ordering::Relaxed);
        let start = ids.partition_point(|&id| id <= after);
        let size = sweep_batch(
            ids.len(),
            self.cfg.poll_interval,
            self.cfg.full_reconcile_interval,
        );
        let mut batch: Vec<u64> = ids[start..].iter().take(size).copied().collect();
        if batch.len() < size {
            // Round again from the lowest id.
            let more = size - batch.len();
            batch.extend(ids[..start].iter().take(more));
        }
        let Some(&last) = batch.last() else {
            return Ok(());
        };
        let wanted: BTreeSet<u64> = batch.iter().copied().collect();
        let (states, missing) = match self.page_states_and_missing(&wanted).await {
            // Only a batch answered counts as swept: a failed one is asked again (a review:
            // it waited a whole round), up to three times in a row, then passed (a later review:
            // one that always fails stopped the sweep for good).
            Ok(r) => {
                self.swept_to.store(last, Ordering::Relaxed);
                self.sweep_failures.store(0, Ordering::Relaxed);
                r
            }
            Err(e @ (SyncError::Cancelled | SyncError::SinkClosed)) => return Err(e),
            Err(e) => {
                if self.sweep_failures.fetch_add(1, Ordering::Relaxed) + 1 >= SWEEP_TRIES {
                    self.sweep_failures.store(0, Ordering::Relaxed);
                    self.swept_to.store(last, Ordering::Relaxed);
                }
                tracing::warn!(connector = %self.cfg.id, error = %docent_connector_api::log_safe(&e.to_string()), "sweep failed; the next poll goes on");
                return Ok(());
            }
        };
        let mut gone = Vec::new();
        let mut out_of_scope = Vec::new();
        let mut changed = Vec::new();
        for id in &batch {
            match states.get(id) {
                Some(m) if self.in_scope(m) && self.sweep_rereads(*id, m, seen) => {
                    changed.push(m.clone());
                }
                Some(m) if self.in_scope(m) => {}
                // There, and out of the scope (moved to another namespace, out of the
                // categories): withdrawn whatever deletion protection says, as the
                // reconciliation does (a review: held back, it stayed answerable under its old
                // ACL).
                Some(_) => out_of_scope.push(*id),
                None if missing.contains(id) => gone.push(*id),
                // Not answered at all: nothing is known.
                None => {}
            }
        }
        // In public mode, whether a reader who is not logged in may still open each indexed
        // page the sweep does not read again: a restriction added without an edit (a Lockdown
        // rule in LocalSettings, a hook) makes no revision, and such a page stayed everyone's
        // until the reconciliation (session 41's note; a day by default). Those the wiki says
        // are closed now are read again, which skips them; a page the answer leaves out is not
        // taken as closed (a review: a wiki answering none of them would have withdrawn them
        // all, past what holds deletions back).
        if self.cfg.permissions == Permissions::Public {
            let unread: Vec<PageMeta> = batch
                .iter()
                .filter_map(|id| states.get(id))
                .filter(|m| self.in_scope(m) && !changed.iter().any(|c: &PageMeta| c.id == m.id))
                .filter(|m| {
                    self.last_known(&DocKey::new(&self.cfg.id, m.id.to_string()))
                        .is_some()
                })
                .cloned()
                .collect();
            let ids: Vec<u64> = unread.iter().map(|m| m.id).collect();
            let refused = match ids.is_empty() {
                true => Ok(BTreeSet::new()),
                false => self
                    .api
                    .anonymous_refused(&ids)
                    .await
                    .map_err(SyncError::from),
            };
            match refused {
                Ok(closed) => {
                    changed.extend(unread.into_iter().filter(|m| closed.contains(&m.id)));
                }
                Err(e @ (SyncError::Cancelled | SyncError::SinkClosed)) => return Err(e),
                Err(e) => {
                    tracing::warn!(connector = %self.cfg.id, error = %docent_connector_api::log_safe(&e.to_string()), "sweep: whether readers who are not logged in may still read its pages could not be asked; the next sweep asks again");
                }
            }
        }
        if !gone.is_empty()
            && let Some(why) = self.sweep_holds_back(gone.len(), batch.len(), known.len())
        {
            if !self.sweep_held_said.swap(true, Ordering::Relaxed) {
                tracing::warn!(connector = %self.cfg.id, pages = gone.len(), "sweep: {why}; left to the next reconciliation");
            }
            gone.clear();
        }
        gone.extend(out_of_scope);
        if gone.is_empty() && changed.is_empty() {
            return Ok(());
        }
        let job = self.status.start_job(None, "sweep", trigger, unix_millis());
        self.job.store(job, Ordering::Relaxed);
        let r = async {
            for id in &gone {
                self.delete_if_known(*id).await?;
                self.swept_deleted.fetch_add(1, Ordering::Relaxed);
            }
            self.apply(changed).await
        }
        .await;
        match r {
            Ok(()) => self
                .status
                .finish_job(job, JobState::Succeeded, unix_millis()),
            Err(e @ (SyncError::Cancelled | SyncError::SinkClosed)) => {
                self.finish_failed(job, &e, unix_millis());
                return Err(e);
            }
            Err(e) => {
                tracing::warn!(connector = %self.cfg.id, error = %docent_connector_api::log_safe(&e.to_string()), "sweep failed; the next poll goes on");
                self.finish_failed(job, &e, unix_millis());
            }
        }
        Ok(())
    }

    /// Whether the sweep reads page `id` again: its newest revision is not what this connector
    /// last sent or the index holds, and not newer than the recent changes this poll read
    /// (those come with the next poll, judged as edits).
    fn sweep_rereads(&self, id: u64, m: &PageMeta, seen: &Position) -> bool {
        let version = m.version();
        let native = id.to_string();
        // Its namespace's ACL now: a page moved without a revision or log entry (a script such
        // as namespaceDupes.php) keeps its version and changes its ACL (a review: it kept the
        // old one until the reconciliation). No ACL at all: read again, and skipped.
        let Ok(acl) = self.cfg.permissions.acl_for(m.ns) else {
            return true;
        };
        let acl = acl.fingerprint();
        if let Some(Some(sent)) = self.sent.record(&native)
            && sent.version == version
            && sent.acl_fingerprint == acl
        {
            // Sent already (a version the pipeline gave up on waits for the reconciliation).
            return false;
        }
        if let Some(ts) = &m.timestamp
            && !seen.rc_timestamp.is_empty()
            && ts.as_str() > seen.rc_timestamp.as_str()
        {
            return false;
        }
        self.last_known(&DocKey::new(&self.cfg.id, native))
            .is_some_and(|k| k.version != version || k.acl_fingerprint != acl)
    }

    /// Why the sweep may not delete `gone` pages of a `batch` from an index of `total`, if so.
    fn sweep_holds_back(&self, gone: usize, batch: usize, total: usize) -> Option<String> {
        if self.status.raised(Alarm::DeletionProtection)
            || self.deletions_held.load(Ordering::Relaxed)
        {
            return Some("a deletion-protection alarm stands".into());
        }
        if gone == batch {
            // As with an empty listing: a wiki that has none of the pages is far likelier
            // broken (another database, a lost permission) than emptied.
            return Some("the wiki answers none of the checked pages".into());
        }
        jobs::deletion_protection(
            &self.cfg.id,
            self.swept_deleted.load(Ordering::Relaxed) + gone as u64,
            total as u64,
            self.cfg.deletion_protection_percent,
            self.cfg.deletion_protection_min_docs,
        )
    }

    /// Acts on each touched page id according to what the wiki holds now.
    async fn apply_touched(&self, touched: &BTreeSet<u64>) -> Result<(), SyncError> {
        let (states, missing) = self.page_states_and_missing(touched).await?;
        let mut live = Vec::new();
        for page_id in touched {
            match touched_page(states.get(page_id), missing.contains(page_id), |m| {
                self.in_scope(m)
            }) {
                Touched::Live(meta) => live.push(meta.clone()),
                Touched::Gone => self.delete_if_known(*page_id).await?,
                Touched::Unanswered => tracing::warn!(
                    connector = %self.cfg.id,
                    page_id,
                    "the wiki's answer did not tell this page's state: kept as it is (the \
                     reconciliation checks it again)"
                ),
            }
        }
        self.apply(live).await
    }

    /// Status after a sync that did not fail: a connection or login error is over; a
    /// deletion-protection alarm lasts until a reconciliation completes without one.
    fn settle(&self, outcome: &Synced) {
        let state = self.status.snapshot();
        self.status.clear(Alarm::Outage);
        match outcome {
            Synced::DeletionsBlocked(why) => {
                self.status.raise(Alarm::DeletionProtection, why.clone())
            }
            Synced::Reconciled => self.status.clear(Alarm::DeletionProtection),
            Synced::Polled => {}
        }
        self.status
            .set_phase(if state.paused { "paused" } else { "watching" });
    }

    fn finish_failed(&self, id: u64, e: &SyncError, now: i64) {
        let state = match e {
            SyncError::Cancelled => JobState::Cancelled,
            e => JobState::Failed(e.to_string()),
        };
        self.status.finish_job(id, state, now);
    }

    /// Sends the checkpoint for `next` when it moved (or one is due) and adopts it.
    async fn commit(&self, mut next: Position, force: bool) -> Result<(), SyncError> {
        next.scope = self.cfg.scope();
        next.swept_to = self.swept_to.load(Ordering::Relaxed);
        next.swept_deleted = self.swept_deleted.load(Ordering::Relaxed);
        next.deletions_held = self.deletions_held.load(Ordering::Relaxed);
        // The sweep's cursor alone does not make a checkpoint (it moves at every poll); its
        // deletions and a hold do.
        let moved = self
            .position
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_none_or(|p| {
                let mut p = p.clone();
                p.swept_to = next.swept_to;
                p != next
            });
        if moved || force || self.checkpoint_due.swap(false, Ordering::SeqCst) {
            self.send(Change::Checkpoint {
                connector: self.cfg.id.clone(),
                checkpoint: next.to_checkpoint(),
            })
            .await?;
            self.checkpoint_due.store(false, Ordering::SeqCst);
        }
        *self.position.lock().unwrap_or_else(|e| e.into_inner()) = Some(next);
        Ok(())
    }

    /// The newest recent-changes and log entries now: where a sync that starts now resumes.
    async fn heads(&self) -> Result<Position, SyncError> {
        let v = self
            .api
            .get(&params([
                ("action", "query"),
                ("list", "recentchanges|logevents"),
                ("rcdir", "older"),
                ("rclimit", "1"),
                ("rcprop", "ids|timestamp"),
                ("ledir", "older"),
                ("lelimit", "1"),
                ("leprop", "ids|timestamp"),
            ]))
            .await?;
        let first = |list: &str, id: &str| {
            v.pointer(&format!("/query/{list}/0"))
                .map(|e| {
                    (
                        e.get("timestamp")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        e.get(id).and_then(Value::as_u64).unwrap_or(0),
                    )
                })
                .unwrap_or_default()
        };
        let (rc_timestamp, rc_id) = first("recentchanges", "rcid");
        let (log_timestamp, log_id) = first("logevents", "logid");
        // The entries a poll from here reaches back over count as acted on (the crawl that
        // follows reads every page): the first poll then acts only on what came after, and on
        // an entry listed late below the heads.
        let rc_recent = self
            .window_ids("recentchanges", "rc", "rcid", &rc_timestamp, rc_id)
            .await?;
        let log_recent = self
            .window_ids("logevents", "le", "logid", &log_timestamp, log_id)
            .await?;
        Ok(Position {
            rc_timestamp,
            rc_id,
            log_timestamp,
            log_id,
            last_full_ms: 0,
            scope: self.cfg.scope(),
            swept_to: 0,
            swept_deleted: 0,
            deletions_held: false,
            rc_recent,
            log_recent,
        })
    }

    /// The ids of `list`'s entries (`prefix`: its parameters' prefix, `id`: its id field) a
    /// poll from the head (`head_ts`, `head`) reaches back over, up to the head.
    async fn window_ids(
        &self,
        list: &str,
        prefix: &str,
        id: &str,
        head_ts: &str,
        head: u64,
    ) -> Result<Vec<u64>, SyncError> {
        if head == 0 {
            return Ok(Vec::new());
        }
        let mut q = params([("action", "query")]);
        q.push(("list".into(), list.into()));
        q.push((format!("{prefix}dir"), "newer".into()));
        q.push((format!("{prefix}start"), before_late_rows(head_ts)));
        q.push((format!("{prefix}end"), head_ts.into()));
        q.push((format!("{prefix}prop"), "ids|timestamp".into()));
        q.push((format!("{prefix}limit"), "max".into()));
        let mut entries = Vec::new();
        self.api
            .query_all(q, |v| {
                for e in self::list(v, list) {
                    let n = e.get(id).and_then(Value::as_u64).unwrap_or(0);
                    if n <= head {
                        entries.push((n, str_at(e, "timestamp")));
                        keep_recent(&mut entries);
                    }
                }
                Ok(())
            })
            .await?;
        Ok(recent_ids(&entries, head, head_ts))
    }

    /// Reads recent changes after `from` into `touched` (page ids) and `next`; true when
    /// entries were purged past the checkpoint (a gap only a full reconciliation can close).
    async fn recent_changes(
        &self,
        from: &Position,
        next: &mut Position,
        touched: &mut BTreeSet<u64>,
    ) -> Result<bool, SyncError> {
        let mut q = params([
            ("action", "query"),
            ("list", "recentchanges"),
            ("rcdir", "newer"),
            ("rcprop", "title|ids|timestamp|loginfo"),
            ("rctype", "edit|new|log"),
            ("rclimit", "max"),
        ]);
        if !from.rc_timestamp.is_empty() {
            q.push(("rcstart".into(), before_late_rows(&from.rc_timestamp)));
        }
        let mut position_seen = false;
        let mut returned = Vec::new();
        self.api
            .query_all(q, |v| {
                for e in list(v, "recentchanges") {
                    let rcid = e.get("rcid").and_then(Value::as_u64).unwrap_or(0);
                    returned.push((rcid, str_at(e, "timestamp")));
                    keep_recent(&mut returned);
                    if rcid <= from.rc_id {
                        // The checkpoint's own entry (or an older one of the same second).
                        position_seen = true;
                    }
                    if !acts_on(rcid, from.rc_id, &from.rc_recent) {
                        continue;
                    }
                    if let Some(p) = e.get("pageid").and_then(Value::as_u64).filter(|p| *p > 0) {
                        touched.insert(p);
                    }
                    if rcid > next.rc_id {
                        next.rc_id = rcid;
                        next.rc_timestamp = str_at(e, "timestamp");
                    }
                }
                Ok(())
            })
            .await?;
        next.rc_recent = recent_ids(&returned, next.rc_id, &next.rc_timestamp);
        if from.rc_id == 0 || position_seen {
            return Ok(false);
        }
        // The checkpoint's entry is gone: purged by age (a gap) or removed with its deleted
        // page (harmless; the deletion's log entry is there). Purging removes the oldest
        // entries first, so it was a purge exactly when nothing up to the checkpoint remains.
        let v = self
            .api
            .get(&params([
                ("action", "query"),
                ("list", "recentchanges"),
                ("rcdir", "newer"),
                ("rclimit", "1"),
                ("rcprop", "ids"),
            ]))
            .await?;
        Ok(rc_gap(
            from.rc_id,
            v.pointer("/query/recentchanges/0/rcid")
                .and_then(Value::as_u64),
        ))
    }

    /// Reads log events after `from` that may change pages into `touched` and `next`.
    async fn log_events(
        &self,
        from: &Position,
        next: &mut Position,
        touched: &mut BTreeSet<u64>,
    ) -> Result<(), SyncError> {
        let mut q = params([
            ("action", "query"),
            ("list", "logevents"),
            ("ledir", "newer"),
            ("leprop", "ids|title|type|timestamp|details"),
            ("lelimit", "max"),
        ]);
        if !from.log_timestamp.is_empty() {
            q.push(("lestart".into(), before_late_rows(&from.log_timestamp)));
        }
        let mut returned = Vec::new();
        self.api
            .query_all(q, |v| {
                for e in list(v, "logevents") {
                    let logid = e.get("logid").and_then(Value::as_u64).unwrap_or(0);
                    returned.push((logid, str_at(e, "timestamp")));
                    keep_recent(&mut returned);
                    if !acts_on(logid, from.log_id, &from.log_recent) {
                        continue;
                    }
                    let kind = e.get("type").and_then(Value::as_str).unwrap_or("");
                    if PAGE_LOG_TYPES.contains(&kind) {
                        // `logpage` is the page the action was on (kept across a move; the
                        // deleted page's id for a deletion); `pageid` is whatever page has
                        // the title now.
                        for key in ["logpage", "pageid"] {
                            if let Some(p) = e.get(key).and_then(Value::as_u64).filter(|p| *p > 0) {
                                touched.insert(p);
                            }
                        }
                    }
                    if logid > next.log_id {
                        next.log_id = logid;
                        next.log_timestamp = str_at(e, "timestamp");
                    }
                }
                Ok(())
            })
            .await?;
        next.log_recent = recent_ids(&returned, next.log_id, &next.log_timestamp);
        Ok(())
    }

    /// The current state of each page id the wiki answered with a readable entry, and the ids
    /// it answered as missing (an id in neither was not told).
    async fn page_states_and_missing(
        &self,
        ids: &BTreeSet<u64>,
    ) -> Result<(BTreeMap<u64, PageMeta>, BTreeSet<u64>), SyncError> {
        let ids: Vec<u64> = ids.iter().copied().collect();
        let mut out = BTreeMap::new();
        let mut missing = BTreeSet::new();
        for chunk in ids.chunks(STATE_BATCH) {
            let joined: Vec<String> = chunk.iter().map(u64::to_string).collect();
            let mut q = self.page_props();
            q.push(("pageids".into(), joined.join("|")));
            self.api
                .query_all(q, |v| {
                    merge_pages(&mut out, v);
                    missing.extend(missing_ids(v));
                    Ok(())
                })
                .await?;
        }
        Ok((out, missing))
    }

    /// `prop=` parameters that give a page's latest revision, redirect flag and (with
    /// categories) membership.
    fn page_props(&self) -> Params {
        let mut q = params([
            ("action", "query"),
            ("prop", "info|revisions"),
            ("rvprop", "ids|timestamp"),
        ]);
        if let Some(cats) = &self.cfg.categories {
            q[1].1.push_str("|categories");
            let titles: Vec<String> = cats.iter().map(|c| format!("Category:{c}")).collect();
            q.push(("clcategories".into(), titles.join("|")));
            q.push(("cllimit".into(), "max".into()));
        }
        q
    }

    /// Every page in scope: the configured namespaces (or their members of the configured
    /// categories), redirects excluded. Any failure fails the listing as a whole.
    async fn list_all(&self) -> Result<BTreeMap<u64, PageMeta>, SyncError> {
        let mut out = BTreeMap::new();
        let namespaces: Vec<String> = self.cfg.namespaces.iter().map(i64::to_string).collect();
        let mut queries = Vec::new();
        match &self.cfg.categories {
            None => {
                for ns in &namespaces {
                    let mut q = self.page_props();
                    q.extend(params([
                        ("generator", "allpages"),
                        ("gapnamespace", ns),
                        ("gapfilterredir", "nonredirects"),
                        ("gaplimit", "50"),
                    ]));
                    queries.push(q);
                }
            }
            Some(cats) => {
                for c in cats {
                    let mut q = self.page_props();
                    q.extend(params([
                        ("generator", "categorymembers"),
                        ("gcmtitle", &format!("Category:{c}")),
                        ("gcmnamespace", &namespaces.join("|")),
                        ("gcmlimit", "50"),
                    ]));
                    queries.push(q);
                }
            }
        }
        for q in queries {
            self.api
                .query_all(q, |v| {
                    merge_pages(&mut out, v);
                    Ok(())
                })
                .await?;
            if self.shutdown.is_cancelled() {
                return Err(SyncError::Cancelled);
            }
        }
        out.retain(|_, m| self.in_scope(m));
        Ok(out)
    }

    fn in_scope(&self, m: &PageMeta) -> bool {
        self.cfg.namespaces.contains(&m.ns)
            && !m.redirect
            && (self.cfg.categories.is_none() || m.in_categories)
    }

    /// A page whose rendering failed without an API error code (HTTP 5xx or timeouts after the
    /// retries, a reply that is not JSON or is too large): when the wiki answers a light request
    /// now, the failure is this page's (a PHP fatal error or a render slower than the timeout
    /// on it alone), and the page keeps its indexed version while the sync goes on; else the
    /// wiki is down and the sync fails. (Before, one page that would not render stopped every
    /// sync at it: later pages never updated, deleted ones never withdrawn.)
    async fn on_page_failure(&self, meta: &PageMeta, e: ApiError) -> Result<Action, SyncError> {
        // A wiki that keeps asking to slow down answers the light probe too, but the refusal
        // is the whole wiki's: the sync stops (and its job backs off) instead of going on to
        // the next page at the same pace, each failing in turn.
        if e.is_throttled() {
            return Err(e.into());
        }
        if e.code().is_some()
            || !matches!(e, ApiError::Unreachable { .. } | ApiError::Invalid { .. })
        {
            return on_parse_error(e);
        }
        let probe = self
            .api
            .get(&params([("action", "query"), ("meta", "siteinfo")]))
            .await;
        match probe {
            Ok(_) => {
                tracing::warn!(connector = %self.cfg.id, page = meta.id, error = %docent_connector_api::log_safe(&e.to_string()), "a page failed to render; its indexed version stays");
                Ok(Action::Failed(format!(
                    "the wiki failed on this page while answering others: {e}"
                )))
            }
            Err(_) => Err(e.into()),
        }
    }

    /// Reads (at most `max_concurrent_requests` at a time) and sends what changed of `pages`,
    /// in order.
    async fn apply(&self, pages: Vec<PageMeta>) -> Result<(), SyncError> {
        let width = self.cfg.max_concurrent_requests;
        let hidden = &self.hidden_from_everyone(&pages).await?;
        let mut actions = futures::stream::iter(pages)
            .map(|m| async move {
                let a = if hidden.contains(&m.id) {
                    Action::Skip(
                        "the wiki does not let readers who are not logged in read this page \
                         (a per-page or per-namespace restriction), and its ACL here would be \
                         everyone: not indexed"
                            .into(),
                    )
                } else {
                    self.action(&m).await?
                };
                Ok::<_, SyncError>((m, a))
            })
            .buffered(width);
        while let Some((meta, action)) = actions.try_next().await? {
            // Unchanged pages need no request, so a long run of them never waits: check here.
            if self.shutdown.is_cancelled() {
                return Err(SyncError::Cancelled);
            }
            let native = meta.id.to_string();
            match action {
                Action::Unchanged => self.count(|j| {
                    j.counts.scanned += 1;
                    j.counts.unchanged += 1;
                }),
                Action::Moved => {
                    tracing::debug!(connector = %self.cfg.id, page = meta.id, "page moved while syncing; the next poll takes it");
                    self.count(|j| j.counts.scanned += 1);
                }
                Action::Gone => self.delete_if_known(meta.id).await?,
                Action::Failed(reason) => {
                    self.count(|j| j.counts.scanned += 1);
                    self.count_failure(&format!("{native} ({})", meta.title), &reason);
                }
                Action::Skip(reason) => {
                    self.count(|j| j.counts.scanned += 1);
                    self.count_failure(&format!("{native} ({})", meta.title), &reason);
                    self.remember(&native, None);
                    self.send(Change::Skipped {
                        key: DocKey::new(&self.cfg.id, native),
                        reason,
                    })
                    .await?;
                }
                Action::Upsert(doc) => {
                    let known = self.last_known(&doc.key).is_some();
                    self.remember(
                        &native,
                        Some(IndexedDoc {
                            version: doc.version.clone(),
                            acl_fingerprint: doc.acl.fingerprint(),
                        }),
                    );
                    self.count(|j| {
                        j.counts.scanned += 1;
                        if known {
                            j.counts.modified += 1;
                        } else {
                            j.counts.added += 1;
                        }
                    });
                    self.send(Change::Upsert(doc)).await?;
                }
            }
        }
        Ok(())
    }

    /// With `permissions = "public"`, those of `pages` that the wiki does not let a reader who
    /// is not logged in read. The crawler reads with its own session, and the wiki-wide `read`
    /// right ([`Api::anonymous_may_read`]) says nothing about pages that an extension (Lockdown,
    /// AccessControl) restricts: each page is asked on its own. (With `"namespaces"`, the map is
    /// the admin's statement of who reads, possibly a logged-in audience mapped to everyone: not
    /// second-guessed by what anonymous readers may do.)
    async fn hidden_from_everyone(&self, pages: &[PageMeta]) -> Result<BTreeSet<u64>, SyncError> {
        if self.cfg.permissions != Permissions::Public {
            return Ok(BTreeSet::new());
        }
        let public: Vec<u64> = pages.iter().map(|m| m.id).collect();
        if public.is_empty() {
            return Ok(BTreeSet::new());
        }
        let readable = self.api.anonymous_readable(&public).await?;
        Ok(public
            .into_iter()
            .filter(|id| !readable.contains(id))
            .collect())
    }

    /// Decides about one page in scope, reading it only when its revision or ACL changed (or
    /// the sync is full). Request errors fail the sync; page-level API errors skip the page.
    async fn action(&self, meta: &PageMeta) -> Result<Action, SyncError> {
        let acl = match self.cfg.permissions.acl_for(meta.ns) {
            Ok(acl) => acl,
            Err(reason) => return Ok(Action::Skip(reason)),
        };
        let key = DocKey::new(&self.cfg.id, meta.id.to_string());
        let full = self.full.load(Ordering::Relaxed);
        let prev = self.last_known(&key);
        if let Some(prev) = &prev
            && prev.version == meta.version()
            && prev.acl_fingerprint == acl.fingerprint()
            && !full
        {
            return Ok(Action::Unchanged);
        }
        // A failure that keeps the indexed version keeps it only under the ACL it was indexed
        // with: old text must not stay under an ACL the page no longer has. (A page not indexed
        // yet has nothing to withdraw.)
        let acl_stands = prev.is_none_or(|p| p.acl_fingerprint == acl.fingerprint());
        let id = meta.id.to_string();
        let parse = params([
            ("action", "parse"),
            ("pageid", &id),
            ("prop", "text|sections|displaytitle|revid"),
            ("disablelimitreport", "1"),
            ("disableeditsection", "1"),
        ]);
        // Given to everyone: rendered as a reader who is not logged in sees it, not as the
        // crawler (a review: a sysop crawler's rendering of a special page or of text an
        // extension shows by group went to everyone).
        let rendered = match self.cfg.permissions {
            Permissions::Public => self.api.get_anonymous(&parse).await,
            _ => self.api.get(&parse).await,
        };
        let v = match rendered {
            Ok(v) => v,
            Err(e) => {
                return Ok(match self.on_page_failure(meta, e).await? {
                    Action::Failed(reason) if !acl_stands => Action::Skip(format!(
                        "{reason}; its ACL changed since it was indexed, so that version is withdrawn"
                    )),
                    a => a,
                });
            }
        };
        // An answer without its parse object is this page's failure, as any broken answer
        // (a review: it stopped every sync at this page).
        let Some(parse) = v.get("parse") else {
            let e = ApiError::Invalid {
                url: self.cfg.api_url.clone(),
                message: format!("action=parse for page {id} returned no parse object"),
            };
            return Ok(match self.on_page_failure(meta, e).await? {
                Action::Failed(reason) if !acl_stands => Action::Skip(format!(
                    "{reason}; its ACL changed since it was indexed, so that version is withdrawn"
                )),
                a => a,
            });
        };
        let title = str_at(parse, "title");
        if title != meta.title {
            return Ok(Action::Moved);
        }
        let revid = parse
            .get("revid")
            .and_then(Value::as_u64)
            .unwrap_or(meta.revid);
        let html = parse.get("text").and_then(Value::as_str).unwrap_or("");
        let content = html_document(&title, html).into_bytes();
        if content.len() as u64 > self.cfg.max_page_bytes {
            return Ok(Action::Skip(format!(
                "too large: the rendered page is {} bytes > max_file_size_bytes {}",
                content.len(),
                self.cfg.max_page_bytes
            )));
        }
        Ok(Action::Upsert(Box::new(self.document(
            meta, key, title, revid, content, acl, parse, full,
        ))))
    }

    #[allow(clippy::too_many_arguments)]
    fn document(
        &self,
        meta: &PageMeta,
        key: DocKey,
        title: String,
        revid: u64,
        content: Vec<u8>,
        acl: Acl,
        parse: &Value,
        full: bool,
    ) -> SourceDocument {
        let mut attributes = BTreeMap::new();
        attributes.insert("namespace".to_string(), meta.ns.to_string());
        attributes.insert("wiki_title".to_string(), title.clone());
        attributes.insert("revision".to_string(), revid.to_string());
        // Citations link to the section of the page (Docent derives MediaWiki's anchors).
        attributes.insert("anchor_style".to_string(), "mediawiki".to_string());
        let sections = section_titles(parse);
        if !sections.is_empty() {
            // Bounded: every chunk stores the attributes (a page of thousands of sections
            // would not fit a Milvus row); later sections' citations link to the page.
            let mut joined = String::new();
            for t in &sections {
                if joined.len() + t.len() + 1 > MAX_SECTIONS_BYTES {
                    break;
                }
                if !joined.is_empty() {
                    joined.push('\n');
                }
                joined.push_str(t);
            }
            attributes.insert("sections".to_string(), joined);
        }
        SourceDocument {
            uri: self.cfg.page_uri(&title),
            name_hint: format!("{title}.html"),
            title: Some(title),
            mime: Some("text/html".to_string()),
            key,
            content,
            // A newer revision than the listed one was read: its `touched` is not known, so
            // the next comparison reads the page again (once).
            version: if revid == meta.revid {
                meta.version()
            } else {
                revid.to_string()
            },
            // The timestamp belongs to the listed revision; a newer one read meanwhile is
            // dated by the next poll.
            modified_at: meta
                .timestamp
                .as_deref()
                .filter(|_| revid == meta.revid)
                .and_then(parse_timestamp),
            attributes,
            acl,
            job: Some(self.job.load(Ordering::Relaxed)),
            reparse: full,
        }
    }

    async fn delete_if_known(&self, page_id: u64) -> Result<(), SyncError> {
        let id = page_id.to_string();
        if self
            .last_known(&DocKey::new(&self.cfg.id, id.as_str()))
            .is_some()
        {
            self.send_delete(id).await?;
        }
        Ok(())
    }

    async fn send_delete(&self, id: String) -> Result<(), SyncError> {
        self.remember(&id, None);
        self.send(Change::Delete(DocKey::new(&self.cfg.id, id)))
            .await?;
        self.count(|j| j.counts.deleted += 1);
        Ok(())
    }

    async fn send(&self, change: Change) -> Result<(), SyncError> {
        tokio::select! {
            _ = self.shutdown.cancelled() => Err(SyncError::Cancelled),
            r = self.sink.send(change) => r.map_err(|_| SyncError::SinkClosed),
        }
    }

    /// The newest state of a page as far as this connector knows (see [`SentLog`]).
    fn last_known(&self, key: &DocKey) -> Option<IndexedDoc> {
        self.sent.last_known(key)
    }

    fn remember(&self, id: &str, last: Option<IndexedDoc>) {
        self.sent.remember(id, last);
    }

    fn count(&self, f: impl FnOnce(&mut JobRecord)) {
        self.status.update_job(self.job.load(Ordering::Relaxed), f);
    }

    fn count_failure(&self, id: &str, reason: &str) {
        self.count(|j| {
            j.counts.failed += 1;
            if j.failures.len() < jobs::JOB_FAILURES {
                j.failures.push(jobs::JobFailure {
                    id: id.to_string(),
                    reason: reason.to_string(),
                });
            }
        });
    }
}

/// Whether recent changes lost entries past the checkpoint `rc_id`, given the oldest entry
/// still there: purging removes the oldest first, so entries after the checkpoint are gone
/// exactly when the oldest remaining one is newer than the one right after it.
pub fn rc_gap(rc_id: u64, oldest: Option<u64>) -> bool {
    rc_id > 0 && oldest.is_none_or(|o| o > rc_id + 1)
}

/// What a failed `action=parse` means for the page. A page-level refusal skips it (and so
/// withdraws the indexed version); the wiki's own internal errors (a lost database connection,
/// an exception while rendering) say nothing about the page, and an outage never deletes: the
/// indexed version stays. A request that failed (unreachable, refused) fails the sync; see
/// [`Syncer::on_page_failure`] for a request only this page's rendering fails.
fn on_parse_error(e: ApiError) -> Result<Action, SyncError> {
    match e.code() {
        Some("missingtitle" | "nosuchpageid") => Ok(Action::Gone),
        // Errors about the crawler's session or the whole wiki, not the page (a session lost
        // again after the one fresh login, reading closed to the account): the sync fails and
        // every indexed page stays. (Rate limits and maxlag are retried, then fail the sync,
        // below this.)
        Some(
            "assertuserfailed" | "assertnameduserfailed" | "assertbotfailed" | "readapidenied",
        ) => Err(e.into()),
        Some(code) if code.starts_with("internal_api_error_") => Ok(Action::Failed(format!(
            "the wiki failed rendering the page ({code}): {e}"
        ))),
        Some(code) => Ok(Action::Skip(format!(
            "the wiki would not render the page ({code}): {e}"
        ))),
        None => Err(e.into()),
    }
}

/// The section titles of an `action=parse` answer as text: the API gives each `line` as HTML
/// (`<i>Project</i> Falcon`, `4111&#160;1111`), which would split words for search and hide
/// values from PII redaction.
fn section_titles(parse: &Value) -> Vec<String> {
    parse
        .get("sections")
        .and_then(Value::as_array)
        .map(|s| {
            s.iter()
                .filter_map(|x| x.get("line").and_then(Value::as_str))
                .map(docent_connector_api::html::text_of)
                .filter(|t| !t.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

fn list<'a>(v: &'a Value, name: &str) -> impl Iterator<Item = &'a Value> {
    v.pointer(&format!("/query/{name}"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn str_at(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The page ids a query response answers as missing (`{"pageid": 7, "missing": true}`).
fn missing_ids(v: &Value) -> impl Iterator<Item = u64> + '_ {
    list(v, "pages")
        .filter(|p| p.get("missing").is_some())
        .filter_map(|p| p.get("pageid").and_then(Value::as_u64))
}

/// Adds the `pages` of a query response to `out`. A page split across continued responses
/// (its revision or categories arriving later) is merged.
fn merge_pages(out: &mut BTreeMap<u64, PageMeta>, v: &Value) {
    for p in list(v, "pages") {
        let Some(meta) = PageMeta::from_json(p) else {
            continue;
        };
        match out.get_mut(&meta.id) {
            Some(have) => {
                if have.timestamp.is_none() && meta.timestamp.is_some() {
                    have.timestamp = meta.timestamp;
                    have.revid = meta.revid;
                }
                if have.touched.is_empty() {
                    have.touched = meta.touched;
                }
                have.in_categories |= meta.in_categories;
            }
            None => {
                out.insert(meta.id, meta);
            }
        }
    }
}

/// The rendered page (an HTML fragment) as a document whose `<title>` is the page title.
fn html_document(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title></head><body>\n{body}\n</body></html>\n",
        escape_html(title)
    )
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

pub fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What a poll does with a page a change touched.
#[derive(Debug, PartialEq)]
enum Touched<'a> {
    /// In scope: read it if it changed.
    Live(&'a PageMeta),
    /// The wiki says it is missing, or it is out of scope now (moved out of the crawled
    /// namespaces or categories, or a redirect): no longer indexed.
    Gone,
    /// Neither: the answer left it out or could not be read. Nothing is deleted on silence.
    Unanswered,
}

fn touched_page(
    state: Option<&PageMeta>,
    missing: bool,
    in_scope: impl Fn(&PageMeta) -> bool,
) -> Touched<'_> {
    match state {
        Some(meta) if in_scope(meta) => Touched::Live(meta),
        Some(_) => Touched::Gone,
        None if missing => Touched::Gone,
        None => Touched::Unanswered,
    }
}

/// What a reconciliation does with an indexed page its listing did not show, by what the wiki
/// answers about it.
#[derive(Debug, PartialEq)]
enum Unlisted<'a> {
    /// Still on the wiki, outside the configured scope: withdrawn past deletion protection.
    OutOfScope,
    /// On the wiki and in scope: the listing missed it (moved or re-sorted while it paged).
    Missed(&'a PageMeta),
    /// The wiki says it does not exist: deleted, under deletion protection.
    Deleted,
    /// Left out of the answer: kept.
    Unanswered,
}

fn unlisted_page(
    state: Option<&PageMeta>,
    missing: bool,
    in_scope: impl Fn(&PageMeta) -> bool,
) -> Unlisted<'_> {
    match state {
        Some(m) if in_scope(m) => Unlisted::Missed(m),
        Some(_) => Unlisted::OutOfScope,
        None if missing => Unlisted::Deleted,
        None => Unlisted::Unanswered,
    }
}

/// How far before a checkpoint's timestamp the recent changes and the log are read again.
/// MediaWiki writes an edit's recent-changes and log rows after saving it, with the edit's own
/// (earlier) timestamp: a row written after a poll may carry a timestamp before the position
/// that poll saved. Ids are in insertion order, so rows at or below the checkpoint's id are
/// still skipped; the margin only reaches back for rows inserted late.
pub const LATE_ROW_MARGIN_SECS: i64 = 300;

/// Whether a poll acts on the change entry `id` (recent changes or log): one after the
/// position's id, or one in the window a poll reaches back over that it has not acted on
/// (`recent`: see [`Position::rc_recent`]; empty in a checkpoint from before it was kept, when
/// everything up to the position's id counts as acted on).
fn acts_on(id: u64, position: u64, recent: &[u64]) -> bool {
    id > 0 && (id > position || !recent.is_empty() && recent.binary_search(&id).is_err())
}

/// Bounds what a poll keeps of the entries it was given (id, timestamp) to find the next
/// window's ([`recent_ids`]): entries come oldest first, so once there are many, those older
/// than the newest's window go (a poll after a long outage may read millions).
fn keep_recent(returned: &mut Vec<(u64, String)>) {
    if returned.len() < 2 * MAX_RECENT_IDS {
        return;
    }
    let newest = returned
        .last()
        .and_then(|(_, ts)| crate::api::parse_timestamp(ts));
    if let Some(newest) = newest {
        returned.retain(|(_, ts)| {
            crate::api::parse_timestamp(ts).is_none_or(|t| t >= newest - LATE_ROW_MARGIN_SECS)
        });
    }
    if returned.len() >= 2 * MAX_RECENT_IDS {
        returned.drain(..returned.len() - MAX_RECENT_IDS);
    }
}

/// At most this many ids of [`Position::rc_recent`] and [`Position::log_recent`] (the highest).
const MAX_RECENT_IDS: usize = 10_000;

/// Of the entries a poll was given (id, timestamp), the ids a later poll reaches back over
/// (within [`LATE_ROW_MARGIN_SECS`] of the newest acted on, `newest_ts`), with `newest`.
fn recent_ids(returned: &[(u64, String)], newest: u64, newest_ts: &str) -> Vec<u64> {
    let from = crate::api::parse_timestamp(newest_ts).map(|t| t - LATE_ROW_MARGIN_SECS);
    let mut ids: Vec<u64> = returned
        .iter()
        .filter(|(_, ts)| match (from, crate::api::parse_timestamp(ts)) {
            (Some(from), Some(t)) => t >= from,
            _ => true,
        })
        .map(|(id, _)| *id)
        .chain([newest])
        .filter(|id| *id > 0)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() > MAX_RECENT_IDS {
        ids.drain(..ids.len() - MAX_RECENT_IDS);
    }
    ids
}

/// `ts` moved back by [`LATE_ROW_MARGIN_SECS`], as Unix seconds (which the API accepts for
/// `rcstart` and `lestart`); `ts` itself if it does not parse.
fn before_late_rows(ts: &str) -> String {
    crate::api::parse_timestamp(ts).map_or_else(
        || ts.to_string(),
        |t| (t - LATE_ROW_MARGIN_SECS).max(0).to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Session 36's note: a change entry whose id was taken before a later entry's, but which
    /// was committed (and listed) only after a poll had read the later one, was skipped for
    /// good (its id lay below the position). Within the window a poll reaches back over, an
    /// entry not acted on is acted on, whatever its id.
    #[test]
    fn a_change_listed_late_below_the_position_is_acted_on_once() {
        let ts = |s: u32| format!("2024-05-01T12:{:02}:{:02}Z", s / 60, s % 60);
        // First poll: entries 101 and 103 (102's transaction not yet committed).
        let first = [(101, ts(0)), (103, ts(10))];
        let recent = recent_ids(&first, 103, &ts(10));
        assert_eq!(recent, [101, 103]);
        // Next poll: 102 now listed, below the position (103).
        assert!(acts_on(102, 103, &recent), "the late entry");
        assert!(!acts_on(101, 103, &recent) && !acts_on(103, 103, &recent));
        assert!(acts_on(104, 103, &recent));
        let second = [(101, ts(0)), (102, ts(5)), (103, ts(10))];
        let recent = recent_ids(&second, 103, &ts(10));
        assert!(!acts_on(102, 103, &recent), "acted on once");
        // Entries older than the window are dropped from it (the query no longer reaches them).
        let old = [(90, ts(0)), (200, ts(600))];
        assert_eq!(recent_ids(&old, 200, &ts(600)), [200]);
        // A checkpoint from before: everything up to the position counts as acted on.
        assert!(!acts_on(102, 103, &[]));
        assert!(acts_on(104, 103, &[]));
        // An entry without an id is never acted on.
        assert!(!acts_on(0, 103, &recent));
    }

    /// A poll after a long outage keeps only the entries of the newest window, not every
    /// entry it reads.
    #[test]
    fn a_long_poll_keeps_a_bounded_tail_of_its_entries() {
        let mut returned = Vec::new();
        for i in 0..(3 * MAX_RECENT_IDS as u64) {
            // One entry a second (within one day): the window holds the last 301.
            let ts = format!(
                "2024-05-01T{:02}:{:02}:{:02}Z",
                i / 3600,
                i / 60 % 60,
                i % 60
            );
            returned.push((i + 1, ts));
            keep_recent(&mut returned);
            assert!(returned.len() < 2 * MAX_RECENT_IDS);
        }
        let (newest, newest_ts) = returned.last().cloned().unwrap();
        let recent = recent_ids(&returned, newest, &newest_ts);
        assert_eq!(recent.len(), LATE_ROW_MARGIN_SECS as usize + 1);
        assert_eq!(recent.last(), Some(&newest));
    }

    #[test]
    fn a_touched_page_is_deleted_only_when_the_wiki_says_it_is_gone() {
        let meta = PageMeta::from_json(&serde_json::json!({"pageid": 7, "ns": 0,
            "title": "Seven", "revisions": [{"revid": 70, "timestamp": "2024-05-01T12:00:00Z"}]}))
        .expect("a page's state");
        assert_eq!(
            touched_page(Some(&meta), false, |_| true),
            Touched::Live(&meta)
        );
        assert_eq!(touched_page(Some(&meta), false, |_| false), Touched::Gone);
        assert_eq!(touched_page(None, true, |_| true), Touched::Gone);
        // Left out of the answer, or an entry that could not be read: kept.
        assert_eq!(touched_page(None, false, |_| true), Touched::Unanswered);
    }

    /// Session 34's review: the reconciliation deleted every indexed page its listing did not
    /// show, also one the wiki then answered as existing and in scope (moved while the
    /// listing paged past it), or left out of its answer.
    #[test]
    fn a_reconciliation_deletes_only_pages_the_wiki_says_are_gone() {
        let meta = PageMeta::from_json(&serde_json::json!({"pageid": 42, "ns": 0,
            "title": "Zeta", "revisions": [{"revid": 420, "timestamp": "2024-05-01T12:00:00Z"}]}))
        .expect("a page's state");
        assert_eq!(
            unlisted_page(Some(&meta), false, |_| true),
            Unlisted::Missed(&meta)
        );
        assert_eq!(
            unlisted_page(Some(&meta), false, |_| false),
            Unlisted::OutOfScope
        );
        assert_eq!(unlisted_page(None, true, |_| true), Unlisted::Deleted);
        assert_eq!(unlisted_page(None, false, |_| true), Unlisted::Unanswered);
    }

    #[test]
    fn section_titles_are_text_not_html() {
        let parse = serde_json::json!({"sections": [
            {"line": "<i>Project</i> Falcon", "anchor": "Project_Falcon"},
            {"line": "Card 4111&#160;1111&#160;1111&#160;1111"},
            {"line": "<span></span>"},
        ]});
        assert_eq!(
            section_titles(&parse),
            ["Project Falcon", "Card 4111 1111 1111 1111"]
        );
    }

    #[test]
    fn a_wiki_internal_error_keeps_the_page_and_a_refusal_skips_it() {
        let api = |code: &str| ApiError::Api {
            code: code.into(),
            info: "…".into(),
        };
        for code in [
            "internal_api_error_DBConnectionError",
            "internal_api_error_MWException",
        ] {
            assert!(
                matches!(on_parse_error(api(code)), Ok(Action::Failed(_))),
                "{code}"
            );
        }
        assert!(matches!(
            on_parse_error(api("permissiondenied")),
            Ok(Action::Skip(_))
        ));
        assert!(matches!(
            on_parse_error(api("nosuchpageid")),
            Ok(Action::Gone)
        ));
        // The crawler's session or the wiki as a whole, not the page: the sync fails (session
        // 30's review: a session lost twice skipped, and so withdrew, the page).
        for code in ["assertuserfailed", "assertbotfailed", "readapidenied"] {
            assert!(on_parse_error(api(code)).is_err(), "{code}");
        }
        assert!(
            on_parse_error(ApiError::Status {
                url: "http://wiki/api.php".into(),
                status: 403,
            })
            .is_err()
        );
    }

    #[test]
    fn gap_only_when_entries_after_the_checkpoint_were_purged() {
        assert!(!rc_gap(0, None), "no checkpoint entry: nothing to lose");
        assert!(!rc_gap(10, Some(3)));
        assert!(!rc_gap(10, Some(11)), "the next entry is still there");
        assert!(rc_gap(10, Some(12)));
        assert!(rc_gap(10, None), "everything purged");
    }

    #[test]
    fn pages_merge_across_continued_responses() {
        let mut out = BTreeMap::new();
        merge_pages(
            &mut out,
            &serde_json::json!({"query": {"pages": [
                {"pageid": 2, "ns": 0, "title": "A", "lastrevid": 7},
                {"pageid": 3, "ns": 0, "title": "B", "missing": true},
                {"ns": 0, "title": "C", "missing": true},
            ]}}),
        );
        merge_pages(
            &mut out,
            &serde_json::json!({"query": {"pages": [
                {"pageid": 2, "ns": 0, "title": "A",
                 "revisions": [{"revid": 7, "timestamp": "2024-01-01T00:00:00Z"}],
                 "categories": [{"ns": 14, "title": "Category:X"}]},
            ]}}),
        );
        assert_eq!(out.len(), 1);
        let a = &out[&2];
        assert_eq!(a.revid, 7);
        assert_eq!(a.timestamp.as_deref(), Some("2024-01-01T00:00:00Z"));
        assert!(a.in_categories);
    }

    #[test]
    fn titles_are_escaped_in_the_document() {
        let d = html_document("A <b> & \"c\"", "<p>x</p>");
        assert!(d.contains("<title>A &lt;b&gt; &amp; &quot;c&quot;</title>"));
        assert!(d.contains("<p>x</p>"));
    }

    #[test]
    fn only_pages_answered_as_missing_count_as_missing() {
        let v = serde_json::json!({"query": {"pages": [
            {"pageid": 7, "missing": true},
            {"pageid": 8, "ns": 0, "title": "Here", "lastrevid": 3},
            {"title": "Nope", "missing": true},
            {"pageid": 9, "invalid": true}
        ]}});
        assert_eq!(missing_ids(&v).collect::<Vec<_>>(), vec![7]);
    }

    #[test]
    fn a_sweep_round_fits_in_the_reconciliation_interval_within_ten_queries_a_poll() {
        let (minute, day) = (Duration::from_secs(60), Duration::from_secs(86_400));
        assert_eq!(sweep_batch(15, minute, day), 50);
        assert_eq!(sweep_batch(72_000, minute, day), 50);
        assert_eq!(sweep_batch(72_001, minute, day), 100);
        assert_eq!(sweep_batch(300_000, minute, day), 250);
        assert_eq!(sweep_batch(5_000_000, minute, day), 500);
        // A poll as long as the reconciliation: everything at once, within the cap.
        assert_eq!(sweep_batch(120, day, day), 150);
    }

    #[test]
    fn checkpoint_round_trips() {
        let p = Position {
            rc_timestamp: "2024-01-01T00:00:00Z".into(),
            rc_id: 4,
            log_timestamp: String::new(),
            log_id: 0,
            last_full_ms: 5,
            scope: "s".into(),
            swept_to: 42,
            swept_deleted: 7,
            deletions_held: true,
            rc_recent: vec![3, 4],
            log_recent: vec![],
        };
        assert_eq!(
            Position::from_checkpoint(&p.to_checkpoint()),
            Some(p.clone())
        );
        // A checkpoint from before the sweep's cursor was kept starts the sweep at the lowest id.
        let mut old = p.to_checkpoint();
        old.as_object_mut().unwrap().remove("swept_to");
        assert_eq!(Position::from_checkpoint(&old).map(|p| p.swept_to), Some(0));
        // Nor the sweep's deletions and a hold: none, as before.
        old.as_object_mut().unwrap().remove("swept_deleted");
        old.as_object_mut().unwrap().remove("deletions_held");
        assert_eq!(
            Position::from_checkpoint(&old).map(|p| (p.swept_deleted, p.deletions_held)),
            Some((0, false))
        );
        // Nor the ids acted on near the position: none, as before.
        old.as_object_mut().unwrap().remove("rc_recent");
        old.as_object_mut().unwrap().remove("log_recent");
        assert_eq!(
            Position::from_checkpoint(&old).map(|p| p.rc_recent),
            Some(vec![])
        );
        assert_eq!(
            Position::from_checkpoint(&serde_json::json!({"x": 1})),
            None
        );
    }
}
