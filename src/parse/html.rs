//! HTML via scraper (html5ever): a real parser, so broken markup is handled as browsers do.
//! Script, style and similar elements are dropped; block elements start blocks; headings build
//! the heading path. Title: `<title>`, else the first `<h1>`.

use ego_tree::NodeRef;
use scraper::{Html, Node};

use super::{BlockKind, ParsedDoc, TextBuilder};

const SKIP: &[&str] = &[
    "script", "style", "noscript", "template", "head", "svg", "iframe", "object",
];
const BLOCKS: &[&str] = &[
    "p",
    "div",
    "section",
    "article",
    "main",
    "header",
    "footer",
    "aside",
    "nav",
    "blockquote",
    "ul",
    "ol",
    "dl",
    "dt",
    "dd",
    "table",
    "tr",
    "form",
    "fieldset",
    "figure",
    "figcaption",
    "address",
    "br",
    "hr",
];

pub fn parse(src: &str) -> ParsedDoc {
    let html = Html::parse_document(src);
    let mut b = TextBuilder::default();
    let mut first_h1 = None;
    walk(html.tree.root(), &mut b, &mut first_h1, false);
    let (text, blocks) = b.into_parts();
    let title = html
        .select(&scraper::Selector::parse("title").expect("static selector"))
        .next()
        .map(|t| t.text().collect::<String>())
        .filter(|t| !t.trim().is_empty())
        .or(first_h1)
        .unwrap_or_default();
    ParsedDoc {
        title,
        text,
        blocks,
    }
}

fn walk(node: NodeRef<'_, Node>, b: &mut TextBuilder, first_h1: &mut Option<String>, in_pre: bool) {
    match node.value() {
        Node::Text(t) => b.push(t, in_pre),
        Node::Element(el) => {
            let name = el.name();
            if SKIP.contains(&name) {
                return;
            }
            let heading = match name {
                "h1" => Some(1),
                "h2" => Some(2),
                "h3" => Some(3),
                "h4" => Some(4),
                "h5" => Some(5),
                "h6" => Some(6),
                _ => None,
            };
            let kind = if let Some(l) = heading {
                Some(BlockKind::Heading(l))
            } else {
                match name {
                    "li" => Some(BlockKind::ListItem),
                    "pre" => Some(BlockKind::Code),
                    "td" | "th" => Some(BlockKind::TableCell),
                    n if BLOCKS.contains(&n) => Some(BlockKind::Paragraph),
                    _ => None,
                }
            };
            if let Some(k) = kind {
                b.start(k);
            }
            let pre = in_pre || name == "pre";
            for child in node.children() {
                walk(child, b, first_h1, pre);
            }
            if kind.is_some() {
                if heading == Some(1) && first_h1.is_none() {
                    let t: String = scraper::ElementRef::wrap(node)
                        .map(|e| e.text().collect())
                        .unwrap_or_default();
                    if !t.trim().is_empty() {
                        *first_h1 = Some(t);
                    }
                }
                b.finish();
            }
        }
        _ => {
            for child in node.children() {
                walk(child, b, first_h1, in_pre);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_blocks_and_skips_scripts() {
        let src = "<html><head><title>Expense  Policy</title><style>p{}</style></head><body>\
            <h1>Expenses</h1><p>Submit receipts within <b>30 days</b>.</p><script>alert(1)</script>\
            <h2>Travel</h2><ul><li>Economy class</li><li>Hotels &amp; meals</li></ul>\
            <p>Unclosed <i>tags<p>next para</body>";
        let d = parse(src);
        assert_eq!(crate::parse::collapse_ws(&d.title), "Expense Policy");
        let texts: Vec<&str> = d.blocks.iter().map(|b| &d.text[b.span.clone()]).collect();
        assert_eq!(
            texts,
            [
                "Expenses",
                "Submit receipts within 30 days.",
                "Travel",
                "Economy class",
                "Hotels & meals",
                "Unclosed tags",
                "next para"
            ]
        );
        assert_eq!(d.blocks[3].heading_path, ["Expenses", "Travel"]);
        assert!(!d.text.contains("alert"));
        crate::parse::assert_spans_valid(&d);
    }
}
