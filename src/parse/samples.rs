//! Minimal valid documents of each binary format, generated: a PDF with a real cross-reference
//! table, OOXML packages (DOCX, PPTX, XLSX) with the parts each format needs. Used by the parser
//! tests, the integration tests, the fuzz targets' seed corpora and the ingestion benchmark.

use std::io::Write;

/// A zip archive of the given (name, content) parts.
pub fn zip(parts: &[(&str, &str)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, body) in parts {
        w.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(body.as_bytes()).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// A DOCX of (style, text) paragraphs ("Heading1", "Title", or none) and an optional title.
pub fn docx(paragraphs: &[(Option<&str>, &str)], title: Option<&str>) -> Vec<u8> {
    let body: String = paragraphs
        .iter()
        .map(|(style, text)| {
            let ppr = style
                .map(|s| format!("<w:pPr><w:pStyle w:val=\"{s}\"/></w:pPr>"))
                .unwrap_or_default();
            format!("<w:p>{ppr}<w:r><w:t xml:space=\"preserve\">{text}</w:t></w:r></w:p>")
        })
        .collect();
    let doc = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><w:document xmlns:w=\"http://schemas.openxmlformats.org/wordprocessingml/2006/main\"><w:body>{body}</w:body></w:document>"
    );
    let core = title.map(|t| format!("<cp:coreProperties xmlns:cp=\"c\" xmlns:dc=\"http://purl.org/dc/elements/1.1/\"><dc:title>{t}</dc:title></cp:coreProperties>"));
    let mut parts = vec![("word/document.xml", doc.as_str())];
    if let Some(c) = &core {
        parts.push(("docProps/core.xml", c.as_str()));
    }
    zip(&parts)
}

/// A PPTX of (title, paragraphs) slides.
pub fn pptx(slides: &[(&str, &[&str])]) -> Vec<u8> {
    let xml: Vec<(String, String)> = slides
        .iter()
        .enumerate()
        .map(|(i, (title, paras))| {
            let body: String = paras
                .iter()
                .map(|p| format!("<a:p><a:r><a:t>{p}</a:t></a:r></a:p>"))
                .collect();
            (
                format!("ppt/slides/slide{}.xml", i + 1),
                format!(
                    "<p:sld xmlns:p=\"p\" xmlns:a=\"a\"><p:cSld><p:spTree>\
                     <p:sp><p:nvSpPr><p:nvPr><p:ph type=\"title\"/></p:nvPr></p:nvSpPr><p:txBody><a:p><a:r><a:t>{title}</a:t></a:r></a:p></p:txBody></p:sp>\
                     <p:sp><p:nvSpPr><p:nvPr><p:ph idx=\"1\"/></p:nvPr></p:nvSpPr><p:txBody>{body}</p:txBody></p:sp>\
                     </p:spTree></p:cSld></p:sld>"
                ),
            )
        })
        .collect();
    let parts: Vec<(&str, &str)> = xml.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    zip(&parts)
}

/// A minimal XLSX package: one sheet of inline strings and numbers.
pub fn xlsx(sheet: &str, rows: &[&[&str]]) -> Vec<u8> {
    let col = |i: usize| char::from(b'A' + i as u8);
    let cells: Vec<(String, &str)> = rows
        .iter()
        .enumerate()
        .flat_map(|(r, cells)| {
            cells
                .iter()
                .enumerate()
                .map(move |(c, v)| (format!("{}{}", col(c), r + 1), *v))
        })
        .collect();
    let cells: Vec<(&str, &str)> = cells.iter().map(|(at, v)| (at.as_str(), *v)).collect();
    xlsx_cells(sheet, &cells)
}

/// A one-sheet XLSX with the given cells (`("B2", "text")`), in order.
pub fn xlsx_cells(sheet: &str, cells: &[(&str, &str)]) -> Vec<u8> {
    let row_of = |at: &str| {
        at.trim_start_matches(|c: char| c.is_ascii_alphabetic())
            .to_string()
    };
    let mut data = String::new();
    let mut open: Option<String> = None;
    for (at, v) in cells {
        let row = row_of(at);
        if open.as_deref() != Some(row.as_str()) {
            if open.is_some() {
                data.push_str("</row>");
            }
            data.push_str(&format!("<row r=\"{row}\">"));
            open = Some(row);
        }
        data.push_str(&match v.parse::<f64>() {
            Ok(n) => format!("<c r=\"{at}\"><v>{n}</v></c>"),
            Err(_) => format!("<c r=\"{at}\" t=\"inlineStr\"><is><t>{v}</t></is></c>"),
        });
    }
    if open.is_some() {
        data.push_str("</row>");
    }
    let ns = "http://schemas.openxmlformats.org/spreadsheetml/2006/main";
    let rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships";
    zip(&[
        (
            "[Content_Types].xml",
            r#"<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>"#,
        ),
        (
            "_rels/.rels",
            r#"<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>"#,
        ),
        (
            "xl/workbook.xml",
            &format!(
                r#"<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="{ns}" xmlns:r="{rel}"><sheets><sheet name="{sheet}" sheetId="1" r:id="rId1"/></sheets></workbook>"#
            ),
        ),
        (
            "xl/_rels/workbook.xml.rels",
            r#"<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/></Relationships>"#,
        ),
        (
            "xl/worksheets/sheet1.xml",
            &format!(
                r#"<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="{ns}"><sheetData>{data}</sheetData></worksheet>"#
            ),
        ),
    ])
}

/// A minimal PDF with one page per entry of `pages` (each a list of lines in Helvetica), with
/// a correct cross-reference table. An empty list of lines makes a page without text (a scan).
pub fn pdf(pages: &[&[&str]]) -> Vec<u8> {
    let n = pages.len();
    // Objects: 1 catalog, 2 pages, 3 font, then per page: page object, content stream.
    let mut objects: Vec<String> = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".into(),
        format!(
            "<< /Type /Pages /Kids [{}] /Count {n} >>",
            (0..n)
                .map(|i| format!("{} 0 R", 4 + 2 * i))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".into(),
    ];
    for (i, lines) in pages.iter().enumerate() {
        let mut content = String::new();
        if !lines.is_empty() {
            content.push_str("BT /F1 12 Tf 72 720 Td 14 TL\n");
            for l in *lines {
                content.push_str(&format!(
                    "({}) Tj T*\n",
                    l.replace('(', "\\(").replace(')', "\\)")
                ));
            }
            content.push_str("ET\n");
        } else {
            content.push_str("0 0 1 rg 72 72 200 200 re f\n");
        }
        objects.push(format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> /Contents {} 0 R >>",
            5 + 2 * i
        ));
        objects.push(format!(
            "<< /Length {} >>\nstream\n{content}endstream",
            content.len()
        ));
    }
    pdf_from_objects(
        &objects
            .iter()
            .map(|o| o.as_bytes().to_vec())
            .collect::<Vec<_>>(),
    )
}

