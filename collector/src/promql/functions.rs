//! PromQL functions, named as in Prometheus and computed as Prometheus 3 computes them.

use std::cmp::Ordering;

use promql_parser::parser::{Call, Expr, VectorSelector};
use regex::Regex;

use super::aggregate::mean;
use super::engine::{ensure_unique_labels, Evaluator, RangeVector, Val, Window};
use super::{Labels, Millis, QueryError, Result, Sample, Series, METRIC_NAME};

pub(super) fn call(ev: &Evaluator, call: &Call, t: Millis) -> Result<Val> {
    let name = call.func.name;
    let args: Vec<&Expr> = call.args.args.iter().map(|arg| arg.as_ref()).collect();
    let scalar_arg = |i: usize| ev.eval_scalar(args[i], t);
    let string_arg = |i: usize| ev.eval_string(args[i], t);
    let out = match name {
        "time" => return Ok(Val::Scalar(seconds(t))),
        "pi" => return Ok(Val::Scalar(std::f64::consts::PI)),
        "step" => return Ok(Val::Scalar(seconds(ev.query_step()))),
        "start" => return Ok(Val::Scalar(seconds(ev.query_start()))),
        "end" => return Ok(Val::Scalar(seconds(ev.query_end()))),
        "range" => return Ok(Val::Scalar(seconds(ev.query_end() - ev.query_start()))),
        "min_of" | "max_of" => {
            let (a, b) = (scalar_arg(0)?, scalar_arg(1)?);
            return Ok(Val::Scalar(match (a.is_nan() || b.is_nan(), name) {
                (true, _) => f64::NAN,
                (false, "min_of") => a.min(b),
                (false, _) => a.max(b),
            }));
        }
        "vector" => return Ok(Val::Vector(vec![Sample { labels: Labels::default(), value: scalar_arg(0)?, timestamp: t }])),
        "scalar" => {
            let samples = ev.eval_vector(args[0], t)?;
            return Ok(Val::Scalar(if let [only] = samples.as_slice() { only.value } else { f64::NAN }));
        }
        "timestamp" => timestamp(ev, args[0], t)?,
        "absent" => {
            let samples = ev.eval_vector(args[0], t)?;
            return Ok(Val::Vector(absent(samples.is_empty(), args[0], t)));
        }
        "absent_over_time" => {
            let range = ev.eval_range(args[0], t)?;
            return Ok(Val::Vector(absent(range.series.is_empty(), args[0], t)));
        }
        "sort" | "sort_desc" => {
            let mut samples = ev.eval_vector(args[0], t)?;
            let descending = name == "sort_desc";
            samples.sort_by(|a, b| nan_last(a.value, b.value, descending));
            samples
        }
        "sort_by_label" | "sort_by_label_desc" => {
            let mut samples = ev.eval_vector(args[0], t)?;
            let labels = (1..args.len()).map(string_arg).collect::<Result<Vec<_>>>()?;
            samples.sort_by(|a, b| {
                let order = labels
                    .iter()
                    .map(|label| natural_cmp(a.labels.get(label), b.labels.get(label)))
                    .find(|order| order.is_ne())
                    .unwrap_or_else(|| a.labels.cmp(&b.labels));
                if name == "sort_by_label_desc" { order.reverse() } else { order }
            });
            samples
        }
        "label_replace" => {
            let samples = ev.eval_vector(args[0], t)?;
            let pattern = string_arg(4)?;
            let regex = ev
                .anchored_regex(&pattern)
                .map_err(|e| QueryError::execution(format!("invalid regular expression in label_replace(): {pattern}: {e}")))?;
            label_replace(samples, &string_arg(1)?, &string_arg(2)?, &string_arg(3)?, &regex)?
        }
        "label_join" => {
            let samples = ev.eval_vector(args[0], t)?;
            let sources = (3..args.len()).map(string_arg).collect::<Result<Vec<_>>>()?;
            label_join(samples, &string_arg(1)?, &string_arg(2)?, &sources)?
        }
        "round" => {
            let to_nearest = if args.len() > 1 { scalar_arg(1)? } else { 1.0 };
            let inverse = 1.0 / to_nearest;
            map_values(ev.eval_vector(args[0], t)?, |v| (v * inverse + 0.5).floor() / inverse)
        }
        "clamp" => {
            let (min, max) = (scalar_arg(1)?, scalar_arg(2)?);
            if max < min {
                Vec::new()
            } else {
                map_values(ev.eval_vector(args[0], t)?, |v| go_min(go_max(v, min), max))
            }
        }
        "clamp_min" => {
            let min = scalar_arg(1)?;
            map_values(ev.eval_vector(args[0], t)?, |v| go_max(v, min))
        }
        "clamp_max" => {
            let max = scalar_arg(1)?;
            map_values(ev.eval_vector(args[0], t)?, |v| go_min(v, max))
        }
        "minute" | "hour" | "day_of_week" | "day_of_month" | "day_of_year" | "days_in_month" | "month" | "year" => {
            let samples = match args.first() {
                Some(arg) => ev.eval_vector(arg, t)?,
                None => vec![Sample { labels: Labels::default(), value: seconds(t), timestamp: t }],
            };
            map_values(samples, |v| date_part(name, v))
        }
        "histogram_quantile" => histogram_quantile(scalar_arg(0)?, ev.eval_vector(args[1], t)?, t),
        "predict_linear" => {
            let seconds_ahead = scalar_arg(1)?;
            over_range(&ev.eval_range(args[0], t)?, true, |points, _| {
                (points.len() >= 2).then(|| {
                    let (slope, intercept) = linear_regression(points, t);
                    slope * seconds_ahead + intercept
                })
            })
        }
        "double_exponential_smoothing" => {
            let (smoothing, trend) = (scalar_arg(1)?, scalar_arg(2)?);
            if smoothing <= 0.0 || smoothing >= 1.0 {
                return Err(QueryError::execution(format!("invalid smoothing factor. Expected: 0 < sf < 1, got: {smoothing}")));
            }
            if trend <= 0.0 || trend >= 1.0 {
                return Err(QueryError::execution(format!("invalid trend factor. Expected: 0 < tf < 1, got: {trend}")));
            }
            over_range(&ev.eval_range(args[0], t)?, true, |points, _| double_exponential_smoothing(points, smoothing, trend))
        }
        "quantile_over_time" => {
            let phi = scalar_arg(0)?;
            over_range(&ev.eval_range(args[1], t)?, true, |points, _| Some(quantile(phi, points.iter().map(|p| p.1).collect())))
        }
        _ => {
            if let Some(f) = math_function(name) {
                map_values(ev.eval_vector(args[0], t)?, f)
            } else if let Some((keeps_name, f)) = range_function(name) {
                if let Expr::MatrixSelector(ms) = args[0] {
                    let (window, series) = ev.selector_windows(ms, t);
                    let out = over_windows(series, window, !keeps_name, f);
                    if ms.vs.name.is_some() {
                        // The series of one name stay distinct without it.
                        return Ok(Val::Vector(out));
                    }
                    out
                } else {
                    over_range(&ev.eval_range(args[0], t)?, !keeps_name, f)
                }
            } else {
                return Err(QueryError::execution(format!("function {name:?} is not supported (native histograms are not)")));
            }
        }
    };
    ensure_unique_labels(&out)?;
    Ok(Val::Vector(out))
}

