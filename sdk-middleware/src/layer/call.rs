//! One instrumented call, shared by the server and client sides: it starts the span, learns
//! the outcome from the response head and trailers, and records the span status and the
//! duration histogram exactly once.

use std::borrow::Cow;
use std::time::Instant;

use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue, Value};

use crate::lane::Lane;
use crate::telemetry::Telemetry;

/// Span and metric attribute keys (OpenTelemetry semantic conventions, plus the lane).
mod keys {
    pub(super) const RPC_SYSTEM_NAME: &str = "rpc.system.name";
    pub(super) const RPC_METHOD: &str = "rpc.method";
    pub(super) const RPC_RESPONSE_STATUS_CODE: &str = "rpc.response.status_code";
    pub(super) const HTTP_REQUEST_METHOD: &str = "http.request.method";
    pub(super) const HTTP_REQUEST_METHOD_ORIGINAL: &str = "http.request.method_original";
    pub(super) const HTTP_ROUTE: &str = "http.route";
    pub(super) const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
    pub(super) const URL_PATH: &str = "url.path";
    pub(super) const URL_FULL: &str = "url.full";
    pub(super) const SERVER_ADDRESS: &str = "server.address";
    pub(super) const SERVER_PORT: &str = "server.port";
    pub(super) const ERROR_TYPE: &str = "error.type";
    pub(super) const LANE: &str = "meshlight.lane";
}

/// The value of `rpc.method` and `http.request.method` the conventions prescribe for
/// methods the instrumentation does not know, so a flood of invented ones stays one series.
const OTHER: &str = "_OTHER";

/// Which end of the call this process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Server,
    Client,
}

/// What kind of call, learnt from the request.
#[derive(Debug)]
enum Protocol {
    /// `content-type: application/grpc…`; the method is the path without its leading `/`.
    Grpc { method: String },
    Http {
        method: Method,
        route: Option<String>,
    },
}

/// How the response ended.
#[derive(Clone, Copy, Debug)]
pub(crate) enum End {
    /// The body reached its end.
    Complete,
    /// The service or the body failed with an error of this type.
    Failed(&'static str),
    /// The response or its body was dropped before the end (the peer went away).
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
    server: Option<(String, u16)>,
    http_status: Option<StatusCode>,
    grpc_status: Option<i32>,
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
            if let Some(host) = request
                .headers()
                .get(http::header::HOST)
                .and_then(|host| host.to_str().ok())
            {
                span.set_attribute(KeyValue::new(keys::SERVER_ADDRESS, host.to_owned()));
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
        server: Option<&(String, u16)>,
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
            span.set_attribute(KeyValue::new(keys::URL_FULL, request.uri().to_string()));
        }
        call
    }

    fn start(
        telemetry: &Telemetry,
        parent: &Context,
        side: Side,
        protocol: Protocol,
        server: Option<(String, u16)>,
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
        let call = Call {
            telemetry: telemetry.clone(),
            cx,
            started: Instant::now(),
            side,
            protocol,
            lane_label: None,
            server,
            http_status: None,
            grpc_status: None,
        };
        let span = call.cx.span();
        if span.is_recording() {
            span.set_attributes(call.request_attributes(true));
            if let Some(lane) = call.cx.get::<Lane>() {
                span.set_attribute(KeyValue::new(keys::LANE, lane.name().to_owned()));
            }
        }
        call
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
        let mut attributes = self.request_attributes(false);
        let outcome_from = attributes.len();
        let error_type = self.outcome(end, &mut attributes);
        let span = self.cx.span();
        if span.is_recording() {
            span.set_attributes(attributes[outcome_from..].iter().cloned());
            if let Some(error_type) = error_type {
                span.set_status(Status::error(error_type));
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

    /// Attributes known from the request: on spans all of them, on metrics the bounded ones.
    fn request_attributes(&self, for_span: bool) -> Vec<KeyValue> {
        let mut attributes = Vec::with_capacity(8);
        match &self.protocol {
            Protocol::Grpc { method } => {
                attributes.push(KeyValue::new(keys::RPC_SYSTEM_NAME, "grpc"));
                // Server side, an unimplemented method is whatever the caller invented.
                let unknown =
                    self.side == Side::Server && self.grpc_status == Some(GRPC_UNIMPLEMENTED);
                let method = if unknown && !for_span {
                    OTHER.to_owned()
                } else {
                    method.clone()
                };
                attributes.push(KeyValue::new(keys::RPC_METHOD, method));
            }
            Protocol::Http { method, route } => {
                let known = known_method(method);
                attributes.push(KeyValue::new(
                    keys::HTTP_REQUEST_METHOD,
                    known.unwrap_or(OTHER),
                ));
                if known.is_none() && for_span {
                    attributes.push(KeyValue::new(
                        keys::HTTP_REQUEST_METHOD_ORIGINAL,
                        method.as_str().to_owned(),
                    ));
                }
                if let Some(route) = route {
                    attributes.push(KeyValue::new(keys::HTTP_ROUTE, route.clone()));
                }
            }
        }
        if let Some((address, port)) = &self.server {
            attributes.push(KeyValue::new(keys::SERVER_ADDRESS, address.clone()));
            attributes.push(KeyValue::new(keys::SERVER_PORT, i64::from(*port)));
        }
        attributes
    }

    /// Appends what the response said (status, `error.type`) to `attributes`, and returns
    /// the error type when the call failed.
    fn outcome(&self, end: End, attributes: &mut Vec<KeyValue>) -> Option<Cow<'static, str>> {
        let mut error_type = match &self.protocol {
            Protocol::Grpc { .. } => self.grpc_outcome(end, attributes),
            Protocol::Http { .. } => self.http_outcome(attributes),
        };
        if let End::Failed(error) = end {
            error_type = Some(Cow::Borrowed(error));
        }
        if let Some(error_type) = &error_type {
            attributes.push(KeyValue::new(keys::ERROR_TYPE, error_type.clone()));
        }
        error_type
    }

    fn grpc_outcome(&self, end: End, attributes: &mut Vec<KeyValue>) -> Option<Cow<'static, str>> {
        let code = match (self.grpc_status, end) {
            (Some(code), _) => code,
            (None, End::Dropped) => GRPC_CANCELLED,
            // A response that ended without a status is an error of the peer or the transport.
            (None, End::Complete) => GRPC_UNKNOWN,
            (None, End::Failed(_)) => return None,
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
        let is_grpc = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|content_type| content_type.as_bytes().starts_with(b"application/grpc"));
        if is_grpc {
            let method = request.uri().path().trim_start_matches('/').to_owned();
            return Protocol::Grpc { method };
        }
        let route = match side {
            Side::Server => request
                .extensions()
                .get::<axum::extract::MatchedPath>()
                .map(|path| path.as_str().to_owned()),
            Side::Client => None,
        };
        Protocol::Http {
            method: request.method().clone(),
            route,
        }
    }

    fn span_name(&self) -> Cow<'static, str> {
        match self {
            Protocol::Grpc { method } => Cow::Owned(method.clone()),
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

fn server_of(uri: &Uri) -> Option<(String, u16)> {
    let host = uri.host()?;
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    Some((host.to_owned(), port))
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

/// The last segment of a type's path: a bounded `error.type` for errors without a code.
pub(crate) fn short_type_name<T>() -> &'static str {
    let name = std::any::type_name::<T>();
    let without_generics = name.split('<').next().unwrap_or(name);
    without_generics
        .rsplit("::")
        .next()
        .unwrap_or(without_generics)
}
