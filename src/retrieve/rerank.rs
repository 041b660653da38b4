//! The second ranking stage: a linear model over signals retrieval already has, applied to the
//! fused candidates (the top documents' best chunks), so it only reorders what the caller's scope
//! admitted. It also gives each candidate a calibrated relevance (a probability that the passage
//! answers the question), which the "not found" decision and citation selection use.
//!
//! Features (per candidate chunk, see [`FEATURE_NAMES`]): the query–chunk cosine, the chunk's
//! BM25 score relative to the best candidate's, the document's fused score relative to the best,
//! the document's rank in each leg (as `1/ln(2+rank)`), the idf-weighted share of the query's
//! terms the chunk holds, the same for its best sentence and for its title and headings, a
//! proximity signal (query-term pairs that occur within a few words of each other), and whether
//! the chunk opens its document.
//!
//! The weights come from `benches/ranker.rs` (run by `scripts/train-ranker.sh`): pairwise
//! logistic regression on SciFact train and Docent's own labelled QA sets, then a logistic
//! calibration of the top candidate's score on whether the question is answerable. They are
//! committed as `ranker.json` beside this file and embedded in the binary.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

pub const FEATURES: usize = 10;
pub const FEATURE_NAMES: [&str; FEATURES] = [
    "cosine",
    "bm25",
    "fused",
    "bm25_rank",
    "dense_rank",
    "coverage",
    "sentence_coverage",
    "title_coverage",
    "proximity",
    "first_chunk",
];

/// Query terms within this many analyzed tokens of each other count as near.
const NEAR: usize = 4;

/// The analyzed query: distinct terms in query order with their idf weights.
#[derive(Debug, Clone, Default)]
pub struct QueryTerms {
    terms: Vec<String>,
    index: rustc_hash::FxHashMap<String, usize>,
    weights: Vec<f32>,
    total: f32,
}

/// A tokenizer: hands the tokens of a text (the way BM25 analyzes text) to the sink, each with
/// its token position and byte offset. It may leave out tokens that cannot be a query term
/// (their positions still count).
pub type Analyze<'a> = dyn FnMut(&str, &mut dyn FnMut(usize, usize, &str)) + 'a;

/// Where a query term occurs in a text: token position, byte offset, term index.
#[derive(Debug, Clone, Copy)]
struct Hit {
    position: usize,
    offset: usize,
    term: usize,
}

impl QueryTerms {
    pub fn new(analyzed: Vec<String>, idf: impl Fn(&str) -> f32) -> Self {
        let mut q = Self::default();
        for t in analyzed {
            if q.index.contains_key(&t) {
                continue;
            }
            let w = idf(&t).max(0.0);
            q.total += w;
            q.index.insert(t.clone(), q.terms.len());
            q.weights.push(w);
            q.terms.push(t);
        }
        q
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The distinct analyzed terms, in query order.
    pub fn terms(&self) -> impl Iterator<Item = &str> {
        self.terms.iter().map(String::as_str)
    }

    /// The query-term occurrences in `text`, tokenized by `analyze`.
    fn hits(&self, text: &str, analyze: &mut Analyze<'_>) -> Vec<Hit> {
        let mut out = Vec::new();
        analyze(text, &mut |position, offset, t| {
            if let Some(&term) = self.index.get(t) {
                out.push(Hit {
                    position,
                    offset,
                    term,
                });
            }
        });
        out
    }

    /// Share of the query's idf weight that `tokens` hold (each term counted once).
    pub fn coverage(&self, tokens: &[String]) -> f32 {
        let hits: Vec<usize> = tokens
            .iter()
            .filter_map(|t| self.index.get(t).copied())
            .collect();
        self.covered(hits)
    }

    fn covered(&self, terms: impl IntoIterator<Item = usize>) -> f32 {
        if self.total <= 0.0 {
            return 0.0;
        }
        let mut seen = vec![false; self.terms.len()];
        let mut covered = 0.0;
        for t in terms {
            if !std::mem::replace(&mut seen[t], true) {
                covered += self.weights[t];
            }
        }
        covered / self.total
    }

    /// Weighted share of adjacent query-term pairs (in query order) that occur within
    /// [`NEAR`] tokens of each other.
    fn proximity(&self, hits: &[Hit]) -> f32 {
        if self.terms.len() < 2 {
            return 0.0;
        }
        let (mut got, mut all) = (0.0, 0.0);
        for i in 0..self.terms.len() - 1 {
            let w = self.weights[i] + self.weights[i + 1];
            all += w;
            let near = hits.iter().filter(|a| a.term == i).any(|a| {
                hits.iter()
                    .any(|b| b.term == i + 1 && a.position.abs_diff(b.position) <= NEAR)
            });
            if near {
                got += w;
            }
        }
        if all > 0.0 { got / all } else { 0.0 }
    }
}

/// Byte offsets where sentences start: after `.`, `!` or `?` followed by whitespace, and after
/// a line break. A cheap approximation of Unicode sentence bounds, good enough for a feature.
fn sentence_starts(text: &str) -> Vec<usize> {
    let b = text.as_bytes();
    let mut out = vec![0];
    for i in 0..b.len() {
        let end = match b[i] {
            b'\n' => true,
            // A line break right after is a boundary of its own.
            b'.' | b'!' | b'?' => b.get(i + 1).is_some_and(|&c| c == b' ' || c == b'\t'),
            _ => false,
        };
        if end && i + 1 < b.len() {
            out.push(i + 1);
        }
    }
    out
}

/// What retrieval knows about one candidate chunk.
#[derive(Debug, Clone, Copy, Default)]
pub struct Signals {
    /// Query–chunk cosine (0 without a query vector).
    pub cosine: f32,
    /// The chunk's score in the BM25 leg, if the leg returned it.
    pub bm25: Option<f32>,
    /// Its document's fused score.
    pub fused: f32,
    /// Its document's 1-based rank in each leg.
    pub bm25_rank: Option<u32>,
    pub dense_rank: Option<u32>,
}

/// The text side of a candidate.
pub struct Passage<'a> {
    pub text: &'a str,
    pub title: &'a str,
    pub headings: &'a [String],
    /// Position of the chunk in its document (0 = first).
    pub ordinal: usize,
}

