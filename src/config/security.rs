//! Validation of the security sections: `[auth]`, `[[api_keys]]`, `[[identity_sources]]`,
//! `[guardrails]` and `[audit]`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::raw::{RawApiKey, RawAudit, RawAuth, RawGuardrails, RawIdentitySource};
use super::{Issues, principals, resolve};
use crate::audit::AuditConfig;
use crate::guardrail::{
    Audience, DEFAULT_BLOCK_MESSAGE, GroundingConfig, GuardrailConfig, InjectionConfig, PhraseRule,
    PiiConfig, TopicAction, TopicRule, pii,
};
use crate::identity::jwt::JwtConfig;
use crate::identity::sources::{IdentitySource, SourceFormat};
use crate::identity::{ApiKeySpec, Permissions};

pub(super) fn jwt(is: &mut Issues, base: &Path, a: &RawAuth) -> Option<JwtConfig> {
    let Some(file) = a.jwks_file.as_ref() else {
        // Set without the key set, they would leave JWTs silently refused.
        for (k, v) in [
            ("auth.jwt_issuer", &a.jwt_issuer),
            ("auth.jwt_audience", &a.jwt_audience),
        ] {
            if !v.trim().is_empty() {
                is.add(k, "set without auth.jwks_file: no JWT would be accepted");
            }
        }
        return None;
    };
    for (k, v) in [
        ("auth.jwt_issuer", &a.jwt_issuer),
        ("auth.jwt_audience", &a.jwt_audience),
    ] {
        if v.trim().is_empty() {
            is.add(k, "required when auth.jwks_file is set");
        }
    }
    if a.jwt_user_claim.trim().is_empty() {
        is.add("auth.jwt_user_claim", "must not be empty");
    }
    Some(JwtConfig {
        jwks_file: resolve(base, file),
        issuer: a.jwt_issuer.clone(),
        audience: a.jwt_audience.clone(),
        user_claim: a.jwt_user_claim.clone(),
        leeway_secs: is.range("auth.jwt_leeway_secs", a.jwt_leeway_secs, 0, 3600),
        max_lifetime_secs: is.range(
            "auth.jwt_max_lifetime_secs",
            a.jwt_max_lifetime_secs,
            60,
            366 * 86_400,
        ),
    })
}

pub(super) fn sources(
    is: &mut Issues,
    base: &Path,
    raw: &[RawIdentitySource],
) -> Vec<IdentitySource> {
    raw.iter()
        .enumerate()
        .filter_map(|(i, s)| match SourceFormat::parse(&s.format) {
            Some(format) => {
                if s.passwd.is_some() && format != SourceFormat::GroupFile {
                    is.add(
                        format!("identity_sources[{i}].passwd"),
                        "only a \"group_file\" source reads a passwd file".to_string(),
                    );
                }
                Some(IdentitySource {
                    format,
                    passwd: s.passwd.as_deref().map(|p| resolve(base, p)),
                    path: resolve(base, &s.path),
                })
            }
            None => {
                is.add(
                    format!("identity_sources[{i}].format"),
                    format!(
                        "must be \"group_file\", \"json\" or \"csv\", got {:?}",
                        s.format
                    ),
                );
                None
            }
        })
        .collect()
}

pub(super) fn api_keys(is: &mut Issues, raw: &[RawApiKey]) -> Vec<ApiKeySpec> {
    let mut ids = std::collections::BTreeSet::new();
    raw.iter()
        .enumerate()
        .map(|(i, k)| {
            let p = format!("api_keys[{i}]");
            if k.id.trim().is_empty() || !ids.insert(k.id.clone()) {
                is.add(format!("{p}.id"), "must be a non-empty, unique key id");
            }
            let sha = k.sha256.to_ascii_lowercase();
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                is.add(
                    format!("{p}.sha256"),
                    "must be 64 hex digits (sha256 of the key)",
                );
            }
            let scopes = Permissions::from_scopes(k.scopes.iter().map(String::as_str))
                .unwrap_or_else(|bad| {
                    is.add(
                        format!("{p}.scopes"),
                        format!(
                            "unknown scope {bad:?}; known: {}",
                            Permissions::SCOPE_NAMES.join(", ")
                        ),
                    );
                    Permissions::default()
                });
            let expires_at =
                k.expires_at.as_ref().and_then(|t| {
                    match time::OffsetDateTime::parse(
                        t,
                        &time::format_description::well_known::Rfc3339,
                    ) {
                        Ok(t) => Some(t.unix_timestamp()),
                        Err(e) => {
                            is.add(
                                format!("{p}.expires_at"),
                                format!("not an RFC 3339 time (2027-01-31T00:00:00Z): {e}"),
                            );
                            None
                        }
                    }
                });
            ApiKeySpec {
                id: k.id.clone(),
                identity: k.identity.clone(),
                sha256: sha,
                scopes,
                expires_at,
                revoked: k.revoked,
            }
        })
        .collect()
}

