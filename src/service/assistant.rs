//! `docent.v1.Assistant`: Ask, AskStream, Search, conversations and feedback — thin adapters
//! over [`crate::assistant`], which holds the pipeline and the order of its guardrail stages.

use std::pin::Pin;
use std::sync::Arc;

use docent_proto::v1 as pb;
use futures::Stream;
use tonic::{Request, Response, Status};

use super::auth::{CallerSlot, caller};
use super::limits::{Budget, BudgetGuard};
use super::{AppState, Audited, ServiceError, convert};
use crate::assistant::{
    AnswerMode, AskEvent, AskInput, AskOutcome, AssistantError, ConversationChoice, Delivery,
};
use crate::identity::Caller;
use crate::retrieve::Limit;

const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 100;
const MAX_PASSAGES_PER_DOCUMENT: usize = 5;
const MAX_COMMENT_BYTES: usize = 2000;

pub struct AssistantService {
    state: Arc<AppState>,
}

/// The longest `on_behalf_of` (an identity's id or alias, or an audience's name).
pub const MAX_ON_BEHALF_OF_BYTES: usize = 256;

impl AssistantService {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }

    /// The identity the request runs as: the caller, or the user it acts for (`on_behalf_of`,
    /// which needs the `act_as` permission). Refusals are audited by the refusal layer.
    fn effective_caller(
        &self,
        authn: Caller,
        on_behalf_of: &str,
        slot: Option<CallerSlot>,
    ) -> Result<Caller, ServiceError> {
        let on_behalf_of = on_behalf_of.trim();
        if on_behalf_of.is_empty() {
            return Ok(authn);
        }
        // A name, not a document: refused before it is looked up or logged (a megabyte-long
        // one from any caller was redacted and written to the log at every call).
        if on_behalf_of.len() > MAX_ON_BEHALF_OF_BYTES {
            return Err(ServiceError::InvalidArgument {
                reason: "ON_BEHALF_OF_TOO_LONG",
                field: "on_behalf_of",
                message: format!("at most {MAX_ON_BEHALF_OF_BYTES} bytes"),
            });
        }
        if let Some(slot) = slot {
            slot.set_acting_for(on_behalf_of);
        }
        let store = self.state.identities.current();
        store.act_as(&authn, on_behalf_of).map_err(|e| {
            let outcome = e.reason();
            tracing::warn!(caller = %crate::guardrail::pii::for_log(authn.user_id()), on_behalf_of = %crate::guardrail::pii::for_log(on_behalf_of), outcome, "act_as refused");
            e.into()
        })
    }

    fn ask_input(msg: &pb::AskRequest) -> Result<AskInput, ServiceError> {
        let filter = convert::filter(msg.filter.clone()).map_err(bad_filter)?;
        let mode = match pb::AnswerMode::try_from(msg.mode) {
            Ok(pb::AnswerMode::Unspecified) => None,
            Ok(pb::AnswerMode::Extractive) => Some(AnswerMode::Extractive),
            Ok(pb::AnswerMode::Generative) => Some(AnswerMode::Generative),
            Ok(pb::AnswerMode::Auto) => Some(AnswerMode::Auto),
            Err(_) => {
                return Err(ServiceError::InvalidArgument {
                    reason: "UNKNOWN_MODE",
                    field: "mode",
                    message: format!("unknown answer mode {}", msg.mode),
                });
            }
        };
        let conversation = match (msg.conversation_id.trim(), msg.new_conversation) {
            ("", false) => ConversationChoice::None,
            ("", true) => ConversationChoice::New,
            (_, true) => {
                return Err(ServiceError::InvalidArgument {
                    reason: "CONFLICTING_CONVERSATION",
                    field: "new_conversation",
                    message: "give a conversation_id or new_conversation, not both".into(),
                });
            }
            (id, false) => ConversationChoice::Continue(id.to_string()),
        };
        Ok(AskInput {
            question: msg.question.clone(),
            filter,
            mode,
            conversation,
        })
    }

    fn audit_ask(&self, method: &'static str, caller: &Caller, question: &str, o: &AskOutcome) {
        let outcome = match o.answer.status {
            crate::answer::AnswerStatus::Answered => "answered",
            crate::answer::AnswerStatus::NoAnswer => "no_answer",
            crate::answer::AnswerStatus::Blocked => "blocked",
        };
        self.audit_ask_as(method, caller, question, o, outcome);
    }

    /// [`Self::audit_ask`] with the outcome given (an answer streamed whose turn could not be
    /// stored is still audited, as `unrecorded`).
    fn audit_ask_as(
        &self,
        method: &'static str,
        caller: &Caller,
        question: &str,
        o: &AskOutcome,
        outcome: &str,
    ) {
        self.state.record(Audited {
            method,
            caller,
            outcome,
            documents: o
                .answer
                .citations
                .iter()
                // As indexed: `document_key` is PII-redacted for the caller.
                .map(|c| match c.access_key.as_str() {
                    "" => c.document_key.as_str(),
                    k => k,
                })
                .collect(),
            evidence: o.evidence_keys.iter().map(String::as_str).collect(),
            verdicts: &o.verdicts,
            question: Some(question),
            target: None,
        });
        tracing::info!(
            user = %crate::guardrail::pii::for_log(caller.user_id()),
            actor = caller.actor().map(crate::guardrail::pii::for_log),
            status = outcome,
            mode = o.details.mode.name(),
            fallback = o.details.fallback_reason,
            citations = o.answer.citations.len(),
            "ask"
        );
    }
}

