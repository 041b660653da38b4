//! Identities: who a caller is, which principals they hold and what they may do.
//!
//! Each person has one canonical id, aliases across sources (emails, `DOMAIN\user`, POSIX uid or
//! name, Slack id, certificate names) and groups; groups may be members of other groups (resolved
//! transitively; cycles are reported by config validation and tolerated here). A caller's
//! principal set is `user:<id>`, `user:<alias>` for each alias, `group:<g>` for every group
//! reached, and `everyone`.
//!
//! Credentials: personal tokens and API keys are stored as SHA-256 hashes (API keys carry scopes,
//! an expiry and a revoked flag), JWTs are verified against a local JWKS file ([`jwt`]), and client
//! certificates map to an identity through their names ([`IdentityStore::authenticate_cert`]).
//! Every path fails closed: an unknown, expired, revoked or unverifiable credential authenticates
//! nobody.
//!
//! One name, one identity; one secret, one credential. A name (id or alias) names at most one
//! identity: [`sources::merge`] refuses a name given to two identities (config check reports it, a
//! start or reload fails), and a store built from such data anyway drops the clashing aliases (a
//! canonical id keeps its name; an alias someone else also has names nobody and grants no
//! principal). A token or key hash shared by two credentials authenticates nobody
//! ([`credential_collisions`] reports it), and a certificate whose names map to two identities
//! is refused. Names are compared exactly (case-sensitively), as lookups and ACL matches are.
//!
//! Must never: construct a [`Caller`] other than from a verified credential, from an explicit
//! `--insecure-dev` user, or for an `act_as` target after the actor's permission was checked.

pub mod jwt;
mod registry;
pub mod sources;

pub use registry::{Counts, IdentityRegistry, SharedIdentities};

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use docent_connector_api::{Acl, AclDecision};
use sha2::{Digest, Sha256};

/// What an identity or a credential may do. A credential's permissions are those of its
/// identity intersected with its scopes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Permissions {
    /// Ask and Search.
    pub query: bool,
    /// The Admin API.
    pub admin: bool,
    /// Ask and Search on behalf of another user (`on_behalf_of`).
    pub act_as: bool,
    /// The push API (`docent.v1.Ingest`).
    pub ingest: bool,
}

impl Permissions {
    pub const ALL: Self = Self {
        query: true,
        admin: true,
        act_as: true,
        ingest: true,
    };
    pub const QUERY: Self = Self {
        query: true,
        admin: false,
        act_as: false,
        ingest: false,
    };
    /// Scope names as written in the config (`scopes = ["query", "admin", "act_as", "ingest"]`).
    pub const SCOPE_NAMES: [&'static str; 4] = ["query", "admin", "act_as", "ingest"];

    /// Builds permissions from scope names; `Err(name)` for an unknown one.
    pub fn from_scopes<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut p = Self::default();
        for n in names {
            match n {
                "query" => p.query = true,
                "admin" => p.admin = true,
                "act_as" => p.act_as = true,
                "ingest" => p.ingest = true,
                other => return Err(other.to_string()),
            }
        }
        Ok(p)
    }

    pub fn intersect(self, o: Self) -> Self {
        Self {
            query: self.query && o.query,
            admin: self.admin && o.admin,
            act_as: self.act_as && o.act_as,
            ingest: self.ingest && o.ingest,
        }
    }

    pub fn names(self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.query {
            v.push("query");
        }
        if self.admin {
            v.push("admin");
        }
        if self.act_as {
            v.push("act_as");
        }
        if self.ingest {
            v.push("ingest");
        }
        v
    }
}

/// The groups `direct` reaches through `parents` (each group's `member_of`), `direct` included.
fn expand(parents: &BTreeMap<String, Vec<String>>, direct: &[String]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack: Vec<&String> = direct.iter().collect();
    while let Some(g) = stack.pop() {
        if out.insert(g.clone())
            && let Some(ps) = parents.get(g)
        {
            stack.extend(ps.iter());
        }
    }
    out
}

/// Whether `name` is an alias only an identity file gives `spec`, an identity with `admin`,
/// `act_as` or `ingest`: such an alias never signs it in nor is acted for (see
/// [`IdentitySpec::aliases_from_files`]).
fn file_alias_of_privileged(spec: &IdentitySpec, name: &str) -> bool {
    is_privileged(spec) && spec.aliases_from_files.iter().any(|a| a == name)
}

/// Whether `spec` holds (or a failed reload took) `admin`, `act_as` or `ingest`, which only the
/// config grants.
fn is_privileged(spec: &IdentitySpec) -> bool {
    spec.admin || spec.act_as || spec.ingest || spec.privilege_withdrawn
}

/// Whether an alias is an account name of a file system or a domain, the way sources' ACLs
/// name people: a number (a POSIX uid), `DOMAIN\\user`, or a Windows SID (`S-1-…`). Such an
/// alias maps ACL entries to the identity but never authenticates it.
pub fn is_account_alias(name: &str) -> bool {
    let sid = name
        .strip_prefix("S-1-")
        .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit() || b == b'-'));
    (!name.is_empty() && name.bytes().all(|b| b.is_ascii_digit())) || name.contains('\\') || sid
}

/// The mark of a group only a connector reports, in [`Caller::guardrail_principals`].
pub const REPORTED: &str = "reported:";

/// In an audience's [`Caller::guardrail_principals`]: the answer reaches people Docent cannot
/// list (a channel's members), any of whom a restricting rule (`applies_to`) may cover, so
/// every such rule covers the audience. Exemptions stay exact.
pub const ANY_MEMBER: &str = "audience:any-member";

/// An authenticated caller (or, after `act_as`, the user a service acts for). Only this module
/// constructs it.
#[derive(Debug, Clone)]
pub struct Caller {
    user_id: String,
    principals: BTreeSet<String>,
    /// Principals that deny entries match and allow entries do not: the aliases a failed
    /// reload withdrew ([`IdentitySpec::sign_in_withdrawn`]). A deny naming one still applies;
    /// an allow by one, a grant the config no longer makes, does not (session 43's review: an
    /// alias moved to another identity went on admitting its former holder to what it was
    /// allowed).
    deny_only: BTreeSet<String>,
    /// [`Self::principals`] with the groups only a connector's report gives marked
    /// [`REPORTED`] (see [`Self::guardrail_principals`]).
    guardrail_principals: BTreeSet<String>,
    perms: Permissions,
    /// How the caller proved who they are: "token", "api_key:<id>", "jwt", "mtls", "insecure-dev".
    credential: String,
    /// The service identity acting on this user's behalf, if any.
    actor: Option<String>,
    /// An audience ([`Audience`]), not a person: any deny entry excludes a document, since it
    /// may name one of the people the answer is shown to.
    audience: bool,
    /// Group memberships a connector reports are not known yet ([`IdentityStore::pending`]):
    /// a deny entry may name a group the caller is in without Docent knowing it.
    memberships_pending: bool,
}

impl Caller {
    /// Whether this caller is an audience (see [`Audience`]).
    pub fn is_audience(&self) -> bool {
        self.audience
    }

    /// Whether any deny entry excludes a document from this caller's scope: for an audience
    /// (a deny entry may name one of its members), and for everyone while a connector's group
    /// memberships are not known (a deny entry may name a group the caller is in).
    pub fn strict_deny(&self) -> bool {
        self.audience || self.memberships_pending
    }

    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    pub fn principals(&self) -> &BTreeSet<String> {
        &self.principals
    }

    /// What deny entries are matched against: [`Self::principals`] and the deny-only ones.
    pub fn deny_principals(&self) -> BTreeSet<String> {
        self.principals.union(&self.deny_only).cloned().collect()
    }

    /// The principals guardrail audiences and response scopes match: those the config and
    /// identity files give as they are, and the groups only a connector reports marked with
    /// [`REPORTED`] (`reported:group:x`). A marked group counts where a rule restricts (a
    /// guardrail's `applies_to`, an enterprise-only response scope), not where it exempts or
    /// widens (`exempt`, a general-knowledge response scope): a source is trusted with its
    /// documents' ACLs only, and its group database must not exempt anyone from PII redaction.
    pub fn guardrail_principals(&self) -> &BTreeSet<String> {
        &self.guardrail_principals
    }

    pub fn permissions(&self) -> Permissions {
        self.perms
    }

    pub fn is_admin(&self) -> bool {
        self.perms.admin
    }

    pub fn credential(&self) -> &str {
        &self.credential
    }

    /// The identity that asked on this user's behalf (`on_behalf_of`), if any.
    pub fn actor(&self) -> Option<&str> {
        self.actor.as_deref()
    }

    /// Whose conversations this caller reads and writes: the identity's own when it calls
    /// for itself; acting for someone (a person or an audience), the pair, so that a service
    /// reaches only the conversations it held for them, not those they held directly or
    /// through another service (session 43's review: any service with `act_as` read the
    /// questions of every Slack channel answered as the `everyone` audience). Identity ids
    /// hold no whitespace, so the pair cannot be another identity's name.
    pub fn conversation_owner(&self) -> String {
        match &self.actor {
            None => self.user_id.clone(),
            Some(actor) => format!("{} via {actor}", self.user_id),
        }
    }
}