/// Go's `math.Max`: NaN if either is NaN (Rust's `f64::max` ignores NaN).
fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() { f64::NAN } else { a.max(b) }
}

/// Go's `math.Min`: NaN if either is NaN.
fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() { f64::NAN } else { a.min(b) }
}

fn seconds(t: Millis) -> f64 {
    t as f64 / 1000.0
}

/// Applies `f` to every value, dropping the metric name as Prometheus's functions do.
fn map_values(samples: Vec<Sample>, f: impl Fn(f64) -> f64) -> Vec<Sample> {
    samples.into_iter().map(|s| Sample { labels: s.labels.without_metric_name(), value: f(s.value), ..s }).collect()
}

fn math_function(name: &str) -> Option<fn(f64) -> f64> {
    Some(match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "sqrt" => f64::sqrt,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sin" => f64::sin,
        "cos" => f64::cos,
        "tan" => f64::tan,
        "asin" => f64::asin,
        "acos" => f64::acos,
        "atan" => f64::atan,
        "sinh" => f64::sinh,
        "cosh" => f64::cosh,
        "tanh" => f64::tanh,
        "asinh" => f64::asinh,
        "acosh" => f64::acosh,
        "atanh" => f64::atanh,
        "deg" => f64::to_degrees,
        "rad" => f64::to_radians,
        "sgn" => |v: f64| if v > 0.0 { 1.0 } else if v < 0.0 { -1.0 } else { v },
        _ => return None,
    })
}

