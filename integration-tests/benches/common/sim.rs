//! Simulated hosts: each is enrolled in-process through the real Enroll RPC (a join token, a
//! key, a CSR and a pinned TLS connection) and opens its own mTLS `Agent.Session` (Hello →
//! Welcome, heartbeats after), as `noco-agent` does, but runs no containers. An [`Acker`]
//! verifies every desired state it receives as an agent would and acknowledges it at once.
//! Also the admin's Control client.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow, bail};
use noco_certs::credential::Credential;
use noco_certs::dial::{self, ServerAddr};
use noco_certs::signing::TrustRoot;
use noco_certs::state::{self as signed, Accepted, Verdict};
use noco_certs::token::Token;
use noco_certs::{csr, tls};
use noco_integration_tests::{Fleet, Proc, ServerOptions};
use noco_proto::v1 as pb;
use pb::agent_message::Msg as AgentMsg;
use pb::server_message::Msg as ServerMsg;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::{
    Failures, Outcome, PhaseLimit, collect, collect_tasks, fits, fmt_s, harness, lock, rate,
    unix_ms,
};

/// Deadline of one TCP + TLS connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of one unary call, and of the session call and its Welcome.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Enrollments in flight (key, CSR, connection, call).
pub const ENROLL_CONCURRENCY: usize = 64;
/// Calls in flight that make the server write and flush its database (CreateToken, Enroll).
/// (Concurrent flushes deadlocked sled 0.34's `flush_async`; the server now flushes on the
/// blocking pool, which is safe.)
pub const WRITE_CONCURRENCY: usize = 64;
/// Concurrent session handshakes (connect, TLS, Hello, Welcome).
pub const HANDSHAKE_CONCURRENCY: usize = 128;
/// Server heartbeat with simulated hosts: slow, so heartbeats add little to what is measured.
pub const SIM_HEARTBEAT: &str = "10s";
/// Status and ListHosts of many hosts are larger than tonic's default 4 MiB limit.
pub const MAX_LIST_MESSAGE: usize = 256 * 1024 * 1024;
/// Fewer enrolled hosts or established sessions than this share of N is a failure.
pub const MIN_ESTABLISHED: f64 = 0.99;
/// Simulated host names: `sim-00042`; their label is `role=sim`.
pub const SIM_PREFIX: &str = "sim-";

pub type Control = pb::control_client::ControlClient<Channel>;

// ------------------------------------------------------------------------------------ enrolling

/// A simulated host's credential and trust root.
#[derive(Clone)]
pub struct SimHost {
    pub name: String,
    pub host_id: String,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub trust: Arc<TrustRoot>,
}

/// Admits [`WRITE_CONCURRENCY`] write calls at a time, each bounded by [`CALL_TIMEOUT`]. Once
/// one times out (the server's writes are stuck) the rest fail at once instead of each waiting
/// out its timeout.
pub struct WriteGate {
    permits: Semaphore,
    stuck: AtomicBool,
}

impl WriteGate {
    pub fn new() -> Arc<Self> {
        Arc::new(WriteGate {
            permits: Semaphore::new(WRITE_CONCURRENCY),
            stuck: AtomicBool::new(false),
        })
    }

    pub async fn call<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, String> {
        let _permit = self.permits.acquire().await.map_err(|e| e.to_string())?;
        if self.stuck.load(Ordering::Relaxed) {
            return Err(format!("{what} not sent: an earlier write call timed out"));
        }
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => Err(format!("{what}: {}", status_text(&status))),
            Err(_) => {
                self.stuck.store(true, Ordering::Relaxed);
                Err(format!(
                    "{what} did not answer within {CALL_TIMEOUT:?}: the server's writes seem stuck"
                ))
            }
        }
    }
}

