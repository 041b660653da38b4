//! The MediaWiki action API over HTTP(S): one polite client per connector.
//!
//! Politeness, on every request: `maxlag` is sent (a lagging wiki answers "maxlag" and we wait);
//! at most `max_concurrent_requests` requests are in flight (a semaphore); HTTP 429 and 503 are
//! retried after the server's `Retry-After` (capped at [`RETRY_AFTER_CAP`]); other transient
//! failures (connection refused, timeouts, 5xx) are retried with capped exponential backoff, at
//! most [`ATTEMPTS`] times, before the error reaches the sync (which then fails as a whole and
//! is retried later: a request that failed never turns into a deletion).
//!
//! Login: with credentials, `action=login` with a login token (a bot password, or a main
//! account while MediaWiki still accepts it there); the session lives in the client's cookie
//! store. Every later request carries `assert=user`, so a lost session is an error
//! (`assertuserfailed`) that triggers one fresh login instead of silently crawling as an
//! anonymous reader.
//!
//! Every wait (a request, a backoff, the login) ends as soon as the shutdown token is cancelled.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{Mutex, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::{Credentials, MediaWikiConfig};

/// Tries per request before its error reaches the sync.
pub const ATTEMPTS: u32 = 5;
/// First backoff after a transient failure; it doubles up to [`BACKOFF_CAP`].
pub const BACKOFF_START: Duration = Duration::from_millis(500);
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// The longest `Retry-After` (or maxlag wait) honoured; a larger one is cut to this.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(120);

/// Query parameters (the continuation keys are only known at run time).
pub type Params = Vec<(String, String)>;

/// Builds [`Params`] from string pairs.
pub fn params<const N: usize>(pairs: [(&str, &str); N]) -> Params {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The wiki could not be reached or kept failing (connection refused, timeouts, 5xx, 429).
    #[error("{url}: wiki unreachable after {attempts} attempts: {message}")]
    Unreachable {
        url: String,
        attempts: u32,
        message: String,
        /// The last refusal asked the crawler to slow down (HTTP 429, `ratelimited`, `maxlag`):
        /// the whole wiki's answer, never one page's.
        throttled: bool,
    },
    /// An HTTP status that retrying will not fix (404: a wrong `api_path`; 401/403).
    #[error("{url}: http status {status}")]
    Status { url: String, status: u16 },
    /// `action=login` refused the credentials (or the account is throttled or blocked).
    #[error("login as {user} failed: {reason}")]
    Login { user: String, reason: String },
    /// The API answered with an error object.
    #[error("api error {code}: {info}")]
    Api { code: String, info: String },
    /// The answer was not what the API documents.
    #[error("{url}: unexpected response: {message}")]
    Invalid { url: String, message: String },
    /// The shutdown token was cancelled while waiting.
    #[error("cancelled")]
    Cancelled,
}

impl ApiError {
    pub fn is_login(&self) -> bool {
        matches!(self, Self::Login { .. })
    }

    /// Whether the wiki kept asking the crawler to slow down ([`ApiError::Unreachable`]'s
    /// `throttled`).
    pub fn is_throttled(&self) -> bool {
        matches!(
            self,
            Self::Unreachable {
                throttled: true,
                ..
            }
        )
    }

