//! Asking with streamed answers, `docent chat`, conversations and feedback.

use std::io::Write;
use std::process::ExitCode;

use docent_proto::v1 as pb;
use serde_json::json;

use super::client::{
    answer_request, channel, citation_json, filter, request, status_name, verdicts_json,
};
use super::{AnswerModeArg, ClientArgs, FilterArgs};

type Client = pb::assistant_client::AssistantClient<tonic::transport::Channel>;

pub struct AskArgs {
    pub question: String,
    pub on_behalf_of: Option<String>,
    pub mode: Option<AnswerModeArg>,
    pub conversation: Option<String>,
    pub new_conversation: bool,
    pub json: bool,
}

fn mode(m: Option<AnswerModeArg>) -> i32 {
    (match m {
        None => pb::AnswerMode::Unspecified,
        Some(AnswerModeArg::Extractive) => pb::AnswerMode::Extractive,
        Some(AnswerModeArg::Generative) => pb::AnswerMode::Generative,
        Some(AnswerModeArg::Auto) => pb::AnswerMode::Auto,
    }) as i32
}

fn mode_name(m: i32) -> &'static str {
    match pb::AnswerMode::try_from(m) {
        Ok(pb::AnswerMode::Extractive) => "extractive",
        Ok(pb::AnswerMode::Generative) => "generative",
        Ok(pb::AnswerMode::Auto) => "auto",
        _ => "unspecified",
    }
}

fn details_json(d: &Option<pb::AnswerDetails>) -> serde_json::Value {
    let d = d.clone().unwrap_or_default();
    let u = d.usage.unwrap_or_default();
    json!({
        "mode": mode_name(d.mode),
        "fallback_reason": d.fallback_reason,
        "conversation_id": d.conversation_id,
        "turn": d.turn,
        "rewritten_question": d.rewritten_question,
        "usage": {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "estimated": u.estimated},
    })
}

fn print_sources(citations: &[pb::Citation]) {
    if citations.is_empty() {
        return;
    }
    println!("\nSources:");
    for (i, c) in citations.iter().enumerate() {
        let span = c.span.unwrap_or_default();
        let page = if c.page > 0 {
            format!("page {}, ", c.page)
        } else {
            String::new()
        };
        let section = c
            .heading_path
            .last()
            .map(|h| format!(" § {}", super::shown_line(h)))
            .unwrap_or_default();
        println!(
            "  [{}] {}{section} — {} ({page}bytes {}..{})",
            i + 1,
            super::shown_line(&c.title),
            super::shown_line(&c.uri),
            span.start,
            span.end
        );
    }
}

/// One question over AskStream: pieces are printed as they arrive. Returns the final event's
/// details (for `chat`), or prints the whole response as JSON with `--json` (unary Ask).
async fn ask_once(
    client: &mut Client,
    conn: &ClientArgs,
    f: &FilterArgs,
    a: &AskArgs,
) -> anyhow::Result<Option<pb::AnswerDetails>> {
    let msg = pb::AskRequest {
        question: a.question.clone(),
        filter: Some(filter(f)),
        on_behalf_of: a.on_behalf_of.clone().unwrap_or_default(),
        mode: mode(a.mode),
        conversation_id: a.conversation.clone().unwrap_or_default(),
        new_conversation: a.new_conversation,
    };
    if a.json {
        let resp = client.ask(answer_request(conn, msg)?).await?.into_inner();
        let v = json!({
            "answer": resp.answer,
            "status": status_name(resp.status),
            "message": resp.message,
            "sentences": resp.sentences.iter().map(|s| json!({"text": s.text, "citations": s.citations, "uncited": s.uncited})).collect::<Vec<_>>(),
            "citations": resp.citations.iter().map(citation_json).collect::<Vec<_>>(),
            "guardrails": verdicts_json(&resp.guardrails),
            "details": details_json(&resp.details),
        });
        println!("{}", super::pretty_json(&v)?);
        return Ok(resp.details);
    }
    let mut stream = client
        .ask_stream(answer_request(conn, msg)?)
        .await?
        .into_inner();
    let mut out = std::io::stdout();
    let mut citations = Vec::new();
    let mut first = true;
    while let Some(ev) = stream.message().await? {
        use pb::ask_stream_event::Event;
        match ev.event {
            Some(Event::Piece(p)) => {
                let marks: String = p
                    .citations
                    .iter()
                    .map(|c| format!(" [{}]", u64::from(*c) + 1))
                    .collect();
                let uncited = if p.uncited { " (unverified)" } else { "" };
                write!(
                    out,
                    "{}{}{marks}{uncited}",
                    if first { "" } else { " " },
                    super::shown(&p.text)
                )?;
                out.flush()?;
                first = false;
            }
            Some(Event::Citations(c)) => citations = c.citations,
            Some(Event::Final(f)) => {
                if f.status != pb::AnswerStatus::Answered as i32 {
                    write!(out, "{}", super::shown(&f.message))?;
                }
                writeln!(out)?;
                print_sources(&citations);
                let d = f.details.clone().unwrap_or_default();
                if !d.fallback_reason.is_empty() {
                    eprintln!("(answered extractively: {})", d.fallback_reason);
                }
                return Ok(f.details);
            }
            None => {}
        }
    }
    anyhow::bail!("the answer stream ended before its final event")
}

