//! A query matching an explicit list of docs per segment, each with score 0: the docs of a
//! page's documents that [`super::IndexSnapshot::bm25_passages`] scores, found from the
//! document leg's addresses without reading any document key as text.

use std::collections::HashMap;
use std::sync::Arc;

use tantivy::index::SegmentId;
use tantivy::query::{ConstScorer, EmptyScorer, EnableScoring, Explanation, Query, Scorer, Weight};
use tantivy::{DocId, DocSet, Score, SegmentReader, TERMINATED};

/// The docs it matches, sorted and distinct per segment.
#[derive(Debug, Clone)]
pub struct DocListQuery {
    by_segment: Arc<HashMap<SegmentId, Arc<[DocId]>>>,
}

impl DocListQuery {
    /// `docs` per segment, in any order, repeats allowed.
    pub fn new(docs: impl IntoIterator<Item = (SegmentId, Vec<DocId>)>) -> Self {
        let by_segment = docs
            .into_iter()
            .map(|(segment, mut list)| {
                list.sort_unstable();
                list.dedup();
                (segment, Arc::from(list))
            })
            .collect();
        Self {
            by_segment: Arc::new(by_segment),
        }
    }
}

impl Query for DocListQuery {
    fn weight(&self, _scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(DocListWeight(self.by_segment.clone())))
    }
}

struct DocListWeight(Arc<HashMap<SegmentId, Arc<[DocId]>>>);

impl Weight for DocListWeight {
    fn scorer(&self, reader: &SegmentReader, _boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        Ok(match self.0.get(&reader.segment_id()) {
            Some(docs) if !docs.is_empty() => Box::new(ConstScorer::new(
                ListDocs {
                    docs: docs.clone(),
                    at: 0,
                },
                0.0,
            )),
            _ => Box::new(EmptyScorer),
        })
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        match self.0.get(&reader.segment_id()) {
            Some(docs) if docs.binary_search(&doc).is_ok() => Ok(Explanation::new("listed", 0.0)),
            _ => Err(tantivy::TantivyError::InvalidArgument(format!(
                "doc {doc} is not listed"
            ))),
        }
    }
}

/// One segment's sorted list, walked in order.
struct ListDocs {
    docs: Arc<[DocId]>,
    at: usize,
}

impl DocSet for ListDocs {
    fn advance(&mut self) -> DocId {
        if self.at < self.docs.len() {
            self.at += 1;
        }
        self.doc()
    }

    fn seek(&mut self, target: DocId) -> DocId {
        if self.doc() < target {
            self.at += self.docs[self.at..].partition_point(|&d| d < target);
        }
        self.doc()
    }

    fn doc(&self) -> DocId {
        self.docs.get(self.at).copied().unwrap_or(TERMINATED)
    }

    fn size_hint(&self) -> u32 {
        (self.docs.len() - self.at) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(docs: &[DocId]) -> ListDocs {
        ListDocs {
            docs: Arc::from(docs.to_vec()),
            at: 0,
        }
    }

    #[test]
    fn a_list_advances_and_seeks_in_order() {
        let mut l = list(&[2, 5, 9]);
        assert_eq!((l.doc(), l.size_hint()), (2, 3));
        assert_eq!(l.advance(), 5);
        // Seeking backwards or to the current doc stays.
        assert_eq!((l.seek(3), l.seek(5)), (5, 5));
        assert_eq!(l.seek(6), 9);
        assert_eq!(l.advance(), TERMINATED);
        assert_eq!(
            (l.advance(), l.seek(100), l.size_hint()),
            (TERMINATED, TERMINATED, 0)
        );
        assert_eq!(list(&[]).doc(), TERMINATED);
        assert_eq!(list(&[1, 4]).seek(10), TERMINATED);
    }
}
