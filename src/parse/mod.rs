//! Parsing: bytes of a source document → plain extracted text plus the blocks (headings,
//! paragraphs, list items, code) it consists of, each with its byte span in that text.
//!
//! Citations point into the extracted text, so the invariant every parser keeps is: each block's
//! span is a valid `[start, end)` range on char boundaries of `ParsedDoc::text`, blocks are in
//! order and do not overlap. Parsers never panic on hostile input; they return a `ParseError`.

mod html;
pub mod isolate;
mod markdown;
mod office;
mod pdf;
pub mod samples;
mod table;
mod text;

use std::ops::Range;

/// What a block is, for chunking decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BlockKind {
    /// A heading of the given level (1 = top).
    Heading(u8),
    Paragraph,
    ListItem,
    Code,
    TableCell,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Block {
    pub kind: BlockKind,
    pub span: Range<usize>,
    /// Headings enclosing this block, outermost first (a heading's own path excludes itself).
    pub heading_path: Vec<String>,
    /// 1-based page (PDF page, PPTX slide) where the format has pages.
    pub page: Option<u32>,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ParsedDoc {
    pub title: String,
    pub text: String,
    pub blocks: Vec<Block>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ParseError {
    #[error("unsupported file type: {0}")]
    Unsupported(String),
    #[error("binary content (NUL byte at offset {0})")]
    Binary(usize),
    #[error("invalid UTF-8 at byte {0}")]
    InvalidUtf8(usize),
    #[error("invalid UTF-16 at byte {0}")]
    InvalidUtf16(usize),
    #[error("empty document")]
    Empty,
    #[error("no text extracted")]
    NoText,
    #[error("no text layer (a scanned PDF needs OCR first)")]
    NoTextLayer,
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("extracted text is {len} bytes; the limit is {max}")]
    TooMuchText { len: usize, max: usize },
    #[error("more than {max} headings and pages, each of which starts a passage")]
    TooManySections { max: usize },
    /// In a parser process, which was killed.
    #[error("parsing took longer than {0:?}")]
    Timeout(std::time::Duration),
    /// In process: the parser thread keeps running (Rust cannot stop one) until it finishes.
    #[error("parsing took longer than {0:?}")]
    Abandoned(std::time::Duration),
    #[error(
        "the parsers are held by documents that timed out; not this document's fault: try again later"
    )]
    // (The count, which other sources' documents make, is in `/metrics` and the log, not in
    // a reason a pusher can read: a review.)
    ParsersStuck(usize),
    /// The parser process could not be started or read (see [`isolate`]): not the document's
    /// fault, so its previous version stays.
    #[error("the parser process could not run ({0}); not the document's fault: try again later")]
    WorkerUnavailable(String),
}

impl ParseError {
    /// Failures that say nothing about the document (busy or unavailable parsers): its
    /// previous version stays indexed and it is tried again.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::ParsersStuck(_) | Self::WorkerUnavailable(_))
    }

    /// The parse took longer than its deadline, in a process or in process.
    pub fn timed_out(&self) -> bool {
        matches!(self, Self::Timeout(_) | Self::Abandoned(_))
    }
}

/// Parser threads still running after their document timed out (Rust cannot stop a thread).
static OVERDUE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// At most this many overdue parser threads; past it, documents are refused until some finish,
/// so hostile inputs cannot pile up spinning threads.
pub const MAX_OVERDUE_PARSERS: usize = 4;

/// Parser threads still running on documents that timed out (reported in `/metrics`).
pub fn overdue_parsers() -> usize {
    OVERDUE.load(std::sync::atomic::Ordering::Relaxed)
}

/// The formats this build parses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Markdown,
    Html,
    /// Source code and config files: text whose whitespace matters.
    Code,
    Pdf,
    Docx,
    Pptx,
    Xlsx,
    Csv,
    Json,
}

const CODE_EXTENSIONS: &[&str] = &[
    "rs",
    "py",
    "js",
    "mjs",
    "ts",
    "tsx",
    "jsx",
    "go",
    "java",
    "kt",
    "kts",
    "scala",
    "c",
    "h",
    "cc",
    "cpp",
    "hpp",
    "cs",
    "rb",
    "php",
    "swift",
    "sh",
    "bash",
    "zsh",
    "ps1",
    "sql",
    "yaml",
    "yml",
    "toml",
    "ini",
    "cfg",
    "conf",
    "proto",
    "graphql",
    "tf",
    "lua",
    "r",
    "pl",
    "dockerfile",
    "makefile",
    "gradle",
    "xml",
];

