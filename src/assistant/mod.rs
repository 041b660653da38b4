//! The query side: one pipeline for Ask and Search, called by the gRPC handlers, the CLI's
//! in-process tools, `docent eval` and the bridges.
//!
//! Order of stages (the only place it is written down):
//! 1. `authorize`: the caller must hold `query`; the `AclScope` is minted once per request;
//! 2. request checks (size, emptiness), answer mode, token quota (before any model call);
//! 3. conversation: the caller's own, else NOT_FOUND; a follow-up is rewritten into a
//!    standalone query from the earlier *questions* (never earlier answers, which may quote
//!    documents the caller can no longer read);
//! 4. question guardrails (phrases, injection, topics: block or restrict sources);
//! 5. retrieval under the scope (inside both legs, before top-k);
//! 6. the ACL recheck of every hit, then injection screening of every passage — no passage
//!    reaches an answerer without both;
//! 7. the evidence decision: no passage similar enough → "not found", no model call;
//! 8. an [`Answerer`] drafts sentences with citation markers; each draft is verified as it
//!    arrives ([`verify::Verifier`]: markers, grounding, ACL recheck of cited documents, PII)
//!    and only then streamed;
//! 9. citations (PII-redacted) and the final status; usage and the turn are recorded.
//!
//! Must never: send a sentence that has not passed the verifier, cite a passage the answerer was
//! not given, or call the model for a request over its quota or without evidence.

pub mod llm;
pub mod store;
pub mod verify;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc::UnboundedSender;

use crate::acl::{AclScope, AuthzError, authorize};
use crate::answer::{self, Answer, AnswerConfig, AnswerSentence, AnswerStatus, Citation};
use crate::guardrail::{self, Guardrails, QuestionScreen, RequestError, Verdict};
use crate::identity::Caller;
use crate::index::{Backend, SearchFilter};
use crate::metrics::{AnswerOutcome, Metrics};
use crate::retrieve::{Hit, Limit, Mode, RetrieveError, Retriever};
use crate::service::limits::Budget;

pub use llm::{LlmClient, LlmConfig, LlmError};
pub use store::Store;
pub use verify::{Draft, ResponseScope, Verified, Verifier};

/// Who writes the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AnswerMode {
    #[default]
    Extractive,
    Generative,
    /// Generative when an LLM is configured, else extractive.
    Auto,
}

impl AnswerMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "extractive" => Some(Self::Extractive),
            "generative" => Some(Self::Generative),
            "auto" => Some(Self::Auto),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Extractive => "extractive",
            Self::Generative => "generative",
            Self::Auto => "auto",
        }
    }
}

/// How follow-up questions become standalone queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RewriteMode {
    /// [`heuristic_rewrite`]: a follow-up is prefixed with the previous question.
    #[default]
    Heuristic,
    /// The LLM rewrites (falls back to the heuristic on any model failure).
    Llm,
}

#[derive(Debug, Clone, Default)]
pub struct QuotaConfig {
    /// Daily token budget of each identity (prompt + completion, UTC days); none: unlimited.
    pub daily_tokens_per_identity: Option<u64>,
    /// Daily token budgets shared by the members of a group (`group:<name>`, budget).
    pub daily_tokens_per_group: Vec<(String, u64)>,
}

#[derive(Debug, Clone)]
pub struct AssistantConfig {
    pub answer: AnswerConfig,
    pub default_mode: AnswerMode,
    pub response_scope: ResponseScope,
    /// Per-group response scopes (`group:<name>`); with several, enterprise_only wins.
    pub group_response_scopes: Vec<(String, ResponseScope)>,
    pub retention_days: u32,
    pub rewrite: RewriteMode,
    pub quotas: QuotaConfig,
}

impl Default for AssistantConfig {
    fn default() -> Self {
        Self {
            answer: AnswerConfig {
                min_relevance: crate::retrieve::rerank::RankerModel::builtin().threshold,
                support_ratio: answer::DEFAULT_SUPPORT_RATIO,
                other_document_ratio: answer::DEFAULT_OTHER_DOCUMENT_RATIO,
                min_similarity: 0.4,
                max_sentences: 3,
                max_passages: 5,
                passages_per_document: answer::DEFAULT_PASSAGES_PER_DOCUMENT,
                min_sentence_similarity: crate::retrieve::rerank::RankerModel::builtin()
                    .sentence_threshold,
                check_sentences: crate::retrieve::rerank::RankerModel::builtin()
                    .sentence_check_depth,
            },
            default_mode: AnswerMode::Extractive,
            response_scope: ResponseScope::EnterpriseOnly,
            group_response_scopes: Vec::new(),
            retention_days: 90,
            rewrite: RewriteMode::Heuristic,
            quotas: QuotaConfig::default(),
        }
    }
}

/// Tokens a model call spent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt: u64,
    pub completion: u64,
    /// The server reported none; Docent counted.
    pub estimated: bool,
}

impl Usage {
    /// Adds another call's tokens (a request's rewrite and its answer).
    pub fn add(&mut self, u: Usage) {
        self.prompt = self.prompt.saturating_add(u.prompt);
        self.completion = self.completion.saturating_add(u.completion);
        self.estimated |= u.estimated;
    }
}

/// The question as an answerer sees it.
pub struct Question<'a> {
    /// The standalone question (rewritten for a follow-up).
    pub text: &'a str,
    pub response_scope: ResponseScope,
    /// Whose question: term weights are measured over what this scope may read.
    pub scope: &'a AclScope,
}

/// Where an answerer puts its drafts; false means stop (the client went away).
pub trait DraftSink {
    fn draft(&mut self, d: Draft) -> bool;
    /// Whether whoever reads the answer has gone: a model writing a long sentence stops at
    /// once instead of at the sentence's end (or at its own end, if it never ends one).
    fn gone(&self) -> bool {
        false
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error(transparent)]
    Llm(#[from] LlmError),
}

/// Something that writes an answer from passages the pipeline has already scoped, rechecked and
/// screened. Its sentences are drafts: the pipeline verifies each before it leaves.
#[tonic::async_trait]
pub trait Answerer: Send + Sync {
    fn name(&self) -> &'static str;
    /// How many of the (ranked) evidence passages it will use for `q`; only those are given,
    /// and only those can be cited.
    fn passages(&self, q: &Question<'_>, evidence: &[Hit]) -> usize;
    /// Drafts the answer into `sink`; citation markers are 1-based into `passages`.
    async fn answer(
        &self,
        q: &Question<'_>,
        passages: &[Hit],
        sink: &mut (dyn DraftSink + Send),
    ) -> Result<Usage, AnswerError>;
}

/// Sentences extracted verbatim from the passages (no model).
pub struct ExtractiveAnswerer {
    retriever: Arc<Retriever>,
    cfg: AnswerConfig,
}

#[tonic::async_trait]
impl Answerer for ExtractiveAnswerer {
    fn name(&self) -> &'static str {
        "extractive"
    }

    fn passages(&self, _q: &Question<'_>, evidence: &[Hit]) -> usize {
        evidence.len().min(self.cfg.max_passages)
    }

    async fn answer(
        &self,
        q: &Question<'_>,
        passages: &[Hit],
        sink: &mut (dyn DraftSink + Send),
    ) -> Result<Usage, AnswerError> {
        // Term statistics, sentence splitting and scoring are CPU work of a millisecond or
        // more: off the async runtime's workers, which serve every other call meanwhile.
        let (retriever, cfg) = (self.retriever.clone(), self.cfg);
        let (scope, text, hits) = (q.scope.clone(), q.text.to_string(), passages.to_vec());
        let a = match tokio::task::spawn_blocking(move || {
            let terms = retriever.term_weights(&scope, &text);
            let analyze = |s: &str| retriever.analyze(s);
            answer::extractive(&text, &hits, &terms, &analyze, &cfg)
        })
        .await
        {
            Ok(a) => a,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is shutting down: nothing is drafted.
            Err(_) => return Ok(Usage::default()),
        };
        for s in a.sentences {
            let cites = s
                .citations
                .iter()
                .filter_map(|&c| a.citations.get(c))
                .filter_map(|c| passages.iter().position(|h| h.chunk.chunk_id == c.chunk_id))
                .map(|i| i + 1)
                .collect();
            if !sink.draft(Draft {
                text: s.text,
                cites,
            }) {
                break;
            }
        }
        Ok(Usage::default())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AssistantError {
    #[error(transparent)]
    Unauthorized(#[from] AuthzError),
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("conversation {0:?} not found")]
    ConversationNotFound(String),
    #[error("{0}")]
    QuotaExceeded(String),
    /// What is left of a budget is held by requests in flight (retryable).
    #[error("{0}")]
    QuotaInUse(String),
    #[error("conversations are not stored by this daemon")]
    NoStore,
    /// The conversation holds [`MAX_CONVERSATION_TURNS`] turns: a new one must be started.
    #[error(
        "conversation {0:?} holds {MAX_CONVERSATION_TURNS} turns, the most one may; start a new \
         conversation"
    )]
    ConversationFull(String),
    #[error(transparent)]
    Retrieve(#[from] RetrieveError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("internal error: {0}")]
    Internal(String),
    /// The answer was made (and its pieces may have been streamed), but its usage or turn
    /// could not be stored: `outcome` is what the caller was given, for the audit log.
    #[error("{cause}")]
    Unrecorded {
        outcome: Box<AskOutcome>,
        cause: Box<AssistantError>,
    },
}

/// Which conversation a question belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ConversationChoice {
    #[default]
    None,
    New,
    Continue(String),
}

#[derive(Debug, Clone, Default)]
pub struct AskInput {
    pub question: String,
    pub filter: SearchFilter,
    /// None: the configured default.
    pub mode: Option<AnswerMode>,
    pub conversation: ConversationChoice,
}

/// How many days of token usage are kept at least (what `Admin.Usage` may ask for).
const USAGE_KEPT_DAYS: i64 = 367;

/// [`Details::fallback_reason`] when the model answered but none of its sentences passed
/// verification.
pub const LLM_UNVERIFIED: &str = "LLM_UNVERIFIED";

/// How an answer was made.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Details {
    /// Extractive or Generative (never Auto).
    pub mode: AnswerMode,
    pub fallback_reason: Option<&'static str>,
    pub conversation_id: Option<String>,
    pub turn: u32,
    pub rewritten: Option<String>,
    pub usage: Usage,
}

/// What a streamed Ask sends, in order: pieces, the citations, the final status.
#[derive(Debug, Clone)]
pub enum AskEvent {
    Piece(Verified),
    Citations(Vec<Citation>),
    Final(Box<AskOutcome>),
}

/// A finished answer with everything the response and the audit log need.
#[derive(Debug, Clone)]
pub struct AskOutcome {
    pub answer: Answer,
    /// Per sentence of `answer`: generated text no passage supports (general knowledge).
    pub uncited: Vec<bool>,
    /// When a sentence is uncited: the indexed keys of the documents of every passage the
    /// answerer was given (see [`store::TurnRecord::evidence_keys`]).
    pub evidence_keys: Vec<String>,
    pub verdicts: Vec<Verdict>,
    pub details: Details,
}

/// Search results with the guardrail verdicts.
/// Evidence passages an answer is drawn from, at most.
const EVIDENCE_PASSAGES: usize = 10;

/// How many of a conversation's latest turns a follow-up reads (blocked ones are then left out;
/// the rewrite uses at most the last three questions).
pub(crate) const EARLIER_TURNS_READ: usize = 8;

/// Conversations per ListConversations page by default, and at most.
pub const CONVERSATION_PAGE: usize = 50;
pub const MAX_CONVERSATION_PAGE: usize = 200;

/// The position a page token names: the last listed conversation's update time and id;
/// `None` for a token this daemon would not give.
pub fn page_position(token: &str) -> Option<(i64, &str)> {
    let (ms, id) = token.split_once(':')?;
    let ok = id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric());
    Some((ms.parse().ok()?, id)).filter(|_| ok)
}

