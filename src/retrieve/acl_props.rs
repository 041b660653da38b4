//! Property test: over random ACLs (allow/deny of users, groups, everyone), random nested group
//! graphs (cycles included) and random identities with aliases, every Search hit (BM25, dense,
//! hybrid) and every Ask citation is readable by the caller, and the scope never starves a leg:
//! with enough depth, the dense leg returns exactly the readable documents.
//!
//! Attribute filters combine with the scope and never widen it: with a random filter (equals,
//! one-of, numeric range, prefix, and/or/not), the dense leg returns exactly the readable
//! documents the filter matches, and no leg returns anything else.
//!
//! The expected readability is computed here independently of `IdentityStore` and `Acl`.
//! Half the cases run with hybrid feedback on (`dense_feedback`: a second, moved dense search).
//! The second ranking stage is on (the default) in every hybrid search, once with two passages
//! per document.
//! `PROPTEST_CASES` raises the number of cases for a soak run (each case checks 12 identities ×
//! 3 queries × 3 modes plus an answer).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use docent_connector_api::{Acl, DocKey, Principal};
use proptest::prelude::*;

use super::{Hit, Limit, Mode, RetrievalConfig, Retriever};
use crate::acl::authorize;
use crate::answer::{self, AnswerConfig};
use crate::embed::Embedder;
use crate::embed::test_embedder::BagOfWords;
use crate::guardrail;
use crate::identity::{GroupSpec, IdentitySpec, IdentityStore, token_hash};
use crate::index::{AttrFilter, Backend, ChunkRecord, DocumentRecord, Index, SearchFilter};

const USERS: usize = 6;
const GROUPS: usize = 5;
const WORDS: &[&str] = &[
    "budget", "salary", "vpn", "parking", "holiday", "laptop", "review", "travel",
];

#[derive(Debug, Clone)]
struct DocSpec {
    words: Vec<usize>,
    allow: Vec<u8>,
    deny: Vec<u8>,
    /// Attributes: team (index into TEAMS; none when out of range) and a numeric level.
    team: usize,
    level: u8,
}

const TEAMS: &[&str] = &["red", "green", "blue", "grey"];

fn attributes(d: &DocSpec) -> BTreeMap<String, String> {
    let mut a = BTreeMap::from([("level".to_string(), d.level.to_string())]);
    if let Some(t) = TEAMS.get(d.team) {
        a.insert("team".into(), t.to_string());
    }
    a
}

fn filter_strategy() -> impl Strategy<Value = AttrFilter> {
    let team = prop::sample::select(vec!["red", "green", "blue", "grey", "pink"]);
    let leaf = prop_oneof![
        team.clone().prop_map(|t| AttrFilter::Equals {
            key: "team".into(),
            value: t.into()
        }),
        prop::collection::vec(team, 0..3).prop_map(|ts| AttrFilter::In {
            key: "team".into(),
            values: ts.into_iter().map(String::from).collect()
        }),
        (prop::option::of(0u8..13), prop::option::of(0u8..13)).prop_map(|(lo, hi)| {
            AttrFilter::Range {
                key: "level".into(),
                gte: lo.map(|x| x.to_string()),
                lte: hi.map(|x| x.to_string()),
            }
        }),
        prop::sample::select(vec!["", "g", "gr", "r", "x"]).prop_map(|p| AttrFilter::Prefix {
            key: "team".into(),
            prefix: p.into()
        }),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(AttrFilter::And),
            prop::collection::vec(inner.clone(), 0..3).prop_map(AttrFilter::Or),
            inner.prop_map(|f| AttrFilter::Not(Box::new(f))),
        ]
    })
}

/// Principal codes: 0..USERS users (by alias or id), then groups, then everyone.
fn principal(code: u8) -> Principal {
    let c = code as usize;
    if c < USERS {
        // Even users are named by id, odd users by their email alias.
        if c.is_multiple_of(2) {
            Principal::user(format!("u{c}"))
        } else {
            Principal::user(format!("u{c}@corp.example"))
        }
    } else if c < USERS + GROUPS {
        Principal::group(format!("g{}", c - USERS))
    } else {
        Principal::Everyone
    }
}

/// Deny codes from here on name principal `code - SHOUT` spelled in capitals.
const SHOUT: u8 = (USERS + GROUPS + 1) as u8;

