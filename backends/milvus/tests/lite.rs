//! The client against a real Milvus Lite (`scripts/milvus.sh`), one server for the whole binary
//! (started on first use on a free port, stopped by a watchdog when this process exits) and one
//! collection per test. Every expectation comes from an oracle written here, independently of
//! the expression builder: the scope rule (deny wins, empty allow or principal list admits
//! nothing) and the main crate's `AttrFilter::matches`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use docent_milvus::{
    AttrFilter, ChunkCollection, ChunkRow, ConnectOptions, Filter, MilvusClient, MilvusError, Scope,
};

const DIM: usize = 8;

fn server_uri() -> &'static str {
    docent_milvus::lite::shared_server(Path::new(env!("CARGO_TARGET_TMPDIR")))
}

async fn collection(name: &str) -> ChunkCollection {
    let client = MilvusClient::connect(server_uri(), Some("root:Milvus".into()))
        .await
        .expect("connect");
    client.ensure_collection(name, DIM).await.expect("ensure")
}

/// SplitMix64: deterministic fixtures without a rand dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const PRINCIPALS: [&str; 10] = [
    "everyone",
    "u:alice",
    "u:bob",
    "u:carol",
    "g:hr",
    "g:eng",
    "g:all",
    r#"u:o"brien"#,
    r"u:back\slash",
    "u:'single'",
];
const WORDS: [&str; 16] = [
    "budget", "payroll", "holiday", "server", "outage", "policy", "travel", "expense", "laptop",
    "vpn", "office", "hiring", "review", "roadmap", "invoice", "backup",
];

fn vector(rng: &mut Rng) -> Vec<f32> {
    let v: Vec<f32> = (0..DIM).map(|_| rng.unit()).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
    v.into_iter().map(|x| x / norm).collect()
}

fn subset(rng: &mut Rng, percent: u64) -> Vec<String> {
    PRINCIPALS
        .iter()
        .filter(|_| rng.chance(percent))
        .map(|p| p.to_string())
        .collect()
}

/// `docs` documents of 1–9 chunks, each document with its own random ACL and attributes.
fn fixture(seed: u64, docs: usize) -> Vec<ChunkRow> {
    let mut rng = Rng(seed);
    let mut rows = Vec::new();
    for d in 0..docs {
        let allow = subset(&mut rng, 25);
        let deny = if rng.chance(30) {
            subset(&mut rng, 15)
        } else {
            Vec::new()
        };
        let source = rng.pick(&["wiki", "fs", "smb"]).to_string();
        let dir = rng.pick(&["a_b", "a_bc", "aXb", "a_b/deep"]);
        let mut attributes = BTreeMap::new();
        if rng.chance(80) {
            attributes.insert("dept".into(), rng.pick(&["hr", "eng", "sales"]).into());
        }
        match rng.below(5) {
            0 => {}
            1 => {
                attributes.insert("year".into(), "n/a".into());
            }
            _ => {
                attributes.insert("year".into(), (2012 + rng.below(14)).to_string());
            }
        }
        attributes.insert(
            "path".into(),
            format!("{}/{d}", rng.pick(&["team", "team0", "tea", "other"])),
        );
        let chunks = 1 + rng.below(9);
        for c in 0..chunks {
            let words: Vec<&str> = (0..3 + rng.below(8)).map(|_| rng.pick(&WORDS)).collect();
            rows.push(ChunkRow {
                chunk_id: format!("d{d}#{c}"),
                doc_key: format!("d{d}"),
                source: source.clone(),
                uri: format!("file:///srv/{dir}/doc{d}.md"),
                title: format!("Document {d}"),
                heading: format!("Section {c}"),
                text: words.join(" "),
                dense: vector(&mut rng),
                allow: allow.clone(),
                deny: deny.clone(),
                attributes: attributes.clone(),
                ordinal: c as i64,
                span: (c as i64 * 100)..(c as i64 * 100 + 99),
                meta: serde_json::json!({ "c": c }),
            });
        }
    }
    rows
}

