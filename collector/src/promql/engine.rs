//! Query entry points and the step-by-step evaluator.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{self, AtModifier, Expr, MatrixSelector, Offset, SubqueryExpr, VectorSelector};
use promql_parser::util::{walk_expr, ExprVisitor};
use regex::Regex;

use super::storage::{Selection, SeriesSource, StoredSeries};
use super::{aggregate, binary, functions, is_stale_marker, ErrorKind, Labels, Millis, QueryError, Result, Sample, Series, Value, METRIC_NAME};

/// Query limits and PromQL's time constants.
#[derive(Debug, Clone)]
pub struct Engine {
    /// How far back an instant selector looks for a sample (Prometheus: 5 minutes).
    pub lookback: Duration,
    /// A query running longer fails with a `timeout` error.
    pub timeout: Duration,
    /// Most samples a query may load or produce before it fails with an `execution` error.
    pub max_samples: usize,
    /// The step of a subquery written without one, such as `x[1h:]`.
    pub default_subquery_step: Duration,
}

impl Default for Engine {
    fn default() -> Self {
        Self {
            lookback: Duration::from_secs(300),
            timeout: Duration::from_secs(120),
            max_samples: 50_000_000,
            default_subquery_step: Duration::from_secs(60),
        }
    }
}

impl Engine {
    /// Evaluates `query` at one instant.
    pub async fn instant<S: SeriesSource>(&self, source: &S, query: &str, at: Millis) -> Result<Value> {
        let expr = parse(query)?;
        let evaluator = self.prepare(source, &expr, at, at, 0).await?;
        let value = evaluator.eval(&expr, at)?;
        evaluator.check_deadline()?;
        let returned = match &value {
            Val::Vector(samples) => samples.len(),
            Val::Range(range) => range.series.iter().map(|s| s.points.len()).sum(),
            Val::Scalar(_) | Val::String(_) => 1,
        };
        evaluator.check_samples(evaluator.fetched_samples + returned)?;
        Ok(match value {
            Val::Scalar(value) => Value::Scalar(value),
            Val::String(value) => Value::String(value),
            Val::Vector(samples) => {
                Value::Vector(samples.into_iter().map(|sample| Sample { timestamp: at, ..sample }).collect())
            }
            Val::Range(range) => Value::Matrix(range.series),
        })
    }

    /// Evaluates `query` at every `step` from `start` to `end`, both included.
    pub async fn range<S: SeriesSource>(&self, source: &S, query: &str, start: Millis, end: Millis, step: Millis) -> Result<Vec<Series>> {
        if step <= 0 {
            return Err(QueryError::bad_data("zero or negative query resolution step widths are not accepted. Try a positive integer"));
        }
        if end < start {
            return Err(QueryError::bad_data("end timestamp must not be before start time"));
        }
        let expr = parse(query)?;
        if !matches!(expr.value_type(), ValueType::Scalar | ValueType::Vector) {
            return Err(QueryError::bad_data(format!(
                "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                value_type_name(expr.value_type())
            )));
        }
        let evaluator = self.prepare(source, &expr, start, end, step).await?;
        let mut series = SeriesBuilder::default();
        let mut samples_held = evaluator.fetched_samples;
        for t in (start..=end).step_by(step as usize) {
            evaluator.check_deadline()?;
            samples_held += series.push_step(t, evaluator.eval(&expr, t)?)?;
            evaluator.check_samples(samples_held)?;
        }
        let mut series = series.finish();
        series.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(series)
    }

