//! The daemon: opens the index, starts the ingest pipeline and the connectors, and serves gRPC
//! until shutdown. `main` and the integration tests run the same [`start`], so tests exercise the
//! real daemon on a real socket.
//!
//! Shutdown order: stop accepting requests and cancel connectors; the pipeline drains what the
//! connectors sent, commits it with their checkpoints, and only then does [`Daemon::shutdown`]
//! return.

use std::net::SocketAddr;
use std::sync::Arc;

use docent_connector_api::{ConnectorContext, IndexedState, StatusHandle};
use docent_proto::v1::{
    admin_server::AdminServer, assistant_server::AssistantServer, ingest_server::IngestServer,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;

use crate::config::Config;
use crate::embed::Embedder;
use crate::index::{Backend, Index, IndexError};
use crate::ingest::{IngestStats, Pipeline, PipelineConfig, SkipLog};
use crate::retrieve::Retriever;
use crate::service::{
    AdminService, AppState, AssistantService, AuthInterceptor, ConnectorInfo, IngestService,
    LimitLayer, Limiter, OpenStreamLayer, RefusalAuditLayer, Requirement,
};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("connector {id}: {message}")]
    Connector { id: String, message: String },
    #[error("tls: {0}")]
    Tls(#[from] crate::service::tls::TlsSetupError),
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection: {0}")]
    Reflection(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("task failed: {0}")]
    Join(String),
    #[error("identities: {0}")]
    Identity(String),
    #[error("audit log {path}: {source}")]
    Audit {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("guardrail topics: {0}")]
    Guardrails(String),
    #[error("llm: {0}")]
    Llm(String),
    #[error("{0}")]
    AssistantStore(#[from] crate::assistant::store::StoreError),
    #[error(
        "refusing to serve plaintext on {0}, which is not a loopback address: configure \
         server.tls_cert/tls_key"
    )]
    PlaintextExposed(SocketAddr),
    #[error(
        "refusing --insecure-dev on {0}, which is not a loopback address: anyone who reaches it \
         could name any identity; listen on 127.0.0.1 for development"
    )]
    InsecureDevExposed(SocketAddr),
}

/// How the daemon was started (beyond its config).
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Development only: accept requests without credentials that name their user in the
    /// `x-docent-user` header. Refused on a non-loopback address.
    pub insecure_dev: bool,
    /// The config file, for identity reloads (Admin ReloadIdentities, SIGHUP).
    pub config_path: Option<std::path::PathBuf>,
    /// How long a stop lets open calls finish ([`SERVER_DRAIN`] when `None`; tests).
    pub server_drain: Option<std::time::Duration>,
    /// Set when an identity reload was asked for (SIGHUP) while the daemon was starting: it
    /// is applied before the port opens (session 43's review: a key revoked during the start
    /// kept working until the reload after it). One asked for after this check is applied by
    /// the caller, once the daemon is up.
    pub reload_pending: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// Where the daemon serves: a socket already listening, or one only bound, which listens once
/// everything it serves is ready (session 43's review: the port opened before the index did,
/// and a TCP probe read the daemon as ready while calls waited in the backlog).
pub enum Listener {
    Listening(TcpListener),
    Bound(tokio::net::TcpSocket),
}

impl From<TcpListener> for Listener {
    fn from(l: TcpListener) -> Self {
        Self::Listening(l)
    }
}

impl From<tokio::net::TcpSocket> for Listener {
    fn from(s: tokio::net::TcpSocket) -> Self {
        Self::Bound(s)
    }
}

impl Listener {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Self::Listening(l) => l.local_addr(),
            Self::Bound(s) => s.local_addr(),
        }
    }

    fn listen(self) -> std::io::Result<TcpListener> {
        match self {
            Self::Listening(l) => Ok(l),
            Self::Bound(s) => s.listen(1024),
        }
    }
}

/// Cancels the daemon's token when a start fails after it started the pipeline and the
/// connectors: they stop (the pipeline commits what it has if the process lives on), and
/// nothing goes on crawling, or holding the index, for a daemon that never serves (session
/// 43's review).
struct StopUnlessStarted {
    token: Option<CancellationToken>,
    /// The index once open: a failed start returns only once it is let go.
    index: Option<std::sync::Weak<dyn Backend>>,
    /// The pipeline once started (a [`Daemon`] takes it over): a failed start waits for its
    /// end as a stop does (it ends once the connectors stop sending, or after its grace).
    pipeline: Option<JoinHandle<Result<(), IndexError>>>,
}

