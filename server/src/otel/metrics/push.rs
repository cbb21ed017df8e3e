//! Pushing the per-host and per-container series ([`super::bulk`]) over OTLP every
//! `--otlp-metrics-interval`, beside the SDK's own push of the other instruments: the requests
//! are built on the blocking pool, then sent one after another (gRPC `MetricsService/Export`, or
//! a POST to `<endpoint>/v1/metrics` with `--otlp-protocol http`). A failed push is counted and
//! logged as the SDK's exports are (`noco_proto::otel::note`); the next push carries the values
//! of its own time (metrics are cumulative: a missed push loses no count).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use noco_proto::otel::{Otlp, Protocol, Signal};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use super::Sources;

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

enum Client {
    Grpc(tonic::client::Grpc<tonic::transport::Channel>),
    Http(reqwest::Client, String),
}

/// The gRPC method the encoded requests go to.
const EXPORT: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

/// A codec for requests encoded already ([`super::bulk::otlp`]) and answers not read (an
/// `ExportMetricsServiceResponse` tells of partial success only; the status says the rest).
#[derive(Debug, Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = ();
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = ();
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, tonic::Status> {
        let n = bytes::Buf::remaining(src);
        bytes::Buf::advance(src, n);
        Ok(Some(()))
    }
}

fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn client(otlp: &Otlp) -> Result<Client, String> {
    match otlp.protocol {
        Protocol::Grpc => {
            let mut endpoint = tonic::transport::Endpoint::from_shared(otlp.endpoint.clone())
                .map_err(|e| format!("OTLP endpoint {}: {e}", otlp.endpoint))?
                .timeout(TIMEOUT)
                .connect_timeout(TIMEOUT);
            if otlp.endpoint.starts_with("https://") {
                endpoint = endpoint
                    .tls_config(tonic::transport::ClientTlsConfig::new().with_webpki_roots())
                    .map_err(|e| format!("OTLP endpoint {}: {e}", otlp.endpoint))?;
            }
            Ok(Client::Grpc(tonic::client::Grpc::new(
                endpoint.connect_lazy(),
            )))
        }
        Protocol::Http => {
            let client = reqwest::Client::builder()
                .timeout(TIMEOUT)
                .build()
                .map_err(|e| format!("an HTTP client for OTLP: {e}"))?;
            let url = format!("{}/v1/metrics", otlp.endpoint.trim_end_matches('/'));
            Ok(Client::Http(client, url))
        }
    }
}

impl Client {
    async fn send(&mut self, req: Vec<u8>, otlp: &Otlp) -> Result<(), String> {
        match self {
            Client::Grpc(c) => {
                c.ready().await.map_err(|e| format!("connecting: {e}"))?;
                let mut r = tonic::Request::new(req);
                for (k, v) in &otlp.headers {
                    if let (Ok(k), Ok(v)) = (
                        tonic::metadata::MetadataKey::from_bytes(k.as_bytes()),
                        tonic::metadata::MetadataValue::try_from(v.as_str()),
                    ) {
                        r.metadata_mut().insert(k, v);
                    }
                }
                c.unary(r, http::uri::PathAndQuery::from_static(EXPORT), Raw)
                    .await
                    .map(|_| ())
                    .map_err(|s| format!("gRPC {:?}: {}", s.code(), s.message()))
            }
            Client::Http(c, url) => {
                let mut r = c
                    .post(url.as_str())
                    .header("content-type", "application/x-protobuf")
                    .body(req);
                for (k, v) in &otlp.headers {
                    r = r.header(k.as_str(), v.as_str());
                }
                let res = r.send().await.map_err(|e| e.to_string())?;
                if res.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("HTTP {}", res.status()))
                }
            }
        }
    }
}

/// Push the per-host and per-container series every `otlp.metrics_interval` until the runtime
/// stops. A client that cannot be made is reported once, and nothing is pushed.
pub fn spawn(sources: Arc<Sources>, otlp: Otlp) {
    let mut client = match client(&otlp) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("OTLP metrics: {e}; per-host and per-container metrics not pushed");
            return;
        }
    };
    let start_ns = unix_ns(SystemTime::now());
    let resource = vec![
        ("service.name", "noco-server".to_string()),
        ("service.version", env!("CARGO_PKG_VERSION").to_string()),
    ];
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(otlp.metrics_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let (sources, resource) = (sources.clone(), resource.clone());
            let built = tokio::task::spawn_blocking(move || {
                let view = sources.view();
                super::bulk::otlp(
                    &view,
                    &resource,
                    start_ns,
                    unix_ns(SystemTime::now()),
                    super::bulk::MAX_POINTS,
                )
            })
            .await;
            // Nothing to send says nothing about the collector: not a success to report.
            let Ok(requests) = built else { continue };
            if requests.is_empty() {
                continue;
            }
            let mut result = Ok(());
            for req in requests {
                if let Err(e) = client.send(req, &otlp).await {
                    result = Err(e);
                    break;
                }
            }
            noco_proto::otel::note(Signal::Metrics, &result);
        }
    });
}