    /// Fetches every selector's samples for the span the query can reach.
    async fn prepare<S: SeriesSource>(&self, source: &S, expr: &Expr, start: Millis, end: Millis, step: Millis) -> Result<Evaluator> {
        let mut evaluator = Evaluator {
            start,
            end,
            step,
            lookback: millis(self.lookback),
            subquery_step: millis(self.default_subquery_step),
            max_samples: self.max_samples,
            deadline: Instant::now() + self.timeout,
            fetched: HashMap::new(),
            fetched_samples: 0,
            regexes: RefCell::default(),
            step_invariant: HashSet::new(),
            invariant_values: RefCell::default(),
            subquery_values: RefCell::default(),
        };
        if mark_step_invariant(expr, &mut evaluator.step_invariant) {
            evaluator.step_invariant.insert(expr_key(expr));
        }
        let mut wanted = Vec::new();
        evaluator.plan(expr, start, end, &mut wanted);
        // The selectors are fetched concurrently: each read waits on storage in part.
        let matchers: Vec<Vec<Matcher>> = wanted.iter().map(|(selector, _, _)| selector_matchers(selector)).collect();
        let fetches = wanted.iter().zip(&matchers).map(|((selector, from, to), matchers)| {
            source.select(Selection { matchers, or_matchers: &selector.matchers.or_matchers, start: *from, end: *to })
        });
        let fetched = tokio::time::timeout_at(evaluator.deadline.into(), futures::future::try_join_all(fetches)).await.map_err(|_| timed_out())??;
        for ((selector, _, _), series) in wanted.iter().zip(fetched) {
            evaluator.fetched_samples += series.iter().map(|s| s.samples.len()).sum::<usize>();
            evaluator.check_samples(evaluator.fetched_samples)?;
            evaluator.fetched.insert(*selector as *const VectorSelector as usize, Fetched::new(series));
        }
        Ok(evaluator)
    }
}

fn parse(query: &str) -> Result<Expr> {
    parser::parse(&decode_byte_escapes(query)?).map_err(QueryError::bad_data)
}

/// Go's PromQL reads `\xNN` in a string as a byte, so `"\xc3\xa9"` is "é"; the parser
/// crate reads it as the code point U+00NN. Rewrites escapes of bytes 0x80–0xFF as the
/// characters they spell in UTF-8, and refuses strings whose bytes are not UTF-8.
fn decode_byte_escapes(query: &str) -> Result<std::borrow::Cow<'_, str>> {
    let high_byte_escape = |at: usize| {
        let hex = query.get(at + 2..at + 4)?;
        let byte = u8::from_str_radix(hex, 16).ok()?;
        (query.as_bytes()[at + 1] == b'x' && byte >= 0x80).then_some(byte)
    };
    if !query.contains("\\x") {
        return Ok(query.into());
    }
    let bytes = query.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut quote = None;
    let mut at = 0;
    while at < bytes.len() {
        let byte = bytes[at];
        match quote {
            None if matches!(byte, b'"' | b'\'' | b'`') => quote = Some(byte),
            Some(open) if byte == open => quote = None,
            Some(open) if byte == b'\\' && open != b'`' && at + 1 < bytes.len() => {
                if let Some(decoded) = high_byte_escape(at) {
                    out.push(decoded);
                    at += 4;
                } else {
                    out.extend_from_slice(&bytes[at..at + 2]);
                    at += 2;
                }
                continue;
            }
            _ => {}
        }
        out.push(byte);
        at += 1;
    }
    String::from_utf8(out).map(Into::into).map_err(|_| QueryError::bad_data("invalid UTF-8 in a string literal"))
}

fn timed_out() -> QueryError {
    QueryError { kind: ErrorKind::Timeout, message: "query timed out in expression evaluation".into() }
}

fn millis(duration: Duration) -> Millis {
    Millis::try_from(duration.as_millis()).unwrap_or(Millis::MAX)
}

pub(super) fn value_type_name(value_type: ValueType) -> &'static str {
    match value_type {
        ValueType::Scalar => "scalar",
        ValueType::String => "string",
        ValueType::Vector => "vector",
        ValueType::Matrix => "matrix",
    }
}

/// Every series selector a query reads, including those of range selectors.
pub fn selectors(query: &str) -> Result<Vec<VectorSelector>> {
    struct Collect(Vec<VectorSelector>);
    impl ExprVisitor for Collect {
        type Error = std::convert::Infallible;
        fn pre_visit(&mut self, expr: &Expr) -> std::result::Result<bool, Self::Error> {
            match expr {
                Expr::VectorSelector(vs) => self.0.push(vs.clone()),
                Expr::MatrixSelector(ms) => self.0.push(ms.vs.clone()),
                _ => {}
            }
            Ok(true)
        }
    }
    let mut collect = Collect(Vec::new());
    let Ok(_) = walk_expr(&mut collect, &parse(query)?);
    Ok(collect.0)
}

