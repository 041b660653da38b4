//! Configuration: one TOML file, `version = 1`.
//!
//! Parsing happens in two steps, as in quickwit: the TOML is deserialized section by section into
//! raw structs (`deny_unknown_fields` everywhere), then validated into types that cannot hold bad
//! values. Every problem is reported with its TOML path, and all of them at once. `${VAR}` in any
//! string is replaced by the environment variable (for secrets). Relative paths are relative to
//! the config file's directory.

mod raw;
mod security;

pub use security::{Granted, GrantedIdentity, GrantedKey, granted, revoked_in_text};

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use docent_connector_api::Principal;

use crate::answer::AnswerConfig;
use crate::audit::AuditConfig;
use crate::chunk::ChunkerConfig;
use crate::embed::{EmbedderConfig, EmbeddingConfig, Pooling, TextProfile};
use crate::guardrail::GuardrailConfig;
use crate::identity::jwt::{JwtConfig, JwtVerifier};
use crate::identity::sources::{self, IdentitySource};
use crate::identity::{ApiKeySpec, GroupSpec, IdentitySpec, IdentityStore};
use crate::retrieve::{Fusion, RetrievalConfig, ScoreNorm};

/// One configuration problem and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// TOML path, e.g. `connectors[0].roots`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// All problems found in a config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub issues: Vec<ConfigIssue>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid config {} ({} problem",
            self.file.display(),
            self.issues.len()
        )?;
        if self.issues.len() != 1 {
            f.write_str("s")?;
        }
        f.write_str("):")?;
        for i in &self.issues {
            write!(f, "\n  - {i}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA bundle that client certificates must chain to (mTLS); none: no client certificates.
    pub client_ca: Option<PathBuf>,
    /// Refuse the TLS handshake without a client certificate (else a bearer token is enough).
    /// Only with `client_ca` (validated): without one no certificate is asked for.
    pub client_auth_required: bool,
    /// PEM file of certificate revocation lists for the client CA (and any intermediate CA
    /// of a client chain); read again whenever the file changes. Only with `client_ca`.
    pub client_crl: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Prometheus `/metrics` over HTTP; off when absent.
    pub metrics_listen: Option<SocketAddr>,
    pub tls: Option<TlsConfig>,
    /// Requests in flight at once, over all callers; more are refused (RESOURCE_EXHAUSTED).
    pub max_concurrent_requests: usize,
    /// Requests in flight at once per authenticated identity.
    pub max_concurrent_per_caller: usize,
    /// The same for identities with `act_as` (bridges asking for many users).
    pub max_concurrent_per_service: usize,
    /// Requests and streams open at once on the services that take no credentials (health,
    /// reflection), over all peers: a health `Watch` stays open as long as its peer keeps it.
    pub max_unauthenticated_streams: usize,
    /// The part of them one peer address may hold (an IPv6 peer: its /64), so one peer cannot
    /// take every place. Behind a proxy or load balancer every client is that one peer.
    pub max_unauthenticated_streams_per_peer: usize,
}

#[derive(Debug, Clone)]
pub struct IndexConfig {
    /// The embedded index's directory; with Milvus, where the conversation store lives.
    pub data_dir: PathBuf,
    pub commit_interval: Duration,
    pub queue_capacity: usize,
    /// Content bytes waiting for, or in, the pipeline (see `crate::ingest::QueueBytes`).
    pub queue_bytes: u32,
    /// `None`: the embedded backend.
    pub milvus: Option<crate::index::milvus::MilvusConfig>,
    pub role: Role,
}

/// What this process does with the index (`[index] role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Connectors, ingestion and queries (one node).
    All,
    /// Queries only: no connectors, no pipeline; the Ingest API refuses. Milvus query replicas.
    Query,
    /// Connectors and ingestion; queries are served too (admins check sync status here).
    Ingest,
}

impl Role {
    /// Whether this process runs connectors and the ingest pipeline.
    pub fn ingests(self) -> bool {
        self != Role::Query
    }
}

/// One configured connector: Docent's common settings and the spec its crate validated.
#[derive(Debug, Clone)]
pub struct ConnectorConfig {
    pub id: String,
    /// The `type`, as its factory registered it.
    pub kind: &'static str,
    /// Parse limits for this connector's documents (`max_text_bytes`, `parse_timeout_secs`,
    /// `parse_memory_mib`).
    pub limits: crate::parse::ParseLimits,
    pub spec: std::sync::Arc<dyn docent_connector_api::registry::ConnectorSpec>,
}

impl ConnectorConfig {
    /// Parse limits for this connector's documents.
    pub fn limits(&self) -> crate::parse::ParseLimits {
        self.limits
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub index: IndexConfig,
    pub embedding: EmbeddingConfig,
    pub chunking: ChunkerConfig,
    pub retrieval: RetrievalConfig,
    pub answer: AnswerConfig,
    /// Answer mode, response scopes, conversations and quotas (its `answer` is `answer` above).
    pub assistant: crate::assistant::AssistantConfig,
    /// `[llm]`: an OpenAI-compatible server for generative answers.
    pub llm: Option<crate::assistant::LlmConfig>,
    /// Whether conversations, feedback and usage are stored (`[conversations] enabled`).
    pub conversations: bool,
    pub identities: Vec<IdentitySpec>,
    pub groups: Vec<GroupSpec>,
    pub identity_sources: Vec<IdentitySource>,
    pub api_keys: Vec<ApiKeySpec>,
    pub jwt: Option<JwtConfig>,
    pub guardrails: GuardrailConfig,
    pub audit: Option<AuditConfig>,
    pub connectors: Vec<ConnectorConfig>,
    /// The sections of the text this was parsed from that a reload does not apply
    /// ([`start_only_sections`]): a reload names those changed since.
    pub start_only: SectionDigests,
}

impl Config {
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: file.to_path_buf(),
            issues: vec![ConfigIssue {
                path: String::new(),
                message: format!("cannot read: {e}"),
            }],
        })?;
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, &base).map_err(|issues| ConfigError {
            file: file.to_path_buf(),
            issues,
        })
    }

    /// Parses and validates; relative paths resolve against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, Vec<ConfigIssue>> {
        let (raw, mut issues) = raw::parse(text)?;
        match validate(raw, base) {
            Ok(mut c) if issues.is_empty() => {
                c.start_only = start_only_sections(text).unwrap_or_default();
                Ok(c)
            }
            Ok(_) => Err(issues),
            Err(more) => {
                // A section that could not be read was validated as its defaults: what that
                // finds would point at settings the file does not have (found by a review: one
                // typo in [llm] also reported its base_url and model as missing).
                let unread: Vec<String> = issues
                    .iter()
                    .filter(|i| !i.path.contains(['.', '[']))
                    .map(|i| format!("{}.", i.path))
                    .collect();
                issues.extend(more.into_iter().filter(|m| {
                    !unread
                        .iter()
                        .any(|u| m.path.starts_with(u.as_str()) || m.path == u[..u.len() - 1])
                }));
                Err(issues)
            }
        }
    }

    /// The identity store: configured identities and groups, the identity source files, API
    /// keys and the JWKS. Reads the files now (start and every reload).
    pub fn identity_store(&self) -> Result<IdentityStore, String> {
        self.identity_store_with(Vec::new())
    }

    /// [`Self::identity_store`] plus identity data from elsewhere (connector-reported groups).
    pub fn identity_store_with(
        &self,
        extra: Vec<sources::Loaded>,
    ) -> Result<IdentityStore, String> {
        self.identity_store_from(&self.identity_files()?, extra)
    }

    /// What the identity store reads from files (the identity sources and the JWKS), read now.
    pub fn identity_files(&self) -> Result<IdentityFiles, String> {
        let jwt = match &self.jwt {
            Some(j) => Some(std::sync::Arc::new(JwtVerifier::load(j.clone())?)),
            None => None,
        };
        Ok(IdentityFiles {
            loaded: sources::load_all(&self.identity_sources)?,
            jwt,
        })
    }

    /// The identity store from this config, `files` read before, and `extra`, reading nothing.
    pub fn identity_store_from(
        &self,
        files: &IdentityFiles,
        extra: Vec<sources::Loaded>,
    ) -> Result<IdentityStore, String> {
        let mut loaded = files.loaded.clone();
        loaded.extend(extra);
        let (ids, groups) = sources::merge(self.identities.clone(), self.groups.clone(), loaded)
            .map_err(|c| sources::conflicts_error(&c))?;
        let mut store = IdentityStore::new(ids, groups).with_api_keys(self.api_keys.clone());
        if let Some(j) = &files.jwt {
            store = store.with_jwt(j.clone());
        }
        Ok(store)
    }
}

/// What [`Config::identity_files`] read: the identity sources and the JWT verifier.
#[derive(Clone)]
pub struct IdentityFiles {
    pub loaded: Vec<sources::Loaded>,
    pub jwt: Option<std::sync::Arc<JwtVerifier>>,
}

/// The groups a config file names that neither it nor its identity files define, most likely
/// typos: `(where, group)`. Named: a principal `group:NAME` anywhere in the file (a connector's
/// `allow` or `deny`, a guardrail's `applies_to` or `exempt`, a push source's `grantable`), and
/// the keys of `answer.response_scope_groups` and `quotas.daily_tokens_per_group`. Defined: a
/// `[[groups]]` entry or a group it belongs to, an identity's groups, and the same in the
/// identity files. Not an error: a connector may report the group's members, and a file may be
/// filled later; but a misspelt group in a deny or an `applies_to` quietly protects no one.
pub fn undefined_groups(
    text: &str,
    config: &Config,
    files: &IdentityFiles,
) -> Vec<(String, String)> {
    fn walk(v: &toml::Value, at: &str, out: &mut Vec<(String, String)>) {
        match v {
            // Only a string that is a group principal (not free text that begins so).
            toml::Value::String(s) => {
                if let Ok(Principal::Group(g)) = s.parse::<Principal>() {
                    out.push((at.to_string(), g));
                }
            }
            toml::Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    walk(v, &format!("{at}[{i}]"), out);
                }
            }
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let here = if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    };
                    walk(v, &here, out);
                }
            }
            _ => {}
        }
    }
    let Some(table) = raw::lenient_table(text) else {
        return Vec::new();
    };
    let mut named = Vec::new();
    walk(&toml::Value::Table(table.clone()), "", &mut named);
    for (section, key) in [
        ("answer", "response_scope_groups"),
        ("quotas", "daily_tokens_per_group"),
    ] {
        if let Some(t) = table
            .get(section)
            .and_then(|s| s.get(key))
            .and_then(toml::Value::as_table)
        {
            named.extend(
                t.keys()
                    .map(|g| (format!("{section}.{key}.{g}"), g.clone())),
            );
        }
    }
    let mut defined: BTreeSet<&str> = BTreeSet::new();
    let groups = config
        .groups
        .iter()
        .chain(files.loaded.iter().flat_map(|l| l.groups.iter()));
    for g in groups {
        defined.insert(&g.id);
        defined.extend(g.member_of.iter().map(String::as_str));
    }
    let identities = config.identities.iter().chain(
        files
            .loaded
            .iter()
            .flat_map(|l| l.identities.iter().map(|e| &e.spec)),
    );
    for i in identities {
        defined.extend(i.groups.iter().map(String::as_str));
    }
    named
        .into_iter()
        .filter(|(_, g)| !defined.contains(g.as_str()))
        .collect()
}

