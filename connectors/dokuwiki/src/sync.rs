//! One sync pass against the wiki: an incremental poll of recent changes, or a full
//! reconciliation of the page list. The run loop in `lib.rs` decides when; a pass decides how
//! much (a poll becomes a reconciliation when the ACL rules changed or one is due).
//!
//! # Versions and the one-second problem
//!
//! DokuWiki revisions are whole seconds, and two edits within one second share one. A page's
//! version is therefore `rev:<ts>:<hash of its HTML>`, and a page is left unread only when its
//! revision and ACL are what was sent *and* the revision is older than the previous pass's start
//! ([`Cursor::since`]): a page read during second `ts` may have been edited again within `ts`,
//! which the change log lists again (it is searched from `since` inclusive), so it is read again
//! and its hash decides. Invariant after a pass that started at server time `S`: every page
//! whose revision is older than `S` was read after its last edit.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use docent_connector_api::jobs::{
    JOB_FAILURES, JobFailure, JobRecord, JobState, deletion_protection,
};
use docent_connector_api::{
    Acl, Alarm, Change, DocKey, IndexedDoc, IndexedState, SentLog, SourceDocument, StatusHandle,
};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::acl::{AclRules, PageAcl, Superusers, Who};

/// The login a configured superuser group is asked about with (`wiki.aclCheck` for a made-up
/// member of the group).
const SUPERUSER_PROBE: &str = "docent-superuser-probe";
use crate::client::{CallError, Client};
use crate::config::{DokuWikiConfig, LossyAcl};
use crate::page;

/// Bumped when the checkpoint's meaning changes; an unknown version starts over with a full
/// reconciliation.
const CURSOR_VERSION: u32 = 1;

/// The resume position, committed with the changes before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Cursor {
    pub v: u32,
    /// Server time (Unix seconds) when the last completed pass started: changes at or after it
    /// are not covered yet.
    pub since: i64,
    /// Server time when the last completed full reconciliation started.
    pub last_full: i64,
    /// Fingerprint of the ACL rules (and the ACL settings) the indexed ACLs were computed from.
    pub acl: String,
    /// Local Unix milliseconds when the last full reconciliation finished (the key every
    /// crawling connector's checkpoint carries, see `ConnectorState::last_full_scan_ms`).
    #[serde(default)]
    pub last_full_scan_ms: i64,
    /// How many rules `plugin.acl.listAcls` listed when `acl` was computed, to tell a wiki
    /// whose rules suddenly vanished from one that never had any. `None` in checkpoints
    /// written before it was kept.
    #[serde(default)]
    pub acl_rules: Option<u64>,
    /// The [`CONTENT_RULES`] the indexed pages were read under (0 before it was kept).
    #[serde(default)]
    pub content_rules: u32,
}

/// The version of the rules deciding which page content may be indexed (see
/// [`includes_other_pages`]). When it grows, the next pass reads every page again: a page
/// indexed before a rule was added (session 30: text shown by who reads it) would otherwise
/// stay until edited. 2: the isauth plugin's syntaxes (session 39). 3: directives with
/// arguments in any case (`~~GROUPMGR|…~~`, `~~groupmanager|…~~`) and `<php>` (session 41).
pub(crate) const CONTENT_RULES: u32 = 3;

impl Cursor {
    pub fn from_checkpoint(v: &serde_json::Value) -> Option<Self> {
        serde_json::from_value::<Self>(v.clone())
            .ok()
            .filter(|c| c.v == CURSOR_VERSION)
    }

    /// Whether the wiki listed any ACL rules when `acl` was computed. `no_rules`: what
    /// [`Syncer::acl_fingerprint`] gives for no rules under the current settings, which decides
    /// for a checkpoint without a count (a settings change reads as "had rules": the side that
    /// holds back).
    fn had_acl_rules(&self, no_rules: &str) -> bool {
        match self.acl_rules {
            Some(n) => n > 0,
            None => self.acl != no_rules,
        }
    }

    pub fn to_checkpoint(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a plain struct serialises")
    }
}

/// What the run loop asks of a pass.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    /// The job's trigger: "start", "watch", "admin", "resume".
    pub trigger: &'static str,
    /// Reconcile the whole page list even if no reconciliation is due.
    pub full: bool,
    pub force_deletions: bool,
    /// Read and re-parse every page, changed or not.
    pub reparse: bool,
    /// A job id reserved by the admin API.
    pub job_id: Option<u64>,
}

impl Request {
    pub fn scheduled(trigger: &'static str) -> Self {
        Self {
            trigger,
            full: false,
            force_deletions: false,
            reparse: false,
            job_id: None,
        }
    }
}

/// A completed pass.
#[derive(Debug)]
pub(crate) struct Passed {
    pub cursor: Cursor,
    pub full: bool,
    /// Whether any change was sent (so a checkpoint is worth committing).
    pub sent: bool,
    /// Deletion protection held deletions back (the reason).
    pub blocked: Option<String>,
}

#[derive(Debug)]
pub(crate) enum PassError {
    Cancelled,
    SinkClosed,
    /// The wiki failed the pass; nothing after the failure was acted on.
    Wiki(String),
}

/// Why one page's sync stopped: the pass's own trouble, or a call about this page that failed
/// (decided by [`Syncer::page_failed`]: this page's trouble or the wiki's).
enum PageError {
    Pass(PassError),
    Call(CallError),
}

impl From<PassError> for PageError {
    fn from(e: PassError) -> Self {
        Self::Pass(e)
    }
}

impl From<CallError> for PageError {
    fn from(e: CallError) -> Self {
        Self::Call(e)
    }
}

impl From<CallError> for PassError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Cancelled => Self::Cancelled,
            e => Self::Wiki(e.to_string()),
        }
    }
}

/// Talks to the wiki and the pipeline; shared by every pass of one run.
pub(crate) struct Syncer {
    pub cfg: Arc<DokuWikiConfig>,
    pub client: Client,
    pub sink: mpsc::Sender<Change>,
    pub status: StatusHandle,
    pub shutdown: CancellationToken,
    /// What was last sent per page, until the index shows it ([`SentLog`]): a delete that
    /// follows an unapplied upsert must still be sent, and "unchanged" means unchanged from
    /// what was sent.
    sent: SentLog,
    /// Whether `wiki.aclCheck` takes the groups it is given (see [`groups_reach_acl_check`]);
    /// asked once.
    groups_checked: tokio::sync::OnceCell<bool>,
}

/// Whether a DokuWiki release named `version` passes the groups given to `wiki.aclCheck` on to
/// its check. From 2024-02-06 "Kaos" the old API's `wiki.aclCheck` turns the group list into
/// the string "Array", and the check sees no groups. A release Docent cannot date counts as
/// one that does not.
fn groups_reach_acl_check(version: &str) -> bool {
    version
        .split(|c: char| !(c.is_ascii_digit() || c == '-'))
        .find(|w| w.len() == 10 && w.as_bytes()[4] == b'-' && w.as_bytes()[7] == b'-')
        .is_some_and(|date| date < "2024-02-06")
}

