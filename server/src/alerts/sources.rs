//! Gathering what the rules read ([`Observation`]) from the server's components: hosts from the
//! store and the registry (sessions), the agents' reports, the latest host metrics, and —
//! every [`SLOW_EVERY`], as they cost more to read — rollouts, the backup catalog and
//! certificates.
//!
//! When a host is offline: a host that had a session since this server started (the registry
//! showed it, or its last-seen time is later than the start) is offline from the moment its
//! session ended (at once when the connection drops, else after three silent heartbeats). A host
//! that had none (the server just started; the host just enrolled) is unknown for
//! [`startup_grace`] — its agent is reconnecting — and offline after.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use noco_proto::v1 as pb;

use super::rules::{BackupObs, CertObs, HostObs, HostState, Observation, RolloutObs};
use crate::error::{Doing, Result};
use crate::machines::rollout::Phase;
use crate::pki::Pki;
use crate::registry::Registry;
use crate::reports::Reports;
use crate::store::Store;
use crate::telemetry::metrics::MetricsStore;

/// How often rollouts, backups and certificates are read.
pub const SLOW_EVERY: Duration = Duration::from_secs(10);

/// How often the host records are read (sessions come from the registry at every tick, a
/// revocation from the in-memory bans at once, a host online that the records read do not hold
/// — it just enrolled — has them read again at once): decoding every record twice a second cost
/// a fleet of 1,000 hosts about a quarter of the tick.
pub const HOSTS_EVERY: Duration = Duration::from_secs(5);

/// How long a host not seen since the server started is given to reconnect: three heartbeats
/// (the idle timeout), and at least 10 s.
pub fn startup_grace(session_idle_timeout: Duration) -> Duration {
    session_idle_timeout.max(Duration::from_secs(10))
}

/// The components read.
#[derive(Debug, Clone)]
pub struct Sources {
    pub store: Arc<dyn Store>,
    pub registry: Arc<Registry>,
    pub bans: Arc<crate::bans::BanSet>,
    pub reports: Arc<Reports>,
    pub metrics: Arc<MetricsStore>,
    pub pki: Arc<Pki>,
    pub session_idle_timeout: Duration,
    pub agent_cert_ttl: Duration,
    /// When this server started.
    pub started_ms: i64,
}

/// What the sources remember between reads.
#[derive(Debug, Default)]
pub struct Memory {
    /// Host id → when this server last saw it online.
    pub last_online: HashMap<String, i64>,
    /// The slow sources as last read, and when.
    pub slow: Option<(i64, Slow)>,
    /// The host records as last read.
    pub hosts: Option<HostCache>,
}

/// The host records as read at `at`, and their ids.
#[derive(Debug)]
pub struct HostCache {
    at: i64,
    hosts: Arc<Vec<crate::store::records::HostRecord>>,
    ids: std::collections::HashSet<String>,
}

impl HostCache {
    /// Young enough, and holding every host the registry has online.
    fn fresh(&self, now_ms: i64, registry: &Registry) -> bool {
        if now_ms < self.at || now_ms - self.at >= HOSTS_EVERY.as_millis() as i64 {
            return false;
        }
        let mut all = true;
        registry.each_online(|id| all &= self.ids.contains(id));
        all
    }
}

/// What is read every [`SLOW_EVERY`].
#[derive(Debug, Clone, Default)]
pub struct Slow {
    pub rollouts: BTreeMap<String, Vec<RolloutObs>>,
    pub backups: Vec<BackupObs>,
    pub certs: Vec<CertObs>,
}

