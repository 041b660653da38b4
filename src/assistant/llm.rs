//! The LLM answerer: any OpenAI-compatible chat-completions server (llama.cpp, vLLM, Ollama,
//! OpenAI itself), streamed over SSE.
//!
//! The model sees numbered passages and is asked to cite them with `[n]` markers. Nothing it
//! writes is trusted: each sentence goes through the pipeline's verifier (markers, grounding,
//! ACL recheck, PII) before it is sent. The client enforces a connect timeout, a first-token
//! timeout and a total timeout, and a concurrency limit (a request that cannot get a slot
//! within the first-token timeout is answered extractively instead).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use super::verify::{Draft, ResponseScope, SentenceSplitter};
use super::{AnswerError, Answerer, DraftSink, Question, Usage};
use crate::retrieve::Hit;

/// `[llm]` in the config. Its `Debug` shows no API key.
#[derive(Clone)]
pub struct LlmConfig {
    /// Up to and including the version segment: `http://127.0.0.1:8088/v1`; requests go to
    /// `{base_url}/chat/completions`.
    pub base_url: String,
    pub model: String,
    pub api_key: Option<String>,
    /// A PEM CA bundle trusted in addition to the system roots (https servers).
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub first_token_timeout: Duration,
    pub total_timeout: Duration,
    pub max_tokens: u32,
    pub temperature: f32,
    /// Prompt budget in tokens (estimated as bytes / 4): passages are packed by rank until full.
    pub context_tokens: usize,
    pub max_concurrent: usize,
    /// SSE streaming (the default); false waits for the whole completion.
    pub stream: bool,
    pub price_prompt_per_1k: f64,
    pub price_completion_per_1k: f64,
    pub currency: String,
}

impl std::fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .field("max_tokens", &self.max_tokens)
            .field("max_concurrent", &self.max_concurrent)
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            base_url: String::new(),
            model: String::new(),
            api_key: None,
            ca_file: None,
            connect_timeout: Duration::from_secs(2),
            first_token_timeout: Duration::from_secs(10),
            total_timeout: Duration::from_secs(60),
            max_tokens: 256,
            temperature: 0.0,
            context_tokens: 2048,
            max_concurrent: 4,
            stream: true,
            price_prompt_per_1k: 0.0,
            price_completion_per_1k: 0.0,
            currency: "USD".into(),
        }
    }
}

/// Why a model call failed; each maps to a fallback reason code.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("the LLM server is unreachable: {0}")]
    Unavailable(String),
    #[error("the LLM server did not answer in time ({0})")]
    Timeout(&'static str),
    #[error("the LLM server failed: {0}")]
    Failed(String),
    #[error("the LLM server's response is malformed: {0}")]
    Malformed(String),
    /// The server accepted the request and its stream then broke (a transport error, an error
    /// event): it may have read the prompt and written.
    #[error("the LLM server's answer broke off: {0}")]
    Broken(String),
    #[error("all LLM slots are busy")]
    Busy,
}

impl LlmError {
    /// Whether the server may have spent tokens on the request before it failed: it was
    /// reading the prompt or generating (a timeout, a stream cut or broken mid-way), unlike a
    /// refused connection, an error status or a request Docent never sent.
    pub fn may_have_generated(&self) -> bool {
        match self {
            Self::Timeout(stage) => *stage != "connect",
            Self::Malformed(_) | Self::Broken(_) => true,
            Self::Unavailable(_) | Self::Failed(_) | Self::Busy => false,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "LLM_UNAVAILABLE",
            Self::Timeout(_) => "LLM_TIMEOUT",
            Self::Failed(_) | Self::Malformed(_) | Self::Broken(_) => "LLM_ERROR",
            Self::Busy => "LLM_BUSY",
        }
    }
}

/// Rough token count of text for servers that report no usage: bytes / 4, rounded up.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

pub struct LlmClient {
    http: reqwest::Client,
    cfg: LlmConfig,
    slots: tokio::sync::Semaphore,
}