/// One identity (validated).
#[derive(Debug, Clone, Default)]
pub struct IdentitySpec {
    pub id: String,
    pub aliases: Vec<String>,
    pub groups: Vec<String>,
    /// Groups a connector reports this identity in (its group database, not Docent's config):
    /// they count for document ACLs and for what restricts (a guardrail's `applies_to`, an
    /// enterprise-only response scope, a group's token budget), never for what exempts or
    /// widens, which the config alone grants ([`Caller::guardrail_principals`]).
    pub reported_groups: Vec<String>,
    /// Lowercase hex SHA-256 of a personal API token (all of the identity's permissions).
    pub token_sha256: Option<String>,
    pub admin: bool,
    /// May ask on behalf of other users.
    pub act_as: bool,
    /// With `act_as`: the only people it may act for, by `group:<id>` (a group the config or an
    /// identity file gives them, not one a connector reports; for a privileged person the
    /// config's own groups and links only: [`Self::groups_from_files`]) or `user:<id>`; an audience group
    /// only if listed (`everyone` always: it reads what everyone may). Empty: anyone.
    pub act_for: Vec<String>,
    /// May call the push API.
    pub ingest: bool,
    /// Withdrawn by a reload that failed while its config entry was gone (see
    /// `IdentityRegistry::withdraw_ungranted`): no credential authenticates it and no one may
    /// act for it, until a reload succeeds.
    pub locked: bool,
    /// Aliases a reload that failed found gone from its config entry (see
    /// `IdentityRegistry::withdraw_ungranted`): no credential signs in by them (a JWT's user
    /// claim, a certificate's name) until a reload succeeds. In ACLs a deny naming one still
    /// applies and an allow naming one no longer does (a failed reload grants nothing).
    pub sign_in_withdrawn: Vec<String>,
    /// A reload that failed took its `admin`, `act_as` or `ingest` away: the aliases only
    /// identity files give it still do not sign it in, as while it held one (session 43's
    /// review).
    pub privilege_withdrawn: bool,
    /// Aliases only an identity file gave it. They name it in ACLs and sign it in, unless it
    /// holds `admin`, `act_as` or `ingest`: a file grants no privilege, so it may not hand a
    /// privileged identity a new sign-in name either (a review: an export naming `root` with
    /// someone else's address signed them in as root).
    pub aliases_from_files: Vec<String>,
    /// Groups only an identity file gave it. They count as the config's do, except for
    /// `act_for` when it holds `admin`, `act_as` or `ingest`: a file grants no privilege, so
    /// it may not put a privileged identity into a group a service acts for either (session
    /// 44's review: an export listing an admin in `staff` let the Slack bridge ask as them).
    pub groups_from_files: Vec<String>,
}

/// One group and the groups it belongs to.
#[derive(Debug, Clone, Default)]
pub struct GroupSpec {
    pub id: String,
    pub member_of: Vec<String>,
    /// A connector reported these links (its group database): they count as reported groups
    /// do ([`IdentitySpec::reported_groups`]).
    pub reported: bool,
    /// An identity file gave these links: they count as the config's do, except for
    /// `act_for` when the person acted for is privileged ([`IdentitySpec::groups_from_files`]).
    pub from_file: bool,
}

/// An API key: a hashed secret bound to an identity, with scopes, an optional expiry and a
/// revoked flag.
#[derive(Debug, Clone)]
pub struct ApiKeySpec {
    /// Names the key in logs and the audit trail (never the secret).
    pub id: String,
    pub identity: String,
    /// Lowercase hex SHA-256 of the key.
    pub sha256: String,
    pub scopes: Permissions,
    /// Unix seconds after which the key is refused.
    pub expires_at: Option<i64>,
    pub revoked: bool,
}

/// Why authentication failed. Every variant authenticates nobody.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials: send a bearer token or a client certificate")]
    MissingCredentials,
    #[error("invalid bearer token")]
    InvalidToken,
    #[error("API key {0} has expired")]
    KeyExpired(String),
    #[error("API key {0} has been revoked")]
    KeyRevoked(String),
    #[error("JWT rejected: {0}")]
    Jwt(#[from] jwt::JwtError),
    #[error("the credential names no known identity")]
    UnknownIdentity,
    #[error("the client certificate maps to no identity")]
    UnknownCertificate,
    #[error("the client certificate's names map to more than one identity")]
    AmbiguousCertificate,
    #[error("the client certificate has been revoked")]
    CertificateRevoked,
    #[error(
        "the client certificate can no longer be accepted: its revocation status is unknown, or it has expired"
    )]
    RevocationUnknown,
}

impl AuthError {
    /// Stable reason code for `ErrorInfo`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingCredentials => "MISSING_TOKEN",
            Self::InvalidToken => "INVALID_TOKEN",
            Self::KeyExpired(_) => "KEY_EXPIRED",
            Self::KeyRevoked(_) => "KEY_REVOKED",
            Self::Jwt(e) => e.reason(),
            Self::UnknownIdentity => "UNKNOWN_IDENTITY",
            Self::UnknownCertificate | Self::AmbiguousCertificate => "UNKNOWN_CLIENT_CERT",
            Self::CertificateRevoked => "CLIENT_CERT_REVOKED",
            Self::RevocationUnknown => "CLIENT_CERT_REVOCATION_UNKNOWN",
        }
    }
}

/// An `act_as` target that is not one person but everybody who can see a shared place (a chat
/// channel): `everyone`, or `group:<id>` for the members of a group. A bridge posting into such
/// a place asks as its audience, so an answer there only uses documents every member may read
/// (by allow entries; and since a deny entry may name one of its members, a document with any
/// deny entry is never used for an audience). Audience callers hold no `user:` principal and may
/// only query; their conversations and feedback belong to the audience id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience<'a> {
    Everyone,
    Group(&'a str),
}

impl<'a> Audience<'a> {
    /// `everyone` or `group:<id>` (the principal syntax); anything else names a person.
    pub fn parse(name: &'a str) -> Option<Self> {
        if name == "everyone" {
            return Some(Self::Everyone);
        }
        name.strip_prefix("group:")
            .filter(|g| !g.is_empty())
            .map(Self::Group)
    }

    /// The caller id an audience runs under (audit, conversations, usage).
    pub fn id(self) -> String {
        match self {
            Self::Everyone => "everyone".into(),
            Self::Group(g) => format!("group:{g}"),
        }
    }
}

/// An `act_for` entry: `group:<id>` or `user:<id>`.
pub(crate) fn act_for_ok(s: &str) -> bool {
    match s.split_once(':') {
        Some(("group", g)) => sources::group_id_ok(g),
        Some(("user", u)) => !u.trim().is_empty() && !u.contains(char::is_whitespace),
        _ => false,
    }
}

/// Why an `act_as` request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActAsError {
    #[error("{0} may not act on behalf of other users")]
    NotPermitted(String),
    /// The actor's `act_for` does not name the user or audience.
    #[error("{0} may not act on behalf of {1:?}")]
    NotFor(String, String),
    #[error("unknown user {0:?}")]
    UnknownUser(String),
}

impl ActAsError {
    /// The API's reason code.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotPermitted(_) => "ACT_AS_DENIED",
            Self::NotFor(..) => "ACT_FOR_DENIED",
            Self::UnknownUser(_) => "UNKNOWN_USER",
        }
    }
}

/// What the Admin API tells about one identity.
#[derive(Debug, Clone)]
pub struct WhoIs {
    pub id: String,
    pub aliases: Vec<String>,
    pub direct_groups: Vec<String>,
    /// Direct groups and every group they reach.
    pub groups: Vec<String>,
    pub principals: Vec<String>,
    pub permissions: Permissions,
}

#[derive(Debug, Clone, Copy)]
enum Credential {
    Personal(usize),
    Key(usize),
}

/// Why a caller is resolved without a credential ([`IdentityStore::resolve`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolveReason {
    /// `docent config check`: that API keys name existing identities.
    ConfigCheck,
    /// Admin `can-read` / `who-is`: explaining a user's access to an administrator.
    AccessExplanation,
    /// Unit and integration tests.
    Test,
}

impl ResolveReason {
    pub fn label(self) -> &'static str {
        match self {
            Self::ConfigCheck => "resolved:config-check",
            Self::AccessExplanation => "resolved:access-explanation",
            Self::Test => "resolved:test",
        }
    }
}