impl StopUnlessStarted {
    /// A start that failed: what it started stops, and the index (and the conversation store,
    /// which only the assistant holds, with the index) is let go before the error returns,
    /// as at a stop. Otherwise a start tried again at once found the store locked by the
    /// hourly expiry task still seeing the cancel (CI, stop 57).
    async fn release(mut self) {
        if let Some(t) = self.token.take() {
            t.cancel();
        }
        if let Some(pipeline) = self.pipeline.take() {
            // Its failure, if any, is logged by its task; the start's own error is returned.
            let _ = pipeline.await;
        }
        if let Some(index) = self.index.take() {
            wait_released(&index).await;
        }
    }
}

impl Drop for StopUnlessStarted {
    fn drop(&mut self) {
        if let Some(t) = self.token.take() {
            t.cancel();
        }
    }
}

/// Waits, [`INDEX_RELEASE_WAIT`] at most, until nothing holds the index any more.
async fn wait_released(index: &std::sync::Weak<dyn Backend>) {
    let deadline = tokio::time::Instant::now() + INDEX_RELEASE_WAIT;
    while index.strong_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    if index.strong_count() > 0 {
        tracing::warn!("the index is still held after the daemon stopped");
    }
}

/// HTTP/2 streams one connection may hold open at once.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 128;

/// The largest message the unauthenticated services (health, reflection) decode.
const UNAUTHENTICATED_MESSAGE_BYTES: usize = 64 * 1024;

/// The largest Assistant or Admin request decoded. The largest valid one is about 25 KiB (a
/// 4 KiB question, a 16 KiB filter, a feedback comment); tonic's default of 4 MiB let a request
/// of two million empty filter strings decode to ~100 MB before the filter's own limits ran.
pub const REQUEST_MESSAGE_BYTES: usize = 64 * 1024;

/// How long a stopping daemon waits for the last holders of its index to let go.
const INDEX_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a stopping daemon lets open calls finish before it closes their connections: a
/// peer holding a stream open (a health Watch, a reflection stream) kept the server from
/// stopping at all (session 43's review: every stop ended in the supervisor's SIGKILL).
const SERVER_DRAIN: std::time::Duration = std::time::Duration::from_secs(20);

pub struct Daemon {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    pipeline: JoinHandle<Result<(), IndexError>>,
    connectors: Vec<JoinHandle<()>>,
    state: Arc<AppState>,
    drain: std::time::Duration,
    /// Closes every connection still open at the end of the drain
    /// ([`crate::service::tls::Closable`]).
    close_connections: CancellationToken,
}

impl Daemon {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `/metrics` is served, if configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// A token that, when cancelled, shuts the daemon down (e.g. on SIGTERM).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the daemon stops (after the shutdown token is cancelled), with everything
    /// ingested so far committed.
    pub async fn wait(self) -> Result<(), DaemonError> {
        let mut server = self.server;
        let early = tokio::select! {
            r = &mut server => Some(r),
            () = self.shutdown.cancelled() => None,
        };
        let drained_by = tokio::time::Instant::now() + self.drain;
        let server = match early {
            Some(r) => r,
            None => match tokio::time::timeout(self.drain, &mut server).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!(
                        secs = self.drain.as_secs_f64(),
                        "calls still open after the drain; their connections are closed"
                    );
                    self.close_connections.cancel();
                    match tokio::time::timeout(std::time::Duration::from_secs(5), &mut server).await
                    {
                        Ok(r) => r,
                        Err(_) => {
                            server.abort();
                            Ok(Ok(()))
                        }
                    }
                }
            },
        }
        .map_err(|e| DaemonError::Join(crate::telemetry::task_failure(&e)))?;
        self.shutdown.cancel();
        // Whatever way the server ended, no connection outlives it (each holds the state).
        self.close_connections.cancel();
        // Answers still being written (their clients may have left) store their turns and
        // audit records, within the drain.
        if tokio::time::timeout_at(drained_by, self.state.answers.idle())
            .await
            .is_err()
        {
            tracing::warn!("answers still running after the drain are not stored or audited");
        }
        // The pipeline first: it ends once every connector has stopped sending, or once
        // nothing has come for its grace (a connector held in a system call, a hung network
        // mount, may never see the shutdown; a review: the daemon never stopped). Such a
        // connector is then left behind.
        let pipeline = self
            .pipeline
            .await
            .map_err(|e| DaemonError::Join(crate::telemetry::task_failure(&e)))?;
        for mut c in self.connectors {
            if tokio::time::timeout(std::time::Duration::from_secs(5), &mut c)
                .await
                .is_err()
            {
                tracing::warn!("a connector did not stop after the pipeline ended; left behind");
                c.abort();
            }
        }
        // The index is released (its writer's lock with it) before this returns: a crawl's
        // blocking walk that saw the shutdown only between two files still holds it for a
        // moment, and a daemon started on the same index right after found it locked (seen
        // once in the suite).
        let index = Arc::downgrade(&self.state.index);
        drop(self.state);
        wait_released(&index).await;
        server?;
        pipeline?;
        Ok(())
    }

    pub async fn shutdown(self) -> Result<(), DaemonError> {
        self.shutdown.cancel();
        self.wait().await
    }
}