/// A server's JSON error for the log: its strings, decoded (an escaped echo of the prompt is
/// compared as the prompt reads), through [`unquoted`].
fn for_log(error: &Value, messages: &[Message]) -> String {
    fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::String(s) => out.push(s),
            Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
            Value::Object(o) => o.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    let mut parts = Vec::new();
    strings(error, &mut parts);
    cut(unquoted(parts.join(" | "), messages))
}

/// The first 200 characters, cut after the quote check (a cut first could leave a quote too
/// short to be recognised at its end).
fn cut(message: String) -> String {
    message.chars().take(200).collect()
}

/// A server's error message for the log, unless it quotes the prompt (some servers echo the
/// request): the prompt holds passages, which no log line may show.
fn unquoted(message: String, messages: &[Message]) -> String {
    const WINDOW: usize = 16;
    let chars: Vec<(usize, char)> = message.char_indices().collect();
    let quotes = chars.windows(WINDOW).any(|w| {
        let (start, end) = (w[0].0, w[WINDOW - 1].0 + w[WINDOW - 1].1.len_utf8());
        let piece = &message[start..end];
        messages.iter().any(|m| m.content.contains(piece))
    });
    if quotes {
        "(the server's message quotes the prompt; left out of the log)".into()
    } else {
        message
    }
}

/// One chat message.
#[derive(Debug, Clone)]
pub struct Message {
    pub role: &'static str,
    pub content: String,
}

impl LlmClient {
    pub fn new(cfg: LlmConfig) -> Result<Self, String> {
        let mut b = reqwest::Client::builder()
            // A redirect would send the prompt, passages and all, wherever it points (plain
            // http to another host included): the configured server answers, or the call fails.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(cfg.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true);
        if let Some(path) = &cfg.ca_file {
            let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            b = b.add_root_certificate(cert);
        }
        let http = b.build().map_err(|e| e.to_string())?;
        Ok(Self {
            slots: tokio::sync::Semaphore::new(cfg.max_concurrent.max(1)),
            http,
            cfg,
        })
    }

    pub fn config(&self) -> &LlmConfig {
        &self.cfg
    }

    /// Runs a chat completion, calling `on_text` with each piece of generated text as it
    /// arrives (it returns false to stop early). Returns the usage (the server's, else counted).
    pub async fn chat(
        &self,
        messages: &[Message],
        max_tokens: u32,
        on_text: &mut (dyn FnMut(&str) -> bool + Send),
    ) -> Result<Usage, LlmError> {
        Ok(self.chat_ending(messages, max_tokens, on_text).await?.0)
    }