/// The most turns one conversation holds (reading one back, and its storage, stay bounded).
pub const MAX_CONVERSATION_TURNS: u32 = 1000;

/// How long an owner's identity may be gone (a reload left it out) before its conversations
/// are deleted ([`store::Store::expire_absent`]): an id given to someone else later must not
/// hand them the conversations, and an identity file cut short for a day must not delete them.
pub const ABSENT_GRACE_DAYS: i64 = 7;

pub struct SearchOutcome {
    pub hits: Vec<Hit>,
    pub verdicts: Vec<Verdict>,
    pub blocked: Option<Verdict>,
    /// The hits' document keys as indexed, for the audit log (the hits' own keys are
    /// PII-redacted on the way out). Set by [`Assistant::search`].
    pub audit_keys: Vec<String>,
}

impl SearchOutcome {
    /// A question the guardrails refused: no hits, the verdict.
    fn blocked(v: Verdict) -> Self {
        Self {
            hits: Vec::new(),
            verdicts: Vec::new(),
            blocked: Some(v),
            audit_keys: Vec::new(),
        }
    }
}

pub struct Assistant {
    index: Arc<dyn Backend>,
    retriever: Arc<Retriever>,
    guardrails: Arc<Guardrails>,
    metrics: Arc<Metrics>,
    cfg: AssistantConfig,
    llm: Option<Arc<LlmClient>>,
    store: Option<Arc<Store>>,
    /// Tokens that generative requests in flight may still spend, per budgeted principal: a
    /// budget admits a request only while what was spent plus what is reserved is under it,
    /// so concurrent requests cannot all pass a budget that only one of them fits.
    reserved: Arc<Mutex<HashMap<String, u64>>>,
}

/// Tokens held against budgets by one generative request, released when it is dropped (its
/// actual usage is recorded before).
struct Reservation {
    reserved: Arc<Mutex<HashMap<String, u64>>>,
    principals: Vec<String>,
    tokens: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut r = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
        for p in &self.principals {
            if let Some(t) = r.get_mut(p) {
                *t = t.saturating_sub(self.tokens);
                if *t == 0 {
                    r.remove(p);
                }
            }
        }
    }
}

/// A request that passed authorization, checks and retrieval, ready to answer.
pub struct Prepared {
    assistant: Arc<Assistant>,
    caller: Caller,
    scope: AclScope,
    question: String,
    query: String,
    mode: AnswerMode,
    fallback: Option<&'static str>,
    conversation: ConversationChoice,
    rewritten: Option<String>,
    retrieved: SearchOutcome,
    /// The sentence check found the answer's best sentences far from the question: "not
    /// found" whatever the answerer.
    unsupported: bool,
    /// What the LLM rewrite of a follow-up spent.
    rewrite_usage: Usage,
    /// Charges `rewrite_usage` if the request ends before its usage is recorded.
    unpaid: Unpaid,
    /// This request's hold on the token budgets, until its usage is recorded.
    _reservation: Option<Reservation>,
}

/// Tokens a request spent (an LLM rewrite) that are charged to its budgets when it is dropped
/// before [`Unpaid::paid`]: a request failing or cancelled after the rewrite (retrieval failed,
/// the caller's deadline passed) would else have had it for free (found by a review).
#[derive(Default)]
struct Unpaid(Option<(Arc<store::Store>, Vec<String>, Usage)>);

impl Unpaid {
    /// Its usage is recorded with the request's.
    fn paid(&mut self) {
        self.0 = None;
    }
}

impl Drop for Unpaid {
    fn drop(&mut self) {
        let Some((store, principals, u)) = self.0.take() else {
            return;
        };
        let charge = move || {
            if let Err(e) = store.add_usage(&principals, u.prompt, u.completion) {
                tracing::warn!(error = %e, "the tokens of an abandoned request's rewrite could not be recorded");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => drop(h.spawn_blocking(charge)),
            Err(_) => charge(),
        }
    }
}

impl Assistant {
    /// `question` screened with its embedding (see `normalize::for_embedding`), and when that
    /// allows it, again with the embedding of its reading with every look-alike letter folded
    /// (when that differs): a question padded with words of look-alikes, so that it no longer
    /// reads as a Latin text and its disguised word is not folded, still meets the topic it
    /// disguises (a review). Blocks only; the first screen's allowance stands otherwise.
    fn screen_embedded(
        &self,
        scope: &AclScope,
        question: &str,
        spent: &(dyn Fn() -> bool + Sync),
    ) -> Result<QuestionScreen, RetrieveError> {
        let embedded = guardrail::normalize::for_embedding(question);
        let v = self.retriever.embed_query_until(&embedded, spent)?;
        let first = self
            .guardrails
            .screen_question(scope.principal_set(), question, Some(&v));
        self.screen_folded_too(scope.principal_set(), question, &embedded, first, spent)
    }

    /// `first` (the screen of `question` with the embedding of `embedded`), or, when that
    /// allows it and the reading with every look-alike folded differs from `embedded`, a block
    /// that reading's embedding meets (see [`Self::screen_embedded`]).
    fn screen_folded_too(
        &self,
        principals: &BTreeSet<String>,
        question: &str,
        embedded: &str,
        first: QuestionScreen,
        spent: &(dyn Fn() -> bool + Sync),
    ) -> Result<QuestionScreen, RetrieveError> {
        if matches!(first, QuestionScreen::Block(_)) {
            return Ok(first);
        }
        let folded = guardrail::normalize::for_matching(question);
        if folded.as_ref() == embedded {
            return Ok(first);
        }
        let v = self.retriever.embed_query_until(&folded, spent)?;
        Ok(
            match self
                .guardrails
                .screen_question(principals, question, Some(&v))
            {
                blocked @ QuestionScreen::Block(_) => blocked,
                _ => first,
            },
        )
    }

    pub fn new(
        index: Arc<dyn Backend>,
        retriever: Arc<Retriever>,
        guardrails: Arc<Guardrails>,
        metrics: Arc<Metrics>,
        cfg: AssistantConfig,
        llm: Option<Arc<LlmClient>>,
        store: Option<Arc<Store>>,
    ) -> Self {
        Self {
            index,
            retriever,
            guardrails,
            metrics,
            cfg,
            llm,
            store,
            reserved: Arc::default(),
        }
    }

    pub fn config(&self) -> &AssistantConfig {
        &self.cfg
    }

    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    pub fn guardrails(&self) -> &Arc<Guardrails> {
        &self.guardrails
    }

    pub fn llm(&self) -> Option<&Arc<LlmClient>> {
        self.llm.as_ref()
    }

    fn store_or_err(&self) -> Result<&Arc<Store>, AssistantError> {
        self.store.as_ref().ok_or(AssistantError::NoStore)
    }

    /// The response scope of a caller: a group's when one is configured for it (with several,
    /// enterprise_only wins), else the default.
    pub fn response_scope(&self, principals: &BTreeSet<String>) -> ResponseScope {
        let mut matched = self
            .cfg
            .group_response_scopes
            .iter()
            // A reported group may narrow the scope, not widen it.
            .filter(|(g, s)| match s {
                ResponseScope::EnterpriseOnly => guardrail::holds_restricting(principals, g),
                ResponseScope::AllowGeneralKnowledge => principals.contains(g),
            })
            .map(|(_, s)| *s)
            .peekable();
        if matched.peek().is_none() {
            return self.cfg.response_scope;
        }
        if matched.any(|s| s == ResponseScope::EnterpriseOnly) {
            ResponseScope::EnterpriseOnly
        } else {
            ResponseScope::AllowGeneralKnowledge
        }
    }

    /// The most tokens one generative request may spend: the prompt budget plus the
    /// completion, and a follow-up's rewrite where the model rewrites.
    fn request_tokens(&self) -> u64 {
        self.llm.as_ref().map_or(0, |l| {
            let c = l.config();
            let rewrite = match self.cfg.rewrite {
                RewriteMode::Llm => llm::REWRITE_TOKENS,
                RewriteMode::Heuristic => 0,
            };
            c.context_tokens as u64 + c.max_tokens as u64 + rewrite
        })
    }

    /// Refuses a generative request of a caller whose identity or a group of whom spent its
    /// daily token budget (counting what requests in flight hold); with `reserve`, holds that
    /// many tokens against those budgets until the returned reservation is dropped. `None`: no
    /// budget applies. Blocking.
    fn check_quota(
        &self,
        caller: &Caller,
        reserve: Option<u64>,
    ) -> Result<Option<Reservation>, AssistantError> {
        let q = &self.cfg.quotas;
        if q.daily_tokens_per_identity.is_none() && q.daily_tokens_per_group.is_empty() {
            return Ok(None);
        }
        let Some(store) = &self.store else {
            return Ok(None);
        };
        // Held across the check and the reservation, so two requests cannot both pass it.
        let mut reserved = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
        let held = |p: &str| reserved.get(p).copied().unwrap_or(0);
        // Spent: refused for the day. Held by requests in flight: refused until they finish.
        // Figures only for the caller's own budget: a group's are its members' activity.
        let check = |budget: &str, own: bool, used: u64, held: u64, limit: u64| {
            let spent = if own {
                format!(" ({used} of {limit} tokens spent today, UTC)")
            } else {
                " (today, UTC)".to_string()
            };
            if used >= limit {
                Err(AssistantError::QuotaExceeded(format!(
                    "the daily token budget of {budget} is spent{spent}; extractive answers \
                     are still available"
                )))
            } else if used + held >= limit {
                let whose = if own { "your" } else { "its members'" };
                Err(AssistantError::QuotaInUse(format!(
                    "the rest of the daily token budget of {budget} is held by {whose} requests \
                     in flight{spent}; try again when they finish"
                )))
            } else {
                Ok(())
            }
        };
        if let Some(limit) = q.daily_tokens_per_identity {
            let who = format!("user:{}", caller.user_id());
            check(
                caller.user_id(),
                true,
                store.usage_today(&who)?.tokens(),
                held(&who),
                limit,
            )?;
        }
        for (group, limit) in &q.daily_tokens_per_group {
            if caller.principals().contains(group) {
                check(
                    group,
                    false,
                    store.usage_today(group)?.tokens(),
                    held(group),
                    *limit,
                )?;
            }
        }
        let Some(tokens) = reserve else {
            return Ok(None);
        };
        let principals = self.usage_principals(caller);
        for p in &principals {
            *reserved.entry(p.clone()).or_default() += tokens;
        }
        Ok(Some(Reservation {
            reserved: self.reserved.clone(),
            principals,
            tokens,
        }))
    }

    /// The principals a request's tokens count against: the identity and each group with a
    /// budget that the caller is in.
    fn usage_principals(&self, caller: &Caller) -> Vec<String> {
        let mut v = vec![format!("user:{}", caller.user_id())];
        for (g, _) in &self.cfg.quotas.daily_tokens_per_group {
            if caller.principals().contains(g) {
                v.push(g.clone());
            }
        }
        v
    }

