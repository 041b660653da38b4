//! Domain ↔ protobuf conversions.

use docent_proto::v1 as pb;

use crate::answer::{Answer, AnswerStatus, Citation};
use crate::guardrail::Verdict;
use crate::index::{AttrFilter, SearchFilter};
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

/// Deepest attribute filter accepted (bounds the recursion on hostile requests).
pub const MAX_FILTER_DEPTH: usize = 16;

pub fn filter(f: Option<pb::Filter>) -> Result<SearchFilter, String> {
    let f = f.unwrap_or_default();
    Ok(SearchFilter {
        sources: f.sources,
        uri_prefix: (!f.uri_prefix.is_empty()).then_some(f.uri_prefix),
        attributes: f.attributes.map(|a| attr_filter(a, 0)).transpose()?,
    })
}

fn attr_filter(a: pb::AttributeFilter, depth: usize) -> Result<AttrFilter, String> {
    use pb::attribute_filter::Op;
    if depth >= MAX_FILTER_DEPTH {
        return Err(format!("nested deeper than {MAX_FILTER_DEPTH} levels"));
    }
    let key = |k: String| {
        if k.is_empty() {
            Err("an attribute key must not be empty".to_string())
        } else {
            Ok(k)
        }
    };
    let list = |fs: pb::AttributeFilters| {
        fs.filters
            .into_iter()
            .map(|f| attr_filter(f, depth + 1))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(
        match a.op.ok_or("an attribute filter needs an operation")? {
            Op::Equals(e) => AttrFilter::Equals {
                key: key(e.key)?,
                value: e.value,
            },
            Op::OneOf(o) => AttrFilter::In {
                key: key(o.key)?,
                values: o.values,
            },
            Op::Range(r) => AttrFilter::Range {
                key: key(r.key)?,
                gte: (!r.gte.is_empty()).then_some(r.gte),
                lte: (!r.lte.is_empty()).then_some(r.lte),
            },
            Op::Prefix(p) => AttrFilter::Prefix {
                key: key(p.key)?,
                prefix: p.prefix,
            },
            Op::All(fs) => AttrFilter::And(list(fs)?),
            Op::Any(fs) => AttrFilter::Or(list(fs)?),
            Op::Not(f) => AttrFilter::Not(Box::new(attr_filter(*f, depth + 1)?)),
        },
    )
}

pub fn mode(m: i32) -> Option<Mode> {
    match pb::RetrievalMode::try_from(m).ok()? {
        pb::RetrievalMode::Unspecified | pb::RetrievalMode::Hybrid => Some(Mode::Hybrid),
        pb::RetrievalMode::Bm25 => Some(Mode::Bm25),
        pb::RetrievalMode::Dense => Some(Mode::Dense),
    }
}
