//! A commit on Milvus as one plan, stored whole before any of it is applied.
//!
//! Milvus has no transactions: a commit is a sequence of requests (record the documents it
//! writes, delete what goes, upsert the rows, store the checkpoints, forget the record). A
//! writer cut off in the middle leaves documents torn (new rows beside old ones), and the old
//! rows a new version overwrote are gone. Without more, the repair at the next open can only
//! remove a torn document whole and have its connector send it again. A push source cannot
//! send it again, so its document was lost, its committed version included (session 37's note).
//!
//! So the writer stores the plan ([`CommitPlan::encode`], through
//! `ChunkCollection::put_commit_log`) before it records its intents, and the repair applies
//! that plan again: every step is idempotent (deletes by key and ordinal, upserts by chunk id,
//! checkpoints replaced whole), so the commit ends as if it had never been cut off.
//!
//! Must never: apply a plan other than the one written just before the intents it pairs with
//! (a commit that stores no plan clears the last one before it records its intents).

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use docent_milvus::{ChunkCollection, ChunkRow, MilvusError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The format written; a plan of another format is not applied (the repair falls back to
/// removing torn documents).
const FORMAT: u32 = 1;

/// What one commit does, in the order it does it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct CommitPlan {
    /// Names this commit in its record of intents (`put_intents_of`): a plan is applied again
    /// only with the intents of its own commit, never with those of a commit that stored no
    /// plan (an older release's, after a downgrade).
    pub id: String,
    /// The documents it writes (its record of intents).
    pub written: Vec<String>,
    /// (document key, first ordinal to delete): 0 deletes the document.
    pub trims: Vec<(String, i64)>,
    /// Every row it writes, each document's first chunk last.
    pub rows: Vec<ChunkRow>,
    /// (source, checkpoint as JSON text), the reconciliations owed first.
    pub checkpoints: Vec<(String, String)>,
}

impl CommitPlan {
    /// Records the documents it writes, under its id. Not part of [`Self::apply`]: the repair
    /// applies a plan again over the intents it found, which name more documents when an
    /// earlier commit failed (found by a review: writing the plan's alone over them lost the
    /// others' record if the repair was cut off in turn).
    pub(super) async fn record(&self, c: &ChunkCollection) -> Result<(), MilvusError> {
        if self.written.is_empty() {
            return Ok(());
        }
        c.put_intents_of(&self.id, &self.written).await
    }

    /// Every step after [`Self::record`] but forgetting the record of intents (and the stored
    /// plan), which the caller does once nothing else remains to repair.
    pub(super) async fn apply(&self, c: &ChunkCollection) -> Result<(), MilvusError> {
        // What goes, then the data, then the checkpoints: each step only after the last was
        // acknowledged. Trimming before the upsert keeps a crash in between harmless: the
        // document's first chunks still carry the old version.
        for (key, first) in &self.trims {
            if *first == 0 {
                c.delete_document(key).await?;
            } else {
                c.delete_chunks_from(key, *first).await?;
            }
        }
        c.upsert(&self.rows).await?;
        for (source, text) in &self.checkpoints {
            c.put_checkpoint(source, text.as_bytes()).await?;
        }
        Ok(())
    }

    /// The checkpoints it stores, as values.
    pub(super) fn checkpoint_values(&self) -> BTreeMap<String, Value> {
        self.checkpoints
            .iter()
            .filter_map(|(s, t)| Some((s.clone(), serde_json::from_str(t).ok()?)))
            .collect()
    }

    /// The documents it leaves as it means to: those it writes and those it deletes whole.
    pub(super) fn covers(&self) -> BTreeSet<&str> {
        let deleted = self
            .trims
            .iter()
            .filter(|(_, first)| *first == 0)
            .map(|(k, _)| k.as_str());
        self.written
            .iter()
            .map(String::as_str)
            .chain(deleted)
            .collect()
    }

    /// This plan as several, each encoding to at most about `target` bytes (a document
    /// larger alone is a plan alone), for a commit too large to store as one: applied one
    /// after the other, each a commit of its own (its id: this one's and its place), the
    /// checkpoints with the last (alone, when they do not fit beside its documents). A
    /// document's trims and rows stay in one plan, its first chunk last, so each is whole
    /// after its plan; a plan cut off is applied again as any (found in session 38: a commit
    /// over the stored size had no plan, and a crash in it removed the committed versions of
    /// the documents it tore).
    ///
    /// `earlier`: the groups of documents an earlier attempt at these writes split them into.
    /// Each keeps its place, so its id names the same documents (a review: a retry that grouped
    /// them otherwise overwrote the record of a part that failed with another part's
    /// documents, and a document torn by the failed part went unrecorded); documents of no
    /// earlier group go in new ones. Returns the parts and the new groups.
    pub(super) fn split(
        self,
        target: usize,
        earlier: &[Vec<String>],
    ) -> (Vec<CommitPlan>, Vec<Vec<String>>) {
        let encoded = |r: &ChunkRow| serde_json::to_vec(&RowOut::of(r)).map_or(0, |v| v.len());
        if self.encode().len() <= target {
            return (vec![self], Vec::new());
        }
        let mut docs: BTreeMap<&str, (u64, Vec<&ChunkRow>)> = BTreeMap::new();
        for k in &self.written {
            docs.entry(k.as_str()).or_default().0 += k.len() as u64 + 8;
        }
        for (k, _) in &self.trims {
            docs.entry(k.as_str()).or_default().0 += k.len() as u64 + 16;
        }
        for r in &self.rows {
            let d = docs.entry(r.doc_key.as_str()).or_default();
            d.0 += encoded(r) as u64 + 1;
            d.1.push(r);
        }
        // Checkpoints alone, however large: one plan (it stores none: it writes no document).
        if docs.is_empty() {
            return (vec![self], Vec::new());
        }
        let room = target.saturating_sub(self.id.len() + 128).max(1) as u64;
        let checkpoints = self
            .checkpoints
            .iter()
            .map(|(s, t)| s.len() + t.len() + 16)
            .sum::<usize>() as u64;
        // (place, documents)
        let mut groups: Vec<(usize, Vec<&str>)> = Vec::new();
        let mut placed: BTreeSet<&str> = BTreeSet::new();
        for (i, g) in earlier.iter().enumerate() {
            let keys: Vec<&str> = g
                .iter()
                .map(String::as_str)
                .filter(|k| docs.contains_key(k))
                .collect();
            placed.extend(keys.iter().copied());
            if !keys.is_empty() {
                groups.push((i, keys));
            }
        }
        let mut fresh: Vec<(u64, Vec<&str>)> = Vec::new();
        for (k, (size, _)) in &docs {
            if placed.contains(k) {
                continue;
            }
            match fresh.last_mut() {
                Some(last) if last.0 + size <= room => {
                    last.0 += size;
                    last.1.push(k);
                }
                _ => fresh.push((*size, vec![k])),
            }
        }
        let last_size = match fresh.last() {
            Some(g) => g.0,
            None => groups
                .last()
                .map_or(0, |(_, keys)| keys.iter().map(|k| docs[k].0).sum()),
        };
        if last_size + checkpoints > room && !self.checkpoints.is_empty() {
            fresh.push((0, Vec::new()));
        }
        let new_groups: Vec<Vec<String>> = fresh
            .iter()
            .map(|(_, keys)| keys.iter().map(|k| k.to_string()).collect())
            .collect();
        let first_new = earlier.len();
        groups.extend(
            fresh
                .into_iter()
                .enumerate()
                .map(|(j, (_, keys))| (first_new + j, keys)),
        );
        let n = groups.len();
        let parts = groups
            .into_iter()
            .enumerate()
            .map(|(at, (place, keys))| {
                let keys: BTreeSet<&str> = keys.into_iter().collect();
                let mine = |k: &str| keys.contains(k);
                // Every document's first chunk last, as in the whole plan.
                let (firsts, rest): (Vec<ChunkRow>, Vec<ChunkRow>) = keys
                    .iter()
                    .flat_map(|k| docs[k].1.iter().map(|r| (*r).clone()))
                    .partition(|r| r.ordinal == 0);
                CommitPlan {
                    id: format!("{}.{place}", self.id),
                    written: self.written.iter().filter(|k| mine(k)).cloned().collect(),
                    trims: self
                        .trims
                        .iter()
                        .filter(|(k, _)| mine(k))
                        .cloned()
                        .collect(),
                    rows: rest.into_iter().chain(firsts).collect(),
                    checkpoints: if at + 1 == n {
                        self.checkpoints.clone()
                    } else {
                        Vec::new()
                    },
                }
            })
            .collect();
        (parts, new_groups)
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        let plan = PlanOut {
            format: FORMAT,
            id: &self.id,
            written: &self.written,
            trims: &self.trims,
            rows: self.rows.iter().map(RowOut::of).collect(),
            checkpoints: &self.checkpoints,
        };
        serde_json::to_vec(&plan).unwrap_or_default()
    }

    /// Its errors name no data (no key, no text): the repair logs them.
    pub(super) fn decode(bytes: &[u8]) -> Result<Self, String> {
        // A JSON error's text may quote a value: only its kind and place.
        let json = |e: serde_json::Error| {
            format!(
                "{:?} error at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            )
        };
        // The format first, so that a plan of another one fails as such.
        let head: Head = serde_json::from_slice(bytes).map_err(json)?;
        if head.format != FORMAT {
            return Err(format!(
                "format {} (this build reads {FORMAT})",
                head.format
            ));
        }
        let plan: PlanIn = serde_json::from_slice(bytes).map_err(json)?;
        let rows = plan
            .rows
            .into_iter()
            .enumerate()
            .map(|(i, r)| r.into_row().map_err(|why| format!("row {i}: {why}")))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            id: plan.id,
            written: plan.written,
            trims: plan.trims,
            rows,
            checkpoints: plan.checkpoints,
        })
    }
}

