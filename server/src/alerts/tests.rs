//! The alerting service over a real store: what is queued for receivers across ticks and
//! restarts (time from a `ManualClock`), silences, and delivery to a real HTTP receiver.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::config::{AlertsConfig, Format, Receiver};
use super::*;
use crate::bans::BanSet;
use crate::clock::{ManualClock, SystemClock};
use crate::config::ServerConfig;
use crate::core::{Core, Limits};
use crate::pki::{DataDir, Pki};
use crate::store::AuditFilter;

struct Fixture {
    _dir: tempfile::TempDir,
    data: DataDir,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: AlertsConfig,
}

const T0: i64 = 1_700_000_000_000;

fn receiver(url: &str) -> Receiver {
    Receiver {
        name: "ops".into(),
        url: url::Url::parse(url).unwrap(),
        format: Format::Json,
        rules: Vec::new(),
        headers: [("Authorization".to_string(), "Bearer s3cret".to_string())].into(),
        send_resolved: true,
        timeout: Duration::from_secs(5),
    }
}

async fn fixture(clock: Arc<dyn Clock>, url: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    // A CA that does not expire within the cert-expiry rule's reach.
    let (data, _, store) =
        crate::testing::pki_and_store(dir.path(), Duration::from_secs(10 * 365 * 86400)).await;
    crate::testing::insert_hosts(&*store, &[("h1", "web-1")]).await;
    let config = AlertsConfig {
        group_wait: Duration::ZERO,
        group_interval: Duration::from_secs(1),
        repeat_interval: Duration::from_secs(3600),
        receivers: vec![receiver(url)],
        ..AlertsConfig::default()
    };
    Fixture {
        _dir: dir,
        data,
        store,
        clock,
        config,
    }
}

impl Fixture {
    /// A server's core over the fixture's store: a new one is a restarted server.
    fn core(&self) -> Arc<Core> {
        let pki = Pki::load(&self.data).unwrap();
        Core::assemble_with(
            self.store.clone(),
            Arc::new(pki),
            Arc::new(BanSet::default()),
            self.clock.clone(),
            Limits {
                heartbeat_interval: Duration::from_secs(1),
                session_idle_timeout: Duration::from_secs(3),
                ..Limits::default()
            },
            crate::backups::BackupSettings::for_tests(self._dir.path()),
            ServerConfig {
                path: None,
                alerts: self.config.clone(),
            },
        )
    }

    async fn outbox(&self) -> Vec<(String, Vec<(String, String)>)> {
        let mut all = self.store.outbox().await.unwrap();
        all.sort_by_key(OutboxRecord::id);
        all.into_iter()
            .map(|n| {
                (
                    n.status,
                    n.alerts
                        .into_iter()
                        .map(|a| (a.labels["host"].clone(), a.status))
                        .collect(),
                )
            })
            .collect()
    }
}

fn firing(host: &str) -> (String, Vec<(String, String)>) {
    ("firing".into(), vec![(host.into(), "firing".into())])
}

fn resolved(host: &str) -> (String, Vec<(String, String)>) {
    ("resolved".into(), vec![(host.into(), "resolved".into())])
}

/// The host-offline alert of web-1 as `alert ls` shows it: (state, since).
async fn offline_alert(core: &Core) -> Option<(pb::AlertState, i64)> {
    let list = core.alerts.list().await.unwrap();
    list.alerts
        .iter()
        .find(|a| {
            a.rule == "host-offline" && a.labels.get("host").map(String::as_str) == Some("web-1")
        })
        .map(|a| (a.state(), a.since_unix_ms))
}