impl Format {
    /// From a media type if given, else from the name's extension.
    pub fn detect(mime: Option<&str>, name: &str) -> Result<Self, ParseError> {
        let base = name.rsplit('/').next().unwrap_or(name).to_ascii_lowercase();
        let ext = base.rsplit_once('.').map(|(_, e)| e.to_string());
        if let Some(m) = mime {
            let m = m.split(';').next().unwrap_or(m).trim().to_ascii_lowercase();
            return match m.as_str() {
                // Says nothing of the format: the name does (a review: `x.pdf` sent as
                // octet-stream was refused).
                ""
                | "application/octet-stream"
                | "binary/octet-stream"
                | "application/binary"
                | "application/unknown"
                | "application/force-download"
                | "application/x-download"
                | "application/zip"
                | "application/x-zip-compressed" => Self::detect(None, name),
                // What Windows reports for a `.csv` file.
                "application/vnd.ms-excel" if ext.as_deref() == Some("csv") => Ok(Self::Csv),
                "text/plain" => Ok(Self::Text),
                "text/markdown" | "text/x-markdown" => Ok(Self::Markdown),
                "text/html" | "application/xhtml+xml" => Ok(Self::Html),
                "application/pdf" => Ok(Self::Pdf),
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => {
                    Ok(Self::Docx)
                }
                "application/vnd.openxmlformats-officedocument.presentationml.presentation" => {
                    Ok(Self::Pptx)
                }
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
                | "application/vnd.ms-excel"
                | "application/vnd.oasis.opendocument.spreadsheet" => Ok(Self::Xlsx),
                "text/csv" => Ok(Self::Csv),
                "application/json" => Ok(Self::Json),
                m if m.starts_with("text/x-") || m == "application/x-sh" => Ok(Self::Code),
                other => Err(ParseError::Unsupported(other.to_string())),
            };
        }
        match ext.as_deref() {
            Some("txt" | "text" | "log" | "rst") => Ok(Self::Text),
            Some("md" | "markdown" | "mdx") => Ok(Self::Markdown),
            Some("html" | "htm" | "xhtml") => Ok(Self::Html),
            Some("pdf") => Ok(Self::Pdf),
            Some("docx") => Ok(Self::Docx),
            Some("pptx") => Ok(Self::Pptx),
            Some("xlsx" | "xlsm" | "xls" | "ods") => Ok(Self::Xlsx),
            Some("csv") => Ok(Self::Csv),
            Some("json") => Ok(Self::Json),
            Some(e) if CODE_EXTENSIONS.contains(&e) => Ok(Self::Code),
            Some(e) => Err(ParseError::Unsupported(format!(".{e}"))),
            None if matches!(base.as_str(), "dockerfile" | "makefile") => Ok(Self::Code),
            None => Err(ParseError::Unsupported("no extension".to_string())),
        }
    }

    /// Whether a document of this format and `len` bytes is parsed in a child process when the
    /// daemon has one (see [`isolate`]), whose memory is capped and which a timeout kills:
    /// PDFs and spreadsheets, whose third-party parsers can abort the process that runs them
    /// (calamine sizes allocations from counts the file states), and HTML of any size:
    /// html5ever's time grows with the square of the nesting, a thread that overran its
    /// deadline cannot be stopped, and a 64 KB page can make it build tens of millions of
    /// nodes (each new text run reopens every open formatting element with other attributes),
    /// gigabytes the daemon would not survive (found by a review; before, HTML up to 64 KiB
    /// was parsed in the daemon). DOCX and PPTX too: a 65 KB archive can inflate a part to
    /// 64 MiB, which the XML walk holds several times over. Markdown and CSV above
    /// [`IN_PROCESS_MAX`]: pulldown-cmark builds its whole tree first (about 48 bytes a node,
    /// one node per `*` of a run: a 50 MB file took gigabytes), and the CSV reader holds a
    /// record's every field before its cells are counted (a review).
    pub fn isolated(self, len: usize) -> bool {
        match self {
            Self::Pdf | Self::Xlsx | Self::Html | Self::Docx | Self::Pptx => true,
            Self::Markdown | Self::Csv => len > IN_PROCESS_MAX,
            Self::Text | Self::Code | Self::Json => false,
        }
    }
}

/// Largest Markdown or CSV document parsed in the daemon's own process (see
/// [`Format::isolated`]).
pub const IN_PROCESS_MAX: usize = 1 << 20;

