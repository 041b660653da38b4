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

use std::sync::Arc;

use docent_connector_api::StatusHandle;

pub use admin::AdminService;
pub use assistant::AssistantService;
pub use auth::AuthInterceptor;
pub use error::ServiceError;

use crate::answer::AnswerConfig;
use crate::identity::IdentityStore;
use crate::index::Index;
use crate::ingest::{IngestStats, SkipLog};
use crate::retrieve::Retriever;

/// A running connector as admins see it.
#[derive(Clone)]
pub struct ConnectorInfo {
    pub id: String,
    pub kind: &'static str,
    pub status: StatusHandle,
}

/// Everything the handlers share.
pub struct AppState {
    pub index: Arc<Index>,
    pub retriever: Arc<Retriever>,
    pub identities: Arc<IdentityStore>,
    pub answer: AnswerConfig,
    pub connectors: Vec<ConnectorInfo>,
    pub skips: Arc<SkipLog>,
    pub stats: Arc<IngestStats>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl AppState {
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
        self.metrics
            .render(&connectors, (s.documents, s.chunks, s.disk_bytes))
    }
}