    /// Steps 1–6 for Ask. Errors here are the request's errors (nothing was answered).
    pub async fn prepare(
        self: &Arc<Self>,
        caller: &Caller,
        input: AskInput,
        budget: Budget,
    ) -> Result<Prepared, AssistantError> {
        let scope = authorize(caller)?;
        guardrail::check_question("question", &input.question)?;
        let asked = input.mode.unwrap_or(self.cfg.default_mode);
        let (mut mode, mut fallback) = match asked {
            AnswerMode::Extractive => (AnswerMode::Extractive, None),
            AnswerMode::Auto if self.llm.is_none() => (AnswerMode::Extractive, None),
            AnswerMode::Generative if self.llm.is_none() => {
                (AnswerMode::Extractive, Some("LLM_NOT_CONFIGURED"))
            }
            AnswerMode::Generative | AnswerMode::Auto => (AnswerMode::Generative, None),
        };
        let reservation = if mode == AnswerMode::Generative {
            let me = self.clone();
            let c = caller.clone();
            let tokens = self.request_tokens();
            let checked = tokio::task::spawn_blocking(move || me.check_quota(&c, Some(tokens)))
                .await
                .map_err(|e| AssistantError::Internal(crate::telemetry::task_failure(&e)))?;
            match checked {
                // `auto` asks for the model where it can: over the budget, the extractive
                // answer (which spends no token) is the answer, as when no model is configured.
                Err(AssistantError::QuotaExceeded(_)) if asked == AnswerMode::Auto => {
                    (mode, fallback) = (AnswerMode::Extractive, Some("TOKEN_QUOTA_EXCEEDED"));
                    None
                }
                Err(AssistantError::QuotaInUse(_)) if asked == AnswerMode::Auto => {
                    (mode, fallback) = (AnswerMode::Extractive, Some("TOKEN_QUOTA_IN_USE"));
                    None
                }
                r => r?,
            }
        } else {
            None
        };
        let earlier = match &input.conversation {
            ConversationChoice::Continue(id) => {
                let store = self.store_or_err()?.clone();
                let (owner, id) = (caller.conversation_owner(), id.clone());
                tokio::task::spawn_blocking(move || {
                    let c = store
                        .conversation(&owner, &id)?
                        .ok_or(AssistantError::ConversationNotFound(id.clone()))?;
                    if c.turns >= MAX_CONVERSATION_TURNS {
                        return Err(AssistantError::ConversationFull(id));
                    }
                    // The rewrite reads at most the last three questions. A blocked question
                    // is not carried into a follow-up's search (else "and it?" would search for
                    // what the screening refused).
                    Ok::<_, AssistantError>(
                        store
                            .last_turns(&id, EARLIER_TURNS_READ)?
                            .into_iter()
                            .filter(|t| {
                                t.status != status_name(AnswerStatus::Blocked)
                                    && t.status != store::EXPIRED
                            })
                            .map(|t| {
                                if t.rewritten.is_empty() {
                                    t.question
                                } else {
                                    t.rewritten
                                }
                            })
                            .collect::<Vec<_>>(),
                    )
                })
                .await
                .map_err(|e| AssistantError::Internal(crate::telemetry::task_failure(&e)))??
            }
            ConversationChoice::New => {
                self.store_or_err()?;
                Vec::new()
            }
            ConversationChoice::None => Vec::new(),
        };
        // An earlier question the caller's guardrails refuse now (a phrase blocked since, an
        // exempt group left) is not sent to the model to rewrite the follow-up (a review: it
        // reached the model server): the follow-up is joined to it without a model, and its
        // search is refused as the earlier question would be.
        let mut earlier_refused = earlier.iter().any(|q| {
            matches!(
                self.guardrails
                    .screen_question(scope.principal_set(), q, None),
                QuestionScreen::Block(_)
            )
        });
        // The caller's own words are screened, not only the rewrite (an LLM rewrite may reword a
        // blocked phrase or leave an injection out): a question blocked as asked is searched as
        // asked, where the screening refuses it; and it is not rewritten, so it never reaches
        // the model server (a review: a blocked phrase went to it, and its tokens were charged).
        let mut blocked_as_asked = matches!(
            self.guardrails
                .screen_question(scope.principal_set(), &input.question, None),
            QuestionScreen::Block(_)
        );
        // A follow-up the model would rewrite, and the earlier questions it would be given,
        // are compared with the topics first too (a review: one on a blocked topic reached the
        // model server, and its tokens were charged).
        if !blocked_as_asked
            && !earlier_refused
            && !earlier.is_empty()
            && self.cfg.rewrite == RewriteMode::Llm
            && self.llm.is_some()
            && self.guardrails.needs_question_vector(scope.principal_set())
        {
            let (me, s, own, before, b) = (
                self.clone(),
                scope.clone(),
                input.question.clone(),
                earlier.clone(),
                budget.clone(),
            );
            (blocked_as_asked, earlier_refused) = tokio::task::spawn_blocking(move || {
                let blocked = |q: &str| {
                    Ok::<_, RetrieveError>(matches!(
                        me.screen_embedded(&s, q, &|| b.spent())?,
                        QuestionScreen::Block(_)
                    ))
                };
                let own_blocked = blocked(&own)?;
                let mut earlier_blocked = false;
                for q in &before {
                    if own_blocked || earlier_blocked {
                        break;
                    }
                    earlier_blocked = blocked(q)?;
                }
                Ok::<_, RetrieveError>((own_blocked, earlier_blocked))
            })
            .await
            .map_err(|e| AssistantError::Internal(crate::telemetry::task_failure(&e)))??;
        }
        let (rewritten, rewrite_usage, rewrite_hold) = if blocked_as_asked {
            (None, Usage::default(), None)
        } else {
            self.rewrite(caller, mode, &earlier, &input.question, !earlier_refused)
                .await?
        };
        let unpaid = Unpaid(
            self.store
                .clone()
                .filter(|_| {
                    rewrite_usage
                        .prompt
                        .saturating_add(rewrite_usage.completion)
                        > 0
                })
                .map(|store| (store, self.usage_principals(caller), rewrite_usage)),
        );
        // An extractive answer's LLM rewrite holds its tokens until the request is recorded.
        let reservation = reservation.or(rewrite_hold);
        let query = rewritten.clone().unwrap_or_else(|| input.question.clone());
        // The rewritten question leaves the daemon (the reply, the stored turn) and may be the
        // LLM's words: it passes the output guardrail's PII redaction like an answer sentence,
        // and is not shown when it names a blocked phrase for the caller (an earlier question
        // asked while the caller was exempt), as a stored turn read back would not show it.
        let rewritten = rewritten.filter(|r| {
            self.guardrails
                .blocked_phrase_in(scope.principal_set(), r)
                .is_none()
        });
        let rewritten = rewritten.map(|mut r| {
            let mut found = guardrail::PiiFindings::default();
            self.guardrails
                .redact_sentence(scope.principal_set(), &mut r, &mut found);
            r
        });
        let me = self.clone();
        let (s, q, f) = (scope.clone(), query.clone(), input.filter);
        let rewrote = query != input.question;
        // A follow-up that does not refer back ("Wifi password?", "And contractors?") brings
        // its own subject: evidence found for the question it was joined to must hold some of
        // its words, else the earlier question's evidence would answer it.
        let new_subject =
            (rewrote && !refers_back(&input.question)).then(|| input.question.clone());
        // A follow-up's own words are compared with the topics too: its rewrite starts with the
        // earlier question, whose words can dilute a blocked topic's similarity (found by a
        // review: "Should I sue my landlord over it?" after a long first question).
        let own = (query != input.question
            && self.guardrails.needs_question_vector(scope.principal_set()))
        .then(|| input.question.clone());
        let limit = Limit {
            hits: self.cfg.answer.max_passages.max(10),
            per_document: self.cfg.answer.passages_per_document,
        };
        let (retrieved, unsupported) = tokio::task::spawn_blocking(move || {
            if let Some(own) = own
                && let QuestionScreen::Block(v) =
                    me.screen_embedded(&s, &own, &|| budget.spent())?
            {
                return Ok((SearchOutcome::blocked(v), false));
            }
            let keep = me.cfg.answer.min_sentence_similarity.is_some();
            let (mut r, qvec) =
                me.retrieve_keeping(&s, &q, Mode::Hybrid, f, limit, &budget, keep)?;
            // A phrase found in a rewrite (an earlier question's words, or the LLM's) is named
            // by its configuration key, as in an answer: the caller may not have typed it.
            if rewrote
                && let Some(v) = r.blocked.as_mut()
                && v.stage == "blocked_phrases"
                && let Some(key) = me.guardrails.blocked_phrase_in(s.principal_set(), &q)
            {
                v.rule = key;
            }
            let unsupported = match qvec {
                Some(v) if r.blocked.is_none() => {
                    !me.sentence_check(&s, &q, &r.hits, &v, &budget)?
                }
                _ => false,
            };
            let off_subject = r.blocked.is_none()
                && new_subject
                    .as_deref()
                    .is_some_and(|own| !me.evidence_holds_a_word_of(own, &r.hits));
            if off_subject && !unsupported {
                me.metrics.guardrail("sentence_check", "not_found", 1);
            }
            Ok::<_, RetrieveError>((r, unsupported || off_subject))
        })
        .await
        .map_err(|e| AssistantError::Internal(crate::telemetry::task_failure(&e)))??;
        Ok(Prepared {
            assistant: self.clone(),
            caller: caller.clone(),
            scope,
            question: input.question,
            query,
            mode,
            fallback,
            conversation: input.conversation,
            rewritten,
            retrieved,
            unsupported,
            rewrite_usage,
            unpaid,
            _reservation: reservation,
        })
    }

    /// Whether the evidence among `hits` (text, title or headings) holds any analyzed term of
    /// `question` (true when it has none: nothing but stop words).
    fn evidence_holds_a_word_of(&self, question: &str, hits: &[Hit]) -> bool {
        let own: BTreeSet<String> = self.retriever.analyze(question).into_iter().collect();
        if own.is_empty() {
            return true;
        }
        hits.iter()
            .filter(|h| answer::is_evidence(h, &self.cfg.answer))
            .take(EVIDENCE_PASSAGES)
            .any(|h| {
                let c = &h.chunk;
                std::iter::once(&c.text)
                    .chain(std::iter::once(&c.title))
                    .chain(&c.heading_path)
                    .any(|t| self.retriever.analyze(t).iter().any(|w| own.contains(w)))
            })
    }

    /// The sentence check ([`AnswerConfig::min_sentence_similarity`]): whether one of the
    /// answer's best sentences ([`AnswerConfig::check_sentences`] of them, embedded one at a
    /// time until one is close enough) is close enough to the question (`qvec`) to answer it.
    /// True when the check is off or there is no evidence (that is "not found" anyway).
    /// Blocking.
    fn sentence_check(
        &self,
        scope: &AclScope,
        query: &str,
        hits: &[Hit],
        qvec: &[f32],
        budget: &Budget,
    ) -> Result<bool, RetrieveError> {
        let cfg = &self.cfg.answer;
        if cfg.min_sentence_similarity.is_none() {
            return Ok(true);
        }
        let evidence: Vec<Hit> = hits
            .iter()
            .filter(|h| answer::is_evidence(h, cfg))
            .take(EVIDENCE_PASSAGES)
            .cloned()
            .collect();
        let terms = self.retriever.term_weights(scope, query);
        let analyze = |s: &str| self.retriever.analyze(s);
        // Evidence without a sentence that could lead an answer (labels, table cells) is "not
        // found" for the extractive answerer, and so for every answerer: one decision. Without
        // evidence at all the answerers say so themselves.
        let sentences =
            answer::check_sentences(query, &evidence, &terms, &analyze, cfg, cfg.check_sentences);
        if sentences.is_empty() {
            if !evidence.is_empty() {
                self.metrics.guardrail("sentence_check", "not_found", 1);
            }
            return Ok(evidence.is_empty());
        }
        let supported = answer::any_sentence_supports(&sentences, cfg, |s| {
            let v = self.retriever.embed_passage_until(s, &|| budget.spent())?;
            Ok::<_, RetrieveError>(crate::embed::dot(qvec, &v))
        })?;
        if !supported {
            self.metrics.guardrail("sentence_check", "not_found", 1);
        }
        Ok(supported)
    }

