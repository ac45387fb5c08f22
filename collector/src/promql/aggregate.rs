//! Aggregation operators: `sum`, `avg`, `count`, `min`, `max`, `group`, `stddev`,
//! `stdvar`, `quantile`, `count_values`, `topk`, `bottomk`, `limitk` and `limit_ratio`.

use std::collections::HashMap;

use promql_parser::parser::token::*;
use promql_parser::parser::{AggregateExpr, LabelModifier};

use super::engine::{Evaluator, Val};
use super::functions::{kahan_add, nan_last, quantile};
use super::{format_value, Labels, Millis, QueryError, Result, Sample, METRIC_NAME};

pub(super) fn eval(ev: &Evaluator, agg: &AggregateExpr, t: Millis) -> Result<Val> {
    let op = agg.op.id();
    let param = agg.param.as_deref().map(|param| ev.eval(param, t)).transpose()?;
    let samples = ev.eval_vector(&agg.expr, t)?;
    let grouping = Grouping::new(agg.modifier.as_ref());

    if op == T_COUNT_VALUES {
        let Some(Val::String(label)) = param else { unreachable!("the parser gives count_values a string") };
        return Ok(Val::Vector(count_values(&label, samples, &grouping)?));
    }
    let param = match param {
        Some(Val::Scalar(value)) => Some(value),
        _ => None,
    };
    if matches!(op, T_TOPK | T_BOTTOMK | T_LIMITK) {
        let k = checked_k(param.unwrap_or(f64::NAN))?;
        return Ok(Val::Vector(select_k(op, k, samples, &grouping)));
    }
    if op == T_LIMIT_RATIO {
        return Ok(Val::Vector(limit_ratio(param.unwrap_or(f64::NAN), samples)?));
    }

    let mut groups: Vec<(Labels, Vec<f64>)> = Vec::new();
    let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
    for sample in samples {
        let at = *index.entry(grouping.key(&sample.labels)).or_insert_with(|| {
            groups.push((grouping.labels(&sample.labels), Vec::new()));
            groups.len() - 1
        });
        groups[at].1.push(sample.value);
    }
    let out = groups
        .into_iter()
        .map(|(labels, values)| {
            let value = match op {
                T_SUM => sum(&values),
                T_AVG => mean(&values),
                T_COUNT => values.len() as f64,
                T_GROUP => 1.0,
                T_MIN => values.iter().copied().reduce(|min, v| if v < min || min.is_nan() { v } else { min }).unwrap_or(f64::NAN),
                T_MAX => values.iter().copied().reduce(|max, v| if v > max || max.is_nan() { v } else { max }).unwrap_or(f64::NAN),
                T_STDDEV => variance(&values).sqrt(),
                T_STDVAR => variance(&values),
                T_QUANTILE => quantile(param.unwrap_or(f64::NAN), values),
                _ => unreachable!("aggregation operator {}", agg.op),
            };
            Sample { labels, value, timestamp: t }
        })
        .collect();
    Ok(Val::Vector(out))
}

/// The labels that form the groups: those of `by(...)`, or all but those of `without(...)`
/// and the metric name; with neither, one group.
struct Grouping<'a> {
    by: Option<&'a [String]>,
    without: &'a [String],
}

impl<'a> Grouping<'a> {
    fn new(modifier: Option<&'a LabelModifier>) -> Self {
        match modifier {
            Some(LabelModifier::Include(labels)) => Self { by: Some(&labels.labels), without: &[] },
            Some(LabelModifier::Exclude(labels)) => Self { by: None, without: &labels.labels },
            None => Self { by: Some(&[]), without: &[] },
        }
    }

    fn keeps(&self, name: &str) -> bool {
        match self.by {
            Some(by) => by.iter().any(|l| l == name),
            None => name != METRIC_NAME && !self.without.iter().any(|l| l == name),
        }
    }

    fn key(&self, labels: &Labels) -> Vec<u8> {
        labels.key(|name| self.keeps(name))
    }

    fn labels(&self, labels: &Labels) -> Labels {
        labels.retain(|name| self.keeps(name))
    }
}

/// Kahan–Neumaier compensated sum.
fn sum(values: &[f64]) -> f64 {
    let (sum, compensation) = values.iter().fold((0.0, 0.0), |(sum, c), v| kahan_add(*v, sum, c));
    sum + compensation
}

