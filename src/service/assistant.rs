//! `docent.v1.Assistant`: Ask, AskStream, Search.

use std::pin::Pin;
use std::sync::Arc;

use docent_proto::v1 as pb;
use futures::Stream;
use tonic::{Request, Response, Status};

use super::auth::caller;
use super::{AppState, ServiceError, convert};
use crate::acl::{AclScope, authorize};
use crate::answer::{self, Answer, AnswerStatus};
use crate::guardrail;
use crate::index::SearchFilter;
use crate::metrics::AnswerOutcome;
use crate::retrieve::{Hit, Mode};

const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 100;

pub struct AssistantService {
    state: Arc<AppState>,
}

impl AssistantService {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }

    async fn search_blocking(
        &self,
        scope: AclScope,
        query: String,
        mode: Mode,
        filter: SearchFilter,
        limit: usize,
    ) -> Result<Vec<Hit>, ServiceError> {
        let st = self.state.clone();
        tokio::task::spawn_blocking(move || {
            let hits = st.retriever.search(&scope, &query, mode, &filter, limit)?;
            Ok::<_, crate::retrieve::RetrieveError>(recheck_hits(&st, &scope, hits))
        })
        .await
        .map_err(ServiceError::internal)?
        .map_err(ServiceError::internal)
    }

    /// The whole Ask path: validate, retrieve under the caller's scope, answer, recheck.
    async fn answer(&self, req: &Request<pb::AskRequest>) -> Result<Answer, ServiceError> {
        let caller = caller(req)?;
        let msg = req.get_ref();
        guardrail::check_question("question", &msg.question)?;
        let scope = authorize(&caller);
        let filter = convert::filter(msg.filter.clone());
        let question = msg.question.clone();
        let st = self.state.clone();
        let answer = tokio::task::spawn_blocking(move || {
            let limit = st.answer.max_passages.max(DEFAULT_LIMIT);
            let hits = st
                .retriever
                .search(&scope, &question, Mode::Hybrid, &filter, limit)?;
            let hits = recheck_hits(&st, &scope, hits);
            let terms = st.retriever.term_weights(&question);
            let analyze = |s: &str| st.retriever.analyze(s);
            let a = answer::extractive(&hits, &terms, &analyze, &st.answer);
            let cited = a.citations.len();
            let a = guardrail::recheck_answer(&st.index, &scope, a);
            st.metrics
                .guardrail_block((cited - a.citations.len()) as u64);
            Ok::<_, crate::retrieve::RetrieveError>(a)
        })
        .await
        .map_err(ServiceError::internal)?
        .map_err(ServiceError::internal)?;
        self.state.metrics.answer(match answer.status {
            AnswerStatus::Answered => AnswerOutcome::Answered,
            AnswerStatus::NoAnswer => AnswerOutcome::NoAnswer,
            AnswerStatus::Blocked => AnswerOutcome::Blocked,
        });
        tracing::info!(
            user = caller.user_id(),
            status = ?answer.status,
            citations = answer.citations.len(),
            "ask"
        );
        Ok(answer)
    }
}

/// The ACL recheck of hits, counting what it stops.
fn recheck_hits(st: &AppState, scope: &AclScope, hits: Vec<Hit>) -> Vec<Hit> {
    let before = hits.len();
    let kept = guardrail::recheck_hits(&st.index, scope, hits);
    st.metrics.guardrail_block((before - kept.len()) as u64);
    kept
}

type AskStream = Pin<Box<dyn Stream<Item = Result<pb::AskStreamEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::assistant_server::Assistant for AssistantService {
    async fn ask(&self, req: Request<pb::AskRequest>) -> Result<Response<pb::AskResponse>, Status> {
        let a = self.answer(&req).await?;
        Ok(Response::new(convert::answer(&a)))
    }

    type AskStreamStream = AskStream;

    async fn ask_stream(
        &self,
        req: Request<pb::AskRequest>,
    ) -> Result<Response<AskStream>, Status> {
        let start = std::time::Instant::now();
        let a = self.answer(&req).await?;
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
            })),
        }));
        Ok(Response::new(Box::pin(futures::stream::iter(events))))
    }

    async fn search(
        &self,
        req: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        let caller = caller(&req)?;
        let msg = req.into_inner();
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
        let scope = authorize(&caller);
        let hits = self
            .search_blocking(scope, msg.query, mode, convert::filter(msg.filter), limit)
            .await?;
        tracing::info!(user = caller.user_id(), hits = hits.len(), "search");
        Ok(Response::new(pb::SearchResponse {
            hits: hits.iter().map(convert::hit).collect(),
        }))
    }
}