/// A conversation id as an error may repeat it: ids Docent makes (32 hex digits, a turn number
/// after them) as they are, anything else as a fixed text. The id is the caller's own input,
/// but a megabyte of control characters would come back several times larger in the status
/// headers, past the output guardrails.
fn echoed_id(id: String) -> String {
    let plausible = id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b' ' || b == b'-');
    match plausible {
        true => id,
        false => "(not a conversation id)".to_string(),
    }
}

impl From<AssistantError> for ServiceError {
    fn from(e: AssistantError) -> Self {
        match e {
            AssistantError::Unauthorized(_) => ServiceError::ScopeDenied("ask or search"),
            AssistantError::Request(r) => r.into(),
            AssistantError::ConversationNotFound(id) => ServiceError::NotFound {
                reason: "CONVERSATION_NOT_FOUND",
                what: "conversation",
                name: echoed_id(id),
            },
            AssistantError::QuotaExceeded(m) => ServiceError::QuotaExceeded(m),
            AssistantError::QuotaInUse(m) => ServiceError::QuotaInUse(m),
            AssistantError::ConversationFull(_) => ServiceError::FailedPrecondition {
                reason: "CONVERSATION_FULL",
                message: e.to_string(),
            },
            AssistantError::NoStore => ServiceError::FailedPrecondition {
                reason: "NO_CONVERSATION_STORE",
                message: e.to_string(),
            },
            AssistantError::Retrieve(r) if r.is_cancelled() => ServiceError::Cancelled,
            AssistantError::Retrieve(r) if r.is_unavailable() => {
                tracing::warn!(error = %crate::guardrail::pii::for_log(&r.to_string()), "index unavailable");
                ServiceError::Unavailable
            }
            AssistantError::Retrieve(r) => ServiceError::internal(r),
            AssistantError::Store(s) => ServiceError::internal(s),
            AssistantError::Internal(s) => ServiceError::Internal(s),
            AssistantError::Unrecorded { cause, .. } => (*cause).into(),
        }
    }
}

fn bad_filter(message: String) -> ServiceError {
    ServiceError::InvalidArgument {
        reason: "INVALID_FILTER",
        field: "filter",
        message,
    }
}

type AskStream = Pin<Box<dyn Stream<Item = Result<pb::AskStreamEvent, Status>> + Send>>;

/// The event stream of one AskStream call; dropping it (the client went away) raises the
/// request's cancellation flag and stops the answerer at its next piece.
struct Events {
    rx: tokio::sync::mpsc::UnboundedReceiver<AskEvent>,
    /// Why the answer failed after it had started: the stream's last item, so that a client
    /// never takes a stream cut short for a whole answer.
    failed: Option<tokio::sync::oneshot::Receiver<Status>>,
    /// Whether the final event went out: a stream that ends without it and without a failure
    /// (the answering task panicked) ends with an error, not with a plain end.
    finished: bool,
    _guard: BudgetGuard,
}

