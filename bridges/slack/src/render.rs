//! Docent answers as Slack messages: the answer text, then its citations as links with titles
//! (and page or section where known); "not found" and guardrail messages as plain text. Slack's
//! limits are respected by splitting — a section's text into pieces of at most
//! [`MAX_SECTION_CHARS`], blocks into messages of at most [`MAX_BLOCKS`] and
//! [`MAX_MESSAGE_CHARS`] — and never by cutting text off.
//!
//! Every string rendered comes from Docent's response (which passed its output guardrails) or is
//! a fixed string of this module; text is escaped for mrkdwn, so a document cannot ping
//! `<!channel>` or forge a link.

use docent_client::pb;
use serde_json::{Value, json};

/// Slack: a section block's text is at most 3,000 characters.
pub const MAX_SECTION_CHARS: usize = 3000;
/// Slack: at most 50 blocks per message (kept below, so actions fit).
pub const MAX_BLOCKS: usize = 45;
/// Our bound on a message's text (Slack truncates `text` past 40,000 characters).
pub const MAX_MESSAGE_CHARS: usize = 12_000;

pub const ACTION_PRIVATE: &str = "docent_private";
pub const ACTION_FEEDBACK_UP: &str = "docent_feedback_up";
pub const ACTION_FEEDBACK_DOWN: &str = "docent_feedback_down";

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The notification / fallback text: the same content as the blocks.
    pub text: String,
    pub blocks: Vec<Value>,
}

impl Message {
    pub fn plain(text: &str) -> Vec<Message> {
        pack(
            split(&escape(text), MAX_SECTION_CHARS)
                .into_iter()
                .map(section)
                .collect(),
            Vec::new(),
        )
    }
}

/// What to offer under an answer.
#[derive(Debug, Clone, Default)]
pub struct Offers {
    /// A "show me privately" button carrying this value (a pending question's id).
    pub private: Option<String>,
    /// Feedback buttons carrying this value (the conversation turn).
    pub feedback: Option<String>,
    /// A note above the answer (fixed text: where the answer's documents come from).
    pub note: Option<String>,
}

/// `&`, `<` and `>` escaped as Slack's mrkdwn requires, and the broadcast words `@here`,
/// `@channel` and `@everyone` broken by a word joiner after the `@`, so that no text from a
/// document or an answer can notify a channel (text objects are also sent `verbatim`).
pub fn escape(s: &str) -> String {
    let s = s
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    if !s.contains('@') {
        return s;
    }
    let mut out = String::with_capacity(s.len() + 8);
    let mut rest = s.as_str();
    while let Some(at) = rest.find('@') {
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let word: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric())
            .collect::<String>()
            .to_lowercase();
        if matches!(word.as_str(), "here" | "channel" | "everyone") {
            out.push('\u{2060}');
        }
    }
    out.push_str(rest);
    out
}

