//! Where the engine reads samples from, and an in-memory implementation of it.

use std::collections::BTreeMap;
use std::future::Future;

use promql_parser::label::Matcher;

use super::{Labels, Millis, Result};

/// The series a selector asks for, in the time span the query can reach.
#[derive(Debug, Clone, Copy)]
pub struct Selection<'a> {
    pub matchers: &'a [Matcher],
    /// Alternative matcher sets (`{a="1" or b="2"}`); a series matches any one of them.
    pub or_matchers: &'a [Vec<Matcher>],
    /// Inclusive bounds; the engine applies PromQL's left-open windows itself.
    pub start: Millis,
    pub end: Millis,
}

impl<'a> Selection<'a> {
    /// Whether a series with these labels is selected (time aside).
    pub fn matches(&self, labels: &Labels) -> bool {
        let all = |set: &[Matcher]| set.iter().all(|m| m.is_match(labels.get(&m.name)));
        all(self.matchers) && (self.or_matchers.is_empty() || self.or_matchers.iter().any(|set| all(set)))
    }
}

/// A selected series and its samples in time order, staleness markers included.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSeries {
    pub labels: Labels,
    pub samples: Vec<(Millis, f64)>,
}

/// A source of float samples: the embedded store, or memory for tests and `promqltest`.
pub trait SeriesSource: Sync {
    fn select(&self, selection: Selection<'_>) -> impl Future<Output = Result<Vec<StoredSeries>>> + Send;
}

/// Series kept in memory, keyed by their labels.
#[derive(Debug, Default, Clone)]
pub struct MemoryStorage {
    series: BTreeMap<Labels, Vec<(Millis, f64)>>,
}

impl MemoryStorage {
    /// Adds a sample; samples of one series must arrive in time order, a repeated time replaces.
    pub fn push(&mut self, labels: &Labels, at: Millis, value: f64) {
        let samples = self.series.entry(labels.clone()).or_default();
        match samples.last_mut() {
            Some(last) if last.0 == at => last.1 = value,
            _ => samples.push((at, value)),
        }
    }

    pub fn clear(&mut self) {
        self.series.clear();
    }
}

impl SeriesSource for MemoryStorage {
    async fn select(&self, selection: Selection<'_>) -> Result<Vec<StoredSeries>> {
        Ok(self
            .series
            .iter()
            .filter(|(labels, _)| selection.matches(labels))
            .filter_map(|(labels, samples)| {
                let from = samples.partition_point(|(t, _)| *t < selection.start);
                let to = samples.partition_point(|(t, _)| *t <= selection.end);
                (from < to).then(|| StoredSeries { labels: labels.clone(), samples: samples[from..to].to_vec() })
            })
            .collect())
    }
}
