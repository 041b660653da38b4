//! The daemon's identity store over time: built from the config (identities, groups, API keys,
//! identity files, JWKS) plus the group memberships connectors report, rebuilt whole when either
//! changes and swapped atomically, so each request sees one consistent store. A reload that
//! fails (an unreadable file, a bad config, a name given to two identities) keeps the current
//! store. A report rebuilds from the identity files as the last start or reload read them (it
//! reads no file, so a file being rewritten cannot hold it back); should it still fail, the
//! connector's earlier report is dropped and it counts as not reported (fail closed: see
//! below), and the connector is told (its memberships alarm). A report only adds groups to
//! identities the config and identity files define ([`super::sources::merge`]): it never
//! creates an identity or moves a name to another one.
//!
//! Until every connector configured to report memberships has reported once, the store is
//! marked pending and every caller's scope excludes documents with deny entries
//! ([`super::Caller::strict_deny`]): a deny entry may name a group whose members only the report
//! tells (a file's POSIX group with no permissions), and without it the deny would admit them.
//! On a query node, which runs no connector, that lasts; its identity sources must then hold the
//! group database (`format = "group_file"`) and its config not ask connectors to report.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use docent_connector_api::{GroupMembership, MembershipSink};

use super::IdentityStore;
use super::sources::Loaded;
use crate::config::{Config, IdentityFiles};

/// The current store, shared with the authentication interceptor.
pub type SharedIdentities = Arc<ArcSwap<IdentityStore>>;

pub struct IdentityRegistry {
    store: SharedIdentities,
    base: Mutex<Config>,
    /// The identity files as the last start or reload read them.
    files: Mutex<IdentityFiles>,
    /// Memberships per reporting connector (each report replaces the connector's previous one).
    reported: Mutex<BTreeMap<String, Vec<GroupMembership>>>,
    /// Connectors configured to report memberships that have not yet reported.
    pending: Mutex<BTreeSet<String>>,
}

/// (identities, groups, API keys) in a store.
pub type Counts = (usize, usize, usize);

fn counts(s: &IdentityStore) -> Counts {
    (s.identity_count(), s.group_count(), s.api_key_count())
}

impl IdentityRegistry {
    pub fn new(config: &Config) -> Result<Self, String> {
        let pending: BTreeSet<String> = config
            .connectors
            .iter()
            .filter(|c| c.spec.reports_memberships())
            .map(|c| c.id.clone())
            .collect();
        if !pending.is_empty() {
            tracing::info!(
                connectors = ?pending,
                "documents with deny entries are withheld until these connectors report group memberships"
            );
        }
        let files = config.identity_files()?;
        let store = config
            .identity_store_from(&files, Vec::new())?
            .with_pending_memberships(pending.iter().cloned().collect());
        Ok(Self {
            store: Arc::new(ArcSwap::from_pointee(store)),
            base: Mutex::new(config.clone()),
            files: Mutex::new(files),
            reported: Mutex::new(BTreeMap::new()),
            pending: Mutex::new(pending),
        })
    }

    pub fn shared(&self) -> SharedIdentities {
        self.store.clone()
    }

    pub fn current(&self) -> Arc<IdentityStore> {
        self.store.load_full()
    }