/// A function of one range vector: whether it keeps the metric name, and the value it
/// computes from a series' points and the window (`None` for no result).
type RangeFunction = fn(&[(Millis, f64)], Window) -> Option<f64>;

fn range_function(name: &str) -> Option<(bool, RangeFunction)> {
    Some(match name {
        "rate" => (false, |p, r| extrapolated_rate(p, r, true, true)),
        "increase" => (false, |p, r| extrapolated_rate(p, r, true, false)),
        "delta" => (false, |p, r| extrapolated_rate(p, r, false, false)),
        "irate" => (false, |p, _| instant_delta(p, true)),
        "idelta" => (false, |p, _| instant_delta(p, false)),
        "deriv" => (false, |p, _| (p.len() >= 2).then(|| linear_regression(p, p[0].0).0)),
        "changes" => (false, |p, _| Some(p.windows(2).filter(|w| w[0].1 != w[1].1 && !(w[0].1.is_nan() && w[1].1.is_nan())).count() as f64)),
        "resets" => (false, |p, _| Some(p.windows(2).filter(|w| w[1].1 < w[0].1).count() as f64)),
        "avg_over_time" => (false, |p, _| Some(mean(&values(p)))),
        "sum_over_time" => (false, |p, _| {
            let (sum, c) = p.iter().fold((0.0, 0.0), |(sum, c), (_, v)| kahan_add(*v, sum, c));
            Some(sum + c)
        }),
        "count_over_time" => (false, |p, _| Some(p.len() as f64)),
        "min_over_time" => (false, |p, _| p.iter().map(|p| p.1).reduce(|min, v| if v < min || min.is_nan() { v } else { min })),
        "max_over_time" => (false, |p, _| p.iter().map(|p| p.1).reduce(|max, v| if v > max || max.is_nan() { v } else { max })),
        "stddev_over_time" => (false, |p, _| Some(variance_over_time(p).sqrt())),
        "stdvar_over_time" => (false, |p, _| Some(variance_over_time(p))),
        "mad_over_time" => (false, |p, _| {
            if p.iter().any(|(_, v)| v.is_nan()) {
                return Some(f64::NAN);
            }
            let median = quantile(0.5, values(p));
            Some(quantile(0.5, p.iter().map(|(_, v)| (v - median).abs()).collect()))
        }),
        "present_over_time" => (false, |_, _| Some(1.0)),
        "last_over_time" => (true, |p, _| p.last().map(|p| p.1)),
        "first_over_time" => (true, |p, _| p.first().map(|p| p.1)),
        "ts_of_last_over_time" => (false, |p, _| p.last().map(|p| seconds(p.0))),
        "ts_of_first_over_time" => (false, |p, _| p.first().map(|p| seconds(p.0))),
        "ts_of_max_over_time" => (false, |p, _| extreme_time(p, |v, best| v >= best)),
        "ts_of_min_over_time" => (false, |p, _| extreme_time(p, |v, best| v <= best)),
        _ => return None,
    })
}

fn values(points: &[(Millis, f64)]) -> Vec<f64> {
    points.iter().map(|p| p.1).collect()
}