    /// [`Self::chat`], and whether the text was cut short by the token limit (the server's
    /// `finish_reason: "length"`, or Docent's own cut past `max_tokens`): its last words may
    /// end mid-sentence.
    pub async fn chat_ending(
        &self,
        messages: &[Message],
        max_tokens: u32,
        on_text: &mut (dyn FnMut(&str) -> bool + Send),
    ) -> Result<(Usage, bool), LlmError> {
        let start = Instant::now();
        let first_deadline = start + self.cfg.first_token_timeout;
        let total_deadline = start + self.cfg.total_timeout;
        let _slot = tokio::time::timeout(self.cfg.first_token_timeout, self.slots.acquire())
            .await
            .map_err(|_| LlmError::Busy)?
            .map_err(|_| LlmError::Busy)?;
        let body = json!({
            "model": self.cfg.model,
            "messages": messages.iter().map(|m| json!({"role": m.role, "content": m.content})).collect::<Vec<_>>(),
            "max_tokens": max_tokens,
            "temperature": self.cfg.temperature,
            "stream": self.cfg.stream,
        });
        let url = format!(
            "{}/chat/completions",
            self.cfg.base_url.trim_end_matches('/')
        );
        let mut req = self.http.post(&url).json(&body);
        if let Some(k) = &self.cfg.api_key {
            req = req.bearer_auth(k);
        }
        // A server that does not stream sends its headers with the whole completion.
        let (answer_by, waited_for) = if self.cfg.stream {
            (first_deadline, "first token")
        } else {
            (total_deadline, "total")
        };
        let resp = tokio::time::timeout_at(answer_by.into(), req.send())
            .await
            .map_err(|_| LlmError::Timeout(waited_for))?
            .map_err(|e| {
                if e.is_connect() {
                    LlmError::Unavailable(e.to_string())
                } else if e.is_timeout() {
                    LlmError::Timeout("connect")
                } else {
                    LlmError::Failed(e.to_string())
                }
            })?;
        let status = resp.status();
        // What a server may send, whatever it was asked: it could ignore `max_tokens`.
        let max_text = (max_tokens as usize).saturating_mul(16).max(64 << 10);
        if !status.is_success() {
            let text = tokio::time::timeout_at(total_deadline.into(), read_capped(resp, 4 << 10))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&text);
            let text = match serde_json::from_str::<Value>(&text) {
                Ok(v) => for_log(&v, messages),
                Err(_) => cut(unquoted(text.into_owned(), messages)),
            };
            return Err(LlmError::Failed(format!("HTTP {status}: {text}")));
        }
        let prompt_estimate: u64 = messages.iter().map(|m| estimate_tokens(&m.content)).sum();
        let prompt_bytes: u64 = messages.iter().map(|m| m.content.len() as u64).sum();
        let usage_of = |v: &Value| usage_of(v).map(|u| plausible(u, prompt_bytes, max_tokens));
        if !self.cfg.stream {
            let bytes = tokio::time::timeout_at(
                total_deadline.into(),
                read_capped(resp, max_text.saturating_mul(2)),
            )
            .await
            .map_err(|_| LlmError::Timeout("total"))??;
            let v: Value =
                serde_json::from_slice(&bytes).map_err(|e| LlmError::Malformed(e.to_string()))?;
            let text = v["choices"][0]["message"]["content"]
                .as_str()
                .ok_or_else(|| LlmError::Malformed("no choices[0].message.content".into()))?;
            on_text(text);
            let truncated = v["choices"][0]["finish_reason"] == "length";
            let usage = usage_of(&v).unwrap_or(Usage {
                prompt: prompt_estimate,
                completion: estimate_tokens(text),
                estimated: true,
            });
            return Ok((usage, truncated));
        }
        let mut body = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        let mut pieces = 0u64;
        let mut streamed = 0usize;
        let mut usage = None;
        let mut got_first = false;
        let mut truncated = false;
        let counted = |usage: Option<Usage>, pieces: u64| {
            usage.unwrap_or(Usage {
                prompt: prompt_estimate,
                completion: pieces,
                estimated: true,
            })
        };
        loop {
            let deadline = if got_first {
                total_deadline
            } else {
                first_deadline.min(total_deadline)
            };
            // A server that never pauses never lets the timeout below fire: check it here.
            if std::time::Instant::now() >= deadline {
                return Err(LlmError::Timeout(if got_first {
                    "total"
                } else {
                    "first token"
                }));
            }
            let next = tokio::time::timeout_at(deadline.into(), body.next())
                .await
                .map_err(|_| LlmError::Timeout(if got_first { "total" } else { "first token" }))?;
            let Some(chunk) = next else {
                return Err(LlmError::Malformed("the stream ended before [DONE]".into()));
            };
            let chunk = chunk.map_err(|e| LlmError::Broken(e.to_string()))?;
            buf.extend_from_slice(&chunk);
            // The lines are read in place and the buffer shifted once per chunk (shifting it
            // per line made a chunk of many short lines cost its square).
            let mut start = 0;
            while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
                let line = &buf[start..start + nl + 1];
                start += nl + 1;
                let line = std::str::from_utf8(line)
                    .map_err(|_| LlmError::Malformed("an SSE line is not UTF-8".into()))?
                    .trim_end_matches(['\r', '\n']);
                let Some(data) = line.strip_prefix("data:") else {
                    continue; // blank lines, comments, `event:` and `id:` fields
                };
                let data = data.trim_start();
                if data == "[DONE]" {
                    return Ok((counted(usage, pieces), truncated));
                }
                let v: Value = serde_json::from_str(data)
                    .map_err(|e| LlmError::Malformed(format!("an SSE event is not JSON: {e}")))?;
                if let Some(err) = v.get("error") {
                    return Err(LlmError::Broken(for_log(err, messages)));
                }
                if let Some(u) = usage_of(&v) {
                    usage = Some(u);
                }
                truncated |= v["choices"][0]["finish_reason"] == "length";
                if let Some(text) = v["choices"][0]["delta"]["content"].as_str()
                    && !text.is_empty()
                {
                    got_first = true;
                    pieces += 1;
                    streamed = streamed.saturating_add(text.len());
                    // Past what `max_tokens` allows: the server ignores it; stop reading.
                    if streamed > max_text {
                        tracing::warn!(bytes = streamed, "the LLM wrote past max_tokens; cut");
                        return Ok((counted(usage, pieces), true));
                    }
                    if !on_text(text) {
                        return Ok((counted(usage, pieces), false));
                    }
                }
            }
            buf.drain(..start);
            if buf.len() > 1 << 20 {
                return Err(LlmError::Malformed("an SSE line is over 1 MiB".into()));
            }
        }
    }
}

