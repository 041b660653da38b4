//! Client commands: one gRPC call each, human-readable or JSON output.

use std::process::ExitCode;

use anyhow::Context;
use docent_proto::v1 as pb;
use serde_json::json;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use super::{ClientArgs, FilterArgs, SearchMode};

pub(super) async fn channel(conn: &ClientArgs) -> anyhow::Result<Channel> {
    let mut ep = Channel::from_shared(conn.addr.clone())
        .with_context(|| format!("invalid address {}", conn.addr))?;
    if conn.addr.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &conn.ca {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        ep = ep.tls_config(tls)?;
    }
    ep.connect()
        .await
        .with_context(|| format!("cannot connect to {}", conn.addr))
}

pub(super) fn request<T>(conn: &ClientArgs, msg: T) -> anyhow::Result<tonic::Request<T>> {
    let mut req = tonic::Request::new(msg);
    let token = conn
        .token
        .as_deref()
        .filter(|t| !t.is_empty())
        .context("no API token: pass --token or set DOCENT_TOKEN")?;
    let v: MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .context("token has invalid characters")?;
    req.metadata_mut().insert("authorization", v);
    Ok(req)
}

fn filter(f: &FilterArgs) -> pb::Filter {
    pb::Filter {
        sources: f.sources.clone(),
        uri_prefix: f.uri_prefix.clone().unwrap_or_default(),
    }
}

fn citation_json(c: &pb::Citation) -> serde_json::Value {
    let span = c.span.unwrap_or_default();
    json!({
        "document_key": c.document_key,
        "title": c.title,
        "uri": c.uri,
        "chunk_id": c.chunk_id,
        "span": {"start": span.start, "end": span.end},
        "snippet": c.snippet,
        "heading_path": c.heading_path,
    })
}

fn status_name(s: i32) -> &'static str {
    match pb::AnswerStatus::try_from(s) {
        Ok(pb::AnswerStatus::Answered) => "answered",
        Ok(pb::AnswerStatus::NoAnswer) => "no_answer",
        Ok(pb::AnswerStatus::Blocked) => "blocked",
        _ => "unknown",
    }
}

pub async fn ask(
    conn: &ClientArgs,
    f: &FilterArgs,
    question: String,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let mut client = pb::assistant_client::AssistantClient::new(channel(conn).await?);
    let resp = client
        .ask(request(
            conn,
            pb::AskRequest {
                question,
                filter: Some(filter(f)),
            },
        )?)
        .await?
        .into_inner();
    if as_json {
        let v = json!({
            "answer": resp.answer,
            "status": status_name(resp.status),
            "message": resp.message,
            "sentences": resp.sentences.iter().map(|s| json!({"text": s.text, "citations": s.citations})).collect::<Vec<_>>(),
            "citations": resp.citations.iter().map(citation_json).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{}\n", resp.answer);
        if !resp.citations.is_empty() {
            println!("Sources:");
            for (i, c) in resp.citations.iter().enumerate() {
                let span = c.span.unwrap_or_default();
                println!(
                    "  [{}] {} — {} (bytes {}..{})",
                    i + 1,
                    c.title,
                    c.uri,
                    span.start,
                    span.end
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn search(
    conn: &ClientArgs,
    f: &FilterArgs,
    query: String,
    limit: u32,
    mode: SearchMode,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let mode = match mode {
        SearchMode::Hybrid => pb::RetrievalMode::Hybrid,
        SearchMode::Bm25 => pb::RetrievalMode::Bm25,
        SearchMode::Dense => pb::RetrievalMode::Dense,
    };
    let mut client = pb::assistant_client::AssistantClient::new(channel(conn).await?);
    let resp = client
        .search(request(
            conn,
            pb::SearchRequest {
                query,
                limit,
                mode: mode as i32,
                filter: Some(filter(f)),
            },
        )?)
        .await?
        .into_inner();
    if as_json {
        let hits: Vec<_> = resp
            .hits
            .iter()
            .map(|h| {
                let mut v = h
                    .citation
                    .as_ref()
                    .map(citation_json)
                    .unwrap_or_else(|| json!({}));
                v["score"] = json!(h.score);
                v["bm25_rank"] = json!(h.bm25_rank);
                v["dense_rank"] = json!(h.dense_rank);
                v["attributes"] = json!(h.attributes);
                v
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "hits": hits }))?
        );
    } else if resp.hits.is_empty() {
        println!("No results.");
    } else {
        for (i, h) in resp.hits.iter().enumerate() {
            let c = h.citation.clone().unwrap_or_default();
            println!("{:>2}. {:.4}  {} — {}", i + 1, h.score, c.title, c.uri);
            println!("    {}", c.snippet);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn status(conn: &ClientArgs, as_json: bool) -> anyhow::Result<ExitCode> {
    let mut client = pb::admin_client::AdminClient::new(channel(conn).await?);
    let conns = client
        .list_connectors(request(conn, pb::ListConnectorsRequest {})?)
        .await?
        .into_inner();
    let stats = client
        .index_stats(request(conn, pb::IndexStatsRequest {})?)
        .await?
        .into_inner();
    if as_json {
        let v = json!({
            "index": {
                "documents": stats.documents, "chunks": stats.chunks, "segments": stats.segments,
                "model_id": stats.model_id, "dimension": stats.dimension, "disk_bytes": stats.disk_bytes,
                "last_commit": stats.last_commit, "documents_indexed": stats.documents_indexed,
                "documents_failed": stats.documents_failed, "chunks_embedded": stats.chunks_embedded,
                "chunks_reused": stats.chunks_reused,
            },
            "connectors": conns.connectors.iter().map(|c| json!({
                "id": c.id, "kind": c.kind, "state": c.state, "documents": c.documents,
                "skipped_total": c.skipped_total, "last_full_scan": c.last_full_scan, "last_error": c.last_error,
                "skipped": c.skipped.iter().map(|s| json!({"id": s.id, "reason": s.reason})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "index: {} documents, {} chunks, {} segments, {} bytes, model {} ({} dims)",
        stats.documents,
        stats.chunks,
        stats.segments,
        stats.disk_bytes,
        stats.model_id,
        stats.dimension
    );
    println!(
        "since start: {} documents indexed, {} failed, {} chunks embedded, {} reused",
        stats.documents_indexed, stats.documents_failed, stats.chunks_embedded, stats.chunks_reused
    );
    for c in &conns.connectors {
        println!(
            "connector {} ({}): {}, {} documents, {} skipped",
            c.id, c.kind, c.state, c.documents, c.skipped_total
        );
        if !c.last_error.is_empty() {
            println!("  last error: {}", c.last_error);
        }
        for s in c.skipped.iter().take(10) {
            println!("  skipped {}: {}", s.id, s.reason);
        }
    }
    Ok(ExitCode::SUCCESS)
}
