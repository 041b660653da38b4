//! The NFSACL side protocol (ONC RPC program 100227, version 3), which NFSv3 servers that keep
//! POSIX access control lists offer beside NFS on the same port. Only `GETACL` is used, to tell
//! whether a file or directory carries an access list beyond its mode bits: under such a list
//! the mode's group bits are the list's mask, not the owning group's permission, and named
//! users and groups (allowed or denied) do not show in the mode at all. Linux's kernel server
//! and nfs-ganesha (with `Enable_NFSACL`) answer it.
//!
//! The wire format is Solaris's, as Linux writes it (`fs/nfs_common/nfsacl.c`):
//!
//! ```text
//! GETACL3args { nfs_fh3 fh; u32 mask; }
//! GETACL3res  { nfsstat3 status; post_op_attr attr;
//!               /* NFS3_OK only: */ u32 mask; u32 acl_cnt; aclent acl<>; u32 dfacl_cnt; aclent dfacl<>; }
//! aclent      { u32 tag; u32 id; u32 perm; }
//! ```
//!
//! Linux sends a file without a list as its minimal list (owner, group, other) plus a mask
//! entry equal to the group's permission; nfs-ganesha 4 sends no entries at all.

use std::io::{Cursor, Read, Write};

// POSIX ACL entry tags: Linux's and Solaris's values agree.
use docent_fs_connector::ListEntry;
use docent_fs_connector::posix_list::{GROUP, GROUP_OBJ, MASK, OTHER, USER, USER_OBJ};

use nfs3_client::nfs3_types::nfs3::{fattr3, nfs_fh3, nfsstat3};
use nfs3_client::nfs3_types::xdr_codec::{self, Pack, Unpack};

pub const PROGRAM: u32 = 100_227;
pub const VERSION: u32 = 3;
pub const GETACL: u32 = 1;

/// `GETACL3args.mask`: the access list and its count (the default list, which only matters for
/// files created later, is not asked for).
const NFS_ACL: u32 = 0x1;
const NFS_ACLCNT: u32 = 0x2;

/// Set on the entries of a default list.
const DEFAULT_FLAG: u32 = 0x1000;

/// nfs-ganesha's limit on entries per list (Linux's is 1024); a count above it is refused
/// before anything is allocated.
const MAX_ENTRIES: u32 = 4096;

pub struct GetAclArgs<'a> {
    pub fh: &'a nfs_fh3,
}

impl Pack for GetAclArgs<'_> {
    fn packed_size(&self) -> usize {
        self.fh.packed_size() + 4
    }

    fn pack(&self, out: &mut impl Write) -> xdr_codec::Result<usize> {
        Ok(self.fh.pack(out)? + (NFS_ACL | NFS_ACLCNT).pack(out)?)
    }
}

/// A reply's bytes, decoded by [`parse_getacl`] (kept apart so that it can be tested on bytes).
pub struct RawReply(pub Vec<u8>);

impl Unpack for RawReply {
    fn unpack(input: &mut impl Read) -> xdr_codec::Result<(Self, usize)> {
        let mut buf = Vec::new();
        let n = input.read_to_end(&mut buf)?;
        Ok((Self(buf), n))
    }
}

/// A file's access list as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessList {
    pub entries: Vec<ListEntry>,
    /// The list's count matched its entries.
    pub consistent: bool,
    /// The permission bits, owner and group of the attributes sent with the list, when the
    /// server sent them: the mode bits the list goes with.
    pub owner_mode: Option<(u32, u32, u32)>,
}

impl AccessList {
    /// Whether the list says more than the mode bits: a named user or group, or a mask that
    /// differs from the owning group's permission (then the mode's group bits are the mask).
    /// An empty list (nfs-ganesha's answer for a file without one) and a minimal list say
    /// nothing more. An entry of an unknown kind, or a count that disagrees with the entries,
    /// counts as more: the list cannot be read.
    pub fn extends_mode(&self) -> bool {
        if !self.consistent {
            return true;
        }
        let group = self
            .entries
            .iter()
            .find(|e| e.tag == GROUP_OBJ)
            .map(|e| e.perm & 0o7);
        self.entries.iter().any(|e| match e.tag {
            USER_OBJ | GROUP_OBJ | OTHER => false,
            MASK => Some(e.perm & 0o7) != group,
            USER | GROUP => true,
            _ => true,
        })
    }
}

