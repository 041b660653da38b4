//! NFS connector: mounts one export over NFSv3 (through the portmapper, with AUTH_SYS), crawls it
//! with READDIRPLUS and polls it again every `reconcile_interval` (NFS has no change
//! notifications).
//!
//! Invariants:
//! - every upsert carries an ACL derived from the file's owner, group and mode bits exactly as
//!   the fs connector derives it (`docent_fs_connector::posix_acl`, names from the configured
//!   passwd/group files), narrowed by who may enter each directory from the export's root
//!   down to the file (`posix_dir_acl`), possibly changed by configured path rules; a file nobody may read is
//!   skipped with a reason, never indexed;
//! - where a file's or directory's POSIX access list (asked by NFSACL, see `nfsacl.rs`) says
//!   more than its mode bits, the list decides (`docent_fs_connector::list_acl`, as in the fs
//!   connector); a list that cannot be used or asked skips the file (and what lies below a
//!   directory) unless a `replace` rule states its access; a server without NFSACL fails the
//!   sync (its lists cannot be seen), unless `require_nfsacl = false` says to trust its mode
//!   bits;
//! - the version is (file id, size, mtime): a file whose version and ACL match what was indexed
//!   (or last sent) is never read; the recorded version also carries the file system and change
//!   time at which the server answered that the file has no list beyond its mode bits (a
//!   settled answer), so that a restarted connector does not ask again what still holds;
//! - an outage is not a deletion: an unreachable server, a failed mount, a broken connection, a
//!   timeout, or a listing that comes back empty while documents are indexed ends the sync as
//!   failed (phase "failed", the reason in `last_error`) without deleting anything; the sync is
//!   retried with exponential backoff and the next one picks up where the index stands;
//! - a sub-directory that cannot be listed keeps its indexed documents (its files are not
//!   known to be gone), except one that refuses the crawler (NFS3ERR_ACCES, NFS3ERR_PERM):
//!   what is indexed below it is withdrawn (skipped with the reason, its ACL can no longer be
//!   checked) until it can be listed again; deletions go through deletion protection like the
//!   fs connector's;
//! - a directory that was another file system than the one listing it when last walked (a
//!   share mounted there on the server, by fsid; kept in the checkpoint) and is not one now is
//!   an unmounted share: nothing under it is withdrawn or deleted, the rest is reconciled, and
//!   the sync fails with the reason (alarm "unmounted") until it is mounted again or a sync
//!   with `force_deletions` walks what is there.
//!
//! ```toml
//! [[connectors]]
//! type = "nfs"
//! id = "nas"
//! server = "nas.example.internal"    # host name or IP; NFSv3 over TCP
//! export = "/srv/share"              # as the server's mount service exports it
//! # sub_path = "teams"               # crawl only this directory (ids stay export-relative)
//! # port = 2049                      # NFS port; default: ask the portmapper (portmapper_port 111)
//! # mount_port = 20048               # mount service port; default: ask the portmapper
//! # include = ["**/*.md"]            # globs on the export-relative path (default: everything)
//! # exclude = ["**/.*", "**/*~", "**/.git/**"]
//! # passwd_file = "/etc/passwd"      # uid/gid -> names; must describe the *server's* ids
//! # group_file = "/etc/group"
//! # uid = 0                          # AUTH_SYS identity (needs no_root_squash to read all)
//! # gid = 0
//! # gids = []                        # supplementary groups of that identity (at most 16)
//! # privileged_port = true           # from a port below 1024; default: when running as root
//! # report_memberships = false       # add group_file's memberships to identities (same people)
//! # reconcile_interval_secs = 300    # polling interval
//! # retry_max_secs = 300             # backoff cap after a failed sync
//! # rpc_timeout_secs = 30
//! # require_nfsacl = true            # false: trust the mode bits of a server without NFSACL
//! # deletion_protection_percent = 15
//! # deletion_protection_min_docs = 5
//! # [[connectors.acl_rules]]         # as in the fs connector, prefixes relative to the export
//! # path_prefix = "hr"
//! # allow = ["group:hr"]
//! ```

mod client;
mod config;
mod nfsacl;

pub use client::NfsError;
pub use config::Factory;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use docent_connector_api::jobs::{ConnectorCommand, JobFailure, JobRecord, JobState};
use docent_connector_api::paths::{GlobError, PathFilter};
use docent_connector_api::{
    Acl, Alarm, Change, Connector, ConnectorContext, ConnectorError, DocKey, IndexedDoc,
    IndexedState, SentLog, SourceDocument, StatusHandle,
};
use docent_fs_connector::{
    ACL_LIST, AclRule, ListEntry, PosixNames, acl_replaced, apply_acl_rules, intersect, list_acl,
    list_dir_acl, posix_acl, posix_dir_acl,
};
use futures::FutureExt;
use futures::future::BoxFuture;
use nfs3_client::nfs3_types::nfs3::{fattr3, ftype3, nfs_fh3, nfsstat3};
use tokio::sync::mpsc;

use client::{AclAnswer, Session, join};

/// Validated configuration of one NFS connector.
#[derive(Debug, Clone)]
pub struct NfsConfig {
    pub id: String,
    /// Host name or IP address of the NFS server.
    pub server: String,
    /// The exported path, as the server's mount service knows it.
    pub export: String,
    /// Only this directory of the export is crawled (no leading or trailing `/`). Native ids stay
    /// relative to the export.
    pub sub_path: Option<String>,
    /// NFS and mount service ports; `None` asks the portmapper.
    pub port: Option<u16>,
    pub mount_port: Option<u16>,
    pub portmapper_port: u16,
    /// Globs matched against the path relative to the export; empty include means everything.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// Path-prefix rules (prefixes relative to the export), as in the fs connector.
    pub acl_rules: Vec<AclRule>,
    /// uid/gid → names for the ACL principals; they must describe the server's ids.
    pub passwd_file: PathBuf,
    pub group_file: PathBuf,
    /// At start and after each successful sync, report the group database's memberships.
    pub report_memberships: bool,
    pub max_file_size: u64,
    /// How often the export is polled.
    pub reconcile_interval: Duration,
    /// The longest wait between retries after a failed sync (backoff starts at 1 s and doubles).
    pub retry_max: Duration,
    /// Deadline of each RPC (and of the mount).
    pub rpc_timeout: Duration,
    pub deletion_protection_percent: u32,
    pub deletion_protection_min_docs: u64,
    /// AUTH_SYS identity of the crawler. The default uid 0 / gid 0 lets the crawler read every
    /// file of an export with `no_root_squash` (it must, to index non-public files with their
    /// ACLs); where the server squashes root, it reads as the anonymous user and files it cannot
    /// read are skipped with a reason. The export should be read-only for the crawler's host.
    pub uid: u32,
    pub gid: u32,
    pub gids: Vec<u32>,
    /// Connect from a port below 1024: `Some(true)` always, `Some(false)` never, `None` when the
    /// process may (falls back to an ordinary port when it is not root).
    pub privileged_port: Option<bool>,
    /// Refuse to index from a server that does not offer the NFSACL protocol (it could keep
    /// POSIX access lists that the mode bits do not show); the default. Off: such a server's
    /// mode bits are trusted, with a warning (for servers known to keep no lists).
    pub require_nfsacl: bool,
}

/// The connector, built from a validated config.
pub struct NfsConnector {
    cfg: Arc<NfsConfig>,
    filter: PathFilter,
}

impl NfsConnector {
    pub fn new(cfg: NfsConfig) -> Result<Self, GlobError> {
        Ok(Self {
            filter: PathFilter::new(&cfg.include, &cfg.exclude)?,
            cfg: Arc::new(cfg),
        })
    }
}

impl Connector for NfsConnector {
    fn id(&self) -> &str {
        &self.cfg.id
    }

    fn kind(&self) -> &'static str {
        "nfs"
    }

    fn run(
        self: Box<Self>,
        ctx: ConnectorContext,
    ) -> BoxFuture<'static, Result<(), ConnectorError>> {
        async move { run(*self, ctx).await }.boxed()
    }
}

/// The first retry waits this long; each failure doubles it up to `retry_max`.
const FIRST_RETRY: Duration = Duration::from_secs(1);

