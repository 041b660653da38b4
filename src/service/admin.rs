//! `docent.v1.Admin`: connector status and index stats, for admin identities only.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use docent_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::auth::caller;
use super::{AppState, ServiceError};

pub struct AdminService {
    state: Arc<AppState>,
}

impl AdminService {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }
}

fn require_admin<T>(req: &Request<T>) -> Result<(), ServiceError> {
    if caller(req)?.is_admin() {
        Ok(())
    } else {
        Err(ServiceError::AdminRequired)
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
}
