//! Runs Prometheus's PromQL test scripts (`promql/promqltest/testdata/*.test`) against
//! the engine over in-memory series. The format is described in
//! `../shared/testdata/promql/README.md`.
//!
//! Native histograms are not supported: a case is skipped when its expected output holds
//! one, when it calls a native-histogram function, or when it selects a series that a
//! `load` or `load_with_nhcb` created as a native histogram.

use std::collections::HashSet;
use std::fmt;
use std::sync::LazyLock;

use promql_parser::label::MatchOp;
use promql_parser::parser::{self, Expr};
use regex::Regex;

use super::functions::{almost_equal, parse_float};
use super::{Engine, Labels, MemoryStorage, Millis, Series, Value, METRIC_NAME, STALE_NAN};

/// Relative tolerance of value comparisons, as in Prometheus's test runner.
const EPSILON: f64 = 1e-6;

/// Functions that only read native histograms.
const NATIVE_HISTOGRAM_FUNCTIONS: &[&str] =
    &["histogram_count", "histogram_sum", "histogram_avg", "histogram_fraction", "histogram_stddev", "histogram_stdvar", "histogram_quantiles", "info"];

/// The outcome of one script.
#[derive(Debug, Default)]
pub struct Report {
    pub passed: usize,
    pub failed: Vec<Failure>,
    /// Cases skipped because they need native histograms.
    pub skipped: usize,
}

impl Report {
    /// Eval cases run (passed or failed).
    pub fn ran(&self) -> usize {
        self.passed + self.failed.len()
    }
}

/// A case that did not give the expected result.
#[derive(Debug)]
pub struct Failure {
    pub line: usize,
    pub query: String,
    pub reason: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.query, self.reason)
    }
}

/// Runs every command of a script in order.
pub async fn run(script: &str) -> Report {
    let mut runner = Runner { engine: Engine::default(), storage: MemoryStorage::default(), native_names: HashSet::new(), report: Report::default() };
    for command in commands(script) {
        if let Err(reason) = runner.command(&command).await {
            runner.report.failed.push(Failure { line: command.line, query: command.head.clone(), reason });
        }
    }
    runner.report
}

/// A command line and the indented lines under it.
struct Command {
    line: usize,
    head: String,
    body: Vec<(usize, String)>,
}

fn commands(script: &str) -> Vec<Command> {
    let mut commands: Vec<Command> = Vec::new();
    for (i, raw) in script.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if raw.starts_with([' ', '\t']) {
            if let Some(command) = commands.last_mut() {
                command.body.push((i + 1, trimmed.to_owned()));
            }
        } else {
            commands.push(Command { line: i + 1, head: trimmed.to_owned(), body: Vec::new() });
        }
    }
    commands
}

struct Runner {
    engine: Engine,
    storage: MemoryStorage,
    /// Metric names loaded as native histograms.
    native_names: HashSet<String>,
    report: Report,
}

/// What an eval expects, from its qualifiers and result lines.
#[derive(Default)]
struct Expectation {
    fail: bool,
    fail_message: Option<String>,
    fail_regex: Option<String>,
    ordered: bool,
    string: Option<String>,
    /// Result lines: a series and its values, or a bare scalar (empty labels, no name).
    results: Vec<(Option<Labels>, Vec<Option<f64>>)>,
    native_histograms: bool,
}

enum Eval {
    Instant { at: Millis },
    Range { start: Millis, end: Millis, step: Millis },
}

