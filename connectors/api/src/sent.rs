//! What a connector sent per document, standing for the index's state until the index shows it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::{DocKey, IndexedDoc, IndexedState, sent_stands};

/// What a connector last sent per native id: an upsert of that version and ACL (`Some`) or a
/// delete or skip (`None`), kept until the index shows the same. Until then it stands for the
/// index's state: a delete or move that follows an unapplied upsert must still reach it, and a
/// change back to the indexed state after an unapplied change is still a change.
///
/// A record does not stand for a version the pipeline gave up on ([`sent_stands`]), and the
/// whole log is forgotten when the pipeline discarded writes it had accepted
/// ([`IndexedState::rollbacks`]): the index decides again, so what the rollback lost (an
/// upsert, a narrower ACL, a delete or a withdrawal) is sent again by the next sync instead of
/// being taken as done.
pub struct SentLog {
    connector: String,
    indexed: Arc<dyn IndexedState>,
    inner: Mutex<Inner>,
}

struct Inner {
    /// The rollback count the records were made under.
    rollbacks: u64,
    sent: HashMap<String, Option<IndexedDoc>>,
}

impl SentLog {
    pub fn new(connector: impl Into<String>, indexed: Arc<dyn IndexedState>) -> Self {
        let rollbacks = indexed.rollbacks();
        Self {
            connector: connector.into(),
            indexed,
            inner: Mutex::new(Inner {
                rollbacks,
                sent: HashMap::new(),
            }),
        }
    }

    /// The records, forgotten first if the pipeline rolled back since they were made.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.indexed.rollbacks();
        if inner.rollbacks != now {
            inner.sent.clear();
            inner.rollbacks = now;
        }
        inner
    }

    fn key(&self, native_id: &str) -> DocKey {
        DocKey::new(&self.connector, native_id)
    }

    /// Records what was sent for `native_id` (`None`: a delete or skip).
    pub fn remember(&self, native_id: &str, last: Option<IndexedDoc>) {
        self.lock().sent.insert(native_id.to_string(), last);
    }

    /// The record for `native_id`, standing or not (`None`: nothing recorded).
    pub fn record(&self, native_id: &str) -> Option<Option<IndexedDoc>> {
        self.lock().sent.get(native_id).cloned()
    }

    /// The newest state of a document as far as this connector knows: what it sent last, else
    /// what the index holds.
    pub fn last_known(&self, key: &DocKey) -> Option<IndexedDoc> {
        if let Some(last) = self.lock().sent.get(&key.native_id)
            && sent_stands(&*self.indexed, key, last)
        {
            return last.clone();
        }
        self.indexed.get(key)
    }

    /// Every native id the index holds or will hold once what was sent is applied; forgets the
    /// records the index already shows. The index is listed after that, so that a change the
    /// pipeline applies meanwhile is seen in one or the other.
    pub fn known_ids(&self) -> BTreeSet<String> {
        let mut inner = self.lock();
        inner
            .sent
            .retain(|id, last| self.indexed.get(&self.key(id)) != *last);
        let mut known: BTreeSet<String> = self
            .indexed
            .native_ids(&self.connector)
            .into_iter()
            .collect();
        for (id, last) in &inner.sent {
            if last.is_some() {
                known.insert(id.clone());
            } else {
                known.remove(id);
            }
        }
        known
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Default)]
    struct Index {
        docs: Mutex<BTreeMap<String, IndexedDoc>>,
        rollbacks: AtomicU64,
    }

    impl IndexedState for Index {
        fn get(&self, key: &DocKey) -> Option<IndexedDoc> {
            self.docs.lock().unwrap().get(&key.native_id).cloned()
        }
        fn native_ids(&self, _connector: &str) -> Vec<String> {
            self.docs.lock().unwrap().keys().cloned().collect()
        }
        fn rollbacks(&self) -> u64 {
            self.rollbacks.load(Ordering::SeqCst)
        }
    }

    fn doc(version: &str) -> IndexedDoc {
        IndexedDoc {
            version: version.into(),
            acl_fingerprint: "acl".into(),
        }
    }

    #[test]
    fn an_unapplied_change_stands_for_the_index_until_a_rollback_discards_it() {
        let index = Arc::new(Index::default());
        index.docs.lock().unwrap().insert("a".into(), doc("1"));
        let log = SentLog::new("c", index.clone());
        let key = DocKey::new("c", "a");
        // Sent, not applied yet: the delete and the new upsert stand.
        log.remember("a", None);
        log.remember("b", Some(doc("1")));
        assert_eq!(log.last_known(&key), None);
        assert_eq!(log.known_ids(), BTreeSet::from(["b".to_string()]));
        // The pipeline rolled those writes back: the index decides again, so the delete and
        // the upsert are sent again.
        index.rollbacks.fetch_add(1, Ordering::SeqCst);
        assert_eq!(log.last_known(&key), Some(doc("1")));
        assert_eq!(log.known_ids(), BTreeSet::from(["a".to_string()]));
        assert_eq!(log.record("b"), None);
    }

    #[test]
    fn a_record_the_index_shows_is_forgotten() {
        let index = Arc::new(Index::default());
        let log = SentLog::new("c", index.clone());
        log.remember("a", Some(doc("2")));
        index.docs.lock().unwrap().insert("a".into(), doc("2"));
        assert_eq!(log.known_ids(), BTreeSet::from(["a".to_string()]));
        assert_eq!(log.record("a"), None);
    }
}
