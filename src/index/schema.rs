//! Tantivy schema and analyzers. Changing a field here changes the on-disk format: the `Fields`
//! check at open refuses an index whose schema lacks a field.

use tantivy::schema::{
    BytesOptions, FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema,
    TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
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

fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(StopWordFilter::new(Language::English).expect("English stop words are built in"))
        .filter(Stemmer::new(Language::English))
        .build()
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

/// The BM25 fields' analyzer.
pub fn text_analyzer(index: &tantivy::Index) -> TextAnalyzer {
    index.tokenizers().get(ANALYZER).unwrap_or_else(analyzer)
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
