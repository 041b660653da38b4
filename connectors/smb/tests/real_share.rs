//! The SMB connector against a real Samba `smbd` started by `scripts/shares/smb.sh` (installed
//! with apt when missing; the tests need root for its Unix accounts).
//!
//! `smbcacls` (Samba 4.17) only connects to port 445, so the tests that set Windows ACLs share
//! one smbd on 127.0.0.1:445 (each test in its own folder); the tests that stop the server or
//! need no ACL edits start their own on a free port.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use docent_connector_api::{
    Acl, Alarm, Change, Checkpoint, Connector, DocKey, IndexedDoc, IndexedState, Principal,
    SourceDocument, StatusHandle, conformance,
};
use docent_smb_connector::SmbConfig;
use docent_smb_connector::SmbConnector;
use docent_smb_connector::dacl::NullDacl;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const PASS: &str = "Passw0rd!";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/shares/smb.sh")
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run a command");
    assert!(
        out.status.success(),
        "{:?} failed: {}{}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ensure_installed() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let out = Command::new("bash")
            .arg(script())
            .arg("install")
            .output()
            .expect("run smb.sh install");
        assert!(
            out.status.success(),
            "Samba is missing and `scripts/shares/smb.sh install` failed (needs root and apt): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server {
    dir: tempfile::TempDir,
    port: u16,
}

impl Server {
    /// smbd on `port`; when that was a free port (not 445), another is tried if it was taken
    /// before smbd bound it (tests start servers in parallel, and a port picked free may be
    /// anyone's by then).
    fn start(port: u16) -> Server {
        ensure_installed();
        let dir = tempfile::tempdir().unwrap();
        let mut s = Server { dir, port };
        if port != 445 {
            for _ in 0..3 {
                if s.try_launch().is_ok() {
                    return s;
                }
                s.port = free_port();
            }
        }
        s.launch();
        s
    }

    fn launch(&self) {
        if let Err(e) = self.try_launch() {
            panic!("{e}");
        }
    }

    fn try_launch(&self) -> Result<(), String> {
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(self.dir.path())
            .arg(self.port.to_string())
            .env("SMB_WATCH_PID", std::process::id().to_string())
            .output()
            .unwrap();
        match out.status.success() {
            true => Ok(()),
            false => Err(format!(
                "smbd did not start on port {}: {}{}",
                self.port,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )),
        }
    }

    fn stop(&self) {
        sh(Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path()));
    }

    fn client(&self, cmds: &str) {
        sh(Command::new("smbclient")
            .arg("-p")
            .arg(self.port.to_string())
            .arg("//127.0.0.1/docs")
            .arg("-U")
            .arg(format!("crawler%{PASS}"))
            .arg("-c")
            .arg(cmds));
    }

    /// Creates or replaces `rel` (parents created) with `text`, through SMB.
    fn put(&self, rel: &str, text: &str) {
        let local = self.dir.path().join(format!("upload-{}", rand_name()));
        std::fs::write(&local, text).unwrap();
        let mut cmds = String::new();
        let parts: Vec<&str> = rel.split('/').collect();
        for i in 1..parts.len() {
            let d = parts[..i].join("/");
            if !self.dir.path().join("share").join(&d).is_dir() {
                cmds.push_str(&format!("mkdir \"{d}\"; "));
            }
        }
        cmds.push_str(&format!("put \"{}\" \"{rel}\"", local.display()));
        self.client(&cmds);
        std::fs::remove_file(local).unwrap();
    }

    fn mkdir(&self, rel: &str) {
        self.client(&format!("mkdir \"{rel}\""));
    }

    fn rm(&self, rel: &str) {
        self.client(&format!("del \"{rel}\""));
    }

    fn rename(&self, from: &str, to: &str) {
        self.client(&format!("rename \"{from}\" \"{to}\""));
    }

    /// smbcacls on `rel` with SDDL (only against the shared server on port 445). SDDL rather
    /// than `ACL:` entries: smbcacls writes the latter with ACL revision 3, which the `smb`
    /// crate's parser rejects (MS-DTYP allows only 2 and 4).
    fn cacls(&self, rel: &str, args: &[&str]) -> String {
        assert_eq!(self.port, 445, "smbcacls only reaches port 445");
        sh(Command::new("smbcacls")
            .arg("//127.0.0.1/docs")
            .arg(rel)
            .arg("-U")
            .arg(format!("crawler%{PASS}"))
            .arg("--sddl")
            .args(args))
    }

    fn config(&self, id: &str, sub_path: &str) -> SmbConfig {
        SmbConfig {
            id: id.into(),
            server: "127.0.0.1".into(),
            port: self.port,
            share: "docs".into(),
            sub_path: sub_path.into(),
            username: "crawler".into(),
            password: PASS.into(),
            domain: None,
            include: vec![],
            exclude: vec!["**/.*".into()],
            max_file_size: 1 << 20,
            reconcile_interval: Duration::from_secs(3600),
            passwd_file: "/etc/passwd".into(),
            group_file: "/etc/group".into(),
            sid_principals: BTreeMap::new(),
            null_dacl: NullDacl::Skip,
            folder_permissions: true,
            report_memberships: false,
            deletion_protection_percent: 100,
            deletion_protection_min_docs: 5,
            retry_initial: Duration::from_millis(200),
            retry_max: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            // The notification tests turn it on; the others count changes per reconciliation.
            watch: false,
            watch_debounce: Duration::from_millis(100),
            share_acl: None,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

fn rand_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The smbd on port 445 that smbcacls can reach, shared by the ACL tests.
fn shared() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| {
        // A previous run's smbd (and its children) stop after their test binary exits; seen
        // taking longer than 20 s on a loaded machine.
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        while std::net::TcpListener::bind("127.0.0.1:445").is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "port 445 is in use: the ACL tests need it for smbcacls"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Server::start(445)
    })
}

fn uid(name: &str) -> String {
    sh(Command::new("id").arg("-u").arg(name))
        .trim()
        .to_string()
}

fn gid(name: &str) -> String {
    sh(Command::new("getent").arg("group").arg(name))
        .split(':')
        .nth(2)
        .unwrap()
        .to_string()
}

#[derive(Default)]
struct Index(
    Mutex<BTreeMap<DocKey, (IndexedDoc, Acl)>>,
    /// While set, what is sent is not applied (writes a rollback will discard).
    AtomicBool,
    /// The pipeline's rollbacks, as the daemon's index reports them.
    AtomicU64,
);

impl IndexedState for Index {
    fn rollbacks(&self) -> u64 {
        self.2.load(SeqCst)
    }
    fn get(&self, key: &DocKey) -> Option<IndexedDoc> {
        self.0.lock().unwrap().get(key).map(|(d, _)| d.clone())
    }
    fn native_ids(&self, connector: &str) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .keys()
            .filter(|k| k.connector == connector)
            .map(|k| k.native_id.clone())
            .collect()
    }
}

