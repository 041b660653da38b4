//! Tables: XLSX (via `calamine`) and CSV. Each row becomes one block rendered with its header
//! ("Name: Dana; Team: Finance; Budget: 12000"), so a single cell can be found and cited with
//! its meaning; each sheet is a heading. JSON documents are flattened to `path: value` lines.

use std::io::Cursor;

use calamine::{Data, Reader};

use super::{BlockKind, ParseError, ParsedDoc, TextBuilder};

/// A row: its non-empty cells with their column numbers, in column order.
type Row = Vec<(u32, String)>;

/// A dense row (CSV) as a [`Row`].
fn numbered<'a>(cells: impl IntoIterator<Item = &'a str>) -> Row {
    (0u32..)
        .zip(cells)
        .filter(|(_, c)| !c.trim().is_empty())
        .map(|(i, c)| (i, c.to_string()))
        .collect()
}

/// Renders one row with the header's names; cells without a header get "column N".
fn row_text(header: &std::collections::HashMap<u32, &str>, cells: &Row) -> String {
    cells
        .iter()
        .map(
            |(i, c)| match header.get(i).filter(|h| !h.trim().is_empty()) {
                Some(h) => format!("{}: {}", h.trim(), c.trim()),
                None => format!("column {}: {}", i + 1, c.trim()),
            },
        )
        .collect::<Vec<_>>()
        .join("; ")
}

/// Emits a heading then one block per non-empty row after the first non-empty row (the header).
fn rows(b: &mut TextBuilder, heading: Option<&str>, rows: impl Iterator<Item = Row>) {
    if let Some(h) = heading {
        b.start(BlockKind::Heading(1));
        b.push(h, false);
    }
    let mut header: Option<Row> = None;
    let mut names = std::collections::HashMap::new();
    for cells in rows {
        // Each row repeats the header's names: stop as soon as the text budget is spent.
        if b.over() {
            return;
        }
        if cells.iter().all(|(_, c)| c.trim().is_empty()) {
            continue;
        }
        match &header {
            None => {
                header = Some(cells);
                names = header
                    .iter()
                    .flatten()
                    .map(|(i, h)| (*i, h.as_str()))
                    .collect();
            }
            Some(_) => {
                b.start(BlockKind::TableCell);
                b.push(&row_text(&names, &cells), false);
            }
        }
    }
}

fn cell(d: &Data) -> String {
    match d {
        Data::Empty => String::new(),
        Data::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", *f as i64),
        // A date as the sheet shows it, not its serial number (a review: "Deadline: 46023").
        // (Not a negative one, a difference of dates, which reads as no date.)
        Data::DateTime(dt) if dt.is_datetime() && dt.as_f64() >= 0.0 => {
            let (y, mo, d, h, mi, s, _) = dt.to_ymd_hms_milli();
            let time = format!("{h:02}:{mi:02}:{s:02}");
            match (dt.as_f64() < 1.0, (h, mi, s) == (0, 0, 0)) {
                (true, _) => time,
                (false, true) => format!("{y:04}-{mo:02}-{d:02}"),
                (false, false) => format!("{y:04}-{mo:02}-{d:02} {time}"),
            }
        }
        other => other.to_string(),
    }
}

/// Most cells read from one workbook.
const MAX_CELLS: usize = 4_000_000;

/// Most cells in one CSV record (wide data such as an expression matrix has tens of thousands).
const MAX_ROW_CELLS: usize = 100_000;

