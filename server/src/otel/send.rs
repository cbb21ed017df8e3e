//! Sending OTLP requests that noco encoded itself ([`super::pb`]: the per-host and per-container
//! metrics, container log records) to the collector of `--otlp-endpoint`: over gRPC (the
//! signal's `Export` method, with a codec that passes the encoded bytes through), or with
//! `--otlp-protocol http` as a POST to `<endpoint>/v1/<signal>`. `--otlp-header`s go with every
//! request.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use noco_proto::otel::{Otlp, Protocol, Signal};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One signal's connection to the collector.
pub enum Client {
    Grpc {
        grpc: tonic::client::Grpc<tonic::transport::Channel>,
        method: &'static str,
        headers: Vec<(String, String)>,
    },
    Http {
        client: reqwest::Client,
        url: String,
        headers: Vec<(String, String)>,
    },
}

/// A codec for requests encoded already and answers not read (an `Export…ServiceResponse`
/// tells of partial success only; the status says the rest).
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

/// Nanoseconds since the Unix epoch (0 before it).
pub fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Client {
    /// A client for `signal` (metrics or logs) to `otlp.endpoint`; connects on first use.
    pub fn new(otlp: &Otlp, signal: Signal) -> Result<Client, String> {
        let headers = otlp.headers.clone();
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
                let method = match signal {
                    Signal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                    Signal::Metrics => {
                        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
                    }
                    Signal::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
                };
                Ok(Client::Grpc {
                    grpc: tonic::client::Grpc::new(endpoint.connect_lazy()),
                    method,
                    headers,
                })
            }
            Protocol::Http => {
                let client = reqwest::Client::builder()
                    .timeout(TIMEOUT)
                    .build()
                    .map_err(|e| format!("an HTTP client for OTLP: {e}"))?;
                let url = format!(
                    "{}/v1/{}",
                    otlp.endpoint.trim_end_matches('/'),
                    signal.name()
                );
                Ok(Client::Http {
                    client,
                    url,
                    headers,
                })
            }
        }
    }

    /// Send one encoded `Export…ServiceRequest`.
    pub async fn send(&mut self, req: Vec<u8>) -> Result<(), String> {
        match self {
            Client::Grpc {
                grpc,
                method,
                headers,
            } => {
                grpc.ready().await.map_err(|e| format!("connecting: {e}"))?;
                let mut r = tonic::Request::new(req);
                for (k, v) in headers.iter() {
                    if let (Ok(k), Ok(v)) = (
                        tonic::metadata::MetadataKey::from_bytes(k.as_bytes()),
                        tonic::metadata::MetadataValue::try_from(v.as_str()),
                    ) {
                        r.metadata_mut().insert(k, v);
                    }
                }
                grpc.unary(r, http::uri::PathAndQuery::from_static(method), Raw)
                    .await
                    .map(|_| ())
                    .map_err(|s| format!("gRPC {:?}: {}", s.code(), s.message()))
            }
            Client::Http {
                client,
                url,
                headers,
            } => {
                let mut r = client
                    .post(url.as_str())
                    .header("content-type", "application/x-protobuf")
                    .body(req);
                for (k, v) in headers.iter() {
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