#[derive(Serialize)]
struct PlanOut<'a> {
    format: u32,
    id: &'a str,
    written: &'a [String],
    trims: &'a [(String, i64)],
    rows: Vec<RowOut<'a>>,
    checkpoints: &'a [(String, String)],
}

#[derive(Deserialize)]
struct Head {
    format: u32,
}

/// (Its `format` is read by [`Head`].)
#[derive(Deserialize)]
struct PlanIn {
    id: String,
    written: Vec<String>,
    trims: Vec<(String, i64)>,
    rows: Vec<RowIn>,
    checkpoints: Vec<(String, String)>,
}

/// A row as stored in a plan: its vector as little-endian `f32`s in base64 (exact, and about
/// half the size of JSON numbers).
#[derive(Serialize)]
struct RowOut<'a> {
    chunk_id: &'a str,
    doc_key: &'a str,
    source: &'a str,
    uri: &'a str,
    title: &'a str,
    heading: &'a str,
    text: &'a str,
    dense: String,
    allow: &'a [String],
    deny: &'a [String],
    attributes: &'a BTreeMap<String, String>,
    ordinal: i64,
    span: (i64, i64),
    meta: &'a Value,
}

impl<'a> RowOut<'a> {
    fn of(r: &'a ChunkRow) -> Self {
        let bytes: Vec<u8> = r.dense.iter().flat_map(|x| x.to_le_bytes()).collect();
        Self {
            chunk_id: &r.chunk_id,
            doc_key: &r.doc_key,
            source: &r.source,
            uri: &r.uri,
            title: &r.title,
            heading: &r.heading,
            text: &r.text,
            dense: BASE64.encode(bytes),
            allow: &r.allow,
            deny: &r.deny,
            attributes: &r.attributes,
            ordinal: r.ordinal,
            span: (r.span.start, r.span.end),
            meta: &r.meta,
        }
    }
}

