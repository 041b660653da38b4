//! Tantivy schema and analyzers. Changing a field here changes the on-disk format: the `Fields`
//! check at open refuses an index whose schema lacks a field.

use tantivy::schema::{
    BytesOptions, FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema,
    TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
    TextAnalyzerBuilder, TokenStream, Tokenizer,
};

/// The analyzer of the BM25 fields: words, lowercased, English stop words removed, stemmed.
pub const ANALYZER: &str = "docent_en";

#[derive(Debug, Clone, Copy)]
pub struct Fields {
    pub chunk_id: Field,
    pub doc_key: Field,
    pub source: Field,
    pub uri: Field,
    pub title: Field,
    pub heading: Field,
    pub text: Field,
    pub acl_allow: Field,
    pub acl_deny: Field,
    pub chunk_ord: Field,
    pub doc_chunks: Field,
    pub span_start: Field,
    pub span_end: Field,
    pub version: Field,
    pub content_hash: Field,
    pub chunk_hash: Field,
    pub modified: Field,
    pub attributes: Field,
    pub vector: Field,
    /// 1-based page of the chunk (0: none). Optional: indexes written before pages existed lack
    /// it and still open; their chunks have no page.
    pub page: Option<Field>,
    /// Document attributes as `key\x1fvalue` terms, for filters. Optional like `page`: in an
    /// older index no attribute filter matches (a filter never widens).
    pub attr: Option<Field>,
    /// The whole document (title and every chunk's text, overlaps once), on the row of its
    /// first chunk only, for document-level BM25 statistics. Not stored. Optional: an index
    /// written before it existed opens, and its BM25 leg stays chunk-level.
    pub doc_text: Option<Field>,
}

/// Separates an attribute's key from its value in `attr` terms.
pub const ATTR_SEP: char = '\u{1f}';

/// The current schema.
pub fn build() -> Schema {
    build_with(true, true)
}

/// Schemas an existing index may have and still open: the current one, the one before
/// document-level BM25 (no `doc_text`), and the first one (before chunks carried pages and
/// attribute terms).
pub fn accepted() -> [Schema; 3] {
    [
        build_with(true, true),
        build_with(true, false),
        build_with(false, false),
    ]
}

pub(crate) fn build_with(page: bool, doc_text: bool) -> Schema {
    let mut b = Schema::builder();
    let text = TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(ANALYZER)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        )
        .set_stored();
    b.add_text_field("chunk_id", STRING | STORED);
    b.add_text_field("doc_key", STRING | STORED | FAST);
    b.add_text_field("source", STRING | STORED);
    b.add_text_field("uri", STRING | STORED);
    b.add_text_field("title", text.clone());
    b.add_text_field("heading", text.clone());
    b.add_text_field("text", text);
    b.add_text_field("acl_allow", STRING | STORED);
    b.add_text_field("acl_deny", STRING | STORED);
    b.add_u64_field("chunk_ord", INDEXED | STORED);
    b.add_u64_field("doc_chunks", STORED);
    b.add_u64_field("span_start", STORED);
    b.add_u64_field("span_end", STORED);
    b.add_text_field("version", STORED);
    b.add_text_field("content_hash", STORED);
    b.add_text_field("chunk_hash", STORED);
    b.add_i64_field("modified", INDEXED | STORED | FAST);
    b.add_text_field("attributes", STORED);
    b.add_bytes_field("vector", BytesOptions::default() | FAST);
    if page {
        b.add_u64_field("page", STORED);
        b.add_text_field("attr", STRING);
    }
    if doc_text {
        // Term frequencies and field lengths are all BM25 needs; no positions, not stored.
        b.add_text_field(
            "doc_text",
            TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(ANALYZER)
                    .set_index_option(IndexRecordOption::WithFreqs),
            ),
        );
    }
    b.build()
}

