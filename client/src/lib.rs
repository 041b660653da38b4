//! A client for Docent's gRPC API (`docent.v1`), for developers scripting queries and for front
//! ends (the `docent` CLI, the Slack bridge).
//!
//! It holds what every client repeats: the channel (plaintext for loopback, TLS with the private
//! CA that signed the daemon's certificate, an optional client certificate for mTLS), the
//! credential on every request (a bearer token — personal token, API key or JWT —, or under a
//! daemon's `--insecure-dev` the dev-user header), `act_as` (`on_behalf_of`) for service
//! identities, and errors with the stable reason codes Docent sends in a `google.rpc.ErrorInfo`
//! ([`ApiError::reason`]).
//!
//! Depends on the proto crate only: no index, no model runtime.
//!
//! ```no_run
//! # async fn demo() -> Result<(), docent_client::Error> {
//! use docent_client::{Client, Config, pb};
//! let client = Client::connect(&Config {
//!     token: Some("slack-bridge-dev-key".into()),
//!     ..Config::new("http://127.0.0.1:7878")
//! })
//! .await?;
//! let answer = client
//!     .act_as("alice")
//!     .ask(pb::AskRequest { question: "How do I reset my VPN token?".into(), ..Default::default() })
//!     .await?;
//! println!("{}", answer.answer);
//! # Ok(()) }
//! ```
//!
//! Must never: send a credential it was not given, or drop the reason code of an error.

use std::path::{Path, PathBuf};

pub use docent_proto::DEV_USER_HEADER;
pub use docent_proto::v1 as pb;
use tonic::metadata::MetadataValue;
// `http::Uri`: the parser the transport uses.
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity, Uri};

/// The `ErrorInfo` domain of Docent's errors.
pub const ERROR_DOMAIN: &str = "docent.v1";

/// Stable reason codes (`ApiError::reason`) clients commonly branch on; the proto documents
/// the rest.
pub mod reasons {
    pub const MISSING_TOKEN: &str = "MISSING_TOKEN";
    pub const INVALID_TOKEN: &str = "INVALID_TOKEN";
    pub const KEY_EXPIRED: &str = "KEY_EXPIRED";
    pub const KEY_REVOKED: &str = "KEY_REVOKED";
    pub const SCOPE_DENIED: &str = "SCOPE_DENIED";
    pub const ADMIN_REQUIRED: &str = "ADMIN_REQUIRED";
    pub const ACT_AS_DENIED: &str = "ACT_AS_DENIED";
    /// The service may act for others, but its `act_for` does not name this user or audience
    /// (nor does any identity answer to a name the list does not name: such a service is not
    /// told who exists beyond its list).
    pub const ACT_FOR_DENIED: &str = "ACT_FOR_DENIED";
    pub const UNKNOWN_USER: &str = "UNKNOWN_USER";
    pub const OVERLOADED: &str = "OVERLOADED";
    pub const TOKEN_QUOTA_EXCEEDED: &str = "TOKEN_QUOTA_EXCEEDED";
    /// What is left of a token budget is held by requests in flight: retry when they finish.
    pub const TOKEN_QUOTA_IN_USE: &str = "TOKEN_QUOTA_IN_USE";
    pub const CONVERSATION_NOT_FOUND: &str = "CONVERSATION_NOT_FOUND";
    /// The conversation holds the most turns it may: start a new one.
    pub const CONVERSATION_FULL: &str = "CONVERSATION_FULL";
    pub const TEXT_TOO_LONG: &str = "TEXT_TOO_LONG";
    pub const EMPTY_TEXT: &str = "EMPTY_TEXT";
    pub const DEADLINE_EXCEEDED: &str = "DEADLINE_EXCEEDED";
    pub const INTERNAL: &str = "INTERNAL";
}

/// Where the daemon is and how to prove who we are.
#[derive(Clone, Default)]
pub struct Config {
    /// `http://host:port` (loopback or `--insecure-dev` daemons) or `https://host:port` (with
    /// `ca`). No other scheme, and no `user@` part.
    pub addr: String,
    /// PEM file of the CA that signed the daemon's certificate; needed for `https://`, as the
    /// client trusts no other CA.
    pub ca: Option<PathBuf>,
    /// PEM client certificate and key for mTLS (both or neither).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Bearer token: a personal token, an API key or a JWT. Empty counts as none.
    pub token: Option<String>,
    /// Only for a daemon started with `--insecure-dev`: the identity to ask as, without any
    /// credential. Ignored when a token or a client certificate is given.
    pub dev_user: Option<String>,
    /// Send a bearer token over plaintext `http://` to a host that is not loopback (a network
    /// encrypted by other means, such as a mesh's sidecars). Refused otherwise.
    pub allow_plain_http: bool,
}

