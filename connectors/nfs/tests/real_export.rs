//! The NFS connector against a real NFS server: nfs-ganesha (VFS FSAL) with rpcbind, started by
//! `scripts/shares/nfs.sh` for each test in a temporary directory (installed first with
//! `nfs.sh install` when missing). ganesha always binds port 2049, so the tests of this binary
//! run one at a time (a global lock). The tests change the export directly on the local
//! filesystem (write, remove, chmod, chown to numeric ids described by a test passwd/group file).
//!
//! Tests wait for outcomes with deadlines and never assert how long anything took.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use docent_connector_api::conformance::{self, Fixture, harness_context};
use docent_connector_api::jobs::{ConnectorCommand, JobCounts, JobState};
use docent_connector_api::registry::{ConfigEnv, ConnectorFactory};
use docent_connector_api::{
    Acl, Alarm, Change, Connector, ConnectorError, DocKey, IndexedDoc, IndexedState, Principal,
    SourceDocument, StatusHandle,
};
use docent_nfs_connector::Factory;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(60);
const CONNECTOR: &str = "nfs";
const MAX_BYTES: u64 = 1000;

const PASSWD: &str = "alice:x:1001:2001::/home/alice:/bin/sh\nbob:x:1002:2002::/home/bob:/bin/sh\n";
const GROUP: &str = "staff:x:2001:\neng:x:2002:bob\n";

// ---------------------------------------------------------------------------------------------
// The server

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/shares/nfs.sh")
}

fn run_script(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(script())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script().display()))
}