impl Runner {
    async fn command(&mut self, command: &Command) -> Result<(), String> {
        let (keyword, rest) = command.head.split_once(char::is_whitespace).unwrap_or((&command.head, ""));
        match keyword {
            "clear" => {
                self.storage.clear();
                self.native_names.clear();
                Ok(())
            }
            "load" | "load_with_nhcb" => self.load(rest.trim(), &command.body, keyword == "load_with_nhcb"),
            "eval" | "eval_fail" | "eval_ordered" | "eval_warn" | "eval_info" => {
                let mut expectation = Expectation { fail: keyword == "eval_fail", ordered: keyword == "eval_ordered", ..Default::default() };
                let (eval, query) = parse_eval_head(rest.trim())?;
                expectation.read(&command.body, &eval)?;
                if expectation.native_histograms || self.needs_native_histograms(&query) {
                    self.report.skipped += 1;
                    return Ok(());
                }
                match self.check(&eval, &query, &expectation).await {
                    Ok(()) => {
                        self.report.passed += 1;
                        Ok(())
                    }
                    Err(reason) => {
                        self.report.failed.push(Failure { line: command.line, query: query.clone(), reason });
                        Ok(())
                    }
                }
            }
            other => Err(format!("unknown command {other:?}")),
        }
    }

    fn load(&mut self, step: &str, body: &[(usize, String)], with_nhcb: bool) -> Result<(), String> {
        let step = parse_duration(step)?;
        for (line, text) in body {
            let (selector, values) = split_series_line(text).ok_or_else(|| format!("line {line}: a series and its values expected"))?;
            let labels = parse_series(selector).map_err(|e| format!("line {line}: {e}"))?;
            if values.contains("{{") {
                self.native_names.insert(labels.metric_name().to_owned());
                continue;
            }
            if let Some(base) = labels.metric_name().strip_suffix("_bucket").filter(|_| with_nhcb) {
                self.native_names.insert(base.to_owned());
            }
            for (i, value) in expand_values(values).map_err(|e| format!("line {line}: {e}"))?.into_iter().enumerate() {
                if let Some(value) = value {
                    self.storage.push(&labels, i as Millis * step, value);
                }
            }
        }
        Ok(())
    }

    /// Whether the query reads native histograms: a native-histogram function, or a
    /// selector for a series loaded as one.
    fn needs_native_histograms(&self, query: &str) -> bool {
        let Ok(expr) = parser::parse(query) else { return false };
        let mut needs = false;
        visit(&expr, &mut |expr| match expr {
            Expr::Call(call) if NATIVE_HISTOGRAM_FUNCTIONS.contains(&call.func.name) => needs = true,
            Expr::VectorSelector(vs) => needs |= self.selects_native(vs),
            Expr::MatrixSelector(ms) => needs |= self.selects_native(&ms.vs),
            _ => {}
        });
        needs
    }

    /// Whether the selector's name (or its `__name__` matchers) can match a native histogram.
    fn selects_native(&self, vs: &promql_parser::parser::VectorSelector) -> bool {
        let name_matchers: Vec<_> = vs.matchers.matchers.iter().filter(|m| m.name == METRIC_NAME).collect();
        self.native_names.iter().any(|native| {
            vs.name.as_ref().is_none_or(|name| name == native)
                && (vs.name.is_some() || !name_matchers.is_empty())
                && name_matchers.iter().all(|m| m.is_match(native))
        })
    }

    async fn check(&self, eval: &Eval, query: &str, expectation: &Expectation) -> Result<(), String> {
        let result = match eval {
            Eval::Instant { at } => self.engine.instant(&self.storage, query, *at).await,
            Eval::Range { start, end, step } => self.engine.range(&self.storage, query, *start, *end, *step).await.map(Value::Matrix),
        };
        match (result, expectation.fail) {
            (Err(error), true) => {
                if let Some(message) = expectation.fail_message.as_ref().filter(|m| **m != error.message) {
                    return Err(format!("failed with {:?}, expected the message {message:?}", error.message));
                }
                if let Some(pattern) = &expectation.fail_regex {
                    let regex = Regex::new(pattern).map_err(|e| format!("bad expected regex: {e}"))?;
                    if !regex.is_match(&error.message) {
                        return Err(format!("failed with {:?}, expected a message matching {pattern:?}", error.message));
                    }
                }
                Ok(())
            }
            (Err(error), false) => Err(format!("unexpected error: {error}")),
            (Ok(value), true) => Err(format!("expected an error, got {}", describe(&value))),
            (Ok(value), false) => expectation.compare(value, eval),
        }
    }
}

