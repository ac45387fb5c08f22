//! The mesh data set: a fixed service topology plus the value domains that span and resource
//! attributes are drawn from.
//!
//! The topology is modelled on the OpenTelemetry demo ("astronomy shop") grown to 20
//! services. Every trace enters through the `frontend-proxy` gateway, which forwards each
//! route to `frontend`; from there CLIENT→SERVER hops fan out over gRPC and HTTP to the
//! backends, which talk to PostgreSQL, Valkey (Redis protocol), external HTTPS APIs and a
//! Kafka topic consumed by three services.
//!
//! Measured with `meshlight-loadgen --shape mesh --describe` (seed 1, 64 × 500 spans) and
//! asserted loosely by the module tests: 205 possible (service, span name) operations,
//! traces of 5–50 spans (mean ≈ 14), ≈ 2 % error spans, ≈ 5.7 span attributes and
//! ≈ 355 protobuf bytes per span.
//!
//! # Cardinalities
//!
//! Every attribute value is drawn from a domain of documented size, so that queries and
//! storage numbers (dictionary sizes, bytes per span) can be reasoned about. "per trace"
//! means the value is chosen once per trace and repeated on every span that carries it.
//!
//! | attribute | on | distinct values |
//! |---|---|---|
//! | `service.name`, `k8s.deployment.name`, `service.version` | resource | 20 (one version per service) |
//! | `k8s.pod.name`, `k8s.pod.uid`, `service.instance.id` | resource | 3 pods per service = 60 |
//! | `k8s.node.name`, `host.name` | resource | 4 |
//! | `k8s.namespace.name` | resource | 4 (`edge`, `shop`, `payments`, `platform`) |
//! | `telemetry.sdk.language` | resource | 9 |
//! | `service.namespace`, `telemetry.sdk.name`, `deployment.environment.name`, `cloud.region`, `cloud.provider` | resource | 1 each |
//! | `http.request.method` (legacy `http.method`) | HTTP spans | 4 (`GET`, `POST`, `PUT`, `DELETE`) |
//! | `http.route` | HTTP server spans | 32 (28 public routes + 4 internal) |
//! | `url.path` (legacy `http.target`) | HTTP server spans | route × id domain: user ids 10 000, product ids 500, order ids unbounded |
//! | `http.response.status_code` (legacy `http.status_code`) | HTTP spans | 8 (200 201 204 400 404 429 500 503) |
//! | `rpc.system.name` (legacy `rpc.system`) | gRPC spans | 1 (`grpc`) |
//! | `rpc.method` | gRPC spans | 37 fully qualified methods (legacy: method only, plus `rpc.service`) |
//! | `rpc.response.status_code` (legacy `rpc.grpc.status_code`, int) | gRPC spans | 8 |
//! | `server.address` (legacy `net.peer.name` / `net.host.name`) | CLIENT and SERVER spans | 26 (20 services, 2 data stores, kafka, 3 external hosts) |
//! | `server.port` (legacy `net.peer.port` / `net.host.port`) | CLIENT and SERVER spans | 5 (443, 5432, 6379, 8080, 9092) |
//! | `network.peer.address` (legacy `net.sock.peer.addr`) | CLIENT spans inside the mesh | 60 pod IPs + 2 data store IPs |
//! | `client.address` | gateway SERVER spans | 1 000 |
//! | `user_agent.original` | gateway SERVER spans | 10 |
//! | `app.user.id` (the "user_id") | per trace | 10 000 |
//! | `session.id` | per trace | 50 000 |
//! | `app.product.id` | product spans | 500 |
//! | `app.order.id` | checkout and order spans | unbounded (random per trace) |
//! | `app.cart.items.count` | cart spans | 21 (0–20, int) |
//! | `app.order.amount` | checkout spans | continuous (double) |
//! | `app.currency.from`, `app.currency.to` | currency spans | 8 each |
//! | `app.cache.hit` | cache-fronted spans | 2 (bool) |
//! | `app.recommendations.count` | recommendation spans | 5 (1–5, int) |
//! | `db.system.name`, `db.operation.name`, `db.collection.name`, `db.query.text` | database spans | 2 systems, statements fixed per call site |
//! | `messaging.*` | Kafka spans | 1 topic (`orders`), 3 consumer groups |
//! | span status message | error spans | 12 (empty on spans whose error is the caller's, 4xx and the like) |
//! | `exception.type` / `exception.message` on `exception` events | 70 % of server-fault error spans | 6 / 12 |
//!
//! Five services (`cart`, `ad`, `orders`, `accounting`, `user`) emit the pre-1.21 semantic
//! conventions (`http.method`, `net.peer.name`, `rpc.system`, `db.statement` …), as a real
//! mesh mixing SDK generations does; the others use current names.

/// Pods (replicas) per service; each pod is one OTLP resource.
pub(super) const PODS_PER_SERVICE: usize = 3;

/// Distinct `app.user.id` values.
pub(super) const USER_COUNT: u32 = 10_000;