/// The sections a reload applies (`docent admin reload`, SIGHUP); every other one is read at
/// start only.
pub const RELOADED_SECTIONS: [&str; 5] = [
    "auth",
    "identities",
    "groups",
    "identity_sources",
    "api_keys",
];

/// A digest of each section of a config file that a reload does not apply (see
/// [`RELOADED_SECTIONS`]), `${VAR}` replaced, by section name; `None` when the text is not
/// TOML. Digests, not the values: the values hold the secrets, and this is kept for the life
/// of the daemon in a `Config` whose `Debug` prints it.
pub type SectionDigests = std::collections::BTreeMap<String, String>;

pub fn start_only_sections(text: &str) -> Option<SectionDigests> {
    use sha2::{Digest, Sha256};
    let t = raw::lenient_table(text)?;
    Some(
        t.iter()
            .filter(|(k, _)| !RELOADED_SECTIONS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), hex::encode(Sha256::digest(v.to_string()))))
            .collect(),
    )
}

/// The names of the sections that differ between `then` and `now` (either from
/// [`start_only_sections`]), sorted: changes a reload does not apply.
pub fn changed_sections(then: &SectionDigests, now: &SectionDigests) -> Vec<String> {
    let mut out: Vec<String> = then
        .keys()
        .chain(now.keys())
        .filter(|k| then.get(*k) != now.get(*k))
        .cloned()
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The warning for one of [`undefined_groups`].
pub fn undefined_group_warning(at: &str, group: &str) -> String {
    format!(
        "{at}: group {group:?} is defined nowhere in this config or its identity files (a typo? \
         fine if a connector reports its members)"
    )
}

/// Claims identity providers commonly let users choose or change themselves (a display name, a
/// username users may edit): naming one in `auth.jwt_user_claim` would let a user take another
/// identity's id or alias by renaming themselves.
const USER_EDITABLE_CLAIMS: [&str; 6] = [
    "preferred_username",
    "username",
    "name",
    "nickname",
    "given_name",
    "family_name",
];

/// Warnings about a valid config that `docent config check` prints and the daemon logs at
/// start: a `jwt_user_claim` users may be able to change at their IdP (session 43's note: the
/// claim was taken as the IdP gives it).
pub fn warnings(c: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(j) = &c.jwt
        && USER_EDITABLE_CLAIMS.contains(&j.user_claim.as_str())
    {
        out.push(format!(
            "auth.jwt_user_claim: {:?} is a claim many identity providers let users change; \
             unless yours does not, use `sub` (with aliases) or `email` (checked against \
             email_verified)",
            j.user_claim
        ));
    }
    // `user:` entries of `act_for` match identity ids only: an alias there names no one (the
    // service is refused for that person), and a name the config does not know is matched only
    // if an identity file gives someone that id.
    for (i, spec) in c.identities.iter().enumerate() {
        for (k, entry) in spec.act_for.iter().enumerate() {
            let Some(user) = entry.strip_prefix("user:") else {
                continue;
            };
            if c.identities.iter().any(|s| s.id == user) {
                continue;
            }
            let what = match c
                .identities
                .iter()
                .find(|s| s.aliases.iter().any(|a| a == user))
            {
                Some(owner) => format!(
                    "is an alias of identity {:?}; `user:` entries name ids, so it matches no one \
                     (write \"user:{}\")",
                    owner.id, owner.id
                ),
                None => "names no identity of the config; it matches only an id an identity \
                         file gives"
                    .to_string(),
            };
            out.push(format!("identities[{i}].act_for[{k}]: {user:?} {what}"));
        }
    }
    out
}

struct Issues(Vec<ConfigIssue>);

impl Issues {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigIssue {
            path: path.into(),
            message: message.into(),
        });
    }

    /// See [`docent_connector_api::registry::Issues::secret_over_http`].
    fn secret_over_http(&mut self, path: &str, url: &str, allow_plain_http: bool) {
        let mut theirs = docent_connector_api::registry::Issues::default();
        theirs.secret_over_http(path, &without_credentials(url), allow_plain_http);
        for i in theirs.0 {
            self.add(i.path, i.message);
        }
    }

    fn range<T: PartialOrd + fmt::Display + Copy>(&mut self, path: &str, v: T, lo: T, hi: T) -> T {
        // Written as "inside" so that NaN, which compares false with everything, is refused.
        if !(v >= lo && v <= hi) {
            self.add(path, format!("must be between {lo} and {hi}, got {v}"));
        }
        v
    }
}

/// `[[connectors]]`: Docent's common keys here, the rest by the factory of the entry's `type`
/// (see `crate::connectors`).
fn connectors(is: &mut Issues, raw: &[toml::Table], base: &Path) -> Vec<ConnectorConfig> {
    use docent_connector_api::registry::ConfigEnv;
    let registry = crate::connectors::registry();
    let mut ids = BTreeSet::new();
    let mut out = Vec::new();
    for (i, table) in raw.iter().enumerate() {
        let p = format!("connectors[{i}]");
        let mut table = table.clone();
        let mut string = |is: &mut Issues, key: &str| match table.remove(key) {
            Some(toml::Value::String(s)) => s,
            Some(_) => {
                is.add(format!("{p}.{key}"), "must be a string");
                String::new()
            }
            None => {
                is.add(format!("{p}.{key}"), "missing");
                String::new()
            }
        };
        let kind = string(is, "type");
        let id = string(is, "id");
        let mut int =
            |is: &mut Issues, key: &str, default: u64, lo: u64, hi: u64| match table.remove(key) {
                None => default,
                Some(toml::Value::Integer(v)) if v >= 0 => {
                    is.range(&format!("{p}.{key}"), v as u64, lo, hi)
                }
                Some(_) => {
                    is.add(format!("{p}.{key}"), "must be a non-negative integer");
                    default
                }
            };
        let max_file_size = int(is, "max_file_size_bytes", 50 * 1024 * 1024, 1, 1 << 40);
        let max_text_bytes = int(is, "max_text_bytes", 5 * 1024 * 1024, 1024, 1 << 32);
        let parse_timeout = Duration::from_secs(int(is, "parse_timeout_secs", 30, 1, 3600));
        // Below 1 GiB the parser's own stack (256 MiB) and code leave a PDF little room.
        let parse_memory = int(is, "parse_memory_mib", 2048, 1024, 1 << 20) << 20;
        if id.is_empty()
            || !id
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        {
            is.add(
                format!("{p}.id"),
                "must be non-empty and use only letters, digits, '-' and '_'",
            );
        }
        if !ids.insert(id.clone()) {
            is.add(format!("{p}.id"), format!("duplicate connector id {id:?}"));
        }
        let Some(factory) = registry.iter().find(|f| f.kind() == kind) else {
            if !kind.is_empty() {
                let known: Vec<&str> = registry.iter().map(|f| f.kind()).collect();
                is.add(
                    format!("{p}.type"),
                    format!(
                        "unknown connector type {kind:?}; known: {}",
                        known.join(", ")
                    ),
                );
            }
            continue;
        };
        let env = ConfigEnv {
            id: id.clone(),
            base_dir: base.to_path_buf(),
            max_document_bytes: max_file_size,
            max_text_bytes,
            parse_timeout,
            parse_memory_bytes: parse_memory,
        };
        match factory.configure(table, &env) {
            Ok(spec) => out.push(ConnectorConfig {
                id,
                kind: factory.kind(),
                limits: crate::parse::ParseLimits {
                    max_text_bytes: max_text_bytes as usize,
                    timeout: parse_timeout,
                    worker_memory: parse_memory,
                },
                spec,
            }),
            Err(issues) => {
                for e in issues {
                    let path = if e.path.is_empty() {
                        p.clone()
                    } else {
                        format!("{p}.{}", e.path)
                    };
                    is.add(path, e.message);
                }
            }
        }
    }
    out
}

