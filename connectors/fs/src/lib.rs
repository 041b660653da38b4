//! File-share connector: crawls one or more roots, then watches them with `notify` and rescans
//! them periodically (network mounts drop events; the periodic reconciliation is what makes the
//! index converge regardless). Each directory above a root is watched too, for its own
//! changes: who may enter it narrows every file below, and a change walks those roots at once.
//!
//! Invariants:
//! - every upsert carries an ACL derived from the file's POSIX owner, group and mode, narrowed
//!   by who may enter each directory from the root down to it (search permission), possibly
//!   replaced or extended by configured rules; a file nobody may read is skipped, never
//!   indexed. Where a POSIX access control list (`setfacl`) is set, the list decides instead
//!   of the mode bits (`posix_list`: never wider than the list, checked against the kernel in
//!   `kernel_check.rs`); a list that cannot be used skips the file;
//! - an unchanged file (same version and ACL as indexed) is not read;
//! - symbolic links are not followed unless `follow_symlinks` is set; when they are, a file is
//!   indexed only if its resolved path lies inside a root, and its ACL is computed from the
//!   resolved path (path rules) and the target's own owner and mode, never from the link's
//!   path; loops, links leaving the roots, special files and oversized files are reported as
//!   skipped with a reason, and the crawl goes on (a link to a directory outside the roots is
//!   reported once and not walked);
//! - a file whose path is not valid UTF-8 is reported and not indexed (its id would be a lossy
//!   spelling another file's name can share);
//! - an error is not a deletion: documents under a directory the walk could not list stay
//!   (except under one the crawler is refused, "permission denied": those are withdrawn,
//!   skipped with the reason, since their ACL can no longer be checked), a root that lists no
//!   files while documents under it are indexed is reported as an outage (unless an admin
//!   forces the deletions), so is a root or a directory below one that was a mount point when
//!   last walked (kept in the checkpoint) and is not one now, whatever the directory left
//!   behind holds or refuses, and
//!   a watched path is deleted only when its file is not found (another I/O error keeps it);
//! - a deletion or move is acted on even when the upsert it cancels has not been committed yet,
//!   and "unchanged" is judged against the last change sent, not only the index
//!   (`Scanner::sent` remembers what the index may not show yet);
//! - what is indexed is what was read: the file is opened without following a last-component
//!   link, its real path is read back from the open descriptor and checked against the roots,
//!   and its ACL and version come from that descriptor's metadata (a file swapped between the
//!   check and the read cannot borrow another path's ACL), and read again when it changed during
//!   the read (a narrowing `chmod` just before a write); with ACL rules, a file with several
//!   hard links is skipped, since one path cannot tell its ACL; without, an event on one of its
//!   names checks the names the walks met again too.

mod acl_rules;
mod config;
#[cfg(test)]
mod kernel_check;
pub mod posix_list;
mod posix_names;

pub use acl_rules::{
    AclRule, RawAclRule, RuleMode, configured_rule, configured_rules, replaced as acl_replaced,
};
pub use config::Factory;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use docent_connector_api::jobs::{ConnectorCommand, JobState};
use docent_connector_api::paths::{GlobError, PathFilter};
use docent_connector_api::{
    Acl, Alarm, Change, Connector, ConnectorContext, ConnectorError, DocKey, IndexedDoc,
    IndexedState, Principal, SentLog, SourceDocument, StatusHandle,
};
use futures::FutureExt;
use futures::future::BoxFuture;
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use posix_list::{ListEntry, list_acl, list_dir_acl};
pub use posix_names::{PosixNames, memberships};

/// Validated configuration of one file-share connector.
#[derive(Debug, Clone)]
pub struct FsConfig {
    pub id: String,
    pub roots: Vec<PathBuf>,
    /// Globs matched against the path relative to its root; empty means everything.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub max_file_size: u64,
    pub reconcile_interval: Duration,
    /// How long to gather filesystem events before acting on them.
    pub debounce: Duration,
    pub watch: bool,
    pub follow_symlinks: bool,
    pub acl_rules: Vec<AclRule>,
    /// The POSIX user and group databases for uid/gid → name (default /etc/passwd, /etc/group).
    pub passwd_file: PathBuf,
    pub group_file: PathBuf,
    /// After each full scan, report the group database's memberships to the identity store.
    pub report_memberships: bool,
    /// Deletion protection: a reconciliation that would delete more than this percentage of the
    /// connector's indexed documents (and at least `deletion_protection_min_docs`) deletes
    /// nothing and reports a blocked job until an admin forces it.
    pub deletion_protection_percent: u32,
    pub deletion_protection_min_docs: u64,
}

/// The connector, built from a validated config.
pub struct FsConnector {
    cfg: Arc<FsConfig>,
    filter: PathFilter,
}

impl FsConnector {
    pub fn new(cfg: FsConfig) -> Result<Self, GlobError> {
        Ok(Self {
            filter: PathFilter::new(&cfg.include, &cfg.exclude)?,
            cfg: Arc::new(cfg),
        })
    }
}

impl Connector for FsConnector {
    fn id(&self) -> &str {
        &self.cfg.id
    }

    fn kind(&self) -> &'static str {
        "fs"
    }

    fn run(
        self: Box<Self>,
        ctx: ConnectorContext,
    ) -> BoxFuture<'static, Result<(), ConnectorError>> {
        async move { run(*self, ctx).await }.boxed()
    }
}

/// What the blocking scanner needs; cloned into `spawn_blocking`.
#[derive(Clone)]
struct Scanner {
    cfg: Arc<FsConfig>,
    filter: PathFilter,
    /// Read again at every reconciliation: a group created or renamed since must not leave a
    /// stale name in an ACL.
    names: Arc<std::sync::RwLock<Arc<PosixNames>>>,
    /// Whether `names` was ever read from files that name someone: until then an ACL cannot be
    /// told, and a reconciliation is an outage (as for the nfs connector).
    names_read: Arc<std::sync::atomic::AtomicBool>,
    status: StatusHandle,
    /// The job the scanner's outcomes are counted in.
    job: Arc<std::sync::atomic::AtomicU64>,
    /// A full sync: read and re-parse every file, changed or not.
    full: Arc<std::sync::atomic::AtomicBool>,
    /// Each root as configured and with every symbolic link in it resolved.
    roots: Arc<Vec<(PathBuf, PathBuf)>>,
    /// What was last sent per native id, until the index shows it ([`SentLog`]).
    sent: Arc<SentLog>,
    sink: mpsc::Sender<Change>,
    indexed: Arc<dyn IndexedState>,
    shutdown: CancellationToken,
    /// The roots (as configured) and the directories below them (as walked) that were mount
    /// points when last walked, from the checkpoint on: one that no longer is was unmounted
    /// (see [`Scanner::unmounted`]).
    mounted: Arc<std::sync::Mutex<BTreeSet<PathBuf>>>,
    /// The names met of each file with several hard links, by (device, inode): a change of
    /// the file's mode made through one name is seen by events on that name only, and its
    /// other names are checked again with it.
    links: Arc<std::sync::Mutex<LinkNames>>,
    /// With `follow_symlinks`: the paths met through a symbolic link, by the real path they
    /// lead to. A change of the target's mode, or of a directory above it, is seen by events
    /// on the real path only: the links' documents are checked again with it (a review: they
    /// kept the wider ACL until the next reconciliation).
    link_targets: Arc<std::sync::Mutex<BTreeMap<PathBuf, BTreeSet<PathBuf>>>>,
    /// The directories above the roots (not inside one), each with who may enter it as last
    /// seen ([`Above`]). They narrow every file below ([`entered`]); the watch has each one's
    /// own events, and a change of its owner, mode or list walks the roots below it at once
    /// (session 44's note: such a change waited for the next reconciliation).
    above: Arc<std::sync::Mutex<BTreeMap<PathBuf, Option<Above>>>>,
}

/// What decides who may enter a directory: its identity, owner, mode bits and access list.
/// `None` in [`Scanner::above`]: it could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Above {
    dev: u64,
    ino: u64,
    uid: u32,
    gid: u32,
    mode: u32,
    list: Option<Vec<ListEntry>>,
}

impl Above {
    /// `None` when it cannot be read at all. Where its list cannot be read (a mount whose
    /// lists are not trusted), its mode bits, as [`entered`] counts it (a review: such a
    /// directory read as `None` always, so no change of it was ever seen).
    fn read(d: &Path) -> Option<Self> {
        let meta = std::fs::symlink_metadata(d).ok()?;
        let (m, list) = path_access_list(d, meta.dev()).unwrap_or((meta, None));
        Some(Self {
            dev: m.dev(),
            ino: m.ino(),
            uid: m.uid(),
            gid: m.gid(),
            mode: m.mode(),
            list,
        })
    }
}

/// The directories above `roots` up to `/`, leaving out those inside a root (its own watch
/// has their events).
fn dirs_above(roots: &[PathBuf]) -> BTreeSet<PathBuf> {
    roots
        .iter()
        .flat_map(|r| r.ancestors().skip(1))
        .filter(|d| !d.as_os_str().is_empty() && !roots.iter().any(|r| d.starts_with(r)))
        .map(Path::to_path_buf)
        .collect()
}

/// [`Scanner::links`] by (device, inode).
#[derive(Default)]
struct LinkNames {
    /// The names met, and the most links the file was seen with.
    names: HashMap<(u64, u64), (u64, BTreeSet<PathBuf>)>,
    /// Files the last reconciliation found with more links than names under the roots: their
    /// other names lie elsewhere, and another walk would not find them.
    outside: std::collections::HashSet<(u64, u64)>,
    /// Files a reconciliation was asked for since the last one (see
    /// [`Scanner::visit_other_names`]).
    asked: std::collections::HashSet<(u64, u64)>,
}

/// The least time between two reconciliations asked for by new hard links.
const RELINK_GAP: Duration = Duration::from_secs(60);

/// The checkpoint's list of roots and directories that were mount points
/// ([`Scanner::mounted`]; the name is from when it held roots only).
const MOUNTED_ROOTS: &str = "mounted_roots";

/// How the reason an unmounted root is reported for begins ([`Alarm::Unmounted`], cleared by
/// the next reconciliation that finds none).
const UNMOUNTED: &str = "unmounted share?";

async fn run(conn: FsConnector, ctx: ConnectorContext) -> Result<(), ConnectorError> {
    let FsConnector { cfg, filter } = conn;
    let status = ctx.status.clone();
    // An empty or unreadable file at start names nobody: every ACL would be read as numbers,
    // then everything read again when the file is back (a review; a later one: the numbers were
    // still used at start). Only a file that reads is taken, and until one does, no
    // reconciliation runs (an outage).
    let names_at_start = PosixNames::try_load(&cfg.passwd_file, &cfg.group_file);
    if names_at_start.is_none() {
        tracing::warn!(connector = %cfg.id, "the passwd or group file is empty or unreadable: nothing is reconciled until it reads");
    }
    let scanner = Scanner {
        cfg: cfg.clone(),
        filter,
        names_read: Arc::new(std::sync::atomic::AtomicBool::new(names_at_start.is_some())),
        names: Arc::new(std::sync::RwLock::new(Arc::new(
            // (Unused until the files read: nothing reads it before.)
            names_at_start.unwrap_or_default(),
        ))),
        status: ctx.status.clone(),
        job: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        full: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        roots: Arc::new(
            cfg.roots
                .iter()
                .map(|r| (r.clone(), r.canonicalize().unwrap_or_else(|_| r.clone())))
                .collect(),
        ),
        sent: Arc::new(SentLog::new(cfg.id.clone(), ctx.indexed.clone())),
        sink: ctx.sink.clone(),
        indexed: ctx.indexed.clone(),
        shutdown: ctx.shutdown.clone(),
        mounted: Arc::new(std::sync::Mutex::new(
            ctx.checkpoint
                .as_ref()
                .and_then(|c| c.get(MOUNTED_ROOTS))
                .and_then(serde_json::Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(serde_json::Value::as_str)
                .map(PathBuf::from)
                .collect(),
        )),
        links: Arc::default(),
        link_targets: Arc::default(),
        // Read before the watch starts and the first reconciliation walks: a change after
        // this is either seen by that walk or differs from what is kept here.
        above: Arc::new(std::sync::Mutex::new(match cfg.watch {
            true => dirs_above(&cfg.roots)
                .into_iter()
                .map(|d| {
                    let seen = Above::read(&d);
                    (d, seen)
                })
                .collect(),
            false => BTreeMap::new(),
        })),
    };

    // Start watching before the first scan so nothing changed during the crawl is missed.
    // Bounded: events wait while a reconciliation runs (hours, on a large share), and a busy
    // log written 10,000 times a second would fill the memory (a review). Past the bound they
    // are dropped and counted as an overflow of the kernel's queue is: everything is walked.
    let (ev_tx, mut ev_rx) = mpsc::channel::<PathBuf>(WATCH_QUEUE);
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Paths in the queue: one changed again and again (a log appended to) takes one place, so
    // the bound counts distinct paths and a long reconciliation does not overflow it (a review).
    let queued: Arc<std::sync::Mutex<std::collections::HashSet<PathBuf>>> = Arc::default();
    let _watcher = if cfg.watch {
        match start_watcher(&cfg.roots, ev_tx, dropped.clone(), queued.clone()) {
            Ok((w, partial)) => {
                if !partial.is_empty() {
                    let list: Vec<String> = partial
                        .iter()
                        .map(|(r, e)| format!("{}: {e}", r.display()))
                        .collect();
                    let why = format!(
                        "watch incomplete (changes there wait for the reconciliation): {}",
                        list.join("; ")
                    );
                    tracing::warn!(connector = %cfg.id, "{}", docent_connector_api::log_safe(&why));
                    status.raise(Alarm::Watch, why);
                }
                Some(w)
            }
            Err(e) => {
                tracing::warn!(connector = %cfg.id, error = %docent_connector_api::log_safe(&e.to_string()), "watch unavailable, relying on reconciliation");
                status.raise(Alarm::Watch, format!("watch unavailable: {e}"));
                None
            }
        }
    } else {
        None
    };

    // Memberships first: when the crawl's documents become visible, access follows them.
    let report = membership_reporter(
        &cfg.id,
        &cfg.passwd_file,
        &cfg.group_file,
        cfg.report_memberships,
        ctx.memberships.clone(),
        &status,
    );
    report();
    reconcile(&scanner, &status, None, "start", false).await?;
    status.set_phase("watching");

    let mut commands = ctx.commands;
    let mut paused = false;
    let mut reconcile_tick = tokio::time::interval(cfg.reconcile_interval);
    reconcile_tick.tick().await; // the first tick is immediate; the crawl just happened
    let mut rollback_tick = tokio::time::interval(docent_connector_api::ROLLBACK_CHECK);
    // A reconciliation a new hard link asked for ([`Scanner::visit_other_names`]): at most one
    // per [`RELINK_GAP`], so a tree being hard-linked into a root does not walk it over and over.
    let mut relink_at: Option<tokio::time::Instant> = None;
    let mut last_relink: Option<tokio::time::Instant> = None;
    // While the passwd and group files cannot be read, the reconciliation is tried again soon
    // (1 s, doubling, at most the reconcile interval), not at the next scheduled one (a
    // review: a file being rewritten at start left the connector idle for the interval).
    let mut names_wait = Duration::from_secs(1);
    loop {
        let relink_due = async {
            match relink_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending::<()>().await,
            }
        };
        let names_due = async {
            match scanner.names_read() {
                false => tokio::time::sleep(names_wait).await,
                true => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            _ = names_due => {
                if !paused {
                    reconcile(&scanner, &status, None, "names", false).await?;
                }
                names_wait = (names_wait * 2).min(cfg.reconcile_interval);
            }
            _ = relink_due => {
                relink_at = None;
                if !paused {
                    last_relink = Some(tokio::time::Instant::now());
                    reconcile(&scanner, &status, None, "hard link", false).await?;
                }
            }
            _ = reconcile_tick.tick() => {
                if !paused {
                    report();
                    reconcile(&scanner, &status, None, "schedule", false).await?;
                }
            }
            // Writes the pipeline rolled back are sent again by a reconciliation, now rather
            // than at the next scheduled one.
            _ = rollback_tick.tick() => {
                if !paused && scanner.sent.rolled_back_since_reconciled() {
                    reconcile(&scanner, &status, None, "rollback", false).await?;
                }
            }
            Some(cmd) = commands.recv() => match cmd {
                ConnectorCommand::SyncNow { job_id, force_deletions, full } => {
                    scanner.full.store(full, std::sync::atomic::Ordering::Relaxed);
                    let r = reconcile(&scanner, &status, Some(job_id), "admin", force_deletions).await;
                    scanner.full.store(false, std::sync::atomic::Ordering::Relaxed);
                    r?;
                }
                ConnectorCommand::Pause => {
                    paused = true;
                    status.set_paused(true);
                    status.set_phase("paused");
                }
                ConnectorCommand::Resume => {
                    paused = false;
                    status.set_paused(false);
                    // Catch up on whatever changed while paused.
                    reconcile(&scanner, &status, None, "resume", false).await?;
                }
            },
            Some(first) = ev_rx.recv() => {
                // Gather a burst of events, then act once per path on its current state.
                let unqueue = |p: &PathBuf| {
                    queued.lock().unwrap_or_else(|e| e.into_inner()).remove(p);
                };
                unqueue(&first);
                let mut paths = BTreeSet::from([first]);
                let deadline = tokio::time::sleep(cfg.debounce);
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        _ = &mut deadline => break,
                        Some(p) = ev_rx.recv() => {
                            unqueue(&p);
                            paths.insert(p);
                        }
                    }
                }
                if dropped.swap(false, std::sync::atomic::Ordering::Relaxed) {
                    paths.insert(rescan_marker());
                }
                if paused {
                    // Resuming reconciles, so nothing dropped here is lost.
                    continue;
                }
                // Events were lost (the kernel's queue overflowed): only a walk of everything
                // finds what they said, as the scheduled reconciliation would, later.
                if paths.remove(&rescan_marker()) {
                    reconcile(&scanner, &status, None, "overflow", false).await?;
                    continue;
                }
                let id = status.start_job(None, "watch", "watch", unix_millis());
                scanner.job.store(id, std::sync::atomic::Ordering::Relaxed);
                let s = scanner.clone();
                let paths: Vec<PathBuf> = paths.into_iter().collect();
                let relinked = blocking(move || s.apply_paths(&paths)).await?;
                status.finish_job(id, JobState::Succeeded, unix_millis());
                if relinked {
                    // A file gained a name its events did not show: the walk finds its names.
                    let now = tokio::time::Instant::now();
                    let earliest = last_relink.map_or(now, |t| (t + RELINK_GAP).max(now));
                    relink_at.get_or_insert(earliest);
                }
            }
        }
    }
    status.set_phase("stopped");
    Ok(())
}

