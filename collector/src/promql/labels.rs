//! Label sets: sorted, cheap to clone, and comparable by the subsets PromQL matches on.

use std::fmt;
use std::sync::Arc;

/// The label holding the metric name.
pub const METRIC_NAME: &str = "__name__";

/// A series' identity: label pairs sorted by name, shared between the samples of a series.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Arc<Vec<(String, String)>>);

impl Labels {
    /// Labels from pairs in any order; empty values are dropped (an empty label is no label).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        let mut pairs: Vec<(String, String)> =
            pairs.into_iter().map(|(k, v)| (k.into(), v.into())).filter(|(_, v)| !v.is_empty()).collect();
        pairs.sort();
        pairs.dedup_by(|later, earlier| later.0 == earlier.0);
        Self(Arc::new(pairs))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The value of `name`, or "" when absent (PromQL does not tell the two apart).
    pub fn get(&self, name: &str) -> &str {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(name)).map(|i| self.0[i].1.as_str()).unwrap_or("")
    }

    pub fn metric_name(&self) -> &str {
        self.get(METRIC_NAME)
    }

    pub fn without_metric_name(&self) -> Self {
        if self.get(METRIC_NAME).is_empty() {
            return self.clone();
        }
        self.retain(|name| name != METRIC_NAME)
    }

    /// A copy with `name` set to `value`, or removed when `value` is empty.
    pub fn with(&self, name: &str, value: &str) -> Self {
        let mut pairs: Vec<(String, String)> = self.0.iter().filter(|(k, _)| k != name).cloned().collect();
        if !value.is_empty() {
            pairs.push((name.to_owned(), value.to_owned()));
            pairs.sort();
        }
        Self(Arc::new(pairs))
    }

    /// A copy keeping only the labels for which `keep(name)` holds.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) -> Self {
        Self(Arc::new(self.0.iter().filter(|(k, _)| keep(k)).cloned().collect()))
    }

    /// A key equal for two label sets exactly when they agree on the labels `include` selects.
    /// Names and values end with 0xFF, a byte no UTF-8 string contains.
    pub fn key(&self, include: impl Fn(&str) -> bool) -> Vec<u8> {
        let mut key = Vec::new();
        for (name, value) in self.0.iter().filter(|(k, _)| include(k)) {
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
