//! The fs connector's `[[connectors]]` section (`type = "fs"`): typed, unknown keys rejected,
//! validated with every problem reported, and registered with Docent through [`Factory`].

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use docent_connector_api::paths::{PathFilter, defaults};
use docent_connector_api::registry::{
    Built, ConfigEnv, ConfigIssue, ConnectorFactory, ConnectorSpec, Issues, parse_section,
};
use serde::Deserialize;

use crate::acl_rules::{RawAclRule, configured_rules};
use crate::{FsConfig, FsConnector};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFs {
    #[serde(default)]
    roots: Vec<String>,
    #[serde(default)]
    include: Vec<String>,
    #[serde(default = "default_exclude")]
    exclude: Vec<String>,
    #[serde(default = "defaults::reconcile_interval_secs")]
    reconcile_interval_secs: u64,
    #[serde(default = "default_debounce")]
    debounce_ms: u64,
    #[serde(default = "yes")]
    watch: bool,
    #[serde(default)]
    follow_symlinks: bool,
    #[serde(default)]
    acl_rules: Vec<RawAclRule>,
    #[serde(default = "defaults::passwd_file")]
    passwd_file: String,
    #[serde(default = "defaults::group_file")]
    group_file: String,
    #[serde(default)]
    report_memberships: bool,
    #[serde(default = "defaults::deletion_protection_percent")]
    deletion_protection_percent: u32,
    #[serde(default = "defaults::deletion_protection_min_docs")]
    deletion_protection_min_docs: u64,
}

fn default_exclude() -> Vec<String> {
    vec!["**/.git/**".into(), "**/.*".into(), "**/*~".into()]
}
fn default_debounce() -> u64 {
    200
}
fn yes() -> bool {
    true
}

/// Registers `type = "fs"`.
pub struct Factory;

#[derive(Debug)]
struct Spec(FsConfig);

impl ConnectorSpec for Spec {
    fn kind(&self) -> &'static str {
        "fs"
    }

    fn build(&self) -> Result<Built, String> {
        let c = FsConnector::new(self.0.clone()).map_err(|e| e.to_string())?;
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
        "fs"
    }

    fn configure(
        &self,
        table: toml::Table,
        env: &ConfigEnv,
    ) -> Result<Arc<dyn ConnectorSpec>, Vec<ConfigIssue>> {
        let c: RawFs = parse_section(table)?;
        let mut is = Issues::default();
        if c.roots.is_empty() {
            is.add("roots", "at least one root is required");
        }
        let mut roots = Vec::new();
        for (j, r) in c.roots.iter().enumerate() {
            let path = env.resolve(r);
            match path.canonicalize() {
                Ok(abs) if abs.is_dir() => roots.push(abs),
                Ok(_) => is.add(
                    format!("roots[{j}]"),
                    format!("{} is not a directory", path.display()),
                ),
                Err(e) => is.add(format!("roots[{j}]"), format!("{}: {e}", path.display())),
            }
        }
        // A root inside another would walk its files twice, with path rules relative to either
        // root: the same file could get two ACLs.
        for (j, a) in roots.iter().enumerate() {
            if let Some(b) = roots
                .iter()
                .take(j)
                .find(|b| a.starts_with(b) || b.starts_with(a))
            {
                is.add(
                    format!("roots[{j}]"),
                    format!(
                        "{} overlaps {}: roots must not contain one another",
                        a.display(),
                        b.display()
                    ),
                );
            }
        }
        PathFilter::validate(&c.include, &c.exclude, &mut is);
        let rules = configured_rules(&mut is, &c.acl_rules);
        let cfg = FsConfig {
            id: env.id.clone(),
            roots,
            include: c.include,
            exclude: c.exclude,
            max_file_size: env.max_document_bytes,
            reconcile_interval: Duration::from_secs(is.range(
                "reconcile_interval_secs",
                c.reconcile_interval_secs,
                1,
                86_400 * 7,
            )),
            debounce: Duration::from_millis(is.range("debounce_ms", c.debounce_ms, 0, 60_000)),
            watch: c.watch,
            follow_symlinks: c.follow_symlinks,
            acl_rules: rules,
            passwd_file: env.resolve(&c.passwd_file),
            group_file: env.resolve(&c.group_file),
            report_memberships: c.report_memberships,
            deletion_protection_percent: is.range(
                "deletion_protection_percent",
                c.deletion_protection_percent,
                0,
                100,
            ),
            deletion_protection_min_docs: c.deletion_protection_min_docs,
        };
        is.finish(Arc::new(Spec(cfg)) as Arc<dyn ConnectorSpec>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_inside_one_another_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("hr")).unwrap();
        std::fs::create_dir(dir.path().join("eng")).unwrap();
        let env = ConfigEnv {
            id: "fs".into(),
            base_dir: dir.path().to_path_buf(),
            max_document_bytes: 1 << 20,
            max_text_bytes: 1 << 20,
            parse_timeout: std::time::Duration::from_secs(10),
            parse_memory_bytes: 2 << 30,
        };
        let configure = |roots: &str| {
            let table: toml::Table = toml::from_str(&format!("roots = {roots}")).unwrap();
            Factory.configure(table, &env)
        };
        assert!(configure(r#"["hr", "eng"]"#).is_ok());
        let Err(issues) = configure(r#"[".", "hr"]"#) else {
            panic!("overlapping roots were accepted")
        };
        assert!(
            issues
                .iter()
                .any(|i| i.path.ends_with("roots[1]") && i.message.contains("overlaps")),
            "{issues:?}"
        );
    }
}
