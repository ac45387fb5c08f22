//! Harness for the middleware's behaviour tests: the real collector (in process, on free
//! loopback ports, with a private data directory), the demo mesh exporting to it, and the
//! OpenTelemetry Python SDK peer.
//!
//! Every wait polls with a deadline; nothing sleeps in the hope that something is done.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use meshlight_collector::config::Config;
use meshlight_middleware::{Settings, Telemetry, TelemetryGuard};
use serde_json::Value;

use crate::services::{Mesh, MeshOptions, MeshTelemetry};

/// Environment variable naming the Python interpreter of the interop venv (see scripts/test).
const PYTHON_ENV: &str = "MESHLIGHT_PYTHON";
const DEADLINE: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A collector running in this process until dropped.
pub(crate) struct Collector {
    grpc: SocketAddr,
    otlp_http: SocketAddr,
    api: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<thread::JoinHandle<()>>,
    _data: tempfile::TempDir,
    http: ureq::Agent,
}

impl Collector {
    pub(crate) fn start() -> Collector {
        let data = tempfile::Builder::new()
            .prefix("meshlight-middleware-")
            .tempdir()
            .expect("temporary directory");
        let [otlp_grpc, otlp_http, api] = free_loopback_addrs();
        let config = Config {
            otlp_grpc,
            otlp_http,
            api,
            data_dir: data.path().to_owned(),
            ..Config::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("collector runtime");
            let shutdown = async move {
                let _ = stopped.await;
            };
            runtime
                .block_on(meshlight_collector::server::serve(config, shutdown))
                .expect("collector runs");
        });
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(DEADLINE))
            .build()
            .new_agent();
        let collector = Collector {
            grpc: otlp_grpc,
            otlp_http,
            api,
            stop: Some(stop),
            server: Some(server),
            _data: data,
            http,
        };
        poll_until("the collector is ready", || {
            let ready = collector
                .http
                .get(format!("http://{}/ready", collector.api))
                .call();
            ready.ok().filter(|response| response.status() == 200)
        });
        collector
    }

    /// The OTLP/gRPC endpoint for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub(crate) fn otlp_endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// The OTLP/HTTP base URL, where profiles are uploaded (`/ingest`).
    pub(crate) fn otlp_http_url(&self) -> String {
        format!("http://{}", self.otlp_http)
    }

    /// The body of a successful `GET` on the API port.
    pub(crate) fn api_get(&self, path_and_query: &str) -> String {
        let mut response = self
            .http
            .get(format!("http://{}{path_and_query}", self.api))
            .call()
            .expect("API request");
        let text = response.body_mut().read_to_string().expect("API answer");
        assert_eq!(response.status(), 200, "{path_and_query}: {text}");
        text
    }

    /// Rows of `query`, each as column name → value.
    pub(crate) fn sql(&self, query: &str) -> Vec<serde_json::Map<String, Value>> {
        let mut response = self
            .http
            .post(format!("http://{}/api/v1/sql", self.api))
            .header("content-type", "application/json")
            .send(serde_json::json!({ "query": query }).to_string())
            .expect("SQL request");
        let text = response.body_mut().read_to_string().expect("SQL answer");
        let body: Value = serde_json::from_str(&text).expect("SQL answer is JSON");
        assert_eq!(response.status(), 200, "{query}: {body}");
        let columns: Vec<String> =
            serde_json::from_value(body["columns"].clone()).expect("columns");
        let rows: Vec<Vec<Value>> = serde_json::from_value(body["rows"].clone()).expect("rows");
        rows.into_iter()
            .map(|row| columns.iter().cloned().zip(row).collect())
            .collect()
    }

    /// Polls `query` until it returns at least `count` rows.
    pub(crate) fn wait_for_rows(
        &self,
        query: &str,
        count: usize,
    ) -> Vec<serde_json::Map<String, Value>> {
        poll_until(&format!("{count} rows of {query}"), || {
            Some(self.sql(query)).filter(|rows| rows.len() >= count)
        })
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }
}