/// `n` join tokens for `role=sim`, made through `gate` as the admin; failures are reported and
/// left out.
pub async fn create_tokens(
    control: &Control,
    gate: &Arc<WriteGate>,
    n: usize,
    description: &str,
    phase: PhaseLimit,
) -> Vec<String> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let mut control = control.clone();
            let gate = gate.clone();
            let request = pb::CreateTokenRequest {
                labels: HashMap::from([("role".to_string(), "sim".to_string())]),
                ttl_seconds: 3600,
                description: description.to_string(),
            };
            tokio::spawn(async move {
                let resp = gate
                    .call("CreateToken", control.create_token(request))
                    .await?;
                Ok(resp.token)
            })
        })
        .collect();
    let (tokens, failures) = collect_tasks("join tokens made", tasks, phase.deadline(n)).await;
    failures.report("token creations");
    tokens
}

/// Simulated hosts, enrolled.
pub struct Enrolled {
    pub hosts: Vec<SimHost>,
    /// How long making the join tokens took, and enrolling the hosts.
    pub token_time: Duration,
    pub enroll_time: Duration,
}

/// Make `n` join tokens as the admin and enroll a simulated host with each, printing the
/// rates; fails when fewer than [`MIN_ESTABLISHED`] of them enrolled.
pub async fn enroll_sims(
    fleet: &Fleet,
    control: &Control,
    n: usize,
    description: &str,
    phase: PhaseLimit,
) -> anyhow::Result<Enrolled> {
    let addr = ServerAddr::parse(&fleet.url).map_err(anyhow::Error::msg)?;
    let start = Instant::now();
    let gate = WriteGate::new();
    let tokens = create_tokens(control, &gate, n, description, phase).await;
    let token_time = start.elapsed();
    println!(
        "created {} join tokens in {} ({}/s, {WRITE_CONCURRENCY} calls in flight)",
        tokens.len(),
        fmt_s(token_time),
        rate(tokens.len(), token_time)
    );
    let start = Instant::now();
    let hosts = enroll_all(&addr, &gate, tokens, phase).await;
    let enroll_time = start.elapsed();
    println!(
        "enrolled {} hosts in {} ({}/s; {ENROLL_CONCURRENCY} hosts preparing, {WRITE_CONCURRENCY} Enroll calls in flight)",
        hosts.len(),
        fmt_s(enroll_time),
        rate(hosts.len(), enroll_time)
    );
    if (hosts.len() as f64) < n as f64 * MIN_ESTABLISHED {
        bail!(
            "only {} of {n} hosts enrolled; sessions not attempted",
            hosts.len()
        );
    }
    Ok(Enrolled {
        hosts,
        token_time,
        enroll_time,
    })
}

/// Enroll one simulated host per token (`sim-00000`, …), with bounded concurrency; failures
/// are reported and left out.
pub async fn enroll_all(
    addr: &ServerAddr,
    gate: &Arc<WriteGate>,
    tokens: Vec<String>,
    phase: PhaseLimit,
) -> Vec<SimHost> {
    let n = tokens.len();
    let limit = Arc::new(Semaphore::new(ENROLL_CONCURRENCY));
    let tasks: Vec<_> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, token)| {
            let addr = addr.clone();
            let gate = gate.clone();
            let limit = limit.clone();
            tokio::spawn(async move {
                let _permit = limit.acquire_owned().await.map_err(|e| e.to_string())?;
                enroll_one(&addr, &gate, token, format!("{SIM_PREFIX}{i:05}")).await
            })
        })
        .collect();
    let (hosts, failures) = collect_tasks("enrolled", tasks, phase.deadline(n)).await;
    failures.report("enrollments");
    hosts
}

