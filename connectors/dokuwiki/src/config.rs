//! The connector's `[[connectors]]` section: parsed raw (unknown keys rejected), then validated
//! into a [`DokuWikiConfig`] with every problem reported at once.

use std::fmt;
use std::time::Duration;

use docent_connector_api::registry::{ConfigEnv, ConfigIssue, Issues};
use serde::Deserialize;

use crate::acl::{PrincipalMapping, Superusers};

/// What to do with a page whose DokuWiki ACL Docent can express only more narrowly (see
/// [`crate::acl`]): some readers DokuWiki lets in would be refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossyAcl {
    /// Index it with the narrower ACL (nobody gets in whom DokuWiki refuses).
    #[default]
    Narrow,
    /// Do not index it; it is reported as skipped with the reason.
    Skip,
}

/// The section as written. Every key but `url`, `username` and `password` has a default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// The wiki's base URL (`https://wiki.example.com/dokuwiki`): the one before `/doku.php`.
    pub url: String,
    /// The crawler's account: it must be a DokuWiki superuser (to read the ACL rules through the
    /// ACL plugin) and allowed by the wiki's `remoteuser` setting.
    pub username: String,
    /// `${VAR}` references are interpolated by Docent before the section gets here.
    pub password: String,
    /// Send the password over `http://` to another machine (a private network). DokuWiki gets
    /// it with every request, so by default it goes only over https or to this machine.
    #[serde(default)]
    pub allow_plain_http: bool,
    /// Namespace prefixes to crawl (`["eng", "hr:policies"]`); empty: the whole wiki.
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default = "default_poll")]
    pub poll_interval_secs: u64,
    #[serde(default = "default_full")]
    pub full_reconcile_interval_secs: u64,
    /// The wiki's `recent_days`: how long its recent-changes log is kept. A checkpoint older than
    /// that is resumed with a full reconciliation.
    #[serde(default = "default_recent_days")]
    pub recent_days: u64,
    #[serde(default = "default_concurrency")]
    pub max_concurrent_requests: usize,
    #[serde(default = "default_timeout")]
    pub request_timeout_secs: u64,
    #[serde(default = "default_percent")]
    pub deletion_protection_percent: u32,
    #[serde(default = "default_min_docs")]
    pub deletion_protection_min_docs: u64,
    /// Prepended to DokuWiki logins: `user:<user_prefix><login>`.
    #[serde(default)]
    pub user_prefix: String,
    /// Prepended to DokuWiki groups: `group:<group_prefix><group>`.
    #[serde(default)]
    pub group_prefix: String,
    /// The wiki's `superuser` setting (`["@admin", "root"]`): they read every page. Empty: no
    /// bypass is assumed (safe; superusers then see in Docent only what the rules give them).
    #[serde(default)]
    pub superusers: Vec<String>,
    /// Take the superuser groups (`@admin`) as the config gives them on releases whose API
    /// cannot check a group (2024-02-06 "Kaos" on). Default false: there, a group is left out
    /// (with the `Unmapped` alarm) rather than trusted unchecked, since a group copied from an
    /// example would read every page (a review).
    #[serde(default)]
    pub trust_superuser_groups: bool,
    /// The wiki's auth backend ignores the case of names (authldap, authad): DokuWiki then
    /// compares rules and superusers lowercased, and so does Docent. Give identities the
    /// lowercase logins and groups.
    #[serde(default)]
    pub case_insensitive_auth: bool,
    #[serde(default)]
    pub lossy_acl: LossyAcl,
}

fn default_poll() -> u64 {
    60
}
fn default_full() -> u64 {
    86_400
}
fn default_recent_days() -> u64 {
    7
}
fn default_concurrency() -> usize {
    2
}
fn default_timeout() -> u64 {
    60
}
fn default_percent() -> u32 {
    15
}
fn default_min_docs() -> u64 {
    5
}

