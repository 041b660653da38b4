//! The gRPC service: thin adapters from `docent.v1` messages to the domain (retrieval, answers,
//! index stats). Authentication runs in an interceptor before any handler; a handler that finds
//! no authenticated caller fails closed with UNAUTHENTICATED.
//!
//! Must never: return, count or log a document the caller may not read. Every handler turns the
//! caller into an `AclScope` via `acl::authorize` and passes only that scope to retrieval.

mod admin;
mod assistant;
mod auth;
mod convert;
mod error;
mod ingest;
pub mod limits;
mod refusals;
pub mod tls;

use std::sync::Arc;

use docent_connector_api::StatusHandle;

pub use admin::AdminService;
pub use assistant::AssistantService;
pub use auth::{AuthInterceptor, CallerSlot, DEV_USER_HEADER, Requirement, cert_names};
pub use error::ServiceError;
pub use ingest::IngestService;
pub use limits::{LimitLayer, Limiter, OpenStreamLayer};
pub use refusals::RefusalAuditLayer;

use crate::audit::{AuditLog, AuditRecord};
use crate::guardrail::Verdict;
use crate::identity::Caller;
use crate::index::Backend;
use crate::ingest::{IngestStats, SkipLog};

/// A running connector as admins see it.
#[derive(Clone)]
pub struct ConnectorInfo {
    pub id: String,
    pub kind: &'static str,
    pub status: StatusHandle,
    /// Sync now / pause / resume.
    pub commands: tokio::sync::mpsc::Sender<docent_connector_api::jobs::ConnectorCommand>,
}

/// Everything the handlers share.
pub struct AppState {
    pub assistant: Arc<crate::assistant::Assistant>,
    pub index: Arc<dyn Backend>,
    pub identities: Arc<crate::identity::IdentityRegistry>,
    pub audit: Option<Arc<AuditLog>>,
    /// The config file identities are reloaded from (none in tests built from text).
    pub config_path: Option<std::path::PathBuf>,
    /// That file's sections a reload does not apply, as they read at start
    /// ([`crate::config::start_only_sections`]): a reload names those changed since.
    pub started_sections: Option<crate::config::SectionDigests>,
    pub connectors: Vec<ConnectorInfo>,
    /// Push sources by connector id (the push API's targets).
    pub push: std::collections::HashMap<String, crate::ingest::push::PushSource>,
    pub skips: Arc<SkipLog>,
    pub stats: Arc<IngestStats>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Answers running on tasks of their own (Ask, AskStream).
    pub answers: Arc<InFlight>,
}

/// Work running on tasks of its own that a stopping daemon waits for, within its drain: an
/// answer's turn and audit record are written when it ends, after its client may have left
/// (session 43's review: the runtime's end dropped them, and an answer partly sent was
/// neither stored nor audited).
#[derive(Default)]
pub struct InFlight {
    count: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

/// Counts one piece of [`InFlight`] work until dropped.
pub struct InFlightGuard(Arc<InFlight>);

impl InFlight {
    pub fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InFlightGuard(self.clone())
    }

    /// Resolves once no work is running.
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self
            .0
            .count
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
            == 1
        {
            self.0.idle.notify_waiters();
        }
    }
}

/// What one request did, for the audit log.
pub struct Audited<'a> {
    pub method: &'static str,
    pub caller: &'a Caller,
    pub outcome: &'a str,
    pub documents: Vec<&'a str>,
    /// Documents whose passages an answerer was given and that uncited sentences may paraphrase
    /// (general-knowledge answers), beyond the cited `documents`.
    pub evidence: Vec<&'a str>,
    pub verdicts: &'a [Verdict],
    pub question: Option<&'a str>,
    /// What an admin or read call acted on (a user, a connector, a conversation): always
    /// written, unlike the question.
    pub target: Option<&'a str>,
}

/// What a reload applied, and what it did not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub identities: usize,
    pub groups: usize,
    pub api_keys: usize,
    /// Sections changed since start that a reload does not apply.
    pub needs_restart: Vec<String>,
}

