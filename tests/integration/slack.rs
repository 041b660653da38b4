//! The Slack bridge (`bridges/slack`) against a real daemon and the fake Slack Web API
//! (`fake_slack.rs`): signed events in, Web API calls out.

use std::time::Duration;

use serde_json::{Value, json};

use crate::fake_slack::{BOT_TOKEN, FakeSlack};
use crate::harness::*;

const SECRET: &str = "test-signing-secret";
const HR_QUESTION: &str = "What is the salary band for a senior software engineer?";
/// Strings that only occur in hr/ files of the example corpus (as in acl_answers.rs).
const HR_ONLY: &[&str] = &[
    "148,000",
    "Compensation bands",
    "compensation-bands",
    "/hr/",
    "Project Heron",
    "PL-27",
    "Aurelia",
];
/// A channel whose audience is `group:staff` (everyone at Fernhill; not HR).
const STAFF_CHANNEL: &str = "C0STAFF";
/// A channel with the staff group's audience that an administrator opened to guests (a Slack
/// Connect channel with a partner).
const PARTNER_CHANNEL: &str = "C0PARTNER";

/// The example config with hana's Slack id as an alias (alice is found by e-mail).
fn daemon_env() -> (Env, docent::config::Config) {
    let env = Env::example();
    let text = replaced(
        &env.config_text(),
        "aliases = [\"hana@fernhill.example\"]",
        "aliases = [\"hana@fernhill.example\", \"U0HANA\"]",
    );
    let cfg = env.config_from(&text);
    (env, cfg)
}

fn bridge_config(slack: &FakeSlack, docent_url: &str) -> docent_slack::Config {
    bridge_config_pinned(slack, docent_url, "team_id = \"T0FAKE\"")
}

/// The bridge's config with `pin` (`team_id = …`, `enterprise_id = …` or nothing).
fn bridge_config_pinned(slack: &FakeSlack, docent_url: &str, pin: &str) -> docent_slack::Config {
    let text = format!(
        r#"
version = 1
listen = "127.0.0.1:0"
[slack]
bot_token = "${{BOT}}"
signing_secret = "${{SECRET}}"
api_url = "{}"
max_retry_after_secs = 5
{pin}
[docent]
addr = "{docent_url}"
api_key = "${{KEY}}"
timeout_secs = 60
[channels]
default_audience = "everyone"
audiences = {{ {STAFF_CHANNEL} = "group:staff", {PARTNER_CHANNEL} = "group:staff", C0EXPLICIT = "everyone" }}
open_to_guests = ["{PARTNER_CHANNEL}"]
"#,
        slack.api_url()
    );
    docent_slack::Config::parse(&text, std::path::Path::new("."), &|k| match k {
        "BOT" => Some(BOT_TOKEN.into()),
        "SECRET" => Some(SECRET.into()),
        "KEY" => Some("slack-bridge-dev-key".into()),
        _ => None,
    })
    .unwrap()
}

struct Setup {
    slack: FakeSlack,
    bridge: docent_slack::Running,
    env: Env,
    daemon: Option<Running>,
}

async fn setup() -> Setup {
    setup_pinned("team_id = \"T0FAKE\"").await
}

/// [`setup`] with the bridge's home pinned by `pin` (see [`bridge_config_pinned`]).
async fn setup_pinned(pin: &str) -> Setup {
    let (env, cfg) = daemon_env();
    let daemon = env.start_with(cfg).await;
    let slack = FakeSlack::start().await;
    slack.add_user("U0ALICE", "alice@fernhill.example");
    slack.add_user("U0NOBODY", "nobody@elsewhere.example");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bridge = docent_slack::start(
        bridge_config_pinned(&slack, &daemon.url(), pin),
        listener,
        None,
    )
    .await
    .unwrap();
    Setup {
        slack,
        bridge,
        env,
        daemon: Some(daemon),
    }
}

fn now() -> i64 {
    docent_slack::http::now_unix()
}

impl Setup {
    /// Whether the daemon's audit log shows no Ask at all.
    fn nothing_asked(&self) -> bool {
        !self
            .env
            .audit_records()
            .iter()
            .any(|r| r["method"].as_str().is_some_and(|m| m.contains("Ask")))
    }

    /// The bridge's refusals for `reason`.
    fn refusals(&self, reason: &str) -> u64 {
        self.bridge
            .metrics()
            .get("docent_slack_refusals_total", &[("reason", reason)])
    }

    fn url(&self) -> String {
        format!("http://{}/slack/events", self.bridge.local_addr())
    }

    /// Posts `body` signed like Slack at `ts`; returns the status and body.
    async fn post_at(&self, ctype: &str, body: String, ts: i64, secret: &str) -> (u16, String) {
        self.post_signed(ctype, body, ts, secret, |s| s).await
    }

    /// [`Self::post_at`] with the signature header as `edit` makes it.
    async fn post_signed(
        &self,
        ctype: &str,
        body: String,
        ts: i64,
        secret: &str,
        edit: impl Fn(String) -> String,
    ) -> (u16, String) {
        let ts = ts.to_string();
        let sig = edit(docent_slack::verify::sign(secret, &ts, body.as_bytes()));
        let r = reqwest::Client::new()
            .post(self.url())
            .header("content-type", ctype)
            .header("x-slack-request-timestamp", ts)
            .header("x-slack-signature", sig)
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn event(&self, event_id: &str, event: Value) -> u16 {
        self.event_in(event_id, event, false).await
    }

    /// An event, with Slack's `is_ext_shared_channel` flag (a Slack Connect channel) as given.
    async fn event_in(&self, event_id: &str, event: Value, shared: bool) -> u16 {
        self.event_from("T0FAKE", event_id, event, shared).await
    }

    /// An event from workspace `team`.
    async fn event_from(&self, team: &str, event_id: &str, event: Value, shared: bool) -> u16 {
        let body = json!({"type": "event_callback", "team_id": team, "enterprise_id": "E0FAKE",
            "event_id": event_id, "event_time": now(), "is_ext_shared_channel": shared,
            "event": event});
        self.post_at("application/json", body.to_string(), now(), SECRET)
            .await
            .0
    }

    async fn action(
        &self,
        user: &str,
        channel: &str,
        thread_ts: &str,
        action_id: &str,
        value: &str,
    ) {
        let payload = json!({"type": "block_actions", "user": {"id": user}, "team": {"id": "T0FAKE"},
            "channel": {"id": channel},
            "container": {"type": "message", "channel_id": channel, "thread_ts": thread_ts},
            "response_url": self.slack.response_url("a1"),
            "actions": [{"action_id": action_id, "value": value, "type": "button"}]});
        let body: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &payload.to_string())
            .finish();
        let (status, _) = self
            .post_at("application/x-www-form-urlencoded", body, now(), SECRET)
            .await;
        assert_eq!(status, 200);
    }

