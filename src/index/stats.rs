//! Ranking statistics over the caller's scope.
//!
//! BM25's inverse document frequencies and average lengths, and the term weights the second
//! stage and the extractive answerer use, are computed over the documents the caller may read,
//! never over the whole index. Index-wide statistics would let a caller learn how many
//! documents they cannot read hold a word: with one readable document as the only candidate,
//! the relevance of "parking zzfalcon" against "parking qx7vq" gives the idf of "zzfalcon"
//! (benches/RESULTS.md, session 19). Over the scope, every score a caller sees is a function
//! of the documents they may read alone: adding or removing documents outside their scope
//! changes none of them (`retrieve::acl_props`).
//!
//! The scope is the caller's principals without their request filter: a filter narrows the
//! candidates, not the collection their scores are measured against. A segment whose docs the
//! scope admits in full and that has no deletes uses its own document frequencies (a term
//! dictionary lookup); any other counts the admitted docs in the term's postings. Lengths are
//! the admitted docs' field norms summed, cached with the scope's bitset.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tantivy::query::Bm25StatisticsProvider;
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::{DocSet, Searcher, TERMINATED, Term};

use super::scope::Admitted;

/// BM25 statistics over the admitted docs of each segment of `searcher`.
pub struct ScopedStatistics<'a> {
    searcher: &'a Searcher,
    admitted: &'a [Arc<Admitted>],
    /// The collection, where it is not every admitted doc: those holding this term (the
    /// document-level field counts documents by their first chunks).
    collection: Option<Term>,
    /// Document frequencies already counted for this query.
    df: Mutex<HashMap<Term, u64>>,
}

impl<'a> ScopedStatistics<'a> {
    /// Statistics over `admitted` (in the order of `searcher`'s segments).
    pub fn new(searcher: &'a Searcher, admitted: &'a [Arc<Admitted>]) -> Self {
        Self {
            searcher,
            admitted,
            collection: None,
            df: Mutex::default(),
        }
    }

    /// The same docs, but the collection is only those holding `term`.
    pub fn counting(mut self, term: Term) -> Self {
        self.collection = Some(term);
        self
    }

    /// Admitted docs holding `term`.
    fn count(&self, term: &Term) -> tantivy::Result<u64> {
        if let Some(&n) = self.df.lock().unwrap_or_else(|e| e.into_inner()).get(term) {
            return Ok(n);
        }
        let mut n = 0u64;
        for (reader, bits) in self.searcher.segment_readers().iter().zip(self.admitted) {
            if bits.count() == 0 {
                continue;
            }
            let inverted = reader.inverted_index(term.field())?;
            if bits.is_whole(reader) {
                n += u64::from(inverted.doc_freq(term)?);
                continue;
            }
            let Some(mut postings) = inverted.read_postings(term, IndexRecordOption::Basic)? else {
                continue;
            };
            // Walk the shorter side: the term's postings testing each against the bitset, or
            // the admitted docs seeking each in the postings.
            if (bits.count() as u64) * 8 < u64::from(postings.doc_freq()) {
                for d in bits.docs() {
                    let at = postings.doc();
                    if at == TERMINATED {
                        break;
                    }
                    // Seek only forward (the postings may already be past `d`).
                    if at == d || (at < d && postings.seek(d) == d) {
                        n += 1;
                    }
                }
            } else {
                let mut d = postings.doc();
                while d != TERMINATED {
                    n += u64::from(bits.contains(d));
                    d = postings.advance();
                }
            }
        }
        self.df
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(term.clone(), n);
        Ok(n)
    }

    /// Inverse document frequency of `term` over the collection, as BM25 computes it (the
    /// reference for [`KeptStatistics::idfs`]).
    #[cfg(test)]
    pub fn idf(&self, term: &Term) -> tantivy::Result<f32> {
        Ok(idf(self.doc_freq(term)?, self.total_num_docs()?))
    }
}

impl Bm25StatisticsProvider for ScopedStatistics<'_> {
    fn total_num_tokens(&self, field: Field) -> tantivy::Result<u64> {
        let mut n = 0;
        for (reader, bits) in self.searcher.segment_readers().iter().zip(self.admitted) {
            if bits.count() > 0 {
                n += bits.tokens(reader, field)?;
            }
        }
        Ok(n)
    }

    /// At least 1: an empty scope scores nothing, and BM25 divides by it.
    fn total_num_docs(&self) -> tantivy::Result<u64> {
        let n = match &self.collection {
            Some(t) => self.count(t)?,
            None => self.admitted.iter().map(|b| b.count() as u64).sum(),
        };
        Ok(n.max(1))
    }

    /// Never above the collection's size (tantivy asserts it), whatever a row holds.
    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        Ok(self.count(term)?.min(self.total_num_docs()?))
    }
}

