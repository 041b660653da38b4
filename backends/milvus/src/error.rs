use crate::expr::ExprError;

/// Milvus's status code for "collection not loaded".
const NOT_LOADED: i32 = 101;

/// What a Milvus call can fail with. `Server` carries the server's own status (`code`, `reason`),
/// which Milvus reports inside an OK gRPC response.
#[derive(Debug, thiserror::Error)]
pub enum MilvusError {
    #[error("invalid milvus uri {uri:?}: {reason}")]
    InvalidUri { uri: String, reason: String },
    #[error("cannot read the milvus CA file {path}: {source}")]
    CaFile {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot connect to milvus at {uri}: {source}")]
    Connect {
        uri: String,
        source: tonic::transport::Error,
    },
    #[error("milvus {method}: transport error: {status}")]
    Rpc {
        method: &'static str,
        status: tonic::Status,
    },
    #[error("milvus {method} failed (code {code}): {reason}")]
    Server {
        method: &'static str,
        code: i32,
        reason: String,
    },
    #[error("collection {collection} exists with an incompatible schema: {reason}")]
    IncompatibleCollection { collection: String, reason: String },
    #[error("collection {collection} did not finish loading within {secs} s")]
    LoadTimeout { collection: String, secs: u64 },
    #[error("chunk {chunk_id}: {reason}")]
    InvalidRow { chunk_id: String, reason: String },
    #[error("query vector has dimension {got}, collection {collection} has {expected}")]
    Dimension {
        collection: String,
        expected: usize,
        got: usize,
    },
    #[error("checkpoint for {source_id} is {len} bytes; the state collection holds at most {max}")]
    CheckpointTooLarge {
        source_id: String,
        len: usize,
        max: usize,
    },
    #[error("unexpected milvus response to {method}: {reason}")]
    Protocol {
        method: &'static str,
        reason: String,
    },
    #[error(transparent)]
    Expr(#[from] ExprError),
}

impl MilvusError {
    /// The server could not be reached or answered with a transport failure (down, restarting,
    /// unreachable, timed out): worth retrying later, not a fault of the request.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Connect { .. } => true,
            Self::Rpc { status, .. } => matches!(
                status.code(),
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Cancelled
                    | tonic::Code::Unknown
            ),
            // A collection that did not load in time, or is not loaded: the server is not
            // ready to answer (retry later), not a fault of the request (session 34's review:
            // callers got an internal error instead of UNAVAILABLE).
            Self::LoadTimeout { .. } => true,
            _ => self.is_not_loaded(),
        }
    }

    /// The collection is not loaded (Milvus Lite after a restart: code 101).
    pub fn is_not_loaded(&self) -> bool {
        self.server_code() == Some(NOT_LOADED)
    }

    /// The server's status code, when the server refused the request.
    pub fn server_code(&self) -> Option<i32> {
        match self {
            Self::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_collection_not_ready_is_unavailable_and_a_refusal_is_not() {
        let timeout = MilvusError::LoadTimeout {
            collection: "c".into(),
            secs: 120,
        };
        assert!(timeout.is_unavailable());
        let server = |code| MilvusError::Server {
            method: "Query",
            code,
            reason: "x".into(),
        };
        assert!(server(NOT_LOADED).is_unavailable());
        assert!(!server(NOT_LOADED + 1).is_unavailable());
    }
}