impl Stream for Events {
    type Item = Result<pb::AskStreamEvent, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        match self.rx.poll_recv(cx) {
            Poll::Ready(None) => {}
            Poll::Ready(Some(e)) => {
                self.finished |= matches!(e, AskEvent::Final(_));
                return Poll::Ready(Some(Ok(event(e))));
            }
            Poll::Pending => return Poll::Pending,
        }
        // The answering task has ended (its sender is dropped), after it put its failure, if
        // any, in the oneshot.
        match self.failed.take().map(|mut f| f.try_recv()) {
            Some(Ok(status)) => Poll::Ready(Some(Err(status))),
            Some(Err(_)) if !self.finished => Poll::Ready(Some(Err(Status::internal(
                "the answer ended without its final event",
            )))),
            _ => Poll::Ready(None),
        }
    }
}

/// One answer event in its wire form.
fn event(e: AskEvent) -> pb::AskStreamEvent {
    use pb::ask_stream_event::Event;
    pb::AskStreamEvent {
        event: Some(match e {
            AskEvent::Piece(v) => Event::Piece(convert::sentence(&v.sentence, v.uncited)),
            AskEvent::Citations(c) => Event::Citations(pb::Citations {
                citations: c.iter().map(convert::citation).collect(),
            }),
            AskEvent::Final(o) => Event::Final(pb::AskFinal {
                status: convert::status(o.answer.status) as i32,
                message: o.answer.message.clone(),
                guardrails: o.verdicts.iter().map(convert::verdict).collect(),
                details: Some(convert::details(&o.details)),
            }),
        }),
    }
}

#[tonic::async_trait]
impl pb::assistant_server::Assistant for AssistantService {
    async fn ask(&self, req: Request<pb::AskRequest>) -> Result<Response<pb::AskResponse>, Status> {
        let started = super::limits::Arrived::of(&req);
        let (budget, _guard) = Budget::of(&req);
        let caller = self.effective_caller(
            caller(&req)?,
            &req.get_ref().on_behalf_of,
            req.extensions().get::<CallerSlot>().cloned(),
        )?;
        let input = Self::ask_input(req.get_ref())?;
        let prepared = self
            .state
            .assistant
            .prepare(&caller, input, budget)
            .await
            .map_err(ServiceError::from)?;
        // The answer runs on a task of its own, streaming to a receiver this handler holds: a
        // client that cancels drops the handler, and with it the receiver, which stops the
        // model call at once and still records what it spent (as for a left AskStream).
        // The audit record is written there too: an answer a cancelled call leaves behind is
        // still stored as a turn the caller can read back, and must be audited with it.
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let svc = AssistantService {
            state: self.state.clone(),
        };
        let (who, question) = (caller.clone(), req.get_ref().question.clone());
        let running = self.state.answers.enter();
        let o = tokio::spawn(async move {
            let _running = running;
            let o = prepared.run(Some(&tx), Delivery::Whole, started).await;
            if let Ok(o) = &o {
                svc.audit_ask("Ask", &who, &question, o);
            }
            o
        })
        .await
        .map_err(ServiceError::internal)?
        .map_err(ServiceError::from)?;
        Ok(Response::new(convert::answer(&o)))
    }

    type AskStreamStream = AskStream;