/// Inverse document frequency of a term held by `df` of `docs` docs, as BM25 computes it.
fn idf(df: u64, docs: u64) -> f32 {
    let x = ((docs - df) as f32 + 0.5) / (df as f32 + 0.5);
    (1.0 + x).ln()
}

/// Collections whose statistics are kept.
const COLLECTIONS: usize = 16;
/// Terms kept per collection; past it the collection's terms start again.
const TERMS: usize = 16_384;

/// One collection's statistics: the docs it is (the scope cache's bitsets, by their ids, which
/// are never reused; and the term the collection is counted by, if any), and what was computed
/// over it.
struct Collection {
    admitted: Vec<u64>,
    collection: Option<Term>,
    used: u64,
    /// Its size (BM25's N).
    docs: Option<u64>,
    /// Per field, the collection's tokens in it.
    tokens: Vec<(Field, u64)>,
    /// Per term, the docs holding it.
    terms: HashMap<Term, u64>,
}

/// BM25 statistics kept across queries, by collection: its size, its tokens per field, each
/// term's document frequency.
///
/// These are functions of the collection's docs alone, and a collection here is the scope
/// cache's exact bitsets per segment (keyed by segment, deletes and scope, each with its own
/// id): a reload, a delete or another scope is another collection. Counting them costs a term dictionary lookup per
/// term and segment (a walk of the postings where the scope is partial), and most queries
/// repeat most of their terms (benches/RESULTS.md, session 47).
#[derive(Default)]
pub struct StatisticsCache {
    inner: Mutex<(u64, Vec<Collection>)>,
}

/// The statistics of one query's terms over a collection, kept or counted: tantivy builds
/// each term's BM25 weight from them as from the [`ScopedStatistics`] they stand for (any
/// other term is asked of those).
pub struct KeptStatistics<'a> {
    scoped: &'a ScopedStatistics<'a>,
    docs: u64,
    tokens: Vec<(Field, u64)>,
    dfs: Vec<(Term, u64)>,
    /// Where the last term asked was: tantivy asks them in order.
    next: std::sync::atomic::AtomicUsize,
}

impl Bm25StatisticsProvider for KeptStatistics<'_> {
    fn total_num_tokens(&self, field: Field) -> tantivy::Result<u64> {
        match self.tokens.iter().find(|(f, _)| *f == field) {
            Some(&(_, n)) => Ok(n),
            None => self.scoped.total_num_tokens(field),
        }
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        Ok(self.docs)
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let from = self.next.load(Relaxed).min(self.dfs.len());
        let (after, before) = self.dfs.split_at(from);
        let found = before
            .iter()
            .position(|(t, _)| t == term)
            .map(|i| from + i)
            .or_else(|| after.iter().position(|(t, _)| t == term));
        match found {
            Some(i) => {
                self.next.store(i + 1, Relaxed);
                Ok(self.dfs[i].1)
            }
            None => self.scoped.doc_freq(term),
        }
    }
}

impl KeptStatistics<'_> {
    /// Inverse document frequency of each of the terms, in order.
    pub fn idfs(&self) -> Vec<f32> {
        self.dfs.iter().map(|&(_, df)| idf(df, self.docs)).collect()
    }
}