thread_local! {
    /// Most bytes a [`TextBuilder`] on this thread may hold (text plus every block's heading
    /// path): set by [`parse_limited`] for its parser thread, so that hostile input stops while
    /// it is extracted, not after it has filled the memory.
    static TEXT_BUDGET: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
    /// What a builder held when it went over the budget (reset by each [`parse`]).
    static OVER_BUDGET: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
    /// Whether a builder went over [`MAX_SECTIONS`] (reset by each [`parse`]).
    static OVER_SECTIONS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The stack of a parser thread.
const PARSER_STACK_BYTES: usize = 256 << 20;

/// The longest heading kept in heading paths (they are repeated on every block below them).
pub const MAX_HEADING_BYTES: usize = 256;

/// Cuts a title or heading to [`MAX_HEADING_BYTES`]: each chunk carries its document's title
/// and headings (in its record and in what the model embeds), so a long one would be copied
/// into every chunk of a long document. The cut is at a word, and drops the digit groups
/// before it: a value it would split (an e-mail address, a card or account number in groups)
/// goes whole, so no part of it is left that PII redaction would no longer recognise.
pub fn cap_heading(s: &mut String) {
    if s.len() <= MAX_HEADING_BYTES {
        return;
    }
    let mut cut = MAX_HEADING_BYTES;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    if let Some(space) = s[..cut].rfind(char::is_whitespace) {
        cut = space;
    }
    s.truncate(cut);
    let kept = s
        .trim_end_matches(|c: char| c.is_ascii_digit() || c.is_whitespace() || c == '-')
        .len();
    s.truncate(kept);
}

/// Parses a document. `name` is the file name, the title of last resort.
pub fn parse(bytes: &[u8], mime: Option<&str>, name: &str) -> Result<ParsedDoc, ParseError> {
    OVER_BUDGET.with(|o| o.set(None));
    OVER_SECTIONS.with(|o| o.set(false));
    let parsed = parse_unchecked(bytes, mime, name);
    if OVER_SECTIONS.with(|o| o.take()) {
        return Err(ParseError::TooManySections { max: MAX_SECTIONS });
    }
    if let Some(len) = OVER_BUDGET.with(|o| o.take()) {
        return Err(ParseError::TooMuchText {
            len,
            max: TEXT_BUDGET.with(|b| b.get()),
        });
    }
    parsed
}

fn parse_unchecked(bytes: &[u8], mime: Option<&str>, name: &str) -> Result<ParsedDoc, ParseError> {
    let format = Format::detect(mime, name)?;
    if bytes.is_empty() {
        return Err(ParseError::Empty);
    }
    let mut doc = match format {
        Format::Pdf => pdf::parse(bytes)?,
        Format::Docx => office::docx(bytes)?,
        Format::Pptx => office::pptx(bytes)?,
        Format::Xlsx => table::xlsx(bytes)?,
        Format::Text => text::parse(&decode_text(bytes)?),
        Format::Code => text::code(&decode_text(bytes)?),
        Format::Markdown => markdown::parse(&decode_text(bytes)?),
        Format::Html => html::parse(&decode_text(bytes)?),
        Format::Csv => table::csv(&decode_text(bytes)?)?,
        Format::Json => table::json(&decode_text(bytes)?)?,
    };
    if doc.blocks.is_empty() || doc.text.trim().is_empty() {
        return Err(ParseError::NoText);
    }
    if doc.title.trim().is_empty() {
        doc.title = title_from_name(name);
    }
    doc.title = collapse_ws(&doc.title);
    cap_heading(&mut doc.title);
    Ok(doc)
}

/// Per-connector limits on parsing (published defaults in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseLimits {
    /// Most bytes of extracted text per document.
    pub max_text_bytes: usize,
    /// Longest a parse may take.
    pub timeout: std::time::Duration,
    /// Address space of a parser process (formats parsed out of process), before
    /// [`isolate::WORKER_MEMORY_PER_BYTE`] per byte of the document.
    pub worker_memory: u64,
}

impl Default for ParseLimits {
    fn default() -> Self {
        Self {
            max_text_bytes: 5 * 1024 * 1024,
            timeout: std::time::Duration::from_secs(30),
            worker_memory: isolate::WORKER_MEMORY_BYTES,
        }
    }
}

/// [`parse`] under limits: on a worker thread with a deadline (a parser stuck on hostile input is
/// abandoned, its document reported as timed out; the thread finishes on its own), and with a cap
/// on the extracted text. The bytes are shared: a caller that keeps a clone of the `Arc` still
/// has them after a failure (to try again), without a copy.
pub fn parse_limited(
    bytes: impl Into<std::sync::Arc<Vec<u8>>>,
    mime: Option<String>,
    name: String,
    limits: ParseLimits,
) -> Result<ParsedDoc, ParseError> {
    use std::sync::atomic::Ordering;
    let bytes = bytes.into();
    if let Some(exe) = isolate::worker_process()
        && Format::detect(mime.as_deref(), &name).is_ok_and(|f| f.isolated(bytes.len()))
    {
        let doc = isolate::parse_in_child(exe, bytes, mime, name, limits)?;
        // Spans from another process (another build, after an upgrade in place) are checked
        // before anything slices the text with them.
        // (Not `validate`'s words: they print a block, headings included; a skip reason
        // never quotes a document.)
        doc.validate().map_err(|_| {
            ParseError::Malformed("the parser process returned invalid passage spans".into())
        })?;
        return within_text_limit(doc, limits);
    }
    let overdue = OVERDUE.load(Ordering::Relaxed);
    if overdue >= MAX_OVERDUE_PARSERS {
        return Err(ParseError::ParsersStuck(overdue));
    }
    // (abandoned by the caller, finished): whoever comes second settles the overdue count.
    let fate = std::sync::Arc::new(std::sync::Mutex::new((false, false)));
    let thread_fate = fate.clone();
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("docent-parse".into())
        // Third-party parsers (lopdf, pdf-extract) recurse on nested input; a stack overflow
        // aborts the process, so they get room (address space, touched only as used). Deeper
        // hostile nesting still reaches the limit: see ARCHITECTURE.md, "Parsers".
        .stack_size(PARSER_STACK_BYTES)
        .spawn(move || {
            TEXT_BUDGET.with(|b| b.set(limits.max_text_bytes));
            let _ = tx.send(parse(&bytes, mime.as_deref(), &name));
            let mut f = thread_fate.lock().unwrap_or_else(|e| e.into_inner());
            f.1 = true;
            if f.0 {
                OVERDUE.fetch_sub(1, Ordering::Relaxed);
            }
        });
    // The machine's state (a thread or memory limit), not the file's: transient, so the
    // document is retried and its indexed version kept, as when a parser process cannot start.
    if let Err(e) = spawned {
        return Err(ParseError::WorkerUnavailable(format!(
            "cannot start a parser thread: {e}"
        )));
    }
    let doc = match rx.recv_timeout(limits.timeout) {
        Ok(r) => r?,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            let mut f = fate.lock().unwrap_or_else(|e| e.into_inner());
            if !f.1 {
                f.0 = true;
                let n = OVERDUE.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(
                    overdue = n,
                    max = MAX_OVERDUE_PARSERS,
                    "a parser timed out and keeps running"
                );
            }
            return Err(ParseError::Abandoned(limits.timeout));
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            return Err(ParseError::Malformed(
                "the parser failed on this file".into(),
            ));
        }
    };
    within_text_limit(doc, limits)
}

