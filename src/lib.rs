//! Docent: a self-hosted enterprise knowledge assistant.
//!
//! Data flows through the modules in this order (see ARCHITECTURE.md): connectors (crates under
//! `connectors/`) → [`ingest`] (→ [`parse`] → [`chunk`] → [`embed`]) → [`index`]; queries go
//! [`service`] (authentication via [`identity`]) → [`assistant`] (scope via [`acl`] →
//! [`guardrail`] → [`retrieve`] → [`guardrail`] → an answerer → verification) → caller.

pub mod acl;
pub mod answer;
pub mod assistant;
pub mod audit;
pub mod chunk;
pub mod cli;
pub mod config;
pub mod connectors;
pub mod embed;
pub mod eval;
pub mod guardrail;
pub mod identity;
pub mod index;
pub mod ingest;
pub mod lru;
pub mod metrics;
pub mod parse;
pub mod retrieve;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod telemetry;
pub mod threads;
