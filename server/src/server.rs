//! `noco-server run`: open the data directory, listen with mTLS, serve the four services behind
//! the auth layer, run the housekeeping tasks, and shut down cleanly on SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use noco_proto::v1 as pb;
use tokio::net::TcpListener;
use tonic::Status;

use crate::auth::AuthLayer;
use crate::bans::BanSet;
use crate::clock::{Clock, SystemClock};
use crate::pki::{DataDir, Pki};
use crate::registry::Registry;
use crate::shared::{Limits, Shared};
use crate::store::Store;
use crate::{control, enroll, renew, session};

/// The largest control or enrollment message accepted.
/// Stack revisions carry their files (up to 8 MiB) and compose file.
pub const MAX_CONTROL_MESSAGE: usize = 16 * 1024 * 1024;
pub const MAX_ENROLL_MESSAGE: usize = 64 * 1024;
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub limits: Limits,
}

/// Serve until `shutdown` completes.
pub async fn run(
    opts: RunOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let dir = DataDir::new(&opts.data_dir);
    let pki = Pki::load(&dir)?;
    let store = Store::open(&dir.db()).with_context(|| {
        format!(
            "opening the database {} (is another noco-server running on this data directory?)",
            dir.db().display()
        )
    })?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    pki.renew_server_cert_if_due(clock.now())?;
    let bans = Arc::new(BanSet::load(&store)?);
    let tls =
        noco_certs::tls::server_config(pki.ca.cert_pem(), pki.server_cert.clone(), bans.clone())?;
    let shared = Arc::new(Shared {
        reports: Default::default(),
        desired_lock: tokio::sync::Mutex::new(()),
        rollout_lock: tokio::sync::Mutex::new(()),
        rollout_wake: tokio::sync::Notify::new(),
        rollout_spans: Default::default(),
        store,
        pki,
        bans,
        registry: Registry::default(),
        clock,
        limits: opts.limits,
    });

    let listener = TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("listening on {}", opts.listen))?;
    let local = listener.local_addr()?;
    // Tests and scripts read this line to learn the port (with --listen 127.0.0.1:0).
    println!("noco-server listening on {local}");
    tracing::info!(%local, ca = %shared.pki.ca.fingerprint(), url = %shared.pki.settings.server_url, "listening");

    spawn_housekeeping(shared.clone());
    spawn_resigning(shared.clone());
    crate::rollouts::spawn_driver(shared.clone());
    let incoming = crate::listener::tls_incoming(listener, Arc::new(tls));
    let services = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .layer(AuthLayer::new(shared.clone()))
        .add_service(
            pb::enrollment_server::EnrollmentServer::new(enroll::EnrollmentSvc {
                shared: shared.clone(),
            })
            .max_decoding_message_size(MAX_ENROLL_MESSAGE),
        )
        .add_service(
            pb::certs_server::CertsServer::new(renew::CertsSvc {
                shared: shared.clone(),
            })
            .max_decoding_message_size(MAX_ENROLL_MESSAGE),
        )
        .add_service(
            pb::agent_server::AgentServer::new(session::AgentSvc {
                shared: shared.clone(),
            })
            .max_decoding_message_size(session::MAX_SESSION_MESSAGE)
            .max_encoding_message_size(session::MAX_SESSION_MESSAGE),
        )
        .add_service(
            pb::control_server::ControlServer::new(control::ControlSvc {
                shared: shared.clone(),
            })
            .max_decoding_message_size(MAX_CONTROL_MESSAGE)
            .max_encoding_message_size(64 * 1024 * 1024),
        );

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut serve = tokio::spawn(services.serve_with_incoming_shutdown(incoming, async {
        let _ = stop_rx.await;
    }));
    tokio::select! {
        result = &mut serve => {
            result.context("the gRPC server task failed")?.context("serving gRPC")?;
        }
        _ = shutdown => {
            tracing::info!("shutting down: closing {} agent sessions", shared.registry.len());
            shared.registry.cut_all(Status::unavailable("server shutting down"));
            let _ = stop_tx.send(());
            // Open calls get a few seconds to finish; then the server stops regardless.
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut serve).await {
                Ok(result) => result.context("the gRPC server task failed")?.context("serving gRPC")?,
                Err(_) => {
                    tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; stopping anyway");
                    serve.abort();
                }
            }
        }
    }
    shared
        .store
        .flush()
        .await
        .context("flushing the database")?;
    Ok(())
}

/// Re-sign desired states before they expire (a new generation at a third of the validity left).
fn spawn_resigning(shared: Arc<Shared>) {
    let every =
        (shared.limits.state_ttl / 6).clamp(Duration::from_millis(500), Duration::from_secs(60));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = crate::desired::update_hosts(&shared, |_| true).await {
                tracing::error!("re-signing desired states: {}", e.message());
            }
        }
    });
}

fn spawn_housekeeping(shared: Arc<Shared>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            if let Err(e) = shared.pki.renew_server_cert_if_due(shared.clock.now()) {
                tracing::error!("renewing the server certificate: {e:#}");
            }
            match shared
                .store
                .prune_tokens(shared.now_ms(), 7 * 24 * 3600 * 1000)
            {
                Ok(0) => {}
                Ok(n) => tracing::info!("pruned {n} tokens that expired over a week ago"),
                Err(e) => tracing::warn!("pruning tokens: {e}"),
            }
        }
    });
}
