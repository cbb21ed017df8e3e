//! The agent's session with the server: connect, Hello, Welcome, heartbeats both ways, and
//! reconnect with jittered exponential backoff whenever the session ends — except when the server
//! has revoked this host, which no retry can mend.
//!
//! Desired state rides the same stream: each state the server sends is judged and persisted by
//! [`Desired`] and applied by the [`stacks`] applier, which runs on its own task from the start —
//! before and independently of any connection, so a host keeps its stacks while the server is
//! away. The session sends a [`pb::StateReport`] after every state received, whenever the
//! applier's picture changes, and every [`REPORT_INTERVAL`] as a slow heartbeat.

use std::future::Future;
use std::time::{Duration, Instant};

use noco_certs::dial::{self, ServerAddr, describe};
use noco_proto::v1 as pb;
use pb::agent_message::Msg as AgentMsg;
use pb::server_message::Msg as ServerMsg;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::backoff::{Backoff, random_unit};
use crate::datadir::DataDir;
use crate::desired::{self, Desired};
use crate::policy::Policy;
use crate::renewal::{self, LiveCredential};
use crate::report::Status;
use crate::stacks::{self, ApplierConfig};

pub const MAX_MESSAGE: usize = noco_proto::limits::MAX_SESSION_MESSAGE;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// The slow heartbeat of state reports.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Compose project names of server-sent stacks are `<prefix><stack>`.
    pub project_prefix: String,
    /// How often the current state is re-applied even without Docker events.
    pub reconcile_interval: Duration,
    /// How long one service may take to become ready.
    pub wait_timeout: Duration,
    /// The host policy (from the agent's configuration file).
    pub policy: Policy,
    pub registry_credentials: Vec<crate::config::Credentials>,
    /// Logs and metrics (from the agent's configuration file).
    pub telemetry: crate::config::TelemetryConfig,
    /// Backups (from the agent's configuration file).
    pub backup: crate::config::BackupConfig,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            project_prefix: String::new(),
            reconcile_interval: Duration::from_secs(30),
            wait_timeout: Duration::from_secs(120),
            policy: Policy::default(),
            registry_credentials: Vec::new(),
            telemetry: crate::config::TelemetryConfig::default(),
            backup: crate::config::BackupConfig::default(),
        }
    }
}

/// Aborts the applier when the agent stops.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why the agent stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Asked to stop (SIGTERM/SIGINT).
    Shutdown,
    /// This host can no longer talk to the server: revoked, or its certificate is gone for good.
    Revoked(String),
}

/// How one session ended.
#[derive(Debug)]
enum End {
    Retry { reason: String, was_up: bool },
    Fatal(String),
}

/// Run the agent until `shutdown` completes or the host is revoked.
pub async fn run(
    dir: DataDir,
    opts: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<Exit> {
    let cred = dir.load_credential()?;
    let peer = cred.peer()?;
    if peer.expired_at(std::time::SystemTime::now()) {
        return Ok(Exit::Revoked(format!(
            "this host's certificate expired at {}: enroll it again",
            humantime::format_rfc3339_seconds(peer.not_after)
        )));
    }
    let addr = ServerAddr::parse(&cred.server).map_err(|e| anyhow::anyhow!(e))?;
    stacks::check_prefix(&opts.project_prefix).map_err(|e| anyhow::anyhow!(e))?;
    tracing::info!(host = %cred.name, id = %cred.id, server = %cred.server, "noco-agent starting");
    let store = desired::open_store(&dir, &cred.id)?;
    let (status, _) = tokio::sync::watch::channel(Status::default());
    let initial = store.current().cloned().map(std::sync::Arc::new);
    if let Some(s) = &initial {
        tracing::info!(
            "applying the persisted desired state generation {} ({} stacks)",
            s.generation,
            s.stacks.len()
        );
    }
    let (apply_tx, apply_rx) = tokio::sync::watch::channel(initial);
    let locks = crate::locks::StackLocks::default();
    let links = crate::desired::TraceLinks::default();
    let desired_for_backups = apply_rx.clone();
    let _applier = AbortOnDrop(stacks::spawn(
        ApplierConfig {
            data_dir: dir.clone(),
            project_prefix: opts.project_prefix.clone(),
            policy: opts.policy.clone(),
            registry_credentials: opts.registry_credentials.clone(),
            wait_timeout: opts.wait_timeout,
            reconcile_interval: opts.reconcile_interval,
            locks: locks.clone(),
            host_name: cred.name.clone(),
            links: links.clone(),
        },
        status.clone(),
        apply_rx,
    ));
    let mut desired = Desired::new(store, status, apply_tx, links);
    let live = LiveCredential::new(cred)?;
    let _telemetry = crate::telemetry::spawn(
        &dir,
        &opts.telemetry,
        &opts.project_prefix,
        addr.clone(),
        live.clone(),
    )?;
    let backups = crate::backup::service::spawn(crate::backup::service::Setup {
        dir: &dir,
        config: &opts.backup,
        host_id: live.cred.load().id.clone(),
        project_prefix: opts.project_prefix.clone(),
        locks,
        desired: desired_for_backups,
        wait_timeout: opts.wait_timeout,
        addr: addr.clone(),
        live: live.clone(),
    })?;
    let renewal = renewal::run(dir.clone(), live.clone());
    tokio::pin!(renewal, shutdown);
    let mut backoff = Backoff::new(opts.initial_backoff, opts.max_backoff);
    loop {
        let end = tokio::select! {
            end = session(&addr, &live, &mut desired, &dir, &backups.orders) => end,
            why = &mut renewal => End::Fatal(why),
            _ = &mut shutdown => return Ok(Exit::Shutdown),
        };
        match end {
            End::Fatal(why) => return Ok(Exit::Revoked(why)),
            End::Retry { reason, was_up } => {
                if was_up {
                    backoff.reset();
                }
                let delay = backoff.next_delay(random_unit());
                tracing::warn!(
                    "session with {} ended: {reason}; reconnecting in {delay:.1?}",
                    addr.url()
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    why = &mut renewal => return Ok(Exit::Revoked(why)),
                    _ = &mut shutdown => return Ok(Exit::Shutdown),
                }
            }
        }
    }
}

fn classify(status: &tonic::Status, was_up: bool) -> End {
    let text = format!("{}: {}", status.message(), describe(status));
    let revoked = text.to_lowercase().contains("revoked");
    if revoked || (status.code() == tonic::Code::Unauthenticated && text.contains("expired")) {
        End::Fatal(format!(
            "the server refused this host: {}",
            status.message()
        ))
    } else {
        End::Retry {
            reason: format!("{:?}: {}", status.code(), text),
            was_up,
        }
    }
}

fn report_message(desired: &Desired) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(AgentMsg::Report(desired.report())),
    }
}