fn ensure_installed() {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    let r = INSTALLED.get_or_init(|| {
        let present = Command::new("sh")
            .args(["-c", "command -v ganesha.nfsd && command -v rpcbind"])
            .output()
            .is_ok_and(|o| o.status.success());
        if present {
            return Ok(());
        }
        let out = run_script(&["install"]);
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "nfs-ganesha is not installed and `scripts/shares/nfs.sh install` failed (it needs \
                 root and the Debian archive): {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = r {
        panic!("{e}");
    }
}

/// One test at a time: ganesha's port is fixed.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running ganesha exporting `dir/export`, stopped on drop.
struct Server {
    dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Self {
        let s = Self::stopped();
        s.up();
        s
    }

    /// A server not started yet, its export directory made.
    fn stopped() -> Self {
        ensure_installed();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("passwd"), PASSWD).unwrap();
        std::fs::write(dir.path().join("group"), GROUP).unwrap();
        std::fs::create_dir_all(dir.path().join("export")).unwrap();
        Self { dir }
    }

    fn up(&self) {
        let out = run_script(&["start", self.dir.path().to_str().unwrap()]);
        assert!(
            out.status.success(),
            "nfs.sh start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn down(&self) {
        let out = run_script(&["stop", self.dir.path().to_str().unwrap()]);
        assert!(
            out.status.success(),
            "nfs.sh stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn export(&self) -> PathBuf {
        self.dir.path().join("export")
    }

    /// Writes `rel` with `text`, owner `uid:gid` and `mode`.
    fn put(&self, rel: &str, text: &str, uid: u32, gid: u32, mode: u32) {
        let p = self.export().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn chmod(&self, rel: &str, mode: u32) {
        std::fs::set_permissions(
            self.export().join(rel),
            std::fs::Permissions::from_mode(mode),
        )
        .unwrap();
    }

    fn remove(&self, rel: &str) {
        std::fs::remove_file(self.export().join(rel)).unwrap();
    }

    /// The connector's config over this export.
    fn connector(&self, extra: &str) -> Box<dyn Connector> {
        self.connector_every(3600, extra)
    }

    /// [`Self::connector`] reconciling every `secs` seconds.
    fn connector_every(&self, secs: u64, extra: &str) -> Box<dyn Connector> {
        let text = format!(
            "server = \"127.0.0.1\"\nexport = \"{}\"\npasswd_file = \"{}\"\ngroup_file = \"{}\"\n\
             reconcile_interval_secs = {secs}\nretry_max_secs = 1\nrpc_timeout_secs = 10\n{extra}",
            self.export().display(),
            self.dir.path().join("passwd").display(),
            self.dir.path().join("group").display(),
        );
        let env = ConfigEnv {
            id: CONNECTOR.into(),
            base_dir: self.dir.path().to_path_buf(),
            max_document_bytes: MAX_BYTES,
            max_text_bytes: MAX_BYTES,
            parse_timeout: Duration::from_secs(5),
            parse_memory_bytes: 2 << 30,
        };
        let spec = Factory
            .configure(toml::from_str(&text).unwrap(), &env)
            .unwrap_or_else(|e| panic!("config: {e:?}"));
        spec.build().unwrap().connector
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = run_script(&["stop", self.dir.path().to_str().unwrap()]);
    }
}

// ---------------------------------------------------------------------------------------------
// A running connector over an in-memory index

#[derive(Default)]
struct Index {
    docs: Mutex<BTreeMap<String, (IndexedDoc, SourceDocument)>>,
    /// While set, what is sent is not applied (writes a rollback will discard).
    lose: AtomicBool,
    /// The pipeline's rollbacks, as the daemon's index reports them.
    rollbacks: AtomicU64,
}

impl IndexedState for Index {
    fn rollbacks(&self) -> u64 {
        self.rollbacks.load(SeqCst)
    }

    fn get(&self, key: &DocKey) -> Option<IndexedDoc> {
        self.docs
            .lock()
            .unwrap()
            .get(&key.native_id)
            .map(|(d, _)| d.clone())
    }

    fn native_ids(&self, _connector: &str) -> Vec<String> {
        self.docs.lock().unwrap().keys().cloned().collect()
    }
}

/// What one sync sent, up to and including its checkpoint.
#[derive(Debug, Default)]
struct Sent {
    upserts: BTreeMap<String, Acl>,
    deletes: BTreeSet<String>,
    skipped: BTreeMap<String, String>,
    checkpoint: Option<serde_json::Value>,
    reconciled: u32,
}

struct Running {
    index: Arc<Index>,
    status: StatusHandle,
    rx: mpsc::Receiver<Change>,
    commands: mpsc::Sender<ConnectorCommand>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ConnectorError>>,
}

impl Running {
    fn start(connector: Box<dyn Connector>) -> Self {
        Self::start_over(connector, Arc::default())
    }

    /// Starts `connector` over what an earlier one indexed (as after a restart).
    fn start_over(connector: Box<dyn Connector>, index: Arc<Index>) -> Self {
        let (ctx, h) = harness_context(index.clone(), None, 64);
        Self {
            index,
            status: h.status,
            rx: h.changes,
            commands: h.commands,
            shutdown: h.shutdown,
            task: tokio::spawn(connector.run(ctx)),
        }
    }

    /// Applies changes until the next checkpoint and returns them.
    async fn next_sync(&mut self) -> Sent {
        let deadline = Instant::now() + DEADLINE;
        let mut sent = Sent::default();
        while sent.checkpoint.is_none() {
            let change = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no checkpoint within {DEADLINE:?}: {sent:?}"))
                .expect("the connector stopped");
            let lost = Mutex::default();
            let mut docs = if self.index.lose.load(SeqCst) {
                lost.lock().unwrap()
            } else {
                self.index.docs.lock().unwrap()
            };
            match change {
                Change::Upsert(d) => {
                    assert!(!d.acl.allow.is_empty(), "{} without an ACL", d.key);
                    sent.upserts.insert(d.key.native_id.clone(), d.acl.clone());
                    let entry = IndexedDoc {
                        version: d.version.clone(),
                        acl_fingerprint: d.acl.fingerprint(),
                    };
                    docs.insert(d.key.native_id.clone(), (entry, *d));
                }
                Change::Delete(k) => {
                    docs.remove(&k.native_id);
                    sent.deletes.insert(k.native_id);
                }
                Change::Skipped { key, reason } => {
                    docs.remove(&key.native_id);
                    sent.skipped.insert(key.native_id, reason);
                }
                Change::Checkpoint { checkpoint, .. } => sent.checkpoint = Some(checkpoint),
                // The previous sync's notice, sent after its checkpoint.
                Change::Reconciled { .. } => sent.reconciled += 1,
            }
        }
        sent
    }

    async fn sync_now(&mut self) -> Sent {
        conformance::request_sync(&self.commands, &self.status, false).await;
        self.next_sync().await
    }

    /// Waits until the most recent job is in a state `pred` accepts.
    async fn wait_job(&self, what: &str, pred: impl Fn(&JobState) -> bool) -> JobState {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let s = self.status.snapshot();
            if let Some(j) = s.jobs.front()
                && pred(&j.state)
            {
                return j.state.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not reached within {DEADLINE:?}; jobs: {:?}",
                s.jobs
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn doc(&self, id: &str) -> SourceDocument {
        self.index
            .docs
            .lock()
            .unwrap()
            .get(id)
            .unwrap_or_else(|| panic!("{id} is not indexed"))
            .1
            .clone()
    }

    fn ids(&self) -> BTreeSet<String> {
        self.index.docs.lock().unwrap().keys().cloned().collect()
    }

    /// The counts of the most recent job.
    fn last_counts(&self) -> JobCounts {
        let jobs = self.status.snapshot().jobs;
        jobs.front().expect("a job ran").counts
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("the connector stops after cancellation")
            .expect("the connector task does not panic")
            .expect("the connector ends without error");
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn acl(allow: &[Principal]) -> Acl {
    Acl::new(allow.iter().cloned(), [])
}

fn ids(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn crawl_indexes_files_with_acls_from_owner_group_and_mode() {
    let _serial = serial();
    let server = Server::start();
    server.put("team/plan.txt", "the plan", 1001, 2001, 0o640);
    server.put("team/deep/notes.md", "notes", 1002, 2002, 0o600);
    server.put("public.txt", "hello all", 1001, 2001, 0o644);
    server.put("unknown-ids.txt", "numbers", 4242, 4343, 0o440);
    server.put("nobody.txt", "locked", 1001, 2001, 0o000);
    server.put(
        "big.txt",
        &"x".repeat(MAX_BYTES as usize + 1),
        1001,
        2001,
        0o644,
    );
    server.put(".hidden", "excluded by default", 1001, 2001, 0o644);
    runtime().block_on(async {
        let mut c = Running::start(server.connector(""));
        let sent = c.next_sync().await;
        assert_eq!(
            sent.upserts.keys().cloned().collect::<BTreeSet<_>>(),
            ids(&[
                "public.txt",
                "team/deep/notes.md",
                "team/plan.txt",
                "unknown-ids.txt"
            ])
        );
        assert_eq!(
            sent.upserts["team/plan.txt"],
            acl(&[Principal::user("alice"), Principal::group("staff")])
        );
        assert_eq!(
            sent.upserts["team/deep/notes.md"],
            acl(&[Principal::user("bob")])
        );
        assert_eq!(
            sent.upserts["public.txt"],
            acl(&[
                Principal::user("alice"),
                Principal::group("staff"),
                Principal::Everyone
            ])
        );
        assert_eq!(
            sent.upserts["unknown-ids.txt"],
            acl(&[Principal::user("4242"), Principal::group("4343")])
        );
        assert!(
            sent.skipped["nobody.txt"].contains("allows nobody"),
            "{sent:?}"
        );
        assert!(sent.skipped["big.txt"].contains("too large"), "{sent:?}");
        let ms = sent.checkpoint.as_ref().unwrap()["last_full_scan_ms"]
            .as_i64()
            .expect("last_full_scan_ms in the checkpoint");
        assert_eq!(c.status.snapshot().last_full_scan_ms, Some(ms));

        let d = c.doc("team/plan.txt");
        assert_eq!(d.content, b"the plan");
        assert_eq!(d.name_hint, "plan.txt");
        assert_eq!(d.mime, None);
        assert_eq!(
            d.uri,
            format!("nfs://127.0.0.1{}/team/plan.txt", server.export().display())
        );
        let mtime = std::fs::metadata(server.export().join("team/plan.txt"))
            .unwrap()
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert_eq!(d.modified_at, Some(mtime));
        assert_eq!(d.attributes["export_path"], "team/plan.txt");
        for reserved in ["source", "path", "relative_path", "modified_at"] {
            assert!(!d.attributes.contains_key(reserved), "{reserved}");
        }
        assert_eq!(c.status.snapshot().phase, "watching");
        c.stop().await;
    });
}

/// The directories above the crawled top (the export's root, the `sub_path`) narrow who may
/// read, as the ones below it do.
#[test]
fn directories_above_the_crawled_top_narrow_every_file() {
    let _serial = serial();
    let server = Server::start();
    server.put("team/plan.txt", "the plan", 1001, 2001, 0o644);
    std::os::unix::fs::chown(server.export().join("team"), Some(1001), Some(2001)).unwrap();
    server.chmod("team", 0o750);
    runtime().block_on(async {
        let mut c = Running::start(server.connector("sub_path = \"team\"\n"));
        let sent = c.next_sync().await;
        assert_eq!(
            sent.upserts["team/plan.txt"],
            acl(&[Principal::user("alice"), Principal::group("staff")]),
            "{sent:?}"
        );
        c.stop().await;
    });
    // The export's root itself: open to its owner only.
    server.chmod("team", 0o755);
    std::os::unix::fs::chown(server.export(), Some(1002), Some(2002)).unwrap();
    server.chmod("", 0o700);
    runtime().block_on(async {
        let mut c = Running::start(server.connector(""));
        let sent = c.next_sync().await;
        assert_eq!(
            sent.upserts["team/plan.txt"],
            acl(&[Principal::user("bob")]),
            "{sent:?}"
        );
        c.stop().await;
    });
}

#[test]
fn edits_additions_and_deletions_follow_at_the_next_sync() {
    let _serial = serial();
    let server = Server::start();
    for name in [
        "a.txt", "b.txt", "c.txt", "d.txt", "e.txt", "f.txt", "g.txt",
    ] {
        server.put(name, name, 1001, 2001, 0o640);
    }
    runtime().block_on(async {
        let mut c = Running::start(server.connector(""));
        assert_eq!(c.next_sync().await.upserts.len(), 7);

        // Nothing changed: nothing is sent (and nothing read).
        let idle = c.sync_now().await;
        assert!(
            idle.upserts.is_empty() && idle.deletes.is_empty(),
            "{idle:?}"
        );

        server.put("a.txt", "a.txt, edited", 1001, 2001, 0o640);
        server.put("new.txt", "new", 1001, 2001, 0o640);
        server.remove("b.txt");
        let sent = c.sync_now().await;
        assert_eq!(
            sent.upserts.keys().cloned().collect::<BTreeSet<_>>(),
            ids(&["a.txt", "new.txt"])
        );
        assert_eq!(sent.deletes, ids(&["b.txt"]));
        assert_eq!(c.doc("a.txt").content, b"a.txt, edited");
        let job = c.status.snapshot().jobs.front().cloned().unwrap();
        assert_eq!(job.state, JobState::Succeeded);
        assert_eq!(
            (
                job.counts.added,
                job.counts.modified,
                job.counts.deleted,
                job.counts.unchanged
            ),
            (1, 1, 1, 5)
        );
        c.stop().await;
    });
}

#[test]
fn a_chmod_alone_changes_the_acl_in_one_sync() {
    let _serial = serial();
    let server = Server::start();
    server.put("report.txt", "report", 1001, 2001, 0o644);
    server.put("other.txt", "other", 1001, 2001, 0o644);
    runtime().block_on(async {
        let mut c = Running::start(server.connector(""));
        c.next_sync().await;
        server.chmod("report.txt", 0o600);
        let sent = c.sync_now().await;
        assert_eq!(
            sent.upserts.keys().cloned().collect::<BTreeSet<_>>(),
            ids(&["report.txt"])
        );
        assert_eq!(sent.upserts["report.txt"], acl(&[Principal::user("alice")]));
        c.stop().await;
    });
}

/// A narrower ACL lost in a rollback (a batch that failed to write) is sent again by the same
/// running connector, which reconciles by itself once the index reports the rollback.
#[test]
fn a_narrower_acl_lost_in_a_rollback_is_sent_again() {
    let _serial = serial();
    let server = Server::start();
    server.put("report.txt", "report", 1001, 2001, 0o644);
    runtime().block_on(async {
        let mut c = Running::start(server.connector(""));
        c.next_sync().await;
        let wide = c.doc("report.txt").acl;
        let narrow = acl(&[Principal::user("alice")]);
        assert_ne!(wide, narrow);

        server.chmod("report.txt", 0o600);
        c.index.lose.store(true, SeqCst);
        let sent = c.sync_now().await;
        assert_eq!(sent.upserts.get("report.txt"), Some(&narrow));
        c.index.lose.store(false, SeqCst);
        // Not known to be lost: the record stands, nothing more is sent.
        let sent = c.sync_now().await;
        assert!(sent.upserts.is_empty(), "{sent:?}");
        assert_eq!(c.doc("report.txt").acl, wide);

        // The rollback is reported: a sync comes by itself (within ROLLBACK_CHECK, long before
        // the hour-long schedule) and sends the narrower ACL again.
        c.index.rollbacks.fetch_add(1, SeqCst);
        let sent = c.next_sync().await;
        assert_eq!(sent.upserts.get("report.txt"), Some(&narrow), "{sent:?}");
        assert_eq!(c.doc("report.txt").acl, narrow);
        // That sync ended with its notice (sent after its checkpoint): the pipeline stops
        // recording the reconciliation as owed only then.
        let sent = c.sync_now().await;
        assert_eq!(sent.reconciled, 1, "{sent:?}");
        c.stop().await;
    });
}

#[test]
fn a_stopped_server_is_an_error_not_a_deletion_and_the_connector_resumes() {
    let _serial = serial();
    let server = Server::start();
    for name in ["a.txt", "b.txt", "c.txt"] {
        server.put(name, name, 1001, 2001, 0o644);
    }
    runtime().block_on(async {
        let mut c = Running::start(server.connector(""));
        c.next_sync().await;
        server.down();
        let job_id = c.status.reserve_job_id();
        c.commands
            .send(ConnectorCommand::SyncNow {
                job_id,
                force_deletions: false,
                full: false,
            })
            .await
            .unwrap();
        c.wait_job("a failed sync", |s| matches!(s, JobState::Failed(_)))
            .await;
        let s = c.status.snapshot();
        assert_eq!(s.phase, "failed");
        assert!(s.last_error().is_some());
        assert_eq!(c.ids(), ids(&["a.txt", "b.txt", "c.txt"]));
        // Nothing was sent while the server was away (no deletes, no skips): only the first
        // sync's notice, which came after its checkpoint.
        while let Ok(change) = c.rx.try_recv() {
            assert!(matches!(change, Change::Reconciled { .. }), "{change:?}");
        }

        server.put("d.txt", "added while down", 1001, 2001, 0o644);
        server.up();
        // The retry (backoff capped at 1 s here) catches up without a command.
        let sent = c.next_sync().await;
        assert_eq!(
            sent.upserts.keys().cloned().collect::<BTreeSet<_>>(),
            ids(&["d.txt"])
        );
        assert!(sent.deletes.is_empty(), "{sent:?}");
        let s = c.status.snapshot();
        assert_eq!(s.last_error(), None);
        assert_eq!(s.phase, "watching");
        c.stop().await;
    });
}

/// ganesha 4.3 (Debian's) keeps no POSIX access lists, and answers NFSACL's GETACL with none:
/// the file's mode bits then tell it all, and `require_nfsacl` (the default) is satisfied. Not
/// tested against a real server: a list that says more (its reply format is tested in
/// `nfsacl.rs`, its translation against the kernel in the fs connector's tests; Debian's
/// ganesha refuses SETACL with NFS3ERR_INVAL and the kernel server cannot run here), and a
/// server without NFSACL (this ganesha answers it even with `Enable_NFSACL = false`).
#[test]
fn a_server_that_answers_nfsacl_is_asked_for_every_file_and_directory() {
    let _serial = serial();
    let server = Server::start();
    server.put("team/a.txt", "asked", 1001, 2001, 0o640);
    server.put("b.txt", "asked too", 1002, 2002, 0o644);
    runtime().block_on(async {
        // `require_nfsacl` is on by default: the sync would fail if the server did not answer.
        let mut c = Running::start(server.connector(""));
        let sent = c.next_sync().await;
        assert_eq!(
            sent.upserts["team/a.txt"],
            acl(&[Principal::user("alice"), Principal::group("staff")])
        );
        assert!(sent.upserts.contains_key("b.txt"), "{sent:?}");
        assert!(sent.skipped.is_empty(), "{sent:?}");
        // A chmod changes the ctime: the file is asked again and its new mode applies.
        server.chmod("team/a.txt", 0o600);
        let sent = c.sync_now().await;
        assert_eq!(sent.upserts["team/a.txt"], acl(&[Principal::user("alice")]));
        assert_eq!(sent.upserts.len(), 1, "{sent:?}");
        c.stop().await;
    });
}

#[test]
fn a_restarted_connector_asks_only_the_lists_no_indexed_version_records() {
    let _serial = serial();
    let server = Server::start();
    server.put("r/a.txt", "a", 1001, 2001, 0o644);
    server.put("r/b.txt", "b", 1001, 2001, 0o640);
    server.put("c.txt", "c", 1001, 2001, 0o600);
    // An answer about a change time under 5 s old is neither kept nor recorded.
    std::thread::sleep(Duration::from_millis(6500));
    runtime().block_on(async {
        let mut c = Running::start(server.connector(""));
        assert_eq!(c.next_sync().await.upserts.len(), 3);
        // The root, r/, r/a.txt and r/b.txt; c.txt's mode lets only its owner read it.
        assert_eq!(c.last_counts().permission_reads, 4);
        let index = c.index.clone();
        c.stop().await;

        let mut c = Running::start_over(server.connector(""), index);
        let sent = c.next_sync().await;
        assert!(
            sent.upserts.is_empty() && sent.deletes.is_empty() && sent.skipped.is_empty(),
            "{sent:?}"
        );
        // The files' answers come with their indexed versions; directories are asked again.
        let counts = c.last_counts();
        assert_eq!((counts.unchanged, counts.permission_reads), (3, 2));

        // A chmod moves the change time: that file's list is asked again.
        server.chmod("r/a.txt", 0o640);
        let sent = c.sync_now().await;
        assert_eq!(
            sent.upserts["r/a.txt"],
            acl(&[Principal::user("alice"), Principal::group("staff")])
        );
        assert_eq!(c.last_counts().permission_reads, 1);
        c.stop().await;
    });
}

/// Session 31's review: documents outside a narrowed `sub_path` were never deleted (only ids
/// inside it could be gone), and stayed searchable under ACLs nothing checked again.
#[test]
fn narrowing_sub_path_removes_what_lies_outside_it() {
    let _serial = serial();
    let server = Server::start();
    server.put("team/a.txt", "a", 1001, 2001, 0o644);
    server.put("other.txt", "o", 1001, 2001, 0o644);
    runtime().block_on(async {
        let mut c = Running::start(server.connector(""));
        assert_eq!(c.next_sync().await.upserts.len(), 2);
        let index = c.index.clone();
        c.stop().await;

        let mut c = Running::start_over(server.connector("sub_path = \"team\"\n"), index);
        let sent = c.next_sync().await;
        assert_eq!(sent.deletes, ids(&["other.txt"]), "{sent:?}");
        assert!(sent.upserts.is_empty(), "{sent:?}");
        c.stop().await;
    });
}

#[test]
fn an_empty_listing_deletes_nothing() {
    let _serial = serial();
    let server = Server::start();
    for name in ["a.txt", "b.txt"] {
        server.put(name, name, 1001, 2001, 0o644);
    }
    runtime().block_on(async {
        let mut c = Running::start(server.connector(""));
        c.next_sync().await;
        server.remove("a.txt");
        server.remove("b.txt");
        let job_id = c.status.reserve_job_id();
        c.commands
            .send(ConnectorCommand::SyncNow {
                job_id,
                force_deletions: false,
                full: false,
            })
            .await
            .unwrap();
        let state = c
            .wait_job("a failed sync", |s| matches!(s, JobState::Failed(_)))
            .await;
        assert!(
            format!("{state:?}").contains("listed no files"),
            "{state:?}"
        );
        assert_eq!(c.ids(), ids(&["a.txt", "b.txt"]));
        c.stop().await;
    });
}

/// A tmpfs mounted at a directory (made if missing), unmounted (lazily: ganesha holds it open)
/// on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn at(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount (the test needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
    }
}

/// The share below the export goes away in the same sync as deletions that deletion protection
/// holds: the job fails for the unmount and says that forcing the held deletions would also walk
/// the unmounted share as it is; both alarms show; nothing is deleted.
#[test]
fn an_unmounted_share_shows_beside_a_deletion_hold() {
    let _serial = serial();
    let server = Server::stopped();
    let mounted = Tmpfs::at(&server.export().join("team"));
    server.put("team/plan.txt", "plan", 1001, 2001, 0o644);
    for i in 0..10 {
        server.put(&format!("f{i}.txt"), "x", 1001, 2001, 0o644);
    }
    server.up();
    runtime().block_on(async {
        let mut c = Running::start(server.connector(""));
        c.next_sync().await;
        assert_eq!(c.ids().len(), 11);
        drop(mounted);
        for i in 0..6 {
            server.remove(&format!("f{i}.txt"));
        }
        let sent = c.sync_now().await;
        assert!(sent.deletes.is_empty(), "{sent:?}");
        assert_eq!(c.ids().len(), 11);
        let s = c.status.snapshot();
        assert!(
            matches!(&s.jobs[0].state, JobState::Failed(why)
                if why.contains("unmounted share?") && why.contains("forced sync also walks")),
            "{:?}",
            s.jobs[0]
        );
        assert!(s.alarms.contains_key(&Alarm::Unmounted), "{:?}", s.alarms);
        assert!(
            s.alarms.contains_key(&Alarm::DeletionProtection),
            "{:?}",
            s.alarms
        );
        c.stop().await;
    });
}

/// A running server whose export holds `a.txt` and, on a tmpfs mounted at `team`,
/// `team/plan.txt`.
fn with_team_share() -> (Server, Tmpfs) {
    let server = Server::stopped();
    let mounted = Tmpfs::at(&server.export().join("team"));
    server.put("team/plan.txt", "plan", 1001, 2001, 0o644);
    server.put("a.txt", "a", 1001, 2001, 0o644);
    server.up();
    (server, mounted)
}

/// A file system mounted below the export on the server (a tmpfs here: ganesha shows it with
/// its own fsid) that goes away: the directory left behind, on the export's file system, says
/// nothing of its files, which are neither withdrawn nor deleted while the rest of the export
/// is reconciled; the outage is raised. A sync with `force_deletions` walks what is there.
#[test]
fn an_unmounted_share_below_the_export_keeps_its_documents() {
    let _serial = serial();
    let (server, mounted) = with_team_share();
    runtime().block_on(async {
        let mut c = Running::start(server.connector(""));
        let sent = c.next_sync().await;
        assert_eq!(c.ids(), ids(&["a.txt", "team/plan.txt"]), "{sent:?}");
        assert_eq!(
            sent.checkpoint.unwrap()["mounted_dirs"],
            serde_json::json!(["team"])
        );

        drop(mounted);
        server.put("team/stale.txt", "written while unmounted", 1001, 2001, 0o644);
        server.put("b.txt", "b", 1001, 2001, 0o644);
        let sent = c.sync_now().await;
        assert_eq!(
            sent.upserts.keys().cloned().collect::<BTreeSet<_>>(),
            ids(&["b.txt"]),
            "{sent:?}"
        );
        assert!(sent.deletes.is_empty() && sent.skipped.is_empty(), "{sent:?}");
        assert_eq!(
            sent.checkpoint.unwrap()["mounted_dirs"],
            serde_json::json!(["team"])
        );
        assert_eq!(c.ids(), ids(&["a.txt", "b.txt", "team/plan.txt"]));
        let s = c.status.snapshot();
        assert!(
            matches!(&s.jobs[0].state, JobState::Failed(why) if why.contains("unmounted share? \"team\"")),
            "{:?}",
            s.jobs[0]
        );
        assert!(s.alarms.contains_key(&Alarm::Unmounted), "{:?}", s.alarms);

        // An admin who took the share away on purpose forces the deletions.
        conformance::request_sync(&c.commands, &c.status, true).await;
        let sent = c.next_sync().await;
        assert_eq!(sent.deletes, ids(&["team/plan.txt"]), "{sent:?}");
        assert_eq!(
            sent.upserts.keys().cloned().collect::<BTreeSet<_>>(),
            ids(&["team/stale.txt"])
        );
        assert_eq!(sent.checkpoint.unwrap()["mounted_dirs"], serde_json::json!([]));
        assert!(!c.status.snapshot().alarms.contains_key(&Alarm::Unmounted));
        c.stop().await;
    });
}

/// Session 34's review: a recorded mount point whose directory is gone (removed after the
/// unmount) was not met by the walk, forgotten, and what it held deleted. It is an outage like
/// one left behind as the export's file system, until a forced sync.
#[test]
fn a_share_whose_directory_is_gone_keeps_its_documents() {
    let _serial = serial();
    let (server, mounted) = with_team_share();
    runtime().block_on(async {
        let mut c = Running::start(server.connector(""));
        c.next_sync().await;
        assert_eq!(c.ids(), ids(&["a.txt", "team/plan.txt"]));
        drop(mounted);
        std::fs::remove_dir(server.export().join("team")).unwrap();
        let sent = c.sync_now().await;
        assert!(
            sent.deletes.is_empty() && sent.skipped.is_empty(),
            "{sent:?}"
        );
        assert_eq!(
            sent.checkpoint.unwrap()["mounted_dirs"],
            serde_json::json!(["team"])
        );
        assert_eq!(c.ids(), ids(&["a.txt", "team/plan.txt"]));
        assert!(
            c.status.snapshot().alarms.contains_key(&Alarm::Unmounted),
            "{:?}",
            c.status.snapshot().alarms
        );
        conformance::request_sync(&c.commands, &c.status, true).await;
        let sent = c.next_sync().await;
        assert_eq!(sent.deletes, ids(&["team/plan.txt"]), "{sent:?}");
        assert_eq!(
            sent.checkpoint.unwrap()["mounted_dirs"],
            serde_json::json!([])
        );
        c.stop().await;
    });
}

#[test]
fn deletion_protection_blocks_a_mass_deletion() {
    let _serial = serial();
    let server = Server::start();
    for i in 0..10 {
        server.put(&format!("f{i}.txt"), "x", 1001, 2001, 0o644);
    }
    runtime().block_on(async {
        let mut c = Running::start(server.connector(""));
        c.next_sync().await;
        for i in 0..6 {
            server.remove(&format!("f{i}.txt"));
        }
        let sent = c.sync_now().await;
        assert!(sent.deletes.is_empty(), "{sent:?}");
        assert_eq!(c.ids().len(), 10);
        let s = c.status.snapshot();
        assert!(matches!(s.jobs[0].state, JobState::Blocked(_)), "{s:?}");
        assert!(s.last_error().unwrap().starts_with("deletion protection"));
        c.stop().await;
    });
}

#[test]
fn acl_rules_and_globs_apply_to_paths_relative_to_the_export() {
    let _serial = serial();
    let server = Server::start();
    server.put("hr/payroll.txt", "pay", 1001, 2001, 0o644);
    server.put("hr/leave.txt", "leave", 1001, 2001, 0o600);
    server.put("eng/design.txt", "design", 1002, 2002, 0o640);
    server.put("eng/drafts/idea.txt", "idea", 1002, 2002, 0o640);
    server.put("eng/image.bin", "bin", 1002, 2002, 0o640);
    let extra = "include = [\"**/*.txt\"]\nexclude = [\"eng/drafts\", \"**/.*\"]\n\
                 [[acl_rules]]\npath_prefix = \"hr\"\nallow = [\"group:hr\"]\n\
                 [[acl_rules]]\npath_prefix = \"eng\"\nallow = [\"user:carol\"]\nmode = \"extend\"\n";
    runtime().block_on(async {
        let mut c = Running::start(server.connector(extra));
        let sent = c.next_sync().await;
        assert_eq!(
            sent.upserts.keys().cloned().collect::<BTreeSet<_>>(),
            ids(&["eng/design.txt", "hr/leave.txt", "hr/payroll.txt"])
        );
        assert_eq!(
            sent.upserts["hr/payroll.txt"],
            acl(&[Principal::group("hr")])
        );
        assert_eq!(sent.upserts["hr/leave.txt"], acl(&[Principal::group("hr")]));
        assert_eq!(
            sent.upserts["eng/design.txt"],
            acl(&[
                Principal::user("bob"),
                Principal::group("eng"),
                Principal::user("carol")
            ])
        );
        c.stop().await;
    });
}

#[test]
fn a_crawler_without_access_skips_what_it_cannot_read_and_withdraws_what_it_may_not_list() {
    let _serial = serial();
    let server = Server::start();
    server.put("mine.txt", "alice's", 1001, 2001, 0o600);
    server.put("bobs.txt", "bob's", 1002, 2002, 0o600);
    server.put("closed/inside.txt", "inside", 1001, 2001, 0o644);
    runtime().block_on(async {
        // First crawl as root: everything is indexed.
        let mut root = Running::start(server.connector(""));
        root.next_sync().await;
        let indexed = root.index.docs.lock().unwrap().clone();
        root.stop().await;

        // Then as alice (uid 1001) over the same index, with "closed" unlistable for her.
        std::fs::set_permissions(
            server.export().join("closed"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        server.put("bobs.txt", "bob's, edited", 1002, 2002, 0o600);
        let mut c = Running::start(server.connector("uid = 1001\ngid = 2001\n"));
        *c.index.docs.lock().unwrap() = indexed;
        let sent = c.next_sync().await;
        assert!(sent.skipped["bobs.txt"].contains("unreadable"), "{sent:?}");
        assert!(sent.deletes.is_empty(), "{sent:?}");
        // Its ACL can no longer be checked: withdrawn (not deleted) until "closed" opens again.
        let why = &sent.skipped["closed/inside.txt"];
        assert!(why.contains("withdrawn") && why.contains("closed"), "{why}");
        assert!(!c.ids().contains("closed/inside.txt"));
        let job = c.status.snapshot().jobs.front().cloned().unwrap();
        assert!(
            job.failures
                .iter()
                .any(|f| f.id == "closed" && f.reason.contains("cannot be listed")),
            "{job:?}"
        );
        std::fs::set_permissions(
            server.export().join("closed"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let sent = c.sync_now().await;
        assert!(sent.upserts.contains_key("closed/inside.txt"), "{sent:?}");
        c.stop().await;
    });
}

/// A directory the crawler may list but not search (`r--` for it, no `x`): what is indexed
/// below it is withdrawn, as below one it may not list (a second review: entries the server
/// would not look up were kept as their own trouble, under their old ACLs).
#[test]
fn a_directory_the_crawler_may_list_but_not_search_withdraws_what_is_below() {
    let _serial = serial();
    let server = Server::start();
    server.put("open.txt", "open", 1001, 2001, 0o644);
    server.put("listed/inside.txt", "inside", 1001, 2001, 0o644);
    runtime().block_on(async {
        let mut root = Running::start(server.connector(""));
        root.next_sync().await;
        let indexed = root.index.docs.lock().unwrap().clone();
        root.stop().await;
        assert_eq!(indexed.len(), 2, "{indexed:?}");
        std::fs::set_permissions(
            server.export().join("listed"),
            std::fs::Permissions::from_mode(0o744),
        )
        .unwrap();
        let mut c = Running::start(server.connector("uid = 1001\ngid = 2001\n"));
        *c.index.docs.lock().unwrap() = indexed;
        let sent = c.next_sync().await;
        assert!(sent.deletes.is_empty(), "{sent:?}");
        assert!(!c.ids().contains("listed/inside.txt"), "{sent:?}");
        assert!(c.ids().contains("open.txt"), "{sent:?}");
        c.stop().await;
    });
}

/// The export's top closed to the crawler: everything below is withdrawn, not kept under its
/// old ACLs as in an outage, and not deleted (a second review).
#[test]
fn a_top_closed_to_the_crawler_withdraws_everything_below_it() {
    let _serial = serial();
    let server = Server::start();
    server.put("a.txt", "a", 1001, 2001, 0o644);
    server.put("sub/b.txt", "b", 1001, 2001, 0o644);
    runtime().block_on(async {
        let mut root = Running::start(server.connector(""));
        root.next_sync().await;
        let indexed = root.index.docs.lock().unwrap().clone();
        root.stop().await;
        assert_eq!(indexed.len(), 2, "{indexed:?}");

        let top = server.export();
        std::fs::set_permissions(&top, std::fs::Permissions::from_mode(0o700)).unwrap();
        let mut c = Running::start(server.connector("uid = 1001\ngid = 2001\n"));
        *c.index.docs.lock().unwrap() = indexed;
        let sent = c.next_sync().await;
        std::fs::set_permissions(&top, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(sent.deletes.is_empty(), "{sent:?}");
        for id in ["a.txt", "sub/b.txt"] {
            let why = &sent.skipped[id];
            assert!(why.contains("withdrawn"), "{why}");
        }
        assert!(c.ids().is_empty(), "{:?}", c.ids());
        c.stop().await;
    });
}

/// A directory on the way to `sub_path` closed to the crawler: what is indexed below is
/// withdrawn as below a closed top (a review: it was an outage, so the old, wider ACLs were
/// served for as long as it stayed closed), and comes back when it opens.
#[test]
fn a_sub_path_closed_to_the_crawler_withdraws_everything_below_it() {
    let _serial = serial();
    let server = Server::start();
    server.put("team/hr/a.txt", "a", 1001, 2001, 0o644);
    server.put("team/hr/deep/b.txt", "b", 1001, 2001, 0o644);
    let on_the_way = server.export().join("team");
    runtime().block_on(async {
        let extra = "uid = 1001\ngid = 2001\nsub_path = \"team/hr\"\n";
        let mut c = Running::start(server.connector(extra));
        let sent = c.next_sync().await;
        assert_eq!(sent.upserts.len(), 2, "{sent:?}");
        let indexed = c.index.docs.lock().unwrap().clone();
        c.stop().await;

        std::fs::set_permissions(&on_the_way, std::fs::Permissions::from_mode(0o700)).unwrap();
        let mut c = Running::start(server.connector(extra));
        *c.index.docs.lock().unwrap() = indexed;
        let sent = c.next_sync().await;
        std::fs::set_permissions(&on_the_way, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(sent.deletes.is_empty(), "{sent:?}");
        for id in ["team/hr/a.txt", "team/hr/deep/b.txt"] {
            let why = &sent.skipped[id];
            assert!(
                why.contains("withdrawn") && why.contains("\"team\" cannot be entered"),
                "{why}"
            );
        }
        assert!(c.ids().is_empty(), "{:?}", c.ids());
        let sent = c.sync_now().await;
        assert_eq!(sent.upserts.len(), 2, "back once it opens: {sent:?}");
        c.stop().await;
    });
}

#[test]
fn pause_holds_syncs_and_resume_catches_up() {
    let _serial = serial();
    let server = Server::start();
    server.put("a.txt", "a", 1001, 2001, 0o644);
    runtime().block_on(async {
        // Reconciling every second: a pause that held nothing would send b.txt within the
        // quiet period below.
        let mut c = Running::start(server.connector_every(1, ""));
        c.next_sync().await;
        c.commands.send(ConnectorCommand::Pause).await.unwrap();
        let deadline = Instant::now() + DEADLINE;
        while !c.status.snapshot().paused {
            assert!(Instant::now() < deadline, "not paused");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(c.status.snapshot().phase, "paused");
        server.put("b.txt", "b", 1001, 2001, 0o644);
        // Several reconciliation intervals pass: nothing may arrive while paused. (A sync
        // already running when the pause came may still end: only changes count.)
        let quiet_until = tokio::time::Instant::now() + Duration::from_secs(3);
        while let Ok(Some(change)) = tokio::time::timeout_at(quiet_until, c.rx.recv()).await {
            assert!(
                !matches!(&change, Change::Upsert(d) if d.key.native_id == "b.txt"),
                "sent while paused"
            );
        }
        c.commands.send(ConnectorCommand::Resume).await.unwrap();
        let sent = c.next_sync().await;
        assert_eq!(
            sent.upserts.keys().cloned().collect::<BTreeSet<_>>(),
            ids(&["b.txt"])
        );
        let s = c.status.snapshot();
        // The job that caught up (a scheduled one may have started since).
        assert!(s.jobs.iter().any(|j| j.trigger == "resume"), "{:?}", s.jobs);
        assert!(!s.paused);
        c.stop().await;
    });
}

// ---------------------------------------------------------------------------------------------
// Conformance

/// Each fixture crawls its own sub-directory of the one running export (`sub_path`).
struct NfsFixture {
    server: Arc<Server>,
    sub: String,
}

impl Fixture for NfsFixture {
    fn connector(&self) -> Box<dyn Connector> {
        self.server
            .connector(&format!("sub_path = \"{}\"\n", self.sub))
    }

    fn put(&mut self, id: &str, text: &str) {
        self.server
            .put(&self.native_id(id), text, 1001, 2001, 0o644);
    }

    fn remove(&mut self, id: &str) {
        self.server.remove(&self.native_id(id));
    }

    fn change_acl(&mut self, id: &str) {
        self.server.chmod(&self.native_id(id), 0o640);
    }

    fn native_id(&self, id: &str) -> String {
        format!("{}/{id}.txt", self.sub)
    }
}

#[test]
fn conformance() {
    let _serial = serial();
    let server = Arc::new(Server::start());
    let n = std::sync::atomic::AtomicU32::new(0);
    runtime().block_on(async {
        conformance::run_all(|| NfsFixture {
            server: server.clone(),
            sub: format!(
                "fixture-{}",
                n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
        })
        .await
        .unwrap();
    });
}
