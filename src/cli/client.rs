//! Client commands: one gRPC call each, human-readable or JSON output.

use std::process::ExitCode;

use anyhow::Context;
use docent_proto::v1 as pb;
use prost::Message;
use serde_json::json;
use tonic::transport::Channel;

use super::{ClientArgs, FilterArgs, SearchMode};

fn client_config(conn: &ClientArgs) -> docent_client::Config {
    docent_client::Config {
        addr: conn.addr.clone(),
        ca: conn.ca.clone(),
        cert: conn.cert.clone(),
        key: conn.key.clone(),
        token: conn.token().map(str::to_string),
        dev_user: conn.dev_user.clone(),
        allow_plain_http: conn.allow_plain_http,
    }
}

/// The daemon's channel (TLS, CA and client identity from `conn`; see `docent_client`), after
/// warning when a token would cross the network in plaintext.
pub(super) async fn channel(conn: &ClientArgs) -> anyhow::Result<Channel> {
    // Refused by the client unless `--allow-plain-http`; then said once more.
    let has_token = conn.token().is_some_and(|t| !t.is_empty());
    if conn.allow_plain_http
        && let Some(w) = docent_client::plaintext_warning(&conn.addr, has_token)
    {
        eprintln!("{w}");
    }
    // Credentials are checked before connecting, so a missing one is named first.
    Ok(docent_client::Client::connect(&client_config(conn))
        .await?
        .channel())
}

/// `msg` with `conn`'s credential: bearer token, else the client certificate (nothing to add),
/// else the `--insecure-dev` user.
/// With the deadline of `--timeout`, [`DEFAULT_TIMEOUT_SECS`] when not given (session 35's
/// note: a daemon that accepted a call and never answered held the command forever). The
/// channel enforces it too, not only the daemon (tonic's client ends a call past its
/// `grpc-timeout`, until the response's headers).
pub(super) fn request<T>(conn: &ClientArgs, msg: T) -> anyhow::Result<tonic::Request<T>> {
    with_deadline(conn, msg, conn.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS))
}

/// [`request`] for an Ask: only a deadline given with `--timeout` (a generated answer takes
/// what the model's settings allow, which may be far longer).
pub(super) fn answer_request<T>(conn: &ClientArgs, msg: T) -> anyhow::Result<tonic::Request<T>> {
    with_deadline(conn, msg, conn.timeout.unwrap_or(0))
}

/// The deadline of a call when `--timeout` is not given.
pub(super) const DEFAULT_TIMEOUT_SECS: u64 = 300;

fn with_deadline<T>(conn: &ClientArgs, msg: T, secs: u64) -> anyhow::Result<tonic::Request<T>> {
    let mut req = docent_client::authorized(&client_config(conn), msg)?;
    if secs > 0 {
        req.set_timeout(std::time::Duration::from_secs(secs));
    }
    Ok(req)
}

pub(super) fn verdicts_json(v: &[pb::GuardrailVerdict]) -> Vec<serde_json::Value> {
    v.iter()
        .map(|v| {
            json!({"stage": v.stage, "action": v.action, "code": v.code, "rule": v.rule,
                "message": v.message, "count": v.count})
        })
        .collect()
}

pub(super) fn filter(f: &FilterArgs) -> pb::Filter {
    pb::Filter {
        sources: f.sources.clone(),
        uri_prefix: f.uri_prefix.clone().unwrap_or_default(),
        attributes: (!f.conditions.is_empty()).then(|| pb::AttributeFilter {
            op: Some(pb::attribute_filter::Op::All(pb::AttributeFilters {
                filters: f.conditions.clone(),
            })),
        }),
    }
}

