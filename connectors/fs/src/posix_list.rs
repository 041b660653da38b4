//! POSIX access control lists (`setfacl`) as Docent ACLs, shared by the fs connector (which reads
//! them from the `system.posix_acl_access` extended attribute) and the nfs connector (which asks
//! them by NFSACL).
//!
//! POSIX checks a reader against the list in order and stops at the first class that matches:
//! the owner by the owner entry; a user named in the list by that entry; a member of the owning
//! group or of a group named in the list by those entries, granted if any of them grants; anyone
//! else by the other entry. Named users, the owning group and named groups are bounded by the
//! mask. Docent's ACL is an allow list and a deny list where a deny always wins, with group
//! memberships known only when a question is asked. So each entry that grants becomes an allow,
//! and each that does not becomes a deny wherever a wider allow could otherwise admit the reader
//! it names:
//! - a user (the owner, or named) without the permission is denied when any group or everyone
//!   is allowed (they could be a member);
//! - a group (owning or named) without it is denied when everyone is allowed.
//!
//! Every reader Docent then admits, POSIX admits too. The converse fails only towards fewer
//! readers: a user allowed by name (or the owner) who is also a member of a denied group is
//! refused, although POSIX, stopping at the user's entry, lets them read. A minimal list (owner,
//! group, other) gives exactly what [`crate::posix_acl`] gives for the same mode.

use std::collections::BTreeSet;

use docent_connector_api::{Acl, Principal};

use crate::PosixNames;

pub const USER_OBJ: u32 = 0x01;
pub const USER: u32 = 0x02;
pub const GROUP_OBJ: u32 = 0x04;
pub const GROUP: u32 = 0x08;
pub const MASK: u32 = 0x10;
pub const OTHER: u32 = 0x20;

/// One entry of an access list: its tag (above), the uid or gid it names (for `USER` and
/// `GROUP` only) and its permission bits (4 read, 2 write, 1 execute or search).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListEntry {
    pub tag: u32,
    pub id: u32,
    pub perm: u32,
}

/// Who `entries` let read a file owned by `uid`:`gid`.
pub fn list_acl(
    names: &PosixNames,
    uid: u32,
    gid: u32,
    entries: &[ListEntry],
) -> Result<Acl, String> {
    list_access(names, uid, gid, entries, 0o4)
}

/// Who `entries` let enter (search) a directory owned by `uid`:`gid`.
pub fn list_dir_acl(
    names: &PosixNames,
    uid: u32,
    gid: u32,
    entries: &[ListEntry],
) -> Result<Acl, String> {
    list_access(names, uid, gid, entries, 0o1)
}

fn list_access(
    names: &PosixNames,
    uid: u32,
    gid: u32,
    entries: &[ListEntry],
    bit: u32,
) -> Result<Acl, String> {
    check(entries)?;
    let mask = entries
        .iter()
        .find(|e| e.tag == MASK)
        .map_or(0o7, |e| e.perm);
    let (mut users_in, mut users_out) = (Vec::new(), Vec::new());
    let (mut groups_in, mut groups_out) = (Vec::new(), Vec::new());
    let mut everyone = false;
    for e in entries {
        match e.tag {
            USER_OBJ => {
                if e.perm & bit != 0 {
                    users_in.push(uid);
                } else {
                    users_out.push(uid);
                }
            }
            USER => {
                if e.perm & mask & bit != 0 {
                    users_in.push(e.id);
                } else {
                    users_out.push(e.id);
                }
            }
            GROUP_OBJ | GROUP => {
                let g = if e.tag == GROUP_OBJ { gid } else { e.id };
                if e.perm & mask & bit != 0 {
                    groups_in.push(g);
                } else {
                    groups_out.push(g);
                }
            }
            OTHER => everyone = e.perm & bit != 0,
            _ => {} // MASK, read above
        }
    }
    let nobody = || Acl {
        allow: BTreeSet::new(),
        deny: BTreeSet::from([Principal::Everyone]),
    };
    let mut allow: BTreeSet<Principal> = users_in
        .iter()
        .map(|&u| Principal::User(names.user(u)))
        .chain(groups_in.iter().map(|&g| Principal::Group(names.group(g))))
        .collect();
    if everyone {
        allow.insert(Principal::Everyone);
    }
    let mut deny = BTreeSet::new();
    // A user could be admitted by a group or everyone, or by another entry naming them.
    let user_reachable = everyone || !groups_in.is_empty();
    for &u in &users_out {
        if user_reachable || users_in.contains(&u) {
            // A deny must name whom it denies (see `posix_access`): else nobody.
            if !names.knows_user(u) {
                return Ok(nobody());
            }
            deny.insert(Principal::User(names.user(u)));
        }
    }
    if everyone {
        for &g in &groups_out {
            if !names.knows_group(g) {
                return Ok(nobody());
            }
            deny.insert(Principal::Group(names.group(g)));
        }
    }
    Ok(Acl { allow, deny })
}