/// Enroll as `noco-agent enroll` does: a key and CSR, a connection pinned to the token's CA
/// fingerprint, the Enroll call; keep the trust root it returns.
pub async fn enroll_one(
    addr: &ServerAddr,
    gate: &WriteGate,
    token: String,
    name: String,
) -> Result<SimHost, String> {
    let parsed: Token = token
        .parse()
        .map_err(|e| format!("reading the join token: {e}"))?;
    let csr::KeyAndCsr { key_pem, csr_pem } =
        csr::generate(&name).map_err(|e| format!("making a key and CSR: {e}"))?;
    let config = Arc::new(
        tls::pinned_client_config(&parsed.ca_fingerprint)
            .map_err(|e| format!("pinned TLS configuration: {e}"))?,
    );
    let channel = dial::connect(addr, move || config.clone(), CONNECT_TIMEOUT)
        .await
        .map_err(|e| format!("connecting to enroll: {}", noco_certs::dial::describe(&e)))?;
    let request = pb::EnrollRequest {
        token,
        csr_pem,
        requested_name: name.clone(),
        facts: Some(facts(&name)),
    };
    let mut client = pb::enrollment_client::EnrollmentClient::new(channel);
    let resp = gate.call("Enroll", client.enroll(request)).await?;
    let keys: Vec<Vec<u8>> = resp
        .trust_root
        .iter()
        .map(|k| k.public_key.clone())
        .collect();
    let trust = TrustRoot::new(&keys).map_err(|e| format!("the enrolled trust root: {e}"))?;
    Ok(SimHost {
        name: resp.name,
        host_id: resp.host_id,
        ca_pem: resp.ca_pem,
        cert_pem: resp.cert_pem,
        key_pem,
        trust: Arc::new(trust),
    })
}

/// What a simulated host says about itself.
pub fn facts(name: &str) -> pb::HostFacts {
    pb::HostFacts {
        hostname: name.to_string(),
        os: "simulated".to_string(),
        kernel: String::new(),
        arch: std::env::consts::ARCH.to_string(),
        docker_version: "unavailable: simulated host".to_string(),
        agent_version: format!("{}-bench", env!("CARGO_PKG_VERSION")),
    }
}

// ------------------------------------------------------------------------------------ sessions

/// An established session.
pub struct Live {
    // Held so that the connection stays up as long as the session.
    _client: pb::agent_client::AgentClient<Channel>,
    tx: mpsc::Sender<pb::AgentMessage>,
    inbound: tonic::Streaming<pb::ServerMessage>,
    heartbeat: Duration,
}

/// Connect with the host's certificate, say Hello, wait for Welcome (as `noco-agent` does).
pub async fn open_session(addr: &ServerAddr, host: &SimHost) -> Result<Live, String> {
    let config = Arc::new(
        tls::client_config(&host.ca_pem, &host.cert_pem, &host.key_pem)
            .map_err(|e| format!("TLS configuration: {e}"))?,
    );
    let channel = dial::connect(addr, move || config.clone(), CONNECT_TIMEOUT)
        .await
        .map_err(|e| format!("connecting: {}", noco_certs::dial::describe(&e)))?;
    let (tx, rx) = mpsc::channel(16);
    let hello = pb::Hello {
        facts: Some(facts(&host.name)),
        last_generation: 0,
    };
    tx.send(pb::AgentMessage {
        msg: Some(AgentMsg::Hello(hello)),
    })
    .await
    .map_err(|_| "queueing Hello: the stream is closed".to_string())?;
    let mut client = pb::agent_client::AgentClient::new(channel);
    let mut inbound =
        match tokio::time::timeout(CALL_TIMEOUT, client.session(ReceiverStream::new(rx))).await {
            Ok(Ok(resp)) => resp.into_inner(),
            Ok(Err(status)) => return Err(format!("Session: {}", status_text(&status))),
            Err(_) => return Err(format!("Session did not answer within {CALL_TIMEOUT:?}")),
        };
    let welcome = match tokio::time::timeout(CALL_TIMEOUT, inbound.message()).await {
        Ok(Ok(Some(pb::ServerMessage {
            msg: Some(ServerMsg::Welcome(w)),
        }))) => w,
        Ok(Ok(Some(other))) => return Err(format!("expected Welcome, got {other:?}")),
        Ok(Ok(None)) => return Err("the server closed the session before Welcome".to_string()),
        Ok(Err(status)) => return Err(format!("waiting for Welcome: {}", status_text(&status))),
        Err(_) => return Err(format!("no Welcome within {CALL_TIMEOUT:?}")),
    };
    let heartbeat = Duration::from_millis(u64::from(welcome.heartbeat_interval_ms.max(100)));
    Ok(Live {
        _client: client,
        tx,
        inbound,
        heartbeat,
    })
}