pub async fn start(
    config: Config,
    embedder: Arc<dyn Embedder>,
    listener: impl Into<Listener>,
) -> Result<Daemon, DaemonError> {
    start_with(config, embedder, listener, StartOptions::default()).await
}

pub async fn start_with(
    config: Config,
    embedder: Arc<dyn Embedder>,
    listener: impl Into<Listener>,
    opts: StartOptions,
) -> Result<Daemon, DaemonError> {
    let mut started = StopUnlessStarted {
        token: None,
        index: None,
        pipeline: None,
    };
    match start_guarded(config, embedder, listener.into(), opts, &mut started).await {
        Ok(d) => {
            started.token = None;
            Ok(d)
        }
        Err(e) => {
            started.release().await;
            Err(e)
        }
    }
}

async fn start_guarded(
    config: Config,
    embedder: Arc<dyn Embedder>,
    listener: Listener,
    opts: StartOptions,
    started: &mut StopUnlessStarted,
) -> Result<Daemon, DaemonError> {
    // Connectors write page ids, paths and errors naming them through the guardrails' PII
    // redaction, like the daemon's own log lines.
    docent_connector_api::set_log_redactor(crate::guardrail::pii::for_log);
    let addr = listener
        .local_addr()
        .map_err(|e| DaemonError::Join(e.to_string()))?;
    if !addr.ip().is_loopback() {
        // The header names any identity, admins included: never beyond this machine.
        if opts.insecure_dev {
            return Err(DaemonError::InsecureDevExposed(addr));
        }
        if config.server.tls.is_none() {
            return Err(DaemonError::PlaintextExposed(addr));
        }
    }
    if opts.insecure_dev {
        tracing::warn!(
            "INSECURE DEVELOPMENT MODE: requests without credentials are accepted as the user \
             named in the x-docent-user header. Never run this way with real data."
        );
    }
    let shutdown = CancellationToken::new();
    started.token = Some(shutdown.clone());
    let identities =
        Arc::new(crate::identity::IdentityRegistry::new(&config).map_err(DaemonError::Identity)?);
    let audit = match &config.audit {
        Some(a) => Some(Arc::new(crate::audit::AuditLog::open(a.clone()).map_err(
            |source| DaemonError::Audit {
                path: a.path.clone(),
                source,
            },
        )?)),
        None => None,
    };
    let guardrails = {
        let (cfg, e) = (config.guardrails.clone(), embedder.clone());
        Arc::new(
            tokio::task::spawn_blocking(move || crate::guardrail::Guardrails::new(cfg, e.as_ref()))
                .await
                .map_err(|e| DaemonError::Join(crate::telemetry::task_failure(&e)))?
                .map_err(|e| DaemonError::Guardrails(e.to_string()))?,
        )
    };

    let data_dir = config.index.data_dir.clone();
    let model = crate::index::ModelSignature::of(embedder.as_ref());
    let milvus = config.index.milvus.clone();
    let role = config.index.role;
    let (index, location): (Arc<dyn Backend>, String) = tokio::task::spawn_blocking(move || {
        Ok::<_, IndexError>(match milvus {
            None => {
                let new = !data_dir.join("meta.json").exists();
                let existed = data_dir.is_dir();
                let index = Index::open_with(&data_dir, &model)?;
                if new && existed {
                    // An empty directory: a first start, or a volume meant to be mounted there
                    // that is not.
                    tracing::warn!(path = %data_dir.display(), "no index in this directory: a new, empty index was created (if the index lives on a volume mounted here, it is not mounted: stop the daemon, mount it, start again)");
                } else if new {
                    tracing::info!(path = %data_dir.display(), "a new, empty index was created");
                }
                // A daemon served it: a re-embedding's catch-up must not run on it any more.
                let served = data_dir.join(crate::index::SERVED_MARKER);
                if !served.exists() {
                    // Durable before anything is served: a marker lost in a crash would let a
                    // catch-up roll the index back over what this daemon committed since.
                    std::fs::File::create(&served)
                        .and_then(|f| f.sync_all())
                        .and_then(|()| std::fs::File::open(&data_dir)?.sync_all())
                        .map_err(|source| IndexError::Io {
                            path: served.clone(),
                            source,
                        })?;
                }
                // Rows an older release wrote without their deny entries' folded forms, written
                // again before anything is served (a push source never sends them again).
                index.fold_old_deny_entries()?;
                let at = index.path().display().to_string();
                (Arc::new(index) as Arc<dyn Backend>, at)
            }
            Some(m) => {
                use crate::index::milvus::MilvusBackend;
                let index = if role == crate::config::Role::Query {
                    MilvusBackend::open_for_queries(&m, &model)?
                } else {
                    let index = MilvusBackend::open(&m, &model)?;
                    index.repair_cut_off_commit()?;
                    index
                };
                let at = format!("milvus {}", index.location());
                (Arc::new(index) as Arc<dyn Backend>, at)
            }
        })
    })
    .await
    .map_err(|e| DaemonError::Join(crate::telemetry::task_failure(&e)))??;
    tracing::info!(at = %location, documents = index.document_count(), ?role, "index open");
    started.index = Some(Arc::downgrade(&index));

    let stats = Arc::new(IngestStats::default());
    let skips = Arc::new(SkipLog::default());
    let (tx, rx) = mpsc::channel(config.index.queue_capacity);
    // Each connector's sink passes its changes on as their content bytes are free.
    let queue_bytes = Arc::new(crate::ingest::QueueBytes::new(config.index.queue_bytes));
    let pipeline = Pipeline::new(
        index.clone(),
        embedder.clone(),
        PipelineConfig {
            chunking: config.chunking,
            commit_interval: config.index.commit_interval,
            max_batch: 64,
            limits: config
                .connectors
                .iter()
                .map(|c| (c.id().to_string(), c.limits()))
                .collect(),
            retry: Default::default(),
        },
        stats.clone(),
        skips.clone(),
    )
    .with_queue_bytes(queue_bytes.clone())
    .with_shutdown(shutdown.clone());
    // A pipeline that stops on an error (the index cannot roll back) would leave the daemon
    // serving while nothing is indexed, unreported: it shuts the daemon down instead, which
    // exits non-zero for a supervisor to restart it (the index recovers at open).
    let stop = shutdown.clone();
    let pipeline = tokio::spawn(async move {
        use futures::FutureExt;
        // A panic stops the daemon too (session 43's review: it left the daemon serving with
        // nothing indexed, and no exit for a supervisor to see).
        let r = match std::panic::AssertUnwindSafe(pipeline.run(rx))
            .catch_unwind()
            .await
        {
            Ok(r) => r,
            Err(panic) => {
                tracing::error!("the ingest pipeline panicked; shutting the daemon down");
                stop.cancel();
                std::panic::resume_unwind(panic);
            }
        };
        // At a stop, the pipeline has logged its own failure (the final commit's) already.
        if let Err(e) = &r
            && !stop.is_cancelled()
        {
            tracing::error!(error = %crate::guardrail::pii::for_log(&e.to_string()), "the ingest pipeline stopped; shutting the daemon down");
            stop.cancel();
        }
        r
    });
    started.pipeline = Some(pipeline);

    let checkpoints = index.checkpoints();
    let mut infos = Vec::new();
    let mut connectors = Vec::new();
    let mut push = std::collections::HashMap::new();
    let sources = if role.ingests() {
        config.connectors.as_slice()
    } else {
        if !config.connectors.is_empty() {
            tracing::info!(
                configured = config.connectors.len(),
                "query role: connectors and the Ingest API are left to the ingest node"
            );
        }
        let pending = identities.current().pending().to_vec();
        if !pending.is_empty() {
            tracing::warn!(
                connectors = ?pending,
                "query role: these connectors report group memberships on the ingest node only; \
                 this node withholds every document with a deny entry. Give it the group \
                 database as an identity source (format = \"group_file\", with its \
                 passwd file as passwd) and set \
                 report_memberships = false in its config"
            );
        }
        &[]
    };
    for cc in sources {
        let built = cc.spec.build().map_err(|message| DaemonError::Connector {
            id: cc.id.clone(),
            message,
        })?;
        // A handle the Ingest API writes to (push sources); crawlers have none.
        if let Some(source) = built
            .handle
            .and_then(|h| h.downcast::<crate::ingest::push::PushSource>().ok())
        {
            source.forget_failures_from(&skips);
            push.insert(cc.id.clone(), (*source).clone());
        }
        let conn = built.connector;
        let status = StatusHandle::default();
        status.set_phase("starting");
        let (cmd_tx, cmd_rx) = mpsc::channel(16);
        skips.register(conn.id(), status.clone());
        infos.push(ConnectorInfo {
            id: conn.id().to_string(),
            kind: conn.kind(),
            status: status.clone(),
            commands: cmd_tx,
        });
        let ctx = ConnectorContext {
            commands: cmd_rx,
            sink: queue_bytes.sink(tx.clone()),
            memberships: identities.clone(),
            indexed: Arc::new(crate::ingest::IndexedView {
                index: index.clone() as Arc<dyn IndexedState>,
                skips: skips.clone(),
            }),
            checkpoint: checkpoints.get(cc.id()).cloned(),
            shutdown: shutdown.child_token(),
            status: status.clone(),
        };
        let id = cc.id().to_string();
        let index = index.clone();
        // A push source takes no part in it (it crawls nothing, and what its clients send
        // must reach its queue's reader: a review).
        let crawls = conn.kind() != "push";
        connectors.push(tokio::spawn(async move {
            // Not before the index can tell what it holds (a remote one reads its table).
            let stop = ctx.shutdown.clone();
            if crawls && !crate::ingest::until_index_known(index, &status, &stop).await {
                status.clear(docent_connector_api::Alarm::Outage);
                status.set_phase("stopped");
                return;
            }
            // A panic is caught here, not in a task of its own: it is a stop like an error's,
            // shown on the connector's status (before, the connector went silent and its status
            // still read as syncing).
            use futures::FutureExt;
            let error = match std::panic::AssertUnwindSafe(conn.run(ctx))
                .catch_unwind()
                .await
            {
                Ok(Ok(())) => return,
                Ok(Err(e)) => e.to_string(),
                // The panic's message is in the log (redacted) only: it can quote a document.
                Err(_) => "the connector failed unexpectedly (a bug; the daemon's log says where)"
                    .to_string(),
            };
            tracing::error!(
                connector = %id,
                error = %crate::guardrail::pii::for_log(&error),
                "connector stopped with an error"
            );
            status.set_phase("failed");
            status.raise(docent_connector_api::Alarm::Stopped, error);
        }));
    }
    // The pipeline ends when every connector has dropped its sender.
    drop(tx);

    let retriever = Arc::new(Retriever::new(
        index.clone(),
        embedder.clone(),
        config.retrieval,
    ));
    // The second stage and its "not found" threshold are trained per embedding model.
    match (retriever.ranker(), config.retrieval.rerank) {
        (Some(m), true) => tracing::info!(
            model = embedder.model_id(),
            threshold = m.threshold,
            min_relevance = config.assistant.answer.min_relevance,
            "second ranking stage on"
        ),
        (None, true) => tracing::warn!(
            model = embedder.model_id(),
            min_similarity = config.assistant.answer.min_similarity,
            "no second ranking stage ships for this embedding model: passages are ranked by \
             fusion and are evidence at answer.min_similarity"
        ),
        (_, false) => {}
    }
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let llm = match &config.llm {
        Some(c) => Some(Arc::new(
            crate::assistant::LlmClient::new(c.clone()).map_err(DaemonError::Llm)?,
        )),
        None => None,
    };
    let store = if config.conversations {
        let path = config.index.data_dir.join("assistant.redb");
        Some(Arc::new(
            tokio::task::spawn_blocking(move || crate::assistant::Store::open(&path))
                .await
                .map_err(|e| DaemonError::Join(crate::telemetry::task_failure(&e)))??,
        ))
    } else {
        None
    };
    let assistant = Arc::new(crate::assistant::Assistant::new(
        index.clone(),
        retriever,
        guardrails,
        metrics.clone(),
        config.assistant.clone(),
        llm,
        store,
    ));
    {
        // Conversations past their retention go at start and then hourly.
        let a = assistant.clone();
        let stop = shutdown.clone();
        let ids = identities.clone();
        tokio::spawn(async move {
            loop {
                let x = a.clone();
                let now = ids.current();
                match tokio::task::spawn_blocking(move || {
                    x.expire_conversations(&|id| now.has_id(id))
                })
                .await
                {
                    Ok(Ok(n)) if n > 0 => tracing::info!(expired = n, "conversations expired"),
                    Ok(Err(e)) => tracing::warn!(error = %e, "conversation expiry failed"),
                    _ => {}
                }
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
                    _ = stop.cancelled() => break,
                }
            }
        });
    }
    let state = Arc::new(AppState {
        assistant,
        index,
        identities: identities.clone(),
        audit,
        config_path: opts.config_path.clone(),
        // The text the running config was parsed from (a review: read again here, after the
        // model loaded, it could already hold an edit the daemon does not run).
        started_sections: opts.config_path.as_ref().map(|_| config.start_only.clone()),
        connectors: infos,
        push,
        skips,
        stats,
        metrics: metrics.clone(),
        answers: Arc::default(),
    });
    let metrics_addr = match config.server.metrics_listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| DaemonError::Bind { addr, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| DaemonError::Bind { addr, source })?;
            let st = state.clone();
            tokio::spawn(crate::metrics::http::serve(
                listener,
                Arc::new(move || st.render_metrics()),
                crate::metrics::http::HttpLimits::default(),
                shutdown.clone(),
            ));
            tracing::info!(addr = %bound, "metrics endpoint");
            Some(bound)
        }
        None => None,
    };

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<AssistantServer<AssistantService>>()
        .await;
    health.set_serving::<AdminServer<AdminService>>().await;
    health.set_serving::<IngestServer<IngestService>>().await;
    // Stopping, the daemon says so to the health Watches still open (new connections are
    // refused from then on, as the listener closes).
    let (stopping, reporter) = (shutdown.clone(), health.clone());
    tokio::spawn(async move {
        stopping.cancelled().await;
        reporter
            .set_not_serving::<AssistantServer<AssistantService>>()
            .await;
        reporter
            .set_not_serving::<AdminServer<AdminService>>()
            .await;
        reporter
            .set_not_serving::<IngestServer<IngestService>>()
            .await;
        reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
    });
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(docent_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| DaemonError::Reflection(e.to_string()))?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(docent_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| DaemonError::Reflection(e.to_string()))?;

    // TLS is built before anything listens: a certificate, key, CA or revocation list that
    // cannot be read or parsed stops the start.
    let tls = match &config.server.tls {
        Some(t) => Some(crate::service::tls::server_tls(t)?),
        None => None,
    };
    let auth = AuthInterceptor::new(identities.shared(), opts.insecure_dev)
        .with_revocations(tls.as_ref().and_then(|t| t.revocations.clone()));
    let limits = LimitLayer::new(Arc::new(Limiter::new(
        config.server.max_concurrent_requests,
        config.server.max_concurrent_per_caller,
        config.server.max_concurrent_per_service,
    )));
    let open = OpenStreamLayer::new(crate::service::limits::OpenPool::new(
        config.server.max_unauthenticated_streams,
        config.server.max_unauthenticated_streams_per_peer,
    ));
    // A push request is decoded before its handler runs: the largest any push source accepts
    // bounds it (and only callers with the ingest permission get that far).
    let ingest_limit = state
        .push
        .values()
        .map(|s| s.config.max_request_bytes as usize)
        .max()
        .unwrap_or(64 * 1024);
    // Transport bounds, for peers that have not authenticated yet: a TLS handshake must finish
    // in 10 s (`tls::incoming`), at most 128 streams per connection (tonic's default is none),
    // and dead HTTP/2 peers are found by pings.
    let mut builder = Server::builder()
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
        .layer(crate::metrics::MetricsLayer::new(metrics))
        .layer(RefusalAuditLayer::new(state.audit.clone()));
    let router = builder
        // Unauthenticated: their requests are small, and so is what they may decode; one pool
        // bounds what they hold open.
        .add_service(tower_layer::Layer::layer(
            &open,
            health_service.max_decoding_message_size(UNAUTHENTICATED_MESSAGE_BYTES),
        ))
        .add_service(tower_layer::Layer::layer(
            &open,
            reflection.max_decoding_message_size(UNAUTHENTICATED_MESSAGE_BYTES),
        ))
        .add_service(tower_layer::Layer::layer(
            &open,
            reflection_alpha.max_decoding_message_size(UNAUTHENTICATED_MESSAGE_BYTES),
        ))
        // Each service: authentication (and the service's requirement) on the headers, then
        // the concurrency limits, then decoding (at most `REQUEST_MESSAGE_BYTES` per message for
        // the Assistant and Admin services, the push sources' largest for Ingest) and the handler.
        .add_service(InterceptedService::new(
            tower_layer::Layer::layer(
                &limits,
                AssistantServer::new(AssistantService::new(state.clone()))
                    .max_decoding_message_size(REQUEST_MESSAGE_BYTES),
            ),
            auth.requiring(Requirement::Authenticated),
        ))
        .add_service(InterceptedService::new(
            tower_layer::Layer::layer(
                &limits,
                AdminServer::new(AdminService::new(state.clone()))
                    .max_decoding_message_size(REQUEST_MESSAGE_BYTES),
            ),
            auth.requiring(Requirement::Admin),
        ))
        .add_service(InterceptedService::new(
            tower_layer::Layer::layer(
                &limits,
                IngestServer::new(IngestService::new(state.clone()))
                    .max_decoding_message_size(ingest_limit),
            ),
            auth.requiring(Requirement::Ingest),
        ));
    if opts
        .reload_pending
        .as_ref()
        .is_some_and(|p| p.swap(false, std::sync::atomic::Ordering::SeqCst))
    {
        let st = state.clone();
        let reloaded = tokio::task::spawn_blocking(move || st.reload_identities())
            .await
            .map_err(|e| DaemonError::Join(crate::telemetry::task_failure(&e)))?;
        if let Err(e) = reloaded {
            tracing::error!(error = %crate::guardrail::pii::for_log(&e.to_string()), "identity reload asked for during the start failed; keeping the identities read at the start, less what the file no longer grants");
        }
    }
    let listener = listener
        .listen()
        .map_err(|source| DaemonError::Bind { addr, source })?;
    let token = shutdown.clone();
    let close_connections = CancellationToken::new();
    let closable = close_connections.clone();
    let server = match tls {
        // tonic's own TLS cannot check revocation lists; the handshakes are ours.
        Some(tls) => {
            let incoming = crate::service::tls::incoming(listener, tls.acceptor, token.clone())
                .map(move |s| s.map(|s| crate::service::tls::Closable::new(s, &closable)));
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, token.cancelled_owned()))
        }
        None => {
            let incoming = crate::service::tls::plain_incoming(listener, token.clone())
                .map(move |s| s.map(|s| crate::service::tls::Closable::new(s, &closable)));
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, token.cancelled_owned()))
        }
    };
    tracing::info!(
        %addr,
        tls = config.server.tls.is_some(),
        mtls = config.server.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
        revocation_lists = config.server.tls.as_ref().is_some_and(|t| t.client_crl.is_some()),
        insecure_dev = opts.insecure_dev,
        "serving"
    );
    Ok(Daemon {
        addr,
        metrics_addr,
        shutdown,
        server,
        pipeline: started
            .pipeline
            .take()
            .expect("the pipeline was started above"),
        connectors,
        state,
        drain: opts.server_drain.unwrap_or(SERVER_DRAIN),
        close_connections,
    })
}
