//! Durable conversations, feedback and token usage: one redb database in the data directory
//! (`assistant.redb`).
//!
//! Why redb: an embedded, pure-Rust, ACID key-value store (copy-on-write B-trees, one fsync per
//! commit, crash-safe without a log to replay), no C build and no server; the data here is small
//! per record and read by key or key range (a conversation's turns, a day's usage). SQLite
//! would add a C build and SQL for what are three key-range tables; the tantivy index is the
//! wrong shape (no in-place updates). Records are JSON values so fields can be added.
//!
//! Keys: conversations by id; turns by `conversation/turn(6 digits)`; an owner index by
//! `owner\0conversation`; feedback by `conversation/turn/identity` (one vote per user and turn,
//! the last wins); usage by `YYYY-MM-DD\0principal` (identities as `user:<id>`, groups as
//! `group:<name>`). Blocking: call from a blocking thread.

use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

const CONVERSATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("conversations");
const TURNS: TableDefinition<&str, &[u8]> = TableDefinition::new("turns");
const BY_OWNER: TableDefinition<&str, ()> = TableDefinition::new("by_owner");
const FEEDBACK: TableDefinition<&str, &[u8]> = TableDefinition::new("feedback");
const USAGE: TableDefinition<&str, &[u8]> = TableDefinition::new("usage");
/// Owners found gone in one run from which, when they are also more than half of all owners,
/// the run is taken for an incomplete identity source ([`Store::expire_absent`]).
const MASS_ABSENCE_MIN: usize = 5;

/// Owners of conversations whose identity is gone, with when that was first seen
/// ([`Store::expire_absent`]).
const ABSENT: TableDefinition<&str, i64> = TableDefinition::new("absent_owners");

#[derive(Debug, thiserror::Error)]
#[error("assistant store: {0}")]
pub struct StoreError(String);

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConversationRecord {
    pub id: String,
    pub owner: String,
    /// The first question, whole (see `TITLE_CHARS`).
    pub title: String,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub turns: u32,
    /// How many of the first turns the retention has emptied ([`Store::expire`]): a
    /// conversation still in use loses its turns older than the retention one by one, not
    /// only whole when it goes quiet (session 42's note: a conversation added to every day
    /// kept its first question for ever).
    #[serde(default)]
    pub expired_turns: u32,
    /// When the first turn the retention kept was asked (0 until it emptied or kept one:
    /// `created_ms` stands for it then).
    #[serde(default)]
    pub kept_from_ms: i64,
}