/// A PDF of the given objects (numbered from 1, the first is the catalog), with a correct
/// cross-reference table.
pub fn pdf_from_objects(objects: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
        out.extend_from_slice(o);
        out.extend_from_slice(b"\nendobj\n");
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for off in offsets {
        out.extend_from_slice(format!("{off:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

/// One page whose content (`Td`-positioned text, then `extra` operators) uses `resources`;
/// `more` are further objects, numbered from 6.
fn one_page_pdf(resources: &str, extra: &str, more: Vec<Vec<u8>>) -> Vec<u8> {
    let content = format!("BT /F1 12 Tf 72 720 Td (Quarterly report) Tj ET\n{extra}\n");
    let mut objects = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [4 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
            .to_vec(),
        format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> {resources} >> /Contents 5 0 R >>"
        )
        .into_bytes(),
        format!("<< /Length {} >>\nstream\n{content}endstream", content.len()).into_bytes(),
    ];
    objects.extend(more);
    pdf_from_objects(&objects)
}

/// A PDF whose page draws a form XObject that draws itself: pdf-extract follows it without a
/// cycle check until the stack overflows, which aborts the process that parses it.
pub fn pdf_self_drawing_form() -> Vec<u8> {
    let form = "/X Do\n";
    one_page_pdf(
        "/XObject << /X 6 0 R >>",
        "/X Do",
        vec![format!(
            "<< /Type /XObject /Subtype /Form /BBox [0 0 612 792] /Resources << /XObject << /X 6 0 R >> >> /Length {} >>\nstream\n{form}endstream",
            form.len()
        )
        .into_bytes()],
    )
}
