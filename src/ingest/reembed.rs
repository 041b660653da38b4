//! Re-embedding: a new index built from an existing index's stored chunks with another model
//! (`docent reindex`), for switching the embedding model without re-crawling any source.
//!
//! Everything but the vectors is carried over as stored: documents, chunk text and spans,
//! pages, headings, ACLs, attributes, versions and content hashes, and the connectors'
//! checkpoints of the commit that was read, so connectors resume from there and skip what is
//! unchanged. Chunk boundaries stay those of the old tokenizer (the stored text is all there
//! is: the sources are not read); a `docent sync ID --full` later re-chunks with the new one.
//!
//! Invariants: the old index is only read (no writer lock: a daemon may keep serving it); the
//! new index is written into the target under a marker ([`crate::index::INCOMPLETE_MARKER`])
//! that the daemon refuses to open, removed after its last commit, so a daemon started early
//! (or after an interrupted run) refuses the target instead of serving it empty or half-built.
//! What a run writes is committed every minute under the marker, so the next run after an
//! interruption resumes instead of starting over.
//! Building in place also works where a rename would not: a target that is a mount point or a
//! link to a directory elsewhere.
//!
//! What the old index commits after the reindex read it (a push, a delete, a narrowed ACL)
//! is not in the new one: [`catch_up`] (`docent reindex --catch-up`, with the daemon stopped,
//! just before the switch) brings the new index to the old one's last commit, embedding only
//! what changed, so the switch serves nothing the old index no longer did.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::embed::{EmbedError, Embedder};
use crate::index::{DocumentRecord, Export, Index, IndexError, ModelSignature};

#[derive(Debug, thiserror::Error)]
pub enum ReembedError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error("{path}: {message}")]
    Target { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What [`catch_up`] changed in the new index.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CatchUpReport {
    /// Documents only the old index holds (written), in both but different (written again),
    /// only the new one holds (deleted), and the same in both.
    pub added: u64,
    pub changed: u64,
    pub removed: u64,
    pub unchanged: u64,
    /// Chunks embedded (the others of a changed document kept their vectors).
    pub chunks_embedded: u64,
    pub elapsed: Duration,
}

#[derive(Debug, Clone)]
pub struct ReembedReport {
    pub documents: u64,
    pub chunks: u64,
    /// Chunks longer than `max_length` in the new model's tokens (prefix and special tokens
    /// included): the model sees their beginning only.
    pub over_length: u64,
    /// What the old index was built with.
    pub from_model: ModelSignature,
    /// Chunks whose vectors were copied, not embedded: all of them when the old index was
    /// built with the same model (a rebuild for a newer index format).
    pub vectors_copied: u64,
    /// Chunks an interrupted run had written and committed, kept as they were (their
    /// documents unchanged in the old index since).
    pub resumed: u64,
    /// Document keys of the old index whose document could not be read back (left out).
    pub unreadable: u64,
    pub elapsed: Duration,
}

impl ReembedReport {
    /// Nothing done yet, from an index built with `from_model`.
    fn new(from_model: ModelSignature) -> Self {
        Self {
            documents: 0,
            chunks: 0,
            over_length: 0,
            from_model,
            vectors_copied: 0,
            resumed: 0,
            unreadable: 0,
            elapsed: Duration::ZERO,
        }
    }
}

/// Checks that `to` can become a new index beside `from`: `from` holds an index, `to` is
/// another path that does not exist yet (or is an empty directory). Cheap; run it before
/// loading a model.
pub fn check_paths(from: &Path, to: &Path) -> Result<(), ReembedError> {
    let target = |message: &str| ReembedError::Target {
        path: to.to_path_buf(),
        message: message.to_string(),
    };
    if !from.join("meta.json").is_file() {
        return Err(ReembedError::Target {
            path: from.to_path_buf(),
            message: "no index here (meta.json is missing)".into(),
        });
    }
    // Both resolved, or no run: a check skipped (a target whose parents do not exist yet) let
    // the new index be built inside the old one (a review).
    let source = from.canonicalize().map_err(|e| ReembedError::Target {
        path: from.to_path_buf(),
        message: format!("cannot be resolved: {e}"),
    })?;
    let dest = absolute(to).ok_or_else(|| target("cannot be resolved to an absolute path"))?;
    {
        let (a, b) = (&source, &dest);
        if a == b {
            return Err(target(
                "is the index being re-embedded; set index.data_dir in the new config to a new directory",
            ));
        }
        // Deleting the old directory after the switch would delete the new index with it.
        if b.starts_with(a) {
            return Err(target(
                "lies inside the index being re-embedded; put the new index beside it",
            ));
        }
    }
    // An interrupted run's target (its marker still there) is taken over: resumed, or cleared.
    if to.exists() && !to.join(crate::index::INCOMPLETE_MARKER).exists() {
        let empty = std::fs::read_dir(to)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !empty {
            return Err(target(
                "already exists; the new index must go into a new (or empty) directory",
            ));
        }
    }
    if to.file_name().is_none() {
        return Err(target("has no directory name"));
    }
    Ok(())
}

/// Embeds the chunks of `batch` that have no vector (their texts shown to `inspect` first),
/// writes every document to `index`, and empties `batch`; returns how many were embedded.
fn write_embedded(
    index: &dyn crate::index::Backend,
    embedder: &dyn Embedder,
    batch: &mut Vec<DocumentRecord>,
    inspect: &mut dyn FnMut(&[String]),
) -> Result<u64, ReembedError> {
    let texts: Vec<String> = batch
        .iter()
        .flat_map(|d| {
            d.chunks
                .iter()
                .filter(|c| c.vector.is_empty())
                .map(|c| super::embedding_input(&d.title, &c.heading_path, &c.text))
        })
        .collect();
    inspect(&texts);
    let mut vectors = match texts.is_empty() {
        true => Vec::new().into_iter(),
        false => embedder.embed_passages(&texts)?.into_iter(),
    };
    for mut doc in batch.drain(..) {
        for c in doc.chunks.iter_mut().filter(|c| c.vector.is_empty()) {
            c.vector = vectors
                .next()
                .ok_or_else(|| EmbedError::Inference("fewer vectors than passages".into()))?;
        }
        // As the pipeline writes them: values that are not numbers become 0, in new and
        // copied vectors alike (a review: a backend refusing a NaN stopped every rerun at the
        // same batch).
        for c in &mut doc.chunks {
            super::finite(&mut c.vector);
        }
        index.upsert(doc)?;
    }
    Ok(texts.len() as u64)
}

/// Makes the entries of `dir` (created, removed) durable.
fn sync_dir(dir: &Path) -> Result<(), ReembedError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| ReembedError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

/// An exclusive lock on a file, released when dropped or when the process ends.
struct RunLock(#[allow(dead_code)] std::fs::File);

impl RunLock {
    fn take(path: &Path) -> Result<Self, ReembedError> {
        let io = |source| ReembedError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => Ok(Self(file)),
            Err(std::fs::TryLockError::WouldBlock) => Err(ReembedError::Target {
                path: path.to_path_buf(),
                message: "another docent reindex is building this index".into(),
            }),
            Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
        }
    }
}

/// `p` made absolute with its deepest existing ancestor resolved (links and all), the rest
/// (which does not exist yet) appended; `None` when a part that does not exist is `..` or `.`.
fn absolute(p: &Path) -> Option<PathBuf> {
    let p = match p.is_absolute() {
        true => p.to_path_buf(),
        false => std::env::current_dir().ok()?.join(p),
    };
    let mut existing = p.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(mut resolved) = existing.canonicalize() {
            resolved.extend(rest.iter().rev());
            return Some(resolved);
        }
        rest.push(existing.file_name()?);
        existing = existing.parent()?;
    }
}

