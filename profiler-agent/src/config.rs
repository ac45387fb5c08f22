//! What the profiler does and where it uploads: [`ProfilerConfig`], built in code with
//! [`ProfilerConfig::new`] or read from the environment with [`ProfilerConfig::from_env`].
//!
//! The environment is read the way OpenTelemetry SDKs read it (`OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`), plus the variables a Kubernetes pod spec sets from the
//! Downward API and Meshlight's own `MESHLIGHT_PROFILER_*` settings.

use std::collections::BTreeMap;
use std::env;
use std::time::Duration;

/// The collector's base URL; profiles go to `{endpoint}/ingest`.
pub const MESHLIGHT_PROFILER_ENDPOINT: &str = "MESHLIGHT_PROFILER_ENDPOINT";
/// Samples per second and thread of CPU time, 1 to 1000.
pub const MESHLIGHT_PROFILER_FREQUENCY_HZ: &str = "MESHLIGHT_PROFILER_FREQUENCY_HZ";
/// Seconds between uploads; each upload is one profiling window.
pub const MESHLIGHT_PROFILER_UPLOAD_INTERVAL_SECS: &str = "MESHLIGHT_PROFILER_UPLOAD_INTERVAL_SECS";
/// Labels added to every upload, `key=value` pairs separated by commas.
pub const MESHLIGHT_PROFILER_LABELS: &str = "MESHLIGHT_PROFILER_LABELS";
/// Bytes of encoded profiles kept while the collector cannot be reached.
pub const MESHLIGHT_PROFILER_MAX_BUFFER_BYTES: &str = "MESHLIGHT_PROFILER_MAX_BUFFER_BYTES";
/// The service name, as in every OpenTelemetry SDK; wins over `service.name` in
/// `OTEL_RESOURCE_ATTRIBUTES`.
pub const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
/// Resource attributes, `key=value` pairs separated by commas with percent-encoded values.
/// Read: `service.name`, `service.version`, `k8s.pod.name`, `k8s.namespace.name`,
/// `k8s.node.name`.
pub const OTEL_RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";
/// The pod's name from the Downward API (`fieldRef: metadata.name`); wins over
/// `k8s.pod.name`.
pub const K8S_POD_NAME: &str = "K8S_POD_NAME";
/// The pod's namespace from the Downward API (`fieldRef: metadata.namespace`); wins over
/// `k8s.namespace.name`.
pub const K8S_NAMESPACE_NAME: &str = "K8S_NAMESPACE_NAME";
/// The node's name from the Downward API (`fieldRef: spec.nodeName`); wins over
/// `k8s.node.name`.
pub const K8S_NODE_NAME: &str = "K8S_NODE_NAME";
/// The service's version; wins over `service.version`.
pub const SERVICE_VERSION: &str = "SERVICE_VERSION";

/// The collector on the same host, on its OTLP/HTTP port.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:4318";
/// The service name when none is configured, as OpenTelemetry SDKs name it.
pub const DEFAULT_SERVICE_NAME: &str = "unknown_service";

/// The series label that names the service.
pub const SERVICE_NAME_LABEL: &str = "service_name";
/// The series label with the service's version.
pub const SERVICE_VERSION_LABEL: &str = "service_version";
/// The series label with the pod's name.
pub const POD_LABEL: &str = "pod";
/// The series label with the pod's namespace.
pub const NAMESPACE_LABEL: &str = "namespace";
/// The series label with the node's name.
pub const NODE_LABEL: &str = "node";

/// Labels the profiler sets itself, which user labels may not redefine.
const RESERVED_LABELS: [&str; 5] = [
    SERVICE_NAME_LABEL,
    SERVICE_VERSION_LABEL,
    POD_LABEL,
    NAMESPACE_LABEL,
    NODE_LABEL,
];

