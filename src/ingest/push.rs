//! The push connector: the daemon side of `docent.v1.Ingest`. Handlers validate documents and
//! put changes on a bounded queue; this connector forwards them to the pipeline like any
//! crawler, so pushed documents are parsed, embedded, committed and deleted by the same code.

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
}

impl PushSource {
    /// Queues a change; waits while the queue is full (backpressure to the client). `false`:
    /// the daemon is shutting down.
    pub async fn send(&self, c: Change) -> bool {
        self.queue.send(c).await.is_ok()
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