/// [`report_memberships`] as the function a connector calls at start and after each sync; it
/// does nothing unless `enabled` (the connector's `report_memberships`).
pub fn membership_reporter(
    id: &str,
    passwd_file: &Path,
    group_file: &Path,
    enabled: bool,
    sink: Arc<dyn docent_connector_api::MembershipSink>,
    status: &StatusHandle,
) -> impl Fn() + Send + Sync + 'static {
    let (id, passwd_file, group_file, status) = (
        id.to_string(),
        passwd_file.to_path_buf(),
        group_file.to_path_buf(),
        status.clone(),
    );
    move || {
        if enabled {
            report_memberships(&id, &passwd_file, &group_file, sink.as_ref(), &status);
        }
    }
}

/// Reports the group database's memberships when configured (re-read each time: it changes).
/// A database that cannot be read is not reported (an empty report would drop every
/// membership, and with them the deny entries naming a group): the last report stands and
/// [`Alarm::Memberships`] is raised.
pub fn report_memberships(
    id: &str,
    passwd_file: &Path,
    group_file: &Path,
    sink: &dyn docent_connector_api::MembershipSink,
    status: &StatusHandle,
) {
    // An empty file is being rewritten (a group database always names someone): reported as
    // it is, every group would lose its members and every deny of a group match no one.
    let read = |p: &Path| match std::fs::read_to_string(p) {
        Ok(t)
            if t.lines()
                .any(|l| !l.trim().is_empty() && !l.starts_with('#')) =>
        {
            Ok(t)
        }
        Ok(_) => Err(format!("{} is empty", p.display())),
        Err(e) => Err(format!("cannot read {}: {e}", p.display())),
    };
    match read(passwd_file).and_then(|passwd| Ok((passwd, read(group_file)?))) {
        Ok((passwd, group)) => {
            let m = posix_names::memberships(&passwd, &group);
            tracing::debug!(connector = %id, groups = m.len(), "reporting group memberships");
            match sink.report(id, m) {
                Ok(()) => status.clear(Alarm::Memberships),
                Err(e) => status.raise(Alarm::Memberships, e),
            }
        }
        Err(e) => {
            tracing::error!(connector = %id, error = %docent_connector_api::log_safe(&e), "group memberships not reported; the last report stands");
            status.raise(Alarm::Memberships, e);
        }
    }
}

/// A reconciliation job: walks everything, upserts what changed, deletes what disappeared
/// (unless deletion protection stops it), then commits a checkpoint.
async fn reconcile(
    scanner: &Scanner,
    status: &StatusHandle,
    job_id: Option<u64>,
    trigger: &'static str,
    force_deletions: bool,
) -> Result<(), ConnectorError> {
    status.set_phase("crawling");
    let id = status.start_job(job_id, "reconcile", trigger, unix_millis());
    scanner.job.store(id, std::sync::atomic::Ordering::Relaxed);
    let s = scanner.clone();
    let rollbacks = scanner.sent.rollbacks();
    let outcome = tokio::task::spawn_blocking(move || s.reconcile_all(force_deletions))
        .await
        .unwrap_or_else(|e| {
            Err(ConnectorError::Failed {
                connector: "fs".into(),
                message: task_failure(&e),
            })
        });
    let now_ms = unix_millis();
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            status.finish_job(id, JobState::Failed(e.to_string()), now_ms);
            return Err(e);
        }
    };
    let paid = !matches!(outcome, Reconciled::Cancelled | Reconciled::NotWalked(_));
    let state = match outcome {
        Reconciled::Done => JobState::Succeeded,
        Reconciled::Cancelled => JobState::Cancelled,
        // The walk raised and cleared the alarms (`Scanner::reconcile_all`).
        Reconciled::DeletionsBlocked(why) => JobState::Blocked(why),
        Reconciled::Outage(why) => {
            tracing::warn!(connector = %scanner.cfg.id, "{}", docent_connector_api::log_safe(&why));
            JobState::Failed(why)
        }
        // Raised until a walk runs (a review: only a failed job said so).
        Reconciled::NotWalked(why) => {
            tracing::warn!(connector = %scanner.cfg.id, "{}", docent_connector_api::log_safe(&why));
            status.raise(Alarm::Outage, why.clone());
            JobState::Failed(why)
        }
    };
    if paid {
        status.clear(Alarm::Outage);
    }
    // A scan that left a root out is not a full one.
    let complete = !matches!(state, JobState::Failed(_));
    status.finish_job(id, state, now_ms);
    if complete {
        status.full_scan_done(now_ms);
    }
    // After what the walk sent, before the checkpoint (the job is final whatever the send).
    if paid {
        scanner.send(scanner.sent.reconciled(rollbacks)).await?;
    }
    let last_full_scan_ms = status.snapshot().last_full_scan_ms;
    status.set_phase(if status.snapshot().paused {
        "paused"
    } else {
        "watching"
    });
    let mounted: Vec<String> = scanner
        .mounted
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|r| r.to_string_lossy().into_owned())
        .collect();
    scanner
        .send(Change::Checkpoint {
            connector: scanner.cfg.id.clone(),
            checkpoint: serde_json::json!({
                "last_full_scan_ms": last_full_scan_ms,
                MOUNTED_ROOTS: mounted,
            }),
        })
        .await
}

enum Reconciled {
    Done,
    Cancelled,
    DeletionsBlocked(String),
    /// A root's share is not mounted: the rest was reconciled, nothing under it was touched.
    Outage(String),
    /// Nothing was walked (the names of users and groups cannot be read): an outage, and the
    /// reconciliation is still owed.
    NotWalked(String),
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ConnectorError> + Send + 'static,
) -> Result<T, ConnectorError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(ConnectorError::Failed {
            connector: "fs".into(),
            message: task_failure(&e),
        })
    })
}

/// Changed paths the watch loop holds before it drops them and walks everything instead.
const WATCH_QUEUE: usize = 65_536;

