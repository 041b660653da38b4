//! The NFS connector's `[[connectors]]` section (`type = "nfs"`): typed, unknown keys rejected,
//! validated with every problem reported, and registered with Docent through [`Factory`].

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use docent_connector_api::paths::{PathFilter, defaults};
use docent_connector_api::registry::{
    Built, ConfigEnv, ConfigIssue, ConnectorFactory, ConnectorSpec, Issues, parse_section,
};
use docent_fs_connector::{RawAclRule, configured_rules};
use serde::Deserialize;

use crate::{NfsConfig, NfsConnector};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNfs {
    server: String,
    export: String,
    #[serde(default)]
    sub_path: Option<String>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    mount_port: Option<u16>,
    #[serde(default = "default_portmapper")]
    portmapper_port: u16,
    #[serde(default)]
    include: Vec<String>,
    #[serde(default = "default_exclude")]
    exclude: Vec<String>,
    #[serde(default)]
    acl_rules: Vec<RawAclRule>,
    #[serde(default = "defaults::passwd_file")]
    passwd_file: String,
    #[serde(default = "defaults::group_file")]
    group_file: String,
    #[serde(default)]
    report_memberships: bool,
    #[serde(default = "defaults::reconcile_interval_secs")]
    reconcile_interval_secs: u64,
    #[serde(default = "defaults::retry_max_secs")]
    retry_max_secs: u64,
    #[serde(default = "default_rpc_timeout")]
    rpc_timeout_secs: u64,
    #[serde(default = "defaults::deletion_protection_percent")]
    deletion_protection_percent: u32,
    #[serde(default = "defaults::deletion_protection_min_docs")]
    deletion_protection_min_docs: u64,
    #[serde(default)]
    uid: u32,
    #[serde(default)]
    gid: u32,
    #[serde(default)]
    gids: Vec<u32>,
    #[serde(default)]
    privileged_port: Option<bool>,
    #[serde(default = "default_require_nfsacl")]
    require_nfsacl: bool,
}

fn default_portmapper() -> u16 {
    111
}
fn default_exclude() -> Vec<String> {
    vec!["**/.git/**".into(), "**/.*".into(), "**/*~".into()]
}
fn default_require_nfsacl() -> bool {
    true
}
fn default_rpc_timeout() -> u64 {
    30
}

/// Registers `type = "nfs"`.
pub struct Factory;

#[derive(Debug)]
struct Spec(NfsConfig);

impl ConnectorSpec for Spec {
    fn kind(&self) -> &'static str {
        "nfs"
    }

    fn build(&self) -> Result<Built, String> {
        let c = NfsConnector::new(self.0.clone()).map_err(|e| e.to_string())?;
        Ok(Built::crawler(Box::new(c)))
    }

    fn reports_memberships(&self) -> bool {
        self.0.report_memberships
    }

    fn as_any(&self) -> &dyn Any {
        &self.0
    }
}

impl ConnectorFactory for Factory {
    fn kind(&self) -> &'static str {
        "nfs"
    }

    fn configure(
        &self,
        table: toml::Table,
        env: &ConfigEnv,
    ) -> Result<Arc<dyn ConnectorSpec>, Vec<ConfigIssue>> {
        let c: RawNfs = parse_section(table)?;
        let mut is = Issues::default();
        if c.server.trim().is_empty() {
            is.add("server", "must not be empty");
        }
        if !c.export.starts_with('/') {
            is.add(
                "export",
                format!("must be an absolute path, got {:?}", c.export),
            );
        }
        let sub_path = c
            .sub_path
            .as_deref()
            .map(|s| s.trim_matches('/').to_string())
            .filter(|s| !s.is_empty());
        if let Some(s) = &sub_path
            && s.split('/').any(|p| p.is_empty() || p == "." || p == "..")
        {
            is.add(
                "sub_path",
                format!("must be a plain relative path inside the export, got {s:?}"),
            );
        }
        PathFilter::validate(&c.include, &c.exclude, &mut is);
        let rules = configured_rules(&mut is, &c.acl_rules);
        if c.gids.len() > 16 {
            is.add("gids", "AUTH_SYS carries at most 16 supplementary groups");
        }
        let cfg = NfsConfig {
            id: env.id.clone(),
            server: c.server.trim().to_string(),
            export: c.export.clone(),
            sub_path,
            port: c.port,
            mount_port: c.mount_port,
            portmapper_port: c.portmapper_port,
            include: c.include,
            exclude: c.exclude,
            acl_rules: rules,
            passwd_file: env.resolve(&c.passwd_file),
            group_file: env.resolve(&c.group_file),
            report_memberships: c.report_memberships,
            max_file_size: env.max_document_bytes,
            reconcile_interval: Duration::from_secs(is.range(
                "reconcile_interval_secs",
                c.reconcile_interval_secs,
                1,
                86_400 * 7,
            )),
            retry_max: Duration::from_secs(is.range("retry_max_secs", c.retry_max_secs, 1, 86_400)),
            rpc_timeout: Duration::from_secs(is.range(
                "rpc_timeout_secs",
                c.rpc_timeout_secs,
                1,
                3_600,
            )),
            deletion_protection_percent: is.range(
                "deletion_protection_percent",
                c.deletion_protection_percent,
                0,
                100,
            ),
            deletion_protection_min_docs: c.deletion_protection_min_docs,
            uid: c.uid,
            gid: c.gid,
            gids: c.gids,
            privileged_port: c.privileged_port,
            require_nfsacl: c.require_nfsacl,
        };
        is.finish(Arc::new(Spec(cfg)) as Arc<dyn ConnectorSpec>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> ConfigEnv {
        ConfigEnv {
            id: "share".into(),
            base_dir: "/etc/docent".into(),
            max_document_bytes: 1000,
            max_text_bytes: 1000,
            parse_timeout: Duration::from_secs(1),
            parse_memory_bytes: 2 << 30,
        }
    }

    fn configure(text: &str) -> Result<NfsConfig, Vec<ConfigIssue>> {
        let spec = Factory.configure(toml::from_str(text).unwrap(), &env())?;
        Ok(spec.as_any().downcast_ref::<NfsConfig>().unwrap().clone())
    }

    #[test]
    fn defaults() {
        let c = configure("server = \"nas\"\nexport = \"/srv/share\"\n").unwrap();
        assert_eq!(c.reconcile_interval, Duration::from_secs(300));
        assert_eq!((c.uid, c.gid), (0, 0));
        assert_eq!(c.portmapper_port, 111);
        assert_eq!(c.passwd_file, std::path::Path::new("/etc/passwd"));
        assert_eq!(c.deletion_protection_percent, 15);
        assert_eq!(c.deletion_protection_min_docs, 5);
        assert_eq!(c.max_file_size, 1000);
        assert!(c.require_nfsacl);
    }

    #[test]
    fn reports_every_problem() {
        let issues = configure(
            "server = \"\"\nexport = \"srv\"\nsub_path = \"a/../b\"\ninclude = [\"[\"]\nreconcile_interval_secs = 0\n[[acl_rules]]\npath_prefix = \"x\"\nallow = [\"bogus\"]\nmode = \"merge\"\n",
        )
        .unwrap_err();
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        for p in [
            "server",
            "export",
            "sub_path",
            "include[0]",
            "reconcile_interval_secs",
            "acl_rules[0].mode",
            "acl_rules[0].allow[0]",
        ] {
            assert!(paths.contains(&p), "{p} missing from {paths:?}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let issues = configure("server = \"nas\"\nexport = \"/x\"\nwatch = true\n").unwrap_err();
        assert!(issues[0].message.contains("watch"), "{issues:?}");
    }
}
