//! Docent's gRPC API, package `docent.v1`: generated messages, clients and servers.
//!
//! The `.proto` files under `proto/docent/v1/` are the documented, stable contract; this crate only
//! compiles them so the daemon and Rust clients share one definition.

#![allow(clippy::all, missing_docs)]

pub mod codec;

/// Header naming the user under a daemon's `--insecure-dev` (no credential checked). Defined
/// here so the daemon and every Rust client use the same name.
pub const DEV_USER_HEADER: &str = "x-docent-user";

pub mod v1 {
    tonic::include_proto!("docent.v1");
}

/// Encoded `FileDescriptorSet` for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("docent_descriptor");
