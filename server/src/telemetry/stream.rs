//! The Telemetry service: one bidirectional stream per agent, on a connection of its own. The
//! agent says TelemetryHello; the server answers LogResume (the highest sequence it holds of the
//! host, and its per-host byte budget), then stores every LogBatch in the [`LogHub`] and acks
//! the highest sequence held, and every MetricsSample in the [`MetricsStore`].
//!
//! A host has at most one stream: a new one cuts the old, as a revocation cuts it (through the
//! [`crate::registry::Registry`], with the session).
//!
//! [`LogHub`]: super::logs::LogHub
//! [`MetricsStore`]: super::metrics::MetricsStore

use std::sync::Arc;

use noco_proto::v1 as pb;
use pb::telemetry_down::Msg as DownMsg;
use pb::telemetry_up::Msg as UpMsg;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::Caller;
use crate::core::Core;
use crate::registry::TelemetryRegistration;
use crate::session::calling_host;

#[derive(Debug, Clone)]
pub struct TelemetrySvc {
    pub core: Arc<Core>,
}

type Outbound = mpsc::Sender<Result<pb::TelemetryDown, Status>>;

#[tonic::async_trait]
impl pb::telemetry_server::Telemetry for TelemetrySvc {
    type StreamStream = ReceiverStream<Result<pb::TelemetryDown, Status>>;

    async fn stream(
        &self,
        req: Request<Streaming<pb::TelemetryUp>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let caller = Caller::of(&req)?;
        let core = self.core.clone();
        let host = calling_host(&core, &caller, "telemetry streams").await?;
        let mut inbound = req.into_inner();
        let hello = match tokio::time::timeout(core.limits.hello_timeout, inbound.message()).await {
            Ok(Ok(Some(pb::TelemetryUp {
                msg: Some(UpMsg::Hello(hello)),
            }))) => hello,
            Ok(Ok(_)) => {
                return Err(Status::invalid_argument(
                    "a telemetry stream must start with TelemetryHello",
                ));
            }
            Ok(Err(status)) => return Err(status),
            Err(_) => {
                return Err(Status::deadline_exceeded(
                    "no TelemetryHello within the hello timeout",
                ));
            }
        };
        let registration = core.registry.register_telemetry(&host.id);
        if let Err(refused) = crate::session::banned_since_checked(&core, &caller, &host) {
            core.registry
                .deregister_telemetry(&host.id, registration.stream_id);
            return Err(refused);
        }
        let after_seq = core.logs.open(&host.id, &host.name, hello.next_seq);
        let (tx, rx) = mpsc::channel(16);
        let resume = pb::LogResume {
            after_seq,
            tail_bytes: core.logs.caps().bytes_per_host,
        };
        let _ = tx
            .send(Ok(pb::TelemetryDown {
                msg: Some(DownMsg::Resume(resume)),
            }))
            .await;
        tracing::debug!(host = %host.name, id = %host.id, after_seq, "telemetry stream open");
        let host_id = host.id.clone();
        let name = host.name.clone();
        tokio::spawn(async move {
            let reason = run(&core, &host_id, registration, inbound, &tx).await;
            tracing::debug!(host = %name, id = %host_id, "telemetry stream closed: {reason}");
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Drive one stream until it ends; returns why it ended.
async fn run(
    core: &Core,
    host_id: &str,
    mut reg: TelemetryRegistration,
    mut inbound: Streaming<pb::TelemetryUp>,
    tx: &Outbound,
) -> String {
    let mut tick = tokio::time::interval(core.limits.heartbeat_interval);
    tick.tick().await;
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
                    Err(_) => break "stream removed".to_string(),
                }
            }
            msg = inbound.message() => match msg {
                Ok(Some(m)) => match m.msg {
                    Some(UpMsg::Logs(batch)) => {
                        // Ingest holds the hub's lock briefly, O(records); no await inside.
                        let seq = core.logs.ingest(host_id, batch.records);
                        let ack = pb::TelemetryDown { msg: Some(DownMsg::Ack(pb::LogAck { seq })) };
                        if tx.send(Ok(ack)).await.is_err() {
                            break "agent went away".to_string();
                        }
                    }
                    Some(UpMsg::Metrics(sample)) => core.metrics.record(host_id, sample),
                    Some(UpMsg::Hello(_)) => {
                        let _ = tx.send(Err(Status::invalid_argument("TelemetryHello may only be sent once"))).await;
                        break "protocol error: second TelemetryHello".to_string();
                    }
                    None => {}
                },
                Ok(None) => break "agent closed the stream".to_string(),
                Err(status) => break format!("stream error: {}", status.message()),
            },
            _ = tick.tick() => {
                // As a session: only while the host holds an unexpired certificate.
                match core.store.host(host_id).await {
                    Ok(Some(h)) if h.is_revoked() => {
                        let _ = tx.send(Err(crate::session::revoked(&h.name))).await;
                        break "revoked".to_string();
                    }
                    Ok(Some(h)) if h.cert_not_after_ms <= core.now_ms() => {
                        let _ = tx.send(Err(Status::unauthenticated("the host's certificate expired and was not renewed"))).await;
                        break "certificate expired".to_string();
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break "host removed".to_string(),
                    Err(e) => tracing::warn!("reading host {host_id}: {e}"),
                }
            }
        }
    };
    core.registry.deregister_telemetry(host_id, reg.stream_id);
    reason
}

#[cfg(test)]
mod tests {
    use noco_certs::Identity;
    use std::net::SocketAddr;
    use std::time::{Duration, Instant, SystemTime};