async fn run(conn: NfsConnector, ctx: ConnectorContext) -> Result<(), ConnectorError> {
    let ConnectorContext {
        mut commands,
        sink,
        memberships,
        indexed,
        checkpoint,
        shutdown,
        status,
    } = ctx;
    status.set_phase("starting");
    if let Some(ms) = checkpoint
        .as_ref()
        .and_then(|c| c.get("last_full_scan_ms"))
        .and_then(serde_json::Value::as_i64)
    {
        status.full_scan_done(ms);
    }
    let cfg = conn.cfg.clone();
    let mut syncer = Syncer {
        cfg: conn.cfg,
        filter: conn.filter,
        status: status.clone(),
        sink,
        sent: SentLog::new(cfg.id.clone(), indexed.clone()),
        indexed,
        job: 0,
        full: false,
        lists: HashMap::new(),
        lists_before: HashMap::new(),
        warned_nfsacl: false,
        names: None,
        top_dir: checkpoint
            .as_ref()
            .and_then(|c| c.get(TOP_DIR))
            .and_then(|v| serde_json::from_value(v.clone()).ok()),
        mounted: checkpoint
            .as_ref()
            .and_then(|c| c.get(MOUNTED_DIRS))
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_str)
            .map(str::to_string)
            .collect(),
    };

    // The group database is local: report it before the first sync, so that an unreachable
    // server after a restart does not leave the indexed documents' group denies unresolved.
    let report = docent_fs_connector::membership_reporter(
        &cfg.id,
        &cfg.passwd_file,
        &cfg.group_file,
        cfg.report_memberships,
        memberships.clone(),
        &status,
    );
    report();

    let mut next = tokio::time::Instant::now();
    let mut trigger = "start";
    let mut backoff = FIRST_RETRY.min(cfg.retry_max);
    let mut paused = false;
    let mut commands_open = true;
    let mut rollback_tick = tokio::time::interval(docent_connector_api::ROLLBACK_CHECK);
    loop {
        let due = async {
            if paused {
                std::future::pending::<()>().await
            } else {
                tokio::time::sleep_until(next).await
            }
        };
        let (job_id, why, force, full) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            cmd = commands.recv(), if commands_open => match cmd {
                None => {
                    commands_open = false;
                    continue;
                }
                Some(ConnectorCommand::SyncNow { job_id, force_deletions, full }) => {
                    (Some(job_id), "admin", force_deletions, full)
                }
                Some(ConnectorCommand::Pause) => {
                    paused = true;
                    status.set_paused(true);
                    status.set_phase("paused");
                    continue;
                }
                Some(ConnectorCommand::Resume) => {
                    paused = false;
                    status.set_paused(false);
                    // Catch up on whatever changed while paused.
                    (None, "resume", false, false)
                }
            },
            _ = due => (None, trigger, false, false),
            // Writes the pipeline rolled back are sent again by a reconciliation, now rather
            // than at the next scheduled one.
            _ = rollback_tick.tick(), if !paused => {
                if !syncer.sent.rolled_back_since_reconciled() {
                    continue;
                }
                (None, "rollback", false, false)
            }
        };
        syncer.full = full;
        let rollbacks = syncer.sent.rollbacks();
        let outcome = tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                syncer.cancel_job();
                break;
            }
            r = syncer.sync(job_id, why, force) => r?,
        };
        syncer.full = false;
        if outcome {
            let paid = syncer.sent.reconciled(rollbacks);
            tokio::select! {
                biased;
                // Not sent: the reconciliation stays owed, and is made again.
                _ = shutdown.cancelled() => break,
                r = syncer.send(paid) => if let Err(SyncError::Sink(e)) = r {
                    return Err(e);
                },
            }
            report();
            backoff = FIRST_RETRY.min(cfg.retry_max);
            next = tokio::time::Instant::now() + cfg.reconcile_interval;
        } else {
            tracing::info!(connector = %cfg.id, retry_in_ms = backoff.as_millis() as u64, "nfs sync failed, retrying");
            next = tokio::time::Instant::now() + backoff;
            backoff = (backoff * 2).min(cfg.retry_max);
        }
        trigger = "schedule";
    }
    status.set_phase("stopped");
    Ok(())
}

fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Why a sync stopped early.
enum SyncError {
    /// The server could not be used: nothing is deleted, the sync is retried.
    Outage(String),
    /// The pipeline is gone: the connector stops.
    Sink(ConnectorError),
}

impl From<NfsError> for SyncError {
    fn from(e: NfsError) -> Self {
        Self::Outage(e.to_string())
    }
}

enum Reconciled {
    Done,
    DeletionsBlocked(String),
    /// A share mounted below the top went away: the rest was reconciled (deletions included,
    /// unless `held` by deletion protection), nothing under it was touched.
    Unmounted {
        why: String,
        held: bool,
    },
}

/// One file found by the walk.
struct Found {
    rel: String,
    fh: nfs_fh3,
    attr: fattr3,
    /// Who may enter every directory from the export's root to the file (search
    /// permission): the file's ACL is narrowed by it.
    dirs: Acl,
    /// Why the directories above do not tell who may enter them (the first one whose POSIX
    /// access list cannot be used or asked): the file is skipped unless a `replace` rule
    /// states its access.
    above: Option<String>,
}

/// What an object's POSIX access list says, as the server said at the object's `ctime` (a
/// `setfacl` changes it), by (fsid, fileid).
type SeenLists = HashMap<(u64, u64), Seen>;

#[derive(Clone)]
struct Seen {
    ctime: (u32, u32),
    listed: Listed,
    /// Kept past this reconciliation: the change time was not recent (see [`settled`]).
    keep: bool,
}

/// Why an object whose list came with other attributes than its listing is skipped this sync.
const CHANGED_WHILE_ASKED: &str =
    "its permissions changed while they were read; it is read again by the next sync";

/// Who may read (or enter) an object, as far as its access list tells.
#[derive(Clone, Debug)]
enum Listed {
    /// The mode bits tell it all: no list beyond them (or no NFSACL, trusted by config).
    Mode,
    /// A list that says more than the mode bits: it decides.
    List(Arc<[ListEntry]>),
    /// A list that cannot be used, or cannot be asked: the object (and what lies below a
    /// directory) is skipped unless a `replace` rule states its access (why).
    Unusable(String),
}

impl Listed {
    /// What the list the server sent for the object listed with attributes `a` says. A list
    /// sent with other mode bits, owner or group than the listing's (a `chmod` or `chown` in
    /// between) cannot be put together with the listed ones, and the object waits for the next
    /// sync, which lists it again. (Not the change time: every write moves it, a directory's
    /// with every file made or removed in it.)
    fn from_answer(list: &nfsacl::AccessList, a: &fattr3) -> Self {
        let against = list.against_mode(a.mode);
        if list
            .owner_mode
            .is_some_and(|m| m != (a.mode & 0o7777, a.uid, a.gid))
        {
            Self::Unusable(CHANGED_WHILE_ASKED.to_string())
        } else if !list.consistent {
            Self::Unusable(ACL_LIST.to_string())
        } else if against == nfsacl::AgainstMode::Looser {
            Self::Unusable(WIDER_THAN_MODE.to_string())
        } else if list.extends_mode() || against == nfsacl::AgainstMode::Stricter {
            Self::List(list.entries.as_slice().into())
        } else {
            Self::Mode
        }
    }
}

struct Syncer {
    cfg: Arc<NfsConfig>,
    filter: PathFilter,
    status: StatusHandle,
    sink: mpsc::Sender<Change>,
    indexed: Arc<dyn IndexedState>,
    /// What was last sent per native id, until the index shows it ([`SentLog`]).
    sent: SentLog,
    /// The running job.
    job: u64,
    /// A full sync: read and re-parse every file, changed or not.
    full: bool,
    /// Access lists seen by this reconciliation, and by the previous one (objects not seen
    /// again are forgotten): an unchanged object is not asked again.
    lists: SeenLists,
    lists_before: SeenLists,
    /// The server's lack of NFSACL was logged.
    warned_nfsacl: bool,
    /// Directories (relative paths) that were on another file system than the directory
    /// listing them when last walked (a share mounted there on the server), from the
    /// checkpoint on: one that no longer is was unmounted, and its documents are kept.
    mounted: BTreeSet<String>,
    /// The crawled top directory as last walked (from the checkpoint on).
    top_dir: Option<TopDir>,
    /// The passwd and group names last read: kept while the files cannot be read (or are
    /// empty), as the fs and smb connectors keep theirs.
    names: Option<Arc<PosixNames>>,
}

/// The checkpoint's list of [`Syncer::mounted`].
const MOUNTED_DIRS: &str = "mounted_dirs";