/// `[answer]` modes and scopes, `[llm]`, `[conversations]` and `[quotas]`.
fn assistant_config(
    is: &mut Issues,
    raw: &raw::RawConfig,
    answer: AnswerConfig,
    base: &Path,
) -> (
    crate::assistant::AssistantConfig,
    Option<crate::assistant::LlmConfig>,
) {
    use crate::assistant::{
        AnswerMode, AssistantConfig, LlmConfig, QuotaConfig, ResponseScope, RewriteMode,
    };
    use std::time::Duration;
    let a = &raw.answer;
    let default_mode = AnswerMode::parse(&a.mode).unwrap_or_else(|| {
        is.add(
            "answer.mode",
            format!("must be extractive, generative or auto, got {:?}", a.mode),
        );
        AnswerMode::Extractive
    });
    let mut scope = |path: String, v: &str| {
        ResponseScope::parse(v).unwrap_or_else(|| {
            is.add(
                path,
                format!("must be enterprise_only or allow_general_knowledge, got {v:?}"),
            );
            ResponseScope::EnterpriseOnly
        })
    };
    let response_scope = scope("answer.response_scope".into(), &a.response_scope);
    let group_response_scopes = a
        .response_scope_groups
        .iter()
        .map(|(g, v)| {
            (
                format!("group:{g}"),
                scope(format!("answer.response_scope_groups.{g}"), v),
            )
        })
        .collect();
    let c = &raw.conversations;
    let rewrite = match c.rewrite.as_str() {
        "heuristic" => RewriteMode::Heuristic,
        "llm" => RewriteMode::Llm,
        other => {
            is.add(
                "conversations.rewrite",
                format!("must be heuristic or llm, got {other:?}"),
            );
            RewriteMode::Heuristic
        }
    };
    let retention_days = is.range("conversations.retention_days", c.retention_days, 1, 3650);
    let q = &raw.quotas;
    for (g, v) in &q.daily_tokens_per_group {
        if *v == 0 {
            is.add(
                format!("quotas.daily_tokens_per_group.{g}"),
                "must be at least 1",
            );
        }
    }
    if !c.enabled && (q.daily_tokens_per_identity.is_some() || !q.daily_tokens_per_group.is_empty())
    {
        // Usage is counted in the conversation store: without it no budget would hold.
        is.add(
            "quotas",
            "token budgets need [conversations] enabled = true (usage is kept in its store)",
        );
    }
    let quotas = QuotaConfig {
        daily_tokens_per_identity: q.daily_tokens_per_identity,
        daily_tokens_per_group: q
            .daily_tokens_per_group
            .iter()
            .map(|(g, v)| (format!("group:{g}"), *v))
            .collect(),
    };
    let llm = raw.llm.as_ref().map(|l| {
        if !(l.base_url.starts_with("http://") || l.base_url.starts_with("https://")) {
            is.add(
                "llm.base_url",
                format!(
                    "must be an http(s) URL like http://127.0.0.1:8088/v1, got {:?}",
                    without_credentials(&l.base_url)
                ),
            );
        }
        if has_credentials(&l.base_url) {
            // They would be printed, logged and sent as they are: the key has its own setting.
            is.add(
                "llm.base_url",
                "must not hold credentials (user:password@); set llm.api_key instead",
            );
        }
        if l.model.trim().is_empty() {
            is.add("llm.model", "must name the model");
        }
        if l.api_key.as_deref().is_some_and(|k| !k.is_empty()) {
            is.secret_over_http("llm.api_key", &l.base_url, l.allow_plain_http);
        }
        let ms = |is: &mut Issues, path: &str, v: u64| {
            Duration::from_millis(is.range(path, v, 1, 3_600_000))
        };
        // Settings that each pass but together leave the model nothing to work with (found by
        // a review: answers quietly turned into "not found").
        let needed = (l.max_tokens as usize)
            .saturating_add(crate::assistant::llm::prompt_overhead_tokens())
            .saturating_add(crate::assistant::llm::MIN_PASSAGE_TOKENS);
        if l.context_tokens < needed {
            is.add(
                "llm.context_tokens",
                format!(
                    "{} leaves no room for passages after max_tokens {} and the instructions:                      at least {needed}",
                    l.context_tokens, l.max_tokens
                ),
            );
        }
        if l.first_token_timeout_ms > l.total_timeout_ms {
            is.add(
                "llm.first_token_timeout_ms",
                format!(
                    "{} is longer than total_timeout_ms {}",
                    l.first_token_timeout_ms, l.total_timeout_ms
                ),
            );
        }
        LlmConfig {
            base_url: l.base_url.clone(),
            model: l.model.clone(),
            api_key: l.api_key.clone().filter(|k| !k.is_empty()),
            ca_file: l.ca_file.as_deref().map(|p| resolve(base, p)),
            connect_timeout: ms(is, "llm.connect_timeout_ms", l.connect_timeout_ms),
            first_token_timeout: ms(is, "llm.first_token_timeout_ms", l.first_token_timeout_ms),
            total_timeout: ms(is, "llm.total_timeout_ms", l.total_timeout_ms),
            max_tokens: is.range("llm.max_tokens", l.max_tokens, 1, 32_768),
            temperature: is.range("llm.temperature", l.temperature, 0.0, 2.0),
            context_tokens: is.range("llm.context_tokens", l.context_tokens, 256, 1_000_000),
            max_concurrent: is.range("llm.max_concurrent", l.max_concurrent, 1, 1024),
            stream: l.stream,
            price_prompt_per_1k: is.range(
                "llm.price_prompt_per_1k",
                l.price_prompt_per_1k,
                0.0,
                1e6,
            ),
            price_completion_per_1k: is.range(
                "llm.price_completion_per_1k",
                l.price_completion_per_1k,
                0.0,
                1e6,
            ),
            currency: l.currency.clone(),
        }
    });
    if llm.is_none() && default_mode == AnswerMode::Generative {
        is.add("answer.mode", "generative needs an [llm] section");
    }
    if llm.is_none() && rewrite == RewriteMode::Llm {
        is.add("conversations.rewrite", "llm needs an [llm] section");
    }
    if q.daily_tokens_per_identity == Some(0) {
        is.add("quotas.daily_tokens_per_identity", "must be at least 1");
    }
    (
        AssistantConfig {
            answer,
            default_mode,
            response_scope,
            group_response_scopes,
            retention_days,
            rewrite,
            quotas,
        },
        llm,
    )
}

/// `[embedding]`: a model named by `model` (id, prefixes and pooling come with it) or any model
/// by `model_id` with its `query_prefix`, `passage_prefix` and `pooling`.
fn embedding_section(e: &raw::RawEmbedding, base: &Path, is: &mut Issues) -> EmbeddingConfig {
    let mut model_id = e
        .model_id
        .clone()
        .unwrap_or_else(|| "sentence-transformers/all-MiniLM-L6-v2".into());
    let mut text = TextProfile::default();
    let mut expect_vocab = None;
    let max_length = is.range("embedding.max_length", e.max_length, 16, 8192);
    let known = crate::embed::KNOWN_MODELS
        .iter()
        .map(|m| format!("{:?}", m.name))
        .collect::<Vec<_>>()
        .join(", ");
    match e.model.as_deref().map(|n| (n, crate::embed::known_model(n))) {
        Some((name, None)) => is.add(
            "embedding.model",
            format!(
                "unknown model {name:?}; known models are {known} (any other: set model_id and its query_prefix/passage_prefix instead)"
            ),
        ),
        Some((name, Some(m))) => {
            if e.model_id.is_some() {
                is.add(
                    "embedding.model_id",
                    format!("model = {name:?} sets the model id; give model or model_id, not both"),
                );
            }
            for (key, set) in [
                ("query_prefix", &e.query_prefix),
                ("passage_prefix", &e.passage_prefix),
                ("pooling", &e.pooling),
            ] {
                if set.is_some() {
                    is.add(
                        format!("embedding.{key}"),
                        format!(
                            "model = {name:?} sets it; remove it, or use model_id for a model with other settings"
                        ),
                    );
                }
            }
            if e.model_dir.trim().is_empty() {
                is.add(
                    "embedding.model_dir",
                    format!(
                        "must name the folder with {name}'s model.onnx and tokenizer.json (scripts/setup-models.sh puts it in models/{name})"
                    ),
                );
            }
            if max_length > m.max_length {
                is.add(
                    "embedding.max_length",
                    format!("{name} takes at most {} tokens, got {max_length}", m.max_length),
                );
            }
            model_id = m.model_id.to_string();
            text.query_prefix = m.query_prefix.to_string();
            text.passage_prefix = m.passage_prefix.to_string();
            expect_vocab = Some(m.vocab_size);
        }
        None => {
            // A known model named by its id has its limits too (a review: only `model` checked
            // them, and the example config names the default model by `model_id`).
            if let Some(m) = crate::embed::KNOWN_MODELS
                .iter()
                .find(|m| m.model_id == model_id)
            {
                if max_length > m.max_length {
                    is.add(
                        "embedding.max_length",
                        format!(
                            "{} takes at most {} tokens, got {max_length}",
                            m.model_id, m.max_length
                        ),
                    );
                }
                expect_vocab = Some(m.vocab_size);
            }
            for (key, set) in [
                ("query_prefix", &e.query_prefix),
                ("passage_prefix", &e.passage_prefix),
            ] {
                let Some(p) = set else { continue };
                if p.chars().count() > 64 || p.chars().any(|c| c.is_control()) {
                    is.add(
                        format!("embedding.{key}"),
                        "must be at most 64 characters, without control characters",
                    );
                }
            }
            text.query_prefix = e.query_prefix.clone().unwrap_or_default();
            text.passage_prefix = e.passage_prefix.clone().unwrap_or_default();
            text.pooling = match e.pooling.as_deref() {
                None | Some("mean") => Pooling::Mean,
                Some("cls") => Pooling::Cls,
                Some(other) => {
                    is.add(
                        "embedding.pooling",
                        format!("must be \"mean\" or \"cls\", got {other:?}"),
                    );
                    Pooling::Mean
                }
            };
        }
    }
    if model_id.trim().is_empty() {
        is.add("embedding.model_id", "must not be empty");
    }
    EmbeddingConfig {
        model: EmbedderConfig {
            model_id,
            model_dir: resolve(base, &e.model_dir),
            onnxruntime_lib: resolve(base, &e.onnxruntime_lib),
            max_length,
            batch_size: is.range("embedding.batch_size", e.batch_size, 1, 1024),
            // Each thread holds a copy of the model (a review: 256 was accepted, tens of GB).
            threads: is.range("embedding.threads", e.threads, 1, 64),
        },
        text,
        expect_vocab,
    }
}

