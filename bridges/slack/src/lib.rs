//! `docent-slack`: a Slack bridge for Docent that a security team can approve.
//!
//! Slack calls [`http`] (Events API, interactivity and slash commands, all signature-verified on
//! the raw body by [`verify`], acknowledged at once); [`bridge`] maps the Slack user to a Docent
//! identity alias, asks Docent through [`docent_client`] with an API key holding `act_as` —
//! as the channel's audience for anything posted in a channel, as the asker only for what
//! reaches the asker alone —, and [`render`]s the answer for [`slack`]'s Web API calls.
//! [`config`] is the TOML config, [`metrics`] the Prometheus counters.
//!
//! [`start`] is shared by `main` and the tests.

pub mod bridge;
mod cache;
pub mod config;
pub mod http;
pub mod metrics;
pub mod render;
pub mod slack;
pub mod verify;

use std::net::SocketAddr;
use std::sync::Arc;

pub use config::{Audience, Config};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A running bridge.
pub struct Running {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    bridge: Arc<bridge::Bridge>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    pub fn metrics(&self) -> &metrics::Metrics {
        &self.bridge.metrics
    }

    /// Waits until every acknowledged request has been worked on.
    pub async fn idle(&self) {
        self.bridge.idle().await
    }

    /// Stops accepting, lets in-flight work finish.
    pub async fn shutdown(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        self.bridge.idle().await;
    }
}

/// Starts the bridge on `listener` (and `/metrics` on `metrics`, when given). Docent is
/// connected lazily: the bridge starts while Docent is down and answers with an error message
/// until it is back.
pub async fn start(
    cfg: Config,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
) -> Result<Running, docent_client::Error> {
    let cfg = Arc::new(cfg);
    let client = docent_client::Client::connect_lazy(&cfg.docent)
        .await?
        .with_timeout(cfg.docent_timeout);
    let m = Arc::new(metrics::Metrics::default());
    let bridge = Arc::new(bridge::Bridge::new(cfg.clone(), client, m));
    let stop = CancellationToken::new();
    let addr = listener
        .local_addr()
        .map_err(|e| docent_client::Error::Read {
            path: "listener".into(),
            source: e,
        })?;
    let secret: Arc<str> = cfg.signing_secret.clone().into();
    let b = bridge.clone();
    let mut tasks = vec![tokio::spawn(http::serve(
        listener,
        stop.clone(),
        move |req| http::slack(b.clone(), secret.clone(), req),
    ))];
    let mut metrics_addr = None;
    if let Some(ml) = metrics_listener {
        metrics_addr = ml.local_addr().ok();
        let b = bridge.clone();
        tasks.push(tokio::spawn(http::serve(ml, stop.clone(), move |req| {
            http::metrics(b.clone(), req)
        })));
    }
    tracing::info!(%addr, "slack bridge listening");
    Ok(Running {
        addr,
        metrics_addr,
        bridge,
        stop,
        tasks,
    })
}
