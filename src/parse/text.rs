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
    // Paragraphs end at blank lines: empty, or only whitespace (a Windows file's `\r`, spaces
    // an editor left; found by a review: a file with CRLF line ends was one block).
    let mut blocks = Vec::new();
    let mut block = |span: std::ops::Range<usize>| {
        blocks.push(Block {
            kind,
            span,
            heading_path: Vec::new(),
            page: None,
        })
    };
    let mut open: Option<usize> = None;
    let mut end = 0;
    let mut pos = 0;
    for line in src.split_inclusive('\n') {
        if line.trim().is_empty() {
            if let Some(start) = open.take() {
                block(start..end);
            }
        } else {
            open.get_or_insert(pos + (line.len() - line.trim_start().len()));
            end = pos + line.trim_end().len();
        }
        pos += line.len();
    }
    if let Some(start) = open {
        block(start..end);
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

    #[test]
    fn windows_line_ends_and_lines_of_spaces_separate_paragraphs() {
        let src = "Travel\r\n\r\nTrains in second class.\r\nHotels up to 120.\r\n \t\r\nEnd.";
        let d = parse(src);
        let texts: Vec<&str> = d.blocks.iter().map(|b| &src[b.span.clone()]).collect();
        assert_eq!(
            texts,
            [
                "Travel",
                "Trains in second class.\r\nHotels up to 120.",
                "End."
            ]
        );
        crate::parse::assert_spans_valid(&d);
    }
}
