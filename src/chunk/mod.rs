//! Chunking: a parsed document → passages small enough for the embedding model, each with its
//! byte span in the extracted text and the heading path it sits under.
//!
//! Structure first: a heading always starts a new chunk; chunks prefer to end at paragraph
//! boundaries, then at sentence boundaries; only a sentence longer than the budget is split at
//! word boundaries (and a "word" longer than the budget at char boundaries). Consecutive chunks of
//! one section overlap by up to `overlap_tokens` of whole sentences (each counting one token at
//! least, and holding `overlap_tokens` × [`MAX_BYTES_PER_TOKEN`] bytes at most), so the chunks
//! of a text hold little more than it, whatever the tokenizer counts.
//!
//! Invariants (property-tested): every chunk's span lies on char boundaries of the text, chunk
//! text is exactly `text[span]`, chunk starts strictly increase, every non-whitespace byte of
//! every block is in some chunk, and no chunk exceeds `max_tokens` by the counter's measure, nor
//! `max_tokens` × [`MAX_BYTES_PER_TOKEN`] bytes (but a single character).

use std::ops::Range;

use unicode_segmentation::UnicodeSegmentation;

use crate::parse::{BlockKind, ParsedDoc};

/// Counts model tokens in a string (without special tokens).
pub trait TokenCounter: Send + Sync {
    fn count(&self, s: &str) -> usize;
}

/// Whitespace words; for tests and as a cheap approximation.
pub struct WordCounter;

impl TokenCounter for WordCounter {
    fn count(&self, s: &str) -> usize {
        s.split_whitespace().count()
    }
}

/// The most bytes a chunk may hold per token of its budget. A tokenizer reads a long run
/// without spaces (a hash, a DNA sequence, base64) as one unknown token, so a token budget
/// alone let one chunk hold megabytes: more than the Milvus backend stores, the model reads,
/// or a citation should show (found by a review). Prose runs at 3–6 bytes per token.
pub const MAX_BYTES_PER_TOKEN: usize = 16;

/// The most bytes of a chunk whose budget is `max` tokens.
fn max_bytes(max: usize) -> usize {
    max.saturating_mul(MAX_BYTES_PER_TOKEN)
}

#[derive(Debug, Clone, Copy)]
pub struct ChunkerConfig {
    pub max_tokens: usize,
    pub overlap_tokens: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub ord: u32,
    pub span: Range<usize>,
    pub heading_path: Vec<String>,
    /// The page the chunk is on (chunks never span pages).
    pub page: Option<u32>,
}

/// A sentence-or-smaller unit: span, tokens, index of its block.
#[derive(Debug, Clone)]
struct Unit {
    span: Range<usize>,
    tokens: usize,
    block: usize,
}

pub fn chunk(doc: &ParsedDoc, cfg: ChunkerConfig, counter: &dyn TokenCounter) -> Vec<Chunk> {
    let max = cfg.max_tokens.max(1);
    let mut out = Vec::new();
    let mut section_start = 0;
    for i in 1..=doc.blocks.len() {
        // Sections end at headings and page breaks, so a chunk cites one page.
        let boundary = i == doc.blocks.len()
            || matches!(doc.blocks[i].kind, BlockKind::Heading(_))
            || doc.blocks[i].page != doc.blocks[i - 1].page;
        if boundary {
            chunk_section(
                doc,
                section_start..i,
                max,
                cfg.overlap_tokens,
                counter,
                &mut out,
            );
            section_start = i;
        }
    }
    for (i, c) in out.iter_mut().enumerate() {
        c.ord = i as u32;
    }
    out
}

