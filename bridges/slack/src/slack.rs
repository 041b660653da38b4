//! The Slack Web API calls the bridge makes (`chat.postMessage`, `chat.postEphemeral`,
//! `users.info`, `response_url` posts), with Slack's failure modes handled: HTTP 429 waits for
//! `Retry-After` (up to a bound) and retries, and `ok: false` is an error carrying Slack's
//! error code — returned to the caller, counted, never swallowed. A 5xx, a timeout or a
//! connection lost after the request was sent is retried (with backoff) only for a method that
//! reads: a post may already have been made, and posting an answer twice is worse than
//! reporting the failure. A connection that never opened is retried for every method.
//!
//! A `response_url` comes in the request's form: it is posted to only on Slack's hooks host
//! (see [`response_url_allowed`]), and a redirect from there is not followed.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::metrics::Metrics;

#[derive(Debug, Clone, thiserror::Error)]
pub enum SlackError {
    /// `ok: false` with Slack's error code (`channel_not_found`, `msg_too_long`, …).
    #[error("slack {method}: {error}")]
    Api { method: String, error: String },
    /// Still rate limited after the retries, or asked to wait longer than allowed.
    #[error("slack {method}: rate limited")]
    RateLimited { method: String },
    #[error("slack {method}: {message}")]
    Transport { method: String, message: String },
}

impl SlackError {
    pub fn code(&self) -> &str {
        match self {
            Self::Api { error, .. } => error,
            Self::RateLimited { .. } => "ratelimited",
            Self::Transport { .. } => "transport",
        }
    }
}

#[derive(Clone)]
pub struct SlackApi {
    http: reqwest::Client,
    /// For `response_url` posts: follows no redirect, so that the answer goes to the host that
    /// was checked and nowhere else.
    hooks: reqwest::Client,
    /// The hosts a `response_url` may name ([`crate::Config::response_url_hosts`]).
    hook_hosts: Vec<String>,
    base: String,
    token: String,
    attempts: u32,
    max_retry_after: Duration,
    metrics: Arc<Metrics>,
}

impl SlackApi {
    pub fn new(cfg: &crate::Config, metrics: Arc<Metrics>) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("reqwest client with rustls"),
            hooks: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("reqwest client with rustls"),
            hook_hosts: cfg.response_url_hosts.clone(),
            base: cfg.api_url.clone(),
            token: cfg.bot_token.clone(),
            attempts: cfg.slack_attempts,
            max_retry_after: cfg.max_retry_after,
            metrics,
        }
    }

    /// A Web API method with a JSON body.
    pub async fn call(&self, method: &str, body: &Value) -> Result<Value, SlackError> {
        let url = format!("{}/{method}", self.base);
        self.send(method, || {
            self.http.post(&url).bearer_auth(&self.token).json(body)
        })
        .await
    }

    /// A Web API method that takes form arguments (`users.info`).
    pub async fn call_form(
        &self,
        method: &str,
        args: &[(&str, &str)],
    ) -> Result<Value, SlackError> {
        let url = format!("{}/{method}", self.base);
        self.send(method, || {
            self.http.post(&url).bearer_auth(&self.token).form(args)
        })
        .await
    }

    /// Whether `url` may be a `response_url` Slack gave (see [`response_url_allowed`]).
    pub fn accepts_response_url(&self, url: &str) -> bool {
        response_url_allowed(url, &self.hook_hosts, &self.base)
    }

    /// A message to an interaction's `response_url` (no token: the URL is the credential).
    /// Refused without a request unless [`Self::accepts_response_url`]: the HTTP handler
    /// refuses such a request first, this is the last line.
    pub async fn respond(&self, response_url: &str, body: &Value) -> Result<Value, SlackError> {
        if !self.accepts_response_url(response_url) {
            let e = SlackError::Api {
                method: "response_url".into(),
                error: "response_url_refused".into(),
            };
            tracing::warn!(
                error = e.code(),
                "response_url not on Slack's hosts refused"
            );
            return Err(e);
        }
        self.send("response_url", || self.hooks.post(response_url).json(body))
            .await
    }

    async fn send(
        &self,
        method: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Value, SlackError> {
        let r = self.send_inner(method, build).await;
        if let Err(e) = &r {
            tracing::warn!(method, error = e.code(), "slack web api call failed");
            self.metrics.inc(
                "docent_slack_api_errors_total",
                &[("method", method), ("error", e.code())],
            );
        }
        r
    }

    async fn send_inner(
        &self,
        method: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Value, SlackError> {
        let repeatable = reads_only(method);
        let mut backoff = Duration::from_millis(250);
        let mut last = SlackError::Transport {
            method: method.into(),
            message: "not sent".into(),
        };
        for attempt in 1..=self.attempts {
            if attempt > 1 {
                self.metrics
                    .inc("docent_slack_api_retries_total", &[("method", method)]);
            }
            let wait = match build().send().await {
                Err(e) => {
                    last = SlackError::Transport {
                        method: method.into(),
                        message: e.to_string(),
                    };
                    if !repeatable && !e.is_connect() {
                        return Err(last);
                    }
                    backoff
                }
                Ok(resp) if resp.status() == reqwest::StatusCode::TOO_MANY_REQUESTS => {
                    let secs = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .unwrap_or(1);
                    last = SlackError::RateLimited {
                        method: method.into(),
                    };
                    let wait = Duration::from_secs(secs);
                    if wait > self.max_retry_after {
                        return Err(last);
                    }
                    wait
                }
                Ok(resp) if resp.status().is_server_error() => {
                    last = SlackError::Transport {
                        method: method.into(),
                        message: format!("HTTP {}", resp.status()),
                    };
                    if !repeatable {
                        return Err(last);
                    }
                    backoff
                }
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().await.map_err(|e| SlackError::Transport {
                        method: method.into(),
                        message: e.to_string(),
                    })?;
                    // response_url answers may be plain "ok".
                    let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| {
                        json!({"ok": status.is_success() && text.trim() == "ok", "error": format!("HTTP {status}")})
                    });
                    if v["ok"].as_bool() == Some(true) {
                        return Ok(v);
                    }
                    let error = v["error"].as_str().unwrap_or("unknown_error").to_string();
                    if error == "ratelimited" {
                        last = SlackError::RateLimited {
                            method: method.into(),
                        };
                        backoff
                    } else {
                        return Err(SlackError::Api {
                            method: method.into(),
                            error,
                        });
                    }
                }
            };
            if attempt < self.attempts {
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(Duration::from_secs(8));
            }
        }
        Err(last)
    }
}