/// Parses one `--where` condition (see `FilterArgs::conditions`).
pub fn parse_where(s: &str) -> Result<pb::AttributeFilter, String> {
    use pb::attribute_filter::Op;
    let op = |op| pb::AttributeFilter { op: Some(op) };
    let one = |c: &str| -> Result<pb::AttributeFilter, String> {
        let c = c.trim();
        if let Some(rest) = c.strip_prefix('!') {
            let inner = one_cond(rest)?;
            return Ok(op(Op::Not(Box::new(inner))));
        }
        one_cond(c)
    };
    fn one_cond(c: &str) -> Result<pb::AttributeFilter, String> {
        let op = |op| pb::AttributeFilter { op: Some(op) };
        // Two-character operators first, so `>=` is not read as `=`.
        for (sym, make) in [
            ("!=", 0u8),
            ("^=", 1),
            (">=", 2),
            ("<=", 3),
            ("=", 4),
            (":", 5),
        ] {
            if let Some((k, v)) = c.split_once(sym) {
                let key = k.trim().to_string();
                if key.is_empty() {
                    return Err(format!("{c:?}: missing attribute name"));
                }
                let v = v.trim().to_string();
                return Ok(match make {
                    0 => op(Op::Not(Box::new(op(Op::Equals(pb::AttributeEquals {
                        key,
                        value: v,
                    }))))),
                    1 => op(Op::Prefix(pb::AttributePrefix { key, prefix: v })),
                    2 => op(Op::Range(pb::AttributeRange {
                        key,
                        gte: v,
                        lte: String::new(),
                    })),
                    3 => op(Op::Range(pb::AttributeRange {
                        key,
                        gte: String::new(),
                        lte: v,
                    })),
                    4 => op(Op::Equals(pb::AttributeEquals { key, value: v })),
                    _ => op(Op::OneOf(pb::AttributeOneOf {
                        key,
                        values: v.split(',').map(|x| x.trim().to_string()).collect(),
                    })),
                });
            }
        }
        Err(format!(
            "{c:?}: expected key=value, key!=value, key^=prefix, key>=x, key<=x or key:a,b"
        ))
    }
    let alts = s.split('|').map(one).collect::<Result<Vec<_>, _>>()?;
    Ok(if alts.len() == 1 {
        alts.into_iter().next().expect("one alternative")
    } else {
        op(Op::Any(pb::AttributeFilters { filters: alts }))
    })
}

pub(super) fn citation_json(c: &pb::Citation) -> serde_json::Value {
    let span = c.span.unwrap_or_default();
    json!({
        "document_key": c.document_key,
        "title": c.title,
        "uri": c.uri,
        "chunk_id": c.chunk_id,
        "span": {"start": span.start, "end": span.end},
        "snippet": c.snippet,
        "heading_path": c.heading_path,
        "page": c.page,
    })
}

pub(super) fn status_name(s: i32) -> &'static str {
    match pb::AnswerStatus::try_from(s) {
        Ok(pb::AnswerStatus::Answered) => "answered",
        Ok(pb::AnswerStatus::NoAnswer) => "no_answer",
        Ok(pb::AnswerStatus::Blocked) => "blocked",
        _ => "unknown",
    }
}

pub struct SearchArgs {
    pub query: String,
    pub limit: u32,
    pub mode: SearchMode,
    pub on_behalf_of: Option<String>,
    pub passages_per_document: u32,
    pub json: bool,
}

