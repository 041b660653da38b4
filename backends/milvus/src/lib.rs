//! A typed Milvus client for Docent's chunk collection (issue 14, part 3; design in
//! `docs/milvus.md`). It will sit behind the index-backend trait; for now it is the Milvus side
//! alone: the chunk schema, upserts and deletes by document, BM25 and dense search under the ACL
//! scope, and connector checkpoints in `<collection>_state`.
//!
//! Invariants:
//! - every search carries the scope (`expr::search_cond`), so a hit is always readable by the
//!   principals it was asked for; an empty principal list returns nothing without a request;
//! - errors reported in a response's `status` (Milvus answers gRPC OK with `code != 0`) become
//!   [`MilvusError::Server`], never a silent empty result;
//! - writes are column-wise `Upsert`s by chunk id (idempotent on Lite and on a cluster; `Insert`
//!   would duplicate on a cluster).
//!
//! Must never send the BM25 output field `sparse` (the server computes it), nor paste a value
//! into an expression outside [`expr::quote`].

mod client;
mod error;
pub mod expr;
pub mod lite;
mod schema;

pub use client::{ChunkCollection, ChunkRow, ConnectOptions, MilvusClient, SearchHit, fits};
pub use error::MilvusError;
pub use expr::{AttrFilter, Filter, Scope};
pub use schema::{
    CHECKPOINT_MAX_BYTES, CHECKPOINT_MAX_TOTAL, COMMIT_LOG_MAX_TOTAL, DENSE_INDEX, STATE_SUFFIX,
};

/// Generated from `proto/milvus.fds` (pymilvus's compiled Milvus API; see README.md): only the
/// `MilvusService` client.
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod proto {
    pub mod common {
        tonic::include_proto!("milvus.proto.common");
    }
    pub mod schema {
        tonic::include_proto!("milvus.proto.schema");
    }
    pub mod rg {
        tonic::include_proto!("milvus.proto.rg");
    }
    pub mod feder {
        tonic::include_proto!("milvus.proto.feder");
    }
    pub mod msg {
        tonic::include_proto!("milvus.proto.msg");
    }
    pub mod milvus {
        tonic::include_proto!("milvus.proto.milvus");
    }
}
