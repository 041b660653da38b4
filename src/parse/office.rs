//! Office Open XML: DOCX (paragraphs with heading styles) and PPTX (slides as pages, title
//! placeholders as headings), read with `zip` and a streaming `quick-xml` pass. XLSX goes
//! through `calamine` in `table.rs`. Archives are read with size caps, so a zip bomb is an error
//! rather than an allocation.

use std::io::{Cursor, Read};

use quick_xml::events::{BytesStart, Event};

use super::{BlockKind, ParseError, ParsedDoc, TextBuilder};

/// Largest uncompressed XML part read from an archive.
const MAX_PART_BYTES: u64 = 64 * 1024 * 1024;
/// Most bytes decompressed from all the parts of one package (a zip bomb spreads over many).
const MAX_PACKAGE_BYTES: usize = 256 * 1024 * 1024;

// Skip reasons reach every admin and the log, whatever the document's ACL: they never quote a
// library's words where those may quote the package (entry names in zip's, tag names in
// quick-xml's: `expected </w:body>, but </Alice earns 120k> was found`; session 43's review).
// Each error is named by its kind in words of ours.

fn malformed(what: &str, why: impl std::fmt::Display) -> ParseError {
    ParseError::Malformed(format!("{what}: {why}"))
}

fn zip_reason(e: &zip::result::ZipError) -> &'static str {
    use zip::result::ZipError as Z;
    match e {
        Z::Io(e) => io_reason(e),
        Z::InvalidArchive(_) => "invalid archive structure",
        Z::UnsupportedArchive(_) => "an archive feature this parser does not read",
        Z::FileNotFound => "part not found",
        Z::InvalidPassword => "encrypted",
        _ => "unreadable archive",
    }
}

fn io_reason(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::InvalidData => "corrupt compressed data or checksum",
        std::io::ErrorKind::UnexpectedEof => "truncated",
        std::io::ErrorKind::Unsupported => "unsupported compression or encryption",
        _ => "read error",
    }
}

fn xml_reason(e: &quick_xml::Error) -> String {
    use quick_xml::Error as X;
    use quick_xml::errors::IllFormedError as I;
    match e {
        // Fixed texts, and positions.
        X::Syntax(s) => format!("syntax error: {s}"),
        X::InvalidAttr(a) => format!("invalid attribute: {a}"),
        X::IllFormed(I::MismatchedEndTag { .. }) => {
            "an end tag does not match its start tag".into()
        }
        X::IllFormed(I::UnmatchedEndTag(_)) => "an end tag without a start tag".into(),
        X::IllFormed(I::MissingEndTag(_)) => "a start tag is not closed".into(),
        X::IllFormed(_) => "ill-formed document".into(),
        X::Encoding(_) => "invalid text encoding".into(),
        X::Escape(_) => "invalid entity or character reference".into(),
        _ => "unreadable XML".into(),
    }
}

pub(super) fn archive(bytes: &[u8]) -> Result<zip::ZipArchive<Cursor<&[u8]>>, ParseError> {
    zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| malformed("not a valid zip archive", zip_reason(&e)))
}

/// One part of the archive, or `None` if absent. Parts above [`MAX_PART_BYTES`] are an error.
pub(super) fn part(
    zip: &mut zip::ZipArchive<Cursor<&[u8]>>,
    name: &str,
) -> Result<Option<Vec<u8>>, ParseError> {
    let f = match zip.by_name(name) {
        Ok(f) => f,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(e) => return Err(malformed(name, zip_reason(&e))),
    };
    let mut out = Vec::new();
    f.take(MAX_PART_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| malformed(name, io_reason(&e)))?;
    if out.len() as u64 > MAX_PART_BYTES {
        return Err(ParseError::Malformed(format!(
            "{name}: more than {MAX_PART_BYTES} bytes uncompressed"
        )));
    }
    Ok(Some(out))
}

fn attr(e: &BytesStart<'_>, local: &str) -> Option<String> {
    // Without quick-xml's duplicate check: it compares each attribute with every earlier one,
    // so an element of many repeated attributes held a parser thread for hours (found by a
    // review). The first one named `local` is taken.
    e.attributes().with_checks(false).flatten().find_map(|a| {
        let key = a.key.local_name();
        (key.as_ref() == local).then(|| a.value.to_string())
    })
}

/// Resolves `&amp;`-style and numeric references (quick-xml reports them as separate events).
fn entity(name: &str) -> Option<char> {
    match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        _ => {
            let n = name.strip_prefix('#')?;
            let v = match n.strip_prefix(['x', 'X']) {
                Some(h) => u32::from_str_radix(h, 16).ok()?,
                None => n.parse().ok()?,
            };
            char::from_u32(v)
        }
    }
}

