//! The connector registry: how Docent configures and builds connectors it does not know by name.
//!
//! Each connector crate exports one [`ConnectorFactory`] (registered with one line in Docent's
//! `src/connectors.rs`). Docent reads `[[connectors]]` entries, keeps the keys common to every
//! connector (`type`, `id`, `max_file_size_bytes`, `max_text_bytes`, `parse_timeout_secs`,
//! `parse_memory_mib`), and hands the rest of the table to the factory of that `type`, which
//! parses its own typed section (unknown keys rejected), validates it and returns a
//! [`ConnectorSpec`]. At start the daemon builds each spec into a [`Connector`] and runs it with
//! a [`crate::ConnectorContext`] (sink, index state, membership sink, cancellation, status, admin
//! commands).

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::Connector;

/// A problem in a connector's section. `path` is relative to the connector's table (`roots[0]`,
/// or empty for the table itself); Docent prefixes it with `connectors[i]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub path: String,
    pub message: String,
}

impl ConfigIssue {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// What Docent knows about a connector entry besides its own keys.
#[derive(Debug, Clone)]
pub struct ConfigEnv {
    pub id: String,
    /// Directory of the config file: relative paths resolve against it.
    pub base_dir: PathBuf,
    /// `max_file_size_bytes` (common key): the largest document the connector may read.
    pub max_document_bytes: u64,
    /// `max_text_bytes` and `parse_timeout_secs` (common keys): what Docent's parsers may
    /// extract from one document, and for how long.
    pub max_text_bytes: u64,
    pub parse_timeout: std::time::Duration,
    /// `parse_memory_mib` (common key), in bytes: the address space of the process that parses
    /// one document of a format parsed out of process (PDF), before 8 bytes per byte of it.
    pub parse_memory_bytes: u64,
}

impl ConfigEnv {
    /// `p` resolved against the config file's directory.
    pub fn resolve(&self, p: &str) -> PathBuf {
        let path = Path::new(p);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }
}

/// A connector built from its spec.
pub struct Built {
    pub connector: Box<dyn Connector>,
    /// A handle the daemon's own APIs use (the push source behind the Ingest API); `None` for
    /// crawling connectors.
    pub handle: Option<Arc<dyn Any + Send + Sync>>,
}

impl Built {
    pub fn crawler(connector: Box<dyn Connector>) -> Self {
        Self {
            connector,
            handle: None,
        }
    }
}

/// A validated connector configuration.
pub trait ConnectorSpec: Send + Sync + std::fmt::Debug {
    fn kind(&self) -> &'static str;
    /// Builds the connector (once per daemon start). Errors name what is wrong (a root that
    /// vanished, a secret that is missing) and stop the start.
    fn build(&self) -> Result<Built, String>;
    /// Whether the connector reports group memberships ([`crate::MembershipSink`]). Until it
    /// has, the daemon does not know who is in the groups its deny entries name, so it
    /// withholds every document with a deny entry from every caller (fail closed).
    fn reports_memberships(&self) -> bool {
        false
    }
    /// The spec as `Any`, for tools and tests that inspect a connector's settings.
    fn as_any(&self) -> &dyn Any;
}

/// Configures connectors of one `type`.
pub trait ConnectorFactory: Send + Sync {
    /// The `type` value in `[[connectors]]`.
    fn kind(&self) -> &'static str;
    /// Parses and validates the connector's own keys (`table`: the entry minus the common keys).
    /// Report every problem, not only the first.
    fn configure(
        &self,
        table: toml::Table,
        env: &ConfigEnv,
    ) -> Result<Arc<dyn ConnectorSpec>, Vec<ConfigIssue>>;
}

/// Deserialises a connector's typed section (declare it `#[serde(deny_unknown_fields)]`): an
/// unknown or mistyped key becomes an issue naming the key.
pub fn parse_section<T: DeserializeOwned>(table: toml::Table) -> Result<T, Vec<ConfigIssue>> {
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| vec![ConfigIssue::new("", e.message().trim())])
}

