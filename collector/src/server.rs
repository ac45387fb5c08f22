//! `meshlight serve`: opens the store and runs the three listeners and rule evaluation
//! until shutdown.
//!
//! Shutdown order matters for durability: readiness goes false, rule evaluation stops and
//! saves its state (it writes through ingest), the ingest listeners stop accepting and
//! finish the requests they have (each is acknowledged only once durable), then the store
//! flushes the memtable to Parquet, and the API listener goes last.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use meshlight_alerting::{Alerting, AlertingMetrics};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::alerting::{InProcessQuery, IngestWriter};
use crate::api::{self, ApiState};
use crate::config::Config;
use crate::ingest::{Export, Ingestor, otlp_grpc, otlp_http};
use crate::profiles::{self, ingest::ProfileIngestor};
use crate::query::{MetricRows, SqlEngine};
use crate::query::prometheus::SeriesLabels;
use crate::spanmetrics::SpanMetrics;
use crate::store::{Store, StoreError, StoreSettings};
use crate::telemetry::SelfMetrics;

/// How long in-flight ingest requests get to finish at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot start the query engine: {0}")]
    Query(#[from] datafusion::error::DataFusionError),
    #[error("cannot start alerting: {0}")]
    Alerting(#[from] meshlight_alerting::manager::StartError),
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr, source })
}

