//! The Slack Web API calls the bridge makes (`chat.postMessage`, `chat.postEphemeral`,
//! `users.info`, `response_url` posts), with Slack's failure modes handled: HTTP 429 waits for
//! `Retry-After` (up to a bound) and retries, and `ok: false` is an error carrying Slack's
//! error code — returned to the caller, counted, never swallowed. A 5xx, a timeout or a
//! connection lost after the request was sent is retried (with backoff) only for a method that
//! reads: a post may already have been made, and posting an answer twice is worse than
//! reporting the failure. A connection that never opened is retried for every method.

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

    /// A message to an interaction's `response_url` (no token: the URL is the credential).
    pub async fn respond(&self, response_url: &str, body: &Value) -> Result<Value, SlackError> {
        self.send("response_url", || self.http.post(response_url).json(body))
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

/// Whether `method` only reads, so that repeating a call that may have been made is harmless.
fn reads_only(method: &str) -> bool {
    matches!(
        method,
        "users.info" | "users.list" | "conversations.members" | "auth.test"
    )
}