#[tokio::test]
async fn an_offline_host_is_notified_once_and_a_restart_neither_resends_nor_forgets() {
    let manual = Arc::new(ManualClock::at_ms(T0));
    let f = fixture(manual.clone(), "http://127.0.0.1:9/hook").await;
    let core = f.core();
    let reg = core.registry.register("h1", T0);
    core.alerts.tick().await.unwrap();
    assert!(f.outbox().await.is_empty(), "online: nothing");

    core.registry.deregister("h1", reg.session_id);
    manual.advance_ms(500);
    core.alerts.tick().await.unwrap();
    assert_eq!(
        f.outbox().await,
        [firing("web-1")],
        "offline: fires at once"
    );
    let since = T0 + 500;
    assert_eq!(
        offline_alert(&core).await,
        Some((pb::AlertState::Firing, since))
    );
    for _ in 0..5 {
        manual.advance_ms(1000);
        core.alerts.tick().await.unwrap();
    }
    assert_eq!(f.outbox().await.len(), 1, "unchanged: not sent again");

    // Restarted: the host is not known to the new server for a while, then offline; the alert
    // keeps its start and nothing is queued again.
    let core = f.core();
    for _ in 0..15 {
        manual.advance_ms(1000);
        core.alerts.tick().await.unwrap();
        assert_eq!(
            offline_alert(&core).await,
            Some((pb::AlertState::Firing, since))
        );
    }
    assert_eq!(f.outbox().await.len(), 1, "a restart sends nothing again");

    // The agent comes back: resolved, once.
    let _reg = core.registry.register("h1", manual.now_ms());
    for _ in 0..5 {
        manual.advance_ms(1000);
        core.alerts.tick().await.unwrap();
    }
    // Never delivered (no receiver here), the firing is superseded by the resolution.
    assert_eq!(f.outbox().await, [resolved("web-1")]);
    assert_eq!(offline_alert(&core).await, None);
    assert!(
        f.store.alerts().await.unwrap().is_empty(),
        "told: forgotten"
    );
    assert!(f.store.notify_log().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_resolution_seen_before_a_restart_is_sent_after_it() {
    let manual = Arc::new(ManualClock::at_ms(T0));
    let mut f = fixture(manual.clone(), "http://127.0.0.1:9/hook").await;
    f.config.group_interval = Duration::from_secs(60);
    f.config.repeat_interval = Duration::from_secs(3600);
    let core = f.core();
    let reg = core.registry.register("h1", T0);
    core.alerts.tick().await.unwrap();
    core.registry.deregister("h1", reg.session_id);
    manual.advance_ms(500);
    core.alerts.tick().await.unwrap();
    assert_eq!(f.outbox().await, [firing("web-1")]);
    // Back before the group's next flush, and the server stops.
    let _reg = core.registry.register("h1", manual.now_ms());
    manual.advance_ms(500);
    core.alerts.tick().await.unwrap();
    assert_eq!(
        f.outbox().await.len(),
        1,
        "the group waits for its interval"
    );
    drop(core);

    let core = f.core();
    let _reg = core.registry.register("h1", manual.now_ms());
    manual.advance_ms(500);
    core.alerts.tick().await.unwrap();
    assert_eq!(f.outbox().await, [resolved("web-1")]);
}

#[tokio::test]
async fn a_silenced_host_sends_nothing_and_shows_silenced() {
    let manual = Arc::new(ManualClock::at_ms(T0));
    let f = fixture(manual.clone(), "http://127.0.0.1:9/hook").await;
    let core = f.core();
    let silence = core
        .alerts
        .silence(
            "operator alice (deployer)",
            pb::SilenceAlertRequest {
                rule: "host-offline".into(),
                host: "web-1".into(),
                stack: String::new(),
                duration_seconds: 60,
                comment: "maintenance".into(),
            },
        )
        .await
        .unwrap();
    assert!(silence.active);
    let reg = core.registry.register("h1", T0);
    core.alerts.tick().await.unwrap();
    core.registry.deregister("h1", reg.session_id);
    for _ in 0..5 {
        manual.advance_ms(1000);
        core.alerts.tick().await.unwrap();
    }
    assert!(f.outbox().await.is_empty(), "silenced: nothing sent");
    assert_eq!(
        offline_alert(&core).await.map(|a| a.0),
        Some(pb::AlertState::Silenced)
    );
    let list = core.alerts.list().await.unwrap();
    let rule = list
        .rules
        .iter()
        .find(|r| r.name == "host-offline")
        .unwrap();
    assert_eq!(rule.state(), pb::AlertState::Silenced);

    // The silence survives a restart; once it ends, the alert is sent.
    let core = f.core();
    assert_eq!(core.alerts.silences().await.unwrap().silences.len(), 1);
    core.alerts.unsilence(&silence.id).await.unwrap();
    for _ in 0..15 {
        manual.advance_ms(1000);
        core.alerts.tick().await.unwrap();
    }
    assert_eq!(f.outbox().await, [firing("web-1")]);
    let list = core.alerts.silences().await.unwrap();
    assert!(!list.silences[0].active, "ended, shown until pruned");
    manual.advance_ms(silences::PRUNE_AFTER_MS);
    core.alerts.tick().await.unwrap();
    assert!(core.alerts.silences().await.unwrap().silences.is_empty());
}

#[tokio::test]
async fn unknown_rules_hosts_stacks_and_receivers_are_refused_with_the_nearest_name() {
    let f = fixture(Arc::new(ManualClock::at_ms(T0)), "http://127.0.0.1:9/hook").await;
    let core = f.core();
    let silence = |rule: &str, host: &str, stack: &str, secs| pb::SilenceAlertRequest {
        rule: rule.into(),
        host: host.into(),
        stack: stack.into(),
        duration_seconds: secs,
        comment: String::new(),
    };
    let refused = |r: Result<pb::Silence>| r.err().map(|e| e.to_string()).unwrap_or_default();
    let a = &core.alerts;
    assert_eq!(
        refused(a.silence("x", silence("host-ofline", "", "", 60)).await),
        "no alert rule named \"host-ofline\"; did you mean \"host-offline\"?"
    );
    assert_eq!(
        refused(
            a.silence("x", silence("host-offline", "web-2", "", 60))
                .await
        ),
        "no host named \"web-2\"; did you mean \"web-1\"?"
    );
    assert!(
        refused(
            a.silence("x", silence("host-offline", "", "shop", 60))
                .await
        )
        .contains("not about a stack")
    );
    assert_eq!(
        refused(
            a.silence("x", silence("stack-failed", "", "shop", 60))
                .await
        ),
        "no stack named \"shop\""
    );
    assert!(
        refused(a.silence("x", silence("host-offline", "", "", 0)).await).contains("more than 0s")
    );
    let e = a
        .test("opss", "x")
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert_eq!(e, "no receiver named \"opss\"; did you mean \"ops\"?");
    // By id, the silence names the host by its name.
    let s = a
        .silence("x", silence("host-offline", "h1", "", 60))
        .await
        .unwrap();
    assert_eq!(s.host, "web-1");
    let e = a
        .unsilence("nope")
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.starts_with("no silence named \"nope\""), "{e}");
}

/// A receiver answering each POST with the next status (200 once they run out); it records
/// every request.
async fn hook(statuses: Vec<u16>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        let mut statuses = statuses.into_iter();
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let request = loop {
                let n = conn.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break Some(text);
                    }
                }
            };
            let Some(request) = request else { continue };
            record.lock().unwrap().push(request);
            let status = statuses.next().unwrap_or(200);
            let reply =
                format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = conn.write_all(reply.as_bytes()).await;
        }
    });
    (format!("http://{addr}/hook"), seen)
}