/// The checkpoint's [`Syncer::top_dir`].
const TOP_DIR: &str = "top_dir";

/// Which directory the crawled top (the export's root, or `sub_path`) was: a file system the
/// server mounted at the export path and no longer does shows the directory underneath, with
/// another file id (and, without a fixed `fsid=` export option, another file system id).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct TopDir {
    #[serde(default)]
    server: String,
    #[serde(default)]
    export: String,
    sub_path: Option<String>,
    fileid: u64,
}

impl TopDir {
    /// Why the walk may not go on: the top is another directory (another file id) than at the
    /// last walk of the same server, export and `sub_path` (a review: only mounts below the
    /// top were tracked, so the stray files of the directory underneath read as everything
    /// else deleted). Not the file system id alone: a server that restarts or fails over
    /// without a fixed `fsid=` reports a new one for the same directory (a second review).
    fn replaced_by(&self, now: &TopDir) -> bool {
        // (Empty: recorded before the server and export were.)
        let same = |was: &str, is: &str| was.is_empty() || was == is;
        same(&self.server, &now.server)
            && same(&self.export, &now.export)
            && self.sub_path == now.sub_path
            && self.fileid != now.fileid
    }
}

impl Syncer {
    /// One reconciliation job. `Ok(false)`: it failed on an outage (recorded in the status) and
    /// should be retried.
    async fn sync(
        &mut self,
        job_id: Option<u64>,
        trigger: &'static str,
        force_deletions: bool,
    ) -> Result<bool, ConnectorError> {
        self.status.set_phase("crawling");
        self.job = self
            .status
            .start_job(job_id, "reconcile", trigger, unix_millis());
        let outcome = self.reconcile(force_deletions).await;
        let now_ms = unix_millis();
        // A share below the export not walked: not a full scan.
        let whole = !matches!(outcome, Ok(Reconciled::Unmounted { .. }));
        let state = match outcome {
            Err(SyncError::Sink(e)) => {
                self.status
                    .finish_job(self.job, JobState::Failed(e.to_string()), now_ms);
                return Err(e);
            }
            Err(SyncError::Outage(why)) => {
                tracing::warn!(connector = %self.cfg.id, error = %docent_connector_api::log_safe(&why), "nfs sync failed; nothing was deleted");
                self.status.raise(Alarm::Outage, why.clone());
                self.status
                    .finish_job(self.job, JobState::Failed(why), now_ms);
                self.status.set_phase("failed");
                return Ok(false);
            }
            Ok(Reconciled::Done) => {
                // The server answered and the sync completed: earlier alarms are over.
                self.status.clear(Alarm::Outage);
                self.status.clear(Alarm::DeletionProtection);
                JobState::Succeeded
            }
            Ok(Reconciled::DeletionsBlocked(why)) => {
                tracing::warn!(connector = %self.cfg.id, "{why}");
                self.status.clear(Alarm::Outage);
                self.status.raise(Alarm::DeletionProtection, why.clone());
                JobState::Blocked(why)
            }
            Ok(Reconciled::Unmounted { why, held }) => {
                // The job fails for it, but the rest of the export was reconciled: the sync
                // counts as done (memberships reported, rollbacks answered, the next one on
                // schedule), since the share may stay away for long.
                tracing::warn!(connector = %self.cfg.id, error = %docent_connector_api::log_safe(&why), "nfs sync: a share below the export is not mounted; nothing under it was deleted");
                self.status.clear(Alarm::Outage);
                if !held {
                    self.status.clear(Alarm::DeletionProtection);
                }
                JobState::Failed(why)
            }
        };
        self.status.finish_job(self.job, state, now_ms);
        if whole {
            self.status.full_scan_done(now_ms);
        }
        self.status.set_phase(if self.status.snapshot().paused {
            "paused"
        } else {
            "watching"
        });
        let last_full_scan_ms = self.status.snapshot().last_full_scan_ms;
        self.send_checkpoint(last_full_scan_ms).await?;
        Ok(true)
    }

    /// The checkpoint: when the last full scan completed and [`Syncer::mounted`].
    async fn send_checkpoint(&self, full_scan_ms: Option<i64>) -> Result<(), ConnectorError> {
        self.send(Change::Checkpoint {
            connector: self.cfg.id.clone(),
            checkpoint: serde_json::json!({
                "last_full_scan_ms": full_scan_ms,
                MOUNTED_DIRS: self.mounted,
                TOP_DIR: self.top_dir,
            }),
        })
        .await
        .map_err(|e| match e {
            SyncError::Sink(e) => e,
            SyncError::Outage(m) => ConnectorError::Failed {
                connector: self.cfg.id.clone(),
                message: m,
            },
        })
    }

    /// Marks the running job cancelled (shutdown during a sync).
    fn cancel_job(&self) {
        if self
            .status
            .snapshot()
            .jobs
            .iter()
            .any(|j| j.id == self.job && j.state == JobState::Running)
        {
            self.status
                .finish_job(self.job, JobState::Cancelled, unix_millis());
        }
    }

    async fn send(&self, change: Change) -> Result<(), SyncError> {
        self.sink.send(change).await.map_err(|_| {
            SyncError::Sink(ConnectorError::SinkClosed {
                connector: self.cfg.id.clone(),
            })
        })
    }

    fn count(&self, f: impl FnOnce(&mut JobRecord)) {
        self.status.update_job(self.job, f);
    }

    fn count_failure(&self, id: &str, reason: &str) {
        self.count(|j| {
            j.counts.failed += 1;
            if j.failures.len() < docent_connector_api::jobs::JOB_FAILURES {
                j.failures.push(JobFailure {
                    id: id.to_string(),
                    reason: reason.to_string(),
                });
            }
        });
    }

    fn selected(&self, rel: &str) -> bool {
        self.filter.selects(rel)
    }