/// The scope rule, independently: some principal allowed, none denied.
fn admits(scope: &Scope, row: &ChunkRow) -> bool {
    let has = |list: &[String]| list.iter().any(|p| scope.principals.contains(p));
    let audience_ok = !scope.strict_deny || row.deny.is_empty();
    has(&row.allow) && !has(&row.deny) && audience_ok
}

/// The main crate's `AttrFilter::matches` (src/index/mod.rs), copied as the reference.
fn attr_matches(f: &AttrFilter, attrs: &BTreeMap<String, String>) -> bool {
    fn in_range(v: &str, gte: Option<&str>, lte: Option<&str>) -> bool {
        let num = |s: &str| s.trim().parse::<f64>().ok().filter(|x| x.is_finite());
        if let Some(x) = num(v)
            && gte.is_none_or(|b| num(b).is_some())
            && lte.is_none_or(|b| num(b).is_some())
        {
            return gte.is_none_or(|b| x >= num(b).unwrap_or(f64::NEG_INFINITY))
                && lte.is_none_or(|b| x <= num(b).unwrap_or(f64::INFINITY));
        }
        gte.is_none_or(|b| v >= b) && lte.is_none_or(|b| v <= b)
    }
    match f {
        AttrFilter::Equals { key, value } => attrs.get(key) == Some(value),
        AttrFilter::In { key, values } => attrs.get(key).is_some_and(|v| values.contains(v)),
        AttrFilter::Range { key, gte, lte } => attrs
            .get(key)
            .is_some_and(|v| in_range(v, gte.as_deref(), lte.as_deref())),
        AttrFilter::Prefix { key, prefix } => attrs.get(key).is_some_and(|v| v.starts_with(prefix)),
        AttrFilter::And(fs) => fs.iter().all(|f| attr_matches(f, attrs)),
        AttrFilter::Or(fs) => fs.iter().any(|f| attr_matches(f, attrs)),
        AttrFilter::Not(f) => !attr_matches(f, attrs),
    }
}

fn keeps(filter: &Filter, row: &ChunkRow) -> bool {
    (filter.sources.is_empty() || filter.sources.contains(&row.source))
        && filter
            .uri_prefix
            .as_ref()
            .is_none_or(|p| row.uri.starts_with(p.as_str()))
        && filter
            .attributes
            .as_ref()
            .is_none_or(|a| attr_matches(a, &row.attributes))
}

fn ids<'a>(rows: impl IntoIterator<Item = &'a ChunkRow>) -> BTreeSet<String> {
    rows.into_iter().map(|r| r.chunk_id.clone()).collect()
}

fn eq(key: &str, value: &str) -> AttrFilter {
    AttrFilter::Equals {
        key: key.into(),
        value: value.into(),
    }
}

fn filters() -> Vec<Filter> {
    let attrs = |a: AttrFilter| Filter {
        attributes: Some(a),
        ..Filter::default()
    };
    let range = |gte: Option<&str>, lte: Option<&str>| AttrFilter::Range {
        key: "year".into(),
        gte: gte.map(Into::into),
        lte: lte.map(Into::into),
    };
    vec![
        Filter {
            sources: vec!["wiki".into(), "smb".into()],
            ..Filter::default()
        },
        Filter {
            uri_prefix: Some("file:///srv/a_b/".into()),
            ..Filter::default()
        },
        attrs(eq("dept", "hr")),
        attrs(AttrFilter::In {
            key: "dept".into(),
            values: vec!["hr".into(), "sales".into()],
        }),
        attrs(range(Some("2015"), Some("2020"))),
        attrs(range(Some("9"), None)),
        attrs(range(Some("2020-01"), None)),
        attrs(AttrFilter::Prefix {
            key: "path".into(),
            prefix: "team/".into(),
        }),
        attrs(AttrFilter::Not(Box::new(eq("dept", "hr")))),
        attrs(AttrFilter::Or(vec![
            eq("dept", "eng"),
            AttrFilter::And(vec![
                range(None, Some("2016")),
                AttrFilter::Not(Box::new(eq("dept", "sales"))),
            ]),
        ])),
        Filter {
            sources: vec!["fs".into()],
            uri_prefix: Some("file:///srv/a_".into()),
            attributes: Some(AttrFilter::Not(Box::new(AttrFilter::In {
                key: "year".into(),
                values: vec![],
            }))),
        },
    ]
}

