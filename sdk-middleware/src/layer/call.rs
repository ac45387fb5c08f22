//! One instrumented call, shared by the server and client sides: it starts the span, learns
//! the outcome from the response head and trailers, and records the span status and the
//! duration histogram exactly once.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use http::uri::Authority;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer};
use meshlight_profiler::span::{PROFILE_ID_ATTRIBUTE, SpanLink};
use opentelemetry::{Context, KeyValue, StringValue, Value};

use crate::lane::Lane;
use crate::metrics::OTHER;
use crate::telemetry::Telemetry;

/// Span and metric attribute keys (OpenTelemetry semantic conventions, plus the lane).
mod keys {
    pub(super) const RPC_SYSTEM_NAME: &str = "rpc.system.name";
    pub(super) const RPC_METHOD: &str = "rpc.method";
    pub(super) const RPC_METHOD_ORIGINAL: &str = "rpc.method_original";
    pub(super) const RPC_RESPONSE_STATUS_CODE: &str = "rpc.response.status_code";
    pub(super) const HTTP_REQUEST_METHOD: &str = "http.request.method";
    pub(super) const HTTP_REQUEST_METHOD_ORIGINAL: &str = "http.request.method_original";
    pub(super) const HTTP_ROUTE: &str = "http.route";
    pub(super) const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
    pub(super) const URL_SCHEME: &str = "url.scheme";
    pub(super) const URL_PATH: &str = "url.path";
    pub(super) const URL_FULL: &str = "url.full";
    pub(super) const SERVER_ADDRESS: &str = "server.address";
    pub(super) const SERVER_PORT: &str = "server.port";
    pub(super) const ERROR_TYPE: &str = "error.type";
    pub(super) const LANE: &str = "meshlight.lane";
}

/// `error.type` of a call whose response never completed.
const CANCELLED: &str = "cancelled";

/// Which end of the call this process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Server,
    Client,
}

/// What kind of call, learnt from the request.
#[derive(Debug)]
enum Protocol {
    /// `content-type: application/grpc[+proto|;…]`; the method is the path without its
    /// leading `/`.
    Grpc { method: Arc<str> },
    Http {
        method: Method,
        route: Option<Arc<str>>,
    },
}

/// How the response ended.
#[derive(Clone, Copy, Debug)]
pub(crate) enum End {
    /// The body reached its end.
    Complete,
    /// The service or the body failed with an error of this type.
    Failed(&'static str),
    /// The response future or body was dropped before the end: the server's peer went away,
    /// or the client's caller gave up (a timeout, a `select!`).
    Dropped,
}

#[derive(Debug)]
pub(crate) struct Call {
    telemetry: Telemetry,
    /// Holds the call's span; current while the inner service runs.
    cx: Context,
    started: Instant,
    side: Side,
    protocol: Protocol,
    lane_label: Option<Value>,
    server: Option<(Arc<str>, Option<u16>)>,
    http_status: Option<StatusCode>,
    grpc_status: Option<i32>,
    /// While the profiler runs: the slot that labels the CPU samples taken inside this
    /// call with its span id.
    profile: Option<SpanLink>,
}

impl Call {
    /// Continues the caller's trace (or starts one) and attaches the lane.
    pub(crate) fn server<B>(telemetry: &Telemetry, request: &Request<B>) -> Call {
        let shared = &telemetry.shared;
        let remote = shared.propagation.extract(request.headers());
        let lane = Lane::from_request(&shared.settings, request.headers(), &remote);
        let protocol = Protocol::of(request, Side::Server);
        let parent = match lane {
            Some(lane) => lane.attach_to(&remote),
            None => remote,
        };
        let mut call = Call::start(telemetry, &parent, Side::Server, protocol, None);
        let span = call.cx.span();
        if span.is_recording() {
            if let Some((address, port)) = requested_authority(request) {
                span.set_attribute(KeyValue::new(keys::SERVER_ADDRESS, address));
                if let Some(port) = port {
                    span.set_attribute(KeyValue::new(keys::SERVER_PORT, i64::from(port)));
                }
            }
            if let Protocol::Http { .. } = call.protocol {
                span.set_attribute(KeyValue::new(
                    keys::URL_PATH,
                    request.uri().path().to_owned(),
                ));
            }
        }
        call.lane_label = call
            .cx
            .get::<Lane>()
            .map(|lane| shared.lane_labels.label(lane));
        call
    }