/// A sheet's cells as rows of their used columns: read cell by cell for the formats that allow
/// it (XLSX, XLSB), so two cells far apart (A1 and XFD1048576) cost two cells, not the whole
/// rectangle between them, as a `Range` would.
fn sheet_rows(
    wb: &mut calamine::Sheets<Cursor<&[u8]>>,
    name: &str,
    index: usize,
    cells_read: &mut usize,
) -> Result<Vec<Row>, ParseError> {
    use std::collections::BTreeMap;
    // The sheet by its place, not its name, and not the reader's words, which may quote a
    // cell: skip reasons reach every admin, whatever the document's ACL (a review).
    let bad = |_: &dyn std::fmt::Display| {
        ParseError::Malformed(format!("sheet {} cannot be read", index + 1))
    };
    let mut sparse: BTreeMap<u32, BTreeMap<u32, String>> = BTreeMap::new();
    let mut add = |(r, c): (u32, u32), v: Data| -> Result<(), ParseError> {
        *cells_read += 1;
        if *cells_read > MAX_CELLS {
            return Err(ParseError::Malformed(format!(
                "spreadsheet: more than {MAX_CELLS} cells"
            )));
        }
        let text = cell(&v);
        if !text.trim().is_empty() {
            sparse.entry(r).or_default().insert(c, text);
        }
        Ok(())
    };
    match wb {
        calamine::Sheets::Xlsx(x) => {
            let mut cells = x.worksheet_cells_reader(name).map_err(|e| bad(&e))?;
            while let Some(c) = cells.next_cell().map_err(|e| bad(&e))? {
                add(c.get_position(), Data::from(c.get_value().clone()))?;
            }
        }
        calamine::Sheets::Xlsb(x) => {
            let mut cells = x.worksheet_cells_reader(name).map_err(|e| bad(&e))?;
            while let Some(c) = cells.next_cell().map_err(|e| bad(&e))? {
                add(c.get_position(), Data::from(c.get_value().clone()))?;
            }
        }
        other => {
            let range = other.worksheet_range(name).map_err(|e| bad(&e))?;
            for (r, c, v) in range.used_cells() {
                add((r as u32, c as u32), v.clone())?;
            }
        }
    }
    // Column numbers count from the sheet's first used column, as they did over a `Range`.
    let first = sparse
        .values()
        .flat_map(|row| row.keys().next())
        .min()
        .copied()
        .unwrap_or(0);
    Ok(sparse
        .into_values()
        .map(|row| row.into_iter().map(|(c, t)| (c - first, t)).collect())
        .collect())
}

pub fn xlsx(bytes: &[u8]) -> Result<ParsedDoc, ParseError> {
    let mut wb = calamine::open_workbook_auto_from_rs(Cursor::new(bytes)).map_err(|e| {
        ParseError::Malformed(match e {
            // The one error calamine's format detection returns (a fixed text); the
            // readers' own errors may quote sheet names, cells and attribute values, which
            // skip reasons never do (session 43's review).
            calamine::Error::Msg(m) => format!("spreadsheet: {m}"),
            _ => "spreadsheet: the workbook cannot be opened".into(),
        })
    })?;
    let mut b = TextBuilder::default();
    let mut cells_read = 0;
    // What a reader sees when opening it: the visible worksheets. A hidden or "very hidden"
    // sheet (a lookup table of salaries) is left out, and a chart sheet has no cells (a
    // review: the first was indexed, the second failed the whole workbook).
    let shown: Vec<(usize, String)> = wb
        .sheets_metadata()
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            s.visible == calamine::SheetVisible::Visible && s.typ == calamine::SheetType::WorkSheet
        })
        .map(|(i, s)| (i, s.name.clone()))
        .collect();
    // `index`: the sheet's place among all the workbook's sheets, as its tabs show them.
    for (index, name) in shown {
        if b.over() {
            break;
        }
        let sheet = sheet_rows(&mut wb, &name, index, &mut cells_read)?;
        rows(&mut b, Some(&name), sheet.into_iter());
    }
    Ok(b.into_doc(String::new()))
}

pub fn csv(src: &str) -> Result<ParsedDoc, ParseError> {
    let mut rd = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(src.as_bytes());
    // Record by record, keeping only non-empty cells: the text budget stops the reading, and a
    // line of a million commas costs one record, not a million strings held for every line.
    let mut failed = None;
    let records = rd.records().enumerate().map_while(|(i, r)| match r {
        // A row of millions of cells (a 50 MiB header line of commas) would become millions of
        // strings before the text budget applies: refused.
        Ok(r) if r.len() > MAX_ROW_CELLS => {
            failed = Some(ParseError::Malformed(format!(
                "CSV record {}: {} cells, more than {MAX_ROW_CELLS}",
                i + 1,
                r.len()
            )));
            None
        }
        Ok(r) => Some(numbered(r.iter())),
        Err(e) => {
            // Positions and counts only: a deserialisation message may quote a field.
            let why = match e.kind() {
                csv::ErrorKind::Utf8 { err, .. } => {
                    format!("invalid UTF-8 in field {}", err.field() + 1)
                }
                csv::ErrorKind::UnequalLengths {
                    expected_len, len, ..
                } => format!("{len} fields, {expected_len} expected"),
                _ => "unreadable".into(),
            };
            failed = Some(ParseError::Malformed(format!(
                "CSV record {}: {why}",
                i + 1
            )));
            None
        }
    });
    let mut b = TextBuilder::default();
    rows(&mut b, None, records);
    match failed {
        Some(e) => Err(e),
        None => Ok(b.into_doc(String::new())),
    }
}