    /// The standalone query for a follow-up, or `None` when the question stands alone; and
    /// the tokens an LLM rewrite spent. The model rewrites only within the caller's token
    /// budget (a generative request has reserved its rewrite; an extractive one is checked
    /// here), else the heuristic does.
    async fn rewrite(
        self: &Arc<Self>,
        caller: &Caller,
        mode: AnswerMode,
        earlier: &[String],
        question: &str,
        model_allowed: bool,
    ) -> Result<(Option<String>, Usage, Option<Reservation>), AssistantError> {
        let Some(heuristic) = heuristic_rewrite(earlier, question) else {
            return Ok((None, Usage::default(), None));
        };
        if self.cfg.rewrite == RewriteMode::Llm
            && model_allowed
            && let Some(llm) = &self.llm
        {
            // A generative request reserved its rewrite with its answer; an extractive one
            // reserves the rewrite's most tokens now (a check alone let concurrent rewrites
            // pass one budget together: session 34's review).
            let hold = match mode {
                AnswerMode::Generative => Ok(None),
                _ => {
                    let (me, c) = (self.clone(), caller.clone());
                    tokio::task::spawn_blocking(move || {
                        me.check_quota(&c, Some(llm::REWRITE_TOKENS))
                    })
                    .await
                    .map_err(|e| AssistantError::Internal(crate::telemetry::task_failure(&e)))?
                }
            };
            if let Ok(hold) = hold {
                let earlier = &earlier[earlier.len().saturating_sub(3)..];
                // Charged an estimate if the request is dropped while the model rewrites (the
                // caller cancelled, its deadline passed): else a follow-up cancelled during
                // its rewrite read the earlier questions for free (a review). Disarmed when
                // the call returns: the caller then charges what it spent.
                let mut pending = Unpaid(self.store.clone().map(|store| {
                    let estimate = Usage {
                        prompt: llm::rewrite_prompt_tokens(earlier, question),
                        completion: u64::from(llm::REWRITE_MAX_TOKENS),
                        estimated: true,
                    };
                    (store, self.usage_principals(caller), estimate)
                }));
                let answered = llm::rewrite(llm, earlier, question).await;
                pending.paid();
                match answered {
                    // Within the question's own limit too: a rewrite is searched, stored and
                    // fed back as an earlier question.
                    Ok((r, u))
                        if !r.is_empty()
                            && r.len()
                                <= (4 * question.len() + 400)
                                    .min(guardrail::MAX_QUESTION_BYTES) =>
                    {
                        return Ok((Some(r), u, hold));
                    }
                    Ok((_, u)) => return Ok((Some(heuristic), u, hold)),
                    Err(e) => {
                        tracing::warn!(error = %guardrail::pii::for_log(&e.to_string()), "LLM rewrite failed; using the heuristic");
                        if e.may_have_generated() {
                            // What the server may have spent counts (an estimate), as for a
                            // failed answer: else failing rewrites would be free.
                            let u = Usage {
                                prompt: llm::rewrite_prompt_tokens(earlier, question),
                                completion: u64::from(llm::REWRITE_MAX_TOKENS),
                                estimated: true,
                            };
                            return Ok((Some(heuristic), u, hold));
                        }
                    }
                }
            }
        }
        Ok((Some(heuristic), Usage::default(), None))
    }

    /// Search: steps 1, 2, 4–6 and PII redaction of the hits. Blocking.
    pub fn search(
        &self,
        caller: &Caller,
        query: &str,
        mode: Mode,
        filter: SearchFilter,
        limit: Limit,
        budget: &Budget,
    ) -> Result<SearchOutcome, AssistantError> {
        let scope = authorize(caller)?;
        guardrail::check_question("query", query)?;
        let mut r = self.retrieve(&scope, query, mode, filter, limit, budget)?;
        r.audit_keys = r.hits.iter().map(|h| h.chunk.doc_key.clone()).collect();
        r.verdicts.extend(
            self.guardrails
                .redact_hits(scope.principal_set(), &mut r.hits),
        );
        Ok(r)
    }

    /// Question guardrails (with the question embedding when a topic applies), retrieval under
    /// the scope (narrowed by a topic restriction), the ACL recheck and passage screening.
    /// Blocking.
    fn retrieve(
        &self,
        scope: &AclScope,
        query: &str,
        mode: Mode,
        filter: SearchFilter,
        limit: Limit,
        budget: &Budget,
    ) -> Result<SearchOutcome, RetrieveError> {
        self.retrieve_keeping(scope, query, mode, filter, limit, budget, false)
            .map(|(r, _)| r)
    }

    /// [`Self::retrieve`], also handing back the question's vector when `keep_vector` (the
    /// sentence check compares it with the answer's best sentences). The question is then
    /// embedded before the search instead of beside its BM25 legs.
    #[allow(clippy::too_many_arguments)]
    fn retrieve_keeping(
        &self,
        scope: &AclScope,
        query: &str,
        mode: Mode,
        mut filter: SearchFilter,
        limit: Limit,
        budget: &Budget,
        keep_vector: bool,
    ) -> Result<(SearchOutcome, Option<Vec<f32>>), RetrieveError> {
        let principals = scope.principal_set();
        let spent = || budget.spent();
        // Topic guardrails compare this vector too: embed the normalised text, so invisible or
        // compatibility characters, or look-alike letters inside English words, cannot move a
        // question away from a blocked topic.
        let topics = self.guardrails.needs_question_vector(principals);
        let normalized =
            (keep_vector || topics).then(|| guardrail::normalize::for_embedding(query));
        let qvec = match &normalized {
            Some(n) => Some(self.retriever.embed_query_until(n, &spent)?),
            None => None,
        };
        let mut screened = self
            .guardrails
            .screen_question(principals, query, qvec.as_deref());
        if topics && let Some(n) = &normalized {
            screened = self.screen_folded_too(principals, query, n, screened, &spent)?;
        }
        let mut verdicts = match screened {
            QuestionScreen::Block(v) => return Ok((SearchOutcome::blocked(v), None)),
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
                        return Ok((
                            SearchOutcome {
                                hits: Vec::new(),
                                verdicts,
                                blocked: None,
                                audit_keys: Vec::new(),
                            },
                            None,
                        ));
                    }
                }
                verdicts
            }
        };
        let kept = if keep_vector { qvec.clone() } else { None };
        let hits = self
            .retriever
            .search_until(scope, query, qvec, mode, &filter, limit, &spent)?;
        let before = hits.len();
        let hits = guardrail::recheck_hits(&*self.index, scope, hits);
        self.metrics
            .guardrail("acl", "drop", (before - hits.len()) as u64);
        let (hits, v) = self.guardrails.screen_phrases(principals, hits);
        verdicts.extend(v);
        let (hits, v) = self.guardrails.screen_passages(principals, hits);
        verdicts.extend(v);
        Ok((
            SearchOutcome {
                hits,
                verdicts,
                blocked: None,
                audit_keys: Vec::new(),
            },
            kept,
        ))
    }
}

/// Most bytes of the previous question a heuristic rewrite carries.
const MAX_CARRIED_BYTES: usize = 1024;

/// The lower-cased words of a question.
fn words_of(question: &str) -> Vec<String> {
    question
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Whether a question refers back with an anaphor ("it", "they", "that", …): its own words
/// need the earlier question's to mean anything.
fn refers_back(question: &str) -> bool {
    const ANAPHORS: [&str; 16] = [
        "it", "its", "it's", "they", "them", "their", "this", "that", "these", "those", "he",
        "she", "his", "her", "there", "ones",
    ];
    words_of(question)
        .iter()
        .any(|w| ANAPHORS.contains(&w.as_str()))
}

/// Heuristic follow-up detection: a question with an anaphor ("it", "they", "that", …), one
/// that opens like a continuation ("and …", "what about …", "also …"), or a short one (at most
/// four words) follows up on the previous question; its standalone query is the previous
/// (standalone) question followed by this one. Only questions are used, never answers.
pub fn heuristic_rewrite(earlier: &[String], question: &str) -> Option<String> {
    let prev = earlier.last()?;
    const OPENERS: [&str; 5] = ["and", "also", "what about", "how about", "but"];
    let lower = crate::parse::collapse_ws(&question.to_lowercase());
    let follow_up = words_of(question).len() <= 4
        || refers_back(question)
        || OPENERS.iter().any(|o| lower.starts_with(&format!("{o} ")));
    // The previous question may itself be a rewrite: keep its end only, so a long chain of
    // follow-ups does not grow the query (and the model's prompt) without bound.
    let mut prev = prev.trim();
    if prev.len() > MAX_CARRIED_BYTES {
        let mut cut = prev.len() - MAX_CARRIED_BYTES;
        while !prev.is_char_boundary(cut) {
            cut += 1;
        }
        prev = prev[cut..].trim_start();
    }
    follow_up.then(|| format!("{} {}", prev, question.trim()))
}

/// How an answer leaves the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Each verified piece is sent as it is ready (AskStream): what is sent stands.
    Streamed,
    /// Only the finished answer is sent (Ask): a sentence whose citation the last ACL check
    /// refused is taken out before anything leaves.
    Whole,
}

/// Takes out the sentences that cite any of `refused` (sorted citation indexes), and the
/// uncited ones (written with the refused passages in view), then the refused citations,
/// renumbering the rest.
fn drop_refused(
    sentences: &mut Vec<AnswerSentence>,
    uncited: &mut Vec<bool>,
    citations: &mut Vec<Citation>,
    refused: &[usize],
) {
    let mut remap = vec![None; citations.len()];
    let mut kept = Vec::new();
    for (i, c) in std::mem::take(citations).into_iter().enumerate() {
        if refused.binary_search(&i).is_err() {
            remap[i] = Some(kept.len());
            kept.push(c);
        }
    }
    *citations = kept;
    let mut flags = std::mem::take(uncited).into_iter();
    let mut stays = Vec::new();
    for mut s in std::mem::take(sentences) {
        let was_uncited = flags.next().unwrap_or(false);
        let mapped: Vec<usize> = s
            .citations
            .iter()
            .filter_map(|&c| remap.get(c).copied().flatten())
            .collect();
        if !was_uncited && !mapped.is_empty() && mapped.len() == s.citations.len() {
            s.citations = mapped;
            stays.push(s);
        }
    }
    uncited.resize(stays.len(), false);
    *sentences = stays;
}

/// Collects drafts through the verifier and streams what survives.
struct Sink<'a> {
    verifier: Verifier<'a>,
    tx: Option<&'a UnboundedSender<AskEvent>>,
    sentences: Vec<AnswerSentence>,
    uncited: Vec<bool>,
    started: std::time::Instant,
    first_piece: Option<std::time::Duration>,
    gone: bool,
    /// Bytes of every sentence the answerer drafted, kept or not.
    drafted: usize,
}

impl Sink<'_> {
    /// The bytes a model wrote as far as is known, for an estimate of its completion tokens:
    /// every drafted sentence, not only those verification kept (a review: a call abandoned or
    /// failed after unsupported sentences cost nothing).
    fn written(&self) -> usize {
        let kept: usize = self.sentences.iter().map(|x| x.text.len()).sum();
        kept.max(self.drafted)
    }
}

impl DraftSink for Sink<'_> {
    fn gone(&self) -> bool {
        self.gone || self.tx.is_some_and(UnboundedSender::is_closed)
    }

    fn draft(&mut self, d: Draft) -> bool {
        if self.gone {
            return false;
        }
        self.drafted = self.drafted.saturating_add(d.text.len());
        if let Some(v) = self.verifier.check(d) {
            if self.first_piece.is_none() {
                self.first_piece = Some(self.started.elapsed());
            }
            if let Some(tx) = self.tx
                && tx.send(AskEvent::Piece(v.clone())).is_err()
            {
                self.gone = true;
            }
            self.uncited.push(v.uncited);
            self.sentences.push(v.sentence);
        }
        !self.gone
    }
}