    /// Starts a client span under the current context and writes the propagation and lane
    /// headers into `request`.
    pub(crate) fn client<B>(
        telemetry: &Telemetry,
        request: &mut Request<B>,
        server: Option<&(Arc<str>, Option<u16>)>,
    ) -> Call {
        let shared = &telemetry.shared;
        let parent = Context::current();
        let protocol = Protocol::of(request, Side::Client);
        let server = server_of(request.uri()).or_else(|| server.cloned());
        let mut call = Call::start(telemetry, &parent, Side::Client, protocol, server);
        shared.propagation.inject(&call.cx, request.headers_mut());
        if let Some(lane) = call.cx.get::<Lane>() {
            lane.write_headers(request.headers_mut());
            call.lane_label = Some(shared.lane_labels.label(lane));
        }
        let span = call.cx.span();
        if span.is_recording() && matches!(call.protocol, Protocol::Http { .. }) {
            span.set_attribute(KeyValue::new(keys::URL_FULL, redacted_url(request.uri())));
        }
        call
    }

    fn start(
        telemetry: &Telemetry,
        parent: &Context,
        side: Side,
        protocol: Protocol,
        server: Option<(Arc<str>, Option<u16>)>,
    ) -> Call {
        let kind = match side {
            Side::Server => SpanKind::Server,
            Side::Client => SpanKind::Client,
        };
        let tracer = &telemetry.shared.tracer;
        let span = tracer.build_with_context(
            tracer.span_builder(protocol.span_name()).with_kind(kind),
            parent,
        );
        let cx = parent.with_span(span);
        let mut call = Call {
            telemetry: telemetry.clone(),
            cx,
            started: Instant::now(),
            side,
            protocol,
            lane_label: None,
            server,
            http_status: None,
            grpc_status: None,
            profile: None,
        };
        let span = call.cx.span();
        if span.is_recording() {
            let ids = span.span_context();
            call.profile = meshlight_profiler::span::link(ids.trace_id().to_bytes(), ids.span_id().to_bytes());
            if let Some(profile) = &call.profile {
                span.set_attribute(KeyValue::new(PROFILE_ID_ATTRIBUTE, profile.profile_id()));
            }
            span.set_attributes(call.request_attributes());
            if let Some(lane) = call.cx.get::<Lane>() {
                span.set_attribute(KeyValue::new(keys::LANE, lane.name().to_owned()));
            }
        }
        call
    }

    /// Runs `work` as part of this call: the profiler attributes its CPU samples to the span.
    pub(crate) fn run<R>(&self, work: impl FnOnce() -> R) -> R {
        match &self.profile {
            Some(profile) => profile.run(work),
            None => work(),
        }
    }

    /// The context that carries the call's span (and, server side, the lane and baggage).
    pub(crate) fn context(&self) -> &Context {
        &self.cx
    }

    /// Notes the HTTP status and, for a trailers-only gRPC response, the gRPC status.
    pub(crate) fn observe_head<B>(&mut self, response: &Response<B>) {
        self.http_status = Some(response.status());
        self.observe_grpc_status(response.headers());
    }

    /// Notes the gRPC status from the trailers.
    pub(crate) fn observe_trailers(&mut self, trailers: &HeaderMap) {
        self.observe_grpc_status(trailers);
    }

    fn observe_grpc_status(&mut self, headers: &HeaderMap) {
        if let Some(code) = headers
            .get("grpc-status")
            .and_then(|value| value.to_str().ok()?.parse().ok())
        {
            self.grpc_status = Some(code);
        }
    }