/// The response body, or an error once it passes `cap` bytes.
async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, LlmError> {
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| LlmError::Broken(e.to_string()))?
    {
        if out.len() + chunk.len() > cap {
            return Err(LlmError::Malformed(format!(
                "the response is larger than {cap} bytes"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A server's reported usage, bounded by what the call could have used: every prompt token
/// holds at least one byte of the messages (the chat template adds a few of its own), and the
/// completion is at most twice what was asked (a server may overrun `max_tokens` a little; one
/// that ignores it is cut off). A count past those is the server's error, and would spend a
/// day's budget (or, wrapping, reset it).
fn plausible(u: Usage, prompt_bytes: u64, max_tokens: u32) -> Usage {
    Usage {
        prompt: u.prompt.min(prompt_bytes.saturating_add(TEMPLATE_TOKENS)),
        completion: u.completion.min(u64::from(max_tokens).saturating_mul(2)),
        estimated: u.estimated,
    }
}

/// Tokens a chat template may add to the messages' own.
const TEMPLATE_TOKENS: u64 = 1024;

fn usage_of(v: &Value) -> Option<Usage> {
    let u = v.get("usage")?;
    Some(Usage {
        prompt: u.get("prompt_tokens")?.as_u64()?,
        completion: u.get("completion_tokens")?.as_u64()?,
        estimated: false,
    })
}

const SYSTEM_PROMPT: &str = "You answer questions for employees using only the numbered passages \
you are given. After each sentence, cite the passage that supports it with its number in square \
brackets, like [1]. Use the passages' own words where you can. Answer in at most three short \
sentences. If the passages do not answer the question, reply exactly: I don't know.";

const SYSTEM_PROMPT_GENERAL: &str = "You answer questions for employees. Prefer the numbered \
passages you are given: after each sentence taken from them, cite the passage with its number in \
square brackets, like [1]. You may add general knowledge, without a citation. Answer in at most \
three short sentences.";

/// Passages packed into the prompt by rank until `budget` tokens (estimated) are used; the first
/// is always included, cut to the budget when it alone is larger.
pub fn pack(passages: &[Hit], budget: usize) -> Vec<String> {
    let mut used = 0usize;
    let mut out = Vec::new();
    for (i, h) in passages.iter().enumerate() {
        let title = if h.chunk.title.is_empty() {
            String::new()
        } else {
            format!("({}) ", h.chunk.title)
        };
        let mut text = format!(
            "[{}] {}{}",
            i + 1,
            title,
            crate::parse::collapse_ws(&h.chunk.text)
        );
        let cost = estimate_tokens(&text) as usize + 2;
        if used + cost > budget {
            if !out.is_empty() {
                break;
            }
            let mut end = budget.saturating_mul(4).min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        used += cost;
        out.push(text);
    }
    out
}

pub struct LlmAnswerer {
    pub client: std::sync::Arc<LlmClient>,
}

impl LlmAnswerer {
    fn messages(&self, q: &Question<'_>, packed: &[String]) -> Vec<Message> {
        let system = match q.response_scope {
            ResponseScope::EnterpriseOnly => SYSTEM_PROMPT,
            ResponseScope::AllowGeneralKnowledge => SYSTEM_PROMPT_GENERAL,
        };
        let mut user = String::from("Passages:\n");
        for p in packed {
            user.push_str(p);
            user.push_str("\n\n");
        }
        user.push_str("Question: ");
        user.push_str(q.text);
        vec![
            Message {
                role: "system",
                content: system.into(),
            },
            Message {
                role: "user",
                content: user,
            },
        ]
    }

    /// The messages for `q` over `passages`, packed into the prompt budget.
    fn prompt(&self, q: &Question<'_>, passages: &[Hit]) -> Vec<Message> {
        self.messages(q, &pack(passages, self.budget_for(q)))
    }

    /// The passages' share of the prompt for `q`: the question is in the prompt too.
    fn budget_for(&self, q: &Question<'_>) -> usize {
        self.budget()
            .saturating_sub(estimate_tokens(q.text) as usize)
            .max(64)
    }

    /// The prompt's tokens, estimated (for a call abandoned before the server said).
    pub fn prompt_tokens(&self, q: &Question<'_>, passages: &[Hit]) -> u64 {
        self.prompt(q, passages)
            .iter()
            .map(|m| estimate_tokens(&m.content))
            .sum()
    }

    /// How many of the passages fit the prompt budget.
    fn budget(&self) -> usize {
        let c = &self.client.cfg;
        c.context_tokens
            .saturating_sub(c.max_tokens as usize)
            .saturating_sub(prompt_overhead_tokens())
            .max(64)
    }
}

#[tonic::async_trait]
impl Answerer for LlmAnswerer {
    fn name(&self) -> &'static str {
        "generative"
    }

    fn passages(&self, q: &Question<'_>, evidence: &[Hit]) -> usize {
        pack(evidence, self.budget_for(q)).len()
    }

    async fn answer(
        &self,
        q: &Question<'_>,
        passages: &[Hit],
        sink: &mut (dyn DraftSink + Send),
    ) -> Result<Usage, AnswerError> {
        let messages = self.prompt(q, passages);
        let mut splitter = SentenceSplitter::default();
        let mut stop = false;
        let mut on_text = |t: &str| {
            if sink.gone() {
                stop = true;
                return false;
            }
            for d in splitter.push(t) {
                if !sink.draft(d) {
                    stop = true;
                }
            }
            !stop
        };
        let (usage, truncated) = self
            .client
            .chat_ending(&messages, self.client.cfg.max_tokens, &mut on_text)
            .await
            .map_err(AnswerError::Llm)?;
        // The words after the last full sentence: a sentence of its own, unless the token
        // limit cut them off mid-sentence (a fragment copied from a passage would pass the
        // grounding check while saying something the passage does not).
        if !stop && let Some(d) = splitter.finish_cut(truncated) {
            sink.draft(d);
        }
        Ok(usage)
    }
}

/// The standalone form of a follow-up question, written by the model from the earlier questions.
pub async fn rewrite(
    client: &LlmClient,
    earlier: &[String],
    question: &str,
) -> Result<(String, Usage), LlmError> {
    let messages = rewrite_messages(earlier, question);
    let mut out = String::new();
    let mut on_text = |t: &str| {
        out.push_str(t);
        out.len() < 1024
    };
    let usage = client
        .chat(&messages, REWRITE_MAX_TOKENS, &mut on_text)
        .await?;
    let r = crate::parse::collapse_ws(out.lines().next().unwrap_or("").trim());
    Ok((r, usage))
}

/// An estimate of the prompt tokens of [`rewrite`]'s call.
pub fn rewrite_prompt_tokens(earlier: &[String], question: &str) -> u64 {
    rewrite_messages(earlier, question)
        .iter()
        .map(|m| estimate_tokens(&m.content))
        .sum()
}

fn rewrite_messages(earlier: &[String], question: &str) -> [Message; 2] {
    let mut user = String::from("Earlier questions:\n");
    for q in earlier {
        user.push_str("- ");
        user.push_str(q);
        user.push('\n');
    }
    user.push_str("Follow-up question: ");
    user.push_str(question);
    user.push_str(
        "\nRewrite the follow-up as one standalone question. Reply with the question only.",
    );
    [
        Message {
            role: "system",
            content: "You rewrite follow-up questions into standalone questions.".into(),
        },
        Message {
            role: "user",
            content: user,
        },
    ]
}

/// The tokens of a prompt that are not passages (the system prompt and the question's frame).
pub fn prompt_overhead_tokens() -> usize {
    estimate_tokens(SYSTEM_PROMPT_GENERAL) as usize + 64
}

/// The fewest tokens of passages a configured context must leave room for.
pub const MIN_PASSAGE_TOKENS: usize = 256;

/// Longest rewrite the model may write.
pub const REWRITE_MAX_TOKENS: u32 = 64;

/// Tokens held for a follow-up's rewrite against the caller's budget (an estimate at bytes / 4:
/// the three earlier questions and the question, each at most `MAX_QUESTION_BYTES`, the
/// instructions and the completion). It held one question's worth before, so a rewrite could
/// spend four times what it held.
pub const REWRITE_TOKENS: u64 =
    (4 * crate::guardrail::MAX_QUESTION_BYTES / 4) as u64 + 128 + REWRITE_MAX_TOKENS as u64;

/// Drafts a whole text at once (non-streamed answers, tests).
pub fn drafts(text: &str) -> Vec<Draft> {
    let mut s = SentenceSplitter::default();
    let mut out = s.push(text);
    out.extend(s.finish());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Session 42's review: `{:?}` of the config printed the API key.
    #[test]
    fn the_api_key_is_not_in_debug_output() {
        let c = LlmConfig {
            api_key: Some("sk-s3cret".into()),
            ..Default::default()
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("<redacted>"),
            "{shown}"
        );
    }

    /// Session 34's review: a reported count was trusted as is; one near `u64::MAX` wrapped the
    /// day's counter (a budget reset) or spent every budget it counted against.
    #[test]
    fn reported_usage_is_bounded_by_what_the_call_could_use() {
        let u = |prompt, completion| Usage {
            prompt,
            completion,
            estimated: false,
        };
        assert_eq!(plausible(u(900, 100), 4_000, 256), u(900, 100));
        assert_eq!(
            plausible(u(u64::MAX, u64::MAX - 5), 4_000, 256),
            u(4_000 + TEMPLATE_TOKENS, 512)
        );
    }

    /// Session 34's review: the client followed redirects, re-posting the prompt (the caller's
    /// passages) to whatever host a redirect named, over plain http too.
    #[tokio::test]
    async fn a_redirect_is_not_followed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = elsewhere.local_addr().unwrap();
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = server.accept().await {
                let mut buf = vec![0u8; 64 << 10];
                let _ = c.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{target}/v1/chat/completions\r\n\
                     Content-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = c.write_all(reply.as_bytes()).await;
            }
        });
        let client = LlmClient::new(LlmConfig {
            base_url: format!("http://{addr}/v1"),
            ..LlmConfig::default()
        })
        .unwrap();
        let messages = [Message {
            role: "user",
            content: "the passages".into(),
        }];
        let r = client.chat(&messages, 16, &mut |_| true).await;
        assert!(
            matches!(r, Err(LlmError::Failed(ref m)) if m.contains("307")),
            "{r:?}"
        );
        // Nothing reached the other host.
        let reached =
            tokio::time::timeout(std::time::Duration::from_millis(300), elsewhere.accept()).await;
        assert!(reached.is_err(), "the redirect was followed");
    }

    /// A server streaming events split anywhere across chunks, with many comment lines in
    /// one chunk (read in place: shifting the buffer per line made such a chunk cost its
    /// square), gives back exactly its pieces.
    #[tokio::test]
    async fn server_sent_events_split_anywhere_read_back_whole() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let event = |t: &str| {
            format!(
                "data: {}\n\n",
                json!({"choices": [{"delta": {"content": t}}]})
            )
        };
        let mut body = ": ping\n".repeat(20_000);
        body.push_str(&event("Hel"));
        body.push_str(&event("lo."));
        body.push_str("data: [DONE]\n\n");
        tokio::spawn(async move {
            let (mut c, _) = server.accept().await.unwrap();
            let mut buf = vec![0u8; 64 << 10];
            let _ = c.read(&mut buf).await;
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                        Connection: close\r\n\r\n";
            c.write_all(head.as_bytes()).await.unwrap();
            // Cut in uneven pieces, through lines and through the events.
            for piece in body.as_bytes().chunks(70_001) {
                c.write_all(piece).await.unwrap();
                c.flush().await.unwrap();
            }
        });
        let client = LlmClient::new(LlmConfig {
            base_url: format!("http://{addr}/v1"),
            stream: true,
            ..LlmConfig::default()
        })
        .unwrap();
        let messages = [Message {
            role: "user",
            content: "q".into(),
        }];
        let mut text = String::new();
        let r = client
            .chat(&messages, 16, &mut |t| {
                text.push_str(t);
                true
            })
            .await;
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(text, "Hello.");
    }

    /// The model is given exactly the passages the verifier accepts citations to: a long
    /// question leaves less room for passages (found by a review: the count ignored the
    /// question, so citations to passages the model never read were accepted).
    #[test]
    fn the_passages_counted_are_the_passages_in_the_prompt() {
        let g = LlmAnswerer {
            client: std::sync::Arc::new(
                LlmClient::new(LlmConfig {
                    base_url: "http://127.0.0.1:9/v1".into(),
                    context_tokens: 600,
                    max_tokens: 64,
                    ..LlmConfig::default()
                })
                .unwrap(),
            ),
        };
        let evidence: Vec<Hit> = (0..3)
            .map(|i| {
                crate::retrieve::test_hit(
                    &format!("doc{i}"),
                    &format!("Passage {i} about the travel policy. ").repeat(11),
                    0.9,
                )
            })
            .collect();
        let scope = crate::acl::AclScope::for_tests("alice", &["everyone"]);
        let mut counts = Vec::new();
        for question in [
            "Who approves travel?".to_string(),
            "Who approves travel? ".repeat(40),
        ] {
            let q = Question {
                text: &question,
                response_scope: ResponseScope::EnterpriseOnly,
                scope: &scope,
            };
            let prompt = &g.prompt(&q, &evidence)[1].content;
            let given = (1..=evidence.len())
                .filter(|k| prompt.contains(&format!("[{k}] ")))
                .count();
            assert_eq!(g.passages(&q, &evidence), given, "{} bytes", question.len());
            counts.push(given);
        }
        // The long question leaves room for fewer passages: the count follows the question.
        assert!(counts[1] < counts[0], "{counts:?}");
    }

    /// Found by a review: a full stop inside Markdown bold did not end the sentence, so the
    /// answer "**Parking is free.** Contractors pay." was checked as one claim.
    #[test]
    fn a_bold_sentence_followed_by_another_is_two_claims() {
        let d = drafts("**Parking is free.** Contractors pay [1].");
        let texts: Vec<&str> = d.iter().map(|d| d.text.as_str()).collect();
        assert_eq!(texts, ["Parking is free.", "Contractors pay."]);
        assert!(d[0].cites.is_empty());
        assert_eq!(d[1].cites, vec![1]);
    }

    #[test]
    fn an_error_message_that_quotes_the_prompt_is_left_out_of_the_log() {
        let messages = [Message {
            role: "user",
            content: "[1] The salary bands for senior engineers are 80-95k EUR.".into(),
        }];
        let echoed = "invalid request: '[1] The salary bands for senior engineers' is too long";
        assert!(!unquoted(echoed.into(), &messages).contains("salary"));
        let plain = "the request exceeds the available context size";
        assert_eq!(unquoted(plain.into(), &messages), plain);
        // Escaped in JSON, as an SSE error event or an error body carries it.
        let json: Value = serde_json::json!({
            "error": {"message": "bad input: \"The salary bands for senior\" …", "type": "invalid"}
        });
        let logged = for_log(&json, &messages);
        assert!(!logged.contains("salary"), "{logged}");
        let json: Value = serde_json::json!({"error": {"message": plain, "code": 400}});
        assert_eq!(for_log(&json, &messages), plain);
    }
}
