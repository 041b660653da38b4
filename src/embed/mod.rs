//! Embeddings: text → unit-length dense vectors.
//!
//! The production embedder is fastembed over ONNX Runtime with a model loaded from local files
//! (the runtime library and the model directory are named by the config; nothing is downloaded).
//! Embedding is CPU work: callers run it off the async runtime. Two sessions are kept, one for
//! ingestion batches and one for queries, so a crawl never makes a question wait for a batch.
//!
//! Some models expect the text to say what it is: multilingual-e5 was trained on `query: …` and
//! `passage: …`. The embedder adds the configured [`TextProfile`] prefixes itself, so callers
//! always pass bare text (chunk hashes, caches and token counts stay about the text).
//!
//! Invariants: vectors are L2-normalised, so dot product is cosine similarity; the model id,
//! dimension and text profile together decide the vectors, and the index records all three.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::chunk::TokenCounter;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("cannot load ONNX Runtime from {path}: {message}")]
    Runtime { path: PathBuf, message: String },
    #[error("cannot read model file {path}: {source}")]
    ModelFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot initialise model from {dir}: {message}")]
    Model { dir: PathBuf, message: String },
    #[error("embedding failed: {0}")]
    Inference(String),
    /// The request gave up (deadline passed, client gone) before the model ran.
    #[error("cancelled before embedding")]
    Cancelled,
}

/// Turns text into vectors. Implementations are thread-safe and blocking.
pub trait Embedder: Send + Sync {
    /// Identifies the model; the index refuses to serve vectors from another model.
    fn model_id(&self) -> &str;
    fn dim(&self) -> usize;
    /// A digest of the model's files, when it has files (see
    /// [`crate::index::ModelSignature::weights`]).
    fn weights(&self) -> Option<&str> {
        None
    }
    /// Embeds passages in batches.
    fn embed_passages(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError>;
    fn embed_query(&self, text: &str) -> Result<Vec<f32>, EmbedError>;
    /// [`Self::embed_query`] for a request that may give up: `cancelled` is asked once the
    /// model is free, so requests that queued behind others and were abandoned meanwhile do not
    /// run the model at all.
    fn embed_query_until(
        &self,
        text: &str,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Vec<f32>, EmbedError> {
        if cancelled() {
            return Err(EmbedError::Cancelled);
        }
        self.embed_query(text)
    }
    /// One passage-side text (with the passage prefix) embedded at question time, e.g. one of
    /// the answer's sentences for the sentence check: on the query path's sessions, never
    /// queued behind an ingestion batch.
    fn embed_passage_until(
        &self,
        text: &str,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Vec<f32>, EmbedError> {
        if cancelled() {
            return Err(EmbedError::Cancelled);
        }
        self.embed_passages(&[text.to_string()])?
            .pop()
            .ok_or_else(|| EmbedError::Inference("no vector returned".into()))
    }
    /// Counts tokens the way the model does, for chunking.
    fn token_counter(&self) -> Arc<dyn TokenCounter>;
    /// The prefixes and pooling this embedder applies. Recorded by the index with the model
    /// id: the same model with other prefixes makes other vectors.
    fn text_profile(&self) -> TextProfile {
        TextProfile::default()
    }
}

/// How token vectors become one vector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The mean over the tokens (sentence-transformers models, e5).
    #[default]
    Mean,
    /// The first token's vector.
    Cls,
}

impl Pooling {
    pub fn name(self) -> &'static str {
        match self {
            Self::Mean => "mean",
            Self::Cls => "cls",
        }
    }
}

/// What the embedder adds around the text and how it pools: part of a model's identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextProfile {
    /// Put before every query (e5: `"query: "`).
    pub query_prefix: String,
    /// Put before every passage (e5: `"passage: "`).
    pub passage_prefix: String,
    pub pooling: Pooling,
}

impl TextProfile {
    /// The text the model sees for a query.
    pub fn query<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if self.query_prefix.is_empty() {
            Cow::Borrowed(text)
        } else {
            Cow::Owned(format!("{}{text}", self.query_prefix))
        }
    }

    /// The texts the model sees for passages.
    pub fn passages<'a>(&self, texts: &'a [String]) -> Cow<'a, [String]> {
        if self.passage_prefix.is_empty() {
            Cow::Borrowed(texts)
        } else {
            Cow::Owned(
                texts
                    .iter()
                    .map(|t| format!("{}{t}", self.passage_prefix))
                    .collect(),
            )
        }
    }
}

