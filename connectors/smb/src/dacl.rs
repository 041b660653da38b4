//! Security descriptor → Docent [`Acl`]: which principals the DACL lets read a file.
//!
//! Invariants: an ACE whose SID maps to nobody never widens access (an unmapped allow is
//! ignored); an unmapped deny that could apply to a reader makes the file unindexable (we cannot
//! know whom it denies); a missing DACL (a NULL DACL: everyone in Windows) is `everyone` only
//! when configured, else the file is skipped.

use std::collections::{BTreeMap, BTreeSet};

use docent_connector_api::{Acl, Principal};
use docent_fs_connector::PosixNames;

/// FILE_READ_DATA, GENERIC_ALL, GENERIC_READ (FILE_GENERIC_READ and full control include
/// FILE_READ_DATA).
pub const READ_BITS: u32 = 0x0000_0001 | 0x1000_0000 | 0x8000_0000;

/// What lets a principal reach the files below a folder: FILE_TRAVERSE (0x20), GENERIC_EXECUTE
/// or GENERIC_ALL. Listing a folder (FILE_LIST_DIRECTORY, its read right) does not let a
/// Samba user through it: Samba maps a folder's `r--` to list without traverse, and the file
/// system then refuses the path (Windows servers, whose users bypass traverse checking, set
/// `folder_permissions = false`).
pub const REACH_BITS: u32 = 0x0000_0020 | 0x2000_0000 | 0x1000_0000;

/// The access masks Samba gives a POSIX entry without permissions: an allow of nothing, or
/// of WRITE_OWNER alone (Samba's `UNIX_ACCESS_NONE`, so that Windows keeps the ACE). Samba
/// never writes a deny ACE for such an entry.
const SAMBA_NO_ACCESS: [u32; 2] = [0, 0x0008_0000];

/// One ACE as far as reading goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ace {
    pub kind: AceKind,
    pub sid: String,
    pub mask: u32,
    /// Applies only to children, not to this object.
    pub inherit_only: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AceKind {
    Allow,
    Deny,
    /// A conditional/object allow: never trusted to grant.
    OtherAllow,
    /// A conditional/object deny: treated as an unconditional deny.
    OtherDeny,
    /// Audit, label and the like: no effect on reading.
    Ignored,
}

/// What to do with a NULL DACL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NullDacl {
    Skip,
    Everyone,
}

/// SID → principal mapping.
#[derive(Debug, Default)]
pub struct SidMap {
    pub names: PosixNames,
    pub explicit: BTreeMap<String, Principal>,
    /// The server enforces POSIX permissions (Samba; `folder_permissions = true`): each allow
    /// ACE renders one POSIX entry, and one that lacks the permission asked is that entry's
    /// refusal, whatever else it grants (`-w-`, a folder's `r--`). On Windows such an ACE only
    /// grants less.
    pub posix_server: bool,
}

impl SidMap {
    pub fn principal(&self, sid: &str) -> Option<Principal> {
        if let Some(p) = self.explicit.get(sid) {
            return Some(p.clone());
        }
        match sid {
            // Everyone, Authenticated Users, BUILTIN\Users.
            "S-1-1-0" | "S-1-5-11" | "S-1-5-32-545" => return Some(Principal::Everyone),
            _ => {}
        }
        if let Some(uid) = sid.strip_prefix("S-1-22-1-") {
            return uid
                .parse()
                .ok()
                .map(|u| Principal::User(self.names.user(u)));
        }
        if let Some(gid) = sid.strip_prefix("S-1-22-2-") {
            return gid
                .parse()
                .ok()
                .map(|g| Principal::Group(self.names.group(g)));
        }
        None
    }

