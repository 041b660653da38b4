//! Crash safety: `docent serve` is killed with SIGKILL at random points while it ingests a
//! corpus that changes between rounds (edits, deletions, additions), and restarted, round after
//! round. Every start must open the index cleanly (a daemon that exits on its own fails the
//! test). At the end every file is present exactly once in its latest version (documents and
//! chunks both equal the file count; each edited file is found by its newest marker and not by an
//! older one; deleted files are gone), and a start after a complete, committed run embeds nothing.
//!
//! Rounds: `CRASH_ROUNDS` (default 20; the closing note reports a 100-round run). Kill delays come
//! from a seeded generator (`CRASH_SEED`), printed so a failure can be replayed.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DOCS: usize = 240;
const TOKEN: &str = "admin-dev-token";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// xorshift64*: deterministic delays from a seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Writes note `i` at revision `rev`; its marker token names both.
fn write_note(dir: &Path, i: usize, rev: u64) {
    let topics = [
        "parking",
        "payroll",
        "laptops",
        "travel",
        "holidays",
        "security",
        "onboarding",
        "meals",
    ];
    let t = topics[i % topics.len()];
    std::fs::write(
        dir.join(format!("note-{i:03}.md")),
        format!(
            "# Note {i} about {t}\n\nThis is note number {i}. It explains the {t} rules for team {}. \
             Ask the {t} desk when in doubt; reference code {}.\n",
            i % 17,
            marker(i, rev)
        ),
    )
    .unwrap();
}

fn marker(i: usize, rev: u64) -> String {
    format!("zq{i:03}r{rev:03}")
}

/// `docent search --mode bm25 --json` for a marker: the uris found.
fn find(port: u16, marker: &str) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_docent"))
        .args(["search", "--mode", "bm25", "--json", marker])
        .env("DOCENT_ADDR", format!("http://127.0.0.1:{port}"))
        .env("DOCENT_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["uri"].as_str().unwrap().to_string())
        .collect()
}

