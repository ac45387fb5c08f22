//! Label sets: sorted, cheap to clone, and comparable by the subsets PromQL matches on.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, OnceLock};

/// The label holding the metric name.
pub const METRIC_NAME: &str = "__name__";

/// A series' identity: label pairs sorted by name, shared between the samples of a series.
///
/// Clones share one allocation, which also caches the set's hash and the set without its
/// metric name: a range query clones a selected series' labels at every step, and hashing
/// them or dropping the name then costs nothing after the first step.
#[derive(Clone, Default)]
pub struct Labels(Arc<Inner>);

#[derive(Default)]
struct Inner {
    pairs: Vec<(String, String)>,
    has_name: bool,
    hash: OnceLock<u64>,
    without_name: OnceLock<Labels>,
}

impl Labels {
    fn new(pairs: Vec<(String, String)>) -> Self {
        let has_name = pairs.binary_search_by(|(k, _)| k.as_str().cmp(METRIC_NAME)).is_ok();
        Self(Arc::new(Inner { pairs, has_name, ..Inner::default() }))
    }

    /// Labels from pairs in any order; empty values are dropped (an empty label is no label).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        let mut pairs: Vec<(String, String)> =
            pairs.into_iter().map(|(k, v)| (k.into(), v.into())).filter(|(_, v)| !v.is_empty()).collect();
        pairs.sort();
        pairs.dedup_by(|later, earlier| later.0 == earlier.0);
        Self::new(pairs)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The value of `name`, or "" when absent (PromQL does not tell the two apart).
    pub fn get(&self, name: &str) -> &str {
        let pairs = &self.0.pairs;
        pairs.binary_search_by(|(k, _)| k.as_str().cmp(name)).map(|i| pairs[i].1.as_str()).unwrap_or("")
    }

    pub fn metric_name(&self) -> &str {
        self.get(METRIC_NAME)
    }

    pub fn without_metric_name(&self) -> Self {
        if !self.0.has_name {
            // Not cached: a set holding itself would never be freed.
            return self.clone();
        }
        self.0.without_name.get_or_init(|| self.retain(|name| name != METRIC_NAME)).clone()
    }

    /// A copy with `name` set to `value`, or removed when `value` is empty.
    pub fn with(&self, name: &str, value: &str) -> Self {
        let mut pairs: Vec<(String, String)> = self.0.pairs.iter().filter(|(k, _)| k != name).cloned().collect();
        if !value.is_empty() {
            pairs.push((name.to_owned(), value.to_owned()));
            pairs.sort();
        }
        Self::new(pairs)
    }

    /// A copy keeping only the labels for which `keep(name)` holds.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) -> Self {
        Self::new(self.0.pairs.iter().filter(|(k, _)| keep(k)).cloned().collect())
    }

    /// A key equal for two label sets exactly when they agree on the labels `include` selects.
    /// Names and values end with 0xFF, a byte no UTF-8 string contains.
    pub fn key(&self, include: impl Fn(&str) -> bool) -> Vec<u8> {
        let mut key = Vec::new();
        for (name, value) in self.0.pairs.iter().filter(|(k, _)| include(k)) {
            key.extend_from_slice(name.as_bytes());
            key.push(0xff);
            key.extend_from_slice(value.as_bytes());
            key.push(0xff);
        }
        key
    }

    /// The key of the whole label set.
    pub fn full_key(&self) -> Vec<u8> {
        self.key(|_| true)
    }
}

impl PartialEq for Labels {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.pairs == other.0.pairs
    }
}

impl Eq for Labels {}

impl PartialOrd for Labels {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Labels {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.pairs.cmp(&other.0.pairs)
    }
}

impl Hash for Labels {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let hash = self.0.hash.get_or_init(|| {
            let mut hasher = DefaultHasher::new();
            self.0.pairs.hash(&mut hasher);
            hasher.finish()
        });
        state.write_u64(*hash);
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Prometheus's rendering: `{__name__="up", job="api"}`.
impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (name, value)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name}={value:?}")?;
        }
        f.write_str("}")
    }
}

/// Whether `name` is a label name under Prometheus 3's rules (any non-empty UTF-8).
pub(super) fn is_valid_label_name(name: &str) -> bool {
    !name.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_sorted_and_empty_values_dropped() {
        let labels = Labels::from_pairs([("b", "2"), ("a", "1"), ("c", "")]);
        assert_eq!(labels.to_string(), r#"{a="1", b="2"}"#);
        assert_eq!(labels.get("c"), "");
        assert_eq!(labels.with("a", "").to_string(), r#"{b="2"}"#);
    }

    #[test]
    fn keys_agree_only_on_the_selected_labels() {
        let one = Labels::from_pairs([("job", "api"), ("pod", "1")]);
        let two = Labels::from_pairs([("job", "api"), ("pod", "2")]);
        assert_eq!(one.key(|n| n == "job"), two.key(|n| n == "job"));
        assert_ne!(one.full_key(), two.full_key());
    }
}
