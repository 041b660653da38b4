//! DokuWiki connector: crawls a wiki through its XML-RPC remote API, then polls its
//! recent-changes log, and reconciles the whole page list on a schedule.
//!
//! Role: every readable page becomes one `text/html` document (`wiki.getPageHTML`) whose ACL is
//! computed from the wiki's own ACL rules (`plugin.acl.listAcls`) with DokuWiki's algorithm,
//! translated into Docent's allow/deny lists ([`acl`]). Each poll re-reads the rules; when they
//! changed, every page's ACL is recomputed and the pages whose ACL changed are sent again.
//! Deletions come from the change log (confirmed by `wiki.getPageInfo` answering "no such
//! page") and from reconciliation; DokuWiki has no move, so a move is a delete plus a create.
//!
//! Invariants:
//! - every upsert carries the ACL DokuWiki's rules give the page, or a narrower one (never a
//!   wider one); a page nobody may read, or whose rules cannot be represented safely, is
//!   reported as skipped, never indexed with a guessed ACL;
//! - a page whose revision and ACL are unchanged is not read again (once settled: a revision is
//!   a whole second, so a page edited in the second a pass started is read once more and its
//!   version's content hash decides);
//! - nothing is deleted on an outage: a failed or empty listing, or one that would delete more
//!   than deletion protection allows, deletes nothing, and every deletion is confirmed with the
//!   wiki; an empty rule list after a non-empty one withdraws nothing until an admin forces it;
//!   bad credentials put the connector in an error state and it retries with backoff;
//! - the checkpoint (the wiki time the last pass started, the last reconciliation, a
//!   fingerprint of the ACL rules) is sent only after everything it covers, so a restart
//!   resumes from it without losing changes.
//!
//! Must never: index a page with an ACL other than the one computed from the rules read in the
//! same pass; widen access beyond DokuWiki's decision; delete because the wiki did not answer.
//!
//! Not supported: media files, and group memberships (DokuWiki's remote API cannot list users,
//! so `ctx.memberships` is not fed; Docent's identity store must know who is in which group).
//! Pages hidden with `hidepages` are not in the change log; the reconciliation finds them.
//!
//! # Configuration
//!
//! ```toml
//! [[connectors]]
//! type = "dokuwiki"
//! id = "wiki"
//! url = "https://wiki.example.com/dokuwiki"    # the directory holding doku.php
//! username = "docent-crawler"                  # a DokuWiki superuser, allowed by `remoteuser`
//! password = "${DOKUWIKI_PASSWORD}"
//! allow_plain_http = false                     # true: the password may cross http:// off-host
//! namespaces = ["eng", "hr:policies"]          # default: the whole wiki
//! poll_interval_secs = 60                      # recent changes and ACL rules
//! full_reconcile_interval_secs = 86400         # the whole page list
//! recent_days = 7                              # the wiki's `recent_days`
//! max_concurrent_requests = 2
//! request_timeout_secs = 60
//! deletion_protection_percent = 15
//! deletion_protection_min_docs = 5
//! superusers = ["@admin"]                      # the wiki's `superuser` setting
//! user_prefix = ""                             # user:<prefix><login>
//! group_prefix = ""                            # group:<prefix><group>
//! case_insensitive_auth = false                # true behind authldap/authad: names lowercased
//! lossy_acl = "narrow"                         # or "skip"; see the `acl` module
//! ```
//!
//! The wiki needs `remote = 1`, the crawler's account (or group) in `remoteuser`, and the
//! crawler among the superusers: only they may read the ACL rules (`plugin.acl.listAcls`).
//! Use a dedicated crawler account whose login names no namespace or page: DokuWiki fills
//! `%USER%`/`%GROUP%` in for the crawler, and rules naming it are read as placeholders (see
//! [`acl`]).
//! The crawler authenticates with HTTP Basic auth on every request.

pub mod acl;
pub mod client;
mod config;
mod page;
mod sync;
pub mod xmlrpc;

pub use config::{DokuWikiConfig, LossyAcl, RawConfig};

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use docent_connector_api::jobs::ConnectorCommand;
use docent_connector_api::registry::{
    Built, ConfigEnv, ConfigIssue, ConnectorFactory, ConnectorSpec, parse_section,
};
use docent_connector_api::{Alarm, Connector, ConnectorContext, ConnectorError};
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::time::Instant;

