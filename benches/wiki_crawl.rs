//! The two wiki connectors against real wikis of about 1,000 pages: the handbook's Markdown files
//! (`shared/data/handbook/content`, front matter stripped) imported as plain wiki text into a
//! fresh MediaWiki and a fresh DokuWiki, both started by `scripts/wiki/*.sh` (PHP's built-in
//! server, one worker). For each connector: the first crawl (fresh index, no checkpoint, until
//! the first checkpoint), an incremental sync with nothing changed, and an incremental sync
//! after a few edits (from the previous checkpoint and the index state the earlier runs left).
//! Requests are counted by a small proxy between the connector and the wiki (the wiki's
//! `php -S` access log is counted too, as a cross-check). Seeding is not measured: MediaWiki is
//! filled with `maintenance/importTextFiles.php` (and its job queue drained with `runJobs.php`),
//! DokuWiki through `wiki.putPage`. Not a test: run it with
//!
//!     cargo bench --bench wiki_crawl -- [--pages N] [--edits N] [--concurrency N]
//!         [--only mediawiki|dokuwiki] [--timeout-secs N]
//!
//! `--concurrency` is the connectors' `max_concurrent_requests` (default: theirs, 2).

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use docent_connector_api::registry::{ConfigEnv, ConnectorFactory};
use docent_connector_api::{
    Change, Checkpoint, Connector, DocKey, IndexedDoc, IndexedState, conformance,
};
use docent_dokuwiki_connector::client::{Client, ClientOptions};
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CONTENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/data/handbook/content"
);
const MW_CODE: &str = "/usr/share/mediawiki";
/// The bot password `scripts/wiki/mediawiki.sh` creates.
const MW_BOT_USER: &str = "Admin@docent";
const MW_BOT_PASS: &str = "docentbotpassword000000000000000";
/// The crawler account of `scripts/wiki/dokuwiki.sh` (a superuser).
const DW_USER: &str = "admin";
const DW_PASS: &str = "admin-pass";
const CONNECTOR: &str = "wiki";

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn num(name: &str) -> Option<usize> {
    arg(name).and_then(|s| s.parse().ok())
}

// ---------------------------------------------------------------------------------------------
// The pages

struct Page {
    /// Lowercase letters, digits and '-': a DokuWiki id segment and a MediaWiki title.
    slug: String,
    text: String,
}

fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            markdown_files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "md") {
            out.push(p);
        }
    }
    Ok(())
}

fn strip_front_matter(text: &str) -> &str {
    let Some(rest) = text.strip_prefix("---\n") else {
        return text;
    };
    match rest.find("\n---\n") {
        Some(end) => &rest[end + 5..],
        None => text,
    }
}

fn slugify(rel: &str) -> String {
    let mut s = String::with_capacity(rel.len());
    for c in rel.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            s.push(c);
        } else if !s.ends_with('-') {
            s.push('-');
        }
    }
    s.trim_matches('-').to_string()
}

/// `n` pages from the handbook, cycling through it (slugs `-2`, `-3`, ...) when it has fewer.
fn load_pages(n: usize) -> anyhow::Result<Vec<Page>> {
    let root = Path::new(CONTENT);
    let mut files = Vec::new();
    markdown_files(root, &mut files).with_context(|| format!("reading {}", root.display()))?;
    files.sort();
    if files.is_empty() {
        bail!("no Markdown files under {}", root.display());
    }
    let mut seen = HashSet::new();
    let mut pages = Vec::with_capacity(n);
    for i in 0..n {
        let file = &files[i % files.len()];
        let rel = file.strip_prefix(root)?.with_extension("");
        let mut slug = slugify(&rel.to_string_lossy());
        if i >= files.len() {
            slug = format!("{slug}-{}", i / files.len() + 1);
        }
        if !seen.insert(slug.clone()) {
            slug = format!("{slug}-n{i}");
            seen.insert(slug.clone());
        }
        let raw = std::fs::read_to_string(file)
            .unwrap_or_else(|_| String::from_utf8_lossy(&std::fs::read(file).unwrap()).into());
        // Control characters (one page has a U+0003) cannot travel in XML-RPC (XML 1.0).
        let body: String = strip_front_matter(&raw)
            .trim()
            .chars()
            .filter(|c| !c.is_control() || matches!(c, '\n' | '\t'))
            .collect();
        // An empty DokuWiki page is a deleted one.
        let text = if body.is_empty() {
            format!("(The handbook page {slug} is empty.)")
        } else {
            body
        };
        pages.push(Page { slug, text });
    }
    Ok(pages)
}