#[derive(Debug, Default)]
pub struct IdentityStore {
    identities: Vec<IdentitySpec>,
    /// Canonical ids and aliases → index into `identities`.
    by_name: HashMap<String, usize>,
    by_token: HashMap<[u8; 32], Credential>,
    /// Hashes given to more than one credential: they authenticate nobody.
    clashing_tokens: HashSet<[u8; 32]>,
    keys: Vec<ApiKeySpec>,
    parents: BTreeMap<String, Vec<String>>,
    /// [`Self::parents`] from the config and identity files only (no connector's report).
    config_parents: BTreeMap<String, Vec<String>>,
    /// The links the config itself states (none from an identity file or a connector): what a
    /// privileged identity's groups reach for `act_for`.
    own_parents: BTreeMap<String, Vec<String>>,
    jwt: Option<Arc<jwt::JwtVerifier>>,
    /// Connectors that report group memberships and have not yet (fail closed: see
    /// [`Caller::strict_deny`]).
    pending: Vec<String>,
}

pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn hash_from_hex(h: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(h).ok()?;
    <[u8; 32]>::try_from(bytes.as_slice()).ok()
}

/// API keys whose hash is also an identity's personal token or another key's (one secret would
/// be two credentials; the store lets it authenticate nobody): `(api_keys[j].sha256, message
/// naming the first place)`. Hashes are compared as lowercase hex, as validation stores them.
/// Personal tokens shared by two identities are reported by config validation itself.
pub fn credential_collisions(
    identities: &[IdentitySpec],
    keys: &[ApiKeySpec],
) -> Vec<(String, String)> {
    let mut seen: HashMap<String, String> = HashMap::new();
    for (i, id) in identities.iter().enumerate() {
        if let Some(h) = &id.token_sha256 {
            seen.entry(h.to_ascii_lowercase())
                .or_insert_with(|| format!("identities[{i}].token_sha256"));
        }
    }
    let mut out = Vec::new();
    for (j, k) in keys.iter().enumerate() {
        let place = format!("api_keys[{j}].sha256");
        match seen.get(&k.sha256.to_ascii_lowercase()) {
            Some(first) => out.push((
                place,
                format!(
                    "the same secret is already {first}; a secret must belong to one credential"
                ),
            )),
            None => {
                seen.insert(k.sha256.to_ascii_lowercase(), place);
            }
        }
    }
    out
}

/// Adds a credential unless its hash is taken: then neither authenticates.
fn add_credential(
    by_token: &mut HashMap<[u8; 32], Credential>,
    clashing: &mut HashSet<[u8; 32]>,
    h: [u8; 32],
    c: Credential,
) {
    if clashing.contains(&h) {
        return;
    }
    if by_token.insert(h, c).is_some() {
        by_token.remove(&h);
        clashing.insert(h);
        tracing::error!(
            "one token or API key hash is given to two credentials; it authenticates nobody"
        );
    }
}

/// Seconds since the epoch. A clock before it reads as the end of time, so that every expiry
/// has passed: an unknown time fails closed (0 would make no credential ever expire).
fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(i64::MAX)
}

impl IdentityStore {
    /// Identities with the same id are merged (aliases and groups united, permissions or-ed);
    /// token hashes must be valid 64-char hex (config validation guarantees it). Names must be
    /// unique across identities ([`sources::merge`] checks it with the places); here an alias that
    /// another identity also has (as id or alias) is dropped, so it names nobody and grants no one
    /// its principal.
    pub fn new(identities: Vec<IdentitySpec>, groups: Vec<GroupSpec>) -> Self {
        let mut merged: Vec<IdentitySpec> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for spec in identities {
            match index.get(&spec.id) {
                Some(&i) => {
                    let m = &mut merged[i];
                    for a in spec.aliases {
                        if !m.aliases.contains(&a) {
                            m.aliases.push(a);
                        }
                    }
                    for g in spec.groups {
                        if !m.groups.contains(&g) {
                            m.groups.push(g);
                        }
                    }
                    m.admin |= spec.admin;
                    // (Config ids are unique and files grant no privilege, so two specs with
                    // `act_as` never meet here; if they did, the lists would only narrow each
                    // other: an empty list is anyone, and two lists sharing no entry keep one
                    // that names no one, `user:`.)
                    if spec.act_as {
                        m.act_for = match (m.act_as, m.act_for.is_empty()) {
                            (false, _) | (true, true) => spec.act_for,
                            (true, false) if spec.act_for.is_empty() => {
                                std::mem::take(&mut m.act_for)
                            }
                            (true, false) => {
                                let both: Vec<String> = m
                                    .act_for
                                    .iter()
                                    .filter(|p| spec.act_for.contains(p))
                                    .cloned()
                                    .collect();
                                match both.is_empty() {
                                    true => vec!["user:".to_string()],
                                    false => both,
                                }
                            }
                        };
                        m.act_as = true;
                    }
                    m.ingest |= spec.ingest;
                    m.locked |= spec.locked;
                    m.privilege_withdrawn |= spec.privilege_withdrawn;
                    m.sign_in_withdrawn.extend(spec.sign_in_withdrawn);
                    m.aliases_from_files.extend(spec.aliases_from_files);
                    m.groups_from_files.extend(spec.groups_from_files);
                    m.token_sha256 = m.token_sha256.take().or(spec.token_sha256);
                }
                None => {
                    index.insert(spec.id.clone(), merged.len());
                    merged.push(spec);
                }
            }
        }
        // Every name → the identities that claim it (ids are unique after the merge above).
        let mut claims: HashMap<&str, BTreeSet<usize>> = HashMap::new();
        for (i, id) in merged.iter().enumerate() {
            claims.entry(id.id.as_str()).or_default().insert(i);
            for a in &id.aliases {
                claims.entry(a.as_str()).or_default().insert(i);
            }
        }
        let clashing: BTreeSet<String> = claims
            .into_iter()
            .filter(|(_, owners)| owners.len() > 1)
            .map(|(n, _)| n.to_string())
            .collect();
        if !clashing.is_empty() {
            let logged: Vec<String> = clashing
                .iter()
                .map(|n| crate::guardrail::pii::for_log(n))
                .collect();
            tracing::error!(
                names = ?logged,
                "names given to more than one identity; as aliases they name nobody"
            );
            for id in &mut merged {
                id.aliases.retain(|a| *a == id.id || !clashing.contains(a));
            }
        }
        let mut by_name = HashMap::new();
        let mut by_token = HashMap::new();
        let mut clashing_tokens = HashSet::new();
        for (i, id) in merged.iter().enumerate() {
            by_name.insert(id.id.clone(), i);
            if let Some(h) = id.token_sha256.as_deref().and_then(hash_from_hex) {
                add_credential(
                    &mut by_token,
                    &mut clashing_tokens,
                    h,
                    Credential::Personal(i),
                );
            }
        }
        for (i, id) in merged.iter().enumerate() {
            for a in &id.aliases {
                by_name.entry(a.clone()).or_insert(i);
            }
        }
        let mut parents: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut config_parents: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut own_parents: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for g in groups {
            for map in [
                Some(&mut parents),
                (!g.reported).then_some(&mut config_parents),
                (!g.reported && !g.from_file).then_some(&mut own_parents),
            ]
            .into_iter()
            .flatten()
            {
                let e = map.entry(g.id.clone()).or_default();
                for p in &g.member_of {
                    if !e.contains(p) {
                        e.push(p.clone());
                    }
                }
            }
        }
        Self {
            identities: merged,
            by_name,
            by_token,
            clashing_tokens,
            keys: Vec::new(),
            parents,
            config_parents,
            own_parents,
            jwt: None,
            pending: Vec::new(),
        }
    }

    /// Marks the group memberships of `connectors` as not known yet: until they are, any deny
    /// entry excludes a document for every caller.
    pub fn with_pending_memberships(mut self, connectors: Vec<String>) -> Self {
        self.pending = connectors;
        self
    }

    /// Connectors whose group memberships are awaited.
    pub fn pending(&self) -> &[String] {
        &self.pending
    }

    /// Adds API keys; keys bound to an unknown identity are ignored (validation reports them).
    /// A key whose hash is another credential's authenticates nobody, nor does the other one
    /// ([`credential_collisions`] reports it).
    pub fn with_api_keys(mut self, keys: Vec<ApiKeySpec>) -> Self {
        for k in keys {
            if let Some(h) = hash_from_hex(&k.sha256) {
                add_credential(
                    &mut self.by_token,
                    &mut self.clashing_tokens,
                    h,
                    Credential::Key(self.keys.len()),
                );
                self.keys.push(k);
            }
        }
        self
    }

    pub fn with_jwt(mut self, verifier: Arc<jwt::JwtVerifier>) -> Self {
        self.jwt = Some(verifier);
        self
    }

    pub fn identity_count(&self) -> usize {
        self.identities.len()
    }

    pub fn group_count(&self) -> usize {
        let mut all: BTreeSet<&str> = self.parents.keys().map(String::as_str).collect();
        for i in &self.identities {
            all.extend(i.groups.iter().map(String::as_str));
        }
        all.len()
    }

    pub fn api_key_count(&self) -> usize {
        self.keys.len()
    }