    /// Walks the export, upserts what changed, and deletes what is gone unless deletion
    /// protection (or an outage) stops it.
    async fn reconcile(&mut self, force_deletions: bool) -> Result<Reconciled, SyncError> {
        // Read again each pass (a uid given to someone else, a group renamed); a file that
        // cannot be read keeps the last names, and without any an ACL cannot be told: an
        // outage, not a relabelling of the whole export.
        if let Some(n) = PosixNames::try_load(&self.cfg.passwd_file, &self.cfg.group_file) {
            self.names = Some(Arc::new(n));
        }
        let Some(names) = self.names.clone() else {
            return Err(SyncError::Outage(format!(
                "cannot read the names of users and groups ({} and {}): unreadable or empty",
                self.cfg.passwd_file.display(),
                self.cfg.group_file.display()
            )));
        };
        let mut session = Session::connect(&self.cfg).await?;
        let mut top = session.root.clone();
        let mut top_rel = String::new();
        // Shares mounted below the top that went away (see [`Syncer::mounted`]), and the
        // mount points met.
        let mut vanished: Vec<String> = Vec::new();
        let mut mounts_met: BTreeSet<String> = BTreeSet::new();
        // Who may enter the export's root directory and each one down to the crawled top.
        let root_attr = match session.getattr(&top, "").await? {
            Ok(a) => a,
            Err(stat) => {
                return Err(SyncError::Outage(format!(
                    "cannot tell who may enter the root of {}:{}: {stat}",
                    self.cfg.server, self.cfg.export
                )));
            }
        };
        self.lists_before = std::mem::take(&mut self.lists)
            .into_iter()
            .filter(|(_, seen)| seen.keep)
            .collect();
        let (mut reach, mut above) = self
            .enter(&mut session, &names, &top, &root_attr, "")
            .await?;
        let mut top_fsid = root_attr.fsid;
        let mut top_fileid = root_attr.fileid;
        // A directory on the way to the crawled top that refuses the crawler: (the top, why).
        // What is indexed below is withdrawn as below a top that refuses its listing (a
        // review: it was an outage, so the old, wider ACLs were served for as long as it
        // stayed closed).
        let mut closed: Option<(String, String)> = None;
        if let Some(sub) = self.cfg.sub_path.clone() {
            for part in sub.split('/') {
                let parent = top_rel.clone();
                top_rel = join(&top_rel, part);
                let (fh, attr) = match session.lookup(&top, part.as_bytes(), &top_rel).await? {
                    Ok(found) => found,
                    Err(stat @ (nfsstat3::NFS3ERR_ACCES | nfsstat3::NFS3ERR_PERM)) => {
                        let whole = sub.split('/').fold(String::new(), |at, p| join(&at, p));
                        let at = if parent.is_empty() {
                            "the export's root"
                        } else {
                            parent.as_str()
                        };
                        closed = Some((whole, format!("{at:?} cannot be entered: {stat}")));
                        break;
                    }
                    Err(stat) => {
                        return Err(SyncError::Outage(format!(
                            "sub_path {top_rel:?} cannot be opened on {}:{}: {stat}",
                            self.cfg.server, self.cfg.export
                        )));
                    }
                };
                let attr = match attr {
                    Some(a) => a,
                    None => session.getattr(&fh, &top_rel).await?.map_err(|stat| {
                        SyncError::Outage(format!(
                            "cannot tell who may enter {top_rel:?} on {}:{}: {stat}",
                            self.cfg.server, self.cfg.export
                        ))
                    })?,
                };
                let (enter, why) = self
                    .enter(&mut session, &names, &fh, &attr, &top_rel)
                    .await?;
                reach = intersect(reach, enter);
                above = above.or(why);
                top = fh;
                top_fsid = attr.fsid;
                top_fileid = attr.fileid;
            }
        }
        if closed.is_none() {
            let now = TopDir {
                server: self.cfg.server.clone(),
                export: self.cfg.export.clone(),
                sub_path: self.cfg.sub_path.clone(),
                fileid: top_fileid,
            };
            if let Some(was) = &self.top_dir
                && was.replaced_by(&now)
                && !force_deletions
            {
                let why = format!(
                    "unmounted file system? the top of {}:{} ({}) is another directory than \
                     when last walked: nothing was withdrawn or deleted; a sync with \
                     force_deletions walks it as it is",
                    self.cfg.server,
                    self.cfg.export,
                    self.cfg.sub_path.as_deref().unwrap_or("the export's root")
                );
                self.status.raise(Alarm::Unmounted, why.clone());
                return Err(SyncError::Outage(why));
            }
            self.top_dir = Some(now);
        }

        let mut seen = BTreeSet::new();
        // Directories that could not be listed: what is indexed under them is not deleted.
        let mut unlisted: Vec<String> = Vec::new();
        // Directories the crawler is refused: what is indexed under them is withdrawn.
        let mut denied: Vec<(String, String)> = Vec::new();
        // Each directory below the top narrows further who may reach what it holds.
        let mut dirs = Vec::new();
        match closed {
            Some((whole, why)) => {
                let reason = format!("directory cannot be listed: {why}");
                self.count_failure(&whole, &reason);
                denied.push((whole.clone(), reason));
                unlisted.push(whole);
            }
            None => dirs.push((top, top_rel.clone(), reach, above, top_fsid)),
        }
        let mut visited_dirs = BTreeSet::new();
        while let Some((dir, rel_dir, reach, above, fsid)) = dirs.pop() {
            let entries = match session.list(&dir, &rel_dir).await? {
                Ok(listing) => {
                    // What is indexed at or under an entry that could not be looked up stays.
                    for (name, stat) in listing.failed {
                        let rel = join(&rel_dir, &String::from_utf8_lossy(&name));
                        self.count_failure(&rel, &format!("cannot be looked up: {stat}"));
                        unlisted.push(rel);
                    }
                    // Refused to the crawler in a directory it may search: what is indexed at
                    // or under that entry is withdrawn, as under a directory it may not list.
                    for (name, stat) in listing.refused {
                        let rel = join(&rel_dir, &String::from_utf8_lossy(&name));
                        let reason = format!("cannot be looked up: {stat}");
                        self.count_failure(&rel, &reason);
                        denied.push((rel.clone(), reason));
                        unlisted.push(rel);
                    }
                    listing.entries
                }
                // The top refused to the crawler (an admin closed it) is withdrawn like a
                // directory below it (next arm); any other error there is an outage.
                Err(stat)
                    if rel_dir == top_rel
                        && !matches!(stat, nfsstat3::NFS3ERR_ACCES | nfsstat3::NFS3ERR_PERM) =>
                {
                    return Err(SyncError::Outage(format!(
                        "cannot list {:?} of {}:{}: {stat}",
                        rel_dir, self.cfg.server, self.cfg.export
                    )));
                }
                Err(stat) => {
                    let reason = format!("directory cannot be listed: {stat}");
                    self.count_failure(&rel_dir, &reason);
                    if matches!(stat, nfsstat3::NFS3ERR_ACCES | nfsstat3::NFS3ERR_PERM) {
                        denied.push((rel_dir.clone(), reason));
                    }
                    unlisted.push(rel_dir);
                    continue;
                }
            };
            // The lists of what this directory holds, asked together (a file's own answer
            // recorded with its indexed version is not asked again, as after a restart).
            if above.is_none() {
                for e in &entries {
                    // Only where the list would be asked: an index lookup per file otherwise.
                    if e.attr.type_ == ftype3::NF3REG
                        && list_matters(&e.attr)
                        && let Ok(name) = std::str::from_utf8(&e.name)
                    {
                        self.recall(&join(&rel_dir, name), &e.attr);
                    }
                }
                let objs: Vec<_> = entries
                    .iter()
                    .filter_map(|e| {
                        let rel = join(&rel_dir, std::str::from_utf8(&e.name).ok()?);
                        let ask = match e.attr.type_ {
                            ftype3::NF3DIR => !self.filter.excludes(&rel),
                            ftype3::NF3REG => {
                                self.selected(&rel)
                                    && !acl_replaced(&self.cfg.acl_rules, Path::new(&rel))
                            }
                            _ => false,
                        };
                        ask.then_some((&e.fh, &e.attr, rel))
                    })
                    .collect();
                self.prefetch_lists(&mut session, &objs).await?;
            }
            let mut files = Vec::new();
            for e in entries {
                let Ok(name) = String::from_utf8(e.name) else {
                    self.count_failure(&rel_dir, "a file name is not UTF-8; it was left out");
                    continue;
                };
                let rel = join(&rel_dir, &name);
                match e.attr.type_ {
                    ftype3::NF3DIR => {
                        if !self.filter.excludes(&rel)
                            && visited_dirs.insert((e.attr.fsid, e.attr.fileid))
                        {
                            if e.attr.fsid != fsid {
                                mounts_met.insert(rel.clone());
                            } else if self.mounted.contains(&rel) && !force_deletions {
                                // The directory left where a share was mounted (empty, or
                                // holding stale files) says nothing of the share's files.
                                let why = format!(
                                    "unmounted share? {rel:?} on {}:{} was another file system \
                                     when last walked and is not one now: nothing under it was \
                                     withdrawn or deleted; a sync with force_deletions walks it \
                                     as it is",
                                    self.cfg.server, self.cfg.export
                                );
                                self.count_failure(&rel, &why);
                                vanished.push(why);
                                unlisted.push(rel);
                                continue;
                            }
                            // Below a directory whose list cannot be used, nothing is asked:
                            // its files are skipped (unless a rule states their access).
                            let (enter, above) = match &above {
                                Some(why) => (
                                    posix_dir_acl(&names, e.attr.uid, e.attr.gid, e.attr.mode),
                                    Some(why.clone()),
                                ),
                                None => {
                                    self.enter(&mut session, &names, &e.fh, &e.attr, &rel)
                                        .await?
                                }
                            };
                            dirs.push((
                                e.fh,
                                rel,
                                intersect(reach.clone(), enter),
                                above,
                                e.attr.fsid,
                            ));
                        }
                    }
                    // Symbolic links are not followed (as in the fs connector's default).
                    ftype3::NF3LNK => {}
                    _ if !self.selected(&rel) => {}
                    _ => files.push(Found {
                        rel,
                        fh: e.fh,
                        attr: e.attr,
                        dirs: reach.clone(),
                        above: above.clone(),
                    }),
                }
            }
            files.sort_by(|a, b| a.rel.cmp(&b.rel));
            for f in files {
                seen.insert(f.rel.clone());
                self.visit(&mut session, &names, f).await?;
            }
        }

        let indexed = self.indexed.native_ids(&self.cfg.id);
        let known = self.sent.known_ids();
        let in_scope = |id: &str| match &self.cfg.sub_path {
            Some(s) => id.starts_with(&format!("{s}/")),
            None => true,
        };
        // A recorded mount point the walk did not meet although nothing excludes it (its
        // directory is gone) is an outage like one met as the same file system: what it held
        // is kept until a forced sync (session 34's review: it was deleted).
        if !force_deletions {
            let missing: Vec<String> = self
                .mounted
                .iter()
                .filter(|m| {
                    in_scope(m)
                        && !mounts_met.contains(*m)
                        && !unlisted
                            .iter()
                            .any(|d| d.is_empty() || *d == **m || m.starts_with(&format!("{d}/")))
                        && !std::iter::successors(Some(m.as_str()), |p| {
                            p.rsplit_once('/').map(|(parent, _)| parent)
                        })
                        .any(|p| self.filter.excludes(p))
                })
                .cloned()
                .collect();
            for m in missing {
                let why = format!(
                    "unmounted share? {m:?} on {}:{} was another file system when last walked \
                     and is not there now: nothing under it was withdrawn or deleted; a sync \
                     with force_deletions accepts it",
                    self.cfg.server, self.cfg.export
                );
                self.count_failure(&m, &why);
                vanished.push(why);
                unlisted.push(m);
            }
        }
        // (An entry that could not be looked up is in `unlisted` itself: a file's id is its
        // path.)
        let under_unlisted = |id: &str| {
            unlisted
                .iter()
                .any(|d| d.is_empty() || id == d || id.starts_with(&format!("{d}/")))
        };
        // The walk is complete: mount points it could have met and did not are gone (or no
        // longer mount points, with force_deletions); vanished ones lie under `unlisted`.
        self.mounted
            .retain(|m| !in_scope(m) || under_unlisted(m) || unlisted.iter().any(|d| d == m));
        self.mounted.extend(mounts_met);
        let vanished = (!vanished.is_empty()).then(|| vanished.join("; "));
        match &vanished {
            Some(why) => self.status.raise(Alarm::Unmounted, why.clone()),
            None => self.status.clear(Alarm::Unmounted),
        }
        // Gone: not seen by a complete walk, or outside `sub_path` altogether (a narrowed
        // `sub_path` leaves documents no walk reaches any more, which would otherwise stay
        // searchable under ACLs nothing checks again). Deletion protection applies to both.
        let gone: Vec<String> = known
            .iter()
            .filter(|id| !in_scope(id) || (!seen.contains(*id) && !under_unlisted(id)))
            .cloned()
            .collect();
        if seen.is_empty() && !gone.is_empty() {
            return Err(SyncError::Outage(format!(
                "the export {}:{} listed no files while {} documents are indexed; nothing was deleted (an empty or unmounted export?)",
                self.cfg.server,
                self.cfg.export,
                gone.len()
            )));
        }
        // The crawler may no longer enter these directories: what is indexed below them was
        // read with an ACL that can no longer be checked (a directory closed to the crawler is
        // usually closed to others too), so it stops being served until the directory can be
        // listed again. Not a deletion: nothing is known to be gone.
        for id in &known {
            if let Some((dir, why)) = denied.iter().find(|(d, _)| {
                in_scope(id) && (d.is_empty() || id == d || id.starts_with(&format!("{d}/")))
            }) {
                self.sent.remember(id, None);
                self.count(|j| j.counts.failed += 1);
                let reason = format!("withdrawn: the crawler may not list {dir:?} ({why})");
                self.send(Change::Skipped {
                    key: DocKey::new(&self.cfg.id, id.as_str()),
                    reason,
                })
                .await?;
            }
        }
        let (n, total) = (gone.len() as u64, indexed.len() as u64);
        if !force_deletions
            && let Some(why) = docent_connector_api::jobs::deletion_protection(
                &self.cfg.id,
                n,
                total,
                self.cfg.deletion_protection_percent,
                self.cfg.deletion_protection_min_docs,
            )
        {
            // With an unmounted share too, the job fails for it, and the hold says that forcing
            // it would also walk the unmounted share as it is.
            return Ok(match vanished {
                Some(unmounted) => {
                    let why = format!(
                        "{why} (not counted: a forced sync also walks the unmounted share as it \
                         is, deleting what is indexed under it)"
                    );
                    self.status.raise(Alarm::DeletionProtection, why.clone());
                    Reconciled::Unmounted {
                        why: format!("{unmounted}; {why}"),
                        held: true,
                    }
                }
                None => Reconciled::DeletionsBlocked(why),
            });
        }
        for id in gone {
            self.sent.remember(&id, None);
            self.send(Change::Delete(DocKey::new(&self.cfg.id, id)))
                .await?;
            self.count(|j| j.counts.deleted += 1);
        }
        Ok(match vanished {
            Some(why) => Reconciled::Unmounted { why, held: false },
            None => Reconciled::Done,
        })
    }

