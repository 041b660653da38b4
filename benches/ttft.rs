//! Time to first generated piece over gRPC vs the LLM server's own time to first token, same
//! prompt. Not a test: run it with a real OpenAI-compatible server, e.g.
//!
//!     scripts/llm-server.sh &   # SmolLM2-135M on 127.0.0.1:8088
//!     cargo bench --bench ttft -- --llm http://127.0.0.1:8088/v1 [--rounds N]
//!
//! Docent talks to the LLM through a recording pass-through proxy in this process (it adds a
//! loopback hop to Docent's figure, so the overhead reported is an upper bound). Each question is
//! asked over AskStream (generative); the recorded request is then replayed straight to the
//! server (after an unrelated prompt on both sides, so neither reuses the other's cached prompt),
//! measuring its time to first token, its time to the end of the first complete sentence
//! (what Docent must wait for: it sends only verified sentences), and its tokens/s.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use docent::assistant::verify::SentenceSplitter;
use docent::config::Config;
use docent::embed::{Embedder, FastEmbedder};
use docent_proto::v1 as pb;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dst = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dst)?;
        } else {
            std::fs::copy(e.path(), dst)?;
        }
    }
    Ok(())
}

const QUESTIONS: [&str; 6] = [
    "How many days of parental leave do birth parents get?",
    "How do I connect to the VPN?",
    "How many days can I work from home?",
    "Who approves expenses?",
    "When are the office holidays in 2027?",
    "How do I request a new laptop?",
];

/// A pass-through proxy that records each request body.
async fn proxy(upstream: String, recorded: Arc<Mutex<Vec<Vec<u8>>>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let http = reqwest::Client::new();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let (http, upstream, recorded) = (http.clone(), upstream.clone(), recorded.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 16384];
                let end = loop {
                    let k = conn.read(&mut tmp).await.ok()?;
                    if k == 0 {
                        return None;
                    }
                    buf.extend_from_slice(&tmp[..k]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < end + len {
                    let k = conn.read(&mut tmp).await.ok()?;
                    if k == 0 {
                        break;
                    }
                    buf.extend_from_slice(&tmp[..k]);
                }
                let body = buf[end..].to_vec();
                recorded.lock().unwrap().push(body.clone());
                let resp = http
                    .post(format!("{upstream}/chat/completions"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .ok()?;
                conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
                    .await
                    .ok()?;
                let mut s = resp.bytes_stream();
                while let Some(Ok(b)) = s.next().await {
                    conn.write_all(&b).await.ok()?;
                }
                conn.shutdown().await.ok()
            });
        }
    });
    url
}

/// Makes the server evaluate an unrelated prompt, so the next request cannot reuse the previous
/// prompt's cached prefix (llama.cpp keeps the last sequence's KV cache): both measurements
/// start cold.
async fn flush(upstream: &str) {
    let body = serde_json::json!({"model": "x", "max_tokens": 1, "messages": [
        {"role": "user", "content": "Name a colour."}]});
    let _ = reqwest::Client::new()
        .post(format!("{upstream}/chat/completions"))
        .json(&body)
        .send()
        .await
        .and_then(|r| r.error_for_status());
}