/// The token is never shown.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("dev_user", &self.dev_user)
            .field("allow_plain_http", &self.allow_plain_http)
            .finish()
    }
}

impl Config {
    pub fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            ..Self::default()
        }
    }

    fn token(&self) -> Option<&str> {
        self.token.as_deref().filter(|t| !t.is_empty())
    }
}

/// Why a call failed: before it was sent (configuration, connection) or Docent's answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid address {addr}: {message}")]
    InvalidAddress { addr: String, message: String },
    /// Not shown: the part before `@` may be a password.
    #[error(
        "the daemon's address has a user name or password (user@host), which is refused: give \
         the credential as a token (--token) or a client certificate (--cert/--key)"
    )]
    UserInfoInAddress,
    #[error(
        "https:// to {addr} needs the CA that signed the daemon's certificate: pass --ca FILE (or \
         set DOCENT_CA; docent.ca in the Slack bridge's config), as this client trusts no other CA"
    )]
    HttpsWithoutCa { addr: String },
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("a client certificate and its key must be given together (--cert and --key)")]
    HalfClientIdentity,
    #[error("TLS settings for {addr}: {source}")]
    Tls {
        addr: String,
        source: tonic::transport::Error,
    },
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: tonic::transport::Error,
    },

    #[error("{0} has invalid characters")]
    InvalidHeader(&'static str),
    #[error("no credentials: pass --token (or set DOCENT_TOKEN), or --cert/--key for mTLS")]
    NoCredentials,
    #[error(
        "refusing to send a bearer token over plaintext http:// to {host}: anyone on the path \
         could read and reuse it. Use https:// (the daemon's TLS), or allow plaintext explicitly \
         (--allow-plain-http) where the network is encrypted by other means"
    )]
    PlaintextRefused { host: String },
    #[error("{addr} is plaintext http://, but a CA or client certificate was given: use https://")]
    TlsSettingsOverPlaintext { addr: String },
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl Error {
    /// The stable reason code when Docent refused the call, else `None`.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Api(e) => Some(e.reason()),
            _ => None,
        }
    }
}

/// An error status from Docent with its stable reason code.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message} ({code:?}, {reason})")]
pub struct ApiError {
    code: tonic::Code,
    reason: String,
    message: String,
}

impl ApiError {
    /// The gRPC status code.
    pub fn code(&self) -> tonic::Code {
        self.code
    }

    /// The `ErrorInfo` reason (domain `docent.v1`), e.g. `ACT_AS_DENIED`; empty when the status
    /// carried none (a transport failure, a proxy in between).
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Docent's human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether trying again later may succeed (load shedding, deadlines, the daemon down).
    /// Not whether it is safe to: a deadline or a lost connection may come after the work was
    /// done, so a retried Ask in a conversation, PutDocuments or Feedback may happen twice
    /// (and spend tokens twice).
    pub fn is_transient(&self) -> bool {
        matches!(
            self.code,
            tonic::Code::Unavailable
                | tonic::Code::ResourceExhausted
                | tonic::Code::DeadlineExceeded
        ) && self.reason != reasons::TOKEN_QUOTA_EXCEEDED
    }
}

impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> Self {
        use tonic_types::StatusExt;
        let reason = s
            .get_details_error_info()
            .filter(|i| i.domain == ERROR_DOMAIN)
            .map(|i| i.reason)
            .unwrap_or_default();
        Self {
            code: s.code(),
            reason,
            message: s.message().to_string(),
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Self {
        Self::Api(s.into())
    }
}

/// A warning when a bearer token would cross the network in plaintext: `http://` (any case) to
/// a host that is not loopback, as the transport parses the address.
pub fn plaintext_warning(addr: &str, has_token: bool) -> Option<String> {
    let uri = addr.parse::<Uri>().ok()?;
    plaintext_host(&uri, has_token).map(|host| {
        format!(
            "warning: sending a bearer token over plaintext http:// to {host}; anyone on the path \
             can read and reuse it. Use https:// (the daemon's TLS) for non-local addresses."
        )
    })
}

/// The host a bearer token would reach in plaintext: `http://` to a host that is not loopback.
/// The host is `uri`'s, the one the transport connects to.
fn plaintext_host(uri: &Uri, has_token: bool) -> Option<String> {
    if uri.scheme_str() != Some("http") {
        return None;
    }
    let host = uri.host().unwrap_or("");
    // An IPv6 literal keeps its brackets in `Uri::host`.
    let ip = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let loopback = host.eq_ignore_ascii_case("localhost")
        || ip
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    (has_token && !loopback).then(|| host.to_string())
}

/// `addr` parsed by the parser the transport uses (`http::Uri`), so that the checks on it judge
/// the scheme and host that will be connected to. Only `http` and `https`: tonic carries any
/// other scheme (`grpcs://`, `h2://`) in plaintext. No `user@` part: it names no host, and
/// hides the real one from a reader.
fn parse_addr(addr: &str) -> Result<Uri, Error> {
    let invalid = |message: String| Error::InvalidAddress {
        addr: addr.to_string(),
        message,
    };
    // An address with `@` anywhere is refused before it is parsed: one that does not parse
    // would be echoed whole in the error, and what comes before `@` may be a password holding
    // `/` or `?` (two reviews). A daemon's address has no path or query to need one.
    if addr.contains('@') {
        return Err(Error::UserInfoInAddress);
    }
    let uri = addr.parse::<Uri>().map_err(|e| invalid(e.to_string()))?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(Error::UserInfoInAddress);
    }
    match uri.scheme_str() {
        // The parser writes these two in lowercase, whatever case they were given in.
        Some("http" | "https") => Ok(uri),
        Some(other) => Err(invalid(format!(
            "unsupported scheme {other:?}: use http:// (loopback) or https:// (TLS)"
        ))),
        None => Err(invalid(
            "no scheme: use http://host:port (loopback) or https://host:port (TLS)".into(),
        )),
    }
}

fn read(p: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(p).map_err(|source| Error::Read {
        path: p.to_path_buf(),
        source,
    })
}

/// The bounds of [`Client::with_timeout`].
pub const MIN_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(1);
pub const MAX_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// How long connecting (TCP) may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How often an HTTP/2 ping checks that the daemon still answers, and how long it may take.
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(20);
const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The channel described by `config`: TLS for `https://` (with its CA and client identity).
/// Lazy (connects on the first call) when `lazy`, else connected now.
async fn channel(config: &Config, lazy: bool) -> Result<Channel, Error> {
    let addr = &config.addr;
    let uri = parse_addr(addr)?;
    let https = uri.scheme_str() == Some("https");
    let has_token = config.token.as_deref().is_some_and(|t| !t.is_empty());
    // Off this machine only (a loopback daemon's plaintext never leaves it, and CA settings
    // left in the environment were always ignored there).
    if let Some(host) = plaintext_host(&uri, true) {
        if config.ca.is_some() || config.cert.is_some() || config.key.is_some() {
            return Err(Error::TlsSettingsOverPlaintext { addr: addr.clone() });
        }
        if has_token && !config.allow_plain_http {
            return Err(Error::PlaintextRefused { host });
        }
    }
    // On this machine too, a client certificate that is the only credential would go nowhere
    // over plaintext: every call would be MISSING_TOKEN, far from the cause (a review).
    if !https && config.cert.is_some() && !has_token && config.dev_user.is_none() {
        return Err(Error::TlsSettingsOverPlaintext { addr: addr.clone() });
    }
    // The endpoint is built from the URI checked above, not parsed again. A daemon that does
    // not accept the connection, or a connection that stops answering (a half-open one, a
    // stalled proxy), is an error within seconds, not a call waiting for ever (found by a
    // review: `docent status` hung on such an address).
    let mut ep = Channel::builder(uri)
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    if https {
        if config.cert.is_some() != config.key.is_some() {
            return Err(Error::HalfClientIdentity);
        }
        // Without a CA the client has no trust roots: every handshake would fail, later and
        // less clearly.
        let Some(ca) = &config.ca else {
            return Err(Error::HttpsWithoutCa { addr: addr.clone() });
        };
        // The connect timeout covers the TCP connect only: a peer that accepts and then says
        // nothing held the TLS handshake for ever (a review).
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(ca)?))
            .timeout(CONNECT_TIMEOUT);
        if let (Some(c), Some(k)) = (&config.cert, &config.key) {
            tls = tls.identity(Identity::from_pem(read(c)?, read(k)?));
        }
        ep = ep.tls_config(tls).map_err(|source| Error::Tls {
            addr: addr.clone(),
            source,
        })?;
    }
    if lazy {
        return Ok(ep.connect_lazy());
    }
    ep.connect().await.map_err(|source| Error::Connect {
        addr: addr.clone(),
        source,
    })
}