/// The mean as Prometheus computes it: a compensated sum divided by the count, switching
/// to an incremental mean if the sum would overflow.
pub(super) fn mean(values: &[f64]) -> f64 {
    let Some((&first, rest)) = values.split_first() else { return f64::NAN };
    let (mut sum, mut c) = (first, 0.0);
    let mut incremental: Option<(f64, f64)> = None;
    for (i, &value) in rest.iter().enumerate() {
        let count = (i + 2) as f64;
        let (mean, mean_c) = match incremental {
            Some(mean) => mean,
            None => {
                let (next, next_c) = kahan_add(value, sum, c);
                if !next.is_infinite() {
                    (sum, c) = (next, next_c);
                    continue;
                }
                (sum / (count - 1.0), c / (count - 1.0))
            }
        };
        // An infinite mean stays as it is unless an infinity of the other sign or a NaN arrives.
        let keeps_infinity = mean.is_infinite() && (value.is_finite() || (value.is_infinite() && (mean > 0.0) == (value > 0.0)));
        incremental = Some(if keeps_infinity {
            (mean, mean_c)
        } else {
            let q = (count - 1.0) / count;
            kahan_add(value / count, q * mean, q * mean_c)
        });
    }
    match incremental {
        Some((mean, c)) => mean + c,
        None => sum / values.len() as f64 + c / values.len() as f64,
    }
}

/// Population variance by Welford's method.
fn variance(values: &[f64]) -> f64 {
    let (mut mean, mut aux) = (0.0, 0.0);
    for (i, value) in values.iter().enumerate() {
        let delta = value - mean;
        mean += delta / (i + 1) as f64;
        aux += delta * (value - mean);
    }
    aux / values.len() as f64
}

fn checked_k(k: f64) -> Result<i64> {
    if k.is_nan() {
        return Err(QueryError::execution("Parameter value is NaN"));
    }
    if k >= i64::MAX as f64 || k <= i64::MIN as f64 {
        return Err(QueryError::execution(format!("Scalar value {k} overflows int64")));
    }
    Ok(k as i64)
}

/// `topk`, `bottomk` (the k largest or smallest per group, NaN last) and `limitk` (the
/// first k per group). Each result keeps its series' labels.
fn select_k(op: u16, k: i64, samples: Vec<Sample>, grouping: &Grouping<'_>) -> Vec<Sample> {
    if k < 1 {
        return Vec::new();
    }
    let mut groups: Vec<Vec<Sample>> = Vec::new();
    let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
    for sample in samples {
        let at = *index.entry(grouping.key(&sample.labels)).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[at].push(sample);
    }
    let k = usize::try_from(k).unwrap_or(usize::MAX);
    groups
        .into_iter()
        .flat_map(|mut group| {
            match op {
                T_TOPK => group.sort_by(|a, b| nan_last(a.value, b.value, true)),
                T_BOTTOMK => group.sort_by(|a, b| nan_last(a.value, b.value, false)),
                _ => group.sort_by(|a, b| a.labels.cmp(&b.labels)),
            }
            group.truncate(k);
            group
        })
        .collect()
}

/// `limit_ratio(r, v)`: a deterministic sample of about `r` of the series, chosen by a hash
/// of their labels; a negative `r` selects the complement of `-r`'s selection.
fn limit_ratio(ratio: f64, samples: Vec<Sample>) -> Result<Vec<Sample>> {
    if ratio.is_nan() {
        return Err(QueryError::execution("Ratio value is NaN"));
    }
    let ratio = ratio.clamp(-1.0, 1.0);
    Ok(samples
        .into_iter()
        .filter(|sample| {
            let position = label_hash(&sample.labels) as f64 / u64::MAX as f64;
            if ratio >= 0.0 {
                position < ratio
            } else {
                position >= 1.0 + ratio
            }
        })
        .collect())
}

fn label_hash(labels: &Labels) -> u64 {
    // FNV-1a: stable across runs and platforms, unlike the standard library's hasher.
    labels.full_key().into_iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

/// `count_values("label", v)`: per group, how many samples have each value.
fn count_values(label: &str, samples: Vec<Sample>, grouping: &Grouping<'_>) -> Result<Vec<Sample>> {
    if !super::labels::is_valid_label_name(label) {
        return Err(QueryError::execution(format!("invalid label name {label:?}")));
    }
    let mut out: Vec<Sample> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    for sample in samples {
        let labels = grouping.labels(&sample.labels).with(label, &format_value(sample.value));
        match index.get(&labels) {
            Some(at) => out[*at].value += 1.0,
            None => {
                index.insert(labels.clone(), out.len());
                out.push(Sample { labels, value: 1.0, timestamp: sample.timestamp });
            }
        }
    }
    Ok(out)
}