    /// Ends the span and records the duration.
    pub(crate) fn finish(self, end: End) {
        let seconds = self.started.elapsed().as_secs_f64();
        let mut attributes = self.request_attributes();
        let outcome_from = attributes.len();
        let error_type = self.outcome(end, &mut attributes);
        let method = self.grpc_method();
        if let Some(method) = &method {
            attributes.push(KeyValue::new(keys::RPC_METHOD, method.clone()));
        }
        let span = self.cx.span();
        if span.is_recording() {
            span.set_attributes(attributes[outcome_from..].iter().cloned());
            if let (Side::Server, Some(Value::String(method)), Protocol::Grpc { method: original }) =
                (self.side, &method, &self.protocol)
                && method.as_str() == OTHER
            {
                span.set_attribute(KeyValue::new(keys::RPC_METHOD_ORIGINAL, shared(original)));
                span.update_name("grpc");
            }
            if error_type.is_some() {
                // The status code already says what failed; only an error without one
                // gets a description.
                let description = if let End::Failed(error) = end {
                    error
                } else {
                    ""
                };
                span.set_status(Status::error(description));
            }
        }
        span.end();
        if let Some(lane) = self.lane_label {
            attributes.push(KeyValue::new(keys::LANE, lane));
        }
        let instruments = &self.telemetry.shared.instruments;
        let histogram = match (&self.protocol, self.side) {
            (Protocol::Grpc { .. }, Side::Server) => &instruments.rpc_server,
            (Protocol::Grpc { .. }, Side::Client) => &instruments.rpc_client,
            (Protocol::Http { .. }, Side::Server) => &instruments.http_server,
            (Protocol::Http { .. }, Side::Client) => &instruments.http_client,
        };
        histogram.record(seconds, &attributes);
    }

    /// Attributes known from the request, all bounded. The gRPC method is not among them:
    /// whether a server knows it shows only in the response ([`Call::grpc_method`]).
    fn request_attributes(&self) -> Vec<KeyValue> {
        let mut attributes = Vec::with_capacity(8);
        match &self.protocol {
            Protocol::Grpc { .. } => attributes.push(KeyValue::new(keys::RPC_SYSTEM_NAME, "grpc")),
            Protocol::Http { method, route } => {
                let known = known_method(method);
                attributes.push(KeyValue::new(
                    keys::HTTP_REQUEST_METHOD,
                    known.unwrap_or(OTHER),
                ));
                if known.is_none() {
                    attributes.push(KeyValue::new(
                        keys::HTTP_REQUEST_METHOD_ORIGINAL,
                        method.as_str().to_owned(),
                    ));
                }
                if self.side == Side::Server {
                    // Servers here speak cleartext; TLS terminates in the mesh sidecar.
                    attributes.push(KeyValue::new(keys::URL_SCHEME, "http"));
                }
                if let Some(route) = route {
                    attributes.push(KeyValue::new(keys::HTTP_ROUTE, shared(route)));
                }
            }
        }
        if let Some((address, port)) = &self.server {
            attributes.push(KeyValue::new(keys::SERVER_ADDRESS, shared(address)));
            if let Some(port) = port {
                attributes.push(KeyValue::new(keys::SERVER_PORT, i64::from(*port)));
            }
        }
        attributes
    }

    /// `rpc.method` of a gRPC call. A client knows which method it calls; a server knows a
    /// method only if it answered with a status other than UNIMPLEMENTED, so methods a caller
    /// invents stay one `_OTHER` series.
    fn grpc_method(&self) -> Option<Value> {
        let Protocol::Grpc { method } = &self.protocol else {
            return None;
        };
        let known = match self.side {
            Side::Client => true,
            Side::Server => self
                .grpc_status
                .is_some_and(|code| code != GRPC_UNIMPLEMENTED),
        };
        Some(if known {
            shared(method)
        } else {
            Value::from(OTHER)
        })
    }

    /// Appends what the response said (status, `error.type`) to `attributes`, and returns
    /// the error type when the call failed.
    fn outcome(&self, end: End, attributes: &mut Vec<KeyValue>) -> Option<Cow<'static, str>> {
        let mut error_type = match &self.protocol {
            Protocol::Grpc { .. } => self.grpc_outcome(end, attributes),
            Protocol::Http { .. } => self.http_outcome(attributes),
        };
        match end {
            End::Failed(error) => error_type = Some(Cow::Borrowed(error)),
            End::Dropped if error_type.is_none() => error_type = Some(Cow::Borrowed(CANCELLED)),
            End::Dropped | End::Complete => {}
        }
        if let Some(error_type) = &error_type {
            attributes.push(KeyValue::new(keys::ERROR_TYPE, error_type.clone()));
        }
        error_type
    }