/// Distinct `session.id` values.
pub(super) const SESSION_COUNT: u32 = 50_000;

/// Distinct `app.product.id` values.
pub(super) const PRODUCT_COUNT: usize = 500;

/// Distinct `client.address` values seen by the gateway.
pub(super) const CLIENT_ADDRESS_COUNT: u32 = 1_000;

/// The Kubernetes nodes pods are spread over (`k8s.node.name`, `host.name`).
pub(super) const NODES: [&str; 4] = [
    "ip-10-0-1-17.eu-west-1.compute.internal",
    "ip-10-0-1-142.eu-west-1.compute.internal",
    "ip-10-0-2-33.eu-west-1.compute.internal",
    "ip-10-0-2-201.eu-west-1.compute.internal",
];

/// `user_agent.original` values seen by the gateway.
pub(super) const USER_AGENTS: [&str; 10] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0.0.0 Safari/537.36 Edg/125.0.0.0",
    "astronomy-shop-ios/4.2.1 (iPhone; iOS 17.5)",
    "astronomy-shop-android/4.2.0 (Android 14)",
    "python-requests/2.32.3",
    "k6/0.51.0 (https://k6.io/)",
];

/// `app.currency.from` / `app.currency.to` values.
pub(super) const CURRENCY_CODES: [&str; 8] =
    ["USD", "EUR", "GBP", "JPY", "CAD", "CHF", "AUD", "SEK"];

/// One way a request can fail: the span status message and, for the `exception` event, the
/// exception type. 12 messages over 6 types.
#[derive(Debug, Clone, Copy)]
pub(super) struct FailureKind {
    pub(super) message: &'static str,
    pub(super) exception_type: &'static str,
}

/// Failures of a server handling a request (span status message domain).
pub(super) const SERVER_FAILURES: [FailureKind; 8] = [
    FailureKind {
        message: "context deadline exceeded",
        exception_type: "DeadlineExceededError",
    },
    FailureKind {
        message: "upstream request timeout",
        exception_type: "DeadlineExceededError",
    },
    FailureKind {
        message: "connection refused",
        exception_type: "ConnectionError",
    },
    FailureKind {
        message: "upstream connect error or disconnect/reset before headers",
        exception_type: "ConnectionError",
    },
    FailureKind {
        message: "internal error: index out of range",
        exception_type: "RuntimeError",
    },
    FailureKind {
        message: "failed to serialize response",
        exception_type: "RuntimeError",
    },
    FailureKind {
        message: "circuit breaker is open",
        exception_type: "UnavailableError",
    },
    FailureKind {
        message: "downstream dependency failed",
        exception_type: "UnavailableError",
    },
];

/// Failures of a database call.
pub(super) const DATABASE_FAILURES: [FailureKind; 4] = [
    FailureKind {
        message: "deadlock detected",
        exception_type: "DatabaseError",
    },
    FailureKind {
        message: "canceling statement due to statement timeout",
        exception_type: "DatabaseError",
    },
    FailureKind {
        message: "connection reset by peer",
        exception_type: "ConnectionError",
    },
    FailureKind {
        message: "too many connections",
        exception_type: "PoolExhaustedError",
    },
];

/// Probability that a SERVER span fails on its own (before cascades from its callees).
pub(super) const SERVER_FAILURE_PROBABILITY: f64 = 0.018;

/// Probability that a SERVER span fails because one of its callees failed.
pub(super) const CASCADE_FAILURE_PROBABILITY: f64 = 0.25;

/// Probability that a database call fails.
pub(super) const DATABASE_FAILURE_PROBABILITY: f64 = 0.01;

/// Probability that a successful request is answered with a client error (HTTP 4xx, gRPC
/// `NOT_FOUND` …), which marks only the CLIENT span as an error, as the conventions say.
pub(super) const CLIENT_ERROR_PROBABILITY: f64 = 0.01;

/// Probability that an error span carries an `exception` event.
pub(super) const EXCEPTION_EVENT_PROBABILITY: f64 = 0.7;

/// Upper bound on spans per trace; steps that would exceed it are skipped.
pub(super) const MAX_SPANS_PER_TRACE: usize = 50;

/// Which `telemetry.sdk.language` (and instrumentation library names) a service uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Language {
    Cpp,
    DotNet,
    Go,
    Java,
    NodeJs,
    Php,
    Python,
    Ruby,
    Rust,
}

impl Language {
    /// The `telemetry.sdk.language` value.
    pub(super) fn sdk_language(self) -> &'static str {
        match self {
            Language::Cpp => "cpp",
            Language::DotNet => "dotnet",
            Language::Go => "go",
            Language::Java => "java",
            Language::NodeJs => "nodejs",
            Language::Php => "php",
            Language::Python => "python",
            Language::Ruby => "ruby",
            Language::Rust => "rust",
        }
    }

    /// The `telemetry.sdk.version` value (also used as instrumentation scope version).
    pub(super) fn sdk_version(self) -> &'static str {
        match self {
            Language::Cpp => "1.16.1",
            Language::DotNet => "1.9.0",
            Language::Go => "1.34.0",
            Language::Java => "1.42.1",
            Language::NodeJs => "1.30.1",
            Language::Php => "1.1.0",
            Language::Python => "1.29.0",
            Language::Ruby => "1.5.0",
            Language::Rust => "0.29.0",
        }
    }
}