    /// The API error code, when the wiki answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// One connector's client for the wiki's `api.php`.
pub struct Api {
    client: reqwest::Client,
    /// Without a cookie store: asks what a reader who is not logged in may do.
    anonymous: reqwest::Client,
    api_url: String,
    maxlag: String,
    credentials: Option<Credentials>,
    permits: Arc<Semaphore>,
    shutdown: CancellationToken,
    /// Whether the cookie store holds a logged-in session.
    logged_in: AtomicBool,
    /// Single-flight login: concurrent requests that find no session wait for one login
    /// instead of each starting their own (held across the login's requests on purpose).
    login_lock: Mutex<()>,
    /// The most bytes read of one answer ([`response_limit`]).
    max_response: usize,
}

/// The most bytes read of one answer for pages of at most `max_page_bytes`: the wiki's own
/// result limit (`$wgAPIMaxResultSize`, 8 MiB by default) and a page's rendering with its JSON
/// escaping, with room to spare; at most [`MAX_RESPONSE_BYTES`] (a review: every answer could
/// be 256 MiB, parsed into a JSON tree many times larger, several at once).
pub fn response_limit(max_page_bytes: u64) -> usize {
    usize::try_from(max_page_bytes)
        .unwrap_or(usize::MAX)
        .saturating_mul(6)
        .saturating_add(32 << 20)
        .min(MAX_RESPONSE_BYTES)
}

/// What one attempt of a request came to.
/// The most an API response may hold (a page's wikitext is capped far lower by the wiki).
const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// Continuations one query may follow: 100,000 rounds of 500 titles list 50 million pages.
pub const MAX_CONTINUATIONS: usize = 100_000;

enum Attempt {
    Done(Value),
    /// Retry after the given delay (the server's `Retry-After`) or after backoff (`None`).
    Retry(Option<Duration>, String),
    /// The wiki asks the crawler to slow down (HTTP 429, `ratelimited`, `maxlag`): retry after
    /// its `Retry-After`, or after [`THROTTLE_WAIT`] at least.
    Throttle(Option<Duration>, String),
    Fail(ApiError),
}

/// The least wait after a "slow down" without `Retry-After` (a review: a 429 without it was
/// retried after the 0.5 s backoff, and after five tries became one page's failure while the
/// sync went on at the same pace to the next page).
pub const THROTTLE_WAIT: Duration = Duration::from_secs(5);

/// The wait before the next attempt: the server's `after` (capped at [`RETRY_AFTER_CAP`]), else
/// the `backoff`; at least [`THROTTLE_WAIT`] when the wiki asked to slow down without saying
/// how long.
fn retry_wait(after: Option<Duration>, backoff: Duration, throttled: bool) -> Duration {
    match after {
        Some(a) => a.min(RETRY_AFTER_CAP),
        None if throttled => backoff.max(THROTTLE_WAIT),
        None => backoff,
    }
}

impl Api {
    pub fn new(cfg: &MediaWikiConfig, shutdown: CancellationToken) -> Result<Self, String> {
        let build = |cookies: bool| {
            reqwest::Client::builder()
                .cookie_store(cookies)
                .user_agent(format!(
                    "Docent-MediaWiki-Connector/{} (connector {})",
                    env!("CARGO_PKG_VERSION"),
                    cfg.id
                ))
                .connect_timeout(cfg.request_timeout.min(Duration::from_secs(10)))
                .timeout(cfg.request_timeout)
                .build()
                .map_err(|e| format!("cannot build the HTTP client: {e}"))
        };
        Ok(Self {
            client: build(true)?,
            anonymous: build(false)?,
            api_url: cfg.api_url.clone(),
            maxlag: cfg.maxlag.to_string(),
            credentials: cfg.credentials.clone(),
            permits: Arc::new(Semaphore::new(cfg.max_concurrent_requests)),
            shutdown,
            logged_in: AtomicBool::new(false),
            login_lock: Mutex::new(()),
            max_response: response_limit(cfg.max_page_bytes),
        })
    }

    /// A read request (GET), logged in first when credentials are configured. A session the
    /// wiki no longer knows is renewed once.
    pub async fn get(&self, params: &[(String, String)]) -> Result<Value, ApiError> {
        self.ensure_login().await?;
        match self.request(false, params).await {
            Err(e) if self.credentials.is_some() && is_session_lost(&e) => {
                tracing::info!(api = %self.api_url, "session lost, logging in again");
                self.logged_in.store(false, Ordering::SeqCst);
                self.ensure_login().await?;
                self.request(false, params).await
            }
            r => r,
        }
    }

    /// [`Self::get`] without the crawler's session: what a reader who is not logged in gets.
    pub async fn get_anonymous(&self, params: &[(String, String)]) -> Result<Value, ApiError> {
        self.request_via(&self.anonymous, false, params).await
    }

