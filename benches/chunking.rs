//! Chunking one long sentence (no punctuation: the chunker packs words into pieces of at most
//! `max_tokens`) with the real model's tokenizer: the whole chunker as it is, against the word
//! packing of its first version alone (one count of the growing span per word added: quadratic
//! in the words of each piece), on the same words and counter. Prints a table.
//!
//! cargo bench --bench chunking

use std::ops::Range;
use std::path::PathBuf;
use std::time::Instant;

use docent::chunk::{ChunkerConfig, TokenCounter, chunk};
use docent::config::Config;
use docent::embed::{Embedder, FastEmbedder};

/// The first version's packing of `words` (spans of `text`) into units of at most `max` tokens.
fn pack_linearly(text: &str, words: &[Range<usize>], max: usize, c: &dyn TokenCounter) -> usize {
    let (mut units, mut i) = (0, 0);
    while i < words.len() {
        let mut j = i;
        let mut best = None;
        while j < words.len() && c.count(&text[words[i].start..words[j].end]) <= max {
            best = Some(j);
            j += 1;
        }
        i = best.map_or(i + 1, |j| j + 1);
        units += 1;
    }
    units
}

/// Pseudo-random lowercase words (a fixed LCG: every run reads the same text).
fn sentence(bytes: usize) -> String {
    let mut s = String::with_capacity(bytes + 16);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    while s.len() < bytes {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let len = 3 + (x >> 60) as usize % 8;
        for k in 0..len {
            s.push((b'a' + ((x >> (k * 5)) % 26) as u8) as char);
        }
        s.push(' ');
    }
    s
}

fn main() -> anyhow::Result<()> {
    // The example config's model (the default), as the daemon loads it.
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(repo.join("config/docent.example.toml"))?;
    let config =
        Config::parse(&text, &repo.join("config")).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let embedder = FastEmbedder::load(&config.embedding)?;
    let counter = embedder.token_counter();
    let cfg = ChunkerConfig {
        max_tokens: 200,
        overlap_tokens: 32,
    };
    println!("| sentence | chunks | chunker now | first version's word packing |");
    println!("|---|---|---|---|");
    for kib in [16usize, 64, 256, 1024] {
        let s = sentence(kib * 1024);
        let doc = docent::parse::parse(s.as_bytes(), Some("text/plain"), "long.txt")?;
        let t = Instant::now();
        let chunks = chunk(&doc, cfg, counter.as_ref());
        let now = t.elapsed();
        let old = {
            let mut at = 0;
            let words: Vec<Range<usize>> = s
                .split(' ')
                .filter_map(|w| {
                    let r = at..at + w.len();
                    at += w.len() + 1;
                    (!w.is_empty()).then_some(r)
                })
                .collect();
            let t = Instant::now();
            std::hint::black_box(pack_linearly(&s, &words, cfg.max_tokens, counter.as_ref()));
            format!("{:.2} s", t.elapsed().as_secs_f64())
        };
        println!(
            "| {kib} KiB | {} | {:.3} s | {old} |",
            chunks.len(),
            now.as_secs_f64()
        );
    }
    Ok(())
}
