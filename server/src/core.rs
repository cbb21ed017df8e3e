//! The composition root: builds the components in dependency order and hands them to the gRPC
//! services, which are the only code that sees all of them. Components point down only:
//!
//! ```text
//! store, clock, registry, bans
//!   └─ reports ─ desired (signs, sizes, pushes)
//!                  └─ stacks (catalog lock) ─ rollouts (driver) ─ hosts
//!                                   └─ status (queries) · audit
//! backups (catalog, uploads, jobs and signed orders, retention; over store, registry, audit,
//!          the signing key and the backup store)         ← used by rollouts (backup first)
//! telemetry: logs (the log hub: rings, caps, followers) · metrics   ← fed by agents, read by control
//! alerts (rules over registry, reports, metrics, rollouts, backups, certificates; grouping,
//!         notification log, outbox, silences; the `[alerts]` of the configuration file)
//! control · session · enroll · renew · auth · telemetry::stream   (the gRPC services: adapters)
//! ```

use std::sync::Arc;
use std::time::Duration;

use crate::alerts::Alerts;
use crate::audit::Audit;
use crate::backups::{BackupSettings, Backups};
use crate::bans::BanSet;
use crate::clock::Clock;
use crate::desired::{Desired, SigningKeys};
use crate::hosts::Hosts;
use crate::pki::Pki;
use crate::registry::Registry;
use crate::reports::Reports;
use crate::rollouts::Rollouts;
use crate::stacks::Stacks;
use crate::store::Store;
use crate::telemetry::logs::{LogCaps, LogHub};
use crate::telemetry::metrics::MetricsStore;

/// Tunables of a running server (flags of `noco-server run`).
#[derive(Debug, Clone)]
pub struct Limits {
    pub agent_cert_ttl: Duration,
    pub operator_cert_ttl: Duration,
    pub heartbeat_interval: Duration,
    /// A session that sends nothing for this long is closed.
    pub session_idle_timeout: Duration,
    pub hello_timeout: Duration,
    /// How long a signed desired state is valid; the server re-signs at a third remaining.
    pub state_ttl: Duration,
    /// Log lines (and markers) kept per container.
    pub log_lines_per_container: usize,
    /// Bytes of log records kept per host, as [`crate::telemetry::logs`] accounts them; also
    /// how much of its spool an agent resends after a server restart.
    pub log_bytes_per_host: u64,
    /// Bytes of log records kept for all hosts together.
    pub log_bytes_total: u64,
    /// How far back each host's metrics history reaches.
    pub metrics_history: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            agent_cert_ttl: Duration::from_secs(24 * 3600),
            operator_cert_ttl: Duration::from_secs(30 * 24 * 3600),
            heartbeat_interval: Duration::from_secs(10),
            session_idle_timeout: Duration::from_secs(30),
            hello_timeout: Duration::from_secs(10),
            state_ttl: Duration::from_secs(24 * 3600),
            log_lines_per_container: 5000,
            log_bytes_per_host: 8 << 20,
            log_bytes_total: 512 << 20,
            metrics_history: Duration::from_secs(3600),
        }
    }
}

impl SigningKeys for Pki {
    fn signer(&self) -> Arc<noco_certs::signing::StateSigner> {
        Pki::signer(self)
    }
}

#[derive(Debug)]
pub struct Core {
    pub store: Arc<dyn Store>,
    pub pki: Arc<Pki>,
    pub bans: Arc<BanSet>,
    pub registry: Arc<Registry>,
    pub clock: Arc<dyn Clock>,
    pub limits: Limits,
    pub audit: Arc<Audit>,
    pub reports: Arc<Reports>,
    pub desired: Arc<Desired>,
    pub stacks: Arc<Stacks>,
    pub rollouts: Arc<Rollouts>,
    pub hosts: Arc<Hosts>,
    /// The backup catalog, uploads, jobs and orders.
    pub backups: Arc<Backups>,
    /// Containers' recent log lines and their followers.
    pub logs: Arc<LogHub>,
    /// Hosts' latest metrics and their history.
    pub metrics: Arc<MetricsStore>,
    /// Alert rules, notifications and silences.
    pub alerts: Arc<Alerts>,
}

impl Core {
    /// [`Core::assemble_with`] the default configuration (no alert receivers).
    pub fn assemble(
        store: Arc<dyn Store>,
        pki: Arc<Pki>,
        bans: Arc<BanSet>,
        clock: Arc<dyn Clock>,
        limits: Limits,
        backups: BackupSettings,
    ) -> Arc<Core> {
        Self::assemble_with(
            store,
            pki,
            bans,
            clock,
            limits,
            backups,
            crate::config::ServerConfig::default(),
        )
    }

    /// Build every component, with the server's configuration file as read.
    pub fn assemble_with(
        store: Arc<dyn Store>,
        pki: Arc<Pki>,
        bans: Arc<BanSet>,
        clock: Arc<dyn Clock>,
        limits: Limits,
        backups: BackupSettings,
        config: crate::config::ServerConfig,
    ) -> Arc<Core> {
        let registry = Arc::new(Registry::default());
        let audit = Arc::new(Audit::new(store.clone(), clock.clone()));
        let reports = Arc::new(Reports::new(clock.clone()));
        let desired = Arc::new(Desired::new(
            store.clone(),
            pki.clone(),
            registry.clone(),
            clock.clone(),
            limits.state_ttl,
        ));
        let stacks = Arc::new(Stacks::new(
            store.clone(),
            desired.clone(),
            reports.clone(),
            clock.clone(),
        ));
        let backups = Arc::new(Backups::new(
            store.clone(),
            pki.clone(),
            registry.clone(),
            audit.clone(),
            clock.clone(),
            backups,
        ));
        let rollouts = Arc::new(Rollouts::new(
            store.clone(),
            stacks.clone(),
            reports.clone(),
            registry.clone(),
            backups.clone(),
            clock.clone(),
        ));
        let hosts = Arc::new(Hosts::new(
            store.clone(),
            stacks.clone(),
            registry.clone(),
            bans.clone(),
            clock.clone(),
        ));
        let logs = Arc::new(LogHub::new(LogCaps {
            lines_per_container: limits.log_lines_per_container,
            bytes_per_host: limits.log_bytes_per_host,
            bytes_total: limits.log_bytes_total,
        }));
        let metrics = Arc::new(MetricsStore::new(limits.metrics_history));
        let alerts = Arc::new(Alerts::new(
            config.alerts,
            crate::alerts::sources::Sources {
                store: store.clone(),
                registry: registry.clone(),
                bans: bans.clone(),
                reports: reports.clone(),
                metrics: metrics.clone(),
                pki: pki.clone(),
                session_idle_timeout: limits.session_idle_timeout,
                agent_cert_ttl: limits.agent_cert_ttl,
                started_ms: clock.now_ms(),
            },
            hosts.clone(),
            audit.clone(),
            clock.clone(),
        ));
        Arc::new(Core {
            store,
            pki,
            bans,
            registry,
            clock,
            limits,
            audit,
            reports,
            desired,
            stacks,
            rollouts,
            hosts,
            backups,
            logs,
            metrics,
            alerts,
        })
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}