    /// [`Self::principal`] for a deny: a Samba Unix id without a name in the passwd or group
    /// file maps to nobody (a deny of its number would miss the identities that carry its
    /// name), so the file is skipped as for any unmapped deny.
    pub fn deny_principal(&self, sid: &str) -> Option<Principal> {
        if !self.explicit.contains_key(sid) {
            if let Some(uid) = sid.strip_prefix("S-1-22-1-") {
                if !uid.parse().is_ok_and(|u| self.names.knows_user(u)) {
                    return None;
                }
            } else if let Some(gid) = sid.strip_prefix("S-1-22-2-")
                && !gid.parse().is_ok_and(|g| self.names.knows_group(g))
            {
                return None;
            }
        }
        self.principal(sid)
    }
}

/// The outcome for one file: its ACL, or why it cannot be indexed; `unmapped` lists SIDs of
/// read ACEs that map to nobody (for the status).
#[derive(Debug)]
pub struct Computed {
    pub acl: Result<Acl, String>,
    pub unmapped: BTreeSet<String>,
}

/// `dacl`: `None` for a NULL DACL.
pub fn compute(dacl: Option<&[Ace]>, map: &SidMap, null_dacl: NullDacl) -> Computed {
    compute_for(dacl, map, null_dacl, READ_BITS)
}

/// [`compute`] for the ACEs whose access mask has any of `bits` ([`READ_BITS`] for a file,
/// [`REACH_BITS`] for a folder).
pub fn compute_for(dacl: Option<&[Ace]>, map: &SidMap, null_dacl: NullDacl, bits: u32) -> Computed {
    let mut unmapped = BTreeSet::new();
    let Some(aces) = dacl else {
        let acl = match null_dacl {
            NullDacl::Everyone => Ok(Acl {
                allow: BTreeSet::from([Principal::Everyone]),
                deny: BTreeSet::new(),
            }),
            NullDacl::Skip => Err(
                "no DACL (a NULL DACL lets everyone in); set null_dacl = \"everyone\" to index what such a DACL guards"
                    .to_string(),
            ),
        };
        return Computed { acl, unmapped };
    };
    let mut allow = BTreeSet::new();
    let mut deny = BTreeSet::new();
    let mut unmapped_deny = None;
    // POSIX entries Samba rendered without `bits` (see below), and the SIDs allowed some.
    let (mut classless, mut granted) = (BTreeSet::new(), BTreeSet::new());
    for ace in aces {
        if ace.inherit_only {
            continue;
        }
        if ace.mask & bits == 0 {
            // A Samba Unix SID allowed anything but `bits`, or any SID allowed exactly
            // Samba's "no permissions" (a passdb or domain user of a POSIX entry).
            if ace.kind == AceKind::Allow
                && (map.posix_server
                    || ace.sid.starts_with("S-1-22-")
                    || SAMBA_NO_ACCESS.contains(&ace.mask))
            {
                classless.insert(ace.sid.clone());
            }
            continue;
        }
        if ace.kind == AceKind::Allow {
            granted.insert(ace.sid.clone());
        }
        let p = match ace.kind {
            AceKind::Deny | AceKind::OtherDeny => map.deny_principal(&ace.sid),
            _ => map.principal(&ace.sid),
        };
        match (ace.kind, p) {
            (AceKind::Allow, Some(p)) => {
                allow.insert(p);
            }
            (AceKind::Deny | AceKind::OtherDeny, Some(p)) => {
                deny.insert(p);
            }
            (AceKind::Allow, None) => {
                unmapped.insert(ace.sid.clone());
            }
            (AceKind::Deny | AceKind::OtherDeny, None) => {
                unmapped.insert(ace.sid.clone());
                unmapped_deny.get_or_insert_with(|| ace.sid.clone());
            }
            (AceKind::OtherAllow | AceKind::Ignored, _) => {}
        }
    }
    // Samba writes a POSIX entry without the permission (the group of a 0604 file, of a 0705
    // folder, an owner or a named user with `---`) as an allow ACE granting nothing, not as a
    // deny. POSIX checks the first matching class only: an owner or named user without it is
    // refused whatever a group or everyone else may, and a group without it whatever everyone
    // else may (a user in a second, granting group is refused here: narrower, never wider).
    // Here they are denied where something else would admit them.
    let everyone = allow.contains(&Principal::Everyone);
    let some_group = allow.iter().any(|p| matches!(p, Principal::Group(_)));
    for sid in classless.difference(&granted) {
        let class = map.principal(sid);
        let applies = match &class {
            // "Other" without the permission: nobody outside the named classes; no deny.
            Some(Principal::Everyone) => false,
            Some(Principal::Group(_)) => everyone,
            // A user, or a SID of unknown kind (then the file is skipped if it applies).
            _ => everyone || some_group,
        };
        if !applies {
            continue;
        }
        match map.deny_principal(sid) {
            Some(p) => {
                deny.insert(p);
            }
            None => {
                unmapped.insert(sid.clone());
                unmapped_deny.get_or_insert_with(|| sid.clone());
            }
        }
    }
    let acl = if let Some(sid) = unmapped_deny {
        Err(format!(
            "a deny ACE for {sid} cannot be mapped to a principal (add it to sid_principals)"
        ))
    } else {
        let acl = Acl { allow, deny };
        if acl.is_closed() {
            Err("no mapped principal may read this file (DACL allows nobody Docent knows)".into())
        } else {
            Ok(acl)
        }
    };
    Computed { acl, unmapped }
}

