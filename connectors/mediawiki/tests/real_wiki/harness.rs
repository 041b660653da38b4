//! Runs a connector as the daemon would: a bounded sink, an index that applies what it
//! receives, admin commands, a status handle and a shutdown token.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use docent_connector_api::conformance;
use docent_connector_api::jobs::{ConnectorCommand, JobRecord};
use docent_connector_api::registry::{ConfigEnv, ConnectorFactory};
use docent_connector_api::{
    Acl, Change, Checkpoint, Connector, ConnectorError, DocKey, IndexedDoc, IndexedState,
    StatusHandle,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::wiki::{BOT_PASS, BOT_USER, Wiki};

pub const ID: &str = "wiki";
/// How long a test waits for something the connector should do within a poll or two.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A connector over `wiki` from a config section (`url` is added); polls every second.
pub fn connector(wiki: &Wiki, section: &str) -> Box<dyn Connector> {
    let mut toml = format!("url = \"{}\"\n", wiki.url);
    if !section.contains("poll_interval_secs") {
        toml.push_str("poll_interval_secs = 1\n");
    }
    toml.push_str(section);
    let table: toml::Table = toml.parse().expect("test config is TOML");
    let env = ConfigEnv {
        id: ID.into(),
        base_dir: ".".into(),
        max_document_bytes: 10 << 20,
        max_text_bytes: 10 << 20,
        parse_timeout: Duration::from_secs(30),
        parse_memory_bytes: 2 << 30,
    };
    let spec = docent_mediawiki_connector::Factory
        .configure(table, &env)
        .unwrap_or_else(|issues| panic!("config issues: {issues:?}"));
    spec.build().expect("build").connector
}

/// `username`/`password` of the script's bot password.
pub fn bot_login() -> String {
    format!("username = \"{BOT_USER}\"\npassword = \"{BOT_PASS}\"\n")
}

/// What the index holds, as the pipeline keeps it.
#[derive(Default)]
pub struct TestIndex {
    docs: Mutex<BTreeMap<DocKey, (IndexedDoc, Acl)>>,
    /// While set, what is sent is not applied (writes a rollback will discard).
    pub lose: AtomicBool,
    /// The pipeline's rollbacks, as the daemon's index reports them.
    pub rollbacks: AtomicU64,
}

impl TestIndex {
    pub fn apply(&self, change: &Change) {
        if self.lose.load(SeqCst) {
            return;
        }
        let mut docs = self.docs.lock().unwrap();
        match change {
            Change::Upsert(d) => {
                let entry = IndexedDoc {
                    version: d.version.clone(),
                    acl_fingerprint: d.acl.fingerprint(),
                };
                docs.insert(d.key.clone(), (entry, d.acl.clone()));
            }
            Change::Delete(k) | Change::Skipped { key: k, .. } => {
                docs.remove(k);
            }
            Change::Checkpoint { .. } | Change::Reconciled { .. } => {}
        }
    }

    /// Pretends the index holds page `native_id` (one the wiki may not have).
    pub fn insert(&self, native_id: &str, version: &str) {
        let acl = Acl::new([docent_connector_api::Principal::Everyone], []);
        self.docs.lock().unwrap().insert(
            DocKey::new(ID, native_id),
            (
                IndexedDoc {
                    version: version.into(),
                    acl_fingerprint: acl.fingerprint(),
                },
                acl,
            ),
        );
    }

    pub fn ids(&self) -> Vec<String> {
        self.native_ids(ID)
    }
}

impl IndexedState for TestIndex {
    fn rollbacks(&self) -> u64 {
        self.rollbacks.load(SeqCst)
    }

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

/// A running connector.
pub struct Running {
    rx: mpsc::Receiver<Change>,
    /// The rollback counts of the reconciliation notices received ([`Change::Reconciled`]),
    /// kept out of the changes the tests read.
    pub reconciled: Vec<u64>,
    pub commands: mpsc::Sender<ConnectorCommand>,
    pub status: StatusHandle,
    pub index: Arc<TestIndex>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), ConnectorError>>>,
}

impl Running {
    pub fn start(
        connector: Box<dyn Connector>,
        index: Arc<TestIndex>,
        checkpoint: Option<Checkpoint>,
    ) -> Self {
        Self::start_with_capacity(connector, index, checkpoint, 64)
    }

    /// `capacity`: the sink's bound (1 makes the connector wait on every change).
    pub fn start_with_capacity(
        connector: Box<dyn Connector>,
        index: Arc<TestIndex>,
        checkpoint: Option<Checkpoint>,
        capacity: usize,
    ) -> Self {
        let (ctx, h) = conformance::harness_context(index.clone(), checkpoint, capacity);
        let task = tokio::spawn(connector.run(ctx));
        Self {
            rx: h.changes,
            reconciled: Vec::new(),
            commands: h.commands,
            status: h.status,
            index,
            shutdown: h.shutdown,
            task: Some(task),
        }
    }

    /// The next change (applied to the index), or `None` when none comes within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Change> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let c = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .ok()??;
            if let Change::Reconciled { at, .. } = c {
                self.reconciled.push(at);
                continue;
            }
            self.index.apply(&c);
            return Some(c);
        }
    }

    /// Every change up to and including the next checkpoint (which is returned separately).
    pub async fn until_checkpoint(&mut self) -> (Vec<Change>, Checkpoint) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut changes = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await {
                Some(Change::Checkpoint { checkpoint, .. }) => return (changes, checkpoint),
                Some(c) => changes.push(c),
                None => panic!(
                    "no checkpoint within {PATIENCE:?}; got {changes:?}; status {:?}",
                    self.status.snapshot()
                ),
            }
        }
    }

    /// Waits until `ok` holds for the status (checked after every change and every 50 ms),
    /// collecting the changes that arrive meanwhile.
    pub async fn wait_status(
        &mut self,
        what: &str,
        ok: impl Fn(&docent_connector_api::ConnectorState) -> bool,
    ) -> Vec<Change> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut changes = Vec::new();
        loop {
            if ok(&self.status.snapshot()) {
                return changes;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not reached within {PATIENCE:?}; status {:?}",
                self.status.snapshot()
            );
            if let Some(c) = self.next_within(Duration::from_millis(50)).await {
                changes.push(c);
            }
        }
    }

    pub fn job(&self, id: u64) -> JobRecord {
        self.status
            .snapshot()
            .jobs
            .into_iter()
            .find(|j| j.id == id)
            .unwrap_or_else(|| panic!("no job {id}"))
    }

    /// Cancels the connector and checks that it stops within two seconds.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let task = self.task.take().unwrap();
        // Drain, as the pipeline does on shutdown.
        let drain = async { while self.rx.recv().await.is_some() {} };
        let r = tokio::time::timeout(Duration::from_secs(2), async {
            tokio::join!(task, drain).0
        })
        .await
        .expect("the connector stops within 2 s of cancellation");
        r.expect("no panic")
            .expect("the connector ends without error");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Crawls `wiki` once with `section` into a fresh index; returns the index and checkpoint.
pub async fn crawl(wiki: &Wiki, section: &str) -> (Arc<TestIndex>, Vec<Change>, Checkpoint) {
    let index = Arc::new(TestIndex::default());
    let mut run = Running::start(connector(wiki, section), index.clone(), None);
    let (changes, cp) = run.until_checkpoint().await;
    run.stop().await;
    (index, changes, cp)
}

pub fn upserted(changes: &[Change]) -> Vec<&docent_connector_api::SourceDocument> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::Upsert(d) => Some(d.as_ref()),
            _ => None,
        })
        .collect()
}

pub fn deleted(changes: &[Change]) -> Vec<String> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::Delete(k) => Some(k.native_id.clone()),
            _ => None,
        })
        .collect()
}