/// How a configured superuser is confirmed.
#[derive(Debug, PartialEq)]
enum Check<'a> {
    /// Asked with `wiki.aclCheck` as this user in these groups.
    Ask(&'a str, Vec<&'a str>),
    /// Taken as configured.
    Keep,
    /// Left out, for this reason.
    Refuse(String),
}

/// How `who` is confirmed: by asking the wiki, except a group on a release that cannot check
/// one (`groups_checked` false), which is trusted only with `trust_superuser_groups` (a review:
/// such groups were trusted always, and one copied from an example read every page).
fn superuser_check(who: &Who, groups_checked: bool, trust_groups: bool) -> Check<'_> {
    match who {
        Who::User(u) => Check::Ask(u, vec![]),
        Who::Group(_) if !groups_checked && trust_groups => Check::Keep,
        Who::Group(_) if !groups_checked => Check::Refuse(format!(
            "{who} (this release cannot check a group: set trust_superuser_groups if it is the \
             wiki's superuser group)"
        )),
        Who::Group(g) => Check::Ask(SUPERUSER_PROBE, vec![g.as_str()]),
        Who::All => Check::Ask(SUPERUSER_PROBE, vec![]),
    }
}

/// A pass's job. A reconciliation is recorded from its start; a poll only once it sends
/// something (or fails), so polls that find nothing to do leave no trace in the job history.
struct Job<'a> {
    status: &'a StatusHandle,
    reserved: Option<u64>,
    label: Mutex<(&'static str, &'static str)>,
    id: OnceLock<u64>,
    /// Counts gathered before the job is recorded; the lock also orders recording against
    /// updates, so none is lost.
    pending: Mutex<JobRecord>,
}

impl<'a> Job<'a> {
    fn new(status: &'a StatusHandle, req: &Request) -> Self {
        let kind = if req.full { "reconcile" } else { "watch" };
        Self {
            status,
            reserved: req.job_id,
            label: Mutex::new((kind, req.trigger)),
            id: OnceLock::new(),
            pending: Mutex::new(JobRecord {
                id: 0,
                kind,
                trigger: req.trigger,
                started_ms: unix_millis(),
                ended_ms: None,
                state: JobState::Running,
                counts: Default::default(),
                failures: Vec::new(),
            }),
        }
    }

    fn relabel(&self, kind: &'static str, trigger: &'static str) {
        *self.label.lock().unwrap_or_else(|e| e.into_inner()) = (kind, trigger);
    }

    /// Records the job (once) and returns its id.
    fn id(&self) -> u64 {
        if let Some(id) = self.id.get() {
            return *id;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = self.id.get() {
            return *id;
        }
        let (kind, trigger) = *self.label.lock().unwrap_or_else(|e| e.into_inner());
        let id = self
            .status
            .start_job(self.reserved, kind, trigger, pending.started_ms);
        let counts = pending.counts;
        let failures = std::mem::take(&mut pending.failures);
        self.status.update_job(id, |j| {
            j.counts = counts;
            j.failures = failures;
        });
        let _ = self.id.set(id);
        id
    }

    fn update(&self, f: impl FnOnce(&mut JobRecord)) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match self.id.get() {
            Some(id) => {
                drop(pending);
                self.status.update_job(*id, f);
            }
            None => f(&mut pending),
        }
    }

    fn failure(&self, page: &str, reason: &str) {
        self.update(|j| {
            j.counts.failed += 1;
            if j.failures.len() < JOB_FAILURES {
                j.failures.push(JobFailure {
                    id: page.to_string(),
                    reason: reason.to_string(),
                });
            }
        });
    }

    /// Ends the job; `always`: record it even if it was not recorded yet (a reconciliation, a
    /// failure, an admin's job).
    fn finish(&self, state: JobState, always: bool) {
        if always || self.id.get().is_some() {
            self.status.finish_job(self.id(), state, unix_millis());
        }
    }
}

/// What every page of one pass shares.
struct PassCtx<'a> {
    rules: &'a AclRules,
    /// The configured superusers the wiki confirms ([`Syncer::confirmed_superusers`]).
    superusers: &'a Superusers,
    /// Revisions older than this were read after their last edit (see the module doc).
    settled_before: i64,
    reparse: bool,
    job: &'a Job<'a>,
    sent_any: std::sync::atomic::AtomicBool,
}

impl Syncer {
    pub fn new(
        cfg: Arc<DokuWikiConfig>,
        client: Client,
        sink: mpsc::Sender<Change>,
        indexed: Arc<dyn IndexedState>,
        status: StatusHandle,
        shutdown: CancellationToken,
    ) -> Self {
        let sent = SentLog::new(cfg.id.clone(), indexed);
        Self {
            cfg,
            client,
            sink,
            status,
            shutdown,
            sent,
            groups_checked: tokio::sync::OnceCell::new(),
        }
    }

    /// Runs one pass and records it as a job.
    pub async fn pass(&self, req: &Request, prev: Option<&Cursor>) -> Result<Passed, PassError> {
        let job = Job::new(&self.status, req);
        let result = self.pass_inner(req, prev, &job).await;
        match &result {
            Ok(p) => {
                let state = match &p.blocked {
                    Some(why) => JobState::Blocked(why.clone()),
                    None => JobState::Succeeded,
                };
                job.finish(state, p.full || req.job_id.is_some());
            }
            Err(PassError::Cancelled) => job.finish(JobState::Cancelled, false),
            Err(PassError::SinkClosed) => {
                job.finish(JobState::Failed("the pipeline is gone".into()), false)
            }
            Err(PassError::Wiki(e)) => job.finish(JobState::Failed(e.clone()), true),
        }
        result
    }

