//! SMB connector: crawls one share (or a folder in it) with the pure-Rust `smb` client (NTLM),
//! takes each file's permissions from its security descriptor's DACL (intersected with the
//! configured share-level permissions), follows SMB2 change notifications on the crawl root,
//! and reconciles periodically (notifications get lost: the reconciliation is what makes the
//! index converge).
//!
//! Invariants:
//! - every upsert carries the ACL its DACL gives ([`dacl`]); a file whose DACL cannot be read,
//!   has a NULL DACL (unless configured), or has a deny ACE for a SID we cannot map is skipped
//!   with the reason, never indexed with a guessed ACL; share-level permissions only narrow;
//! - an unchanged file's content is not read: its version is (file id, size, last-write time)
//!   plus a fingerprint of the connector's ACL mapping (SID mappings, share permissions,
//!   NULL-DACL policy; the passwd/group names are read each sync); its DACL is read on every sync (16 at a time: round trips
//!   are the cost), because nothing in a listing tells an ACL change (Samba reports the
//!   last-write time as ChangeTime), so an ACL-only change reaches the index within one sync.
//!   Change notifications bring changes sooner: Samba tells a recursive watch of content
//!   changes anywhere below it, but of security changes only in the
//!   watched folder itself; deeper ACL changes wait for the reconciliation;
//! - a notification is a hint, never a verdict: the named paths are looked up again (listing of
//!   the parent folder) and only what the server then shows is sent; a path that cannot be
//!   looked up because the server went away is an outage, not a deletion, and one whose folder
//!   cannot be listed (or is gone with its parent) is left to the reconciliation; an overflowed
//!   notification buffer becomes a reconciliation;
//! - outages are not deletions: an unreachable server, a failed login, a root listing that
//!   fails or comes back empty, or a connection lost mid-crawl end the sync without deleting or
//!   skipping anything; the connector reports the reason, retries with backoff and resumes
//!   (documents already indexed and unchanged are not read again);
//! - a folder below the root that cannot be listed while the share answers is reported and
//!   the sync goes on: what is indexed below it is kept, except below a folder the crawler is
//!   refused (access denied), where it is withdrawn (skipped with the reason, its ACL can no
//!   longer be checked) until the folder can be listed again; a folder whose file id was
//!   already walked (a link back up the tree) is not walked again, nor one 64 levels deep;
//! - deletions past `deletion_protection_percent` need an admin's force, as in the fs connector.

mod config;
pub mod dacl;

pub use config::Factory;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use docent_connector_api::jobs::{ConnectorCommand, JobFailure, JobRecord, JobState};
use docent_connector_api::paths::{GlobError, PathFilter};
use docent_connector_api::{
    Acl, Alarm, Change, Connector, ConnectorContext, ConnectorError, DocKey, IndexedDoc,
    IndexedState, Principal, SentLog, SourceDocument, StatusHandle,
};
use docent_fs_connector::PosixNames;
use futures::FutureExt;
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::dacl::{Ace, AceKind, NullDacl, SidMap};

/// Why a folder could not be listed.
#[derive(Debug)]
struct ListError {
    message: String,
    /// The server refused the crawler (STATUS_ACCESS_DENIED).
    denied: bool,
    /// What the server sent could not be read (a security descriptor the client library does
    /// not parse: a NULL DACL, an ACL revision or ACE type it does not know): the object's
    /// own state, the same at every try, not server trouble.
    malformed: bool,
}

impl From<smb::Error> for ListError {
    fn from(e: smb::Error) -> Self {
        let denied = matches!(
            e,
            smb::Error::ReceivedErrorMessage(code, _) | smb::Error::UnexpectedMessageStatus(code)
                if code == smb::Status::U32_ACCESS_DENIED
        );
        Self {
            malformed: matches!(e, smb::Error::BinRWError(_)),
            message: e.to_string(),
            denied,
        }
    }
}

impl std::fmt::Display for ListError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What a walk found: the selected files, sorted by path, and the folders below the root it
/// could not list (with the reason, and whether the crawler was refused).
#[derive(Default)]
struct Walked {
    files: Vec<Listed>,
    unlisted: Vec<(String, ListError)>,
    /// Folders met again under another path, not walked again: (the path walked, the other
    /// path). See [`Crawler::folder_aliases`].
    folder_aliases: Vec<(String, String)>,
    /// Files listed but not selected by the include/exclude filter (with `folder_permissions`):
    /// (file id, path). Not indexed, but a selected file with the same id (a link to one, such
    /// as a link to a hidden file) is narrowed by their folders too.
    unselected: Vec<(u64, String)>,
}

impl Walked {
    /// Whether `id` lies below a folder the walk could not list.
    fn under_unlisted(&self, id: &str) -> bool {
        self.unlisted.iter().any(|(d, _)| within(id, d))
    }
}

/// `id` lies in folder `dir`, the share's root (`""`) holding everything.
fn within(id: &str, dir: &str) -> bool {
    dir.is_empty() || is_below(id, dir)
}

/// `id` is `dir` or below it (`/`-separated, relative to the share).
fn is_below(id: &str, dir: &str) -> bool {
    id == dir || id.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

/// Validated configuration of one SMB connector.
#[derive(Clone)]
pub struct SmbConfig {
    pub id: String,
    pub server: String,
    pub port: u16,
    pub share: String,
    /// Folder inside the share to crawl (`/`-separated, no leading slash); empty: the share.
    pub sub_path: String,
    pub username: String,
    /// Already `${VAR}`-interpolated by Docent. Never logged.
    pub password: String,
    pub domain: Option<String>,
    /// Globs matched against the path relative to `sub_path`; empty include means everything.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub max_file_size: u64,
    pub reconcile_interval: Duration,
    /// For Samba's Unix SIDs (S-1-22-1-uid, S-1-22-2-gid).
    pub passwd_file: std::path::PathBuf,
    pub group_file: std::path::PathBuf,
    /// Other SIDs (domain users and groups) → principals.
    pub sid_principals: BTreeMap<String, Principal>,
    pub null_dacl: NullDacl,
    /// Narrow each file by the folders above it (who may reach it: [`dacl::REACH_BITS`]), as
    /// Samba enforces through the file system; `false` for a Windows server, whose users
    /// bypass traverse checking.
    pub folder_permissions: bool,
    /// Report the group file's memberships to the identity store (as the fs and nfs
    /// connectors do): the deny entries Samba's ACEs give a group (`group:staff` for a
    /// 0604 file) are enforced only for members Docent knows of. Off by default: the group
    /// file's member names join identities of the same names.
    pub report_memberships: bool,
    pub deletion_protection_percent: u32,
    pub deletion_protection_min_docs: u64,
    /// Backoff after a failed sync: starts here, doubles, capped at `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Per SMB request.
    pub timeout: Duration,
    /// Follow SMB2 change notifications (recursive, on the crawl root).
    pub watch: bool,
    /// Notifications are gathered this long before the paths they name are looked up.
    pub watch_debounce: Duration,
    /// Share-level permissions, intersected with each file's DACL ([`dacl::intersect_share`]).
    pub share_acl: Option<Acl>,
}

impl std::fmt::Debug for SmbConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmbConfig")
            .field("id", &self.id)
            .field("server", &self.server)
            .field("port", &self.port)
            .field("share", &self.share)
            .field("sub_path", &self.sub_path)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("domain", &self.domain)
            .field("include", &self.include)
            .field("exclude", &self.exclude)
            .field("max_file_size", &self.max_file_size)
            .field("reconcile_interval", &self.reconcile_interval)
            .field("sid_principals", &self.sid_principals)
            .field("null_dacl", &self.null_dacl)
            .field("watch", &self.watch)
            .field("share_acl", &self.share_acl)
            .finish_non_exhaustive()
    }
}

/// The connector, built from a validated config.
pub struct SmbConnector {
    cfg: Arc<SmbConfig>,
    filter: PathFilter,
}

impl SmbConnector {
    pub fn new(cfg: SmbConfig) -> Result<Self, GlobError> {
        Ok(Self {
            filter: PathFilter::new(&cfg.include, &cfg.exclude)?,
            cfg: Arc::new(cfg),
        })
    }
}

impl Connector for SmbConnector {
    fn id(&self) -> &str {
        &self.cfg.id
    }

    fn kind(&self) -> &'static str {
        "smb"
    }

    fn run(
        self: Box<Self>,
        ctx: ConnectorContext,
    ) -> BoxFuture<'static, Result<(), ConnectorError>> {
        async move { run(*self, ctx).await }.boxed()
    }
}

/// Why a sync stopped early.
enum SyncError {
    /// The share cannot be trusted now (unreachable, login refused, connection lost): nothing
    /// is deleted, the sync is retried.
    Outage(String),
    Sink,
}

enum Outcome {
    Done,
    Blocked(String),
    /// Held before anything was visited (an empty listing): blocked, and the reconciliation
    /// is still owed.
    Held(String),
}

/// What one job does.
enum Work {
    /// Walk the whole crawl root: (force deletions, full).
    Reconcile { force: bool, full: bool },
    /// Look up the paths change notifications named.
    Paths(BTreeSet<String>),
}

