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
//! new index is written into a temporary sibling directory and renamed into place after its
//! one commit, so the target either does not exist or is complete.

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
    pub elapsed: Duration,
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
    let same = match (from.canonicalize(), absolute(to)) {
        (Ok(a), Some(b)) => a == b,
        _ => false,
    };
    if same {
        return Err(target(
            "is the index being re-embedded; set index.data_dir in the new config to a new directory",
        ));
    }
    if to.exists() {
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

/// `p` made absolute with its parent resolved (the last component may not exist).
fn absolute(p: &Path) -> Option<PathBuf> {
    let name = p.file_name()?;
    let parent = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.canonicalize().ok()?,
        _ => std::env::current_dir().ok()?,
    };
    Some(parent.join(name))
}

/// Builds the index at `to` from the one at `from`, every chunk embedded with `embedder`; when
/// the old index was built with the same model (same signature), its vectors are copied
/// instead, so rebuilding for a newer index format costs no embedding.
/// `progress(done, total)` is called in chunks after every batch.
pub fn reembed(
    from: &Path,
    to: &Path,
    embedder: &dyn Embedder,
    max_length: Option<usize>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ReembedReport, ReembedError> {
    /// Chunks per embedding call: the model's own batching splits it further.
    const BATCH_CHUNKS: usize = 256;
    let t0 = Instant::now();
    check_paths(from, to)?;
    let export = Export::open(from)?;
    let total = export.chunk_count();
    let name = to.file_name().unwrap_or_default().to_string_lossy();
    let tmp = to.with_file_name(format!(".{name}.reindex-tmp"));
    if tmp.exists() {
        // Left by an interrupted run: its name is ours.
        std::fs::remove_dir_all(&tmp).map_err(|source| ReembedError::Io {
            path: tmp.clone(),
            source,
        })?;
    }
    let signature = ModelSignature::of(embedder);
    let same_model = export.payload().signature() == signature;
    let index = Index::open_with(&tmp, &signature)?;
    let mut vectors_copied = 0u64;
    let counter = embedder.token_counter();
    let profile = embedder.text_profile();
    let extra_tokens = counter.count(&profile.passage_prefix) + 2;
    let (mut documents, mut chunks, mut over_length) = (0u64, 0u64, 0u64);
    let mut batch: Vec<DocumentRecord> = Vec::new();
    let mut pending = 0usize;
    let dim = signature.dim;
    let mut flush = |batch: &mut Vec<DocumentRecord>| -> Result<u64, ReembedError> {
        let n: u64 = batch.iter().map(|d| d.chunks.len() as u64).sum();
        // Chunks without a usable copied vector are embedded.
        for d in batch.iter_mut() {
            for c in &mut d.chunks {
                if c.vector.len() == dim {
                    vectors_copied += 1;
                } else {
                    c.vector.clear();
                }
            }
        }
        let texts: Vec<String> = batch
            .iter()
            .flat_map(|d| {
                d.chunks
                    .iter()
                    .filter(|c| c.vector.is_empty())
                    .map(|c| super::embedding_input(&d.title, &c.heading_path, &c.text))
            })
            .collect();
        if let Some(max) = max_length {
            over_length += texts
                .iter()
                .filter(|t| counter.count(t) + extra_tokens > max)
                .count() as u64;
        }
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
            index.upsert(doc)?;
        }
        Ok(n)
    };
    for key in export.document_keys() {
        let doc = match same_model {
            true => export.document_with_vectors(key)?,
            false => export.document(key)?,
        };
        let Some(doc) = doc else {
            continue;
        };
        documents += 1;
        pending += doc.chunks.len();
        batch.push(doc);
        if pending >= BATCH_CHUNKS {
            chunks += flush(&mut batch)?;
            pending = 0;
            progress(chunks, total);
        }
    }
    if !batch.is_empty() {
        chunks += flush(&mut batch)?;
        progress(chunks, total);
    }
    index.commit(export.payload().checkpoints.clone())?;
    drop(index);
    std::fs::rename(&tmp, to).map_err(|source| ReembedError::Io {
        path: to.to_path_buf(),
        source,
    })?;
    // The rename is durable only once its directory is: else a power loss could leave
    // neither name.
    if let Some(parent) = to.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|source| ReembedError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
    }
    Ok(ReembedReport {
        documents,
        chunks,
        over_length,
        from_model: export.payload().signature(),
        vectors_copied,
        elapsed: t0.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use docent_connector_api::{Acl, DocKey, Principal};

    use super::*;
    use crate::embed::test_embedder::BagOfWords;
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
        assert_eq!(report.from_model, ModelSignature::plain("old-model", 64));
        // "d1. vacation days" is 3 words + 2 special tokens > 3.
        assert_eq!(report.over_length, 600);
        assert_eq!(calls.last(), Some(&(600, 600)));
        assert!(calls.len() > 1, "progress after each batch: {calls:?}");
        assert!(!dir.path().join(".new.reindex-tmp").exists());

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
            old.upsert(d).unwrap();
            old.commit(BTreeMap::new()).unwrap();
        }
        let report = reembed(&from, &to, &BagOfWords, None, &mut |_, _| {}).unwrap();
        assert_eq!((report.chunks, report.vectors_copied), (2, 2));
        let new = Index::open(&to, BagOfWords.model_id(), 64).unwrap();
        let v = new.chunk_vectors(&DocKey::new("t", "d1")).unwrap();
        assert_eq!(v["d1-1"][1], 1.0, "the stored vector, not a new embedding");
        let snap = new.snapshot();
        let scope = crate::acl::AclScope::for_tests("u", &["group:hr"]);
        let hits = snap
            .bm25_documents(&scope, &Default::default(), "travel", 10)
            .unwrap()
            .expect("the rebuilt index has the document-level field");
        assert_eq!(hits.len(), 1);
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
