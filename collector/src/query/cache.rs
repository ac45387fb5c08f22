//! A bounded map for values that never change once read.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// A map shared by every query that holds at most `max_bytes` (as its callers estimate
/// them), evicting the oldest entries first. It suits values that never change once read,
/// such as a series' labels or a written file's footer: a miss only costs reading them
/// again.
pub(crate) struct BoundedCache<K, V> {
    max_bytes: usize,
    cached: Mutex<Entries<K, V>>,
}

struct Entries<K, V> {
    values: HashMap<K, (V, usize)>,
    /// Keys from the oldest insertion.
    order: VecDeque<K>,
    bytes: usize,
}

impl<K: Hash + Eq + Clone, V: Clone> BoundedCache<K, V> {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self { max_bytes, cached: Mutex::new(Entries { values: HashMap::new(), order: VecDeque::new(), bytes: 0 }) }
    }

    pub(crate) fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.lock().values.get(key).map(|(value, _)| value.clone())
    }

    /// Keeps `value`, which costs `bytes`, unless it alone is over the bound.
    pub(crate) fn insert(&self, key: K, value: V, bytes: usize) {
        if bytes > self.max_bytes {
            return;
        }
        let mut cached = self.lock();
        let entries = &mut *cached;
        if let Some((_, replaced)) = entries.values.insert(key.clone(), (value, bytes)) {
            entries.bytes -= replaced;
        } else {
            entries.order.push_back(key);
        }
        entries.bytes += bytes;
        while entries.bytes > self.max_bytes {
            let Some(oldest) = entries.order.pop_front() else { break };
            if let Some((_, evicted)) = entries.values.remove(&oldest) {
                entries.bytes -= evicted;
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Entries<K, V>> {
        // The map is consistent between statements, so a panic elsewhere leaves it usable.
        self.cached.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_oldest_entries_and_refuses_what_alone_is_too_big() {
        let cache = BoundedCache::new(10);
        cache.insert("a", 1, 4);
        cache.insert("b", 2, 4);
        cache.insert("c", 3, 11);
        assert_eq!((cache.get("a"), cache.get("b"), cache.get("c")), (Some(1), Some(2), None));
        cache.insert("d", 4, 4);
        assert_eq!((cache.get("a"), cache.get("b"), cache.get("d")), (None, Some(2), Some(4)));
        cache.insert("b", 5, 2);
        cache.insert("e", 6, 4);
        assert_eq!((cache.get("b"), cache.get("d"), cache.get("e")), (Some(5), Some(4), Some(6)));
    }
}