/// Applies a range function to each series with at least one point.
fn over_range(range: &RangeVector, drop_name: bool, f: impl Fn(&[(Millis, f64)], Window) -> Option<f64>) -> Vec<Sample> {
    over_windows(range.series.iter().map(|Series { labels, points }| (labels, points.as_slice())), range.window(), drop_name, f)
}

/// `f` of each series' points in `window`.
fn over_windows<'p, P: AsRef<[(Millis, f64)]>>(
    series: impl Iterator<Item = (&'p Labels, P)>,
    window: Window,
    drop_name: bool,
    f: impl Fn(&[(Millis, f64)], Window) -> Option<f64>,
) -> Vec<Sample> {
    series
        .filter_map(|(labels, points)| {
            let value = f(points.as_ref(), window)?;
            let labels = if drop_name { labels.without_metric_name() } else { labels.clone() };
            Some(Sample { labels, value, timestamp: window.end })
        })
        .collect()
}

/// The time (in seconds) of the last point that `better` prefers to every earlier one.
fn extreme_time(points: &[(Millis, f64)], better: fn(f64, f64) -> bool) -> Option<f64> {
    let mut best = *points.first()?;
    for point in &points[1..] {
        if better(point.1, best.1) || best.1.is_nan() {
            best = *point;
        }
    }
    Some(seconds(best.0))
}

/// `rate`, `increase` and `delta`: the change over the window, corrected for counter resets
/// and extrapolated towards the window's edges as Prometheus does.
fn extrapolated_rate(points: &[(Millis, f64)], range: Window, is_counter: bool, is_rate: bool) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let (first, last) = (points[0], points[points.len() - 1]);
    let mut result = last.1 - first.1;
    if is_counter {
        for pair in points.windows(2) {
            if pair[1].1 < pair[0].1 {
                result += pair[0].1;
            }
        }
    }
    let range_start = range.end - range.range;
    let sampled_interval = seconds(last.0 - first.0);
    let average_between_samples = sampled_interval / (points.len() - 1) as f64;
    let threshold = average_between_samples * 1.1;
    let mut to_start = seconds(first.0 - range_start);
    let mut to_end = seconds(range.end - last.0);
    if to_start >= threshold {
        to_start = average_between_samples / 2.0;
    }
    if is_counter {
        // A counter cannot go below zero: extrapolate no further back than where it would be 0.
        let to_zero = if result > 0.0 && first.1 >= 0.0 { sampled_interval * (first.1 / result) } else { to_start };
        to_start = to_start.min(to_zero);
    }
    if to_end >= threshold {
        to_end = average_between_samples / 2.0;
    }
    let mut factor = (sampled_interval + to_start + to_end) / sampled_interval;
    if is_rate {
        factor /= seconds(range.range);
    }
    Some(result * factor)
}

/// `irate` and `idelta`: from the last two points.
fn instant_delta(points: &[(Millis, f64)], is_rate: bool) -> Option<f64> {
    let [.., previous, last] = points else { return None };
    let mut result = last.1 - previous.1;
    if is_rate {
        if last.1 < previous.1 {
            result = last.1;
        }
        let interval = last.0 - previous.0;
        if interval == 0 {
            return None;
        }
        result /= seconds(interval);
    }
    Some(result)
}

/// Least-squares slope and the intercept at `intercept_time`.
fn linear_regression(points: &[(Millis, f64)], intercept_time: Millis) -> (f64, f64) {
    let first_value = points[0].1;
    if points.iter().all(|p| p.1 == first_value) {
        return if first_value.is_infinite() { (f64::NAN, f64::NAN) } else { (0.0, first_value) };
    }
    let n = points.len() as f64;
    let (mut x, mut y, mut xy, mut x2) = ((0.0, 0.0), (0.0, 0.0), (0.0, 0.0), (0.0, 0.0));
    for (at, value) in points {
        let dx = seconds(at - intercept_time);
        x = kahan_add(dx, x.0, x.1);
        y = kahan_add(*value, y.0, y.1);
        xy = kahan_add(dx * value, xy.0, xy.1);
        x2 = kahan_add(dx * dx, x2.0, x2.1);
    }
    let (x, y, xy, x2) = (x.0 + x.1, y.0 + y.1, xy.0 + xy.1, x2.0 + x2.1);
    let covariance = xy - x * y / n;
    let variance = x2 - x * x / n;
    let slope = covariance / variance;
    (slope, y / n - slope * x / n)
}

