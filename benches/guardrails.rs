//! Cost of the text guardrails per retrieved passage: injection screening, blocked phrases and PII
//! detection over SciFact abstracts (the passages Search and Ask screen on every request).
//! Prints a table.
//!
//! Then the same injection screening over the handbook's Markdown paragraphs, which keep their
//! emphasis marks, with and without the readings that drop them (session 44).
//!
//! cargo bench --bench guardrails [-- --data DIR] [--handbook DIR]

use std::path::PathBuf;
use std::time::Instant;

use docent::embed::{EmbedError, Embedder};
use docent::guardrail::{Audience, GuardrailConfig, Guardrails, PhraseRule, injection, pii};

/// Guardrails without topics embed nothing.
struct NoModel;

impl Embedder for NoModel {
    fn model_id(&self) -> &str {
        "none"
    }
    fn dim(&self) -> usize {
        0
    }
    fn embed_passages(&self, _: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        unreachable!("no topics")
    }
    fn embed_query(&self, _: &str) -> Result<Vec<f32>, EmbedError> {
        unreachable!("no topics")
    }
    fn token_counter(&self) -> std::sync::Arc<dyn docent::chunk::TokenCounter> {
        std::sync::Arc::new(docent::chunk::WordCounter)
    }
}

/// The injection screening as it was before session 44: the normalised forms only, without the
/// readings that drop emphasis marks.
fn injection_before(t: &str) -> bool {
    docent::guardrail::normalize::forms(t)
        .iter()
        .find_map(injection::detect_normalized)
        .is_some()
}

/// Prints one table row: `f` over every text of `texts`, three times, per text and per byte.
fn timed(texts: &[String], name: &str, f: &dyn Fn(&str) -> bool) {
    let bytes: usize = texts.iter().map(String::len).sum();
    let mut flagged = 0;
    let t = Instant::now();
    for _ in 0..3 {
        flagged = texts.iter().filter(|t| f(t)).count();
    }
    let secs = t.elapsed().as_secs_f64() / 3.0;
    println!(
        "| {name} | {:.1} | {:.0} | {flagged} |",
        secs * 1e6 / texts.len() as f64,
        bytes as f64 / secs / 1e6
    );
}

fn main() -> anyhow::Result<()> {
    let data = std::env::args()
        .skip_while(|a| a != "--data")
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/scifact")
        });
    let corpus = docent::eval::load_corpus(&data.join("corpus.jsonl"))?;
    let texts: Vec<String> = corpus
        .iter()
        .take(3000)
        .map(|d| format!("{}\n{}", d.title, d.text))
        .collect();
    let bytes: usize = texts.iter().map(String::len).sum();
    println!(
        "{} passages, {:.1} KB on average",
        texts.len(),
        bytes as f64 / texts.len() as f64 / 1024.0
    );
    println!("| check | µs per passage | MB/s | flagged |");
    println!("|---|---|---|---|");
    let row = |name: &str, f: &dyn Fn(&str) -> bool| timed(&texts, name, f);
    row(
        "injection, normalised forms only (before session 44)",
        &injection_before,
    );
    row("injection::detect", &|t| injection::detect(t).is_some());
    // The example config's rule and one more, as a caller it covers meets them: each passage
    // field goes through this (`Guardrails::screen_phrases`).
    let mut cfg = GuardrailConfig::default();
    cfg.phrases.push(PhraseRule {
        phrases: vec![
            "home address of".into(),
            "medical record of".into(),
            "Project Falcon".into(),
        ],
        message: String::new(),
        audience: Audience::default(),
    });
    let g = Guardrails::new(cfg, &NoModel)?;
    let caller: std::collections::BTreeSet<String> = ["user:a".to_string()].into();
    row("blocked phrases (3)", &|t| {
        g.blocked_phrase_in(&caller, t).is_some()
    });
    for i in 0..injection::rule_count() {
        row(&format!("injection rule {i}"), &|t| {
            injection::rule_matches_at(i, t)
        });
    }
    row("pii::detect (all entities)", &|t| {
        !pii::detect(t, &pii::Entity::ALL).is_empty()
    });
    for e in pii::Entity::ALL {
        row(&format!("pii::detect ({})", e.name()), &|t| {
            !pii::detect(t, &[e]).is_empty()
        });
    }
    let handbook = std::env::args()
        .skip_while(|a| a != "--handbook")
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/handbook/content")
        });
    let mut paragraphs = Vec::new();
    let mut stack = vec![handbook];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "md")
                && let Ok(text) = std::fs::read_to_string(&p)
            {
                paragraphs.extend(
                    text.split("\n\n")
                        .map(str::trim)
                        .filter(|s| s.len() > 80)
                        .map(String::from),
                );
            }
        }
    }
    paragraphs.sort();
    let marked = paragraphs
        .iter()
        .filter(|p| p.contains(['*', '_', '~', '`']))
        .count();
    println!(
        "\nHandbook: {} paragraphs over 80 bytes, {marked} with emphasis or code marks",
        paragraphs.len()
    );
    println!("| check | µs per paragraph | MB/s | flagged |");
    println!("|---|---|---|---|");
    let row = |name: &str, f: &dyn Fn(&str) -> bool| timed(&paragraphs, name, f);
    row(
        "injection, normalised forms only (before session 44)",
        &injection_before,
    );
    row("injection::detect (with the unmarked readings)", &|t| {
        injection::detect(t).is_some()
    });
    row("pii::detect (all entities)", &|t| {
        !pii::detect(t, &pii::Entity::ALL).is_empty()
    });
    Ok(())
}