/// Runs a daemon until its crawl is done and every file is indexed; returns its status and log.
fn run_to_completion(
    dir: &Path,
    name: &str,
    files: usize,
) -> (u16, Child, serde_json::Value, PathBuf) {
    let port = free_port();
    let cfg = config(dir, port);
    let log = dir.join(format!("{name}.log"));
    let mut child = serve(&cfg, &log);
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "{name}: daemon exited: {}",
            read(&log)
        );
        // Done: the crawl finished, every file is indexed, and the index stays the same for a
        // second (the last batch is embedded and committed; commits run every 200 ms).
        if let Some(s) = status(port)
            && s["connectors"][0]["last_full_scan"].as_i64().unwrap_or(0) > 0
            && s["index"]["documents"].as_u64() == Some(files as u64)
        {
            std::thread::sleep(Duration::from_secs(1));
            if let Some(again) = status(port)
                && again["index"] == s["index"]
            {
                return (port, child, again, log);
            }
        }
        assert!(
            Instant::now() < deadline,
            "{name}: ingestion did not finish"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn config(dir: &Path, port: u16) -> PathBuf {
    let models = repo().join("models");
    let text = format!(
        r#"version = 1
[server]
listen = "127.0.0.1:{port}"
[index]
data_dir = {data:?}
commit_interval_ms = 200
queue_capacity = 16
[embedding]
model_dir = {model:?}
onnxruntime_lib = {ort:?}
[[identities]]
id = "admin"
token_sha256 = "{hash}"
admin = true
[[connectors]]
type = "fs"
id = "share"
roots = [{corpus:?}]
watch = false
[[connectors.acl_rules]]
path_prefix = ""
allow = ["everyone"]
"#,
        data = dir.join("data"),
        model = models.join("all-MiniLM-L6-v2"),
        ort = models.join("onnxruntime/libonnxruntime.so.1.31.1"),
        hash = hex::encode(docent::identity::token_hash(TOKEN)),
        corpus = dir.join("corpus"),
    );
    let p = dir.join("docent.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Starts the daemon with its log in `log` (a file, so a chatty daemon never blocks on a pipe).
fn serve(cfg: &Path, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_docent"))
        .args(["serve", "--config"])
        .arg(cfg)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start docent serve")
}

fn read(log: &Path) -> String {
    let mut s = String::new();
    let _ = std::fs::File::open(log).and_then(|mut f| f.read_to_string(&mut s));
    s
}

/// `docent status --json` against the daemon, once it answers.
fn status(port: u16) -> Option<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_docent"))
        .args(["status", "--json"])
        .env("DOCENT_ADDR", format!("http://127.0.0.1:{port}"))
        .env("DOCENT_TOKEN", TOKEN)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

#[test]
fn sigkill_during_ingestion_loses_and_duplicates_nothing() {
    let rounds: u64 = std::env::var("CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_d0c5);
    eprintln!("crash loop: {rounds} rounds, CRASH_SEED={seed}");
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    // Latest revision of each live note; None once deleted.
    let mut rev: Vec<Option<u64>> = vec![Some(0); DOCS];
    // Per note: the last revision written (kept after deletion) and the one before it.
    let mut last: Vec<u64> = vec![0; DOCS];
    let mut before: Vec<Option<u64>> = vec![None; DOCS];
    for i in 0..DOCS {
        write_note(&corpus, i, 0);
    }
    let mut rng = Rng(seed | 1);

    for round in 0..rounds {
        let port = free_port();
        let cfg = config(dir.path(), port);
        let log = dir.path().join(format!("round-{round}.log"));
        let mut child = serve(&cfg, &log);
        // Kill anywhere from model loading to late ingestion (0-4 s).
        let delay = Duration::from_millis(rng.next() % 4000);
        let t = Instant::now();
        while t.elapsed() < delay {
            if let Some(status) = child.try_wait().unwrap() {
                let err = read(&log);
                panic!(
                    "round {round}: the daemon exited by itself ({status}) before the kill:\n{err}"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Change the corpus before the next start: edit 12 notes, delete 2, add 2.
        for _ in 0..12 {
            let i = (rng.next() % rev.len() as u64) as usize;
            if rev[i].is_some() {
                before[i] = Some(last[i]);
                last[i] = round + 1;
                rev[i] = Some(round + 1);
                write_note(&corpus, i, round + 1);
            }
        }
        for _ in 0..2 {
            let i = (rng.next() % rev.len() as u64) as usize;
            if rev[i].take().is_some() {
                std::fs::remove_file(corpus.join(format!("note-{i:03}.md"))).unwrap();
            }
            rev.push(Some(round + 1));
            last.push(round + 1);
            before.push(None);
            write_note(&corpus, rev.len() - 1, round + 1);
        }
    }

    // A last start runs to completion.
    let files = rev.iter().filter(|r| r.is_some()).count();
    let (port, mut child, done, log) = run_to_completion(dir.path(), "final", files);
    let index = &done["index"];
    assert_eq!(index["documents"], files as u64, "{done}");
    // One chunk per note: more chunks than documents would be a duplicate.
    assert_eq!(index["chunks"], files as u64, "{done}");
    assert_eq!(index["documents_failed"], 0, "{done}");
    // Latest versions only (the revision before an edit is gone); deleted notes are gone.
    let (mut edited, mut deleted) = (0, 0);
    for (i, r) in rev.iter().enumerate() {
        match (r, before[i]) {
            (Some(r), Some(old)) if edited < 25 => {
                let hits = find(port, &marker(i, *r));
                assert_eq!(hits.len(), 1, "note {i} rev {r}: {hits:?}");
                assert!(hits[0].ends_with(&format!("/note-{i:03}.md")));
                assert!(
                    find(port, &marker(i, old)).is_empty(),
                    "note {i}: stale revision {old} still indexed"
                );
                edited += 1;
            }
            (None, _) => {
                assert!(
                    find(port, &marker(i, last[i])).is_empty(),
                    "deleted note {i} (rev {}) still indexed",
                    last[i]
                );
                deleted += 1;
            }
            _ => {}
        }
    }
    assert!(
        edited > 0 && deleted > 0,
        "the rounds must edit and delete notes"
    );
    let committed = |log: &Path| -> u64 {
        let text = read(log);
        text.lines()
            .find(|l| l.contains("index open"))
            .and_then(|l| l.split("documents=").nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no 'index open' line in the log:\n{text}"))
    };
    eprintln!(
        "crash loop: {} files; the last start found {} documents committed and embedded {}",
        files,
        committed(&log),
        index["chunks_embedded"]
    );
    child.kill().unwrap();
    child.wait().unwrap();

    // Everything was committed: a start now re-embeds nothing and changes nothing.
    let (_, mut child, again, log) = run_to_completion(dir.path(), "settled", files);
    assert_eq!(committed(&log), files as u64);
    assert_eq!(again["index"]["chunks_embedded"], 0, "{again}");
    assert_eq!(again["index"]["chunks"], files as u64, "{again}");
    child.kill().unwrap();
    child.wait().unwrap();
}