fn variance_over_time(points: &[(Millis, f64)]) -> f64 {
    let (mut count, mut mean, mut mean_c, mut aux, mut aux_c) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (_, value) in points {
        count += 1.0;
        let delta = value - (mean + mean_c);
        (mean, mean_c) = kahan_add(delta / count, mean, mean_c);
        (aux, aux_c) = kahan_add(delta * (value - (mean + mean_c)), aux, aux_c);
    }
    (aux + aux_c) / count
}

fn double_exponential_smoothing(points: &[(Millis, f64)], smoothing: f64, trend: f64) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let (mut s0, mut s1) = (0.0, points[0].1);
    let mut b = points[1].1 - points[0].1;
    for (i, (_, value)) in points.iter().enumerate().skip(1) {
        if i > 1 {
            b = trend * (s1 - s0) + (1.0 - trend) * b;
        }
        let next = smoothing * value + (1.0 - smoothing) * (s1 + b);
        (s0, s1) = (s1, next);
    }
    Some(s1)
}

/// Adds `value` to a Kahan–Neumaier sum, returning the new sum and compensation.
pub(super) fn kahan_add(value: f64, sum: f64, compensation: f64) -> (f64, f64) {
    let total = sum + value;
    let compensation = if total.is_infinite() {
        0.0
    } else if sum.abs() >= value.abs() {
        compensation + ((sum - total) + value)
    } else {
        compensation + ((value - total) + sum)
    };
    (total, compensation)
}

/// The φ-quantile by linear interpolation between the closest ranks (NaN sorts first).
pub(super) fn quantile(phi: f64, mut values: Vec<f64>) -> f64 {
    if values.is_empty() || phi.is_nan() {
        return f64::NAN;
    }
    if phi < 0.0 {
        return f64::NEG_INFINITY;
    }
    if phi > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        _ => a.partial_cmp(b).expect("numbers compare"),
    });
    let n = values.len() as f64;
    let rank = phi * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// Ascending or descending by value, NaN last either way.
pub(super) fn nan_last(a: f64, b: f64, descending: bool) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ if descending => b.partial_cmp(&a).expect("numbers compare"),
        _ => a.partial_cmp(&b).expect("numbers compare"),
    }
}

/// Compares strings with runs of digits ordered by their numeric value.
fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a, b);
    loop {
        match (a.chars().next(), b.chars().next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let a_end = a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len());
                let b_end = b.find(|c: char| !c.is_ascii_digit()).unwrap_or(b.len());
                let (da, db) = (a[..a_end].trim_start_matches('0'), b[..b_end].trim_start_matches('0'));
                let order = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
                if order.is_ne() {
                    return order;
                }
                (a, b) = (&a[a_end..], &b[b_end..]);
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(&y);
                }
                (a, b) = (&a[x.len_utf8()..], &b[y.len_utf8()..]);
            }
        }
    }
}

/// `timestamp(v)`: a selector's samples report when they were taken; any other expression
/// reports the evaluation time.
fn timestamp(ev: &Evaluator, arg: &Expr, t: Millis) -> Result<Vec<Sample>> {
    let samples = match unwrap_parens(arg) {
        Expr::VectorSelector(vs) => ev.instant_selector(vs, t),
        other => ev.eval_vector(other, t)?.into_iter().map(|s| Sample { timestamp: t, ..s }).collect(),
    };
    Ok(samples.into_iter().map(|s| Sample { labels: s.labels.without_metric_name(), value: seconds(s.timestamp), timestamp: t }).collect())
}

