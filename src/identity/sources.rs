//! Identity data from files an admin points at: an `/etc/group`-style file, a JSON export and a
//! CSV export. Loaded at start and on every reload; merged with the config's identities (and the
//! memberships connectors report) by [`merge`].
//!
//! One name, one identity: a canonical id or alias may name only one identity across the config,
//! every identity file and every report. A file entry whose id is an existing identity's id or
//! alias enriches that identity (so a POSIX name or e-mail in a group file lands on the right
//! person); a name that would belong to two different identities fails the merge with both places
//! (config check reports it, a reload is refused). Names are compared exactly (case-sensitively),
//! as every lookup and ACL match is.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{GroupSpec, IdentitySpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    /// `name:password:gid:member1,member2` per line; `#` comments.
    GroupFile,
    /// `{"users": [{"id", "aliases", "groups"}], "groups": [{"id", "member_of"}]}`.
    Json,
    /// Header `id,aliases,groups`; lists separated by `;`.
    Csv,
}

impl SourceFormat {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "group_file" => Some(Self::GroupFile),
            "json" => Some(Self::Json),
            "csv" => Some(Self::Csv),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct IdentitySource {
    pub format: SourceFormat,
    pub path: PathBuf,
    /// `group_file` only: the passwd file whose primary groups (its fourth field) count as
    /// memberships too. `/etc/group` lists no one in a user's primary group, so a POSIX group
    /// deny would miss its primary members without it.
    pub passwd: Option<PathBuf>,
}

/// Where identity data came from (for error messages and the merge order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The config's `[[identities]]` sections.
    Config,
    /// `identity_sources[index]` of the config, read from `path`.
    File { index: usize, path: PathBuf },
    /// A connector's group-membership report: it may only add groups to known identities.
    Connector(String),
}

/// Where an entry is inside its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum At {
    /// A keyed record: `identities[2]` (config), `users[3]` (JSON).
    Key(String),
    /// A line: a group file's group line, a CSV record's line.
    Line(usize),
    /// A member of a reported group.
    Group(String),
}

/// One identity entry of a source and where it is.
#[derive(Debug, Clone)]
pub struct Entry {
    pub spec: IdentitySpec,
    pub at: At,
}

/// The identity data of one source.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub source: Source,
    pub identities: Vec<Entry>,
    pub groups: Vec<GroupSpec>,
    /// Its entries only name people (a group file's members, by any name they go by): they
    /// enrich the identity a name resolves to, or make one, but never claim a name first.
    pub members_only: bool,
}

impl Loaded {
    fn new(source: Source) -> Self {
        Self {
            source,
            identities: Vec::new(),
            groups: Vec::new(),
            members_only: false,
        }
    }

    /// Parsed file data whose path and index [`load`] and [`load_all`] fill in.
    fn file() -> Self {
        Self::new(Source::File {
            index: 0,
            path: PathBuf::new(),
        })
    }

    /// A connector's report: `user:x` members get the group (when `x` names an identity),
    /// `group:y` members become its subgroups.
    pub fn reported(connector: &str, groups: &[docent_connector_api::GroupMembership]) -> Self {
        use docent_connector_api::Principal;
        let mut out = Self::new(Source::Connector(connector.to_string()));
        for g in groups {
            for m in &g.members {
                match m {
                    Principal::User(u) => out.identities.push(Entry {
                        spec: IdentitySpec {
                            id: u.clone(),
                            groups: vec![g.group.clone()],
                            ..Default::default()
                        },
                        at: At::Group(g.group.clone()),
                    }),
                    Principal::Group(sub) => out.groups.push(GroupSpec {
                        id: sub.clone(),
                        member_of: vec![g.group.clone()],
                        reported: true,
                        from_file: false,
                    }),
                    Principal::Everyone => {}
                }
            }
        }
        out
    }
}

/// A name's place: its source and where in it (`identities[0].aliases[1]`,
/// `/etc/docent/users.json: users[3].id`, `/etc/docent/groups: line 4`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub source: Source,
    pub at: String,
}

impl Place {
    fn new(source: &Source, at: &At, alias: Option<usize>) -> Self {
        let at = match (at, alias) {
            (At::Key(k), None) => format!("{k}.id"),
            (At::Key(k), Some(j)) => format!("{k}.aliases[{j}]"),
            (At::Line(n), None) => format!("line {n}"),
            (At::Line(n), Some(j)) => format!("line {n}, aliases[{j}]"),
            (At::Group(g), _) => format!("member of group {g:?}"),
        };
        Self {
            source: source.clone(),
            at,
        }
    }
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Source::Config => f.write_str(&self.at),
            Source::File { path, .. } => write!(f, "{}: {}", path.display(), self.at),
            Source::Connector(c) => write!(f, "connector {c:?}: {}", self.at),
        }
    }
}

/// One name given to two different identities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub name: String,
    /// Where the name was first given, and the identity it names there.
    pub first: Place,
    pub first_identity: String,
    /// Where it was given again, to another identity.
    pub second: Place,
    pub second_identity: String,
}