/// How a list's owner, group (its mask, when it has one) and other read and search
/// permissions compare with the mode's bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgainstMode {
    /// The same (or an empty list, which states nothing).
    Agrees,
    /// Narrower in some class, wider in none.
    Stricter,
    /// Wider in some class.
    Looser,
}

impl AccessList {
    /// The list against `mode`. A server that builds its lists (nfs-ganesha over a store that
    /// keeps NFSv4 lists) can send a minimal list stricter than the mode it reports
    /// (`other::---` under 0644): that list is what it enforces (a review: the mode bits were
    /// used, and the file went to everyone). One wider than the mode cannot be trusted to
    /// widen it. Only read and search count (write does not decide who may read).
    pub fn against_mode(&self, mode: u32) -> AgainstMode {
        let perm = |tag| {
            self.entries
                .iter()
                .find(|e| e.tag == tag)
                .map(|e| e.perm & 0o5)
        };
        let group = perm(MASK).or(perm(GROUP_OBJ));
        let mut out = AgainstMode::Agrees;
        for (sent, bits) in [
            (perm(USER_OBJ), (mode >> 6) & 0o5),
            (group, (mode >> 3) & 0o5),
            (perm(OTHER), mode & 0o5),
        ] {
            match sent {
                Some(p) if p & !bits != 0 => return AgainstMode::Looser,
                Some(p) if p != bits => out = AgainstMode::Stricter,
                _ => {}
            }
        }
        out
    }
}

/// Decodes a `GETACL` reply: `Ok(Err(status))` when the server refused it for this object,
/// `Err` when the bytes are not a reply.
pub fn parse_getacl(bytes: &[u8]) -> Result<Result<AccessList, nfsstat3>, String> {
    let mut c = Cursor::new(bytes);
    let status = u32_at(&mut c)?;
    if status != 0 {
        // Linux sends the attributes after an error status too; nfs-ganesha sends none.
        let stat = nfsstat3::unpack(&mut Cursor::new(status.to_be_bytes()))
            .map_or(nfsstat3::NFS3ERR_SERVERFAULT, |(s, _)| s);
        return Ok(Err(stat));
    }
    // post_op_attr: the attributes, when the server sent them.
    let owner_mode = if u32_at(&mut c)? != 0 {
        let (a, _) = fattr3::unpack(&mut c).map_err(|e| format!("attributes: {e}"))?;
        Some((a.mode & 0o7777, a.uid, a.gid))
    } else {
        None
    };
    let _mask = u32_at(&mut c)?;
    let (counted, entries) = list(&mut c, 0)?;
    // The default list (empty unless asked for); read to check the reply's shape.
    list(&mut c, DEFAULT_FLAG)?;
    if (c.position() as usize) != bytes.len() {
        return Err(format!(
            "{} bytes left after the reply",
            bytes.len() - c.position() as usize
        ));
    }
    Ok(Ok(AccessList {
        // A count that disagrees with the entries sent cannot be trusted to be complete.
        consistent: counted as usize == entries.len(),
        entries,
        owner_mode,
    }))
}

/// One list: its count, then the entries as an XDR array (which counts them again; nfs-ganesha
/// writes an absent list as a count of 0 and a null pointer, which reads as an empty array).
fn list(c: &mut Cursor<&[u8]>, flag: u32) -> Result<(u32, Vec<ListEntry>), String> {
    let count = u32_at(c)?;
    let n = u32_at(c)?;
    if n > MAX_ENTRIES {
        return Err(format!("{n} entries in one list (at most {MAX_ENTRIES})"));
    }
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let tag = u32_at(c)? & !flag;
        out.push(ListEntry {
            tag,
            id: u32_at(c)?,
            perm: u32_at(c)?,
        });
    }
    Ok((count, out))
}

