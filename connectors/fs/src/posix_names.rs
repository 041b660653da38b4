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

    /// [`Self::load`], or `None` when either file cannot be read or names nobody. A passwd or
    /// group file always names someone (root): an empty one is being rewritten, or a mount
    /// failed, and read as it is it would turn every name into a number and every deny of a
    /// name into a deny of nobody (found by a review: the whole index read again and
    /// relabelled, documents withdrawn, then all read again when the file came back).
    pub fn try_load(passwd: &Path, group: &Path) -> Option<Self> {
        let names = Self {
            users: parse(&std::fs::read_to_string(passwd).ok()?),
            groups: parse(&std::fs::read_to_string(group).ok()?),
        };
        (!names.users.is_empty() && !names.groups.is_empty()).then_some(names)
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

/// The ids a server or kernel puts in for an owner or entry it cannot map (the overflow and
/// anonymous id 65534, `nobody`/`nogroup`, and `(uid_t) -1`): never a person's, whatever
/// line names them. Unnamed, a deny of one closes the file instead of denying `user:nobody`
/// (a review: an NFS server's "deny bob", its bob unmapped, arrived as a deny of 65534 and
/// left bob reading the file), and an allow of one grants nobody.
pub const UNMAPPED_IDS: [u32; 2] = [65_534, u32::MAX];

/// `name:x:id:...` lines; the id is the third field in both files. An id that two names share
/// (`alice` and `alice-admin`, both uid 1001) is left out: one name would not reach the other's
/// identity, so such an id is treated as unnamed (allowed by its number, and a deny of it
/// admits nobody). So are the ids of a name that two ids share (a local `staff:50` and a
/// directory's `staff:3000` in one `getent` dump): under one name, each id's members would read
/// the other's files.
fn parse(text: &str) -> BTreeMap<u32, String> {
    let mut out: BTreeMap<u32, String> = BTreeMap::new();
    let mut id_of: std::collections::HashMap<&str, u32> = std::collections::HashMap::new();
    let mut shared = std::collections::BTreeSet::new();
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let mut f = l.split(':');
        let (Some(name), Some(Ok(id))) = (f.next(), f.nth(1).map(str::parse::<u32>)) else {
            continue;
        };
        match id_of.get(name) {
            Some(&other) if other != id => {
                shared.extend([id, other]);
            }
            _ => {
                id_of.insert(name, id);
            }
        }
        match out.get(&id) {
            Some(have) if have != name => {
                shared.insert(id);
            }
            _ => {
                out.insert(id, name.to_string());
            }
        }
    }
    for id in shared.into_iter().chain(UNMAPPED_IDS) {
        out.remove(&id);
    }
    out
}