fn chunk_section(
    doc: &ParsedDoc,
    blocks: Range<usize>,
    max: usize,
    overlap: usize,
    counter: &dyn TokenCounter,
    out: &mut Vec<Chunk>,
) {
    let Some(first) = doc.blocks.get(blocks.start) else {
        return;
    };
    let page = first.page;
    let mut heading_path = first.heading_path.clone();
    if matches!(first.kind, BlockKind::Heading(_)) {
        let mut heading = crate::parse::collapse_ws(&doc.text[first.span.clone()]);
        crate::parse::cap_heading(&mut heading);
        heading_path.push(heading);
    }
    let mut block_tokens = Vec::new();
    let mut units = Vec::new();
    for bi in blocks.clone() {
        let span = doc.blocks[bi].span.clone();
        let before = units.len();
        split_to_fit(&doc.text, span, max, counter, bi, &mut units);
        block_tokens.push(
            units[before..]
                .iter()
                .map(|u: &Unit| u.tokens)
                .sum::<usize>(),
        );
    }

    let mut cur: Vec<Unit> = Vec::new();
    let mut cur_tokens = 0;
    // Whether `cur` holds something beyond the overlap carried in.
    let mut has_new = false;
    for u in units {
        let starts_block = cur.last().is_none_or(|l| l.block != u.block);
        let whole_block = block_tokens[u.block - blocks.start];
        let overflow = cur_tokens + u.tokens > max
            || cur
                .first()
                .is_some_and(|f| u.span.end - f.span.start > max_bytes(max));
        // Prefer ending at a paragraph boundary once the chunk is reasonably full.
        let early = starts_block && cur_tokens + whole_block > max && cur_tokens * 2 >= max;
        if has_new && (overflow || early) {
            out.push(make_chunk(&cur, &heading_path, page));
            // Carry whole trailing sentences of this block as overlap: at most `overlap`
            // tokens, each unit counting one at least, and the bytes of as many. (A review:
            // units a tokenizer counts as nothing, control characters it drops, never filled
            // the overlap, so each chunk carried almost a whole chunk back and added one
            // unit: a 5 MB file of "\x01\n" made 2.6 million chunks of 3 KB.)
            let mut carried = Vec::new();
            let mut t = 0;
            let mut counted = 0;
            let end = cur.last().map_or(u.span.start, |l| l.span.end);
            for prev in cur.iter().rev() {
                if counted + prev.tokens.max(1) > overlap
                    || end - prev.span.start > max_bytes(overlap)
                    || prev.block != u.block
                    || t + prev.tokens + u.tokens > max
                    || u.span.end - prev.span.start > max_bytes(max)
                {
                    break;
                }
                t += prev.tokens;
                counted += prev.tokens.max(1);
                carried.push(prev.clone());
            }
            carried.reverse();
            cur = carried;
            cur_tokens = t;
        }
        cur_tokens += u.tokens;
        cur.push(u);
        has_new = true;
    }
    if has_new {
        out.push(make_chunk(&cur, &heading_path, page));
    }
}

fn make_chunk(units: &[Unit], heading_path: &[String], page: Option<u32>) -> Chunk {
    Chunk {
        ord: 0,
        span: units[0].span.start..units[units.len() - 1].span.end,
        heading_path: heading_path.to_vec(),
        page,
    }
}

/// Splits `span` into units of at most `max` tokens: sentences, then words, then char halves.
fn split_to_fit(
    text: &str,
    span: Range<usize>,
    max: usize,
    counter: &dyn TokenCounter,
    block: usize,
    out: &mut Vec<Unit>,
) {
    let s = &text[span.clone()];
    // Bytes first: a span too long for any chunk is not tokenized whole (a review: a 5 MB
    // paragraph was encoded at every level of the split).
    let tokens = match s.len() <= max_bytes(max) {
        true => counter.count(s),
        false => usize::MAX,
    };
    if tokens <= max {
        if !s.trim().is_empty() {
            out.push(Unit {
                span,
                tokens,
                block,
            });
        }
        return;
    }
    let pieces: Vec<Range<usize>> = {
        let sentences = trimmed_pieces(s.split_sentence_bound_indices());
        if sentences.len() > 1 {
            sentences
        } else {
            let words = trimmed_pieces(
                s.split_word_bound_indices()
                    .filter(|(_, w)| !w.trim().is_empty()),
            );
            if words.len() > 1 {
                return pack_words(text, span.start, &words, max, counter, block, out);
            }
            let half = s.len() / 2;
            let mid = (half.max(1)..s.len())
                .find(|&m| s.is_char_boundary(m))
                .or_else(|| (1..half).rev().find(|&m| s.is_char_boundary(m)));
            let Some(mid) = mid else {
                // A single char over budget: nothing smaller exists.
                out.push(Unit {
                    span,
                    tokens: counter.count(s),
                    block,
                });
                return;
            };
            vec![0..mid, mid..s.len()]
        }
    };
    for p in pieces {
        split_to_fit(
            text,
            span.start + p.start..span.start + p.end,
            max,
            counter,
            block,
            out,
        );
    }
}

