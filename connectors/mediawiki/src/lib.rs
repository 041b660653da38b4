//! MediaWiki connector: crawls a wiki through its action API (`api.php`), then follows it by
//! polling recent changes and the log, with a sweep of a few indexed pages at each poll and a
//! periodic full reconciliation that make the index converge whatever the change streams
//! missed (a suppressed deletion leaves nothing the bot may read).
//!
//! Each page is one document: its key is the page id (stable across moves), its content the
//! HTML the wiki renders (`action=parse`, templates expanded), its version the latest revision
//! id with the page's `touched` time (which moves when a template or transcluded page it uses
//! changes, though the page gets no revision). A page whose version and ACL are what the index
//! holds is not read again; the sweep and the reconciliation find pages whose rendering changed.
//!
//! Invariants:
//! - every upsert carries the ACL the configuration states for the page (see "Permissions");
//!   a page whose ACL the configuration does not state (a namespace without an entry in
//!   `namespace_principals`) is skipped with a reason, never indexed with a guessed ACL;
//! - nothing is deleted on the strength of an error: a failed or cancelled request fails the
//!   whole sync (no delete, no checkpoint) and the sync is retried with backoff from the last
//!   checkpoint; a reconciliation deletes only after a complete listing, never after an empty
//!   one, and never more than deletion protection allows unless an admin forces it;
//! - a page is deleted from the index when the wiki says it no longer exists, no longer lies in
//!   the configured namespaces (or categories), or has become a redirect;
//! - checkpoints record positions read *before* the work they cover, so a change made while
//!   syncing is read again, never lost;
//! - every wait (requests, backoff, the sink) ends promptly when the shutdown token is
//!   cancelled.
//!
//! Permissions: MediaWiki core has no per-page read ACLs. A wiki is readable by everyone or,
//! with `$wgGroupPermissions['*']['read'] = false`, by every logged-in user; extensions such as
//! Lockdown restrict namespaces to user groups. None of this is exposed to Docent as a per-page
//! ACL, so the ACL of every page comes from this connector's configuration: `permissions =
//! "public"` (everyone), `"group"` (one Docent group) or `"namespaces"` (a principal list per
//! namespace, to mirror a Lockdown setup by hand; kept in sync by the admin, not by Docent).
//! Know what MediaWiki itself leaks before restricting anything with it: a restricted page's
//! text can be transcluded into a readable page (Docent then indexes it under the readable
//! page's ACL, as the wiki shows it), and the wiki's own search, API (`action=query`,
//! `action=parse`, exports), revision history, diffs, recent changes and logs can reveal
//! restricted text or titles to readers who cannot open the page. Docent's ACLs are no
//! stronger than the wiki's: treat namespace restrictions as hiding, not as security.
//!
//! Group memberships: none are reported. MediaWiki's user groups are not Docent's groups; the
//! principals named in the configuration are resolved by Docent's identity store.
//!
//! Configuration (`[[connectors]]` with `type = "mediawiki"`; defaults shown):
//!
//! ```toml
//! [[connectors]]
//! type = "mediawiki"
//! id = "wiki"
//! url = "https://wiki.example.com"          # the wiki's base URL
//! api_path = "/api.php"                      # the API is at {url}{api_path}
//! page_url = "{url}/index.php?title={title}" # where users open a page
//! namespaces = [0]                           # namespaces crawled
//! # categories = ["Runbooks"]                # only pages in one of these categories
//! username = "Docent@crawler"                # a bot password (grants: basic, highvolume)
//! password = "${WIKI_BOT_PASSWORD}"
//! allow_plain_http = false                   # true: the password may cross http:// off-host
//! poll_interval_secs = 60                    # recent changes and log, since the checkpoint
//! full_reconcile_interval_secs = 86400       # list everything, delete what is gone
//! max_concurrent_requests = 2
//! maxlag = 5
//! request_timeout_secs = 30
//! permissions = "namespaces"                 # or "public", or "group" with group = "..."
//! deletion_protection_percent = 15
//! deletion_protection_min_docs = 5
//! [connectors.namespace_principals]
//! "0" = ["group:staff"]
//! "12" = ["everyone"]
//! ```
//!
//! A template edit changes the rendered HTML of the pages that transclude it without a new
//! revision of theirs; once the wiki's job queue has updated their `touched` time, the polls'
//! sweep and the reconciliation read them again (their version carries it). Category
//! membership that comes from a template reaches the index the same way.