impl AppState {
    /// What `caller` may be shown of a document id (`id`) or of a reason or error naming one:
    /// PII-redacted for their groups, as everything else that leaves the daemon (an admin
    /// outside the PII-exempt groups sees a card number in a file name redacted), and withheld
    /// whole when it names a phrase blocked for them (session 37's review: a feedback question
    /// or a skipped file's name showed it). For admin responses and push results.
    pub(crate) fn shown_to(
        &self,
        caller: &crate::identity::Caller,
    ) -> impl Fn(String, bool) -> String + '_ {
        let principals = caller.guardrail_principals().clone();
        let g = self.assistant.guardrails().clone();
        move |mut s: String, id: bool| {
            // Text is read as identifiers too, percent-decoded (a skip reason quoting
            // `file:///srv/Project%20Falcon/plan.pdf`; session 43's review).
            let (texts, ids) = match id {
                true => (None, Some(s.as_str())),
                false => (Some(s.as_str()), Some(s.as_str())),
            };
            if g.blocked_phrase_among(&principals, texts, ids).is_some() {
                return crate::assistant::WITHHELD.to_string();
            }
            let mut found = crate::guardrail::PiiFindings::default();
            if !id {
                g.redact_sentence(&principals, &mut s, &mut found);
            }
            // Text too is read as identifiers: a skip reason, a job's error or an alarm names
            // paths and URLs (`refund_4111_1111_1111_1111`), which only that reading
            // recognises (a review: the ids were redacted, the reasons quoting them were not).
            g.redact_key(&principals, &mut s, &mut found);
            s
        }
    }

    /// Re-reads the identity sections, identity source files and JWKS from the config file and
    /// swaps the store; on any error the current store stays, less the credentials and
    /// privileges the file no longer grants (an unrelated error must not hold a revocation
    /// back). Returns the counts, and the other sections that changed since start (which a
    /// reload does not apply: a review found them validated and silently left as they were,
    /// after "identities reloaded").
    pub fn reload_identities(&self) -> Result<Reloaded, String> {
        let path = self
            .config_path
            .as_ref()
            .ok_or("the daemon was not started from a config file")?;
        // One reload at a time (SIGHUP and the admin call): a failed one withdraws against
        // the store it failed to replace, never against one a later reload installed.
        static RELOADS: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = RELOADS.lock().unwrap_or_else(|p| p.into_inner());
        let loaded = crate::config::Config::load(path).map_err(|e| e.to_string());
        let counts = match loaded.and_then(|cfg| self.identities.reload(cfg)) {
            Ok(c) => c,
            Err(e) => {
                let text = std::fs::read_to_string(path).ok();
                let granted = text.as_deref().and_then(crate::config::granted);
                // Not TOML at all: only the keys it marks revoked are withdrawn.
                let withdrawn = match (&granted, &text) {
                    (Some(g), _) => Some(self.identities.withdraw_ungranted(g)),
                    (None, Some(t)) => Some(
                        self.identities
                            .revoke_keys(&crate::config::revoked_in_text(t)),
                    ),
                    (None, None) => None,
                };
                return Err(match withdrawn {
                    Some(Ok(n)) if n > 0 => {
                        tracing::warn!(
                            withdrawn = n,
                            "identity reload failed; the credentials and privileges the config file no longer grants were withdrawn"
                        );
                        format!(
                            "{e}\n(the current identities stay, less what the file no longer grants: {n} credentials or privileges withdrawn)"
                        )
                    }
                    Some(Err(w)) => {
                        format!("{e}\n(withdrawing what the file no longer grants failed: {w})")
                    }
                    _ => e,
                });
            }
        };
        tracing::info!(
            identities = counts.0,
            groups = counts.1,
            api_keys = counts.2,
            "identities reloaded"
        );
        let now = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| crate::config::start_only_sections(&t));
        let needs_restart = match (&self.started_sections, &now) {
            (Some(then), Some(now)) => crate::config::changed_sections(then, now),
            _ => Vec::new(),
        };
        if !needs_restart.is_empty() {
            tracing::warn!(
                sections = %needs_restart.join(", "),
                "these config sections changed since start and apply only after a restart"
            );
        }
        Ok(Reloaded {
            identities: counts.0,
            groups: counts.1,
            api_keys: counts.2,
            needs_restart,
        })
    }

    /// Audits a call that succeeded and touched no document: `target` is what it acted on.
    pub fn record_ok(&self, method: &'static str, caller: &Caller, target: Option<&str>) {
        self.record(Audited {
            method,
            caller,
            outcome: "ok",
            documents: Vec::new(),
            evidence: Vec::new(),
            verdicts: &[],
            question: None,
            target,
        });
    }

    /// Writes an audit record (when an audit log is configured) and counts the verdicts.
    pub fn record(&self, a: Audited<'_>) {
        for v in a.verdicts {
            self.metrics.guardrail(v.stage, v.action, v.count as u64);
        }
        let Some(log) = &self.audit else { return };
        let mut evidence: Vec<&str> = a
            .evidence
            .into_iter()
            .filter(|k| !a.documents.contains(k))
            .collect();
        evidence.sort_unstable();
        evidence.dedup();
        let (caller, on_behalf_of) = match a.caller.actor() {
            Some(actor) => (actor, Some(a.caller.user_id())),
            None => (a.caller.user_id(), None),
        };
        log.write(&AuditRecord {
            time: crate::audit::now_rfc3339(),
            method: a.method,
            caller,
            credential: a.caller.credential(),
            on_behalf_of,
            outcome: a.outcome,
            documents: a.documents,
            evidence,
            guardrails: a.verdicts,
            question: a.question.filter(|_| log.include_question()),
            target: a.target,
        });
    }

    /// The Prometheus exposition of everything this daemon counts.
    pub fn render_metrics(&self) -> String {
        let by_source = self.index.documents_by_source();
        let connectors: Vec<(String, u64, u64, u64)> = self
            .connectors
            .iter()
            .map(|c| {
                let (indexed, failed) = self.stats.connector(&c.id);
                (
                    c.id.clone(),
                    by_source.get(&c.id).copied().unwrap_or(0),
                    indexed,
                    failed,
                )
            })
            .collect();
        let s = self.index.stats();
        if let Some(a) = &self.audit {
            self.metrics
                .note_audit_failures(a.failed_writes(), a.suppressed_refusals());
        }
        self.metrics
            .render(&connectors, (s.documents, s.chunks, s.disk_bytes))
    }
}

#[cfg(test)]
mod in_flight_tests {
    use super::*;

    #[tokio::test]
    async fn idle_waits_for_the_last_piece_of_work() {
        let work = Arc::new(InFlight::default());
        work.idle().await;
        let (a, b) = (work.enter(), work.enter());
        let waiting = tokio::spawn({
            let work = work.clone();
            async move { work.idle().await }
        });
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "one still runs");
        drop(b);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("idle once both ended")
            .unwrap();
    }
}
