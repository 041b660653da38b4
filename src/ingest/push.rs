//! The push connector: the daemon side of `docent.v1.Ingest`. Handlers validate documents and
//! put changes on a bounded queue; this connector forwards them to the pipeline like any
//! crawler, so pushed documents are parsed, embedded, committed and deleted by the same code.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use docent_connector_api::registry::{
    Built, ConfigEnv, ConfigIssue, ConnectorFactory, ConnectorSpec, Issues, parse_section,
};
use docent_connector_api::{
    BoxFuture, Change, Connector, ConnectorContext, ConnectorError, DocKey,
};
use tokio::sync::mpsc;

use crate::parse::ParseLimits;

/// A push source's settings (`type = "push"`).
#[derive(Debug, Clone)]
pub struct PushConfig {
    pub id: String,
    /// Changes that may wait for the pipeline before PutDocuments waits.
    pub queue_capacity: usize,
    /// Largest document accepted (bytes of content).
    pub max_document_bytes: u64,
    /// Largest PutDocuments request accepted (bytes, encoded).
    pub max_request_bytes: u64,
    /// Who may write to this source (besides holding the `ingest` permission).
    pub writers: Vec<docent_connector_api::Principal>,
    /// The principals a pushed document may allow; `None`: any.
    pub grantable: Option<std::collections::BTreeSet<docent_connector_api::Principal>>,
    /// Prefixes a pushed uri must start with; empty: any `http://` or `https://` uri.
    pub uri_prefixes: Vec<String>,
}

/// The handler side of one push source.
#[derive(Clone)]
pub struct PushSource {
    pub config: PushConfig,
    pub limits: ParseLimits,
    queue: mpsc::Sender<Change>,
    /// The content bytes the queue may hold, beside its count of changes.
    bytes: Arc<QueueBytes>,
    /// What was last accepted per key — an upsert of (version, ACL fingerprint) or a delete
    /// (`None`) — until the index shows the same, so "unchanged" and "not found" are judged
    /// against the newest state even while changes wait in the queue.
    sent: Arc<Mutex<Sent>>,
    /// Changes that calls with `wait_for_commit` wait on ([`PushSource::watch`]): what the
    /// pipeline fails, or a rollback loses, is flagged on them.
    waiting: Arc<Mutex<Waiting>>,
    /// The commit markers ([`PushSource::mark`]).
    marks: Arc<Marks>,
}

/// Commit markers: checkpoints of the push source, `{"epoch", "seq"}`, sent behind a call's
/// changes. The pipeline commits a checkpoint with every change sent before it, so once the
/// committed one reaches a marker, every change before that marker is committed or failed.
/// The epoch is this process's: a marker committed before a restart says nothing of now.
struct Marks {
    epoch: u64,
    next: std::sync::atomic::AtomicU64,
}