mod api;
mod config;
mod sync;

pub use config::{Credentials, MediaWikiConfig, Permissions};
pub use sync::Position;

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use docent_connector_api::jobs::ConnectorCommand;
use docent_connector_api::registry::{
    Built, ConfigEnv, ConfigIssue, ConnectorFactory, ConnectorSpec,
};
use docent_connector_api::{Alarm, Connector, ConnectorContext, ConnectorError};
use futures::FutureExt;
use futures::future::BoxFuture;

use api::Api;
use sync::{SyncError, Synced, Syncer};

/// Configures connectors of `type = "mediawiki"`.
pub struct Factory;

impl ConnectorFactory for Factory {
    fn kind(&self) -> &'static str {
        "mediawiki"
    }

    fn configure(
        &self,
        table: toml::Table,
        env: &ConfigEnv,
    ) -> Result<Arc<dyn ConnectorSpec>, Vec<ConfigIssue>> {
        let cfg = MediaWikiConfig::from_table(table, env)?;
        Ok(Arc::new(MediaWikiSpec { cfg }))
    }
}

/// A validated MediaWiki connector entry.
#[derive(Debug)]
pub struct MediaWikiSpec {
    pub cfg: MediaWikiConfig,
}

impl ConnectorSpec for MediaWikiSpec {
    fn kind(&self) -> &'static str {
        "mediawiki"
    }

    fn build(&self) -> Result<Built, String> {
        Ok(Built::crawler(Box::new(MediaWikiConnector::new(
            self.cfg.clone(),
        ))))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The connector, built from a validated config.
pub struct MediaWikiConnector {
    cfg: Arc<MediaWikiConfig>,
}

impl MediaWikiConnector {
    pub fn new(cfg: MediaWikiConfig) -> Self {
        Self { cfg: Arc::new(cfg) }
    }
}

impl Connector for MediaWikiConnector {
    fn id(&self) -> &str {
        &self.cfg.id
    }

    fn kind(&self) -> &'static str {
        "mediawiki"
    }

    fn run(
        self: Box<Self>,
        ctx: ConnectorContext,
    ) -> BoxFuture<'static, Result<(), ConnectorError>> {
        async move { run(self.cfg, ctx).await }.boxed()
    }
}

/// A sync the run loop will do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    /// Recent changes since the checkpoint (a reconciliation when one is due).
    Poll { trigger: &'static str },
    /// A full reconciliation; `job`: the id the admin API reserved.
    Reconcile {
        job: Option<u64>,
        trigger: &'static str,
        force_deletions: bool,
        full: bool,
    },
}

impl Work {
    /// The same work, tried again after a failure (as a new job).
    fn retry(self) -> Self {
        match self {
            Self::Poll { .. } => Self::Poll { trigger: "retry" },
            Self::Reconcile {
                force_deletions,
                full,
                ..
            } => Self::Reconcile {
                job: None,
                trigger: "retry",
                force_deletions,
                full,
            },
        }
    }
}

/// Capped exponential backoff between failed syncs.
struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Backoff {
    const START: Duration = Duration::from_secs(1);

    fn new(cap: Duration) -> Self {
        Self {
            next: Self::START,
            cap,
        }
    }

    fn take(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.cap);
        d
    }

    fn reset(&mut self) {
        self.next = Self::START;
    }
}

