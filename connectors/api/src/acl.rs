//! Access control lists: allow and deny sets of principals. Deny wins; an empty allow set
//! permits nobody.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;

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

    /// The principal with its letters folded ([`fold_token`]): what a deny entry is also
    /// matched by.
    pub fn folded(&self) -> Self {
        match self {
            Self::User(u) => Self::User(fold_id(u)),
            Self::Group(g) => Self::Group(fold_id(g)),
            Self::Everyone => Self::Everyone,
        }
    }

    /// The token of [`Principal::folded`].
    pub fn folded_token(&self) -> String {
        self.folded().token()
    }
}

/// A principal token with its id folded: compatibility-normalised (NFKC) and lowercased, so
/// that `Bob`, `BOB`, `ｂｏｂ` and a decomposed `José` all fold as `bob` / `josé` (the `user:` /
/// `group:` prefixes and `everyone` fold to themselves). Deny entries match whatever spelling
/// either side uses: a push client or a source that writes `user:Bob` for the identity `bob`
/// would otherwise leave that deny unenforced. Allow entries stay exact: a different spelling
/// there locks the person out, which fails closed.
pub fn fold_token(token: &str) -> String {
    // The id alone, as [`Principal::folded`] folds it: lowercasing depends on the letters
    // around (a final Σ after `user:` would fold to ς, alone to σ).
    match token.split_once(':') {
        Some((kind, id)) => format!("{}:{}", kind.to_lowercase(), fold_id(id)),
        None => token.to_lowercase(),
    }
}

