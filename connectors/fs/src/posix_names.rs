//! uid/gid → name, read from /etc/passwd and /etc/group (no libc calls: this crate forbids
//! unsafe code, and NSS lookups would block on network directories anyway). Unknown ids are
//! returned as numbers, which identities can list as aliases.

use std::collections::BTreeMap;
use std::path::Path;

use docent_connector_api::{GroupMembership, Principal};

#[derive(Debug, Default)]
pub struct PosixNames {
    // Ordered: the SMB connector fingerprints the mapping through `Debug`.
    users: BTreeMap<u32, String>,
    groups: BTreeMap<u32, String>,
}

impl PosixNames {
    pub fn load(passwd: &Path, group: &Path) -> Self {
        Self {
            users: parse(&std::fs::read_to_string(passwd).unwrap_or_default()),
            groups: parse(&std::fs::read_to_string(group).unwrap_or_default()),
        }
    }

    /// [`Self::load`], or `None` when either file cannot be read.
    pub fn try_load(passwd: &Path, group: &Path) -> Option<Self> {
        Some(Self {
            users: parse(&std::fs::read_to_string(passwd).ok()?),
            groups: parse(&std::fs::read_to_string(group).ok()?),
        })
    }

    pub fn user(&self, uid: u32) -> String {
        self.users
            .get(&uid)
            .cloned()
            .unwrap_or_else(|| uid.to_string())
    }

    pub fn group(&self, gid: u32) -> String {
        self.groups
            .get(&gid)
            .cloned()
            .unwrap_or_else(|| gid.to_string())
    }

    /// Whether `uid` has a name (else [`Self::user`] gives its number).
    pub fn knows_user(&self, uid: u32) -> bool {
        self.users.contains_key(&uid)
    }

    /// Whether `gid` has a name (else [`Self::group`] gives its number).
    pub fn knows_group(&self, gid: u32) -> bool {
        self.groups.contains_key(&gid)
    }
}

/// `name:x:id:...` lines; the id is the third field in both files.
fn parse(text: &str) -> BTreeMap<u32, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let id = f.nth(1)?.parse().ok()?;
            Some((id, name.to_string()))
        })
        .collect()
}

/// Group memberships from a passwd file (primary groups) and a group file (member lists).
pub fn memberships(passwd: &str, group: &str) -> Vec<GroupMembership> {
    let gid_names = parse(group);
    let mut members: BTreeMap<String, Vec<Principal>> = BTreeMap::new();
    for l in group.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() == 4 && !f[0].is_empty() {
            let m = members.entry(f[0].to_string()).or_default();
            for u in f[3].split(',').map(str::trim).filter(|u| !u.is_empty()) {
                m.push(Principal::user(u));
            }
        }
    }
    for l in passwd.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() >= 4
            && !f[0].is_empty()
            && let Some(g) = f[3].parse::<u32>().ok().and_then(|gid| gid_names.get(&gid))
        {
            members
                .entry(g.clone())
                .or_default()
                .push(Principal::user(f[0]));
        }
    }
    members
        .into_iter()
        .filter(|(_, m)| !m.is_empty())
        .map(|(group, mut members)| {
            members.sort();
            members.dedup();
            GroupMembership { group, members }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memberships_from_group_lists_and_primary_groups() {
        let m = memberships(
            "alice:x:1001:2001::/home/alice:/bin/sh\nbob:x:1002:1002::/home/bob:/bin/sh\n",
            "hr:x:2001:carol,bob\nbob:x:1002:\nempty:x:3000:\n",
        );
        assert_eq!(
            m,
            [
                GroupMembership {
                    group: "bob".into(),
                    members: vec![Principal::user("bob")]
                },
                GroupMembership {
                    group: "hr".into(),
                    members: vec![
                        Principal::user("alice"),
                        Principal::user("bob"),
                        Principal::user("carol")
                    ]
                },
            ]
        );
    }

    #[test]
    fn parses_passwd_lines() {
        let m = parse(
            "root:x:0:0:root:/root:/bin/bash\n# c\nalice:x:1001:1001::/home/alice:/bin/sh\nbad\n",
        );
        assert_eq!(m.get(&0).map(String::as_str), Some("root"));
        assert_eq!(m.get(&1001).map(String::as_str), Some("alice"));
        assert_eq!(m.len(), 2);
    }
}
