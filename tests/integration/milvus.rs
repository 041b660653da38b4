//! `backend = "milvus"` end to end, on a real Milvus Lite (`scripts/milvus.sh`): an ingest node
//! crawls the example corpus into the collection, and a query replica holding no index state of
//! its own (it runs no connectors) answers from it under the caller's ACL and sees the ingest
//! node's later edits and deletes.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::harness::*;
use docent_proto::v1 as pb;

fn milvus_config(env: &Env, collection: &str, role: &str) -> String {
    on_milvus(&env.config_text(), collection, role)
}

/// A config `text` moved to `collection` on the shared Milvus Lite, as a node of `role`.
pub(crate) fn on_milvus(text: &str, collection: &str, role: &str) -> String {
    let uri = docent_milvus::lite::shared_server(&std::env::temp_dir());
    replaced(
        &replaced(text, "backend = \"embedded\"", "backend = \"milvus\""),
        "role = \"all\"",
        &format!("role = \"{role}\""),
    ) + &format!(
        "\n[index.milvus]\nuri = {uri:?}\ncollection = {collection:?}\ntoken = \"root:Milvus\"\n"
    )
}

pub(crate) fn collection() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "it_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_replica_answers_from_what_the_ingest_node_wrote() {
    let name = collection();
    let ingest_env = Env::example();
    let ingest = ingest_env
        .start_with(ingest_env.config_from(&milvus_config(&ingest_env, &name, "ingest")))
        .await;
    assert_eq!(ingest.stats().await.documents, 29);

    // The replica: its own (empty) data dir, no corpus, no connectors.
    let query_env = Env::empty();
    let replica = query_env
        .start_with(query_env.config_from(&milvus_config(&query_env, &name, "query")))
        .await;
    assert!(replica.connectors().await.connectors.is_empty());

    let a = replica
        .ask(ALICE, "How do I reset my VPN password?")
        .await
        .unwrap();
    assert_eq!(a.status, pb::AnswerStatus::Answered as i32, "{a:?}");
    assert!(
        a.citations.iter().any(|c| c.uri.ends_with("/it/vpn.md")),
        "{:?}",
        a.citations
    );

    // The ACL holds on the replica: the HR fact reaches HR and not an engineer.
    let q = "What is the salary band for a senior software engineer?";
    let hr = replica.ask(HANA, q).await.unwrap();
    assert!(hr.answer.contains("148,000"), "{}", hr.answer);
    let eng = replica.ask(ALICE, q).await.unwrap();
    let text = answer_text(&eng);
    assert!(
        !text.contains("148,000") && !text.contains("/hr/"),
        "{text}"
    );
    let hits = replica
        .search(ALICE, "salary band compensation", 10)
        .await
        .unwrap();
    assert!(
        !search_text(&hits).contains("/hr/"),
        "{}",
        search_text(&hits)
    );

    let laptops = replica
        .search(ALICE, "laptop refresh hardware", 10)
        .await
        .unwrap();
    assert!(
        search_text(&laptops).contains("/it/laptops.md"),
        "{}",
        search_text(&laptops)
    );

    // An edit and a delete made through the ingest node reach the replica.
    let c = ingest_env.corpus();
    let vpn = std::fs::read_to_string(c.join("it/vpn.md")).unwrap();
    std::fs::write(
        c.join("it/vpn.md"),
        vpn.replace("extension 4357", "extension 5000"),
    )
    .unwrap();
    std::fs::remove_file(c.join("it/laptops.md")).unwrap();
    eventually(60, "the replica sees the edit", || async {
        let a = replica
            .ask(
                ALICE,
                "Which extension do I call if the VPN reset page does not accept my code?",
            )
            .await
            .unwrap();
        a.answer.contains("extension 5000")
    })
    .await;
    eventually(60, "the replica forgets the deleted document", || async {
        let hits = replica
            .search(ALICE, "laptop refresh hardware", 10)
            .await
            .unwrap();
        !search_text(&hits).contains("/it/laptops.md")
    })
    .await;
    replica.stop().await;
    ingest.stop().await;
}

#[test]
fn a_query_role_without_a_shared_index_is_refused() {
    let env = Env::empty();
    let text = replaced(&env.config_text(), "role = \"all\"", "role = \"query\"");
    let issues = docent::config::Config::parse(&text, &repo().join("config")).unwrap_err();
    assert!(issues.iter().any(|i| i.path == "index.role"), "{issues:?}");
}

/// Stops a Milvus Lite of its own when the test ends, however it ends.
struct OwnLite(std::path::PathBuf);

impl Drop for OwnLite {
    fn drop(&mut self) {
        docent_milvus::lite::stop(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_milvus_outage_is_unavailable_and_the_daemon_recovers_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lite");
    let port = free_port();
    let uri = docent_milvus::lite::start(&dir, port);
    let _lite = OwnLite(dir.clone());
    let env = Env::example();
    let text = replaced(
        &replaced(
            &env.config_text(),
            "backend = \"embedded\"",
            "backend = \"milvus\"",
        ),
        "role = \"all\"",
        "role = \"ingest\"",
    ) + &format!(
        "\n[index.milvus]\nuri = {uri:?}\ncollection = \"outage\"\ntoken = \"root:Milvus\"\ntimeout_ms = 5000\n"
    );
    let d = env.start_with(env.config_from(&text)).await;
    let q = "How do I reset my VPN password?";
    assert_eq!(
        d.ask(ALICE, q).await.unwrap().status,
        pb::AnswerStatus::Answered as i32
    );

    docent_milvus::lite::stop(&dir);
    let e = d.ask(ALICE, q).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert_eq!(reason(&e), "INDEX_UNAVAILABLE");
    let e = d.search(ALICE, "vpn", 5).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    // A document written meanwhile cannot be committed: the commit waits and is retried
    // (it used to end ingestion for good).
    std::fs::write(
        env.corpus().join("it/printers.md"),
        "# Printers\n\nThe third-floor printer is called Heron; add it with the IT portal.\n",
    )
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    // Nothing was deleted and the daemon kept serving: back with the engine (Lite comes back
    // with its collections released; the backend loads them again).
    docent_milvus::lite::start(&dir, port);
    eventually(60, "answers again after Milvus is back", || async {
        d.ask(ALICE, q)
            .await
            .is_ok_and(|a| a.citations.iter().any(|c| c.uri.ends_with("/it/vpn.md")))
    })
    .await;
    eventually(
        60,
        "the document written during the outage is indexed",
        || async { d.stats().await.documents == 30 },
    )
    .await;
    d.stop().await;
}
