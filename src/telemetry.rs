//! Logging: structured `tracing` to stderr; `RUST_LOG` filters (default `info`), `DOCENT_LOG_JSON=1`
//! switches to JSON lines. Document and question text is never logged above debug.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tantivy=warn,ort=warn"));
    let json = std::env::var("DOCENT_LOG_JSON").is_ok_and(|v| v == "1");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
