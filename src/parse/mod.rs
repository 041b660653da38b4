//! Parsing: bytes of a source document → plain extracted text plus the blocks (headings,
//! paragraphs, list items, code) it consists of, each with its byte span in that text.
//!
//! Citations point into the extracted text, so the invariant every parser keeps is: each block's
//! span is a valid `[start, end)` range on char boundaries of `ParsedDoc::text`, blocks are in
//! order and do not overlap. Parsers never panic on hostile input; they return a `ParseError`.

mod html;
mod markdown;
mod text;

use std::ops::Range;

/// What a block is, for chunking decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// A heading of the given level (1 = top).
    Heading(u8),
    Paragraph,
    ListItem,
    Code,
    TableCell,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub kind: BlockKind,
    pub span: Range<usize>,
    /// Headings enclosing this block, outermost first (a heading's own path excludes itself).
    pub heading_path: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ParsedDoc {
    pub title: String,
    pub text: String,
    pub blocks: Vec<Block>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("unsupported file type: {0}")]
    Unsupported(String),
    #[error("binary content (NUL byte at offset {0})")]
    Binary(usize),
    #[error("invalid UTF-8 at byte {0}")]
    InvalidUtf8(usize),
    #[error("empty document")]
    Empty,
    #[error("no text extracted")]
    NoText,
}

/// The formats this build parses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Markdown,
    Html,
}

impl Format {
    /// From a media type if given, else from the name's extension.
    pub fn detect(mime: Option<&str>, name: &str) -> Result<Self, ParseError> {
        if let Some(m) = mime {
            let m = m.split(';').next().unwrap_or(m).trim().to_ascii_lowercase();
            return match m.as_str() {
                "text/plain" => Ok(Self::Text),
                "text/markdown" | "text/x-markdown" => Ok(Self::Markdown),
                "text/html" | "application/xhtml+xml" => Ok(Self::Html),
                other => Err(ParseError::Unsupported(other.to_string())),
            };
        }
        let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
        match ext.as_deref() {
            Some("txt" | "text" | "log" | "rst") => Ok(Self::Text),
            Some("md" | "markdown" | "mdx") => Ok(Self::Markdown),
            Some("html" | "htm" | "xhtml") => Ok(Self::Html),
            Some(e) => Err(ParseError::Unsupported(format!(".{e}"))),
            None => Err(ParseError::Unsupported("no extension".to_string())),
        }
    }
}

/// Parses a document. `name` is the file name, the title of last resort.
pub fn parse(bytes: &[u8], mime: Option<&str>, name: &str) -> Result<ParsedDoc, ParseError> {
    let format = Format::detect(mime, name)?;
    let src = decode_text(bytes)?;
    let mut doc = match format {
        Format::Text => text::parse(src),
        Format::Markdown => markdown::parse(src),
        Format::Html => html::parse(src),
    };
    if doc.blocks.is_empty() || doc.text.trim().is_empty() {
        return Err(ParseError::NoText);
    }
    if doc.title.trim().is_empty() {
        doc.title = title_from_name(name);
    }
    doc.title = collapse_ws(&doc.title);
    Ok(doc)
}

/// Validates that bytes are text: non-empty, no NUL, valid UTF-8 (a leading BOM is dropped).
pub fn decode_text(bytes: &[u8]) -> Result<&str, ParseError> {
    if bytes.is_empty() {
        return Err(ParseError::Empty);
    }
    if let Some(pos) = memchr::memchr(0, &bytes[..bytes.len().min(64 * 1024)]) {
        return Err(ParseError::Binary(pos));
    }
    let s = std::str::from_utf8(bytes).map_err(|e| ParseError::InvalidUtf8(e.valid_up_to()))?;
    let s = s.strip_prefix('\u{feff}').unwrap_or(s);
    if s.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    Ok(s)
}

fn title_from_name(name: &str) -> String {
    let stem = name.rsplit_once('.').map(|(s, _)| s).unwrap_or(name);
    stem.replace(['_', '-'], " ")
}

pub(crate) fn collapse_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Accumulates extracted text and block spans; shared by the parsers.
#[derive(Default)]
pub(crate) struct TextBuilder {
    text: String,
    blocks: Vec<Block>,
    /// (level, heading text)
    headings: Vec<(u8, String)>,
    open: Option<(BlockKind, usize)>,
}

impl TextBuilder {
    pub fn start(&mut self, kind: BlockKind) {
        self.finish();
        if !self.text.is_empty() {
            self.text.push_str("\n\n");
        }
        self.open = Some((kind, self.text.len()));
    }

    /// Appends inline text to the open block (opening a paragraph if none is open), collapsing
    /// runs of whitespace unless `keep_ws` (code).
    pub fn push(&mut self, s: &str, keep_ws: bool) {
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
        let heading_path = self.headings.iter().map(|(_, h)| h.clone()).collect();
        self.blocks.push(Block {
            kind,
            span: start..self.text.len(),
            heading_path,
        });
        if let BlockKind::Heading(level) = kind {
            self.headings.push((level, collapse_ws(&heading_text)));
        }
    }

    pub fn open_kind(&self) -> Option<BlockKind> {
        self.open.map(|(k, _)| k)
    }

    pub fn into_parts(mut self) -> (String, Vec<Block>) {
        self.finish();
        (self.text, self.blocks)
    }
}

#[cfg(test)]
pub(crate) fn assert_spans_valid(doc: &ParsedDoc) {
    let mut prev_end = 0;
    for b in &doc.blocks {
        assert!(b.span.start < b.span.end, "empty block {b:?}");
        assert!(b.span.start >= prev_end, "overlapping block {b:?}");
        assert!(b.span.end <= doc.text.len());
        assert!(doc.text.is_char_boundary(b.span.start) && doc.text.is_char_boundary(b.span.end));
        assert_eq!(doc.text[b.span.clone()].trim(), &doc.text[b.span.clone()]);
        prev_end = b.span.end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
        assert_eq!(
            parse(b"ok \xff\xfe", None, "a.txt").unwrap_err(),
            ParseError::InvalidUtf8(3)
        );
        assert_eq!(
            parse(b"x", None, "a.png").unwrap_err(),
            ParseError::Unsupported(".png".into())
        );
        assert!(matches!(
            parse(b"x", Some("application/pdf"), "a").unwrap_err(),
            ParseError::Unsupported(_)
        ));
    }

    #[test]
    fn title_falls_back_to_file_name() {
        let d = parse(b"just text, no heading", None, "travel_policy-2026.md").unwrap();
        assert_eq!(d.title, "travel policy 2026");
    }

    proptest! {
        #[test]
        fn any_utf8_parses_to_valid_spans(s in "\\PC{0,300}", fmt in 0..3usize) {
            let name = ["a.txt", "a.md", "a.html"][fmt];
            if let Ok(doc) = parse(s.as_bytes(), None, name) {
                assert_spans_valid(&doc);
            }
        }
    }
}