impl std::fmt::Display for TextProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "query prefix {:?}, passage prefix {:?}, {} pooling",
            self.query_prefix,
            self.passage_prefix,
            self.pooling.name()
        )
    }
}

/// A model Docent knows by name (`[embedding] model = "…"`): its id and how it must be used.
#[derive(Debug, Clone, Copy)]
pub struct KnownModel {
    /// The name in the config, also the folder `scripts/setup-models.sh` fetches it into.
    pub name: &'static str,
    pub model_id: &'static str,
    pub query_prefix: &'static str,
    pub passage_prefix: &'static str,
    /// Tokens in its tokenizer, checked at load: a `model_dir` holding another model's files
    /// is refused instead of embedding with the wrong prefixes.
    pub vocab_size: usize,
    /// The longest input it was trained with.
    pub max_length: usize,
}

pub const KNOWN_MODELS: &[KnownModel] = &[
    KnownModel {
        name: "all-MiniLM-L6-v2",
        model_id: "sentence-transformers/all-MiniLM-L6-v2",
        query_prefix: "",
        passage_prefix: "",
        vocab_size: 30_522,
        max_length: 512,
    },
    KnownModel {
        name: "multilingual-e5-small",
        model_id: "intfloat/multilingual-e5-small",
        query_prefix: "query: ",
        passage_prefix: "passage: ",
        vocab_size: 250_002,
        max_length: 512,
    },
];

pub fn known_model(name: &str) -> Option<&'static KnownModel> {
    KNOWN_MODELS.iter().find(|m| m.name == name)
}

/// Where the model comes from; validated config. A model loaded from this alone gets no
/// prefixes and mean pooling; [`EmbeddingConfig`] adds the text profile.
#[derive(Debug, Clone)]
pub struct EmbedderConfig {
    pub model_id: String,
    pub model_dir: PathBuf,
    pub onnxruntime_lib: PathBuf,
    pub max_length: usize,
    pub batch_size: usize,
    /// Threads of the ingestion session; questions use this many one-thread sessions, plus one
    /// of this many threads for a question that comes alone.
    pub threads: usize,
}

/// The validated `[embedding]` section: the model files and runtime, and how text is given to
/// the model.
#[derive(Debug, Clone)]
pub struct EmbeddingConfig {
    pub model: EmbedderConfig,
    pub text: TextProfile,
    /// The tokenizer's expected vocabulary size when the model was named (`model = "…"`).
    pub expect_vocab: Option<usize>,
}

impl From<&EmbedderConfig> for EmbeddingConfig {
    fn from(model: &EmbedderConfig) -> Self {
        Self {
            model: model.clone(),
            text: TextProfile::default(),
            expect_vocab: None,
        }
    }
}

impl From<&EmbeddingConfig> for EmbeddingConfig {
    fn from(c: &EmbeddingConfig) -> Self {
        c.clone()
    }
}

pub struct FastEmbedder {
    model_id: String,
    /// [`Embedder::weights`]: sha256 of `model.onnx` and `tokenizer.json`, hex.
    weights: String,
    dim: usize,
    text: TextProfile,
    batch_size: usize,
    passages: Mutex<fastembed::TextEmbedding>,
    /// Query sessions of one thread each, one per configured thread: concurrent questions are
    /// embedded in parallel instead of queueing on one session.
    queries: Vec<Mutex<fastembed::TextEmbedding>>,
    /// A session with every configured thread, for a question embedded while no other is: a
    /// lone question (the latency case) uses all cores; under load the one-thread sessions keep
    /// the cores free of oversubscription. `None` with one thread.
    solo: Option<Mutex<fastembed::TextEmbedding>>,
    in_flight: std::sync::atomic::AtomicUsize,
    next: std::sync::atomic::AtomicUsize,
    counter: Arc<HfTokenCounter>,
    _env: ort::environment::Environment,
}

