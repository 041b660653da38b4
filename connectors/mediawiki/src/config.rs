//! The connector's own config section: parsed raw (unknown keys rejected), then validated into a
//! [`MediaWikiConfig`] that cannot hold bad values. Every problem is reported, each with the key
//! it concerns.

use std::collections::BTreeMap;
use std::time::Duration;

use docent_connector_api::registry::{ConfigEnv, ConfigIssue, Issues, parse_section};
use docent_connector_api::{Acl, Principal};
use serde::Deserialize;

/// The section as written (after Docent's `${VAR}` interpolation).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSection {
    url: String,
    #[serde(default = "default_api_path")]
    api_path: String,
    #[serde(default = "default_page_url")]
    page_url: String,
    #[serde(default = "default_namespaces")]
    namespaces: Vec<i64>,
    categories: Option<Vec<String>>,
    username: Option<String>,
    password: Option<String>,
    /// Send the credentials over `http://` to another machine (a private network).
    #[serde(default)]
    allow_plain_http: bool,
    #[serde(default = "default_poll_interval")]
    poll_interval_secs: u64,
    #[serde(default = "default_full_reconcile_interval")]
    full_reconcile_interval_secs: u64,
    #[serde(default = "default_max_concurrent_requests")]
    max_concurrent_requests: u64,
    #[serde(default = "default_maxlag")]
    maxlag: u64,
    #[serde(default = "default_request_timeout")]
    request_timeout_secs: u64,
    permissions: Option<String>,
    group: Option<String>,
    #[serde(default)]
    namespace_principals: BTreeMap<String, Vec<String>>,
    #[serde(default = "default_deletion_protection_percent")]
    deletion_protection_percent: u32,
    #[serde(default = "default_deletion_protection_min_docs")]
    deletion_protection_min_docs: u64,
}

fn default_api_path() -> String {
    "/api.php".into()
}
fn default_page_url() -> String {
    "{url}/index.php?title={title}".into()
}
fn default_namespaces() -> Vec<i64> {
    vec![0]
}
fn default_poll_interval() -> u64 {
    60
}
fn default_full_reconcile_interval() -> u64 {
    86_400
}
fn default_max_concurrent_requests() -> u64 {
    2
}
fn default_maxlag() -> u64 {
    5
}
fn default_request_timeout() -> u64 {
    30
}
fn default_deletion_protection_percent() -> u32 {
    15
}
fn default_deletion_protection_min_docs() -> u64 {
    5
}

/// Who may read an indexed page. MediaWiki core has no per-page read ACLs, so the ACL is a
/// decision of the admin, stated here, never inferred.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Permissions {
    /// Every page is readable by everyone (`everyone`).
    Public,
    /// Every page is readable by the members of one Docent group (`group:<name>`).
    Group(String),
    /// Per namespace (mirroring Lockdown-style namespace restrictions): a page is readable by
    /// its namespace's principals; a page in a namespace without an entry is skipped.
    Namespaces(BTreeMap<i64, Vec<Principal>>),
}

impl Permissions {
    /// The ACL of a page in namespace `ns`, or why it cannot be indexed.
    pub fn acl_for(&self, ns: i64) -> Result<Acl, String> {
        match self {
            Self::Public => Ok(Acl::new([Principal::Everyone], [])),
            Self::Group(g) => Ok(Acl::new([Principal::group(g.clone())], [])),
            Self::Namespaces(map) => map
                .get(&ns)
                .map(|p| Acl::new(p.iter().cloned(), []))
                .ok_or_else(|| {
                    format!(
                        "namespace {ns} has no entry in namespace_principals (permissions = \"namespaces\"); its pages are not indexed rather than given a guessed ACL"
                    )
                }),
        }
    }

    /// A stable description, stored in the checkpoint so a changed mapping forces a full
    /// reconciliation (ACLs may have changed without any edit on the wiki).
    fn describe(&self) -> String {
        match self {
            Self::Public => "public".into(),
            Self::Group(g) => format!("group:{g}"),
            Self::Namespaces(map) => {
                let parts: Vec<String> = map
                    .iter()
                    .map(|(ns, ps)| {
                        let ps: Vec<String> = ps.iter().map(Principal::token).collect();
                        format!("{ns}={}", ps.join("+"))
                    })
                    .collect();
                format!("namespaces:{}", parts.join(","))
            }
        }
    }
}