// ---------------------------------------------------------------------------------------------
// A counting proxy in front of the wiki

#[derive(Default)]
struct Traffic {
    requests: AtomicU64,
    /// Response bytes (headers and bodies) from the wiki.
    bytes_down: AtomicU64,
}

impl Traffic {
    fn snapshot(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.bytes_down.load(Ordering::Relaxed),
        )
    }
}

/// Forwards connections on a fresh local port to `upstream`, counting HTTP/1 requests (heads
/// read from the client, bodies skipped by `Content-Length`) and response bytes.
async fn start_proxy(upstream: SocketAddr, traffic: Arc<Traffic>) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let traffic = traffic.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let up = forward_requests(cr, sw, &traffic);
                let down = copy_counting(sr, cw, &traffic.bytes_down);
                let _ = tokio::join!(up, down);
            });
        }
    });
    Ok(addr)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `(content length, chunked)` of a request head.
fn body_framing(head: &[u8]) -> (usize, bool) {
    let head = String::from_utf8_lossy(head);
    let mut len = 0;
    let mut chunked = false;
    for line in head.lines().skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            if k == "content-length" {
                len = v.trim().parse().unwrap_or(0);
            } else if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            }
        }
    }
    (len, chunked)
}

async fn forward_requests(
    mut r: impl AsyncRead + Unpin,
    mut w: impl AsyncWrite + Unpin,
    traffic: &Traffic,
) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    let mut body_left = 0usize;
    loop {
        if body_left > 0 && !buf.is_empty() {
            let take = body_left.min(buf.len());
            w.write_all(&buf[..take]).await?;
            buf.drain(..take);
            body_left -= take;
            continue;
        }
        if body_left == 0
            && let Some(end) = find(&buf, b"\r\n\r\n")
        {
            let head_len = end + 4;
            traffic.requests.fetch_add(1, Ordering::Relaxed);
            let (len, chunked) = body_framing(&buf[..head_len]);
            if chunked {
                // Not sent by the connectors' clients: pass the rest through uncounted.
                w.write_all(&buf).await?;
                tokio::io::copy(&mut r, &mut w).await?;
                break;
            }
            w.write_all(&buf[..head_len]).await?;
            buf.drain(..head_len);
            body_left = len;
            continue;
        }
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    w.shutdown().await
}

async fn copy_counting(
    mut r: impl AsyncRead + Unpin,
    mut w: impl AsyncWrite + Unpin,
    counter: &AtomicU64,
) -> std::io::Result<()> {
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        counter.fetch_add(n as u64, Ordering::Relaxed);
        w.write_all(&chunk[..n]).await?;
    }
    w.shutdown().await
}

/// Requests `php -S` logged so far (`[date] 127.0.0.1:port [200]: GET /...`).
fn logged_requests(log: &Path) -> u64 {
    let text = std::fs::read(log).unwrap_or_default();
    String::from_utf8_lossy(&text)
        .lines()
        .filter(|l| {
            ["]: GET ", "]: POST ", "]: HEAD "]
                .iter()
                .any(|m| l.contains(m))
        })
        .count() as u64
}

// ---------------------------------------------------------------------------------------------
// The index and a run until the next checkpoint

#[derive(Default)]
struct BenchIndex {
    docs: Mutex<BTreeMap<DocKey, IndexedDoc>>,
}

impl IndexedState for BenchIndex {
    fn get(&self, key: &DocKey) -> Option<IndexedDoc> {
        self.docs.lock().unwrap().get(key).cloned()
    }

    fn native_ids(&self, connector: &str) -> Vec<String> {
        self.docs
            .lock()
            .unwrap()
            .keys()
            .filter(|k| k.connector == connector)
            .map(|k| k.native_id.clone())
            .collect()
    }
}