/// Share-level permissions narrow a file's: the denies add up, and the allow set keeps only
/// what both admit: where one side allows `everyone`, the other side's allow set; otherwise the
/// principals both name. A user the file admits by name and the share only through a group
/// (or the other way round) loses access: group membership is not known at index time, and
/// narrowing never leaks. `Err` when nobody is left.
pub fn intersect_share(file: Acl, share: &Acl) -> Result<Acl, String> {
    let everyone = |a: &Acl| a.allow.contains(&Principal::Everyone);
    let allow = if everyone(share) {
        file.allow
    } else if everyone(&file) {
        share.allow.clone()
    } else {
        file.allow.intersection(&share.allow).cloned().collect()
    };
    let acl = Acl {
        allow,
        deny: file.deny.union(&share.deny).cloned().collect(),
    };
    if acl.is_closed() {
        Err("the share-level permissions and the file's DACL admit nobody in common".into())
    } else {
        Ok(acl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ace(kind: AceKind, sid: &str, mask: u32) -> Ace {
        Ace {
            kind,
            sid: sid.into(),
            mask,
            inherit_only: false,
        }
    }

    /// Names from a passwd and a group file of these lines.
    fn names(passwd: &str, group: &str) -> PosixNames {
        let dir = tempfile::tempdir().unwrap();
        let (p, g) = (dir.path().join("passwd"), dir.path().join("group"));
        std::fs::write(&p, passwd).unwrap();
        std::fs::write(&g, group).unwrap();
        PosixNames::load(&p, &g)
    }

    fn map() -> SidMap {
        SidMap {
            explicit: BTreeMap::from([("S-1-5-21-1-2-3-1001".into(), Principal::user("alice"))]),
            ..SidMap::default()
        }
    }

    #[test]
    fn allow_and_deny_map_to_principals() {
        let aces = [
            ace(AceKind::Deny, "S-1-5-21-1-2-3-1001", 0x0012_0089),
            ace(AceKind::Allow, "S-1-1-0", 0x001f_01ff),
            ace(AceKind::Allow, "S-1-22-2-1000", 0x8000_0000),
            ace(AceKind::Allow, "S-1-5-18", 0x1000_0000),
            ace(AceKind::Allow, "S-1-5-11", 0x0000_0002),
        ];
        let c = compute(Some(&aces), &map(), NullDacl::Skip);
        let acl = c.acl.unwrap();
        assert!(acl.allow.contains(&Principal::Everyone));
        assert!(acl.allow.contains(&Principal::group("1000")));
        assert_eq!(acl.deny, BTreeSet::from([Principal::user("alice")]));
        assert_eq!(c.unmapped, BTreeSet::from(["S-1-5-18".to_string()]));
    }

    #[test]
    fn share_permissions_only_narrow() {
        let acl = |allow: &[&str], deny: &[&str]| Acl {
            allow: allow.iter().map(|p| p.parse().unwrap()).collect(),
            deny: deny.iter().map(|p| p.parse().unwrap()).collect(),
        };
        let file = acl(&["group:hr", "group:eng"], &[]);
        assert_eq!(
            intersect_share(file.clone(), &acl(&["everyone"], &["user:bob"])).unwrap(),
            acl(&["group:hr", "group:eng"], &["user:bob"]),
            "share denies add up; an everyone share keeps the file's allows"
        );
        let share_hr = acl(&["group:hr"], &[]);
        assert_eq!(
            intersect_share(file, &share_hr).unwrap(),
            acl(&["group:hr"], &[])
        );
        assert_eq!(
            intersect_share(acl(&["everyone"], &[]), &share_hr).unwrap(),
            share_hr,
            "a public file on an hr share is hr's"
        );
        assert!(
            intersect_share(acl(&["group:eng"], &[]), &share_hr).is_err(),
            "nobody in common: skipped, never widened"
        );
    }

    /// Samba writes a POSIX class without read as an allow of nothing: with everyone allowed,
    /// that owner or group is denied (POSIX checks one class), as the fs connector does.
    #[test]
    fn a_unix_class_allowed_nothing_is_denied_where_everyone_reads() {
        let map = SidMap {
            names: names("own:x:10:20::/:/bin/sh\n", "staff:x:20:\n"),
            ..SidMap::default()
        };
        // 0604: owner reads, the group's ACE grants nothing, everyone reads.
        let aces = [
            ace(AceKind::Allow, "S-1-22-1-10", 0x0012_0089),
            ace(AceKind::Allow, "S-1-22-2-20", 0x0008_0000), // WRITE_OWNER only
            ace(AceKind::Allow, "S-1-1-0", 0x0012_0089),
        ];
        let acl = compute(Some(&aces), &map, NullDacl::Skip).acl.unwrap();
        assert_eq!(acl.deny, BTreeSet::from([Principal::group("staff")]));
        // 0640: nobody else reads, so nothing to deny.
        let acl = compute(Some(&aces[..2]), &map, NullDacl::Skip).acl.unwrap();
        assert!(acl.deny.is_empty(), "{acl:?}");
        // The class of an id without a name: the file is skipped.
        let aces = [
            ace(AceKind::Allow, "S-1-22-2-99", 0),
            ace(AceKind::Allow, "S-1-1-0", 1),
        ];
        assert!(compute(Some(&aces), &map, NullDacl::Skip).acl.is_err());
    }

    /// POSIX checks an owner or named user before any group: Samba's allow of nothing for such
    /// a user, of a Unix SID or of a passdb or domain SID, is a deny wherever a group or
    /// everyone would admit them (found by a review: only Unix SIDs were read so, and only
    /// where everyone reads).
    #[test]
    fn a_user_allowed_nothing_is_denied_where_a_group_or_everyone_reads() {
        let map = SidMap {
            names: names("carol:x:1003:2002::/:/bin/sh\n", "eng:x:2002:carol\n"),
            explicit: map().explicit,
            ..SidMap::default()
        };
        // 0640 plus `u:carol:---`: eng reads, carol does not.
        let aces = [
            ace(AceKind::Allow, "S-1-22-1-1003", 0x0008_0000),
            ace(AceKind::Allow, "S-1-22-2-2002", 0x0012_0089),
        ];
        let acl = compute(Some(&aces), &map, NullDacl::Skip).acl.unwrap();
        assert_eq!(acl.deny, BTreeSet::from([Principal::user("carol")]));
        // alice, a passdb user (explicit SID), with `---` on a file everyone reads.
        let aces = [
            ace(AceKind::Allow, "S-1-5-21-1-2-3-1001", 0),
            ace(AceKind::Allow, "S-1-1-0", 0x0012_0089),
        ];
        let acl = compute(Some(&aces), &map, NullDacl::Skip).acl.unwrap();
        assert_eq!(acl.deny, BTreeSet::from([Principal::user("alice")]));
        // Such an ACE for a SID nobody maps, where a group reads: whom it refuses is unknown.
        let aces = [
            ace(AceKind::Allow, "S-1-5-21-9-9-9-1234", 0x0008_0000),
            ace(AceKind::Allow, "S-1-22-2-2002", 0x0012_0089),
        ];
        assert!(compute(Some(&aces), &map, NullDacl::Skip).acl.is_err());
        // Everyone else without read (`o::---`) refuses nobody the other entries admit.
        let aces = [
            ace(AceKind::Allow, "S-1-22-2-2002", 0x0012_0089),
            ace(AceKind::Allow, "S-1-1-0", 0x0008_0000),
        ];
        let acl = compute(Some(&aces), &map, NullDacl::Skip).acl.unwrap();
        assert!(acl.deny.is_empty(), "{acl:?}");
        // An ACE granting something else (`-w-`) to a domain user: on Windows it only grants
        // less; on Samba (a POSIX server) that user is refused.
        let aces = [
            ace(AceKind::Allow, "S-1-5-21-1-2-3-1001", 0x0012_0116),
            ace(AceKind::Allow, "S-1-1-0", 0x0012_0089),
        ];
        let acl = compute(Some(&aces), &map, NullDacl::Skip).acl.unwrap();
        assert!(acl.deny.is_empty(), "{acl:?}");
        let samba = SidMap {
            posix_server: true,
            ..map
        };
        let acl = compute(Some(&aces), &samba, NullDacl::Skip).acl.unwrap();
        assert_eq!(acl.deny, BTreeSet::from([Principal::user("alice")]));
    }

    /// Samba's Unix SIDs: an allow of an unnamed id keeps its number (only narrower); a deny of
    /// one cannot reach the identities that carry its name, so the file is skipped.
    #[test]
    fn a_deny_of_an_unnamed_unix_id_skips_the_file() {
        let allow_unnamed = [ace(AceKind::Allow, "S-1-22-2-1000", 1)];
        assert!(
            compute(Some(&allow_unnamed), &map(), NullDacl::Skip)
                .acl
                .is_ok()
        );
        for sid in ["S-1-22-2-3000", "S-1-22-1-3000"] {
            let aces = [
                ace(AceKind::Allow, "S-1-1-0", 1),
                ace(AceKind::Deny, sid, 1),
            ];
            let e = compute(Some(&aces), &map(), NullDacl::Skip)
                .acl
                .unwrap_err();
            assert!(e.contains(sid), "{e}");
        }
    }

    #[test]
    fn unmapped_deny_skips_and_null_dacl_is_configurable() {
        let aces = [
            ace(AceKind::Allow, "S-1-1-0", 1),
            ace(AceKind::Deny, "S-1-5-21-9-9-9-500", 1),
        ];
        assert!(compute(Some(&aces), &map(), NullDacl::Skip).acl.is_err());
        assert!(compute(None, &map(), NullDacl::Skip).acl.is_err());
        let acl = compute(None, &map(), NullDacl::Everyone).acl.unwrap();
        assert_eq!(acl.allow, BTreeSet::from([Principal::Everyone]));
        let only_unmapped = [ace(AceKind::Allow, "S-1-5-18", 1)];
        assert!(
            compute(Some(&only_unmapped), &map(), NullDacl::Skip)
                .acl
                .is_err()
        );
        let inherit_only = [Ace {
            inherit_only: true,
            ..ace(AceKind::Deny, "S-1-3-0", 1)
        }];
        assert!(
            compute(Some(&inherit_only), &map(), NullDacl::Skip)
                .acl
                .is_err()
        );
    }
}
