//! `noco-server run`: open the data directory and the backup store, listen with mTLS, serve the
//! six services behind
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
use crate::core::{Core, Limits};
use crate::pki::{DataDir, Pki};
use crate::store::Store;
use crate::store::sled_store::SledStore;
use crate::{control, enroll, renew, session, telemetry};
use noco_proto::limits::{
    MAX_CONTROL_REQUEST, MAX_CONTROL_RESPONSE, MAX_ENROLL_MESSAGE, MAX_SESSION_MESSAGE,
    MAX_TELEMETRY_MESSAGE,
};
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub limits: Limits,
    /// Names and addresses to add to the server certificate before serving.
    pub sans: Vec<String>,
    /// Where backups are stored (`--backup-store`); `None`: `<data-dir>/backups`.
    pub backup_store: Option<String>,
    /// The largest backup archive taken (`--backup-max-size`).
    pub backup_max_size: u64,
    /// The configuration file as read and checked (`--config`; `[alerts]`).
    pub config: crate::config::ServerConfig,
    /// Serve the instruments to Prometheus here (`--metrics-listen`), from this registry (the
    /// one `noco_proto::otel::init` was given).
    pub metrics: Option<(SocketAddr, prometheus::Registry)>,
    /// Where OTLP goes (`--otlp-endpoint`): the per-host and per-container series and the
    /// container log records are sent there beside what the SDK exports.
    pub otlp: Option<noco_proto::otel::Otlp>,
}