impl Fields {
    pub fn resolve(schema: &Schema) -> Result<Self, String> {
        let get = |n: &str| {
            schema
                .get_field(n)
                .map_err(|_| format!("missing field {n}"))
        };
        Ok(Self {
            chunk_id: get("chunk_id")?,
            doc_key: get("doc_key")?,
            source: get("source")?,
            uri: get("uri")?,
            title: get("title")?,
            heading: get("heading")?,
            text: get("text")?,
            acl_allow: get("acl_allow")?,
            acl_deny: get("acl_deny")?,
            chunk_ord: get("chunk_ord")?,
            doc_chunks: get("doc_chunks")?,
            span_start: get("span_start")?,
            span_end: get("span_end")?,
            version: get("version")?,
            content_hash: get("content_hash")?,
            chunk_hash: get("chunk_hash")?,
            modified: get("modified")?,
            attributes: get("attributes")?,
            vector: get("vector")?,
            page: schema.get_field("page").ok(),
            attr: schema.get_field("attr").ok(),
            doc_text: schema.get_field("doc_text").ok(),
        })
    }
}

/// The BM25 analyzer up to its stemmer.
fn unstemmed() -> TextAnalyzerBuilder<impl Tokenizer> {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(StopWordFilter::new(Language::English).expect("English stop words are built in"))
}

fn analyzer() -> TextAnalyzer {
    unstemmed().filter(Stemmer::new(Language::English)).build()
}

/// tantivy's English stop words (`StopWordFilter::new(Language::English)`; a test compares).
fn is_english_stop_word(w: &[u8]) -> bool {
    matches!(
        w,
        b"a" | b"an"
            | b"and"
            | b"are"
            | b"as"
            | b"at"
            | b"be"
            | b"but"
            | b"by"
            | b"for"
            | b"if"
            | b"in"
            | b"into"
            | b"is"
            | b"it"
            | b"no"
            | b"not"
            | b"of"
            | b"on"
            | b"or"
            | b"such"
            | b"that"
            | b"the"
            | b"their"
            | b"then"
            | b"there"
            | b"these"
            | b"they"
            | b"this"
            | b"to"
            | b"was"
            | b"will"
            | b"with"
    )
}

/// Tokens of at least this many bytes are dropped (`RemoveLongFilter::limit` above).
const LONG_TOKEN: usize = 40;

/// Finds given terms in many texts (the second stage's 40–60 passages a search) as
/// [`analyzer`] would: the same tokens at the same offsets, in one pass over the text into a
/// reused buffer, instead of a chain of token filters that copies each token (a fifth of a
/// hybrid Search's CPU before, session 51). A word is stemmed only when its first character
/// starts one of the terms: English Snowball stemming keeps a word's first character
/// (property-tested below), so a word passed unstemmed could not have stemmed to any of them.
/// Stems are remembered for the search, then in [`STEMS`] across searches.
#[derive(Clone)]
pub struct MatchingAnalyzer {
    /// ASCII first characters of the terms looked for (one bit per byte value).
    ascii: u128,
    /// The others, sorted.
    other: std::sync::Arc<[char]>,
    /// The terms looked for.
    terms: std::sync::Arc<[Box<str>]>,
    /// Lowercased word → the term it stems to (an index into `terms`), or none, for the words
    /// seen in this search.
    memo: rustc_hash::FxHashMap<String, Option<u32>>,
}

