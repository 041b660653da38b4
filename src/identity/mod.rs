//! Identities: who a caller is and which principals they hold.
//!
//! Each person has one canonical id, aliases (emails, `DOMAIN\user`, uid) and groups; groups may
//! be members of other groups (resolved transitively, cycles tolerated). A caller's principal set
//! is `user:<id>`, `user:<alias>` for each alias, `group:<g>` for every group reached, and
//! `everyone`. API tokens are stored as SHA-256 hashes; an unknown token authenticates nobody.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sha2::{Digest, Sha256};

/// An authenticated caller. Only this module constructs it.
#[derive(Debug, Clone)]
pub struct Caller {
    user_id: String,
    principals: BTreeSet<String>,
    admin: bool,
}

impl Caller {
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    pub fn principals(&self) -> &BTreeSet<String> {
        &self.principals
    }

    pub fn is_admin(&self) -> bool {
        self.admin
    }
}

/// One configured identity (validated).
#[derive(Debug, Clone)]
pub struct IdentitySpec {
    pub id: String,
    pub aliases: Vec<String>,
    pub groups: Vec<String>,
    /// Lowercase hex SHA-256 of the API token, if the identity may call the API.
    pub token_sha256: Option<String>,
    pub admin: bool,
}

/// One configured group and the groups it belongs to.
#[derive(Debug, Clone)]
pub struct GroupSpec {
    pub id: String,
    pub member_of: Vec<String>,
}

#[derive(Debug, Default)]
pub struct IdentityStore {
    by_token: HashMap<[u8; 32], usize>,
    identities: Vec<IdentitySpec>,
    parents: BTreeMap<String, Vec<String>>,
}

pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl IdentityStore {
    /// Token hashes must be valid 64-char hex; config validation guarantees it.
    pub fn new(identities: Vec<IdentitySpec>, groups: Vec<GroupSpec>) -> Self {
        let mut by_token = HashMap::new();
        for (i, id) in identities.iter().enumerate() {
            if let Some(h) = &id.token_sha256
                && let Ok(bytes) = hex::decode(h)
                && let Ok(arr) = <[u8; 32]>::try_from(bytes.as_slice())
            {
                by_token.insert(arr, i);
            }
        }
        let parents = groups.into_iter().map(|g| (g.id, g.member_of)).collect();
        Self {
            by_token,
            identities,
            parents,
        }
    }

    /// The caller a bearer token belongs to; `None` for an unknown token.
    pub fn authenticate_token(&self, token: &str) -> Option<Caller> {
        let i = *self.by_token.get(&token_hash(token))?;
        Some(self.caller(&self.identities[i]))
    }

    /// The caller for a configured identity id (used by `config check` and tests).
    pub fn resolve(&self, id: &str) -> Option<Caller> {
        self.identities
            .iter()
            .find(|s| s.id == id)
            .map(|s| self.caller(s))
    }

    fn caller(&self, spec: &IdentitySpec) -> Caller {
        let mut principals = BTreeSet::from(["everyone".to_string(), format!("user:{}", spec.id)]);
        for a in &spec.aliases {
            principals.insert(format!("user:{a}"));
        }
        for g in self.expand_groups(&spec.groups) {
            principals.insert(format!("group:{g}"));
        }
        Caller {
            user_id: spec.id.clone(),
            principals,
            admin: spec.admin,
        }
    }

    /// Direct groups plus every group they are (transitively) members of.
    pub fn expand_groups(&self, direct: &[String]) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut stack: Vec<&String> = direct.iter().collect();
        while let Some(g) = stack.pop() {
            if out.insert(g.clone())
                && let Some(ps) = self.parents.get(g)
            {
                stack.extend(ps.iter());
            }
        }
        out
    }

    /// Group membership cycles, for config validation (each reported once, as a path).
    pub fn group_cycles(&self) -> Vec<Vec<String>> {
        let mut cycles = Vec::new();
        for start in self.parents.keys() {
            let mut path = vec![start.clone()];
            self.find_cycle(start, &mut path, &mut cycles);
        }
        cycles.sort();
        cycles.dedup();
        cycles
    }

    fn find_cycle(&self, start: &str, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        let Some(ps) = self.parents.get(path.last().expect("non-empty path")) else {
            return;
        };
        for p in ps {
            if p == start {
                let mut c = path.clone();
                // Canonical rotation so one cycle is reported once.
                let min = c
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| s.as_str())
                    .map(|(i, _)| i)
                    .unwrap_or(0);
                c.rotate_left(min);
                out.push(c);
            } else if !path.contains(p) {
                path.push(p.clone());
                self.find_cycle(start, path, out);
                path.pop();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> IdentityStore {
        IdentityStore::new(
            vec![IdentitySpec {
                id: "alice".into(),
                aliases: vec!["alice@corp.example".into(), "1001".into()],
                groups: vec!["payroll".into()],
                token_sha256: Some(hex::encode(token_hash("secret-a"))),
                admin: false,
            }],
            vec![
                GroupSpec {
                    id: "payroll".into(),
                    member_of: vec!["hr".into()],
                },
                GroupSpec {
                    id: "hr".into(),
                    member_of: vec!["staff".into()],
                },
                GroupSpec {
                    id: "staff".into(),
                    member_of: vec!["hr".into()],
                },
            ],
        )
    }

    #[test]
    fn token_maps_to_principals_with_nested_groups() {
        let s = store();
        assert!(s.authenticate_token("wrong").is_none());
        assert!(s.authenticate_token("").is_none());
        let c = s.authenticate_token("secret-a").unwrap();
        assert_eq!(c.user_id(), "alice");
        let p: Vec<&str> = c.principals().iter().map(String::as_str).collect();
        assert_eq!(
            p,
            [
                "everyone",
                "group:hr",
                "group:payroll",
                "group:staff",
                "user:1001",
                "user:alice",
                "user:alice@corp.example"
            ]
        );
    }

    #[test]
    fn cycles_are_reported_once() {
        assert_eq!(
            store().group_cycles(),
            vec![vec!["hr".to_string(), "staff".to_string()]]
        );
    }
}
