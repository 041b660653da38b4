//! `docent.v1.Admin`: connector status, index stats and identity tools (who is X, can X read D
//! and why, reload), for admin identities only. Identity answers name documents by key only
//! after the admin asked for that key.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use docent_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::auth::caller;
use super::{AppState, Audited, ServiceError};
use docent_connector_api::AclDecision;

pub struct AdminService {
    state: Arc<AppState>,
}

impl AdminService {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
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
        require_admin(&req)?;
        let counts = self.state.index.documents_by_source();
        let connectors = self
            .state
            .connectors
            .iter()
            .map(|c| {
                let s = c.status.snapshot();
                let (skipped_total, recent) = self.state.skips.get(&c.id);
                pb::ConnectorStatus {
                    id: c.id.clone(),
                    kind: c.kind.to_string(),
                    state: s.phase,
                    documents: counts.get(&c.id).copied().unwrap_or(0),
                    skipped_total,
                    skipped: recent
                        .into_iter()
                        .map(|(id, reason)| pb::SkippedDocument { id, reason })
                        .collect(),
                    last_full_scan: s.last_full_scan_ms.map(|ms| ms / 1000).unwrap_or(0),
                    last_error: s.last_error.unwrap_or_default(),
                }
            })
            .collect();
        Ok(Response::new(pb::ListConnectorsResponse { connectors }))
    }

    async fn index_stats(
        &self,
        req: Request<pb::IndexStatsRequest>,
    ) -> Result<Response<pb::IndexStatsResponse>, Status> {
        require_admin(&req)?;
        let s = self.state.index.stats();
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
        let w = self
            .state
            .identities
            .current()
            .whois(user)
            .ok_or_else(|| unknown_user(user))?;
        self.state.record(Audited {
            method: "WhoIs",
            caller: &admin,
            outcome: "ok",
            documents: Vec::new(),
            verdicts: &[],
            question: Some(user),
        });
        Ok(Response::new(pb::WhoIsResponse {
            id: w.id,
            aliases: w.aliases,
            direct_groups: w.direct_groups,
            groups: w.groups,
            principals: w.principals,
            permissions: w
                .permissions
                .names()
                .into_iter()
                .map(String::from)
                .collect(),
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
        let entry = self
            .state
            .index
            .doc_entry(key)
            .ok_or_else(|| ServiceError::NotFound {
                reason: "UNKNOWN_DOCUMENT",
                what: "document",
                name: key.to_string(),
            })?;
        let d = self
            .state
            .identities
            .current()
            .explain(user, &entry.acl)
            .ok_or_else(|| unknown_user(user))?;
        self.state.record(Audited {
            method: "CheckAccess",
            caller: &admin,
            outcome: if d.allowed() { "allowed" } else { "denied" },
            documents: vec![key],
            verdicts: &[],
            question: Some(user),
        });
        let (decision, entry) = match &d {
            AclDecision::Allowed(p) => ("allow", p.token()),
            AclDecision::Denied(p) => ("deny", p.token()),
            AclDecision::NoMatch => ("no_match", String::new()),
        };
        Ok(Response::new(pb::CheckAccessResponse {
            allowed: d.allowed(),
            decision: decision.into(),
            entry,
            explanation: d.to_string(),
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
        self.state.record(Audited {
            method: "ReloadIdentities",
            caller: &admin,
            outcome: if r.is_ok() { "ok" } else { "failed" },
            documents: Vec::new(),
            verdicts: &[],
            question: None,
        });
        let (identities, groups, api_keys) =
            r.map_err(|message| ServiceError::FailedPrecondition {
                reason: "RELOAD_FAILED",
                message,
            })?;
        Ok(Response::new(pb::ReloadIdentitiesResponse {
            identities: identities as u64,
            groups: groups as u64,
            api_keys: api_keys as u64,
        }))
    }
}