impl FastEmbedder {
    /// Loads the model: `cfg` is an [`EmbeddingConfig`] (the config's `[embedding]`), or an
    /// [`EmbedderConfig`] for a model used without prefixes.
    pub fn load(cfg: impl Into<EmbeddingConfig>) -> Result<Self, EmbedError> {
        let full: EmbeddingConfig = cfg.into();
        let cfg = &full.model;
        let env = runtime(&cfg.onnxruntime_lib)?;
        let read = |name: &str| {
            let path = cfg.model_dir.join(name);
            std::fs::read(&path).map_err(|source| EmbedError::ModelFile { path, source })
        };
        let onnx = read("model.onnx")?;
        let tokenizer_files = fastembed::TokenizerFiles {
            tokenizer_file: read("tokenizer.json")?,
            config_file: read("config.json")?,
            special_tokens_map_file: read("special_tokens_map.json")?,
            tokenizer_config_file: read("tokenizer_config.json")?,
        };
        let counter = HfTokenCounter::new(&tokenizer_files.tokenizer_file, &cfg.model_dir)?;
        // Longer inputs than the model's position table fail in the runtime, a whole batch at a
        // time, and again at every retry (a review: `max_length` was checked only for models
        // named by `model`).
        if let Some(positions) = max_positions(&tokenizer_files.config_file)
            && cfg.max_length > positions
        {
            return Err(EmbedError::Model {
                dir: cfg.model_dir.clone(),
                message: format!(
                    "embedding.max_length is {} but the model takes at most {positions} tokens \
                     (max_position_embeddings in config.json)",
                    cfg.max_length
                ),
            });
        }
        if let Some(want) = full.expect_vocab {
            let found = counter.0.get_vocab_size(true);
            if found != want {
                return Err(EmbedError::Model {
                    dir: cfg.model_dir.clone(),
                    message: format!(
                        "its tokenizer has {found} tokens but {} has {want}: model_dir holds another model's files",
                        cfg.model_id
                    ),
                });
            }
        }
        let pooling = match full.text.pooling {
            Pooling::Mean => fastembed::Pooling::Mean,
            Pooling::Cls => fastembed::Pooling::Cls,
        };
        let build = |threads: usize| {
            let model =
                fastembed::UserDefinedEmbeddingModel::new(onnx.clone(), tokenizer_files.clone())
                    .with_pooling(pooling.clone());
            // Without the arena, memory returns to the system after a large batch instead of
            // staying reserved for the life of the session.
            let cpu = ort::ep::CPU::default().with_arena_allocator(true).build();
            let opts = fastembed::InitOptionsUserDefined::new()
                .with_environment(env.clone())
                .with_execution_providers(vec![cpu])
                .with_max_length(cfg.max_length)
                .with_intra_threads(threads.max(1))
                // Pool threads spin through a run (fast hand-offs between operators) but stop
                // when it returns: left spinning, they held a core for milliseconds after each
                // query embedding, delaying the search that uses the vector (benches/RESULTS.md,
                // session 14: hybrid Search p50 −1.2 ms over gRPC).
                .with_session_config("session.force_spinning_stop", "1");
            fastembed::TextEmbedding::try_new_from_user_defined(model, opts).map_err(|e| {
                EmbedError::Model {
                    dir: cfg.model_dir.clone(),
                    message: e.to_string(),
                }
            })
        };
        let mut passages = build(cfg.threads)?;
        let queries = (0..cfg.threads.max(1))
            .map(|_| build(1).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        let solo = if cfg.threads > 1 {
            Some(Mutex::new(build(cfg.threads)?))
        } else {
            None
        };
        let probe = passages
            .embed(["dimension probe"], None)
            .map_err(|e| EmbedError::Inference(e.to_string()))?;
        let dim = probe.first().map(Vec::len).unwrap_or(0);
        if dim == 0 {
            return Err(EmbedError::Model {
                dir: cfg.model_dir.clone(),
                message: "model produced an empty vector".into(),
            });
        }
        let weights = {
            use sha2::{Digest, Sha256};
            let mut h = Sha256::new();
            for part in [&onnx, &tokenizer_files.tokenizer_file] {
                h.update((part.len() as u64).to_le_bytes());
                h.update(part);
            }
            hex::encode(h.finalize())
        };
        Ok(Self {
            model_id: cfg.model_id.clone(),
            weights,
            dim,
            text: full.text.clone(),
            batch_size: cfg.batch_size.max(1),
            passages: Mutex::new(passages),
            queries,
            solo,
            in_flight: 0.into(),
            next: 0.into(),
            counter: Arc::new(counter),
            _env: env,
        })
    }
}

/// ONNX Runtime is loaded once per process; later loads reuse it (a process cannot hold two
/// runtimes).
fn runtime(lib: &Path) -> Result<ort::environment::Environment, EmbedError> {
    static ENV: Mutex<Option<ort::environment::Environment>> = Mutex::new(None);
    let mut guard = ENV.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(env) = guard.as_ref() {
        return Ok(env.clone());
    }
    let err = |e: &dyn std::fmt::Display| EmbedError::Runtime {
        path: lib.to_path_buf(),
        message: e.to_string(),
    };
    if !lib.is_file() {
        return Err(err(&"file not found (run scripts/setup-models.sh)"));
    }
    let env = ort::init_from(lib)
        .map_err(|e| err(&e))?
        .with_name("docent")
        .build()
        .map_err(|e| err(&e))?;
    *guard = Some(env.clone());
    Ok(env)
}

fn run(
    model: &Mutex<fastembed::TextEmbedding>,
    texts: &[&str],
    batch: usize,
    cancelled: &dyn Fn() -> bool,
) -> Result<Vec<Vec<f32>>, EmbedError> {
    run_on(
        model.lock().unwrap_or_else(|e| e.into_inner()),
        texts,
        batch,
        cancelled,
    )
}

fn run_on(
    mut m: std::sync::MutexGuard<'_, fastembed::TextEmbedding>,
    texts: &[&str],
    batch: usize,
    cancelled: &dyn Fn() -> bool,
) -> Result<Vec<Vec<f32>>, EmbedError> {
    if cancelled() {
        return Err(EmbedError::Cancelled);
    }
    let mut out = m
        .embed(texts, Some(batch))
        .map_err(|e| EmbedError::Inference(e.to_string()))?;
    for v in &mut out {
        normalize(v);
    }
    Ok(out)
}

impl Embedder for FastEmbedder {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn weights(&self) -> Option<&str> {
        Some(&self.weights)
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn embed_passages(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let texts = self.text.passages(texts);
        // Batches are padded to their longest text: embedding in length order wastes less.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let refs: Vec<&str> = order.iter().map(|&i| texts[i].as_str()).collect();
        let sorted = run(&self.passages, &refs, self.batch_size, &|| false)?;
        // Every text its vector, of the model's size (a review: a short or odd answer from the
        // runtime left empty vectors that the count check downstream could not see).
        if sorted.len() != texts.len() || sorted.iter().any(|v| v.len() != self.dim) {
            return Err(EmbedError::Inference(format!(
                "the model returned {} vectors for {} texts, or vectors of another size than {}",
                sorted.len(),
                texts.len(),
                self.dim
            )));
        }
        let mut out = vec![Vec::new(); texts.len()];
        for (v, &i) in sorted.into_iter().zip(&order) {
            out[i] = v;
        }
        Ok(out)
    }

