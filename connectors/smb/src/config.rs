//! The SMB connector's `[[connectors]]` section (`type = "smb"`): typed, unknown keys rejected,
//! validated with every problem reported, and registered with Docent through [`Factory`].

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use docent_connector_api::paths::{PathFilter, defaults};
use docent_connector_api::registry::{
    Built, ConfigEnv, ConfigIssue, ConnectorFactory, ConnectorSpec, Issues, parse_section,
};
use docent_connector_api::{Acl, Principal};
use serde::Deserialize;

use crate::dacl::NullDacl;
use crate::{SmbConfig, SmbConnector};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmb {
    #[serde(default)]
    server: String,
    #[serde(default = "default_port")]
    port: u16,
    #[serde(default)]
    share: String,
    /// A folder inside the share to crawl instead of the whole share.
    #[serde(default)]
    path: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    include: Vec<String>,
    #[serde(default = "default_exclude")]
    exclude: Vec<String>,
    #[serde(default = "defaults::reconcile_interval_secs")]
    reconcile_interval_secs: u64,
    #[serde(default = "defaults::passwd_file")]
    passwd_file: String,
    #[serde(default = "defaults::group_file")]
    group_file: String,
    #[serde(default)]
    sid_principals: BTreeMap<String, String>,
    #[serde(default = "default_null_dacl")]
    null_dacl: String,
    #[serde(default = "default_folder_permissions")]
    folder_permissions: bool,
    /// Off by default, as in the nfs connector: reported memberships add groups to the
    /// identities whose names they list, which must be the same people.
    #[serde(default)]
    report_memberships: bool,
    #[serde(default = "defaults::deletion_protection_percent")]
    deletion_protection_percent: u32,
    #[serde(default = "defaults::deletion_protection_min_docs")]
    deletion_protection_min_docs: u64,
    #[serde(default = "default_retry_initial")]
    retry_initial_ms: u64,
    #[serde(default = "defaults::retry_max_secs")]
    retry_max_secs: u64,
    #[serde(default = "default_timeout")]
    timeout_secs: u64,
    /// SMB2 change notifications on the crawl root (recursive), on top of the reconciliation.
    #[serde(default = "yes")]
    watch: bool,
    #[serde(default = "default_debounce")]
    watch_debounce_ms: u64,
    /// Share-level permissions (as set on the server's share), intersected with each file's.
    #[serde(default)]
    share_allow: Vec<String>,
    #[serde(default)]
    share_deny: Vec<String>,
}

fn yes() -> bool {
    true
}
fn default_debounce() -> u64 {
    500
}

fn default_port() -> u16 {
    445
}
fn default_exclude() -> Vec<String> {
    vec!["**/.*".into(), "**/*~".into(), "**/~$*".into()]
}
fn default_folder_permissions() -> bool {
    true
}

fn default_null_dacl() -> String {
    "skip".into()
}
fn default_retry_initial() -> u64 {
    1000
}
fn default_timeout() -> u64 {
    30
}

/// Registers `type = "smb"`.
pub struct Factory;

#[derive(Debug)]
struct Spec(SmbConfig);

impl ConnectorSpec for Spec {
    fn kind(&self) -> &'static str {
        "smb"
    }

    fn build(&self) -> Result<Built, String> {
        let c = SmbConnector::new(self.0.clone()).map_err(|e| e.to_string())?;
        Ok(Built::crawler(Box::new(c)))
    }

    fn as_any(&self) -> &dyn Any {
        &self.0
    }

    fn reports_memberships(&self) -> bool {
        self.0.report_memberships
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && !s.contains(['/', '\\'])
}

