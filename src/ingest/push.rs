//! The push connector: the daemon side of `docent.v1.Ingest`. Handlers validate documents and
//! put changes on a bounded queue; this connector forwards them to the pipeline like any
//! crawler, so pushed documents are parsed, embedded, committed and deleted by the same code.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use docent_connector_api::{BoxFuture, Change, Connector, ConnectorContext, ConnectorError};
use tokio::sync::mpsc;

use crate::config::PushConfig;
use crate::parse::ParseLimits;

/// The handler side of one push source.
#[derive(Clone)]
pub struct PushSource {
    pub config: PushConfig,
    pub limits: ParseLimits,
    queue: mpsc::Sender<Change>,
    /// Keys accepted whose upsert the index may not show yet (queued, or written and not
    /// committed), so a delete that follows at once finds them.
    accepted: Arc<Mutex<HashSet<String>>>,
}

/// Accepted keys remembered before the ones the index already shows are forgotten.
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

    /// Remembers an accepted key (before it is queued); forgets keys the index now shows.
    pub fn remember(&self, key: &str, index: &crate::index::Index) {
        let mut a = self.accepted.lock().unwrap_or_else(|e| e.into_inner());
        if a.len() >= ACCEPTED_PRUNE_AT {
            a.retain(|k| {
                index
                    .latest_entry(
                        &docent_connector_api::DocKey::new(&self.config.id, k).to_string(),
                    )
                    .is_none()
            });
        }
        a.insert(key.to_string());
    }

    /// Forgets an accepted key; whether it was remembered.
    pub fn forget(&self, key: &str) -> bool {
        self.accepted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key)
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
            accepted: Arc::default(),
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