impl Sources {
    pub async fn observe(&self, memory: &mut Memory, now_ms: i64) -> Result<Observation> {
        let hosts = match &memory.hosts {
            Some(cache) if cache.fresh(now_ms, &self.registry) => cache.hosts.clone(),
            _ => {
                let hosts = Arc::new(self.store.hosts().await.doing("reading hosts")?);
                memory.hosts = Some(HostCache {
                    at: now_ms,
                    ids: hosts.iter().map(|h| h.id.clone()).collect(),
                    hosts: hosts.clone(),
                });
                hosts
            }
        };
        // Not revoked, also since the records were read (the ban is in memory at once).
        let current: Vec<&crate::store::records::HostRecord> = hosts
            .iter()
            .filter(|h| {
                !h.is_revoked()
                    && !noco_certs::tls::BanList::is_banned(
                        &*self.bans,
                        &noco_certs::Identity::Agent {
                            host_id: h.id.clone(),
                        },
                    )
            })
            .collect();
        let grace = startup_grace(self.session_idle_timeout).as_millis() as i64;
        let mut out = Vec::new();
        for h in &current {
            let state = match self.registry.online(&h.id) {
                Some(online) => {
                    memory.last_online.insert(h.id.clone(), online.last_seen_ms);
                    let report = self
                        .reports
                        .latest(&h.id)
                        .filter(|(_, at)| *at >= online.connected_ms)
                        .map(|(r, _)| r);
                    let metrics = self
                        .metrics
                        .latest(&h.id)
                        .and_then(|l| l.sample.host.clone());
                    HostState::Online { report, metrics }
                }
                None => match memory.last_online.get(&h.id) {
                    Some(seen) => HostState::Offline {
                        since_ms: (*seen).max(h.last_seen_ms),
                    },
                    // A session since this server started (however short: this tick may not
                    // have seen it) records its start and end in the host's last-seen time.
                    None if h.last_seen_ms >= self.started_ms => HostState::Offline {
                        since_ms: h.last_seen_ms,
                    },
                    None => {
                        let known_since = h.last_seen_ms.max(h.enrolled_ms).max(self.started_ms);
                        if now_ms - known_since >= grace {
                            HostState::Offline {
                                since_ms: h.last_seen_ms.max(h.enrolled_ms),
                            }
                        } else {
                            HostState::Unknown
                        }
                    }
                },
            };
            out.push(HostObs {
                name: h.name.clone(),
                state,
                cert_not_after_ms: h.cert_not_after_ms,
            });
        }
        // By a set: a scan of the hosts per entry made every tick quadratic in the fleet's size.
        let live: std::collections::HashSet<&str> = current.iter().map(|h| h.id.as_str()).collect();
        memory
            .last_online
            .retain(|id, _| live.contains(id.as_str()));
        let stale = memory
            .slow
            .as_ref()
            .is_none_or(|(at, _)| now_ms - at >= SLOW_EVERY.as_millis() as i64 || now_ms < *at);
        if stale {
            let names = crate::wire::host_names(&hosts);
            match self.slow(&names).await {
                Ok(slow) => memory.slow = Some((now_ms, slow)),
                Err(e) => tracing::warn!("alerts: reading rollouts, backups and certificates: {e}"),
            }
        }
        let slow = memory.slow.as_ref().map(|(_, s)| s.clone());
        Ok(Observation {
            now_ms,
            hosts: out,
            slow_known: slow.is_some(),
            rollouts: slow
                .as_ref()
                .map(|s| s.rollouts.clone())
                .unwrap_or_default(),
            backups: slow.as_ref().map(|s| s.backups.clone()).unwrap_or_default(),
            certs: slow.map(|s| s.certs).unwrap_or_default(),
            agent_cert_ttl_ms: self.agent_cert_ttl.as_millis() as i64,
        })
    }

    async fn slow(&self, names: &BTreeMap<String, String>) -> Result<Slow> {
        let mut rollouts = BTreeMap::new();
        for stack in self.store.stacks().await.doing("reading stacks")? {
            let Some(latest) = self
                .store
                .latest_rollout(&stack.name)
                .await
                .doing("reading rollouts")?
            else {
                continue;
            };
            let records = if latest.rollout.phase == Phase::Succeeded {
                vec![latest]
            } else {
                self.store
                    .rollouts_of(&stack.name)
                    .await
                    .doing("reading rollouts")?
            };
            let list: Vec<RolloutObs> = records
                .into_iter()
                .map(|r| RolloutObs {
                    ended_ms: r
                        .rollout
                        .events
                        .last()
                        .map_or(r.started_ms, |e| e.at.max(r.started_ms)),
                    id: r.id,
                    phase: r.rollout.phase,
                })
                .collect();
            rollouts.insert(stack.name.clone(), list);
        }
        let backups = self
            .store
            .backups()
            .await
            .doing("reading the backup catalog")?
            .into_iter()
            .filter(|b| {
                matches!(
                    b.state(),
                    pb::BackupState::Complete | pb::BackupState::Failed | pb::BackupState::Missed
                )
            })
            .map(|b| BackupObs {
                host: names
                    .get(&b.host_id)
                    .cloned()
                    .unwrap_or_else(|| b.host.clone()),
                state: b.state(),
                time_ms: if b.started_unix_ms > 0 {
                    b.started_unix_ms
                } else {
                    b.scheduled_unix_ms
                },
                stack: b.stack,
                name: b.name,
                reason: b.reason,
            })
            .collect();
        let mut certs = Vec::new();
        match not_after_ms(self.pki.ca.cert_pem()) {
            Ok(ms) => certs.push(CertObs {
                cert: "ca",
                not_after_ms: ms,
            }),
            Err(e) => tracing::warn!("alerts: reading the CA certificate: {e}"),
        }
        match std::fs::read_to_string(self.pki.dir.server_cert())
            .map_err(|e| e.to_string())
            .and_then(|pem| not_after_ms(&pem))
        {
            Ok(ms) => certs.push(CertObs {
                cert: "server",
                not_after_ms: ms,
            }),
            Err(e) => tracing::warn!("alerts: reading the server certificate: {e}"),
        }
        Ok(Slow {
            rollouts,
            backups,
            certs,
        })
    }
}

/// When the first certificate of a PEM bundle expires.
fn not_after_ms(pem: &str) -> std::result::Result<i64, String> {
    use x509_parser::prelude::FromDer;
    let der = noco_certs::tls::first_cert_der(pem).map_err(|e| e.to_string())?;
    let (_, cert) =
        x509_parser::certificate::X509Certificate::from_der(&der).map_err(|e| e.to_string())?;
    Ok(cert.validity().not_after.timestamp().saturating_mul(1000))
}
