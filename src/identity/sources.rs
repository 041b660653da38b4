//! Identity data from files an admin points at: an `/etc/group`-style file, a JSON export and a
//! CSV export. Loaded at start and on every reload; merged with the config's identities by
//! canonical id, where a file's user name that is an alias of a configured identity means that
//! identity.

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
}

#[derive(Debug, Default)]
pub struct Loaded {
    pub identities: Vec<IdentitySpec>,
    pub groups: Vec<GroupSpec>,
}

fn id_ok(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(char::is_whitespace)
}

/// Reads one source. Errors name the file and the line or record.
pub fn load(src: &IdentitySource) -> Result<Loaded, String> {
    let text =
        std::fs::read_to_string(&src.path).map_err(|e| format!("{}: {e}", src.path.display()))?;
    let r = match src.format {
        SourceFormat::GroupFile => group_file(&text),
        SourceFormat::Json => json(&text),
        SourceFormat::Csv => csv_export(&text),
    };
    r.map_err(|e| format!("{}: {e}", src.path.display()))
}

fn group_file(text: &str) -> Result<Loaded, String> {
    let mut members: HashMap<String, Vec<String>> = HashMap::new();
    let mut out = Loaded::default();
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
        });
        for m in fields[3]
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
        {
            if !id_ok(m) {
                return Err(format!("line {}: bad member {m:?}", n + 1));
            }
            members
                .entry(m.to_string())
                .or_default()
                .push(fields[0].to_string());
        }
    }
    let mut users: Vec<_> = members.into_iter().collect();
    users.sort();
    out.identities = users
        .into_iter()
        .map(|(id, groups)| IdentitySpec {
            id,
            groups,
            ..Default::default()
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
    let mut out = Loaded::default();
    for (i, u) in e.users.into_iter().enumerate() {
        if !id_ok(&u.id) {
            return Err(format!(
                "users[{i}].id: must be a non-empty id without spaces"
            ));
        }
        out.identities.push(IdentitySpec {
            id: u.id,
            aliases: u.aliases,
            groups: u.groups,
            ..Default::default()
        });
    }
    for (i, g) in e.groups.into_iter().enumerate() {
        if !id_ok(&g.id) {
            return Err(format!(
                "groups[{i}].id: must be a non-empty id without spaces"
            ));
        }
        out.groups.push(GroupSpec {
            id: g.id,
            member_of: g.member_of,
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
    let mut out = Loaded::default();
    for (i, rec) in rd.records().enumerate() {
        let rec = rec.map_err(|e| format!("record {}: {e}", i + 1))?;
        let id = rec.get(id_col).unwrap_or("");
        if !id_ok(id) {
            return Err(format!("record {}: bad id {id:?}", i + 1));
        }
        out.identities.push(IdentitySpec {
            id: id.to_string(),
            aliases: list(&rec, aliases_col),
            groups: list(&rec, groups_col),
            ..Default::default()
        });
    }
    Ok(out)
}

/// Merges file identities into the configured ones: a file user whose name is a configured id or
/// alias becomes that identity (so a POSIX name or e-mail in a group file lands on the right
/// person); others become identities of their own (no credentials).
pub fn merge(
    mut identities: Vec<IdentitySpec>,
    mut groups: Vec<GroupSpec>,
    loaded: Vec<Loaded>,
) -> (Vec<IdentitySpec>, Vec<GroupSpec>) {
    let mut canonical: HashMap<String, String> = HashMap::new();
    for i in &identities {
        for a in &i.aliases {
            canonical.entry(a.clone()).or_insert_with(|| i.id.clone());
        }
    }
    for i in &identities {
        canonical.insert(i.id.clone(), i.id.clone());
    }
    for l in loaded {
        for mut u in l.identities {
            if let Some(c) = canonical.get(&u.id) {
                u.id = c.clone();
            }
            identities.push(u);
        }
        groups.extend(l.groups);
    }
    (identities, groups)
}

/// Loads every source; the first failure stops (a reload keeps the previous store).
pub fn load_all(sources: &[IdentitySource]) -> Result<Vec<Loaded>, String> {
    sources.iter().map(load).collect()
}

/// Paths of the sources, for logs.
pub fn paths(sources: &[IdentitySource]) -> Vec<&Path> {
    sources.iter().map(|s| s.path.as_path()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::IdentityStore;

    #[test]
    fn group_file_json_and_csv_merge_onto_configured_identities() {
        let gf = group_file("# comment\nhr:x:1002:alice,bob\n\nops:x:1003:bob\n").unwrap();
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
        );
        let s = IdentityStore::new(ids, groups);
        let alice = s.whois("FERNHILL\\alice").unwrap();
        assert_eq!(alice.id, "alice");
        assert_eq!(alice.groups, ["finance", "hr"]);
        let bob = s.whois("bob").unwrap();
        assert_eq!(bob.groups, ["hr", "ops", "staff"]);
        assert_eq!(s.whois("U024BE7LH").unwrap().id, "carol");
    }

    #[test]
    fn malformed_files_name_the_line() {
        assert!(group_file("hr:x:1002\n").unwrap_err().contains("line 1"));
        assert!(
            group_file("ok:x:1:a\nbad line\n")
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
}
