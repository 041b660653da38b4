//! A tower layer around the gRPC server that audits refused requests: authentication failures,
//! missing permissions (admin, ingest, act_as, a push source), invalid arguments, unknown names
//! and shed load. It sees every request before authentication and every response after the
//! handler, so no refusal path can forget to audit; the interceptor tells it who the caller was
//! through a [`CallerSlot`]. Request bodies are never read or written; the audit log rate-limits
//! these records.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Code;
use tonic_types::StatusExt;

use super::auth::CallerSlot;
use crate::audit::{AuditLog, RefusalRecord};

#[derive(Clone)]
pub struct RefusalAuditLayer {
    log: Option<Arc<AuditLog>>,
}

impl RefusalAuditLayer {
    pub fn new(log: Option<Arc<AuditLog>>) -> Self {
        Self { log }
    }
}

impl<S> tower_layer::Layer<S> for RefusalAuditLayer {
    type Service = RefusalAudit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RefusalAudit {
            inner,
            log: self.log.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RefusalAudit<S> {
    inner: S,
    log: Option<Arc<AuditLog>>,
}

/// Codes of requests that failed after they reached a handler (a precondition, an unreachable
/// backend, an internal error, a deadline): written too, with `refused: false`, so that no
/// request a handler took leaves no line.
fn is_failure(code: Code) -> bool {
    matches!(
        code,
        Code::FailedPrecondition
            | Code::Unavailable
            | Code::Internal
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Aborted
            | Code::Unknown
            | Code::DataLoss
    )
}

/// Codes that mean "refused" rather than "answered" or "failed inside".
fn is_refusal(code: Code) -> bool {
    matches!(
        code,
        Code::Unauthenticated
            | Code::PermissionDenied
            | Code::InvalidArgument
            | Code::NotFound
            | Code::ResourceExhausted
            | Code::OutOfRange
    )
}

fn peer<B>(req: &http::Request<B>) -> Option<String> {
    super::limits::peer_addr(req).map(|a| a.to_string())
}

impl<S, B, R> tower_service::Service<http::Request<B>> for RefusalAudit<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let Some(log) = self.log.clone() else {
            return Box::pin(self.inner.call(req));
        };
        let slot = CallerSlot::default();
        req.extensions_mut().insert(slot.clone());
        // A name from the fixed method list ("other" for anything else): a peer cannot choose
        // what is written.
        let method = crate::metrics::METHODS[crate::metrics::method_index(req.uri().path())];
        let peer = peer(&req);
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            if let Ok(r) = &res
                && let Some(status) = tonic::Status::from_header_map(r.headers())
                && (is_refusal(status.code()) || is_failure(status.code()))
            {
                let code = format!("{:?}", status.code());
                let reason = status
                    .get_error_details()
                    .error_info()
                    .map(|i| i.reason.clone())
                    .unwrap_or_else(|| code.clone());
                let who = slot.get();
                let acting_for = slot.acting_for();
                log.refusal(RefusalRecord {
                    time: crate::audit::now_rfc3339(),
                    method,
                    caller: who.as_ref().map(|w| w.0.as_str()),
                    credential: who.as_ref().map(|w| w.1.as_str()),
                    on_behalf_of: acting_for.as_deref(),
                    peer,
                    outcome: &reason,
                    code: &code,
                    refused: is_refusal(status.code()),
                    suppressed: 0,
                });
            }
            res
        })
    }
}
