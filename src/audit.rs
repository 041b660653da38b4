//! The audit log: one JSON line per authenticated request that reached a handler — time, caller,
//! credential, on-behalf-of user, method, the document keys returned, guardrail verdicts and the
//! outcome; the question text only when `audit.include_question` is set. Rotated by size
//! (`audit.log` → `audit.log.1` → … → `audit.log.<keep>`).
//!
//! Lines are written synchronously under a mutex and flushed, so a line is on disk (in the page
//! cache) before the response leaves; a write error is logged and counted, never returned to the
//! caller.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

use crate::guardrail::Verdict;

#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub path: PathBuf,
    pub include_question: bool,
    /// Rotate when the file would grow past this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub keep: usize,
}

/// One audited request.
#[derive(Debug, Serialize)]
pub struct AuditRecord<'a> {
    /// RFC 3339, UTC.
    pub time: String,
    pub method: &'a str,
    /// The authenticated identity (the service, for on-behalf-of requests).
    pub caller: &'a str,
    pub credential: &'a str,
    /// The user whose ACL scope the request ran under, when a service acted for them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<&'a str>,
    /// "answered", "no_answer", "blocked", "ok", or an error reason code.
    pub outcome: &'a str,
    pub documents: Vec<&'a str>,
    pub guardrails: &'a [Verdict],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub question: Option<&'a str>,
}

struct Sink {
    file: File,
    size: u64,
}

pub struct AuditLog {
    cfg: AuditConfig,
    sink: Mutex<Option<Sink>>,
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn open(path: &Path) -> std::io::Result<Sink> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let size = file.metadata()?.len();
    Ok(Sink { file, size })
}

impl AuditLog {
    /// Opens (creating) the log file; fails if it cannot be written, so a misconfigured audit
    /// path stops the daemon at start rather than losing the trail.
    pub fn open(cfg: AuditConfig) -> std::io::Result<Self> {
        let sink = open(&cfg.path)?;
        Ok(Self {
            cfg,
            sink: Mutex::new(Some(sink)),
        })
    }

    pub fn include_question(&self) -> bool {
        self.cfg.include_question
    }

    pub fn path(&self) -> &Path {
        &self.cfg.path
    }

    pub fn write(&self, rec: &AuditRecord<'_>) {
        let mut line = match serde_json::to_vec(rec) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "audit record not serialisable");
                return;
            }
        };
        line.push(b'\n');
        let mut guard = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = self.write_locked(&mut guard, &line) {
            tracing::error!(path = %self.cfg.path.display(), error = %e, "audit write failed");
            // Reopen on the next write.
            *guard = None;
        }
    }

    fn write_locked(&self, sink: &mut Option<Sink>, line: &[u8]) -> std::io::Result<()> {
        if sink
            .as_ref()
            .is_some_and(|s| s.size > 0 && s.size + line.len() as u64 > self.cfg.max_bytes)
        {
            *sink = None;
            self.rotate()?;
        }
        if sink.is_none() {
            *sink = Some(open(&self.cfg.path)?);
        }
        let s = sink.as_mut().expect("opened above");
        s.file.write_all(line)?;
        s.file.flush()?;
        s.size += line.len() as u64;
        Ok(())
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut p = self.cfg.path.clone().into_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    fn rotate(&self) -> std::io::Result<()> {
        if self.cfg.keep == 0 {
            return std::fs::remove_file(&self.cfg.path);
        }
        let _ = std::fs::remove_file(self.rotated(self.cfg.keep));
        for n in (1..self.cfg.keep).rev() {
            let from = self.rotated(n);
            if from.exists() {
                std::fs::rename(&from, self.rotated(n + 1))?;
            }
        }
        std::fs::rename(&self.cfg.path, self.rotated(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec<'a>(doc: &'a str, verdicts: &'a [Verdict]) -> AuditRecord<'a> {
        AuditRecord {
            time: now_rfc3339(),
            method: "Ask",
            caller: "slack-bridge",
            credential: "api_key:bridge",
            on_behalf_of: Some("alice"),
            outcome: "answered",
            documents: vec![doc],
            guardrails: verdicts,
            question: None,
        }
    }

    #[test]
    fn writes_json_lines_and_rotates_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit/audit.log");
        let log = AuditLog::open(AuditConfig {
            path: path.clone(),
            include_question: false,
            max_bytes: 400,
            keep: 2,
        })
        .unwrap();
        let v = [Verdict {
            stage: "pii",
            action: "redact",
            code: "PII_REDACTED",
            rule: "email".into(),
            message: String::new(),
            count: 1,
        }];
        for i in 0..12 {
            log.write(&rec(&format!("share:doc{i}.md"), &v));
        }
        let current = std::fs::read_to_string(&path).unwrap();
        let first: serde_json::Value =
            serde_json::from_str(current.lines().next().unwrap()).unwrap();
        assert_eq!(first["caller"], "slack-bridge");
        assert_eq!(first["on_behalf_of"], "alice");
        assert_eq!(first["guardrails"][0]["code"], "PII_REDACTED");
        assert!(first.get("question").is_none());
        assert!(std::fs::metadata(&path).unwrap().len() <= 400);
        assert!(log.rotated(1).exists() && log.rotated(2).exists());
        assert!(!log.rotated(3).exists());
        // The newest record is in the live file, nothing is split across files.
        assert!(current.trim_end().ends_with('}'));
        assert!(current.contains("share:doc11.md"));
    }
}