/// Streams `xml`, calling `on` for start/empty elements (with `true` for empty ones), end
/// elements and text (including resolved references).
enum Ev<'a> {
    Start(&'a BytesStart<'a>, bool),
    End(&'a str),
    Text(&'a str),
}

fn walk(xml: &[u8], mut on: impl FnMut(Ev<'_>)) -> Result<(), ParseError> {
    let mut r = quick_xml::Reader::from_reader(xml);
    let mut buf = Vec::new();
    loop {
        match r.read_event_into(&mut buf) {
            Ok(Event::Start(e)) => on(Ev::Start(&e, false)),
            Ok(Event::Empty(e)) => on(Ev::Start(&e, true)),
            Ok(Event::End(e)) => on(Ev::End(e.local_name().as_ref())),
            Ok(Event::Text(t)) => on(Ev::Text(&t.xml10_content())),
            Ok(Event::CData(t)) => on(Ev::Text(&t.xml10_content())),
            Ok(Event::GeneralRef(g)) => {
                if let Some(c) = entity(&g.xml10_content()) {
                    on(Ev::Text(c.encode_utf8(&mut [0; 4])));
                }
            }
            Ok(Event::Eof) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(malformed("invalid XML", xml_reason(&e))),
        }
        buf.clear();
    }
}

/// The document title from `docProps/core.xml` (`dc:title`), if any.
fn core_title(zip: &mut zip::ZipArchive<Cursor<&[u8]>>) -> Result<String, ParseError> {
    let Some(xml) = part(zip, "docProps/core.xml")? else {
        return Ok(String::new());
    };
    let (mut inside, mut title) = (false, String::new());
    walk(&xml, |ev| match ev {
        Ev::Start(e, empty) => inside = !empty && e.local_name().as_ref() == "title",
        Ev::End(_) => inside = false,
        Ev::Text(t) if inside => title.push_str(t),
        Ev::Text(_) => {}
    })?;
    Ok(title.trim().to_string())
}

/// Heading level of a Word paragraph style id ("Heading1", "Title", localized "berschrift2").
fn heading_level(style: &str) -> Option<u8> {
    let s = style.to_ascii_lowercase();
    if s == "title" {
        return Some(1);
    }
    let digits = s.trim_start_matches(|c: char| !c.is_ascii_digit());
    let prefix = &s[..s.len() - digits.len()];
    if prefix.contains("heading") || prefix.contains("berschrift") || prefix.contains("titre") {
        return digits.parse::<u8>().ok().map(|n| n.clamp(1, 6));
    }
    None
}

pub fn docx(bytes: &[u8]) -> Result<ParsedDoc, ParseError> {
    let mut zip = archive(bytes)?;
    let xml = part(&mut zip, "word/document.xml")?
        .ok_or_else(|| ParseError::Malformed("DOCX without word/document.xml".into()))?;
    let mut b = TextBuilder::default();
    // A paragraph's style comes after its start tag: gather its text, emit it at the end. A
    // paragraph may hold others (a text box's, inside one of its runs): each open paragraph
    // gathers its own, and the inner one is emitted first (a review: the inner one cleared the
    // outer one's text). A text box comes twice, as the drawing (`mc:Choice`) and as its
    // fallback for older readers (`mc:Fallback`): the fallback is skipped.
    let mut open: Vec<(String, Option<u8>)> = Vec::new();
    let (mut in_text, mut fallback) = (false, 0usize);
    // Hidden text (`w:vanish` in a run's own properties) is not what a reader sees: left out,
    // as deleted text is (a review). One entry per open run (a text box's runs sit inside
    // one); the properties a tracked change replaced (`w:rPrChange`, `w:pPrChange`) and the
    // paragraph mark's (`w:pPr/w:rPr`) are not the text's.
    let mut runs: Vec<bool> = Vec::new();
    let (mut in_rpr, mut in_ppr, mut changed) = (false, false, 0usize);
    // The bytes the open paragraphs hold, kept as they grow (summed at each event, a
    // paragraph nested a million deep cost a million additions an event; a review).
    let mut held = 0usize;
    walk(&xml, |ev| match ev {
        Ev::Start(e, false) if e.local_name().as_ref() == "Fallback" => fallback += 1,
        Ev::End("Fallback") => fallback = fallback.saturating_sub(1),
        _ if fallback > 0 => {}
        Ev::Start(e, empty) => match e.local_name().as_ref() {
            "p" if !empty => open.push((String::new(), None)),
            "r" if !empty => runs.push(false),
            "rPr" if !empty => in_rpr = true,
            "pPr" if !empty => in_ppr = true,
            "rPrChange" | "pPrChange" if !empty => changed += 1,
            "vanish" if in_rpr && !in_ppr && changed == 0 => {
                let on = !matches!(attr(e, "val").as_deref(), Some("0" | "false" | "off"));
                if let Some(hidden) = runs.last_mut() {
                    *hidden = on;
                }
            }
            // The style a tracked change replaced is not the paragraph's (a review: a demoted
            // heading stayed one).
            "pStyle" if changed == 0 => {
                if let Some((_, style)) = open.last_mut() {
                    *style = attr(e, "val").as_deref().and_then(heading_level);
                }
            }
            "t" => in_text = !empty,
            "tab" | "br" | "cr" if !super::over_budget(held + 1) => {
                if let Some((para, _)) = open.last_mut() {
                    para.push(' ');
                    held += 1;
                }
            }
            _ => {}
        },
        Ev::End(name) => match name {
            "t" => in_text = false,
            "r" => {
                runs.pop();
            }
            "rPr" => in_rpr = false,
            "pPr" => in_ppr = false,
            "rPrChange" | "pPrChange" => changed = changed.saturating_sub(1),
            "p" => {
                if let Some((para, style)) = open.pop() {
                    held -= para.len();
                    if !para.trim().is_empty() {
                        b.start(style.map_or(BlockKind::Paragraph, BlockKind::Heading));
                        b.push(&para, false);
                    }
                }
            }
            _ => {}
        },
        // A paragraph is gathered before the builder sees it: held to the budget here too.
        Ev::Text(t)
            if in_text && runs.last() != Some(&true) && !super::over_budget(held + t.len()) =>
        {
            if let Some((para, _)) = open.last_mut() {
                para.push_str(t);
                held += t.len();
            }
        }
        Ev::Text(_) => {}
    })?;
    let title = core_title(&mut zip)?;
    Ok(b.into_doc(title))
}

pub fn pptx(bytes: &[u8]) -> Result<ParsedDoc, ParseError> {
    let mut zip = archive(bytes)?;
    let mut slides: Vec<(u32, String)> = zip
        .file_names()
        .filter_map(|n| {
            let n = n.ok()?;
            let num = n
                .strip_prefix("ppt/slides/slide")?
                .strip_suffix(".xml")?
                .parse()
                .ok()?;
            Some((num, n.to_string()))
        })
        .collect();
    slides.sort();
    if slides.is_empty() {
        return Err(ParseError::Malformed("PPTX without slides".into()));
    }
    let mut b = TextBuilder::default();
    let mut title = String::new();
    let mut unpacked = 0usize;
    for (page, (_, name)) in slides.iter().enumerate() {
        if b.over() {
            break;
        }
        let xml = part(&mut zip, name)?.unwrap_or_default();
        unpacked = unpacked.saturating_add(xml.len());
        if unpacked > MAX_PACKAGE_BYTES {
            return Err(ParseError::Malformed(format!(
                "PPTX: more than {MAX_PACKAGE_BYTES} bytes uncompressed in its slides"
            )));
        }
        b.set_page(Some(page as u32 + 1));
        // Paragraphs of a title placeholder become headings.
        let (mut para, mut in_text, mut title_shape) = (String::new(), false, false);
        walk(&xml, |ev| match ev {
            Ev::Start(e, empty) => match e.local_name().as_ref() {
                // Each shape, table frame, picture or group after the title is not it (a
                // review: a table's cells after a title shape became headings).
                "sp" | "graphicFrame" | "grpSp" | "cxnSp" | "pic" if !empty => title_shape = false,
                "ph" => {
                    title_shape = matches!(attr(e, "type").as_deref(), Some("title" | "ctrTitle"))
                }
                "p" if !empty => para.clear(),
                "t" => in_text = !empty,
                "br" if !super::over_budget(para.len() + 1) => para.push(' '),
                _ => {}
            },
            Ev::End(name) => match name {
                "t" => in_text = false,
                "p" => {
                    if !para.trim().is_empty() {
                        if title_shape && title.is_empty() {
                            title = para.trim().to_string();
                        }
                        b.start(if title_shape {
                            BlockKind::Heading(1)
                        } else {
                            BlockKind::Paragraph
                        });
                        b.push(&para, false);
                    }
                    para.clear();
                }
                _ => {}
            },
            Ev::Text(t) if in_text && !super::over_budget(para.len() + t.len()) => para.push_str(t),
            Ev::Text(_) => {}
        })?;
    }
    let core = core_title(&mut zip)?;
    Ok(b.into_doc(if core.is_empty() { title } else { core }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{assert_spans_valid, parse};

    #[test]
    fn docx_paragraphs_headings_entities_and_title() {
        let bytes = crate::parse::samples::docx(
            &[
                (Some("Heading1"), "Travel policy"),
                (
                    None,
                    "Book trains for trips under 500 km &amp; keep receipts.",
                ),
                (Some("Heading2"), "Hotels"),
                (None, "Up to 140 EUR per night."),
            ],
            Some("Travel 2027"),
        );
        let d = parse(&bytes, None, "travel.docx").unwrap();
        assert_spans_valid(&d);
        assert_eq!(d.title, "Travel 2027");
        let texts: Vec<&str> = d.blocks.iter().map(|b| &d.text[b.span.clone()]).collect();
        assert_eq!(
            texts,
            [
                "Travel policy",
                "Book trains for trips under 500 km & keep receipts.",
                "Hotels",
                "Up to 140 EUR per night."
            ]
        );
        assert_eq!(d.blocks[0].kind, BlockKind::Heading(1));
        assert_eq!(d.blocks[3].heading_path, ["Travel policy", "Hotels"]);
    }

    /// Found by a review: a text box's paragraph (inside a run of another) cleared the outer
    /// paragraph's text, and its fallback copy gave its text twice.
    #[test]
    fn a_text_box_keeps_its_paragraph_s_text_and_comes_once() {
        let body = "<w:p><w:r><w:t xml:space=\"preserve\">Intro </w:t></w:r><w:r>\
            <mc:AlternateContent><mc:Choice Requires=\"wps\"><w:drawing><wps:txbx>\
            <w:txbxContent><w:p><w:r><w:t>Box</w:t></w:r></w:p></w:txbxContent></wps:txbx>\
            </w:drawing></mc:Choice><mc:Fallback><w:pict><v:textbox><w:txbxContent><w:p><w:r>\
            <w:t>Box</w:t></w:r></w:p></w:txbxContent></v:textbox></w:pict></mc:Fallback>\
            </mc:AlternateContent></w:r><w:r><w:t xml:space=\"preserve\"> tail</w:t></w:r></w:p>";
        let doc = format!(
            "<?xml version=\"1.0\"?><w:document xmlns:w=\"w\" xmlns:mc=\"mc\" xmlns:wps=\"wps\" \
             xmlns:v=\"v\"><w:body>{body}</w:body></w:document>"
        );
        let bytes = crate::parse::samples::zip(&[("word/document.xml", doc.as_str())]);
        let d = docx(&bytes).unwrap();
        let texts: Vec<&str> = d.blocks.iter().map(|b| &d.text[b.span.clone()]).collect();
        assert_eq!(texts, ["Box", "Intro tail"]);
    }

    /// Found by a review: hidden text (`w:vanish`) was indexed, and a style a tracked change
    /// replaced overrode the paragraph's own.
    #[test]
    fn hidden_runs_are_left_out_and_a_replaced_style_is_not_the_paragraph_s() {
        let body = "<w:p><w:r><w:t xml:space=\"preserve\">Offer: 80k</w:t></w:r>\
            <w:r><w:rPr><w:b/><w:vanish/></w:rPr><w:t xml:space=\"preserve\"> floor 95k</w:t></w:r>\
            <w:r><w:rPr><w:vanish w:val=\"0\"/></w:rPr><w:t xml:space=\"preserve\">, net</w:t></w:r>\
            <w:r><w:rPr><w:rPrChange><w:rPr><w:vanish/></w:rPr></w:rPrChange></w:rPr>\
            <w:t xml:space=\"preserve\"> monthly</w:t></w:r></w:p>\
            <w:p><w:pPr><w:rPr><w:vanish/></w:rPr></w:pPr><w:r><w:t>Shown.</w:t></w:r></w:p>\
            <w:p><w:pPr><w:pStyle w:val=\"Heading2\"/><w:pPrChange><w:pPr>\
            <w:pStyle w:val=\"Heading1\"/></w:pPr></w:pPrChange></w:pPr><w:r><w:t>Pay</w:t></w:r></w:p>\
            <w:p><w:pPr><w:pStyle w:val=\"Normal\"/><w:pPrChange><w:pPr>\
            <w:pStyle w:val=\"Heading1\"/></w:pPr></w:pPrChange></w:pPr><w:r><w:t>Body</w:t></w:r></w:p>";
        let doc = format!(
            "<?xml version=\"1.0\"?><w:document xmlns:w=\"w\"><w:body>{body}</w:body></w:document>"
        );
        let bytes = crate::parse::samples::zip(&[("word/document.xml", doc.as_str())]);
        let d = docx(&bytes).unwrap();
        let blocks: Vec<(&str, BlockKind)> = d
            .blocks
            .iter()
            .map(|b| (&d.text[b.span.clone()], b.kind))
            .collect();
        assert_eq!(
            blocks,
            [
                ("Offer: 80k, net monthly", BlockKind::Paragraph),
                ("Shown.", BlockKind::Paragraph),
                ("Pay", BlockKind::Heading(2)),
                ("Body", BlockKind::Paragraph),
            ]
        );
    }

    /// Found by a review: a table frame after a title shape had its cells read as headings.
    #[test]
    fn a_table_after_the_title_shape_is_not_a_heading() {
        let slide = "<p:sld xmlns:p=\"p\" xmlns:a=\"a\"><p:cSld><p:spTree>\
            <p:sp><p:nvSpPr><p:nvPr><p:ph type=\"title\"/></p:nvPr></p:nvSpPr><p:txBody>\
            <a:p><a:r><a:t>Budget</a:t></a:r></a:p></p:txBody></p:sp>\
            <p:graphicFrame><a:graphic><a:graphicData><a:tbl><a:tr><a:tc><a:txBody><a:p><a:r>\
            <a:t>Travel 12k</a:t></a:r></a:p></a:txBody></a:tc></a:tr></a:tbl></a:graphicData>\
            </a:graphic></p:graphicFrame></p:spTree></p:cSld></p:sld>";
        let bytes = crate::parse::samples::zip(&[("ppt/slides/slide1.xml", slide)]);
        let d = pptx(&bytes).unwrap();
        let blocks: Vec<(&str, BlockKind)> = d
            .blocks
            .iter()
            .map(|b| (&d.text[b.span.clone()], b.kind))
            .collect();
        assert_eq!(
            blocks,
            [
                ("Budget", BlockKind::Heading(1)),
                ("Travel 12k", BlockKind::Paragraph)
            ]
        );
        assert_eq!(d.blocks[1].heading_path, ["Budget"]);
    }

    #[test]
    fn pptx_slides_are_pages() {
        let bytes = crate::parse::samples::pptx(&[
            ("Quarterly review", &["Revenue grew 12%."]),
            (
                "Next steps",
                &["Hire two engineers.", "Open the Lisbon office."],
            ),
        ]);
        let d = parse(&bytes, None, "q3.pptx").unwrap();
        assert_spans_valid(&d);
        assert_eq!(d.title, "Quarterly review");
        let pages: Vec<(Option<u32>, &str)> = d
            .blocks
            .iter()
            .map(|b| (b.page, &d.text[b.span.clone()]))
            .collect();
        assert_eq!(
            pages,
            [
                (Some(1), "Quarterly review"),
                (Some(1), "Revenue grew 12%."),
                (Some(2), "Next steps"),
                (Some(2), "Hire two engineers."),
                (Some(2), "Open the Lisbon office."),
            ]
        );
    }

    /// Session 43's review: quick-xml's error quoted the closing tag it found, which a crafted
    /// (or broken) part fills with the document's words, into a skip reason every admin reads.
    #[test]
    fn xml_errors_do_not_quote_the_document() {
        for xml in [
            "<w:document><w:body><w:p><w:t>x</w:t></w:p></Alice earns 120k></w:document>",
            "<w:document><w:body></w:body></w:document></Alice earns 120k>",
        ] {
            let bytes = crate::parse::samples::zip(&[("word/document.xml", xml)]);
            let e = parse(&bytes, None, "a.docx").unwrap_err();
            let ParseError::Malformed(m) = &e else {
                panic!("{e:?}")
            };
            assert!(m.starts_with("invalid XML: "), "{m}");
            assert!(!m.contains("Alice") && !m.contains("120k"), "{m}");
        }
    }

    #[test]
    fn malformed_packages_are_errors() {
        for (bytes, name) in [
            (b"PK\x03\x04 definitely not a zip".to_vec(), "a.docx"),
            (
                crate::parse::samples::zip(&[("other.xml", "<x/>")]),
                "a.docx",
            ),
            (
                crate::parse::samples::zip(&[("word/document.xml", "<w:p><w:t>unclosed")]),
                "a.docx",
            ),
            (crate::parse::samples::zip(&[("x", "y")]), "a.pptx"),
        ] {
            let e = parse(&bytes, None, name).unwrap_err();
            assert!(
                matches!(e, ParseError::Malformed(_) | ParseError::NoText),
                "{name}: {e:?}"
            );
        }
    }
}