/// Open a session per host, at most [`HANDSHAKE_CONCURRENCY`] handshakes at a time, each in
/// its own task; `start` turns an established one into what the caller keeps of it and the
/// future that serves it in that task. Returns the tasks (abort them to drop the sessions) and
/// what was kept of each established session; failures are reported.
pub async fn open_sessions<T, F>(
    addr: &ServerAddr,
    hosts: Vec<SimHost>,
    phase: PhaseLimit,
    start: impl Fn(SimHost, Live) -> (T, F) + Clone + Send + 'static,
) -> (Vec<tokio::task::JoinHandle<()>>, Vec<T>)
where
    T: Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(HANDSHAKE_CONCURRENCY));
    let total = hosts.len();
    let mut tasks = Vec::with_capacity(total);
    let mut results = Vec::with_capacity(total);
    for host in hosts {
        let (done_tx, done_rx) = oneshot::channel::<Result<T, String>>();
        let done_rx = async move {
            done_rx
                .await
                .unwrap_or_else(|_| Err("the session task ended without a result".to_string()))
        };
        let addr = addr.clone();
        let limit = limit.clone();
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            let opened = match limit.acquire_owned().await {
                Ok(_permit) => open_session(&addr, &host).await,
                Err(e) => Err(e.to_string()),
            };
            match opened {
                Ok(live) => {
                    let (kept, serving) = start(host, live);
                    let _ = done_tx.send(Ok(kept));
                    serving.await;
                }
                Err(e) => {
                    let _ = done_tx.send(Err(e));
                }
            }
        }));
        results.push(done_rx);
    }
    let (established, failures) = collect("established", results, phase.deadline(total)).await;
    failures.report("sessions");
    (tasks, established)
}

/// Drop the sessions held by `tasks` (from [`open_sessions`]).
pub async fn drop_sessions(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        let _ = task.await;
    }
}

/// Keep a session: hand every desired state the server sends, with the instant it arrived, to
/// `on_state` and send back what it answers; heartbeat every interval. Until the session ends
/// (why is recorded in `lost`) or the task is aborted.
pub async fn serve(
    mut live: Live,
    lost: &Mutex<Failures>,
    mut on_state: impl FnMut(&pb::SignedState, Instant) -> Option<AgentMsg>,
) {
    let mut tick = tokio::time::interval(live.heartbeat);
    tick.tick().await;
    let mut seq = 0u64;
    let why = loop {
        let reply = tokio::select! {
            msg = live.inbound.message() => match msg {
                Ok(Some(pb::ServerMessage { msg: Some(ServerMsg::DesiredState(env)) })) => {
                    on_state(&env, Instant::now())
                }
                Ok(Some(_)) => None,
                Ok(None) => break "the server closed the session".to_string(),
                Err(status) => break format!("session ended: {}", status_text(&status)),
            },
            _ = tick.tick() => {
                seq += 1;
                Some(AgentMsg::Heartbeat(pb::Heartbeat { seq, sent_unix_ms: unix_ms() }))
            }
        };
        if let Some(msg) = reply
            && live
                .tx
                .send(pb::AgentMessage { msg: Some(msg) })
                .await
                .is_err()
        {
            break "the session's send side closed".to_string();
        }
    };
    lock(lost).add(why);
}

// ------------------------------------------------------------------------------------ states

/// Counters over all simulated sessions.
#[derive(Debug, Default)]
pub struct Counters {
    pub verify_failures: AtomicUsize,
    pub first_failure: Mutex<Option<String>>,
    /// The longest receipt → report ready of a state, in ns, since the last reset.
    pub apply_max_ns: AtomicU64,
    /// Why sessions ended on their own.
    pub lost: Mutex<Failures>,
}