pub async fn search(conn: &ClientArgs, f: &FilterArgs, a: SearchArgs) -> anyhow::Result<ExitCode> {
    let SearchArgs {
        query,
        limit,
        mode,
        on_behalf_of,
        passages_per_document,
        json: as_json,
    } = a;
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
                on_behalf_of: on_behalf_of.unwrap_or_default(),
                passages_per_document,
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
                v["relevance"] = json!(h.relevance);
                v["attributes"] = json!(h.attributes);
                v
            })
            .collect();
        println!(
            "{}",
            super::pretty_json(&json!({
                "hits": hits,
                "blocked": resp.blocked,
                "message": resp.message,
                "guardrails": verdicts_json(&resp.guardrails),
            }))?
        );
    } else if resp.blocked {
        println!("{}", super::shown(&resp.message));
    } else if resp.hits.is_empty() {
        println!("No results.");
    } else {
        for (i, h) in resp.hits.iter().enumerate() {
            let c = h.citation.clone().unwrap_or_default();
            // A title or uri on one line (a review: a pushed title with a line break could
            // print a forged hit line of its own).
            let (shown, line) = (super::shown, super::shown_line);
            println!(
                "{:>2}. {:.4}  {} — {}",
                i + 1,
                h.score,
                line(&c.title),
                line(&c.uri)
            );
            println!("    {}", shown(&c.snippet));
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
                "alarms": c.alarms,
                "skipped": c.skipped.iter().map(|s| json!({"id": s.id, "reason": s.reason})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        });
        println!("{}", super::pretty_json(&v)?);
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
            super::shown_line(&c.id),
            super::shown_line(&c.kind),
            super::shown_line(&c.state),
            c.documents,
            c.skipped_total
        );
        for alarm in &c.alarms {
            println!("  alarm: {}", super::shown_line(alarm));
        }
        for s in c.skipped.iter().take(10) {
            println!(
                "  skipped {}: {}",
                super::shown_line(&s.id),
                super::shown_line(&s.reason)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub struct IngestArgs {
    pub source: String,
    pub files: Vec<std::path::PathBuf>,
    pub jsonl: Option<std::path::PathBuf>,
    pub delete: Vec<String>,
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    /// `wait_for_commit` on every request.
    pub wait: bool,
    pub json: bool,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonlDoc {
    key: String,
    version: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    uri: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    data_base64: Option<String>,
    #[serde(default)]
    mime_type: String,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default)]
    attributes: std::collections::HashMap<String, String>,
    #[serde(default)]
    modified_at: i64,
}

/// The documents to push, and how many. Files are read one at a time, as they are sent (a
/// run over many large files holds one batch in memory, and shows progress from the start);
/// a JSON-lines file is read whole (its documents are in it).
type PushDocs<'a> = (
    usize,
    Box<dyn Iterator<Item = anyhow::Result<pb::PushDocument>> + 'a>,
);

fn push_docs(a: &IngestArgs) -> anyhow::Result<PushDocs<'_>> {
    use base64::Engine;
    use pb::push_document::Content;
    if let Some(path) = &a.jsonl {
        let text = if path.as_os_str() == "-" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
            s
        } else {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        };
        let docs = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                let d: JsonlDoc = serde_json::from_str(l)
                    .with_context(|| format!("{} line {}", path.display(), i + 1))?;
                let content = match (d.text, d.data_base64) {
                    (Some(t), None) => Content::Text(t),
                    (None, Some(b)) => Content::Data(
                        base64::engine::general_purpose::STANDARD
                            .decode(b)
                            .with_context(|| format!("line {}: data_base64", i + 1))?,
                    ),
                    _ => anyhow::bail!("line {}: give exactly one of text and data_base64", i + 1),
                };
                Ok(pb::PushDocument {
                    key: d.key,
                    version: d.version,
                    title: d.title,
                    uri: d.uri,
                    content: Some(content),
                    mime_type: d.mime_type,
                    allow: d.allow,
                    deny: d.deny,
                    attributes: d.attributes,
                    modified_at: d.modified_at,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        return Ok((docs.len(), Box::new(docs.into_iter().map(Ok))));
    }
    let files = a.files.iter().map(|f| {
        use std::io::Read;
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let key = f.to_string_lossy().into_owned();
        // Opened without following a link, and without waiting on a FIFO: only a regular file
        // is read, and its version comes from the file read (a review: a link planted among
        // uploads, `docent ingest /srv/uploads/*` run by a cron job, pushed what it pointed at,
        // a private key, for everyone; and a FIFO held the run for ever).
        let refused = |reason: &str| {
            anyhow::Error::new(Refused(pb::ItemResult {
                key: key.clone(),
                status: pb::ItemStatus::Rejected as i32,
                reason: reason.into(),
            }))
        };
        // Its type first, so a device is never opened (opening one can act).
        let before = std::fs::symlink_metadata(f).with_context(|| format!("{}", f.display()))?;
        if before.file_type().is_symlink() {
            return Err(refused("a symbolic link: not followed"));
        }
        if !before.is_file() {
            return Err(refused(
                "not a regular file (a directory, a FIFO, a device): not read",
            ));
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(f);
        let file = match file {
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(refused("a symbolic link: not followed"));
            }
            // Another program holds a lease on it (a file server's oplock): this file only.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Err(refused("held by another program (a lease): try again"));
            }
            r => r.with_context(|| format!("{}", f.display()))?,
        };
        let meta = file
            .metadata()
            .with_context(|| format!("{}", f.display()))?;
        // The file opened is the one looked at (not swapped for a FIFO in between).
        if !meta.is_file() || (meta.dev(), meta.ino()) != (before.dev(), before.ino()) {
            return Err(refused(
                "not a regular file (a directory, a FIFO, a device): not read",
            ));
        }
        // Refused here, unread, when no request could carry it (found by a review: a file of
        // several GiB was read whole first, and the CLI ran out of memory).
        let too_large = |len: u64| {
            anyhow::Error::new(Refused(pb::ItemResult {
                key: key.clone(),
                status: pb::ItemStatus::Rejected as i32,
                reason: format!(
                    "too large: {len} bytes; one request carries at most {MAX_REQUEST_BYTES}"
                ),
            }))
        };
        if meta.len() > MAX_REQUEST_BYTES as u64 {
            return Err(too_large(meta.len()));
        }
        let mut data = Vec::new();
        file.take(MAX_REQUEST_BYTES as u64 + 1)
            .read_to_end(&mut data)
            .with_context(|| format!("reading {}", f.display()))?;
        if data.len() > MAX_REQUEST_BYTES {
            return Err(too_large(data.len() as u64));
        }
        // No uri: a push source takes only http(s) links, and the daemon names a pushed
        // file `push://<source>/<key>`.
        Ok(pb::PushDocument {
            version: format!("{}.{}:{}", meta.mtime(), meta.mtime_nsec(), meta.len()),
            content: Some(Content::Data(data)),
            allow: a.allow.clone(),
            deny: a.deny.clone(),
            modified_at: meta.mtime(),
            key,
            ..Default::default()
        })
    });
    Ok((a.files.len(), Box::new(files)))
}

