//! `docent eval`: retrieval quality on a BEIR-layout set, and answer quality of a running daemon
//! on a question set.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use docent_proto::v1 as pb;

use super::ClientArgs;
use crate::config::Config;
use crate::embed::{Embedder, FastEmbedder};
use crate::eval::{self, qa, run};
use crate::retrieve::{Mode, Retriever};

pub async fn beir(
    config: &Path,
    data: &Path,
    split: &str,
    index_dir: Option<PathBuf>,
    limit: Option<usize>,
    embed_cache: Option<PathBuf>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(config)?;
    let data = data.to_path_buf();
    let split = split.to_string();
    tokio::task::spawn_blocking(move || -> anyhow::Result<ExitCode> {
        let corpus = eval::load_corpus(&data.join("corpus.jsonl"))?;
        let mut queries = eval::load_queries(&data.join("queries.jsonl"))?;
        let qrels = eval::load_qrels(&data.join("qrels").join(format!("{split}.tsv")))?;
        queries.retain(|q| qrels.contains_key(&q.id));
        if let Some(n) = limit {
            queries.truncate(n);
        }
        let mut embedder: Arc<dyn Embedder> =
            Arc::new(FastEmbedder::load(&config.embedding).context("loading the embedding model")?);
        if let Some(path) = &embed_cache {
            let cached = eval::cache::CachedEmbedder::open(embedder, path)
                .with_context(|| format!("opening the embedding cache {}", path.display()))?;
            eprintln!(
                "embedding cache {}: {} vectors",
                path.display(),
                cached.len()
            );
            embedder = Arc::new(cached);
        }
        let tmp = tempfile::tempdir()?;
        let dir = index_dir.unwrap_or_else(|| tmp.path().join("index"));
        let bar = super::progress_bar(corpus.len() as u64, "indexing");
        let built = run::open_or_build(&dir, &embedder, config.chunking, &corpus, &|n| bar.inc(n));
        bar.finish_and_clear();
        let (index, report) = built?;
        if let Some(r) = &report {
            eprintln!(
                "indexed {} documents ({} chunks, {} failed) in {:.1} s",
                r.documents,
                r.chunks,
                r.failed,
                r.elapsed.as_secs_f64()
            );
        } else {
            eprintln!("reusing the index at {}", dir.display());
        }
        let retriever = Retriever::new(index, embedder, config.retrieval);
        let scope = run::eval_scope();
        let mut rows = Vec::new();
        for (name, mode) in [
            ("bm25", Mode::Bm25),
            ("dense", Mode::Dense),
            ("hybrid", Mode::Hybrid),
        ] {
            let bar = super::progress_bar(queries.len() as u64, name);
            let m = run::evaluate(&retriever, &scope, &queries, &qrels, mode, &|n| bar.inc(n));
            bar.finish_and_clear();
            rows.push((name, m?));
        }
        if as_json {
            let v: serde_json::Map<String, serde_json::Value> = rows
                .iter()
                .map(|(n, m)| {
                    (
                        n.to_string(),
                        serde_json::to_value(m).expect("plain struct"),
                    )
                })
                .collect();
            println!("{}", super::pretty_json(&v)?);
        } else {
            println!("{} queries ({split} split)", rows[0].1.queries);
            println!(
                "{:<8} {:>8} {:>10} {:>11} {:>8}",
                "mode", "nDCG@10", "recall@10", "recall@100", "MRR@10"
            );
            for (n, m) in &rows {
                println!(
                    "{:<8} {:>8.4} {:>10.4} {:>11.4} {:>8.4}",
                    n, m.ndcg_at_10, m.recall_at_10, m.recall_at_100, m.mrr_at_10
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    })
    .await?
}

pub async fn qa(
    conn: &ClientArgs,
    file: &Path,
    modes: &[super::AnswerModeArg],
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    use super::AnswerModeArg;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let items: Vec<qa::QaItem> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{}:{}", file.display(), i + 1))
        })
        .collect::<Result<_, _>>()?;
    let mut client =
        pb::assistant_client::AssistantClient::new(super::client::channel(conn).await?);
    let modes: Vec<Option<AnswerModeArg>> = if modes.is_empty() {
        vec![None]
    } else {
        modes.iter().copied().map(Some).collect()
    };
    let mut reports = Vec::new();
    for m in &modes {
        let (mode, name) = match m {
            None => (pb::AnswerMode::Unspecified, "default"),
            Some(AnswerModeArg::Extractive) => (pb::AnswerMode::Extractive, "extractive"),
            Some(AnswerModeArg::Generative) => (pb::AnswerMode::Generative, "generative"),
            Some(AnswerModeArg::Auto) => (pb::AnswerMode::Auto, "auto"),
        };
        let bar = crate::cli::progress_bar(items.len() as u64, name);
        let mut outcomes = Vec::with_capacity(items.len());
        // The items answered, in order with `outcomes`: a question whose call fails is left
        // out of the scores and counted (session 40's note: the first error ended the run).
        let mut scored = Vec::with_capacity(items.len());
        let (mut fallbacks, mut errors) = (0usize, 0usize);
        for (i, item) in items.iter().enumerate() {
            let ask = |client: &mut pb::assistant_client::AssistantClient<_>| {
                let req = super::client::answer_request(
                    conn,
                    pb::AskRequest {
                        question: item.question.clone(),
                        mode: mode as i32,
                        ..Default::default()
                    },
                );
                let mut client = client.clone();
                async move { client.ask(req?).await.map_err(anyhow::Error::from) }
            };
            let mut answered = ask(&mut client).await;
            // Once more after a pause, when the daemon was busy or away.
            if let Err(e) = &answered
                && e.downcast_ref::<tonic::Status>().is_some_and(|s| {
                    matches!(
                        s.code(),
                        tonic::Code::Unavailable | tonic::Code::ResourceExhausted
                    )
                })
            {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                answered = ask(&mut client).await;
            }
            let r = match answered {
                Ok(r) => r.into_inner(),
                // Errors that are not about this question end the run: the credential, the
                // daemon gone or out of quota (a review: each question paid for them again).
                Err(e)
                    if e.downcast_ref::<tonic::Status>().is_some_and(|s| {
                        matches!(
                            s.code(),
                            tonic::Code::Unauthenticated
                                | tonic::Code::PermissionDenied
                                | tonic::Code::Unavailable
                                | tonic::Code::ResourceExhausted
                        )
                    }) =>
                {
                    bar.finish_and_clear();
                    return Err(e.context(format!("question {}", i + 1)));
                }
                Err(e) => {
                    errors += 1;
                    bar.println(super::shown(&format!("question {}: {e:#}", i + 1)));
                    bar.inc(1);
                    continue;
                }
            };
            scored.push(item.clone());
            fallbacks += usize::from(
                r.details
                    .as_ref()
                    .is_some_and(|d| !d.fallback_reason.is_empty()),
            );
            outcomes.push(qa::QaOutcome {
                answered: r.status == pb::AnswerStatus::Answered as i32,
                blocked: r.status == pb::AnswerStatus::Blocked as i32,
                answer: r.answer,
                citations: r
                    .citations
                    .into_iter()
                    .map(|c| (c.document_key, c.uri, c.chunk_id))
                    .collect(),
            });
            bar.inc(1);
        }
        bar.finish_and_clear();
        if errors == items.len() && !items.is_empty() {
            anyhow::bail!("every question failed ({name}); the errors are above");
        }
        reports.push((name, qa::score(&scored, &outcomes), fallbacks, errors));
    }
    if as_json {
        let v: serde_json::Map<String, serde_json::Value> = reports
            .iter()
            .map(|(n, r, f, e)| {
                let mut v = serde_json::to_value(r).expect("report serialises");
                v["fallbacks"] = (*f).into();
                v["errors"] = (*e).into();
                (n.to_string(), v)
            })
            .collect();
        // One mode: the report itself, as before; several: keyed by mode.
        let out = if reports.len() == 1 {
            v.into_iter().next().map(|(_, v)| v).unwrap_or_default()
        } else {
            serde_json::Value::Object(v)
        };
        println!("{}", super::pretty_json(&out)?);
        let failed = reports.iter().any(|(.., e)| *e > 0);
        return Ok(if failed {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        });
    }
    print!("{:<34}", "");
    for (n, ..) in &reports {
        print!("{n:>12}");
    }
    println!();
    let row = |label: &str, f: &dyn Fn(&qa::QaReport) -> f64| {
        print!("{label:<34}");
        for (_, r, ..) in &reports {
            print!("{:>12.3}", f(r));
        }
        println!();
    };
    row("questions", &|r| r.questions as f64);
    row("gold page cited", &|r| r.gold_cited_rate);
    row("expected text in answer", &|r| r.answer_contains_rate);
    row("citation precision", &|r| r.citation_precision);
    row("citation precision (documents)", &|r| {
        r.citation_precision_documents
    });
    row("citation precision (all questions)", &|r| {
        r.citation_precision_all
    });

    row("no-answer rate (unanswerable)", &|r| {
        r.no_answer_rate_unanswerable
    });
    row("no-answer rate (answerable)", &|r| {
        r.no_answer_rate_answerable
    });
    print!("{:<34}", "blocked by a guardrail");
    for (_, r, ..) in &reports {
        print!("{:>12}", r.blocked);
    }
    println!();
    print!("{:<34}", "fallbacks to extractive");
    for (_, _, f, _) in &reports {
        print!("{f:>12}");
    }
    println!();
    print!("{:<34}", "questions that failed (not scored)");
    for (.., e) in &reports {
        print!("{e:>12}");
    }
    println!();
    let failed = reports.iter().any(|(.., e)| *e > 0);
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