    /// The newest state of a file as far as this connector knows (see [`SentLog`]).
    fn last_known(&self, key: &DocKey) -> Option<IndexedDoc> {
        self.sent.last_known(key)
    }

    /// What the object's POSIX access list says ([`Listed`]). Asked again only when the
    /// object's `ctime` changed (and is not recent). A server without NFSACL fails the sync
    /// unless `require_nfsacl` is off (then the mode bits are trusted, logged once).
    async fn access_list(
        &mut self,
        session: &mut Session,
        fh: &nfs_fh3,
        attr: &fattr3,
        rel: &str,
    ) -> Result<Listed, SyncError> {
        if !list_matters(attr) {
            return Ok(Listed::Mode);
        }
        if let Some(listed) = self.seen(attr) {
            return Ok(listed);
        }
        let answer = session.access_lists(&[fh], &[rel]).await?.pop();
        let answer = answer.expect("one answer per object");
        // Counted when the server answered (a server without NFSACL is not asked again).
        if !matches!(answer, AclAnswer::Unsupported(_)) {
            self.count(|j| j.counts.permission_reads += 1);
        }
        match answer {
            AclAnswer::List(list) => Ok(self.remember(attr, &list)),
            AclAnswer::Refused(stat) => {
                // Asked only for an error that is not the object's own state.
                let answers = objects_own(stat) || session.answers().await;
                refused_list(
                    stat,
                    answers,
                    attr.type_ == ftype3::NF3DIR,
                    &format!(
                        "asking the access control list of {rel:?} on {}:{} failed: {stat}",
                        self.cfg.server, self.cfg.export
                    ),
                )
            }
            AclAnswer::Unsupported(why) => {
                if self.cfg.require_nfsacl {
                    return Err(SyncError::Outage(format!(
                        "{why}, and require_nfsacl is set: nothing is indexed from {}:{} until it does",
                        self.cfg.server, self.cfg.export
                    )));
                }
                if !self.warned_nfsacl {
                    self.warned_nfsacl = true;
                    tracing::warn!(connector = %self.cfg.id, reason = %why, "POSIX access lists on this export cannot be seen: mode bits are trusted (require_nfsacl = false)");
                }
                Ok(Listed::Mode)
            }
        }
    }

    /// Who may enter a directory (its list, else its mode bits), and why the files below it
    /// are skipped if its list cannot be used.
    async fn enter(
        &mut self,
        session: &mut Session,
        names: &PosixNames,
        fh: &nfs_fh3,
        attr: &fattr3,
        rel: &str,
    ) -> Result<(Acl, Option<String>), SyncError> {
        let mode = || posix_dir_acl(names, attr.uid, attr.gid, attr.mode);
        Ok(match self.access_list(session, fh, attr, rel).await? {
            Listed::Mode => (mode(), None),
            Listed::List(entries) => match list_dir_acl(names, attr.uid, attr.gid, &entries) {
                Ok(acl) => (acl, None),
                Err(why) => (mode(), Some(dir_reason(rel, &why))),
            },
            Listed::Unusable(why) => (mode(), Some(dir_reason(rel, &why))),
        })
    }

    /// Asks together for the lists of those of `objs` (handle, attributes, path) not seen at
    /// their current `ctime`, so that [`Self::access_list`] finds them: a listing's worth of
    /// calls in flight at once instead of one after another.
    async fn prefetch_lists(
        &mut self,
        session: &mut Session,
        objs: &[(&nfs_fh3, &fattr3, String)],
    ) -> Result<(), SyncError> {
        let unseen: Vec<_> = objs
            .iter()
            .filter(|(_, a, _)| list_matters(a) && self.seen(a).is_none())
            .collect();
        if unseen.is_empty() {
            return Ok(());
        }
        let fhs: Vec<&nfs_fh3> = unseen.iter().map(|(fh, _, _)| *fh).collect();
        let paths: Vec<&str> = unseen.iter().map(|(_, _, p)| p.as_str()).collect();
        let answers = session.access_lists(&fhs, &paths).await?;
        let asked = answers
            .iter()
            .filter(|a| !matches!(a, AclAnswer::Unsupported(_)))
            .count() as u64;
        self.count(|j| j.counts.permission_reads += asked);
        for ((_, a, _), answer) in unseen.iter().zip(answers) {
            // Other answers are given again, one by one, where they are used.
            if let AclAnswer::List(list) = answer {
                self.remember(a, &list);
            }
        }
        Ok(())
    }