impl Prepared {
    /// The conversation this request continues or starts (empty for none).
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// Steps 7–9: answers, streaming each verified piece to `tx` (when given) as it is ready,
    /// then the citations and the outcome. `started` is when the request arrived (time to first
    /// piece is measured from it).
    pub async fn run(
        mut self,
        tx: Option<&UnboundedSender<AskEvent>>,
        delivery: Delivery,
        started: std::time::Instant,
    ) -> Result<AskOutcome, AssistantError> {
        let a = self.assistant.clone();
        let mut verdicts = self.retrieved.verdicts.clone();
        let mut details = Details {
            mode: self.mode,
            fallback_reason: self.fallback,
            rewritten: self.rewritten.clone(),
            usage: self.rewrite_usage,
            ..Details::default()
        };
        let outcome = if let Some(b) = self.retrieved.blocked.clone() {
            let message = b.message.clone();
            verdicts.push(b);
            AskOutcome {
                answer: Answer::blocked(&message),
                uncited: Vec::new(),
                evidence_keys: Vec::new(),
                verdicts,
                details,
            }
        } else {
            let evidence: Vec<Hit> = self
                .retrieved
                .hits
                .iter()
                .filter(|h| answer::is_evidence(h, &a.cfg.answer))
                .take(EVIDENCE_PASSAGES)
                .cloned()
                .collect();
            let (answer, uncited, v) = if evidence.is_empty() || self.unsupported {
                // Weak evidence, or its best sentence does not answer the question: "not
                // found" without spending a token.
                (Answer::no_answer(), Vec::new(), Vec::new())
            } else {
                self.answer(&evidence, tx, delivery, started, &mut details)
                    .await
            };
            verdicts.extend(v);
            // A model's sentence may carry words of any passage it was given, not only of those
            // it cites (the grounding check asks for most of its words, not all): a generated
            // answer keeps the keys of everything it was written from.
            let generated = details.mode == AnswerMode::Generative && !answer.sentences.is_empty();
            let evidence_keys = if generated || uncited.iter().any(|&u| u) {
                let keys: BTreeSet<&String> = evidence.iter().map(|h| &h.chunk.doc_key).collect();
                keys.into_iter().cloned().collect()
            } else {
                Vec::new()
            };
            AskOutcome {
                answer,
                uncited,
                evidence_keys,
                verdicts,
                details,
            }
        };
        let mut outcome = outcome;
        // Recorded below with the rest (or counted by the store when it cannot be written).
        let mut unpaid = std::mem::take(&mut self.unpaid);
        unpaid.paid();
        if let Err(cause) = self.record(&mut outcome).await {
            return Err(AssistantError::Unrecorded {
                outcome: Box::new(outcome),
                cause: Box::new(cause),
            });
        }
        if let Some(tx) = tx {
            let _ = tx.send(AskEvent::Citations(outcome.answer.citations.clone()));
            let _ = tx.send(AskEvent::Final(Box::new(outcome.clone())));
        }
        Ok(outcome)
    }

    async fn answer(
        &self,
        evidence: &[Hit],
        tx: Option<&UnboundedSender<AskEvent>>,
        delivery: Delivery,
        started: std::time::Instant,
        details: &mut Details,
    ) -> (Answer, Vec<bool>, Vec<Verdict>) {
        let a = &self.assistant;
        let analyze = |s: &str| a.retriever.analyze(s);
        let extractive = ExtractiveAnswerer {
            retriever: a.retriever.clone(),
            cfg: a.cfg.answer,
        };
        let generative = a
            .llm
            .as_ref()
            .map(|c| llm::LlmAnswerer { client: c.clone() });
        let response_scope = match self.mode {
            AnswerMode::Generative => a.response_scope(self.scope.principal_set()),
            _ => ResponseScope::EnterpriseOnly,
        };
        let q = Question {
            text: &self.query,
            response_scope,
            scope: &self.scope,
        };
        // What either answerer reads is PII-redacted for the caller first, as whole passages
        // (and verified against the same text): a value a line break cuts into two sentences,
        // neither of which the per-sentence redaction recognises, is redacted whole (session
        // 37's review: an extractive answer quoted both halves of an IBAN). Copied only when
        // a PII rule covers the caller.
        let redacted: Vec<Hit>;
        let mut found = Vec::new();
        let evidence = if a.guardrails.redacts_pii_for(self.scope.principal_set()) {
            let mut copy = evidence.to_vec();
            found = a
                .guardrails
                .redact_passages(self.scope.principal_set(), &mut copy);
            redacted = copy;
            &redacted[..]
        } else {
            evidence
        };
        let for_model = evidence;
        // `model`: the model writes; else the extractive answerer.
        let attempt = |answerer: &dyn Answerer, model: bool| {
            let n = answerer.passages(&q, evidence);
            Sink {
                verifier: Verifier::new(
                    &evidence[..n],
                    &a.guardrails,
                    &*a.index,
                    &self.scope,
                    &analyze,
                    response_scope,
                )
                .generated(model),
                tx,
                sentences: Vec::new(),
                uncited: Vec::new(),
                started,
                first_piece: None,
                gone: false,
                drafted: 0,
            }
        };
        let mut sink = None;
        // The verdicts of a model attempt that failed before any sentence was kept.
        let mut attempted: Vec<crate::guardrail::Verdict> = Vec::new();
        if let (AnswerMode::Generative, Some(g)) = (self.mode, &generative) {
            let mut s = attempt(g, true);
            let n = g.passages(&q, for_model);
            // A client that leaves an AskStream ends the model call at once, not at its next
            // piece: a slow or stalled model would hold its concurrency slot meanwhile.
            let answered = match tx {
                Some(tx) => tokio::select! {
                    r = g.answer(&q, &for_model[..n], &mut s) => Some(r),
                    () = tx.closed() => None,
                },
                None => Some(g.answer(&q, &for_model[..n], &mut s).await),
            };
            let answered = answered.unwrap_or_else(|| {
                // Abandoned before the server reported its usage: count an estimate, so that
                // leaving early does not spend tokens outside the budget.
                let written = s.written();
                s.gone = true;
                Ok(Usage {
                    prompt: g.prompt_tokens(&q, &for_model[..n]),
                    completion: written.div_ceil(4) as u64,
                    estimated: true,
                })
            });
            match answered {
                // The model wrote nothing that passed verification (every sentence unsupported
                // by the passages, or only "I don't know" and questions back): the extractive
                // answer instead, so that "not found" is one decision whatever the mode (a
                // review: a question the extractive answerer answers was "not found" when a
                // small model said it did not know). Not when the caller lost access to a
                // passage meanwhile: that answer is "not found" as before.
                Ok(u) if s.verifier.kept() == 0 && !s.gone && !s.verifier.lost_access() => {
                    details.usage.add(u);
                    a.metrics.llm(LLM_UNVERIFIED);
                    details.fallback_reason = Some(LLM_UNVERIFIED);
                    details.mode = AnswerMode::Extractive;
                    attempted = s.verifier.finish().verdicts;
                }
                Ok(u) => {
                    details.usage.add(u);
                    a.metrics.llm("ok");
                    sink = Some(s);
                }
                Err(AnswerError::Llm(e)) => {
                    tracing::warn!(error = %crate::guardrail::pii::for_log(&e.to_string()), "LLM answer failed");
                    a.metrics.llm(e.reason());
                    // Tokens the server may have spent count against the budget too (an
                    // estimate): else generations that keep failing would be free.
                    if e.may_have_generated() || s.drafted > 0 {
                        let written = s.written();
                        details.usage.add(Usage {
                            prompt: g.prompt_tokens(&q, &for_model[..n]),
                            completion: written.div_ceil(4) as u64,
                            estimated: true,
                        });
                    }
                    details.fallback_reason = Some(e.reason());
                    if s.verifier.kept() > 0 {
                        // Verified pieces were already sent: keep them, flagged.
                        sink = Some(s);
                    } else {
                        details.mode = AnswerMode::Extractive;
                        // What the verifier caught in the failed attempt (a link removed, a
                        // sentence ungrounded) is audited with the answer given instead (a
                        // review: it was dropped with the attempt).
                        let failed = s.verifier.finish();
                        a.metrics
                            .guardrail("acl", "drop", u64::from(failed.acl_dropped));
                        attempted = failed.verdicts;
                    }
                }
            }
        }
        let s = match sink {
            Some(s) => s,
            None => {
                details.mode = AnswerMode::Extractive;
                let mut s = attempt(&extractive, false);
                let n = extractive.passages(&q, evidence);
                let _ = extractive.answer(&q, &evidence[..n], &mut s).await;
                s
            }
        };
        if let Some(t) = s.first_piece {
            a.metrics.first_piece(t);
        }
        let cited = s.verifier.cited();
        let mut f = s.verifier.finish();
        a.metrics.guardrail("acl", "drop", u64::from(f.acl_dropped));
        // What the cited passages (those still readable) had redacted before the answerer
        // read them. By passage: the citations' own ids are redacted by now.
        let mut found: Vec<Option<crate::guardrail::PiiFindings>> =
            found.into_iter().map(Some).collect();
        let mut before = crate::guardrail::PiiFindings::default();
        for (p, c) in cited {
            if !f.refused.contains(&c)
                && let Some(fd) = found.get_mut(p).and_then(Option::take)
            {
                before.extend(fd);
            }
        }
        for v in before.verdict().into_iter().chain(attempted) {
            merge_verdict(&mut f.verdicts, v);
        }
        let (mut sentences, mut uncited, mut citations) = (s.sentences, s.uncited, f.citations);
        if delivery == Delivery::Whole && !f.refused.is_empty() {
            // Nothing has left yet: the sentences that stand on a refused citation go whole.
            drop_refused(&mut sentences, &mut uncited, &mut citations, &f.refused);
        }
        if delivery == Delivery::Whole && f.given_unreadable {
            // Nor any sentence of a model that read a passage the caller can no longer read.
            sentences.clear();
            uncited.clear();
            citations.clear();
        }
        if sentences.is_empty() {
            return (Answer::no_answer(), Vec::new(), f.verdicts);
        }
        (
            Answer {
                status: AnswerStatus::Answered,
                sentences,
                citations,
                message: String::new(),
            },
            uncited,
            f.verdicts,
        )
    }

    /// Usage, metrics and the conversation turn.
    async fn record(&self, o: &mut AskOutcome) -> Result<(), AssistantError> {
        let a = self.assistant.clone();
        a.metrics.answer(match o.answer.status {
            AnswerStatus::Answered => AnswerOutcome::Answered,
            AnswerStatus::NoAnswer => AnswerOutcome::NoAnswer,
            AnswerStatus::Blocked => AnswerOutcome::Blocked,
        });
        let u = o.details.usage;
        if u.prompt.saturating_add(u.completion) > 0 {
            a.metrics.llm_tokens(u.prompt, u.completion);
        }
        let Some(store) = a.store.clone() else {
            return Ok(());
        };
        let owner = self.caller.conversation_owner();
        let principals = a.usage_principals(&self.caller);
        let conversation = self.conversation.clone();
        let turn = turn_record(&self.question, self.rewritten.as_deref(), o);
        let (id, n) = tokio::task::spawn_blocking(move || {
            if u.prompt.saturating_add(u.completion) > 0 {
                store.add_usage(&principals, u.prompt, u.completion)?;
            }
            let id = match conversation {
                ConversationChoice::None => return Ok::<_, AssistantError>((None, 0)),
                ConversationChoice::New => {
                    return Ok((Some(store.create_with_turn(&owner, &turn)?), 0));
                }
                ConversationChoice::Continue(id) => id,
            };
            // Deleted meanwhile (by its owner), or filled by concurrent follow-ups: the
            // answer stands, the turn is not kept.
            let n = store.append(&owner, &id, &turn)?;
            Ok((n.map(|_| id), n.unwrap_or(0)))
        })
        .await
        .map_err(|e| AssistantError::Internal(crate::telemetry::task_failure(&e)))??;
        o.details.conversation_id = id;
        o.details.turn = n;
        Ok(())
    }
}

fn status_name(s: AnswerStatus) -> &'static str {
    match s {
        AnswerStatus::Answered => "answered",
        AnswerStatus::NoAnswer => "no_answer",
        AnswerStatus::Blocked => "blocked",
    }
}

