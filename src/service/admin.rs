//! `docent.v1.Admin`: connector status, index stats and identity tools (who is X, can X read D
//! and why, reload), for admin identities only. Identity answers name documents by key only
//! after the admin asked for that key.
//!
//! Every method checks the admin right first, before looking at its request (the interceptor
//! has already refused non-admins; this is the second lock on the same door).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use docent_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::auth::caller;
use super::{AppState, Audited, ServiceError};
use docent_connector_api::AclDecision;

/// Feedback records per ExportFeedback page by default, at most, and the bytes a page stops at
/// (tonic clients decode at most 4 MiB per message by default).
const FEEDBACK_PAGE: usize = 500;
const MAX_FEEDBACK_PAGE: u32 = 5000;
const FEEDBACK_PAGE_BYTES: usize = 1 << 20;

pub struct AdminService {
    state: Arc<AppState>,
}

impl AdminService {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }

    fn connector(&self, id: &str) -> Result<&super::ConnectorInfo, ServiceError> {
        self.state
            .connectors
            .iter()
            .find(|c| c.id == id)
            .ok_or_else(|| ServiceError::NotFound {
                reason: "UNKNOWN_CONNECTOR",
                what: "connector",
                name: id.to_string(),
            })
    }

    /// Documents per connector, off the async runtime (on Milvus the document table may be
    /// read again from the server).
    async fn document_counts(&self) -> Result<HashMap<String, u64>, ServiceError> {
        let st = self.state.clone();
        tokio::task::spawn_blocking(move || st.index.documents_by_source())
            .await
            .map_err(ServiceError::internal)
    }

    fn connector_status(
        &self,
        c: &super::ConnectorInfo,
        admin: &crate::identity::Caller,
        counts: &HashMap<String, u64>,
    ) -> pb::ConnectorStatus {
        let shown = self.state.shown_to(admin);
        let s = c.status.snapshot();
        let last_error = shown(s.last_error().unwrap_or_default(), false);
        let (skipped_total, recent) = self.state.skips.get(&c.id);
        pb::ConnectorStatus {
            id: c.id.clone(),
            kind: c.kind.to_string(),
            state: s.phase,
            documents: counts.get(&c.id).copied().unwrap_or(0),
            skipped_total,
            skipped: recent
                .into_iter()
                .map(|(id, reason)| pb::SkippedDocument {
                    id: shown(id, true),
                    reason: shown(reason, false),
                })
                .collect(),
            last_full_scan: s.last_full_scan_ms.map(|ms| ms / 1000).unwrap_or(0),
            last_error,
            alarms: s.alarms.into_values().map(|a| shown(a, false)).collect(),
            paused: s.paused,
        }
    }

    /// Sends a command to a connector, auditing it.
    async fn command(
        &self,
        req: &Request<impl Send>,
        connector: &str,
        method: &'static str,
        cmd: docent_connector_api::jobs::ConnectorCommand,
    ) -> Result<(), ServiceError> {
        let admin = require_admin(req)?;
        let c = self.connector(connector)?;
        // Never waits: a connector in the middle of a crawl takes its commands between steps,
        // and a handler blocked on a full queue would hold one of the admin's request slots
        // until it did (enough of them, and the admin could not even reload identities).
        use tokio::sync::mpsc::error::TrySendError;
        // A refusal is written by the audit layer, with its reason.
        match c.commands.try_send(cmd) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(ServiceError::FailedPrecondition {
                    reason: "CONNECTOR_BUSY",
                    message: format!(
                        "connector {connector} has not yet taken its earlier commands (it may be \
                         in the middle of a crawl); try again shortly"
                    ),
                });
            }
            Err(TrySendError::Closed(_)) => {
                return Err(ServiceError::FailedPrecondition {
                    reason: "CONNECTOR_STOPPED",
                    message: format!("connector {connector} is not running"),
                });
            }
        }
        self.state.record(Audited {
            method,
            caller: &admin,
            outcome: "ok",
            documents: Vec::new(),
            evidence: Vec::new(),
            verdicts: &[],
            question: None,
            target: Some(connector),
        });
        Ok(())
    }

    /// A push source cannot be paused: its clients decide when to send (before, Pause said
    /// "paused" while pushes went on being accepted, and its commands were never taken).
    fn pausable<T>(&self, req: &Request<T>, id: &str) -> Result<(), ServiceError> {
        require_admin(req)?;
        let c = self.connector(id)?;
        if c.kind == "push" {
            return Err(ServiceError::FailedPrecondition {
                reason: "NOT_PAUSABLE",
                message: format!("{} is a push source: its clients decide when to send", c.id),
            });
        }
        Ok(())
    }
}

