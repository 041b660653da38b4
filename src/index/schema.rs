//! Tantivy schema and analyzers. Changing a field here changes the on-disk format: the `Fields`
//! check at open refuses an index whose schema lacks a field.

use tantivy::schema::{
    BytesOptions, FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema,
    TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
    TextAnalyzerBuilder, Token, TokenFilter, TokenStream, Tokenizer,
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

/// [`analyzer`] for finding given terms in many texts: it stems only the tokens whose first
/// character starts one of `terms`, and passes the rest unstemmed. English Snowball stemming
/// keeps a word's first character (property-tested below), so a token passed unstemmed could
/// not have stemmed to any of `terms`: it finds exactly what the full analyzer finds, for a
/// fraction of the stemming.
pub fn matching_analyzer<'a>(terms: impl IntoIterator<Item = &'a str>) -> TextAnalyzer {
    let mut initials: Vec<char> = terms.into_iter().filter_map(|t| t.chars().next()).collect();
    initials.sort_unstable();
    initials.dedup();
    unstemmed()
        .filter(StemInitials {
            initials: initials.into(),
        })
        .build()
}

/// At most this many words' stems are remembered per matching analyzer (one search's
/// candidates repeat their words: a search stems each distinct word once).
const STEM_MEMO: usize = 4096;

/// The English stemmer, applied to tokens starting with one of `initials` only.
#[derive(Clone)]
struct StemInitials {
    initials: std::sync::Arc<[char]>,
}

impl TokenFilter for StemInitials {
    type Tokenizer<T: Tokenizer> = StemInitialsFilter<T>;

    fn transform<T: Tokenizer>(self, tokenizer: T) -> StemInitialsFilter<T> {
        StemInitialsFilter {
            initials: self.initials,
            inner: tokenizer,
            memo: Default::default(),
        }
    }
}

#[derive(Clone)]
struct StemInitialsFilter<T> {
    initials: std::sync::Arc<[char]>,
    inner: T,
    /// Lowercased word → its stem, for the words stemmed so far.
    memo: rustc_hash::FxHashMap<String, String>,
}

impl<T: Tokenizer> Tokenizer for StemInitialsFilter<T> {
    type TokenStream<'a> = StemInitialsStream<'a, T::TokenStream<'a>>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> Self::TokenStream<'a> {
        StemInitialsStream {
            tail: self.inner.token_stream(text),
            initials: &self.initials,
            stemmer: frostem::Stemmer::new(frostem::Algorithm::English),
            memo: &mut self.memo,
        }
    }
}

struct StemInitialsStream<'a, T> {
    tail: T,
    initials: &'a [char],
    stemmer: frostem::Stemmer,
    memo: &'a mut rustc_hash::FxHashMap<String, String>,
}

impl<T: TokenStream> TokenStream for StemInitialsStream<'_, T> {
    fn advance(&mut self) -> bool {
        if !self.tail.advance() {
            return false;
        }
        let token = self.tail.token_mut();
        let wanted = token
            .text
            .chars()
            .next()
            .is_some_and(|c| self.initials.binary_search(&c).is_ok());
        if wanted {
            let stem = match self.memo.get(&token.text) {
                Some(stem) => stem.as_str(),
                None => {
                    let stem = self.stemmer.stem(&token.text).into_owned();
                    if self.memo.len() >= STEM_MEMO {
                        token.text = stem;
                        return true;
                    }
                    self.memo.entry(token.text.clone()).or_insert(stem).as_str()
                }
            };
            token.text.clear();
            token.text.push_str(stem);
        }
        true
    }

    fn token(&self) -> &Token {
        self.tail.token()
    }

    fn token_mut(&mut self) -> &mut Token {
        self.tail.token_mut()
    }
}

pub fn register_tokenizers(index: &tantivy::Index) {
    index.tokenizers().register(ANALYZER, analyzer());
}

/// Hands each token of `text` (as the BM25 fields index it) with the byte offset where it
/// starts to `sink`, without allocating per token; one analyzer instance for many texts.
pub fn analyze_into(analyzer: &mut TextAnalyzer, text: &str, sink: &mut dyn FnMut(usize, &str)) {
    let mut stream = analyzer.token_stream(text);
    while stream.advance() {
        let t = stream.token();
        sink(t.offset_from, &t.text);
    }
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

    fn tokens(a: &mut TextAnalyzer, text: &str) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        analyze_into(a, text, &mut |o, t| out.push((o, t.to_string())));
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

    proptest! {
        #[test]
        fn english_stemming_keeps_the_first_character(w in "[a-z0-9]{1,24}") {
            let stemmer = frostem::Stemmer::new(frostem::Algorithm::English);
            let s = stemmer.stem(&w);
            prop_assert_eq!(s.chars().next(), w.chars().next());
        }

        /// The matching analyzer finds the query's terms where the full analyzer does, and
        /// yields the same number of tokens at the same offsets, whether it stems a word or
        /// remembers its stem.
        #[test]
        fn the_matching_analyzer_finds_what_the_full_one_finds(
            words in proptest::collection::vec(
                "(running|runs|ran|studies|studying|tying|ties|cells|cell|The|A|of|gene|genes|generously|Xyz|über|Über|naïve|42|skies|sky)",
                0..40,
            ),
            query in proptest::collection::vec("(run|studi|tie|cell|gene|sky|über|naïv|42|generous)", 1..5),
        ) {
            let text = words.join(" ");
            let mut full = analyzer();
            let mut matching = matching_analyzer(query.iter().map(String::as_str));
            let a = tokens(&mut full, &text);
            let b = tokens(&mut matching, &text);
            // Again, with every word's stem remembered from the first pass.
            prop_assert_eq!(&tokens(&mut matching, &text), &b);
            prop_assert_eq!(a.len(), b.len());
            for ((oa, ta), (ob, tb)) in a.iter().zip(&b) {
                prop_assert_eq!(oa, ob);
                let hit_a = query.contains(ta);
                let hit_b = query.contains(tb);
                prop_assert_eq!(hit_a, hit_b, "{} vs {}", ta, tb);
                if hit_a {
                    prop_assert_eq!(ta, tb);
                }
            }
        }
    }
}
