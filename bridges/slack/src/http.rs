//! The HTTP endpoint Slack calls (hyper 1): Events API callbacks, interactivity payloads and
//! slash commands all arrive at `/slack/events` (the other two paths are aliases), each
//! verified on its raw body before anything is parsed, acknowledged at once, and worked on by a
//! spawned task. `/metrics` is served on its own listener.

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
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
            _ = stop.cancelled() => return,
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
            _ = stop.cancelled() => return,
        };
        let h = handler.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
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
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
            }
        });
    }
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
    let form: std::collections::HashMap<String, String> =
        form_urlencoded::parse(&body).into_owned().collect();
    if let Some(payload) = form.get("payload") {
        let Ok(p) = serde_json::from_str::<Value>(payload) else {
            return empty(StatusCode::BAD_REQUEST);
        };
        if !bridge.serves_team(p["team"]["id"].as_str(), payload_enterprise(&p)) {
            return empty(StatusCode::OK);
        }
        bridge
            .metrics
            .inc("docent_slack_events_total", &[("kind", "interaction")]);
        if p["type"] == "block_actions"
            && let Some(w) = bridge::action_work(&p)
        {
            bridge.spawn(w);
        }
        return empty(StatusCode::OK);
    }
    if form.contains_key("command") {
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
        bridge.spawn(Work::Command {
            user: f("user_id"),
            channel: f("channel_id"),
            text: f("text"),
            response_url: url,
        });
        return reply(
            StatusCode::OK,
            "application/json",
            json!({"response_type": "ephemeral", "text": "Looking that up in Docent…"}).to_string(),
        );
    }
    empty(StatusCode::BAD_REQUEST)
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