/// Group memberships from a passwd file (primary groups) and a group file (member lists).
pub fn memberships(passwd: &str, group: &str) -> Vec<GroupMembership> {
    let gid_names = parse(group);
    let named: std::collections::BTreeSet<&String> = gid_names.values().collect();
    let mut members: BTreeMap<String, Vec<Principal>> = BTreeMap::new();
    for l in group.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = l.split(':').collect();
        // A group whose name is left unnamed (see `parse`) has no members to report.
        if f.len() == 4 && !f[0].is_empty() && named.contains(&f[0].to_string()) {
            let m = members.entry(f[0].to_string()).or_default();
            for u in f[3].split(',').map(str::trim).filter(|u| !u.is_empty()) {
                m.push(Principal::user(u));
            }
        }
    }
    // A user name two uids share is left unnamed (see `parse`): neither entry's primary group
    // is given to it (a review: the name was put in both).
    let uid_names = parse(passwd);
    let named_users: std::collections::BTreeSet<&String> = uid_names.values().collect();
    for l in passwd.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() >= 4
            && !f[0].is_empty()
            && named_users.contains(&f[0].to_string())
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

    /// Found by a review: an empty (being rewritten) file read as no names at all.
    #[test]
    fn an_empty_or_missing_file_is_not_read_as_no_names() {
        let dir = tempfile::tempdir().unwrap();
        let (p, g) = (dir.path().join("passwd"), dir.path().join("group"));
        std::fs::write(
            &p,
            "root:x:0:0::/root:/bin/sh\nalice:x:1001:1001::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(&g, "root:x:0:\nstaff:x:50:alice\n").unwrap();
        assert!(PosixNames::try_load(&p, &g).is_some());
        std::fs::write(&g, "").unwrap();
        assert!(PosixNames::try_load(&p, &g).is_none());
        std::fs::remove_file(&g).unwrap();
        assert!(PosixNames::try_load(&p, &g).is_none());
    }

    #[test]
    fn the_anonymous_ids_are_never_named() {
        let dir = tempfile::tempdir().unwrap();
        let (p, g) = (dir.path().join("passwd"), dir.path().join("group"));
        std::fs::write(
            &p,
            "root:x:0:0::/:/bin/sh\nnobody:x:65534:65534::/:/bin/false\nneg:x:4294967295:1::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(&g, "root:x:0:\nnogroup:x:65534:\n").unwrap();
        let n = PosixNames::load(&p, &g);
        assert!(!n.knows_user(65_534) && !n.knows_user(u32::MAX));
        assert!(!n.knows_group(65_534));
        assert_eq!(n.user(65_534), "65534");
        assert!(n.knows_user(0) && n.knows_group(0));
    }

    #[test]
    fn an_id_two_names_share_is_treated_as_unnamed() {
        let dir = tempfile::tempdir().unwrap();
        let (p, g) = (dir.path().join("passwd"), dir.path().join("group"));
        std::fs::write(&p, "alice:x:1001:1::/:/bin/sh\nalice-admin:x:1001:1::/:/bin/sh\nbob:x:1002:1::/:/bin/sh\nbob:x:1002:1::/:/bin/sh\n").unwrap();
        std::fs::write(&g, "eng:x:2001:\n").unwrap();
        let n = PosixNames::load(&p, &g);
        assert!(!n.knows_user(1001));
        assert_eq!(n.user(1001), "1001");
        // The same line twice is one name.
        assert!(n.knows_user(1002));
        assert_eq!(n.user(1002), "bob");
    }

    /// A name on two ids (a local `staff:50` and a directory's `staff:3000` in one dump) names
    /// neither: both groups' files would read as one group's (found by a review).
    #[test]
    fn a_name_two_ids_share_names_neither() {
        let dir = tempfile::tempdir().unwrap();
        let (p, g) = (dir.path().join("passwd"), dir.path().join("group"));
        std::fs::write(&p, "carol:x:1003:50::/:/bin/sh\n").unwrap();
        let groups = "staff:x:50:alice\nstaff:x:3000:bob\neng:x:2001:bob\n";
        std::fs::write(&g, groups).unwrap();
        let n = PosixNames::load(&p, &g);
        assert!(!n.knows_group(50) && !n.knows_group(3000));
        assert_eq!(n.group(3000), "3000");
        assert!(n.knows_group(2001));
        let m = memberships("carol:x:1003:50::/:/bin/sh\n", groups);
        assert_eq!(
            m,
            [GroupMembership {
                group: "eng".into(),
                members: vec![Principal::user("bob")]
            }]
        );
    }

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

    /// Found by a review: a user name two uids share was left unnamed for ACLs, yet given the
    /// primary groups of both entries.
    #[test]
    fn a_user_name_two_uids_share_gets_no_primary_group() {
        let m = memberships(
            "alice:x:1001:2001::/h:/bin/sh\nalice:x:1500:3000::/h:/bin/sh\nbob:x:1002:2001::/h:/bin/sh\n",
            "hr:x:2001:\nfinance:x:3000:\n",
        );
        assert_eq!(
            m,
            [GroupMembership {
                group: "hr".into(),
                members: vec![Principal::user("bob")]
            }]
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
