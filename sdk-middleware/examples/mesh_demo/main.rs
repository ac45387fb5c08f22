//! Three instrumented services in one process (HTTP gateway → gRPC orders → gRPC inventory),
//! driven by a small load generator, exporting to the collector named by
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (default `http://localhost:4317`):
//!
//! ```text
//! cargo run --release -p meshlight-middleware --example mesh_demo -- --requests 200
//! ```
//!
//! Every `--slow-every`-th request goes to `GET /report`, whose `demo.Orders/Report` takes
//! `--slow-ms` (3.5 s by default): the method the shipped "average latency above 3 s" alert
//! rule catches. The process exits after `--requests` requests, once everything is flushed.

mod services;

use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use meshlight_middleware::Telemetry;
use services::{Mesh, MeshOptions, MeshTelemetry, TENANT_BAGGAGE};

#[derive(Debug, Parser)]
#[command(
    about = "HTTP gateway → gRPC orders → gRPC inventory, instrumented with meshlight-middleware"
)]
struct Args {
    /// Requests to send before exiting.
    #[arg(long, default_value_t = 100)]
    requests: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: u64,
    /// Requests per second across all workers; unlimited when 0.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Every n-th request calls the slow method (0: never).
    #[arg(long, default_value_t = 20)]
    slow_every: u64,
    /// How long the slow method takes, in milliseconds.
    #[arg(long, default_value_t = 3500)]
    slow_ms: u64,
    /// Lane sent on every request (header `x-asm-prefer-tag`), if any.
    #[arg(long)]
    lane: Option<String>,
    /// An HTTP URL that inventory calls on every order: its own outbound hop.
    #[arg(long)]
    inventory_upstream: Option<http::Uri>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The gateway installs the process-wide `tracing` subscriber; the others only export.
    let gateway = Telemetry::builder().service_name("gateway").init()?;
    let orders = Telemetry::builder().service_name("orders").build()?;
    let inventory = Telemetry::builder().service_name("inventory").build()?;
    let options = MeshOptions {
        slow: Duration::from_millis(args.slow_ms),
        inventory_upstream: args.inventory_upstream.clone(),
    };
    let telemetry = MeshTelemetry {
        gateway: &gateway,
        orders: &orders,
        inventory: &inventory,
    };
    let mesh = Mesh::start(telemetry, options).await?;
    tracing::info!(gateway = %mesh.gateway, requests = args.requests, "mesh started");

    let started = Instant::now();
    let summary = drive(&args, &mesh).await?;
    mesh.stop().await;
    println!("{summary}");
    println!(
        "elapsed {:.1} s; flushing telemetry",
        started.elapsed().as_secs_f64()
    );
    // Dropping the guards exports every span and metric still buffered; that blocks, so it
    // happens off the runtime's workers.
    tokio::task::spawn_blocking(move || drop((inventory, orders, gateway))).await?;
    Ok(())
}

/// Outcome of the load run.
struct Summary {
    ok: u64,
    failed: u64,
    latencies: Vec<Duration>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let percentile = |p: f64| {
            let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
            sorted
                .get(index)
                .map_or(0.0, |latency| latency.as_secs_f64() * 1000.0)
        };
        write!(
            f,
            "requests ok {} failed {} | latency ms p50 {:.1} p99 {:.1} max {:.1}",
            self.ok,
            self.failed,
            percentile(0.5),
            percentile(0.99),
            percentile(1.0)
        )
    }
}

/// Sends `--requests` requests to the gateway from `--concurrency` workers at `--rate`.
async fn drive(args: &Args, mesh: &Mesh) -> anyhow::Result<Summary> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let pace =
        (args.rate > 0.0).then(|| Duration::from_secs_f64(args.concurrency as f64 / args.rate));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.max(1) {
        let (client, next, gateway) = (client.clone(), next.clone(), mesh.gateway);
        let (total, slow_every, lane) = (args.requests, args.slow_every, args.lane.clone());
        workers.spawn(async move {
            let mut summary = Summary {
                ok: 0,
                failed: 0,
                latencies: Vec::new(),
            };
            let mut ticker = pace.map(tokio::time::interval);
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= total {
                    return summary;
                }
                if let Some(ticker) = ticker.as_mut() {
                    ticker.tick().await;
                }
                let path = if slow_every > 0 && n % slow_every == slow_every - 1 {
                    "/report".to_owned()
                } else {
                    format!("/checkout/item-{}", n % 7)
                };
                let started = Instant::now();
                match send(&client, gateway, &path, lane.as_deref()).await {
                    Ok(status) if status.is_success() => summary.ok += 1,
                    Ok(status) => {
                        tracing::warn!(%status, path, "request failed");
                        summary.failed += 1;
                    }
                    Err(error) => {
                        tracing::warn!(error = format!("{error:#}"), path, "request failed");
                        summary.failed += 1;
                    }
                }
                summary.latencies.push(started.elapsed());
            }
        });
    }
    let mut total = Summary {
        ok: 0,
        failed: 0,
        latencies: Vec::new(),
    };
    while let Some(worker) = workers.join_next().await {
        let summary = worker.context("load worker panicked")?;
        total.ok += summary.ok;
        total.failed += summary.failed;
        total.latencies.extend(summary.latencies);
    }
    Ok(total)
}

async fn send(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    gateway: std::net::SocketAddr,
    path: &str,
    lane: Option<&str>,
) -> anyhow::Result<http::StatusCode> {
    let mut request = http::Request::get(format!("http://{gateway}{path}"))
        .header("baggage", format!("{TENANT_BAGGAGE}=demo"));
    if let Some(lane) = lane {
        request = request.header(meshlight_middleware::DEFAULT_LANE_HEADER, lane);
    }
    let response = client.request(request.body(Empty::new())?).await?;
    let status = response.status();
    response.into_body().collect().await?;
    Ok(status)
}