/// The status of a turn the retention emptied ([`expired_turn`]).
pub const EXPIRED: &str = "expired";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredCitation {
    pub document_key: String,
    pub title: String,
    pub uri: String,
    pub chunk_id: String,
    pub span: (usize, usize),
    pub snippet: String,
    pub heading_path: Vec<String>,
    pub page: Option<u32>,
    /// The document key as indexed (never redacted, never sent), for re-checking access; empty
    /// in turns stored before it was kept, which are checked by `document_key`.
    #[serde(default)]
    pub access_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredSentence {
    pub text: String,
    pub citations: Vec<usize>,
    #[serde(default)]
    pub uncited: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TurnRecord {
    pub question: String,
    pub rewritten: String,
    pub answer: String,
    pub sentences: Vec<StoredSentence>,
    pub citations: Vec<StoredCitation>,
    /// "answered", "no_answer", "blocked".
    pub status: String,
    /// "extractive" or "generative".
    pub mode: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub time_ms: i64,
    /// Indexed keys of the documents of every passage the answerer was given, kept for a
    /// generated answer and for a turn with uncited sentences: such sentences were allowed
    /// because the caller could read all of them, and are shown only while that still holds.
    /// Empty in turns stored before (a generated turn without them shows no sentence).
    #[serde(default)]
    pub evidence_keys: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FeedbackRecord {
    pub identity: String,
    pub conversation_id: String,
    pub turn: u32,
    pub up: bool,
    pub reasons: Vec<String>,
    pub comment: String,
    pub time_ms: i64,
    pub question: String,
    pub documents: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct UsageCounts {
    pub prompt: u64,
    pub completion: u64,
    pub requests: u64,
}

impl UsageCounts {
    pub fn tokens(&self) -> u64 {
        self.prompt.saturating_add(self.completion)
    }

    fn add(&mut self, o: &UsageCounts) {
        self.prompt = self.prompt.saturating_add(o.prompt);
        self.completion = self.completion.saturating_add(o.completion);
        self.requests = self.requests.saturating_add(o.requests);
    }
}

pub struct Store {
    db: Database,
    /// Every write fails ([`Store::fail_writes`]).
    failing: std::sync::atomic::AtomicBool,
    /// Usage a write could not record (a full disk), by counter key: counted by
    /// [`Store::usage_today`] and written with the next write that succeeds, so that a store
    /// refusing writes does not leave every token budget open (found by a review).
    unwritten: std::sync::Mutex<std::collections::HashMap<String, UsageCounts>>,
    /// [`MAX_CONVERSATIONS_PER_OWNER`], lower in tests.
    max_per_owner: usize,
    /// [`crate::assistant::MAX_CONVERSATION_TURNS`], lower in tests.
    max_turns: u32,
}

/// In `tx`, removes conversation `id` of `owner` with its index entry, turns and feedback.
fn remove_in(tx: &redb::WriteTransaction, owner: &str, id: &str) -> Result<(), StoreError> {
    tx.open_table(CONVERSATIONS)
        .map_err(err)?
        .remove(id)
        .map_err(err)?;
    tx.open_table(BY_OWNER)
        .map_err(err)?
        .remove(format!("{owner}\0{id}").as_str())
        .map_err(err)?;
    let (lo, hi) = (format!("{id}/"), format!("{id}0"));
    tx.open_table(TURNS)
        .map_err(err)?
        .retain_in(lo.as_str()..hi.as_str(), |_, _| false)
        .map_err(err)?;
    tx.open_table(FEEDBACK)
        .map_err(err)?
        .retain_in(lo.as_str()..hi.as_str(), |_, _| false)
        .map_err(err)?;
    Ok(())
}

fn turn_key(conv: &str, turn: u32) -> String {
    format!("{conv}/{turn:06}")
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialise")
}

/// A stored record. The error names where the record stops reading, never what it holds:
/// serde's messages quote the value they could not take, here a question, a title or a comment
/// (session 43's review: they reached the log).
fn parse<T: for<'a> Deserialize<'a>>(b: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(b).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Io => "cannot be read",
            serde_json::error::Category::Syntax => "is not JSON",
            serde_json::error::Category::Data => "does not have the expected fields",
            serde_json::error::Category::Eof => "is cut short",
        };
        StoreError(format!(
            "a stored record {what} (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

/// A stored usage counter; one that cannot be read counts as nothing, and the next write
/// replaces it (a review: one damaged counter failed every write of usage, everyone's, since
/// the counters that failed are written again with each request, and every answer with a model
/// failed with it).
fn readable_usage(key: &str, stored: &[u8]) -> UsageCounts {
    parse(stored).unwrap_or_else(|e| {
        tracing::warn!(
            counter = %crate::guardrail::pii::for_log(key),
            error = %e,
            "an unreadable usage counter counts as nothing and is replaced"
        );
        UsageCounts::default()
    })
}

/// A new random conversation id (128 bits, hex).
/// The most conversations one owner holds; a new one beyond replaces the least recently
/// updated.
pub const MAX_CONVERSATIONS_PER_OWNER: usize = 10_000;

pub fn new_id() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the OS random source works");
    hex::encode(b)
}

pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// A turn record, or `None` (logged) when it cannot be read.
fn readable_turn(bytes: &[u8]) -> Option<TurnRecord> {
    parse(bytes)
        .inspect_err(|e| tracing::warn!(error = %e, "a conversation turn cannot be read"))
        .ok()
}

/// What stands in for a turn that cannot be read: no question, no answer, nothing cited.
fn unreadable_turn() -> TurnRecord {
    TurnRecord {
        question: String::new(),
        rewritten: String::new(),
        answer: String::new(),
        sentences: Vec::new(),
        citations: Vec::new(),
        status: "no_answer".into(),
        mode: String::new(),
        prompt_tokens: 0,
        completion_tokens: 0,
        time_ms: 0,
        evidence_keys: Vec::new(),
    }
}

/// What the retention leaves in a turn's place: nothing asked, answered or cited, no time,
/// status [`EXPIRED`]. The place stays: feedback and clients name turns by their number.
fn expired_turn() -> TurnRecord {
    TurnRecord {
        status: EXPIRED.into(),
        ..unreadable_turn()
    }
}

/// `YYYY-MM-DD` (UTC) of a time in Unix milliseconds.
pub fn day_of(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
            && !dir.exists()
        {
            crate::index::private_dir(dir).map_err(err)?;
        }
        let db = Database::create(path).map_err(err)?;
        // Questions and answers quote documents: the daemon's account alone reads them.
        {
            use std::os::unix::fs::PermissionsExt;
            if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
                tracing::warn!(path = %path.display(), error = %e, "cannot make the conversation store private to the daemon's account");
            }
        }
        let tx = db.begin_write().map_err(err)?;
        {
            tx.open_table(CONVERSATIONS).map_err(err)?;
            tx.open_table(TURNS).map_err(err)?;
            tx.open_table(BY_OWNER).map_err(err)?;
            tx.open_table(FEEDBACK).map_err(err)?;
            tx.open_table(USAGE).map_err(err)?;
            tx.open_table(ABSENT).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(Self {
            db,
            failing: Default::default(),
            unwritten: Default::default(),
            max_per_owner: MAX_CONVERSATIONS_PER_OWNER,
            max_turns: crate::assistant::MAX_CONVERSATION_TURNS,
        })
    }

    /// The same store keeping at most `n` turns per conversation (tests).
    #[cfg(test)]
    pub fn with_max_turns(mut self, n: u32) -> Self {
        self.max_turns = n;
        self
    }

    /// The same store holding at most `n` conversations per owner (tests).
    #[cfg(test)]
    pub fn with_max_per_owner(mut self, n: usize) -> Self {
        self.max_per_owner = n.max(1);
        self
    }

    /// From now on every write fails, as on a full disk: lets tests see that an answer already
    /// given is still audited when its turn cannot be stored. Not for production use.
    #[doc(hidden)]
    pub fn fail_writes(&self) {
        self.failing
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn begin_write(&self) -> Result<redb::WriteTransaction, StoreError> {
        if self.failing.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(StoreError(
                "the conversation store cannot be written".into(),
            ));
        }
        self.db.begin_write().map_err(err)
    }

    /// The conversation if `owner` owns it; anyone else gets `None`, exactly as for an unknown id.
    pub fn conversation(
        &self,
        owner: &str,
        id: &str,
    ) -> Result<Option<ConversationRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(CONVERSATIONS).map_err(err)?;
        let Some(v) = t.get(id).map_err(err)? else {
            return Ok(None);
        };
        let c: ConversationRecord = parse(v.value())?;
        Ok((c.owner == owner).then_some(c))
    }

    /// Starts a conversation for `owner`. An owner holding [`MAX_CONVERSATIONS_PER_OWNER`]
    /// already loses the least recently updated one first (an audience's, such as a Slack
    /// channel's threads, grows with every thread; retention alone bounded it only in time).
    pub fn create(&self, owner: &str, title: &str) -> Result<ConversationRecord, StoreError> {
        self.start(owner, title, None)
    }

    /// Starts a conversation for `owner` holding `first` as its turn 0, in one transaction
    /// (session 43: created, then appended to in a second one, a failure between the two left
    /// an empty conversation behind). Returns its id.
    pub fn create_with_turn(&self, owner: &str, first: &TurnRecord) -> Result<String, StoreError> {
        self.start(owner, "", Some(first)).map(|c| c.id)
    }

    fn start(
        &self,
        owner: &str,
        title: &str,
        first: Option<&TurnRecord>,
    ) -> Result<ConversationRecord, StoreError> {
        let now = now_ms();
        let mut c = ConversationRecord {
            id: new_id(),
            owner: owner.to_string(),
            title: title.to_string(),
            created_ms: now,
            updated_ms: now,
            turns: 0,
            expired_turns: 0,
            kept_from_ms: 0,
        };
        if let Some(t) = first {
            c.turns = 1;
            c.updated_ms = t.time_ms;
            if c.title.is_empty() {
                c.title = t.question.clone();
            }
        }
        let tx = self.begin_write()?;
        // Counted and trimmed in the transaction that adds it (session 43: counted before it,
        // concurrent starts all saw room and together passed the cap).
        self.make_room(&tx, owner)?;
        {
            tx.open_table(CONVERSATIONS)
                .map_err(err)?
                .insert(c.id.as_str(), json(&c).as_slice())
                .map_err(err)?;
            tx.open_table(BY_OWNER)
                .map_err(err)?
                .insert(format!("{owner}\0{}", c.id).as_str(), ())
                .map_err(err)?;
            if let Some(t) = first {
                tx.open_table(TURNS)
                    .map_err(err)?
                    .insert(turn_key(&c.id, 0).as_str(), json(t).as_slice())
                    .map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        Ok(c)
    }

    /// In `tx`, removes `owner`'s least recently updated conversations until one more fits
    /// under the cap. An index entry whose record is gone or another owner's is dropped alone;
    /// a record that cannot be read is neither counted nor removed (as in [`Store::list`]).
    fn make_room(&self, tx: &redb::WriteTransaction, owner: &str) -> Result<(), StoreError> {
        let (lo, hi) = (format!("{owner}\0"), format!("{owner}\u{1}"));
        // Index entries first (cheap): under the cap, nothing to read.
        let entries = tx
            .open_table(BY_OWNER)
            .map_err(err)?
            .range(lo.as_str()..hi.as_str())
            .map_err(err)?
            .count();
        if entries < self.max_per_owner {
            return Ok(());
        }
        let mut held = Vec::new();
        let mut stray = Vec::new();
        {
            let idx = tx.open_table(BY_OWNER).map_err(err)?;
            let convs = tx.open_table(CONVERSATIONS).map_err(err)?;
            for e in idx.range(lo.as_str()..hi.as_str()).map_err(err)? {
                let (k, _) = e.map_err(err)?;
                let id = k.value().split('\0').nth(1).unwrap_or("").to_string();
                match convs.get(id.as_str()).map_err(err)? {
                    Some(v) => match parse::<ConversationRecord>(v.value()) {
                        Ok(c) if c.owner == owner => held.push((c.updated_ms, id)),
                        Ok(_) => stray.push(id),
                        Err(_) => {}
                    },
                    None => stray.push(id),
                }
            }
        }
        if !stray.is_empty() {
            let mut idx = tx.open_table(BY_OWNER).map_err(err)?;
            for id in &stray {
                idx.remove(format!("{owner}\0{id}").as_str()).map_err(err)?;
            }
        }
        if held.len() < self.max_per_owner {
            return Ok(());
        }
        held.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for (_, id) in held.iter().skip(self.max_per_owner - 1) {
            remove_in(tx, owner, id)?;
        }
        Ok(())
    }

    /// Appends a turn to one of `owner`'s conversations; returns its index, or `None` when the
    /// conversation is not theirs, is gone, or is full.
    pub fn append(
        &self,
        owner: &str,
        id: &str,
        turn: &TurnRecord,
    ) -> Result<Option<u32>, StoreError> {
        let tx = self.begin_write()?;
        let n = {
            let mut convs = tx.open_table(CONVERSATIONS).map_err(err)?;
            let Some(v) = convs.get(id).map_err(err)?.map(|v| v.value().to_vec()) else {
                return Ok(None);
            };
            let mut c: ConversationRecord = parse(&v)?;
            if c.owner != owner {
                return Ok(None);
            }
            // A full conversation keeps no more (session 43: the cap was checked only before
            // the answer, so concurrent follow-ups could pass it).
            if c.turns >= self.max_turns {
                tracing::info!(
                    turns = c.turns,
                    "a turn past the conversation's limit is not kept (a follow-up asked at the same time filled it)"
                );
                return Ok(None);
            }
            let n = c.turns;
            // A follow-up's rewrite was built from the turns before it, read before its answer:
            // where the retention has emptied one of those since, the rewrite may hold its
            // question, and is not kept (a review).
            let window = u32::try_from(crate::assistant::EARLIER_TURNS_READ).unwrap_or(u32::MAX);
            let stale = c.expired_turns > 0
                && c.expired_turns.saturating_add(window) > n
                && !turn.rewritten.is_empty();
            let cleared;
            let turn = match stale {
                true => {
                    cleared = TurnRecord {
                        rewritten: String::new(),
                        ..turn.clone()
                    };
                    &cleared
                }
                false => turn,
            };
            c.turns += 1;
            c.updated_ms = turn.time_ms;
            // Kept whole: the title is cut for display only after redaction, which a cut
            // through an account number would defeat.
            if c.title.is_empty() {
                c.title = turn.question.clone();
            }
            convs.insert(id, json(&c).as_slice()).map_err(err)?;
            tx.open_table(TURNS)
                .map_err(err)?
                .insert(turn_key(id, n).as_str(), json(turn).as_slice())
                .map_err(err)?;
            n
        };
        tx.commit().map_err(err)?;
        Ok(Some(n))
    }

    /// The turns of conversation `id`. One that cannot be read is an empty turn in its place,
    /// logged (a review: one damaged turn failed every read of its conversation; a second:
    /// left out, it moved the numbers of the turns after it, which feedback names).
    pub fn turns(&self, id: &str) -> Result<Vec<TurnRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(TURNS).map_err(err)?;
        let (lo, hi) = (format!("{id}/"), format!("{id}0"));
        let mut out = Vec::new();
        for e in t.range(lo.as_str()..hi.as_str()).map_err(err)? {
            let (_, v) = e.map_err(err)?;
            out.push(readable_turn(v.value()).unwrap_or_else(unreadable_turn));
        }
        Ok(out)
    }

    /// The last `n` turns of conversation `id`, oldest first (a follow-up reads these, not the
    /// whole conversation).
    pub fn last_turns(&self, id: &str, n: usize) -> Result<Vec<TurnRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(TURNS).map_err(err)?;
        let (lo, hi) = (format!("{id}/"), format!("{id}0"));
        let mut out = Vec::new();
        for e in t
            .range(lo.as_str()..hi.as_str())
            .map_err(err)?
            .rev()
            .take(n)
        {
            let (_, v) = e.map_err(err)?;
            out.extend(readable_turn(v.value()));
        }
        out.reverse();
        Ok(out)
    }

    /// One turn; one that cannot be read is the empty turn [`Self::turns`] shows in its place
    /// (a review: feedback on it was an internal error).
    pub fn turn(&self, id: &str, turn: u32) -> Result<Option<TurnRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(TURNS).map_err(err)?;
        Ok(t.get(turn_key(id, turn).as_str())
            .map_err(err)?
            .map(|v| readable_turn(v.value()).unwrap_or_else(unreadable_turn)))
    }

    /// `owner`'s conversations, most recently updated first.
    pub fn list(&self, owner: &str) -> Result<Vec<ConversationRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let idx = tx.open_table(BY_OWNER).map_err(err)?;
        let convs = tx.open_table(CONVERSATIONS).map_err(err)?;
        let (lo, hi) = (format!("{owner}\0"), format!("{owner}\u{1}"));
        let mut out = Vec::new();
        for e in idx.range(lo.as_str()..hi.as_str()).map_err(err)? {
            let (k, _) = e.map_err(err)?;
            let id = k.value().split('\0').nth(1).unwrap_or("").to_string();
            if let Some(v) = convs.get(id.as_str()).map_err(err)? {
                // One record that does not read (written by a newer version, damaged) hides
                // itself, not the owner's other conversations; and the index entry alone does
                // not make a conversation the owner's.
                match parse::<ConversationRecord>(v.value()) {
                    Ok(c) if c.owner == owner => out.push(c),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "a conversation record cannot be read; left out of its owner's list");
                    }
                }
            }
        }
        out.sort_by(|a, b| b.updated_ms.cmp(&a.updated_ms).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Deletes one of `owner`'s conversations with its turns and feedback; false when it is not
    /// theirs (or does not exist).
    pub fn delete(&self, owner: &str, id: &str) -> Result<bool, StoreError> {
        if self.conversation(owner, id)?.is_none() {
            return Ok(false);
        }
        self.remove(owner, id, None)
    }

    /// Removes a conversation with its turns and feedback; with `stale_before`, only if it
    /// was not updated since (checked in the same transaction: a turn appended after the
    /// caller looked keeps it). True when removed.
    fn remove(&self, owner: &str, id: &str, stale_before: Option<i64>) -> Result<bool, StoreError> {
        let tx = self.begin_write()?;
        if let Some(cutoff) = stale_before {
            let convs = tx.open_table(CONVERSATIONS).map_err(err)?;
            let Some(v) = convs.get(id).map_err(err)?.map(|v| v.value().to_vec()) else {
                return Ok(false);
            };
            if parse::<ConversationRecord>(&v)?.updated_ms >= cutoff {
                return Ok(false);
            }
        }
        remove_in(&tx, owner, id)?;
        tx.commit().map_err(err)?;
        Ok(true)
    }

    /// Deletes usage counters of days before `first_day` (`YYYY-MM-DD`); returns how many
    /// (a review: one record per principal and day was kept for ever).
    pub fn expire_usage(&self, first_day: &str) -> Result<usize, StoreError> {
        let tx = self.begin_write()?;
        let mut n = 0;
        {
            let mut t = tx.open_table(USAGE).map_err(err)?;
            t.retain_in(..first_day, |_, _| {
                n += 1;
                false
            })
            .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(n)
    }

    /// Deletes conversations not updated since `cutoff_ms`, and empties the turns asked
    /// before it in the others ([`Self::expire_turns`]); returns how many conversations were
    /// deleted.
    pub fn expire(&self, cutoff_ms: i64) -> Result<usize, StoreError> {
        let (old, aging): (Vec<ConversationRecord>, Vec<ConversationRecord>) = {
            let tx = self.db.begin_read().map_err(err)?;
            let t = tx.open_table(CONVERSATIONS).map_err(err)?;
            let (mut v, mut aging) = (Vec::new(), Vec::new());
            let mut unreadable = 0usize;
            for e in t.iter().map_err(err)? {
                let (_, c) = e.map_err(err)?;
                // One record that does not read must not stop retention for everyone else.
                match parse::<ConversationRecord>(c.value()) {
                    Ok(c) if c.updated_ms < cutoff_ms => v.push(c),
                    Ok(c)
                        if c.expired_turns < c.turns
                            && c.created_ms.max(c.kept_from_ms) < cutoff_ms =>
                    {
                        aging.push(c)
                    }
                    Ok(_) => {}
                    Err(_) => unreadable += 1,
                }
            }
            if unreadable > 0 {
                tracing::warn!(
                    unreadable,
                    "conversation records that cannot be read were not expired"
                );
            }
            (v, aging)
        };
        let mut removed = 0;
        for c in &old {
            removed += usize::from(self.remove(&c.owner, &c.id, Some(cutoff_ms))?);
        }
        for c in &aging {
            self.expire_turns(&c.id, cutoff_ms)?;
        }
        Ok(removed)
    }

    /// Deletes the conversations of owners whose identity has been gone for `grace_ms`:
    /// an owner is an identity id, or `<user> via <service>` ([`crate::identity::Caller::
    /// conversation_owner`]), and it is gone when `exists` denies the user (an audience,
    /// `everyone` or `group:<id>`, always exists) or the service. An id given later to someone
    /// else must not hand them the questions and answers of the one who held it (session 42's
    /// note); the grace keeps a person a reload left out for a while (an export cut short).
    /// When an owner's identity is first seen gone is kept in the store; one back before the
    /// grace ends starts over. Returns how many conversations were deleted.
    pub fn expire_absent(
        &self,
        exists: &dyn Fn(&str) -> bool,
        now_ms: i64,
        grace_ms: i64,
    ) -> Result<usize, StoreError> {
        let gone = |owner: &str| {
            let (user, service) = match owner.split_once(" via ") {
                Some((u, s)) => (u, Some(s)),
                None => (owner, None),
            };
            (crate::identity::Audience::parse(user).is_none() && !exists(user))
                || service.is_some_and(|s| !exists(s))
        };
        let (owners, marked) = {
            let tx = self.db.begin_read().map_err(err)?;
            let mut owners: std::collections::BTreeMap<String, Vec<String>> = Default::default();
            for e in tx.open_table(BY_OWNER).map_err(err)?.iter().map_err(err)? {
                let (k, _) = e.map_err(err)?;
                if let Some((owner, id)) = k.value().split_once('\0') {
                    owners
                        .entry(owner.to_string())
                        .or_default()
                        .push(id.to_string());
                }
            }
            let mut marked = std::collections::BTreeMap::new();
            for e in tx.open_table(ABSENT).map_err(err)?.iter().map_err(err)? {
                let (k, v) = e.map_err(err)?;
                marked.insert(k.value().to_string(), v.value());
            }
            (owners, marked)
        };
        // Most owners gone at once is an identity source cut short (an export that lost its
        // users but still reads), not people leaving: no clock starts (a review: a week of
        // such an export deleted everyone's conversations).
        let newly: Vec<&String> = owners
            .keys()
            .filter(|o| !marked.contains_key(*o) && gone(o))
            .collect();
        let outage = newly.len() >= MASS_ABSENCE_MIN && newly.len() * 2 > owners.len();
        if outage {
            tracing::warn!(
                gone = newly.len(),
                owners = owners.len(),
                "most conversation owners are missing from the identities: an identity source \
                 is probably incomplete; no conversation is scheduled for deletion"
            );
        } else if !newly.is_empty() {
            tracing::info!(
                gone = newly.len(),
                grace_days = grace_ms / 86_400_000,
                "conversation owners whose identity is gone: their conversations are deleted \
                 if it does not come back within the grace"
            );
        }
        let tx = self.begin_write()?;
        let mut removed = 0;
        {
            let mut absent = tx.open_table(ABSENT).map_err(err)?;
            for owner in marked.keys() {
                // Back, or nothing left of theirs: forgotten.
                if !owners.contains_key(owner) || !gone(owner) {
                    absent.remove(owner.as_str()).map_err(err)?;
                }
            }
            for (owner, ids) in &owners {
                if !gone(owner) {
                    continue;
                }
                match marked.get(owner) {
                    Some(&since) if now_ms - since >= grace_ms => {
                        for id in ids {
                            remove_in(&tx, owner, id)?;
                            removed += 1;
                        }
                        absent.remove(owner.as_str()).map_err(err)?;
                    }
                    Some(_) => {}
                    None if outage => {}
                    None => {
                        absent.insert(owner.as_str(), now_ms).map_err(err)?;
                    }
                }
            }
        }
        tx.commit().map_err(err)?;
        Ok(removed)
    }

    /// Empties the turns of conversation `id` asked before `cutoff_ms` (the first ones: turns
    /// are appended in time order) in one transaction: each becomes an [`expired_turn`] and
    /// its feedback (which holds the question) goes. The title, the first question, becomes
    /// the first kept one. A turn that cannot be read is emptied too (its time is unknown, and
    /// it must not hold the retention back). Returns how many turns were emptied.
    fn expire_turns(&self, id: &str, cutoff_ms: i64) -> Result<u32, StoreError> {
        let tx = self.begin_write()?;
        let emptied = {
            let mut convs = tx.open_table(CONVERSATIONS).map_err(err)?;
            let Some(v) = convs.get(id).map_err(err)?.map(|v| v.value().to_vec()) else {
                return Ok(0);
            };
            let mut c: ConversationRecord = parse(&v)?;
            let mut turns = tx.open_table(TURNS).map_err(err)?;
            let mut feedback = tx.open_table(FEEDBACK).map_err(err)?;
            let mut kept = None;
            let first = c.expired_turns;
            while c.expired_turns < c.turns {
                let key = turn_key(id, c.expired_turns);
                let t = turns
                    .get(key.as_str())
                    .map_err(err)?
                    .and_then(|v| readable_turn(v.value()));
                if let Some(t) = t.filter(|t| t.time_ms >= cutoff_ms) {
                    kept = Some(t);
                    break;
                }
                turns
                    .insert(key.as_str(), json(&expired_turn()).as_slice())
                    .map_err(err)?;
                let (lo, hi) = (format!("{key}/"), format!("{key}0"));
                feedback
                    .retain_in(lo.as_str()..hi.as_str(), |_, _| false)
                    .map_err(err)?;
                c.expired_turns += 1;
            }
            let emptied = c.expired_turns - first;
            if emptied > 0 {
                c.title = kept
                    .as_ref()
                    .map(|t| t.question.clone())
                    .unwrap_or_default();
                // A follow-up's rewrite carries the questions before it, and the next one's
                // carries that rewrite on: every kept turn's goes (a review: the emptied
                // questions lived on in them, and in the follow-ups built from them).
                for n in c.expired_turns..c.turns {
                    let key = turn_key(id, n);
                    let t = turns
                        .get(key.as_str())
                        .map_err(err)?
                        .and_then(|v| readable_turn(v.value()));
                    if let Some(mut t) = t.filter(|t| !t.rewritten.is_empty()) {
                        t.rewritten.clear();
                        turns
                            .insert(key.as_str(), json(&t).as_slice())
                            .map_err(err)?;
                    }
                }
            }
            c.kept_from_ms = kept.map_or(cutoff_ms, |t| t.time_ms);
            convs.insert(id, json(&c).as_slice()).map_err(err)?;
            emptied
        };
        tx.commit().map_err(err)?;
        Ok(emptied)
    }

    /// Returns `false`, writing nothing, when the conversation is gone or not the voter's
    /// (checked in the same transaction: a deletion or the retention committing between the
    /// caller's check and this write left a record nothing removes; a review).
    /// Writes feedback on a turn of `owner`'s conversation ([`crate::identity::Caller::conversation_owner`];
    /// the voter is `f.identity`); false when the conversation is gone or not `owner`'s.
    pub fn put_feedback(&self, owner: &str, f: &FeedbackRecord) -> Result<bool, StoreError> {
        let key = format!("{}/{}", turn_key(&f.conversation_id, f.turn), f.identity);
        let tx = self.begin_write()?;
        {
            let convs = tx.open_table(CONVERSATIONS).map_err(err)?;
            // Nor on a turn the retention emptied, or one not written: checked here, in the
            // transaction that writes (a review: a vote racing the retention kept the question
            // of a turn it had emptied, and later runs start past it).
            let owned = match convs.get(f.conversation_id.as_str()).map_err(err)? {
                Some(v) => {
                    let c = parse::<ConversationRecord>(v.value())?;
                    c.owner == owner && (c.expired_turns..c.turns).contains(&f.turn)
                }
                None => false,
            };
            if !owned {
                return Ok(false);
            }
        }
        tx.open_table(FEEDBACK)
            .map_err(err)?
            .insert(key.as_str(), json(f).as_slice())
            .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(true)
    }

    /// One page of feedback records in key order (by conversation, turn, then voter), after
    /// the key `after`: at most `limit` records and, past the first, about `max_bytes` of them.
    /// Returns the page and the last key read when more may follow.
    pub fn feedback_page(
        &self,
        after: Option<&str>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<FeedbackRecord>, Option<String>), StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(FEEDBACK).map_err(err)?;
        let range = match after {
            Some(k) => t.range::<&str>((std::ops::Bound::Excluded(k), std::ops::Bound::Unbounded)),
            None => t.range::<&str>(..),
        }
        .map_err(err)?;
        let (mut out, mut bytes, mut last, mut read) = (Vec::new(), 0usize, None, 0usize);
        for e in range {
            // Damaged records are passed over within the page, up to a bound on the records
            // read (a page comes back empty only past it).
            if out.len() >= limit.max(1)
                || (!out.is_empty() && bytes >= max_bytes)
                || read >= limit.max(1).saturating_mul(8).saturating_add(64)
            {
                return Ok((out, last));
            }
            read += 1;
            let (k, v) = e.map_err(err)?;
            bytes += v.value().len();
            // One damaged record is left out, and the page goes on past it (a review: it
            // failed every page that reached it, so no record after it could be exported).
            match parse(v.value()) {
                Ok(f) => out.push(f),
                Err(e) => {
                    tracing::warn!(error = %e, "a feedback record that cannot be read was left out of the export")
                }
            }
            last = Some(k.value().to_string());
        }
        Ok((out, None))
    }

    /// Adds a request's tokens to today's counters of each principal (`user:<id>`,
    /// `group:<name>`).
    pub fn add_usage(
        &self,
        principals: &[String],
        prompt: u64,
        completion: u64,
    ) -> Result<(), StoreError> {
        let day = day_of(now_ms());
        let lock = || self.unwritten.lock().unwrap_or_else(|e| e.into_inner());
        // Taken out to be written: the lock is not held over the write (a quota check reading
        // usage would wait on it).
        let mut pending = std::mem::take(&mut *lock());
        for p in principals {
            let u = pending.entry(format!("{day}\0{p}")).or_default();
            u.add(&UsageCounts {
                prompt,
                completion,
                requests: 1,
            });
        }
        if let Err(e) = self.write_usage(&pending) {
            let mut unwritten = lock();
            for (key, u) in pending {
                unwritten.entry(key).or_default().add(&u);
            }
            return Err(e);
        }
        Ok(())
    }

    /// Adds `usage` (by counter key) to the stored counters, in one transaction.
    fn write_usage(
        &self,
        usage: &std::collections::HashMap<String, UsageCounts>,
    ) -> Result<(), StoreError> {
        let tx = self.begin_write()?;
        {
            let mut t = tx.open_table(USAGE).map_err(err)?;
            for (key, add) in usage {
                let mut u: UsageCounts = match t.get(key.as_str()).map_err(err)? {
                    Some(v) => readable_usage(key, v.value()),
                    None => UsageCounts::default(),
                };
                u.add(add);
                t.insert(key.as_str(), json(&u).as_slice()).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Today's counters of one principal.
    pub fn usage_today(&self, principal: &str) -> Result<UsageCounts, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(USAGE).map_err(err)?;
        let key = format!("{}\0{principal}", day_of(now_ms()));
        let mut u: UsageCounts = t
            .get(key.as_str())
            .map_err(err)?
            .map(|v| readable_usage(&key, v.value()))
            .unwrap_or_default();
        if let Some(more) = self
            .unwritten
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            u.add(more);
        }
        Ok(u)
    }

    /// Totals per principal over the days from `first_day` (inclusive, `YYYY-MM-DD`).
    pub fn usage_since(&self, first_day: &str) -> Result<Vec<(String, UsageCounts)>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(USAGE).map_err(err)?;
        let mut totals: std::collections::BTreeMap<String, UsageCounts> = Default::default();
        for e in t.range(first_day..).map_err(err)? {
            let (k, v) = e.map_err(err)?;
            let Some((_, principal)) = k.value().split_once('\0') else {
                continue;
            };
            // One damaged counter counts as nothing, as for writes and quota checks (a review:
            // it failed the whole report); the write path replaces and logs it.
            let u: UsageCounts = parse(v.value()).unwrap_or_default();
            let s = totals.entry(principal.to_string()).or_default();
            s.prompt = s.prompt.saturating_add(u.prompt);
            s.completion = s.completion.saturating_add(u.completion);
            s.requests = s.requests.saturating_add(u.requests);
        }
        Ok(totals.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by a review: an owner's conversations were bounded only by retention, and every
    /// ListConversations read (and redacted) all of them.
    #[test]
    fn an_owner_past_the_limit_loses_the_least_recently_updated_conversation() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb"))
            .unwrap()
            .with_max_per_owner(3);
        let ids: Vec<String> = (0..3)
            .map(|i| {
                let c = store.create("everyone", &format!("q{i}")).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(3));
                c.id
            })
            .collect();
        // The first is touched last: the second is now the least recently updated.
        let turn = turn("q");
        store.append("everyone", &ids[0], &turn).unwrap();
        store.create("everyone", "q3").unwrap();
        let left: Vec<String> = store
            .list("everyone")
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(left.len(), 3, "{left:?}");
        assert!(!left.contains(&ids[1]), "{left:?}");
        assert!(left.contains(&ids[0]) && left.contains(&ids[2]));
        assert!(store.create("alice", "mine").is_ok(), "per owner");
        assert_eq!(store.list("alice").unwrap().len(), 1);
    }

    /// Session 43's review: a record that does not read says where, not what it holds.
    #[test]
    fn a_record_that_does_not_read_is_not_quoted() {
        let e = parse::<TurnRecord>(br#"{"question": "my salary is 148,000", "answer": 7}"#)
            .unwrap_err()
            .to_string();
        assert!(!e.contains("salary") && !e.contains("148"), "{e}");
        assert!(e.contains("expected fields"), "{e}");
    }

    /// Session 43: the cap was counted before the writing transaction, so starts at the same
    /// moment all saw room. Counted inside it, they never pass it.
    #[test]
    fn concurrent_starts_never_pass_the_per_owner_cap() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(
            Store::open(&dir.path().join("s.redb"))
                .unwrap()
                .with_max_per_owner(2),
        );
        let go = std::sync::Arc::new(std::sync::Barrier::new(12));
        let threads: Vec<_> = (0..12)
            .map(|i| {
                let (store, go) = (store.clone(), go.clone());
                std::thread::spawn(move || {
                    go.wait();
                    if i % 2 == 0 {
                        store.create("everyone", "").unwrap();
                    } else {
                        store.create_with_turn("everyone", &turn("q")).unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(store.list("everyone").unwrap().len(), 2);
        let tx = store.db.begin_read().unwrap();
        let idx = tx.open_table(BY_OWNER).unwrap();
        assert_eq!(idx.iter().unwrap().count(), 2, "index entries too");
    }

    #[test]
    fn a_conversation_started_with_its_first_turn_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let first = turn("first?");
        let id = store.create_with_turn("alice", &first).unwrap();
        let c = store.conversation("alice", &id).unwrap().unwrap();
        assert_eq!((c.turns, c.title.as_str()), (1, "first?"));
        assert_eq!(c.updated_ms, first.time_ms);
        assert_eq!(store.turns(&id).unwrap(), vec![first]);
        assert_eq!(
            store.append("alice", &id, &turn("second?")).unwrap(),
            Some(1)
        );
    }

    /// Session 43: the turn cap was checked only before the answer; the append now refuses a
    /// turn past it.
    #[test]
    fn a_full_conversation_keeps_no_more_turns() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb"))
            .unwrap()
            .with_max_turns(2);
        let id = store.create_with_turn("alice", &turn("1")).unwrap();
        assert_eq!(store.append("alice", &id, &turn("2")).unwrap(), Some(1));
        assert_eq!(store.append("alice", &id, &turn("3")).unwrap(), None);
        assert_eq!(store.turns(&id).unwrap().len(), 2);
        assert_eq!(store.conversation("alice", &id).unwrap().unwrap().turns, 2);
    }

    /// Session 42's note: retention deleted whole conversations once quiet, so one added to
    /// every day kept its first questions, answers and feedback for ever.
    #[test]
    fn retention_empties_the_old_turns_of_a_conversation_still_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        // Times after the conversation's creation (now).
        let base = now_ms();
        let at = |q: &str, ms: i64| TurnRecord {
            time_ms: base + ms,
            ..turn(q)
        };
        let c = store.create("alice", "").unwrap();
        for (q, ms) in [
            ("salary of bob?", 1_000),
            ("and carol?", 2_000),
            ("vpn?", 5_000),
        ] {
            let mut t = at(q, ms);
            // A follow-up's rewrite holds the questions before it.
            if ms > 1_000 {
                t.rewritten = format!("salary of bob? {q}");
            }
            store.append("alice", &c.id, &t).unwrap();
        }
        let vote = |n: u32| alice_votes(&c.id, n, "salary of bob?");
        assert!(store.put_feedback("alice", &vote(0)).unwrap());
        assert!(store.put_feedback("alice", &vote(2)).unwrap());
        // Created before the cutoff, last asked after it: kept, its first two turns emptied.
        assert_eq!(store.expire(base + 3_000).unwrap(), 0);
        let turns = store.turns(&c.id).unwrap();
        assert_eq!(turns.len(), 3, "the places stay");
        for t in &turns[..2] {
            assert_eq!(
                (
                    t.status.as_str(),
                    t.question.as_str(),
                    t.answer.as_str(),
                    t.time_ms
                ),
                (EXPIRED, "", "", 0)
            );
        }
        assert_eq!(turns[2].question, "vpn?");
        assert_eq!(turns[2].rewritten, "", "it carried an emptied question");
        let conv = store.conversation("alice", &c.id).unwrap().unwrap();
        assert_eq!((conv.title.as_str(), conv.expired_turns), ("vpn?", 2));
        let (votes, _) = store.feedback_page(None, 10, 1 << 20).unwrap();
        assert_eq!(votes.iter().map(|f| f.turn).collect::<Vec<_>>(), [2]);
        // A vote on an emptied turn (one racing the retention) is not written.
        assert!(!store.put_feedback("alice", &vote(1)).unwrap());
        // The next turn takes the next number; a later run reads on from the kept turn. Its
        // rewrite was built before the retention ran and may hold an emptied question: not
        // kept.
        let late = TurnRecord {
            rewritten: "salary of bob? next?".into(),
            ..at("next?", 6_000)
        };
        assert_eq!(store.append("alice", &c.id, &late).unwrap(), Some(3));
        assert_eq!(store.turns(&c.id).unwrap()[3].rewritten, "");
        assert_eq!(store.expire(base + 5_500).unwrap(), 0);
        let turns = store.turns(&c.id).unwrap();
        assert_eq!(
            turns.iter().map(|t| t.status.as_str()).collect::<Vec<_>>(),
            [EXPIRED, EXPIRED, EXPIRED, "answered"]
        );
        assert_eq!(
            store.conversation("alice", &c.id).unwrap().unwrap().title,
            "next?"
        );
    }

    /// Session 42's note: conversations were keyed by identity id alone, so an id given to a
    /// new person (a recycled user name) handed them the old holder's conversations.
    #[test]
    fn the_conversations_of_an_identity_gone_past_the_grace_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let mine = store
            .create_with_turn("jsmith", &turn("my salary?"))
            .unwrap();
        let via = store
            .create_with_turn("jsmith via slack", &turn("vpn?"))
            .unwrap();
        let channel = store
            .create_with_turn("everyone via slack", &turn("holidays?"))
            .unwrap();
        let other = store.create_with_turn("alice", &turn("q")).unwrap();
        let present = |ids: &'static [&'static str]| move |id: &str| ids.contains(&id);
        const HOUR: i64 = 3_600_000;
        let all = present(&["alice", "slack"]);
        // First seen gone: marked, nothing deleted.
        assert_eq!(store.expire_absent(&all, 0, 24 * HOUR).unwrap(), 0);
        // Back within the grace (an export cut short), then gone again: the clock starts over.
        let back = present(&["alice", "slack", "jsmith"]);
        assert_eq!(store.expire_absent(&back, 2 * HOUR, 24 * HOUR).unwrap(), 0);
        assert_eq!(store.expire_absent(&all, 20 * HOUR, 24 * HOUR).unwrap(), 0);
        assert_eq!(store.expire_absent(&all, 30 * HOUR, 24 * HOUR).unwrap(), 0);
        assert!(store.conversation("jsmith", &mine).unwrap().is_some());
        // Past the grace: both of jsmith's go; the channel's and alice's stay.
        assert_eq!(store.expire_absent(&all, 44 * HOUR, 24 * HOUR).unwrap(), 2);
        assert!(store.list("jsmith").unwrap().is_empty());
        assert!(store.list("jsmith via slack").unwrap().is_empty());
        assert!(store.turns(&via).unwrap().is_empty());
        assert!(
            store
                .conversation("everyone via slack", &channel)
                .unwrap()
                .is_some()
        );
        assert!(store.conversation("alice", &other).unwrap().is_some());
        // Most owners gone at once is an incomplete identity source: no clock starts.
        let many = dir.path().join("many.redb");
        let crowd = Store::open(&many).unwrap();
        for i in 0..6 {
            crowd
                .create_with_turn(&format!("p{i}"), &turn("q"))
                .unwrap();
        }
        let nobody = |_: &str| false;
        assert_eq!(crowd.expire_absent(&nobody, 0, HOUR).unwrap(), 0);
        assert_eq!(crowd.expire_absent(&nobody, 10 * HOUR, HOUR).unwrap(), 0);
        assert_eq!(crowd.list("p0").unwrap().len(), 1);
        // The service gone takes what it held for others.
        let no_slack = present(&["alice", "jsmith"]);
        store
            .expire_absent(&no_slack, 50 * HOUR, 24 * HOUR)
            .unwrap();
        assert_eq!(
            store
                .expire_absent(&no_slack, 75 * HOUR, 24 * HOUR)
                .unwrap(),
            1
        );
        assert!(store.conversation("alice", &other).unwrap().is_some());
    }

    /// Alice's vote up on turn `turn` of conversation `id`, recording `question`.
    fn alice_votes(id: &str, turn: u32, question: &str) -> FeedbackRecord {
        FeedbackRecord {
            conversation_id: id.to_string(),
            turn,
            identity: "alice".into(),
            up: true,
            reasons: Vec::new(),
            comment: String::new(),
            time_ms: now_ms(),
            question: question.into(),
            documents: Vec::new(),
        }
    }

    fn turn(q: &str) -> TurnRecord {
        TurnRecord {
            question: q.into(),
            rewritten: String::new(),
            answer: "a".into(),
            sentences: vec![],
            citations: vec![],
            status: "answered".into(),
            mode: "extractive".into(),
            prompt_tokens: 0,
            completion_tokens: 0,
            time_ms: now_ms(),
            evidence_keys: Vec::new(),
        }
    }

    /// Usage a full disk kept from being written still counts against the budget, and is
    /// written once the store takes writes again (found by a review: every budget opened).
    /// Found by a review: one record that did not read stopped retention for every user, and
    /// hid its owner's other conversations.
    #[test]
    fn an_unreadable_record_stops_neither_retention_nor_listing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let old = store.create("alice", "").unwrap();
        store.append("alice", &old.id, &turn("q")).unwrap();
        let tx = store.db.begin_write().unwrap();
        {
            let mut convs = tx.open_table(CONVERSATIONS).unwrap();
            // Sorts before the real record, as a damaged one may.
            convs.insert("0000", b"{not json".as_slice()).unwrap();
            tx.open_table(BY_OWNER)
                .unwrap()
                .insert("alice\u{0}0000", ())
                .unwrap();
        }
        tx.commit().unwrap();
        assert_eq!(store.list("alice").unwrap().len(), 1);
        assert_eq!(store.expire(now_ms() + 1).unwrap(), 1);
        assert!(store.list("alice").unwrap().is_empty());
    }

    /// Session 42's review: one damaged turn failed every read of its conversation and every
    /// follow-up; one damaged feedback record failed every export page that reached it.
    #[test]
    fn a_damaged_turn_or_feedback_record_is_left_out_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let c = store.create("alice", "").unwrap();
        store.append("alice", &c.id, &turn("q1")).unwrap();
        store.append("alice", &c.id, &turn("q2")).unwrap();
        let vote = |n: u32| alice_votes(&c.id, n, "");
        assert!(store.put_feedback("alice", &vote(0)).unwrap());
        assert!(store.put_feedback("alice", &vote(1)).unwrap());
        let tx = store.db.begin_write().unwrap();
        {
            tx.open_table(TURNS)
                .unwrap()
                .insert(turn_key(&c.id, 0).as_str(), b"{not json".as_slice())
                .unwrap();
            let key = format!("{}/alice", turn_key(&c.id, 0));
            tx.open_table(FEEDBACK)
                .unwrap()
                .insert(key.as_str(), b"{not json".as_slice())
                .unwrap();
        }
        tx.commit().unwrap();
        let questions = |v: Vec<TurnRecord>| v.into_iter().map(|t| t.question).collect::<Vec<_>>();
        // In its place, so that the turns after it keep their numbers.
        assert_eq!(questions(store.turns(&c.id).unwrap()), ["", "q2"]);
        assert_eq!(store.turn(&c.id, 0).unwrap().unwrap().question, "");
        assert_eq!(questions(store.last_turns(&c.id, 2).unwrap()), ["q2"]);
        // The damaged feedback record is passed over within the page.
        let (page, more) = store.feedback_page(None, 1, usize::MAX).unwrap();
        assert_eq!(page.len(), 1, "{page:?}");
        assert_eq!(page[0].turn, 1);
        assert!(more.is_none(), "{more:?}");
    }

    /// Usage counters older than the days kept are deleted (a review: kept for ever).
    #[test]
    fn old_usage_counters_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let who = ["user:alice".to_string()];
        store.add_usage(&who, 10, 5).unwrap();
        let tx = store.db.begin_write().unwrap();
        tx.open_table(USAGE)
            .unwrap()
            .insert(
                "2020-01-01\0user:alice",
                json(&UsageCounts::default()).as_slice(),
            )
            .unwrap();
        tx.commit().unwrap();
        assert_eq!(store.expire_usage("2021-01-01").unwrap(), 1);
        assert_eq!(store.usage_since("2000-01-01").unwrap().len(), 1);
        assert_eq!(store.usage_today("user:alice").unwrap().tokens(), 15);
    }

    #[test]
    fn usage_that_could_not_be_written_still_counts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let who = ["user:alice".to_string()];
        store.add_usage(&who, 10, 5).unwrap();
        store.fail_writes();
        assert!(store.add_usage(&who, 100, 50).is_err());
        assert_eq!(store.usage_today("user:alice").unwrap().tokens(), 165);
        store
            .failing
            .store(false, std::sync::atomic::Ordering::Relaxed);
        store.add_usage(&who, 1, 1).unwrap();
        assert!(store.unwritten.lock().unwrap().is_empty());
        let u = store.usage_today("user:alice").unwrap();
        assert_eq!((u.tokens(), u.requests), (167, 3));
    }

    /// Found by a review: one damaged usage counter failed every write of usage (everyone's:
    /// the counters that failed are written again with each request).
    #[test]
    fn a_damaged_usage_counter_is_replaced_and_stops_no_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let key = format!("{}\0user:mallory", day_of(now_ms()));
        let tx = store.db.begin_write().unwrap();
        tx.open_table(USAGE)
            .unwrap()
            .insert(key.as_str(), b"{damaged".as_slice())
            .unwrap();
        tx.commit().unwrap();
        assert_eq!(store.usage_today("user:mallory").unwrap().tokens(), 0);
        // The admin's report reads past it too (a second review).
        store.add_usage(&["user:bob".to_string()], 3, 4).unwrap();
        let report = store.usage_since("2000-01-01").unwrap();
        assert!(
            report.iter().any(|(p, u)| p == "user:bob" && u.prompt == 3),
            "{report:?}"
        );
        store
            .add_usage(&["user:mallory".to_string()], 10, 5)
            .unwrap();
        store.add_usage(&["user:alice".to_string()], 1, 1).unwrap();
        assert!(store.unwritten.lock().unwrap().is_empty());
        assert_eq!(store.usage_today("user:mallory").unwrap().tokens(), 15);
        assert_eq!(store.usage_today("user:alice").unwrap().tokens(), 2);
    }

    #[test]
    fn the_store_is_private_to_the_daemons_account() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let base = tempfile::tempdir().unwrap();
        let path = base.path().join("state/conversations.redb");
        drop(Store::open(&path).unwrap());
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }

    #[test]
    fn feedback_pages_cover_every_record_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("a.redb")).unwrap();
        for i in 0..7u32 {
            let owner = format!("user{}", i % 2);
            let c = s.create_with_turn(&owner, &turn("q")).unwrap();
            s.put_feedback(
                &owner,
                &FeedbackRecord {
                    identity: owner.clone(),
                    conversation_id: c,
                    turn: 0,
                    up: i % 2 == 0,
                    reasons: vec![],
                    comment: "x".repeat(100),
                    time_ms: i64::from(i),
                    question: format!("q{i}"),
                    documents: vec![],
                },
            )
            .unwrap();
        }
        let (mut seen, mut after, mut pages) = (Vec::new(), None::<String>, 0);
        loop {
            let (page, next) = s.feedback_page(after.as_deref(), 3, usize::MAX).unwrap();
            assert!(page.len() <= 3);
            pages += 1;
            seen.extend(page.into_iter().map(|f| f.question));
            match next {
                Some(k) => after = Some(k),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        seen.sort();
        assert_eq!(seen, (0..7).map(|i| format!("q{i}")).collect::<Vec<_>>());
        // Feedback on a conversation deleted meanwhile, or another's, is not written (a review:
        // a deletion between the caller's check and the write left a record nothing removed).
        let c = s.create_with_turn("user0", &turn("q")).unwrap();
        let fb = |who: &str| FeedbackRecord {
            identity: who.into(),
            conversation_id: c.clone(),
            turn: 0,
            up: true,
            reasons: vec![],
            comment: String::new(),
            time_ms: 0,
            question: "late".into(),
            documents: vec![],
        };
        assert!(!s.put_feedback("user1", &fb("user1")).unwrap());
        assert!(s.delete("user0", &c).unwrap());
        assert!(!s.put_feedback("user0", &fb("user0")).unwrap());
        let (all, _) = s.feedback_page(None, 100, usize::MAX).unwrap();
        assert!(all.iter().all(|f| f.question != "late"));
        // The byte budget ends a page early, but never before its first record.
        let (page, next) = s.feedback_page(None, 100, 1).unwrap();
        assert_eq!(page.len(), 1);
        assert!(next.is_some());
        // The last page names no next one.
        let (all, next) = s.feedback_page(None, 100, usize::MAX).unwrap();
        assert_eq!((all.len(), next), (7, None));
    }

    #[test]
    fn conversations_belong_to_their_owner_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.redb");
        let id = {
            let s = Store::open(&path).unwrap();
            let c = s.create("alice", "").unwrap();
            assert_eq!(s.append("alice", &c.id, &turn("q1")).unwrap(), Some(0));
            assert_eq!(s.append("alice", &c.id, &turn("q2")).unwrap(), Some(1));
            assert_eq!(s.append("bob", &c.id, &turn("x")).unwrap(), None);
            c.id
        };
        let s = Store::open(&path).unwrap();
        assert!(s.conversation("bob", &id).unwrap().is_none());
        let c = s.conversation("alice", &id).unwrap().unwrap();
        assert_eq!((c.turns, c.title.as_str()), (2, "q1"));
        let qs: Vec<String> = s
            .turns(&id)
            .unwrap()
            .into_iter()
            .map(|t| t.question)
            .collect();
        assert_eq!(qs, ["q1", "q2"]);
        assert!(s.list("bob").unwrap().is_empty());
        assert_eq!(s.list("alice").unwrap().len(), 1);
        // A long first question is kept whole: it is cut for display after redaction.
        let long = format!("{} DE89 3704 0044 0532 0130 00?", "y".repeat(70));
        let c = s.create("alice", "").unwrap();
        s.append("alice", &c.id, &turn(&long)).unwrap();
        assert_eq!(s.conversation("alice", &c.id).unwrap().unwrap().title, long);
        assert!(s.delete("alice", &c.id).unwrap());
        assert!(!s.delete("bob", &id).unwrap());
        assert!(s.delete("alice", &id).unwrap());
        assert!(s.turns(&id).unwrap().is_empty());
        assert!(s.list("alice").unwrap().is_empty());
    }

    #[test]
    fn usage_adds_up_per_principal_and_expiry_removes_old_conversations() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("a.redb")).unwrap();
        let who = ["user:alice".to_string(), "group:eng".to_string()];
        s.add_usage(&who, 10, 5).unwrap();
        s.add_usage(&who[..1], 1, 1).unwrap();
        assert_eq!(s.usage_today("user:alice").unwrap().tokens(), 17);
        assert_eq!(s.usage_today("group:eng").unwrap().requests, 1);
        let all = s.usage_since("2000-01-01").unwrap();
        assert_eq!(all.len(), 2);
        let c = s.create("alice", "t").unwrap();
        assert_eq!(s.expire(now_ms() - 1000).unwrap(), 0);
        assert_eq!(s.expire(now_ms() + 1000).unwrap(), 1);
        assert!(s.conversation("alice", &c.id).unwrap().is_none());
    }

    /// Expiry looks for stale conversations, then removes them one by one: one that got a
    /// turn in between stays, with that turn (found by a review).
    #[test]
    fn expiry_spares_a_conversation_updated_after_it_was_found_stale() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("a.redb")).unwrap();
        let c = s.create("alice", "t").unwrap();
        let cutoff = c.updated_ms + 1;
        // Found stale at `cutoff`; then a turn arrives.
        let turn = TurnRecord {
            question: "q".into(),
            rewritten: "q".into(),
            answer: String::new(),
            sentences: Vec::new(),
            citations: Vec::new(),
            status: "no_answer".into(),
            mode: "extractive".into(),
            prompt_tokens: 0,
            completion_tokens: 0,
            time_ms: cutoff + 1,
            evidence_keys: Vec::new(),
        };
        s.append("alice", &c.id, &turn).unwrap();
        assert!(!s.remove("alice", &c.id, Some(cutoff)).unwrap());
        assert_eq!(s.turns(&c.id).unwrap().len(), 1);
        assert!(s.remove("alice", &c.id, Some(cutoff + 2)).unwrap());
        assert!(s.conversation("alice", &c.id).unwrap().is_none());
    }
}
