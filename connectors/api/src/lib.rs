//! The stable API between Docent and its connectors.
//!
//! A connector crawls a source and then watches it, sending [`Change`]s into a bounded channel
//! (backpressure: a slow index slows the crawl, it never buffers without bound). Every document
//! carries its [`Acl`]; there is no "unknown ACL" value. A connector that cannot determine a
//! document's ACL must send [`Change::Skipped`] for it, never an upsert with a guessed ACL.
//!
//! Checkpoints sent with [`Change::Checkpoint`] are committed by the index in the same atomic
//! commit as every change sent before them, so a connector that resumes from its last checkpoint
//! neither loses nor duplicates documents.

mod acl;
pub mod conformance;
pub mod html;
pub mod jobs;
mod log;
pub mod paths;
pub mod registry;
mod sent;

pub use acl::{Acl, AclDecision, AclError, Principal, fold_token};
pub use log::{log_safe, set_log_redactor};
pub use sent::SentLog;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

pub use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Identifies a document across the whole daemon: the connector that owns it plus the id the
/// source uses (a path, a page id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DocKey {
    pub connector: String,
    pub native_id: String,
}

impl DocKey {
    pub fn new(connector: impl Into<String>, native_id: impl Into<String>) -> Self {
        Self {
            connector: connector.into(),
            native_id: native_id.into(),
        }
    }

    /// Parses the `connector:native_id` form produced by `Display`.
    pub fn parse(s: &str) -> Option<Self> {
        let (c, n) = s.split_once(':')?;
        (!c.is_empty() && !n.is_empty()).then(|| Self::new(c, n))
    }
}

impl fmt::Display for DocKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.connector, self.native_id)
    }
}

/// A document as the source holds it, before parsing.
#[derive(Debug, Clone)]
pub struct SourceDocument {
    pub key: DocKey,
    /// Where a user can open the document (`file:///...`, `https://wiki/...`).
    pub uri: String,
    /// Title when the source knows one; otherwise the parser derives it.
    pub title: Option<String>,
    /// Media type when known; otherwise the parser uses `name_hint`'s extension.
    pub mime: Option<String>,
    /// File name or similar, used for format detection and as the last-resort title.
    pub name_hint: String,
    pub content: Vec<u8>,
    /// Opaque version of the content (mtime and size, an etag, a revision id). Unchanged
    /// version and ACL means the document need not be read again.
    pub version: String,
    /// Unix seconds.
    pub modified_at: Option<i64>,
    pub attributes: BTreeMap<String, String>,
    pub acl: Acl,
    /// The connector's sync job that sent this version (failures found later are counted in it).
    pub job: Option<u64>,
    /// Parse and chunk again even if the version and ACL are what the index holds (a full sync).
    pub reparse: bool,
}

impl SourceDocument {
    /// The bytes this document holds while it waits in a queue: its content and every field
    /// stored with it (an ACL or attributes can outweigh the content).
    pub fn held_bytes(&self) -> usize {
        let acl: usize = self
            .acl
            .allow
            .iter()
            .chain(&self.acl.deny)
            .map(|p| {
                // As `token()` spells it, plus the set's own cost.
                16 + match p {
                    Principal::User(u) => 5 + u.len(),
                    Principal::Group(g) => 6 + g.len(),
                    Principal::Everyone => 8,
                }
            })
            .sum();
        let attributes: usize = self.attributes.iter().map(|(k, v)| k.len() + v.len()).sum();
        self.content.len()
            + acl
            + attributes
            + self.uri.len()
            + self.title.as_ref().map_or(0, String::len)
            + self.name_hint.len()
            + self.version.len()
    }
}

/// A connector's opaque resume position, committed atomically with the data before it.
pub type Checkpoint = serde_json::Value;