impl MatchingAnalyzer {
    pub fn new<'a>(terms: impl IntoIterator<Item = &'a str>) -> Self {
        let terms: std::sync::Arc<[Box<str>]> = terms.into_iter().map(Box::from).collect();
        let mut ascii = 0u128;
        let mut other = Vec::new();
        for c in terms.iter().filter_map(|t| t.chars().next()) {
            if c.is_ascii() {
                ascii |= 1 << c as u32;
            } else {
                other.push(c);
            }
        }
        other.sort_unstable();
        other.dedup();
        Self {
            ascii,
            other: other.into(),
            terms,
            memo: Default::default(),
        }
    }

    fn wanted(&self, first: char) -> bool {
        if first.is_ascii() {
            self.ascii & (1 << first as u32) != 0
        } else {
            self.other.binary_search(&first).is_ok()
        }
    }

    /// Hands the tokens of `text` that are one of the terms looked for (as the full analyzer
    /// stems them) to `sink`, each with its position among all the tokens, the byte offset where
    /// it starts, and the term.
    pub fn analyze_into(&mut self, text: &str, sink: &mut dyn FnMut(usize, usize, &str)) {
        let b = text.as_bytes();
        // `char::is_alphanumeric` (tantivy's `SimpleTokenizer`), with the char's length.
        let alnum_at = |i: usize| -> (bool, usize) {
            if b[i].is_ascii() {
                (b[i].is_ascii_alphanumeric(), 1)
            } else {
                let c = text[i..].chars().next().expect("a char boundary");
                (c.is_alphanumeric(), c.len_utf8())
            }
        };
        let mut word = String::new();
        let mut position = 0;
        let mut i = 0;
        while i < b.len() {
            let (alnum, len) = alnum_at(i);
            if !alnum {
                i += len;
                continue;
            }
            let start = i;
            i += len;
            while i < b.len() {
                let (alnum, len) = alnum_at(i);
                if !alnum {
                    break;
                }
                i += len;
            }
            let token = &text[start..i];
            if token.len() >= LONG_TOKEN {
                continue;
            }
            word.clear();
            if token.is_ascii() {
                word.push_str(token);
                word.make_ascii_lowercase();
            } else {
                // As tantivy's `LowerCaser` (no final-sigma rule).
                word.extend(token.chars().flat_map(char::to_lowercase));
            }
            if is_english_stop_word(word.as_bytes()) {
                continue;
            }
            position += 1;
            if !word.chars().next().is_some_and(|c| self.wanted(c)) {
                continue;
            }
            let term = match self.memo.get(word.as_str()) {
                Some(&term) => term,
                None => {
                    let term = stem_english(&word, |stem| {
                        self.terms
                            .iter()
                            .position(|t| **t == *stem)
                            .map(|i| i as u32)
                    });
                    if self.memo.len() < STEM_MEMO {
                        self.memo.insert(word.clone(), term);
                    }
                    term
                }
            };
            if let Some(term) = term {
                sink(position - 1, start, &self.terms[term as usize]);
            }
        }
    }
}

/// At most this many words' stems are remembered per matching analyzer.
const STEM_MEMO: usize = 4096;

/// Stems remembered across searches: a word's English stem never changes, and the
/// second stage stems the same few thousand words again and again. Words and stems are kept
/// inline ([`ShortWord`]: a lookup reads no other memory than the table's). Sharded by the
/// word's hash; a shard that fills up starts again empty.
static STEMS: std::sync::LazyLock<[std::sync::RwLock<StemShard>; 16]> =
    std::sync::LazyLock::new(Default::default);

/// One [`STEMS`] shard. It hashes with another function than the one that picks the shard
/// (with the same, the words of a shard would share hash bits and crowd the same buckets).
type StemShard = std::collections::HashMap<ShortWord, ShortWord, foldhash::fast::FixedState>;

/// Words per [`STEMS`] shard (about 64k words in all, a few MiB).
const STEMS_PER_SHARD: usize = 4096;

/// A word of at most 23 bytes, held inline (longer words are stemmed every time).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct ShortWord {
    len: u8,
    bytes: [u8; 23],
}

impl ShortWord {
    fn new(s: &str) -> Option<Self> {
        let mut bytes = [0; 23];
        bytes.get_mut(..s.len())?.copy_from_slice(s.as_bytes());
        Some(Self {
            len: s.len() as u8,
            bytes,
        })
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).expect("copied from a str")
    }
}