    /// What the server said of the object's list at its current change time, if it was asked
    /// (by this reconciliation, or the previous one for a settled answer).
    fn seen(&mut self, a: &fattr3) -> Option<Listed> {
        let key = (a.fsid, a.fileid);
        let seen = match self.lists.get(&key) {
            Some(s) => s.clone(),
            None => self.lists_before.remove(&key)?,
        };
        let current = seen.ctime == (a.ctime.seconds, a.ctime.nseconds);
        let listed = current.then(|| seen.listed.clone());
        if current {
            self.lists.insert(key, seen);
        }
        listed
    }

    /// Takes a file's own answer from the version it was indexed (or last sent) with, when that
    /// records "no list beyond the mode bits" at the file's current change time: so a new
    /// process (a restart) does not ask again what its predecessor was told. Only a settled
    /// answer the server gave is recorded there (see [`Self::version_of`]).
    fn recall(&mut self, rel: &str, a: &fattr3) {
        let key = (a.fsid, a.fileid);
        if self.lists.contains_key(&key) || self.lists_before.contains_key(&key) {
            return;
        }
        let Some(prev) = self.last_known(&DocKey::new(&self.cfg.id, rel)) else {
            return;
        };
        // The same file (file system, file id), content and change time as when it was answered.
        if prev.version == answered_version(a) {
            let seen = Seen {
                ctime: (a.ctime.seconds, a.ctime.nseconds),
                listed: Listed::Mode,
                keep: true,
            };
            self.lists.insert(key, seen);
        }
    }

    /// The version recorded for a file: its content's ([`version`]), followed by the change time
    /// at which the server answered that the file has no list beyond its mode bits, when that
    /// answer is settled (kept) and is what the ACL was derived from. A replace rule or a
    /// server without NFSACL records nothing: nothing was answered.
    fn version_of(&self, a: &fattr3, listed: &Listed) -> String {
        let answered = matches!(listed, Listed::Mode)
            && self.lists.get(&(a.fsid, a.fileid)).is_some_and(|s| {
                s.keep
                    && matches!(s.listed, Listed::Mode)
                    && s.ctime == (a.ctime.seconds, a.ctime.nseconds)
            });
        if answered {
            answered_version(a)
        } else {
            version(a)
        }
    }

    /// Keeps what the server said of the object's list, and returns it.
    fn remember(&mut self, a: &fattr3, list: &nfsacl::AccessList) -> Listed {
        let listed = Listed::from_answer(list, a);
        let seen = Seen {
            ctime: (a.ctime.seconds, a.ctime.nseconds),
            listed: listed.clone(),
            keep: settled(a),
        };
        self.lists.insert((a.fsid, a.fileid), seen);
        listed
    }

    /// The ACL and version of a file from its attributes, or why it cannot be indexed.
    fn acl_and_version(
        &self,
        names: &PosixNames,
        rel: &str,
        a: &fattr3,
        dirs: &Acl,
        listed: &Listed,
    ) -> Result<(Acl, String), String> {
        if a.type_ != ftype3::NF3REG {
            return Err(format!("not a regular file ({})", a.type_));
        }
        if a.nlink > 1 && !self.cfg.acl_rules.is_empty() {
            return Err(format!(
                "the file has {} hard links and ACL rules apply by path: one path cannot tell its ACL",
                a.nlink
            ));
        }
        if a.size > self.cfg.max_file_size {
            return Err(format!(
                "too large: {} bytes > max_file_size {} bytes",
                a.size, self.cfg.max_file_size
            ));
        }
        let own = match listed {
            Listed::List(entries) => list_acl(names, a.uid, a.gid, entries)?,
            Listed::Unusable(why) => return Err(why.clone()),
            Listed::Mode => posix_acl(names, a.uid, a.gid, a.mode),
        };
        let posix = intersect(own, dirs.clone());
        let acl = apply_acl_rules(&self.cfg.acl_rules, Path::new(rel), posix);
        if acl.is_closed() {
            return Err("no principal may read this file (ACL allows nobody)".to_string());
        }
        Ok((acl, self.version_of(a, listed)))
    }

    async fn visit(
        &mut self,
        session: &mut Session,
        names: &PosixNames,
        f: Found,
    ) -> Result<(), SyncError> {
        let key = DocKey::new(&self.cfg.id, f.rel.as_str());
        let prev = self.last_known(&key);
        let known = prev.is_some();
        self.count(|j| j.counts.scanned += 1);
        // Under a POSIX access list the list says who may read, not the mode bits (as in the
        // fs connector); a `replace` rule states the access instead.
        let listed = if acl_replaced(&self.cfg.acl_rules, Path::new(&f.rel)) {
            Listed::Mode
        } else if let Some(why) = &f.above {
            Listed::Unusable(why.clone())
        } else {
            self.access_list(session, &f.fh, &f.attr, &f.rel).await?
        };
        let outcome = self
            .read_if_changed(session, names, &f, &key, prev, listed)
            .await?;
        let doc = match outcome {
            Ok(Some(doc)) => doc,
            Ok(None) => {
                self.count(|j| j.counts.unchanged += 1);
                return Ok(());
            }
            Err(Unread::Keep(reason)) => {
                self.count_failure(&f.rel, &reason);
                return Ok(());
            }
            Err(Unread::Skip(reason)) => {
                self.count_failure(&f.rel, &reason);
                // A skipped document is removed from the index: an unreadable file must not
                // keep serving old text under an old ACL.
                self.sent.remember(&f.rel, None);
                return self.send(Change::Skipped { key, reason }).await;
            }
        };
        self.sent.remember(
            &f.rel,
            Some(IndexedDoc {
                version: doc.version.clone(),
                acl_fingerprint: doc.acl.fingerprint(),
            }),
        );
        self.count(|j| {
            if known {
                j.counts.modified += 1;
            } else {
                j.counts.added += 1;
            }
        });
        self.send(Change::Upsert(Box::new(doc))).await
    }

