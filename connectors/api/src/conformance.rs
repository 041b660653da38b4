//! The connector conformance suite: behaviour every connector must show, checked against an
//! in-memory index. A connector crate implements [`Fixture`] for its source (a temp directory, a
//! test wiki, ...) and calls [`run_all`] from a test. The checks:
//!
//! - **crawl**: the first run sends every document (with a non-empty ACL) and then a checkpoint;
//! - **resume and idempotent replay**: a second run over the same index state and checkpoint
//!   sends no upsert for an unchanged document;
//! - **changes**: an edited document is sent again, a new one is sent, and nothing else;
//! - **deletes**: a removed document is deleted;
//! - **ACL changes**: a document whose ACL changed (and nothing else) is sent with the new ACL;
//! - **cancellation**: a running connector returns promptly once its shutdown token is cancelled.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    Acl, Change, Checkpoint, Connector, ConnectorContext, DocKey, IndexedDoc, IndexedState,
    NoMemberships, StatusHandle,
};

/// A connector's test source. Ids are the fixture's names for documents; `native_id` maps them
/// to the connector's document ids.
pub trait Fixture {
    /// A fresh connector over the source (configured not to watch: runs end at cancellation).
    fn connector(&self) -> Box<dyn Connector>;
    /// Creates or replaces document `id` with `text`.
    fn put(&mut self, id: &str, text: &str);
    fn remove(&mut self, id: &str);
    /// Changes document `id`'s ACL, and nothing else about it.
    fn change_acl(&mut self, id: &str);
    fn native_id(&self, id: &str) -> String;
}

/// What the index holds, as the pipeline would keep it.
#[derive(Default)]
pub struct MemoryIndex {
    docs: Mutex<BTreeMap<DocKey, (IndexedDoc, Acl)>>,
}

impl IndexedState for MemoryIndex {
    fn get(&self, key: &DocKey) -> Option<IndexedDoc> {
        self.docs.lock().unwrap().get(key).map(|(d, _)| d.clone())
    }

    fn native_ids(&self, connector: &str) -> Vec<String> {
        self.docs
            .lock()
            .unwrap()
            .keys()
            .filter(|k| k.connector == connector)
            .map(|k| k.native_id.clone())
            .collect()
    }
}

/// What a harness keeps of the context it ran a connector with ([`harness_context`]).
pub struct Harness {
    /// What the connector sends.
    pub changes: mpsc::Receiver<Change>,
    /// Sync now, pause, resume.
    pub commands: mpsc::Sender<crate::jobs::ConnectorCommand>,
    pub status: StatusHandle,
    pub shutdown: CancellationToken,
}

/// A context to run a connector outside the daemon (tests, benchmarks): over `indexed`, from
/// `checkpoint`, its changes on a channel of `capacity`, group memberships dropped.
pub fn harness_context(
    indexed: Arc<dyn IndexedState>,
    checkpoint: Option<Checkpoint>,
    capacity: usize,
) -> (ConnectorContext, Harness) {
    let (sink, changes) = mpsc::channel(capacity);
    let (commands, cmd_rx) = mpsc::channel(4);
    let shutdown = CancellationToken::new();
    let status = StatusHandle::default();
    let ctx = ConnectorContext {
        commands: cmd_rx,
        sink,
        memberships: Arc::new(NoMemberships),
        indexed,
        checkpoint,
        shutdown: shutdown.clone(),
        status: status.clone(),
    };
    let harness = Harness {
        changes,
        commands,
        status,
        shutdown,
    };
    (ctx, harness)
}

/// Asks a connector run with [`harness_context`] for a sync now, as `docent sync ID` does
/// (`force_deletions` as `--force-deletions`); returns the job's id.
pub async fn request_sync(
    commands: &mpsc::Sender<crate::jobs::ConnectorCommand>,
    status: &StatusHandle,
    force_deletions: bool,
) -> u64 {
    let job_id = status.reserve_job_id();
    let cmd = crate::jobs::ConnectorCommand::SyncNow {
        job_id,
        force_deletions,
        full: false,
    };
    commands
        .send(cmd)
        .await
        .expect("the connector takes commands");
    job_id
}

/// What one run sent.
#[derive(Debug, Default)]
pub struct RunLog {
    pub upserts: BTreeMap<String, Acl>,
    pub deletes: BTreeSet<String>,
    pub skipped: BTreeSet<String>,
    pub checkpoint: Option<Checkpoint>,
    /// Reconciliation notices ([`Change::Reconciled`]) received before the checkpoint.
    pub reconciled: usize,
}