/// Greedily packs word pieces (relative to `base`) into units of at most `max` tokens.
fn pack_words(
    text: &str,
    base: usize,
    words: &[Range<usize>],
    max: usize,
    counter: &dyn TokenCounter,
    block: usize,
    out: &mut Vec<Unit>,
) {
    // Values the PII detectors read (an IBAN, a card number), relative to `base`: a cut through
    // one leaves two halves that no detector reads, each redacted alone and both shown (session
    // 43's review: a long unpunctuated line of a table or a log, cut mid-IBAN). The cut moves
    // before such a value instead.
    let pii: Vec<Range<usize>> = match (words.first(), words.last()) {
        (Some(first), Some(last)) => {
            let at = first.start;
            crate::guardrail::pii::detect(
                &text[base + at..base + last.end],
                &crate::guardrail::pii::Entity::ALL,
            )
            .into_iter()
            .map(|f| f.range.start + at..f.range.end + at)
            .collect()
        }
        _ => Vec::new(),
    };
    let mut i = 0;
    while i < words.len() {
        let start = words[i].start;
        // The tokens of words i..=j, when they fit. A span's count only grows with j, so the
        // longest fitting run is found by doubling, then halving: O(log n) counts of at most
        // `max` tokens each, not one count per word (quadratic in a sentence's length; a hostile
        // sentence of megabytes held the pipeline for minutes).
        let fits = |j: usize| {
            let span = base + start..base + words[j].end;
            if span.len() > max_bytes(max) {
                return None;
            }
            let t = counter.count(&text[span.clone()]);
            (t <= max).then_some((j, span, t))
        };
        let mut best = fits(i);
        if let Some((mut lo, ..)) = best {
            let mut hi = words.len();
            let mut step = 1;
            while lo + step < hi {
                match fits(lo + step) {
                    Some(b) => {
                        lo = b.0;
                        best = Some(b);
                        step *= 2;
                    }
                    None => hi = lo + step,
                }
            }
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                match fits(mid) {
                    Some(b) => {
                        lo = mid;
                        best = Some(b);
                    }
                    None => hi = mid,
                }
            }
        }
        // A cut inside a PII value moves before it, when a word ends there.
        if let Some((j, ..)) = best
            && j + 1 < words.len()
            && let Some(v) = pii
                .iter()
                .find(|v| v.start < words[j].end && words[j].end < v.end)
            && let Some(k) = (i..j).rev().find(|&k| words[k].end <= v.start)
        {
            let span = base + start..base + words[k].end;
            best = Some((k, span.clone(), counter.count(&text[span])));
        }
        match best {
            Some((j, span, tokens)) => {
                out.push(Unit {
                    span,
                    tokens,
                    block,
                });
                i = j + 1;
            }
            None => {
                // One word over budget: split it by chars.
                split_to_fit(
                    text,
                    base + words[i].start..base + words[i].end,
                    max,
                    counter,
                    block,
                    out,
                );
                i += 1;
            }
        }
    }
}

