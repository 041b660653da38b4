//! The docs a caller's scope admits, per segment, as a bitset cached across queries.
//!
//! Both retrieval legs apply the scope inside the search. Intersecting every query with the
//! scope's postings (a union of the caller's principals minus the deny entries) walks those
//! postings on every query, and it keeps tantivy's block-max WAND from skipping blocks of the
//! text query: the intersection scores every matching doc. A caller asks many questions under
//! one scope, and segments are immutable, so the scope is evaluated once per segment and kept
//! as a bitset ([`Admitted`]); the text query then runs alone with WAND pruning and only
//! admitted docs enter its top-k ([`top_k`]), and the dense leg scans the bitset directly.
//!
//! A cached bitset is exact for its key: the segment, the segment's deletes (its delete
//! opstamp: a new delete makes a new key) and the whole scope (every principal, the deny
//! mode) and filter, compared in full, never by a hash alone. Deleted docs are never admitted.
//! Entries are evicted least recently used first when the cache passes its byte budget.

use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};

use tantivy::index::SegmentId;
use tantivy::query::Weight;
use tantivy::{DocAddress, DocId, Score, Searcher, SegmentReader};

use super::SearchFilter;
use crate::acl::AclScope;

/// Bytes of bitsets kept by default: 64 scopes at 10⁶ chunks.
pub const DEFAULT_BUDGET: usize = 8 << 20;

/// The docs a scope admits in one segment (deleted docs excluded), and how many.
#[derive(Debug, Default)]
pub struct Admitted {
    words: Vec<u64>,
    count: usize,
}

impl Admitted {
    /// Evaluates a scope weight (scoring disabled) over one segment.
    pub fn compute(weight: &dyn Weight, reader: &SegmentReader) -> tantivy::Result<Self> {
        let mut words = vec![0u64; (reader.max_doc() as usize).div_ceil(64)];
        let mut count = 0;
        let alive = reader.alive_bitset();
        weight.for_each_no_score(reader, &mut |docs: &[DocId]| {
            for &d in docs {
                if alive.is_none_or(|a| a.is_alive(d)) {
                    words[d as usize / 64] |= 1 << (d % 64);
                    count += 1;
                }
            }
        })?;
        Ok(Self { words, count })
    }

    #[inline]
    pub fn contains(&self, doc: DocId) -> bool {
        self.words
            .get(doc as usize / 64)
            .is_some_and(|w| w & (1 << (doc % 64)) != 0)
    }

    pub fn words(&self) -> &[u64] {
        &self.words
    }

    pub fn count(&self) -> usize {
        self.count
    }

    fn bytes(&self) -> usize {
        self.words.len() * 8 + std::mem::size_of::<Self>()
    }
}

/// What makes a bitset valid: the segment, its deletes, and the scope and filter in full.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    segment: SegmentId,
    deletes: Option<u64>,
    scope: Arc<str>,
}

/// The scope and filter as one exact key: every principal (the scope holds them sorted and
/// distinct), the deny mode, and the filter's full value.
pub fn scope_key(scope: &AclScope, filter: &SearchFilter) -> Arc<str> {
    let mut s = String::with_capacity(64);
    s.push(if scope.strict_deny() { 'S' } else { 'P' });
    for p in scope.principals() {
        // A principal cannot contain NUL (identity tokens are printable); the length prefix
        // keeps the encoding unambiguous even if one did.
        s.push_str(&p.len().to_string());
        s.push(':');
        s.push_str(p);
    }
    s.push('\0');
    s.push_str(&format!("{filter:?}"));
    s.into()
}

struct Entry {
    bits: Arc<Admitted>,
    used: u64,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Key, Entry>,
    bytes: usize,
    tick: u64,
}

/// Scope bitsets by segment, deletes and scope, least recently used evicted past a budget.
pub struct ScopeCache {
    inner: Mutex<Inner>,
    budget: usize,
}

impl Default for ScopeCache {
    fn default() -> Self {
        Self::new(DEFAULT_BUDGET)
    }
}

impl ScopeCache {
    pub fn new(budget: usize) -> Self {
        Self {
            inner: Mutex::default(),
            budget,
        }
    }

