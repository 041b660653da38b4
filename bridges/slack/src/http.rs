//! The HTTP endpoint Slack calls (hyper 1): Events API callbacks, interactivity payloads and
//! slash commands all arrive at `/slack/events` (the other two paths are aliases), each
//! verified on its raw body before anything is parsed, acknowledged at once, and worked on by a
//! spawned task. `/metrics` is served on its own listener.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::bridge::{self, Bridge, Work};
use crate::verify;

/// Slack's payloads are small; anything larger is refused before it is read whole.
const MAX_BODY: usize = 1 << 20;

/// How long a client may take to send its request headers, then its body: a client that
/// trickles them is dropped instead of holding a connection and its buffer.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 256;

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Full::new(body.into()))
        .expect("static response parts")
}

fn empty(status: StatusCode) -> Response<Full<Bytes>> {
    reply(status, "text/plain", Bytes::new())
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Serves `handler` on `listener` until `stop`.
pub async fn serve<F, Fut>(listener: TcpListener, stop: CancellationToken, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    // The connections being served: at a stop, each finishes the request it is on (a review:
    // they were dropped, and a request whose body was being read got no acknowledgement).
    let mut conns = tokio::task::JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
            _ = stop.cancelled() => break,
        };
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let h = handler.clone();
        let stop = stop.clone();
        conns.spawn(async move {
            let _slot = slot;
            let svc = hyper::service::service_fn(move |req| {
                let h = h.clone();
                async move { Ok::<_, Infallible>(h(req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
            }
            // The request being served finishes (bounded: a peer that never sends the rest
            // of its body is cut off).
            let _ = tokio::time::timeout(READ_TIMEOUT * 2, conn).await;
        });
    }
    while conns.join_next().await.is_some() {}
}

/// The Slack-facing handler.
pub async fn slack(
    bridge: Arc<Bridge>,
    secret: Arc<str>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => return reply(StatusCode::OK, "text/plain", "ok\n"),
        (&Method::POST, "/slack/events" | "/slack/interactivity" | "/slack/commands") => {}
        _ => return empty(StatusCode::NOT_FOUND),
    }
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (ts, sig, ctype) = (
        header("x-slack-request-timestamp"),
        header("x-slack-signature"),
        header("content-type").unwrap_or_default(),
    );
    let refuse = |e: verify::VerifyError| {
        tracing::warn!(why = e.label(), "slack request refused");
        bridge
            .metrics
            .inc("docent_slack_rejected_total", &[("reason", e.label())]);
        empty(StatusCode::UNAUTHORIZED)
    };
    // Headers missing or stale: refused before the body is read.
    if let Err(e) = verify::fresh(ts.as_deref(), sig.as_deref(), now_unix()) {
        return refuse(e);
    }
    let read = Limited::new(req.into_body(), MAX_BODY).collect();
    let body = match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(_)) => return empty(StatusCode::PAYLOAD_TOO_LARGE),
        Err(_) => return empty(StatusCode::REQUEST_TIMEOUT),
    };
    if let Err(e) = verify::verify(&secret, ts.as_deref(), sig.as_deref(), &body, now_unix()) {
        return refuse(e);
    }
    if ctype.starts_with("application/json") {
        let Ok(v) = serde_json::from_slice::<Value>(&body) else {
            return empty(StatusCode::BAD_REQUEST);
        };
        if v["type"] == "event_callback"
            && !bridge.serves_team(v["team_id"].as_str(), event_enterprise(&v))
        {
            return empty(StatusCode::OK);
        }
        return events(&bridge, &v);
    }
    // Interactions and commands carry no id Slack retries with: a request seen before (its
    // signature covers its timestamp and body) is a replay within the freshness window, and is
    // acknowledged without acting again.
    // Keyed on the signature in one case: its hex verifies in either.
    if !bridge.first_request(&sig.as_deref().unwrap_or_default().to_ascii_lowercase()) {
        bridge
            .metrics
            .inc("docent_slack_rejected_total", &[("reason", "replayed")]);
        return empty(StatusCode::OK);
    }
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    if let Some(payload) = form.get("payload") {
        let Ok(p) = serde_json::from_str::<Value>(payload) else {
            return empty(StatusCode::BAD_REQUEST);
        };
        return interaction(&bridge, &p);
    }
    if form.contains_key("command") {
        return command(&bridge, &form);
    }
    empty(StatusCode::BAD_REQUEST)
}

/// A `response_url` that is not Slack's (see [`crate::slack::response_url_allowed`]) refuses
/// its request: only a sender holding the signing secret, or a wrong
/// `slack.response_url_hosts`, makes one. Counted and logged.
fn refused_response_url(bridge: &Bridge) {
    tracing::warn!("request whose response_url is not on Slack's hosts refused");
    bridge
        .metrics
        .inc("docent_slack_rejected_total", &[("reason", "response_url")]);
}

