//! The push connector: the daemon side of `docent.v1.Ingest`. Handlers validate documents and
//! put changes on a bounded queue; this connector forwards them to the pipeline like any
//! crawler, so pushed documents are parsed, embedded, committed and deleted by the same code.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use docent_connector_api::{
    BoxFuture, Change, Connector, ConnectorContext, ConnectorError, DocKey,
};
use tokio::sync::mpsc;

use crate::config::PushConfig;
use crate::parse::ParseLimits;

/// The handler side of one push source.
#[derive(Clone)]
pub struct PushSource {
    pub config: PushConfig,
    pub limits: ParseLimits,
    queue: mpsc::Sender<Change>,
    /// What was last accepted per key — an upsert of (version, ACL fingerprint) or a delete
    /// (`None`) — until the index shows the same, so "unchanged" and "not found" are judged
    /// against the newest state even while changes wait in the queue.
    sent: Arc<Mutex<Sent>>,
}

#[derive(Default)]
struct Sent {
    last: HashMap<String, Option<(String, String)>>,
    /// Size at which entries the index already shows are dropped.
    prune_at: usize,
}

/// Accepted changes remembered before the ones the index already shows are forgotten.
const ACCEPTED_PRUNE_AT: usize = 4096;

impl PushSource {
    /// Queues a change; waits while the queue is full (backpressure to the client). `false`:
    /// the daemon is shutting down.
    pub async fn send(&self, c: Change) -> bool {
        self.queue.send(c).await.is_ok()
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
    pub fn newest(&self, key: &str, index: &crate::index::Index) -> Option<(String, String)> {
        if let Some(last) = self.lock().last.get(key) {
            return last.clone();
        }
        index
            .latest_entry(&DocKey::new(&self.config.id, key).to_string())
            .map(|e| (e.version, e.acl_fingerprint))
    }

    /// Records an accepted upsert (`Some`) or delete (`None`) of `key`, before it is queued.
    pub fn record(&self, key: &str, state: Option<(String, String)>, index: &crate::index::Index) {
        let mut sent = self.lock();
        if sent.last.len() >= sent.prune_at.max(ACCEPTED_PRUNE_AT) {
            let id = &self.config.id;
            sent.last.retain(|k, last| {
                let now = index
                    .latest_entry(&DocKey::new(id, k.as_str()).to_string())
                    .map(|e| (e.version, e.acl_fingerprint));
                now != *last
            });
            // Amortised: the next prune waits until the map has doubled.
            sent.prune_at = sent.last.len() * 2;
        }
        sent.last.insert(key.to_string(), state);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sent> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct PushConnector {
    id: String,
    rx: mpsc::Receiver<Change>,
}

/// A push source and its connector.
pub fn push_connector(config: PushConfig, limits: ParseLimits) -> (PushSource, PushConnector) {
    let (tx, rx) = mpsc::channel(config.queue_capacity);
    let id = config.id.clone();
    (
        PushSource {
            config,
            limits,
            queue: tx,
            sent: Arc::default(),
        },
        PushConnector { id, rx },
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
            let PushConnector { id, mut rx } = *self;
            ctx.status.set_phase("ready");
            loop {
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => break,
                    c = rx.recv() => {
                        let Some(c) = c else { break };
                        if ctx.sink.send(c).await.is_err() {
                            return Err(ConnectorError::SinkClosed { connector: id });
                        }
                    }
                }
            }
            ctx.status.set_phase("stopped");
            Ok(())
        })
    }
}