    async fn ask_stream(
        &self,
        req: Request<pb::AskRequest>,
    ) -> Result<Response<AskStream>, Status> {
        let started = super::limits::Arrived::of(&req);
        let (budget, guard) = Budget::of(&req);
        let caller = self.effective_caller(
            caller(&req)?,
            &req.get_ref().on_behalf_of,
            req.extensions().get::<CallerSlot>().cloned(),
        )?;
        let input = Self::ask_input(req.get_ref())?;
        let prepared = self
            .state
            .assistant
            .prepare(&caller, input, budget)
            .await
            .map_err(ServiceError::from)?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (failed_tx, failed) = tokio::sync::oneshot::channel();
        let st = self.state.clone();
        let question = req.into_inner().question;
        let running = st.answers.enter();
        let svc = AssistantService { state: st };
        tokio::spawn(async move {
            let _running = running;
            match prepared.run(Some(&tx), Delivery::Streamed, started).await {
                Ok(o) => svc.audit_ask("AskStream", &caller, &question, &o),
                Err(e) => {
                    // Pieces of this answer may have reached the caller already: audited
                    // even though its turn could not be stored.
                    let e = match e {
                        AssistantError::Unrecorded { outcome, cause } => {
                            svc.audit_ask_as(
                                "AskStream",
                                &caller,
                                &question,
                                &outcome,
                                "unrecorded",
                            );
                            *cause
                        }
                        e => e,
                    };
                    // The pieces already sent stay; the stream ends with this error instead
                    // of a final event.
                    let status: Status = ServiceError::from(e).into();
                    tracing::warn!(code = ?status.code(), "AskStream failed after it started");
                    let _ = failed_tx.send(status);
                }
            }
            drop(tx);
        });
        Ok(Response::new(Box::pin(Events {
            rx,
            failed: Some(failed),
            finished: false,
            _guard: guard,
        })))
    }

    async fn search(
        &self,
        req: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        let authn = caller(&req)?;
        let (budget, _guard) = Budget::of(&req);
        let slot = req.extensions().get::<CallerSlot>().cloned();
        let msg = req.into_inner();
        let caller = self.effective_caller(authn, &msg.on_behalf_of, slot)?;
        let limit = match msg.limit as usize {
            0 => DEFAULT_LIMIT,
            n if n <= MAX_LIMIT => n,
            n => {
                return Err(ServiceError::InvalidArgument {
                    reason: "LIMIT_OUT_OF_RANGE",
                    field: "limit",
                    message: format!("{n} is above the maximum of {MAX_LIMIT}"),
                }
                .into());
            }
        };
        let per_document = match msg.passages_per_document as usize {
            0 => 1,
            n if n <= MAX_PASSAGES_PER_DOCUMENT => n,
            n => {
                return Err(ServiceError::InvalidArgument {
                    reason: "PASSAGES_PER_DOCUMENT_OUT_OF_RANGE",
                    field: "passages_per_document",
                    message: format!("{n} is above the maximum of {MAX_PASSAGES_PER_DOCUMENT}"),
                }
                .into());
            }
        };
        let limit = Limit {
            hits: limit,
            per_document,
        };
        let mode = convert::mode(msg.mode).ok_or_else(|| ServiceError::InvalidArgument {
            reason: "UNKNOWN_MODE",
            field: "mode",
            message: format!("unknown retrieval mode {}", msg.mode),
        })?;
        let st = self.state.clone();
        let c = caller.clone();
        let query = msg.query.clone();
        let filter = convert::filter(msg.filter).map_err(bad_filter)?;
        let r = tokio::task::spawn_blocking(move || {
            st.assistant
                .search(&c, &query, mode, filter, limit, &budget)
        })
        .await
        .map_err(ServiceError::internal)?
        .map_err(ServiceError::from)?;
        let mut verdicts = r.verdicts;
        let blocked = r.blocked.is_some();
        let message = r
            .blocked
            .as_ref()
            .map(|b| b.message.clone())
            .unwrap_or_default();
        verdicts.extend(r.blocked);
        self.state.record(Audited {
            method: "Search",
            caller: &caller,
            outcome: if blocked { "blocked" } else { "ok" },
            documents: r.audit_keys.iter().map(String::as_str).collect(),
            evidence: Vec::new(),
            verdicts: &verdicts,
            question: Some(&msg.query),
            target: None,
        });
        tracing::info!(
            user = %crate::guardrail::pii::for_log(caller.user_id()),
            actor = caller.actor().map(crate::guardrail::pii::for_log),
            hits = r.hits.len(),
            "search"
        );
        Ok(Response::new(pb::SearchResponse {
            hits: r.hits.iter().map(convert::hit).collect(),
            guardrails: verdicts.iter().map(convert::verdict).collect(),
            blocked,
            message,
        }))
    }