fn within_text_limit(doc: ParsedDoc, limits: ParseLimits) -> Result<ParsedDoc, ParseError> {
    // Sections counted as in the builder (a child process's result is checked here the same).
    let sections = doc
        .blocks
        .iter()
        .enumerate()
        .filter(|(i, b)| {
            matches!(b.kind, BlockKind::Heading(_)) || (*i > 0 && doc.blocks[i - 1].page != b.page)
        })
        .count();
    if sections > MAX_SECTIONS {
        return Err(ParseError::TooManySections { max: MAX_SECTIONS });
    }
    if doc.text.len() > limits.max_text_bytes {
        return Err(ParseError::TooMuchText {
            len: doc.text.len(),
            max: limits.max_text_bytes,
        });
    }
    Ok(doc)
}

/// Validates that bytes are text: non-empty, no NUL anywhere, valid UTF-8 (a leading BOM is
/// dropped), or UTF-16 that says so with its byte-order mark (as Windows tools save text;
/// found by a review: such files were refused as binary).
pub fn decode_text(bytes: &[u8]) -> Result<std::borrow::Cow<'_, str>, ParseError> {
    if bytes.is_empty() {
        return Err(ParseError::Empty);
    }
    let utf16 = utf16_order(bytes);
    // Bytes with a NUL are binary (a PNG named .txt), whatever else they fail; UTF-16 has NUL
    // bytes in its ASCII, and is checked once decoded.
    if utf16.is_none()
        && let Some(pos) = memchr::memchr(0, bytes)
    {
        return Err(ParseError::Binary(pos));
    }
    let s: std::borrow::Cow<'_, str> = if let Some(little) = utf16 {
        let units = bytes[2..].chunks(2).map(|p| match (p, little) {
            ([a, b], true) => u16::from_le_bytes([*a, *b]),
            ([a, b], false) => u16::from_be_bytes([*a, *b]),
            _ => 0xDC00, // An odd last byte: a lone surrogate, refused below.
        });
        let mut out = String::with_capacity(bytes.len() / 2);
        for (i, c) in char::decode_utf16(units).enumerate() {
            out.push(c.map_err(|_| ParseError::InvalidUtf16(2 + 2 * i))?);
        }
        out.into()
    } else {
        let s = std::str::from_utf8(bytes).map_err(|e| ParseError::InvalidUtf8(e.valid_up_to()))?;
        s.strip_prefix('\u{feff}').unwrap_or(s).into()
    };
    // Anywhere, not only at the start: a NUL past the first bytes reached the index.
    if utf16.is_some()
        && let Some(pos) = memchr::memchr(0, s.as_bytes())
    {
        return Err(ParseError::Binary(pos));
    }
    if s.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    Ok(s)
}

/// `Some(true)` for UTF-16 little-endian by its byte-order mark, `Some(false)` for big-endian.
fn utf16_order(bytes: &[u8]) -> Option<bool> {
    match bytes {
        [0xFF, 0xFE, ..] => Some(true),
        [0xFE, 0xFF, ..] => Some(false),
        _ => None,
    }
}

/// The first non-empty line, when short enough to be a title (plain text, PDF).
pub(crate) fn first_line_title<'a>(lines: impl IntoIterator<Item = &'a str>) -> String {
    let mut lines = lines
        .into_iter()
        .map(str::trim)
        .skip_while(|l| l.is_empty());
    let Some(title) = lines.next().filter(|l| l.len() <= 120) else {
        return String::new();
    };
    // A value the line break cuts (an account number wrapped onto the next line) would be
    // shown whole to no one but in part to everyone in the title, where no detector sees it
    // (session 37: "… account DE89 3704 0044" with the rest on the next line): the title ends
    // before it.
    // The start of the next line is enough: no value is longer.
    let next = lines.next().unwrap_or_default();
    let mut end = next.len().min(128);
    while !next.is_char_boundary(end) {
        end -= 1;
    }
    let joined = format!("{title} {}", &next[..end]);
    let cut = crate::guardrail::pii::detect(&joined, &crate::guardrail::pii::Entity::ALL)
        .into_iter()
        .find(|f| f.range.start < title.len() && f.range.end > title.len())
        .map_or(title.len(), |f| f.range.start);
    title[..cut].trim_end().to_string()
}

