//! `docent.v1.Ingest`: the push API. Each document is validated on its own (key, version, ACL,
//! size, and a parse of its content under the source's limits) and gets its own result; valid
//! ones are queued to the source's push connector. Idempotent by key and version: a document
//! the index already holds with the same version and ACL is UNCHANGED.
//!
//! Trust: the `ingest` permission is checked by the gate before the request body is read; a
//! caller must also be one of the source's `writers`. A pushed document cannot set the
//! attributes Docent owns ([`RESERVED_ATTRIBUTES`]), may only allow the source's `grantable`
//! principals (when configured), and its uri must be http(s) (under the source's
//! `uri_prefixes`, when configured): a pushed document cannot pose as a file of a share.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use docent_connector_api::{Acl, Change, DocKey, Principal, SourceDocument};
use docent_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::auth::caller;
use super::{AppState, Audited, ServiceError};
use crate::ingest::push::PushSource;

pub const MAX_PUT: usize = 100;
pub const MAX_DELETE: usize = 1000;
const MAX_KEY_BYTES: usize = 1024;
/// Attributes Docent sets itself; clients may not.
pub const RESERVED_ATTRIBUTES: [&str; 4] = ["source", "path", "relative_path", "modified_at"];

pub struct IngestService {
    state: Arc<AppState>,
    /// Calls waiting for their commit without their concurrency permits (see
    /// [`IngestService::until_committed`]), in all and per push source; past
    /// [`MAX_WAITING`] or [`MAX_WAITING_PER_SOURCE`], a call waits holding them.
    waiting: Arc<tokio::sync::Semaphore>,
    waiting_by_source: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
}

/// Calls that may wait for their commit at once without holding concurrency permits.
pub const MAX_WAITING: usize = 256;
/// Of those, calls to one push source (a review: one writer could take every place).
pub const MAX_WAITING_PER_SOURCE: usize = 32;

impl IngestService {
    pub fn new(state: Arc<AppState>) -> Self {
        Self {
            state,
            waiting: Arc::new(tokio::sync::Semaphore::new(MAX_WAITING)),
            waiting_by_source: Default::default(),
        }
    }

    /// A place among the calls that wait without their permits, if one is free (see
    /// [`Self::waiting`]).
    fn waiting_place(
        &self,
        source: &str,
    ) -> Option<(
        tokio::sync::OwnedSemaphorePermit,
        tokio::sync::OwnedSemaphorePermit,
    )> {
        let pool = self
            .waiting_by_source
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(source.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(MAX_WAITING_PER_SOURCE)))
            .clone();
        let own = pool.try_acquire_owned().ok()?;
        let all = self.waiting.clone().try_acquire_owned().ok()?;
        Some((own, all))
    }

    fn source<T>(
        &self,
        req: &Request<T>,
        source: &str,
    ) -> Result<(crate::identity::Caller, PushSource), ServiceError> {
        let c = caller(req)?;
        if !c.permissions().ingest {
            return Err(ServiceError::ScopeDenied("ingest documents"));
        }
        // An unknown source and one the caller may not write to answer alike.
        let src = self
            .state
            .push
            .get(source)
            // Writers are granted by the config: a group a connector reports grants nothing.
            .filter(|s| s.writable_by(c.guardrail_principals()))
            .cloned()
            .ok_or_else(|| ServiceError::SourceDenied(echoed_source(source)))?;
        Ok((c, src))
    }
}

fn result(key: &str, status: pb::ItemStatus, reason: impl Into<String>) -> pb::ItemResult {
    pb::ItemResult {
        key: key.to_string(),
        status: status as i32,
        reason: reason.into(),
    }
}

fn key_problem(key: &str) -> Option<String> {
    if key.is_empty() {
        return Some("the key is empty".into());
    }
    if key.len() > MAX_KEY_BYTES {
        return Some(format!(
            "the key is {} bytes; the limit is {MAX_KEY_BYTES}",
            key.len()
        ));
    }
    key.chars()
        .any(unshowable)
        .then(|| "the key contains control characters".into())
}

