//! Dialing the server: one TCP connection, TLS with a configuration chosen at connect time (so a
//! renewed certificate is used by the next connection without rebuilding anything), HTTP/2.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

/// Where a server listens, parsed from `https://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddr {
    pub host: String,
    pub port: u16,
}

impl ServerAddr {
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| format!("server address {url:?} must start with https://"))?;
        let authority = rest.split('/').next().unwrap_or_default();
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| format!("server address {url:?}: bad port {p:?}"))?;
                (h, port)
            }
            _ => (authority, 7443),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("server address {url:?} has no host"));
        }
        Ok(ServerAddr {
            host: host.to_string(),
            port,
        })
    }

    pub fn url(&self) -> String {
        if self.host.contains(':') {
            format!("https://[{}]:{}", self.host, self.port)
        } else {
            format!("https://{}:{}", self.host, self.port)
        }
    }
}

/// Open a channel to `addr`. `tls` is called for every new connection.
pub async fn connect<F>(
    addr: &ServerAddr,
    tls: F,
    connect_timeout: Duration,
) -> Result<Channel, tonic::transport::Error>
where
    F: Fn() -> Arc<ClientConfig> + Send + Sync + 'static,
{
    endpoint(addr, connect_timeout)
        .connect_with_connector(connector(addr, tls))
        .await
}

/// A channel that connects on first use and reconnects as needed.
pub fn connect_lazy<F>(addr: &ServerAddr, tls: F, connect_timeout: Duration) -> Channel
where
    F: Fn() -> Arc<ClientConfig> + Send + Sync + 'static,
{
    endpoint(addr, connect_timeout).connect_with_connector_lazy(connector(addr, tls))
}

fn endpoint(addr: &ServerAddr, connect_timeout: Duration) -> Endpoint {
    // The connector does TLS itself; tonic sees plain HTTP/2.
    let authority = if addr.host.contains(':') {
        format!("http://[{}]:{}", addr.host, addr.port)
    } else {
        format!("http://{}:{}", addr.host, addr.port)
    };
    #[allow(clippy::expect_used)] // host and port were validated by ServerAddr::parse
    Endpoint::from_shared(authority)
        .expect("a parsed server address is a valid URI")
        .connect_timeout(connect_timeout)
        .initial_stream_window_size(Some(noco_proto::limits::HTTP2_STREAM_WINDOW))
        .initial_connection_window_size(Some(noco_proto::limits::HTTP2_CONNECTION_WINDOW))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
}

fn connector<F>(
    addr: &ServerAddr,
    tls: F,
) -> impl tower::Service<
    http::Uri,
    Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone
+ Send
+ 'static
where
    F: Fn() -> Arc<ClientConfig> + Send + Sync + 'static,
{
    let tls = Arc::new(tls);
    let addr = addr.clone();
    tower::service_fn(move |_uri: http::Uri| {
        let tls = tls.clone();
        let addr = addr.clone();
        async move {
            let tcp = TcpStream::connect((addr.host.as_str(), addr.port)).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(addr.host.clone())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            let stream = TlsConnector::from(tls()).connect(name, tcp).await?;
            Ok(TokioIo::new(stream))
        }
    })
}

/// An error and all its sources in one line (`transport error: tls handshake: …`), saying a
/// repeated source only once: what dial failures should print.
pub fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_parse_with_and_without_port() {
        assert_eq!(
            ServerAddr::parse("https://a.b:9").unwrap(),
            ServerAddr {
                host: "a.b".into(),
                port: 9
            }
        );
        assert_eq!(ServerAddr::parse("https://a.b").unwrap().port, 7443);
        assert_eq!(ServerAddr::parse("https://[::1]:8443").unwrap().host, "::1");
        assert_eq!(
            ServerAddr::parse("https://[::1]:8443").unwrap().url(),
            "https://[::1]:8443"
        );
        assert!(ServerAddr::parse("http://a.b").is_err());
        assert!(ServerAddr::parse("https://a.b:x").is_err());
    }
}
