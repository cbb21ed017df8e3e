//! An OTLP collector in the test: the real OTLP/gRPC trace, metrics and logs services
//! (`opentelemetry-proto`'s tonic servers) on 127.0.0.1, keeping everything it receives, each
//! item with its resource's attributes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::metric;

/// Attributes as text.
pub type Attrs = BTreeMap<String, String>;

/// A span as received.
#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub name: String,
    /// The resource's attributes (`service.name`, `host.name`).
    pub resource: Attrs,
    pub attrs: Attrs,
}

/// A metric data point as received.
#[derive(Debug, Clone)]
pub struct Point {
    pub metric: String,
    pub resource: Attrs,
    pub attrs: Attrs,
    /// A gauge's or sum's value (a histogram's count).
    pub value: f64,
}

/// A log record as received.
#[derive(Debug, Clone)]
pub struct Log {
    pub body: String,
    pub resource: Attrs,
    pub attrs: Attrs,
}

#[derive(Debug, Default)]
struct Received {
    spans: Vec<Span>,
    points: Vec<Point>,
    logs: Vec<Log>,
}

/// The collector. Stops when dropped.
pub struct Collector {
    /// `http://127.0.0.1:PORT`, for `--otlp-endpoint` (OTLP/gRPC).
    pub endpoint: String,
    /// `http://127.0.0.1:PORT`, for `--otlp-protocol http --otlp-endpoint` (OTLP/HTTP, protobuf).
    pub http_endpoint: String,
    got: Arc<Mutex<Received>>,
    _runtime: tokio::runtime::Runtime,
}

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attrs(kvs: &[KeyValue]) -> Attrs {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(&kv.value)))
        .collect()
}

#[derive(Clone)]
struct Svc(Arc<Mutex<Received>>);

impl Svc {
    fn lock(&self) -> std::sync::MutexGuard<'_, Received> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[tonic::async_trait]
impl TraceService for Svc {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.lock();
        for rs in req.into_inner().resource_spans {
            let resource = attrs(&rs.resource.map(|r| r.attributes).unwrap_or_default());
            for ss in rs.scope_spans {
                for s in ss.spans {
                    got.spans.push(Span {
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent_span_id: hex(&s.parent_span_id),
                        name: s.name,
                        resource: resource.clone(),
                        attrs: attrs(&s.attributes),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Svc {
    async fn export(
        &self,
        req: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut got = self.lock();
        for rm in req.into_inner().resource_metrics {
            let resource = attrs(&rm.resource.map(|r| r.attributes).unwrap_or_default());
            for sm in rm.scope_metrics {
                for m in sm.metrics {
                    let mut push = |a: &[KeyValue], value: f64| {
                        got.points.push(Point {
                            metric: m.name.clone(),
                            resource: resource.clone(),
                            attrs: attrs(a),
                            value,
                        })
                    };
                    use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as N;
                    let num = |v: &Option<N>| match v {
                        Some(N::AsDouble(d)) => *d,
                        Some(N::AsInt(i)) => *i as f64,
                        None => f64::NAN,
                    };
                    match &m.data {
                        Some(metric::Data::Gauge(g)) => {
                            for p in &g.data_points {
                                push(&p.attributes, num(&p.value));
                            }
                        }
                        Some(metric::Data::Sum(s)) => {
                            for p in &s.data_points {
                                push(&p.attributes, num(&p.value));
                            }
                        }
                        Some(metric::Data::Histogram(h)) => {
                            for p in &h.data_points {
                                push(&p.attributes, p.count as f64);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Svc {
    async fn export(
        &self,
        req: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let mut got = self.lock();
        for rl in req.into_inner().resource_logs {
            let resource = attrs(&rl.resource.map(|r| r.attributes).unwrap_or_default());
            for sl in rl.scope_logs {
                for l in sl.log_records {
                    got.logs.push(Log {
                        body: text(&l.body),
                        resource: resource.clone(),
                        attrs: attrs(&l.attributes),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

/// OTLP/HTTP with protobuf bodies: POST /v1/traces, /v1/metrics, /v1/logs (keep-alive; no
/// chunked bodies, no compression — what the exporter sends).
async fn serve_http(mut conn: tokio::net::TcpStream, svc: Svc) {
    use prost::Message;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 8192];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let path = head
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let length = crate::content_length(&head);
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 65536];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buf[head_end..head_end + length].to_vec();
        buf.drain(..head_end + length);
        let ok = match path.as_str() {
            "/v1/traces" => match ExportTraceServiceRequest::decode(body.as_slice()) {
                Ok(r) => TraceService::export(&svc, tonic::Request::new(r))
                    .await
                    .is_ok(),
                Err(_) => false,
            },
            "/v1/metrics" => match ExportMetricsServiceRequest::decode(body.as_slice()) {
                Ok(r) => MetricsService::export(&svc, tonic::Request::new(r))
                    .await
                    .is_ok(),
                Err(_) => false,
            },
            "/v1/logs" => match ExportLogsServiceRequest::decode(body.as_slice()) {
                Ok(r) => LogsService::export(&svc, tonic::Request::new(r))
                    .await
                    .is_ok(),
                Err(_) => false,
            },
            _ => false,
        };
        let status = if ok { "200 OK" } else { "400 Bad Request" };
        let reply = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n"
        );
        if conn.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Collector {
    /// Start a collector on a free loopback port.
    pub fn start() -> Collector {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("a runtime for the OTLP collector: {e}"));
        let got = Arc::new(Mutex::new(Received::default()));
        let svc = Svc(got.clone());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap_or_else(|e| panic!("binding the OTLP collector: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("the OTLP collector's address: {e}"));
        runtime.spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(svc.clone()))
                .add_service(MetricsServiceServer::new(svc.clone()))
                .add_service(LogsServiceServer::new(svc.clone()))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let http = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap_or_else(|e| panic!("binding the OTLP/HTTP collector: {e}"));
        let http_addr = http
            .local_addr()
            .unwrap_or_else(|e| panic!("the OTLP/HTTP collector's address: {e}"));
        runtime.spawn(async move {
            while let Ok((conn, _)) = http.accept().await {
                tokio::spawn(serve_http(conn, svc.clone()));
            }
        });
        Collector {
            endpoint: format!("http://{addr}"),
            http_endpoint: format!("http://{http_addr}"),
            got,
            _runtime: runtime,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Received> {
        self.got.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn spans(&self) -> Vec<Span> {
        self.lock().spans.clone()
    }

    /// The data points of one metric, in the order received.
    pub fn points(&self, metric: &str) -> Vec<Point> {
        self.lock()
            .points
            .iter()
            .filter(|p| p.metric == metric)
            .cloned()
            .collect()
    }

    /// Every metric name received.
    pub fn metric_names(&self) -> std::collections::BTreeSet<String> {
        self.lock()
            .points
            .iter()
            .map(|p| p.metric.clone())
            .collect()
    }

    pub fn logs(&self) -> Vec<Log> {
        self.lock().logs.clone()
    }
}
