//! LLM servers for the generative-answer tests.
//!
//! [`real_llm`] is the real thing: llama-cpp-python's OpenAI-compatible server with
//! SmolLM2-135M-Instruct (installed by `scripts/setup-llm.sh`), started for each test that uses
//! it unless `DOCENT_LLM_URL` points at one already running.
//!
//! [`FakeLlm`] is a FAKE, scripted OpenAI-compatible server, used only for protocol edge cases a
//! real server cannot be made to produce on demand (HTTP 500, a stall before the first token,
//! malformed SSE) and for exact control over what the "model" writes (a fabricated citation
//! marker, an unsupported sentence, token usage for quotas). Everything else runs against the
//! real model.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A real LLM server, stopped when dropped (see [`real_llm`]).
pub struct RealLlm {
    /// `http://127.0.0.1:PORT/v1`
    pub url: String,
    /// The shell that runs the server; closing its stdin stops the server.
    child: Option<std::process::Child>,
}

impl Drop for RealLlm {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }
}

/// A real server of this test's own, unless `DOCENT_LLM_URL` points at one already running.
///
/// Own, because llama.cpp reuses the previous request's cached prompt prefix, which changes the
/// model's greedy output slightly: with one server for the whole binary, what a test got from
/// the model depended on which other test had asked before it. The server starts in about a
/// second.
pub fn real_llm() -> RealLlm {
    if let Ok(url) = std::env::var("DOCENT_LLM_URL") {
        return RealLlm { url, child: None };
    }
    let dir = std::env::var("DOCENT_LLM_DIR").unwrap_or_else(|_| {
        format!(
            "{}/.cache/docent/llm",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let python = format!("{dir}/venv/bin/python");
    let model = format!("{dir}/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        std::path::Path::new(&python).exists() && std::path::Path::new(&model).exists(),
        "the real LLM is not installed in {dir}: run scripts/setup-llm.sh (or set DOCENT_LLM_URL)"
    );
    // A port picked by binding port 0 is free only until something else binds it: another
    // test's listener may take it while Python starts, and then the server cannot bind and
    // exits, while a plain connect reaches the other listener. So readiness is the server's
    // own answer to `GET /v1/models` (naming this model), a server that exits is started again
    // on another port, and servers start one at a time (one starting beside ours could take
    // our port and answer for it).
    static STARTING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // The subshell stops the server when its stdin (a pipe held by the test) closes, at the
        // drop or when the test process ends; the shell itself exits with the server.
        let script = format!(
            "exec 3<&0; {python} -m llama_cpp.server --model {model} --host 127.0.0.1 \
             --port {port} --n_threads 1 --n_ctx 4096 </dev/null >/dev/null 2>&1 & pid=$!; \
             (cat <&3 >/dev/null; kill $pid 2>/dev/null) & wait $pid"
        );
        let mut child = std::process::Command::new("sh")
            .args(["-c", &script])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("start the LLM server");
        loop {
            assert!(
                std::time::Instant::now() < deadline,
                "the LLM server did not start"
            );
            if child.try_wait().unwrap().is_some() {
                break; // it exited: try another port
            }
            if serves_models(port) {
                return RealLlm {
                    url: format!("http://127.0.0.1:{port}/v1"),
                    child: Some(child),
                };
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Whether an OpenAI-compatible server on `port` lists its models.
fn serves_models(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reply = String::new();
    s.write_all(b"GET /v1/models HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .and_then(|()| s.read_to_string(&mut reply).map(drop))
        .is_ok()
        && reply.starts_with("HTTP/1.1 200")
        && reply.contains("SmolLM2-135M-Instruct")
}

const SSE: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";

/// What the fake server does with each request.
#[derive(Debug, Clone)]
pub enum Script {
    /// Streams `sentences`, where `{pN}` is replaced by the longest sentence of prompt passage N
    /// (as the prompt gives it); reports usage (100 prompt tokens, one per piece).
    Write(Vec<String>),
    /// Like `Write`, but after the first sentence the stream waits until the test calls
    /// [`FakeLlm::open_gate`]: a client that sees a piece before the gate opens was streamed to.
    Gated(Vec<String>),
    /// Answers with this HTTP status.
    Status(u16),
    /// Sends the headers, then nothing.
    Stall,
    /// Sends an event that is not JSON.
    Malformed,
    /// Streams `sentence` (filled as in `Write`), then words without end, ignoring `max_tokens`.
    Endless(String),
    /// Streams `sentence` (filled as in `Write`), then an event that is not JSON.
    WriteThenBreak(String),
}

pub struct FakeLlm {
    pub url: String,
    requests: Arc<AtomicUsize>,
    /// The last user message of each request (the passages and the question).
    prompts: Arc<Mutex<Vec<String>>>,
    script: Arc<Mutex<Script>>,
    gate: Arc<tokio::sync::Notify>,
}

impl FakeLlm {
    pub async fn start(script: Script) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let script = Arc::new(Mutex::new(script));
        let gate = Arc::new(tokio::sync::Notify::new());
        let prompts = Arc::new(Mutex::new(Vec::new()));
        let (n, s, g, p) = (
            requests.clone(),
            script.clone(),
            gate.clone(),
            prompts.clone(),
        );
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (n, s, g, p) = (n.clone(), s.clone(), g.clone(), p.clone());
                tokio::spawn(async move {
                    let _ = serve(conn, n, s, g, p).await;
                });
            }
        });
        Self {
            url,
            requests,
            prompts,
            script,
            gate,
        }
    }

    /// What each request gave the model, in order.
    pub fn prompts(&self) -> Vec<String> {
        self.prompts.lock().unwrap().clone()
    }

    /// Lets a `Gated` stream go on past its first sentence.
    pub fn open_gate(&self) {
        self.gate.notify_one();
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn set(&self, script: Script) {
        *self.script.lock().unwrap() = script;
    }
}

async fn serve(
    mut conn: tokio::net::TcpStream,
    n: Arc<AtomicUsize>,
    script: Arc<Mutex<Script>>,
    gate: Arc<tokio::sync::Notify>,
    prompts: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let header_end = loop {
        let k = conn.read(&mut tmp).await?;
        if k == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..k]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < header_end + len {
        let k = conn.read(&mut tmp).await?;
        if k == 0 {
            break;
        }
        buf.extend_from_slice(&tmp[..k]);
    }
    n.fetch_add(1, Ordering::SeqCst);
    let body: serde_json::Value =
        serde_json::from_slice(&buf[header_end..]).unwrap_or(serde_json::Value::Null);
    let prompt = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_string();
    prompts.lock().unwrap().push(prompt.clone());
    let script = script.lock().unwrap().clone();
    match script {
        Script::Status(code) => {
            let body = r#"{"error":{"message":"scripted failure"}}"#;
            let resp = format!(
                "HTTP/1.1 {code} Scripted\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(resp.as_bytes()).await?;
        }
        Script::Stall => {
            conn.write_all(SSE.as_bytes()).await?;
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Script::Malformed => {
            conn.write_all(SSE.as_bytes()).await?;
            conn.write_all(b"data: {\"choices\": [{\"delta\": {\"content\": \"Hel\n\n")
                .await?;
        }
        Script::Endless(sentence) => {
            conn.write_all(SSE.as_bytes()).await?;
            let text = format!("{} ", fill(&sentence, &prompt));
            let ev = serde_json::json!({"choices": [{"delta": {"content": text}, "index": 0}]});
            conn.write_all(format!("data: {ev}\n\n").as_bytes()).await?;
            let more =
                serde_json::json!({"choices": [{"delta": {"content": "and more "}, "index": 0}]});
            let more = format!("data: {more}\n\n");
            // Until the client hangs up.
            loop {
                conn.write_all(more.as_bytes()).await?;
            }
        }
        Script::WriteThenBreak(sentence) => {
            conn.write_all(SSE.as_bytes()).await?;
            let text = format!("{} ", fill(&sentence, &prompt));
            let ev = serde_json::json!({"choices": [{"delta": {"content": text}, "index": 0}]});
            conn.write_all(format!("data: {ev}\n\n").as_bytes()).await?;
            conn.write_all(b"data: {\"choices\": [{\"delta\": {\"content\": \"Hel\n\n")
                .await?;
        }
        Script::Write(sentences) => write(&mut conn, &sentences, &prompt, None).await?,
        Script::Gated(sentences) => write(&mut conn, &sentences, &prompt, Some(&gate)).await?,
    }
    conn.shutdown().await
}

/// Streams `sentences` (templates filled from the prompt) word by word, waiting at `gate` (when
/// given) after the first sentence, then the usage and `[DONE]`.
async fn write(
    conn: &mut tokio::net::TcpStream,
    sentences: &[String],
    prompt: &str,
    gate: Option<&tokio::sync::Notify>,
) -> std::io::Result<()> {
    conn.write_all(SSE.as_bytes()).await?;
    let mut pieces = 0u64;
    for (i, sentence) in sentences.iter().enumerate() {
        if i == 1
            && let Some(g) = gate
        {
            g.notified().await;
        }
        let text = format!("{} ", fill(sentence, prompt));
        for word in text.split_inclusive(' ') {
            let ev = serde_json::json!({"choices": [{"delta": {"content": word}, "index": 0}]});
            conn.write_all(format!("data: {ev}\n\n").as_bytes()).await?;
            pieces += 1;
        }
    }
    let usage = serde_json::json!({"choices": [], "usage": {"prompt_tokens": 100, "completion_tokens": pieces, "total_tokens": 100 + pieces}});
    conn.write_all(format!("data: {usage}\n\ndata: [DONE]\n\n").as_bytes())
        .await
}

/// Replaces `{pN}` with the longest sentence of passage N of the prompt (`[N] (title) text`),
/// and `{pN.K}` with its K-th longest.
pub(crate) fn fill(template: &str, prompt: &str) -> String {
    let mut out = template.to_string();
    for n in 1..=9 {
        let line = prompt
            .lines()
            .find(|l| l.starts_with(&format!("[{n}] ")))
            .unwrap_or("");
        let text = line.split_once(") ").map_or(line, |x| x.1);
        // Longest first: distinct from other passages' (chunks of one document share their
        // heading lines).
        let mut sentences: Vec<&str> = text.split(". ").map(|s| s.trim_end_matches('.')).collect();
        sentences.sort_by_key(|s| std::cmp::Reverse(s.split_whitespace().count()));
        for k in 1..=3 {
            let key = if k == 1 {
                format!("{{p{n}}}")
            } else {
                format!("{{p{n}.{k}}}")
            };
            if out.contains(&key) {
                out = out.replace(&key, sentences.get(k - 1).copied().unwrap_or(""));
            }
        }
    }
    out
}
