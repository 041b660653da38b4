//! Changing the embedding model (issue 15): an index built with one model refuses to open with
//! another — a different prefix counts as another model — and `docent reindex` builds an index
//! for the new model from the old one's stored chunks, which then answers with the same
//! documents without any source being read again. With the real multilingual-e5-small model
//! (`scripts/setup-models.sh --multilingual`; `scripts/test.sh` fetches it and sets
//! `DOCENT_REQUIRE_E5=1`, so CI never skips), questions in one language find passages in
//! another.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use docent::config::Config;
use docent::embed::{Embedder, EmbedderConfig, FastEmbedder};
use docent::server::DaemonError;
use docent_proto::v1 as pb;
use docent_proto::v1::RetrievalMode;

use crate::harness::{ALICE, Env, Running, embedder, replaced, repo};

/// The example config's text for `env`, with the model paths absolute (the file is written
/// into the temp dir) and the index in `data_dir`.
fn config_file(env: &Env, name: &str, data_dir: &str, embedding: &[(&str, &str)]) -> PathBuf {
    let models = repo().join("models");
    let mut text = env
        .config_text()
        .replace("\"../models/", &format!("\"{}/", models.display()));
    text = replaced(
        &text,
        &format!("{:?}", env.dir.path().join("data")),
        &format!("{:?}", env.dir.path().join(data_dir)),
    );
    for (from, to) in embedding {
        text = replaced(&text, from, to);
    }
    let path = env.dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn load(path: &Path) -> Config {
    let mut c = Config::load(path).unwrap_or_else(|e| panic!("{e}"));
    c.server.metrics_listen = None;
    c
}

async fn start(config: Config, embedder: Arc<dyn Embedder>) -> Result<Running, DaemonError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let daemon = docent::server::start_with(config, embedder, listener, Default::default()).await?;
    let r = Running { daemon };
    r.wait_until_watching().await;
    Ok(r)
}

/// `docent reindex --config CONFIG --from FROM`, off the async runtime.
async fn reindex(config: &Path, from: &Path) -> std::process::Output {
    reindex_with(config, from, &[]).await
}

/// `docent reindex --config CONFIG --from FROM EXTRA...`, off the async runtime.
async fn reindex_with(config: &Path, from: &Path, extra: &[&str]) -> std::process::Output {
    let (config, from) = (config.to_path_buf(), from.to_path_buf());
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_docent"))
            .arg("reindex")
            .arg("--config")
            .arg(&config)
            .arg("--from")
            .arg(&from)
            .args(&extra)
            .output()
            .expect("run docent reindex")
    })
    .await
    .unwrap()
}

async fn top_documents(r: &Running, query: &str, mode: RetrievalMode) -> Vec<String> {
    let req = docent_proto::v1::SearchRequest {
        query: query.into(),
        limit: 5,
        mode: mode as i32,
        ..Default::default()
    };
    r.search_req(ALICE, req)
        .await
        .unwrap()
        .hits
        .iter()
        .map(|h| h.citation.as_ref().unwrap().document_key.clone())
        .collect()
}

/// The config's embedding model, loaded off the async runtime.
async fn load_embedder(config: &Config) -> Arc<dyn Embedder> {
    let ecfg = config.embedding.clone();
    Arc::new(
        tokio::task::spawn_blocking(move || FastEmbedder::load(&ecfg).unwrap())
            .await
            .unwrap(),
    )
}

/// A daemon on the new index with the new model, checked to serve what the old one did: its
/// connector finds nothing to send again (checkpoints and versions came along), and the
/// question's top document is the same, and among the dense leg's.
async fn serves_as_before(
    config: Config,
    embedder: Arc<dyn Embedder>,
    question: &str,
    before: &[String],
) -> Running {
    let r = start(config, embedder)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let state = r.daemon.state().clone();
    assert_eq!(state.stats.chunks_embedded.load(Ordering::Relaxed), 0);
    assert_eq!(state.stats.documents_indexed.load(Ordering::Relaxed), 0);
    let after = top_documents(&r, question, RetrievalMode::Hybrid).await;
    assert_eq!(after[0], before[0], "before {before:?}, after {after:?}");
    let dense = top_documents(&r, question, RetrievalMode::Dense).await;
    assert!(dense.contains(&before[0]), "dense: {dense:?}");
    r
}

