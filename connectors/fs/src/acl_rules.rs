//! Configured ACL rules: a path prefix (relative to the root) and the principals to allow or deny
//! there. Rules apply from the shortest matching prefix to the longest, so a rule for `hr/payroll/`
//! refines one for `hr/`.

use std::path::Path;

use docent_connector_api::{Acl, Principal};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleMode {
    /// The rule's allow/deny replace what came before (POSIX bits or shorter rules).
    Replace,
    /// The rule's allow/deny are added to what came before.
    Extend,
}

#[derive(Debug, Clone)]
pub struct AclRule {
    /// Relative path prefix with `/` separators; matches whole components (`hr` matches `hr/x`
    /// but not `hrm/x`). Empty matches everything.
    pub path_prefix: String,
    pub allow: Vec<Principal>,
    pub deny: Vec<Principal>,
    pub mode: RuleMode,
}

impl AclRule {
    fn matches(&self, rel: &Path) -> bool {
        let prefix = self.path_prefix.trim_matches('/');
        prefix.is_empty() || rel.starts_with(prefix)
    }
}

/// Whether a `replace` rule decides `rel`'s ACL whatever its POSIX permissions say.
pub fn replaced(rules: &[AclRule], rel: &Path) -> bool {
    rules
        .iter()
        .any(|r| r.mode == RuleMode::Replace && r.matches(rel))
}

pub fn apply(rules: &[AclRule], rel: &Path, mut acl: Acl) -> Acl {
    let mut matching: Vec<&AclRule> = rules.iter().filter(|r| r.matches(rel)).collect();
    matching.sort_by_key(|r| r.path_prefix.trim_matches('/').len());
    for r in matching {
        if r.mode == RuleMode::Replace {
            acl = Acl::default();
        }
        acl.allow.extend(r.allow.iter().cloned());
        acl.deny.extend(r.deny.iter().cloned());
    }
    acl
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(prefix: &str, allow: &[&str], deny: &[&str], mode: RuleMode) -> AclRule {
        AclRule {
            path_prefix: prefix.into(),
            allow: allow.iter().map(|s| s.parse().unwrap()).collect(),
            deny: deny.iter().map(|s| s.parse().unwrap()).collect(),
            mode,
        }
    }

    #[test]
    fn longer_prefix_refines_shorter() {
        let rules = vec![
            rule("hr/payroll", &["group:payroll"], &[], RuleMode::Replace),
            rule("hr", &["group:hr"], &[], RuleMode::Replace),
            rule("hr/payroll", &[], &["user:intern"], RuleMode::Extend),
        ];
        let posix = Acl::new([Principal::Everyone], []);
        let a = apply(&rules, Path::new("hr/payroll/2026.md"), posix.clone());
        assert_eq!(
            a,
            Acl::new([Principal::group("payroll")], [Principal::user("intern")])
        );
        let b = apply(&rules, Path::new("hr/leave.md"), posix.clone());
        assert_eq!(b, Acl::new([Principal::group("hr")], []));
        let c = apply(&rules, Path::new("hrm/x.md"), posix.clone());
        assert_eq!(c, posix);
    }
}