fn audience(is: &mut Issues, path: &str, applies_to: &[String], exempt: &[String]) -> Audience {
    let tokens = |is: &mut Issues, key: &str, list: &[String]| {
        principals(is, &format!("{path}.{key}"), list)
            .iter()
            .map(|p| p.token())
            .collect()
    };
    Audience {
        applies_to: tokens(is, "applies_to", applies_to),
        exempt: tokens(is, "exempt", exempt),
    }
}

pub(super) fn guardrails(
    is: &mut Issues,
    g: &RawGuardrails,
    connector_ids: &[String],
) -> GuardrailConfig {
    let mut cfg = GuardrailConfig::default();
    for (i, r) in g.blocked_phrases.iter().enumerate() {
        let p = format!("guardrails.blocked_phrases[{i}]");
        if r.phrases.is_empty()
            || r.phrases
                .iter()
                .any(|s| !crate::guardrail::phrase_has_words(s))
        {
            is.add(
                format!("{p}.phrases"),
                "needs at least one phrase, each with a letter or digit (one of symbols alone matches every text)",
            );
        }
        cfg.phrases.push(PhraseRule {
            phrases: r.phrases.clone(),
            message: r
                .message
                .clone()
                .unwrap_or_else(|| DEFAULT_BLOCK_MESSAGE.into()),
            audience: audience(is, &p, &r.applies_to, &r.exempt),
        });
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, t) in g.topics.iter().enumerate() {
        let p = format!("guardrails.topics[{i}]");
        if t.name.trim().is_empty() || !names.insert(t.name.clone()) {
            is.add(
                format!("{p}.name"),
                "must be a non-empty, unique topic name",
            );
        }
        if t.description.trim().is_empty() && t.examples.is_empty() {
            is.add(&p, "needs a description or example questions");
        }
        let action = match t.action.as_str() {
            "block" => {
                if !t.sources.is_empty() {
                    is.add(
                        format!("{p}.sources"),
                        "only action \"restrict\" takes sources (\"block\" refuses the question)",
                    );
                }
                TopicAction::Block
            }
            "restrict" => {
                if t.sources.is_empty() {
                    is.add(format!("{p}.sources"), "action \"restrict\" needs sources");
                }
                for (j, s) in t.sources.iter().enumerate() {
                    if !connector_ids.contains(s) {
                        is.add(
                            format!("{p}.sources[{j}]"),
                            format!("unknown connector {s:?}"),
                        );
                    }
                }
                TopicAction::Restrict {
                    sources: t.sources.clone(),
                }
            }
            other => {
                is.add(
                    format!("{p}.action"),
                    format!("must be \"block\" or \"restrict\", got {other:?}"),
                );
                TopicAction::Block
            }
        };
        cfg.topics.push(TopicRule {
            name: t.name.clone(),
            description: t.description.clone(),
            examples: t.examples.clone(),
            threshold: is.range(&format!("{p}.threshold"), t.threshold, -1.0, 1.0),
            action,
            message: t
                .message
                .clone()
                .unwrap_or_else(|| DEFAULT_BLOCK_MESSAGE.into()),
            audience: audience(is, &p, &t.applies_to, &t.exempt),
        });
    }
    let inj = &g.injection;
    cfg.injection = InjectionConfig {
        enabled: inj.enabled,
        screen_question: inj.screen_question,
        screen_passages: inj.screen_passages,
        message: inj.message.clone().unwrap_or(cfg.injection.message),
        audience: audience(is, "guardrails.injection", &[], &inj.exempt),
    };
    let mut entities = Vec::new();
    for (i, e) in g.pii.entities.iter().enumerate() {
        match pii::Entity::parse(e) {
            Some(e) => entities.push(e),
            None => is.add(
                format!("guardrails.pii.entities[{i}]"),
                format!(
                    "unknown entity type {e:?}; known: {}",
                    pii::Entity::ALL.map(|e| e.name()).join(", ")
                ),
            ),
        }
    }
    // An empty list would turn redaction off while `enabled` says it is on.
    if g.pii.enabled && g.pii.entities.is_empty() {
        is.add(
            "guardrails.pii.entities",
            "no entity types: list some, or set `enabled = false` to turn PII redaction off",
        );
    }
    cfg.pii = PiiConfig {
        enabled: g.pii.enabled,
        entities,
        audience: audience(is, "guardrails.pii", &[], &g.pii.exempt),
    };
    cfg.grounding = GroundingConfig {
        enabled: g.grounding.enabled,
        min_support: is.range(
            "guardrails.grounding.min_support",
            g.grounding.min_support,
            0.0,
            1.0,
        ),
    };
    cfg
}