/// The largest request `docent ingest` sends.
const MAX_REQUEST_BYTES: usize = 256 * 1024 * 1024;

/// A document refused before it was sent, with its result.
#[derive(Debug)]
struct Refused(pb::ItemResult);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.0.key, self.0.reason)
    }
}

impl std::error::Error for Refused {}

/// `docent ingest`: pushes or deletes in batches; prints one line per rejected item and totals.
pub async fn ingest(conn: &ClientArgs, a: IngestArgs) -> anyhow::Result<ExitCode> {
    let mut client = pb::ingest_client::IngestClient::new(channel(conn).await?)
        .max_encoding_message_size(MAX_REQUEST_BYTES);
    let mut results = Vec::new();
    let mut failure: Option<anyhow::Error> = None;
    if !a.delete.is_empty() {
        for keys in a.delete.chunks(1000) {
            let req = request(
                conn,
                pb::DeleteDocumentsRequest {
                    source: a.source.clone(),
                    keys: keys.to_vec(),
                    wait_for_commit: a.wait,
                },
            )?;
            match client.delete_documents(req).await {
                Ok(r) => results.extend(r.into_inner().results),
                Err(e) => {
                    failure = Some(e.into());
                    break;
                }
            }
        }
    } else {
        let (count, docs) = push_docs(&a)?;
        anyhow::ensure!(count > 0, "nothing to push: give files or --jsonl");
        let bar = if a.json || count < 2 {
            indicatif::ProgressBar::hidden()
        } else {
            super::progress_bar(count as u64, "pushing")
        };
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        let mut docs = docs.peekable();
        while let Some(d) = docs.next() {
            // A file that cannot be read stops the run: the documents read before it are
            // sent, and what was answered is reported before the error.
            let unreadable = match d {
                Ok(d) => {
                    bytes += d.encoded_len();
                    batch.push(d);
                    None
                }
                // A file refused unread is one rejected item; the run goes on.
                Err(e) => match e.downcast::<Refused>() {
                    Ok(Refused(r)) => {
                        results.push(r);
                        bar.inc(1);
                        None
                    }
                    Err(e) => Some(e),
                },
            };
            let full = batch.len() == 100 || bytes > 32 * 1024 * 1024;
            if !batch.is_empty() && (full || docs.peek().is_none() || unreadable.is_some()) {
                let (r, failed) = put_fitting(
                    &mut client,
                    conn,
                    (&a.source, a.wait),
                    std::mem::take(&mut batch),
                )
                .await?;
                bar.inc(r.len() as u64);
                results.extend(r);
                bytes = 0;
                if failed.is_some() {
                    // What was answered before the failure is reported, then the failure.
                    failure = failed;
                    break;
                }
            }
            if unreadable.is_some() {
                failure = unreadable;
                break;
            }
        }
        bar.finish_and_clear();
    }
    let name = |s: i32| match pb::ItemStatus::try_from(s) {
        Ok(pb::ItemStatus::Accepted) => "accepted",
        Ok(pb::ItemStatus::Unchanged) => "unchanged",
        Ok(pb::ItemStatus::Rejected) => "rejected",
        Ok(pb::ItemStatus::Deleted) => "deleted",
        Ok(pb::ItemStatus::NotFound) => "not_found",
        Ok(pb::ItemStatus::RetryLater) => "retry_later",
        _ => "unknown",
    };
    // Documents not indexed: refused for their content, or to be sent again later.
    let rejected = results
        .iter()
        .filter(|r| {
            r.status == pb::ItemStatus::Rejected as i32
                || r.status == pb::ItemStatus::RetryLater as i32
        })
        .count();
    if a.json {
        let v: Vec<_> = results
            .iter()
            .map(|r| json!({"key": r.key, "status": name(r.status), "reason": r.reason}))
            .collect();
        println!("{}", super::pretty_json(&json!({ "results": v }))?);
    } else {
        let mut counts = std::collections::BTreeMap::new();
        for r in &results {
            *counts.entry(name(r.status)).or_insert(0usize) += 1;
            if r.status == pb::ItemStatus::Rejected as i32
                || r.status == pb::ItemStatus::RetryLater as i32
            {
                eprintln!(
                    "{} {}: {}",
                    name(r.status),
                    super::shown(&r.key),
                    super::shown(&r.reason)
                );
            }
        }
        let totals: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
        println!("{}", totals.join(", "));
    }
    if let Some(e) = failure {
        return Err(e.context(format!(
            "stopped after {} results (printed above)",
            results.len()
        )));
    }
    Ok(if rejected > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Puts `docs`, halving a batch the source refuses as too large for one request (its
/// `max_request_bytes` may be below the CLI's batch size) until it fits; a document too large
/// alone is that document's rejection, and the rest go on. Another error stops it: the results
/// answered before it, and the error.
async fn put_fitting(
    client: &mut pb::ingest_client::IngestClient<tonic::transport::Channel>,
    conn: &ClientArgs,
    (source, wait): (&str, bool),
    docs: Vec<pb::PushDocument>,
) -> anyhow::Result<(Vec<pb::ItemResult>, Option<anyhow::Error>)> {
    use tonic_types::StatusExt;
    let mut results = Vec::with_capacity(docs.len());
    let mut pending = vec![docs];
    while let Some(mut batch) = pending.pop() {
        let req = request(
            conn,
            pb::PutDocumentsRequest {
                source: source.to_string(),
                documents: batch.clone(),
                wait_for_commit: wait,
            },
        )?;
        match client.put_documents(req).await {
            Ok(r) => results.extend(r.into_inner().results),
            // Refused by the source (REQUEST_TOO_LARGE), or by the daemon's decoder before it
            // (OUT_OF_RANGE: over what any push source accepts).
            Err(s)
                if s.code() == tonic::Code::OutOfRange
                    || s.get_details_error_info()
                        .is_some_and(|i| i.reason == "REQUEST_TOO_LARGE") =>
            {
                if batch.len() == 1 {
                    results.push(pb::ItemResult {
                        key: batch[0].key.clone(),
                        status: pb::ItemStatus::Rejected as i32,
                        reason: format!("too large for one request: {}", s.message()),
                    });
                } else {
                    // The second half after the first: results keep the input's order.
                    let second = batch.split_off(batch.len() / 2);
                    pending.push(second);
                    pending.push(batch);
                }
            }
            Err(s) => return Ok((results, Some(s.into()))),
        }
    }
    Ok((results, None))
}

fn job_json(j: &pb::Job) -> serde_json::Value {
    let c = j.counts.unwrap_or_default();
    json!({
        "id": j.id, "connector": j.connector, "kind": j.kind, "trigger": j.trigger,
        "started_ms": j.started_ms, "ended_ms": j.ended_ms, "state": j.state, "reason": j.reason,
        "counts": {"scanned": c.scanned, "added": c.added, "modified": c.modified,
                   "deleted": c.deleted, "unchanged": c.unchanged, "failed": c.failed,
                   "permission_reads": c.permission_reads},
        "failures": j.failures.iter().map(|f| json!({"id": f.id, "reason": f.reason})).collect::<Vec<_>>(),
    })
}

fn job_line(j: &pb::Job) -> String {
    let c = j.counts.unwrap_or_default();
    let secs = if j.ended_ms > 0 {
        format!("{:.1} s", (j.ended_ms - j.started_ms) as f64 / 1000.0)
    } else {
        "running".to_string()
    };
    format!(
        "job {} ({} by {}): {} in {secs}; scanned {}, added {}, modified {}, deleted {}, unchanged {}, failed {}{}{}",
        j.id,
        j.kind,
        j.trigger,
        j.state,
        c.scanned,
        c.added,
        c.modified,
        c.deleted,
        c.unchanged,
        c.failed,
        if c.permission_reads > 0 {
            format!(", permission reads {}", c.permission_reads)
        } else {
            String::new()
        },
        if j.reason.is_empty() {
            String::new()
        } else {
            format!("\n  {}", j.reason)
        }
    )
}

pub struct SyncHow {
    pub force_deletions: bool,
    pub full: bool,
    pub wait: bool,
    /// With `wait`: the longest wait.
    pub wait_timeout: Option<std::time::Duration>,
    pub json: bool,
}

/// How long `sync --wait` waits for a job the daemon listed running and then no longer lists
/// (gone from its history, as after a restart) before it says so.
const UNLISTED_JOB_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// `docent sync`: starts a reconciliation; with `wait`, shows progress until it ends.
pub async fn sync(conn: &ClientArgs, connector: &str, how: SyncHow) -> anyhow::Result<ExitCode> {
    let SyncHow {
        force_deletions,
        full,
        wait,
        wait_timeout,
        json: as_json,
    } = how;
    let mut client = pb::admin_client::AdminClient::new(channel(conn).await?);
    let id = client
        .sync_now(request(
            conn,
            pb::SyncNowRequest {
                connector: connector.to_string(),
                force_deletions,
                full,
            },
        )?)
        .await?
        .into_inner()
        .job_id;
    if !wait {
        if as_json {
            println!("{}", json!({ "job_id": id }));
        } else {
            println!("job {id} started");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let bar = if as_json {
        indicatif::ProgressBar::hidden()
    } else {
        super::progress_spinner()
    };
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    // Bounded (session 40's note: a job the daemon stopped listing was waited for forever):
    // by --wait-timeout, and by how long the job may go unlisted.
    let started = std::time::Instant::now();
    let mut last_listed: Option<std::time::Instant> = None;
    let job = loop {
        if wait_timeout.is_some_and(|t| started.elapsed() >= t) {
            bar.finish_and_clear();
            if as_json {
                println!("{}", json!({ "job_id": id, "state": "running" }));
            }
            eprintln!("job {id} is still running; `docent jobs {connector} --id {id}` shows it");
            return Ok(ExitCode::from(2));
        }
        // Only a job seen running and then gone: one queued behind a running crawl is not
        // listed until it starts (a review).
        if last_listed.is_some_and(|t| t.elapsed() >= UNLISTED_JOB_WAIT) {
            bar.finish_and_clear();
            anyhow::bail!(
                "job {id} has not been listed for {} s (the daemon restarted, or the job left its \
                 history); `docent jobs {connector}` shows the jobs it has",
                UNLISTED_JOB_WAIT.as_secs()
            );
        }
        let jobs = client
            .list_jobs(request(
                conn,
                pb::ListJobsRequest {
                    connector: connector.to_string(),
                },
            )?)
            .await?
            .into_inner()
            .jobs;
        match jobs.into_iter().find(|j| j.id == id) {
            Some(j) if j.state != "running" => break j,
            Some(j) => {
                last_listed = Some(std::time::Instant::now());
                let c = j.counts.unwrap_or_default();
                bar.set_message(format!(
                    "job {id}: {} scanned, {} added, {} modified, {} deleted, {} failed",
                    c.scanned, c.added, c.modified, c.deleted, c.failed
                ));
            }
            None => bar.set_message(format!("job {id}: waiting to start")),
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    bar.finish_and_clear();
    if as_json {
        println!("{}", super::pretty_json(&job_json(&job))?);
    } else {
        println!("{}", super::shown(&job_line(&job)));
    }
    Ok(if job.state == "succeeded" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub async fn jobs(
    conn: &ClientArgs,
    connector: &str,
    id: Option<u64>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let mut client = pb::admin_client::AdminClient::new(channel(conn).await?);
    let jobs: Vec<pb::Job> = client
        .list_jobs(request(
            conn,
            pb::ListJobsRequest {
                connector: connector.to_string(),
            },
        )?)
        .await?
        .into_inner()
        .jobs
        .into_iter()
        .filter(|j| id.is_none_or(|id| j.id == id))
        .collect();
    if id.is_some() && jobs.is_empty() {
        anyhow::bail!(
            "no job {} on {connector} (only the last 50 are kept)",
            id.unwrap_or(0)
        );
    }
    if as_json {
        let v: Vec<_> = jobs.iter().map(job_json).collect();
        println!("{}", super::pretty_json(&json!({ "jobs": v }))?);
        return Ok(ExitCode::SUCCESS);
    }
    for j in &jobs {
        println!("{}", super::shown(&job_line(j)));
        if id.is_some() {
            for f in &j.failures {
                println!(
                    "  failed {}: {}",
                    super::shown(&f.id),
                    super::shown(&f.reason)
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn pause(conn: &ClientArgs, connector: &str, pause: bool) -> anyhow::Result<ExitCode> {
    let mut client = pb::admin_client::AdminClient::new(channel(conn).await?);
    let r = pb::ConnectorRequest {
        connector: connector.to_string(),
    };
    let s = if pause {
        client.pause_connector(request(conn, r)?).await?
    } else {
        client.resume_connector(request(conn, r)?).await?
    }
    .into_inner();
    println!(
        "connector {}: {}",
        s.id,
        if s.paused { "paused" } else { "resumed" }
    );
    Ok(ExitCode::SUCCESS)
}

/// `docent admin ...`: identity tools.
pub async fn admin(conn: &ClientArgs, cmd: super::AdminCommand) -> anyhow::Result<ExitCode> {
    use super::AdminCommand;
    let mut client = pb::admin_client::AdminClient::new(channel(conn).await?);
    let v = match cmd {
        AdminCommand::Usage { days, json } => {
            let r = client
                .usage(request(conn, pb::UsageRequest { days })?)
                .await?
                .into_inner();
            if !json {
                println!(
                    "{:<24} {:>12} {:>12} {:>9} {:>12}",
                    "identity", "prompt", "completion", "requests", "est. cost"
                );
                for u in &r.identities {
                    println!(
                        "{:<24} {:>12} {:>12} {:>9} {:>8.4} {}",
                        super::shown(&u.identity),
                        u.prompt_tokens,
                        u.completion_tokens,
                        u.requests,
                        u.estimated_cost,
                        super::shown(&r.currency)
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            json!({"currency": r.currency, "identities": r.identities.iter().map(|u| json!({
                "identity": u.identity, "prompt_tokens": u.prompt_tokens,
                "completion_tokens": u.completion_tokens, "requests": u.requests,
                "estimated_cost": u.estimated_cost})).collect::<Vec<_>>()})
        }
        AdminCommand::FeedbackExport => {
            // JSON lines, one record each, page after page.
            let mut page_token = String::new();
            let mut tokens = std::collections::HashSet::new();
            loop {
                let r = client
                    .export_feedback(request(
                        conn,
                        pb::ExportFeedbackRequest {
                            page_size: 0,
                            page_token: page_token.clone(),
                        },
                    )?)
                    .await?
                    .into_inner();
                for f in &r.records {
                    println!(
                        "{}",
                        super::terminal_safe_json(
                            json!({"identity": f.identity, "conversation_id": f.conversation_id,
                            "turn": f.turn, "vote": if f.up { "up" } else { "down" },
                            "reasons": f.reasons, "comment": f.comment, "time_ms": f.time_ms,
                            "question": f.question, "documents": f.documents})
                            .to_string()
                        )
                    );
                }
                // A token given again (even after others: a second review), or a page of
                // nothing with more to come, ends the export (a server looping it would
                // otherwise run for ever).
                if r.next_page_token.is_empty()
                    || !tokens.insert(r.next_page_token.clone())
                    || r.records.is_empty()
                {
                    return Ok(ExitCode::SUCCESS);
                }
                page_token = r.next_page_token;
            }
        }
        AdminCommand::Whois { user, json } => {
            let w = client
                .who_is(request(conn, pb::WhoIsRequest { user })?)
                .await?
                .into_inner();
            if !json {
                // Group names may come from a connector's group database (a review: printed
                // raw, an escape sequence in one acted on the admin's terminal).
                let list = |v: &[String]| super::shown(&v.join(", ")).into_owned();
                println!("{}", super::shown(&w.id));
                println!("  aliases:     {}", list(&w.aliases));
                println!(
                    "  groups:      {} (direct: {})",
                    list(&w.groups),
                    list(&w.direct_groups)
                );
                println!("  principals:  {}", list(&w.principals));
                println!("  permissions: {}", list(&w.permissions));
                return Ok(ExitCode::SUCCESS);
            }
            json!({"id": w.id, "aliases": w.aliases, "direct_groups": w.direct_groups,
                "groups": w.groups, "principals": w.principals, "permissions": w.permissions})
        }
        AdminCommand::CanRead {
            user,
            document_key,
            json,
        } => {
            let r = client
                .check_access(request(
                    conn,
                    pb::CheckAccessRequest {
                        user: user.clone(),
                        document_key: document_key.clone(),
                    },
                )?)
                .await?
                .into_inner();
            if !json {
                let verdict = if r.allowed { "yes" } else { "no" };
                println!(
                    "{verdict}: {user} {} {document_key}",
                    if r.allowed { "can read" } else { "cannot read" }
                );
                println!("  {}", super::shown(&r.explanation));
                return Ok(if r.allowed {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                });
            }
            println!(
                "{}",
                super::pretty_json(&json!({"allowed": r.allowed, "decision": r.decision,
                    "entry": r.entry, "explanation": r.explanation}))?
            );
            return Ok(if r.allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        AdminCommand::Reload { json } => {
            let r = client
                .reload_identities(request(conn, pb::ReloadIdentitiesRequest {})?)
                .await?
                .into_inner();
            if !json {
                println!(
                    "reloaded: {} identities, {} groups, {} API keys",
                    r.identities, r.groups, r.api_keys
                );
                if !r.needs_restart.is_empty() {
                    println!(
                        "changed since start, applied only after a restart: {}",
                        r.needs_restart.join(", ")
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            json!({"identities": r.identities, "groups": r.groups, "api_keys": r.api_keys,
                "needs_restart": r.needs_restart})
        }
    };
    println!("{}", super::pretty_json(&v)?);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::attribute_filter::Op;

    fn op(s: &str) -> Op {
        parse_where(s).unwrap().op.unwrap()
    }

    #[test]
    fn where_conditions_parse() {
        assert_eq!(
            op("file_type=pdf"),
            Op::Equals(pb::AttributeEquals {
                key: "file_type".into(),
                value: "pdf".into()
            })
        );
        assert!(
            matches!(op("modified_at>=1767225600"), Op::Range(r) if r.gte == "1767225600" && r.lte.is_empty())
        );
        assert!(matches!(op("level<=3"), Op::Range(r) if r.lte == "3" && r.gte.is_empty()));
        assert!(matches!(op("path^=/share/hr"), Op::Prefix(p) if p.prefix == "/share/hr"));
        assert!(matches!(op("team:red, blue"), Op::OneOf(o) if o.values == ["red", "blue"]));
        assert!(matches!(op("team!=red"), Op::Not(_)));
        assert!(matches!(op("!path^=/tmp"), Op::Not(n) if matches!(n.op, Some(Op::Prefix(_)))));
        let Op::Any(alts) = op("file_type=pdf|file_type=docx") else {
            panic!("expected alternatives")
        };
        assert_eq!(alts.filters.len(), 2);
        for bad in ["nonsense", "=x", "a=b|", ">=3"] {
            assert!(parse_where(bad).is_err(), "{bad}");
        }
    }
}
