//! Alerting wired into the collector: rules are evaluated by the in-process PromQL engine
//! over the stored metrics (through SQL, like every query), and their results, recording
//! rules' series and `ALERTS`, go back through ingest as OTLP gauges, so they are durable
//! and queryable like any metric. `meshlight alerts` uses the same writer over OTLP/HTTP.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use meshlight_alerting::query::{self as alert_query, QueryBackend, QueryError, SampleWriter, WrittenSample};

use crate::api::ApiState;
use crate::ingest::wire::{
    ExportMetricsServiceRequest, Gauge, InstrumentationScope, KeyValue, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    metric, number_data_point,
};
use crate::ingest::{Export, Ingestor};
use crate::promql::{self, Engine, ErrorKind, METRIC_NAME, Millis, SeriesSource, Value};
use crate::query::prometheus::{NO_RECORDED_VALUE, StoredMetrics};

/// The instant vector of `expr` at `at` as alerting sees it: a scalar is one sample without
/// labels, as Prometheus's rule manager has it.
pub async fn instant_samples<S: SeriesSource>(
    engine: &Engine,
    source: &S,
    expr: &str,
    at: Millis,
) -> Result<Vec<alert_query::Sample>, QueryError> {
    let labels = |labels: &promql::Labels| labels.iter().map(|(name, value)| (name.to_owned(), value.to_owned())).collect();
    match engine.instant(source, expr, at).await {
        Ok(Value::Vector(samples)) => {
            Ok(samples.iter().map(|sample| alert_query::Sample { labels: labels(&sample.labels), value: sample.value }).collect())
        }
        Ok(Value::Scalar(value)) => Ok(vec![alert_query::Sample { labels: BTreeMap::new(), value }]),
        Ok(Value::String(_) | Value::Matrix(_)) => Err(QueryError::Rejected("rule expressions must return a vector or a scalar".into())),
        Err(error) if matches!(error.kind, ErrorKind::Timeout | ErrorKind::Internal) => Err(QueryError::Unavailable(error.message)),
        Err(error) => Err(QueryError::Rejected(error.message)),
    }
}

/// Rules evaluated by this collector's PromQL engine over its stored metrics.
pub struct InProcessQuery {
    pub state: Arc<ApiState>,
}

impl InProcessQuery {
    fn source(&self) -> StoredMetrics<'_> {
        StoredMetrics::new(&self.state.metric_rows, &self.state.series_labels, self.state.promql.max_samples)
    }
}

#[async_trait]
impl QueryBackend for InProcessQuery {
    async fn instant(&self, expr: &str, at_ms: i64) -> Result<Vec<alert_query::Sample>, QueryError> {
        instant_samples(&self.state.promql, &self.source(), expr, at_ms).await
    }

    async fn exemplars(&self, expr: &str, start_ms: i64, end_ms: i64) -> Result<Vec<alert_query::Exemplar>, QueryError> {
        let found = self.source().query_exemplars(expr, start_ms, end_ms).await.map_err(|error| QueryError::Rejected(error.message))?;
        let mut exemplars = Vec::new();
        for (series, list) in found {
            let series_labels: alert_query::Labels = series.iter().map(|(name, value)| (name.to_owned(), value.to_owned())).collect();
            for exemplar in list {
                let trace_id = exemplar.labels.get("trace_id");
                if trace_id.is_empty() {
                    continue;
                }
                exemplars.push(alert_query::Exemplar {
                    series: series_labels.clone(),
                    trace_id: trace_id.to_owned(),
                    value: exemplar.value,
                    timestamp_ms: exemplar.at,
                });
            }
        }
        Ok(exemplars)
    }
}

/// Writes rule results through this collector's ingest path.
pub struct IngestWriter {
    pub ingestor: Arc<Ingestor>,
}

#[async_trait]
impl SampleWriter for IngestWriter {
    async fn write(&self, samples: Vec<WrittenSample>) -> Result<(), QueryError> {
        let request = gauges(&samples);
        self.ingestor
            .export(Export::metrics(request))
            .await
            .map(drop)
            .map_err(|error| QueryError::Unavailable(error.to_string()))
    }
}

/// Writes rule results to a collector's OTLP/HTTP endpoint (`<url>/v1/metrics`).
pub struct OtlpHttpWriter {
    client: reqwest::Client,
    url: String,
}

impl OtlpHttpWriter {
    pub fn new(base: &str, timeout: Duration) -> reqwest::Result<Self> {
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        Ok(Self { client, url: format!("{}/v1/metrics", base.trim_end_matches('/')) })
    }
}

#[async_trait]
impl SampleWriter for OtlpHttpWriter {
    async fn write(&self, samples: Vec<WrittenSample>) -> Result<(), QueryError> {
        let body = prost::Message::encode_to_vec(&gauges(&samples));
        let response = self
            .client
            .post(&self.url)
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
            .await
            .map_err(|error| QueryError::Unavailable(error.to_string()))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(QueryError::Unavailable(format!("{} answered {}", self.url, response.status())))
        }
    }
}

/// One OTLP gauge per metric name; every other label is a data point attribute, so the
/// Prometheus translation gives back exactly the labels written. A staleness marker is a
/// point flagged "no recorded value".
fn gauges(samples: &[WrittenSample]) -> ExportMetricsServiceRequest {
    let mut by_name: BTreeMap<&str, Vec<NumberDataPoint>> = BTreeMap::new();
    for sample in samples {
        let name = sample.labels.get(METRIC_NAME).map_or("", String::as_str);
        let stale = promql::is_stale_marker(sample.value);
        by_name.entry(name).or_default().push(NumberDataPoint {
            attributes: sample
                .labels
                .iter()
                .filter(|(label, _)| *label != METRIC_NAME)
                .map(|(label, value)| KeyValue::string(label, value))
                .collect(),
            time_unix_nano: u64::try_from(sample.timestamp_ms).unwrap_or(0) * 1_000_000,
            value: Some(number_data_point::Value::AsDouble(if stale { f64::NAN } else { sample.value })),
            flags: if stale { NO_RECORDED_VALUE } else { 0 },
            ..NumberDataPoint::default()
        });
    }
    let metrics = by_name
        .into_iter()
        .map(|(name, data_points)| Metric {
            name: Bytes::copy_from_slice(name.as_bytes()),
            data: Some(metric::Data::Gauge(Gauge { data_points })),
            ..Metric::default()
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope { name: Bytes::from_static(b"meshlight.alerting"), ..InstrumentationScope::default() }),
                metrics,
                ..ScopeMetrics::default()
            }],
            ..ResourceMetrics::default()
        }],
    }
}