/// `f` of the English Snowball stem of a lowercased word, remembered in [`STEMS`].
fn stem_english<T>(word: &str, f: impl FnOnce(&str) -> T) -> T {
    use std::hash::BuildHasher;
    let Some(key) = ShortWord::new(word) else {
        return f(&frostem::Stemmer::new(frostem::Algorithm::English).stem(word));
    };
    let shard = &STEMS[(rustc_hash::FxBuildHasher.hash_one(word) >> 60) as usize];
    if let Some(stem) = shard
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&key)
    {
        return f(stem.as_str());
    }
    let stem = frostem::Stemmer::new(frostem::Algorithm::English).stem(word);
    let out = f(&stem);
    if let Some(stem) = ShortWord::new(&stem) {
        let mut shard = shard
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if shard.len() >= STEMS_PER_SHARD {
            shard.clear();
        }
        shard.insert(key, stem);
    }
    out
}

pub fn register_tokenizers(index: &tantivy::Index) {
    index.tokenizers().register(ANALYZER, analyzer());
}

/// [`analyze`]'s tokens once each, in first-seen order, with how many times each came: one
/// term query per token, weighted by its count, scores as one per occurrence did, without
/// reading the same postings once per repeat (a review: a 4 KiB question of one word repeated
/// made about 3,200 scorers over one list).
pub fn analyze_counted(index: &tantivy::Index, text: &str) -> Vec<(String, f32)> {
    let mut out: Vec<(String, f32)> = Vec::new();
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for t in analyze(index, text) {
        match at.get(&t) {
            Some(&i) => out[i].1 += 1.0,
            None => {
                at.insert(t.clone(), out.len());
                out.push((t, 1.0));
            }
        }
    }
    out
}