/// Collects issues while validating a section.
#[derive(Debug, Default)]
pub struct Issues(pub Vec<ConfigIssue>);

impl Issues {
    pub fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigIssue::new(path, message));
    }

    /// `v` if it lies in `lo..=hi`, else an issue (and `v` unchanged).
    pub fn range<T: PartialOrd + std::fmt::Display + Copy>(
        &mut self,
        path: &str,
        v: T,
        lo: T,
        hi: T,
    ) -> T {
        // Written as "inside" so that NaN, which compares false with everything, is refused.
        if !(v >= lo && v <= hi) {
            self.add(path, format!("must be between {lo} and {hi}, got {v}"));
        }
        v
    }

    /// Principals (`user:<id>`, `group:<g>`, `everyone`) of a list key.
    pub fn principals(&mut self, path: &str, list: &[String]) -> Vec<crate::Principal> {
        list.iter()
            .enumerate()
            .filter_map(|(i, s)| match s.parse::<crate::Principal>() {
                Ok(p) => Some(p),
                Err(e) => {
                    self.add(format!("{path}[{i}]"), e.to_string());
                    None
                }
            })
            .collect()
    }

    /// An issue when a secret (a password, an API key, a token) would go to `url` in clear
    /// text: over `http://` to a host other than this machine's loopback, unless the admin set
    /// `allow_plain_http = true` (a private network they trust). `path` names the secret's key.
    pub fn secret_over_http(&mut self, path: &str, url: &str, allow_plain_http: bool) {
        if !allow_plain_http && sends_in_clear_off_host(url) {
            self.add(
                path,
                format!(
                    "would be sent in clear text to {url:?}: use https, or set \
                     allow_plain_http = true if that network is private and trusted"
                ),
            );
        }
    }

    pub fn finish<T>(self, v: T) -> Result<T, Vec<ConfigIssue>> {
        if self.0.is_empty() {
            Ok(v)
        } else {
            Err(self.0)
        }
    }
}

/// Whether a request to `url` travels unencrypted to another machine: an `http` URL whose host
/// is not `localhost` or a loopback address. An unparseable URL counts as off the host.
pub fn sends_in_clear_off_host(url: &str) -> bool {
    let Some((scheme, rest)) = url.trim().split_once("://") else {
        return true;
    };
    if !scheme.eq_ignore_ascii_case("http") {
        return false;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    let host = host.trim_end_matches('.');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    !loopback
}

#[cfg(test)]
mod cleartext_tests {
    use super::*;

    #[test]
    fn only_http_to_another_machine_is_clear_text_off_the_host() {
        for off in [
            "http://wiki.example.com",
            "http://10.0.0.5:8080/w",
            "HTTP://wiki",
            "http://user@wiki:80/",
            "http://[2001:db8::1]:8080",
            "http://127.0.0.1.evil.example/",
            "http://localhost.evil.example",
            "not a url",
        ] {
            assert!(sends_in_clear_off_host(off), "{off}");
        }
        for local in [
            "https://wiki.example.com",
            "http://127.0.0.1:8080",
            "http://127.5.0.1",
            "http://localhost/dokuwiki",
            "http://LOCALHOST.:80",
            "http://[::1]:8080/v1",
            "http://u@127.0.0.1:1/",
        ] {
            assert!(!sends_in_clear_off_host(local), "{local}");
        }
    }

    #[test]
    fn a_secret_over_plain_http_is_an_issue_unless_allowed() {
        let mut is = Issues::default();
        is.secret_over_http("password", "http://wiki.corp", false);
        assert_eq!(is.0.len(), 1);
        assert_eq!(is.0[0].path, "password");
        assert!(is.0[0].message.contains("allow_plain_http"), "{:?}", is.0);
        let mut is = Issues::default();
        is.secret_over_http("password", "http://wiki.corp", true);
        is.secret_over_http("password", "https://wiki.corp", false);
        is.secret_over_http("password", "http://127.0.0.1:8080", false);
        assert!(is.0.is_empty(), "{:?}", is.0);
    }
}