/// The selector's matchers with its metric name as a `__name__` matcher.
pub fn selector_matchers(selector: &VectorSelector) -> Vec<Matcher> {
    let mut matchers = selector.matchers.matchers.clone();
    if let Some(name) = &selector.name {
        matchers.push(Matcher::new(MatchOp::Equal, METRIC_NAME, name));
    }
    matchers
}

/// An evaluated sub-expression.
#[derive(Debug, Clone)]
pub(super) enum Val {
    Scalar(f64),
    String(String),
    Vector(Vec<Sample>),
    Range(RangeVector),
}

impl Val {
    pub(super) fn type_name(&self) -> &'static str {
        match self {
            Val::Scalar(_) => "scalar",
            Val::String(_) => "string",
            Val::Vector(_) => "vector",
            Val::Range(_) => "matrix",
        }
    }
}

/// A range vector with its window `(end - range, end]`, which extrapolating functions need.
#[derive(Debug, Clone)]
pub(super) struct RangeVector {
    pub series: Vec<Series>,
    pub end: Millis,
    pub range: Millis,
}

/// The window `(end - range, end]` of a range vector.
#[derive(Debug, Clone, Copy)]
pub(super) struct Window {
    pub end: Millis,
    pub range: Millis,
}

/// A series' labels and its points in a window.
pub(super) type SeriesWindow<'e> = (&'e Labels, Cow<'e, [(Millis, f64)]>);

impl RangeVector {
    pub(super) fn window(&self) -> Window {
        Window { end: self.end, range: self.range }
    }
}

/// Collects samples into series by label set, keeping first-seen order.
#[derive(Default)]
struct SeriesBuilder {
    index: HashMap<Labels, usize>,
    series: Vec<Series>,
}

impl SeriesBuilder {
    /// Adds one step's result (a scalar becomes the series without labels) and returns how
    /// many samples that was.
    fn push_step(&mut self, t: Millis, value: Val) -> Result<usize> {
        match value {
            Val::Scalar(value) => {
                self.push(&Labels::default(), t, value);
                Ok(1)
            }
            Val::Vector(samples) => {
                let added = samples.len();
                for sample in samples {
                    self.push(&sample.labels, t, sample.value);
                }
                Ok(added)
            }
            other => Err(QueryError::bad_data(format!("expected a scalar or an instant vector, got {}", other.type_name()))),
        }
    }

    fn push(&mut self, labels: &Labels, t: Millis, value: f64) {
        let at = *self.index.entry(labels.clone()).or_insert_with(|| {
            self.series.push(Series { labels: labels.clone(), points: Vec::new() });
            self.series.len() - 1
        });
        self.series[at].points.push((t, value));
    }

    fn finish(self) -> Vec<Series> {
        self.series
    }
}

/// Evaluates expressions at single instants over the fetched samples.
pub(super) struct Evaluator {
    /// The query's first and last evaluation times (`@ start()`, `@ end()`) and its step.
    start: Millis,
    end: Millis,
    step: Millis,
    lookback: Millis,
    subquery_step: Millis,
    max_samples: usize,
    deadline: Instant,
    /// Samples per selector, keyed by the selector node's address in the query's tree.
    fetched: HashMap<usize, Fetched>,
    fetched_samples: usize,
    /// Anchored patterns compiled so far: a call is evaluated at every step.
    regexes: RefCell<HashMap<String, Regex>>,
    /// The largest subexpressions whose value is the same at every step (by address, see
    /// [`mark_step_invariant`]), and their values once evaluated.
    step_invariant: HashSet<usize>,
    invariant_values: RefCell<HashMap<usize, Val>>,
    /// Values of subqueries' inner expressions by expression and time. A subquery evaluates
    /// at multiples of its step, so consecutive steps' windows share most of their times.
    subquery_values: RefCell<HashMap<usize, BTreeMap<Millis, Val>>>,
}

/// Functions whose value changes with the evaluation time even when their arguments do
/// not (Prometheus's `AtModifierUnsafeFunctions`).
const TIME_DEPENDENT_FUNCTIONS: [&str; 11] =
    ["days_in_month", "day_of_month", "day_of_week", "day_of_year", "hour", "minute", "month", "year", "predict_linear", "time", "timestamp"];

/// An expression node's key: its address in the query's tree.
fn expr_key(expr: &Expr) -> usize {
    expr as *const Expr as usize
}