    /// The rules as `acl.auth.php` has them for every reader, from what `plugin.acl.listAcls`
    /// showed the crawler (see `acl`'s module doc): placeholders expanded for the crawler read
    /// as placeholders again, and a grant whose name DokuWiki may not match as written kept
    /// only where `wiki.aclCheck` shows that it takes effect, elsewhere read as a refusal.
    async fn as_the_file_reads(
        &self,
        rules: AclRules,
        superusers: &Superusers,
    ) -> Result<AclRules, PassError> {
        // The crawler's groups, as far as Docent can know them: the superuser groups (the
        // crawler is a superuser). Its other groups are not known (the README asks for a
        // crawler in no other group): a rule filled in for one of them reads as written.
        let crawler_groups: Vec<&str> = self
            .cfg
            .superusers
            .0
            .iter()
            .filter_map(|w| match w {
                Who::Group(g) => Some(g.as_str()),
                _ => None,
            })
            .collect();
        let mut rules = rules.unexpand(&self.cfg.username, &crawler_groups);
        // A release whose `wiki.aclCheck` drops the groups it is given answers a group check
        // for the crawler: a group's grant cannot be confirmed there (set by
        // `confirmed_superusers`, which runs first).
        let groups_checked = self.groups_checked.get().copied().unwrap_or(false);
        let mut unconfirmable = Vec::new();
        let probes: Vec<(String, Who)> = rules
            .ambiguous_grants()
            .into_iter()
            // Grants of confirmed superusers need no check: they read everything anyway.
            .filter(|(_, who)| match who {
                Who::User(u) => !superusers.contains(u, &[]),
                Who::Group(g) => !superusers.contains("", &[g.as_str()]),
                Who::All => false,
            })
            .filter(|(scope, who)| {
                let askable = groups_checked || !matches!(who, Who::Group(_));
                if !askable {
                    unconfirmable.push((scope.clone(), who.clone()));
                }
                askable
            })
            .collect();
        for (scope, who) in unconfirmable {
            tracing::info!(
                connector = %self.cfg.id,
                rule = %docent_connector_api::log_safe(&format!("{scope} {who}")),
                "ACL grant read as a refusal: this DokuWiki release cannot confirm a group's \
                 grant whose name it may not match as written"
            );
            rules = rules.refusing(&scope, &who);
        }
        // Asked `max_concurrent_requests` at a time.
        let asked: Vec<(String, Who, i64)> = futures::stream::iter(probes)
            .map(|(scope, who)| async move {
                let (user, groups) = match &who {
                    Who::User(u) => (u.as_str(), vec![]),
                    Who::Group(g) => ("", vec![g.as_str()]),
                    Who::All => ("", vec![]),
                };
                let probe = AclRules::probe_page(&scope);
                let level = self.client.acl_check(&probe, user, &groups).await?;
                Ok::<_, CallError>((scope, who, level))
            })
            .buffer_unordered(self.cfg.max_concurrent_requests.max(1))
            .try_collect()
            .await?;
        for (scope, who, level) in asked {
            if !rules.confirmed_by(&scope, &who, level) {
                tracing::info!(
                    connector = %self.cfg.id,
                    rule = %docent_connector_api::log_safe(&format!("{scope} {who}")),
                    "ACL grant read as a refusal: DokuWiki does not show it taking effect (a name \
                     with `.`, `-`, `_` or other punctuation must be URL-encoded in acl.auth.php)"
                );
                // Not left out: the API shows one line per decoded name, and the one it hides
                // (`john%2edoe 0` before `john.doe 1`) may refuse; level 0 only narrows.
                rules = rules.refusing(&scope, &who);
            }
        }
        Ok(rules)
    }

    async fn pass_inner(
        &self,
        req: &Request,
        prev: Option<&Cursor>,
        job: &Job<'_>,
    ) -> Result<Passed, PassError> {
        // The wiki's clock, before anything is read: the next pass looks at changes from here.
        let now = self.client.server_time().await?;
        // Rules are re-read every pass: an ACL change reaches the index within one pass.
        let mut rules = self.client.acl_rules().await?;
        let listed_rules = rules.len() as u64;
        // DokuWiki reads an unreadable or emptied `acl.auth.php` as no rules, which would
        // withdraw every page (nobody but superusers may read): held back like a listing of no
        // pages, until the rules are back or an admin forces it. The checkpoint stays where it
        // was but for its ACL fingerprint, cleared so that the pass after the hold reconciles
        // (which clears the alarm).
        if rules.is_empty()
            && !req.force_deletions
            && let Some(last) = prev
            && last.had_acl_rules(&self.acl_fingerprint(&AclRules::default(), &self.cfg.superusers))
        {
            let before = match last.acl_rules {
                Some(n) => n.to_string(),
                None => "some".to_string(),
            };
            let why = format!(
                "deletion protection: the wiki lists no ACL rules (it listed {before}), which \
                 would withdraw every indexed page (is conf/acl.auth.php readable?); nothing was \
                 withdrawn or deleted. If that is intended, run `docent sync {} \
                 --force-deletions`",
                self.cfg.id
            );
            tracing::warn!(
                connector = %self.cfg.id,
                "the wiki lists no ACL rules; every page held back"
            );
            // Recorded as a job (a quiet poll is not): it ends blocked, for the admin to see.
            job.id();
            return Ok(Passed {
                cursor: Cursor {
                    acl: String::new(),
                    ..last.clone()
                },
                full: false,
                sent: false,
                blocked: Some(why),
            });
        }
        if self.cfg.mapping.fold_case {
            rules = rules.fold_case();
        }
        let superusers = self.confirmed_superusers().await?;
        let rules = self.as_the_file_reads(rules, &superusers).await?;
        let acl_fp = self.acl_fingerprint(&rules, &superusers);

        let secs = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let acl_changed = prev.is_some_and(|c| c.acl != acl_fp);
        let due = prev.is_none_or(|c| {
            now.saturating_sub(c.last_full) >= secs(self.cfg.full_reconcile_interval)
                || now.saturating_sub(c.since) >= secs(self.cfg.recent_changes_retention)
        });
        // What was sent may have been lost in a rollback of the pipeline: polls would not come
        // back to it.
        let due = due || self.sent.rolled_back_since_reconciled();
        let rollbacks = self.sent.rollbacks();
        let new_content_rules = prev.is_some_and(|c| c.content_rules < CONTENT_RULES);
        if new_content_rules {
            tracing::info!(connector = %self.cfg.id, "the rules for what page content may be indexed changed: every page is read again");
        }
        let full = req.full || acl_changed || due || new_content_rules;
        let trigger = match req.trigger {
            "watch" if due && !acl_changed => "schedule",
            t => t,
        };
        job.relabel(if full { "reconcile" } else { "watch" }, trigger);
        if acl_changed {
            tracing::info!(connector = %self.cfg.id, "ACL rules changed: reconciling every page's ACL");
        }

        let ctx = PassCtx {
            rules: &rules,
            superusers: &superusers,
            settled_before: prev.map_or(i64::MIN, |c| c.since),
            reparse: req.reparse || new_content_rules,
            job,
            sent_any: Default::default(),
        };
        let blocked = if full {
            self.status.set_phase("crawling");
            job.id();
            self.reconcile(&ctx, req.force_deletions).await?
        } else {
            let since = prev.map_or(now, |c| c.since);
            self.poll(&ctx, since).await?;
            None
        };
        let done_ms = unix_millis();
        if full {
            self.status.full_scan_done(done_ms);
            self.notify(self.sent.reconciled(rollbacks)).await?;
        }
        Ok(Passed {
            cursor: Cursor {
                v: CURSOR_VERSION,
                since: now,
                last_full: match (full, prev) {
                    (true, _) | (false, None) => now,
                    (false, Some(c)) => c.last_full,
                },
                acl: acl_fp,
                last_full_scan_ms: match (full, prev) {
                    (true, _) => done_ms,
                    (false, Some(c)) => c.last_full_scan_ms,
                    (false, None) => 0,
                },
                acl_rules: Some(listed_rules),
                content_rules: CONTENT_RULES,
            },
            full,
            sent: ctx.sent_any.load(std::sync::atomic::Ordering::Relaxed),
            blocked,
        })
    }