/// `[index] backend` and `[index.milvus]`.
fn index_backend(
    base: &Path,
    raw: &raw::RawIndex,
    is: &mut Issues,
) -> Option<crate::index::milvus::MilvusConfig> {
    match raw.backend.as_str() {
        "embedded" => {
            if raw.milvus.is_some() {
                is.add(
                    "index.milvus",
                    "set index.backend = \"milvus\" to use it (the backend is embedded)",
                );
            }
            None
        }
        "milvus" => {
            let Some(m) = &raw.milvus else {
                is.add(
                    "index.milvus",
                    "backend \"milvus\" needs an [index.milvus] section with its uri",
                );
                return None;
            };
            if !(m.uri.starts_with("http://") || m.uri.starts_with("https://")) {
                is.add(
                    "index.milvus.uri",
                    format!(
                        "expected http://host:port or https://host:port, got {:?}",
                        without_credentials(&m.uri)
                    ),
                );
            }
            if has_credentials(&m.uri) {
                is.add(
                    "index.milvus.uri",
                    "must not hold credentials (user:password@); set index.milvus.token instead",
                );
            }
            if m.token.as_deref().is_some_and(|t| !t.is_empty()) {
                is.secret_over_http("index.milvus.token", &m.uri, m.allow_plain_http);
            }
            if m.uri.starts_with("https://") && m.ca_file.is_none() {
                is.add(
                    "index.milvus.ca_file",
                    "https needs the CA that signed the server's certificate",
                );
            }
            let valid_name = !m.collection.is_empty()
                && m.collection.len() <= 200
                && m.collection
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !m.collection.starts_with(|c: char| c.is_ascii_digit());
            if !valid_name {
                is.add(
                    "index.milvus.collection",
                    "letters, digits and underscores, not starting with a digit",
                );
            }
            Some(crate::index::milvus::MilvusConfig {
                uri: m.uri.clone(),
                collection: m.collection.clone(),
                token: m.token.clone().filter(|t| !t.is_empty()),
                database: m.database.clone(),
                ca_file: m.ca_file.as_deref().map(|p| resolve(base, p)),
                server_name: m.server_name.clone(),
                timeout: Duration::from_millis(is.range(
                    "index.milvus.timeout_ms",
                    m.timeout_ms,
                    100,
                    600_000,
                )),
            })
        }
        other => {
            is.add(
                "index.backend",
                format!("unknown backend {other:?}: embedded or milvus"),
            );
            None
        }
    }
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn principals(issues: &mut Issues, path: &str, list: &[String]) -> Vec<Principal> {
    list.iter()
        .enumerate()
        .filter_map(|(i, s)| match s.parse::<Principal>() {
            Ok(p) => Some(p),
            Err(e) => {
                issues.add(format!("{path}[{i}]"), e.to_string());
                None
            }
        })
        .collect()
}

fn validate(raw: raw::RawConfig, base: &Path) -> Result<Config, Vec<ConfigIssue>> {
    let mut is = Issues(Vec::new());
    if raw.version != 1 {
        is.add(
            "version",
            format!(
                "unsupported version {}; this build reads version 1",
                raw.version
            ),
        );
    }

    let listen = match raw.server.listen.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            is.add(
                "server.listen",
                format!("not a socket address: {:?}", raw.server.listen),
            );
            SocketAddr::from(([127, 0, 0, 1], 0))
        }
    };
    let metrics_listen = match &raw.server.metrics_listen {
        None => None,
        Some(s) => match s.parse::<SocketAddr>() {
            Ok(a) if !a.ip().is_loopback() && !raw.server.metrics_public => {
                is.add(
                    "server.metrics_listen",
                    format!(
                        "{a} is not a loopback address: /metrics has no authentication and \
                         counts documents per source across every ACL; bind it to loopback, or \
                         set server.metrics_public = true where only the monitoring network \
                         reaches it"
                    ),
                );
                None
            }
            Ok(a) => Some(a),
            Err(_) => {
                is.add(
                    "server.metrics_listen",
                    format!("not a socket address: {s:?}"),
                );
                None
            }
        },
    };
    let client_auth_required = match raw.server.tls_client_auth.as_str() {
        "optional" => false,
        "required" => true,
        other => {
            is.add(
                "server.tls_client_auth",
                format!("must be \"optional\" or \"required\", got {other:?}"),
            );
            false
        }
    };
    let tls = match (&raw.server.tls_cert, &raw.server.tls_key) {
        (Some(c), Some(k)) => Some(TlsConfig {
            cert: resolve(base, c),
            key: resolve(base, k),
            client_ca: raw.server.tls_client_ca.as_ref().map(|p| resolve(base, p)),
            client_auth_required,
            client_crl: raw.server.tls_client_crl.as_ref().map(|p| resolve(base, p)),
        }),
        (None, None) => None,
        _ => {
            is.add("server", "tls_cert and tls_key must be given together");
            None
        }
    };
    if raw.server.tls_client_ca.is_some() && tls.is_none() {
        is.add(
            "server.tls_client_ca",
            "client certificates need tls_cert and tls_key",
        );
    }
    // The daemon refuses this at start too; `docent config check` says so first (a review:
    // it passed a config the daemon would not run).
    if !listen.ip().is_loopback() && tls.is_none() {
        is.add(
            "server.listen",
            "an address beyond this machine needs tls_cert and tls_key (tokens and answers \
             would cross the network in plaintext)",
        );
    }
    if raw.server.tls_client_crl.is_some() && raw.server.tls_client_ca.is_none() {
        is.add(
            "server.tls_client_crl",
            "revocation lists need tls_client_ca (the CA whose certificates they revoke)",
        );
    }
    // Without a CA to check them against, no client certificate is asked for: "required"
    // would serve plain TLS to anyone.
    if client_auth_required && raw.server.tls_client_ca.is_none() {
        is.add(
            "server.tls_client_auth",
            "tls_client_auth = \"required\" needs tls_client_ca (the CA that client \
             certificates must chain to)",
        );
    }

    let index = IndexConfig {
        data_dir: resolve(base, &raw.index.data_dir),
        commit_interval: Duration::from_millis(is.range(
            "index.commit_interval_ms",
            raw.index.commit_interval_ms,
            10,
            600_000,
        )),
        queue_capacity: is.range(
            "index.queue_capacity",
            raw.index.queue_capacity,
            1,
            1_000_000,
        ),
        queue_bytes: u32::try_from(is.range(
            "index.queue_bytes",
            raw.index.queue_bytes,
            1 << 20,
            u64::from(u32::MAX),
        ))
        .unwrap_or(u32::MAX),
        milvus: index_backend(base, &raw.index, &mut is),
        role: match raw.index.role.as_str() {
            "all" => Role::All,
            "query" => Role::Query,
            "ingest" => Role::Ingest,
            other => {
                is.add(
                    "index.role",
                    format!("unknown role {other:?}: all, query or ingest"),
                );
                Role::All
            }
        },
    };
    if index.role == Role::Query && index.milvus.is_none() {
        is.add(
            "index.role",
            "a query node needs a shared index: set index.backend = \"milvus\"",
        );
    }

    let embedding = embedding_section(&raw.embedding, base, &mut is);

    let chunking = ChunkerConfig {
        max_tokens: is.range("chunking.max_tokens", raw.chunking.max_tokens, 16, 8192),
        overlap_tokens: raw.chunking.overlap_tokens,
    };
    if chunking.overlap_tokens >= chunking.max_tokens {
        is.add(
            "chunking.overlap_tokens",
            "must be smaller than chunking.max_tokens",
        );
    }
    if chunking.max_tokens + 32 > embedding.model.max_length {
        is.add(
            "chunking.max_tokens",
            format!(
                "{} leaves no room for the title within embedding.max_length {}",
                chunking.max_tokens, embedding.model.max_length
            ),
        );
    }

    let r = &raw.retrieval;
    // Checked whichever fusion is chosen: a value out of range is a mistake either way.
    let alpha = is.range("retrieval.convex_alpha", r.convex_alpha, 0.0, 1.0);
    let fusion = match r.fusion.as_str() {
        "rrf" => Fusion::Rrf,
        "convex" => Fusion::Convex { alpha },
        other => {
            is.add(
                "retrieval.fusion",
                format!("must be \"rrf\" or \"convex\", got {other:?}"),
            );
            Fusion::Rrf
        }
    };
    let retrieval = RetrievalConfig {
        fusion,
        rrf_k: is.range("retrieval.rrf_k", r.rrf_k, 0.0, 10_000.0),
        candidates: is.range("retrieval.candidates", r.candidates, 1, 10_000),
        title_boost: is.range("retrieval.title_boost", r.title_boost, 0.0, 100.0),
        heading_boost: is.range("retrieval.heading_boost", r.heading_boost, 0.0, 100.0),
        norm: match r.convex_normalization.as_str() {
            "minmax" => ScoreNorm::MinMax,
            "std" => ScoreNorm::Std,
            other => {
                is.add(
                    "retrieval.convex_normalization",
                    format!("must be \"minmax\" or \"std\", got {other:?}"),
                );
                ScoreNorm::MinMax
            }
        },
        dense_feedback: is.range("retrieval.dense_feedback", r.dense_feedback, 0.0, 10.0),
        dense_feedback_chunks: is.range(
            "retrieval.dense_feedback_chunks",
            r.dense_feedback_chunks,
            1,
            100,
        ),
        rerank: r.rerank,
        rerank_depth: is.range("retrieval.rerank_depth", r.rerank_depth, 1, 200),
        document_bm25: r.document_bm25,
    };
    let answer = AnswerConfig {
        min_relevance: match raw.answer.min_relevance {
            Some(v) => is.range("answer.min_relevance", v, 0.0, 1.0),
            // The threshold chosen for this embedding model's own second stage (a model with
            // none has no second stage; min_similarity decides there).
            None => {
                crate::retrieve::rerank::RankerModel::for_model(&embedding.model.model_id)
                    .unwrap_or(crate::retrieve::rerank::RankerModel::builtin())
                    .threshold
            }
        },
        support_ratio: is.range("answer.support_ratio", raw.answer.support_ratio, 0.0, 1.0),
        other_document_ratio: is.range(
            "answer.other_document_ratio",
            raw.answer.other_document_ratio,
            0.0,
            1.0,
        ),
        min_similarity: is.range(
            "answer.min_similarity",
            raw.answer.min_similarity,
            -1.0,
            1.0,
        ),
        max_sentences: is.range("answer.max_sentences", raw.answer.max_sentences, 1, 20),
        max_passages: is.range("answer.max_passages", raw.answer.max_passages, 1, 50),
        passages_per_document: is.range(
            "answer.passages_per_document",
            raw.answer.passages_per_document,
            1,
            10,
        ),
        min_sentence_similarity: match raw.answer.min_sentence_similarity {
            // -1 (no cosine is lower): off, and no sentence is embedded at all.
            Some(v) if v <= -1.0 => None,
            Some(v) => Some(is.range("answer.min_sentence_similarity", v, -1.0, 1.0)),
            None => crate::retrieve::rerank::RankerModel::for_model(&embedding.model.model_id)
                .and_then(|m| m.sentence_threshold),
        },
        check_sentences: match raw.answer.check_sentences {
            Some(n) => is.range(
                "answer.check_sentences",
                n,
                1,
                crate::retrieve::rerank::MAX_CHECK_SENTENCES,
            ),
            None => crate::retrieve::rerank::RankerModel::for_model(&embedding.model.model_id)
                .map_or(1, |m| m.sentence_check_depth),
        },
    };
    let (assistant, llm) = assistant_config(&mut is, &raw, answer, base);

    let mut group_ids = BTreeSet::new();
    let groups: Vec<GroupSpec> = raw
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            if g.id.trim().is_empty() || g.id.contains(char::is_whitespace) {
                is.add(
                    format!("groups[{i}].id"),
                    "must be a non-empty id without spaces",
                );
            }
            if !group_ids.insert(g.id.clone()) {
                is.add(
                    format!("groups[{i}].id"),
                    format!("duplicate group {:?}", g.id),
                );
            }
            GroupSpec {
                id: g.id.clone(),
                member_of: g.member_of.clone(),
                reported: false,
                from_file: false,
            }
        })
        .collect();

    let mut ids = BTreeSet::new();
    let mut tokens = BTreeSet::new();
    let identities: Vec<IdentitySpec> = raw
        .identities
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let p = format!("identities[{i}]");
            if r.id.trim().is_empty() || r.id.contains(char::is_whitespace) {
                is.add(format!("{p}.id"), "must be a non-empty id without spaces");
            }
            // Audiences (`act_as = "everyone"`, `"group:<id>"`) run under these ids: a person
            // named so would share their conversations and usage.
            if crate::identity::Audience::parse(&r.id).is_some() {
                is.add(
                    format!("{p}.id"),
                    format!(
                        "{:?} is the name of an audience (everyone, group:<id>)",
                        r.id
                    ),
                );
            }
            // A group named as a principal (`group:hr`) would make the identity a member of
            // `group:group:hr`, which no rule names (a review: such a member escaped a deny
            // of `group:hr`, and the undefined-group warning counted it as defined).
            for (k, g) in r.groups.iter().enumerate() {
                if !crate::identity::sources::group_id_ok(g) {
                    is.add(
                        format!("{p}.groups[{k}]"),
                        format!("{g:?}: a group id, without spaces or `group:` (as in [[groups]])"),
                    );
                }
            }
            if !ids.insert(r.id.clone()) {
                is.add(format!("{p}.id"), format!("duplicate identity {:?}", r.id));
            }
            for (j, a) in r.aliases.iter().enumerate() {
                if !crate::identity::sources::alias_ok(a) {
                    is.add(
                        format!("{p}.aliases[{j}]"),
                        "must not be blank or an audience's name (everyone, group:<id>)",
                    );
                }
            }
            for (k, a) in r.act_for.iter().enumerate() {
                if !crate::identity::act_for_ok(a) {
                    is.add(
                        format!("{p}.act_for[{k}]"),
                        format!("{a:?}: `group:<id>` or `user:<id>` (an identity's id)"),
                    );
                }
            }
            if !r.act_for.is_empty() && !r.act_as {
                is.add(
                    format!("{p}.act_for"),
                    "only means something with `act_as = true`",
                );
            }
            let token = r.token_sha256.as_ref().map(|h| h.to_ascii_lowercase());
            if let Some(h) = &token {
                if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                    is.add(
                        format!("{p}.token_sha256"),
                        "must be 64 hex digits (sha256 of the token)",
                    );
                } else if !tokens.insert(h.clone()) {
                    is.add(
                        format!("{p}.token_sha256"),
                        "the same token is given to another identity",
                    );
                }
            }
            IdentitySpec {
                id: r.id.clone(),
                aliases: r.aliases.clone(),
                groups: r.groups.clone(),
                reported_groups: Vec::new(),
                token_sha256: token,
                admin: r.admin,
                act_as: r.act_as,
                act_for: r.act_for.clone(),
                ingest: r.ingest,
                locked: false,
                sign_in_withdrawn: Vec::new(),
                privilege_withdrawn: false,
                aliases_from_files: Vec::new(),
                groups_from_files: Vec::new(),
            }
        })
        .collect();
    for (i, g) in raw.groups.iter().enumerate() {
        for (j, parent) in g.member_of.iter().enumerate() {
            if !group_ids.contains(parent) {
                is.add(
                    format!("groups[{i}].member_of[{j}]"),
                    format!("unknown group {parent:?}"),
                );
            }
        }
    }
    let identity_sources = security::sources(&mut is, base, &raw.identity_sources);
    let api_keys = security::api_keys(&mut is, &raw.api_keys);
    let jwt = security::jwt(&mut is, base, &raw.auth);
    match sources::load_all(&identity_sources) {
        Err(e) => is.add("identity_sources", e),
        Ok(loaded) => match sources::merge(identities.clone(), groups.clone(), loaded) {
            Err(conflicts) => {
                for c in conflicts {
                    is.add(c.config_path(), c.config_message());
                }
            }
            Ok((ids, gs)) => {
                let store = IdentityStore::new(ids, gs);
                for cycle in store.group_cycles() {
                    is.add("groups", format!("membership cycle: {}", cycle.join(" → ")));
                }
                for (i, k) in api_keys.iter().enumerate() {
                    match store.resolve(&k.identity, crate::identity::ResolveReason::ConfigCheck) {
                        None => is.add(
                            format!("api_keys[{i}].identity"),
                            format!("unknown identity {:?}", k.identity),
                        ),
                        // A key binds to an id: an alias may move to another identity when an
                        // identity file changes, and the key would move with it.
                        Some(c) if c.user_id() != k.identity => is.add(
                            format!("api_keys[{i}].identity"),
                            format!(
                                "{:?} is an alias of {:?}; name the identity by its id",
                                k.identity,
                                c.user_id()
                            ),
                        ),
                        Some(_) => {}
                    }
                }
            }
        },
    }
    for (p, m) in crate::identity::credential_collisions(&identities, &api_keys) {
        is.add(p, m);
    }
    if let Some(j) = &jwt
        && let Err(e) = JwtVerifier::load(j.clone())
    {
        is.add("auth.jwks_file", e);
    }
    let audit = security::audit(&mut is, base, &raw.audit);

    let connectors = connectors(&mut is, &raw.connectors, base);
    let connector_ids: Vec<String> = connectors.iter().map(|c| c.id().to_string()).collect();
    let guardrails = security::guardrails(&mut is, &raw.guardrails, &connector_ids);

    // Checked before the issues are returned (they were checked after, so never reported).
    let limit =
        |is: &mut Issues, key: &str, v: usize| is.range(&format!("server.{key}"), v, 1, 100_000);
    let max_concurrent_requests = limit(
        &mut is,
        "max_concurrent_requests",
        raw.server.max_concurrent_requests,
    );
    let max_concurrent_per_caller = limit(
        &mut is,
        "max_concurrent_per_caller",
        raw.server.max_concurrent_per_caller,
    );
    let max_concurrent_per_service = limit(
        &mut is,
        "max_concurrent_per_service",
        raw.server.max_concurrent_per_service,
    );
    let max_unauthenticated_streams = limit(
        &mut is,
        "max_unauthenticated_streams",
        raw.server.max_unauthenticated_streams,
    );
    let max_unauthenticated_streams_per_peer = limit(
        &mut is,
        "max_unauthenticated_streams_per_peer",
        raw.server.max_unauthenticated_streams_per_peer,
    );
    if !is.0.is_empty() {
        return Err(is.0);
    }
    Ok(Config {
        server: ServerConfig {
            listen,
            metrics_listen,
            tls,
            max_concurrent_requests,
            max_concurrent_per_caller,
            max_concurrent_per_service,
            max_unauthenticated_streams,
            max_unauthenticated_streams_per_peer,
        },
        index,
        embedding,
        chunking,
        retrieval,
        answer,
        assistant,
        llm,
        conversations: raw.conversations.enabled,
        identities,
        groups,
        identity_sources,
        api_keys,
        jwt,
        guardrails,
        audit,
        connectors,
        start_only: SectionDigests::new(),
    })
}