    use noco_certs::{PeerCert, Role};
    use noco_proto::v1::control_client::ControlClient;
    use noco_proto::v1::telemetry_client::TelemetryClient;
    use tonic::transport::Channel;

    use super::*;
    use crate::bans::BanSet;
    use crate::clock::SystemClock;
    use crate::core::Limits;

    struct Server {
        _dir: tempfile::TempDir,
        core: Arc<Core>,
        addr: SocketAddr,
    }

    fn caller(identity: Identity) -> Caller {
        Caller {
            peer: PeerCert {
                identity,
                not_before: SystemTime::UNIX_EPOCH,
                not_after: SystemTime::now() + Duration::from_secs(3600),
                serial: "1".into(),
                common_name: "test".into(),
            },
        }
    }

    /// The agent a test stream speaks for: the `x-host` header (the auth layer reads the
    /// certificate; these tests serve without TLS).
    #[allow(clippy::result_large_err)]
    fn as_agent(mut req: Request<()>) -> Result<Request<()>, Status> {
        let host_id = req
            .metadata()
            .get("x-host")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        req.extensions_mut()
            .insert(caller(Identity::Agent { host_id }));
        Ok(req)
    }

    #[allow(clippy::result_large_err)]
    fn as_admin(mut req: Request<()>) -> Result<Request<()>, Status> {
        req.extensions_mut().insert(caller(Identity::Operator {
            operator_id: "op".into(),
            role: Role::Admin,
        }));
        Ok(req)
    }

