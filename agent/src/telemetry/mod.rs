//! Telemetry: the logs and metrics of the containers this agent manages, sent to the server on
//! a stream and connection of their own ([`transport`]) so they can never delay the session.
//!
//! [`collect`] follows every managed container's logs through the Docker API and appends each
//! line to the [`spool`], an on-disk, size-bounded buffer that numbers every record; [`metrics`]
//! samples the host and the containers every interval. The transport sends the spool from where
//! the server says it stopped, so a cut, a server restart or an agent restart loses and repeats
//! nothing; when the spool is full the oldest records go and a marker says how many.

pub mod collect;
pub mod metrics;
pub mod spool;
pub mod transport;

use noco_certs::dial::ServerAddr;

use crate::config::TelemetryConfig;
use crate::datadir::DataDir;
use crate::renewal::LiveCredential;

/// The telemetry tasks of a running agent; they stop when this is dropped.
pub struct Telemetry {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub spool: std::sync::Arc<spool::Spool>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Open the spool and start the collector, the sampler and the transport.
pub fn spawn(
    dir: &DataDir,
    config: &TelemetryConfig,
    project_prefix: &str,
    addr: ServerAddr,
    live: LiveCredential,
) -> anyhow::Result<Telemetry> {
    let spool = spool::Spool::open(spool::SpoolConfig {
        dir: dir.log_spool(),
        max_bytes: config.spool_size,
    })?;
    let (metrics_tx, metrics_rx) = tokio::sync::watch::channel(None);
    let transport = tokio::spawn(transport::run(addr, live, spool.clone(), metrics_rx));
    let collectors = tokio::spawn(run_collectors(
        spool.clone(),
        project_prefix.to_string(),
        config.metrics_interval,
        metrics_tx,
    ));
    Ok(Telemetry {
        tasks: vec![transport, collectors],
        spool,
    })
}

/// Connect to Docker (retrying while it is down), then follow logs and sample metrics.
async fn run_collectors(
    spool: std::sync::Arc<spool::Spool>,
    project_prefix: String,
    interval: std::time::Duration,
    metrics: tokio::sync::watch::Sender<Option<std::sync::Arc<noco_proto::v1::MetricsSample>>>,
) {
    let mut said = false;
    let docker = loop {
        match crate::engine::docker::connect().await {
            Ok(d) => break d,
            Err(e) => {
                if !said {
                    tracing::warn!("logs and metrics wait for Docker: {e}");
                    said = true;
                }
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            }
        }
    };
    tokio::join!(
        collect::run(docker.clone(), spool, project_prefix.clone()),
        metrics::run(interval, metrics, project_prefix, docker),
    );
}