/// Whether `url` may be a `response_url`: `https://` to one of `hosts` on the default port, or
/// to the Web API's own origin (`api_url`'s scheme, host and port: the bot token already goes
/// there; a test's fake Slack). No user name or password. Parsed as reqwest will parse it, so
/// that the host judged is the one the answer is sent to.
pub fn response_url_allowed(url: &str, hosts: &[String], api_url: &str) -> bool {
    let Ok(u) = reqwest::Url::parse(url) else {
        return false;
    };
    if !u.username().is_empty() || u.password().is_some() {
        return false;
    }
    let on_hooks_host = u.scheme() == "https"
        && u.port_or_known_default() == Some(443)
        && u.host_str()
            .is_some_and(|h| hosts.iter().any(|a| a.eq_ignore_ascii_case(h)));
    on_hooks_host || reqwest::Url::parse(api_url).is_ok_and(|api| api.origin() == u.origin())
}

/// Whether `method` only reads, so that repeating a call that may have been made is harmless.
fn reads_only(method: &str) -> bool {
    matches!(
        method,
        "users.info" | "users.list" | "conversations.members" | "auth.test"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by a review: a slash command's `response_url` was posted to as the form gave it,
    /// so a request signed with a leaked signing secret could name any server and receive the
    /// asker's private answer.
    #[test]
    fn a_response_url_is_accepted_only_on_slacks_hooks_host_or_the_web_apis_origin() {
        let slack = ["hooks.slack.com".to_string()];
        let api = "http://127.0.0.1:3999/api";
        for ok in [
            "https://hooks.slack.com/commands/T1DC2JH3J/397700885554/96rGlfmibIGlgcZRskXaIFfN",
            "HTTPS://HOOKS.SLACK.COM/actions/T1/2/x",
            "https://hooks.slack.com:443/commands/T1/2/x",
            // The fake Slack of the tests, which serves the Web API too.
            "http://127.0.0.1:3999/response/cmd1",
        ] {
            assert!(response_url_allowed(ok, &slack, api), "{ok}");
        }
        for refused in [
            "https://attacker.example/",
            "http://hooks.slack.com/commands/T1/2/x",
            "https://hooks.slack.com:8443/commands/T1/2/x",
            "https://hooks.slack.com.attacker.example/commands",
            "https://attacker.example/hooks.slack.com",
            "https://hooks.slack.com@attacker.example/",
            "https://attacker.example\\@hooks.slack.com/",
            "https://user:pw@hooks.slack.com/commands/T1/2/x",
            "https://hooks.slack-gov.com/commands/T1/2/x",
            "http://127.0.0.1:4000/response/cmd1",
            "https://127.0.0.1:3999/response/cmd1",
            "not a url",
            "",
        ] {
            assert!(!response_url_allowed(refused, &slack, api), "{refused}");
        }
        // Another deployment's host, when configured (GovSlack).
        let gov = ["hooks.slack-gov.com".to_string()];
        assert!(response_url_allowed(
            "https://hooks.slack-gov.com/commands/T1/2/x",
            &gov,
            "https://slack-gov.com/api"
        ));
        assert!(!response_url_allowed(
            "https://hooks.slack.com/commands/T1/2/x",
            &gov,
            "https://slack-gov.com/api"
        ));
    }
}
