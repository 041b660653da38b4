//! The authorized scope of a query.
//!
//! [`AclScope`] is a proof type: it has no public constructor, and the only way to mint one is
//! [`authorize`], which takes an authenticated [`Caller`] (itself only produced by
//! authentication in `identity`). Every retrieval function takes an `&AclScope`, so a query
//! cannot be built without an authorized scope. The scope is applied inside both retrieval legs,
//! before top-k; it is never a post-filter.

use std::collections::BTreeSet;
use std::sync::Arc;

use docent_connector_api::{Acl, fold_token};

use crate::identity::Caller;

#[derive(Debug, Clone)]
pub struct AclScope {
    user: String,
    /// Principal tokens: `user:<id>` and aliases, `group:<g>` (nested groups resolved), `everyone`.
    principals: Arc<BTreeSet<String>>,
    /// The principals and their folded forms ([`fold_token`]): what deny entries are matched
    /// against, so that a deny entry names its principal whatever the case either side uses.
    deny_principals: Arc<BTreeSet<String>>,
    /// What guardrail audiences and exemptions match ([`Caller::guardrail_principals`]).
    guardrail_principals: Arc<BTreeSet<String>>,
    /// An audience (a channel's members, not one person), or any caller while a connector's
    /// group memberships are not known ([`Caller::strict_deny`]): a document with any deny
    /// entry is out of scope, whoever it names.
    strict_deny: bool,
}

/// Why a caller gets no scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthzError {
    #[error("{0} may not query (the credential lacks the `query` permission)")]
    NoQueryPermission(String),
}

/// Turns an authenticated caller into the scope its queries run under: once per request, and
/// only for a caller holding the `query` permission.
pub fn authorize(caller: &Caller) -> Result<AclScope, AuthzError> {
    if !caller.permissions().query {
        return Err(AuthzError::NoQueryPermission(caller.user_id().to_string()));
    }
    Ok(AclScope {
        user: caller.user_id().to_string(),
        deny_principals: Arc::new(with_folded(&caller.deny_principals())),
        principals: Arc::new(caller.principals().clone()),
        guardrail_principals: Arc::new(caller.guardrail_principals().clone()),
        strict_deny: caller.strict_deny(),
    })
}

/// `principals` and their folded forms.
pub fn with_folded(principals: &BTreeSet<String>) -> BTreeSet<String> {
    principals
        .iter()
        .flat_map(|p| [p.clone(), fold_token(p)])
        .collect()
}

impl AclScope {
    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn principals(&self) -> impl Iterator<Item = &str> {
        self.principals.iter().map(String::as_str)
    }

    /// What deny entries are matched against: the principals and their folded forms. An index
    /// stores each deny entry with its folded form too ([`Acl::stored_deny`]).
    pub fn deny_principals(&self) -> impl Iterator<Item = &str> {
        self.deny_principals.iter().map(String::as_str)
    }

    /// The principals guardrail audiences and exemptions match: the config's, without the
    /// groups only a connector reports ([`Caller::guardrail_principals`]).
    pub fn principal_set(&self) -> &BTreeSet<String> {
        &self.guardrail_principals
    }

    /// Whether a document with `acl` is readable in this scope (deny wins).
    pub fn permits(&self, acl: &Acl) -> bool {
        let denies_someone = !acl.deny.is_empty();
        !(self.strict_deny && denies_someone)
            && acl
                .decide_folding(
                    |t| self.principals.contains(t),
                    |t| self.deny_principals.contains(t),
                )
                .allowed()
    }

    /// Whether any deny entry excludes a document (an audience's scope).
    pub fn strict_deny(&self) -> bool {
        self.strict_deny
    }

    /// A scope for unit tests that exercise retrieval without the identity layer.
    #[cfg(test)]
    pub fn for_tests(user: &str, principals: &[&str]) -> Self {
        let principals: Arc<BTreeSet<String>> =
            Arc::new(principals.iter().map(|s| s.to_string()).collect());
        Self {
            user: user.to_string(),
            guardrail_principals: principals.clone(),
            deny_principals: Arc::new(with_folded(&principals)),
            principals,
            strict_deny: false,
        }
    }

    /// [`AclScope::for_tests`] with principals deny entries match and allow entries do not
    /// (a withdrawn alias: [`crate::identity::Caller::deny_principals`]).
    #[cfg(test)]
    pub fn for_tests_deny_only(user: &str, principals: &[&str], deny_only: &[&str]) -> Self {
        let s = Self::for_tests(user, principals);
        let all: BTreeSet<String> = s
            .principals
            .iter()
            .cloned()
            .chain(deny_only.iter().map(|p| p.to_string()))
            .collect();
        Self {
            deny_principals: Arc::new(with_folded(&all)),
            ..s
        }
    }

    /// An audience's scope for unit tests (see [`AclScope::strict_deny`]).
    #[cfg(test)]
    pub fn for_tests_audience(user: &str, principals: &[&str]) -> Self {
        Self {
            strict_deny: true,
            ..Self::for_tests(user, principals)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use docent_connector_api::Principal;

    #[test]
    fn an_audience_scope_refuses_any_document_with_a_deny_entry() {
        let hr_but_bob = Acl::new([Principal::group("hr")], [Principal::user("bob")]);
        let hr = Acl::new([Principal::group("hr")], []);
        let person = AclScope::for_tests("alice", &["everyone", "group:hr", "user:alice"]);
        assert!(person.permits(&hr_but_bob), "alice is not bob");
        let channel = AclScope::for_tests_audience("group:hr", &["everyone", "group:hr"]);
        assert!(
            !channel.permits(&hr_but_bob),
            "bob may be in the channel: the document is out of its scope"
        );
        assert!(channel.permits(&hr));
    }

    #[test]
    fn a_deny_entry_excludes_its_principal_whatever_the_case() {
        let hr_but_bob = Acl::new([Principal::group("hr")], [Principal::user("Bob")]);
        for who in ["bob", "Bob", "BOB"] {
            let token = format!("user:{who}");
            let scope = AclScope::for_tests(who, &["everyone", "group:hr", &token]);
            assert!(!scope.permits(&hr_but_bob), "{who}");
        }
        let hr_but_ext = Acl::new([Principal::group("hr")], [Principal::group("external")]);
        let scope = AclScope::for_tests("ann", &["group:hr", "group:External", "user:ann"]);
        assert!(!scope.permits(&hr_but_ext));
        // Allow entries stay exact.
        let bob_only = Acl::new([Principal::user("Bob")], []);
        assert!(!AclScope::for_tests("bob", &["user:bob"]).permits(&bob_only));
        assert!(AclScope::for_tests("Bob", &["user:Bob"]).permits(&bob_only));
    }
}