fn title_from_name(name: &str) -> String {
    let stem = name.rsplit_once('.').map(|(s, _)| s).unwrap_or(name);
    stem.replace(['_', '-'], " ")
}

/// `s` with leading and trailing whitespace removed and every inner run of whitespace (Unicode
/// White_Space, as `char::is_whitespace`) replaced by one space: the words of
/// `split_whitespace` joined by single spaces. Runs on every passage returned (snippets,
/// redaction), so it is kept cheap: text that is already collapsed between two irregular
/// spaces (most of any text: words and single ASCII spaces) is copied as one run, found by a
/// tight loop over bytes.
pub(crate) fn collapse_ws(s: &str) -> String {
    /// Whether a whitespace character starts at `i`, and its length.
    #[inline]
    fn ws_at(s: &str, i: usize) -> (bool, usize) {
        let c = s.as_bytes()[i];
        if c < 0x80 {
            (matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'), 1)
        } else {
            let ch = s[i..].chars().next().expect("i is a char boundary");
            (ch.is_whitespace(), ch.len_utf8())
        }
    }
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    // Start of the run being copied through unchanged (none while in irregular whitespace).
    let mut run: Option<usize> = None;
    let mut i = 0;
    while i < b.len() {
        // Printable ASCII other than the space: never whitespace.
        let from = i;
        while i < b.len() && b[i] > b' ' && b[i] < 0x7f {
            i += 1;
        }
        if i > from {
            run.get_or_insert(from);
        }
        if i == b.len() {
            break;
        }
        let (ws, len) = ws_at(s, i);
        if !ws {
            run.get_or_insert(i);
            i += len;
            continue;
        }
        // One ASCII space between two words stays in the run.
        if b[i] == b' ' && run.is_some() && i + 1 < b.len() && !ws_at(s, i + 1).0 {
            i += 1;
            continue;
        }
        if let Some(r) = run.take() {
            out.push_str(&s[r..i]);
        }
        while i < b.len() {
            let (ws, len) = ws_at(s, i);
            if !ws {
                break;
            }
            i += len;
        }
        if i < b.len() && !out.is_empty() {
            out.push(' ');
        }
    }
    if let Some(r) = run {
        out.push_str(&s[r..]);
    }
    out
}

/// Whether `len` bytes of text pass this thread's budget; if so, the parse fails with
/// [`ParseError::TooMuchText`] (for parsers that know their text's size before building it).
pub(crate) fn over_budget(len: usize) -> bool {
    len > TEXT_BUDGET.with(|b| b.get()) && went_over(len)
}

/// Records that this thread's parse went over its budget, holding `len` bytes (the first time
/// counts); always true.
fn went_over(len: usize) -> bool {
    OVER_BUDGET.with(|o| {
        if o.get().is_none() {
            o.set(Some(len));
        }
    });
    true
}

/// Accumulates extracted text and block spans; shared by the parsers. It stops taking text once
/// the text and heading paths it holds pass this thread's budget (see [`parse`]).
pub(crate) struct TextBuilder {
    text: String,
    blocks: Vec<Block>,
    /// (level, heading text)
    headings: Vec<(u8, String)>,
    open: Option<(BlockKind, usize)>,
    page: Option<u32>,
    /// Bytes of the heading paths of the finished blocks.
    heading_bytes: usize,
    /// Blocks that start a section (a heading, a new page): each starts a chunk, whatever its
    /// text (see [`MAX_SECTIONS`]).
    sections: usize,
    budget: usize,
}

/// The most sections (headings and pages, each of which starts a chunk) a document may have.
/// A file of one-letter headings or one-character pages fits any text budget while making
/// millions of chunks (gigabytes of vectors, the pipeline busy for minutes); a long manual or
/// API reference has a few thousand, a 10,000-page PDF ten thousand.
pub const MAX_SECTIONS: usize = 50_000;

impl Default for TextBuilder {
    fn default() -> Self {
        Self {
            text: String::new(),
            blocks: Vec::new(),
            headings: Vec::new(),
            open: None,
            page: None,
            heading_bytes: 0,
            sections: 0,
            budget: TEXT_BUDGET.with(|b| b.get()),
        }
    }
}

impl TextBuilder {
    /// Whether the budget is spent: parsers stop feeding it (the parse fails with
    /// [`ParseError::TooMuchText`]).
    pub fn over(&self) -> bool {
        if self.sections > MAX_SECTIONS {
            OVER_SECTIONS.with(|o| o.set(true));
            return true;
        }
        let used = self.text.len().saturating_add(self.heading_bytes);
        used > self.budget && went_over(used)
    }

    /// The page of blocks started from now on.
    pub fn set_page(&mut self, page: Option<u32>) {
        self.finish();
        self.page = page;
    }

    pub fn start(&mut self, kind: BlockKind) {
        self.finish();
        if self.over() {
            return;
        }
        if !self.text.is_empty() {
            self.text.push_str("\n\n");
        }
        self.open = Some((kind, self.text.len()));
    }

    /// Appends inline text to the open block (opening a paragraph if none is open), collapsing
    /// runs of whitespace unless `keep_ws` (code).
    pub fn push(&mut self, s: &str, keep_ws: bool) {
        if self.over() {
            return;
        }
        if self.open.is_none() {
            self.start(BlockKind::Paragraph);
        }
        if keep_ws {
            self.text.push_str(s);
            return;
        }
        let start = self.open.map(|(_, st)| st).unwrap_or(0);
        let mut space = s.starts_with(char::is_whitespace);
        for word in s.split_whitespace() {
            if space && self.text.len() > start && !self.text.ends_with(char::is_whitespace) {
                self.text.push(' ');
            }
            self.text.push_str(word);
            space = true;
        }
        if s.ends_with(char::is_whitespace)
            && self.text.len() > start
            && !self.text.ends_with(char::is_whitespace)
        {
            self.text.push(' ');
        }
    }

    /// Closes the open block, trimming trailing whitespace; empty blocks are dropped.
    pub fn finish(&mut self) {
        let Some((kind, start)) = self.open.take() else {
            return;
        };
        let trimmed = self.text[start..].trim_end().len();
        self.text.truncate(start + trimmed);
        let lead = self.text[start..].len() - self.text[start..].trim_start().len();
        let start = start + lead;
        if start >= self.text.len() {
            // Nothing in it: drop the separator we added, too.
            let t = self.text.trim_end().len();
            self.text.truncate(t);
            return;
        }
        let heading_text = self.text[start..].to_string();
        if let BlockKind::Heading(level) = kind {
            while self.headings.last().is_some_and(|(l, _)| *l >= level) {
                self.headings.pop();
            }
        }
        let heading_path: Vec<String> = self.headings.iter().map(|(_, h)| h.clone()).collect();
        self.heading_bytes = self
            .heading_bytes
            .saturating_add(heading_path.iter().map(String::len).sum::<usize>());
        if matches!(kind, BlockKind::Heading(_))
            || self.blocks.last().is_some_and(|b| b.page != self.page)
        {
            self.sections += 1;
        }
        self.blocks.push(Block {
            kind,
            span: start..self.text.len(),
            heading_path,
            page: self.page,
        });
        if let BlockKind::Heading(level) = kind {
            let mut h = collapse_ws(&heading_text);
            cap_heading(&mut h);
            self.headings.push((level, h));
        }
    }

    pub fn open_kind(&self) -> Option<BlockKind> {
        self.open.map(|(k, _)| k)
    }

    pub fn into_parts(mut self) -> (String, Vec<Block>) {
        self.finish();
        (self.text, self.blocks)
    }

    /// The finished document with `title` (empty: the parser found none).
    pub fn into_doc(self, title: String) -> ParsedDoc {
        let (text, blocks) = self.into_parts();
        ParsedDoc {
            title,
            text,
            blocks,
        }
    }
}

impl ParsedDoc {
    /// Checks the span invariant: blocks are non-empty, in order, non-overlapping, on char
    /// boundaries of `text`, and trimmed. (Used by tests and the fuzz targets.)
    pub fn validate(&self) -> Result<(), String> {
        let mut prev_end = 0;
        for b in &self.blocks {
            let ok = b.span.start < b.span.end
                && b.span.start >= prev_end
                && b.span.end <= self.text.len()
                && self.text.is_char_boundary(b.span.start)
                && self.text.is_char_boundary(b.span.end)
                && self.text[b.span.clone()].trim() == &self.text[b.span.clone()];
            if !ok {
                return Err(format!("invalid block {b:?} (previous end {prev_end})"));
            }
            prev_end = b.span.end;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) fn assert_spans_valid(doc: &ParsedDoc) {
    if let Err(e) = doc.validate() {
        panic!("{e}");
    }
}

#[cfg(test)]
mod tests {

    /// Found by a review: a media type that says nothing of the format (octet-stream) refused
    /// a PDF, and the one Windows gives `.csv` files sent CSV to the spreadsheet reader.
    #[test]
    fn a_media_type_that_names_no_format_defers_to_the_name() {
        use super::Format;
        let at = |m: Option<&str>, n: &str| Format::detect(m, n).ok();
        assert!(matches!(
            at(Some("application/octet-stream"), "a.pdf"),
            Some(Format::Pdf)
        ));
        assert!(matches!(at(Some(""), "notes.md"), Some(Format::Markdown)));
        assert!(matches!(
            at(Some("application/vnd.ms-excel"), "data.csv"),
            Some(Format::Csv)
        ));
        assert!(matches!(
            at(Some("application/vnd.ms-excel"), "book.xls"),
            Some(Format::Xlsx)
        ));
        assert!(at(Some("application/octet-stream"), "blob.bin").is_none());
        // An Office file is a zip: some clients say so.
        assert!(matches!(
            at(Some("application/zip"), "a.docx"),
            Some(Format::Docx)
        ));
        assert!(at(Some("application/zip"), "a.zip").is_none());
    }

    /// Session 37's review: a plain-text file's first line became its title with the first
    /// half of an account number the line break cut; the title ends before such a value.
    #[test]
    fn a_title_from_a_first_line_stops_before_a_value_the_line_break_cuts() {
        let wrapped = "Refunds go to the account DE89 3704 0044\n0532 0130 00, every month.\n";
        let d = parse(wrapped.as_bytes(), None, "refunds.txt").unwrap();
        assert_eq!(d.title, "Refunds go to the account");
        // A value whole on the first line is the redaction's to find; other titles stay.
        let whole = "Refunds: DE89 3704 0044 0532 0130 00\nmore text\n";
        assert_eq!(
            parse(whole.as_bytes(), None, "r.txt").unwrap().title,
            "Refunds: DE89 3704 0044 0532 0130 00"
        );
        let plain = "Vacation policy\nEmployees get 25 days.\n";
        assert_eq!(
            parse(plain.as_bytes(), None, "v.txt").unwrap().title,
            "Vacation policy"
        );
    }

    /// A long heading above many blocks was copied into every block's heading path: the copies
    /// count against the text budget, and headings are cut to 256 bytes.
    #[test]
    fn heading_paths_count_against_the_text_budget() {
        let src = format!("# {}\n\n{}", "w".repeat(10_000), "a\n\n".repeat(5_000));
        let limits = ParseLimits {
            max_text_bytes: 1 << 20,
            ..ParseLimits::default()
        };
        let r = parse_limited(src.into_bytes(), None, "deep.md".into(), limits);
        assert!(matches!(r, Err(ParseError::TooMuchText { .. })), "{r:?}");
        // Under the budget: the heading is kept, cut.
        let d = parse(
            format!("# {}\n\nbody", "w".repeat(10_000)).as_bytes(),
            None,
            "h.md",
        )
        .unwrap();
        assert_eq!(d.blocks[1].heading_path[0].len(), MAX_HEADING_BYTES);
    }

    /// Session 31's review: every heading starts a chunk, and a file of one-letter headings
    /// ("# a" repeated) fit the text budget while making millions of chunks. Past
    /// `MAX_SECTIONS` headings and pages, a document is refused, whatever its text.
    #[test]
    fn a_document_of_too_many_sections_is_refused() {
        let limits = ParseLimits::default();
        let many = "# a\n".repeat(MAX_SECTIONS + 1);
        let r = parse_limited(many.into_bytes(), None, "many.md".into(), limits);
        assert!(
            matches!(r, Err(ParseError::TooManySections { .. })),
            "{r:?}"
        );
        // A long manual with thousands of headings is fine.
        let manual = "# Heading\n\nA paragraph of text.\n\n".repeat(12_000);
        let d = parse_limited(manual.into_bytes(), None, "manual.md".into(), limits).unwrap();
        assert_eq!(d.blocks.len(), 24_000);
    }

    /// A title or the heading a section opens with is cut too: each chunk carries them (found
    /// by a review: a 1 MB heading was copied whole into every chunk of its section, and into
    /// the title every chunk's embedding input starts with).
    #[test]
    fn a_long_title_and_heading_are_cut_before_every_chunk_carries_them() {
        let src = format!("# {}\n\nThe body of the note.", "word ".repeat(20_000));
        let d = parse(src.as_bytes(), None, "long.md").unwrap();
        assert!(
            (200..=MAX_HEADING_BYTES).contains(&d.title.len()),
            "{}",
            d.title
        );
        assert!(d.title.ends_with("word"), "cut at a word: {}", d.title);
        let chunks = crate::chunk::chunk(
            &d,
            crate::chunk::ChunkerConfig {
                max_tokens: 200,
                overlap_tokens: 32,
            },
            &crate::chunk::WordCounter,
        );
        assert!(chunks.len() > 50, "{}", chunks.len());
        for c in &chunks {
            assert!(c.heading_path.iter().all(|h| h.len() <= MAX_HEADING_BYTES));
        }
    }

    /// A cut never leaves part of a value PII redaction recognises whole (found by a review:
    /// a card number cut to its first groups was no longer a card number).
    #[test]
    fn a_cut_title_keeps_no_part_of_a_split_number_or_address() {
        let card = "4111 1111 1111 1111";
        for tail in [card, "jane.doe@fernhill.example"] {
            // The value starts 8 bytes before the cut.
            let mut t = format!("{} {tail} and more", "x".repeat(MAX_HEADING_BYTES - 9));
            cap_heading(&mut t);
            assert_eq!(t, "x".repeat(MAX_HEADING_BYTES - 9), "{tail}");
        }
        let mut t = format!("Refund to {card} {}", "y ".repeat(200));
        cap_heading(&mut t);
        assert!(t.contains(card), "whole before the cut: {t}");
    }

    /// PDFs, spreadsheets, HTML and Office archives always go to the parser process (their
    /// parsers can abort the process: calamine reserves what a file's counts claim, html5ever
    /// can be made to build gigabytes from a small page, an archive part inflates a
    /// thousandfold); Markdown and CSV once they are large enough to take gigabytes (a
    /// review); plain text, code and JSON, read within the budget as they go, stay.
    #[test]
    fn hostile_capable_formats_are_parsed_in_a_child_process() {
        for f in [
            Format::Pdf,
            Format::Xlsx,
            Format::Html,
            Format::Docx,
            Format::Pptx,
        ] {
            assert!(f.isolated(1), "{f:?}");
        }
        for f in [Format::Markdown, Format::Csv] {
            assert!(!f.isolated(IN_PROCESS_MAX), "{f:?}");
            assert!(f.isolated(IN_PROCESS_MAX + 1), "{f:?}");
        }
        for f in [Format::Text, Format::Code, Format::Json] {
            assert!(!f.isolated(100 << 20), "{f:?}");
        }
    }

    use super::*;
    use proptest::prelude::*;

    /// Text saved as UTF-16 with its byte-order mark (Notepad's "Unicode") is read.
    #[test]
    fn utf16_text_with_a_byte_order_mark_is_read() {
        let text = "Reisekosten: Züge in der zweiten Klasse.\n\nHotels bis 120 €.";
        let le: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let be: Vec<u8> = [0xFE, 0xFF]
            .into_iter()
            .chain(text.encode_utf16().flat_map(u16::to_be_bytes))
            .collect();
        for bytes in [le, be] {
            let doc = parse(&bytes, None, "a.txt").unwrap();
            assert_eq!(doc.text, text);
            assert_eq!(doc.blocks.len(), 2);
        }
    }

    #[test]
    fn rejects_bad_bytes_with_reasons() {
        assert_eq!(parse(b"", None, "a.txt").unwrap_err(), ParseError::Empty);
        assert_eq!(
            parse(b"  \n ", None, "a.txt").unwrap_err(),
            ParseError::Empty
        );
        assert_eq!(
            parse(b"ab\0cd", None, "a.txt").unwrap_err(),
            ParseError::Binary(2)
        );
        // Not UTF-8 either: binary first (a PNG named .txt).
        assert_eq!(
            parse(&[0x89, b'P', b'N', b'G', 0, 0], None, "a.txt").unwrap_err(),
            ParseError::Binary(4)
        );
        assert_eq!(
            parse(b"ok \xff\xfe", None, "a.txt").unwrap_err(),
            ParseError::InvalidUtf8(3)
        );
        // A NUL past the first 64 KiB.
        let mut late = "text ".repeat(20_000).into_bytes();
        late.extend(b"\0 more");
        assert_eq!(
            parse(&late, None, "a.txt").unwrap_err(),
            ParseError::Binary(100_000)
        );
        // UTF-16 with a lone surrogate.
        assert_eq!(
            parse(&[0xFF, 0xFE, b'a', 0, 0x00, 0xD8, b'b', 0], None, "a.txt").unwrap_err(),
            ParseError::InvalidUtf16(4)
        );
        assert_eq!(
            parse(b"x", None, "a.png").unwrap_err(),
            ParseError::Unsupported(".png".into())
        );
        assert!(matches!(
            parse(b"x", Some("application/x-msdownload"), "a").unwrap_err(),
            ParseError::Unsupported(_)
        ));
    }

    #[test]
    fn title_falls_back_to_file_name() {
        let d = parse(b"just text, no heading", None, "travel_policy-2026.md").unwrap();
        assert_eq!(d.title, "travel policy 2026");
    }

    #[test]
    fn collapse_ws_joins_words_with_single_spaces() {
        assert_eq!(collapse_ws("  a\t\tb\n\u{a0}c\u{3000} "), "a b c");
        assert_eq!(collapse_ws("x\u{0b}y\u{2028}z"), "x y z");
        assert_eq!(collapse_ws(" \n "), "");
        assert_eq!(collapse_ws("één"), "één");
    }

    proptest! {
        #[test]
        fn collapse_ws_matches_split_whitespace(
            s in proptest::collection::vec(
                prop_oneof![
                    Just(' '), Just('\t'), Just('\n'), Just('\u{0b}'), Just('\u{a0}'),
                    Just('\u{2009}'), Just('\u{3000}'), Just('\u{85}'), Just('\u{1c}'),
                    Just('a'), Just('é'), Just('字'), Just('\u{200b}'), any::<char>(),
                ],
                0..40,
            ).prop_map(|v| v.into_iter().collect::<String>())
        ) {
            prop_assert_eq!(collapse_ws(&s), s.split_whitespace().collect::<Vec<_>>().join(" "));
        }

        #[test]
        fn any_utf8_parses_to_valid_spans(s in "\\PC{0,300}", fmt in 0..6usize) {
            let name = ["a.txt", "a.md", "a.html", "a.rs", "a.csv", "a.json"][fmt];
            if let Ok(doc) = parse(s.as_bytes(), None, name) {
                assert_spans_valid(&doc);
            }
        }
    }
}