/// `instant at <time> <query>` or `range from <t> to <t> step <d> <query>`.
fn parse_eval_head(rest: &str) -> Result<(Eval, String), String> {
    let mut words = rest.split_whitespace();
    let mut word = |expected: Option<&str>| -> Result<String, String> {
        let next = words.next().ok_or_else(|| format!("incomplete eval command: {rest}"))?;
        match expected {
            Some(expected) if next != expected => Err(format!("expected {expected:?} in eval command: {rest}")),
            _ => Ok(next.to_owned()),
        }
    };
    let eval = match word(None)?.as_str() {
        "instant" => {
            word(Some("at"))?;
            Eval::Instant { at: parse_duration(&word(None)?)? }
        }
        "range" => {
            word(Some("from"))?;
            let start = parse_duration(&word(None)?)?;
            word(Some("to"))?;
            let end = parse_duration(&word(None)?)?;
            word(Some("step"))?;
            Eval::Range { start, end, step: parse_duration(&word(None)?)? }
        }
        other => return Err(format!("unknown eval kind {other:?}")),
    };
    let query = words.collect::<Vec<_>>().join(" ");
    Ok((eval, query))
}

impl Expectation {
    fn read(&mut self, body: &[(usize, String)], eval: &Eval) -> Result<(), String> {
        for (line, text) in body {
            if let Some(qualifier) = text.strip_prefix("expect ") {
                let qualifier = qualifier.trim();
                if let Some(rest) = qualifier.strip_prefix("fail") {
                    self.fail = true;
                    let rest = rest.trim();
                    if let Some(message) = rest.strip_prefix("msg:") {
                        self.fail_message = Some(message.trim().to_owned());
                    } else if let Some(pattern) = rest.strip_prefix("regex:") {
                        self.fail_regex = Some(pattern.trim().to_owned());
                    }
                } else if qualifier == "ordered" {
                    self.ordered = true;
                } else if let Some(string) = qualifier.strip_prefix("string") {
                    self.string = Some(unquote(string.trim()).map_err(|e| format!("line {line}: {e}"))?);
                }
                // `expect warn`, `info`, `no_warn` and `no_info` are about annotations,
                // which the engine does not produce; the values are still checked.
                continue;
            }
            if text.contains("{{") {
                self.native_histograms = true;
                continue;
            }
            self.results.push(parse_result_line(text, eval).map_err(|e| format!("line {line}: {e}"))?);
        }
        Ok(())
    }

    fn compare(&self, value: Value, eval: &Eval) -> Result<(), String> {
        match value {
            Value::String(actual) => match &self.string {
                Some(expected) if *expected == actual => Ok(()),
                _ => Err(format!("got the string {actual:?}")),
            },
            Value::Scalar(actual) => match self.results.as_slice() {
                [(None, values)] if values.len() == 1 && values[0].is_some_and(|v| almost_equal(v, actual, EPSILON)) => Ok(()),
                _ => Err(format!("got the scalar {actual}")),
            },
            Value::Vector(samples) => {
                let actual: Vec<Series> = samples.into_iter().map(|s| Series { labels: s.labels, points: vec![(s.timestamp, s.value)] }).collect();
                self.compare_series(&actual, eval)
            }
            Value::Matrix(series) => self.compare_series(&series, eval),
        }
    }