/// JSON: one block per leaf, `a.b[2].c: value`, objects in document order. Streamed: no tree
/// of the document is built (as a tree, a value takes ~80 bytes: a 50 MiB array of small
/// numbers took gigabytes before the text budget applied), and once the budget is spent the
/// rest is only checked for syntax. serde_json's nesting limit (128) applies as before.
pub fn json(src: &str) -> Result<ParsedDoc, ParseError> {
    let mut walk = JsonWalk {
        b: TextBuilder::default(),
        title: String::new(),
        path: String::new(),
    };
    let mut de = serde_json::Deserializer::from_str(src);
    serde::de::DeserializeSeed::deserialize(&mut walk, &mut de)
        .and_then(|()| de.end())
        .map_err(|e| {
            use serde_json::error::Category;
            ParseError::Malformed(match e.classify() {
                // Fixed texts with a line and column; a data error's message may quote a value.
                Category::Syntax | Category::Eof => format!("JSON: {e}"),
                Category::Data | Category::Io => format!(
                    "JSON: an unexpected value at line {} column {}",
                    e.line(),
                    e.column()
                ),
            })
        })?;
    Ok(walk.b.into_doc(walk.title))
}

/// The JSON walk's state: the text so far, the title, and the path of the value being read.
struct JsonWalk {
    b: TextBuilder,
    title: String,
    path: String,
}