fn fold_id(id: &str) -> String {
    // ASCII is its own NFKC form: lowercase it and be done (the common case, on every check).
    if id.is_ascii() {
        let folded: String = id
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .map(|c| c.to_ascii_lowercase())
            .collect();
        return if folded.is_empty() {
            id.to_ascii_lowercase()
        } else {
            folded
        };
    }
    // NFKC, lowercase, without whitespace (NFKC turns a few letters into a space and a mark:
    // ¨ is U+0020 U+0308, and the folded id must still read back as a principal), until
    // nothing changes: each step can undo another's normal form (a mark left after a dropped
    // space composes with the letter before it), and folding must be idempotent, or a folded
    // entry read back from an index would fold again to something else.
    let mut folded = id.to_string();
    for _ in 0..4 {
        let next: String = folded
            .nfkc()
            .collect::<String>()
            .to_lowercase()
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .nfkc()
            .collect();
        if next == folded {
            break;
        }
        folded = next;
    }
    if folded.is_empty() {
        id.to_lowercase()
    } else {
        folded
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
    /// matches and no deny entry does, a deny entry's folded token included ([`Acl::decide`]).
    pub fn permits(&self, has: impl Fn(&str) -> bool) -> bool {
        self.decide(has).allowed()
    }

    /// Why a caller holding `has` may or may not read: the deny entry that matched (deny wins),
    /// else the allow entry that matched, else no entry. A deny entry matches by its token or
    /// its folded token ([`fold_token`]); a caller whose own tokens are not lowercase needs
    /// [`Acl::decide_folding`] to be matched whatever the case.
    pub fn decide(&self, has: impl Fn(&str) -> bool) -> AclDecision {
        self.decide_folding(&has, &has)
    }

    /// [`Acl::decide`] with the caller's folded tokens apart: `has` answers for its exact tokens
    /// (allow entries match only those), `has_folded` for its tokens and their folded forms, and
    /// is asked each deny entry's folded token. So `user:Bob` denies `bob`, `Bob` and `BOB`.
    pub fn decide_folding(
        &self,
        has: impl Fn(&str) -> bool,
        has_folded: impl Fn(&str) -> bool,
    ) -> AclDecision {
        if let Some(p) = self
            .deny
            .iter()
            .find(|p| has(&p.token()) || has_folded(&p.folded_token()))
        {
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

    /// The deny entries as an index stores and filters by them: every entry and its folded
    /// form, so that a caller's folded tokens find the entry whatever its case. Idempotent, and
    /// the entries themselves when they are lowercase already.
    pub fn stored_deny(&self) -> BTreeSet<Principal> {
        self.deny
            .iter()
            .flat_map(|p| [p.clone(), p.folded()])
            .collect()
    }

    /// Stable hash of the ACL, to detect ACL-only changes without reading content. Over the
    /// deny entries as an index stores them ([`Acl::stored_deny`]), so that an ACL read back
    /// from an index hashes as the one its source gave.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for p in &self.allow {
            h.update(b"+");
            h.update(p.token().as_bytes());
            h.update(b"\n");
        }
        for p in self.stored_deny() {
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
    fn a_deny_entry_denies_its_name_in_any_case_and_an_allow_entry_admits_it_exactly() {
        let acl = Acl::new([Principal::Everyone], [Principal::user("Bob")]);
        // A caller whose tokens are lowercase: `decide` alone folds the entry.
        assert!(!acl.permits(set(&["everyone", "user:bob"])));
        // A caller spelled otherwise: its folded tokens meet the entry's folded token.
        let caller = ["everyone", "user:BOB"];
        let folded = ["everyone", "user:BOB", "user:bob"];
        assert_eq!(
            acl.decide_folding(set(&caller), set(&folded)),
            AclDecision::Denied(Principal::user("Bob"))
        );
        assert!(
            acl.decide(set(&caller)).allowed(),
            "exact tokens alone miss it"
        );
        let allow = Acl::new([Principal::user("Bob")], []);
        assert!(
            !allow
                .decide_folding(set(&["user:bob"]), set(&["user:bob"]))
                .allowed()
        );
        assert!(allow.permits(set(&["user:Bob"])));
    }

    #[test]
    fn folding_lowercases_the_id_alone() {
        // Lowercasing "user:Σ" as one string gives a final ς (a letter before the colon).
        let p = Principal::group("ΟΔΟΣ");
        assert_eq!(p.folded_token(), fold_token(&p.token()));
        let p = Principal::user("Σ");
        assert_eq!(p.folded_token(), "user:σ");
        assert_eq!(fold_token("user:Σ"), "user:σ");
        assert_eq!(fold_token("everyone"), "everyone");
        assert_eq!(fold_token("user:Jose\u{301}"), "user:jos\u{e9}");
        assert_eq!(fold_token("group:ＨＲ"), "group:hr");
        // NFKC gives ¨ a space; the folded token still reads back as a principal.
        let p = Principal::user("a\u{a8}b");
        assert_eq!(p.folded_token().parse::<Principal>(), Ok(p.folded()));
        // Folding is idempotent (found by a review: a mark left after the dropped space
        // composed only when folded again).
        for id in [
            "a\u{a8}b",
            "İstanbul",
            "ΟΔΟΣ",
            "Straße",
            "ＢＯＢ",
            "jose\u{301}",
            "ǅ",
            "ﬁle",
        ] {
            let once = Principal::user(id).folded();
            assert_eq!(once.folded(), once, "{id}");
        }
        assert_eq!(fold_token("user:a\u{a8}b"), "user:\u{e4}b");
    }

    #[test]
    fn an_acl_read_back_with_its_folded_deny_entries_hashes_as_the_source_gave_it() {
        let source = Acl::new([Principal::group("hr")], [Principal::user("Bob")]);
        let stored = Acl::new([Principal::group("hr")], source.stored_deny());
        assert_eq!(stored.deny.len(), 2);
        assert_eq!(source.fingerprint(), stored.fingerprint());
        assert_eq!(stored.stored_deny(), stored.deny, "idempotent");
        // Lowercase entries store as themselves: their hash is the one indexes already hold.
        let lower = Acl::new(
            [Principal::group("hr")],
            [Principal::user("bob"), Principal::group("ext")],
        );
        let mut h = Sha256::new();
        h.update(b"+group:hr\n-user:bob\n-group:ext\n");
        assert_eq!(lower.fingerprint(), hex::encode(&h.finalize()[..16]));
    }

    #[test]
    fn fingerprint_changes_with_acl() {
        let a = Acl::new([Principal::group("hr")], []);
        let b = Acl::new([Principal::group("hr")], [Principal::user("x")]);
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
    }
}