#[derive(Default)]
struct RunStats {
    upserts: usize,
    deletes: usize,
    skipped: usize,
    content_bytes: usize,
    secs: f64,
    requests: u64,
    logged: u64,
    bytes_down: u64,
    checkpoint: Option<Checkpoint>,
    /// Native ids upserted.
    sent: Vec<String>,
}

struct Target<'a> {
    traffic: &'a Traffic,
    log: PathBuf,
    timeout: Duration,
}

/// Runs `connector` from `checkpoint` over `index` until its next checkpoint, applying what it
/// sends as the pipeline would, then stops it.
async fn run_until_checkpoint(
    connector: Box<dyn Connector>,
    index: &Arc<BenchIndex>,
    checkpoint: Option<Checkpoint>,
    target: &Target<'_>,
) -> anyhow::Result<RunStats> {
    let (ctx, h) = conformance::harness_context(index.clone(), checkpoint, 256);
    let (mut rx, status, shutdown) = (h.changes, h.status, h.shutdown);
    let (req0, down0) = target.traffic.snapshot();
    let logged0 = logged_requests(&target.log);
    let start = Instant::now();
    let task = tokio::spawn(connector.run(ctx));
    let mut stats = RunStats::default();
    let deadline = tokio::time::Instant::now() + target.timeout;
    while stats.checkpoint.is_none() {
        let change = match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(c)) => c,
            Ok(None) => bail!(
                "the connector stopped before a checkpoint: {:?}",
                status.snapshot().last_error()
            ),
            Err(_) => bail!(
                "no checkpoint within {:?} ({} pages sent; last error {:?})",
                target.timeout,
                stats.upserts,
                status.snapshot().last_error()
            ),
        };
        let mut docs = index.docs.lock().unwrap();
        match change {
            Change::Upsert(d) => {
                stats.upserts += 1;
                stats.content_bytes += d.content.len();
                stats.sent.push(d.key.native_id.clone());
                docs.insert(
                    d.key.clone(),
                    IndexedDoc {
                        version: d.version.clone(),
                        acl_fingerprint: d.acl.fingerprint(),
                    },
                );
            }
            Change::Delete(k) => {
                stats.deletes += 1;
                docs.remove(&k);
            }
            Change::Skipped { key, reason } => {
                eprintln!("  skipped {key}: {reason}");
                stats.skipped += 1;
                docs.remove(&key);
            }
            Change::Checkpoint { checkpoint, .. } => stats.checkpoint = Some(checkpoint),
            Change::Reconciled { .. } => {}
        }
    }
    stats.secs = start.elapsed().as_secs_f64();
    let (req1, down1) = target.traffic.snapshot();
    stats.requests = req1 - req0;
    stats.bytes_down = down1 - down0;
    shutdown.cancel();
    match tokio::time::timeout(Duration::from_secs(10), task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => bail!("the connector failed: {e}"),
        Ok(Err(e)) => bail!("the connector panicked: {e}"),
        Err(_) => bail!("the connector did not stop within 10 s of cancellation"),
    }
    // php -S writes its log line once the response is out.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stats.logged = logged_requests(&target.log) - logged0;
    Ok(stats)
}

fn env() -> ConfigEnv {
    ConfigEnv {
        id: CONNECTOR.into(),
        base_dir: "/".into(),
        max_document_bytes: 16 << 20,
        max_text_bytes: 16 << 20,
        parse_timeout: Duration::from_secs(60),
        parse_memory_bytes: 2 << 30,
    }
}

fn build(factory: &dyn ConnectorFactory, toml: &str) -> anyhow::Result<Box<dyn Connector>> {
    let spec = factory
        .configure(toml.parse()?, &env())
        .map_err(|e| anyhow::anyhow!("config: {e:?}"))?;
    Ok(spec.build().map_err(|e| anyhow::anyhow!(e))?.connector)
}

// ---------------------------------------------------------------------------------------------
// The wikis

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("scripts/wiki/{name}"))
}