    async fn stop(self) {
        self.bridge.shutdown().await;
        if let Some(d) = self.daemon {
            d.stop().await;
        }
    }
}

fn mention(user: &str, channel: &str, ts: &str, text: &str) -> Value {
    json!({"type": "app_mention", "user": user, "channel": channel, "ts": ts,
        "text": format!("<@U0BOT> {text}")})
}

/// Every string of a recorded message (text and blocks).
fn shown(c: &crate::fake_slack::Call) -> String {
    format!("{} {}", c.args["text"], c.args["blocks"])
}

/// The value of the first button with `action_id` in the recorded messages.
fn button(calls: &[crate::fake_slack::Call], action_id: &str) -> String {
    calls
        .iter()
        .flat_map(|c| c.args["blocks"].as_array().cloned().unwrap_or_default())
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
        .find(|e| e["action_id"] == action_id)
        .and_then(|e| e["value"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no {action_id} button in {calls:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_mention_gets_a_reply_in_its_thread_with_citations() {
    let s = setup().await;
    // alice has no Slack alias: she is found by her e-mail (users.info).
    let ack = s
        .event(
            "Ev1",
            mention(
                "U0ALICE",
                STAFF_CHANNEL,
                "1700000001.000100",
                "How do I connect to the VPN?",
            ),
        )
        .await;
    assert_eq!(ack, 200);
    s.bridge.idle().await;
    let posts = s.slack.calls_to("chat.postMessage");
    assert_eq!(posts.len(), 1, "{posts:?}");
    let p = &posts[0];
    assert_eq!(p.args["channel"], STAFF_CHANNEL);
    assert_eq!(p.args["thread_ts"], "1700000001.000100");
    let text = shown(p);
    assert!(text.contains("Sources"), "{text}");
    assert!(text.contains("[1] <file://"), "citation links: {text}");
    assert!(text.contains("vpn.md"), "{text}");
    assert_eq!(s.slack.calls_to("users.info").len(), 1);
    assert_eq!(
        s.bridge.metrics().get(
            "docent_slack_answers_total",
            &[("where", "channel"), ("status", "answered")]
        ),
        1
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_event_is_answered_once() {
    let s = setup().await;
    let ev = mention(
        "U0HANA",
        STAFF_CHANNEL,
        "1700000002.000100",
        "How do I connect to the VPN?",
    );
    assert_eq!(s.event("Ev2", ev.clone()).await, 200);
    // Slack retries with the same event id when the first delivery looked slow.
    assert_eq!(s.event("Ev2", ev.clone()).await, 200);
    // The same message as a plain `message` event (another subscription) is the same question.
    let mut msg = ev.clone();
    msg["type"] = json!("message");
    msg["channel_type"] = json!("channel");
    assert_eq!(s.event("Ev3", msg).await, 200);
    s.bridge.idle().await;
    assert_eq!(s.slack.calls_to("chat.postMessage").len(), 1);
    assert_eq!(
        s.bridge.metrics().get("docent_slack_duplicates_total", &[]),
        1
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_signature_or_an_old_timestamp_is_401_and_nothing_is_asked() {
    let s = setup().await;
    let body = json!({"type": "event_callback", "event_id": "Ev4",
        "event": mention("U0HANA", STAFF_CHANNEL, "1700000004.000100", HR_QUESTION)})
    .to_string();
    let (bad_sig, _) = s
        .post_at("application/json", body.clone(), now(), "not-the-secret")
        .await;
    let (old, _) = s
        .post_at("application/json", body.clone(), now() - 301, SECRET)
        .await;
    // A valid signature over a different body.
    let ts = now().to_string();
    let sig = docent_slack::verify::sign(SECRET, &ts, b"{}");
    let forged = reqwest::Client::new()
        .post(s.url())
        .header("content-type", "application/json")
        .header("x-slack-request-timestamp", &ts)
        .header("x-slack-signature", sig)
        .body(body.clone())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!((bad_sig, old, forged), (401, 401, 401));
    s.bridge.idle().await;
    assert!(s.slack.calls().is_empty(), "{:?}", s.slack.calls());
    assert!(
        !s.env
            .audit_records()
            .iter()
            .any(|r| r["caller"] == "slack-bridge"),
        "nothing may be asked for an unverified request"
    );
    assert_eq!(
        s.bridge.metrics().get("docent_slack_rejected_total", &[]),
        3
    );
    // The same body, signed properly, is accepted: the refusals were about the signature.
    assert_eq!(
        s.post_at("application/json", body, now(), SECRET).await.0,
        200
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_verification_returns_the_challenge() {
    let s = setup().await;
    let body = json!({"type": "url_verification", "token": "t", "challenge": "c-4f2a"}).to_string();
    let (status, text) = s.post_at("application/json", body, now(), SECRET).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["challenge"],
        "c-4f2a"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hr_question_in_a_channel_leaks_nothing_and_the_private_answer_reaches_only_the_asker() {
    let s = setup().await;
    let thread = "1700000005.000100";
    s.event("Ev5", mention("U0HANA", STAFF_CHANNEL, thread, HR_QUESTION))
        .await;
    s.bridge.idle().await;
    let posts = s.slack.calls_to("chat.postMessage");
    assert!(!posts.is_empty());
    for p in &posts {
        let text = shown(p);
        for leak in HR_ONLY {
            assert!(!text.contains(leak), "channel post leaks {leak:?}: {text}");
        }
    }
    // hana asks for her own answer: it arrives as an ephemeral message to her alone.
    let id = button(&posts, docent_slack::render::ACTION_PRIVATE);
    s.action(
        "U0HANA",
        STAFF_CHANNEL,
        thread,
        docent_slack::render::ACTION_PRIVATE,
        &id,
    )
    .await;
    s.bridge.idle().await;
    let private = s.slack.calls_to("chat.postEphemeral");
    assert!(!private.is_empty());
    assert!(private.iter().all(|c| c.args["user"] == "U0HANA"));
    let text: String = private.iter().map(shown).collect();
    assert!(text.contains("148,000 to 172,000 EUR"), "{text}");
    assert!(text.contains("compensation-bands-2027.md"), "{text}");
    // Nothing new was posted in the channel.
    assert_eq!(s.slack.calls_to("chat.postMessage").len(), posts.len());
    // Another member pressing the same button gets their own access: nothing from HR.
    s.action(
        "U0ALICE",
        STAFF_CHANNEL,
        thread,
        docent_slack::render::ACTION_PRIVATE,
        &id,
    )
    .await;
    s.bridge.idle().await;
    let alice: String = s
        .slack
        .calls_to("chat.postEphemeral")
        .iter()
        .filter(|c| c.args["user"] == "U0ALICE")
        .map(shown)
        .collect();
    assert!(!alice.is_empty());
    for leak in HR_ONLY {
        assert!(
            !alice.contains(leak),
            "alice's private answer leaks {leak:?}"
        );
    }
    s.stop().await;
}

/// Session 34's review: button ids were a counter and the process id, which repeat after a
/// restart, and a press was not checked against the thread it came from, so an old button
/// answered whatever question had its id now. A press answers only its own thread's question.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_private_answer_button_answers_only_the_question_of_its_own_thread() {
    let s = setup().await;
    let thread = "1700000005.000300";
    s.event(
        "Ev5b",
        mention("U0HANA", STAFF_CHANNEL, thread, HR_QUESTION),
    )
    .await;
    s.bridge.idle().await;
    let id = button(
        &s.slack.calls_to("chat.postMessage"),
        docent_slack::render::ACTION_PRIVATE,
    );
    let asks = || {
        s.env
            .audit_records()
            .iter()
            .filter(|r| r["method"].as_str().is_some_and(|m| m.contains("Ask")))
            .count()
    };
    let before = asks();
    // The same id pressed in another channel's thread, and in another thread of this one.
    for (channel, ts) in [("C0GENERAL", thread), (STAFF_CHANNEL, "1700000005.000400")] {
        s.action(
            "U0HANA",
            channel,
            ts,
            docent_slack::render::ACTION_PRIVATE,
            &id,
        )
        .await;
        s.bridge.idle().await;
    }
    let told: Vec<String> = s
        .slack
        .calls_to("chat.postEphemeral")
        .iter()
        .map(shown)
        .collect();
    assert_eq!(told.len(), 2, "{told:?}");
    assert!(told.iter().all(|t| t.contains("too old")), "{told:?}");
    assert_eq!(asks(), before, "a stray button asked Docent");
    assert!(id.len() > 30, "the id is not random: {id}");
    s.stop().await;
}

/// Session 34's review: a direct message with a file attached (`file_share`) was dropped
/// without a word; edits and other subtypes are still no questions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_message_with_a_file_is_answered_and_an_edit_is_not() {
    let s = setup().await;
    let dm = |subtype: &str, ts: &str| {
        json!({"type": "message", "subtype": subtype, "channel_type": "im", "user": "U0ALICE",
            "channel": "D0ALICE", "ts": ts, "text": "How do I connect to the VPN?"})
    };
    s.event("Ev40", dm("message_changed", "1700000040.000100"))
        .await;
    s.bridge.idle().await;
    assert!(s.slack.calls_to("chat.postMessage").is_empty());
    assert!(s.nothing_asked(), "an edit was asked");
    s.event("Ev41", dm("file_share", "1700000041.000100")).await;
    s.bridge.idle().await;
    assert_eq!(s.slack.calls_to("chat.postMessage").len(), 1);
    assert!(!s.nothing_asked(), "the message with a file was not asked");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hr_question_in_a_dm_is_answered_with_citations() {
    let s = setup().await;
    let ev = json!({"type": "message", "channel_type": "im", "user": "U0HANA",
        "channel": "D0HANA", "ts": "1700000006.000100", "text": HR_QUESTION});
    s.event("Ev6", ev).await;
    s.bridge.idle().await;
    let posts = s.slack.calls_to("chat.postMessage");
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].args["channel"], "D0HANA");
    let text = shown(&posts[0]);
    assert!(text.contains("148,000 to 172,000 EUR"), "{text}");
    assert!(text.contains("compensation-bands-2027.md|"), "{text}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmapped_user_is_refused_and_nothing_is_answered() {
    let s = setup().await;
    s.event(
        "Ev7",
        mention(
            "U0NOBODY",
            STAFF_CHANNEL,
            "1700000007.000100",
            "How do I connect to the VPN?",
        ),
    )
    .await;
    s.bridge.idle().await;
    assert!(s.slack.calls_to("chat.postMessage").is_empty());
    let refusal = s.slack.calls_to("chat.postEphemeral");
    assert_eq!(refusal.len(), 1);
    assert_eq!(refusal[0].args["user"], "U0NOBODY");
    assert!(shown(&refusal[0]).contains("can't match your Slack account"));
    assert!(s.nothing_asked(), "nothing was asked");
    assert_eq!(s.refusals("unmapped_user"), 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_connect_stranger_with_an_employees_address_is_not_that_employee() {
    let s = setup().await;
    // Another organisation's account whose profile shows alice's address.
    s.slack.add_stranger("U0EXT", "alice@fernhill.example");
    let ev = json!({"type": "message", "channel_type": "im", "user": "U0EXT",
        "channel": "D0EXT", "ts": "1700000009.000100", "text": "How do I connect to the VPN?"});
    s.event("Ev9", ev).await;
    s.bridge.idle().await;
    assert!(s.nothing_asked(), "nothing was asked");
    assert_eq!(s.refusals("unmapped_user"), 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_of_another_workspace_is_not_mapped_by_its_email() {
    let s = setup().await;
    // Its event arrives through this workspace (a shared DM), but the account is not ours.
    s.slack
        .add_foreign_user("U0FOREIGN", "alice@fernhill.example");
    let ev = json!({"type": "message", "channel_type": "im", "user": "U0FOREIGN",
        "channel": "D0FOREIGN", "ts": "1700000009.000400", "text": "How do I connect to the VPN?"});
    s.event("Ev9d", ev).await;
    s.bridge.idle().await;
    assert!(s.nothing_asked(), "nothing was asked");
    assert_eq!(s.refusals("unmapped_user"), 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_pinned_home_no_one_is_mapped_by_email() {
    let s = setup_pinned("").await;
    // alice's address is an identity alias, but no account's home is known: another
    // organisation's account could show it, so it names no one.
    let ev = json!({"type": "message", "channel_type": "im", "user": "U0ALICE",
        "channel": "D0ALICE", "ts": "1700000009.000500", "text": "How do I connect to the VPN?"});
    s.event("Ev9e", ev).await;
    s.bridge.idle().await;
    assert!(s.nothing_asked(), "nothing was asked");
    assert_eq!(s.refusals("unmapped_user"), 1);
    assert!(s.slack.calls_to("users.info").is_empty());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enterprise_pin_maps_only_its_organisations_accounts_by_email() {
    let s = setup_pinned("enterprise_id = \"E0FAKE\"").await;
    // Another organisation's account showing alice's address, not marked a stranger.
    s.slack
        .add_foreign_user("U0FOREIGN", "alice@fernhill.example");
    let dm = |user: &str, ts: &str| {
        json!({"type": "message", "channel_type": "im", "user": user,
            "channel": format!("D{user}"), "ts": ts, "text": "How do I connect to the VPN?"})
    };
    s.event("Ev9f", dm("U0FOREIGN", "1700000009.000600")).await;
    s.bridge.idle().await;
    assert!(s.nothing_asked(), "nothing was asked");
    assert_eq!(s.refusals("unmapped_user"), 1);
    // alice's own account, of the organisation: answered.
    s.event("Ev9g", dm("U0ALICE", "1700000009.000700")).await;
    s.bridge.idle().await;
    assert!(!s.nothing_asked(), "alice was answered");
    assert_eq!(s.refusals("unmapped_user"), 1);
    s.stop().await;
}

/// A request without Slack's signature headers is refused before its body is read: a client
/// that announces a body and never sends it does not hold the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_request_is_refused_without_waiting_for_its_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = setup().await;
    let mut conn = tokio::net::TcpStream::connect(s.bridge.local_addr())
        .await
        .unwrap();
    conn.write_all(
        b"POST /slack/events HTTP/1.1\r\nHost: bridge\r\ncontent-type: application/json\r\n\
          content-length: 1000000\r\n\r\n{\"type\":",
    )
    .await
    .unwrap();
    // The body never comes: the answer must not wait for it (the deadline only stops a hang).
    let mut head = [0u8; 12];
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        conn.read_exact(&mut head),
    )
    .await
    .expect("the bridge waited for a body it will not verify")
    .unwrap();
    assert_eq!(&head, b"HTTP/1.1 401");
    assert_eq!(
        s.bridge
            .metrics()
            .get("docent_slack_rejected_total", &[("reason", "missing")]),
        1
    );
    s.stop().await;
}

/// A guest (single- or multi-channel, not a Docent identity) would read a channel answer: the
/// default audience is not used where one is a member; a channel whose audience the
/// administrator chose is answered as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_with_a_guest_gets_no_answer_from_the_default_audience() {
    let s = setup().await;
    s.slack.add_guest("U0GUEST", "C0GUESTS");
    let q = "How do I connect to the VPN?";
    s.event(
        "Ev12",
        mention("U0ALICE", "C0GUESTS", "1700000012.000100", q),
    )
    .await;
    s.bridge.idle().await;
    assert!(s.slack.calls_to("chat.postMessage").is_empty());
    assert!(s.nothing_asked(), "nothing was asked");
    assert_eq!(s.refusals("guests_in_channel"), 1);
    // The refusal went to the asker alone.
    let told = s.slack.calls_to("chat.postEphemeral");
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0].args["user"], "U0ALICE");
    // A channel without guests, on the default audience: answered.
    s.event(
        "Ev13",
        mention("U0ALICE", "C0GENERAL", "1700000013.000100", q),
    )
    .await;
    s.bridge.idle().await;
    assert_eq!(s.slack.calls_to("chat.postMessage").len(), 1);
    assert_eq!(s.refusals("guests_in_channel"), 1);
    s.stop().await;
}

/// Found by a review: a channel given `everyone` explicitly skipped the guest check that the
/// same audience gets by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_given_everyone_explicitly_is_checked_for_guests_too() {
    let s = setup().await;
    s.slack.add_guest("U0GUEST", "C0EXPLICIT");
    s.event(
        "Ev70",
        mention(
            "U0ALICE",
            "C0EXPLICIT",
            "1700000070.000100",
            "How do I connect to the VPN?",
        ),
    )
    .await;
    s.bridge.idle().await;
    assert!(s.slack.calls_to("chat.postMessage").is_empty());
    assert!(s.nothing_asked());
    assert_eq!(s.refusals("guests_in_channel"), 1);
    s.stop().await;
}

/// A failed reading of the workspace's accounts (`users.list`) is given again for a while, not
/// read again for every question (found by a review: on a large workspace each question read
/// about a hundred pages, against Slack's rate limits, while the reading failed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reading_of_the_accounts_is_not_repeated_for_every_question() {
    let s = setup().await;
    s.slack.rate_limit("users.list", 1_000, 0);
    let q = "How do I connect to the VPN?";
    s.event(
        "Ev90",
        mention("U0ALICE", "C0GENERAL", "1700000090.000100", q),
    )
    .await;
    s.bridge.idle().await;
    let first = s.slack.calls_to("users.list").len();
    assert!(first >= 1, "the accounts were read");
    s.event(
        "Ev91",
        mention("U0ALICE", "C0GENERAL", "1700000091.000100", q),
    )
    .await;
    s.bridge.idle().await;
    assert_eq!(s.slack.calls_to("users.list").len(), first);
    s.stop().await;
}

/// A channel answered on the default audience; then `guest` joins it (set up in the fake by
/// `add`), the join event arrives, and the next question there gets no answer.
async fn a_join_ends_default_answers(guest: &str, add: impl FnOnce(&FakeSlack)) {
    let s = setup().await;
    let q = "How do I connect to the VPN?";
    s.event(
        "Ev14",
        mention("U0ALICE", "C0GENERAL", "1700000014.000100", q),
    )
    .await;
    s.bridge.idle().await;
    assert_eq!(s.slack.calls_to("chat.postMessage").len(), 1);
    add(&s.slack);
    s.event(
        "Ev15",
        serde_json::json!({"type": "member_joined_channel", "user": guest,
            "channel": "C0GENERAL", "channel_type": "C", "event_ts": "1700000015.000100"}),
    )
    .await;
    s.event(
        "Ev16",
        mention("U0ALICE", "C0GENERAL", "1700000016.000100", q),
    )
    .await;
    s.bridge.idle().await;
    assert_eq!(
        s.slack.calls_to("chat.postMessage").len(),
        1,
        "not answered again"
    );
    assert_eq!(s.refusals("guests_in_channel"), 1);
    s.stop().await;
}

/// Session 42's review: an employee made a guest stayed an employee for the caches' TTL. The
/// `user_change` event makes the next question check the channel again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_employee_made_a_guest_ends_default_answers_at_the_next_question() {
    let s = setup().await;
    let q = "How do I connect to the VPN?";
    s.event(
        "Ev17",
        mention("U0ALICE", "C0GENERAL", "1700000017.000100", q),
    )
    .await;
    s.bridge.idle().await;
    assert_eq!(s.slack.calls_to("chat.postMessage").len(), 1);
    // U0NOBODY, a member of every channel, is made a guest.
    s.slack.add_guest_account("U0NOBODY");
    s.event(
        "Ev18",
        serde_json::json!({"type": "user_change", "event_ts": "1700000018.000100",
            "user": {"id": "U0NOBODY", "deleted": false, "is_restricted": true}}),
    )
    .await;
    s.event(
        "Ev19",
        mention("U0ALICE", "C0GENERAL", "1700000019.000100", q),
    )
    .await;
    s.bridge.idle().await;
    assert_eq!(
        s.slack.calls_to("chat.postMessage").len(),
        1,
        "not answered again"
    );
    assert_eq!(s.refusals("guests_in_channel"), 1);
    s.stop().await;
}

/// Session 43: an employee made a guest kept asking in direct messages as the employee for
/// the user cache's TTL. The change drops the account's mapping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_employee_made_a_guest_no_longer_asks_as_the_employee() {
    let s = setup().await;
    let dm = |ts: &str| {
        json!({"type": "message", "channel_type": "im", "user": "U0ALICE",
            "channel": "D0ALICE", "ts": ts, "text": "How do I connect to the VPN?"})
    };
    s.event("Ev24", dm("1700000024.000100")).await;
    s.bridge.idle().await;
    assert!(!s.nothing_asked(), "alice was answered");
    assert_eq!(s.refusals("unmapped_user"), 0);
    s.slack.add_guest_account("U0ALICE");
    s.event(
        "Ev25",
        json!({"type": "user_change", "event_ts": "1700000025.000100",
            "user": {"id": "U0ALICE", "deleted": false, "is_restricted": true}}),
    )
    .await;
    s.event("Ev26", dm("1700000026.000100")).await;
    s.bridge.idle().await;
    assert_eq!(s.refusals("unmapped_user"), 1);
    s.stop().await;
}

/// Session 43: an employee made a guest while the bridge was reading the account list (the
/// page showing them read before the change) stayed an employee in the list kept, for the
/// cache's TTL. The change is applied to the list read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_employee_made_a_guest_during_the_account_reading_stays_a_guest() {
    let s = setup().await;
    let q = "How do I connect to the VPN?";
    let gate = s.slack.hold_users_list_page2();
    s.event(
        "Ev21",
        mention("U0ALICE", "C0GENERAL", "1700000021.000100", q),
    )
    .await;
    // The second page (U0NOBODY, an employee as read) is held.
    for _ in 0..500 {
        if s.slack.calls_to("users.list").len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(s.slack.calls_to("users.list").len(), 2, "second page asked");
    s.slack.add_guest_account("U0NOBODY");
    s.event(
        "Ev22",
        serde_json::json!({"type": "user_change", "event_ts": "1700000022.000100",
            "user": {"id": "U0NOBODY", "deleted": false, "is_restricted": true}}),
    )
    .await;
    gate.notify_one();
    s.bridge.idle().await;
    s.event(
        "Ev23",
        mention("U0ALICE", "C0GENERAL", "1700000023.000100", q),
    )
    .await;
    s.bridge.idle().await;
    assert_eq!(
        s.slack.calls_to("users.list").len(),
        2,
        "the list read once"
    );
    assert_eq!(
        s.slack.calls_to("chat.postMessage").len(),
        0,
        "no answer with a guest in the channel"
    );
    assert_eq!(s.refusals("guests_in_channel"), 2);
    s.stop().await;
}

/// A guest account made after the bridge read the workspace's guests joins a channel it
/// answered: the join (`member_joined_channel`) makes the next question check the channel
/// again and ask about the new member alone, and the default audience is no longer used there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_who_joins_a_channel_is_seen_at_its_next_question() {
    a_join_ends_default_answers("U0NEWGUEST", |f| f.add_guest("U0NEWGUEST", "C0GENERAL")).await;
}

/// A guest whose join the channel's member list does not show yet is counted by the join
/// event alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joined_guest_counts_before_the_member_list_shows_them() {
    a_join_ends_default_answers("U0LAGGING", |f| f.add_guest_account("U0LAGGING")).await;
}

/// Session 31's review: a guest invited straight into a channel after the bridge read the
/// workspace's accounts, before the bot was in that channel to see the join, counted as an
/// employee. A member the account list does not know is asked about alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_invited_before_the_bot_joined_is_seen() {
    let s = setup().await;
    let q = "How do I connect to the VPN?";
    s.event(
        "Ev30",
        mention("U0ALICE", "C0GENERAL", "1700000030.000100", q),
    )
    .await;
    s.bridge.idle().await;
    assert_eq!(s.slack.calls_to("chat.postMessage").len(), 1);
    // No join event reaches the bridge: it was not in the channel yet.
    s.slack.add_guest("U0INVITED", "C0PROJECT");
    s.event(
        "Ev31",
        mention("U0ALICE", "C0PROJECT", "1700000031.000100", q),
    )
    .await;
    s.bridge.idle().await;
    assert_eq!(
        s.slack.calls_to("chat.postMessage").len(),
        1,
        "answered with the default audience in a channel with a guest"
    );
    assert_eq!(s.refusals("guests_in_channel"), 1);
    s.stop().await;
}

/// Session 42's review: a chosen group audience skipped the guest check, so a guest invited
/// into `#hr-team` read the HR group's answers. Only a channel opened to guests skips it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_in_a_channel_with_a_chosen_audience_ends_its_answers_unless_it_is_open() {
    let s = setup().await;
    let q = "How do I connect to the VPN?";
    s.slack.add_guest("U0INVITED", STAFF_CHANNEL);
    s.event(
        "Ev32",
        mention("U0ALICE", STAFF_CHANNEL, "1700000032.000100", q),
    )
    .await;
    s.bridge.idle().await;
    assert!(s.slack.calls_to("chat.postMessage").is_empty());
    assert!(s.nothing_asked(), "nothing was asked");
    assert_eq!(s.refusals("guests_in_channel"), 1);
    s.slack.add_guest("U0PARTNER", PARTNER_CHANNEL);
    s.event(
        "Ev33",
        mention("U0ALICE", PARTNER_CHANNEL, "1700000033.000100", q),
    )
    .await;
    s.bridge.idle().await;
    assert_eq!(s.slack.calls_to("chat.postMessage").len(), 1);
    assert_eq!(s.refusals("guests_in_channel"), 1);
    s.stop().await;
}

/// Session 34's review: another organisation's member is none of Slack's guest kinds, so a
/// channel with one, whose event did not say it was shared, was answered as `everyone`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_of_another_organisation_ends_default_answers_in_a_channel() {
    let s = setup().await;
    // A member of every channel (the fake's member lists), not marked a stranger.
    s.slack.add_foreign_user("U0FOREIGN", "bob@partner.example");
    s.event(
        "Ev10f",
        mention(
            "U0ALICE",
            "C0GENERAL",
            "1700000010.000200",
            "How do I connect to the VPN?",
        ),
    )
    .await;
    s.bridge.idle().await;
    assert!(s.slack.calls_to("chat.postMessage").is_empty());
    assert!(s.nothing_asked(), "nothing was asked");
    assert_eq!(s.refusals("guests_in_channel"), 1);
    s.stop().await;
}

/// Slack sends `is_ext_shared_channel` with every event; one without it is taken as shared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_does_not_say_whether_its_channel_is_shared_counts_as_shared() {
    let s = setup().await;
    let body = json!({"type": "event_callback", "team_id": "T0FAKE", "enterprise_id": "E0FAKE",
        "event_id": "Ev10g", "event_time": now(),
        "event": mention("U0ALICE", "C0CONNECT", "1700000010.000300", "How do I connect to the VPN?")});
    let (status, _) = s
        .post_at("application/json", body.to_string(), now(), SECRET)
        .await;
    assert_eq!(status, 200);
    s.bridge.idle().await;
    assert!(s.slack.calls_to("chat.postMessage").is_empty());
    assert!(s.nothing_asked(), "nothing was asked");
    assert_eq!(s.refusals("shared_channel"), 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_shared_with_another_organisation_is_answered_only_with_a_chosen_audience() {
    let s = setup().await;
    let q = "How do I connect to the VPN?";
    // A chosen audience alone is not enough: the channel must be open to guests.
    s.event_in(
        "Ev10b",
        mention("U0ALICE", STAFF_CHANNEL, "1700000010.000200", q),
        true,
    )
    .await;
    s.bridge.idle().await;
    assert!(s.slack.calls_to("chat.postMessage").is_empty());
    assert_eq!(s.refusals("shared_channel"), 1);
    // No audience chosen for this Slack Connect channel: the default one is not used.
    s.event_in(
        "Ev10",
        mention("U0ALICE", "C0CONNECT", "1700000010.000100", q),
        true,
    )
    .await;
    s.bridge.idle().await;
    assert!(s.slack.calls_to("chat.postMessage").is_empty());
    assert_eq!(s.refusals("shared_channel"), 2);
    // The partner channel's audience was chosen, and the channel opened to guests, by the
    // administrator: answered.
    s.event_in(
        "Ev11",
        mention("U0ALICE", PARTNER_CHANNEL, "1700000011.000100", q),
        true,
    )
    .await;
    s.bridge.idle().await;
    assert_eq!(s.slack.calls_to("chat.postMessage").len(), 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docent_down_gives_an_error_message_in_the_thread() {
    let slack = FakeSlack::start().await;
    // A port nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bridge = docent_slack::start(
        bridge_config(&slack, &format!("http://{closed}")),
        listener,
        None,
    )
    .await
    .unwrap();
    let s = Setup {
        slack,
        bridge,
        env: Env::empty(),
        daemon: None,
    };
    s.event(
        "Ev8",
        mention(
            "U0HANA",
            STAFF_CHANNEL,
            "1700000008.000100",
            "How do I connect to the VPN?",
        ),
    )
    .await;
    s.bridge.idle().await;
    let posts = s.slack.calls_to("chat.postMessage");
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].args["thread_ts"], "1700000008.000100");
    assert!(
        shown(&posts[0]).contains("Docent is not reachable"),
        "{posts:?}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_429_is_retried_after_retry_after() {
    let s = setup().await;
    s.slack.rate_limit("chat.postMessage", 1, 1);
    s.event(
        "Ev9",
        mention(
            "U0HANA",
            STAFF_CHANNEL,
            "1700000009.000100",
            "How do I connect to the VPN?",
        ),
    )
    .await;
    s.bridge.idle().await;
    let posts = s.slack.calls_to("chat.postMessage");
    assert_eq!(posts.len(), 2, "one refused with 429, then the retry");
    assert!(
        posts[1].at.duration_since(posts[0].at) >= Duration::from_secs(1),
        "the retry waited for Retry-After"
    );
    assert_eq!(posts[1].args, posts[0].args);
    assert_eq!(
        s.bridge.metrics().get(
            "docent_slack_api_retries_total",
            &[("method", "chat.postMessage")]
        ),
        1
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_whose_answer_is_lost_is_not_posted_again() {
    let s = setup().await;
    s.slack.lose_answers("chat.postMessage", 1);
    s.event(
        "Ev9b",
        mention(
            "U0HANA",
            STAFF_CHANNEL,
            "1700000009.000200",
            "How do I connect to the VPN?",
        ),
    )
    .await;
    s.bridge.idle().await;
    // Slack posted it and then answered 503: the answer is not posted again; a note follows.
    let posts = s.slack.calls_to("chat.postMessage");
    assert_eq!(posts.len(), 2, "{posts:?}");
    assert!(shown(&posts[0]).contains("VPN"), "{posts:?}");
    assert!(
        shown(&posts[1]).contains("did not confirm the answer"),
        "{posts:?}"
    );
    assert_eq!(
        s.bridge.metrics().get(
            "docent_slack_api_errors_total",
            &[("method", "chat.postMessage"), ("error", "transport")]
        ),
        1
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_workspace_is_not_served() {
    let s = setup().await;
    let status = s
        .event_from(
            "T0OTHER",
            "Ev9c",
            mention(
                "U0HANA",
                STAFF_CHANNEL,
                "1700000009.000300",
                "How do I connect to the VPN?",
            ),
            false,
        )
        .await;
    s.bridge.idle().await;
    assert_eq!(
        status, 200,
        "acknowledged, so that Slack does not redeliver it"
    );
    assert!(s.slack.calls().is_empty(), "{:?}", s.slack.calls());
    assert!(s.nothing_asked());
    assert_eq!(
        s.bridge.metrics().get(
            "docent_slack_rejected_total",
            &[("reason", "other_workspace")]
        ),
        1
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feedback_button_is_stored_in_docent() {
    let s = setup().await;
    let ev = json!({"type": "message", "channel_type": "im", "user": "U0HANA",
        "channel": "D0HANA", "ts": "1700000010.000100", "text": "How do I connect to the VPN?"});
    s.event("Ev10", ev).await;
    s.bridge.idle().await;
    let posts = s.slack.calls_to("chat.postMessage");
    let value = button(&posts, docent_slack::render::ACTION_FEEDBACK_DOWN);
    s.action(
        "U0HANA",
        "D0HANA",
        "1700000010.000100",
        docent_slack::render::ACTION_FEEDBACK_DOWN,
        &value,
    )
    .await;
    s.bridge.idle().await;
    let d = s.daemon.as_ref().unwrap();
    let records = d.feedback_export().await.records;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].identity, "hana");
    assert!(!records[0].up);
    let thanks = s.slack.calls_to("chat.postEphemeral");
    assert!(
        thanks
            .iter()
            .any(|c| shown(c).contains("feedback was recorded"))
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slash_command_answers_privately_under_the_askers_access() {
    let s = setup().await;
    let body: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("command", "/docent")
        .append_pair("team_id", "T0FAKE")
        .append_pair("text", HR_QUESTION)
        .append_pair("user_id", "U0HANA")
        .append_pair("channel_id", STAFF_CHANNEL)
        .append_pair("response_url", &s.slack.response_url("cmd1"))
        .finish();
    let (status, ack) = s
        .post_at("application/x-www-form-urlencoded", body, now(), SECRET)
        .await;
    assert_eq!(status, 200);
    assert!(ack.contains("ephemeral"), "{ack}");
    s.bridge.idle().await;
    assert!(s.slack.calls_to("chat.postMessage").is_empty());
    let r = s.slack.calls_to("response_url");
    assert!(r.iter().all(|c| c.args["response_type"] == "ephemeral"));
    assert!(r.iter().map(shown).collect::<String>().contains("148,000"));
    s.stop().await;
}

/// Session 31's review: only event callbacks were deduplicated, so a captured slash command
/// (or button press) could be sent again within the signature's five minutes and asked again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_slash_command_is_not_asked_again() {
    let s = setup().await;
    let body: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("command", "/docent")
        .append_pair("team_id", "T0FAKE")
        .append_pair("text", "How do I connect to the VPN?")
        .append_pair("user_id", "U0HANA")
        .append_pair("channel_id", STAFF_CHANNEL)
        .append_pair("response_url", &s.slack.response_url("cmd2"))
        .finish();
    let at = now();
    // The same request again, and again with its signature's hex in capitals (which verifies
    // too: the replay key must not tell them apart).
    for upper in [false, false, true] {
        let (status, _) = s
            .post_signed(
                "application/x-www-form-urlencoded",
                body.clone(),
                at,
                SECRET,
                |sig| match upper {
                    true => format!("v0={}", sig.trim_start_matches("v0=").to_uppercase()),
                    false => sig,
                },
            )
            .await;
        assert_eq!(status, 200);
        s.bridge.idle().await;
    }
    let answers = s.slack.calls_to("response_url");
    assert_eq!(answers.len(), 1, "{answers:?}");
    s.stop().await;
}

/// The Python venv of `scripts/setup-python-tests.sh`.
pub fn python() -> std::path::PathBuf {
    let env = std::env::var_os("DOCENT_PYENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                .join(".cache/docent/pyenv")
        });
    let py = env.join("bin/python");
    assert!(
        py.exists(),
        "{} missing: run scripts/setup-python-tests.sh",
        py.display()
    );
    py
}

pub async fn run_python(args: Vec<String>) -> std::process::Output {
    let py = python();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(py)
            .args(&args)
            .output()
            .expect("run python")
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_sdk_web_client_accepts_the_fake() {
    let slack = FakeSlack::start().await;
    slack.add_user("U0ALICE", "alice@fernhill.example");
    slack.rate_limit("chat.postEphemeral", 1, 1);
    let script = r#"
import sys
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
c = WebClient(token=sys.argv[2], base_url=sys.argv[1] + "/")
c.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=1))
assert c.auth_test()["user_id"] == "U0BOT"
r = c.chat_postMessage(channel="C0STAFF", thread_ts="1.2", text="hi", blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}])
assert r["ok"] and r["ts"] and r["channel"] == "C0STAFF", r
assert c.chat_postEphemeral(channel="C0STAFF", user="U0ALICE", text="psst")["message_ts"]
assert c.users_info(user="U0ALICE")["user"]["profile"]["email"] == "alice@fernhill.example"
try:
    c.users_info(user="U0NOBODY")
    raise SystemExit("expected an error")
except SlackApiError as e:
    assert e.response["error"] == "user_not_found", e.response
print("ok")
"#;
    let out = run_python(vec![
        "-c".into(),
        script.into(),
        slack.api_url(),
        BOT_TOKEN.into(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    // What slack_sdk sent, the fake parsed: JSON bodies and GET/form arguments alike.
    assert_eq!(
        slack.calls_to("chat.postMessage")[0].args["thread_ts"],
        "1.2"
    );
    assert_eq!(slack.calls_to("users.info")[0].args["user"], "U0ALICE");
    // The 429 was retried by slack_sdk's own handler.
    assert_eq!(slack.calls_to("chat.postEphemeral").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_sdk_signature_verifier_agrees_with_ours() {
    // Slack's documented test vector (shared/DEPS.md) and a fresh request signed by the bridge.
    let vector_body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    let vector_sig = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
    let ts = now().to_string();
    let body = json!({"type": "event_callback", "event": {"text": "ünïcode & <@U1>"}}).to_string();
    let ours = docent_slack::verify::sign(SECRET, &ts, body.as_bytes());
    let script = r#"
import sys, time
from slack_sdk.signature import SignatureVerifier
vsecret, vts, vbody, vsig, secret, ts, body, sig = sys.argv[1:]
# The vector is from 2018: verify it at its own time.
v = SignatureVerifier(vsecret, clock=type("C", (), {"now": lambda self: float(vts)})())
assert v.is_valid(body=vbody, timestamp=vts, signature=vsig)
assert v.generate_signature(timestamp=vts, body=vbody) == vsig
s = SignatureVerifier(secret)
assert s.is_valid(body=body, timestamp=ts, signature=sig)
assert not s.is_valid(body=body + " ", timestamp=ts, signature=sig)
assert not s.is_valid(body=body, timestamp=str(int(ts) - 301), signature=s.generate_signature(timestamp=str(int(ts) - 301), body=body))
print(s.generate_signature(timestamp=ts, body=body))
"#;
    let out = run_python(
        [
            "-c",
            script,
            "8f742231b10e8888abcd99yyyzzz85a5",
            "1531420618",
            vector_body,
            vector_sig,
            SECRET,
            &ts,
            &body,
            &ours,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(theirs, ours);
    // And ours accepts what slack_sdk signs, and Slack's vector.
    assert!(
        docent_slack::verify::verify(SECRET, Some(&ts), Some(&theirs), body.as_bytes(), now())
            .is_ok()
    );
    assert!(
        docent_slack::verify::verify(
            "8f742231b10e8888abcd99yyyzzz85a5",
            Some("1531420618"),
            Some(vector_sig),
            vector_body.as_bytes(),
            1531420618
        )
        .is_ok()
    );
}