    /// The admitted docs of every segment of `searcher`, in segment order: cached ones reused,
    /// the others evaluated with `weight` (the scope query, scoring disabled) and cached.
    pub fn admitted(
        &self,
        searcher: &Searcher,
        key: &Arc<str>,
        weight: &dyn Fn() -> tantivy::Result<Box<dyn Weight>>,
    ) -> tantivy::Result<Vec<Arc<Admitted>>> {
        let readers = searcher.segment_readers();
        let keys: Vec<Key> = readers
            .iter()
            .map(|r| Key {
                segment: r.segment_id(),
                deletes: r.delete_opstamp(),
                scope: key.clone(),
            })
            .collect();
        let mut out: Vec<Option<Arc<Admitted>>> = {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.tick += 1;
            let tick = inner.tick;
            keys.iter()
                .map(|k| {
                    inner.map.get_mut(k).map(|e| {
                        e.used = tick;
                        e.bits.clone()
                    })
                })
                .collect()
        };
        if out.iter().all(Option::is_some) {
            return Ok(out.into_iter().flatten().collect());
        }
        // Evaluated outside the lock: other queries keep using the cache meanwhile.
        let w = weight()?;
        let mut fresh = Vec::new();
        for (i, slot) in out.iter_mut().enumerate() {
            if slot.is_none() {
                let bits = Arc::new(Admitted::compute(&*w, &readers[i])?);
                fresh.push((keys[i].clone(), bits.clone()));
                *slot = Some(bits);
            }
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for (k, bits) in fresh {
            inner.tick += 1;
            let used = inner.tick;
            let size = bits.bytes();
            if size > self.budget {
                continue;
            }
            if let Some(old) = inner.map.insert(k, Entry { bits, used }) {
                inner.bytes -= old.bits.bytes();
            }
            inner.bytes += size;
        }
        while inner.bytes > self.budget {
            let Some(oldest) = inner
                .map
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(e) = inner.map.remove(&oldest) {
                inner.bytes -= e.bits.bytes();
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Bitsets held (for tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap().map.len()
    }
}

/// A scored doc in a top-k heap: the heap's greatest is the worst kept (lower score, then the
/// later doc), so ties keep the earlier doc, as tantivy's top-k does.
#[derive(Clone, Copy, PartialEq)]
struct Worst(Score, DocAddress);

impl Eq for Worst {}

impl Ord for Worst {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        o.0.total_cmp(&self.0).then(self.1.cmp(&o.1))
    }
}

impl PartialOrd for Worst {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

/// The `k` best docs of `weight` (scoring enabled) among the admitted ones, best first (score,
/// then address). The text query runs with block-max WAND pruning; only admitted docs enter
/// the heap, so the pruning threshold is that of the admitted top-k and nothing admitted that
/// belongs in it is skipped.
pub fn top_k(
    searcher: &Searcher,
    weight: &dyn Weight,
    admitted: &[Arc<Admitted>],
    k: usize,
) -> tantivy::Result<Vec<(Score, DocAddress)>> {
    let mut heap: BinaryHeap<Worst> = BinaryHeap::with_capacity(k + 1);
    if k == 0 {
        return Ok(Vec::new());
    }
    for (ord, reader) in searcher.segment_readers().iter().enumerate() {
        let bits = &admitted[ord];
        if bits.count() == 0 {
            continue;
        }
        // This segment's own heap: its threshold only rises with its admitted docs.
        let mut seg: BinaryHeap<Worst> = BinaryHeap::with_capacity(k + 1);
        let mut threshold = Score::MIN;
        weight.for_each(reader, &mut |doc, score| {
            if score <= threshold || !bits.contains(doc) {
                return;
            }
            seg.push(Worst(score, DocAddress::new(ord as u32, doc)));
            if seg.len() > k {
                seg.pop();
            }
            if seg.len() == k {
                threshold = seg.peek().map_or(Score::MIN, |w| w.0);
            }
        })?;
        for w in seg {
            heap.push(w);
            if heap.len() > k {
                heap.pop();
            }
        }
    }
    let mut v = heap.into_vec();
    v.sort();
    Ok(v.into_iter().map(|w| (w.0, w.1)).collect())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use tantivy::collector::TopDocs;
    use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
    use tantivy::schema::IndexRecordOption;

    use super::*;
    use crate::index::suite::{DIM, doc};
    use docent_connector_api::DocKey;

    use crate::index::{Index, IndexSnapshot};

    fn world() -> (tempfile::TempDir, Index) {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path(), "scope-model", DIM).unwrap();
        let acls: [(&[&str], &[&str]); 6] = [
            (&["group:all"], &[]),
            (&["group:hr"], &[]),
            (&["user:alice"], &[]),
            (&["group:all"], &["user:bob"]),
            (&[], &[]),
            (&["group:hr"], &["group:contractors"]),
        ];
        for (i, (allow, deny)) in acls.iter().enumerate() {
            index.upsert(doc("s", i, 2, allow, deny)).unwrap();
        }
        index.commit(BTreeMap::new()).unwrap();
        (dir, index)
    }

    /// The document keys the scope admits, from the cached bitsets.
    fn admitted_keys(index: &Index, scope: &AclScope) -> BTreeSet<String> {
        let snap = index.snapshot();
        let bits = snap.admitted(scope, &SearchFilter::default()).unwrap();
        let mut keys = BTreeSet::new();
        for (ord, b) in bits.iter().enumerate() {
            for d in 0..snap.searcher.segment_readers()[ord].max_doc() {
                if b.contains(d) {
                    let addr = super::super::chunk_addr(DocAddress::new(ord as u32, d));
                    keys.insert(snap.chunk(addr).unwrap().doc_key);
                }
            }
        }
        keys
    }

    #[test]
    fn each_scope_gets_its_own_exact_bitset() {
        let (_dir, index) = world();
        let alice = AclScope::for_tests("alice", &["user:alice", "group:all"]);
        // One principal more: another key, another bitset.
        let alice_hr = AclScope::for_tests("alice", &["user:alice", "group:all", "group:hr"]);
        let bob = AclScope::for_tests("bob", &["user:bob", "group:all"]);
        let audience = AclScope::for_tests_audience("room", &["group:all", "group:hr"]);
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        for _ in 0..2 {
            // The second round is served from the cache and must be the same.
            assert_eq!(
                admitted_keys(&index, &alice),
                set(&["s:d0", "s:d2", "s:d3"])
            );
            assert_eq!(
                admitted_keys(&index, &alice_hr),
                set(&["s:d0", "s:d1", "s:d2", "s:d3", "s:d5"])
            );
            assert_eq!(admitted_keys(&index, &bob), set(&["s:d0"]));
            assert_eq!(admitted_keys(&index, &audience), set(&["s:d0", "s:d1"]));
        }
        assert_eq!(index.scopes.len(), 4, "one bitset per scope and segment");
    }

    #[test]
    fn a_deleted_document_is_never_admitted_from_the_cache() {
        let (_dir, index) = world();
        let all = AclScope::for_tests("u", &["group:all"]);
        assert!(admitted_keys(&index, &all).contains("s:d0"));
        index.delete(&DocKey::new("s", "d0"));
        index.commit(BTreeMap::new()).unwrap();
        let after = admitted_keys(&index, &all);
        assert!(!after.contains("s:d0"), "{after:?}");
        assert!(after.contains("s:d3"));
        // Neither leg returns it either.
        let snap = index.snapshot();
        let hits = snap
            .bm25(&all, &SearchFilter::default(), "budget", 100, (1.0, 1.0))
            .unwrap();
        let keys: BTreeSet<String> = hits
            .iter()
            .map(|h| snap.chunk(h.addr).unwrap().doc_key)
            .collect();
        assert_eq!(keys, BTreeSet::from(["s:d3".to_string()]));
    }

    #[test]
    fn the_cache_stays_within_its_budget() {
        let (_dir, mut index) = world();
        // Room for about two bitsets of this index's one segment.
        let one = Admitted::default().bytes() + 8;
        index.scopes = ScopeCache::new(2 * one + one / 2);
        for u in ["a", "b", "c", "d"] {
            let p = format!("user:{u}");
            admitted_keys(&index, &AclScope::for_tests(u, &[&p, "group:all"]));
        }
        assert_eq!(
            index.scopes.len(),
            2,
            "the least recently used were evicted"
        );
        // An evicted scope is evaluated again, exactly.
        assert_eq!(
            admitted_keys(&index, &AclScope::for_tests("a", &["user:a", "group:all"])),
            BTreeSet::from(["s:d0".to_string(), "s:d3".to_string()])
        );
    }

    /// The bitset-filtered top-k ranks exactly as the scope intersected into the query did:
    /// same docs, same scores, same order, at every depth.
    #[test]
    fn top_k_over_the_bitset_equals_the_intersection() {
        let (_dir, index) = world();
        let snap = index.snapshot();
        let f = &index.fields;
        let text = || -> Box<dyn Query> {
            Box::new(BooleanQuery::new(
                ["budget", "salari", "report", "1"]
                    .iter()
                    .map(|t| {
                        let q: Box<dyn Query> = Box::new(TermQuery::new(
                            tantivy::Term::from_field_text(f.text, t),
                            IndexRecordOption::WithFreqs,
                        ));
                        (Occur::Should, q)
                    })
                    .collect(),
            ))
        };
        for scope in [
            AclScope::for_tests("alice", &["user:alice", "group:all", "group:hr"]),
            AclScope::for_tests("bob", &["user:bob", "group:all"]),
            AclScope::for_tests("nobody", &[]),
        ] {
            let filter = SearchFilter::default();
            for depth in [1, 3, 5, 100] {
                let mut clauses = snap.scope_clauses(&scope, &filter);
                clauses.push((Occur::Must, text()));
                let reference = snap
                    .searcher
                    .search(
                        &BooleanQuery::new(clauses),
                        &TopDocs::with_limit(depth).order_by_score(),
                    )
                    .unwrap();
                let weight = text()
                    .weight(tantivy::query::EnableScoring::enabled_from_searcher(
                        &snap.searcher,
                    ))
                    .unwrap();
                let admitted = snap.admitted(&scope, &filter).unwrap();
                let got = top_k(&snap.searcher, &*weight, &admitted, depth).unwrap();
                assert_eq!(got, reference, "{} at depth {depth}", scope.user());
            }
        }
    }
}
