//! The file-share connectors on the same 5,183 files: SciFact's corpus written as one text file
//! per document (title, blank line, abstract) into 26 folders, crawled by the local fs connector,
//! by the SMB connector through a real smbd (`scripts/shares/smb.sh`, loopback) and by the NFS
//! connector through a real nfs-ganesha (`scripts/shares/nfs.sh`). Only the crawl-and-read part
//! is measured (each connector's changes go to an in-memory index, no parsing or embedding: see
//! `benches/ingest.rs` for the pipeline): the first crawl (fresh index, until its checkpoint) and
//! an incremental sync with nothing changed, twice: by a new connector from that checkpoint and
//! index state (as after a restart), then by the same connector again (as its next poll); they
//! must read no file. Not a test: run it with
//!
//!     cargo bench --bench share_crawl -- [--files N] [--only fs|smb|nfs]
//!
//! Needs root (smbd accounts, ganesha); the servers are installed on first use.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use docent_connector_api::jobs::ConnectorCommand;
use docent_connector_api::registry::{ConfigEnv, ConnectorFactory};
use docent_connector_api::{
    Change, Checkpoint, Connector, DocKey, IndexedDoc, IndexedState, StatusHandle, conformance,
};

const CORPUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/data/scifact/corpus.jsonl"
);
const SMB_PASS: &str = "Passw0rd!";

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts/shares")
        .join(name)
}

fn sh(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Writes the corpus as files below `dir`; returns (files, bytes).
fn write_corpus(dir: &Path, limit: usize) -> anyhow::Result<(usize, u64)> {
    use std::io::BufRead;
    let f = std::fs::File::open(CORPUS).context(CORPUS)?;
    let (mut n, mut bytes) = (0, 0u64);
    for line in std::io::BufReader::new(f).lines().take(limit) {
        let v: serde_json::Value = serde_json::from_str(&line?)?;
        let id = v["_id"].as_str().unwrap_or_default();
        let text = format!(
            "{}\n\n{}\n",
            v["title"].as_str().unwrap_or_default(),
            v["text"].as_str().unwrap_or_default()
        );
        let folder = dir.join(format!("topic-{}", (b'a' + (n % 26) as u8) as char));
        std::fs::create_dir_all(&folder)?;
        let p = folder.join(format!("doc-{id}.txt"));
        std::fs::write(&p, &text)?;
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        bytes += text.len() as u64;
        n += 1;
    }
    Ok((n, bytes))
}

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

struct Run {
    upserts: usize,
    skipped: usize,
    bytes: u64,
    secs: f64,
    checkpoint: Checkpoint,
    /// With `again`: a second sync by the same running connector (seconds, upserts).
    again: Option<(f64, usize)>,
    /// Permission lookups sent by the first sync and by the second (`again`).
    reads: (u64, u64),
}

/// Permission lookups sent by the most recent job.
fn permission_reads(status: &StatusHandle) -> u64 {
    let jobs = status.snapshot().jobs;
    jobs.front().map_or(0, |j| j.counts.permission_reads)
}

async fn until_checkpoint(
    connector: Box<dyn Connector>,
    index: &Arc<BenchIndex>,
    checkpoint: Option<Checkpoint>,
    again: bool,
) -> anyhow::Result<Run> {
    let (ctx, h) = conformance::harness_context(index.clone(), checkpoint, 256);
    let (mut rx, cmd_tx, status, shutdown) = (h.changes, h.commands, h.status, h.shutdown);
    let start = Instant::now();
    let task = tokio::spawn(connector.run(ctx));
    let (mut upserts, mut skipped, mut bytes) = (0, 0, 0u64);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1800);
    let checkpoint = loop {
        let change = match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(c)) => c,
            Ok(None) => bail!("stopped: {:?}", status.snapshot().last_error()),
            Err(_) => bail!("no checkpoint: {:?}", status.snapshot().last_error()),
        };
        match change {
            Change::Upsert(d) => {
                upserts += 1;
                bytes += d.content.len() as u64;
                index.docs.lock().unwrap().insert(
                    d.key.clone(),
                    IndexedDoc {
                        version: d.version.clone(),
                        acl_fingerprint: d.acl.fingerprint(),
                    },
                );
            }
            Change::Skipped { key, reason } => {
                if skipped < 3 {
                    eprintln!("  skipped {key}: {reason}");
                }
                skipped += 1;
            }
            Change::Delete(k) => {
                index.docs.lock().unwrap().remove(&k);
            }
            Change::Checkpoint { checkpoint, .. } => break checkpoint,
            Change::Reconciled { .. } => {}
        }
    };
    let secs = start.elapsed().as_secs_f64();
    let first_reads = permission_reads(&status);
    let again = if again {
        let start = Instant::now();
        cmd_tx
            .send(ConnectorCommand::SyncNow {
                job_id: status.reserve_job_id(),
                force_deletions: false,
                full: false,
            })
            .await?;
        let mut upserts = 0;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Change::Checkpoint { .. })) => break,
                Ok(Some(Change::Upsert(_))) => upserts += 1,
                Ok(Some(_)) => {}
                _ => bail!("no second checkpoint: {:?}", status.snapshot().last_error()),
            }
        }
        Some((start.elapsed().as_secs_f64(), upserts))
    } else {
        None
    };
    let again_reads = if again.is_some() {
        permission_reads(&status)
    } else {
        0
    };
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    Ok(Run {
        upserts,
        skipped,
        bytes,
        secs,
        checkpoint,
        again,
        reads: (first_reads, again_reads),
    })
}

