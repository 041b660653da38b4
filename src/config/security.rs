//! Validation of the security sections: `[auth]`, `[[api_keys]]`, `[[identity_sources]]`,
//! `[guardrails]` and `[audit]`.

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
        if r.phrases.is_empty() || r.phrases.iter().any(|s| s.trim().is_empty()) {
            is.add(
                format!("{p}.phrases"),
                "needs at least one non-empty phrase",
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
    let path = a.path.as_ref()?;
    Some(AuditConfig {
        path: resolve(base, path),
        include_question: a.include_question,
        max_bytes: is.range("audit.max_bytes", a.max_bytes, 4096, 1 << 40),
        keep: is.range("audit.keep", a.keep, 0, 1000),
    })
}