fn start_watcher(
    roots: &[PathBuf],
    tx: mpsc::Sender<PathBuf>,
    dropped: Arc<std::sync::atomic::AtomicBool>,
    queued: Arc<std::sync::Mutex<std::collections::HashSet<PathBuf>>>,
) -> notify::Result<(notify::RecommendedWatcher, Vec<(PathBuf, notify::Error)>)> {
    let above = dirs_above(roots);
    let inside = roots.to_vec();
    let handler = move |res: notify::Result<notify::Event>| {
        // A directory above the roots is watched for its own events: those of its other
        // entries are not the connector's.
        for p in watched_paths(res).into_iter().filter(|p| {
            p.as_os_str().is_empty() || above.contains(p) || inside.iter().any(|r| p.starts_with(r))
        }) {
            let mut q = queued.lock().unwrap_or_else(|e| e.into_inner());
            if q.contains(&p) {
                continue;
            }
            match tx.try_send(p.clone()) {
                Ok(()) => {
                    q.insert(p);
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    dropped.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    };
    // Never follow links while adding watches: a link planted in a root would otherwise take
    // over the watch of the directory it points to (its events would arrive under the link's
    // path) or make the watcher walk the whole filesystem.
    let mut watcher = notify::RecommendedWatcher::new(
        handler,
        notify::Config::default().with_follow_symlinks(false),
    )?;
    // A root that cannot be watched whole (a directory below it the daemon may not read stops
    // the recursive watch there) is watched as far as it could be, and said so; the other
    // roots are watched all the same (a review: one such directory turned watching off for
    // every root).
    let mut partial = Vec::new();
    for r in roots {
        if let Err(e) = watcher.watch(r, RecursiveMode::Recursive) {
            partial.push((r.clone(), e));
        }
    }
    // Each directory above them alone (its events name it, or an entry of it); one the
    // daemon may not read cannot be watched, and a change of it waits for the reconciliation.
    for d in dirs_above(roots) {
        if let Err(e) = watcher.watch(&d, RecursiveMode::NonRecursive) {
            tracing::debug!(dir = %docent_connector_api::log_safe(&d.to_string_lossy()), error = %docent_connector_api::log_safe(&e.to_string()), "a directory above a root is not watched");
        }
    }
    Ok((watcher, partial))
}

/// What the watch loop is sent for events the kernel dropped: no path names them, so everything
/// is walked again (see [`watched_paths`]).
fn rescan_marker() -> PathBuf {
    PathBuf::new()
}

/// The paths an event names, for the watch loop to look at again. An overflow of the kernel's
/// event queue names none and means events were lost: then the [`rescan_marker`] (found by a
/// review: it was dropped, and a chmod among the lost events waited for the next scheduled
/// reconciliation).
fn watched_paths(res: notify::Result<notify::Event>) -> Vec<PathBuf> {
    let ev = match res {
        Ok(ev) => ev,
        // The watcher failed (a limit on watches reached, a watch lost): what it would have
        // said is unknown, so everything is walked (a review: such errors were dropped, and a
        // change waited for the scheduled reconciliation unseen).
        Err(e) => {
            tracing::warn!(error = %docent_connector_api::log_safe(&e.to_string()), "the file watcher failed; walking everything again");
            return vec![rescan_marker()];
        }
    };
    if ev.need_rescan() {
        return vec![rescan_marker()];
    }
    // Opening and closing files for reading changes nothing; closing one written to may
    // (a file written through a memory map raises no modify event; a review).
    if matches!(ev.kind, EventKind::Access(_))
        && !matches!(
            ev.kind,
            EventKind::Access(notify::event::AccessKind::Close(
                notify::event::AccessMode::Write
            ))
        )
    {
        return Vec::new();
    }
    ev.paths
}

fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Why a link to a directory is not walked (with `follow_symlinks`).
const LINK_LEAVES_ROOTS: &str =
    "symbolic link to a directory outside the crawled roots: not walked";

/// Why a file whose path is not valid UTF-8 is not indexed.
const NOT_UNICODE: &str = "its path is not valid UTF-8 (a name in a legacy encoding): not indexed";

impl Scanner {
    /// Whether the passwd and group files were read (see [`Scanner::names_read`]'s field).
    fn names_read(&self) -> bool {
        self.names_read.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The document id of a path; only for a path that is valid UTF-8 (a lossy spelling of
    /// another could name a different file).
    fn key(&self, path: &Path) -> DocKey {
        DocKey::new(&self.cfg.id, path.to_string_lossy())
    }

    fn send_blocking(&self, change: Change) -> Result<(), ConnectorError> {
        self.sink
            .blocking_send(change)
            .map_err(|_| ConnectorError::SinkClosed {
                connector: self.cfg.id.clone(),
            })
    }

    async fn send(&self, change: Change) -> Result<(), ConnectorError> {
        self.sink
            .send(change)
            .await
            .map_err(|_| ConnectorError::SinkClosed {
                connector: self.cfg.id.clone(),
            })
    }

    fn root_of(&self, path: &Path) -> Option<&Path> {
        self.cfg
            .roots
            .iter()
            .map(PathBuf::as_path)
            .filter(|r| path.starts_with(r))
            .max_by_key(|r| r.as_os_str().len())
    }

    /// Include/exclude globs, matched on the path relative to its root.
    fn selected(&self, root: &Path, path: &Path) -> bool {
        self.filter.selects(path.strip_prefix(root).unwrap_or(path))
    }

    fn excluded_dir(&self, root: &Path, path: &Path) -> bool {
        let rel = path.strip_prefix(root).unwrap_or(path);
        !rel.as_os_str().is_empty() && self.filter.excludes(rel)
    }

    /// Counts an outcome in the current job.
    fn count(&self, f: impl FnOnce(&mut docent_connector_api::jobs::JobRecord)) {
        let id = self.job.load(std::sync::atomic::Ordering::Relaxed);
        self.status.update_job(id, f);
    }

    fn count_failure(&self, id: &str, reason: &str) {
        self.count(|j| {
            j.counts.failed += 1;
            if j.failures.len() < docent_connector_api::jobs::JOB_FAILURES {
                j.failures.push(docent_connector_api::jobs::JobFailure {
                    id: id.to_string(),
                    reason: reason.to_string(),
                });
            }
        });
    }

    /// Walks every root; upserts what changed and deletes what disappeared, unless that is more
    /// than deletion protection allows and `force_deletions` is off.
    fn reconcile_all(&self, force_deletions: bool) -> Result<Reconciled, ConnectorError> {
        forget_file_systems();
        // A file that cannot be read now keeps the names read before (else every deny would
        // become a skip, and every name a number).
        if let Some(names) = PosixNames::try_load(&self.cfg.passwd_file, &self.cfg.group_file) {
            *self.names.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(names);
            self.names_read
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        if !self.names_read() {
            return Ok(Reconciled::NotWalked(format!(
                "cannot read the names of users and groups ({} and {}): unreadable or empty; \
                 nothing was reconciled",
                self.cfg.passwd_file.display(),
                self.cfg.group_file.display()
            )));
        }
        // The walk meets every name again; files it was asked for stay asked (below).
        let asked =
            std::mem::take(&mut *self.links.lock().unwrap_or_else(|e| e.into_inner())).asked;
        // So do the links met: what a link led to before is forgotten (a second review: the
        // map only grew, and links long gone were visited again at their old targets' events).
        self.link_targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let table = mount_table();
        let mut seen = BTreeSet::new();
        // Directories the walk could not list: what is indexed under them is not deleted (an
        // error is not a deletion; one the crawler is refused has it withdrawn).
        let mut unlisted: Vec<PathBuf> = Vec::new();
        let indexed = self.indexed.native_ids(&self.cfg.id);
        // Roots whose share is not mounted (see below).
        let mut outages: Vec<String> = Vec::new();
        for root in &self.cfg.roots {
            if self.shutdown.is_cancelled() {
                return Ok(Reconciled::Cancelled);
            }
            if !force_deletions && let Some(why) = self.unmounted(root) {
                // Its files are not reachable, and what is there instead (an empty directory,
                // one closed to everyone, stale files written while unmounted) says nothing
                // of them: neither withdrawn nor deleted, as in any outage.
                self.count_failure(&root.to_string_lossy(), &why);
                outages.push(why);
                unlisted.push(root.clone());
                continue;
            }
            let canonical = self.canonical_root(root);
            let mounted_before = mount_point(canonical);
            let before = seen.len();
            self.walk(
                root,
                root,
                force_deletions,
                &table,
                &mut Walked {
                    seen: &mut seen,
                    unlisted: &mut unlisted,
                    outages: &mut outages,
                },
            )?;
            if mounted_before && !mount_point(canonical) && !force_deletions {
                // Unmounted during the walk: what it did not reach is kept, and the root stays
                // recorded as a mount point.
                self.mounted
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(root.clone());
                let why = format!(
                    "{UNMOUNTED} root {} was unmounted during the walk: what the walk had not read \
                     under it was neither withdrawn nor deleted",
                    root.display()
                );
                self.count_failure(&root.to_string_lossy(), &why);
                outages.push(why);
                unlisted.push(root.clone());
                continue;
            }
            self.note_mount_point(root);
            // A root that lists nothing while documents under it are indexed is an unmounted or
            // unreachable share, not an empty one (unless an admin forces the deletions).
            if !force_deletions && seen.len() == before && indexed.iter().any(|id| under(id, root))
            {
                self.count_failure(
                    &root.to_string_lossy(),
                    "the root listed no files while documents under it are indexed; nothing \
                     under it was deleted (an unmounted or unreachable share?)",
                );
                unlisted.push(root.clone());
            }
        }
        if self.shutdown.is_cancelled() {
            // A partial walk must not delete what it did not reach.
            return Ok(Reconciled::Cancelled);
        }
        {
            // Files with more links than the walk met names: the others lie outside the roots.
            let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
            let LinkNames { names, outside, .. } = &mut *links;
            *outside = names
                .iter()
                .filter(|(_, (nlink, paths))| (paths.len() as u64) < *nlink)
                .map(|(inode, _)| *inode)
                .collect();
            // Asked for and still not found whole (names outside the roots, or excluded): not
            // asked again.
            outside.extend(asked.into_iter().filter(|i| {
                names
                    .get(i)
                    .is_none_or(|(nlink, paths)| (paths.len() as u64) < *nlink)
            }));
        }
        // This walk's finding about unmounted roots stands whatever deletion protection decides
        // below: a hold must not hide an unmount, or forcing the held deletions (which walks
        // an unmounted root as it is) would look like the answer. Every root walked: over.
        let outage = (!outages.is_empty()).then(|| outages.join("; "));
        match &outage {
            Some(why) => self.status.raise(Alarm::Unmounted, why.clone()),
            None => self.status.clear(Alarm::Unmounted),
        }
        let gone = gone(self.known_ids(), &seen, &unlisted);
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
            // With an unmount too, the job fails for it (not a full scan), and the hold says
            // that forcing it would also walk the unmounted roots as they are.
            let why = match &outage {
                Some(_) => format!(
                    "{why} (not counted: a forced sync also walks the unmounted roots as they \
                     are, deleting what is indexed under them)"
                ),
                None => why,
            };
            tracing::warn!(connector = %self.cfg.id, "{why}");
            self.status.raise(Alarm::DeletionProtection, why.clone());
            return Ok(match outage {
                Some(outage) => Reconciled::Outage(outage),
                None => Reconciled::DeletionsBlocked(why),
            });
        }
        for id in gone {
            self.send_delete(id)?;
        }
        // Deletions went ahead: an earlier hold is over, even if a root is still unmounted.
        self.status.clear(Alarm::DeletionProtection);
        if let Some(outage) = outage {
            return Ok(Reconciled::Outage(outage));
        }
        Ok(Reconciled::Done)
    }

    /// Every native id the index holds or will hold once what was sent is applied.
    fn known_ids(&self) -> BTreeSet<String> {
        self.sent.known_ids()
    }

    /// The newest state of a document as far as this scanner knows: what it sent last, else
    /// what the index holds.
    fn last_known(&self, key: &DocKey) -> Option<IndexedDoc> {
        self.sent.last_known(key)
    }

    fn remember(&self, id: &str, last: Option<IndexedDoc>) {
        self.sent.remember(id, last);
    }

    fn send_delete(&self, id: String) -> Result<(), ConnectorError> {
        self.remember(&id, None);
        self.send_blocking(Change::Delete(DocKey::new(&self.cfg.id, id)))?;
        self.count(|j| j.counts.deleted += 1);
        Ok(())
    }

    /// Withdraws (skips, with the reason) what is indexed or sent below `dir`. `known`: the
    /// known ids, listed on first use and shared by a walk's calls (a review: each refused
    /// directory listed the whole index again, 5,000 private home folders 5,000 times).
    fn withdraw_under(
        &self,
        dir: &Path,
        why: &str,
        known: &mut Option<BTreeSet<String>>,
    ) -> Result<(), ConnectorError> {
        let known = known.get_or_insert_with(|| self.known_ids());
        let mut prefix = dir.to_string_lossy().into_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        let doomed: Vec<String> = known
            .range(prefix.clone()..)
            .take_while(|id| id.starts_with(&prefix))
            .filter(|id| under(id, dir))
            .cloned()
            .collect();
        for id in doomed {
            known.remove(&id);
            self.remember(&id, None);
            self.count(|j| j.counts.failed += 1);
            self.send_blocking(Change::Skipped {
                key: DocKey::new(&self.cfg.id, id),
                reason: format!(
                    "withdrawn: the crawler may not list {} ({why})",
                    dir.display()
                ),
            })?;
        }
        Ok(())
    }

    /// Walks `dir` (inside `root`), recording every file it accounts for in `seen`, every path
    /// it could not read in `unlisted`, and why in `outages` where a directory below `dir` that
    /// was a mount point is not one now (unless `force`, which walks what is there). Mount
    /// points below `dir` are recorded in [`Scanner::mounted`].
    fn walk(
        &self,
        root: &Path,
        dir: &Path,
        force: bool,
        table: &MountTable,
        out: &mut Walked<'_>,
    ) -> Result<(), ConnectorError> {
        let Walked {
            seen,
            unlisted,
            outages,
        } = out;
        let mut walker = walkdir::WalkDir::new(dir)
            .follow_links(self.cfg.follow_symlinks)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| !(e.file_type().is_dir() && self.excluded_dir(root, e.path())));
        let mut mounts = SubMounts::new(self.canonical_root(root), root, table);
        // Recorded mount points not mounted now (canonical), asked when a link to a directory
        // is met.
        let mut vanished: Option<Vec<PathBuf>> = None;
        let mut known: Option<BTreeSet<String>> = None;
        while let Some(entry) = walker.next() {
            if self.shutdown.is_cancelled() {
                return Ok(());
            }
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    let Some(path) = e.path().map(Path::to_path_buf) else {
                        // walkdir could not say which entry failed (its loop check could not
                        // open a followed link): nothing is withdrawn or skipped for it, and
                        // nothing below `dir` is deleted this pass (a review: the error was
                        // put on `dir`, and a link to a directory the daemon may not open
                        // withdrew the whole root).
                        self.count_failure(&dir.to_string_lossy(), &format!("unreadable: {e}"));
                        unlisted.push(dir.to_path_buf());
                        continue;
                    };
                    let reason = if e.loop_ancestor().is_some() {
                        "symlink loop".to_string()
                    } else {
                        e.io_error()
                            .map(|io| format!("unreadable: {io}"))
                            .unwrap_or_else(|| e.to_string())
                    };
                    let denied = e
                        .io_error()
                        .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied);
                    // Reported as skipped, which also removes any indexed version: a file we
                    // cannot read now must not keep serving old text under an old ACL. A
                    // directory's files were not listed, so they are not known to be gone.
                    unlisted.push(path.clone());
                    self.count_failure(&path.to_string_lossy(), &reason);
                    // (A name that is not Unicode was never indexed: nothing to skip.) The
                    // server under it lost says nothing about it: what is indexed stays, as
                    // when a file's own lookup fails so (`unread_of`; a review).
                    let lost = e.io_error().is_some_and(server_lost);
                    if path.to_str().is_some() && !lost {
                        self.send_blocking(Change::Skipped {
                            key: self.key(&path),
                            reason: reason.clone(),
                        })?;
                    }
                    // A directory the crawler may no longer enter, the root included: what is
                    // indexed under it can no longer have its ACL checked (a directory closed
                    // to the crawler is usually closed to others too), so it is withdrawn until
                    // the directory can be listed again. Other errors (a missing mount, I/O)
                    // keep it.
                    if denied && std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                        self.withdraw_under(&path, &reason, &mut known)?;
                    }
                    continue;
                }
            };
            if entry.file_type().is_dir() {
                // A link to a directory outside the roots is not walked: every file under it
                // would be refused (its real path lies outside), and a link to `/` would have
                // the walk read the whole machine's tree to refuse it file by file.
                if entry.path_is_symlink() {
                    match std::fs::canonicalize(entry.path()) {
                        Ok(real) if self.root_holding(&real).is_some() => {}
                        Ok(_) => {
                            walker.skip_current_dir();
                            self.count_failure(&entry.path().to_string_lossy(), LINK_LEAVES_ROOTS);
                            continue;
                        }
                        // Where it leads cannot be told now (a race, a refusal): not walked,
                        // and what is indexed under it is neither withdrawn nor deleted.
                        Err(e) => {
                            walker.skip_current_dir();
                            let path = entry.path().to_path_buf();
                            self.count_failure(
                                &path.to_string_lossy(),
                                &format!("cannot tell where this link leads: {e}"),
                            );
                            unlisted.push(path);
                            continue;
                        }
                    }
                }
                let Some(is_mount) = mounts.enter(&entry) else {
                    continue;
                };
                // With `follow_symlinks`, a link into a share that went away leads into the
                // directory left behind: what is indexed under the link stays too.
                if !force
                    && entry.path_is_symlink()
                    && let Ok(target) = std::fs::canonicalize(entry.path())
                    && let Some(gone) = vanished
                        .get_or_insert_with(|| self.vanished_mounts())
                        .iter()
                        .find(|m| target.starts_with(m))
                {
                    let path = entry.path();
                    walker.skip_current_dir();
                    let why = format!(
                        "{UNMOUNTED} {} leads into {}, a mount point when last walked and not \
                         one now: nothing under it was withdrawn or deleted",
                        path.display(),
                        gone.display()
                    );
                    self.count_failure(&path.to_string_lossy(), &why);
                    outages.push(why);
                    unlisted.push(path.to_path_buf());
                    continue;
                }
                let path = entry.path();
                let mut mounted = self.mounted.lock().unwrap_or_else(|e| e.into_inner());
                let recorded = mounted.contains(path);
                // Asked again through the directory before it is taken for gone: an automount
                // that expired is mounted by that.
                let remounted = !is_mount && recorded && mount_point(&mounts.canonical_of(path));
                if remounted {
                    mounts.remounted(path);
                }
                let is_mount = is_mount || remounted;
                if recorded {
                    mounts.met.insert(path.to_path_buf());
                    if is_mount && !mounts.entered.iter().any(|p| p == path) {
                        mounts.entered.push(path.to_path_buf());
                    }
                }
                if is_mount {
                    mounted.insert(path.to_path_buf());
                } else if recorded && !force {
                    // A share mounted here went away: the directory left behind (empty,
                    // closed, or holding stale files) says nothing of its files, which are
                    // neither withdrawn nor deleted (as for an unmounted root).
                    drop(mounted);
                    walker.skip_current_dir();
                    let why = format!(
                        "{UNMOUNTED} {} was a mount point when last walked and is not one now: \
                         nothing under it was withdrawn or deleted; a sync with force_deletions \
                         walks it as it is",
                        path.display()
                    );
                    self.count_failure(&path.to_string_lossy(), &why);
                    outages.push(why);
                    unlisted.push(path.to_path_buf());
                } else {
                    mounted.remove(path);
                }
                continue;
            }
            if entry.path_is_symlink() && !self.cfg.follow_symlinks {
                // Not followed: as if it were not there (an earlier indexed version is deleted).
                continue;
            }
            let path = entry.path();
            if !self.selected(root, path) {
                continue;
            }
            if let Some(id) = path.to_str() {
                seen.insert(id.to_string());
            }
            // Without `follow_symlinks` the walk never passes through a link, so the path needs
            // no resolving; with it, every file is checked.
            self.visit_file(root, path, !self.cfg.follow_symlinks)?;
        }
        // A mount below `dir` that went away during the walk: what the walk had not read under
        // it is kept, and it stays recorded as a mount point.
        if self.shutdown.is_cancelled() {
            return Ok(());
        }
        for path in std::mem::take(&mut mounts.entered) {
            if !force && !mount_point(&mounts.canonical_of(&path)) {
                let why = format!(
                    "{UNMOUNTED} {} was unmounted during the walk: what the walk had not read \
                     under it was neither withdrawn nor deleted",
                    path.display()
                );
                self.count_failure(&path.to_string_lossy(), &why);
                outages.push(why);
                unlisted.push(path);
            }
        }
        // Recorded mount points below `dir` the walk did not meet are gone (or excluded), unless
        // they lie under a directory it could not list; not when `dir` itself, a recorded
        // mount point, went away during the walk (what it met was what lay underneath).
        let mut mounted = self.mounted.lock().unwrap_or_else(|e| e.into_inner());
        if mounted.contains(dir) && !mount_point(&mounts.canonical_of(dir)) {
            return Ok(());
        }
        // One the walk did not meet although nothing excludes it (its directory is gone: an
        // automounted share that expired, a removed media mount) is an outage like one met
        // unmounted: what it held is kept (session 34's review: it was deleted, with only
        // deletion protection in the way), unless a forced sync accepts it.
        if !force {
            let missing: Vec<PathBuf> = mounted
                .iter()
                .filter(|m| {
                    m.starts_with(dir)
                        && *m != dir
                        && !self.cfg.roots.contains(*m)
                        && !mounts.met.contains(*m)
                        && !unlisted.iter().any(|u| m.starts_with(u))
                        && !m
                            .ancestors()
                            .take_while(|a| *a != root)
                            .any(|a| self.excluded_dir(root, a))
                })
                .cloned()
                .collect();
            for m in missing {
                let why = format!(
                    "{UNMOUNTED} {} was a mount point when last walked and is not there now: \
                     what it held was neither withdrawn nor deleted",
                    m.display()
                );
                self.count_failure(&m.to_string_lossy(), &why);
                outages.push(why);
                unlisted.push(m);
            }
        }
        mounted.retain(|m| {
            !m.starts_with(dir)
                || m == dir
                || self.cfg.roots.contains(m)
                || mounts.met.contains(m)
                || unlisted.iter().any(|u| m.starts_with(u))
        });
        Ok(())
    }

    /// The recorded mount points ([`Scanner::mounted`]) that are not mount points now, as
    /// canonical paths.
    fn vanished_mounts(&self) -> Vec<PathBuf> {
        let recorded: Vec<PathBuf> = self
            .mounted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        recorded
            .into_iter()
            .filter_map(|m| {
                let root = self.root_of(&m)?;
                let canonical = self
                    .canonical_root(root)
                    .join(m.strip_prefix(root).unwrap_or(&m));
                (!mount_point(&canonical)).then_some(canonical)
            })
            .collect()
    }

    /// Why `root`, a mount point when last walked, is taken for unmounted: it is not one now.
    /// A sync with `force_deletions` accepts the change (and walks what is there).
    fn unmounted(&self, root: &Path) -> Option<String> {
        let was = self
            .mounted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(root);
        (was && !mount_point(self.canonical_root(root))).then(|| {
            format!(
                "{UNMOUNTED} {} was a mount point when last walked and is not one now: nothing \
                 under it was withdrawn or deleted; a sync with force_deletions walks it as it is",
                root.display()
            )
        })
    }

    /// Records whether `root`, just walked, is a mount point.
    fn note_mount_point(&self, root: &Path) {
        let is = mount_point(self.canonical_root(root));
        let mut mounted = self.mounted.lock().unwrap_or_else(|e| e.into_inner());
        if is {
            mounted.insert(root.to_path_buf());
        } else {
            mounted.remove(root);
        }
    }

    /// Acts on each changed path according to what is there now.
    /// `true` when a reconciliation should follow (see [`Scanner::visit_other_names`]).
    fn apply_paths(&self, paths: &[PathBuf]) -> Result<bool, ConnectorError> {
        // Until the passwd and group files read, no ACL can be told: the changes wait for the
        // first reconciliation that walks (a review: they were indexed with numbers for names).
        if !self.names_read() {
            return Ok(false);
        }
        let mut known = None;
        let mut unmounted = BTreeMap::new();
        let mut table = None;
        let mut reconcile = false;
        let paths = self.roots_below_changed(paths);
        for path in &paths {
            let Some(root) = self.root_of(path) else {
                continue;
            };
            // An event on a root itself that leaves it missing, a link, or listing nothing
            // (moved away, replaced by a link to its new place, deleted and made again): the reconciliation judges it, with its rule for a root
            // that lists nothing and deletion protection (a review: `mv share share.old &&
            // mkdir share` deleted every document of the root at once). A root that lists
            // something (a chmod on it) is walked now, as before.
            if path.as_path() == root
                && (std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
                    || !std::fs::read_dir(path).is_ok_and(|mut e| e.next().is_some()))
            {
                reconcile = true;
                continue;
            }
            // Events in the directory left where a share was unmounted (at the root or below
            // it) say nothing of the share's files (the next reconciliation reports the outage).
            let recorded: Vec<PathBuf> = self
                .mounted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .filter(|m| path.starts_with(m))
                .cloned()
                .collect();
            if recorded.into_iter().any(|m| {
                let canonical = self
                    .canonical_root(root)
                    .join(m.strip_prefix(root).unwrap_or(&m));
                *unmounted
                    .entry(m)
                    .or_insert_with(|| !mount_point(&canonical))
            }) {
                continue;
            }
            // What links lead to here, or below here, is checked again too: the change (a
            // chmod of the target or a directory above it) is theirs as well. After the checks
            // above: a root moved away or a share unmounted says nothing of the links' targets
            // (a second review: their documents were withdrawn at once).
            self.visit_links_into(root, path)?;
            let meta = std::fs::symlink_metadata(path);
            // Without `follow_symlinks`: whether the path is a link or passes through one
            // (`None`: that cannot be told now).
            let linked = match &meta {
                Ok(m) if !self.cfg.follow_symlinks => match m.file_type().is_symlink() {
                    true => Some(true),
                    false => self.link_free(root, path).map(|free| !free),
                },
                _ => Some(false),
            };
            match meta {
                // A name that is not Unicode was never indexed, and its lossy spelling may be
                // another file's id (a review: a link named `report\xff.pdf` deleted the
                // indexed `report\u{FFFD}.pdf`).
                Ok(_) if linked == Some(true) && path.to_str().is_none() => {}
                Ok(_) if linked == Some(true) => {
                    // Not followed (a link, or a path through one): whatever was indexed under
                    // this path goes.
                    self.delete_under(path, &mut known, |_| true)?;
                }
                Ok(_) if linked.is_none() => {
                    // A review: this read as "through a link", and everything indexed under
                    // the path went on one failed lookup. The next reconciliation decides.
                    tracing::info!(
                        connector = %self.cfg.id,
                        "a changed path cannot be resolved now; a reconciliation looks at it"
                    );
                    reconcile = true;
                }
                Ok(_) if path.is_dir() => {
                    if self.excluded_dir(root, path) {
                        continue;
                    }
                    let (mut seen, mut unlisted) = (BTreeSet::new(), Vec::new());
                    let table = table.get_or_insert_with(mount_table);
                    self.walk(
                        root,
                        path,
                        false,
                        table,
                        &mut Walked {
                            seen: &mut seen,
                            unlisted: &mut unlisted,
                            outages: &mut Vec::new(),
                        },
                    )?;
                    self.delete_missing_under(path, &mut known, &seen, &unlisted)?;
                }
                Ok(m) => {
                    if self.selected(root, path) {
                        self.visit_file(root, path, false)?;
                    }
                    if m.is_file() && m.nlink() > 1 {
                        let ask = self.selected(root, path);
                        reconcile |= self.visit_other_names(path, &m, ask)?;
                    }
                }
                Err(_) => {
                    // Gone: the file itself, or a whole directory moved or deleted.
                    self.delete_missing_under(path, &mut known, &BTreeSet::new(), &[])?;
                }
            }
        }
        Ok(reconcile)
    }

    /// `paths` with each directory above the roots ([`Scanner::above`]) among them replaced by
    /// the roots below it when who may enter it changed (each then walked whole, as for a
    /// chmod of the root), or left out when it did not (a `touch`, another entry's event).
    fn roots_below_changed(&self, paths: &[PathBuf]) -> Vec<PathBuf> {
        let mut out = Vec::with_capacity(paths.len());
        for path in paths {
            if self.root_of(path).is_some() {
                out.push(path.clone());
                continue;
            }
            let changed = {
                let mut above = self.above.lock().unwrap_or_else(|e| e.into_inner());
                match above.get_mut(path) {
                    Some(seen) => {
                        let now = Above::read(path);
                        std::mem::replace(seen, now.clone()) != now
                    }
                    None => false,
                }
            };
            if changed {
                tracing::info!(connector = %self.cfg.id, "who may enter a directory above a root changed; walking the roots below it");
                out.extend(
                    self.cfg
                        .roots
                        .iter()
                        .filter(|r| r.starts_with(path))
                        .cloned(),
                );
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Checks again the documents met through a symbolic link whose target is `path` (under
    /// `root`) or lies below it (see [`Scanner::link_targets`]).
    fn visit_links_into(&self, root: &Path, path: &Path) -> Result<(), ConnectorError> {
        if !self.cfg.follow_symlinks {
            return Ok(());
        }
        let real = self
            .canonical_root(root)
            .join(path.strip_prefix(root).unwrap_or(path));
        let links: Vec<PathBuf> = {
            let targets = self.link_targets.lock().unwrap_or_else(|e| e.into_inner());
            targets
                .range(real.clone()..)
                .take_while(|(t, _)| t.starts_with(&real))
                .flat_map(|(_, links)| links.iter().cloned())
                .filter(|l| l != path)
                .collect()
        };
        for link in links {
            if let Some(r) = self.root_of(&link)
                && self.selected(r, &link)
            {
                self.visit_file(r, &link, false)?;
            }
        }
        Ok(())
    }

    /// Checks again the other names met of the file `path` names (several hard links, `meta`
    /// its metadata): its mode, changed through `path`, is theirs too. A name that no longer
    /// leads to the file is forgotten. `true` when the file has more links than names known
    /// (a name made while it had one link, which its events did not show): a reconciliation
    /// finds them, asked once per file until the next one.
    fn visit_other_names(
        &self,
        path: &Path,
        meta: &std::fs::Metadata,
        ask: bool,
    ) -> Result<bool, ConnectorError> {
        let inode = (meta.dev(), meta.ino());
        let (others, unknown) = {
            let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
            let links = &mut *links;
            let (_, names) = links.names.entry(inode).or_default();
            names.retain(|n| {
                std::fs::symlink_metadata(n).is_ok_and(|m| (m.dev(), m.ino()) == inode)
            });
            let unknown = ask
                && (names.len() as u64) < meta.nlink()
                && !links.outside.contains(&inode)
                && links.asked.insert(inode);
            let others: Vec<PathBuf> = names
                .iter()
                .filter(|n| n.as_path() != path)
                .cloned()
                .collect();
            (others, unknown)
        };
        for other in others {
            if let Some(root) = self.root_of(&other)
                && self.selected(root, &other)
            {
                self.visit_file(root, &other, false)?;
            }
        }
        Ok(unknown)
    }

    /// Deletes indexed (or sent) documents at `path` or below it that are not in `seen`, not
    /// under a directory that could not be listed, and whose file is not found (an I/O error
    /// other than "not found" is an outage, not a deletion).
    fn delete_missing_under(
        &self,
        path: &Path,
        known: &mut Option<BTreeSet<String>>,
        seen: &BTreeSet<String>,
        unlisted: &[PathBuf],
    ) -> Result<(), ConnectorError> {
        self.delete_under(path, known, |id| {
            !seen.contains(id)
                && !unlisted.iter().any(|d| under(id, d))
                && std::fs::symlink_metadata(id)
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
        })
    }

    /// Deletes the documents at `path` or below it, indexed or sent, for which `gone` holds.
    /// `known`: [`Scanner::known_ids`], read once per batch of watched paths (a review: each
    /// deleted path read every document of the index again, so deleting 50,000 files of a
    /// large index held the watch, and the pipeline's writes, for hours); the ids are ranged
    /// by prefix in it.
    fn delete_under(
        &self,
        path: &Path,
        known: &mut Option<BTreeSet<String>>,
        gone: impl Fn(&str) -> bool,
    ) -> Result<(), ConnectorError> {
        let exact = path.to_string_lossy().into_owned();
        let mut prefix = exact.clone();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        let known = known.get_or_insert_with(|| self.known_ids());
        let mut doomed: Vec<String> = known
            .range(prefix.clone()..)
            .take_while(|id| id.starts_with(&prefix))
            .filter(|id| gone(id))
            .cloned()
            .collect();
        if known.contains(&exact) && gone(&exact) {
            doomed.push(exact);
        }
        for id in doomed {
            known.remove(&id);
            self.send_delete(id)?;
        }
        Ok(())
    }

    /// `walked`: the path came from a walk that follows no links (no resolving needed before
    /// the read; the read itself is always checked).
    fn visit_file(&self, root: &Path, path: &Path, walked: bool) -> Result<(), ConnectorError> {
        if path.to_str().is_none() {
            // Its id would be a lossy spelling that another file's name can share: that file's
            // document would be replaced or deleted by this one's.
            self.count(|j| j.counts.scanned += 1);
            self.count_failure(&path.to_string_lossy(), NOT_UNICODE);
            return Ok(());
        }
        let key = self.key(path);
        let prev = self.last_known(&key);
        let known = prev.is_some();
        match self.read_if_changed(root, path, walked, &key, prev) {
            Ok(Some(doc)) => {
                self.remember(
                    &key.native_id,
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
                self.send_blocking(Change::Upsert(Box::new(doc)))
            }
            Ok(None) => {
                self.count(|j| {
                    j.counts.scanned += 1;
                    j.counts.unchanged += 1;
                });
                Ok(())
            }
            Err(Unread::Keep(reason)) => {
                self.count(|j| j.counts.scanned += 1);
                self.count_failure(
                    &key.native_id,
                    &format!("{reason}; the indexed version stays"),
                );
                Ok(())
            }
            Err(Unread::Skip(reason)) => {
                self.count(|j| j.counts.scanned += 1);
                self.count_failure(&key.native_id, &reason);
                // A skipped document is removed from the index.
                self.remember(&key.native_id, None);
                self.send_blocking(Change::Skipped { key, reason })
            }
        }
    }

    /// Whether `path` (under `root`) passes through no symbolic link below the root; `None`
    /// when that cannot be told (it cannot be resolved: an I/O error, or it went meanwhile).
    fn link_free(&self, root: &Path, path: &Path) -> Option<bool> {
        let rel = path.strip_prefix(root).unwrap_or(path);
        let real = path.canonicalize().ok()?;
        Some(real == self.canonical_root(root).join(rel))
    }

    fn canonical_root<'a>(&'a self, root: &'a Path) -> &'a Path {
        self.roots
            .iter()
            .find(|(r, _)| r == root)
            .map(|(_, c)| c.as_path())
            .unwrap_or(root)
    }

    /// Where a real path lies: the canonical root holding it, if any.
    fn root_holding(&self, real: &Path) -> Option<&Path> {
        self.roots
            .iter()
            .map(|(_, c)| c.as_path())
            .filter(|c| real.starts_with(c))
            .max_by_key(|c| c.as_os_str().len())
    }

    /// Returns the document when it is new or changed, `None` when unchanged, or the reason it
    /// cannot be indexed.
    fn read_if_changed(
        &self,
        root: &Path,
        path: &Path,
        walked: bool,
        key: &DocKey,
        prev: Option<docent_connector_api::IndexedDoc>,
    ) -> Result<Option<SourceDocument>, Unread> {
        // By path first, to skip unchanged files without opening them: the file the path leads
        // to, and the root whose rules apply to it.
        let (acl_root, target) = self.resolve(root, path, walked, prev.is_some())?;
        // A file that cannot even be looked at for a cause that says nothing about it (the
        // server under it went away mid-walk) is as if the walk had not reached it: an indexed
        // version stays (found by a review: every file listed before the outage was withdrawn).
        let meta = std::fs::metadata(&target).map_err(|e| unread_of(&e, prev.is_some()))?;
        if meta.nlink() > 1 {
            let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
            let (nlink, names) = links.names.entry((meta.dev(), meta.ino())).or_default();
            *nlink = (*nlink).max(meta.nlink());
            names.insert(path.to_path_buf());
        }
        // Permissions that could not be read because the server under them went away say
        // nothing of the file either: an indexed version stays, as for its metadata (a review:
        // a soft-mounted share losing its server mid-walk withdrew every file it reached).
        let known = prev.is_some();
        let (acl, version) = self
            .acl_and_version(&acl_root, &target, path, &meta, None)
            .map_err(|r| match known && r.contains(SERVER_LOST) {
                true => Unread::Keep(r),
                false => Unread::Skip(r),
            })?;
        let full = self.full.load(std::sync::atomic::Ordering::Relaxed);
        // The ACL the index holds is still the file's: a read that fails for a cause that says
        // nothing about the file (see `is_transient`) keeps the indexed version.
        let acl_stands = prev
            .as_ref()
            .is_some_and(|p| p.acl_fingerprint == acl.fingerprint());
        if let Some(prev) = prev
            && prev.version == version
            && prev.acl_fingerprint == acl.fingerprint()
            && !full
        {
            return Ok(None);
        }
        let keep_if_transient = |reason: String| {
            let transient = reason.starts_with(TRANSIENT) || reason.contains(SERVER_LOST);
            match transient {
                true if acl_stands => Unread::Keep(reason),
                _ => Unread::Skip(reason),
            }
        };
        // Then what is indexed is decided by what is opened: the real path of the open file is
        // checked again, and its ACL and version come from the descriptor, so a path swapped
        // for a link (or another file) since the check cannot lend its ACL to other content.
        let (file, real) = self
            .open_verified(root, path, &target)
            .map_err(keep_if_transient)?;
        let acl_root = if self.cfg.follow_symlinks {
            self.root_holding(&real)
                .map(Path::to_path_buf)
                .ok_or("symbolic link target lies outside the crawled roots")?
        } else {
            acl_root
        };
        let rules_path = if self.cfg.follow_symlinks {
            &real
        } else {
            &target
        };
        let ((acl, version), meta, content) = read_settled(
            &file,
            self.cfg.max_file_size,
            |meta| self.acl_and_version(&acl_root, rules_path, path, meta, Some(&file)),
            |(acl, _)| acl.fingerprint(),
        )
        .map_err(keep_if_transient)?;
        // The directories above were read by path: the open file must still be where they are
        // (a review: a directory renamed away and made again in between, `mv proj/secret
        // proj/x && mkdir -m755 proj/secret`, lent the new directory's permissions to the old
        // one's file). Its move raised events that read it again where it is now.
        {
            use std::os::fd::AsRawFd;
            let now = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()));
            if now.as_ref().ok() != Some(&real) {
                // Saved over by an editor (a new file renamed onto it), or moved: what is
                // indexed stays while its ACL stands (a second review: it was withdrawn, and
                // without a watch stayed so until the reconciliation); the events of the move
                // read it again where it is.
                let reason = "moved or replaced while it was read: read again where it is now";
                return Err(match acl_stands {
                    true => Unread::Keep(reason.into()),
                    false => Unread::Skip(reason.into()),
                });
            }
        }
        let name_hint = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let rel = path.strip_prefix(root).unwrap_or(path);
        let mut attributes = BTreeMap::new();
        attributes.insert("path".to_string(), path.to_string_lossy().into_owned());
        attributes.insert(
            "relative_path".to_string(),
            rel.to_string_lossy().into_owned(),
        );
        if let Some(ext) = path.extension() {
            attributes.insert(
                "file_type".to_string(),
                ext.to_string_lossy().to_lowercase(),
            );
        }
        Ok(Some(SourceDocument {
            key: key.clone(),
            uri: file_uri(path),
            title: None,
            mime: None,
            name_hint,
            content,
            version,
            modified_at: Some(meta.mtime()),
            attributes,
            acl,
            job: Some(self.job.load(std::sync::atomic::Ordering::Relaxed)),
            reparse: full,
        }))
    }

    /// The ACL and version of a regular file from its metadata, or why it cannot be indexed.
    /// `shown`: the document's own path (a link's, when `rules_path` is its target).
    fn acl_and_version(
        &self,
        acl_root: &Path,
        rules_path: &Path,
        shown: &Path,
        meta: &std::fs::Metadata,
        opened: Option<&std::fs::File>,
    ) -> Result<(Acl, String), String> {
        if !meta.is_file() {
            return Err("not a regular file".to_string());
        }
        // Path rules decide ACLs by path, and a hard link gives the inode a second path: with
        // rules, one path cannot tell the ACL. Without rules the ACL comes from the inode alone.
        if meta.nlink() > 1 && !self.cfg.acl_rules.is_empty() {
            return Err(format!(
                "the file has {} hard links and ACL rules apply by path: one path cannot tell its ACL",
                meta.nlink()
            ));
        }
        if meta.len() > self.cfg.max_file_size {
            return Err(format!(
                "too large: {} bytes > max_file_size {} bytes",
                meta.len(),
                self.cfg.max_file_size
            ));
        }
        let mut acl = self.acl_for(acl_root, rules_path, meta, opened)?;
        // A link shows its own path (the document's key, uri and path attributes): the
        // directories holding it narrow it too, after the rules (session 43's review: a link in
        // a directory only its owner may list, to a world-readable file, showed its name to
        // everyone).
        // Each directory of the link's path as it really is, where that is not a directory
        // of the target's: the link's own directory, and any directory its path reaches
        // through a link to a directory (`secret/projects -> ../public/projects`; a review of
        // this change). A root named through a link is not a link's.
        if shown != rules_path {
            let names = self.names.read().unwrap_or_else(|e| e.into_inner()).clone();
            // The link's own path's rules too (a `replace` giving `hr/` to `group:hr` covers a
            // link in `hr/` to a public file; a review), and whether they state its access.
            let rel = self
                .roots
                .iter()
                .map(|(r, _)| r.as_path())
                .filter(|r| shown.starts_with(r))
                .max_by_key(|r| r.as_os_str().len())
                .and_then(|r| shown.strip_prefix(r).ok())
                .ok_or("the link lies outside the crawled roots")?;
            let rules = &self.cfg.acl_rules;
            let everyone = Acl::new([Principal::Everyone], []);
            acl = intersect(acl, acl_rules::apply(rules, rel, everyone));
            let replaced = acl_rules::replaced(rules, rel);
            let mut dir = shown.parent();
            while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
                let real = d
                    .canonicalize()
                    .map_err(|e| format!("{}: {}", d.display(), unreadable(&e)))?;
                if !rules_path.starts_with(&real) {
                    let root = self.root_holding(&real);
                    acl = entered(&names, Some(&real), replaced, root, acl)?;
                }
                dir = d.parent();
            }
        }
        if acl.is_closed() && shown != rules_path {
            return Err(
                "no principal both may see this link's name (its own directories and \
                 path rules) and read its target: a link is read only by who may do both"
                    .to_string(),
            );
        }
        if acl.is_closed() {
            return Err("no principal may read this file (ACL allows nobody)".to_string());
        }
        let version = format!("{}.{}:{}", meta.mtime(), meta.mtime_nsec(), meta.len());
        Ok((acl, version))
    }

    /// Opens `target` (without following a link at its last component, without blocking on a
    /// FIFO) and checks where the open file really is: without `follow_symlinks`, exactly
    /// `path` with no link below its root; with it, inside a root and selected there.
    fn open_verified(
        &self,
        root: &Path,
        path: &Path,
        target: &Path,
    ) -> Result<(std::fs::File, PathBuf), String> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(target)
            .map_err(|e| io_reason(&e))?;
        let real = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .map_err(|e| format!("cannot verify where the open file is: {e}"))?;
        if self.cfg.follow_symlinks {
            match self.root_holding(&real) {
                Some(c) if self.selected(c, &real) => {}
                Some(_) => return Err("symbolic link target is excluded by include/exclude".into()),
                None => {
                    return Err("symbolic link target lies outside the crawled roots".into());
                }
            }
        } else {
            let rel = path.strip_prefix(root).unwrap_or(path);
            if real != self.canonical_root(root).join(rel) {
                return Err(
                    "the path led through a symbolic link when it was opened (follow_symlinks = false)"
                        .into(),
                );
            }
        }
        Ok((file, real))
    }

    /// Where `path` (under `root`) really is, and the root whose ACL rules apply there.
    /// Without `follow_symlinks` a path through a link is refused; with it, the resolved path
    /// must lie inside a root (the one that then decides the ACL).
    /// `known`: the index holds a version of it, which a lost server keeps ([`unread_of`]).
    fn resolve(
        &self,
        root: &Path,
        path: &Path,
        walked: bool,
        known: bool,
    ) -> Result<(PathBuf, PathBuf), Unread> {
        // (A review: any error here withdrew the file, so with `follow_symlinks` a share lost
        // mid-walk withdrew every file still listed.)
        let canonical = || path.canonicalize().map_err(|e| unread_of(&e, known));
        if !self.cfg.follow_symlinks {
            if walked {
                return Ok((root.to_path_buf(), path.to_path_buf()));
            }
            let resolved = canonical()?;
            let rel = path.strip_prefix(root).unwrap_or(path);
            if resolved != self.canonical_root(root).join(rel) {
                return Err("symbolic link not followed (follow_symlinks = false)".into());
            }
            return Ok((root.to_path_buf(), path.to_path_buf()));
        }
        let resolved = canonical()?;
        let direct = self
            .canonical_root(root)
            .join(path.strip_prefix(root).unwrap_or(path));
        if resolved != direct {
            self.link_targets
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(resolved.clone())
                .or_default()
                .insert(path.to_path_buf());
        }
        match self.root_holding(&resolved) {
            // The globs apply to the target too: a link must not bring in an excluded file.
            Some(c) if self.selected(c, &resolved) => Ok((c.to_path_buf(), resolved)),
            Some(_) => Err("symbolic link target is excluded by include/exclude".into()),
            None => Err(Unread::Skip(format!(
                "symbolic link target {} lies outside the crawled roots",
                resolved.display()
            ))),
        }
    }

    /// The file's POSIX ACL, narrowed by every directory above the file, up to `/` (a reader
    /// must be let into each: search permission), then the path rules. An error when a
    /// directory's permissions cannot be read: the ACL cannot be told. `opened`: the file's
    /// descriptor, whose own list is then read (`meta` is its metadata).
    fn acl_for(
        &self,
        root: &Path,
        path: &Path,
        meta: &std::fs::Metadata,
        opened: Option<&std::fs::File>,
    ) -> Result<Acl, String> {
        let names = self.names.read().unwrap_or_else(|e| e.into_inner()).clone();
        file_acl(&names, &self.cfg.acl_rules, root, path, meta, opened)
    }
}

/// See [`Scanner::acl_for`]: `path` lies under `root`, `meta` is its file's (of `opened` when
/// given).
fn file_acl(
    names: &PosixNames,
    rules: &[AclRule],
    root: &Path,
    path: &Path,
    meta: &std::fs::Metadata,
    opened: Option<&std::fs::File>,
) -> Result<Acl, String> {
    let rel = path.strip_prefix(root).unwrap_or(path);
    // Where an access control list (`setfacl`) adds entries, the mode bits do not tell who may
    // read (their group bits are the list's mask): the list does (`posix_list`). A `replace`
    // rule states the access instead.
    let replaced = acl_rules::replaced(rules, rel);
    let acl = if replaced {
        posix_acl(names, meta.uid(), meta.gid(), meta.mode())
    } else {
        // The list of what was opened, from its descriptor, or else of the path; either way
        // read between two looks at the same metadata, so that the mode and the list belong
        // together (a `setfacl -b` in between would leave the old mask as group bits).
        let (meta, list) = match opened {
            Some(f) => fd_access_list(f, meta.dev())?,
            None => path_access_list(path, meta.dev())?,
        };
        match list {
            Some(entries) => list_acl(names, meta.uid(), meta.gid(), &entries)?,
            None => posix_acl(names, meta.uid(), meta.gid(), meta.mode()),
        }
    };
    let acl = entered(names, path.parent(), replaced, Some(root), acl)?;
    Ok(acl_rules::apply(rules, rel, acl))
}

/// `acl` narrowed by every directory from `first` up to `/` (a reader must be let into each:
/// search permission). Every directory, not only those under the root: a root inside a
/// directory only a group may enter (`/srv/shares/hr` 0750, root `/srv/shares/hr/policies`) is
/// that group's on this machine (session 43's review: its files were indexed for everyone).
/// `dir_access_list` keeps what it read of each directory while its change time stands.
/// `replaced`: a rule states the file's access, so only the directories' mode bits are read.
/// `root`: the crawled root; a directory above it on a mount whose lists are not read (a root
/// file system on fuse-overlayfs in a rootless container, 9P) counts by its mode bits instead
/// of skipping every file of the root (a review of this change): it narrows all the same. Any
/// other failure to read such a directory skips the file, as below the root.
fn entered(
    names: &PosixNames,
    first: Option<&Path>,
    replaced: bool,
    root: Option<&Path>,
    mut acl: Acl,
) -> Result<Acl, String> {
    let mut dir = first;
    while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
        let mode_bits = || {
            std::fs::symlink_metadata(d)
                .map(|m| (m, None))
                .map_err(|e| format!("cannot tell who may enter {}: {e}", d.display()))
        };
        // Not followed: a directory swapped for a link since the walk is not another's.
        let (m, list) = if replaced {
            mode_bits()?
        } else if root.is_some_and(|r| d.starts_with(r)) {
            dir_access_list(d).map_err(|why| format!("{}: {why}", d.display()))?
        } else {
            dir_access_list(d).or_else(|why| match why.starts_with(UNTRUSTED_MOUNT) {
                true => mode_bits(),
                false => Err(format!("{}: {why}", d.display())),
            })?
        };
        if !m.is_dir() {
            return Err(format!(
                "{} is no longer a directory: read again at the next scan",
                d.display()
            ));
        }
        let enter = match list {
            Some(entries) => list_dir_acl(names, m.uid(), m.gid(), entries.as_ref())
                .map_err(|why| format!("{}: {why}", d.display()))?,
            None => posix_dir_acl(names, m.uid(), m.gid(), m.mode()),
        };
        acl = intersect(acl, enter);
        dir = d.parent();
    }
    Ok(acl)
}

