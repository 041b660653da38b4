//! Shared test harness: the real model (loaded once per process), a temp copy of the example
//! corpus, a config written for it, and a daemon started with `docent::server::start`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use docent::config::Config;
use docent::embed::{Embedder, EmbedderConfig, FastEmbedder};
use docent::server::Daemon;
use docent_proto::v1 as pb;
use tonic::transport::Channel;

pub const ALICE: &str = "alice-dev-token"; // engineering
pub const HANA: &str = "hana-dev-token"; // people-leads → hr
pub const FELIX: &str = "felix-dev-token"; // finance
pub const ADMIN: &str = "admin-dev-token";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The real all-MiniLM-L6-v2 model over ONNX Runtime, loaded once for the whole test binary.
pub fn embedder() -> Arc<dyn Embedder> {
    static E: OnceLock<Arc<FastEmbedder>> = OnceLock::new();
    E.get_or_init(|| {
        let models = repo().join("models");
        let cfg = EmbedderConfig {
            model_id: "sentence-transformers/all-MiniLM-L6-v2".into(),
            model_dir: models.join("all-MiniLM-L6-v2"),
            onnxruntime_lib: models.join("onnxruntime/libonnxruntime.so.1.31.1"),
            max_length: 256,
            batch_size: 32,
            threads: 2,
        };
        Arc::new(
            FastEmbedder::load(&cfg)
                .unwrap_or_else(|e| panic!("{e}\nrun scripts/setup-models.sh first")),
        )
    })
    .clone()
}

/// As in the `docent` binary: PDFs are parsed in child processes running it.
pub fn parse_pdfs_in_child_processes() {
    docent::parse::isolate::use_worker_process(env!("CARGO_BIN_EXE_docent").into());
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

/// A temp workspace: corpus copy, data dir and config.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    /// The example corpus and the example config's identities and ACL rules.
    pub fn example() -> Self {
        let env = Self::empty();
        copy_dir(&repo().join("examples/corpus"), &env.corpus());
        env
    }

    pub fn empty() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("corpus")).unwrap();
        Self { dir }
    }

    pub fn corpus(&self) -> PathBuf {
        self.dir.path().join("corpus")
    }

    pub fn audit_log(&self) -> PathBuf {
        self.dir.path().join("audit/audit.log")
    }

    /// The audit log's records so far.
    pub fn audit_records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.audit_log())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The example config pointed at this env's corpus and data dir, with fast commits.
    pub fn config(&self) -> Config {
        self.config_from(&self.config_text())
    }

    /// Parses config text (relative paths resolve against the repo's `config/`).
    pub fn config_from(&self, text: &str) -> Config {
        let mut c = Config::parse(text, &repo().join("config")).unwrap_or_else(|e| panic!("{e:?}"));
        // Tests run daemons in parallel: no fixed ports.
        c.server.metrics_listen = None;
        c
    }

    /// The example config's text, pointed at this env (see [`Env::config`]).
    pub fn config_text(&self) -> String {
        let text = std::fs::read_to_string(repo().join("config/docent.example.toml")).unwrap();
        text.replace(
            "\"../data/example\"",
            &format!("{:?}", self.dir.path().join("data")),
        )
        .replace(
            "[\"../examples/corpus\"]",
            &format!("[{:?}]", self.corpus()),
        )
        .replace(
            "\"../data/audit/audit.log\"",
            &format!("{:?}", self.audit_log()),
        )
        .replace("commit_interval_ms = 1000", "commit_interval_ms = 100")
        .replace("debounce_ms = 200", "debounce_ms = 100")
        .replace("listen = \"127.0.0.1:7878\"", "listen = \"127.0.0.1:0\"")
    }

    pub async fn start(&self) -> Running {
        self.start_with(self.config()).await
    }

    pub async fn start_with(&self, config: Config) -> Running {
        self.start_opts(config, Default::default()).await
    }

    pub async fn start_opts(&self, config: Config, opts: docent::server::StartOptions) -> Running {
        parse_pdfs_in_child_processes();
        // A daemon stopped just before on the same index may still be letting go of its
        // writer's lock under the whole suite's load (its wait for that is bounded): tried
        // again for a while, as a restarted service would be (seen once in a full run).
        let deadline = Instant::now() + Duration::from_secs(30);
        let daemon = loop {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            match docent::server::start_with(config.clone(), embedder(), listener, opts.clone())
                .await
            {
                Ok(d) => break d,
                Err(e) if format!("{e:?}").contains("LockBusy") && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("the daemon did not start: {e:?}"),
            }
        };
        let r = Running { daemon };
        r.wait_until_watching().await;
        r
    }
}