/// Replays a recorded request straight to the server: (first token, first sentence, total, pieces).
async fn replay(upstream: &str, body: Vec<u8>) -> (Duration, Duration, Duration, usize) {
    let t = Instant::now();
    let resp = reqwest::Client::new()
        .post(format!("{upstream}/chat/completions"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let mut s = resp.bytes_stream();
    let (mut first, mut sentence) = (None, None);
    let mut splitter = SentenceSplitter::default();
    let mut pieces = 0;
    let mut buf = String::new();
    while let Some(Ok(b)) = s.next().await {
        buf.push_str(&String::from_utf8_lossy(&b));
        while let Some(nl) = buf.find('\n') {
            let line: String = buf.drain(..=nl).collect();
            let Some(data) = line.trim().strip_prefix("data:") else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(data.trim()) else {
                continue;
            };
            if let Some(text) = v["choices"][0]["delta"]["content"].as_str()
                && !text.is_empty()
            {
                first.get_or_insert(t.elapsed());
                pieces += 1;
                if sentence.is_none() && !splitter.push(text).is_empty() {
                    sentence = Some(t.elapsed());
                }
            }
        }
    }
    let total = t.elapsed();
    (
        first.unwrap_or(total),
        sentence.unwrap_or(total),
        total,
        pieces,
    )
}

fn p50(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let upstream = arg("--llm").unwrap_or_else(|| "http://127.0.0.1:8088/v1".into());
    let rounds: usize = arg("--rounds").and_then(|s| s.parse().ok()).unwrap_or(3);
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir()?;
    copy_dir(&repo.join("examples/corpus"), &dir.path().join("corpus"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let via = proxy(upstream.clone(), recorded.clone()).await;
        let text = std::fs::read_to_string(repo.join("config/docent.example.toml"))?
            .replace("\"../data/example\"", &format!("{:?}", dir.path().join("data")))
            .replace("[\"../examples/corpus\"]", &format!("[{:?}]", dir.path().join("corpus")))
            .replace("\"../data/audit/audit.log\"", &format!("{:?}", dir.path().join("audit.log")))
            .replace("listen = \"127.0.0.1:7878\"", "listen = \"127.0.0.1:0\"")
            + &format!("\n[llm]\nbase_url = {via:?}\nmodel = \"smollm2\"\nmax_tokens = 96\nfirst_token_timeout_ms = 30000\n");
        let mut config =
            Config::parse(&text, &repo.join("config")).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        config.server.metrics_listen = None;
        let embedder: Arc<dyn Embedder> = Arc::new(FastEmbedder::load(&config.embedding)?);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let daemon = docent::server::start(config, embedder, listener).await?;
        let st = daemon.state().clone();
        while st.connectors.iter().any(|c| c.status.snapshot().last_full_scan_ms.is_none())
            || st.index.document_count() == 0
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let ch = tonic::transport::Channel::from_shared(format!("http://{}", daemon.local_addr()))?
            .connect()
            .await?;
        let mut c = pb::assistant_client::AssistantClient::new(ch);
        let (mut docent_first, mut llm_first, mut llm_sentence, mut overhead, mut tps) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..=rounds {
            for q in QUESTIONS {
                recorded.lock().unwrap().clear();
                flush(&upstream).await;
                let mut req = tonic::Request::new(pb::AskRequest {
                    question: q.into(),
                    mode: pb::AnswerMode::Generative as i32,
                    ..Default::default()
                });
                req.metadata_mut()
                    .insert("authorization", "Bearer hana-dev-token".parse()?);
                let t = Instant::now();
                let mut s = c.ask_stream(req).await?.into_inner();
                let mut first = None;
                let mut fallback = String::new();
                while let Some(ev) = s.message().await? {
                    match ev.event {
                        Some(pb::ask_stream_event::Event::Piece(_)) => {
                            first.get_or_insert(t.elapsed());
                        }
                        Some(pb::ask_stream_event::Event::Final(f)) => {
                            fallback = f.details.unwrap_or_default().fallback_reason;
                        }
                        _ => {}
                    }
                }
                let body = recorded.lock().unwrap().first().cloned();
                let (Some(first), Some(body), true) = (first, body, fallback.is_empty()) else {
                    eprintln!("{q:?}: no generated piece (fallback {fallback:?}); skipped");
                    continue;
                };
                flush(&upstream).await;
                let (tok, sentence, total, pieces) = replay(&upstream, body).await;
                if round == 0 {
                    continue; // warm-up (the server's prompt cache, the model's pages)
                }
                let ms = |d: Duration| d.as_secs_f64() * 1000.0;
                docent_first.push(ms(first));
                llm_first.push(ms(tok));
                llm_sentence.push(ms(sentence));
                overhead.push(ms(first) - ms(sentence));
                tps.push(pieces as f64 / (total - tok).as_secs_f64().max(1e-3));
            }
        }
        anyhow::ensure!(!docent_first.is_empty(), "no generated answers to measure");
        println!("\n## Time to first generated piece (example corpus, AskStream over gRPC, {} answers)", docent_first.len());
        println!("| | p50 ms |\n|---|---|");
        println!("| LLM server: first token (same prompt, direct) | {:.1} |", p50(llm_first));
        println!("| LLM server: end of the first sentence (direct) | {:.1} |", p50(llm_sentence));
        println!("| Docent: first verified piece over gRPC | {:.1} |", p50(docent_first));
        println!("| Docent overhead over the first sentence | {:.1} |", p50(overhead));
        println!("LLM throughput while streaming: {:.1} tokens/s (p50)", p50(tps));
        daemon.shutdown().await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}
