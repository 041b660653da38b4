//! What the file-share connectors (fs, NFS, SMB) share about paths: the include/exclude glob
//! filter and its config validation, and the config defaults they have in common.

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::registry::Issues;

/// Include and exclude globs over paths relative to a crawl root (`/`-separated). An empty
/// include list selects everything; an exclude always wins, and an excluded folder is not
/// descended into.
#[derive(Debug, Clone)]
pub struct PathFilter {
    include: Option<GlobSet>,
    exclude: GlobSet,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid glob {glob:?}: {message}")]
pub struct GlobError {
    pub glob: String,
    pub message: String,
}

impl PathFilter {
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, GlobError> {
        Ok(Self {
            include: if include.is_empty() {
                None
            } else {
                Some(glob_set(include)?)
            },
            exclude: glob_set(exclude)?,
        })
    }

    /// Whether a file at `rel` is crawled: not excluded, nor under an excluded folder (a walk
    /// does not descend into one, and a change notification naming a file inside it must not
    /// index what the walk never would), and included.
    pub fn selects(&self, rel: impl AsRef<std::path::Path>) -> bool {
        let rel = rel.as_ref();
        !self.excludes(rel) && self.include.as_ref().is_none_or(|i| i.is_match(rel))
    }

    /// Whether `rel` is excluded, or lies under an excluded folder (a folder that is not
    /// descended into, whether a walk or a change notification leads there).
    pub fn excludes(&self, rel: impl AsRef<std::path::Path>) -> bool {
        rel.as_ref()
            .ancestors()
            .filter(|a| !a.as_os_str().is_empty())
            .any(|a| self.exclude.is_match(a))
    }

    /// Reports every invalid glob of a config section's `include` and `exclude` lists.
    pub fn validate(include: &[String], exclude: &[String], issues: &mut Issues) {
        for (field, globs) in [("include", include), ("exclude", exclude)] {
            for (j, g) in globs.iter().enumerate() {
                if let Err(e) = Glob::new(g) {
                    issues.add(
                        format!("{field}[{j}]"),
                        format!("invalid glob: {}", e.kind()),
                    );
                }
            }
        }
    }
}

fn glob_set(globs: &[String]) -> Result<GlobSet, GlobError> {
    let mut b = GlobSetBuilder::new();
    for g in globs {
        b.add(Glob::new(g).map_err(|e| GlobError {
            glob: g.clone(),
            message: e.kind().to_string(),
        })?);
    }
    b.build().map_err(|e| GlobError {
        glob: globs.join(","),
        message: e.to_string(),
    })
}

/// Config defaults the file-share connectors share (for `#[serde(default = "…")]`).
pub mod defaults {
    pub fn passwd_file() -> String {
        "/etc/passwd".into()
    }
    pub fn group_file() -> String {
        "/etc/group".into()
    }
    pub fn reconcile_interval_secs() -> u64 {
        300
    }
    pub fn retry_max_secs() -> u64 {
        300
    }
    /// Deletion protection: a sync may delete at most this percentage of the indexed documents
    /// without an admin's force …
    pub fn deletion_protection_percent() -> u32 {
        15
    }
    /// … unless it deletes fewer than this many.
    pub fn deletion_protection_min_docs() -> u64 {
        5
    }
    /// How path-prefix ACL rules combine with the file's own permissions.
    pub fn acl_rule_mode() -> String {
        "replace".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_exclude_and_validation() {
        let f = PathFilter::new(&["**/*.md".into()], &["**/.*".into(), "tmp/**".into()]).unwrap();
        assert!(f.selects("a/b.md"));
        assert!(!f.selects("a/b.txt"), "not included");
        assert!(!f.selects("a/.hidden.md"), "exclude wins");
        assert!(f.excludes("tmp/x"));
        assert!(PathFilter::new(&[], &[]).unwrap().selects("anything"));
        let err = PathFilter::new(&["a{".into()], &[]).unwrap_err();
        assert_eq!(err.glob, "a{");
        let mut is = Issues::default();
        PathFilter::validate(&["ok".into(), "a{".into()], &["[".into()], &mut is);
        let paths: Vec<String> = is.0.into_iter().map(|i| i.path).collect();
        assert_eq!(paths, ["include[1]", "exclude[0]"]);
    }

    #[test]
    fn a_file_under_an_excluded_folder_is_not_selected() {
        let f = PathFilter::new(&[], &["Salaries".into(), "**/private".into()]).unwrap();
        assert!(f.selects("Team/plan.docx"));
        assert!(!f.selects("Salaries"));
        assert!(!f.selects("Salaries/x.docx"));
        assert!(!f.selects("Salaries/2026/x.docx"));
        assert!(!f.selects("Team/private/a.txt"));
        // A name that only begins like an excluded folder is not under it.
        assert!(f.selects("Salaries-public/x.docx"));
        // A folder below an excluded one (a notification can name it) is not walked.
        assert!(f.excludes("Salaries/2026"));
        assert!(!f.excludes("Team/public"));
    }
}
