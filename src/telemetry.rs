//! Logging: structured `tracing` to stderr; `RUST_LOG` filters (default `info`), `DOCENT_LOG_JSON=1`
//! switches to JSON lines. Document and question text is never logged above debug: a panic
//! too is logged where it happened, and its message (which may quote the text a bug met: a
//! slice past a character boundary shows it) at debug level only ([`panic_lines`]).

use tracing_subscriber::EnvFilter;

/// The default log filter (`RUST_LOG` replaces it). Dependencies that log through `log` reach
/// the daemon's log unredacted, so those that name paths are kept quiet: notify names watched
/// paths in its warnings, smb logs the UNC path of each file opened through a DFS referral (a
/// review).
/// Parser libraries are silenced: their warnings quote fonts, streams and part paths of the
/// documents they read, which the log must not (session 43's review).
pub const DEFAULT_FILTER: &str =
    "info,tantivy=warn,ort=warn,smb=warn,notify=error,pdf_extract=off,lopdf=off,calamine=off";

pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let json = std::env::var("DOCENT_LOG_JSON").is_ok_and(|v| v == "1");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    // In place of the default hook, which printed the message to stderr (the log) whole
    // (found by a review).
    std::panic::set_hook(Box::new(|info| {
        let (place, message) = panic_lines(info.location(), info.payload());
        let raw = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if END_WHEN_STDOUT_CLOSES.load(std::sync::atomic::Ordering::Relaxed)
            && raw.starts_with("failed printing to stdout")
            && raw.contains("os error 32")
        {
            // The reader of the output went (`| head`): the end a pipe's writer has.
            std::process::exit(141);
        }
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        tracing::error!(
            at = %place,
            thread,
            "a thread panicked (a bug: please report it; its message is logged at debug level, \
             since it may quote a document)"
        );
        tracing::debug!(at = %place, message = %message, "the panic's message");
    }));
}

/// See [`end_quietly_when_stdout_closes`].
static END_WHEN_STDOUT_CLOSES: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// A command-line tool's output is read through a pipe that may close (`docent search … |
/// head`): printing to it then ends the process with status 141, as SIGPIPE ends other tools,
/// instead of a panic logged as a bug. Not for the daemon, whose stdout is not its output.
pub fn end_quietly_when_stdout_closes() {
    END_WHEN_STDOUT_CLOSES.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// What a task that did not finish is told as: a panic without its message (logged where it
/// happened, see [`init`]: it may quote a document), else the runtime's reason.
pub fn task_failure(e: &tokio::task::JoinError) -> String {
    if e.is_panic() {
        "a task panicked (a bug: the log says where)".to_string()
    } else {
        e.to_string()
    }
}

/// Where a panic happened, and its message through the log's redaction.
pub fn panic_lines(
    location: Option<&std::panic::Location<'_>>,
    payload: &(dyn std::any::Any + Send),
) -> (String, String) {
    let place = location.map_or_else(
        || "an unknown place".to_string(),
        |l| format!("{}:{}:{}", l.file(), l.line(), l.column()),
    );
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)");
    (place, crate::guardrail::pii::for_log(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_placed_and_its_message_redacted() {
        let here = std::panic::Location::caller();
        let payload: Box<dyn std::any::Any + Send> = Box::new(String::from(
            "byte index 3 is not a char boundary in `mail alice@corp.example`",
        ));
        let (place, message) = panic_lines(Some(here), payload.as_ref());
        assert!(place.starts_with("src/telemetry.rs:"), "{place}");
        assert!(!message.contains("alice@corp.example"), "{message}");
        assert!(message.contains("char boundary"), "{message}");
        let (place, message) = panic_lines(None, &7u8);
        assert_eq!(
            (place.as_str(), message.as_str()),
            ("an unknown place", "(not a string)")
        );
    }
}