fn run_cmd(c: &mut Command) -> anyhow::Result<String> {
    let out = c
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {c:?}"))?;
    if !out.status.success() {
        bail!(
            "{c:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A wiki started by one of the scripts; stopped (and its directory removed) on drop.
struct Wiki {
    script: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl Wiki {
    fn start(script_name: &str, installed: &Path) -> anyhow::Result<Self> {
        let script = script(script_name);
        if !installed.exists() {
            run_cmd(Command::new("bash").arg(&script).arg("install"))?;
        }
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        run_cmd(
            Command::new("bash")
                .arg(&script)
                .arg("start")
                .arg(dir.path())
                .arg(port.to_string()),
        )?;
        Ok(Self { script, dir, port })
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// php with this MediaWiki's settings.
    fn mw_php(&self) -> Command {
        let mut c = Command::new("php");
        c.env("MW_CONFIG_FILE", self.dir.path().join("LocalSettings.php"));
        c
    }
}

impl Drop for Wiki {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

// ---------------------------------------------------------------------------------------------
// One connector's measurements

struct Report {
    name: &'static str,
    pages: usize,
    seed_how: &'static str,
    seed_secs: f64,
    edit_secs: f64,
    edits: usize,
    crawl: RunStats,
    idle: RunStats,
    incremental: RunStats,
}

fn row(label: &str, s: &RunStats, rate: bool) -> String {
    format!(
        "| {label} | {} | {} | {} | {} | {:.1} | {:.2} | {:.2} | {} |",
        s.upserts,
        s.deletes + s.skipped,
        s.requests,
        s.logged,
        s.bytes_down as f64 / 1e6,
        s.content_bytes as f64 / 1e6,
        s.secs,
        if rate {
            format!("{:.1}", s.upserts as f64 / s.secs)
        } else {
            "—".into()
        }
    )
}

impl Report {
    fn print(&self, concurrency: &str) {
        println!(
            "\n### {} ({} handbook pages; max_concurrent_requests = {concurrency}; php -S single worker)\n",
            self.name, self.pages
        );
        println!(
            "| run | pages sent | deleted/skipped | requests (proxy) | requests (php log) | MB from wiki | MB content | seconds | pages/s |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        println!("{}", row("crawl, fresh index", &self.crawl, true));
        println!("{}", row("incremental, nothing changed", &self.idle, false));
        println!(
            "{}",
            row(
                &format!("incremental after {} edits", self.edits),
                &self.incremental,
                false
            )
        );
        println!(
            "\nSeeding (not measured above): {} in {:.1} s; the {} edits took {:.1} s.",
            self.seed_how, self.seed_secs, self.edits, self.edit_secs
        );
    }
}

/// A proxy in front of one wiki, and the index the connector's runs build up.
struct Session<'a> {
    name: &'static str,
    traffic: Arc<Traffic>,
    url: String,
    log: PathBuf,
    timeout: Duration,
    index: Arc<BenchIndex>,
    connector: &'a dyn Fn(&str) -> anyhow::Result<Box<dyn Connector>>,
}

impl<'a> Session<'a> {
    async fn start(
        name: &'static str,
        wiki: &Wiki,
        timeout: Duration,
        connector: &'a dyn Fn(&str) -> anyhow::Result<Box<dyn Connector>>,
    ) -> anyhow::Result<Self> {
        let traffic = Arc::new(Traffic::default());
        let proxy = start_proxy(wiki.addr(), traffic.clone()).await?;
        Ok(Self {
            name,
            traffic,
            url: format!("http://{proxy}"),
            log: wiki.log(),
            timeout,
            index: Arc::new(BenchIndex::default()),
            connector,
        })
    }

    /// A fresh connector through the proxy, run from `checkpoint` until its next checkpoint.
    async fn run(&self, what: &str, checkpoint: Option<Checkpoint>) -> anyhow::Result<RunStats> {
        eprintln!("{}: {what}", self.name);
        let target = Target {
            traffic: &self.traffic,
            log: self.log.clone(),
            timeout: self.timeout,
        };
        let s = run_until_checkpoint(
            (self.connector)(&self.url)?,
            &self.index,
            checkpoint,
            &target,
        )
        .await?;
        eprintln!(
            "{}: {what}: {} pages sent in {:.2} s, {} requests",
            self.name, s.upserts, s.secs, s.requests
        );
        Ok(s)
    }
}

fn edited(text: &str, i: usize) -> String {
    format!("{text}\n\nEdited for the wiki_crawl benchmark (edit {i}).\n")
}

/// Which pages get edited: spread over the wiki.
fn edit_targets(pages: usize, edits: usize) -> Vec<usize> {
    (0..edits.min(pages))
        .map(|i| i * pages / edits.max(1))
        .collect()
}

async fn mediawiki(
    pages: &[Page],
    edits: usize,
    concurrency: Option<usize>,
    timeout: Duration,
) -> anyhow::Result<Report> {
    eprintln!("mediawiki: installing a fresh wiki");
    let wiki = Wiki::start(
        "mediawiki.sh",
        Path::new("/usr/share/mediawiki/maintenance/install.php"),
    )?;
    // Seed with importTextFiles.php (one PHP process instead of one request per page): the
    // title is the file name.
    let t = Instant::now();
    let files = wiki.dir.path().join("import");
    std::fs::create_dir_all(&files)?;
    for p in pages {
        std::fs::write(files.join(format!("{}.wiki", p.slug)), &p.text)?;
    }
    eprintln!("mediawiki: importing {} pages", pages.len());
    let out = run_cmd(
        wiki.mw_php()
            .arg(format!("{MW_CODE}/maintenance/importTextFiles.php"))
            .arg("--summary")
            .arg("handbook import")
            .arg(format!("{}/*.wiki", files.display())),
    )?;
    let created = out
        .lines()
        .filter(|l| l.starts_with("Successfully"))
        .count();
    if created != pages.len() {
        bail!(
            "importTextFiles.php created {created} of {} pages:\n{out}",
            pages.len()
        );
    }
    // Deferred link updates would otherwise run one per web request during the crawl.
    run_cmd(
        wiki.mw_php()
            .arg(format!("{MW_CODE}/maintenance/runJobs.php")),
    )?;
    let seed_secs = t.elapsed().as_secs_f64();

    let conc = concurrency
        .map(|c| format!("max_concurrent_requests = {c}\n"))
        .unwrap_or_default();
    let connector = |url: &str| {
        build(
            &docent_mediawiki_connector::Factory,
            &format!(
                "url = \"{url}\"\npermissions = \"public\"\nusername = \"{MW_BOT_USER}\"\n\
                 password = \"{MW_BOT_PASS}\"\n{conc}"
            ),
        )
    };
    let session = Session::start("mediawiki", &wiki, timeout, &connector).await?;
    let crawl = session.run("crawl", None).await?;
    let idle = session
        .run("incremental, nothing changed", crawl.checkpoint.clone())
        .await?;
    // Every imported page and the installer's Main Page.
    if crawl.upserts < pages.len() {
        bail!(
            "the crawl sent {} pages; the wiki should hold {}",
            crawl.upserts,
            pages.len() + 1
        );
    }

    let t = Instant::now();
    for (n, &i) in edit_targets(pages.len(), edits).iter().enumerate() {
        let mut c = wiki.mw_php();
        c.arg(format!("{MW_CODE}/maintenance/edit.php"))
            .args(["-u", "Admin", "-s", "benchmark edit"])
            .arg(&pages[i].slug)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn()?;
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().context("edit.php stdin")?;
            stdin.write_all(edited(&pages[i].text, n).as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "edit.php {} failed: {}{}",
                pages[i].slug,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    run_cmd(
        wiki.mw_php()
            .arg(format!("{MW_CODE}/maintenance/runJobs.php")),
    )?;
    let edit_secs = t.elapsed().as_secs_f64();

    let inc = session
        .run("incremental after the edits", idle.checkpoint.clone())
        .await?;
    Ok(Report {
        name: "MediaWiki 1.39",
        pages: pages.len(),
        seed_how: "maintenance/importTextFiles.php + runJobs.php",
        seed_secs,
        edit_secs,
        edits,
        crawl,
        idle,
        incremental: inc,
    })
}

async fn dokuwiki(
    pages: &[Page],
    edits: usize,
    concurrency: Option<usize>,
    timeout: Duration,
) -> anyhow::Result<Report> {
    eprintln!("dokuwiki: starting a fresh wiki");
    let wiki = Wiki::start("dokuwiki.sh", Path::new("/usr/share/dokuwiki/inc"))?;
    let url = format!("http://{}", wiki.addr());
    let admin = Client::new(
        &url,
        DW_USER,
        DW_PASS,
        ClientOptions {
            max_concurrent_requests: 4,
            ..ClientOptions::default()
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let id = |p: &Page| format!("handbook:{}", p.slug);

    eprintln!("dokuwiki: putting {} pages", pages.len());
    let t = Instant::now();
    let results: Vec<_> = futures::stream::iter(pages.iter().map(|p| {
        let admin = admin.clone();
        let id = id(p);
        async move {
            admin
                .put_page(&id, &p.text, "handbook import")
                .await
                .map_err(|e| anyhow::anyhow!("putPage {id}: {e}"))
        }
    }))
    .buffer_unordered(4)
    .collect()
    .await;
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    let seed_secs = t.elapsed().as_secs_f64();
    // Revisions are whole seconds: start the crawl in a later second than the last save, so
    // the incremental runs see only the edits (see the connector's "one-second problem").
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let conc = concurrency
        .map(|c| format!("max_concurrent_requests = {c}\n"))
        .unwrap_or_default();
    let connector = |url: &str| {
        build(
            &docent_dokuwiki_connector::Factory,
            &format!(
                "url = '{url}'\nusername = '{DW_USER}'\npassword = '{DW_PASS}'\n\
                 superusers = ['@admin']\n{conc}"
            ),
        )
    };
    let session = Session::start("dokuwiki", &wiki, timeout, &connector).await?;
    let crawl = session.run("crawl", None).await?;
    let idle = session
        .run("incremental, nothing changed", crawl.checkpoint.clone())
        .await?;
    if crawl.upserts < pages.len() {
        bail!(
            "the crawl sent {} pages; the wiki should hold {}",
            crawl.upserts,
            pages.len()
        );
    }

    // The idle run's pass started within the last second: edit in a later one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let t = Instant::now();
    for (n, &i) in edit_targets(pages.len(), edits).iter().enumerate() {
        admin
            .put_page(&id(&pages[i]), &edited(&pages[i].text, n), "benchmark edit")
            .await
            .map_err(|e| anyhow::anyhow!("putPage: {e}"))?;
    }
    let edit_secs = t.elapsed().as_secs_f64();

    let inc = session
        .run("incremental after the edits", idle.checkpoint.clone())
        .await?;
    Ok(Report {
        name: "DokuWiki 2022-07-31",
        pages: pages.len(),
        seed_how: "wiki.putPage, 4 concurrent",
        seed_secs,
        edit_secs,
        edits,
        crawl,
        idle,
        incremental: inc,
    })
}

fn main() -> anyhow::Result<()> {
    let n = num("--pages").unwrap_or(1000);
    let edits = num("--edits").unwrap_or(10);
    let concurrency = num("--concurrency");
    let timeout = Duration::from_secs(num("--timeout-secs").unwrap_or(1800) as u64);
    let only = arg("--only");
    let pages = load_pages(n)?;
    let total: usize = pages.iter().map(|p| p.text.len()).sum();
    eprintln!(
        "{} pages, {:.1} MB of wiki text, from {CONTENT}",
        pages.len(),
        total as f64 / 1e6
    );
    let conc = concurrency.map_or("2 (default)".to_string(), |c| c.to_string());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut failed = Vec::new();
        for which in ["mediawiki", "dokuwiki"] {
            if only.as_deref().is_some_and(|o| o != which) {
                continue;
            }
            let r = match which {
                "mediawiki" => mediawiki(&pages, edits, concurrency, timeout).await,
                _ => dokuwiki(&pages, edits, concurrency, timeout).await,
            };
            match r {
                Ok(report) => {
                    report.print(&conc);
                    let want = edit_targets(pages.len(), edits).len();
                    if report.incremental.upserts != want {
                        eprintln!(
                            "{which}: the incremental sync sent {} pages, {want} were edited: {:?}",
                            report.incremental.upserts, report.incremental.sent
                        );
                    }
                }
                Err(e) => {
                    eprintln!("{which}: {e:#}");
                    failed.push(which);
                }
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            bail!("failed: {failed:?}")
        }
    })
}