/// Validated configuration of one DokuWiki connector.
#[derive(Clone)]
pub struct DokuWikiConfig {
    pub id: String,
    /// Base URL without a trailing slash.
    pub url: String,
    pub username: String,
    pub password: String,
    /// Namespaces without leading or trailing colons; empty: everything.
    pub namespaces: Vec<String>,
    /// How often recent changes (and the ACL rules) are polled.
    pub poll_interval: Duration,
    /// How often the whole page list is reconciled (deletions the change log missed, pages
    /// written to disk directly).
    pub full_reconcile_interval: Duration,
    /// How long the wiki keeps its recent-changes log.
    pub recent_changes_retention: Duration,
    pub max_concurrent_requests: usize,
    pub request_timeout: Duration,
    /// Deletion protection: a reconciliation that would delete more than this percentage of
    /// the connector's indexed pages (and at least `deletion_protection_min_docs`) deletes
    /// nothing and reports a blocked job until an admin forces it.
    pub deletion_protection_percent: u32,
    pub deletion_protection_min_docs: u64,
    /// Pages whose HTML is larger are skipped (`max_file_size_bytes`, a common key).
    pub max_document_bytes: u64,
    pub mapping: PrincipalMapping,
    pub superusers: Superusers,
    /// See the raw config's `trust_superuser_groups`.
    pub trust_superuser_groups: bool,
    pub lossy_acl: LossyAcl,
}

impl fmt::Debug for DokuWikiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DokuWikiConfig")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("namespaces", &self.namespaces)
            .field("poll_interval", &self.poll_interval)
            .field("full_reconcile_interval", &self.full_reconcile_interval)
            .field("recent_changes_retention", &self.recent_changes_retention)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("request_timeout", &self.request_timeout)
            .field(
                "deletion_protection_percent",
                &self.deletion_protection_percent,
            )
            .field(
                "deletion_protection_min_docs",
                &self.deletion_protection_min_docs,
            )
            .field("max_document_bytes", &self.max_document_bytes)
            .field("mapping", &self.mapping)
            .field("superusers", &self.superusers)
            .field("trust_superuser_groups", &self.trust_superuser_groups)
            .field("lossy_acl", &self.lossy_acl)
            .finish()
    }
}

impl DokuWikiConfig {
    /// Whether page `id` lies in a configured namespace.
    pub fn in_scope(&self, id: &str) -> bool {
        self.namespaces.is_empty()
            || self.namespaces.iter().any(|ns| {
                id.strip_prefix(ns.as_str())
                    .is_some_and(|r| r.starts_with(':'))
            })
    }
}

