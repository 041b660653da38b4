//! The daemon's identity store over time: built from the config (identities, groups, API keys,
//! identity files, JWKS) plus the group memberships connectors report, rebuilt whole when either
//! changes and swapped atomically, so each request sees one consistent store. A rebuild that
//! fails (an unreadable file, a bad config on reload) keeps the current store.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use docent_connector_api::{GroupMembership, MembershipSink, Principal};

use super::sources::Loaded;
use super::{GroupSpec, IdentitySpec, IdentityStore};
use crate::config::Config;

/// The current store, shared with the authentication interceptor.
pub type SharedIdentities = Arc<ArcSwap<IdentityStore>>;

pub struct IdentityRegistry {
    store: SharedIdentities,
    base: Mutex<Config>,
    /// Memberships per reporting connector (each report replaces the connector's previous one).
    reported: Mutex<BTreeMap<String, Vec<GroupMembership>>>,
}

/// (identities, groups, API keys) in a store.
pub type Counts = (usize, usize, usize);

fn counts(s: &IdentityStore) -> Counts {
    (s.identity_count(), s.group_count(), s.api_key_count())
}

/// Connector memberships as identity data: `user:x` members get the group, `group:y` members
/// become its subgroups.
fn as_loaded(groups: &[GroupMembership]) -> Loaded {
    let mut out = Loaded::default();
    for g in groups {
        for m in &g.members {
            match m {
                Principal::User(u) => out.identities.push(IdentitySpec {
                    id: u.clone(),
                    groups: vec![g.group.clone()],
                    ..Default::default()
                }),
                Principal::Group(sub) => out.groups.push(GroupSpec {
                    id: sub.clone(),
                    member_of: vec![g.group.clone()],
                }),
                Principal::Everyone => {}
            }
        }
    }
    out
}

impl IdentityRegistry {
    pub fn new(config: &Config) -> Result<Self, String> {
        let store = config.identity_store()?;
        Ok(Self {
            store: Arc::new(ArcSwap::from_pointee(store)),
            base: Mutex::new(config.clone()),
            reported: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn shared(&self) -> SharedIdentities {
        self.store.clone()
    }

    pub fn current(&self) -> Arc<IdentityStore> {
        self.store.load_full()
    }

    fn rebuild(&self, base: &Config) -> Result<Counts, String> {
        let extra: Vec<Loaded> = self
            .reported
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|g| as_loaded(g))
            .collect();
        let store = base.identity_store_with(extra)?;
        let c = counts(&store);
        self.store.store(Arc::new(store));
        Ok(c)
    }

    /// Replaces the config part (a reload) and rebuilds; on error nothing changes.
    pub fn reload(&self, config: Config) -> Result<Counts, String> {
        let mut base = self.base.lock().unwrap_or_else(|p| p.into_inner());
        let c = self.rebuild(&config)?;
        *base = config;
        Ok(c)
    }
}

impl MembershipSink for IdentityRegistry {
    fn report(&self, connector: &str, groups: Vec<GroupMembership>) {
        let n = groups.len();
        self.reported
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(connector.to_string(), groups);
        let base = self.base.lock().unwrap_or_else(|p| p.into_inner());
        match self.rebuild(&base) {
            Ok(_) => tracing::info!(connector, groups = n, "group memberships updated"),
            Err(e) => {
                tracing::error!(connector, error = %e, "identity rebuild failed; keeping the current store")
            }
        }
    }
}
