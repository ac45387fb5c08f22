//! Binary operators: arithmetic, comparison and set operators over scalars and vectors,
//! with `on`/`ignoring`, `group_left`/`group_right` and `bool`.

use std::collections::{HashMap, HashSet};

use promql_parser::parser::token::*;
use promql_parser::parser::{BinModifier, BinaryExpr, LabelModifier, VectorMatchCardinality};

use super::engine::{ensure_unique_labels, Evaluator, Val};
use super::{Labels, Millis, QueryError, Result, Sample, METRIC_NAME};

pub(super) fn eval(ev: &Evaluator, expr: &BinaryExpr, t: Millis) -> Result<Val> {
    let op = expr.op.id();
    let modifier = expr.modifier.as_ref();
    let return_bool = modifier.is_some_and(|m| m.return_bool);
    if modifier.is_some_and(|m| m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some()) {
        return Err(QueryError::bad_data("fill modifiers are not supported"));
    }
    let lhs = ev.eval(&expr.lhs, t)?;
    let rhs = ev.eval(&expr.rhs, t)?;
    let out = match (lhs, rhs) {
        (Val::Scalar(l), Val::Scalar(r)) => {
            let (value, keep) = apply(op, l, r);
            Val::Scalar(if is_comparison(op) { f64::from(u8::from(keep)) } else { value })
        }
        (Val::Vector(samples), Val::Scalar(scalar)) => Val::Vector(with_scalar(op, samples, scalar, false, return_bool)),
        (Val::Scalar(scalar), Val::Vector(samples)) => Val::Vector(with_scalar(op, samples, scalar, true, return_bool)),
        (Val::Vector(l), Val::Vector(r)) => Val::Vector(match op {
            T_LAND => and(l, &r, modifier),
            T_LOR => or(l, r, modifier),
            T_LUNLESS => unless(l, &r, modifier),
            _ => vector_vector(op, l, r, modifier, return_bool)?,
        }),
        (l, r) => return Err(QueryError::bad_data(format!("binary operator on {} and {}", l.type_name(), r.type_name()))),
    };
    if let Val::Vector(samples) = &out {
        ensure_unique_labels(samples)?;
    }
    Ok(out)
}

fn is_comparison(op: u16) -> bool {
    matches!(op, T_EQLC | T_NEQ | T_GTR | T_LSS | T_GTE | T_LTE)
}

/// Arithmetic ops (and comparisons with `bool`) drop the metric name; filters keep it.
fn drops_metric_name(op: u16, return_bool: bool) -> bool {
    !is_comparison(op) || return_bool
}

/// `l op r`: the arithmetic result, or for a comparison `l` and whether it holds.
fn apply(op: u16, l: f64, r: f64) -> (f64, bool) {
    match op {
        T_ADD => (l + r, true),
        T_SUB => (l - r, true),
        T_MUL => (l * r, true),
        T_DIV => (l / r, true),
        T_MOD => (l % r, true),
        T_POW => (l.powf(r), true),
        T_ATAN2 => (l.atan2(r), true),
        T_EQLC => (l, l == r),
        T_NEQ => (l, l != r),
        T_GTR => (l, l > r),
        T_LSS => (l, l < r),
        T_GTE => (l, l >= r),
        T_LTE => (l, l <= r),
        _ => unreachable!("the parser only builds binary expressions from binary operators"),
    }
}

fn with_scalar(op: u16, samples: Vec<Sample>, scalar: f64, scalar_on_left: bool, return_bool: bool) -> Vec<Sample> {
    samples
        .into_iter()
        .filter_map(|sample| {
            let (l, r) = if scalar_on_left { (scalar, sample.value) } else { (sample.value, scalar) };
            let (mut value, keep) = apply(op, l, r);
            if is_comparison(op) {
                // A filter keeps the vector's value even when the scalar is on the left.
                value = if return_bool { f64::from(u8::from(keep)) } else { sample.value };
            }
            if !keep && !return_bool {
                return None;
            }
            let labels = if drops_metric_name(op, return_bool) { sample.labels.without_metric_name() } else { sample.labels };
            Some(Sample { labels, value, ..sample })
        })
        .collect()
}

/// Which labels decide that two samples match: those of `on(...)`, or all but those of
/// `ignoring(...)` and the metric name.
struct Matching<'a> {
    on: Option<&'a [String]>,
    ignoring: &'a [String],
}

impl<'a> Matching<'a> {
    fn new(modifier: Option<&'a BinModifier>) -> Self {
        match modifier.and_then(|m| m.matching.as_ref()) {
            Some(LabelModifier::Include(labels)) => Self { on: Some(&labels.labels), ignoring: &[] },
            Some(LabelModifier::Exclude(labels)) => Self { on: None, ignoring: &labels.labels },
            None => Self { on: None, ignoring: &[] },
        }
    }

    fn signature(&self, labels: &Labels) -> Vec<u8> {
        match self.on {
            Some(on) => labels.key(|name| on.iter().any(|l| l == name)),
            None => labels.key(|name| name != METRIC_NAME && !self.ignoring.iter().any(|l| l == name)),
        }
    }
}