impl RawConfig {
    /// Validates every key, reporting all problems with their key names.
    pub fn validate(self, env: &ConfigEnv) -> Result<DokuWikiConfig, Vec<ConfigIssue>> {
        let mut issues = Issues::default();
        let url = self.url.trim().trim_end_matches('/').to_string();
        match reqwest::Url::parse(&url) {
            // The scheme alone: the URL may hold a password (a second review).
            Ok(u) if !matches!(u.scheme(), "http" | "https") => issues.add(
                "url",
                format!("must be an http or https URL, not {}:", u.scheme()),
            ),
            Ok(u) if u.query().is_some() || u.fragment().is_some() => issues.add(
                "url",
                "must be the wiki's base URL, without a query or fragment (not .../doku.php?id=...)",
            ),
            Ok(u) if u.path().ends_with(".php") => issues.add(
                "url",
                "must be the wiki's base URL (the directory holding doku.php), not a PHP script",
            ),
            // Every citation's link is made from it (a review): a password in it would be shown
            // to every reader. The credentials go in `username` and `password`.
            Ok(u) if !u.username().is_empty() || u.password().is_some() => issues.add(
                "url",
                "must not hold credentials (user:password@); set username and password instead",
            ),
            Ok(_) => {}
            // Not quoted: a URL that does not parse may still hold a password (a review).
            Err(e) => issues.add("url", format!("not a valid URL: {e}")),
        }
        if self.username.is_empty() {
            issues.add("username", "must not be empty");
        } else if self.username.contains(':') {
            issues.add("username", "must not contain ':' (HTTP basic auth)");
        }
        if self.password.is_empty() {
            issues.add("password", "must not be empty");
        }
        issues.secret_over_http("password", &url, self.allow_plain_http);
        let mut namespaces = Vec::new();
        for (i, ns) in self.namespaces.iter().enumerate() {
            let clean = ns.trim_matches(':');
            if clean.is_empty() || !valid_id(clean) {
                issues.add(
                    format!("namespaces[{i}]"),
                    format!(
                        "{ns:?} is not a DokuWiki namespace (lowercase letters, digits, '_', '-', \
                         '.', separated by ':')"
                    ),
                );
            } else if !namespaces.iter().any(|n: &String| n == clean) {
                namespaces.push(clean.to_string());
            }
        }
        let poll = issues.range("poll_interval_secs", self.poll_interval_secs, 1, 86_400);
        let full = issues.range(
            "full_reconcile_interval_secs",
            self.full_reconcile_interval_secs,
            60,
            366 * 86_400,
        );
        if full < poll {
            issues.add(
                "full_reconcile_interval_secs",
                format!("must not be shorter than poll_interval_secs ({poll})"),
            );
        }
        let recent_days = issues.range("recent_days", self.recent_days, 1, 36_500);
        let concurrency = issues.range(
            "max_concurrent_requests",
            self.max_concurrent_requests,
            1,
            64,
        );
        let timeout = issues.range("request_timeout_secs", self.request_timeout_secs, 1, 3600);
        let percent = issues.range(
            "deletion_protection_percent",
            self.deletion_protection_percent,
            0,
            100,
        );
        for (key, prefix) in [
            ("user_prefix", &self.user_prefix),
            ("group_prefix", &self.group_prefix),
        ] {
            if prefix.chars().any(char::is_whitespace) {
                issues.add(key, "must not contain whitespace");
            }
        }
        for (i, s) in self.superusers.iter().enumerate() {
            let s = s.trim();
            if s.is_empty() || s == "@" || s == "@ALL" || s.chars().any(char::is_whitespace) {
                issues.add(
                    format!("superusers[{i}]"),
                    format!("{s:?} is not a DokuWiki user or @group (as in its superuser setting)"),
                );
            }
        }
        issues.finish(DokuWikiConfig {
            id: env.id.clone(),
            url,
            username: self.username,
            password: self.password,
            namespaces,
            poll_interval: Duration::from_secs(poll),
            full_reconcile_interval: Duration::from_secs(full),
            recent_changes_retention: Duration::from_secs(recent_days.saturating_mul(86_400)),
            max_concurrent_requests: concurrency,
            request_timeout: Duration::from_secs(timeout),
            deletion_protection_percent: percent,
            deletion_protection_min_docs: self.deletion_protection_min_docs,
            max_document_bytes: env.max_document_bytes,
            mapping: PrincipalMapping {
                user_prefix: self.user_prefix,
                group_prefix: self.group_prefix,
                fold_case: self.case_insensitive_auth,
            },
            superusers: match self.case_insensitive_auth {
                true => Superusers::parse(&self.superusers).fold_case(),
                false => Superusers::parse(&self.superusers),
            },
            trust_superuser_groups: self.trust_superuser_groups,
            lossy_acl: self.lossy_acl,
        })
    }
}