/// Why a file or directory with a POSIX access list that cannot be used is skipped (shared with
/// the nfs connector).
pub const ACL_LIST: &str = "has a POSIX access control list that cannot be used: state its \
     access with an acl_rules entry (mode = \"replace\")";

/// `path`'s metadata (not following a final link) and [`access_list`], read so that they belong
/// together: the same inode and change time before and after the list (a `setfacl`, a `chmod`
/// or a swap in between is caught, and the pair read again).
fn path_access_list(
    path: &Path,
    dev: u64,
) -> Result<(std::fs::Metadata, Option<Vec<ListEntry>>), String> {
    consistent(
        || std::fs::symlink_metadata(path),
        || access_list(path, dev, Source::Path),
    )
}

/// Directories' lists as last read, by path, with the (device, inode, change time) they were
/// read at: every file below a directory asks for it, and an unchanged one is not read again.
/// Forgotten at each reconciliation (with [`forget_file_systems`]).
type DirLists = HashMap<PathBuf, ((u64, u64, i64, i64), SharedList)>;
type SharedList = Option<Arc<[ListEntry]>>;
static DIR_LISTS: std::sync::LazyLock<std::sync::Mutex<DirLists>> =
    std::sync::LazyLock::new(Default::default);

/// [`path_access_list`] of directory `d`, from [`DIR_LISTS`] while its change time stands.
fn dir_access_list(d: &Path) -> Result<(std::fs::Metadata, SharedList), String> {
    let key = |m: &std::fs::Metadata| (m.dev(), m.ino(), m.ctime(), m.ctime_nsec());
    let m = std::fs::symlink_metadata(d).map_err(|e| unreadable(&e))?;
    let lists = || DIR_LISTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((at, list)) = lists().get(d)
        && *at == key(&m)
    {
        return Ok((m, list.clone()));
    }
    let (m, list) = path_access_list(d, m.dev())?;
    let list: SharedList = list.map(Into::into);
    // Change times come from a coarse clock: a change in the same tick as the one read leaves
    // the change time as it is. An answer about a directory changed in the last two seconds is
    // not kept, so such a change cannot hide behind it.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if m.ctime() + 2 <= now {
        lists().insert(d.to_path_buf(), (key(&m), list.clone()));
    }
    Ok((m, list))
}