fn turn_record(question: &str, rewritten: Option<&str>, o: &AskOutcome) -> store::TurnRecord {
    let a = &o.answer;
    store::TurnRecord {
        question: question.to_string(),
        rewritten: rewritten.unwrap_or_default().to_string(),
        answer: a.text(),
        sentences: a
            .sentences
            .iter()
            .zip(o.uncited.iter().copied().chain(std::iter::repeat(false)))
            .map(|(s, uncited)| store::StoredSentence {
                text: s.text.clone(),
                citations: s.citations.clone(),
                uncited,
            })
            .collect(),
        citations: a
            .citations
            .iter()
            .map(|c| store::StoredCitation {
                document_key: c.document_key.clone(),
                title: c.title.clone(),
                uri: c.uri.clone(),
                chunk_id: c.chunk_id.clone(),
                span: (c.span.start, c.span.end),
                snippet: c.snippet.clone(),
                heading_path: c.heading_path.clone(),
                page: c.page,
                access_key: c.access_key.clone(),
            })
            .collect(),
        status: status_name(a.status).into(),
        mode: o.details.mode.name().into(),
        prompt_tokens: o.details.usage.prompt,
        completion_tokens: o.details.usage.completion,
        time_ms: store::now_ms(),
        evidence_keys: o.evidence_keys.clone(),
    }
}

/// A stored turn as the caller may see it now: citations of documents the caller can no longer
/// read are dropped, with every sentence that cited one of them; when any document the answerer
/// was given is no longer readable, uncited sentences go, and so does every sentence of a
/// generated answer (a model's sentence may carry words of any passage it read), as in a
/// generated answer stored before those passages were recorded. The answer text is rebuilt
/// from what is left.
pub fn visible_turn(
    index: &dyn Backend,
    scope: &AclScope,
    t: store::TurnRecord,
) -> store::TurnRecord {
    visible_turn_with(index, scope, t, &mut HashMap::new())
}

/// [`visible_turn`] with the answers already asked for the caller (`seen`, by key): the turns
/// of one conversation cite the same documents again and again, and each question may be a
/// remote lookup (Milvus).
fn visible_turn_with(
    index: &dyn Backend,
    scope: &AclScope,
    t: store::TurnRecord,
    seen: &mut HashMap<String, bool>,
) -> store::TurnRecord {
    let mut readable = |key: &str| match seen.get(key) {
        Some(&ok) => ok,
        None => {
            let ok = guardrail::readable(index, scope, key);
            seen.insert(key.to_string(), ok);
            ok
        }
    };
    // The key as indexed: the sent `document_key` may be PII-redacted, and no longer names
    // the document.
    let ok: Vec<bool> = t
        .citations
        .iter()
        .map(|c| {
            let key = if c.access_key.is_empty() {
                &c.document_key
            } else {
                &c.access_key
            };
            readable(key)
        })
        .collect();
    let evidence_ok = t.evidence_keys.iter().all(|k| readable(k));
    let generated = t.mode == AnswerMode::Generative.name();
    // A generated answer always records what it was written from; one without that record was
    // stored before it was kept, and what its model read is unknown: its sentences are not
    // shown again.
    let unrecorded = generated && !t.sentences.is_empty() && t.evidence_keys.is_empty();
    if evidence_ok && !unrecorded && ok.iter().all(|&b| b) {
        return t;
    }
    let mut t = t;
    if (!evidence_ok || unrecorded) && generated {
        t.sentences.clear();
    }
    keep_citations(t, &ok)
}

/// `t` with only the citations `ok` marks, the sentences that stand on those alone (no uncited
/// sentence), and its answer text rebuilt from them.
fn keep_citations(mut t: store::TurnRecord, ok: &[bool]) -> store::TurnRecord {
    let mut remap = vec![None; ok.len()];
    let mut kept = Vec::new();
    for (i, c) in t.citations.drain(..).enumerate() {
        if ok[i] {
            remap[i] = Some(kept.len());
            kept.push(c);
        }
    }
    t.citations = kept;
    // A sentence stands on every passage it cites: it goes when any of them is no longer
    // readable (its text may come from that one). An uncited sentence goes too: the answerer
    // wrote it with the now unreadable passages in front of it (cited or only given).
    t.sentences.retain_mut(|s| {
        let kept: Vec<usize> = s
            .citations
            .iter()
            .filter_map(|&c| remap.get(c).copied().flatten())
            .collect();
        let whole = kept.len() == s.citations.len() && !kept.is_empty();
        s.citations = kept;
        whole
    });
    t.answer = t
        .sentences
        .iter()
        .map(|s| {
            let marks: String = s
                .citations
                .iter()
                .map(|c| format!(" [{}]", c + 1))
                .collect();
            format!("{}{marks}", s.text)
        })
        .collect::<Vec<_>>()
        .join(" ");
    if t.sentences.is_empty() && t.status == "answered" {
        t.status = "no_answer".into();
        t.answer = answer::NO_ANSWER_MESSAGE.into();
    }
    t
}

/// Adds `v` to `verdicts`: counted with the verdict of its code if there is one (their rules
/// joined), else appended.
fn merge_verdict(verdicts: &mut Vec<crate::guardrail::Verdict>, v: crate::guardrail::Verdict) {
    match verdicts.iter_mut().find(|x| x.code == v.code) {
        Some(x) => {
            x.count += v.count;
            let mut rules: BTreeSet<&str> = x.rule.split(',').filter(|r| !r.is_empty()).collect();
            rules.extend(v.rule.split(',').filter(|r| !r.is_empty()));
            x.rule = rules.into_iter().collect::<Vec<_>>().join(",");
        }
        None => verdicts.push(v),
    }
}

/// A stored turn screened for blocked phrases as it leaves the daemon again (the rules, or the
/// caller's exemptions, may have changed since it was asked): a citation naming one goes with
/// every sentence citing it, as does a sentence naming one, and a rewritten question naming
/// one is not shown.
fn screen_turn(
    g: &Guardrails,
    principals: &BTreeSet<String>,
    mut t: store::TurnRecord,
) -> store::TurnRecord {
    if !g.phrases_cover(principals) {
        return t;
    }
    let named = |s: &str| g.blocked_phrase_in(principals, s).is_some();
    if named(&t.rewritten) {
        t.rewritten.clear();
    }
    // The question too: in a conversation an audience owns (a Slack channel's), it may be
    // another member's, asked while exempt (session 37's review).
    if named(&t.question) {
        t.question = WITHHELD.to_string();
    }
    let mut ok: Vec<bool> = t
        .citations
        .iter()
        .map(|c| {
            g.blocked_phrase_among(
                principals,
                [c.title.as_str(), c.snippet.as_str()]
                    .into_iter()
                    .chain(c.heading_path.iter().map(String::as_str)),
                [c.document_key.as_str(), c.uri.as_str(), c.chunk_id.as_str()],
            )
            .is_none()
        })
        .collect();
    // Each sentence, and each with the ones kept before it (a phrase split across several, as
    // the answer-time check reads them; found by a review: a stored turn read back showed it).
    let mut gone = Vec::new();
    let mut kept: Vec<store::StoredSentence> = Vec::new();
    for s in t.sentences.drain(..) {
        let from = kept.len().saturating_sub(verify::PHRASE_SPAN);
        let joined = !kept.is_empty()
            && named(
                &kept[from..]
                    .iter()
                    .map(|k| k.text.as_str())
                    .chain([s.text.as_str()])
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        if joined || named(&s.text) {
            gone.push(s);
        } else {
            kept.push(s);
        }
    }
    t.sentences = kept;
    if gone.is_empty() && ok.iter().all(|&b| b) && !named(&t.answer) {
        return t;
    }
    // A citation only a removed sentence stood on goes with it: its passage held the phrase.
    let still: BTreeSet<usize> = t
        .sentences
        .iter()
        .flat_map(|s| s.citations.clone())
        .collect();
    for c in gone.iter().flat_map(|s| &s.citations) {
        if !still.contains(c)
            && let Some(o) = ok.get_mut(*c)
        {
            *o = false;
        }
    }
    keep_citations(t, &ok)
}

/// The most characters of a conversation's title shown.
pub const TITLE_CHARS: usize = 80;

/// What a stored question or a conversation's title is shown as when it names a phrase
/// blocked for the reader now.
pub const WITHHELD: &str = "(withheld: it names a blocked phrase)";

/// PII redaction of a conversation's title (its first question) as it leaves the daemon, for
/// the caller's principals now (see [`redact_turn`]), then the cut to [`TITLE_CHARS`]: cut
/// first, an account number split at the cut would no longer read as one.
fn redact_title(g: &Guardrails, principals: &BTreeSet<String>, c: &mut store::ConversationRecord) {
    if g.blocked_phrase_in(principals, &c.title).is_some() {
        c.title = WITHHELD.to_string();
        return;
    }
    g.redact_sentence(
        principals,
        &mut c.title,
        &mut guardrail::PiiFindings::default(),
    );
    if let Some((at, _)) = c.title.char_indices().nth(TITLE_CHARS) {
        c.title.truncate(at);
    }
}

/// A stored snippet is its passage cut, and only the snippet is stored: a value the cut halved
/// ("… account DE89 3704 0044 0532…") reads as nothing to the redaction. When PII is
/// redacted for the reader, the words next to an ellipsis that could be part of a number or
/// code (letters, digits and hyphens, with a digit among them) are dropped, up to the first
/// word without a digit (session 37's review: a turn stored while the asker was exempt showed
/// the fragment after the asker left the exempt group).
fn trim_cut_value(snippet: &mut String) {
    let part = |w: &&&str| {
        w.bytes().any(|b| b.is_ascii_digit())
            && w.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b','))
    };
    if let Some(body) = snippet.strip_suffix('…') {
        let words: Vec<&str> = body.split(' ').collect();
        let keep = words.len() - words.iter().rev().take_while(part).count();
        if keep < words.len() {
            *snippet = format!("{}…", words[..keep].join(" "));
        }
    }
    if let Some(body) = snippet.strip_prefix('…') {
        let words: Vec<&str> = body.split(' ').collect();
        let skip = words.iter().take_while(part).count();
        if skip > 0 {
            *snippet = format!("…{}", words[skip..].join(" "));
        }
    }
}

/// PII redaction of a stored turn as it leaves the daemon again: it was redacted for the
/// asker's principals when asked, which may have changed since (left an exempt group), as may
/// the PII settings.
fn redact_turn(g: &Guardrails, principals: &BTreeSet<String>, t: &mut store::TurnRecord) {
    let mut found = guardrail::PiiFindings::default();
    for text in [&mut t.question, &mut t.answer, &mut t.rewritten]
        .into_iter()
        .chain(t.sentences.iter_mut().map(|s| &mut s.text))
    {
        g.redact_sentence(principals, text, &mut found);
    }
    let pii = g.redacts_pii_for(principals);
    for c in &mut t.citations {
        let anchored = c.heading_path.last().cloned();
        if pii {
            trim_cut_value(&mut c.snippet);
        }
        g.redact_sentence(principals, &mut c.snippet, &mut found);
        // Headings as identifiers, as when the turn was answered (a review).
        for h in &mut c.heading_path {
            g.redact_key(principals, h, &mut found);
        }
        guardrail::drop_redacted_anchor(anchored.as_ref(), &c.heading_path, &mut c.uri);
        // A title, often a file name or page id, is read as one (see `redact_key`).
        for key in [
            &mut c.document_key,
            &mut c.chunk_id,
            &mut c.uri,
            &mut c.title,
        ] {
            g.redact_key(principals, key, &mut found);
        }
    }
}