/// A control character, or an invisible one that changes how text around it shows (bidi
/// overrides and isolates, zero-width characters, the soft hyphen, the byte order mark): a
/// pushed name or link holding one could show as another in a terminal, a CLI or a citation.
fn unshowable(c: char) -> bool {
    reorders(c)
        || matches!(
            c,
            '\u{00AD}' | '\u{200B}'..='\u{200D}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}'
        )
}

/// A control character, or one that reorders the text around it (bidi marks, embeddings,
/// overrides and isolates). Titles and attribute values are prose: the other invisible
/// characters are at home there (a zero-width joiner in an emoji, a soft hyphen), these are not.
fn reorders(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// The most ACL entries (allow and deny) a pushed document may have, and the longest one: each
/// is stored on every chunk and kept in the document table.
const MAX_ACL_ENTRIES: usize = 1024;
const MAX_PRINCIPAL_BYTES: usize = 256;

/// The most attributes a pushed document may have, and their names and values in all (bytes).
const MAX_ATTRIBUTES: usize = 64;
const MAX_ATTRIBUTE_BYTES: usize = 16 * 1024;

/// Why a pushed attribute is refused. Keys are plain names: the index stores `key␟value`, so a
/// key holding the separator (or any control character) could pose as another key's value.
fn attribute_problem(key: &str, value: &str) -> Option<String> {
    let key_ok = !key.is_empty()
        && key.len() <= 64
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if !key_ok {
        return Some(format!(
            "attribute name {key:?} must be 1 to 64 letters, digits, '_', '-' or '.'"
        ));
    }
    (value.len() > 4096 || value.chars().any(reorders)).then(|| {
        format!("attribute {key:?}: the value is over 4096 bytes or contains control characters")
    })
}

/// Why a pushed uri is refused: only http(s) links (so no pushed document poses as a file of a
/// share), under the source's prefixes when it has some. Empty is fine (Docent makes one).
fn uri_problem(uri: &str, prefixes: &[String]) -> Option<String> {
    if uri.is_empty() {
        return None;
    }
    if uri.len() > 4096 || uri.chars().any(unshowable) {
        return Some("the uri is over 4096 bytes or contains control characters".into());
    }
    // A prefix is a path a browser must stay under: no step up or aside (`..`, `.`, spelled
    // out or percent-encoded) and no backslash, which browsers read as a slash.
    let path = uri.split(['?', '#']).next().unwrap_or_default();
    let lower = path.to_ascii_lowercase().replace("%2e", ".");
    if path.contains('\\')
        || lower.contains("%5c")
        || lower.split('/').any(|seg| seg == "." || seg == "..")
    {
        return Some("the uri holds a `.` or `..` path segment or a backslash".into());
    }
    if !prefixes.is_empty() {
        return (!prefixes.iter().any(|p| uri.starts_with(p.as_str())))
            .then(|| format!("the uri must start with one of {}", prefixes.join(", ")));
    }
    (!(uri.starts_with("https://") || uri.starts_with("http://")))
        .then(|| "the uri must be an http:// or https:// link".into())
}

fn principals(list: &[String]) -> Result<Vec<Principal>, String> {
    list.iter()
        .map(|p| {
            if p.len() > MAX_PRINCIPAL_BYTES || p.chars().any(unshowable) {
                return Err(format!(
                    "an ACL entry is over {MAX_PRINCIPAL_BYTES} bytes or contains control \
                     characters"
                ));
            }
            p.parse::<Principal>().map_err(|e| e.to_string())
        })
        .collect()
}

/// A validated document, and whether it was its key's newest state (version and ACL) when
/// checked: such a one was not parsed, and is queued only if it is a change when accepted.
struct Validated {
    doc: SourceDocument,
    was_newest: bool,
}

/// Validates one document: `Ok` to queue, `Err(result)` otherwise.
fn validate(
    st: &AppState,
    src: &PushSource,
    d: pb::PushDocument,
) -> Result<Validated, pb::ItemResult> {
    use pb::ItemStatus::Rejected;
    let key = d.key.clone();
    let reject = |reason: String| result(&key, Rejected, reason);
    if let Some(p) = key_problem(&key) {
        return Err(reject(p));
    }
    if d.version.is_empty() {
        return Err(reject("the version is empty".into()));
    }
    // Short fields are stored (the document table, every chunk) and shown: bounded, and
    // free of control characters (an escape sequence in a title would run in the terminal of
    // whoever's CLI prints it; a title may still hold tabs and line breaks).
    let line_space = |c: char| matches!(c, '\t' | '\n' | '\r');
    for (field, value, max, spaces) in [
        ("version", &d.version, 256, false),
        ("mime_type", &d.mime_type, 256, false),
        ("title", &d.title, 4096, true),
    ] {
        if value.len() > max
            || value
                .chars()
                .any(|c| reorders(c) && !(spaces && line_space(c)))
        {
            return Err(reject(format!(
                "the {field} is over {max} bytes or contains control characters"
            )));
        }
    }
    if d.allow.len() + d.deny.len() > MAX_ACL_ENTRIES {
        return Err(reject(format!(
            "{} ACL entries; at most {MAX_ACL_ENTRIES} (allow and deny together)",
            d.allow.len() + d.deny.len()
        )));
    }
    let acl = Acl::new(
        principals(&d.allow).map_err(reject)?,
        principals(&d.deny).map_err(reject)?,
    );
    if acl.is_closed() {
        return Err(reject(
            "no principal may read this document (the ACL allows nobody); it is not indexed".into(),
        ));
    }
    // The index stores each deny entry with its folded form ([`Acl::stored_deny`]): counted
    // as stored, so that what is accepted here fits any backend's limit.
    let stored = acl.allow.len() + acl.stored_deny().len();
    if stored > MAX_ACL_ENTRIES {
        return Err(reject(format!(
            "{stored} ACL entries as stored (a deny entry that is not lowercase counts twice: \
             it is stored with its lowercase form); at most {MAX_ACL_ENTRIES}"
        )));
    }
    if let Some(grantable) = &src.config.grantable
        && let Some(p) = acl.allow.iter().find(|p| !grantable.contains(p))
    {
        return Err(reject(format!(
            "this source may not grant access to {}",
            p.token()
        )));
    }
    if let Some(a) = RESERVED_ATTRIBUTES
        .iter()
        .find(|a| d.attributes.contains_key(**a))
    {
        return Err(reject(format!(
            "attribute {a:?} is set by Docent, not by clients"
        )));
    }
    if let Some(p) = d
        .attributes
        .iter()
        .find_map(|(k, v)| attribute_problem(k, v))
    {
        return Err(reject(p));
    }
    // Every chunk stores the attributes (and a Milvus row holds them in one JSON value).
    let attribute_bytes: usize = d.attributes.iter().map(|(k, v)| k.len() + v.len()).sum();
    if d.attributes.len() > MAX_ATTRIBUTES || attribute_bytes > MAX_ATTRIBUTE_BYTES {
        return Err(reject(format!(
            "{} attributes of {attribute_bytes} bytes; at most {MAX_ATTRIBUTES} attributes of \
             {MAX_ATTRIBUTE_BYTES} bytes in all",
            d.attributes.len()
        )));
    }
    if let Some(p) = uri_problem(&d.uri, &src.config.uri_prefixes) {
        return Err(reject(p));
    }
    let doc_key = DocKey::new(&src.config.id, &key);
    // Against the newest state: a re-put of an indexed version after a newer one was accepted
    // (and still waits in the queue) is a change. The same state is compared again when it is
    // accepted (an earlier item of this request, or another request, may change the key
    // before): it is not parsed now.
    let newest = src.newest(&key, &*st.index);
    let was_newest = newest.as_ref() == Some(&(d.version.clone(), acl.fingerprint()));
    let (content, default_mime) = match d.content {
        Some(pb::push_document::Content::Text(t)) => (t.into_bytes(), Some("text/plain")),
        Some(pb::push_document::Content::Data(b)) => (b, None),
        None => return Err(reject("no content (text or data)".into())),
    };
    if content.len() as u64 > src.config.max_document_bytes {
        return Err(reject(format!(
            "too large: {} bytes > {} bytes",
            content.len(),
            src.config.max_document_bytes
        )));
    }
    let mime = (!d.mime_type.is_empty())
        .then(|| d.mime_type.clone())
        .or_else(|| {
            // Bytes without a media type: the key's extension names the format.
            crate::parse::Format::detect(None, &key)
                .is_err()
                .then(|| default_mime.map(String::from))
                .flatten()
        });
    // Parse now, so a malformed or unsupported document is rejected with its reason here rather
    // than only showing up in the admin's skip list. (The pipeline parses it again.)
    let parsed = if was_newest {
        Ok(())
    } else {
        crate::parse::parse_limited(content.clone(), mime.clone(), key.clone(), src.limits)
            .map(drop)
    };
    if let Err(e) = parsed {
        // Busy or unavailable parsers, or a parse cut off by its timeout on a busy machine
        // (as the pipeline takes it too), are not the content's fault, and not what REJECTED
        // tells a client (bad content; do not send it again).
        let transient = e.is_transient() || e.timed_out();
        if !transient {
            return Err(reject(e.to_string()));
        }
        // An ACL change does not wait for the parsers: the pipeline withdraws the indexed
        // version if it cannot parse the new one, where RETRY_LATER would keep serving it
        // under the ACL the client is changing.
        let acl_changes = newest.is_some_and(|(_, fp)| fp != acl.fingerprint());
        // A parse that timed out in process left its parser thread running (Rust cannot stop
        // one): sent again, it would leave one more each time, and four stop every in-process
        // parse (a review). Refused, unless it changes the ACL (see above).
        if matches!(e, crate::parse::ParseError::Abandoned(_)) && !acl_changes {
            return Err(reject(format!(
                "{e} (parsed in process, it is not tried again: a parser that ran out of time \
                 keeps running)"
            )));
        }
        if !acl_changes {
            // How many parsers are stuck is the daemon's state, made by other sources'
            // documents: a pusher is told only that they are busy (session 37's review).
            let why = match e {
                crate::parse::ParseError::ParsersStuck(n) => {
                    tracing::warn!(stuck = n, "a pushed document waits: the parsers are busy");
                    "the server's parsers are busy; not this document's fault: try again later"
                        .to_string()
                }
                e => e.to_string(),
            };
            return Err(result(&key, pb::ItemStatus::RetryLater, why));
        }
    }
    let attributes: BTreeMap<String, String> = d.attributes.into_iter().collect();
    let doc = SourceDocument {
        key: doc_key,
        uri: if d.uri.is_empty() {
            format!("push://{}/{}", src.config.id, key)
        } else {
            d.uri
        },
        title: (!d.title.trim().is_empty()).then_some(d.title),
        mime,
        name_hint: key.clone(),
        content,
        version: d.version,
        modified_at: (d.modified_at > 0).then_some(d.modified_at),
        acl,
        attributes,
        job: None,
        reparse: false,
    };
    // What the backend stores of every chunk, checked now (a Milvus field limit): such a
    // document would be accepted, then fail in the pipeline at every try, and a waiting client
    // be told to send it again (a review). The title as the pipeline cuts it; the chunks are
    // not known yet: one of ordinal 99,999 stands for them (a document within the text limit
    // has fewer, so a key that fits here fits every chunk id).
    let mut attributes = doc.attributes.clone();
    attributes.insert("source".into(), src.config.id.clone());
    let mut title = doc.title.clone().unwrap_or_default();
    crate::parse::cap_heading(&mut title);
    let probe = crate::index::DocumentRecord {
        key: doc.key.clone(),
        uri: doc.uri.clone(),
        title,
        version: doc.version.clone(),
        modified_at: doc.modified_at,
        attributes,
        acl: doc.acl.clone(),
        content_hash: String::new(),
        chunks: vec![crate::index::ChunkRecord {
            ord: 99_999,
            span: 0..0,
            page: None,
            heading_path: Vec::new(),
            text: String::new(),
            hash: String::new(),
            vector: Vec::new(),
        }],
    };
    if let Err(reason) = st.index.check(&probe) {
        return Err(reject(format!("the index cannot hold it: {reason}")));
    }
    Ok(Validated { doc, was_newest })
}

#[tonic::async_trait]
impl pb::ingest_server::Ingest for IngestService {
    async fn put_documents(
        &self,
        req: Request<pb::PutDocumentsRequest>,
    ) -> Result<Response<pb::PutDocumentsResponse>, Status> {
        let (who, src) = self.source(&req, &req.get_ref().source)?;
        // The validation (a parse per document) runs off the runtime; a client that leaves or
        // whose deadline passes stops it at the next document, so abandoned requests do not
        // pile up parses past the concurrency limits that were released with them.
        let (budget, _guard) = super::limits::Budget::of(&req);
        let release = super::limits::Release::of(&req);
        let msg = req.into_inner();
        let size = prost::Message::encoded_len(&msg) as u64;
        if size > src.config.max_request_bytes {
            return Err(ServiceError::InvalidArgument {
                reason: "REQUEST_TOO_LARGE",
                field: "documents",
                message: format!(
                    "{size} bytes; this source accepts at most {} bytes per request",
                    src.config.max_request_bytes
                ),
            }
            .into());
        }
        if msg.documents.len() > MAX_PUT {
            return Err(ServiceError::InvalidArgument {
                reason: "BATCH_TOO_LARGE",
                field: "documents",
                message: format!(
                    "{} documents; at most {MAX_PUT} per request",
                    msg.documents.len()
                ),
            }
            .into());
        }
        let (st, s2, b2) = (self.state.clone(), src.clone(), budget.clone());
        let wait_for_commit = msg.wait_for_commit;
        let checked = tokio::task::spawn_blocking(move || {
            let mut out = Vec::with_capacity(msg.documents.len());
            for d in msg.documents {
                if b2.spent() {
                    return Err(ServiceError::Cancelled);
                }
                out.push(validate(&st, &s2, d));
            }
            Ok(out)
        })
        .await
        .map_err(ServiceError::internal)??;
        let mut results = Vec::with_capacity(checked.len());
        let mut accepted = Vec::new();
        // Watched before they are queued: a failure cannot come first.
        let watch = wait_for_commit.then(|| {
            let items: Vec<(String, Option<(String, String)>)> = checked
                .iter()
                .filter_map(|c| c.as_ref().ok())
                .map(|v| {
                    let d = &v.doc;
                    let state = (d.version.clone(), d.acl.fingerprint());
                    (d.key.native_id.clone(), Some(state))
                })
                .collect();
            src.watch(&items)
        });
        let mut awaited = Vec::new();
        for c in checked {
            match c {
                Ok(Validated { doc, was_newest }) => {
                    let key = doc.key.native_id.clone();
                    let doc_key = doc.key.to_string();
                    let state = (doc.version.clone(), doc.acl.fingerprint());
                    awaited.push((results.len(), awaited.len()));
                    let change = Change::Upsert(Box::new(doc));
                    let queued = match was_newest {
                        // Queued only if an earlier item of this request, or another request,
                        // changed the key since it was checked (session 34's review: a repeat
                        // of the indexed state after a wider ACL in one request was answered
                        // UNCHANGED, and the wider ACL stayed).
                        true => {
                            src.accept_if_changed(&key, state, change, &*self.state.index)
                                .await
                        }
                        false => {
                            src.accept(&key, Some(state), change, &*self.state.index)
                                .await
                        }
                    };
                    let status = match queued {
                        None => {
                            // What was queued before is audited too (a review: the early return
                            // skipped the record).
                            self.audit_changes("PutDocuments", &who, "SHUTTING_DOWN", &accepted);
                            return Err(Status::unavailable("the daemon is shutting down"));
                        }
                        Some(false) => pb::ItemStatus::Unchanged,
                        Some(true) => {
                            accepted.push(doc_key);
                            pb::ItemStatus::Accepted
                        }
                    };
                    results.push(result(&key, status, ""));
                }
                Err(r) => results.push(r),
            }
        }
        self.audit_changes("PutDocuments", &who, "ok", &accepted);
        if let Some(watch) = watch {
            self.until_committed(&src, &mut results, awaited, &watch, &budget, release)
                .await;
        }
        self.screen_reasons(&who, &mut results);
        Ok(Response::new(pb::PutDocumentsResponse { results }))
    }

    async fn delete_documents(
        &self,
        req: Request<pb::DeleteDocumentsRequest>,
    ) -> Result<Response<pb::DeleteDocumentsResponse>, Status> {
        let (who, src) = self.source(&req, &req.get_ref().source)?;
        if req.get_ref().keys.len() > MAX_DELETE {
            return Err(ServiceError::InvalidArgument {
                reason: "BATCH_TOO_LARGE",
                field: "keys",
                message: format!(
                    "{} keys; at most {MAX_DELETE} per request",
                    req.get_ref().keys.len()
                ),
            }
            .into());
        }
        let (budget, _guard) = super::limits::Budget::of(&req);
        let release = super::limits::Release::of(&req);
        let msg = req.into_inner();
        let mut results = Vec::with_capacity(msg.keys.len());
        let mut deleted = Vec::new();
        let watch = msg.wait_for_commit.then(|| {
            let items: Vec<(String, Option<(String, String)>)> =
                msg.keys.iter().map(|k| (k.clone(), None)).collect();
            src.watch(&items)
        });
        let mut awaited = Vec::new();
        for (w, key) in msg.keys.into_iter().enumerate() {
            if let Some(p) = key_problem(&key) {
                results.push(result(&key, pb::ItemStatus::Rejected, p));
                continue;
            }
            let doc_key = DocKey::new(&src.config.id, &key);
            // Known if indexed, written but not committed, or accepted and still queued: the
            // delete is queued behind that upsert and wins over it. An index that cannot tell
            // now (a remote backend whose document table is not loaded) gets the delete anyway.
            let index = &*self.state.index;
            // (Asked first: a backend that cannot tell would load its table over the network
            // for each key, on the runtime's thread; a review.)
            if index.knows_every_document() && src.newest(&key, index).is_none() {
                results.push(result(&key, pb::ItemStatus::NotFound, ""));
                continue;
            }
            let change = Change::Delete(doc_key.clone());
            if src.accept(&key, None, change, index).await.is_none() {
                self.audit_changes("DeleteDocuments", &who, "SHUTTING_DOWN", &deleted);
                return Err(Status::unavailable("the daemon is shutting down"));
            }
            deleted.push(doc_key.to_string());
            awaited.push((results.len(), w));
            results.push(result(&key, pb::ItemStatus::Deleted, ""));
        }
        self.audit_changes("DeleteDocuments", &who, "ok", &deleted);
        if let Some(watch) = watch {
            self.until_committed(&src, &mut results, awaited, &watch, &budget, release)
                .await;
        }
        self.screen_reasons(&who, &mut results);
        Ok(Response::new(pb::DeleteDocumentsResponse { results }))
    }
}

/// The longest a call with `wait_for_commit` waits for the commit (less when its deadline is
/// nearer).
pub const MAX_COMMIT_WAIT: Duration = Duration::from_secs(120);

/// How often a waiting call looks at the committed marker again.
const COMMIT_POLL: Duration = Duration::from_millis(20);

/// How long a marker may stay uncommitted before another is sent: a batch whose embedding
/// failed commits its writes without the checkpoints it carried.
const REMARK_AFTER: Duration = Duration::from_secs(2);

impl IngestService {
    /// Passes each item's reason through the output guardrails for the writer, as admin
    /// responses are (session 43's review: a reason, which can quote a skip reason recorded for
    /// another writer's version of the key, left the daemon unscreened). Keys are the writer's
    /// own, echoed as sent so that results can be matched to items.
    fn screen_reasons(&self, who: &crate::identity::Caller, results: &mut [pb::ItemResult]) {
        let shown = self.state.shown_to(who);
        for r in results.iter_mut().filter(|r| !r.reason.is_empty()) {
            r.reason = shown(std::mem::take(&mut r.reason), false);
        }
    }

    /// The audit record of a push call: the keys it queued (`documents`).
    fn audit_changes(
        &self,
        method: &'static str,
        who: &crate::identity::Caller,
        outcome: &str,
        keys: &[String],
    ) {
        self.state.record(Audited {
            method,
            caller: who,
            outcome,
            documents: keys.iter().map(String::as_str).collect(),
            evidence: Vec::new(),
            verdicts: &[],
            question: None,
            target: None,
        });
    }

    /// `wait_for_commit`: sends a commit marker behind the call's changes and waits until it is
    /// committed (then every change before it is committed, or failed and flagged on `watch`),
    /// or until the deadline. `awaited`: (place in `results`, index in `watch`) of the items
    /// to wait on; only ACCEPTED, UNCHANGED and DELETED ones are, nothing else was queued.
    /// The call's concurrency permits are given back while it waits (`release`; session 37's
    /// note: a waiting call held them up to [`MAX_COMMIT_WAIT`], so a few writers waiting on a
    /// long commit interval refused every other request of theirs, and 64 refused everyone's),
    /// unless [`MAX_WAITING`] calls, or [`MAX_WAITING_PER_SOURCE`] of its source, wait already.
    async fn until_committed(
        &self,
        src: &PushSource,
        results: &mut [pb::ItemResult],
        mut awaited: Vec<(usize, usize)>,
        watch: &crate::ingest::push::Watch,
        budget: &super::limits::Budget,
        release: Option<super::limits::Release>,
    ) {
        let waits = |r: &pb::ItemResult| {
            [
                pb::ItemStatus::Accepted,
                pb::ItemStatus::Unchanged,
                pb::ItemStatus::Deleted,
            ]
            .contains(&r.status())
        };
        awaited.retain(|(i, _)| waits(&results[*i]));
        if awaited.is_empty() {
            return;
        }
        let _waiting = self.waiting_place(&src.config.id).inspect(|_| {
            if let Some(r) = &release {
                r.now();
            }
        });
        // Some margin before the client's deadline, to answer in time: a twentieth of the
        // call's time, from 100 ms to 1 s (the answer crosses the network too).
        let margin = budget.timeout().map_or(COMMIT_POLL * 5, |t| {
            (t / 20).clamp(COMMIT_POLL * 5, Duration::from_secs(1))
        });
        let until = budget
            .deadline()
            .map(|d| d.checked_sub(margin).unwrap_or(d))
            .into_iter()
            .chain([Instant::now() + MAX_COMMIT_WAIT])
            .min()
            .expect("one deadline at least");
        let index = &*self.state.index;
        let check = |mark: Option<u64>| {
            let committed = mark.is_some_and(|m| src.committed_mark(index) >= m);
            awaited.retain(|&(i, w)| {
                let r = &mut results[i];
                if watch.failed(w) {
                    let why = self
                        .state
                        .skips
                        .get(&src.config.id)
                        .1
                        .into_iter()
                        .find(|(k, _)| *k == r.key)
                        .map_or_else(|| "it was not indexed".to_string(), |(_, why)| why);
                    r.status = pb::ItemStatus::RetryLater as i32;
                    r.reason = format!("accepted, then not committed: {why}");
                    return false;
                }
                !committed
            });
            awaited.is_empty() || budget.spent()
        };
        until_marked(|| src.mark(), check, until.into(), REMARK_AFTER).await;
        for (i, _) in awaited {
            let r = &mut results[i];
            r.status = pb::ItemStatus::RetryLater as i32;
            r.reason = "not committed before the deadline; send it again (with \
                        wait_for_commit it is then UNCHANGED and waits again)"
                .into();
        }
    }
}

/// Sends commit markers (`marker`: queues one behind everything queued so far, `None` when the
/// daemon is shutting down) and calls `check` with the newest marker queued, every
/// [`COMMIT_POLL`], until it returns true or `until`. A marker still uncommitted after
/// `remark_after` ([`REMARK_AFTER`]) is followed by another (a batch whose embedding failed
/// commits without its checkpoints). A marker waits for its place while the queue is full, and
/// the checks go on meanwhile with the marker before (a review: the wait for a second marker
/// stopped them, so a call whose first marker committed meanwhile waited out its deadline and
/// was told to retry).
async fn until_marked<F: std::future::Future<Output = Option<u64>>>(
    mut marker: impl FnMut() -> F,
    mut check: impl FnMut(Option<u64>) -> bool,
    until: tokio::time::Instant,
    remark_after: Duration,
) {
    use tokio::time::Instant;
    let mut mark = None;
    let mut marking = Some(Box::pin(marker()));
    let mut marked_at = Instant::now();
    loop {
        // Again after REMARK_AFTER; soon when the last one was not queued (shutting down).
        let again = if mark.is_some() {
            remark_after
        } else {
            COMMIT_POLL * 5
        };
        if marking.is_none() && marked_at.elapsed() >= again {
            marking = Some(Box::pin(marker()));
        }
        let poll = tokio::time::sleep_until(until.min(Instant::now() + COMMIT_POLL));
        match marking.as_mut() {
            Some(m) => tokio::select! {
                seq = m => {
                    marking = None;
                    marked_at = Instant::now();
                    if seq.is_some() {
                        mark = seq;
                    }
                }
                () = poll => {}
            },
            None => poll.await,
        }
        if check(mark) || Instant::now() >= until {
            return;
        }
    }
}

/// A push source name as an error may echo it: a connector id (letters, digits, `-`, `_`, at
/// most 64 bytes), else a fixed text (a name of megabytes would go back in a header).
fn echoed_source(source: &str) -> String {
    let plausible = !source.is_empty()
        && source.len() <= 64
        && source
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    match plausible {
        true => source.to_string(),
        false => "(not a source name)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::echoed_source;
    use std::time::Duration;
    use tokio::time::Instant;

    /// A second marker waiting for its place in a full queue does not stop the checks: the
    /// first one's commit ends the wait.
    #[tokio::test]
    async fn a_marker_waiting_for_a_full_queue_does_not_stop_the_commit_checks() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let remark = Duration::from_millis(50);
        let sent = AtomicU64::new(0);
        let marker = || {
            let n = sent.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if n > 1 {
                    // The queue stays full.
                    std::future::pending::<()>().await;
                }
                Some(n)
            }
        };
        let started = Instant::now();
        let commit_at = started + remark * 3;
        let (mut checked, mut done) = (Vec::new(), false);
        let check = |mark: Option<u64>| {
            checked.push(mark);
            done = mark == Some(1) && Instant::now() >= commit_at;
            done
        };
        super::until_marked(marker, check, started + Duration::from_secs(30), remark).await;
        assert!(done, "the wait ended at its deadline: {checked:?}");
        assert_eq!(sent.load(Ordering::SeqCst), 2, "one marker, then one more");
        assert!(checked.iter().all(|m| *m == Some(1)), "{checked:?}");
    }

    /// A marker uncommitted after the re-mark interval is followed by another; the checks then
    /// wait for the newer one; the deadline ends a wait that nothing commits.
    #[tokio::test]
    async fn an_uncommitted_marker_is_followed_by_another() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let remark = Duration::from_millis(50);
        let sent = AtomicU64::new(0);
        let marker = || {
            let n = sent.fetch_add(1, Ordering::SeqCst) + 1;
            async move { Some(n) }
        };
        let started = Instant::now();
        let check = |mark: Option<u64>| mark == Some(2);
        super::until_marked(marker, check, started + Duration::from_secs(30), remark).await;
        assert_eq!(sent.load(Ordering::SeqCst), 2);
        assert!(started.elapsed() >= remark);
        let started = Instant::now();
        let until = started + Duration::from_millis(300);
        super::until_marked(marker, |_| false, until, remark).await;
        assert!(Instant::now() >= until);
        assert!(sent.load(Ordering::SeqCst) > 2, "markers went on");
    }

    /// Session 37's review: a refused source name went back whole in the grpc-message header.
    #[test]
    fn a_refused_source_name_is_echoed_only_when_it_could_be_one() {
        assert_eq!(echoed_source("hr-wiki_2"), "hr-wiki_2");
        for odd in [String::new(), "x".repeat(65), "a:b".into(), "ünï".into()] {
            assert_eq!(echoed_source(&odd), "(not a source name)");
        }
    }
}
