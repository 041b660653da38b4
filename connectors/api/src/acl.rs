//! Access control lists: allow and deny sets of principals. Deny wins; an empty allow set
//! permits nobody.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Who an ACL entry names. Its token form (`user:alice`, `group:hr`, `everyone`) is what the
/// index stores and what a caller's principal set contains.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Principal {
    User(String),
    Group(String),
    Everyone,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    #[error("invalid principal {0:?}: expected user:<id>, group:<id> or everyone")]
    InvalidPrincipal(String),
}

impl Principal {
    pub fn user(id: impl Into<String>) -> Self {
        Self::User(id.into())
    }

    pub fn group(id: impl Into<String>) -> Self {
        Self::Group(id.into())
    }

    /// The indexed token. Ids are case-sensitive as given; identities normalise their own.
    pub fn token(&self) -> String {
        match self {
            Self::User(u) => format!("user:{u}"),
            Self::Group(g) => format!("group:{g}"),
            Self::Everyone => "everyone".to_string(),
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.token())
    }
}

impl FromStr for Principal {
    type Err = AclError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || AclError::InvalidPrincipal(s.to_string());
        if s == "everyone" {
            return Ok(Self::Everyone);
        }
        let (kind, id) = s.split_once(':').ok_or_else(bad)?;
        if id.is_empty() || id.chars().any(char::is_whitespace) {
            return Err(bad());
        }
        match kind {
            "user" => Ok(Self::User(id.to_string())),
            "group" => Ok(Self::Group(id.to_string())),
            _ => Err(bad()),
        }
    }
}

impl TryFrom<String> for Principal {
    type Error = AclError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Principal> for String {
    fn from(p: Principal) -> Self {
        p.token()
    }
}

/// The entry that decided an access check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AclDecision {
    /// A deny entry matched (deny wins over any allow).
    Denied(Principal),
    /// No deny entry matched; this allow entry did.
    Allowed(Principal),
    /// No entry matched: not readable.
    NoMatch,
}

impl AclDecision {
    pub fn allowed(&self) -> bool {
        matches!(self, Self::Allowed(_))
    }
}

impl fmt::Display for AclDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Denied(p) => write!(f, "denied by deny entry {p}"),
            Self::Allowed(p) => write!(f, "allowed by allow entry {p}"),
            Self::NoMatch => f.write_str("not allowed: no allow entry matches"),
        }
    }
}

/// A document's ACL. Never optional: a document without a known ACL is not indexed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acl {
    pub allow: BTreeSet<Principal>,
    pub deny: BTreeSet<Principal>,
}

impl Acl {
    pub fn new(
        allow: impl IntoIterator<Item = Principal>,
        deny: impl IntoIterator<Item = Principal>,
    ) -> Self {
        Self {
            allow: allow.into_iter().collect(),
            deny: deny.into_iter().collect(),
        }
    }

    /// True when a caller holding `has` (a principal-token predicate) may read: some allow entry
    /// matches and no deny entry does.
    pub fn permits(&self, has: impl Fn(&str) -> bool) -> bool {
        !self.deny.iter().any(|p| has(&p.token())) && self.allow.iter().any(|p| has(&p.token()))
    }

    /// Why a caller holding `has` may or may not read: the deny entry that matched (deny wins),
    /// else the allow entry that matched, else no entry. Agrees with [`Acl::permits`].
    pub fn decide(&self, has: impl Fn(&str) -> bool) -> AclDecision {
        if let Some(p) = self.deny.iter().find(|p| has(&p.token())) {
            return AclDecision::Denied(p.clone());
        }
        match self.allow.iter().find(|p| has(&p.token())) {
            Some(p) => AclDecision::Allowed(p.clone()),
            None => AclDecision::NoMatch,
        }
    }

    /// True when nobody can read the document.
    pub fn is_closed(&self) -> bool {
        self.allow.is_empty() || self.deny.contains(&Principal::Everyone)
    }

    /// Stable hash of the ACL, to detect ACL-only changes without reading content.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for p in &self.allow {
            h.update(b"+");
            h.update(p.token().as_bytes());
            h.update(b"\n");
        }
        for p in &self.deny {
            h.update(b"-");
            h.update(p.token().as_bytes());
            h.update(b"\n");
        }
        hex::encode(&h.finalize()[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set<'a>(tokens: &'a [&'a str]) -> impl Fn(&str) -> bool + 'a {
        move |t| tokens.contains(&t)
    }

    #[test]
    fn deny_wins_over_allow() {
        let acl = Acl::new([Principal::group("hr")], [Principal::user("mallory")]);
        assert!(acl.permits(set(&["user:alice", "group:hr"])));
        assert!(!acl.permits(set(&["user:mallory", "group:hr"])));
        assert!(!acl.permits(set(&["user:bob", "group:eng", "everyone"])));
    }

    #[test]
    fn decide_names_the_deciding_entry_and_agrees_with_permits() {
        let acl = Acl::new(
            [Principal::group("hr"), Principal::Everyone],
            [Principal::user("mallory")],
        );
        let cases: [(&[&str], AclDecision); 3] = [
            (
                &["user:mallory", "group:hr", "everyone"],
                AclDecision::Denied(Principal::user("mallory")),
            ),
            (
                &["user:a", "group:hr"],
                AclDecision::Allowed(Principal::group("hr")),
            ),
            (&["user:b"], AclDecision::NoMatch),
        ];
        for (tokens, want) in cases {
            let d = acl.decide(set(tokens));
            assert_eq!(d.allowed(), acl.permits(set(tokens)));
            assert_eq!(d, want);
        }
    }

    #[test]
    fn empty_allow_permits_nobody() {
        let acl = Acl::default();
        assert!(acl.is_closed());
        assert!(!acl.permits(|_| true));
    }

    #[test]
    fn principals_parse_and_reject_garbage() {
        assert_eq!("user:a".parse::<Principal>(), Ok(Principal::user("a")));
        assert_eq!("group:g".parse::<Principal>(), Ok(Principal::group("g")));
        assert_eq!("everyone".parse::<Principal>(), Ok(Principal::Everyone));
        for bad in ["", "user:", "alice", "role:x", "user:a b"] {
            assert!(bad.parse::<Principal>().is_err(), "{bad}");
        }
    }

    #[test]
    fn fingerprint_changes_with_acl() {
        let a = Acl::new([Principal::group("hr")], []);
        let b = Acl::new([Principal::group("hr")], [Principal::user("x")]);
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
    }
}