fn trimmed_pieces<'a>(pieces: impl Iterator<Item = (usize, &'a str)>) -> Vec<Range<usize>> {
    pieces
        .filter_map(|(i, p)| {
            let lead = p.len() - p.trim_start().len();
            let t = p.trim();
            (!t.is_empty()).then(|| i + lead..i + lead + t.len())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{Block, parse};
    use proptest::prelude::*;

    fn cfg(max: usize, overlap: usize) -> ChunkerConfig {
        ChunkerConfig {
            max_tokens: max,
            overlap_tokens: overlap,
        }
    }

    fn check_invariants(doc: &ParsedDoc, chunks: &[Chunk], max: usize) {
        let mut prev_start = None;
        for c in chunks {
            assert!(c.span.start < c.span.end);
            assert!(c.span.end <= doc.text.len());
            assert!(
                doc.text.is_char_boundary(c.span.start) && doc.text.is_char_boundary(c.span.end)
            );
            if let Some(p) = prev_start {
                assert!(c.span.start > p, "starts must increase");
            }
            prev_start = Some(c.span.start);
            let t = &doc.text[c.span.clone()];
            // Only a single unsplittable char may exceed the budget, in tokens or bytes.
            assert!(
                WordCounter.count(t) <= max || t.chars().count() == 1,
                "chunk over budget: {t:?}"
            );
            assert!(
                t.len() <= max_bytes(max) || t.chars().count() == 1,
                "chunk over its bytes: {t:?}"
            );
        }
        for b in &doc.blocks {
            for (i, ch) in doc.text[b.span.clone()].char_indices() {
                if ch.is_whitespace() {
                    continue;
                }
                let at = b.span.start + i;
                assert!(
                    chunks.iter().any(|c| c.span.contains(&at)),
                    "byte {at} uncovered"
                );
            }
        }
    }

    #[test]
    fn headings_start_chunks_and_carry_paths() {
        let doc = parse(
            b"# Leave\n\nYou get 25 days.\n\n## Parental\n\nSixteen weeks paid.\n",
            None,
            "a.md",
        )
        .unwrap();
        let chunks = chunk(&doc, cfg(100, 10), &WordCounter);
        let texts: Vec<&str> = chunks.iter().map(|c| &doc.text[c.span.clone()]).collect();
        assert_eq!(
            texts,
            [
                "Leave\n\nYou get 25 days.",
                "Parental\n\nSixteen weeks paid."
            ]
        );
        assert_eq!(chunks[1].heading_path, ["Leave", "Parental"]);
        assert_eq!(chunks[1].ord, 1);
    }

    #[test]
    fn long_paragraphs_split_at_sentences_with_overlap() {
        let para = "One two three four. Five six seven eight. Nine ten eleven twelve. Thirteen fourteen fifteen sixteen.";
        let doc = parse(para.as_bytes(), None, "a.txt").unwrap();
        let chunks = chunk(&doc, cfg(8, 4), &WordCounter);
        let texts: Vec<&str> = chunks.iter().map(|c| &doc.text[c.span.clone()]).collect();
        assert_eq!(
            texts,
            [
                "One two three four. Five six seven eight.",
                "Five six seven eight. Nine ten eleven twelve.",
                "Nine ten eleven twelve. Thirteen fourteen fifteen sixteen."
            ]
        );
        check_invariants(&doc, &chunks, 8);
    }

    #[test]
    fn giant_word_is_split_by_chars() {
        let doc = ParsedDoc {
            title: String::new(),
            text: "x".repeat(50),
            blocks: vec![Block {
                kind: BlockKind::Paragraph,
                span: 0..50,
                heading_path: vec![],
                page: None,
            }],
        };
        struct Chars;
        impl TokenCounter for Chars {
            fn count(&self, s: &str) -> usize {
                s.chars().count()
            }
        }
        let chunks = chunk(&doc, cfg(16, 0), &Chars);
        assert!(chunks.iter().all(|c| c.span.len() <= 16));
        assert_eq!(chunks.iter().map(|c| c.span.len()).sum::<usize>(), 50);
    }

    /// Session 43's review: a sentence longer than a chunk was cut at any word, an IBAN's
    /// groups included, and neither half read as one to the PII redaction.
    #[test]
    fn a_long_sentence_is_not_cut_inside_a_pii_value() {
        let iban = "DE89 3704 0044 0532 0130 00";
        let filler = |n: usize| vec!["word"; n].join(" ");
        // 198 words, then the IBAN's six groups: a cut at 200 words falls after "3704".
        let src = format!("{} {iban} {}.\n", filler(198), filler(150));
        let doc = parse(src.as_bytes(), None, "a.txt").unwrap();
        let chunks = chunk(&doc, cfg(200, 32), &WordCounter);
        check_invariants(&doc, &chunks, 200);
        let texts: Vec<&str> = chunks.iter().map(|c| &doc.text[c.span.clone()]).collect();
        assert!(texts.iter().any(|t| t.contains(iban)), "{:?}", texts.len());
        for t in &texts {
            assert!(
                t.contains(iban) || !t.contains("3704"),
                "a chunk holds part of the IBAN: …{}",
                &t[t.len().saturating_sub(40)..]
            );
        }
    }

    /// The word packer's first version: one count per word added (the search above must give
    /// the same units).
    fn pack_words_linearly(
        text: &str,
        words: &[Range<usize>],
        max: usize,
        counter: &dyn TokenCounter,
    ) -> Vec<Range<usize>> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < words.len() {
            let mut j = i;
            let mut best = None;
            while j < words.len() && counter.count(&text[words[i].start..words[j].end]) <= max {
                best = Some(j);
                j += 1;
            }
            match best {
                Some(j) => {
                    out.push(words[i].start..words[j].end);
                    i = j + 1;
                }
                None => i += 1,
            }
        }
        out
    }

    /// A word of n letters counts as n/3 tokens, rounded up (words over budget occur).
    struct PieceCounter;

    impl TokenCounter for PieceCounter {
        fn count(&self, s: &str) -> usize {
            s.split_whitespace().map(|w| w.len().div_ceil(3)).sum()
        }
    }

    /// A run without spaces counts as one token to a tokenizer; it is still cut to the bytes a
    /// chunk may hold (found by a review: a 3 MB hash was one chunk).
    #[test]
    fn a_long_run_without_spaces_is_cut_to_the_bytes_a_chunk_may_hold() {
        let src = format!("# Sequence\n\n{}\n\nEnd of file.\n", "acgt".repeat(1 << 18));
        let doc = parse(src.as_bytes(), None, "a.md").unwrap();
        let chunks = chunk(&doc, cfg(200, 32), &WordCounter);
        check_invariants(&doc, &chunks, 200);
        assert!(
            chunks.len() >= (1 << 20) / max_bytes(200),
            "{}",
            chunks.len()
        );
    }

    /// A tokenizer that drops what it reads (BERT's normalizer drops control characters).
    struct NothingCounter;

    impl TokenCounter for NothingCounter {
        fn count(&self, _: &str) -> usize {
            0
        }
    }

    /// A tokenizer that reads anything as one unknown token at most (each line a run).
    struct RunCounter;

    impl TokenCounter for RunCounter {
        fn count(&self, s: &str) -> usize {
            s.split_whitespace().count().min(1)
        }
    }

    fn chunk_bytes(chunks: &[Chunk]) -> usize {
        chunks.iter().map(|c| c.span.len()).sum()
    }

    /// Found by a review: a tiny file of units the tokenizer counts as nothing made chunks of
    /// almost the whole byte budget, one per unit (a 5 MB file: 2.6 million chunks, 20 GB).
    #[test]
    fn units_counted_as_nothing_do_not_multiply_the_text() {
        let src = "\u{1}\n".repeat(50_000);
        let doc = parse(src.as_bytes(), None, "a.txt").unwrap();
        for counter in [&NothingCounter as &dyn TokenCounter, &RunCounter] {
            let chunks = chunk(&doc, cfg(200, 32), counter);
            assert!(
                chunk_bytes(&chunks) <= doc.text.len() * 5 / 4 + max_bytes(200),
                "{} bytes of chunks from {} of text",
                chunk_bytes(&chunks),
                doc.text.len()
            );
        }
        // Lines of one long word (one unknown token each): the same.
        let src = format!("{}\n", "x".repeat(120)).repeat(2_000);
        let doc = parse(src.as_bytes(), None, "a.txt").unwrap();
        let chunks = chunk(&doc, cfg(200, 32), &RunCounter);
        assert!(chunk_bytes(&chunks) <= doc.text.len() * 5 / 4 + max_bytes(200));
    }

    /// A text far longer than a chunk is never tokenized whole: what the counter is given
    /// stays within a few chunks' bytes (found by a review: a 5 MB paragraph was encoded
    /// whole at each level of the split, and a 5 MB word about ten times).
    #[test]
    fn long_spans_are_cut_by_bytes_before_they_are_counted() {
        struct Longest(std::sync::atomic::AtomicUsize);
        impl TokenCounter for Longest {
            fn count(&self, text: &str) -> usize {
                self.0
                    .fetch_max(text.len(), std::sync::atomic::Ordering::Relaxed);
                text.split_whitespace().count().max(text.len() / 8)
            }
        }
        for src in [
            "word ".repeat(400_000),
            format!("{}.", "x".repeat(2_000_000)),
        ] {
            let doc = parse(src.as_bytes(), None, "a.txt").unwrap();
            let counter = Longest(std::sync::atomic::AtomicUsize::new(0));
            let chunks = chunk(&doc, cfg(200, 32), &counter);
            assert!(!chunks.is_empty());
            let longest = counter.0.load(std::sync::atomic::Ordering::Relaxed);
            assert!(
                longest <= 2 * max_bytes(200),
                "{longest} bytes counted at once"
            );
        }
    }

    proptest! {
        /// The chunks of a text hold little more than it, whatever the tokenizer counts.
        #[test]
        fn chunks_hold_little_more_than_the_text(
            lines in prop::collection::vec("[a-z\u{1}]{0,40}[.]?", 1..400),
            counter in 0usize..3,
            max in 1usize..200, half in 0usize..=50,
        ) {
            // (An overlap near the budget multiplies the text by design: at most half here.)
            let overlap = max * half / 100;
            let src = lines.join("\n");
            let counter: &dyn TokenCounter = match counter {
                0 => &WordCounter,
                1 => &NothingCounter,
                _ => &RunCounter,
            };
            if let Ok(doc) = parse(src.as_bytes(), None, "a.txt") {
                let chunks = chunk(&doc, cfg(max, overlap), counter);
                // One new unit per chunk at least, next to at most the overlap's bytes.
                let bound = doc.text.len() + chunks.len() * max_bytes(overlap);
                prop_assert!(chunk_bytes(&chunks) <= bound);
                prop_assert!(chunk_bytes(&chunks) <= doc.text.len() * 3 + max_bytes(max));
            }
        }

        #[test]
        fn words_are_packed_as_by_counting_each_one(
            words in prop::collection::vec("[a-z]{1,30}", 1..80),
            max in 1usize..20,
        ) {
            let text = words.join(" ");
            let spans = trimmed_pieces(text.split_inclusive(' ').scan(0, |at, w| {
                let i = *at;
                *at += w.len();
                Some((i, w))
            }));
            let mut units = Vec::new();
            pack_words(&text, 0, &spans, max, &PieceCounter, 0, &mut units);
            // Words over budget are split by characters; the rest must match.
            let packed: Vec<Range<usize>> = units
                .iter()
                .map(|u| u.span.clone())
                .filter(|s| spans.iter().any(|w| w.start == s.start))
                .filter(|s| spans.iter().any(|w| w.end == s.end))
                .collect();
            prop_assert_eq!(packed, pack_words_linearly(&text, &spans, max, &PieceCounter));
        }

        #[test]
        fn span_invariants_hold(
            paras in prop::collection::vec(
                prop::collection::vec("[a-zA-Zé ]{1,12}[.!?]? ?", 1..30), 1..12),
            headings in prop::collection::vec(any::<bool>(), 12),
            max in 3usize..40, overlap in 0usize..10,
        ) {
            let mut src = String::new();
            for (i, p) in paras.iter().enumerate() {
                if headings[i] { src.push_str("## Head "); src.push_str(&i.to_string()); src.push_str("\n\n"); }
                src.push_str(&p.concat());
                src.push_str("\n\n");
            }
            if let Ok(doc) = parse(src.as_bytes(), None, "a.md") {
                let chunks = chunk(&doc, cfg(max, overlap), &WordCounter);
                check_invariants(&doc, &chunks, max);
            }
        }
    }
}