/// A verified interactivity payload `p`, acknowledged with an empty 200.
fn interaction(bridge: &Arc<Bridge>, p: &Value) -> Response<Full<Bytes>> {
    if !bridge.serves_team(p["team"]["id"].as_str(), payload_enterprise(p)) {
        return empty(StatusCode::OK);
    }
    bridge
        .metrics
        .inc("docent_slack_events_total", &[("kind", "interaction")]);
    if let Some(url) = p["response_url"].as_str()
        && !bridge.accepts_response_url(url)
    {
        refused_response_url(bridge);
        return empty(StatusCode::OK);
    }
    if p["type"] == "block_actions"
        && let Some(w) = bridge::action_work(p)
    {
        // Refused work's presser is told by the bridge (see `Bridge::spawn`).
        bridge.spawn(w);
    }
    empty(StatusCode::OK)
}

/// A verified slash command: answered at once in its HTTP response (ephemeral), with the
/// answer to follow through its `response_url`, or with why there will be none.
fn command(bridge: &Arc<Bridge>, form: &HashMap<String, String>) -> Response<Full<Bytes>> {
    bridge
        .metrics
        .inc("docent_slack_events_total", &[("kind", "command")]);
    let f = |k: &str| form.get(k).cloned().unwrap_or_default();
    let field = |k: &str| form.get(k).map(String::as_str);
    if !bridge.serves_team(field("team_id"), field("enterprise_id")) {
        return empty(StatusCode::OK);
    }
    let url = f("response_url");
    if url.is_empty() || f("user_id").is_empty() {
        return empty(StatusCode::BAD_REQUEST);
    }
    let ephemeral = |text: &str| {
        reply(
            StatusCode::OK,
            "application/json",
            json!({"response_type": "ephemeral", "text": text}).to_string(),
        )
    };
    // Found by a review: the answer was posted to whatever URL the form named.
    if !bridge.accepts_response_url(&url) {
        refused_response_url(bridge);
        return ephemeral(bridge::text::RESPONSE_URL_REFUSED);
    }
    let taken = bridge.spawn(Work::Command {
        user: f("user_id"),
        channel: f("channel_id"),
        text: f("text"),
        response_url: url,
    });
    if !taken {
        return ephemeral(bridge::text::BRIDGE_BUSY);
    }
    ephemeral("Looking that up in Docent…")
}

fn events(bridge: &Arc<Bridge>, v: &Value) -> Response<Full<Bytes>> {
    match v["type"].as_str() {
        Some("url_verification") => {
            bridge
                .metrics
                .inc("docent_slack_events_total", &[("kind", "url_verification")]);
            reply(
                StatusCode::OK,
                "application/json",
                json!({"challenge": v["challenge"]}).to_string(),
            )
        }
        Some("event_callback") => {
            let kind = match v["event"]["type"].as_str() {
                Some("app_mention") => "app_mention",
                Some("message") => "message",
                _ => "other",
            };
            bridge
                .metrics
                .inc("docent_slack_events_total", &[("kind", kind)]);
            let id = v["event_id"].as_str().unwrap_or_default();
            if !id.is_empty() && !bridge.first_event(id) {
                bridge.metrics.inc("docent_slack_duplicates_total", &[]);
                return empty(StatusCode::OK);
            }
            // Answered only where an administrator chose the channel's audience; elsewhere the
            // asker is told so (see `Bridge::answers_in_shared_channel`).
            // Slack sends the flag with every event; without it the channel counts as shared.
            let shared = v["is_ext_shared_channel"].as_bool().unwrap_or(true)
                && v["event"]["channel_type"].as_str() != Some("im");
            if let Some(w) = bridge::event_work(bridge, &v["event"], shared) {
                // Refused work's asker is told by the bridge (see `Bridge::spawn`).
                bridge.spawn(w);
            }
            empty(StatusCode::OK)
        }
        _ => empty(StatusCode::OK),
    }
}

/// The Enterprise Grid organisation an Events API callback comes from: the envelope's
/// `enterprise_id`, else its authorization's (`None` outside Enterprise Grid).
fn event_enterprise(v: &Value) -> Option<&str> {
    v["enterprise_id"]
        .as_str()
        .or_else(|| v["authorizations"][0]["enterprise_id"].as_str())
}

/// The Enterprise Grid organisation of an interactivity payload: `enterprise.id`, else the
/// team's `enterprise_id` (`None` outside Enterprise Grid).
fn payload_enterprise(p: &Value) -> Option<&str> {
    p["enterprise"]["id"]
        .as_str()
        .or_else(|| p["team"]["enterprise_id"].as_str())
}

