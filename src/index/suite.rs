//! The conformance suite every index [`Backend`] passes (issue 14): writes, commits with
//! checkpoints, deletes, and the scoped retrieval legs (nothing outside the scope or the
//! filter; the dense leg exactly readable ∩ matching). The embedded backend runs it in its
//! unit tests; another backend runs it against its real engine. The randomized ACL property
//! test (`retrieve::acl_props`) takes the backend the same way.
//!
//! Each check gets a fresh, empty backend from `open` and panics with what broke.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use docent_connector_api::{Acl, DocKey, Principal};

use super::{AttrFilter, Backend, ChunkRecord, DocumentRecord, SearchFilter};
use crate::acl::AclScope;

/// Opens a fresh, empty backend of dimension [`DIM`].
pub type Open<'a> = &'a dyn Fn() -> Arc<dyn Backend>;

pub const DIM: usize = 8;

/// Runs every check.
pub fn run_all(open: Open<'_>) {
    upserts_are_visible_after_commit_only(open());
    a_document_is_replaced_not_doubled(open());
    deletes_remove_every_chunk_of_a_document(open());
    checkpoints_commit_with_the_data(open());
    rollback_drops_uncommitted_writes(open());
    both_legs_stay_inside_the_scope(open());
    the_dense_leg_returns_exactly_the_readable_matching_chunks(open());
    filters_only_narrow(open());
}