/// Whether a URL names a user or password before its host (`http://u:p@host/`).
fn has_credentials(url: &str) -> bool {
    url.split_once("://")
        .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or(""))
        .is_some_and(|authority| authority.contains('@'))
}

/// `url` with whatever precedes `@` in its authority replaced, for messages.
fn without_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            match rest[..end].rfind('@') {
                Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
version = 1
[index]
data_dir = "data"
[embedding]
model_dir = "models/m"
onnxruntime_lib = "models/ort.so"
"#;

    /// Groups named but defined nowhere are found wherever they are named (a principal in any
    /// section, a key of the per-group settings); those the config, an identity or an identity
    /// file define are not (session 35's note: typos went unchecked).
    #[test]
    fn groups_named_but_defined_nowhere_are_found() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("users.json"),
            r#"{"users": [{"id": "u", "groups": ["ops"]}], "groups": [{"id": "sre", "member_of": ["ops"]}]}"#,
        )
        .unwrap();
        let text = format!(
            "{MINIMAL}[[groups]]\nid = \"staff\"\n[[groups]]\nid = \"hr\"\nmember_of = [\"staff\"]\n\
             [[identities]]\nid = \"a\"\ngroups = [\"eng\"]\n\
             [[identity_sources]]\nformat = \"json\"\npath = \"users.json\"\n\
             [answer]\nresponse_scope_groups = {{ engneering = \"allow_general_knowledge\", eng = \"allow_general_knowledge\" }}\n\
             [[guardrails.blocked_phrases]]\nphrases = [\"x\"]\n\
             applies_to = [\"group:staff\", \"group:sre\", \"group:ops\", \"group:hrr\", \"user:a\"]\n"
        );
        let c = Config::parse(&text, dir.path()).unwrap();
        let files = c.identity_files().unwrap();
        let mut found = undefined_groups(&text, &c, &files);
        found.sort();
        let at = |a: &str, g: &str| (a.to_string(), g.to_string());
        assert_eq!(
            found,
            [
                at("answer.response_scope_groups.engneering", "engneering"),
                at("guardrails.blocked_phrases[0].applies_to[3]", "hrr"),
            ]
        );
    }

    /// [`MINIMAL`] serving TLS, with these more `[server]` lines.
    fn with_tls(server: &str) -> String {
        let tls = "tls_cert = \"tls/c.pem\"\ntls_key = \"tls/k.pem\"";
        MINIMAL.replace(
            "version = 1\n",
            &format!("version = 1\n[server]\n{tls}\n{server}\n"),
        )
    }

    /// What a file that does not validate still grants (read after a failed reload): keys
    /// revoked by anything but `false`, listed twice, or without a secret grant nothing;
    /// `${VAR}` is replaced as in a valid file.
    #[test]
    fn granted_reads_credentials_leniently_and_fails_closed() {
        let path = std::env::var("PATH").expect("PATH is set");
        let g = granted(
            r#"
version = "not a number"
[[identities]]
id = "alice"
token_sha256 = "${PATH}"
admin = "yes"
[[identities]]
id = "twin"
act_as = true
[[identities]]
id = "twin"
[[api_keys]]
id = "ok"
identity = "alice"
sha256 = "EF01"
[[api_keys]]
id = "odd-revoked"
identity = "alice"
sha256 = "ef02"
revoked = "no"
[[api_keys]]
id = "dup"
identity = "alice"
sha256 = "ef03"
[[api_keys]]
id = "dup"
identity = "alice"
sha256 = "ef03"
[[api_keys]]
id = "bad-scopes"
identity = "alice"
sha256 = "ef04"
scopes = ["query", "everything"]
"#,
        )
        .unwrap();
        let alice = &g.identities["alice"];
        assert_eq!(alice.token_sha256, Some(path.to_ascii_lowercase()));
        assert!(!alice.admin, "only `true` grants");
        assert!(!g.identities.contains_key("twin"));
        assert_eq!(g.api_keys.keys().collect::<Vec<_>>(), ["bad-scopes", "ok"]);
        let ok = &g.api_keys["ok"];
        assert_eq!(
            (ok.identity.as_str(), ok.sha256.as_str()),
            ("alice", "ef01")
        );
        assert_eq!(ok.scopes.map(|s| (s.query, s.admin)), Some((true, false)));
        assert_eq!(g.api_keys["bad-scopes"].scopes, None);
        assert!(granted("version = ").is_none());
    }

    /// A reload applies the identity sections only: the others that changed are named.
    #[test]
    fn the_sections_a_reload_does_not_apply_are_named_when_changed() {
        let then = start_only_sections(
            "version = 1\n[guardrails]\nx = 1\n[[identities]]\nid = \"a\"\n[answer]\nmode = \"extractive\"\n",
        )
        .unwrap();
        let now = start_only_sections(
            "version = 1\n[guardrails]\nx = 2\n[[identities]]\nid = \"b\"\n[quotas]\ny = 1\n[answer]\nmode = \"extractive\"\n",
        )
        .unwrap();
        assert_eq!(changed_sections(&then, &now), ["guardrails", "quotas"]);
        assert!(changed_sections(&then, &then).is_empty());
        // Digests only: the values (secrets among them) are not kept.
        let secret = start_only_sections("version = 1\n[llm]\napi_key = \"sk-s3cret\"\n").unwrap();
        assert!(!format!("{secret:?}").contains("s3cret"), "{secret:?}");
    }

    /// A file that is not TOML still revokes the keys it marks revoked (a review: a second
    /// `revoked = true` under `revoked = false` made it not TOML, and the key kept working).
    #[test]
    fn a_file_that_is_not_toml_still_revokes_its_keys() {
        let text = "version = 1\n[[api_keys]]\nid = \"bridge\"\nidentity = \"slack-bridge\"\n\
                    revoked = false\nrevoked = true\n\n[[ api_keys ]]\nid = 'ci'\nrevoked = false\n\
                    [[identities]]\nid = \"x\"\nrevoked = true\n[[api_keys]]\n  id = \"old\" # gone\n\
                    revoked = yes\n[[api_keys]]\nid = \"a#b\"\nrevoked = true # now\n";
        assert!(granted(text).is_none(), "not TOML");
        let revoked: Vec<String> = revoked_in_text(text).into_iter().collect();
        assert_eq!(revoked, ["a#b", "bridge", "old"]);
    }

    #[test]
    fn a_user_editable_jwt_claim_is_warned_of() {
        let mut c = Config::parse(MINIMAL, Path::new("/etc/docent")).unwrap();
        assert!(warnings(&c).is_empty());
        let jwt = |claim: &str| {
            Some(crate::identity::jwt::JwtConfig {
                jwks_file: "jwks.json".into(),
                issuer: "https://idp.example".into(),
                audience: "docent".into(),
                user_claim: claim.into(),
                leeway_secs: 0,
                max_lifetime_secs: 3600,
            })
        };
        c.jwt = jwt("preferred_username");
        let w = warnings(&c);
        assert!(
            w.len() == 1 && w[0].contains("\"preferred_username\""),
            "{w:?}"
        );
        c.jwt = jwt("sub");
        assert!(warnings(&c).is_empty());
    }

    /// Session 44's note: an alias in `act_for` (which matches ids only) was taken silently.
    #[test]
    fn an_act_for_user_that_is_an_alias_or_unknown_is_warned_of() {
        let mut c = Config::parse(MINIMAL, Path::new("/etc/docent")).unwrap();
        let person = |id: &str, aliases: &[&str]| IdentitySpec {
            id: id.into(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        };
        c.identities = vec![
            person("alice", &["alice@corp.example"]),
            IdentitySpec {
                act_as: true,
                act_for: vec![
                    "user:alice".into(),
                    "group:staff".into(),
                    "user:alice@corp.example".into(),
                    "user:nobody".into(),
                ],
                ..person("bridge", &[])
            },
        ];
        let w = warnings(&c);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with("identities[1].act_for[2]") && w[0].contains("\"user:alice\""),
            "{w:?}"
        );
        assert!(
            w[1].starts_with("identities[1].act_for[3]") && w[1].contains("no identity"),
            "{w:?}"
        );
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(MINIMAL, Path::new("/etc/docent")).unwrap();
        assert_eq!(c.index.data_dir, Path::new("/etc/docent/data"));
        assert_eq!(c.server.listen.port(), 7878);
        assert_eq!(c.chunking.max_tokens, 200);
        assert!(c.connectors.is_empty());
    }

    /// Every server limit out of range is reported with the rest (found by a review: they
    /// were checked after the issues were returned, so 0 was taken).
    #[test]
    fn server_limits_out_of_range_are_reported() {
        let cfg = MINIMAL.to_string()
            + "[server]\nmax_concurrent_requests = 0\nmax_concurrent_per_caller = 0\n\
               max_concurrent_per_service = 100001\nmax_unauthenticated_streams = 0\n\
               max_unauthenticated_streams_per_peer = 0\n";
        let issues = Config::parse(&cfg, Path::new("/etc/docent")).unwrap_err();
        for key in [
            "max_concurrent_requests",
            "max_concurrent_per_caller",
            "max_concurrent_per_service",
            "max_unauthenticated_streams",
            "max_unauthenticated_streams_per_peer",
        ] {
            let path = format!("server.{key}");
            assert!(
                issues.iter().any(|i| i.path == path),
                "{path} not reported: {issues:?}"
            );
        }
        // The queue's byte budget is bounded too.
        let cfg = MINIMAL.replace("[index]\n", "[index]\nqueue_bytes = 1000\n");
        let issues = Config::parse(&cfg, Path::new("/etc/docent")).unwrap_err();
        assert!(
            issues.iter().any(|i| i.path == "index.queue_bytes"),
            "{issues:?}"
        );
        let cfg = MINIMAL.replace("[index]\n", "[index]\nqueue_bytes = 1048576\n");
        let c = Config::parse(&cfg, Path::new("/etc/docent")).unwrap();
        assert_eq!(c.index.queue_bytes, 1 << 20);
    }

    #[test]
    fn a_named_model_sets_its_id_and_prefixes() {
        let c = Config::parse(MINIMAL, Path::new("/etc/docent")).unwrap();
        assert_eq!(
            c.embedding.model.model_id,
            "sentence-transformers/all-MiniLM-L6-v2"
        );
        assert_eq!(c.embedding.text, TextProfile::default());
        let e5 = MINIMAL.replace(
            "[embedding]\n",
            "[embedding]\nmodel = \"multilingual-e5-small\"\nmax_length = 512\n",
        );
        let c = Config::parse(&e5, Path::new("/etc/docent")).unwrap();
        assert_eq!(c.embedding.model.model_id, "intfloat/multilingual-e5-small");
        assert_eq!(c.embedding.text.query_prefix, "query: ");
        assert_eq!(c.embedding.text.passage_prefix, "passage: ");
        assert_eq!(c.embedding.text.pooling, Pooling::Mean);
        assert_eq!(c.embedding.expect_vocab, Some(250_002));
        assert_eq!(c.embedding.model.max_length, 512);
        // "Not found" is decided on e5's own second stage, at its own threshold.
        let e5_ranker =
            crate::retrieve::rerank::RankerModel::for_model("intfloat/multilingual-e5-small")
                .unwrap();
        assert_eq!(c.answer.min_relevance, e5_ranker.threshold);
        // Any other model: its own id, prefixes and pooling.
        let custom = MINIMAL.replace(
            "[embedding]\n",
            "[embedding]\nmodel_id = \"acme/embed\"\nquery_prefix = \"Q: \"\npooling = \"cls\"\n",
        );
        let c = Config::parse(&custom, Path::new("/etc/docent")).unwrap();
        assert_eq!(c.embedding.model.model_id, "acme/embed");
        assert_eq!(c.embedding.text.query_prefix, "Q: ");
        assert_eq!(c.embedding.text.passage_prefix, "");
        assert_eq!(c.embedding.text.pooling, Pooling::Cls);
        assert_eq!(c.embedding.expect_vocab, None);
    }

    /// Questions asked of an audit log that is off are refused, not ignored (a review); its
    /// size settings are harmless.
    #[test]
    fn questions_for_an_audit_log_that_is_off_are_refused() {
        let text = format!("{MINIMAL}[audit]\ninclude_question = true\n");
        let issues = Config::parse(&text, Path::new("/etc/docent")).unwrap_err();
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].path, "audit.include_question", "{issues:?}");
        let sizes = format!("{MINIMAL}[audit]\nkeep = 10\n");
        assert!(Config::parse(&sizes, Path::new("/etc/docent")).is_ok());
    }

    #[test]
    fn a_listen_address_off_this_machine_needs_tls() {
        let with = |server: &str| {
            MINIMAL.replace(
                "version = 1\n",
                &format!("version = 1\n[server]\n{server}\n"),
            )
        };
        let issues = Config::parse(&with("listen = \"0.0.0.0:7878\""), Path::new("/etc/docent"))
            .unwrap_err();
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].path, "server.listen", "{issues:?}");
        assert!(
            Config::parse(
                &with("listen = \"127.0.0.1:7878\""),
                Path::new("/etc/docent")
            )
            .is_ok()
        );
        let tls =
            with("listen = \"0.0.0.0:7878\"\ntls_cert = \"tls/c.pem\"\ntls_key = \"tls/k.pem\"");
        assert!(Config::parse(&tls, Path::new("/etc/docent")).is_ok());
    }

    #[test]
    fn metrics_off_loopback_need_metrics_public() {
        let with = |server: &str| {
            MINIMAL.replace(
                "version = 1\n",
                &format!("version = 1\n[server]\n{server}\n"),
            )
        };
        let open = with("metrics_listen = \"0.0.0.0:9464\"");
        let issues = Config::parse(&open, Path::new("/etc/docent")).unwrap_err();
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].path, "server.metrics_listen", "{issues:?}");
        let chosen = with("metrics_listen = \"0.0.0.0:9464\"\nmetrics_public = true");
        let c = Config::parse(&chosen, Path::new("/etc/docent")).unwrap();
        assert_eq!(
            c.server.metrics_listen,
            Some("0.0.0.0:9464".parse().unwrap())
        );
        for local in ["127.0.0.1:9464", "[::1]:9464"] {
            let c = Config::parse(
                &with(&format!("metrics_listen = \"{local}\"")),
                Path::new("/etc/docent"),
            )
            .unwrap();
            assert_eq!(c.server.metrics_listen, Some(local.parse().unwrap()));
        }
    }

    #[test]
    fn required_client_certificates_need_a_client_ca() {
        let with = with_tls;
        let issues = Config::parse(
            &with("tls_client_auth = \"required\""),
            Path::new("/etc/docent"),
        )
        .unwrap_err();
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].path, "server.tls_client_auth", "{issues:?}");
        assert!(issues[0].message.contains("tls_client_ca"), "{issues:?}");
        let c = Config::parse(
            &with("tls_client_auth = \"required\"\ntls_client_ca = \"tls/ca.pem\""),
            Path::new("/etc/docent"),
        )
        .unwrap();
        let tls = c.server.tls.unwrap();
        assert!(tls.client_auth_required);
        assert_eq!(
            tls.client_ca.as_deref(),
            Some(Path::new("/etc/docent/tls/ca.pem"))
        );
        // Optional client certificates without a CA: TLS with bearer tokens, as before.
        let c = Config::parse(&with(""), Path::new("/etc/docent")).unwrap();
        assert!(c.server.tls.is_some_and(|t| !t.client_auth_required));
    }

    #[test]
    fn revocation_lists_need_a_client_ca() {
        let with = with_tls;
        let issues = Config::parse(
            &with("tls_client_crl = \"tls/clients.crl\""),
            Path::new("/etc/docent"),
        )
        .unwrap_err();
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].path, "server.tls_client_crl", "{issues:?}");
        let c = Config::parse(
            &with("tls_client_ca = \"tls/ca.pem\"\ntls_client_crl = \"tls/clients.crl\""),
            Path::new("/etc/docent"),
        )
        .unwrap();
        assert_eq!(
            c.server.tls.unwrap().client_crl.as_deref(),
            Some(Path::new("/etc/docent/tls/clients.crl"))
        );
    }

    /// Session 34's review: usage is counted in the conversation store, so budgets without it
    /// were silently unlimited.
    #[test]
    fn token_budgets_need_the_conversation_store() {
        let quotas = format!("{MINIMAL}[quotas]\ndaily_tokens_per_identity = 1000\n");
        assert!(Config::parse(&quotas, Path::new("/etc/docent")).is_ok());
        let off = format!("{quotas}[conversations]\nenabled = false\n");
        let issues = Config::parse(&off, Path::new("/etc/docent")).unwrap_err();
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].path, "quotas", "{issues:?}");
        let groups = format!(
            "{MINIMAL}[quotas]\ndaily_tokens_per_group = {{ eng = 5 }}\n[conversations]\nenabled = false\n"
        );
        assert!(Config::parse(&groups, Path::new("/etc/docent")).is_err());
    }

    #[test]
    fn an_identity_may_not_take_an_audience_s_name() {
        for id in ["everyone", "group:hr"] {
            let text = format!("{MINIMAL}[[identities]]\nid = \"{id}\"\n");
            let issues = Config::parse(&text, Path::new("/etc/docent")).unwrap_err();
            assert_eq!(issues.len(), 1, "{issues:?}");
            assert_eq!(issues[0].path, "identities[0].id", "{issues:?}");
        }
    }

    /// Session 42's review: `groups = ["group:hr"]` made the identity a member of
    /// `group:group:hr`, outside every rule about `group:hr`.
    #[test]
    fn an_identity_s_groups_are_group_ids() {
        for g in ["group:hr", "User:ann", "", "h r"] {
            let text = format!("{MINIMAL}[[identities]]\nid = \"ann\"\ngroups = [\"{g}\"]\n");
            let issues = Config::parse(&text, Path::new("/etc/docent")).unwrap_err();
            assert_eq!(issues.len(), 1, "{issues:?}");
            assert_eq!(issues[0].path, "identities[0].groups[0]", "{issues:?}");
        }
        let text =
            format!("{MINIMAL}[[identities]]\nid = \"ann\"\ngroups = [\"hr\", \"corp:eng\"]\n");
        assert!(Config::parse(&text, Path::new("/etc/docent")).is_ok());
    }

    /// Session 31's review: blank aliases were taken (a certificate with an empty name mapped
    /// to them), and an API key could bind to an alias, which an identity file may move.
    #[test]
    fn aliases_are_not_blank_and_api_keys_name_an_id() {
        for alias in ["", "  ", "everyone", "group:hr"] {
            let text = format!("{MINIMAL}[[identities]]\nid = \"ann\"\naliases = [\"{alias}\"]\n");
            let issues = Config::parse(&text, Path::new("/etc/docent")).unwrap_err();
            assert_eq!(issues.len(), 1, "{issues:?}");
            assert_eq!(issues[0].path, "identities[0].aliases[0]", "{issues:?}");
        }
        let key = |identity: &str| {
            format!(
                "{MINIMAL}[[identities]]\nid = \"ann\"\naliases = [\"ann@corp.example\"]\n\
                 [[api_keys]]\nid = \"k\"\nidentity = \"{identity}\"\nsha256 = \"{}\"\n\
                 scopes = [\"query\"]\n",
                "ab".repeat(32)
            )
        };
        assert!(Config::parse(&key("ann"), Path::new("/etc/docent")).is_ok());
        let issues = Config::parse(&key("ann@corp.example"), Path::new("/etc/docent")).unwrap_err();
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].path, "api_keys[0].identity", "{issues:?}");
        assert!(issues[0].message.contains("alias"), "{issues:?}");
    }

    #[test]
    fn an_llm_key_or_milvus_token_goes_over_plain_http_only_to_this_machine_unless_allowed() {
        let parse = |extra: &str| -> Vec<String> {
            Config::parse(&format!("{MINIMAL}{extra}"), Path::new("/etc/docent"))
                .err()
                .unwrap_or_default()
                .into_iter()
                .map(|i| i.path)
                .collect()
        };
        let llm = "[llm]\nmodel = \"m\"\napi_key = \"k\"\n";
        assert_eq!(
            parse(&format!("{llm}base_url = \"http://llm.corp/v1\"")),
            ["llm.api_key"]
        );
        assert!(parse(&format!("{llm}base_url = \"http://127.0.0.1:8088/v1\"")).is_empty());
        assert!(
            parse(&format!(
                "{llm}base_url = \"http://llm.corp/v1\"\nallow_plain_http = true"
            ))
            .is_empty()
        );
        // Without a key nothing secret is sent.
        assert!(parse("[llm]\nmodel = \"m\"\nbase_url = \"http://llm.corp/v1\"").is_empty());
        let milvus = MINIMAL.replace("[index]\n", "[index]\nbackend = \"milvus\"\n")
            + "[index.milvus]\nuri = \"http://milvus.corp:19530\"\ntoken = \"u:p\"\n";
        let issues: Vec<String> = Config::parse(&milvus, Path::new("/etc/docent"))
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|i| i.path)
            .collect();
        assert_eq!(issues, ["index.milvus.token"]);
        let allowed = milvus.replace("token = ", "allow_plain_http = true\ntoken = ");
        Config::parse(&allowed, Path::new("/etc/docent")).unwrap();
    }

    #[test]
    fn model_settings_that_contradict_are_refused_with_their_paths() {
        let issues = |extra: &str| -> Vec<String> {
            let text = MINIMAL.replace("[embedding]\n", &format!("[embedding]\n{extra}\n"));
            Config::parse(&text, Path::new("/etc/docent"))
                .err()
                .unwrap_or_default()
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        let one = |extra: &str, want: &str| {
            let got = issues(extra);
            assert!(got.len() == 1 && got[0].contains(want), "{extra}: {got:?}");
        };
        one(
            "model = \"e5-huge\"",
            "embedding.model: unknown model \"e5-huge\"; known models are \"all-MiniLM-L6-v2\", \"multilingual-e5-small\"",
        );
        one(
            "model = \"multilingual-e5-small\"\nmodel_id = \"x\"",
            "embedding.model_id: model = \"multilingual-e5-small\" sets the model id",
        );
        one(
            "model = \"multilingual-e5-small\"\nquery_prefix = \"q: \"",
            "embedding.query_prefix: model = \"multilingual-e5-small\" sets it",
        );
        one(
            "model = \"multilingual-e5-small\"\nmax_length = 1024",
            "embedding.max_length: multilingual-e5-small takes at most 512 tokens",
        );
        // The same model named by its id (a review: only `model` was checked).
        one(
            "model_id = \"sentence-transformers/all-MiniLM-L6-v2\"\nmax_length = 1024",
            "embedding.max_length: sentence-transformers/all-MiniLM-L6-v2 takes at most 512",
        );
        one(
            "threads = 65",
            "embedding.threads: must be between 1 and 64",
        );
        one(
            "pooling = \"max\"",
            "embedding.pooling: must be \"mean\" or \"cls\"",
        );
        one(
            "passage_prefix = \"a\\nb\"",
            "embedding.passage_prefix: must be at most 64",
        );
        one("model_id = \" \"", "embedding.model_id: must not be empty");
        let no_dir = "version = 1\n[embedding]\nmodel = \"multilingual-e5-small\"\n";
        let got = Config::parse(no_dir, Path::new("/etc")).err().unwrap();
        assert!(
            got.iter().any(|i| i.path == "embedding.model_dir"
                && i.message.contains("models/multilingual-e5-small")),
            "{got:?}"
        );
    }

    #[test]
    fn passages_per_document_defaults_to_two_and_is_checked() {
        let c = Config::parse(MINIMAL, Path::new("/etc/docent")).unwrap();
        assert_eq!(c.assistant.answer.passages_per_document, 2);
        let text = format!("{MINIMAL}\n[answer]\npassages_per_document = 0\n");
        let issues = Config::parse(&text, Path::new("/etc/docent")).unwrap_err();
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].path, "answer.passages_per_document");
    }

    #[test]
    fn the_sentence_check_defaults_per_model_and_minus_one_turns_it_off() {
        let at = |extra: &str| {
            let text = format!("{MINIMAL}\n[answer]\n{extra}\n");
            Config::parse(&text, Path::new("/etc/docent"))
                .unwrap()
                .assistant
                .answer
                .min_sentence_similarity
        };
        // MiniLM (the default model): the value shipped with its second stage.
        let shipped = crate::retrieve::rerank::RankerModel::builtin().sentence_threshold;
        assert!(shipped.is_some());
        assert_eq!(at(""), shipped);
        assert_eq!(at("min_sentence_similarity = 0.55"), Some(0.55));
        assert_eq!(at("min_sentence_similarity = -1"), None);
        // e5: its own value (its cosines run higher than MiniLM's).
        let e5 = MINIMAL.replace(
            "[embedding]\n",
            "[embedding]\nmodel = \"multilingual-e5-small\"\n",
        );
        let c = Config::parse(&e5, Path::new("/etc/docent")).unwrap();
        let e5_shipped =
            crate::retrieve::rerank::RankerModel::for_model("intfloat/multilingual-e5-small")
                .and_then(|m| m.sentence_threshold);
        assert!(e5_shipped.is_some() && e5_shipped != shipped);
        assert_eq!(c.assistant.answer.min_sentence_similarity, e5_shipped);
        // Out of range, and NaN (which compares false with both bounds), are refused.
        for bad in ["1.5", "nan"] {
            let text = format!("{MINIMAL}\n[answer]\nmin_sentence_similarity = {bad}\n");
            let issues = Config::parse(&text, Path::new("/etc/docent")).unwrap_err();
            assert_eq!(issues[0].path, "answer.min_sentence_similarity", "{bad}");
        }
    }

    /// How many sentences the check compares comes with the model's threshold (MiniLM's was
    /// chosen over three, e5's over four), and a configured number is bounded.
    #[test]
    fn the_sentence_check_compares_as_many_sentences_as_its_threshold_was_chosen_with() {
        let depth = |text: &str| {
            Config::parse(text, Path::new("/etc/docent"))
                .unwrap()
                .assistant
                .answer
                .check_sentences
        };
        assert_eq!(depth(MINIMAL), 3);
        let e5 = MINIMAL.replace(
            "[embedding]\n",
            "[embedding]\nmodel = \"multilingual-e5-small\"\n",
        );
        assert_eq!(depth(&e5), 4);
        assert_eq!(
            depth(&format!("{MINIMAL}\n[answer]\ncheck_sentences = 5\n")),
            5
        );
        for bad in [0, 11] {
            let text = format!("{MINIMAL}\n[answer]\ncheck_sentences = {bad}\n");
            let issues = Config::parse(&text, Path::new("/etc/docent")).unwrap_err();
            assert_eq!(issues[0].path, "answer.check_sentences", "{bad}");
        }
    }

    /// `parse_memory_mib` reaches the limits of the pipeline's parse and of the push API's
    /// check alike, and a value too small for the parser's own stack is refused.
    #[test]
    fn parse_memory_reaches_every_parse_of_the_connector() {
        let with = |mib: u32| {
            format!(
                "{MINIMAL}[[connectors]]\ntype = \"push\"\nid = \"p\"\nwriters = [\"user:a\"]\nparse_memory_mib = {mib}\n"
            )
        };
        let c = Config::parse(&with(1536), Path::new("/etc/docent")).unwrap();
        assert_eq!(c.connectors[0].limits().worker_memory, 1536 << 20);
        let built = c.connectors[0].spec.build().unwrap();
        let handle = built.handle.expect("a push source");
        let push = handle
            .downcast_ref::<crate::ingest::push::PushSource>()
            .expect("a push source");
        assert_eq!(push.limits.worker_memory, 1536 << 20);
        let e = Config::parse(&with(512), Path::new("/etc/docent")).unwrap_err();
        assert!(format!("{e:?}").contains("parse_memory_mib"), "{e:?}");
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let text = r#"
version = 2
bogus = 1
[server]
listen = "nowhere"
[index]
data_dir = "d"
commit_interval_ms = 1
[embedding]
model_dir = "m"
onnxruntime_lib = "o"
typo_key = 3
[[groups]]
id = "a"
member_of = ["b"]
[[groups]]
id = "b"
member_of = ["a", "ghost"]
[[identities]]
id = "alice"
token_sha256 = "xyz"
[[connectors]]
type = "fs"
id = "bad id"
roots = ["/definitely/not/here"]
[[connectors.acl_rules]]
path_prefix = "hr"
allow = ["grp:hr"]
mode = "merge"
[[connectors]]
type = "ftp"
id = "x"
"#;
        let issues = Config::parse(text, Path::new("/")).unwrap_err();
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        for want in [
            "bogus",
            "embedding",
            "version",
            "server.listen",
            "index.commit_interval_ms",
            "groups[1].member_of[1]",
            "groups",
            "identities[0].token_sha256",
            "connectors[0].id",
            "connectors[0].roots[0]",
            "connectors[0].acl_rules[0].mode",
            "connectors[0].acl_rules[0].allow[0]",
            "connectors[1].type",
        ] {
            assert!(paths.contains(&want), "missing {want} in {issues:#?}");
        }
        let embedding = issues.iter().find(|i| i.path == "embedding").unwrap();
        assert!(embedding.message.contains("typo_key"), "{embedding:?}");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let issues = Config::parse("version = 1\n[index\n", Path::new("/")).unwrap_err();
        assert_eq!(issues.len(), 1);
        assert!(issues[0].message.contains("line 2"), "{issues:?}");
    }

    #[test]
    fn env_vars_are_interpolated() {
        // SAFETY-free: a unique variable name only this test reads.
        let text = MINIMAL.replace("\"data\"", "\"${DOCENT_TEST_UNSET_VAR_XYZ}\"");
        let issues = Config::parse(&text, Path::new("/")).unwrap_err();
        assert_eq!(issues[0].path, "index.data_dir");
        assert!(issues[0].message.contains("DOCENT_TEST_UNSET_VAR_XYZ"));
        let home = MINIMAL.replace("\"data\"", "\"${HOME}/d\"");
        let c = Config::parse(&home, Path::new("/")).unwrap();
        assert!(c.index.data_dir.ends_with("d"));
        assert!(!c.index.data_dir.to_string_lossy().contains('$'));
    }

    #[test]
    fn the_milvus_backend_is_checked() {
        let with = |extra: &str, section: &str| {
            let text = MINIMAL.replace("[index]\n", &format!("[index]\n{extra}\n")) + section;
            Config::parse(&text, Path::new("/etc/docent"))
        };
        let ok = with(
            "backend = \"milvus\"\nrole = \"query\"",
            "[index.milvus]\nuri = \"https://milvus:19530\"\nca_file = \"ca.pem\"\ntoken = \"root:secret\"\n",
        )
        .unwrap();
        let m = ok.index.milvus.as_ref().unwrap();
        assert_eq!(m.collection, "docent_chunks");
        assert_eq!(m.ca_file.as_deref(), Some(Path::new("/etc/docent/ca.pem")));
        assert_eq!(ok.index.role, Role::Query);
        assert!(
            !format!("{m:?}").contains("secret"),
            "the token is redacted"
        );
        let paths = |r: Result<Config, Vec<ConfigIssue>>| -> Vec<String> {
            r.unwrap_err().into_iter().map(|i| i.path).collect()
        };
        assert_eq!(paths(with("backend = \"milvus\"", "")), ["index.milvus"]);
        assert_eq!(paths(with("backend = \"qdrant\"", "")), ["index.backend"]);
        assert_eq!(
            paths(with("", "[index.milvus]\nuri = \"http://m:19530\"\n")),
            ["index.milvus"]
        );
        assert_eq!(
            paths(with(
                "backend = \"milvus\"",
                "[index.milvus]\nuri = \"https://m:19530\"\ncollection = \"9-bad\"\n"
            )),
            ["index.milvus.ca_file", "index.milvus.collection"]
        );
        assert_eq!(paths(with("role = \"query\"", "")), ["index.role"]);
        assert_eq!(paths(with("role = \"reader\"", "")), ["index.role"]);
    }

    /// Settings that each pass but do not go together, found by a review: a context that
    /// leaves no room for passages, a first-token wait past the total, an LLM rewrite or a
    /// zero budget without anything to use them, credentials written into a URL.
    #[test]
    fn settings_that_do_not_go_together_are_refused() {
        let parse = |extra: &str| -> Vec<(String, String)> {
            Config::parse(&format!("{MINIMAL}{extra}"), Path::new("/etc/docent"))
                .err()
                .unwrap_or_default()
                .into_iter()
                .map(|i| (i.path, i.message))
                .collect()
        };
        let llm = "[llm]\nmodel = \"m\"\nbase_url = \"http://127.0.0.1:8088/v1\"\n";
        assert!(parse(llm).is_empty(), "{:?}", parse(llm));
        let small = parse(&format!("{llm}context_tokens = 4096\nmax_tokens = 4096\n"));
        assert_eq!(small.len(), 1, "{small:?}");
        assert_eq!(small[0].0, "llm.context_tokens");
        let waits = parse(&format!(
            "{llm}first_token_timeout_ms = 90000\ntotal_timeout_ms = 60000\n"
        ));
        assert_eq!(waits.len(), 1, "{waits:?}");
        assert_eq!(waits[0].0, "llm.first_token_timeout_ms");
        let creds =
            parse("[llm]\nmodel = \"m\"\nbase_url = \"http://svc:hunter2@llm.internal/v1\"\n");
        assert_eq!(creds.len(), 1, "{creds:?}");
        assert_eq!(creds[0].0, "llm.base_url");
        assert!(
            creds.iter().all(|(_, m)| !m.contains("hunter2")),
            "{creds:?}"
        );
        let rewrite = parse("[conversations]\nrewrite = \"llm\"\n");
        assert!(
            rewrite.iter().any(|(p, _)| p == "conversations.rewrite"),
            "{rewrite:?}"
        );
        // One typo in a section is that section's one issue, not its defaults' too.
        let typo =
            parse("[llm]\nmodel = \"m\"\nbase_url = \"http://127.0.0.1:1/v1\"\nmax_token = 9\n");
        assert_eq!(typo.len(), 1, "{typo:?}");
        assert_eq!(typo[0].0, "llm");
        // A phrase of symbols alone matches every text (a review): refused; one with a word
        // among symbols is fine.
        for phrase in ["🦅", "—", "\\u200B", " * "] {
            let blocked = parse(&format!(
                "[[guardrails.blocked_phrases]]\nphrases = [\"{phrase}\"]\n"
            ));
            assert!(
                blocked
                    .iter()
                    .any(|(p, _)| p == "guardrails.blocked_phrases[0].phrases"),
                "{phrase}: {blocked:?}"
            );
        }
        assert!(parse("[[guardrails.blocked_phrases]]\nphrases = [\"🦅 Falcon\"]\n").is_empty());
        // An empty entity list turned PII redaction off while `enabled` said on (session 40's
        // note); turning it off is `enabled = false`.
        let none = parse("[guardrails.pii]\nentities = []\n");
        assert_eq!(none.len(), 1, "{none:?}");
        assert_eq!(none[0].0, "guardrails.pii.entities");
        assert!(parse("[guardrails.pii]\nenabled = false\nentities = []\n").is_empty());
        let jwt = parse("[auth]\njwt_issuer = \"https://idp.example\"\n");
        assert!(jwt.iter().any(|(p, _)| p == "auth.jwt_issuer"), "{jwt:?}");
        let alpha = parse("[retrieval]\nfusion = \"rrf\"\nconvex_alpha = 5.0\n");
        assert!(
            alpha.iter().any(|(p, _)| p == "retrieval.convex_alpha"),
            "{alpha:?}"
        );
        let zero = parse("[quotas]\ndaily_tokens_per_identity = 0\n");
        assert!(
            zero.iter()
                .any(|(p, _)| p == "quotas.daily_tokens_per_identity"),
            "{zero:?}"
        );
        assert_eq!(
            without_credentials("https://u:p@milvus:19530/x"),
            "https://***@milvus:19530/x"
        );
        assert!(!has_credentials("https://milvus:19530/a@b"));
    }
}
