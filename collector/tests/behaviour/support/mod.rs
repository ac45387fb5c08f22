//! Harness shared by the behaviour tests: runs the real `meshlight` binary on free loopback
//! ports with a private data directory, and talks to its HTTP API with a blocking client.
//!
//! Every wait here polls with a deadline; nothing sleeps in the hope that something is done.
#![allow(
    dead_code,
    reason = "each behaviour test uses a different part of the harness"
)]

pub(crate) mod differential;
pub(crate) mod metric_history;
pub(crate) mod otlp;
pub(crate) mod profiles;
pub(crate) mod prometheus;
pub(crate) mod rules;
pub(crate) mod webhook;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

/// Environment variable naming the Python interpreter of the interop venv (see scripts/test).
pub(crate) const PYTHON_ENV: &str = "MESHLIGHT_PYTHON";

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two checks of a condition that is polled with a deadline.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How much of the collector's log a failure message quotes.
const LOG_TAIL_BYTES: usize = 20_000;

/// A `meshlight serve` process with its own ports and data directory.
///
/// Dropping it kills the process. When the test is panicking the temporary directory (data
/// and log) is kept and its path printed, so a failure can be inspected.
pub(crate) struct Collector {
    child: Option<Child>,
    scratch: tempfile::TempDir,
    data_dir: PathBuf,
    log_path: PathBuf,
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    api_addr: SocketAddr,
    extra_args: Vec<String>,
    starts: u32,
    http: ureq::Agent,
}

impl Collector {
    /// Starts a collector with default settings and waits until `GET /ready` answers 200.
    pub(crate) fn start() -> Collector {
        Collector::start_with(&[])
    }

    /// Like [`Collector::start`], with extra `serve` arguments (kept for restarts).
    pub(crate) fn start_with(extra_args: &[&str]) -> Collector {
        let scratch = tempfile::Builder::new()
            .prefix("meshlight-behaviour-")
            .tempdir()
            .expect("create a temporary directory for the collector");
        // The log lives beside the data directory, not in it, so the collector never sees it.
        let data_dir = scratch.path().join("data");
        let log_path = scratch.path().join("meshlight.log");
        let [grpc_addr, http_addr, api_addr] = free_loopback_addrs();
        let mut collector = Collector {
            child: None,
            scratch,
            data_dir,
            log_path,
            grpc_addr,
            http_addr,
            api_addr,
            extra_args: extra_args.iter().map(|arg| (*arg).to_owned()).collect(),
            starts: 0,
            http: new_http_agent(),
        };
        collector.spawn_and_wait_until_ready();
        collector
    }

    /// Stops the collector gracefully if it is running (asserting exit status 0), then starts
    /// it again on the same ports with the same data directory.
    pub(crate) fn restart(&mut self) {
        if self.child.is_some() {
            let status = self.terminate();
            assert!(
                status.success(),
                "meshlight exited with {status} after SIGTERM\n{}",
                self.log_tail()
            );
        }
        self.spawn_and_wait_until_ready();
    }

    /// Like [`Collector::restart`], with these extra `serve` arguments from now on.
    pub(crate) fn restart_with(&mut self, extra_args: &[&str]) {
        self.extra_args = extra_args.iter().map(|arg| (*arg).to_owned()).collect();
        self.restart();
    }

    /// SIGKILL, as in a crash or power loss: nothing gets a chance to flush.
    pub(crate) fn kill_hard(&mut self) {
        let Some(mut child) = self.child.take() else {
            panic!("kill_hard: the collector is not running");
        };
        child.kill().expect("send SIGKILL to meshlight");
        child.wait().expect("reap meshlight after SIGKILL");
    }

    /// Sends SIGTERM and waits for the process to exit; returns its exit status.
    pub(crate) fn terminate(&mut self) -> ExitStatus {
        let pid = self.pid();
        // std has no portable way to send SIGTERM, and the workspace denies unsafe code.
        let kill_status = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .expect("run kill -TERM");
        assert!(
            kill_status.success(),
            "kill -TERM {pid} failed: {kill_status}"
        );
        self.wait_for_exit(EXIT_TIMEOUT)
    }

    /// Process id of the running collector.
    pub(crate) fn pid(&self) -> u32 {
        let Some(child) = &self.child else {
            panic!("the collector is not running");
        };
        child.id()
    }

