//! Prometheus metrics: request counts by method and status code, latency histograms (time to the
//! first answer piece included), answers by status, guardrail blocks, documents indexed and failed
//! per connector, index size. Labels take values from fixed sets only (methods, gRPC codes,
//! configured connector ids): no label grows with traffic.
//!
//! Served as text exposition format on `server.metrics_listen` by [`http::serve`].

pub mod http;
mod layer;

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use layer::MetricsLayer;

/// gRPC methods with their own label value; anything else is "other".
pub const METHODS: &[&str] = &[
    "Ask",
    "AskStream",
    "Search",
    "ListConnectors",
    "IndexStats",
    "WhoIs",
    "CheckAccess",
    "ReloadIdentities",
    "PutDocuments",
    "DeleteDocuments",
    "ListJobs",
    "SyncNow",
    "PauseConnector",
    "ResumeConnector",
    "ListConversations",
    "GetConversation",
    "DeleteConversation",
    "Feedback",
    "Usage",
    "ExportFeedback",
    "other",
];

const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Upper bounds in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}",
                self.buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Answer outcomes, as label values.
#[derive(Debug, Clone, Copy)]
pub enum AnswerOutcome {
    Answered = 0,
    NoAnswer = 1,
    Blocked = 2,
}

const OUTCOMES: [&str; 3] = ["answered", "no_answer", "blocked"];

/// Guardrail (stage, action) label pairs; "acl" is the defence-in-depth recheck.
pub const GUARDRAIL_ACTIONS: [(&str, &str); 15] = [
    ("acl", "drop"),
    ("blocked_phrases", "block"),
    ("blocked_phrases", "remove"),
    ("blocked_phrases", "drop"),
    ("injection", "block"),
    ("injection", "drop"),
    ("topics", "block"),
    ("topics", "restrict"),
    ("grounding", "remove"),
    ("grounding", "drop"),
    ("grounding", "reattribute"),
    ("grounding", "uncited"),
    // Links and images a model wrote that the passages do not hold (found by a test: the
    // pair was missing, so a debug build panicked on it and a release build did not count it).
    ("grounding", "strip"),
    ("pii", "redact"),
    // The answer's sentence check found the answer's best sentences far from the question.
    ("sentence_check", "not_found"),
];

/// Outcomes of LLM calls (`ok` or a fallback reason code).
pub const LLM_OUTCOMES: [&str; 6] = [
    "ok",
    "LLM_UNAVAILABLE",
    "LLM_TIMEOUT",
    "LLM_ERROR",
    "LLM_BUSY",
    // Answered, but no sentence passed verification (the extractive answer was given).
    "LLM_UNVERIFIED",
];

pub struct Metrics {
    llm: [AtomicU64; LLM_OUTCOMES.len()],
    llm_tokens: [AtomicU64; 2],
    feedback: [AtomicU64; 2],
    requests: Vec<[AtomicU64; 17]>,
    latency: Vec<Histogram>,
    first_piece: Histogram,
    answers: [AtomicU64; 3],
    guardrail: [AtomicU64; GUARDRAIL_ACTIONS.len()],
    /// Audit records lost to a failed write, as the audit log last counted them.
    audit_write_failures: AtomicU64,
    /// Refusals the audit log's rate limit left out, as it last counted them.
    audit_suppressed: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: METHODS.iter().map(|_| Default::default()).collect(),
            latency: METHODS.iter().map(|_| Histogram::default()).collect(),
            first_piece: Histogram::default(),
            answers: Default::default(),
            guardrail: Default::default(),
            llm: Default::default(),
            llm_tokens: Default::default(),
            feedback: Default::default(),
            audit_write_failures: AtomicU64::new(0),
            audit_suppressed: AtomicU64::new(0),
        }
    }
}

/// Index of a method label for a gRPC path like `/docent.v1.Assistant/Ask`.
pub fn method_index(path: &str) -> usize {
    let name = path.rsplit('/').next().unwrap_or("");
    let known = path.starts_with("/docent.v1.");
    METHODS
        .iter()
        .position(|m| known && *m == name)
        .unwrap_or(METHODS.len() - 1)
}

impl Metrics {
    pub fn request(&self, method: usize, code: usize, elapsed: Duration) {
        let m = method.min(METHODS.len() - 1);
        self.requests[m][code.min(16)].fetch_add(1, Ordering::Relaxed);
        self.latency[m].observe(elapsed);
    }