/// `msg` in a request carrying `config`'s credential (what [`Client::request`] does), for
/// callers that manage their own channel, which must lead to `config.addr`: a token for a
/// plaintext `http://` address off this machine is refused here as [`Client::connect`] refuses
/// it, unless `allow_plain_http` (a review: this skipped the check).
pub fn authorized<T>(config: &Config, msg: T) -> Result<tonic::Request<T>, Error> {
    if config.token.as_deref().is_some_and(|t| !t.is_empty())
        && !config.allow_plain_http
        && let Some(host) = plaintext_host(&parse_addr(&config.addr)?, true)
    {
        return Err(Error::PlaintextRefused { host });
    }
    let mut req = tonic::Request::new(msg);
    Auth::from_config(config)?.apply(&mut req);
    Ok(req)
}

/// How each request proves who sends it.
#[derive(Clone)]
enum Auth {
    Bearer(MetadataValue<tonic::metadata::Ascii>),
    /// The TLS client certificate does it.
    Certificate,
    DevUser(MetadataValue<tonic::metadata::Ascii>),
}

impl Auth {
    fn from_config(c: &Config) -> Result<Self, Error> {
        if let Some(t) = c.token() {
            // Sensitive: never indexed by HTTP/2 header compression, never shown by Debug.
            return format!("Bearer {t}")
                .parse()
                .map(|mut v: MetadataValue<tonic::metadata::Ascii>| {
                    v.set_sensitive(true);
                    Self::Bearer(v)
                })
                .map_err(|_| Error::InvalidHeader("token"));
        }
        if c.cert.is_some() {
            return Ok(Self::Certificate);
        }
        match &c.dev_user {
            Some(u) => u
                .parse()
                .map(Self::DevUser)
                .map_err(|_| Error::InvalidHeader("user")),
            None => Err(Error::NoCredentials),
        }
    }

    fn apply<T>(&self, req: &mut tonic::Request<T>) {
        let md = req.metadata_mut();
        match self {
            Self::Bearer(v) => {
                md.insert("authorization", v.clone());
            }
            Self::Certificate => {}
            Self::DevUser(v) => {
                md.insert(DEV_USER_HEADER, v.clone());
            }
        }
    }
}

/// A connection to Docent with its credential. Cheap to clone (one HTTP/2 channel shared).
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    auth: Auth,
    on_behalf_of: String,
    timeout: Option<std::time::Duration>,
}

impl Client {
    /// Connects now (fails fast on a wrong address or TLS settings). Prints nothing: see
    /// [`plaintext_warning`] for the warning a CLI should show.
    pub async fn connect(config: &Config) -> Result<Self, Error> {
        let auth = Auth::from_config(config)?;
        Ok(Self {
            channel: channel(config, false).await?,
            auth,
            on_behalf_of: String::new(),
            timeout: None,
        })
    }

    /// Connects on the first call and reconnects after failures: for long-running services
    /// (a bridge) that must start while the daemon is down.
    pub async fn connect_lazy(config: &Config) -> Result<Self, Error> {
        let auth = Auth::from_config(config)?;
        Ok(Self {
            channel: channel(config, true).await?,
            auth,
            on_behalf_of: String::new(),
            timeout: None,
        })
    }

    /// The same connection asking on behalf of `user` (an identity id or alias, or an
    /// audience: `everyone` or `group:<id>`), for an identity with the `act_as` permission.
    /// Sets `on_behalf_of` on every request of [`Client::ask`], [`Client::ask_stream`],
    /// [`Client::search`], [`Client::feedback`] and the conversation calls.
    pub fn act_as(&self, user: impl Into<String>) -> Self {
        Self {
            on_behalf_of: user.into(),
            ..self.clone()
        }
    }

