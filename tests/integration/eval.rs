//! `docent eval` end to end: retrieval metrics on a tiny BEIR set the test writes, and answer
//! metrics of a running daemon on a small question set.

use std::process::Command;

use crate::harness::*;

const CORPUS: &[(&str, &str, &str)] = &[
    (
        "d1",
        "Password resets",
        "To reset a forgotten VPN password, open the reset page and confirm with your authenticator app.",
    ),
    (
        "d2",
        "Parking",
        "Staff parking is in the underground garage on level minus two; ask facilities for a badge.",
    ),
    (
        "d3",
        "Parental leave",
        "Birth parents receive twenty weeks of fully paid parental leave.",
    ),
    (
        "d4",
        "Expense claims",
        "Submit expense claims with receipts within sixty days in the finance portal.",
    ),
    (
        "d5",
        "Lunch",
        "Lunch is served in the canteen on the fourth floor between noon and half past one.",
    ),
    (
        "d6",
        "Laptops",
        "Engineers receive a laptop with thirty-two gigabytes of memory, replaced every four years.",
    ),
];

/// A tiny BEIR-layout set in `d`.
fn write_beir_set(d: &std::path::Path) {
    let corpus: String = CORPUS
        .iter()
        .map(|(id, title, text)| {
            serde_json::json!({"_id": id, "title": title, "text": text}).to_string() + "\n"
        })
        .collect();
    std::fs::write(d.join("corpus.jsonl"), corpus).unwrap();
    std::fs::write(
        d.join("queries.jsonl"),
        [
            r#"{"_id": "q1", "text": "how do I reset my vpn password"}"#,
            r#"{"_id": "q2", "text": "where can staff park their cars"}"#,
            r#"{"_id": "q3", "text": "how long is paid parental leave"}"#,
            r#"{"_id": "q4", "text": "a query without judgments"}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    std::fs::create_dir(d.join("qrels")).unwrap();
    std::fs::write(
        d.join("qrels/test.tsv"),
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq3\td3\t2\nq3\td5\t0\n",
    )
    .unwrap();
}

/// `docent eval beir --json` over the set in `d`: (report, stderr).
fn eval_beir(d: &std::path::Path, extra: &[&std::ffi::OsStr]) -> (serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_docent"))
        .args(["eval", "beir", "--json"])
        .args(extra)
        .arg("--config")
        .arg(repo().join("config/docent.example.toml"))
        .arg(d)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (serde_json::from_slice(&out.stdout).unwrap(), stderr)
}

#[test]
fn eval_beir_with_an_embedding_cache_reuses_vectors_and_agrees() {
    let dir = tempfile::tempdir().unwrap();
    write_beir_set(dir.path());
    let cache = dir.path().join("vectors.cache");
    let flag = [std::ffi::OsStr::new("--embed-cache"), cache.as_os_str()];
    let (first, err1) = eval_beir(dir.path(), &flag);
    assert!(err1.contains(": 0 vectors"), "{err1}");
    assert!(cache.exists());
    let (again, err2) = eval_beir(dir.path(), &flag);
    assert!(
        !err2.contains(": 0 vectors") && err2.contains("vectors"),
        "the second run starts from the cached vectors: {err2}"
    );
    assert_eq!(first, again, "cached vectors give the same metrics");
}

#[test]
fn eval_beir_reports_metrics_for_each_mode() {
    let dir = tempfile::tempdir().unwrap();
    write_beir_set(dir.path());
    let (v, _) = eval_beir(dir.path(), &[]);
    for mode in ["bm25", "dense", "hybrid"] {
        let m = &v[mode];
        assert_eq!(m["queries"], 3, "{v}");
        for k in ["ndcg_at_10", "recall_at_10", "recall_at_100", "mrr_at_10"] {
            let x = m[k].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&x), "{mode}.{k} = {x}");
        }
        // Every query has one obvious answer among six unrelated documents.
        assert_eq!(m["recall_at_10"].as_f64().unwrap(), 1.0, "{mode}: {m}");
    }
    assert!(v["hybrid"]["mrr_at_10"].as_f64().unwrap() > 0.99, "{v}");
    // Each answer first: the ideal ranking, whatever the grades (q3's grade-2 document and its
    // grade-0 one count as in the standard definition).
    assert!(v["hybrid"]["ndcg_at_10"].as_f64().unwrap() > 0.99, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eval_qa_scores_a_running_daemon() {
    let env = Env::example();
    let d = env.start().await;
    let qa = env.dir.path().join("qa.jsonl");
    std::fs::write(
        &qa,
        [
            r#"{"question": "How do I reset my VPN password?", "gold": ["it/vpn.md"], "answer": "14 characters"}"#,
            r#"{"question": "How many days per week can I work from home?", "gold": ["company/remote-work.md"], "answer": "three days"}"#,
            r#"{"question": "What is the capital of Australia?", "unanswerable": true}"#,
            r#"{"question": "What is the salary band for a senior software engineer?", "unanswerable": true}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let out = docent_async(
        &["eval", "qa", "--json", qa.to_str().unwrap()],
        &d.url(),
        ALICE,
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["questions"], 4);
    assert_eq!(v["gold_cited_rate"], 1.0, "{v}");
    assert_eq!(v["answer_contains_rate"], 1.0, "{v}");
    // The salary question is answerable only for HR: for an engineer it must be "not found".
    assert_eq!(v["no_answer_rate_unanswerable"], 1.0, "{v}");
    assert_eq!(v["no_answer_rate_answerable"], 0.0, "{v}");
    assert!(v["citation_precision"].as_f64().unwrap() > 0.0);
    // Nothing was blocked, and no unanswerable question cited anything: the precision over
    // every question is the answerable questions' own.
    assert_eq!(v["blocked"], 0, "{v}");
    assert_eq!(v["citation_precision_all"], v["citation_precision"], "{v}");
    d.stop().await;
}