/// Runs the collector until `shutdown` completes, then drains, flushes and returns.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    let alerting_metrics = Arc::new(AlertingMetrics::default());
    let metrics = {
        let mut metrics = SelfMetrics::default();
        metrics.register_alerting(&alerting_metrics);
        Arc::new(metrics)
    };
    let settings = StoreSettings {
        data_dir: config.data_dir.clone(),
        wal: config.wal.clone(),
        storage: config.storage.clone(),
        memory_limit_bytes: config.limits.memory_limit_bytes,
        // Replaced files outlive the longest read that may have started before: SQL's or
        // PromQL's (rules included), whichever may run longer.
        file_delete_grace: Duration::from_secs(config.query.timeout_secs.max(config.promql.timeout_secs) + 5),
    };
    let store = {
        let metrics = metrics.clone();
        let opened = tokio::task::spawn_blocking(move || Store::open(settings, metrics)).await;
        Arc::new(opened.map_err(|error| StoreError::Corrupt(format!("store open panicked: {error}")))??)
    };
    let engine = SqlEngine::new(&store, config.query.clone())?;
    let span_metrics =
        config.span_metrics.enabled.then(|| Arc::new(SpanMetrics::new(config.span_metrics.clone(), metrics.clone())));
    let ingestor = Arc::new(Ingestor::new(store.clone(), metrics.clone(), config.limits.clone(), span_metrics.clone()));
    let promql = crate::promql::Engine {
        lookback: Duration::from_secs(config.promql.lookback_delta_secs),
        timeout: Duration::from_secs(config.promql.timeout_secs),
        max_samples: config.promql.max_samples,
        ..Default::default()
    };
    let profile_ingestor =
        Arc::new(ProfileIngestor::new(store.clone(), metrics.clone(), config.profiles.clone(), config.limits.clone()));
    let api_state = Arc::new(ApiState {
        engine,
        metric_rows: MetricRows::new(store.clone(), config.query.metadata_cache_bytes, config.promql.column_cache_bytes),
        series_labels: SeriesLabels::new(config.promql.label_cache_bytes),
        promql,
        store: store.clone(),
        metrics,
        profiles: config.profiles.clone(),
        ready: AtomicBool::new(false),
    });
    let alerting = Arc::new(Alerting::new(
        config.alerting.clone(),
        Arc::new(InProcessQuery { state: api_state.clone() }),
        Arc::new(IngestWriter { ingestor: ingestor.clone() }),
        Some(config.data_dir.join("alerting")),
        alerting_metrics,
    )?);

    let grpc_listener = bind(config.otlp_grpc).await?;
    let http_listener = bind(config.otlp_http).await?;
    let api_listener = bind(config.api).await?;

    let (stop_ingest, ingest_stopped) = watch::channel(false);
    let (stop_api, api_stopped) = watch::channel(false);
    let until = |mut receiver: watch::Receiver<bool>| async move {
        let _ = receiver.wait_for(|stop| *stop).await;
    };

    let span_metrics_writer = span_metrics.clone().map(|span_metrics| {
        let (ingestor, stopped) = (ingestor.clone(), until(ingest_stopped.clone()));
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(span_metrics.config().interval_secs));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tokio::pin!(stopped);
            loop {
                tokio::select! {
                    _ = ticker.tick() => write_span_metrics(&span_metrics, &ingestor).await,
                    () = &mut stopped => return,
                }
            }
        })
    });
    let grpc = tokio::spawn(
        tonic::transport::Server::builder()
            .max_frame_size(Some(config.limits.grpc_max_frame_bytes))
            .add_routes(otlp_grpc::routes(&ingestor))
            .serve_with_incoming_shutdown(
                // A response goes out as several small writes (headers, message, trailers):
                // with Nagle's algorithm the later ones wait for the client's delayed ACK,
                // which added ~40 ms to every export.
                tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
                until(ingest_stopped.clone()),
            ),
    );
    let http = tokio::spawn(
        axum::serve(http_listener, otlp_http::router(ingestor.clone()).merge(profiles::ingest::router(profile_ingestor)))
            .with_graceful_shutdown(until(ingest_stopped))
            .into_future(),
    );
    // Alerting writes its results through ingest, so it stops before ingest does.
    let (stop_alerting, alerting_stopped) = watch::channel(false);
    let rule_evaluation = tokio::spawn(alerting.clone().run(until(alerting_stopped)));
    let reloads = tokio::spawn(reload_on_hangup(alerting.clone()));
    let api_server = tokio::spawn(
        axum::serve(api_listener, api::router(api_state.clone()).merge(meshlight_alerting::api::router(alerting)))
            .with_graceful_shutdown(until(api_stopped))
            .into_future(),
    );

    api_state.ready.store(true, Ordering::Relaxed);
    tracing::info!(
        otlp_grpc = %config.otlp_grpc,
        otlp_http = %config.otlp_http,
        api = %config.api,
        data_dir = %config.data_dir.display(),
        "meshlight ready"
    );

    shutdown.await;
    tracing::info!("shutting down: draining ingest");
    api_state.ready.store(false, Ordering::Relaxed);
    reloads.abort();
    let _ = stop_alerting.send(true);
    let _ = rule_evaluation.await;
    let _ = stop_ingest.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        let _ = grpc.await;
        let _ = http.await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!("ingest did not drain in time; unacknowledged requests will be retried by clients");
    }
    if let (Some(writer), Some(span_metrics)) = (span_metrics_writer, &span_metrics) {
        let _ = writer.await;
        // The spans acknowledged since the last interval.
        write_span_metrics(span_metrics, &ingestor).await;
    }
    tracing::info!("flushing the memtable");
    store.shutdown().await;
    let _ = stop_api.send(true);
    let _ = api_server.await;
    tracing::info!("stopped");
    Ok(())
}

/// Writes the span-derived series through the ingest path, like any OTLP client would. A
/// failed write loses nothing but that interval's exemplars: the series are cumulative.
async fn write_span_metrics(span_metrics: &SpanMetrics, ingestor: &Ingestor) {
    let Some(request) = span_metrics.take_export() else {
        return;
    };
    if let Err(error) = ingestor.export(Export::metrics(request)).await {
        span_metrics.count_failed_write();
        tracing::warn!(%error, "span metrics not written; retrying next interval");
    }
}

/// Re-reads the rule files on every SIGHUP, as Prometheus does.
pub async fn reload_on_hangup(alerting: Arc<Alerting>) {
    #[cfg(unix)]
    {
        let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            tracing::error!("cannot listen for SIGHUP; reload rules with POST /-/reload");
            return;
        };
        while hangups.recv().await.is_some() {
            // Errors are logged and counted by reload; the previous rules keep running.
            let _ = alerting.reload();
        }
    }
    #[cfg(not(unix))]
    drop(alerting);
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn termination_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