    fn grpc_outcome(&self, end: End, attributes: &mut Vec<KeyValue>) -> Option<Cow<'static, str>> {
        let code = match (self.grpc_status, self.http_status, end) {
            (Some(code), _, _) => code,
            // A proxy or router answered with plain HTTP: gRPC's own mapping applies.
            (None, Some(status), _) if status != StatusCode::OK => grpc_code_of_http_status(status),
            (None, _, End::Dropped) => GRPC_CANCELLED,
            // A response that ended without a status is an error of the peer or the transport.
            (None, _, End::Complete | End::Failed(_)) => GRPC_UNKNOWN,
        };
        let name = grpc_code_name(code);
        attributes.push(KeyValue::new(keys::RPC_RESPONSE_STATUS_CODE, name));
        let is_error = match self.side {
            Side::Client => code != GRPC_OK,
            Side::Server => GRPC_SERVER_ERRORS.contains(&code),
        };
        is_error.then_some(Cow::Borrowed(name))
    }

    fn http_outcome(&self, attributes: &mut Vec<KeyValue>) -> Option<Cow<'static, str>> {
        let status = self.http_status?;
        attributes.push(KeyValue::new(
            keys::HTTP_RESPONSE_STATUS_CODE,
            i64::from(status.as_u16()),
        ));
        let is_error = match self.side {
            Side::Client => status.is_client_error() || status.is_server_error(),
            Side::Server => status.is_server_error(),
        };
        is_error.then(|| Cow::Owned(status.as_str().to_owned()))
    }
}

impl Protocol {
    fn of<B>(request: &Request<B>, side: Side) -> Protocol {
        // gRPC-Web carries its status in the body, so it is instrumented as HTTP.
        let is_grpc = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|content_type| {
                let content_type = content_type.as_bytes();
                content_type
                    .strip_prefix(b"application/grpc")
                    .is_some_and(|rest| {
                        rest.is_empty() || rest.starts_with(b"+") || rest.starts_with(b";")
                    })
            });
        if is_grpc {
            let method = Arc::from(request.uri().path().trim_start_matches('/'));
            return Protocol::Grpc { method };
        }
        let route = match side {
            Side::Server => request
                .extensions()
                .get::<axum::extract::MatchedPath>()
                .map(|path| Arc::from(path.as_str())),
            Side::Client => None,
        };
        Protocol::Http {
            method: request.method().clone(),
            route,
        }
    }

    fn span_name(&self) -> Cow<'static, str> {
        match self {
            Protocol::Grpc { method } => Cow::Owned(method.to_string()),
            Protocol::Http {
                method,
                route: Some(route),
            } => Cow::Owned(format!(
                "{} {route}",
                known_method(method).unwrap_or("HTTP")
            )),
            Protocol::Http {
                method,
                route: None,
            } => Cow::Borrowed(known_method(method).unwrap_or("HTTP")),
        }
    }
}

/// The request methods of RFC 9110 and RFC 5789; anything else is `_OTHER`.
fn known_method(method: &Method) -> Option<&'static str> {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    KNOWN.into_iter().find(|known| *known == method.as_str())
}

/// The host and port a server was addressed by: the URI's authority (HTTP/2), else `Host`.
fn requested_authority<B>(request: &Request<B>) -> Option<(String, Option<u16>)> {
    let from_host = || {
        let host = request.headers().get(http::header::HOST)?;
        Authority::try_from(host.as_bytes()).ok()
    };
    let authority = request.uri().authority().cloned().or_else(from_host)?;
    Some((authority.host().to_owned(), authority.port_u16()))
}

fn server_of(uri: &Uri) -> Option<(Arc<str>, Option<u16>)> {
    let host = uri.host()?;
    let default_port = match uri.scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    };
    Some((Arc::from(host), uri.port_u16().or(default_port)))
}