    /// Whether an identity has the id `id` (an alias does not count; a locked one does: a
    /// failed reload withdrew it, and the next may bring it back).
    pub fn has_id(&self, id: &str) -> bool {
        self.lookup(id).is_some_and(|s| s.id == id)
    }

    fn lookup(&self, name: &str) -> Option<&IdentitySpec> {
        self.by_name.get(name).map(|&i| &self.identities[i])
    }

    /// The identity a credential's name (a JWT's user claim, a client certificate's name)
    /// names: by its id, or by an alias that is not an account name of a file system or a
    /// domain (see [`is_account_alias`]). Those aliases are how sources' ACLs name people; an
    /// identity provider's or a CA's names are another namespace that may hold the same
    /// string (a numeric `sub` equal to someone's uid), so they never authenticate.
    fn lookup_credential(&self, name: &str) -> Option<&IdentitySpec> {
        let spec = self
            .lookup(name)
            .filter(|s| !s.locked && !s.sign_in_withdrawn.iter().any(|a| a == name))?;
        if spec.id != name && file_alias_of_privileged(spec, name) {
            tracing::warn!(
                identity = %crate::guardrail::pii::for_log(&spec.id),
                "a credential names a privileged identity by an alias only an identity file gives                  it, which never signs in; list the alias in its [[identities]] entry"
            );
            return None;
        }
        if spec.id == name || !is_account_alias(name) {
            return Some(spec);
        }
        tracing::warn!(
            name = %crate::guardrail::pii::for_log(name),
            "a credential names an account alias (a uid, DOMAIN\\user or SID), which never \
             authenticates; map it by the identity's id or another alias"
        );
        None
    }

    /// Authenticates a bearer token: a JWT (when a JWKS is configured and the token has the
    /// JWT shape), else a personal token or an API key.
    pub fn authenticate_bearer(&self, token: &str) -> Result<Caller, AuthError> {
        self.authenticate_bearer_at(token, now_unix())
    }

    pub fn authenticate_bearer_at(&self, token: &str, now: i64) -> Result<Caller, AuthError> {
        if token.is_empty() {
            return Err(AuthError::MissingCredentials);
        }
        // A configured token first: one with two dots is not taken for a JWT (a review: such
        // an API key stopped working once a JWKS was configured).
        if let Some(v) = &self.jwt
            && token.bytes().filter(|&b| b == b'.').count() == 2
            && !self.by_token.contains_key(&token_hash(token))
        {
            let subject = v.verify(token, now)?;
            let spec = self
                .lookup_credential(&subject)
                .ok_or(AuthError::UnknownIdentity)?;
            return Ok(self.caller(spec, Permissions::ALL, "jwt".into()));
        }
        match self.by_token.get(&token_hash(token)) {
            None => Err(AuthError::InvalidToken),
            Some(Credential::Personal(i)) if self.identities[*i].locked => {
                Err(AuthError::InvalidToken)
            }
            Some(Credential::Personal(i)) => {
                Ok(self.caller(&self.identities[*i], Permissions::ALL, "token".into()))
            }
            Some(Credential::Key(k)) => {
                let key = &self.keys[*k];
                if key.revoked {
                    return Err(AuthError::KeyRevoked(key.id.clone()));
                }
                if key.expires_at.is_some_and(|t| now >= t) {
                    return Err(AuthError::KeyExpired(key.id.clone()));
                }
                // By id only: an alias may move to another identity when an identity file
                // changes, and the key must not move with it.
                let spec = self
                    .lookup(&key.identity)
                    .filter(|s| s.id == key.identity && !s.locked)
                    .ok_or(AuthError::UnknownIdentity)?;
                Ok(self.caller(spec, key.scopes, format!("api_key:{}", key.id)))
            }
        }
    }

    /// The caller a bearer token belongs to; `None` for any failure.
    pub fn authenticate_token(&self, token: &str) -> Option<Caller> {
        self.authenticate_bearer(token).ok()
    }

    /// Maps a verified client certificate's names (SAN e-mail addresses and DNS names, then the
    /// subject common name) to the identity that has them as id or alias. Names no identity has
    /// and account aliases are skipped; names of two different identities refuse the
    /// certificate, whether or not each would sign in (a review: a name of a locked identity, or one that never signs in,
    /// was skipped, so a certificate refused as ambiguous signed in as the other identity once
    /// the first was locked). The identity must be signed in by one of its names.
    pub fn authenticate_cert(&self, names: &[String]) -> Result<Caller, AuthError> {
        let mut found: Option<usize> = None;
        let mut signs_in = false;
        for n in names {
            let Some(&i) = self.by_name.get(n.as_str()) else {
                continue;
            };
            // An account alias (a uid, `DOMAIN\user`, a SID) is another namespace than a CA's
            // names: it neither maps nor clashes.
            if self.identities[i].id != *n && is_account_alias(n) {
                continue;
            }
            if found.is_some_and(|f| f != i) {
                let names: Vec<String> = names
                    .iter()
                    .map(|n| crate::guardrail::pii::for_log(n))
                    .collect();
                tracing::warn!(names = ?names, "client certificate names two identities; refused");
                return Err(AuthError::AmbiguousCertificate);
            }
            found = Some(i);
            signs_in |= self.lookup_credential(n).is_some();
        }
        found
            .filter(|_| signs_in)
            .map(|i| self.caller(&self.identities[i], Permissions::ALL, "mtls".into()))
            .ok_or(AuthError::UnknownCertificate)
    }

    /// `--insecure-dev`: the named identity without any credential.
    pub fn insecure_dev_user(&self, name: &str) -> Result<Caller, AuthError> {
        let spec = self
            .lookup(name)
            .filter(|s| !s.locked)
            .ok_or(AuthError::UnknownIdentity)?;
        Ok(self.caller(spec, Permissions::ALL, "insecure-dev".into()))
    }

    /// The caller for an identity id or alias with all its permissions, for a stated reason
    /// (which becomes the caller's credential label, so it shows wherever the caller is logged).
    /// No request is ever served by such a caller: requests authenticate.
    pub fn resolve(&self, name: &str, why: ResolveReason) -> Option<Caller> {
        self.lookup(name)
            .map(|s| self.caller(s, Permissions::ALL, why.label().into()))
    }

    /// On-behalf-of: `actor` asks as `user` (id or alias). Requires the actor's `act_as`
    /// permission; the result holds only the user's principals and may only query.
    pub fn act_as(&self, actor: &Caller, user: &str) -> Result<Caller, ActAsError> {
        if !actor.perms.act_as || !self.still_acts_as(actor) {
            return Err(ActAsError::NotPermitted(actor.user_id.clone()));
        }
        if let Some(audience) = Audience::parse(user) {
            // `everyone` reads what everyone may; a group audience only if `act_for` lists it.
            if let Audience::Group(_) = audience
                && !self.may_act_for(actor, None, &BTreeSet::from([audience.id()]))
            {
                return Err(ActAsError::NotFor(actor.user_id.clone(), user.to_string()));
            }
            return self.audience_caller(actor, audience);
        }
        // (Nor by an alias a failed reload withdrew, nor by one only an identity file gives a
        // privileged identity, which a bridge mapping people by e-mail would act for: reviews.)
        let spec = self
            .lookup(user)
            .filter(|s| !s.locked && !s.sign_in_withdrawn.iter().any(|a| a == user))
            .filter(|s| s.id == user || !file_alias_of_privileged(s, user))
            .ok_or_else(|| self.unknown_to(actor, user))?;
        // Acting for oneself is querying: a credential without the query scope may not.
        if spec.id == actor.user_id && !actor.perms.query {
            return Err(ActAsError::NotPermitted(actor.user_id.clone()));
        }
        let mut c = self.caller(spec, Permissions::QUERY, actor.credential.clone());
        // A privileged identity's groups as the config alone gives them (see
        // [`IdentitySpec::groups_from_files`]).
        let configured;
        let principals = match is_privileged(spec) {
            true => {
                let direct: Vec<String> = spec
                    .groups
                    .iter()
                    .filter(|g| !spec.groups_from_files.contains(g))
                    .cloned()
                    .collect();
                configured = expand(&self.own_parents, &direct)
                    .into_iter()
                    .map(|g| format!("group:{g}"))
                    .collect::<BTreeSet<_>>();
                &configured
            }
            false => &c.guardrail_principals,
        };
        if spec.id != actor.user_id && !self.may_act_for(actor, Some(&spec.id), principals) {
            return Err(ActAsError::NotFor(actor.user_id.clone(), user.to_string()));
        }
        c.actor = Some(actor.user_id.clone());
        Ok(c)
    }