/// The value domain an `{id}` placeholder in an HTTP route is filled from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PathId {
    /// The route has no placeholder.
    None,
    /// The trace's user id.
    User,
    /// A product id.
    Product,
    /// The trace's order id.
    Order,
}

/// How an endpoint is reached; decides span name, kind and attributes of both hop ends.
#[derive(Debug, Clone, Copy)]
pub(super) enum Protocol {
    /// HTTP; the SERVER span is named `{method} {route}`, the CLIENT span `{method}`.
    Http {
        method: &'static str,
        route: &'static str,
        path_id: PathId,
    },
    /// gRPC; both span names are `{service}/{method}`.
    Grpc {
        service: &'static str,
        method: &'static str,
    },
    /// A Kafka consumer; the CONSUMER span is named `process {topic}`.
    Consume { topic: &'static str },
}

/// Application attributes an endpoint puts on its SERVER span (see the cardinality table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AppAttribute {
    UserId,
    SessionId,
    ProductId,
    OrderId,
    OrderAmount,
    CartItemsCount,
    CurrencyPair,
    CacheHit,
    RecommendationsCount,
}

/// A database a step talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Database {
    Postgres,
    Valkey,
}

impl Database {
    pub(super) fn system_name(self) -> &'static str {
        match self {
            Database::Postgres => "postgresql",
            Database::Valkey => "redis",
        }
    }

    pub(super) fn host(self) -> &'static str {
        match self {
            Database::Postgres => "postgresql.data.svc.cluster.local",
            Database::Valkey => "valkey.data.svc.cluster.local",
        }
    }

    pub(super) fn peer_address(self) -> &'static str {
        match self {
            Database::Postgres => "10.43.12.5",
            Database::Valkey => "10.43.12.9",
        }
    }

    pub(super) fn port(self) -> i64 {
        match self {
            Database::Postgres => 5432,
            Database::Valkey => 6379,
        }
    }

    /// Median latency of one call.
    pub(super) fn median_ms(self) -> f64 {
        match self {
            Database::Postgres => 1.8,
            Database::Valkey => 0.35,
        }
    }
}