/// The open `file`'s metadata and [`access_list`], read so that they belong together.
fn fd_access_list(
    file: &std::fs::File,
    dev: u64,
) -> Result<(std::fs::Metadata, Option<Vec<ListEntry>>), String> {
    use std::os::fd::AsRawFd;
    consistent(
        || file.metadata(),
        || {
            access_list(
                Path::new("the opened file"),
                dev,
                Source::Fd(file.as_raw_fd()),
            )
        },
    )
}

/// Metadata and a list read between two looks at the metadata, until both looks agree (a file
/// being written moves its change time; a few tries are enough).
fn consistent(
    stat: impl Fn() -> std::io::Result<std::fs::Metadata>,
    list: impl Fn() -> Result<Option<Vec<ListEntry>>, String>,
) -> Result<(std::fs::Metadata, Option<Vec<ListEntry>>), String> {
    let key = |m: &std::fs::Metadata| (m.ino(), m.ctime(), m.ctime_nsec());
    for _ in 0..4 {
        let before = stat().map_err(|e| unreadable(&e))?;
        let l = list()?;
        let after = stat().map_err(|e| unreadable(&e))?;
        if key(&before) == key(&after) {
            return Ok((after, l));
        }
    }
    Err("its permissions kept changing while they were read: read again at the next scan".into())
}