async fn session(
    addr: &ServerAddr,
    live: &LiveCredential,
    desired: &mut Desired,
    dir: &DataDir,
    orders: &mpsc::Sender<pb::Order>,
) -> End {
    let tls = live.tls.clone();
    let channel = match dial::connect(addr, move || tls.load_full(), CONNECT_TIMEOUT).await {
        Ok(c) => c,
        Err(e) => {
            let text = describe(&e);
            if text.to_lowercase().contains("revoked") {
                return End::Fatal(format!(
                    "the server refused this host's certificate: {text}"
                ));
            }
            return End::Retry {
                reason: format!("connecting: {text}"),
                was_up: false,
            };
        }
    };
    let (tx, rx) = mpsc::channel(16);
    let hello = pb::Hello {
        facts: Some(crate::facts::gather().await),
        last_generation: desired.last_generation(),
    };
    let _ = tx
        .send(pb::AgentMessage {
            msg: Some(AgentMsg::Hello(hello)),
        })
        .await;
    let mut client = pb::agent_client::AgentClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let mut inbound = match client.session(ReceiverStream::new(rx)).await {
        Ok(resp) => resp.into_inner(),
        Err(status) => return classify(&status, false),
    };
    let welcome = match tokio::time::timeout(WELCOME_TIMEOUT, inbound.message()).await {
        Ok(Ok(Some(pb::ServerMessage {
            msg: Some(ServerMsg::Welcome(w)),
        }))) => w,
        Ok(Ok(_)) => {
            return End::Retry {
                reason: "the server did not answer Hello with Welcome".into(),
                was_up: false,
            };
        }
        Ok(Err(status)) => return classify(&status, false),
        Err(_) => {
            return End::Retry {
                reason: "no Welcome from the server".into(),
                was_up: false,
            };
        }
    };
    let interval = Duration::from_millis(u64::from(welcome.heartbeat_interval_ms.max(100)));
    tracing::info!(host = %welcome.name, id = %welcome.host_id, "session established; heartbeat every {interval:?}");
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    let mut last_heard = Instant::now();
    let mut seq = 0u64;
    let mut status = desired.subscribe();
    status.mark_changed();
    let mut reports = tokio::time::interval(REPORT_INTERVAL);
    reports.tick().await;
    let closed = End::Retry {
        reason: "the session's send side closed".into(),
        was_up: true,
    };
    loop {
        tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(m)) => {
                    last_heard = Instant::now();
                    if let Some(ServerMsg::TrustRoot(root)) = &m.msg
                        && let Err(e) = desired.receive_trust_root(root, dir)
                    {
                        tracing::error!("{e}");
                    }
                    if let Some(ServerMsg::Order(envelope)) = &m.msg {
                        match desired.verify_order(envelope) {
                            Ok(order) => {
                                if orders.try_send(order).is_err() {
                                    tracing::error!("too many orders waiting; one was dropped");
                                }
                            }
                            Err(e) => tracing::error!("{e}"),
                        }
                    }
                    if let Some(ServerMsg::DesiredState(envelope)) = m.msg {
                        desired.receive(&envelope);
                        status.mark_unchanged();
                        if tx.send(report_message(desired)).await.is_err() {
                            return closed;
                        }
                    }
                }
                Ok(None) => return End::Retry { reason: "the server closed the session".into(), was_up: true },
                Err(status) => return classify(&status, true),
            },
            changed = status.changed() => {
                if changed.is_err() {
                    return End::Retry { reason: "the agent's state reporter stopped".into(), was_up: true };
                }
                status.mark_unchanged();
                if tx.send(report_message(desired)).await.is_err() {
                    return closed;
                }
            }
            _ = reports.tick() => {
                if tx.send(report_message(desired)).await.is_err() {
                    return closed;
                }
            }
            _ = tick.tick() => {
                if last_heard.elapsed() > interval * 3 {
                    return End::Retry { reason: format!("nothing from the server for {:?}", last_heard.elapsed()), was_up: true };
                }
                seq += 1;
                let sent_unix_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0);
                let hb = pb::Heartbeat { seq, sent_unix_ms };
                if tx.send(pb::AgentMessage { msg: Some(AgentMsg::Heartbeat(hb)) }).await.is_err() {
                    return closed;
                }
            }
        }
    }
}
