//! Prometheus counters of the bridge: events received (by kind), requests rejected (by why),
//! answers posted (by where), refusals (by why), Slack Web API errors (by method and error).
//! Fixed label values only: never a user, channel or question.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// A counter: its name and label pairs.
type Key = (&'static str, Vec<(&'static str, String)>);

#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<Key, u64>>,
}

const HELP: &[(&str, &str)] = &[
    (
        "docent_slack_events_total",
        "Verified requests from Slack, by kind.",
    ),
    (
        "docent_slack_rejected_total",
        "Requests refused before any work, by reason.",
    ),
    (
        "docent_slack_duplicates_total",
        "Redelivered events and messages ignored.",
    ),
    (
        "docent_slack_answers_total",
        "Answers posted, by where and Docent's status.",
    ),
    ("docent_slack_refusals_total", "Users refused, by reason."),
    (
        "docent_slack_errors_total",
        "Questions answered with an error message, by cause.",
    ),
    (
        "docent_slack_api_errors_total",
        "Slack Web API calls that failed, by method and error.",
    ),
    (
        "docent_slack_api_retries_total",
        "Slack Web API calls retried, by method.",
    ),
    (
        "docent_slack_feedback_total",
        "Feedback votes stored in Docent.",
    ),
];

impl Metrics {
    pub fn inc(&self, name: &'static str, labels: &[(&'static str, &str)]) {
        let key = (
            name,
            labels.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        );
        *self
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_insert(0) += 1;
    }

    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|((n, l), _)| {
                *n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for (name, help) in HELP {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
            let mut any = false;
            for ((n, labels), v) in c.iter().filter(|((n, _), _)| n == name) {
                any = true;
                let l: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| {
                        format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
                    })
                    .collect();
                if l.is_empty() {
                    out.push_str(&format!("{n} {v}\n"));
                } else {
                    out.push_str(&format!("{n}{{{}}} {v}\n", l.join(",")));
                }
            }
            if !any {
                out.push_str(&format!("{name} 0\n"));
            }
        }
        out
    }
}