/// What one step of an endpoint's work produces.
#[derive(Debug, Clone, Copy)]
pub(super) enum Action {
    /// A CLIENT span here plus the SERVER span of `endpoint` (its span name) in `service`.
    Call {
        service: &'static str,
        endpoint: &'static str,
    },
    /// An INTERNAL span.
    Internal { name: &'static str, median_ms: f64 },
    /// A CLIENT span to a database. `collection` is empty for key-value commands.
    Query {
        database: Database,
        operation: &'static str,
        collection: &'static str,
        statement: &'static str,
    },
    /// A CLIENT span to an HTTPS API outside the mesh (no SERVER span).
    External {
        method: &'static str,
        host: &'static str,
        path: &'static str,
        median_ms: f64,
    },
    /// A PRODUCER span, followed by the CONSUMER spans of every subscriber of `topic`.
    Publish { topic: &'static str },
}

/// One step of an endpoint's work: an action, how likely it happens and how often.
#[derive(Debug, Clone, Copy)]
pub(super) struct Step {
    pub(super) action: Action,
    pub(super) probability: f64,
    pub(super) min_repeat: u8,
    pub(super) max_repeat: u8,
}

impl Step {
    fn always(action: Action) -> Self {
        Step {
            action,
            probability: 1.0,
            min_repeat: 1,
            max_repeat: 1,
        }
    }

    /// Performs the step only with probability `probability`.
    fn sometimes(mut self, probability: f64) -> Self {
        self.probability = probability;
        self
    }

    /// Performs the step between `min` and `max` times (uniform).
    fn repeat(mut self, min: u8, max: u8) -> Self {
        debug_assert!(min <= max);
        self.min_repeat = min;
        self.max_repeat = max;
        self
    }
}

fn call(service: &'static str, endpoint: &'static str) -> Step {
    Step::always(Action::Call { service, endpoint })
}

fn internal(name: &'static str, median_ms: f64) -> Step {
    Step::always(Action::Internal { name, median_ms })
}

fn sql(operation: &'static str, table: &'static str, statement: &'static str) -> Step {
    Step::always(Action::Query {
        database: Database::Postgres,
        operation,
        collection: table,
        statement,
    })
}

fn valkey(command: &'static str) -> Step {
    Step::always(Action::Query {
        database: Database::Valkey,
        operation: command,
        collection: "",
        statement: "",
    })
}

fn external(method: &'static str, host: &'static str, path: &'static str, median_ms: f64) -> Step {
    Step::always(Action::External {
        method,
        host,
        path,
        median_ms,
    })
}

fn publish(topic: &'static str) -> Step {
    Step::always(Action::Publish { topic })
}

/// An operation a service serves.
#[derive(Debug, Clone)]
pub(super) struct EndpointDef {
    pub(super) protocol: Protocol,
    /// Median time the endpoint spends itself, outside its steps.
    pub(super) self_time_ms: f64,
    /// Relative frequency as a trace entry point (only `frontend` routes are entry points).
    pub(super) traffic_weight: u32,
    pub(super) app_attributes: &'static [AppAttribute],
    pub(super) steps: Vec<Step>,
}

impl EndpointDef {
    fn new(protocol: Protocol) -> Self {
        EndpointDef {
            protocol,
            self_time_ms: 1.0,
            traffic_weight: 1,
            app_attributes: &[],
            steps: Vec::new(),
        }
    }

    fn self_ms(mut self, median_ms: f64) -> Self {
        self.self_time_ms = median_ms;
        self
    }

    fn weight(mut self, traffic_weight: u32) -> Self {
        self.traffic_weight = traffic_weight;
        self
    }

    fn app(mut self, attributes: &'static [AppAttribute]) -> Self {
        self.app_attributes = attributes;
        self
    }

    fn steps(mut self, steps: Vec<Step>) -> Self {
        self.steps = steps;
        self
    }
}

fn http(method: &'static str, route: &'static str) -> EndpointDef {
    EndpointDef::new(Protocol::Http {
        method,
        route,
        path_id: PathId::None,
    })
}

fn http_with_id(method: &'static str, route: &'static str, path_id: PathId) -> EndpointDef {
    EndpointDef::new(Protocol::Http {
        method,
        route,
        path_id,
    })
}

fn grpc(service: &'static str, method: &'static str) -> EndpointDef {
    EndpointDef::new(Protocol::Grpc { service, method })
}

fn consume(topic: &'static str) -> EndpointDef {
    EndpointDef::new(Protocol::Consume { topic })
}

/// What part a service plays in the topology.
#[derive(Debug, Clone)]
pub(super) enum Role {
    /// Serves every HTTP route of `upstream` and forwards it there; traces start here.
    Gateway { upstream: &'static str },
    /// Serves its own endpoints.
    Backend { endpoints: Vec<EndpointDef> },
}

/// One service of the mesh.
#[derive(Debug, Clone)]
pub(super) struct ServiceDef {
    pub(super) name: &'static str,
    pub(super) namespace: &'static str,
    pub(super) language: Language,
    pub(super) version: &'static str,
    /// Emits pre-1.21 semantic-convention attribute names.
    pub(super) legacy_semconv: bool,
    pub(super) role: Role,
}

fn service(
    name: &'static str,
    namespace: &'static str,
    language: Language,
    version: &'static str,
) -> ServiceDef {
    ServiceDef {
        name,
        namespace,
        language,
        version,
        legacy_semconv: false,
        role: Role::Backend {
            endpoints: Vec::new(),
        },
    }
}

impl ServiceDef {
    fn legacy_semconv(mut self) -> Self {
        self.legacy_semconv = true;
        self
    }

    fn gateway_for(mut self, upstream: &'static str) -> Self {
        self.role = Role::Gateway { upstream };
        self
    }

    fn endpoints(mut self, endpoints: Vec<EndpointDef>) -> Self {
        self.role = Role::Backend { endpoints };
        self
    }
}

/// The port every service listens on (`server.port`).
pub(super) const SERVICE_PORT: i64 = 8080;

/// The Kafka bootstrap address (`server.address` on messaging spans).
pub(super) const KAFKA_HOST: &str = "kafka.data.svc.cluster.local";

/// The Kafka port.
pub(super) const KAFKA_PORT: i64 = 9092;

/// The semantic-conventions schema the current-name services declare.
pub(super) const SEMCONV_SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.34.0";

/// The semantic-conventions schema the legacy-name services declare.
pub(super) const LEGACY_SEMCONV_SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.17.0";

/// The 20 services of the mesh. The first one is the gateway every trace starts in.
pub(super) fn mesh_services() -> Vec<ServiceDef> {
    use AppAttribute::{
        CacheHit, CartItemsCount, CurrencyPair, OrderAmount, OrderId, ProductId,
        RecommendationsCount, SessionId, UserId,
    };
    use Language::{Cpp, DotNet, Go, Java, NodeJs, Php, Python, Ruby, Rust};

    const AUTH: &str = "oteldemo.AuthService/ValidateToken";
    let validate_token = || call("auth", AUTH);

    vec![
        service("frontend-proxy", "edge", Cpp, "1.30.2").gateway_for("frontend"),
        service("frontend", "shop", NodeJs, "2.1.3").endpoints(vec![
            http("GET", "/api/v1/products").weight(30).self_ms(2.0).app(&[UserId, SessionId]).steps(vec![
                call("product-catalog", "oteldemo.ProductCatalogService/ListProducts"),
                call("currency", "oteldemo.CurrencyService/Convert").repeat(1, 3),
                internal("render_product_list", 1.5),
            ]),
            http_with_id("GET", "/api/v1/products/{id}", PathId::Product)
                .weight(25)
                .self_ms(2.0)
                .app(&[UserId, SessionId, ProductId])
                .steps(vec![
                    call("product-catalog", "oteldemo.ProductCatalogService/GetProduct"),
                    call("recommendation", "oteldemo.RecommendationService/ListRecommendations"),
                    call("ad", "oteldemo.AdService/GetAds").sometimes(0.8),
                    call("currency", "oteldemo.CurrencyService/Convert"),
                    internal("render_product_page", 1.5),
                ]),
            http_with_id("GET", "/api/v1/products/{id}/reviews", PathId::Product)
                .weight(4)
                .app(&[UserId, SessionId, ProductId])
                .steps(vec![call("product-catalog", "oteldemo.ProductCatalogService/GetReviews")]),
            http_with_id("POST", "/api/v1/products/{id}/reviews", PathId::Product)
                .weight(1)
                .app(&[UserId, SessionId, ProductId])
                .steps(vec![validate_token(), call("product-catalog", "oteldemo.ProductCatalogService/AddReview")]),
            http("GET", "/api/v1/search").weight(8).app(&[UserId, SessionId]).steps(vec![
                call("search", "GET /search"),
                internal("render_search_results", 1.0),
            ]),
            http("GET", "/api/v1/categories")
                .weight(3)
                .steps(vec![call("product-catalog", "oteldemo.ProductCatalogService/ListCategories")]),
            http("GET", "/api/v1/recommendations")
                .weight(6)
                .app(&[UserId, SessionId])
                .steps(vec![call("recommendation", "oteldemo.RecommendationService/ListRecommendations")]),
            http("GET", "/api/v1/ads").weight(5).steps(vec![call("ad", "oteldemo.AdService/GetAds")]),
            http_with_id("GET", "/api/v1/cart/{id}", PathId::User)
                .weight(10)
                .self_ms(1.5)
                .app(&[UserId, SessionId])
                .steps(vec![
                    validate_token(),
                    call("cart", "oteldemo.CartService/GetCart"),
                    call("product-catalog", "oteldemo.ProductCatalogService/GetProduct").repeat(1, 4),
                    call("currency", "oteldemo.CurrencyService/Convert"),
                    internal("render_cart", 1.0),
                ]),
            http_with_id("POST", "/api/v1/cart/{id}/items", PathId::User)
                .weight(6)
                .app(&[UserId, SessionId, ProductId])
                .steps(vec![
                    validate_token(),
                    call("inventory", "oteldemo.InventoryService/CheckStock"),
                    call("cart", "oteldemo.CartService/AddItem"),
                ]),
            http_with_id("DELETE", "/api/v1/cart/{id}/items", PathId::User)
                .weight(2)
                .app(&[UserId, SessionId, ProductId])
                .steps(vec![validate_token(), call("cart", "oteldemo.CartService/RemoveItem")]),
            http_with_id("DELETE", "/api/v1/cart/{id}", PathId::User)
                .weight(1)
                .app(&[UserId, SessionId])
                .steps(vec![validate_token(), call("cart", "oteldemo.CartService/EmptyCart")]),
            http("POST", "/api/v1/checkout")
                .weight(2)
                .self_ms(3.0)
                .app(&[UserId, SessionId])
                .steps(vec![validate_token(), call("checkout", "oteldemo.CheckoutService/PlaceOrder")]),
            http("GET", "/api/v1/currencies")
                .weight(2)
                .steps(vec![call("currency", "oteldemo.CurrencyService/GetSupportedCurrencies")]),
            http("GET", "/api/v1/shipping/quote").weight(2).app(&[UserId, SessionId]).steps(vec![
                call("cart", "oteldemo.CartService/GetCart"),
                call("shipping", "oteldemo.ShippingService/GetQuote"),
            ]),
            http("GET", "/api/v1/orders")
                .weight(2)
                .app(&[UserId, SessionId])
                .steps(vec![validate_token(), call("orders", "oteldemo.OrderService/ListOrders")]),
            http_with_id("GET", "/api/v1/orders/{id}", PathId::Order)
                .weight(2)
                .app(&[UserId, SessionId, OrderId])
                .steps(vec![validate_token(), call("orders", "oteldemo.OrderService/GetOrder")]),
            http_with_id("POST", "/api/v1/orders/{id}/cancel", PathId::Order)
                .weight(1)
                .app(&[UserId, SessionId, OrderId])
                .steps(vec![validate_token(), call("orders", "oteldemo.OrderService/CancelOrder")]),
            http_with_id("GET", "/api/v1/users/{id}", PathId::User)
                .weight(2)
                .app(&[UserId, SessionId])
                .steps(vec![validate_token(), call("user", "oteldemo.UserService/GetUser")]),
            http_with_id("PUT", "/api/v1/users/{id}", PathId::User)
                .weight(1)
                .app(&[UserId, SessionId])
                .steps(vec![validate_token(), call("user", "oteldemo.UserService/UpdateUser")]),
            http_with_id("GET", "/api/v1/users/{id}/preferences", PathId::User)
                .weight(1)
                .app(&[UserId, SessionId])
                .steps(vec![validate_token(), call("user", "oteldemo.UserService/GetPreferences")]),
            http("GET", "/api/v1/recently-viewed").weight(2).app(&[UserId, SessionId]).steps(vec![
                validate_token(),
                call("user", "oteldemo.UserService/GetRecentlyViewed"),
                call("product-catalog", "oteldemo.ProductCatalogService/GetProduct").repeat(1, 3),
            ]),
            http("POST", "/api/v1/login")
                .weight(3)
                .app(&[SessionId])
                .steps(vec![call("auth", "oteldemo.AuthService/Login")]),
            http("POST", "/api/v1/logout")
                .weight(1)
                .app(&[UserId, SessionId])
                .steps(vec![call("auth", "oteldemo.AuthService/Logout")]),
            http("POST", "/api/v1/token/refresh")
                .weight(2)
                .app(&[UserId, SessionId])
                .steps(vec![call("auth", "oteldemo.AuthService/RefreshToken")]),
            http_with_id("GET", "/api/v1/inventory/{id}", PathId::Product)
                .weight(2)
                .app(&[ProductId])
                .steps(vec![call("inventory", "oteldemo.InventoryService/GetStock")]),
            http("GET", "/api/v1/notifications")
                .weight(2)
                .app(&[UserId, SessionId])
                .steps(vec![validate_token(), call("notification", "oteldemo.NotificationService/ListNotifications")]),
            http("POST", "/api/v1/newsletter")
                .weight(1)
                .app(&[SessionId])
                .steps(vec![call("notification", "oteldemo.NotificationService/Subscribe")]),
        ]),
        service("auth", "platform", Go, "1.8.0").endpoints(vec![
            grpc("oteldemo.AuthService", "ValidateToken").self_ms(0.3).app(&[UserId]).steps(vec![
                valkey("GET"),
                internal("verify_jwt", 0.2),
            ]),
            grpc("oteldemo.AuthService", "Login").self_ms(1.0).app(&[UserId]).steps(vec![
                sql("SELECT", "users", "SELECT id, password_hash FROM users WHERE email = $1"),
                internal("verify_password", 45.0),
                internal("sign_jwt", 0.4),
                valkey("SET"),
            ]),
            grpc("oteldemo.AuthService", "Logout").self_ms(0.3).app(&[UserId]).steps(vec![valkey("DEL")]),
            grpc("oteldemo.AuthService", "RefreshToken").self_ms(0.4).app(&[UserId]).steps(vec![
                valkey("GET"),
                internal("sign_jwt", 0.4),
                valkey("SET"),
            ]),
        ]),
        service("cart", "shop", DotNet, "1.12.0").legacy_semconv().endpoints(vec![
            grpc("oteldemo.CartService", "GetCart")
                .self_ms(0.6)
                .app(&[UserId, CartItemsCount, CacheHit])
                .steps(vec![valkey("HGETALL")]),
            grpc("oteldemo.CartService", "AddItem")
                .self_ms(0.6)
                .app(&[UserId, ProductId, CartItemsCount])
                .steps(vec![valkey("HSET"), valkey("EXPIRE")]),
            grpc("oteldemo.CartService", "RemoveItem")
                .self_ms(0.5)
                .app(&[UserId, ProductId])
                .steps(vec![valkey("HDEL")]),
            grpc("oteldemo.CartService", "EmptyCart").self_ms(0.5).app(&[UserId]).steps(vec![valkey("DEL")]),
        ]),
        service("product-catalog", "shop", Go, "3.4.1").endpoints(vec![
            grpc("oteldemo.ProductCatalogService", "ListProducts").self_ms(1.2).steps(vec![sql(
                "SELECT",
                "products",
                "SELECT id, name, price_units, categories FROM products ORDER BY popularity LIMIT $1",
            )]),
            grpc("oteldemo.ProductCatalogService", "GetProduct")
                .self_ms(0.4)
                .app(&[ProductId, CacheHit])
                .steps(vec![
                    valkey("GET"),
                    sql("SELECT", "products", "SELECT * FROM products WHERE id = $1").sometimes(0.3),
                ]),
            grpc("oteldemo.ProductCatalogService", "ListCategories").self_ms(0.4).steps(vec![sql(
                "SELECT",
                "categories",
                "SELECT id, name FROM categories",
            )]),
            grpc("oteldemo.ProductCatalogService", "GetReviews").self_ms(0.6).app(&[ProductId]).steps(vec![sql(
                "SELECT",
                "reviews",
                "SELECT author, rating, body FROM reviews WHERE product_id = $1 ORDER BY created_at DESC LIMIT 20",
            )]),
            grpc("oteldemo.ProductCatalogService", "AddReview").self_ms(0.6).app(&[ProductId]).steps(vec![sql(
                "INSERT",
                "reviews",
                "INSERT INTO reviews (product_id, author, rating, body) VALUES ($1, $2, $3, $4)",
            )]),
            grpc("oteldemo.ProductCatalogService", "SearchProducts").self_ms(0.8).steps(vec![
                internal("tokenize_query", 0.2),
                sql("SELECT", "products", "SELECT id, name FROM products WHERE search_vector @@ to_tsquery($1) LIMIT 50"),
            ]),
        ]),
        service("currency", "shop", Cpp, "1.3.0").endpoints(vec![
            grpc("oteldemo.CurrencyService", "GetSupportedCurrencies")
                .self_ms(0.2)
                .steps(vec![internal("load_rates", 0.3)]),
            grpc("oteldemo.CurrencyService", "Convert")
                .self_ms(0.2)
                .app(&[CurrencyPair])
                .steps(vec![internal("convert", 0.05)]),
        ]),
        service("recommendation", "shop", Python, "2.0.7").endpoints(vec![
            grpc("oteldemo.RecommendationService", "ListRecommendations")
                .self_ms(3.0)
                .app(&[RecommendationsCount])
                .steps(vec![
                    call("product-catalog", "oteldemo.ProductCatalogService/ListProducts"),
                    internal("get_product_list", 1.5),
                ]),
        ]),
        service("ad", "shop", Java, "1.6.2").legacy_semconv().endpoints(vec![grpc("oteldemo.AdService", "GetAds")
            .self_ms(1.0)
            .steps(vec![
                internal("getAdsByCategory", 0.6).sometimes(0.7),
                internal("getRandomAds", 0.4).sometimes(0.3),
            ])]),
        service("checkout", "shop", Go, "2.3.0").endpoints(vec![
            grpc("oteldemo.CheckoutService", "PlaceOrder")
                .self_ms(2.0)
                .app(&[UserId, OrderId, OrderAmount])
                .steps(vec![
                    internal("prepareOrderItemsAndShippingQuoteFromCart", 0.5),
                    call("cart", "oteldemo.CartService/GetCart"),
                    call("product-catalog", "oteldemo.ProductCatalogService/GetProduct").repeat(1, 3),
                    call("currency", "oteldemo.CurrencyService/Convert"),
                    call("shipping", "oteldemo.ShippingService/GetQuote"),
                    call("inventory", "oteldemo.InventoryService/ReserveStock"),
                    call("payment", "oteldemo.PaymentService/Charge"),
                    call("shipping", "oteldemo.ShippingService/ShipOrder"),
                    call("orders", "oteldemo.OrderService/CreateOrder"),
                    call("cart", "oteldemo.CartService/EmptyCart"),
                    publish("orders"),
                    call("email", "POST /send_order_confirmation"),
                ]),
        ]),
        service("payment", "payments", NodeJs, "1.4.0").endpoints(vec![
            grpc("oteldemo.PaymentService", "Charge").self_ms(1.0).app(&[OrderId, OrderAmount]).steps(vec![
                internal("validate_card", 0.3),
                external("POST", "api.payments.example.com", "/v1/charges", 85.0),
            ]),
        ]),
        service("shipping", "shop", Rust, "1.1.0").endpoints(vec![
            grpc("oteldemo.ShippingService", "GetQuote")
                .self_ms(0.5)
                .steps(vec![call("quote", "POST /getquote")]),
            grpc("oteldemo.ShippingService", "ShipOrder")
                .self_ms(0.5)
                .app(&[OrderId])
                .steps(vec![internal("create_tracking_id", 0.1)]),
        ]),
        service("quote", "shop", Php, "1.0.4").endpoints(vec![
            http("POST", "/getquote").self_ms(2.5).steps(vec![internal("calculate-quote", 0.8)]),
        ]),
        service("email", "platform", Ruby, "1.2.0").endpoints(vec![
            http("POST", "/send_order_confirmation").self_ms(3.0).app(&[OrderId]).steps(vec![
                internal("render_template", 4.0),
                external("POST", "smtp-relay.example.net", "/v3/mail/send", 60.0),
            ]),
            http("POST", "/send_notification").self_ms(2.0).steps(vec![
                internal("render_template", 4.0),
                external("POST", "push.example.org", "/v1/messages", 40.0),
            ]),
        ]),
        service("orders", "shop", Java, "4.0.1").legacy_semconv().endpoints(vec![
            grpc("oteldemo.OrderService", "CreateOrder").self_ms(1.0).app(&[UserId, OrderId]).steps(vec![
                sql("INSERT", "orders", "INSERT INTO orders (id, user_id, total_units, currency) VALUES ($1, $2, $3, $4)"),
                sql("INSERT", "order_items", "INSERT INTO order_items (order_id, product_id, quantity) VALUES ($1, $2, $3)"),
            ]),
            grpc("oteldemo.OrderService", "GetOrder").self_ms(0.6).app(&[UserId, OrderId]).steps(vec![
                sql("SELECT", "orders", "SELECT * FROM orders WHERE id = $1 AND user_id = $2"),
                sql("SELECT", "order_items", "SELECT product_id, quantity FROM order_items WHERE order_id = $1"),
            ]),
            grpc("oteldemo.OrderService", "ListOrders").self_ms(0.8).app(&[UserId]).steps(vec![sql(
                "SELECT",
                "orders",
                "SELECT id, created_at, total_units FROM orders WHERE user_id = $1 ORDER BY created_at DESC LIMIT 20",
            )]),
            grpc("oteldemo.OrderService", "CancelOrder").self_ms(0.8).app(&[UserId, OrderId]).steps(vec![
                sql("UPDATE", "orders", "UPDATE orders SET status = 'cancelled' WHERE id = $1"),
                call("inventory", "oteldemo.InventoryService/ReleaseStock"),
                call("notification", "oteldemo.NotificationService/SendNotification"),
            ]),
        ]),
        service("inventory", "shop", Go, "1.9.3").endpoints(vec![
            grpc("oteldemo.InventoryService", "GetStock").self_ms(0.3).app(&[ProductId]).steps(vec![sql(
                "SELECT",
                "inventory",
                "SELECT quantity FROM inventory WHERE sku = $1",
            )]),
            grpc("oteldemo.InventoryService", "CheckStock").self_ms(0.3).app(&[ProductId]).steps(vec![sql(
                "SELECT",
                "inventory",
                "SELECT quantity FROM inventory WHERE sku = $1",
            )]),
            grpc("oteldemo.InventoryService", "ReserveStock").self_ms(0.5).steps(vec![
                sql("UPDATE", "inventory", "UPDATE inventory SET reserved = reserved + $2 WHERE sku = $1").repeat(1, 3),
            ]),
            grpc("oteldemo.InventoryService", "ReleaseStock").self_ms(0.5).steps(vec![sql(
                "UPDATE",
                "inventory",
                "UPDATE inventory SET reserved = reserved - $2 WHERE sku = $1",
            )]),
        ]),
        service("user", "platform", Java, "2.2.0").legacy_semconv().endpoints(vec![
            grpc("oteldemo.UserService", "GetUser").self_ms(0.5).app(&[UserId]).steps(vec![sql(
                "SELECT",
                "users",
                "SELECT id, name, email, locale FROM users WHERE id = $1",
            )]),
            grpc("oteldemo.UserService", "UpdateUser").self_ms(0.7).app(&[UserId]).steps(vec![sql(
                "UPDATE",
                "users",
                "UPDATE users SET name = $2, locale = $3 WHERE id = $1",
            )]),
            grpc("oteldemo.UserService", "GetPreferences").self_ms(0.4).app(&[UserId, CacheHit]).steps(vec![
                valkey("GET"),
                sql("SELECT", "preferences", "SELECT key, value FROM preferences WHERE user_id = $1").sometimes(0.2),
            ]),
            grpc("oteldemo.UserService", "GetRecentlyViewed")
                .self_ms(0.3)
                .app(&[UserId])
                .steps(vec![valkey("LRANGE")]),
        ]),
        service("notification", "platform", Go, "1.0.9").endpoints(vec![
            grpc("oteldemo.NotificationService", "ListNotifications").self_ms(0.5).app(&[UserId]).steps(vec![sql(
                "SELECT",
                "notifications",
                "SELECT id, kind, body, read FROM notifications WHERE user_id = $1 ORDER BY created_at DESC LIMIT 50",
            )]),
            grpc("oteldemo.NotificationService", "Subscribe").self_ms(0.5).steps(vec![sql(
                "INSERT",
                "subscriptions",
                "INSERT INTO subscriptions (email, created_at) VALUES ($1, now()) ON CONFLICT DO NOTHING",
            )]),
            grpc("oteldemo.NotificationService", "SendNotification")
                .self_ms(0.5)
                .app(&[UserId])
                .steps(vec![call("email", "POST /send_notification")]),
            consume("orders").self_ms(0.8).app(&[OrderId]).steps(vec![
                call("email", "POST /send_notification").sometimes(0.3),
            ]),
        ]),
        service("search", "shop", Python, "0.9.2").endpoints(vec![
            http("GET", "/search").self_ms(2.0).steps(vec![
                call("product-catalog", "oteldemo.ProductCatalogService/SearchProducts"),
                internal("rank_results", 3.0),
            ]),
        ]),
        service("accounting", "payments", DotNet, "1.5.1").legacy_semconv().endpoints(vec![
            consume("orders").self_ms(1.0).app(&[OrderId, OrderAmount]).steps(vec![
                internal("record_transaction", 0.5),
                sql(
                    "INSERT",
                    "ledger_entries",
                    "INSERT INTO ledger_entries (order_id, amount_units, currency) VALUES ($1, $2, $3)",
                ),
            ]),
        ]),
        service("fraud-detection", "payments", Java, "1.3.0").endpoints(vec![
            consume("orders").self_ms(1.5).app(&[OrderId, OrderAmount]).steps(vec![
                internal("score_order", 2.5),
                valkey("INCR"),
            ]),
        ]),
    ]
}