impl Marks {
    fn new() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self {
            epoch: now ^ (u64::from(std::process::id()) << 32),
            next: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

/// A watched change: its state (`None` for a delete) and its flag.
type Watched = (Option<(String, String)>, Arc<std::sync::atomic::AtomicBool>);

/// Watched changes by key.
#[derive(Default)]
struct Waiting(HashMap<String, Vec<Watched>>);

impl Waiting {
    /// Flags every watched change of `key` in `state`.
    fn fail(&mut self, key: &str, state: Option<&(String, String)>) {
        for (s, flag) in self.0.get(key).into_iter().flatten() {
            if s.as_ref() == state {
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

/// Changes a call waits on ([`PushSource::watch`]); no longer watched once dropped.
pub struct Watch {
    waiting: Arc<Mutex<Waiting>>,
    items: Vec<(String, Arc<std::sync::atomic::AtomicBool>)>,
}

impl Watch {
    /// Whether the pipeline failed item `i`, or a rollback lost it.
    pub fn failed(&self, i: usize) -> bool {
        self.items[i].1.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        for (key, flag) in &self.items {
            if let Some(v) = w.0.get_mut(key) {
                v.retain(|(_, f)| !Arc::ptr_eq(f, flag));
                if v.is_empty() {
                    w.0.remove(key);
                }
            }
        }
    }
}

/// What the queue's changes may hold in content bytes, all together: `queue_capacity` changes
/// of the largest size a source accepts would pin gigabytes while the pipeline is busy. A
/// change takes its bytes before its place in the queue and gives them back once the source's
/// sink took it (from there the daemon's byte budget, `crate::ingest::QueueBytes`, holds it).
struct QueueBytes {
    free: tokio::sync::Semaphore,
    budget: u32,
}

impl QueueBytes {
    fn new(config: &PushConfig) -> Self {
        // Two of the largest requests the source accepts.
        let budget = config
            .max_request_bytes
            .saturating_mul(2)
            .clamp(1, u64::from(u32::MAX)) as u32;
        Self {
            free: tokio::sync::Semaphore::new(budget as usize),
            budget,
        }
    }

    /// The bytes `c` holds, at most the whole budget (a larger change waits for an empty queue).
    fn cost(&self, c: &Change) -> u32 {
        match c {
            Change::Upsert(d) => u32::try_from(d.held_bytes())
                .unwrap_or(u32::MAX)
                .min(self.budget),
            _ => 0,
        }
    }

    /// Gives back `cost` bytes (see [`Self::cost`]), once the change is in the pipeline's queue.
    fn give_back(&self, cost: u32) {
        self.free.add_permits(cost as usize);
    }
}

#[derive(Default)]
struct Sent {
    last: HashMap<String, Last>,
    /// Size at which entries the index already shows are dropped.
    prune_at: usize,
}

/// What was last accepted of a key, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Last {
    /// An upsert: its version and ACL fingerprint.
    Put((String, String)),
    /// A delete.
    Deleted,
    /// An upsert the pipeline failed whose previous version goes too: "not there", but not
    /// a delete (a rollback that loses this upsert brings the previous version back).
    Failed((String, String)),
}

impl Last {
    /// The key's newest state, as [`PushSource::newest`] says.
    fn state(&self) -> Option<(String, String)> {
        match self {
            Self::Put(s) => Some(s.clone()),
            Self::Deleted | Self::Failed(_) => None,
        }
    }
}

/// Accepted changes remembered before the ones the index already shows are forgotten.
const ACCEPTED_PRUNE_AT: usize = 4096;

impl PushSource {
    /// Queues a change; waits while the queue is full (backpressure to the client). `false`:
    /// the daemon is shutting down.
    pub async fn send(&self, c: Change) -> bool {
        let Ok(held) = self.bytes.free.acquire_many(self.bytes.cost(&c)).await else {
            return false;
        };
        if self.queue.send(c).await.is_err() {
            return false;
        }
        held.forget();
        true
    }

    /// Whether `caller` may write to this source.
    pub fn writable_by(&self, principals: &std::collections::BTreeSet<String>) -> bool {
        self.config
            .writers
            .iter()
            .any(|w| principals.contains(&w.token()))
    }

    /// The newest state of `key` as (version, ACL fingerprint), `None` if it does not exist:
    /// what was last accepted, else what the index holds (uncommitted writes included).
    pub fn newest(&self, key: &str, index: &dyn crate::index::Backend) -> Option<(String, String)> {
        let sent = self.lock();
        self.newest_in(&sent, key, index)
    }

    fn newest_in(
        &self,
        sent: &Sent,
        key: &str,
        index: &dyn crate::index::Backend,
    ) -> Option<(String, String)> {
        if let Some(last) = sent.last.get(key) {
            return last.state();
        }
        index
            .latest_entry(&DocKey::new(&self.config.id, key).to_string())
            .map(|e| (e.version, e.acl_fingerprint))
    }

    /// Accepts a change of `key` (`state`: the upsert's version and ACL fingerprint, `None` for
    /// a delete): waits for a place in the queue (backpressure), then records and queues it
    /// with nothing between. A request cancelled while it waits leaves no trace: recorded
    /// first, a change never queued would answer the client's retry UNCHANGED or NOT_FOUND
    /// (found by a review: a narrowed ACL or a delete was lost that way). Under the record's
    /// lock, two requests for one key queue in the order they record. `Some(true)`: queued;
    /// `None`: the daemon is shutting down.
    pub async fn accept(
        &self,
        key: &str,
        state: Option<(String, String)>,
        change: Change,
        index: &dyn crate::index::Backend,
    ) -> Option<bool> {
        self.accept_unless(key, state, change, index, false).await
    }

    /// [`Self::accept`] for an upsert whose `state` was its key's newest when it was checked:
    /// compared again under the record's lock, it is queued only if it is a change now
    /// (`Some(true)`); `Some(false)`: unchanged, nothing queued or recorded.
    pub async fn accept_if_changed(
        &self,
        key: &str,
        state: (String, String),
        change: Change,
        index: &dyn crate::index::Backend,
    ) -> Option<bool> {
        self.accept_unless(key, Some(state), change, index, true)
            .await
    }

    async fn accept_unless(
        &self,
        key: &str,
        state: Option<(String, String)>,
        change: Change,
        index: &dyn crate::index::Backend,
        unless_unchanged: bool,
    ) -> Option<bool> {
        // Its bytes, then its place: waiting for either leaves nothing behind if cancelled.
        let held = self
            .bytes
            .free
            .acquire_many(self.bytes.cost(&change))
            .await
            .ok()?;
        let place = self.queue.reserve().await.ok()?;
        let mut sent = self.lock();
        // An index that cannot tell now (a remote backend whose document table is not loaded)
        // is not asked under the lock, on the runtime's thread: it would load its table over
        // the network (a review). The change is queued; an unchanged one is indexed again.
        if unless_unchanged
            && (sent.last.contains_key(key) || index.knows_every_document())
            && self.newest_in(&sent, key, index) == state
        {
            // The bytes and the place go back as they drop.
            return Some(false);
        }
        self.remember(&mut sent, key, state, index);
        place.send(change);
        held.forget();
        Some(true)
    }

    /// Records an accepted upsert (`Some`) or delete (`None`) of `key` (see [`Self::accept`],
    /// which also queues it).
    pub fn record(
        &self,
        key: &str,
        state: Option<(String, String)>,
        index: &dyn crate::index::Backend,
    ) {
        let mut sent = self.lock();
        self.remember(&mut sent, key, state, index);
    }

    fn remember(
        &self,
        sent: &mut Sent,
        key: &str,
        state: Option<(String, String)>,
        index: &dyn crate::index::Backend,
    ) {
        // (Not while the index cannot tell: each entry would load a remote backend's table.)
        if sent.last.len() >= sent.prune_at.max(ACCEPTED_PRUNE_AT) && index.knows_every_document() {
            let id = &self.config.id;
            sent.last.retain(|k, last| {
                let now = index
                    .latest_entry(&DocKey::new(id, k.as_str()).to_string())
                    .map(|e| (e.version, e.acl_fingerprint));
                now != last.state()
            });
            // Amortised: the next prune waits until the map has doubled.
            sent.prune_at = sent.last.len() * 2;
        }
        let last = match state {
            Some(s) => Last::Put(s),
            None => Last::Deleted,
        };
        sent.last.insert(key.to_string(), last);
    }

    /// From now on, a version the pipeline fails to index is forgotten as accepted, so that
    /// the client's retry of it is a change again, not UNCHANGED; and so is a change a rollback
    /// of accepted writes (a batch or commit that failed) lost, unless a newer one of its key
    /// was accepted since (found by a review: a narrowed ACL or a delete lost in a rollback
    /// answered the client's retry UNCHANGED or NOT_FOUND until a restart; forgetting every
    /// accepted change instead would forget those still queued).
    pub fn forget_failures_from(&self, skips: &crate::ingest::SkipLog) {
        let (all, id) = (self.sent.clone(), self.config.id.clone());
        let waiting = self.waiting.clone();
        skips.on_rollback(crate::ingest::RollbackHook(Arc::new(move |lost| {
            {
                let mut w = waiting.lock().unwrap_or_else(|e| e.into_inner());
                for (key, state) in lost.iter().filter(|(k, _)| k.connector == id) {
                    w.fail(&key.native_id, state.as_ref());
                }
            }
            let mut sent = all.lock().unwrap_or_else(|e| e.into_inner());
            for (key, state) in lost.iter().filter(|(k, _)| k.connector == id) {
                let same = match (sent.last.get(&key.native_id), state) {
                    (Some(Last::Put(accepted)), Some(lost)) => accepted == lost,
                    // An upsert lost whose failure had been recorded as "not there" (the
                    // delete of its previous version went with it).
                    (Some(Last::Failed(failed)), Some(lost)) => failed == lost,
                    // The delete lost. (A delete accepted after a lost upsert may still be
                    // queued: session 34's review found it forgotten, so the client's re-put
                    // of the indexed version answered UNCHANGED before the delete removed it.)
                    (Some(Last::Deleted), None) => true,
                    _ => false,
                };
                if same {
                    sent.last.remove(&key.native_id);
                }
            }
        })));
        let sent = self.sent.clone();
        let waiting = self.waiting.clone();
        // Only the very state that failed: another change of the same version (a narrower
        // ACL) accepted since may still be queued (session 34's review: forgetting it made the
        // client's delete NOT_FOUND, and the queued upsert was then indexed).
        let hook = move |key: &str,
                         version: &str,
                         acl: &str,
                         kept_previous: bool,
                         retrying: bool| {
            waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .fail(key, Some(&(version.to_string(), acl.to_string())));
            // While the pipeline retries it, it is still on its way: a call waiting on it is told
            // (above), and what was accepted stays, so that a delete or a revert sent meanwhile is
            // judged against it (a review: forgotten at once, a delete answered NOT_FOUND and the
            // retry then indexed the document). The source's markers wait for the retry.
            if retrying {
                return;
            }
            let mut sent = sent.lock().unwrap_or_else(|e| e.into_inner());
            if matches!(sent.last.get(key), Some(Last::Put((v, fp))) if v == version && fp == acl) {
                if kept_previous {
                    // The index shows the newest state again.
                    sent.last.remove(key);
                } else {
                    // Its delete is on the way: "not there", not the version still indexed.
                    let failed = Last::Failed((version.to_string(), acl.to_string()));
                    sent.last.insert(key.to_string(), failed);
                }
            }
        };
        skips.on_failed_upsert(&self.config.id, crate::ingest::FailureHook(Arc::new(hook)));
    }

    /// Watches changes of `items` (key, and the upsert's version and ACL fingerprint or `None`
    /// for a delete) from now on: register before queueing them, so that no failure comes
    /// before the watch.
    pub fn watch(&self, items: &[(String, Option<(String, String)>)]) -> Watch {
        let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let items = items
            .iter()
            .map(|(key, state)| {
                let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
                w.0.entry(key.clone())
                    .or_default()
                    .push((state.clone(), flag.clone()));
                (key.clone(), flag)
            })
            .collect();
        Watch {
            waiting: self.waiting.clone(),
            items,
        }
    }

    /// Queues a commit marker behind everything queued so far (see [`Marks`]); its number, or
    /// `None` when the daemon is shutting down.
    pub async fn mark(&self) -> Option<u64> {
        let seq = self
            .marks
            .next
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let checkpoint = serde_json::json!({ "epoch": self.marks.epoch, "seq": seq });
        self.send(Change::Checkpoint {
            connector: self.config.id.clone(),
            checkpoint,
        })
        .await
        .then_some(seq)
    }

    /// The newest marker of this process that is committed (0: none).
    pub fn committed_mark(&self, index: &dyn crate::index::Backend) -> u64 {
        index
            .checkpoint_of(&self.config.id)
            .filter(|c| c["epoch"].as_u64() == Some(self.marks.epoch))
            .and_then(|c| c["seq"].as_u64())
            .unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sent> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct PushConnector {
    id: String,
    rx: mpsc::Receiver<Change>,
    bytes: Arc<QueueBytes>,
}

/// A push source and its connector.
pub fn push_connector(config: PushConfig, limits: ParseLimits) -> (PushSource, PushConnector) {
    let (tx, rx) = mpsc::channel(config.queue_capacity);
    let id = config.id.clone();
    let bytes = Arc::new(QueueBytes::new(&config));
    (
        PushSource {
            config,
            limits,
            queue: tx,
            bytes: bytes.clone(),
            sent: Arc::default(),
            waiting: Arc::default(),
            marks: Arc::new(Marks::new()),
        },
        PushConnector { id, rx, bytes },
    )
}

impl Connector for PushConnector {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> &'static str {
        "push"
    }

    fn run(
        self: Box<Self>,
        ctx: ConnectorContext,
    ) -> BoxFuture<'static, Result<(), ConnectorError>> {
        Box::pin(async move {
            let PushConnector { id, mut rx, bytes } = *self;
            ctx.status.set_phase("ready");
            loop {
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => break,
                    c = rx.recv() => {
                        let Some(c) = c else { break };
                        // The content counts against the source's budget until the sink took it
                        // (then the daemon's `index.queue_bytes` bounds it: given back before, a
                        // writer could queue up to its capacity of the largest documents).
                        let cost = bytes.cost(&c);
                        if ctx.sink.send(c).await.is_err() {
                            return Err(ConnectorError::SinkClosed { connector: id });
                        }
                        bytes.give_back(cost);
                    }
                }
            }
            // What was accepted (answered ACCEPTED) reaches the pipeline, which drains and
            // commits at shutdown: a push has no checkpoint a client could resume from. New
            // pushes are refused from now on.
            rx.close();
            while let Some(c) = rx.recv().await {
                let cost = bytes.cost(&c);
                if ctx.sink.send(c).await.is_err() {
                    return Err(ConnectorError::SinkClosed { connector: id });
                }
                bytes.give_back(cost);
            }
            ctx.status.set_phase("stopped");
            Ok(())
        })
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPush {
    /// How many changes may wait for the pipeline.
    #[serde(default = "default_queue")]
    queue_capacity: usize,
    /// The principals (`user:<id>`, `group:<g>`) that may write to and delete from this source;
    /// required (the `ingest` permission alone names no source).
    #[serde(default)]
    writers: Vec<String>,
    /// The principals a pushed document may allow; empty: any.
    #[serde(default)]
    grantable: Vec<String>,
    /// Prefixes a pushed document's uri must start with; empty: any http(s) uri.
    #[serde(default)]
    uri_prefixes: Vec<String>,
    /// The largest PutDocuments request (bytes); default: max_file_size_bytes plus 1 MiB.
    #[serde(default)]
    max_request_bytes: Option<u64>,
}

fn default_queue() -> usize {
    256
}

/// Registers `type = "push"`: a source whose documents arrive through `docent.v1.Ingest`. The
/// built connector's handle is the [`PushSource`] the Ingest handlers write to.
pub struct Factory;

#[derive(Debug)]
struct Spec {
    config: PushConfig,
    limits: ParseLimits,
}

impl ConnectorSpec for Spec {
    fn kind(&self) -> &'static str {
        "push"
    }

    fn build(&self) -> Result<Built, String> {
        let (source, conn) = push_connector(self.config.clone(), self.limits);
        Ok(Built {
            connector: Box::new(conn),
            handle: Some(Arc::new(source)),
        })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        &self.config
    }
}

impl ConnectorFactory for Factory {
    fn kind(&self) -> &'static str {
        "push"
    }

    fn configure(
        &self,
        table: toml::Table,
        env: &ConfigEnv,
    ) -> Result<Arc<dyn ConnectorSpec>, Vec<ConfigIssue>> {
        let c: RawPush = parse_section(table)?;
        let mut is = Issues::default();
        let writers = is.principals("writers", &c.writers);
        if c.writers.is_empty() {
            is.add(
                "writers",
                "a push source needs writers: the principals (user:<id>, group:<g>) that may push to it",
            );
        }
        let grantable = (!c.grantable.is_empty())
            .then(|| is.principals("grantable", &c.grantable))
            .map(|v| v.into_iter().collect());
        for (j, u) in c.uri_prefixes.iter().enumerate() {
            let host_and_path = u
                .strip_prefix("https://")
                .or_else(|| u.strip_prefix("http://"))
                .unwrap_or("");
            // Ends at a path boundary, so "https://crm.example.com" cannot admit
            // "https://crm.example.com.evil.example/".
            if host_and_path.split('/').next().unwrap_or("").is_empty() || !u.ends_with('/') {
                is.add(
                    format!("uri_prefixes[{j}]"),
                    "must be an http(s) prefix naming a host and ending with '/', e.g. \"https://crm.example.com/\"",
                );
            }
        }
        let max_request_bytes = match c.max_request_bytes {
            Some(n) => is.range("max_request_bytes", n, 64 * 1024, 1 << 30),
            None => (env.max_document_bytes + (1 << 20)).min(1 << 30),
        };
        let config = PushConfig {
            id: env.id.clone(),
            queue_capacity: is.range("queue_capacity", c.queue_capacity, 1, 1_000_000),
            max_document_bytes: env.max_document_bytes,
            max_request_bytes,
            writers,
            grantable,
            uri_prefixes: c.uri_prefixes,
        };
        let limits = ParseLimits {
            max_text_bytes: env.max_text_bytes as usize,
            timeout: env.parse_timeout,
            worker_memory: env.parse_memory_bytes,
        };
        is.finish(Arc::new(Spec { config, limits }) as Arc<dyn ConnectorSpec>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use docent_connector_api::conformance::check_cancellation;
    use docent_connector_api::{Acl, Principal, SourceDocument, StatusHandle};

    fn spec(table: &str) -> Result<Arc<dyn ConnectorSpec>, Vec<ConfigIssue>> {
        let env = ConfigEnv {
            id: "crm".into(),
            base_dir: std::path::PathBuf::from("/"),
            max_document_bytes: 1 << 20,
            max_text_bytes: 1 << 20,
            parse_timeout: std::time::Duration::from_secs(5),
            parse_memory_bytes: 2 << 30,
        };
        Factory.configure(toml::from_str(table).unwrap(), &env)
    }

    fn doc(key: &str, allow: &str) -> Change {
        Change::Upsert(Box::new(SourceDocument {
            key: DocKey::new("crm", key),
            uri: format!("https://crm.example/{key}"),
            title: None,
            mime: Some("text/plain".into()),
            name_hint: key.into(),
            content: b"text".to_vec(),
            version: "1".into(),
            modified_at: None,
            attributes: Default::default(),
            acl: Acl {
                allow: [allow.parse::<Principal>().unwrap()].into(),
                deny: Default::default(),
            },
            job: None,
            reparse: false,
        }))
    }

    #[test]
    fn the_section_is_validated_with_every_problem_named() {
        let e = spec("writers = []\nuri_prefixes = [\"ftp://x\"]\nbogus = 1").unwrap_err();
        assert!(e[0].message.contains("bogus"), "{e:?}");
        let e = spec("writers = []\nuri_prefixes = [\"https://crm.example\"]").unwrap_err();
        let paths: Vec<&str> = e.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, ["writers", "uri_prefixes[0]"]);
        assert!(spec("writers = [\"user:crm-bot\"]").is_ok());
    }

    /// A push source for `user:crm-bot` and its connector.
    fn built() -> (Arc<PushSource>, Box<dyn docent_connector_api::Connector>) {
        built_with("")
    }

    /// [`built`] with more keys (`extra`: TOML lines).
    fn built_with(extra: &str) -> (Arc<PushSource>, Box<dyn docent_connector_api::Connector>) {
        let built = spec(&format!("writers = [\"user:crm-bot\"]\n{extra}"))
            .unwrap()
            .build()
            .unwrap();
        let source = built
            .handle
            .unwrap()
            .downcast::<PushSource>()
            .expect("the handle is the push source");
        (source, built.connector)
    }

    /// A context whose changes go to `sink`, stopped by `shutdown`; no admin commands come.
    fn context(
        sink: mpsc::Sender<Change>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> ConnectorContext {
        ConnectorContext {
            commands: mpsc::channel(1).1,
            sink,
            memberships: Arc::new(docent_connector_api::NoMemberships),
            indexed: Arc::new(docent_connector_api::conformance::MemoryIndex::default()),
            checkpoint: None,
            shutdown,
            status: StatusHandle::default(),
        }
    }

    /// What the conformance suite asks of a connector that does not crawl: it forwards
    /// upserts, ACL changes and deletes in order, and stops promptly when cancelled.
    #[tokio::test]
    async fn forwards_changes_in_order_and_stops_when_cancelled() {
        let (source, connector) = built();
        let (tx, mut rx) = mpsc::channel(8);
        let shutdown = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(connector.run(context(tx, shutdown.clone())));
        assert!(source.send(doc("a", "group:staff")).await);
        assert!(source.send(doc("a", "group:hr")).await);
        assert!(source.send(Change::Delete(DocKey::new("crm", "a"))).await);
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(rx.recv().await.unwrap());
        }
        assert!(
            matches!(&got[0], Change::Upsert(d) if d.acl.allow.iter().any(|p| p.token() == "group:staff"))
        );
        assert!(
            matches!(&got[1], Change::Upsert(d) if d.acl.allow.iter().any(|p| p.token() == "group:hr"))
        );
        assert!(matches!(&got[2], Change::Delete(k) if k.native_id == "a"));
        shutdown.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(2), task)
            .await
            .expect("stops within 2 s")
            .unwrap()
            .unwrap();
        let again = spec("writers = [\"user:crm-bot\"]")
            .unwrap()
            .build()
            .unwrap();
        check_cancellation(again.connector).await.unwrap();
    }

    /// A request cancelled while it waits for a place in a full queue leaves nothing behind:
    /// its retry is a change again (recorded before it was queued, a narrowed ACL or a delete
    /// was answered UNCHANGED or NOT_FOUND on the retry, and lost).
    #[tokio::test]
    async fn a_change_cancelled_while_the_queue_is_full_is_not_remembered() {
        // The connector (the queue's receiver) lives, and takes nothing.
        let (source, _connector) = built_with("queue_capacity = 1");
        let dir = tempfile::tempdir().unwrap();
        let index = crate::index::Index::open(dir.path(), "m", 4).unwrap();
        assert!(
            source.send(doc("a", "group:staff")).await,
            "fills the queue"
        );
        let waited = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            source.accept(
                "b",
                Some(("1".into(), "fp".into())),
                doc("b", "group:hr"),
                &index,
            ),
        )
        .await;
        assert!(waited.is_err(), "the queue was full");
        assert_eq!(source.newest("b", &index), None, "nothing remembered");
        // A delete of a key known as accepted: cancelled, the key stays known (its retry is a
        // delete again, not NOT_FOUND).
        let known = Some(("1".to_string(), "fp".to_string()));
        source.record("c", known.clone(), &index);
        let waited = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            source.accept("c", None, Change::Delete(DocKey::new("crm", "c")), &index),
        )
        .await;
        assert!(waited.is_err(), "the queue was full");
        assert_eq!(
            source.newest("c", &index),
            known,
            "the delete left no trace"
        );
    }

    /// The queue holds at most two requests' worth of content bytes, whatever its count: a
    /// change past that waits (backpressure) until the connector takes one off.
    #[tokio::test]
    async fn the_queue_holds_at_most_its_bytes() {
        let (source, connector) = built_with("max_request_bytes = 65536");
        let big = |key: &str| {
            let Change::Upsert(mut d) = doc(key, "group:staff") else {
                unreachable!()
            };
            d.content = vec![b'x'; 60_000];
            Change::Upsert(d)
        };
        assert!(source.send(big("a")).await);
        assert!(source.send(big("b")).await);
        // 120,000 of 131,072 bytes held: a third waits, though the queue has places left.
        let third =
            tokio::time::timeout(std::time::Duration::from_millis(50), source.send(big("c")));
        assert!(third.await.is_err(), "queued past its bytes");
        // The connector takes them off: the bytes come back.
        let (tx, mut rx) = mpsc::channel(8);
        let shutdown = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(connector.run(context(tx, shutdown.clone())));
        assert!(source.send(big("c")).await);
        for _ in 0..3 {
            rx.recv().await.unwrap();
        }
        shutdown.cancel();
        task.await.unwrap().unwrap();
    }

    /// Changes accepted before the shutdown still reach the pipeline (found by a review: the
    /// queue was dropped, and with it changes the client had been told were accepted).
    #[tokio::test]
    async fn changes_accepted_before_a_shutdown_reach_the_pipeline() {
        let (source, connector) = built();
        for n in ["a", "b", "c"] {
            assert!(source.send(doc(n, "group:staff")).await);
        }
        let (tx, mut rx) = mpsc::channel(8);
        let shutdown = tokio_util::sync::CancellationToken::new();
        shutdown.cancel();
        connector.run(context(tx, shutdown)).await.unwrap();
        let mut got = Vec::new();
        while let Ok(c) = rx.try_recv() {
            got.push(c);
        }
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(
            !source.send(doc("d", "group:staff")).await,
            "refused after the stop"
        );
    }

    /// A version accepted but then failed by the pipeline is forgotten as accepted: the
    /// client's retry of it is a change, not UNCHANGED (before, it stayed unindexed until a
    /// restart). A version the pipeline indexes stays remembered.
    /// An index and a pipeline (committed by hand) whose failures and rollbacks `source` hears.
    fn pipeline_for(
        source: &PushSource,
    ) -> (
        tempfile::TempDir,
        Arc<crate::index::Index>,
        crate::ingest::Pipeline,
    ) {
        use crate::embed::Embedder;
        use crate::embed::test_embedder::BagOfWords;
        let dir = tempfile::tempdir().unwrap();
        let embedder: Arc<dyn Embedder> = Arc::new(BagOfWords);
        let index = Arc::new(
            crate::index::Index::open(dir.path(), embedder.model_id(), embedder.dim()).unwrap(),
        );
        let skips = Arc::new(crate::ingest::SkipLog::default());
        source.forget_failures_from(&skips);
        let pipeline = crate::ingest::Pipeline::new(
            index.clone(),
            embedder,
            crate::ingest::PipelineConfig {
                chunking: crate::chunk::ChunkerConfig {
                    max_tokens: 64,
                    overlap_tokens: 8,
                },
                commit_interval: std::time::Duration::from_secs(3600),
                max_batch: 64,
                limits: HashMap::new(),
                retry: Default::default(),
            },
            Arc::default(),
            skips,
        );
        (dir, index, pipeline)
    }

    #[test]
    fn a_version_the_pipeline_fails_is_not_remembered_as_accepted() {
        let (source, _) = built();
        let (_dir, index, pipeline) = pipeline_for(&source);
        let accepted = |key: &str, content: &[u8]| {
            let Change::Upsert(mut d) = doc(key, "group:staff") else {
                unreachable!()
            };
            d.content = content.to_vec();
            source.record(key, Some((d.version.clone(), d.acl.fingerprint())), &*index);
            pipeline.process(vec![Change::Upsert(d)]).unwrap();
        };
        // Parses here, not in the pipeline (a NUL byte: binary content).
        accepted("bad", b"text\0more");
        accepted("good", b"plain text about kestrels");
        assert_eq!(source.newest("bad", &*index), None);
        assert_eq!(
            source.newest("good", &*index).map(|(v, _)| v),
            Some("1".to_string())
        );
    }

    /// `wait_for_commit` (session 37's reviews: ACCEPTED came before the commit, so a crash in
    /// between lost what the client was told was accepted; and a first version took "the
    /// committed index shows the same state" for "committed", which an older commit can
    /// show): a marker queued behind the changes is committed only with them, and what the
    /// pipeline fails is flagged on the watch.
    #[tokio::test]
    async fn a_marker_commits_with_the_changes_before_it_and_failures_are_flagged() {
        let (source, connector) = built();
        let (tx, mut rx) = mpsc::channel(64);
        let shutdown = tokio_util::sync::CancellationToken::new();
        let run = tokio::spawn(connector.run(context(tx, shutdown.clone())));
        let (_dir, index, pipeline) = pipeline_for(&source);
        let change = |key: &str, content: &[u8]| {
            let Change::Upsert(mut d) = doc(key, "group:staff") else {
                unreachable!()
            };
            d.content = content.to_vec();
            let state = (d.version.clone(), d.acl.fingerprint());
            (state, Change::Upsert(d))
        };
        let (good, good_change) = change("good", b"plain text about kestrels");
        // Parses here, not in the pipeline (a NUL byte: binary content).
        let (bad, bad_change) = change("bad", b"text\0more");
        let watch = source.watch(&[
            ("good".to_string(), Some(good.clone())),
            ("bad".to_string(), Some(bad.clone())),
        ]);
        for (key, state, c) in [("good", good, good_change), ("bad", bad, bad_change)] {
            assert_eq!(
                source.accept(key, Some(state), c, &*index).await,
                Some(true)
            );
        }
        let mark = source.mark().await.unwrap();
        assert_eq!(source.committed_mark(&*index), 0);
        let mut batch = Vec::new();
        while batch.len() < 3 {
            batch.push(rx.recv().await.unwrap());
        }
        let cps = pipeline.process(batch).unwrap();
        assert!(watch.failed(1), "the bad one is flagged");
        assert!(!watch.failed(0));
        assert!(
            source.committed_mark(&*index) < mark,
            "written, not committed"
        );
        index.commit(cps).unwrap();
        assert!(source.committed_mark(&*index) >= mark);
        assert!(index.doc_entry("crm:good").is_some());
        // Another process's marker (an earlier run's) says nothing of this one's.
        index
            .commit(std::collections::BTreeMap::from([(
                "crm".to_string(),
                serde_json::json!({ "epoch": 1, "seq": 999 }),
            )]))
            .unwrap();
        assert_eq!(source.committed_mark(&*index), 0);
        shutdown.cancel();
        run.await.unwrap().unwrap();
    }

    /// Session 34's review: the failure of one ACL of a version forgot another ACL of that
    /// version accepted since and still queued, so the client's delete answered NOT_FOUND and
    /// the queued upsert was indexed after it.
    #[test]
    fn a_failure_forgets_only_the_state_that_failed() {
        use crate::index::suite::DIM;
        let (source, _) = built();
        let dir = tempfile::tempdir().unwrap();
        let index = crate::index::Index::open(dir.path(), "push-model", DIM).unwrap();
        let skips = Arc::new(crate::ingest::SkipLog::default());
        source.forget_failures_from(&skips);
        let key = DocKey::new("crm", "k");
        let state = |fp: &str| Some(("1".to_string(), fp.to_string()));
        source.record("k", state("hr"), &index);
        source.record("k", state("hr+legal"), &index);
        skips.failed(&key, "1", "hr", false, false);
        assert_eq!(source.newest("k", &index), state("hr+legal"));
        // The state that is the newest failing: "not there" (its delete is on the way).
        skips.failed(&key, "1", "hr+legal", false, false);
        assert_eq!(source.newest("k", &index), None);
    }

    /// What was accepted and then lost in a rollback is not remembered as accepted: the
    /// client's retry of an upsert or a delete is a change again, judged against the index.
    #[test]
    fn what_a_rollback_lost_is_not_remembered_as_accepted() {
        use crate::index::suite::{DIM, doc};
        let (source, _) = built();
        let dir = tempfile::tempdir().unwrap();
        let index = crate::index::Index::open(dir.path(), "push-model", DIM).unwrap();
        // "d0" is indexed (version 1); its delete and a new version of "narrowed" are accepted.
        index.upsert(doc("crm", 0, 1, &["everyone"], &[])).unwrap();
        index.commit(std::collections::BTreeMap::new()).unwrap();
        let skips = Arc::new(crate::ingest::SkipLog::default());
        source.forget_failures_from(&skips);
        source.record("narrowed", Some(("2".into(), "hr-only".into())), &index);
        source.record("d0", None, &index);
        assert_eq!(
            source.newest("narrowed", &index),
            Some(("2".into(), "hr-only".into()))
        );
        assert_eq!(source.newest("d0", &index), None);
        // Lost: the new version of "narrowed" and the delete of "d0"; not "queued" (the same
        // version under another ACL was accepted since, and is still in the queue).
        source.record("queued", Some(("2".into(), "hr-only".into())), &index);
        let key = |k: &str| DocKey::new("crm", k);
        skips.rolled_back(&[
            (key("narrowed"), Some(("2".into(), "hr-only".into()))),
            (key("d0"), None),
            (key("queued"), Some(("2".into(), "everyone".into()))),
        ]);
        assert_eq!(
            source.newest("queued", &index).map(|(v, _)| v),
            Some("2".to_string())
        );
        assert_eq!(source.newest("narrowed", &index), None);
        assert_eq!(
            source.newest("d0", &index).map(|(v, _)| v),
            Some("1".to_string())
        );
        // A delete accepted after an upsert that a rollback lost may still be queued: it
        // stays remembered (the client's re-put of the indexed version is a change).
        source.record("later", Some(("5".into(), "everyone".into())), &index);
        source.record("later", None, &index);
        skips.rolled_back(&[(key("later"), Some(("5".into(), "everyone".into())))]);
        assert_eq!(source.newest("later", &index), None);
        assert!(
            source.lock().last.contains_key("later"),
            "the delete was forgotten"
        );
        // Accepted after the rollback: remembered again.
        source.record("narrowed", Some(("3".into(), "hr-only".into())), &index);
        assert_eq!(
            source.newest("narrowed", &index).map(|(v, _)| v),
            Some("3".to_string())
        );
    }
}