#[derive(Deserialize)]
struct RowIn {
    chunk_id: String,
    doc_key: String,
    source: String,
    uri: String,
    title: String,
    heading: String,
    text: String,
    dense: String,
    allow: Vec<String>,
    deny: Vec<String>,
    attributes: BTreeMap<String, String>,
    ordinal: i64,
    span: (i64, i64),
    meta: Value,
}

impl RowIn {
    fn into_row(self) -> Result<ChunkRow, String> {
        let bytes = BASE64
            .decode(&self.dense)
            .map_err(|_| "its vector is not base64".to_string())?;
        if bytes.len() % 4 != 0 {
            return Err("its vector is cut".to_string());
        }
        let dense = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(ChunkRow {
            chunk_id: self.chunk_id,
            doc_key: self.doc_key,
            source: self.source,
            uri: self.uri,
            title: self.title,
            heading: self.heading,
            text: self.text,
            dense,
            allow: self.allow,
            deny: self.deny,
            attributes: self.attributes,
            ordinal: self.ordinal,
            span: self.span.0..self.span.1,
            meta: self.meta,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ord: i64) -> ChunkRow {
        ChunkRow {
            chunk_id: format!("c:p.md#{ord}"),
            doc_key: "c:p.md".into(),
            source: "c".into(),
            uri: "file:///p.md".into(),
            title: "P \"quoted\"".into(),
            heading: "A > B".into(),
            text: "heron ünïcode \u{1F426}".into(),
            dense: vec![0.1, -0.0, f32::MIN_POSITIVE, 1.0 / 3.0],
            allow: vec!["group:hr".into()],
            deny: vec!["user:eve".into()],
            attributes: [("dept".to_string(), "hr".to_string())].into(),
            ordinal: ord,
            span: 3..40,
            meta: serde_json::json!({"v": "2", "n": 2, "hp": ["A", "B"]}),
        }
    }

    #[test]
    fn a_plan_reads_back_exactly_as_written() {
        let plan = CommitPlan {
            id: "18c2f0a1-1".into(),
            written: vec!["c:p.md".into()],
            trims: vec![("c:gone.md".into(), 0), ("c:p.md".into(), 2)],
            rows: vec![row(1), row(0)],
            checkpoints: vec![("c".into(), r#"{"cursor":7}"#.into())],
        };
        let back = CommitPlan::decode(&plan.encode()).unwrap();
        assert_eq!(back, plan);
        // Vectors bit for bit (negative zero included).
        assert_eq!(back.rows[0].dense[1].to_bits(), (-0.0f32).to_bits());
        assert_eq!(
            back.covers(),
            BTreeSet::from(["c:p.md", "c:gone.md"]),
            "a trimmed document is covered as written, a deleted one as deleted"
        );
        assert_eq!(
            back.checkpoint_values()["c"],
            serde_json::json!({"cursor": 7})
        );
    }

    fn row_of(key: &str, ord: i64, text_len: usize) -> ChunkRow {
        ChunkRow {
            chunk_id: format!("{key}#{ord}"),
            doc_key: key.into(),
            text: "x".repeat(text_len),
            ordinal: ord,
            ..row(ord)
        }
    }

    #[test]
    fn a_large_plan_splits_by_document_with_the_checkpoints_last() {
        // Five documents of three chunks (~4 KB each), one deleted, one trimmed; a target of
        // 10 KB holds two at most.
        let keys = ["c:a", "c:b", "c:c", "c:d", "c:e"];
        let mut rows: Vec<ChunkRow> = keys
            .iter()
            .flat_map(|k| (1..3).map(move |o| row_of(k, o, 1200)))
            .collect();
        rows.extend(keys.iter().map(|k| row_of(k, 0, 1200)));
        let plan = CommitPlan {
            id: "p".into(),
            written: keys.iter().map(|k| k.to_string()).collect(),
            trims: vec![("c:b".into(), 3), ("c:gone".into(), 0)],
            rows,
            checkpoints: vec![("c".into(), r#"{"cursor":9}"#.into())],
        };
        assert_eq!(
            plan.clone().split(usize::MAX, &[]),
            (vec![plan.clone()], Vec::new()),
            "one that fits stays whole"
        );
        let (parts, groups) = plan.clone().split(10_000, &[]);
        assert_eq!(groups.len(), parts.len());
        assert!(parts.len() >= 3, "{}", parts.len());
        for (i, p) in parts.iter().enumerate() {
            assert!(p.encode().len() <= 10_000, "part {i}: {}", p.encode().len());
            assert_eq!(p.id, format!("p.{i}"));
            assert_eq!(
                p.checkpoints.is_empty(),
                i + 1 < parts.len(),
                "the checkpoints go with the last part only"
            );
            // Each document's first chunk after all its others.
            for r in &p.rows {
                let first = p
                    .rows
                    .iter()
                    .position(|x| x.doc_key == r.doc_key && x.ordinal == 0);
                let me = p.rows.iter().position(|x| x == r);
                assert!(r.ordinal == 0 || first > me, "{} in part {i}", r.chunk_id);
            }
            // A document's trims and rows in the plan that writes it.
            for (k, _) in &p.trims {
                assert!(k == "c:gone" || p.written.contains(k));
            }
            for r in &p.rows {
                assert!(p.written.contains(&r.doc_key));
            }
        }
        let all = |f: &dyn Fn(&CommitPlan) -> Vec<String>| {
            let mut v: Vec<String> = parts.iter().flat_map(f).collect();
            v.sort();
            v
        };
        assert_eq!(all(&|p| p.written.clone()), plan.written);
        assert_eq!(
            all(&|p| p.rows.iter().map(|r| r.chunk_id.clone()).collect()),
            {
                let mut v: Vec<String> = plan.rows.iter().map(|r| r.chunk_id.clone()).collect();
                v.sort();
                v
            }
        );
        assert_eq!(
            all(&|p| p.trims.iter().map(|t| format!("{t:?}")).collect()),
            {
                let mut v: Vec<String> = plan.trims.iter().map(|t| format!("{t:?}")).collect();
                v.sort();
                v
            }
        );
        // A document larger than the target alone is a plan alone; the checkpoints, which
        // do not fit beside the last, are a part of their own.
        let (parts, _) = plan.clone().split(100, &[]);
        assert_eq!(
            parts.len(),
            7,
            "five documents written, one deleted, the checkpoints"
        );
        assert!(parts.iter().all(|p| p.written.len() <= 1));
        let last = parts.last().unwrap();
        assert!(last.written.is_empty() && last.trims.is_empty() && !last.checkpoints.is_empty());

        // A retry after the first part committed: each earlier part keeps its id and its
        // documents, and a document written meanwhile goes in a new part.
        let committed: BTreeSet<String> = groups[0].iter().cloned().collect();
        let mut rest = plan.clone();
        rest.written.retain(|k| !committed.contains(k));
        rest.written.push("c:f".into());
        rest.trims.retain(|(k, _)| !committed.contains(k));
        rest.rows.retain(|r| !committed.contains(&r.doc_key));
        rest.rows.push(row_of("c:f", 0, 1200));
        let (again, more) = rest.split(10_000, &groups);
        assert_eq!(more, [vec!["c:f".to_string()]]);
        for (p, i) in again.iter().zip(1..) {
            if i < groups.len() {
                assert_eq!(p.id, format!("p.{i}"));
                let mut mine: Vec<String> = p
                    .written
                    .iter()
                    .chain(p.trims.iter().map(|(k, _)| k))
                    .cloned()
                    .collect();
                mine.sort();
                mine.dedup();
                assert_eq!(mine, groups[i]);
            }
        }
        let last = again.last().unwrap();
        assert_eq!(
            (last.id.as_str(), last.written.as_slice()),
            (
                format!("p.{}", groups.len()).as_str(),
                ["c:f".to_string()].as_slice()
            )
        );
    }

    #[test]
    fn a_plan_of_another_format_or_cut_short_is_refused() {
        let plan = CommitPlan {
            id: "x".into(),
            written: vec![],
            trims: vec![],
            rows: vec![row(0)],
            checkpoints: vec![],
        };
        let bytes = plan.encode();
        assert!(CommitPlan::decode(&bytes[..bytes.len() - 3]).is_err());
        let other = String::from_utf8(bytes)
            .unwrap()
            .replacen("\"format\":1", "\"format\":2", 1);
        let e = CommitPlan::decode(other.as_bytes()).unwrap_err();
        assert!(e.contains("format 2"), "{e}");
        // An error names no data (the repair logs it): not the row's key, not a value.
        let bytes = plan.encode();
        let broken = String::from_utf8(bytes).unwrap().replacen(
            "\"ordinal\":0",
            "\"ordinal\":\"c:secret.md\"",
            1,
        );
        let e = CommitPlan::decode(broken.as_bytes()).unwrap_err();
        assert!(!e.contains("secret") && !e.contains("p.md"), "{e}");
        let cut_vector =
            String::from_utf8(plan.encode())
                .unwrap()
                .replacen("\"dense\":\"", "\"dense\":\"A", 1);
        let e = CommitPlan::decode(cut_vector.as_bytes()).unwrap_err();
        assert!(e.starts_with("row 0:") && !e.contains("p.md"), "{e}");
    }
}
