//! The Agent service: one long-lived bidirectional stream per host. The agent says Hello with its
//! facts; the server answers Welcome, then both send heartbeats. The server closes a session
//! that goes quiet, whose host is revoked or replaced, or whose host no longer holds an
//! unexpired certificate.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use noco_certs::Identity;
use noco_certs::tls::BanList;
use noco_proto::v1 as pb;
use pb::agent_message::Msg as AgentMsg;
use pb::server_message::Msg as ServerMsg;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::Caller;
use crate::core::Core;
use crate::error::Doing;
use crate::registry::Registration;
use crate::store::records::HostRecord;

#[derive(Debug, Clone)]
pub struct AgentSvc {
    pub core: Arc<Core>,
}

type Outbound = mpsc::Sender<Result<pb::ServerMessage, Status>>;

#[tonic::async_trait]
impl pb::agent_server::Agent for AgentSvc {
    type SessionStream = ReceiverStream<Result<pb::ServerMessage, Status>>;

    async fn session(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let caller = Caller::of(&req)?;
        let core = self.core.clone();
        let mut host = calling_host(&core, &caller, "sessions").await?;
        let mut inbound = req.into_inner();
        let hello = match tokio::time::timeout(core.limits.hello_timeout, inbound.message()).await {
            Ok(Ok(Some(pb::AgentMessage {
                msg: Some(AgentMsg::Hello(hello)),
            }))) => hello,
            Ok(Ok(_)) => return Err(Status::invalid_argument("a session must start with Hello")),
            Ok(Err(status)) => return Err(status),
            Err(_) => {
                return Err(Status::deadline_exceeded(
                    "no Hello within the hello timeout",
                ));
            }
        };
        let now_ms = core.now_ms();
        host.facts = crate::wire::facts_from_wire(hello.facts.as_ref());
        host.last_seen_ms = now_ms;
        core.store
            .touch_host(&host.id, now_ms, Some(host.facts.clone()))
            .await
            .doing("storing host")?;
        let registration = core.registry.register(&host.id, now_ms);
        if let Err(refused) = banned_since_checked(&core, &caller, &host) {
            core.registry.deregister(&host.id, registration.session_id);
            return Err(refused);
        }
        let (tx, rx) = mpsc::channel(64);
        let welcome = pb::Welcome {
            host_id: host.id.clone(),
            name: host.name.clone(),
            heartbeat_interval_ms: core.limits.heartbeat_interval.as_millis() as u32,
        };
        let _ = tx
            .send(Ok(pb::ServerMessage {
                msg: Some(ServerMsg::Welcome(welcome)),
            }))
            .await;
        tracing::info!(host = %host.name, id = %host.id, agent = %host.facts.agent_version, "agent online");
        // After key rotations: the chain of trust-root updates first, oldest first, each signed
        // by a key of the root before it (an agent skips those it already holds).
        for root in core.pki.trust_roots() {
            let _ = tx
                .send(Ok(pb::ServerMessage {
                    msg: Some(ServerMsg::TrustRoot(root)),
                }))
                .await;
        }
        // The host's desired state, at once (the agent may have been away through changes).
        if let Some(state) = core.desired.current(&host, hello.last_generation).await? {
            let _ = tx
                .send(Ok(pb::ServerMessage {
                    msg: Some(ServerMsg::DesiredState(state)),
                }))
                .await;
        }

        let host_id = host.id.clone();
        let name = host.name.clone();
        tokio::spawn(async move {
            // Then the orders given to the host while it was away, once the stream is being
            // read (agents do each order once: one also pushed since the session registered
            // arrives twice, harmlessly).
            for order in core.backups.pending_orders(&host_id).await {
                let msg = pb::ServerMessage {
                    msg: Some(ServerMsg::Order(order)),
                };
                if tx.send(Ok(msg)).await.is_err() {
                    break;
                }
            }
            let reason = run(&core, &host_id, registration, inbound, &tx).await;
            tracing::info!(host = %name, id = %host_id, "agent offline: {reason}");
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The enrolled, unrevoked host an agent's stream (`what`: "sessions", "telemetry streams")
/// comes from; refused for any other caller.
pub(crate) async fn calling_host(
    core: &Core,
    caller: &Caller,
    what: &str,
) -> Result<HostRecord, Status> {
    let Identity::Agent { host_id } = &caller.peer.identity else {
        return Err(Status::permission_denied(format!("{what} are for agents")));
    };
    let host = core
        .store
        .host(host_id)
        .await
        .doing("reading host")?
        .ok_or_else(|| Status::permission_denied(format!("host {host_id} is not enrolled")))?;
    if host.is_revoked() {
        return Err(revoked(&host.name));
    }
    Ok(host)
}

/// Why a revoked host's stream is refused or ended.
pub(crate) fn revoked(host_name: &str) -> Status {
    Status::permission_denied(format!("host {host_name} has been revoked"))
}

/// Called by an agent's stream once registered: a revocation bans first, then cuts, so a
/// stream that passed [`calling_host`] before the ban (it waited for Hello) and registered
/// after the cut sees the ban here, and must deregister and return the refusal.
pub(crate) fn banned_since_checked(
    core: &Core,
    caller: &Caller,
    host: &HostRecord,
) -> Result<(), Status> {
    if core.bans.is_banned(&caller.peer.identity) {
        Err(revoked(&host.name))
    } else {
        Ok(())
    }
}

/// Drive one session until it ends; returns why it ended.
async fn run(
    core: &Core,
    host_id: &str,
    mut reg: Registration,
    mut inbound: Streaming<pb::AgentMessage>,
    tx: &Outbound,
) -> String {
    let mut tick = tokio::time::interval(core.limits.heartbeat_interval);
    tick.tick().await;
    let mut seq = 0u64;
    let reason = loop {
        tokio::select! {
            // A cut (replaced, revoked, shutting down) wins over everything else pending.
            biased;
            cut = &mut reg.cut => {
                match cut {
                    Ok(status) => {
                        let reason = status.message().to_string();
                        let _ = tx.send(Err(status)).await;
                        break reason;
                    }
                    Err(_) => break "session removed".to_string(),
                }
            }
            changed = reg.state.changed() => {
                if changed.is_err() {
                    // The registry dropped this session: replaced or cut. Say why, if it said.
                    if let Ok(status) = reg.cut.try_recv() {
                        let reason = status.message().to_string();
                        let _ = tx.send(Err(status)).await;
                        break reason;
                    }
                    break "session removed".to_string();
                }
                let state = reg.state.borrow_and_update().clone();
                if let Some(state) = state
                    && tx.send(Ok(pb::ServerMessage { msg: Some(ServerMsg::DesiredState(state)) })).await.is_err()
                {
                    break "agent went away".to_string();
                }
            }
            Some(order) = reg.orders.recv() => {
                if tx.send(Ok(pb::ServerMessage { msg: Some(ServerMsg::Order(order)) })).await.is_err() {
                    break "agent went away".to_string();
                }
            }
            msg = inbound.message() => match msg {
                Ok(Some(m)) => {
                    reg.last_seen_ms.store(core.now_ms(), Ordering::Relaxed);
                    match m.msg {
                        Some(AgentMsg::Heartbeat(_)) => {}
                        Some(AgentMsg::Report(report)) => core.reports.record(host_id, report),
                        Some(AgentMsg::Hello(_)) => {
                            let _ = tx.send(Err(Status::invalid_argument("Hello may only be sent once"))).await;
                            break "protocol error: second Hello".to_string();
                        }
                        None => {}
                    }
                }
                Ok(None) => break "agent closed the session".to_string(),
                Err(status) => break format!("stream error: {}", status.message()),
            },
            _ = tick.tick() => {
                let now_ms = core.now_ms();
                let quiet_ms = now_ms - reg.last_seen_ms.load(Ordering::Relaxed);
                if quiet_ms > core.limits.session_idle_timeout.as_millis() as i64 {
                    let _ = tx.send(Err(Status::unavailable("no message from the agent within the idle timeout"))).await;
                    break format!("silent for {quiet_ms} ms");
                }
                match core.store.host(host_id).await {
                    Ok(Some(h)) if h.cert_not_after_ms <= now_ms => {
                        let _ = tx.send(Err(Status::unauthenticated("the host's certificate expired and was not renewed"))).await;
                        break "certificate expired".to_string();
                    }
                    // Every sixth heartbeat, last-seen goes to disk too, so a crashed server
                    // still knows roughly when each host was last heard from.
                    Ok(Some(_)) if seq % 6 == 5 => {
                        let seen = reg.last_seen_ms.load(Ordering::Relaxed);
                        if let Err(e) = core.store.touch_host(host_id, seen, None).await {
                            tracing::warn!("storing last-seen of {host_id}: {e}");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("reading host {host_id}: {e}"),
                }
                seq += 1;
                let hb = pb::Heartbeat { seq, sent_unix_ms: now_ms };
                if tx.send(Ok(pb::ServerMessage { msg: Some(ServerMsg::Heartbeat(hb)) })).await.is_err() {
                    break "agent went away".to_string();
                }
            }
        }
    };
    core.registry.deregister(host_id, reg.session_id);
    let seen = reg.last_seen_ms.load(Ordering::Relaxed);
    if let Err(e) = core.store.touch_host(host_id, seen, None).await {
        tracing::warn!("storing last-seen of {host_id}: {e}");
    }
    reason
}