impl JsonWalk {
    fn leaf(&mut self, val: String) {
        if self.b.over() || val.trim().is_empty() {
            return;
        }
        if self.title.is_empty() && matches!(self.path.as_str(), "title" | "name") {
            self.title = val.clone();
        }
        self.b.start(BlockKind::Paragraph);
        let line = if self.path.is_empty() {
            val
        } else {
            format!("{}: {val}", self.path)
        };
        self.b.push(&line, false);
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for &mut JsonWalk {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for &mut JsonWalk {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.leaf(v.to_string());
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.leaf(v.to_string());
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.leaf(v.to_string());
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        // As serde_json writes a number (`1e+21`, not 22 digits), as before.
        self.leaf(serde_json::Number::from_f64(v).map_or_else(|| v.to_string(), |n| n.to_string()));
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.leaf(v.to_string());
        Ok(())
    }

    fn visit_string<E>(self, v: String) -> Result<(), E> {
        self.leaf(v);
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        use serde::de::IgnoredAny;
        for i in 0usize.. {
            if self.b.over() {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                break;
            }
            let len = self.path.len();
            self.path.push_str(&format!("[{i}]"));
            let more = seq.next_element_seed(&mut *self)?;
            self.path.truncate(len);
            if more.is_none() {
                break;
            }
        }
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        use serde::de::IgnoredAny;
        loop {
            if self.b.over() {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                return Ok(());
            }
            let Some(k) = map.next_key::<String>()? else {
                return Ok(());
            };
            let len = self.path.len();
            if !self.path.is_empty() {
                self.path.push('.');
            }
            self.path.push_str(&k);
            map.next_value_seed(&mut *self)?;
            self.path.truncate(len);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::parse::{BlockKind, ParseError, assert_spans_valid, parse};

    /// Session 31's review: a header line of millions of cells became millions of strings
    /// and a map over them, gigabytes from a 50 MiB file, before the text budget applied.
    #[test]
    fn a_csv_record_of_too_many_cells_is_refused() {
        let wide = format!("{}\n1,2\n", vec!["a"; super::MAX_ROW_CELLS + 1].join(","));
        let r = parse(wide.as_bytes(), None, "wide.csv");
        assert!(
            matches!(&r, Err(ParseError::Malformed(m)) if m.contains("cells")),
            "{r:?}"
        );
        let fine = format!("{}\n1,2\n", vec!["a"; 100].join(","));
        assert!(parse(fine.as_bytes(), None, "fine.csv").is_ok());
    }

    /// A plain text file past the text budget stops before its paragraphs become blocks (the
    /// parse itself fails, not only the check of its result).
    #[test]
    fn plain_text_past_the_budget_is_refused_before_it_is_split() {
        let before = crate::parse::TEXT_BUDGET.with(|b| b.replace(1 << 10));
        let r = parse("a\n\n".repeat(1000).as_bytes(), None, "a.txt");
        crate::parse::TEXT_BUDGET.with(|b| b.set(before));
        assert!(matches!(r, Err(ParseError::TooMuchText { .. })), "{r:?}");
    }

    #[test]
    fn xlsx_rows_carry_their_header() {
        let bytes = crate::parse::samples::xlsx(
            "Budgets",
            &[
                &["Team", "Owner", "Budget"],
                &["Finance", "Dana", "12000"],
                &["", "", ""],
                &["Platform", "Rui", "48000.5"],
            ],
        );
        let d = parse(&bytes, None, "budgets-2027.xlsx").unwrap();
        assert_spans_valid(&d);
        let texts: Vec<&str> = d.blocks.iter().map(|b| &d.text[b.span.clone()]).collect();
        assert_eq!(
            texts,
            [
                "Budgets",
                "Team: Finance; Owner: Dana; Budget: 12000",
                "Team: Platform; Owner: Rui; Budget: 48000.5"
            ]
        );
        assert_eq!(d.blocks[1].kind, BlockKind::TableCell);
        assert_eq!(d.blocks[1].heading_path, ["Budgets"]);
        assert_eq!(d.title, "budgets 2027");
    }

    /// Found by a review: a hidden or "very hidden" sheet was indexed, a chart sheet failed the
    /// whole workbook, and a date was its serial number.
    #[test]
    fn only_visible_worksheets_are_read_and_dates_are_dates() {
        let ns = "http://schemas.openxmlformats.org/spreadsheetml/2006/main";
        let rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships";
        let rels = "http://schemas.openxmlformats.org/package/2006/relationships";
        let sheet = |cells: &str| {
            format!(
                r#"<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="{ns}"><sheetData>{cells}</sheetData></worksheet>"#
            )
        };
        let budget = sheet(
            r#"<row r="1"><c r="A1" t="inlineStr"><is><t>Item</t></is></c><c r="B1" t="inlineStr"><is><t>Deadline</t></is></c></row><row r="2"><c r="A2" t="inlineStr"><is><t>Travel</t></is></c><c r="B2" s="1"><v>46023</v></c></row>"#,
        );
        let pay = sheet(
            r#"<row r="1"><c r="A1" t="inlineStr"><is><t>Salary</t></is></c></row><row r="2"><c r="A2" t="inlineStr"><is><t>secret 95k</t></is></c></row>"#,
        );
        let hidden = sheet(
            r#"<row r="1"><c r="A1" t="inlineStr"><is><t>Lookup</t></is></c></row><row r="2"><c r="A2" t="inlineStr"><is><t>secret codes</t></is></c></row>"#,
        );
        let workbook = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="{ns}" xmlns:r="{rel}"><sheets><sheet name="Budget" sheetId="1" r:id="rId1"/><sheet name="Pay" sheetId="2" state="veryHidden" r:id="rId2"/><sheet name="Lookup" sheetId="3" state="hidden" r:id="rId3"/><sheet name="Chart1" sheetId="4" r:id="rId4"/></sheets></workbook>"#
        );
        let wb_rels = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{rels}"><Relationship Id="rId1" Type="{rel}/worksheet" Target="worksheets/sheet1.xml"/><Relationship Id="rId2" Type="{rel}/worksheet" Target="worksheets/sheet2.xml"/><Relationship Id="rId3" Type="{rel}/worksheet" Target="worksheets/sheet3.xml"/><Relationship Id="rId4" Type="{rel}/chartsheet" Target="chartsheets/sheet1.xml"/><Relationship Id="rId5" Type="{rel}/styles" Target="styles.xml"/></Relationships>"#
        );
        let styles = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><styleSheet xmlns="{ns}"><cellXfs count="2"><xf numFmtId="0"/><xf numFmtId="14" applyNumberFormat="1"/></cellXfs></styleSheet>"#
        );
        let chart = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><chartsheet xmlns="{ns}"><sheetViews><sheetView workbookViewId="0"/></sheetViews></chartsheet>"#
        );
        let bytes = crate::parse::samples::zip(&[
            (
                "[Content_Types].xml",
                r#"<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/></Types>"#,
            ),
            (
                "_rels/.rels",
                r#"<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>"#,
            ),
            ("xl/workbook.xml", &workbook),
            ("xl/_rels/workbook.xml.rels", &wb_rels),
            ("xl/styles.xml", &styles),
            ("xl/worksheets/sheet1.xml", &budget),
            ("xl/worksheets/sheet2.xml", &pay),
            ("xl/worksheets/sheet3.xml", &hidden),
            ("xl/chartsheets/sheet1.xml", &chart),
        ]);
        let d = parse(&bytes, None, "budget.xlsx").unwrap();
        assert!(!d.text.contains("secret"), "{}", d.text);
        assert!(
            d.text.contains("Item: Travel; Deadline: 2026-01-01"),
            "{}",
            d.text
        );
    }

