//! What a connector may write into a log line about a document.
//!
//! Page ids, paths and the error texts that name them can hold personal data (a card number in
//! a file name, a person's address in a wiki page title). Log lines are read by more people
//! than the documents, so connectors pass every such value through [`log_safe`]. The daemon
//! installs its PII redaction at start ([`set_log_redactor`]); without one (a connector run on
//! its own, in a test) digits are masked, so nothing number-like gets through either way.

use std::sync::OnceLock;

static REDACTOR: OnceLock<fn(&str) -> String> = OnceLock::new();

/// Sets how [`log_safe`] redacts. The first call wins; the daemon makes it before any
/// connector starts.
pub fn set_log_redactor(redact: fn(&str) -> String) {
    let _ = REDACTOR.set(redact);
}

/// `value` (an identifier, a path, an error naming one) as it may appear in a log line.
pub fn log_safe(value: &str) -> String {
    match REDACTOR.get() {
        Some(redact) => redact(value),
        None => value
            .chars()
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one test of this binary that touches the global redactor: before it is set, digits
    /// are masked; after, the installed function decides.
    #[test]
    fn log_safe_masks_digits_until_a_redactor_is_set() {
        assert_eq!(
            log_safe("wiki:cards:4111_1111_1111_1111"),
            "wiki:cards:####_####_####_####"
        );
        set_log_redactor(|v| v.replace("jane", "[name]"));
        assert_eq!(log_safe("page jane 42"), "page [name] 42");
    }
}