    /// OTLP/gRPC endpoint, e.g. `http://127.0.0.1:41234`.
    pub(crate) fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// OTLP/HTTP base URL without a signal path, e.g. `http://127.0.0.1:41235`.
    pub(crate) fn http_endpoint(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// Base URL of the query/admin API, e.g. `http://127.0.0.1:41236`.
    pub(crate) fn api_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    pub(crate) fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A directory for the test's own files (manifests, child process output); it is removed
    /// with the collector.
    pub(crate) fn scratch_dir(&self) -> &Path {
        self.scratch.path()
    }

    /// Everything the collector printed, across restarts.
    pub(crate) fn log_contents(&self) -> String {
        std::fs::read_to_string(&self.log_path)
            .unwrap_or_else(|error| format!("(cannot read log: {error})"))
    }

    /// The end of the collector's log, labelled, for failure messages.
    pub(crate) fn log_tail(&self) -> String {
        let log = self.log_contents();
        let mut start = log.len().saturating_sub(LOG_TAIL_BYTES);
        while !log.is_char_boundary(start) {
            start += 1;
        }
        format!(
            "--- meshlight log ({}) ---\n{}",
            self.log_path.display(),
            &log[start..]
        )
    }

    /// Runs a SQL query; panics with the response body unless the answer is 200.
    pub(crate) fn sql(&self, query: &str) -> SqlResult {
        let (status, body) = self.sql_raw(query);
        assert_eq!(status, 200, "SQL query failed: {query}\nresponse: {body}");
        serde_json::from_str(&body).unwrap_or_else(|error| {
            panic!("SQL response is not {{columns, rows}}: {error}\nquery: {query}\nbody: {body}")
        })
    }

    /// Runs a SQL query and returns the HTTP status and body, whatever they are.
    pub(crate) fn sql_raw(&self, query: &str) -> (u16, String) {
        let payload = serde_json::json!({ "query": query }).to_string();
        self.post("/api/v1/sql", "application/json", &payload)
            .unwrap_or_else(|error| panic!("POST /api/v1/sql failed: {error}\nquery: {query}"))
    }

    /// The Prometheus text exposition of `GET /metrics`.
    pub(crate) fn metrics_text(&self) -> String {
        let (status, body) = self
            .get("/metrics")
            .unwrap_or_else(|error| panic!("GET /metrics failed: {error}"));
        assert_eq!(status, 200, "GET /metrics answered {status}: {body}");
        body
    }

    /// The value of one series of `GET /metrics`, e.g.
    /// `meshlight_ingest_items_total{signal="traces"}`; label order does not matter.
    /// `None` when the series is not exposed.
    pub(crate) fn metric_value(&self, name_with_labels: &str) -> Option<f64> {
        let Some(wanted) = parse_series(name_with_labels) else {
            panic!("cannot parse series {name_with_labels:?}");
        };
        let text = self.metrics_text();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((series, value)) = split_sample(line) else {
                panic!("cannot parse /metrics line {line:?}");
            };
            if parse_series(series).as_ref() != Some(&wanted) {
                continue;
            }
            let Some(value) = parse_prometheus_float(value) else {
                panic!("series {series} has a value that is not a number: {line:?}");
            };
            return Some(value);
        }
        None
    }

    /// `GET` on the API; returns status and body.
    pub(crate) fn get(&self, path: &str) -> Result<(u16, String), ureq::Error> {
        let mut response = self.http.get(format!("{}{path}", self.api_url())).call()?;
        let status = response.status().as_u16();
        let body = body_text(&mut response)?;
        Ok((status, body))
    }

    /// `POST` on the API; returns status and body.
    pub(crate) fn post(
        &self,
        path: &str,
        content_type: &str,
        body: &str,
    ) -> Result<(u16, String), ureq::Error> {
        let mut response = self
            .http
            .post(format!("{}{path}", self.api_url()))
            .header("Content-Type", content_type)
            .send(body)?;
        let status = response.status().as_u16();
        let body = body_text(&mut response)?;
        Ok((status, body))
    }

