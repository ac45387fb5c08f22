//! The per-service telemetry handle: tracer, RED-metric instruments, propagators and lane
//! settings, built once at start-up from the standard `OTEL_*` variables.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{MetricExporter, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Stream};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanExporter as SpanExporterTrait};
use tokio::runtime::Runtime;

use crate::config::{ConfigError, Settings};
use crate::lane::LaneLabels;
use crate::layer::{ClientLayer, ServerLayer};
use crate::metrics::Instruments;
use crate::propagation::Propagation;

/// Instrumentation scope name of every span and metric the middleware records.
const SCOPE_NAME: &str = "meshlight-middleware";

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A `MESHLIGHT_*` or `OTEL_*` variable holds a value the middleware cannot use.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The dedicated export runtime could not start.
    #[error("cannot start the telemetry export runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The OTLP exporter could not be built (for example an invalid endpoint URL).
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// `init()` ran twice, or another `tracing` subscriber is already installed.
    #[error("a global tracing subscriber is already installed: {0}")]
    Subscriber(String),
}

/// What every layer of one service shares. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Telemetry {
    pub(crate) shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) tracer: SdkTracer,
    pub(crate) instruments: Instruments,
    pub(crate) propagation: Propagation,
    pub(crate) lane_labels: LaneLabels,
    pub(crate) settings: Settings,
}

impl Telemetry {
    /// Starts describing a service's telemetry; [`crate::init`] is the one-call shortcut.
    pub fn builder() -> TelemetryBuilder {
        TelemetryBuilder::default()
    }

    /// The tower layer for servers: tonic `Server::builder().layer(..)`, axum `Router::layer`.
    pub fn server_layer(&self) -> ServerLayer {
        ServerLayer::new(self.clone())
    }

    /// The tower layer for clients: around a tonic `Channel` or a hyper client.
    pub fn client_layer(&self) -> ClientLayer {
        ClientLayer::new(self.clone())
    }

    /// The settings this telemetry was built with.
    pub fn settings(&self) -> &Settings {
        &self.shared.settings
    }
}

/// Builds a [`Telemetry`]: service name and settings default to the environment.
#[derive(Default)]
pub struct TelemetryBuilder {
    service_name: Option<String>,
    settings: Option<Settings>,
    endpoint: Option<String>,
    span_exporter: Option<InstallSpanExporter>,
    metric_exporter: Option<InstallMetricExporter>,
}

/// Adds a caller-given exporter to a provider builder.
type InstallSpanExporter = Box<dyn FnOnce(SdkTracerProviderBuilder) -> SdkTracerProviderBuilder>;
type InstallMetricExporter = Box<dyn FnOnce(SdkMeterProviderBuilder) -> SdkMeterProviderBuilder>;

type SdkTracerProviderBuilder = opentelemetry_sdk::trace::TracerProviderBuilder;
type SdkMeterProviderBuilder = opentelemetry_sdk::metrics::MeterProviderBuilder;

impl TelemetryBuilder {
    /// Overrides `OTEL_SERVICE_NAME`, for processes that host several services.
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }

    /// Uses these settings instead of reading them from the environment.
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = Some(settings);
        self
    }

    /// Overrides `OTEL_EXPORTER_OTLP_ENDPOINT` (OTLP/gRPC, for example `http://127.0.0.1:4317`).
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Sends spans to `exporter` (through a batch processor) instead of OTLP.
    pub fn span_exporter(mut self, exporter: impl SpanExporterTrait + 'static) -> Self {
        self.span_exporter = Some(Box::new(move |builder| {
            builder.with_batch_exporter(exporter)
        }));
        self
    }

    /// Sends metrics to `exporter` (through a periodic reader) instead of OTLP.
    pub fn metric_exporter(mut self, exporter: impl PushMetricExporter) -> Self {
        self.metric_exporter = Some(Box::new(move |builder| {
            builder.with_periodic_exporter(exporter)
        }));
        self
    }

    /// Builds the providers and instruments without touching any global state.
    pub fn build(self) -> Result<TelemetryGuard, InitError> {
        let TelemetryBuilder {
            service_name,
            settings,
            endpoint,
            span_exporter,
            metric_exporter,
        } = self;
        let settings = match settings {
            Some(settings) => settings,
            None => Settings::from_env()?,
        };
        let mut resource = Resource::builder();
        if let Some(name) = service_name {
            resource = resource.with_service_name(name);
        }
        let resource = resource.build();

        // The OTLP exporters run on a runtime of their own: their connection tasks then never
        // depend on the application's runtime, so flushing on shutdown cannot deadlock, even
        // from a current-thread runtime that is itself shutting down.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("meshlight-otlp")
            .enable_all()
            .build()
            .map_err(InitError::Runtime)?;
        let providers = {
            let _entered = runtime.enter();
            let exporters = Exporters {
                endpoint,
                span_exporter,
                metric_exporter,
            };
            exporters.providers(resource, settings.metric_cardinality_limit)
        };
        let (tracer_provider, meter_provider) = match providers {
            Ok(providers) => providers,
            Err(error) => {
                // Dropping a runtime blocks, which is not allowed inside another runtime.
                runtime.shutdown_background();
                return Err(error);
            }
        };

        let shared = Shared {
            tracer: tracer_provider.tracer(SCOPE_NAME),
            instruments: Instruments::new(&meter_provider.meter(SCOPE_NAME)),
            propagation: Propagation::new(&settings.propagators),
            lane_labels: LaneLabels::new(&settings),
            settings,
        };
        Ok(TelemetryGuard {
            telemetry: Telemetry {
                shared: Arc::new(shared),
            },
            tracer_provider,
            meter_provider,
            runtime: Some(runtime),
        })
    }

    /// [`TelemetryBuilder::build`], then installs the providers and propagator as the
    /// OpenTelemetry globals and a `tracing` subscriber whose log lines carry `trace_id` and
    /// `span_id` (filtered by `RUST_LOG`, default `info`).
    pub fn init(self) -> Result<TelemetryGuard, InitError> {
        let guard = self.build()?;
        crate::logging::install_subscriber()
            .map_err(|error| InitError::Subscriber(error.to_string()))?;
        opentelemetry::global::set_tracer_provider(guard.tracer_provider.clone());
        opentelemetry::global::set_meter_provider(guard.meter_provider.clone());
        opentelemetry::global::set_text_map_propagator(guard.telemetry.shared.propagation.clone());
        Ok(guard)
    }
}