fn mismatch_message(r: Result<Running, DaemonError>) -> String {
    match r {
        Ok(_) => panic!("the daemon opened an index built with another model"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_index_refuses_another_model_and_reindex_answers_with_the_same_documents() {
    let env = Env::example();
    let question = "How do I reset my VPN password?";
    let old_dir = env.dir.path().join("data");
    let before = {
        let r = env.start().await;
        let top = top_documents(&r, question, RetrievalMode::Hybrid).await;
        r.stop().await;
        top
    };
    assert!(before[0].ends_with("it/passwords.txt") || before[0].ends_with("it/vpn.md"));

    // The same model with e5-style prefixes makes other vectors: another model to the index.
    let prefixed = [(
        "[embedding]\n",
        "[embedding]\nquery_prefix = \"query: \"\npassage_prefix = \"passage: \"\n",
    )];
    let new_toml = config_file(&env, "new.toml", "data-new", &prefixed);
    let new_config = load(&new_toml);
    let new_embedder = load_embedder(&new_config).await;
    assert_eq!(new_embedder.text_profile().query_prefix, "query: ");

    let mut on_old = new_config.clone();
    on_old.index.data_dir = old_dir.clone();
    let msg = mismatch_message(start(on_old, new_embedder.clone()).await);
    assert!(
        msg.contains("passage prefix \"passage: \"")
            && msg.contains("docent reindex --config NEW.toml --from")
            && msg.contains(&old_dir.display().to_string()),
        "{msg}"
    );

    let out = reindex(&new_toml, &old_dir).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("re-embedded"), "{stdout}");
    // A second run refuses to overwrite the index it built.
    let again = reindex(&new_toml, &old_dir).await;
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    // The catch-up before the switch: the old index committed nothing since.
    let caught = reindex_with(&new_toml, &old_dir, &["--catch-up"]).await;
    let stdout = String::from_utf8_lossy(&caught.stdout);
    assert!(
        caught.status.success() && stdout.contains("0 added, 0 changed, 0 removed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&caught.stderr)
    );

    let r = serves_as_before(new_config, new_embedder, question, &before).await;
    let answer = r.ask(ALICE, question).await.unwrap();
    assert!(
        answer.citations.iter().any(|c| c.document_key == before[0]),
        "{answer:?}"
    );
    r.stop().await;
    // Served since the switch: a catch-up now would roll back what the daemon committed.
    let late = reindex_with(&new_toml, &old_dir, &["--catch-up"]).await;
    assert!(!late.status.success());
    assert!(
        String::from_utf8_lossy(&late.stderr).contains("since the switch"),
        "{}",
        String::from_utf8_lossy(&late.stderr)
    );
    // The catch-up marked the old index superseded (session 43): a daemon refuses it, since
    // what it would commit would be missing from the new one. Undoing the switch on purpose
    // (the marker removed), it opens with its own model.
    let marker = old_dir.join(docent::index::SUPERSEDED_MARKER);
    assert!(
        std::fs::read_to_string(&marker)
            .unwrap()
            .contains("data-new")
    );
    std::fs::remove_file(&marker).unwrap();
    env.start().await.stop().await;
}

/// On Milvus: an ingest node's collection, re-embedded by `docent reindex` (the ingest node
/// stopped) into a new collection for another model, which a daemon with that model serves
/// with the same documents, ACLs and checkpoints (its connector finds nothing to send again).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reindex_builds_a_milvus_collection_for_another_model() {
    let env = Env::example();
    let uri = docent_milvus::lite::shared_server(&std::env::temp_dir());
    let (old, new) = (
        format!("swap_old_{}", std::process::id()),
        format!("swap_new_{}", std::process::id()),
    );
    let on_milvus = |collection: &str| {
        format!(
            "\n[index.milvus]\nuri = {uri:?}\ncollection = {collection:?}\ntoken = \"root:Milvus\"\n"
        )
    };
    let backend = ("backend = \"embedded\"", "backend = \"milvus\"");
    let old_toml = config_file(&env, "old.toml", "data", &[backend]);
    std::fs::write(
        &old_toml,
        std::fs::read_to_string(&old_toml).unwrap() + &on_milvus(&old),
    )
    .unwrap();
    let question = "How do I reset my VPN password?";
    let before = {
        let r = start(load(&old_toml), embedder()).await.unwrap();
        assert_eq!(r.stats().await.documents, 29);
        let top = top_documents(&r, question, RetrievalMode::Hybrid).await;
        r.stop().await;
        top
    };

    // The new model: the same one with e5-style prefixes (other vectors), a new collection.
    let prefixed = (
        "[embedding]\n",
        "[embedding]\nquery_prefix = \"query: \"\npassage_prefix = \"passage: \"\n",
    );
    let new_toml = config_file(&env, "new.toml", "data-new", &[backend, prefixed]);
    std::fs::write(
        &new_toml,
        std::fs::read_to_string(&new_toml).unwrap() + &on_milvus(&new),
    )
    .unwrap();
    let out = reindex(&new_toml, Path::new(&old)).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("re-embedded 29 documents"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // --catch-up has nothing to do on Milvus and says why.
    let caught = reindex_with(&new_toml, Path::new(&old), &["--catch-up"]).await;
    assert!(!caught.status.success());
    assert!(String::from_utf8_lossy(&caught.stderr).contains("stop the ingest node"));

    let new_config = load(&new_toml);
    let new_embedder = load_embedder(&new_config).await;
    let r = serves_as_before(new_config, new_embedder, question, &before).await;
    // The ACLs came along: the HR page reaches HR and not an engineer.
    let q = "What is the salary band for a senior software engineer?";
    assert!(
        r.ask(crate::harness::HANA, q)
            .await
            .unwrap()
            .answer
            .contains("148,000")
    );
    let eng = r.ask(ALICE, q).await.unwrap();
    assert!(!format!("{eng:?}").contains("148,000"), "{eng:?}");
    r.stop().await;
}

/// Passages in English, German and French, and questions in another language than their
/// answer: (question, index of the passage that answers it).
const PASSAGES: &[&str] = &[
    "Birth parents receive twenty weeks of fully paid parental leave.",
    "Expense reports must be filed within thirty days, with every receipt attached.",
    "The Lisbon office opens at 8 am and closes at 7 pm; visitors sign in at reception.",
    "Neue Laptops liefert die IT-Abteilung innerhalb von drei Werktagen aus.",
    "Für Dienstreisen ins Ausland braucht man die Genehmigung der Vorgesetzten.",
    "Les salles de réunion se réservent dans le calendrier partagé de l'équipe.",
    "Security incidents are reported to the on-call engineer through the pager.",
    "Le budget de formation est de mille euros par personne et par an.",
];

const QUESTIONS: &[(&str, usize)] = &[
    ("Wie viele Wochen Elternzeit bekommen leibliche Eltern?", 0),
    (
        "Combien de temps ai-je pour déposer mes notes de frais ?",
        1,
    ),
    ("Wann öffnet das Büro in Lissabon?", 2),
    ("How long does it take to get a new laptop?", 3),
    ("Do I need permission for a business trip abroad?", 4),
    ("How do I book a meeting room?", 5),
    ("Wem melde ich einen Sicherheitsvorfall?", 6),
    ("How much money is there for training each year?", 7),
];

/// 1-based rank of the right passage for each question, by cosine.
fn ranks(e: &dyn Embedder) -> Vec<usize> {
    let passages: Vec<String> = PASSAGES.iter().map(|s| s.to_string()).collect();
    let pv = e.embed_passages(&passages).unwrap();
    QUESTIONS
        .iter()
        .map(|(q, want)| {
            let qv = e.embed_query(q).unwrap();
            let mine = docent::embed::dot(&qv, &pv[*want]);
            1 + pv
                .iter()
                .filter(|p| docent::embed::dot(&qv, p) > mine)
                .count()
        })
        .collect()
}

fn mrr(ranks: &[usize]) -> f64 {
    ranks.iter().map(|&r| 1.0 / r as f64).sum::<f64>() / ranks.len() as f64
}

fn e5_dir() -> Option<PathBuf> {
    let dir = repo().join("models/multilingual-e5-small");
    if dir.join("model.onnx").is_file() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("DOCENT_REQUIRE_E5").is_none(),
        "DOCENT_REQUIRE_E5 is set but {} is missing: run scripts/setup-models.sh --multilingual",
        dir.display()
    );
    eprintln!("skipped: no multilingual-e5-small (scripts/setup-models.sh --multilingual)");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn multilingual_e5_finds_answers_across_languages_after_a_reindex_from_minilm() {
    let Some(dir) = e5_dir() else { return };
    let env = Env::example();
    std::fs::write(
        env.corpus().join("company/elternzeit.md"),
        "# Elternzeit\n\nLeibliche Eltern erhalten zwanzig Wochen bezahlte Elternzeit. Der Antrag \
         geht spätestens acht Wochen vor Beginn an die Personalabteilung.\n",
    )
    .unwrap();
    let old_dir = env.dir.path().join("data");
    env.start().await.stop().await;

    let e5 = [
        (
            "model_id = \"sentence-transformers/all-MiniLM-L6-v2\"",
            "model = \"multilingual-e5-small\"",
        ),
        (
            "model_dir = \"../models/all-MiniLM-L6-v2\"",
            "model_dir = \"../models/multilingual-e5-small\"",
        ),
        // e5's cosines sit in a narrow, high band (README: the thresholds were measured on
        // MiniLM): at 0.45 the topic guardrail would take every question for legal advice.
        ("threshold = 0.45", "threshold = 0.86"),
        ("min_similarity = 0.4", "min_similarity = 0.78"),
        // The second stage stays on: e5 has its own (ranker-multilingual-e5-small.json), and
        // "not found" uses its threshold.
    ];
    // Replace the model lines before config_file makes the paths absolute.
    let toml = {
        let text = env.config_text();
        let mut t = text.clone();
        for (a, b) in e5 {
            t = replaced(&t, a, b);
        }
        let models = repo().join("models");
        let t = replaced(
            &t,
            &format!("{:?}", env.dir.path().join("data")),
            &format!("{:?}", env.dir.path().join("data-e5")),
        )
        .replace("\"../models/", &format!("\"{}/", models.display()));
        let p = env.dir.path().join("e5.toml");
        std::fs::write(&p, t).unwrap();
        p
    };
    let config = load(&toml);
    assert_eq!(config.embedding.model.model_dir, dir);
    let e5 = load_embedder(&config).await;

    // The prefixes reach the model: the same model loaded without them, given the prefixed
    // text, makes the same vectors.
    {
        let plain_cfg = EmbedderConfig {
            model_dir: dir.clone(),
            ..config.embedding.model.clone()
        };
        let plain = FastEmbedder::load(&plain_cfg).unwrap();
        let q = "Wie viele Wochen Elternzeit?";
        let cos = docent::embed::dot(
            &e5.embed_query(q).unwrap(),
            &plain.embed_query(&format!("query: {q}")).unwrap(),
        );
        assert!(cos > 0.9999, "query prefix: cos {cos}");
        let p = "Elternzeit dauert zwanzig Wochen.".to_string();
        let cos = docent::embed::dot(
            &e5.embed_passages(std::slice::from_ref(&p)).unwrap()[0],
            &plain.embed_passages(&[format!("passage: {p}")]).unwrap()[0],
        );
        assert!(cos > 0.9999, "passage prefix: cos {cos}");
    }

    // Across languages e5 ranks the answer first or second among eight passages, MiniLM
    // (English only) mostly far down (measured: e5 [1, 2, 1, 1, 1, 2, 1, 1], MiniLM
    // [7, 7, 5, 1, 7, 2, 6, 2]).
    let (e5_ranks, minilm_ranks) = (ranks(e5.as_ref()), ranks(embedder().as_ref()));
    eprintln!("ranks: e5 {e5_ranks:?}, MiniLM {minilm_ranks:?}");
    assert!(
        e5_ranks.iter().all(|&r| r <= 2) && e5_ranks.iter().filter(|&&r| r == 1).count() >= 6,
        "e5 ranks {e5_ranks:?}"
    );
    assert!(
        mrr(&minilm_ranks) < 0.6 * mrr(&e5_ranks),
        "MiniLM {minilm_ranks:?} vs e5 {e5_ranks:?}"
    );

    // The MiniLM index refuses e5, and the reindexed one answers a German question with the
    // English handbook page (dense leg: BM25 cannot match across languages).
    let mut on_old = config.clone();
    on_old.index.data_dir = old_dir.clone();
    let msg = mismatch_message(start(on_old, e5.clone()).await);
    assert!(msg.contains("intfloat/multilingual-e5-small"), "{msg}");
    let out = reindex(&toml, &old_dir).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The daemon refuses the new index until the catch-up.
    let pending = start(config.clone(), e5.clone())
        .await
        .err()
        .map(|e| e.to_string());
    assert!(
        pending.as_deref().is_some_and(|m| m.contains("--catch-up")),
        "{pending:?}"
    );
    let caught = reindex_with(&toml, &old_dir, &["--catch-up"]).await;
    assert!(
        caught.status.success(),
        "{}",
        String::from_utf8_lossy(&caught.stderr)
    );
    let r = start(config, e5).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        r.daemon
            .state()
            .stats
            .chunks_embedded
            .load(Ordering::Relaxed),
        0
    );
    let dense = top_documents(
        &r,
        "Wie setze ich mein VPN-Passwort zurück?",
        RetrievalMode::Dense,
    )
    .await;
    assert!(
        dense[0].ends_with("it/passwords.txt") || dense[0].ends_with("it/vpn.md"),
        "{dense:?}"
    );
    let dense = top_documents(
        &r,
        "How many weeks of parental leave do birth parents get?",
        RetrievalMode::Dense,
    )
    .await;
    assert!(
        dense[..2]
            .iter()
            .any(|k| k.ends_with("company/elternzeit.md")),
        "{dense:?}"
    );
    // Ask runs e5's own second stage (the default): the German question is answered from the
    // English page, and a question the corpus cannot answer is "not found" at e5's threshold
    // (MiniLM's ranker, given e5's high cosines, took every passage for evidence).
    let vpn = r
        .ask(ALICE, "Wie setze ich mein VPN-Passwort zurück?")
        .await
        .unwrap();
    assert_eq!(vpn.status, pb::AnswerStatus::Answered as i32, "{vpn:?}");
    assert!(
        vpn.citations
            .iter()
            .any(|c| c.document_key.ends_with("it/passwords.txt")
                || c.document_key.ends_with("it/vpn.md")),
        "{vpn:?}"
    );
    let none = r
        .ask(ALICE, "Which moon of Jupiter has the thickest ice crust?")
        .await
        .unwrap();
    assert_eq!(none.status, pb::AnswerStatus::NoAnswer as i32, "{none:?}");
    r.stop().await;
}

/// A measurement, not a test (ignored; never asserts times): per-query embedding time and
/// similarity ranges of e5 against MiniLM, for benches/RESULTS.md and the thresholds in the
/// README. `cargo test --test integration model_swap::measure -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_e5_against_minilm() {
    let Some(dir) = e5_dir() else { return };
    let models = repo().join("models");
    let e5 = FastEmbedder::load(docent::embed::EmbeddingConfig {
        model: EmbedderConfig {
            model_id: "intfloat/multilingual-e5-small".into(),
            model_dir: dir,
            onnxruntime_lib: models.join("onnxruntime/libonnxruntime.so.1.31.1"),
            max_length: 256,
            batch_size: 32,
            threads: 2,
        },
        text: docent::embed::TextProfile {
            query_prefix: "query: ".into(),
            passage_prefix: "passage: ".into(),
            pooling: docent::embed::Pooling::Mean,
        },
        expect_vocab: Some(250_002),
    })
    .unwrap();
    let minilm = embedder();
    let topic: Vec<&str> = vec![
        "personal legal advice about suing someone, lawsuits, or hiring a lawyer",
        "Should I sue my landlord?",
        "Can I take my neighbour to court?",
        "Which lawyer should I hire for a personal dispute?",
        "Can I claim compensation in court after an accident?",
    ];
    let on_topic = [
        "Should I sue my landlord over the deposit?",
        "Is it worth going to court against my neighbour about the fence?",
        "Soll ich meinen Vermieter verklagen?",
        "Dois-je poursuivre mon employeur en justice ?",
    ];
    let work: Vec<&str> = QUESTIONS
        .iter()
        .map(|(q, _)| *q)
        .chain([
            "How do I reset my VPN password?",
            "What is the salary band for a senior software engineer?",
            "How many days can I work from home?",
            "Who approves my travel expenses?",
            "Wie beantrage ich Urlaub?",
            "Where is the parking garage of the Ghent office?",
        ])
        .collect();
    for (name, e) in [("e5", &e5 as &dyn Embedder), ("MiniLM", minilm.as_ref())] {
        let tv: Vec<Vec<f32>> = topic.iter().map(|t| e.embed_query(t).unwrap()).collect();
        let best = |q: &str| {
            let v = e.embed_query(q).unwrap();
            tv.iter()
                .map(|t| docent::embed::dot(&v, t))
                .fold(f32::MIN, f32::max)
        };
        let on: Vec<f32> = on_topic.iter().map(|q| best(q)).collect();
        let off: Vec<f32> = work.iter().map(|q| best(q)).collect();
        let passages: Vec<String> = PASSAGES.iter().map(|s| s.to_string()).collect();
        let pv = e.embed_passages(&passages).unwrap();
        let (mut rel, mut unrel) = (Vec::new(), Vec::new());
        for (q, want) in QUESTIONS {
            let qv = e.embed_query(q).unwrap();
            for (i, p) in pv.iter().enumerate() {
                let c = docent::embed::dot(&qv, p);
                if i == *want {
                    rel.push(c)
                } else {
                    unrel.push(c)
                }
            }
        }
        let mm = |v: &[f32]| {
            let lo = v.iter().cloned().fold(f32::MAX, f32::min);
            let hi = v.iter().cloned().fold(f32::MIN, f32::max);
            format!("{lo:.2}-{hi:.2}")
        };
        println!(
            "{name}: topic on {} off {}; question-passage relevant {} unrelated {}",
            mm(&on),
            mm(&off),
            mm(&rel),
            mm(&unrel)
        );
    }
    // Per-query time: 300 distinct questions, one at a time on the query session.
    let queries: Vec<String> = (0..300)
        .map(|i| {
            let (q, _) = QUESTIONS[i % QUESTIONS.len()];
            format!("{q} ({i})")
        })
        .collect();
    let passages: Vec<String> = (0..128)
        .map(|i| {
            format!(
                "{} {}",
                PASSAGES[i % PASSAGES.len()],
                "The policy applies to every employee and is reviewed every year by the people team. ".repeat(6)
            )
        })
        .collect();
    for (name, e) in [("e5", &e5 as &dyn Embedder), ("MiniLM", minilm.as_ref())] {
        e.embed_query("warm up").unwrap();
        let mut times: Vec<f64> = queries
            .iter()
            .map(|q| {
                let t = std::time::Instant::now();
                e.embed_query(q).unwrap();
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        times.sort_by(|a, b| a.total_cmp(b));
        let t = std::time::Instant::now();
        e.embed_passages(&passages).unwrap();
        let per_passage = t.elapsed().as_secs_f64() * 1000.0 / passages.len() as f64;
        let tokens: usize = passages
            .iter()
            .map(|p| e.token_counter().count(p))
            .sum::<usize>()
            / passages.len();
        println!(
            "{name}: query p50 {:.2} ms p95 {:.2} ms mean {:.2} ms; passages (~{tokens} tokens) {per_passage:.2} ms each",
            times[times.len() / 2],
            times[times.len() * 95 / 100],
            times.iter().sum::<f64>() / times.len() as f64
        );
    }
}