#[tokio::test]
async fn a_notification_is_retried_while_the_receiver_fails_and_audited_once() {
    noco_certs::install_crypto_provider();
    let (url, seen) = hook(vec![503, 503]).await;
    let f = fixture(Arc::new(SystemClock), &url).await;
    let core = f.core();
    let reg = core.registry.register("h1", core.now_ms());
    core.alerts.tick().await.unwrap();
    core.registry.deregister("h1", reg.session_id);
    core.alerts.tick().await.unwrap();
    assert_eq!(f.outbox().await, [firing("web-1")]);
    core.alerts.clone().spawn_driver();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !f.store.outbox().await.unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "not delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "two 503s, then delivered");
    let last = &seen[2];
    assert!(last.starts_with("POST /hook HTTP/1.1"), "{last}");
    let lower = last.to_ascii_lowercase();
    assert!(lower.contains("authorization: bearer s3cret"), "{last}");
    assert!(lower.contains("idempotency-key: "), "{last}");
    let body = last
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["version"], "4");
    assert_eq!(v["status"], "firing");
    assert_eq!(v["receiver"], "ops");
    assert_eq!(v["alerts"][0]["labels"]["host"], "web-1");
    assert_eq!(v["externalURL"], "https://localhost:7443");
    let filter = AuditFilter {
        action: "alert.notify".into(),
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let records = loop {
        let records = f.store.audit(&filter, 100).await.unwrap();
        if !records.is_empty() || tokio::time::Instant::now() > deadline {
            break records;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].result, "ok");
    assert!(
        records[0]
            .target
            .starts_with("ops {}:{alertname=\"host-offline\"} firing: firing web-1"),
        "{}",
        records[0].target
    );

    // A test notification: sent at once, its answer reported.
    let r = core
        .alerts
        .test("ops", "operator admin (admin)")
        .await
        .unwrap();
    assert_eq!(r.result, "HTTP 200");
}