/// What a connector tells the pipeline.
#[derive(Debug, Clone)]
pub enum Change {
    Upsert(Box<SourceDocument>),
    Delete(DocKey),
    /// The document exists but will not be indexed; `reason` says why (shown to admins).
    Skipped {
        key: DocKey,
        reason: String,
    },
    /// Everything sent before this is covered by the checkpoint.
    Checkpoint {
        connector: String,
        checkpoint: Checkpoint,
    },
    /// A reconciliation of `connector` that started at rollback count `at` ended with the
    /// changes sent before this ([`SentLog::reconciled`] makes it). The pipeline stops
    /// recording the reconciliation as owed only once those changes are written, and commits
    /// that with them: told beside the channel, it was committed as paid while what it had
    /// sent again still waited in the channel, and a crash then lost those changes until the
    /// next scheduled reconciliation.
    Reconciled {
        connector: String,
        at: u64,
    },
}

/// What the index holds for one document, as a connector needs to know it to skip unchanged
/// documents without reading them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedDoc {
    pub version: String,
    pub acl_fingerprint: String,
}

/// Read access to the index's per-document state, for incremental crawls and reconciliation.
pub trait IndexedState: Send + Sync {
    fn get(&self, key: &DocKey) -> Option<IndexedDoc>;
    /// Native ids of every indexed document of `connector`.
    fn native_ids(&self, connector: &str) -> Vec<String>;
    /// The version of `key` the pipeline failed to index for a reason not the document's own
    /// (its parser could not run, the model failed) and will not try again by itself. A
    /// connector's record of having sent that version must not stand in for the index: see
    /// [`sent_stands`]. Default: none.
    fn gave_up(&self, _key: &DocKey) -> Option<String> {
        None
    }
    /// How many times the pipeline discarded writes it had accepted (a batch that failed to
    /// write is rolled back with every uncommitted write before it). When it moves, what a
    /// connector sent and took as done may be lost: [`SentLog`] forgets its records, so the
    /// index decides again. Default: never.
    fn rollbacks(&self) -> u64 {
        0
    }
    /// Whether `connector` owes a reconciliation from before this start: the pipeline rolled
    /// back writes it had accepted, and the daemon stopped before a reconciliation of the
    /// connector ended (its checkpoint may have been committed past what was lost). Asked by
    /// each [`SentLog`] when it starts, which also tells the pipeline that the connector
    /// reconciles after rollbacks. Default: never.
    fn reconciliation_owed(&self, _connector: &str) -> bool {
        false
    }
    /// Whether the pipeline refused to count `connector`'s last reconciliation as done (the
    /// model failed on some of what it sent, which is not retried): the connector reconciles
    /// once more. Asked by [`SentLog::rolled_back_since_reconciled`]; answers `true` once per
    /// refusal. Default: never.
    fn reconcile_again(&self, _connector: &str) -> bool {
        false
    }
}

/// How often a running connector checks whether the pipeline rolled back writes it had
/// accepted ([`SentLog::rolled_back_since_reconciled`]), to reconcile then.
pub const ROLLBACK_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether a connector's record `last` of what it sent for `key` still stands for "the newest
/// state", so that an unchanged document is not sent again: not when the pipeline gave up on
/// that version ([`IndexedState::gave_up`]); then the document is sent again at the next scan.
pub fn sent_stands(indexed: &dyn IndexedState, key: &DocKey, last: &Option<IndexedDoc>) -> bool {
    match last {
        Some(l) => indexed.gave_up(key).is_none_or(|v| v != l.version),
        None => true,
    }
}

/// Runtime status a connector reports, shown by the admin API.
#[derive(Debug, Clone, Default)]
pub struct ConnectorState {
    /// "starting", "crawling", "watching", "failed", "stopped".
    pub phase: String,
    /// Unix milliseconds of the last completed full scan. A crawling connector's checkpoint
    /// carries the same value under the key `last_full_scan_ms` once that scan is covered, so
    /// tools can tell a finished first crawl is committed.
    pub last_full_scan_ms: Option<i64>,
    /// The problems that stand now, each raised and cleared by its own kind (see [`Alarm`]).
    pub alarms: std::collections::BTreeMap<Alarm, String>,
    /// Paused by an admin: changes are not acted on until resumed.
    pub paused: bool,
    /// Jobs, most recent first (at most [`jobs::JOB_HISTORY`]).
    pub jobs: std::collections::VecDeque<jobs::JobRecord>,
    pub next_job_id: u64,
}

