//! Domain ↔ protobuf conversions.

use docent_proto::v1 as pb;

use crate::answer::{Answer, AnswerStatus, Citation};
use crate::guardrail::Verdict;
use crate::index::{AttrFilter, SearchFilter};
use crate::retrieve::{Hit, Mode};

/// A citation as sent: the snippet, never the whole passage. Every string here, the document key
/// and chunk id included, is as [`crate::guardrail::Guardrails::redact_answer`] left it (a key
/// with PII in it is sent redacted, and then names no document).
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

/// A search hit: its citation (the snippet cut from the passage) and attributes. Every string
/// here, the document key and chunk id included, is as
/// [`crate::guardrail::Guardrails::redact_hits`] left it.
pub fn hit(h: &Hit) -> pb::SearchHit {
    let c = &h.chunk;
    pb::SearchHit {
        citation: Some(pb::Citation {
            document_key: c.doc_key.clone(),
            title: c.title.clone(),
            uri: c.uri.clone(),
            chunk_id: c.chunk_id.clone(),
            span: Some(pb::Span {
                start: c.span.start as u64,
                end: c.span.end as u64,
            }),
            snippet: crate::answer::snippet(&c.text, crate::answer::SNIPPET_BYTES),
            heading_path: c.heading_path.clone(),
            page: c.page.unwrap_or(0),
        }),
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::answer::{AnswerSentence, citation_for};
    use crate::embed::test_embedder::BagOfWords;
    use crate::guardrail::{GuardrailConfig, Guardrails};
    use crate::retrieve::test_hit;

    const IBAN: &str = "DE89 3704 0044 0532 0130 00";

    fn guardrails() -> Guardrails {
        Guardrails::new(GuardrailConfig::default(), &BagOfWords).unwrap()
    }

    fn who() -> BTreeSet<String> {
        ["user:a".to_string()].into()
    }

    /// A hit with the IBAN in every string field that is sent, but not in its text.
    fn iban_hit() -> Hit {
        let mut h = test_hit("a", "The refund account is kept by finance.", 0.9);
        let c = &mut h.chunk;
        c.title = format!("Refund account {IBAN}");
        c.uri = "file:///finance/GB82WEST12345698765432.md".into();
        c.heading_path = vec!["Payments".into(), format!("Account {IBAN}")];
        c.attributes.insert("account".into(), IBAN.into());
        h
    }

    /// Every string of a protobuf citation.
    fn strings(c: &pb::Citation) -> Vec<&str> {
        let mut v = vec![
            c.document_key.as_str(),
            &c.title,
            &c.uri,
            &c.chunk_id,
            &c.snippet,
        ];
        v.extend(c.heading_path.iter().map(String::as_str));
        v
    }

    fn assert_no_iban(s: &str) {
        for part in ["DE89", "3704 0044", "GB82", "WEST1234"] {
            assert!(!s.contains(part), "{part} in {s:?}");
        }
    }

    #[test]
    fn iban_in_heading_title_uri_and_attributes_is_redacted_in_search_hits() {
        let g = guardrails();
        let mut hits = vec![iban_hit()];
        let v = g.redact_hits(&who(), &mut hits).unwrap();
        assert_eq!((v.rule.as_str(), v.count), ("iban", 4));
        let pb = hit(&hits[0]);
        let c = pb.citation.as_ref().unwrap();
        strings(c).into_iter().for_each(assert_no_iban);
        pb.attributes.values().for_each(|v| assert_no_iban(v));
        assert_eq!(c.title, "Refund account [REDACTED:iban]");
        assert_eq!(c.heading_path, ["Payments", "Account [REDACTED:iban]"]);
        assert_eq!(pb.attributes["account"], "[REDACTED:iban]");
    }

    #[test]
    fn iban_in_heading_title_and_uri_is_redacted_in_ask_citations() {
        let g = guardrails();
        let hits = [iban_hit()];
        let mut a = Answer {
            status: AnswerStatus::Answered,
            sentences: vec![AnswerSentence {
                text: "The refund account is kept by finance.".into(),
                citations: vec![0],
            }],
            citations: hits.iter().map(citation_for).collect(),
            message: String::new(),
        };
        let v = g.redact_answer(&who(), &mut a).unwrap();
        assert_eq!((v.rule.as_str(), v.count), ("iban", 3));
        let verdicts = [v];
        let pb = answer(&a, &verdicts);
        assert_eq!(pb.citations.len(), 1);
        strings(&pb.citations[0])
            .into_iter()
            .for_each(assert_no_iban);
        assert_eq!(pb.citations[0].uri, "file:///finance/[REDACTED:iban].md");
        assert_eq!(pb.guardrails[0].code, "PII_REDACTED");
        assert_eq!(pb.guardrails[0].count, 3);
    }

    /// A file-share hit whose path holds the IBAN: the key is the raw path, the chunk id the key
    /// plus the chunk's number, the uri the path percent-encoded (spaces as `%20`).
    fn iban_path_hit() -> Hit {
        let mut h = test_hit("a", "Refunds are paid at the end of each month.", 0.9);
        let c = &mut h.chunk;
        c.doc_key = format!("share:/srv/share/refunds/{IBAN}.md");
        c.chunk_id = format!("{}#0", c.doc_key);
        c.uri = format!("file:///srv/share/refunds/{}.md", IBAN.replace(' ', "%20"));
        h
    }

    fn answer_citing(hits: &[Hit]) -> Answer {
        Answer {
            status: AnswerStatus::Answered,
            sentences: vec![AnswerSentence {
                text: hits[0].chunk.text.clone(),
                citations: vec![0],
            }],
            citations: hits.iter().map(citation_for).collect(),
            message: String::new(),
        }
    }

    #[test]
    fn iban_in_document_key_chunk_id_and_encoded_uri_is_redacted_in_hits_and_citations() {
        let g = guardrails();
        let redacted_key = "share:/srv/share/refunds/[REDACTED:iban].md";
        let check = |c: &pb::Citation| {
            strings(c).into_iter().for_each(assert_no_iban);
            assert_eq!(c.document_key, redacted_key);
            assert_eq!(c.chunk_id, format!("{redacted_key}#0"));
            assert_eq!(c.uri, "file:///srv/share/refunds/[REDACTED:iban].md");
        };
        let mut hits = vec![iban_path_hit()];
        let v = g.redact_hits(&who(), &mut hits).unwrap();
        // Key, chunk id and uri.
        assert_eq!((v.rule.as_str(), v.count), ("iban", 3));
        check(hit(&hits[0]).citation.as_ref().unwrap());

        let mut a = answer_citing(&[iban_path_hit()]);
        let v = g.redact_answer(&who(), &mut a).unwrap();
        assert_eq!((v.rule.as_str(), v.count), ("iban", 3));
        let pb = answer(&a, &[v]);
        check(&pb.citations[0]);
        assert_eq!(pb.guardrails[0].count, 3);
    }

    #[test]
    fn percent_encoded_card_in_uri_is_redacted_in_hits_and_citations() {
        let g = guardrails();
        let mut h = test_hit("a", "The company card is kept by finance.", 0.9);
        h.chunk.uri = "file:///srv/a%20b/4111%201111%201111%201111.md".into();
        let want = "file:///srv/a%20b/[REDACTED:payment_card].md";
        let mut hits = vec![h.clone()];
        let v = g.redact_hits(&who(), &mut hits).unwrap();
        assert_eq!((v.rule.as_str(), v.count), ("payment_card", 1));
        assert_eq!(hit(&hits[0]).citation.unwrap().uri, want);

        let mut a = answer_citing(&[h]);
        let v = g.redact_answer(&who(), &mut a).unwrap();
        assert_eq!((v.rule.as_str(), v.count), ("payment_card", 1));
        assert_eq!(answer(&a, &[]).citations[0].uri, want);
    }

    #[test]
    fn card_straddling_the_cut_or_split_by_nbsp_is_not_in_the_sent_snippet() {
        let g = guardrails();
        // 309 bytes of words, then the card: a cut snippet would end in "4111 1111".
        let lead = "word ".repeat(61) + "xxx ";
        let straddling = lead + "4111 1111 1111 1111 is the company card.";
        // Non-breaking spaces between the groups: the snippet collapses them to plain spaces.
        let nbsp = "Company card: 4111\u{A0}1111\u{A0}1111\u{A0}1111.";
        for text in [straddling.as_str(), nbsp] {
            let original = vec![test_hit("a", text, 0.9)];
            let mut hits = original.clone();
            g.redact_hits(&who(), &mut hits).unwrap();
            let s = hit(&hits[0]).citation.unwrap().snippet;
            assert!(!s.contains("4111"), "{s}");
            let mut a = Answer {
                status: AnswerStatus::Answered,
                sentences: vec![],
                citations: original.iter().map(citation_for).collect(),
                message: String::new(),
            };
            g.redact_answer(&who(), &mut a).unwrap();
            let s = &answer(&a, &[]).citations[0].snippet;
            assert!(!s.contains("4111"), "{s}");
            assert!(
                s.contains("[REDACTED:payment_card]") || text.len() > 320,
                "{s}"
            );
        }
    }
}