/// The chunk's ordinal from its id (`<document>#<n>`).
pub fn ordinal(chunk_id: &str) -> usize {
    chunk_id
        .rsplit_once('#')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0)
}

fn rank_signal(r: Option<u32>) -> f32 {
    r.map_or(0.0, |r| 1.0 / (2.0 + r as f32).ln())
}

/// The best BM25 and fused scores among one query's candidates (features are relative to them).
#[derive(Debug, Clone, Copy)]
pub struct Best {
    pub bm25: f32,
    pub fused: f32,
}

impl Best {
    pub fn of<'a>(signals: impl IntoIterator<Item = &'a Signals>) -> Self {
        signals.into_iter().fold(
            Self {
                bm25: 0.0,
                fused: 0.0,
            },
            |b, s| Self {
                bm25: b.bm25.max(s.bm25.unwrap_or(0.0)),
                fused: b.fused.max(s.fused),
            },
        )
    }
}

/// Feature vectors of the candidates (one query).
pub fn features(
    q: &QueryTerms,
    candidates: &[(Passage<'_>, Signals)],
    best: Best,
    analyze: &mut Analyze<'_>,
) -> Vec<[f32; FEATURES]> {
    let (best_bm25, best_fused) = (best.bm25, best.fused);
    candidates
        .iter()
        .map(|(p, s)| {
            let hits = q.hits(p.text, analyze);
            // Best sentence: the query terms of each sentence (hits are in text order).
            let starts = sentence_starts(p.text);
            let mut best_sentence = 0.0f32;
            let mut from = 0;
            while from < hits.len() {
                let sentence = starts.partition_point(|&b| b <= hits[from].offset);
                let end = starts.get(sentence).copied().unwrap_or(usize::MAX);
                let to = from + hits[from..].partition_point(|h| h.offset < end);
                best_sentence = best_sentence.max(q.covered(hits[from..to].iter().map(|h| h.term)));
                from = to;
            }
            let mut title = q.hits(p.title, analyze);
            for h in p.headings {
                title.extend(q.hits(h, analyze));
            }
            [
                s.cosine,
                match s.bm25 {
                    Some(b) if best_bm25 > 0.0 => b / best_bm25,
                    _ => 0.0,
                },
                if best_fused > 0.0 {
                    s.fused / best_fused
                } else {
                    0.0
                },
                rank_signal(s.bm25_rank),
                rank_signal(s.dense_rank),
                q.covered(hits.iter().map(|h| h.term)),
                best_sentence,
                q.covered(title.iter().map(|h| h.term)),
                q.proximity(&hits),
                f32::from(u8::from(p.ordinal == 0)),
            ]
        })
        .collect()
}

/// A trained second stage: standardised features, linear weights, and a logistic calibration
/// of the score into a relevance probability.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RankerModel {
    /// Must equal [`FEATURE_NAMES`]: a model trained on other features is refused.
    pub features: Vec<String>,
    pub mean: Vec<f32>,
    pub scale: Vec<f32>,
    pub weights: Vec<f32>,
    /// Relevance = sigmoid(calibration.0 × score + calibration.1).
    pub calibration: (f32, f32),
    /// The relevance under which a question counts as unanswered (chosen on labelled data).
    pub threshold: f32,
    /// The sentence check's threshold for this embedding model: the cosine under which a
    /// sentence of the answer does not answer the question (chosen on labelled data;
    /// `answer.min_sentence_similarity`). `None`: not chosen for this model, the check is off.
    #[serde(default)]
    pub sentence_threshold: Option<f32>,
    /// How many of the answer's best sentences the sentence check compares with the question
    /// (`answer.check_sentences`): the threshold above was chosen with this many.
    #[serde(default = "one")]
    pub sentence_check_depth: usize,
    /// How the model was made (data, command), for people reading the file.
    #[serde(default)]
    pub trained_on: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("ranker model: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("ranker model: {0}")]
    Invalid(String),
}

/// The most sentences the sentence check may compare (each costs an embedding).
pub const MAX_CHECK_SENTENCES: usize = 10;

fn one() -> usize {
    1
}

impl RankerModel {
    pub fn from_json(s: &str) -> Result<Self, ModelError> {
        let m: Self = serde_json::from_str(s)?;
        if m.features != FEATURE_NAMES {
            return Err(ModelError::Invalid(format!(
                "trained on features {:?}, this build computes {:?}",
                m.features, FEATURE_NAMES
            )));
        }
        for (what, v) in [
            ("mean", &m.mean),
            ("scale", &m.scale),
            ("weights", &m.weights),
        ] {
            if v.len() != FEATURES || v.iter().any(|x| !x.is_finite()) {
                return Err(ModelError::Invalid(format!(
                    "{what} must be {FEATURES} finite numbers"
                )));
            }
        }
        if m.scale.iter().any(|&s| s <= 0.0) {
            return Err(ModelError::Invalid("scale must be positive".into()));
        }
        if !(0.0..=1.0).contains(&m.threshold) {
            return Err(ModelError::Invalid("threshold must be within 0..1".into()));
        }
        if !(1..=MAX_CHECK_SENTENCES).contains(&m.sentence_check_depth) {
            return Err(ModelError::Invalid(format!(
                "sentence_check_depth must be within 1..{MAX_CHECK_SENTENCES}"
            )));
        }
        Ok(m)
    }

    /// The model shipped for the default embedding model, all-MiniLM-L6-v2 (`ranker.json`).
    pub fn builtin() -> &'static RankerModel {
        static MODEL: OnceLock<RankerModel> = OnceLock::new();
        MODEL.get_or_init(|| {
            Self::from_json(include_str!("ranker.json")).expect("the embedded ranker.json is valid")
        })
    }

    /// The model shipped for an embedding model (by its model id), if any. The dense features
    /// and the calibration are in that model's cosine scale, so another model's ranker would
    /// misjudge relevance ("not found" would rarely fire for a model whose cosines run high).
    pub fn for_model(model_id: &str) -> Option<&'static RankerModel> {
        let known = crate::embed::KNOWN_MODELS
            .iter()
            .find(|m| m.model_id == model_id)?;
        match known.name {
            "all-MiniLM-L6-v2" => Some(Self::builtin()),
            "multilingual-e5-small" => {
                static MODEL: OnceLock<RankerModel> = OnceLock::new();
                Some(MODEL.get_or_init(|| {
                    Self::from_json(include_str!("ranker-multilingual-e5-small.json"))
                        .expect("the embedded ranker-multilingual-e5-small.json is valid")
                }))
            }
            _ => None,
        }
    }

    /// The ranking score (higher is better).
    pub fn score(&self, f: &[f32; FEATURES]) -> f32 {
        f.iter()
            .zip(&self.mean)
            .zip(&self.scale)
            .zip(&self.weights)
            .map(|(((x, m), s), w)| w * (x - m) / s)
            .sum()
    }

    /// The calibrated relevance of a score, in 0..1.
    pub fn relevance(&self, score: f32) -> f32 {
        sigmoid(self.calibration.0 * score + self.calibration.1)
    }
}

pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        let mut out = Vec::new();
        words_at(s, &mut |_, _, w| out.push(w.to_string()));
        out
    }

    fn words_at(s: &str, sink: &mut dyn FnMut(usize, usize, &str)) {
        let mut start = None;
        let mut position = 0;
        for (i, c) in s.char_indices().chain([(s.len(), ' ')]) {
            match (c.is_alphanumeric(), start) {
                (true, None) => start = Some(i),
                (false, Some(b)) => {
                    sink(position, b, &s[b..i].to_lowercase());
                    position += 1;
                    start = None;
                }
                _ => {}
            }
        }
    }

    fn q(s: &str) -> QueryTerms {
        QueryTerms::new(words(s), |t| if t == "the" { 0.1 } else { 1.0 })
    }

    #[test]
    fn builtin_model_loads_and_matches_the_features() {
        let m = RankerModel::builtin();
        assert_eq!(m.features, FEATURE_NAMES);
        assert!(m.threshold > 0.0 && m.threshold < 1.0);
    }

    #[test]
    fn each_known_embedding_model_has_its_own_ranker() {
        for known in crate::embed::KNOWN_MODELS {
            let m = RankerModel::for_model(known.model_id)
                .unwrap_or_else(|| panic!("no ranker shipped for {}", known.name));
            assert_eq!(m.features, FEATURE_NAMES);
            assert!(m.threshold > 0.0 && m.threshold < 1.0);
        }
        let minilm = RankerModel::for_model("sentence-transformers/all-MiniLM-L6-v2").unwrap();
        let e5 = RankerModel::for_model("intfloat/multilingual-e5-small").unwrap();
        assert!(std::ptr::eq(minilm, RankerModel::builtin()));
        assert_ne!(minilm, e5, "each model's cosines need their own weights");
        assert!(RankerModel::for_model("test-bag-of-words").is_none());
    }

    #[test]
    fn a_model_for_other_features_is_refused() {
        let mut m = RankerModel::builtin().clone();
        m.features[0] = "something_else".into();
        let err = RankerModel::from_json(&serde_json::to_string(&m).unwrap()).unwrap_err();
        assert!(err.to_string().contains("trained on features"), "{err}");
        let mut m = RankerModel::builtin().clone();
        m.scale[3] = 0.0;
        assert!(RankerModel::from_json(&serde_json::to_string(&m).unwrap()).is_err());
    }

    #[test]
    fn coverage_counts_each_term_once_by_weight() {
        let q = q("the parking permit");
        assert_eq!(q.coverage(&words("parking parking")), 1.0 / 2.1);
        assert!((q.coverage(&words("the permit for parking")) - 1.0).abs() < 1e-6);
        assert_eq!(q.coverage(&[]), 0.0);
    }

    #[test]
    fn proximity_rewards_query_terms_close_together() {
        let q = q("parking permit office");
        let near = q.proximity(&q.hits("apply for a parking permit at the office", &mut words_at));
        let far = q.proximity(&q.hits(
            "parking is on level two and the lift and the stairs and the doors permit access office",
            &mut words_at,
        ));
        assert!(near > far, "{near} vs {far}");
        assert_eq!(near, 1.0);
    }

    #[test]
    fn features_read_the_best_sentence_title_and_ranks() {
        let q = q("parking permit");
        let text = "Lunch is at noon. Parking permits are issued by facilities. The parking permit is free.";
        let headings = vec!["Parking".to_string()];
        let cands = [
            (
                Passage {
                    text,
                    title: "Facilities",
                    headings: &headings,
                    ordinal: 0,
                },
                Signals {
                    cosine: 0.6,
                    bm25: Some(8.0),
                    fused: 2.0,
                    bm25_rank: Some(1),
                    dense_rank: None,
                },
            ),
            (
                Passage {
                    text: "Nothing to see here.",
                    title: "Other",
                    headings: &[],
                    ordinal: 3,
                },
                Signals {
                    cosine: 0.1,
                    bm25: Some(2.0),
                    fused: 0.5,
                    bm25_rank: Some(7),
                    dense_rank: Some(2),
                },
            ),
        ];
        let best = Best::of(cands.iter().map(|(_, s)| s));
        let f = features(&q, &cands, best, &mut words_at);
        assert_eq!(f[0][0], 0.6);
        assert_eq!(f[0][1], 1.0);
        assert_eq!(f[1][1], 0.25);
        assert_eq!(f[1][2], 0.25);
        assert_eq!(f[0][4], 0.0);
        assert!(f[0][3] > f[1][3]);
        assert_eq!(f[0][6], 1.0, "the last sentence holds both terms");
        assert_eq!(f[0][7], 0.5, "the heading holds one");
        assert_eq!(f[0][9], 1.0);
        assert_eq!(f[1][9], 0.0);
        assert_eq!(f[1][5], 0.0);
        assert_eq!(ordinal("s:doc#12"), 12);
        assert_eq!(sentence_starts("One. Two!\nThree 3.5 x"), vec![0, 4, 10]);
    }

    #[test]
    fn relevance_is_monotonic_in_the_score() {
        let m = RankerModel::builtin();
        assert!(m.calibration.0 > 0.0);
        assert!(m.relevance(2.0) > m.relevance(0.0));
        assert!(m.relevance(0.0) > m.relevance(-2.0));
    }
}