    fn rebuild(&self, base: &Config, files: &IdentityFiles) -> Result<Counts, String> {
        let extra: Vec<Loaded> = self
            .reported
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(connector, g)| Loaded::reported(connector, g))
            .collect();
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        let store = base
            .identity_store_from(files, extra)?
            .with_pending_memberships(pending);
        let c = counts(&store);
        self.store.store(Arc::new(store));
        Ok(c)
    }

    /// After a reload failed: withdraws from the current identities each credential and
    /// privilege the config file no longer grants (see [`crate::config::Granted`]): an API
    /// key revoked, removed, rebound or given another secret; a key's scopes narrowed; an
    /// identity's token removed or changed; `admin`, `act_as` or `ingest` taken away; an alias
    /// removed (no credential signs in by it; in ACLs a deny naming it still applies, an allow
    /// no longer does). Also what
    /// the identity files, read again now, no longer give: an identity they defined (locked),
    /// an alias they gave (no sign-in by it), and a key gone from the JWKS file. Nothing is
    /// granted. Kept until a reload succeeds (later rebuilds start from it). Returns how many
    /// were withdrawn.
    pub fn withdraw_ungranted(&self, granted: &crate::config::Granted) -> Result<usize, String> {
        let mut held = self.base.lock().unwrap_or_else(|p| p.into_inner());
        // Changed on a copy, kept only once a store is built from it (a review: a change that
        // could not be built stayed in place and failed every later rebuild).
        let mut base = held.clone();
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // The identity files as they read now, each on its own; one that cannot be read counts
        // as it read last (a review: only the last good read was asked, so an identity removed
        // from both the config and its file kept signing in).
        let now_files: Vec<crate::identity::sources::Loaded> = base
            .identity_sources
            .iter()
            .enumerate()
            .filter_map(|(i, src)| {
                crate::identity::sources::load_at(i, src)
                    .ok()
                    .or_else(|| files.loaded.get(i).cloned())
            })
            .collect();
        // An identity the identity files define stays one when the config drops it.
        let in_files = |id: &str| {
            now_files
                .iter()
                .any(|l| l.identities.iter().any(|e| e.spec.id == id))
        };
        // Clears `have` unless `keep`; 1 when it cleared it.
        fn withdraw(have: &mut bool, keep: bool) -> usize {
            let cleared = *have && !keep;
            *have &= keep;
            usize::from(cleared)
        }
        let mut n = 0;
        for id in &mut base.identities {
            let now = granted.identities.get(&id.id);
            // Gone from the file: locked (no JWT, certificate or key authenticates it, no one
            // acts for it). Kept in the store, with its groups: a deny naming one of them
            // must still apply to it wherever it is still read.
            if now.is_none() && !id.locked && !in_files(&id.id) {
                id.locked = true;
                n += 1;
            }
            let mut token = id.token_sha256.is_some();
            n += withdraw(
                &mut token,
                now.and_then(|g| g.token_sha256.as_deref())
                    .zip(id.token_sha256.as_deref())
                    .is_some_and(|(new, old)| new.eq_ignore_ascii_case(old)),
            );
            if !token {
                id.token_sha256 = None;
            }
            let privileged = id.admin || id.act_as || id.ingest;
            n += withdraw(&mut id.admin, now.is_some_and(|g| g.admin));
            n += withdraw(&mut id.act_as, now.is_some_and(|g| g.act_as));
            // Whom it acts for only narrows: to the entries both lists name (the file's alone
            // when the current one is anyone); none in common, or a list that does not read,
            // withdraws `act_as`. A list emptied by the file (anyone) widens, and stays.
            if id.act_as {
                match now.and_then(|g| g.act_for.as_ref()) {
                    None => n += withdraw(&mut id.act_as, false),
                    Some(file) if file.is_empty() => {}
                    Some(file) => {
                        let narrowed: Vec<String> = if id.act_for.is_empty() {
                            file.clone()
                        } else {
                            id.act_for
                                .iter()
                                .filter(|p| file.contains(p))
                                .cloned()
                                .collect()
                        };
                        if narrowed.is_empty() {
                            n += withdraw(&mut id.act_as, false);
                        } else if narrowed != id.act_for {
                            id.act_for = narrowed;
                            n += 1;
                        }
                    }
                }
            }
            n += withdraw(&mut id.ingest, now.is_some_and(|g| g.ingest));
            // Its last privilege withdrawn: the aliases only identity files give it, which
            // never signed a privileged identity in, still do not (session 43's review: they
            // began to, since the identity no longer held a privilege). They keep naming it in
            // ACLs, allows included: they were not withdrawn.
            if privileged && !(id.admin || id.act_as || id.ingest) {
                id.privilege_withdrawn = true;
            }
            // An alias gone from its entry signs in no more (a review: a certificate or JWT
            // mapped by it still did). A deny naming it still applies; an allow no longer does.
            if let Some(g) = now {
                for a in &id.aliases {
                    // (One the identity files give it stays, as an identity they define.)
                    let in_files = now_files.iter().any(|l| {
                        l.identities
                            .iter()
                            .any(|e| e.spec.id == id.id && e.spec.aliases.contains(a))
                    });
                    if !g.aliases.contains(a) && !id.sign_in_withdrawn.contains(a) && !in_files {
                        id.sign_in_withdrawn.push(a.clone());
                        n += 1;
                    }
                }
            }
        }
        // A file entry that merged into a configured identity (by a name they share), gone from
        // its file: the aliases it gave stop signing that identity in (a review: they went on
        // signing in until a reload succeeded). Denies naming them still apply; allows no
        // longer do.
        for e in files
            .loaded
            .iter()
            .filter(|l| !l.members_only)
            .flat_map(|l| &l.identities)
            .filter(|e| !in_files(&e.spec.id))
        {
            let Some(id) = base
                .identities
                .iter_mut()
                .find(|i| i.id == e.spec.id || i.aliases.contains(&e.spec.id))
            else {
                continue;
            };
            for a in &e.spec.aliases {
                let still_given = id.aliases.contains(a)
                    || now_files.iter().any(|l| {
                        l.identities.iter().any(|x| {
                            (x.spec.id == id.id || id.aliases.contains(&x.spec.id))
                                && x.spec.aliases.contains(a)
                        })
                    });
                if !still_given && !id.sign_in_withdrawn.contains(a) {
                    id.sign_in_withdrawn.push(a.clone());
                    n += 1;
                }
            }
        }
        // An identity only the identity files defined, gone from them: locked as well (kept,
        // with its groups, through an entry that locks it). Files that only name members (a
        // group file) define none.
        let dropped: Vec<String> = files
            .loaded
            .iter()
            .filter(|l| !l.members_only)
            .flat_map(|l| l.identities.iter().map(|e| e.spec.id.clone()))
            .filter(|id| {
                !in_files(id)
                    && !granted.identities.contains_key(id)
                    && !base
                        .identities
                        .iter()
                        .any(|i| &i.id == id || i.aliases.contains(id))
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let configured = base.identities.len();
        for id in &dropped {
            base.identities.push(crate::identity::IdentitySpec {
                id: id.clone(),
                locked: true,
                ..Default::default()
            });
        }
        // A signing key gone from the JWKS file stops verifying; none is added. A file that does
        // not load whole now keeps the keys it still lists one by one (none when it is not
        // JSON), and a config that no longer sets `auth.jwks_file` keeps none (session 43's
        // review: both kept every key, a compromised one removed from the file included).
        if let (Some(old), Some(cfg)) = (&files.jwt, &base.jwt) {
            let (kept, gone) = if granted.jwks_file_removed {
                old.keeping_listed(&BTreeSet::new())
            } else {
                match crate::identity::jwt::JwtVerifier::load(cfg.clone()) {
                    Ok(newer) => old.keeping_only(&newer),
                    Err(_) => {
                        old.keeping_listed(&crate::identity::jwt::keys_listed_in(&cfg.jwks_file))
                    }
                }
            };
            if gone > 0 {
                files.jwt = Some(Arc::new(kept));
                n += gone;
            }
        }
        for k in &mut base.api_keys {
            let now = granted
                .api_keys
                .get(&k.id)
                .filter(|g| g.identity == k.identity && g.sha256.eq_ignore_ascii_case(&k.sha256));
            let mut live = !k.revoked;
            n += withdraw(&mut live, now.is_some_and(|g| g.scopes.is_some()));
            k.revoked = !live;
            if let Some(g) = now.filter(|_| live) {
                if let Some(scopes) = g.scopes {
                    let s = &mut k.scopes;
                    n += withdraw(&mut s.query, scopes.query);
                    n += withdraw(&mut s.admin, scopes.admin);
                    n += withdraw(&mut s.act_as, scopes.act_as);
                    n += withdraw(&mut s.ingest, scopes.ingest);
                }
                // An earlier expiry (how a key is often ended) holds; a later one waits.
                if let Some(at) = g.expires_at
                    && k.expires_at.is_none_or(|old| at < old)
                {
                    k.expires_at = Some(at);
                    n += 1;
                }
            }
        }
        if n + dropped.len() > 0 {
            // An identity a file defined that merged into another (by a name it shares) may not
            // stand as an entry of its own: without those locks, the rest still applies.
            if let Err(e) = self.rebuild(&base, &files) {
                if dropped.is_empty() {
                    return Err(e);
                }
                tracing::warn!(
                    error = %crate::guardrail::pii::for_log(&e),
                    "identities gone from the identity files could not be locked on their own"
                );
                base.identities.truncate(configured);
                self.rebuild(&base, &files)?;
            } else {
                n += dropped.len();
            }
            *held = base;
            *self.files.lock().unwrap_or_else(|p| p.into_inner()) = files;
        }
        Ok(n)
    }

    /// Revokes the API keys with these ids (from a config file that is not TOML, see
    /// [`crate::config::revoked_in_text`]); the number revoked. Nothing else changes.
    pub fn revoke_keys(&self, ids: &BTreeSet<String>) -> Result<usize, String> {
        let mut held = self.base.lock().unwrap_or_else(|p| p.into_inner());
        let mut base = held.clone();
        let mut n = 0;
        for k in &mut base.api_keys {
            if ids.contains(&k.id) && !k.revoked {
                k.revoked = true;
                n += 1;
            }
        }
        if n > 0 {
            let files = self.files.lock().unwrap_or_else(|p| p.into_inner()).clone();
            self.rebuild(&base, &files)?;
            *held = base;
        }
        Ok(n)
    }

    /// Replaces the config part (a reload) and rebuilds; on error nothing changes.
    pub fn reload(&self, config: Config) -> Result<Counts, String> {
        let mut base = self.base.lock().unwrap_or_else(|p| p.into_inner());
        let files = config.identity_files()?;
        let c = self.rebuild(&config, &files)?;
        *base = config;
        *self.files.lock().unwrap_or_else(|p| p.into_inner()) = files;
        Ok(c)
    }
}

impl MembershipSink for IdentityRegistry {
    fn report(&self, connector: &str, groups: Vec<GroupMembership>) -> Result<(), String> {
        let n = groups.len();
        // Changed under the base's lock, which every rebuild holds (session 43's review: a
        // reload's rebuild between the two changes below saw the connector neither reported
        // nor pending, and published a store where its groups' denies matched no one).
        let base = self.base.lock().unwrap_or_else(|p| p.into_inner());
        self.reported
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(connector.to_string(), groups);
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(connector);
        let files = self.files.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match self.rebuild(&base, &files) {
            Ok(_) => {
                tracing::info!(connector, groups = n, "group memberships updated");
                Ok(())
            }
            Err(e) => {
                // Keeping the store would keep the connector's earlier memberships (a member
                // removed from a group would keep reading its documents): they are dropped,
                // and the connector counts as not reported.
                self.reported
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(connector);
                self.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(connector.to_string());
                if self.rebuild(&base, &files).is_err() {
                    // Every report dropped: the config and identity files alone built a store
                    // at the last start or reload.
                    let all: Vec<String> = std::mem::take(
                        &mut *self.reported.lock().unwrap_or_else(|p| p.into_inner()),
                    )
                    .into_keys()
                    .collect();
                    self.pending
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend(all);
                    if let Err(e) = self.rebuild(&base, &files) {
                        // Unreachable while the config and files built a store before.
                        tracing::error!(error = %crate::guardrail::pii::for_log(&e), "identity store not rebuilt without any report; the current store stays");
                    }
                }
                tracing::error!(connector, error = %crate::guardrail::pii::for_log(&e), "group memberships could not be applied; the connector's reported memberships were dropped and documents with deny entries are withheld until a report applies");
                Err(format!(
                    "the reported group memberships could not be applied: {e}"
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use docent_connector_api::Principal;
    use std::path::Path;

    fn config(dir: &Path, identities: &str) -> Result<Config, Vec<crate::config::ConfigIssue>> {
        let text = format!(
            r#"
version = 1
[index]
data_dir = "data"
[embedding]
model_dir = "models/m"
onnxruntime_lib = "models/ort.so"
[[identity_sources]]
format = "json"
path = "users.json"
{identities}"#
        );
        Config::parse(&text, dir)
    }

    const PEOPLE: &str = r#"
[[identities]]
id = "alice"
aliases = ["alice@corp.example"]
token_sha256 = "8989ee243a8829e3364b6eb9cae74f1edfa53e327e5718fe337d23d6ab8b4625"
[[identities]]
id = "bob"
aliases = ["bob@corp.example"]
"#;

    fn users(dir: &Path, json: &str) {
        std::fs::write(dir.join("users.json"), json).unwrap();
    }

    #[test]
    fn config_check_reports_a_name_of_two_identities_with_both_places() {
        let dir = tempfile::tempdir().unwrap();
        users(
            dir.path(),
            r#"{"users":[{"id":"carol","aliases":["bob@corp.example"]}]}"#,
        );
        let issues = config(
            dir.path(),
            &format!("{PEOPLE}[[identities]]\nid = \"mallory\"\naliases = [\"alice\"]\n"),
        )
        .unwrap_err();
        let alias = issues
            .iter()
            .find(|i| i.path == "identities[2].aliases[0]")
            .unwrap_or_else(|| panic!("{issues:#?}"));
        assert!(alias.message.contains("identities[0].id"), "{alias}");
        let file = issues
            .iter()
            .find(|i| i.path == "identity_sources[0]")
            .unwrap_or_else(|| panic!("{issues:#?}"));
        let users_json = dir.path().join("users.json");
        assert!(
            file.message
                .contains(&format!("{}: users[0].aliases[0]", users_json.display()))
                && file.message.contains("identities[1].aliases[0]"),
            "{file}"
        );
    }

    /// Session 36's note: a reload that failed for an unrelated reason (here the version)
    /// also held back the revocations written in the same file.
    #[test]
    fn a_failed_reload_still_withdraws_what_the_file_no_longer_grants() {
        use crate::identity::token_hash;
        let dir = tempfile::tempdir().unwrap();
        users(dir.path(), r#"{"users":[]}"#);
        let h = |t: &str| hex::encode(token_hash(t));
        let people = |alice_admin: &str, bob_token: &str, k1: &str, k2_scopes: &str| {
            format!(
                "[[identities]]\nid = \"alice\"\ntoken_sha256 = \"{}\"\n{alice_admin}\n\
                 [[identities]]\nid = \"bob\"\ntoken_sha256 = \"{}\"\n\
                 [[identities]]\nid = \"carol\"\ningest = true\n\
                 [[api_keys]]\nid = \"k1\"\nidentity = \"alice\"\nsha256 = \"{}\"\n{k1}\n\
                 [[api_keys]]\nid = \"k2\"\nidentity = \"carol\"\nsha256 = \"{}\"\n\
                 scopes = {k2_scopes}\n",
                h("alice-token"),
                h(bob_token),
                h("key-one"),
                h("key-two"),
            )
        };
        let cfg = config(
            dir.path(),
            &people("admin = true", "bob-token", "", r#"["query", "ingest"]"#),
        )
        .unwrap();
        let reg = IdentityRegistry::new(&cfg).unwrap();
        let perms = |t: &str| reg.current().authenticate_token(t).map(|c| c.permissions());
        assert!(perms("alice-token").unwrap().admin);
        assert!(perms("bob-token").is_some() && perms("key-one").is_some());
        assert!(perms("key-two").unwrap().ingest);

        // Unchanged credentials: nothing is withdrawn.
        let same = format!(
            "version = 9\n{}",
            people("admin = true", "bob-token", "", r#"["query", "ingest"]"#)
        );
        let g = crate::config::granted(&same).unwrap();
        assert_eq!(reg.withdraw_ungranted(&g), Ok(0));

        // A broken file that takes alice's admin away, gives bob another token, revokes k1
        // and narrows k2: each is withdrawn; alice's own token still works.
        let broken = format!(
            "version = 9\n{}",
            people("", "bob-new-token", "revoked = true", r#"["query"]"#)
        );
        assert!(Config::parse(&broken, dir.path()).is_err());
        let g = crate::config::granted(&broken).unwrap();
        assert_eq!(reg.withdraw_ungranted(&g), Ok(4));
        assert!(!perms("alice-token").unwrap().admin);
        assert_eq!(perms("bob-token"), None);
        assert_eq!(perms("bob-new-token"), None, "nothing is granted");
        assert_eq!(perms("key-one"), None);
        let k2 = perms("key-two").unwrap();
        assert!(k2.query && !k2.ingest);
        // A later rebuild (a connector's group report) keeps the withdrawal.
        reg.report("share", Vec::new()).unwrap();
        assert_eq!(perms("key-one"), None);

        // A file that is not TOML tells nothing: nothing more is withdrawn.
        assert!(crate::config::granted("[[identities]\nid = ").is_none());
    }

    /// `act_for` is checked when read, and a failed reload only narrows it: to what both lists
    /// name; a list that does not read, or none in common, withdraws `act_as`; an emptied one
    /// (anyone) widens, and is not applied.
    #[test]
    fn act_for_is_checked_and_a_failed_reload_only_narrows_it() {
        let dir = tempfile::tempdir().unwrap();
        users(dir.path(), r#"{"users":[]}"#);
        let with = |act_as: bool, act_for: &str| {
            format!(
                "{PEOPLE}[[groups]]\nid = \"staff\"\n[[identities]]\nid = \"carol\"\n\
                 groups = [\"staff\"]\n[[identities]]\nid = \"bridge\"\nact_as = {act_as}\n\
                 token_sha256 = \"{}\"\n{act_for}\n",
                hex::encode(crate::identity::token_hash("bridge-token"))
            )
        };
        let issues =
            config(dir.path(), &with(true, "act_for = [\"staff\", \"user:\"]")).unwrap_err();
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            ["identities[3].act_for[0]", "identities[3].act_for[1]"],
            "{issues:#?}"
        );
        let issues = config(dir.path(), &with(false, "act_for = [\"group:staff\"]")).unwrap_err();
        assert_eq!(issues[0].path, "identities[3].act_for", "{issues:#?}");

        let start = with(true, "act_for = [\"group:staff\", \"user:alice\"]");
        let reg = IdentityRegistry::new(&config(dir.path(), &start).unwrap()).unwrap();
        let acts_for = |who: &str| {
            let store = reg.current();
            let bridge = store.authenticate_token("bridge-token").unwrap();
            store.act_as(&bridge, who).is_ok()
        };
        assert!(acts_for("alice") && acts_for("carol") && !acts_for("bob"));
        let failed = |act_for: &str| {
            let text = format!("version = 9\n{}", with(true, act_for));
            crate::config::granted(&text).unwrap()
        };
        // Emptied (anyone): a failed reload widens nothing.
        assert_eq!(reg.withdraw_ungranted(&failed("")), Ok(0));
        assert!(!acts_for("bob"));
        // Narrowed to carol's group, and a name not listed before: the common part only.
        let g = failed("act_for = [\"group:staff\", \"user:bob\"]");
        assert_eq!(reg.withdraw_ungranted(&g), Ok(1));
        assert!(acts_for("carol") && !acts_for("alice") && !acts_for("bob"));
        // A list that does not read: act_as is withdrawn.
        assert_eq!(
            reg.withdraw_ungranted(&failed("act_for = \"group:staff\"")),
            Ok(1)
        );
        assert!(!acts_for("carol"));
    }

    /// Found by a review: a failed reload kept an alias its entry no longer lists, so a
    /// certificate or JWT mapped by it still signed in (often how a departed on-call person is
    /// cut off). The alias signs in no more; a deny naming it still applies, and an allow
    /// naming it no longer does (a failed reload grants nothing).
    #[test]
    fn a_failed_reload_withdraws_sign_in_by_an_alias_it_drops() {
        let dir = tempfile::tempdir().unwrap();
        users(dir.path(), r#"{"users":[]}"#);
        let ops = |aliases: &str| {
            format!(
                "[[identities]]\nid = \"ops\"\nadmin = true\naliases = [{aliases}]\n\
                 [[identities]]\nid = \"bridge\"\nact_as = true\n"
            )
        };
        let cfg = config(
            dir.path(),
            &ops(r#""oncall@corp.example", "ops@corp.example""#),
        )
        .unwrap();
        let reg = IdentityRegistry::new(&cfg).unwrap();
        assert!(
            reg.current()
                .authenticate_cert(&["oncall@corp.example".to_string()])
                .is_ok()
        );
        let bridge = reg
            .current()
            .authenticate_cert(&["bridge".to_string()])
            .unwrap();
        assert!(reg.current().act_as(&bridge, "oncall@corp.example").is_ok());

        let broken = format!("version = 9\n{}", ops(r#""ops@corp.example""#));
        let g = crate::config::granted(&broken).unwrap();
        assert_eq!(reg.withdraw_ungranted(&g), Ok(1));
        let store = reg.current();
        assert!(
            store
                .authenticate_cert(&["oncall@corp.example".to_string()])
                .is_err()
        );
        let kept = store
            .authenticate_cert(&["ops@corp.example".to_string()])
            .unwrap();
        assert!(kept.perms.admin, "the rest of the identity is untouched");
        // Still denied by it in ACLs, no longer allowed by it (session 43's review: the
        // alias moved to another identity went on admitting ops to what it was allowed).
        assert!(
            kept.deny_principals().contains("user:oncall@corp.example"),
            "{kept:?}"
        );
        assert!(
            !kept.principals().contains("user:oncall@corp.example"),
            "{kept:?}"
        );
        let scope = crate::acl::authorize(&kept).unwrap();
        let oncall = || [docent_connector_api::Principal::user("oncall@corp.example")];
        assert!(!scope.permits(&docent_connector_api::Acl::new(oncall(), [])));
        assert!(!scope.permits(&docent_connector_api::Acl::new(
            [docent_connector_api::Principal::Everyone],
            oncall()
        )));
        assert!(scope.permits(&docent_connector_api::Acl::new(
            [docent_connector_api::Principal::Everyone],
            []
        )));
        assert_eq!(reg.withdraw_ungranted(&g), Ok(0), "withdrawn once");
        let actor = store.authenticate_cert(&["bridge".to_string()]).unwrap();
        assert!(
            store.act_as(&actor, "oncall@corp.example").is_err(),
            "no one acts for it by the withdrawn alias either"
        );
        assert!(store.act_as(&actor, "ops@corp.example").is_ok());
        // A later rebuild (a connector's group report) keeps it withdrawn.
        reg.report("share", Vec::new()).unwrap();
        assert!(
            reg.current()
                .authenticate_cert(&["oncall@corp.example".to_string()])
                .is_err()
        );
        // A reload that succeeds starts again from the file.
        reg.reload(cfg).unwrap();
        assert!(
            reg.current()
                .authenticate_cert(&["oncall@corp.example".to_string()])
                .is_ok()
        );
    }

    /// Session 43's review: a failed reload that took root's admin away let the alias an
    /// identity file gives root (never signing in a privileged identity) sign root in.
    #[test]
    fn a_privilege_withdrawn_by_a_failed_reload_lets_no_file_alias_sign_in() {
        let dir = tempfile::tempdir().unwrap();
        users(
            dir.path(),
            r#"{"users":[{"id":"root","aliases":["mallory@corp.example"]}]}"#,
        );
        let root = "[[identities]]\nid = \"root\"\naliases = [\"root@corp.example\"]\n";
        let cfg = config(dir.path(), &format!("{root}admin = true\n")).unwrap();
        let reg = IdentityRegistry::new(&cfg).unwrap();
        let mallory = || {
            reg.current()
                .authenticate_cert(&["mallory@corp.example".to_string()])
                .is_ok()
        };
        assert!(!mallory());
        let broken = format!("{root}ingest = \"maybe\"\n");
        assert!(config(dir.path(), &broken).is_err());
        assert_eq!(
            reg.withdraw_ungranted(&crate::config::granted(&broken).unwrap()),
            Ok(1),
            "admin"
        );
        assert!(!mallory());
        // The file's alias still names root in ACLs, allows included.
        let root_caller = reg
            .current()
            .authenticate_cert(&["root@corp.example".to_string()])
            .unwrap();
        assert!(
            root_caller
                .principals()
                .contains("user:mallory@corp.example")
        );
        assert!(
            reg.current()
                .authenticate_cert(&["root@corp.example".to_string()])
                .is_ok()
        );
    }

    /// Found by a review: an identity file could give a configured admin a new alias, and a
    /// certificate or JWT by that alias signed in as the admin. A file's alias signs in an
    /// identity without privileges only; it names any identity in ACLs.
    #[test]
    fn an_alias_from_an_identity_file_never_signs_in_a_privileged_identity() {
        let dir = tempfile::tempdir().unwrap();
        users(
            dir.path(),
            r#"{"users":[{"id":"root","aliases":["mallory@corp.example"]},
                         {"id":"alice","aliases":["alice@corp.example"]}]}"#,
        );
        let bridge = format!(
            "[[identities]]\nid = \"bridge\"\nact_as = true\ntoken_sha256 = \"{}\"\n",
            hex::encode(crate::identity::token_hash("bridge-key"))
        );
        let cfg = config(
            dir.path(),
            &format!(
                "[[identities]]\nid = \"root\"\nadmin = true\naliases = [\"root@corp.example\"]\n\
                 [[identities]]\nid = \"alice\"\n{bridge}"
            ),
        )
        .unwrap();
        let store = IdentityRegistry::new(&cfg).unwrap().current();
        // Nor acted for by it (a bridge maps people by e-mail; a later review).
        let actor = store.authenticate_token("bridge-key").unwrap();
        assert!(store.act_as(&actor, "mallory@corp.example").is_err());
        assert!(store.act_as(&actor, "alice@corp.example").is_ok());
        assert!(
            store
                .authenticate_cert(&["mallory@corp.example".to_string()])
                .is_err()
        );
        assert_eq!(
            store
                .authenticate_cert(&["root@corp.example".to_string()])
                .unwrap()
                .user_id(),
            "root"
        );
        assert_eq!(
            store
                .authenticate_cert(&["alice@corp.example".to_string()])
                .unwrap()
                .user_id(),
            "alice"
        );
        // Still root in ACLs.
        assert_eq!(
            store
                .resolve("mallory@corp.example", crate::identity::ResolveReason::Test)
                .unwrap()
                .user_id(),
            "root"
        );
    }

    /// Session 43's review: a JWKS that no longer loads whole (the compromised key removed, a
    /// malformed one added) kept every old key after a failed reload; and a config that no
    /// longer sets `auth.jwks_file` kept them all too.
    #[test]
    fn a_failed_reload_keeps_only_the_jwt_keys_still_listed() {
        use base64::Engine;
        use jsonwebtoken::{Algorithm, EncodingKey, Header};
        const OLD: &[u8] = b"test-only-hs256-secret-compromised";
        const NEW: &[u8] = b"test-only-hs256-secret-still-good!";
        let dir = tempfile::tempdir().unwrap();
        let jwks = |secrets: &[(&str, &[u8])], extra: &str| {
            let mut keys: Vec<serde_json::Value> = secrets
                .iter()
                .map(|(kid, k)| {
                    serde_json::json!({"kty": "oct", "kid": kid, "alg": "HS256",
                        "k": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(k)})
                })
                .collect();
            if !extra.is_empty() {
                keys.push(serde_json::from_str(extra).unwrap());
            }
            std::fs::write(
                dir.path().join("jwks.json"),
                serde_json::json!({ "keys": keys }).to_string(),
            )
            .unwrap();
        };
        let token = |kid: &str, secret: &[u8]| {
            let mut h = Header::new(Algorithm::HS256);
            h.kid = Some(kid.into());
            let claims = serde_json::json!({"sub": "gina", "iss": "https://idp.test",
                "aud": "docent", "exp": 1_000_003_600i64});
            jsonwebtoken::encode(&h, &claims, &EncodingKey::from_secret(secret)).unwrap()
        };
        let auth = "[auth]\njwks_file = \"jwks.json\"\njwt_issuer = \"https://idp.test\"\njwt_audience = \"docent\"\n";
        let gina = "[[identities]]\nid = \"gina\"\n";
        jwks(&[("old", OLD), ("new", NEW)], "");
        users(dir.path(), r#"{"users":[]}"#);
        let reg =
            IdentityRegistry::new(&config(dir.path(), &format!("{gina}{auth}")).unwrap()).unwrap();
        let at = 1_000_000_000;
        let signs_in = |kid: &str, secret: &[u8]| {
            reg.current()
                .authenticate_bearer_at(&token(kid, secret), at)
                .is_ok()
        };
        assert!(signs_in("old", OLD));
        // The old key leaves; a key without its material joins: the file does not load.
        jwks(
            &[("new", NEW)],
            r#"{"kty": "oct", "kid": "broken", "alg": "HS256"}"#,
        );
        let broken = format!("{gina}admin = \"maybe\"\n{auth}");
        assert!(config(dir.path(), &broken).is_err());
        assert_eq!(
            reg.withdraw_ungranted(&crate::config::granted(&broken).unwrap()),
            Ok(1)
        );
        assert!(!signs_in("old", OLD));
        assert!(signs_in("new", NEW));
        // `auth.jwks_file` removed in a config that still fails: no key verifies.
        let no_jwt = format!("{gina}admin = \"maybe\"\n");
        assert!(config(dir.path(), &no_jwt).is_err());
        assert_eq!(
            reg.withdraw_ungranted(&crate::config::granted(&no_jwt).unwrap()),
            Ok(1)
        );
        assert!(!signs_in("new", NEW));
    }

    /// Found by a review: a failed reload asked only the identity files' last good read and the
    /// JWKS as first read, so an identity removed from the config and its file, one removed
    /// from its file alone, and a signing key removed from the JWKS (a compromised one) all
    /// went on signing in until a reload succeeded.
    #[test]
    fn a_failed_reload_reads_the_identity_files_and_the_jwks_again() {
        use base64::Engine;
        use jsonwebtoken::{Algorithm, EncodingKey, Header};
        let dir = tempfile::tempdir().unwrap();
        const OLD: &[u8] = b"test-only-hs256-secret-compromised";
        const NEW: &[u8] = b"test-only-hs256-secret-still-good!";
        let jwks = |secrets: &[(&str, &[u8])]| {
            let keys: Vec<serde_json::Value> = secrets
                .iter()
                .map(|(kid, k)| {
                    serde_json::json!({"kty": "oct", "kid": kid, "alg": "HS256",
                        "k": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(k)})
                })
                .collect();
            std::fs::write(
                dir.path().join("jwks.json"),
                serde_json::json!({ "keys": keys }).to_string(),
            )
            .unwrap();
        };
        let token = |kid: &str, secret: &[u8], sub: &str| {
            let mut h = Header::new(Algorithm::HS256);
            h.kid = Some(kid.into());
            let claims = serde_json::json!({"sub": sub, "iss": "https://idp.test",
                "aud": "docent", "exp": 1_000_003_600i64});
            jsonwebtoken::encode(&h, &claims, &EncodingKey::from_secret(secret)).unwrap()
        };
        jwks(&[("old", OLD), ("new", NEW)]);
        users(
            dir.path(),
            r#"{"users":[{"id":"carol"},{"id":"frank"},{"id":"gina"}]}"#,
        );
        let auth = "[auth]
jwks_file = \"jwks.json\"
jwt_issuer = \"https://idp.test\"
                    jwt_audience = \"docent\"
";
        let carol_key = "[[api_keys]]
id = \"kc\"
identity = \"carol\"
sha256 = \""
            .to_string()
            + &hex::encode(crate::identity::token_hash("carol-key"))
            + "\"
scopes = [\"query\"]
";
        let carol = "[[identities]]
id = \"carol\"
";
        let cfg = config(dir.path(), &format!("{carol}{carol_key}{auth}")).unwrap();
        let reg = IdentityRegistry::new(&cfg).unwrap();
        let at = 1_000_000_000;
        for who in ["carol", "frank", "gina"] {
            assert!(
                reg.current()
                    .authenticate_bearer_at(&token("old", OLD, who), at)
                    .is_ok()
            );
        }

        // carol leaves the config (her key stays listed: the reload fails) and the file; frank
        // leaves the file; the old key leaves the JWKS.
        users(dir.path(), r#"{"users":[{"id":"gina"}]}"#);
        jwks(&[("new", NEW)]);
        let broken = format!("{carol_key}{auth}");
        assert!(config(dir.path(), &broken).is_err());
        let g = crate::config::granted(&broken).unwrap();
        // carol, frank, and one key.
        assert_eq!(reg.withdraw_ungranted(&g), Ok(3));
        let store = reg.current();
        for who in ["carol", "frank"] {
            assert!(
                store
                    .authenticate_bearer_at(&token("new", NEW, who), at)
                    .is_err(),
                "{who}"
            );
            assert!(
                store.authenticate_cert(&[who.to_string()]).is_err(),
                "{who}"
            );
        }
        assert!(
            store
                .authenticate_bearer_at(&token("new", NEW, "gina"), at)
                .is_ok()
        );
        assert!(
            store
                .authenticate_bearer_at(&token("old", OLD, "gina"), at)
                .is_err()
        );
        // Held by later rebuilds (a connector's report) until a reload succeeds.
        reg.report("c", Vec::new()).unwrap();
        assert!(
            reg.current()
                .authenticate_bearer_at(&token("old", OLD, "gina"), at)
                .is_err()
        );
        assert!(
            reg.current()
                .authenticate_cert(&["frank".to_string()])
                .is_err()
        );
    }

    /// Found by a review of the fix above: an entry of the identity files that merged into a
    /// configured identity (by an alias they share) was locked as an identity of its own when it
    /// left the file, which no store could be built from; the failed reload's other withdrawals
    /// were lost with it, and every later rebuild failed.
    #[test]
    fn a_failed_reload_still_withdraws_when_a_merged_file_entry_leaves() {
        use crate::identity::token_hash;
        let dir = tempfile::tempdir().unwrap();
        users(
            dir.path(),
            r#"{"users":[{"id":"alice","aliases":["alice@corp.example"],"groups":["hr"]}]}"#,
        );
        let key = |id: &str, who: &str, secret: &str| {
            format!(
                "[[api_keys]]\nid = \"{id}\"\nidentity = \"{who}\"\nsha256 = \"{}\"\n\
                 scopes = [\"query\"]\n",
                hex::encode(token_hash(secret))
            )
        };
        let alice = "[[identities]]\nid = \"alice.smith\"\naliases = [\"alice\"]\n";
        let bob = "[[identities]]\nid = \"bob\"\n";
        let both = format!(
            "{alice}{bob}{}{}",
            key("ka", "alice.smith", "a-key"),
            key("kb", "bob", "b-key")
        );
        let reg = IdentityRegistry::new(&config(dir.path(), &both).unwrap()).unwrap();
        assert!(reg.current().authenticate_token("b-key").is_some());
        let by_mail = || {
            reg.current()
                .authenticate_cert(&["alice@corp.example".to_string()])
                .is_ok()
        };
        assert!(by_mail());
        // The file drops alice's entry; the config drops bob (his key still listed: the file
        // fails).
        users(dir.path(), r#"{"users":[]}"#);
        let broken = format!(
            "{alice}{}{}",
            key("ka", "alice.smith", "a-key"),
            key("kb", "bob", "b-key")
        );
        assert!(Config::parse(&broken, dir.path()).is_err());
        let g = crate::config::granted(&broken).unwrap();
        assert!(reg.withdraw_ungranted(&g).unwrap() >= 1);
        let store = reg.current();
        assert!(store.authenticate_token("b-key").is_none(), "bob locked");
        assert!(store.authenticate_token("a-key").is_some());
        // The alias the gone entry gave signs in no more (a later review).
        assert!(!by_mail());
        // Later rebuilds still work.
        reg.report("c", Vec::new()).unwrap();
        assert!(reg.current().authenticate_token("b-key").is_none());
    }

    /// Session 37's review: an identity gone from a file that fails (its key still listed,
    /// which is why it fails) kept authenticating by its key, a JWT or a certificate, and an
    /// earlier expiry (how a key is often ended) was not read.
    #[test]
    fn a_failed_reload_locks_an_identity_it_drops_and_holds_an_earlier_expiry() {
        use crate::identity::token_hash;
        let dir = tempfile::tempdir().unwrap();
        users(dir.path(), r#"{"users":[{"id":"dave"}]}"#);
        let h = |t: &str| hex::encode(token_hash(t));
        let key = |id: &str, who: &str, secret: &str, extra: &str| {
            format!(
                "[[api_keys]]\nid = \"{id}\"\nidentity = \"{who}\"\nsha256 = \"{}\"\n\
                 scopes = [\"query\", \"act_as\"]\n{extra}\n",
                h(secret)
            )
        };
        let bridge = "[[identities]]\nid = \"bridge\"\nact_as = true\n";
        let erin = "[[identities]]\nid = \"erin\"\ngroups = [\"hr\"]\n";
        let dave = "[[identities]]\nid = \"dave\"\n";
        let both = format!(
            "{bridge}{erin}{dave}{}{}{}",
            key("kb", "bridge", "bridge-key", ""),
            key("ke", "erin", "erin-key", ""),
            key("kd", "dave", "dave-key", "")
        );
        let cfg = config(dir.path(), &both).unwrap();
        let reg = IdentityRegistry::new(&cfg).unwrap();
        let store = reg.current();
        let actor = store.authenticate_token("bridge-key").unwrap();
        assert!(store.act_as(&actor, "erin").is_ok());
        assert!(store.authenticate_token("erin-key").is_some());
        assert!(store.authenticate_cert(&["erin".to_string()]).is_ok());

        // erin's and dave's entries are gone (their keys stay listed: that is why the file
        // fails); bridge's key now ends in 2001.
        let broken = format!(
            "{bridge}{}{}{}",
            key(
                "kb",
                "bridge",
                "bridge-key",
                "expires_at = \"2001-01-01T00:00:00Z\""
            ),
            key("ke", "erin", "erin-key", ""),
            key("kd", "dave", "dave-key", "")
        );
        assert!(Config::parse(&broken, dir.path()).is_err());
        let g = crate::config::granted(&broken).unwrap();
        // erin locked; dave is an identity of users.json, so not; the expiry.
        assert_eq!(reg.withdraw_ungranted(&g), Ok(2));
        let store = reg.current();
        assert!(store.authenticate_token("erin-key").is_none());
        assert!(store.authenticate_cert(&["erin".to_string()]).is_err());
        assert!(store.authenticate_token("dave-key").is_some());
        assert!(matches!(
            store.authenticate_bearer("bridge-key"),
            Err(crate::identity::AuthError::KeyExpired(_))
        ));
        // Still known with her groups (a deny naming them still applies), but no one acts
        // for her.
        assert!(
            store
                .resolve("erin", crate::identity::ResolveReason::Test)
                .unwrap()
                .principals()
                .contains("group:hr")
        );
        assert!(store.act_as(&actor, "erin").is_err());
        // An admin asking sees the withdrawal (a review: WhoIs showed her permissions).
        assert!(store.is_locked("erin") && !store.is_locked("dave"));
        assert!(store.whois("erin").unwrap().permissions.names().is_empty());
        assert!(!store.whois("dave").unwrap().permissions.names().is_empty());
        // A later expiry than the one held changes nothing.
        let later = broken.replace("2001-01-01", "2099-01-01");
        assert_eq!(
            reg.withdraw_ungranted(&crate::config::granted(&later).unwrap()),
            Ok(0)
        );
        // A reload that succeeds starts again from the file.
        reg.reload(cfg).unwrap();
        assert!(reg.current().authenticate_token("erin-key").is_some());
    }

    #[test]
    fn a_reload_with_a_name_of_two_identities_keeps_the_current_store() {
        let dir = tempfile::tempdir().unwrap();
        users(dir.path(), r#"{"users":[{"id":"carol","aliases":["U1"]}]}"#);
        let cfg = config(dir.path(), PEOPLE).unwrap();
        let reg = IdentityRegistry::new(&cfg).unwrap();
        let before = reg.current();
        // The file changes after validation: carol now claims alice's alias.
        users(
            dir.path(),
            r#"{"users":[{"id":"carol","aliases":["U1","alice@corp.example"]}]}"#,
        );
        let e = reg.reload(cfg.clone()).unwrap_err();
        assert!(
            e.contains("users.json: users[0].aliases[1]") && e.contains("identities[0].aliases[0]"),
            "{e}"
        );
        assert!(Arc::ptr_eq(&before, &reg.current()));
        // A start with it fails the same way.
        assert!(IdentityRegistry::new(&cfg).is_err());
        // A config that fails validation never reaches the registry (`reload_identities` loads
        // it first), and the registry still serves the old store.
        assert!(config(dir.path(), PEOPLE).is_err());
        let alice = reg.current().authenticate_token("alice-dev-token").unwrap();
        assert_eq!(alice.user_id(), "alice");
        assert!(
            !reg.current()
                .resolve("carol", crate::identity::ResolveReason::Test)
                .unwrap()
                .principals()
                .contains("user:alice@corp.example")
        );
    }

    /// A file others may read and the group `contractors` may not (mode 0604, group
    /// contractors): who is in that group only the share's group database tells. Until the
    /// connector has reported it, every document with a deny entry is out of every scope
    /// (found by a review: the deny admitted the group's members while no report was known).
    #[test]
    fn until_a_reporting_connector_has_reported_every_deny_entry_excludes() {
        let dir = tempfile::tempdir().unwrap();
        users(dir.path(), r#"{"users":[{"id":"carol"}]}"#);
        std::fs::create_dir(dir.path().join("docs")).unwrap();
        let cfg = config(
            dir.path(),
            &format!(
                "{PEOPLE}[[connectors]]\ntype = \"fs\"\nid = \"share\"\nroots = [\"docs\"]\n\
                 report_memberships = true\n"
            ),
        )
        .unwrap();
        let reg = IdentityRegistry::new(&cfg).unwrap();
        let scope = |who: &str| {
            let caller = reg
                .current()
                .resolve(who, crate::identity::ResolveReason::Test)
                .unwrap();
            crate::acl::authorize(&caller).unwrap()
        };
        let others_but_contractors = docent_connector_api::Acl::new(
            [Principal::Everyone],
            [Principal::group("contractors")],
        );
        let open = docent_connector_api::Acl::new([Principal::Everyone], []);
        assert_eq!(reg.current().pending(), ["share"]);
        for who in ["bob", "carol"] {
            assert!(!scope(who).permits(&others_but_contractors), "{who}");
            assert!(scope(who).permits(&open), "{who}");
        }

        reg.report(
            "share",
            vec![GroupMembership {
                group: "contractors".into(),
                members: vec![Principal::user("carol")],
            }],
        )
        .unwrap();
        assert!(reg.current().pending().is_empty());
        assert!(scope("bob").permits(&others_but_contractors));
        assert!(!scope("carol").permits(&others_but_contractors));
        // A reload keeps what was reported.
        reg.reload(cfg).unwrap();
        assert!(scope("bob").permits(&others_but_contractors));
    }

    #[test]
    fn reported_members_never_create_or_move_a_name() {
        let dir = tempfile::tempdir().unwrap();
        users(
            dir.path(),
            r#"{"users":[{"id":"carol","aliases":["posix-carol"]}]}"#,
        );
        let reg = IdentityRegistry::new(&config(dir.path(), PEOPLE).unwrap()).unwrap();
        let n = reg.current().identity_count();
        reg.report(
            "share",
            vec![GroupMembership {
                group: "hr".into(),
                members: vec![
                    // carol's alias from the identity file: her groups, not a new "posix-carol".
                    Principal::user("posix-carol"),
                    Principal::user("bob@corp.example"),
                    // Nobody: ignored, with a warning.
                    Principal::user("mallory"),
                ],
            }],
        )
        .unwrap();
        let s = reg.current();
        assert_eq!(s.identity_count(), n);
        assert_eq!(s.whois("posix-carol").unwrap().id, "carol");
        assert_eq!(s.whois("carol").unwrap().groups, ["hr"]);
        assert_eq!(s.whois("bob").unwrap().groups, ["hr"]);
        assert!(s.whois("mallory").is_none());
        let alice = s.whois("alice").unwrap();
        assert!(alice.groups.is_empty(), "{alice:?}");
        // A later report replaces the connector's previous one.
        reg.report("share", vec![]).unwrap();
        assert!(reg.current().whois("carol").unwrap().groups.is_empty());
    }

    /// A group a connector reports counts for documents' ACLs and for guardrails that restrict
    /// it, never for guardrail exemptions: a share's group database must not exempt anyone from
    /// PII redaction (session 30's review: reported groups were the config's own).
    #[test]
    fn reported_groups_count_for_acls_and_restrictions_not_for_exemptions() {
        use crate::guardrail::Audience;
        // carol's scope when the identity file is `users_json` and the share reports `member`
        // in group people-leads.
        let scope_of = |users_json: &str, member: Principal| {
            let dir = tempfile::tempdir().unwrap();
            users(dir.path(), users_json);
            let reg = IdentityRegistry::new(&config(dir.path(), PEOPLE).unwrap()).unwrap();
            reg.report(
                "share",
                vec![GroupMembership {
                    group: "people-leads".into(),
                    members: vec![member],
                }],
            )
            .unwrap();
            let carol = reg
                .current()
                .resolve("carol", crate::identity::ResolveReason::Test)
                .unwrap();
            crate::acl::authorize(&carol).unwrap()
        };
        let leads_only = docent_connector_api::Acl::new([Principal::group("people-leads")], []);
        let exempt = Audience {
            applies_to: Vec::new(),
            exempt: vec!["group:people-leads".into()],
        };
        let only_leads = Audience {
            applies_to: vec!["group:people-leads".into()],
            exempt: Vec::new(),
        };
        // Reported as a member; or through a group a connector reports inside another (carol's
        // `staff`, from the identity file, reported as a member of `people-leads`).
        for scope in [
            scope_of(r#"{"users":[{"id":"carol"}]}"#, Principal::user("carol")),
            scope_of(
                r#"{"users":[{"id":"carol","groups":["staff"]}]}"#,
                Principal::group("staff"),
            ),
        ] {
            assert!(scope.permits(&leads_only));
            assert!(exempt.covers(scope.principal_set()), "exempted by a report");
            assert!(only_leads.covers(scope.principal_set()));
        }
        assert!(!exempt.covers(&std::collections::BTreeSet::from([
            "group:people-leads".to_string()
        ])));
    }

    /// A report reads no identity file: one being rewritten (missing for a moment) cannot hold
    /// back a membership change, and a member removed from a group loses it at once (found by
    /// a review: the report re-read every file, and a failed read kept the old memberships).
    #[test]
    fn a_report_applies_while_an_identity_file_cannot_be_read() {
        let dir = tempfile::tempdir().unwrap();
        users(
            dir.path(),
            r#"{"users":[{"id":"carol","aliases":["posix-carol"]}]}"#,
        );
        let reg = IdentityRegistry::new(&config(dir.path(), PEOPLE).unwrap()).unwrap();
        let hr = |members: &[&str]| {
            vec![GroupMembership {
                group: "hr".into(),
                members: members.iter().map(|m| Principal::user(*m)).collect(),
            }]
        };
        reg.report("share", hr(&["carol", "bob"])).unwrap();
        assert_eq!(reg.current().whois("bob").unwrap().groups, ["hr"]);
        for f in std::fs::read_dir(dir.path()).unwrap() {
            let f = f.unwrap().path();
            if f.extension().is_some_and(|e| e == "json") {
                std::fs::remove_file(f).unwrap();
            }
        }
        reg.report("share", hr(&["carol"])).unwrap();
        let s = reg.current();
        assert!(s.whois("bob").unwrap().groups.is_empty());
        // The identity file's alias stands (as last read).
        assert_eq!(s.whois("posix-carol").unwrap().groups, ["hr"]);
    }
}
