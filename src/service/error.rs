//! Service errors: user errors (bad request, no credentials) and internal ones, each with a
//! stable reason code in a `google.rpc.ErrorInfo` detail (domain `docent.v1`). Internal details
//! go to the log, never to the caller.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub const ERROR_DOMAIN: &str = "docent.v1";

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Auth(#[from] crate::identity::AuthError),
    #[error("this method requires an admin identity")]
    AdminRequired,
    #[error("this credential may not {0}")]
    ScopeDenied(&'static str),
    /// Not a writer of the push source (or no such source: the two are not told apart, so a
    /// caller learns no source names).
    #[error("this credential may not write to push source {0:?}")]
    SourceDenied(String),
    #[error("{0}")]
    Overloaded(&'static str),
    /// A daily LLM token budget is spent (checked before the model is called).
    #[error("{0}")]
    QuotaExceeded(String),
    /// What is left of a budget is held by requests in flight: retry when they finish.
    #[error("{0}")]
    QuotaInUse(String),
    #[error("{0}")]
    ActAs(#[from] crate::identity::ActAsError),
    #[error("{what} {name:?} not found")]
    NotFound {
        reason: &'static str,
        what: &'static str,
        name: String,
    },
    #[error("{field}: {message}")]
    InvalidArgument {
        reason: &'static str,
        field: &'static str,
        message: String,
    },
    #[error("{message}")]
    FailedPrecondition {
        reason: &'static str,
        message: String,
    },
    /// The client's deadline passed (or it went away) before the work was done.
    #[error("the request's deadline passed before it was answered")]
    Cancelled,
    /// The index (a shared backend) cannot be reached right now.
    #[error("the index is unavailable; retry shortly")]
    Unavailable,
    #[error("internal error")]
    Internal(String),
}

impl ServiceError {
    /// Stable machine-readable code, documented in the proto.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Auth(e) => e.reason(),
            Self::AdminRequired => "ADMIN_REQUIRED",
            Self::ScopeDenied(_) => "SCOPE_DENIED",
            Self::SourceDenied(_) => "SOURCE_DENIED",
            Self::Overloaded(_) => "OVERLOADED",
            Self::QuotaExceeded(_) => "TOKEN_QUOTA_EXCEEDED",
            Self::QuotaInUse(_) => "TOKEN_QUOTA_IN_USE",
            Self::ActAs(e) => e.reason(),
            Self::NotFound { reason, .. } | Self::FailedPrecondition { reason, .. } => reason,
            Self::InvalidArgument { reason, .. } => reason,
            Self::Cancelled => "DEADLINE_EXCEEDED",
            Self::Unavailable => "INDEX_UNAVAILABLE",
            Self::Internal(_) => "INTERNAL",
        }
    }

    fn code(&self) -> Code {
        match self {
            Self::Auth(_) => Code::Unauthenticated,
            Self::AdminRequired | Self::ScopeDenied(_) | Self::SourceDenied(_) => {
                Code::PermissionDenied
            }
            Self::Overloaded(_) | Self::QuotaExceeded(_) | Self::QuotaInUse(_) => {
                Code::ResourceExhausted
            }
            Self::ActAs(crate::identity::ActAsError::UnknownUser(_)) | Self::NotFound { .. } => {
                Code::NotFound
            }
            Self::ActAs(_) => Code::PermissionDenied,
            Self::InvalidArgument { .. } => Code::InvalidArgument,
            Self::FailedPrecondition { .. } => Code::FailedPrecondition,
            Self::Cancelled => Code::DeadlineExceeded,
            Self::Unavailable => Code::Unavailable,
            Self::Internal(_) => Code::Internal,
        }
    }

    pub fn internal(e: impl std::fmt::Display + 'static) -> Self {
        // A task that panicked: its message may quote a document or a question, and is logged
        // (at debug level) where it happened (`telemetry`).
        match (&e as &dyn std::any::Any).downcast_ref::<tokio::task::JoinError>() {
            Some(j) => Self::Internal(crate::telemetry::task_failure(j)),
            None => Self::Internal(e.to_string()),
        }
    }
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Self {
        if let ServiceError::Internal(detail) = &e {
            tracing::error!(error = %crate::guardrail::pii::for_log(detail), "internal error");
        }
        let mut meta = HashMap::new();
        if let ServiceError::InvalidArgument { field, .. } = &e {
            meta.insert("field".to_string(), field.to_string());
        }
        Status::with_error_details(
            e.code(),
            e.to_string(),
            ErrorDetails::with_error_info(e.reason(), ERROR_DOMAIN, meta),
        )
    }
}

impl From<crate::guardrail::RequestError> for ServiceError {
    fn from(e: crate::guardrail::RequestError) -> Self {
        use crate::guardrail::RequestError;
        let (reason, field) = match &e {
            RequestError::Empty { field } => ("EMPTY_TEXT", *field),
            RequestError::TooLong { field, .. } => ("TEXT_TOO_LONG", *field),
        };
        Self::InvalidArgument {
            reason,
            field,
            message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by a review: a task's panic reached the log through its `JoinError`, whose text
    /// quotes the panic's message (which can quote a document).
    #[tokio::test]
    async fn a_panicked_task_is_an_internal_error_without_its_message() {
        let e = tokio::spawn(async { panic!("slice of `the secret memo`") })
            .await
            .unwrap_err();
        let ServiceError::Internal(detail) = ServiceError::internal(e) else {
            panic!("not internal");
        };
        assert!(!detail.contains("secret"), "{detail}");
        assert!(detail.contains("panicked"), "{detail}");
        let ServiceError::Internal(detail) = ServiceError::internal("disk full".to_string()) else {
            panic!("not internal");
        };
        assert_eq!(detail, "disk full");
    }
}
