//! A restart keeps the index and re-embeds nothing unchanged; changes made while the daemon was
//! down are picked up by the startup crawl.

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_index_and_reembeds_nothing_unchanged() {
    let env = Env::example();
    let d = env.start().await;
    let first = d.stats().await;
    assert_eq!(first.documents, 29);
    assert!(first.chunks_embedded >= first.chunks, "{first:?}");
    let before = d
        .ask(ALICE, "How do I reset my VPN password?")
        .await
        .unwrap();
    d.stop().await;

    // Restart with nothing changed: same index, no parsing, no embedding.
    let d = env.start().await;
    let second = d.stats().await;
    assert_eq!(second.documents, 29);
    assert_eq!(second.chunks, first.chunks);
    assert_eq!(second.documents_indexed, 0, "{second:?}");
    assert_eq!(second.chunks_embedded, 0, "{second:?}");
    let after = d
        .ask(ALICE, "How do I reset my VPN password?")
        .await
        .unwrap();
    assert_eq!(before.answer, after.answer);
    d.stop().await;

    // While down: one edit (one paragraph changed) and one delete.
    let c = env.corpus();
    let vpn = std::fs::read_to_string(c.join("it/vpn.md")).unwrap();
    std::fs::write(
        c.join("it/vpn.md"),
        vpn.replace("extension 4357", "extension 5000"),
    )
    .unwrap();
    std::fs::remove_file(c.join("it/laptops.md")).unwrap();
    let d = env.start().await;
    let third = d.stats().await;
    assert_eq!(third.documents, 28);
    assert_eq!(third.documents_indexed, 1, "{third:?}");
    // The edited chunks are embedded again, and the chunks of vpn.md the edit did not touch
    // keep their vectors (at least one of each; the chunker decides how many the edit spans).
    assert!(
        third.chunks_embedded >= 1 && third.chunks_reused >= 1,
        "{third:?}"
    );
    let a = d
        .ask(
            ALICE,
            "Which extension do I call if the VPN reset page does not accept my code?",
        )
        .await
        .unwrap();
    assert!(a.answer.contains("extension 5000"), "{}", a.answer);
    for c in a.citations.iter().filter(|c| c.uri.ends_with("/it/vpn.md")) {
        assert!(
            !c.snippet.contains("extension 4357"),
            "stale snippet: {}",
            c.snippet
        );
    }
    let old = d
        .search(ALICE, "VPN reset extension 4357", 20)
        .await
        .unwrap();
    assert!(
        old.hits
            .iter()
            .all(|h| !h.citation.as_ref().unwrap().uri.ends_with("/it/laptops.md"))
    );
    d.stop().await;
}

/// Session 43's review: a start that failed after it had started the pipeline and the
/// connectors (here: the metrics port is taken) left them crawling, and holding the index, for
/// a daemon that never served. They stop, and the next start opens the index. One thread: no
/// task of the failed start can let go between its error and the checks below.
#[tokio::test]
async fn a_start_that_fails_late_stops_what_it_started() {
    let env = Env::example();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = env.config();
    config.server.metrics_listen = Some(taken.local_addr().unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let e = docent::server::start_with(config.clone(), embedder(), listener, Default::default())
        .await
        .err()
        .expect("the metrics port is taken");
    assert!(format!("{e:?}").contains("Bind"), "{e:?}");
    // Let go before the error returned: the conversation store (held by the hourly expiry
    // task until it saw the cancel; CI, stop 57) and the index open at once.
    assert!(
        config.conversations,
        "the example config stores conversations"
    );
    drop(
        docent::assistant::Store::open(&config.index.data_dir.join("assistant.redb"))
            .expect("the failed start let the conversation store go"),
    );
    drop(
        docent::index::Index::open_with(
            &config.index.data_dir,
            &docent::index::ModelSignature::of(embedder().as_ref()),
        )
        .expect("the failed start let the index go"),
    );
    let d = env.start().await;
    assert_eq!(d.stats().await.documents, 29);
    d.stop().await;
}