    fn embed_query(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        self.embed_query_until(text, &|| false)
    }

    fn embed_query_until(
        &self,
        text: &str,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Vec<f32>, EmbedError> {
        self.embed_one(&self.text.query(text), cancelled)
    }

    fn embed_passage_until(
        &self,
        text: &str,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Vec<f32>, EmbedError> {
        let text = [text.to_string()];
        let prefixed = self.text.passages(&text);
        self.embed_one(&prefixed[0], cancelled)
    }

    fn token_counter(&self) -> Arc<dyn TokenCounter> {
        self.counter.clone()
    }

    fn text_profile(&self) -> TextProfile {
        self.text.clone()
    }
}

impl FastEmbedder {
    /// One text, as given (prefixed), on a query-path session.
    fn embed_one(&self, text: &str, cancelled: &dyn Fn() -> bool) -> Result<Vec<f32>, EmbedError> {
        use std::sync::atomic::Ordering::{Relaxed, SeqCst};
        struct InFlight<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for InFlight<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, SeqCst);
            }
        }
        let alone = self.in_flight.fetch_add(1, SeqCst) == 0;
        let _in_flight = InFlight(&self.in_flight);
        let input: [&str; 1] = [text];
        let session = alone
            .then(|| self.solo.as_ref().and_then(|s| s.try_lock().ok()))
            .flatten()
            .or_else(|| self.queries.iter().find_map(|q| q.try_lock().ok()));
        let out = match session {
            Some(m) => run_on(m, &input, 1, cancelled)?,
            // Every session busy: wait on one, spreading the waiters.
            None => {
                let i = self.next.fetch_add(1, Relaxed) % self.queries.len();
                run(&self.queries[i], &input, 1, cancelled)?
            }
        };
        out.into_iter()
            .next()
            .filter(|v| v.len() == self.dim)
            .ok_or_else(|| EmbedError::Inference("no vector of the model's size returned".into()))
    }
}

#[cfg(test)]
#[test]
fn the_longest_input_is_read_from_the_model_s_config() {
    let at = |j: &str| max_positions(j.as_bytes());
    assert_eq!(
        at(r#"{"model_type":"bert","max_position_embeddings":512}"#),
        Some(512)
    );
    assert_eq!(
        at(r#"{"model_type":"xlm-roberta","max_position_embeddings":514}"#),
        Some(512)
    );
    assert_eq!(at(r#"{"model_type":"bert"}"#), None);
    assert_eq!(at("not json"), None);
}

/// The longest input a model's `config.json` says it takes (`max_position_embeddings`, less the
/// two positions RoBERTa-family and MPNet models reserve, told by their `model_type`).
fn max_positions(config_json: &[u8]) -> Option<usize> {
    let v: serde_json::Value = serde_json::from_slice(config_json).ok()?;
    let positions = usize::try_from(v.get("max_position_embeddings")?.as_u64()?).ok()?;
    let reserved = match v.get("model_type").and_then(serde_json::Value::as_str) {
        Some("roberta" | "xlm-roberta" | "camembert" | "mpnet") => 2,
        _ => 0,
    };
    Some(positions.saturating_sub(reserved))
}

/// Token counts from the model's own tokenizer, without truncation or special tokens.
pub struct HfTokenCounter(tokenizers::Tokenizer);

impl HfTokenCounter {
    fn new(tokenizer_json: &[u8], dir: &Path) -> Result<Self, EmbedError> {
        let mut t =
            tokenizers::Tokenizer::from_bytes(tokenizer_json).map_err(|e| EmbedError::Model {
                dir: dir.to_path_buf(),
                message: format!("tokenizer.json: {e}"),
            })?;
        t.with_truncation(None).map_err(|e| EmbedError::Model {
            dir: dir.to_path_buf(),
            message: format!("tokenizer.json: {e}"),
        })?;
        t.with_padding(None);
        Ok(Self(t))
    }
}

impl TokenCounter for HfTokenCounter {
    fn count(&self, s: &str) -> usize {
        self.0
            .encode(s, false)
            .map(|e| e.len())
            // A string the tokenizer rejects is still bounded: fall back to a generous estimate.
            .unwrap_or_else(|_| s.len() / 2 + 1)
    }
}

pub fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        for x in v {
            *x /= n;
        }
    }
}

/// Dot product with eight independent accumulators, so the compiler can vectorize it (a plain
/// `sum()` is a sequential dependency chain).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod dot_tests {
    #[test]
    fn dot_matches_naive() {
        for n in [0, 1, 7, 8, 9, 384, 385] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((super::dot(&a, &b) - naive).abs() < 1e-4, "n={n}");
        }
    }
}

/// A deterministic bag-of-words embedder for unit tests only: never used by the daemon.
#[cfg(test)]
pub mod test_embedder {
    use super::*;
    use crate::chunk::WordCounter;