/// Bot-password (or main-account) credentials for `action=login`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password never reaches a log or an admin listing.
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Validated configuration of one MediaWiki connector.
#[derive(Debug, Clone)]
pub struct MediaWikiConfig {
    /// The connector's id (`[[connectors]] id`), the `connector` of every key it sends.
    pub id: String,
    /// The wiki's base URL without a trailing slash (`http://127.0.0.1:8080`).
    pub url: String,
    /// `{url}{api_path}`.
    pub api_url: String,
    /// Page URL template with `{url}` and `{title}` (the title URL-encoded, spaces as `_`).
    pub page_url: String,
    /// Namespaces crawled (ascending, no duplicates).
    pub namespaces: Vec<i64>,
    /// When set, only pages in at least one of these categories (names without the
    /// `Category:` prefix, spaces not underscores).
    pub categories: Option<Vec<String>>,
    pub credentials: Option<Credentials>,
    pub poll_interval: Duration,
    pub full_reconcile_interval: Duration,
    /// Bound on HTTP requests in flight to the wiki.
    pub max_concurrent_requests: usize,
    /// Sent as `maxlag` on every request: a lagging wiki asks us to back off.
    pub maxlag: u32,
    pub request_timeout: Duration,
    pub permissions: Permissions,
    /// The largest rendered page the connector sends (Docent's `max_file_size_bytes`).
    pub max_page_bytes: u64,
    /// Deletion protection (as the fs connector): a reconciliation that would delete more than
    /// this percentage of the connector's indexed pages (and at least
    /// `deletion_protection_min_docs`) deletes nothing until an admin forces it.
    pub deletion_protection_percent: u32,
    pub deletion_protection_min_docs: u64,
}

impl MediaWikiConfig {
    /// Parses and validates a `[[connectors]]` entry of type `mediawiki` (`table`: the entry
    /// minus the keys common to every connector).
    pub fn from_table(table: toml::Table, env: &ConfigEnv) -> Result<Self, Vec<ConfigIssue>> {
        let raw: RawSection = parse_section(table)?;
        validate(raw, env)
    }

    /// What decides which pages are indexed and with which ACL, and from which wiki; a
    /// checkpoint written under a different scope is not trusted for incremental sync (a review:
    /// pointed at another wiki, or a copy restored elsewhere, the old wiki's change positions
    /// were read on the new one).
    pub(crate) fn scope(&self) -> String {
        let ns: Vec<String> = self.namespaces.iter().map(i64::to_string).collect();
        let cats = self
            .categories
            .as_ref()
            .map(|c| c.join("|"))
            .unwrap_or_default();
        // The address without credentials it may carry (the scope is stored in checkpoints).
        let wiki = reqwest::Url::parse(&self.api_url)
            .map(|mut u| {
                let _ = u.set_username("");
                let _ = u.set_password(None);
                u.to_string()
            })
            .unwrap_or_default();
        format!(
            "ns={};categories={};acl={};wiki={wiki}",
            ns.join(","),
            cats,
            self.permissions.describe(),
        )
    }

    /// Where a user opens page `title` (its full title, with namespace prefix).
    pub fn page_uri(&self, title: &str) -> String {
        self.page_url
            .replace("{url}", &self.url)
            .replace("{title}", &encode_title(title))
    }
}