/// Builds the index at `to` from the one at `from`, every chunk embedded with `embedder`; when
/// the old index was built with the same model (same signature), its vectors are copied
/// instead, so rebuilding for a newer index format costs no embedding.
/// `progress(done, total)` is called in chunks after every batch.
///
/// What it has written is committed at least every [`COMMIT_EVERY`] (under the marker, without
/// checkpoints): a run after an interruption resumes from the last such commit, keeping each
/// document written there that is still the same in `from` (which may have changed since),
/// writing the others, and deleting those `from` no longer holds.
pub fn reembed(
    from: &Path,
    to: &Path,
    embedder: &dyn Embedder,
    max_length: Option<usize>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ReembedReport, ReembedError> {
    reembed_committing(from, to, embedder, max_length, progress, COMMIT_EVERY)
}

/// How often [`reembed`] commits what it has written, for a later run to resume from.
pub const COMMIT_EVERY: Duration = Duration::from_secs(60);

fn reembed_committing(
    from: &Path,
    to: &Path,
    embedder: &dyn Embedder,
    max_length: Option<usize>,
    progress: &mut dyn FnMut(u64, u64),
    commit_every: Duration,
) -> Result<ReembedReport, ReembedError> {
    /// Chunks per embedding call: the model's own batching splits it further.
    const BATCH_CHUNKS: usize = 256;
    let t0 = Instant::now();
    check_paths(from, to)?;
    let export = Export::open(from)?;
    let total = export.chunk_count();
    let name = to.file_name().unwrap_or_default().to_string_lossy();
    // Held for the whole run: a second run for the same target would clear what this one
    // wrote (writer lock included) and both would write into it.
    let _lock = RunLock::take(&to.with_file_name(format!(".{name}.reindex-lock")))?;
    // Again under the lock: a run that finished meanwhile changed what the target holds.
    check_paths(from, to)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReembedError::Io { path, source }
    };
    let signature = ModelSignature::of(embedder);
    let marker = to.join(crate::index::INCOMPLETE_MARKER);
    // Left by an interrupted run: what it committed with this model is resumed from; anything
    // else is ours to clear (the entries, not the directory itself, which may be a mount
    // point).
    let written = match marker.exists() {
        true => Export::open_interrupted(to)
            .map_err(|e| ReembedError::Target {
                path: to.to_path_buf(),
                message: format!("what an interrupted run wrote here cannot be read to resume from ({e}): fix the cause and run again, or remove the directory's contents to start over"),
            })?
            .filter(|w| signature.serves(&w.payload().signature())),
        false => None,
    };
    if marker.exists() && written.is_none() {
        // `meta.json` first, made durable: a crash in the middle of the clear leaves a
        // directory that holds no index (cleared again by the next run), not one whose
        // `meta.json` names files already gone, which every later run failed to open
        // (session 43's review).
        let meta = to.join("meta.json");
        if meta.exists() {
            std::fs::remove_file(&meta).map_err(io(&meta))?;
            sync_dir(to)?;
        }
        for entry in std::fs::read_dir(to).map_err(io(to))? {
            let path = entry.map_err(io(to))?.path();
            if path != marker {
                let removed = match path.is_dir() && !path.is_symlink() {
                    true => std::fs::remove_dir_all(&path),
                    false => std::fs::remove_file(&path),
                };
                removed.map_err(io(&path))?;
            }
        }
    }
    crate::index::private_dir(to).map_err(io(to))?;
    std::fs::File::create(&marker)
        .and_then(|f| f.sync_all())
        .map_err(io(&marker))?;
    sync_dir(to)?;
    let same_model = signature.serves(&export.payload().signature());
    let index = Index::open_incomplete(to, &signature)?;
    let counter = embedder.token_counter();
    let profile = embedder.text_profile();
    let extra_tokens = counter.count(&profile.passage_prefix) + 2;
    let over = |texts: &[String]| match max_length {
        Some(max) => texts
            .iter()
            .filter(|t| counter.count(t) + extra_tokens > max)
            .count() as u64,
        None => 0,
    };
    let mut report = ReembedReport::new(export.payload().signature());
    let mut batch: Vec<DocumentRecord> = Vec::new();
    let mut pending = 0usize;
    let mut shown = 0u64;
    let mut last_commit = Instant::now();
    let dim = signature.dim;
    let mut flush =
        |batch: &mut Vec<DocumentRecord>, report: &mut ReembedReport| -> Result<(), ReembedError> {
            report.chunks += batch.iter().map(|d| d.chunks.len() as u64).sum::<u64>();
            // Chunks without a usable copied vector are embedded.
            for c in batch.iter_mut().flat_map(|d| d.chunks.iter_mut()) {
                if c.vector.len() == dim {
                    report.vectors_copied += 1;
                } else {
                    c.vector.clear();
                }
            }
            write_embedded(&index, embedder, batch, &mut |texts| {
                report.over_length += over(texts)
            })?;
            if last_commit.elapsed() >= commit_every {
                index.commit(BTreeMap::new())?;
                last_commit = Instant::now();
            }
            Ok(())
        };
    for key in export.document_keys() {
        let doc = match same_model {
            true => export.document_with_vectors(key)?,
            false => export.document(key)?,
        };
        let Some(mut doc) = doc else {
            // A key that names no document (unparseable, or gone from this commit): counted,
            // since its connector's checkpoint covers it and it would not be sent again.
            report.unreadable += 1;
            continue;
        };
        report.documents += 1;
        if let Some(w) = &written
            && compare_with_written(w, key, &mut doc)? == Written::Same
        {
            let n = doc.chunks.len() as u64;
            report.resumed += n;
            report.chunks += n;
            if max_length.is_some() {
                let texts: Vec<String> = doc
                    .chunks
                    .iter()
                    .map(|c| super::embedding_input(&doc.title, &c.heading_path, &c.text))
                    .collect();
                report.over_length += over(&texts);
            }
        } else {
            pending += doc.chunks.len();
            batch.push(doc);
            if pending >= BATCH_CHUNKS {
                flush(&mut batch, &mut report)?;
                pending = 0;
            }
        }
        if report.chunks >= shown + BATCH_CHUNKS as u64 {
            shown = report.chunks;
            progress(shown, total);
        }
    }
    flush(&mut batch, &mut report)?;
    progress(report.chunks, total);
    // Written by the interrupted run and deleted from `from` since.
    for key in written.iter().flat_map(|w| w.document_keys()) {
        if export.document_keys().binary_search(key).is_err()
            && let Some(k) = docent_connector_api::DocKey::parse(key)
        {
            index.delete(&k);
        }
    }
    drop(written);
    index.commit(export.payload().checkpoints.clone())?;
    index.close()?;
    // The catch-up's marker comes before this run's goes: no moment has neither, and a daemon
    // refuses the index until the catch-up.
    let pending = to.join(crate::index::CATCH_UP_MARKER);
    std::fs::File::create(&pending)
        .and_then(|f| f.sync_all())
        .map_err(io(&pending))?;
    own_like(to, from)?;
    // The commit is durable (tantivy syncs its files and meta.json); the marker goes only
    // then, and its removal is durable once the directory is.
    sync_dir(to)?;
    std::fs::remove_file(&marker).map_err(io(&marker))?;
    sync_dir(to)?;
    report.elapsed = t0.elapsed();
    Ok(report)
}