/// Runs the connector until its first checkpoint (the end of its crawl), applies what it sent to
/// `index`, cancels it, and checks that it stops within two seconds.
pub async fn run_once(
    connector: Box<dyn Connector>,
    index: &Arc<MemoryIndex>,
    checkpoint: Option<Checkpoint>,
) -> Result<RunLog, String> {
    let (ctx, mut h) = harness_context(index.clone(), checkpoint, 64);
    let (rx, shutdown) = (&mut h.changes, h.shutdown.clone());
    let id = connector.id().to_string();
    let task = tokio::spawn(connector.run(ctx));
    let mut log = RunLog::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while log.checkpoint.is_none() {
        let change = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .map_err(|_| format!("{id}: no checkpoint within 30 s"))?
            .ok_or_else(|| format!("{id}: the connector stopped before a checkpoint"))?;
        let mut docs = index.docs.lock().unwrap();
        match change {
            Change::Upsert(d) => {
                if d.acl.allow.is_empty() {
                    return Err(format!("{id}: {} sent without an ACL", d.key));
                }
                let entry = IndexedDoc {
                    version: d.version.clone(),
                    acl_fingerprint: d.acl.fingerprint(),
                };
                log.upserts.insert(d.key.native_id.clone(), d.acl.clone());
                docs.insert(d.key.clone(), (entry, d.acl.clone()));
            }
            Change::Delete(k) => {
                docs.remove(&k);
                log.deletes.insert(k.native_id);
            }
            Change::Skipped { key, .. } => {
                docs.remove(&key);
                log.skipped.insert(key.native_id);
            }
            Change::Checkpoint { checkpoint, .. } => log.checkpoint = Some(checkpoint),
            Change::Reconciled { .. } => log.reconciled += 1,
        }
    }
    shutdown.cancel();
    match tokio::time::timeout(Duration::from_secs(2), task).await {
        Err(_) => return Err(format!("{id}: did not stop within 2 s of cancellation")),
        Ok(Err(e)) => return Err(format!("{id}: the connector task panicked: {e}")),
        Ok(Ok(Err(e))) => return Err(format!("{id}: {e}")),
        Ok(Ok(Ok(()))) => {}
    }
    Ok(log)
}

fn expect<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, want {want:?}"))
    }
}

/// Runs every check against a fresh fixture from `make`; the first failure is the error.
pub async fn run_all<F: Fixture>(make: impl Fn() -> F) -> Result<(), String> {
    let mut f = make();
    for (id, text) in [("a", "alpha"), ("b", "bravo"), ("c", "charlie")] {
        f.put(id, text);
    }
    let n =
        |f: &F, ids: &[&str]| -> BTreeSet<String> { ids.iter().map(|i| f.native_id(i)).collect() };
    let index = Arc::new(MemoryIndex::default());

    // Crawl.
    let first = run_once(f.connector(), &index, None).await?;
    expect(
        "crawl upserts",
        first.upserts.keys().cloned().collect(),
        n(&f, &["a", "b", "c"]),
    )?;
    expect("crawl deletes", first.deletes.clone(), BTreeSet::new())?;

    // Resume and idempotent replay: nothing changed, nothing is sent.
    let again = run_once(f.connector(), &index, first.checkpoint.clone()).await?;
    expect("replay upserts", again.upserts.len(), 0)?;
    expect("replay deletes", again.deletes.len(), 0)?;

    // Changes: an edit and an addition, and only those. (Sleep past coarse mtime clocks.)
    tokio::time::sleep(Duration::from_millis(20)).await;
    f.put("b", "bravo, edited");
    f.put("d", "delta");
    let changed = run_once(f.connector(), &index, again.checkpoint.clone()).await?;
    expect(
        "change upserts",
        changed.upserts.keys().cloned().collect(),
        n(&f, &["b", "d"]),
    )?;

    // Deletes.
    f.remove("a");
    let deleted = run_once(f.connector(), &index, changed.checkpoint.clone()).await?;
    expect("deletes", deleted.deletes.clone(), n(&f, &["a"]))?;
    expect("upserts alongside a delete", deleted.upserts.len(), 0)?;

    // ACL changes: sent again, with a different ACL.
    let before = index
        .docs
        .lock()
        .unwrap()
        .iter()
        .find(|(k, _)| k.native_id == f.native_id("c"))
        .map(|(_, (_, acl))| acl.clone())
        .ok_or("document c is not indexed")?;
    f.change_acl("c");
    let acl = run_once(f.connector(), &index, deleted.checkpoint.clone()).await?;
    expect(
        "ACL change upserts",
        acl.upserts.keys().cloned().collect(),
        n(&f, &["c"]),
    )?;
    if acl.upserts.values().next() == Some(&before) {
        return Err("ACL change: the document was sent with its old ACL".into());
    }

    // Cancellation right away (during the crawl) also stops the connector.
    let mut fresh = make();
    for i in 0..50 {
        fresh.put(&format!("bulk-{i}"), "bulk document");
    }
    check_cancellation(fresh.connector()).await
}

/// A connector cancelled right after it starts (during its crawl, if it crawls) stops within
/// two seconds. The receiver is drained, as the pipeline does on shutdown. Applies to every
/// connector, crawling or not (the push connector runs this check alone).
pub async fn check_cancellation(connector: Box<dyn Connector>) -> Result<(), String> {
    let (ctx, h) = harness_context(Arc::new(MemoryIndex::default()), None, 1);
    let mut rx = h.changes;
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let task = tokio::spawn(connector.run(ctx));
    h.shutdown.cancel();
    match tokio::time::timeout(Duration::from_secs(2), task).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("cancelled connector panicked: {e}")),
        Err(_) => Err("a connector cancelled during its crawl did not stop within 2 s".into()),
    }
}
