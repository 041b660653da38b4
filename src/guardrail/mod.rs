//! Guardrails: checks on the question, the retrieved text and the answer.
//!
//! This build has the request checks (size, emptiness) and the defence-in-depth ACL recheck of
//! every citation and search hit before it leaves the daemon. Blocked phrases, topic controls,
//! injection screening and PII redaction plug in here as further stages.
//!
//! Must never: let a citation or hit through whose document the scope does not permit.

use crate::acl::AclScope;
use crate::answer::{Answer, AnswerStatus};
use crate::index::Index;
use crate::retrieve::Hit;

pub const MAX_QUESTION_BYTES: usize = 4096;

/// Why a request is refused before retrieval.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("{field} must not be empty")]
    Empty { field: &'static str },
    #[error("{field} is {len} bytes; the limit is {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
}

pub fn check_question(field: &'static str, text: &str) -> Result<(), RequestError> {
    if text.trim().is_empty() {
        return Err(RequestError::Empty { field });
    }
    if text.len() > MAX_QUESTION_BYTES {
        return Err(RequestError::TooLong {
            field,
            len: text.len(),
            max: MAX_QUESTION_BYTES,
        });
    }
    Ok(())
}

/// Whether the scope may read `doc_key` according to the index's current document table.
fn readable(index: &Index, scope: &AclScope, doc_key: &str) -> bool {
    index
        .doc_entry(doc_key)
        .is_some_and(|e| scope.permits(&e.acl))
}

/// Drops hits the scope may not read (their ACL is re-read from the document table). Retrieval
/// already filters inside the query; a drop here means a bug or a concurrent ACL change, and is
/// logged without document details.
pub fn recheck_hits(index: &Index, scope: &AclScope, hits: Vec<Hit>) -> Vec<Hit> {
    let before = hits.len();
    let kept: Vec<Hit> = hits
        .into_iter()
        .filter(|h| scope.permits(&h.chunk.acl) && readable(index, scope, &h.chunk.doc_key))
        .collect();
    if kept.len() != before {
        tracing::warn!(dropped = before - kept.len(), "acl recheck dropped hits");
    }
    kept
}

/// Removes citations the scope may not read, and any sentence left without a citation; an
/// answer left empty becomes "no answer".
pub fn recheck_answer(index: &Index, scope: &AclScope, mut answer: Answer) -> Answer {
    if answer.status != AnswerStatus::Answered {
        return answer;
    }
    let ok: Vec<bool> = answer
        .citations
        .iter()
        .map(|c| readable(index, scope, &c.document_key))
        .collect();
    if ok.iter().all(|&b| b) {
        return answer;
    }
    tracing::warn!("acl recheck removed citations from an answer");
    let mut remap = vec![None; ok.len()];
    let mut citations = Vec::new();
    for (i, c) in answer.citations.drain(..).enumerate() {
        if ok[i] {
            remap[i] = Some(citations.len());
            citations.push(c);
        }
    }
    answer.citations = citations;
    answer.sentences.retain_mut(|s| {
        s.citations = s.citations.iter().filter_map(|&c| remap[c]).collect();
        !s.citations.is_empty()
    });
    if answer.sentences.is_empty() {
        return Answer::no_answer();
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_limits() {
        assert!(check_question("question", "ok").is_ok());
        assert_eq!(
            check_question("question", " \n"),
            Err(RequestError::Empty { field: "question" })
        );
        let long = "x".repeat(MAX_QUESTION_BYTES + 1);
        assert!(matches!(
            check_question("query", &long),
            Err(RequestError::TooLong { .. })
        ));
    }
}
