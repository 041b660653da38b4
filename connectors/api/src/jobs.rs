//! Sync jobs: every sync of a connector (the first crawl, a scheduled reconciliation, a sync an
//! admin asked for, a batch of watched changes) is a job with an id, start and end, counts and
//! the failures with their reasons. Connectors record jobs in their [`StatusHandle`]; the admin
//! API lists them and sends [`ConnectorCommand`]s (sync now, pause, resume).
//!
//! [`StatusHandle`]: crate::StatusHandle

use serde::Serialize;

/// How many finished jobs a connector keeps (older ones are dropped).
pub const JOB_HISTORY: usize = 50;
/// How many failures a job keeps (the count is exact; the list is capped).
pub const JOB_FAILURES: usize = 100;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct JobCounts {
    /// Documents looked at.
    pub scanned: u64,
    pub added: u64,
    pub modified: u64,
    pub deleted: u64,
    pub unchanged: u64,
    pub failed: u64,
    /// Permission lookups sent to the source apart from listings and reads (NFSACL `GETACL`
    /// calls, SMB security-descriptor queries): what an unchanged source still costs.
    pub permission_reads: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "snake_case")]
pub enum JobState {
    Running,
    Succeeded,
    Failed(String),
    /// Stopped before deleting (deletion protection); nothing was deleted.
    Blocked(String),
    /// Cut short by shutdown.
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobFailure {
    pub id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobRecord {
    pub id: u64,
    /// "reconcile" (a walk of the whole source) or "watch" (a batch of watched changes).
    pub kind: &'static str,
    /// "start", "schedule", "admin", "resume", "watch".
    pub trigger: &'static str,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    pub state: JobState,
    pub counts: JobCounts,
    pub failures: Vec<JobFailure>,
}

/// What the admin API asks of a running connector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectorCommand {
    /// Reconcile now, as job `job_id` (reserved with `StatusHandle::reserve_job_id`);
    /// `force_deletions` lets this one job delete past the deletion-protection threshold.
    /// Incremental (`full: false`) skips documents whose version and ACL are unchanged; full
    /// re-reads and re-parses every document (edits that keep the version, parser upgrades).
    SyncNow {
        job_id: u64,
        force_deletions: bool,
        full: bool,
    },
    /// Stop acting on changes until resumed (scheduled syncs are skipped too).
    Pause,
    /// Act again, starting with a reconciliation that catches up on what was missed.
    Resume,
}

/// Deletion protection: whether deleting `deleting` of `indexed` documents in one sync needs an
/// admin's force (more than `max_percent` percent of them, and at least `min_docs`).
pub fn deletion_blocked(deleting: u64, indexed: u64, max_percent: u32, min_docs: u64) -> bool {
    deleting >= min_docs.max(1) && deleting * 100 > indexed * max_percent as u64
}

/// Deletion protection for a sync of `connector` that would delete `deleting` of its `indexed`
/// documents: the reason to report (job "blocked", nothing deleted) when it exceeds the
/// connector's `max_percent` (and `min_docs`), else `None`. Every connector words it this way.
pub fn deletion_protection(
    connector: &str,
    deleting: u64,
    indexed: u64,
    max_percent: u32,
    min_docs: u64,
) -> Option<String> {
    deletion_blocked(deleting, indexed, max_percent, min_docs).then(|| {
        format!(
            "deletion protection: this sync would delete {deleting} of {indexed} documents \
             ({:.0}%, more than {max_percent}%); nothing was deleted. If that is intended, run \
             `docent sync {connector} --force-deletions`",
            deleting as f64 * 100.0 / indexed.max(1) as f64,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletion_threshold() {
        assert!(!deletion_blocked(15, 100, 15, 5), "exactly 15% is allowed");
        assert!(deletion_blocked(16, 100, 15, 5));
        assert!(!deletion_blocked(2, 3, 15, 5), "below the minimum count");
        assert!(
            deletion_blocked(5, 5, 15, 5),
            "everything gone: an unmounted share"
        );
        assert!(!deletion_blocked(0, 0, 15, 5));
        assert_eq!(deletion_protection("share", 15, 100, 15, 5), None);
        let why = deletion_protection("share", 20, 100, 15, 5).unwrap();
        assert!(
            why.contains("delete 20 of 100 documents (20%, more than 15%)"),
            "{why}"
        );
        assert!(
            why.ends_with("`docent sync share --force-deletions`"),
            "{why}"
        );
    }
}