pub struct Running {
    pub daemon: Daemon,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.daemon.local_addr())
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// Waits until every connector finished its first crawl and that crawl is committed. The
    /// deadline is generous: with the suite's daemons on two cores, a wiki's PHP server can
    /// take a minute to answer a crawl (seen once as a timeout at 60 s).
    pub async fn wait_until_watching(&self) {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let st = self.daemon.state();
            // Done when each connector's end-of-crawl checkpoint is committed with its data.
            let committed = st.index.checkpoints();
            // Push sources have no crawl.
            let done = st.connectors.iter().filter(|c| c.kind != "push").all(|c| {
                let scanned = c.status.snapshot().last_full_scan_ms;
                let cp = committed
                    .get(&c.id)
                    .and_then(|v| v["last_full_scan_ms"].as_i64());
                scanned.is_some() && cp >= scanned
            });
            if done {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "connectors did not finish crawling: {:?}; committed {:?}",
                st.connectors
                    .iter()
                    .map(|c| (c.id.clone(), c.status.snapshot()))
                    .collect::<Vec<_>>(),
                committed
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn ask(&self, token: &str, question: &str) -> Result<pb::AskResponse, tonic::Status> {
        let mut c = pb::assistant_client::AssistantClient::new(self.channel().await);
        c.ask(authed(
            token,
            pb::AskRequest {
                question: question.into(),
                ..Default::default()
            },
        ))
        .await
        .map(|r| r.into_inner())
    }

    /// Asks `first` in a new conversation, then `follow_up` in the same one: both answers.
    pub async fn ask_with_follow_up(
        &self,
        token: &str,
        first: &str,
        follow_up: &str,
    ) -> (pb::AskResponse, pb::AskResponse) {
        let mut c = pb::assistant_client::AssistantClient::new(self.channel().await);
        let mut req = pb::AskRequest {
            question: first.into(),
            new_conversation: true,
            ..Default::default()
        };
        let r = c
            .ask(authed(token, req.clone()))
            .await
            .unwrap()
            .into_inner();
        req.new_conversation = false;
        req.conversation_id = r.details.as_ref().unwrap().conversation_id.clone();
        req.question = follow_up.into();
        let r2 = c.ask(authed(token, req)).await.unwrap().into_inner();
        (r, r2)
    }

    /// The admin's feedback export (every record).
    pub async fn feedback_export(&self) -> pb::ExportFeedbackResponse {
        pb::admin_client::AdminClient::new(self.channel().await)
            .export_feedback(authed(ADMIN, pb::ExportFeedbackRequest::default()))
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn search(
        &self,
        token: &str,
        query: &str,
        limit: u32,
    ) -> Result<pb::SearchResponse, tonic::Status> {
        self.search_req(
            token,
            pb::SearchRequest {
                query: query.into(),
                limit,
                ..Default::default()
            },
        )
        .await
    }

    pub async fn search_req(
        &self,
        token: &str,
        req: pb::SearchRequest,
    ) -> Result<pb::SearchResponse, tonic::Status> {
        let mut c = pb::assistant_client::AssistantClient::new(self.channel().await);
        c.search(authed(token, req)).await.map(|r| r.into_inner())
    }

    pub async fn stats(&self) -> pb::IndexStatsResponse {
        let mut c = pb::admin_client::AdminClient::new(self.channel().await);
        c.index_stats(authed(ADMIN, pb::IndexStatsRequest {}))
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn connectors(&self) -> pb::ListConnectorsResponse {
        let mut c = pb::admin_client::AdminClient::new(self.channel().await);
        c.list_connectors(authed(ADMIN, pb::ListConnectorsRequest {}))
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn stop(self) {
        self.daemon.shutdown().await.unwrap();
    }
}

pub fn authed<T>(token: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if !token.is_empty() {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    r
}

/// Polls `check` until it returns true or `secs` pass.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs}s waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every string a search response exposes (titles, uris, snippets, keys, attributes).
pub fn search_text(r: &pb::SearchResponse) -> String {
    let mut s = String::new();
    for h in &r.hits {
        if let Some(c) = &h.citation {
            s.push_str(&format!("{c:?}\n"));
        }
        s.push_str(&format!("{:?}\n", h.attributes));
    }
    s
}

/// `text` with `from` replaced by `to`; panics when `from` is not there, so a test never runs
/// the default config believing it changed it.
pub fn replaced(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} is not in the text");
    text.replace(from, to)
}

/// The stable reason code of an error (`google.rpc.ErrorInfo`), or "".
pub fn reason(e: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    e.get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

pub fn answer_text(r: &pb::AskResponse) -> String {
    format!("{r:?}")
}

/// Runs the `docent` binary with `args` against `addr` as `token`.
pub fn docent(args: &[&str], addr: &str, token: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_docent"))
        .args(args)
        .env("DOCENT_ADDR", addr)
        .env("DOCENT_TOKEN", token)
        .output()
        .expect("run docent")
}

/// A local port free when asked (it may be taken before it is bound: callers that start a
/// server on it try another when that fails).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free local port")
        .port()
}

/// [`docent`] off the async runtime.
pub async fn docent_async(args: &[&str], addr: &str, token: &str) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let (addr, token) = (addr.to_string(), token.to_string());
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docent(&args, &addr, &token)
    })
    .await
    .expect("docent task")
}
