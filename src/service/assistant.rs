//! `docent.v1.Assistant`: Ask, AskStream, Search.
//!
//! Each request: authenticated caller → (optional `on_behalf_of`, checked) → request checks →
//! guardrails on the question → retrieval under the scope → ACL recheck → injection screening of
//! passages → answer → grounding → ACL recheck of citations → PII redaction → audit.

use std::pin::Pin;
use std::sync::Arc;

use docent_proto::v1 as pb;
use futures::Stream;
use tonic::{Request, Response, Status};

use super::auth::caller;
use super::limits::Budget;
use super::{AppState, Audited, ServiceError, convert};
use crate::acl::{AclScope, authorize};
use crate::answer::{self, Answer, AnswerStatus};
use crate::guardrail::{self, QuestionScreen, Verdict};
use crate::identity::{ActAsError, Caller};
use crate::index::SearchFilter;
use crate::metrics::AnswerOutcome;
use crate::retrieve::{Hit, Mode, RetrieveError};

const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 100;

pub struct AssistantService {
    state: Arc<AppState>,
}

/// Hits (or a block) after the question guardrails, retrieval and passage screening.
struct Retrieved {
    hits: Vec<Hit>,
    verdicts: Vec<Verdict>,
    blocked: Option<Verdict>,
}

impl AssistantService {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }

    /// The identity the request runs as: the caller, or the user it acts for (`on_behalf_of`,
    /// which needs the `act_as` permission). Refusals are audited by the refusal layer.
    fn effective_caller(&self, authn: Caller, on_behalf_of: &str) -> Result<Caller, ServiceError> {
        let on_behalf_of = on_behalf_of.trim();
        let caller = if on_behalf_of.is_empty() {
            authn
        } else {
            let store = self.state.identities.current();
            match store.act_as(&authn, on_behalf_of) {
                Ok(c) => c,
                Err(e) => {
                    let outcome = match e {
                        ActAsError::NotPermitted(_) => "ACT_AS_DENIED",
                        ActAsError::UnknownUser(_) => "UNKNOWN_USER",
                    };
                    tracing::warn!(caller = authn.user_id(), %on_behalf_of, outcome, "act_as refused");
                    return Err(e.into());
                }
            }
        };
        if !caller.permissions().query {
            return Err(ServiceError::ScopeDenied("ask or search"));
        }
        Ok(caller)
    }

    /// The Ask path after authentication.
    async fn answer(
        &self,
        req: &Request<pb::AskRequest>,
        method: &'static str,
    ) -> Result<(Answer, Vec<Verdict>), ServiceError> {
        let msg = req.get_ref();
        let caller = self.effective_caller(caller(req)?, &msg.on_behalf_of)?;
        guardrail::check_question("question", &msg.question)?;
        let filter = convert::filter(msg.filter.clone()).map_err(bad_filter)?;
        let question = msg.question.clone();
        let st = self.state.clone();
        let c = caller.clone();
        let (budget, _guard) = Budget::of(req);
        let (answer, verdicts) = tokio::task::spawn_blocking(move || {
            let limit = st.answer.max_passages.max(DEFAULT_LIMIT);
            let r = retrieve(&st, &c, &question, Mode::Hybrid, filter, limit, &budget)?;
            let mut verdicts = r.verdicts;
            if let Some(b) = r.blocked {
                let a = Answer::blocked(&b.message);
                verdicts.push(b);
                return Ok::<_, RetrieveError>((a, verdicts));
            }
            let hits = r.hits;
            let terms = st.retriever.term_weights(&question);
            let analyze = |s: &str| st.retriever.analyze(s);
            let a = answer::extractive(&hits, &terms, &analyze, &st.answer);
            let (a, v) = st.guardrails.ground(a, &hits, &analyze);
            verdicts.extend(v);
            let scope = authorize(&c);
            let cited = a.citations.len();
            let mut a = guardrail::recheck_answer(&st.index, &scope, a);
            st.metrics
                .guardrail("acl", "drop", (cited - a.citations.len()) as u64);
            verdicts.extend(st.guardrails.redact_answer(c.principals(), &mut a));
            Ok((a, verdicts))
        })
        .await
        .map_err(ServiceError::internal)?
        .map_err(retrieve_error)?;
        self.state.metrics.answer(match answer.status {
            AnswerStatus::Answered => AnswerOutcome::Answered,
            AnswerStatus::NoAnswer => AnswerOutcome::NoAnswer,
            AnswerStatus::Blocked => AnswerOutcome::Blocked,
        });
        let outcome = match answer.status {
            AnswerStatus::Answered => "answered",
            AnswerStatus::NoAnswer => "no_answer",
            AnswerStatus::Blocked => "blocked",
        };
        self.state.record(Audited {
            method,
            caller: &caller,
            outcome,
            documents: answer
                .citations
                .iter()
                .map(|c| c.document_key.as_str())
                .collect(),
            verdicts: &verdicts,
            question: Some(&msg.question),
        });
        tracing::info!(
            user = caller.user_id(),
            actor = caller.actor(),
            status = outcome,
            citations = answer.citations.len(),
            "ask"
        );
        Ok((answer, verdicts))
    }
}