    pub struct BagOfWords;

    impl Embedder for BagOfWords {
        fn model_id(&self) -> &str {
            "test-bag-of-words"
        }
        fn dim(&self) -> usize {
            64
        }
        fn embed_passages(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
            Ok(texts.iter().map(|t| self.embed_query(t).unwrap()).collect())
        }
        fn embed_query(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
            let mut v = vec![0.0f32; 64];
            for w in text
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
            {
                let h = w
                    .to_lowercase()
                    .bytes()
                    .fold(5381u32, |h, b| h.wrapping_mul(33) ^ b as u32);
                v[(h % 64) as usize] += 1.0;
            }
            v[0] += 0.01;
            normalize(&mut v);
            Ok(v)
        }
        fn token_counter(&self) -> Arc<dyn TokenCounter> {
            Arc::new(WordCounter)
        }
    }

    /// [`BagOfWords`] that embeds at most `budget` passages (then fails, as a run stopped by
    /// an interruption would), and counts what it embedded.
    pub struct Budgeted {
        budget: usize,
        embedded: std::sync::atomic::AtomicUsize,
    }

    impl Budgeted {
        pub fn new(budget: usize) -> Self {
            Self {
                budget,
                embedded: Default::default(),
            }
        }
        pub fn embedded(&self) -> usize {
            self.embedded.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    impl Embedder for Budgeted {
        fn model_id(&self) -> &str {
            BagOfWords.model_id()
        }
        fn dim(&self) -> usize {
            BagOfWords.dim()
        }
        fn embed_passages(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
            if self.embedded() + texts.len() > self.budget {
                return Err(EmbedError::Inference("interrupted (test)".into()));
            }
            self.embedded
                .fetch_add(texts.len(), std::sync::atomic::Ordering::SeqCst);
            BagOfWords.embed_passages(texts)
        }
        fn embed_query(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
            BagOfWords.embed_query(text)
        }
        fn token_counter(&self) -> Arc<dyn TokenCounter> {
            BagOfWords.token_counter()
        }
    }
}

#[cfg(test)]
mod profile_tests {
    use super::*;

