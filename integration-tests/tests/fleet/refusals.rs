//! Refusals: a replayed older state, another host's state, a tampered one and an expired one are
//! each refused by the agent, reported, and change nothing. The real server is replaced, on its
//! own address and with its own certificate and signing key, by a scripted one that sends them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use noco_certs::signing::StateSigner;
use noco_integration_tests::docker::require_docker;
use noco_integration_tests::{Fleet, ServerOptions, eventually};
use noco_proto::v1 as pb;
use prost::Message;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::support::{Prefix, app_stack, apply_converged, running};

#[derive(Clone)]
struct Scripted {
    envelopes: Vec<pb::SignedState>,
    reports: Arc<Mutex<Vec<pb::StateReport>>>,
}

#[tonic::async_trait]
impl pb::agent_server::Agent for Scripted {
    type SessionStream = ReceiverStream<Result<pb::ServerMessage, Status>>;

    async fn session(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let envelopes = self.envelopes.clone();
        let reports = self.reports.clone();
        tokio::spawn(async move {
            let welcome = pb::Welcome {
                host_id: String::new(),
                name: String::new(),
                heartbeat_interval_ms: 1000,
            };
            let _ = tx
                .send(Ok(pb::ServerMessage {
                    msg: Some(pb::server_message::Msg::Welcome(welcome)),
                }))
                .await;
            for env in envelopes {
                let _ = tx
                    .send(Ok(pb::ServerMessage {
                        msg: Some(pb::server_message::Msg::DesiredState(env)),
                    }))
                    .await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            while let Ok(Some(m)) = inbound.message().await {
                if let Some(pb::agent_message::Msg::Report(r)) = m.msg {
                    reports.lock().unwrap().push(r);
                }
                let hb = pb::Heartbeat {
                    seq: 0,
                    sent_unix_ms: 0,
                };
                if tx
                    .send(Ok(pb::ServerMessage {
                        msg: Some(pb::server_message::Msg::Heartbeat(hb)),
                    }))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn replayed_foreign_tampered_and_expired_states_are_refused_reported_and_change_nothing() {
    if !require_docker() {
        return;
    }
    let mut fleet = Fleet::start(ServerOptions::default());
    let p = Prefix::new("frefuse", &["shop"]);
    let agent_dir = fleet.enroll("web-1", "role=web");
    let _agent = fleet.run_agent_with("web-1", &["--project-prefix", &p.0]);
    fleet.wait_status("web-1", "online");
    apply_converged(&fleet, &app_stack("v1"), &["web-1"]);
    let before = running(&p.project("shop"));

    // What the agent accepted, and the key that signed it.
    let accepted_bytes = std::fs::read(agent_dir.join("state/desired.pb")).unwrap();
    let accepted = pb::SignedState::decode(accepted_bytes.as_slice()).unwrap();
    let state = pb::DesiredState::decode(accepted.payload.as_slice()).unwrap();
    let seed = hex_decode(
        std::fs::read_to_string(fleet.server_data().join("state-signing.key"))
            .unwrap()
            .trim(),
    );
    let signer = StateSigner::from_seed(&seed).unwrap();
    let sign = |s: &pb::DesiredState| noco_certs::state::sign(&signer, s);

    let mut older = state.clone();
    older.generation = state.generation - 1;
    let mut foreign = state.clone();
    foreign.host_id = "0123456789abcdef".into();
    foreign.generation = state.generation + 1;
    let mut next = state.clone();
    next.generation = state.generation + 1;
    next.stacks.clear();
    let mut tampered = sign(&next);
    let last = tampered.payload.len() - 1;
    tampered.payload[last] ^= 1;
    let mut expired = next.clone();
    expired.expires_unix_ms = now_ms() - 60_000;
    expired.issued_unix_ms = now_ms() - 120_000;
    let envelopes = vec![sign(&older), sign(&foreign), tampered, sign(&expired)];

    fleet.stop_server();
    let reports = Arc::new(Mutex::new(Vec::new()));
    let script = Scripted {
        envelopes,
        reports: reports.clone(),
    };
    let dir = fleet.server_data();
    let port = fleet.port;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.spawn(async move {
        noco_certs::install_crypto_provider();
        let ca = std::fs::read_to_string(dir.join("ca.crt")).unwrap();
        let cert = noco_certs::tls::RotatingCert::new(
            &std::fs::read_to_string(dir.join("server.crt")).unwrap(),
            &std::fs::read_to_string(dir.join("server.key")).unwrap(),
        )
        .unwrap();
        let bans = Arc::new(noco_server::bans::BanSet::default());
        let tls = noco_certs::tls::server_config(&ca, cert, bans).unwrap();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let incoming = noco_server::listener::tls_incoming(listener, Arc::new(tls));
        let _ = tonic::transport::Server::builder()
            .add_service(pb::agent_server::AgentServer::new(script))
            .serve_with_incoming(incoming)
            .await;
    });

    let refusals = eventually("four refusals reported", || {
        let r: Vec<String> = reports
            .lock()
            .unwrap()
            .iter()
            .filter(|r| !r.refused.is_empty())
            .map(|r| r.refused.clone())
            .collect();
        let mut distinct = r.clone();
        distinct.dedup();
        (distinct.len() >= 4).then_some(distinct)
    });
    let all = refusals.join("\n");
    for reason in [
        "older than the accepted generation",
        "not this host",
        "bad signature",
        "expired",
    ] {
        assert!(
            all.contains(reason),
            "no refusal mentions {reason:?}:\n{all}"
        );
    }
    // Nothing was applied: the same state on disk, the same container running.
    assert_eq!(
        std::fs::read(agent_dir.join("state/desired.pb")).unwrap(),
        accepted_bytes
    );
    assert_eq!(running(&p.project("shop")), before);
    let last = reports.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        last.generation, state.generation,
        "the agent still reports the generation it accepted"
    );
    drop(rt);
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}