    /// The document when new or changed, `None` when unchanged, or why it was not read.
    async fn read_if_changed(
        &mut self,
        session: &mut Session,
        names: &PosixNames,
        f: &Found,
        key: &DocKey,
        prev: Option<IndexedDoc>,
        listed: Listed,
    ) -> Result<Result<Option<SourceDocument>, Unread>, SyncError> {
        let (acl, version) = match self.acl_and_version(names, &f.rel, &f.attr, &f.dirs, &listed) {
            Ok(v) => v,
            Err(reason) => return Ok(Err(Unread::Skip(reason))),
        };
        // The content's part of the versions decides: a file indexed before its list's answer
        // settled (or before answers were recorded) is not read again for that alone.
        if let Some(prev) = &prev
            && content_version(&prev.version) == content_version(&version)
            && prev.acl_fingerprint == acl.fingerprint()
            && !self.full
        {
            return Ok(Ok(None));
        }
        let max = self.cfg.max_file_size;
        let mut tries = 0;
        let read = loop {
            tries += 1;
            match session.read(&f.fh, max, &f.rel).await? {
                // Changed while it was read (a review: part old, part new text was indexed
                // under the last reply's permissions): read again, a few times.
                Ok(r) if !r.settled && tries < UNSETTLED_READS => {
                    tokio::time::sleep(UNSETTLED_PAUSE * tries).await;
                }
                r => break r,
            }
        };
        let read = match read {
            Ok(r) if !r.settled => {
                let why = format!(
                    "{:?} kept changing while it was read ({UNSETTLED_READS} tries)",
                    f.rel
                );
                // Kept only while the access the replies show is the listing's too (a review:
                // a chmod during the reads left the old text under the old, wider ACL).
                let same_access = r.attr.as_ref().is_none_or(|a| {
                    (a.mode, a.uid, a.gid) == (f.attr.mode, f.attr.uid, f.attr.gid)
                });
                let unchanged_acl = same_access
                    && prev
                        .as_ref()
                        .is_some_and(|p| p.acl_fingerprint == acl.fingerprint());
                return Ok(Err(Unread::kept_if(unchanged_acl, why)));
            }
            Ok(r) => r,
            // Refused to the crawler, or gone since the listing: this file's own state. (Not a
            // stale handle: a file renamed over, or a server that failed over without a fixed
            // fsid, makes it too; it keeps its indexed version below, and the next listing
            // shows whether it is gone. A review: every such file was withdrawn.)
            Err(
                stat @ (nfsstat3::NFS3ERR_ACCES | nfsstat3::NFS3ERR_PERM | nfsstat3::NFS3ERR_NOENT),
            ) => return Ok(Err(Unread::Skip(format!("unreadable: {stat}")))),
            // The server's trouble (I/O error, JUKEBOX, …) is never a reason to drop what is
            // indexed. When the server still answers for the export's root, the trouble is this
            // file's (a bad block): it keeps its indexed version if its ACL is unchanged (else
            // it is skipped: old text must not stay under an old ACL), and the sync goes on.
            // When the server does not answer, it is an outage. (Before, one such file failed
            // every sync at it: later files never updated, deleted ones never withdrawn.)
            Err(stat) => {
                let why = format!(
                    "reading {:?} on {}:{} failed: {stat}",
                    f.rel, self.cfg.server, self.cfg.export
                );
                if !session.answers().await {
                    return Err(SyncError::Outage(why));
                }
                let unchanged_acl = prev
                    .as_ref()
                    .is_some_and(|p| p.acl_fingerprint == acl.fingerprint());
                return Ok(Err(Unread::kept_if(unchanged_acl, why)));
            }
        };
        if read.data.len() as u64 > max {
            return Ok(Err(Unread::Skip(format!(
                "too large: over max_file_size {max} bytes"
            ))));
        }
        // The attributes that came with the read describe what was read: a file changed (or
        // chmod'ed) since the listing is indexed with its current ACL and version.
        let attr = read.attr.as_ref().unwrap_or(&f.attr);
        // A `setfacl` since the listing moved the change time: its list is asked again with
        // the attributes the content was read under.
        let listed = if (attr.ctime.seconds, attr.ctime.nseconds)
            != (f.attr.ctime.seconds, f.attr.ctime.nseconds)
            && !acl_replaced(&self.cfg.acl_rules, Path::new(&f.rel))
            && f.above.is_none()
        {
            self.access_list(session, &f.fh, attr, &f.rel).await?
        } else {
            listed
        };
        let (acl, version) = if read.attr.is_some() {
            match self.acl_and_version(names, &f.rel, attr, &f.dirs, &listed) {
                Ok(v) => v,
                Err(reason) => return Ok(Err(Unread::Skip(reason))),
            }
        } else {
            (acl, version)
        };
        let name_hint = f.rel.rsplit('/').next().unwrap_or(&f.rel).to_string();
        let mut attributes = BTreeMap::new();
        attributes.insert("export_path".to_string(), f.rel.clone());
        if let Some((_, ext)) = name_hint.rsplit_once('.')
            && !ext.is_empty()
        {
            attributes.insert("file_type".to_string(), ext.to_lowercase());
        }
        Ok(Ok(Some(SourceDocument {
            key: key.clone(),
            uri: nfs_uri(&self.cfg.server, &self.cfg.export, &f.rel),
            title: None,
            mime: None,
            name_hint,
            content: read.data,
            version,
            modified_at: Some(attr.mtime.seconds as i64),
            attributes,
            acl,
            job: Some(self.job),
            reparse: self.full,
        })))
    }
}

/// Why an object whose list grants its owner, group or others more than its mode bits is
/// skipped: one of the two is wrong, and the wider cannot be trusted.
const WIDER_THAN_MODE: &str = "has an access control list that grants more than its mode \
     bits: which one the server enforces cannot be told";

/// How many times a file that changes while it is read is read before the sync gives up on
/// it until the next one.
const UNSETTLED_READS: u32 = 3;

/// The pause before reading such a file again (times the tries so far).
const UNSETTLED_PAUSE: Duration = Duration::from_millis(200);

/// Whether a `GETACL` error is the object's own state (refused to the crawler, gone since the
/// listing, or on a file system whose access control NFSACL cannot show, such as NFSv4 ACLs):
/// the object is skipped. Any other is the server's trouble: an outage.
fn objects_own(stat: nfsstat3) -> bool {
    matches!(
        stat,
        nfsstat3::NFS3ERR_ACCES
            | nfsstat3::NFS3ERR_PERM
            | nfsstat3::NFS3ERR_NOENT
            | nfsstat3::NFS3ERR_STALE
            | nfsstat3::NFS3ERR_NOTSUPP
    )
}

/// What a `GETACL` refused with `stat` makes of the object. Its own state (see
/// [`objects_own`]) skips it. Any other error is the server's trouble: an outage (nothing is
/// withdrawn) when the server no longer answers for the export's root (`answers` false); when
/// it does, the trouble is this object's (a bad block), which is skipped, its ACL unknown, and
/// the sync goes on (session 34's review: one such object failed every sync at it, so later
/// files kept ACLs changed since, as reads once did).
fn refused_list(stat: nfsstat3, answers: bool, dir: bool, why: &str) -> Result<Listed, SyncError> {
    if objects_own(stat) {
        return Ok(Listed::Unusable(format!(
            "has access control that NFSACL cannot show ({stat})"
        )));
    }
    // JUKEBOX is the server saying "later" (a file being recalled from tape, a busy server):
    // never the object's state. A directory's would withdraw its whole subtree (found by a
    // review): an outage for the pass instead; a file's skips the file alone.
    if !answers || dir && matches!(stat, nfsstat3::NFS3ERR_JUKEBOX) {
        return Err(SyncError::Outage(why.to_string()));
    }
    Ok(Listed::Unusable(format!(
        "its access control list could not be read ({stat})"
    )))
}

/// Whether an answer about `a` may be kept past this reconciliation, until its change time
/// moves: not while that time is recent, since two changes within one tick of the server's
/// clock share it (a `setfacl` right after the file was written would go unseen).
fn settled(a: &fattr3) -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    u64::from(a.ctime.seconds) + SETTLE_SECS < now
}

/// See [`settled`]; a margin for the server's and this host's clocks too.
const SETTLE_SECS: u64 = 5;

/// Whether an access list could change who may read a file (or enter a directory) beyond what
/// its mode bits say. Under a list the group bits are its mask, which bounds every named entry
/// and the owning group; the other bits still bound the rest. With neither granting, only the
/// owner may, exactly as the mode says: no need to ask.
fn list_matters(a: &fattr3) -> bool {
    let bit = if a.type_ == ftype3::NF3DIR { 0o1 } else { 0o4 };
    a.mode & ((bit << 3) | bit) != 0
}

/// Why the files below directory `rel` are skipped, `why` being the directory's own reason.
fn dir_reason(rel: &str, why: &str) -> String {
    if rel.is_empty() {
        format!("the export's root directory {why}")
    } else {
        format!("directory {rel:?} {why}")
    }
}

/// Marks, in a recorded version, the change time at which the file's own list was answered as
/// saying nothing beyond the mode bits (see `Syncer::version_of`).
const MODE_ANSWERED: &str = "mode@";

/// Why a file was not read: skipped (withdrawn from the index), or kept at its indexed version
/// (the server failed on this file alone and its ACL is unchanged).
enum Unread {
    Skip(String),
    Keep(String),
}

impl Unread {
    /// Kept (its indexed version stays) when `keep`, else skipped, for `why`.
    fn kept_if(keep: bool, why: String) -> Self {
        match keep {
            true => Self::Keep(format!("{why}; the indexed version stays")),
            false => Self::Skip(why),
        }
    }
}

/// The content's part of a recorded version.
fn content_version(v: &str) -> &str {
    v.split_once(' ').map_or(v, |(content, _)| content)
}

/// The version recorded for a file whose own list was answered as saying nothing beyond the
/// mode bits at its current change time: its content's, then the file system and the change
/// time of the answer.
fn answered_version(a: &fattr3) -> String {
    format!(
        "{} {MODE_ANSWERED}{}:{}.{:09}",
        version(a),
        a.fsid,
        a.ctime.seconds,
        a.ctime.nseconds
    )
}