/// A title as MediaWiki writes it in URLs (`wfUrlencode` of the title with spaces as `_`).
pub fn encode_title(title: &str) -> String {
    let mut out = String::with_capacity(title.len());
    for b in title.replace(' ', "_").bytes() {
        match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'~'
            | b':'
            | b'/'
            | b'('
            | b')'
            | b'!'
            | b'*'
            | b','
            | b';'
            | b'@'
            | b'$' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn validate(raw: RawSection, env: &ConfigEnv) -> Result<MediaWikiConfig, Vec<ConfigIssue>> {
    let mut issues = Issues::default();

    let url = raw.url.trim().trim_end_matches('/').to_string();
    match reqwest::Url::parse(&url) {
        Ok(u) if !matches!(u.scheme(), "http" | "https") => {
            issues.add(
                "url",
                format!("must be an http or https URL, not {}:", u.scheme()),
            );
        }
        // Every citation's link is made from it, and errors quote it (a review): credentials
        // go in `username` and `password`.
        Ok(u) if !u.username().is_empty() || u.password().is_some() => issues.add(
            "url",
            "must not hold credentials (user:password@); set username and password instead",
        ),
        Ok(u) if u.query().is_some() || u.fragment().is_some() => {
            issues.add(
                "url",
                "must be the wiki's base URL, without a query or fragment",
            );
        }
        Ok(_) => {}
        // Not quoted: a URL that does not parse may still hold a password (a review).
        Err(e) => issues.add("url", format!("not a valid URL: {e}")),
    }
    if !raw.api_path.starts_with('/') {
        issues.add(
            "api_path",
            format!("must start with '/', got {:?}", raw.api_path),
        );
    }
    if !raw.page_url.contains("{title}") {
        issues.add(
            "page_url",
            "must contain {title} (and usually {url}), e.g. \"{url}/index.php?title={title}\"",
        );
    }

    let mut namespaces = raw.namespaces.clone();
    namespaces.sort_unstable();
    namespaces.dedup();
    if namespaces.is_empty() {
        issues.add("namespaces", "must name at least one namespace");
    }
    if namespaces.len() != raw.namespaces.len() {
        issues.add("namespaces", "lists a namespace twice");
    }
    for (i, ns) in raw.namespaces.iter().enumerate() {
        if *ns < 0 {
            issues.add(
                format!("namespaces[{i}]"),
                format!("namespace {ns} is virtual (Special, Media) and holds no pages"),
            );
        }
    }

    let categories = raw.categories.map(|cats| {
        if cats.is_empty() {
            issues.add(
                "categories",
                "must name at least one category (omit the key to crawl whole namespaces)",
            );
        }
        cats.iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let name = c
                    .trim()
                    .strip_prefix("Category:")
                    .unwrap_or(c.trim())
                    .replace('_', " ");
                if name.trim().is_empty() || name.contains('|') {
                    issues.add(
                        format!("categories[{i}]"),
                        format!("invalid category name {c:?}"),
                    );
                    None
                } else {
                    Some(name.trim().to_string())
                }
            })
            .collect::<Vec<_>>()
    });

    let credentials = match (raw.username, raw.password) {
        (None, None) => None,
        (Some(u), Some(p)) => {
            issues.secret_over_http("password", &url, raw.allow_plain_http);
            if u.trim().is_empty() {
                issues.add("username", "must not be empty");
            }
            if p.is_empty() {
                issues.add("password", "must not be empty (is its ${VAR} set?)");
            }
            Some(Credentials {
                username: u.trim().to_string(),
                password: p,
            })
        }
        (Some(_), None) => {
            issues.add("password", "username is set but password is not");
            None
        }
        (None, Some(_)) => {
            issues.add("username", "password is set but username is not");
            None
        }
    };

    let poll = issues.range("poll_interval_secs", raw.poll_interval_secs, 1, 86_400);
    let full = issues.range(
        "full_reconcile_interval_secs",
        raw.full_reconcile_interval_secs,
        1,
        90 * 86_400,
    );
    let conc = issues.range(
        "max_concurrent_requests",
        raw.max_concurrent_requests,
        1,
        16,
    );
    let maxlag = issues.range("maxlag", raw.maxlag, 1, 120);
    let timeout = issues.range("request_timeout_secs", raw.request_timeout_secs, 1, 600);
    let percent = issues.range(
        "deletion_protection_percent",
        raw.deletion_protection_percent,
        0,
        100,
    );

    let permissions = permissions(
        &mut issues,
        raw.permissions.as_deref(),
        raw.group,
        raw.namespace_principals,
    );

    issues.finish(())?;
    Ok(MediaWikiConfig {
        id: env.id.clone(),
        api_url: format!("{url}{}", raw.api_path),
        url,
        page_url: raw.page_url,
        namespaces,
        categories,
        credentials,
        poll_interval: Duration::from_secs(poll),
        full_reconcile_interval: Duration::from_secs(full),
        max_concurrent_requests: conc as usize,
        maxlag: maxlag as u32,
        request_timeout: Duration::from_secs(timeout),
        // Present whenever no issue was reported.
        permissions: permissions.unwrap_or(Permissions::Public),
        max_page_bytes: env.max_document_bytes,
        deletion_protection_percent: percent,
        deletion_protection_min_docs: raw.deletion_protection_min_docs,
    })
}