/// A sync to run: (reserved job id, trigger, force deletions, full).
type Pending = (Option<u64>, &'static str, bool, bool);

/// What the change-notification watcher reports.
#[derive(Debug)]
enum Notice {
    /// A path (relative to the share, `/`-separated) was added, changed, removed or renamed.
    Changed(String),
    /// The server dropped notifications (its buffer overflowed): reconcile.
    Overflow,
    /// The watch ended (connection lost, not supported): the next reconciliation restarts it.
    Ended(String),
    /// The server took the watch: changes are notified.
    Watching,
}

struct Crawler {
    cfg: Arc<SmbConfig>,
    filter: PathFilter,
    sids: SidMap,
    status: StatusHandle,
    sink: mpsc::Sender<Change>,
    indexed: Arc<dyn IndexedState>,
    /// What was last sent per native id, until the index shows it ([`SentLog`]).
    sent: SentLog,
    job: u64,
    /// SIDs no mapping names, seen in the DACLs read since the last full sync.
    unmapped: BTreeSet<String>,
    /// See [`acl_config`].
    acl_config: String,
    /// Per folder (relative to the share, "" for its root), who may reach what is below it:
    /// its own DACL narrowed by every folder above it. Read once per sync pass.
    reach: HashMap<String, Result<Acl, String>>,
    /// Folders whose permissions could not be read for the server's own trouble (not a
    /// refusal), with why, until a later read succeeds: a file below one of them that fails
    /// ends the sync as an outage instead of being skipped. Kept per folder (a review: one
    /// flag, set by a timeout in a read-ahead and never cleared, turned the next file skipped
    /// for its own reason, anywhere, into an outage of the whole sync).
    folder_outage: HashMap<String, String>,
    /// The paths of every listed file by its file id (the last full listing, and the files
    /// notifications brought since). A file listed under several paths is a link Samba
    /// follows, or a hard link: Samba resolves a link on the server, where every folder of the
    /// file's own path must let the reader pass too, so such a file is narrowed by the folders
    /// of all its paths (for a hard link, or for the target, narrower than need be, never
    /// wider). See [`Crawler::paths_of`]. Files the filter leaves out in folders the walk lists
    /// count too. Folders the walk does not list (excluded, refused to the crawler, too deep,
    /// outside `sub_path`) give no ids: a link into one is narrowed by its own path's folders
    /// only (the README says so).
    files_by_id: HashMap<u64, Vec<String>>,
    /// Folders the listing met under two paths (a link to a folder): (the path walked, the
    /// other path), the other not inside the first (a link back up the tree is not a second
    /// way in). A file below the walked path is narrowed by the other path's folders too.
    folder_aliases: Vec<(String, String)>,
    /// Files the change notifications deleted since the last reconciliation that ended: their
    /// deletion protection counts them all (session 36's note: each batch was counted alone,
    /// so deletions arriving in many small batches were never held back).
    watch_deleted: u64,
    /// The last job was a reconciliation held before it visited anything: what it owed (a
    /// rollback's reconciliation) is owed still (a review: an empty listing paid it).
    held_unvisited: bool,
}

/// A file with more paths than this (a tree de-duplicated with hard links) is skipped: its
/// ACL would be narrowed by every one of them.
const MAX_PATHS: usize = 32;

async fn run(conn: SmbConnector, ctx: ConnectorContext) -> Result<(), ConnectorError> {
    let SmbConnector { cfg, filter } = conn;
    let status = ctx.status.clone();
    status.set_phase("starting");
    // The group file is local: reported before the first sync, so that an unreachable server
    // after a restart does not leave the indexed documents' group denies unresolved.
    let report = docent_fs_connector::membership_reporter(
        &cfg.id,
        &cfg.passwd_file,
        &cfg.group_file,
        cfg.report_memberships,
        ctx.memberships.clone(),
        &status,
    );
    report();
    let mut crawler = Crawler {
        sids: SidMap {
            names: PosixNames::load(&cfg.passwd_file, &cfg.group_file),
            explicit: cfg.sid_principals.clone(),
            // Folder permissions are on for servers that check them like POSIX (Samba).
            posix_server: cfg.folder_permissions,
        },
        cfg: cfg.clone(),
        filter,
        status: status.clone(),
        sink: ctx.sink.clone(),
        indexed: ctx.indexed.clone(),
        sent: SentLog::new(cfg.id.clone(), ctx.indexed.clone()),
        job: 0,
        unmapped: BTreeSet::new(),
        acl_config: String::new(),
        reach: HashMap::new(),
        folder_outage: HashMap::new(),
        files_by_id: HashMap::new(),
        folder_aliases: Vec::new(),
        watch_deleted: 0,
        held_unvisited: false,
    };
    crawler.acl_config = acl_config(&cfg);
    let shutdown = ctx.shutdown.clone();
    let mut commands = ctx.commands;
    let mut paused = false;
    let mut pending: Option<Pending> = Some((None, "start", false, false));
    let mut backoff = cfg.retry_initial;
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut tick = tokio::time::interval(cfg.reconcile_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut rollback_tick = tokio::time::interval(docent_connector_api::ROLLBACK_CHECK);
    // The watcher: started after each successful reconciliation when none runs.
    let (notice_tx, mut notices) = mpsc::channel::<Notice>(1024);
    let mut watcher: Option<CancellationToken> = None;
    let mut changed: BTreeSet<String> = BTreeSet::new();
    let mut changed_at: Option<tokio::time::Instant> = None;
    loop {
        if let Some((job, trigger, force, full)) = pending.take() {
            let rollbacks = crawler.sent.rollbacks();
            let r = tokio::select! {
                r = crawler.job(job, trigger, Work::Reconcile { force, full }) => r,
                _ = shutdown.cancelled() => Ok(false),
            };
            match r {
                Ok(true) => {
                    if !crawler.held_unvisited {
                        let paid = crawler.sent.reconciled(rollbacks);
                        tokio::select! {
                            r = crawler.send(paid) => if r.is_err() {
                                return Err(ConnectorError::SinkClosed { connector: cfg.id.clone() });
                            },
                            // Not sent: the reconciliation stays owed, and is made again.
                            _ = shutdown.cancelled() => break,
                        }
                    }
                    report();
                    if crawler.held_unvisited {
                        // Nothing was visited: tried again after a wait, as an outage is (a
                        // second review: the rollback check started one every 5 s), and what
                        // was notified is still to be done.
                        retry_at = Some(tokio::time::Instant::now() + backoff);
                        backoff = (backoff * 2).min(cfg.retry_max);
                    } else {
                        backoff = cfg.retry_initial;
                        retry_at = None;
                        // A reconciliation covers whatever was notified before it.
                        changed.clear();
                        changed_at = None;
                    }
                    if cfg.watch && watcher.is_none() {
                        let cancel = shutdown.child_token();
                        tokio::spawn(watch(cfg.clone(), notice_tx.clone(), cancel.clone()));
                        watcher = Some(cancel);
                    }
                }
                Ok(false) => break,
                Err(SyncError::Sink) => {
                    return Err(ConnectorError::SinkClosed {
                        connector: cfg.id.clone(),
                    });
                }
                Err(SyncError::Outage(why)) => {
                    tracing::warn!(connector = %cfg.id, retry_in_ms = backoff.as_millis() as u64, error = %docent_connector_api::log_safe(&why), "smb sync failed, will retry");
                    retry_at = Some(tokio::time::Instant::now() + backoff);
                    backoff = (backoff * 2).min(cfg.retry_max);
                }
            }
        }
        let retry_sleep = async {
            match retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => futures::future::pending().await,
            }
        };
        let notified = async {
            match changed_at {
                Some(at) if !paused && retry_at.is_none() => tokio::time::sleep_until(at).await,
                _ => futures::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = retry_sleep => {
                retry_at = None;
                if !paused {
                    pending = Some((None, "schedule", false, false));
                }
            }
            _ = tick.tick() => {
                if !paused && retry_at.is_none() {
                    pending = Some((None, "schedule", false, false));
                }
            }
            // Writes the pipeline rolled back are sent again by a reconciliation, now rather
            // than at the next scheduled one.
            _ = rollback_tick.tick() => {
                if !paused && retry_at.is_none() && crawler.sent.rolled_back_since_reconciled() {
                    pending = Some((None, "rollback", false, false));
                }
            }
            Some(notice) = notices.recv() => match notice {
                Notice::Changed(rel) => {
                    changed.insert(rel);
                    changed_at.get_or_insert_with(|| tokio::time::Instant::now() + cfg.watch_debounce);
                }
                Notice::Overflow => {
                    tracing::info!(connector = %cfg.id, "smb change notifications overflowed; reconciling");
                    if let Some(w) = watcher.take() {
                        w.cancel();
                    }
                    if !paused && retry_at.is_none() {
                        pending = Some((None, "watch", false, false));
                    }
                }
                Notice::Watching => status.clear(Alarm::Watch),
                Notice::Ended(why) => {
                    tracing::warn!(connector = %cfg.id, error = %docent_connector_api::log_safe(&why), "smb change notifications stopped; the next reconciliation restarts them");
                    // Shown with the connector's status, not only logged (found by a review):
                    // until a reconciliation restarts the watch, changes wait for it.
                    status.raise(
                        Alarm::Watch,
                        format!(
                            "change notifications stopped ({}); the next reconciliation restarts them",
                            docent_connector_api::log_safe(&why)
                        ),
                    );
                    if let Some(w) = watcher.take() {
                        w.cancel();
                    }
                }
            },
            _ = notified => {
                changed_at = None;
                let paths = std::mem::take(&mut changed);
                let r = tokio::select! {
                    r = crawler.job(None, "watch", Work::Paths(paths)) => r,
                    _ = shutdown.cancelled() => Ok(false),
                };
                match r {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(SyncError::Sink) => {
                        return Err(ConnectorError::SinkClosed {
                            connector: cfg.id.clone(),
                        });
                    }
                    Err(SyncError::Outage(why)) => {
                        tracing::warn!(connector = %cfg.id, error = %docent_connector_api::log_safe(&why), "smb watched changes failed; reconciling after backoff");
                        retry_at = Some(tokio::time::Instant::now() + backoff);
                        backoff = (backoff * 2).min(cfg.retry_max);
                    }
                }
            }
            Some(cmd) = commands.recv() => match cmd {
                ConnectorCommand::SyncNow { job_id, force_deletions, full } => {
                    pending = Some((Some(job_id), "admin", force_deletions, full));
                }
                ConnectorCommand::Pause => {
                    paused = true;
                    status.set_paused(true);
                    status.set_phase("paused");
                }
                ConnectorCommand::Resume => {
                    paused = false;
                    status.set_paused(false);
                    pending = Some((None, "resume", false, false));
                }
            },
        }
    }
    if let Some(w) = watcher {
        w.cancel();
    }
    status.set_phase("stopped");
    Ok(())
}

/// Watches the crawl root (recursively) on a session of its own and forwards what the server
/// notifies until cancelled or the watch fails.
async fn watch(cfg: Arc<SmbConfig>, tx: mpsc::Sender<Notice>, cancel: CancellationToken) {
    let end = |why: String| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(Notice::Ended(why)).await;
        }
    };
    let session = tokio::select! {
        s = connect(&cfg) => s,
        _ = cancel.cancelled() => return,
    };
    let session = match session {
        Ok(s) => s,
        Err(e) => return end(e).await,
    };
    let root = session.unc(&cfg.sub_path);
    let dir = match session
        .client
        .create_file(
            &root,
            &smb::FileCreateArgs::make_open_existing(
                smb::FileAccessMask::new().with_generic_read(true),
            ),
        )
        .await
    {
        Ok(smb::Resource::Directory(d)) => Arc::new(d),
        Ok(other) => {
            let _ = close_resource(other).await;
            return end("the crawl root is not a directory".into()).await;
        }
        Err(e) => return end(format!("cannot open the crawl root to watch it: {e}")).await,
    };
    let filter = smb::NotifyFilter::new()
        .with_file_name(true)
        .with_dir_name(true)
        .with_size(true)
        .with_last_write(true)
        .with_security(true);
    let stream =
        match smb::Directory::watch_stream_cancellable(&dir, filter, true, cancel.child_token()) {
            Ok(s) => s,
            Err(e) => return end(format!("cannot watch: {e}")).await,
        };
    futures::pin_mut!(stream);
    if tx.send(Notice::Watching).await.is_err() {
        return;
    }
    let prefix = if cfg.sub_path.is_empty() {
        String::new()
    } else {
        format!("{}/", cfg.sub_path)
    };
    tracing::debug!(connector = %cfg.id, "watching for smb change notifications");
    loop {
        let item = tokio::select! {
            item = stream.next() => item,
            _ = cancel.cancelled() => break,
        };
        match item {
            Some(Ok(info)) => {
                let rel = format!("{prefix}{}", info.file_name.to_string().replace('\\', "/"));
                if tx.send(Notice::Changed(rel)).await.is_err() {
                    break;
                }
            }
            Some(Err(smb::Error::BufferTooSmall { .. })) => {
                let _ = tx.send(Notice::Overflow).await;
                break;
            }
            Some(Err(e)) => {
                end(e.to_string()).await;
                break;
            }
            None => {
                if !cancel.is_cancelled() {
                    end("the server ended the watch".into()).await;
                }
                break;
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), session.client.close()).await;
}

fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A folder's listing: each entry's path, whether it is a folder, and what the listing says.
type Entries = Vec<(String, bool, Listed)>;

/// A file as the listing shows it.
#[derive(Clone)]
struct Listed {
    /// Path within the share, `/`-separated.
    rel: String,
    file_id: u64,
    size: u64,
    last_write: u64,
}

impl Listed {
    /// (file id, size, last-write time) and `acl_config` (what else decides the ACL: SID
    /// mappings, share permissions): while it is unchanged, the content has not changed. The
    /// ACL may have: a file's DACL is read on every sync (the change time cannot tell: Samba
    /// reports the last-write time as ChangeTime).
    fn version(&self, acl_config: &str) -> String {
        format!(
            "{:x}:{}:{}:{acl_config}",
            self.file_id, self.size, self.last_write
        )
    }
}

/// FNV-1a of what, besides the file's own DACL, decides its ACL (stable across runs and Rust
/// versions): when it changes, every file's version changes and its ACL is computed again.
/// The passwd and group names are not in it: every sync computes each file's ACL with the
/// current names and sends the files whose ACL moved, and no other (an edit of the group file
/// would otherwise send the whole share again).
fn acl_config(cfg: &SmbConfig) -> String {
    let text = format!(
        "{:?}|{:?}|{:?}|{}",
        cfg.share_acl, cfg.sid_principals, cfg.null_dacl, cfg.folder_permissions
    );
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Open, authenticated client on the configured share.
struct Session {
    client: smb::Client,
    share: smb::UncPath,
    /// The crawl root (`sub_path`, relative to the share).
    root: String,
}

impl Session {
    fn unc(&self, rel: &str) -> smb::UncPath {
        if rel.is_empty() {
            self.share.clone()
        } else {
            self.share.clone().with_path(&rel.replace('/', "\\"))
        }
    }

    async fn list(&self, rel: &str) -> Result<Entries, ListError> {
        let res = self
            .client
            .create_file(
                &self.unc(rel),
                &smb::FileCreateArgs::make_open_existing(
                    smb::FileAccessMask::new().with_generic_read(true),
                ),
            )
            .await
            .map_err(ListError::from)?;
        let dir = match res {
            smb::Resource::Directory(d) => Arc::new(d),
            other => {
                let _ = close_resource(other).await;
                return Err(ListError {
                    message: "not a directory".into(),
                    denied: false,
                    malformed: false,
                });
            }
        };
        let mut out = Vec::new();
        let listed: Result<(), ListError> = async {
            let mut stream =
                smb::Directory::query::<smb::FileIdBothDirectoryInformation>(&dir, "*")
                    .await
                    .map_err(ListError::from)?;
            while let Some(item) = stream.next().await {
                let e = item.map_err(ListError::from)?;
                let name = e.file_name.to_string();
                if name == "." || name == ".." {
                    continue;
                }
                let child = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                let is_dir = e.file_attributes.directory();
                out.push((
                    child.clone(),
                    is_dir,
                    Listed {
                        rel: child,
                        file_id: e.file_id,
                        size: e.end_of_file,
                        last_write: *e.last_write_time,
                    },
                ));
            }
            Ok(())
        }
        .await;
        let _ = dir.close().await;
        listed.map(|()| out)
    }

    /// Whether the share still answers (tells a per-file error from a lost connection): the
    /// share's root opens, or the crawl root does (an account may be let into its folder
    /// alone, passing the folders above by the server's traverse bypass; found by a review:
    /// then every error below the crawl root read as an outage, and no sync completed).
    async fn alive(&self) -> bool {
        let opens = |path: smb::UncPath, access: smb::FileAccessMask| async move {
            match self
                .client
                .create_file(&path, &smb::FileCreateArgs::make_open_existing(access))
                .await
            {
                Ok(r) => {
                    let _ = close_resource(r).await;
                    true
                }
                Err(_) => false,
            }
        };
        let read = smb::FileAccessMask::new().with_generic_read(true);
        if opens(self.share.clone(), read).await {
            return true;
        }
        !self.root.is_empty()
            && opens(
                self.unc(&self.root),
                smb::FileAccessMask::new().with_file_read_attributes(true),
            )
            .await
    }
}

/// Files whose DACLs are read ahead together, and how many of those reads are in flight.
const DACL_BATCH: usize = 256;
/// Folders deeper than this below the share are not walked (a bound on link loops the file
/// ids cannot tell).
const MAX_DEPTH: usize = 64;
const DACL_CONCURRENCY: usize = 16;

/// A file's path, its ACL or why not, and the unmapped SIDs seen.
type Read = (String, Result<Acl, String>, BTreeSet<String>);

/// A file's ACL from its DACL (and the share permissions), with the unmapped SIDs seen.
async fn read_acl(session: &Session, sids: &SidMap, cfg: &SmbConfig, rel: String) -> Read {
    let res = session
        .client
        .create_file(
            &session.unc(&rel),
            &smb::FileCreateArgs::make_open_existing(
                smb::FileAccessMask::new().with_read_control(true),
            ),
        )
        .await;
    let file = match res {
        Ok(smb::Resource::File(file)) => file,
        Ok(other) => {
            let _ = close_resource(other).await;
            return (rel, Err("not a regular file".into()), BTreeSet::new());
        }
        Err(e) => return (rel, Err(format!("cannot open: {e}")), BTreeSet::new()),
    };
    let (acl, unmapped) = dacl_of(&file, sids, cfg).await;
    let _ = file.close().await;
    (rel, acl.map_err(mark_busy), unmapped)
}

/// Marks a busy DACL failure's reason ([`BUSY_DACL`]), so that a caller holding only the
/// text can tell it from the file's own state.
fn mark_busy(e: ReadError) -> String {
    match e.busy {
        true => format!("{BUSY_DACL}{}", e.reason),
        false => e.reason,
    }
}

/// The start of the reason of a security query the server was too busy to answer.
const BUSY_DACL: &str = "the server is busy: ";

/// The ACL the open file's DACL gives (see [`dacl`]), intersected with the share permissions.
async fn dacl_of(
    file: &smb::File,
    sids: &SidMap,
    cfg: &SmbConfig,
) -> (Result<Acl, ReadError>, BTreeSet<String>) {
    let aces = match dacl_aces(file).await {
        Ok(aces) => aces,
        Err(e) => {
            // A server short of time or resources says nothing about the file (found by a
            // review: a timed-out security query withdrew the file).
            return (
                Err(ReadError {
                    reason: format!("cannot read the security descriptor (DACL): {e}"),
                    busy: is_busy(&e),
                }),
                BTreeSet::new(),
            );
        }
    };
    let computed = dacl::compute(aces.as_deref(), sids, cfg.null_dacl);
    let acl = computed.acl.and_then(|acl| match &cfg.share_acl {
        Some(share) => dacl::intersect_share(acl, share),
        None => Ok(acl),
    });
    (acl.map_err(ReadError::from), computed.unmapped)
}

/// The ACEs of an open file's or folder's DACL; `None` for a NULL DACL.
async fn dacl_aces(handle: &smb::ResourceHandle) -> smb::Result<Option<Vec<Ace>>> {
    // The DACL alone: smb 0.11's descriptor parser reads the parts in order rather than at
    // their offsets, and Samba may place the DACL after the owner and group SIDs in a
    // different order; with one part the layout is unambiguous. Owner and group do not grant
    // read access by themselves, so the ACL needs only the DACL.
    let info = smb::AdditionalInfo::new().with_dacl_security_information(true);
    let sd = handle.query_security_info(info).await?;
    Ok(sd
        .dacl
        .as_ref()
        .map(|acl| acl.ace.iter().map(ace_of).collect()))
}

/// [`Crawler::files_by_id`] of a listing (id 0: a server without file ids).
fn by_id(files: &[Listed]) -> HashMap<u64, Vec<String>> {
    let mut out: HashMap<u64, Vec<String>> = HashMap::new();
    for f in files.iter().filter(|f| f.file_id != 0) {
        out.entry(f.file_id).or_default().push(f.rel.clone());
    }
    out
}

/// The folder holding `rel` ("" for the share's root).
fn parent_of(rel: &str) -> String {
    rel.rsplit_once('/')
        .map_or(String::new(), |(p, _)| p.to_string())
}

/// Who may reach what is below the folder `rel` by its own DACL ([`dacl::REACH_BITS`]), with
/// the unmapped SIDs seen. Share permissions are applied to each file, not here.
/// A folder's own ACL (who may pass it), the SIDs nothing maps, and whether a failure was the
/// server's own trouble rather than a refusal to the crawler (see `Crawler::folder_outage`).
async fn folder_dacl(
    session: &Session,
    sids: &SidMap,
    cfg: &SmbConfig,
    rel: &str,
) -> (Result<Acl, String>, BTreeSet<String>, bool) {
    let res = session
        .client
        .create_file(
            &session.unc(rel),
            &smb::FileCreateArgs::make_open_existing(
                smb::FileAccessMask::new().with_read_control(true),
            ),
        )
        .await;
    let dir = match res {
        Ok(smb::Resource::Directory(dir)) => dir,
        Ok(other) => {
            let _ = close_resource(other).await;
            return (Err("not a folder".into()), BTreeSet::new(), false);
        }
        Err(e) => {
            let e = ListError::from(e);
            return (
                Err(format!(
                    "cannot open the folder to read its permissions: {e}"
                )),
                BTreeSet::new(),
                // A reply to the open that cannot be read is server trouble, not the folder's.
                !e.denied,
            );
        }
    };
    let aces = dacl_aces(&dir).await;
    let _ = dir.close().await;
    let aces = match aces {
        Ok(aces) => aces,
        Err(e) => {
            let e = ListError::from(e);
            return (
                Err(format!("cannot read the folder's security descriptor: {e}")),
                BTreeSet::new(),
                !e.denied && !e.malformed,
            );
        }
    };
    let c = dacl::compute_for(aces.as_deref(), sids, cfg.null_dacl, dacl::REACH_BITS);
    (c.acl, c.unmapped, false)
}

/// Why a file was not read; `busy`: another program holds it (a sharing violation, a lock
/// conflict) or the server is short of resources, which says nothing about the file.
struct ReadError {
    reason: String,
    busy: bool,
}

impl From<String> for ReadError {
    fn from(reason: String) -> Self {
        Self {
            reason,
            busy: false,
        }
    }
}

/// Whether `e` is a file being busy (STATUS_SHARING_VIOLATION, FILE_LOCK_CONFLICT,
/// LOCK_NOT_GRANTED, INSUFFICIENT_RESOURCES) or a call that timed out on a server that still
/// answers (a loaded server): a passing state, which keeps the indexed version while its ACL
/// stands (found by a review: a timed-out read skipped the file, removing it from the index).
fn is_busy(e: &smb::Error) -> bool {
    matches!(
        e,
        smb::Error::ReceivedErrorMessage(code, _) | smb::Error::UnexpectedMessageStatus(code)
            if matches!(*code, 0xC000_0043 | 0xC000_0054 | 0xC000_0055 | 0xC000_009A)
    ) || matches!(e, smb::Error::OperationTimeout(..))
}

/// An authenticated client on the configured share.
async fn connect(cfg: &SmbConfig) -> Result<Session, String> {
    let mut cc = smb::ClientConfig::default();
    cc.connection.port = Some(cfg.port);
    cc.connection.timeout = Some(cfg.timeout);
    let client = smb::Client::new(cc);
    let share = smb::UncPath::new(&cfg.server)
        .and_then(|u| u.with_share(&cfg.share))
        .map_err(|e| format!("invalid server or share: {e}"))?;
    let user = match &cfg.domain {
        Some(d) => format!("{d}\\{}", cfg.username),
        None => cfg.username.clone(),
    };
    client
        .share_connect(&share, &user, cfg.password.clone())
        .await
        .map_err(|e| {
            format!(
                "cannot connect to \\\\{}\\{} as {user}: {e}",
                cfg.server, cfg.share
            )
        })?;
    Ok(Session {
        client,
        share,
        root: cfg.sub_path.clone(),
    })
}

async fn close_resource(r: smb::Resource) -> smb::Result<()> {
    match r {
        smb::Resource::File(f) => f.close().await,
        smb::Resource::Directory(d) => d.close().await,
        smb::Resource::Pipe(p) => p.close().await,
    }
}

fn ace_of(ace: &smb::ACE) -> Ace {
    use smb::AceValue as V;
    let m = |mask: [u8; 4]| u32::from_le_bytes(mask);
    let (kind, sid, mask) = match &ace.value {
        V::AccessAllowed(a) => (
            AceKind::Allow,
            a.sid.to_string(),
            m(a.access_mask.into_bytes()),
        ),
        V::AccessDenied(a) => (
            AceKind::Deny,
            a.sid.to_string(),
            m(a.access_mask.into_bytes()),
        ),
        V::AccessAllowedCallback(a) => (
            AceKind::OtherAllow,
            a.sid.to_string(),
            m(a.access_mask.into_bytes()),
        ),
        V::AccessDeniedCallback(a) => (
            AceKind::OtherDeny,
            a.sid.to_string(),
            m(a.access_mask.into_bytes()),
        ),
        V::AccessAllowedObject(a) => (
            AceKind::OtherAllow,
            a.sid.to_string(),
            m(a.access_mask.into_bytes()),
        ),
        V::AccessDeniedObject(a) => (
            AceKind::OtherDeny,
            a.sid.to_string(),
            m(a.access_mask.into_bytes()),
        ),
        V::AccessAllowedCallbackObject(a) => (
            AceKind::OtherAllow,
            a.sid.to_string(),
            m(a.access_mask.into_bytes()),
        ),
        V::AccessDeniedCallbackObject(a) => (
            AceKind::OtherDeny,
            a.sid.to_string(),
            m(a.access_mask.into_bytes()),
        ),
        _ => (AceKind::Ignored, String::new(), 0),
    };
    Ace {
        kind,
        sid,
        mask,
        inherit_only: ace.ace_flags.inherit_only(),
    }
}

fn smb_uri(server: &str, share: &str, rel: &str) -> String {
    let mut s = format!("smb://{server}/");
    for (i, part) in std::iter::once(share).chain(rel.split('/')).enumerate() {
        if i > 0 {
            s.push('/');
        }
        for b in part.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    s.push(b as char)
                }
                _ => s.push_str(&format!("%{b:02X}")),
            }
        }
    }
    s
}

