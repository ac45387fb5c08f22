//! Settings read from the environment: the standard `OTEL_PROPAGATORS` and Meshlight's own
//! `MESHLIGHT_*` limits. Everything else standard (`OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_TRACES_SAMPLER(_ARG)`,
//! `OTEL_METRIC_EXPORT_INTERVAL`) is read by the OpenTelemetry SDK itself.

use std::env;

use http::HeaderName;

/// Which context propagation formats to speak, comma-separated (`tracecontext`, `baggage`,
/// `b3`, `b3multi`, `none`).
pub const OTEL_PROPAGATORS: &str = "OTEL_PROPAGATORS";
/// Header names that carry the lane, comma-separated.
pub const MESHLIGHT_LANE_HEADERS: &str = "MESHLIGHT_LANE_HEADERS";
/// How many distinct lane values may become metric labels before the rest share `_OTHER`.
pub const MESHLIGHT_LANE_LABEL_LIMIT: &str = "MESHLIGHT_LANE_LABEL_LIMIT";
/// The lanes that become metric labels, comma-separated; all others are `_OTHER`.
pub const MESHLIGHT_LANE_LABEL_VALUES: &str = "MESHLIGHT_LANE_LABEL_VALUES";
/// Longest lane value accepted from a header, in bytes.
pub const MESHLIGHT_LANE_VALUE_MAX_BYTES: &str = "MESHLIGHT_LANE_VALUE_MAX_BYTES";
/// Series per metric before new attribute sets go to the overflow series.
pub const MESHLIGHT_METRIC_CARDINALITY_LIMIT: &str = "MESHLIGHT_METRIC_CARDINALITY_LIMIT";

/// The lane header Alibaba Cloud Service Mesh routes on.
pub const DEFAULT_LANE_HEADER: &str = "x-asm-prefer-tag";

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The variable is set but its value does not parse.
    #[error("{variable}={value:?}: {reason}")]
    Invalid {
        /// The variable's name.
        variable: &'static str,
        /// What it holds.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// One context propagation format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagator {
    /// W3C `traceparent` / `tracestate`.
    TraceContext,
    /// W3C `baggage`.
    Baggage,
    /// Zipkin B3, the single `b3` header.
    B3Single,
    /// Zipkin B3, the `x-b3-*` headers (Envoy's default).
    B3Multi,
}

/// What the layers do, beyond what the OpenTelemetry SDK reads for itself.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Formats injected on outbound calls and extracted on inbound ones. Inbound B3 (single
    /// and multi) is accepted in addition whenever this list is not empty, because Envoy and
    /// Kitex callers send it.
    pub propagators: Vec<Propagator>,
    /// Headers read on ingress, carried in baggage and re-emitted on every outbound call.
    pub lane_headers: Vec<HeaderName>,
    /// Distinct lane values that become metric labels; later ones are labelled `_OTHER`.
    /// Ignored when `lane_label_values` is set.
    pub lane_label_limit: usize,
    /// The lanes that become metric labels, all others being `_OTHER`. Empty: the first
    /// `lane_label_limit` lanes seen, which a caller can exhaust by inventing lanes.
    pub lane_label_values: Vec<String>,
    /// Longest lane value accepted, in bytes; longer values are ignored.
    pub lane_value_max_bytes: usize,
    /// Series per metric before new attribute sets are folded into the overflow series
    /// (`otel.metric.overflow=true`).
    pub metric_cardinality_limit: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            propagators: vec![Propagator::TraceContext, Propagator::Baggage],
            lane_headers: vec![HeaderName::from_static(DEFAULT_LANE_HEADER)],
            lane_label_limit: 32,
            lane_label_values: Vec::new(),
            lane_value_max_bytes: 128,
            metric_cardinality_limit: 2000,
        }
    }
}