    async fn list_conversations(
        &self,
        req: Request<pb::ListConversationsRequest>,
    ) -> Result<Response<pb::ListConversationsResponse>, Status> {
        let caller = self.effective_caller(
            caller(&req)?,
            &req.get_ref().on_behalf_of,
            req.extensions().get::<CallerSlot>().cloned(),
        )?;
        let r = req.into_inner();
        if !r.page_token.is_empty() && crate::assistant::page_position(&r.page_token).is_none() {
            return Err(ServiceError::InvalidArgument {
                reason: "INVALID_PAGE_TOKEN",
                field: "page_token",
                message: "not a token this daemon gave".into(),
            }
            .into());
        }
        let st = self.state.clone();
        let c = caller.clone();
        let (list, next) = tokio::task::spawn_blocking(move || {
            let after = crate::assistant::page_position(&r.page_token);
            st.assistant.conversations(&c, r.page_size as usize, after)
        })
        .await
        .map_err(ServiceError::internal)?
        .map_err(ServiceError::from)?;
        self.state.record_ok("ListConversations", &caller, None);
        Ok(Response::new(pb::ListConversationsResponse {
            conversations: list.iter().map(convert::conversation_summary).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn get_conversation(
        &self,
        req: Request<pb::ConversationRequest>,
    ) -> Result<Response<pb::Conversation>, Status> {
        let caller = self.effective_caller(
            caller(&req)?,
            &req.get_ref().on_behalf_of,
            req.extensions().get::<CallerSlot>().cloned(),
        )?;
        let st = self.state.clone();
        let id = req.into_inner().conversation_id;
        let (who, target) = (caller.clone(), id.clone());
        let (c, turns) =
            tokio::task::spawn_blocking(move || st.assistant.conversation(&caller, &id))
                .await
                .map_err(ServiceError::internal)?
                .map_err(ServiceError::from)?;
        self.state.record(Audited {
            method: "GetConversation",
            caller: &who,
            outcome: "ok",
            documents: turns
                .iter()
                .flat_map(|t| &t.citations)
                // The key as indexed; the sent one may be PII-redacted.
                .map(|c| match c.access_key.as_str() {
                    "" => c.document_key.as_str(),
                    k => k,
                })
                .collect(),
            // Only of turns that still show sentences (a generated turn written from a
            // document the caller can no longer read shows none).
            evidence: turns
                .iter()
                .filter(|t| !t.sentences.is_empty())
                .flat_map(|t| &t.evidence_keys)
                .map(String::as_str)
                .collect(),
            verdicts: &[],
            question: None,
            target: Some(&target),
        });
        Ok(Response::new(pb::Conversation {
            summary: Some(convert::conversation_summary(&c)),
            turns: turns.iter().map(convert::turn).collect(),
        }))
    }

    async fn delete_conversation(
        &self,
        req: Request<pb::ConversationRequest>,
    ) -> Result<Response<pb::DeleteConversationResponse>, Status> {
        let caller = self.effective_caller(
            caller(&req)?,
            &req.get_ref().on_behalf_of,
            req.extensions().get::<CallerSlot>().cloned(),
        )?;
        let st = self.state.clone();
        let id = req.into_inner().conversation_id;
        let (c, target) = (caller.clone(), id.clone());
        tokio::task::spawn_blocking(move || st.assistant.delete_conversation(&c, &id))
            .await
            .map_err(ServiceError::internal)?
            .map_err(ServiceError::from)?;
        self.state
            .record_ok("DeleteConversation", &caller, Some(&target));
        Ok(Response::new(pb::DeleteConversationResponse {}))
    }

    async fn feedback(
        &self,
        req: Request<pb::FeedbackRequest>,
    ) -> Result<Response<pb::FeedbackResponse>, Status> {
        let caller = self.effective_caller(
            caller(&req)?,
            &req.get_ref().on_behalf_of,
            req.extensions().get::<CallerSlot>().cloned(),
        )?;
        let msg = req.into_inner();
        if msg.comment.len() > MAX_COMMENT_BYTES {
            return Err(ServiceError::InvalidArgument {
                reason: "TEXT_TOO_LONG",
                field: "comment",
                message: format!(
                    "{} bytes; the limit is {MAX_COMMENT_BYTES}",
                    msg.comment.len()
                ),
            }
            .into());
        }
        // Each reason at most once: a repeated one would be stored (and exported) as often as
        // a client sends it.
        if msg.reasons.len() > convert::FEEDBACK_REASONS {
            return Err(ServiceError::InvalidArgument {
                reason: "TOO_MANY_FEEDBACK_REASONS",
                field: "reasons",
                message: format!(
                    "{} reasons; at most {}, each once",
                    msg.reasons.len(),
                    convert::FEEDBACK_REASONS
                ),
            }
            .into());
        }
        let mut reasons = msg
            .reasons
            .iter()
            .map(|&r| convert::feedback_reason(r))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ServiceError::InvalidArgument {
                reason: "UNKNOWN_FEEDBACK_REASON",
                field: "reasons",
                message: "unknown feedback reason".into(),
            })?;
        reasons.sort_unstable();
        reasons.dedup();
        let st = self.state.clone();
        let c = caller.clone();
        tokio::task::spawn_blocking(move || {
            st.assistant.feedback(
                &c,
                &msg.conversation_id,
                msg.turn,
                msg.up,
                reasons,
                &msg.comment,
            )
        })
        .await
        .map_err(ServiceError::internal)?
        .map_err(ServiceError::from)?;
        self.state.record(Audited {
            method: "Feedback",
            caller: &caller,
            outcome: "ok",
            documents: Vec::new(),
            evidence: Vec::new(),
            verdicts: &[],
            question: None,
            target: None,
        });
        Ok(Response::new(pb::FeedbackResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    fn events(failure: Option<Status>) -> (Events, tokio::sync::mpsc::UnboundedSender<AskEvent>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (failed_tx, failed) = tokio::sync::oneshot::channel();
        if let Some(s) = failure {
            failed_tx.send(s).unwrap();
        }
        let (_, guard) = Budget::of(&Request::new(()));
        let e = Events {
            rx,
            failed: Some(failed),
            finished: false,
            _guard: guard,
        };
        (e, tx)
    }

    /// An answer that fails after pieces were streamed ends its stream with the error, not
    /// with a plain end a client would take for a whole answer.
    #[tokio::test]
    async fn a_stream_that_fails_after_it_started_ends_with_the_error() {
        let (mut e, tx) = events(Some(Status::internal("assistant store: disk full")));
        tx.send(AskEvent::Citations(Vec::new())).unwrap();
        drop(tx);
        assert!(matches!(e.next().await, Some(Ok(_))));
        let last = e.next().await.expect("an error item").unwrap_err();
        assert_eq!(last.code(), tonic::Code::Internal);
        assert!(e.next().await.is_none());

        let (mut e, tx) = events(None);
        let outcome = crate::assistant::AskOutcome {
            answer: crate::answer::Answer::no_answer(),
            uncited: Vec::new(),
            evidence_keys: Vec::new(),
            verdicts: Vec::new(),
            details: Default::default(),
        };
        tx.send(AskEvent::Final(Box::new(outcome))).unwrap();
        drop(tx);
        assert!(matches!(e.next().await, Some(Ok(_))));
        assert!(
            e.next().await.is_none(),
            "a final event, no failure: a plain end"
        );
    }

    /// Found by a review: a panic in the answering task dropped both senders, and the stream
    /// ended as if whole, without its final event.
    #[tokio::test]
    async fn a_stream_that_ends_without_its_final_event_ends_with_an_error() {
        let (mut e, tx) = events(None);
        tx.send(AskEvent::Citations(Vec::new())).unwrap();
        drop(tx);
        assert!(matches!(e.next().await, Some(Ok(_))));
        let last = e.next().await.expect("an error item").unwrap_err();
        assert_eq!(last.code(), tonic::Code::Internal);
        assert!(e.next().await.is_none());
    }
}