/// [`reembed`] for the Milvus backend: builds the collection `to` (which must not exist yet, or
/// be one an interrupted run left) from the collection `from`, every chunk embedded with
/// `embedder` (or its vectors copied, with the same model), with `from`'s checkpoints. Stop the
/// ingest node first (query nodes may keep serving `from`): the run holds `from`'s writer lease
/// ([`crate::index::milvus::MilvusExport::open_for_reindex`]), so it is refused while that node
/// runs, and the node is refused until the run ends. The collection is marked until the last
/// commit ([`MilvusBackend::open`] refuses it); what is written is committed every [`COMMIT_EVERY`]; a run after an
/// interruption writes every document again (in place) and deletes those `from` no longer
/// holds.
pub fn reembed_milvus(
    from: &crate::index::milvus::MilvusConfig,
    to: &crate::index::milvus::MilvusConfig,
    embedder: &dyn Embedder,
    max_length: Option<usize>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ReembedReport, ReembedError> {
    reembed_milvus_committing(from, to, embedder, max_length, progress, COMMIT_EVERY)
}

pub(crate) fn reembed_milvus_committing(
    from: &crate::index::milvus::MilvusConfig,
    to: &crate::index::milvus::MilvusConfig,
    embedder: &dyn Embedder,
    max_length: Option<usize>,
    progress: &mut dyn FnMut(u64, u64),
    commit_every: Duration,
) -> Result<ReembedReport, ReembedError> {
    use crate::index::Backend;
    use crate::index::milvus::{MilvusBackend, MilvusExport};
    const BATCH_CHUNKS: usize = 256;
    let t0 = Instant::now();
    if from.uri == to.uri && from.database == to.database && from.collection == to.collection {
        return Err(ReembedError::Target {
            path: to.collection.clone().into(),
            message: "is the collection being re-embedded; set index.milvus.collection in the new config to a new collection".into(),
        });
    }
    // One run per target collection from this machine (the target is marked, not leased): a
    // second would repair, write and finish under the first. The old collection's writer
    // lease is held for the run (`open_for_reindex`).
    let lock_name = {
        use sha2::{Digest, Sha256};
        let id = format!("{}\0{}\0{}", to.uri, to.database, to.collection);
        hex::encode(&Sha256::digest(id.as_bytes())[..8])
    };
    let _lock =
        RunLock::take(&std::env::temp_dir().join(format!("docent-reindex-{lock_name}.lock")))?;
    let export = MilvusExport::open_for_reindex(from).map_err(|e| match e {
        IndexError::AnotherWriter { node, .. } => ReembedError::Target {
            path: from.collection.clone().into(),
            message: format!(
                "its ingest node ({node}) is running: stop it (query nodes may keep serving), then run docent reindex again"
            ),
        },
        e => e.into(),
    })?;
    let total = export.chunk_count();
    let signature = ModelSignature::of(embedder);
    let same_model = signature.serves(&export.payload().signature());
    let target = MilvusBackend::open_for_reindex(to, &signature)?;
    // An interrupted run's commit that was cut off: its record would make the ingest node
    // delete those documents at its first start after the switch.
    target.repair_cut_off_commit()?;
    let counter = embedder.token_counter();
    let extra_tokens = counter.count(&embedder.text_profile().passage_prefix) + 2;
    let mut report = ReembedReport::new(export.payload().signature());
    let (mut batch, mut pending) = (Vec::new(), 0usize);
    let (mut last_commit, mut uncommitted) = (Instant::now(), 0usize);
    let mut flush =
        |batch: &mut Vec<DocumentRecord>, report: &mut ReembedReport| -> Result<(), ReembedError> {
            uncommitted += batch.iter().map(|d| d.chunks.len()).sum::<usize>();
            report.chunks += batch.iter().map(|d| d.chunks.len() as u64).sum::<u64>();
            for c in batch.iter_mut().flat_map(|d| d.chunks.iter_mut()) {
                if c.vector.len() == signature.dim {
                    report.vectors_copied += 1;
                } else {
                    c.vector.clear();
                }
            }
            write_embedded(&target, embedder, batch, &mut |texts| {
                if let Some(max) = max_length {
                    report.over_length += texts
                        .iter()
                        .filter(|t| counter.count(t) + extra_tokens > max)
                        .count() as u64;
                }
            })?;
            // The backend holds the written rows in memory until a commit: commit often
            // enough that it holds little (a copy with the same model writes fast).
            if last_commit.elapsed() >= commit_every || uncommitted >= 16_384 {
                target.commit(BTreeMap::new())?;
                (last_commit, uncommitted) = (Instant::now(), 0);
            }
            Ok(())
        };
    // One scan of the collection by its primary key (a read per document would scan it each
    // time: the chunk id is its only indexed scalar).
    let mut failed: Option<ReembedError> = None;
    let scanned = export.each_document(same_model, &mut |doc| {
        report.documents += 1;
        pending += doc.chunks.len();
        batch.push(doc);
        if pending >= BATCH_CHUNKS {
            if let Err(e) = flush(&mut batch, &mut report) {
                failed = Some(e);
                return Err(IndexError::Payload {
                    path: to.collection.clone().into(),
                    message: "re-embedding stopped".into(),
                });
            }
            pending = 0;
            progress(report.chunks, total);
        }
        Ok(())
    });
    if let Some(e) = failed {
        return Err(e);
    }
    // An ingest node that took the old collection over stops the scan at once.
    report.unreadable = scanned.map_err(|e| match e {
        IndexError::TakenOver { .. } => changed_during_run(from),
        e => e.into(),
    })?;
    flush(&mut batch, &mut report)?;
    progress(report.chunks, total);
    // A change the scan may have missed (the ingest node was running): the target stays
    // marked, and the next run (with the node stopped) completes it.
    if export.changed_since_open()? {
        return Err(changed_during_run(from));
    }
    // Written by an interrupted run and deleted from `from` since.
    for key in target.document_keys()? {
        if export.document_keys().binary_search(&key).is_err()
            && let Some(k) = docent_connector_api::DocKey::parse(&key)
        {
            target.delete(&k);
        }
    }
    target.commit(export.payload().checkpoints.clone())?;
    target.finish_reindex()?;
    report.elapsed = t0.elapsed();
    Ok(report)
}

/// The old collection changed, or its ingest node took it over, during a run.
fn changed_during_run(from: &crate::index::milvus::MilvusConfig) -> ReembedError {
    ReembedError::Target {
        path: from.collection.clone().into(),
        message: "the old collection changed during the run (its ingest node is running?): stop the ingest node and run docent reindex again; it resumes".into(),
    }
}

/// How a document compares with what the target already holds under its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    /// Not there.
    Absent,
    /// The same in everything stored but the vectors: nothing to write.
    Same,
    /// There, but different: `doc` was given the written vectors of its chunks whose embedded
    /// text is unchanged (same hash), so only the others are embedded.
    Changed,
}