/// The host records are read every few seconds, not every tick: a host revoked in between
/// (banned in memory at once, its session cut) is gone from the alerts at the next tick, not
/// reported offline.
#[tokio::test]
async fn a_host_revoked_between_reads_of_the_records_is_not_reported_offline() {
    let manual = Arc::new(ManualClock::at_ms(T0));
    let f = fixture(manual.clone(), "http://127.0.0.1:9/hook").await;
    let core = f.core();
    core.registry.register("h1", T0);
    core.alerts.tick().await.unwrap();
    assert!(f.outbox().await.is_empty(), "online: nothing");

    core.hosts.revoke("web-1", "tester").await.unwrap();
    for _ in 0..(2 * sources::HOSTS_EVERY.as_millis() / 500) {
        manual.advance_ms(500);
        core.alerts.tick().await.unwrap();
    }
    assert!(
        f.outbox().await.is_empty(),
        "a revoked host is not offline: {:?}",
        f.outbox().await
    );
    assert_eq!(offline_alert(&core).await, None);
}

/// A host that enrolled after the host records were last read, and dies at once, is reported as
/// soon as any host is: being online, it has the records read again.
#[tokio::test]
async fn a_host_enrolled_since_the_records_were_read_is_reported_offline_at_once() {
    let manual = Arc::new(ManualClock::at_ms(T0));
    let f = fixture(manual.clone(), "http://127.0.0.1:9/hook").await;
    let core = f.core();
    let _h1 = core.registry.register("h1", T0);
    core.alerts.tick().await.unwrap();

    crate::testing::insert_hosts(&*f.store, &[("h2", "web-2")]).await;
    let h2 = core.registry.register("h2", manual.now_ms());
    manual.advance_ms(500);
    core.alerts.tick().await.unwrap();
    core.registry.deregister("h2", h2.session_id);
    manual.advance_ms(500);
    core.alerts.tick().await.unwrap();
    assert_eq!(f.outbox().await, [firing("web-2")]);
}

/// A notification carries its group's whole state: one queued while an older one of the same
/// group still waits (the receiver is down) replaces it, audited as superseded — so a receiver
/// down for days holds one notification per group, not one per flapping. The notification
/// being sent is never replaced.
#[tokio::test]
async fn a_newer_notification_of_a_group_supersedes_the_queued_one_but_not_the_one_being_sent() {
    let manual = Arc::new(ManualClock::at_ms(T0));
    let f = fixture(manual.clone(), "http://127.0.0.1:9/hook").await;
    let core = f.core();
    let mut reg = core.registry.register("h1", T0);
    core.alerts.tick().await.unwrap();
    // The host flaps ten times while the receiver is down.
    for _ in 0..10 {
        core.registry.deregister("h1", reg.session_id);
        for _ in 0..2 {
            manual.advance_ms(1000);
            core.alerts.tick().await.unwrap();
        }
        reg = core.registry.register("h1", manual.now_ms());
        for _ in 0..2 {
            manual.advance_ms(1000);
            core.alerts.tick().await.unwrap();
        }
    }
    assert_eq!(f.outbox().await, [resolved("web-1")], "only the newest");
    let filter = AuditFilter {
        action: "alert.notify".into(),
        ..Default::default()
    };
    let audited = f.store.audit(&filter, 100).await.unwrap();
    // Ten flaps queued a firing and a resolution each: all but the newest were superseded.
    assert_eq!(
        audited.len(),
        19,
        "each superseded one audited once: {audited:#?}"
    );
    assert!(
        audited.iter().all(|r| r.result.contains("superseded")),
        "{audited:?}"
    );

    // The one a delivery task has claimed stays; the newer one queues behind it.
    let queued = f.store.outbox().await.unwrap();
    core.alerts
        .sending
        .lock()
        .await
        .insert("ops".into(), queued[0].id());
    core.registry.deregister("h1", reg.session_id);
    for _ in 0..2 {
        manual.advance_ms(1000);
        core.alerts.tick().await.unwrap();
    }
    assert_eq!(f.outbox().await, [resolved("web-1"), firing("web-1")]);
}
