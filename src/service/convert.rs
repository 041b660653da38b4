//! Domain ↔ protobuf conversions.

use docent_proto::v1 as pb;

use crate::answer::{Answer, AnswerStatus, Citation};
use crate::guardrail::Verdict;
use crate::index::SearchFilter;
use crate::retrieve::{Hit, Mode};

pub fn citation(c: &Citation) -> pb::Citation {
    pb::Citation {
        document_key: c.document_key.clone(),
        title: c.title.clone(),
        uri: c.uri.clone(),
        chunk_id: c.chunk_id.clone(),
        span: Some(pb::Span {
            start: c.span.start as u64,
            end: c.span.end as u64,
        }),
        snippet: c.snippet.clone(),
        heading_path: c.heading_path.clone(),
        page: c.page.unwrap_or(0),
    }
}

pub fn hit(h: &Hit) -> pb::SearchHit {
    pb::SearchHit {
        citation: Some(citation(&crate::answer::citation_for(h))),
        score: h.score,
        bm25_rank: h.bm25_rank.unwrap_or(0),
        dense_rank: h.dense_rank.unwrap_or(0),
        attributes: h.chunk.attributes.clone().into_iter().collect(),
    }
}

pub fn status(s: AnswerStatus) -> pb::AnswerStatus {
    match s {
        AnswerStatus::Answered => pb::AnswerStatus::Answered,
        AnswerStatus::NoAnswer => pb::AnswerStatus::NoAnswer,
        AnswerStatus::Blocked => pb::AnswerStatus::Blocked,
    }
}

pub fn sentences(a: &Answer) -> Vec<pb::AnswerSentence> {
    a.sentences
        .iter()
        .map(|s| pb::AnswerSentence {
            text: s.text.clone(),
            citations: s.citations.iter().map(|&c| c as u32).collect(),
        })
        .collect()
}

pub fn verdict(v: &Verdict) -> pb::GuardrailVerdict {
    pb::GuardrailVerdict {
        stage: v.stage.to_string(),
        action: v.action.to_string(),
        code: v.code.to_string(),
        rule: v.rule.clone(),
        message: v.message.clone(),
        count: v.count,
    }
}

pub fn answer(a: &Answer, verdicts: &[Verdict]) -> pb::AskResponse {
    pb::AskResponse {
        answer: a.text(),
        sentences: sentences(a),
        citations: a.citations.iter().map(citation).collect(),
        status: status(a.status) as i32,
        message: a.message.clone(),
        guardrails: verdicts.iter().map(verdict).collect(),
    }
}

pub fn filter(f: Option<pb::Filter>) -> SearchFilter {
    let f = f.unwrap_or_default();
    SearchFilter {
        sources: f.sources,
        uri_prefix: (!f.uri_prefix.is_empty()).then_some(f.uri_prefix),
    }
}

pub fn mode(m: i32) -> Option<Mode> {
    match pb::RetrievalMode::try_from(m).ok()? {
        pb::RetrievalMode::Unspecified | pb::RetrievalMode::Hybrid => Some(Mode::Hybrid),
        pb::RetrievalMode::Bm25 => Some(Mode::Bm25),
        pb::RetrievalMode::Dense => Some(Mode::Dense),
    }
}