    /// Runs a query and follows its continuation (`continue` objects) to the end, handing
    /// each response to `each`. A wiki that gives the same continuation twice, or more than
    /// [`MAX_CONTINUATIONS`], is an error (a review: a broken extension could loop forever, and
    /// the sync would never end).
    pub async fn query_all(
        &self,
        base: Params,
        mut each: impl FnMut(&Value) -> Result<(), ApiError>,
    ) -> Result<(), ApiError> {
        let mut cont: Params = Vec::new();
        // Every continuation given: one given again, even after others, is a loop (a review:
        // only the previous one was compared, so `A, B, A, B…` ran to the limit).
        let mut seen: std::collections::HashSet<Params> = std::collections::HashSet::new();
        for _ in 0..MAX_CONTINUATIONS {
            let mut p = base.clone();
            p.extend(cont.iter().cloned());
            let v = self.get(&p).await?;
            each(&v)?;
            match v.get("continue").and_then(Value::as_object) {
                Some(c) if !c.is_empty() => {
                    let next: Params = c
                        .iter()
                        .map(|(k, v)| {
                            let v = match v {
                                Value::String(s) => s.clone(),
                                other => other.to_string(),
                            };
                            (k.clone(), v)
                        })
                        .collect();
                    if next == cont || !seen.insert(next.clone()) {
                        return Err(ApiError::Invalid {
                            url: self.api_url.clone(),
                            message: "the wiki gave the same continuation twice".into(),
                        });
                    }
                    cont = next;
                }
                _ => return Ok(()),
            }
        }
        Err(ApiError::Invalid {
            url: self.api_url.clone(),
            message: format!("a query went on past {MAX_CONTINUATIONS} continuations"),
        })
    }

    async fn ensure_login(&self) -> Result<(), ApiError> {
        let Some(creds) = &self.credentials else {
            return Ok(());
        };
        if self.logged_in.load(Ordering::SeqCst) {
            return Ok(());
        }
        let _one = tokio::select! {
            _ = self.shutdown.cancelled() => return Err(ApiError::Cancelled),
            g = self.login_lock.lock() => g,
        };
        if self.logged_in.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.login(creds).await?;
        self.logged_in.store(true, Ordering::SeqCst);
        Ok(())
    }