/// A clean DokuWiki id: what `cleanID` leaves with the default settings.
fn valid_id(id: &str) -> bool {
    id.split(':').all(|seg| {
        !seg.is_empty()
            && seg
                .chars()
                .all(|c| (c.is_alphanumeric() && !c.is_uppercase()) || matches!(c, '_' | '-' | '.'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use docent_connector_api::registry::parse_section;

    fn env() -> ConfigEnv {
        ConfigEnv {
            id: "wiki".into(),
            base_dir: "/etc/docent".into(),
            max_document_bytes: 1 << 20,
            max_text_bytes: 1 << 20,
            parse_timeout: Duration::from_secs(30),
            parse_memory_bytes: 2 << 30,
        }
    }

    fn parse(toml: &str) -> Result<DokuWikiConfig, Vec<ConfigIssue>> {
        let table: toml::Table = toml.parse().unwrap();
        parse_section::<RawConfig>(table)?.validate(&env())
    }

    #[test]
    fn defaults_apply() {
        let c =
            parse("url = 'https://wiki.example.com/dw/'\nusername = 'crawler'\npassword = 'pw'")
                .unwrap();
        assert_eq!(c.url, "https://wiki.example.com/dw");
        assert_eq!(c.poll_interval, Duration::from_secs(60));
        assert_eq!(c.full_reconcile_interval, Duration::from_secs(86_400));
        assert_eq!(c.max_concurrent_requests, 2);
        assert_eq!(c.deletion_protection_percent, 15);
        assert_eq!(c.deletion_protection_min_docs, 5);
        assert_eq!(c.lossy_acl, LossyAcl::Narrow);
        assert!(c.namespaces.is_empty() && c.in_scope("any:page"));
        assert!(
            !format!("{c:?}").contains("pw\""),
            "the password is redacted"
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let issues = parse(
            "url = 'ftp://x/doku.php'\nusername = ''\npassword = ''\nnamespaces = ['Eng', ':ok:']\n\
             poll_interval_secs = 0\nfull_reconcile_interval_secs = 10\nmax_concurrent_requests = 0\n\
             deletion_protection_percent = 101\nuser_prefix = 'a b'\nsuperusers = ['@ALL']",
        )
        .unwrap_err();
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        for want in [
            "url",
            "username",
            "password",
            "namespaces[0]",
            "poll_interval_secs",
            "full_reconcile_interval_secs",
            "max_concurrent_requests",
            "deletion_protection_percent",
            "user_prefix",
            "superusers[0]",
        ] {
            assert!(paths.contains(&want), "{want} missing from {issues:?}");
        }
        assert!(!paths.contains(&"namespaces[1]"), "{issues:?}");
    }

    #[test]
    fn unknown_and_mistyped_keys_are_rejected() {
        let e =
            parse("url = 'http://w'\nusername = 'u'\npassword = 'p'\nwatch = true").unwrap_err();
        assert!(e[0].message.contains("watch"), "{e:?}");
        let e = parse("url = 'http://w'\nusername = 'u'\npassword = 'p'\nlossy_acl = 'wide'")
            .unwrap_err();
        assert!(e[0].message.contains("wide"), "{e:?}");
    }

    /// Found by a review: every citation's link is made from `url`.
    #[test]
    fn a_url_holding_credentials_is_refused() {
        let e = parse("url = 'https://crawler:pw@wiki.corp/'\nusername = 'u'\npassword = 'p'")
            .unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].path, "url");
        assert!(!e[0].message.contains("pw"), "{e:?}");
        // Nor when the URL does not parse, or names another scheme (a second review).
        for url in [
            "https://crawler:p/w9@wiki.corp/",
            "ftp://crawler:pw9@wiki.corp/",
        ] {
            let e = parse(&format!("url = '{url}'\nusername = 'u'\npassword = 'p'")).unwrap_err();
            assert!(e.iter().all(|i| !i.message.contains("w9")), "{e:?}");
        }
    }

    #[test]
    fn namespaces_select_pages_below_them() {
        let c = parse(
            "url = 'https://w'\nusername = 'u'\npassword = 'p'\nnamespaces = ['eng', 'hr:policies']",
        )
        .unwrap();
        assert!(c.in_scope("eng:x") && c.in_scope("hr:policies:a:b"));
        assert!(!c.in_scope("eng") && !c.in_scope("engineering:x") && !c.in_scope("hr:x"));
    }

    #[test]
    fn the_password_goes_over_plain_http_only_to_this_machine_unless_allowed() {
        let e = parse("url = 'http://wiki.corp/dw'\nusername = 'u'\npassword = 'p'").unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].path, "password", "{e:?}");
        assert!(e[0].message.contains("clear text"), "{e:?}");
        for ok in [
            "url = 'http://wiki.corp/dw'\nusername = 'u'\npassword = 'p'\nallow_plain_http = true",
            "url = 'https://wiki.corp/dw'\nusername = 'u'\npassword = 'p'",
            "url = 'http://127.0.0.1:8080'\nusername = 'u'\npassword = 'p'",
        ] {
            parse(ok).unwrap();
        }
    }
}