pub async fn ask(conn: &ClientArgs, f: &FilterArgs, a: AskArgs) -> anyhow::Result<ExitCode> {
    let mut client = Client::new(channel(conn).await?);
    let d = ask_once(&mut client, conn, f, &a).await?;
    if !a.json
        && let Some(d) = d
        && !d.conversation_id.is_empty()
    {
        eprintln!("(conversation {} turn {})", d.conversation_id, d.turn);
    }
    Ok(ExitCode::SUCCESS)
}

/// `docent chat`: an interactive prompt that streams answers and keeps one conversation.
pub async fn chat(
    conn: &ClientArgs,
    f: &FilterArgs,
    on_behalf_of: Option<String>,
    answer_mode: Option<AnswerModeArg>,
    resume: Option<String>,
) -> anyhow::Result<ExitCode> {
    let mut client = Client::new(channel(conn).await?);
    let mut conversation = resume;
    let mut last_turn: Option<u32> = None;
    // The daemon keeps no conversations: each question is asked on its own.
    let mut stateless = false;
    eprintln!(
        "Ask a question (empty line or /quit to leave; /new starts a new conversation; \
         /up or /down [reason] rates the last answer)."
    );
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        std::io::stderr().flush()?;
        let mut line = String::new();
        if stdin.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim();
        match line {
            "" | "/quit" | "/exit" => break,
            "/new" => {
                conversation = None;
                last_turn = None;
                continue;
            }
            _ => {}
        }
        // The command is the first word whole (session 40's note: "/update the docs?" was read
        // as `/up` with the reason "date").
        let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        if matches!(word, "/up" | "/down") {
            let up = word == "/up";
            let (Some(id), Some(turn)) = (&conversation, last_turn) else {
                eprintln!("nothing to rate yet");
                continue;
            };
            let reasons = rest
                .split_whitespace()
                .map(parse_reason)
                .collect::<Result<Vec<_>, _>>();
            match reasons {
                // For the user the chat asks as (`--as`); a vote that fails is said and the
                // chat goes on.
                Ok(reasons) => match send_feedback(
                    &mut client,
                    conn,
                    id,
                    turn,
                    up,
                    reasons,
                    String::new(),
                    on_behalf_of.clone(),
                )
                .await
                {
                    Ok(()) => eprintln!("thanks"),
                    Err(e) => eprintln!("the vote was not recorded: {e:#}"),
                },
                Err(e) => eprintln!("{e}"),
            }
            continue;
        }
        // A vote after a failed question would rate the answer before it.
        last_turn = None;
        // Asked again once when the conversation cannot go on (found by a review: the stale
        // conversation made every later question fail until `/new`).
        for _ in 0..2 {
            let a = AskArgs {
                question: line.to_string(),
                on_behalf_of: on_behalf_of.clone(),
                mode: answer_mode,
                new_conversation: !stateless && conversation.is_none(),
                conversation: conversation.clone(),
                json: false,
            };
            match ask_once(&mut client, conn, f, &a).await {
                Ok(Some(d)) if !d.conversation_id.is_empty() => {
                    if !d.rewritten_question.is_empty() {
                        eprintln!("(searched for: {})", super::shown(&d.rewritten_question));
                    }
                    conversation = Some(d.conversation_id);
                    last_turn = Some(d.turn);
                }
                Ok(_) => {}
                Err(e) => match chat_recovery(&e) {
                    Some(Recovery::Stateless) if !stateless => {
                        eprintln!(
                            "(this daemon keeps no conversations: each question is asked on its own)"
                        );
                        stateless = true;
                        conversation = None;
                        continue;
                    }
                    Some(Recovery::NewConversation) if conversation.is_some() => {
                        eprintln!("(that conversation cannot go on: a new one starts)");
                        conversation = None;
                        continue;
                    }
                    _ => eprintln!("error: {e:#}"),
                },
            }
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// How the chat goes on after an error about its conversation.
#[derive(Debug, PartialEq)]
enum Recovery {
    /// The daemon keeps no conversations.
    Stateless,
    /// The conversation is gone (expired, deleted) or full.
    NewConversation,
}

fn chat_recovery(e: &anyhow::Error) -> Option<Recovery> {
    let status = e.chain().find_map(|c| c.downcast_ref::<tonic::Status>())?;
    let api = docent_client::ApiError::from(status.clone());
    match api.reason() {
        "NO_CONVERSATION_STORE" => Some(Recovery::Stateless),
        docent_client::reasons::CONVERSATION_NOT_FOUND
        | docent_client::reasons::CONVERSATION_FULL => Some(Recovery::NewConversation),
        _ => None,
    }
}

pub fn parse_reason(s: &str) -> Result<pb::FeedbackReason, String> {
    Ok(match s.replace('-', "_").as_str() {
        "not_factually_correct" | "wrong" => pb::FeedbackReason::NotFactuallyCorrect,
        "harmful" => pb::FeedbackReason::Harmful,
        "document_not_relevant" | "irrelevant" => pb::FeedbackReason::DocumentNotRelevant,
        "incomplete" => pb::FeedbackReason::Incomplete,
        "other" => pb::FeedbackReason::Other,
        _ => {
            return Err(format!(
                "unknown reason {s:?}: not_factually_correct, harmful, document_not_relevant, incomplete, other"
            ));
        }
    })
}

#[allow(clippy::too_many_arguments)]
async fn send_feedback(
    client: &mut Client,
    conn: &ClientArgs,
    id: &str,
    turn: u32,
    up: bool,
    reasons: Vec<pb::FeedbackReason>,
    comment: String,
    on_behalf_of: Option<String>,
) -> anyhow::Result<()> {
    client
        .feedback(request(
            conn,
            pb::FeedbackRequest {
                conversation_id: id.to_string(),
                turn,
                up,
                reasons: reasons.into_iter().map(|r| r as i32).collect(),
                comment,
                on_behalf_of: on_behalf_of.unwrap_or_default(),
            },
        )?)
        .await?;
    Ok(())
}

pub struct FeedbackArgs {
    pub conversation: String,
    pub turn: u32,
    pub up: bool,
    pub reasons: Vec<String>,
    pub comment: Option<String>,
    pub on_behalf_of: Option<String>,
}

pub async fn feedback(conn: &ClientArgs, a: FeedbackArgs) -> anyhow::Result<ExitCode> {
    let reasons = a
        .reasons
        .iter()
        .map(|r| parse_reason(r))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let mut client = Client::new(channel(conn).await?);
    send_feedback(
        &mut client,
        conn,
        &a.conversation,
        a.turn,
        a.up,
        reasons,
        a.comment.unwrap_or_default(),
        a.on_behalf_of,
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

pub enum ConversationsCmd {
    List,
    Show(String),
    Delete(String),
}

pub async fn conversations(
    conn: &ClientArgs,
    cmd: ConversationsCmd,
    on_behalf_of: Option<String>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let mut client = Client::new(channel(conn).await?);
    let obo = on_behalf_of.unwrap_or_default();
    match cmd {
        ConversationsCmd::List => {
            // Every page, most recently updated first.
            let mut r = pb::ListConversationsResponse::default();
            let mut tokens = std::collections::HashSet::new();
            loop {
                let asked = std::mem::take(&mut r.next_page_token);
                let page = client
                    .list_conversations(request(
                        conn,
                        pb::ListConversationsRequest {
                            on_behalf_of: obo.clone(),
                            page_size: 200,
                            page_token: asked.clone(),
                        },
                    )?)
                    .await?
                    .into_inner();
                r.conversations.extend(page.conversations);
                // A token given again, even after others, would loop for ever (two reviews).
                if !page.next_page_token.is_empty() && !tokens.insert(page.next_page_token.clone())
                {
                    anyhow::bail!("the daemon gave the same page token twice; listing stopped");
                }
                r.next_page_token = page.next_page_token;
                if r.next_page_token.is_empty() {
                    break;
                }
            }
            if as_json {
                let v: Vec<_> = r
                    .conversations
                    .iter()
                    .map(|c| json!({"conversation_id": c.conversation_id, "title": c.title, "created_ms": c.created_ms, "updated_ms": c.updated_ms, "turns": c.turns}))
                    .collect();
                println!("{}", super::pretty_json(&v)?);
            } else {
                for c in &r.conversations {
                    println!(
                        "{}  {:>3} turns  {}",
                        c.conversation_id,
                        c.turns,
                        super::shown_line(&c.title)
                    );
                }
            }
        }
        ConversationsCmd::Show(id) => {
            let c = client
                .get_conversation(request(
                    conn,
                    pb::ConversationRequest {
                        conversation_id: id,
                        on_behalf_of: obo,
                    },
                )?)
                .await?
                .into_inner();
            if as_json {
                let v: Vec<_> = c
                    .turns
                    .iter()
                    .map(|t| json!({"question": t.question, "rewritten_question": t.rewritten_question, "answer": t.answer, "status": status_name(t.status), "expired": t.expired, "mode": mode_name(t.mode), "citations": t.citations.iter().map(citation_json).collect::<Vec<_>>()}))
                    .collect();
                println!("{}", super::pretty_json(&v)?);
            } else {
                for (i, t) in c.turns.iter().enumerate() {
                    if t.expired {
                        println!("#{i} (deleted by the retention)\n");
                        continue;
                    }
                    println!("#{i} > {}", super::shown(&t.question));
                    println!("{}", super::shown(&t.answer));
                    print_sources(&t.citations);
                    println!();
                }
            }
        }
        ConversationsCmd::Delete(id) => {
            client
                .delete_conversation(request(
                    conn,
                    pb::ConversationRequest {
                        conversation_id: id,
                        on_behalf_of: obo,
                    },
                )?)
                .await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::{ErrorDetails, StatusExt};

    fn refused(reason: &str) -> anyhow::Error {
        let status = tonic::Status::with_error_details(
            tonic::Code::FailedPrecondition,
            "refused",
            ErrorDetails::with_error_info(reason, docent_client::ERROR_DOMAIN, []),
        );
        anyhow::Error::new(status).context("asking")
    }

    /// Found by a review: the chat kept sending a conversation the daemon could not continue
    /// (or could not keep at all), and every later question failed until `/new`.
    #[test]
    fn conversation_errors_tell_the_chat_how_to_go_on() {
        assert_eq!(
            chat_recovery(&refused("NO_CONVERSATION_STORE")),
            Some(Recovery::Stateless)
        );
        for r in ["CONVERSATION_NOT_FOUND", "CONVERSATION_FULL"] {
            assert_eq!(chat_recovery(&refused(r)), Some(Recovery::NewConversation));
        }
        assert_eq!(chat_recovery(&refused("OVERLOADED")), None);
        assert_eq!(chat_recovery(&anyhow::anyhow!("broken pipe")), None);
    }
}