impl Settings {
    /// The defaults, overridden by whichever variables are set.
    pub fn from_env() -> Result<Self, ConfigError> {
        // The specification treats an empty variable as unset.
        Self::from_lookup(|name| env::var(name).ok().filter(|value| !value.trim().is_empty()))
    }

    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut settings = Settings::default();
        if let Some(value) = lookup(OTEL_PROPAGATORS) {
            settings.propagators = parse_propagators(&value);
        }
        if let Some(value) = lookup(MESHLIGHT_LANE_HEADERS) {
            settings.lane_headers = parse_header_names(MESHLIGHT_LANE_HEADERS, &value)?;
        }
        if let Some(value) = lookup(MESHLIGHT_LANE_LABEL_LIMIT) {
            settings.lane_label_limit = parse_count(MESHLIGHT_LANE_LABEL_LIMIT, &value)?;
        }
        if let Some(value) = lookup(MESHLIGHT_LANE_LABEL_VALUES) {
            settings.lane_label_values = value
                .split(',')
                .map(str::trim)
                .filter(|lane| !lane.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if let Some(value) = lookup(MESHLIGHT_LANE_VALUE_MAX_BYTES) {
            settings.lane_value_max_bytes = parse_count(MESHLIGHT_LANE_VALUE_MAX_BYTES, &value)?;
        }
        if let Some(value) = lookup(MESHLIGHT_METRIC_CARDINALITY_LIMIT) {
            settings.metric_cardinality_limit =
                parse_count(MESHLIGHT_METRIC_CARDINALITY_LIMIT, &value)?;
        }
        Ok(settings)
    }
}

fn invalid(variable: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        variable,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// The specification's rule: an unknown propagator is logged and skipped, not fatal.
fn parse_propagators(value: &str) -> Vec<Propagator> {
    let mut propagators = Vec::new();
    for name in value
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
    {
        let propagator = match name {
            "tracecontext" => Propagator::TraceContext,
            "baggage" => Propagator::Baggage,
            "b3" => Propagator::B3Single,
            "b3multi" => Propagator::B3Multi,
            "none" => return Vec::new(),
            other => {
                tracing::warn!(
                    variable = OTEL_PROPAGATORS,
                    propagator = other,
                    "unsupported propagator ignored (supported: tracecontext, baggage, b3, b3multi, none)"
                );
                continue;
            }
        };
        if !propagators.contains(&propagator) {
            propagators.push(propagator);
        }
    }
    propagators
}

fn parse_header_names(variable: &'static str, value: &str) -> Result<Vec<HeaderName>, ConfigError> {
    let mut names = Vec::new();
    for name in value
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
    {
        let header = HeaderName::try_from(name.to_ascii_lowercase()).map_err(|_| {
            invalid(
                variable,
                value,
                format!("{name:?} is not a valid header name"),
            )
        })?;
        names.push(header);
    }
    Ok(names)
}

fn parse_count(variable: &'static str, value: &str) -> Result<usize, ConfigError> {
    match value.trim().parse::<usize>() {
        Ok(count) if count > 0 => Ok(count),
        _ => Err(invalid(variable, value, "expected a positive integer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::from_lookup(|name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        })
    }

    #[test]
    fn defaults_are_w3c_and_baggage_with_the_asm_lane_header() {
        let settings = settings(&[]).expect("defaults");
        assert_eq!(
            settings.propagators,
            [Propagator::TraceContext, Propagator::Baggage]
        );
        assert_eq!(
            settings.lane_headers,
            [HeaderName::from_static("x-asm-prefer-tag")]
        );
    }

    #[test]
    fn propagators_follow_the_specification_names() {
        let parsed =
            settings(&[(OTEL_PROPAGATORS, "b3multi, tracecontext,b3,b3multi")]).expect("valid");
        assert_eq!(
            parsed.propagators,
            [
                Propagator::B3Multi,
                Propagator::TraceContext,
                Propagator::B3Single
            ]
        );
        assert!(
            settings(&[(OTEL_PROPAGATORS, "none")])
                .expect("none")
                .propagators
                .is_empty()
        );
        let parsed =
            settings(&[(OTEL_PROPAGATORS, "xray,tracecontext")]).expect("unknown ones are skipped");
        assert_eq!(parsed.propagators, [Propagator::TraceContext]);
    }

    #[test]
    fn lane_headers_and_limits_are_validated() {
        let parsed = settings(&[
            (MESHLIGHT_LANE_HEADERS, "X-Lane, x-asm-prefer-tag"),
            (MESHLIGHT_LANE_LABEL_LIMIT, "4"),
        ])
        .expect("valid");
        assert_eq!(
            parsed.lane_headers,
            [
                HeaderName::from_static("x-lane"),
                HeaderName::from_static("x-asm-prefer-tag")
            ]
        );
        assert_eq!(parsed.lane_label_limit, 4);
        assert!(settings(&[(MESHLIGHT_LANE_HEADERS, "bad header")]).is_err());
        assert!(settings(&[(MESHLIGHT_METRIC_CARDINALITY_LIMIT, "0")]).is_err());
    }
}
