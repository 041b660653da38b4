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
        let embedder: Arc<dyn Embedder> =
            Arc::new(FastEmbedder::load(&config.embedding).context("loading the embedding model")?);
        let tmp = tempfile::tempdir()?;
        let dir = index_dir.unwrap_or_else(|| tmp.path().join("index"));
        let (index, report) = run::open_or_build(&dir, &embedder, config.chunking, &corpus)?;
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
            rows.push((
                name,
                run::evaluate(&retriever, &scope, &queries, &qrels, mode)?,
            ));
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
            println!("{}", serde_json::to_string_pretty(&v)?);
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

pub async fn qa(conn: &ClientArgs, file: &Path, as_json: bool) -> anyhow::Result<ExitCode> {
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
    let mut outcomes = Vec::with_capacity(items.len());
    for item in &items {
        let r = client
            .ask(super::client::request(
                conn,
                pb::AskRequest {
                    on_behalf_of: String::new(),
                    question: item.question.clone(),
                    filter: None,
                },
            )?)
            .await?
            .into_inner();
        outcomes.push(qa::QaOutcome {
            answered: r.status == pb::AnswerStatus::Answered as i32,
            answer: r.answer,
            citations: r
                .citations
                .into_iter()
                .map(|c| (c.document_key, c.uri, c.chunk_id))
                .collect(),
        });
    }
    let report = qa::score(&items, &outcomes);
    if as_json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("questions                        {}", report.questions);
        println!(
            "gold passage cited               {:.3}",
            report.gold_cited_rate
        );
        println!(
            "expected text in answer          {:.3}",
            report.answer_contains_rate
        );
        println!(
            "citation precision               {:.3}",
            report.citation_precision
        );
        println!(
            "no-answer rate (unanswerable)    {:.3}",
            report.no_answer_rate_unanswerable
        );
        println!(
            "no-answer rate (answerable)      {:.3}",
            report.no_answer_rate_answerable
        );
    }
    Ok(ExitCode::SUCCESS)
}