    fn spawn_and_wait_until_ready(&mut self) {
        assert!(self.child.is_none(), "the collector is already running");
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open the collector log file");
        // Restarts append to the same log; a marker tells the runs apart.
        writeln!(
            log,
            "=== meshlight start #{} (test harness) ===",
            self.starts
        )
        .expect("write the collector log");
        let stderr_log = log.try_clone().expect("clone the collector log handle");

        let mut command = Command::new(env!("CARGO_BIN_EXE_meshlight"));
        command
            .arg("serve")
            .arg("--otlp-grpc")
            .arg(self.grpc_addr.to_string())
            .arg("--otlp-http")
            .arg(self.http_addr.to_string())
            .arg("--api")
            .arg(self.api_addr.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr_log);
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {command:?}: {error}"));
        self.child = Some(child);
        // A fresh client per process: no connection of the previous process is ever reused.
        self.http = new_http_agent();
        self.wait_until_ready();
    }

    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.try_wait() {
                panic!(
                    "meshlight exited with {status} before it became ready\n{}",
                    self.log_tail()
                );
            }
            let last_answer = match self.get("/ready") {
                Ok((200, _)) => return,
                Ok((status, body)) => format!("GET /ready answered {status}: {body}"),
                Err(error) => format!("GET /ready failed: {error}"),
            };
            if Instant::now() >= deadline {
                self.kill_if_running();
                panic!(
                    "meshlight was not ready within {READY_TIMEOUT:?}; last: {last_answer}\n{}",
                    self.log_tail()
                );
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    fn wait_for_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                self.child = None;
                return status;
            }
            if Instant::now() >= deadline {
                self.kill_if_running();
                panic!(
                    "meshlight did not exit within {timeout:?}\n{}",
                    self.log_tail()
                );
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        let Some(child) = self.child.as_mut() else {
            panic!("the collector is not running");
        };
        child.try_wait().expect("poll the meshlight process")
    }

    fn kill_if_running(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Errors mean the process is already gone, which is what we want.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.kill_if_running();
        if thread::panicking() {
            self.scratch.disable_cleanup(true);
            eprintln!(
                "kept the collector's data directory and log for inspection: {}",
                self.scratch.path().display()
            );
        }
    }
}

/// A response body as text, up to 1 GiB: range queries over hours of series are large.
pub(crate) fn body_text(response: &mut ureq::http::Response<ureq::Body>) -> Result<String, ureq::Error> {
    response.body_mut().with_config().limit(1 << 30).read_to_string()
}

fn new_http_agent() -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        // Non-2xx answers are results to assert on, not transport errors.
        .http_status_as_error(false)
        // The collector is on loopback whatever *_PROXY variables say.
        .proxy(None)
        // No keep-alive pool: an idle pooled connection could hold up a graceful shutdown
        // or be reused against a restarted process.
        .max_idle_connections(0)
        .timeout_global(Some(HTTP_TIMEOUT))
        .build();
    config.into()
}

/// `N` distinct free loopback ports. All are held until all are known, so they differ;
/// another process could still take one before the server binds it, which is unlikely
/// enough on a test machine.
pub(crate) fn free_loopback_addrs<const N: usize>() -> [SocketAddr; N] {
    let listeners =
        [(); N].map(|()| TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port"));
    listeners.map(|listener| {
        listener
            .local_addr()
            .expect("local address of a bound listener")
    })
}

/// The answer of `POST /api/v1/sql`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct SqlResult {
    pub(crate) columns: Vec<String>,
    pub(crate) rows: Vec<Vec<Value>>,
}

impl SqlResult {
    /// The rows, each readable by column name.
    pub(crate) fn records(&self) -> impl Iterator<Item = Record<'_>> {
        self.rows.iter().map(|values| Record {
            columns: &self.columns,
            values,
        })
    }

    /// The only value of a one-row, one-column result (e.g. `SELECT COUNT(*) ...`).
    pub(crate) fn single_value(&self) -> &Value {
        assert!(
            self.rows.len() == 1 && self.rows[0].len() == 1,
            "expected exactly one value, got {self:?}"
        );
        &self.rows[0][0]
    }
}

/// One row of a [`SqlResult`]. The accessors panic, naming the column, when the value is
/// missing or of another JSON type than the one the interface promises.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record<'a> {
    columns: &'a [String],
    values: &'a [Value],
}

