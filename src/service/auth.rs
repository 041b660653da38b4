//! Bearer-token authentication as a tonic interceptor: the caller is resolved before any handler
//! runs and placed in the request extensions. No token or an unknown token: UNAUTHENTICATED.

use std::sync::Arc;

use tonic::{Request, Status};

use super::ServiceError;
use crate::identity::{Caller, IdentityStore};

#[derive(Clone)]
pub struct AuthInterceptor {
    identities: Arc<IdentityStore>,
}

impl AuthInterceptor {
    pub fn new(identities: Arc<IdentityStore>) -> Self {
        Self { identities }
    }
}

impl tonic::service::Interceptor for AuthInterceptor {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let header = req
            .metadata()
            .get("authorization")
            .ok_or(ServiceError::MissingToken)?
            .to_str()
            .map_err(|_| ServiceError::InvalidToken)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or(ServiceError::InvalidToken)?
            .trim();
        let caller = self
            .identities
            .authenticate_token(token)
            .ok_or(ServiceError::InvalidToken)?;
        tracing::debug!(user = caller.user_id(), "authenticated");
        req.extensions_mut().insert(caller);
        Ok(req)
    }
}

/// The authenticated caller of a request; fails closed if the interceptor did not run.
pub fn caller<T>(req: &Request<T>) -> Result<Caller, ServiceError> {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .ok_or(ServiceError::MissingToken)
}