    /// The rules plus every setting that shapes ACLs (the superusers as confirmed): a change
    /// of either re-evaluates all pages.
    fn acl_fingerprint(&self, rules: &AclRules, superusers: &Superusers) -> String {
        let c = &self.cfg;
        let mut h = Sha256::new();
        h.update(rules.fingerprint().as_bytes());
        h.update(format!("{:?}{:?}{:?}", superusers, c.mapping, c.lossy_acl).as_bytes());
        // The namespaces decide which pages are served at all: narrowed, the next pass
        // reconciles and withdraws what left them, not the scheduled one (a review). Hashed
        // only when set, so that an upgrade keeps the fingerprints of wikis crawled whole.
        if !c.namespaces.is_empty() {
            h.update(format!("namespaces{:?}", c.namespaces).as_bytes());
        }
        hex::encode(&h.finalize()[..16])
    }

    /// The configured superusers that the wiki treats as superusers (`wiki.aclCheck` gives
    /// 255; a group is asked for a made-up member of it). Every page is given to them, so one
    /// the wiki does not confirm (a group copied from an example, a login since demoted) would
    /// read in Docent what it may not in the wiki: it is left out, with the `Unmapped` alarm.
    async fn confirmed_superusers(&self) -> Result<Superusers, PassError> {
        let groups_checked = *self
            .groups_checked
            .get_or_try_init(|| async {
                let version = self.client.version().await?;
                let checked = groups_reach_acl_check(&version);
                if !checked {
                    tracing::info!(
                        connector = %self.cfg.id,
                        version = %docent_connector_api::log_safe(&version),
                        trusted = self.cfg.trust_superuser_groups,
                        "this DokuWiki release's wiki.aclCheck ignores groups: superuser groups \
                         cannot be checked"
                    );
                }
                Ok::<_, CallError>(checked)
            })
            .await?;
        let probe = AclRules::probe_page("*");
        let mut kept = Vec::new();
        let mut refused = Vec::new();
        for who in &self.cfg.superusers.0 {
            let (user, groups) =
                match superuser_check(who, groups_checked, self.cfg.trust_superuser_groups) {
                    Check::Ask(user, groups) => (user, groups),
                    Check::Keep => {
                        kept.push(who.clone());
                        continue;
                    }
                    Check::Refuse(why) => {
                        refused.push(why);
                        continue;
                    }
                };
            let level = self.client.acl_check(&probe, user, &groups).await?;
            if level >= crate::acl::AUTH_ADMIN {
                kept.push(who.clone());
            } else {
                refused.push(format!("{who} (level {level})"));
            }
        }
        if refused.is_empty() {
            self.status.clear(Alarm::Unmapped);
        } else {
            let why = format!(
                "superusers the wiki does not treat as superusers are left out: {}; fix \
                 `superusers` to match the wiki's $conf['superuser']",
                refused.join(", ")
            );
            tracing::warn!(connector = %self.cfg.id, "{}", docent_connector_api::log_safe(&why));
            self.status.raise(Alarm::Unmapped, why);
        }
        Ok(Superusers(kept))
    }

    /// Acts on every page the change log lists from `since` on.
    async fn poll(&self, ctx: &PassCtx<'_>, since: i64) -> Result<(), PassError> {
        let changes = self.client.recent_changes(since).await?;
        let ids: BTreeSet<String> = changes
            .into_iter()
            .map(|c| c.id)
            .filter(|id| self.cfg.in_scope(id))
            .collect();
        if !ids.is_empty() {
            tracing::debug!(connector = %self.cfg.id, pages = ids.len(), since, "recent changes");
        }
        self.for_each(ids.into_iter().collect(), |id| {
            self.sync_page(ctx, id, None)
        })
        .await
    }

    /// Lists every page, upserts what changed, deletes what is gone (deletion protection
    /// permitting). Returns why deletions were held back, if they were.
    async fn reconcile(
        &self,
        ctx: &PassCtx<'_>,
        force_deletions: bool,
    ) -> Result<Option<String>, PassError> {
        // A listing that fails fails the pass: nothing is deleted on an outage.
        let mut listed: BTreeMap<String, i64> = BTreeMap::new();
        let namespaces: Vec<&str> = if self.cfg.namespaces.is_empty() {
            vec![""]
        } else {
            self.cfg.namespaces.iter().map(String::as_str).collect()
        };
        // Namespaces that listed nothing: DokuWiki lists a folder it cannot open (an unmounted
        // share under `data/pages`) as empty, and its pages would all be confirmed gone.
        let mut empty = Vec::new();
        for ns in namespaces {
            let pages = self.client.page_list(ns).await?;
            if pages.is_empty() && !ns.is_empty() {
                empty.push(ns);
            }
            for p in pages {
                if self.cfg.in_scope(&p.id) {
                    listed.insert(p.id, p.rev);
                }
            }
        }
        let pages: Vec<(String, i64)> = listed.iter().map(|(id, rev)| (id.clone(), *rev)).collect();
        self.for_each(pages, |(id, rev)| self.sync_page(ctx, id, Some(rev)))
            .await?;
        if self.shutdown.is_cancelled() {
            return Err(PassError::Cancelled);
        }

        // What the index holds once everything sent is applied: the base of the percentage.
        let known = self.known_ids();
        let gone: Vec<String> = known
            .iter()
            .filter(|id| !listed.contains_key(*id))
            .cloned()
            .collect();
        // Pages outside the configured namespaces (a namespace taken out of the config,
        // often because it held what should not be searched) are withdrawn whatever deletion
        // protection says: nothing about them is in doubt.
        let (withdrawn, gone): (Vec<String>, Vec<String>) =
            gone.into_iter().partition(|id| !self.cfg.in_scope(id));
        self.for_each(withdrawn, |id| async move {
            self.gone(ctx, &DocKey::new(&self.cfg.id, id)).await
        })
        .await?;
        let known = self.known_ids();
        let (n, total) = (gone.len() as u64, known.len() as u64);
        let mut emptied: Vec<&str> = empty
            .iter()
            .copied()
            .filter(|ns| {
                gone.iter().any(|id| {
                    id.strip_prefix(*ns)
                        .is_some_and(|rest| rest.starts_with(':'))
                })
            })
            .collect();
        // Any namespace, at any depth, that lists no page while at least
        // `deletion_protection_min_docs` of its indexed pages would go: a sub-folder the wiki
        // cannot read (an unmounted share under `data/pages`) lists as nothing in a crawl of
        // the whole wiki too (a second review). A namespace of fewer pages emptied by their
        // deletion is ordinary and goes.
        let listed_ns: BTreeSet<&str> = listed.keys().flat_map(|id| namespaces_of(id)).collect();
        let mut vanished: BTreeMap<&str, u64> = BTreeMap::new();
        for id in &gone {
            if let Some(top) = namespaces_of(id).find(|ns| !listed_ns.contains(ns)) {
                *vanished.entry(top).or_default() += 1;
            }
        }
        for (ns, pages) in vanished {
            if pages >= self.cfg.deletion_protection_min_docs.max(2) && !emptied.contains(&ns) {
                emptied.push(ns);
            }
        }
        if n > 0 && !force_deletions {
            let why = if listed.is_empty() {
                Some(format!(
                    "deletion protection: the wiki listed no pages, which would delete all {n} \
                     indexed pages; nothing was deleted. If that is intended, run `docent sync {} \
                     --force-deletions`",
                    self.cfg.id
                ))
            } else if let Some(why) = deletion_protection(
                &self.cfg.id,
                n,
                total,
                self.cfg.deletion_protection_percent,
                self.cfg.deletion_protection_min_docs,
            ) {
                Some(why)
            } else if !emptied.is_empty() {
                Some(format!(
                    "deletion protection: the namespace(s) {} listed no pages while pages of \
                     them are indexed (a folder the wiki cannot read lists as empty); nothing was \
                     deleted. If that is intended, run `docent sync {} --force-deletions`",
                    emptied.join(", "),
                    self.cfg.id
                ))
            } else {
                None
            };
            if let Some(why) = why {
                tracing::warn!(connector = %self.cfg.id, deleting = n, indexed = total, "deletion protection held deletions back");
                return Ok(Some(why));
            }
        }
        // Each deletion is confirmed with the page itself: a page the listing missed is synced,
        // one outside the configured namespaces is deleted.
        self.for_each(gone, |id| async move {
            match self.client.page_info(&id).await {
                Ok(Some(info)) if self.cfg.in_scope(&id) => {
                    self.sync_page(ctx, id, Some(info.rev)).await
                }
                Ok(_) => self.gone(ctx, &DocKey::new(&self.cfg.id, id)).await,
                // Not confirmed: kept while its ACL stands, else withdrawn, as any page the
                // wiki fails on (a second review: it was kept under a narrowed ACL); asked
                // again at the next reconciliation. The pass goes on to the other pages when
                // the wiki still answers.
                Err(e) => {
                    self.page_failed(ctx, DocKey::new(&self.cfg.id, id.as_str()), e)
                        .await
                }
            }
        })
        .await?;
        Ok(None)
    }