    /// Every expected series present with its values, and nothing else.
    fn compare_series(&self, actual: &[Series], eval: &Eval) -> Result<(), String> {
        if actual.len() != self.results.len() {
            return Err(format!("expected {} series, got {}: {}", self.results.len(), actual.len(), describe_series(actual)));
        }
        for (position, (labels, values)) in self.results.iter().enumerate() {
            let labels = labels.clone().unwrap_or_default();
            let found = if self.ordered { actual.get(position).filter(|s| s.labels == labels) } else { actual.iter().find(|s| s.labels == labels) };
            let Some(series) = found else {
                return Err(format!("expected {labels} (position {position}), got {}", describe_series(actual)));
            };
            let expected: Vec<(Millis, f64)> = match eval {
                Eval::Instant { at } => values.iter().flatten().map(|v| (*at, *v)).collect(),
                Eval::Range { start, step, .. } => {
                    values.iter().enumerate().filter_map(|(i, v)| v.map(|v| (start + i as Millis * step, v))).collect()
                }
            };
            let same = expected.len() == series.points.len()
                && expected.iter().zip(&series.points).all(|(e, a)| e.0 == a.0 && almost_equal(e.1, a.1, EPSILON));
            if !same {
                return Err(format!("{labels}: expected {expected:?}, got {:?}", series.points));
            }
        }
        Ok(())
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Scalar(v) => format!("the scalar {v}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Vector(samples) => format!("{} samples", samples.len()),
        Value::Matrix(series) => format!("{} series", series.len()),
    }
}

fn describe_series(series: &[Series]) -> String {
    let shown: Vec<String> = series.iter().take(5).map(|s| format!("{} {:?}", s.labels, s.points)).collect();
    format!("[{}]", shown.join("; "))
}

/// A result line: `series{labels} values...`, `{labels} values...`, or a bare scalar.
fn parse_result_line(text: &str, eval: &Eval) -> Result<(Option<Labels>, Vec<Option<f64>>), String> {
    if let Ok(value) = parse_float(text) {
        return Ok((None, vec![Some(value)]));
    }
    let (selector, values) = split_series_line(text).ok_or("a series and its values expected")?;
    let labels = parse_series(selector)?;
    let values = expand_values(values)?;
    if matches!(eval, Eval::Instant { .. }) && values.len() != 1 {
        return Err(format!("one value expected for an instant result, got {}", values.len()));
    }
    Ok((Some(labels), values))
}

/// Splits `name{a="b c"} 1 2` into the series and its values, honouring quotes.
fn split_series_line(text: &str) -> Option<(&str, &str)> {
    let mut in_quotes = false;
    let mut escaped = false;
    let mut in_braces = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '{' if !in_quotes => in_braces = true,
            '}' if !in_quotes => return Some((&text[..=i], text[i + 1..].trim())),
            c if c.is_whitespace() && !in_quotes && !in_braces => return Some((&text[..i], text[i..].trim())),
            _ => {}
        }
    }
    None
}

/// Parses `name{a="b"}` with the PromQL parser, so quoting follows PromQL's rules.
fn parse_series(selector: &str) -> Result<Labels, String> {
    if selector == "{}" {
        return Ok(Labels::default());
    }
    let Ok(Expr::VectorSelector(vs)) = parser::parse(selector) else {
        return Err(format!("not a series: {selector}"));
    };
    let mut pairs: Vec<(String, String)> = vs.name.iter().map(|name| (METRIC_NAME.to_owned(), name.clone())).collect();
    for matcher in &vs.matchers.matchers {
        if matcher.op != MatchOp::Equal {
            return Err(format!("only equality is allowed in a series: {selector}"));
        }
        pairs.push((matcher.name.clone(), matcher.value.clone()));
    }
    Ok(Labels::from_pairs(pairs))
}

/// One value token: `_`, `_xN`, `stale`, `v`, `vxN`, `v+dxN` or `v-dxN`.
static VALUE: LazyLock<Regex> = LazyLock::new(|| {
    let number = r"[+-]?(?:(?:[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)|0x[0-9a-fA-F]+|Inf|inf|NaN|nan)";
    Regex::new(&format!(r"^(?P<start>_|stale|{number})(?:(?P<delta>[+-](?:[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?|Inf|inf))?x(?P<times>[0-9]+))?$"))
        .expect("valid regex")
});

