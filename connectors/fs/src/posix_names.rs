//! uid/gid → name, read from /etc/passwd and /etc/group (no libc calls: this crate forbids
//! unsafe code, and NSS lookups would block on network directories anyway). Unknown ids are
//! returned as numbers, which identities can list as aliases.

use std::collections::HashMap;

#[derive(Debug, Default)]
pub struct PosixNames {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl PosixNames {
    pub fn load() -> Self {
        Self {
            users: parse(&std::fs::read_to_string("/etc/passwd").unwrap_or_default()),
            groups: parse(&std::fs::read_to_string("/etc/group").unwrap_or_default()),
        }
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
}

/// `name:x:id:...` lines; the id is the third field in both files.
fn parse(text: &str) -> HashMap<u32, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