/// Query parameters that carry credentials in signed URLs (semantic conventions, `url.full`).
const SECRET_QUERY_PARAMETERS: [&str; 4] =
    ["AWSAccessKeyId", "Signature", "sig", "X-Goog-Signature"];

/// `uri` without credentials: user info and signature parameters become `REDACTED`.
fn redacted_url(uri: &Uri) -> String {
    let mut url = String::new();
    if let Some(scheme) = uri.scheme_str() {
        url.push_str(scheme);
        url.push_str("://");
    }
    if let Some(authority) = uri.authority() {
        if authority.as_str().contains('@') {
            url.push_str("REDACTED:REDACTED@");
        }
        url.push_str(authority.host());
        if let Some(port) = authority.port() {
            url.push(':');
            url.push_str(port.as_str());
        }
    }
    url.push_str(uri.path());
    if let Some(query) = uri.query() {
        url.push('?');
        for (index, pair) in query.split('&').enumerate() {
            if index > 0 {
                url.push('&');
            }
            match pair.split_once('=') {
                Some((name, _)) if SECRET_QUERY_PARAMETERS.contains(&name) => {
                    url.push_str(name);
                    url.push_str("=REDACTED");
                }
                _ => url.push_str(pair),
            }
        }
    }
    url
}

/// An attribute value that shares `text` instead of copying it.
fn shared(text: &Arc<str>) -> Value {
    Value::String(StringValue::from(text.clone()))
}

const GRPC_OK: i32 = 0;
const GRPC_CANCELLED: i32 = 1;
const GRPC_UNKNOWN: i32 = 2;
const GRPC_UNIMPLEMENTED: i32 = 12;

/// The codes that mean the server failed, rather than the caller asking for something wrong
/// (semantic conventions, "gRPC status").
const GRPC_SERVER_ERRORS: [i32; 6] = [2, 4, 12, 13, 14, 15];

fn grpc_code_name(code: i32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|index| NAMES.get(index))
        .copied()
        .unwrap_or(OTHER)
}

/// gRPC's mapping of an HTTP status that came without a gRPC status
/// (grpc/doc/http-grpc-status-mapping.md).
fn grpc_code_of_http_status(status: StatusCode) -> i32 {
    match status.as_u16() {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502..=504 => 14,
        _ => GRPC_UNKNOWN,
    }
}

/// A type's path without generic arguments: a bounded `error.type` for errors without a code.
pub(crate) fn error_type_name<T>() -> &'static str {
    let name = std::any::type_name::<T>();
    name.split('<').next().unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_urls_lose_their_credentials() {
        let uri: Uri = "https://user:pw@bucket.example:8443/o?X-Goog-Signature=abc&part=1&sig=x"
            .parse()
            .expect("uri");
        assert_eq!(
            redacted_url(&uri),
            "https://REDACTED:REDACTED@bucket.example:8443/o?X-Goog-Signature=REDACTED&part=1&sig=REDACTED"
        );
        let plain: Uri = "http://inventory/stock?item=7".parse().expect("uri");
        assert_eq!(redacted_url(&plain), "http://inventory/stock?item=7");
    }

    #[test]
    fn plain_http_answers_to_grpc_map_as_grpc_says() {
        assert_eq!(
            grpc_code_name(grpc_code_of_http_status(StatusCode::NOT_FOUND)),
            "UNIMPLEMENTED"
        );
        assert_eq!(
            grpc_code_name(grpc_code_of_http_status(StatusCode::SERVICE_UNAVAILABLE)),
            "UNAVAILABLE"
        );
        assert_eq!(
            grpc_code_name(grpc_code_of_http_status(StatusCode::IM_A_TEAPOT)),
            "UNKNOWN"
        );
        assert_eq!(grpc_code_name(99), "_OTHER");
    }

    #[test]
    fn error_type_names_keep_their_path() {
        assert_eq!(error_type_name::<std::io::Error>(), "std::io::error::Error");
        assert_eq!(
            error_type_name::<Box<dyn std::error::Error>>(),
            "alloc::boxed::Box"
        );
    }
}