/// A URL for `<url|text>`: characters that would end or split the link percent-encoded, and
/// a `%` that starts no escape; an escape the URL already has (`%20`) is kept as it is.
fn link_url(u: &str) -> String {
    let b = u.as_bytes();
    let mut out = String::with_capacity(u.len());
    for (i, c) in u.char_indices() {
        match c {
            '%' if b.len() > i + 2
                && b[i + 1].is_ascii_hexdigit()
                && b[i + 2].is_ascii_hexdigit() =>
            {
                out.push('%')
            }
            '%' => out.push_str("%25"),
            '|' => out.push_str("%7C"),
            '<' => out.push_str("%3C"),
            '>' => out.push_str("%3E"),
            ' ' => out.push_str("%20"),
            '&' => out.push_str("&amp;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` in pieces of at most `max` characters, cut at a paragraph, line, sentence or word end
/// where there is one; the pieces concatenate to `s` exactly. An `&…;` entity is never cut.
pub fn split(s: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    while rest.chars().count() > max {
        let limit = rest.char_indices().nth(max).map_or(rest.len(), |(i, _)| i);
        let window = &rest[..limit];
        let cut = ["\n\n", "\n", ". ", " "]
            .iter()
            .find_map(|sep| {
                window
                    .rfind(sep)
                    .map(|i| i + sep.len())
                    .filter(|&i| i > limit / 2)
            })
            .unwrap_or_else(|| {
                // No boundary: cut at the limit, but not inside an entity.
                match window.rfind('&') {
                    Some(a) if !window[a..].contains(';') && a > 0 => a,
                    _ => limit,
                }
            });
        out.push(rest[..cut].to_string());
        rest = &rest[cut..];
    }
    if !rest.is_empty() || out.is_empty() {
        out.push(rest.to_string());
    }
    out
}

fn section(text: String) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": text, "verbatim": true}})
}

fn block_text(b: &Value) -> &str {
    b["text"]["text"]
        .as_str()
        .or_else(|| b["elements"][0]["text"].as_str())
        .unwrap_or("")
}

/// `s` cut to at most `max` characters, with `…` when cut.
fn shortened(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The most characters of a citation's title, uri shown as text, or section path (before
/// escaping, which at most quintuples them), and of a link's address: a citation line stays
/// well within one section, so that the sources are split between lines, never inside a
/// link (a review: a long title or address split `<url|title>` across two sections).
const CITATION_PART_CHARS: usize = 100;
const CITATION_LINK_CHARS: usize = 1_500;

/// One citation line: `[n] <uri|title> · p. 3 · § A › B`.
pub fn citation_line(n: usize, c: &pb::Citation) -> String {
    let title = if c.title.is_empty() { &c.uri } else { &c.title };
    let title = escape(&shortened(title, CITATION_PART_CHARS)).replace('|', "¦");
    // A link only to a web or file address: Slack reads `<!channel|…>`, `<@U1|…>` and
    // `<#C1|…>` as a mention (a review: a plugin connector's uri could ping a channel).
    let linkable = ["http://", "https://", "file://", "smb://", "nfs://"]
        .iter()
        .any(|s| {
            c.uri
                .get(..s.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(s))
        });
    let link = link_url(&c.uri);
    let mut line = if c.uri.is_empty() || linkable && link.chars().count() > CITATION_LINK_CHARS {
        format!("[{n}] {title}")
    } else if !linkable {
        format!(
            "[{n}] {title} ({})",
            escape(&shortened(&c.uri, CITATION_PART_CHARS))
        )
    } else {
        format!("[{n}] <{link}|{title}>")
    };
    if c.page > 0 {
        line.push_str(&format!(" · p. {}", c.page));
    }
    if !c.heading_path.is_empty() {
        let path = shortened(&c.heading_path.join(" › "), CITATION_PART_CHARS);
        line.push_str(&format!(" · § {}", escape(&path)));
    }
    line
}

/// `*Sources*` and the citation lines, in sections of whole lines.
fn source_sections(lines: &[String]) -> Vec<String> {
    let mut out = vec![String::from("*Sources*")];
    for l in lines {
        let cur = out.last_mut().expect("one at least");
        if cur.chars().count() + 1 + l.chars().count() <= MAX_SECTION_CHARS {
            cur.push('\n');
            cur.push_str(l);
        } else {
            out.push(l.clone());
        }
    }
    out
}

/// The messages for one Docent answer.
pub fn answer(resp: &pb::AskResponse, offers: &Offers) -> Vec<Message> {
    let mut blocks = Vec::new();
    if let Some(note) = &offers.note {
        blocks.push(json!({"type": "context",
                "elements": [{"type": "mrkdwn", "text": escape(note), "verbatim": true}]}));
    }
    let answered = resp.status == pb::AnswerStatus::Answered as i32 && !resp.answer.is_empty();
    if answered {
        blocks.extend(
            split(&escape(&resp.answer), MAX_SECTION_CHARS)
                .into_iter()
                .map(section),
        );
        if !resp.citations.is_empty() {
            let lines: Vec<String> = resp
                .citations
                .iter()
                .enumerate()
                .map(|(i, c)| citation_line(i + 1, c))
                .collect();
            blocks.extend(source_sections(&lines).into_iter().map(section));
        }
    } else {
        let msg = if resp.message.is_empty() {
            "I found no answer in the documents available here."
        } else {
            &resp.message
        };
        blocks.extend(
            split(&escape(msg), MAX_SECTION_CHARS)
                .into_iter()
                .map(section),
        );
    }
    let mut actions = Vec::new();
    if let Some(v) = &offers.private {
        actions.push(
            json!({"type": "button", "action_id": ACTION_PRIVATE, "value": v,
            "text": {"type": "plain_text", "text": "Answer with my access (only I will see it)"}}),
        );
    }
    if answered && let Some(v) = &offers.feedback {
        actions.push(
            json!({"type": "button", "action_id": ACTION_FEEDBACK_UP, "value": v,
            "text": {"type": "plain_text", "text": "👍 Helpful"}}),
        );
        actions.push(
            json!({"type": "button", "action_id": ACTION_FEEDBACK_DOWN, "value": v,
            "text": {"type": "plain_text", "text": "👎 Not helpful"}}),
        );
    }
    pack(blocks, actions)
}

/// Blocks into messages within the limits; the actions block goes last.
fn pack(blocks: Vec<Value>, actions: Vec<Value>) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::new();
    let mut cur = Message {
        text: String::new(),
        blocks: Vec::new(),
    };
    for b in blocks {
        let t = block_text(&b).to_string();
        if !cur.blocks.is_empty()
            && (cur.blocks.len() >= MAX_BLOCKS
                || cur.text.chars().count() + t.chars().count() > MAX_MESSAGE_CHARS)
        {
            out.push(std::mem::replace(
                &mut cur,
                Message {
                    text: String::new(),
                    blocks: Vec::new(),
                },
            ));
        }
        if !cur.text.is_empty() {
            cur.text.push('\n');
        }
        cur.text.push_str(&t);
        cur.blocks.push(b);
    }
    if !actions.is_empty() {
        if cur.blocks.len() >= MAX_BLOCKS {
            out.push(std::mem::replace(
                &mut cur,
                Message {
                    text: String::new(),
                    blocks: Vec::new(),
                },
            ));
        }
        cur.blocks
            .push(json!({"type": "actions", "elements": actions}));
    }
    if !cur.blocks.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_pieces_fit_and_concatenate_to_the_input() {
        let text = "Lorem ipsum dolor sit amet. ".repeat(400) + &"x".repeat(7000) + " &amp; end";
        for max in [10, 100, 3000] {
            let parts = split(&text, max);
            assert!(parts.iter().all(|p| p.chars().count() <= max), "{max}");
            assert_eq!(parts.concat(), text, "{max}");
        }
        let entity = "ab&amp;cd";
        for p in split(entity, 6) {
            assert!(!p.contains('&') || p.contains(';'), "{p}");
        }
        assert_eq!(split("", 5), vec![String::new()]);
    }

    fn resp(answer: &str, n: usize) -> pb::AskResponse {
        pb::AskResponse {
            answer: answer.into(),
            status: pb::AnswerStatus::Answered as i32,
            citations: (0..n)
                .map(|i| pb::Citation {
                    title: format!("Doc <{i}> | x"),
                    uri: format!("https://wiki.example/p{i}?a=1|2"),
                    page: 3,
                    heading_path: vec!["Setup".into(), "VPN".into()],
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_long_answer_is_split_over_blocks_and_messages_without_loss() {
        let answer = "The VPN token resets at midnight [1]. ".repeat(2000);
        let msgs = answer_msgs(&answer, 300);
        assert!(msgs.len() > 1);
        let mut all = String::new();
        for m in &msgs {
            assert!(m.blocks.len() <= 50);
            assert!(m.text.chars().count() <= MAX_MESSAGE_CHARS);
            for b in &m.blocks {
                assert!(block_text(b).chars().count() <= MAX_SECTION_CHARS);
                if b["type"] == "section" {
                    all.push_str(block_text(b));
                }
            }
        }
        assert!(
            all.starts_with(&answer),
            "the whole answer is there, in order"
        );
        for i in 1..=300 {
            assert!(all.contains(&format!("[{i}] <")), "citation {i}");
        }
        assert_eq!(
            msgs.last().unwrap().blocks.last().unwrap()["type"],
            "actions"
        );
    }

    fn answer_msgs(a: &str, n: usize) -> Vec<Message> {
        answer(
            &resp(a, n),
            &Offers {
                feedback: Some("f".into()),
                private: Some("p".into()),
                note: None,
            },
        )
    }

    #[test]
    fn citations_are_links_with_title_page_and_section_and_text_is_escaped() {
        let msgs = answer_msgs("Reset it <!channel> & go [1].", 1);
        let text = &msgs[0].text;
        assert!(
            text.contains("Reset it &lt;!channel&gt; &amp; go [1]."),
            "{text}"
        );
        assert!(
            text.contains(
                "[1] <https://wiki.example/p0?a=1%7C2|Doc &lt;0&gt; ¦ x> · p. 3 · § Setup › VPN"
            ),
            "{text}"
        );
    }

    #[test]
    fn broadcast_mentions_are_broken_and_text_objects_are_verbatim() {
        let msgs = answer_msgs("Tell @here and @Channel, not me@example.com [1].", 1);
        let text = &msgs[0].text;
        for word in ["@here", "@channel", "@Channel", "@everyone"] {
            assert!(!text.contains(word), "{word} in {text}");
        }
        assert!(text.contains("@\u{2060}here") && text.contains("me@example.com"));
        assert_eq!(escape("@everyone!"), "@\u{2060}everyone!");
        for m in &msgs {
            for b in &m.blocks {
                let objects = [&b["text"], &b["elements"][0]];
                for o in objects.into_iter().filter(|o| o["type"] == "mrkdwn") {
                    assert_eq!(o["verbatim"], true, "{b}");
                }
            }
        }
    }

    /// An already-encoded citation uri kept its escapes encoded again (`%20` → `%2520`).
    #[test]
    fn link_urls_keep_their_escapes_and_encode_what_would_break_the_link() {
        assert_eq!(
            link_url("https://wiki.example/A%20B?x=1|2 <3>"),
            "https://wiki.example/A%20B?x=1%7C2%20%3C3%3E"
        );
        assert_eq!(
            link_url("file:///share/100%/a%zz%4"),
            "file:///share/100%25/a%25zz%254"
        );
        // Slack's escape for `&` in a message, links included.
        assert_eq!(
            link_url("https://wiki.example/?a=1&b=2"),
            "https://wiki.example/?a=1&amp;b=2"
        );
    }

    /// Long titles, section paths and addresses are shortened, and the sources split between
    /// lines: never inside a link.
    #[test]
    fn the_sources_are_split_between_lines_never_inside_a_link() {
        let lines: Vec<String> = (1..=40)
            .map(|n| {
                citation_line(
                    n,
                    &pb::Citation {
                        uri: format!("https://wiki.example/{}", "a".repeat(1_400)),
                        title: format!("A title with spaces {}", "t ".repeat(200)),
                        heading_path: vec!["h & h".repeat(100)],
                        ..Default::default()
                    },
                )
            })
            .collect();
        assert!(
            lines[0].chars().count() < MAX_SECTION_CHARS,
            "{}",
            lines[0].len()
        );
        let sections = source_sections(&lines);
        assert!(sections.len() > 1);
        for s in &sections {
            assert!(s.chars().count() <= MAX_SECTION_CHARS);
            assert_eq!(s.matches('<').count(), s.matches('>').count(), "{s}");
        }
        assert_eq!(
            sections.join("\n"),
            format!("*Sources*\n{}", lines.join("\n"))
        );
        // An address too long for a link is left out; the title stays.
        let huge = citation_line(
            1,
            &pb::Citation {
                uri: format!("https://wiki.example/{}", "a".repeat(2_000)),
                title: "Pay".into(),
                ..Default::default()
            },
        );
        assert_eq!(huge, "[1] Pay");
    }

    /// A uri that is no web or file address is shown as text, not made a link: `<!channel|…>`
    /// would ping the channel.
    #[test]
    fn a_citation_uri_that_is_no_address_is_not_a_link() {
        let cite = |uri: &str| pb::Citation {
            uri: uri.into(),
            title: "Pay".into(),
            ..Default::default()
        };
        for uri in ["!channel", "@U123", "#C123", "javascript:alert(1)"] {
            let line = citation_line(1, &cite(uri));
            assert!(!line.contains('<'), "{line}");
        }
        assert_eq!(
            citation_line(1, &cite("HTTPS://wiki.example/Pay")),
            "[1] <HTTPS://wiki.example/Pay|Pay>"
        );
        assert_eq!(citation_line(1, &cite("!channel")), "[1] Pay (!channel)");
    }

    #[test]
    fn not_found_is_plain_text_without_feedback() {
        let r = pb::AskResponse {
            status: pb::AnswerStatus::NoAnswer as i32,
            message: "No relevant documents found.".into(),
            ..Default::default()
        };
        let msgs = answer(
            &r,
            &Offers {
                feedback: Some("f".into()),
                ..Default::default()
            },
        );
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].text, "No relevant documents found.");
        assert!(msgs[0].blocks.iter().all(|b| b["type"] != "actions"));
    }
}