/// Question guardrails (with the question embedding when a topic applies), retrieval under the
/// caller's scope (narrowed by a topic restriction), the ACL recheck and passage screening.
/// Blocking.
fn retrieve(
    st: &AppState,
    caller: &Caller,
    query: &str,
    mode: Mode,
    mut filter: SearchFilter,
    limit: usize,
    budget: &Budget,
) -> Result<Retrieved, RetrieveError> {
    let principals = caller.principals();
    let spent = || budget.spent();
    // Topic guardrails compare this vector too: embed the normalised text, so invisible or
    // compatibility characters cannot move a question away from a blocked topic.
    let qvec = if st.guardrails.needs_question_vector(principals) {
        let normalized = guardrail::normalize::normalize(query);
        Some(st.retriever.embed_query_until(&normalized, &spent)?)
    } else {
        None
    };
    let mut verdicts = match st
        .guardrails
        .screen_question(principals, query, qvec.as_deref())
    {
        QuestionScreen::Block(v) => {
            return Ok(Retrieved {
                hits: Vec::new(),
                verdicts: Vec::new(),
                blocked: Some(v),
            });
        }
        QuestionScreen::Allow {
            restrict_sources,
            verdicts,
        } => {
            if let Some(allowed) = restrict_sources {
                // A restriction only narrows: intersect with what the request asked for.
                filter.sources = if filter.sources.is_empty() {
                    allowed
                } else {
                    filter
                        .sources
                        .into_iter()
                        .filter(|s| allowed.contains(s))
                        .collect()
                };
                if filter.sources.is_empty() {
                    return Ok(Retrieved {
                        hits: Vec::new(),
                        verdicts,
                        blocked: None,
                    });
                }
            }
            verdicts
        }
    };
    let scope = authorize(caller);
    let hits = st
        .retriever
        .search_until(&scope, query, qvec, mode, &filter, limit, &spent)?;
    let hits = recheck_hits(st, &scope, hits);
    let (hits, v) = st.guardrails.screen_passages(principals, hits);
    verdicts.extend(v);
    Ok(Retrieved {
        hits,
        verdicts,
        blocked: None,
    })
}

/// A request that gave up is not a server fault (the client is usually gone by then).
fn retrieve_error(e: RetrieveError) -> ServiceError {
    if e.is_cancelled() {
        ServiceError::Cancelled
    } else {
        ServiceError::internal(e)
    }
}

fn bad_filter(message: String) -> ServiceError {
    ServiceError::InvalidArgument {
        reason: "INVALID_FILTER",
        field: "filter",
        message,
    }
}

/// The ACL recheck of hits, counting what it stops.
fn recheck_hits(st: &AppState, scope: &AclScope, hits: Vec<Hit>) -> Vec<Hit> {
    let before = hits.len();
    let kept = guardrail::recheck_hits(&st.index, scope, hits);
    st.metrics
        .guardrail("acl", "drop", (before - kept.len()) as u64);
    kept
}

type AskStream = Pin<Box<dyn Stream<Item = Result<pb::AskStreamEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::assistant_server::Assistant for AssistantService {
    async fn ask(&self, req: Request<pb::AskRequest>) -> Result<Response<pb::AskResponse>, Status> {
        let (a, verdicts) = self.answer(&req, "Ask").await?;
        Ok(Response::new(convert::answer(&a, &verdicts)))
    }

    type AskStreamStream = AskStream;

    async fn ask_stream(
        &self,
        req: Request<pb::AskRequest>,
    ) -> Result<Response<AskStream>, Status> {
        let start = std::time::Instant::now();
        let (a, verdicts) = self.answer(&req, "AskStream").await?;
        // The extractive answer is complete before the first piece is sent.
        self.state.metrics.first_piece(start.elapsed());
        use pb::ask_stream_event::Event;
        let mut events: Vec<Result<pb::AskStreamEvent, Status>> = convert::sentences(&a)
            .into_iter()
            .map(|s| {
                Ok(pb::AskStreamEvent {
                    event: Some(Event::Piece(s)),
                })
            })
            .collect();
        events.push(Ok(pb::AskStreamEvent {
            event: Some(Event::Citations(pb::Citations {
                citations: a.citations.iter().map(convert::citation).collect(),
            })),
        }));
        events.push(Ok(pb::AskStreamEvent {
            event: Some(Event::Final(pb::AskFinal {
                status: convert::status(a.status) as i32,
                message: a.message.clone(),
                guardrails: verdicts.iter().map(convert::verdict).collect(),
            })),
        }));
        Ok(Response::new(Box::pin(futures::stream::iter(events))))
    }

    async fn search(
        &self,
        req: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        let authn = caller(&req)?;
        let (budget, _guard) = Budget::of(&req);
        let msg = req.into_inner();
        let caller = self.effective_caller(authn, &msg.on_behalf_of)?;
        guardrail::check_question("query", &msg.query).map_err(ServiceError::from)?;
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
            let mut r = retrieve(&st, &c, &query, mode, filter, limit, &budget)?;
            r.verdicts
                .extend(st.guardrails.redact_hits(c.principals(), &mut r.hits));
            Ok::<_, RetrieveError>(r)
        })
        .await
        .map_err(ServiceError::internal)?
        .map_err(retrieve_error)?;
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
            documents: r.hits.iter().map(|h| h.chunk.doc_key.as_str()).collect(),
            verdicts: &verdicts,
            question: Some(&msg.query),
        });
        tracing::info!(
            user = caller.user_id(),
            actor = caller.actor(),
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
}