/// A deny entry: [`principal`], or for codes past [`SHOUT`] the same one in capitals.
fn deny_principal(code: u8) -> Principal {
    match principal(code % SHOUT) {
        _ if code < SHOUT => principal(code),
        Principal::User(u) => Principal::User(u.to_uppercase()),
        Principal::Group(g) => Principal::Group(g.to_uppercase()),
        Principal::Everyone => Principal::Everyone,
    }
}

fn doc_strategy() -> impl Strategy<Value = DocSpec> {
    let code = 0u8..SHOUT;
    (
        prop::collection::vec(0..WORDS.len(), 1..6),
        prop::collection::vec(code, 0..4),
        prop::collection::vec(0u8..2 * SHOUT, 0..2),
        0..TEAMS.len() + 1,
        0u8..12,
    )
        .prop_map(|(words, allow, deny, team, level)| DocSpec {
            words,
            allow,
            deny,
            team,
            level,
        })
}

/// Independent oracle: groups reachable from `direct` through `parents` (fixed point).
fn reachable(direct: &[usize], parents: &[Vec<usize>]) -> BTreeSet<usize> {
    let mut set: BTreeSet<usize> = direct.iter().copied().collect();
    loop {
        let next: BTreeSet<usize> = set
            .iter()
            .flat_map(|g| parents[*g].iter().copied())
            .chain(set.iter().copied())
            .collect();
        if next == set {
            return set;
        }
        set = next;
    }
}

fn oracle_can_read(user: usize, groups: &BTreeSet<usize>, doc: &DocSpec) -> bool {
    let holds = |code: u8| {
        let c = code as usize;
        if c < USERS {
            c == user
        } else if c < USERS + GROUPS {
            groups.contains(&(c - USERS))
        } else {
            true
        }
    };
    // A deny entry spelled in capitals names the same principal (deny matches any case).
    !doc.deny.iter().any(|&c| holds(c % SHOUT)) && doc.allow.iter().any(|&c| holds(c))
}

/// One chunk per document, two when it has three words or more (the second stage then picks
/// among a document's passages, and may return both).
fn chunks(i: usize, text: &str, vector: Vec<f32>, embedder: &dyn Embedder) -> Vec<ChunkRecord> {
    let mut out = vec![ChunkRecord {
        page: None,
        ord: 0,
        span: 0..text.len(),
        heading_path: vec![],
        text: text.to_string(),
        hash: format!("{i}"),
        vector,
    }];
    let words: Vec<&str> = text.split(' ').collect();
    if words.len() >= 3 {
        let second = words[words.len() / 2..].join(" ");
        out.push(ChunkRecord {
            page: None,
            ord: 1,
            span: 0..second.len(),
            heading_path: vec!["part two".into()],
            vector: embedder.embed_query(&second).unwrap(),
            text: second,
            hash: format!("{i}b"),
        });
    }
    out
}

/// One case on the embedded backend.
fn check_case(
    docs: &[DocSpec],
    parents: &[Vec<usize>],
    memberships: &[Vec<usize>],
    filter: &AttrFilter,
    dense_feedback: bool,
) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let embedder = BagOfWords;
    let index: Arc<dyn Backend> =
        Arc::new(Index::open(dir.path(), embedder.model_id(), embedder.dim()).unwrap());
    check_case_on(index, docs, parents, memberships, filter, dense_feedback)
}