    async fn login(&self, creds: &Credentials) -> Result<(), ApiError> {
        let tokens = self
            .request(
                false,
                &params([("action", "query"), ("meta", "tokens"), ("type", "login")]),
            )
            .await?;
        let token = tokens
            .pointer("/query/tokens/logintoken")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::Invalid {
                url: self.api_url.clone(),
                message: "no login token in meta=tokens".into(),
            })?
            .to_string();
        let answer = self
            .request(
                true,
                &params([
                    ("action", "login"),
                    ("lgname", &creds.username),
                    ("lgpassword", &creds.password),
                    ("lgtoken", &token),
                ]),
            )
            .await?;
        let result = answer
            .pointer("/login/result")
            .and_then(Value::as_str)
            .unwrap_or("");
        if result == "Success" {
            tracing::info!(api = %self.api_url, user = %creds.username, "logged in");
            return Ok(());
        }
        let reason = answer
            .pointer("/login/reason")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| format!("the wiki answered {result:?}"));
        Err(ApiError::Login {
            user: creds.username.clone(),
            reason,
        })
    }

    /// Whether a reader who is not logged in may read the wiki (`meta=userinfo` rights asked
    /// without the crawler's session): what `permissions = "public"` claims.
    pub async fn anonymous_may_read(&self) -> Result<bool, ApiError> {
        let q = params([
            ("action", "query"),
            ("meta", "userinfo"),
            ("uiprop", "rights"),
        ]);
        let v = match self.request_via(&self.anonymous, false, &q).await {
            // A wiki closed to anonymous readers refuses even this question.
            Err(ApiError::Api { code, .. }) if code == "readapidenied" => return Ok(false),
            r => r?,
        };
        let rights = v
            .pointer("/query/userinfo/rights")
            .and_then(Value::as_array)
            .ok_or_else(|| ApiError::Invalid {
                url: self.api_url.clone(),
                message: "meta=userinfo gave no rights".into(),
            })?;
        Ok(rights.iter().any(|r| r.as_str() == Some("read")))
    }

    /// Which of `ids` a reader who is not logged in may read, page by page
    /// (`prop=info&intestactions=read` without the crawler's session, 50 pages a request).
    /// The global `read` right ([`Self::anonymous_may_read`]) does not see per-page or
    /// per-namespace restrictions (Lockdown, AccessControl and other `getUserPermissionsErrors`
    /// hooks); this asks the same permission check the wiki applies to a page view. A page
    /// the answer does not list as readable (missing, invalid, refused) is not readable. A wiki
    /// that answers none of the pages with its `actions` (older than 1.27) or refuses the
    /// question is an error: the check cannot be made.
    pub async fn anonymous_readable(&self, ids: &[u64]) -> Result<BTreeSet<u64>, ApiError> {
        Ok(self.anonymous_answers(ids).await?.0)
    }

    /// Of `ids`, the pages the wiki says a reader who is not logged in may not read (an explicit
    /// `read: false`; a page missing from the answer is not among them).
    pub async fn anonymous_refused(&self, ids: &[u64]) -> Result<BTreeSet<u64>, ApiError> {
        Ok(self.anonymous_answers(ids).await?.1)
    }

    /// (readable, refused) of `ids` for a reader who is not logged in.
    async fn anonymous_answers(
        &self,
        ids: &[u64],
    ) -> Result<(BTreeSet<u64>, BTreeSet<u64>), ApiError> {
        let mut readable = BTreeSet::new();
        let mut refused = BTreeSet::new();
        for batch in ids.chunks(50) {
            let list: Vec<String> = batch.iter().map(u64::to_string).collect();
            let q = params([
                ("action", "query"),
                ("prop", "info"),
                ("intestactions", "read"),
                ("pageids", &list.join("|")),
            ]);
            let v = self.request_via(&self.anonymous, false, &q).await?;
            let pages = v
                .pointer("/query/pages")
                .and_then(Value::as_array)
                .ok_or_else(|| ApiError::Invalid {
                    url: self.api_url.clone(),
                    message: "prop=info&intestactions=read gave no pages".into(),
                })?;
            // Pages deleted since the listing come back `missing`, without `actions`.
            let present = || {
                pages
                    .iter()
                    .filter(|p| p.get("missing").is_none() && p.get("invalid").is_none())
            };
            if present().next().is_some() && present().all(|p| p.get("actions").is_none()) {
                return Err(ApiError::Invalid {
                    url: self.api_url.clone(),
                    message: "the wiki does not answer prop=info&intestactions=read (MediaWiki \
                              1.27 or later does): pages cannot be checked one by one"
                        .into(),
                });
            }
            for p in pages {
                let (Some(read), Some(id)) = (
                    p.pointer("/actions/read").and_then(Value::as_bool),
                    p.get("pageid").and_then(Value::as_u64),
                ) else {
                    continue;
                };
                match read {
                    true => readable.insert(id),
                    false => refused.insert(id),
                };
            }
        }
        Ok((readable, refused))
    }

    /// One request with its retries. `post`: a form POST (login), else a GET.
    async fn request(&self, post: bool, params: &[(String, String)]) -> Result<Value, ApiError> {
        self.request_via(&self.client, post, params).await
    }

    /// [`Self::request`] through `client`.
    async fn request_via(
        &self,
        client: &reqwest::Client,
        post: bool,
        params: &[(String, String)],
    ) -> Result<Value, ApiError> {
        let mut all: Params = params.to_vec();
        all.extend(crate::api::params([
            ("format", "json"),
            ("formatversion", "2"),
            ("maxlag", &self.maxlag),
        ]));
        let action = params
            .iter()
            .find(|(k, _)| k == "action")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        let session = std::ptr::eq(client, &self.client);
        if session
            && self.credentials.is_some()
            && action != "login"
            && !is_login_token_request(params)
        {
            all.push(("assert".into(), "user".into()));
        }
        let mut backoff = BACKOFF_START;
        let mut last = String::new();
        let mut throttled = false;
        for attempt in 1..=ATTEMPTS {
            let (after, why, slow_down) = match self.attempt(client, post, &all).await {
                Attempt::Done(v) => return Ok(v),
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry(after, why) => (after, why, false),
                Attempt::Throttle(after, why) => (after, why, true),
            };
            tracing::debug!(api = %self.api_url, attempt, reason = %docent_connector_api::log_safe(&why), "request failed, retrying");
            last = why;
            throttled = slow_down;
            let wait = retry_wait(after, backoff, slow_down);
            backoff = (backoff * 2).min(BACKOFF_CAP);
            if attempt < ATTEMPTS {
                self.sleep(wait).await?;
            }
        }
        Err(ApiError::Unreachable {
            url: self.api_url.clone(),
            attempts: ATTEMPTS,
            message: last,
            throttled,
        })
    }

    async fn attempt(
        &self,
        client: &reqwest::Client,
        post: bool,
        params: &[(String, String)],
    ) -> Attempt {
        let _permit = tokio::select! {
            _ = self.shutdown.cancelled() => return Attempt::Fail(ApiError::Cancelled),
            p = self.permits.acquire() => match p {
                Ok(p) => p,
                Err(_) => return Attempt::Fail(ApiError::Cancelled),
            },
        };
        let req = if post {
            client.post(&self.api_url).form(params)
        } else {
            client.get(&self.api_url).query(params)
        };
        let exchange = async {
            let resp = req.send().await?;
            let status = resp.status();
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                // Seconds; an HTTP-date (rare for APIs) falls back to backoff.
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            // Read in pieces up to a bound: a hostile or broken wiki cannot fill the memory.
            let mut resp = resp;
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await? {
                if body.len() + chunk.len() > self.max_response {
                    return Ok(Err(body.len() + chunk.len()));
                }
                body.extend_from_slice(&chunk);
            }
            Ok::<_, reqwest::Error>(Ok((status, retry_after, body)))
        };
        let (status, retry_after, body) = tokio::select! {
            _ = self.shutdown.cancelled() => return Attempt::Fail(ApiError::Cancelled),
            r = exchange => match r {
                Ok(Ok(x)) => x,
                Ok(Err(_)) => {
                    return Attempt::Fail(ApiError::Invalid {
                        url: self.api_url.clone(),
                        message: format!("response larger than {} bytes", self.max_response),
                    });
                }
                Err(e) => return Attempt::Retry(None, describe_reqwest(&e)),
            },
        };
        if status.as_u16() == 429 {
            return Attempt::Throttle(retry_after, "http status 429".into());
        }
        if status.as_u16() == 503 {
            return Attempt::Retry(retry_after, "http status 503".into());
        }
        if status.is_server_error() {
            return Attempt::Retry(None, format!("http status {}", status.as_u16()));
        }
        if !status.is_success() {
            return Attempt::Fail(ApiError::Status {
                url: self.api_url.clone(),
                status: status.as_u16(),
            });
        }
        let v: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            // A PHP fatal error or a proxy's page; may pass.
            Err(e) => return Attempt::Retry(None, format!("response is not JSON: {e}")),
        };
        if let Some(err) = v.get("error") {
            let code = err.get("code").and_then(Value::as_str).unwrap_or("unknown");
            let info = err
                .get("info")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            return match code {
                // The wiki asks us to slow down; these pass.
                "maxlag" | "ratelimited" => {
                    Attempt::Throttle(retry_after, format!("{code}: {info}"))
                }
                "readonly"
                | "internal_api_error_DBQueryError"
                | "internal_api_error_DBConnectionError" => {
                    Attempt::Retry(retry_after, format!("{code}: {info}"))
                }
                _ => Attempt::Fail(ApiError::Api {
                    code: code.to_string(),
                    info,
                }),
            };
        }
        Attempt::Done(v)
    }

    async fn sleep(&self, d: Duration) -> Result<(), ApiError> {
        tokio::select! {
            _ = self.shutdown.cancelled() => Err(ApiError::Cancelled),
            _ = tokio::time::sleep(d) => Ok(()),
        }
    }
}