impl<'a> Record<'a> {
    pub(crate) fn get(&self, column: &str) -> &'a Value {
        let Some(index) = self.columns.iter().position(|name| name == column) else {
            panic!("no column {column:?} in {:?}", self.columns);
        };
        let Some(value) = self.values.get(index) else {
            panic!("row has no value for column {column:?}: {:?}", self.values);
        };
        value
    }

    pub(crate) fn str(&self, column: &str) -> &'a str {
        let value = self.get(column);
        value
            .as_str()
            .unwrap_or_else(|| panic!("column {column}: expected a string, got {value}"))
    }

    pub(crate) fn u64(&self, column: &str) -> u64 {
        let value = self.get(column);
        value
            .as_u64()
            .unwrap_or_else(|| panic!("column {column}: expected an unsigned integer, got {value}"))
    }

    pub(crate) fn i64(&self, column: &str) -> i64 {
        let value = self.get(column);
        value
            .as_i64()
            .unwrap_or_else(|| panic!("column {column}: expected an integer, got {value}"))
    }

    pub(crate) fn f64(&self, column: &str) -> f64 {
        let value = self.get(column);
        json_f64(value).unwrap_or_else(|| panic!("column {column}: expected a float, got {value}"))
    }

    /// A nullable float column.
    pub(crate) fn optional_f64(&self, column: &str) -> Option<f64> {
        let value = self.get(column);
        if value.is_null() {
            return None;
        }
        Some(
            json_f64(value).unwrap_or_else(|| {
                panic!("column {column}: expected a float or null, got {value}")
            }),
        )
    }

    pub(crate) fn bool(&self, column: &str) -> bool {
        let value = self.get(column);
        value
            .as_bool()
            .unwrap_or_else(|| panic!("column {column}: expected a bool, got {value}"))
    }

    /// A `Map<str, str>` column.
    pub(crate) fn string_map(&self, column: &str) -> BTreeMap<String, String> {
        json_string_map(self.get(column), column)
    }

    pub(crate) fn list(&self, column: &str) -> &'a [Value] {
        let value = self.get(column);
        value
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_else(|| panic!("column {column}: expected a list, got {value}"))
    }

    pub(crate) fn string_list(&self, column: &str) -> Vec<String> {
        self.list(column)
            .iter()
            .map(|item| {
                item.as_str()
                    .unwrap_or_else(|| panic!("column {column}: expected strings, got {item}"))
                    .to_owned()
            })
            .collect()
    }

    pub(crate) fn u64_list(&self, column: &str) -> Vec<u64> {
        self.list(column)
            .iter()
            .map(|item| {
                item.as_u64().unwrap_or_else(|| {
                    panic!("column {column}: expected unsigned integers, got {item}")
                })
            })
            .collect()
    }

    pub(crate) fn f64_list(&self, column: &str) -> Vec<f64> {
        self.list(column)
            .iter()
            .map(|item| {
                json_f64(item)
                    .unwrap_or_else(|| panic!("column {column}: expected floats, got {item}"))
            })
            .collect()
    }

    /// A list of `Map<str, str>`, e.g. `"Events.Attributes"`.
    pub(crate) fn string_map_list(&self, column: &str) -> Vec<BTreeMap<String, String>> {
        self.list(column)
            .iter()
            .map(|item| json_string_map(item, column))
            .collect()
    }
}

