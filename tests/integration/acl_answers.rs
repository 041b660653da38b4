//! ACLs at work on the example corpus: an HR-only fact reaches HR and nobody else, through
//! answers, snippets, titles or counts.

use crate::harness::*;
use docent_proto::v1 as pb;
use tonic_types::StatusExt;

const HR_QUESTION: &str = "What is the salary band for a senior software engineer?";
/// Strings that only occur in hr/ files of the example corpus.
const HR_ONLY: &[&str] = &[
    "148,000",
    "Compensation bands",
    "compensation-bands",
    "/hr/",
    "Project Heron",
    "PL-27",
    "Aurelia",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hr_fact_is_answered_for_hr_and_invisible_to_engineers() {
    let env = Env::example();
    let d = env.start().await;

    let hr = d.ask(HANA, HR_QUESTION).await.unwrap();
    assert_eq!(hr.status, pb::AnswerStatus::Answered as i32, "{hr:?}");
    assert!(
        hr.answer.contains("148,000 to 172,000 EUR"),
        "{}",
        hr.answer
    );
    assert!(
        hr.citations
            .iter()
            .any(|c| c.uri.ends_with("/hr/compensation-bands-2027.md")),
        "{:?}",
        hr.citations
    );
    // Each sentence cites a passage that contains it, and the span points into that document.
    for s in &hr.sentences {
        assert!(!s.citations.is_empty());
        for &ci in &s.citations {
            let c = &hr.citations[ci as usize];
            let span = c.span.unwrap();
            assert!(span.start < span.end);
        }
    }

    for question in [
        HR_QUESTION,
        "Project Heron reorganisation severance",
        "parental leave top-up payroll code",
        "group insurance contract number",
    ] {
        let eng = d.ask(ALICE, question).await.unwrap();
        let text = answer_text(&eng);
        for s in HR_ONLY {
            assert!(
                !text.contains(s),
                "engineer's answer to {question:?} leaks {s:?}: {text}"
            );
        }
        let found = d.search(ALICE, question, 100).await.unwrap();
        let text = search_text(&found);
        for s in HR_ONLY {
            assert!(
                !text.contains(s),
                "engineer's search for {question:?} leaks {s:?}"
            );
        }
        // Counts: with a limit above the corpus size the dense leg returns every readable
        // document, so the engineer's result set is exactly HR's minus hr/ (HR and the
        // engineer read the same non-HR folders): nothing from hr/, and nothing missing.
        let uris = |r: &pb::SearchResponse| -> std::collections::BTreeSet<String> {
            r.hits
                .iter()
                .map(|h| h.citation.as_ref().unwrap().uri.clone())
                .collect()
        };
        let hr_view = d.search(HANA, question, 100).await.unwrap();
        let hr_minus_hr: std::collections::BTreeSet<String> = uris(&hr_view)
            .into_iter()
            .filter(|u| !u.contains("/hr/"))
            .collect();
        assert!(uris(&hr_view).iter().any(|u| u.contains("/hr/")));
        assert_eq!(
            uris(&found),
            hr_minus_hr,
            "engineer's results for {question:?}"
        );
        assert_eq!(
            found.hits.len(),
            hr_view.hits.len() - (uris(&hr_view).len() - hr_minus_hr.len())
        );
    }

    // Finance sees finance, not HR; HR does not see finance.
    let fin = d
        .search(FELIX, "operating budget 2027 by department", 100)
        .await
        .unwrap();
    assert!(fin.hits.iter().any(|h| {
        h.citation
            .as_ref()
            .unwrap()
            .uri
            .contains("/finance/budget-2027.md")
    }));
    assert!(
        fin.hits
            .iter()
            .all(|h| !h.citation.as_ref().unwrap().uri.contains("/hr/"))
    );
    let hr_fin = d
        .search(HANA, "operating budget 2027 by department", 100)
        .await
        .unwrap();
    assert!(
        hr_fin
            .hits
            .iter()
            .all(|h| !h.citation.as_ref().unwrap().uri.contains("/finance/"))
    );

    // Nothing relevant for anyone: says so instead of guessing.
    let none = d
        .ask(ALICE, "What is the capital of Australia?")
        .await
        .unwrap();
    assert_eq!(none.status, pb::AnswerStatus::NoAnswer as i32, "{none:?}");
    assert!(none.citations.is_empty());
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_filters_narrow_and_stream_matches_unary() {
    let env = Env::example();
    let d = env.start().await;
    let prefix = format!("file://{}/it/", env.corpus().display());
    let r = d
        .search_req(
            HANA,
            pb::SearchRequest {
                query: "password".into(),
                limit: 50,
                mode: pb::RetrievalMode::Bm25 as i32,
                filter: Some(pb::Filter {
                    sources: vec!["share".into()],
                    uri_prefix: prefix.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(!r.hits.is_empty());
    assert!(
        r.hits
            .iter()
            .all(|h| h.citation.as_ref().unwrap().uri.starts_with(&prefix))
    );
    assert!(r.hits.iter().all(|h| h.bm25_rank > 0 && h.dense_rank == 0));
    let other = d
        .search_req(
            HANA,
            pb::SearchRequest {
                query: "password".into(),
                limit: 50,
                mode: 0,
                filter: Some(pb::Filter {
                    sources: vec!["no-such-source".into()],
                    uri_prefix: String::new(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(other.hits.is_empty());

    let unary = d
        .ask(ALICE, "How do I reset my VPN password?")
        .await
        .unwrap();
    assert_eq!(unary.status, pb::AnswerStatus::Answered as i32);
    assert!(
        unary
            .citations
            .iter()
            .any(|c| c.uri.ends_with("/it/vpn.md"))
    );
    let mut stream = vpn_stream(&d, false).await;
    let mut pieces = Vec::new();
    let mut citations = None;
    let mut fin = None;
    while let Some(ev) = stream.message().await.unwrap() {
        assert!(fin.is_none(), "final must be the last event");
        match ev.event.unwrap() {
            pb::ask_stream_event::Event::Piece(p) => {
                assert!(citations.is_none(), "pieces come before citations");
                pieces.push(p)
            }
            pb::ask_stream_event::Event::Citations(c) => citations = Some(c.citations),
            pb::ask_stream_event::Event::Final(f) => fin = Some(f),
        }
    }
    assert_eq!(pieces, unary.sentences);
    assert_eq!(citations.unwrap(), unary.citations);
    assert_eq!(fin.unwrap().status, pb::AnswerStatus::Answered as i32);
    d.stop().await;
}

/// alice's AskStream of the VPN question (in a new conversation when `keep`).
async fn vpn_stream(d: &Running, keep: bool) -> tonic::Streaming<pb::AskStreamEvent> {
    let mut c = pb::assistant_client::AssistantClient::new(d.channel().await);
    c.ask_stream(authed(
        ALICE,
        pb::AskRequest {
            question: "How do I reset my VPN password?".into(),
            new_conversation: keep,
            ..Default::default()
        },
    ))
    .await
    .unwrap()
    .into_inner()
}

/// An answer whose pieces were streamed is audited even when its turn cannot be stored (a full
/// disk): the caller read those documents' text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_answer_is_audited_when_its_turn_cannot_be_stored() {
    let env = Env::example();
    let d = env.start().await;
    d.daemon
        .state()
        .assistant
        .store()
        .expect("the example config keeps conversations")
        .fail_writes();
    let mut stream = vpn_stream(&d, true).await;
    let mut pieces = 0;
    let end = loop {
        match stream.message().await {
            Ok(Some(ev)) => {
                if let Some(pb::ask_stream_event::Event::Piece(_)) = ev.event {
                    pieces += 1;
                }
            }
            Ok(None) => panic!("the stream ended without the store's error"),
            Err(status) => break status,
        }
    };
    assert!(
        pieces > 0,
        "the answer was streamed before the store was written"
    );
    assert_eq!(end.code(), tonic::Code::Internal, "{end:?}");
    let records = env.audit_records();
    let streamed = records
        .iter()
        .find(|r| r["method"] == "AskStream")
        .unwrap_or_else(|| panic!("no AskStream record: {records:?}"));
    assert_eq!(streamed["outcome"], "unrecorded", "{streamed}");
    assert!(
        streamed["documents"].as_array().is_some_and(|d| d
            .iter()
            .any(|k| k.as_str().is_some_and(|k| k.ends_with("vpn.md")))),
        "{streamed}"
    );
    d.stop().await;
}

/// Reading back a turn with uncited sentences (an answer that used general knowledge) audits
/// the documents the answerer was given, which such sentences may paraphrase.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_back_turn_audits_the_documents_its_uncited_sentences_came_from() {
    let env = Env::example();
    let d = env.start().await;
    let key = d
        .search(ALICE, "How do I reset my VPN password?", 10)
        .await
        .unwrap()
        .hits
        .into_iter()
        .filter_map(|h| h.citation)
        .find(|c| c.uri.ends_with("/it/vpn.md"))
        .expect("alice finds the VPN page")
        .document_key;
    let store = d.daemon.state().assistant.store().unwrap().clone();
    let conv = store.create("alice", "").unwrap();
    let turn = docent::assistant::store::TurnRecord {
        question: "How do I reset my VPN password?".into(),
        rewritten: String::new(),
        answer: "Ask the service desk.".into(),
        sentences: vec![docent::assistant::store::StoredSentence {
            text: "Ask the service desk.".into(),
            citations: vec![],
            uncited: true,
        }],
        citations: vec![],
        status: "answered".into(),
        mode: "generative".into(),
        prompt_tokens: 0,
        completion_tokens: 0,
        time_ms: 0,
        evidence_keys: vec![key.clone()],
    };
    store.append("alice", &conv.id, &turn).unwrap();
    let mut c = pb::assistant_client::AssistantClient::new(d.channel().await);
    c.get_conversation(authed(
        ALICE,
        pb::ConversationRequest {
            conversation_id: conv.id.clone(),
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    let records = env.audit_records();
    let read = records
        .iter()
        .find(|r| r["method"] == "GetConversation")
        .unwrap_or_else(|| panic!("no GetConversation record: {records:?}"));
    assert_eq!(read["evidence"], serde_json::json!([key]), "{read}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_passages_per_document_stay_in_scope() {
    let env = Env::example();
    let d = env.start().await;
    let req = |n| pb::SearchRequest {
        query: "salary band parental leave reorganisation budget".into(),
        limit: 20,
        passages_per_document: n,
        ..Default::default()
    };
    let hr = d.search_req(HANA, req(3)).await.unwrap();
    let eng = d.search_req(ALICE, req(3)).await.unwrap();
    for (who, r) in [("hana", &hr), ("alice", &eng)] {
        assert!(!r.hits.is_empty(), "{who}");
        let mut docs: Vec<&str> = Vec::new();
        for h in &r.hits {
            let c = h.citation.as_ref().unwrap();
            if docs.last() != Some(&c.document_key.as_str()) {
                assert!(
                    !docs.contains(&c.document_key.as_str()),
                    "{who}: a document's passages come together"
                );
                docs.push(&c.document_key);
            }
            let r = h.relevance.expect("the second stage scored the hit");
            assert!((0.0..=1.0).contains(&r), "{who}: {r}");
        }
        for k in &docs {
            let n = r
                .hits
                .iter()
                .filter(|h| h.citation.as_ref().unwrap().document_key == *k)
                .count();
            assert!(n <= 3, "{who}: {n} passages of {k}");
        }
    }
    // An engineer's extra passages never come from HR's documents.
    let text = search_text(&eng);
    for s in HR_ONLY {
        assert!(!text.contains(s), "engineer's passages leak {s:?}");
    }
    assert!(search_text(&hr).contains("/hr/"));
    // Out of range is a clear error.
    let e = d.search_req(HANA, req(6)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        e.get_details_error_info().unwrap().reason,
        "PASSAGES_PER_DOCUMENT_OUT_OF_RANGE"
    );
}