fn u32_at(c: &mut Cursor<&[u8]>) -> Result<u32, String> {
    let mut b = [0u8; 4];
    c.read_exact(&mut b)
        .map_err(|_| "the reply ends early".to_string())?;
    Ok(u32::from_be_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply as Linux's server writes it: status, no attributes, mask, then the list twice
    /// counted, then an empty default list.
    fn reply(entries: &[(u32, u32, u32)]) -> Vec<u8> {
        let mut w: Vec<u32> = vec![0, 0, NFS_ACL | NFS_ACLCNT, entries.len() as u32];
        w.push(entries.len() as u32);
        for &(t, i, p) in entries {
            w.extend([t, i, p]);
        }
        w.extend([0, 0]);
        w.iter().flat_map(|x| x.to_be_bytes()).collect()
    }

    const NONE: u32 = u32::MAX;

    fn extends(entries: &[(u32, u32, u32)]) -> bool {
        parse_getacl(&reply(entries))
            .unwrap()
            .unwrap()
            .extends_mode()
    }

    #[test]
    fn a_minimal_list_with_linuxs_added_mask_says_nothing_more_than_the_mode() {
        // 0640: Linux adds a mask equal to the group's permission.
        assert!(!extends(&[
            (USER_OBJ, NONE, 6),
            (GROUP_OBJ, NONE, 4),
            (MASK, NONE, 4),
            (OTHER, NONE, 0),
        ]));
        assert!(!extends(&[
            (USER_OBJ, NONE, 6),
            (GROUP_OBJ, NONE, 4),
            (OTHER, NONE, 4)
        ]));
    }

    #[test]
    fn a_minimal_list_is_compared_with_the_mode_in_read_and_search() {
        use AgainstMode::*;
        let l = |entries: &[(u32, u32, u32)]| parse_getacl(&reply(entries)).unwrap().unwrap();
        let minimal = l(&[(USER_OBJ, NONE, 6), (GROUP_OBJ, NONE, 4), (OTHER, NONE, 0)]);
        assert_eq!(minimal.against_mode(0o644), Stricter);
        assert_eq!(minimal.against_mode(0o640), Agrees);
        // Wider than the mode (`group::r--` under 0600): not trusted.
        assert_eq!(minimal.against_mode(0o600), Looser);
        // Write bits do not count.
        assert_eq!(minimal.against_mode(0o442), Agrees);
        // With a mask, the mode's group bits are the mask.
        let masked = l(&[
            (USER_OBJ, NONE, 6),
            (GROUP_OBJ, NONE, 0),
            (MASK, NONE, 4),
            (OTHER, NONE, 0),
        ]);
        assert_eq!(masked.against_mode(0o640), Agrees);
        assert_eq!(masked.against_mode(0o600), Looser);
        assert_eq!(l(&[]).against_mode(0o644), Agrees);
    }

    #[test]
    fn nfs_ganeshas_empty_list_says_nothing_more_than_the_mode() {
        let l = parse_getacl(&reply(&[])).unwrap().unwrap();
        assert!(l.entries.is_empty());
        assert!(!l.extends_mode());
    }

    #[test]
    fn a_named_user_or_group_or_a_mask_wider_than_the_group_extends_the_mode() {
        // `setfacl -m u:bob:0` on a 0644 file: bob is denied, the mode still says 0644.
        assert!(extends(&[
            (USER_OBJ, NONE, 6),
            (USER, 1002, 0),
            (GROUP_OBJ, NONE, 4),
            (MASK, NONE, 4),
            (OTHER, NONE, 4),
        ]));
        assert!(extends(&[
            (USER_OBJ, NONE, 6),
            (GROUP_OBJ, NONE, 0),
            (GROUP, 3000, 4),
            (MASK, NONE, 4),
            (OTHER, NONE, 0),
        ]));
        // The owning group may not read, the mask may: the mode's group bits show r.
        assert!(extends(&[
            (USER_OBJ, NONE, 6),
            (GROUP_OBJ, NONE, 0),
            (MASK, NONE, 4),
            (OTHER, NONE, 0),
        ]));
        // An entry of a kind this does not know.
        assert!(extends(&[
            (USER_OBJ, NONE, 6),
            (0x40, 7, 4),
            (OTHER, NONE, 0)
        ]));
    }

    #[test]
    fn an_error_status_is_read_with_or_without_attributes_after_it() {
        // Linux: status NFS3ERR_ACCES, then attributes follow: a regular file (type 1), all
        // else 0.
        let mut w: Vec<u8> = [13u32, 1, 1].iter().flat_map(|x| x.to_be_bytes()).collect();
        w.extend([0u8; 80]);
        assert_eq!(
            parse_getacl(&w).unwrap().unwrap_err(),
            nfsstat3::NFS3ERR_ACCES
        );
        // nfs-ganesha: the status alone.
        assert_eq!(
            parse_getacl(&70u32.to_be_bytes()).unwrap().unwrap_err(),
            nfsstat3::NFS3ERR_STALE
        );
    }

    #[test]
    fn the_mode_and_owner_sent_with_a_list_are_kept() {
        // Status 0, attributes follow (the 84-byte fattr3): a regular file, mode 0640, one
        // link, uid 1001, gid 2001, the rest 0; then an empty list and an empty default list.
        let mut w: Vec<u8> = [0u32, 1, 1, 0o640, 1, 1001, 2001]
            .iter()
            .flat_map(|x| x.to_be_bytes())
            .collect();
        w.extend([0u8; 64]);
        w.extend(
            [NFS_ACL | NFS_ACLCNT, 0, 0, 0, 0]
                .iter()
                .flat_map(|x| x.to_be_bytes()),
        );
        let l = parse_getacl(&w).unwrap().unwrap();
        assert_eq!(l.owner_mode, Some((0o640, 1001, 2001)));
        assert_eq!(parse_getacl(&reply(&[])).unwrap().unwrap().owner_mode, None);
    }

    #[test]
    fn a_count_that_disagrees_with_the_entries_cannot_be_read() {
        // Three entries counted, none sent.
        let w: Vec<u8> = [0u32, 0, 3, 3, 0, 0, 0]
            .iter()
            .flat_map(|x| x.to_be_bytes())
            .collect();
        let l = parse_getacl(&w).unwrap().unwrap();
        assert!(l.entries.is_empty());
        assert!(l.extends_mode());
    }

    #[test]
    fn short_or_oversized_replies_are_errors_not_lists() {
        let full = reply(&[(USER_OBJ, NONE, 6), (OTHER, NONE, 4)]);
        for cut in [0, 4, 12, full.len() - 4] {
            assert!(parse_getacl(&full[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = full.clone();
        long.extend([0, 0, 0, 0]);
        assert!(parse_getacl(&long).is_err());
        let huge: Vec<u8> = [0u32, 0, 3, 5000, 5000]
            .iter()
            .flat_map(|x| x.to_be_bytes())
            .collect();
        assert!(parse_getacl(&huge).unwrap_err().contains("5000 entries"));
    }

    #[test]
    fn the_arguments_are_the_handle_then_the_mask() {
        use nfs3_client::nfs3_types::xdr_codec::Opaque;
        let fh = nfs_fh3 {
            data: Opaque::owned(vec![1, 2, 3, 4, 5]),
        };
        let mut out = Vec::new();
        let args = GetAclArgs { fh: &fh };
        let n = args.pack(&mut out).unwrap();
        assert_eq!(n, args.packed_size());
        assert_eq!(out, [0, 0, 0, 5, 1, 2, 3, 4, 5, 0, 0, 0, 0, 0, 0, 3]);
    }
}
