//! Raw config as written: serde structs with defaults, deserialized section by section so that
//! one section's error does not hide another's.

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::ConfigIssue;

const SECTIONS: &[&str] = &[
    "version",
    "server",
    "index",
    "embedding",
    "chunking",
    "retrieval",
    "answer",
    "llm",
    "conversations",
    "quotas",
    "auth",
    "identities",
    "groups",
    "identity_sources",
    "api_keys",
    "guardrails",
    "audit",
    "connectors",
];

#[derive(Debug, Default)]
pub struct RawConfig {
    pub version: i64,
    pub server: RawServer,
    pub index: RawIndex,
    pub embedding: RawEmbedding,
    pub chunking: RawChunking,
    pub retrieval: RawRetrieval,
    pub answer: RawAnswer,
    pub llm: Option<RawLlm>,
    pub conversations: RawConversations,
    pub quotas: RawQuotas,
    pub auth: RawAuth,
    pub identities: Vec<RawIdentity>,
    pub groups: Vec<RawGroup>,
    pub identity_sources: Vec<RawIdentitySource>,
    pub api_keys: Vec<RawApiKey>,
    pub guardrails: RawGuardrails,
    pub audit: RawAudit,
    /// `[[connectors]]` tables, validated by their connector's factory.
    pub connectors: Vec<toml::Table>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub listen: String,
    pub metrics_listen: Option<String>,
    pub metrics_public: bool,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub tls_client_ca: Option<String>,
    pub tls_client_crl: Option<String>,
    pub tls_client_auth: String,
    pub max_concurrent_requests: usize,
    pub max_concurrent_per_caller: usize,
    pub max_concurrent_per_service: usize,
    pub max_unauthenticated_streams: usize,
    pub max_unauthenticated_streams_per_peer: usize,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7878".into(),
            metrics_listen: None,
            metrics_public: false,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tls_client_crl: None,
            tls_client_auth: "optional".into(),
            max_concurrent_requests: 64,
            max_concurrent_per_caller: 4,
            max_concurrent_per_service: 32,
            max_unauthenticated_streams: 256,
            max_unauthenticated_streams_per_peer: 32,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuth {
    pub jwks_file: Option<String>,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub jwt_user_claim: String,
    pub jwt_leeway_secs: u64,
    pub jwt_max_lifetime_secs: u64,
}

impl Default for RawAuth {
    fn default() -> Self {
        Self {
            jwks_file: None,
            jwt_issuer: String::new(),
            jwt_audience: String::new(),
            jwt_user_claim: "sub".into(),
            jwt_leeway_secs: 30,
            jwt_max_lifetime_secs: 86_400,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentitySource {
    pub format: String,
    pub path: String,
    #[serde(default)]
    pub passwd: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKey {
    pub id: String,
    pub identity: String,
    pub sha256: String,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub revoked: bool,
}

fn default_scopes() -> Vec<String> {
    vec!["query".into()]
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawGuardrails {
    pub blocked_phrases: Vec<RawBlockedPhrases>,
    pub topics: Vec<RawTopic>,
    pub injection: RawInjection,
    pub pii: RawPii,
    pub grounding: RawGrounding,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBlockedPhrases {
    pub phrases: Vec<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub applies_to: Vec<String>,
    #[serde(default)]
    pub exempt: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTopic {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub examples: Vec<String>,
    #[serde(default = "default_topic_threshold")]
    pub threshold: f32,
    #[serde(default = "default_topic_action")]
    pub action: String,
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub applies_to: Vec<String>,
    #[serde(default)]
    pub exempt: Vec<String>,
}

fn default_topic_threshold() -> f32 {
    0.45
}
fn default_topic_action() -> String {
    "block".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawInjection {
    pub enabled: bool,
    pub screen_question: bool,
    pub screen_passages: bool,
    pub message: Option<String>,
    pub exempt: Vec<String>,
}

impl Default for RawInjection {
    fn default() -> Self {
        Self {
            enabled: true,
            screen_question: true,
            screen_passages: true,
            message: None,
            exempt: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPii {
    pub enabled: bool,
    pub entities: Vec<String>,
    pub exempt: Vec<String>,
}

impl Default for RawPii {
    fn default() -> Self {
        Self {
            enabled: true,
            entities: crate::guardrail::pii::Entity::ALL
                .iter()
                .map(|e| e.name().to_string())
                .collect(),
            exempt: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawGrounding {
    pub enabled: bool,
    pub min_support: f32,
}

impl Default for RawGrounding {
    fn default() -> Self {
        Self {
            enabled: true,
            min_support: 0.6,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAudit {
    pub path: Option<String>,
    pub include_question: bool,
    pub max_bytes: u64,
    pub keep: usize,
}

impl Default for RawAudit {
    fn default() -> Self {
        Self {
            path: None,
            include_question: false,
            max_bytes: 64 * 1024 * 1024,
            keep: 5,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawIndex {
    pub data_dir: String,
    pub commit_interval_ms: u64,
    pub queue_capacity: usize,
    /// Content bytes the changes waiting for the pipeline, and the batch it works on, may hold
    /// all together (`crate::ingest::QueueBytes`).
    pub queue_bytes: u64,
    /// `embedded` (tantivy in `data_dir`) or `milvus` (`[index.milvus]`).
    pub backend: String,
    /// `all`, `query` (serve only: no connectors, no pipeline) or `ingest`.
    pub role: String,
    pub milvus: Option<RawMilvus>,
}

impl Default for RawIndex {
    fn default() -> Self {
        Self {
            data_dir: "data".into(),
            commit_interval_ms: 1000,
            queue_capacity: 256,
            queue_bytes: 256 * 1024 * 1024,
            backend: "embedded".into(),
            role: "all".into(),
            milvus: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMilvus {
    pub uri: String,
    pub collection: String,
    pub database: String,
    /// `user:password` or an API key (use `${VAR}`; a Kubernetes Secret as an env variable).
    pub token: Option<String>,
    /// Send `token` over `http://` to another machine (a private network).
    pub allow_plain_http: bool,
    pub ca_file: Option<String>,
    pub server_name: Option<String>,
    pub timeout_ms: u64,
}

impl Default for RawMilvus {
    fn default() -> Self {
        Self {
            uri: String::new(),
            collection: "docent_chunks".into(),
            database: String::new(),
            token: None,
            allow_plain_http: false,
            ca_file: None,
            server_name: None,
            timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawEmbedding {
    /// A model Docent knows by name (`crate::embed::KNOWN_MODELS`): sets model_id and the
    /// prefixes. Excludes `model_id`.
    pub model: Option<String>,
    /// Any other model, by id (default all-MiniLM-L6-v2 when neither is given).
    pub model_id: Option<String>,
    pub query_prefix: Option<String>,
    pub passage_prefix: Option<String>,
    pub pooling: Option<String>,
    pub model_dir: String,
    pub onnxruntime_lib: String,
    pub max_length: usize,
    pub batch_size: usize,
    pub threads: usize,
}

impl Default for RawEmbedding {
    fn default() -> Self {
        Self {
            model: None,
            model_id: None,
            query_prefix: None,
            passage_prefix: None,
            pooling: None,
            model_dir: String::new(),
            onnxruntime_lib: String::new(),
            max_length: 256,
            batch_size: 32,
            threads: 2,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawChunking {
    pub max_tokens: usize,
    pub overlap_tokens: usize,
}

impl Default for RawChunking {
    fn default() -> Self {
        Self {
            max_tokens: 200,
            overlap_tokens: 32,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRetrieval {
    pub fusion: String,
    pub rrf_k: f32,
    pub convex_alpha: f32,
    pub candidates: usize,
    pub title_boost: f32,
    pub heading_boost: f32,
    pub convex_normalization: String,
    pub dense_feedback: f32,
    pub dense_feedback_chunks: usize,
    /// The second ranking stage (hybrid mode) and how many fused documents it reorders.
    pub rerank: bool,
    pub rerank_depth: usize,
    /// BM25 ranks documents by whole-document statistics (where the index has them).
    pub document_bm25: bool,
}

impl Default for RawRetrieval {
    fn default() -> Self {
        Self {
            fusion: "convex".into(),
            rrf_k: 60.0,
            convex_alpha: 0.4,
            candidates: 300,
            title_boost: 0.15,
            heading_boost: 0.3,
            convex_normalization: "std".into(),
            dense_feedback: 0.0,
            dense_feedback_chunks: 3,
            rerank: true,
            rerank_depth: 20,
            document_bm25: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAnswer {
    /// Evidence threshold on the second stage's calibrated relevance (default: the shipped
    /// model's threshold, chosen on labelled data).
    pub min_relevance: Option<f32>,
    /// A further answer sentence must score at least this share of the best one's support.
    pub support_ratio: f32,
    /// The same share for a sentence from another document than the best sentence's.
    pub other_document_ratio: f32,
    /// Evidence threshold on the query–passage cosine, used only where the second stage is off.
    pub min_similarity: f32,
    pub max_sentences: usize,
    pub max_passages: usize,
    /// Passages of one document the answerer may draw from.
    pub passages_per_document: usize,
    /// The sentence check: the cosine one of the answer's best sentences must reach with the
    /// question, else "not found" (default: the value chosen for the embedding model on labelled data;
    /// -1 turns it off).
    pub min_sentence_similarity: Option<f32>,
    /// How many of the answer's best sentences the sentence check compares (one close enough
    /// is enough; each costs an embedding). Default: the number chosen with the threshold.
    pub check_sentences: Option<usize>,
    /// "extractive", "generative" or "auto".
    pub mode: String,
    /// "enterprise_only" or "allow_general_knowledge".
    pub response_scope: String,
    /// Group id → response scope.
    pub response_scope_groups: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLlm {
    pub base_url: String,
    pub model: String,
    pub api_key: Option<String>,
    /// Send `api_key` over `http://` to another machine (a private network).
    pub allow_plain_http: bool,
    pub ca_file: Option<String>,
    pub connect_timeout_ms: u64,
    pub first_token_timeout_ms: u64,
    pub total_timeout_ms: u64,
    pub max_tokens: u32,
    pub temperature: f32,
    pub context_tokens: usize,
    pub max_concurrent: usize,
    pub stream: bool,
    pub price_prompt_per_1k: f64,
    pub price_completion_per_1k: f64,
    pub currency: String,
}

impl Default for RawLlm {
    fn default() -> Self {
        let d = crate::assistant::LlmConfig::default();
        Self {
            base_url: String::new(),
            model: String::new(),
            api_key: None,
            allow_plain_http: false,
            ca_file: None,
            connect_timeout_ms: d.connect_timeout.as_millis() as u64,
            first_token_timeout_ms: d.first_token_timeout.as_millis() as u64,
            total_timeout_ms: d.total_timeout.as_millis() as u64,
            max_tokens: d.max_tokens,
            temperature: d.temperature,
            context_tokens: d.context_tokens,
            max_concurrent: d.max_concurrent,
            stream: d.stream,
            price_prompt_per_1k: 0.0,
            price_completion_per_1k: 0.0,
            currency: d.currency,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConversations {
    pub enabled: bool,
    pub retention_days: u32,
    /// "heuristic" or "llm".
    pub rewrite: String,
}

impl Default for RawConversations {
    fn default() -> Self {
        Self {
            enabled: true,
            retention_days: 90,
            rewrite: "heuristic".into(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawQuotas {
    pub daily_tokens_per_identity: Option<u64>,
    /// Group id → daily tokens shared by its members.
    pub daily_tokens_per_group: std::collections::BTreeMap<String, u64>,
}

impl Default for RawAnswer {
    fn default() -> Self {
        Self {
            min_relevance: None,
            support_ratio: crate::answer::DEFAULT_SUPPORT_RATIO,
            other_document_ratio: crate::answer::DEFAULT_OTHER_DOCUMENT_RATIO,
            min_similarity: 0.4,
            max_sentences: 3,
            max_passages: 5,
            passages_per_document: crate::answer::DEFAULT_PASSAGES_PER_DOCUMENT,
            min_sentence_similarity: None,
            check_sentences: None,
            mode: "extractive".into(),
            response_scope: "enterprise_only".into(),
            response_scope_groups: Default::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    pub id: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub token_sha256: Option<String>,
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub act_as: bool,
    /// With `act_as`: whom it may act for (`group:<id>`, `user:<id>`); empty: anyone.
    #[serde(default)]
    pub act_for: Vec<String>,
    #[serde(default)]
    pub ingest: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGroup {
    pub id: String,
    #[serde(default)]
    pub member_of: Vec<String>,
}

fn issue(path: impl Into<String>, message: impl Into<String>) -> ConfigIssue {
    ConfigIssue {
        path: path.into(),
        message: message.into(),
    }
}

/// Replaces `${VAR}` in every string; a missing variable is an issue at that string's path.
fn interpolate(v: &mut toml::Value, path: &str, issues: &mut Vec<ConfigIssue>) {
    interpolate_with(v, path, issues, &|name| std::env::var(name).ok());
}

/// [`interpolate`] with the variables `env` gives.
fn interpolate_with(
    v: &mut toml::Value,
    path: &str,
    issues: &mut Vec<ConfigIssue>,
    env: &dyn Fn(&str) -> Option<String>,
) {
    match v {
        toml::Value::String(s) => {
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(i) = rest.find("${") {
                out.push_str(&rest[..i]);
                let after = &rest[i + 2..];
                let Some(end) = after.find('}') else {
                    issues.push(issue(path, "unterminated ${ in string"));
                    return;
                };
                let name = &after[..end];
                match env(name).ok_or(()) {
                    // A secret read from a file often ends with a newline: it would fail later,
                    // at every request, far from here (a review). The value itself is never
                    // quoted. (An empty one is allowed: it means "none" for an optional secret,
                    // such as a Milvus token or an LLM key.)
                    Ok(val) if val.chars().any(char::is_control) => issues.push(issue(
                        path,
                        format!(
                            "environment variable {name} holds a control character (a line \
                             end at the end of a secret file?)"
                        ),
                    )),
                    Ok(val) => out.push_str(&val),
                    Err(_) => issues.push(issue(
                        path,
                        format!("environment variable {name} is not set"),
                    )),
                }
                rest = &after[end + 1..];
            }
            out.push_str(rest);
            *s = out;
        }
        toml::Value::Array(a) => {
            for (i, x) in a.iter_mut().enumerate() {
                interpolate_with(x, &format!("{path}[{i}]"), issues, env);
            }
        }
        toml::Value::Table(t) => {
            for (k, x) in t.iter_mut() {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                interpolate_with(x, &p, issues, env);
            }
        }
        _ => {}
    }
}

fn section<T: DeserializeOwned + Default>(
    table: &toml::Table,
    key: &str,
    issues: &mut Vec<ConfigIssue>,
) -> T {
    match table.get(key) {
        None => T::default(),
        Some(v) => v.clone().try_into().unwrap_or_else(|e: toml::de::Error| {
            issues.push(issue(key, e.message().trim().to_string()));
            T::default()
        }),
    }
}

fn list<T: DeserializeOwned>(
    table: &toml::Table,
    key: &str,
    issues: &mut Vec<ConfigIssue>,
) -> Vec<T> {
    match table.get(key) {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| match v.clone().try_into() {
                Ok(x) => Some(x),
                Err(e) => {
                    let e: toml::de::Error = e;
                    issues.push(issue(format!("{key}[{i}]"), e.message().trim().to_string()));
                    None
                }
            })
            .collect(),
        Some(_) => {
            issues.push(issue(key, "must be an array of tables ([[...]])"));
            Vec::new()
        }
    }
}

/// The file as a table with `${VAR}` replaced (a variable that is not set by nothing),
/// validating nothing; `None` when it is not TOML.
pub(super) fn lenient_table(text: &str) -> Option<toml::Table> {
    let table: toml::Table = text.parse().ok()?;
    let mut root = toml::Value::Table(table);
    interpolate(&mut root, "", &mut Vec::new());
    match root {
        toml::Value::Table(t) => Some(t),
        _ => None,
    }
}

/// The raw config (sections with errors replaced by defaults) and the issues found; only a TOML
/// syntax error stops here.
pub fn parse(text: &str) -> Result<(RawConfig, Vec<ConfigIssue>), Vec<ConfigIssue>> {
    let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let msg = match e.span() {
            Some(span) => {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                format!("line {line}: {}", e.message().trim())
            }
            None => e.message().trim().to_string(),
        };
        vec![issue("", msg)]
    })?;
    let mut issues = Vec::new();
    for k in table.keys() {
        if !SECTIONS.contains(&k.as_str()) {
            issues.push(issue(
                k.clone(),
                format!("unknown key; expected one of: {}", SECTIONS.join(", ")),
            ));
        }
    }
    let mut root = toml::Value::Table(std::mem::take(&mut table));
    interpolate(&mut root, "", &mut issues);
    let toml::Value::Table(table) = root else {
        unreachable!("root stays a table")
    };
    let version = match table.get("version") {
        Some(toml::Value::Integer(v)) => *v,
        Some(_) => {
            issues.push(issue("version", "must be an integer"));
            0
        }
        None => {
            issues.push(issue("version", "missing; this build reads version = 1"));
            0
        }
    };
    let raw = RawConfig {
        version,
        server: section(&table, "server", &mut issues),
        index: section(&table, "index", &mut issues),
        embedding: section(&table, "embedding", &mut issues),
        chunking: section(&table, "chunking", &mut issues),
        retrieval: section(&table, "retrieval", &mut issues),
        answer: section(&table, "answer", &mut issues),
        llm: table
            .contains_key("llm")
            .then(|| section(&table, "llm", &mut issues)),
        conversations: section(&table, "conversations", &mut issues),
        quotas: section(&table, "quotas", &mut issues),
        auth: section(&table, "auth", &mut issues),
        identities: list(&table, "identities", &mut issues),
        groups: list(&table, "groups", &mut issues),
        identity_sources: list(&table, "identity_sources", &mut issues),
        api_keys: list(&table, "api_keys", &mut issues),
        guardrails: section(&table, "guardrails", &mut issues),
        audit: section(&table, "audit", &mut issues),
        connectors: list(&table, "connectors", &mut issues),
    };
    Ok((raw, issues))
}

/// Shows no secret (`api_key`).
impl std::fmt::Debug for RawLlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawLlm")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// Shows no secret (`token`).
impl std::fmt::Debug for RawMilvus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawMilvus")
            .field("uri", &self.uri)
            .field("collection", &self.collection)
            .field("database", &self.database)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A variable that ends with a secret file's newline is an error naming the variable,
    /// never its value (a review: it failed later, at every request); an empty one is "none".
    #[test]
    fn a_newline_ended_variable_is_an_error_an_empty_one_is_none() {
        let env = |name: &str| match name {
            "EMPTY" => Some(String::new()),
            "NL" => Some("s3cret\n".into()),
            "OK" => Some("s3cret".into()),
            _ => None,
        };
        for (var, says) in [("NL", "control character"), ("UNSET", "is not set")] {
            let mut v = toml::Value::String(format!("${{{var}}}"));
            let mut issues = Vec::new();
            interpolate_with(&mut v, "llm.api_key", &mut issues, &env);
            assert_eq!(issues.len(), 1, "{var}");
            assert!(issues[0].message.contains(says), "{:?}", issues[0]);
            assert!(!issues[0].message.contains("s3cret"), "{:?}", issues[0]);
        }
        let mut v = toml::Value::String("Bearer ${OK}".into());
        let mut issues = Vec::new();
        interpolate_with(&mut v, "llm.api_key", &mut issues, &env);
        assert!(issues.is_empty());
        assert_eq!(v.as_str(), Some("Bearer s3cret"));
        // Empty: "none", as before (a Milvus without authentication, a local LLM).
        let mut v = toml::Value::String("${EMPTY}".into());
        interpolate_with(&mut v, "index.milvus.token", &mut issues, &env);
        assert!(issues.is_empty());
        assert_eq!(v.as_str(), Some(""));
    }
}
