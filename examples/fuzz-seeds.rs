//! Writes seed inputs for the fuzz targets (fuzz/corpus/<target>/) from `parse::samples`: valid
//! documents of each format, so coverage-guided fuzzing starts inside the formats' structure.

use docent::parse::samples;

fn main() -> std::io::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let seeds: Vec<(&str, &str, Vec<u8>)> = vec![
        ("parse_pdf", "two-pages", samples::pdf(&[&["Title", "", "Body text."], &["Page two."]])),
        ("parse_pdf", "scan", samples::pdf(&[&[]])),
        ("parse_docx", "headings", samples::docx(&[(Some("Heading1"), "H"), (None, "a &amp; b")], Some("T"))),
        ("parse_pptx", "slides", samples::pptx(&[("Title", &["one", "two"]), ("Next", &["three"])])),
        ("parse_xlsx", "sheet", samples::xlsx("S", &[&["a", "b"], &["1", "x"], &["2.5", "y"]])),
        ("parse_csv", "rows", b"a,b,c\n1,\"x, y\",3\n4,5\n".to_vec()),
        ("parse_json", "nested", br#"{"a": {"b": [1, "two", null, {"c": true}]}, "title": "t"}"#.to_vec()),
        ("parse_html", "page", b"<html><head><title>T</title></head><body><h1>H</h1><p>para <b>bold</b></p><ul><li>x</li></ul><table><tr><td>c</td></tr></table></body></html>".to_vec()),
        ("parse_markdown", "doc", b"# H\n\npara *em*\n\n- item\n\n```\ncode\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n".to_vec()),
    ];
    for (target, name, bytes) in seeds {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), bytes)?;
    }
    println!("seeds written to {}", root.display());
    Ok(())
}