fn p50(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_and_filters_agree_with_the_oracle() {
    let coll = collection("scope_filters").await;
    let rows = fixture(14, 60);
    assert!((200..=400).contains(&rows.len()), "{} rows", rows.len());
    let t = Instant::now();
    coll.upsert(&rows).await.expect("upsert");
    coll.flush().await.expect("flush");
    eprintln!(
        "upsert + flush of {} rows: {} ms",
        rows.len(),
        t.elapsed().as_millis()
    );
    let k = rows.len() + 10;
    let mut rng = Rng(7);
    let mut scopes: Vec<Scope> = (0..6)
        .map(|_| {
            let n = 1 + rng.below(3);
            Scope::new((0..n).map(|_| rng.pick(&PRINCIPALS)))
        })
        .collect();
    scopes.push(Scope::new(["everyone"]));
    scopes.push(Scope::new(["u:nobody"]));
    scopes.push(Scope {
        principals: vec!["g:hr".into(), "u:alice".into()],
        strict_deny: true,
        ..Scope::default()
    });
    let (mut dense_times, mut bm25_times) = (Vec::new(), Vec::new());
    for scope in &scopes {
        let admitted = ids(rows.iter().filter(|r| admits(scope, r)));
        let t = Instant::now();
        let hits = coll
            .dense_search(&vector(&mut rng), scope, None, k)
            .await
            .expect("dense search");
        dense_times.push(t.elapsed());
        let got: BTreeSet<String> = hits.iter().map(|h| h.chunk_id.clone()).collect();
        assert_eq!(got, admitted, "dense search under {scope:?}");
        assert_eq!(got.len(), hits.len(), "duplicate hits");
        for h in &hits {
            assert_eq!(h.chunk_id.split('#').next(), Some(h.doc_key.as_str()));
        }
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));

        let query = [rng.pick(&WORDS), rng.pick(&WORDS)];
        let t = Instant::now();
        let hits = coll
            .bm25_search(&query.join(" "), scope, None, k)
            .await
            .expect("bm25 search");
        bm25_times.push(t.elapsed());
        let matching = ids(rows
            .iter()
            .filter(|r| admits(scope, r) && r.text.split(' ').any(|w| query.contains(&w))));
        let got: BTreeSet<String> = hits.iter().map(|h| h.chunk_id.clone()).collect();
        assert!(got.is_subset(&admitted), "bm25 outside the scope {scope:?}");
        assert_eq!(got, matching, "bm25 {query:?} under {scope:?}");
        assert!(hits.iter().all(|h| h.score > 0.0), "bm25 scores positive");
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));

        for filter in filters() {
            let want = ids(rows
                .iter()
                .filter(|r| admits(scope, r) && keeps(&filter, r)));
            let hits = coll
                .dense_search(&vector(&mut rng), scope, Some(&filter), k)
                .await
                .expect("filtered dense search");
            let got: BTreeSet<String> = hits.iter().map(|h| h.chunk_id.clone()).collect();
            assert!(got.is_subset(&admitted), "a filter widened {filter:?}");
            assert_eq!(got, want, "dense under {scope:?} with {filter:?}");
        }
    }
    // Every filter selects something under the widest scope, so none passes by being empty.
    let everyone = Scope::new(PRINCIPALS);
    for filter in filters() {
        let all = ids(rows.iter().filter(|r| admits(&everyone, r)));
        let want = ids(rows
            .iter()
            .filter(|r| admits(&everyone, r) && keeps(&filter, r)));
        assert!(
            !want.is_empty() && want.len() < all.len(),
            "filter {filter:?} keeps {} of {}",
            want.len(),
            all.len()
        );
        let got: BTreeSet<String> = coll
            .bm25_search(&WORDS.join(" "), &everyone, Some(&filter), k)
            .await
            .expect("filtered bm25")
            .into_iter()
            .map(|h| h.chunk_id)
            .collect();
        assert_eq!(got, want, "bm25 with {filter:?}");
    }
    eprintln!(
        "Lite, {} rows, ACL-filtered search p50: dense {} ms, bm25 {} ms",
        rows.len(),
        p50(dense_times).as_millis(),
        p50(bm25_times).as_millis()
    );
}