    /// The refusal for a `user` no identity answers to. An actor whose `act_for` names the
    /// user by id (or who may act for anyone) learns that it is unknown; any other actor is
    /// told it may not act for them, as it is for a person who exists: otherwise a service
    /// limited to some people could find out which ids and aliases exist beyond them
    /// (session 44's note).
    fn unknown_to(&self, actor: &Caller, user: &str) -> ActAsError {
        let named = self.lookup(&actor.user_id).is_some_and(|s| {
            s.act_for.is_empty()
                || s.act_for
                    .iter()
                    .any(|p| p.strip_prefix("user:") == Some(user))
        });
        match named {
            true => ActAsError::UnknownUser(user.to_string()),
            false => ActAsError::NotFor(actor.user_id.clone(), user.to_string()),
        }
    }

    /// Whether `actor`'s `act_for` list (none: anyone) names the person `id` (by id, not by an
    /// alias, which an identity file could give someone: a review) or one of the groups in
    /// `principals`, as the config grants them (a group only a connector reports is marked in
    /// them, and never matches: a report never widens what a service may do; session 43's
    /// note: a service could act for anyone, privileged identities included).
    fn may_act_for(&self, actor: &Caller, id: Option<&str>, principals: &BTreeSet<String>) -> bool {
        self.lookup(&actor.user_id).is_some_and(|s| {
            s.act_for.is_empty()
                || s.act_for.iter().any(|p| match p.strip_prefix("user:") {
                    Some(u) => id == Some(u),
                    None => p.starts_with("group:") && principals.contains(p),
                })
        })
    }

    /// Whether this store still lets `actor` act for others. The actor was authenticated
    /// against the store current then; a reload between that and this check may have taken
    /// `act_as` from its identity, or revoked or narrowed its API key. (Expiry was checked
    /// at authentication, against the request's clock.)
    fn still_acts_as(&self, actor: &Caller) -> bool {
        let Some(spec) = self.lookup(&actor.user_id).filter(|s| !s.locked) else {
            return false;
        };
        match actor.credential.strip_prefix("api_key:") {
            Some(id) => self.keys.iter().any(|k| {
                k.id == id && k.identity == spec.id && !k.revoked && k.scopes.act_as && spec.act_as
            }),
            None => spec.act_as,
        }
    }

    /// An audience caller (see [`Audience`]): `everyone`, plus for a group the group and every
    /// group it belongs to — exactly what all of the group's members hold in common — and no
    /// `user:` principal. A group no identity or group definition names is an unknown user (a
    /// typo must not silently narrow or widen anything).
    fn audience_caller(
        &self,
        actor: &Caller,
        audience: Audience<'_>,
    ) -> Result<Caller, ActAsError> {
        let mut principals = BTreeSet::from(["everyone".to_string()]);
        let mut guardrail_principals = principals.clone();
        guardrail_principals.insert(ANY_MEMBER.to_string());
        if let Audience::Group(g) = audience {
            let known = self.parents.contains_key(g)
                || self
                    .identities
                    .iter()
                    .any(|i| i.groups.iter().chain(&i.reported_groups).any(|x| x == g));
            if !known {
                return Err(ActAsError::UnknownUser(format!("group:{g}")));
            }
            // As for a person: the group and what the config's links reach from it count for
            // guardrails only when the config names the group; a group known from a
            // connector's report, or reached through a reported link, is marked.
            let configured = self.config_parents.contains_key(g)
                || self
                    .identities
                    .iter()
                    .any(|i| i.groups.iter().any(|x| x == g));
            if configured {
                for x in expand(&self.config_parents, &[g.to_string()]) {
                    guardrail_principals.insert(format!("group:{x}"));
                }
            }
            for x in self.expand_groups(&[g.to_string()]) {
                let p = format!("group:{x}");
                if !guardrail_principals.contains(&p) {
                    guardrail_principals.insert(format!("{REPORTED}{p}"));
                }
                principals.insert(p);
            }
        }
        Ok(Caller {
            user_id: audience.id(),
            guardrail_principals,
            principals,
            deny_only: BTreeSet::new(),
            perms: Permissions::QUERY,
            credential: actor.credential.clone(),
            actor: Some(actor.user_id.clone()),
            audience: true,
            memberships_pending: !self.pending.is_empty(),
        })
    }

    /// Whether `name` names an identity withdrawn until a reload succeeds: no credential signs
    /// it in and no service may act as it.
    pub fn is_locked(&self, name: &str) -> bool {
        self.lookup(name).is_some_and(|s| s.locked)
    }

    /// Who `name` is. A withdrawn identity ([`Self::is_locked`]) has no permissions (a review:
    /// they were shown as before, so an admin checking a revocation saw it had not taken).
    pub fn whois(&self, name: &str) -> Option<WhoIs> {
        let spec = self.lookup(name)?;
        let scopes = if spec.locked {
            Permissions::default()
        } else {
            Permissions::ALL
        };
        let c = self.caller(spec, scopes, String::new());
        Some(WhoIs {
            id: spec.id.clone(),
            aliases: spec.aliases.clone(),
            direct_groups: spec
                .groups
                .iter()
                .chain(&spec.reported_groups)
                .cloned()
                .collect(),
            groups: self
                .expand_groups(&[spec.groups.clone(), spec.reported_groups.clone()].concat())
                .into_iter()
                .collect(),
            principals: c.principals.into_iter().collect(),
            permissions: c.perms,
        })
    }

    /// Whether `name` may read a document with `acl`, and which entry decided.
    pub fn explain(&self, name: &str, acl: &Acl) -> Option<AclDecision> {
        let c = self.resolve(name, ResolveReason::AccessExplanation)?;
        // Deny entries are matched through the folded forms, which hold every deny principal.
        let folded = crate::acl::with_folded(&c.deny_principals());
        Some(acl.decide_folding(|t| c.principals.contains(t), |t| folded.contains(t)))
    }

    fn caller(&self, spec: &IdentitySpec, scopes: Permissions, credential: String) -> Caller {
        let mut principals = BTreeSet::from(["everyone".to_string(), format!("user:{}", spec.id)]);
        let mut deny_only = BTreeSet::new();
        for a in &spec.aliases {
            if spec.sign_in_withdrawn.contains(a) {
                deny_only.insert(format!("user:{a}"));
            } else {
                principals.insert(format!("user:{a}"));
            }
        }
        // The config's groups through the config's links; everything else reached (a reported
        // membership, or a link a connector reported) is marked for guardrails. So are the
        // deny-only aliases: a rule that restricts them still applies, one that exempts them
        // no longer does (a review: they left the guardrail principals altogether).
        let mut guardrail_principals = principals.clone();
        for p in &deny_only {
            guardrail_principals.insert(format!("{REPORTED}{p}"));
        }
        for g in expand(&self.config_parents, &spec.groups) {
            guardrail_principals.insert(format!("group:{g}"));
        }
        for g in self.expand_groups(&[spec.groups.clone(), spec.reported_groups.clone()].concat()) {
            let p = format!("group:{g}");
            if !guardrail_principals.contains(&p) {
                guardrail_principals.insert(format!("{REPORTED}{p}"));
            }
            principals.insert(p);
        }
        let own = Permissions {
            query: true,
            admin: spec.admin,
            act_as: spec.act_as,
            ingest: spec.ingest,
        };
        Caller {
            user_id: spec.id.clone(),
            principals,
            deny_only,
            guardrail_principals,
            perms: own.intersect(scopes),
            credential,
            actor: None,
            audience: false,
            memberships_pending: !self.pending.is_empty(),
        }
    }

    /// Direct groups plus every group they are (transitively) members of.
    pub fn expand_groups(&self, direct: &[String]) -> BTreeSet<String> {
        expand(&self.parents, direct)
    }

    /// Group membership cycles, for validation: one per set of groups that reach each other
    /// (a strongly connected component), as the shortest path from its least group back to
    /// itself. Linear in the links: a densely nested export cannot stall a start or a reload.
    pub fn group_cycles(&self) -> Vec<Vec<String>> {
        let mut cycles: Vec<Vec<String>> = components(&self.parents)
            .into_iter()
            .filter_map(|c| shortest_cycle(&self.parents, &c))
            .collect();
        cycles.sort();
        cycles
    }
}

/// The strongly connected components of the group graph (Tarjan's algorithm, iterative).
fn components(parents: &BTreeMap<String, Vec<String>>) -> Vec<BTreeSet<String>> {
    let nodes: Vec<&String> = parents
        .keys()
        .chain(parents.values().flatten())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let at: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let edges: Vec<Vec<usize>> = nodes
        .iter()
        .map(|n| {
            parents
                .get(*n)
                .map(|ps| ps.iter().map(|p| at[p.as_str()]).collect())
                .unwrap_or_default()
        })
        .collect();
    let n = nodes.len();
    let (mut index, mut low, mut on_stack) = (vec![usize::MAX; n], vec![0; n], vec![false; n]);
    let (mut next, mut stack, mut out) = (0, Vec::new(), Vec::new());
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        // (node, next edge to follow)
        let mut work = vec![(root, 0usize)];
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (v, ref mut e)) = work.last_mut() {
            if let Some(&w) = edges[v].get(*e) {
                *e += 1;
                if index[w] == usize::MAX {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(u, _)) = work.last() {
                low[u] = low[u].min(low[v]);
            }
            if low[v] == index[v] {
                let mut c = BTreeSet::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    c.insert(nodes[w].clone());
                    if w == v {
                        break;
                    }
                }
                out.push(c);
            }
        }
    }
    out
}

