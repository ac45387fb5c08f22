//! The demo's three services: an HTTP gateway (axum) calls a gRPC `orders` service, which
//! calls a gRPC `inventory` service, which may call an HTTP upstream of its own. Each one has
//! its own [`Telemetry`] and is instrumented with one layer per server and client.
//!
//! The gRPC plumbing is written by hand (a handful of lines per method) so the demo needs no
//! protoc or build script; a real service would use tonic-build.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{Path, State};
use axum::routing::get;
use bytes::Bytes;
use http::uri::PathAndQuery;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use meshlight_middleware::{ClientService, Telemetry};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::Status;
use tonic::transport::{Channel, Endpoint};
use tower::ServiceBuilder;

/// `demo.Orders/Place`: order an item.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PlaceOrder {
    #[prost(string, tag = "1")]
    pub(crate) item: String,
}

/// What every hop saw, reported back to the caller.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub(crate) struct HopReport {
    #[prost(string, tag = "1")]
    pub(crate) service: String,
    #[prost(string, tag = "2")]
    pub(crate) trace_id: String,
    #[prost(string, tag = "3")]
    pub(crate) lane: String,
    #[prost(string, tag = "4")]
    pub(crate) tenant: String,
    /// Status of the hop's own outbound HTTP call, 0 when it made none.
    #[prost(uint32, tag = "5")]
    pub(crate) upstream_status: u32,
    /// The upstream's answer, verbatim.
    #[prost(string, tag = "6")]
    pub(crate) upstream_body: String,
}

/// `demo.Orders/Place` answers with the reports of orders and inventory.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub(crate) struct OrderPlaced {
    #[prost(message, repeated, tag = "1")]
    pub(crate) hops: Vec<HopReport>,
}

/// The baggage entry the demo's reports echo.
pub(crate) const TENANT_BAGGAGE: &str = "tenant";

const PLACE: &str = "/demo.Orders/Place";
const REPORT: &str = "/demo.Orders/Report";
const RESERVE: &str = "/demo.Inventory/Reserve";

/// How the mesh behaves.
#[derive(Clone, Debug)]
pub(crate) struct MeshOptions {
    /// How long `demo.Orders/Report`, the deliberately slow method, takes.
    pub(crate) slow: Duration,
    /// An HTTP URL inventory calls while reserving (its outbound hop), if any.
    pub(crate) inventory_upstream: Option<http::Uri>,
}

/// The three running services; dropping it stops them.
pub(crate) struct Mesh {
    /// The gateway's HTTP address: `GET /checkout/{item}`, `GET /report`.
    pub(crate) gateway: SocketAddr,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
}

/// The telemetry of each service.
pub(crate) struct MeshTelemetry<'a> {
    pub(crate) gateway: &'a Telemetry,
    pub(crate) orders: &'a Telemetry,
    pub(crate) inventory: &'a Telemetry,
}

impl Mesh {
    /// Starts inventory, orders and the gateway on free loopback ports.
    pub(crate) async fn start(
        telemetry: MeshTelemetry<'_>,
        options: MeshOptions,
    ) -> anyhow::Result<Mesh> {
        let (stop, stopped) = watch::channel(false);
        let mut servers = Vec::new();

        let upstream = HttpClient::new(telemetry.inventory);
        let inventory_options = options.clone();
        let inventory = axum::Router::new().route(
            RESERVE,
            unary(move |request: PlaceOrder| {
                let upstream = upstream.clone();
                let target = inventory_options.inventory_upstream.clone();
                async move { reserve(request, upstream, target).await }
            }),
        );
        let (inventory_addr, server) =
            serve_grpc(telemetry.inventory, inventory, stopped.clone()).await?;
        servers.push(server);

        let inventory_client = GrpcClient::new(telemetry.orders.client_layer(), inventory_addr)?;
        let slow = options.slow;
        let orders = axum::Router::new()
            .route(
                PLACE,
                unary(move |request: PlaceOrder| {
                    let mut inventory = inventory_client.clone();
                    async move {
                        let mut placed: OrderPlaced = inventory.call(RESERVE, request).await?;
                        placed.hops.insert(0, hop_report("orders"));
                        Ok(placed)
                    }
                }),
            )
            .route(
                REPORT,
                unary(move |_: PlaceOrder| async move {
                    tokio::time::sleep(slow).await;
                    Ok(OrderPlaced {
                        hops: vec![hop_report("orders")],
                    })
                }),
            );
        let (orders_addr, server) = serve_grpc(telemetry.orders, orders, stopped.clone()).await?;
        servers.push(server);

        let orders_client = GrpcClient::new(telemetry.gateway.client_layer(), orders_addr)?;
        let gateway = axum::Router::new()
            .route("/checkout/{item}", get(checkout))
            .route("/report", get(report))
            .with_state(orders_client)
            .layer(telemetry.gateway.server_layer());
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let gateway_addr = listener.local_addr()?;
        let mut gateway_stopped = stopped;
        servers.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = gateway_stopped.wait_for(|stop| *stop).await;
            };
            if let Err(error) = axum::serve(listener, gateway)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(%error, "gateway stopped");
            }
        }));
        Ok(Mesh {
            gateway: gateway_addr,
            stop,
            servers,
        })
    }

    /// Stops the services and waits until they are down.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        for server in self.servers {
            let _ = server.await;
        }
    }
}