/// The metrics handler.
pub async fn metrics(bridge: Arc<Bridge>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() == Method::GET && req.uri().path() == "/metrics" {
        reply(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            bridge.metrics.render(),
        )
    } else {
        empty(StatusCode::NOT_FOUND)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::tests::{fake_web_api, test_bridge};

    /// A slash command's form from U0ALICE, answered through `response_url`.
    fn command_form(response_url: &str) -> HashMap<String, String> {
        [
            ("command", "/docent"),
            ("text", "How do I connect to the VPN?"),
            ("user_id", "U0ALICE"),
            ("channel_id", "C0GENERAL"),
            ("response_url", response_url),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    async fn text_of(r: Response<Full<Bytes>>) -> String {
        let body = r.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&body).unwrap();
        v["text"].as_str().unwrap_or_default().to_string()
    }

    /// Found by a review: the answer went to whatever `response_url` the form named, so a
    /// request signed with a leaked signing secret could have anyone's private answer sent to
    /// its own server. Such a command is answered with a short refusal, and nothing is asked.
    #[tokio::test]
    async fn a_slash_command_whose_response_url_is_not_slacks_is_refused_in_its_response() {
        let (api, calls, stop) = fake_web_api().await;
        let b = test_bridge(&format!("api_url = \"{api}\"")).await;
        for url in [
            "https://attacker.example/commands/T0A/1/x",
            "http://hooks.slack.com/commands/T0A/1/x",
            "https://hooks.slack.com.attacker.example/commands/T0A/1/x",
        ] {
            let r = command(&b, &command_form(url));
            assert_eq!(r.status(), StatusCode::OK, "{url}");
            let text = text_of(r).await;
            assert!(text.contains("not one of Slack's"), "{url}: {text}");
        }
        b.idle().await;
        assert!(calls.lock().unwrap().is_empty());
        assert_eq!(
            b.metrics
                .get("docent_slack_rejected_total", &[("reason", "response_url")]),
            3
        );
        // The fake Slack's own (the Web API's origin) is accepted: the answer, here an error
        // (no Docent listens), goes there.
        let origin = api.trim_end_matches("/api");
        let r = command(&b, &command_form(&format!("{origin}/response/cmd1")));
        assert!(text_of(r).await.contains("Looking that up"));
        tokio::time::timeout(std::time::Duration::from_secs(30), b.idle())
            .await
            .expect("the command is answered");
        stop.cancel();
        let calls = calls.lock().unwrap().clone();
        assert!(
            calls.iter().any(|(m, _)| m == "/response/cmd1"),
            "{calls:?}"
        );
    }

    /// Found by a review: a command the bridge had no room for was acknowledged with "Looking
    /// that up…" and then dropped. It is told so in its HTTP response instead.
    #[tokio::test]
    async fn a_slash_command_the_bridge_has_no_room_for_is_told_so_in_its_response() {
        let (api, calls, stop) = fake_web_api().await;
        let b = test_bridge(&format!("api_url = \"{api}\"")).await;
        let held = b.fill_backlog("U0ALICE");
        let origin = api.trim_end_matches("/api");
        let r = command(&b, &command_form(&format!("{origin}/response/cmd2")));
        let text = text_of(r).await;
        assert!(text.contains("too many questions"), "{text}");
        assert!(!text.contains("Looking that up"), "{text}");
        b.idle().await;
        stop.cancel();
        // Its HTTP response said it all: no note besides.
        assert!(calls.lock().unwrap().is_empty());
        drop(held);
    }

    /// Where Slack puts the organisation: the envelope or its authorization for events, the
    /// `enterprise` object or the team for interactions; nothing outside Enterprise Grid.
    #[test]
    fn the_organisation_is_read_where_slack_sends_it() {
        let ev = json!({"type": "event_callback", "team_id": "T0A", "enterprise_id": "E0A",
            "authorizations": [{"enterprise_id": "E0B", "team_id": "T0A"}]});
        assert_eq!(event_enterprise(&ev), Some("E0A"));
        let ev = json!({"type": "event_callback", "team_id": "T0A", "enterprise_id": null,
            "authorizations": [{"enterprise_id": "E0B", "team_id": "T0A"}]});
        assert_eq!(event_enterprise(&ev), Some("E0B"));
        let ev = json!({"type": "event_callback", "team_id": "T0A",
            "authorizations": [{"enterprise_id": null, "team_id": "T0A"}]});
        assert_eq!(event_enterprise(&ev), None);
        let p = json!({"type": "block_actions", "team": {"id": "T0A", "enterprise_id": "E0B"},
            "enterprise": {"id": "E0A"}});
        assert_eq!(payload_enterprise(&p), Some("E0A"));
        let p = json!({"type": "block_actions", "team": {"id": "T0A", "enterprise_id": "E0B"},
            "enterprise": null});
        assert_eq!(payload_enterprise(&p), Some("E0B"));
        let p = json!({"type": "block_actions", "team": {"id": "T0A"}, "enterprise": null});
        assert_eq!(payload_enterprise(&p), None);
    }
}