/// Reads the open `file` whole (at most `max` bytes) after `decide` has judged its metadata
/// (its ACL and version). When the file changed during the read, `decide` judges it again: the
/// content stands if `key` (what decides who may read it) is the same before and after, and
/// is read again from the start if not (a `chmod` narrowing the file just before new text is
/// written into it must not leave that text under the ACL read before). Gives what `decide`
/// said of the metadata read before the content, that metadata (whose version then shows a
/// file written during the read as changed since), and the content. A file whose access keeps
/// changing is not read.
fn read_settled<T, K: PartialEq>(
    mut file: &std::fs::File,
    max: u64,
    mut decide: impl FnMut(&std::fs::Metadata) -> Result<T, String>,
    key: impl Fn(&T) -> K,
) -> Result<(T, std::fs::Metadata, Vec<u8>), String> {
    use std::io::{Read, Seek};
    let stamp = |m: &std::fs::Metadata| {
        let times = (m.ctime(), m.ctime_nsec(), m.mtime(), m.mtime_nsec());
        (times, m.mode(), m.uid(), m.gid(), m.size())
    };
    for _ in 0..4 {
        let before = file.metadata().map_err(|e| io_reason(&e))?;
        let decided = decide(&before)?;
        file.rewind().map_err(|e| io_reason(&e))?;
        let mut buf = Vec::with_capacity(before.len().min(max) as usize);
        file.take(max + 1)
            .read_to_end(&mut buf)
            .map_err(|e| io_reason(&e))?;
        if buf.len() as u64 > max {
            return Err(format!("too large: over max_file_size {max} bytes"));
        }
        let after = file.metadata().map_err(|e| io_reason(&e))?;
        if stamp(&before) == stamp(&after) || key(&decide(&after)?) == key(&decided) {
            return Ok((decided, before, buf));
        }
    }
    Err(
        "who may read it kept changing while it was read: read again at its next change or scan"
            .into(),
    )
}

/// Why a file was not read: skipped (withdrawn from the index), or kept at its indexed version
/// (a failure that says nothing about the file, with the ACL the index holds confirmed).
enum Unread {
    Skip(String),
    Keep(String),
}

impl From<String> for Unread {
    fn from(reason: String) -> Self {
        Self::Skip(reason)
    }
}

impl From<&str> for Unread {
    fn from(reason: &str) -> Self {
        Self::Skip(reason.to_string())
    }
}

/// How the reason of a transient read failure begins (see [`is_transient`]).
const TRANSIENT: &str = "unreadable for now: ";

/// A file that cannot be looked at (`e`): as if the walk had not reached it when the server
/// under it went away and the index holds a version of it (`known`), which then stays; else
/// skipped, which withdraws it.
fn unread_of(e: &std::io::Error, known: bool) -> Unread {
    if known && server_lost(e) {
        Unread::Keep(io_reason(e))
    } else {
        Unread::Skip(io_reason(e))
    }
}

/// What a scan task that did not finish is told as: a panic without its message (the daemon
/// logs it where it happened; it may quote a file), else the runtime's reason.
fn task_failure(e: &tokio::task::JoinError) -> String {
    if e.is_panic() {
        "the scan task panicked (a bug: the daemon's log says where)".to_string()
    } else {
        format!("the scan task did not finish: {e}")
    }
}

/// Marks a reason whose cause is the server under the file gone ([`server_lost`]).
const SERVER_LOST: &str = "the server under it is unreachable: ";

/// The reason a failed look at a file's or directory's metadata gives: marked when the server
/// under it went away ([`SERVER_LOST`]).
fn unreadable(e: &std::io::Error) -> String {
    if server_lost(e) {
        format!("{SERVER_LOST}{e}")
    } else {
        format!("unreadable: {e}")
    }
}

/// The reason an I/O error gives, marked when it is transient.
fn io_reason(e: &std::io::Error) -> String {
    if is_transient(e) {
        format!("{TRANSIENT}{e}")
    } else {
        format!("unreadable: {e}")
    }
}

/// Whether an error opening or reading a file says nothing about the file: the device or the
/// network under it failed (EIO, ESTALE, ETIMEDOUT, a host or network down or unreachable, a
/// connection reset or gone, as CIFS and FUSE mounts report a lost server; an expired
/// Kerberos key), it is busy or locked (EAGAIN, EBUSY,
/// ETXTBSY, ENOLCK), or this process ran short (EMFILE, ENFILE, ENOMEM, EINTR). Such a file
/// keeps its indexed version when its ACL is confirmed unchanged; withdrawing it would let one
/// bad read delete what an outage must not.
fn is_transient(e: &std::io::Error) -> bool {
    server_lost(e)
        || matches!(
            e.raw_os_error(),
            Some(
                libc::EIO
                    | libc::ESTALE
                    | libc::ETIMEDOUT
                    | libc::EKEYEXPIRED
                    | libc::EAGAIN
                    | libc::EBUSY
                    | libc::ETXTBSY
                    | libc::ENOLCK
                    | libc::EMFILE
                    | libc::ENFILE
                    | libc::ENOMEM
                    | libc::EINTR
            )
        )
}

/// Whether an error says the server under a network mount is gone (down, unreachable, the
/// connection lost): no file's own state, and not lasting for one file while others are read.
/// A file whose status cannot be read for such a cause keeps its indexed version unconfirmed;
/// one with EIO or ESTALE (a damaged inode can give them for good) does not.
fn server_lost(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EHOSTDOWN
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH
                | libc::ENETDOWN
                | libc::ENOTCONN
                | libc::ECONNRESET
                | libc::ECONNABORTED
        )
    )
}

/// Where [`access_list`] reads: a path (not following a final link) or an open descriptor.
#[derive(Clone, Copy)]
enum Source {
    Path,
    Fd(std::os::fd::RawFd),
}

/// The entries of an extended POSIX access control list, `None` without one (a minimal one is
/// the mode bits and is not stored). An error when that cannot be told. The crate's `unsafe`
/// calls: libc's `lgetxattr` and `fgetxattr`. `path` names the object (for a path source, it is
/// the object) on device `dev`.
#[allow(unsafe_code)]
fn access_list(path: &Path, dev: u64, source: Source) -> Result<Option<Vec<ListEntry>>, String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| "the path holds a NUL byte".to_string())?;
    let kind = |c: &std::ffi::CStr| match source {
        Source::Path => file_system_of(dev, c),
        // The device was seen through a path before (the walk); else the descriptor's
        // device is asked by its /proc path.
        Source::Fd(fd) => {
            let proc = std::ffi::CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL");
            file_system_of(dev, &proc)
        }
    };
    // CIFS, SMB and FUSE mounts make mode bits up from mount options (`file_mode`, `umask`),
    // whatever extended attributes they answer (s3fs answers "none"): never trusted.
    if let Some(
        k @ ("CIFS" | "SMB2" | "SMB" | "FUSE" | "FAT" | "exFAT" | "NTFS" | "ISO 9660" | "UDF"
        | "HFS+" | "GPFS"),
    ) = kind(&c)
    {
        return Err(untrusted_mount(k));
    }
    let get_named = |name: &std::ffi::CStr, buf: *mut libc::c_void, len: usize| -> isize {
        // SAFETY: the strings are NUL-terminated and live across the call; `buf` is null with
        // `len` 0 (asking only the size) or writable for `len` bytes (see the callers).
        unsafe {
            match source {
                Source::Path => libc::lgetxattr(c.as_ptr(), name.as_ptr(), buf, len),
                Source::Fd(fd) => libc::fgetxattr(fd, name.as_ptr(), buf, len),
            }
        }
    };
    let get = |buf: *mut libc::c_void, len: usize| get_named(c"system.posix_acl_access", buf, len);
    // A local file system without POSIX lists may keep NFSv4 ones (OpenZFS with
    // `acltype=nfsv4`, as TrueNAS sets it for SMB shares), shown as these attributes, which
    // its mode bits only approximate (session 34's review).
    let nfs4_list = || {
        [c"system.nfs4_acl", c"system.nfs4_acl_xdr"]
            .iter()
            .any(|n| get_named(n, std::ptr::null_mut(), 0) >= 0)
    };
    // A list set between asking its size and reading it is larger: ask again.
    for _ in 0..4 {
        let size = get(std::ptr::null_mut(), 0);
        if size < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENODATA) => Ok(None),
                // No POSIX ACLs on this file system. A local one then has none; a network one
                // may keep its own (NFSv4, SMB) and show mode bits that do not say who may
                // read (a CIFS mount's are the mount's `file_mode`).
                Some(libc::ENOTSUP) => match kind(&c) {
                    None if nfs4_list() => Err(untrusted_mount("NFSv4 ACL")),
                    None => Ok(None),
                    Some(k) => Err(untrusted_mount(k)),
                },
                _ if server_lost(&e) => Err(format!("{SERVER_LOST}{e}")),
                _ => Err(format!(
                    "cannot tell whether {} has an access control list: {e}",
                    path.display()
                )),
            };
        }
        let mut buf = vec![0u8; size as usize];
        let n = get(buf.as_mut_ptr().cast(), buf.len());
        if n >= 0 {
            buf.truncate(n as usize);
            return posix_list::parse_xattr(&buf).map(Some);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) => continue,
            Some(libc::ENODATA) => return Ok(None),
            _ => {
                return Err(format!(
                    "cannot read the access control list of {}: {e}",
                    path.display()
                ));
            }
        }
    }
    Err(format!(
        "the access control list of {} kept changing while it was read",
        path.display()
    ))
}

/// How [`untrusted_mount`]'s reasons start.
const UNTRUSTED_MOUNT: &str = "lies on a ";

fn untrusted_mount(kind: &str) -> String {
    format!(
        "{UNTRUSTED_MOUNT}{kind} mount, whose permissions the mode bits do not state: use the \
         smb or nfs connector, or state its access with an acl_rules entry (mode = \"replace\")"
    )
}

/// What a walk accounts for ([`Scanner::walk`]).
struct Walked<'a> {
    /// Every file it saw.
    seen: &'a mut BTreeSet<String>,
    /// Paths it could not list: what is indexed under them is neither deleted nor changed.
    unlisted: &'a mut Vec<PathBuf>,
    /// Why a share below the root is taken for unmounted.
    outages: &'a mut Vec<String>,
}

/// Tells, for each directory a walk enters below where it started, whether it is a mount
/// point: on another device than its parent, or listed as one in `/proc/self/mountinfo` (a
/// bind mount within one file system; read once per walk, not once per directory).
struct SubMounts<'t> {
    root: PathBuf,
    canonical: PathBuf,
    listed: &'t MountTable,
    /// The device of the directory entered at each depth, the walk's start at 0.
    devs: Vec<u64>,
    /// Directories met that are mount points or were recorded as such, as walked.
    met: BTreeSet<PathBuf>,
    /// Mount points entered, as walked.
    entered: Vec<PathBuf>,
}

/// The mount points `/proc/self/mountinfo` lists, read once per reconciliation or batch of
/// events (it can be large: a container host lists thousands).
type MountTable = BTreeSet<PathBuf>;

fn mount_table() -> MountTable {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|info| {
            info.lines()
                .filter_map(|l| l.split(' ').nth(4))
                .map(|m| PathBuf::from(unescape_mount_path(m)))
                .collect()
        })
        .unwrap_or_default()
}

impl<'t> SubMounts<'t> {
    fn new(canonical_root: &Path, root: &Path, listed: &'t MountTable) -> Self {
        Self {
            root: root.to_path_buf(),
            canonical: canonical_root.to_path_buf(),
            listed,
            devs: Vec::new(),
            met: BTreeSet::new(),
            entered: Vec::new(),
        }
    }