impl ConnectorState {
    /// Every standing alarm, most severe first, joined by "; "; `None` when none stands.
    pub fn last_error(&self) -> Option<String> {
        (!self.alarms.is_empty()).then(|| {
            self.alarms
                .values()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join("; ")
        })
    }
}

/// A kind of problem a connector reports in its status. Each kind is raised and cleared on its
/// own, so that one problem neither hides nor clears another (a watch that could not start
/// still shows while a sync is held back by deletion protection, and after it). Ordered by
/// severity, the order in which they are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Alarm {
    /// The connector stopped with an error.
    Stopped,
    /// The source could not be reached or the sync failed (nothing was deleted); cleared by
    /// the next sync that completes.
    Outage,
    /// Part of the source is not there (a share unmounted below a crawl root); nothing under
    /// it is withdrawn or deleted. Cleared when every part is walked again.
    Unmounted,
    /// A sync held deletions back; cleared by a sync that completes without holding any back.
    DeletionProtection,
    /// Principals the connector cannot map to Docent identities (unmapped SIDs).
    Unmapped,
    /// Change notifications are unavailable: only scheduled reconciliations find changes.
    Watch,
    /// The group database the connector reports memberships from could not be read: the
    /// last report stands (before any report, documents with deny entries are withheld).
    Memberships,
}

/// Shared handle to a connector's [`ConnectorState`].
#[derive(Debug, Clone, Default)]
pub struct StatusHandle(Arc<Mutex<ConnectorState>>);

impl StatusHandle {
    pub fn set_phase(&self, phase: &str) {
        self.lock().phase = phase.to_string();
    }

    /// Raises `kind` with `message` (replacing that kind's earlier message, no other).
    pub fn raise(&self, kind: Alarm, message: impl Into<String>) {
        self.lock().alarms.insert(kind, message.into());
    }