    /// The same connection with a deadline on every request (sent to Docent, which stops the
    /// work when it passes): at least a millisecond and at most a year (a review: tonic
    /// panics on a deadline of 100 million hours or more, and zero fails every call).
    pub fn with_timeout(self, timeout: std::time::Duration) -> Self {
        Self {
            timeout: Some(timeout.clamp(MIN_TIMEOUT, MAX_TIMEOUT)),
            ..self
        }
    }

    /// Who this client asks as (`""`: its own identity).
    pub fn on_behalf_of(&self) -> &str {
        &self.on_behalf_of
    }

    /// `msg` wrapped in a request carrying the credential, for calling the generated clients
    /// ([`Client::assistant`], [`Client::admin`], [`Client::ingest`]) directly. It does not set
    /// `on_behalf_of` (a [`Client::act_as`] client's user): set it in the message, or the call
    /// runs as this client's own identity.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        self.auth.apply(&mut req);
        if let Some(t) = self.timeout {
            req.set_timeout(t);
        }
        req
    }

    /// The shared channel.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub fn assistant(&self) -> pb::assistant_client::AssistantClient<Channel> {
        pb::assistant_client::AssistantClient::new(self.channel.clone())
    }

    pub fn admin(&self) -> pb::admin_client::AdminClient<Channel> {
        pb::admin_client::AdminClient::new(self.channel.clone())
    }

    pub fn ingest(&self) -> pb::ingest_client::IngestClient<Channel> {
        pb::ingest_client::IngestClient::new(self.channel.clone())
    }

    fn obo(&self, field: &mut String) {
        if field.is_empty() {
            field.clone_from(&self.on_behalf_of);
        }
    }

    pub async fn ask(&self, mut req: pb::AskRequest) -> Result<pb::AskResponse, Error> {
        self.obo(&mut req.on_behalf_of);
        Ok(self.assistant().ask(self.request(req)).await?.into_inner())
    }

    pub async fn ask_stream(
        &self,
        mut req: pb::AskRequest,
    ) -> Result<tonic::Streaming<pb::AskStreamEvent>, Error> {
        self.obo(&mut req.on_behalf_of);
        Ok(self
            .assistant()
            .ask_stream(self.request(req))
            .await?
            .into_inner())
    }

    pub async fn search(&self, mut req: pb::SearchRequest) -> Result<pb::SearchResponse, Error> {
        self.obo(&mut req.on_behalf_of);
        Ok(self
            .assistant()
            .search(self.request(req))
            .await?
            .into_inner())
    }

    pub async fn feedback(&self, mut req: pb::FeedbackRequest) -> Result<(), Error> {
        self.obo(&mut req.on_behalf_of);
        self.assistant().feedback(self.request(req)).await?;
        Ok(())
    }

    /// The first page of conversations (the 50 most recently updated); see
    /// [`Client::list_conversations_page`] for the rest.
    pub async fn list_conversations(&self) -> Result<pb::ListConversationsResponse, Error> {
        self.list_conversations_page(0, "").await
    }

    /// One page of conversations, most recently updated first: `page_size` of them (0: 50; at
    /// most 200) after `page_token` (a response's `next_page_token`; empty for the first).
    pub async fn list_conversations_page(
        &self,
        page_size: u32,
        page_token: &str,
    ) -> Result<pb::ListConversationsResponse, Error> {
        let req = pb::ListConversationsRequest {
            on_behalf_of: self.on_behalf_of.clone(),
            page_size,
            page_token: page_token.to_string(),
        };
        Ok(self
            .assistant()
            .list_conversations(self.request(req))
            .await?
            .into_inner())
    }

    pub async fn get_conversation(&self, id: &str) -> Result<pb::Conversation, Error> {
        let req = pb::ConversationRequest {
            conversation_id: id.to_string(),
            on_behalf_of: self.on_behalf_of.clone(),
        };
        Ok(self
            .assistant()
            .get_conversation(self.request(req))
            .await?
            .into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_not_in_debug_output() {
        let c = Config {
            token: Some("s3cret".into()),
            ..Config::new("https://docent.example")
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("<redacted>"),
            "{shown}"
        );
    }

    /// The bearer header is marked sensitive: HTTP/2's header compression never indexes it
    /// (found by a review).
    #[test]
    fn the_bearer_header_is_sensitive() {
        let c = Config {
            token: Some("s3cret".into()),
            ..Config::new("https://docent.example")
        };
        let mut req = tonic::Request::new(());
        Auth::from_config(&c).unwrap().apply(&mut req);
        assert!(req.metadata().get("authorization").unwrap().is_sensitive());
    }

    #[test]
    fn warns_before_a_token_crosses_the_network_in_plaintext() {
        assert!(plaintext_warning("http://docent.corp.example:7878", true).is_some());
        assert!(plaintext_warning("http://10.1.2.3:7878", true).is_some());
        assert!(plaintext_warning("http://127.0.0.1:7878", true).is_none());
        assert!(plaintext_warning("http://localhost:7878", true).is_none());
        assert!(plaintext_warning("http://[::1]:7878", true).is_none());
        assert!(plaintext_warning("https://docent.corp.example", true).is_none());
        assert!(plaintext_warning("http://docent.corp.example:7878", false).is_none());
        // The scheme in any case.
        assert!(plaintext_warning("HTTP://docent.corp.example:7878", true).is_some());
    }

    #[test]
    fn credentials_are_chosen_token_then_certificate_then_dev_user() {
        let req = |c: &Config| {
            let mut r = tonic::Request::new(());
            Auth::from_config(c).map(|a| {
                a.apply(&mut r);
                r.metadata().clone().into_headers()
            })
        };
        let mut c = Config {
            token: Some("k".into()),
            dev_user: Some("alice".into()),
            ..Config::new("http://127.0.0.1:1")
        };
        let h = req(&c).unwrap();
        assert_eq!(h["authorization"], "Bearer k");
        assert!(h.get(DEV_USER_HEADER).is_none());
        c.token = Some(String::new());
        let h = req(&c).unwrap();
        assert_eq!(h[DEV_USER_HEADER], "alice");
        assert!(h.get("authorization").is_none());
        c.cert = Some("c.pem".into());
        assert!(req(&c).unwrap().is_empty());
        let none = Config::new("http://127.0.0.1:1");
        assert!(matches!(req(&none), Err(Error::NoCredentials)));
        c.cert = None;
        c.token = Some("bad\ntoken".into());
        assert!(matches!(req(&c), Err(Error::InvalidHeader("token"))));
    }

    #[test]
    fn a_status_keeps_its_reason_code() {
        use tonic_types::{ErrorDetails, StatusExt};
        let s = tonic::Status::with_error_details(
            tonic::Code::PermissionDenied,
            "bridge may not act on behalf of other users",
            ErrorDetails::with_error_info(reasons::ACT_AS_DENIED, ERROR_DOMAIN, []),
        );
        let e = Error::from(s);
        assert_eq!(e.reason(), Some(reasons::ACT_AS_DENIED));
        let Error::Api(api) = e else { panic!() };
        assert_eq!(api.code(), tonic::Code::PermissionDenied);
        assert!(!api.is_transient());
        let plain = ApiError::from(tonic::Status::unavailable("connection refused"));
        assert_eq!(plain.reason(), "");
        assert!(plain.is_transient());
    }

    /// A bearer token is not sent in plaintext to a host that is not loopback unless that is
    /// asked for; TLS settings with a plaintext address are a mistake, not ignored.
    #[tokio::test]
    async fn a_token_is_not_sent_in_plaintext_off_this_machine_unless_allowed() {
        let remote = Config {
            token: Some("k".into()),
            ..Config::new("HTTP://docent.corp.example:7878")
        };
        assert!(matches!(
            Client::connect_lazy(&remote).await,
            Err(Error::PlaintextRefused { host }) if host == "docent.corp.example"
        ));
        let allowed = Config {
            allow_plain_http: true,
            ..remote.clone()
        };
        assert!(Client::connect_lazy(&allowed).await.is_ok());
        // The same for a request built for the caller's own channel (a review: `authorized`
        // skipped the check).
        assert!(matches!(
            authorized(&remote, ()),
            Err(Error::PlaintextRefused { host }) if host == "docent.corp.example"
        ));
        assert!(authorized(&allowed, ()).is_ok());
        let local = Config {
            token: Some("k".into()),
            ..Config::new("http://127.0.0.1:7878")
        };
        assert!(Client::connect_lazy(&local).await.is_ok());
        let mixed = Config {
            ca: Some("ca.pem".into()),
            ..allowed
        };
        assert!(matches!(
            Client::connect_lazy(&mixed).await,
            Err(Error::TlsSettingsOverPlaintext { .. })
        ));
        // On this machine, settings left in the environment are ignored, as before.
        let local_ca = Config {
            ca: Some("ca.pem".into()),
            ..local.clone()
        };
        assert!(Client::connect_lazy(&local_ca).await.is_ok());
        // Unless a certificate is the only credential: it cannot be sent over plaintext.
        let cert_only = Config {
            token: None,
            cert: Some("c.pem".into()),
            key: Some("k.pem".into()),
            ..local
        };
        assert!(matches!(
            Client::connect_lazy(&cert_only).await,
            Err(Error::TlsSettingsOverPlaintext { .. })
        ));
    }

    /// A deadline tonic cannot encode (it panics at 100 million hours) or zero is clamped.
    #[tokio::test]
    async fn a_request_deadline_is_clamped_to_what_can_be_sent() {
        let c = Client::connect_lazy(&Config {
            token: Some("k".into()),
            ..Config::new("http://127.0.0.1:7878")
        })
        .await
        .unwrap();
        let huge = c
            .clone()
            .with_timeout(std::time::Duration::from_secs(400_000_000_000));
        assert_eq!(huge.timeout, Some(MAX_TIMEOUT));
        let zero = c.with_timeout(std::time::Duration::ZERO);
        assert_eq!(zero.timeout, Some(MIN_TIMEOUT));
    }

    /// The address is judged as the transport parses it: a scheme tonic would carry in
    /// plaintext, or a `user@` part that hides the host connected to, is refused before a
    /// token can be sent.
    #[tokio::test]
    async fn only_http_and_https_addresses_without_a_user_part_are_accepted() {
        let with = |addr: &str| Config {
            token: Some("k".into()),
            ..Config::new(addr)
        };
        for addr in [
            "grpcs://docent.corp.example:7878",
            "grpc://docent.corp.example:7878",
            "h2://docent.corp.example:7878",
            "docent.corp.example:7878",
        ] {
            let r = Client::connect_lazy(&with(addr)).await.err();
            assert!(
                matches!(&r, Some(Error::InvalidAddress { message, .. })
                    if message.contains("http://") && message.contains("https://")),
                "{addr}: {r:?}"
            );
        }
        // Loopback to the eye, docent.corp.example to the transport.
        let hidden = "http://[::1]@docent.corp.example:7878";
        assert!(plaintext_warning(hidden, true).is_some());
        // A password the URI parser refuses (`^`) is not echoed in the error either (a review).
        for addr in [
            hidden,
            "https://user:pw@docent.corp.example:7878",
            "https://svc:p^w@docent.corp.example:7878",
            "https://svc:p/w@docent.corp.example:7878",
        ] {
            let r = Client::connect_lazy(&with(addr)).await.err();
            assert!(matches!(r, Some(Error::UserInfoInAddress)), "{addr}: {r:?}");
        }
        assert!(!Error::UserInfoInAddress.to_string().contains("pw"));
        // The scheme in any case, as the transport reads it.
        assert!(
            Client::connect_lazy(&with("HTTP://127.0.0.1:7878"))
                .await
                .is_ok()
        );
    }

    /// The client trusts no CA it is not given: `https://` without one could never connect.
    #[tokio::test]
    async fn https_without_a_ca_is_refused_before_connecting() {
        let c = Config {
            token: Some("k".into()),
            ..Config::new("https://docent.corp.example:7878")
        };
        let e = Client::connect_lazy(&c).await.err();
        assert!(
            matches!(&e, Some(Error::HttpsWithoutCa { addr }) if addr == &c.addr),
            "{e:?}"
        );
        let shown = e.unwrap().to_string();
        assert!(
            shown.contains("--ca") && shown.contains("DOCENT_CA"),
            "{shown}"
        );
        // With a CA it goes on, here to reading the file.
        let with_ca = Config {
            ca: Some("/nonexistent/docent-ca.pem".into()),
            ..c
        };
        assert!(matches!(
            Client::connect_lazy(&with_ca).await,
            Err(Error::Read { .. })
        ));
    }

    #[tokio::test]
    async fn half_a_client_identity_is_refused_before_connecting() {
        let c = Config {
            cert: Some("c.pem".into()),
            token: Some("k".into()),
            ..Config::new("https://docent.example:7878")
        };
        assert!(matches!(
            Client::connect(&c).await,
            Err(Error::HalfClientIdentity)
        ));
    }
}
