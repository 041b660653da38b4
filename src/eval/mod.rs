//! Retrieval evaluation on labelled sets in BEIR layout (`corpus.jsonl`, `queries.jsonl`,
//! `qrels/<split>.tsv`): loaders and trec_eval-style metrics (mean over the queries that have
//! judgments; graded relevance with linear gain, as pytrec_eval computes nDCG).

pub mod cache;
pub mod qa;
pub mod run;

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Format {
        path: String,
        line: usize,
        message: String,
    },
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct CorpusDoc {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(default)]
    pub title: String,
    pub text: String,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Query {
    #[serde(rename = "_id")]
    pub id: String,
    pub text: String,
}

/// query id → (doc id → relevance grade)
pub type Qrels = HashMap<String, HashMap<String, u32>>;

fn lines(path: &Path) -> Result<Vec<String>, EvalError> {
    let f = std::fs::File::open(path).map_err(|source| EvalError::Io {
        path: path.display().to_string(),
        source,
    })?;
    std::io::BufReader::new(f)
        .lines()
        .collect::<Result<_, _>>()
        .map_err(|source| EvalError::Io {
            path: path.display().to_string(),
            source,
        })
}

fn jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, EvalError> {
    lines(path)?
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| EvalError::Format {
                path: path.display().to_string(),
                line: i + 1,
                message: e.to_string(),
            })
        })
        .collect()
}

pub fn load_corpus(path: &Path) -> Result<Vec<CorpusDoc>, EvalError> {
    jsonl(path)
}

pub fn load_queries(path: &Path) -> Result<Vec<Query>, EvalError> {
    jsonl(path)
}

/// Tab-separated `query-id corpus-id score` with a header line.
/// A labelled question set (JSONL of [`qa::QaItem`]).
pub fn load_qa(path: &Path) -> Result<Vec<qa::QaItem>, EvalError> {
    jsonl(path)
}

pub fn load_qrels(path: &Path) -> Result<Qrels, EvalError> {
    let mut q: Qrels = HashMap::new();
    for (i, l) in lines(path)?.iter().enumerate().skip(1) {
        let f: Vec<&str> = l.split('\t').collect();
        if l.trim().is_empty() {
            continue;
        }
        let bad = |m: &str| EvalError::Format {
            path: path.display().to_string(),
            line: i + 1,
            message: m.to_string(),
        };
        if f.len() < 3 {
            return Err(bad("expected query-id, corpus-id, score"));
        }
        let score: i64 = f[2]
            .trim()
            .parse()
            .map_err(|_| bad("score is not an integer"))?;
        if score > 0 {
            q.entry(f[0].to_string())
                .or_default()
                .insert(f[1].to_string(), score as u32);
        }
    }
    Ok(q)
}

/// nDCG@k with linear gain and log2(rank + 1) discount; 0 when nothing is relevant.
pub fn ndcg_at_k(ranked: &[String], rels: &HashMap<String, u32>, k: usize) -> f64 {
    let dcg: f64 = ranked
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, d)| rels.get(d).copied().unwrap_or(0) as f64 / ((i + 2) as f64).log2())
        .sum();
    let mut ideal: Vec<u32> = rels.values().copied().collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, &r)| r as f64 / ((i + 2) as f64).log2())
        .sum();
    if idcg == 0.0 { 0.0 } else { dcg / idcg }
}

/// Share of relevant documents found in the top k.
pub fn recall_at_k(ranked: &[String], rels: &HashMap<String, u32>, k: usize) -> f64 {
    if rels.is_empty() {
        return 0.0;
    }
    let found = ranked
        .iter()
        .take(k)
        .filter(|d| rels.contains_key(*d))
        .count();
    found as f64 / rels.len() as f64
}

/// Reciprocal rank of the first relevant document within the top k.
pub fn mrr_at_k(ranked: &[String], rels: &HashMap<String, u32>, k: usize) -> f64 {
    ranked
        .iter()
        .take(k)
        .position(|d| rels.contains_key(d))
        .map(|p| 1.0 / (p + 1) as f64)
        .unwrap_or(0.0)
}

/// Collapses a ranked list of chunk-level document ids to documents (first occurrence wins).
pub fn dedup_docs(ids: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    ids.into_iter().filter(|d| seen.insert(d.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn rels(v: &[(&str, u32)]) -> HashMap<String, u32> {
        v.iter().map(|(d, g)| (d.to_string(), *g)).collect()
    }

    #[test]
    fn ndcg_hand_computed() {
        // Relevant at ranks 1 and 3 out of 2 relevant: (1 + 1/log2(4)) / (1 + 1/log2(3)).
        let v = ndcg_at_k(&r(&["a", "x", "b"]), &rels(&[("a", 1), ("b", 1)]), 10);
        let want = (1.0 + 0.5) / (1.0 + 1.0 / 3f64.log2());
        assert!((v - want).abs() < 1e-12, "{v} vs {want}");
        // Graded: b (2) at rank 1, a (1) at rank 2 is ideal.
        assert!((ndcg_at_k(&r(&["b", "a"]), &rels(&[("a", 1), ("b", 2)]), 10) - 1.0).abs() < 1e-12);
        let swapped = ndcg_at_k(&r(&["a", "b"]), &rels(&[("a", 1), ("b", 2)]), 10);
        let want = (1.0 + 2.0 / 3f64.log2()) / (2.0 + 1.0 / 3f64.log2());
        assert!((swapped - want).abs() < 1e-12);
        // Cut-off and no relevant docs.
        assert_eq!(ndcg_at_k(&r(&["x", "a"]), &rels(&[("a", 1)]), 1), 0.0);
        assert_eq!(ndcg_at_k(&r(&["a"]), &rels(&[]), 10), 0.0);
    }

    #[test]
    fn ties_in_grades_are_order_invariant() {
        // Two documents with the same grade: either order is ideal.
        let g = rels(&[("a", 2), ("b", 2)]);
        assert_eq!(
            ndcg_at_k(&r(&["a", "b"]), &g, 10),
            ndcg_at_k(&r(&["b", "a"]), &g, 10)
        );
        assert!((ndcg_at_k(&r(&["b", "a", "x"]), &g, 10) - 1.0).abs() < 1e-12);
        // A duplicate in the ranking counts only where dedup_docs keeps it.
        let ranked = dedup_docs(r(&["x", "a", "a", "b"]));
        assert_eq!(ranked, r(&["x", "a", "b"]));
    }

    #[test]
    fn recall_and_mrr() {
        let g = rels(&[("a", 1), ("b", 1), ("c", 1), ("d", 1)]);
        assert_eq!(recall_at_k(&r(&["a", "x", "b"]), &g, 2), 0.25);
        assert_eq!(recall_at_k(&r(&["a", "x", "b"]), &g, 10), 0.5);
        assert_eq!(mrr_at_k(&r(&["x", "y", "c"]), &g, 10), 1.0 / 3.0);
        assert_eq!(mrr_at_k(&r(&["x", "y", "c"]), &g, 2), 0.0);
        assert_eq!(
            dedup_docs(r(&["a", "b", "a", "c", "b"])),
            r(&["a", "b", "c"])
        );
    }
}
