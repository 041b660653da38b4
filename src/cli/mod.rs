//! The `docent` command line: the daemon (`serve`), client commands over gRPC (`ask`, `search`,
//! `status`) and offline tools (`config check`, `hash-token`).

mod chat;
mod client;
mod eval;

use std::path::{Path, PathBuf};
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

impl Cli {
    /// Whether the command ends, quietly and with status 141 as a tool killed by SIGPIPE
    /// does, when the reader of its output goes (`docent search … | head`): `println!` panics
    /// on a closed stdout, and a session 45 walkthrough showed "a thread panicked (a bug:
    /// please report it)" for `docent ask … | head -1`. Every command but `serve`, whose
    /// output is its log. (SIGPIPE itself stays ignored, as Rust sets it: HTTP/2 writes the
    /// daemon's socket with `writev`, which would raise it when the daemon resets the
    /// connection: a review of a first version that restored it.)
    pub fn ends_with_its_reader(&self) -> bool {
        !matches!(self.command, Command::Serve { .. })
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: index the configured sources and serve the gRPC API.
    Serve {
        #[arg(long, short, env = "DOCENT_CONFIG")]
        config: PathBuf,
        /// DEVELOPMENT ONLY: accept requests without credentials that name their user in the
        /// x-docent-user header (`--dev-user` in the CLI). Refused on a non-loopback address.
        /// Logged loudly at start.
        #[arg(long)]
        insecure_dev: bool,
    },
    /// Ask a question; prints the answer as it streams, then its sources.
    Ask {
        question: String,
        #[command(flatten)]
        conn: ClientArgs,
        #[command(flatten)]
        filter: FilterArgs,
        /// Ask on behalf of this user (needs an identity or key with the act_as permission).
        #[arg(long = "as", value_name = "USER")]
        on_behalf_of: Option<String>,
        /// Who writes the answer (default: the daemon's `answer.mode`).
        #[arg(long, value_enum)]
        mode: Option<AnswerModeArg>,
        /// Continue this conversation.
        #[arg(long, value_name = "ID", conflicts_with = "new_conversation")]
        conversation: Option<String>,
        /// Start a conversation (its id is printed on stderr).
        #[arg(long)]
        new_conversation: bool,
        /// Print JSON (unary Ask): {"answer", "status", "sentences", "citations", "guardrails", "details"}.
        #[arg(long)]
        json: bool,
    },
    /// Interactive questions in one conversation, answers streamed.
    Chat {
        #[command(flatten)]
        conn: ClientArgs,
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long = "as", value_name = "USER")]
        on_behalf_of: Option<String>,
        #[arg(long, value_enum)]
        mode: Option<AnswerModeArg>,
        /// Continue this conversation instead of starting one.
        #[arg(long, value_name = "ID")]
        conversation: Option<String>,
    },
    /// Your conversations: list, show ID, delete ID.
    Conversations {
        #[command(subcommand)]
        command: ConversationsCommand,
        #[command(flatten)]
        conn: ClientArgs,
        #[arg(long = "as", value_name = "USER", global = true)]
        on_behalf_of: Option<String>,
        #[arg(long, global = true)]
        json: bool,
    },
    /// Rate an answer: `docent feedback CONVERSATION TURN up|down [--reason R]… [--comment C]`.
    Feedback {
        conversation: String,
        turn: u32,
        #[arg(value_parser = ["up", "down"])]
        vote: String,
        /// not_factually_correct, harmful, document_not_relevant, incomplete, other (repeatable).
        #[arg(long = "reason")]
        reasons: Vec<String>,
        #[arg(long)]
        comment: Option<String>,
        #[command(flatten)]
        conn: ClientArgs,
        #[arg(long = "as", value_name = "USER")]
        on_behalf_of: Option<String>,
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
        /// Search on behalf of this user (needs the act_as permission).
        #[arg(long = "as", value_name = "USER")]
        on_behalf_of: Option<String>,
        /// Passages per document (1..=5; several come from the second ranking stage).
        #[arg(long = "passages", default_value_t = 1)]
        passages_per_document: u32,
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
    /// Push documents to a `type = "push"` source, or delete them (needs the ingest permission).
    /// Files: the key is the path as given, the version its mtime and size. JSONL: one document
    /// per line, {"key", "version", "title", "uri", "text" or "data_base64", "mime_type",
    /// "allow", "deny", "attributes", "modified_at"}.
    Ingest {
        #[command(flatten)]
        conn: ClientArgs,
        /// The push source (connector id).
        #[arg(long)]
        source: String,
        /// Files to push (documents of any supported format).
        files: Vec<PathBuf>,
        /// Read documents from a JSONL file instead ("-" for stdin).
        #[arg(long)]
        jsonl: Option<PathBuf>,
        /// Delete these keys instead of pushing.
        #[arg(long, num_args = 1.., conflicts_with_all = ["files", "jsonl"])]
        delete: Vec<String>,
        /// ACL of pushed files: principals that may read (repeatable), e.g. group:staff.
        #[arg(long)]
        allow: Vec<String>,
        #[arg(long)]
        deny: Vec<String>,
        /// Answer only once what was accepted or deleted is committed (durable and
        /// searchable); what the pipeline then failed is reported as refused.
        #[arg(long)]
        wait: bool,
        #[arg(long)]
        json: bool,
    },
    /// Reconcile a connector now (admin identities only); prints the job id, or with --wait a
    /// progress bar and the job's outcome (exit 1 unless it succeeded).
    Sync {
        connector: String,
        #[command(flatten)]
        conn: ClientArgs,
        /// Let this sync delete past the deletion-protection threshold.
        #[arg(long)]
        force_deletions: bool,
        /// Re-read and re-parse every document, not only those whose version changed.
        #[arg(long)]
        full: bool,
        #[arg(long)]
        wait: bool,
        /// With --wait: stop waiting after this many seconds (exit 2; the job goes on).
        #[arg(long, value_name = "SECS", requires = "wait")]
        wait_timeout: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// A connector's sync jobs, most recent first (admin identities only).
    Jobs {
        connector: String,
        /// Show one job in full (its failures).
        #[arg(long)]
        id: Option<u64>,
        #[command(flatten)]
        conn: ClientArgs,
        #[arg(long)]
        json: bool,
    },
    /// Stop acting on a connector's changes until resumed (admin identities only).
    Pause {
        connector: String,
        #[command(flatten)]
        conn: ClientArgs,
    },
    /// Resume a paused connector; it first catches up with a reconciliation.
    Resume {
        connector: String,
        #[command(flatten)]
        conn: ClientArgs,
    },
    /// Identity administration (admin identities only).
    Admin {
        #[command(flatten)]
        conn: ClientArgs,
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Build a new index beside an existing one, every stored chunk re-embedded with the model
    /// of CONFIG, into CONFIG's index.data_dir (which must not exist yet). Documents, ACLs,
    /// attributes and connector checkpoints are carried over, so no source is crawled again.
    /// The old index is only read: the daemon may keep serving it meanwhile. Then stop the
    /// daemon, run it again with --catch-up, and start the daemon with CONFIG. An interrupted
    /// run resumes. On Milvus: stop the ingest node first (query nodes may keep serving);
    /// --from names the old collection, CONFIG's index.milvus.collection the new one, and
    /// there is no --catch-up.
    Reindex {
        /// The new config: its [embedding] model, and index.data_dir for the new index (on
        /// Milvus: index.milvus.collection for the new collection).
        #[arg(long, short)]
        config: PathBuf,
        /// The existing index (the current config's index.data_dir; on Milvus, the current
        /// collection's name, on the same server).
        #[arg(long)]
        from: PathBuf,
        /// Bring the new index (built by an earlier reindex) to the old index's last commit:
        /// what was written, deleted or narrowed there since is applied, embedding only what
        /// changed. With the daemon stopped, right before the switch.
        #[arg(long)]
        catch_up: bool,
        #[arg(long)]
        json: bool,
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
pub enum ConversationsCommand {
    List,
    Show { id: String },
    Delete { id: String },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AnswerModeArg {
    Extractive,
    Generative,
    Auto,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// LLM tokens per identity over the last DAYS days, with the estimated cost.
    Usage {
        #[arg(long, default_value_t = 1)]
        days: u32,
        #[arg(long)]
        json: bool,
    },
    /// Every feedback record as JSON lines.
    FeedbackExport,
    /// Who is this user (id or any alias): canonical id, aliases, groups, permissions.
    Whois {
        user: String,
        #[arg(long)]
        json: bool,
    },
    /// Can this user read this document, and which ACL entry decided (exit 1 when not).
    CanRead {
        user: String,
        document_key: String,
        #[arg(long)]
        json: bool,
    },
    /// Re-read identities, groups, API keys, identity files and the JWKS without a restart.
    Reload {
        #[arg(long)]
        json: bool,
    },
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
        /// Reuse passage vectors from this file (created on first use; keyed by the exact text
        /// embedded), so rebuilding the index after a change that keeps the vectors (analyzer,
        /// fusion) skips the embedding.
        #[arg(long)]
        embed_cache: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Answer quality of a running daemon on a JSONL question set: one
    /// {"question", "gold": [doc key, chunk id or uri suffix], "answer": expected text, "unanswerable"} per line.
    Qa {
        file: PathBuf,
        #[command(flatten)]
        conn: ClientArgs,
        /// Answer modes to evaluate, side by side (repeatable; default: the daemon's default).
        #[arg(long = "mode", value_enum)]
        modes: Vec<AnswerModeArg>,
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
    #[arg(
        long,
        global = true,
        env = "DOCENT_ADDR",
        default_value = "http://127.0.0.1:7878"
    )]
    pub addr: String,
    /// API token. A token on the command line shows in the process list and shell history:
    /// prefer --token-file or DOCENT_TOKEN.
    #[arg(long, global = true, env = "DOCENT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the API token (its first line; read once, at start). Taken over --token
    /// and DOCENT_TOKEN when both are given (an environment's token cannot be told from the
    /// command line's, so neither refuses the other).
    #[arg(
        long,
        global = true,
        env = "DOCENT_TOKEN_FILE",
        value_name = "PATH",
        value_parser = read_token_file
    )]
    pub token_file: Option<String>,
    /// CA certificate (PEM) to trust for https addresses.
    #[arg(long, global = true, env = "DOCENT_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mTLS; with --key.
    #[arg(long, global = true, env = "DOCENT_CERT")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of the client certificate.
    #[arg(long, global = true, env = "DOCENT_KEY")]
    pub key: Option<PathBuf>,
    /// Against a daemon started with --insecure-dev only: act as this user without a token.
    #[arg(long, global = true, env = "DOCENT_DEV_USER")]
    pub dev_user: Option<String>,
    /// Send the token over plaintext http:// to a host that is not loopback (a network that is
    /// encrypted by other means). Refused without this flag.
    #[arg(long, global = true)]
    pub allow_plain_http: bool,
    /// Deadline of each call to the daemon, in seconds (0: none; default 300, and none for
    /// answers, whose time a slow model sets). The daemon stops the call's work past it; a
    /// waiting push (`ingest --wait`) answers RETRY_LATER before it.
    #[arg(long, global = true, env = "DOCENT_TIMEOUT",
          value_parser = clap::value_parser!(u64).range(0..=31_536_000))]
    pub timeout: Option<u64>,
}