/// Highest sampling frequency: the kernel accounts CPU time in scheduler ticks, so more
/// than 1000 samples per second and thread cannot be delivered.
const MAX_FREQUENCY_HZ: u32 = 1000;

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// An environment variable is set but its value does not parse.
    #[error("{variable}={value:?}: {reason}")]
    InvalidVariable {
        /// The variable's name.
        variable: &'static str,
        /// What it holds.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A field of [`ProfilerConfig`] holds a value the profiler cannot run with.
    #[error("{field}: {reason}")]
    InvalidField {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Everything the profiler needs; see the field docs for the defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProfilerConfig {
    /// The collector's base URL (`http://` only: this build has no TLS). Default
    /// `http://127.0.0.1:4318`.
    pub endpoint: String,
    /// The service the profiles belong to: the series' `service_name` label.
    pub service_name: String,
    /// The service's version, sent as the `service_version` label when known.
    pub service_version: Option<String>,
    /// The pod's name, sent as the `pod` label when known.
    pub pod: Option<String>,
    /// The pod's namespace, sent as the `namespace` label when known.
    pub namespace: Option<String>,
    /// The node's name, sent as the `node` label when known.
    pub node: Option<String>,
    /// Samples per second and thread of CPU time, 1 to 1000. Default 100.
    pub frequency_hz: u32,
    /// How long one profiling window lasts: each is uploaded as one profile. Default 10 s.
    pub upload_interval: Duration,
    /// Labels added to every upload. Keys are `[A-Za-z_][A-Za-z0-9_.]*` and may not be one
    /// of the labels set from the fields above; values are sent with characters outside
    /// `[A-Za-z0-9_.:/-]` replaced by `_`.
    pub labels: BTreeMap<String, String>,
    /// Encoded profiles kept while the collector cannot be reached, in bytes; beyond it the
    /// oldest are dropped. Default 8 MiB.
    pub max_buffered_bytes: usize,
    /// Longest an upload request may take. Default 5 s.
    pub request_timeout: Duration,
    /// Longest wait between retries of a failed upload; the wait starts at 1 s and doubles.
    /// Default 30 s.
    pub max_backoff: Duration,
    /// How long shutting down may spend uploading what is left. Default 5 s.
    pub shutdown_timeout: Duration,
}

impl ProfilerConfig {
    /// The defaults, for the service `service_name`.
    pub fn new(service_name: impl Into<String>) -> Self {
        Self {
            endpoint: DEFAULT_ENDPOINT.to_owned(),
            service_name: service_name.into(),
            service_version: None,
            pod: None,
            namespace: None,
            node: None,
            frequency_hz: 100,
            upload_interval: Duration::from_secs(10),
            labels: BTreeMap::new(),
            max_buffered_bytes: 8 * 1024 * 1024,
            request_timeout: Duration::from_secs(5),
            max_backoff: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(5),
        }
    }

    /// The defaults, overridden by whichever variables are set (an empty variable counts as
    /// unset). The service name is `unknown_service` when neither `OTEL_SERVICE_NAME` nor
    /// `service.name` is set.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| env::var(name).ok().filter(|value| !value.trim().is_empty()))
    }

    pub(crate) fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let resource = match lookup(OTEL_RESOURCE_ATTRIBUTES) {
            Some(value) => parse_resource_attributes(&value)?,
            None => BTreeMap::new(),
        };
        let setting = |variable: &str, attribute: &str| {
            lookup(variable)
                .map(|value| value.trim().to_owned())
                .or_else(|| resource.get(attribute).cloned())
                .filter(|value| !value.is_empty())
        };

        let service_name = setting(OTEL_SERVICE_NAME, "service.name")
            .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
        let mut config = Self::new(service_name);
        config.service_version = setting(SERVICE_VERSION, "service.version");
        config.pod = setting(K8S_POD_NAME, "k8s.pod.name");
        config.namespace = setting(K8S_NAMESPACE_NAME, "k8s.namespace.name");
        config.node = setting(K8S_NODE_NAME, "k8s.node.name");

        if let Some(value) = lookup(MESHLIGHT_PROFILER_ENDPOINT) {
            let endpoint = value.trim().trim_end_matches('/').to_owned();
            check_endpoint(&endpoint)
                .map_err(|reason| invalid(MESHLIGHT_PROFILER_ENDPOINT, &value, reason))?;
            config.endpoint = endpoint;
        }
        if let Some(value) = lookup(MESHLIGHT_PROFILER_FREQUENCY_HZ) {
            config.frequency_hz = match value.trim().parse::<u32>() {
                Ok(hz) if (1..=MAX_FREQUENCY_HZ).contains(&hz) => hz,
                _ => {
                    return Err(invalid(
                        MESHLIGHT_PROFILER_FREQUENCY_HZ,
                        &value,
                        format!("expected an integer from 1 to {MAX_FREQUENCY_HZ}"),
                    ));
                }
            };
        }
        if let Some(value) = lookup(MESHLIGHT_PROFILER_UPLOAD_INTERVAL_SECS) {
            let seconds = parse_positive(MESHLIGHT_PROFILER_UPLOAD_INTERVAL_SECS, &value)?;
            config.upload_interval = Duration::from_secs(seconds);
        }
        if let Some(value) = lookup(MESHLIGHT_PROFILER_MAX_BUFFER_BYTES) {
            let bytes = parse_positive(MESHLIGHT_PROFILER_MAX_BUFFER_BYTES, &value)?;
            config.max_buffered_bytes = usize::try_from(bytes).map_err(|_| {
                invalid(
                    MESHLIGHT_PROFILER_MAX_BUFFER_BYTES,
                    &value,
                    "too large for this platform",
                )
            })?;
        }
        if let Some(value) = lookup(MESHLIGHT_PROFILER_LABELS) {
            config.labels = parse_labels(&value)?;
        }
        Ok(config)
    }

    /// Checks every field; [`crate::start`] runs this before anything starts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_endpoint(&self.endpoint).map_err(|reason| field("endpoint", reason))?;
        if self.service_name.trim().is_empty() {
            return Err(field("service_name", "must not be empty"));
        }
        if !(1..=MAX_FREQUENCY_HZ).contains(&self.frequency_hz) {
            return Err(field(
                "frequency_hz",
                format!("{} is not from 1 to {MAX_FREQUENCY_HZ}", self.frequency_hz),
            ));
        }
        if self.upload_interval < Duration::from_millis(100) {
            return Err(field("upload_interval", "must be at least 100 ms"));
        }
        if self.max_buffered_bytes == 0 {
            return Err(field("max_buffered_bytes", "must be positive"));
        }
        if self.request_timeout.is_zero() {
            return Err(field("request_timeout", "must be positive"));
        }
        if self.max_backoff.is_zero() {
            return Err(field("max_backoff", "must be positive"));
        }
        for key in self.labels.keys() {
            check_label_name(key).map_err(|reason| field("labels", reason))?;
        }
        Ok(())
    }

    /// The labels of every upload: `service_name`, then `service_version`, `pod`,
    /// `namespace` and `node` when known, then the user labels; values as configured.
    pub fn series_labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.labels.clone();
        let known = [
            (SERVICE_NAME_LABEL, Some(&self.service_name)),
            (SERVICE_VERSION_LABEL, self.service_version.as_ref()),
            (POD_LABEL, self.pod.as_ref()),
            (NAMESPACE_LABEL, self.namespace.as_ref()),
            (NODE_LABEL, self.node.as_ref()),
        ];
        for (key, value) in known {
            if let Some(value) = value {
                labels.insert(key.to_owned(), value.clone());
            }
        }
        labels
    }
}