/// The demo mesh, on a runtime of its own, with each service exporting to `collector`.
pub(crate) struct InstrumentedMesh {
    runtime: tokio::runtime::Runtime,
    mesh: Mesh,
    guards: Vec<TelemetryGuard>,
}

impl InstrumentedMesh {
    pub(crate) fn start(
        collector: &Collector,
        settings: &Settings,
        inventory_upstream: Option<http::Uri>,
    ) -> Self {
        let telemetry = |name: &str| {
            Telemetry::builder()
                .service_name(name)
                .settings(settings.clone())
                .endpoint(collector.otlp_endpoint())
                .build()
                .expect("telemetry")
        };
        let guards = vec![
            telemetry("gateway"),
            telemetry("orders"),
            telemetry("inventory"),
        ];
        let services = MeshTelemetry {
            gateway: &guards[0],
            orders: &guards[1],
            inventory: &guards[2],
        };
        let options = MeshOptions {
            slow: Duration::from_millis(50),
            inventory_upstream,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("mesh runtime");
        let mesh = runtime
            .block_on(Mesh::start(services, options))
            .expect("mesh starts");
        InstrumentedMesh {
            runtime,
            mesh,
            guards,
        }
    }

    pub(crate) fn gateway(&self) -> std::net::SocketAddr {
        self.mesh.gateway
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.mesh.gateway)
    }

    /// Stops the services and flushes every span and metric to the collector.
    pub(crate) fn stop_and_flush(self) {
        self.runtime.block_on(self.mesh.stop());
        drop(self.guards);
    }
}

/// A GET through a plain HTTP client (no instrumentation), with extra headers.
pub(crate) fn get(url: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(DEADLINE))
        .build()
        .new_agent();
    let mut request = agent.get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut response = request.call().expect("GET");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The OpenTelemetry Python SDK peer (`tests/interop/middleware_peer.py`).
pub(crate) struct PythonPeer;

impl PythonPeer {
    fn command() -> Command {
        let python = std::env::var(PYTHON_ENV).unwrap_or_else(|_| {
            panic!("{PYTHON_ENV} names the interop venv's python; run scripts/test")
        });
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/interop/middleware_peer.py");
        let mut command = Command::new(python);
        command.arg(script);
        command
    }

    /// Starts the callee and returns it with its URL.
    pub(crate) fn callee() -> (KillOnDrop, http::Uri) {
        let mut child = Self::command()
            .arg("callee")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the Python callee");
        let stdout = child.stdout.take().expect("piped stdout");
        let child = KillOnDrop(child);
        let mut port = String::new();
        BufReader::new(stdout)
            .read_line(&mut port)
            .expect("the callee prints its port");
        let url = format!("http://127.0.0.1:{}/stock", port.trim())
            .parse()
            .expect("callee URL");
        (child, url)
    }

    /// Runs the caller against `url` and returns what it printed.
    pub(crate) fn call(url: &str, lane: &str) -> Value {
        let output = Self::command()
            .args(["caller", url, lane])
            .output()
            .expect("run the Python caller");
        assert!(
            output.status.success(),
            "python caller: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("the caller prints JSON")
    }
}

/// A child process killed when the test ends, however it ends.
pub(crate) struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `check` until it returns `Some`, panicking with `what` after the deadline.
pub(crate) fn poll_until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(POLL_INTERVAL);
    }
}

fn free_loopback_addrs() -> [SocketAddr; 3] {
    let listeners =
        [(); 3].map(|()| TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port"));
    listeners.map(|listener| listener.local_addr().expect("local address"))
}

/// A string field of a JSON row.
pub(crate) fn text<'a>(row: &'a serde_json::Map<String, Value>, column: &str) -> &'a str {
    row.get(column).and_then(Value::as_str).unwrap_or_default()
}
