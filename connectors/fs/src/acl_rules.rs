//! Configured ACL rules: a path prefix (relative to the root) and the principals to allow or deny
//! there. Rules apply from the shortest matching prefix to the longest, so a rule for `hr/payroll/`
//! refines one for `hr/`; for one prefix, `replace` rules before `extend` ones, whatever their
//! order in the config.

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

/// An `[[acl_rules]]` entry as written (the fs and nfs connectors take the same keys).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAclRule {
    path_prefix: String,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default = "docent_connector_api::paths::defaults::acl_rule_mode")]
    mode: String,
}

/// The rules of `acl_rules[..]` ([`configured_rule`] each).
pub fn configured_rules(
    is: &mut docent_connector_api::registry::Issues,
    raw: &[RawAclRule],
) -> Vec<AclRule> {
    raw.iter()
        .enumerate()
        .map(|(j, r)| {
            configured_rule(
                is,
                &format!("acl_rules[{j}]"),
                &r.path_prefix,
                &r.allow,
                &r.deny,
                &r.mode,
            )
        })
        .collect()
}

/// A rule from its config keys (`path`: where they are, for issues): the prefix must be a
/// plain relative path (no `.`, `..` or empty component, which would never match), the
/// principals well-formed and the mode `replace` or `extend`. Shared by the connectors that
/// take `[[acl_rules]]`.
pub fn configured_rule(
    is: &mut docent_connector_api::registry::Issues,
    path: &str,
    prefix: &str,
    allow: &[String],
    deny: &[String],
    mode: &str,
) -> AclRule {
    let trimmed = prefix.trim_matches('/');
    if !trimmed.is_empty()
        && trimmed
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        is.add(
            format!("{path}.path_prefix"),
            format!(
                "{prefix:?} is not a plain relative path (no \".\", \"..\" or empty \
                 component): it would never match"
            ),
        );
    }
    let mode = match mode {
        "replace" => RuleMode::Replace,
        "extend" => RuleMode::Extend,
        other => {
            is.add(
                format!("{path}.mode"),
                format!("must be \"replace\" or \"extend\", got {other:?}"),
            );
            RuleMode::Replace
        }
    };
    AclRule {
        path_prefix: prefix.to_string(),
        allow: is.principals(&format!("{path}.allow"), allow),
        deny: is.principals(&format!("{path}.deny"), deny),
        mode,
    }
}

pub fn apply(rules: &[AclRule], rel: &Path, mut acl: Acl) -> Acl {
    let mut matching: Vec<&AclRule> = rules.iter().filter(|r| r.matches(rel)).collect();
    // Shortest prefix first; for one prefix, what replaces before what extends (a `replace`
    // listed after an `extend` of the same prefix would otherwise drop the extension's
    // denies).
    matching.sort_by_key(|r| {
        (
            r.path_prefix.trim_matches('/').len(),
            r.mode != RuleMode::Replace,
        )
    });
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

    /// For one prefix, `replace` applies before `extend` whatever the config's order (found by
    /// a review: an `extend` listed first lost its deny to the `replace` after it).
    #[test]
    fn a_replace_does_not_drop_an_extend_of_the_same_prefix_listed_before_it() {
        let rules = vec![
            rule("hr", &[], &["user:intern"], RuleMode::Extend),
            rule("hr/", &["group:hr"], &[], RuleMode::Replace),
        ];
        let a = apply(
            &rules,
            Path::new("hr/leave.md"),
            Acl::new([Principal::Everyone], []),
        );
        assert_eq!(
            a,
            Acl::new([Principal::group("hr")], [Principal::user("intern")])
        );
    }

    #[test]
    fn a_prefix_that_could_never_match_is_a_config_issue() {
        let mut is = docent_connector_api::registry::Issues::default();
        for (i, p) in ["./hr", "hr/../x", "hr//x", "hr", "/hr/payroll/", ""]
            .iter()
            .enumerate()
        {
            configured_rule(&mut is, &format!("acl_rules[{i}]"), p, &[], &[], "extend");
        }
        let paths: Vec<&str> = is.0.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "acl_rules[0].path_prefix",
                "acl_rules[1].path_prefix",
                "acl_rules[2].path_prefix"
            ]
        );
    }
}