fn unwrap_parens(expr: &Expr) -> &Expr {
    match expr {
        Expr::Paren(paren) => unwrap_parens(&paren.expr),
        other => other,
    }
}

/// `absent(v)` and `absent_over_time(v[d])`: 1 when nothing was selected, labelled with the
/// selector's equality matchers.
fn absent(is_absent: bool, arg: &Expr, t: Millis) -> Vec<Sample> {
    if !is_absent {
        return Vec::new();
    }
    let selector: Option<&VectorSelector> = match unwrap_parens(arg) {
        Expr::VectorSelector(vs) => Some(vs),
        Expr::MatrixSelector(ms) => Some(&ms.vs),
        _ => None,
    };
    // As Prometheus: an equality matcher sets its label unless already set; a label with
    // any other matcher, or a second equality, is removed at the end.
    let mut labels = Labels::default();
    let mut removed = Vec::new();
    for matcher in selector.map(|vs| vs.matchers.matchers.as_slice()).unwrap_or_default() {
        if matcher.name == METRIC_NAME {
            continue;
        }
        if matches!(matcher.op, promql_parser::label::MatchOp::Equal) && labels.get(&matcher.name).is_empty() {
            labels = labels.with(&matcher.name, &matcher.value);
        } else {
            removed.push(matcher.name.as_str());
        }
    }
    let labels = labels.retain(|name| !removed.contains(&name));
    vec![Sample { labels, value: 1.0, timestamp: t }]
}

fn label_replace(samples: Vec<Sample>, destination: &str, replacement: &str, source: &str, regex: &Regex) -> Result<Vec<Sample>> {
    if !super::labels::is_valid_label_name(destination) {
        return Err(QueryError::execution(format!("invalid destination label name in label_replace(): {destination}")));
    }
    Ok(samples
        .into_iter()
        .map(|sample| {
            let Some(captures) = regex.captures(sample.labels.get(source)) else { return sample };
            let mut value = String::new();
            captures.expand(replacement, &mut value);
            Sample { labels: sample.labels.with(destination, &value), ..sample }
        })
        .collect())
}

fn label_join(samples: Vec<Sample>, destination: &str, separator: &str, sources: &[String]) -> Result<Vec<Sample>> {
    if !super::labels::is_valid_label_name(destination) {
        return Err(QueryError::execution(format!("invalid destination label name in label_join(): {destination}")));
    }
    Ok(samples
        .into_iter()
        .map(|sample| {
            let value = sources.iter().map(|source| sample.labels.get(source)).collect::<Vec<_>>().join(separator);
            Sample { labels: sample.labels.with(destination, &value), ..sample }
        })
        .collect())
}

/// `histogram_quantile(φ, buckets)` over classic histograms: series grouped by their labels
/// without `le`, the quantile interpolated linearly inside the bucket it falls in.
fn histogram_quantile(phi: f64, samples: Vec<Sample>, t: Millis) -> Vec<Sample> {
    let mut groups: Vec<(Labels, Vec<(f64, f64)>)> = Vec::new();
    let mut index = std::collections::HashMap::new();
    for sample in samples {
        let Ok(upper_bound) = parse_float(sample.labels.get("le")) else { continue };
        // Grouped with the metric name, which the result then drops: two histograms that
        // differ only in name collide, and that is an error.
        let labels = sample.labels.retain(|name| name != "le");
        let at = *index.entry(labels.clone()).or_insert_with(|| {
            groups.push((labels.without_metric_name(), Vec::new()));
            groups.len() - 1
        });
        groups[at].1.push((upper_bound, sample.value));
    }
    groups.into_iter().map(|(labels, buckets)| Sample { labels, value: bucket_quantile(phi, buckets), timestamp: t }).collect()
}