    /// Runs `f` over `items`, `max_concurrent_requests` at a time; the first error stops it.
    async fn for_each<T, F, Fut>(&self, items: Vec<T>, f: F) -> Result<(), PassError>
    where
        F: Fn(T) -> Fut,
        Fut: Future<Output = Result<(), PassError>>,
    {
        futures::stream::iter(items.into_iter().map(Ok))
            .try_for_each_concurrent(self.cfg.max_concurrent_requests, |item| {
                let fut = f(item);
                async move {
                    if self.shutdown.is_cancelled() {
                        return Err(PassError::Cancelled);
                    }
                    fut.await
                }
            })
            .await
    }

    /// Brings one page up to date: upsert when its content or ACL changed, delete when it is
    /// gone, skip when it cannot be indexed. `listed_rev`: its revision from a listing, if any.
    /// A call about the page that fails while the wiki answers others is this page's trouble
    /// ([`Self::page_failed`]), not the pass's: whichever call it was (its info, its text, its
    /// rendering), the pass goes on to the pages after it (a review: only a failed rendering
    /// was, so a page whose text the wiki could not give stopped every pass at it, and later
    /// pages never got a narrowed ACL).
    async fn sync_page(
        &self,
        ctx: &PassCtx<'_>,
        id: String,
        listed_rev: Option<i64>,
    ) -> Result<(), PassError> {
        let key = DocKey::new(&self.cfg.id, id.as_str());
        match self.sync_page_calls(ctx, id, listed_rev).await {
            Ok(()) => Ok(()),
            Err(PageError::Pass(e)) => Err(e),
            Err(PageError::Call(e)) => self.page_failed(ctx, key, e).await,
        }
    }