async fn run(cfg: Arc<MediaWikiConfig>, ctx: ConnectorContext) -> Result<(), ConnectorError> {
    let status = ctx.status.clone();
    status.set_phase("starting");
    let failed = |message: String| ConnectorError::Failed {
        connector: cfg.id.clone(),
        message,
    };
    let api = Api::new(&cfg, ctx.shutdown.clone()).map_err(failed)?;
    let position = ctx.checkpoint.as_ref().and_then(|c| {
        let p = Position::from_checkpoint(c);
        if p.is_none() {
            tracing::warn!(connector = %cfg.id, "unreadable checkpoint: starting with a full reconciliation");
        }
        p
    });
    let syncer = Syncer::new(
        cfg.clone(),
        api,
        status.clone(),
        ctx.sink.clone(),
        ctx.indexed.clone(),
        ctx.shutdown.clone(),
        position,
    );

    let mut commands = ctx.commands;
    let mut paused = false;
    // Retries back off up to the poll interval (at least 5 s, at most 5 min); a refused
    // login never retries sooner than that cap, since each try counts against the wiki's
    // login throttle.
    let cap = cfg
        .poll_interval
        .clamp(Duration::from_secs(5), Duration::from_secs(300));
    let mut backoff = Backoff::new(cap);
    // The first sync: a reconciliation without a usable checkpoint, else a poll from it.
    let mut pending = Some(if syncer.reconcile_due() {
        Work::Reconcile {
            job: None,
            trigger: "start",
            force_deletions: false,
            full: false,
        }
    } else {
        Work::Poll { trigger: "start" }
    });
    let mut next_at = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            _ = tokio::time::sleep_until(next_at) => {
                next_at = tokio::time::Instant::now() + cfg.poll_interval;
                let work = pending.take().unwrap_or(Work::Poll { trigger: "schedule" });
                if paused && matches!(work, Work::Poll { .. }) {
                    // Resuming polls from the checkpoint, so nothing skipped here is lost.
                    continue;
                }
                match do_work(&syncer, work).await {
                    Ok(_) => backoff.reset(),
                    Err(SyncError::Cancelled) => break,
                    Err(SyncError::SinkClosed) => {
                        status.set_phase("stopped");
                        return Err(ConnectorError::SinkClosed {
                            connector: cfg.id.clone(),
                        });
                    }
                    Err(SyncError::Api(e)) => {
                        let wait = if e.is_login() {
                            backoff.take().max(cap)
                        } else {
                            backoff.take()
                        };
                        tracing::warn!(connector = %cfg.id, error = %docent_connector_api::log_safe(&e.to_string()), retry_in_s = wait.as_secs(), "sync failed; nothing was deleted");
                        status.raise(
                            Alarm::Outage,
                            format!("{e} (retrying in {} s)", wait.as_secs()),
                        );
                        status.set_phase("failed");
                        pending = Some(work.retry());
                        next_at = tokio::time::Instant::now() + wait;
                    }
                }
            }
            Some(cmd) = commands.recv() => match cmd {
                ConnectorCommand::SyncNow { job_id, force_deletions, full } => {
                    pending = Some(Work::Reconcile {
                        job: Some(job_id),
                        trigger: "admin",
                        force_deletions,
                        full,
                    });
                    next_at = tokio::time::Instant::now();
                }
                ConnectorCommand::Pause => {
                    paused = true;
                    status.set_paused(true);
                    status.set_phase("paused");
                }
                ConnectorCommand::Resume => {
                    paused = false;
                    status.set_paused(false);
                    status.set_phase("watching");
                    // Catch up on what changed while paused, from the checkpoint (an
                    // admin's pending reconciliation covers that too).
                    if !matches!(pending, Some(Work::Reconcile { .. })) {
                        pending = Some(Work::Poll { trigger: "resume" });
                    }
                    next_at = tokio::time::Instant::now();
                }
            },
        }
    }
    status.set_phase("stopped");
    Ok(())
}

async fn do_work(syncer: &Syncer, work: Work) -> Result<Synced, SyncError> {
    match work {
        Work::Poll { trigger } => syncer.poll(trigger).await,
        Work::Reconcile {
            job,
            trigger,
            force_deletions,
            full,
        } => syncer.reconcile(job, trigger, force_deletions, full).await,
    }
}
