//! Answer-quality evaluation on question sets (JSONL): does the answer cite the gold passage,
//! contain the expected text, cite only relevant passages, and abstain when it should?

use serde::{Deserialize, Serialize};

/// One labelled question. `gold` entries match a citation whose document key or chunk id (a gold
/// passage) equals them, or whose uri ends with them; `answer` is text the answer should contain (case-insensitive).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QaItem {
    pub question: String,
    #[serde(default)]
    pub gold: Vec<String>,
    #[serde(default)]
    pub answer: Option<String>,
    #[serde(default)]
    pub unanswerable: bool,
}

/// What the assistant returned for one question.
#[derive(Debug, Clone)]
pub struct QaOutcome {
    pub answered: bool,
    /// Refused by a guardrail (BLOCKED): neither an answer nor a "not found".
    pub blocked: bool,
    pub answer: String,
    /// (document key, uri, chunk id) of each citation.
    pub citations: Vec<(String, String, String)>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct QaReport {
    pub questions: usize,
    /// Answerable questions with gold whose answer cites a gold page (a cited document or
    /// passage among the gold ones).
    pub gold_cited_rate: f64,
    /// Questions with expected text whose answer contains it.
    pub answer_contains_rate: f64,
    /// Cited passages that are gold, over all citations of questions with gold.
    pub citation_precision: f64,
    /// The same over cited documents (several passages of one page count once).
    pub citation_precision_documents: f64,
    /// Cited passages that are gold, over every citation of every question: those of answered
    /// unanswerable questions count too (all wrong).
    pub citation_precision_all: f64,
    /// Questions a guardrail refused (BLOCKED), counted as neither answered nor "not found".
    pub blocked: usize,
    /// Unanswerable questions answered with "nothing relevant found".
    pub no_answer_rate_unanswerable: f64,
    /// Answerable questions wrongly answered with "nothing relevant found".
    pub no_answer_rate_answerable: f64,
}

/// A gold entry names a document key, a chunk id, or the end of a uri from a path boundary
/// (`it/vpn.md` is not `legit/vpn.md`'s).
fn is_gold(gold: &[String], key: &str, uri: &str, chunk: &str) -> bool {
    gold.iter().any(|g| {
        key == g
            || chunk == g
            || uri
                .strip_suffix(g.as_str())
                .is_some_and(|head| head.is_empty() || head.ends_with('/') || g.starts_with('/'))
    })
}

fn ratio(n: usize, d: usize) -> f64 {
    if d == 0 { 0.0 } else { n as f64 / d as f64 }
}

pub fn score(items: &[QaItem], outcomes: &[QaOutcome]) -> QaReport {
    let (mut gold_q, mut gold_hit) = (0, 0);
    let (mut ans_q, mut ans_hit) = (0, 0);
    let (mut cites, mut good_cites) = (0, 0);
    let (mut doc_cites, mut good_doc_cites) = (0, 0);
    let (mut all_cites, mut all_good) = (0, 0);
    let (mut unans, mut unans_ok) = (0, 0);
    let (mut answerable, mut wrongly_empty) = (0, 0);
    let mut blocked = 0;
    for (item, out) in items.iter().zip(outcomes) {
        blocked += usize::from(out.blocked);
        let not_found = !out.answered && !out.blocked;
        if item.unanswerable {
            unans += 1;
            unans_ok += usize::from(not_found);
            all_cites += out.citations.len();
            continue;
        }
        answerable += 1;
        wrongly_empty += usize::from(not_found);
        if !item.gold.is_empty() {
            gold_q += 1;
            let good = out
                .citations
                .iter()
                .filter(|(k, u, c)| is_gold(&item.gold, k, u, c))
                .count();
            gold_hit += usize::from(good > 0);
            cites += out.citations.len();
            good_cites += good;
            all_cites += out.citations.len();
            all_good += good;
            let mut docs: std::collections::BTreeMap<&str, bool> = Default::default();
            for (k, u, c) in &out.citations {
                *docs.entry(k.as_str()).or_default() |= is_gold(&item.gold, k, u, c);
            }
            doc_cites += docs.len();
            good_doc_cites += docs.values().filter(|g| **g).count();
        }
        if let Some(a) = &item.answer {
            ans_q += 1;
            ans_hit += usize::from(out.answer.to_lowercase().contains(&a.to_lowercase()));
        }
    }
    QaReport {
        questions: items.len(),
        gold_cited_rate: ratio(gold_hit, gold_q),
        answer_contains_rate: ratio(ans_hit, ans_q),
        citation_precision: ratio(good_cites, cites),
        citation_precision_documents: ratio(good_doc_cites, doc_cites),
        citation_precision_all: ratio(all_good, all_cites),
        blocked,
        no_answer_rate_unanswerable: ratio(unans_ok, unans),
        no_answer_rate_answerable: ratio(wrongly_empty, answerable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_hand_computed_set() {
        let item = |gold: &[&str], answer: Option<&str>, unanswerable| QaItem {
            question: "q".into(),
            gold: gold.iter().map(|s| s.to_string()).collect(),
            answer: answer.map(str::to_string),
            unanswerable,
        };
        let out = |answered, answer: &str, cites: &[(&str, &str)]| QaOutcome {
            answered,
            blocked: false,
            answer: answer.into(),
            citations: cites
                .iter()
                .map(|(k, u)| (k.to_string(), u.to_string(), format!("{k}#0")))
                .collect(),
        };
        let items = [
            item(&["it/vpn.md"], Some("14 characters"), false),
            // A gold passage (chunk id).
            item(&["s:doc2#0"], None, false),
            item(&[], None, true),
            item(&[], None, true),
            item(&[], Some("expected"), false),
        ];
        let outcomes = [
            out(
                true,
                "At least 14 Characters.",
                &[
                    ("s:1", "file:///x/it/vpn.md"),
                    ("s:9", "file:///x/other.md"),
                ],
            ),
            out(true, "something", &[("s:doc2", "file:///z")]),
            out(false, "", &[]),
            out(true, "made up", &[("s:3", "file:///y")]),
            out(false, "", &[]),
        ];
        let r = score(&items, &outcomes);
        assert_eq!(r.questions, 5);
        assert_eq!(r.gold_cited_rate, 1.0);
        assert_eq!(r.answer_contains_rate, 0.5);
        assert!((r.citation_precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((r.citation_precision_documents - 2.0 / 3.0).abs() < 1e-12);
        // The answered unanswerable question's citation counts, wrong.
        assert_eq!(r.citation_precision_all, 0.5);
        assert_eq!(r.no_answer_rate_unanswerable, 0.5);
        assert!((r.no_answer_rate_answerable - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(r.blocked, 0);
    }

    /// Session 42's review: two passages of the gold page counted twice, a uri suffix matched
    /// across a path boundary, and a blocked question counted as a correct "not found".
    #[test]
    fn documents_count_once_paths_match_whole_and_blocked_is_not_not_found() {
        let items = [
            QaItem {
                question: "q".into(),
                gold: vec!["it/vpn.md".into()],
                answer: None,
                unanswerable: false,
            },
            QaItem {
                question: "q".into(),
                gold: Vec::new(),
                answer: None,
                unanswerable: true,
            },
        ];
        let cite = |k: &str, u: &str, c: &str| (k.to_string(), u.to_string(), c.to_string());
        let outcomes = [
            QaOutcome {
                answered: true,
                blocked: false,
                answer: "a".into(),
                citations: vec![
                    cite("s:1", "file:///x/it/vpn.md", "s:1#0"),
                    cite("s:1", "file:///x/it/vpn.md", "s:1#1"),
                    cite("s:2", "file:///x/legit/vpn.md", "s:2#0"),
                ],
            },
            QaOutcome {
                answered: false,
                blocked: true,
                answer: String::new(),
                citations: Vec::new(),
            },
        ];
        let r = score(&items, &outcomes);
        assert!((r.citation_precision - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(r.citation_precision_documents, 0.5);
        assert_eq!(r.no_answer_rate_unanswerable, 0.0);
        assert_eq!(r.blocked, 1);
    }
}