pub(super) fn audit(is: &mut Issues, base: &Path, a: &RawAudit) -> Option<AuditConfig> {
    let Some(path) = a.path.as_ref() else {
        // Asking for questions in a log that is not written (a review: it turned nothing on,
        // without a word). (Its size settings are harmless, and allowed.)
        if a.include_question {
            is.add(
                "audit.include_question",
                "set without audit.path: no audit log is written",
            );
        }
        return None;
    };
    Some(AuditConfig {
        path: resolve(base, path),
        include_question: a.include_question,
        max_bytes: is.range("audit.max_bytes", a.max_bytes, 4096, 1 << 40),
        keep: is.range("audit.keep", a.keep, 0, 1000),
    })
}

/// What a config file still grants, read leniently from a file that does not validate: after a
/// failed reload, what it no longer grants is withdrawn anyway (a revocation must not wait for
/// an unrelated error to be fixed). Only credentials and privileges are read; nothing here ever
/// grants more than the current identities.
#[derive(Debug, Default)]
pub struct Granted {
    /// Identity id → what the file gives it.
    pub identities: BTreeMap<String, GrantedIdentity>,
    /// API key id → the key as the file lists it (keys revoked or listed twice are absent).
    pub api_keys: BTreeMap<String, GrantedKey>,
    /// The file no longer sets `auth.jwks_file` (as a string): no JWT key is kept.
    pub jwks_file_removed: bool,
}

#[derive(Debug, Default)]
pub struct GrantedIdentity {
    /// Lowercase hex; `None` when the file gives it no token (or one that is not a string).
    pub token_sha256: Option<String>,
    pub admin: bool,
    pub act_as: bool,
    /// Its `act_for` entries (empty when absent: anyone); `None` when they cannot be read (a
    /// value that is not a list of strings): then `act_as` is withdrawn.
    pub act_for: Option<Vec<String>>,
    pub ingest: bool,
    /// Its aliases that are strings (a credential may sign in by them).
    pub aliases: BTreeSet<String>,
}

#[derive(Debug)]
pub struct GrantedKey {
    pub identity: String,
    /// Lowercase hex.
    pub sha256: String,
    /// `None` when the scopes cannot be read: the key is then withdrawn.
    pub scopes: Option<Permissions>,
    /// Unix seconds (`None`: no expiry). A key whose expiry cannot be read is absent.
    pub expires_at: Option<i64>,
}