    /// Two cells far apart: read as two cells, not as the 1.7e10-cell rectangle between them
    /// (which aborted the process on the allocation).
    #[test]
    fn far_apart_cells_cost_only_themselves() {
        let bytes = crate::parse::samples::xlsx_cells(
            "Sparse",
            &[("A1", "Name"), ("A2", "Dana"), ("XFD1048576", "far away")],
        );
        let d = parse(&bytes, None, "sparse.xlsx").unwrap();
        let texts: Vec<&str> = d.blocks.iter().map(|b| &d.text[b.span.clone()]).collect();
        assert_eq!(texts, ["Sparse", "Name: Dana", "column 16384: far away"]);
    }

    #[test]
    fn csv_rows_quotes_and_ragged_lines() {
        let src =
            "name,role,phone\n\"Doe, Jane\",\"Lead \"\"QA\"\"\",1234\nBob,Dev\nAl,Ops,1,extra\n";
        let d = parse(src.as_bytes(), None, "team.csv").unwrap();
        assert_spans_valid(&d);
        let texts: Vec<&str> = d.blocks.iter().map(|b| &d.text[b.span.clone()]).collect();
        assert_eq!(
            texts,
            [
                "name: Doe, Jane; role: Lead \"QA\"; phone: 1234",
                "name: Bob; role: Dev",
                "name: Al; role: Ops; phone: 1; column 4: extra"
            ]
        );
        // An unterminated quote runs to the end of the file (the csv crate's reading), as one cell.
        let d = parse(b"a,b\n\"unterminated,1\n", None, "x.csv").unwrap();
        assert_eq!(d.text, "a: unterminated,1");
        assert_eq!(
            parse(b"only,a,header\n", None, "x.csv").unwrap_err(),
            ParseError::NoText
        );
    }

    #[test]
    fn json_leaves_with_paths() {
        let src = r#"{"title": "On-call", "rota": [{"week": 1, "who": "Ana"}, {"week": 2, "who": null}], "notes": ""}"#;
        let d = parse(src.as_bytes(), None, "oncall.json").unwrap();
        assert_spans_valid(&d);
        assert_eq!(d.title, "On-call");
        let texts: Vec<&str> = d.blocks.iter().map(|b| &d.text[b.span.clone()]).collect();
        assert_eq!(
            texts,
            [
                "title: On-call",
                "rota[0].week: 1",
                "rota[0].who: Ana",
                "rota[1].week: 2"
            ]
        );
        assert!(matches!(
            parse(b"{\"a\": ", None, "x.json").unwrap_err(),
            ParseError::Malformed(_)
        ));
        // Numbers as serde_json writes them; text after the value is an error.
        let d = parse(
            br#"{"big": 1e21, "neg": -3, "pi": 3.5, "ok": true}"#,
            None,
            "n.json",
        )
        .unwrap();
        let texts: Vec<&str> = d.blocks.iter().map(|b| &d.text[b.span.clone()]).collect();
        assert_eq!(texts, ["big: 1e+21", "neg: -3", "pi: 3.5", "ok: true"]);
        assert!(matches!(
            parse(b"{\"a\": 1} x", None, "x.json").unwrap_err(),
            ParseError::Malformed(_)
        ));
    }

    /// A JSON document over the text budget is refused as too much text, read as a stream
    /// (session 30's review: the whole document was built as a tree first, ~40 times its
    /// size, before the budget applied).
    #[test]
    fn json_over_the_text_budget_is_too_much_text() {
        let mut src = String::from("{\"items\": [");
        for i in 0..20_000 {
            src.push_str(&format!("{{\"n\": {i}, \"s\": \"item {i}\"}},"));
        }
        src.push_str("0]}");
        let limits = crate::parse::ParseLimits {
            max_text_bytes: 4096,
            ..Default::default()
        };
        let r = crate::parse::parse_limited(src.into_bytes(), None, "big.json".into(), limits);
        assert!(matches!(r, Err(ParseError::TooMuchText { .. })), "{r:?}");
    }

    #[test]
    fn corrupt_spreadsheet_is_an_error() {
        let e = parse(b"PK\x03\x04garbage", None, "x.xlsx").unwrap_err();
        assert!(matches!(e, ParseError::Malformed(_)), "{e:?}");
    }
}