    #[test]
    fn prefixes_are_put_before_queries_and_passages() {
        let e5 = known_model("multilingual-e5-small").unwrap();
        let p = TextProfile {
            query_prefix: e5.query_prefix.into(),
            passage_prefix: e5.passage_prefix.into(),
            pooling: Pooling::Mean,
        };
        assert_eq!(
            p.query("wie beantrage ich urlaub"),
            "query: wie beantrage ich urlaub"
        );
        let texts = vec!["Leave policy.".to_string(), "VPN setup.".to_string()];
        assert_eq!(
            p.passages(&texts).as_ref(),
            ["passage: Leave policy.", "passage: VPN setup."]
        );
        // Without prefixes the text goes through untouched (and uncopied).
        let plain = TextProfile::default();
        assert!(matches!(plain.query("q"), Cow::Borrowed("q")));
        assert!(matches!(plain.passages(&texts), Cow::Borrowed(_)));
    }

    /// An embedder that records what reaches the model, behind the same profile code the
    /// [`FastEmbedder`] runs.
    struct Recording(TextProfile, Mutex<Vec<String>>);

    impl Embedder for Recording {
        fn model_id(&self) -> &str {
            "recording"
        }
        fn dim(&self) -> usize {
            1
        }
        fn embed_passages(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
            let texts = self.0.passages(texts);
            self.1.lock().unwrap().extend(texts.iter().cloned());
            Ok(texts.iter().map(|_| vec![1.0]).collect())
        }
        fn embed_query(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
            self.1.lock().unwrap().push(self.0.query(text).into_owned());
            Ok(vec![1.0])
        }
        fn token_counter(&self) -> Arc<dyn TokenCounter> {
            Arc::new(crate::chunk::WordCounter)
        }
        fn text_profile(&self) -> TextProfile {
            self.0.clone()
        }
    }

    #[test]
    fn queries_and_passages_get_their_own_prefix() {
        let e = Recording(
            TextProfile {
                query_prefix: "query: ".into(),
                passage_prefix: "passage: ".into(),
                pooling: Pooling::Mean,
            },
            Mutex::default(),
        );
        e.embed_passages(&["a".into()]).unwrap();
        e.embed_query_until("b", &|| false).unwrap();
        assert_eq!(*e.1.lock().unwrap(), ["passage: a", "query: b"]);
        // The test embedder has no prefixes: its profile says so.
        assert_eq!(
            test_embedder::BagOfWords.text_profile(),
            TextProfile::default()
        );
    }
}

#[cfg(test)]
mod tokenizer_tests {
    use super::*;

    /// Found by a review: the model's tokenizer drops control characters (BERT's normalizer),
    /// so lines of them count as nothing, and the chunker's overlap, bounded by tokens alone,
    /// carried almost a whole chunk back for each one (a 5 MB file: millions of chunks). With
    /// the real tokenizer, the chunks of such a text hold little more than it.
    #[test]
    fn with_the_model_s_tokenizer_dropped_characters_do_not_multiply_the_text() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
        let json = std::fs::read(dir.join("tokenizer.json"))
            .expect("the model is installed (scripts/setup-models.sh)");
        let counter = HfTokenCounter::new(&json, &dir).unwrap();
        assert_eq!(
            counter.count("\u{1}"),
            0,
            "the premise: the tokenizer drops it"
        );
        let text = "\u{1}\n".repeat(20_000);
        let doc = crate::parse::parse(text.as_bytes(), None, "a.txt").unwrap();
        let cfg = crate::chunk::ChunkerConfig {
            max_tokens: 200,
            overlap_tokens: 32,
        };
        let chunks = crate::chunk::chunk(&doc, cfg, &counter);
        let bytes: usize = chunks.iter().map(|c| c.span.len()).sum();
        assert!(
            bytes <= doc.text.len() * 5 / 4 + 3200,
            "{} chunks, {bytes} bytes, from {} bytes of text",
            chunks.len(),
            doc.text.len()
        );
    }
}