use client::{CallError, Client, ClientOptions};
use sync::{Cursor, PassError, Request, Syncer};

/// The longest wait between retries of a failing wiki (unless polls are rarer still).
const MAX_FAILURE_BACKOFF: Duration = Duration::from_secs(300);
/// A checkpoint is committed at least this often while nothing changes (it moves `since`
/// forward, so a restart replays a short stretch of the change log).
const CHECKPOINT_REFRESH_SECS: i64 = 3600;

/// Registers the `dokuwiki` connector type.
pub struct Factory;

impl ConnectorFactory for Factory {
    fn kind(&self) -> &'static str {
        "dokuwiki"
    }

    fn configure(
        &self,
        table: toml::Table,
        env: &ConfigEnv,
    ) -> Result<Arc<dyn ConnectorSpec>, Vec<ConfigIssue>> {
        let raw: RawConfig = parse_section(table)?;
        Ok(Arc::new(DokuWikiSpec {
            config: raw.validate(env)?,
        }))
    }
}

/// A validated `dokuwiki` connector entry.
#[derive(Debug)]
pub struct DokuWikiSpec {
    pub config: DokuWikiConfig,
}

impl ConnectorSpec for DokuWikiSpec {
    fn kind(&self) -> &'static str {
        "dokuwiki"
    }

    fn build(&self) -> Result<Built, String> {
        let c = DokuWikiConnector::new(self.config.clone()).map_err(|e| e.to_string())?;
        Ok(Built::crawler(Box::new(c)))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The connector, built from a validated config.
pub struct DokuWikiConnector {
    cfg: Arc<DokuWikiConfig>,
    client: Client,
}

impl DokuWikiConnector {
    pub fn new(cfg: DokuWikiConfig) -> Result<Self, CallError> {
        let client = Client::new(
            &cfg.url,
            &cfg.username,
            &cfg.password,
            ClientOptions {
                max_concurrent_requests: cfg.max_concurrent_requests,
                request_timeout: cfg.request_timeout,
                max_page_response_bytes: client::page_response_limit(cfg.max_document_bytes),
                ..ClientOptions::default()
            },
        )?;
        Ok(Self {
            cfg: Arc::new(cfg),
            client,
        })
    }
}

impl Connector for DokuWikiConnector {
    fn id(&self) -> &str {
        &self.cfg.id
    }

    fn kind(&self) -> &'static str {
        "dokuwiki"
    }

    fn run(
        self: Box<Self>,
        ctx: ConnectorContext,
    ) -> BoxFuture<'static, Result<(), ConnectorError>> {
        async move { run(*self, ctx).await }.boxed()
    }
}