/// A list POSIX would accept: one owner, owning-group and other entry, at most one mask, a mask
/// wherever users or groups are named, and no entry of a kind not known here.
fn check(entries: &[ListEntry]) -> Result<(), String> {
    let count = |tag| entries.iter().filter(|e| e.tag == tag).count();
    let named = count(USER) + count(GROUP);
    if let Some(e) = entries
        .iter()
        .find(|e| ![USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER].contains(&e.tag))
    {
        return Err(format!(
            "has an access control list with an entry of unknown kind {:#x}",
            e.tag
        ));
    }
    if count(USER_OBJ) != 1 || count(GROUP_OBJ) != 1 || count(OTHER) != 1 || count(MASK) > 1 {
        return Err(
            "has a malformed access control list (owner, group or other entry missing or repeated)"
                .into(),
        );
    }
    if named > 0 && count(MASK) == 0 {
        return Err("has a malformed access control list (named entries without a mask)".into());
    }
    Ok(())
}

/// The entries of Linux's `system.posix_acl_access` attribute: a version (2), then per entry a
/// tag (u16), permissions (u16) and id (u32), little-endian.
pub fn parse_xattr(bytes: &[u8]) -> Result<Vec<ListEntry>, String> {
    let malformed = || "has an access control list that cannot be read".to_string();
    let (head, body) = bytes.split_at_checked(4).ok_or_else(malformed)?;
    if u32::from_le_bytes(head.try_into().map_err(|_| malformed())?) != 2 || body.len() % 8 != 0 {
        return Err(malformed());
    }
    Ok(body
        .chunks_exact(8)
        .map(|c| ListEntry {
            tag: u32::from(u16::from_le_bytes([c[0], c[1]])),
            perm: u32::from(u16::from_le_bytes([c[2], c[3]])),
            id: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{posix_acl, posix_dir_acl};

    const NONE: u32 = u32::MAX;

    fn names() -> PosixNames {
        let dir = tempfile::tempdir().unwrap();
        let (p, g) = (dir.path().join("passwd"), dir.path().join("group"));
        std::fs::write(&p, "alice:x:1001:2001::/:/bin/sh\nbob:x:1002:2002::/:/bin/sh\ncarol:x:1003:2003::/:/bin/sh\n").unwrap();
        std::fs::write(&g, "staff:x:2001:\neng:x:2002:bob\nhr:x:2003:carol\n").unwrap();
        PosixNames::load(&p, &g)
    }

    fn e(tag: u32, id: u32, perm: u32) -> ListEntry {
        ListEntry { tag, id, perm }
    }

    fn set(acl: &BTreeSet<Principal>) -> Vec<String> {
        let mut v: Vec<String> = acl.iter().map(ToString::to_string).collect();
        v.sort();
        v
    }

    #[test]
    fn a_minimal_list_gives_what_the_mode_gives_for_every_mode() {
        let n = names();
        for mode in 0..0o1000u32 {
            let minimal = [
                e(USER_OBJ, NONE, mode >> 6 & 7),
                e(GROUP_OBJ, NONE, mode >> 3 & 7),
                e(OTHER, NONE, mode & 7),
            ];
            assert_eq!(
                list_acl(&n, 1001, 2001, &minimal).unwrap(),
                posix_acl(&n, 1001, 2001, mode),
                "file {mode:o}"
            );
            assert_eq!(
                list_dir_acl(&n, 1001, 2001, &minimal).unwrap(),
                posix_dir_acl(&n, 1001, 2001, mode),
                "directory {mode:o}"
            );
            // Linux adds a mask equal to the group's permission over NFSACL.
            let with_mask = [
                minimal[0],
                minimal[1],
                e(MASK, NONE, mode >> 3 & 7),
                minimal[2],
            ];
            assert_eq!(
                list_acl(&n, 1001, 2001, &with_mask).unwrap(),
                posix_acl(&n, 1001, 2001, mode),
                "file {mode:o} with a mask"
            );
        }
    }

    #[test]
    fn a_named_user_without_read_is_denied_where_others_may_read() {
        // `setfacl -m u:bob:---` on a 0644 file.
        let acl = list_acl(
            &names(),
            1001,
            2001,
            &[
                e(USER_OBJ, NONE, 6),
                e(USER, 1002, 0),
                e(GROUP_OBJ, NONE, 4),
                e(MASK, NONE, 4),
                e(OTHER, NONE, 4),
            ],
        )
        .unwrap();
        assert_eq!(set(&acl.allow), ["everyone", "group:staff", "user:alice"]);
        assert_eq!(set(&acl.deny), ["user:bob"]);
    }

    #[test]
    fn the_mask_bounds_named_entries_and_the_owning_group_but_not_the_owner_or_others() {
        // group::r-- and user:bob:r-- under mask::--- : neither reads; others do.
        let acl = list_acl(
            &names(),
            1001,
            2001,
            &[
                e(USER_OBJ, NONE, 6),
                e(USER, 1002, 4),
                e(GROUP_OBJ, NONE, 4),
                e(GROUP, 2003, 4),
                e(MASK, NONE, 0),
                e(OTHER, NONE, 4),
            ],
        )
        .unwrap();
        assert_eq!(set(&acl.allow), ["everyone", "user:alice"]);
        assert_eq!(set(&acl.deny), ["group:hr", "group:staff", "user:bob"]);
    }

    #[test]
    fn named_entries_that_grant_are_allowed_and_no_deny_is_needed_without_a_wider_allow() {
        // A 0600-style file shared with bob and the hr group: nobody else.
        let acl = list_acl(
            &names(),
            1001,
            2001,
            &[
                e(USER_OBJ, NONE, 6),
                e(USER, 1002, 4),
                e(GROUP_OBJ, NONE, 0),
                e(GROUP, 2003, 4),
                e(MASK, NONE, 4),
                e(OTHER, NONE, 0),
            ],
        )
        .unwrap();
        assert_eq!(set(&acl.allow), ["group:hr", "user:alice", "user:bob"]);
        // staff (no read) need not be denied: only members of hr are admitted, and one in both
        // may read by POSIX too (any matching group entry that grants).
        assert!(acl.deny.is_empty(), "{:?}", acl.deny);
    }

    #[test]
    fn an_owner_without_read_is_denied_where_a_group_may_read() {
        let acl = list_acl(
            &names(),
            1001,
            2001,
            &[
                e(USER_OBJ, NONE, 0),
                e(GROUP_OBJ, NONE, 0),
                e(GROUP, 2002, 4),
                e(MASK, NONE, 4),
                e(OTHER, NONE, 0),
            ],
        )
        .unwrap();
        assert_eq!(set(&acl.allow), ["group:eng"]);
        assert_eq!(set(&acl.deny), ["user:alice"]);
    }

    #[test]
    fn a_deny_of_an_id_without_a_name_admits_nobody() {
        let acl = list_acl(
            &names(),
            1001,
            2001,
            &[
                e(USER_OBJ, NONE, 6),
                e(USER, 4242, 0),
                e(GROUP_OBJ, NONE, 4),
                e(MASK, NONE, 4),
                e(OTHER, NONE, 4),
            ],
        )
        .unwrap();
        assert!(acl.is_closed());
    }

    #[test]
    fn malformed_lists_are_refused() {
        let n = names();
        let base = [
            e(USER_OBJ, NONE, 6),
            e(GROUP_OBJ, NONE, 4),
            e(OTHER, NONE, 4),
        ];
        assert!(list_acl(&n, 1001, 2001, &base[..2]).is_err());
        let mut named_without_mask = base.to_vec();
        named_without_mask.push(e(USER, 1002, 4));
        assert!(list_acl(&n, 1001, 2001, &named_without_mask).is_err());
        let mut unknown = base.to_vec();
        unknown.push(e(0x40, 7, 4));
        assert!(list_acl(&n, 1001, 2001, &unknown).is_err());
    }

    #[test]
    fn the_xattr_form_is_read() {
        let mut blob = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (1u16, 6u16, NONE),
            (2, 4, 1234),
            (4, 4, NONE),
            (0x10, 4, NONE),
            (0x20, 0, NONE),
        ] {
            blob.extend(tag.to_le_bytes());
            blob.extend(perm.to_le_bytes());
            blob.extend(id.to_le_bytes());
        }
        let entries = parse_xattr(&blob).unwrap();
        assert_eq!(entries.len(), 5);
        assert_eq!(entries[1], e(USER, 1234, 4));
        assert!(parse_xattr(&blob[..blob.len() - 1]).is_err());
        assert!(parse_xattr(&[1, 0, 0, 0]).is_err());
    }
}