    /// The directory just entered was found mounted by [`mount_point`] (an expired automount
    /// it mounted again): its children are on the device it shows now.
    fn remounted(&mut self, path: &Path) {
        if let (Ok(m), Some(top)) = (std::fs::metadata(path.join(".")), self.devs.last_mut()) {
            *top = m.dev();
        }
    }

    /// Where `path` (as walked, under the root) lies with every link in the root resolved.
    fn canonical_of(&self, path: &Path) -> PathBuf {
        self.canonical
            .join(path.strip_prefix(&self.root).unwrap_or(path))
    }

    /// Whether the directory `entry` is a mount point; `None` for where the walk started.
    fn enter(&mut self, entry: &walkdir::DirEntry) -> Option<bool> {
        let depth = entry.depth();
        self.devs.truncate(depth);
        let parent = self.devs.last().copied();
        // A directory whose metadata cannot be read (it just went) is taken to be on its
        // parent's device, so that its children are not all taken for mount points.
        let mut dev = entry
            .metadata()
            .map(|m| m.dev())
            .ok()
            .or(parent)
            .unwrap_or(0);
        if depth > 0 && Some(dev) != parent {
            // Through the directory: an automount trigger (autofs) mounts its share, whose
            // device its children are on.
            if let Ok(m) = std::fs::metadata(entry.path().join(".")) {
                dev = m.dev();
            }
        }
        self.devs.push(dev);
        let parent = parent.filter(|_| depth > 0)?;
        // A directory reached through a link (`follow_symlinks`) is where the link leads, not
        // a mount point, whatever device that is on.
        if entry.path_is_symlink() {
            return Some(false);
        }
        let path = entry.path().to_path_buf();
        let is = dev != parent || self.listed.contains(&self.canonical_of(&path));
        if is {
            self.entered.push(path.clone());
            self.met.insert(path);
        }
        Some(is)
    }
}

/// Whether `path` (canonical) is a mount point: on another device than its parent, or listed
/// as one in `/proc/self/mountinfo` (a bind mount within one file system).
fn mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(parent) = path.parent() else {
        return false;
    };
    // Through the directory: an automount that expired (autofs, an NFS submount) is mounted
    // again, so that it is not taken for one that went away.
    let _ = std::fs::metadata(path.join("."));
    let dev = |p: &Path| std::fs::symlink_metadata(p).map(|m| m.dev());
    if let (Ok(own), Ok(above)) = (dev(path), dev(parent))
        && own != above
    {
        return true;
    }
    std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|info| {
        info.lines()
            .filter_map(|l| l.split(' ').nth(4))
            .any(|m| Path::new(&unescape_mount_path(m)) == path)
    })
}

/// A mount point as `/proc/self/mountinfo` writes it: space, tab, newline and backslash as
/// three octal digits after a backslash.
fn unescape_mount_path(s: &str) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStringExt;
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                let v = d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
                out.push(v as u8);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    std::ffi::OsString::from_vec(out)
}

/// File system kinds by device, asked once per device and reconciliation (see
/// [`file_system_of`]).
static KINDS: std::sync::Mutex<BTreeMap<u64, Option<&'static str>>> =
    std::sync::Mutex::new(BTreeMap::new());

/// Forgets the kinds asked so far: a device number freed by an unmount can come back as
/// another file system (a CIFS mount where a tmpfs was).
fn forget_file_systems() {
    KINDS.lock().unwrap_or_else(|e| e.into_inner()).clear();
    DIR_LISTS.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// [`network_file_system`] of `path` on device `dev`, asked once per device (a reconciliation
/// checks every file and every directory above it).
fn file_system_of(dev: u64, path: &std::ffi::CStr) -> Option<&'static str> {
    if let Some(kind) = KINDS.lock().unwrap_or_else(|e| e.into_inner()).get(&dev) {
        return *kind;
    }
    let kind = network_file_system(path);
    // A failed `statfs` (the path just vanished) says nothing about the device.
    if kind != Some(UNIDENTIFIED) {
        KINDS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(dev, kind);
    }
    kind
}

const UNIDENTIFIED: &str = "file system that cannot be identified";

/// The kind of network file system `path` lies on, if it is one (by `statfs`'s type).
#[allow(unsafe_code)]
fn network_file_system(path: &std::ffi::CStr) -> Option<&'static str> {
    // SAFETY: `statfs` writes only into the zeroed struct it is given; the path is
    // NUL-terminated and lives across the call.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(path.as_ptr(), &mut st) } != 0 {
        return Some(UNIDENTIFIED);
    }
    // Magic numbers from linux/magic.h and the file systems' sources.
    #[allow(clippy::unnecessary_cast)] // `f_type`'s width differs between targets
    match st.f_type as u32 {
        0x6969 => Some("NFS"),
        0xFF53_4D42 => Some("CIFS"),
        0xFE53_4D42 => Some("SMB2"),
        0x517B => Some("SMB"),
        0x6573_5546 => Some("FUSE"),
        0x00C3_6400 => Some("Ceph"),
        0x0102_1997 => Some("9P"),
        0x5346_414F => Some("AFS"),
        // IBM Storage Scale (GPFS) keeps NFSv4-style ACLs, which the POSIX list reading does
        // not see (it may answer "no list" for a file that has one): its mode bits would be
        // trusted and its deny entries missed (a review). Never trusted, as CIFS is.
        0x4750_4653 => Some("GPFS"),
        // Not network file systems, but like CIFS their mode bits come from mount options
        // (`umask`, `fmask`) and no ACL is kept (a review: an NTFS volume mounted with ntfs3
        // was indexed with every file readable by everyone).
        0x4D44 => Some("FAT"),
        0x2011_BAB0 => Some("exFAT"),
        0x7366_746E | 0x5346_544E => Some("NTFS"),
        0x9660 => Some("ISO 9660"),
        0x1501_3346 => Some("UDF"),
        0x482B | 0x4244 => Some("HFS+"),
        _ => None,
    }
}

/// Who POSIX lets through one permission bit (`bit`: 4 read, 1 search) of `mode`, as an ACL.
/// POSIX checks one class: the owner by the owner bits, the group's members by the group bits,
/// everyone else by the other bits. So an owner (or group) without the bit is denied even when
/// a wider class has it (a `0604` file is not readable by its group). The owner, when also a
/// member of a denied group, is denied here although POSIX would let them read: narrower,
/// never wider.
///
/// A deny must name whom it denies: an id the passwd or group file does not name would be
/// denied only as a number, which the identities that are its members need not carry (a group
/// created after the files were read, one from LDAP). Then nobody is allowed: the document is
/// skipped rather than opened to the denied ones.
fn posix_access(names: &PosixNames, uid: u32, gid: u32, mode: u32, bit: u32) -> Acl {
    let (owner, group, other) = (
        mode & (bit << 6) != 0,
        mode & (bit << 3) != 0,
        mode & bit != 0,
    );
    let user = Principal::User(names.user(uid));
    let grp = Principal::Group(names.group(gid));
    let (mut allow, mut deny) = (BTreeSet::new(), BTreeSet::new());
    // Denying everyone: an `extend` rule's allows cannot reopen it (only `replace` states
    // access anew).
    let nobody = || Acl {
        allow: BTreeSet::new(),
        deny: BTreeSet::from([Principal::Everyone]),
    };
    if owner {
        allow.insert(user);
    } else if group || other {
        if !names.knows_user(uid) {
            return nobody();
        }
        deny.insert(user);
    }
    if group {
        allow.insert(grp);
    } else if other {
        if !names.knows_group(gid) {
            return nobody();
        }
        deny.insert(grp);
    }
    if other {
        allow.insert(Principal::Everyone);
    }
    Acl { allow, deny }
}

/// The ACL POSIX owner, group and mode bits give a file: owner-readable → `user:<owner>`,
/// group-readable → `group:<group>`, world-readable → `everyone` (names from `names`, numeric
/// ids when unknown), and a deny for an owner or group without read when a wider class has it.
/// Shared with the network-share connectors (NFS modes, Samba's Unix SIDs).
pub fn posix_acl(names: &PosixNames, uid: u32, gid: u32, mode: u32) -> Acl {
    posix_access(names, uid, gid, mode, 0o4)
}

/// Who may enter a directory (search permission), by its owner, group and mode bits.
pub fn posix_dir_acl(names: &PosixNames, uid: u32, gid: u32, mode: u32) -> Acl {
    posix_access(names, uid, gid, mode, 0o1)
}

/// Who both ACLs admit, as far as principals alone can tell: `everyone` on one side leaves the
/// other side's allow list (on both, the first side's); otherwise only principals both list (a user one side allows by
/// name and the other by a group is left out: narrower, never wider). Denies add up.
pub fn intersect(a: Acl, b: Acl) -> Acl {
    let allow = match (
        a.allow.contains(&Principal::Everyone),
        b.allow.contains(&Principal::Everyone),
    ) {
        // Both admit everyone: the first side's list, unchanged (what it names adds nothing).
        (true, true) => a.allow,
        (true, false) => b.allow,
        (false, true) => a.allow,
        (false, false) => a.allow.intersection(&b.allow).cloned().collect(),
    };
    let mut deny = a.deny;
    deny.extend(b.deny);
    Acl { allow, deny }
}

/// Path-prefix ACL rules applied to a relative path's ACL (shared with the network shares).
pub fn apply_acl_rules(rules: &[AclRule], rel: &Path, acl: Acl) -> Acl {
    acl_rules::apply(rules, rel, acl)
}

/// Whether native id `id` (an absolute path) lies under directory `dir`.
fn under(id: &str, dir: &Path) -> bool {
    Path::new(id).starts_with(dir) && Path::new(id) != dir
}

/// The known documents a walk shows are gone: not seen, and not under a path it could not read.
fn gone(known: BTreeSet<String>, seen: &BTreeSet<String>, unlisted: &[PathBuf]) -> Vec<String> {
    known
        .into_iter()
        .filter(|id| !seen.contains(id) && !unlisted.iter().any(|d| under(id, d)))
        .collect()
}