impl Conflict {
    /// The config key to report the conflict under: the second place itself when it is in the
    /// config, else the identity source it is in.
    pub fn config_path(&self) -> String {
        match &self.second.source {
            Source::Config => self.second.at.clone(),
            Source::File { index, .. } => format!("identity_sources[{index}]"),
            Source::Connector(c) => format!("connector {c:?}"),
        }
    }

    /// The message under [`Self::config_path`]: both places.
    pub fn config_message(&self) -> String {
        let what = format!(
            "{:?} is already {} (identity {:?}); it cannot also name identity {:?} (a name \
             must belong to one identity)",
            self.name, self.first, self.first_identity, self.second_identity
        );
        match self.second.source {
            Source::Config => what,
            _ => format!("{}: {what}", self.second),
        }
    }
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.second.source {
            Source::Config => write!(f, "{}: {}", self.second, self.config_message()),
            _ => f.write_str(&self.config_message()),
        }
    }
}

/// Conflicts as one error message (a store build or reload that fails on them).
pub fn conflicts_error(conflicts: &[Conflict]) -> String {
    let all: Vec<String> = conflicts.iter().map(Conflict::to_string).collect();
    format!(
        "ambiguous identity name{}: {}",
        if conflicts.len() == 1 { "" } else { "s" },
        all.join("; ")
    )
}

fn id_ok(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(char::is_whitespace)
}

/// A group id as a user's `groups` or a group's `member_of` names it: not a principal
/// (`group:hr` would make the user a member of `group:group:hr`, outside every rule about
/// `group:hr`). Other colons are allowed, as in `[[groups]]` ids (`corp:eng`).
pub(crate) fn group_id_ok(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    id_ok(s) && !["group:", "user:"].iter().any(|p| lower.starts_with(p))
}

/// A person's id: also not an audience's name (`everyone`, `group:<id>`), which the
/// conversations and usage of `act_as` audiences run under (as for `[[identities]]`).
fn person_id_ok(s: &str) -> bool {
    id_ok(s) && super::Audience::parse(s).is_none()
}

/// An alias: not empty or blank (a certificate with an empty name would map to it), and not an
/// audience's name. Spaces inside are allowed (a wiki's user names have them).
pub(crate) fn alias_ok(s: &str) -> bool {
    !s.trim().is_empty() && super::Audience::parse(s).is_none()
}

/// Reads one source. Errors name the file and the line or record.
pub fn load(src: &IdentitySource) -> Result<Loaded, String> {
    load_at(0, src)
}

/// [`load`] for `identity_sources[index]`.
pub(crate) fn load_at(index: usize, src: &IdentitySource) -> Result<Loaded, String> {
    let text =
        std::fs::read_to_string(&src.path).map_err(|e| format!("{}: {e}", src.path.display()))?;
    let passwd = match &src.passwd {
        Some(p) => Some(std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?),
        None => None,
    };
    // An empty file is one being rewritten (`getent group > file` truncates it first), not a
    // directory with no one in it: read as such, every membership it gave would vanish, and
    // with them the deny entries naming those groups (session 43's review; the fs connector
    // refuses empty name files for the same reason).
    for (path, t) in std::iter::once((&src.path, Some(&text)))
        .chain(src.passwd.as_ref().map(|p| (p, passwd.as_ref())))
    {
        if t.is_some_and(|t| !has_entries(t)) {
            return Err(format!(
                "{}: empty (no line but comments): not read, as if it were being rewritten",
                path.display()
            ));
        }
    }
    let r = match src.format {
        SourceFormat::GroupFile => group_file(&text, passwd.as_deref()),
        SourceFormat::Json => json(&text),
        SourceFormat::Csv => csv_export(&text),
    };
    let mut l = r.map_err(|e| format!("{}: {e}", src.path.display()))?;
    l.source = Source::File {
        index,
        path: src.path.clone(),
    };
    Ok(l)
}

/// Whether `text` has a line that is neither blank nor a `#` comment.
fn has_entries(text: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim();
        !l.is_empty() && !l.starts_with('#')
    })
}

