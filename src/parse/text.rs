//! Plain text: the extracted text is the source itself; blocks are paragraphs separated by blank
//! lines, so offsets point straight into the file.

use super::{Block, BlockKind, ParsedDoc};

pub fn parse(src: &str) -> ParsedDoc {
    split(src, BlockKind::Paragraph)
}

/// Source code: the same paragraph split (blank lines separate functions and sections), blocks
/// marked as code, so chunking keeps their whitespace.
pub fn code(src: &str) -> ParsedDoc {
    let mut d = split(src, BlockKind::Code);
    // A first line like `fn main() {` is no title: use the file name.
    d.title.clear();
    d
}

fn split(src: &str, kind: BlockKind) -> ParsedDoc {
    // The text is the source: past the budget, stop before making a block of every paragraph
    // (a file of "a\n\n" repeated made millions of them before the budget applied).
    if super::over_budget(src.len()) {
        return ParsedDoc {
            title: String::new(),
            text: String::new(),
            blocks: Vec::new(),
        };
    }
    let mut blocks = Vec::new();
    let mut pos = 0;
    for para in src.split("\n\n") {
        let start = pos + (para.len() - para.trim_start().len());
        let end = pos + para.trim_end().len();
        if end > start {
            blocks.push(Block {
                kind,
                span: start..end,
                heading_path: Vec::new(),
                page: None,
            });
        }
        pos += para.len() + 2;
    }
    let title = super::first_line_title(src.lines());
    ParsedDoc {
        title,
        text: src.to_string(),
        blocks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_point_into_source() {
        let src = "Title line\n\n  First para\ncontinues.  \n\n\n\nSecond.\n";
        let d = parse(src);
        assert_eq!(d.title, "Title line");
        let texts: Vec<&str> = d.blocks.iter().map(|b| &src[b.span.clone()]).collect();
        assert_eq!(texts, ["Title line", "First para\ncontinues.", "Second."]);
        crate::parse::assert_spans_valid(&d);
    }
}