/// Tokens of `text` as the BM25 fields index them.
pub fn analyze(index: &tantivy::Index, text: &str) -> Vec<String> {
    let mut a = index.tokenizers().get(ANALYZER).unwrap_or_else(analyzer);
    let mut stream = a.token_stream(text);
    let mut out = Vec::new();
    while stream.advance() {
        out.push(stream.token().text.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The tokens of `text` with the byte offsets where they start.
    fn tokens(a: &mut TextAnalyzer, text: &str) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        let mut stream = a.token_stream(text);
        while stream.advance() {
            let t = stream.token();
            out.push((t.offset_from, t.text.clone()));
        }
        out
    }

    #[test]
    fn english_stemming_keeps_the_first_character_of_its_exceptions() {
        // Porter2's special words and the "-ying" forms change letters after the first.
        let stemmer = frostem::Stemmer::new(frostem::Algorithm::English);
        for w in [
            "tying", "dying", "lying", "skies", "skis", "idly", "gently", "ugly", "early", "only",
            "singly", "news", "howe", "atlas", "cosmos", "bias", "andes", "inning", "outing",
            "canning", "herring", "earring", "proceed", "exceed", "succeed", "oed", "yelling",
            "ying", "aingly", "ies",
        ] {
            let s = stemmer.stem(w);
            assert_eq!(s.chars().next(), w.chars().next(), "{w} -> {s}");
        }
    }

    /// The matching analyzer's stop words are the filter's: each of them, each word of one or
    /// two letters, and near misses of the others are dropped by one exactly when by the other.
    #[test]
    fn the_matching_analyzer_drops_the_stop_words_the_filter_drops() {
        let mut filter = unstemmed().build();
        let mut dropped = |w: &str| tokens(&mut filter, w).is_empty();
        let listed = [
            "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into",
            "is", "it", "no", "not", "of", "on", "or", "such", "that", "the", "their", "then",
            "there", "these", "they", "this", "to", "was", "will", "with",
        ];
        for w in listed {
            assert!(dropped(w), "{w}");
            assert!(is_english_stop_word(w.as_bytes()), "{w}");
        }
        // Every word of one or two letters, and near misses of the longer ones.
        let letters: Vec<char> = ('a'..='z').collect();
        let mut words: Vec<String> = letters.iter().map(char::to_string).collect();
        for a in &letters {
            for b in &letters {
                words.push(format!("{a}{b}"));
            }
        }
        for w in listed {
            words.push(format!("{w}s"));
            words.push(w[1..].to_string());
            words.push(w[..w.len() - 1].to_string());
        }
        for w in words.iter().filter(|w| !w.is_empty()) {
            assert_eq!(dropped(w), is_english_stop_word(w.as_bytes()), "{w}");
        }
    }

    /// A stem remembered across searches is the stemmer's, also after its shard filled up and
    /// started again.
    #[test]
    fn a_remembered_stem_is_the_stemmers() {
        let stemmer = frostem::Stemmer::new(frostem::Algorithm::English);
        let words: Vec<String> = (0..STEMS_PER_SHARD * 20)
            .map(|i| format!("generalization{i}s"))
            .collect();
        // Each word stemmed, then looked up; then the whole list, far more than the shards hold.
        for w in [
            "studies",
            "running",
            "skies",
            "generalizations",
            "internationalizationsxyz",
            "électroencéphalographies",
        ] {
            for _ in 0..2 {
                assert_eq!(stem_english(w, str::to_owned), stemmer.stem(w), "{w}");
            }
        }
        for _ in 0..2 {
            for w in &words {
                assert_eq!(stem_english(w, str::to_owned), stemmer.stem(w), "{w}");
            }
        }
        assert!(
            STEMS
                .iter()
                .all(|s| s.read().unwrap().len() <= STEMS_PER_SHARD)
        );
    }

    proptest! {
        #[test]
        fn english_stemming_keeps_the_first_character(w in "[a-z0-9]{1,24}") {
            let stemmer = frostem::Stemmer::new(frostem::Algorithm::English);
            let s = stemmer.stem(&w);
            prop_assert_eq!(s.chars().next(), w.chars().next());
        }

        /// The matching analyzer finds the query's terms exactly where the full analyzer does
        /// (positions and offsets), whether it stems a word or remembers its stem: mixed case, digits,
        /// punctuation, stop words, tokens too long to index, letters of other scripts and
        /// characters that lowercase to more than one.
        #[test]
        fn the_matching_analyzer_finds_what_the_full_one_finds(
            words in proptest::collection::vec(
                "(running|Runs|RAN|studies|studying|tying|ties|cells|The|THE|a|An|of|into|such|There|gene|genes|Generously|Xyz|x|I|42|4x4|skies|sky|[a-z]{1,12}|[A-Za-z0-9]{38,41}|über|Über|naïve|ÜBERALL|İstanbul|Ωmega|ωmega|x²|ǅemal|[a-zé]{38,40})",
                0..40,
            ),
            seps in proptest::collection::vec("( |, |\\. |-|\\n|'|\\(|\\)|/|_|  |·|—|\u{a0})", 40),
            query in proptest::collection::vec("(run|studi|tie|cell|gene|sky|über|naïv|42|generous|x|i|ωmega|istanbul|[a-z]{1,6})", 1..6),
        ) {
            let mut text = String::new();
            for (w, s) in words.iter().zip(&seps) {
                text.push_str(w);
                text.push_str(s);
            }
            let mut full = analyzer();
            let mut matching = MatchingAnalyzer::new(query.iter().map(String::as_str));
            let a = tokens(&mut full, &text);
            let mut b = Vec::new();
            matching.analyze_into(&text, &mut |p, o, t| b.push((p, o, t.to_string())));
            // Again, with every word's stem remembered from the first pass.
            let mut again = Vec::new();
            matching.analyze_into(&text, &mut |p, o, t| again.push((p, o, t.to_string())));
            prop_assert_eq!(&again, &b);
            // Each token handed over is a term the full analyzer has at that position and offset,
            // and every term the full analyzer finds is handed over.
            let want: Vec<(usize, usize, String)> = a
                .iter()
                .enumerate()
                .filter(|(_, (_, t))| query.contains(t))
                .map(|(p, (o, t))| (p, *o, t.clone()))
                .collect();
            prop_assert_eq!(&b, &want);
        }
    }
}
