//! PDF: the text layer of each page (via `pdf-extract` on `lopdf`), paragraphs split at blank
//! lines, every block tagged with its 1-based page so citations can name the page. A PDF whose
//! pages carry no text (a scan) is reported as "no text layer", never indexed empty. The parser
//! is third-party code on hostile input: a panic in it becomes a per-document error.

use super::{BlockKind, ParseError, ParsedDoc, TextBuilder};

/// Deepest page-tree ancestry accepted (real documents have a handful of levels).
const MAX_PAGE_TREE_DEPTH: usize = 64;

/// What a skip reason says of a lopdf error: its words where they are fixed texts, offsets and
/// object numbers, a phrase of ours where they may name a dictionary key or print an object of
/// the file (`DictKey`, `InvalidOutline`, `Syntax`...): skip reasons reach every admin and the
/// log, whatever the document's ACL (session 43's review).
fn lopdf_reason(e: &lopdf::Error) -> String {
    use lopdf::Error as E;
    match e {
        E::Parse(p) => format!("cannot parse it: {p}"),
        E::Xref(x) => format!("a bad cross-reference table: {x}"),
        E::IndirectObject { offset } => format!("an invalid indirect object at byte {offset}"),
        E::Decryption(_) | E::UnsupportedSecurityHandler(_) | E::AlreadyEncrypted => {
            "encrypted in a way this parser cannot read".into()
        }
        E::ObjectNotFound(_) | E::MissingXrefEntry | E::ObjectIdMismatch => {
            "a referenced object is missing".into()
        }
        E::ReferenceCycle(_) | E::ReferenceLimit => "a reference cycle".into(),
        E::Decompress(_) => "a stream cannot be decompressed".into(),
        _ => "its structure cannot be read".into(),
    }
}

/// Rejects page trees pdf-extract would loop on: a page whose `/Parent` chain has a cycle (it
/// follows the chain for inherited attributes without a visited set; found by fuzzing) or is
/// absurdly deep.
fn check_page_tree(bytes: &[u8]) -> Result<(), ParseError> {
    let doc = lopdf::Document::load_mem(bytes)
        .map_err(|e| ParseError::Malformed(format!("PDF: {}", lopdf_reason(&e))))?;
    for (page, id) in doc.get_pages() {
        let mut seen = std::collections::HashSet::from([id]);
        let mut cur = id;
        loop {
            let parent = doc
                .get_dictionary(cur)
                .ok()
                .and_then(|d| d.get(b"Parent").ok())
                .and_then(|p| p.as_reference().ok());
            let Some(parent) = parent else { break };
            if !seen.insert(parent) || seen.len() > MAX_PAGE_TREE_DEPTH {
                return Err(ParseError::Malformed(format!(
                    "PDF: the page tree above page {page} has a cycle or is too deep"
                )));
            }
            cur = parent;
        }
    }
    Ok(())
}

pub fn parse(bytes: &[u8]) -> Result<ParsedDoc, ParseError> {
    if !bytes.starts_with(b"%PDF-") {
        return Err(ParseError::Malformed("not a PDF (no %PDF- header)".into()));
    }
    std::panic::catch_unwind(|| check_page_tree(bytes))
        .map_err(|_| ParseError::Malformed("PDF: the parser failed on this file".into()))??;
    let pages = std::panic::catch_unwind(|| pdf_extract::extract_text_from_mem_by_pages(bytes))
        .map_err(|_| ParseError::Malformed("PDF: the parser failed on this file".into()))?
        .map_err(|e| {
            ParseError::Malformed(match &e {
                pdf_extract::OutputError::PdfError(e) => format!("PDF: {}", lopdf_reason(e)),
                _ => "PDF: the text could not be extracted".into(),
            })
        })?;
    if pages.iter().all(|p| p.trim().is_empty()) {
        return Err(ParseError::NoTextLayer);
    }
    let mut b = TextBuilder::default();
    for (i, page) in pages.iter().enumerate() {
        b.set_page(Some(i as u32 + 1));
        for para in page.split("\n\n") {
            if !para.trim().is_empty() {
                b.start(BlockKind::Paragraph);
                b.push(para, false);
            }
        }
    }
    let title = super::first_line_title(pages.iter().flat_map(|p| p.lines()));
    Ok(b.into_doc(title))
}

#[cfg(test)]
mod tests {
    use crate::parse::{ParseError, assert_spans_valid, parse};

    #[test]
    fn pages_are_carried_into_blocks() {
        let bytes = crate::parse::samples::pdf(&[
            &[
                "Expense policy 2027",
                "",
                "Claims above 500 EUR need finance approval.",
            ],
            &["Receipts are kept for seven years."],
        ]);
        let d = parse(&bytes, None, "expenses.pdf").unwrap();
        assert_spans_valid(&d);
        assert_eq!(d.title, "Expense policy 2027");
        let page_of = |needle: &str| {
            d.blocks
                .iter()
                .find(|b| d.text[b.span.clone()].contains(needle))
                .and_then(|b| b.page)
        };
        assert_eq!(page_of("500 EUR"), Some(1));
        assert_eq!(page_of("seven years"), Some(2));
    }

    /// Found by `cargo fuzz` (parse_pdf): pdf-extract panics on a page without required keys; the
    /// panic must become a per-document error.
    #[test]
    fn fuzz_regression_pdf_extract_panic() {
        let bytes = include_bytes!("regressions/pdf-extract-panic-1.pdf");
        let e = parse(bytes, None, "crash.pdf").unwrap_err();
        assert!(matches!(e, ParseError::Malformed(_)), "{e:?}");
    }

    /// Found by `cargo fuzz` (parse_pdf, a timeout): a page that is its own parent made
    /// pdf-extract recurse forever.
    #[test]
    fn fuzz_regression_parent_cycle() {
        let bytes = include_bytes!("regressions/pdf-parent-cycle-1.pdf");
        let e = parse(bytes, None, "cycle.pdf").unwrap_err();
        assert!(
            matches!(&e, ParseError::Malformed(m) if m.contains("cycle")),
            "{e:?}"
        );
    }

    #[test]
    fn scans_and_garbage_are_reported() {
        let scan = crate::parse::samples::pdf(&[&[], &[]]);
        assert_eq!(
            parse(&scan, None, "scan.pdf").unwrap_err(),
            ParseError::NoTextLayer
        );
        for bad in [&b"%PDF-1.4\n garbage"[..], b"not a pdf", b"%PDF-"] {
            let e = parse(bad, None, "x.pdf").unwrap_err();
            assert!(matches!(e, ParseError::Malformed(_)), "{e:?}");
        }
    }
}
