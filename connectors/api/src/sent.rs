//! What a connector sent per document, standing for the index's state until the index shows it.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::{DocKey, IndexedDoc, IndexedState, sent_stands};

/// What a connector last sent per native id: an upsert of that version and ACL (`Some`) or a
/// delete or skip (`None`), kept until the index shows the same. Until then it stands for the
/// index's state: a delete or move that follows an unapplied upsert must still reach it, and a
/// change back to the indexed state after an unapplied change is still a change.
///
/// A record does not stand for a version the pipeline gave up on ([`sent_stands`]). A record
/// made before the pipeline discarded writes it had accepted ([`IndexedState::rollbacks`]) is
/// in doubt: its change may have been lost, or may still be queued behind the failed batch.
/// Unless the index shows it, such a document's state is unknown ([`SentLog::last_known`]
/// answers a state that matches nothing), so whatever the source holds now is sent again, and
/// it counts as known, so that a delete still reaches it. The doubt ends when the connector
/// sends the document again or the index shows the record.
/// [`SentLog::rolled_back_since_reconciled`] tells a connector to reconcile once after a
/// rollback: a connector that works from a cursor would not come back to what was lost.
pub struct SentLog {
    connector: String,
    indexed: Arc<dyn IndexedState>,
    sent: Mutex<HashMap<String, Record>>,
    /// The rollback count the last reconciliation that ended had started under.
    reconciled: AtomicU64,
    /// A reconciliation owed from before this start ([`IndexedState::reconciliation_owed`]):
    /// any reconciliation that ends pays it.
    owed: std::sync::atomic::AtomicBool,
}

struct Record {
    last: Option<IndexedDoc>,
    /// The pipeline's rollback count when the change was sent.
    rollbacks: u64,
}

/// The version [`SentLog::last_known`] gives a document in doubt: no source's.
const UNKNOWN: &str = "\u{0}unknown after a rollback";