/// The `permissions` key with `group` and `namespace_principals`; `None` after an issue.
fn permissions(
    issues: &mut Issues,
    mode: Option<&str>,
    group: Option<String>,
    namespace_principals: BTreeMap<String, Vec<String>>,
) -> Option<Permissions> {
    let stray = |issues: &mut Issues, key: &str, mode: &str| {
        issues.add(key, format!("is not used with permissions = \"{mode}\""));
    };
    match mode {
        None => {
            issues.add(
                "permissions",
                "required: \"public\", \"group\" (with group = \"...\") or \"namespaces\" (with [namespace_principals]); MediaWiki has no per-page read ACLs for Docent to read, so who may read must be stated",
            );
            None
        }
        Some("public") => {
            if group.is_some() {
                stray(issues, "group", "public");
            }
            if !namespace_principals.is_empty() {
                stray(issues, "namespace_principals", "public");
            }
            Some(Permissions::Public)
        }
        Some("group") => {
            if !namespace_principals.is_empty() {
                stray(issues, "namespace_principals", "group");
            }
            let Some(g) = group else {
                issues.add("group", "required with permissions = \"group\"");
                return None;
            };
            match format!("group:{g}").parse::<Principal>() {
                Ok(_) => Some(Permissions::Group(g)),
                Err(_) => {
                    issues.add(
                        "group",
                        format!("invalid group name {g:?}: must be non-empty without spaces"),
                    );
                    None
                }
            }
        }
        Some("namespaces") => {
            if group.is_some() {
                stray(issues, "group", "namespaces");
            }
            if namespace_principals.is_empty() {
                issues.add(
                    "namespace_principals",
                    "required with permissions = \"namespaces\": a table of namespace number → principals",
                );
                return None;
            }
            let before = issues.0.len();
            let mut map = BTreeMap::new();
            for (key, list) in &namespace_principals {
                let path = format!("namespace_principals.{key}");
                let Ok(ns) = key.trim().parse::<i64>() else {
                    issues.add(&path, "the key must be a namespace number such as \"0\"");
                    continue;
                };
                if list.is_empty() {
                    issues.add(
                        &path,
                        "must name at least one principal (remove the entry to skip the namespace's pages)",
                    );
                    continue;
                }
                let principals = issues.principals(&path, list);
                if map.insert(ns, principals).is_some() {
                    issues.add(&path, format!("namespace {ns} is mapped twice"));
                }
            }
            (issues.0.len() == before).then_some(Permissions::Namespaces(map))
        }
        Some(other) => {
            issues.add(
                "permissions",
                format!("must be \"public\", \"group\" or \"namespaces\", got {other:?}"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> ConfigEnv {
        ConfigEnv {
            id: "wiki".into(),
            base_dir: ".".into(),
            max_document_bytes: 1 << 20,
            max_text_bytes: 1 << 20,
            parse_timeout: Duration::from_secs(10),
            parse_memory_bytes: 2 << 30,
        }
    }

    fn parse(s: &str) -> Result<MediaWikiConfig, Vec<ConfigIssue>> {
        MediaWikiConfig::from_table(s.parse::<toml::Table>().unwrap(), &env())
    }

    fn paths(issues: Vec<ConfigIssue>) -> Vec<String> {
        issues.into_iter().map(|i| i.path).collect()
    }

    #[test]
    fn defaults_apply() {
        let c = parse(
            r#"
            url = "http://127.0.0.1:8080/"
            permissions = "public"
            "#,
        )
        .unwrap();
        assert_eq!(c.url, "http://127.0.0.1:8080");
        assert_eq!(c.api_url, "http://127.0.0.1:8080/api.php");
        assert_eq!(c.namespaces, vec![0]);
        assert_eq!(c.categories, None);
        assert_eq!(c.poll_interval, Duration::from_secs(60));
        assert_eq!(c.full_reconcile_interval, Duration::from_secs(86_400));
        assert_eq!(c.max_concurrent_requests, 2);
        assert_eq!(c.maxlag, 5);
        assert_eq!(c.deletion_protection_percent, 15);
        assert_eq!(c.deletion_protection_min_docs, 5);
        assert_eq!(c.permissions, Permissions::Public);
        assert_eq!(
            c.page_uri("Help:Café au lait"),
            "http://127.0.0.1:8080/index.php?title=Help:Caf%C3%A9_au_lait"
        );
    }

    #[test]
    fn every_issue_is_reported_with_its_key() {
        let issues = parse(
            r#"
            url = "ftp://wiki"
            api_path = "api.php"
            page_url = "{url}/wiki/"
            namespaces = [0, -1, 0]
            categories = []
            username = "bot"
            poll_interval_secs = 0
            max_concurrent_requests = 99
            permissions = "namespaces"
            group = "g"
            [namespace_principals]
            "0" = ["group:staff"]
            "x" = ["group:a"]
            "4" = []
            "12" = ["nobody"]
            "#,
        )
        .unwrap_err();
        let mut got = paths(issues);
        got.sort();
        let mut want = vec![
            "url",
            "api_path",
            "page_url",
            "namespaces",
            "namespaces[1]",
            "categories",
            "password",
            "poll_interval_secs",
            "max_concurrent_requests",
            "group",
            "namespace_principals.x",
            "namespace_principals.4",
            "namespace_principals.12[0]",
        ];
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let issues = parse(
            r#"
            url = "http://wiki"
            permissions = "public"
            namespace = [0]
            "#,
        )
        .unwrap_err();
        assert!(issues[0].message.contains("namespace"), "{issues:?}");
    }

    #[test]
    fn permissions_are_never_defaulted() {
        let issues = parse(r#"url = "http://wiki""#).unwrap_err();
        assert_eq!(paths(issues), vec!["permissions"]);
        let issues = parse(
            r#"
            url = "http://wiki"
            permissions = "group"
            "#,
        )
        .unwrap_err();
        assert_eq!(paths(issues), vec!["group"]);
    }

    #[test]
    fn namespace_mode_maps_and_skips_unmapped_namespaces() {
        let c = parse(
            r#"
            url = "https://wiki.example"
            namespaces = [0, 12]
            permissions = "namespaces"
            [namespace_principals]
            "12" = ["group:staff", "user:alice"]
            "#,
        )
        .unwrap();
        let acl = c.permissions.acl_for(12).unwrap();
        assert_eq!(
            acl,
            Acl::new([Principal::group("staff"), Principal::user("alice")], [])
        );
        let why = c.permissions.acl_for(0).unwrap_err();
        assert!(why.contains("namespace 0"), "{why}");
    }

    #[test]
    fn group_mode_and_categories() {
        let c = parse(
            r#"
            url = "https://wiki.example"
            permissions = "group"
            group = "wiki-readers"
            categories = ["Category:Runbooks", "On_call"]
            username = "Bot@docent"
            password = "secret"
            "#,
        )
        .unwrap();
        assert_eq!(
            c.permissions.acl_for(0).unwrap(),
            Acl::new([Principal::group("wiki-readers")], [])
        );
        assert_eq!(
            c.categories,
            Some(vec!["Runbooks".to_string(), "On call".to_string()])
        );
        assert!(!format!("{:?}", c.credentials).contains("secret"));
    }

    #[test]
    fn scope_changes_with_acl_mapping() {
        let a = parse("url = \"http://w\"\npermissions = \"public\"").unwrap();
        let b = parse("url = \"http://w\"\npermissions = \"group\"\ngroup = \"g\"").unwrap();
        assert_ne!(a.scope(), b.scope());
        // And with the wiki (a review).
        let c = parse("url = \"http://other\"\npermissions = \"public\"").unwrap();
        assert_ne!(a.scope(), c.scope());
    }

    #[test]
    fn credentials_go_over_plain_http_only_to_this_machine_unless_allowed() {
        let with = |url: &str, extra: &str| {
            parse(&format!(
                "url = \"{url}\"\npermissions = \"public\"\nusername = \"bot\"\npassword = \"pw\"\n{extra}"
            ))
        };
        let issues = with("http://wiki.corp", "").unwrap_err();
        assert_eq!(paths(issues), vec!["password"]);
        with("http://wiki.corp", "allow_plain_http = true").unwrap();
        with("https://wiki.corp", "").unwrap();
        with("http://localhost:8080", "").unwrap();
        // Anonymous reading sends no secret.
        parse("url = \"http://wiki.corp\"\npermissions = \"public\"").unwrap();
        // Credentials in the URL would be in every citation's link (a review).
        let issues =
            parse("url = \"https://bot:secret@wiki.corp\"\npermissions = \"public\"").unwrap_err();
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].path, "url");
        assert!(!issues[0].message.contains("secret"), "{issues:?}");
        // Nor when the URL does not parse (a second review: it was quoted whole).
        for url in [
            "https://bot:se/cret@wiki.corp",
            "ftp://bot:secret@wiki.corp",
        ] {
            let issues = parse(&format!("url = \"{url}\"\npermissions = \"public\"")).unwrap_err();
            assert!(
                issues
                    .iter()
                    .all(|i| !i.message.contains("secret") && !i.message.contains("cret")),
                "{issues:?}"
            );
        }
    }
}