/// (file id, size, mtime): a rewrite, a replacement under the same name or a touch all change it.
fn version(a: &fattr3) -> String {
    format!(
        "{}:{}:{}.{:09}",
        a.fileid, a.size, a.mtime.seconds, a.mtime.nseconds
    )
}

/// `nfs://server/export/rel`, percent-encoded.
fn nfs_uri(server: &str, export: &str, rel: &str) -> String {
    let mut s = format!("nfs://{server}");
    let path = format!("{}/{rel}", export.trim_end_matches('/'));
    for b in path.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' | b'~' => {
                s.push(b as char)
            }
            _ => s.push_str(&format!("%{b:02X}")),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(type_: ftype3, mode: u32) -> fattr3 {
        use nfs3_client::nfs3_types::nfs3::{nfstime3, specdata3};
        let t = nfstime3 {
            seconds: 0,
            nseconds: 0,
        };
        fattr3 {
            type_,
            mode,
            nlink: 1,
            uid: 0,
            gid: 0,
            size: 0,
            used: 0,
            rdev: specdata3 {
                specdata1: 0,
                specdata2: 0,
            },
            fsid: 0,
            fileid: 0,
            atime: t,
            mtime: t,
            ctime: t,
        }
    }

    #[test]
    fn only_a_group_or_other_class_with_the_permission_needs_the_list() {
        use ftype3::{NF3DIR, NF3REG};
        // Files: read. Under a list the group bits are its mask: without r there, and without
        // r for others, only the owner reads, whatever the list names.
        for (mode, asks) in [(0o600, false), (0o700, false), (0o640, true), (0o604, true)] {
            assert_eq!(list_matters(&attr(NF3REG, mode)), asks, "file {mode:o}");
        }
        // Directories: search.
        for (mode, asks) in [(0o700, false), (0o766, false), (0o710, true), (0o701, true)] {
            assert_eq!(
                list_matters(&attr(NF3DIR, mode)),
                asks,
                "directory {mode:o}"
            );
        }
    }

    #[test]
    fn only_an_objects_own_getacl_error_skips_it_the_servers_trouble_is_an_outage() {
        for stat in [
            nfsstat3::NFS3ERR_ACCES,
            nfsstat3::NFS3ERR_STALE,
            nfsstat3::NFS3ERR_NOTSUPP,
        ] {
            assert!(objects_own(stat), "{stat}");
        }
        for stat in [
            nfsstat3::NFS3ERR_IO,
            nfsstat3::NFS3ERR_JUKEBOX,
            nfsstat3::NFS3ERR_SERVERFAULT,
        ] {
            assert!(!objects_own(stat), "{stat}");
        }
    }

    #[test]
    fn a_getacl_error_of_the_object_alone_skips_it_and_a_silent_server_is_an_outage() {
        for (stat, answers) in [
            (nfsstat3::NFS3ERR_ACCES, false),
            (nfsstat3::NFS3ERR_IO, true),
            (nfsstat3::NFS3ERR_SERVERFAULT, true),
        ] {
            assert!(
                matches!(
                    refused_list(stat, answers, false, "x"),
                    Ok(Listed::Unusable(_))
                ),
                "{stat}"
            );
        }
        assert!(matches!(
            refused_list(nfsstat3::NFS3ERR_IO, false, false, "x"),
            Err(SyncError::Outage(_))
        ));
        assert!(matches!(
            refused_list(nfsstat3::NFS3ERR_JUKEBOX, true, true, "x"),
            Err(SyncError::Outage(_))
        ));
        assert!(matches!(
            refused_list(nfsstat3::NFS3ERR_JUKEBOX, true, false, "x"),
            Ok(Listed::Unusable(_))
        ));
    }

    /// The top is another directory (a file system unmounted on the server): refused unless
    /// `sub_path` changed, which makes another top on purpose.
    #[test]
    fn a_top_directory_replaced_since_the_last_walk_is_noticed() {
        let top = |sub: Option<&str>, fileid| TopDir {
            server: "files".into(),
            export: "/srv".into(),
            sub_path: sub.map(str::to_string),
            fileid,
        };
        let was = top(None, 2);
        assert!(
            !was.replaced_by(&top(None, 2)),
            "the same directory, whatever its fsid"
        );
        assert!(
            was.replaced_by(&top(None, 1_234)),
            "the directory under a mount"
        );
        assert!(!was.replaced_by(&top(Some("eng"), 99)), "another sub_path");
        let other_export = TopDir {
            export: "/data".into(),
            ..top(None, 99)
        };
        assert!(!was.replaced_by(&other_export), "another export");
        let recorded_before = TopDir {
            server: String::new(),
            export: String::new(),
            ..top(None, 2)
        };
        assert!(recorded_before.replaced_by(&top(None, 1_234)));
        // Kept in the checkpoint.
        let v = serde_json::to_value(&was).unwrap();
        assert_eq!(serde_json::from_value::<TopDir>(v).unwrap(), was);
    }

    #[test]
    fn a_list_sent_with_other_mode_bits_than_the_listing_is_not_used() {
        let mut a = attr(ftype3::NF3DIR, 0o755);
        a.uid = 1001;
        a.gid = 2001;
        let named = vec![ListEntry {
            tag: docent_fs_connector::posix_list::USER,
            id: 1002,
            perm: 0,
        }];
        let list = |owner_mode| nfsacl::AccessList {
            entries: named.clone(),
            consistent: true,
            owner_mode,
        };
        let listed = Some((0o755, 1001, 2001));
        assert!(matches!(
            Listed::from_answer(&list(listed), &a),
            Listed::List(_)
        ));
        assert!(matches!(
            Listed::from_answer(&list(None), &a),
            Listed::List(_)
        ));
        // A write in between (another change time) changes nothing.
        a.ctime.seconds += 1;
        assert!(matches!(
            Listed::from_answer(&list(listed), &a),
            Listed::List(_)
        ));
        // A minimal list stricter than the listed mode decides; a wider one is not used.
        use docent_fs_connector::posix_list::{GROUP_OBJ, OTHER, USER_OBJ};
        let minimal = |other| nfsacl::AccessList {
            entries: [(USER_OBJ, 7), (GROUP_OBJ, 5), (OTHER, other)]
                .map(|(tag, perm)| ListEntry { tag, id: 0, perm })
                .to_vec(),
            consistent: true,
            owner_mode: None,
        };
        assert!(matches!(
            Listed::from_answer(&minimal(0), &a),
            Listed::List(_)
        ));
        let mut narrow = a.clone();
        narrow.mode = 0o750;
        assert!(matches!(
            Listed::from_answer(&minimal(5), &narrow),
            Listed::Unusable(why) if why == WIDER_THAN_MODE
        ));
        // A chmod or chown between the listing and the list.
        for other in [
            (0o750, 1001, 2001),
            (0o755, 1002, 2001),
            (0o755, 1001, 2002),
        ] {
            assert!(matches!(
                Listed::from_answer(&list(Some(other)), &a),
                Listed::Unusable(why) if why == CHANGED_WHILE_ASKED
            ));
        }
    }

    #[test]
    fn a_recent_change_time_is_not_kept() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as u32;
        let mut a = attr(ftype3::NF3REG, 0o644);
        a.ctime.seconds = now;
        assert!(!settled(&a));
        a.ctime.seconds = now - 60;
        assert!(settled(&a));
    }

    #[test]
    fn a_recorded_answer_names_the_file_its_content_and_change_time() {
        let mut a = attr(ftype3::NF3REG, 0o644);
        a.fsid = 3;
        a.fileid = 7;
        a.size = 10;
        a.mtime.seconds = 5;
        a.ctime.seconds = 12;
        a.ctime.nseconds = 34;
        let v = answered_version(&a);
        assert_eq!(v, format!("7:10:5.000000000 {MODE_ANSWERED}3:12.000000034"));
        assert_eq!(content_version(&v), version(&a));
        // Versions recorded before answers were: all content.
        assert_eq!(content_version(&version(&a)), version(&a));
        // Another file system, or another change time, is another answer.
        let mut b = a.clone();
        b.fsid = 4;
        assert_ne!(answered_version(&b), v);
        b = a.clone();
        b.ctime.nseconds = 35;
        assert_ne!(answered_version(&b), v);
    }

    #[test]
    fn uri_percent_encodes() {
        assert_eq!(
            nfs_uri("nas", "/srv/share/", "a b/ü.txt"),
            "nfs://nas/srv/share/a%20b/%C3%BC.txt"
        );
    }
}