/// Passes until shutdown: one right away (a full reconciliation without a usable checkpoint,
/// else a poll from it), then one per poll interval, a reconciliation when due, and whatever the
/// admin asks. A failed pass leaves the checkpoint where it was and is retried with backoff.
async fn run(conn: DokuWikiConnector, ctx: ConnectorContext) -> Result<(), ConnectorError> {
    let DokuWikiConnector { cfg, client } = conn;
    let ConnectorContext {
        mut commands,
        sink,
        indexed,
        checkpoint,
        shutdown,
        status,
        memberships: _,
    } = ctx;
    // Rules DokuWiki filled in with `%GROUP%` for the crawler are recognised by its groups,
    // known only as the configured superuser groups (a review: with none, nothing says so).
    if !cfg
        .superusers
        .0
        .iter()
        .any(|w| matches!(w, acl::Who::Group(_)))
    {
        tracing::warn!(
            connector = %cfg.id,
            "no superuser group is configured: ACL rules the wiki fills in with %GROUP% for \
             the crawler cannot be told from plain rules; put the crawler in a superuser group \
             (and no other) and list that group in `superusers`"
        );
    }
    let syncer = Syncer::new(
        cfg.clone(),
        client.with_shutdown(shutdown.clone()),
        sink,
        indexed,
        status.clone(),
        shutdown.clone(),
    );
    let mut cursor = checkpoint.as_ref().and_then(Cursor::from_checkpoint);
    let mut committed_since = None::<i64>;
    let mut succeeded = false;
    let mut failures = 0u32;
    let mut paused = false;
    let mut commands_open = true;
    let mut next = Instant::now();
    status.set_phase("starting");

    loop {
        let req = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            cmd = commands.recv(), if commands_open => match cmd {
                Some(ConnectorCommand::SyncNow { job_id, force_deletions, full }) => Request {
                    trigger: "admin",
                    full: true,
                    force_deletions,
                    reparse: full,
                    job_id: Some(job_id),
                },
                Some(ConnectorCommand::Pause) => {
                    paused = true;
                    status.set_paused(true);
                    status.set_phase("paused");
                    continue;
                }
                Some(ConnectorCommand::Resume) => {
                    paused = false;
                    status.set_paused(false);
                    // Catch up on whatever changed while paused.
                    Request { full: true, ..Request::scheduled("resume") }
                }
                None => {
                    commands_open = false;
                    continue;
                }
            },
            _ = tokio::time::sleep_until(next), if !paused => {
                Request::scheduled(if succeeded { "watch" } else { "start" })
            }
        };

        match syncer.pass(&req, cursor.as_ref()).await {
            Ok(p) => {
                status.clear(Alarm::Outage);
                match &p.blocked {
                    Some(why) => status.raise(Alarm::DeletionProtection, why.clone()),
                    // A completed reconciliation clears a deletion-protection alarm; a poll
                    // leaves it for an admin to see.
                    None if p.full => status.clear(Alarm::DeletionProtection),
                    None => {}
                }
                status.set_phase(if paused { "paused" } else { "watching" });
                // The status first: whoever sees the checkpoint sees the state it ends.
                let stale =
                    committed_since.is_none_or(|s| p.cursor.since - s >= CHECKPOINT_REFRESH_SECS);
                if !succeeded || p.sent || p.full || stale {
                    match syncer.checkpoint(&p.cursor).await {
                        Ok(()) => committed_since = Some(p.cursor.since),
                        Err(PassError::SinkClosed) => return Err(sink_closed(&cfg)),
                        Err(_) => break,
                    }
                }
                cursor = Some(p.cursor);
                succeeded = true;
                failures = 0;
                next = Instant::now() + cfg.poll_interval;
            }
            Err(PassError::Cancelled) => break,
            Err(PassError::SinkClosed) => return Err(sink_closed(&cfg)),
            Err(PassError::Wiki(e)) => {
                failures += 1;
                let wait = failure_backoff(cfg.poll_interval, failures);
                tracing::warn!(connector = %cfg.id, error = %docent_connector_api::log_safe(&e), failures, retry_in_ms = wait.as_millis() as u64, "sync failed; nothing was deleted");
                status.raise(Alarm::Outage, e);
                status.set_phase("failed");
                next = Instant::now() + wait;
            }
        }
    }
    status.set_phase("stopped");
    Ok(())
}

fn sink_closed(cfg: &DokuWikiConfig) -> ConnectorError {
    ConnectorError::SinkClosed {
        connector: cfg.id.clone(),
    }
}

/// The wait after the `failures`-th failure in a row: the poll interval, doubling, capped.
fn failure_backoff(poll: Duration, failures: u32) -> Duration {
    let cap = poll.max(MAX_FAILURE_BACKOFF);
    poll.saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_backoff_doubles_up_to_a_cap() {
        let s = Duration::from_secs;
        assert_eq!(failure_backoff(s(1), 1), s(1));
        assert_eq!(failure_backoff(s(1), 3), s(4));
        assert_eq!(failure_backoff(s(60), 4), s(300));
        assert_eq!(failure_backoff(s(900), 9), s(900));
        assert_eq!(failure_backoff(s(1), 100), s(300));
    }

    #[test]
    fn the_factory_builds_a_connector_from_its_section() {
        let env = ConfigEnv {
            id: "wiki".into(),
            base_dir: "/".into(),
            max_document_bytes: 1 << 20,
            max_text_bytes: 1 << 20,
            parse_timeout: Duration::from_secs(30),
            parse_memory_bytes: 2 << 30,
        };
        let table: toml::Table = "url = 'http://127.0.0.1:1'\nusername = 'u'\npassword = 'p'"
            .parse()
            .unwrap();
        let spec = Factory.configure(table, &env).unwrap();
        assert_eq!(spec.kind(), "dokuwiki");
        let built = spec.build().unwrap();
        assert_eq!(built.connector.id(), "wiki");
        assert_eq!(built.connector.kind(), "dokuwiki");
        assert!(spec.as_any().downcast_ref::<DokuWikiSpec>().is_some());
    }
}