/// Serve until `shutdown` completes.
pub async fn run(
    opts: RunOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let dir = DataDir::new(&opts.data_dir);
    let pki = Pki::load(&dir)?;
    let store: Arc<dyn Store> = Arc::new(open_store(&dir).await?);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    pki.renew_server_cert_if_due(clock.now())?;
    if !opts.sans.is_empty() {
        let added = pki.add_sans(&opts.sans, clock.now())?;
        if !added.is_empty() {
            tracing::info!("added {} to the server certificate", added.join(", "));
        }
    }
    let bans = Arc::new(BanSet::load(&*store).await?);
    let objects = crate::backups::objects::Objects::open(opts.backup_store.as_deref(), &dir.root)
        .await
        .context("checking the backup store")?;
    tracing::info!(store = %objects.url(), "backup store reachable and writable");
    let incoming = dir.root.join("backups-incoming");
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&incoming)
            .with_context(|| format!("creating {}", incoming.display()))?;
    }
    let backups = crate::backups::BackupSettings {
        objects: Arc::new(objects),
        incoming,
        max_size: opts.backup_max_size,
    };
    let tls =
        noco_certs::tls::server_config(pki.ca.cert_pem(), pki.server_cert.clone(), bans.clone())?;
    if let Some(path) = &opts.config.path {
        let a = &opts.config.alerts;
        tracing::info!(
            config = %path.display(),
            receivers = a.receivers.len(),
            "alerts: {} of {} rules on",
            a.rules.values().filter(|r| r.enabled).count(),
            a.rules.len()
        );
    }
    let shared = Core::assemble_with(
        store,
        Arc::new(pki),
        bans,
        clock,
        opts.limits,
        backups,
        opts.config,
    );

    let listener = TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("listening on {}", opts.listen))?;
    let local = listener.local_addr()?;
    // Tests and scripts read this line to learn the port (with --listen 127.0.0.1:0).
    println!("noco-server listening on {local}");
    tracing::info!(%local, ca = %shared.pki.ca.fingerprint(), url = %shared.pki.settings.server_url, "listening");

    let sources = crate::otel::metrics::register(&shared);
    if let Some(otlp) = opts.otlp.clone().filter(|o| o.metrics) {
        crate::otel::metrics::push(sources.clone(), otlp);
    }
    if let Some((addr, registry)) = opts.metrics {
        let bound = crate::otel::prom::serve(addr, registry, Some(sources)).await?;
        // Tests and scripts read this line to learn the port (with --metrics-listen 127.0.0.1:0).
        println!("noco-server metrics on http://{bound}/metrics");
    }
    if let Some(otlp) = &opts.otlp {
        crate::otel::logs::spawn_export(shared.clone(), otlp);
    }
    spawn_housekeeping(shared.clone());
    spawn_resigning(shared.clone());
    shared.rollouts.clone().spawn_driver();
    shared.alerts.clone().spawn_driver();
    shared.backups.clone().spawn_driver();
    let incoming = crate::listener::tls_incoming(listener, Arc::new(tls));
    let services = tonic::transport::Server::builder()
        // HTTP/2 flow control: a stream may have this much in flight before the receiver must
        // acknowledge it (h2's default, 64 KiB, holds a log stream to a few round trips' worth).
        .initial_stream_window_size(Some(noco_proto::limits::HTTP2_STREAM_WINDOW))
        .initial_connection_window_size(Some(noco_proto::limits::HTTP2_CONNECTION_WINDOW))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        // Outermost: every call is timed (rpc.server.duration), refused ones too.
        .layer(crate::otel::metrics::RpcMetricsLayer::new())
        .layer(AuthLayer::new(shared.clone()))
        .add_service(
            pb::enrollment_server::EnrollmentServer::new(enroll::EnrollmentSvc {
                core: shared.clone(),
            })
            .max_decoding_message_size(MAX_ENROLL_MESSAGE),
        )
        .add_service(
            pb::certs_server::CertsServer::new(renew::CertsSvc {
                core: shared.clone(),
            })
            .max_decoding_message_size(MAX_ENROLL_MESSAGE),
        )
        .add_service(
            pb::agent_server::AgentServer::new(session::AgentSvc {
                core: shared.clone(),
            })
            .max_decoding_message_size(MAX_SESSION_MESSAGE)
            .max_encoding_message_size(MAX_SESSION_MESSAGE),
        )
        .add_service(
            pb::telemetry_server::TelemetryServer::new(telemetry::stream::TelemetrySvc {
                core: shared.clone(),
            })
            .max_decoding_message_size(MAX_TELEMETRY_MESSAGE)
            .max_encoding_message_size(MAX_TELEMETRY_MESSAGE),
        )
        .add_service(crate::backups::service::server(shared.clone()))
        .add_service(
            pb::control_server::ControlServer::new(control::ControlSvc {
                core: shared.clone(),
            })
            .max_decoding_message_size(MAX_CONTROL_REQUEST)
            .max_encoding_message_size(MAX_CONTROL_RESPONSE),
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
            shared.registry.cut_all_telemetry(Status::unavailable("server shutting down"));
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

/// Open the database of an initialized data directory, refusing a damaged one with how to
/// recover.
async fn open_store(dir: &DataDir) -> anyhow::Result<SledStore> {
    use crate::store::StoreError;
    match SledStore::open(&dir.db()).await {
        Ok(store) => Ok(store),
        Err(e @ (StoreError::Damaged(_) | StoreError::Corrupt { .. })) => anyhow::bail!(
            "refusing to start on the database {}: {e}.\n\
             Nothing was changed. To recover: stop, restore the whole data directory {} from a copy taken while the server was stopped (or from your filesystem snapshots), and start again; `noco-server check --data-dir {}` checks a copy without serving it. Starting on an empty database instead would forget every host, operator and stack.",
            dir.db().display(),
            dir.root.display(),
            dir.root.display()
        ),
        Err(e) => Err(e).with_context(|| {
            format!(
                "opening the database {} (is another noco-server running on this data directory?)",
                dir.db().display()
            )
        }),
    }
}

/// `noco-server check`: open the data directory's database, check it, and say what it holds.
pub async fn check(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let dir = DataDir::new(data_dir);
    Pki::load(&dir)?;
    let store = open_store(&dir).await?;
    Ok(store.check()?.to_string())
}

/// Re-sign desired states before they expire (a new generation at a third of the validity left).
fn spawn_resigning(shared: Arc<Core>) {
    let every =
        (shared.limits.state_ttl / 6).clamp(Duration::from_millis(500), Duration::from_secs(60));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = shared.desired.update(|_| true).await {
                tracing::error!("re-signing desired states: {e}");
            }
        }
    });
}

fn spawn_housekeeping(shared: Arc<Core>) {
    // A certificate written by `noco-server cert add-san` is served within seconds.
    let pki = shared.pki.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            if let Err(e) = pki.reload_server_cert_if_changed() {
                tracing::error!("reading the server certificate: {e:#}");
            }
        }
    });
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
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!("pruned {n} tokens that expired over a week ago"),
                Err(e) => tracing::warn!("pruning tokens: {e}"),
            }
        }
    });
}