/// Whether `expr` has the same value at every step, as Prometheus decides before wrapping
/// such subtrees in a step-invariant node: its selectors and subqueries are all pinned with
/// `@` and it calls no function of the evaluation time. Marks in `marked` the largest such
/// subexpressions below `expr` when `expr` itself is not one, literals aside.
fn mark_step_invariant(expr: &Expr, marked: &mut HashSet<usize>) -> bool {
    let (pinned, children): (bool, Vec<&Expr>) = match expr {
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => return true,
        Expr::Extension(_) => return false,
        Expr::VectorSelector(vs) => (vs.at.is_some(), Vec::new()),
        Expr::MatrixSelector(ms) => (ms.vs.at.is_some(), Vec::new()),
        Expr::Subquery(sq) => {
            // A pinned subquery is invariant whatever its inner expression is; an inner
            // invariant expression is evaluated once for all the subquery's steps.
            if mark_step_invariant(&sq.expr, marked) {
                marked.insert(expr_key(&sq.expr));
            }
            return sq.at.is_some();
        }
        Expr::Paren(paren) => (true, vec![&paren.expr]),
        Expr::Unary(unary) => (true, vec![&unary.expr]),
        Expr::Binary(binary) => (true, vec![&binary.lhs, &binary.rhs]),
        Expr::Aggregate(agg) => (true, std::iter::once(&agg.expr).chain(&agg.param).map(|e| &**e).collect()),
        Expr::Call(call) => (!TIME_DEPENDENT_FUNCTIONS.contains(&call.func.name), call.args.args.iter().map(|e| &**e).collect()),
    };
    let invariant: Vec<bool> = children.iter().map(|child| mark_step_invariant(child, marked)).collect();
    if pinned && invariant.iter().all(|invariant| *invariant) {
        return true;
    }
    for (child, invariant) in children.into_iter().zip(invariant) {
        if invariant && !matches!(child, Expr::NumberLiteral(_) | Expr::StringLiteral(_)) {
            marked.insert(expr_key(child));
        }
    }
    false
}

/// A selector's series, with where in each series' samples the last evaluation looked.
struct Fetched {
    series: Vec<StoredSeries>,
    /// Per series, positions where a window started and ended: steps move forward in
    /// time, so the next window is a few samples further, not a binary search (and cache
    /// misses) away.
    cursors: Vec<[Cell<usize>; 2]>,
}

impl Fetched {
    fn new(series: Vec<StoredSeries>) -> Self {
        let cursors = series.iter().map(|_| [Cell::new(0), Cell::new(0)]).collect();
        Self { series, cursors }
    }

    /// Each series with its two cursors.
    fn iter(&self) -> impl Iterator<Item = (&StoredSeries, &[Cell<usize>; 2])> {
        self.series.iter().zip(&self.cursors)
    }
}

/// How many samples of `samples` are at or before `t`, starting the search at `cursor` and
/// leaving the answer there.
fn samples_until(samples: &[(Millis, f64)], cursor: &Cell<usize>, t: Millis) -> usize {
    /// Samples looked at one by one before falling back to a binary search.
    const SCAN: usize = 8;
    let from = cursor.get().min(samples.len());
    let found = if from > 0 && samples[from - 1].0 > t {
        samples[..from].partition_point(|(at, _)| *at <= t)
    } else {
        let ahead = samples[from..].iter().take(SCAN).take_while(|(at, _)| *at <= t).count();
        if ahead < SCAN { from + ahead } else { from + samples[from..].partition_point(|(at, _)| *at <= t) }
    };
    cursor.set(found);
    found
}