    /// An LLM call's outcome (`ok` or a fallback reason from [`LLM_OUTCOMES`]).
    pub fn llm(&self, outcome: &str) {
        if let Some(i) = LLM_OUTCOMES.iter().position(|o| *o == outcome) {
            self.llm[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn llm_tokens(&self, prompt: u64, completion: u64) {
        self.llm_tokens[0].fetch_add(prompt, Ordering::Relaxed);
        self.llm_tokens[1].fetch_add(completion, Ordering::Relaxed);
    }

    /// The audit log's count of records lost to failed writes (see `AuditLog::failed_writes`)
    /// and of refusals its rate limit left out (`AuditLog::suppressed_refusals`).
    pub fn note_audit_failures(&self, total: u64, suppressed: u64) {
        self.audit_write_failures.store(total, Ordering::Relaxed);
        self.audit_suppressed.store(suppressed, Ordering::Relaxed);
    }

    pub fn feedback(&self, up: bool) {
        self.feedback[usize::from(!up)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn first_piece(&self, elapsed: Duration) {
        self.first_piece.observe(elapsed);
    }

    pub fn answer(&self, outcome: AnswerOutcome) {
        self.answers[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `n` items a guardrail stage acted on; unknown pairs are a bug and are ignored.
    pub fn guardrail(&self, stage: &str, action: &str, n: u64) {
        if n == 0 {
            return;
        }
        match GUARDRAIL_ACTIONS.iter().position(|&p| p == (stage, action)) {
            Some(i) => {
                self.guardrail[i].fetch_add(n, Ordering::Relaxed);
            }
            None => debug_assert!(false, "unknown guardrail label {stage}/{action}"),
        }
    }

    /// Text exposition. `connectors` gives (id, documents in the index, indexed since start,
    /// failed since start); `index` gives (documents, chunks, bytes).
    pub fn render(&self, connectors: &[(String, u64, u64, u64)], index: (u64, u64, u64)) -> String {
        let mut o = String::with_capacity(8192);
        o.push_str("# HELP docent_requests_total gRPC requests by method and status code.\n# TYPE docent_requests_total counter\n");
        for (mi, m) in METHODS.iter().enumerate() {
            for (ci, c) in CODES.iter().enumerate() {
                let n = self.requests[mi][ci].load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        o,
                        "docent_requests_total{{method=\"{m}\",code=\"{c}\"}} {n}"
                    );
                }
            }
        }
        o.push_str("# HELP docent_request_duration_seconds Time to the response headers (unary: the whole call).\n# TYPE docent_request_duration_seconds histogram\n");
        for (mi, m) in METHODS.iter().enumerate() {
            self.latency[mi].render(
                &mut o,
                "docent_request_duration_seconds",
                &format!("method=\"{m}\""),
            );
        }
        o.push_str("# HELP docent_ask_first_piece_seconds Time from an AskStream request to its first answer piece.\n# TYPE docent_ask_first_piece_seconds histogram\n");
        self.first_piece
            .render(&mut o, "docent_ask_first_piece_seconds", "");
        o.push_str("# HELP docent_answers_total Answers by outcome (no_answer: nothing relevant found).\n# TYPE docent_answers_total counter\n");
        for (i, name) in OUTCOMES.iter().enumerate() {
            let _ = writeln!(
                o,
                "docent_answers_total{{status=\"{name}\"}} {}",
                self.answers[i].load(Ordering::Relaxed)
            );
        }
        o.push_str("# HELP docent_guardrail_verdicts_total Items a guardrail stage acted on: blocked requests, dropped passages or hits, removed sentences, redacted entities.\n# TYPE docent_guardrail_verdicts_total counter\n");
        for (i, (stage, action)) in GUARDRAIL_ACTIONS.iter().enumerate() {
            let _ = writeln!(
                o,
                "docent_guardrail_verdicts_total{{stage=\"{stage}\",action=\"{action}\"}} {}",
                self.guardrail[i].load(Ordering::Relaxed)
            );
        }
        o.push_str("# HELP docent_llm_requests_total LLM calls by outcome (ok, or the reason the answer fell back).\n# TYPE docent_llm_requests_total counter\n");
        for (i, name) in LLM_OUTCOMES.iter().enumerate() {
            let _ = writeln!(
                o,
                "docent_llm_requests_total{{outcome=\"{name}\"}} {}",
                self.llm[i].load(Ordering::Relaxed)
            );
        }
        o.push_str("# HELP docent_llm_tokens_total LLM tokens spent (all identities together).\n# TYPE docent_llm_tokens_total counter\n");
        for (i, kind) in ["prompt", "completion"].iter().enumerate() {
            let _ = writeln!(
                o,
                "docent_llm_tokens_total{{kind=\"{kind}\"}} {}",
                self.llm_tokens[i].load(Ordering::Relaxed)
            );
        }
        o.push_str("# HELP docent_feedback_total Feedback on answers by vote.\n# TYPE docent_feedback_total counter\n");
        for (i, vote) in ["up", "down"].iter().enumerate() {
            let _ = writeln!(
                o,
                "docent_feedback_total{{vote=\"{vote}\"}} {}",
                self.feedback[i].load(Ordering::Relaxed)
            );
        }
        o.push_str("# HELP docent_connector_documents Documents of a connector in the index.\n# TYPE docent_connector_documents gauge\n");
        for (id, docs, _, _) in connectors {
            let _ = writeln!(o, "docent_connector_documents{{connector=\"{id}\"}} {docs}");
        }
        o.push_str("# HELP docent_documents_indexed_total Documents written since start.\n# TYPE docent_documents_indexed_total counter\n");
        for (id, _, indexed, _) in connectors {
            let _ = writeln!(
                o,
                "docent_documents_indexed_total{{connector=\"{id}\"}} {indexed}"
            );
        }
        o.push_str("# HELP docent_documents_failed_total Documents skipped or failed since start.\n# TYPE docent_documents_failed_total counter\n");
        for (id, _, _, failed) in connectors {
            let _ = writeln!(
                o,
                "docent_documents_failed_total{{connector=\"{id}\"}} {failed}"
            );
        }
        let _ = writeln!(
            o,
            "# HELP docent_audit_write_failures_total Audit records lost to a failed write.\n# TYPE docent_audit_write_failures_total counter\ndocent_audit_write_failures_total {}",
            self.audit_write_failures.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP docent_audit_refusals_suppressed_total Refusals the audit log's rate limit left out (each caller's next record counts its own).\n# TYPE docent_audit_refusals_suppressed_total counter\ndocent_audit_refusals_suppressed_total {}",
            self.audit_suppressed.load(Ordering::Relaxed)
        );
        let (docs, chunks, bytes) = index;
        let _ = writeln!(
            o,
            "# HELP docent_index_documents Documents in the index.\n# TYPE docent_index_documents gauge\ndocent_index_documents {docs}"
        );
        let _ = writeln!(
            o,
            "# HELP docent_index_chunks Chunks in the index.\n# TYPE docent_index_chunks gauge\ndocent_index_chunks {chunks}"
        );
        let _ = writeln!(
            o,
            "# HELP docent_index_size_bytes Bytes on disk of the index.\n# TYPE docent_index_size_bytes gauge\ndocent_index_size_bytes {bytes}"
        );
        let _ = writeln!(
            o,
            "# HELP docent_parsers_overdue Parser threads still running on documents that timed out (documents are refused while {} are).\n# TYPE docent_parsers_overdue gauge\ndocent_parsers_overdue {}",
            crate::parse::MAX_OVERDUE_PARSERS,
            crate::parse::overdue_parsers()
        );
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms_with_bounded_labels() {
        let m = Metrics::default();
        m.request(
            method_index("/docent.v1.Assistant/Ask"),
            0,
            Duration::from_millis(3),
        );
        m.request(
            method_index("/docent.v1.Assistant/Ask"),
            16,
            Duration::from_micros(200),
        );
        m.request(
            method_index("/some.Other/Thing"),
            12,
            Duration::from_millis(1),
        );
        m.request(
            method_index("/docent.v1.Assistant/Bogus"),
            12,
            Duration::from_millis(1),
        );
        m.answer(AnswerOutcome::NoAnswer);
        m.guardrail("pii", "redact", 2);
        let t = m.render(&[("share".into(), 3, 4, 1)], (3, 9, 1000));
        assert!(
            t.contains("docent_requests_total{method=\"Ask\",code=\"OK\"} 1"),
            "{t}"
        );
        assert!(t.contains("docent_requests_total{method=\"Ask\",code=\"UNAUTHENTICATED\"} 1"));
        assert!(t.contains("docent_requests_total{method=\"other\",code=\"UNIMPLEMENTED\"} 2"));
        assert!(
            t.contains("docent_request_duration_seconds_bucket{method=\"Ask\",le=\"0.001\"} 1")
        );
        assert!(
            t.contains("docent_request_duration_seconds_bucket{method=\"Ask\",le=\"0.005\"} 2")
        );
        assert!(t.contains("docent_request_duration_seconds_count{method=\"Ask\"} 2"));
        assert!(t.contains("docent_answers_total{status=\"no_answer\"} 1"));
        assert!(t.contains("docent_documents_failed_total{connector=\"share\"} 1"));
        assert!(t.contains("docent_index_chunks 9"));
        assert!(t.contains("docent_guardrail_verdicts_total{stage=\"pii\",action=\"redact\"} 2"));
        assert!(t.contains("docent_guardrail_verdicts_total{stage=\"acl\",action=\"drop\"} 0"));
    }
}