    async fn server(limits: Limits) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let (_, pki, store) =
            crate::testing::pki_and_store(dir.path(), Duration::from_secs(86400)).await;
        crate::testing::insert_hosts(&*store, &[("h1", "one"), ("h2", "two")]).await;
        let core = Core::assemble(
            store,
            Arc::new(pki),
            Arc::new(BanSet::default()),
            Arc::new(SystemClock),
            limits,
            crate::backups::BackupSettings::for_tests(dir.path()),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = tonic::transport::Server::builder()
            .add_service(tonic::service::interceptor::InterceptedService::new(
                pb::telemetry_server::TelemetryServer::new(TelemetrySvc { core: core.clone() })
                    .max_decoding_message_size(noco_proto::limits::MAX_TELEMETRY_MESSAGE),
                as_agent,
            ))
            .add_service(pb::control_server::ControlServer::with_interceptor(
                crate::control::ControlSvc { core: core.clone() },
                as_admin,
            ));
        tokio::spawn(
            router.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Server {
            _dir: dir,
            core,
            addr,
        }
    }

    async fn channel(addr: SocketAddr) -> Channel {
        Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    struct Agent {
        up: mpsc::Sender<pb::TelemetryUp>,
        down: Streaming<pb::TelemetryDown>,
    }

    impl Agent {
        /// Open a stream as `host` saying Hello; returns it with the server's LogResume.
        async fn connect(addr: SocketAddr, host: &str, next_seq: u64) -> (Agent, pb::LogResume) {
            let (up, rx) = mpsc::channel(16);
            up.send(pb::TelemetryUp {
                msg: Some(UpMsg::Hello(pb::TelemetryHello { next_seq })),
            })
            .await
            .unwrap();
            let mut req = Request::new(ReceiverStream::new(rx));
            req.metadata_mut().insert("x-host", host.parse().unwrap());
            let mut down = TelemetryClient::new(channel(addr).await)
                .stream(req)
                .await
                .unwrap()
                .into_inner();
            let Some(pb::TelemetryDown {
                msg: Some(DownMsg::Resume(resume)),
            }) = down.message().await.unwrap()
            else {
                panic!("LogResume first")
            };
            (Agent { up, down }, resume)
        }

        async fn send(&self, records: Vec<pb::LogRecord>) {
            self.up
                .send(pb::TelemetryUp {
                    msg: Some(UpMsg::Logs(pb::LogBatch { records })),
                })
                .await
                .unwrap();
        }

        async fn ack(&mut self) -> u64 {
            match self.down.message().await {
                Ok(Some(pb::TelemetryDown {
                    msg: Some(DownMsg::Ack(ack)),
                })) => ack.seq,
                other => panic!("an ack, not {other:?}"),
            }
        }

        /// How the server ended the stream.
        async fn ended(&mut self) -> Status {
            loop {
                match tokio::time::timeout(Duration::from_secs(10), self.down.message()).await {
                    Ok(Err(status)) => return status,
                    Ok(Ok(Some(_))) => {}
                    Ok(Ok(None)) => return Status::ok("ended"),
                    Err(_) => panic!("the stream was not ended"),
                }
            }
        }
    }

    fn records(host_seq: std::ops::RangeInclusive<u64>, container: &str) -> Vec<pb::LogRecord> {
        host_seq
            .map(|seq| crate::telemetry::logs::tests::rec(seq, container, &format!("line {seq}")))
            .collect()
    }

    async fn logs(
        addr: SocketAddr,
        req: pb::LogsRequest,
    ) -> Result<Streaming<pb::LogsResponse>, Status> {
        ControlClient::new(channel(addr).await)
            .max_decoding_message_size(noco_proto::limits::MAX_CONTROL_RESPONSE)
            .logs(req)
            .await
            .map(|r| r.into_inner())
    }

    #[tokio::test]
    async fn resume_ack_dedupe_replacement_and_revocation() {
        let s = server(Limits::default()).await;
        let (mut agent, resume) = Agent::connect(s.addr, "h1", 1).await;
        assert_eq!(resume.after_seq, 0, "a fresh server holds nothing");
        assert_eq!(resume.tail_bytes, Limits::default().log_bytes_per_host);
        agent.send(records(1..=10, "web-1")).await;
        assert_eq!(agent.ack().await, 10);
        // A resend (the agent did not see the ack) is acked and not stored twice.
        agent.send(records(5..=12, "web-1")).await;
        assert_eq!(agent.ack().await, 12);
        assert_eq!(s.core.logs.accounted().records, 12);

        // A second stream of the host replaces the first and resumes after what is held.
        let (mut second, resume) = Agent::connect(s.addr, "h1", 13).await;
        assert_eq!(resume.after_seq, 12);
        assert_eq!(agent.ended().await.code(), tonic::Code::Aborted);
        second.send(records(13..=13, "db-1")).await;
        assert_eq!(second.ack().await, 13);

        // What a reader sees: the history in order, with host names.
        let mut reader = logs(s.addr, pb::LogsRequest::default()).await.unwrap();
        let mut got = Vec::new();
        while let Some(r) = reader.message().await.unwrap() {
            got.extend(r.entries);
        }
        let seqs: Vec<u64> = got.iter().map(|e| e.record.as_ref().unwrap().seq).collect();
        assert_eq!(seqs, (1..=13).collect::<Vec<_>>());
        assert!(got.iter().all(|e| e.host == "one" && e.host_id == "h1"));

        // Unknown hosts and bad regexes are refused, naming them.
        let err = logs(
            s.addr,
            pb::LogsRequest {
                hosts: vec!["onee".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        assert!(
            err.message().contains("\"onee\"") && err.message().contains("one"),
            "{err:?}"
        );
        let err = logs(
            s.addr,
            pb::LogsRequest {
                grep: "(".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        let err = logs(
            s.addr,
            pb::LogsRequest {
                stack: "shpo".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        assert!(err.message().contains("did you mean"), "{err:?}");

        // Revoking the host cuts its telemetry stream at once.
        s.core.hosts.revoke("one", "test").await.unwrap();
        let status = second.ended().await;
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        assert!(!s.core.registry.telemetry_online("h1"));
    }

    #[tokio::test]
    async fn a_stream_must_start_with_hello_and_metrics_reach_top_and_get_host() {
        let s = server(Limits::default()).await;
        let (up, rx) = mpsc::channel(4);
        up.send(pb::TelemetryUp {
            msg: Some(UpMsg::Logs(pb::LogBatch::default())),
        })
        .await
        .unwrap();
        let mut req = Request::new(ReceiverStream::new(rx));
        req.metadata_mut().insert("x-host", "h2".parse().unwrap());
        let err = TelemetryClient::new(channel(s.addr).await)
            .stream(req)
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);

        let (mut agent, _) = Agent::connect(s.addr, "h2", 0).await;
        for (ms, rx) in [(10_000, 0), (12_000, 4_000)] {
            agent
                .up
                .send(pb::TelemetryUp {
                    msg: Some(UpMsg::Metrics(pb::MetricsSample {
                        time_unix_ms: ms,
                        host: Some(pb::HostMetrics {
                            cpu_percent: 12.5,
                            net_rx_bytes: rx,
                            ..Default::default()
                        }),
                        containers: vec![pb::ContainerMetrics {
                            stack: "shop".into(),
                            container: "shop-web-1".into(),
                            ..Default::default()
                        }],
                        collect_ms: 3,
                    })),
                })
                .await
                .unwrap();
        }
        // A log batch after them: its ack means the samples were taken.
        agent.send(records(1..=1, "web-1")).await;
        assert_eq!(agent.ack().await, 1);
        let mut control = ControlClient::new(channel(s.addr).await);
        let top = control
            .top(pb::TopRequest {
                hosts: vec!["two".into()],
                containers: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(top.hosts.len(), 1);
        let h = &top.hosts[0];
        assert_eq!((h.host.as_str(), h.sampled_unix_ms), ("two", 12_000));
        assert_eq!(h.net_rx_rate, 2_000.0);
        assert_eq!(h.containers.len(), 1);
        assert_eq!(
            h.status,
            pb::Presence::Offline as i32,
            "no session, only telemetry"
        );
        let all = control
            .top(pb::TopRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(all.hosts.len(), 2);
        assert!(all.hosts.iter().all(|h| h.containers.is_empty()));
        let host = control
            .get_host(pb::GetHostRequest {
                host: "two".into(),
                history: true,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(host.host.unwrap().name, "two");
        assert_eq!(host.history.len(), 2);
        assert_eq!(host.latest.unwrap().containers.len(), 1);
        let err = control
            .get_host(pb::GetHostRequest {
                host: "tow".into(),
                history: false,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        assert!(err.message().contains("\"two\""), "{err:?}");
    }

    /// Lines per second from one agent into one following reader, through gRPC on loopback.
    /// Run it optimized: `cargo test -p noco-server --release -- --ignored --nocapture
    /// lines_per_second`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement; run with --release"]
    async fn lines_per_second_into_one_follower() {
        const LINES: u64 = 500_000;
        const BATCH: u64 = 1_000;
        let s = server(Limits {
            log_bytes_total: 1 << 30,
            log_bytes_per_host: 256 << 20,
            log_lines_per_container: 1_000_000,
            ..Limits::default()
        })
        .await;
        let (mut agent, _) = Agent::connect(s.addr, "h1", 1).await;
        let mut reader = logs(
            s.addr,
            pb::LogsRequest {
                follow: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let started = Instant::now();
        let line = "x".repeat(100);
        let sender = tokio::spawn(async move {
            let mut seq = 0;
            while seq < LINES {
                let batch = (0..BATCH)
                    .map(|_| {
                        seq += 1;
                        crate::telemetry::logs::tests::rec(seq, "web-1", &line)
                    })
                    .collect();
                agent.send(batch).await;
                agent.ack().await;
            }
            started.elapsed()
        });
        let mut got = 0u64;
        let mut skipped = 0u64;
        while got + skipped < LINES {
            let r = reader.message().await.unwrap().unwrap();
            for e in r.entries {
                if e.record.is_some() {
                    got += 1;
                }
                skipped += e.skipped;
            }
        }
        let elapsed = started.elapsed();
        let ingest = sender.await.unwrap();
        eprintln!(
            "{LINES} lines: ingest {:.0} lines/s; reader {:.0} lines/s ({got} read, {skipped} skipped)",
            LINES as f64 / ingest.as_secs_f64(),
            LINES as f64 / elapsed.as_secs_f64()
        );
    }
}