#[derive(Default, Debug)]
struct Log {
    upserts: BTreeMap<String, SourceDocument>,
    deletes: BTreeSet<String>,
    skipped: BTreeMap<String, String>,
    checkpoint: Option<Checkpoint>,
    /// Security-descriptor queries the sync sent (its job's count).
    permission_reads: u64,
    reconciled: u32,
}

impl Log {
    fn apply(&mut self, index: &Index, change: Change) {
        let lost = Mutex::default();
        let mut docs = if index.1.load(SeqCst) {
            lost.lock().unwrap()
        } else {
            index.0.lock().unwrap()
        };
        match change {
            Change::Upsert(d) => {
                docs.insert(
                    d.key.clone(),
                    (
                        IndexedDoc {
                            version: d.version.clone(),
                            acl_fingerprint: d.acl.fingerprint(),
                        },
                        d.acl.clone(),
                    ),
                );
                self.upserts.insert(d.key.native_id.clone(), *d);
            }
            Change::Delete(k) => {
                docs.remove(&k);
                self.deletes.insert(k.native_id);
            }
            Change::Skipped { key, reason } => {
                docs.remove(&key);
                self.skipped.insert(key.native_id, reason);
            }
            Change::Checkpoint { checkpoint, .. } => self.checkpoint = Some(checkpoint),
            // The previous reconciliation's notice, sent after its checkpoint.
            Change::Reconciled { .. } => self.reconciled += 1,
        }
    }
}

struct Running {
    rx: mpsc::Receiver<Change>,
    commands: mpsc::Sender<docent_connector_api::jobs::ConnectorCommand>,
    status: StatusHandle,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), docent_connector_api::ConnectorError>>,
}

fn spawn(
    cfg: SmbConfig,
    index: &Arc<Index>,
    checkpoint: Option<Checkpoint>,
    cap: usize,
) -> Running {
    let (ctx, h) = conformance::harness_context(index.clone(), checkpoint, cap);
    let conn: Box<dyn Connector> = Box::new(SmbConnector::new(cfg).unwrap());
    let task = tokio::spawn(conn.run(ctx));
    Running {
        rx: h.changes,
        commands: h.commands,
        status: h.status,
        shutdown: h.shutdown,
        task,
    }
}

impl Running {
    /// Applies changes until the next checkpoint.
    async fn until_checkpoint(&mut self, index: &Index, log: &mut Log) {
        log.checkpoint = None;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while log.checkpoint.is_none() {
            let c = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no checkpoint within 60 s; status: {:?}",
                        self.status.snapshot().last_error()
                    )
                })
                .expect("connector stopped");
            log.apply(index, c);
        }
    }

    /// Asks for a sync and applies what it sends.
    async fn sync_now(&mut self, index: &Index) -> Log {
        conformance::request_sync(&self.commands, &self.status, false).await;
        let mut log = Log::default();
        self.until_checkpoint(index, &mut log).await;
        log
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("stops within 5 s")
            .unwrap()
            .unwrap();
    }
}

/// One sync: run the connector until its checkpoint, then stop it.
async fn sync(cfg: SmbConfig, index: &Arc<Index>, checkpoint: Option<Checkpoint>) -> Log {
    let mut r = spawn(cfg, index, checkpoint, 64);
    let mut log = Log::default();
    r.until_checkpoint(index, &mut log).await;
    let jobs = r.status.snapshot().jobs;
    log.permission_reads = jobs.front().map_or(0, |j| j.counts.permission_reads);
    r.stop().await;
    log
}

/// A file on `server` held open without sharing it, by another SMB client
/// (`fixtures/hold_open.py`, PyPI's smbprotocol), until dropped.
struct HeldOpen(std::process::Child);

impl HeldOpen {
    fn start(server: &Server, rel: &str) -> HeldOpen {
        use std::io::BufRead;
        let venv = std::env::var_os("DOCENT_PYENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/docent/pyenv")
            });
        let py = venv.join("bin/python");
        assert!(
            py.exists(),
            "{} missing: run scripts/setup-python-tests.sh",
            py.display()
        );
        let mut child = Command::new(py)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hold_open.py"))
            .args([
                "127.0.0.1",
                &server.port.to_string(),
                "docs",
                "crawler",
                PASS,
                rel,
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run hold_open.py");
        // Within a minute: a helper stuck connecting must not hang the suite.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(60));
        if line.as_deref().map(str::trim) != Ok("held") {
            let _ = child.kill();
            let _ = child.wait();
            panic!("hold_open.py did not open {rel}: {line:?}");
        }
        HeldOpen(child)
    }
}

