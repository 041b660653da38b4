//! The bridge's TOML config: raw structs (`deny_unknown_fields`), `${VAR}` interpolation for
//! secrets, then validation into [`Config`] with every problem reported with its TOML path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Who may see what is posted in a channel: `everyone`, or the members of one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    Everyone,
    Group(String),
}

impl Audience {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "everyone" => Some(Self::Everyone),
            _ => s
                .strip_prefix("group:")
                .filter(|g| !g.is_empty() && !g.contains(char::is_whitespace))
                .map(|g| Self::Group(g.to_string())),
        }
    }

    /// The `on_behalf_of` name Docent resolves to the audience's principals.
    pub fn act_as(&self) -> String {
        match self {
            Self::Everyone => "everyone".into(),
            Self::Group(g) => format!("group:{g}"),
        }
    }
}

#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    pub bot_token: String,
    pub signing_secret: String,
    /// Base URL of the Web API (`https://slack.com/api`), without a trailing slash; `http://`
    /// only to a loopback address (the bot token goes with every call).
    pub api_url: String,
    /// The hosts a `response_url` (a slash command's, a button's) may name, over `https://`
    /// on the default port (`hooks.slack.com`; GovSlack: `hooks.slack-gov.com`). The Web API's
    /// own origin (`api_url`'s scheme, host and port) is accepted too: the bot token already
    /// goes there (a test's fake Slack serves both). Found by a review: the form's URL was
    /// posted to as given, so anyone holding the signing secret could name their own server
    /// and receive any user's private answer.
    pub response_url_hosts: Vec<String>,
    pub docent: docent_client::Config,
    pub docent_timeout: Duration,
    pub default_audience: Audience,
    pub audiences: BTreeMap<String, Audience>,
    /// Channels with a chosen audience whose answers guests and other organisations' members
    /// may read (a Slack Connect channel with a partner). Every other channel is checked for
    /// them before each answer, whatever its audience (a review: a chosen audience skipped
    /// the check, so a guest invited into `#hr-team` read the HR group's answers).
    pub open_to_guests: std::collections::BTreeSet<String>,
    pub user_cache_ttl: Duration,
    /// Answers being produced at once; more events wait (they are acknowledged already).
    pub max_concurrent_answers: usize,
    /// Attempts per Web API call (429 is retried after Retry-After; 5xx and network errors
    /// only for reads).
    pub slack_attempts: u32,
    /// The longest Retry-After the bridge waits for before reporting the call as failed.
    pub max_retry_after: Duration,
    /// The workspace (`T…`) the app serves: requests from any other workspace are ignored,
    /// and its accounts may be mapped by e-mail. `None`: not pinned.
    pub team_id: Option<String>,
    /// The Enterprise Grid organisation (`E…`) the app serves: requests from any other
    /// organisation, or from none, are ignored, and its accounts may be mapped by e-mail,
    /// whatever their home workspace. With neither this nor `team_id`, users are mapped by
    /// Slack id only: another organisation's account may show any e-mail address.
    pub enterprise_id: Option<String>,
}

/// Secrets (the bot token, the signing secret, Docent's API key) are never shown.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("metrics_listen", &self.metrics_listen)
            .field("bot_token", &"<redacted>")
            .field("signing_secret", &"<redacted>")
            .field("api_url", &self.api_url)
            .field("response_url_hosts", &self.response_url_hosts)
            .field("docent", &self.docent)
            .field("default_audience", &self.default_audience)
            .field("audiences", &self.audiences)
            .field("open_to_guests", &self.open_to_guests)
            .field("team_id", &self.team_id)
            .field("enterprise_id", &self.enterprise_id)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Whether a user's e-mail may name a Docent identity: only when the account's home is
    /// pinned (`team_id` or `enterprise_id`).
    pub fn maps_by_email(&self) -> bool {
        self.home_pinned()
    }

    /// Whether the bridge knows its users' home (`team_id` or `enterprise_id`), so that another
    /// organisation's accounts can be told apart.
    pub fn home_pinned(&self) -> bool {
        self.team_id.is_some() || self.enterprise_id.is_some()
    }
}

