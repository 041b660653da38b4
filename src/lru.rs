//! A map bounded in bytes that drops its least recently used entries first: the one eviction
//! policy behind the scope cache's bitsets ([`crate::index::scope`]) and the guardrails' memos
//! ([`crate::guardrail::memo`]). Not synchronised: each owner holds it under its own lock, and
//! computes what it inserts outside that lock.
//!
//! Invariants: `bytes` is the sum of the sizes of the entries held, and after an insert
//! `bytes ≤ budget`. An entry whose own size passes the budget is not kept.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};

/// Entries by key, least recently used evicted past a byte budget.
///
/// The use order is the `lru` crate's linked list: a lookup moves its entry to the front in
/// O(1) without allocating (session 50: the ordered map of last uses this replaced took two
/// tree operations per lookup, and the guardrails' memos look up some 25 short texts for each
/// hit a Search returns).
pub struct ByteLru<K, V, S = std::hash::RandomState> {
    /// Each value with its size in bytes, as counted by `insert`.
    map: lru::LruCache<K, (V, usize), S>,
    bytes: usize,
    budget: usize,
}

impl<K: Hash + Eq, V, S: BuildHasher + Default> ByteLru<K, V, S> {
    pub fn new(budget: usize) -> Self {
        Self {
            map: lru::LruCache::unbounded_with_hasher(S::default()),
            bytes: 0,
            budget,
        }
    }

    /// The value held for `key`, marked used now.
    pub fn get<Q>(&mut self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get(key).map(|(v, _)| v)
    }

    /// Keeps `value` under `key` (replacing what was held), counted as `size` bytes, then drops
    /// the least recently used entries until the budget holds. Returns whether it was kept: an
    /// entry larger than the whole budget is not.
    pub fn insert(&mut self, key: K, value: V, size: usize) -> bool {
        if !self.fits(size) {
            return false;
        }
        // Unbounded in count: `push` only hands back the entry it replaced.
        if let Some((_, (_, old))) = self.map.push(key, (value, size)) {
            self.bytes -= old;
        }
        self.bytes += size;
        while self.bytes > self.budget {
            let Some((_, (_, evicted))) = self.map.pop_lru() else {
                break;
            };
            self.bytes -= evicted;
        }
        true
    }

    /// Whether an entry of `size` bytes would be kept.
    pub fn fits(&self, size: usize) -> bool {
        size <= self.budget
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes held, as counted by the inserts.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The keys held, in no order.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.map.iter().map(|(k, _)| k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Lru = ByteLru<String, u32>;

    fn get(l: &mut Lru, k: &str) -> Option<u32> {
        l.get(k).copied()
    }

    fn consistent(l: &Lru) {
        assert_eq!(
            l.bytes,
            l.map.iter().map(|(_, (_, size))| size).sum::<usize>()
        );
        assert!(l.bytes <= l.budget);
    }

    #[test]
    fn the_least_recently_used_goes_first() {
        let mut l = Lru::new(30);
        for (i, k) in ["a", "b", "c"].into_iter().enumerate() {
            assert!(l.insert(k.into(), i as u32, 10));
        }
        // a is used again: b is now the oldest, and goes when d comes.
        assert_eq!(get(&mut l, "a"), Some(0));
        assert!(l.insert("d".into(), 3, 10));
        consistent(&l);
        assert_eq!(get(&mut l, "b"), None);
        assert_eq!(
            (get(&mut l, "a"), get(&mut l, "c"), get(&mut l, "d")),
            (Some(0), Some(2), Some(3))
        );
        // Used a, d, c (c after d, though inserted before it): a larger entry evicts as many
        // as it needs, least recently used first.
        get(&mut l, "d");
        get(&mut l, "c");
        assert!(l.insert("e".into(), 4, 20));
        consistent(&l);
        assert_eq!(l.len(), 2);
        assert_eq!((get(&mut l, "a"), get(&mut l, "d")), (None, None));
        assert_eq!((get(&mut l, "c"), get(&mut l, "e")), (Some(2), Some(4)));
    }

    #[test]
    fn a_replaced_entry_counts_once() {
        let mut l = Lru::new(30);
        l.insert("a".into(), 0, 10);
        l.insert("b".into(), 1, 10);
        l.insert("a".into(), 2, 15);
        consistent(&l);
        assert_eq!((l.len(), l.bytes()), (2, 25));
        assert_eq!(get(&mut l, "a"), Some(2));
        // The replaced entry's old use slot is gone: b, not a, is the oldest.
        l.insert("c".into(), 3, 10);
        consistent(&l);
        assert_eq!((get(&mut l, "b"), get(&mut l, "a")), (None, Some(2)));
    }

    #[test]
    fn an_entry_larger_than_the_budget_is_not_kept() {
        let mut l = Lru::new(30);
        l.insert("a".into(), 0, 10);
        assert!(!l.insert("big".into(), 1, 31));
        consistent(&l);
        assert_eq!((l.len(), get(&mut l, "a")), (1, Some(0)));
        // One that is the whole budget is kept, alone.
        assert!(l.insert("all".into(), 2, 30));
        consistent(&l);
        assert_eq!((l.len(), get(&mut l, "all")), (1, Some(2)));
    }
}