fn require_admin<T>(req: &Request<T>) -> Result<crate::identity::Caller, ServiceError> {
    let c = caller(req)?;
    if c.is_admin() {
        Ok(c)
    } else {
        Err(ServiceError::AdminRequired)
    }
}

fn job(
    connector: &str,
    j: &docent_connector_api::jobs::JobRecord,
    shown: &dyn Fn(String, bool) -> String,
) -> pb::Job {
    use docent_connector_api::jobs::JobState;
    let (state, reason) = match &j.state {
        JobState::Running => ("running", String::new()),
        JobState::Succeeded => ("succeeded", String::new()),
        JobState::Failed(r) => ("failed", shown(r.clone(), false)),
        JobState::Blocked(r) => ("blocked", shown(r.clone(), false)),
        JobState::Cancelled => ("cancelled", String::new()),
    };
    let c = j.counts;
    pb::Job {
        id: j.id,
        connector: connector.to_string(),
        kind: j.kind.to_string(),
        trigger: j.trigger.to_string(),
        started_ms: j.started_ms,
        ended_ms: j.ended_ms.unwrap_or(0),
        state: state.to_string(),
        reason,
        counts: Some(pb::JobCounts {
            scanned: c.scanned,
            added: c.added,
            modified: c.modified,
            deleted: c.deleted,
            unchanged: c.unchanged,
            failed: c.failed,
            permission_reads: c.permission_reads,
        }),
        failures: j
            .failures
            .iter()
            .map(|f| pb::SkippedDocument {
                id: shown(f.id.clone(), true),
                reason: shown(f.reason.clone(), false),
            })
            .collect(),
    }
}

