//! The `docent` command line: the daemon (`serve`), client commands over gRPC (`ask`, `search`,
//! `status`) and offline tools (`config check`, `hash-token`).

mod client;
mod eval;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::Config;
use crate::embed::{Embedder, FastEmbedder};

#[derive(Debug, Parser)]
#[command(
    name = "docent",
    version,
    about = "Self-hosted enterprise knowledge assistant"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: index the configured sources and serve the gRPC API.
    Serve {
        #[arg(long, short, env = "DOCENT_CONFIG")]
        config: PathBuf,
    },
    /// Ask a question; prints the answer with its sources.
    Ask {
        question: String,
        #[command(flatten)]
        conn: ClientArgs,
        #[command(flatten)]
        filter: FilterArgs,
        /// Print JSON: {"answer", "status", "sentences", "citations"}.
        #[arg(long)]
        json: bool,
    },
    /// Search passages (retrieval only).
    Search {
        query: String,
        #[command(flatten)]
        conn: ClientArgs,
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long, default_value_t = 10)]
        limit: u32,
        #[arg(long, value_enum, default_value_t = SearchMode::Hybrid)]
        mode: SearchMode,
        #[arg(long)]
        json: bool,
    },
    /// Show connectors and index statistics (admin identities only).
    Status {
        #[command(flatten)]
        conn: ClientArgs,
        #[arg(long)]
        json: bool,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Measure retrieval or answer quality on a labelled set.
    Eval {
        #[command(subcommand)]
        command: EvalCommand,
    },
    /// Print the sha256 of an API token, for `token_sha256` in the config (reads stdin if no
    /// token is given, so the token stays out of shell history).
    HashToken { token: Option<String> },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a config file and report every problem with its path.
    Check { file: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Retrieval quality (nDCG@10, recall@10/100, MRR@10 for BM25, dense and hybrid) on a set in
    /// BEIR layout (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv). Uses the config's embedding,
    /// chunking and retrieval settings.
    Beir {
        #[arg(long, short, env = "DOCENT_CONFIG")]
        config: PathBuf,
        /// Directory with corpus.jsonl, queries.jsonl and qrels/.
        data: PathBuf,
        #[arg(long, default_value = "test")]
        split: String,
        /// Keep the index here and reuse it on later runs (default: a temporary index).
        #[arg(long)]
        index: Option<PathBuf>,
        /// Evaluate only the first N judged queries.
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// Answer quality of a running daemon on a JSONL question set: one
    /// {"question", "gold": [doc key, chunk id or uri suffix], "answer": expected text, "unanswerable"} per line.
    Qa {
        file: PathBuf,
        #[command(flatten)]
        conn: ClientArgs,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SearchMode {
    Hybrid,
    Bm25,
    Dense,
}

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Daemon address (http://host:port, or https:// with TLS).
    #[arg(long, env = "DOCENT_ADDR", default_value = "http://127.0.0.1:7878")]
    pub addr: String,
    /// API token.
    #[arg(long, env = "DOCENT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) to trust for https addresses.
    #[arg(long, env = "DOCENT_CA")]
    pub ca: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Only these connector ids (repeatable).
    #[arg(long = "source")]
    pub sources: Vec<String>,
    /// Only documents whose uri starts with this.
    #[arg(long)]
    pub uri_prefix: Option<String>,
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config } => serve(config).await,
        Command::Ask {
            question,
            conn,
            filter,
            json,
        } => client::ask(&conn, &filter, question, json).await,
        Command::Search {
            query,
            conn,
            filter,
            limit,
            mode,
            json,
        } => client::search(&conn, &filter, query, limit, mode, json).await,
        Command::Status { conn, json } => client::status(&conn, json).await,
        Command::Config {
            command: ConfigCommand::Check { file },
        } => config_check(&file),
        Command::Eval {
            command:
                EvalCommand::Beir {
                    config,
                    data,
                    split,
                    index,
                    limit,
                    json,
                },
        } => eval::beir(&config, &data, &split, index, limit, json).await,
        Command::Eval {
            command: EvalCommand::Qa { file, conn, json },
        } => eval::qa(&conn, &file, json).await,
        Command::HashToken { token } => {
            let token = match token {
                Some(t) => t,
                None => {
                    let mut s = String::new();
                    std::io::stdin().read_line(&mut s)?;
                    s.trim_end_matches(['\n', '\r']).to_string()
                }
            };
            println!("{}", hex::encode(crate::identity::token_hash(&token)));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn config_check(file: &std::path::Path) -> anyhow::Result<ExitCode> {
    match Config::load(file) {
        Ok(c) => {
            println!(
                "{}: ok ({} connector(s), {} identit{}, {} group(s))",
                file.display(),
                c.connectors.len(),
                c.identities.len(),
                if c.identities.len() == 1 { "y" } else { "ies" },
                c.groups.len()
            );
            for (p, what) in [
                (&c.embedding.model_dir, "embedding.model_dir"),
                (&c.embedding.onnxruntime_lib, "embedding.onnxruntime_lib"),
            ] {
                if !p.exists() {
                    eprintln!(
                        "warning: {what}: {} does not exist (run scripts/setup-models.sh)",
                        p.display()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::from(2))
        }
    }
}

async fn serve(config_path: PathBuf) -> anyhow::Result<ExitCode> {
    let config = Config::load(&config_path)?;
    let ecfg = config.embedding.clone();
    let t0 = std::time::Instant::now();
    let embedder = tokio::task::spawn_blocking(move || FastEmbedder::load(&ecfg))
        .await?
        .context("loading the embedding model")?;
    tracing::info!(
        model = embedder.model_id(),
        dim = embedder.dim(),
        ms = t0.elapsed().as_millis() as u64,
        "model loaded"
    );
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("binding {}", config.server.listen))?;
    let daemon = crate::server::start(config, Arc::new(embedder), listener).await?;
    let token = daemon.shutdown_token();
    tokio::spawn(async move {
        crate::shutdown::signal().await;
        tracing::info!("shutting down");
        token.cancel();
    });
    daemon.wait().await?;
    Ok(ExitCode::SUCCESS)
}