/// A float as the SQL API encodes it: a JSON number, or "NaN", "+Inf", "-Inf".
fn json_f64(value: &Value) -> Option<f64> {
    match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => match text.as_str() {
            "NaN" => Some(f64::NAN),
            "+Inf" => Some(f64::INFINITY),
            "-Inf" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

fn json_string_map(value: &Value, column: &str) -> BTreeMap<String, String> {
    let Some(object) = value.as_object() else {
        panic!("column {column}: expected a map (JSON object), got {value}");
    };
    object
        .iter()
        .map(|(key, item)| {
            let Some(text) = item.as_str() else {
                panic!("column {column}: map value of {key:?} is not a string: {item}");
            };
            (key.clone(), text.to_owned())
        })
        .collect()
}

/// Asserts two string maps are equal, listing missing, unexpected and differing keys.
pub(crate) fn assert_same_map(
    context: &str,
    actual: &BTreeMap<String, String>,
    expected: &BTreeMap<String, String>,
) {
    if actual == expected {
        return;
    }
    let mut differences = Vec::new();
    for (key, expected_value) in expected {
        match actual.get(key) {
            None => differences.push(format!("  missing {key:?} (expected {expected_value:?})")),
            Some(actual_value) if actual_value != expected_value => {
                differences.push(format!(
                    "  {key:?}: stored {actual_value:?}, expected {expected_value:?}"
                ));
            }
            Some(_) => {}
        }
    }
    for (key, actual_value) in actual {
        if !expected.contains_key(key) {
            differences.push(format!("  unexpected {key:?} = {actual_value:?}"));
        }
    }
    panic!("{context}: maps differ\n{}", differences.join("\n"));
}

/// A SQL string literal, quotes escaped.
pub(crate) fn sql_string(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Calls `attempt` until it returns `Ok`, at most for `timeout`; then panics with the last
/// `Err` it gave, prefixed with `what`.
pub(crate) fn poll_until<T>(
    timeout: Duration,
    what: &str,
    mut attempt: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let problem = match attempt() {
            Ok(value) => return value,
            Err(problem) => problem,
        };
        if Instant::now() >= deadline {
            panic!("{what}: not reached within {timeout:?}; last: {problem}");
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// `text` percent-encoded for a URL query or a form body.
pub(crate) fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The workspace root (where `scripts/` and `tests/interop/` are).
pub(crate) fn repo_root() -> PathBuf {
    let collector_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some(root) = collector_dir.parent() else {
        panic!("{} has no parent directory", collector_dir.display());
    };
    root.to_path_buf()
}

/// The Python interpreter that has `tests/interop/requirements.txt` installed.
///
/// Interop tests are never skipped: without the interpreter they fail and say how to get it.
pub(crate) fn python() -> PathBuf {
    let Some(path) = std::env::var_os(PYTHON_ENV) else {
        panic!(
            "{PYTHON_ENV} is not set. The interop tests run the OpenTelemetry Python SDK from a venv \
             with tests/interop/requirements.txt installed; run the tests with scripts/test, which \
             creates .venv and sets {PYTHON_ENV}, or set it to such an interpreter yourself"
        );
    };
    let path = PathBuf::from(path);
    assert!(
        path.exists(),
        "{PYTHON_ENV}={} does not exist; run scripts/test to create the venv",
        path.display()
    );
    path
}

/// What a finished child process printed.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Finished {
    /// stdout and stderr, labelled, for failure messages.
    pub(crate) fn report(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout, self.stderr
        )
    }
}

/// Runs `command` to completion with a deadline, its output going to `<name>.stdout` and
/// `<name>.stderr` in `output_dir` (files, so a chatty child can never block on a full pipe).
pub(crate) fn run_to_completion(
    command: &mut Command,
    timeout: Duration,
    output_dir: &Path,
    name: &str,
) -> Finished {
    let stdout_path = output_dir.join(format!("{name}.stdout"));
    let stderr_path = output_dir.join(format!("{name}.stderr"));
    let stdout_file = File::create(&stdout_path).expect("create the child's stdout file");
    let stderr_file = File::create(&stderr_path).expect("create the child's stderr file");
    command
        .stdin(Stdio::null())
        .stdout(stdout_file)
        .stderr(stderr_file);
    let mut child = command
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {command:?}: {error}"));

    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll the child process") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let (stdout, stderr) = read_output(&stdout_path, &stderr_path);
            panic!(
                "{command:?} did not finish within {timeout:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
            );
        }
        thread::sleep(POLL_INTERVAL);
    };
    let (stdout, stderr) = read_output(&stdout_path, &stderr_path);
    Finished {
        status,
        stdout,
        stderr,
    }
}

fn read_output(stdout_path: &Path, stderr_path: &Path) -> (String, String) {
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .unwrap_or_else(|error| format!("(cannot read {}: {error})", path.display()))
    };
    (read(stdout_path), read(stderr_path))
}

/// A Prometheus series: metric name and label set.
#[derive(Debug, PartialEq, Eq)]
struct Series {
    name: String,
    labels: BTreeMap<String, String>,
}

/// Parses `name` or `name{a="x",b="y"}` (label values with Prometheus escapes).
fn parse_series(text: &str) -> Option<Series> {
    let text = text.trim();
    let Some(open) = text.find('{') else {
        return Some(Series {
            name: text.to_owned(),
            labels: BTreeMap::new(),
        });
    };
    let name = text[..open].trim().to_owned();
    let body = text[open + 1..].strip_suffix('}')?;
    let mut labels = BTreeMap::new();
    let mut chars = body.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(',' | ' ')) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next() != Some('=') || chars.next() != Some('"') {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    escaped => value.push(escaped),
                },
                c => value.push(c),
            }
        }
        labels.insert(key.trim().to_owned(), value);
    }
    Some(Series { name, labels })
}

/// Splits a sample line into its series and its value text.
fn split_sample(line: &str) -> Option<(&str, &str)> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let series_end = if line[name_end..].starts_with('{') {
        name_end + closing_brace_offset(&line[name_end..])? + 1
    } else {
        name_end
    };
    let value = line[series_end..].split_whitespace().next()?;
    Some((&line[..series_end], value))
}

/// Offset of the `}` closing the label set that `labels` starts with; braces inside quoted
/// label values do not count.
fn closing_brace_offset(labels: &str) -> Option<usize> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (offset, c) in labels.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '}' if !in_quotes => return Some(offset),
            _ => {}
        }
    }
    None
}

fn parse_prometheus_float(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}
