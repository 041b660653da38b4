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
        other => other.to_string(),
    }
}

/// Most cells read from one workbook.
const MAX_CELLS: usize = 4_000_000;

/// A sheet's cells as rows of their used columns: read cell by cell for the formats that allow
/// it (XLSX, XLSB), so two cells far apart (A1 and XFD1048576) cost two cells, not the whole
/// rectangle between them, as a `Range` would.
fn sheet_rows(
    wb: &mut calamine::Sheets<Cursor<&[u8]>>,
    name: &str,
    cells_read: &mut usize,
) -> Result<Vec<Row>, ParseError> {
    use std::collections::BTreeMap;
    let bad = |e: &dyn std::fmt::Display| ParseError::Malformed(format!("sheet {name:?}: {e}"));
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
    let mut wb = calamine::open_workbook_auto_from_rs(Cursor::new(bytes))
        .map_err(|e| ParseError::Malformed(format!("spreadsheet: {e}")))?;
    let mut b = TextBuilder::default();
    let mut cells_read = 0;
    for name in wb.sheet_names() {
        if b.over() {
            break;
        }
        let sheet = sheet_rows(&mut wb, &name, &mut cells_read)?;
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
        Ok(r) => Some(numbered(r.iter())),
        Err(e) => {
            failed = Some(ParseError::Malformed(format!("CSV record {}: {e}", i + 1)));
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

/// JSON: one block per leaf, `a.b[2].c: value`, objects in document order.
pub fn json(src: &str) -> Result<ParsedDoc, ParseError> {
    let v: serde_json::Value =
        serde_json::from_str(src).map_err(|e| ParseError::Malformed(format!("JSON: {e}")))?;
    let mut b = TextBuilder::default();
    let mut title = String::new();
    fn walk(v: &serde_json::Value, path: &mut String, b: &mut TextBuilder, title: &mut String) {
        // Each leaf repeats its path: stop as soon as the text budget is spent.
        if b.over() {
            return;
        }
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k);
                    walk(x, path, b, title);
                    path.truncate(len);
                }
            }
            serde_json::Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    walk(x, path, b, title);
                    path.truncate(len);
                }
            }
            serde_json::Value::Null => {}
            leaf => {
                let val = match leaf {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                if val.trim().is_empty() {
                    return;
                }
                if title.is_empty() && matches!(path.as_str(), "title" | "name") {
                    *title = val.clone();
                }
                b.start(BlockKind::Paragraph);
                let line = if path.is_empty() {
                    val
                } else {
                    format!("{path}: {val}")
                };
                b.push(&line, false);
            }
        }
    }
    walk(&v, &mut String::new(), &mut b, &mut title);
    Ok(b.into_doc(title))
}

#[cfg(test)]
mod tests {
    use crate::parse::{BlockKind, ParseError, assert_spans_valid, parse};

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
    }

    #[test]
    fn corrupt_spreadsheet_is_an_error() {
        let e = parse(b"PK\x03\x04garbage", None, "x.xlsx").unwrap_err();
        assert!(matches!(e, ParseError::Malformed(_)), "{e:?}");
    }
}
