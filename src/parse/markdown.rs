//! Markdown via pulldown-cmark: the extracted text is the rendered plain text (no markup), one
//! block per heading, paragraph, list item, code block and table cell. Title: front matter
//! `title:`, else the first heading.

use pulldown_cmark::{Event, HeadingLevel, MetadataBlockKind, Options, Parser, Tag, TagEnd};

use super::{BlockKind, ParsedDoc, TextBuilder};

pub fn parse(src: &str) -> ParsedDoc {
    let opts = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_YAML_STYLE_METADATA_BLOCKS
        | Options::ENABLE_FOOTNOTES;
    let mut b = TextBuilder::default();
    let mut title_from_meta = None;
    let mut first_heading: Option<String> = None;
    let mut in_heading = false;
    let mut heading_buf = String::new();
    let mut in_meta = false;
    let mut in_code = false;
    for ev in Parser::new_ext(src, opts) {
        match ev {
            Event::Start(Tag::MetadataBlock(MetadataBlockKind::YamlStyle)) => in_meta = true,
            Event::End(TagEnd::MetadataBlock(_)) => in_meta = false,
            Event::Text(t) if in_meta => {
                for line in t.lines() {
                    if let Some(v) = line.strip_prefix("title:") {
                        let v = v.trim().trim_matches(['"', '\'']).trim();
                        if !v.is_empty() {
                            title_from_meta = Some(v.to_string());
                        }
                    }
                }
            }
            Event::Start(Tag::Heading { level, .. }) => {
                b.start(BlockKind::Heading(heading_level(level)));
                in_heading = true;
                heading_buf.clear();
            }
            Event::End(TagEnd::Heading(_)) => {
                b.finish();
                in_heading = false;
                if first_heading.is_none() && !heading_buf.trim().is_empty() {
                    first_heading = Some(heading_buf.clone());
                }
            }
            Event::Start(Tag::Paragraph) => {
                // Paragraphs inside list items continue the item's block.
                if !matches!(b.open_kind(), Some(BlockKind::ListItem)) {
                    b.start(BlockKind::Paragraph);
                } else {
                    b.push(" ", false);
                }
            }
            Event::End(TagEnd::Paragraph)
                if !matches!(b.open_kind(), Some(BlockKind::ListItem)) =>
            {
                b.finish()
            }
            Event::Start(Tag::Item) => b.start(BlockKind::ListItem),
            Event::End(TagEnd::Item) => b.finish(),
            Event::Start(Tag::CodeBlock(_)) => {
                b.start(BlockKind::Code);
                in_code = true;
            }
            Event::End(TagEnd::CodeBlock) => {
                b.finish();
                in_code = false;
            }
            Event::Start(Tag::TableCell) => b.start(BlockKind::TableCell),
            Event::End(TagEnd::TableCell) => b.finish(),
            Event::Text(t) | Event::Code(t) => {
                if in_heading {
                    heading_buf.push_str(&t);
                }
                b.push(&t, in_code);
            }
            Event::SoftBreak | Event::HardBreak => b.push(" ", false),
            Event::Html(_) | Event::InlineHtml(_) => {}
            _ => {}
        }
    }
    let (text, blocks) = b.into_parts();
    let title = title_from_meta.or(first_heading).unwrap_or_default();
    ParsedDoc {
        title,
        text,
        blocks,
    }
}

fn heading_level(l: HeadingLevel) -> u8 {
    match l {
        HeadingLevel::H1 => 1,
        HeadingLevel::H2 => 2,
        HeadingLevel::H3 => 3,
        HeadingLevel::H4 => 4,
        HeadingLevel::H5 => 5,
        HeadingLevel::H6 => 6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_plain_text_headings_and_front_matter() {
        let src = "---\ntitle: \"Leave policy\"\nowner: hr\n---\n\n# Leave\n\nYou get **25 days** of [paid](x) leave.\n\n## Parental\n\n- Item one\n- Item `two`\n\n```\ncode  here\n```\n";
        let d = parse(src);
        assert_eq!(d.title, "Leave policy");
        let texts: Vec<&str> = d.blocks.iter().map(|b| &d.text[b.span.clone()]).collect();
        assert_eq!(
            texts,
            [
                "Leave",
                "You get 25 days of paid leave.",
                "Parental",
                "Item one",
                "Item two",
                "code  here"
            ]
        );
        assert_eq!(d.blocks[3].heading_path, ["Leave", "Parental"]);
        assert_eq!(d.blocks[1].heading_path, ["Leave"]);
        assert!(!d.text.contains("**"));
        crate::parse::assert_spans_valid(&d);
    }

    #[test]
    fn title_from_first_heading() {
        let d = parse("Intro text\n\n# Real Title\n\nbody");
        assert_eq!(d.title, "Real Title");
    }
}