    /// [`Self::sync_page`]'s work, a failed call about the page returned as such.
    async fn sync_page_calls(
        &self,
        ctx: &PassCtx<'_>,
        id: String,
        listed_rev: Option<i64>,
    ) -> Result<(), PageError> {
        let key = DocKey::new(&self.cfg.id, id.as_str());
        let prev = self.last_known(&key);
        ctx.job.update(|j| j.counts.scanned += 1);
        let (acl, narrowed) = match self.page_acl(ctx.rules, ctx.superusers, &id) {
            Ok(a) => a,
            Err(reason) => return Ok(self.skip(ctx, key, reason).await?),
        };
        let acl_fp = acl.fingerprint();

        // Unchanged without reading: same revision, same ACL, and settled (module doc).
        let mut info_rev = None;
        let rev = match listed_rev {
            Some(r) => r,
            None => match self.client.page_info(&id).await? {
                Some(info) => *info_rev.insert(info.rev),
                None => return Ok(self.gone(ctx, &key).await?),
            },
        };
        if !ctx.reparse
            && let Some(p) = &prev
            && p.acl_fingerprint == acl_fp
            && page::version_rev(&p.version) == Some(rev)
            && rev < ctx.settled_before
        {
            ctx.job.update(|j| j.counts.unchanged += 1);
            return Ok(());
        }

        // The revision is read before the content: a version may pair an older revision with
        // newer content (that edit's own revision lists the page again), but never a revision
        // with older content, which a later pass would take for settled and never read again.
        let rev = match info_rev {
            Some(r) => r,
            None => match self.client.page_info(&id).await? {
                Some(info) => info.rev,
                None => return Ok(self.gone(ctx, &key).await?),
            },
        };
        // Plugins that include or list other pages render them with the crawler's rights, not
        // the reader's: such a page's text cannot be tied to one ACL. The text is checked
        // before and after the page is rendered, so an edit between the two that adds such
        // syntax is seen.
        if let Some(reason) = self.includes_check(&id).await? {
            return Ok(self.skip(ctx, key, reason).await?);
        }
        let mut html = match self.client.page_html(&id).await {
            Ok(h) => h,
            Err(e) if e.is_page_refusal() => {
                let reason = format!("the wiki cannot render it: {e}");
                return Ok(self.skip(ctx, key, reason).await?);
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(reason) = self.includes_check(&id).await? {
            return Ok(self.skip(ctx, key, reason).await?);
        }
        if html.trim().is_empty() {
            // DokuWiki writes its render cache in place: a wiki stopped mid-write keeps an empty
            // cache file it then serves as the page until the page changes. The revision
            // rendered from the attic bypasses that cache.
            match self.client.page_html_version(&id, rev).await {
                Ok(h) => html = h,
                Err(e) if e.is_page_refusal() => {}
                Err(e) => return Err(e.into()),
            }
        }
        if html.trim().is_empty() {
            // DokuWiki renders a missing page as nothing, and deletes pages emptied by an edit.
            let done = match self.client.page_info(&id).await? {
                None => self.gone(ctx, &key).await,
                Some(_) => self.skip(ctx, key, "the page renders empty".into()).await,
            };
            return Ok(done?);
        }
        if html.len() as u64 > self.cfg.max_document_bytes {
            let reason = format!(
                "too large: {} bytes of HTML > max_file_size_bytes {}",
                html.len(),
                self.cfg.max_document_bytes
            );
            return Ok(self.skip(ctx, key, reason).await?);
        }
        let entry = IndexedDoc {
            version: page::version(rev, &html),
            acl_fingerprint: acl_fp,
        };
        if !ctx.reparse && prev.as_ref() == Some(&entry) {
            ctx.job.update(|j| j.counts.unchanged += 1);
            return Ok(());
        }
        if let Some(reason) = narrowed {
            tracing::warn!(connector = %self.cfg.id, page = %docent_connector_api::log_safe(&id), reason = %docent_connector_api::log_safe(&reason.to_string()), "indexed with an ACL narrower than the wiki's");
        }
        let known = prev.is_some();
        let doc = SourceDocument {
            uri: page::page_uri(&self.cfg.url, &id),
            title: Some(page::first_heading(&html).unwrap_or_else(|| id.clone())),
            mime: Some("text/html".into()),
            name_hint: format!("{}.html", page::name(&id)),
            version: entry.version.clone(),
            modified_at: Some(rev),
            attributes: BTreeMap::from([
                ("namespace".to_string(), page::namespace(&id).to_string()),
                // Citations link to the page's section (Docent derives DokuWiki's anchors).
                ("anchor_style".to_string(), "dokuwiki".to_string()),
            ]),
            acl,
            job: Some(ctx.job.id()),
            reparse: ctx.reparse,
            content: html.into_bytes(),
            key,
        };
        self.remember(&id, Some(entry));
        ctx.job.update(|j| {
            if known {
                j.counts.modified += 1;
            } else {
                j.counts.added += 1;
            }
        });
        Ok(self.send(ctx, Change::Upsert(Box::new(doc))).await?)
    }

    /// The page's ACL (and why it is narrowed, if it is), or why it cannot be indexed.
    fn page_acl(
        &self,
        rules: &AclRules,
        superusers: &Superusers,
        id: &str,
    ) -> Result<(Acl, Option<String>), String> {
        match rules.page_acl(id, superusers, &self.cfg.mapping) {
            PageAcl::Exact(acl) => Ok((acl, None)),
            PageAcl::Narrowed { acl, reason } => match self.cfg.lossy_acl {
                LossyAcl::Narrow => Ok((acl, Some(reason))),
                LossyAcl::Skip => Err(format!(
                    "its wiki ACL has no exact Docent equivalent ({reason}); lossy_acl = \"skip\""
                )),
            },
            PageAcl::Unrepresentable(reason) => Err(reason),
        }
    }

    /// The page no longer exists (confirmed by the wiki): delete what was indexed or sent.
    async fn gone(&self, ctx: &PassCtx<'_>, key: &DocKey) -> Result<(), PassError> {
        if self.last_known(key).is_none() {
            return Ok(());
        }
        self.remember(&key.native_id, None);
        ctx.job.update(|j| j.counts.deleted += 1);
        self.send(ctx, Change::Delete(key.clone())).await
    }

    /// Why page `id` may not be indexed because of what its text pulls in, if it may not.
    async fn includes_check(&self, id: &str) -> Result<Option<String>, CallError> {
        match self.client.page_text(id).await {
            Ok(text) => Ok(includes_other_pages(&text).map(|syntax| {
                format!(
                    "the page includes or lists other pages, or shows text by who reads it \
                     ({syntax}), which the wiki renders with the crawler's rights; not indexed"
                )
            })),
            Err(e) if e.is_page_refusal() => {
                Ok(Some(format!("the wiki cannot give its text: {e}")))
            }
            Err(e) => Err(e),
        }
    }

    /// Whether a failed call about one page is that page's trouble: the wiki answers a light
    /// call now (`dokuwiki.getVersion`), and the failure is not about the crawler's access.
    /// Otherwise the wiki is down or refusing, and the pass fails.
    async fn page_trouble(&self, e: CallError) -> Result<CallError, PassError> {
        if matches!(
            e,
            CallError::Unauthorized { .. } | CallError::Forbidden { .. } | CallError::Cancelled
        ) || self.client.version().await.is_err()
        {
            return Err(e.into());
        }
        Ok(e)
    }

    /// A call about a page (its info, its text, its rendering) failed with a fault, an HTTP
    /// error or a broken answer: when it is this page's trouble ([`Self::page_trouble`]: a
    /// plugin's fatal error on it, a render slower than the timeout, a text too large to
    /// answer), the pass goes on: the page keeps its indexed version if its ACL is unchanged,
    /// else it is skipped (old text must not stay under an old ACL). When the wiki does not
    /// answer, it is down and the pass fails. (Before, one such page failed every pass at it:
    /// later pages were never updated and deleted ones never withdrawn.) The page is read
    /// again at the next reconciliation.
    async fn page_failed(
        &self,
        ctx: &PassCtx<'_>,
        key: DocKey,
        e: CallError,
    ) -> Result<(), PassError> {
        let e = self.page_trouble(e).await?;
        // The ACL the index holds is still the page's.
        let unchanged_acl = match (
            self.last_known(&key),
            self.page_acl(ctx.rules, ctx.superusers, &key.native_id),
        ) {
            (Some(p), Ok((acl, _))) => p.acl_fingerprint == acl.fingerprint(),
            _ => false,
        };
        let shown = docent_connector_api::log_safe(&e.to_string());
        tracing::warn!(connector = %self.cfg.id, page = %docent_connector_api::log_safe(&key.native_id), error = %shown, "the wiki failed on a page");
        let reason = format!("the wiki failed on this page while answering others: {e}");
        if unchanged_acl {
            ctx.job.failure(
                &key.native_id,
                &format!("{reason}; the indexed version stays"),
            );
            Ok(())
        } else {
            self.skip(ctx, key, reason).await
        }
    }

    /// Reported as skipped, which also removes an indexed version: a page that cannot be
    /// indexed now must not keep serving old text under an old ACL.
    async fn skip(&self, ctx: &PassCtx<'_>, key: DocKey, reason: String) -> Result<(), PassError> {
        tracing::debug!(connector = %self.cfg.id, page = %docent_connector_api::log_safe(&key.native_id), reason = %docent_connector_api::log_safe(&reason), "skipped");
        ctx.job.failure(&key.native_id, &reason);
        self.remember(&key.native_id, None);
        self.send(ctx, Change::Skipped { key, reason }).await
    }

    async fn send(&self, ctx: &PassCtx<'_>, change: Change) -> Result<(), PassError> {
        ctx.job.id();
        ctx.sent_any
            .store(true, std::sync::atomic::Ordering::Relaxed);
        tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => Err(PassError::Cancelled),
            r = self.sink.send(change) => r.map_err(|_| PassError::SinkClosed),
        }
    }

    /// Commits `cursor` with everything sent before it.
    pub async fn checkpoint(&self, cursor: &Cursor) -> Result<(), PassError> {
        self.notify(Change::Checkpoint {
            connector: self.cfg.id.clone(),
            checkpoint: cursor.to_checkpoint(),
        })
        .await
    }

    /// Sends a change about the pass itself (not a page's: it does not count as one sent).
    async fn notify(&self, change: Change) -> Result<(), PassError> {
        tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => Err(PassError::Cancelled),
            r = self.sink.send(change) => r.map_err(|_| PassError::SinkClosed),
        }
    }