async fn checkout(
    State(orders): State<GrpcClient>,
    Path(item): Path<String>,
) -> Result<axum::Json<OrderPlaced>, (http::StatusCode, String)> {
    let mut orders = orders;
    let mut placed: OrderPlaced = orders
        .call(PLACE, PlaceOrder { item })
        .await
        .map_err(|status| status_to_http(&status))?;
    placed.hops.insert(0, hop_report("gateway"));
    Ok(axum::Json(placed))
}

async fn report(
    State(orders): State<GrpcClient>,
) -> Result<axum::Json<OrderPlaced>, (http::StatusCode, String)> {
    let mut orders = orders;
    let placed: OrderPlaced = orders
        .call(REPORT, PlaceOrder::default())
        .await
        .map_err(|status| status_to_http(&status))?;
    Ok(axum::Json(placed))
}

fn status_to_http(status: &Status) -> (http::StatusCode, String) {
    (http::StatusCode::BAD_GATEWAY, format!("orders: {status}"))
}

/// Inventory's work: its outbound call runs in a task of its own, to show that
/// [`meshlight_middleware::spawn`] carries the trace, baggage and lane along.
async fn reserve(
    request: PlaceOrder,
    upstream: HttpClient,
    target: Option<http::Uri>,
) -> Result<OrderPlaced, Status> {
    let mut report = hop_report("inventory");
    if let Some(target) = target {
        let path = format!("{}?item={}", target.path(), request.item);
        let call = meshlight_middleware::spawn(async move { upstream.get(&target, &path).await });
        let (status, body) = call
            .await
            .map_err(|error| Status::internal(error.to_string()))?
            .map_err(|error| Status::unavailable(format!("upstream: {error:#}")))?;
        report.upstream_status = u32::from(status.as_u16());
        report.upstream_body = body;
    }
    Ok(OrderPlaced { hops: vec![report] })
}

fn hop_report(service: &str) -> HopReport {
    HopReport {
        service: service.to_owned(),
        trace_id: meshlight_middleware::trace_id()
            .map(|id| id.to_string())
            .unwrap_or_default(),
        lane: meshlight_middleware::lane()
            .map(|lane| lane.name().to_owned())
            .unwrap_or_default(),
        tenant: meshlight_middleware::baggage(TENANT_BAGGAGE).unwrap_or_default(),
        upstream_status: 0,
        upstream_body: String::new(),
    }
}

/// A route answering one unary gRPC method with `handler`.
fn unary<Req, Resp, F, Fut>(handler: F) -> axum::routing::MethodRouter
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    F: Fn(Req) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
{
    axum::routing::post(move |request: http::Request<axum::body::Body>| async move {
        let method = tower::service_fn(move |request: tonic::Request<Req>| {
            let response = handler(request.into_inner());
            async move { response.await.map(tonic::Response::new) }
        });
        let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<Resp, Req>::default());
        grpc.unary(method, request).await
    })
}

async fn serve_grpc(
    telemetry: &Telemetry,
    routes: axum::Router,
    mut stopped: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // What tonic's generated routers answer for a method they do not have.
    let routes = routes.fallback(|| async {
        Status::unimplemented("no such method").into_http::<axum::body::Body>()
    });
    let server = tonic::transport::Server::builder()
        .layer(telemetry.server_layer())
        .add_routes(tonic::service::Routes::from(routes));
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        if let Err(error) = server
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
        {
            tracing::error!(%error, "gRPC server stopped");
        }
    });
    Ok((addr, task))
}

/// A gRPC client through the client layer.
#[derive(Clone)]
struct GrpcClient {
    inner: tonic::client::Grpc<ClientService<Channel>>,
}

impl GrpcClient {
    fn new(layer: meshlight_middleware::ClientLayer, addr: SocketAddr) -> anyhow::Result<Self> {
        let channel = Endpoint::from_shared(format!("http://{addr}"))?.connect_lazy();
        let layer = layer.with_server_address(addr.ip().to_string(), addr.port());
        Ok(GrpcClient {
            inner: tonic::client::Grpc::new(ServiceBuilder::new().layer(layer).service(channel)),
        })
    }

    async fn call<Req, Resp>(&mut self, path: &'static str, request: Req) -> Result<Resp, Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        self.inner
            .ready()
            .await
            .map_err(|error| Status::unavailable(error.to_string()))?;
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        let response = self
            .inner
            .unary(
                tonic::Request::new(request),
                PathAndQuery::from_static(path),
                codec,
            )
            .await?;
        Ok(response.into_inner())
    }
}

/// An HTTP client through the client layer.
#[derive(Clone)]
struct HttpClient {
    inner: ClientService<Client<HttpConnector, Empty<Bytes>>>,
}

impl HttpClient {
    fn new(telemetry: &Telemetry) -> Self {
        let client = Client::builder(TokioExecutor::new()).build_http();
        HttpClient {
            inner: ServiceBuilder::new()
                .layer(telemetry.client_layer())
                .service(client),
        }
    }

    async fn get(
        mut self,
        base: &http::Uri,
        path_and_query: &str,
    ) -> anyhow::Result<(http::StatusCode, String)> {
        use tower::{Service as _, ServiceExt as _};

        let mut parts = base.clone().into_parts();
        parts.path_and_query = Some(path_and_query.parse()?);
        let request = http::Request::get(http::Uri::from_parts(parts)?).body(Empty::new())?;
        let response = self
            .inner
            .ready()
            .await?
            .call(request)
            .await
            .context("upstream request")?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .context("upstream body")?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}