fn group_file(text: &str, passwd: Option<&str>) -> Result<Loaded, String> {
    // Member name → (first line, groups).
    let mut members: HashMap<String, (usize, Vec<String>)> = HashMap::new();
    let mut out = Loaded::file();
    out.members_only = true;
    // gid → the group's name, for the passwd file's primary groups.
    let mut by_gid: HashMap<&str, Option<&str>> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() != 4 || !id_ok(fields[0]) {
            return Err(format!(
                "line {}: expected name:password:gid:members",
                n + 1
            ));
        }
        out.groups.push(GroupSpec {
            id: fields[0].to_string(),
            member_of: Vec::new(),
            reported: false,
            from_file: true,
        });
        // A gid two groups share names neither: a primary group by it could be either (the
        // same line twice is one group).
        let name = fields[0];
        by_gid
            .entry(fields[2].trim())
            .and_modify(|g| {
                if *g != Some(name) {
                    *g = None;
                }
            })
            .or_insert(Some(name));
        for m in fields[3]
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
        {
            if !person_id_ok(m) {
                return Err(format!("line {}: bad member {m:?}", n + 1));
            }
            members
                .entry(m.to_string())
                .or_insert_with(|| (n + 1, Vec::new()))
                .1
                .push(fields[0].to_string());
        }
    }
    // Primary groups: name:password:uid:gid:... Lines naming a gid the group file does not,
    // or a name that is not a valid identity name, add nothing; like the group file's own
    // members, these only add groups to identities known elsewhere (`members_only`).
    for (n, line) in passwd.unwrap_or_default().lines().enumerate() {
        let fields: Vec<&str> = line.trim().split(':').collect();
        if line.trim_start().starts_with('#') || fields.len() < 4 || !person_id_ok(fields[0]) {
            continue;
        }
        if let Some(Some(group)) = by_gid.get(fields[3].trim()) {
            let groups = &mut members
                .entry(fields[0].to_string())
                .or_insert_with(|| (n + 1, Vec::new()))
                .1;
            if !groups.iter().any(|g| g == group) {
                groups.push(group.to_string());
            }
        }
    }
    let mut users: Vec<_> = members.into_iter().collect();
    users.sort();
    out.identities = users
        .into_iter()
        .map(|(id, (line, groups))| Entry {
            spec: IdentitySpec {
                id,
                groups,
                ..Default::default()
            },
            at: At::Line(line),
        })
        .collect();
    Ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonExport {
    #[serde(default)]
    users: Vec<JsonUser>,
    #[serde(default)]
    groups: Vec<JsonGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonUser {
    id: String,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonGroup {
    id: String,
    #[serde(default)]
    member_of: Vec<String>,
}

fn json(text: &str) -> Result<Loaded, String> {
    let e: JsonExport = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut out = Loaded::file();
    for (i, u) in e.users.into_iter().enumerate() {
        if !person_id_ok(&u.id) {
            return Err(format!(
                "users[{i}].id: must be a non-empty id without spaces, not an audience's name \
                 (everyone, group:<id>)"
            ));
        }
        if let Some(j) = u.aliases.iter().position(|a| !alias_ok(a)) {
            return Err(format!(
                "users[{i}].aliases[{j}]: must not be blank or an audience's name (everyone, \
                 group:<id>)"
            ));
        }
        if let Some(j) = u.groups.iter().position(|g| !group_id_ok(g)) {
            return Err(format!(
                "users[{i}].groups[{j}]: must be a group id without spaces or `group:`"
            ));
        }
        out.identities.push(Entry {
            spec: IdentitySpec {
                id: u.id,
                aliases: u.aliases,
                groups: u.groups,
                ..Default::default()
            },
            at: At::Key(format!("users[{i}]")),
        });
    }
    for (i, g) in e.groups.into_iter().enumerate() {
        if !id_ok(&g.id) {
            return Err(format!(
                "groups[{i}].id: must be a non-empty id without spaces"
            ));
        }
        if let Some(j) = g.member_of.iter().position(|p| !group_id_ok(p)) {
            return Err(format!(
                "groups[{i}].member_of[{j}]: must be a group id without spaces or `group:`"
            ));
        }
        out.groups.push(GroupSpec {
            id: g.id,
            member_of: g.member_of,
            reported: false,
            from_file: true,
        });
    }
    Ok(out)
}

fn csv_export(text: &str) -> Result<Loaded, String> {
    let mut rd = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = rd.headers().map_err(|e| e.to_string())?.clone();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let id_col = col("id").ok_or("missing column \"id\"")?;
    let (aliases_col, groups_col) = (col("aliases"), col("groups"));
    let list = |rec: &csv::StringRecord, c: Option<usize>| -> Vec<String> {
        c.and_then(|c| rec.get(c))
            .map(|v| {
                v.split(';')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Loaded::file();
    for (i, rec) in rd.records().enumerate() {
        let rec = rec.map_err(|e| format!("record {}: {e}", i + 1))?;
        let id = rec.get(id_col).unwrap_or("");
        if !person_id_ok(id) {
            return Err(format!("record {}: bad id {id:?}", i + 1));
        }
        let line = rec.position().map_or(i + 2, |p| p.line() as usize);
        let aliases = list(&rec, aliases_col);
        if let Some(a) = aliases.iter().find(|a| !alias_ok(a)) {
            return Err(format!(
                "record {}: alias {a:?} is an audience's name (everyone, group:<id>)",
                i + 1
            ));
        }
        let groups = list(&rec, groups_col);
        if let Some(g) = groups.iter().find(|g| !group_id_ok(g)) {
            return Err(format!(
                "record {}: group {g:?} is not a group id (without spaces or `group:`)",
                i + 1
            ));
        }
        out.identities.push(Entry {
            spec: IdentitySpec {
                id: id.to_string(),
                aliases,
                groups,
                ..Default::default()
            },
            at: At::Line(line),
        });
    }
    Ok(out)
}

/// Merges identity data onto the configured identities (`identities[i]` is the config's
/// `[[identities]]` section `i`), in this order:
///
/// 1. configured identities: each id is a new identity (the same id twice is one identity;
///    config validation reports it), and its id and aliases become its names;
/// 2. file entries that declare aliases (in source order), then 3. file entries that only name a
///    user (group-file members; so they land on whoever has the name, whichever file gives it):
///    an entry whose id is a known name enriches that identity, any other entry is a new identity
///    (without credentials); its aliases become names of the identity it landed on;
/// 4. connector reports: a reported `user:x` adds the group to the identity `x` names; a name no
///    identity has is ignored (a report never creates or renames an identity) and logged.
///
/// A name (id or alias) that would name two different identities is a [`Conflict`]; all of them
/// are returned, each with both places.
pub fn merge(
    identities: Vec<IdentitySpec>,
    mut groups: Vec<GroupSpec>,
    loaded: Vec<Loaded>,
) -> Result<(Vec<IdentitySpec>, Vec<GroupSpec>), Vec<Conflict>> {
    let mut m = Merger::default();
    for (i, spec) in identities.into_iter().enumerate() {
        m.add(
            &Source::Config,
            Entry {
                spec,
                at: At::Key(format!("identities[{i}]")),
            },
            true,
        );
    }
    // User records (JSON, CSV) first claim their ids, then their aliases, so whether two
    // records name one person does not depend on their order: an alias equal to another
    // record's id is a conflict (session 34's review: `{"id":"mallory","aliases":["carol"]}`
    // before carol's own record took her name, and carol's record then enriched mallory).
    // A record whose id already names someone (a configured identity's alias) enriches that
    // identity. Group-file members come last, enriching whoever their name resolves to.
    let mut records = Vec::new();
    let mut members = Vec::new();
    let mut reported = Vec::new();
    for l in loaded {
        groups.extend(l.groups);
        match &l.source {
            Source::Connector(c) => reported.push((c.clone(), l.identities)),
            src => {
                let to = if l.members_only {
                    &mut members
                } else {
                    &mut records
                };
                to.extend(l.identities.into_iter().map(|e| (src.clone(), e)));
            }
        }
    }
    for (src, e) in &records {
        if !m.names.contains_key(&e.spec.id) {
            m.add(
                src,
                Entry {
                    spec: IdentitySpec {
                        aliases: Vec::new(),
                        ..e.spec.clone()
                    },
                    at: e.at.clone(),
                },
                false,
            );
        }
    }
    for (src, e) in records.into_iter().chain(members) {
        m.add(&src, e, false);
    }
    for (connector, entries) in reported {
        m.attach_reported(&connector, entries);
    }
    if m.conflicts.is_empty() {
        Ok((m.identities, groups))
    } else {
        Err(m.conflicts)
    }
}

#[derive(Default)]
struct Merger {
    identities: Vec<IdentitySpec>,
    /// Every id and alias → (the identity it names, where it was first given).
    names: HashMap<String, (usize, Place)>,
    /// The same, each name folded as deny entries fold it ([`docent_connector_api::fold_token`]):
    /// two identities whose names differ only in case, spaces or compatibility forms would be
    /// one for a deny and two for an allow, and a source writing a name in the other spelling
    /// would grant the other identity (session 43's review).
    folded: HashMap<String, (usize, Place)>,
    conflicts: Vec<Conflict>,
}

impl Merger {
    /// Records that `name`, given to identity `first.0` at `first.1`, was given again to
    /// `second.0` at `second.1`.
    fn conflict(&mut self, name: &str, first: (usize, Place), second: (usize, Place)) {
        self.conflicts.push(Conflict {
            name: name.to_string(),
            first: first.1,
            first_identity: self.identities[first.0].id.clone(),
            second: second.1,
            second_identity: self.identities[second.0].id.clone(),
        });
    }

    /// Gives `name` to identity `owner`; true when it is (now or already) `owner`'s.
    fn claim(&mut self, name: &str, owner: usize, place: Place) -> bool {
        match self.names.get(name) {
            None => {
                let folded = docent_connector_api::fold_token(&format!("user:{name}"));
                if let Some((o, first)) = self.folded.get(&folded)
                    && *o != owner
                {
                    let (o, first) = (*o, first.clone());
                    self.conflict(name, (o, first), (owner, place));
                    return false;
                }
                self.folded.entry(folded).or_insert((owner, place.clone()));
                self.names.insert(name.to_string(), (owner, place));
                true
            }
            Some((o, _)) if *o == owner => true,
            Some((o, first)) => {
                let (o, first) = (*o, first.clone());
                self.conflict(name, (o, first), (owner, place));
                false
            }
        }
    }

    /// Adds one entry. Configured entries (`configured`) join an existing identity only by its
    /// canonical id; file entries by any of its names.
    fn add(&mut self, source: &Source, e: Entry, configured: bool) {
        let Entry { spec, at } = e;
        let existing = self
            .names
            .get(&spec.id)
            .map(|&(o, _)| o)
            .filter(|&o| !configured || self.identities[o].id == spec.id);
        let owner = match existing {
            Some(o) => {
                let m = &mut self.identities[o];
                for g in &spec.groups {
                    if !m.groups.contains(g) {
                        m.groups.push(g.clone());
                        if !configured {
                            m.groups_from_files.push(g.clone());
                        }
                    }
                }
                m.admin |= spec.admin;
                m.act_as |= spec.act_as;
                m.ingest |= spec.ingest;
                if m.token_sha256.is_none() {
                    m.token_sha256 = spec.token_sha256.clone();
                }
                o
            }
            None => {
                let o = self.identities.len();
                self.identities.push(IdentitySpec {
                    aliases: Vec::new(),
                    groups_from_files: match configured {
                        true => Vec::new(),
                        false => spec.groups.clone(),
                    },
                    ..spec.clone()
                });
                self.claim(&spec.id, o, Place::new(source, &at, None));
                o
            }
        };
        for (j, a) in spec.aliases.iter().enumerate() {
            if self.claim(a, owner, Place::new(source, &at, Some(j))) {
                let m = &mut self.identities[owner];
                if *a != m.id && !m.aliases.contains(a) {
                    m.aliases.push(a.clone());
                    if !configured {
                        m.aliases_from_files.push(a.clone());
                    }
                }
            }
        }
    }

    /// A connector's reported members: groups for identities their names resolve to; nothing
    /// else.
    fn attach_reported(&mut self, connector: &str, entries: Vec<Entry>) {
        let mut unknown = Vec::new();
        for Entry { spec, at } in entries {
            let Some(&(o, _)) = self.names.get(&spec.id) else {
                if let At::Group(g) = at {
                    unknown.push(format!("user:{} in {g}", spec.id));
                }
                continue;
            };
            let m = &mut self.identities[o];
            for g in spec.groups {
                if !m.groups.contains(&g) && !m.reported_groups.contains(&g) {
                    m.reported_groups.push(g);
                }
            }
        }
        if !unknown.is_empty() {
            unknown.sort();
            unknown.dedup();
            tracing::warn!(
                connector,
                ignored = unknown.len(),
                first = ?unknown[..unknown.len().min(5)]
                    .iter()
                    .map(|n| crate::guardrail::pii::for_log(n))
                    .collect::<Vec<_>>(),
                "reported members that name no identity are ignored (a report only adds groups \
                 to identities the config and identity files define)"
            );
        }
    }
}

/// Loads every source; the first failure stops (a reload keeps the previous store).
pub fn load_all(sources: &[IdentitySource]) -> Result<Vec<Loaded>, String> {
    sources
        .iter()
        .enumerate()
        .map(|(i, s)| load_at(i, s))
        .collect()
}

/// Paths of the sources, for logs.
pub fn paths(sources: &[IdentitySource]) -> Vec<&Path> {
    sources.iter().map(|s| s.path.as_path()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group_of(text: &str) -> Result<Loaded, String> {
        group_file(text, None)
    }

    /// Found by a review: `/etc/group` lists no one in a user's primary group, so a query node
    /// reading only it missed those memberships, and a POSIX group deny with them.
    #[test]
    fn a_group_file_with_its_passwd_counts_primary_groups() {
        let passwd = "# users\nbob:x:1002:50::/home/bob:/bin/sh\nalice:x:1001:60::/:/bin/sh\n\
                      svc:x:999:77::/:/bin/false\n";
        let gf = group_file("staff:x:50:\nhr:x:60:alice\n", Some(passwd)).unwrap();
        let groups = |id: &str| {
            gf.identities
                .iter()
                .find(|e| e.spec.id == id)
                .map(|e| e.spec.groups.clone())
        };
        assert_eq!(groups("bob"), Some(vec!["staff".to_string()]));
        assert_eq!(groups("alice"), Some(vec!["hr".to_string()]), "once");
        assert_eq!(groups("svc"), None, "a gid the group file does not name");
        let without = group_of("staff:x:50:\nhr:x:60:alice\n").unwrap();
        assert!(!without.identities.iter().any(|e| e.spec.id == "bob"));
        // A gid two groups share names neither.
        let shared = group_file("staff:x:50:\nops:x:50:\n", Some(passwd)).unwrap();
        assert!(!shared.identities.iter().any(|e| e.spec.id == "bob"));
        let twice = group_file("staff:x:50:\nstaff:x:50:\n", Some(passwd)).unwrap();
        assert!(twice.identities.iter().any(|e| e.spec.id == "bob"));
    }

    /// Session 43's review: an empty group file (or passwd file, or any identity source) read
    /// while being rewritten dropped every membership it gave, and the denies naming them.
    #[test]
    fn an_empty_identity_source_is_an_error_not_an_empty_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (group, passwd) = (dir.path().join("group"), dir.path().join("passwd"));
        std::fs::write(&passwd, "bob:x:1002:50::/home/bob:/bin/sh\n").unwrap();
        let src = |format, passwd: Option<&Path>| IdentitySource {
            format,
            path: group.clone(),
            passwd: passwd.map(Path::to_path_buf),
        };
        for empty in ["", "\n  \n", "# nothing yet\n"] {
            std::fs::write(&group, empty).unwrap();
            for format in [
                SourceFormat::GroupFile,
                SourceFormat::Json,
                SourceFormat::Csv,
            ] {
                let e = load(&src(format, None)).unwrap_err();
                assert!(e.contains("empty"), "{e}");
            }
        }
        std::fs::write(&group, "staff:x:50:alice\n").unwrap();
        assert!(load(&src(SourceFormat::GroupFile, Some(&passwd))).is_ok());
        std::fs::write(&passwd, "# rewritten\n").unwrap();
        let e = load(&src(SourceFormat::GroupFile, Some(&passwd))).unwrap_err();
        assert!(e.contains("passwd") && e.contains("empty"), "{e}");
    }
    use crate::identity::IdentityStore;

    #[test]
    fn group_file_json_and_csv_merge_onto_configured_identities() {
        let gf = group_of("# comment\nhr:x:1002:alice,bob\n\nops:x:1003:bob\n").unwrap();
        let js = json(
            r#"{"users":[{"id":"carol","aliases":["U024BE7LH"],"groups":["ops"]}],
                "groups":[{"id":"ops","member_of":["staff"]}]}"#,
        )
        .unwrap();
        let cs = csv_export("id,aliases,groups\nalice@corp.example,FERNHILL\\alice;1001,finance\n")
            .unwrap();
        let (ids, groups) = merge(
            vec![IdentitySpec {
                id: "alice".into(),
                aliases: vec!["alice@corp.example".into()],
                ..Default::default()
            }],
            vec![],
            vec![gf, js, cs],
        )
        .unwrap();
        let s = IdentityStore::new(ids, groups);
        let alice = s.whois("FERNHILL\\alice").unwrap();
        assert_eq!(alice.id, "alice");
        assert_eq!(alice.groups, ["finance", "hr"]);
        // Every group of hers is a file's (the config gives her none).
        let mut from_files = s.lookup("alice").unwrap().groups_from_files.clone();
        from_files.sort();
        assert_eq!(from_files, ["finance", "hr"]);
        let bob = s.whois("bob").unwrap();
        assert_eq!(bob.groups, ["hr", "ops", "staff"]);
        assert_eq!(s.whois("U024BE7LH").unwrap().id, "carol");
    }

    /// Session 42's review: a user's group written as a principal (`group:hr`) made them a
    /// member of `group:group:hr`, outside every rule about `group:hr`.
    #[test]
    fn a_user_s_groups_in_a_file_are_group_ids() {
        let err = json(r#"{"users":[{"id":"eve","groups":["group:hr"]}]}"#).unwrap_err();
        assert!(err.contains("users[0].groups[0]"), "{err}");
        let err = csv_export("id,aliases,groups\neve,,ops;group:hr\n").unwrap_err();
        assert!(err.contains("group:hr"), "{err}");
        assert!(json(r#"{"users":[{"id":"eve","groups":["hr","corp:eng"]}]}"#).is_ok());
        let err = json(r#"{"groups":[{"id":"ops","member_of":["group:staff"]}]}"#).unwrap_err();
        assert!(err.contains("groups[0].member_of[0]"), "{err}");
    }

    /// Audiences (`act_as = "everyone"`, `"group:<id>"`) run under these ids: a person so
    /// named in an identity file would share the channels' conversations and usage (found by
    /// a review: only `[[identities]]` refused them).
    #[test]
    fn identity_files_refuse_a_person_named_after_an_audience() {
        assert!(
            json(r#"{"users":[{"id":"everyone"}]}"#)
                .unwrap_err()
                .contains("users[0].id")
        );
        assert!(json(r#"{"users":[{"id":"group:hr"}]}"#).is_err());
        assert!(
            csv_export("id\neveryone\n")
                .unwrap_err()
                .contains("record 1")
        );
        assert!(
            group_of("hr:x:1002:alice,everyone\n")
                .unwrap_err()
                .contains("line 1")
        );
        // A group may be called so: its principal is `group:everyone`, no audience's id.
        assert!(group_of("everyone:x:1002:alice\n").is_ok());
    }

    #[test]
    fn malformed_files_name_the_line() {
        assert!(group_of("hr:x:1002\n").unwrap_err().contains("line 1"));
        assert!(
            group_of("ok:x:1:a\nbad line\n")
                .unwrap_err()
                .contains("line 2")
        );
        assert!(
            json("{\"users\":[{\"id\":\"\"}]}")
                .unwrap_err()
                .contains("users[0]")
        );
        assert!(csv_export("name\nx\n").unwrap_err().contains("id"));
    }

    fn id(id: &str, aliases: &[&str]) -> IdentitySpec {
        IdentitySpec {
            id: id.into(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        }
    }

    /// `l` as `identity_sources[index]` read from `path`.
    fn at(mut l: Loaded, index: usize, path: &str) -> Loaded {
        l.source = Source::File {
            index,
            path: path.into(),
        };
        l
    }

    fn conflicts(
        identities: Vec<IdentitySpec>,
        loaded: Vec<Loaded>,
    ) -> Vec<(String, String, String)> {
        merge(identities, vec![], loaded)
            .unwrap_err()
            .into_iter()
            .map(|c| (c.name, c.first.to_string(), c.second.to_string()))
            .collect()
    }

    fn conflict(name: &str, first: &str, second: &str) -> (String, String, String) {
        (name.into(), first.into(), second.into())
    }

    #[test]
    fn config_alias_equal_to_another_identitys_id_is_refused_with_both_places() {
        let c = merge(
            vec![
                id("alice", &["alice@corp.example"]),
                id("carol", &[]),
                id("bob", &["bob@corp.example", "alice"]),
            ],
            vec![],
            vec![],
        )
        .unwrap_err();
        assert_eq!(c.len(), 1, "{c:?}");
        let c = &c[0];
        assert_eq!(
            (
                c.name.as_str(),
                c.first_identity.as_str(),
                c.second_identity.as_str()
            ),
            ("alice", "alice", "bob")
        );
        assert_eq!(c.config_path(), "identities[2].aliases[1]");
        assert!(c.config_message().contains("identities[0].id"), "{c}");
        let text = c.to_string();
        assert!(
            text.contains("identities[2].aliases[1]") && text.contains("identities[0].id"),
            "{text}"
        );
        // The other order: an id that an earlier identity has as alias.
        assert_eq!(
            conflicts(vec![id("bob", &["alice"]), id("alice", &[])], vec![]),
            [conflict(
                "alice",
                "identities[0].aliases[0]",
                "identities[1].id"
            )]
        );
    }

    /// Session 43's review: names that differ only in case (or spaces, or compatibility
    /// forms) were two identities, though a deny naming either matched both.
    #[test]
    fn names_equal_but_for_case_on_two_identities_are_refused() {
        assert_eq!(
            conflicts(
                vec![
                    id("alice", &["a@corp.example"]),
                    id("mallory", &["A@Corp.Example"]),
                ],
                vec![],
            ),
            [conflict(
                "A@Corp.Example",
                "identities[0].aliases[0]",
                "identities[1].aliases[0]"
            )]
        );
        assert_eq!(
            conflicts(vec![id("alice", &[]), id("ALICE", &[])], vec![]).len(),
            1
        );
        // One identity may hold both spellings.
        assert!(merge(vec![id("alice", &["Alice", "ALICE"])], vec![], vec![]).is_ok());
    }

    #[test]
    fn config_alias_equal_to_another_identitys_alias_is_refused() {
        assert_eq!(
            conflicts(
                vec![
                    id("alice", &["1001", "a@corp.example"]),
                    id("bob", &["a@corp.example"]),
                ],
                vec![],
            ),
            [conflict(
                "a@corp.example",
                "identities[0].aliases[1]",
                "identities[1].aliases[0]"
            )]
        );
        // An identity repeating its own names is no conflict.
        assert!(
            merge(
                vec![id("alice", &["alice", "1001", "1001"])],
                vec![],
                vec![]
            )
            .is_ok()
        );
    }

    #[test]
    fn file_entry_introducing_another_identitys_alias_is_refused() {
        let configured = || vec![id("alice", &["alice@corp.example"]), id("bob", &[])];
        // A new identity claiming alice's alias.
        let js =
            json(r#"{"users":[{"id":"carol"},{"id":"mallory","aliases":["alice@corp.example"]}]}"#)
                .unwrap();
        let c = merge(
            configured(),
            vec![],
            vec![at(js, 1, "/etc/docent/users.json")],
        )
        .unwrap_err();
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].config_path(), "identity_sources[1]");
        let msg = c[0].config_message();
        assert!(
            msg.contains("/etc/docent/users.json: users[1].aliases[0]")
                && msg.contains("identities[0].aliases[0]")
                && msg.contains("\"mallory\""),
            "{msg}"
        );
        // An entry that enriches alice (by her alias) must not take bob's id as an alias.
        let cs =
            csv_export("id,aliases\ncarol,\nalice@corp.example,FERNHILL\\alice;bob\n").unwrap();
        assert_eq!(
            conflicts(configured(), vec![at(cs, 0, "/etc/docent/users.csv")]),
            [conflict(
                "bob",
                "identities[1].id",
                "/etc/docent/users.csv: line 3, aliases[1]"
            )]
        );
        // Two files giving one alias to two new identities: both file places.
        let a = json(r#"{"users":[{"id":"u1","aliases":["U024BE7LH"]}]}"#).unwrap();
        let b = csv_export("id,aliases\nu2,U024BE7LH\n").unwrap();
        assert_eq!(
            conflicts(
                configured(),
                vec![at(a, 0, "/srv/a.json"), at(b, 1, "/srv/b.csv")]
            ),
            [conflict(
                "U024BE7LH",
                "/srv/a.json: users[0].aliases[0]",
                "/srv/b.csv: line 2, aliases[0]"
            )]
        );
    }

    /// Session 34's review: records with aliases were merged before those without, so a
    /// record giving another record's id as its alias took that person's name, and the
    /// person's own record then enriched the impostor (a JWT for carol authenticated as
    /// mallory, with carol's groups). Now a conflict, in either order and either file.
    #[test]
    fn a_record_may_not_take_another_records_id_as_its_alias() {
        for users in [
            r#"{"users":[{"id":"carol","groups":["finance"]},{"id":"mallory","aliases":["carol"]}]}"#,
            r#"{"users":[{"id":"mallory","aliases":["carol"]},{"id":"carol","groups":["finance"]}]}"#,
            r#"{"users":[{"id":"mallory","aliases":["carol"]},{"id":"carol","aliases":["c.jones"]}]}"#,
        ] {
            let js = json(users).unwrap();
            let c = conflicts(vec![], vec![at(js, 0, "/u.json")]);
            assert_eq!(c.len(), 1, "{users}: {c:?}");
            assert_eq!(c[0].0, "carol", "{users}: {c:?}");
        }
        // Across files, in either order.
        let a = || json(r#"{"users":[{"id":"mallory","aliases":["carol"]}]}"#).unwrap();
        let b = || csv_export("id,groups\ncarol,finance\n").unwrap();
        assert_eq!(
            conflicts(vec![], vec![at(a(), 0, "/a"), at(b(), 1, "/b")]).len(),
            1
        );
        assert_eq!(
            conflicts(vec![], vec![at(b(), 0, "/b"), at(a(), 1, "/a")]).len(),
            1
        );
    }

    #[test]
    fn entries_naming_an_identity_by_id_or_alias_enrich_it_in_any_source_order() {
        // The group file names carol by the alias a later JSON file gives her, and alice by her
        // configured alias: both enrich, nothing is a new identity or a conflict.
        let gf = group_of("hr:x:1:posix-carol,alice@corp.example\n").unwrap();
        let js = json(r#"{"users":[{"id":"carol","aliases":["posix-carol"],"groups":["ops"]}]}"#)
            .unwrap();
        let (ids, groups) = merge(
            vec![id("alice", &["alice@corp.example"])],
            vec![],
            vec![at(gf, 0, "/g"), at(js, 1, "/u.json")],
        )
        .unwrap();
        assert_eq!(ids.len(), 2, "{ids:?}");
        let s = IdentityStore::new(ids, groups);
        assert_eq!(s.whois("posix-carol").unwrap().id, "carol");
        assert_eq!(s.whois("carol").unwrap().groups, ["hr", "ops"]);
        assert_eq!(s.whois("alice").unwrap().groups, ["hr"]);
    }

    #[test]
    fn names_are_compared_exactly_like_lookups() {
        // Lookups, principals and allow entries are case-sensitive: a name resolves only as
        // spelt. (Two identities may not hold names that differ only in case: session 43,
        // `names_equal_but_for_case_on_two_identities_are_refused`.)
        let (ids, groups) = merge(
            vec![id("alice", &["alice@corp.example"]), id("bob", &[])],
            vec![],
            vec![],
        )
        .unwrap();
        let s = IdentityStore::new(ids, groups);
        assert_eq!(s.whois("alice@corp.example").unwrap().id, "alice");
        assert!(s.whois("Alice@corp.example").is_none());
        assert!(s.whois("ALICE@corp.example").is_none());
    }

    #[test]
    fn reports_only_add_groups_to_the_identities_their_names_resolve_to() {
        use docent_connector_api::{GroupMembership, Principal};
        let js = json(r#"{"users":[{"id":"carol","aliases":["posix-carol"]}]}"#).unwrap();
        let report = Loaded::reported(
            "share",
            &[GroupMembership {
                group: "hr".into(),
                members: vec![
                    Principal::user("posix-carol"),
                    Principal::user("alice@corp.example"),
                    Principal::user("ghost"),
                    Principal::group("payroll"),
                ],
            }],
        );
        let (ids, groups) = merge(
            vec![id("alice", &["alice@corp.example"])],
            vec![],
            vec![report, at(js, 0, "/u.json")],
        )
        .unwrap();
        // No identity for "posix-carol" (which would make the name ambiguous) or "ghost".
        assert_eq!(ids.len(), 2, "{ids:?}");
        let s = IdentityStore::new(ids, groups);
        assert_eq!(s.whois("posix-carol").unwrap().id, "carol");
        assert_eq!(s.whois("carol").unwrap().groups, ["hr"]);
        assert_eq!(s.whois("alice").unwrap().groups, ["hr"]);
        assert!(s.whois("ghost").is_none());
        assert_eq!(s.expand_groups(&["payroll".into()]).len(), 2);
    }
}