fn vector(seed: usize) -> Vec<f32> {
    let v: Vec<f32> = (0..DIM)
        .map(|i| {
            (((seed * 31 + i * 17) % 23) as f32 - 11.0) / 11.0
                + if i == seed % DIM { 2.0 } else { 0.0 }
        })
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

/// Document `i` of source `s` with `chunks` chunks, readable by `allow` minus `deny`.
pub fn doc(s: &str, i: usize, chunks: usize, allow: &[&str], deny: &[&str]) -> DocumentRecord {
    let p = |x: &&str| x.parse::<Principal>().expect("test principal");
    DocumentRecord {
        key: DocKey::new(s, format!("d{i}")),
        uri: format!("file:///{s}/d{i}"),
        title: format!("document {i}"),
        version: "1".into(),
        modified_at: None,
        attributes: BTreeMap::from([
            (
                "team".to_string(),
                if i.is_multiple_of(2) { "red" } else { "blue" }.to_string(),
            ),
            ("year".to_string(), (2020 + i % 5).to_string()),
        ]),
        acl: Acl::new(allow.iter().map(p), deny.iter().map(p)),
        content_hash: format!("h{i}"),
        chunks: (0..chunks)
            .map(|c| {
                let text = format!("budget report {i} part {c} salary vpn");
                ChunkRecord {
                    ord: c as u32,
                    span: 0..text.len(),
                    page: None,
                    heading_path: Vec::new(),
                    hash: format!("{i}-{c}"),
                    vector: vector(i * 7 + c),
                    text,
                }
            })
            .collect(),
    }
}

fn keys(
    b: &dyn Backend,
    scope: &AclScope,
    filter: &SearchFilter,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let snap = b.snapshot();
    let load = |hits: Vec<super::Scored>| -> BTreeSet<String> {
        hits.into_iter()
            .map(|h| snap.chunk(h.addr).expect("a returned chunk loads").doc_key)
            .collect()
    };
    let dense = load(
        snap.dense(scope, filter, &vector(3), 1000)
            .expect("dense leg"),
    );
    let bm25 = load(
        snap.bm25(scope, filter, "budget salary", 1000, (1.0, 1.0))
            .expect("bm25 leg"),
    );
    // The whole-document leg, where the backend has one, admits exactly the documents the
    // chunk leg does under the same scope and filter, once each.
    if let Some(hits) = snap
        .bm25_documents(scope, filter, "budget salary", 1000)
        .expect("document bm25 leg")
    {
        let n = hits.len();
        let documents = load(hits);
        assert_eq!(n, documents.len(), "one hit per document");
        assert_eq!(
            documents, bm25,
            "the document leg matches the chunk leg's documents"
        );
    }
    (dense, bm25)
}

fn everyone() -> AclScope {
    AclScope::for_tests("u", &["group:all"])
}

fn upserts_are_visible_after_commit_only(b: Arc<dyn Backend>) {
    b.upsert(doc("s", 0, 2, &["group:all"], &[])).unwrap();
    let (dense, _) = keys(&*b, &everyone(), &SearchFilter::default());
    assert!(dense.is_empty(), "an uncommitted write is not searchable");
    assert!(b.doc_entry("s:d0").is_none(), "nor in the committed table");
    assert!(b.latest_entry("s:d0").is_some(), "but connectors see it");
    b.commit(BTreeMap::new()).unwrap();
    let (dense, bm25) = keys(&*b, &everyone(), &SearchFilter::default());
    assert_eq!(dense, BTreeSet::from(["s:d0".to_string()]));
    assert_eq!(bm25, dense);
    assert_eq!(b.doc_entry("s:d0").map(|e| e.chunks), Some(2));
    assert_eq!(b.document_count(), 1);
}

fn a_document_is_replaced_not_doubled(b: Arc<dyn Backend>) {
    b.upsert(doc("s", 0, 3, &["group:all"], &[])).unwrap();
    b.commit(BTreeMap::new()).unwrap();
    b.upsert(doc("s", 0, 1, &["group:all"], &[])).unwrap();
    b.upsert(doc("s", 0, 2, &["group:all"], &[])).unwrap();
    b.commit(BTreeMap::new()).unwrap();
    let snap = b.snapshot();
    let hits = snap
        .dense(&everyone(), &SearchFilter::default(), &vector(0), 100)
        .unwrap();
    assert_eq!(hits.len(), 2, "the last version's two chunks, once each");
    assert_eq!(b.stats().chunks, 2);
}

fn deletes_remove_every_chunk_of_a_document(b: Arc<dyn Backend>) {
    for i in 0..3 {
        b.upsert(doc("s", i, 2, &["group:all"], &[])).unwrap();
    }
    b.commit(BTreeMap::new()).unwrap();
    b.delete(&DocKey::new("s", "d1"));
    b.commit(BTreeMap::new()).unwrap();
    let (dense, bm25) = keys(&*b, &everyone(), &SearchFilter::default());
    let want = BTreeSet::from(["s:d0".to_string(), "s:d2".to_string()]);
    assert_eq!(dense, want);
    assert_eq!(bm25, want);
    assert!(b.doc_entry("s:d1").is_none());
    assert_eq!(b.native_ids("s").len(), 2);
}

fn checkpoints_commit_with_the_data(b: Arc<dyn Backend>) {
    b.upsert(doc("s", 0, 1, &["group:all"], &[])).unwrap();
    b.commit(BTreeMap::from([(
        "s".to_string(),
        serde_json::json!({"cursor": 1}),
    )]))
    .unwrap();
    b.upsert(doc("s", 1, 1, &["group:all"], &[])).unwrap();
    b.commit(BTreeMap::from([("t".to_string(), serde_json::json!("x"))]))
        .unwrap();
    let cps = b.checkpoints();
    assert_eq!(
        cps.get("s"),
        Some(&serde_json::json!({"cursor": 1})),
        "merged, not replaced"
    );
    assert_eq!(cps.get("t"), Some(&serde_json::json!("x")));
    assert_eq!(b.document_count(), 2);
}

fn rollback_drops_uncommitted_writes(b: Arc<dyn Backend>) {
    b.upsert(doc("s", 0, 1, &["group:all"], &[])).unwrap();
    b.commit(BTreeMap::new()).unwrap();
    b.upsert(doc("s", 1, 1, &["group:all"], &[])).unwrap();
    b.delete(&DocKey::new("s", "d0"));
    b.rollback().unwrap();
    b.commit(BTreeMap::new()).unwrap();
    let (dense, _) = keys(&*b, &everyone(), &SearchFilter::default());
    assert_eq!(dense, BTreeSet::from(["s:d0".to_string()]));
    assert!(b.latest_entry("s:d1").is_none());
}

/// Six documents: open to all, to one group, to a user, denied to a user, to nobody.
fn acl_world(b: &dyn Backend) {
    b.upsert(doc("s", 0, 1, &["group:all"], &[])).unwrap();
    b.upsert(doc("s", 1, 2, &["group:hr"], &[])).unwrap();
    b.upsert(doc("s", 2, 1, &["user:alice"], &[])).unwrap();
    b.upsert(doc("s", 3, 1, &["group:all"], &["user:bob"]))
        .unwrap();
    b.upsert(doc("s", 4, 1, &[], &[])).unwrap();
    b.upsert(doc("s", 5, 1, &["group:hr"], &["group:contractors"]))
        .unwrap();
    // Deny entries spelled otherwise than the identity: they match whatever the case.
    b.upsert(doc("s", 6, 1, &["group:all"], &["user:Dave"]))
        .unwrap();
    b.upsert(doc("s", 7, 1, &["group:all"], &["user:erin"]))
        .unwrap();
    b.commit(BTreeMap::new()).unwrap();
}

fn scopes() -> Vec<(AclScope, BTreeSet<&'static str>)> {
    vec![
        (
            AclScope::for_tests("alice", &["user:alice", "group:all", "group:hr"]),
            BTreeSet::from(["s:d0", "s:d1", "s:d2", "s:d3", "s:d5", "s:d6", "s:d7"]),
        ),
        (
            AclScope::for_tests("bob", &["user:bob", "group:all"]),
            BTreeSet::from(["s:d0", "s:d6", "s:d7"]),
        ),
        (
            AclScope::for_tests("dave", &["user:dave", "group:all"]),
            BTreeSet::from(["s:d0", "s:d3", "s:d7"]),
        ),
        (
            AclScope::for_tests("ERIN", &["user:ERIN", "group:all"]),
            BTreeSet::from(["s:d0", "s:d3", "s:d6"]),
        ),
        (
            AclScope::for_tests("carol", &["user:carol", "group:hr", "group:contractors"]),
            BTreeSet::from(["s:d1"]),
        ),
        (AclScope::for_tests("nobody", &[]), BTreeSet::new()),
        // An audience: any deny entry excludes the document.
        (
            AclScope::for_tests_audience("audience", &["group:all", "group:hr"]),
            BTreeSet::from(["s:d0", "s:d1"]),
        ),
    ]
}

fn both_legs_stay_inside_the_scope(b: Arc<dyn Backend>) {
    acl_world(&*b);
    for (scope, readable) in scopes() {
        let readable: BTreeSet<String> = readable.iter().map(|s| s.to_string()).collect();
        let (dense, bm25) = keys(&*b, &scope, &SearchFilter::default());
        assert!(
            dense.is_subset(&readable),
            "{}: dense {dense:?}",
            scope.user()
        );
        assert!(bm25.is_subset(&readable), "{}: bm25 {bm25:?}", scope.user());
        assert_eq!(
            bm25,
            readable,
            "{}: every readable doc matches the words",
            scope.user()
        );
    }
}

fn the_dense_leg_returns_exactly_the_readable_matching_chunks(b: Arc<dyn Backend>) {
    acl_world(&*b);
    for (scope, readable) in scopes() {
        let readable: BTreeSet<String> = readable.iter().map(|s| s.to_string()).collect();
        let (dense, _) = keys(&*b, &scope, &SearchFilter::default());
        assert_eq!(dense, readable, "{}", scope.user());
    }
}

fn filters_only_narrow(b: Arc<dyn Backend>) {
    acl_world(&*b);
    let (alice, readable) = scopes().swap_remove(0);
    let red = SearchFilter {
        attributes: Some(AttrFilter::Equals {
            key: "team".into(),
            value: "red".into(),
        }),
        ..Default::default()
    };
    let (dense, bm25) = keys(&*b, &alice, &red);
    let want: BTreeSet<String> = ["s:d0", "s:d2", "s:d6"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert!(want.iter().all(|k| readable.contains(k.as_str())));
    assert_eq!(dense, want, "team = red among alice's documents");
    assert_eq!(bm25, want);
    let prefix = SearchFilter {
        uri_prefix: Some("file:///s/d1".into()),
        ..Default::default()
    };
    let (dense, _) = keys(&*b, &alice, &prefix);
    assert_eq!(dense, BTreeSet::from(["s:d1".to_string()]));
    let other_source = SearchFilter {
        sources: vec!["elsewhere".into()],
        ..Default::default()
    };
    let (dense, bm25) = keys(&*b, &alice, &other_source);
    assert!(
        dense.is_empty() && bm25.is_empty(),
        "a source filter never widens"
    );
}