/// One case on `index` (fresh and empty); the checks use only the backend seam.
fn check_case_on(
    index: Arc<dyn Backend>,
    docs: &[DocSpec],
    parents: &[Vec<usize>],
    memberships: &[Vec<usize>],
    filter: &AttrFilter,
    dense_feedback: bool,
) -> Result<(), TestCaseError> {
    let embedder: Arc<dyn Embedder> = Arc::new(BagOfWords);
    for (i, d) in docs.iter().enumerate() {
        let acl = Acl::new(
            d.allow.iter().map(|&c| principal(c)),
            d.deny.iter().map(|&c| deny_principal(c)),
        );
        put(&*index, i, &format!("d{i}"), &d.words, attributes(d), acl);
    }
    index.commit(BTreeMap::new()).unwrap();

    let mut identities: Vec<IdentitySpec> = (0..USERS)
        .map(|u| IdentitySpec {
            id: format!("u{u}"),
            aliases: vec![format!("u{u}@corp.example")],
            groups: memberships[u].iter().map(|g| format!("g{g}")).collect(),
            token_sha256: Some(hex::encode(token_hash(&format!("tok{u}")))),
            ..Default::default()
        })
        .collect();
    // A service identity in every group, acting for odd users: its own access must not leak
    // into theirs.
    identities.push(IdentitySpec {
        id: "bridge".into(),
        groups: (0..GROUPS).map(|g| format!("g{g}")).collect(),
        token_sha256: Some(hex::encode(token_hash("tok-bridge"))),
        act_as: true,
        ..Default::default()
    });
    let groups: Vec<GroupSpec> = (0..GROUPS)
        .map(|g| GroupSpec {
            id: format!("g{g}"),
            member_of: parents[g].iter().map(|p| format!("g{p}")).collect(),
            reported: false,
            from_file: false,
        })
        .collect();
    let store = IdentityStore::new(identities, groups);
    // Half the cases with hybrid feedback on (its second dense search must keep the scope too).
    let config = RetrievalConfig {
        dense_feedback: if dense_feedback { 0.5 } else { 0.0 },
        ..RetrievalConfig::default()
    };
    // The shipped second stage runs too (the test embedder has none of its own).
    let retriever = Retriever::new(index.clone(), embedder.clone(), config)
        .with_ranker(super::rerank::RankerModel::builtin().clone());
    let cfg = AnswerConfig {
        min_relevance: 0.0,
        support_ratio: 0.0,
        other_document_ratio: 0.0,
        min_similarity: 0.0,
        max_sentences: 5,
        max_passages: 10,
        passages_per_document: 2,
        min_sentence_similarity: None,
        check_sentences: 1,
    };

    for (u, direct) in memberships.iter().enumerate() {
        let caller = if u % 2 == 1 {
            let bridge = store
                .authenticate_token("tok-bridge")
                .expect("bridge token");
            store
                .act_as(&bridge, &format!("u{u}@corp.example"))
                .expect("bridge may act as users")
        } else {
            store
                .authenticate_token(&format!("tok{u}"))
                .expect("configured token")
        };
        let scope = authorize(&caller).expect("test callers may query");
        let groups = reachable(direct, parents);
        let readable: BTreeSet<String> = docs
            .iter()
            .enumerate()
            .filter(|(_, d)| oracle_can_read(u, &groups, d))
            .map(|(i, _)| format!("t:d{i}"))
            .collect();
        // Filtered: exactly the readable documents the filter matches (dense), a subset of them
        // (BM25, hybrid).
        let filtered: BTreeSet<String> = docs
            .iter()
            .enumerate()
            .filter(|(_, d)| oracle_can_read(u, &groups, d) && filter.matches(&attributes(d)))
            .map(|(i, _)| format!("t:d{i}"))
            .collect();
        let sf = SearchFilter {
            attributes: Some(filter.clone()),
            ..Default::default()
        };
        for mode in [Mode::Dense, Mode::Bm25, Mode::Hybrid] {
            let hits = retriever
                .search(&scope, "budget salary vpn parking", mode, &sf, 100)
                .unwrap();
            let got: BTreeSet<String> = hits.iter().map(|h| h.chunk.doc_key.clone()).collect();
            prop_assert!(
                got.is_subset(&filtered),
                "user u{u}, {mode:?}, {filter:?}: {got:?} not within {filtered:?}"
            );
            if mode == Mode::Dense {
                prop_assert_eq!(&got, &filtered, "dense with {:?}", filter);
            }
        }
        // The first hit of a document the caller may not read, if any.
        let unreadable = |hits: &[Hit]| {
            hits.iter()
                .map(|h| h.chunk.doc_key.clone())
                .find(|k| !readable.contains(k))
        };
        for q in [
            "budget salary",
            "vpn laptop travel",
            "holiday review parking budget",
        ] {
            for mode in [Mode::Bm25, Mode::Dense, Mode::Hybrid] {
                let hits = retriever
                    .search(&scope, q, mode, &SearchFilter::default(), 100)
                    .unwrap();
                prop_assert_eq!(unreadable(&hits), None, "user u{}, {:?}", u, mode);
                if mode == Mode::Bm25 {
                    // A page shallower than the candidates: BM25 alone asks the chunk leg for
                    // that page's documents only (`bm25_passages`).
                    let page = retriever
                        .search(&scope, q, mode, &SearchFilter::default(), 3)
                        .unwrap();
                    prop_assert_eq!(unreadable(&page), None, "user u{}, a page of BM25", u);
                }
                if mode == Mode::Dense {
                    let got: BTreeSet<String> =
                        hits.iter().map(|h| h.chunk.doc_key.clone()).collect();
                    prop_assert_eq!(
                        &got,
                        &readable,
                        "dense leg must see exactly the readable docs"
                    );
                }
                if mode == Mode::Hybrid {
                    // The second stage with several passages per document stays in scope too.
                    let several = retriever
                        .search(
                            &scope,
                            q,
                            mode,
                            &SearchFilter::default(),
                            Limit {
                                hits: 100,
                                per_document: 2,
                            },
                        )
                        .unwrap();
                    prop_assert_eq!(
                        unreadable(&several),
                        None,
                        "user u{}, two passages per document",
                        u
                    );
                    let terms = retriever.term_weights(&scope, q);
                    let analyze = |s: &str| retriever.analyze(s);
                    let a = answer::extractive(q, &hits, &terms, &analyze, &cfg);
                    let a = guardrail::recheck_answer(&*index, &scope, a);
                    for c in &a.citations {
                        prop_assert!(readable.contains(&c.document_key));
                    }
                }
            }
        }
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn every_result_is_readable_by_the_caller(
        docs in prop::collection::vec(doc_strategy(), 1..30),
        parents in prop::collection::vec(prop::collection::vec(0..GROUPS, 0..2), GROUPS),
        memberships in prop::collection::vec(prop::collection::vec(0..GROUPS, 0..3), USERS),
        filter in filter_strategy(),
        dense_feedback in any::<bool>(),
    ) {
        check_case(&docs, &parents, &memberships, &filter, dense_feedback)?;
    }
}

proptest! {
    // The same property on Milvus (Lite, started for the test binary): fewer cases, as each
    // search is a request to a Python server.
    #![proptest_config(ProptestConfig { cases: cases() / 3, ..ProptestConfig::default() })]

    #[test]
    fn every_result_is_readable_by_the_caller_on_milvus(
        docs in prop::collection::vec(doc_strategy(), 1..30),
        parents in prop::collection::vec(prop::collection::vec(0..GROUPS, 0..2), GROUPS),
        memberships in prop::collection::vec(prop::collection::vec(0..GROUPS, 0..3), USERS),
        filter in filter_strategy(),
        dense_feedback in any::<bool>(),
    ) {
        let index = crate::index::milvus::test_backend(BagOfWords.model_id(), BagOfWords.dim());
        check_case_on(index, &docs, &parents, &memberships, &filter, dense_feedback)?;
    }
}

/// Builds an index of `docs` (`(key, words, allow)`), one or two chunks each as above.
fn index_of(docs: &[(String, Vec<usize>, &str)]) -> (tempfile::TempDir, Arc<dyn Backend>) {
    let dir = tempfile::tempdir().unwrap();
    let embedder = BagOfWords;
    let index: Arc<dyn Backend> =
        Arc::new(Index::open(dir.path(), embedder.model_id(), embedder.dim()).unwrap());
    for (i, (key, words, allow)) in docs.iter().enumerate() {
        let acl = Acl::new([allow.parse::<Principal>().unwrap()], []);
        put(&*index, i, key, words, BTreeMap::new(), acl);
    }
    index.commit(BTreeMap::new()).unwrap();
    (dir, index)
}

/// Upserts document `key` (the `i`-th) holding `words`, in one or two chunks ([`chunks`]).
fn put(
    index: &dyn Backend,
    i: usize,
    key: &str,
    words: &[usize],
    attributes: BTreeMap<String, String>,
    acl: Acl,
) {
    let embedder = BagOfWords;
    let text: String = words
        .iter()
        .map(|&w| WORDS[w])
        .collect::<Vec<_>>()
        .join(" ");
    let vector = embedder.embed_query(&text).unwrap();
    index
        .upsert(DocumentRecord {
            key: DocKey::new("t", key),
            uri: format!("file:///{key}"),
            title: format!("doc {key}"),
            version: "1".into(),
            modified_at: None,
            attributes,
            acl,
            content_hash: format!("{i}"),
            chunks: chunks(i, &text, vector, &embedder),
        })
        .unwrap();
}

/// What a caller sees of a search: per passage, its score and relevance.
fn seen(
    r: &Retriever,
    scope: &crate::acl::AclScope,
    q: &str,
    mode: Mode,
) -> BTreeMap<String, (f32, Option<f32>)> {
    let limit = Limit {
        hits: 100,
        per_document: 2,
    };
    r.search(scope, q, mode, &SearchFilter::default(), limit)
        .unwrap()
        .into_iter()
        .map(|h| (h.chunk.chunk_id, (h.score, h.relevance)))
        .collect()
}

/// Every number a caller sees (BM25, dense and hybrid scores, the second stage's relevance, the
/// answerer's term weights) is the same whether or not the index also holds documents the
/// caller cannot read, whatever words those hold: ranking statistics are the caller's own.
fn check_unreadable_documents_change_no_score(
    readable: &[Vec<usize>],
    hidden: &[Vec<usize>],
    queries: &[Vec<usize>],
) -> Result<(), TestCaseError> {
    let mine: Vec<(String, Vec<usize>, &str)> = readable
        .iter()
        .enumerate()
        .map(|(i, w)| (format!("r{i}"), w.clone(), "group:all"))
        .collect();
    // The hidden documents interleaved with the caller's.
    let mut both = Vec::new();
    for i in 0..mine.len().max(hidden.len()) {
        if let Some(d) = hidden.get(i) {
            both.push((format!("h{i}"), d.clone(), "group:secret"));
        }
        if let Some(d) = mine.get(i) {
            both.push(d.clone());
        }
    }
    let (_a, alone) = index_of(&mine);
    let (_b, shared) = index_of(&both);
    let retriever = |index: Arc<dyn Backend>| {
        Retriever::new(index, Arc::new(BagOfWords), RetrievalConfig::default())
            .with_ranker(super::rerank::RankerModel::builtin().clone())
    };
    let (alone, shared) = (retriever(alone), retriever(shared));
    let scope = crate::acl::AclScope::for_tests("u", &["group:all"]);
    let close = |a: f32, b: f32| (a - b).abs() <= 1e-5 * a.abs().max(b.abs()).max(1.0);
    for q in queries {
        let q: String = q.iter().map(|&w| WORDS[w]).collect::<Vec<_>>().join(" ");
        for mode in [Mode::Bm25, Mode::Dense, Mode::Hybrid] {
            let (a, b) = (
                seen(&alone, &scope, &q, mode),
                seen(&shared, &scope, &q, mode),
            );
            prop_assert_eq!(
                a.keys().collect::<Vec<_>>(),
                b.keys().collect::<Vec<_>>(),
                "{:?} {:?}",
                mode,
                &q
            );
            for (k, (sa, ra)) in &a {
                let (sb, rb) = b[k];
                prop_assert!(
                    close(*sa, sb),
                    "{mode:?} {q:?} {k}: score {sa} alone, {sb} beside hidden documents"
                );
                prop_assert!(
                    ra.zip(rb).is_none_or(|(x, y)| close(x, y)) && ra.is_some() == rb.is_some(),
                    "{mode:?} {q:?} {k}: relevance {ra:?} alone, {rb:?} beside hidden documents"
                );
            }
        }
        let (ta, tb) = (
            alone.term_weights(&scope, &q),
            shared.term_weights(&scope, &q),
        );
        prop_assert_eq!(ta, tb, "term weights for {:?}", &q);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn documents_the_caller_cannot_read_change_none_of_their_scores(
        readable in prop::collection::vec(prop::collection::vec(0..WORDS.len(), 1..6), 1..12),
        hidden in prop::collection::vec(prop::collection::vec(0..WORDS.len(), 1..8), 1..20),
        queries in prop::collection::vec(prop::collection::vec(0..WORDS.len(), 1..4), 1..4),
    ) {
        check_unreadable_documents_change_no_score(&readable, &hidden, &queries)?;
    }
}