fn is_login_token_request(params: &[(String, String)]) -> bool {
    params.iter().any(|(k, v)| k == "type" && v == "login")
}

fn is_session_lost(e: &ApiError) -> bool {
    matches!(e.code(), Some("assertuserfailed" | "assertnameduserfailed"))
}

fn describe_reqwest(e: &reqwest::Error) -> String {
    use std::error::Error;
    // reqwest's own message is generic ("error sending request"); the cause says why. Its
    // " for url (…)" goes: a GET's query names pages (a continuation is a page title), and this
    // text reaches the log and the admin's alarms (a review).
    let mut s = e.to_string();
    if let Some(at) = s.find(" for url (") {
        s.truncate(at);
    }
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Unix seconds of a MediaWiki ISO 8601 UTC timestamp (`2024-05-01T12:00:00Z`).
pub fn parse_timestamp(ts: &str) -> Option<i64> {
    let b = ts.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| ts.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3_600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An [`Api`] for a public wiki at `url` (a stand-in server of a test).
    fn stand_in_api(url: &str) -> Api {
        let table: toml::Table = format!("url = \"{url}\"\npermissions = \"public\"")
            .parse()
            .unwrap();
        let env = docent_connector_api::registry::ConfigEnv {
            id: "wiki".into(),
            base_dir: ".".into(),
            max_document_bytes: 1 << 20,
            max_text_bytes: 1 << 20,
            parse_timeout: Duration::from_secs(5),
            parse_memory_bytes: 2 << 30,
        };
        let cfg = crate::config::MediaWikiConfig::from_table(table, &env).unwrap();
        Api::new(&cfg, CancellationToken::new()).unwrap()
    }

    /// A stand-in wiki (the real one cannot be made to send this) whose every answer claims
    /// 300 MiB and streams zeros: the connector stops at its cap with an error.
    #[tokio::test]
    async fn a_response_over_the_cap_is_an_error_not_a_full_memory() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = sock.read(&mut buf).await;
                    let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                                content-length: 314572800\r\n\r\n";
                    if sock.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let zeros = vec![b' '; 1 << 20];
                    for _ in 0..300 {
                        if sock.write_all(&zeros).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let api = stand_in_api(&url);
        let err = api
            .get(&[("action".into(), "query".into())])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ApiError::Invalid { message, .. } if message.contains("larger than")),
            "{err:?}"
        );
        // The bound follows the pages taken, within the hard one.
        assert_eq!(response_limit(1 << 20), (6 << 20) + (32 << 20));
        assert_eq!(response_limit(u64::MAX), MAX_RESPONSE_BYTES);
    }

    /// A stand-in wiki (a broken extension on a real one) that answers every query with the
    /// same continuation: the query ends with an error instead of looping forever (found by a
    /// review).
    #[tokio::test]
    async fn a_continuation_given_twice_is_an_error_not_an_endless_query() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = served.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 8192];
                    while let Ok(n) = sock.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        // Alternating `A`, `B`, `A`, … (a second review: only a continuation
                        // repeated back to back was caught).
                        let body = if n.is_multiple_of(2) {
                            r#"{"continue":{"apcontinue":"A","continue":"-||"},"query":{"allpages":[]}}"#
                        } else {
                            r#"{"continue":{"apcontinue":"B","continue":"-||"},"query":{"allpages":[]}}"#
                        };
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                            body.len()
                        );
                        if sock.write_all(head.as_bytes()).await.is_err()
                            || sock.write_all(body.as_bytes()).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        let api = stand_in_api(&url);
        let mut rounds = 0;
        let err = api
            .query_all(
                vec![
                    ("action".into(), "query".into()),
                    ("list".into(), "allpages".into()),
                ],
                |_| {
                    rounds += 1;
                    Ok(())
                },
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ApiError::Invalid { message, .. } if message.contains("same continuation")),
            "{err:?}"
        );
        assert_eq!(rounds, 3);
        assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    /// A stand-in wiki answering every request with `status` and `Retry-After: 0`.
    async fn refusing_wiki(status: u16) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 8192];
                    while let Ok(n) = sock.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        let head = format!(
                            "HTTP/1.1 {status} No\r\nretry-after: 0\r\ncontent-length: 0\r\n\r\n"
                        );
                        if sock.write_all(head.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        url
    }

    /// A wiki that keeps answering 429 ends in an error that says it asked to slow down (the
    /// sync then stops instead of failing page after page); a 503 does not.
    #[tokio::test]
    async fn a_wiki_that_keeps_refusing_with_429_is_throttling_not_failing_a_page() {
        let query = [("action".to_string(), "query".to_string())];
        let err = stand_in_api(&refusing_wiki(429).await)
            .get(&query)
            .await
            .unwrap_err();
        assert!(err.is_throttled(), "{err:?}");
        let err = stand_in_api(&refusing_wiki(503).await)
            .get(&query)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                ApiError::Unreachable {
                    throttled: false,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    /// A "slow down" without `Retry-After` waits [`THROTTLE_WAIT`] at least, not the first
    /// half-second backoff; the server's own wait is honoured, capped.
    #[test]
    fn a_slow_down_without_retry_after_waits_the_throttle_wait() {
        assert_eq!(retry_wait(None, BACKOFF_START, true), THROTTLE_WAIT);
        assert_eq!(
            retry_wait(None, Duration::from_secs(16), true),
            Duration::from_secs(16)
        );
        assert_eq!(retry_wait(None, BACKOFF_START, false), BACKOFF_START);
        assert_eq!(
            retry_wait(Some(Duration::ZERO), BACKOFF_START, true),
            Duration::ZERO
        );
        assert_eq!(
            retry_wait(Some(Duration::from_secs(3600)), BACKOFF_START, false),
            RETRY_AFTER_CAP
        );
    }

    #[test]
    fn timestamps_parse_to_unix_seconds() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_timestamp("2000-03-01T00:00:00Z"), Some(951_868_800));
        assert_eq!(parse_timestamp("2026-12-01T19:29:13Z"), Some(1_796_153_353));
        assert_eq!(parse_timestamp("2026-12-01 19:29:13"), None);
        assert_eq!(parse_timestamp("2026-13-01T19:29:13Z"), None);
    }
}