fn compare_with_written(
    written: &Export,
    key: &str,
    doc: &mut DocumentRecord,
) -> Result<Written, IndexError> {
    if written
        .document_keys()
        .binary_search_by(|k| k.as_str().cmp(key))
        .is_err()
    {
        return Ok(Written::Absent);
    }
    let Some(mut held) = written.document_with_vectors(key)? else {
        return Ok(Written::Absent);
    };
    let vectors: std::collections::HashMap<String, Vec<f32>> = held
        .chunks
        .iter_mut()
        .map(|c| (c.hash.clone(), std::mem::take(&mut c.vector)))
        .collect();
    // Compared without vectors on either side (a same-model rebuild reads them from `from`).
    let own: Vec<Vec<f32>> = doc
        .chunks
        .iter_mut()
        .map(|c| std::mem::take(&mut c.vector))
        .collect();
    let same = held == *doc;
    for (c, v) in doc.chunks.iter_mut().zip(own) {
        c.vector = v;
    }
    if same {
        return Ok(Written::Same);
    }
    for c in &mut doc.chunks {
        if let Some(v) = vectors.get(&c.hash).filter(|v| !v.is_empty()) {
            c.vector = v.clone();
        }
    }
    Ok(Written::Changed)
}

/// Brings the index at `to` (built by [`reembed`] from `from`, with `embedder`'s model) to
/// `from`'s last commit: documents written or deleted there since, or whose ACL, text,
/// attributes or anything else stored changed, are written or deleted here too (chunks whose
/// embedded text is unchanged keep their vectors), and `from`'s checkpoints are committed with
/// them. Run with the daemon stopped (neither index may be open elsewhere: refused), right
/// before the switch. `progress(done, total)` counts the old index's documents.
pub fn catch_up(
    from: &Path,
    to: &Path,
    embedder: &dyn Embedder,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<CatchUpReport, ReembedError> {
    /// Chunks per embedding call, as in [`reembed`].
    const BATCH_CHUNKS: usize = 256;
    /// Documents held before they are written.
    const BATCH_DOCUMENTS: usize = 256;
    let t0 = Instant::now();
    if !to.join("meta.json").is_file() {
        return Err(ReembedError::Target {
            path: to.to_path_buf(),
            message: "no index here to catch up: run docent reindex without --catch-up first"
                .into(),
        });
    }
    if to.join(crate::index::SERVED_MARKER).exists() {
        return Err(ReembedError::Target {
            path: to.to_path_buf(),
            message: "a daemon has served this index since the switch: a catch-up now would roll back what it committed (documents deleted since would come back)".into(),
        });
    }
    // The old index's daemon must be stopped: what it committed after this read would be
    // missing from the new index at the switch (a push delete, a narrowed ACL; found by a
    // review: nothing checked it). Its writer's lock says whether one has it open.
    // Held until the catch-up ends: a daemon started on the old index meanwhile could commit
    // what the new index would miss (a review: the lock was taken and dropped at once).
    let _old_writer = source_not_in_use(from)?;
    let old = Export::open(from)?;
    // Its last commit as it stands, before this writes: the writer's lock makes sure no
    // daemon has it open.
    let new = Export::open(to)?;
    let index = Index::open_caught_up_later(to, &ModelSignature::of(embedder)).map_err(|e| match e {
        IndexError::Tantivy {
            source: tantivy::TantivyError::LockFailure(..),
            ..
        } => ReembedError::Target {
                path: to.to_path_buf(),
                message: "is open in a running daemon: stop it first (the catch-up is the last step before the switch)".into(),
        },
        other => other.into(),
    })?;
    // Once both indexes opened and before anything is copied, durably: a daemon started on the
    // old index after this would commit what the new one misses (a crash before the new index
    // is caught up leaves both refused, and running the catch-up again finishes it). Owned
    // like the old index, so that its daemon can read it (the catch-up may run as root).
    // Made new, never through a link the old index's owner left there (the catch-up may run
    // as root: a link to /etc/passwd would have been written and given away; a review).
    let superseded = from.join(crate::index::SUPERSEDED_MARKER);
    let marked = (|| {
        use std::io::Write;
        use std::os::unix::fs::MetadataExt;
        match std::fs::remove_file(&superseded) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&superseded)?;
        f.write_all(format!("{}\n", to.display()).as_bytes())?;
        f.sync_all()?;
        let owner = std::fs::metadata(from)?;
        let _ = std::os::unix::fs::fchown(&f, Some(owner.uid()), Some(owner.gid()));
        Ok(())
    })();
    marked.map_err(|source| ReembedError::Io {
        path: superseded.clone(),
        source,
    })?;
    sync_dir(from)?;
    let mut report = CatchUpReport::default();
    let total = old.document_keys().len() as u64;
    let mut batch: Vec<DocumentRecord> = Vec::new();
    let mut pending = 0usize;
    let flush = |batch: &mut Vec<DocumentRecord>| -> Result<u64, ReembedError> {
        write_embedded(&index, embedder, batch, &mut |_| {})
    };
    for (i, key) in old.document_keys().iter().enumerate() {
        if i % 256 == 0 {
            progress(i as u64, total);
        }
        let Some(mut doc) = old.document(key)? else {
            // Not readable from the old index: what the new one holds under it is an older
            // version, perhaps under a wider ACL, and does not survive the switch.
            if let Some(k) = docent_connector_api::DocKey::parse(key) {
                index.delete(&k);
                report.removed += 1;
            }
            continue;
        };
        match compare_with_written(&new, key, &mut doc)? {
            Written::Same => {
                report.unchanged += 1;
                continue;
            }
            Written::Changed => report.changed += 1,
            Written::Absent => report.added += 1,
        }
        pending += doc.chunks.iter().filter(|c| c.vector.is_empty()).count();
        batch.push(doc);
        // Written by chunks to embed, or by documents: an ACL-only change embeds nothing, and
        // a share-wide one must not hold every document (and its vectors) until the end.
        if pending >= BATCH_CHUNKS || batch.len() >= BATCH_DOCUMENTS {
            report.chunks_embedded += flush(&mut batch)?;
            pending = 0;
            progress(i as u64 + 1, total);
        }
    }
    report.chunks_embedded += flush(&mut batch)?;
    for key in new.document_keys() {
        if old.document_keys().binary_search(key).is_err()
            && let Some(k) = docent_connector_api::DocKey::parse(key)
        {
            index.delete(&k);
            report.removed += 1;
        }
    }
    progress(total, total);
    index.commit(old.payload().checkpoints.clone())?;
    index.close()?;
    own_like(to, from)?;
    // Caught up, durably: a daemon may open the index now.
    let pending = to.join(crate::index::CATCH_UP_MARKER);
    if pending.exists() {
        std::fs::remove_file(&pending).map_err(|source| ReembedError::Io {
            path: pending.clone(),
            source,
        })?;
        sync_dir(to)?;
    }
    report.elapsed = t0.elapsed();
    Ok(report)
}