    /// Every page id the index holds or will hold once what was sent is applied.
    fn known_ids(&self) -> BTreeSet<String> {
        self.sent.known_ids()
    }

    /// The newest state of a page as far as this run knows (see [`SentLog`]).
    fn last_known(&self, key: &DocKey) -> Option<IndexedDoc> {
        self.sent.last_known(key)
    }

    fn remember(&self, id: &str, last: Option<IndexedDoc>) {
        self.sent.remember(id, last);
    }
}

/// The namespaces page `id` lies in, outermost first (`a:b:c` → `a`, `a:b`).
fn namespaces_of(id: &str) -> impl Iterator<Item = &str> {
    id.match_indices(':').map(move |(i, _)| &id[..i])
}

pub(crate) fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Plugin components known to render nothing from other pages: the tag plugin's own tags
/// (`{{tag>a b}}` shows this page's tags) and video embeds.
const SAFE_COMPONENTS: &[&str] = &[
    "tag",
    "rss",
    "youtube",
    "vimeo",
    "dailymotion",
    "video",
    "audio",
];

/// `~~NAME~~` / `~~NAME:…~~` directives that render nothing of other pages.
const SAFE_DIRECTIVES: &[&str] = &["NOTOC", "NOCACHE", "DISCUSSION", "META", "CLOSETOC"];

/// Plugin tags that list or pull in other pages (nspages, pagelist, catlist, searchtable, blog).
const LISTING_TAGS: &[&str] = &["<nspages", "<pagelist", "<catlist", "<searchtable", "<blog"];

/// Plugin tags whose text is shown by who reads (ifauth and ifauthex by user or group, isauth,
/// ifauth's fork, in either of its syntaxes, showif by rights or login, nodisp by ACL level or
/// group): rendered for the crawler, a superuser, they show what only some readers may see,
/// and showif and nodisp put hidden text in the HTML as `display:none`.
const PER_READER_TAGS: &[&str] = &[
    "<ifauth", "<isauth", "[isauth", "<showif", "<nodisp", "{nodisp", "<php",
];