/// The ids of the `[[api_keys]]` entries a config file that is not TOML marks revoked, read
/// line by line: an `id = "…"` line and a `revoked = …` line whose value is not `false`, in
/// one entry. It can only take keys away, so it reads loosely (a review: a revocation written
/// as a second `revoked = true` under the example's `revoked = false` made the file not TOML,
/// and the key kept working until a reload succeeded).
pub fn revoked_in_text(text: &str) -> BTreeSet<String> {
    fn value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
        let rest = line.trim().strip_prefix(key)?.trim_start();
        let v = rest.strip_prefix('=')?.trim_start();
        // A quoted value up to its closing quote (a `#` inside is not a comment), else up to
        // a comment.
        for q in ['"', '\''] {
            if let Some(inner) = v.strip_prefix(q) {
                return inner.find(q).map(|end| &inner[..end]);
            }
        }
        Some(v.split('#').next().unwrap_or("").trim())
    }
    let mut out = BTreeSet::new();
    let (mut in_keys, mut id, mut revoked) = (false, None::<String>, false);
    let mut end = |in_keys: bool, id: &mut Option<String>, revoked: &mut bool| {
        if in_keys
            && *revoked
            && let Some(id) = id.take()
        {
            out.insert(id);
        }
        *id = None;
        *revoked = false;
    };
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            end(in_keys, &mut id, &mut revoked);
            let header: String = t.chars().filter(|c| !c.is_whitespace()).collect();
            in_keys = header.starts_with("[[api_keys]]");
            continue;
        }
        if !in_keys {
            continue;
        }
        if let Some(v) = value(t, "id") {
            id = Some(v.to_string());
        } else if let Some(v) = value(t, "revoked") {
            revoked |= v != "false";
        }
    }
    end(in_keys, &mut id, &mut revoked);
    out
}

/// [`Granted`] from a config file's text; `None` when it is not TOML at all (nothing can be
/// told, and nothing is withdrawn). A flag that is not `true` grants nothing; a key's
/// `revoked` that is not `false` revokes it, and so does an `expires_at` that is not an RFC
/// 3339 time; an id listed twice grants nothing.
pub fn granted(text: &str) -> Option<Granted> {
    use toml::Value;
    let table = super::raw::lenient_table(text)?;
    let entries = |section: &str| -> Vec<toml::Table> {
        table
            .get(section)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_table).cloned().collect())
            .unwrap_or_default()
    };
    let text_of = |t: &toml::Table, k: &str| t.get(k).and_then(Value::as_str).map(str::to_string);
    let flag = |t: &toml::Table, k: &str| t.get(k).and_then(Value::as_bool) == Some(true);
    let mut g = Granted {
        jwks_file_removed: table
            .get("auth")
            .and_then(|a| a.get("jwks_file"))
            .and_then(Value::as_str)
            .is_none(),
        ..Granted::default()
    };
    let mut twice = BTreeSet::new();
    for t in entries("identities") {
        let Some(id) = text_of(&t, "id") else {
            continue;
        };
        let spec = GrantedIdentity {
            token_sha256: text_of(&t, "token_sha256").map(|h| h.to_ascii_lowercase()),
            admin: flag(&t, "admin"),
            act_as: flag(&t, "act_as"),
            act_for: match t.get("act_for") {
                None => Some(Vec::new()),
                Some(v) => v.as_array().and_then(|a| {
                    a.iter()
                        .map(|x| x.as_str().map(str::to_string))
                        .collect::<Option<Vec<_>>>()
                }),
            },
            ingest: flag(&t, "ingest"),
            aliases: t
                .get("aliases")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        };
        if g.identities.insert(id.clone(), spec).is_some() {
            twice.insert(id);
        }
    }
    for id in &twice {
        g.identities.remove(id);
    }
    let mut seen = BTreeSet::new();
    for t in entries("api_keys") {
        let Some(id) = text_of(&t, "id") else {
            continue;
        };
        if !seen.insert(id.clone()) {
            g.api_keys.remove(&id);
            continue;
        }
        let revoked = t.get("revoked").is_some_and(|v| v.as_bool() != Some(false));
        let (Some(identity), Some(sha256)) = (text_of(&t, "identity"), text_of(&t, "sha256"))
        else {
            continue;
        };
        if revoked {
            continue;
        }
        let expires_at = match t.get("expires_at") {
            None => None,
            Some(v) => match v.as_str().map(|s| {
                time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            }) {
                Some(Ok(at)) => Some(at.unix_timestamp()),
                _ => continue,
            },
        };
        let scopes = match t.get("scopes") {
            None => Some(Permissions {
                query: true,
                ..Permissions::default()
            }),
            Some(v) => v
                .as_array()
                .and_then(|a| a.iter().map(Value::as_str).collect::<Option<Vec<_>>>())
                .and_then(|names| Permissions::from_scopes(names).ok()),
        };
        g.api_keys.insert(
            id,
            GrantedKey {
                identity,
                sha256: sha256.to_ascii_lowercase(),
                scopes,
                expires_at,
            },
        );
    }
    Some(g)
}