fn unknown_user(name: &str) -> ServiceError {
    ServiceError::NotFound {
        reason: "UNKNOWN_USER",
        what: "user",
        name: name.to_string(),
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn list_connectors(
        &self,
        req: Request<pb::ListConnectorsRequest>,
    ) -> Result<Response<pb::ListConnectorsResponse>, Status> {
        let admin = require_admin(&req)?;
        let counts = self.document_counts().await?;
        let connectors = self
            .state
            .connectors
            .iter()
            .map(|c| self.connector_status(c, &admin, &counts))
            .collect();
        self.state.record_ok("ListConnectors", &admin, None);
        Ok(Response::new(pb::ListConnectorsResponse { connectors }))
    }

    async fn index_stats(
        &self,
        req: Request<pb::IndexStatsRequest>,
    ) -> Result<Response<pb::IndexStatsResponse>, Status> {
        let admin = require_admin(&req)?;
        self.state.record_ok("IndexStats", &admin, None);
        let st = self.state.clone();
        let s = tokio::task::spawn_blocking(move || st.index.stats())
            .await
            .map_err(ServiceError::internal)?;
        let st = &self.state.stats;
        Ok(Response::new(pb::IndexStatsResponse {
            documents: s.documents,
            chunks: s.chunks,
            segments: s.segments,
            model_id: s.model_id,
            dimension: s.dim as u32,
            disk_bytes: s.disk_bytes,
            last_commit: s.last_commit,
            documents_indexed: st.documents_indexed.load(Ordering::Relaxed),
            documents_failed: st.documents_failed.load(Ordering::Relaxed),
            chunks_embedded: st.chunks_embedded.load(Ordering::Relaxed),
            chunks_reused: st.chunks_reused.load(Ordering::Relaxed),
        }))
    }

    async fn who_is(
        &self,
        req: Request<pb::WhoIsRequest>,
    ) -> Result<Response<pb::WhoIsResponse>, Status> {
        let admin = require_admin(&req)?;
        let user = req.get_ref().user.trim();
        // Audited with the name asked, found or not (a review: a miss was left to the refusal
        // records, rate-limited and without the name, as CheckAccess's were before).
        let Some(w) = self.state.identities.current().whois(user) else {
            self.state.record(Audited {
                method: "WhoIs",
                caller: &admin,
                outcome: "UNKNOWN_USER",
                documents: Vec::new(),
                evidence: Vec::new(),
                verdicts: &[],
                question: None,
                target: Some(user),
            });
            return Err(unknown_user(user).into());
        };
        self.state.record_ok("WhoIs", &admin, Some(user));
        // Names and groups pass the output guardrails for the admin, as CheckAccess's entry
        // does (a review: a group or e-mail alias CheckAccess withheld or redacted was shown
        // here as it is).
        let shown = self.state.shown_to(&admin);
        let all = |v: Vec<String>| v.into_iter().map(|s| shown(s, true)).collect();
        Ok(Response::new(pb::WhoIsResponse {
            id: shown(w.id, true),
            aliases: all(w.aliases),
            direct_groups: all(w.direct_groups),
            groups: all(w.groups),
            principals: all(w.principals),
            permissions: w
                .permissions
                .names()
                .into_iter()
                .map(String::from)
                .collect(),
        }))
    }

    async fn usage(
        &self,
        req: Request<pb::UsageRequest>,
    ) -> Result<Response<pb::UsageResponse>, Status> {
        let admin = require_admin(&req)?;
        let days = match req.get_ref().days {
            0 => 1,
            d @ 1..=366 => d,
            d => {
                return Err(ServiceError::InvalidArgument {
                    reason: "DAYS_OUT_OF_RANGE",
                    field: "days",
                    message: format!("{d} is not in 1..=366"),
                }
                .into());
            }
        };
        let st = self.state.clone();
        let rows = tokio::task::spawn_blocking(move || {
            let Some(store) = st.assistant.store() else {
                return Ok(Vec::new());
            };
            let first = crate::assistant::store::day_of(
                crate::assistant::store::now_ms() - i64::from(days - 1) * 86_400_000,
            );
            store.usage_since(&first)
        })
        .await
        .map_err(ServiceError::internal)?
        .map_err(ServiceError::internal)?;
        let (pp, pc, currency) = match self.state.assistant.llm() {
            Some(l) => {
                let c = l.config();
                (
                    c.price_prompt_per_1k,
                    c.price_completion_per_1k,
                    c.currency.clone(),
                )
            }
            None => (0.0, 0.0, String::new()),
        };
        self.state.record_ok("Usage", &admin, None);
        let shown = self.state.shown_to(&admin);
        Ok(Response::new(pb::UsageResponse {
            identities: rows
                .into_iter()
                .filter_map(|(p, u)| {
                    let id = p.strip_prefix("user:")?.to_string();
                    Some(pb::IdentityUsage {
                        identity: shown(id, true),
                        prompt_tokens: u.prompt,
                        completion_tokens: u.completion,
                        requests: u.requests,
                        estimated_cost: u.prompt as f64 / 1000.0 * pp
                            + u.completion as f64 / 1000.0 * pc,
                    })
                })
                .collect(),
            currency,
        }))
    }

    async fn export_feedback(
        &self,
        req: Request<pb::ExportFeedbackRequest>,
    ) -> Result<Response<pb::ExportFeedbackResponse>, Status> {
        let admin = require_admin(&req)?;
        let msg = req.get_ref();
        let limit = match msg.page_size {
            0 => FEEDBACK_PAGE,
            n @ 1..=MAX_FEEDBACK_PAGE => n as usize,
            n => {
                return Err(ServiceError::InvalidArgument {
                    reason: "PAGE_SIZE_OUT_OF_RANGE",
                    field: "page_size",
                    message: format!("{n} is not in 1..={MAX_FEEDBACK_PAGE}"),
                }
                .into());
            }
        };
        let after = match msg.page_token.as_str() {
            "" => None,
            t => Some(
                hex::decode(t)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| ServiceError::InvalidArgument {
                        reason: "INVALID_PAGE_TOKEN",
                        field: "page_token",
                        message: "not a token this server gave out".into(),
                    })?,
            ),
        };
        let st = self.state.clone();
        let (records, next) = tokio::task::spawn_blocking(move || match st.assistant.store() {
            Some(s) => s.feedback_page(after.as_deref(), limit, FEEDBACK_PAGE_BYTES),
            None => Ok((Vec::new(), None)),
        })
        .await
        .map_err(ServiceError::internal)?
        .map_err(ServiceError::internal)?;
        self.state.record_ok("ExportFeedback", &admin, None);
        // The question, comment and cited keys are users' words and documents' names: they
        // pass the output guardrail's redaction for the admin, as other admin responses do.
        let shown = self.state.shown_to(&admin);
        Ok(Response::new(pb::ExportFeedbackResponse {
            records: records
                .into_iter()
                .map(|f| pb::FeedbackRecord {
                    identity: shown(f.identity, true),
                    conversation_id: f.conversation_id,
                    turn: f.turn,
                    up: f.up,
                    reasons: f.reasons,
                    comment: shown(f.comment, false),
                    time_ms: f.time_ms,
                    question: shown(f.question, false),
                    documents: f.documents.into_iter().map(|k| shown(k, true)).collect(),
                })
                .collect(),
            next_page_token: next.map(hex::encode).unwrap_or_default(),
        }))
    }

    async fn check_access(
        &self,
        req: Request<pb::CheckAccessRequest>,
    ) -> Result<Response<pb::CheckAccessResponse>, Status> {
        let admin = require_admin(&req)?;
        let msg = req.get_ref();
        let user = msg.user.trim();
        let key = msg.document_key.trim();
        // Every outcome is audited with the key and the user asked about, a probe for a key
        // that does not exist too; and the user is asked first, so a made-up user tells
        // nothing of the key (a review: only a rate-limited refusal without either was
        // written, and UNKNOWN_DOCUMENT against UNKNOWN_USER told whether the key exists).
        let audit = |outcome: &str| {
            self.state.record(Audited {
                method: "CheckAccess",
                caller: &admin,
                outcome,
                documents: vec![key],
                evidence: Vec::new(),
                verdicts: &[],
                question: None,
                target: Some(user),
            })
        };
        let store = self.state.identities.current();
        if store
            .resolve(user, crate::identity::ResolveReason::AccessExplanation)
            .is_none()
        {
            audit("UNKNOWN_USER");
            return Err(unknown_user(user).into());
        }
        let (st, k) = (self.state.clone(), key.to_string());
        let Some(entry) = tokio::task::spawn_blocking(move || st.index.doc_entry(&k))
            .await
            .map_err(ServiceError::internal)?
        else {
            audit("UNKNOWN_DOCUMENT");
            return Err(ServiceError::NotFound {
                reason: "UNKNOWN_DOCUMENT",
                what: "document",
                name: key.to_string(),
            }
            .into());
        };
        let d = store
            .explain(user, &entry.acl)
            .ok_or_else(|| unknown_user(user))?;
        // What the user's queries would get: an allow entry does not admit a document their
        // scope withholds (no query permission; a deny entry while a connector's group
        // memberships are not known yet).
        let withheld = match store.resolve(user, crate::identity::ResolveReason::AccessExplanation)
        {
            // (A review: a withdrawn identity was explained as allowed.)
            Some(_) if d.allowed() && store.is_locked(user) => Some(
                "the identity is withdrawn until an identity reload succeeds: nothing signs \
                 it in"
                    .to_string(),
            ),
            Some(c) if d.allowed() => match crate::acl::authorize(&c) {
                Err(e) => Some(e.to_string()),
                Ok(scope) if !scope.permits(&entry.acl) => Some(
                    "its deny entries exclude it until every connector that reports group \
                     memberships has reported"
                        .to_string(),
                ),
                Ok(_) => None,
            },
            _ => None,
        };
        let allowed = d.allowed() && withheld.is_none();
        audit(if allowed { "allowed" } else { "denied" });
        let (decision, entry) = match &d {
            _ if withheld.is_some() => ("withheld", String::new()),
            AclDecision::Allowed(p) => ("allow", p.token()),
            AclDecision::Denied(p) => ("deny", p.token()),
            AclDecision::NoMatch => ("no_match", String::new()),
        };
        let explanation = match &withheld {
            Some(why) => format!("{d}, but withheld: {why}"),
            None => d.to_string(),
        };
        // Principal tokens name people: through the output guardrails like the rest.
        let shown = self.state.shown_to(&admin);
        Ok(Response::new(pb::CheckAccessResponse {
            allowed,
            decision: decision.into(),
            entry: shown(entry, true),
            explanation: shown(explanation, false),
        }))
    }

    async fn reload_identities(
        &self,
        req: Request<pb::ReloadIdentitiesRequest>,
    ) -> Result<Response<pb::ReloadIdentitiesResponse>, Status> {
        let admin = require_admin(&req)?;
        let st = self.state.clone();
        let r = tokio::task::spawn_blocking(move || st.reload_identities())
            .await
            .map_err(ServiceError::internal)?;
        // A failure (RELOAD_FAILED) is written by the audit layer.
        let r = r.map_err(|message| ServiceError::FailedPrecondition {
            reason: "RELOAD_FAILED",
            // (It may name identities and aliases: redacted as SIGHUP's log line is.)
            message: self.state.shown_to(&admin)(message, false),
        })?;
        self.state.record_ok("ReloadIdentities", &admin, None);
        Ok(Response::new(pb::ReloadIdentitiesResponse {
            identities: r.identities as u64,
            groups: r.groups as u64,
            api_keys: r.api_keys as u64,
            needs_restart: r.needs_restart,
        }))
    }

    async fn list_jobs(
        &self,
        req: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let admin = require_admin(&req)?;
        let c = self.connector(&req.get_ref().connector)?;
        self.state.record_ok("ListJobs", &admin, Some(&c.id));
        let jobs = c
            .status
            .snapshot()
            .jobs
            .iter()
            .map(|j| job(&c.id, j, &self.state.shown_to(&admin)))
            .collect();
        Ok(Response::new(pb::ListJobsResponse { jobs }))
    }

    async fn sync_now(
        &self,
        req: Request<pb::SyncNowRequest>,
    ) -> Result<Response<pb::SyncNowResponse>, Status> {
        use docent_connector_api::jobs::ConnectorCommand;
        // Authorization before anything that depends on the request: a non-admin learns no
        // connector names or kinds and consumes no job ids.
        require_admin(&req)?;
        let msg = req.get_ref().clone();
        let c = self.connector(&msg.connector)?;
        if c.kind == "push" {
            return Err(ServiceError::FailedPrecondition {
                reason: "NOT_SYNCABLE",
                message: format!("{} is a push source: its client sends the changes", c.id),
            }
            .into());
        }
        let job_id = c.status.reserve_job_id();
        let cmd = ConnectorCommand::SyncNow {
            job_id,
            force_deletions: msg.force_deletions,
            full: msg.full,
        };
        self.command(&req, &msg.connector, "SyncNow", cmd).await?;
        Ok(Response::new(pb::SyncNowResponse { job_id }))
    }

    async fn pause_connector(
        &self,
        req: Request<pb::ConnectorRequest>,
    ) -> Result<Response<pb::ConnectorStatus>, Status> {
        use docent_connector_api::jobs::ConnectorCommand;
        let id = req.get_ref().connector.clone();
        self.pausable(&req, &id)?;
        self.command(&req, &id, "PauseConnector", ConnectorCommand::Pause)
            .await?;
        // The connector applies it on its next turn; the answer already says so.
        self.connector(&id)?.status.set_paused(true);
        let admin = require_admin(&req)?;
        let counts = self.document_counts().await?;
        Ok(Response::new(self.connector_status(
            self.connector(&id)?,
            &admin,
            &counts,
        )))
    }

    async fn resume_connector(
        &self,
        req: Request<pb::ConnectorRequest>,
    ) -> Result<Response<pb::ConnectorStatus>, Status> {
        use docent_connector_api::jobs::ConnectorCommand;
        let id = req.get_ref().connector.clone();
        self.pausable(&req, &id)?;
        self.command(&req, &id, "ResumeConnector", ConnectorCommand::Resume)
            .await?;
        self.connector(&id)?.status.set_paused(false);
        let admin = require_admin(&req)?;
        let counts = self.document_counts().await?;
        Ok(Response::new(self.connector_status(
            self.connector(&id)?,
            &admin,
            &counts,
        )))
    }
}