/// Plugin syntax that may pull other pages' text or titles into a page, which the wiki renders
/// with the crawler's rights: the first found. Blocked by shape rather than by a list of known
/// plugins (include, template, pagequery, indexmenu, backlinks, changes, blog, gallery, …):
/// any `{{name>…}}` component but [`SAFE_COMPONENTS`], the struct plugin's inline
/// `{{$page.schema.field}}`, any `~~NAME~~` or `~~NAME:…~~` directive but [`SAFE_DIRECTIVES`]
/// (dir, info), the data and struct plugins' `---- datatable ----` blocks (any dashes and
/// spacing; not the page's own `dataentry`), [`LISTING_TAGS`], and [`PER_READER_TAGS`] (not
/// other pages, but rendered with the crawler's rights all the same).
fn includes_other_pages(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    for (i, _) in lower.match_indices("{{") {
        let rest = lower[i + 2..].trim_start();
        if rest.starts_with('$') {
            return Some("{{$".into());
        }
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(rest.len());
        if name_len > 0
            && rest[name_len..].starts_with('>')
            && !SAFE_COMPONENTS.contains(&&rest[..name_len])
        {
            return Some(format!("{{{{{}>", &rest[..name_len]));
        }
    }
    // Every `~~`, overlapping ones too: `~~~DIR~~` is the directive after its first tilde (a
    // second review).
    let tildes = text
        .match_indices('~')
        .map(|(i, _)| i)
        .filter(|&i| text[i + 1..].starts_with('~'));
    for i in tildes {
        let rest = &text[i + 2..];
        // Plugin directives: upper case (`~~DIR~~`, `~~INFO:…~~`, `~~GROUPMGR|a|@b~~`), or
        // any case with arguments (`~~groupmanager|a|b~~`, found by a review; a bare
        // `~~word~~` in lower case is text).
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = &rest[..name_len];
        let after = &rest[name_len..];
        let upper = name.starts_with(|c: char| c.is_ascii_uppercase())
            && !name.contains(|c: char| c.is_ascii_lowercase());
        // Lower case only with `|` arguments: `~~Note: old~~` and `~~https://…~~`, struck out
        // the Markdown way, are text.
        let directive = if upper {
            after.starts_with(':') || after.starts_with('|') || after.starts_with("~~")
        } else {
            after.starts_with('|')
        };
        if name_len > 0
            && directive
            && !SAFE_DIRECTIVES.contains(&name.to_ascii_uppercase().as_str())
        {
            return Some(format!("~~{name}"));
        }
    }
    for line in lower.lines().map(str::trim) {
        // `----+ *data… -+` and `----+ *struct … -+`: four dashes or more, the data or struct
        // plugin's word, then dashes again (not a PEM armour line such as `-----BEGIN …-----`).
        let Some(after) = line.strip_prefix("----") else {
            continue;
        };
        let inner = after.trim_start_matches('-').trim_end_matches('-').trim();
        if line.ends_with('-')
            && (inner.starts_with("data") || inner.starts_with("struct"))
            && !inner.starts_with("dataentry")
        {
            return Some(format!("---- {inner} ----"));
        }
    }
    LISTING_TAGS
        .iter()
        .chain(PER_READER_TAGS)
        .find(|t| lower.contains(*t))
        .map(|t| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_other_versions() {
        let c = Cursor {
            v: CURSOR_VERSION,
            since: 1_796_153_449,
            last_full: 1_796_150_000,
            acl: "ab".into(),
            last_full_scan_ms: 1_796_150_000_123,
            acl_rules: Some(8),
            content_rules: CONTENT_RULES,
        };
        assert_eq!(Cursor::from_checkpoint(&c.to_checkpoint()), Some(c));
        assert_eq!(
            Cursor::from_checkpoint(&serde_json::json!({"last_full_scan_ms": 1})),
            None
        );
        let mut other = serde_json::json!({"v": 99, "since": 1, "last_full": 1, "acl": ""});
        assert_eq!(Cursor::from_checkpoint(&other), None);
        other["v"] = CURSOR_VERSION.into();
        // A checkpoint from before the rule count was kept still loads.
        let old = Cursor::from_checkpoint(&other).unwrap();
        assert_eq!(old.acl_rules, None);
        assert_eq!(old.content_rules, 0);
    }

    /// A superuser group a release cannot check is left out unless the config says to trust it
    /// (a review: such groups were trusted always).
    #[test]
    fn a_superuser_group_the_release_cannot_check_is_trusted_only_when_told() {
        let admins = Who::Group("admin".into());
        assert_eq!(
            superuser_check(&admins, true, false),
            Check::Ask(SUPERUSER_PROBE, vec!["admin"])
        );
        assert_eq!(superuser_check(&admins, false, true), Check::Keep);
        assert!(matches!(
            superuser_check(&admins, false, false),
            Check::Refuse(why) if why.contains("trust_superuser_groups")
        ));
        // People are always asked.
        let root = Who::User("root".into());
        assert_eq!(
            superuser_check(&root, false, false),
            Check::Ask("root", vec![])
        );
    }

    /// Whether a wiki that now lists no rules lost them (held back) or never had any.
    /// Releases from 2024-02-06 "Kaos" on drop the groups given to `wiki.aclCheck` (session
    /// 30's review: every superuser group would have failed its check there).
    #[test]
    fn groups_reach_acl_check_before_kaos_only() {
        assert!(groups_reach_acl_check("Release 2022-07-31b \"Igor\""));
        assert!(groups_reach_acl_check(
            "Release 2023-04-04a \"Jack Jackrum\""
        ));
        assert!(!groups_reach_acl_check("Release 2024-02-06b \"Kaos\""));
        assert!(!groups_reach_acl_check("Release 2025-05-14 \"Librarian\""));
        assert!(!groups_reach_acl_check("rc2024-12-31"));
        assert!(!groups_reach_acl_check("unknown"));
    }

    #[test]
    fn a_checkpoint_tells_whether_the_wiki_had_acl_rules() {
        let cursor = |acl: &str, acl_rules: Option<u64>| Cursor {
            v: CURSOR_VERSION,
            since: 1,
            last_full: 1,
            acl: acl.into(),
            last_full_scan_ms: 0,
            acl_rules,
            content_rules: CONTENT_RULES,
        };
        let no_rules = "fingerprint-of-none";
        assert!(cursor("ab", Some(8)).had_acl_rules(no_rules));
        assert!(!cursor("ab", Some(0)).had_acl_rules(no_rules));
        // A hold clears the fingerprint and keeps the count.
        assert!(cursor("", Some(8)).had_acl_rules(no_rules));
        // Without a count (an older checkpoint) the fingerprint decides.
        assert!(cursor("ab", None).had_acl_rules(no_rules));
        assert!(!cursor(no_rules, None).had_acl_rules(no_rules));
    }

    #[test]
    fn pages_that_include_or_list_other_pages_are_recognised() {
        let found = |t: &str| includes_other_pages(t);
        assert_eq!(
            found("Intro\n{{page>hr:salaries}}\n").as_deref(),
            Some("{{page>")
        );
        assert_eq!(found("<nspages hr -h1>").as_deref(), Some("<nspages"));
        // Plugins no list named (found by a review): templater, pagequery, dir, data, struct.
        assert_eq!(
            found("{{template>hr:salaries}}").as_deref(),
            Some("{{template>")
        );
        assert_eq!(
            found("{{ PageQuery>salary }}").as_deref(),
            Some("{{pagequery>")
        );
        assert_eq!(found("~~DIR:hr~~").as_deref(), Some("~~DIR"));
        assert_eq!(found("~~DIR~~").as_deref(), Some("~~DIR"));
        // Directives with arguments in any case, and PHP blocks (a review: the groupmgr and
        // groupmanager plugins render member lists for the crawler).
        assert_eq!(
            found("~~GROUPMGR|posters|@moderators~~").as_deref(),
            Some("~~GROUPMGR")
        );
        assert_eq!(
            found("~~groupmanager|hr|@admin~~").as_deref(),
            Some("~~groupmanager")
        );
        assert_eq!(found("<php>echo 1;</php>").as_deref(), Some("<php"));
        assert_eq!(found("<PHP>echo 1;</PHP>").as_deref(), Some("<php"));
        assert_eq!(found("~~NOTOC~~ and ~~old~~ text").as_deref(), None);
        // A tilde more in front hides nothing (a second review); struck-out text is text.
        assert_eq!(found("~~~GROUPMGR|a|@b~~").as_deref(), Some("~~GROUPMGR"));
        assert_eq!(found("~~~DIR~~").as_deref(), Some("~~DIR"));
        assert_eq!(
            found("~~Note: old~~ and ~~https://x.example~~").as_deref(),
            None
        );
        assert_eq!(
            found("---- datatable ----\ncols: %pageid%\n----").as_deref(),
            Some("---- datatable ----")
        );
        // The plugins' own patterns allow any dashes and spacing (a second review).
        assert_eq!(
            found("----datatable----").as_deref(),
            Some("---- datatable ----")
        );
        assert_eq!(
            found("----- struct table -----").as_deref(),
            Some("---- struct table ----")
        );
        assert_eq!(found("{{$page.salary.amount}}").as_deref(), Some("{{$"));
        assert_eq!(found("<blog list>").as_deref(), Some("<blog"));
        assert_eq!(found("<catlist hr>").as_deref(), Some("<catlist"));
        // Text shown by who reads it, rendered for the crawler (review item M4).
        assert_eq!(
            found("<ifauth @admin>Salary bands</ifauth>").as_deref(),
            Some("<ifauth")
        );
        assert_eq!(
            found("<ifauthex @admin>x</ifauthex>").as_deref(),
            Some("<ifauth")
        );
        assert_eq!(
            found("<showif isadmin>x</showif>").as_deref(),
            Some("<showif")
        );
        assert_eq!(found("<nodisp 2>x</nodisp>").as_deref(), Some("<nodisp"));
        assert_eq!(found("{nodisp hr}x{/nodisp}").as_deref(), Some("{nodisp"));
        // A review: the isauth plugin's two syntaxes were not caught.
        assert_eq!(
            found("[isauth @hr]bands[/isauth]").as_deref(),
            Some("[isauth")
        );
        assert_eq!(
            found("<isauth @hr>bands</isauth>").as_deref(),
            Some("<isauth")
        );
        // What renders nothing of other pages.
        assert_eq!(found("A link to [[hr:salaries]] is fine."), None);
        assert_eq!(
            found("{{wiki:logo.png}} an image, {{ wiki:logo.png?200 }}"),
            None
        );
        assert_eq!(found("{{tag>onboarding hr}} ~~NOTOC~~\n----\nend"), None);
        assert_eq!(
            found("~~DISCUSSION:off~~ ~~META:date created=2020-01-01~~"),
            None
        );
        assert_eq!(found("{{rss>https://example.org/feed}}"), None);
        assert_eq!(found("---- dataentry project ----\nowner: ana\n----"), None);
        // A certificate in a code block, and tildes in prose.
        assert_eq!(
            found("<code>\n-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n</code>"),
            None
        );
        assert_eq!(found("approx ~~done~~ and ~~ 5 minutes ~~"), None);
    }
}
