//! What a passage screen concluded about a text, by the exact text: the same passages come back
//! in answer to many questions, and screening one (prompt injection, PII) costs more than the
//! rest of a BM25 search does with it (benches/RESULTS.md, session 46).
//!
//! Invariants: a value is what the screen computes from the key text alone (the configuration
//! is fixed for the life of the [`super::Guardrails`] that owns the memo, and a reload builds new
//! ones), so a hit returns exactly what computing it again would. Keys are whole texts, compared
//! in full: no hash collision can hand one text another's verdict. The memo is bounded in bytes
//! and drops the least recently used first; texts longer than [`MAX_TEXT`] are not kept.

use std::sync::{Arc, Mutex};

use crate::lru::ByteLru;

/// Texts longer than this are screened every time (a chunk is far shorter).
pub const MAX_TEXT: usize = 16 * 1024;

/// Bytes a memo holds at most, by default.
pub const DEFAULT_BUDGET: usize = 16 * 1024 * 1024;

/// What one entry costs besides its text and value, counted high: the map's bucket with its
/// spare capacity, the order's slot, the shared text's header and the allocator's rounding.
const OVERHEAD: usize = 256;

/// A screen's results by text, least recently used evicted past a byte budget.
pub struct Memo<V> {
    /// Hashed with a per-process random seed (foldhash: a passage is hashed whole at every
    /// lookup, and SipHash cost more than the rest of the lookup).
    inner: Mutex<ByteLru<Arc<str>, V, foldhash::fast::RandomState>>,
    /// The heap bytes a value holds besides the text.
    weight: fn(&V) -> usize,
}

impl<V: Clone> Memo<V> {
    pub fn new(budget: usize, weight: fn(&V) -> usize) -> Self {
        Self {
            inner: Mutex::new(ByteLru::new(budget)),
            weight,
        }
    }

    /// The value for `text`: the one kept, else `compute()` (run outside the lock, so other
    /// screens go on meanwhile), kept.
    pub fn get_or(&self, text: &str, compute: impl FnOnce() -> V) -> V {
        if text.len() > MAX_TEXT {
            return compute();
        }
        if let Some(v) = self.lock().get(text) {
            return v.clone();
        }
        let value = compute();
        let size = text.len() + (self.weight)(&value) + OVERHEAD;
        // Another screen of the same text may have kept it meanwhile: the insert replaces it.
        let mut inner = self.lock();
        if inner.fits(size) {
            inner.insert(Arc::from(text), value.clone(), size);
        }
        value
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ByteLru<Arc<str>, V, foldhash::fast::RandomState>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Texts held (tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Bytes held (tests).
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.lock().bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn memo(budget: usize) -> Memo<Option<String>> {
        Memo::new(budget, |v| v.as_ref().map_or(0, String::len))
    }

    #[test]
    fn a_text_is_screened_once_and_its_value_returned_after() {
        let m = memo(DEFAULT_BUDGET);
        let runs = Cell::new(0);
        let screen = |t: &str| {
            runs.set(runs.get() + 1);
            t.contains("bad").then(|| t.replace("bad", "[X]"))
        };
        for _ in 0..3 {
            assert_eq!(
                m.get_or("a bad text", || screen("a bad text")).as_deref(),
                Some("a [X] text")
            );
            assert_eq!(m.get_or("a good text", || screen("a good text")), None);
        }
        assert_eq!(runs.get(), 2);
        // Texts that differ in one byte are two texts.
        assert_eq!(
            m.get_or("a bad text ", || screen("a bad text ")).as_deref(),
            Some("a [X] text ")
        );
        assert_eq!(runs.get(), 3);
    }

    #[test]
    fn the_least_recently_used_text_goes_past_the_budget() {
        let text = |i: usize| format!("{i:0>100}");
        let one = 100 + OVERHEAD;
        let m = memo(3 * one);
        for i in 0..3 {
            m.get_or(&text(i), || None);
        }
        // 0 is used again: 1 is now the oldest, and goes when 3 comes.
        m.get_or(&text(0), || panic!("kept"));
        m.get_or(&text(3), || None);
        assert_eq!(m.len(), 3);
        assert!(m.bytes() <= 3 * one);
        m.get_or(&text(0), || panic!("0 was used last but one"));
        let again = Cell::new(false);
        m.get_or(&text(1), || {
            again.set(true);
            None
        });
        assert!(again.get(), "1 was evicted");
    }

    #[test]
    fn a_value_larger_than_the_budget_is_returned_and_not_kept() {
        let m = memo(OVERHEAD + 8);
        let v = m.get_or("a text", || Some("a long redacted value".into()));
        assert_eq!(v.as_deref(), Some("a long redacted value"));
        assert_eq!((m.len(), m.bytes()), (0, 0));
    }

    #[test]
    fn texts_over_the_limit_are_screened_every_time() {
        let m = memo(DEFAULT_BUDGET);
        let long = "x".repeat(MAX_TEXT + 1);
        let runs = Cell::new(0);
        for _ in 0..2 {
            m.get_or(&long, || {
                runs.set(runs.get() + 1);
                None
            });
        }
        assert_eq!((runs.get(), m.len()), (2, 0));
    }
}
