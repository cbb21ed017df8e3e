//! `GET /metrics` for Prometheus (`--metrics-listen`): plain HTTP/1.1, the text exposition
//! format (`text/plain; version=0.0.4`) of the registry the meter provider's Prometheus reader
//! fills — the same instruments OTLP exports. Anything but `GET`/`HEAD /metrics` is refused
//! (404, 405).
//!
//! Bounded: at most [`MAX_CONNECTIONS`] at once (more are closed at accept), request heads read
//! within [`HEADER_TIMEOUT`], no request body ever read, each connection closed gracefully after
//! [`CONNECTION_LIFE`]. A collection runs every instrument's callback synchronously, so it runs
//! on the blocking pool, not on a runtime worker, and one at a time (concurrent scrapes wait for
//! each other rather than multiply the work). The listener lives as long as the runtime: it stops
//! with the server.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{Encoder, TextEncoder};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::otel::metrics::Sources;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 32;
/// How long a client has to send a request's head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A kept-alive connection is closed (after the request in flight) when this old.
pub const CONNECTION_LIFE: Duration = Duration::from_secs(120);
/// How long a connection being closed may take to finish its request.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// Serve `registry` on `listen`; returns the bound address (`:0` picks a free port).
pub async fn serve(
    listen: SocketAddr,
    registry: prometheus::Registry,
    bulk: Option<Arc<Sources>>,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening for Prometheus on {listen} (--metrics-listen)"))?;
    let bound = listener
        .local_addr()
        .context("the address of the metrics listener")?;
    tracing::info!(%bound, "serving metrics to Prometheus on http://{bound}/metrics");
    tokio::spawn(accept(listener, registry, bulk));
    Ok(bound)
}

/// The registry `/metrics` serves (the server's own; nothing registers in the global one).
pub fn registry() -> prometheus::Registry {
    prometheus::Registry::new()
}

async fn accept(listener: TcpListener, registry: prometheus::Registry, bulk: Option<Arc<Sources>>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let collecting = Arc::new(Semaphore::new(1));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!("accepting a metrics connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("{MAX_CONNECTIONS} metrics connections open: closing a new one");
            continue;
        };
        let registry = registry.clone();
        let bulk = bulk.clone();
        let collecting = collecting.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let registry = registry.clone();
                let bulk = bulk.clone();
                let collecting = collecting.clone();
                async move { Ok::<_, Infallible>(respond(registry, bulk, collecting, &req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = tokio::time::sleep(CONNECTION_LIFE) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
                }
            }
        });
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

async fn respond(
    registry: prometheus::Registry,
    bulk: Option<Arc<Sources>>,
    collecting: Arc<Semaphore>,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: metrics are at /metrics\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut res = plain(StatusCode::METHOD_NOT_ALLOWED, "use GET /metrics\n");
        res.headers_mut().insert(
            http::header::ALLOW,
            http::HeaderValue::from_static("GET, HEAD"),
        );
        return res;
    }
    let head = req.method() == Method::HEAD;
    let Ok(_collecting) = collecting.acquire_owned().await else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    };
    let encoded = tokio::task::spawn_blocking(move || encode(&registry, bulk.as_deref())).await;
    match encoded {
        Ok(Ok((body, content_type))) => {
            let body = if head {
                Bytes::new()
            } else {
                Bytes::from(body)
            };
            let mut res = Response::new(Full::new(body));
            if let Ok(v) = http::HeaderValue::from_str(&content_type) {
                res.headers_mut().insert(http::header::CONTENT_TYPE, v);
            }
            res
        }
        Ok(Err(e)) => {
            tracing::error!("encoding metrics: {e}");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding metrics failed (see the server's log)\n",
            )
        }
        Err(e) => {
            tracing::error!("collecting metrics: {e}");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "collecting metrics failed (see the server's log)\n",
            )
        }
    }
}

/// Collect (runs every instrument's callback) and encode as text, then the per-host and
/// per-container series.
pub fn encode(
    registry: &prometheus::Registry,
    bulk: Option<&Sources>,
) -> prometheus::Result<(Vec<u8>, String)> {
    let encoder = TextEncoder::new();
    let families = registry.gather();
    let mut body = Vec::with_capacity(64 * 1024);
    encoder.encode(&families, &mut body)?;
    if let Some(sources) = bulk {
        body.extend_from_slice(crate::otel::metrics::prometheus_text(sources).as_bytes());
    }
    Ok((body, encoder.format_type().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn request(addr: SocketAddr, head: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn get_metrics_serves_the_text_format_and_nothing_else_is_served() {
        let registry = registry();
        let counter = prometheus::IntCounter::new("noco_test_total", "a test counter").unwrap();
        counter.inc_by(3);
        registry.register(Box::new(counter)).unwrap();
        let addr = serve("127.0.0.1:0".parse().unwrap(), registry, None)
            .await
            .unwrap();
        assert_ne!(addr.port(), 0, "the bound port");

        let ok = request(addr, "GET /metrics HTTP/1.0\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.0 200 OK\r\n"), "{ok}");
        assert!(
            ok.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{ok}"
        );
        assert!(ok.ends_with("noco_test_total 3\n"), "{ok}");

        let head = request(addr, "HEAD /metrics HTTP/1.0\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{head}");
        assert!(!head.contains("noco_test_total"), "{head}");

        let other = request(addr, "GET /metrics/x HTTP/1.0\r\n\r\n").await;
        assert!(other.starts_with("HTTP/1.0 404 "), "{other}");
        let post = request(
            addr,
            "POST /metrics HTTP/1.0\r\ncontent-length: 4\r\n\r\nbody",
        )
        .await;
        assert!(post.starts_with("HTTP/1.0 405 "), "{post}");
        assert!(
            post.to_ascii_lowercase().contains("allow: get, head"),
            "{post}"
        );
    }
}