/// The token in the file at `path`: its first line, trimmed (a trailing newline, as `echo`
/// writes, is not part of it). An empty one is an error.
fn read_token_file(path: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        return Err(format!("{path} holds no token"));
    }
    Ok(token)
}

impl ClientArgs {
    /// The token given, by --token (or DOCENT_TOKEN) or --token-file.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref().or(self.token_file.as_deref())
    }
}

#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Only these connector ids (repeatable).
    #[arg(long = "source")]
    pub sources: Vec<String>,
    /// Only documents whose uri starts with this.
    #[arg(long)]
    pub uri_prefix: Option<String>,
    /// Attribute condition (repeatable; all must hold): `key=value`, `key!=value`,
    /// `key^=prefix`, `key>=x`, `key<=x`, `key:a,b,c` (one of); a leading `!` negates; `|`
    /// separates alternatives. E.g. `--where file_type=pdf|file_type=docx --where modified_at>=1767225600`.
    #[arg(long = "where", value_name = "COND", value_parser = client::parse_where)]
    pub conditions: Vec<docent_proto::v1::AttributeFilter>,
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve {
            config,
            insecure_dev,
        } => serve(config, insecure_dev).await,
        Command::Ask {
            question,
            conn,
            filter,
            on_behalf_of,
            mode,
            conversation,
            new_conversation,
            json,
        } => {
            let a = chat::AskArgs {
                question,
                on_behalf_of,
                mode,
                conversation,
                new_conversation,
                json,
            };
            chat::ask(&conn, &filter, a).await
        }
        Command::Chat {
            conn,
            filter,
            on_behalf_of,
            mode,
            conversation,
        } => chat::chat(&conn, &filter, on_behalf_of, mode, conversation).await,
        Command::Conversations {
            command,
            conn,
            on_behalf_of,
            json,
        } => {
            let cmd = match command {
                ConversationsCommand::List => chat::ConversationsCmd::List,
                ConversationsCommand::Show { id } => chat::ConversationsCmd::Show(id),
                ConversationsCommand::Delete { id } => chat::ConversationsCmd::Delete(id),
            };
            chat::conversations(&conn, cmd, on_behalf_of, json).await
        }
        Command::Feedback {
            conversation,
            turn,
            vote,
            reasons,
            comment,
            conn,
            on_behalf_of,
        } => {
            let a = chat::FeedbackArgs {
                conversation,
                turn,
                up: vote == "up",
                reasons,
                comment,
                on_behalf_of,
            };
            chat::feedback(&conn, a).await
        }
        Command::Search {
            query,
            conn,
            filter,
            limit,
            mode,
            on_behalf_of,
            passages_per_document,
            json,
        } => {
            let a = client::SearchArgs {
                query,
                limit,
                mode,
                on_behalf_of,
                passages_per_document,
                json,
            };
            client::search(&conn, &filter, a).await
        }
        Command::Admin { conn, command } => client::admin(&conn, command).await,
        Command::Sync {
            connector,
            conn,
            force_deletions,
            full,
            wait,
            wait_timeout,
            json,
        } => {
            let how = client::SyncHow {
                force_deletions,
                full,
                wait,
                wait_timeout: wait_timeout.map(std::time::Duration::from_secs),
                json,
            };
            client::sync(&conn, &connector, how).await
        }
        Command::Jobs {
            connector,
            id,
            conn,
            json,
        } => client::jobs(&conn, &connector, id, json).await,
        Command::Pause { connector, conn } => client::pause(&conn, &connector, true).await,
        Command::Resume { connector, conn } => client::pause(&conn, &connector, false).await,
        Command::Ingest {
            conn,
            source,
            files,
            jsonl,
            delete,
            allow,
            deny,
            wait,
            json,
        } => {
            let what = client::IngestArgs {
                source,
                files,
                jsonl,
                delete,
                allow,
                deny,
                wait,
                json,
            };
            client::ingest(&conn, what).await
        }
        Command::Status { conn, json } => client::status(&conn, json).await,
        Command::Config {
            command: ConfigCommand::Check { file },
        } => config_check(&file),
        Command::Reindex {
            config,
            from,
            catch_up: false,
            json,
        } => reindex(&config, &from, json).await,
        Command::Reindex {
            config,
            from,
            catch_up: true,
            json,
        } => reindex_catch_up(&config, &from, json).await,
        Command::Eval {
            command:
                EvalCommand::Beir {
                    config,
                    data,
                    split,
                    index,
                    limit,
                    embed_cache,
                    json,
                },
        } => eval::beir(&config, &data, &split, index, limit, embed_cache, json).await,
        Command::Eval {
            command:
                EvalCommand::Qa {
                    file,
                    conn,
                    modes,
                    json,
                },
        } => eval::qa(&conn, &file, &modes, json).await,
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
            // (Typos in group names went unchecked: a misspelt deny protects no one.)
            match (std::fs::read_to_string(file), c.identity_files()) {
                (Ok(text), Ok(files)) => {
                    for (at, group) in crate::config::undefined_groups(&text, &c, &files) {
                        eprintln!(
                            "warning: {}",
                            crate::config::undefined_group_warning(&at, &group)
                        );
                    }
                }
                (_, Err(e)) => eprintln!(
                    "warning: the identity files could not be read ({e}): group names were not \
                     checked"
                ),
                (Err(e), _) => eprintln!("warning: {e}: group names were not checked"),
            }
            for w in crate::config::warnings(&c) {
                eprintln!("warning: {w}");
            }
            for (p, what) in [
                (&c.embedding.model.model_dir, "embedding.model_dir"),
                (
                    &c.embedding.model.onnxruntime_lib,
                    "embedding.onnxruntime_lib",
                ),
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

async fn serve(config_path: PathBuf, insecure_dev: bool) -> anyhow::Result<ExitCode> {
    let reload = crate::shutdown::ReloadSignal::new();
    let config = Config::load(&config_path)?;
    for w in crate::config::warnings(&config) {
        tracing::warn!("{w}");
    }
    if let (Ok(text), Ok(files)) = (
        std::fs::read_to_string(&config_path),
        config.identity_files(),
    ) {
        for (at, group) in crate::config::undefined_groups(&text, &config, &files) {
            tracing::warn!(
                "{}",
                crate::guardrail::pii::for_log(&crate::config::undefined_group_warning(
                    &at, &group
                ))
            );
        }
    }
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
    // Bound now (a port in use fails the start at once), listening only once the daemon can
    // answer (see `server::Listener`).
    let addr = config.server.listen;
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .and_then(|s| {
        s.set_reuseaddr(true)?;
        s.bind(addr)?;
        Ok(s)
    })
    .with_context(|| format!("binding {addr}"))?;
    // A SIGHUP during the start is applied before the port opens; after, at once. The daemon's
    // state is held weakly: a stopped daemon's state (its index above all) is released at once
    // (session 43's review: this task held it, and every stop waited 10 s for the index).
    let pending = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started: Arc<std::sync::OnceLock<std::sync::Weak<crate::service::AppState>>> =
        Arc::default();
    let reload_now = |state: &crate::service::AppState| {
        if let Err(e) = state.reload_identities() {
            // The error can quote names and aliases (a name given to two identities).
            tracing::error!(error = %crate::guardrail::pii::for_log(&e.to_string()), "identity reload failed; keeping the current identities, less what the file no longer grants");
        }
    };
    tokio::spawn(crate::shutdown::on_reload(reload, {
        let (pending, started) = (pending.clone(), started.clone());
        move || match started.get() {
            Some(state) => {
                if let Some(state) = state.upgrade() {
                    reload_now(&state);
                }
            }
            // Marked first, then asked again: either this or the start sees it (a review:
            // the start could read the mark between the two).
            None => {
                pending.store(true, std::sync::atomic::Ordering::SeqCst);
                std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
                if let Some(state) = started.get().and_then(std::sync::Weak::upgrade)
                    && pending.swap(false, std::sync::atomic::Ordering::SeqCst)
                {
                    reload_now(&state);
                }
            }
        }
    }));
    let opts = crate::server::StartOptions {
        insecure_dev,
        config_path: Some(config_path.clone()),
        server_drain: None,
        reload_pending: Some(pending.clone()),
    };
    let daemon = crate::server::start_with(config, Arc::new(embedder), socket, opts).await?;
    let _ = started.set(Arc::downgrade(daemon.state()));
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    // One that came between the daemon's own check and now.
    if pending.swap(false, std::sync::atomic::Ordering::SeqCst) {
        let state = daemon.state().clone();
        tokio::task::spawn_blocking(move || reload_now(&state)).await?;
    }
    let token = daemon.shutdown_token();
    tokio::spawn(async move {
        crate::shutdown::signal().await;
        tracing::info!("shutting down");
        token.cancel();
        // A second signal ends the process at once: the index is crash-safe, and the writes
        // not yet committed are sent again (session 43's review: it was ignored, and a stop
        // could take minutes). One within a second of the first is the same stop sent twice
        // (a terminal and a process manager both passing on a ^C).
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        crate::shutdown::signal().await;
        tracing::warn!("a second signal: exiting without waiting for the shutdown");
        std::process::exit(143);
    });
    daemon.wait().await?;
    Ok(ExitCode::SUCCESS)
}

/// `docent reindex`: re-embeds the index at `from` into the config's data dir.
async fn reindex(config_path: &Path, from: &Path, as_json: bool) -> anyhow::Result<ExitCode> {
    use crate::ingest::reembed;
    let config = Config::load(config_path)?;
    if let Some(milvus) = &config.index.milvus {
        return reindex_milvus(&config, milvus, from, as_json).await;
    }
    let to = config.index.data_dir.clone();
    // Before loading the model: a wrong path is known in a second.
    reembed::check_paths(from, &to)?;
    let embedder = load_embedder(&config).await?;
    let from = from.to_path_buf();
    let from_dir = from.clone();
    let max_length = config.embedding.model.max_length;
    let signature = crate::index::ModelSignature::of(&embedder);
    eprintln!(
        "re-embedding {} into {} with {signature}",
        from.display(),
        to.display(),
    );
    let target = to.clone();
    let r = with_progress("re-embedding", move |progress| {
        reembed::reembed(&from, &target, &embedder, Some(max_length), progress)
    })
    .await??;
    let next = format!(
        "stop the daemon; run this again with --catch-up (what the old index committed since it was read: pushes, deletes, narrowed ACLs); copy assistant.redb (conversations, feedback, usage) from the old directory if present; start the daemon with {}",
        config_path.display()
    );
    print_reindex(
        &r,
        &signature,
        &from_dir.display().to_string(),
        ("index", to.display().to_string()),
        max_length,
        &next,
        as_json,
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `docent reindex` on the Milvus backend: the collection named by `--from` (on the new
/// config's server) into the new config's collection.
async fn reindex_milvus(
    config: &Config,
    to: &crate::index::milvus::MilvusConfig,
    from: &Path,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let from_config = crate::index::milvus::MilvusConfig {
        collection: from.to_string_lossy().into_owned(),
        ..to.clone()
    };
    let embedder = load_embedder(config).await?;
    let max_length = config.embedding.model.max_length;
    let signature = crate::index::ModelSignature::of(&embedder);
    let source = format!("collection {}", from_config.collection);
    eprintln!(
        "re-embedding {source} into {} with {signature}",
        to.collection
    );
    let target = to.clone();
    let r = with_progress("re-embedding", move |progress| {
        crate::ingest::reembed::reembed_milvus(
            &from_config,
            &target,
            &embedder,
            Some(max_length),
            progress,
        )
    })
    .await??;
    let next = format!(
        "start the ingest node and point the query nodes at collection {} (the new config); once satisfied, drop the old collection",
        to.collection
    );
    print_reindex(
        &r,
        &signature,
        &source,
        ("collection", to.collection.clone()),
        max_length,
        &next,
        as_json,
    )?;
    Ok(ExitCode::SUCCESS)
}

/// What a reindex built: JSON (the new index under `target.0`: `index` or `collection`), or
/// lines for people with the warnings and the next step.
fn print_reindex(
    r: &crate::ingest::reembed::ReembedReport,
    signature: &crate::index::ModelSignature,
    source: &str,
    target: (&str, String),
    max_length: usize,
    next: &str,
    as_json: bool,
) -> anyhow::Result<()> {
    if as_json {
        let mut v = serde_json::json!({
            "documents": r.documents, "chunks": r.chunks,
            "over_length": r.over_length, "from_model": r.from_model.to_string(),
            "vectors_copied": r.vectors_copied, "resumed": r.resumed,
            "unreadable": r.unreadable,
            "seconds": r.elapsed.as_secs_f64(),
        });
        v[target.0] = target.1.into();
        println!("{}", pretty_json(&v)?);
        return Ok(());
    }
    let into = match target.0 {
        "collection" => format!("collection {}", target.1),
        _ => target.1,
    };
    println!(
        "{} {} documents ({} chunks, built with {}) into {into} in {:.1} s",
        if r.from_model == *signature {
            "rebuilt (same model: vectors copied, nothing embedded)"
        } else {
            "re-embedded"
        },
        r.documents,
        r.chunks,
        r.from_model,
        r.elapsed.as_secs_f64()
    );
    if r.resumed > 0 {
        println!(
            "resumed: {} chunks an interrupted run had written were kept (their documents unchanged since)",
            r.resumed
        );
    }
    if r.unreadable > 0 {
        eprintln!(
            "warning: {} documents of {source} could not be read back and are not in the new index: `docent sync ID --full` sends them again",
            r.unreadable,
        );
    }
    if r.documents == 0 {
        eprintln!("warning: {source} holds no documents: is it the index the daemon serves?");
    }
    if r.over_length > 0 {
        println!(
            "{} chunks are longer than embedding.max_length ({max_length}) in the new model's tokens: the model reads their beginning only (raise max_length, or `docent sync ID --full` to re-chunk them)",
            r.over_length
        );
    }
    println!("next: {next}");
    Ok(())
}

/// The config's embedding model, loaded off the async runtime.
async fn load_embedder(config: &Config) -> anyhow::Result<FastEmbedder> {
    let ecfg = config.embedding.clone();
    tokio::task::spawn_blocking(move || FastEmbedder::load(&ecfg))
        .await?
        .context("loading the embedding model")
}

/// Runs `work` off the async runtime with a progress bar on stderr (also with --json: reports
/// go to stdout) that `work` moves with `(done, total)`.
async fn with_progress<T: Send + 'static>(
    label: &'static str,
    work: impl FnOnce(&mut dyn FnMut(u64, u64)) -> T + Send + 'static,
) -> anyhow::Result<T> {
    Ok(tokio::task::spawn_blocking(move || {
        let bar = progress_bar(0, label);
        let r = work(&mut |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        });
        bar.finish_and_clear();
        r
    })
    .await?)
}

/// `docent reindex --catch-up`: see [`crate::ingest::reembed::catch_up`].
async fn reindex_catch_up(
    config_path: &Path,
    from: &Path,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    use crate::ingest::reembed;
    let config = Config::load(config_path)?;
    if config.index.milvus.is_some() {
        anyhow::bail!(
            "docent reindex --catch-up works on an embedded index; on Milvus, stop the ingest node before docent reindex, so nothing is left to catch up"
        );
    }
    let to = config.index.data_dir.clone();
    let embedder = load_embedder(&config).await?;
    let from = from.to_path_buf();
    eprintln!(
        "bringing {} to the last commit of {}",
        to.display(),
        from.display()
    );
    let target = to.clone();
    let r = with_progress("catching up", move |progress| {
        reembed::catch_up(&from, &target, &embedder, progress)
    })
    .await??;
    if as_json {
        let v = serde_json::json!({
            "index": to, "added": r.added, "changed": r.changed, "removed": r.removed,
            "unchanged": r.unchanged, "chunks_embedded": r.chunks_embedded,
            "seconds": r.elapsed.as_secs_f64(),
        });
        println!("{}", pretty_json(&v)?);
    } else {
        println!(
            "caught up {}: {} added, {} changed, {} removed, {} unchanged ({} chunks embedded) in {:.1} s",
            to.display(),
            r.added,
            r.changed,
            r.removed,
            r.unchanged,
            r.chunks_embedded,
            r.elapsed.as_secs_f64()
        );
        println!(
            "next: copy assistant.redb from the old directory if present, then start the daemon with {}",
            config_path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A progress bar on stderr for long loops: drawn in place on a terminal; elsewhere (a log, a
/// pipe, `kubectl exec` without a TTY) a plain line at most every [`LOG_EVERY`], so that runs of
/// hours still show they advance.
pub fn progress_bar(len: u64, label: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    let bar = indicatif::ProgressBar::new(len);
    let on_terminal = std::io::stderr().is_terminal();
    let template = if on_terminal {
        "{msg} {bar:30} {pos}/{len} {eta}"
    } else {
        "{msg}: {pos}/{len} ({percent}%), {elapsed} elapsed, about {eta} left"
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    if !on_terminal {
        bar.set_draw_target(indicatif::ProgressDrawTarget::term_like_with_hz(
            Box::new(LogLines::default()),
            1,
        ));
    }
    bar.set_message(label.to_string());
    bar
}

/// A spinner with a message on stderr for waits of unknown length, as [`progress_bar`] (a
/// line at most every [`LOG_EVERY`] away from a terminal).
pub fn progress_spinner() -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    let bar = indicatif::ProgressBar::new_spinner();
    if !std::io::stderr().is_terminal() {
        if let Ok(style) = indicatif::ProgressStyle::with_template("{msg}") {
            bar.set_style(style);
        }
        bar.set_draw_target(indicatif::ProgressDrawTarget::term_like_with_hz(
            Box::new(LogLines::default()),
            1,
        ));
    }
    bar
}

/// How often [`progress_bar`] writes a line when stderr is not a terminal.
const LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// A "terminal" for indicatif that writes each drawn state as a line of its own (on stderr),
/// at most one per [`LOG_EVERY`] (cursor movements and clearing do nothing).
struct LogLines {
    last: std::sync::Mutex<Option<std::time::Instant>>,
    out: std::sync::Mutex<Box<dyn std::io::Write + Send>>,
}

impl Default for LogLines {
    fn default() -> Self {
        Self {
            last: Default::default(),
            out: std::sync::Mutex::new(Box::new(std::io::stderr())),
        }
    }
}

impl std::fmt::Debug for LogLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogLines")
    }
}

impl indicatif::TermLike for LogLines {
    fn width(&self) -> u16 {
        200
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.write_str(s)
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(());
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            *last = Some(std::time::Instant::now());
            let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
            writeln!(out, "{s}")?;
        }
        Ok(())
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `v` as pretty JSON that may be printed to a terminal: serde_json escapes only the controls
/// below U+0020, so DEL, the C1 controls (U+009B is CSI, U+009D OSC) and bidirectional
/// overrides in a title or a comment went to the terminal raw (a review). They are written as
/// `\uXXXX` escapes, which read back as the same JSON.
pub(crate) fn pretty_json<T: serde::Serialize + ?Sized>(v: &T) -> serde_json::Result<String> {
    Ok(terminal_safe_json(serde_json::to_string_pretty(v)?))
}

/// Serialized JSON `s` with DEL, the C1 controls and bidirectional overrides escaped (see
/// [`pretty_json`]). Outside its strings, serialized JSON is ASCII.
pub(crate) fn terminal_safe_json(s: String) -> String {
    let bad = |c: char| matches!(c, '\u{7F}'..='\u{9F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    if !s.chars().any(bad) {
        return s;
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match bad(c) {
            true => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            false => out.push(c),
        }
    }
    out
}

/// `s` as it may be printed to a terminal: control characters (ESC, C1, DEL; all but line
/// breaks and tabs) and bidirectional overrides shown as U+FFFD. Document titles, snippets,
/// answers and error reasons come from documents anyone with write access to a source may
/// have written: an escape sequence in them would otherwise run in the reader's terminal
/// (rewriting what is shown, setting the clipboard, hiding a link). JSON output is escaped by
/// the serializer instead.
pub(crate) fn shown(s: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| {
        (c.is_control() && c != '\n' && c != '\t')
            || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
    };
    if !s.chars().any(bad) {
        return std::borrow::Cow::Borrowed(s);
    }
    std::borrow::Cow::Owned(
        s.chars()
            .map(|c| if bad(c) { '\u{FFFD}' } else { c })
            .collect(),
    )
}

/// [`shown`] for a value printed on a line of its own making: a line break in it is shown as
/// `\n`, so that a file name holding one cannot print a line that looks like the command's own
/// (a review: a skipped file named `x\nconnector hr (fs): watching, 0 documents` did).
pub(crate) fn shown_line(s: &str) -> std::borrow::Cow<'_, str> {
    match shown(s) {
        std::borrow::Cow::Borrowed(b) if !b.contains('\n') => std::borrow::Cow::Borrowed(b),
        other => std::borrow::Cow::Owned(other.replace('\n', "\\n")),
    }
}

#[cfg(test)]
mod shown_tests {
    use super::{shown, shown_line};

    #[test]
    fn a_value_on_a_line_of_its_own_cannot_break_it() {
        assert_eq!(
            shown_line("x\nconnector hr (fs): watching"),
            "x\\nconnector hr (fs): watching"
        );
        assert_eq!(shown_line("plain.md"), "plain.md");
        assert_eq!(shown_line("a\u{1B}[2Jb"), "a\u{FFFD}[2Jb");
    }

    /// Found by a review: serde_json leaves DEL, the C1 controls and bidirectional overrides
    /// as they are, so `--json` output sent them to the terminal raw. Escaped, the JSON reads
    /// back the same.
    #[test]
    fn json_output_escapes_what_a_terminal_would_act_on() {
        let v = serde_json::json!({"title": "Report\u{9d}52;c;ZXZpbA==\u{7} \u{9b}2J \u{7f} \u{202E}exe"});
        let out = super::pretty_json(&v).unwrap();
        assert!(
            !out.chars().any(|c| c.is_control() && c != '\n') && !out.contains('\u{202E}'),
            "{out:?}"
        );
        let back: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(back, v);
        assert_eq!(super::terminal_safe_json("{\"a\":1}".into()), "{\"a\":1}");
    }

    #[test]
    fn escape_sequences_from_documents_are_not_printed() {
        let title = "Report\u{1b}]52;c;ZXZpbA==\u{7}\u{1b}[2J \u{9b}31m \u{202E}fdp.exe";
        let out = shown(title);
        assert!(!out.chars().any(|c| c.is_control()), "{out:?}");
        assert!(!out.contains('\u{202E}'));
        assert!(out.starts_with("Report\u{FFFD}]52;c;ZXZpbA=="));
        assert!(matches!(
            shown("plain\ttext\nnext"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Away from a terminal, progress is a plain line, the first at once and then at most one
    /// per `LOG_EVERY` (a run of hours logs a few hundred lines, not a redraw per second).
    #[test]
    fn progress_off_a_terminal_is_a_line_now_and_then() {
        use indicatif::TermLike;
        #[derive(Clone, Default)]
        struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Shared {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Shared::default();
        let lines = LogLines {
            last: Default::default(),
            out: std::sync::Mutex::new(Box::new(buf.clone())),
        };
        lines.write_line("re-embedding: 256/600 (42%)").unwrap();
        lines.clear_line().unwrap();
        lines.move_cursor_up(1).unwrap();
        lines.write_line("re-embedding: 512/600 (85%)").unwrap();
        lines.write_str("  ").unwrap();
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text, "re-embedding: 256/600 (42%)\n");
        // Once LOG_EVERY has passed, the next state is written.
        *lines.last.lock().unwrap() = std::time::Instant::now().checked_sub(LOG_EVERY);
        lines.write_line("re-embedding: 600/600 (100%)").unwrap();
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(text.ends_with("600/600 (100%)\n"), "{text}");
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Connection flags, `--json` and `--as` of a command with subcommands go before or after
    /// the subcommand (the README shows them after: clap refused that before).
    #[test]
    fn parent_flags_are_taken_after_the_subcommand_too() {
        let cli = Cli::try_parse_from([
            "docent",
            "conversations",
            "list",
            "--json",
            "--as",
            "hana",
            "--addr",
            "http://127.0.0.1:9",
        ])
        .unwrap();
        let Command::Conversations {
            conn,
            on_behalf_of,
            json,
            ..
        } = cli.command
        else {
            panic!("{:?}", cli.command);
        };
        assert!(json);
        assert_eq!(on_behalf_of.as_deref(), Some("hana"));
        assert_eq!(conn.addr, "http://127.0.0.1:9");
        let cli = Cli::try_parse_from(["docent", "admin", "whois", "hana", "--addr", "http://h:1"])
            .unwrap();
        let Command::Admin { conn, .. } = cli.command else {
            panic!("{:?}", cli.command);
        };
        assert_eq!(conn.addr, "http://h:1");
    }
}