impl Crawler {
    async fn send(&self, change: Change) -> Result<(), SyncError> {
        self.sink.send(change).await.map_err(|_| SyncError::Sink)
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

    fn key(&self, rel: &str) -> DocKey {
        DocKey::new(&self.cfg.id, rel)
    }

    /// Relative to the crawl root, for the globs.
    fn scoped<'a>(&self, rel: &'a str) -> &'a str {
        if self.cfg.sub_path.is_empty() {
            rel
        } else {
            rel.strip_prefix(&self.cfg.sub_path)
                .map(|r| r.trim_start_matches('/'))
                .unwrap_or(rel)
        }
    }

    fn selected(&self, rel: &str) -> bool {
        self.filter.selects(self.scoped(rel))
    }

    fn last_known(&self, key: &DocKey) -> Option<IndexedDoc> {
        self.sent.last_known(key)
    }

    /// One job (cancellation drops it at an await). `Ok(true)`: finished.
    async fn job(
        &mut self,
        job: Option<u64>,
        trigger: &'static str,
        work: Work,
    ) -> Result<bool, SyncError> {
        let reconcile = matches!(work, Work::Reconcile { .. });
        self.status
            .set_phase(if reconcile { "crawling" } else { "syncing" });
        let kind = if reconcile { "reconcile" } else { "watch" };
        self.job = self.status.start_job(job, kind, trigger, unix_millis());
        self.held_unvisited = false;
        if matches!(work, Work::Reconcile { full: true, .. }) {
            self.unmapped.clear();
        }
        let outcome = match connect(&self.cfg).await {
            Ok(session) => {
                let r = match work {
                    Work::Reconcile { force, full } => self.sync(&session, force, full).await,
                    Work::Paths(paths) => self.sync_paths(&session, paths).await,
                };
                let _ = tokio::time::timeout(Duration::from_secs(2), session.client.close()).await;
                r
            }
            Err(e) => Err(SyncError::Outage(e)),
        };
        let now = unix_millis();
        let state = match outcome {
            Err(SyncError::Sink) => return Err(SyncError::Sink),
            Err(SyncError::Outage(why)) => {
                self.status.raise(Alarm::Outage, why.clone());
                self.status
                    .finish_job(self.job, JobState::Failed(why.clone()), now);
                self.status.set_phase("failed");
                return Err(SyncError::Outage(why));
            }
            Ok(Outcome::Held(why)) => {
                tracing::warn!(connector = %self.cfg.id, "{why}");
                self.held_unvisited = true;
                self.status.clear(Alarm::Outage);
                self.status.raise(Alarm::DeletionProtection, why.clone());
                JobState::Blocked(why)
            }
            Ok(Outcome::Blocked(why)) => {
                tracing::warn!(connector = %self.cfg.id, "{why}");
                self.status.clear(Alarm::Outage);
                self.status.raise(Alarm::DeletionProtection, why.clone());
                JobState::Blocked(why)
            }
            Ok(Outcome::Done) => {
                self.status.clear(Alarm::Outage);
                if reconcile {
                    // A watch job's few paths say nothing of deletions a reconciliation held.
                    self.status.clear(Alarm::DeletionProtection);
                    self.watch_deleted = 0;
                }
                if self.unmapped.is_empty() {
                    self.status.clear(Alarm::Unmapped);
                } else {
                    let list: Vec<&str> =
                        self.unmapped.iter().take(10).map(String::as_str).collect();
                    let msg = format!(
                        "unmapped SIDs (their allow ACEs are ignored, their deny ACEs skip the file; map them in sid_principals): {}{}",
                        list.join(", "),
                        if self.unmapped.len() > 10 {
                            ", …"
                        } else {
                            ""
                        }
                    );
                    tracing::warn!(connector = %self.cfg.id, sids = %list.join(","), "unmapped SIDs");
                    self.status.raise(Alarm::Unmapped, msg);
                }
                JobState::Succeeded
            }
        };
        self.status.finish_job(self.job, state, now);
        self.status.set_phase(if self.status.snapshot().paused {
            "paused"
        } else {
            "watching"
        });
        if !reconcile || self.held_unvisited {
            return Ok(true);
        }
        self.status.full_scan_done(now);
        self.send(Change::Checkpoint {
            connector: self.cfg.id.clone(),
            checkpoint: serde_json::json!({ "last_full_scan_ms": now }),
        })
        .await?;
        Ok(true)
    }

    async fn sync(
        &mut self,
        session: &Session,
        force: bool,
        full: bool,
    ) -> Result<Outcome, SyncError> {
        self.reach.clear();
        self.folder_outage.clear();
        // The passwd and group files change (a uid given to someone else, a group renamed): read
        // again each pass, keeping the last names when they cannot be read; each file's ACL is
        // computed with them (as the fs and nfs connectors do).
        if let Some(names) = PosixNames::try_load(&self.cfg.passwd_file, &self.cfg.group_file) {
            self.sids.names = names;
        }
        // List everything first: a listing that fails is an outage, and deletions are decided
        // only from a complete listing.
        let walked = self.walk(session, self.cfg.sub_path.clone()).await?;
        let files = &walked.files;
        self.files_by_id = by_id(files);
        // A link's target that the filter leaves out (a review: `open/pay.txt -> ../hr/.pay.txt`
        // under the default `**/.*` exclude) is still a path of the file Samba checks.
        // Recorded whether or not a selected file shares the id now: a link made later, while
        // watched, finds its target's path here (a second review).
        for (id, rel) in &walked.unselected {
            self.files_by_id.entry(*id).or_default().push(rel.clone());
        }
        self.folder_aliases = walked.folder_aliases.clone();
        let indexed = self.indexed.native_ids(&self.cfg.id);
        let root_refused = walked
            .unlisted
            .iter()
            .any(|(d, e)| *d == self.cfg.sub_path && e.denied);
        if files.is_empty() && !indexed.is_empty() && !force && !root_refused {
            return Ok(Outcome::Held(format!(
                "the listing of \\\\{}\\{} is empty while {} documents are indexed; nothing was deleted (an unmounted or emptied share?). If that is intended, run `docent sync {} --force-deletions`",
                self.cfg.server,
                self.cfg.share,
                indexed.len(),
                self.cfg.id
            )));
        }
        let mut seen = BTreeSet::new();
        for batch in files.chunks(DACL_BATCH) {
            let acls = if full {
                HashMap::new()
            } else {
                self.read_acls_ahead(session, batch).await
            };
            for f in batch {
                seen.insert(f.rel.clone());
                self.visit(session, f, full, acls.get(&f.rel)).await?;
            }
        }
        let known = self.sent.known_ids();
        self.withdraw_denied(&walked, &known).await?;
        let gone: Vec<String> = known
            .into_iter()
            .filter(|id| !seen.contains(id) && !walked.under_unlisted(id))
            .collect();
        let (n, total) = (gone.len() as u64, indexed.len() as u64);
        if !force
            && let Some(why) = docent_connector_api::jobs::deletion_protection(
                &self.cfg.id,
                n,
                total,
                self.cfg.deletion_protection_percent,
                self.cfg.deletion_protection_min_docs,
            )
        {
            return Ok(Outcome::Blocked(why));
        }
        for id in gone {
            self.sent.remember(&id, None);
            self.send(Change::Delete(DocKey::new(&self.cfg.id, id)))
                .await?;
            self.count(|j| j.counts.deleted += 1);
        }
        Ok(Outcome::Done)
    }

    /// Withdraws (skips, with the reason) what is known below a folder the crawler was refused:
    /// its ACL can no longer be checked (a folder closed to the crawler is usually closed to
    /// others too). Not a deletion; it comes back when the folder can be listed again.
    async fn withdraw_denied(
        &mut self,
        walked: &Walked,
        known: &BTreeSet<String>,
    ) -> Result<(), SyncError> {
        for id in known {
            let Some((dir, why)) = walked
                .unlisted
                .iter()
                .find(|(d, e)| e.denied && within(id, d))
            else {
                continue;
            };
            self.sent.remember(id, None);
            self.count(|j| j.counts.failed += 1);
            self.send(Change::Skipped {
                key: self.key(id),
                reason: format!("withdrawn: the crawler may not list {dir:?} ({why})"),
            })
            .await?;
        }
        Ok(())
    }

    /// Every selected file below `from` (a folder, relative to the share), sorted by path.
    /// `from` that cannot be listed, or a lost connection, is an outage; a folder below it that
    /// cannot be listed is reported and left out (see [`Walked`]), and one whose file id was
    /// already walked (a server-side link back up the tree) is not walked again.
    async fn walk(&self, session: &Session, from: String) -> Result<Walked, SyncError> {
        let mut walked = Walked::default();
        let mut dir_ids: HashMap<u64, String> = HashMap::new();
        let mut dirs = VecDeque::from([from.clone()]);
        while let Some(dir) = dirs.pop_front() {
            let outage = |e: &dyn std::fmt::Display| {
                SyncError::Outage(format!(
                    "cannot list {:?} on \\\\{}\\{}: {e}",
                    if dir.is_empty() { "/" } else { dir.as_str() },
                    self.cfg.server,
                    self.cfg.share
                ))
            };
            let entries = match session.list(&dir).await {
                Ok(entries) => entries,
                // The crawl root refused to the crawler (an admin closed it): its documents
                // are withdrawn like a folder's below it, not kept under their old ACLs as in
                // an outage.
                Err(e) if dir == from && e.denied && session.alive().await => {
                    self.count_failure(&dir, &format!("folder cannot be listed: {e}"));
                    walked.unlisted.push((dir, e));
                    continue;
                }
                Err(e) if dir == from || !session.alive().await => return Err(outage(&e)),
                Err(e) => {
                    self.count_failure(&dir, &format!("folder cannot be listed: {e}"));
                    walked.unlisted.push((dir, e));
                    continue;
                }
            };
            let mut entries = entries;
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            for (rel, is_dir, listed) in entries {
                if is_dir {
                    if self.filter.excludes(self.scoped(&rel)) {
                        continue;
                    }
                    // 0: a server without file ids; depth alone then bounds a loop. A folder
                    // reached again is walked under the path met first, which is the same at
                    // every sync (listings are taken in name order, folders breadth first):
                    // its documents are indexed under one path, its narrowing always
                    // computed, and none is kept under another path with a stale ACL.
                    if listed.file_id != 0 {
                        if let Some(first) = dir_ids.get(&listed.file_id) {
                            self.count_failure(
                                &rel,
                                "a folder already walked under another path (a link); not \
                                 walked again",
                            );
                            // A second way in, unless it lies inside the first (a link back
                            // up the tree, which the path met first is the real one of).
                            if !within(&rel, first) {
                                walked.folder_aliases.push((first.clone(), rel.clone()));
                            }
                            continue;
                        }
                        dir_ids.insert(listed.file_id, rel.clone());
                    }
                    // Too deep: left as unlisted, so what is indexed below it stays.
                    if rel.matches('/').count() >= MAX_DEPTH {
                        let why = "folders nested too deep; not walked";
                        self.count_failure(&rel, why);
                        walked.unlisted.push((
                            rel.clone(),
                            ListError {
                                message: why.to_string(),
                                denied: false,
                                malformed: false,
                            },
                        ));
                        continue;
                    }
                    dirs.push_back(rel);
                } else if self.selected(&rel) {
                    walked.files.push(listed);
                } else if self.cfg.folder_permissions && listed.file_id != 0 {
                    walked.unselected.push((listed.file_id, rel));
                }
            }
        }
        walked.files.sort_by(|a, b| a.rel.cmp(&b.rel));
        Ok(walked)
    }

    /// The paths change notifications named, looked up again: a file is visited (read only if
    /// its version or ACL changed), a folder walked, and a path the parent's listing no longer
    /// shows is deleted with everything indexed below it. Deletion protection applies.
    async fn sync_paths(
        &mut self,
        session: &Session,
        paths: BTreeSet<String>,
    ) -> Result<Outcome, SyncError> {
        self.reach.clear();
        self.folder_outage.clear();
        let root = &self.cfg.sub_path;
        let mut visit = Vec::new();
        // Folders below the notified ones that could not be listed.
        let mut unlisted = Walked::default();
        let mut gone = BTreeSet::new();
        let mut unselected_now: Vec<(u64, String)> = Vec::new();
        for rel in paths {
            let inside = root.is_empty() || rel.starts_with(&format!("{root}/"));
            if !inside
                || rel
                    .split('/')
                    .any(|p| p.is_empty() || p == "." || p == "..")
            {
                continue;
            }
            let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel.as_str()));
            let entries = match session.list(parent).await {
                Ok(entries) => Some(entries),
                Err(e) => {
                    if !session.alive().await {
                        return Err(SyncError::Outage(format!(
                            "lost the connection to \\\\{}\\{} while looking up {rel}: {e}",
                            self.cfg.server, self.cfg.share
                        )));
                    }
                    // Gone only when the grandparent's listing shows the parent gone (a folder
                    // deleted or renamed); a parent that exists but cannot be listed, or a
                    // deeper removal, is left to the reconciliation — never a deletion on doubt.
                    let (grand, pname) = parent.rsplit_once('/').unwrap_or(("", parent));
                    match session.list(grand).await {
                        Ok(up)
                            if !parent.is_empty()
                                // Names compared as the server does, ignoring case (a
                                // review: `path = "team/hr"` on a folder `Team/HR` read the
                                // crawl root as gone on a failed listing).
                                && !up.iter().any(|(c, _, _)| {
                                    c.rsplit('/')
                                        .next()
                                        .is_some_and(|n| n.to_lowercase() == pname.to_lowercase())
                                }) =>
                        {
                            None
                        }
                        _ => {
                            tracing::debug!(connector = %self.cfg.id, path = %docent_connector_api::log_safe(&rel), error = %docent_connector_api::log_safe(&e.to_string()), "notified path not looked up; the reconciliation will");
                            continue;
                        }
                    }
                }
            };
            let found = entries
                .into_iter()
                .flatten()
                .find(|(child, _, _)| child.rsplit('/').next() == Some(name));
            match found {
                Some((child, true, _)) => {
                    if !self.filter.excludes(self.scoped(&child)) {
                        let walked = self.walk(session, child).await?;
                        visit.extend(walked.files);
                        unlisted.unlisted.extend(walked.unlisted);
                        for alias in walked.folder_aliases {
                            if !self.folder_aliases.contains(&alias) {
                                self.folder_aliases.push(alias);
                            }
                        }
                    }
                }
                Some((child, false, listed)) => {
                    if self.selected(&child) {
                        visit.push(listed);
                    } else {
                        // Not indexed, but still a path of its file: a link to it keeps
                        // being narrowed by its folders (a second review).
                        if self.cfg.folder_permissions && listed.file_id != 0 {
                            unselected_now.push((listed.file_id, child.clone()));
                        }
                        gone.insert(child);
                    }
                }
                None => {
                    gone.insert(rel);
                }
            }
        }
        let gone_paths: BTreeSet<String> = gone
            .iter()
            .filter(|g| !unselected_now.iter().any(|(_, r)| r == *g))
            .cloned()
            .collect();
        self.other_paths_too(session, &mut visit, &gone_paths)
            .await?;
        for (id, rel) in unselected_now {
            let paths = self.files_by_id.entry(id).or_default();
            if !paths.contains(&rel) {
                paths.push(rel);
            }
        }
        let indexed = self.indexed.native_ids(&self.cfg.id);
        let known = self.sent.known_ids();
        self.withdraw_denied(&unlisted, &known).await?;
        let seen: BTreeSet<&str> = visit.iter().map(|f| f.rel.as_str()).collect();
        let deletes: Vec<String> = known
            .iter()
            .filter(|id| !seen.contains(id.as_str()) && gone.iter().any(|g| is_below(id, g)))
            .cloned()
            .collect();
        let held = if deletes.is_empty() {
            None
        } else if let Some(why) = self
            .status
            .snapshot()
            .alarms
            .get(&Alarm::DeletionProtection)
        {
            // A hold stands (a reconciliation's, also across a restart, which starts the count
            // of the notifications' deletions again): until it is lifted, they wait too. Its
            // reason as it is (the job's outcome raises the alarm again).
            Some(why.clone())
        } else {
            docent_connector_api::jobs::deletion_protection(
                &self.cfg.id,
                self.watch_deleted + deletes.len() as u64,
                indexed.len() as u64 + self.watch_deleted,
                self.cfg.deletion_protection_percent,
                self.cfg.deletion_protection_min_docs,
            )
            .map(|why| format!("{why} (the change notifications since the last reconciliation)"))
        };
        // Held deletions hold back nothing else: an edit or a narrowed ACL among the notified
        // files still reaches the index now.
        for f in &visit {
            self.visit(session, f, false, None).await?;
        }
        if let Some(why) = held {
            return Ok(Outcome::Blocked(why));
        }
        for id in deletes {
            self.sent.remember(&id, None);
            self.send(Change::Delete(DocKey::new(&self.cfg.id, id)))
                .await?;
            self.count(|j| j.counts.deleted += 1);
            self.watch_deleted += 1;
        }
        Ok(Outcome::Done)
    }

    /// For notified files: records their paths by file id ([`Crawler::files_by_id`]), forgets
    /// paths that are `gone` or no longer lead to the same file, and adds the file's other
    /// paths to `visit` (a change of its DACL made through one path is theirs too; a new link
    /// to a file narrows both). A path whose folder cannot be listed is visited as the same
    /// file, so that it is read again (or skipped) rather than left with its old ACL.
    async fn other_paths_too(
        &mut self,
        session: &Session,
        visit: &mut Vec<Listed>,
        gone: &BTreeSet<String>,
    ) -> Result<(), SyncError> {
        if !gone.is_empty() {
            for paths in self.files_by_id.values_mut() {
                paths.retain(|p| !gone.iter().any(|g| is_below(p, g)));
            }
            self.files_by_id.retain(|_, paths| !paths.is_empty());
            self.folder_aliases
                .retain(|(a, b)| !gone.iter().any(|g| is_below(a, g) || is_below(b, g)));
        }
        let mut visiting: BTreeSet<String> = visit.iter().map(|f| f.rel.clone()).collect();
        let mut listings: HashMap<String, Option<Entries>> = HashMap::new();
        let mut extra = Vec::new();
        for f in visit.iter().filter(|f| f.file_id != 0) {
            let paths = self.files_by_id.entry(f.file_id).or_default();
            if !paths.contains(&f.rel) {
                paths.push(f.rel.clone());
            }
            let others: Vec<String> = paths.iter().filter(|p| **p != f.rel).cloned().collect();
            for other in others {
                let folder = parent_of(&other);
                if !listings.contains_key(&folder) {
                    let listed = session.list(&folder).await.ok();
                    listings.insert(folder.clone(), listed);
                }
                let Some(entries) = &listings[&folder] else {
                    if !session.alive().await {
                        return Err(SyncError::Outage(format!(
                            "lost the connection to \\\\{}\\{} while looking up {other}",
                            self.cfg.server, self.cfg.share
                        )));
                    }
                    if self.selected(&other) && visiting.insert(other.clone()) {
                        extra.push(Listed {
                            rel: other.clone(),
                            ..f.clone()
                        });
                    }
                    continue;
                };
                match entries
                    .iter()
                    .find(|(c, is_dir, l)| *c == other && !is_dir && l.file_id == f.file_id)
                {
                    Some((_, _, l)) => {
                        if self.selected(&other) && visiting.insert(other.clone()) {
                            extra.push(l.clone());
                        }
                    }
                    None => {
                        if let Some(paths) = self.files_by_id.get_mut(&f.file_id) {
                            paths.retain(|p| *p != other);
                        }
                    }
                }
            }
        }
        visit.extend(extra);
        Ok(())
    }

    async fn visit(
        &mut self,
        session: &Session,
        f: &Listed,
        full: bool,
        known_acl: Option<&Result<Acl, String>>,
    ) -> Result<(), SyncError> {
        let key = self.key(&f.rel);
        let prev = self.last_known(&key);
        let known = prev.is_some();
        // Content unchanged and the DACL (read ahead, concurrently) gives the indexed ACL.
        if !full
            && let (Some(p), Some(Ok(acl))) = (&prev, known_acl)
            && p.version == f.version(&self.acl_config)
            && p.acl_fingerprint == acl.fingerprint()
        {
            self.count(|j| {
                j.counts.scanned += 1;
                j.counts.unchanged += 1;
            });
            return Ok(());
        }
        let indexed_acl = prev.as_ref().map(|p| p.acl_fingerprint.clone());
        match self.read_if_changed(session, f, prev, full).await {
            Ok(Some(doc)) => {
                self.sent.remember(
                    &f.rel,
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
                self.send(Change::Upsert(Box::new(doc))).await
            }
            Ok(None) => {
                self.count(|j| {
                    j.counts.scanned += 1;
                    j.counts.unchanged += 1;
                });
                Ok(())
            }
            Err(ReadError { reason, busy }) => {
                // A file another program holds without sharing it for reading (a mailbox, a
                // database) keeps its indexed version while its ACL, read again through an open
                // that asks only for the security descriptor (which sharing does not block),
                // is the indexed one: it is busy, not gone or closed to readers.
                if busy && let Some(fp) = &indexed_acl {
                    let (_, acl, unmapped) =
                        read_acl(session, &self.sids, &self.cfg, f.rel.clone()).await;
                    self.unmapped.extend(unmapped);
                    // Only the security query failing again keeps it unconfirmed: a folder
                    // above that now refuses readers (`narrowed`) withdraws it as before. Who
                    // may pass each folder above is read first, as for an open that succeeds
                    // (a review: unread, a busy file alone in its folder, or named by a
                    // notification, was withdrawn).
                    let acl = match acl {
                        Ok(a) => {
                            let mut reached = Ok(());
                            match self.paths_of(f) {
                                Ok(paths) => {
                                    for rel in paths {
                                        if let Err(e) =
                                            self.folder_reach(session, &parent_of(&rel)).await
                                        {
                                            reached = Err(e);
                                            break;
                                        }
                                    }
                                }
                                Err(e) => reached = Err(e),
                            }
                            reached.and_then(|()| self.narrowed(f, a)).map_err(|_| None)
                        }
                        Err(why) => Err(Some(why)),
                    };
                    match acl {
                        Ok(acl) if acl.fingerprint() == *fp => {
                            self.count(|j| j.counts.scanned += 1);
                            self.count_failure(
                                &f.rel,
                                &format!("{reason}; the indexed version stays"),
                            );
                            return Ok(());
                        }
                        // The server, short of time or resources, cannot say the ACL either
                        // (both security queries busy, never a DACL that now refuses): as if
                        // the walk had not reached the file (an outage keeps it too).
                        Err(Some(why))
                            if why.starts_with(BUSY_DACL)
                                && reason.contains("(DACL)")
                                && session.alive().await =>
                        {
                            self.count(|j| j.counts.scanned += 1);
                            self.count_failure(
                                &f.rel,
                                &format!("{reason}; {why}; the indexed version stays"),
                            );
                            return Ok(());
                        }
                        _ => {}
                    }
                }
                // A failure because the server went away, or could not say who may pass a
                // folder above, is an outage, not this file's fault: skipping it would remove
                // it from the index.
                if let Some(why) = self.folder_trouble(f) {
                    return Err(SyncError::Outage(format!(
                        "\\\\{}\\{}: {why}",
                        self.cfg.server, self.cfg.share
                    )));
                }
                if !session.alive().await {
                    return Err(SyncError::Outage(format!(
                        "lost the connection to \\\\{}\\{} while reading {}: {reason}",
                        self.cfg.server, self.cfg.share, f.rel
                    )));
                }
                self.count(|j| j.counts.scanned += 1);
                self.count_failure(&f.rel, &reason);
                self.sent.remember(&f.rel, None);
                self.send(Change::Skipped { key, reason }).await
            }
        }
    }

    /// The ACLs of the files in `batch` whose content is unchanged, read `DACL_CONCURRENCY` at a
    /// time (one open, one security query, one close each: round trips, not bandwidth, are the
    /// cost, so they overlap). A failure here is only a hint: the file is then visited in full.
    async fn read_acls_ahead(
        &mut self,
        session: &Session,
        batch: &[Listed],
    ) -> HashMap<String, Result<Acl, String>> {
        let unchanged: Vec<&Listed> = batch
            .iter()
            .filter(|f| {
                self.last_known(&self.key(&f.rel))
                    .is_some_and(|p| p.version == f.version(&self.acl_config))
            })
            .collect();
        let folders: BTreeSet<String> = unchanged
            .iter()
            .flat_map(|f| self.paths_of(f).unwrap_or_default())
            .map(|rel| parent_of(&rel))
            .collect();
        for folder in &folders {
            // An error is kept with the folder; `narrowed` gives it to each file below.
            let _ = self.folder_reach(session, folder).await;
        }
        let n = unchanged.len() as u64;
        self.count(|j| j.counts.permission_reads += n);
        let (sids, cfg) = (&self.sids, &*self.cfg);
        // Boxed as `Send` futures up front: a stream of closures' futures borrowing from here
        // trips the compiler's higher-ranked `Send` check.
        let reads: Vec<futures::future::BoxFuture<'_, Read>> = unchanged
            .into_iter()
            .map(|f| read_acl(session, sids, cfg, f.rel.clone()).boxed())
            .collect();
        let read: Vec<Read> = futures::stream::iter(reads)
            .buffer_unordered(DACL_CONCURRENCY)
            .collect()
            .await;
        let listed: HashMap<&str, &Listed> = batch.iter().map(|f| (f.rel.as_str(), f)).collect();
        let mut out = HashMap::with_capacity(read.len());
        for (rel, acl, unmapped) in read {
            self.unmapped.extend(unmapped);
            let acl = acl.and_then(|acl| match listed.get(rel.as_str()) {
                Some(f) => self.narrowed(f, acl),
                None => Err("not in the listing".into()),
            });
            out.insert(rel, acl);
        }
        out
    }

    /// Who may reach what is below `folder` (see [`Crawler::reach`]), read on first use in a
    /// pass. With `folder_permissions = false` (a Windows server, where users bypass traverse
    /// checking), everyone.
    async fn folder_reach(&mut self, session: &Session, folder: &str) -> Result<Acl, String> {
        if !self.cfg.folder_permissions {
            return Ok(Acl {
                allow: BTreeSet::from([Principal::Everyone]),
                deny: BTreeSet::new(),
            });
        }
        if let Some(r) = self.reach.get(folder) {
            return r.clone();
        }
        // From the share's root down: each folder's own DACL, narrowed by its parent's reach.
        let mut path = String::new();
        let mut reach: Option<Acl> = None;
        for part in std::iter::once("").chain(folder.split('/').filter(|p| !p.is_empty())) {
            if !part.is_empty() {
                if !path.is_empty() {
                    path.push('/');
                }
                path.push_str(part);
            }
            let r = match self.reach.get(&path) {
                Some(r) => r.clone(),
                None => {
                    self.count(|j| j.counts.permission_reads += 1);
                    let (own, unmapped, trouble) =
                        folder_dacl(session, &self.sids, &self.cfg, &path).await;
                    self.unmapped.extend(unmapped);
                    if trouble && let Err(why) = own {
                        // Not kept: the server's trouble says nothing of who may pass.
                        let why = format!(
                            "reading the permissions of folder {:?} failed: {why}",
                            if path.is_empty() { "/" } else { path.as_str() }
                        );
                        self.folder_outage.insert(path.clone(), why.clone());
                        return Err(why);
                    }
                    let r = own
                        .and_then(|own| match &reach {
                            Some(above) => dacl::intersect_share(own, above),
                            None => Ok(own),
                        })
                        .map_err(|why| {
                            format!(
                                "folder {:?} lets nobody Docent knows reach it: {why}",
                                if path.is_empty() { "/" } else { path.as_str() }
                            )
                        });
                    self.folder_outage.remove(&path);
                    self.reach.insert(path.clone(), r.clone());
                    r
                }
            };
            match r {
                Ok(acl) => reach = Some(acl),
                Err(e) => {
                    self.reach.insert(folder.to_string(), Err(e.clone()));
                    return Err(e);
                }
            }
        }
        let r = reach.ok_or_else(|| "no folder".to_string());
        self.reach.insert(folder.to_string(), r.clone());
        r
    }

    /// The server's trouble reading the permissions of a folder above one of `f`'s paths, if a
    /// read of one failed so and none succeeded since (see [`Crawler::folder_outage`]).
    fn folder_trouble(&self, f: &Listed) -> Option<String> {
        if self.folder_outage.is_empty() {
            return None;
        }
        let paths = self.paths_of(f).unwrap_or_else(|_| vec![f.rel.clone()]);
        paths.iter().find_map(|p| {
            let folder = parent_of(p);
            let mut above = vec![String::new()];
            let mut at = String::new();
            for part in folder.split('/').filter(|s| !s.is_empty()) {
                if !at.is_empty() {
                    at.push('/');
                }
                at.push_str(part);
                above.push(at.clone());
            }
            above
                .iter()
                .find_map(|d| self.folder_outage.get(d).cloned())
        })
    }

    /// The paths the file `f` is reached by: its own, the others listed with its file id
    /// ([`Crawler::files_by_id`]), and each of those under another way into a folder above it
    /// ([`Crawler::folder_aliases`]). Too many is the file's reason to be skipped.
    fn paths_of(&self, f: &Listed) -> Result<Vec<String>, String> {
        let mut paths = vec![f.rel.clone()];
        if f.file_id != 0
            && let Some(others) = self.files_by_id.get(&f.file_id)
        {
            paths.extend(others.iter().filter(|p| **p != f.rel).cloned());
        }
        for (walked, other) in &self.folder_aliases {
            for i in 0..paths.len() {
                let rest = if walked.is_empty() {
                    Some(paths[i].as_str())
                } else {
                    paths[i]
                        .strip_prefix(walked.as_str())
                        .and_then(|r| r.strip_prefix('/'))
                };
                if let Some(rest) = rest {
                    paths.push(format!("{other}/{rest}"));
                }
            }
            if paths.len() > MAX_PATHS {
                break;
            }
        }
        if paths.len() > MAX_PATHS {
            return Err(format!(
                "reached by more than {MAX_PATHS} paths (links or hard links): too many to tell \
                 who may reach it"
            ));
        }
        Ok(paths)
    }

    /// `acl` of the file `f`, narrowed by the reach of its folder, and of the folders of its
    /// other paths ([`Crawler::paths_of`], read before).
    fn narrowed(&self, f: &Listed, acl: Acl) -> Result<Acl, String> {
        if !self.cfg.folder_permissions {
            return Ok(acl);
        }
        let mut acl = acl;
        for path in self.paths_of(f)? {
            acl = match self.reach.get(&parent_of(&path)) {
                Some(Ok(reach)) => dacl::intersect_share(acl, reach).map_err(|why| {
                    format!("its folders let nobody who may read it reach it ({why})")
                })?,
                Some(Err(e)) => return Err(e.clone()),
                None => return Err("its folder's permissions were not read".into()),
            };
        }
        Ok(acl)
    }

    /// The document when new or changed, `None` when unchanged, or why it cannot be indexed.
    async fn read_if_changed(
        &mut self,
        session: &Session,
        f: &Listed,
        prev: Option<IndexedDoc>,
        full: bool,
    ) -> Result<Option<SourceDocument>, ReadError> {
        let res = session
            .client
            .create_file(
                &session.unc(&f.rel),
                &smb::FileCreateArgs::make_open_existing(
                    smb::FileAccessMask::new().with_generic_read(true),
                ),
            )
            .await
            .map_err(|e| ReadError {
                busy: is_busy(&e),
                reason: format!("cannot open: {e}"),
            })?;
        let file = match res {
            smb::Resource::File(file) => file,
            other => {
                let _ = close_resource(other).await;
                return Err(String::from("not a regular file").into());
            }
        };
        let r = self.read_open(session, &file, f, prev, full).await;
        let _ = file.close().await;
        r
    }

    async fn read_open(
        &mut self,
        session: &Session,
        file: &smb::File,
        f: &Listed,
        prev: Option<IndexedDoc>,
        full: bool,
    ) -> Result<Option<SourceDocument>, ReadError> {
        self.count(|j| j.counts.permission_reads += 1);
        let (acl, unmapped) = dacl_of(file, &self.sids, &self.cfg).await;
        self.unmapped.extend(unmapped);
        for rel in self.paths_of(f)? {
            self.folder_reach(session, &parent_of(&rel)).await?;
        }
        let acl = self.narrowed(f, acl?)?;
        let version = f.version(&self.acl_config);
        if let Some(prev) = &prev
            && prev.version == version
            && prev.acl_fingerprint == acl.fingerprint()
            && !full
        {
            return Ok(None);
        }
        let max = self.cfg.max_file_size;
        if f.size > max {
            return Err(ReadError::from(format!(
                "too large: {} bytes > max_file_size {max} bytes",
                f.size
            )));
        }
        let mut content = Vec::with_capacity(f.size.min(max) as usize);
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = file
                .read_block(&mut chunk, content.len() as u64, None, false)
                .await
                .map_err(|e| ReadError {
                    busy: e.kind() == std::io::ErrorKind::TimedOut
                        || e.get_ref()
                            .and_then(|inner| inner.downcast_ref::<smb::Error>())
                            .is_some_and(is_busy),
                    reason: format!("unreadable: {e}"),
                })?;
            if n == 0 {
                break;
            }
            content.extend_from_slice(&chunk[..n]);
            if content.len() as u64 > max {
                return Err(ReadError::from(format!(
                    "too large: over max_file_size {max} bytes"
                )));
            }
        }
        let name_hint = f.rel.rsplit('/').next().unwrap_or(&f.rel).to_string();
        let mut attributes = BTreeMap::new();
        attributes.insert("share_path".to_string(), f.rel.clone());
        attributes.insert("share".to_string(), self.cfg.share.clone());
        if let Some((_, ext)) = name_hint.rsplit_once('.') {
            attributes.insert("file_type".to_string(), ext.to_lowercase());
        }
        // FILETIME: 100 ns ticks since 1601-01-01.
        let modified_at =
            (f.last_write != 0).then(|| (f.last_write / 10_000_000) as i64 - 11_644_473_600);
        Ok(Some(SourceDocument {
            key: self.key(&f.rel),
            uri: smb_uri(&self.cfg.server, &self.cfg.share, &f.rel),
            title: None,
            mime: None,
            name_hint,
            content,
            version,
            modified_at,
            attributes,
            acl,
            job: Some(self.job),
            reparse: full,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A timed-out call is passing, like a busy file: the indexed version stays while its ACL
    /// does (found by a review: a timed-out read removed the file from the index).
    #[test]
    fn a_timed_out_call_counts_as_busy() {
        assert!(is_busy(&smb::Error::OperationTimeout(
            smb::error::TimedOutTask::ReceiveNextMessage,
            std::time::Duration::from_secs(30)
        )));
        assert!(is_busy(&smb::Error::UnexpectedMessageStatus(0xC000_0043)));
        assert!(!is_busy(&smb::Error::UnexpectedMessageStatus(0xC000_0022)));
    }

    #[test]
    fn the_shares_root_holds_every_id_a_folder_only_its_own() {
        assert!(within("a/b.txt", ""));
        assert!(within("top.txt", ""));
        assert!(within("a/b.txt", "a"));
        assert!(!within("ab/c.txt", "a"));
        // `is_below` alone never matches the root (the deletions of a vanished folder use it).
        assert!(!is_below("a/b.txt", ""));
    }

    #[test]
    fn uri_percent_encodes_each_segment() {
        assert_eq!(
            smb_uri("fs1", "Team Docs", "a b/ü#.txt"),
            "smb://fs1/Team%20Docs/a%20b/%C3%BC%23.txt"
        );
    }
}
