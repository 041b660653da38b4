//! HTML via scraper (html5ever): a real parser, so broken markup is handled as browsers do.
//! Script, style and similar elements are dropped; block elements start blocks; headings build
//! the heading path. Title: `<title>`, else the first `<h1>`.

use ego_tree::NodeRef;
use ego_tree::iter::Edge;
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

/// Elements whose text is one line: a `<br>` or `<hr>` whose nearest enclosing block is one
/// of them is a space, not a new block (a review: `<h2>Annual<br>Report</h2>` became the
/// heading "Annual"). Inside another block (a `<p>` or `<pre>` in a table cell) it still
/// breaks the line.
const ONE_LINE: &[&str] = &[
    "h1", "h2", "h3", "h4", "h5", "h6", "li", "td", "th", "dt", "dd", "caption",
];

pub fn parse(src: &str) -> ParsedDoc {
    let html = Html::parse_document(src);
    let mut b = TextBuilder::default();
    let mut first_h1 = None;
    walk(html.tree.root(), &mut b, &mut first_h1);
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

/// The block an element starts, if any, and its heading level.
fn block_of(name: &str) -> Option<(BlockKind, Option<u8>)> {
    let heading = match name {
        "h1" => Some(1),
        "h2" => Some(2),
        "h3" => Some(3),
        "h4" => Some(4),
        "h5" => Some(5),
        "h6" => Some(6),
        _ => None,
    };
    let kind = match (heading, name) {
        (Some(l), _) => BlockKind::Heading(l),
        (None, "li") => BlockKind::ListItem,
        (None, "pre") => BlockKind::Code,
        (None, "td" | "th") => BlockKind::TableCell,
        (None, n) if BLOCKS.contains(&n) => BlockKind::Paragraph,
        _ => return None,
    };
    Some((kind, heading))
}

/// Walks the tree in document order without recursion: a hostile file may nest elements as
/// deep as it likes (each level was a stack frame, and a stack overflow aborts the process).
fn walk(root: NodeRef<'_, Node>, b: &mut TextBuilder, first_h1: &mut Option<String>) {
    // The element whose subtree is skipped (script, style, …), and how many `pre` are open.
    let mut skipping: Option<ego_tree::NodeId> = None;
    let mut pre = 0usize;
    // For each open block element, whether it is one of [`ONE_LINE`]: the last says what a
    // `<br>` breaks.
    let mut blocks: Vec<bool> = Vec::new();
    // The outermost open `h1` while no title is found, and its text so far: gathered on the
    // way (reading each heading's subtree again would cost the square of its nesting).
    let mut h1: Option<(ego_tree::NodeId, String)> = None;
    for edge in root.traverse() {
        match edge {
            Edge::Open(node) if skipping.is_none() => match node.value() {
                Node::Text(t) => {
                    if let Some((_, text)) = &mut h1
                        && text.len() < super::MAX_HEADING_BYTES
                    {
                        text.push_str(t);
                    }
                    b.push(t, pre > 0)
                }
                Node::Element(el) => {
                    let name = el.name();
                    if SKIP.contains(&name) {
                        skipping = Some(node.id());
                        continue;
                    }
                    if matches!(name, "br" | "hr") && pre == 0 && blocks.last() == Some(&true) {
                        if let Some((_, text)) = &mut h1 {
                            text.push(' ');
                        }
                        b.push(" ", false);
                        continue;
                    }
                    if !matches!(name, "br" | "hr")
                        && (block_of(name).is_some() || ONE_LINE.contains(&name))
                    {
                        blocks.push(ONE_LINE.contains(&name));
                    }
                    if name == "h1" && first_h1.is_none() && h1.is_none() {
                        h1 = Some((node.id(), String::new()));
                    }
                    pre += usize::from(name == "pre");
                    if let Some((kind, _)) = block_of(name) {
                        b.start(kind);
                    }
                }
                _ => {}
            },
            Edge::Open(_) => {}
            Edge::Close(node) => {
                if let Some(id) = skipping {
                    if id == node.id() {
                        skipping = None;
                    }
                    continue;
                }
                let Node::Element(el) = node.value() else {
                    continue;
                };
                let name = el.name();
                if matches!(name, "br" | "hr") && pre == 0 && blocks.last() == Some(&true) {
                    continue;
                }
                if !matches!(name, "br" | "hr")
                    && (block_of(name).is_some() || ONE_LINE.contains(&name))
                {
                    blocks.pop();
                }
                if let Some((_, heading)) = block_of(name) {
                    if heading == Some(1)
                        && let Some((_, text)) = h1.take_if(|(id, _)| *id == node.id())
                        && !text.trim().is_empty()
                    {
                        *first_h1 = Some(text);
                    }
                    b.finish();
                }
                pre -= usize::from(name == "pre");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by a review: a `<br>` inside a heading ended it. Inside another block within a
    /// table cell it still breaks the line; and a title taken from an `h1` reads the break as
    /// a space too (a second review).
    #[test]
    fn a_break_in_a_heading_is_a_space() {
        let doc = parse(
            "<body><h2>Annual<br>Report</h2><p>a</p>\
             <ul><li>one<br>line</li></ul><p>b<br>c</p>\
             <table><tr><td><p>x<br>y</p></td></tr></table></body>",
        );
        let blocks: Vec<(&str, BlockKind)> = doc
            .blocks
            .iter()
            .map(|b| (&doc.text[b.span.clone()], b.kind))
            .collect();
        assert_eq!(blocks[0], ("Annual Report", BlockKind::Heading(2)));
        assert!(
            blocks.contains(&("one line", BlockKind::ListItem)),
            "{blocks:?}"
        );
        assert!(blocks.contains(&("y", BlockKind::Paragraph)), "{blocks:?}");
        let titled = parse("<body><h1>Annual<br>Report</h1><p>x</p></body>");
        assert_eq!(titled.title, "Annual Report");
        // Outside one-line elements a break still starts a block.
        assert!(blocks.contains(&("c", BlockKind::Paragraph)), "{blocks:?}");
        assert!(
            doc.blocks[1..]
                .iter()
                .all(|b| b.heading_path == ["Annual Report"]),
            "{:?}",
            doc.blocks
        );
    }

    /// Without a `<title>`, the first `h1` with text titles the page, its text gathered across
    /// the elements inside it (read once, on the way).
    #[test]
    fn the_first_heading_with_text_titles_a_page_without_a_title() {
        let doc = parse(
            "<body><h1><span> </span></h1><p>Intro.</p><h1>Travel <em>rules</em> 2027</h1>\
             <p>Book early.</p><h1>Later</h1></body>",
        );
        assert_eq!(doc.title, "Travel rules 2027");
    }

    /// Deep nesting is parsed on the parser's own 2 MiB stack, as in the daemon.
    #[test]
    fn deeply_nested_elements_do_not_overflow_the_stack() {
        let depth = 100_000;
        let src = format!(
            "<p>before</p>{}deep text{}<script>{}</script><p>after</p>",
            "<span>".repeat(depth),
            "</span>".repeat(depth),
            "<b>".repeat(1000)
        );
        let doc = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || parse(&src))
            .unwrap()
            .join()
            .unwrap();
        assert!(doc.text.contains("before"), "{}", doc.text);
        assert!(doc.text.contains("deep text"), "{}", doc.text);
        assert!(doc.text.contains("after"), "{}", doc.text);
    }

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