impl Evaluator {
    /// Lists each selector with the time span (inclusive) it can read when `expr` is
    /// evaluated anywhere in `[from, to]`.
    fn plan<'q>(&self, expr: &'q Expr, from: Millis, to: Millis, wanted: &mut Vec<(&'q VectorSelector, Millis, Millis)>) {
        match expr {
            Expr::VectorSelector(vs) => {
                let (from, to) = self.shifted(&vs.at, &vs.offset, from, to);
                wanted.push((vs, from.saturating_sub(self.lookback), to));
            }
            Expr::MatrixSelector(ms) => {
                let (from, to) = self.shifted(&ms.vs.at, &ms.vs.offset, from, to);
                wanted.push((&ms.vs, from.saturating_sub(millis(ms.range)), to));
            }
            Expr::Subquery(sq) => {
                let (from, to) = self.shifted(&sq.at, &sq.offset, from, to);
                self.plan(&sq.expr, from.saturating_sub(millis(sq.range)), to, wanted);
            }
            Expr::Aggregate(agg) => {
                self.plan(&agg.expr, from, to, wanted);
                if let Some(param) = &agg.param {
                    self.plan(param, from, to, wanted);
                }
            }
            Expr::Unary(unary) => self.plan(&unary.expr, from, to, wanted),
            Expr::Binary(binary) => {
                self.plan(&binary.lhs, from, to, wanted);
                self.plan(&binary.rhs, from, to, wanted);
            }
            Expr::Paren(paren) => self.plan(&paren.expr, from, to, wanted),
            Expr::Call(call) => {
                for arg in &call.args.args {
                    self.plan(arg, from, to, wanted);
                }
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
    }

    /// `[from, to]` moved by an `@` and an `offset`.
    fn shifted(&self, at: &Option<AtModifier>, offset: &Option<Offset>, from: Millis, to: Millis) -> (Millis, Millis) {
        (self.effective_time(at, offset, from), self.effective_time(at, offset, to))
    }

    /// The time a selector or subquery evaluated at `t` reads at.
    fn effective_time(&self, at: &Option<AtModifier>, offset: &Option<Offset>, t: Millis) -> Millis {
        let base = match at {
            None => t,
            Some(AtModifier::Start) => self.start,
            Some(AtModifier::End) => self.end,
            Some(AtModifier::At(time)) => system_time_millis(*time),
        };
        match offset {
            None => base,
            Some(Offset::Pos(d)) => base.saturating_sub(millis(*d)),
            Some(Offset::Neg(d)) => base.saturating_add(millis(*d)),
        }
    }

    /// `pattern` matching whole strings, as PromQL's regular expressions do; compiled once
    /// per query.
    pub(super) fn anchored_regex(&self, pattern: &str) -> std::result::Result<Regex, regex::Error> {
        if let Some(regex) = self.regexes.borrow().get(pattern) {
            return Ok(regex.clone());
        }
        let regex = Regex::new(&format!("^(?s:{pattern})$"))?;
        self.regexes.borrow_mut().insert(pattern.to_owned(), regex.clone());
        Ok(regex)
    }

    pub(super) fn check_deadline(&self) -> Result<()> {
        if Instant::now() > self.deadline {
            return Err(timed_out());
        }
        Ok(())
    }

    fn check_samples(&self, samples: usize) -> Result<()> {
        if samples > self.max_samples {
            return Err(QueryError::execution("query processing would load too many samples into memory in query execution"));
        }
        Ok(())
    }

    /// The query's step, 0 for an instant query (the `step()` function).
    pub(super) fn query_step(&self) -> Millis {
        self.step
    }

    /// The query's first evaluation time (the `start()` function).
    pub(super) fn query_start(&self) -> Millis {
        self.start
    }

    /// The query's last evaluation time (the `end()` function).
    pub(super) fn query_end(&self) -> Millis {
        self.end
    }

    pub(super) fn eval(&self, expr: &Expr, t: Millis) -> Result<Val> {
        let key = expr_key(expr);
        if self.step_invariant.is_empty() || !self.step_invariant.contains(&key) {
            return self.eval_at(expr, t);
        }
        if let Some(value) = self.invariant_values.borrow().get(&key) {
            return Ok(value.clone());
        }
        let value = self.eval_at(expr, t)?;
        self.invariant_values.borrow_mut().insert(key, value.clone());
        Ok(value)
    }

    fn eval_at(&self, expr: &Expr, t: Millis) -> Result<Val> {
        Ok(match expr {
            Expr::NumberLiteral(number) => Val::Scalar(number.val),
            Expr::StringLiteral(string) => Val::String(string.val.clone()),
            Expr::Paren(paren) => self.eval(&paren.expr, t)?,
            Expr::Unary(unary) => match self.eval(&unary.expr, t)? {
                Val::Scalar(value) => Val::Scalar(-value),
                Val::Vector(samples) => {
                    let negated: Vec<Sample> =
                        samples.into_iter().map(|s| Sample { labels: s.labels.without_metric_name(), value: -s.value, ..s }).collect();
                    ensure_unique_labels(&negated)?;
                    Val::Vector(negated)
                }
                other => return Err(QueryError::bad_data(format!("unary expression only allowed on scalar or vector, got {}", other.type_name()))),
            },
            Expr::VectorSelector(vs) => Val::Vector(self.instant_selector(vs, t)),
            Expr::MatrixSelector(ms) => {
                let end = self.effective_time(&ms.vs.at, &ms.vs.offset, t);
                Val::Range(self.range_selector(&ms.vs, end, millis(ms.range)))
            }
            Expr::Subquery(sq) => Val::Range(self.subquery(sq, t)?),
            Expr::Call(call) => functions::call(self, call, t)?,
            Expr::Aggregate(agg) => aggregate::eval(self, agg, t)?,
            Expr::Binary(binary) => binary::eval(self, binary, t)?,
            Expr::Extension(_) => return Err(QueryError::bad_data("extension expressions are not supported")),
        })
    }

    /// Evaluates an argument that must be a scalar.
    pub(super) fn eval_scalar(&self, expr: &Expr, t: Millis) -> Result<f64> {
        match self.eval(expr, t)? {
            Val::Scalar(value) => Ok(value),
            other => Err(QueryError::bad_data(format!("expected a scalar, got {}", other.type_name()))),
        }
    }

    pub(super) fn eval_vector(&self, expr: &Expr, t: Millis) -> Result<Vec<Sample>> {
        match self.eval(expr, t)? {
            Val::Vector(samples) => Ok(samples),
            other => Err(QueryError::bad_data(format!("expected an instant vector, got {}", other.type_name()))),
        }
    }

    pub(super) fn eval_range(&self, expr: &Expr, t: Millis) -> Result<RangeVector> {
        match self.eval(expr, t)? {
            Val::Range(range) => Ok(range),
            other => Err(QueryError::bad_data(format!("expected a range vector, got {}", other.type_name()))),
        }
    }

    pub(super) fn eval_string(&self, expr: &Expr, t: Millis) -> Result<String> {
        match self.eval(expr, t)? {
            Val::String(value) => Ok(value),
            other => Err(QueryError::bad_data(format!("expected a string, got {}", other.type_name()))),
        }
    }

    fn fetched(&self, vs: &VectorSelector) -> Option<&Fetched> {
        self.fetched.get(&(vs as *const VectorSelector as usize))
    }

    /// The newest sample of each series in `(t - lookback, t]`, unless it marks the series stale.
    pub(super) fn instant_selector(&self, vs: &VectorSelector, t: Millis) -> Vec<Sample> {
        let t = self.effective_time(&vs.at, &vs.offset, t);
        self.fetched(vs)
            .into_iter()
            .flat_map(Fetched::iter)
            .filter_map(|(series, [_, newest])| {
                let newer = samples_until(&series.samples, newest, t);
                let (at, value) = *series.samples[..newer].last()?;
                (at > t.saturating_sub(self.lookback) && !is_stale_marker(value)).then(|| Sample { labels: series.labels.clone(), value, timestamp: at })
            })
            .collect()
    }

    /// Each series' samples in `(end - range, end]`, staleness markers left out.
    fn range_selector(&self, vs: &VectorSelector, end: Millis, range: Millis) -> RangeVector {
        let window = Window { end, range };
        let series = self.windows(vs, window).map(|(labels, points)| Series { labels: labels.clone(), points: points.into_owned() }).collect();
        RangeVector { series, end, range }
    }

    /// A range selector's window at `t`, and each series' samples in it (staleness markers
    /// left out) borrowed from the fetched samples where they can be: a function of each
    /// window needs no range vector built.
    pub(super) fn selector_windows<'e>(
        &'e self,
        ms: &MatrixSelector,
        t: Millis,
    ) -> (Window, impl Iterator<Item = SeriesWindow<'e>> + 'e) {
        let window = Window { end: self.effective_time(&ms.vs.at, &ms.vs.offset, t), range: millis(ms.range) };
        (window, self.windows(&ms.vs, window))
    }

    /// Each fetched series of `vs` with its samples in `window` that are not staleness
    /// markers, if any.
    fn windows<'e>(&'e self, vs: &VectorSelector, window: Window) -> impl Iterator<Item = SeriesWindow<'e>> + 'e {
        self.fetched(vs).into_iter().flat_map(Fetched::iter).filter_map(move |(series, [first, last])| {
            let from = samples_until(&series.samples, first, window.end.saturating_sub(window.range));
            let to = samples_until(&series.samples, last, window.end);
            let samples = &series.samples[from..to];
            let points: Cow<'e, [(Millis, f64)]> = if samples.iter().any(|(_, v)| is_stale_marker(*v)) {
                samples.iter().copied().filter(|(_, v)| !is_stale_marker(*v)).collect::<Vec<_>>().into()
            } else {
                samples.into()
            };
            (!points.is_empty()).then_some((&series.labels, points))
        })
    }

    /// The inner expression evaluated at every multiple of the step in `(end - range, end]`.
    fn subquery(&self, sq: &SubqueryExpr, t: Millis) -> Result<RangeVector> {
        let end = self.effective_time(&sq.at, &sq.offset, t);
        let range = millis(sq.range);
        let step = sq.step.map(millis).filter(|step| *step > 0).unwrap_or(self.subquery_step);
        let first = end.saturating_sub(range).div_euclid(step).saturating_mul(step).saturating_add(step);
        let mut series = SeriesBuilder::default();
        let mut samples_held = self.fetched_samples;
        let key = expr_key(&sq.expr);
        let mut at = first;
        while at <= end {
            self.check_deadline()?;
            let known = self.subquery_values.borrow().get(&key).and_then(|values| values.get(&at).cloned());
            let value = match known {
                Some(value) => value,
                None => {
                    let value = self.eval(&sq.expr, at)?;
                    self.subquery_values.borrow_mut().entry(key).or_default().insert(at, value.clone());
                    value
                }
            };
            samples_held += series.push_step(at, value)?;
            self.check_samples(samples_held)?;
            let Some(next) = at.checked_add(step) else { break };
            at = next;
        }
        // Steps move forward: the next window starts no earlier than this one.
        if let Some(values) = self.subquery_values.borrow_mut().get_mut(&key) {
            *values = values.split_off(&first);
        }
        Ok(RangeVector { series: series.finish(), end, range })
    }
}