/// Prometheus's `bucketQuantile`: buckets as (upper bound, cumulative count).
fn bucket_quantile(phi: f64, mut buckets: Vec<(f64, f64)>) -> f64 {
    if phi.is_nan() {
        return f64::NAN;
    }
    if phi < 0.0 {
        return f64::NEG_INFINITY;
    }
    if phi > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Coalesce buckets with the same bound, then force the counts to be monotonic.
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for (bound, count) in buckets {
        match merged.last_mut() {
            Some(last) if last.0 == bound => last.1 += count,
            _ => merged.push((bound, count)),
        }
    }
    let mut previous = merged[0].1;
    for bucket in merged.iter_mut().skip(1) {
        if bucket.1 == previous {
            continue;
        }
        if almost_equal(previous, bucket.1, 1e-12) || bucket.1 < previous {
            bucket.1 = previous;
            continue;
        }
        previous = bucket.1;
    }
    if merged.len() < 2 {
        return f64::NAN;
    }
    let observations = merged[merged.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = phi * observations;
    let b = merged[..merged.len() - 1].partition_point(|bucket| bucket.1 < rank);
    if b == merged.len() - 1 {
        return merged[merged.len() - 2].0;
    }
    if b == 0 && merged[0].0 <= 0.0 {
        return merged[0].0;
    }
    let (mut start, end, mut count) = (0.0, merged[b].0, merged[b].1);
    if b > 0 {
        start = merged[b - 1].0;
        count -= merged[b - 1].1;
        rank -= merged[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

/// Equality within a relative `epsilon`, as Prometheus's `almost.Equal`.
pub(super) fn almost_equal(a: f64, b: f64, epsilon: f64) -> bool {
    const MIN_NORMAL: f64 = f64::MIN_POSITIVE;
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < MIN_NORMAL {
        return diff < epsilon * MIN_NORMAL;
    }
    diff / abs_sum.min(f64::MAX) < epsilon
}

/// Parses a float as Go's `strconv.ParseFloat` does, including `+Inf`, `-Inf` and `NaN`.
pub(super) fn parse_float(text: &str) -> Result<f64, std::num::ParseFloatError> {
    let trimmed = text.trim();
    match trimmed.to_ascii_lowercase().as_str() {
        "+inf" | "inf" | "+infinity" | "infinity" => Ok(f64::INFINITY),
        "-inf" | "-infinity" => Ok(f64::NEG_INFINITY),
        "nan" => Ok(f64::NAN),
        _ => trimmed.parse(),
    }
}

/// The calendar fields of `date_part` in UTC, from seconds since the epoch.
fn date_part(name: &str, seconds: f64) -> f64 {
    if seconds.is_nan() || seconds.is_infinite() {
        return f64::NAN;
    }
    let secs = seconds.floor() as i64;
    let days = secs.div_euclid(86_400);
    let seconds_of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_lengths = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    (match name {
        "minute" => seconds_of_day / 60 % 60,
        "hour" => seconds_of_day / 3600,
        "day_of_week" => (days + 4).rem_euclid(7),
        "day_of_month" => day,
        "day_of_year" => month_lengths[..(month - 1) as usize].iter().sum::<i64>() + day,
        "days_in_month" => month_lengths[(month - 1) as usize],
        "month" => month,
        "year" => year,
        _ => unreachable!("date function {name}"),
    }) as f64
}

/// Howard Hinnant's days-to-civil conversion: (year, month 1–12, day 1–31).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (year_of_era + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_fields_of_a_known_instant() {
        // 2024-02-29T13:45:00Z, a Thursday.
        let t = 1_709_214_300.0;
        assert_eq!(date_part("year", t), 2024.0);
        assert_eq!(date_part("month", t), 2.0);
        assert_eq!(date_part("day_of_month", t), 29.0);
        assert_eq!(date_part("days_in_month", t), 29.0);
        assert_eq!(date_part("day_of_year", t), 60.0);
        assert_eq!(date_part("day_of_week", t), 4.0);
        assert_eq!(date_part("hour", t), 13.0);
        assert_eq!(date_part("minute", t), 45.0);
    }

    #[test]
    fn natural_order_compares_numbers_by_value() {
        assert_eq!(natural_cmp("node9", "node10"), Ordering::Less);
        assert_eq!(natural_cmp("a", "a"), Ordering::Equal);
    }
}
