//! Hostile files are skipped with a reason and the rest is indexed.

use std::os::unix::fs::PermissionsExt;

use crate::harness::*;

/// Why the connector skipped the file whose path ends with `name`.
fn skip_reason(share: &docent_proto::v1::ConnectorStatus, name: &str) -> String {
    share
        .skipped
        .iter()
        .find(|s| s.id.ends_with(name))
        .map(|s| s.reason.clone())
        .unwrap_or_else(|| panic!("{name} not reported as skipped: {:?}", share.skipped))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_are_skipped_with_reasons() {
    let env = Env::empty();
    let c = env.corpus();
    std::fs::write(
        c.join("good.md"),
        "# Good\n\nThe quarterly town hall is on the first Monday.",
    )
    .unwrap();
    std::fs::write(c.join("empty.txt"), "").unwrap();
    // Skipped too, and its name holds a card number: admins outside the PII-exempt groups see
    // it redacted in the skip list, as anything else that leaves the daemon.
    std::fs::write(c.join("payroll 4111 1111 1111 1111.txt"), "").unwrap();
    std::fs::write(c.join("huge.txt"), "word ".repeat(300_000)).unwrap(); // 1.5 MB > 1 MB limit
    std::fs::write(
        c.join("binary.txt"),
        [0x89, b'P', b'N', b'G', 0, 0, 0, 13, 0xff],
    )
    .unwrap();
    std::fs::write(c.join("latin1.txt"), b"caf\xe9 cr\xe8me").unwrap();
    std::fs::write(c.join("picture.png"), [0x89, b'P', b'N', b'G']).unwrap();
    std::fs::write(c.join("closed.txt"), "nobody may read this").unwrap();
    std::fs::set_permissions(c.join("closed.txt"), std::fs::Permissions::from_mode(0o000)).unwrap();
    std::fs::create_dir(c.join("loop")).unwrap();
    std::os::unix::fs::symlink("..", c.join("loop/back")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", c.join("dangling.txt")).unwrap();
    // Hostile documents of the binary formats.
    use docent::parse::samples;
    std::fs::write(c.join("broken.pdf"), b"%PDF-1.4\n1 0 obj << /Type /Catalog").unwrap();
    std::fs::write(c.join("scan.pdf"), samples::pdf(&[&[], &[]])).unwrap();
    std::fs::write(c.join("notzip.docx"), b"PK\x03\x04 this is no archive").unwrap();
    // A zip bomb: 80 MB of one repeated character, a few hundred kB compressed.
    let bomb = format!(
        "<w:document><w:body><w:p><w:t>{}</w:t></w:p></w:body></w:document>",
        "a".repeat(80 << 20)
    );
    std::fs::write(
        c.join("bomb.docx"),
        samples::zip(&[("word/document.xml", &bomb)]),
    )
    .unwrap();
    // A 1 kB spreadsheet whose shared-string table claims 10¹³ entries: calamine reserves
    // them (an allocation failure aborts the process that parses it: the parser process).
    std::fs::write(
        c.join("counts.xlsx"),
        samples::zip(&[
            (
                "_rels/.rels",
                "<Relationships><Relationship Id=\"rId1\" Type=\"http://schemas.openxmlformats.org/\
                 officeDocument/2006/relationships/officeDocument\" Target=\"xl/workbook.xml\">\
                 </Relationship></Relationships>",
            ),
            (
                "xl/sharedStrings.xml",
                "<sst uniqueCount=\"10000000000000\"></sst>",
            ),
        ]),
    )
    .unwrap();
    std::fs::write(c.join("bad.json"), "{\"a\": [1, 2,").unwrap();
    // Valid, but its extracted text exceeds the connector's max_text_bytes (set to 4096 below).
    std::fs::write(
        c.join("long.csv"),
        "id,note\n".to_string() + &"7,some note text\n".repeat(400),
    )
    .unwrap();

    let text = env.config_text();
    let text = replaced(
        &text,
        "max_file_size_bytes = 52428800\nmax_text_bytes = 5242880",
        "max_file_size_bytes = 1048576\nmax_text_bytes = 4096",
    );
    // Links are not followed by default (then loops and dangling links are simply not there);
    // followed, a loop and a dangling link are skipped with their reasons.
    let text = replaced(&text, "follow_symlinks = false", "follow_symlinks = true");
    // Keep POSIX modes for this test (the example's root rule would open everything to staff).
    let (head, rest) = text.split_once("# ACL rules by path prefix").unwrap();
    let text = format!("{head}{}", &rest[rest.find("# A push source").unwrap()..]);
    let config = env.config_from(&text);
    let d = env.start_with(config).await;

    let st = d.connectors().await;
    let share = &st.connectors[0];
    let reason = |name: &str| skip_reason(share, name);
    assert_eq!(reason("/empty.txt"), "empty document");
    assert!(
        reason("/huge.txt").starts_with("too large: 1500000 bytes"),
        "{}",
        reason("/huge.txt")
    );
    assert!(
        reason("/binary.txt").starts_with("binary content"),
        "{}",
        reason("/binary.txt")
    );
    assert_eq!(reason("/latin1.txt"), "invalid UTF-8 at byte 3");
    assert_eq!(reason("/picture.png"), "unsupported file type: .png");
    assert!(
        reason("/closed.txt").contains("allows nobody"),
        "{}",
        reason("/closed.txt")
    );
    assert_eq!(reason("/loop/back"), "symlink loop");
    assert!(
        reason("/dangling.txt").starts_with("unreadable"),
        "{}",
        reason("/dangling.txt")
    );

    for (name, want) in [
        ("/broken.pdf", "malformed: PDF"),
        ("/scan.pdf", "no text layer"),
        ("/notzip.docx", "malformed: not a valid zip archive"),
        ("/bomb.docx", "uncompressed"),
        ("/counts.xlsx", "the parser crashed"),
        ("/bad.json", "malformed: JSON"),
        ("/long.csv", "the limit is 4096"),
    ] {
        let r = reason(name);
        assert!(r.contains(want), "{name}: {r}");
    }

    let ids: Vec<&str> = share.skipped.iter().map(|s| s.id.as_str()).collect();
    assert!(
        ids.iter()
            .any(|id| id.contains("payroll") && id.contains("[REDACTED")),
        "{ids:?}"
    );
    assert!(!ids.iter().any(|id| id.contains("4111 1111")), "{ids:?}");

    assert_eq!(share.documents, 1, "only good.md is indexed");
    assert_eq!(share.state, "watching");
    // good.md is world-readable by POSIX mode: everyone may find it.
    let r = d.search(ALICE, "town hall", 10).await.unwrap();
    assert_eq!(r.hits.len(), 1);
    assert!(
        r.hits[0]
            .citation
            .as_ref()
            .unwrap()
            .uri
            .ends_with("/good.md")
    );
    let stats = d.stats().await;
    assert_eq!(stats.documents, 1);
    assert!(stats.documents_failed >= 10, "{stats:?}");
    d.stop().await;
}

/// A PDF that aborts the process parsing it (pdf-extract recursing into a form XObject that
/// draws itself until the stack overflows) fails alone: PDFs are parsed in a child process, and
/// the daemon indexes the rest and keeps serving. (Parsed in the daemon's process, this file
/// aborted it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pdfs_that_crash_their_parser_fail_alone() {
    use docent::parse::samples;
    let env = Env::empty();
    let c = env.corpus();
    std::fs::write(
        c.join("good.pdf"),
        samples::pdf(&[&["Travel policy", "", "Trains are booked in second class."]]),
    )
    .unwrap();
    std::fs::write(c.join("loop.pdf"), samples::pdf_self_drawing_form()).unwrap();
    let d = env.start().await;

    let st = d.connectors().await;
    let share = &st.connectors[0];
    let reason = |name: &str| skip_reason(share, name);
    let r = reason("/loop.pdf");
    assert!(r.contains("the parser crashed on this file"), "{r}");
    assert_eq!(share.documents, 1, "good.pdf is indexed");
    let r = d.search(ALICE, "second class trains", 10).await.unwrap();
    assert!(
        r.hits[0]
            .citation
            .as_ref()
            .unwrap()
            .uri
            .ends_with("/good.pdf"),
        "{r:?}"
    );
    d.stop().await;
}

/// A 64 KB HTML page that has html5ever reopen 3,000 formatting elements (each with its own
/// attribute) for each of 9,800 text runs, about 30 million nodes: parsed in a child process
/// (all HTML is), it reaches the parser's memory limit or its deadline and fails alone. In the
/// daemon's process (HTML up to 64 KiB was, until a review found this), it took gigabytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_html_page_that_builds_millions_of_nodes_fails_alone() {
    let env = Env::empty();
    let c = env.corpus();
    std::fs::write(
        c.join("good.md"),
        "# Travel\n\nTrains are booked in second class.\n",
    )
    .unwrap();
    let opened: String = (0..3000).map(|i| format!("<b a{i}>")).collect();
    let page = format!("<p>{opened}{}", "<p>x".repeat(9_800));
    assert!(page.len() <= 64 << 10, "{}", page.len());
    std::fs::write(c.join("reopen.html"), page).unwrap();
    let (d, r, documents) = skipped_under_1gib_parsers(&env, "/reopen.html").await;
    assert!(
        r.contains("the parser crashed on this file") || r.contains("timed out"),
        "{r}"
    );
    assert_eq!(documents, 1, "good.md is indexed");
    d.stop().await;
}

