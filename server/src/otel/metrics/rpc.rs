//! `rpc.server.duration`: how long each gRPC call took, from its request reaching the server to
//! the end of its response (its trailers: a streaming call is measured over its whole life), by
//! service, method and gRPC status code. A tower layer in front of every service, outside the
//! auth layer, so refused calls are measured too.
//!
//! The method labels are those of `auth::POLICY` (static strings: a call allocates nothing for
//! its labels); a path the server does not serve reads `_OTHER`, so nobody can grow the
//! histogram's series by calling made-up methods. The status is the response's `grpc-status`:
//! from the headers of a trailers-only response (an error before any message, a refusal), else
//! from the trailers; a response dropped before its end (the client went away) is `CANCELLED`.
//!
//! The unit is seconds (the semantic conventions' newer `rpc.server.call.duration` uses seconds
//! too): Prometheus's linter refuses `_milliseconds`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, Meter};
use tonic::Status;
use tonic::body::Body;

/// Bucket bounds, in seconds (the semantic conventions' advice for RPC durations).
const BOUNDARIES: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
const CANCELLED: i64 = 1;
const UNKNOWN: i64 = 2;

/// The layer: wraps every service of the server in [`RpcMetrics`].
#[derive(Debug, Clone)]
pub struct RpcMetricsLayer {
    duration: Histogram<f64>,
}

impl Default for RpcMetricsLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl RpcMetricsLayer {
    /// On the global meter provider.
    pub fn new() -> Self {
        Self::on(&opentelemetry::global::meter(super::METER))
    }

    pub fn on(meter: &Meter) -> Self {
        RpcMetricsLayer {
            duration: meter
                .f64_histogram("rpc.server.duration")
                .with_unit("s")
                .with_description(
                    "gRPC calls served, from request to the end of the response (a stream: its whole life)",
                )
                .with_boundaries(BOUNDARIES.to_vec())
                .build(),
        }
    }
}

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;
    fn layer(&self, inner: S) -> RpcMetrics<S> {
        RpcMetrics {
            inner,
            duration: self.duration.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RpcMetrics<S> {
    inner: S,
    duration: Histogram<f64>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> tower::Service<http::Request<Body>> for RpcMetrics<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let (service, method) = method_of(req.uri().path());
        let call = Call {
            duration: self.duration.clone(),
            started: Instant::now(),
            service,
            method,
        };
        let response = self.inner.call(req);
        Box::pin(async move {
            match response.await {
                Ok(res) => Ok(call.watch(res)),
                Err(e) => {
                    call.record(UNKNOWN);
                    Err(e)
                }
            }
        })
    }
}

/// The service and method of a path the server serves (`noco.v1.Control`, `Status`), else
/// `_OTHER` for both.
fn method_of(path: &str) -> (&'static str, &'static str) {
    crate::auth::POLICY
        .iter()
        .find(|(p, _, _)| *p == path)
        .and_then(|(p, _, _)| p.strip_prefix('/')?.split_once('/'))
        .unwrap_or(("_OTHER", "_OTHER"))
}

fn grpc_status(headers: &http::HeaderMap) -> Option<i64> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// One call being measured.
#[derive(Debug)]
struct Call {
    duration: Histogram<f64>,
    started: Instant,
    service: &'static str,
    method: &'static str,
}

impl Call {
    fn record(self, code: i64) {
        self.duration.record(
            self.started.elapsed().as_secs_f64(),
            &[
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.service", self.service),
                KeyValue::new("rpc.method", self.method),
                KeyValue::new("rpc.grpc.status_code", code),
            ],
        );
    }

    /// Measure until the response's body ends.
    fn watch(self, res: http::Response<Body>) -> http::Response<Body> {
        let status = grpc_status(res.headers());
        let (parts, body) = res.into_parts();
        let timed = Timed {
            body,
            call: Some(self),
            status,
        };
        http::Response::from_parts(parts, Body::new(timed))
    }
}

/// A response body that records its call when it ends (or is dropped).
struct Timed {
    body: Body,
    call: Option<Call>,
    status: Option<i64>,
}

impl Timed {
    fn finish(&mut self, code: i64) {
        if let Some(call) = self.call.take() {
            call.record(code);
        }
    }
}

impl http_body::Body for Timed {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    this.status = Some(code);
                }
            }
            Poll::Ready(Some(Err(status))) => this.finish(status.code() as i64),
            Poll::Ready(None) => {
                let code = this.status.unwrap_or(UNKNOWN);
                this.finish(code);
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Timed {
    fn drop(&mut self) {
        // A trailers-only response (its status in the headers) is dropped unread; any other
        // dropped before its end was abandoned by the client.
        let code = self.status.unwrap_or(CANCELLED);
        self.finish(code);
    }
}
