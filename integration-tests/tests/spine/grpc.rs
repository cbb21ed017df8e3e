//! Talking to the server directly over gRPC, to present certificates nococtl never would.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use noco_certs::ca::{Ca, Subject};
use noco_certs::credential::Credential;
use noco_certs::dial::{self, ServerAddr};
use noco_certs::{Identity, csr};
use noco_integration_tests::Fleet;
use noco_proto::v1 as pb;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

pub fn rt() -> tokio::runtime::Runtime {
    noco_certs::install_crypto_provider();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

pub async fn channel(
    fleet: &Fleet,
    config: rustls::ClientConfig,
) -> Result<Channel, tonic::transport::Error> {
    let addr = ServerAddr::parse(&fleet.url).expect("fleet url");
    let config = Arc::new(config);
    dial::connect(&addr, move || config.clone(), Duration::from_secs(5)).await
}

/// A client configuration trusting the fleet's CA and presenting `cert_pem`/`key_pem`.
pub fn client_config(fleet: &Fleet, cert_pem: &str, key_pem: &str) -> rustls::ClientConfig {
    let ca = std::fs::read_to_string(fleet.server_data().join("ca.crt")).expect("ca.crt");
    noco_certs::tls::client_config(&ca, cert_pem, key_pem).expect("client config")
}

/// Trusts the fleet's CA, presents no certificate.
pub fn anonymous_config(fleet: &Fleet) -> rustls::ClientConfig {
    let ca = std::fs::read_to_string(fleet.server_data().join("ca.crt")).expect("ca.crt");
    let mut roots = rustls::RootCertStore::empty();
    for c in noco_certs::tls::certs_from_pem(&ca).expect("ca pem") {
        roots.add(c).expect("root");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

/// The fleet's own CA, loaded from the server's data directory.
pub fn fleet_ca(fleet: &Fleet) -> Ca {
    let dir = fleet.server_data();
    Ca::load(
        &std::fs::read_to_string(dir.join("ca.crt")).expect("ca.crt"),
        &std::fs::read_to_string(dir.join("ca.key")).expect("ca.key"),
    )
    .expect("load CA")
}

/// Issue a certificate for `identity` from `ca`, as of `now`, valid for `lifetime`.
pub fn issue(
    ca: &Ca,
    identity: &Identity,
    lifetime: Duration,
    now: SystemTime,
) -> (String, String) {
    let req = csr::generate("test").expect("csr");
    let subject = Subject {
        identity,
        common_name: "test",
        dns_names: &[],
        ip_addrs: &[],
        lifetime,
    };
    (
        ca.issue_for_csr(&req.csr_pem, &subject, now)
            .expect("issue"),
        req.key_pem,
    )
}

pub fn load_credential(path: &std::path::Path) -> Credential {
    Credential::load(path).expect("credential")
}

/// Call ListHosts with this configuration; the error status if refused.
pub async fn list_hosts(
    fleet: &Fleet,
    config: rustls::ClientConfig,
) -> Result<usize, tonic::Status> {
    let ch = channel(fleet, config)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let resp = pb::control_client::ControlClient::new(ch)
        .list_hosts(pb::ListHostsRequest {})
        .await?;
    Ok(resp.into_inner().hosts.len())
}

/// Open a session with this configuration and wait for Welcome. On success returns the
/// inbound stream and the sender that keeps the session open.
pub async fn open_session(
    fleet: &Fleet,
    config: rustls::ClientConfig,
) -> Result<
    (
        tonic::Streaming<pb::ServerMessage>,
        tokio::sync::mpsc::Sender<pb::AgentMessage>,
    ),
    tonic::Status,
> {
    let ch = channel(fleet, config)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let hello = pb::Hello {
        facts: Some(pb::HostFacts {
            hostname: "test".into(),
            ..Default::default()
        }),
        last_generation: 0,
    };
    tx.send(pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Hello(hello)),
    })
    .await
    .expect("queue hello");
    let mut inbound = pb::agent_client::AgentClient::new(ch)
        .session(ReceiverStream::new(rx))
        .await?
        .into_inner();
    match tokio::time::timeout(Duration::from_secs(10), inbound.message()).await {
        Ok(Ok(Some(pb::ServerMessage {
            msg: Some(pb::server_message::Msg::Welcome(_)),
        }))) => Ok((inbound, tx)),
        Ok(Ok(other)) => Err(tonic::Status::internal(format!(
            "expected Welcome, got {other:?}"
        ))),
        Ok(Err(status)) => Err(status),
        Err(_) => Err(tonic::Status::deadline_exceeded("no Welcome")),
    }
}