/// A daemon over `env` whose parser processes may use 1 GiB; why it skipped `name`, and how
/// many documents its share indexed.
async fn skipped_under_1gib_parsers(env: &Env, name: &str) -> (Running, String, u64) {
    let text = replaced(
        &env.config_text(),
        "\nparse_memory_mib = 2048\n",
        "\nparse_memory_mib = 1024\n",
    );
    let d = env.start_with(env.config_from(&text)).await;
    let st = d.connectors().await;
    let share = &st.connectors[0];
    let r = skip_reason(share, name);
    let documents = share.documents;
    (d, r, documents)
}

/// A PDF whose page content inflates to 3 GiB of zeros: the parser process reaches its memory
/// limit (`parse_memory_mib`, here 1 GiB) and dies; the document is skipped with a reason and
/// the daemon, whose memory it never touched, indexes the rest. In process, the same file
/// allocates all 3 GiB (and on a smaller machine than this one, takes the daemon down).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pdf_that_inflates_past_the_parser_memory_limit_fails_alone() {
    use std::io::Write;
    let env = Env::empty();
    let c = env.corpus();
    std::fs::write(
        c.join("good.pdf"),
        docent::parse::samples::pdf(&[&[
            "Travel policy",
            "",
            "Trains are booked in second class.",
        ]]),
    )
    .unwrap();
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..3 * 1024 {
        z.write_all(&zeros).unwrap();
    }
    let stream = z.finish().unwrap();
    let mut content = format!(
        "<< /Length {} /Filter /FlateDecode >>\nstream\n",
        stream.len()
    )
    .into_bytes();
    content.extend_from_slice(&stream);
    content.extend_from_slice(b"\nendstream");
    let bomb = docent::parse::samples::pdf_from_objects(&[
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>".to_vec(),
        content,
    ]);
    assert!(bomb.len() < 8 << 20, "{}", bomb.len());
    std::fs::write(c.join("bomb.pdf"), bomb).unwrap();
    let (d, r, documents) = skipped_under_1gib_parsers(&env, "/bomb.pdf").await;
    assert!(r.contains("the parser crashed on this file"), "{r}");
    assert_eq!(documents, 1, "good.pdf is indexed under the same limit");
    d.stop().await;
}