impl ConnectorFactory for Factory {
    fn kind(&self) -> &'static str {
        "smb"
    }

    fn configure(
        &self,
        table: toml::Table,
        env: &ConfigEnv,
    ) -> Result<Arc<dyn ConnectorSpec>, Vec<ConfigIssue>> {
        let c: RawSmb = parse_section(table)?;
        let mut is = Issues::default();
        if !valid_name(&c.server) {
            is.add("server", "a host name or address is required (no slashes)");
        }
        if !valid_name(&c.share) {
            is.add("share", "a share name is required (no slashes)");
        }
        if c.username.is_empty() {
            is.add("username", "required");
        }
        if c.port == 0 {
            is.add("port", "must not be 0");
        }
        PathFilter::validate(&c.include, &c.exclude, &mut is);
        let share_allow = is.principals("share_allow", &c.share_allow);
        let share_deny = is.principals("share_deny", &c.share_deny);
        // Only denies given: the share admits everyone else.
        let share_acl = (!share_allow.is_empty() || !share_deny.is_empty()).then(|| Acl {
            allow: if share_allow.is_empty() {
                [Principal::Everyone].into()
            } else {
                share_allow.into_iter().collect()
            },
            deny: share_deny.into_iter().collect(),
        });
        let mut sid_principals = BTreeMap::new();
        for (sid, p) in &c.sid_principals {
            if !sid.starts_with("S-1-") {
                is.add(
                    format!("sid_principals.{sid:?}"),
                    "expected a SID such as S-1-5-21-…-1001",
                );
            }
            match p.parse::<Principal>() {
                Ok(p) => {
                    sid_principals.insert(sid.clone(), p);
                }
                Err(e) => is.add(format!("sid_principals.{sid:?}"), e.to_string()),
            }
        }
        let null_dacl = match c.null_dacl.as_str() {
            "skip" => NullDacl::Skip,
            "everyone" => NullDacl::Everyone,
            other => {
                is.add(
                    "null_dacl",
                    format!("must be \"skip\" or \"everyone\", got {other:?}"),
                );
                NullDacl::Skip
            }
        };
        let cfg = SmbConfig {
            id: env.id.clone(),
            server: c.server,
            port: c.port,
            share: c.share,
            sub_path: c.path.replace('\\', "/").trim_matches('/').to_string(),
            username: c.username,
            password: c.password,
            domain: c.domain.filter(|d| !d.is_empty()),
            include: c.include,
            exclude: c.exclude,
            max_file_size: env.max_document_bytes,
            reconcile_interval: Duration::from_secs(is.range(
                "reconcile_interval_secs",
                c.reconcile_interval_secs,
                1,
                86_400 * 7,
            )),
            passwd_file: env.resolve(&c.passwd_file),
            group_file: env.resolve(&c.group_file),
            sid_principals,
            null_dacl,
            folder_permissions: c.folder_permissions,
            report_memberships: c.report_memberships,
            deletion_protection_percent: is.range(
                "deletion_protection_percent",
                c.deletion_protection_percent,
                0,
                100,
            ),
            deletion_protection_min_docs: c.deletion_protection_min_docs,
            retry_initial: Duration::from_millis(is.range(
                "retry_initial_ms",
                c.retry_initial_ms,
                10,
                3_600_000,
            )),
            retry_max: Duration::from_secs(is.range("retry_max_secs", c.retry_max_secs, 1, 86_400)),
            timeout: Duration::from_secs(is.range("timeout_secs", c.timeout_secs, 1, 3_600)),
            watch: c.watch,
            watch_debounce: Duration::from_millis(is.range(
                "watch_debounce_ms",
                c.watch_debounce_ms,
                0,
                60_000,
            )),
            share_acl,
        };
        is.finish(Arc::new(Spec(cfg)) as Arc<dyn ConnectorSpec>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> ConfigEnv {
        ConfigEnv {
            id: "files".into(),
            base_dir: "/etc/docent".into(),
            max_document_bytes: 1 << 20,
            max_text_bytes: 1 << 20,
            parse_timeout: Duration::from_secs(5),
            parse_memory_bytes: 2 << 30,
        }
    }

    fn configure(text: &str) -> Result<Arc<dyn ConnectorSpec>, Vec<ConfigIssue>> {
        Factory.configure(toml::from_str(text).unwrap(), &env())
    }

    #[test]
    fn a_valid_section_becomes_a_config() {
        let spec = configure(
            r#"
            server = "fs1.corp"
            share = "Docs"
            path = "\\Team\\HR\\"
            username = "svc-docent"
            password = "secret"
            domain = "CORP"
            sid_principals = { "S-1-5-21-1-2-3-1001" = "user:alice" }
            null_dacl = "everyone"
            "#,
        )
        .unwrap();
        let cfg = spec.as_any().downcast_ref::<SmbConfig>().unwrap();
        assert_eq!(cfg.sub_path, "Team/HR");
        assert_eq!(cfg.port, 445);
        assert_eq!(cfg.reconcile_interval, Duration::from_secs(300));
        assert_eq!(cfg.null_dacl, NullDacl::Everyone);
        assert_eq!(cfg.deletion_protection_percent, 15);
        assert_eq!(cfg.max_file_size, 1 << 20);
        assert!(cfg.watch, "notifications are on by default");
        assert_eq!(cfg.share_acl, None);
        assert!(
            !format!("{cfg:?}").contains("secret"),
            "the password is redacted"
        );
    }

    #[test]
    fn share_permissions_become_an_acl() {
        let spec = configure(
            "server = \"s\"\nshare = \"d\"\nusername = \"u\"\nshare_deny = [\"user:bob\"]",
        )
        .unwrap();
        let cfg = spec.as_any().downcast_ref::<SmbConfig>().unwrap();
        let acl = cfg.share_acl.as_ref().unwrap();
        assert_eq!(acl.allow, [Principal::Everyone].into());
        assert_eq!(acl.deny, [Principal::user("bob")].into());
    }

    #[test]
    fn every_problem_is_reported() {
        let issues = configure(
            r#"
            server = "a/b"
            username = ""
            include = ["a{"]
            sid_principals = { "S-1-5-21-1" = "alice", "bogus" = "user:x" }
            null_dacl = "maybe"
            reconcile_interval_secs = 0
            share_allow = ["hr"]
            "#,
        )
        .unwrap_err();
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        for p in [
            "server",
            "share",
            "username",
            "include[0]",
            "null_dacl",
            "reconcile_interval_secs",
            "share_allow[0]",
        ] {
            assert!(paths.contains(&p), "{p} missing from {issues:?}");
        }
        assert_eq!(
            paths
                .iter()
                .filter(|p| p.starts_with("sid_principals"))
                .count(),
            2
        );
        let unknown =
            configure("server = \"s\"\nshare = \"d\"\nusername = \"u\"\nroots = []").unwrap_err();
        assert!(unknown[0].message.contains("roots"), "{unknown:?}");
    }
}
