//! A bounded map whose entries expire: event ids seen (Slack redelivers on timeouts), users
//! mapped, thread conversations, pending private questions. Bounded so a flood of events cannot
//! grow memory; the oldest entry goes first.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

pub struct TtlMap<K, V> {
    ttl: Duration,
    cap: usize,
    map: HashMap<K, (V, Instant)>,
    /// Insertion order, for eviction (may hold keys already replaced or removed).
    order: VecDeque<(K, Instant)>,
}

impl<K: Hash + Eq + Clone, V: Clone> TtlMap<K, V> {
    pub fn new(ttl: Duration, cap: usize) -> Self {
        Self {
            ttl,
            cap: cap.max(1),
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn get(&mut self, k: &K, now: Instant) -> Option<V> {
        match self.map.get(k) {
            Some((v, at)) if now.duration_since(*at) < self.ttl => Some(v.clone()),
            Some(_) => {
                self.map.remove(k);
                None
            }
            None => None,
        }
    }

    pub fn insert(&mut self, k: K, v: V, now: Instant) {
        self.expire(now);
        while self.map.len() >= self.cap {
            let Some((old, at)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&old).is_some_and(|(_, t)| *t == at) {
                self.map.remove(&old);
            }
        }
        self.order.push_back((k.clone(), now));
        self.map.insert(k, (v, now));
    }

    pub fn remove(&mut self, k: &K) {
        self.map.remove(k);
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
    }

    /// Inserts unless a live entry exists; true when inserted (the first sighting).
    pub fn first_sighting(&mut self, k: K, v: V, now: Instant) -> bool {
        if self.get(&k, now).is_some() {
            return false;
        }
        self.insert(k, v, now);
        true
    }

    fn expire(&mut self, now: Instant) {
        while let Some((k, at)) = self.order.front() {
            if now.duration_since(*at) < self.ttl {
                break;
            }
            if self.map.get(k).is_some_and(|(_, t)| t == at) {
                self.map.remove(k);
            }
            self.order.pop_front();
        }
        // Replaced keys leave stale order entries; keep the queue bounded too.
        if self.order.len() > self.cap * 2 {
            let map = &self.map;
            self.order
                .retain(|(k, at)| map.get(k).is_some_and(|(_, t)| t == at));
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_the_oldest_goes_first_when_full() {
        let t0 = Instant::now();
        let mut m = TtlMap::new(Duration::from_secs(10), 2);
        assert!(m.first_sighting("a", (), t0));
        assert!(!m.first_sighting("a", (), t0 + Duration::from_secs(1)));
        m.insert("b", (), t0 + Duration::from_secs(2));
        m.insert("c", (), t0 + Duration::from_secs(3));
        assert_eq!(m.len(), 2);
        let t = t0 + Duration::from_secs(4);
        assert!(m.get(&"a", t).is_none() && m.get(&"b", t).is_some());
        assert!(m.get(&"c", t0 + Duration::from_secs(13)).is_none());
        assert!(m.first_sighting("b", (), t0 + Duration::from_secs(12)));
    }
}
