//! A FAKE of Slack's Web API, for the Slack bridge tests. It is not Slack: no Slack server can
//! run here (Slack is a hosted service with no emulator in any registry), so this stands in for
//! the handful of methods the bridge calls (`chat.postMessage`, `chat.postEphemeral`,
//! `users.info`, `auth.test`, and `response_url` posts), records every call, and answers in
//! Slack's documented shapes (`{"ok": true, …}` / `{"ok": false, "error": …}`, HTTP 429 with
//! `Retry-After`). `slack_sdk_web_client_accepts_the_fake` checks it against PyPI's official
//! `slack_sdk` `WebClient`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

pub const BOT_TOKEN: &str = "xoxb-fake-bot-token";

/// One recorded call: the method (or `response_url`) and its arguments (JSON, form or query).
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub args: Value,
    pub at: Instant,
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    /// Slack user id → e-mail, answered by `users.info`.
    users: HashMap<String, String>,
    /// Users of another organisation (Slack Connect): `is_stranger`, another `team_id`.
    strangers: std::collections::HashSet<String>,
    /// Users of another workspace the app is also installed in: another `team_id` only.
    foreign: std::collections::HashSet<String>,
    /// Guest accounts (`is_restricted` in `users.list`), and the channels they are in.
    guests: std::collections::HashSet<String>,
    guest_channels: std::collections::HashSet<String>,
    /// Method → (calls still to refuse with 429, Retry-After seconds).
    rate_limited: HashMap<String, (u32, u64)>,
    /// Method → calls still to carry out and then answer with HTTP 503 (a gateway that failed
    /// after Slack acted).
    lost_answers: HashMap<String, u32>,
    /// When set, the second page of `users.list` is computed at once but answered only when
    /// this is notified (a reading that a change overtakes).
    list_gate: Option<Arc<tokio::sync::Notify>>,
    ts: u64,
}

#[derive(Clone)]
pub struct FakeSlack {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl FakeSlack {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let fake = Self {
            url,
            state: Arc::default(),
        };
        let f = fake.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let f = f.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let f = f.clone();
                        async move {
                            let r = f.handle(req).await;
                            if r.headers().contains_key("x-fake-hold") {
                                let gate = f.lock().list_gate.clone();
                                if let Some(gate) = gate {
                                    gate.notified().await;
                                }
                            }
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        fake
    }

    /// The Web API base URL (`https://slack.com/api` for the real one).
    pub fn api_url(&self) -> String {
        format!("{}/api", self.url)
    }

    /// A response_url for slash commands and interactions.
    pub fn response_url(&self, id: &str) -> String {
        format!("{}/response/{id}", self.url)
    }

    pub fn add_user(&self, id: &str, email: &str) {
        self.lock().users.insert(id.into(), email.into());
    }

    /// A Slack Connect user of another organisation, whose profile shows `email`.
    pub fn add_stranger(&self, id: &str, email: &str) {
        let mut st = self.lock();
        st.users.insert(id.into(), email.into());
        st.strangers.insert(id.into());
    }

    /// A user of another workspace and organisation (`T0OTHER`, `E0OTHER`), not marked a
    /// stranger (the app is installed there, or they share a channel), showing `email`.
    pub fn add_foreign_user(&self, id: &str, email: &str) {
        let mut st = self.lock();
        st.users.insert(id.into(), email.into());
        st.foreign.insert(id.into());
    }

    /// A single-channel guest, member of `channel` (`conversations.members`), marked
    /// `is_restricted` in `users.list`.
    pub fn add_guest(&self, id: &str, channel: &str) {
        let mut st = self.lock();
        st.guests.insert(id.into());
        st.guest_channels.insert(channel.into());
    }

    /// A guest account no channel's member list shows yet (Slack's lists can lag a join).
    pub fn add_guest_account(&self, id: &str) {
        self.lock().guests.insert(id.into());
    }

    /// From now on the second page of `users.list` is held, as read at the call, until the
    /// returned gate is notified (once per page asked for: for one reading).
    pub fn hold_users_list_page2(&self) -> Arc<tokio::sync::Notify> {
        let gate = Arc::new(tokio::sync::Notify::new());
        self.lock().list_gate = Some(gate.clone());
        gate
    }

    /// The next `n` calls of `method` get HTTP 429 with `Retry-After: secs`.
    pub fn rate_limit(&self, method: &str, n: u32, secs: u64) {
        self.lock().rate_limited.insert(method.into(), (n, secs));
    }