/// Refuses when a daemon (or anything else) holds the writer's lock of the index in `dir`.
/// Returns the lock, which keeps any daemon from opening it for writing while it is held.
fn source_not_in_use(dir: &Path) -> Result<tantivy::directory::DirectoryLock, ReembedError> {
    use tantivy::directory::{Directory, INDEX_WRITER_LOCK, MmapDirectory};
    let busy = |message: String| ReembedError::Target {
        path: dir.to_path_buf(),
        message,
    };
    let d = MmapDirectory::open(dir).map_err(|e| busy(e.to_string()))?;
    match d.acquire_lock(&INDEX_WRITER_LOCK) {
        Ok(lock) => Ok(lock),
        Err(_) => Err(busy(
            "the old index is open in a running daemon: stop it first (what it commits after the catch-up would be missing from the new index)".into(),
        )),
    }
}

/// Gives what root made under `dir` the owner and group of `like` (when `like` is not root's):
/// a reindex run as root (`sudo`) beside an index the service user owns would otherwise leave
/// files that user cannot open, and the daemon would fail at the switch. A run as the service
/// user changes nothing: its files are already its own.
fn own_like(dir: &Path, like: &Path) -> Result<(), ReembedError> {
    use std::os::unix::fs::MetadataExt;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReembedError::Io { path, source }
    };
    let want = std::fs::metadata(like).map_err(io(like))?;
    let (uid, gid) = (want.uid(), want.gid());
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).map_err(io(&path))? {
                pending.push(entry.map_err(io(&path))?.path());
            }
        }
        // Only what root made: another user cannot change owners, and made its files its own.
        if meta.uid() == 0 && uid != 0 {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).map_err(io(&path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use docent_connector_api::{Acl, DocKey, Principal};

    use super::*;
    use crate::embed::test_embedder::{BagOfWords, Budgeted};
    use crate::index::{ChunkRecord, IndexSnapshot};

    fn doc(key: &str, texts: &[&str]) -> DocumentRecord {
        DocumentRecord {
            key: DocKey::new("t", key),
            uri: format!("file:///{key}"),
            title: key.into(),
            version: "v1".into(),
            modified_at: Some(1),
            attributes: BTreeMap::new(),
            acl: Acl::new([Principal::group("hr")], [Principal::user("bob")]),
            content_hash: "h".into(),
            chunks: texts
                .iter()
                .enumerate()
                .map(|(i, t)| ChunkRecord {
                    ord: i as u32,
                    span: 0..t.len(),
                    page: None,
                    heading_path: vec![],
                    text: t.to_string(),
                    hash: format!("{key}-{i}"),
                    vector: vec![0.0; 64],
                })
                .collect(),
        }
    }

    /// An index of the old model at `dir` holding one committed document, `t:a`.
    /// What a catch-up with nothing to apply leaves (for the tests of the copy itself, which
    /// open the new index at once).
    fn as_if_caught_up(to: &Path) {
        std::fs::remove_file(to.join(crate::index::CATCH_UP_MARKER)).unwrap();
    }

    fn one_document_index(dir: &Path) -> Index {
        let old = Index::open(dir, "old-model", 64).unwrap();
        old.upsert(doc("a", &["vacation days"])).unwrap();
        old.commit(BTreeMap::new()).unwrap();
        old
    }

    #[test]
    fn builds_a_complete_index_for_the_new_model_and_keeps_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("old"), dir.path().join("new"));
        {
            let old = Index::open(&from, "old-model", 64).unwrap();
            for i in 0..300 {
                old.upsert(doc(&format!("d{i}"), &["vacation days", "travel policy"]))
                    .unwrap();
            }
            old.commit(BTreeMap::from([(
                "t".into(),
                serde_json::json!({"pos": 9}),
            )]))
            .unwrap();
        }
        let mut calls = Vec::new();
        let report = reembed(&from, &to, &BagOfWords, Some(3), &mut |d, t| {
            calls.push((d, t))
        })
        .unwrap();
        assert_eq!((report.documents, report.chunks), (300, 600));
        assert_eq!(report.unreadable, 0);
        assert_eq!(report.from_model, ModelSignature::plain("old-model", 64));
        // "d1. vacation days" is 3 words + 2 special tokens > 3.
        assert_eq!(report.over_length, 600);
        assert_eq!(calls.last(), Some(&(600, 600)));
        assert!(calls.len() > 1, "progress after each batch: {calls:?}");
        assert!(!to.join(crate::index::INCOMPLETE_MARKER).exists());
        as_if_caught_up(&to);

        let new = Index::open(&to, "test-bag-of-words", 64).unwrap();
        assert_eq!(new.document_count(), 300);
        assert_eq!(new.stats().chunks, 600);
        assert_eq!(new.checkpoints()["t"]["pos"], 9);
        let e = new.doc_entry("t:d7").unwrap();
        assert_eq!((e.version.as_str(), e.chunks), ("v1", 2));
        assert!(e.acl.deny.contains(&Principal::user("bob")));
        // The vectors are the new model's, of the same text the ingest pipeline embeds.
        let v = new.chunk_vectors(&DocKey::new("t", "d7")).unwrap();
        let want = BagOfWords
            .embed_query(&crate::ingest::embedding_input("d7", &[], "travel policy"))
            .unwrap();
        assert_eq!(v["d7-1"], want);
        // The old index is untouched and still opens with its model only.
        assert!(Index::open(&from, "test-bag-of-words", 64).is_err());
        assert_eq!(
            Index::open(&from, "old-model", 64)
                .unwrap()
                .document_count(),
            300
        );
    }

    #[test]
    fn a_rebuild_with_the_same_model_copies_the_vectors_and_gains_whole_document_bm25() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("old"), dir.path().join("new"));
        // An index created before the document-level field, by the same model.
        std::fs::create_dir_all(&from).unwrap();
        drop(
            tantivy::Index::create_in_dir(&from, crate::index::schema::build_with(true, false))
                .unwrap(),
        );
        {
            let old = Index::open(&from, BagOfWords.model_id(), 64).unwrap();
            let mut d = doc("d1", &["vacation days", "travel policy"]);
            // Vectors no embedding of these texts would give: a copy is recognisable.
            for (i, c) in d.chunks.iter_mut().enumerate() {
                c.vector = vec![0.0; 64];
                c.vector[i] = 1.0;
            }
            // A value that is not a number, stored before the pipeline cleaned vectors.
            d.chunks[0].vector[5] = f32::NAN;
            old.upsert(d).unwrap();
            old.commit(BTreeMap::new()).unwrap();
        }
        let report = reembed(&from, &to, &BagOfWords, None, &mut |_, _| {}).unwrap();
        assert_eq!((report.chunks, report.vectors_copied), (2, 2));
        as_if_caught_up(&to);
        let new = Index::open(&to, BagOfWords.model_id(), 64).unwrap();
        let v = new.chunk_vectors(&DocKey::new("t", "d1")).unwrap();
        assert_eq!(v["d1-1"][1], 1.0, "the stored vector, not a new embedding");
        // Copied as the pipeline writes vectors: numbers only (a review).
        assert!(v["d1-0"].iter().all(|x| x.is_finite()), "{:?}", v["d1-0"]);
        assert_eq!(v["d1-0"][0], 1.0);
        let snap = new.snapshot();
        let scope = crate::acl::AclScope::for_tests("u", &["group:hr"]);
        let hits = snap
            .bm25_documents(&scope, &Default::default(), "travel", 10)
            .unwrap()
            .expect("the rebuilt index has the document-level field");
        assert_eq!(hits.len(), 1);
    }

    /// What the old index commits after the reindex read it reaches the new one with the
    /// catch-up: a new document, a delete, a narrowed ACL, an edited chunk (only it embedded
    /// again) and the newer checkpoints. Found by a review: the switch brought back deleted
    /// documents and wider ACLs until each connector's first sync (for push sources, for good).
    #[test]
    fn the_catch_up_applies_what_the_old_index_committed_since() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("old"), dir.path().join("new"));
        let cp = |n: u64| BTreeMap::from([("t".to_string(), serde_json::json!({ "pos": n }))]);
        let old = Index::open(&from, "old-model", 64).unwrap();
        for key in ["a", "b", "c", "d"] {
            old.upsert(doc(key, &["vacation days", "travel policy"]))
                .unwrap();
        }
        old.commit(cp(1)).unwrap();
        reembed(&from, &to, &BagOfWords, None, &mut |_, _| {}).unwrap();
        // Meanwhile, on the old index (a daemon still serving it):
        let mut narrowed = doc("a", &["vacation days", "travel policy"]);
        narrowed.acl = Acl::new([Principal::user("hana")], []);
        old.upsert(narrowed).unwrap();
        old.delete(&DocKey::new("t", "b"));
        let mut edited = doc("c", &["vacation days", "travel policy, revised"]);
        edited.version = "v2".into();
        edited.chunks[1].hash = "c-1-revised".into();
        old.upsert(edited).unwrap();
        old.upsert(doc("e", &["new page"])).unwrap();
        old.commit(cp(2)).unwrap();
        // While a daemon holds the old index, what it commits later would be missed: refused.
        let e = catch_up(&from, &to, &BagOfWords, &mut |_, _| {}).unwrap_err();
        assert!(e.to_string().contains("stop it first"), "{e}");
        drop(old);
        // And the other way round: while a catch-up holds it, no daemon opens it for writing
        // (a review: the lock was checked once and dropped).
        let held = source_not_in_use(&from).unwrap();
        let e = Index::open(&from, "old-model", 64)
            .err()
            .expect("the lock is held");
        assert!(
            matches!(
                &e,
                IndexError::Tantivy {
                    source: tantivy::TantivyError::LockFailure(..),
                    ..
                }
            ),
            "{e:?}"
        );
        drop(held);
        drop(Index::open(&from, "old-model", 64).unwrap());

        let mut calls = Vec::new();
        let r = catch_up(&from, &to, &BagOfWords, &mut |d, t| calls.push((d, t))).unwrap();
        assert_eq!(
            (r.added, r.changed, r.removed, r.unchanged),
            (1, 2, 1, 1),
            "{r:?}"
        );
        // e's chunk and c's revised one; a's ACL change and c's first chunk keep their vectors.
        assert_eq!(r.chunks_embedded, 2);
        assert_eq!(calls.last(), Some(&(4, 4)));
        let new = Index::open(&to, BagOfWords.model_id(), 64).unwrap();
        assert_eq!(
            new.doc_entry("t:a").unwrap().acl.allow,
            [Principal::user("hana")].into_iter().collect()
        );
        assert!(new.doc_entry("t:b").is_none());
        assert_eq!(new.doc_entry("t:c").unwrap().version, "v2");
        assert!(new.doc_entry("t:e").is_some());
        assert_eq!(new.checkpoints()["t"]["pos"], 2);
        let v = new.chunk_vectors(&DocKey::new("t", "c")).unwrap();
        let want = BagOfWords
            .embed_query(&crate::ingest::embedding_input(
                "c",
                &[],
                "travel policy, revised",
            ))
            .unwrap();
        assert_eq!(v["c-1-revised"], want);
        drop(new);
        // Nothing left to do the second time.
        let again = catch_up(&from, &to, &BagOfWords, &mut |_, _| {}).unwrap();
        assert_eq!(
            (again.added, again.changed, again.removed, again.unchanged),
            (0, 0, 0, 4)
        );
        assert_eq!(again.chunks_embedded, 0);
        // The old index is no longer opened to serve (session 43's review): what it would
        // commit would be missing from the new one. Removing the marker undoes the switch.
        let e = Index::open(&from, "old-model", 64)
            .err()
            .expect("superseded");
        assert!(matches!(&e, IndexError::Superseded { .. }), "{e:?}");
        assert!(e.to_string().contains(&to.display().to_string()), "{e}");
        std::fs::remove_file(from.join(crate::index::SUPERSEDED_MARKER)).unwrap();
        drop(Index::open(&from, "old-model", 64).unwrap());
        // Once a daemon has served it (the switch is done), a catch-up would roll it back.
        std::fs::write(to.join(crate::index::SERVED_MARKER), "").unwrap();
        let served = catch_up(&from, &to, &BagOfWords, &mut |_, _| {}).unwrap_err();
        assert!(served.to_string().contains("since the switch"), "{served}");
    }

    /// An interrupted run resumes from its last commit: the next run embeds only what was not
    /// written yet or changed in the old index since, drops what was deleted there, and ends
    /// with the same index a run from scratch builds. Before, every interruption started over
    /// (hours, for a large index).
    #[test]
    fn an_interrupted_run_resumes_from_its_last_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to, fresh) = (
            dir.path().join("old"),
            dir.path().join("new"),
            dir.path().join("fresh"),
        );
        let old = Index::open(&from, "old-model", 64).unwrap();
        for i in 0..300 {
            old.upsert(doc(
                &format!("d{i:03}"),
                &["vacation days", "travel policy"],
            ))
            .unwrap();
        }
        old.commit(BTreeMap::from([(
            "t".into(),
            serde_json::json!({"pos": 1}),
        )]))
        .unwrap();
        // Batches of 128 documents (256 chunks), each committed: the third fails.
        let first = Budgeted::new(520);
        let e = reembed_committing(&from, &to, &first, None, &mut |_, _| {}, Duration::ZERO);
        assert!(matches!(e, Err(ReembedError::Embed(_))), "{:?}", e.err());
        assert_eq!(first.embedded(), 512);
        assert!(to.join(crate::index::INCOMPLETE_MARKER).exists());

        // Meanwhile, on the old index: an edit and a narrowed ACL among what was written, a
        // delete, and a new document.
        let mut edited = doc("d005", &["vacation days", "travel policy, revised"]);
        edited.chunks[1].hash = "d005-1-revised".into();
        old.upsert(edited).unwrap();
        let mut narrowed = doc("d007", &["vacation days", "travel policy"]);
        narrowed.acl = Acl::new([Principal::user("hana")], []);
        old.upsert(narrowed).unwrap();
        old.delete(&DocKey::new("t", "d006"));
        old.upsert(doc("d999", &["new page", "more"])).unwrap();
        old.commit(BTreeMap::from([(
            "t".into(),
            serde_json::json!({"pos": 2}),
        )]))
        .unwrap();

        let second = Budgeted::new(usize::MAX);
        let r =
            reembed_committing(&from, &to, &second, None, &mut |_, _| {}, Duration::ZERO).unwrap();
        // Kept: the 256 written documents but the edited, narrowed and deleted ones.
        assert_eq!(r.resumed, 253 * 2, "{r:?}");
        assert_eq!((r.documents, r.chunks), (300, 600));
        // Embedded: the 44 never written, the new one, and the edited chunk; the narrowed
        // document keeps its written vectors.
        assert_eq!(second.embedded(), 44 * 2 + 2 + 1);
        assert!(!to.join(crate::index::INCOMPLETE_MARKER).exists());

        // The same index as a run from scratch builds.
        reembed(&from, &fresh, &BagOfWords, None, &mut |_, _| {}).unwrap();
        let (resumed, scratch) = (Export::open(&to).unwrap(), Export::open(&fresh).unwrap());
        assert_eq!(resumed.document_keys(), scratch.document_keys());
        assert!(!resumed.document_keys().contains(&"t:d006".to_string()));
        for key in scratch.document_keys() {
            assert_eq!(
                resumed.document_with_vectors(key).unwrap(),
                scratch.document_with_vectors(key).unwrap(),
                "{key}"
            );
        }
        assert_eq!(resumed.payload().checkpoints["t"]["pos"], 2);
    }

    /// A run that did not finish leaves its marker: the daemon refuses the directory (it would
    /// otherwise serve a half-built index, or create an empty one and crawl everything again),
    /// and the next run takes it over from the start.
    #[test]
    fn an_unfinished_target_is_refused_by_the_daemon_and_taken_over_by_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("old"), dir.path().join("new"));
        let _old = one_document_index(&from);
        // What an interrupted run leaves: its marker and part of an index.
        std::fs::create_dir_all(to.join("partial")).unwrap();
        std::fs::write(to.join(crate::index::INCOMPLETE_MARKER), "").unwrap();
        std::fs::write(to.join("partial/segment"), "half").unwrap();
        let refused = Index::open(&to, BagOfWords.model_id(), 64).err();
        assert!(
            matches!(refused, Some(IndexError::Incomplete { .. })),
            "{refused:?}"
        );
        assert!(catch_up(&from, &to, &BagOfWords, &mut |_, _| {}).is_err());
        reembed(&from, &to, &BagOfWords, None, &mut |_, _| {}).unwrap();
        assert!(!to.join(crate::index::INCOMPLETE_MARKER).exists());
        assert!(!to.join("partial").exists());
        as_if_caught_up(&to);
        let new = Index::open(&to, BagOfWords.model_id(), 64).unwrap();
        assert_eq!(new.document_count(), 1);
    }

    /// An interrupted run's commit that cannot be read (here a damaged `meta.json`; as well an
    /// I/O error of a moment) stops the next run and is kept: it was taken for nothing to
    /// resume and cleared, hours of embedding with it (found by a review).
    #[test]
    fn an_unreadable_interrupted_target_is_kept_and_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("old"), dir.path().join("new"));
        let _old = one_document_index(&from);
        reembed(&from, &to, &BagOfWords, None, &mut |_, _| {}).unwrap();
        // As an interrupted run leaves it, then damaged.
        std::fs::write(to.join(crate::index::INCOMPLETE_MARKER), "").unwrap();
        std::fs::write(to.join("meta.json"), "{ damaged").unwrap();
        let held: BTreeSet<_> = std::fs::read_dir(&to)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        let err = reembed(&from, &to, &BagOfWords, None, &mut |_, _| {}).unwrap_err();
        assert!(
            matches!(&err, ReembedError::Target { .. }) && err.to_string().contains("resume"),
            "{err}"
        );
        let after: BTreeSet<_> = std::fs::read_dir(&to)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(after, held);
        assert!(held.len() > 3, "{held:?}");
    }

    /// Run as root beside an index the service user owns, both passes leave everything they
    /// made owned by that user (else the daemon, run as that user, could not open it).
    #[test]
    fn what_root_makes_is_given_to_the_old_index_s_owner() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        if std::fs::metadata(dir.path()).unwrap().uid() != 0 {
            eprintln!("not root: owners cannot change here; nothing to check");
            return;
        }
        let (from, to) = (dir.path().join("old"), dir.path().join("new"));
        let old = one_document_index(&from);
        std::os::unix::fs::chown(&from, Some(4321), Some(4322)).unwrap();
        let owners = |dir: &Path| -> BTreeSet<(u32, u32)> {
            let mut all = BTreeSet::new();
            let mut pending = vec![dir.to_path_buf()];
            while let Some(p) = pending.pop() {
                let m = std::fs::symlink_metadata(&p).unwrap();
                if m.is_dir() {
                    pending.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
                }
                all.insert((m.uid(), m.gid()));
            }
            all
        };
        reembed(&from, &to, &BagOfWords, None, &mut |_, _| {}).unwrap();
        assert_eq!(owners(&to), BTreeSet::from([(4321, 4322)]));
        old.upsert(doc("b", &["travel policy"])).unwrap();
        old.commit(BTreeMap::new()).unwrap();
        drop(old);
        catch_up(&from, &to, &BagOfWords, &mut |_, _| {}).unwrap();
        assert_eq!(owners(&to), BTreeSet::from([(4321, 4322)]));
    }

    /// Two runs for one target at once: the second is refused while the first holds its lock
    /// (found by a review: it deleted the first one's temporary directory, and both wrote).
    #[test]
    fn a_second_run_for_the_same_target_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("old"), dir.path().join("new"));
        drop(Index::open(&from, "m", 64).unwrap());
        let first = RunLock::take(&dir.path().join(".new.reindex-lock")).unwrap();
        let err = reembed(&from, &to, &BagOfWords, None, &mut |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("another docent reindex"), "{err}");
        drop(first);
        reembed(&from, &to, &BagOfWords, None, &mut |_, _| {}).unwrap();
    }

    /// The catch-up writes into the new index: it refuses one a daemon holds open, and a
    /// target no reindex built.
    #[test]
    fn the_catch_up_refuses_an_open_or_missing_target() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("old"), dir.path().join("new"));
        drop(one_document_index(&from));
        let missing = catch_up(&from, &to, &BagOfWords, &mut |_, _| {}).unwrap_err();
        assert!(
            missing.to_string().contains("no index here to catch up"),
            "{missing}"
        );
        reembed(&from, &to, &BagOfWords, None, &mut |_, _| {}).unwrap();
        // Until the catch-up, no daemon may serve the new index (found by a review: it served
        // what the copy read, documents deleted or narrowed since included).
        let pending = Index::open(&to, BagOfWords.model_id(), 64).err();
        assert!(
            matches!(pending, Some(IndexError::CatchUpPending { .. })),
            "{pending:?}"
        );
        // A catch-up that cannot run (here, the target looks unfinished) leaves the old index
        // served: it is marked superseded only once both indexes opened (a review).
        let unfinished = to.join(crate::index::INCOMPLETE_MARKER);
        std::fs::write(&unfinished, "").unwrap();
        assert!(catch_up(&from, &to, &BagOfWords, &mut |_, _| {}).is_err());
        drop(Index::open(&from, "old-model", 64).unwrap());
        std::fs::remove_file(&unfinished).unwrap();
        catch_up(&from, &to, &BagOfWords, &mut |_, _| {}).unwrap();
        let serving = Index::open(&to, BagOfWords.model_id(), 64).unwrap();
        let open = catch_up(&from, &to, &BagOfWords, &mut |_, _| {}).unwrap_err();
        assert!(open.to_string().contains("stop it first"), "{open}");
        drop(serving);
        catch_up(&from, &to, &BagOfWords, &mut |_, _| {}).unwrap();
    }

    #[test]
    fn refuses_targets_that_are_not_new() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("old");
        drop(Index::open(&from, "m", 64).unwrap());
        let err = |to: &Path| reembed(&from, to, &BagOfWords, None, &mut |_, _| {}).unwrap_err();
        assert!(
            err(&from)
                .to_string()
                .contains("is the index being re-embedded")
        );
        let busy = dir.path().join("busy");
        std::fs::create_dir_all(&busy).unwrap();
        std::fs::write(busy.join("x"), "x").unwrap();
        assert!(err(&busy).to_string().contains("already exists"));
        assert!(
            err(&from.join("inner"))
                .to_string()
                .contains("lies inside the index being re-embedded")
        );
        // Deeper, where the parents do not exist yet (a review: the check was skipped), and
        // through a link to the old index.
        assert!(
            err(&from.join("v2/index"))
                .to_string()
                .contains("lies inside the index being re-embedded")
        );
        std::os::unix::fs::symlink(&from, dir.path().join("alias")).unwrap();
        assert!(
            err(&dir.path().join("alias/a/b"))
                .to_string()
                .contains("lies inside the index being re-embedded")
        );
        assert!(!from.join("v2").exists() && !from.join("a").exists());
        let missing = reembed(
            &dir.path().join("nothing"),
            &busy,
            &BagOfWords,
            None,
            &mut |_, _| {},
        )
        .unwrap_err();
        assert!(missing.to_string().contains("no index here"), "{missing}");
        // An empty directory is fine.
        let empty = dir.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        reembed(&from, &empty, &BagOfWords, None, &mut |_, _| {}).unwrap();
        assert!(empty.join("meta.json").exists());
    }
}