fn invalid(variable: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::InvalidVariable {
        variable,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

fn field(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::InvalidField {
        field,
        reason: reason.into(),
    }
}

fn parse_positive(variable: &'static str, value: &str) -> Result<u64, ConfigError> {
    match value.trim().parse::<u64>() {
        Ok(number) if number > 0 => Ok(number),
        _ => Err(invalid(variable, value, "expected a positive integer")),
    }
}

fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(endpoint).map_err(|error| format!("not a URL: {error}"))?;
    if url.scheme() != "http" {
        return Err(format!(
            "scheme {:?} is not supported: only http:// (this build has no TLS)",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".to_owned());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("a base URL has no query or fragment".to_owned());
    }
    Ok(())
}

/// The label names the collector accepts, minus the ones the profiler sets itself.
fn check_label_name(key: &str) -> Result<(), String> {
    let mut chars = key.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if !valid {
        return Err(format!("label name {key:?} is not [A-Za-z_][A-Za-z0-9_.]*"));
    }
    if RESERVED_LABELS.contains(&key) {
        return Err(format!(
            "label {key:?} is set by the profiler itself (from OTEL_SERVICE_NAME, SERVICE_VERSION, \
             K8S_POD_NAME, K8S_NAMESPACE_NAME or K8S_NODE_NAME)"
        ));
    }
    Ok(())
}

fn parse_labels(value: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut labels = BTreeMap::new();
    for pair in value
        .split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
    {
        let Some((key, label_value)) = pair.split_once('=') else {
            return Err(invalid(
                MESHLIGHT_PROFILER_LABELS,
                value,
                format!("{pair:?} is not key=value"),
            ));
        };
        let key = key.trim();
        check_label_name(key)
            .map_err(|reason| invalid(MESHLIGHT_PROFILER_LABELS, value, reason))?;
        if labels
            .insert(key.to_owned(), label_value.trim().to_owned())
            .is_some()
        {
            return Err(invalid(
                MESHLIGHT_PROFILER_LABELS,
                value,
                format!("label {key:?} appears twice"),
            ));
        }
    }
    Ok(labels)
}

/// The W3C Baggage-like syntax the OpenTelemetry specification gives the variable:
/// `key=value` pairs, values percent-encoded. Like the SDKs, a malformed list is rejected
/// whole rather than half-read.
fn parse_resource_attributes(value: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut attributes = BTreeMap::new();
    for pair in value
        .split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
    {
        let Some((key, encoded)) = pair.split_once('=') else {
            return Err(invalid(
                OTEL_RESOURCE_ATTRIBUTES,
                value,
                format!("{pair:?} is not key=value"),
            ));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(invalid(
                OTEL_RESOURCE_ATTRIBUTES,
                value,
                format!("{pair:?} has no key"),
            ));
        }
        let decoded = percent_decode(encoded.trim()).ok_or_else(|| {
            invalid(
                OTEL_RESOURCE_ATTRIBUTES,
                value,
                format!("{pair:?} is not valid percent-encoded UTF-8"),
            )
        })?;
        attributes.insert(key.to_owned(), decoded);
    }
    Ok(attributes)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text.get(index + 1..index + 3)?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<ProfilerConfig, ConfigError> {
        ProfilerConfig::from_lookup(|name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        })
    }

    #[test]
    fn defaults_work_on_a_laptop() {
        let config = config(&[]).expect("defaults");
        assert_eq!(config, ProfilerConfig::new(DEFAULT_SERVICE_NAME));
        assert_eq!(config.endpoint, "http://127.0.0.1:4318");
        assert_eq!(config.frequency_hz, 100);
        assert_eq!(config.upload_interval, Duration::from_secs(10));
        assert_eq!(config.max_buffered_bytes, 8 * 1024 * 1024);
        assert_eq!(config.request_timeout, Duration::from_secs(5));
        assert_eq!(config.max_backoff, Duration::from_secs(30));
        assert_eq!(config.shutdown_timeout, Duration::from_secs(5));
        config.validate().expect("the defaults are valid");
        assert_eq!(
            config.series_labels(),
            BTreeMap::from([("service_name".to_owned(), "unknown_service".to_owned())])
        );
    }

    #[test]
    fn meshlight_variables_are_read_and_validated() {
        let parsed = config(&[
            (
                MESHLIGHT_PROFILER_ENDPOINT,
                " http://collector.observability:4318/ ",
            ),
            (MESHLIGHT_PROFILER_FREQUENCY_HZ, "250"),
            (MESHLIGHT_PROFILER_UPLOAD_INTERVAL_SECS, "15"),
            (
                MESHLIGHT_PROFILER_LABELS,
                "region=eu-west-1, team = payments ,",
            ),
            (MESHLIGHT_PROFILER_MAX_BUFFER_BYTES, "1048576"),
        ])
        .expect("valid");
        assert_eq!(parsed.endpoint, "http://collector.observability:4318");
        assert_eq!(parsed.frequency_hz, 250);
        assert_eq!(parsed.upload_interval, Duration::from_secs(15));
        assert_eq!(parsed.max_buffered_bytes, 1_048_576);
        assert_eq!(
            parsed.labels,
            BTreeMap::from([
                ("region".to_owned(), "eu-west-1".to_owned()),
                ("team".to_owned(), "payments".to_owned()),
            ])
        );
        parsed.validate().expect("valid");

        let rejected = [
            (MESHLIGHT_PROFILER_ENDPOINT, "collector:4318"),
            (MESHLIGHT_PROFILER_ENDPOINT, "https://collector:4318"),
            (MESHLIGHT_PROFILER_FREQUENCY_HZ, "0"),
            (MESHLIGHT_PROFILER_FREQUENCY_HZ, "5000"),
            (MESHLIGHT_PROFILER_FREQUENCY_HZ, "fast"),
            (MESHLIGHT_PROFILER_UPLOAD_INTERVAL_SECS, "0"),
            (MESHLIGHT_PROFILER_UPLOAD_INTERVAL_SECS, "-3"),
            (MESHLIGHT_PROFILER_MAX_BUFFER_BYTES, "8MiB"),
            (MESHLIGHT_PROFILER_LABELS, "region"),
            (MESHLIGHT_PROFILER_LABELS, "a=1,a=2"),
            (MESHLIGHT_PROFILER_LABELS, "9lives=yes"),
            (MESHLIGHT_PROFILER_LABELS, "pod=mine"),
        ];
        for (variable, value) in rejected {
            let error = config(&[(variable, value)]).expect_err(value);
            let message = error.to_string();
            assert!(
                message.starts_with(variable) && message.contains(value),
                "{message}"
            );
        }
    }

    #[test]
    fn downward_api_variables_win_over_resource_attributes() {
        let parsed = config(&[
            (
                OTEL_RESOURCE_ATTRIBUTES,
                "service.name=checkout,service.version=1.2.0,k8s.pod.name=from-resource,\
                 k8s.namespace.name=shop%20front,k8s.node.name=node-a,deployment.environment=prod",
            ),
            (K8S_POD_NAME, "checkout-7d9f-x2"),
            (K8S_NODE_NAME, "node-b"),
        ])
        .expect("valid");
        assert_eq!(parsed.service_name, "checkout");
        assert_eq!(parsed.service_version.as_deref(), Some("1.2.0"));
        assert_eq!(parsed.pod.as_deref(), Some("checkout-7d9f-x2"));
        assert_eq!(parsed.namespace.as_deref(), Some("shop front"));
        assert_eq!(parsed.node.as_deref(), Some("node-b"));
        assert_eq!(
            parsed.series_labels(),
            BTreeMap::from([
                ("namespace".to_owned(), "shop front".to_owned()),
                ("node".to_owned(), "node-b".to_owned()),
                ("pod".to_owned(), "checkout-7d9f-x2".to_owned()),
                ("service_name".to_owned(), "checkout".to_owned()),
                ("service_version".to_owned(), "1.2.0".to_owned()),
            ])
        );

        let parsed = config(&[
            (
                OTEL_RESOURCE_ATTRIBUTES,
                "service.name=from-resource,service.version=1",
            ),
            (OTEL_SERVICE_NAME, "from-variable"),
            (SERVICE_VERSION, "2"),
        ])
        .expect("valid");
        assert_eq!(parsed.service_name, "from-variable");
        assert_eq!(parsed.service_version.as_deref(), Some("2"));

        for malformed in ["service.name", "=x", "k8s.pod.name=%zz", "a=%C3"] {
            let error = config(&[(OTEL_RESOURCE_ATTRIBUTES, malformed)]).expect_err(malformed);
            assert!(
                error.to_string().starts_with(OTEL_RESOURCE_ATTRIBUTES),
                "{error}"
            );
        }
    }

    #[test]
    fn programmatic_fields_are_validated() {
        let valid = ProfilerConfig::new("svc");
        valid.validate().expect("valid");
        type Break = fn(&mut ProfilerConfig);
        let cases: [(&str, Break); 8] = [
            ("endpoint", |c| c.endpoint = "ftp://host".to_owned()),
            ("service_name", |c| c.service_name = " ".to_owned()),
            ("frequency_hz", |c| c.frequency_hz = 0),
            ("upload_interval", |c| c.upload_interval = Duration::ZERO),
            ("max_buffered_bytes", |c| c.max_buffered_bytes = 0),
            ("request_timeout", |c| c.request_timeout = Duration::ZERO),
            ("max_backoff", |c| c.max_backoff = Duration::ZERO),
            ("labels", |c| {
                c.labels.insert("service_name".to_owned(), "x".to_owned());
            }),
        ];
        for (name, break_it) in cases {
            let mut config = valid.clone();
            break_it(&mut config);
            let error = config.validate().expect_err(name);
            assert!(error.to_string().starts_with(name), "{error}");
        }
    }
}