/// Where the providers send what they record: OTLP (to `endpoint`, or the environment's)
/// unless an exporter was given.
struct Exporters {
    endpoint: Option<String>,
    span_exporter: Option<InstallSpanExporter>,
    metric_exporter: Option<InstallMetricExporter>,
}

impl Exporters {
    /// The tracer and meter providers, exporting over OTLP unless an exporter was given.
    /// Runs inside the export runtime, where the OTLP exporters spawn their connections.
    fn providers(
        self,
        resource: Resource,
        cardinality_limit: usize,
    ) -> Result<(SdkTracerProvider, SdkMeterProvider), InitError> {
        let mut tracer_provider = SdkTracerProvider::builder().with_resource(resource.clone());
        tracer_provider = match self.span_exporter {
            Some(install) => install(tracer_provider),
            None => {
                let exporter = to_endpoint(
                    SpanExporter::builder().with_tonic(),
                    self.endpoint.as_deref(),
                );
                tracer_provider.with_batch_exporter(exporter.build()?)
            }
        };

        let mut meter_provider = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_view(move |_: &opentelemetry_sdk::metrics::Instrument| {
                Stream::builder()
                    .with_cardinality_limit(cardinality_limit)
                    .build()
                    .ok()
            });
        meter_provider = match self.metric_exporter {
            Some(install) => install(meter_provider),
            None => {
                let exporter = to_endpoint(
                    MetricExporter::builder().with_tonic(),
                    self.endpoint.as_deref(),
                );
                meter_provider.with_reader(PeriodicReader::builder(exporter.build()?).build())
            }
        };
        Ok((tracer_provider.build(), meter_provider.build()))
    }
}

/// `exporter`, sending to `endpoint` if one was configured (else to the environment's).
fn to_endpoint<B: WithExportConfig>(exporter: B, endpoint: Option<&str>) -> B {
    match endpoint {
        Some(endpoint) => exporter.with_endpoint(endpoint),
        None => exporter,
    }
}

/// Owns the providers: dropping it flushes every span and metric still buffered, which
/// blocks for up to ten seconds per signal; drop it outside async code, or where blocking
/// at shutdown does not matter.
#[derive(Debug)]
pub struct TelemetryGuard {
    telemetry: Telemetry,
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
    runtime: Option<Runtime>,
}

/// How long a flush on shutdown may take before the remaining telemetry is given up.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

impl TelemetryGuard {
    /// The handle the layers are built from.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Exports everything recorded so far without shutting down. Blocks until the export is
    /// done: call it from a blocking context (`spawn_blocking`), not from async code.
    pub fn flush(&self) {
        if let Err(error) = self.tracer_provider.force_flush() {
            tracing::warn!(%error, "span flush failed");
        }
        if let Err(error) = self.meter_provider.force_flush() {
            tracing::warn!(%error, "metric flush failed");
        }
    }
}

impl std::ops::Deref for TelemetryGuard {
    type Target = Telemetry;

    fn deref(&self) -> &Telemetry {
        &self.telemetry
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(error) = self.tracer_provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
            tracing::warn!(%error, "span export on shutdown failed");
        }
        if let Err(error) = self.meter_provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
            tracing::warn!(%error, "metric export on shutdown failed");
        }
        // Dropping a runtime blocks, which is not allowed inside another runtime's worker.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