impl StatisticsCache {
    /// The statistics of `terms` over the collection of `scoped`, those kept read and the
    /// others counted (outside the lock) and kept.
    pub fn kept<'a>(
        &self,
        scoped: &'a ScopedStatistics<'a>,
        terms: &[Term],
    ) -> tantivy::Result<KeptStatistics<'a>> {
        let same = |c: &Collection| {
            c.collection == scoped.collection
                && c.admitted.len() == scoped.admitted.len()
                && c.admitted
                    .iter()
                    .zip(scoped.admitted)
                    .all(|(&a, b)| a == b.id())
        };
        let mut fields: Vec<Field> = Vec::new();
        for t in terms {
            if !fields.contains(&t.field()) {
                fields.push(t.field());
            }
        }
        let mut docs = None;
        let mut dfs: Vec<Option<u64>> = vec![None; terms.len()];
        let mut tokens: Vec<(Field, Option<u64>)> = fields.iter().map(|&f| (f, None)).collect();
        {
            let mut inner = self.lock();
            let (tick, collections) = &mut *inner;
            *tick += 1;
            if let Some(c) = collections.iter_mut().find(|c| same(c)) {
                c.used = *tick;
                docs = c.docs;
                for (df, t) in dfs.iter_mut().zip(terms) {
                    *df = c.terms.get(t).copied();
                }
                for (f, n) in &mut tokens {
                    *n = c.tokens.iter().find(|(g, _)| g == f).map(|&(_, n)| n);
                }
            }
        }
        let missing = docs.is_none()
            || dfs.iter().any(Option::is_none)
            || tokens.iter().any(|(_, n)| n.is_none());
        if missing {
            let n = match docs {
                Some(n) => n,
                None => scoped.total_num_docs()?,
            };
            docs = Some(n);
            let mut new_tokens = Vec::new();
            for (f, t) in &mut tokens {
                if t.is_none() {
                    let k = scoped.total_num_tokens(*f)?;
                    new_tokens.push((*f, k));
                    *t = Some(k);
                }
            }
            let mut new_terms = Vec::new();
            for (df, t) in dfs.iter_mut().zip(terms) {
                if df.is_none() {
                    let d = scoped.doc_freq(t)?;
                    new_terms.push((t.clone(), d));
                    *df = Some(d);
                }
            }
            let mut inner = self.lock();
            let (tick, collections) = &mut *inner;
            let at = match collections.iter().position(same) {
                Some(i) => i,
                None => {
                    if collections.len() >= COLLECTIONS
                        && let Some(oldest) =
                            (0..collections.len()).min_by_key(|&i| collections[i].used)
                    {
                        collections.swap_remove(oldest);
                    }
                    collections.push(Collection {
                        admitted: scoped.admitted.iter().map(|a| a.id()).collect(),
                        collection: scoped.collection.clone(),
                        used: *tick,
                        docs: None,
                        tokens: Vec::new(),
                        terms: HashMap::new(),
                    });
                    collections.len() - 1
                }
            };
            let c = &mut collections[at];
            c.docs = Some(n);
            for (f, k) in new_tokens {
                if !c.tokens.iter().any(|(g, _)| *g == f) {
                    c.tokens.push((f, k));
                }
            }
            if c.terms.len() + new_terms.len() > TERMS {
                c.terms.clear();
            }
            // A question of more distinct words than that keeps its first ones.
            c.terms.extend(new_terms.into_iter().take(TERMS));
        }
        Ok(KeptStatistics {
            scoped,
            docs: docs.unwrap_or(1),
            tokens: tokens
                .into_iter()
                .filter_map(|(f, n)| Some((f, n?)))
                .collect(),
            dfs: terms
                .iter()
                .cloned()
                .zip(dfs.into_iter().flatten())
                .collect(),
            next: Default::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, Vec<Collection>)> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tantivy::DocId;
    use tantivy::query::{BoostQuery, EnableScoring, Query, TermQuery, Weight};

    use super::*;
    use crate::acl::AclScope;
    use crate::index::suite::{DIM, doc};
    use crate::index::{Index, SearchFilter, schema};
    use docent_connector_api::DocKey;

    const WORDS: [&str; 8] = [
        "budget", "salary", "vpn", "parking", "holiday", "report", "laptop", "permit",
    ];

    /// `n` documents of varied lengths and words (from `first`), a third each readable by
    /// everyone, by HR and by alice, committed in two segments.
    fn add(index: &Index, first: usize, n: usize) {
        for i in first..first + n {
            let allow: &[&str] = match i % 3 {
                0 => &["group:all"],
                1 => &["group:hr"],
                _ => &["user:alice"],
            };
            let mut d = doc("s", i, 1 + i % 3, allow, &[]);
            for (c, chunk) in d.chunks.iter_mut().enumerate() {
                chunk.text = (0..3 + (i * 7 + c * 5) % 17)
                    .map(|k| WORDS[(i + c + k * k) % WORDS.len()])
                    .collect::<Vec<_>>()
                    .join(" ");
                chunk.span = 0..chunk.text.len();
            }
            index.upsert(d).unwrap();
            if i == first + n / 2 {
                index.commit(BTreeMap::new()).unwrap();
            }
        }
        index.commit(BTreeMap::new()).unwrap();
    }

    /// Every doc `weight` matches in each segment, with its score's bits.
    fn matches(searcher: &Searcher, weight: &dyn Weight) -> Vec<(usize, DocId, u32)> {
        let mut out = Vec::new();
        for (ord, reader) in searcher.segment_readers().iter().enumerate() {
            weight
                .for_each(reader, &mut |d, s| out.push((ord, d, s.to_bits())))
                .unwrap();
        }
        out
    }

    fn term(index: &Index, field: Field, word: &str) -> Term {
        let token = schema::analyze(&index.index, word).remove(0);
        Term::from_field_text(field, &token)
    }

    /// Scored with the kept statistics, every doc scores bit for bit as with the scope's own,
    /// boosted or not, for the chunks and for the documents of each scope, counted and then
    /// kept; the kept idfs are the scope's own; a term not kept is asked of the scope.
    #[test]
    fn kept_statistics_score_as_the_scopes_own() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path(), "stats-model", DIM).unwrap();
        add(&index, 0, 24);
        let snap = index.snapshot();
        let f = &index.fields;
        let cache = StatisticsCache::default();
        for scope in [
            AclScope::for_tests("alice", &["user:alice", "group:all"]),
            AclScope::for_tests("hr", &["group:hr"]),
            AclScope::for_tests("nobody", &[]),
        ] {
            let collection = snap.admitted(&scope, &SearchFilter::default()).unwrap();
            for documents in [false, true] {
                let scoped = {
                    let s = ScopedStatistics::new(&snap.searcher, &collection);
                    match documents {
                        true => s.counting(Term::from_field_u64(f.chunk_ord, 0)),
                        false => s,
                    }
                };
                let fields = match documents {
                    true => vec![f.doc_text.expect("a new index has the document field")],
                    false => vec![f.title, f.text],
                };
                let mut terms: Vec<Term> = Vec::new();
                for &field in &fields {
                    for w in ["budget", "parking", "permit", "document", "absent"] {
                        terms.push(term(&index, field, w));
                    }
                }
                for round in 0..2 {
                    let kept = cache.kept(&scoped, &terms).unwrap();
                    let want =
                        EnableScoring::enabled_from_statistics_provider(&scoped, &snap.searcher);
                    let got =
                        EnableScoring::enabled_from_statistics_provider(&kept, &snap.searcher);
                    for t in &terms {
                        for boost in [1.0, 0.15, 2.5] {
                            let q = BoostQuery::new(
                                Box::new(TermQuery::new(t.clone(), IndexRecordOption::WithFreqs)),
                                boost,
                            );
                            assert_eq!(
                                matches(&snap.searcher, &*q.weight(got).unwrap()),
                                matches(&snap.searcher, &*q.weight(want).unwrap()),
                                "{}, documents {documents}, round {round}, {t:?} × {boost}",
                                scope.user()
                            );
                        }
                    }
                    let other = term(&index, fields[0], "salary");
                    assert_eq!(
                        kept.doc_freq(&other).unwrap(),
                        scoped.doc_freq(&other).unwrap()
                    );
                    if !documents {
                        let idf: Vec<f32> = terms.iter().map(|t| scoped.idf(t).unwrap()).collect();
                        assert_eq!(kept.idfs(), idf, "{}", scope.user());
                    }
                }
            }
        }
    }

    /// New documents make another collection: what was kept for the old one is not used for
    /// the new one, whose statistics are those counted afresh.
    #[test]
    fn kept_statistics_follow_the_collection() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path(), "stats-model", DIM).unwrap();
        add(&index, 0, 12);
        let cache = StatisticsCache::default();
        let scope = AclScope::for_tests("alice", &["user:alice", "group:all", "group:hr"]);
        let t = term(&index, index.fields.text, "budget");
        let read = |cache: &StatisticsCache| {
            let snap = index.snapshot();
            let collection = snap.admitted(&scope, &SearchFilter::default()).unwrap();
            let scoped = ScopedStatistics::new(&snap.searcher, &collection);
            let kept = cache.kept(&scoped, std::slice::from_ref(&t)).unwrap();
            (
                kept.total_num_docs().unwrap(),
                kept.total_num_tokens(index.fields.text).unwrap(),
                kept.doc_freq(&t).unwrap(),
            )
        };
        let before = read(&cache);
        add(&index, 12, 30);
        let after = read(&cache);
        assert_ne!(after, before, "more documents, other statistics");
        assert_eq!(after, read(&StatisticsCache::default()));
        // A delete changes a segment's deletes, not its id.
        index.delete(&DocKey::new("s", "d13"));
        index.commit(BTreeMap::new()).unwrap();
        let deleted = read(&cache);
        assert_ne!(deleted, after, "a document fewer, other statistics");
        assert_eq!(deleted, read(&StatisticsCache::default()));
    }
}