fn and(lhs: Vec<Sample>, rhs: &[Sample], modifier: Option<&BinModifier>) -> Vec<Sample> {
    let matching = Matching::new(modifier);
    let right: HashSet<Vec<u8>> = rhs.iter().map(|s| matching.signature(&s.labels)).collect();
    lhs.into_iter().filter(|s| right.contains(&matching.signature(&s.labels))).collect()
}

fn or(mut lhs: Vec<Sample>, rhs: Vec<Sample>, modifier: Option<&BinModifier>) -> Vec<Sample> {
    let matching = Matching::new(modifier);
    let left: HashSet<Vec<u8>> = lhs.iter().map(|s| matching.signature(&s.labels)).collect();
    lhs.extend(rhs.into_iter().filter(|s| !left.contains(&matching.signature(&s.labels))));
    lhs
}

fn unless(lhs: Vec<Sample>, rhs: &[Sample], modifier: Option<&BinModifier>) -> Vec<Sample> {
    let matching = Matching::new(modifier);
    let right: HashSet<Vec<u8>> = rhs.iter().map(|s| matching.signature(&s.labels)).collect();
    lhs.into_iter().filter(|s| !right.contains(&matching.signature(&s.labels))).collect()
}

/// Arithmetic and comparison between two vectors. The "many" side of a `group_left` or
/// `group_right` match may have several series per signature, the other side only one.
fn vector_vector(op: u16, lhs: Vec<Sample>, rhs: Vec<Sample>, modifier: Option<&BinModifier>, return_bool: bool) -> Result<Vec<Sample>> {
    let matching = Matching::new(modifier);
    let card = modifier.map(|m| &m.card).unwrap_or(&VectorMatchCardinality::OneToOne);
    let (include, one_to_one, swapped) = match card {
        VectorMatchCardinality::ManyToOne(labels) => (labels.labels.as_slice(), false, false),
        VectorMatchCardinality::OneToMany(labels) => (labels.labels.as_slice(), false, true),
        _ => (&[][..], true, false),
    };
    if lhs.is_empty() || rhs.is_empty() {
        return Ok(Vec::new());
    }
    let (many, one) = if swapped { (rhs, lhs) } else { (lhs, rhs) };

    let mut one_side: HashMap<Vec<u8>, &Sample> = HashMap::with_capacity(one.len());
    for sample in &one {
        let signature = matching.signature(&sample.labels);
        if let Some(previous) = one_side.insert(signature, sample) {
            let side = if swapped { "left" } else { "right" };
            return Err(QueryError::execution(format!(
                "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                match_group(&matching, &sample.labels),
                previous.labels,
                sample.labels
            )));
        }
    }

    let mut out = Vec::new();
    let mut matched: HashMap<Vec<u8>, HashSet<Labels>> = HashMap::new();
    for sample in &many {
        let signature = matching.signature(&sample.labels);
        let Some(other) = one_side.get(&signature) else { continue };
        let (l, r) = if swapped { (other.value, sample.value) } else { (sample.value, other.value) };
        // Matching errors count even for pairs a comparison then filters out (the
        // conformance scripts expect them: operators.test, "many_side > on(job) one_side").
        let labels = result_labels(&sample.labels, &other.labels, op, return_bool, &matching, one_to_one, include);
        let results = matched.entry(signature).or_default();
        if one_to_one && !results.is_empty() {
            return Err(QueryError::execution("multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"));
        }
        if !results.insert(labels.clone()) {
            return Err(QueryError::execution("multiple matches for labels: grouping labels must ensure unique matches"));
        }
        let (value, keep) = apply(op, l, r);
        let value = match (return_bool, keep) {
            (true, _) => f64::from(u8::from(keep)),
            (false, true) => value,
            (false, false) => continue,
        };
        out.push(Sample { labels, value, timestamp: sample.timestamp });
    }
    Ok(out)
}

fn match_group(matching: &Matching<'_>, labels: &Labels) -> Labels {
    match matching.on {
        Some(on) => labels.retain(|name| on.iter().any(|l| l == name)),
        None => labels.retain(|name| name != METRIC_NAME && !matching.ignoring.iter().any(|l| l == name)),
    }
}

/// The many side's labels, narrowed to the `on` labels for one-to-one matches (or without
/// the `ignoring` ones), plus the `group_x` labels copied from the one side.
fn result_labels(many: &Labels, one: &Labels, op: u16, return_bool: bool, matching: &Matching<'_>, one_to_one: bool, include: &[String]) -> Labels {
    let mut labels = if drops_metric_name(op, return_bool) { many.without_metric_name() } else { many.clone() };
    if one_to_one {
        labels = match matching.on {
            Some(on) => labels.retain(|name| on.iter().any(|l| l == name)),
            None => labels.retain(|name| !matching.ignoring.iter().any(|l| l == name)),
        };
    }
    for name in include {
        labels = labels.with(name, one.get(name));
    }
    labels
}