#[tokio::test]
async fn empty_scope_admits_nothing() {
    let coll = collection("empty_scope").await;
    coll.upsert(&fixture(3, 5)).await.expect("upsert");
    let v = vec![0.5; DIM];
    let none = Scope::default();
    assert!(
        coll.dense_search(&v, &none, None, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        coll.bm25_search("budget", &none, None, 100)
            .await
            .unwrap()
            .is_empty()
    );
    // Rows allowing nobody are visible to nobody, not even to a principal list holding all.
    let mut row = fixture(3, 1).remove(0);
    row.chunk_id = "nobody#0".into();
    row.allow.clear();
    coll.upsert(&[row]).await.unwrap();
    let all = coll
        .dense_search(&v, &Scope::new(PRINCIPALS), None, 100)
        .await
        .unwrap();
    assert!(all.iter().all(|h| h.chunk_id != "nobody#0"));
}

#[tokio::test]
async fn special_principals_match_only_their_rows() {
    let coll = collection("special_principals").await;
    let specials = [
        r#"u:o"brien"#,
        r"u:back\slash",
        r#"u:o\"brien"#,
        "u:'single'",
        "u:tab\there",
        r#"x"]) or true or ARRAY_CONTAINS_ANY(allow, ["y"#,
    ];
    let mut rng = Rng(5);
    let mut rows = Vec::new();
    for (i, p) in specials.iter().enumerate() {
        for c in 0..3 {
            let mut row = fixture(100 + i as u64, 1).remove(0);
            row.chunk_id = format!("s{i}#{c}");
            row.doc_key = format!("s{i}");
            row.dense = vector(&mut rng);
            row.allow = vec![p.to_string()];
            row.deny = Vec::new();
            rows.push(row);
        }
    }
    // Rows for the principals an injection would try to reach.
    let mut open = fixture(9, 1).remove(0);
    open.chunk_id = "open#0".into();
    open.allow = vec!["y".into(), "x".into(), "everyone".into()];
    rows.push(open);
    coll.upsert(&rows).await.unwrap();
    for (i, p) in specials.iter().enumerate() {
        let hits = coll
            .dense_search(&vector(&mut rng), &Scope::new([*p]), None, 100)
            .await
            .unwrap();
        let got: BTreeSet<String> = hits.into_iter().map(|h| h.chunk_id).collect();
        let want: BTreeSet<String> = (0..3).map(|c| format!("s{i}#{c}")).collect();
        assert_eq!(got, want, "principal {p:?}");
    }
    // A control character cannot be carried by an expression: refused, not dropped.
    let err = coll
        .dense_search(&vector(&mut rng), &Scope::new(["u:a\u{1}"]), None, 10)
        .await
        .unwrap_err();
    assert!(matches!(err, MilvusError::Expr(_)), "{err}");
}

#[tokio::test]
async fn upsert_is_idempotent_and_delete_removes_a_document() {
    let coll = collection("writes").await;
    let rows = fixture(21, 6);
    coll.upsert(&rows).await.unwrap();
    coll.upsert(&rows).await.unwrap();
    let everyone = Scope::new(PRINCIPALS);
    let visible = ids(rows.iter().filter(|r| admits(&everyone, r)));
    let v = vec![0.1; DIM];
    let hits = coll.dense_search(&v, &everyone, None, 1000).await.unwrap();
    assert_eq!(hits.len(), visible.len(), "same rows twice → one each");

    // A changed chunk replaces the old one: its old words stop matching.
    let mut changed = rows[0].clone();
    changed.allow = vec!["everyone".into()];
    changed.deny.clear();
    changed.text = "zebra quokka".into();
    coll.upsert(&[changed.clone(), changed.clone()])
        .await
        .unwrap();
    let hits = coll
        .bm25_search("zebra", &everyone, None, 100)
        .await
        .unwrap();
    assert_eq!(
        hits.iter().map(|h| h.chunk_id.as_str()).collect::<Vec<_>>(),
        [changed.chunk_id.as_str()]
    );

    let doc = rows[0].doc_key.clone();
    let chunks = rows.iter().filter(|r| r.doc_key == doc).count();
    assert!(
        chunks > 1,
        "the fixture's first document has several chunks"
    );
    let deleted = coll.delete_document(&doc).await.unwrap();
    assert_eq!(deleted as usize, chunks);
    coll.flush().await.unwrap();
    let all = Scope::new(PRINCIPALS);
    let hits = coll.dense_search(&v, &all, None, 1000).await.unwrap();
    assert!(hits.iter().all(|h| h.doc_key != doc), "{doc} still found");
    let others = ids(rows.iter().filter(|r| r.doc_key != doc && admits(&all, r)));
    let got: BTreeSet<String> = hits.into_iter().map(|h| h.chunk_id).collect();
    assert_eq!(got, others);
    assert_eq!(coll.delete_document("no-such-doc").await.unwrap(), 0);
}

#[tokio::test]
async fn checkpoints_round_trip() {
    let coll = collection("checkpoints").await;
    assert_eq!(coll.get_checkpoint("fs:docs").await.unwrap(), None);
    coll.put_checkpoint("fs:docs", b"{\"cursor\":1}")
        .await
        .unwrap();
    let binary: Vec<u8> = (0..=255).collect();
    coll.put_checkpoint(r#"wiki:"odd\name"#, &binary)
        .await
        .unwrap();
    assert_eq!(
        coll.get_checkpoint("fs:docs").await.unwrap().as_deref(),
        Some(&b"{\"cursor\":1}"[..])
    );
    coll.put_checkpoint("fs:docs", b"{\"cursor\":2}")
        .await
        .unwrap();
    assert_eq!(
        coll.get_checkpoint("fs:docs").await.unwrap().as_deref(),
        Some(&b"{\"cursor\":2}"[..])
    );
    assert_eq!(
        coll.get_checkpoint(r#"wiki:"odd\name"#).await.unwrap(),
        Some(binary)
    );
    coll.put_checkpoint("empty", b"").await.unwrap();
    assert_eq!(
        coll.get_checkpoint("empty").await.unwrap(),
        Some(Vec::new())
    );
    let big = vec![7u8; docent_milvus::CHECKPOINT_MAX_BYTES];
    coll.put_checkpoint("big", &big).await.unwrap();
    assert_eq!(coll.get_checkpoint("big").await.unwrap(), Some(big));
    // Larger ones go in parts (an fs root with thousands of mount points), in turns between
    // two slots, and come back whole, alone and among every checkpoint.
    let pattern =
        |n: usize, salt: u8| -> Vec<u8> { (0..n).map(|i| (i % 251) as u8 ^ salt).collect() };
    let three_parts = pattern(docent_milvus::CHECKPOINT_MAX_BYTES * 2 + 17, 1);
    coll.put_checkpoint("big", &three_parts).await.unwrap();
    assert_eq!(coll.get_checkpoint("big").await.unwrap(), Some(three_parts));
    let two_parts = pattern(docent_milvus::CHECKPOINT_MAX_BYTES + 1, 2);
    coll.put_checkpoint("big", &two_parts).await.unwrap();
    assert_eq!(
        coll.get_checkpoint("big").await.unwrap(),
        Some(two_parts.clone())
    );
    let all = coll.checkpoints().await.unwrap();
    assert_eq!(
        all.iter().find(|(s, _)| s == "big").map(|(_, b)| b),
        Some(&two_parts)
    );
    let four_parts = pattern(docent_milvus::CHECKPOINT_MAX_BYTES * 3 + 5, 3);
    coll.put_checkpoint("big", &four_parts).await.unwrap();
    assert_eq!(coll.get_checkpoint("big").await.unwrap(), Some(four_parts));
    // More parts than one upsert carries (64).
    let seventy_parts = pattern(docent_milvus::CHECKPOINT_MAX_BYTES * 69 + 3, 4);
    coll.put_checkpoint("big", &seventy_parts).await.unwrap();
    assert_eq!(
        coll.get_checkpoint("big").await.unwrap(),
        Some(seventy_parts)
    );
    // Back to one row.
    coll.put_checkpoint("big", b"{}").await.unwrap();
    assert_eq!(
        coll.get_checkpoint("big").await.unwrap(),
        Some(b"{}".to_vec())
    );
    // A checkpoint that begins like a record of parts is stored in parts, not misread.
    let lookalike = b"\0docent checkpoint parts\0{}".to_vec();
    coll.put_checkpoint("odd", &lookalike).await.unwrap();
    assert_eq!(coll.get_checkpoint("odd").await.unwrap(), Some(lookalike));
    let too_big = vec![7u8; docent_milvus::CHECKPOINT_MAX_TOTAL + 1];
    let err = coll.put_checkpoint("big", &too_big).await.unwrap_err();
    assert!(
        matches!(err, MilvusError::CheckpointTooLarge { .. }),
        "{err}"
    );
    assert_eq!(
        coll.get_checkpoint("big").await.unwrap(),
        Some(b"{}".to_vec())
    );
    // The chunk collection holds no state rows.
    let v = vec![0.1; DIM];
    assert!(
        coll.dense_search(&v, &Scope::new(PRINCIPALS), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn ensure_collection_reuses_and_refuses() {
    let client = MilvusClient::connect(server_uri(), None).await.unwrap();
    let first = client.ensure_collection("ensure", DIM).await.unwrap();
    first.upsert(&fixture(4, 2)).await.unwrap();
    let again = client.ensure_collection("ensure", DIM).await.unwrap();
    let hits = again
        .dense_search(&[0.3; DIM], &Scope::new(PRINCIPALS), None, 100)
        .await
        .unwrap();
    assert!(!hits.is_empty(), "the reused collection keeps its rows");
    let err = client
        .ensure_collection("ensure", DIM * 2)
        .await
        .err()
        .expect("another dimension is refused");
    match &err {
        MilvusError::IncompatibleCollection { collection, reason } => {
            assert_eq!(collection, "ensure");
            assert!(reason.contains("dimension 8, expected 16"), "{reason}");
        }
        other => panic!("expected IncompatibleCollection, got {other}"),
    }
    // A collection that is not ours (its state companion's schema) is refused too.
    let err = client
        .ensure_collection("ensure_state", DIM)
        .await
        .err()
        .expect("a foreign schema is refused");
    assert!(
        matches!(err, MilvusError::IncompatibleCollection { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn server_and_connect_errors_are_typed() {
    let coll = collection("errors").await;
    let mut row = fixture(8, 1).remove(0);
    row.doc_key = "k".repeat(2000); // over max_length 1024
    let err = coll.upsert(&[row]).await.unwrap_err();
    let code = err
        .server_code()
        .unwrap_or_else(|| panic!("server error, got {err}"));
    assert_ne!(code, 0);
    assert!(err.to_string().contains("Upsert failed"), "{err}");

    let mut row = fixture(8, 1).remove(0);
    row.dense.pop();
    let err = coll.upsert(&[row]).await.unwrap_err();
    assert!(matches!(err, MilvusError::InvalidRow { .. }), "{err}");
    let err = coll
        .dense_search(&[0.0; 3], &Scope::new(["everyone"]), None, 5)
        .await
        .unwrap_err();
    assert!(matches!(err, MilvusError::Dimension { .. }), "{err}");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = MilvusClient::connect(&format!("http://127.0.0.1:{port}"), None)
        .await
        .err()
        .expect("nothing listens there");
    assert!(matches!(err, MilvusError::Connect { .. }), "{err}");
    let err = MilvusClient::connect("127.0.0.1:19530", None)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, MilvusError::InvalidUri { .. }), "{err}");
    let err = MilvusClient::connect("https://127.0.0.1:19530", None)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("CA file"), "{err}");
    let err = MilvusClient::connect_with(
        "https://127.0.0.1:19530",
        ConnectOptions {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..ConnectOptions::default()
        },
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(err, MilvusError::CaFile { .. }), "{err}");
}

#[tokio::test]
async fn rows_come_back_whole_and_page_in_chunk_id_order() {
    let col = collection("rows_whole").await;
    let rows = fixture(17, 30);
    col.upsert(&rows).await.unwrap();
    // A scan in pages of 7 returns every row exactly once, equal to what was written.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = col.query_rows("", after.as_deref(), 7, true).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 7);
        after = page.last().map(|r| r.chunk_id.clone());
        seen.extend(page);
    }
    let mut want = rows.clone();
    want.sort_by(|a, b| a.chunk_id.cmp(&b.chunk_id));
    assert_eq!(seen.len(), want.len());
    for (got, want) in seen.iter().zip(&want) {
        assert_eq!(got.chunk_id, want.chunk_id);
        assert_eq!(got.meta, want.meta);
        assert_eq!(got.attributes, want.attributes);
        assert_eq!(got.allow, want.allow);
        assert_eq!(got.deny, want.deny);
        assert_eq!(got.span, want.span);
        assert_eq!(got.text, want.text);
        let d: f32 = got
            .dense
            .iter()
            .zip(&want.dense)
            .map(|(a, b)| (a - b).abs())
            .sum();
        assert!(d < 1e-4, "vector of {} differs by {d}", got.chunk_id);
    }
    // Search with rows: the same hits as the plain search, each with its row.
    let scope = Scope::new(PRINCIPALS);
    let q = &rows[3].dense;
    let plain = col.dense_search(q, &scope, None, 10).await.unwrap();
    let whole = col.dense_search_rows(q, &scope, None, 10).await.unwrap();
    assert_eq!(
        plain.iter().map(|h| &h.chunk_id).collect::<Vec<_>>(),
        whole.iter().map(|(_, r)| &r.chunk_id).collect::<Vec<_>>()
    );
    let by_id: BTreeMap<&str, &ChunkRow> = rows.iter().map(|r| (r.chunk_id.as_str(), r)).collect();
    for (_, r) in &whole {
        assert_eq!(r.meta, by_id[r.chunk_id.as_str()].meta);
        assert_eq!(r.dense.len(), DIM);
    }
    let bm25 = col
        .bm25_search_rows("budget payroll", &scope, None, 5)
        .await
        .unwrap();
    assert!(!bm25.is_empty());
    assert!(
        bm25.iter()
            .all(|(s, r)| *s > 0.0 && (r.text.contains("budget") || r.text.contains("payroll")))
    );
}

#[tokio::test]
async fn delete_chunks_from_keeps_the_first_ones_and_meta_state_round_trips() {
    let col = collection("partial_delete").await;
    let rows = fixture(5, 12);
    col.upsert(&rows).await.unwrap();
    let long = rows
        .iter()
        .filter(|r| r.ordinal >= 2)
        .map(|r| r.doc_key.clone())
        .next()
        .expect("a document with three chunks or more");
    col.delete_chunks_from(&long, 2).await.unwrap();
    let cond = format!(
        "doc_key == {}",
        docent_milvus::expr::quote("k", &long).unwrap()
    );
    let left = col.query_rows(&cond, None, 100, false).await.unwrap();
    assert_eq!(
        left.iter().map(|r| r.ordinal).collect::<BTreeSet<_>>(),
        BTreeSet::from([0, 1])
    );
    assert!(left.iter().all(|r| r.dense.is_empty()));
    // Other documents are untouched.
    let all = col.query_rows("", None, 1000, false).await.unwrap();
    let want = rows.iter().filter(|r| r.doc_key != long).count() + 2;
    assert_eq!(all.len(), want);
    // Meta rows are apart from checkpoints.
    assert_eq!(col.get_meta("model").await.unwrap(), None);
    col.put_meta("model", b"m1").await.unwrap();
    col.put_checkpoint("fs", b"c1").await.unwrap();
    col.put_checkpoint("wiki", b"c2").await.unwrap();
    assert_eq!(
        col.get_meta("model").await.unwrap().as_deref(),
        Some(&b"m1"[..])
    );
    let mut cps = col.checkpoints().await.unwrap();
    cps.sort();
    assert_eq!(
        cps,
        vec![
            ("fs".to_string(), b"c1".to_vec()),
            ("wiki".to_string(), b"c2".to_vec())
        ]
    );
}
