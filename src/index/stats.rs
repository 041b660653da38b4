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

    /// Inverse document frequency of `term` over the collection, as BM25 computes it.
    pub fn idf(&self, term: &Term) -> tantivy::Result<f32> {
        let n = self.total_num_docs()?;
        let df = self.doc_freq(term)?;
        Ok(((n - df) as f32 + 0.5) / (df as f32 + 0.5)).map(|x| (1.0 + x).ln())
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