/// The shortest cycle through the least group of `component`, inside it; `None` for a single
/// group that is not its own member.
fn shortest_cycle(
    parents: &BTreeMap<String, Vec<String>>,
    component: &BTreeSet<String>,
) -> Option<Vec<String>> {
    let start = component.first()?;
    let mut came_from: HashMap<&String, &String> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(g) = queue.pop_front() {
        for p in parents.get(g).into_iter().flatten() {
            if !component.contains(p) {
                continue;
            }
            if p == start {
                let mut path = vec![g.clone()];
                let mut at = g;
                while at != start {
                    at = came_from[at];
                    path.push(at.clone());
                }
                path.reverse();
                return Some(path);
            }
            if !came_from.contains_key(p) {
                came_from.insert(p, g);
                queue.push_back(p);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use docent_connector_api::Principal;

    fn store() -> IdentityStore {
        IdentityStore::new(
            vec![
                IdentitySpec {
                    id: "alice".into(),
                    aliases: vec!["alice@corp.example".into(), "1001".into()],
                    groups: vec!["payroll".into()],
                    token_sha256: Some(hex::encode(token_hash("secret-a"))),
                    ..Default::default()
                },
                IdentitySpec {
                    id: "bridge".into(),
                    act_as: true,
                    ..Default::default()
                },
            ],
            vec![
                GroupSpec {
                    id: "payroll".into(),
                    member_of: vec!["hr".into()],
                    reported: false,
                    from_file: false,
                },
                GroupSpec {
                    id: "hr".into(),
                    member_of: vec!["staff".into()],
                    reported: false,
                    from_file: false,
                },
                GroupSpec {
                    id: "staff".into(),
                    member_of: vec!["hr".into()],
                    reported: false,
                    from_file: false,
                },
            ],
        )
        .with_api_keys(vec![
            ApiKeySpec {
                id: "k-live".into(),
                identity: "bridge".into(),
                sha256: hex::encode(token_hash("key-live")),
                scopes: Permissions::from_scopes(["query", "act_as"]).unwrap(),
                expires_at: Some(2_000),
                revoked: false,
            },
            ApiKeySpec {
                id: "k-revoked".into(),
                identity: "alice".into(),
                sha256: hex::encode(token_hash("key-revoked")),
                scopes: Permissions::QUERY,
                expires_at: None,
                revoked: true,
            },
            ApiKeySpec {
                id: "k-query".into(),
                identity: "bridge".into(),
                sha256: hex::encode(token_hash("key-query")),
                scopes: Permissions::QUERY,
                expires_at: None,
                revoked: false,
            },
        ])
    }

    #[test]
    fn token_maps_to_principals_with_nested_groups() {
        let s = store();
        assert!(s.authenticate_token("wrong").is_none());
        assert_eq!(
            s.authenticate_bearer("").unwrap_err(),
            AuthError::MissingCredentials
        );
        let c = s.authenticate_token("secret-a").unwrap();
        assert_eq!(c.user_id(), "alice");
        assert_eq!(c.credential(), "token");
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
    fn api_keys_have_scopes_expiry_and_revocation() {
        let s = store();
        let c = s.authenticate_bearer_at("key-live", 1_999).unwrap();
        assert_eq!(c.credential(), "api_key:k-live");
        assert_eq!(
            c.permissions(),
            Permissions::from_scopes(["query", "act_as"]).unwrap()
        );
        assert_eq!(
            s.authenticate_bearer_at("key-live", 2_000).unwrap_err(),
            AuthError::KeyExpired("k-live".into())
        );
        assert_eq!(
            s.authenticate_bearer_at("key-revoked", 0).unwrap_err(),
            AuthError::KeyRevoked("k-revoked".into())
        );
        // Scopes never add what the identity lacks: alice has no admin, the key no act_as.
        let q = s.authenticate_bearer_at("key-query", 0).unwrap();
        assert!(!q.permissions().act_as && !q.permissions().admin);
    }

    #[test]
    fn act_as_needs_the_permission_and_yields_the_users_scope() {
        let s = store();
        let bridge = s.authenticate_bearer_at("key-live", 0).unwrap();
        let as_alice = s.act_as(&bridge, "alice@corp.example").unwrap();
        assert_eq!(as_alice.user_id(), "alice");
        assert_eq!(as_alice.actor(), Some("bridge"));
        assert!(as_alice.principals().contains("group:payroll"));
        assert!(!as_alice.principals().contains("user:bridge"));
        assert_eq!(as_alice.permissions(), Permissions::QUERY);
        assert_eq!(
            s.act_as(&bridge, "nobody").unwrap_err(),
            ActAsError::UnknownUser("nobody".into())
        );
        // A store reloaded after the bridge authenticated, its key revoked since: refused
        // (session 30's review: the permission was taken from the earlier store).
        let mut reloaded = store();
        reloaded
            .keys
            .iter_mut()
            .filter(|k| k.id == "k-live")
            .for_each(|k| k.revoked = true);
        assert!(matches!(
            reloaded.act_as(&bridge, "alice"),
            Err(ActAsError::NotPermitted(_))
        ));
        let limited = s.authenticate_bearer_at("key-query", 0).unwrap();
        assert!(matches!(
            s.act_as(&limited, "alice"),
            Err(ActAsError::NotPermitted(_))
        ));
        let alice = s.authenticate_token("secret-a").unwrap();
        assert!(s.act_as(&alice, "bridge").is_err());
    }

    /// Session 43's note: `act_as` let a service act for anyone, privileged identities
    /// included. `act_for` names whom: people by a group the config gives them (not one a
    /// connector reports) or by id, audiences by their group (`everyone` always).
    #[test]
    fn act_for_limits_whom_a_service_acts_for() {
        let person = |id: &str, groups: &[&str], reported: &[&str]| IdentitySpec {
            id: id.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            reported_groups: reported.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        };
        let group = |id: &str, parent: &str| GroupSpec {
            id: id.into(),
            member_of: vec![parent.into()],
            reported: false,
            from_file: false,
        };
        let s = IdentityStore::new(
            vec![
                person("alice", &["payroll"], &[]),
                person("bob", &[], &["staff"]),
                person("carol", &["contractors"], &[]),
                person("root", &["contractors"], &[]),
                IdentitySpec {
                    aliases: vec!["ghost".into()],
                    ..person("dave", &[], &[])
                },
                // An identity file puts people into `staff` (nested in the config's `payroll`
                // for `fay`): it counts for a person, not for an admin.
                IdentitySpec {
                    groups_from_files: vec!["staff".into()],
                    ..person("erin", &["staff"], &[])
                },
                IdentitySpec {
                    admin: true,
                    groups_from_files: vec!["staff".into()],
                    ..person("root2", &["staff"], &[])
                },
                IdentitySpec {
                    admin: true,
                    groups_from_files: vec!["staff".into()],
                    ..person("fay", &["staff", "payroll"], &[])
                },
                // A file nests the config's `ops` in `staff`.
                IdentitySpec {
                    admin: true,
                    ..person("gus", &["ops"], &[])
                },
                person("hal", &["ops"], &[]),
                IdentitySpec {
                    id: "bridge".into(),
                    act_as: true,
                    // `ghost`: an id no identity has (someone who left), which an identity
                    // file has since given dave as an alias.
                    act_for: vec![
                        "group:staff".into(),
                        "user:carol".into(),
                        "user:ghost".into(),
                    ],
                    token_sha256: Some(hex::encode(token_hash("bridge-token"))),
                    ..Default::default()
                },
            ],
            vec![
                group("payroll", "staff"),
                group("contractors", "vendors"),
                GroupSpec {
                    from_file: true,
                    ..group("ops", "staff")
                },
            ],
        );
        let bridge = s.authenticate_token("bridge-token").unwrap();
        let refused = |who: &str| {
            assert_eq!(
                s.act_as(&bridge, who).unwrap_err(),
                ActAsError::NotFor("bridge".into(), who.into()),
                "{who}"
            );
        };
        // Through a nested configured group, and by id.
        assert_eq!(s.act_as(&bridge, "alice").unwrap().user_id(), "alice");
        assert_eq!(s.act_as(&bridge, "carol").unwrap().user_id(), "carol");
        // A group only a connector reports does not widen what the service may do.
        refused("bob");
        refused("root");
        // `user:` entries name ids, not aliases.
        refused("dave");
        refused("ghost");
        // A group only a file gives counts for a person, not for a privileged identity,
        // unless the config's own groups reach it.
        assert!(s.act_as(&bridge, "erin").is_ok());
        refused("root2");
        assert!(s.act_as(&bridge, "fay").is_ok());
        assert!(s.act_as(&bridge, "hal").is_ok());
        refused("gus");
        // Two specs of one id with `act_as` (not reachable from a config) only narrow.
        let bridge_with = |act_for: &[&str]| IdentitySpec {
            id: "bridge".into(),
            act_as: true,
            act_for: act_for.iter().map(|p| p.to_string()).collect(),
            token_sha256: Some(hex::encode(token_hash("bridge-token"))),
            ..Default::default()
        };
        let merged = |lists: &[&[&str]]| {
            let mut ids = vec![person("alice", &[], &[]), person("carol", &[], &[])];
            ids.extend(lists.iter().map(|l| bridge_with(l)));
            let s = IdentityStore::new(ids, vec![]);
            let b = s.authenticate_token("bridge-token").unwrap();
            ["alice", "carol"].map(|who| s.act_as(&b, who).is_ok())
        };
        assert_eq!(merged(&[&[], &["user:alice"]]), [true, false]);
        assert_eq!(
            merged(&[&["user:alice"], &["user:carol"], &[]]),
            [false, false]
        );
        // Audiences: a listed group, and everyone; not another group.
        assert!(s.act_as(&bridge, "group:staff").is_ok());
        assert!(s.act_as(&bridge, "everyone").is_ok());
        refused("group:vendors");
        assert_eq!(
            ActAsError::NotFor("b".into(), "c".into()).reason(),
            "ACT_FOR_DENIED"
        );
        // Whether someone exists beyond the list is not told: an unknown id is refused as
        // a known one is, unless the list names it.
        refused("nobody");
        let listed = IdentityStore::new(
            vec![IdentitySpec {
                id: "bridge".into(),
                act_as: true,
                act_for: vec!["user:gone".into()],
                token_sha256: Some(hex::encode(token_hash("bridge-token"))),
                ..Default::default()
            }],
            vec![],
        );
        let b = listed.authenticate_token("bridge-token").unwrap();
        assert_eq!(
            listed.act_as(&b, "gone").unwrap_err(),
            ActAsError::UnknownUser("gone".into())
        );
        assert_eq!(
            listed.act_as(&b, "nobody").unwrap_err(),
            ActAsError::NotFor("bridge".into(), "nobody".into())
        );
    }

    #[test]
    fn act_as_an_audience_holds_only_what_all_its_members_share() {
        let s = store();
        let bridge = s.authenticate_bearer_at("key-live", 0).unwrap();
        let all = s.act_as(&bridge, "everyone").unwrap();
        assert_eq!(all.principals(), &BTreeSet::from(["everyone".to_string()]));
        assert_eq!(all.actor(), Some("bridge"));
        assert_eq!(all.permissions(), Permissions::QUERY);
        let hr = s.act_as(&bridge, "group:hr").unwrap();
        assert_eq!(hr.user_id(), "group:hr");
        let p: Vec<&str> = hr.principals().iter().map(String::as_str).collect();
        // hr and its ancestors (staff, a cycle back to hr), never a member's own principals.
        assert_eq!(p, ["everyone", "group:hr", "group:staff"]);
        assert!(!hr.principals().contains("group:payroll"));
        assert_eq!(
            s.act_as(&bridge, "group:nosuch").unwrap_err(),
            ActAsError::UnknownUser("group:nosuch".into())
        );
        let alice = s.authenticate_token("secret-a").unwrap();
        assert!(matches!(
            s.act_as(&alice, "everyone"),
            Err(ActAsError::NotPermitted(_))
        ));
    }

    /// Session 31's review: a group audience counted every group it reaches for guardrails,
    /// even one only a connector's report names, or reached only through a reported link.
    #[test]
    fn an_audience_marks_the_groups_only_a_report_gives() {
        let mut identities = vec![
            IdentitySpec {
                id: "carol".into(),
                reported_groups: vec!["leads".into()],
                ..Default::default()
            },
            IdentitySpec {
                id: "dave".into(),
                groups: vec!["hr".into()],
                ..Default::default()
            },
        ];
        identities.extend(store().identities);
        let s = IdentityStore::new(
            identities,
            vec![
                GroupSpec {
                    id: "hr".into(),
                    member_of: vec!["staff".into()],
                    reported: false,
                    from_file: false,
                },
                GroupSpec {
                    id: "hr".into(),
                    member_of: vec!["exempt-club".into()],
                    reported: true,
                    from_file: false,
                },
            ],
        )
        .with_api_keys(store().keys);
        let bridge = s.authenticate_bearer_at("key-live", 0).unwrap();
        let shown =
            |c: &Caller| -> Vec<String> { c.guardrail_principals().iter().cloned().collect() };
        let leads = s.act_as(&bridge, "group:leads").unwrap();
        assert!(leads.principals().contains("group:leads"));
        assert_eq!(
            shown(&leads),
            ["audience:any-member", "everyone", "reported:group:leads"]
        );
        let hr = s.act_as(&bridge, "group:hr").unwrap();
        assert!(hr.principals().contains("group:exempt-club"));
        assert_eq!(
            shown(&hr),
            [
                "audience:any-member",
                "everyone",
                "group:hr",
                "group:staff",
                "reported:group:exempt-club"
            ]
        );
        // Restricting rules cover every audience (a member may be covered); exemptions are
        // exact, and a reported link exempts no one.
        use crate::guardrail::Audience as Rule;
        let rule = |applies_to: &[&str], exempt: &[&str]| Rule {
            applies_to: applies_to.iter().map(|s| s.to_string()).collect(),
            exempt: exempt.iter().map(|s| s.to_string()).collect(),
        };
        let everyone = s.act_as(&bridge, "everyone").unwrap();
        assert!(rule(&["group:contractors"], &[]).covers(everyone.guardrail_principals()));
        assert!(rule(&["group:contractors"], &[]).covers(hr.guardrail_principals()));
        assert!(!rule(&[], &["group:hr"]).covers(hr.guardrail_principals()));
        assert!(rule(&[], &["group:exempt-club"]).covers(hr.guardrail_principals()));
        // A person is covered only by what they hold.
        let alice = s.authenticate_token("secret-a").unwrap();
        assert!(!rule(&["group:contractors"], &[]).covers(alice.guardrail_principals()));
    }

    #[test]
    fn aliases_resolve_and_explain_names_the_entry() {
        let s = store();
        assert_eq!(
            s.resolve("1001", ResolveReason::Test).unwrap().user_id(),
            "alice"
        );
        let w = s.whois("alice@corp.example").unwrap();
        assert_eq!(w.groups, ["hr", "payroll", "staff"]);
        let acl = Acl::new([Principal::group("staff")], [Principal::user("1001")]);
        assert_eq!(
            s.explain("alice", &acl),
            Some(AclDecision::Denied(Principal::user("1001")))
        );
        assert_eq!(s.explain("bridge", &acl), Some(AclDecision::NoMatch));
        assert!(s.explain("ghost", &acl).is_none());
    }

    #[test]
    fn cert_names_map_through_aliases() {
        let s = store();
        let c = s
            .authenticate_cert(&["unknown.example".into(), "alice@corp.example".into()])
            .unwrap();
        assert_eq!((c.user_id(), c.credential()), ("alice", "mtls"));
        assert_eq!(
            s.authenticate_cert(&["x".into()]).unwrap_err(),
            AuthError::UnknownCertificate
        );
    }

    /// Session 31's review: a JWT's user claim or a certificate's name matched any alias, so an
    /// identity provider's numeric `sub` authenticated whoever has that POSIX uid as an alias.
    #[test]
    fn credentials_never_authenticate_through_an_account_alias() {
        for (name, account) in [
            ("1001", true),
            ("FERNHILL\\alice", true),
            ("S-1-5-21-1004336348-1177238915-682003330-512", true),
            ("alice@corp.example", false),
            ("alice", false),
            ("bridge.corp.example", false),
            ("S-1-x", false),
            ("", false),
        ] {
            assert_eq!(is_account_alias(name), account, "{name}");
        }
        const SECRET: &[u8] = b"identity-tests-hs256-secret-0123456789";
        use base64::Engine;
        let jwks = serde_json::json!({"keys": [{"kty": "oct", "kid": "k", "k":
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(SECRET)}]});
        let v = test_verifier(&jwks);
        let s = store().with_jwt(Arc::new(v));
        let token = |sub: &str| {
            jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                &serde_json::json!({"sub": sub, "iss": "https://idp.test", "aud": "docent",
                    "exp": 10_000}),
                &jsonwebtoken::EncodingKey::from_secret(SECRET),
            )
            .unwrap()
        };
        assert_eq!(
            s.authenticate_bearer_at(&token("1001"), 0).unwrap_err(),
            AuthError::UnknownIdentity
        );
        for sub in ["alice", "alice@corp.example"] {
            let c = s.authenticate_bearer_at(&token(sub), 0).unwrap();
            assert_eq!(c.user_id(), "alice");
        }
        assert_eq!(
            s.authenticate_cert(&["1001".into()]).unwrap_err(),
            AuthError::UnknownCertificate
        );
        // An account alias among a certificate's names neither maps nor clashes.
        let c = s
            .authenticate_cert(&["1001".into(), "bridge".into()])
            .unwrap();
        assert_eq!(c.user_id(), "bridge");
        // Connectors' ACL entries still resolve through it.
        assert_eq!(
            s.resolve("1001", ResolveReason::AccessExplanation)
                .unwrap()
                .user_id(),
            "alice"
        );
    }

    /// A key scoped to `act_as` alone acts for others, not as itself.
    #[test]
    fn acting_for_oneself_needs_the_query_scope() {
        let s = store().with_api_keys(vec![ApiKeySpec {
            id: "k-act".into(),
            identity: "bridge".into(),
            sha256: hex::encode(token_hash("key-act")),
            scopes: Permissions::from_scopes(["act_as"]).unwrap(),
            expires_at: None,
            revoked: false,
        }]);
        let act_only = s.authenticate_bearer_at("key-act", 0).unwrap();
        assert_eq!(s.act_as(&act_only, "alice").unwrap().user_id(), "alice");
        assert!(matches!(
            s.act_as(&act_only, "bridge"),
            Err(ActAsError::NotPermitted(_))
        ));
    }

    /// A JWT verifier of `jwks` for issuer `https://idp.test` and audience `docent`.
    fn test_verifier(jwks: &serde_json::Value) -> jwt::JwtVerifier {
        jwt::JwtVerifier::from_jwks(
            &jwks.to_string(),
            jwt::JwtConfig {
                jwks_file: std::path::PathBuf::new(),
                issuer: "https://idp.test".into(),
                audience: "docent".into(),
                user_claim: "sub".into(),
                leeway_secs: 0,
                max_lifetime_secs: 86_400,
            },
        )
        .unwrap()
    }

    #[test]
    fn cert_names_of_two_identities_are_refused() {
        let s = store();
        // SAN e-mail of alice, CN of the bridge: which one is it? Neither.
        assert_eq!(
            s.authenticate_cert(&["alice@corp.example".into(), "bridge".into()])
                .unwrap_err(),
            AuthError::AmbiguousCertificate
        );
        assert_eq!(
            AuthError::AmbiguousCertificate.reason(),
            "UNKNOWN_CLIENT_CERT"
        );
        // Several names of one identity are fine.
        let c = s
            .authenticate_cert(&["1001".into(), "alice".into(), "x".into()])
            .unwrap();
        assert_eq!(c.user_id(), "alice");
        // Still refused once alice is locked (a review: her name was skipped, and the
        // certificate signed in as the bridge).
        let mut locked = store();
        for i in &mut locked.identities {
            i.locked |= i.id == "alice";
        }
        assert_eq!(
            locked
                .authenticate_cert(&["alice@corp.example".into(), "bridge".into()])
                .unwrap_err(),
            AuthError::AmbiguousCertificate
        );
        // A name that never signs in (alice's uid) is no identity to sign in by alone.
        assert_eq!(
            s.authenticate_cert(&["1001".into()]).unwrap_err(),
            AuthError::UnknownCertificate
        );
    }

    /// Found by a review: with a JWKS configured, a personal token or API key with two dots
    /// was only tried as a JWT, and never signed in.
    #[test]
    fn a_configured_token_shaped_like_a_jwt_still_signs_in() {
        use base64::Engine;
        let jwks = serde_json::json!({"keys": [{"kty": "oct", "kid": "k", "alg": "HS256",
            "k": base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(b"test-only-hs256-secret-0123456789")}]});
        let v = test_verifier(&jwks);
        let s = store()
            .with_api_keys(vec![ApiKeySpec {
                id: "k-dots".into(),
                identity: "alice".into(),
                sha256: hex::encode(token_hash("dk.part.two")),
                scopes: Permissions::from_scopes(["query"]).unwrap(),
                expires_at: None,
                revoked: false,
            }])
            .with_jwt(Arc::new(v));
        assert_eq!(
            s.authenticate_bearer_at("dk.part.two", 0)
                .unwrap()
                .user_id(),
            "alice"
        );
        assert!(s.authenticate_bearer_at("not.a.token", 0).is_err());
    }

    #[test]
    fn a_store_built_with_a_shared_name_grants_nobody_the_other_identitys_principal() {
        // `sources::merge` refuses such data; a store built from it anyway fails closed.
        let s = IdentityStore::new(
            vec![
                IdentitySpec {
                    id: "alice".into(),
                    aliases: vec!["a@corp.example".into()],
                    ..Default::default()
                },
                IdentitySpec {
                    id: "bob".into(),
                    aliases: vec!["alice".into(), "shared".into(), "bob@corp.example".into()],
                    ..Default::default()
                },
                IdentitySpec {
                    id: "carol".into(),
                    aliases: vec!["shared".into()],
                    ..Default::default()
                },
            ],
            vec![],
        );
        assert_eq!(
            s.resolve("alice", ResolveReason::Test).unwrap().user_id(),
            "alice"
        );
        let bob = s.resolve("bob@corp.example", ResolveReason::Test).unwrap();
        assert!(!bob.principals().contains("user:alice"), "{bob:?}");
        assert!(!bob.principals().contains("user:shared"), "{bob:?}");
        assert!(s.resolve("shared", ResolveReason::Test).is_none());
        assert!(
            !s.resolve("carol", ResolveReason::Test)
                .unwrap()
                .principals()
                .contains("user:shared")
        );
        assert_eq!(s.whois("bob").unwrap().aliases, ["bob@corp.example"]);
    }

    #[test]
    fn a_secret_shared_by_two_credentials_authenticates_nobody() {
        let key = |id: &str, identity: &str, secret: &str| ApiKeySpec {
            id: id.into(),
            identity: identity.into(),
            sha256: hex::encode(token_hash(secret)),
            scopes: Permissions::ALL,
            expires_at: None,
            revoked: false,
        };
        let ids = vec![
            IdentitySpec {
                id: "alice".into(),
                token_sha256: Some(hex::encode(token_hash("shared"))),
                ..Default::default()
            },
            IdentitySpec {
                id: "bob".into(),
                token_sha256: Some(hex::encode(token_hash("bob-own"))),
                ..Default::default()
            },
        ];
        let keys = vec![
            key("k1", "bob", "shared"),
            key("k2", "bob", "twice"),
            key("k3", "alice", "twice"),
            key("k4", "bob", "fine"),
        ];
        assert_eq!(
            credential_collisions(&ids, &keys),
            [
                (
                    "api_keys[0].sha256".to_string(),
                    "the same secret is already identities[0].token_sha256; a secret must \
                     belong to one credential"
                        .to_string()
                ),
                (
                    "api_keys[2].sha256".to_string(),
                    "the same secret is already api_keys[1].sha256; a secret must belong to one \
                     credential"
                        .to_string()
                ),
            ]
        );
        let s = IdentityStore::new(ids.clone(), vec![]).with_api_keys(keys);
        for secret in ["shared", "twice"] {
            assert_eq!(
                s.authenticate_bearer_at(secret, 0).unwrap_err(),
                AuthError::InvalidToken,
                "{secret}"
            );
        }
        assert_eq!(s.authenticate_token("bob-own").unwrap().user_id(), "bob");
        assert_eq!(
            s.authenticate_token("fine").unwrap().credential(),
            "api_key:k4"
        );
        // Two identities with one personal token (config validation reports it).
        let mut twins = ids;
        twins[1].token_sha256 = twins[0].token_sha256.clone();
        assert!(
            IdentityStore::new(twins, vec![])
                .authenticate_token("shared")
                .is_none()
        );
    }

    #[test]
    fn cycles_are_reported_once() {
        assert_eq!(
            store().group_cycles(),
            vec![vec!["hr".to_string(), "staff".to_string()]]
        );
    }

    /// Session 31's review: every simple path was walked, so densely nested groups (each a
    /// member of every other) took exponential time at start and at each reload. One cycle
    /// per tangle now, and a self-membership is one too.
    #[test]
    fn densely_nested_groups_report_one_cycle_each_tangle() {
        let name = |i: usize| format!("g{i:02}");
        let mut groups: Vec<GroupSpec> = (0..40)
            .map(|i| GroupSpec {
                id: name(i),
                member_of: (0..40).filter(|&j| j != i).map(name).collect(),
                reported: false,
                from_file: false,
            })
            .collect();
        groups.push(GroupSpec {
            id: "solo".into(),
            member_of: vec!["solo".into()],
            reported: false,
            from_file: false,
        });
        groups.push(GroupSpec {
            id: "leaf".into(),
            member_of: vec!["g00".into()],
            reported: false,
            from_file: false,
        });
        let s = IdentityStore::new(Vec::new(), groups);
        assert_eq!(
            s.group_cycles(),
            vec![
                vec!["g00".to_string(), "g01".to_string()],
                vec!["solo".to_string()]
            ]
        );
    }
}