fn file_uri(path: &Path) -> String {
    let mut s = String::from("file://");
    for b in path.to_string_lossy().bytes() {
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

    /// Session 31's review: any error reading an unchanged file's content sent `Skipped`, so a
    /// device or network hiccup withdrew the file. A transient cause is marked, and such a
    /// failure keeps the indexed version when the ACL is confirmed.
    #[test]
    fn a_transient_read_failure_is_marked_and_others_are_not() {
        for code in [
            libc::EIO,
            libc::ESTALE,
            libc::EAGAIN,
            libc::EMFILE,
            libc::ETIMEDOUT,
            // A lost server, as CIFS and FUSE mounts report it (found by a review).
            libc::EHOSTDOWN,
            libc::ENOTCONN,
            libc::ECONNRESET,
        ] {
            let r = io_reason(&std::io::Error::from_raw_os_error(code));
            assert!(r.starts_with(TRANSIENT), "{r}");
        }
        for code in [libc::ENOENT, libc::EACCES, libc::ELOOP, libc::EISDIR] {
            let r = io_reason(&std::io::Error::from_raw_os_error(code));
            assert!(r.starts_with("unreadable: "), "{r}");
        }
    }
    use std::os::unix::fs::PermissionsExt;

    /// Names for uids 10 and 11 and gids 20 and 21, shown as numbers ("user:10"); 99 has none.
    fn names() -> PosixNames {
        let dir = tempfile::tempdir().unwrap();
        let (passwd, group) = (dir.path().join("passwd"), dir.path().join("group"));
        std::fs::write(&passwd, "10:x:10:20::/:/bin/sh\n11:x:11:21::/:/bin/sh\n").unwrap();
        std::fs::write(&group, "20:x:20:\n21:x:21:\n").unwrap();
        PosixNames::load(&passwd, &group)
    }

    /// A queue overflow reaches the watch loop as the rescan marker; reads do not at all.
    #[test]
    fn an_event_queue_overflow_asks_for_a_rescan() {
        use notify::event::{AccessKind, Flag, ModifyKind};
        let overflow = notify::Event::new(EventKind::Other).set_flag(Flag::Rescan);
        assert_eq!(watched_paths(Ok(overflow)), [rescan_marker()]);
        let chmod = notify::Event::new(EventKind::Modify(ModifyKind::Metadata(
            notify::event::MetadataKind::Permissions,
        )))
        .add_path("/srv/share/a.md".into());
        assert_eq!(watched_paths(Ok(chmod)), [PathBuf::from("/srv/share/a.md")]);
        let read = notify::Event::new(EventKind::Access(AccessKind::Read))
            .add_path("/srv/share/a.md".into());
        assert!(watched_paths(Ok(read)).is_empty());
        // Closing a file written to is a change (a write through a memory map raises nothing
        // else; a review); closing one read is not.
        let closed = |mode| {
            notify::Event::new(EventKind::Access(AccessKind::Close(mode)))
                .add_path("/srv/share/a.md".into())
        };
        assert_eq!(
            watched_paths(Ok(closed(notify::event::AccessMode::Write))),
            [PathBuf::from("/srv/share/a.md")]
        );
        assert!(watched_paths(Ok(closed(notify::event::AccessMode::Read))).is_empty());
        // The watcher's own failure (a limit on watches reached): everything is walked (a
        // review: it was dropped).
        let failed = notify::Error::generic("inotify watch limit reached");
        assert_eq!(watched_paths(Err(failed)), [rescan_marker()]);
    }

    /// Records the reports it gets.
    #[derive(Default)]
    struct Reports(std::sync::Mutex<Vec<usize>>);

    impl docent_connector_api::MembershipSink for Reports {
        fn report(
            &self,
            _connector: &str,
            groups: Vec<docent_connector_api::GroupMembership>,
        ) -> Result<(), String> {
            self.0.lock().unwrap().push(groups.len());
            Ok(())
        }
    }

    /// A group database that cannot be read is not an empty one: nothing is reported (an empty
    /// report would drop every membership, and the deny entries naming a group with them), the
    /// alarm says why, and the next readable database clears it (found by a review).
    #[test]
    fn an_unreadable_group_database_is_not_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (passwd, group) = (dir.path().join("passwd"), dir.path().join("group"));
        std::fs::write(&passwd, "carol:x:10:20::/:/bin/sh\n").unwrap();
        let (sink, status) = (Reports::default(), StatusHandle::default());
        report_memberships("share", &passwd, &group, &sink, &status);
        assert!(sink.0.lock().unwrap().is_empty());
        assert!(status.raised(Alarm::Memberships));

        // Nor an empty one, being rewritten (found by a review).
        std::fs::write(&group, "").unwrap();
        report_memberships("share", &passwd, &group, &sink, &status);
        assert!(sink.0.lock().unwrap().is_empty());
        assert!(status.raised(Alarm::Memberships));

        std::fs::write(&group, "staff:x:20:\ncontractors:x:21:carol\n").unwrap();
        report_memberships("share", &passwd, &group, &sink, &status);
        assert_eq!(*sink.0.lock().unwrap(), [2]);
        assert!(!status.raised(Alarm::Memberships));
    }

    /// A file whose status cannot be read keeps its indexed version only when the server under
    /// it is gone, not for an error a damaged inode can give for good (found by a review).
    #[test]
    fn only_a_lost_server_keeps_a_file_whose_status_cannot_be_read() {
        for code in [libc::EHOSTDOWN, libc::ENOTCONN, libc::ECONNRESET] {
            assert!(
                server_lost(&std::io::Error::from_raw_os_error(code)),
                "{code}"
            );
        }
        for code in [libc::EIO, libc::ESTALE, libc::ENOENT, libc::EACCES] {
            assert!(
                !server_lost(&std::io::Error::from_raw_os_error(code)),
                "{code}"
            );
        }
        // The same rule wherever a file is looked at: its status, or where its path leads
        // (a review: with `follow_symlinks`, resolving the path withdrew it on any error).
        let lost = std::io::Error::from_raw_os_error(libc::ENOTCONN);
        let gone = std::io::Error::from_raw_os_error(libc::ENOENT);
        assert!(matches!(unread_of(&lost, true), Unread::Keep(_)));
        assert!(
            matches!(unread_of(&lost, false), Unread::Skip(_)),
            "nothing to keep"
        );
        assert!(matches!(unread_of(&gone, true), Unread::Skip(_)));
    }

    /// What a directory's access list says is kept for the reconciliation only once its change
    /// time is two seconds old: a change in the same clock tick would not move it.
    #[test]
    fn a_directory_changed_just_now_is_not_kept_in_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("team");
        std::fs::create_dir(&d).unwrap();
        let cached = || {
            DIR_LISTS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&d)
        };
        dir_access_list(&d).unwrap();
        assert!(!cached());
        std::thread::sleep(std::time::Duration::from_millis(2100));
        dir_access_list(&d).unwrap();
        assert!(cached());
    }

    /// A file narrowed and rewritten after its metadata was judged and before its content was
    /// read is read again: the content comes with the metadata it was read under. A file that
    /// keeps changing is not read.
    #[test]
    fn content_is_read_with_the_metadata_it_belongs_to() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("plan.txt");
        std::fs::write(&p, "public plan").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        // Change times have the kernel's coarse clock: let the next change fall in a later tick.
        let tick = || std::thread::sleep(std::time::Duration::from_millis(20));
        tick();
        let mode = |m: &std::fs::Metadata| m.mode() & 0o777;
        let same = |m: &u32| *m;
        let file = std::fs::File::open(&p).unwrap();
        let mut calls = 0;
        let (seen, meta, content) = read_settled(
            &file,
            1 << 20,
            |m| {
                calls += 1;
                if calls == 1 {
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
                    std::fs::write(&p, "secret plan").unwrap();
                }
                Ok(mode(m))
            },
            same,
        )
        .unwrap();
        // Before, after (narrower: read again), before the second read.
        assert_eq!(calls, 3);
        assert_eq!((seen, mode(&meta)), (0o600, 0o600));
        assert_eq!(content, b"secret plan");

        // Written during the read, the same access: the content stands, with the metadata from
        // before it (so its version shows a change since).
        tick();
        let mut calls = 0;
        let (_, meta, content) = read_settled(
            &file,
            1 << 20,
            |m| {
                calls += 1;
                if calls == 1 {
                    std::fs::write(&p, "secret plan, revised").unwrap();
                }
                Ok(mode(m))
            },
            same,
        )
        .unwrap();
        assert_eq!(calls, 2);
        assert_eq!(content, b"secret plan, revised");
        assert_eq!(meta.len(), "secret plan".len() as u64);

        let mut flip = false;
        let err = read_settled(
            &file,
            1 << 20,
            |_| {
                tick();
                flip = !flip;
                let m = if flip { 0o640 } else { 0o600 };
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m)).unwrap();
                Ok(m)
            },
            same,
        )
        .unwrap_err();
        assert!(err.contains("kept changing"), "{err}");
    }

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(
            unescape_mount_path(r"/mnt/team\040share\011x\134y"),
            std::ffi::OsString::from("/mnt/team share\tx\\y")
        );
        // Not an escape: kept as written.
        assert_eq!(
            unescape_mount_path(r"/mnt/a\9b\04"),
            std::ffi::OsString::from(r"/mnt/a\9b\04")
        );
    }

    /// The file systems these tests run on are local: their mode bits are trusted.
    #[test]
    fn a_local_file_system_is_not_a_network_one() {
        let dir = tempfile::tempdir().unwrap();
        let c = std::ffi::CString::new(dir.path().to_str().unwrap()).unwrap();
        assert_eq!(network_file_system(&c), None);
        let dev = std::fs::metadata(dir.path()).unwrap().dev();
        assert_eq!(file_system_of(dev, &c), None);
        assert_eq!(network_file_system(c"/"), None);
    }

    /// A deny of an id without a name would not reach the identities it should (they carry
    /// names): nobody is allowed instead, and the document is skipped.
    #[test]
    fn a_deny_of_an_unnamed_id_allows_nobody() {
        let n = names();
        // 0604 with group 99: the group must be denied, and cannot be named.
        let acl = posix_acl(&n, 10, 99, 0o604);
        assert!(acl.allow.is_empty() && acl.is_closed(), "{acl:?}");
        // An `extend` rule's allows do not reopen it.
        let extended = apply_acl_rules(
            &[AclRule {
                path_prefix: String::new(),
                allow: vec![Principal::Group("staff".into())],
                deny: vec![],
                mode: acl_rules::RuleMode::Extend,
            }],
            Path::new("a.txt"),
            acl,
        );
        assert!(extended.is_closed(), "{extended:?}");
        // 0044 with owner 99: the owner must be denied.
        assert!(posix_acl(&n, 99, 20, 0o044).is_closed());
        // Directories alike (the search bit): 0701 denies its group.
        assert!(posix_dir_acl(&n, 10, 99, 0o701).is_closed());
        // Allowing an unnamed id is only narrower: kept, as a number.
        let acl = posix_acl(&n, 99, 98, 0o640);
        assert_eq!(set(&acl.allow), ["group:98", "user:99"]);
    }

    fn set(acl: &BTreeSet<Principal>) -> Vec<String> {
        let mut v: Vec<String> = acl.iter().map(ToString::to_string).collect();
        v.sort();
        v
    }

    #[test]
    fn posix_checks_one_class_so_a_class_without_the_bit_is_denied() {
        let n = names();
        // 0604: the owner and everyone else may read, the group may not.
        let acl = posix_acl(&n, 10, 20, 0o604);
        assert_eq!(set(&acl.allow), ["everyone", "user:10"]);
        assert_eq!(set(&acl.deny), ["group:20"]);
        // 0044: the owner may not, although the group and everyone else may.
        let acl = posix_acl(&n, 10, 20, 0o044);
        assert_eq!(set(&acl.allow), ["everyone", "group:20"]);
        assert_eq!(set(&acl.deny), ["user:10"]);
        // 0644: nobody denied.
        let acl = posix_acl(&n, 10, 20, 0o644);
        assert_eq!(set(&acl.allow), ["everyone", "group:20", "user:10"]);
        assert!(acl.deny.is_empty());
        // A directory: the search bit. 0750 lets the owner and the group in, nobody else.
        let dir = posix_dir_acl(&n, 10, 20, 0o750);
        assert_eq!(set(&dir.allow), ["group:20", "user:10"]);
        assert!(dir.deny.is_empty());
    }

    #[test]
    fn intersecting_acls_never_widens() {
        let p = |s: &str| s.parse::<Principal>().unwrap();
        let acl = |allow: &[&str], deny: &[&str]| Acl {
            allow: allow.iter().map(|s| p(s)).collect(),
            deny: deny.iter().map(|s| p(s)).collect(),
        };
        let file = acl(&["everyone", "user:a"], &["group:x"]);
        let dir = acl(&["user:root", "group:hr"], &["user:b"]);
        let both = intersect(file, dir.clone());
        assert_eq!(set(&both.allow), ["group:hr", "user:root"]);
        assert_eq!(set(&both.deny), ["group:x", "user:b"]);
        let narrow = intersect(acl(&["user:a", "group:hr"], &[]), dir);
        assert_eq!(set(&narrow.allow), ["group:hr"], "only what both list");
        let open = intersect(acl(&["everyone"], &[]), acl(&["everyone", "user:c"], &[]));
        assert_eq!(set(&open.allow), ["everyone"]);
    }

    /// Gives `path` an access control list of (tag, permissions, id) entries.
    fn set_access_acl(path: &Path, entries: &[(u16, u16, u32)]) {
        let entries: Vec<ListEntry> = entries
            .iter()
            .map(|&(tag, perm, id)| ListEntry {
                tag: u32::from(tag),
                id,
                perm: u32::from(perm),
            })
            .collect();
        crate::kernel_check::set_list(path, &entries);
    }

    const NONE: u32 = u32::MAX;

    #[test]
    fn a_file_with_an_access_control_list_is_indexed_under_the_list() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let p = root.join("shared.md");
        std::fs::write(&p, "text").unwrap();
        std::os::unix::fs::chown(&p, Some(10), Some(20)).unwrap();
        // `setfacl -m u:11:r,g:21:r` on a 0640 file: user 11 and group 21 may read too; the
        // mode now says 0640 (the mask is r).
        set_access_acl(
            &p,
            &[
                (1, 6, NONE),
                (2, 4, 11),
                (4, 4, NONE),
                (8, 4, 21),
                (0x10, 4, NONE),
                (0x20, 0, NONE),
            ],
        );
        let n = names();
        let meta = std::fs::metadata(&p).unwrap();
        let acl = file_acl(&n, &[], &root, &p, &meta, None).unwrap();
        assert_eq!(
            set(&acl.allow),
            ["group:20", "group:21", "user:10", "user:11"]
        );
        assert!(acl.deny.is_empty(), "{:?}", acl.deny);

        // A named user without read on a world-readable file is denied.
        set_access_acl(
            &p,
            &[
                (1, 6, NONE),
                (2, 0, 11),
                (4, 4, NONE),
                (0x10, 4, NONE),
                (0x20, 4, NONE),
            ],
        );
        // The list and the owner and mode it applies with are read together, whatever the
        // caller looked at before.
        let acl = file_acl(&n, &[], &root, &p, &meta, None).unwrap();
        assert_eq!(set(&acl.allow), ["everyone", "group:20", "user:10"]);
        assert_eq!(set(&acl.deny), ["user:11"]);
        // Read from an open descriptor, the same.
        let f = std::fs::File::open(&p).unwrap();
        let fmeta = f.metadata().unwrap();
        assert_eq!(file_acl(&n, &[], &root, &p, &fmeta, Some(&f)).unwrap(), acl);

        // A `replace` rule states the access instead.
        let rule = AclRule {
            path_prefix: String::new(),
            allow: vec!["group:staff".parse().unwrap()],
            deny: vec![],
            mode: RuleMode::Replace,
        };
        let acl = file_acl(&n, &[rule], &root, &p, &meta, None).unwrap();
        assert_eq!(set(&acl.allow), ["group:staff"]);
    }

    #[test]
    fn a_directory_with_an_access_control_list_narrows_its_files_by_the_list() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let sub = root.join("team");
        std::fs::create_dir(&sub).unwrap();
        std::os::unix::fs::chown(&sub, Some(10), Some(20)).unwrap();
        // 0755 by its mode, but user 11 may not enter.
        set_access_acl(
            &sub,
            &[
                (1, 7, NONE),
                (2, 0, 11),
                (4, 5, NONE),
                (0x10, 5, NONE),
                (0x20, 5, NONE),
            ],
        );
        let p = sub.join("notes.md");
        std::fs::write(&p, "text").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let meta = std::fs::metadata(&p).unwrap();
        let acl = file_acl(&names(), &[], &root, &p, &meta, None).unwrap();
        assert!(acl.allow.contains(&Principal::Everyone), "{acl:?}");
        assert_eq!(set(&acl.deny), ["user:11"]);
    }

    #[test]
    fn what_a_walk_could_not_list_is_not_gone() {
        let known: BTreeSet<String> = ["/s/a/1.md", "/s/b/2.md", "/s/b/c/3.md", "/s/bb/4.md"]
            .into_iter()
            .map(String::from)
            .collect();
        let seen: BTreeSet<String> = ["/s/a/1.md".to_string()].into();
        // b could not be listed: its files (and its subdirectories') stay; bb is another name.
        assert_eq!(
            gone(known.clone(), &seen, &[PathBuf::from("/s/b")]),
            ["/s/bb/4.md"]
        );
        assert_eq!(gone(known, &seen, &[]).len(), 3);
    }

    /// Session 43's review: only the directories from the root down narrowed a file, so a root
    /// inside a directory only a group may enter was indexed for everyone.
    #[test]
    fn a_directory_above_the_root_narrows_its_files_too() {
        let dir = tempfile::tempdir().unwrap();
        let outer = dir.path().canonicalize().unwrap().join("hr");
        let root = outer.join("policies");
        std::fs::create_dir_all(&root).unwrap();
        let p = root.join("leave.md");
        std::fs::write(&p, "text").unwrap();
        let mode = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        mode(&root, 0o755);
        mode(&p, 0o644);
        std::os::unix::fs::chown(&outer, Some(10), Some(20)).unwrap();
        mode(&outer, 0o750);
        let acl_of = || {
            file_acl(
                &names(),
                &[],
                &root,
                &p,
                &std::fs::metadata(&p).unwrap(),
                None,
            )
        };
        let acl = acl_of().unwrap();
        assert!(!acl.allow.contains(&Principal::Everyone), "{acl:?}");
        assert_eq!(set(&acl.allow), ["group:20", "user:10"]);
        mode(&outer, 0o755);
        assert!(acl_of().unwrap().allow.contains(&Principal::Everyone));
    }

    #[test]
    fn a_directory_that_keeps_others_out_narrows_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let mode = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        mode(&root, 0o755);
        std::fs::create_dir(root.join("hr")).unwrap();
        std::fs::write(root.join("hr/salaries.md"), "bands").unwrap();
        std::fs::write(root.join("canteen.md"), "menu").unwrap();
        mode(&root.join("hr/salaries.md"), 0o644);
        mode(&root.join("canteen.md"), 0o644);
        mode(&root.join("hr"), 0o750);
        let n = names();
        let acl_of = |rel: &str| {
            let p = root.join(rel);
            file_acl(&n, &[], &root, &p, &std::fs::metadata(&p).unwrap(), None).unwrap()
        };
        assert!(acl_of("canteen.md").allow.contains(&Principal::Everyone));
        let hr = acl_of("hr/salaries.md");
        assert!(!hr.allow.contains(&Principal::Everyone), "{hr:?}");
        assert_eq!(
            hr.allow.len(),
            2,
            "the owner and the directory's group: {hr:?}"
        );
        // Opened to everyone again: the file's own bits decide.
        mode(&root.join("hr"), 0o755);
        assert!(
            acl_of("hr/salaries.md")
                .allow
                .contains(&Principal::Everyone)
        );
    }

    #[test]
    fn file_uri_percent_encodes() {
        assert_eq!(
            file_uri(Path::new("/srv/a b/ü.txt")),
            "file:///srv/a%20b/%C3%BC.txt"
        );
    }
}
