//! Integration tests: one binary (linking is the slow step), each test against a real daemon on
//! 127.0.0.1:0 with the real embedding model and a temp data dir.

mod harness;

mod acl_answers;
mod answers;
mod attacks;
mod auth;
mod authn;
mod bad_input;
mod cli;
mod client;
mod config_files;
mod deploy;
mod eval;
mod fake_slack;
mod formats;
mod generative;
mod guardrails;
mod identity_admin;
mod live_updates;
mod llm;
mod metrics;
mod milvus;
mod model_swap;
mod push;
mod restart;
mod shares;
mod slack;
mod sync_jobs;
mod wikis;