/// One simulated host's side of desired state: verify each state as an agent would and
/// acknowledge it at once, "applied".
pub struct Acker {
    host: SimHost,
    /// What it accepted last, and the report it sent for it.
    last: Option<(Accepted, pb::StateReport)>,
}

impl Acker {
    pub fn new(host: SimHost) -> Self {
        Acker { host, last: None }
    }

    /// The report for `env`, received at `at`: for a new state, `applied` records it and gives
    /// the report of each of its stacks (it is told the state and the time, Unix ms); a re-send
    /// of the accepted state is answered with the last report; a refused one with the refusal.
    pub fn receive(
        &mut self,
        env: &pb::SignedState,
        at: Instant,
        counters: &Counters,
        applied: impl FnOnce(&pb::DesiredState, i64) -> Vec<pb::StackReport>,
    ) -> AgentMsg {
        let report = self.report(env, counters, applied);
        counters
            .apply_max_ns
            .fetch_max(at.elapsed().as_nanos() as u64, Ordering::Relaxed);
        AgentMsg::Report(report)
    }

    fn report(
        &mut self,
        env: &pb::SignedState,
        counters: &Counters,
        applied: impl FnOnce(&pb::DesiredState, i64) -> Vec<pb::StackReport>,
    ) -> pb::StateReport {
        let accepted = self.last.as_ref().map(|(a, _)| a);
        let previous = || {
            self.last
                .as_ref()
                .map(|(_, r)| r.clone())
                .unwrap_or_default()
        };
        let host = &self.host;
        let state =
            match signed::verify(&host.trust, env, &host.host_id, accepted, SystemTime::now()) {
                Ok(Verdict::New(state)) => state,
                // A re-send of what is applied: report it again.
                Ok(Verdict::Same) => {
                    return pb::StateReport {
                        sent_unix_ms: unix_ms(),
                        ..previous()
                    };
                }
                Err(refusal) => {
                    counters.verify_failures.fetch_add(1, Ordering::Relaxed);
                    lock(&counters.first_failure).get_or_insert_with(|| refusal.to_string());
                    return pb::StateReport {
                        refused: refusal.to_string(),
                        refused_generation: decoded_generation(env),
                        sent_unix_ms: unix_ms(),
                        ..previous()
                    };
                }
            };
        let now = unix_ms();
        let report = pb::StateReport {
            generation: state.generation,
            stacks: applied(&state, now),
            sent_unix_ms: now,
            ..Default::default()
        };
        self.last = Some((signed::accepted(env, state.generation), report.clone()));
        report
    }
}

/// The compose file of the stack on simulated hosts (which run nothing): the test image, with
/// `VERSION` set to `version` unless it is 0.
pub fn sim_compose(version: usize) -> String {
    if version == 0 {
        "services:\n  app:\n    image: noco-testapp:latest\n".to_string()
    } else {
        format!(
            "services:\n  app:\n    image: noco-testapp:latest\n    environment:\n      VERSION: \"{version}\"\n"
        )
    }
}

/// A stack reported converged at `revision`, applied at `now` (Unix ms).
pub fn converged(name: &str, revision: &str, now: i64) -> pb::StackReport {
    pb::StackReport {
        name: name.to_string(),
        revision: revision.to_string(),
        state: noco_proto::v1::ApplyState::Converged.into(),
        applied_unix_ms: now,
        ..Default::default()
    }
}

/// Every stack of a state reported converged at `now` (a simulated host that applies at once).
pub fn all_converged(state: &pb::DesiredState, now: i64) -> Vec<pb::StackReport> {
    state
        .stacks
        .iter()
        .map(|s| converged(&s.name, &s.revision, now))
        .collect()
}

/// The generation a refused envelope claims, if its payload decodes (0 if not).
fn decoded_generation(env: &pb::SignedState) -> u64 {
    <pb::DesiredState as prost::Message>::decode(env.payload.as_slice())
        .map(|s| s.generation)
        .unwrap_or(0)
}

// ------------------------------------------------------------------------------------ admin