    /// The next `n` calls of `method` are carried out but answered with HTTP 503.
    pub fn lose_answers(&self, method: &str, n: u32) {
        self.lock().lost_answers.insert(method.into(), n);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    pub fn calls_to(&self, method: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method)
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    async fn handle(&self, req: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let ctype = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let mut args = serde_json::Map::new();
        let form = |s: &[u8], args: &mut serde_json::Map<String, Value>| {
            for (k, v) in form_urlencoded::parse(s) {
                args.insert(k.into_owned(), Value::String(v.into_owned()));
            }
        };
        form(query.as_bytes(), &mut args);
        if ctype.starts_with("application/json") {
            if let Ok(Value::Object(m)) = serde_json::from_slice(&body) {
                args.extend(m);
            }
        } else {
            form(&body, &mut args);
        }
        let (method, is_api) = match path.strip_prefix("/api/") {
            Some(m) => (m.to_string(), true),
            None if path.starts_with("/response/") => ("response_url".to_string(), false),
            None => return respond(404, json!({"ok": false, "error": "not_found"}), None),
        };
        let mut st = self.lock();
        st.calls.push(Call {
            method: method.clone(),
            args: Value::Object(args.clone()),
            at: Instant::now(),
        });
        if let Some((n, secs)) = st.rate_limited.get_mut(&method)
            && *n > 0
        {
            *n -= 1;
            let secs = *secs;
            return respond(
                429,
                json!({"ok": false, "error": "ratelimited"}),
                Some(secs),
            );
        }
        if is_api && auth != format!("Bearer {BOT_TOKEN}") {
            return respond(200, json!({"ok": false, "error": "invalid_auth"}), None);
        }
        st.ts += 1;
        let ts = format!("1700000000.{:06}", st.ts);
        let arg = |k: &str| {
            args.get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let v = match method.as_str() {
            "auth.test" => {
                json!({"ok": true, "url": "https://fake.slack.example/", "team": "Fernhill",
                "user": "docent", "team_id": "T0FAKE", "user_id": "U0BOT", "bot_id": "B0BOT"})
            }
            "chat.postMessage" if arg("channel").is_empty() => {
                json!({"ok": false, "error": "channel_not_found"})
            }
            "chat.postMessage" => json!({"ok": true, "channel": arg("channel"), "ts": ts,
                "message": {"type": "message", "text": arg("text"), "user": "U0BOT", "ts": ts,
                    "bot_id": "B0BOT"}}),
            "chat.postEphemeral" if arg("channel").is_empty() || arg("user").is_empty() => {
                json!({"ok": false, "error": "user_not_in_channel"})
            }
            "chat.postEphemeral" => json!({"ok": true, "message_ts": ts}),
            "users.info" if st.guests.contains(&arg("user")) => json!({"ok": true,
                "user": {"id": arg("user"), "team_id": "T0FAKE", "deleted": false,
                "is_bot": false, "is_restricted": true}}),
            "users.info" => match st.users.get(&arg("user")) {
                Some(email) if st.strangers.contains(&arg("user")) => json!({"ok": true,
                    "user": {"id": arg("user"), "team_id": "T0OTHER", "is_stranger": true,
                    "deleted": false, "is_bot": false,
                    "profile": {"email": email, "real_name": email}}}),
                Some(email) => json!({"ok": true, "user": {"id": arg("user"),
                    "team_id": if st.foreign.contains(&arg("user")) { "T0OTHER" } else { "T0FAKE" },
                    "enterprise_user": {"enterprise_id":
                        if st.foreign.contains(&arg("user")) { "E0OTHER" } else { "E0FAKE" }},
                    "name": email.split('@').next().unwrap_or(""), "deleted": false,
                    "is_bot": false, "is_email_confirmed": true,
                    "profile": {"email": email, "real_name": email}}}),
                None => json!({"ok": false, "error": "user_not_found"}),
            },
            // Every known user and guest, on one page of two (a cursor after the first user).
            "users.list" => {
                let mut ids: Vec<&String> = st.users.keys().chain(&st.guests).collect();
                ids.sort();
                let (page, next) = if arg("cursor").is_empty() {
                    (&ids[..ids.len().min(1)], "page2")
                } else {
                    (&ids[ids.len().min(1)..], "")
                };
                let members: Vec<Value> = page
                    .iter()
                    .map(|id| {
                        let away = st.strangers.contains(*id) || st.foreign.contains(*id);
                        json!({"id": id, "deleted": false,
                        "team_id": if away { "T0OTHER" } else { "T0FAKE" },
                        "enterprise_user": {"enterprise_id": if away { "E0OTHER" } else { "E0FAKE" }},
                        "is_stranger": st.strangers.contains(*id),
                        "is_restricted": st.guests.contains(*id)})
                    })
                    .collect();
                json!({"ok": true, "members": members,
                    "response_metadata": {"next_cursor": next}})
            }
            // A channel's members: the known users, and the guests of channels they were
            // added to.
            "conversations.members" => {
                let mut members: Vec<&String> = st.users.keys().collect();
                if st.guest_channels.contains(&arg("channel")) {
                    members.extend(&st.guests);
                }
                json!({"ok": true, "members": members,
                    "response_metadata": {"next_cursor": ""}})
            }
            "response_url" => json!({"ok": true}),
            _ => json!({"ok": false, "error": "unknown_method"}),
        };
        if method == "users.list" && arg("cursor") == "page2" && st.list_gate.is_some() {
            // Held by the connection's task (see `start`), this lock released.
            let mut r = respond(200, v, None);
            r.headers_mut()
                .insert("x-fake-hold", hyper::header::HeaderValue::from_static("1"));
            return r;
        }
        if let Some(n) = st.lost_answers.get_mut(&method)
            && *n > 0
        {
            *n -= 1;
            return respond(
                503,
                json!({"ok": false, "error": "service_unavailable"}),
                None,
            );
        }
        respond(200, v, None)
    }
}

fn respond(status: u16, v: Value, retry_after: Option<u64>) -> hyper::Response<Full<Bytes>> {
    let mut b = hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8");
    if let Some(s) = retry_after {
        b = b.header("retry-after", s.to_string());
    }
    b.body(Full::new(Bytes::from(v.to_string()))).unwrap()
}