impl Config {
    /// The audience of a channel: its configured group, else the default.
    pub fn audience(&self, channel: &str) -> &Audience {
        self.audiences
            .get(channel)
            .unwrap_or(&self.default_audience)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    version: u32,
    #[serde(default)]
    listen: Option<String>,
    slack: RawSlack,
    docent: RawDocent,
    #[serde(default)]
    channels: RawChannels,
    #[serde(default)]
    users: RawUsers,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    limits: RawLimits,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlack {
    bot_token: String,
    signing_secret: String,
    #[serde(default)]
    api_url: Option<String>,
    #[serde(default)]
    response_url_hosts: Option<Vec<String>>,
    #[serde(default)]
    attempts: Option<u32>,
    #[serde(default)]
    max_retry_after_secs: Option<u64>,
    #[serde(default)]
    team_id: Option<String>,
    #[serde(default)]
    enterprise_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocent {
    addr: String,
    api_key: String,
    #[serde(default)]
    ca: Option<PathBuf>,
    #[serde(default)]
    cert: Option<PathBuf>,
    #[serde(default)]
    key: Option<PathBuf>,
    #[serde(default)]
    timeout_secs: Option<u64>,
    /// Send the API key over plaintext http:// to a host that is not loopback.
    #[serde(default)]
    allow_plain_http: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawChannels {
    #[serde(default)]
    default_audience: Option<String>,
    #[serde(default)]
    audiences: BTreeMap<String, String>,
    #[serde(default)]
    open_to_guests: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawUsers {
    #[serde(default)]
    cache_ttl_secs: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    #[serde(default)]
    listen: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    #[serde(default)]
    max_concurrent_answers: Option<usize>,
}

/// One problem with the config, at a TOML path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Toml(String),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigIssue>),
}

/// `${VAR}` replaced by the environment variable's value (the variable must be set).
fn interpolate(
    value: &str,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    issues: &mut Vec<ConfigIssue>,
) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            issues.push(ConfigIssue {
                path: path.into(),
                message: "unterminated ${".into(),
            });
            return out;
        };
        let name = &after[..end];
        match env(name) {
            Some(v) => out.push_str(&v),
            None => issues.push(ConfigIssue {
                path: path.into(),
                message: format!("environment variable {name} is not set"),
            }),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Whether `host` (a URL's host; an IPv6 literal in brackets) is this machine.
fn is_loopback(host: &str) -> bool {
    let ip = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.eq_ignore_ascii_case("localhost")
        || ip
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base, &|k| std::env::var(k).ok())
    }

    /// Parses config text; relative paths resolve against `base`; `env` answers `${VAR}`.
    pub fn parse(
        text: &str,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        // The line and the message, not toml's quote of the line: a line with a literal
        // secret on it (a quote left open) would go to stderr and the journal.
        let raw: Raw = toml::from_str(text).map_err(|e| {
            ConfigError::Toml(match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    format!("line {line}: {}", e.message().trim())
                }
                None => e.message().trim().to_string(),
            })
        })?;
        let mut issues = Vec::new();
        let mut issue = |path: &str, message: String| {
            issues.push(ConfigIssue {
                path: path.into(),
                message,
            })
        };
        if raw.version != 1 {
            issue("version", format!("unsupported version {}", raw.version));
        }
        let mut addr = |path: &str, v: &str| -> Option<SocketAddr> {
            v.parse()
                .map_err(|e| issue(path, format!("{v:?}: {e}")))
                .ok()
        };
        let listen = addr("listen", raw.listen.as_deref().unwrap_or("127.0.0.1:3000"));
        let metrics_listen = raw
            .metrics
            .listen
            .as_deref()
            .and_then(|v| addr("metrics.listen", v));
        let mut ipol = Vec::new();
        let bot_token = interpolate(&raw.slack.bot_token, "slack.bot_token", env, &mut ipol);
        let signing_secret = interpolate(
            &raw.slack.signing_secret,
            "slack.signing_secret",
            env,
            &mut ipol,
        );
        let api_key = interpolate(&raw.docent.api_key, "docent.api_key", env, &mut ipol);
        // An unset variable is reported once, not again as an empty value.
        let unset: Vec<String> = ipol.iter().map(|i| i.path.clone()).collect();
        let set = |path: &str| !unset.iter().any(|u| u == path);
        issues.extend(ipol);
        let mut issue = |path: &str, message: String| {
            issues.push(ConfigIssue {
                path: path.into(),
                message,
            })
        };
        if bot_token.is_empty() {
            if set("slack.bot_token") {
                issue("slack.bot_token", "must not be empty".into());
            }
        } else if !bot_token.starts_with("xoxb-") {
            issue(
                "slack.bot_token",
                "expected a bot token (xoxb-…), not a user or app token".into(),
            );
        }
        if signing_secret.is_empty() && set("slack.signing_secret") {
            issue("slack.signing_secret", "must not be empty".into());
        }
        if api_key.is_empty() && set("docent.api_key") {
            issue("docent.api_key", "must not be empty".into());
        }
        let api_url = raw
            .slack
            .api_url
            .unwrap_or_else(|| "https://slack.com/api".into())
            .trim_end_matches('/')
            .to_string();
        // Parsed as reqwest will parse it (the `url` crate), so that the host judged is the one
        // the bot token is sent to.
        match reqwest::Url::parse(&api_url) {
            Err(e) => issue("slack.api_url", format!("{api_url:?}: {e}")),
            Ok(u) if u.scheme() == "https" => {}
            Ok(u) if u.scheme() == "http" => {
                if !u.host_str().is_some_and(is_loopback) {
                    issue(
                        "slack.api_url",
                        format!(
                            "{api_url:?}: the bot token would cross the network in plaintext; \
                             use https:// (http:// only to a loopback address, such as a local \
                             test server)"
                        ),
                    );
                }
            }
            Ok(_) => issue(
                "slack.api_url",
                format!("{api_url:?}: expected an http(s) URL"),
            ),
        }
        // GovSlack's Web API (slack-gov.com) sends its own hooks host: the default follows it
        // (a review: a GovSlack deployment refused every slash command until it set this).
        let gov = reqwest::Url::parse(&api_url).is_ok_and(|u| {
            u.host_str()
                .is_some_and(|h| h == "slack-gov.com" || h.ends_with(".slack-gov.com"))
        });
        let default_hooks = match gov {
            true => "hooks.slack-gov.com",
            false => "hooks.slack.com",
        };
        let response_url_hosts: Vec<String> = raw
            .slack
            .response_url_hosts
            .unwrap_or_else(|| vec![default_hooks.into()])
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        if response_url_hosts.is_empty() {
            issue(
                "slack.response_url_hosts",
                "must name at least one host (Slack's is \"hooks.slack.com\")".into(),
            );
        }
        // A bare DNS name: a scheme, port or path here would never match a URL's host.
        for h in &response_url_hosts {
            let name = !h.is_empty()
                && !h.starts_with(['.', '-'])
                && !h.ends_with(['.', '-'])
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
            if !name {
                issue(
                    "slack.response_url_hosts",
                    format!("{h:?}: expected a host name, such as \"hooks.slack.com\""),
                );
            }
        }
        let docent_addr = raw.docent.addr.clone();
        let scheme = |p: &str| {
            docent_addr
                .get(..p.len())
                .is_some_and(|s| s.eq_ignore_ascii_case(p))
        };
        if !(scheme("https://") || scheme("http://")) {
            issue(
                "docent.addr",
                format!("{docent_addr:?}: expected http:// or https://"),
            );
        } else if !raw.docent.allow_plain_http
            && docent_client::plaintext_warning(&docent_addr, true).is_some()
        {
            issue(
                "docent.addr",
                format!(
                    "{docent_addr:?}: the API key would cross the network in plaintext; use \
                     https://, or set docent.allow_plain_http = true on a network encrypted by \
                     other means"
                ),
            );
        }
        if raw.docent.cert.is_some() != raw.docent.key.is_some() {
            issue("docent.cert", "cert and key must be given together".into());
        }
        let abs = |p: Option<PathBuf>| p.map(|p| base.join(p));
        let (ca, cert, key) = (
            abs(raw.docent.ca),
            abs(raw.docent.cert),
            abs(raw.docent.key),
        );
        for (name, p) in [
            ("docent.ca", &ca),
            ("docent.cert", &cert),
            ("docent.key", &key),
        ] {
            if let Some(p) = p
                && !p.is_file()
            {
                issue(name, format!("{} does not exist", p.display()));
            }
        }
        let audience = |path: &str, v: &str, issue: &mut dyn FnMut(&str, String)| {
            Audience::parse(v).or_else(|| {
                issue(
                    path,
                    format!("{v:?}: expected \"everyone\" or \"group:<id>\""),
                );
                None
            })
        };
        // A group's documents may go only to channels whose members the administrator checked
        // are all in it; a default covers every channel the bot is invited to, by anyone.
        let default_audience = match raw.channels.default_audience.as_deref() {
            None | Some("everyone") => Some(Audience::Everyone),
            Some(v) => {
                issue(
                    "channels.default_audience",
                    format!(
                        "{v:?}: only \"everyone\" (a group applies to the channels listed in \
                         `audiences`, whose members were checked; any user can invite the bot \
                         to a channel)"
                    ),
                );
                None
            }
        };
        let mut audiences = BTreeMap::new();
        for (ch, v) in &raw.channels.audiences {
            if let Some(a) = audience(&format!("channels.audiences.{ch}"), v, &mut issue) {
                audiences.insert(ch.clone(), a);
            }
        }
        let mut open_to_guests = std::collections::BTreeSet::new();
        for ch in &raw.channels.open_to_guests {
            match audiences.get(ch) {
                Some(Audience::Group(_)) => {
                    open_to_guests.insert(ch.clone());
                }
                _ => issue(
                    "channels.open_to_guests",
                    format!(
                        "{ch:?}: only a channel given a group in `audiences` (its answers are \
                         that group's documents, which its guests may then read)"
                    ),
                ),
            }
        }
        let docent_timeout = raw.docent.timeout_secs.unwrap_or(60);
        if !(1..=3600).contains(&docent_timeout) {
            issue(
                "docent.timeout_secs",
                format!("{docent_timeout}: must be 1 to 3600"),
            );
        }
        let max_concurrent_answers = raw.limits.max_concurrent_answers.unwrap_or(16);
        if max_concurrent_answers == 0 {
            issue("limits.max_concurrent_answers", "must be at least 1".into());
        }
        let slack_attempts = raw.slack.attempts.unwrap_or(4);
        if slack_attempts == 0 {
            issue("slack.attempts", "must be at least 1".into());
        }
        let team_id = raw.slack.team_id.clone();
        if let Some(t) = &team_id
            && !(t.starts_with('T') && t.len() > 1 && t.chars().all(|c| c.is_ascii_alphanumeric()))
        {
            issue(
                "slack.team_id",
                format!("{t:?} is not a Slack workspace id (T followed by letters and digits)"),
            );
        }
        let enterprise_id = raw.slack.enterprise_id.clone();
        if let Some(e) = &enterprise_id
            && !(e.starts_with('E') && e.len() > 1 && e.chars().all(|c| c.is_ascii_alphanumeric()))
        {
            issue(
                "slack.enterprise_id",
                format!("{e:?} is not an Enterprise Grid id (E followed by letters and digits)"),
            );
        }
        if !issues.is_empty() {
            return Err(ConfigError::Invalid(issues));
        }
        Ok(Self {
            listen: listen.expect("checked"),
            metrics_listen,
            bot_token,
            signing_secret,
            api_url,
            response_url_hosts,
            docent: docent_client::Config {
                addr: docent_addr,
                ca,
                cert,
                key,
                token: Some(api_key),
                dev_user: None,
                allow_plain_http: raw.docent.allow_plain_http,
            },
            docent_timeout: Duration::from_secs(docent_timeout),
            default_audience: default_audience.expect("checked"),
            audiences,
            open_to_guests,
            user_cache_ttl: Duration::from_secs(raw.users.cache_ttl_secs.unwrap_or(600)),
            max_concurrent_answers,
            slack_attempts,
            max_retry_after: Duration::from_secs(raw.slack.max_retry_after_secs.unwrap_or(60)),
            team_id,
            enterprise_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
version = 1
listen = "127.0.0.1:0"
[slack]
bot_token = "${BOT}"
signing_secret = "${SECRET}"
[docent]
addr = "http://127.0.0.1:7878"
api_key = "${KEY}"
[channels]
default_audience = "everyone"
audiences = { C0HR = "group:hr" }
"#;

    fn env(k: &str) -> Option<String> {
        match k {
            "BOT" => Some("xoxb-1".into()),
            "SECRET" => Some("s3cret".into()),
            "KEY" => Some("k".into()),
            _ => None,
        }
    }

    #[test]
    fn secrets_come_from_the_environment_and_channels_have_audiences() {
        let c = Config::parse(TEXT, Path::new("."), &env).unwrap();
        assert_eq!(c.bot_token, "xoxb-1");
        assert_eq!(c.signing_secret, "s3cret");
        assert_eq!(c.docent.token.as_deref(), Some("k"));
        assert_eq!(c.audience("C0HR"), &Audience::Group("hr".into()));
        assert_eq!(c.audience("C0GENERAL"), &Audience::Everyone);
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let bad = TEXT
            .replace("[slack]", "[slack]\nteam_id = \"acme\"")
            .replace("group:hr", "hr")
            .replace("${BOT}", "xoxp-user")
            .replace("${KEY}", "${MISSING}");
        let Err(ConfigError::Invalid(issues)) = Config::parse(&bad, Path::new("."), &env) else {
            panic!("expected issues")
        };
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        assert!(paths.contains(&"channels.audiences.C0HR"), "{issues:?}");
        assert!(paths.contains(&"slack.bot_token"), "{issues:?}");
        assert!(paths.contains(&"docent.api_key"), "{issues:?}");
        assert!(paths.contains(&"slack.team_id"), "{issues:?}");
        // A group as the default would answer in channels nobody checked the members of.
        let group_default = TEXT.replace(
            "default_audience = \"everyone\"",
            "default_audience = \"group:hr\"",
        );
        let Err(ConfigError::Invalid(issues)) = Config::parse(&group_default, Path::new("."), &env)
        else {
            panic!("a group default audience was accepted")
        };
        assert_eq!(issues[0].path, "channels.default_audience", "{issues:?}");
        // The API key over plaintext to another host: refused unless allowed.
        let remote = TEXT.replace("http://127.0.0.1:7878", "HTTP://docent.corp.example:7878");
        let Err(ConfigError::Invalid(issues)) = Config::parse(&remote, Path::new("."), &env) else {
            panic!("expected issues")
        };
        assert_eq!(issues[0].path, "docent.addr", "{issues:?}");
        let allowed = remote.replace("[docent]", "[docent]\nallow_plain_http = true");
        assert!(Config::parse(&allowed, Path::new("."), &env).is_ok());
        // A channel open to guests must have a chosen group.
        let open = TEXT.replace("[channels]", "[channels]\nopen_to_guests = [\"C0GENERAL\"]");
        let Err(ConfigError::Invalid(issues)) = Config::parse(&open, Path::new("."), &env) else {
            panic!("expected issues")
        };
        assert_eq!(issues[0].path, "channels.open_to_guests", "{issues:?}");
        let open = TEXT.replace("[channels]", "[channels]\nopen_to_guests = [\"C0HR\"]");
        let c = Config::parse(&open, Path::new("."), &env).unwrap();
        assert!(c.open_to_guests.contains("C0HR"));
        for secs in ["0", "400000000000"] {
            let t = TEXT.replace("[docent]", &format!("[docent]\ntimeout_secs = {secs}"));
            let Err(ConfigError::Invalid(issues)) = Config::parse(&t, Path::new("."), &env) else {
                panic!("expected issues for {secs}")
            };
            assert_eq!(issues[0].path, "docent.timeout_secs", "{issues:?}");
        }
        // A syntax error names its line, and does not quote it (it may hold a secret).
        let open_quote = TEXT.replace("\"${BOT}\"", "\"xoxb-secret-123");
        let Err(ConfigError::Toml(m)) = Config::parse(&open_quote, Path::new("."), &env) else {
            panic!("expected a syntax error")
        };
        assert!(m.starts_with("line 5:"), "{m}");
        assert!(!m.contains("xoxb-secret-123"), "{m}");
        let unknown = TEXT.replace("[channels]", "[channels]\nfoo = 1");
        assert!(matches!(
            Config::parse(&unknown, Path::new("."), &env),
            Err(ConfigError::Toml(m)) if m.contains("foo")
        ));
    }

    /// The bot token goes in clear only to this machine (a test's fake Web API); the URL is
    /// judged as reqwest parses it.
    #[test]
    fn the_web_api_is_reached_over_plain_http_only_on_this_machine() {
        let with = |url: &str| TEXT.replace("[slack]", &format!("[slack]\napi_url = '{url}'"));
        for ok in [
            "http://127.0.0.1:3999/api",
            "http://localhost:3999/api",
            "http://[::1]:3999/api",
            "https://slack.com/api/",
        ] {
            let c = Config::parse(&with(ok), Path::new("."), &env);
            assert!(c.is_ok(), "{ok}: {:?}", c.err());
        }
        for refused in [
            "http://slack.corp.example/api",
            "HTTP://10.0.0.5/api",
            // Loopback to a naive reader, another host to reqwest.
            "http://127.0.0.1@slack.corp.example/api",
            "http://slack.corp.example\\@127.0.0.1/api",
            "ftp://slack.com/api",
        ] {
            let r = Config::parse(&with(refused), Path::new("."), &env);
            let Err(ConfigError::Invalid(issues)) = r else {
                panic!("{refused}: accepted")
            };
            assert_eq!(issues.len(), 1, "{refused}: {issues:?}");
            assert_eq!(issues[0].path, "slack.api_url", "{refused}: {issues:?}");
        }
    }

    /// Found by a review: a slash command's `response_url` was posted to wherever it pointed.
    /// The hosts it may name are Slack's by default, another deployment's when configured, and
    /// bare host names only.
    #[test]
    fn response_urls_may_name_slacks_hooks_host_or_the_configured_ones() {
        let c = Config::parse(TEXT, Path::new("."), &env).unwrap();
        assert_eq!(c.response_url_hosts, ["hooks.slack.com"]);
        let with = |hosts: &str| {
            TEXT.replace("[slack]", &format!("[slack]\nresponse_url_hosts = {hosts}"))
        };
        let gov = Config::parse(&with("['Hooks.Slack-Gov.com']"), Path::new("."), &env).unwrap();
        assert_eq!(gov.response_url_hosts, ["hooks.slack-gov.com"]);
        // GovSlack's Web API gives GovSlack's hooks host by default (a later review).
        let gov_api = TEXT.replace(
            "[slack]",
            "[slack]\napi_url = \"https://slack-gov.com/api\"",
        );
        let gov = Config::parse(&gov_api, Path::new("."), &env).unwrap();
        assert_eq!(gov.response_url_hosts, ["hooks.slack-gov.com"]);
        for refused in [
            "[]",
            "['https://hooks.slack.com']",
            "['hooks.slack.com:443']",
            "['hooks.slack.com/commands']",
            "['']",
            "['.slack.com']",
        ] {
            let Err(ConfigError::Invalid(issues)) =
                Config::parse(&with(refused), Path::new("."), &env)
            else {
                panic!("{refused}: accepted")
            };
            assert_eq!(issues.len(), 1, "{refused}: {issues:?}");
            assert_eq!(issues[0].path, "slack.response_url_hosts", "{refused}");
        }
    }

    #[test]
    fn the_example_config_loads() {
        let text = include_str!("../docent-slack.example.toml");
        let env = |k: &str| {
            Some(if k == "SLACK_BOT_TOKEN" {
                "xoxb-x".into()
            } else {
                "v".into()
            })
        };
        let c = Config::parse(text, Path::new("."), &env).unwrap();
        assert_eq!(c.audience("C0123HRTEAM"), &Audience::Group("hr".into()));
        assert!(c.metrics_listen.is_some());
        assert_eq!(c.team_id.as_deref(), Some("T0123ABCDEF"));
    }
}