    /// The single error slot this API had before alarms: `Some` raises [`Alarm::Outage`] with
    /// the message, `None` clears it. Kept for connectors written against it.
    #[deprecated(
        note = "raise and clear alarms by kind: `raise(Alarm::Outage, why)`, `clear(Alarm::Outage)`"
    )]
    pub fn set_error(&self, error: Option<String>) {
        match error {
            Some(e) => self.raise(Alarm::Outage, e),
            None => self.clear(Alarm::Outage),
        }
    }

    /// Clears `kind`; the other alarms stand.
    pub fn clear(&self, kind: Alarm) {
        self.lock().alarms.remove(&kind);
    }

    /// Whether `kind` stands.
    pub fn raised(&self, kind: Alarm) -> bool {
        self.lock().alarms.contains_key(&kind)
    }

    /// `at_ms`: Unix milliseconds.
    pub fn full_scan_done(&self, at_ms: i64) {
        self.lock().last_full_scan_ms = Some(at_ms);
    }

    pub fn snapshot(&self) -> ConnectorState {
        self.lock().clone()
    }

    pub fn set_paused(&self, paused: bool) {
        self.lock().paused = paused;
    }

    /// An id for a job that will start later (the admin API returns it with "sync now").
    pub fn reserve_job_id(&self) -> u64 {
        let mut s = self.lock();
        s.next_job_id += 1;
        s.next_job_id
    }

    /// Starts a job (with `id`, or a fresh one) and returns its id.
    pub fn start_job(
        &self,
        id: Option<u64>,
        kind: &'static str,
        trigger: &'static str,
        now_ms: i64,
    ) -> u64 {
        let mut s = self.lock();
        let id = id.unwrap_or_else(|| {
            s.next_job_id += 1;
            s.next_job_id
        });
        s.jobs.push_front(jobs::JobRecord {
            id,
            kind,
            trigger,
            started_ms: now_ms,
            ended_ms: None,
            state: jobs::JobState::Running,
            counts: jobs::JobCounts::default(),
            failures: Vec::new(),
        });
        s.jobs.truncate(jobs::JOB_HISTORY);
        id
    }

    /// Updates a running job's counts (and failures) in place.
    pub fn update_job(&self, id: u64, f: impl FnOnce(&mut jobs::JobRecord)) {
        if let Some(j) = self.lock().jobs.iter_mut().find(|j| j.id == id) {
            f(j);
        }
    }

    pub fn finish_job(&self, id: u64, state: jobs::JobState, now_ms: i64) {
        self.update_job(id, |j| {
            j.state = state;
            j.ended_ms = Some(now_ms);
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ConnectorState> {
        // A panic while holding this lock leaves plain data behind; keep serving it.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Group memberships a source knows (a share's group database, a wiki's groups): `members` are
/// `user:<name>` or `group:<name>` principals of `group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMembership {
    pub group: String,
    pub members: Vec<Principal>,
}

/// Where connectors report group memberships; the daemon merges them into the identity store.
///
/// A connector whose spec [`registry::ConnectorSpec::reports_memberships`] reports the whole
/// group database each time, and only what it could read in full: a database it could not
/// read is not an empty one (an empty report would drop every membership, and with them the
/// deny entries that name a group).
pub trait MembershipSink: Send + Sync {
    /// Replaces everything `connector` reported before. An error: the report could not be
    /// applied (the connector keeps its memberships alarm raised).
    fn report(&self, connector: &str, groups: Vec<GroupMembership>) -> Result<(), String>;
}

/// A sink that drops reports (for tests and tools without an identity store).
pub struct NoMemberships;

impl MembershipSink for NoMemberships {
    fn report(&self, _connector: &str, _groups: Vec<GroupMembership>) -> Result<(), String> {
        Ok(())
    }
}

/// Everything a running connector gets from the daemon.
pub struct ConnectorContext {
    /// Commands from the admin API (sync now, pause, resume).
    pub commands: mpsc::Receiver<jobs::ConnectorCommand>,
    /// Bounded: `send` waits when the pipeline is behind.
    pub sink: mpsc::Sender<Change>,
    /// Group memberships the connector learns from its source.
    pub memberships: Arc<dyn MembershipSink>,
    pub indexed: Arc<dyn IndexedState>,
    /// The last committed checkpoint of this connector, if any.
    pub checkpoint: Option<Checkpoint>,
    pub shutdown: CancellationToken,
    pub status: StatusHandle,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("connector {connector}: {message}")]
    Failed { connector: String, message: String },
    #[error("connector {connector}: the pipeline is gone")]
    SinkClosed { connector: String },
}

/// A source plugin. `run` crawls, then watches until `ctx.shutdown` is cancelled.
pub trait Connector: Send + 'static {
    fn id(&self) -> &str;
    fn kind(&self) -> &'static str;
    fn run(
        self: Box<Self>,
        ctx: ConnectorContext,
    ) -> BoxFuture<'static, Result<(), ConnectorError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_key_round_trips_through_display() {
        let k = DocKey::new("share", "/srv/a:b.txt");
        assert_eq!(k.to_string(), "share:/srv/a:b.txt");
        assert_eq!(DocKey::parse(&k.to_string()), Some(k));
        assert_eq!(DocKey::parse("nocolon"), None);
        assert_eq!(DocKey::parse(":x"), None);
    }

    #[test]
    fn an_alarm_neither_hides_nor_clears_another() {
        let status = StatusHandle::default();
        assert_eq!(status.snapshot().last_error(), None);
        status.raise(Alarm::Watch, "watch unavailable: no inotify");
        status.raise(Alarm::DeletionProtection, "deletion protection: 9 of 10");
        status.raise(Alarm::Outage, "connection refused");
        assert_eq!(
            status.snapshot().last_error().as_deref(),
            Some("connection refused; deletion protection: 9 of 10; watch unavailable: no inotify"),
            "every alarm shows, most severe first"
        );
        status.raise(Alarm::Outage, "timed out");
        status.clear(Alarm::DeletionProtection);
        assert!(!status.raised(Alarm::DeletionProtection));
        assert!(status.raised(Alarm::Watch));
        assert_eq!(
            status.snapshot().last_error().as_deref(),
            Some("timed out; watch unavailable: no inotify")
        );
        status.clear(Alarm::Outage);
        status.clear(Alarm::Watch);
        assert_eq!(status.snapshot().last_error(), None);
    }
}
