//! A bound on the content bytes between the connectors and the index.
//!
//! The pipeline's channel holds `index.queue_capacity` changes, each up to a connector's
//! `max_file_size_bytes` (50 MB by default): a first crawl of large files could pin gigabytes
//! while the model works. Each connector's sink is therefore a channel of one change, emptied
//! by a forwarder that takes the change's content bytes from [`QueueBytes`] before it passes
//! the change on; the pipeline gives them back once the batch holding the change is written.
//! Connectors keep their plain `mpsc::Sender<Change>`, and each one's changes keep their order.
//! Outside the budget: per connector, the change in its sink's slot and the one its forwarder
//! holds while it waits for bytes (two of that connector's largest files at most).

use docent_connector_api::Change;
use tokio::sync::{Semaphore, mpsc};

/// The content bytes that changes waiting for the pipeline, and the batch it works on, may hold
/// all together (`index.queue_bytes`).
pub struct QueueBytes {
    free: Semaphore,
    budget: u32,
}

impl QueueBytes {
    pub fn new(budget: u32) -> Self {
        let budget = budget.max(1);
        Self {
            free: Semaphore::new(budget as usize),
            budget,
        }
    }

    /// The bytes `c` holds, at most the whole budget (a larger change waits until nothing else
    /// is held).
    pub fn cost(&self, c: &Change) -> u32 {
        match c {
            Change::Upsert(d) => u32::try_from(d.held_bytes())
                .unwrap_or(u32::MAX)
                .min(self.budget),
            _ => 0,
        }
    }

    /// The pipeline stopped: forwarders waiting for bytes give up, so their connectors' sends
    /// fail (`SinkClosed`) instead of waiting for bytes no one will give back.
    pub fn close(&self) {
        self.free.close();
    }

    /// The bytes free now.
    pub fn available(&self) -> usize {
        self.free.available_permits()
    }

    /// Gives back what `changes` took.
    pub fn release<'a>(&self, changes: impl IntoIterator<Item = &'a Change>) {
        self.give_back(changes.into_iter().map(|c| u64::from(self.cost(c))).sum());
    }

    /// Gives back `n` bytes taken (the pipeline is done with the batch that held them).
    pub fn give_back(&self, n: u64) {
        if n > 0 {
            self.free
                .add_permits(usize::try_from(n).unwrap_or(usize::MAX));
        }
    }

    /// A sink for one connector: changes sent to it reach `pipeline` in order, each once its
    /// bytes are free. The forwarder ends when every sender of the sink is dropped (or the
    /// pipeline is gone), dropping its own sender of `pipeline`.
    pub fn sink(
        self: &std::sync::Arc<Self>,
        pipeline: mpsc::Sender<Change>,
    ) -> mpsc::Sender<Change> {
        let (tx, mut rx) = mpsc::channel::<Change>(1);
        let budget = self.clone();
        tokio::spawn(async move {
            while let Some(change) = rx.recv().await {
                let cost = budget.cost(&change);
                if cost > 0 {
                    // Closed: the pipeline is gone (see `close`).
                    let Ok(held) = budget.free.acquire_many(cost).await else {
                        return;
                    };
                    // Given back by `release` once the pipeline wrote the change.
                    held.forget();
                }
                if let Err(mpsc::error::SendError(change)) = pipeline.send(change).await {
                    budget.release([&change]);
                    return;
                }
            }
        });
        tx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use docent_connector_api::{Acl, DocKey, Principal, SourceDocument};
    use std::sync::Arc;
    use std::time::Duration;

    /// A change that holds `bytes` in all (its content, and the fields stored with it).
    fn upsert(id: &str, bytes: usize) -> Change {
        let mut d = SourceDocument {
            key: DocKey::new("c", id),
            uri: format!("file:///{id}"),
            title: None,
            mime: None,
            name_hint: format!("{id}.txt"),
            content: Vec::new(),
            version: "1".into(),
            modified_at: None,
            attributes: Default::default(),
            acl: Acl::new([Principal::Everyone], []),
            job: None,
            reparse: false,
        };
        let fields = d.held_bytes();
        d.content = vec![b'x'; bytes.saturating_sub(fields)];
        assert_eq!(d.held_bytes(), bytes.max(fields));
        Change::Upsert(Box::new(d))
    }

    /// The next change the pipeline's side receives (within 10 s).
    async fn next(pipeline: &mut mpsc::Receiver<Change>) -> Change {
        tokio::time::timeout(Duration::from_secs(10), pipeline.recv())
            .await
            .expect("a change within 10 s")
            .expect("the forwarder is running")
    }

    fn id(c: &Change) -> &str {
        match c {
            Change::Upsert(d) => &d.key.native_id,
            _ => "",
        }
    }

    #[tokio::test]
    async fn a_change_waits_until_the_pipeline_gives_its_bytes_back() {
        let budget = Arc::new(QueueBytes::new(1000));
        let (to_pipeline, mut pipeline) = mpsc::channel(64);
        let sink = budget.sink(to_pipeline);
        sink.send(upsert("a", 600)).await.unwrap();
        let a = next(&mut pipeline).await;
        assert_eq!((id(&a), budget.available()), ("a", 400));
        // b (600 bytes) does not fit beside a: the forwarder holds it, and c waits in the sink.
        sink.send(upsert("b", 600)).await.unwrap();
        sink.send(upsert("c", 100)).await.unwrap();
        assert_eq!(sink.capacity(), 0, "c waits behind b");
        assert!(pipeline.try_recv().is_err(), "b passed the budget");
        budget.release([&a]);
        let b = next(&mut pipeline).await;
        let c = next(&mut pipeline).await;
        assert_eq!((id(&b), id(&c)), ("b", "c"));
        assert_eq!(budget.available(), 300);
        budget.release([&b, &c]);
        assert_eq!(budget.available(), 1000);
        // A change larger than the whole budget takes all of it, and passes alone.
        sink.send(upsert("huge", 10000)).await.unwrap();
        let huge = next(&mut pipeline).await;
        assert_eq!((id(&huge), budget.available()), ("huge", 0));
        budget.release([&huge]);
        assert_eq!(budget.available(), 1000);
        // The forwarder ends with its connector, so the pipeline sees every sender gone.
        drop(sink);
        assert!(
            tokio::time::timeout(Duration::from_secs(10), pipeline.recv())
                .await
                .unwrap()
                .is_none()
        );
    }

    /// A pipeline that stopped (an error) with the budget held closes it: a connector's sends
    /// fail instead of waiting for bytes no one gives back, so the daemon can stop.
    #[tokio::test]
    async fn a_closed_budget_fails_the_connectors_sends() {
        let budget = Arc::new(QueueBytes::new(100));
        let (to_pipeline, mut pipeline) = mpsc::channel(64);
        let sink = budget.sink(to_pipeline);
        sink.send(upsert("a", 100)).await.unwrap();
        pipeline.recv().await.unwrap();
        sink.send(upsert("b", 10)).await.unwrap();
        // The pipeline stops without giving a's bytes back.
        budget.close();
        drop(pipeline);
        let failed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if sink.send(upsert("c", 10)).await.is_err() {
                    return;
                }
            }
        })
        .await;
        assert!(failed.is_ok(), "the sink still takes changes");
    }
}