/// Expands a series' value notation into one value (or gap) per step.
fn expand_values(text: &str) -> Result<Vec<Option<f64>>, String> {
    let mut values = Vec::new();
    for token in text.split_whitespace() {
        let captures = VALUE.captures(token).ok_or_else(|| format!("bad value {token:?}"))?;
        let start = &captures["start"];
        let times: Option<usize> = captures.name("times").map(|t| t.as_str().parse().expect("digits"));
        let first = match start {
            "_" => {
                values.extend(std::iter::repeat_n(None, times.unwrap_or(1)));
                continue;
            }
            "stale" => STALE_NAN,
            number => parse_number(number)?,
        };
        let delta = captures.name("delta").map(|d| parse_number(d.as_str())).transpose()?.unwrap_or(0.0);
        let mut value = first;
        for _ in 0..=times.unwrap_or(0) {
            values.push(Some(value));
            value += delta;
        }
    }
    Ok(values)
}

fn parse_number(text: &str) -> Result<f64, String> {
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => (-1.0, rest),
        None => (1.0, text.strip_prefix('+').unwrap_or(text)),
    };
    let magnitude = match digits.strip_prefix("0x") {
        Some(hex) => i64::from_str_radix(hex, 16).map(|v| v as f64).map_err(|e| e.to_string())?,
        None => parse_float(digits).map_err(|e| format!("bad number {text:?}: {e}"))?,
    };
    Ok(sign * magnitude)
}

/// A Prometheus duration (`1h30m`, `10s53ms`, `0m`, `-5m`) or a plain number of seconds, in ms.
fn parse_duration(text: &str) -> Result<Millis, String> {
    let (sign, mut rest) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text),
    };
    if let Ok(seconds) = rest.parse::<f64>() {
        return Ok(sign * (seconds * 1000.0).round() as Millis);
    }
    let mut total: Millis = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).filter(|at| *at > 0).ok_or_else(|| format!("bad duration {text:?}"))?;
        let amount: Millis = rest[..digits].parse().map_err(|_| format!("bad duration {text:?}"))?;
        rest = &rest[digits..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = match &rest[..unit_end] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "y" => 31_536_000_000,
            other => return Err(format!("bad duration unit {other:?} in {text:?}")),
        };
        total += amount * unit;
        rest = &rest[unit_end..];
    }
    Ok(sign * total)
}

/// A double-quoted string with Go escapes.
fn unquote(text: &str) -> Result<String, String> {
    match parser::parse(text) {
        Ok(Expr::StringLiteral(literal)) => Ok(literal.val),
        _ => Err(format!("a quoted string expected: {text}")),
    }
}

/// Calls `f` on every node of the tree.
fn visit<'e>(expr: &'e Expr, f: &mut impl FnMut(&'e Expr)) {
    f(expr);
    match expr {
        Expr::Aggregate(agg) => {
            visit(&agg.expr, f);
            if let Some(param) = &agg.param {
                visit(param, f);
            }
        }
        Expr::Unary(unary) => visit(&unary.expr, f),
        Expr::Binary(binary) => {
            visit(&binary.lhs, f);
            visit(&binary.rhs, f);
        }
        Expr::Paren(paren) => visit(&paren.expr, f),
        Expr::Subquery(sq) => visit(&sq.expr, f),
        Expr::Call(call) => call.args.args.iter().for_each(|arg| visit(arg, f)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promql::is_stale_marker;

    #[test]
    fn value_notation_expands_like_prometheus() {
        assert_eq!(expand_values("1+2x3").expect("valid notation"), vec![Some(1.0), Some(3.0), Some(5.0), Some(7.0)]);
        assert_eq!(expand_values("_x2 5 -1-1x1").expect("valid notation"), vec![None, None, Some(5.0), Some(-1.0), Some(-2.0)]);
        assert_eq!(expand_values("stale").expect("valid notation").first().copied().flatten().map(is_stale_marker), Some(true));
    }

    #[test]
    fn series_lines_split_after_the_braces() {
        assert_eq!(split_series_line(r#"a{b="c d"} 1 2"#), Some((r#"a{b="c d"}"#, "1 2")));
        assert_eq!(split_series_line("up 1"), Some(("up", "1")));
    }
}