impl SentLog {
    pub fn new(connector: impl Into<String>, indexed: Arc<dyn IndexedState>) -> Self {
        let connector = connector.into();
        let reconciled = AtomicU64::new(indexed.rollbacks());
        let owed = indexed.reconciliation_owed(&connector).into();
        Self {
            connector,
            indexed,
            sent: Mutex::new(HashMap::new()),
            reconciled,
            owed,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Record>> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn key(&self, native_id: &str) -> DocKey {
        DocKey::new(&self.connector, native_id)
    }

    /// Records what was sent for `native_id` (`None`: a delete or skip). Called before the
    /// change is sent.
    pub fn remember(&self, native_id: &str, last: Option<IndexedDoc>) {
        let rollbacks = self.indexed.rollbacks();
        self.lock()
            .insert(native_id.to_string(), Record { last, rollbacks });
    }

    /// The record for `native_id`, standing or not (`None`: nothing recorded, or a record in
    /// doubt).
    pub fn record(&self, native_id: &str) -> Option<Option<IndexedDoc>> {
        let now = self.indexed.rollbacks();
        self.lock()
            .get(native_id)
            .filter(|r| r.rollbacks == now)
            .map(|r| r.last.clone())
    }

    /// The newest state of a document as far as this connector knows: what it sent last, else
    /// what the index holds; for a record in doubt that the index does not show, a state that
    /// matches nothing (the document is to be sent again).
    pub fn last_known(&self, key: &DocKey) -> Option<IndexedDoc> {
        let now = self.indexed.rollbacks();
        if let Some(r) = self.lock().get(&key.native_id) {
            if r.rollbacks != now {
                let indexed = self.indexed.get(key);
                return if indexed == r.last {
                    indexed
                } else {
                    Some(IndexedDoc {
                        version: UNKNOWN.into(),
                        acl_fingerprint: UNKNOWN.into(),
                    })
                };
            }
            if sent_stands(&*self.indexed, key, &r.last) {
                return r.last.clone();
            }
        }
        self.indexed.get(key)
    }

    /// Every native id the index holds or will hold once what was sent is applied (and those in
    /// doubt); forgets the records the index already shows. The index is listed after that, so
    /// that a change the pipeline applies meanwhile is seen in one or the other.
    pub fn known_ids(&self) -> BTreeSet<String> {
        let now = self.indexed.rollbacks();
        let mut sent = self.lock();
        sent.retain(|id, r| self.indexed.get(&self.key(id)) != r.last);
        let mut known: BTreeSet<String> = self
            .indexed
            .native_ids(&self.connector)
            .into_iter()
            .collect();
        for (id, r) in sent.iter() {
            if r.last.is_some() || r.rollbacks != now {
                known.insert(id.clone());
            } else {
                known.remove(id);
            }
        }
        known
    }

    /// The pipeline's rollback count now: given back to [`SentLog::reconciled`] when a
    /// reconciliation that starts now ends.
    pub fn rollbacks(&self) -> u64 {
        self.indexed.rollbacks()
    }

    /// A reconciliation that started at rollback count `at` ended (done, or held back by
    /// deletion protection): it sent again what it could of what was in doubt. Returns the
    /// notice the connector sends after those changes ([`Change::Reconciled`]), so that the
    /// pipeline counts the reconciliation as paid only once they are written.
    #[must_use = "the pipeline learns of the reconciliation only from the notice sent"]
    pub fn reconciled(&self, at: u64) -> crate::Change {
        self.reconciled.fetch_max(at, Ordering::SeqCst);
        self.owed.store(false, Ordering::SeqCst);
        crate::Change::Reconciled {
            connector: self.connector.clone(),
            at,
        }
    }

    /// Whether the pipeline rolled back since the last reconciliation that ended began, or a
    /// reconciliation is owed from before this start: the connector reconciles once (a failed
    /// one is tried again).
    pub fn rolled_back_since_reconciled(&self) -> bool {
        if self.indexed.reconcile_again(&self.connector) {
            // Owed until a reconciliation ends (a failed one is tried again).
            self.owed.store(true, Ordering::SeqCst);
        }
        self.owed.load(Ordering::SeqCst)
            || self.indexed.rollbacks() > self.reconciled.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

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
    fn an_unapplied_change_stands_for_the_index() {
        let index = Arc::new(Index::default());
        index.docs.lock().unwrap().insert("a".into(), doc("1"));
        let log = SentLog::new("c", index.clone());
        // Sent, not applied yet: the delete and the new upsert stand.
        log.remember("a", None);
        log.remember("b", Some(doc("1")));
        assert_eq!(log.last_known(&DocKey::new("c", "a")), None);
        assert_eq!(log.last_known(&DocKey::new("c", "b")), Some(doc("1")));
        assert_eq!(log.known_ids(), BTreeSet::from(["b".to_string()]));
        assert!(!log.rolled_back_since_reconciled());
    }

    #[test]
    fn after_a_rollback_a_document_the_index_does_not_show_as_sent_is_sent_again() {
        let index = Arc::new(Index::default());
        index.docs.lock().unwrap().insert("a".into(), doc("1"));
        index.docs.lock().unwrap().insert("c".into(), doc("1"));
        let log = SentLog::new("c", index.clone());
        log.remember("a", None);
        log.remember("b", Some(doc("1")));
        log.remember("c", Some(doc("2")));
        let before = log.rollbacks();
        index.rollbacks.fetch_add(1, Ordering::SeqCst);
        assert!(log.rolled_back_since_reconciled());
        // A reconciliation that began before the rollback does not answer it.
        let _ = log.reconciled(before);
        assert!(log.rolled_back_since_reconciled());
        // Unknown, whatever was sent: the current state of each is sent again...
        let unknown = |id: &str| {
            log.last_known(&DocKey::new("c", id))
                .is_some_and(|d| d.version == UNKNOWN)
        };
        assert!(unknown("a") && unknown("b") && unknown("c"));
        assert_eq!(log.record("c"), None);
        // ... and each counts as known, so that a delete still reaches it.
        assert_eq!(
            log.known_ids(),
            BTreeSet::from(["a", "b", "c"].map(String::from))
        );
        // The queued upsert of c lands after the rollback: the index shows it, the doubt ends.
        index.docs.lock().unwrap().insert("c".into(), doc("2"));
        assert_eq!(log.last_known(&DocKey::new("c", "c")), Some(doc("2")));
        // Sent again after the rollback: the new records stand.
        log.remember("a", None);
        log.remember("b", Some(doc("1")));
        assert_eq!(log.last_known(&DocKey::new("c", "a")), None);
        // One that began after it does.
        let notice = log.reconciled(log.rollbacks());
        assert!(!log.rolled_back_since_reconciled());
        assert!(
            matches!(&notice, crate::Change::Reconciled { connector, at } if connector == "c" && *at == 1),
            "{notice:?}"
        );
    }

    /// A change back to the indexed state while an earlier change is in doubt is still sent:
    /// the earlier one may be queued behind the failed batch and land after it.
    #[test]
    fn a_change_back_to_the_indexed_state_after_a_rollback_is_still_a_change() {
        let index = Arc::new(Index::default());
        let narrow = IndexedDoc {
            version: "1".into(),
            acl_fingerprint: "owner".into(),
        };
        index
            .docs
            .lock()
            .unwrap()
            .insert("x".into(), narrow.clone());
        let log = SentLog::new("c", index.clone());
        log.remember("x", Some(doc("1")));
        index.rollbacks.fetch_add(1, Ordering::SeqCst);
        // The file is back to what the index holds: it differs from what is known, so it is
        // sent (before, the log was forgotten and the index's state taken as current).
        assert_ne!(log.last_known(&DocKey::new("c", "x")), Some(narrow));
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