impl Drop for HeldOpen {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

fn ids(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn principals(list: &[&str]) -> BTreeSet<Principal> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crawls_a_share_with_documents_and_checkpoint() {
    let s = Server::start(free_port());
    s.put("readme.txt", "hello from the share");
    s.put("team/notes.md", "# notes");
    s.put("team/deep/plan.txt", "the plan");
    s.put("team/.hidden.txt", "excluded by the default glob");
    let index = Arc::new(Index::default());
    let log = sync(s.config("smb", ""), &index, None).await;
    assert_eq!(
        log.upserts.keys().cloned().collect::<BTreeSet<_>>(),
        ids(&["readme.txt", "team/deep/plan.txt", "team/notes.md"]),
        "skipped: {:?}",
        log.skipped
    );
    let d = &log.upserts["team/deep/plan.txt"];
    assert_eq!(d.content, b"the plan");
    assert_eq!(d.uri, format!("smb://127.0.0.1/docs/team/deep/plan.txt"));
    assert_eq!(d.name_hint, "plan.txt");
    assert_eq!(d.attributes["share_path"], "team/deep/plan.txt");
    assert!(d.modified_at.is_some_and(|t| t > 1_600_000_000));
    assert!(!d.acl.allow.is_empty());
    let cp = log.checkpoint.unwrap();
    assert!(cp["last_full_scan_ms"].as_i64().is_some_and(|t| t > 0));

    // A sub-path crawls only that folder.
    let index = Arc::new(Index::default());
    let log = sync(s.config("smb", "team/deep"), &index, None).await;
    assert_eq!(
        log.upserts.keys().cloned().collect::<BTreeSet<_>>(),
        ids(&["team/deep/plan.txt"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_adds_edits_renames_and_deletes() {
    let s = Server::start(free_port());
    for n in ["a", "b", "c", "d"] {
        s.put(&format!("{n}.txt"), n);
    }
    let cfg = || s.config("smb", "");
    let index = Arc::new(Index::default());
    let first = sync(cfg(), &index, None).await;
    assert_eq!(first.upserts.len(), 4);
    let again = sync(cfg(), &index, first.checkpoint.clone()).await;
    assert!(again.upserts.is_empty(), "unchanged files are not re-sent");
    // Their content is not read, but each file's DACL is (an ACL-only change shows nowhere
    // else on Samba), and the share root's for who may pass it.
    assert_eq!(again.permission_reads, 5);

    s.put("e.txt", "new");
    s.put("b.txt", "b, edited and longer");
    s.rename("c.txt", "c2.txt");
    s.rm("d.txt");
    let next = sync(cfg(), &index, again.checkpoint.clone()).await;
    assert_eq!(
        next.upserts.keys().cloned().collect::<BTreeSet<_>>(),
        ids(&["b.txt", "c2.txt", "e.txt"])
    );
    assert_eq!(next.upserts["b.txt"].content, b"b, edited and longer");
    assert_eq!(next.deletes, ids(&["c.txt", "d.txt"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_an_error_state_that_sends_nothing() {
    let s = Server::start(free_port());
    for n in ["a", "b", "c", "d", "e", "f"] {
        s.put(&format!("{n}.txt"), n);
    }
    let index = Arc::new(Index::default());
    let first = sync(s.config("smb", ""), &index, None).await;
    assert_eq!(first.upserts.len(), 6);
    let mut cfg = s.config("smb", "");
    cfg.password = "wrong".into();
    let mut r = spawn(cfg, &index, first.checkpoint, 8);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    // Two failed attempts: an error state, then a retry that fails the same way.
    loop {
        let st = r.status.snapshot();
        let failed = st
            .jobs
            .iter()
            .filter(|j| matches!(j.state, docent_connector_api::jobs::JobState::Failed(_)))
            .count();
        // Each retry shows "crawling" while it runs: the phase is read between attempts.
        if failed >= 2 && st.phase == "failed" {
            let err = st.last_error().unwrap();
            assert!(err.contains("cannot connect"), "{err}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no error state: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        r.rx.try_recv().is_err(),
        "nothing is sent (no delete, no skip)"
    );
    r.stop().await;
    assert_eq!(index.native_ids("smb").len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stopped_mid_crawl_deletes_nothing_and_resumes() {
    let s = Server::start(free_port());
    for i in 0..30 {
        s.put(&format!("f{i:02}.txt"), &format!("file {i}"));
    }
    let index = Arc::new(Index::default());
    // Crawl once so there is something that could be wrongly deleted.
    s.put("old.txt", "indexed before the outage");
    let mut r = spawn(s.config("smb", ""), &index, None, 1);
    let mut log = Log::default();
    let first = r.rx.recv().await.unwrap();
    log.apply(&index, first);
    s.stop();
    // Whatever the connector still had in hand may arrive; then an error state, nothing deleted.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        while let Ok(c) = r.rx.try_recv() {
            log.apply(&index, c);
        }
        let st = r.status.snapshot();
        if st.phase == "failed" && st.last_error().is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no error state: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(log.deletes.is_empty() && log.skipped.is_empty(), "{log:?}");
    assert!(log.checkpoint.is_none());
    let sent_before = log.upserts.len();
    assert!(sent_before < 31);

    s.launch();
    r.until_checkpoint(&index, &mut log).await;
    assert!(log.deletes.is_empty() && log.skipped.is_empty(), "{log:?}");
    assert_eq!(
        log.upserts.len(),
        31,
        "every file is indexed after the restart"
    );
    r.stop().await;

    // A new run from the checkpoint reads nothing again.
    let again = sync(s.config("smb", ""), &index, log.checkpoint.clone()).await;
    assert!(again.upserts.is_empty() && again.deletes.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dacl_allows_denies_and_inheritance_become_acls() {
    let s = shared();
    let base = format!("acl-{}", rand_name());
    let (hr, eng) = (gid("hr"), gid("eng"));
    let (alice, bob) = (uid("alice"), uid("bob"));
    s.mkdir(&base);
    s.put(&format!("{base}/hr.txt"), "salaries");
    s.cacls(
        &format!("{base}/hr.txt"),
        &[
            "--set",
            &format!("D:(D;;FR;;;S-1-22-1-{bob})(A;;FR;;;S-1-22-2-{hr})"),
        ],
    );
    // A folder whose ACEs are inherited by new files (read and execute: eng may list it and
    // pass through it)...
    s.mkdir(&format!("{base}/eng"));
    s.cacls(
        &format!("{base}/eng"),
        &["--set", &format!("D:(A;OICI;0x1200a9;;;S-1-22-2-{eng})")],
    );
    s.put(&format!("{base}/eng/design.txt"), "design");
    // ...and one below it with inheritance turned off and its own ACE.
    s.mkdir(&format!("{base}/eng/private"));
    s.cacls(
        &format!("{base}/eng/private"),
        &[
            "--set",
            // P: protected, inheritance from eng/ turned off.
            &format!("D:P(A;OICI;FA;;;S-1-22-1-{alice})"),
        ],
    );
    s.put(&format!("{base}/eng/private/secret.txt"), "secret");
    // A deny for a SID nobody maps: the file cannot be indexed safely.
    s.put(&format!("{base}/unmapped.txt"), "unknown deny");
    s.cacls(
        &format!("{base}/unmapped.txt"),
        &["--set", "D:(A;;FR;;;S-1-1-0)(D;;FR;;;S-1-5-21-1-2-3-4242)"],
    );

    let index = Arc::new(Index::default());
    let mut r = spawn(s.config("smb-acl", &base), &index, None, 64);
    let mut log = Log::default();
    r.until_checkpoint(&index, &mut log).await;
    let status = r.status.snapshot();
    r.stop().await;
    assert_eq!(
        log.skipped.len(),
        2,
        "unmapped.txt and eng/private/secret.txt are skipped: {:?}",
        log.skipped
    );
    let acl = |f: &str| log.upserts[&format!("{base}/{f}")].acl.clone();
    assert_eq!(acl("hr.txt").allow, principals(&["group:hr"]));
    assert_eq!(acl("hr.txt").deny, principals(&["user:bob"]));
    assert_eq!(acl("eng/design.txt").allow, principals(&["group:eng"]));
    // private/ names alice, eng/ only the group eng: whether she is in it is not known when
    // indexing, so nobody is left who both folders are known to let through (narrower, never
    // wider).
    let why = &log.skipped[&format!("{base}/eng/private/secret.txt")];
    assert!(why.contains("eng/private"), "{why}");
    let why = &log.skipped[&format!("{base}/unmapped.txt")];
    assert!(why.contains("S-1-5-21-1-2-3-4242"), "{why}");
    // The unmapped SID is listed in the connector's status.
    let err = status.last_error().unwrap_or_default();
    assert!(
        err.contains("unmapped SIDs") && err.contains("S-1-5-21-1-2-3-4242"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_only_change_is_resent_in_one_sync() {
    let s = shared();
    let base = format!("aclchange-{}", rand_name());
    let (hr, eng) = (gid("hr"), gid("eng"));
    s.put(&format!("{base}/doc.txt"), "same content");
    let file = format!("{base}/doc.txt");
    s.cacls(&file, &["--set", &format!("D:(A;;FR;;;S-1-22-2-{hr})")]);
    let index = Arc::new(Index::default());
    let first = sync(s.config("smb-aclchg", &base), &index, None).await;
    assert_eq!(first.upserts[&file].acl.allow, principals(&["group:hr"]));

    s.cacls(&file, &["--set", &format!("D:(A;;FR;;;S-1-22-2-{eng})")]);
    let next = sync(s.config("smb-aclchg", &base), &index, first.checkpoint).await;
    assert_eq!(
        next.upserts.keys().cloned().collect::<BTreeSet<_>>(),
        ids(&[&file])
    );
    assert_eq!(next.upserts[&file].acl.allow, principals(&["group:eng"]));
    assert_eq!(next.upserts[&file].content, b"same content");
}

/// The passwd and group files are read again at each sync: a uid given to someone else names
/// its new owner at the next one (found by a review: the smb connector read them once, at
/// start, and the file stayed allowed to the uid's previous owner).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uid_given_to_someone_else_names_them_at_the_next_sync() {
    let s = shared();
    let base = format!("names-{}", rand_name());
    let file = format!("{base}/doc.txt");
    s.put(&file, "notes");
    // Any uid: Samba writes and reads S-1-22-1-<uid> whether or not it has a name.
    let uid = 61_234;
    s.cacls(&file, &["--set", &format!("D:(A;;FR;;;S-1-22-1-{uid})")]);
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    std::fs::write(&passwd, format!("bob:x:{uid}:100::/:/bin/sh\n")).unwrap();
    let cfg = SmbConfig {
        passwd_file: passwd.clone(),
        ..s.config("smb-names", &base)
    };
    let index = Arc::new(Index::default());
    let mut r = spawn(cfg, &index, None, 64);
    let mut first = Log::default();
    r.until_checkpoint(&index, &mut first).await;
    assert_eq!(first.upserts[&file].acl.allow, principals(&["user:bob"]));

    std::fs::write(&passwd, format!("carol:x:{uid}:100::/:/bin/sh\n")).unwrap();
    let next = r.sync_now(&index).await;
    assert_eq!(next.upserts[&file].acl.allow, principals(&["user:carol"]));
    // The first crawl's reconciliation ended with its notice, after its checkpoint.
    assert_eq!(next.reconciled, 1, "{next:?}");
    r.stop().await;
}

struct Fixture {
    server: &'static Server,
    base: String,
}

impl conformance::Fixture for Fixture {
    fn connector(&self) -> Box<dyn Connector> {
        Box::new(SmbConnector::new(self.server.config("smb-conf", &self.base)).unwrap())
    }
    fn put(&mut self, id: &str, text: &str) {
        self.server.put(&format!("{}/{id}.txt", self.base), text);
    }
    fn remove(&mut self, id: &str) {
        self.server.rm(&format!("{}/{id}.txt", self.base));
    }
    fn change_acl(&mut self, id: &str) {
        self.server.cacls(
            &format!("{}/{id}.txt", self.base),
            &["--set", &format!("D:(A;;FR;;;S-1-22-2-{})", gid("eng"))],
        );
    }
    fn native_id(&self, id: &str) -> String {
        format!("{}/{id}.txt", self.base)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite() {
    let s = shared();
    conformance::run_all(|| {
        let base = format!("conf-{}", rand_name());
        s.mkdir(&base);
        Fixture { server: s, base }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_listing_deletes_nothing() {
    let s = Server::start(free_port());
    for n in ["a", "b"] {
        s.put(&format!("{n}.txt"), n);
    }
    let index = Arc::new(Index::default());
    let first = sync(s.config("smb", ""), &index, None).await;
    assert_eq!(first.upserts.len(), 2);
    // As an unmounted volume behind the share would look: everything gone at once.
    s.rm("a.txt");
    s.rm("b.txt");
    let mut r = spawn(s.config("smb", ""), &index, first.checkpoint, 8);
    let mut log = Log::default();
    until_a_job_is_blocked(&mut r, &index, &mut log, "reconcile").await;
    let st = r.status.snapshot();
    r.stop().await;
    assert!(log.deletes.is_empty(), "{log:?}");
    // Nothing was visited: no reconciliation is reported done, so one a rollback owes stays
    // owed (a review: it was paid).
    assert_eq!(log.reconciled, 0, "{log:?}");
    assert!(log.checkpoint.is_none(), "{log:?}");
    assert!(
        matches!(&st.jobs[0].state, docent_connector_api::jobs::JobState::Blocked(why) if why.contains("empty")),
        "{:?}",
        st.jobs[0]
    );
    assert!(st.last_error().is_some_and(|e| e.contains("empty")));
    assert_eq!(index.native_ids("smb").len(), 2);
}

/// Applies changes until `done` holds for the index, failing after 60 s.
async fn until(
    r: &mut Running,
    index: &Index,
    log: &mut Log,
    what: &str,
    done: impl Fn(&Index) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done(index) {
        match tokio::time::timeout_at(deadline, r.rx.recv()).await {
            Ok(Some(c)) => log.apply(index, c),
            Ok(None) => panic!("connector stopped"),
            Err(_) => panic!("{what}: not within 60 s; status: {:?}", r.status.snapshot()),
        }
    }
}

/// How long a watch may take to reach the server after the first reconciliation's checkpoint
/// (a new connection, a login, the share and the folder opened): a change made before that
/// waits for the next reconciliation. Generous, for a loaded machine (500 ms was close).
const WATCH_SETTLES: Duration = Duration::from_secs(2);

/// A connector over `base` on `s` that watches (no scheduled reconciliation, so only
/// notifications bring changes), after its first sync: what that sync sent, and the watch
/// given a moment to register.
async fn watching(s: &Server, id: &str, base: &str) -> (Running, Arc<Index>, Log) {
    let mut cfg = s.config(id, base);
    cfg.watch = true;
    cfg.reconcile_interval = Duration::from_secs(3600);
    let index = Arc::new(Index::default());
    let mut r = spawn(cfg, &index, None, 64);
    let mut log = Log::default();
    r.until_checkpoint(&index, &mut log).await;
    // See `change_notifications_reach_the_index_without_a_reconciliation`.
    tokio::time::sleep(WATCH_SETTLES).await;
    (r, index, log)
}

fn indexed_ids(index: &Index) -> BTreeSet<String> {
    index.native_ids("smb").into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_notifications_reach_the_index_without_a_reconciliation() {
    let s = Server::start(free_port());
    s.put("a.txt", "a");
    s.put("b.txt", "b");
    s.put("c.txt", "c");
    s.put("team/d.txt", "d");
    let mut cfg = s.config("smb", "");
    cfg.watch = true;
    // No scheduled reconciliation during the test: only notifications can bring the changes.
    cfg.reconcile_interval = Duration::from_secs(3600);
    let index = Arc::new(Index::default());
    let mut r = spawn(cfg, &index, None, 64);
    let mut log = Log::default();
    r.until_checkpoint(&index, &mut log).await;
    assert_eq!(
        indexed_ids(&index),
        ids(&["a.txt", "b.txt", "c.txt", "team/d.txt"])
    );
    log = Log::default();
    // The watch starts right after the first reconciliation; give the server a moment to
    // register it before changing anything.
    tokio::time::sleep(WATCH_SETTLES).await;

    s.put("new.txt", "added while watched");
    s.put("b.txt", "b, edited while watched");
    s.rename("c.txt", "c2.txt");
    s.rm("a.txt");
    s.put("team/sub/e.txt", "in a new folder");
    // The new folder is listed before its parent moves: listing it after the move fails, and
    // a failed watch hands over to a reconciliation (a suite run once renamed the parent while
    // the watch was about to list the new folder).
    until(&mut r, &index, &mut log, "notified changes", |ix| {
        indexed_ids(ix) == ids(&["b.txt", "c2.txt", "new.txt", "team/d.txt", "team/sub/e.txt"])
    })
    .await;
    s.rename("team", "team2");
    let want = ids(&[
        "b.txt",
        "c2.txt",
        "new.txt",
        "team2/d.txt",
        "team2/sub/e.txt",
    ]);
    until(&mut r, &index, &mut log, "notified changes", |ix| {
        indexed_ids(ix) == want
    })
    .await;
    assert_eq!(log.upserts["b.txt"].content, b"b, edited while watched");
    assert!(log.checkpoint.is_none(), "no reconciliation ran");
    let st = r.status.snapshot();
    assert!(
        st.jobs
            .iter()
            .any(|j| j.kind == "watch" && j.counts.deleted >= 1),
        "{:?}",
        st.jobs
    );
    assert!(!r.status.raised(Alarm::Watch), "{:?}", st.alarms);
    // The server goes away: the watch ends, and the status says so (before, only a log line
    // did, and status looked healthy while changes waited for the next reconciliation).
    s.stop();
    for _ in 0..300 {
        if r.status.raised(Alarm::Watch) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let alarms = r.status.snapshot().alarms;
    assert!(
        alarms
            .get(&Alarm::Watch)
            .is_some_and(|why| why.contains("change notifications stopped")),
        "{alarms:?}"
    );
    r.stop().await;
}

/// A link made while the share is watched, to a file in a folder closed to others: the
/// notification brings the link, which the listing shows with the target's file id, so it is
/// narrowed by the target's folders at once (not at the next reconciliation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_made_while_watched_is_narrowed_by_its_targets_folders() {
    let s = shared();
    let base = format!("watch-alias-{}", rand_name());
    s.mkdir(&base);
    s.put(&format!("{base}/hr/pay.txt"), "pay bands");
    s.put(&format!("{base}/open/readme.txt"), "readme");
    let alice = uid("alice");
    s.cacls(
        &format!("{base}/hr/pay.txt"),
        &["--set", "D:(A;;FR;;;S-1-1-0)"],
    );
    s.cacls(
        &format!("{base}/hr"),
        &["--set", &format!("D:P(A;;FA;;;S-1-22-1-{alice})")],
    );
    let (mut r, index, _) = watching(s, "smb-watch-alias", &base).await;
    let mut log = Log::default();
    // Made on the server's disk (SMB2 cannot make links), then moved into place through SMB,
    // which notifies the watch.
    let staging = s.dir.path().join(format!("share/{base}/staging"));
    std::fs::create_dir(&staging).unwrap();
    std::os::unix::fs::symlink("../hr/pay.txt", staging.join("pay-link.txt")).unwrap();
    let link = format!("{base}/open/pay-link.txt");
    s.rename(&format!("{base}/staging/pay-link.txt"), &link);
    until(&mut r, &index, &mut log, "the link is indexed", |ix| {
        ix.native_ids("smb-watch-alias").contains(&link)
    })
    .await;
    assert!(log.checkpoint.is_none(), "no reconciliation ran");
    assert_eq!(log.upserts[&link].acl.allow, principals(&["user:alice"]));
    r.stop().await;
}

/// A second review: the path of a target the filter leaves out (a hidden file) was recorded
/// only by a reconciliation, and only when a link to it existed then, so a link made while
/// watched was narrowed by its own folders alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_made_while_watched_to_a_hidden_file_is_narrowed_by_its_folders() {
    let s = shared();
    let base = format!("watch-hidden-{}", rand_name());
    s.mkdir(&base);
    s.put(&format!("{base}/hr/.bonus.txt"), "bonus table");
    s.put(&format!("{base}/open/readme.txt"), "readme");
    let alice = uid("alice");
    s.cacls(
        &format!("{base}/hr/.bonus.txt"),
        &["--set", "D:(A;;FR;;;S-1-1-0)"],
    );
    s.cacls(
        &format!("{base}/hr"),
        &["--set", &format!("D:P(A;;FA;;;S-1-22-1-{alice})")],
    );
    let (mut r, index, _) = watching(s, "smb-watch-hidden", &base).await;
    let mut log = Log::default();
    let staging = s.dir.path().join(format!("share/{base}/staging"));
    std::fs::create_dir(&staging).unwrap();
    std::os::unix::fs::symlink("../hr/.bonus.txt", staging.join("bonus.txt")).unwrap();
    let link = format!("{base}/open/bonus.txt");
    s.rename(&format!("{base}/staging/bonus.txt"), &link);
    until(&mut r, &index, &mut log, "the link is indexed", |ix| {
        ix.native_ids("smb-watch-hidden").contains(&link)
    })
    .await;
    assert_eq!(log.upserts[&link].acl.allow, principals(&["user:alice"]));
    r.stop().await;
}

/// A DACL narrowed through one path of a file the listing shows under two (a link to it):
/// the notification names that path only, and the other path's document is narrowed with it
/// (not at the next reconciliation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dacl_narrowed_through_one_path_narrows_the_links_document() {
    let s = shared();
    let base = format!("watch-narrow-{}", rand_name());
    s.mkdir(&base);
    s.put(&format!("{base}/pay.txt"), "pay bands");
    s.mkdir(&format!("{base}/open"));
    s.cacls(
        &format!("{base}/pay.txt"),
        &["--set", "D:(A;;FR;;;S-1-1-0)"],
    );
    std::os::unix::fs::symlink(
        "../pay.txt",
        s.dir.path().join(format!("share/{base}/open/pay-link.txt")),
    )
    .unwrap();
    let (mut r, index, first) = watching(s, "smb-watch-narrow", &base).await;
    let link = format!("{base}/open/pay-link.txt");
    assert!(
        first.upserts[&link]
            .acl
            .allow
            .contains(&Principal::Everyone)
    );
    let mut log = Log::default();
    let alice = uid("alice");
    s.cacls(
        &format!("{base}/pay.txt"),
        &["--set", &format!("D:(A;;FR;;;S-1-22-1-{alice})")],
    );
    let key = DocKey::new("smb-watch-narrow", link.as_str());
    until(
        &mut r,
        &index,
        &mut log,
        "the link's document narrowed",
        |ix| {
            ix.0.lock()
                .unwrap()
                .get(&key)
                .is_some_and(|(_, acl)| acl.allow == principals(&["user:alice"]))
        },
    )
    .await;
    assert!(log.checkpoint.is_none(), "no reconciliation ran");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_permissions_narrow_every_files_acl() {
    let s = shared();
    let base = format!("sharelevel-{}", rand_name());
    let (hr, eng) = (gid("hr"), gid("eng"));
    s.put(&format!("{base}/public.txt"), "for everyone");
    s.cacls(
        &format!("{base}/public.txt"),
        &["--set", "D:(A;;FR;;;S-1-1-0)"],
    );
    s.put(&format!("{base}/eng.txt"), "for eng");
    s.cacls(
        &format!("{base}/eng.txt"),
        &["--set", &format!("D:(A;;FR;;;S-1-22-2-{eng})")],
    );
    s.put(&format!("{base}/hr.txt"), "for hr");
    s.cacls(
        &format!("{base}/hr.txt"),
        &["--set", &format!("D:(A;;FR;;;S-1-22-2-{hr})")],
    );
    let mut cfg = s.config("smb-share", &base);
    cfg.share_acl = Some(Acl {
        allow: principals(&["group:hr"]),
        deny: principals(&["user:bob"]),
    });
    let index = Arc::new(Index::default());
    let log = sync(cfg, &index, None).await;
    let acl = |f: &str| log.upserts[&format!("{base}/{f}")].acl.clone();
    assert_eq!(
        acl("public.txt").allow,
        principals(&["group:hr"]),
        "a public file on an hr share"
    );
    assert_eq!(acl("hr.txt").allow, principals(&["group:hr"]));
    for f in ["public.txt", "hr.txt"] {
        assert_eq!(acl(f).deny, principals(&["user:bob"]), "{f}");
    }
    let why = &log.skipped[&format!("{base}/eng.txt")];
    assert!(why.contains("share-level"), "{why}");
}

/// An edit lost in a rollback (a batch that failed to write) is sent again by the same running
/// connector, which reconciles by itself once the index reports the rollback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_lost_in_a_rollback_is_sent_again() {
    let s = Server::start(free_port());
    s.put("a.txt", "first");
    let index = Arc::new(Index::default());
    let mut r = spawn(s.config("smb", ""), &index, None, 64);
    r.until_checkpoint(&index, &mut Log::default()).await;
    let key = DocKey::new("smb", "a.txt");
    let first = index.get(&key).unwrap();

    s.put("a.txt", "second, longer");
    index.1.store(true, SeqCst);
    let log = r.sync_now(&index).await;
    assert_eq!(log.upserts["a.txt"].content, b"second, longer");
    index.1.store(false, SeqCst);
    // Not known to be lost: the record stands, nothing more is sent.
    let log = r.sync_now(&index).await;
    assert!(log.upserts.is_empty(), "{log:?}");
    assert_eq!(index.get(&key), Some(first.clone()));

    // The rollback is reported: a sync comes by itself (within ROLLBACK_CHECK, long before the
    // hour-long schedule) and sends the edit again.
    index.2.fetch_add(1, SeqCst);
    let mut log = Log::default();
    r.until_checkpoint(&index, &mut log).await;
    assert_eq!(log.upserts["a.txt"].content, b"second, longer");
    assert_ne!(index.get(&key), Some(first));
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_only_change_in_the_watched_folder_is_notified() {
    let s = shared();
    let base = format!("aclnotify-{}", rand_name());
    let (hr, eng) = (gid("hr"), gid("eng"));
    let file = format!("{base}/doc.txt");
    s.put(&file, "same content");
    s.cacls(&file, &["--set", &format!("D:(A;;FR;;;S-1-22-2-{hr})")]);
    // Samba reports a security change only to a watch on the file's own folder (a recursive
    // watch higher up hears of content changes below it, not of ACL changes): the watch here is
    // on the crawl root `base`, the file's folder. Deeper ACL changes wait for reconciliation.
    let (mut r, index, first) = watching(s, "smb-aclnotify", &base).await;
    assert_eq!(first.upserts[&file].acl.allow, principals(&["group:hr"]));
    let mut log = Log::default();

    s.cacls(&file, &["--set", &format!("D:(A;;FR;;;S-1-22-2-{eng})")]);
    let key = DocKey::new("smb-aclnotify", file.as_str());
    let want = Acl {
        allow: principals(&["group:eng"]),
        deny: BTreeSet::new(),
    };
    until(&mut r, &index, &mut log, "the notified ACL change", |ix| {
        ix.0.lock()
            .unwrap()
            .get(&key)
            .is_some_and(|(_, acl)| *acl == want)
    })
    .await;
    assert!(log.checkpoint.is_none(), "no reconciliation ran");
    assert_eq!(log.upserts[&file].content, b"same content");
    r.stop().await;
}

/// A folder the crawler is refused (an ordinary user on the `limited` share): what was indexed
/// below it is withdrawn, nothing is deleted, and the rest of the share still syncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_closed_to_the_crawler_withdraws_its_files_and_the_sync_goes_on() {
    let s = shared();
    let base = format!("closed-{}", rand_name());
    s.mkdir(&base);
    s.put(&format!("{base}/open.txt"), "open");
    s.put(&format!("{base}/hr/pay.txt"), "pay bands");
    let cfg = || SmbConfig {
        share: "limited".into(),
        ..s.config("smb-limited", &base)
    };
    let index = Arc::new(Index::default());
    let first = sync(cfg(), &index, None).await;
    assert_eq!(
        first.upserts.keys().cloned().collect::<BTreeSet<_>>(),
        ids(&[&format!("{base}/open.txt"), &format!("{base}/hr/pay.txt")]),
        "{first:?}"
    );
    // Only alice may now enter hr/ (P: nothing inherited); the file's own ACL is unchanged.
    let alice = uid("alice");
    s.cacls(
        &format!("{base}/hr"),
        &["--set", &format!("D:P(A;OICI;FA;;;S-1-22-1-{alice})")],
    );
    s.put(&format!("{base}/new.txt"), "new");
    let mut r = spawn(cfg(), &index, first.checkpoint, 64);
    let mut log = Log::default();
    r.until_checkpoint(&index, &mut log).await;
    let st = r.status.snapshot();
    r.stop().await;
    let why = &log.skipped[&format!("{base}/hr/pay.txt")];
    assert!(why.contains("withdrawn") && why.contains("hr"), "{why}");
    assert!(log.deletes.is_empty(), "{log:?}");
    assert!(
        log.upserts.contains_key(&format!("{base}/new.txt")),
        "{log:?}"
    );
    assert!(
        st.jobs[0]
            .failures
            .iter()
            .any(|f| f.id == format!("{base}/hr") && f.reason.contains("cannot be listed")),
        "{:?}",
        st.jobs[0]
    );
}

/// The crawl root itself closed to the crawler: its files are withdrawn, not kept under their
/// old ACLs as in an outage, and not deleted. (Opening it again is the subfolder case's path;
/// this Samba keeps refusing the crawler after the DACL is reset, so it is not asserted here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crawl_root_closed_to_the_crawler_withdraws_its_files() {
    let s = shared();
    let base = format!("closed-root-{}", rand_name());
    s.mkdir(&base);
    s.put(&format!("{base}/a.txt"), "a");
    s.put(&format!("{base}/b.txt"), "b");
    let cfg = || SmbConfig {
        share: "limited".into(),
        ..s.config("smb-limited-root", &base)
    };
    let index = Arc::new(Index::default());
    let first = sync(cfg(), &index, None).await;
    assert_eq!(first.upserts.len(), 2, "{first:?}");
    let alice = uid("alice");
    s.cacls(
        &base,
        &["--set", &format!("D:P(A;OICI;FA;;;S-1-22-1-{alice})")],
    );
    let closed = sync(cfg(), &index, first.checkpoint.clone()).await;
    assert_eq!(closed.skipped.len(), 2, "{closed:?}");
    assert!(
        closed.skipped.values().all(|why| why.contains("withdrawn")),
        "{closed:?}"
    );
    assert!(closed.deletes.is_empty(), "{closed:?}");
}

/// A folder closed to all but alice narrows the files below it, whose own DACLs are open: the
/// crawler (an admin of the share) still lists them, but Samba would not let bob through the
/// folder, so Docent does not either (found by a review: the files kept their own ACLs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_closed_to_others_narrows_the_files_below_it() {
    let s = shared();
    let base = format!("narrow-{}", rand_name());
    s.mkdir(&base);
    s.put(&format!("{base}/hr/pay.txt"), "pay bands");
    s.put(&format!("{base}/open.txt"), "open");
    let alice = uid("alice");
    let everyone_reads = "D:(A;;FR;;;S-1-1-0)";
    s.cacls(&format!("{base}/hr/pay.txt"), &["--set", everyone_reads]);
    s.cacls(&format!("{base}/open.txt"), &["--set", everyone_reads]);
    s.cacls(
        &format!("{base}/hr"),
        &["--set", &format!("D:P(A;;FA;;;S-1-22-1-{alice})")],
    );
    // Everyone may list this one but only alice may pass through it (a 0754 folder).
    s.put(&format!("{base}/listed/plan.txt"), "plan");
    s.cacls(
        &format!("{base}/listed/plan.txt"),
        &["--set", everyone_reads],
    );
    s.cacls(
        &format!("{base}/listed"),
        &[
            "--set",
            &format!("D:P(A;;FA;;;S-1-22-1-{alice})(A;;FR;;;S-1-1-0)"),
        ],
    );
    let index = Arc::new(Index::default());
    let first = sync(s.config("smb-narrow", &base), &index, None).await;
    let acl = |f: &str| first.upserts[&format!("{base}/{f}")].acl.clone();
    assert_eq!(acl("hr/pay.txt").allow, principals(&["user:alice"]));
    assert_eq!(acl("listed/plan.txt").allow, principals(&["user:alice"]));
    assert!(acl("open.txt").allow.contains(&Principal::Everyone));
    // On a Windows server users bypass traverse checking: the files' own ACLs.
    let windows = SmbConfig {
        folder_permissions: false,
        ..s.config("smb-narrow-windows", &base)
    };
    let index = Arc::new(Index::default());
    let r = sync(windows, &index, None).await;
    assert!(
        r.upserts[&format!("{base}/hr/pay.txt")]
            .acl
            .allow
            .contains(&Principal::Everyone)
    );
}

/// A link Samba follows to a file in a folder closed to others: Samba resolves it on the
/// server, where the file's own folders must let the reader pass, so the link's document is
/// narrowed by them as well as by the link's folders (before, the link in an open folder
/// gave the file to everyone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_to_a_file_in_a_closed_folder_is_narrowed_by_that_folder() {
    let s = shared();
    let base = format!("alias-{}", rand_name());
    s.mkdir(&base);
    s.put(&format!("{base}/hr/pay.txt"), "pay bands");
    s.put(&format!("{base}/open/readme.txt"), "readme");
    let alice = uid("alice");
    let everyone_reads = "D:(A;;FR;;;S-1-1-0)";
    s.cacls(&format!("{base}/hr/pay.txt"), &["--set", everyone_reads]);
    s.cacls(
        &format!("{base}/open/readme.txt"),
        &["--set", everyone_reads],
    );
    s.cacls(
        &format!("{base}/hr"),
        &["--set", &format!("D:P(A;;FA;;;S-1-22-1-{alice})")],
    );
    std::os::unix::fs::symlink(
        "../hr/pay.txt",
        s.dir.path().join(format!("share/{base}/open/pay-link.txt")),
    )
    .unwrap();
    // A target the default exclude (`**/.*`) leaves out is still the file Samba checks (a
    // review: the link was indexed for everyone).
    s.put(&format!("{base}/hr/.bonus.txt"), "bonus table");
    s.cacls(&format!("{base}/hr/.bonus.txt"), &["--set", everyone_reads]);
    std::os::unix::fs::symlink(
        "../hr/.bonus.txt",
        s.dir.path().join(format!("share/{base}/open/bonus.txt")),
    )
    .unwrap();
    let index = Arc::new(Index::default());
    let first = sync(s.config("smb-alias", &base), &index, None).await;
    let acl = |f: &str| {
        first
            .upserts
            .get(&format!("{base}/{f}"))
            .unwrap_or_else(|| panic!("{f} not indexed: {first:?}"))
            .acl
            .clone()
    };
    assert_eq!(acl("hr/pay.txt").allow, principals(&["user:alice"]));
    assert_eq!(acl("open/pay-link.txt").allow, principals(&["user:alice"]));
    assert_eq!(acl("open/bonus.txt").allow, principals(&["user:alice"]));
    assert!(!first.upserts.contains_key(&format!("{base}/hr/.bonus.txt")));
    assert!(acl("open/readme.txt").allow.contains(&Principal::Everyone));
}

/// A link to a folder inside a folder closed to others: the listing meets the folder first
/// through the link (its name sorts first) and does not walk it again under its own path, but
/// Samba checks the real path's folders, so the files are narrowed by them too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_to_a_folder_inside_a_closed_folder_is_narrowed_by_it() {
    let s = shared();
    let base = format!("dir-alias-{}", rand_name());
    s.mkdir(&base);
    s.put(&format!("{base}/restricted/team/plan.txt"), "plan");
    let alice = uid("alice");
    let everyone_reads = "D:(A;;FR;;;S-1-1-0)";
    s.cacls(
        &format!("{base}/restricted/team/plan.txt"),
        &["--set", everyone_reads],
    );
    s.cacls(
        &format!("{base}/restricted/team"),
        &["--set", "D:P(A;;FA;;;S-1-1-0)"],
    );
    s.cacls(
        &format!("{base}/restricted"),
        &["--set", &format!("D:P(A;;FA;;;S-1-22-1-{alice})")],
    );
    std::os::unix::fs::symlink(
        "restricted/team",
        s.dir.path().join(format!("share/{base}/a-link")),
    )
    .unwrap();
    let index = Arc::new(Index::default());
    let first = sync(s.config("smb-dir-alias", &base), &index, None).await;
    let doc = first
        .upserts
        .get(&format!("{base}/a-link/plan.txt"))
        .unwrap_or_else(|| panic!("the file is indexed under the link: {first:?}"));
    assert_eq!(doc.acl.allow, principals(&["user:alice"]));
}

/// A server-side link back up the tree (Samba follows links inside the share) is walked once,
/// not until the path is too long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_back_up_the_tree_is_not_walked_forever() {
    let s = Server::start(free_port());
    s.put("loop/a.txt", "a");
    std::os::unix::fs::symlink("..", s.dir.path().join("share/loop/up")).unwrap();
    let index = Arc::new(Index::default());
    let mut r = spawn(s.config("smb-loop", "loop"), &index, None, 64);
    let mut log = Log::default();
    r.until_checkpoint(&index, &mut log).await;
    let st = r.status.snapshot();
    r.stop().await;
    assert!(log.upserts.contains_key("loop/a.txt"), "{log:?}");
    assert!(log.upserts.len() <= 3, "{:?}", log.upserts.keys());
    assert!(
        st.jobs[0]
            .failures
            .iter()
            .any(|f| f.reason.contains("already walked")),
        "{:?}",
        st.jobs[0]
    );
}

/// Session 36's note: deletion protection counted each batch of notified deletions alone, so
/// files deleted a few at a time (each batch under the share's limit) were all withdrawn, as a
/// whole share emptying behind a watch would be. The notifications' deletions since the last
/// reconciliation are counted together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notified_deletions_are_held_back_once_they_add_up_past_the_limit() {
    let s = Server::start(free_port());
    for i in 0..10 {
        s.put(&format!("f{i}.txt"), &format!("file {i}"));
    }
    let mut cfg = s.config("smb", "");
    cfg.watch = true;
    cfg.reconcile_interval = Duration::from_secs(3600);
    cfg.deletion_protection_percent = 15;
    cfg.deletion_protection_min_docs = 2;
    let index = Arc::new(Index::default());
    let mut r = spawn(cfg, &index, None, 64);
    let mut log = Log::default();
    r.until_checkpoint(&index, &mut log).await;
    assert_eq!(indexed_ids(&index).len(), 10);
    tokio::time::sleep(WATCH_SETTLES).await;

    // One deletion: 10% of the share, under the limit.
    s.rm("f0.txt");
    until(&mut r, &index, &mut log, "the first deletion", |ix| {
        !indexed_ids(ix).contains("f0.txt")
    })
    .await;
    // Another, in its own batch: 2 of 10 since the reconciliation, past 15%; with an edit,
    // which is not held back.
    s.rm("f1.txt");
    s.put("f2.txt", "file 2, edited");
    until_a_job_is_blocked(&mut r, &index, &mut log, "watch").await;
    assert!(indexed_ids(&index).contains("f1.txt"), "{log:?}");
    assert!(r.status.raised(Alarm::DeletionProtection));
    until_content(&mut r, &index, &mut log, "f2.txt", b"file 2, edited").await;
    r.stop().await;
}

/// Found by a review: a reconciliation's hold (its deletions past the limit) let the watch go
/// on deleting, with a count started afresh. While the hold stands, notified deletions wait
/// too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notified_deletions_wait_while_a_reconciliations_hold_stands() {
    let s = Server::start(free_port());
    for i in 0..10 {
        s.put(&format!("f{i}.txt"), &format!("file {i}"));
    }
    let config = || {
        let mut cfg = s.config("smb", "");
        cfg.watch = true;
        cfg.reconcile_interval = Duration::from_secs(3600);
        cfg.deletion_protection_percent = 15;
        cfg.deletion_protection_min_docs = 2;
        cfg
    };
    let index = Arc::new(Index::default());
    let first = sync(config(), &index, None).await;
    assert_eq!(first.upserts.len(), 10);
    // Half the share gone while the connector was stopped: its first reconciliation holds.
    for i in 0..5 {
        s.rm(&format!("f{i}.txt"));
    }
    let mut r = spawn(config(), &index, first.checkpoint, 64);
    let mut log = Log::default();
    r.until_checkpoint(&index, &mut log).await;
    assert!(r.status.raised(Alarm::DeletionProtection));
    assert_eq!(indexed_ids(&index).len(), 10);
    tokio::time::sleep(WATCH_SETTLES).await;
    // One more deletion: alone under the limit, but the hold stands.
    s.rm("f9.txt");
    s.put("f8.txt", "file 8, edited");
    until_content(&mut r, &index, &mut log, "f8.txt", b"file 8, edited").await;
    // The deletion's batch has ended (blocked) or comes with the edit's.
    until_a_job_is_blocked(&mut r, &index, &mut log, "watch").await;
    assert!(indexed_ids(&index).contains("f9.txt"), "{log:?}");
    r.stop().await;
}

/// Applies changes until a job of `kind` ends blocked (and the changes sent before), failing
/// after 60 s.
async fn until_a_job_is_blocked(r: &mut Running, index: &Index, log: &mut Log, kind: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let blocked = |r: &Running| {
        r.status.snapshot().jobs.iter().any(|j| {
            j.kind == kind && matches!(j.state, docent_connector_api::jobs::JobState::Blocked(_))
        })
    };
    while !blocked(r) {
        while let Ok(c) = r.rx.try_recv() {
            log.apply(index, c);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {kind} job held back: {:?}",
            r.status.snapshot().jobs
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while let Ok(c) = r.rx.try_recv() {
        log.apply(index, c);
    }
}

/// Applies changes until `name` was sent with `content`, failing after 60 s.
async fn until_content(r: &mut Running, index: &Index, log: &mut Log, name: &str, content: &[u8]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while log.upserts.get(name).is_none_or(|d| d.content != content) {
        match tokio::time::timeout_at(deadline, r.rx.recv()).await {
            Ok(Some(c)) => log.apply(index, c),
            other => panic!("{name} did not arrive: {other:?}"),
        }
    }
}

/// Found by a review: a changed file held open without sharing it for reading (a mailbox),
/// alone in its folder, was withdrawn at a reconciliation: the folder's permissions had not
/// been read, so its ACL could not be narrowed. It keeps its indexed version, as a busy file
/// whose ACL is unchanged does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_file_alone_in_its_folder_keeps_its_indexed_version() {
    let server = Server::start(free_port());
    server.put("note.txt", "a note");
    server.put("mail/box.pst", "mail, first version");
    let index = Arc::new(Index::default());
    let log = sync(server.config("busy", ""), &index, None).await;
    assert!(log.upserts.contains_key("mail/box.pst"), "{log:?}");
    let before = index.get(&DocKey::new("busy", "mail/box.pst")).unwrap();

    server.put("mail/box.pst", "mail, second and longer version");
    let held = HeldOpen::start(&server, "mail/box.pst");
    let log = sync(server.config("busy", ""), &index, None).await;
    drop(held);
    assert!(!log.skipped.contains_key("mail/box.pst"), "{log:?}");
    assert!(!log.upserts.contains_key("mail/box.pst"), "{log:?}");
    assert_eq!(
        index.get(&DocKey::new("busy", "mail/box.pst")),
        Some(before),
        "the indexed version stays"
    );
    // Free again: the new version is read.
    let log = sync(server.config("busy", ""), &index, None).await;
    assert!(log.upserts.contains_key("mail/box.pst"), "{log:?}");
}
