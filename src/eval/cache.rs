//! A passage-vector cache for evaluation runs: rebuilding an evaluation index after a change that
//! does not touch the vectors (the BM25 analyzer, chunk-level fields) then costs tantivy indexing
//! only, not minutes of ONNX inference. Queries are embedded as usual; passage vectors are looked
//! up by the SHA-256 of their exact input text, so any change to what is embedded misses the cache.
//!
//! File format: a header line `docent-embed-cache v1 <model_id> <dim>\n`, then records of 16
//! key bytes and `dim` little-endian f32s, appended as new passages are embedded.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::chunk::TokenCounter;
use crate::embed::{EmbedError, Embedder};

pub struct CachedEmbedder {
    inner: Arc<dyn Embedder>,
    path: PathBuf,
    map: Mutex<HashMap<[u8; 16], Vec<f32>>>,
}

fn key(text: &str) -> [u8; 16] {
    let d = Sha256::digest(text.as_bytes());
    let mut k = [0u8; 16];
    k.copy_from_slice(&d[..16]);
    k
}

impl CachedEmbedder {
    /// Loads the cache at `path` (created on the first write); a cache written for another model
    /// or dimension is an error rather than silently reused.
    pub fn open(inner: Arc<dyn Embedder>, path: &Path) -> std::io::Result<Self> {
        // The prefixes and pooling make other vectors too; the default profile keeps the
        // original header, so caches written before profiles existed stay valid.
        let profile = inner.text_profile();
        let profile = if profile == crate::embed::TextProfile::default() {
            String::new()
        } else {
            format!(" {profile}")
        };
        let header = format!(
            "docent-embed-cache v1 {} {}{profile}\n",
            inner.model_id(),
            inner.dim()
        );
        let mut map = HashMap::new();
        if path.exists() {
            let mut bytes = Vec::new();
            std::fs::File::open(path)?.read_to_end(&mut bytes)?;
            if !bytes.starts_with(header.as_bytes()) {
                return Err(std::io::Error::other(format!(
                    "{}: written for another model or format; remove it",
                    path.display()
                )));
            }
            let rec = 16 + 4 * inner.dim();
            // A torn last record (interrupted run) is ignored.
            for r in bytes[header.len()..].chunks_exact(rec) {
                let mut k = [0u8; 16];
                k.copy_from_slice(&r[..16]);
                let v = r[16..]
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                map.insert(k, v);
            }
        } else {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, header.as_bytes())?;
        }
        Ok(Self {
            inner,
            path: path.to_path_buf(),
            map: Mutex::new(map),
        })
    }

    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Embedder for CachedEmbedder {
    fn model_id(&self) -> &str {
        self.inner.model_id()
    }

    fn dim(&self) -> usize {
        self.inner.dim()
    }

    fn embed_passages(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.cached(texts, false)
    }

    fn embed_query(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        Ok(self
            .cached(&[text.to_string()], true)?
            .pop()
            .unwrap_or_default())
    }

    fn token_counter(&self) -> Arc<dyn TokenCounter> {
        self.inner.token_counter()
    }

    fn weights(&self) -> Option<&str> {
        self.inner.weights()
    }

    fn text_profile(&self) -> crate::embed::TextProfile {
        self.inner.text_profile()
    }
}

impl CachedEmbedder {
    /// Vectors of `texts`, embedding (and recording) only those not cached yet. Query vectors
    /// are keyed apart from passage vectors (a model may encode them differently).
    fn cached(&self, texts: &[String], query: bool) -> Result<Vec<Vec<f32>>, EmbedError> {
        let keys: Vec<[u8; 16]> = texts
            .iter()
            .map(|t| {
                if query {
                    key(&format!("\0query\0{t}"))
                } else {
                    key(t)
                }
            })
            .collect();
        let missing: Vec<usize> = {
            let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            (0..texts.len())
                .filter(|&i| !map.contains_key(&keys[i]))
                .collect()
        };
        if !missing.is_empty() {
            let batch: Vec<String> = missing.iter().map(|&i| texts[i].clone()).collect();
            let vecs = if query {
                batch
                    .iter()
                    .map(|q| self.inner.embed_query(q))
                    .collect::<Result<Vec<_>, _>>()?
            } else {
                self.inner.embed_passages(&batch)?
            };
            let mut buf = Vec::new();
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            for (&i, v) in missing.iter().zip(vecs) {
                buf.extend_from_slice(&keys[i]);
                for x in &v {
                    buf.extend_from_slice(&x.to_le_bytes());
                }
                map.insert(keys[i], v);
            }
            let written = std::fs::OpenOptions::new()
                .append(true)
                .open(&self.path)
                .and_then(|mut f| f.write_all(&buf));
            if let Err(e) = written {
                // The cache is an optimisation: a failed write costs a re-embedding later.
                eprintln!("embedding cache {}: {e}", self.path.display());
            }
        }
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        Ok(keys
            .iter()
            .map(|k| map.get(k).cloned().unwrap_or_default())
            .collect())
    }
}