impl Assistant {
    /// The caller's conversation with its turns as the caller may see them now.
    pub fn conversation(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<(store::ConversationRecord, Vec<store::TurnRecord>), AssistantError> {
        let scope = authorize(caller)?;
        let store = self.store_or_err()?;
        let mut c = store
            .conversation(&caller.conversation_owner(), id)?
            .ok_or_else(|| AssistantError::ConversationNotFound(id.to_string()))?;
        redact_title(&self.guardrails, scope.principal_set(), &mut c);
        let mut seen = HashMap::new();
        let turns = store
            .turns(id)?
            .into_iter()
            .map(|t| {
                let t = visible_turn_with(&*self.index, &scope, t, &mut seen);
                let mut t = screen_turn(&self.guardrails, scope.principal_set(), t);
                redact_turn(&self.guardrails, scope.principal_set(), &mut t);
                t
            })
            .collect();
        Ok((c, turns))
    }

    /// One page of the caller's conversations, most recently updated first, after the position
    /// of a page token ([`page_position`]), and the token of the next page (`None` on the
    /// last). `page_size` 0 means [`CONVERSATION_PAGE`]; at most
    /// [`MAX_CONVERSATION_PAGE`]. Only the page's titles are redacted.
    pub fn conversations(
        &self,
        caller: &Caller,
        page_size: usize,
        after: Option<(i64, &str)>,
    ) -> Result<(Vec<store::ConversationRecord>, Option<String>), AssistantError> {
        let scope = authorize(caller)?;
        let size = match page_size {
            0 => CONVERSATION_PAGE,
            n => n.min(MAX_CONVERSATION_PAGE),
        };
        let list = self.store_or_err()?.list(&caller.conversation_owner())?;
        // The list's order: updated_ms descending, then id ascending.
        let start = after.map_or(0, |(ms, id)| {
            list.partition_point(|c| c.updated_ms > ms || c.updated_ms == ms && c.id.as_str() <= id)
        });
        let mut page: Vec<_> = list.into_iter().skip(start).take(size + 1).collect();
        let next = (page.len() > size).then(|| {
            page.truncate(size);
            page.last()
                .map(|c| format!("{}:{}", c.updated_ms, c.id))
                .unwrap_or_default()
        });
        for c in &mut page {
            redact_title(&self.guardrails, scope.principal_set(), c);
        }
        Ok((page, next))
    }

    pub fn delete_conversation(&self, caller: &Caller, id: &str) -> Result<(), AssistantError> {
        authorize(caller)?;
        if self
            .store_or_err()?
            .delete(&caller.conversation_owner(), id)?
        {
            Ok(())
        } else {
            Err(AssistantError::ConversationNotFound(id.to_string()))
        }
    }

    /// Stores feedback on one of the caller's answers (the comment PII-redacted when the PII
    /// guardrail applies to the caller).
    pub fn feedback(
        &self,
        caller: &Caller,
        id: &str,
        turn: u32,
        up: bool,
        reasons: Vec<String>,
        comment: &str,
    ) -> Result<(), AssistantError> {
        let scope = authorize(caller)?;
        let store = self.store_or_err()?;
        store
            .conversation(&caller.conversation_owner(), id)?
            .ok_or_else(|| AssistantError::ConversationNotFound(id.to_string()))?;
        // (A turn the retention emptied takes none: its question is gone.)
        let t = store
            .turn(id, turn)?
            .filter(|t| t.status != store::EXPIRED)
            .ok_or_else(|| AssistantError::ConversationNotFound(format!("{id} turn {turn}")))?;
        // The documents as the voter sees the turn now, by the keys they are indexed under
        // (a review: the keys as sent, which redaction may have changed, of every citation).
        let t = visible_turn(&*self.index, &scope, t);
        let documents = t
            .citations
            .into_iter()
            .map(|c| match c.access_key.is_empty() {
                true => c.document_key,
                false => c.access_key,
            })
            .filter(|k| !k.is_empty())
            .collect();
        let mut comment = comment.to_string();
        let mut found = guardrail::PiiFindings::default();
        self.guardrails
            .redact_sentence(caller.guardrail_principals(), &mut comment, &mut found);
        let written = store.put_feedback(
            &caller.conversation_owner(),
            &store::FeedbackRecord {
                identity: caller.user_id().to_string(),
                conversation_id: id.to_string(),
                turn,
                up,
                reasons,
                comment,
                time_ms: store::now_ms(),
                question: t.question,
                documents,
            },
        )?;
        if !written {
            return Err(AssistantError::ConversationNotFound(id.to_string()));
        }
        self.metrics.feedback(up);
        Ok(())
    }

    /// Deletes conversations past the retention, and those of owners whose identity (as
    /// `exists` tells) has been gone for [`ABSENT_GRACE_DAYS`]; returns how many.
    pub fn expire_conversations(
        &self,
        exists: &dyn Fn(&str) -> bool,
    ) -> Result<usize, AssistantError> {
        let Some(store) = &self.store else {
            return Ok(0);
        };
        // (Its failure holds back no retention.)
        let orphaned = store
            .expire_absent(exists, store::now_ms(), ABSENT_GRACE_DAYS * 86_400_000)
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "conversations of identities gone could not be expired");
                0
            });
        let cutoff = store::now_ms() - i64::from(self.cfg.retention_days) * 86_400_000;
        // Usage counters for as long as `Admin.Usage` reports (366 days), or the retention.
        let days = i64::from(self.cfg.retention_days).max(USAGE_KEPT_DAYS);
        // (Its failure holds back no conversation's expiry.)
        if let Err(e) = store.expire_usage(&store::day_of(store::now_ms() - days * 86_400_000)) {
            tracing::warn!(error = %e, "old usage counters could not be deleted");
        }
        Ok(orphaned + store.expire(cutoff)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request dropped after its rewrite (retrieval failed, the deadline passed) is charged
    /// the rewrite's tokens; one whose usage is recorded with its answer is not charged twice.
    #[test]
    fn a_rewrite_is_charged_when_its_request_ends_before_recording() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(store::Store::open(&dir.path().join("s.redb")).unwrap());
        let who = vec!["user:alice".to_string()];
        let spent = Usage {
            prompt: 300,
            completion: 20,
            estimated: false,
        };
        let tokens = || store.usage_today("user:alice").unwrap().tokens();
        drop(Unpaid(Some((store.clone(), who.clone(), spent))));
        assert_eq!(tokens(), 320);
        let mut recorded = Unpaid(Some((store.clone(), who, spent)));
        recorded.paid();
        drop(recorded);
        assert_eq!(tokens(), 320);
    }

    /// Session 34's review: a unary Ask kept the sentences of a citation the last ACL check
    /// refused (blanking the citation only, as a stream must), though nothing had left yet.
    #[test]
    fn a_whole_answer_loses_every_sentence_standing_on_a_refused_citation() {
        let said = |text: &str, citations: Vec<usize>| AnswerSentence {
            text: text.into(),
            citations,
        };
        let c = |key: &str| Citation {
            document_key: key.into(),
            ..Citation::default()
        };
        let mut sentences = vec![
            said("a", vec![0]),
            said("b", vec![1]),
            said("c", vec![0, 2]),
            said("d", vec![2]),
            said("e", vec![]),
        ];
        let mut uncited = vec![false, false, false, false, true];
        let mut citations = vec![c("x"), c("gone"), c("z")];
        drop_refused(&mut sentences, &mut uncited, &mut citations, &[1]);
        assert_eq!(
            sentences,
            [
                said("a", vec![0]),
                said("c", vec![0, 1]),
                said("d", vec![1])
            ]
        );
        assert_eq!(uncited, [false; 3]);
        let keys: Vec<&str> = citations.iter().map(|c| c.document_key.as_str()).collect();
        assert_eq!(keys, ["x", "z"]);
        // Everything refused: nothing stands.
        drop_refused(&mut sentences, &mut uncited, &mut citations, &[0, 1]);
        assert!(sentences.is_empty() && uncited.is_empty() && citations.is_empty());
    }

    /// A stored citation of document `key` (checked for access as `access`), fields empty.
    fn cite(key: &str, access: &str) -> store::StoredCitation {
        store::StoredCitation {
            document_key: key.into(),
            title: String::new(),
            uri: String::new(),
            chunk_id: String::new(),
            span: (0, 0),
            snippet: String::new(),
            heading_path: Vec::new(),
            page: None,
            access_key: access.into(),
        }
    }

    fn sentence(text: &str, citations: Vec<usize>) -> store::StoredSentence {
        store::StoredSentence {
            text: text.into(),
            citations,
            uncited: false,
        }
    }

    /// An answered turn of `sentences` citing `citations`.
    fn stored_turn(
        sentences: Vec<store::StoredSentence>,
        citations: Vec<store::StoredCitation>,
    ) -> store::TurnRecord {
        store::TurnRecord {
            question: "q".into(),
            rewritten: String::new(),
            answer: String::new(),
            sentences,
            citations,
            status: "answered".into(),
            mode: "generative".into(),
            prompt_tokens: 0,
            completion_tokens: 0,
            time_ms: 0,
            evidence_keys: Vec::new(),
        }
    }

    #[test]
    fn a_stored_turn_keeps_only_sentences_whose_every_source_is_still_readable() {
        use crate::index::suite::{DIM, doc};
        let dir = tempfile::tempdir().unwrap();
        let index = crate::index::Index::open(dir.path(), "turn-model", DIM).unwrap();
        index.upsert(doc("s", 0, 1, &["group:all"], &[])).unwrap();
        index.upsert(doc("s", 1, 1, &["group:hr"], &[])).unwrap();
        index.commit(std::collections::BTreeMap::new()).unwrap();
        let turn = stored_turn(
            vec![
                sentence("From the public page.", vec![0]),
                sentence("From both pages.", vec![0, 1]),
                sentence("From the HR page.", vec![1]),
                sentence("General knowledge.", vec![]),
            ],
            // The first key was PII-redacted when sent: access is checked on the indexed key.
            vec![cite("[REDACTED:iban]", "s:d0"), cite("s:d1", "s:d1")],
        );
        let turn = store::TurnRecord {
            mode: "extractive".into(),
            ..turn
        };
        let everyone = AclScope::for_tests("u", &["group:all"]);
        let seen = visible_turn(&index, &everyone, turn.clone());
        let texts: Vec<&str> = seen.sentences.iter().map(|s| s.text.as_str()).collect();
        // The uncited sentence goes too: it was written with the HR page in view.
        assert_eq!(texts, ["From the public page."]);
        assert_eq!(seen.citations.len(), 1);
        assert_eq!(seen.citations[0].access_key, "s:d0");
        assert_eq!(seen.answer, "From the public page. [1]");
        let hr = AclScope::for_tests("h", &["group:all", "group:hr"]);
        assert_eq!(visible_turn(&index, &hr, turn.clone()), turn);

        // A turn whose every citation is still readable loses its uncited sentence when a
        // passage the answerer was given, and did not cite, is no longer readable.
        let turn = store::TurnRecord {
            sentences: vec![
                sentence("From the public page.", vec![0]),
                store::StoredSentence {
                    text: "General knowledge.".into(),
                    citations: vec![],
                    uncited: true,
                },
            ],
            citations: vec![cite("s:d0", "s:d0")],
            evidence_keys: vec!["s:d0".into(), "s:d1".into()],
            mode: "generative".into(),
            ..turn
        };
        // Generated: every sentence goes (a model's cited sentence may carry words of the HR
        // page it read); the readable citation stays.
        let seen = visible_turn(&index, &everyone, turn.clone());
        assert!(seen.sentences.is_empty(), "{seen:?}");
        assert_eq!(seen.answer, answer::NO_ANSWER_MESSAGE);
        assert_eq!(seen.citations.len(), 1);
        assert_eq!(visible_turn(&index, &hr, turn.clone()), turn);
        // Extractive (each sentence a passage's own): only the uncited sentence goes.
        let extractive = store::TurnRecord {
            mode: "extractive".into(),
            ..turn
        };
        let seen = visible_turn(&index, &everyone, extractive);
        let texts: Vec<&str> = seen.sentences.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(texts, ["From the public page."]);
        assert_eq!(seen.answer, "From the public page. [1]");
    }

    /// A generated turn stored before generated turns recorded every passage their model was
    /// given: what the model read is unknown, so its sentences are not shown, even to a reader
    /// of every cited document; its readable citations stay.
    #[test]
    fn a_generated_turn_stored_without_its_evidence_shows_no_sentence() {
        use crate::index::suite::{DIM, doc};
        let dir = tempfile::tempdir().unwrap();
        let index = crate::index::Index::open(dir.path(), "turn-model", DIM).unwrap();
        index.upsert(doc("s", 0, 1, &["group:all"], &[])).unwrap();
        index.commit(std::collections::BTreeMap::new()).unwrap();
        let turn = stored_turn(
            vec![sentence("From the public page.", vec![0])],
            vec![cite("s:d0", "s:d0")],
        );
        let everyone = AclScope::for_tests("u", &["group:all"]);
        let seen = visible_turn(&index, &everyone, turn.clone());
        assert!(seen.sentences.is_empty(), "{seen:?}");
        assert_eq!(seen.answer, answer::NO_ANSWER_MESSAGE);
        assert_eq!(seen.citations, turn.citations);
        // Recorded, it is shown whole; extractive turns never needed the record.
        let recorded = store::TurnRecord {
            evidence_keys: vec!["s:d0".into()],
            ..turn.clone()
        };
        assert_eq!(visible_turn(&index, &everyone, recorded.clone()), recorded);
        let extractive = store::TurnRecord {
            mode: "extractive".into(),
            ..turn
        };
        assert_eq!(
            visible_turn(&index, &everyone, extractive.clone()),
            extractive
        );
    }

    #[test]
    fn a_stored_turn_is_screened_for_blocked_phrases_for_who_reads_it_now() {
        let g = crate::guardrail::with_phrase("Project Falcon", "group:falcon");
        let titled = |title: &str, uri: &str| store::StoredCitation {
            title: title.into(),
            uri: uri.into(),
            snippet: "Budget lines.".into(),
            ..cite("s:k", "s:k")
        };
        let turn = store::TurnRecord {
            rewritten: "project falcon budget".into(),
            question: "How large is the Project Falcon budget?".into(),
            ..stored_turn(
                vec![
                    sentence("The budget is set yearly.", vec![0]),
                    sentence("It grows by 4 MEUR.", vec![1]),
                    sentence("It grows by 2 MEUR.", vec![2]),
                    sentence("Project Falcon grows too.", vec![3]),
                ],
                // Asked while in the exempt group: titles and URIs named it then.
                vec![
                    titled("Budget", "file:///srv/budget.md"),
                    titled("Project Falcon budget", "file:///srv/b.md"),
                    titled("Plans", "file:///srv/project%20falcon/plan.md"),
                    // Named by the sentence citing it only.
                    titled("Other", "file:///srv/o.md"),
                ],
            )
        };
        let falcon: BTreeSet<String> = ["user:a".into(), "group:falcon".into()].into();
        assert_eq!(screen_turn(&g, &falcon, turn.clone()), turn);
        let left: BTreeSet<String> = ["user:a".into()].into();
        let seen = screen_turn(&g, &left, turn);
        let texts: Vec<&str> = seen.sentences.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(texts, ["The budget is set yearly."]);
        assert_eq!(seen.citations.len(), 1);
        assert_eq!(seen.answer, "The budget is set yearly. [1]");
        assert!(seen.rewritten.is_empty());
        // Session 37's review: the question, and the conversation's title made from it.
        assert_eq!(seen.question, WITHHELD);
        let mut c = store::ConversationRecord {
            id: "c1".into(),
            owner: "everyone".into(),
            title: "How large is the Project Falcon budget?".into(),
            created_ms: 0,
            updated_ms: 0,
            turns: 1,
            expired_turns: 0,
            kept_from_ms: 0,
        };
        let mut exempt = c.clone();
        redact_title(&g, &falcon, &mut exempt);
        assert_eq!(exempt.title, c.title);
        redact_title(&g, &left, &mut c);
        assert_eq!(c.title, WITHHELD);
    }

    /// A phrase split across two sentences is caught as the answer-time check catches it
    /// (found by a review: a stored turn read back after the reader left the exempt group
    /// still showed "… is Project." "Falcon ships in May.").
    #[test]
    fn a_phrase_split_across_two_stored_sentences_is_screened() {
        let g = crate::guardrail::with_phrase("Project Falcon", "group:falcon");
        let turn = stored_turn(
            vec![
                sentence("The budget is set yearly.", vec![0]),
                sentence("The new name is Project.", vec![0]),
                sentence("Falcon ships in May.", vec![1]),
            ],
            vec![cite("s:a", "s:a"), cite("s:b", "s:b")],
        );
        let left: BTreeSet<String> = ["user:a".into()].into();
        let seen = screen_turn(&g, &left, turn);
        assert!(
            !seen.answer.to_lowercase().contains("falcon"),
            "{}",
            seen.answer
        );
        let texts: Vec<&str> = seen.sentences.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(
            texts,
            ["The budget is set yearly.", "The new name is Project."]
        );
        assert_eq!(seen.citations.len(), 1);
        // And across three, one word each (session 43's review: only pairs were read).
        let g = crate::guardrail::with_phrase("operation blue falcon", "group:falcon");
        let turn = stored_turn(
            vec![
                sentence("Operation.", vec![0]),
                sentence("Blue.", vec![0]),
                sentence("Falcon.", vec![1]),
            ],
            vec![cite("s:a", "s:a"), cite("s:b", "s:b")],
        );
        let seen = screen_turn(&g, &left, turn);
        let texts: Vec<&str> = seen.sentences.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(texts, ["Operation.", "Blue."]);
    }

    #[test]
    fn a_stored_turn_is_redacted_for_who_reads_it_now() {
        let mut cfg = crate::guardrail::GuardrailConfig::default();
        cfg.pii.audience.exempt = vec!["group:payroll".into()];
        let g = Guardrails::new(cfg, &crate::embed::test_embedder::BagOfWords).unwrap();
        let iban = "DE89 3704 0044 0532 0130 00";
        let turn = store::TurnRecord {
            question: format!("refund to {iban}?"),
            rewritten: format!("refunds to {iban}"),
            answer: format!("Refunds go to {iban}. [1]"),
            sentences: vec![store::StoredSentence {
                text: format!("Refunds go to {iban}."),
                citations: vec![0],
                uncited: false,
            }],
            citations: vec![store::StoredCitation {
                document_key: "s:GB82WEST12345698765432".into(),
                title: format!("Account {iban}"),
                uri: "file:///finance/GB82WEST12345698765432.md".into(),
                chunk_id: "GB82WEST12345698765432#0".into(),
                span: (0, 10),
                snippet: format!("Refunds go to {iban}."),
                heading_path: vec![format!("Bank {iban}")],
                page: None,
                access_key: "s:GB82WEST12345698765432".into(),
            }],
            status: "answered".into(),
            mode: "extractive".into(),
            prompt_tokens: 0,
            completion_tokens: 0,
            time_ms: 0,
            evidence_keys: Vec::new(),
        };
        // Asked while in payroll (exempt): stored in clear. Read as payroll: unchanged.
        let payroll: BTreeSet<String> = ["user:a".into(), "group:payroll".into()].into();
        let mut t = turn.clone();
        redact_turn(&g, &payroll, &mut t);
        assert_eq!(t, turn);
        // Read after leaving payroll: every field that leaves is redacted; the access key,
        // which never leaves, is not.
        let left: BTreeSet<String> = ["user:a".into()].into();
        redact_turn(&g, &left, &mut t);
        let shown = format!(
            "{:?}",
            (
                &t.question,
                &t.answer,
                &t.rewritten,
                &t.sentences,
                &t.citations[0].document_key,
                &t.citations[0].title,
                &t.citations[0].uri,
                &t.citations[0].chunk_id,
                &t.citations[0].snippet,
                &t.citations[0].heading_path
            )
        );
        assert!(
            !shown.contains("3704") && !shown.contains("GB82WEST"),
            "{shown}"
        );
        assert_eq!(t.citations[0].access_key, "s:GB82WEST12345698765432");
        // A wiki anchor made from a heading redacted now goes with it.
        let mut wiki = turn.clone();
        wiki.citations[0].heading_path = vec!["Contact jane.doe@fernhill.example".into()];
        wiki.citations[0].uri =
            "https://wiki.example/doku.php?id=it#contact_jane_doe_fernhill_example".into();
        redact_turn(&g, &left, &mut wiki);
        assert_eq!(wiki.citations[0].uri, "https://wiki.example/doku.php?id=it");
        // The conversation's title is its first question.
        let mut c = store::ConversationRecord {
            id: "c1".into(),
            owner: "a".into(),
            title: format!("refund to {iban}?"),
            created_ms: 0,
            updated_ms: 0,
            turns: 1,
            expired_turns: 0,
            kept_from_ms: 0,
        };
        let mut exempt = c.clone();
        redact_title(&g, &payroll, &mut exempt);
        assert!(exempt.title.contains("3704"), "exempt: {}", exempt.title);
        redact_title(&g, &left, &mut c);
        assert!(!c.title.contains("3704"), "{}", c.title);
    }

    /// Session 37's review: only the cut snippet is stored, and a value the cut halved read
    /// as nothing to the redaction when the turn was read again.
    #[test]
    fn a_value_a_stored_snippet_cut_in_half_is_dropped_for_a_reader_it_is_redacted_for() {
        let mut cfg = crate::guardrail::GuardrailConfig::default();
        cfg.pii.audience.exempt = vec!["group:payroll".into()];
        let g = Guardrails::new(cfg, &crate::embed::test_embedder::BagOfWords).unwrap();
        let turn = |snippet: &str| {
            stored_turn(
                vec![],
                vec![store::StoredCitation {
                    snippet: snippet.into(),
                    ..cite("s:k", "s:k")
                }],
            )
        };
        let payroll: BTreeSet<String> = ["user:a".into(), "group:payroll".into()].into();
        let left: BTreeSet<String> = ["user:a".into()].into();
        for (stored, shown) in [
            (
                "Refunds go to the account DE89 3704 0044 0532…",
                "Refunds go to the account…",
            ),
            (
                "…0130 00, every month since 2020.",
                "…every month since 2020.",
            ),
            ("Refunds are paid monthly.", "Refunds are paid monthly."),
        ] {
            let mut t = turn(stored);
            redact_turn(&g, &payroll, &mut t);
            assert_eq!(t.citations[0].snippet, stored, "exempt");
            let mut t = turn(stored);
            redact_turn(&g, &left, &mut t);
            assert_eq!(t.citations[0].snippet, shown);
        }
    }

    #[test]
    fn a_title_is_cut_after_its_redaction_not_before() {
        let g = Guardrails::new(
            crate::guardrail::GuardrailConfig::default(),
            &crate::embed::test_embedder::BagOfWords,
        )
        .unwrap();
        let iban = "DE89 3704 0044 0532 0130 00";
        // The account number straddles the 80th character: a cut first would leave a
        // fragment no detector reads as an account number.
        let question = format!("{} {iban} please", "x".repeat(TITLE_CHARS - 12));
        let mut c = store::ConversationRecord {
            id: "c1".into(),
            owner: "a".into(),
            title: question,
            created_ms: 0,
            updated_ms: 0,
            turns: 1,
            expired_turns: 0,
            kept_from_ms: 0,
        };
        redact_title(&g, &BTreeSet::new(), &mut c);
        assert!(c.title.chars().count() <= TITLE_CHARS, "{}", c.title);
        for digits in ["3704", "0044", "DE89"] {
            assert!(!c.title.contains(digits), "{}", c.title);
        }
        assert!(c.title.starts_with("xxxx"), "{}", c.title);
    }

    #[test]
    fn follow_ups_are_prefixed_with_the_previous_question() {
        let earlier = vec!["How many vacation days do employees get?".to_string()];
        assert_eq!(
            heuristic_rewrite(&earlier, "And contractors?").as_deref(),
            Some("How many vacation days do employees get? And contractors?")
        );
        assert!(heuristic_rewrite(&earlier, "Who approves it when the manager is away?").is_some());
        assert_eq!(
            heuristic_rewrite(
                &earlier,
                "What is the parental leave policy for new parents?"
            ),
            None
        );
        assert_eq!(heuristic_rewrite(&[], "And it?"), None);
        // A long chain carries only the end of what came before.
        let long = vec!["word ".repeat(2000)];
        let r = heuristic_rewrite(&long, "And contractors?").unwrap();
        assert!(r.len() <= MAX_CARRIED_BYTES + 20, "{}", r.len());
        assert!(r.ends_with("word And contractors?"), "{r}");
    }
}