fn build(
    factory: &dyn ConnectorFactory,
    id: &str,
    text: &str,
) -> anyhow::Result<Box<dyn Connector>> {
    let env = ConfigEnv {
        id: id.into(),
        base_dir: "/".into(),
        max_document_bytes: 16 << 20,
        max_text_bytes: 16 << 20,
        parse_timeout: Duration::from_secs(60),
        parse_memory_bytes: 2 << 30,
    };
    let spec = factory
        .configure(toml::from_str(text)?, &env)
        .map_err(|e| anyhow::anyhow!("config: {e:?}"))?;
    Ok(spec.build().map_err(|e| anyhow::anyhow!(e))?.connector)
}

/// First crawl and a no-change sync of one connector; prints one row.
async fn measure(
    name: &str,
    files: usize,
    make: &dyn Fn() -> anyhow::Result<Box<dyn Connector>>,
) -> anyhow::Result<(f64, (f64, f64))> {
    let index = Arc::new(BenchIndex::default());
    // As on a share in use: the corpus was just written, and the nfs connector keeps (and
    // records) no answer about a change time under 5 s old (a second change could share it).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let first = until_checkpoint(make()?, &index, None, false).await?;
    if first.upserts + first.skipped != files {
        bail!(
            "{name}: {} sent, {} skipped of {files}",
            first.upserts,
            first.skipped
        );
    }
    let again = until_checkpoint(make()?, &index, Some(first.checkpoint.clone()), true).await?;
    let (warm_secs, warm_upserts) = again.again.unwrap_or_default();
    println!(
        "| {name} | {files} | {:.2} s | {:.0} files/s | {:.1} MB/s | {:.3} s | {:.3} s | {} | {} / {} / {} |",
        first.secs,
        first.upserts as f64 / first.secs,
        first.bytes as f64 / first.secs / 1e6,
        again.secs,
        warm_secs,
        again.upserts + warm_upserts,
        first.reads.0,
        again.reads.0,
        again.reads.1,
    );
    Ok((first.secs, (again.secs, warm_secs)))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let limit: usize = arg("--files")
        .and_then(|s| s.parse().ok())
        .unwrap_or(usize::MAX);
    let only = arg("--only");
    let want = |n: &str| only.as_deref().is_none_or(|o| o == n);
    let tmp = tempfile::tempdir()?;
    println!(
        "| connector | files | first crawl | files/s | read MB/s | no-change sync (restarted) | no-change sync (same process) | files re-sent | permission reads (first / restarted / same) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut rows = BTreeMap::new();

    if want("fs") {
        let dir = tmp.path().join("local");
        let (files, _) = write_corpus(&dir, limit)?;
        let text = format!(
            "roots = [{:?}]\nwatch = false\nreconcile_interval_secs = 86400\n",
            dir.display()
        );
        let f = docent_fs_connector::Factory;
        rows.insert(
            "fs",
            measure("fs (local)", files, &|| build(&f, "fs", &text)).await?,
        );
    }

    if want("smb") {
        sh(Command::new("bash").arg(script("smb.sh")).arg("install"))?;
        let dir = tmp.path().join("smb");
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        sh(Command::new("bash")
            .arg(script("smb.sh"))
            .arg("start")
            .arg(&dir)
            .arg(port.to_string())
            .env("SMB_WATCH_PID", std::process::id().to_string()))?;
        let r = async {
            let (files, _) = write_corpus(&dir.join("share"), limit)?;
            let text = format!(
                "server = \"127.0.0.1\"\nport = {port}\nshare = \"docs\"\nusername = \"crawler\"\n\
                 password = {SMB_PASS:?}\nreconcile_interval_secs = 86400\nwatch = false\n"
            );
            let f = docent_smb_connector::Factory;
            measure("smb (smbd, loopback)", files, &|| build(&f, "smb", &text)).await
        }
        .await;
        let _ = Command::new("bash")
            .arg(script("smb.sh"))
            .arg("stop")
            .arg(&dir)
            .output();
        rows.insert("smb", r?);
    }

    if want("nfs") {
        sh(Command::new("bash").arg(script("nfs.sh")).arg("install"))?;
        let dir = tmp.path().join("nfs");
        std::fs::create_dir_all(&dir)?;
        sh(Command::new("bash")
            .arg(script("nfs.sh"))
            .arg("start")
            .arg(&dir))?;
        let r = async {
            let export = dir.join("export");
            let (files, _) = write_corpus(&export, limit)?;
            let text = format!(
                "server = \"127.0.0.1\"\nexport = {:?}\nreconcile_interval_secs = 86400\n",
                export.display()
            );
            let f = docent_nfs_connector::Factory;
            measure("nfs (ganesha, loopback)", files, &|| {
                build(&f, "nfs", &text)
            })
            .await
        }
        .await;
        let _ = Command::new("bash")
            .arg(script("nfs.sh"))
            .arg("stop")
            .arg(&dir)
            .output();
        rows.insert("nfs", r?);
    }

    if let Some((_, (fs_again, fs_warm))) = rows.get("fs") {
        for (name, (_, (again, warm))) in &rows {
            if *name != "fs" {
                println!(
                    "{name}: no-change sync {:.1}x the local connector's after a restart, {:.1}x \
                     in the same process (target: within 2x)",
                    again / fs_again,
                    warm / fs_warm
                );
            }
        }
    }
    Ok(())
}