/// Start a fresh server for `n` simulated hosts (heartbeat [`SIM_HEARTBEAT`]) and run `measure`
/// with it and its pid; skipped when `n` sessions do not fit this process's or the server's
/// limits. The server is stopped after.
pub async fn on_fresh_server(
    n: usize,
    measure: impl AsyncFnOnce(&Fleet, &str) -> Outcome,
) -> Outcome {
    if let Err(why) = fits(n, "this process", "self") {
        return Outcome::Skipped(why);
    }
    let mut fleet = match harness("starting the server", || {
        Fleet::start(ServerOptions {
            heartbeat: SIM_HEARTBEAT.into(),
            ..ServerOptions::default()
        })
    }) {
        Ok(f) => f,
        Err(e) => return Outcome::Failed(format!("{e:#}")),
    };
    let server_pid = fleet
        .server
        .as_ref()
        .map(Proc::pid)
        .unwrap_or(0)
        .to_string();
    let outcome = match fits(n, "the server", &server_pid) {
        Err(why) => Outcome::Skipped(why),
        Ok(()) => measure(&fleet, &server_pid).await,
    };
    if let Err(e) = harness("stopping the server", || fleet.stop_server()) {
        println!("warning: {e:#}");
    }
    outcome
}

/// A Control client as the first admin.
pub async fn admin_client(fleet: &Fleet) -> anyhow::Result<Control> {
    let cred = Credential::load(&fleet.admin_config()).context("loading the admin credential")?;
    let config = Arc::new(
        cred.client_config()
            .context("the admin credential's TLS configuration")?,
    );
    let addr = ServerAddr::parse(&fleet.url).map_err(anyhow::Error::msg)?;
    let channel = dial::connect(&addr, move || config.clone(), CONNECT_TIMEOUT)
        .await
        .map_err(|e| {
            anyhow!(
                "connecting to {} as the admin: {}",
                fleet.url,
                noco_certs::dial::describe(&e)
            )
        })?;
    Ok(pb::control_client::ControlClient::new(channel).max_decoding_message_size(MAX_LIST_MESSAGE))
}

pub async fn list_hosts(control: &mut Control) -> anyhow::Result<Vec<pb::Host>> {
    match tokio::time::timeout(CALL_TIMEOUT, control.list_hosts(pb::ListHostsRequest {})).await {
        Ok(Ok(resp)) => Ok(resp.into_inner().hosts),
        Ok(Err(status)) => Err(anyhow!("ListHosts: {}", status_text(&status))),
        Err(_) => Err(anyhow!("ListHosts did not answer within {CALL_TIMEOUT:?}")),
    }
}

/// What Status says of each host that stack `stack` concerns.
pub async fn stack_status(
    control: &mut Control,
    stack: &str,
) -> anyhow::Result<Vec<pb::HostStatus>> {
    let request = pb::StatusRequest {
        stack: stack.to_string(),
    };
    match tokio::time::timeout(CALL_TIMEOUT, control.status(request)).await {
        Ok(Ok(resp)) => Ok(resp.into_inner().hosts),
        Ok(Err(status)) => Err(anyhow!("Status: {}", status_text(&status))),
        Err(_) => Err(anyhow!("Status did not answer within {CALL_TIMEOUT:?}")),
    }
}

pub async fn apply_stack(
    control: &mut Control,
    request: pb::ApplyStackRequest,
) -> anyhow::Result<pb::ApplyStackResponse> {
    match tokio::time::timeout(CALL_TIMEOUT, control.apply_stack(request)).await {
        Ok(Ok(resp)) => Ok(resp.into_inner()),
        Ok(Err(status)) => Err(anyhow!("ApplyStack: {}", status_text(&status))),
        Err(_) => Err(anyhow!("ApplyStack did not answer within {CALL_TIMEOUT:?}")),
    }
}

pub fn status_text(status: &tonic::Status) -> String {
    format!(
        "{:?}: {}",
        status.code(),
        noco_certs::dial::describe(status)
    )
}