fn system_time_millis(time: SystemTime) -> Millis {
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => millis(after),
        Err(before) => -millis(before.duration()),
    }
}

/// Fails when two samples of a vector have the same labels, as Prometheus does after an
/// operation that drops labels.
pub(super) fn ensure_unique_labels(samples: &[Sample]) -> Result<()> {
    let mut seen = std::collections::HashSet::with_capacity(samples.len());
    if samples.iter().all(|s| seen.insert(&s.labels)) {
        Ok(())
    } else {
        Err(QueryError::execution("vector cannot contain metrics with the same labelset"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_escapes_are_read_as_utf8_bytes() {
        assert_eq!(decode_byte_escapes(r#"x{a="\xc3\xa9"}"#).expect("valid UTF-8"), "x{a=\"é\"}");
        assert_eq!(decode_byte_escapes(r#"x{a="\x41\n"}"#).expect("no high bytes"), r#"x{a="\x41\n"}"#);
        assert_eq!(decode_byte_escapes(r#"x{a=`\xff`}"#).expect("raw strings have no escapes"), r#"x{a=`\xff`}"#);
        assert_eq!(decode_byte_escapes(r#"label_replace(x, "\xff", "", "a", "")"#).expect_err("not UTF-8").kind, ErrorKind::BadData);
    }

    #[test]
    fn the_largest_pinned_subexpressions_are_step_invariant() {
        let marked = |query: &str| {
            let expr = parse(query).expect("valid query");
            let mut marked = HashSet::new();
            (mark_step_invariant(&expr, &mut marked), marked.len())
        };
        assert_eq!(marked("sum(rate(x[5m] @ 100))"), (true, 0));
        assert_eq!(marked("sum(rate(x[5m] @ 100)) / sum(rate(x[5m]))"), (false, 1));
        assert_eq!(marked("x @ 100 + time()"), (false, 1));
        assert_eq!(marked("timestamp(x @ 100)"), (false, 1));
        assert_eq!(marked("max_over_time(rate(x[1m] @ 100)[10m:1m])"), (false, 1));
        assert_eq!(marked("x offset 5m + 1"), (false, 0));
    }
}
